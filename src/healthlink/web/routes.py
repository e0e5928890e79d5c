"""The pages.  Each handler parses the request, calls the repository (which applies the
access rules and writes the audit record) or a service, and renders a template."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import RedirectResponse, Response

from healthlink.access import RequestContext
from healthlink.access import roles as R
from healthlink.errors import HealthLinkError, Invalid, NotFound, Unauthorized
from healthlink.identity import Review
from healthlink.web import i18n, review, session, summary, uploads
from healthlink.web.i18n import N_
from healthlink.web.session import PageRoute, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)
STATIC = Path(__file__).parent / "static"
_STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".LICENSE": "text/plain; charset=utf-8"}


def _safe_next(nxt: str | None) -> str:
    """Only same-site paths (no open redirect to another host)."""
    if not nxt or not nxt.startswith("/") or nxt.startswith("//") or urlsplit(nxt).netloc:
        return "/"
    return nxt


@router.get("/static/{name}")
def static(name: str) -> Response:
    path = STATIC / name
    if "/" in name or path.suffix not in _STATIC_TYPES or not path.is_file():
        raise NotFound(f"no asset {name}")
    return Response(path.read_bytes(), media_type=_STATIC_TYPES[path.suffix],
                    headers={"Cache-Control": "public, max-age=3600"})


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:  # noqa: A002
    return render(request, "login.html", next=_safe_next(next), error=None)


@router.post("/login")
def login(request: Request, username: Annotated[str, Form()], password: Annotated[str, Form()],
          csrf_token: Annotated[str | None, Form()] = None,
          next: Annotated[str | None, Form()] = None) -> Response:  # noqa: A002
    session.check_csrf(request, csrf_token)
    client = request.client
    try:
        tok = request.app.state.platform.accounts.login(
            username, password, ctx_address=client.host if client else None,
            request_id=request.scope["state"]["request_id"])
    except Unauthorized:
        return render(request, "login.html", status=401, next=_safe_next(next),
                      error=N_("Wrong username or password, or the account is locked."))
    resp = RedirectResponse(_safe_next(next), status_code=303)
    resp.set_cookie(session.TOKEN_COOKIE, tok.access_token, max_age=tok.expires_in, httponly=True,
                    samesite="lax", secure=session.secure_cookie(request))
    return resp


@router.post("/logout")
def logout(request: Request, csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(session.TOKEN_COOKIE)
    return resp


@router.post("/lang")
def switch_language(request: Request, lang: Annotated[str, Form()],
                    csrf_token: Annotated[str | None, Form()] = None,
                    next: Annotated[str | None, Form()] = None) -> Response:  # noqa: A002
    session.check_csrf(request, csrf_token)
    resp = RedirectResponse(_safe_next(next), status_code=303)
    resp.set_cookie(session.LANG_COOKIE, i18n.pick(lang), max_age=365 * 24 * 3600, samesite="lax",
                    secure=session.secure_cookie(request))
    return resp


@router.get("/")
def home(request: Request) -> Response:
    ctx = session.context(request)
    return render(request, "home.html", ctx=ctx, cards=summary.home_cards(ctx.actor.roles))


@router.get("/institutions")
def institutions(request: Request) -> Response:
    ctx = session.context(request)
    repo = request.app.state.platform.repository(ctx)
    return render(request, "institutions.html", ctx=ctx, tree=summary.institution_tree(repo),
                  tiers=summary.TIERS)


@router.get("/patients")
def patients(request: Request, name: str = "", identifier: str = "", birthdate: str = "") -> Response:
    ctx = session.context(request)
    criteria = {"name": name.strip(), "identifier": identifier.strip(), "birthdate": birthdate.strip()}
    rows = None
    if any(criteria.values()):
        repo = request.app.state.platform.repository(ctx)
        rows = summary.find_patients(repo, criteria)
    template = "_patient_rows.html" if request.headers.get("hx-request") else "patients.html"
    return render(request, template, ctx=ctx, criteria=criteria, rows=rows)


@router.get("/patients/{patient_id}")
def patient(request: Request, patient_id: str) -> Response:
    ctx = session.context(request)
    repo = request.app.state.platform.repository(ctx)
    return render(request, "patient.html", ctx=ctx, p=summary.patient_summary(repo, patient_id),
                  can_order=R.allowed(ctx.actor.roles, "ServiceRequest", "c"))


@router.get("/uploads")
def upload_page(request: Request) -> Response:
    ctx = session.context(request)
    return render(request, "uploads.html", ctx=ctx, can_upload=uploads.can_upload(ctx.actor), error=None,
                  reports=uploads.recent_reports(request.app.state.platform, ctx))


@router.post("/uploads")
def upload_files(request: Request, file: Annotated[list[UploadFile] | None, File()] = None,
                 csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    ctx = session.context(request)
    platform = request.app.state.platform
    chosen = [(f.filename or "", f.file.read()) for f in file or [] if f.filename]
    try:
        if not chosen:
            raise Invalid(N_("Choose one or more files to upload."))
        upload_id = uploads.start(platform, ctx, chosen)
    except HealthLinkError as exc:
        if exc.status >= 500:
            raise
        # the form again, with what was wrong (a wrong file is the sender's error, not ours)
        return render(request, "uploads.html", status=exc.status, ctx=ctx, error=exc.message,
                      can_upload=uploads.can_upload(ctx.actor), reports=uploads.recent_reports(platform, ctx))
    return RedirectResponse(f"/uploads/{upload_id}", status_code=303)


@router.get("/uploads/{upload_id}")
def upload_report(request: Request, upload_id: str, page: int = 1) -> Response:
    ctx = session.context(request)
    template = "_upload_report.html" if request.headers.get("hx-request") else "upload.html"
    return render(request, template, ctx=ctx, v=uploads.report(request.app.state.platform, ctx, upload_id, page),
                  statuses=uploads.STATUS, reasons=uploads.REASONS)


# ------------------------------------------------------------------ EMPI review (docs/web.md)
def _review(request: Request) -> Review:
    return Review(request.app.state.platform.identity)


def _review_page(request: Request, template: str, ctx: RequestContext, **values: object) -> Response:
    return render(request, template, ctx=ctx, comparisons=review.COMPARISONS, record_fields=review.RECORD_FIELDS,
                  levels=review.LEVELS, kinds=review.KINDS, methods=review.METHODS, when=review.when,
                  **values)


@router.get("/review")
def review_queue(request: Request, cursor: str | None = None) -> Response:
    ctx = session.context(request)
    return _review_page(request, "review_queue.html", ctx, page=_review(request).queue(ctx, count=20, cursor=cursor))


@router.get("/review/pair")
def review_pair(request: Request, a: str, b: str) -> Response:
    ctx = session.context(request)
    return _review_page(request, "review_pair.html", ctx, ex=_review(request).explain_pair(ctx, a, b),
                        pa=a, pb=b)


@router.get("/review/persons/{person_id}")
def review_person(request: Request, person_id: str) -> Response:
    ctx = session.context(request)
    return _review_page(request, "review_person.html", ctx, v=_review(request).person(ctx, person_id))


@router.post("/review/link")
def review_link(request: Request, a: Annotated[str, Form()], b: Annotated[str, Form()],
                csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    dec = _review(request).link(session.context(request), a, b)
    return RedirectResponse(f"/review/persons/{quote(next(iter(dec.moved.values()))[1] or '')}", status_code=303)


@router.post("/review/keep-apart")
def review_keep_apart(request: Request, a: Annotated[str, Form()], b: Annotated[str, Form()],
                      csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    _review(request).keep_apart(session.context(request), a, b)
    return RedirectResponse("/review", status_code=303)


@router.post("/review/merge")
def review_merge(request: Request, person: Annotated[str, Form()], other: Annotated[str, Form()],
                 csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    dec = _review(request).merge(session.context(request), person, other)
    return RedirectResponse(f"/review/persons/{quote(dec.person_a or '')}", status_code=303)


@router.post("/review/unmerge")
def review_unmerge(request: Request, patient: Annotated[str, Form()],
                   csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    dec = _review(request).unmerge(session.context(request), patient)
    return RedirectResponse(f"/review/persons/{quote(dec.person_a or '')}", status_code=303)


@router.post("/review/undo")
def review_undo(request: Request, decision: Annotated[int, Form()],
                csrf_token: Annotated[str | None, Form()] = None,
                next: Annotated[str | None, Form()] = None) -> Response:  # noqa: A002
    session.check_csrf(request, csrf_token)
    _review(request).undo(session.context(request), decision)
    return RedirectResponse(_safe_next(next or "/review"), status_code=303)
