"""The scoped repository: the only door to patient data.

Built from a :class:`RequestContext`, it checks the actor's roles and scopes, limits
every query to what the actor may see, and records an audit event for every access to
patient data (writes in the same transaction, reads group-committed before data is
returned).  Adapters call it; they never touch tables.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Protocol
from urllib.parse import parse_qsl

import anyio
import orjson
from sqlalchemy import (
    Connection,
    Table,
    and_,
    bindparam,
    exists,
    false,
    literal_column,
    null,
    or_,
    select,
    true,
    union_all,
)

from healthlink.access import grants as G
from healthlink.access import roles as R
from healthlink.access.context import RequestContext
from healthlink.access.scopes import scopes_allow
from healthlink.db import Database, const, const_in, driver_all
from healthlink.db import tables as t
from healthlink.errors import (
    Conflict, Forbidden, HealthLinkError, Invalid, Issue, MethodNotAllowed, NotFound, PreconditionFailed,
    Unprocessable,
)
from healthlink.fhir import search as S
from healthlink.fhir import store
from healthlink.fhir.definitions import resource_types
from healthlink.fhir.indexing import LABEL_SYSTEM
from healthlink.fhir.store import Stored
from healthlink.fhir.validation import validate_resource
from healthlink.ledger import AuditRecord, AuditWriter

# Types the platform does not keep as resources, and why (ADR 0008).
NOT_STORED = {
    "Bundle": "Bundles are not stored as resources: send transaction and batch Bundles to "
              "POST /fhir. A stored document or collection would hold patient data outside the "
              "per-institution access rules and the audit trail.",
}

OPS = {"read": "r", "vread": "r", "history-instance": "r", "history-type": "s", "search-type": "s",
       "create": "c", "update": "u", "delete": "d", "everything": "r"}


#: Repository.medication_context: what counts as a current medication, and the body-weight codes
MEDICATION_CONTEXT_TYPES = ("MedicationRequest", "MedicationStatement", "AllergyIntolerance", "Observation")
CURRENT_REQUEST_STATUS = frozenset({"active", "on-hold"})
CURRENT_STATEMENT_STATUS = frozenset({"active"})
BODY_WEIGHT_CODES = frozenset({"http://loinc.org|29463-7", "http://loinc.org|3141-9"})
#: results the pre-review pharmacist sees besides the weight: serum creatinine, eGFR (renal dosing)
PREREVIEW_RESULT_CODES = frozenset({"http://loinc.org|2160-0", "http://loinc.org|33914-3",
                                    "http://loinc.org|62238-1", "http://loinc.org|98979-8"})

#: data classes whose records give a hint without a grant (Repository.outside_summary)
HINT_CLASSES = ("laboratory", "imaging", "medications", "allergies", "conditions", "procedures")
_CODE_ELEMENTS = ("code", "medicationCodeableConcept", "vaccineCode", "type")
_DATE_ELEMENTS = ("effectiveDateTime", "effectivePeriod", "issued", "authoredOn", "recordedDate", "onsetDateTime",
                  "started", "occurrenceDateTime", "performedDateTime", "performedPeriod", "dateAsserted",
                  "whenHandedOver", "effectiveInstant")


def _first_coding(body: dict) -> dict:
    for el in _CODE_ELEMENTS:
        v = body.get(el)
        if isinstance(v, list):
            v = v[0] if v else None
        if isinstance(v, dict):
            for c in v.get("coding") or []:
                if isinstance(c, dict) and c.get("code"):
                    return {k: c.get(k) for k in ("system", "code", "display")}
    for m in body.get("modality") or []:  # ImagingStudy
        if isinstance(m, dict) and m.get("code"):
            return {k: m.get(k) for k in ("system", "code", "display")}
    return {}


def _day(body: dict) -> str | None:
    for el in _DATE_ELEMENTS:
        v = body.get(el)
        if isinstance(v, dict):
            v = v.get("start")
        if isinstance(v, str) and len(v) >= 10:
            return v[:10]
    return None


class PatientLinker(Protocol):
    """Links stored Patients to Persons in the writer's transaction (the master patient
    index, ``healthlink.identity``, wired in by the runtime: access does not import it)."""

    def patient_written(self, conn: Connection, ctx: RequestContext, patient: Stored) -> object:
        """Link the Patient; the result's ``person_id`` names its Person."""

    def patient_deleted(self, conn: Connection, ctx: RequestContext, patient: Stored) -> None:
        """Take the Patient out of its Person (the delete's audit record names it)."""

    def match(self, conn: Connection, patient: dict) -> list[tuple[str, float, str]]: ...


@dataclass
class Services:
    """What a repository needs from the running platform."""

    db: Database
    audit: AuditWriter
    base_url: str
    default_page_size: int = 20
    max_page_size: int = 1000
    max_bundle_entries: int = 10000
    linker: PatientLinker | None = None
    # sensitive categories in force (healthlink.fhir.labels.SENSITIVE by default): hidden from a
    # grant that does not name them (HEALTHLINK_SENSITIVE_CATEGORIES)
    sensitive: frozenset[str] = frozenset({"mental-health", "hiv-sti", "reproductive-health",
                                           "substance-use", "genetics"})


@dataclass
class Written:
    stored: Stored
    created: bool


@dataclass
class CheckScope:
    """What :meth:`Repository.medication_context_scope` and :meth:`Repository.result_candidates_scope`
    yield."""

    person_id: str | None
    records: list[tuple[Stored, bool]]  # (record, disclosed), the Patient first
    rows: list[tuple[Table, list[dict]]]  # the caller's rows, committed with the audit record
    also: object = None  # what the caller's ``also(conn)`` returned


