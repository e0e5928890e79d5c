"""The step after a health-code scan: a Person -> the scanning institution's own Patient
(``healthlink.healthcode.LocalPatientResolver``, docs/healthcode.md).

:class:`LocalPatients` (``Platform.local_patients``):

* :meth:`~LocalPatients.local_patient` / :meth:`~LocalPatients.resolve` — the Patient at an
  institution linked to a Person; if there is none, one is created from the Person's
  demographics (name, gender, birth date, the valid resident ID of a linked record) through
  the scoped :class:`~healthlink.access.Repository` acting as ``ctx.actor`` (role and scope
  checks apply) and attached to the Person as a manual link (level4) — in one transaction with
  its audit record.  Finding an existing Patient is an access to patient data and is audited
  too.  Idempotent: the Person's row is locked while it looks, so two scans give one Patient.
* :meth:`~LocalPatients.scan` — the same for a presented text, through a resolver registry
  (``healthlink.healthcode.ResolverRegistry``); a refused code is audited as well.
* :meth:`~LocalPatients.code_for` — a fresh health code for a Patient of the actor's own
  institution (the patient's code page), audited.

This module does not import :mod:`healthlink.healthcode` (a layer above): the registry and
the code service are taken by shape (the Protocols below).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import orjson
from sqlalchemy import Connection, select

from healthlink.access import Repository, RequestContext, Services
from healthlink.access import roles as R
from healthlink.access.scopes import scopes_allow
from healthlink.db import tables as t
from healthlink.errors import Conflict, Forbidden, HealthLinkError, Invalid, NotFound
from healthlink.fhir import store
from healthlink.fhir.identifiers import RESIDENT_ID_SYSTEM
from healthlink.fhir.store import Stored
from healthlink.fhir.validation import validate_resource
from healthlink.identity.service import Identity, serialise
from healthlink.ledger import AuditRecord

SCAN = "health-code-scan"  # AuditEvent subtype of a scan (found, created or refused)
ISSUE = "health-code-issue"  # AuditEvent subtype of a code shown for a Patient
MAX_MERGE_HOPS = 8  # a merged-away Person resolves to the Person it was merged into


class _Presented(Protocol):
    person_id: str
    credential: str


class _Registry(Protocol):
    def resolve(self, text: str, *, now: datetime | None = None) -> _Presented: ...


class _Verified(Protocol):
    key_id: str
    nonce: str


class _Issued(Protocol):
    text: str
    expires_at: datetime

    def svg(self) -> str: ...


class _Codes(Protocol):
    def issue(self, person_id: str) -> _Issued: ...

    def verify(self, text: str) -> _Verified: ...


@dataclass(frozen=True)
class LocalPatient:
    patient_id: str
    person_id: str  # the Person (the surviving one, if the scanned Person was merged away)
    institution_id: str
    created: bool


@dataclass(frozen=True)
class PatientCode:
    """A fresh code shown for a Patient: whose it is and the code (``HealthCodes.issue``'s)."""

    patient_id: str
    person_id: str
    name: str | None  # the Patient's name as recorded, for the page
    code: _Issued


class LocalPatients:
    """Person -> the institution's own Patient, found or created and linked."""

    def __init__(self, services: Services, identity: Identity) -> None:
        self.services, self.identity = services, identity

    # ------------------------------------------------------------ LocalPatientResolver
    def local_patient(self, ctx: RequestContext, person_id: str, *, institution_id: str) -> str:
        return self.resolve(ctx, person_id, institution_id=institution_id).patient_id

    def scan(self, ctx: RequestContext, text: str, *, registry: _Registry, institution_id: str | None = None,
             now: datetime | None = None) -> LocalPatient:
        """A presented text (a scanned health code) -> this institution's Patient.  The actor
        is checked before the text is read; a refused text is audited (outcome 4)."""
        inst = institution_id or ctx.actor.institution_id
        try:
            self._check(ctx, inst)
            ref = registry.resolve(text, now=now)
        except HealthLinkError as exc:
            self._refused(ctx, SCAN, exc, [])
            raise
        return self.resolve(ctx, ref.person_id, institution_id=inst or "", credential=ref.credential)

    def resolve(self, ctx: RequestContext, person_id: str, *, institution_id: str,
                credential: str | None = None) -> LocalPatient:
        """The Patient at ``institution_id`` linked to the Person; created and linked if none.

        ``credential`` (what was presented, e.g. ``key <kid> nonce <n>``, never the code) goes
        into the audit record."""
        try:
            self._check(ctx, institution_id)
            with self.services.db.write() as conn:
                serialise(conn)  # the master patient index: one linker at a time
                person, body, note = self._person(conn, person_id)
                found = self._existing(conn, person, institution_id)
                if found is not None:
                    self.services.audit.write_in(conn, self._record(
                        ctx, found, person, f"found Patient/{found.res_id}", note, credential))
                    return LocalPatient(found.res_id, person, institution_id, False)
                patient = self._demographics(conn, person, body, institution_id)
                validate_resource(patient, expected_type="Patient")
                s = Repository(ctx, self.services).create_in(conn, patient, link=False)
                self.identity.attach(conn, s, person)
                self.services.audit.write_in(conn, self._record(
                    ctx, s, person, f"created Patient/{s.res_id} and linked it (manual, level4)", note,
                    credential))
                return LocalPatient(s.res_id, person, institution_id, True)
        except HealthLinkError as exc:  # after the rollback: the audit writer needs the write lock
            self._refused(ctx, SCAN, exc, [f"Person/{person_id}"])
            raise

    # ------------------------------------------------------------ the patient's code page
    def code_for(self, ctx: RequestContext, patient_id: str, codes: _Codes) -> PatientCode:
        """A fresh code for a Patient of the actor's own institution; 404 for any other
        Patient.  Audited (subtype ``health-code-issue``) before the code is returned."""
        ents = [f"Patient/{patient_id}"]
        try:
            a = ctx.actor
            if not (R.allowed(a.roles, "Patient", "r") and scopes_allow(a.scopes, "Patient", "r")):
                raise Forbidden("your role and scopes do not allow reading Patients")
            with self.services.db.read() as conn:
                s = store.read_current(conn, "Patient", patient_id) if len(patient_id) <= 64 else None
                if s is None or s.deleted or a.institution_id is None or s.institution_id != a.institution_id:
                    raise NotFound(f"Patient/{patient_id} is not known")
                person = self.identity.person_of(conn, patient_id)
                name = _name(s.json())
            if person is None:
                raise Conflict(f"Patient/{patient_id} is not linked to a Person yet (records of a bulk "
                               "upload are linked when the upload ends); try again later")
            ents.append(f"Person/{person}")
            issued = codes.issue(person)
            code = codes.verify(issued.text)
        except HealthLinkError as exc:
            self._refused(ctx, ISSUE, exc, ents)
            raise
        self.services.audit.record(AuditRecord(
            subtype=ISSUE, agent=ctx.agent(), patients={patient_id}, entities=ents,
            outcome_desc=f"health code for Person/{person}: key {code.key_id} nonce {code.nonce}, "
                         f"expires {issued.expires_at.isoformat()}"))
        return PatientCode(patient_id, person, name, issued)

    # ------------------------------------------------------------ internals
    @staticmethod
    def _check(ctx: RequestContext, institution_id: str | None) -> None:
        a = ctx.actor
        if not institution_id:
            raise Invalid("no institution to resolve the patient at: the actor belongs to none")
        if not (R.allowed(a.roles, "Patient", "c") and scopes_allow(a.scopes, "Patient", "c")
                and R.allowed(a.roles, "Patient", "r") and scopes_allow(a.scopes, "Patient", "r")):
            raise Forbidden("your role and scopes do not allow registering patients, which a health-code "
                            "scan may do")
        if a.institution_id != institution_id:
            raise Forbidden(f"you may register patients at your own institution only, not at {institution_id}")

    @staticmethod
    def _person(conn: Connection, person_id: str) -> tuple[str, dict, str | None]:
        """(Person id, its body, a note) of the active Person; a Person merged away resolves to
        the Person it was merged into.  NotFound otherwise."""
        first, note = person_id, None
        d = t.empi_decision.c
        for _ in range(MAX_MERGE_HOPS):
            cur = store.read_current(conn, "Person", person_id, for_update=True)
            if cur is None or cur.deleted:
                break
            body = cur.json()
            if body.get("active"):
                return person_id, body, note
            survivor = conn.execute(select(d.person_a).where(
                d.kind == "merge", d.person_b == person_id, d.reverted.is_(None), d.part_of.is_(None))
                .order_by(d.id.desc()).limit(1)).scalar()
            if not survivor:
                break
            note = f"Person/{first} was merged into Person/{survivor}"
            person_id = survivor
        raise NotFound(f"Person/{first} is not known or no longer active")

    @staticmethod
    def _existing(conn: Connection, person_id: str, institution_id: str) -> Stored | None:
        c = t.person_link.c
        ids = conn.execute(select(c.patient_id).where(c.person_id == person_id, c.institution_id == institution_id)
                           .order_by(c.patient_id)).scalars().all()
        for pid in ids:
            s = store.read_current(conn, "Patient", pid)
            if s is not None and not s.deleted and s.institution_id == institution_id:
                return s
        return None

    @staticmethod
    def _demographics(conn: Connection, person_id: str, person: dict, institution_id: str) -> dict:
        """A new Patient from the Person: name, gender, birth date, and the valid resident ID
        its linked records agree on most."""
        body: dict = {"resourceType": "Patient", "active": True}
        for k in ("name", "gender", "birthDate"):
            if person.get(k):
                body[k] = person[k]
        c = t.person_link.c
        ids: Counter[str] = Counter()
        for raw in conn.execute(select(c.record).where(c.person_id == person_id).order_by(c.patient_id)).scalars():
            rec = orjson.loads(raw)
            if rec.get("resident_id") and rec.get("resident_id_valid"):
                ids[rec["resident_id"]] += 1
        if ids:
            body["identifier"] = [{"use": "official", "system": RESIDENT_ID_SYSTEM, "value": ids.most_common(1)[0][0]}]
        body["managingOrganization"] = {"reference": f"Organization/{institution_id}"}
        return body

    @staticmethod
    def _record(ctx: RequestContext, patient: Stored, person: str, what: str, note: str | None,
                credential: str | None) -> AuditRecord:
        desc = f"{what} at {patient.institution_id} for Person/{person}"
        desc += f" ({note})" if note else ""
        desc += f"; presented: {credential}" if credential else ""
        return AuditRecord(subtype=SCAN, agent=ctx.agent(), patients={patient.res_id},
                           entities=[f"Patient/{patient.res_id}", f"Person/{person}"], outcome_desc=desc)

    def _refused(self, ctx: RequestContext, subtype: str, exc: HealthLinkError, entities: list[str]) -> None:
        try:
            self.services.audit.record(AuditRecord(
                subtype=subtype, agent=ctx.agent(), outcome="minor" if exc.status < 500 else "serious",
                outcome_desc=f"{exc.status} {exc.message}", entities=entities))
        except HealthLinkError:
            pass  # the original error is what the client must see


def _name(resource: dict) -> str | None:
    for n in resource.get("name") or []:
        text = n.get("text") or "".join([n.get("family") or ""] + list(n.get("given") or []))
        if text:
            return text
    return None
