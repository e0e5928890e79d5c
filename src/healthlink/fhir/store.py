"""The versioned resource store: create, read, vread, update, delete, history.

Functions take an open connection so that a caller can put several operations (a
transaction Bundle, a write and its audit record) in one database transaction.  No
access logic here: only healthlink.access calls these for patient data.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import orjson
from sqlalchemy import Connection, and_, bindparam, insert, select
from sqlalchemy import update as sql_update  # store.update below is the FHIR interaction
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.postgresql import psycopg as pg_dialect
from sqlalchemy.exc import DBAPIError, IntegrityError

from healthlink.db import bulk_insert, driver_fetchone, in_many, reserve_ids
from healthlink.db import tables as t
from healthlink.errors import Conflict, Gone, NotFound, PreconditionFailed
from healthlink.fhir import fhirjson
from healthlink.fhir.dates import instant
from healthlink.fhir.indexing import compartment_patient, index_rows

SOURCE_INSTITUTION_EXT = "https://healthlink.example.org/fhir/StructureDefinition/source-institution"


@dataclass(frozen=True)
class Stored:
    """One stored version of a resource."""

    rid: int
    res_type: str
    res_id: str
    version_id: int
    last_updated: int  # microseconds since the epoch
    deleted: bool
    institution_id: str | None
    patient_id: str | None
    content: str | None  # JSON text as served; None for a delete
    method: str = "PUT"

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    @property
    def last_modified(self) -> str:
        return instant(self.last_updated)

    def json(self) -> dict:
        return fhirjson.parse(self.content) if self.content else {}  # type: ignore[return-value]

    def plain(self) -> dict:
        """The resource for the platform's own reading (a check judging it), not for serving:
        decimals as ordinary floats, without their text; about three times faster than
        :meth:`json`."""
        return orjson.loads(self.content) if self.content else {}


_CURRENT_COLS = (t.resource.c.rid, t.resource.c.res_type, t.resource.c.res_id, t.resource.c.version_id,
                 t.resource.c.last_updated, t.resource.c.deleted, t.resource.c.institution_id,
                 t.resource.c.patient_id, t.resource.c.content)


def row_to_stored(row) -> Stored:  # noqa: ANN001
    return Stored(row.rid, row.res_type, row.res_id, row.version_id, row.last_updated,
                  bool(row.deleted), row.institution_id, row.patient_id, row.content)


def now_us() -> int:
    return time.time_ns() // 1000


def new_id() -> str:
    return str(uuid.uuid4())


# The hottest statement of the platform (every read), compiled once per dialect and run
# on the driver's cursor: SQLAlchemy's execution path costs several times the lookup
# itself (ADR 0007).  SQLite has no FOR UPDATE: its writers are serialised anyway.
_READ_CURRENT = select(*_CURRENT_COLS).where(t.resource.c.res_type == bindparam("res_type"),
                                             t.resource.c.res_id == bindparam("res_id"))
_READ_CURRENT_SQL = {
    ("sqlite", False): str(_READ_CURRENT.compile(dialect=sqlite_dialect.dialect())),
    ("postgresql", False): str(_READ_CURRENT.compile(dialect=pg_dialect.dialect())),
    ("postgresql", True): str(_READ_CURRENT.with_for_update().compile(dialect=pg_dialect.dialect())),
}


def read_current(conn: Connection, res_type: str, res_id: str, *, for_update: bool = False) -> Stored | None:
    dialect = conn.dialect.name
    sql = _READ_CURRENT_SQL[(dialect, for_update and dialect == "postgresql")]
    params = (res_type, res_id) if dialect == "sqlite" else {"res_type": res_type, "res_id": res_id}
    r = driver_fetchone(conn, sql, params)
    return Stored(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7], r[8]) if r else None


def read_current_many(conn: Connection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Stored]:
    """:func:`read_current` of many ``(type, id)`` in one statement (a bulk upload's batch)."""
    by_type: dict[str, list[str]] = {}
    for rt, rid in keys:
        by_type.setdefault(rt, []).append(rid)
    out: dict[tuple[str, str], Stored] = {}
    for rt, ids in by_type.items():  # one type per statement: an index range, not a row-value scan
        rows = conn.execute(select(*_CURRENT_COLS).where(t.resource.c.res_type == rt,
                                                         in_many(conn, t.resource.c.res_id, ids))).all()
        out.update(((r.res_type, r.res_id), row_to_stored(r)) for r in rows)
    return out


def read(conn: Connection, res_type: str, res_id: str) -> Stored:
    """The current version; NotFound if never existed, Gone if deleted."""
    s = read_current(conn, res_type, res_id)
    if s is None:
        raise NotFound(f"{res_type}/{res_id} is not known")
    if s.deleted:
        raise Gone(f"{res_type}/{res_id} was deleted", headers={"ETag": s.etag})
    return s


def vread(conn: Connection, res_type: str, res_id: str, version_id: int) -> Stored:
    cur = read_current(conn, res_type, res_id)
    if cur is None:
        raise NotFound(f"{res_type}/{res_id} is not known")
    v = t.resource_version.c
    row = conn.execute(
        select(v.rid, v.version_id, v.last_updated, v.deleted, v.institution_id, v.content, v.method)
        .where(v.rid == cur.rid, v.version_id == version_id)
    ).first()
    if row is None:
        raise NotFound(f"{res_type}/{res_id} has no version {version_id}")
    if row.deleted:
        raise Gone(f"version {version_id} of {res_type}/{res_id} is a deletion")
    return Stored(cur.rid, res_type, res_id, row.version_id, row.last_updated, False,
                  row.institution_id, cur.patient_id, row.content, row.method)


def _with_meta(resource: dict, *, res_id: str, version_id: int, last_updated: int,
               institution_id: str | None) -> dict:
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = instant(last_updated)
    exts = [e for e in meta.get("extension") or [] if e.get("url") != SOURCE_INSTITUTION_EXT]
    if institution_id:
        exts.append({"url": SOURCE_INSTITUTION_EXT,
                     "valueReference": {"reference": f"Organization/{institution_id}"}})
    if exts:
        meta["extension"] = exts
    out = {"resourceType": resource["resourceType"], "id": res_id, "meta": meta}
    out.update((k, v) for k, v in resource.items() if k not in ("resourceType", "id", "meta"))
    return out


def _write_indexes(conn: Connection, rid: int, res_type: str, rows: dict[str, list[dict]]) -> None:
    for kind, lst in rows.items():
        if lst:
            for r in lst:
                r["rid"] = rid
                r["res_type"] = res_type
            conn.execute(insert(t.INDEX_TABLES[kind]), lst)


def _clear_indexes(conn: Connection, rid: int) -> None:
    _clear_indexes_many(conn, [rid])


def create(conn: Connection, resource: dict, *, institution_id: str | None,
           res_id: str | None = None, base_url: str | None = None) -> Stored:
    """Store a new resource (server-assigned id unless ``res_id`` is given)."""
    return create_many(conn, [(resource, res_id)], institution_id=institution_id,
                       base_url=base_url)[0]


def create_many(conn: Connection, items: list[tuple[dict, str | None]], *,
                institution_id: str | None, base_url: str | None = None) -> list[Stored]:
    """Store new resources, one statement per table for all of them.

    A transaction Bundle of a patient record creates hundreds of resources; one round trip
    per row and per index table made loading real records (Synthea) slow on PostgreSQL.
    The rows written are those of calling :func:`create` for each item in turn.  If an id
    is taken, nothing is written and :class:`Conflict` names the first such id.
    """
    new: list[dict] = []
    indexes: list[dict[str, list[dict]]] = []
    for resource, res_id in items:
        res_id = res_id or new_id()
        ts = now_us()
        body = _with_meta(resource, res_id=res_id, version_id=1, last_updated=ts,
                          institution_id=institution_id)
        rows = index_rows(body, base_url=base_url)
        new.append({"res_type": resource["resourceType"], "res_id": res_id, "version_id": 1,
                    "last_updated": ts, "deleted": False, "institution_id": institution_id,
                    "patient_id": compartment_patient(body, rows),
                    "content": fhirjson.dumps(body).decode()})
        indexes.append(rows)
    if not new:
        return []
    # COPY on PostgreSQL, the driver's executemany on SQLite: the ORM-level insert cost more
    # than validating and indexing the resources (bulk ingest, ADR 0009)
    rids = reserve_ids(conn, t.resource, "rid", len(new))
    try:
        with conn.begin_nested():
            bulk_insert(conn, t.resource, _RESOURCE_COLS, [
                (rid, r["res_type"], r["res_id"], 1, r["last_updated"], False, institution_id,
                 r["patient_id"], r["content"]) for rid, r in zip(rids, new)])
    except IntegrityError as exc:
        taken = _taken(conn, new)
        raise Conflict(f"{taken} already exists") from exc
    bulk_insert(conn, t.resource_version, _VERSION_COLS, [
        (rid, 1, r["res_type"], r["res_id"], r["last_updated"], "POST", False, institution_id, r["content"])
        for rid, r in zip(rids, new)])
    _bulk_indexes(conn, [(rid, r["res_type"], rows) for rid, r, rows in zip(rids, new, indexes)])
    return [Stored(rid, r["res_type"], r["res_id"], 1, r["last_updated"], False, institution_id,
                   r["patient_id"], r["content"], "POST") for rid, r in zip(rids, new)]


_RESOURCE_COLS = ("rid", "res_type", "res_id", "version_id", "last_updated", "deleted", "institution_id",
                  "patient_id", "content")
_VERSION_COLS = ("rid", "version_id", "res_type", "res_id", "last_updated", "method", "deleted",
                 "institution_id", "content")
_INDEX_VALUE_COLS = {kind: tuple(c.name for c in table.columns if c.name not in ("rid", "res_type"))
                     for kind, table in t.INDEX_TABLES.items()}


def _bulk_indexes(conn: Connection, items: list[tuple[int, str, dict[str, list[dict]]]]) -> None:
    """Write the index rows of many resources, ``(rid, type, rows by kind)``, one statement per table."""
    by_kind: dict[str, list[tuple]] = {}
    for rid, rt, rows in items:
        for kind, lst in rows.items():
            cols = _INDEX_VALUE_COLS[kind]
            by_kind.setdefault(kind, []).extend((rid, rt, *[row.get(c) for c in cols]) for row in lst)
    for kind, tuples in by_kind.items():
        bulk_insert(conn, t.INDEX_TABLES[kind], ("rid", "res_type", *_INDEX_VALUE_COLS[kind]), tuples)


@contextmanager
def _driver_errors(conn: Connection) -> Iterator[None]:
    """Driver errors of statements run on the driver's cursor, re-raised as SQLAlchemy's."""
    try:
        yield
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance("", None, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect) from exc


def _clear_indexes_many(conn: Connection, rids: list[int]) -> None:
    driver = conn.connection.driver_connection  # type: ignore[union-attr]
    for table in t.INDEX_TABLES.values():
        if conn.dialect.name == "postgresql":
            with _driver_errors(conn), driver.cursor() as cur:  # type: ignore[union-attr]
                cur.execute(f"DELETE FROM {table.name} WHERE rid = ANY(%s::bigint[])", (rids,))
        else:
            for i in range(0, len(rids), 500):
                chunk = rids[i:i + 500]
                driver.execute(f"DELETE FROM {table.name} WHERE rid IN ({', '.join('?' * len(chunk))})",  # type: ignore[union-attr]
                               chunk)


def update_many(conn: Connection, items: list[tuple[Stored, dict]], *, base_url: str | None = None) -> list[Stored]:
    """:func:`update` of many existing resources, one statement per table for all of them
    (the Persons an upload's Patients joined).  Each update is guarded by the version it
    read, as in :func:`update`: if any resource changed meanwhile, :class:`PreconditionFailed`
    names one and the caller's transaction is to be rolled back."""
    if not items:
        return []
    out: list[Stored] = []
    index_items: list[tuple[int, str, dict[str, list[dict]]]] = []
    for existing, resource in items:
        vid = existing.version_id + 1
        ts = max(now_us(), existing.last_updated + 1)
        body = _with_meta(resource, res_id=existing.res_id, version_id=vid, last_updated=ts,
                          institution_id=existing.institution_id)
        rows = index_rows(body, base_url=base_url)
        out.append(Stored(existing.rid, existing.res_type, existing.res_id, vid, ts, False,
                          existing.institution_id, compartment_patient(body, rows),
                          fhirjson.dumps(body).decode(), "PUT"))
        index_items.append((existing.rid, existing.res_type, rows))
    old = {e.rid: e for e, _ in items}
    driver = conn.connection.driver_connection  # type: ignore[union-attr]
    if conn.dialect.name == "postgresql":
        with _driver_errors(conn), driver.cursor() as cur:  # type: ignore[union-attr]
            cur.execute(
                "UPDATE resource AS r SET version_id = v.vid, last_updated = v.ts, deleted = false, "
                "patient_id = v.pid, content = v.content "
                "FROM unnest(%s::bigint[], %s::integer[], %s::integer[], %s::bigint[], %s::varchar[], %s::text[]) "
                "AS v(rid, old, vid, ts, pid, content) WHERE r.rid = v.rid AND r.version_id = v.old "
                "RETURNING r.rid",
                ([s.rid for s in out], [old[s.rid].version_id for s in out], [s.version_id for s in out],
                 [s.last_updated for s in out], [s.patient_id for s in out], [s.content for s in out]))
            done = {r[0] for r in cur.fetchall()}
    else:
        done = set()
        for s in out:
            cur = driver.execute(  # type: ignore[union-attr]
                "UPDATE resource SET version_id = ?, last_updated = ?, deleted = 0, patient_id = ?, content = ? "
                "WHERE rid = ? AND version_id = ?",
                (s.version_id, s.last_updated, s.patient_id, s.content, s.rid, old[s.rid].version_id))
            if cur.rowcount == 1:
                done.add(s.rid)
    missed = [s for s in out if s.rid not in done]
    if missed:  # another writer got there first
        raise PreconditionFailed(f"{missed[0].res_type}/{missed[0].res_id} changed while updating")
    bulk_insert(conn, t.resource_version, _VERSION_COLS, [
        (s.rid, s.version_id, s.res_type, s.res_id, s.last_updated, "PUT", False, s.institution_id, s.content)
        for s in out])
    _clear_indexes_many(conn, [s.rid for s in out])
    _bulk_indexes(conn, index_items)
    return out


def _taken(conn: Connection, new: list[dict]) -> str:
    """The first ``Type/id`` of ``new`` that is already stored (or repeated within ``new``)."""
    seen: set[tuple[str, str]] = set()
    for r in new:
        key = (r["res_type"], r["res_id"])
        if key in seen or read_current(conn, *key) is not None:
            return "/".join(key)
        seen.add(key)
    return "/".join((new[0]["res_type"], new[0]["res_id"]))


def update(conn: Connection, existing: Stored, resource: dict, *, if_match: int | None = None,
           base_url: str | None = None) -> Stored:
    """Write a new version of an existing (possibly deleted) resource."""
    if if_match is not None and if_match != existing.version_id:
        raise PreconditionFailed(
            f"{existing.res_type}/{existing.res_id} is at version {existing.version_id}, "
            f"not {if_match}", headers={"ETag": existing.etag})
    vid = existing.version_id + 1
    ts = max(now_us(), existing.last_updated + 1)
    body = _with_meta(resource, res_id=existing.res_id, version_id=vid, last_updated=ts,
                      institution_id=existing.institution_id)
    rows = index_rows(body, base_url=base_url)
    patient_id = compartment_patient(body, rows)
    content = fhirjson.dumps(body).decode()
    res = conn.execute(
        sql_update(t.resource)
        .where(and_(t.resource.c.rid == existing.rid, t.resource.c.version_id == existing.version_id))
        .values(version_id=vid, last_updated=ts, deleted=False, patient_id=patient_id, content=content)
    )
    if res.rowcount != 1:  # another writer got there first
        raise PreconditionFailed(f"{existing.res_type}/{existing.res_id} changed while updating")
    conn.execute(insert(t.resource_version).values(
        rid=existing.rid, version_id=vid, res_type=existing.res_type, res_id=existing.res_id,
        last_updated=ts, method="PUT", deleted=False, institution_id=existing.institution_id,
        content=content))
    _clear_indexes(conn, existing.rid)
    _write_indexes(conn, existing.rid, existing.res_type, rows)
    return Stored(existing.rid, existing.res_type, existing.res_id, vid, ts, False,
                  existing.institution_id, patient_id, content, "PUT")


def delete_resource(conn: Connection, existing: Stored, *, if_match: int | None = None) -> Stored:
    """Soft delete: a new version marked deleted; index rows removed; history kept."""
    if if_match is not None and if_match != existing.version_id:
        raise PreconditionFailed(f"{existing.res_type}/{existing.res_id} is at version "
                                 f"{existing.version_id}, not {if_match}")
    if existing.deleted:
        return existing
    vid = existing.version_id + 1
    ts = max(now_us(), existing.last_updated + 1)
    res = conn.execute(
        sql_update(t.resource)
        .where(and_(t.resource.c.rid == existing.rid, t.resource.c.version_id == existing.version_id))
        .values(version_id=vid, last_updated=ts, deleted=True, content=None)
    )
    if res.rowcount != 1:
        raise PreconditionFailed(f"{existing.res_type}/{existing.res_id} changed while deleting")
    conn.execute(insert(t.resource_version).values(
        rid=existing.rid, version_id=vid, res_type=existing.res_type, res_id=existing.res_id,
        last_updated=ts, method="DELETE", deleted=True, institution_id=existing.institution_id,
        content=None))
    _clear_indexes(conn, existing.rid)
    return Stored(existing.rid, existing.res_type, existing.res_id, vid, ts, True,
                  existing.institution_id, existing.patient_id, None, "DELETE")
