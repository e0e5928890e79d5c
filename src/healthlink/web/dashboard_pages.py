"""The leaders' dashboard pages (issue 10; docs/dashboard.md)."""

from __future__ import annotations

from fastapi import APIRouter

from healthlink.web.session import PageRoute

router = APIRouter(route_class=PageRoute, include_in_schema=False)
