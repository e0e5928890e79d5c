"""The access matrix (issue 5, "Must show"): every actor x (own institution's record, other
institution's record) x grant state x read path, every cell asserted.

One world per grant state, built once and then read by every cell (tests/grantkit.py: a
Person with a Patient at A and at B; at A an open Encounter and a lab Observation, at B an
Encounter, a lab Observation, a MedicationRequest, a depression Condition (sensitive:
mental-health) and an HIV viral load (sensitive: hiv-sti)).  At A work a doctor, a nurse and a
pharmacist who each hold a grant in the state under test, a doctor colleague who holds none, a
registration clerk and a quality manager (who can never obtain one); the patient signs in to
the portal, and a stranger (the patient of another Person) too.  The expected answer of every
cell is written from the issue's rules (:func:`expected`), not read back from the code.

Each read path goes through the repository (the single door).  The doctor's row is run a
second time through the real HTTP app, to show the adapter adds no way around it.  For
searches the Bundle must not reveal what it hides: ``total`` counts only what is served, no
served entry names a hidden id, and (separate test) a denied search answers exactly as if the
other institution held nothing at all.  Failures are collected and reported per cell
(state / actor / path / record) so that one run shows the whole damage.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import orjson
import pytest
from sqlalchemy import select, update

from healthlink.access.context import Actor
from healthlink.db import tables as t
from healthlink.errors import Forbidden, NotFound
from healthlink.fhir import store
from healthlink.fhir.identifiers import RESIDENT_ID_SYSTEM
from healthlink.identity import Review
from grantkit import (
    World,
    actor,
    build,
    ctx,
    last_consent_code,
    patient_body,
    resident_id,
)

STATES = ("no-grant", "pending", "active", "active-with-mental-health", "expired", "revoked",
          "encounter-closed", "consultation-closed", "refused", "break-the-glass", "after-unmerge")
HOLDERS = ("doctor", "nurse", "pharmacist")  # the roles that may hold a grant
#: Patient-data types each role may read at its own institution (docs/roles.md): None = all.
READS: dict[str, frozenset[str] | None] = {
    "doctor": None, "colleague": None, "nurse": None, "pharmacist": None, "quality_manager": None,
    "registration_clerk": frozenset({"Patient", "Encounter"}), "patient": None, "stranger": None}
TYPES = ("Patient", "Encounter", "Observation", "Condition", "MedicationRequest")
GRANTED = {"active", "active-with-mental-health"}  # states in which a requested grant is in force


@dataclass(frozen=True)
class Rec:
    key: str  # Type/id
    own: bool  # held by institution A (the staff's own)
    sensitive: str | None = None

    @property
    def type(self) -> str:
        return self.key.split("/")[0]

    @property
    def id(self) -> str:
        return self.key.split("/")[1]


def records(w: World) -> list[Rec]:
    return [Rec(f"Patient/{w.patient_a}", True), Rec(f"Encounter/{w.encounter_a}", True),
            Rec(f"Observation/{w.obs_a}", True),
            Rec(f"Patient/{w.patient_b}", False), Rec(f"Encounter/{w.encounter_b}", False),
            Rec(f"Observation/{w.lab_b}", False), Rec(f"MedicationRequest/{w.med_b}", False),
            Rec(f"Condition/{w.depression_b}", False, "mental-health"),
            Rec(f"Observation/{w.hiv_b}", False, "hiv-sti")]


def expected(who: str, state: str, recs: list[Rec]) -> set[str]:
    """The cell's answer, written from the issue's rules (not from the code under test)."""
    if who == "stranger":
        return set()
    if who == "patient":  # own records at every institution, sensitive ones too; after the
        # unmerge the B Patient is another Person's, and so are its records
        return {r.key for r in recs if r.own or state != "after-unmerge"}
    reads = READS[who]
    out = set()
    for r in recs:
        if reads is not None and r.type not in reads:
            continue
        if r.own:
            out.add(r.key)
            continue
        opened = (who in HOLDERS and state in GRANTED) or (who == "doctor" and state == "break-the-glass")
        if not opened:
            continue
        if r.sensitive is None or (r.sensitive == "mental-health" and state == "active-with-mental-health"):
            out.add(r.key)
    return out


# ------------------------------------------------------------------ the paths, on one API
class Door:
    """The read paths, as the two adapters of the matrix offer them (the repository, HTTP):
    each call answers the status (200, 403 or 404), the served items as (Type/id,
    institution, JSON text) and, for searches, the Bundle total."""

    def read(self, rt: str, rid: str) -> tuple[int, list]: ...
    def vread(self, rt: str, rid: str) -> tuple[int, list]: ...
    def search(self, rt: str, params: list[tuple[str, str]]) -> tuple[int, list, int | None]: ...
    def history(self, rt: str, rid: str | None) -> tuple[int, list]: ...
    def everything(self, pid: str) -> tuple[int, list]: ...


def _item(s) -> tuple[str, str | None, str]:
    return f"{s.res_type}/{s.res_id}", s.institution_id, s.content or ""


class RepoDoor(Door):
    def __init__(self, platform, a: Actor) -> None:
        self.p, self.a = platform, a

    def _repo(self):
        return self.p.repository(ctx(self.a))

    def _call(self, fn: Callable[[], list]) -> tuple[int, list]:
        try:
            return 200, fn()
        except NotFound:
            return 404, []
        except Forbidden:
            return 403, []

    def read(self, rt: str, rid: str) -> tuple[int, list]:
        return self._call(lambda: [_item(self._repo().read(rt, rid))])

    def vread(self, rt: str, rid: str) -> tuple[int, list]:
        return self._call(lambda: [_item(self._repo().vread(rt, rid, "1"))])

    def search(self, rt: str, params: list[tuple[str, str]]) -> tuple[int, list, int | None]:
        try:
            page = self._repo().search(rt, params)
        except Forbidden:
            return 403, [], None
        return 200, [_item(s) for s in page.matches + page.includes], page.total

    def history(self, rt: str, rid: str | None) -> tuple[int, list]:
        return self._call(lambda: [_item(s) for s in
                                   self._repo().history(rt, rid, count=1000, cursor=None, since=None)[0]])

    def everything(self, pid: str) -> tuple[int, list]:
        return self._call(lambda: [_item(s) for s in self._repo().everything(pid, count=1000, cursor=None)[0]])


class HttpDoor(Door):
    def __init__(self, client, headers: dict) -> None:
        self.c, self.h = client, headers

    @staticmethod
    def _res(body: dict) -> tuple[str, str | None, str]:
        return f"{body['resourceType']}/{body['id']}", None, orjson.dumps(body).decode()

    def _get(self, path: str, params: list | None = None):
        r = self.c.get(f"/fhir/{path}", params=params, headers=self.h)
        assert r.status_code in (200, 403, 404), f"GET /fhir/{path} {params}: {r.status_code} {r.text}"
        return r

    def _one(self, path: str) -> tuple[int, list]:
        r = self._get(path)
        return (200, [self._res(r.json())]) if r.status_code == 200 else (r.status_code, [])

    def _bundle(self, path: str, params: list | None = None) -> tuple[int, list, int | None]:
        r = self._get(path, params)
        if r.status_code != 200:
            return r.status_code, [], None
        b = r.json()
        return 200, [self._res(e["resource"]) for e in b.get("entry", []) if "resource" in e], b.get("total")

    def read(self, rt: str, rid: str) -> tuple[int, list]:
        return self._one(f"{rt}/{rid}")

    def vread(self, rt: str, rid: str) -> tuple[int, list]:
        return self._one(f"{rt}/{rid}/_history/1")

    def search(self, rt: str, params: list[tuple[str, str]]) -> tuple[int, list, int | None]:
        return self._bundle(rt, params)

    def history(self, rt: str, rid: str | None) -> tuple[int, list]:
        return self._bundle(f"{rt}/{rid}/_history" if rid else f"{rt}/_history", [("_count", "1000")])[:2]

    def everything(self, pid: str) -> tuple[int, list]:
        return self._bundle(f"Patient/{pid}/$everything", [("_count", "1000")])[:2]


# ------------------------------------------------------------------ one row of the matrix
PATHS = ("read", "vread", "history-instance", "search by patient", "search by person", "_include",
         "_revinclude", "chained", "history-type", "$everything")


def check_cell(door: Door, path: str, *, state: str, who: str, w: World, ident: str, via: str) -> list[str]:
    """One cell of the matrix: one actor, one read path, over every record of the world (own
    institution's and the other's).  Returns its failures, each naming the cell."""
    recs = records(w)
    want = expected(who, state, recs)
    hidden = {r.key for r in recs} - want
    hidden_ids = {k.split("/")[1] for k in hidden}
    reads = READS[who]
    universe = {r.key for r in recs}
    fails: list[str] = []
    cell = f"[{state} | {who} | {via} | {path}]"

    def may(rt: str) -> bool:
        return reads is None or rt in reads

    def no_leak(what: str, items: list) -> None:
        for key, _inst, content in items:
            if key in hidden:
                fails.append(f"{cell} {what}: served hidden {key}")
            for hid in hidden_ids:
                if hid in content and key not in hidden:
                    fails.append(f"{cell} {what}: {key} names hidden id {hid}")

    def compare(got: set[str], exp: set[str]) -> None:
        got = got & universe
        if got != exp:
            fails.append(f"{cell} missing {sorted(exp - got)}, extra {sorted(got - exp)}")

    def searches(queries: list[tuple[str, list[tuple[str, str]]]], exp: set[str]) -> None:
        got: set[str] = set()
        for rt, params in queries:
            q = f"{rt}?" + "&".join(f"{k}={v}" for k, v in params)
            status, items, total = door.search(rt, params + [("_total", "accurate")])
            if status != (200 if may(rt) else 403):
                fails.append(f"{cell} {q}: status {status}")
                continue
            no_leak(q, items)
            got |= {i[0] for i in items}
            n_matches = sum(1 for i in items if i[0].startswith(rt + "/"))
            if status == 200 and total != n_matches:  # the Bundle counts what it serves, nothing more
                fails.append(f"{cell} {q}: total {total}, but {n_matches} matches served")
            if status == 200 and not any(k in ("_include", "_revinclude") for k, _ in params):
                _, _, counted = door.search(rt, params + [("_summary", "count")])
                if total != len(items) or counted != len(items):
                    fails.append(f"{cell} {q}: total {total}, _summary=count {counted}, "
                                 f"but {len(items)} entries served")
        compare(got, exp)

    in_types = {k for k in want if k.split("/")[0] in TYPES}
    pids = f"{w.patient_a},{w.patient_b}"
    if path in ("read", "vread", "history-instance"):
        # 200 if visible, 404 if hidden (the answer for an unknown id), 403 only where the
        # role may not read the type at all
        fn = {"read": door.read, "vread": door.vread,
              "history-instance": lambda rt, rid: door.history(rt, rid)}[path]
        for r in recs:
            status, items = fn(r.type, r.id)
            exp = 200 if r.key in want else 403 if not may(r.type) else 404
            if status != exp:
                fails.append(f"{cell} {r.key} ({'own' if r.own else 'other'} institution"
                             f"{', ' + r.sensitive if r.sensitive else ''}): expected {exp}, got {status}")
            no_leak(r.key, items)
    elif path == "search by patient":
        searches([("Patient", [("identifier", f"{RESIDENT_ID_SYSTEM}|{ident}")])]
                 + [(rt, [("patient", pids)]) for rt in TYPES[1:]], in_types)
    elif path == "search by person":
        searches([(rt, [("person", f"Person/{w.person}")]) for rt in TYPES], in_types)
    elif path == "_include":  # the matches and the Patients they point to
        exp: set[str] = set()
        for r in recs:
            if r.key in want and r.type in ("Observation", "Encounter", "Condition"):
                exp |= {r.key, f"Patient/{w.patient_a if r.own else w.patient_b}"}
        searches([("Observation", [("_id", f"{w.obs_a},{w.lab_b},{w.hiv_b}"), ("_include", "Observation:subject")]),
                  ("Encounter", [("_id", f"{w.encounter_a},{w.encounter_b}"), ("_include", "Encounter:subject")]),
                  ("Condition", [("_id", w.depression_b), ("_include", "Condition:subject")])], exp & want)
    elif path == "_revinclude":
        searches([("Patient", [("_id", pids)] + [("_revinclude", f"{rt}:subject") for rt in TYPES[1:]])], want)
    elif path == "chained":
        searches([(rt, [("subject:Patient.identifier", f"{RESIDENT_ID_SYSTEM}|{ident}")]) for rt in TYPES[1:]],
                 {k for k in want if not k.startswith("Patient/")})
    elif path == "history-type":
        got: set[str] = set()
        for rt in TYPES:
            status, items = door.history(rt, None)
            if status != (200 if may(rt) else 403):
                fails.append(f"{cell} {rt}/_history: status {status}")
            no_leak(f"{rt}/_history", items)
            got |= {i[0] for i in items}
        compare(got, want)
    elif path == "$everything":
        # of the local Patient, and of the other institution's Patient (served only where
        # that Patient itself is); both span the Person's records the actor may see
        for pid in (w.patient_a, w.patient_b):
            status, items = door.everything(pid)
            exp_status = 200 if f"Patient/{pid}" in want else 404
            if status != exp_status:
                fails.append(f"{cell} Patient/{pid}/$everything: expected {exp_status}, got {status}")
                continue
            no_leak(f"Patient/{pid}/$everything", items)
            if status == 200:
                compare({i[0] for i in items}, want)
    else:
        raise AssertionError(f"unknown path {path}")
    return fails


# ------------------------------------------------------------------ the states
def _grant(platform, w: World, who: Actor, *, sensitive: tuple[str, ...] = (), approve: bool = True):
    g = platform.grants.request(ctx(who), patient_id=w.patient_a, encounter_id=w.encounter_a,
                                purpose="access matrix", sensitive=sensitive)
    if approve:
        g = platform.grants.confirm_code(ctx(who), g.id, last_consent_code(platform, w.phone))
        assert g.status == "active"
    return g


def enter(state: str, platform, w: World, holders: dict[str, Actor], account: int) -> None:
    """Put every holder's grant into ``state``."""
    if state == "no-grant":
        return
    if state == "break-the-glass":
        platform.grants.break_glass(ctx(holders["doctor"]), patient_id=w.patient_a, encounter_id=w.encounter_a,
                                    reason="unconscious after a road accident, history unknown")
        for role in ("nurse", "pharmacist"):  # only a doctor breaks the glass
            with pytest.raises(Forbidden):
                platform.grants.break_glass(ctx(holders[role]), patient_id=w.patient_a,
                                            encounter_id=w.encounter_a, reason="unconscious, history unknown")
        return
    sensitive = ("mental-health",) if state == "active-with-mental-health" else ()
    grants = {role: _grant(platform, w, a, sensitive=sensitive, approve=state not in ("pending", "refused"))
              for role, a in holders.items()}
    ids = [g.id for g in grants.values()]
    if state == "expired":
        with platform.db.write() as conn:
            conn.execute(update(t.access_grant).where(t.access_grant.c.id.in_(ids)).values(expires=1))
    elif state == "revoked":
        for gid in ids:
            assert platform.grants.revoke(account, gid).status == "revoked"
    elif state == "refused":
        for gid in ids:
            platform.grants.decide(account, gid, approve=False)
    elif state == "encounter-closed":
        repo = platform.repository(ctx(holders["doctor"]))
        body = orjson.loads(repo.read("Encounter", w.encounter_a).content)
        body["status"] = "finished"
        platform.repository(ctx(holders["doctor"])).update("Encounter", w.encounter_a, body, if_match=None)
    elif state == "consultation-closed":
        assert sorted(platform.grants.close_consultation(ctx(holders["doctor"]), w.encounter_a)) == sorted(ids)
    elif state == "after-unmerge":
        Review(platform.identity).unmerge(ctx(actor("empi_reviewer", w.a)), w.patient_b)
    with platform.db.read() as conn:
        status = dict(conn.execute(select(t.access_grant.c.id, t.access_grant.c.status)
                                   .where(t.access_grant.c.id.in_(ids))).all())
    want = {"pending": "pending", "refused": "refused", "revoked": "revoked", "encounter-closed": "closed",
            "consultation-closed": "closed"}.get(state, "active")
    assert set(status.values()) == {want}, (state, status)


