"""AuditEvent records (FHIR R4 AuditEvent with the IHE BALP fields) and their writer.

* A write's audit record goes into the same database transaction as the write
  (:meth:`AuditWriter.write_in`): both commit or neither does.
* Reads, searches and failures are group-committed (:meth:`AuditWriter.record`): many
  requests' records go into one commit made by one writer thread, and each request waits
  until its record is durable before its data is sent (ADR 0004).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field

import orjson
from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError

from healthlink.db import Database, bulk_insert
from healthlink.db import tables as t
from healthlink.errors import Unavailable
from healthlink.fhir.dates import instant

log = logging.getLogger("healthlink.audit")

# DICOM / FHIR code systems used by IHE BALP
_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_INTERACTION = "http://hl7.org/fhir/restful-interaction"
_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"

ACTIONS = {  # subtype -> AuditEvent.action
    "read": "R", "vread": "R", "history-instance": "R", "history-type": "R", "search-type": "E",
    "search-system": "E", "everything": "E", "create": "C", "update": "U", "delete": "D",
    "transaction": "E", "batch": "E", "login": "E", "logout": "E", "token": "E",
    "user-add": "C", "export": "E", "operation": "E",
}
OUTCOMES = {"success": "0", "minor": "4", "serious": "8", "major": "12"}


def new_event_id() -> str:
    """A UUID laid out as version 7 (RFC 9562): 48 bits of milliseconds, then random bits.

    Ids that grow with time put each insert into the unique index on ``event_id`` at its
    end, where a random UUID would dirty a different index page for every record."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 \
        | 0b10 << 62 | (rand & 0x3FFF_FFFF_FFFF_FFFF)
    return str(uuid.UUID(int=value))


@dataclass(frozen=True)
class Agent:
    """Who acted (IHE BALP: the user, their institution, network address, roles)."""

    who: str | None  # Practitioner/x or Device/<client id>
    username: str | None
    institution_id: str | None
    department_id: str | None = None
    roles: tuple[str, ...] = ()
    address: str | None = None
    request_id: str | None = None
    purpose_of_use: str = "TREAT"
    user_agent: str | None = None


