"""My records in the patient portal (issue 5, item 1: "patients see their own records"): every record
of the signed-in patient's Person — or of a Person they are the guardian of — from every
institution, sensitive ones included, grouped by institution and date.

Read through the repository as a patient actor (:meth:`Repository.person_records`): the same door
and the same audit trail as every other read; this module only arranges what it is given
(``healthlink.web.shared_record``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from healthlink.access import RequestContext
from healthlink.access.context import Actor
from healthlink.errors import HealthLinkError
from healthlink.web.portal import portal_session, render_portal
from healthlink.web.session import PageRoute
from healthlink.web.shared_record import CAP, PAGE, arrange

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/portal/records")
def records(request: Request, person: str = "") -> Response:
    patient = portal_session(request)
    platform = request.app.state.platform
    persons = tuple(platform.patient_accounts.acts_for(platform.db, patient.account_id))
    profile = platform.patient_accounts.profile(platform.db, patient.account_id)
    who = person if person in persons else patient.person_id
    client = request.client
    repo = platform.repository(RequestContext(actor=Actor.patient(patient.account_id, persons),
                                              address=client.host if client else None,
                                              user_agent=request.headers.get("user-agent")))
    items, cursor, error = [], None, None
    try:
        while True:
            page, cursor = repo.person_records(who, count=min(PAGE, CAP - len(items)), cursor=cursor)
            items += page
            if not cursor or len(items) >= CAP:
                break
    except HealthLinkError as exc:
        error = exc.message
    record = arrange(repo, items[:CAP], own=None, capped=bool(cursor))
    return render_portal(request, "portal_records.html", patient=patient, profile=profile, record=record,
                         who=who, persons=persons, error=error, cap=CAP)
