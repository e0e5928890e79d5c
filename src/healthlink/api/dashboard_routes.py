"""The leaders' dashboard as JSON (issue 10; docs/dashboard.md).

* ``GET /api/dashboard`` — every indicator for the filters (``since``, ``until``, ``tier``,
  ``county``, ``institution``, ``department``): totals, tables, chart series;
* ``GET /api/dashboard/tables/{name}.csv`` — one table as CSV (column keys as the header);
* ``POST /api/dashboard/refresh`` — recount the pre-aggregated counts now (incremental).

A thin adapter: who sees which institutions is decided by ``platform.dashboard``."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from healthlink.api.deps import CurrentContext, CurrentPlatform
from healthlink.dashboard import Filters
from healthlink.access import RequestContext
from healthlink.runtime import Platform

router = APIRouter(prefix="/api/dashboard", tags=["dashboard"])
NO_STORE = {"Cache-Control": "no-store"}

Day = Annotated[str | None, Query(max_length=10, description="YYYY-MM-DD, the region's calendar")]
Name = Annotated[str | None, Query(max_length=64)]


def _filters(platform: Platform, ctx: RequestContext, since: str | None, until: str | None, tier: str | None,
             county: str | None, institution: str | None, department: str | None) -> Filters:
    return platform.dashboard.filters(ctx, since=since, until=until, tier=tier, county=county,
                                      institution=institution, department=department)


@router.get("", summary="The dashboard's indicators for a period, tier, county, institution or department")
def dashboard(ctx: CurrentContext, platform: CurrentPlatform, since: Day = None, until: Day = None,
              tier: Name = None, county: Name = None, institution: Name = None, department: Name = None) -> Response:
    f = _filters(platform, ctx, since, until, tier, county, institution, department)
    return Response(orjson.dumps(platform.dashboard.view(ctx, f), default=str), media_type="application/json",
                    headers=NO_STORE)


@router.get("/tables/{name}.csv", summary="One dashboard table as CSV")
def table_csv(name: Annotated[str, Path(max_length=32)], ctx: CurrentContext, platform: CurrentPlatform,
              since: Day = None, until: Day = None, tier: Name = None, county: Name = None,
              institution: Name = None, department: Name = None) -> Response:
    f = _filters(platform, ctx, since, until, tier, county, institution, department)
    tb = platform.dashboard.table(ctx, f, name)
    return Response(tb.to_csv(), media_type="text/csv; charset=utf-8",
                    headers={**NO_STORE, "Content-Disposition": f'attachment; filename="dashboard-{name}.csv"'})


@router.post("/refresh", summary="Recount the pre-aggregated indicators now (incremental)")
def refresh(ctx: CurrentContext, platform: CurrentPlatform) -> Response:
    took = platform.dashboard.refresh(ctx)
    return Response(orjson.dumps({"refreshed": took}), media_type="application/json", headers=NO_STORE)
