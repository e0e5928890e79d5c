"""Staff pages of patient-authorised access to other institutions' records (issue 5; docs/web.md,
"Consultation and shared record"):

* ``/patients/{id}/outside`` — the consultation panel: ask the patient (by code or QR) for their
  records at other institutions, break the glass, the doctor's requests and grants;
* ``/grants/{id}`` — one request: the code form or the rotating QR, the status polled by htmx;
  once active, the shared record and "close consultation";
* ``/patients/{id}/shared`` — the records ``$everything`` serves under the grant, by institution
  and date;
* ``/review/break-glass`` — the quality manager's queue of break-the-glass accesses;
* ``/desk/consents``, ``/grants/{id}/in-person`` — the registration desk records a patient's
  signed consent.

Each handler parses the form, calls one method of ``platform.grants`` (which checks who may do it
and writes the audit record) or reads through the actor's repository, and renders a template."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from healthlink.access import RequestContext
from healthlink.access.grants import CLOSED_ENCOUNTER
from healthlink.errors import HealthLinkError, NotFound
from healthlink.fhir.labels import DATA_CLASSES, SENSITIVE
from healthlink.healthcode.qr import qr_svg
from healthlink.web import session, shared_record
from healthlink.web.i18n import N_
from healthlink.web.review import when
from healthlink.web.session import PageRoute, render
from healthlink.web.summary import patient_row

router = APIRouter(route_class=PageRoute, include_in_schema=False)

CLASS_LABELS = {"*": N_("All records"), "demographics": N_("Demographics"), "encounters": N_("Encounters"),
                "laboratory": N_("Laboratory"), "imaging": N_("Imaging"), "medications": N_("Medications"),
                "allergies": N_("Allergies"), "conditions": N_("Conditions"), "procedures": N_("Procedures"),
                "documents": N_("Documents"), "other": N_("Other")}
SENSITIVE_LABELS = {"mental-health": N_("Mental health"), "hiv-sti": N_("HIV and sexually transmitted infections"),
                    "reproductive-health": N_("Reproductive health"), "substance-use": N_("Substance use"),
                    "genetics": N_("Genetics")}
METHOD_LABELS = {"code": N_("code to the patient's phone"), "qr": N_("QR scanned in the patient portal"),
                 "in-person": N_("signed at the registration desk"), "break-glass": N_("break-the-glass")}
QR_REFRESH = 60  # s; a consultation QR lives Grants.qr_ttl (120 s by default)
STATUS_POLL = 3  # s


def _fail(exc: HealthLinkError) -> None:
    """Errors a form shows next to itself; the rest go to the error page (PageRoute)."""
    if exc.status >= 500 or exc.status == 401:
        raise exc


def _org_name(request: Request, ctx: RequestContext) -> str | None:
    org = ctx.actor.institution_id
    if not org:
        return None
    try:
        return str(request.app.state.platform.repository(ctx).read("Organization", org).json().get("name") or org)
    except HealthLinkError:
        return org


def _own_grants(request: Request, ctx: RequestContext, patient_id: str) -> list:
    return [g for g in request.app.state.platform.grants.for_holder(ctx) if g.patient_id == patient_id]


def _open_encounters(repo, ctx: RequestContext, patient_id: str) -> list[dict]:
    """The patient's encounters at the doctor's institution that a grant may be asked in."""
    page = repo.search("Encounter", [("patient", f"Patient/{patient_id}"), ("_count", "100")])
    out = []
    for s in page.matches:
        e = s.json()
        if s.institution_id != ctx.actor.institution_id or e.get("status") in CLOSED_ENCOUNTER:
            continue
        start = str((e.get("period") or {}).get("start") or (e.get("meta") or {}).get("lastUpdated") or "")
        kind = (e.get("class") or {}).get("display") or (e.get("class") or {}).get("code") or ""
        out.append({"id": s.res_id, "label": " · ".join(x for x in (start[:16].replace("T", " "), kind,
                                                                      e.get("status", "")) if x)})
    return out


def _outside(request: Request, ctx: RequestContext, patient_id: str, *, status: int = 200,
             error: str | None = None, form: dict | None = None) -> Response:
    repo = request.app.state.platform.repository(ctx)
    p = patient_row(repo.read("Patient", patient_id))
    return render(request, "grant_outside.html", status=status, ctx=ctx, p=p,
                  encounters=_open_encounters(repo, ctx, patient_id),
                  grants=_own_grants(request, ctx, patient_id), error=error,
                  form=form or {"classes": ["*"], "sensitive": [], "method": "code", "purpose": ""},
                  closed=request.query_params.get("closed") == "1", class_labels=CLASS_LABELS,
                  data_classes=("*", *DATA_CLASSES), sensitive_codes=SENSITIVE,
                  sensitive_labels=SENSITIVE_LABELS, method_labels=METHOD_LABELS, when=when)


@router.get("/patients/{patient_id}/outside")
def outside(request: Request, patient_id: str) -> Response:
    return _outside(request, session.context(request), patient_id)


@router.post("/patients/{patient_id}/outside/request")
def request_access(request: Request, patient_id: str, encounter: Annotated[str, Form()] = "",
                   purpose: Annotated[str, Form()] = "", classes: Annotated[list[str] | None, Form()] = None,
                   sensitive: Annotated[list[str] | None, Form()] = None, method: Annotated[str, Form()] = "code",
                   csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    ctx = session.context(request)
    try:
        g = request.app.state.platform.grants.request(
            ctx, patient_id=patient_id, encounter_id=encounter, purpose=purpose, classes=classes or ["*"],
            sensitive=sensitive or [], method=method, institution_name=_org_name(request, ctx))
    except HealthLinkError as exc:
        _fail(exc)
        return _outside(request, ctx, patient_id, status=exc.status, error=exc.message,
                        form={"classes": classes or ["*"], "sensitive": sensitive or [], "method": method,
                              "purpose": purpose, "encounter": encounter})
    return RedirectResponse(f"/grants/{quote(g.id)}", status_code=303)


@router.post("/patients/{patient_id}/outside/break-glass")
def break_glass(request: Request, patient_id: str, encounter: Annotated[str, Form()] = "",
                reason: Annotated[str, Form()] = "", csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    ctx = session.context(request)
    try:
        request.app.state.platform.grants.break_glass(ctx, patient_id=patient_id, encounter_id=encounter,
                                                      reason=reason)
    except HealthLinkError as exc:
        _fail(exc)
        return _outside(request, ctx, patient_id, status=exc.status, error=exc.message)
    return RedirectResponse(f"/patients/{quote(patient_id)}/shared", status_code=303)


# ------------------------------------------------------------------ one request
def _grant(request: Request, ctx: RequestContext, grant_id: str):
    found = request.app.state.platform.grants.for_holder(ctx, grant_id=grant_id)
    if not found:
        raise NotFound(N_("No such request of yours."))
    return found[0]


def _grant_page(request: Request, ctx: RequestContext, grant_id: str, *, status: int = 200,
                error: str | None = None) -> Response:
    g = _grant(request, ctx, grant_id)
    repo = request.app.state.platform.repository(ctx)
    p = patient_row(repo.read("Patient", g.patient_id))
    return render(request, "grant_request.html", status=status, ctx=ctx, g=g, p=p, error=error,
                  resent=request.query_params.get("resent") == "1", qr=_qr(request, ctx, g),
                  poll=STATUS_POLL, class_labels=CLASS_LABELS, sensitive_labels=SENSITIVE_LABELS,
                  method_labels=METHOD_LABELS, when=when)


def _qr(request: Request, ctx: RequestContext, g) -> dict | None:
    if g.kind != "qr" or g.status != "pending":
        return None
    payload, exp = request.app.state.platform.grants.qr_payload(ctx, g.id)
    return {"grant": g.id, "payload": payload, "svg": qr_svg(payload, title="HealthLink consultation"),
            "expires": when(exp * 1_000_000), "refresh": QR_REFRESH}


@router.get("/grants/{grant_id}")
def grant_page(request: Request, grant_id: str) -> Response:
    return _grant_page(request, session.context(request), grant_id)


@router.get("/grants/{grant_id}/status")
def grant_status(request: Request, grant_id: str) -> Response:
    """The polled status (htmx).  When it is no longer pending the page reloads whole, so it shows
    the shared-record link and the close button (or why the request ended)."""
    ctx = session.context(request)
    g = _grant(request, ctx, grant_id)
    resp = render(request, "_grant_status.html", ctx=ctx, g=g, poll=STATUS_POLL)
    if g.status != "pending":
        resp.headers["HX-Refresh"] = "true"
    return resp


@router.get("/grants/{grant_id}/qr")
def grant_qr(request: Request, grant_id: str) -> Response:
    ctx = session.context(request)
    g = _grant(request, ctx, grant_id)
    if g.status != "pending":  # approved, refused or expired meanwhile: show the page as it is now
        return Response(status_code=204, headers={"HX-Refresh": "true"})
    return render(request, "_grant_qr.html", ctx=ctx, qr=_qr(request, ctx, g))


@router.post("/grants/{grant_id}/code")
def grant_code(request: Request, grant_id: str, code: Annotated[str, Form()] = "",
               csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    ctx = session.context(request)
    try:
        request.app.state.platform.grants.confirm_code(ctx, grant_id, code.strip())
    except HealthLinkError as exc:
        _fail(exc)
        return _grant_page(request, ctx, grant_id, status=exc.status, error=exc.message)
    return RedirectResponse(f"/grants/{quote(grant_id)}", status_code=303)


@router.post("/grants/{grant_id}/resend")
def grant_resend(request: Request, grant_id: str, csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    ctx = session.context(request)
    try:
        request.app.state.platform.grants.resend(ctx, grant_id, institution_name=_org_name(request, ctx))
    except HealthLinkError as exc:
        _fail(exc)
        return _grant_page(request, ctx, grant_id, status=exc.status, error=exc.message)
    return RedirectResponse(f"/grants/{quote(grant_id)}?resent=1", status_code=303)


@router.post("/encounters/{encounter_id}/close")
def close_consultation(request: Request, encounter_id: str, patient: Annotated[str, Form()] = "",
                       csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    request.app.state.platform.grants.close_consultation(session.context(request), encounter_id)
    back = f"/patients/{quote(patient, safe='')}/outside?closed=1" if patient else "/patients"
    return RedirectResponse(back, status_code=303)


# ------------------------------------------------------------------ the shared record
@router.get("/patients/{patient_id}/shared")
def shared(request: Request, patient_id: str) -> Response:
    ctx = session.context(request)
    repo = request.app.state.platform.repository(ctx)
    p = patient_row(repo.read("Patient", patient_id))
    active = [g for g in _own_grants(request, ctx, patient_id) if g.status == "active"]
    record = None
    if active:
        items, capped = shared_record.fetch(repo, patient_id)
        record = shared_record.arrange(repo, items, own=ctx.actor.institution_id, capped=capped)
    return render(request, "grant_shared.html", ctx=ctx, p=p, grants=active, record=record,
                  cap=shared_record.CAP, method_labels=METHOD_LABELS, when=when)


# ------------------------------------------------------------------ break-the-glass review
def _queue(request: Request, ctx: RequestContext, *, status: int = 200, error: str | None = None) -> Response:
    grants = request.app.state.platform.grants
    return render(request, "grant_btg_queue.html", status=status, ctx=ctx, error=error,
                  queue=grants.review_queue(ctx), reviewed=grants.review_queue(ctx, reviewed=True)[:50],
                  done=request.query_params.get("done") == "1", when=when)


@router.get("/review/break-glass")
def btg_queue(request: Request) -> Response:
    return _queue(request, session.context(request))


@router.post("/review/break-glass/{grant_id}")
def btg_review(request: Request, grant_id: str, note: Annotated[str, Form()] = "",
               csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    ctx = session.context(request)
    try:
        request.app.state.platform.grants.review(ctx, grant_id, note=note)
    except HealthLinkError as exc:
        _fail(exc)
        return _queue(request, ctx, status=exc.status, error=exc.message)
    return RedirectResponse("/review/break-glass?done=1", status_code=303)


# ------------------------------------------------------------------ the registration desk
def may_record_consent(roles: frozenset[str]) -> bool:
    """Who the desk pages are for (``Grants.in_person`` checks it again)."""
    return "registration_clerk" in roles


@router.get("/desk/consents")
def desk(request: Request) -> Response:
    ctx = session.context(request)
    rid = (request.query_params.get("request") or "").strip()
    if rid and may_record_consent(ctx.actor.roles):
        return RedirectResponse(f"/grants/{quote(rid, safe='')}/in-person", status_code=303)
    return render(request, "grant_desk.html", ctx=ctx, allowed=may_record_consent(ctx.actor.roles))


def _in_person(request: Request, ctx: RequestContext, grant_id: str, *, status: int = 200,
               error: str | None = None, done=None) -> Response:
    req = None
    if done is None and may_record_consent(ctx.actor.roles):
        try:  # the request's details, for the clerk to go through with the patient before signing
            req = request.app.state.platform.grants.for_desk(ctx, grant_id)
        except HealthLinkError as exc:
            error = error or exc.message
            status = status if status != 200 else exc.status
    return render(request, "grant_in_person.html", status=status, ctx=ctx, grant_id=grant_id, error=error,
                  done=done, req=req, allowed=may_record_consent(ctx.actor.roles), class_labels=CLASS_LABELS,
                  sensitive_labels=SENSITIVE_LABELS, when=when)


@router.get("/grants/{grant_id}/in-person")
def in_person_form(request: Request, grant_id: str) -> Response:
    return _in_person(request, session.context(request), grant_id)


@router.post("/grants/{grant_id}/in-person")
def in_person(request: Request, grant_id: str, signature: Annotated[str, Form()] = "",
              csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    ctx = session.context(request)
    try:
        g = request.app.state.platform.grants.in_person(ctx, grant_id, signature=signature)
    except HealthLinkError as exc:
        _fail(exc)
        return _in_person(request, ctx, grant_id, status=exc.status, error=exc.message)
    return _in_person(request, ctx, grant_id, done=g)


__all__ = ["CLASS_LABELS", "SENSITIVE_LABELS", "may_record_consent", "router"]
