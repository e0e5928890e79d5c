"""Bulk ingest of an institution's NDJSON and Bundle files (docs/ingest.md).

Pass 1 (:mod:`healthlink.ingest.plan`) reads and checks every record and resolves
references; pass 2 reads the files again and writes the accepted records in batches,
each batch one transaction with its audit record, through the scoped repository of an
ingest actor of the institution.  Every batch is committed on its own, and every decision
is idempotent (deterministic ids, source keys, content comparison, quarantine rows keyed
by the raw record), so rerunning an upload after a crash finishes it without duplicates.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
from sqlalchemy import Connection, insert, update

from healthlink.access import Actor, Repository, RequestContext, Services
from healthlink.access.scopes import parse_scopes
from healthlink.db import bulk_insert
from healthlink.db import tables as t
from healthlink.errors import NotFound
from healthlink.fhir import fhirjson, store
from healthlink.fhir.store import now_us
from healthlink.ingest.plan import Info, Plan, raw_hash, read_plan, records, resolve
from healthlink.ingest.report import Report

Progress = Callable[[str, int, int], None]  # phase ("read" / "write"), done, total


def ingest_actor(institution: str, *, subject: str | None = None) -> Actor:
    """The actor of a command-line upload: the institution's own system, scoped to it."""
    return Actor("client", subject or f"ingest:{institution}", f"Bulk ingest ({institution})",
                 institution, frozenset({"his_client"}), parse_scopes("system/*.cruds"))


def _insert_ignore(conn: Connection, table, rows: list[dict]) -> None:  # noqa: ANN001
    if rows:
        cols = tuple(rows[0])
        bulk_insert(conn, table, cols, [tuple(r[c] for c in cols) for r in rows], ignore_conflicts=True)


def _rewrite(node: object, plan: Plan, info: Info) -> object:
    """Point the record's references at the stored ids, in place (the record was parsed for
    this pass alone); contained resources keep their own references."""
    if not info.refs:
        return node
    refs = {}
    for text, key in info.refs:
        if key in plan.ids:
            refs[text] = f"{key[0]}/{plan.ids[key]}"

    def walk(n: object) -> None:
        if isinstance(n, dict):
            for k, v in n.items():
                if k == "reference":
                    if isinstance(v, str) and v in refs:
                        n[k] = refs[v]
                elif k != "contained" and isinstance(v, (dict, list)):
                    walk(v)
        elif isinstance(n, list):
            for v in n:
                if isinstance(v, (dict, list)):
                    walk(v)
    if refs:
        walk(node)
    return node


def _same(stored: store.Stored, body: dict) -> bool:
    old = stored.json()
    old.pop("meta", None)
    new = fhirjson.parse(fhirjson.dumps({k: v for k, v in body.items() if k != "meta"}))
    return old == new


class _Batch:
    def __init__(self, repo: Repository, plan: Plan, report: Report, upload_id: str) -> None:
        self.repo, self.plan, self.report, self.upload_id = repo, plan, report, upload_id
        self.items: list[tuple[Info, dict]] = []
        self.quarantine: list[dict] = []
        self.targets: set[tuple[str, str]] = set()

    def add(self, info: Info, body: dict) -> None:
        key = (info.res_type, info.target)
        if key in self.targets:  # the same resource twice in one batch: write the first first
            self.flush()
        self.targets.add(key)  # type: ignore[arg-type]
        self.items.append((info, body))

    def flush(self) -> None:
        if not self.items and not self.quarantine:
            return
        inst, rep = self.plan.institution, self.report
        with self.repo.s.db.write() as conn:
            creates: list[tuple[Info, dict]] = []
            written: list[store.Stored] = []
            current = store.read_current_many(conn, [(i.res_type, i.target) for i, _ in self.items])  # type: ignore[misc]
            for info, body in self.items:
                cur = current.get((info.res_type, info.target))  # type: ignore[arg-type]
                if cur is None:
                    creates.append((info, body))
                elif not cur.deleted and _same(cur, body):
                    rep.unchanged[info.res_type] += 1
                else:
                    written.append(self.repo.update_in(conn, info.res_type, info.target, body,  # type: ignore[arg-type]
                                                       if_match=None, link=False).stored)
                    rep.updated[info.res_type] += 1
            if creates:
                made = self.repo.create_many_in(conn, [(b, i.target) for i, b in creates], link=False)
                written.extend(made)
                for info, _ in creates:
                    rep.accepted[info.res_type] += 1
            # new and changed Patients are linked to Persons in one batch when the upload ends
            patients = [{"patient_id": s.res_id, "institution_id": inst, "upload_id": self.upload_id,
                         "queued": now_us()} for s in written if s.res_type == "Patient"]
            _insert_ignore(conn, t.empi_pending, patients)
            rep.pending_empi += len(patients)
            _insert_ignore(conn, t.ingest_source_key, [
                {"institution_id": inst, "res_type": i.res_type, "key": k, "res_id": i.target}
                for i, _ in self.items for k in dict.fromkeys(i.keys)])
            _insert_ignore(conn, t.ingest_quarantine, self.quarantine)
            if written:
                self.repo.audit_in(conn, "create" if len(creates) == len(written) else "update", written,
                                   desc=f"bulk upload {self.upload_id}")
        self.repo.s.db.note_bulk_write(len(written))
        self.items, self.quarantine, self.targets = [], [], set()


