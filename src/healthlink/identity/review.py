"""EMPI review: the queue of possible-duplicate Tasks, a pair explained field by field, and
the reviewer's actions (docs/identity.md, "Review").

* :meth:`Review.review_queue` — open possible-duplicate Tasks, newest first, paged;
* :meth:`Review.explain` — both flat records side by side, each field's comparison level and
  weight, the total match weight and probability;
* the actions :meth:`Review.link`, :meth:`Review.keep_apart`, :meth:`Review.merge`,
  :meth:`Review.unmerge` and :meth:`Review.undo` — each one transaction with one audit
  record naming the Persons and Patients, done by an actor;
* :func:`manual_constraints` — the must-link and cannot-link pairs every re-linking respects
  (the real-time linker reads the keep-apart rows itself; the batch calls this).

Each action is a header row of ``empi_decision`` (kind link, keep-apart, merge or unmerge)
holding, in ``detail``, the links of every Patient it moved before and after, the Tasks it
closed and the earlier decisions it superseded, so that :meth:`Review.undo` restores the
previous links exactly.  Pair constraints are rows of kind ``link`` / ``keep-apart``: a link
or keep-apart action is one itself; a merge adds a ``link`` row per moved Patient and an
unmerge a ``keep-apart`` row per record left behind (``part_of`` the header).  Every change
of a Person's links is a new version of the Person; nothing is deleted, so history is kept.

Only roles with ``empi_review`` (the EMPI reviewer, the platform) pass the ``ctx`` methods;
the others are refused with 403, and the refusal is audited.  The ``conn`` methods
(:meth:`review_queue`, :meth:`explain`, :meth:`person_view`) check nothing: they are for
callers that have checked (the ``ctx`` methods, the batch).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import orjson
from sqlalchemy import Connection, insert, or_, select, update

from healthlink.access import RequestContext
from healthlink.access import roles as R
from healthlink.access.scopes import scopes_allow
from healthlink.db import tables as t
from healthlink.empi import flat_record
from healthlink.errors import Conflict, Forbidden, HealthLinkError, Invalid, NotFound
from healthlink.fhir import search as S
from healthlink.fhir import store
from healthlink.fhir.store import now_us
from healthlink.identity.service import ASSURANCE, EMPI_TASK, Identity, serialise
from healthlink.ledger import AuditRecord

TASK_QUERY = f"Task?code={EMPI_TASK}|possible-duplicate&status=requested"
CONSTRAINTS = ("link", "keep-apart")
# the flat-record fields each comparison looks at, shown side by side
COMPARED = {"name": ("name", "name_pinyin"), "birth_date": ("birth_date",), "sex": ("sex",),
            "resident_id": ("resident_id",), "phone": ("phone",), "address": ("address", "county")}
SHOWN = ("name", "name_pinyin", "name_key", "birth_date", "sex", "resident_id", "resident_id_valid", "phone",
         "county", "address", "institution")


@dataclass
class QueueItem:
    task_id: str
    authored: str | None
    patient: str  # the Patient the Task is for
    candidate: str  # the stored Patient it may duplicate
    probability: float | None
    patient_record: dict | None  # flat records (name, birth date, ...), None if no longer linked
    candidate_record: dict | None


@dataclass
class QueuePage:
    items: list[QueueItem]
    total: int | None
    next_cursor: str | None


@dataclass
class FieldExplanation:
    comparison: str
    level: str  # the comparison level's label (empi.comparisons)
    weight: float  # log2 Bayes factor: positive for agreement, negative against, 0 when missing
    a: str | None
    b: str | None


@dataclass
class Decision:
    id: int
    kind: str
    patient_a: str
    patient_b: str
    person_a: str | None
    person_b: str | None
    actor: str
    created: int
    reverted: int | None
    reverted_by: str | None
    moved: dict[str, list[str | None]] = field(default_factory=dict)  # Patient -> [Person before, after]
    tasks: list[str] = field(default_factory=list)
    superseded: list[int] = field(default_factory=list)


@dataclass
class Explanation:
    a: dict  # flat record of Patient a (and its institution)
    b: dict
    person_a: str | None
    person_b: str | None
    fields: list[FieldExplanation]
    prior_weight: float
    match_weight: float
    match_probability: float
    deterministic: bool  # linked by the deterministic rule (probability 1)
    probability: float
    auto_link: float
    review: float
    decisions: list[Decision]  # decisions in force between the two


@dataclass
class PersonView:
    person_id: str
    version: str | None
    active: bool
    name: str | None
    patients: list[dict]  # flat record + person_link's method, assurance, score
    decisions: list[Decision]


@dataclass
class ManualConstraints:
    must_link: list[tuple[str, str]]
    cannot_link: list[tuple[str, str]]


def manual_constraints(conn: Connection) -> ManualConstraints:
    """Reviewers' pair decisions in force: pairs that must end up in one Person and pairs
    that must not (``healthlink link`` respects both; the real-time linker the second)."""
    d = t.empi_decision.c
    rows = conn.execute(select(d.kind, d.patient_a, d.patient_b).where(d.kind.in_(CONSTRAINTS),
                                                                       d.reverted.is_(None))
                        .order_by(d.id)).all()
    return ManualConstraints([(r.patient_a, r.patient_b) for r in rows if r.kind == "link"],
                             [(r.patient_a, r.patient_b) for r in rows if r.kind == "keep-apart"])


def _ids(value: str, kind: str) -> str:
    v = (value or "").strip().removeprefix(f"{kind}/")
    if not v or len(v) > 64 or "/" in v:
        raise Invalid(f"'{value}' is not a {kind} id")
    return v


class Review:
    """The review queue and the reviewer's actions, on top of :class:`Identity`."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.db, self.audit = identity.db, identity.audit

    # ------------------------------------------------------------ access
    def _check(self, ctx: RequestContext, subtype: str, op: str, entities: Iterable[str] = ()) -> None:
        a = ctx.actor
        if R.may_review_identity(a.roles) and scopes_allow(a.scopes, "Person", op) \
                and scopes_allow(a.scopes, "Patient", "r"):
            return
        exc = Forbidden("only EMPI reviewers may use the review queue and its actions")
        self._refused(ctx, subtype, exc, entities)
        raise exc

    def _refused(self, ctx: RequestContext, subtype: str, exc: HealthLinkError, entities: Iterable[str]) -> None:
        try:
            self.audit.record(AuditRecord(subtype=subtype, agent=ctx.agent(),
                                          outcome="minor" if exc.status < 500 else "serious",
                                          outcome_desc=f"{exc.status} {exc.message}", entities=list(entities)))
        except HealthLinkError:
            pass  # the original error is what the client must see

    # ------------------------------------------------------------ reads (checked, audited)
    def queue(self, ctx: RequestContext, *, count: int = 20, cursor: str | None = None) -> QueuePage:
        self._check(ctx, "search-type", "r", ["Task"])
        with self.db.read() as conn:
            page = self.review_queue(conn, count=count, cursor=cursor)
        pids = {p for i in page.items for p in (i.patient, i.candidate)}
        self.audit.record(AuditRecord("search-type", ctx.agent(), patients=pids, query=TASK_QUERY,
                                      entities=[f"Task/{i.task_id}" for i in page.items]))
        return page

    def explain_pair(self, ctx: RequestContext, patient_a: str, patient_b: str) -> Explanation:
        a, b = _ids(patient_a, "Patient"), _ids(patient_b, "Patient")
        ents = [f"Patient/{a}", f"Patient/{b}"]
        self._check(ctx, "read", "r", ents)
        try:
            with self.db.read() as conn:
                ex = self.explain(conn, a, b)
        except HealthLinkError as exc:
            self._refused(ctx, "read", exc, ents)
            raise
        persons = [f"Person/{p}" for p in dict.fromkeys((ex.person_a, ex.person_b)) if p]
        self.audit.record(AuditRecord("read", ctx.agent(), patients={a, b}, entities=ents + persons,
                                      query=f"empi/explain?a={a}&b={b}"))
        return ex

    def person(self, ctx: RequestContext, person_id: str) -> PersonView:
        pid = _ids(person_id, "Person")
        self._check(ctx, "read", "r", [f"Person/{pid}"])
        try:
            with self.db.read() as conn:
                view = self.person_view(conn, pid)
        except HealthLinkError as exc:
            self._refused(ctx, "read", exc, [f"Person/{pid}"])
            raise
        pats = [p["record_id"] for p in view.patients]
        self.audit.record(AuditRecord("read", ctx.agent(), patients=set(pats),
                                      entities=[f"Person/{pid}"] + [f"Patient/{p}" for p in pats]))
        return view

    # ------------------------------------------------------------ reads (unchecked)
    def review_queue(self, conn: Connection, *, count: int = 20, cursor: str | None = None) -> QueuePage:
        """Open possible-duplicate Tasks (owned by the platform), newest first."""
        params = [("code", f"{EMPI_TASK}|possible-duplicate"), ("status", "requested"),
                  ("_sort", "-authored-on,-_lastUpdated"), ("_count", str(max(1, min(count, 100)))),
                  ("_total", "accurate")]
        if cursor:
            params.append(("_cursor", cursor))
        page = S.search(conn, "Task", params, visible=lambda rt, op="s": t.resource.c.institution_id.is_(None))
        items = []
        for s in page.matches:
            task = s.json()
            pat, cand, p = _task_pair(task)
            items.append(QueueItem(s.res_id, task.get("authoredOn"), pat or "", cand or "", p, None, None))
        recs = self._records(conn, {x for i in items for x in (i.patient, i.candidate)})
        for i in items:
            i.patient_record, i.candidate_record = recs.get(i.patient), recs.get(i.candidate)
        return QueuePage(items, page.total, page.next_cursor)

    def explain(self, conn: Connection, patient_a: str, patient_b: str) -> Explanation:
        """Both records side by side and how the active model scores them."""
        if patient_a == patient_b:
            raise Invalid("a pair needs two different Patients")
        ra, rb = self._current_record(conn, patient_a), self._current_record(conn, patient_b)
        scorer = self.identity.scorer(conn)
        s = scorer.score(ra, rb)
        fields = [FieldExplanation(f.comparison, f.level, f.weight, _shown(ra, f.comparison),
                                   _shown(rb, f.comparison)) for f in s.fields]
        d = t.empi_decision.c
        rows = conn.execute(select(t.empi_decision).where(
            d.reverted.is_(None), d.kind.in_(CONSTRAINTS),
            or_((d.patient_a == patient_a) & (d.patient_b == patient_b),
                (d.patient_a == patient_b) & (d.patient_b == patient_a))).order_by(d.id)).all()
        return Explanation({k: ra.get(k) for k in SHOWN}, {k: rb.get(k) for k in SHOWN},
                           self.identity.person_of(conn, patient_a), self.identity.person_of(conn, patient_b),
                           fields, scorer.prior_weight, s.match_weight, s.match_probability, s.deterministic,
                           s.probability, self.identity.auto_link, self.identity.review,
                           [_decision(r) for r in rows])

    def person_view(self, conn: Connection, person_id: str) -> PersonView:
        cur = store.read_current(conn, "Person", person_id)
        if cur is None or cur.deleted:
            raise NotFound(f"Person/{person_id} is not known")
        body = cur.json()
        c = t.person_link.c
        rows = conn.execute(select(c.patient_id, c.method, c.assurance, c.score, c.record)
                            .where(c.person_id == person_id).order_by(c.patient_id)).all()
        patients = []
        for r in rows:
            rec = orjson.loads(r.record)
            patients.append({**{k: rec.get(k) for k in SHOWN}, "record_id": r.patient_id, "method": r.method,
                             "assurance": r.assurance, "score": r.score})
        d = t.empi_decision.c
        ids = [r.patient_id for r in rows]
        conds = [d.person_a == person_id, d.person_b == person_id, d.detail.contains(f'"{person_id}"')]
        if ids:
            conds += [d.patient_a.in_(ids), d.patient_b.in_(ids)]
        decisions = conn.execute(select(t.empi_decision).where(d.part_of.is_(None), or_(*conds))
                                 .order_by(d.id.desc()).limit(100)).all()
        names = body.get("name") or []
        name = names[0].get("text") or "".join([names[0].get("family", "")] + names[0].get("given", [])) \
            if names else None
        return PersonView(person_id, str(cur.version_id), bool(body.get("active")), name, patients,
                          [_decision(r) for r in decisions])

    # ------------------------------------------------------------ actions
    def link(self, ctx: RequestContext, patient_a: str, patient_b: str) -> Decision:
        """Put Patient b into Patient a's Person (a manual link; it sticks)."""
        a, b = _ids(patient_a, "Patient"), _ids(patient_b, "Patient")

        def run(conn: Connection) -> tuple[Decision, AuditRecord]:
            if a == b:
                raise Invalid("link needs two different Patients")
            rows = self._link_rows(conn, [a, b])
            target = rows[a][0]
            recs = self._records(conn, [a, b])
            p = self.identity.scorer(conn).score(recs[a], recs[b]).probability
            changes = {b: [target, ASSURANCE["manual"], "manual", p]}
            return self._commit(conn, ctx, "link", a, b, changes, close=({frozenset((a, b))}, "completed"))

        return self._act(ctx, "empi-manual-link", run, [f"Patient/{a}", f"Patient/{b}"])

    def keep_apart(self, ctx: RequestContext, patient_a: str, patient_b: str) -> Decision:
        """Record that a and b are different people; if they share a Person, b leaves it for a
        new Person of its own."""
        a, b = _ids(patient_a, "Patient"), _ids(patient_b, "Patient")

        def run(conn: Connection) -> tuple[Decision, AuditRecord]:
            if a == b:
                raise Invalid("keep apart needs two different Patients")
            rows = self._link_rows(conn, [a, b])
            changes = {}
            if rows[a][0] == rows[b][0]:
                changes[b] = [str(uuid.uuid4()), ASSURANCE["manual"], "manual", None]
            return self._commit(conn, ctx, "keep-apart", a, b, changes, watch=[a, b],
                                close=({frozenset((a, b))}, "rejected"))

        return self._act(ctx, "empi-keep-apart", run, [f"Patient/{a}", f"Patient/{b}"])

    def merge(self, ctx: RequestContext, person_x: str, person_y: str) -> Decision:
        """Move every Patient of Person y into Person x; y stays, inactive and without links."""
        x, y = _ids(person_x, "Person"), _ids(person_y, "Person")

        def run(conn: Connection) -> tuple[Decision, AuditRecord]:
            if x == y:
                raise Invalid("merge needs two different Persons")
            keep, moved = self.identity.patients_of(conn, x), self.identity.patients_of(conn, y)
            for pid, pats in ((x, keep), (y, moved)):
                if not pats:
                    if store.read_current(conn, "Person", pid) is None:
                        raise NotFound(f"Person/{pid} is not known")
                    raise Conflict(f"Person/{pid} has no Patients (it was merged or emptied)")
            recs = self._records(conn, keep + moved)
            scorer = self.identity.scorer(conn)
            changes = {m: [x, ASSURANCE["manual"], "manual",
                           max(scorer.score(recs[k], recs[m]).probability for k in keep)] for m in moved}
            pairs = {frozenset((k, m)) for k in keep for m in moved}
            return self._commit(conn, ctx, "merge", keep[0], moved[0], changes, person_a=x, person_b=y,
                                parts=[("link", keep[0], m) for m in moved], close=(pairs, "completed"))

        return self._act(ctx, "empi-merge", run, [f"Person/{x}", f"Person/{y}"])

    def unmerge(self, ctx: RequestContext, patient: str) -> Decision:
        """The Patient leaves its Person, kept apart from the records that stay: back to the
        Person a reviewer's link or merge took it from, else to a new Person."""
        p = _ids(patient, "Patient")

        def run(conn: Connection) -> tuple[Decision, AuditRecord]:
            current = self._link_rows(conn, [p])[p]
            others = [o for o in self.identity.patients_of(conn, current[0]) if o != p]
            if not others:
                raise Conflict(f"Patient/{p} is the only record of Person/{current[0]}: nothing to unmerge")
            back = self._came_from(conn, p, current[0])
            if back is None or store.read_current(conn, "Person", back[0]) is None:
                back = [str(uuid.uuid4()), ASSURANCE["manual"], "manual", None]
            return self._commit(conn, ctx, "unmerge", p, others[0], {p: back}, person_a=current[0],
                                parts=[("keep-apart", p, o) for o in others],
                                close=({frozenset((p, o)) for o in others}, "rejected"))

        return self._act(ctx, "empi-unmerge", run, [f"Patient/{p}"])

    def undo(self, ctx: RequestContext, decision_id: int | str) -> Decision:
        """Revert a decision: its links are restored exactly as they were before it, the
        decisions it superseded are in force again and the Tasks it closed are reopened."""
        try:
            did = int(decision_id)
        except (TypeError, ValueError):
            raise Invalid(f"'{decision_id}' is not a decision id") from None
        if not 0 < did < 2**63:
            raise Invalid(f"'{decision_id}' is not a decision id")

        def run(conn: Connection) -> tuple[Decision, AuditRecord]:
            d = t.empi_decision.c
            row = conn.execute(select(t.empi_decision).where(d.id == did)).first()
            if row is None:
                raise NotFound(f"EMPI decision {did} is not known")
            if row.part_of is not None:
                row = conn.execute(select(t.empi_decision).where(d.id == row.part_of)).one()
            if row.reverted is not None:
                raise Conflict(f"EMPI decision {row.id} was already undone or superseded")
            detail = orjson.loads(row.detail or "{}")
            before, after = detail.get("before", {}), detail.get("after", {})
            now = self._link_rows(conn, list(after), missing_ok=True)
            changed = sorted(pid for pid in after if now.get(pid) != after[pid])
            if changed:
                raise Conflict(f"the links of {', '.join('Patient/' + x for x in changed)} changed after "
                               f"decision {row.id}; undo the later decisions first")
            self._apply(conn, before)
            persons = _touched(before, after)
            stamp = now_us()
            conn.execute(update(t.empi_decision).where(or_(d.id == row.id, d.part_of == row.id))
                         .values(reverted=stamp, reverted_by=ctx.actor.subject))
            if detail.get("superseded"):
                conn.execute(update(t.empi_decision).where(d.id.in_(detail["superseded"]))
                             .values(reverted=None, reverted_by=None))
            for task_id in detail.get("tasks", []):
                self._set_task(conn, task_id, "requested",
                               f"reopened: decision {row.id} ({row.kind}) undone by {ctx.actor.subject}")
            for person in persons:
                self.identity._write_person(conn, person)
            dec = _decision(conn.execute(select(t.empi_decision).where(d.id == row.id)).one())
            return dec, AuditRecord(
                "empi-undo", ctx.agent(), patients=set(before),
                entities=[f"Person/{x}" for x in sorted(persons)] + [f"Patient/{x}" for x in sorted(before)],
                outcome_desc=f"EMPI decision {row.id} ({row.kind}) undone; links restored: " + _moves(after, before))

        return self._act(ctx, "empi-undo", run, [f"EmpiDecision/{did}"])

    # ------------------------------------------------------------ internals
    def _act(self, ctx: RequestContext, subtype: str, run: Callable[[Connection], tuple[Decision, AuditRecord]],
             entities: list[str]) -> Decision:
        self._check(ctx, subtype, "u", entities)
        try:
            with self.db.write() as conn:
                serialise(conn)  # the master patient index: one linker at a time
                dec, rec = run(conn)
                self.audit.write_in(conn, rec)
                return dec
        except HealthLinkError as exc:
            self._refused(ctx, subtype, exc, entities)
            raise

    def _commit(self, conn: Connection, ctx: RequestContext, kind: str, a: str, b: str,
                changes: dict[str, list], *, person_a: str | None = None, person_b: str | None = None,
                parts: list[tuple[str, str, str]] = (), watch: list[str] = (),  # type: ignore[assignment]
                close: tuple[set[frozenset[str]], str]) -> tuple[Decision, AuditRecord]:
        """Apply ``changes`` (Patient -> [Person, assurance, method, score]), record the decision
        with what undo needs, supersede contrary decisions, close the pair's Tasks, write the
        Persons and prepare the audit record."""
        before = self._link_rows(conn, list(changes))
        self._apply(conn, changes)
        after = self._link_rows(conn, list(changes))
        d = t.empi_decision.c
        actor, stamp = ctx.actor.subject, now_us()
        res = conn.execute(insert(t.empi_decision).values(kind=kind, patient_a=a, patient_b=b, actor=actor,
                                                          created=stamp, person_a=person_a, person_b=person_b))
        did = int(res.inserted_primary_key[0])
        if parts:
            conn.execute(insert(t.empi_decision), [
                {"kind": k, "patient_a": x, "patient_b": y, "actor": actor, "created": stamp, "part_of": did}
                for k, x, y in parts])
        superseded = self._supersede(conn, did, list(changes) + list(watch), actor)
        tasks = self._close_tasks(conn, close[0], close[1], f"{kind} by {actor} (decision {did})")
        detail = {"before": before, "after": after, "tasks": tasks, "superseded": superseded}
        conn.execute(update(t.empi_decision).where(d.id == did).values(detail=orjson.dumps(detail).decode()))
        founders = {v[0]: pid for pid, v in changes.items() if store.read_current(conn, "Person", v[0]) is None}
        for person in _touched(before, after):
            founder = store.read_current(conn, "Patient", founders[person]).json() if person in founders else None
            self.identity._write_person(conn, person, founder=founder)
        pats = sorted({a, b} | set(changes))
        all_persons = sorted({v[0] for v in (*before.values(), *after.values())} | {p for p in (person_a, person_b) if p})
        rec = AuditRecord(
            f"empi-{'manual-link' if kind == 'link' else kind}", ctx.agent(), patients=set(pats),
            entities=[f"Person/{p}" for p in all_persons] + [f"Patient/{p}" for p in pats],
            outcome_desc=f"EMPI decision {did} ({kind} Patient/{a}, Patient/{b}"
                         + (f"; Person/{person_a} <- Person/{person_b}" if person_b else "") + "): "
                         + (_moves(before, after) or "no link changed"))
        return _decision(conn.execute(select(t.empi_decision).where(d.id == did)).one()), rec

    @staticmethod
    def _link_rows(conn: Connection, pids: list[str], *, missing_ok: bool = False) -> dict[str, list]:
        c = t.person_link.c
        rows = conn.execute(select(c.patient_id, c.person_id, c.assurance, c.method, c.score)
                            .where(c.patient_id.in_(pids))).all()
        out = {r.patient_id: [r.person_id, r.assurance, r.method, r.score] for r in rows}
        missing = [p for p in pids if p not in out]
        if missing and not missing_ok:
            raise NotFound(f"Patient/{missing[0]} is not known to the master patient index "
                           "(no such Patient, deleted, or not linked yet)")
        return out

    @staticmethod
    def _apply(conn: Connection, links: dict[str, list]) -> None:
        c = t.person_link.c
        old = dict(conn.execute(select(c.patient_id, c.person_id).where(c.patient_id.in_(list(links)))).all())
        for pid, (person, assurance, method, score) in links.items():
            if pid not in old:
                raise Conflict(f"Patient/{pid} was deleted; its links cannot be restored")
            conn.execute(update(t.person_link).where(c.patient_id == pid).values(
                person_id=person, assurance=assurance, method=method, score=score, updated=now_us()))

    @staticmethod
    def _records(conn: Connection, pids: Iterable[str]) -> dict[str, dict]:
        ids = list(pids)
        if not ids:
            return {}
        c = t.person_link.c
        return {r.patient_id: orjson.loads(r.record)
                for r in conn.execute(select(c.patient_id, c.record).where(c.patient_id.in_(ids))).all()}

    @staticmethod
    def _current_record(conn: Connection, pid: str) -> dict:
        s = store.read_current(conn, "Patient", pid)
        if s is None or s.deleted:
            raise NotFound(f"Patient/{pid} is not known")
        rec = dict(flat_record(s.json()))
        rec["institution"] = s.institution_id
        return rec

    @staticmethod
    def _came_from(conn: Connection, pid: str, person: str) -> list | None:
        """The links ``pid`` had before a reviewer's link or merge (still in force) put it
        into ``person``, if one did."""
        d = t.empi_decision.c
        rows = conn.execute(select(d.id, d.part_of).where(d.kind == "link", d.patient_b == pid,
                                                          d.reverted.is_(None)).order_by(d.id.desc())).all()
        for r in rows:
            head = conn.execute(select(d.detail).where(d.id == (r.part_of or r.id))).scalar()
            detail = orjson.loads(head or "{}")
            before, after = detail.get("before", {}).get(pid), detail.get("after", {}).get(pid)
            if after and before and after[0] == person and before[0] != person:
                return before
        return None

    def _supersede(self, conn: Connection, did: int, pids: list[str], actor: str) -> list[int]:
        """Pair decisions in force that the new links contradict (a link across Persons, a
        keep-apart inside one) are marked reverted; undoing ``did`` restores them."""
        if not pids:
            return []
        d = t.empi_decision.c
        rows = conn.execute(select(d.id, d.kind, d.patient_a, d.patient_b).where(
            d.kind.in_(CONSTRAINTS), d.reverted.is_(None), d.id != did, or_(d.part_of.is_(None), d.part_of != did),
            or_(d.patient_a.in_(pids), d.patient_b.in_(pids)))).all()
        c = t.person_link.c
        ids = list({x for r in rows for x in (r.patient_a, r.patient_b)})
        person = dict(conn.execute(select(c.patient_id, c.person_id).where(c.patient_id.in_(ids))).all()) if ids else {}
        out = []
        for r in rows:
            pa, pb = person.get(r.patient_a), person.get(r.patient_b)
            if pa is None or pb is None:
                continue
            if (r.kind == "link" and pa != pb) or (r.kind == "keep-apart" and pa == pb):
                out.append(int(r.id))
        if out:
            conn.execute(update(t.empi_decision).where(d.id.in_(out)).values(reverted=now_us(), reverted_by=actor))
        return sorted(out)

    def _close_tasks(self, conn: Connection, pairs: set[frozenset[str]], status: str, note: str) -> list[str]:
        pids = list({p for pair in pairs for p in pair})
        if not pids:
            return []
        r = t.resource.c
        rows = conn.execute(select(r.res_id, r.content).where(
            r.res_type == "Task", r.institution_id.is_(None), r.deleted.is_(False),
            r.patient_id.in_(pids))).all()
        closed = []
        for row in rows:
            pat, cand, _ = _task_pair(orjson.loads(row.content))
            task = orjson.loads(row.content)
            if task.get("status") == "requested" and frozenset((pat, cand)) in pairs \
                    and _is_empi_task(task):
                self._set_task(conn, row.res_id, status, note)
                closed.append(row.res_id)
        return sorted(closed)

    @staticmethod
    def _set_task(conn: Connection, task_id: str, status: str, note: str) -> None:
        cur = store.read_current(conn, "Task", task_id, for_update=True)
        if cur is None or cur.deleted:
            return
        body = cur.json()
        body.pop("meta", None)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body["status"] = status
        body["lastModified"] = stamp
        body["note"] = [*body.get("note", []), {"time": stamp, "text": note}]
        store.update(conn, cur, body)