def stranger_person(platform, a: str) -> str:
    """A Person of someone else, with a Patient at institution A."""
    pid = platform.repository(ctx(actor("doctor", a))).create(
        patient_body(resident_id(), name="格桑德吉"), res_type="Patient").stored.res_id
    with platform.db.read() as conn:
        return conn.execute(select(t.person_link.c.person_id).where(t.person_link.c.patient_id == pid)).scalar_one()


def resident_id_of(platform, w: World) -> str:
    with platform.db.read() as conn:
        body = orjson.loads(store.read_current(conn, "Patient", w.patient_a).content)
    return next(i["value"] for i in body["identifier"] if i["system"] == RESIDENT_ID_SYSTEM)


@pytest.mark.parametrize("state", STATES)
def test_access_matrix_every_actor_every_path(state, platform, client, staff, make_institution):
    a, b = make_institution(), make_institution()
    login = staff("doctor", institution=a)  # the doctor of the HTTP row
    doctor = actor("doctor", a, username=login.username)
    w = build(platform, a, b, doctor_a=doctor)
    holders = {"doctor": doctor, "nurse": actor("nurse", a), "pharmacist": actor("pharmacist", a)}
    others = {"colleague": actor("doctor", a), "registration_clerk": actor("registration_clerk", a),
              "quality_manager": actor("quality_manager", a)}
    account = platform.patient_accounts.verify_in_person(platform.db, actor("registration_clerk", a),
                                                         w.person, w.phone)
    # roles without grant capability can never obtain one, in any state
    for role in ("registration_clerk", "quality_manager"):
        with pytest.raises(Forbidden):
            platform.grants.request(ctx(others[role]), patient_id=w.patient_a, encounter_id=w.encounter_a,
                                    purpose="access matrix")
        with pytest.raises(Forbidden):
            platform.grants.break_glass(ctx(others[role]), patient_id=w.patient_a, encounter_id=w.encounter_a,
                                        reason="unconscious after a road accident")
    enter(state, platform, w, holders, account.id)
    stranger = stranger_person(platform, a)
    ident = resident_id_of(platform, w)
    actors = {**holders, **others, "patient": Actor.patient(account.id, (w.person,)),
              "stranger": Actor.patient(account.id + 10**6, (stranger,))}
    doors = [(who, RepoDoor(platform, act), "repository") for who, act in actors.items()]
    doors.append(("doctor", HttpDoor(client, login.headers), "HTTP"))
    # the cells are independent reads of a settled state: run them side by side, as concurrent
    # requests would be (the audit writer commits their records in groups)
    with ThreadPoolExecutor(max_workers=16) as pool:
        cells = [pool.submit(check_cell, door, path, state=state, who=who, w=w, ident=ident, via=via)
                 for who, door, via in doors for path in PATHS]
        fails = [f for c in cells for f in c.result()]
    assert not fails, f"{len(fails)} failing cell(s):\n" + "\n".join(fails)