@dataclass
class AuditRecord:
    subtype: str  # restful interaction or platform event (login, ...)
    agent: Agent
    outcome: str = "success"  # success, minor (4: client error), serious (8), major (12)
    outcome_desc: str | None = None
    patients: set[str] = field(default_factory=set)  # patient ids
    entities: list[str] = field(default_factory=list)  # Type/id of resources touched
    query: str | None = None  # the search query, for searches
    event_id: str = field(default_factory=lambda: new_event_id())
    recorded: int = field(default_factory=lambda: time.time_ns() // 1000)
    #: rows of other tables committed in the same transaction as this record, ``[(table, [row, ...])]``
    #: (every row of a table with the same keys): a capability's events of the access this record
    #: audits (the order-time checks, ADR 0016) ride on the group commit instead of a transaction of
    #: their own.  They share the record's fate: if they cannot be written, neither is the batch
    #: (every requester in it gets 503, as for a record that cannot be written).
    with_rows: list[tuple[Table, list[dict]]] = field(default_factory=list, compare=False, repr=False)

    def to_fhir(self) -> dict:
        a = self.agent
        ev: dict = {
            "resourceType": "AuditEvent",
            "id": self.event_id,
            "type": ({"system": _EVENT_TYPE, "code": "rest", "display": "Restful Operation"}
                     if self.subtype in _INTERACTION_CODES else
                     {"system": _DCM, "code": "110114", "display": "User Authentication"}
                     if self.subtype in ("login", "logout", "token") else
                     {"system": _DCM, "code": "110100", "display": "Application Activity"}),
            "subtype": [{"system": _INTERACTION if self.subtype in _INTERACTION_CODES else
                         "https://healthlink.example.org/fhir/CodeSystem/audit-subtype",
                         "code": self.subtype}],
            "action": ACTIONS.get(self.subtype, "E"),
            "recorded": instant(self.recorded),
            "outcome": OUTCOMES[self.outcome],
            "purposeOfEvent": [{"coding": [{"system": _ACT_REASON, "code": a.purpose_of_use}]}],
            "agent": [{
                "type": {"coding": [{"system": _PARTICIPATION, "code": "IRCP",
                                     "display": "information recipient"}]},
                "who": ({"reference": a.who} if a.who else {}) | (
                    {"display": a.username} if a.username else {"display": "anonymous"}),
                "requestor": True,
                **({"location": {"reference": f"Organization/{a.institution_id}"}}
                   if a.institution_id else {}),
                **({"role": [{"coding": [{"system": "https://healthlink.example.org/fhir/CodeSystem/role",
                                          "code": r}]} for r in a.roles]} if a.roles else {}),
                **({"network": {"address": a.address, "type": "2"}} if a.address else {}),
            }],
            "source": {"observer": {"display": "HealthLink"},
                       **({"site": f"Organization/{a.institution_id}"} if a.institution_id else {}),
                       "type": [{"system": _SOURCE_TYPE, "code": "4", "display": "Application Server"}]},
        }
        if self.outcome_desc:
            ev["outcomeDesc"] = self.outcome_desc[:1000]
        entities = []
        for pid in sorted(self.patients):
            entities.append({"what": {"reference": f"Patient/{pid}"},
                             "type": {"system": _ENTITY_TYPE, "code": "1", "display": "Person"},
                             "role": {"system": _OBJECT_ROLE, "code": "1", "display": "Patient"}})
        for ref in self.entities:
            if ref.startswith("Patient/") and ref[8:] in self.patients:
                continue
            entities.append({"what": {"reference": ref},
                             "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"}})
        if self.query:
            entities.append({"type": {"system": _ENTITY_TYPE, "code": "2"},
                             "role": {"system": _OBJECT_ROLE, "code": "24", "display": "Query"},
                             "query": _b64(self.query)})
        if entities:
            ev["entity"] = entities
        if a.request_id:
            ev["extension"] = [{"url": "https://healthlink.example.org/fhir/StructureDefinition/request-id",
                                "valueString": a.request_id}]
        return ev

    def rows(self) -> tuple[dict, list[dict]]:
        ev = self.to_fhir()
        row = {
            "event_id": self.event_id, "recorded": self.recorded, "action": ev["action"],
            "subtype": self.subtype, "outcome": ev["outcome"], "agent_ref": self.agent.who,
            "username": self.agent.username, "institution_id": self.agent.institution_id,
            "request_id": self.agent.request_id, "content": orjson.dumps(ev).decode(),
        }
        ents = [{"kind": "P", "ref": f"Patient/{p}"} for p in sorted(self.patients)]
        ents += [{"kind": "E", "ref": e[:140]} for e in dict.fromkeys(self.entities)]
        return row, ents


_INTERACTION_CODES = {"read", "vread", "update", "patch", "delete", "history-instance",
                      "history-type", "history-system", "create", "search-type", "search-system",
                      "capabilities", "transaction", "batch", "operation", "everything"}


def _b64(s: str) -> str:
    import base64

    return base64.b64encode(s.encode()).decode()


_EVENT_COLS = tuple(t.audit_event.c.keys())  # AuditRecord.rows() gives each of them
_ENTITY_COLS = tuple(t.audit_entity.c.keys())
# SQLite: every write transaction here began with BEGIN IMMEDIATE (db/engine.py), so this one
# holds the database's only write lock and the numbers are its own (what SQLite itself does for
# an INTEGER PRIMARY KEY: max(rowid) + 1).  PostgreSQL: :func:`_pg_batch_sql`.
_SQLITE_NEXT_SEQ = "SELECT max(seq) FROM audit_event"


