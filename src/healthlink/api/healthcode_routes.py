"""The electronic health code under /api/health-code (problem+json errors): the scan at the
desk and a Patient's current code.  A thin adapter over ``Platform.local_patients``
(:class:`healthlink.identity.LocalPatients`), which checks the actor and writes the audit
records, and ``Platform.health_codes`` (docs/healthcode.md)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.responses import JSONResponse

from healthlink.api.deps import CurrentContext, CurrentPlatform

router = APIRouter(prefix="/api/health-code", tags=["health code"])


class Scan(BaseModel):
    code: str = ""  # the QR's text, as the desk scanner types it (surrounding whitespace is ignored)


@router.post("/scan", summary="A scanned health code -> this institution's Patient (created and linked if new)")
def scan(body: Scan, platform: CurrentPlatform, ctx: CurrentContext) -> JSONResponse:
    found = platform.local_patients.scan(ctx, body.code, registry=platform.identifier_resolvers())
    return JSONResponse({"patient": found.patient_id, "person": found.person_id, "created": found.created})


@router.get("/patient/{patient_id}", summary="A fresh health code for a Patient of your institution")
def patient_code(patient_id: str, platform: CurrentPlatform, ctx: CurrentContext) -> JSONResponse:
    pc = platform.local_patients.code_for(ctx, patient_id, platform.health_codes)
    return JSONResponse({"patient": pc.patient_id, "person": pc.person_id, "text": pc.code.text,
                         "expiresAt": pc.code.expires_at.isoformat(), "svg": pc.code.svg()},
                        headers={"Cache-Control": "no-store"})
