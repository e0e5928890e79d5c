"""The upload pages' data: the ingest capability's reports, when that capability is
installed (without ``healthlink.ingest`` the list shows its empty state), a new upload
from the form, and one upload's report with its quarantined records (docs/web.md,
"Upload page")."""

from __future__ import annotations

from typing import Any

from healthlink.access import Actor, RequestContext
from healthlink.access import roles as R
from healthlink.web.i18n import N_

FIELDS = ("id", "created", "status", "accepted", "updated", "quarantined")
COUNTS = ("read", "accepted", "updated", "unchanged", "quarantined")
STATUS = {"running": N_("Running"), "done": N_("Done"), "failed": N_("Failed")}
# the ingest rules' reason codes (docs/ingest.md, "What happens to a record")
REASONS = {
    "parse": N_("Not a JSON object"),
    "structure": N_("Not valid FHIR R4"),
    "resident-id": N_("Resident ID card number with a wrong check digit"),
    "future-date": N_("Date in the future"),
    "unit": N_("Unit does not fit the test"),
    "unresolved-reference": N_("Refers to a record that is neither in the upload nor stored"),
    "depends-on-quarantined": N_("Refers to a quarantined record"),
}


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


def can_upload(actor: Actor) -> bool:
    """May the actor send files from the page (for their own institution)?"""
    return actor.institution_id is not None and R.allowed(actor.roles, "Patient", "c")


def start(platform: Any, ctx: RequestContext, files: list[tuple[str, bytes]]) -> str:
    """Save the files under the data directory and ingest them in the background (the
    ``$import`` job mechanism); returns the upload id."""
    from healthlink.ingest import start_upload

    return start_upload(platform.services, files, ctx=ctx, data_dir=platform.settings.data_dir)


def report(platform: Any, ctx: RequestContext, upload_id: str, page: int = 1) -> dict[str, Any]:
    """One upload's report page: the upload, its totals, counts by type and by reason, and
    (once it has ended) one page of its quarantined records, a read that is audited."""
    from healthlink.ingest import get_upload, list_quarantine

    up = get_upload(platform.services, upload_id, ctx=ctx)
    rep = up["report"] or {}
    types = sorted(set().union(*(rep.get(k) or {} for k in COUNTS)))
    totals = {k: (rep.get("totals") or {}).get(k, 0) for k in COUNTS}
    quarantine = None
    if up["status"] != "running":  # the list is read once, not on every poll
        quarantine = list_quarantine(platform.services, upload_id, ctx=ctx, page=page)
    return {"upload": up, "has_report": bool(rep), "totals": totals,
            "by_type": [{"type": rt, **{k: (rep.get(k) or {}).get(rt, 0) for k in COUNTS}} for rt in types],
            "reasons": sorted((rep.get("reasons") or {}).items(), key=lambda kv: (-kv[1], kv[0])),
            "quarantine": quarantine,
            # a record already quarantined by an earlier upload is not stored twice
            "listed_elsewhere": max(0, totals["quarantined"] - quarantine["total"]) if quarantine else 0}
