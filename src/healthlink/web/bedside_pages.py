"""The nurse's bedside scan page (issue 8, item 4; docs/medsafety.md "Bedside verification").

* ``GET /bedside`` — one scan field, focused: a keyboard-wedge scanner types the code and Enter
  submits it; where the browser has ``BarcodeDetector`` a camera button scans with the phone
  (``static/bedside-scan.js``, feature-detected, nothing fetched).
* ``POST /bedside`` — the scan: a wristband opens the patient (name, record number, bed as a
  location cross-check, what is due); any other scan (pack, traceability code, dispensing label,
  blood unit, tube label) is verified against that wristband and recorded when it passes; a
  blocked scan shows, large, which pair failed and what was expected and scanned.

A thin adapter over ``Platform.bedside.scan``; the wristband in force travels in a hidden field.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from healthlink.errors import HealthLinkError
from healthlink.web import session
from healthlink.web.session import PageRoute, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/bedside")
def bedside(request: Request) -> Response:
    ctx = session.context(request)
    return render(request, "bedside_scan.html", ctx=ctx, patient=None, result=None, error=None, wristband="",
                  is_nurse="nurse" in ctx.actor.roles)


@router.post("/bedside")
def scan(request: Request, scan: Annotated[str, Form(max_length=2048)] = "",
         wristband: Annotated[str, Form(max_length=2048)] = "",
         order: Annotated[str, Form(max_length=64)] = "",
         csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    ctx = session.context(request)
    platform = request.app.state.platform
    try:
        patient, result = platform.bedside.scan(ctx, wristband=wristband or None, scan=scan, order=order or None)
    except HealthLinkError as exc:
        if exc.status >= 500 or exc.status in (401, 403):
            raise
        # the page again with the reason: a bad scan is the nurse's to redo, not an error page
        return render(request, "bedside_scan.html", status=exc.status, ctx=ctx, patient=None, result=None,
                      error=exc.message, wristband=wristband, is_nurse=True)
    status = result.status if result is not None else 200
    return render(request, "bedside_scan.html", status=status, ctx=ctx, patient=patient, result=result,
                  error=None, wristband=wristband if result is not None else scan.strip(), is_nurse=True)