class Repository:
    def __init__(self, ctx: RequestContext, services: Services) -> None:
        self.ctx = ctx
        self.s = services
        self.actor = ctx.actor
        self._failures: list[AuditRecord] | None = None
        self._persons: list[str] = []  # Persons linked by this unit of work, for its audit record
        self._grants: list[G.ActiveGrant] | None = None  # the actor's grants in force (loaded once)
        self._used: dict[str, G.ActiveGrant] = {}  # grants that opened records served, for the audit
        self._preds: dict[tuple, object] = {}  # visibility predicates built for this request

    # ------------------------------------------------------------ access rules
    def _permitted(self, res_type: str, op: str) -> bool:
        return R.allowed(self.actor.roles, res_type, op) and scopes_allow(self.actor.scopes, res_type, op)

    @staticmethod
    def _known_type(res_type: str) -> None:
        """An unknown type in the URL is 404 (nothing is served there), checked before
        the body is validated against it."""
        if res_type not in resource_types():
            raise NotFound(f"unknown resource type '{res_type}'",
                           [Issue("not-supported", f"unknown resource type '{res_type}'", (res_type,))])

    def _require(self, res_type: str, interaction: str, *, audit: bool = False) -> None:
        """Refuse with 403 what the roles and scopes do not allow.

        ``audit`` records the refusal; only callers outside a transaction pass it.  Inside
        one (the ``*_in`` methods, Bundles) the caller audits after the rollback: on SQLite
        the open write transaction holds the only write lock, which the audit writer needs,
        so waiting for it there would stall until the audit timeout and lose the record."""
        self._known_type(res_type)
        op = OPS[interaction]
        if op in "cud" and res_type in NOT_STORED:
            raise MethodNotAllowed(NOT_STORED[res_type],
                                   [Issue("not-supported", NOT_STORED[res_type], (res_type,))],
                                   headers={"Allow": "GET"})
        if not self._permitted(res_type, op):
            exc = Forbidden(f"your role and scopes do not allow {interaction} on {res_type}")
            if audit and R.data_class(res_type) != "directory":
                self._audit_failure(interaction, exc, entities=[res_type])
            raise exc

    def visibility(self, res_type: str, op: str = "s", *, grants: bool = True):  # noqa: ANN201
        """SQL predicate of the rows of ``res_type`` this actor may see: own institution's, and
        (reads, once :meth:`_load_grants` ran) other institutions' that an active grant covers;
        a patient's: their own Persons' records, from every institution."""
        if not self._permitted(res_type, op):
            return False
        if R.data_class(res_type) == "directory":
            return True
        if R.region_wide(self.actor.roles, res_type, op):
            return True
        key = (self.actor.kind, grants and bool(self._grants))
        pred = self._preds.get(key)  # the same object for every patient-data type of a request
        if pred is None:
            if self.actor.kind == "patient":
                pred = t.resource.c.patient_id.in_(
                    select(t.person_link.c.patient_id).where(t.person_link.c.person_id.in_(self.actor.persons))) \
                    if self.actor.persons else False
            elif self.actor.institution_id is None:
                pred = False
            else:
                own = t.resource.c.institution_id == self.actor.institution_id
                pred = or_(own, G.predicate(self._grants, self.s.sensitive)) if key[1] else own
            self._preds[key] = pred
        return pred

    # ------------------------------------------------------------ grants (issue 5)
    def _load_grants(self, conn: Connection) -> list[G.ActiveGrant]:
        """The actor's grants in force, read once per request (a doctor, nurse or pharmacist)."""
        if self._grants is None:
            a = self.actor
            self._grants = (G.active_grants(conn, a.subject, a.institution_id)
                            if a.kind == "user" and a.roles & G.GRANT_ROLES else [])
        return self._grants

    def _served(self, conn: Connection, items: list[Stored]) -> list[Stored | None]:
        """Each record as this actor is served it, or None where the actor may not see it: own
        institution's as stored; another's only under a grant that covers it (then marked, and
        the grant noted for the audit record) or, for a patient, when it is their own Person's."""
        foreign = [s for s in items if not self._can_see(s, "r")]
        if not foreign:
            return list(items)
        ok: dict[int, G.ActiveGrant | None] = {}
        if self.actor.kind == "patient":
            mine = set(conn.execute(select(t.person_link.c.patient_id).where(
                t.person_link.c.person_id.in_(self.actor.persons),
                t.person_link.c.patient_id.in_({s.patient_id for s in foreign if s.patient_id})))
                .scalars()) if self.actor.persons else set()
            ok = {id(s): None for s in foreign if s.patient_id in mine}
        else:
            ok = dict(G.covering(conn, self._load_grants(conn), foreign, self.s.sensitive))
        out: list[Stored | None] = []
        for s in items:
            if self._can_see(s, "r"):
                out.append(s)
            elif id(s) in ok:
                g = ok[id(s)]
                if g is not None:
                    self._used[g.consent_id] = g
                out.append(G.mark(s, g))
            else:
                out.append(None)
        return out

    def _serve_all(self, conn: Connection, items: list[Stored], *, admitted: bool = False) -> list[Stored]:
        """:meth:`_served` without the refused.  ``admitted``: the rows come from a query under this
        request's visibility predicate, so with a single grant in force every other institution's
        row is that grant's (no second look at labels and links)."""
        if admitted and self.actor.kind != "patient" and self._grants and len(self._grants) == 1:
            g = self._grants[0]
            out = []
            for s in items:
                if self._can_see(s, "r"):
                    out.append(s)
                else:
                    self._used[g.consent_id] = g
                    out.append(G.mark(s, g))
            return out
        return [s for s in self._served(conn, items) if s is not None]

    def _can_see(self, s: Stored, op: str = "r") -> bool:
        if R.data_class(s.res_type) == "directory" or R.region_wide(self.actor.roles, s.res_type, op):
            return True
        return self.actor.institution_id is not None and s.institution_id == self.actor.institution_id

    def _can_write(self, s: Stored, op: str) -> bool:
        if R.region_wide(self.actor.roles, s.res_type, op):
            return True
        return self.actor.institution_id is not None and s.institution_id == self.actor.institution_id

    # ------------------------------------------------------------ audit
    def _is_patient_data(self, res_type: str) -> bool:
        return R.data_class(res_type) != "directory"

    def _record(self, subtype: str, stored: list[Stored], *, query: str | None = None,
                outcome: str = "success", desc: str | None = None) -> AuditRecord:
        persons, self._persons = self._persons, []
        used, self._used = self._used, {}
        entities = [f"{s.res_type}/{s.res_id}" for s in stored]
        agent = self.ctx.agent()
        if any(g.break_glass for g in used.values()):
            agent = replace(agent, purpose_of_use="ETREAT")  # emergency treatment (v3 ActReason)
        return AuditRecord(
            subtype=subtype, agent=agent, outcome=outcome, outcome_desc=desc,
            patients={s.patient_id for s in stored if s.patient_id},
            entities=entities + [p for p in dict.fromkeys(persons) if p not in entities]
            + [f"Consent/{c}" for c in used], query=query)

    def _audit_read(self, subtype: str, stored: list[Stored], *, query: str | None = None,
                    force: bool = False) -> None:
        if force or any(self._is_patient_data(s.res_type) for s in stored):
            self.s.audit.record(self._record(subtype, stored, query=query))

    def _audit_failure(self, subtype: str, exc: HealthLinkError, *, entities: list[str] = (),  # type: ignore[assignment]
                       patients: set[str] | None = None, query: str | None = None) -> None:
        rec = AuditRecord(subtype=subtype, agent=self.ctx.agent(),
                          outcome="minor" if exc.status < 500 else "serious",
                          outcome_desc=f"{exc.status} {exc.message}", entities=list(entities),
                          patients=patients or set(), query=query)
        if self._failures is not None:  # read_async writes them without blocking its loop
            self._failures.append(rec)
            return
        try:
            self.s.audit.record(rec)
        except HealthLinkError:
            pass  # the original error is what the client must see

    # ------------------------------------------------------------ reads
    def read(self, res_type: str, res_id: str) -> Stored:
        s = self._read_visible(res_type, res_id)
        self._audit_read("read", [s])
        return s

    async def read_async(self, res_type: str, res_id: str) -> Stored:
        """:meth:`read` for a coroutine: the same checks and the same audit record, durable
        before the resource is returned, but the wait for the audit commit holds no thread.

        On SQLite the primary-key lookup runs in the event loop itself: it is a read from
        the page cache that costs less under the GIL than handing it to a worker thread,
        and its refusals' audit records are awaited below rather than waited for in the
        loop.  On PostgreSQL it is a network round trip, so it runs in a worker thread
        (ADR 0007)."""
        try:
            if self.s.db.is_sqlite:
                self._failures = []
                s = self._read_visible(res_type, res_id)
            else:
                # anyio's worker threads, as for every other handler: their number is what the
                # connection pool is sized for (settings.request_threads, ADR 0017)
                s = await anyio.to_thread.run_sync(self._read_visible, res_type, res_id)
        except HealthLinkError:
            for rec in self._failures or ():
                try:
                    await self.s.audit.record_async(rec)
                except HealthLinkError:
                    pass  # the original error is what the client must see
            raise
        finally:
            self._failures = None
        if self._is_patient_data(s.res_type):
            await self.s.audit.record_async(self._record("read", [s]))
        return s

    def _read_visible(self, res_type: str, res_id: str) -> Stored:
        self._require(res_type, "read", audit=True)
        with self.s.db.read_one() as conn:  # one primary-key lookup (a second only for a 410)
            return self._load_visible(conn, res_type, res_id)  # (more only for another institution's)

    def _load_visible(self, conn: Connection, res_type: str, res_id: str, *,
                      interaction: str = "read") -> Stored:
        """Load the current version; resources the actor may not see are 'not known'
        (a 404 does not reveal that another institution holds the id)."""
        try:
            s = store.read(conn, res_type, res_id)
        except NotFound as exc:
            if self._is_patient_data(res_type):
                self._audit_failure(interaction, exc, entities=[f"{res_type}/{res_id}"])
            raise
        except HealthLinkError as exc:  # Gone
            cur = store.read_current(conn, res_type, res_id)
            if cur is not None and not self._can_see(cur) and self._served(conn, [cur])[0] is None:
                raise self._unknown(interaction, res_type, res_id, cur) from None
            if self._is_patient_data(res_type):
                self._audit_failure(interaction, exc, entities=[f"{res_type}/{res_id}"],
                                    patients={cur.patient_id} if cur is not None and cur.patient_id else set())
            raise exc
        if self._can_see(s):
            return s
        served = self._served(conn, [s])[0]
        if served is None:
            exc2 = NotFound(f"{res_type}/{res_id} is not known")
            self._audit_failure(interaction, exc2, entities=[f"{res_type}/{res_id}"],
                                patients={s.patient_id} if s.patient_id else set())
            raise exc2
        return served

    def _check_patient(self, conn: Connection, patient_id: str, read: Stored | None) -> Stored:
        """The Patient of an order-time check.  ``read``: its current version as the check's own
        statement read it (None if there is none), which is the answer when the actor sees it;
        anything else goes the way of :meth:`_load_visible`, for its own answer (404 or 410,
        audited), and the actor must see what that returns."""
        p = read
        if p is None or p.deleted or not self._can_see(p):
            p = self._load_visible(conn, "Patient", patient_id, interaction="operation")
        if not self._can_see(p):
            raise self._unknown("operation", "Patient", patient_id, p)
        return p

    def _unknown(self, interaction: str, res_type: str, res_id: str, cur: Stored | None) -> NotFound:
        """The 404 for an id that does not exist or that the actor may not see (the same
        answer for both, so it does not reveal another institution's ids), audited."""
        exc = NotFound(f"{res_type}/{res_id} is not known")
        if self._is_patient_data(res_type):
            self._audit_failure(interaction, exc, entities=[f"{res_type}/{res_id}"],
                                patients={cur.patient_id} if cur is not None and cur.patient_id else set())
        return exc

    def vread(self, res_type: str, res_id: str, version_id: str) -> Stored:
        self._require(res_type, "vread", audit=True)
        if not version_id.isdigit():
            raise NotFound(f"{res_type}/{res_id} has no version '{version_id}'")
        with self.s.db.read() as conn:
            cur = store.read_current(conn, res_type, res_id)
            if cur is None or self._served(conn, [cur])[0] is None:
                raise self._unknown("vread", res_type, res_id, cur)
            s = store.vread(conn, res_type, res_id, int(version_id))
            if not self._can_see(cur):
                served = self._served(conn, [replace(s, patient_id=cur.patient_id)])[0]
                if served is None:  # this version is not covered (e.g. it was sensitive then)
                    raise self._unknown("vread", res_type, res_id, cur)
                s = served
        self._audit_read("vread", [s])
        return s

    def search(self, res_type: str, params: list[tuple[str, str]]) -> S.Page:
        self._require(res_type, "search-type", audit=True)
        query = f"{res_type}?" + "&".join(f"{k}={v}" for k, v in params)
        try:
            with self.s.db.read() as conn:
                self._load_grants(conn)
                page = S.search(conn, res_type, params, visible=self.visibility,
                                base_url=self.s.base_url, default_count=self.s.default_page_size,
                                max_count=self.s.max_page_size)
                if self._grants or self.actor.kind == "patient":
                    page = replace(page, matches=self._serve_all(conn, page.matches, admitted=True),
                                   includes=self._serve_all(conn, page.includes, admitted=True))
        except Invalid as exc:
            if self._is_patient_data(res_type):
                self._audit_failure("search-type", exc, query=query)
            raise
        stored = page.matches + page.includes
        self._audit_read("search-type", stored, query=query, force=self._is_patient_data(res_type))
        return page

    def history(self, res_type: str, res_id: str | None, *, count: int | None, cursor: str | None,
                since: str | None) -> tuple[list[Stored], str | None]:
        self._require(res_type, "history-instance" if res_id else "history-type", audit=True)
        n = min(count or self.s.default_page_size, self.s.max_page_size)
        with self.s.db.read() as conn:
            self._load_grants(conn)
            if res_id:
                cur = store.read_current(conn, res_type, res_id)
                if cur is None or self._served(conn, [cur])[0] is None:
                    raise self._unknown("history-instance", res_type, res_id, cur)
            versions, nxt = S.history(conn, res_type, res_id, visible=lambda rt: self.visibility(rt, "r"),
                                      count=n, cursor=cursor, since=since)
            if res_id:
                versions = [Stored(v.rid, v.res_type, v.res_id, v.version_id, v.last_updated, v.deleted,
                                   v.institution_id, cur.patient_id, v.content, v.method)  # type: ignore[union-attr]
                            for v in versions]
            elif versions and self._is_patient_data(res_type):
                # the version rows do not carry the compartment; the audit record needs it
                pids = dict(conn.execute(select(t.resource.c.rid, t.resource.c.patient_id)
                                         .where(t.resource.c.rid.in_({v.rid for v in versions}))).all())
                versions = [replace(v, patient_id=pids.get(v.rid)) for v in versions]
            if self._grants:
                versions = self._serve_all(conn, versions)  # each version judged on its own content
        self._audit_read("history-instance" if res_id else "history-type", versions,
                         force=self._is_patient_data(res_type))
        return versions, nxt

    def everything(self, patient_id: str, *, count: int | None, cursor: str | None) -> tuple[list[Stored], str | None]:
        self._require("Patient", "everything", audit=True)
        n = min(count or self.s.default_page_size, self.s.max_page_size)
        with self.s.db.read() as conn:
            self._load_grants(conn)
            self._load_visible(conn, "Patient", patient_id, interaction="everything")
            ids = self._person_patients(conn, patient_id)
            items, nxt = S.everything(conn, ids, visible=lambda rt: self.visibility(rt, "r"),
                                      count=n, cursor=cursor)
            if len(ids) > 1:
                items = self._serve_all(conn, items, admitted=True)
        rec = self._record("everything", items)
        rec.patients.add(patient_id)
        self.s.audit.record(rec)
        return items, nxt

    def person_records(self, person_id: str, *, count: int | None,
                       cursor: str | None) -> tuple[list[Stored], str | None]:
        """A patient's own records (or a ward's) from every institution: ``$everything`` over all
        Patients linked to the Person, sensitive ones included.  Only for a patient actor acting
        for that Person; audited like ``$everything``."""
        if self.actor.kind != "patient" or person_id not in self.actor.persons:
            raise NotFound(f"Person/{person_id} is not known")
        n = min(count or self.s.default_page_size, self.s.max_page_size)
        pl = t.person_link
        with self.s.db.read() as conn:
            ids = sorted(conn.execute(select(pl.c.patient_id).where(pl.c.person_id == person_id)).scalars())
            if not ids:
                return [], None
            items, nxt = S.everything(conn, ids, visible=lambda rt: self.visibility(rt, "r"),
                                      count=n, cursor=cursor)
        rec = self._record("everything", items)
        rec.patients.update(ids)
        self.s.audit.record(rec)
        return items, nxt

    def _person_patients(self, conn: Connection, patient_id: str) -> list[str]:
        """The Patients ``$everything`` of ``patient_id`` spans: all of its Person's, for a grant
        holder whose grant is for that Person and for a patient; otherwise the one."""
        persons = ({g.person_id for g in self._grants or ()} if self.actor.kind != "patient"
                   else set(self.actor.persons))
        if not persons:
            return [patient_id]
        pl = t.person_link
        person = conn.execute(select(pl.c.person_id).where(pl.c.patient_id == patient_id)).scalar()
        if person is None or person not in persons:
            return [patient_id]
        return sorted(conn.execute(select(pl.c.patient_id).where(pl.c.person_id == person)).scalars())

    def outside_summary(self, patient_id: str) -> list[dict]:
        """What a doctor, nurse or pharmacist may learn, without a grant, of their patient's records
        at other institutions: *that a record of item X dated D exists at institution I* (the
        invitation to ask the patient; the recognition and medication checks use it too).

        Each hint is ``{"class", "system", "code", "display", "date", "institution"}`` (a day, no
        time).  Never in a hint: values, units, results, text, resource ids, versions, or how many
        records stand behind it (identical hints are given once).  Records carrying a sensitive
        category in force give no hint at all; nor do classes outside :data:`HINT_CLASSES`.  The
        patient must be one of the actor's institution; the answer is audited."""
        self._require("Patient", "read", audit=True)
        a = self.actor
        if a.kind != "user" or not (a.roles & G.GRANT_ROLES) or a.institution_id is None:
            raise Forbidden("only a doctor, nurse or pharmacist sees which outside records exist")
        pl, tok = t.person_link, t.idx_token
        with self.s.db.read() as conn:
            p = self._load_visible(conn, "Patient", patient_id, interaction="operation")
            if not self._can_see(p):
                raise self._unknown("operation", "Patient", patient_id, p)
            person = conn.execute(select(pl.c.person_id).where(pl.c.patient_id == patient_id)).scalar()
            rows = [] if person is None else conn.execute(
                select(t.resource.c.institution_id, t.resource.c.content, tok.c.code).join(
                    tok, and_(tok.c.rid == t.resource.c.rid, tok.c.param == "_class",
                              tok.c.system == LABEL_SYSTEM, tok.c.code.in_(HINT_CLASSES)))
                .where(t.resource.c.patient_id.in_(select(pl.c.patient_id).where(pl.c.person_id == person)),
                       t.resource.c.institution_id != a.institution_id, t.resource.c.deleted == false(),
                       ~G._label("_sensitive", self.s.sensitive) if self.s.sensitive else true())
                .limit(20000)).all()
        hints: dict[tuple, dict] = {}
        for inst, content, cls in rows:
            body = orjson.loads(content)
            coding = _first_coding(body)
            day = _day(body)
            key = (cls, coding.get("system"), coding.get("code"), day, inst)
            if key not in hints:
                hints[key] = {"class": cls, "system": coding.get("system"), "code": coding.get("code"),
                              "display": coding.get("display"), "date": day, "institution": inst}
        out = sorted(hints.values(), key=lambda h: (h["date"] or "", h["class"]), reverse=True)
        self.s.audit.record(AuditRecord("operation", self.ctx.agent(), patients={patient_id},
                                        entities=[f"Patient/{patient_id}"],
                                        query=f"Patient/{patient_id}/$outside-summary"))
        return out

    def result_candidates(self, patient_id: str, *, codes: list[tuple[str, str]], since_us: int,
                          studies: bool = False) -> tuple[str | None, list[tuple[Stored, bool]]]:
        """Results of the same Person as the actor's Patient ``patient_id`` from every institution
        (the order-time recognition check, issue 7): Observations and DiagnosticReports coded
        with one of ``codes`` ((system, code) pairs) dated on or after ``since_us``, and with
        ``studies`` the Person's ImagingStudies started since then.

        Returns ``(person_id, [(record, disclosed)])``.  ``disclosed`` is True for the ordering
        institution's own records and for another institution's that an active grant covers; the
        others are given to the caller only to judge (status, date, issuer) what the disclosure
        rule lets it say: that a recognisable result exists at an institution on a date.  Records
        carrying a sensitive category in force and not covered by a grant are left out altogether.
        One audit record names the patient, the disclosed records and the grants used."""
        with self.result_candidates_scope(patient_id, codes=codes, since_us=since_us, studies=studies) as scope:
            return scope.person_id, scope.records

    @contextmanager
    def result_candidates_scope(self, patient_id: str, *, codes: list[tuple[str, str]], since_us: int,
                                studies: bool = False,
                                also: Callable[[Connection], object] | None = None) -> Iterator[CheckScope]:
        """:meth:`result_candidates` for a check that records what it found: as
        :meth:`medication_context_scope` (the caller's rows committed with the audit record when the
        block ends; ``also(conn)`` run on the same connection; ADR 0016)."""
        found = self._candidate_rows(patient_id, codes=codes, since_us=since_us, studies=studies, also=also)
        with self._check_scope(patient_id, "$recognition-check", *found) as scope:
            yield scope

    @contextmanager
    def _check_scope(self, patient_id: str, operation: str, person: str | None,
                     out: list[tuple[Stored, bool]], answer: object) -> Iterator[CheckScope]:
        """The audit half of an order-time check's scope (ADR 0016): one audit record of
        ``Patient/{patient_id}/{operation}`` naming the disclosed records, written with the rows the
        caller appended to ``scope.rows`` when the block ends (in the audit writer's group commit,
        waited for); if the block raises, written without them and the error stands."""
        rec = self._record("operation", [s for s, shown in out if shown], query=f"Patient/{patient_id}/{operation}")
        rec.patients.add(patient_id)
        scope = CheckScope(person, out, [], answer)
        try:
            yield scope
        except BaseException:
            try:
                self.s.audit.record(rec)
            except HealthLinkError:
                pass  # the original error is what the caller must see
            raise
        rec.with_rows = scope.rows
        self.s.audit.record(rec)

    def _candidate_rows(self, patient_id: str, *, codes: list[tuple[str, str]], since_us: int, studies: bool,
                        also: Callable[[Connection], object] | None
                        ) -> tuple[str | None, list[tuple[Stored, bool]], object]:
        """The reads of :meth:`result_candidates` and the caller's ``also(conn)``, on one connection
        without a transaction of their own on PostgreSQL (``read_one``: each statement its own
        snapshot, as in a READ COMMITTED transaction, without the BEGIN and COMMIT; ADR 0018)."""
        self._require("Patient", "read", audit=True)
        a = self.actor
        if a.kind != "user" or not (a.roles & G.GRANT_ROLES) or a.institution_id is None:
            raise Forbidden("only a doctor, nurse or pharmacist checks a patient's results at order time")
        out: list[tuple[Stored, bool]] = []
        with self.s.db.read_one() as conn:
            self._load_grants(conn)
            # the Patient and its Person in one statement
            got = driver_all(conn, _PATIENT_AND_PERSON, {"pid": patient_id})
            read = store.row_to_stored(got[0]) if got else None
            if self._check_patient(conn, patient_id, read) is not read:  # read again: its Person too
                got = driver_all(conn, _PERSON_OF, {"pid": patient_id})
            person = got[0].person_id if got else None
            rows = [] if not (codes or studies) else driver_all(
                conn, _candidates_sql(tuple(sorted(set(codes))), studies, person is not None, self.s.sensitive),
                {"person": person, "since": since_us} if person is not None else {"pid": patient_id, "since": since_us})
            if rows:
                found = [store.row_to_stored(x) for x in rows]
                hidden = {x.rid for x in rows if x.hidden}
                served = self._served(conn, found)
                for s, shown in zip(found, served, strict=True):
                    if shown is not None:
                        out.append((shown, True))
                    elif s.rid not in hidden:
                        out.append((s, False))
            answer = also(conn) if also is not None else None
        return person, out, answer

    def medication_context(self, patient_id: str) -> tuple[str | None, list[tuple[Stored, bool]]]:
        """What the order-time medication check (issue 8) needs of the Person behind the actor's
        Patient ``patient_id``, from every institution: current MedicationRequests (status
        ``active`` or ``on-hold``; drafts, completed, stopped, cancelled and entered-in-error ones
        are not current), MedicationStatements (``active``), AllergyIntolerances (clinical status
        ``active`` or not given, and verification status neither ``refuted`` nor
        ``entered-in-error``); body-weight Observations (LOINC 29463-7 / 3141-9, final, amended
        or corrected) only where disclosed; and, first, the Patient ``patient_id`` itself (its
        birth date), so the check needs no second audited read.

        Returns ``(person_id, [(record, disclosed)])`` with the rule of :meth:`result_candidates`:
        ``disclosed`` for the ordering institution's own records and another institution's that an
        active grant covers; the others only for the caller to say *that* an interacting drug or
        an allergy is recorded at an institution on a date.  Records carrying a sensitive category
        in force that no grant covers are left out.  One audit record names the patient, the
        disclosed records and the grants used."""
        with self.medication_context_scope(patient_id) as scope:
            return scope.person_id, scope.records

    @contextmanager
    def medication_context_scope(self, patient_id: str, *,
                                 also: Callable[[Connection], object] | None = None) -> Iterator[CheckScope]:
        """:meth:`medication_context` for a check that records what it found (ADR 0016).  Yields a
        :class:`CheckScope`; ``(table, [row, ...])`` pairs the caller appends to its ``rows``
        (the check's events) are committed with the audit record, in the audit writer's group
        commit, when the block ends: no write transaction of their own.  The block's end waits for
        that commit (503 if it fails), so nothing leaves the platform before its record is durable.
        If the block raises, the audit record is still written, without the rows, and the error
        stands.  ``also(conn)``: the caller's own look-up (its earlier events), run in the same read
        transaction after the records are read; its answer is ``scope.also``."""
        with self._check_scope(patient_id, "$medication-check", *self._medication_rows(patient_id, also)) as scope:
            yield scope

    def _medication_rows(self, patient_id: str, also: Callable[[Connection], object] | None = None
                         ) -> tuple[str | None, list[tuple[Stored, bool]], object]:
        """The reads of :meth:`medication_context`: the grants, then the Patient and the Person's
        current records in one statement (:func:`_medication_sql`), and the caller's
        ``also(conn)``; on one connection, as :meth:`_candidate_rows` (``read_one``, ADR 0018)."""
        self._require("Patient", "read", audit=True)
        a = self.actor
        if a.kind != "user" or not (a.roles & G.GRANT_ROLES) or a.institution_id is None:
            raise Forbidden("only a doctor, nurse or pharmacist checks a patient's medication at order time")
        pl = t.person_link
        out: list[tuple[Stored, bool]] = []
        with self.s.db.read_one() as conn:
            self._load_grants(conn)
            rows = driver_all(conn, _medication_sql(True, self.s.sensitive), {"pid": patient_id})
            # the statement's first row is the Patient itself (part 0), when it exists
            p = store.row_to_stored(rows[0]) if rows and rows[0].part == 0 else None
            rows = [x for x in rows if x.part == 1]
            out.append((self._check_patient(conn, patient_id, p), True))
            person = rows[0].person_id if rows else conn.execute(
                select(pl.c.person_id).where(pl.c.patient_id == patient_id)).scalar()
            if person is None:  # not linked to a Person (yet): the Patient's own records
                rows = [x for x in driver_all(conn, _medication_sql(False, self.s.sensitive), {"pid": patient_id})
                        if x.part == 1]
            found = [store.row_to_stored(x) for x in rows]
            hidden = {x.rid for x in rows if x.hidden}
            weights = {x.rid for x in rows if x.res_type == "Observation"}
            served = self._served(conn, found)
            for s, shown in zip(found, served, strict=True):
                if shown is not None:
                    out.append((shown, True))
                elif s.rid not in hidden and s.rid not in weights:
                    out.append((s, False))
            answer = also(conn) if also is not None else None
        return person, out, answer

    def prereview_context(self, patient_ids: list[str], *, clinical: bool,
                          query: str) -> dict[str, list[Stored]]:
        """What the regional pre-review pharmacist (a role with ``prereview``, docs/prereview.md)
        may see of the patients of prescriptions submitted to the pre-review centre, and nothing
        else: each Patient of ``patient_ids`` must have a submitted prescription (otherwise 404, as
        if unknown, and the refusal is audited).  Returns, per patient, the Patient and, with
        ``clinical``, the records of that Patient (the submitting institution's) the review needs:
        current MedicationRequests and MedicationStatements, AllergyIntolerances (as
        :meth:`medication_context` selects them) and final body-weight and renal-function
        Observations.  One audit record (``query``) names every patient and record served."""
        if not R.may_prereview(self.actor.roles) or self.actor.kind != "user":
            exc = Forbidden("only the regional pre-review pharmacist reads the patients of submitted prescriptions")
            self._audit_failure("operation", exc, patients=set(patient_ids), query=query)
            raise exc
        wanted_ids = sorted(set(patient_ids))
        pr, tok, r = t.prereview_prescription, t.idx_token, t.resource
        out: dict[str, list[Stored]] = {}
        with self.s.db.read() as conn:
            submitted = set(conn.execute(select(pr.c.patient_id).where(
                pr.c.patient_id.in_(wanted_ids)).distinct()).scalars()) if wanted_ids else set()
            unknown = [p for p in wanted_ids if p not in submitted]
            if unknown:
                exc = NotFound(f"no prescription of Patient/{unknown[0]} was submitted to pre-review")
                self._audit_failure("operation", exc, patients=set(unknown), query=query)
                raise exc
            rows = conn.execute(select(r).where(r.c.patient_id.in_(wanted_ids), r.c.deleted == false(),
                                                r.c.res_type.in_(("Patient",) + (MEDICATION_CONTEXT_TYPES
                                                                                  if clinical else ()))
                                                )).all()
            found = [store.row_to_stored(x) for x in rows]
            toks: dict[int, dict[str, set[str]]] = {}
            others = [s.rid for s in found if s.res_type != "Patient"]
            if others:
                for rid, param, system, code in conn.execute(select(tok.c.rid, tok.c.param, tok.c.system, tok.c.code).where(
                        tok.c.rid.in_(others),
                        tok.c.param.in_(("status", "clinical-status", "verification-status", "code")))):
                    key = f"{system}|{code}" if param == "code" else code
                    toks.setdefault(rid, {}).setdefault(param, set()).add(key)
        for s in sorted(found, key=lambda x: (x.res_type != "Patient", x.rid)):
            got = toks.get(s.rid, {})
            status = got.get("status", set())
            keep = s.res_type == "Patient"
            if s.res_type == "MedicationRequest":
                keep = bool(status & CURRENT_REQUEST_STATUS)
            elif s.res_type == "MedicationStatement":
                keep = bool(status & CURRENT_STATEMENT_STATUS)
            elif s.res_type == "AllergyIntolerance":
                clinical_status = got.get("clinical-status", set())
                keep = (not clinical_status or "active" in clinical_status) and not (
                    got.get("verification-status", set()) & {"refuted", "entered-in-error"})
            elif s.res_type == "Observation":
                keep = bool(got.get("code", set()) & (BODY_WEIGHT_CODES | PREREVIEW_RESULT_CODES)) \
                    and bool(status & {"final", "amended", "corrected"})
            if keep:
                out.setdefault(s.patient_id or "", []).append(s)
        served = [s for items in out.values() for s in items]
        rec = self._record("operation", served, query=query)
        rec.patients.update(wanted_ids)
        self.s.audit.record(rec)
        return out

    def match(self, patient: object, *, only_certain: bool = False,
              count: int | None = None) -> list[tuple[Stored, float, str]]:
        """``Patient/$match``: the stored Patients this actor may see that the master patient
        index scores as the person ``patient`` describes, best first, with the probability and
        the match grade (certain, probable, possible).  Audited like a search."""
        self._require("Patient", "search-type", audit=True)
        if self.s.linker is None:
            raise MethodNotAllowed("this platform runs without a master patient index")
        if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
            raise Invalid("$match needs a Patient in the parameter 'resource'",
                          [Issue("required", "a Patient resource is required",
                                 ("Parameters.parameter.resource",))])
        validate_resource(patient, expected_type="Patient")
        with self.s.db.read() as conn:
            scored = self.s.linker.match(conn, patient)
            current = store.read_current_many(conn, [("Patient", pid) for pid, _, _ in scored])
        out = []
        for pid, p, grade in scored:
            s = current.get(("Patient", pid))
            if s is None or s.deleted or not self._can_see(s, "s") or (only_certain and grade != "certain"):
                continue
            out.append((s, p, grade))
        out = out[:min(count or self.s.default_page_size, self.s.max_page_size)]
        self.s.audit.record(self._record("match", [s for s, _, _ in out], query="Patient/$match"))
        return out

    # ------------------------------------------------------------ writes
    def _check_patient_ref(self, conn: Connection, body: dict, stored_patient: str | None) -> None:
        """A resource may not place itself in the compartment of a Patient the actor cannot see."""
        if stored_patient is None or body.get("resourceType") == "Patient":
            return
        p = store.read_current(conn, "Patient", stored_patient)
        if p is not None and not self._can_see(p, "r"):
            raise Unprocessable(
                f"Patient/{stored_patient} is not a patient of your institution",
                [Issue("business-rule", f"Patient/{stored_patient} is not a patient of your institution",
                       (f"{body['resourceType']}.subject",))])

    def _closing(self, conn: Connection, s: Stored, resource: dict) -> None:
        """An Encounter written as finished (or cancelled) closes its consultation: the grants
        bound to it end in this transaction, so the next request already runs without them."""
        if s.res_type == "Encounter" and resource.get("status") in G.CLOSED_ENCOUNTER:
            G.close_encounter(conn, s.res_id, by=self.actor.subject, base_url=self.s.base_url)

    def _linked(self, conn: Connection, s: Stored, link: bool) -> None:
        """A Patient written here is linked to its Person in the same transaction (the
        master patient index); a bulk upload passes ``link=False`` and links in one batch
        when it ends."""
        if link and s.res_type == "Patient" and self.s.linker is not None:
            outcome = self.s.linker.patient_written(conn, self.ctx, s)
            self._persons.append(f"Person/{outcome.person_id}")  # type: ignore[attr-defined]

    def create_in(self, conn: Connection, resource: dict, *, res_id: str | None = None,
                  link: bool = True) -> Stored:
        """Create inside an open transaction (no audit: the caller records it)."""
        rt = resource["resourceType"]
        self._require(rt, "create")
        s = store.create(conn, resource, institution_id=self.actor.institution_id, res_id=res_id,
                         base_url=self.s.base_url)
        self._check_patient_ref(conn, resource, s.patient_id)
        self._linked(conn, s, link)
        return s

    def create_many_in(self, conn: Connection, items: list[tuple[dict, str | None]], *,
                       link: bool = True) -> list[Stored]:
        """:meth:`create_in` for several resources with one statement per table (the POST
        entries of a transaction Bundle).  On any error none of them is written."""
        for resource, _ in items:
            self._require(resource["resourceType"], "create")
        with conn.begin_nested():
            stored = store.create_many(conn, items, institution_id=self.actor.institution_id,
                                       base_url=self.s.base_url)
            # a patient's visibility is the same for every entry, and the Patients created
            # here are the actor's own: read the others once, all in one statement
            made = {s.res_id for s in stored if s.res_type == "Patient"}
            first: dict[str, dict] = {}
            for (resource, _), s in zip(items, stored):
                if s.patient_id and s.patient_id not in made and resource["resourceType"] != "Patient":
                    first.setdefault(s.patient_id, resource)
            current = store.read_current_many(conn, [("Patient", pid) for pid in first])
            for pid, resource in first.items():
                p = current.get(("Patient", pid))
                if p is not None and not self._can_see(p, "r"):
                    self._check_patient_ref(conn, resource, pid)  # raises, naming the element
            for s in stored:
                self._linked(conn, s, link)
        return stored

    def audit_in(self, conn: Connection, subtype: str, stored: list[Stored], *,
                 desc: str | None = None) -> None:
        """Record the audit event of writes made with the ``*_in`` methods, in their own
        transaction (a bulk upload's batch: one record naming every resource it wrote)."""
        self.s.audit.write_in(conn, self._record(subtype, stored, desc=desc))

    def update_in(self, conn: Connection, res_type: str, res_id: str, resource: dict, *,
                  if_match: int | None, link: bool = True) -> Written:
        existing = store.read_current(conn, res_type, res_id, for_update=True)
        if existing is None:
            if if_match is not None:
                raise PreconditionFailed(f"{res_type}/{res_id} does not exist (If-Match given)")
            return Written(self.create_in(conn, resource, res_id=res_id, link=link), True)
        self._require(res_type, "update")
        if not self._can_see(existing):
            raise NotFound(f"{res_type}/{res_id} is not known")
        if not self._can_write(existing, "u"):
            raise Forbidden(f"{res_type}/{res_id} belongs to another institution")
        s = store.update(conn, existing, resource, if_match=if_match, base_url=self.s.base_url)
        self._check_patient_ref(conn, resource, s.patient_id)
        self._linked(conn, s, link)
        self._closing(conn, s, resource)
        return Written(s, False)

    def delete_in(self, conn: Connection, res_type: str, res_id: str, *, if_match: int | None) -> Stored | None:
        self._require(res_type, "delete")
        existing = store.read_current(conn, res_type, res_id, for_update=True)
        if existing is None or not self._can_see(existing):
            return None  # deleting what is not there succeeds (FHIR: 200/204)
        if not self._can_write(existing, "d"):
            raise Forbidden(f"{res_type}/{res_id} belongs to another institution")
        gone = store.delete_resource(conn, existing, if_match=if_match)
        if res_type == "Encounter":
            G.close_encounter(conn, res_id, by=self.actor.subject, base_url=self.s.base_url)
        if res_type == "Patient" and self.s.linker is not None:
            self.s.linker.patient_deleted(conn, self.ctx, gone)
        return gone

    def _write(self, subtype: str, fn, entities: list[str]):  # noqa: ANN001, ANN202
        """Run a write and its audit record in one transaction; audit the failure otherwise."""
        self._persons = []
        try:
            with self.s.db.write() as conn:
                result = fn(conn)
                stored = [r.stored if isinstance(r, Written) else r
                          for r in (result if isinstance(result, list) else [result]) if r is not None]
                if any(self._is_patient_data(s.res_type) for s in stored) or not stored:
                    rec = self._record(subtype, stored)
                    if not stored:  # e.g. a delete that found nothing the actor may see
                        rec.entities = list(entities)
                    self.s.audit.write_in(conn, rec)
                return result
        except HealthLinkError as exc:
            self._audit_failure(subtype, exc, entities=entities)
            raise

    def create(self, resource: dict, *, res_type: str, if_none_exist: str | None = None) -> Written:
        self._known_type(res_type)
        validate_resource(resource, expected_type=res_type)

        def run(conn: Connection) -> Written:
            if if_none_exist:
                found = self._conditional_matches(conn, res_type, if_none_exist)
                if len(found) == 1:
                    return Written(found[0], False)
                if len(found) > 1:
                    raise PreconditionFailed(
                        f"If-None-Exist '{if_none_exist}' matches {len(found)} resources")
            return Written(self.create_in(conn, resource), True)

        w = self._write("create", run, [res_type])
        return w

    def _conditional_matches(self, conn: Connection, res_type: str, query: str) -> list[Stored]:
        params = parse_qsl(query.lstrip("?"), keep_blank_values=True)
        if not params:
            raise Invalid("a conditional operation needs search parameters")
        page = S.search(conn, res_type, params + [("_count", "2")],
                        visible=lambda rt: self.visibility(rt, grants=False), base_url=self.s.base_url)
        return page.matches

    def update(self, res_type: str, res_id: str, resource: dict, *, if_match: int | None) -> Written:
        self._known_type(res_type)
        validate_resource(resource, expected_type=res_type)
        if resource.get("id") != res_id:
            msg = f"the resource's id ({resource.get('id')!r}) must match the URL's id ({res_id!r})"
            raise Invalid(msg, [Issue("invalid", msg, (f"{res_type}.id",))])
        if not self._permitted(res_type, "u") and not self._permitted(res_type, "c"):
            self._require(res_type, "update", audit=True)
        return self._write("update", lambda c: self.update_in(c, res_type, res_id, resource,
                                                               if_match=if_match),
                           [f"{res_type}/{res_id}"])

    def conditional_update(self, res_type: str, query: str, resource: dict, *,
                           if_match: int | None) -> Written:
        self._known_type(res_type)
        validate_resource(resource, expected_type=res_type)
        self._require(res_type, "update", audit=True)

        def run(conn: Connection) -> Written:
            found = self._conditional_matches(conn, res_type, query)
            if len(found) > 1:
                raise PreconditionFailed(f"conditional update '{query}' matches {len(found)} resources")
            if not found:
                if resource.get("id"):
                    # FHIR R4 3.1.0.4.3: no match, but the id names an existing resource -> 409
                    existing = store.read_current(conn, res_type, resource["id"])
                    if existing is not None and not existing.deleted and self._can_see(existing):
                        raise Conflict(f"{res_type}/{existing.res_id} exists but does not match "
                                       f"'{query}'; conditional update will not overwrite it")
                    return self.update_in(conn, res_type, resource["id"], resource, if_match=None)
                return Written(self.create_in(conn, resource), True)
            target = found[0]
            if resource.get("id") not in (None, target.res_id):
                raise Invalid(f"the resource's id does not match {res_type}/{target.res_id}")
            body = dict(resource, id=target.res_id)
            return self.update_in(conn, res_type, target.res_id, body, if_match=if_match)

        return self._write("update", run, [res_type])

    def delete(self, res_type: str, res_id: str, *, if_match: int | None) -> Stored | None:
        return self._write("delete", lambda c: self.delete_in(c, res_type, res_id, if_match=if_match),
                           [f"{res_type}/{res_id}"])

    # ------------------------------------------------------------ audit log (audit admin)
    def audit_search(self, params: list[tuple[str, str]]):  # noqa: ANN201
        from healthlink.access import auditlog

        self._require("AuditEvent", "search-type", audit=True)
        with self.s.db.read() as conn:
            items, nxt = auditlog.search(conn, params, default_count=self.s.default_page_size,
                                         max_count=self.s.max_page_size)
        # reading the audit log is itself audited (IHE BALP query on AuditEvent)
        self.s.audit.record(AuditRecord("search-type", self.ctx.agent(),
                                        query="AuditEvent?" + "&".join(f"{k}={v}" for k, v in params)))
        return items, nxt

    def audit_read(self, event_id: str) -> str:
        from healthlink.access import auditlog

        self._require("AuditEvent", "read", audit=True)
        with self.s.db.read() as conn:
            content = auditlog.read(conn, event_id)
        self.s.audit.record(AuditRecord("read", self.ctx.agent(), entities=[f"AuditEvent/{event_id}"]))
        return content


