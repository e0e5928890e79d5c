"""Asynchronous uploads for the FHIR ``$import`` endpoint: files are saved under the data
directory, ingested in a background thread, and their status read from the upload row."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import orjson
from sqlalchemy import select

from healthlink.access import RequestContext, Services
from healthlink.access import roles as R
from healthlink.db import tables as t
from healthlink.errors import Forbidden, Invalid, NotFound
from healthlink.ingest.service import ingest_files, register_upload

log = logging.getLogger(__name__)
SUFFIXES = (".ndjson", ".ndjson.gz", ".json", ".json.gz")


def start_import(services: Services, files: list[tuple[str, bytes]], *, ctx: RequestContext,
                 data_dir: Path) -> str:
    """Save ``files`` (name, content) and ingest them for the actor's institution in the
    background; return the upload id."""
    actor = ctx.actor
    # uploads come from an institution's HIS (a his_client token), not from staff logins
    if actor.institution_id is None or "his_client" not in actor.roles or not R.allowed(actor.roles, "Patient", "c"):
        raise Forbidden("only an institution's system (his_client) may upload its records")
    if not files:
        raise Invalid("no files: send NDJSON or Bundle files (see docs/ingest.md)")
    names = []
    for n, (name, _) in enumerate(files):
        base = Path(name or "").name
        if not base.endswith(SUFFIXES):
            raise Invalid(f"file {name!r}: the name must end in one of {', '.join(SUFFIXES)}")
        names.append(f"{n:04d}-{base}")
    staged = [Path(nm) for nm in names]
    upload_id = register_upload(services, staged, institution=actor.institution_id, actor=actor)
    folder = data_dir / "uploads" / upload_id
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for nm, (_, content) in zip(names, files):
        (folder / nm).write_bytes(content)
        paths.append(folder / nm)

    def run() -> None:
        try:
            ingest_files(services, paths, institution=actor.institution_id, actor=actor,  # type: ignore[arg-type]
                         upload_id=upload_id)
        except Exception:  # noqa: BLE001 - the upload row says "failed"; the log says why
            log.exception("upload %s failed", upload_id)

    threading.Thread(target=run, name=f"import-{upload_id}", daemon=True).start()
    return upload_id


def import_status(services: Services, upload_id: str, *, ctx: RequestContext) -> tuple[str, dict | None]:
    """(status, report) of an upload of the actor's institution: running, done or failed."""
    u = t.ingest_upload.c
    with services.db.read() as conn:
        row = conn.execute(select(u.status, u.counts, u.institution_id).where(u.id == upload_id)).first()
    if row is None or row.institution_id != ctx.actor.institution_id:
        raise NotFound(f"upload {upload_id} is not known")
    return row.status, (orjson.loads(row.counts) if row.counts else None)


def list_uploads(platform, ctx: RequestContext, *, limit: int = 50) -> list[dict]:  # noqa: ANN001
    """The actor's institution's uploads, newest first, with their report totals (the
    upload page)."""
    from healthlink.fhir.dates import instant

    if ctx.actor.institution_id is None:
        return []
    u = t.ingest_upload.c
    with platform.services.db.read() as conn:
        rows = conn.execute(select(u.id, u.started, u.status, u.counts)
                            .where(u.institution_id == ctx.actor.institution_id)
                            .order_by(u.started.desc()).limit(limit)).all()
    out = []
    for r in rows:
        totals = (orjson.loads(r.counts).get("totals") if r.counts else None) or {}
        out.append({"id": r.id, "created": instant(r.started), "status": r.status,
                    "accepted": totals.get("accepted", 0), "updated": totals.get("updated", 0),
                    "unchanged": totals.get("unchanged", 0), "quarantined": totals.get("quarantined", 0)})
    return out
