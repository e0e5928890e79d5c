"""Grants end to end in the core (issue 5): request by code, approve, read another institution's
records through every read path, sensitive categories, closing the encounter; on the real database."""

from __future__ import annotations

import pytest

from healthlink.errors import NotFound
from grantkit import actor, build, ctx, last_consent_code


@pytest.fixture
def world(platform, make_institution):  # noqa: ANN001, ANN201
    a, b = make_institution(), make_institution()
    doctor = actor("doctor", a)
    return build(platform, a, b, doctor_a=doctor), doctor


def ids(items) -> set[str]:  # noqa: ANN001
    return {f"{s.res_type}/{s.res_id}" for s in items}


def test_code_grant_opens_other_institution_until_the_encounter_closes(platform, world):  # noqa: ANN001
    w, doctor = world
    repo = platform.repository(ctx(doctor))
    with pytest.raises(NotFound):
        repo.read("Observation", w.lab_b)
    g = platform.grants.request(ctx(doctor), patient_id=w.patient_a, encounter_id=w.encounter_a,
                                purpose="diabetes follow-up", classes=["laboratory", "medications"])
    assert g.status == "pending"
    code = last_consent_code(platform, w.phone)
    g = platform.grants.confirm_code(ctx(doctor), g.id, code)
    assert g.status == "active"
    repo = platform.repository(ctx(doctor))
    s = repo.read("Observation", w.lab_b)
    assert s.institution_id == w.b
    items, _ = platform.repository(ctx(doctor)).everything(w.patient_a, count=100, cursor=None)
    got = ids(items)
    assert {f"Observation/{w.lab_b}", f"MedicationRequest/{w.med_b}", f"Patient/{w.patient_b}",
            f"Observation/{w.obs_a}"} <= got
    assert f"Condition/{w.depression_b}" not in got and f"Observation/{w.hiv_b}" not in got
    assert f"Encounter/{w.encounter_b}" not in got  # encounters were not asked for
    page = platform.repository(ctx(doctor)).search("Observation", [("person", w.person)])
    assert ids(page.matches) == {f"Observation/{w.lab_b}", f"Observation/{w.obs_a}"}
    with pytest.raises(NotFound):
        platform.repository(ctx(doctor)).read("Condition", w.depression_b)
    # closing the encounter ends access for the very next request
    ended = platform.grants.close_consultation(ctx(doctor), w.encounter_a)
    assert ended == [g.id]
    with pytest.raises(NotFound):
        platform.repository(ctx(doctor)).read("Observation", w.lab_b)
    page = platform.repository(ctx(doctor)).search("Observation", [("person", w.person)])
    assert ids(page.matches) == {f"Observation/{w.obs_a}"}


def test_break_glass_marks_records_and_queues_for_review(platform, world, make_institution):  # noqa: ANN001
    w, doctor = world
    g = platform.grants.break_glass(ctx(doctor), patient_id=w.patient_a, encounter_id=w.encounter_a,
                                    reason="unconscious after a road accident, allergies unknown")
    s = platform.repository(ctx(doctor)).read("Observation", w.lab_b)
    assert '"BTG"' in s.content
    qm = actor("quality_manager", w.a)
    assert [x.id for x in platform.grants.review_queue(ctx(qm))] == [g.id]
    platform.grants.review(ctx(qm), g.id, note="justified: emergency admission")
    assert platform.grants.review_queue(ctx(qm)) == []


def test_outside_summary_says_what_exists_and_nothing_more(platform, world, client, staff):  # noqa: ANN001
    w, doctor = world
    hints = platform.repository(ctx(doctor)).outside_summary(w.patient_a)
    assert {(h["class"], h["code"], h["institution"]) for h in hints} == {
        ("laboratory", "2345-7", w.b), ("medications", "6809", w.b)}  # the depression, HIV test: no hint
    assert all(h["date"] is None or len(h["date"]) == 10 for h in hints)
    text = repr(hints)
    for hidden in (w.lab_b, w.med_b, w.patient_b, "5.4", "mmol", w.depression_b, w.hiv_b, "F32"):
        assert hidden not in text
    # a second identical result gives no second hint (no counts)
    from healthlink.access import RequestContext
    from grantkit import lab

    other = actor("doctor", w.b)
    platform.repository(RequestContext(actor=other)).create(lab(w.patient_b), res_type="Observation")
    assert len(platform.repository(ctx(doctor)).outside_summary(w.patient_a)) == len(hints)
    # the same over HTTP, and only for the actor's own patient
    d = staff("doctor", institution=w.a)
    r = client.get(f"/fhir/Patient/{w.patient_a}/$outside-summary", headers=d.headers)
    assert r.status_code == 200 and len(r.json()["parameter"]) == 2
    assert w.lab_b not in r.text
    r = client.get(f"/fhir/Patient/{w.patient_b}/$outside-summary", headers=d.headers)
    assert r.status_code == 404
    clerk = staff("registration_clerk", institution=w.a)
    assert client.get(f"/fhir/Patient/{w.patient_a}/$outside-summary", headers=clerk.headers).status_code == 403