def test_break_the_glass_marks_every_record_of_the_other_institution(platform, make_institution):
    a, b = make_institution(), make_institution()
    doctor = actor("doctor", a)
    w = build(platform, a, b, doctor_a=doctor)
    platform.grants.break_glass(ctx(doctor), patient_id=w.patient_a, encounter_id=w.encounter_a,
                                reason="unconscious after a road accident, history unknown")
    items, _ = platform.repository(ctx(doctor)).everything(w.patient_a, count=1000, cursor=None)
    for s in items:
        marked = '"BTG"' in (s.content or "")
        assert marked == (s.institution_id != a), f"{s.res_type}/{s.res_id} at {s.institution_id}: BTG {marked}"


def test_denied_searches_answer_as_if_the_other_institution_held_nothing(platform, make_institution):
    """Without a grant, every search over the Person's records answers what it answers when
    institution B holds no records of the Person at all: the same total, the same entries."""
    answers = []
    for records_at_b in (True, False):
        a, b = make_institution(), make_institution()
        doctor = actor("doctor", a)
        w = build(platform, a, b, doctor_a=doctor, records_at_b=records_at_b)
        own = {f"Patient/{w.patient_a}": "P", f"Encounter/{w.encounter_a}": "E", f"Observation/{w.obs_a}": "O"}
        door = RepoDoor(platform, doctor)
        ident = resident_id_of(platform, w)
        queries = [(rt, [("person", f"Person/{w.person}")]) for rt in TYPES]
        queries += [(rt, [("patient", w.patient_a + (f",{w.patient_b}" if w.patient_b else ""))]) for rt in TYPES[1:]]
        queries += [(rt, [("subject:Patient.identifier", f"{RESIDENT_ID_SYSTEM}|{ident}")]) for rt in TYPES[1:]]
        queries += [("Patient", [("identifier", f"{RESIDENT_ID_SYSTEM}|{ident}"),
                                 *[("_revinclude", f"{rt}:subject") for rt in TYPES[1:]]])]
        queries += [("Observation", [("person", f"Person/{w.person}"), ("_include", "Observation:subject")])]
        answer = []
        for rt, params in queries:
            for extra in (("_total", "accurate"), ("_summary", "count")):
                status, items, total = door.search(rt, params + [extra])
                assert status == 200
                # entries as the doctor sees them, with the ids of A's records made comparable
                answer.append((rt, extra[0], total, sorted(own.get(k, k) for k, _, _ in items)))
        answers.append(answer)
    assert answers[0] == answers[1]


