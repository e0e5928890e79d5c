"""Linking Patients to Persons: in the unit of work of a Patient write, and in one batch
when a bulk upload ends (docs/identity.md).

Every stored Patient is linked to exactly one Person, a FHIR Person resource owned by the
platform (no institution) whose ``link`` lists its Patients with an assurance level.  The
``person_link`` table is the truth the queries use; the Person resource mirrors it, one
version per change, so its history shows every link ever made.

A new or changed Patient is linked like this:

1. its flat record (``empi.flat_record``) and blocking keys (:mod:`.keys`) are written to
   ``person_link`` / ``person_block``;
2. the records sharing a key are scored with the active model (``empi.Scorer``: the
   deterministic rule first, then Fellegi-Sunter weights), except those a reviewer kept
   apart from this one;
3. the best Person at or above the auto-link threshold gets the link; between the review
   and auto-link thresholds the Patient gets a Person of its own and a review Task names
   the candidate; below, a Person of its own.

A Patient already linked with others keeps its Person when its demographics change
(splitting is a reviewer's unmerge), and a manual link is never recomputed.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from sqlalchemy import Connection, delete, insert, or_, select, update

from healthlink.access import RequestContext
from healthlink.access.context import Actor
from healthlink.db import Database, bulk_insert
from healthlink.db import tables as t
from healthlink.empi import REGION, Model, Scorer, flat_record
from healthlink.fhir import store
from healthlink.fhir.store import Stored, now_us
from healthlink.identity.keys import block_keys
from healthlink.ledger import AuditRecord, AuditWriter

BUNDLED_MODEL = Path(__file__).parent / "data" / "model-region-v1.json"
EMPI_TASK = "https://healthlink.example.org/fhir/CodeSystem/empi-task"
ASSURANCE = {"deterministic": "level4", "manual": "level4", "new": "level4", "probabilistic": "level3"}
MAX_CANDIDATES = 200  # records scored per link; blocking keys keep the real number far lower
MODEL_TTL_S = 60.0  # how long a process keeps the active model before looking for a newer one


LINK_LOCK = 7_420_104  # PostgreSQL advisory lock key of the master patient index


def serialise(conn: Connection) -> None:
    """One linker at a time, until the transaction ends.  Two transactions linking at once
    could each found a Person for the same human (neither sees the other's rows yet), and
    two batches locking Person rows in different orders deadlocked (found by bench/ingest.py
    with two institutions uploading at once).  Every path that writes a link or a Person takes
    this lock first, so Person rows are always locked after it and never in a cycle.  On
    SQLite the write lock already serialises writers.  Re-entrant within a transaction."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({LINK_LOCK})")


def _person_body(cur: Stored | None, links: list, *, founder: dict | None = None) -> dict:
    """The Person resource in line with its ``person_link`` rows (``patient_id``, ``assurance``,
    by Patient id): the stored one's other elements kept, a new one's demographics taken from
    its ``founder`` Patient."""
    body: dict = cur.json() if cur is not None and not cur.deleted else {"resourceType": "Person"}
    body.pop("meta", None)
    if founder is not None and cur is None:
        for k in ("name", "gender", "birthDate"):
            if founder.get(k):
                body[k] = founder[k]
    body["active"] = bool(links)
    body["link"] = [{"target": {"reference": f"Patient/{r.patient_id}"}, "assurance": r.assurance} for r in links]
    if not links:
        body.pop("link")
    return body


@dataclass
class LinkOutcome:
    patient_id: str
    person_id: str
    method: str  # deterministic, probabilistic, new, manual, kept (unchanged link)
    score: float | None = None
    review: list[tuple[str, float]] = field(default_factory=list)  # (candidate Patient, probability)
    person_created: bool = False


@dataclass
class _Candidate:
    patient_id: str
    person_id: str
    record: dict