def test_unmerge_ends_a_grants_reach_at_once(platform, world):  # noqa: ANN001
    from healthlink.identity.review import Review

    w, doctor = world
    g = platform.grants.request(ctx(doctor), patient_id=w.patient_a, encounter_id=w.encounter_a,
                                purpose="follow-up", classes=["*"])
    platform.grants.confirm_code(ctx(doctor), g.id, last_consent_code(platform, w.phone))
    assert platform.repository(ctx(doctor)).read("Observation", w.lab_b)
    reviewer = actor("empi_reviewer", w.a)
    Review(platform.identity).unmerge(ctx(reviewer), w.patient_b)
    with pytest.raises(NotFound):
        platform.repository(ctx(doctor)).read("Observation", w.lab_b)
    items, _ = platform.repository(ctx(doctor)).everything(w.patient_a, count=100, cursor=None)
    assert not any(s.institution_id == w.b for s in items)


def test_a_patient_sees_all_own_records_and_nobody_elses(platform, world, make_institution):  # noqa: ANN001
    from healthlink.access import RequestContext
    from healthlink.access.context import Actor

    w, doctor = world
    me = platform.repository(RequestContext(actor=Actor.patient(1, (w.person,))))
    items, _ = me.person_records(w.person, count=1000, cursor=None)
    got = ids(items)
    assert {f"Observation/{w.lab_b}", f"Condition/{w.depression_b}", f"Observation/{w.hiv_b}",
            f"Observation/{w.obs_a}", f"Patient/{w.patient_a}", f"Patient/{w.patient_b}"} <= got
    assert me.read("Condition", w.depression_b).res_id == w.depression_b
    other = build(platform, make_institution(), make_institution())
    with pytest.raises(NotFound):
        me.read("Observation", other.lab_b)
    with pytest.raises(NotFound):
        me.person_records(other.person, count=10, cursor=None)
    page = me.search("Observation", [])
    assert {s.patient_id for s in page.matches} <= {w.patient_a, w.patient_b}


def test_a_patient_cannot_revoke_break_the_glass_and_a_resend_extends_the_request(platform, world):  # noqa: ANN001
    from sqlalchemy import select, update

    from healthlink.db import tables as t
    from healthlink.errors import Conflict

    w, doctor = world
    with platform.db.read() as conn:
        account = conn.execute(select(t.patient_account.c.id).where(
            t.patient_account.c.person_id == w.person)).scalar_one()
    g = platform.grants.break_glass(ctx(doctor), patient_id=w.patient_a, encounter_id=w.encounter_a,
                                    reason="unconscious, brought in by ambulance")
    with pytest.raises(Conflict):
        platform.grants.revoke(account, g.id)
    assert platform.repository(ctx(doctor)).read("Observation", w.lab_b)
    r = platform.grants.request(ctx(doctor), patient_id=w.patient_a, encounter_id=w.encounter_a,
                                purpose="follow-up")
    with platform.db.write() as conn:  # eight minutes later
        conn.execute(update(t.access_grant).where(t.access_grant.c.id == r.id)
                     .values(expires=t.access_grant.c.expires - 480_000_000))
    platform.grants.resend(ctx(doctor), r.id)
    with platform.db.read() as conn:
        expires = conn.execute(select(t.access_grant.c.expires).where(t.access_grant.c.id == r.id)).scalar_one()
    assert expires > r.expires - 60_000_000  # about ten minutes from the resend again
    assert platform.grants.confirm_code(ctx(doctor), r.id, last_consent_code(platform, w.phone)).status == "active"
