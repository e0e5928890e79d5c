"""The patient portal's pages (issue 5; docs/web.md, "Patient portal"): sign-in and sign-up by
SMS code, the home page, sign-out.  Phone-sized, in its own slim layout (``portal_base.html``),
not the staff menu.  The rules (codes, limits, who a resident ID names) are
``Platform.patient_accounts``' (:class:`healthlink.consent.PatientAccounts`).

For other portal pages (``/portal/grants``, ``/portal/history``, ``/portal/scan``):

* ``portal_session(request) -> PatientSession`` — the signed-in patient from the ``hl_patient``
  cookie.  Call it first in a handler (or use it as ``Depends(portal_session)``); without a valid
  session it raises :class:`PortalSignInRequired`, which a ``PageRoute`` answers with a redirect
  (303; ``HX-Redirect`` for htmx) to ``/portal/login?next=<the page>`` and forgets the cookie.
* ``render_portal(request, template, status=200, **values)`` — renders a template that extends
  ``portal_base.html`` and fills ``{% block content %}`` (and ``{% block title %}``); pass
  ``patient=`` the session to show the sign-out button.  ``csrf`` is available to forms, as on
  every page (``session.check_csrf`` on POST).
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from healthlink.consent import OUTBOX, ConsentCodeError, PatientSession
from healthlink.errors import HealthLinkError, Unauthorized
from healthlink.web import session
from healthlink.web.i18n import N_
from healthlink.web.session import PATIENT_COOKIE, PageRoute

router = APIRouter(route_class=PageRoute, include_in_schema=False)
HOME = "/portal"
_RESIDENT_ID = re.compile(r"[0-9]{17}[0-9Xx]")

# The portal says in the patient's language why a code was refused (the core's messages are English).
REASONS = {
    "malformed": N_("A code is 6 digits."),
    "unknown-request": N_("No code was sent for this. Ask for a new code."),
    "locked": N_("Too many wrong codes. Ask for a new code."),
    "account-locked": N_("Too many wrong codes in a row: the account is locked for 5 minutes."),
    "used": N_("This code was already used. Ask for a new one."),
    "expired": N_("This code has expired. Ask for a new one."),
    "rate-limited": N_("Too many codes were sent to this phone or person. Try again later."),
    "not-sent": N_("The text message could not be sent. Ask for a new code in a moment."),
    "inactive": N_("This patient account is not active."),
}
SIGNUP_REFUSED = N_("Online sign-up is not possible with this resident ID. Sign up in person at a "
                    "registration desk with your identity card.")
LOGIN_REFUSED = N_("No patient account can sign in with this. Check the number, or sign up first.")
WRONG_CODE = N_("Wrong code. Tries left: %(n)s")
# the core's Invalid messages, shown translated
N_("a phone number is 5-20 digits")
N_("log in with a resident ID or a phone number")


class PortalSignInRequired(Unauthorized):
    """No valid patient session: ``PageRoute`` sends the browser to the portal's sign-in page."""

    login_path = "/portal/login"
    cookie = PATIENT_COOKIE


def portal_session(request: Request) -> PatientSession:
    """The signed-in patient (the ``hl_patient`` cookie, checked by ``PatientAccounts.session``:
    signature, issuer, expiry, account still active).  Raises :class:`PortalSignInRequired`."""
    token = request.cookies.get(PATIENT_COOKIE)
    if not token:
        raise PortalSignInRequired("sign in")
    platform = request.app.state.platform
    try:
        return platform.patient_accounts.session(platform.db, token)
    except Unauthorized as exc:
        raise PortalSignInRequired(exc.message) from None


