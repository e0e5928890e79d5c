"""Asynchronous uploads for the FHIR ``$import`` endpoint and the upload page: files are
saved under the data directory, ingested in a background thread, and their status read from
the upload row."""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
import zlib
from pathlib import Path

from sqlalchemy import select

from healthlink.access import Actor, RequestContext, Services
from healthlink.access import roles as R
from healthlink.access.scopes import scopes_allow
from healthlink.db import tables as t
from healthlink.errors import Forbidden, Invalid, NotFound
from healthlink.fhir.definitions import resource_types
from healthlink.ingest.service import ingest_files, register_upload, upload_state
from healthlink.ingest.sources import read_records

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
    return _start(services, files, actor=actor, data_dir=data_dir)


def start_upload(services: Services, files: list[tuple[str, bytes]], *, ctx: RequestContext,
                 data_dir: Path) -> str:
    """:func:`start_import` for a staff member on the upload page: the records are written
    for the actor's institution with the actor's own roles (and audited under their name).
    Before anything is recorded the files are checked, so that a wrong file is refused with
    a clear message instead of ending as a failed upload: each must be readable (gzip when
    its name says so) and hold at least one JSON object, and the actor's roles must allow
    writing every resource type in it."""
    actor = ctx.actor
    if actor.institution_id is None or not R.allowed(actor.roles, "Patient", "c"):
        raise Forbidden("your role does not upload records for an institution")
    return _start(services, files, actor=actor, data_dir=data_dir, check=_check_files)


def _check_files(actor: Actor, paths: list[Path], names: list[str]) -> None:
    known, refused = resource_types(), set()
    for path, name in zip(paths, names):
        objects = 0
        try:
            for rec in read_records(path):
                if rec.resource is None:
                    continue
                objects += 1
                rt = rec.resource.get("resourceType")
                if isinstance(rt, str) and rt in known and rt != "Bundle" and not all(
                        R.allowed(actor.roles, rt, op) and scopes_allow(actor.scopes, rt, op) for op in "cu"):
                    refused.add(rt)
        except (OSError, EOFError, zlib.error, TypeError, ValueError) as exc:
            how = " as gzip" if path.name.endswith(".gz") else ""
            raise Invalid(f"file {name!r} cannot be read{how}: {exc}") from None
        if not objects:
            raise Invalid(f"file {name!r} holds no FHIR JSON: send NDJSON (one resource a line) "
                          "or a Bundle, plain or gzip-compressed")
    if refused:
        raise Forbidden(f"your role may not write {', '.join(sorted(refused))} records; "
                        "nothing was uploaded")


def _start(services: Services, files: list[tuple[str, bytes]], *, actor: Actor, data_dir: Path,
           check=None) -> str:  # noqa: ANN001
    if not files:
        raise Invalid("no files: send NDJSON or Bundle files (see docs/ingest.md)")
    names = []
    for n, (name, _) in enumerate(files):
        base = Path(name or "").name
        if not base.endswith(SUFFIXES):
            raise Invalid(f"file {name!r}: the name must end in one of {', '.join(SUFFIXES)}")
        names.append(f"{n:04d}-{base}")
    # written to a folder of their own first, renamed to the upload's once it is recorded
    incoming = data_dir / "uploads" / f".incoming-{uuid.uuid4()}"
    incoming.mkdir(parents=True)
    try:
        for nm, (_, content) in zip(names, files):
            (incoming / nm).write_bytes(content)
        if check is not None:
            check(actor, [incoming / nm for nm in names], [Path(name or "").name for name, _ in files])
        staged = [Path(nm) for nm in names]
        upload_id = register_upload(services, staged, institution=actor.institution_id, actor=actor)  # type: ignore[arg-type]
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    folder = data_dir / "uploads" / upload_id
    incoming.rename(folder)
    paths = [folder / nm for nm in names]

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
        row = conn.execute(select(u.status, u.counts, u.institution_id, u.started).where(u.id == upload_id)).first()
    if row is None or row.institution_id != ctx.actor.institution_id:
        raise NotFound(f"upload {upload_id} is not known")
    return upload_state(row.status, row.counts, row.started)


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
        status, report = upload_state(r.status, r.counts, r.started)
        totals = (report or {}).get("totals") or {}
        out.append({"id": r.id, "created": instant(r.started), "status": status,
                    "accepted": totals.get("accepted", 0), "updated": totals.get("updated", 0),
                    "unchanged": totals.get("unchanged", 0), "quarantined": totals.get("quarantined", 0)})
    return out