# A running upload's row is touched every HEARTBEAT_S by the process running it (its ``counts``
# hold {"heartbeat": µs} until the report replaces them); one not touched for STALE_AFTER_S is
# reported as failed: its process died (SIGKILL, power loss) and nobody will finish it.
# Sending the same files again completes it (docs/ingest.md, docs/faults.md).
HEARTBEAT_S = 30.0
STALE_AFTER_S = 120.0


class _Heartbeat:
    def __init__(self, services: Services, upload_id: str) -> None:
        self._services, self._id = services, upload_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"upload-heartbeat-{upload_id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        u = t.ingest_upload.c
        while not self._stop.wait(HEARTBEAT_S):
            try:
                with self._services.db.write() as conn:
                    conn.execute(update(t.ingest_upload).where(u.id == self._id, u.status == "running")
                                 .values(counts=orjson.dumps({"heartbeat": now_us()}).decode()))
            except Exception:  # noqa: BLE001 - the database is away: the next beat tries again
                pass


def upload_state(status: str, counts: str | None, started: int, *,
                 now: int | None = None) -> tuple[str, dict | None]:
    """(status, report) of an upload row as users see it: a ``running`` upload whose process
    stopped beating is ``failed``; a running upload has no report yet."""
    if status != "running":
        return status, (orjson.loads(counts) if counts else None)
    beat = started
    if counts:
        beat = max(beat, int(orjson.loads(counts).get("heartbeat") or 0))
    if (now if now is not None else now_us()) - beat > STALE_AFTER_S * 1_000_000:
        return "failed", None
    return "running", None


def register_upload(services: Services, paths: list[Path], *, institution: str, actor: Actor) -> str:
    """Record a new upload (status ``running``); its id names it in reports and status URLs."""
    with services.db.read() as conn:
        org = store.read_current(conn, "Organization", institution)
    if org is None or org.deleted:
        raise NotFound(f"Organization/{institution} is not known: uploads belong to a known institution")
    upload_id = str(uuid.uuid4())
    with services.db.write() as conn:
        conn.execute(insert(t.ingest_upload).values(
            id=upload_id, institution_id=institution, actor=actor.subject,
            source="\n".join(p.name for p in paths), started=now_us(), status="running"))
    return upload_id


def ingest_files(services: Services, paths: list[Path], *, institution: str, actor: Actor | None = None,
                 batch_size: int = 500, progress: Progress | None = None,
                 upload_id: str | None = None) -> Report:
    """Ingest ``paths`` for ``institution``; return the upload's report.  ``upload_id``
    names an upload already recorded by :func:`register_upload`."""
    actor = actor or ingest_actor(institution)
    repo = Repository(RequestContext(actor=actor, address="local", purpose_of_use="HOPERAT"), services)
    if upload_id is None:
        upload_id = register_upload(services, paths, institution=institution, actor=actor)
    report = Report(upload_id, institution)
    with _Heartbeat(services, upload_id):
        return _ingest(services, paths, repo=repo, institution=institution, upload_id=upload_id,
                       report=report, batch_size=batch_size, progress=progress)


def _ingest(services: Services, paths: list[Path], *, repo: Repository, institution: str, upload_id: str,
            report: Report, batch_size: int, progress: Progress | None) -> Report:
    try:
        plan = read_plan(paths, institution, progress=(lambda n: progress("read", n, 0)) if progress else None)
        with services.db.read() as conn:
            resolve(plan, conn)
        total = len(plan.infos)
        batch = _Batch(repo, plan, report, upload_id)
        for n, (loc, rec) in enumerate(records(paths), 1):
            info = plan.infos[loc]
            rt = info.res_type or "(unknown)"
            report.read[rt] += 1
            if info.finding is None:
                body = _rewrite(rec.resource, plan, info)
                body["id"] = info.target  # type: ignore[index]
                batch.add(info, body)  # type: ignore[arg-type]
            else:
                f = info.finding
                report.quarantined[rt] += 1
                report.reasons[f.reason] += 1
                batch.quarantine.append({
                    "upload_id": upload_id, "institution_id": institution, "source_file": rec.file,
                    "line": rec.line, "res_type": info.res_type, "source_id": (info.source_id or "")[:128] or None,
                    "reason": f.reason, "element_path": (f.path or "")[:512] or None, "message": f.message,
                    "raw": rec.raw, "raw_hash": info.raw_hash or raw_hash(rec.raw)})
            if len(batch.items) + len(batch.quarantine) >= batch_size:
                batch.flush()
                if progress:
                    progress("write", n, total)
        batch.flush()
        if progress:
            progress("write", total, total)
    except BaseException:
        _finish(services, upload_id, "failed", report)
        raise
    if services.linker is not None:  # this institution's queued Patients, this upload's and any
        # an interrupted earlier run left behind
        report.linked_empi = services.linker.link_pending(institution=institution, ctx=repo.ctx)
    with services.db.write() as conn:  # the upload itself is audited, even when it wrote nothing
        repo.audit_in(conn, "import", [], desc=f"bulk upload {upload_id}: "
                      + ", ".join(f"{k} {v}" for k, v in report.totals().items()))
    _finish(services, upload_id, "done", report)
    return report


def _finish(services: Services, upload_id: str, status: str, report: Report) -> None:
    try:
        with services.db.write() as conn:
            conn.execute(update(t.ingest_upload).where(t.ingest_upload.c.id == upload_id).values(
                finished=now_us(), status=status, counts=orjson.dumps(report.to_json()).decode()))
    except Exception:  # noqa: BLE001 - the original error matters more
        if status == "done":
            raise
