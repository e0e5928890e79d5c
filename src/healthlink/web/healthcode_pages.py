"""The electronic health code's pages (docs/healthcode.md, docs/web.md):

* ``GET /patients/{id}/health-code`` — the Patient's current code as a QR (inline SVG) with its
  expiry; htmx fetches a new one before it expires, so the QR on screen rotates.  Patients
  have no logins yet (the patient portal comes with issue 5): staff of the patient's
  institution open the page and show it to the patient.
* ``GET /health-code/scan``, ``POST /health-code/scan`` — the registration desk: the scanned
  (or pasted) code text -> this institution's Patient, created and linked if the person is new
  here; the browser goes on to the Patient's summary.

Access checks and audit records are ``Platform.local_patients``' (``healthlink.identity``).
"""

from __future__ import annotations

from datetime import timedelta, timezone
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from healthlink.access import roles as R
from healthlink.errors import HealthLinkError
from healthlink.web import session
from healthlink.web.session import PageRoute, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)
SHOWN_ZONE = timezone(timedelta(hours=8), "UTC+8")  # China Standard Time, the region's clock


def refresh_seconds(ttl: int) -> int:
    """How often the page fetches a new code: well before the shown one expires (at 80 % of
    its lifetime, and at least 30 s before), never more often than every 5 s."""
    return max(5, min(ttl - 30, int(ttl * 0.8)))


@router.get("/patients/{patient_id}/health-code")
def health_code(request: Request, patient_id: str) -> Response:
    ctx = session.context(request)
    platform = request.app.state.platform
    pc = platform.local_patients.code_for(ctx, patient_id, platform.health_codes)
    template = "_health_code.html" if request.headers.get("hx-request") else "health_code.html"
    expires = pc.code.expires_at.astimezone(SHOWN_ZONE)
    return render(request, template, ctx=ctx, pc=pc, svg=pc.code.svg(), expires_iso=pc.code.expires_at.isoformat(),
                  expires_shown=expires.strftime("%H:%M:%S"), zone=SHOWN_ZONE.tzname(None),
                  refresh=refresh_seconds(platform.health_codes.ttl_seconds))


def can_scan(roles: frozenset[str]) -> bool:
    """Roles that may register patients (a scan may create the institution's Patient)."""
    return R.allowed(roles, "Patient", "c") and R.allowed(roles, "Patient", "r")


@router.get("/health-code/scan")
def scan_form(request: Request) -> Response:
    ctx = session.context(request)
    return render(request, "health_code_scan.html", ctx=ctx, error=None, can_scan=can_scan(ctx.actor.roles))


@router.post("/health-code/scan")
def scan(request: Request, code: Annotated[str, Form()] = "",
         csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    ctx = session.context(request)
    platform = request.app.state.platform
    try:
        found = platform.local_patients.scan(ctx, code, registry=platform.identifier_resolvers())
    except HealthLinkError as exc:
        if exc.status >= 500 or exc.status == 401:
            raise
        # the form again with the reason (a bad code is the presenter's problem, not an error page)
        return render(request, "health_code_scan.html", status=exc.status, ctx=ctx, error=exc.message,
                      can_scan=can_scan(ctx.actor.roles))
    return RedirectResponse(f"/patients/{quote(found.patient_id)}", status_code=303)
