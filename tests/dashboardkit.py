"""A small region for the dashboard tests (issue 10), new per call (the session's database is shared):

* county ``county`` (a unique name) with a county medical consortium led by ``lead`` (county
  hospital, departments ``lead-internal`` and ``lead-lab``) and its township ``town`` (referral
  parent: ``lead``); ``other`` is a county hospital of another county and consortium;
* records uploaded through the real bulk ingest (NDJSON) at ``lead`` and ``town``, one Patient
  refused (future birth date) and quarantined, one Observation deleted afterwards;
* events as the capabilities record them: mutual recognition, medication safety, pre-review,
  grants and break-the-glass, at ``lead`` (two departments) and ``other``, inside the period and
  one day before it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

from healthlink.db import tables as t
from healthlink.demo import organization
from healthlink.ingest import ingest_files
from healthlink.runtime import Platform

TZ = ZoneInfo("Asia/Shanghai")
CONSORTIUM = "https://healthlink.example.org/fhir/CodeSystem/county-medical-consortium"


def _id() -> str:
    return uuid.uuid4().hex


def us(d: date, hour: int) -> int:
    return int(datetime(d.year, d.month, d.day, hour, tzinfo=TZ).timestamp() * 1_000_000)


@dataclass
class Region:
    county: str
    lead: str
    town: str
    other: str
    since: date
    until: date
    patients: list[str] = field(default_factory=list)

    @property
    def members(self) -> list[str]:
        return [self.lead, self.town, self.other]


def _org(platform: Platform, org_id: str, tier: str, parent: str | None, county: str, consortium: str) -> None:
    body = organization(org_id, f"测试{org_id} Test {org_id}", tier, parent)
    body["address"][0]["district"] = county
    body["type"].append({"coding": [{"system": CONSORTIUM, "code": consortium}]})
    repo = platform.system_repository("tests")
    with platform.db.write() as conn:
        repo.update_in(conn, "Organization", org_id, body, if_match=None)
        for dep in ("internal", "lab"):
            did = f"{org_id}-{dep}"
            repo.update_in(conn, "Organization", did, {
                "resourceType": "Organization", "id": did, "active": True, "name": f"{dep} of {org_id}",
                "partOf": {"reference": f"Organization/{org_id}"}}, if_match=None)


def _ndjson(path: Path, rows: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def upload(platform: Platform, institution: str, tmp: Path, *, patients: int, visits: int, prescriptions: int,
           results: int, bad: int = 0) -> list[str]:
    """Ingest NDJSON files as the institution's HIS would; returns the stored Patient ids."""
    tmp.mkdir(parents=True, exist_ok=True)
    pats = [{"resourceType": "Patient", "id": f"p{i}", "gender": "female", "birthDate": "1970-01-01",
             "name": [{"family": "Dashpatient", "given": [f"P{i}"]}]} for i in range(patients)]
    pats += [{"resourceType": "Patient", "id": f"bad{i}", "gender": "male", "birthDate": "2999-01-01"}
             for i in range(bad)]
    subj = {"reference": "Patient/p0"}
    encs = [{"resourceType": "Encounter", "id": f"e{i}", "status": "finished",
             "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
             "subject": subj} for i in range(visits)]
    meds = [{"resourceType": "MedicationRequest", "id": f"m{i}", "status": "active", "intent": "order",
             "medicationCodeableConcept": {"text": "aspirin"}, "subject": subj} for i in range(prescriptions)]
    obs = [{"resourceType": "Observation", "id": f"o{i}", "status": "final", "code": {"text": "Hb"},
            "subject": subj} for i in range(results)]
    files = [_ndjson(tmp / "Patient.ndjson", pats), _ndjson(tmp / "Encounter.ndjson", encs),
             _ndjson(tmp / "MedicationRequest.ndjson", meds), _ndjson(tmp / "Observation.ndjson", obs)]
    ingest_files(platform.services, files, institution=institution)
    r = t.resource
    from sqlalchemy import select

    with platform.db.read() as conn:
        return list(conn.execute(select(r.c.res_id).where(r.c.res_type == "Patient",
                                                          r.c.institution_id == institution)).scalars())


