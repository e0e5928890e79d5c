"""What every page needs: the signed-in actor (from the ``hl_token`` cookie), the page
language, the CSRF token, template rendering, and one error renderer for pages.

CSRF (OWASP "double submit cookie"): a random token lives in the ``hl_csrf`` cookie
(SameSite=Lax, HttpOnly) and is repeated in a hidden field of every form; a POST whose
field does not equal the cookie is refused with 403.  SameSite=Lax on the session cookie
already keeps other sites' forms from carrying it; the token also covers the login form,
where no session exists yet.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from jinja2 import Environment, FileSystemLoader, select_autoescape

from healthlink.access import RequestContext
from healthlink.access import roles as R
from healthlink.errors import Forbidden, HealthLinkError, Unauthorized
from healthlink.web import i18n
from healthlink.web.i18n import N_

log = logging.getLogger("healthlink.web")

TOKEN_COOKIE = "hl_token"  # the same cookie POST /api/auth/login sets
PATIENT_COOKIE = "hl_patient"  # the patient portal's session (the same as POST /api/patient/login/verify)
CSRF_COOKIE = "hl_csrf"
LANG_COOKIE = "hl_lang"

_env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                   autoescape=select_autoescape(["html"]), extensions=["jinja2.ext.i18n"],
                   trim_blocks=True, lstrip_blocks=True)


def secure_cookie(request: Request) -> bool:
    """Secure cookies except on plain http to loopback (development and tests); always when the
    public ``base_url`` is https (behind a TLS proxy that does not forward the scheme)."""
    state = request.app.state
    settings = getattr(state, "settings", None) or getattr(getattr(state, "platform", None), "settings", None)
    if settings is not None and str(settings.base_url).lower().startswith("https://"):
        return True
    host = (request.url.hostname or "").lower()
    return not (host in ("localhost", "127.0.0.1", "::1", "testserver") and request.url.scheme == "http")


def language(request: Request) -> str:
    return i18n.pick(request.cookies.get(LANG_COOKIE))


def csrf_token(request: Request) -> str:
    """The request's CSRF token: the cookie's, or a new one that the response will set."""
    tok = request.cookies.get(CSRF_COOKIE) or request.scope.get("hl_new_csrf")
    if not tok:
        tok = secrets.token_urlsafe(24)
        request.scope["hl_new_csrf"] = tok
    return tok


def check_csrf(request: Request, submitted: str | None) -> None:
    expected = request.cookies.get(CSRF_COOKIE)
    if not expected or not submitted or not hmac.compare_digest(expected, submitted):
        raise Forbidden(N_("The form has expired or did not come from this site. Reload the page and try again."))


def context(request: Request) -> RequestContext:
    """The request context of the signed-in user; Unauthorized sends the browser to login."""
    token = request.cookies.get(TOKEN_COOKIE)
    if not token:
        raise Unauthorized("sign in")
    actor = request.app.state.platform.accounts.actor_from_token(token)
    client = request.client
    return RequestContext(actor=actor, request_id=request.scope["state"]["request_id"],
                          address=client.host if client else None,
                          user_agent=request.headers.get("user-agent"))


# Navigation: (path, label, shown to whom).  Whether a role may search patients comes from
# the role table, so the menu never offers a page the repository would refuse.
def _can_search_patients(roles: frozenset[str]) -> bool:
    return R.allowed(roles, "Patient", "s")


def _can_upload(roles: frozenset[str]) -> bool:
    return R.allowed(roles, "Patient", "c") or "system_admin" in roles


#: who is offered the recognition rates page (issue 7; ``Recognition.rates`` decides what they see)
RECOGNITION_RATES_ROLES = frozenset({"quality_manager", "health_commission_leader", "institution_manager"})

NAV: list[tuple[str, str, Callable[[frozenset[str]], bool]]] = [
    ("/", N_("Home"), lambda roles: True),
    ("/patients", N_("Patients"), _can_search_patients),
    ("/institutions", N_("Institutions"), lambda roles: True),
    ("/uploads", N_("Uploads"), _can_upload),
    ("/health-code/scan", N_("Scan health code"), lambda roles: R.allowed(roles, "Patient", "c")),
    ("/review", N_("EMPI review"), R.may_review_identity),
    ("/review/break-glass", N_("Break-the-glass review"), lambda roles: "quality_manager" in roles),
    ("/recognition/rates", N_("Recognition rates"), lambda roles: bool(roles & RECOGNITION_RATES_ROLES)),
    ("/prereview", N_("Prescription pre-review"), R.may_prereview),
    ("/prereview/mine", N_("Pre-review outcomes"), lambda roles: "doctor" in roles),
    ("/bedside", N_("Bedside verification"), lambda roles: "nurse" in roles),
    ("/desk/consents", N_("Consent at the desk"), lambda roles: "registration_clerk" in roles),
    ("/audit", N_("Audit log"), lambda roles: "audit_admin" in roles),
    ("/ledger", N_("Ledger"), lambda roles: "audit_admin" in roles),
]


def nav_for(roles: frozenset[str]) -> list[tuple[str, str]]:
    return [(path, label) for path, label, shown in NAV if shown(roles)]


def role_title(code: str, lang: str) -> str:
    role = R.ROLES.get(code)
    if role is None:
        return code
    return role.title_zh if lang == "zh-CN" else role.title


def render(request: Request, template: str, status: int = 200,
           ctx: RequestContext | None = None, **values: Any) -> HTMLResponse:
    lang = language(request)
    tr = i18n.translations(lang)
    actor = ctx.actor if ctx else None
    html = _env.get_template(template).render(
        _=tr.gettext, gettext=tr.gettext, ngettext=tr.ngettext,
        lang=lang, langs=i18n.LANG_NAMES, request=request, path=request.url.path,
        csrf=csrf_token(request), actor=actor,
        nav=nav_for(actor.roles) if actor else [],
        roles_text="、".join(role_title(r, lang) for r in sorted(actor.roles)) if actor else "",
        **values)
    resp = HTMLResponse(html, status_code=status)
    resp.headers["Cache-Control"] = "no-store"  # pages carry patient data
    new = request.scope.get("hl_new_csrf")
    if new:
        resp.set_cookie(CSRF_COOKIE, new, httponly=True, samesite="lax",
                        secure=secure_cookie(request), path="/")
    return resp


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "error.html", status=status, status_code=status, message=message,
                  request_id=request.scope.get("state", {}).get("request_id", "-"))


_DOES_NOT_FIT = N_("The request does not fit this page: a form field or parameter is missing or malformed.")


class PageRoute(APIRoute):
    """Routes of pages: a 401 redirects to the login page, other errors of the family and
    unexpected errors render the error page (never a stack trace)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except Unauthorized as exc:
                # staff pages sign in at /login; an error may name another sign-in page and the
                # cookie to forget (the patient portal's, web/portal.py)
                login, cookie = getattr(exc, "login_path", "/login"), getattr(exc, "cookie", TOKEN_COOKIE)
                nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                url = f"{login}?next={quote(nxt, safe='')}"
                if request.headers.get("hx-request"):
                    # htmx would swap the login page into the fragment; make it navigate
                    resp: Response = Response(status_code=204, headers={"HX-Redirect": url})
                else:
                    resp = RedirectResponse(url, status_code=303)
                resp.delete_cookie(cookie)
                return resp
            except HealthLinkError as exc:
                return error_page(request, exc.status, exc.message)
            except StarletteHTTPException as exc:  # e.g. 413 from the body-size limit (api/middleware.py)
                if exc.status_code == 413:
                    return error_page(request, 413, N_("The upload is larger than this platform accepts."))
                return error_page(request, exc.status_code, _DOES_NOT_FIT)
            except RequestValidationError:  # e.g. a form field of the wrong kind, ?page=x
                return error_page(request, 400, _DOES_NOT_FIT)
            except Exception:
                rid = request.scope.get("state", {}).get("request_id", "-")
                log.exception("unhandled error on a page (request %s)", rid)
                return error_page(request, 500, N_("Something went wrong on our side."))

        return run
