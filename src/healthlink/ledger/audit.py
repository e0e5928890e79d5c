"""AuditEvent records (FHIR R4 AuditEvent with the IHE BALP fields) and their writer.

* A write's audit record goes into the same database transaction as the write
  (:meth:`AuditWriter.write_in`): both commit or neither does.
* Reads, searches and failures are group-committed (:meth:`AuditWriter.record`): many
  requests' records go into one commit made by one writer thread, and each request waits
  until its record is durable before its data is sent (ADR 0004).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field

import orjson
from sqlalchemy import Connection, insert

from healthlink.db import Database
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
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    recorded: int = field(default_factory=lambda: time.time_ns() // 1000)

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


def insert_records(conn: Connection, records: list[AuditRecord]) -> None:
    """Insert records and their entity rows: two statements for the whole batch."""
    if not records:
        return
    pairs = [r.rows() for r in records]
    seqs = conn.execute(
        insert(t.audit_event).returning(t.audit_event.c.seq, sort_by_parameter_order=True),
        [row for row, _ in pairs],
    ).scalars().all()
    ents = [dict(e, seq=seq) for seq, (_, es) in zip(seqs, pairs) for e in es]
    if ents:
        conn.execute(insert(t.audit_entity), ents)


class AuditWriter:
    """Group-commit writer: one thread, one commit for many requests' records."""

    def __init__(self, db: Database, *, batch_max: int = 512, wait_ms: float = 2.0) -> None:
        self.db = db
        self.batch_max = batch_max
        self.wait = wait_ms / 1000.0
        self._q: queue.Queue[tuple[AuditRecord, Future] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.fail_next: Exception | None = None  # fault injection for tests of rollback

    def write_in(self, conn: Connection, record: AuditRecord) -> None:
        """Write the record inside the caller's transaction (for writes)."""
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        insert_records(conn, [record])

    def record(self, record: AuditRecord, *, timeout: float = 10.0) -> None:
        """Make the record durable (group commit); raise Unavailable if it cannot be."""
        fut = self.submit(record)
        try:
            fut.result(timeout=timeout)
        except Exception as exc:  # noqa: BLE001
            log.error("audit write failed: %s", exc)
            raise Unavailable("the audit record could not be written; nothing was returned",
                              headers={"Retry-After": "2"}) from exc

    def submit(self, record: AuditRecord) -> Future:
        fut: Future = Future()
        self._ensure_thread()
        self._q.put((record, fut))
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
            try:
                if self.fail_next is not None:
                    exc, self.fail_next = self.fail_next, None
                    raise exc
                with self.db.write() as conn:
                    insert_records(conn, [r for r, _ in batch])
            except Exception as exc:  # noqa: BLE001
                for _, fut in batch:
                    fut.set_exception(exc)
            else:
                for _, fut in batch:
                    fut.set_result(None)

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._q.put(None)
            self._thread.join(timeout=10)
        self._thread = None