def events(platform: Platform, reg: Region) -> None:  # noqa: PLR0915
    """Record the events of the period (and one day before it) at ``lead`` and ``other``."""
    d1, d2, before = reg.since, reg.until, reg.since - timedelta(days=1)
    lead_int, lead_lab = f"{reg.lead}-internal", f"{reg.lead}-lab"
    rec, med, pre, pev, grant = [], [], [], [], []

    def rg(at: int, inst: str, dept: str | None, kind: str, check: str, **kw: object) -> None:
        rec.append({"id": _id(), "at": at, "kind": kind, "check_id": check, "channel": "api", "institution_id": inst,
                    "department_id": dept, "patient_id": reg.patients[0], **kw})

    # recognition at lead-internal: 4 lines checked, 3 found and reminded (one reminded twice), 2 adopted, 1 declined
    for n, (found, decision) in enumerate([(True, "adopted"), (True, "adopted"), (True, "declined"), (False, None)]):
        c = _id()
        at = us(d2, 9 + n)
        rg(at, reg.lead, lead_int, "checked", c, found=found, item_id="cbc")
        if found:
            rg(at + 1, reg.lead, lead_int, "reminded", c, item_id="cbc", price_fen=2500)
            if n == 0:
                rg(at + 2, reg.lead, lead_int, "reminded", c, item_id="cbc", price_fen=2500)
                rg(at + 3, reg.lead, lead_int, "opened", c)
        if decision == "adopted":
            rg(at + 5, reg.lead, lead_int, "adopted", c, item_id="cbc" if n == 0 else "ct-chest",
               price_fen=2500 if n == 0 else 30000)
        elif decision == "declined":
            rg(at + 5, reg.lead, lead_int, "declined", c, reason="emergency", item_id="cbc")
    # lead-lab: one line checked and adopted on the first day; other: one line checked before the period
    c = _id()
    rg(us(d1, 8), reg.lead, lead_lab, "checked", c, found=True, item_id="glu")
    rg(us(d1, 8) + 1, reg.lead, lead_lab, "reminded", c, item_id="glu", price_fen=1000)
    rg(us(d1, 8) + 2, reg.lead, lead_lab, "adopted", c, item_id="glu", price_fen=1000)
    rg(us(before, 12), reg.other, None, "checked", _id(), found=False, item_id="glu")
    rg(us(d1, 12), reg.other, None, "checked", _id(), found=False, item_id="glu")

    def ms(at: int, inst: str, dept: str | None, kind: str, **kw: object) -> str:
        eid = _id()
        med.append({"id": eid, "at": at, "kind": kind, "check_id": kw.pop("check", _id()), "channel": "api",
                    "institution_id": inst, "department_id": dept, "patient_id": reg.patients[0], **kw})
        return eid

    # medication safety at lead-internal: 3 checks; findings major (interrupting) x2, moderate, minor;
    # one major overridden, the moderate accepted
    for n in range(3):
        ms(us(d2, 10) + n, reg.lead, lead_int, "checked")
    f1 = ms(us(d2, 10) + 10, reg.lead, lead_int, "finding", severity="major", interrupt=True, finding_kind="interaction")
    ms(us(d2, 10) + 11, reg.lead, lead_int, "finding", severity="major", interrupt=True, finding_kind="allergy")
    f3 = ms(us(d2, 10) + 12, reg.lead, lead_int, "finding", severity="moderate", interrupt=False, finding_kind="dose")
    ms(us(d2, 10) + 13, reg.lead, lead_int, "finding", severity="minor", interrupt=False, finding_kind="duplicate")
    ms(us(d2, 11), reg.lead, lead_int, "overridden", severity="major", interrupt=True, finding_id=f1, reason="will-monitor")
    ms(us(d2, 11) + 1, reg.lead, lead_int, "accepted", severity="moderate", interrupt=False, finding_id=f3)
    ms(us(before, 11), reg.other, None, "finding", severity="contraindicated", interrupt=True)

    # pre-review at town... no: at lead-internal: 3 prescriptions; one auto-passed, one returned after
    # 10 minutes, one passed after 20 minutes
    for n, (path, wait) in enumerate([(["auto-passed"], 0), (["queued", "returned"], 10), (["queued", "passed"], 20)]):
        rx, sub = _id(), us(d2, 14) + n * 1_000_000
        pre.append({"id": rx, "institution_id": reg.lead, "department_id": lead_int, "patient_id": reg.patients[0],
                    "submitted_at": sub, "day": d2.isoformat(), "status": path[-1], "max_level": 2, "queued": len(path) > 1,
                    "escalated": False, "problems": "[]", "lines": "[]",
                    "decided_at": sub + wait * 60_000_000 if wait else None})
        pev.append({"id": _id(), "at": sub, "prescription_id": rx, "kind": "submitted", "institution_id": reg.lead,
                    "day": d2.isoformat()})
        for k in path:
            decided = k in ("returned", "passed")
            pev.append({"id": _id(), "at": sub + (wait * 60_000_000 if decided else 1), "prescription_id": rx,
                        "kind": k, "institution_id": reg.lead, "day": d2.isoformat(),
                        "username": "pharm" if decided else None})

    def gr(at: int, inst: str, kind: str, reviewed: bool = False) -> None:
        grant.append({"id": _id(), "consent_id": _id(), "kind": kind, "status": "active", "holder": "doc",
                      "institution_id": inst, "encounter_id": _id(), "patient_id": reg.patients[0],
                      "person_id": _id(), "classes": "*", "sensitive": "", "purpose": "TREAT", "created": at,
                      "expires": at + 3_600_000_000, "reviewed": at + 1 if reviewed else None})

    gr(us(d1, 9), reg.lead, "code")
    gr(us(d2, 9), reg.lead, "code")
    gr(us(d2, 10), reg.lead, "qr")
    gr(us(d2, 11), reg.lead, "break-glass")
    gr(us(d2, 12), reg.lead, "break-glass", reviewed=True)
    gr(us(before, 12), reg.lead, "in-person")
    with platform.db.write() as conn:
        for table, rows in ((t.recognition_event, rec), (t.medsafety_event, med), (t.prereview_prescription, pre),
                            (t.prereview_event, pev), (t.access_grant, grant)):
            cols = [c.name for c in table.columns]
            conn.execute(table.insert(), [{c: r.get(c) for c in cols} for r in rows])