def test_older_versions_of_a_recoded_sensitive_record_stay_hidden_under_a_grant_without_it(
        platform, make_institution):
    """A diagnosis first recorded as depression (F32.1, mental-health) and later corrected to
    diabetes: the current version is not sensitive, but version 1 still says depression, and a
    grant that does not name mental-health must not show it by vread or history."""
    a, b = make_institution(), make_institution()
    doctor = actor("doctor", a)
    w = build(platform, a, b, doctor_a=doctor)
    rb = platform.repository(ctx(actor("doctor", b)))
    body = orjson.loads(rb.read("Condition", w.depression_b).content)
    body["code"] = {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11.9",
                                "display": "Type 2 diabetes mellitus without complications"}]}
    rb.update("Condition", w.depression_b, body, if_match=None)
    _grant(platform, w, doctor)
    door = RepoDoor(platform, doctor)
    served = {"read": door.read("Condition", w.depression_b)[1],
              "vread 1": door.vread("Condition", w.depression_b)[1],
              "history-instance": door.history("Condition", w.depression_b)[1],
              "history-type": [i for i in door.history("Condition", None)[1] if i[0].endswith(w.depression_b)]}
    leaks = {path: [i[0] for i in items if "F32" in i[2]] for path, items in served.items()}
    assert served["read"], "the corrected (non-sensitive) current version is visible under the grant"
    assert leaks == {path: [] for path in served}, f"depression served under a grant without mental-health: {leaks}"