@functools.lru_cache(maxsize=512)
def _candidates_sql(codes: tuple[tuple[str, str], ...], studies: bool, linked: bool, sensitive: frozenset[str]):  # noqa: ANN202
    """The statement of :meth:`Repository.result_candidates` for one set of codes, built once (the
    order-time check runs it on every call; building the expression costs more than running it):
    the Person's rows of the types, coded as asked (or a study), dated since ``:since``, with
    whether a sensitive label in force is on them.  Parameters ``person`` / ``pid`` and ``since``."""
    pl, tok, dt, r = t.person_link, t.idx_token, t.idx_date, t.resource
    coded = or_(*(and_(tok.c.system == sy, tok.c.code == co) for sy, co in codes)) if codes else false()
    wanted = exists(select(1).select_from(tok).where(tok.c.rid == r.c.rid, tok.c.param == "code", coded))
    if studies:
        wanted = or_(r.c.res_type == "ImagingStudy", wanted)
    recent = exists(select(1).select_from(dt).where(dt.c.rid == r.c.rid, const_in(dt.c.param, ("date", "started")),
                                                    dt.c.high >= bindparam("since")))
    hidden = (G._label("_sensitive", sensitive, const_codes=True) if sensitive else false()).label("hidden")
    whose = (r.c.patient_id.in_(select(pl.c.patient_id).where(pl.c.person_id == bindparam("person"))) if linked
             else r.c.patient_id == bindparam("pid"))
    types = ("Observation", "DiagnosticReport", "ImagingStudy") if studies else ("Observation", "DiagnosticReport")
    return select(r, hidden).where(whose, r.c.deleted == false(), const_in(r.c.res_type, types), wanted, recent)


