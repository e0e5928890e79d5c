"""Pages of the regional prescription pre-review centre (issue 8, items 3 and 5; docs/prereview.md):

* ``/prereview`` — the centre pharmacist's queue, with filters (status, institution, day, level);
* ``/prereview/rx/{id}`` — one prescription: its lines and automatic problems and, for the
  pharmacist, the patient's active medications, allergies and results, with the buttons pass /
  return (reason) / require double signature; for the submitting doctor the outcome and, when
  the pharmacist asked for it, the double-signature form;
* ``/prereview/mine`` — the doctor's view of the outcomes of their institution's submissions.

A thin adapter: who may see or decide what, and the audit of every read, are
``platform.prereview``'s (and the repository's)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from healthlink.access import roles as R
from healthlink.errors import HealthLinkError
from healthlink.medsafety.prereview import REASONS, STATUSES
from healthlink.medsafety.prereview_rules import CATEGORIES, LEVELS
from healthlink.web import session
from healthlink.web.i18n import N_
from healthlink.web.session import PageRoute, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)

STATUS_LABELS = {"auto-passed": N_("Passed automatically"), "pending": N_("Waiting for review"),
                 "passed": N_("Passed"), "returned": N_("Returned to the doctor"),
                 "double-sign-required": N_("Double signature required"),
                 "double-signed": N_("Double-signed"), "timed-out": N_("Passed by timeout"),
                 "all": N_("All")}
ACTION_LABELS = {"pass": N_("Pass"), "return": N_("Return to the doctor"),
                 "double-sign": N_("Require double signature")}


def may_review(roles: frozenset[str]) -> bool:
    return R.may_prereview(roles)


def may_see_outcomes(roles: frozenset[str]) -> bool:
    return bool(roles & {"doctor"})


def _lang_pick(request: Request):
    zh = session.language(request) == "zh-CN"
    return lambda z, e: z if zh else e


def _labels(request: Request) -> dict:
    pick = _lang_pick(request)
    return {"category": {k: pick(*v) for k, v in CATEGORIES.items()},
            "level": {k: pick(*v) for k, v in LEVELS.items()},
            "reason": {k: pick(*v) for k, v in REASONS.items()}, "status_label": STATUS_LABELS,
            "actions": ACTION_LABELS, "pick": pick}


@router.get("/prereview")
def queue_page(request: Request, status: str = "pending", institution: str = "", day: str = "",
               level: str = "") -> Response:
    ctx = session.context(request)
    pr = request.app.state.platform.prereview
    status = status if status in (*STATUSES, "all") else "pending"
    items, error, code = [], None, 200
    try:
        items = pr.queue(ctx, status=status, institution=institution.strip() or None, day=day.strip() or None,
                         min_level=int(level) if level in ("1", "2", "3") else None)
    except HealthLinkError as exc:
        if exc.status != 400:
            raise
        error, code = exc.message, exc.status
    return render(request, "prereview_queue.html", status=code, ctx=ctx, items=items, error=error,
                  f_status=status, f_institution=institution, f_day=day, f_level=level,
                  statuses=(*STATUSES, "all"), **_labels(request))


@router.get("/prereview/mine")
def mine_page(request: Request) -> Response:
    ctx = session.context(request)
    items = request.app.state.platform.prereview.mine(ctx)
    return render(request, "prereview_mine.html", ctx=ctx, items=items, **_labels(request))


def _one(request: Request, rx_id: str, *, error: str | None = None, code: int = 200) -> Response:
    ctx = session.context(request)
    rx = request.app.state.platform.prereview.get(ctx, rx_id)
    return render(request, "prereview_rx.html", status=code, ctx=ctx, rx=rx, error=error,
                  pharmacist=may_review(ctx.actor.roles), me=ctx.actor.subject, **_labels(request))


@router.get("/prereview/rx/{rx_id}")
def rx_page(request: Request, rx_id: str) -> Response:
    return _one(request, rx_id)


@router.post("/prereview/rx/{rx_id}/decision")
def decide(request: Request, rx_id: str, action: Annotated[str, Form()] = "",
           reason: Annotated[str, Form()] = "", text: Annotated[str, Form()] = "",
           csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    ctx = session.context(request)
    try:
        request.app.state.platform.prereview.decide(ctx, rx_id, action, reason=reason.strip() or None,
                                                    text=text.strip() or None)
    except HealthLinkError as exc:
        if exc.status not in (400, 409):
            raise
        return _one(request, rx_id, error=exc.message, code=exc.status)
    return RedirectResponse(f"/prereview/rx/{rx_id}", status_code=303)


@router.post("/prereview/rx/{rx_id}/countersign")
def countersign(request: Request, rx_id: str, text: Annotated[str, Form()] = "",
                csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    ctx = session.context(request)
    try:
        request.app.state.platform.prereview.countersign(ctx, rx_id, text.strip() or None)
    except HealthLinkError as exc:
        if exc.status not in (400, 409):
            raise
        return _one(request, rx_id, error=exc.message, code=exc.status)
    return RedirectResponse(f"/prereview/rx/{rx_id}", status_code=303)


__all__ = ["may_review", "may_see_outcomes", "router"]