def _sqlite_insert(table: str, cols: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"


_SQLITE_EVENT = _sqlite_insert(t.audit_event.name, _EVENT_COLS)
_SQLITE_ENTITY = _sqlite_insert(t.audit_entity.name, _ENTITY_COLS)


def insert_records(conn: Connection, records: list[AuditRecord]) -> None:
    """Insert records, their entity rows and their :attr:`AuditRecord.with_rows`.

    This is the platform's hottest write (one row per read, group-committed), so it runs on
    the driver's cursor.  On PostgreSQL the whole batch is **one statement** (ADR 0018): each
    statement costs about as much client CPU as another (~90 µs here, most of it the round
    trip), whatever it carries, so the records, their entities and the rows riding with them
    go as one JSON parameter per table into data-modifying CTEs; under :meth:`Database.write_one`
    (autocommit) it is also its own transaction, without BEGIN and COMMIT.  On SQLite (no round
    trips) the sequence numbers are taken first and the rows go in with ``executemany``.
    Driver errors are re-raised as SQLAlchemy's, as if the statements had gone through it.
    """
    if not records:
        return
    dialect = conn.dialect.name
    if dialect == "postgresql":
        _insert_pg(conn, records)
        return
    if dialect != "sqlite":
        raise NotImplementedError(f"audit records on {dialect}")
    seq_sql, event_sql, entity_sql = _SQLITE_NEXT_SEQ, _SQLITE_EVENT, _SQLITE_ENTITY
    pairs = [r.rows() for r in records]
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    dbapi_error = conn.dialect.loaded_dbapi.Error
    sql = seq_sql
    try:
        top = cur.execute(seq_sql).fetchone()[0] or 0
        seqs = list(range(top + 1, top + 1 + len(pairs)))
        events = []
        ents = []
        for seq, (row, es) in zip(seqs, pairs):
            row["seq"] = seq
            events.append(row)
            for e in es:
                e["seq"] = seq
                ents.append(e)
        sql = event_sql
        cur.executemany(event_sql, events)
        if ents:
            sql = entity_sql
            cur.executemany(entity_sql, ents)
    except dbapi_error as exc:
        raise DBAPIError.instance(sql, None, exc, dbapi_error, dialect=conn.dialect) from exc
    finally:
        cur.close()
    _insert_with_rows(conn, records)


def _insert_with_rows(conn: Connection, records: list[AuditRecord]) -> None:
    """The records' :attr:`AuditRecord.with_rows`, one insert per table for the whole batch."""
    for table, rows in _with_rows(records).items():
        cols = tuple(rows[0])
        bulk_insert(conn, table, cols, [tuple(row[c] for c in cols) for row in rows])


def _with_rows(records: list[AuditRecord]) -> dict[Table, list[dict]]:
    tables: dict[Table, list[dict]] = {}
    for r in records:
        for table, rows in r.with_rows:
            if rows:
                tables.setdefault(table, []).extend(rows)
    return tables


def _recordset(table: Table, cols: tuple[str, ...], param: str, *, more: str = "") -> str:
    """``jsonb_to_recordset`` of the JSON array parameter ``param`` as rows of ``table``'s
    ``cols`` (the columns' own types), and ``more`` column definitions."""
    types = ", ".join(f"{c} {table.c[c].type.compile(dialect=_PG)}" for c in cols)
    return f"jsonb_to_recordset(%({param})s::jsonb) AS x({types}{', ' + more if more else ''})"


_PG = postgresql.dialect()
_EVENT_DATA = tuple(c for c in _EVENT_COLS if c != "seq")


@functools.lru_cache(maxsize=64)
def _pg_batch_sql(extra: tuple[tuple[Table, tuple[str, ...]], ...]) -> str:
    """The one statement of a batch on PostgreSQL: the events, sorted into the batch's order
    (``n``), take their sequence numbers from the column's default as the insert receives them,
    so in that order; the entities join them by event id; then one insert per table of the rows
    riding with the records.  It answers the numbers taken."""
    ev_cols = ", ".join(_EVENT_DATA)
    ctes = [f"ev AS (INSERT INTO {t.audit_event.name} ({ev_cols}) "
            f"SELECT {ev_cols} FROM {_recordset(t.audit_event, _EVENT_DATA, 'ev', more='n integer')} "
            f"ORDER BY x.n RETURNING seq, event_id)",
            f"en AS (INSERT INTO {t.audit_entity.name} (seq, kind, ref) SELECT ev.seq, x.kind, x.ref "
            f"FROM jsonb_to_recordset(%(en)s::jsonb) AS x(event_id varchar, kind varchar, ref varchar) "
            f"JOIN ev ON ev.event_id = x.event_id)"]
    for k, (table, cols) in enumerate(extra):
        names = ", ".join(cols)
        ctes.append(f"w{k} AS (INSERT INTO {table.name} ({names}) "
                    f"SELECT {names} FROM {_recordset(table, cols, f'w{k}')})")
    return "WITH " + ",\n".join(ctes) + "\nSELECT seq FROM ev"


def _insert_pg(conn: Connection, records: list[AuditRecord]) -> None:
    events, ents = [], []
    for n, r in enumerate(records):
        row, es = r.rows()
        row["n"] = n
        events.append(row)
        eid = row["event_id"]
        ents += [{"event_id": eid, **e} for e in es]
    params: dict[str, str] = {"ev": orjson.dumps(events).decode(), "en": orjson.dumps(ents).decode()}
    extra = []
    for k, (table, rows) in enumerate(_with_rows(records).items()):
        cols = tuple(rows[0])
        extra.append((table, cols))
        # a column's name may be SQLAlchemy's quoted_name, a str that orjson takes only so
        params[f"w{k}"] = orjson.dumps(rows, option=orjson.OPT_NON_STR_KEYS).decode()
    sql = _pg_batch_sql(tuple(extra))
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        with conn.connection.driver_connection.cursor() as cur:  # type: ignore[union-attr]
            cur.execute(sql, params)
            cur.fetchall()
    except dbapi_error as exc:
        raise DBAPIError.instance(sql, None, exc, dbapi_error, dialect=conn.dialect) from exc


# A record, the future its requester waits on, and that requester's event loop (None for
# a thread waiting on a concurrent.futures.Future).
_Waiting = tuple[AuditRecord, "Future | asyncio.Future", "asyncio.AbstractEventLoop | None"]


def _unavailable(exc: BaseException) -> Unavailable:
    log.error("audit write failed: %s", exc or type(exc).__name__)
    return Unavailable("the audit record could not be written; nothing was returned",
                       headers={"Retry-After": "2"})


def _settle(futs: list[asyncio.Future], error: Exception | None) -> None:
    """Runs in the waiters' event loop."""
    for fut in futs:
        if not fut.done():
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError("the audit writer did not commit in time"))


