"""Patient-authorised access over HTTP (issue 5, items 3-6 and 9; docs/consent.md "Grants"):
problem+json errors, a refused code's ``reason`` and ``remaining`` tries.

* ``/api/consent/...`` — staff: a doctor (nurse, pharmacist) asks for the patient's outside records
  inside an open encounter, confirms the code the patient reads out or shows a QR, lists their
  grants, closes the consultation; break-the-glass and its quality-manager review; the
  registration desk's signed in-person consent.
* ``/api/patient/...`` — the signed-in patient: their grants (revoke), a scanned QR, approve or
  refuse, and who read their records.

A thin adapter over ``Platform.grants`` (:class:`healthlink.consent.grants.Grants`), which checks
roles, bindings and states and writes the Consent resources and audit records.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from healthlink.access import RequestContext
from healthlink.api.deps import CurrentContext, CurrentPatient, CurrentPlatform
from healthlink.consent.grants import GrantView
from healthlink.errors import HealthLinkError
from healthlink.healthcode.qr import qr_svg
from healthlink.runtime import Platform

staff_router = APIRouter(prefix="/api/consent", tags=["grants (staff)"])
patient_router = APIRouter(prefix="/api/patient", tags=["grants (patient)"])
NO_STORE = {"Cache-Control": "no-store"}

Id = Annotated[str, Field(min_length=1, max_length=64)]
Category = Annotated[str, Field(min_length=1, max_length=40)]
GrantId = Annotated[str, Path(max_length=64)]
EncounterId = Annotated[str, Path(max_length=64)]


class GrantRequest(BaseModel):
    patient: Id  # the Patient of the caller's institution
    encounter: Id  # an open Encounter of that Patient there
    purpose: str = Field("", max_length=200)  # required; the core says so (400) when empty
    classes: list[Category] = Field(default_factory=lambda: ["*"], max_length=20)
    sensitive: list[Category] = Field(default_factory=list, max_length=20)
    method: Literal["code", "qr"] = "code"


class CodeAnswer(BaseModel):
    code: str = Field(max_length=64)  # 6 digits; spaces are ignored by the core


class BreakGlass(BaseModel):
    patient: Id
    encounter: Id
    reason: str = Field("", max_length=2000)  # required (>= 10 characters): the core answers 400


class ReviewNote(BaseModel):
    note: str = Field("", max_length=4000)


class Signature(BaseModel):
    signature: str = Field(max_length=400_100)  # a PNG data: URL (the core checks its form)


class Scan(BaseModel):
    payload: str = Field(max_length=512)  # the QR's text (HLG1....)


class Decision(BaseModel):
    approve: bool
    payload: str | None = Field(None, max_length=512)  # a QR request needs the scanned payload
    sensitive: list[Category] | None = Field(None, max_length=20)


def _grant(g: GrantView, status_code: int = 200) -> JSONResponse:
    return JSONResponse(g.to_json(), status_code=status_code, headers=NO_STORE)


def _grants(gs: list[GrantView]) -> JSONResponse:
    return JSONResponse({"grants": [g.to_json() for g in gs]}, headers=NO_STORE)


def _institution_name(platform: Platform, ctx: RequestContext) -> str | None:
    """The caller's institution as the patient's SMS names it (Organization.name), or None (the
    core then names it by id)."""
    if ctx.actor.institution_id is None:
        return None
    try:
        s = platform.repository(ctx).read("Organization", ctx.actor.institution_id)
    except HealthLinkError:
        return None
    name = orjson.loads(s.content or "{}").get("name")
    return name if isinstance(name, str) and name.strip() else None


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


# ---------------------------------------------------------------- staff
@staff_router.post("/requests", status_code=201,
                   summary="Ask the patient for their records at other institutions (by code or QR)")
def request_grant(body: GrantRequest, ctx: CurrentContext, platform: CurrentPlatform) -> JSONResponse:
    g = platform.grants.request(ctx, patient_id=body.patient, encounter_id=body.encounter, purpose=body.purpose,
                                classes=body.classes, sensitive=body.sensitive, method=body.method,
                                institution_name=_institution_name(platform, ctx) if body.method == "code"
                                else None)
    return _grant(g, 201)


@staff_router.post("/requests/{grant_id}/resend", status_code=202,
                   summary="A new code for a pending code request (wrong tries and rate limits carry on)")
def resend(grant_id: GrantId, ctx: CurrentContext, platform: CurrentPlatform) -> JSONResponse:
    platform.grants.resend(ctx, grant_id, institution_name=_institution_name(platform, ctx))
    return JSONResponse({"id": grant_id, "sent": True}, status_code=202, headers=NO_STORE)


@staff_router.post("/requests/{grant_id}/code", summary="The code the patient read out -> the active grant")
def confirm_code(grant_id: GrantId, body: CodeAnswer, ctx: CurrentContext, platform: CurrentPlatform) -> JSONResponse:
    return _grant(platform.grants.confirm_code(ctx, grant_id, body.code))


@staff_router.get("/requests/{grant_id}/qr", summary="The current short-lived QR of a pending QR request")
def qr(grant_id: GrantId, ctx: CurrentContext, platform: CurrentPlatform) -> JSONResponse:
    payload, expires = platform.grants.qr_payload(ctx, grant_id)
    return JSONResponse({"payload": payload, "expires": datetime.fromtimestamp(expires, UTC).isoformat(),
                         "svg": qr_svg(payload, title="HealthLink consultation")}, headers=NO_STORE)


@staff_router.post("/requests/{grant_id}/in-person",
                   summary="Registration desk: the patient's signed consent makes the grant")
def in_person(grant_id: GrantId, body: Signature, ctx: CurrentContext, platform: CurrentPlatform) -> JSONResponse:
    return _grant(platform.grants.in_person(ctx, grant_id, signature=body.signature))


@staff_router.get("/grants", summary="Your own requests and grants (of one encounter), newest first")
def my_grants(ctx: CurrentContext, platform: CurrentPlatform,
              encounter: Annotated[str | None, Query(max_length=64)] = None) -> JSONResponse:
    return _grants(platform.grants.for_holder(ctx, encounter_id=encounter))


@staff_router.post("/encounters/{encounter_id}/close", summary="Close the consultation: its grants end now")
def close(encounter_id: EncounterId, ctx: CurrentContext, platform: CurrentPlatform) -> JSONResponse:
    return JSONResponse({"ended": platform.grants.close_consultation(ctx, encounter_id)}, headers=NO_STORE)


@staff_router.post("/break-glass", status_code=201, summary="Emergency access without the patient (reason required)")
def break_glass(body: BreakGlass, ctx: CurrentContext, platform: CurrentPlatform) -> JSONResponse:
    g = platform.grants.break_glass(ctx, patient_id=body.patient, encounter_id=body.encounter, reason=body.reason)
    return _grant(g, 201)


@staff_router.get("/break-glass/review", summary="Quality manager: break-the-glass accesses to review")
def review_queue(ctx: CurrentContext, platform: CurrentPlatform, reviewed: bool = False) -> JSONResponse:
    return _grants(platform.grants.review_queue(ctx, reviewed=reviewed))


@staff_router.post("/break-glass/{grant_id}/review", summary="Quality manager: record the review")
def review(grant_id: GrantId, body: ReviewNote, ctx: CurrentContext, platform: CurrentPlatform) -> JSONResponse:
    return _grant(platform.grants.review(ctx, grant_id, note=body.note))


# ---------------------------------------------------------------- patient
@patient_router.get("/grants", summary="My grants and pending requests (and my wards'), newest first")
def patient_grants(patient: CurrentPatient, platform: CurrentPlatform) -> JSONResponse:
    return _grants(platform.grants.for_patient(patient.account_id))


@patient_router.post("/grants/{grant_id}/revoke", summary="Revoke a grant: the doctor's access ends now")
def revoke(grant_id: GrantId, request: Request, patient: CurrentPatient, platform: CurrentPlatform) -> JSONResponse:
    return _grant(platform.grants.revoke(patient.account_id, grant_id, address=_address(request)))


@patient_router.post("/requests/scan", summary="A scanned consultation QR -> who asks, and why")
def scan(body: Scan, patient: CurrentPatient, platform: CurrentPlatform) -> JSONResponse:
    return _grant(platform.grants.describe(patient.account_id, payload=body.payload))


@patient_router.post("/requests/{grant_id}/decision", summary="Approve (QR, with the payload) or refuse a request")
def decide(grant_id: GrantId, body: Decision, request: Request, patient: CurrentPatient,
           platform: CurrentPlatform) -> JSONResponse:
    g = platform.grants.decide(patient.account_id, grant_id, approve=body.approve, sensitive=body.sensitive,
                               payload=body.payload, address=_address(request))
    return _grant(g)


@patient_router.get("/history", summary="Who read my records: when, where, under which grant; with "
                    "ledger inclusion proofs (proofs=true)")
def history(patient: CurrentPatient, platform: CurrentPlatform,
            limit: Annotated[int, Query(ge=1, le=500)] = 200, proofs: bool = False) -> JSONResponse:
    """With ``proofs``: each entry already in the tamper-evident ledger carries its leaf (index, leaf
    data, leaf hash) and an inclusion proof against one signed checkpoint (``checkpoint``, with the
    log's ``vkey``), so the portal or any client can verify offline that the entry is in the signed
    log (docs/ledger.md "Proofs")."""
    items = platform.grants.history(patient.account_id, limit=limit)
    body: dict = {"history": items}
    if proofs and items:
        led = platform.ledger
        leaves = led.audit_leaves([i["seq"] for i in items])
        if leaves:
            try:
                head = led.signed_head_covering(max(x["leaf_index"] for x in leaves.values()))
            except LookupError:
                head = None
            if head is not None:
                body["checkpoint"] = head[1]
                body["tree_size"] = head[0]
                body["vkey"] = ledger_vkey(platform)
                for i in items:
                    leaf = leaves.get(i["seq"])
                    if leaf is not None and leaf["leaf_index"] < head[0]:
                        b = led.proof_bundle(leaf["leaf_index"], head=head)
                        i["ledger"] = {**leaf, "inclusion_proof": b["inclusion_proof"]}
    return JSONResponse(body, headers=NO_STORE)


def ledger_vkey(platform) -> str:  # noqa: ANN001
    from healthlink.ledger import setup as ledger_setup

    return ledger_setup.signer(platform.settings).vkey
