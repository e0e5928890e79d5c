"""The patient's side of grants in the portal (issue 5, items 4 and 9; docs/web.md, "Patient
portal"): my authorisations (active grants to revoke, pending requests to refuse, ended ones),
scanning a doctor's consultation QR to approve or refuse it, and who saw my records.

A thin adapter over ``Platform.grants`` (:class:`healthlink.consent.grants.Grants`): it checks the
patient session and the CSRF token, calls one workflow method and renders the result.  The rules
(who may approve what, the QR's MAC and expiry, which sensitive categories may be added) are the
core's.  Names of institutions and doctors are read through repositories, never with SQL here.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from healthlink.access import RequestContext
from healthlink.access.context import Actor
from healthlink.consent import PatientSession
from healthlink.consent.grants import GrantView
from healthlink.errors import Gone, HealthLinkError, Invalid, NotFound
from healthlink.web import session
from healthlink.web.healthcode_pages import SHOWN_ZONE
from healthlink.web.i18n import N_
from healthlink.web.portal import portal_session, render_portal
from healthlink.web.session import PageRoute

router = APIRouter(route_class=PageRoute, include_in_schema=False)

# Shown after a redirect to /portal/grants (?done=...): a fixed set, so no text comes from the URL.
FLASH = {
    "approved": N_("You approved the request. The doctor can now see the records you shared."),
    "refused": N_("You refused the request. The doctor cannot see your records from other institutions."),
    "revoked": N_("The authorisation is revoked. The doctor no longer sees your records from other institutions."),
}
CLASSES = {
    "*": N_("all my records"), "demographics": N_("demographics"), "encounters": N_("visits"),
    "laboratory": N_("laboratory results"), "imaging": N_("imaging"), "medications": N_("medications"),
    "allergies": N_("allergies"), "conditions": N_("diagnoses"), "procedures": N_("procedures"),
    "documents": N_("documents"), "other": N_("other records"),
}
SENSITIVE = {
    "mental-health": N_("mental health"), "hiv-sti": N_("HIV and sexually transmitted infections"),
    "reproductive-health": N_("reproductive health"), "substance-use": N_("substance use"),
    "genetics": N_("genetics"),
}
STATUS = {"active": N_("active"), "pending": N_("waiting for you"), "expired": N_("expired"),
          "refused": N_("refused"), "revoked": N_("revoked"), "closed": N_("consultation closed")}
VIA = {"code": N_("code"), "qr": N_("QR"), "in-person": N_("in person"), "break-glass": N_("break-the-glass"),
       "own institution": N_("own institution")}
ACTIONS = {
    "read": N_("read"), "vread": N_("read a version"), "search-type": N_("searched"), "search": N_("searched"),
    "search-system": N_("searched"), "history": N_("read the history"), "everything": N_("opened the shared record"),
    "create": N_("created"), "update": N_("updated"), "delete": N_("deleted"), "patch": N_("updated"),
    "grant-request": N_("asked for authorisation"), "grant-approve": N_("authorisation approved"),
    "grant-close": N_("closed the consultation"), "break-glass": N_("broke the glass (emergency)"),
    "break-glass-review": N_("reviewed an emergency access"),
}
# What the scan form says when a payload is refused (the core's messages are English).
SCAN_REFUSED = {
    Invalid: N_("This is not a HealthLink consultation QR code. Scan the QR on the doctor's screen again."),
    Gone: N_("This QR code has expired. Ask the doctor to show the current one."),
    NotFound: N_("This request is not for you."),
}
ZONE_NAME = "Asia/Shanghai"  # SHOWN_ZONE: UTC+8 all year, the region's clock
HISTORY_LIMIT = 200  # rows on the history page, and entries whose proofs the page fetches
NOT_PENDING = N_("This request is no longer waiting for an answer.")


def _ctx(request: Request) -> tuple[str | None, str]:
    return (request.client.host if request.client else None), request.scope["state"]["request_id"]


def institution_names(request: Request, ids: set[str]) -> dict[str, str]:
    """Organization names (the public directory) by id; an unknown id stays as it is."""
    ids = {i for i in ids if i}
    if not ids:
        return {}
    repo = request.app.state.platform.system_repository("portal")
    page = repo.search("Organization", [("_id", ",".join(sorted(ids))), ("_count", str(len(ids)))])
    return {s.res_id: s.json().get("name") or s.res_id for s in page.matches}


def doctor_names(request: Request, patient: PatientSession, grants: list[GrantView]) -> dict[str, str]:
    """The requesting doctor's name as the Consent records it (``provision.actor``), read as the
    patient reads their own records (those reads are left out of the access history)."""
    if not grants:
        return {}
    platform = request.app.state.platform
    persons = tuple(platform.patient_accounts.acts_for(platform.db, patient.account_id))
    address, request_id = _ctx(request)
    ctx = RequestContext(actor=Actor.patient(patient.account_id, persons), request_id=request_id, address=address)
    ids = sorted({g.consent_id for g in grants})
    try:
        page = platform.repository(ctx).search("Consent", [("_id", ",".join(ids)), ("_count", str(len(ids)))])
    except HealthLinkError:
        return {}
    out = {}
    for s in page.matches:
        actors = s.json().get("provision", {}).get("actor", [])
        name = next((a.get("reference", {}).get("display") for a in actors if a.get("reference")), None)
        if name:
            out[s.res_id] = name
    return out


def shown(request: Request, patient: PatientSession, grants: list[GrantView]) -> list[dict[str, Any]]:
    """Grants with what the page shows of them: doctor, institution, local times."""
    orgs = institution_names(request, {g.institution_id for g in grants})
    doctors = doctor_names(request, patient, grants)
    # a pending request's expiry is the request's (10 min); approved now, it would last grant_ttl
    approved_until = int((time.time() + request.app.state.platform.grants.grant_ttl) * 1_000_000)
    return [{"g": g, "doctor": doctors.get(g.consent_id, g.holder),
             "institution": orgs.get(g.institution_id, g.institution_id),
             "until": local_time(approved_until if g.status == "pending" else g.expires),
             "created": local_time(g.created),
             "ended": local_time(g.ended) if g.ended else None} for g in grants]


def local_time(us: int | None) -> str:
    if not us:
        return ""
    return datetime.fromtimestamp(us / 1_000_000, SHOWN_ZONE).strftime("%Y-%m-%d %H:%M")


def _labels() -> dict[str, Any]:
    return {"classes": CLASSES, "sensitive_names": SENSITIVE, "statuses": STATUS,
            "zone": ZONE_NAME}


# ---------------------------------------------------------------- my authorisations
@router.get("/portal/grants")
def grants_page(request: Request, done: str = "") -> Response:
    patient = portal_session(request)
    all_ = shown(request, patient, request.app.state.platform.grants.for_patient(patient.account_id))
    return render_portal(request, "portal_grants.html", patient=patient, flash=FLASH.get(done),
                         active=[x for x in all_ if x["g"].status == "active"],
                         pending=[x for x in all_ if x["g"].status == "pending"],
                         ended=[x for x in all_ if x["g"].status not in ("active", "pending")], **_labels())


@router.post("/portal/grants/{grant_id}/revoke")
def revoke(request: Request, grant_id: str, csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    patient = portal_session(request)
    request.app.state.platform.grants.revoke(patient.account_id, grant_id, address=_ctx(request)[0])
    return RedirectResponse("/portal/grants?done=revoked", status_code=303)


# ---------------------------------------------------------------- scan and decide
@router.get("/portal/scan")
def scan_form(request: Request) -> Response:
    patient = portal_session(request)
    return render_portal(request, "portal_scan.html", patient=patient, request_shown=None, payload="",
                         error=None, **_labels())


@router.post("/portal/scan")
def scan(request: Request, payload: Annotated[str, Form()] = "",
         csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    patient = portal_session(request)
    payload = payload.strip()
    try:
        view = request.app.state.platform.grants.describe(patient.account_id, payload=payload)
    except (Invalid, Gone, NotFound) as exc:
        return render_portal(request, "portal_scan.html", status=exc.status, patient=patient, request_shown=None,
                             payload=payload, error=SCAN_REFUSED[type(exc)], **_labels())
    error = None if view.status == "pending" else NOT_PENDING
    return render_portal(request, "portal_scan.html", status=200 if error is None else 409, patient=patient,
                         request_shown=shown(request, patient, [view])[0] if error is None else None,
                         payload=payload, error=error, **_labels())


@router.post("/portal/requests/{grant_id}/decision")
def decision(request: Request, grant_id: str, decision: Annotated[str, Form()] = "",
             payload: Annotated[str | None, Form()] = None,
             sensitive: Annotated[list[str] | None, Form()] = None,
             csrf_token: Annotated[str | None, Form()] = None) -> Response:
    """Approve (a QR request, with its scanned payload) or refuse (any pending request)."""
    session.check_csrf(request, csrf_token)
    patient = portal_session(request)
    if decision not in ("approve", "refuse"):
        raise Invalid("decision must be approve or refuse")
    approve = decision == "approve"
    try:
        request.app.state.platform.grants.decide(
            patient.account_id, grant_id, approve=approve, payload=(payload or "").strip() or None,
            sensitive=(sensitive or []) if approve else None, address=_ctx(request)[0])
    except (Invalid, Gone, NotFound) as exc:
        return render_portal(request, "portal_scan.html", status=exc.status, patient=patient, request_shown=None,
                             payload="", error=SCAN_REFUSED[type(exc)], **_labels())
    return RedirectResponse(f"/portal/grants?done={'approved' if approve else 'refused'}", status_code=303)


# ---------------------------------------------------------------- who saw my records
def what_text(refs: list[str], more: int) -> list[tuple[str, int]]:
    """Resource types and how many of each (ids are not shown)."""
    counts = Counter(r.split("/", 1)[0] for r in refs if "/" in r and not r.startswith("Patient/"))
    if more:
        counts["…"] += more
    return sorted(counts.items())


@router.get("/portal/history")
def history(request: Request) -> Response:
    patient = portal_session(request)
    rows = request.app.state.platform.grants.history(patient.account_id, limit=HISTORY_LIMIT)
    orgs = institution_names(request, {r["institution_id"] for r in rows if r["institution_id"]})
    entries = [{"seq": r["seq"], "when": local_time(r["when"]), "who": r["who"],
                "practitioner": r["practitioner"],
                "institution": orgs.get(r["institution_id"], r["institution_id"] or ""),
                "action": ACTIONS.get(r["action"], r["action"]), "action_code": r["action"],
                "refused": r["outcome"] != "0", "what": what_text(r["what"], r["more"]),
                "via": r["via"], "via_text": VIA.get(r["via"], r["via"])} for r in rows]
    # the proofs are fetched and checked by the browser (static/ledger-verify.js), from the same
    # API an outside client uses, so the page itself is not what the patient has to trust
    return render_portal(request, "portal_history.html", patient=patient, entries=entries,
                         zone=ZONE_NAME, proofs_url=f"/api/patient/history?proofs=true&limit={HISTORY_LIMIT}")
