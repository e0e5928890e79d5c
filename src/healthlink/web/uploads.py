"""The upload page's data: the ingest capability's reports, when that capability is
installed.  Until ``healthlink.ingest`` offers ``list_uploads`` the page shows its empty
state (docs/web.md, "Upload page")."""

from __future__ import annotations

from typing import Any

from healthlink.access import RequestContext

FIELDS = ("id", "created", "status", "accepted", "updated", "quarantined")


def _row(report: Any) -> dict[str, Any]:
    """One table row from a report (an object or a dict); per-type counts are summed."""
    get = report.get if isinstance(report, dict) else (lambda k, d=None: getattr(report, k, d))
    row = {k: get(k, "") for k in FIELDS}
    row["id"] = row["id"] or get("upload_id", "")
    for k in ("accepted", "updated", "quarantined"):
        if isinstance(row[k], dict):  # e.g. a Counter of resource type -> records
            row[k] = sum(row[k].values())
    return row


def recent_reports(platform: Any, ctx: RequestContext, limit: int = 50) -> list[dict[str, Any]] | None:
    """The actor's institution's upload reports, newest first; None when the platform has
    no ingest capability."""
    try:
        from healthlink.ingest import list_uploads  # type: ignore[attr-defined]
    except ImportError:
        return None
    return [_row(r) for r in list_uploads(platform, ctx, limit=limit)]
