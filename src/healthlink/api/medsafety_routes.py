"""medsafety JSON API (issue 8) — being built."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/medsafety", tags=["medication safety"])
