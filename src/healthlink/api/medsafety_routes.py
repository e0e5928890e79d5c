"""The order-time medication check as plain JSON (issue 8, item 2; docs/medsafety.md "CDS Hooks and
JSON API") for a hospital system that does not speak CDS Hooks, and for scripts.

* ``POST /api/medsafety/check`` — check one draft MedicationRequest or a list of them;
* ``POST /api/medsafety/findings/{id}/override`` — go ahead despite a finding, with a reason;
* ``POST /api/medsafety/findings/{id}/accept`` — the prescriber followed the finding;
* ``GET /api/medsafety/knowledge`` — the knowledge in force (version, provenance, counts, sources);
* ``GET /api/medsafety/reasons`` — the override reasons.

A thin adapter over ``Platform.medsafety``.  A member of staff (doctor, nurse, pharmacist) calls
with their own token; a hospital system (client credentials) names the ordering practitioner
(``practitioner``) on a check, and on a decision acts for the member of staff the finding was
shown to.  Errors are problem+json naming the element.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path
from pydantic import BaseModel, Field
from starlette.responses import Response

from healthlink.access import RequestContext
from healthlink.api.cds_routes import practitioner_context, staff_through_client
from healthlink.api.deps import CurrentContext, CurrentPlatform
from healthlink.errors import Forbidden, Invalid, Issue
from healthlink.medsafety.service import OVERRIDE_REASON_SYSTEM, OVERRIDE_REASONS
from healthlink.runtime import Platform

router = APIRouter(prefix="/api/medsafety", tags=["medication safety"])
NO_STORE = {"Cache-Control": "no-store"}
MAX_DRAFTS = 50
Id = Annotated[str, Field(min_length=1, max_length=64)]
FindingId = Annotated[str, Path(max_length=64)]


def JSONResponse(content: object, *, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content, default=str), status_code=status_code, headers=headers,
                    media_type="application/json")


class CheckRequest(BaseModel):
    patient: Id  # a Patient of the caller's institution
    encounter: Id | None = None
    # one draft MedicationRequest, or a list of them (checked one by one, each against the record)
    draft: dict[str, Any] | list[Any]
    # a hospital system's token: the ordering member of staff (Practitioner/<id> or PractitionerRole/<id>)
    practitioner: str | None = Field(None, max_length=160)


class Override(BaseModel):
    reason: str | None = Field(None, max_length=32)  # one of /api/medsafety/reasons; required when it interrupts
    text: str | None = Field(None, max_length=2000)  # required with "other" (at most 500 characters kept)


def _drafts(body: CheckRequest) -> list[dict]:
    """The drafts, each a MedicationRequest naming its medication; errors name the element."""
    many = isinstance(body.draft, list)
    items = body.draft if many else [body.draft]
    if not items:
        raise Invalid("draft: at least one MedicationRequest", [Issue("required", "empty list", ("draft",))])
    if len(items) > MAX_DRAFTS:
        raise Invalid(f"draft: at most {MAX_DRAFTS} drafts in one call",
                      [Issue("too-long", f"at most {MAX_DRAFTS}", ("draft",))])
    for n, d in enumerate(items):
        where = f"draft[{n}]" if many else "draft"
        if not isinstance(d, dict) or d.get("resourceType") != "MedicationRequest":
            raise Invalid(f"{where}.resourceType: must be a MedicationRequest",
                          [Issue("invalid", "not a MedicationRequest", (f"{where}.resourceType",))])
        if not isinstance(d.get("medicationCodeableConcept"), dict) and not isinstance(d.get("medicationReference"),
                                                                                       dict):
            raise Invalid(f"{where}.medication[x]: the drug is required (medicationCodeableConcept or "
                          "medicationReference to a contained Medication)",
                          [Issue("required", "no medication", (f"{where}.medication[x]",))])
        if d.get("id") is not None and (not isinstance(d["id"], str) or not d["id"] or len(d["id"]) > 64):
            raise Invalid(f"{where}.id: must be a FHIR id (1 to 64 characters)",
                          [Issue("invalid", "bad id", (f"{where}.id",))])
    return items  # type: ignore[return-value]


def _decider(platform: Platform, ctx: RequestContext, finding_id: str) -> RequestContext:
    """Who decides on a finding: the member of staff calling, or, for a hospital system, the
    member of staff the finding was shown to."""
    if ctx.actor.kind == "user":
        return ctx
    if ctx.actor.kind != "client":
        raise Forbidden("decisions on a finding are taken by a member of staff or their hospital system")
    event, _ = platform.medsafety.finding(ctx, finding_id)
    return staff_through_client(platform, ctx, event["username"], f"client {ctx.actor.subject}")


@router.post("/check", summary="The order-time medication check of one or more draft MedicationRequests")
def check(body: CheckRequest, ctx: CurrentContext, platform: CurrentPlatform) -> Response:
    drafts = _drafts(body)
    if ctx.actor.kind == "client" and not body.practitioner:
        raise Invalid("practitioner: a hospital system names the ordering member of staff "
                      "(Practitioner/<id> or PractitionerRole/<id>)",
                      [Issue("required", "the ordering practitioner", ("practitioner",))])
    pctx = practitioner_context(platform, ctx, body.practitioner)
    checks = [platform.medsafety.check(pctx, body.patient, d, encounter_id=body.encounter, channel="api")
              for d in drafts]
    return JSONResponse({"patient": body.patient, "interrupt": any(c.interrupt for c in checks),
                         "grant_needed": any(c.grant_needed for c in checks),
                         "checks": [c.to_json() for c in checks]}, headers=NO_STORE)


@router.post("/findings/{finding_id}/override", summary="Go ahead despite a finding, with a reason")
def override(finding_id: FindingId, body: Override, ctx: CurrentContext, platform: CurrentPlatform) -> Response:
    oid = platform.medsafety.override(_decider(platform, ctx, finding_id), finding_id, body.reason, body.text,
                                      channel="api")
    return JSONResponse({"finding": finding_id, "overridden": True, "reason": body.reason, "recorded_as": oid},
                        headers=NO_STORE)


@router.post("/findings/{finding_id}/accept", summary="The prescriber followed the finding (changed the order)")
def accept(finding_id: FindingId, ctx: CurrentContext, platform: CurrentPlatform) -> Response:
    aid = platform.medsafety.accept(_decider(platform, ctx, finding_id), finding_id, channel="api")
    return JSONResponse({"finding": finding_id, "accepted": True, "recorded_as": aid}, headers=NO_STORE)


@router.get("/knowledge", summary="The knowledge in force: version, provenance, counts per section, sources")
def knowledge(ctx: CurrentContext, platform: CurrentPlatform) -> Response:
    return JSONResponse(platform.medsafety.knowledge_info())


@router.get("/reasons", summary="The reasons to go ahead despite a finding")
def reasons(ctx: CurrentContext) -> Response:
    return JSONResponse({"system": OVERRIDE_REASON_SYSTEM,
                         "reasons": [{"code": code, "display_zh": zh, "display_en": en}
                                     for code, (zh, en) in OVERRIDE_REASONS.items()]})