class _Slot:
    """A thread's place in the leader's group commit (:meth:`AuditWriter.record`): ``done`` is
    released when its record is written (``error`` then says how) or when the thread is to lead
    the next batch (``lead``)."""

    __slots__ = ("done", "error", "lead")

    def __init__(self) -> None:
        self.done = threading.Lock()
        self.done.acquire()
        self.error: Exception | None = None
        self.lead = False


class AuditWriter:
    """Group commit of audit records: one commit for many requests' records.

    A coroutine's record (:meth:`record_async`) goes to the writer thread, which settles all the
    waiters of one event loop with one call into it.  A thread's record (:meth:`record`) is
    written by the waiting threads themselves (ADR 0021): the first one leads, writing its own
    record at once; the records that arrive while it writes wait and go together in the next
    batch, which the first of them leads.  A thread alone writes its record without handing it
    to another thread and waiting to be woken, which cost ~5% of an order-time check's CPU."""

    def __init__(self, db: Database, *, batch_max: int = 512, wait_ms: float = 0.5) -> None:
        self.db = db
        self.batch_max = batch_max
        self.wait = wait_ms / 1000.0
        self._q: queue.Queue[_Waiting | None] = queue.Queue()  # None stops the writer
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._group = threading.Lock()  # guards _pending and _leading
        self._pending: list[tuple[AuditRecord, _Slot]] = []
        self._leading = False
        self.fail_next: Exception | None = None  # fault injection for tests of rollback
        #: batches committed (each one commit, one statement on PostgreSQL) and records in them
        self.batches = 0
        self.batched_records = 0

    def write_in(self, conn: Connection, record: AuditRecord) -> None:
        """Write the record inside the caller's transaction (for writes).

        Raises Unavailable (503) when the record cannot be written: the caller's
        transaction then rolls back, so no change is ever made without its record."""
        try:
            if self.fail_next is not None:
                exc, self.fail_next = self.fail_next, None
                raise exc
            insert_records(conn, [record])
        except Exception as exc:  # noqa: BLE001 - any failure here must undo the write
            log.error("audit write failed: %s", exc or type(exc).__name__)
            raise Unavailable("the audit record could not be written, so the change was not made",
                              headers={"Retry-After": "2"}) from exc

    def record(self, record: AuditRecord, *, timeout: float = 10.0) -> None:
        """Make the record durable (group commit); raise Unavailable if it cannot be.

        The calling thread writes it, with the records of the threads that wait meanwhile (see the
        class).  A thread inside a SQLite write transaction holds the database's only write lock,
        so its record goes to the writer thread instead, which cannot write it before the
        transaction ends: Unavailable after ``timeout``, as always for such a caller."""
        if self.db.holds_write_lock():
            fut = self.submit(record)
            try:
                fut.result(timeout=timeout)
            except Exception as exc:  # noqa: BLE001
                raise _unavailable(exc) from exc
            return
        slot = _Slot()
        with self._group:
            self._pending.append((record, slot))
            lead = not self._leading
            self._leading = True
        if not lead:
            if not slot.done.acquire(timeout=timeout):
                with self._group:
                    if not slot.lead:  # not to lead: leave the queue (if still in it), answer 503
                        self._pending = [p for p in self._pending if p[1] is not slot]
                        raise _unavailable(TimeoutError("the audit writer did not commit in time"))
                slot.done.acquire()  # made the leader just now: the batch waits for this thread
            if not slot.lead:
                if slot.error is not None:
                    raise _unavailable(slot.error) from slot.error
                return
        self._lead(slot)
        if slot.error is not None:
            raise _unavailable(slot.error) from slot.error

    def _lead(self, slot: _Slot) -> None:
        """Write the waiting records, ``slot``'s among them, in one batch; wake their threads; hand
        the lead to the first of the records that came meanwhile, or give it up."""
        with self._group:
            batch, self._pending = self._pending[:self.batch_max], self._pending[self.batch_max:]
        error: Exception | None = RuntimeError("the audit write was interrupted")
        try:
            error = self._commit([r for r, _ in batch])
        finally:
            for _, s in batch:
                s.error = error
                if s is not slot:
                    s.done.release()
            with self._group:
                if self._pending:
                    nxt = self._pending[0][1]
                    nxt.lead = True
                    nxt.done.release()
                else:
                    self._leading = False

    def _commit(self, records: list[AuditRecord]) -> Exception | None:
        """One batch in one commit (one statement on PostgreSQL, ADR 0018); the error, if any."""
        try:
            if self.fail_next is not None:
                exc, self.fail_next = self.fail_next, None
                raise exc
            with self.db.write_one() as conn:
                insert_records(conn, records)
        except Exception as exc:  # noqa: BLE001
            return exc
        with self._group:  # a leading thread and the writer thread may both count
            self.batches += 1
            self.batched_records += len(records)
        return None

    async def record_async(self, record: AuditRecord, *, timeout: float = 10.0) -> None:
        """:meth:`record` for a coroutine: the event loop waits, no thread is held.

        The writer settles all of a batch's waiters of one event loop with one call into
        that loop, so a batch of n reads costs one wake-up instead of n thread hand-offs.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._ensure_thread()
        self._q.put((record, fut, loop))
        expire = loop.call_later(timeout, _expire, fut)
        try:
            await fut
        except Exception as exc:  # noqa: BLE001
            raise _unavailable(exc) from exc
        finally:
            expire.cancel()

    def submit(self, record: AuditRecord) -> Future:
        fut: Future = Future()
        self._ensure_thread()
        self._q.put((record, fut, None))
        return fut

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            batch = [item]
            deadline = time.monotonic() + self.wait
            while len(batch) < self.batch_max:
                try:
                    nxt = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._q.put(None)
                    break
                batch.append(nxt)
            error = self._commit([r for r, _, _ in batch])
            waiting: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
            for _, fut, loop in batch:
                if loop is not None:
                    waiting.setdefault(loop, []).append(fut)
                elif error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(error)
            for loop, futs in waiting.items():
                try:
                    loop.call_soon_threadsafe(_settle, futs, error)
                except RuntimeError:  # that loop has closed: nobody is waiting any more
                    pass

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._q.put(None)
            self._thread.join(timeout=10)
        self._thread = None