class Identity:
    """The platform's master patient index.  One per platform (``Platform.identity``)."""

    def __init__(self, db: Database, audit: AuditWriter, *, auto_link: float, review: float) -> None:
        self.db, self.audit = db, audit
        self.auto_link, self.review = auto_link, review
        self._lock = threading.Lock()
        self._scorer: tuple[float, str, Scorer] | None = None  # (loaded at, version, scorer)

    # ------------------------------------------------------------ the model
    def model(self, conn: Connection) -> Model:
        row = conn.execute(select(t.empi_model.c.content).where(t.empi_model.c.active.is_(True))
                           .order_by(t.empi_model.c.created.desc())).first()
        return Model.from_json(orjson.loads(row.content)) if row else Model.load(BUNDLED_MODEL)

    def scorer(self, conn: Connection) -> Scorer:
        with self._lock:
            cached = self._scorer
        if cached and time.monotonic() - cached[0] < MODEL_TTL_S:
            return cached[2]
        model = self.model(conn)
        if cached and cached[1] == model.version:
            scorer = cached[2]
        else:
            scorer = Scorer(model, REGION)
        with self._lock:
            self._scorer = (time.monotonic(), model.version, scorer)
        return scorer

    def store_model(self, model: Model, *, activate: bool = True) -> None:
        """Keep a trained model (``healthlink link --train``); the active one scores."""
        with self.db.write() as conn:
            if activate:
                conn.execute(update(t.empi_model).values(active=False))
            conn.execute(insert(t.empi_model).values(version=model.version, created=now_us(), active=activate,
                                                     content=orjson.dumps(model.as_json()).decode()))
        with self._lock:
            self._scorer = None

    # ------------------------------------------------------------ hooks of the repository
    def patient_written(self, conn: Connection, ctx: RequestContext, patient: Stored) -> LinkOutcome:
        """Link a created or updated Patient in the caller's transaction (whose audit record
        names the Person too: the repository adds it)."""
        return self.link_in(conn, patient)

    def patient_deleted(self, conn: Connection, ctx: RequestContext, patient: Stored) -> None:
        """A deleted Patient leaves its Person (which keeps its history)."""
        link = self._link_row(conn, patient.res_id)
        if link is None:
            return
        conn.execute(delete(t.person_block).where(t.person_block.c.patient_id == patient.res_id))
        conn.execute(delete(t.person_link).where(t.person_link.c.patient_id == patient.res_id))
        self._write_person(conn, link.person_id)

    # ------------------------------------------------------------ linking
    def link_in(self, conn: Connection, patient: Stored) -> LinkOutcome:
        serialise(conn)
        pid = patient.res_id
        body = patient.json()
        rec = dict(flat_record(body))
        rec["institution"] = patient.institution_id
        existing = self._link_row(conn, pid)
        self._index(conn, pid, rec, patient.institution_id, existing is not None)
        inst = patient.institution_id
        if existing is not None:
            if existing.method == "manual" or self._others(conn, existing.person_id, pid):
                return LinkOutcome(pid, existing.person_id, "kept", existing.score)
        scorer = self.scorer(conn)
        apart = self._kept_apart(conn, pid)
        best: dict[str, tuple[float, bool]] = {}  # person -> (probability, deterministic)
        review: list[tuple[str, float]] = []
        for cand in self._candidates(conn, pid, rec):
            if cand.patient_id in apart:
                continue
            s = scorer.score(rec, cand.record)
            p = s.probability
            if p >= self.auto_link:
                if cand.person_id not in best or p > best[cand.person_id][0]:
                    best[cand.person_id] = (p, s.deterministic)
            elif p >= self.review:
                review.append((cand.patient_id, p))
        # a Person some of whose records were kept apart from this one is not a candidate
        persons_apart = self._persons_of(conn, apart)
        best = {k: v for k, v in best.items() if k not in persons_apart}
        if best:
            person_id, (p, det) = max(best.items(), key=lambda kv: kv[1][0])
            method = "deterministic" if det else "probabilistic"
            self._set_link(conn, pid, person_id, method, p, existing, rec, inst)
            return LinkOutcome(pid, person_id, method, p)
        if existing is not None:  # alone in its Person already: it stays there
            outcome = LinkOutcome(pid, existing.person_id, "kept", existing.score, review)
        else:
            person_id = str(uuid.uuid4())
            self._set_link(conn, pid, person_id, "new", None, None, rec, inst, founder=body)
            outcome = LinkOutcome(pid, person_id, "new", None, review, person_created=True)
        for cand_id, p in sorted(review, key=lambda x: -x[1])[:5]:
            self._review_task(conn, pid, cand_id, p)
        return outcome

    def attach(self, conn: Connection, patient: Stored, person_id: str) -> LinkOutcome:
        """Link a Patient to a Person already known to be its own, as a manual link (level4,
        never recomputed): the Patient created at an institution by a health-code scan."""
        serialise(conn)
        rec = dict(flat_record(patient.json()))
        rec["institution"] = patient.institution_id
        existing = self._link_row(conn, patient.res_id)
        self._index(conn, patient.res_id, rec, patient.institution_id, existing is not None)
        self._set_link(conn, patient.res_id, person_id, "manual", None, existing, rec, patient.institution_id)
        return LinkOutcome(patient.res_id, person_id, "manual")

    def link_pending(self, *, institution: str | None = None, ctx: RequestContext | None = None,
                     chunk: int = 200) -> int:
        """Link the Patients bulk uploads queued (an institution's, or all): one transaction
        and one audit record per ``chunk``.  Returns how many were linked."""
        ctx = ctx or RequestContext(actor=Actor.system("empi"), address="local", purpose_of_use="HOPERAT")
        q = t.empi_pending.c
        done = 0
        while True:
            with self.db.write() as conn:
                stmt = select(q.patient_id).order_by(q.queued, q.patient_id).limit(chunk)
                if institution:
                    stmt = stmt.where(q.institution_id == institution)
                ids = list(conn.execute(stmt).scalars())
                if not ids:
                    return done
                current = store.read_current_many(conn, [("Patient", i) for i in ids])
                live = [s for s in current.values() if not s.deleted]
                linked = self._linked_already(conn, [s.res_id for s in live])
                # changed Patients one at a time; new ones (nearly all) as a set
                outcomes = [self.link_in(conn, s) for s in live if s.res_id in linked]
                outcomes += self._link_new(conn, [s for s in live if s.res_id not in linked])
                conn.execute(delete(t.empi_pending).where(q.patient_id.in_(ids)))
                if outcomes:
                    self._audit(conn, ctx, outcomes)
                done += len(outcomes)

    @staticmethod
    def _linked_already(conn: Connection, ids: list[str]) -> set[str]:
        c = t.person_link.c
        return set(conn.execute(select(c.patient_id).where(c.patient_id.in_(ids))).scalars()) if ids else set()

    def _link_new(self, conn: Connection, patients: list[Stored]) -> list[LinkOutcome]:
        """:meth:`link_in` for Patients not linked yet, as a set: their blocking keys and link
        rows are written with one statement each, the candidates of all of them are read
        with one query per 500 keys, and the Persons they found are created together.  The
        decisions are those of linking them one after another (a record may join a Person
        founded by an earlier record of the same set)."""
        if not patients:
            return []
        serialise(conn)
        scorer = self.scorer(conn)
        recs: dict[str, dict] = {}
        bodies: dict[str, dict] = {}
        for s in patients:
            bodies[s.res_id] = body = s.json()
            rec = dict(flat_record(body))
            rec["institution"] = s.institution_id
            recs[s.res_id] = rec
        keys = {pid: list(dict.fromkeys(block_keys(rec))) for pid, rec in recs.items()}
        b, l = t.person_block.c, t.person_link.c
        stored: dict[str, dict[str, _Candidate]] = {}  # blocking key -> linked records holding it
        seen: dict[str, _Candidate] = {}
        wanted = sorted({k for ks in keys.values() for k in ks})
        for i in range(0, len(wanted), 500):
            for r in conn.execute(select(b.key, l.patient_id, l.person_id, l.record)
                                  .join(t.person_link, l.patient_id == b.patient_id)
                                  .where(b.key.in_(wanted[i:i + 500]))):
                if r.patient_id not in seen:
                    seen[r.patient_id] = _Candidate(r.patient_id, r.person_id, orjson.loads(r.record))
                stored.setdefault(r.key, {})[r.patient_id] = seen[r.patient_id]
        apart: dict[str, set[str]] = {}
        d = t.empi_decision.c
        ids = list(recs)
        for r in conn.execute(select(d.patient_a, d.patient_b).where(
                d.kind == "keep-apart", d.reverted.is_(None), or_(d.patient_a.in_(ids), d.patient_b.in_(ids)))):
            apart.setdefault(r.patient_a, set()).add(r.patient_b)
            apart.setdefault(r.patient_b, set()).add(r.patient_a)
        kept_ids = {x for xs in apart.values() for x in xs}
        person_before = dict(conn.execute(select(l.patient_id, l.person_id).where(
            l.patient_id.in_(sorted(kept_ids)))).all()) if kept_ids else {}
        local: dict[str, dict[str, _Candidate]] = {}  # this set's records, as they are linked
        person_of: dict[str, str] = {}
        outcomes: list[LinkOutcome] = []
        reviews: list[tuple[str, str, float]] = []
        founders: dict[str, str] = {}  # new Person -> its first Patient
        for pid, rec in recs.items():
            cands: dict[str, _Candidate] = {}
            for k in keys[pid]:
                cands.update(stored.get(k, {}))
                cands.update(local.get(k, {}))
            cands.pop(pid, None)
            kept = apart.get(pid, set())
            persons_apart = {person_before[x] for x in kept if x in person_before} | \
                {person_of[x] for x in kept if x in person_of}
            best: dict[str, tuple[float, bool]] = {}
            review: list[tuple[str, float]] = []
            for cand in list(cands.values())[:MAX_CANDIDATES]:
                if cand.patient_id in kept:
                    continue
                sc = scorer.score(rec, cand.record)
                p = sc.probability
                if p >= self.auto_link and cand.person_id not in persons_apart:
                    if cand.person_id not in best or p > best[cand.person_id][0]:
                        best[cand.person_id] = (p, sc.deterministic)
                elif self.review <= p < self.auto_link:
                    review.append((cand.patient_id, p))
            if best:
                person, (p, det) = max(best.items(), key=lambda kv: kv[1][0])
                outcome = LinkOutcome(pid, person, "deterministic" if det else "probabilistic", p)
            else:
                person = str(uuid.uuid4())
                founders[person] = pid
                outcome = LinkOutcome(pid, person, "new", None, review, person_created=True)
                reviews += [(pid, c, p) for c, p in sorted(review, key=lambda x: -x[1])[:5]]
            person_of[pid] = person
            outcomes.append(outcome)
            for k in keys[pid]:
                local.setdefault(k, {})[pid] = _Candidate(pid, person, rec)
        now = now_us()
        bulk_insert(conn, t.person_block, ("key", "patient_id"),
                    [(k, pid) for pid, ks in keys.items() for k in ks], ignore_conflicts=True)
        bulk_insert(conn, t.person_link, ("patient_id", "person_id", "institution_id", "assurance", "method",
                                          "score", "record", "updated"),
                    [(o.patient_id, o.person_id, recs[o.patient_id]["institution"], ASSURANCE[o.method], o.method,
                      o.score, orjson.dumps(recs[o.patient_id]).decode(), now) for o in outcomes])
        members: dict[str, list[str]] = {}
        method = {o.patient_id: o.method for o in outcomes}
        for o in outcomes:
            members.setdefault(o.person_id, []).append(o.patient_id)
        new_persons = []
        for person, founder in founders.items():
            body: dict = {"resourceType": "Person"}
            for k in ("name", "gender", "birthDate"):
                if bodies[founder].get(k):
                    body[k] = bodies[founder][k]
            body["active"] = True
            body["link"] = [{"target": {"reference": f"Patient/{m}"}, "assurance": ASSURANCE[method[m]]}
                            for m in sorted(members[person])]
            new_persons.append((body, person))
        store.create_many(conn, new_persons, institution_id=None)
        self._write_persons(conn, sorted(set(members) - set(founders)))  # Persons that existed before
        for pid, cand, p in reviews:
            self._review_task(conn, pid, cand, p)
        return outcomes

    def match(self, conn: Connection, patient: dict) -> list[tuple[str, float, str]]:
        """``Patient/$match``: stored Patients that may be the person ``patient`` describes,
        best first, as (Patient id, probability, match grade: certain, probable, possible)."""
        rec = dict(flat_record({**patient, "id": patient.get("id") or "$match"}))
        scorer = self.scorer(conn)
        out = []
        for cand in self._candidates(conn, rec["record_id"], rec):
            p = scorer.score(rec, cand.record).probability
            grade = ("certain" if p >= self.auto_link else "probable" if p >= self.review
                     else "possible" if p >= self.review / 10 else None)
            if grade:
                out.append((cand.patient_id, p, grade))
        return sorted(out, key=lambda x: (-x[1], x[0]))

    # ------------------------------------------------------------ queries
    def person_of(self, conn: Connection, patient_id: str) -> str | None:
        row = self._link_row(conn, patient_id)
        return row.person_id if row else None

    def patients_of(self, conn: Connection, person_id: str) -> list[str]:
        c = t.person_link.c
        return list(conn.execute(select(c.patient_id).where(c.person_id == person_id).order_by(c.patient_id))
                    .scalars())

    # ------------------------------------------------------------ internals
    @staticmethod
    def _link_row(conn: Connection, patient_id: str):  # noqa: ANN205
        c = t.person_link.c
        return conn.execute(select(c.person_id, c.method, c.score).where(c.patient_id == patient_id)).first()

    @staticmethod
    def _others(conn: Connection, person_id: str, patient_id: str) -> bool:
        c = t.person_link.c
        return conn.execute(select(c.patient_id).where(c.person_id == person_id, c.patient_id != patient_id)
                            .limit(1)).first() is not None

    @staticmethod
    def _index(conn: Connection, pid: str, rec: dict, institution: str | None, linked: bool) -> None:
        conn.execute(delete(t.person_block).where(t.person_block.c.patient_id == pid))
        keys = block_keys(rec)
        if keys:
            conn.execute(insert(t.person_block), [{"key": k, "patient_id": pid} for k in dict.fromkeys(keys)])
        if linked:  # a new Patient's row is written by _set_link
            conn.execute(update(t.person_link).where(t.person_link.c.patient_id == pid).values(
                record=orjson.dumps(rec).decode(), institution_id=institution, updated=now_us()))

    @staticmethod
    def _candidates(conn: Connection, pid: str, rec: dict) -> list[_Candidate]:
        keys = block_keys(rec)
        if not keys:
            return []
        b, l = t.person_block.c, t.person_link.c
        ids = select(b.patient_id).where(b.key.in_(keys), b.patient_id != pid).distinct() \
            .limit(MAX_CANDIDATES).scalar_subquery()
        rows = conn.execute(select(l.patient_id, l.person_id, l.record).where(l.patient_id.in_(ids))).all()
        return [_Candidate(r.patient_id, r.person_id, orjson.loads(r.record)) for r in rows]

    @staticmethod
    def _kept_apart(conn: Connection, pid: str) -> set[str]:
        d = t.empi_decision.c
        rows = conn.execute(select(d.patient_a, d.patient_b).where(
            d.kind == "keep-apart", d.reverted.is_(None), or_(d.patient_a == pid, d.patient_b == pid))).all()
        return {r.patient_b if r.patient_a == pid else r.patient_a for r in rows}

    @staticmethod
    def _persons_of(conn: Connection, patient_ids: Iterable[str]) -> set[str]:
        ids = list(patient_ids)
        if not ids:
            return set()
        c = t.person_link.c
        return set(conn.execute(select(c.person_id).where(c.patient_id.in_(ids))).scalars())

    def _set_link(self, conn: Connection, pid: str, person_id: str, method: str, score: float | None,
                  existing, rec: dict, institution: str | None, *,  # noqa: ANN001
                  founder: dict | None = None) -> None:
        c = t.person_link.c
        if existing is None:
            conn.execute(insert(t.person_link).values(
                patient_id=pid, person_id=person_id, institution_id=institution, assurance=ASSURANCE[method],
                method=method, score=score, record=orjson.dumps(rec).decode(), updated=now_us()))
        else:
            conn.execute(update(t.person_link).where(c.patient_id == pid).values(
                person_id=person_id, assurance=ASSURANCE[method], method=method, score=score, updated=now_us()))
            if existing.person_id != person_id:
                self._write_person(conn, existing.person_id)
        self._write_person(conn, person_id, founder=founder)

    def _write_person(self, conn: Connection, person_id: str, *, founder: dict | None = None) -> Stored:
        """Bring the Person resource in line with ``person_link`` (one new version)."""
        serialise(conn)
        c = t.person_link.c
        links = conn.execute(select(c.patient_id, c.assurance).where(c.person_id == person_id)
                             .order_by(c.patient_id)).all()
        cur = store.read_current(conn, "Person", person_id, for_update=True)
        body = _person_body(cur, links, founder=founder)
        if cur is None:
            return store.create(conn, body, institution_id=None, res_id=person_id)
        return store.update(conn, cur, body)

    @staticmethod
    def _write_persons(conn: Connection, person_ids: list[str]) -> None:
        """:meth:`_write_person` for many Persons, one statement per table (a bulk upload's
        Patients joining Persons of earlier uploads); the caller holds :func:`serialise`."""
        c = t.person_link.c
        creates: list[tuple[dict, str | None]] = []
        updates: list[tuple[Stored, dict]] = []
        for i in range(0, len(person_ids), 500):
            chunk = person_ids[i:i + 500]
            links: dict[str, list] = {p: [] for p in chunk}
            for r in conn.execute(select(c.person_id, c.patient_id, c.assurance).where(c.person_id.in_(chunk))
                                  .order_by(c.person_id, c.patient_id)):
                links[r.person_id].append(r)
            current = store.read_current_many(conn, [("Person", p) for p in chunk])
            for person_id in chunk:
                cur = current.get(("Person", person_id))
                body = _person_body(cur, links[person_id])
                if cur is None:
                    creates.append((body, person_id))
                else:
                    updates.append((cur, body))
        store.update_many(conn, updates)
        store.create_many(conn, creates, institution_id=None)

    def _review_task(self, conn: Connection, pid: str, candidate: str, p: float) -> None:
        store.create(conn, {
            "resourceType": "Task", "status": "requested", "intent": "proposal",
            "code": {"coding": [{"system": EMPI_TASK, "code": "possible-duplicate",
                                 "display": "Possible duplicate person"}]},
            "focus": {"reference": f"Patient/{pid}"}, "for": {"reference": f"Patient/{pid}"},
            "authoredOn": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "input": [{"type": {"coding": [{"system": EMPI_TASK, "code": "candidate"}]},
                       "valueReference": {"reference": f"Patient/{candidate}"}},
                      {"type": {"coding": [{"system": EMPI_TASK, "code": "match-probability"}]},
                       "valueDecimal": round(p, 6)}],
        }, institution_id=None)

    def _audit(self, conn: Connection, ctx: RequestContext, outcomes: list[LinkOutcome]) -> None:
        self.audit.write_in(conn, AuditRecord(
            subtype="empi-link", agent=ctx.agent(), patients={o.patient_id for o in outcomes},
            entities=list(dict.fromkeys(e for o in outcomes for e in (f"Person/{o.person_id}",
                                                                      f"Patient/{o.patient_id}"))),
            outcome_desc="; ".join(f"Patient/{o.patient_id} -> Person/{o.person_id} ({o.method}"
                                   + (f", p={o.score:.4f}" if o.score is not None else "") + ")"
                                   for o in outcomes[:20])
            + (f"; … {len(outcomes) - 20} more" if len(outcomes) > 20 else "")))
