"""The leaders' dashboard as JSON (issue 10; docs/dashboard.md)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["dashboard"])