# ------------------------------------------------------------------ the CDS read paths (issue 7)
CDS_NOW = "2026-11-25T12:00:00+08:00"  # grantkit's results are of 2026-11-20: inside a 30-day window
GLUCOSE = ("http://loinc.org", "14749-6")  # HR-GLU, 30 days, the whole region
RPR = ("http://loinc.org", "20507-0")
METFORMIN = ("http://www.nlm.nih.gov/research/umls/rxnorm", "6809")  # grantkit's w.med_b at B  # HR-RPR: a syphilis test, labelled hiv-sti (sensitive)
CDS_WHO = ("doctor", "nurse", "pharmacist", "colleague", "registration_clerk", "quality_manager")


def expected_cards(who: str, state: str) -> set[tuple[str, str]] | None:
    """The cards of an order of glucose and RPR, written from the issue's rules (item 5): None when
    the role may not check at all; else (institution, "values" | "hint") per card.  The own
    institution's glucose is always shown with values (a duplicate-test reminder); the other
    institution's glucose with values where a grant (or, for the doctor, break-the-glass) opens it,
    as a hint (item, institution, date) otherwise; a sensitive record (RPR, hiv-sti) never gives a
    card or a hint; after the unmerge the other institution's records are another Person's."""
    if who in ("registration_clerk", "quality_manager"):
        return None
    out = {("A", "values")}
    if state == "after-unmerge":
        return out
    opened = (who in HOLDERS and state in GRANTED) or (who == "doctor" and state == "break-the-glass")
    out.add(("B", "values" if opened else "hint"))
    return out


