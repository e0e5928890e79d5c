"""Grants end to end in the core (issue 5): request by code, approve, read another institution's
records through every read path, sensitive categories, closing the encounter; on the real database."""

from __future__ import annotations

import pytest

from healthlink.errors import NotFound
from tests.grantkit import actor, build, ctx, last_consent_code


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
