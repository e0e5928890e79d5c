"""Reading one upload for its report page: the upload with its report, and the records it
quarantined.  An upload is seen by its own institution and by system administrators;
anyone else is told it does not exist.  Quarantined records are patient data as they
arrived, so every read of them (and every refused attempt) leaves an AuditEvent, durable
before the rows are returned, as the repository does for reads."""

from __future__ import annotations

from sqlalchemy import func, select

from healthlink.access import RequestContext, Services
from healthlink.db import tables as t
from healthlink.errors import HealthLinkError, NotFound
from healthlink.fhir.dates import instant
from healthlink.ingest.service import upload_state
from healthlink.ledger import AuditRecord

QUARANTINE_PAGE = 50  # records per page of the quarantine list
AUDIT_SUBTYPE = "quarantine-read"


def _may_see(ctx: RequestContext, institution_id: str) -> bool:
    actor = ctx.actor
    return "system_admin" in actor.roles or (
        actor.institution_id is not None and actor.institution_id == institution_id)


def get_upload(services: Services, upload_id: str, *, ctx: RequestContext) -> dict:
    """The upload: id, institution, actor, files, started, finished, status (running, done,
    failed) and its report (``Report.to_json()``; None until it ends)."""
    u = t.ingest_upload.c
    with services.db.read() as conn:
        row = conn.execute(select(u.id, u.institution_id, u.actor, u.source, u.started, u.finished,
                                  u.status, u.counts).where(u.id == upload_id)).first()
    if row is None or not _may_see(ctx, row.institution_id):
        raise NotFound(f"upload {upload_id} is not known")
    status, report = upload_state(row.status, row.counts, row.started)
    return {"id": row.id, "institution": row.institution_id, "actor": row.actor,
            "files": [f for f in row.source.split("\n") if f], "started": instant(row.started),
            "finished": instant(row.finished) if row.finished else None, "status": status,
            "report": report}


def list_quarantine(services: Services, upload_id: str, *, ctx: RequestContext, page: int = 1,
                    per_page: int = QUARANTINE_PAGE) -> dict:
    """One page of the records ``upload_id`` quarantined, by file and line: ``rows`` (id,
    source_file, line, res_type, source_id, reason, element_path, message; not the raw
    text), ``total``, ``page``, ``pages``, ``per_page``."""
    page, per_page = max(1, page), max(1, min(per_page, 500))
    query = f"ingest_quarantine?upload={upload_id}&page={page}&_count={per_page}"
    u, q = t.ingest_upload.c, t.ingest_quarantine.c
    with services.db.read() as conn:
        institution = conn.execute(select(u.institution_id).where(u.id == upload_id)).scalar()
        if institution is not None and _may_see(ctx, institution):
            total = conn.execute(select(func.count()).select_from(t.ingest_quarantine)
                                 .where(q.upload_id == upload_id)).scalar_one()
            rows = conn.execute(
                select(q.id, q.source_file, q.line, q.res_type, q.source_id, q.reason, q.element_path,
                       q.message).where(q.upload_id == upload_id)
                .order_by(q.source_file, q.line, q.id).limit(per_page).offset((page - 1) * per_page)).all()
    if institution is None or not _may_see(ctx, institution):
        exc = NotFound(f"upload {upload_id} is not known")
        try:
            services.audit.record(AuditRecord(subtype=AUDIT_SUBTYPE, agent=ctx.agent(), outcome="minor",
                                              outcome_desc=f"{exc.status} {exc.message}", query=query))
        except HealthLinkError:
            pass  # the refusal is what the caller must see
        raise exc
    # durable before the records are returned (raises Unavailable if it cannot be)
    services.audit.record(AuditRecord(
        subtype=AUDIT_SUBTYPE, agent=ctx.agent(), query=query,
        outcome_desc=f"{len(rows)} quarantined records of upload {upload_id} (Organization/{institution})"))
    return {"rows": [r._asdict() for r in rows], "total": total, "page": page, "per_page": per_page,
            "pages": max(1, -(-total // per_page))}
