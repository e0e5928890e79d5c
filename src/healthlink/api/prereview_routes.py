"""The regional prescription pre-review centre as JSON (issue 8, item 3; docs/prereview.md).

* ``POST /api/prereview/prescriptions`` — a doctor of an institution configured for pre-review
  submits a prescription (one or more MedicationRequests of one patient);
* ``GET /api/prereview/queue`` — the centre pharmacist's queue (filters: status, institution,
  day, min_level);
* ``GET /api/prereview/prescriptions/{id}`` — one prescription: for the pharmacist with the
  patient's medications, allergies and results; for the submitting institution with its outcome;
* ``POST /api/prereview/prescriptions/{id}/decision`` — pass, return (reason) or double-sign;
* ``POST /api/prereview/prescriptions/{id}/countersign`` — the prescriber's double signature;
* ``GET /api/prereview/mine`` — the outcomes of the doctor's institution's submissions;
* ``GET /api/prereview/outcome?order=MedicationRequest/<id>`` — the outcome of one order;
* ``GET /api/prereview/statistics`` — per institution and day counts and turnaround;
* ``GET /api/prereview/reasons`` — the coded return / double-signature reasons.

A thin adapter over ``Platform.prereview``, which decides who may do what and audits the reads.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from starlette.responses import Response

from healthlink.api.deps import CurrentContext, CurrentPlatform
from healthlink.errors import Invalid, Issue
from healthlink.medsafety.prereview import REASONS

router = APIRouter(prefix="/api/prereview", tags=["medication safety"])
NO_STORE = {"Cache-Control": "no-store"}
RxId = Annotated[str, Path(max_length=64)]


def _json(content: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content, default=str), status_code=status_code, headers=NO_STORE,
                    media_type="application/json")


class Submit(BaseModel):
    patient: str = Field(min_length=1, max_length=64)
    encounter: str | None = Field(None, max_length=64)
    emergency: bool = False
    # each {"reference": "MedicationRequest/<id>"} or {"resource": {...}, "orderRef": "..."}
    orders: list[dict[str, Any]] = Field(min_length=1, max_length=20)


class Decision(BaseModel):
    action: Literal["pass", "return", "double-sign"]
    reason: str | None = Field(None, max_length=32)
    text: str | None = Field(None, max_length=2000)


class Countersign(BaseModel):
    text: str | None = Field(None, max_length=2000)


@router.post("/prescriptions", summary="Submit a prescription to the regional pre-review centre", status_code=201)
def submit(body: Submit, ctx: CurrentContext, platform: CurrentPlatform) -> Response:
    rx = platform.prereview.submit(ctx, body.patient, body.orders, encounter_id=body.encounter,
                                   emergency=body.emergency)
    return _json(rx, 201)


@router.get("/queue", summary="The centre pharmacist's queue")
def queue(ctx: CurrentContext, platform: CurrentPlatform,
          status: Annotated[str, Query(max_length=24)] = "pending",
          institution: Annotated[str | None, Query(max_length=64)] = None,
          day: Annotated[str | None, Query(max_length=10)] = None,
          min_level: Annotated[int | None, Query(ge=1, le=3)] = None,
          limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Response:
    items = platform.prereview.queue(ctx, status=status, institution=institution, day=day, min_level=min_level,
                                     limit=limit)
    return _json({"count": len(items), "items": items})


@router.get("/mine", summary="The outcomes of my institution's submissions")
def mine(ctx: CurrentContext, platform: CurrentPlatform,
         status: Annotated[str | None, Query(max_length=24)] = None,
         limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Response:
    items = platform.prereview.mine(ctx, status=status, limit=limit)
    return _json({"count": len(items), "items": items})


@router.get("/outcome", summary="The pre-review outcome of one order")
def outcome(ctx: CurrentContext, platform: CurrentPlatform,
            order: Annotated[str, Query(min_length=1, max_length=160)]) -> Response:
    return _json({"order": order, "outcome": platform.prereview.outcome_for(ctx, order)})


@router.get("/prescriptions/{rx_id}", summary="One prescription with its problems and outcome")
def get_one(rx_id: RxId, ctx: CurrentContext, platform: CurrentPlatform) -> Response:
    return _json(platform.prereview.get(ctx, rx_id))


@router.post("/prescriptions/{rx_id}/decision", summary="The pharmacist passes, returns or requires a double signature")
def decide(rx_id: RxId, body: Decision, ctx: CurrentContext, platform: CurrentPlatform) -> Response:
    return _json(platform.prereview.decide(ctx, rx_id, body.action, reason=body.reason, text=body.text))


@router.post("/prescriptions/{rx_id}/countersign", summary="The prescriber's double signature")
def countersign(rx_id: RxId, body: Countersign, ctx: CurrentContext, platform: CurrentPlatform) -> Response:
    return _json(platform.prereview.countersign(ctx, rx_id, body.text))


@router.get("/statistics", summary="Submissions, interventions and turnaround per institution and day")
def statistics(ctx: CurrentContext, platform: CurrentPlatform,
               since: Annotated[date | None, Query()] = None, until: Annotated[date | None, Query()] = None,
               institution: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    if since and until and since > until:
        raise Invalid("since is after until", [Issue("invalid", "since is after until", ("since",))])
    return _json(platform.prereview.statistics(ctx, since=since.isoformat() if since else None,
                                               until=until.isoformat() if until else None, institution=institution))


@router.get("/reasons", summary="The coded reasons to return a prescription or require a double signature")
def reasons(ctx: CurrentContext) -> Response:
    return _json([{"code": k, "zh": v[0], "en": v[1]} for k, v in REASONS.items()])
