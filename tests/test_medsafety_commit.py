"""How an order-time medication check is recorded (ADR 0016): its events ride on the group commit of
the check's audit record, so both are written or neither is; and the Person's records are read in
one statement, which must also serve a Patient the master patient index has not linked (yet).
Through the real HTTP app (``/api/medsafety/check``) against the test database."""

from __future__ import annotations

import pytest
from grantkit import actor, ctx
from medkit import MWorld, build, draft
from sqlalchemy import select

from healthlink.db import tables as t
from healthlink.medsafety.knowledge import load
from healthlink.medsafety.service import new_id

KB = load()


def rx(ingredient: str) -> str:
    return KB.ingredient(ingredient).rxnorm


@pytest.fixture
def env(platform, staff):
    w = build(platform)
    login = staff("doctor", institution=w.a)
    return w, login


def events(platform, patient: str) -> list:
    e = t.medsafety_event
    with platform.db.read() as conn:
        return conn.execute(select(e).where(e.c.patient_id == patient)).all()


def check_records(platform, patient: str) -> list[str]:
    """The ids of the audit records of medication checks of ``patient``."""
    ev, en = t.audit_event, t.audit_entity
    with platform.db.read() as conn:
        rows = conn.execute(select(ev.c.event_id, ev.c.content).join(en, en.c.seq == ev.c.seq)
                            .where(en.c.ref == f"Patient/{patient}")).all()
    return sorted({eid for eid, content in rows if "$medication-check" in _query(content)})


def _query(content: str) -> str:
    import base64

    import orjson

    out = ""
    for e in orjson.loads(content).get("entity") or []:
        if e.get("query"):
            out += base64.b64decode(e["query"]).decode()
    return out


def test_a_check_whose_audit_record_cannot_be_written_answers_503_and_records_no_event(
        client, platform, env: tuple[MWorld, object]) -> None:
    w, login = env
    w.med(w.b, rx("clarithromycin"))
    body = {"patient": w.patient, "encounter": w.encounter, "draft": draft(rx("simvastatin"))}
    platform.audit.fail_next = RuntimeError("injected audit failure: disk full")
    try:
        r = client.post("/api/medsafety/check", headers=login.headers, json=body)
    finally:
        platform.audit.fail_next = None
    assert r.status_code == 503, r.text
    assert "clarithromycin" not in r.text and "finding" not in r.text
    assert events(platform, w.patient) == [] and check_records(platform, w.patient) == []
    # the same check once the audit writer works again: the events and the record, both
    r = client.post("/api/medsafety/check", headers=login.headers, json=body)
    assert r.status_code == 200, r.text
    (chk,) = r.json()["checks"]
    (f,) = chk["findings"]
    kinds = sorted(e.kind for e in events(platform, w.patient))
    assert kinds == ["checked", "finding"]
    assert {e.id for e in events(platform, w.patient) if e.kind == "finding"} == {f["id"]}
    assert len(check_records(platform, w.patient)) == 1


def test_a_patient_not_linked_to_a_person_is_checked_against_its_own_records(client, platform, env) -> None:
    w, login = env
    doctor = actor("doctor", w.a)
    repo = platform.repository(ctx(doctor))
    with platform.db.write() as conn:  # a bulk upload's Patient: linked when its batch ends, not yet
        p = repo.create_in(conn, {"resourceType": "Patient", "name": [{"text": "未关联 患者"}], "gender": "male",
                                  "birthDate": "1970-03-01"}, link=False)
        repo.audit_in(conn, "create", [p])
    with platform.db.read() as conn:
        assert conn.execute(select(t.person_link).where(t.person_link.c.patient_id == p.res_id)).first() is None
    mid = repo.create({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                       "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                                 "code": rx("clarithromycin")}]},
                       "subject": {"reference": f"Patient/{p.res_id}"}, "authoredOn": "2026-10-02"},
                      res_type="MedicationRequest").stored.res_id
    r = client.post("/api/medsafety/check", headers=login.headers,
                    json={"patient": p.res_id, "draft": draft(rx("simvastatin"))})
    assert r.status_code == 200, r.text
    (chk,) = r.json()["checks"]
    assert chk["person_id"] is None
    (f,) = chk["findings"]
    assert (f["kind"], f["severity"]) == ("interaction", "contraindicated")
    assert f["concerns"]["reference"] == f"MedicationRequest/{mid}" and not f["grant_needed"]
    assert sorted(e.kind for e in events(platform, p.res_id)) == ["checked", "finding"]


def test_finding_ids_are_distinct_time_ordered_uuids() -> None:
    import time
    import uuid

    before = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(1000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 1000
    assert all(len(i) == 32 and i[12] == "7" and i[16] in "89ab" for i in ids)  # RFC 9562 version 7
    assert all(uuid.UUID(i).version == 7 for i in ids)
    stamps = [int(i[:12], 16) for i in ids]  # the first 48 bits: Unix milliseconds
    assert stamps == sorted(stamps) and before <= stamps[0] and stamps[-1] <= after