# the Person of Patient :pid (run on the driver's cursor by the order-time checks)
_PERSON_OF = select(t.person_link.c.person_id).where(t.person_link.c.patient_id == bindparam("pid"))
#: the current version of Patient ``:pid`` (deleted too) with its Person's id (NULL if unlinked)
_PATIENT_AND_PERSON = select(
    t.resource.c.rid, t.resource.c.res_type, t.resource.c.res_id, t.resource.c.version_id,
    t.resource.c.last_updated, t.resource.c.deleted, t.resource.c.institution_id, t.resource.c.patient_id,
    t.resource.c.content, _PERSON_OF.scalar_subquery().label("person_id"),
).where(t.resource.c.res_type == const("Patient"), t.resource.c.res_id == bindparam("pid"))


@functools.lru_cache(maxsize=8)
def _medication_sql(linked: bool, sensitive: frozenset[str]):  # noqa: ANN202
    """The statement of :meth:`Repository.medication_context`, built once: the current records of
    :data:`MEDICATION_CONTEXT_TYPES` of every Patient of the Person of Patient ``:pid`` (with
    ``linked``; otherwise of ``:pid`` alone), ordered by ``rid``, each with whether a sensitive
    label in force is on it (``hidden``) and the Person's id (``person_id``), ``part`` 1; before
    them, ``part`` 0, the current version of the Patient ``:pid`` itself if it exists (one
    statement instead of two: each costs ~0.2 ms of the server's CPU, ADR 0018).  What is current is
    judged on the index rows, as the method's docstring says: MedicationRequest status active or
    on-hold; MedicationStatement active; AllergyIntolerance with no clinical status or an active
    one, and not refuted or entered-in-error; body-weight Observations final, amended or
    corrected.  The join from ``person_link`` keeps the plan to the Person's rows, each judged by
    a few probes of the token table by ``rid`` (an ``OR`` of "the Patient's or its Person's"
    rows made PostgreSQL hash the whole token table instead)."""
    pl, pl2, r = t.person_link, t.person_link.alias("pl2"), t.resource

    def has(param: str, codes: frozenset[str] | None = None):  # noqa: ANN202
        """EXISTS an index row of ``param`` (with one of ``codes``: ``system|code`` for ``code``)."""
        tok = t.idx_token.alias()
        cond = [tok.c.rid == r.c.rid, tok.c.param == const(param)]
        if codes is not None and param == "code":
            pairs = sorted(c.split("|", 1) for c in codes)
            cond.append(or_(*(and_(tok.c.system == const(sy), tok.c.code == const(co)) for sy, co in pairs)))
        elif codes is not None:
            cond.append(const_in(tok.c.code, codes))
        return exists(select(1).select_from(tok).where(*cond))

    def of(res_type: str):  # noqa: ANN202
        return r.c.res_type == const(res_type)

    current = or_(
        and_(of("MedicationRequest"), has("status", CURRENT_REQUEST_STATUS)),
        and_(of("MedicationStatement"), has("status", CURRENT_STATEMENT_STATUS)),
        and_(of("AllergyIntolerance"),
             or_(~has("clinical-status"), has("clinical-status", frozenset({"active"}))),
             ~has("verification-status", frozenset({"refuted", "entered-in-error"}))),
        and_(of("Observation"), has("code", BODY_WEIGHT_CODES),
             has("status", frozenset({"final", "amended", "corrected"}))))
    hidden = (G._label("_sensitive", sensitive, const_codes=True) if sensitive else false()).label("hidden")
    kept = and_(r.c.deleted == false(), const_in(r.c.res_type, MEDICATION_CONTEXT_TYPES), current)
    # part 0: the Patient :pid itself, as a read of its current version gives it (deleted too)
    patient = select(r, false().label("hidden"), null().label("person_id"), literal_column("0").label("part")).where(
        r.c.res_type == const("Patient"), r.c.res_id == bindparam("pid"))
    if not linked:
        records = select(r, hidden, null().label("person_id"), literal_column("1").label("part")).where(
            r.c.patient_id == bindparam("pid"), kept)
    else:
        records = select(r, hidden, pl.c.person_id, literal_column("1").label("part")).select_from(
            pl.join(pl2, pl2.c.person_id == pl.c.person_id).join(r, and_(r.c.patient_id == pl2.c.patient_id, kept))
        ).where(pl.c.patient_id == bindparam("pid"))
    return union_all(patient, records).order_by(literal_column("part"), literal_column("rid"))


def select_patient_ids(conn: Connection, refs: list[tuple[str, str]]) -> dict:
    """(type, id) -> patient_id, for audit of bundle responses."""
    out = {}
    for rt, rid in refs:
        row = conn.execute(select(t.resource.c.patient_id).where(
            t.resource.c.res_type == rt, t.resource.c.res_id == rid)).first()
        if row:
            out[(rt, rid)] = row.patient_id
    return out