def render_portal(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    """A portal page: ``template`` extends ``portal_base.html``.  ``demo_phone`` tells the
    templates whether the demo phone page (``/phone``) is served."""
    demo = request.app.state.platform.settings.sms_gateway == OUTBOX
    values.setdefault("patient", None)
    return session.render(request, template, status=status, demo_phone=demo, **values)


def refusal(exc: HealthLinkError, *, not_possible: str) -> tuple[str, dict[str, Any]]:
    """The message (a msgid) and its values that a form shows for a refused step."""
    reason = getattr(exc, "reason", None)
    if reason == "not-possible":
        return not_possible, {}
    if reason == "wrong-code":
        return WRONG_CODE, {"n": getattr(exc, "remaining", 0) or 0}
    return REASONS.get(reason or "", exc.message), {}


def _form_error(exc: HealthLinkError) -> None:
    """Errors a form shows again; the others go to the error page (or the sign-in redirect)."""
    if exc.status >= 500 and not isinstance(exc, ConsentCodeError) or exc.status == 401:
        raise exc


def portal_next(nxt: str | None) -> str:
    """Only portal paths of this site (no open redirect)."""
    if not nxt or not nxt.startswith(HOME) or nxt.startswith("//") or urlsplit(nxt).netloc:
        return HOME
    return nxt


def _client(request: Request) -> tuple[str | None, str]:
    return (request.client.host if request.client else None), request.scope["state"]["request_id"]


# ---------------------------------------------------------------- sign-in
@router.get("/portal/login")
def login_form(request: Request, next: str | None = None, signed_up: bool = False) -> Response:
    return render_portal(request, "portal_login.html", next=portal_next(next), challenge=None, who="",
                         error=None, signed_up=signed_up)


@router.post("/portal/login")
def login_start(request: Request, who: Annotated[str, Form()] = "",
                csrf_token: Annotated[str | None, Form()] = None,
                next: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    platform = request.app.state.platform
    ident = "".join(who.split())
    kind = {"resident_id": ident} if _RESIDENT_ID.fullmatch(ident) else {"phone": ident}
    try:
        challenge = platform.patient_accounts.start_login(platform.db, **kind)
    except HealthLinkError as exc:
        _form_error(exc)
        msg, args = refusal(exc, not_possible=LOGIN_REFUSED)
        return render_portal(request, "portal_login.html", status=exc.status, next=portal_next(next),
                             challenge=None, who=who, error=msg, error_args=args)
    return render_portal(request, "portal_login.html", next=portal_next(next), challenge=challenge, error=None)


@router.post("/portal/login/verify")
def login_verify(request: Request, challenge_id: Annotated[str, Form()] = "", code: Annotated[str, Form()] = "",
                 csrf_token: Annotated[str | None, Form()] = None,
                 next: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    platform = request.app.state.platform
    address, request_id = _client(request)
    try:
        s = platform.patient_accounts.verify_login(platform.db, challenge_id, code, address=address,
                                                   request_id=request_id)
    except HealthLinkError as exc:
        _form_error(exc)
        msg, args = refusal(exc, not_possible=LOGIN_REFUSED)
        return render_portal(request, "portal_login.html", status=exc.status, next=portal_next(next),
                             challenge=challenge_id, error=msg, error_args=args)
    resp = RedirectResponse(portal_next(next), status_code=303)
    resp.set_cookie(PATIENT_COOKIE, s.token, max_age=s.expires_in, httponly=True, samesite="lax",
                    secure=session.secure_cookie(request), path="/")
    return resp


@router.post("/portal/logout")
def logout(request: Request, csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    resp = RedirectResponse("/portal/login", status_code=303)
    resp.delete_cookie(PATIENT_COOKIE, path="/")
    return resp


# ---------------------------------------------------------------- sign-up
@router.get("/portal/signup")
def signup_form(request: Request) -> Response:
    return render_portal(request, "portal_signup.html", challenge=None, resident_id="", phone="", error=None)


@router.post("/portal/signup")
def signup_start(request: Request, resident_id: Annotated[str, Form()] = "", phone: Annotated[str, Form()] = "",
                 csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    platform = request.app.state.platform
    try:
        challenge = platform.patient_accounts.start_signup(platform.db, resident_id, phone)
    except HealthLinkError as exc:
        _form_error(exc)
        msg, args = refusal(exc, not_possible=SIGNUP_REFUSED)
        return render_portal(request, "portal_signup.html", status=exc.status, challenge=None,
                             resident_id=resident_id, phone=phone, error=msg, error_args=args)
    return render_portal(request, "portal_signup.html", challenge=challenge, error=None)


@router.post("/portal/signup/confirm")
def signup_confirm(request: Request, challenge_id: Annotated[str, Form()] = "",
                   code: Annotated[str, Form()] = "", csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    platform = request.app.state.platform
    try:
        platform.patient_accounts.confirm_signup(platform.db, challenge_id, code)
    except HealthLinkError as exc:
        _form_error(exc)
        msg, args = refusal(exc, not_possible=SIGNUP_REFUSED)
        return render_portal(request, "portal_signup.html", status=exc.status, challenge=challenge_id,
                             error=msg, error_args=args)
    return RedirectResponse("/portal/login?signed_up=1", status_code=303)


# ---------------------------------------------------------------- home
@router.get("/portal")
def home(request: Request) -> Response:
    patient = portal_session(request)
    platform = request.app.state.platform
    profile = platform.patient_accounts.profile(platform.db, patient.account_id)
    return render_portal(request, "portal_home.html", patient=patient, profile=profile,
                         links=[("/portal/records", N_("My records")),
                                ("/portal/grants", N_("My authorisations")),
                                ("/portal/history", N_("Access history")),
                                ("/portal/scan", N_("Scan doctor's QR"))],
                         relations={"parent": N_("parent"), "guardian": N_("guardian"),
                                    "carer": N_("carer"), "other": N_("other")})
