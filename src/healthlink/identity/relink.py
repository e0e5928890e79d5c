"""`healthlink link`: re-link a whole region in one batch, keeping Person ids stable.

After a model change or a bulk load, every linked Patient's flat record (``person_link``)
is scored with Splink (DuckDB, or Spark for a province that outgrows one machine) and
clustered at the auto-link threshold.  Reviewers' decisions in force are constraints:
must-link pairs are joined first, and no edge may put a kept-apart pair into one Person.
Then the new clusters are matched to the existing Persons so ids stay stable: each Person
id goes to the cluster holding most of its Patients (ties: the lower id); a cluster that
gets no existing id founds a new Person.  Only Patients whose Person changes are written,
in chunks, each with one audit record; the Person resources get a new version each.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import orjson
from sqlalchemy import select, update

from healthlink.access import RequestContext
from healthlink.access.context import Actor
from healthlink.db import tables as t
from healthlink.empi import REGION, Model, link_batch, train
from healthlink.fhir.store import now_us
from healthlink.identity.review import manual_constraints
from healthlink.identity.service import ASSURANCE, Identity, serialise
from healthlink.ledger import AuditRecord


@dataclass
class RelinkReport:
    records: int = 0
    clusters: int = 0
    persons_kept: int = 0
    persons_new: int = 0
    persons_emptied: int = 0
    patients_moved: int = 0
    review_pairs: int = 0
    model_version: str = ""
    engine: str = "duckdb"
    timings_s: dict[str, float] = field(default_factory=dict)


class _Components:
    """Union-find over record ids that refuses a union joining a kept-apart pair."""

    def __init__(self, ids: list[str], cannot: list[tuple[str, str]]) -> None:
        self.parent = {i: i for i in ids}
        self.members: dict[str, set[str]] = {i: {i} for i in ids}
        self.cannot: dict[str, set[str]] = defaultdict(set)
        for a, b in cannot:
            if a in self.parent and b in self.parent:
                self.cannot[a].add(b)
                self.cannot[b].add(a)

    def find(self, i: str) -> str:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: str, b: str) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        small, big = sorted((ra, rb), key=lambda r: len(self.members[r]))
        if any(self.cannot[m] & self.members[big] for m in self.members[small] if self.cannot.get(m)):
            return False
        self.parent[small] = big
        self.members[big] |= self.members.pop(small)
        return True


def relink(identity: Identity, *, engine: str = "duckdb", retrain: bool = False,
           ctx: RequestContext | None = None, chunk: int = 1000, u_max_pairs: float = 1e6) -> RelinkReport:
    ctx = ctx or RequestContext(actor=Actor.system("empi-relink"), address="local", purpose_of_use="HOPERAT")
    rep = RelinkReport(engine=engine)
    t0 = time.perf_counter()
    c = t.person_link.c
    records: list[dict] = []
    current: dict[str, str] = {}
    with identity.db.read() as conn:
        for row in conn.execute(select(c.patient_id, c.person_id, c.record).order_by(c.patient_id)):
            rec = orjson.loads(row.record)
            rec["record_id"] = row.patient_id
            records.append(rec)
            current[row.patient_id] = row.person_id
        constraints = manual_constraints(conn)
        model: Model = identity.model(conn)
    rep.records = len(records)
    rep.timings_s["read"] = time.perf_counter() - t0
    if not records:
        return rep
    if retrain:
        t1 = time.perf_counter()
        model = train([records], REGION, u_max_pairs=u_max_pairs, seed=1,
                      version=f"{REGION.name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        identity.store_model(model)
        rep.timings_s["train"] = time.perf_counter() - t1
    rep.model_version = model.version
    t1 = time.perf_counter()
    res = link_batch([records], model, REGION, auto_link=identity.auto_link, review=identity.review,
                     engine=engine)
    rep.timings_s["link"] = time.perf_counter() - t1
    rep.review_pairs = len(res.review_pairs())

    t1 = time.perf_counter()
    comp = _Components(list(current), constraints.cannot_link)
    for a, b in constraints.must_link:
        if a in comp.parent and b in comp.parent:
            comp.union(a, b)
    best: dict[str, tuple[float, bool]] = {}  # patient -> its best link (method of the new link)
    for p in sorted(res.links(), key=lambda p: -p.match_probability):
        if comp.union(p.left, p.right):
            for x in (p.left, p.right):
                if x not in best or p.match_probability > best[x][0]:
                    best[x] = (p.match_probability, p.deterministic)
    clusters: dict[str, list[str]] = defaultdict(list)
    for pid in current:
        clusters[comp.find(pid)].append(pid)
    rep.clusters = len(clusters)

    # stable ids: each existing Person id goes to the cluster holding most of its Patients
    votes = sorted(((n, person, root) for root, members in clusters.items()
                    for person, n in Counter(current[m] for m in members).items()),
                   key=lambda v: (-v[0], v[1], v[2]))
    assigned: dict[str, str] = {}
    used: set[str] = set()
    for _, person, root in votes:
        if root not in assigned and person not in used:
            assigned[root] = person
            used.add(person)
    for root in clusters:
        if root not in assigned:
            assigned[root] = str(uuid.uuid4())
            rep.persons_new += 1
    rep.persons_kept = len(clusters) - rep.persons_new
    moves = [(pid, assigned[root]) for root, members in clusters.items() for pid in members
             if current[pid] != assigned[root]]
    rep.patients_moved = len(moves)
    rep.persons_emptied = len(set(current.values()) - set(assigned.values()))
    rep.timings_s["reconcile"] = time.perf_counter() - t1

    t1 = time.perf_counter()
    for i in range(0, len(moves), chunk):
        part = moves[i:i + chunk]
        with identity.db.write() as conn:
            serialise(conn)  # the master patient index: one linker at a time
            touched: set[str] = set()
            for pid, person in part:
                p, det = best.get(pid, (None, False))
                method = "deterministic" if det else "probabilistic"
                conn.execute(update(t.person_link).where(c.patient_id == pid).values(
                    person_id=person, method=method, assurance=ASSURANCE[method], score=p, updated=now_us()))
                touched |= {current[pid], person}
            for person in sorted(touched):
                identity._write_person(conn, person)  # noqa: SLF001 - the same package
            identity.audit.write_in(conn, AuditRecord(
                subtype="empi-relink", agent=ctx.agent(), patients={pid for pid, _ in part},
                entities=[f"Person/{p}" for p in sorted(touched)],
                outcome_desc=f"healthlink link ({engine}, model {model.version}): "
                             f"{len(part)} Patients moved to another Person"))
    rep.timings_s["write"] = time.perf_counter() - t1
    rep.timings_s["total"] = time.perf_counter() - t0
    return rep