def _is_empi_task(task: dict) -> bool:
    return any(c.get("system") == EMPI_TASK and c.get("code") == "possible-duplicate"
               for c in (task.get("code") or {}).get("coding", []))


def _task_pair(task: dict) -> tuple[str | None, str | None, float | None]:
    pat = (task.get("focus") or {}).get("reference", "").removeprefix("Patient/") or None
    cand, p = None, None
    for i in task.get("input", []):
        code = next((c.get("code") for c in i.get("type", {}).get("coding", [])), None)
        if code == "candidate":
            cand = i.get("valueReference", {}).get("reference", "").removeprefix("Patient/") or None
        elif code == "match-probability":
            p = i.get("valueDecimal")
    return pat, cand, p


def _shown(rec: dict, comparison: str) -> str | None:
    vals = [str(rec[k]) for k in COMPARED.get(comparison, (comparison,)) if rec.get(k) not in (None, "")]
    return " / ".join(dict.fromkeys(vals)) or None


def _touched(before: dict, after: dict) -> list[str]:
    """The Persons whose link lists change between two link snapshots."""
    out = set()
    for pid in set(before) | set(after):
        if before.get(pid) != after.get(pid):
            out |= {v[0] for v in (before.get(pid), after.get(pid)) if v}
    return sorted(out)


def _moves(a: dict, b: dict) -> str:
    return "; ".join(f"Patient/{p} Person/{a[p][0]} -> Person/{b[p][0]}" for p in sorted(b)
                     if p in a and a[p][0] != b[p][0])


def _decision(row) -> Decision:  # noqa: ANN001
    detail = orjson.loads(row.detail or "{}")
    before, after = detail.get("before", {}), detail.get("after", {})
    return Decision(int(row.id), row.kind, row.patient_a, row.patient_b, row.person_a, row.person_b, row.actor,
                    row.created, row.reverted, row.reverted_by,
                    {p: [before.get(p, [None])[0], after[p][0]] for p in after},
                    detail.get("tasks", []), detail.get("superseded", []))