def build(platform: Platform, tmp: Path) -> Region:
    tag = uuid.uuid4().hex[:8]
    today = datetime.now(TZ).date()
    reg = Region(county=f"测试县{tag}", lead=f"lead-{tag}", town=f"town-{tag}", other=f"other-{tag}",
                 since=today - timedelta(days=1), until=today)
    _org(platform, reg.lead, "county", None, reg.county, f"{tag}-consortium")
    _org(platform, reg.town, "township", reg.lead, reg.county, f"{tag}-consortium")
    _org(platform, reg.other, "county", None, f"别县{tag}", f"{tag}-other-consortium")
    reg.patients = upload(platform, reg.lead, tmp / "lead", patients=3, visits=2, prescriptions=4, results=5, bad=1)
    upload(platform, reg.town, tmp / "town", patients=1, visits=0, prescriptions=0, results=0)
    # one result deleted afterwards: no longer held
    from sqlalchemy import select

    r = t.resource
    with platform.db.read() as conn:
        obs = conn.execute(select(r.c.res_id).where(r.c.res_type == "Observation", r.c.institution_id == reg.lead)
                           .limit(1)).scalar_one()
    with platform.db.write() as conn:
        from healthlink.fhir import store

        store.delete_resource(conn, store.read_current(conn, "Observation", obs))
    events(platform, reg)
    return reg
