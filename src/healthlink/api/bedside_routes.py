"""Bedside verification as JSON (issue 8, item 4; docs/medsafety.md "Bedside verification").

* ``POST /api/bedside/wristband`` — the scanned wristband -> the patient, the stay's bed and
  what is due (active orders with their scheduled time, crossmatched units, lab orders);
* ``POST /api/bedside/verify`` — the wristband and an item scan (pack, traceability code,
  dispensing label, blood unit, tube label): check the configured pairs only;
* ``POST /api/bedside/administer`` — the same check, and when it passes, record the
  MedicationAdministration / transfusion Procedure / Specimen (once per dose);
* ``POST /api/bedside/crossmatches`` — a blood unit crossmatched for a patient (the blood bank's
  system or staff);
* ``GET /api/bedside/stats`` — scans by flow and outcome, blocks by pair.

A thin adapter over ``Platform.bedside``.  A passed scan answers 200; a blocked one 422 (409 when
the dose, unit or tube was already recorded with another unit) with the verification as JSON:
``outcome: blocked``, ``failed`` (the pairs' names), ``message_zh`` / ``message_en`` and every
pair with what was expected and what was scanned.  A malformed scan is 400 (problem+json), a
role that does not verify 403, an unknown patient 404, a wristband whose stay is not the
patient's or has ended 422.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

import orjson
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.responses import Response

from healthlink.api.deps import CurrentContext, CurrentPlatform
from healthlink.medsafety.bedside import Verification

router = APIRouter(prefix="/api/bedside", tags=["medication safety"])
NO_STORE = {"Cache-Control": "no-store"}

Scan = Annotated[str, Field(min_length=1, max_length=2048)]


def _json(content: object, status: int = 200) -> Response:
    return Response(orjson.dumps(content, default=str), status_code=status, headers=NO_STORE,
                    media_type="application/json")


class WristbandScan(BaseModel):
    scan: Scan  # HLW1.<patient>.<encounter> or a GS1 GSRN wristband


class ItemScan(BaseModel):
    wristband: Scan
    scan: Scan  # the medicine pack, traceability code, dispensing label, blood unit or tube label
    order: str | None = Field(None, min_length=1, max_length=64)  # the order the nurse picked
    quantity: float | None = Field(None, gt=0, le=1000)  # units given (tablets, vials, mL); default 1


class Crossmatch(BaseModel):
    patient: str = Field(min_length=1, max_length=64)
    unit: Scan  # ISBT 128: DIN, product, blood groups, expiry (one compound scan or several joined)
    encounter: str | None = Field(None, min_length=1, max_length=64)
    valid_hours: int = Field(72, ge=1, le=168)


def _verification(v: Verification) -> Response:
    return _json(v.to_json(), v.status)


@router.post("/wristband")
def wristband(body: WristbandScan, ctx: CurrentContext, platform: CurrentPlatform) -> Response:
    return _json(platform.bedside.wristband(ctx, body.scan).to_json())


@router.post("/verify")
def verify(body: ItemScan, ctx: CurrentContext, platform: CurrentPlatform) -> Response:
    return _verification(platform.bedside.verify(ctx, wristband=body.wristband, scan=body.scan, order=body.order,
                                                 quantity=body.quantity, record=False))


@router.post("/administer")
def administer(body: ItemScan, ctx: CurrentContext, platform: CurrentPlatform) -> Response:
    return _verification(platform.bedside.verify(ctx, wristband=body.wristband, scan=body.scan, order=body.order,
                                                 quantity=body.quantity, record=True))


@router.post("/crossmatches", status_code=201)
def crossmatch(body: Crossmatch, ctx: CurrentContext, platform: CurrentPlatform) -> Response:
    row = platform.bedside.crossmatch(ctx, body.patient, body.unit, encounter_id=body.encounter,
                                      valid_hours=body.valid_hours)
    return _json({k: row[k] for k in ("id", "patient_id", "din", "product_code", "blood_group", "expiry", "status")},
                 201)


@router.get("/stats")
def stats(ctx: CurrentContext, platform: CurrentPlatform,
          since: Annotated[date | None, Query()] = None) -> Response:
    return _json(platform.bedside.stats(ctx, since=since))
