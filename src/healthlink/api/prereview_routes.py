"""prereview JSON API (issue 8) — being built."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/prereview", tags=["medication safety"])