def cds_cell(platform, client, who: str, via: str, run, w: World, hidden: set[str], names: dict[str, str],
             state: str) -> list[str]:
    """One cell: the cards ``run()`` answers (status, cards, JSON text) against the rule."""
    cell = f"[{state} | {who} | {via}]"
    want = expected_cards(who, state)
    status, cards, text = run()
    if want is None:
        return [] if status == 403 else [f"{cell} expected 403, got {status} {text[:200]}"]
    if status != 200:
        return [f"{cell} expected 200, got {status} {text[:300]}"]
    fails = []
    got = {(names.get(inst, inst), "values" if shown else "hint") for inst, shown in cards}
    if got != want:
        fails.append(f"{cell} cards {sorted(got)}, expected {sorted(want)}")
    leaked = sorted(h for h in hidden if h and h in text)
    if leaked:
        fails.append(f"{cell} the answer names hidden records {leaked}")
    return fails


@pytest.mark.parametrize("state", STATES)
def test_access_matrix_cds_read_paths(state, platform, client, staff, his_client, make_institution):
    """The order-time check (issue 7) as another read path of the matrix: through the repository
    for every role, and over HTTP for the doctor (a CDS Hooks call by the hospital system, with
    and without the prefetched Patient, i.e. the lookup path) and for the colleague (the JSON API
    with their own token).  No answer names a record it does not disclose."""
    from datetime import date as day

    from recogkit import pinned

    from healthlink.errors import Forbidden as Refused
    from healthlink.recognition.service import Order

    a, b = make_institution(), make_institution()
    platform.recognition.directory.forget()  # the directory cache: see the new institutions now
    platform.recognition.qualify(ctx(Actor.system("tests")), institution_id=b, item_id="*", basis="eqa",
                                 valid_from=day(2020, 1, 1))
    login = staff("doctor", institution=a)
    prac = platform.accounts.actor_from_token(login.headers["Authorization"][7:]).practitioner_id
    doctor = actor("doctor", a, username=login.username, practitioner_id=prac)
    w = build(platform, a, b, doctor_a=doctor)
    colleague_login = staff("doctor", institution=a)
    holders = {"doctor": doctor, "nurse": actor("nurse", a), "pharmacist": actor("pharmacist", a)}
    others = {"colleague": actor("doctor", a, username=colleague_login.username,
                                 practitioner_id=platform.accounts.actor_from_token(
                                     colleague_login.headers["Authorization"][7:]).practitioner_id),
              "registration_clerk": actor("registration_clerk", a), "quality_manager": actor("quality_manager", a)}
    from grantkit import lab

    rb = platform.repository(ctx(actor("doctor", b)))
    glu_b = rb.create(lab(w.patient_b, GLUCOSE[1], "Glucose", 5.4), res_type="Observation").stored.res_id
    rpr_b = rb.create(lab(w.patient_b, RPR[1], "RPR", 0.0), res_type="Observation").stored.res_id
    platform.repository(ctx(doctor)).create(lab(w.patient_a, GLUCOSE[1], "Glucose", 6.1), res_type="Observation")
    # issue 8: metformin at A too, so that ordering metformin gives the same shape of answer as the
    # recognition rows (A's record always with values; B's metformin, w.med_b, with values or as a hint)
    platform.repository(ctx(doctor)).create({
        "resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": METFORMIN[0], "code": METFORMIN[1]}]},
        "subject": {"reference": f"Patient/{w.patient_a}"}}, res_type="MedicationRequest")
    account = platform.patient_accounts.verify_in_person(platform.db, actor("registration_clerk", a),
                                                         w.person, w.phone)
    enter(state, platform, w, holders, account.id)
    # what a card may name: B's glucose only where disclosed; never B's Patient, its other records, the RPR
    never = {w.patient_b, w.encounter_b, w.lab_b, w.med_b, w.depression_b, w.hiv_b, rpr_b}
    names = {a: "A", b: "B"}
    orders = [Order(*GLUCOSE, order_ref="ServiceRequest/glu"), Order(*RPR, order_ref="ServiceRequest/rpr")]

    def by_repository(who_actor):  # noqa: ANN001, ANN202
        def run():  # noqa: ANN202
            try:
                res = platform.recognition.check(ctx(who_actor), w.patient_a, orders, encounter_id=w.encounter_a)
            except Refused as exc:
                return 403, [], exc.message
            return 200, [(h.institution_id, h.disclosed) for h in res.hits], orjson.dumps(
                [h.to_json() for h in res.hits]).decode()
        return run

    def cds(prefetch: bool):  # noqa: ANN202
        def run():  # noqa: ANN202
            drafts = [{"resourceType": "ServiceRequest", "id": rid, "status": "draft", "intent": "order",
                       "code": {"coding": [{"system": s, "code": c}]}}
                      for rid, (s, c) in (("glu", GLUCOSE), ("rpr", RPR))]
            body = {"hook": "order-select", "hookInstance": str(uuid.uuid4()),
                    "context": {"userId": f"Practitioner/{prac}", "patientId": w.patient_a,
                                "encounterId": w.encounter_a, "selections": ["ServiceRequest/glu", "ServiceRequest/rpr"],
                                "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": d} for d in drafts]}}}
            if prefetch:
                body["prefetch"] = {"patient": orjson.loads(platform.repository(ctx(doctor)).read(
                    "Patient", w.patient_a).content)}
            r = client.post("/cds-services/healthlink-recognition-select", json=body, headers=his.headers)
            if r.status_code != 200:
                return r.status_code, [], r.text
            # a card's institution, as its detail names it; values shown: the detail's value row
            cards = [(next((i for i in (a, b) if f"Test {i}" in c["detail"]), "?"), "结果 Value" in c["detail"])
                     for c in r.json()["cards"]]
            return 200, cards, r.text
        return run

    def json_api(headers):  # noqa: ANN001, ANN202
        def run():  # noqa: ANN202
            r = client.post("/api/recognition/check", headers=headers, json={
                "patient": w.patient_a, "encounter": w.encounter_a,
                "orders": [{"system": s, "code": c} for s, c in (GLUCOSE, RPR)]})
            if r.status_code != 200:
                return r.status_code, [], r.text
            return 200, [(h["institution_id"], h["disclosed"]) for ln in r.json()["lines"] for h in ln["hits"]], r.text
        return run

    def medsafety_draft() -> dict:  # a fresh draft id each time: no select/sign de-duplication
        return {"resourceType": "MedicationRequest", "id": uuid.uuid4().hex[:12], "status": "draft",
                "intent": "order", "medicationCodeableConcept": {"coding": [{"system": METFORMIN[0],
                                                                            "code": METFORMIN[1]}]}}

    def medsafety_repository(who_actor):  # noqa: ANN001, ANN202
        def run():  # noqa: ANN202
            try:
                res = platform.medsafety.check(ctx(who_actor), w.patient_a, medsafety_draft(),
                                               encounter_id=w.encounter_a)
            except Refused as exc:
                return 403, [], exc.message
            return 200, [(f.concerns.institution_id, f.concerns.disclosed) for f in res.findings
                         if f.concerns is not None], orjson.dumps([f.to_json() for f in res.findings]).decode()
        return run

    def medsafety_cds():  # noqa: ANN202
        def run():  # noqa: ANN202
            d = medsafety_draft()
            body = {"hook": "order-sign", "hookInstance": str(uuid.uuid4()),
                    "context": {"userId": f"Practitioner/{prac}", "patientId": w.patient_a,
                                "encounterId": w.encounter_a,
                                "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": d}]}}}
            r = client.post("/cds-services/medsafety-order-sign", json=body, headers=his.headers)
            if r.status_code != 200:
                return r.status_code, [], r.text
            # a card's institution, as its detail names it; values shown: the detail names the drug
            cards = [(next((i for i in (a, b) if f"Test {i}" in c["detail"]), "?"), "Concerns" in c["detail"])
                     for c in r.json()["cards"]]
            return 200, cards, r.text
        return run

    def medsafety_json(headers):  # noqa: ANN001, ANN202
        def run():  # noqa: ANN202
            r = client.post("/api/medsafety/check", headers=headers, json={
                "patient": w.patient_a, "encounter": w.encounter_a, "draft": medsafety_draft()})
            if r.status_code != 200:
                return r.status_code, [], r.text
            return 200, [(f["concerns"]["institution_id"], f["concerns"]["disclosed"]) for c in r.json()["checks"]
                         for f in c["findings"] if f["concerns"]], r.text
        return run

    his = his_client(institution=a)
    runs = [(who, "repository", by_repository(act)) for who, act in {**holders, **others}.items()]
    # issue 8: the order-time medication check, the same rule (docs/medsafety.md)
    runs += [(who, "medsafety repository", medsafety_repository(act)) for who, act in {**holders, **others}.items()]
    runs += [("doctor", "medsafety CDS", medsafety_cds()),
             ("colleague", "medsafety JSON API", medsafety_json(colleague_login.headers))]
    runs += [("doctor", "CDS, prefetch", cds(True)), ("doctor", "CDS, lookup", cds(False)),
             ("colleague", "JSON API", json_api(colleague_login.headers))]
    for role in ("registration_clerk", "quality_manager"):  # over HTTP too: refused
        runs.append((role, "JSON API", json_api(staff(role, institution=a).headers)))
    fails = []
    with pinned(platform, CDS_NOW):
        for who, via, run in runs:
            hidden = set(never)
            if via.startswith("medsafety") and ("B", "values") in (expected_cards(who, state) or set()):
                hidden.discard(w.med_b)  # B's metformin is what a disclosed finding names
            if ("B", "values") not in (expected_cards(who, state) or set()):
                hidden.add(glu_b)
            fails += cds_cell(platform, client, who, via, run, w, hidden, names, state)
    assert not fails, f"{len(fails)} failing CDS cell(s):\n" + "\n".join(fails)
