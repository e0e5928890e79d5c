"""Pre-review rules and service pieces (issue 8, item 3; docs/prereview.md): the rules file, the
antimicrobial tiers and rights, pairs inside one prescription (incompatibility, solvent,
infusion rate), which institutions need pre-review, and the demo seeding."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from healthlink.db import tables as t
from healthlink.errors import Invalid
from healthlink.medsafety import prereview_rules as pr
from healthlink.medsafety.prereview import PreReview

LD = "https://healthlink.example.org/fhir/CodeSystem/local-drug"
RX = "http://www.nlm.nih.gov/research/umls/rxnorm"


@pytest.fixture(scope="module")
def kb_rules(platform):
    return platform.prereview.knowledge, platform.prereview.rules


def line(kb, n: int, system: str, code: str, route: str | None = "iv", **body) -> pr.Line:
    b = {"resourceType": "MedicationRequest", "medicationCodeableConcept": {"coding": [{"system": system, "code": code}]},
         **body}
    return pr.Line(n, f"MedicationRequest/l{n}", b, kb.ingredients_of(system, code), code, route)


def test_every_antimicrobial_tier_and_right_follows_the_rank(kb_rules) -> None:
    kb, rules = kb_rules
    assert pr.tier_of(kb, rules, "meropenem")[0] == "special"
    assert pr.tier_of(kb, rules, "ceftriaxone")[0] == "restricted"
    assert pr.tier_of(kb, rules, "amoxicillin")[0] == "non-restricted"
    assert pr.tier_of(kb, rules, "acetaminophen") is None
    rights = frozenset({"antimicrobial-special"})  # a higher right includes the lower tiers
    lines = [line(kb, 0, RX, "29561"), line(kb, 1, RX, "2193")]
    assert not pr.legality(kb, rules, lines, rights=rights, prescriber={"active": True})
    got = pr.legality(kb, rules, lines, rights=frozenset({"antimicrobial-non-restricted"}), prescriber={"active": True})
    assert {p.rule for p in got} == {"antimicrobial-special", "antimicrobial-restricted"}
    assert all(p.level == 3 and p.category == "legality" for p in got)
    assert pr.legality(kb, rules, [], rights=rights, prescriber=None)[0].rule == "prescriber-unknown"


def test_ceftriaxone_with_calcium_iv_is_incompatible_and_amphotericin_in_saline_a_wrong_solvent(kb_rules) -> None:
    kb, rules = kb_rules
    got = pr.appropriateness(kb, rules, [line(kb, 0, RX, "2193", reasonCode=[{"text": "x"}]),
                                         line(kb, 1, LD, "LD-S003", reasonCode=[{"text": "x"}])])
    inc = [p for p in got if p.category == "incompatibility"]
    assert inc and inc[0].level == 3 and inc[0].source["ref"] == "fda-label-pr"
    got = pr.appropriateness(kb, rules, [line(kb, 0, RX, "732", reasonCode=[{"text": "x"}]),
                                         line(kb, 1, LD, "LD-S001", reasonCode=[{"text": "x"}])])
    assert [p.rule for p in got if p.category == "solvent-rate"] == ["amphotericin-b-solvent"]
    assert not [p for p in got if p.rule == "unknown-drug"]  # the solvent is known


def test_vancomycin_infused_too_fast_and_a_route_not_of_the_drug(kb_rules) -> None:
    kb, rules = kb_rules
    fast = line(kb, 0, RX, "11124", reasonCode=[{"text": "x"}],
                dosageInstruction=[{"timing": {"repeat": {"duration": 30, "durationUnit": "min"}}}])
    got = pr.appropriateness(kb, rules, [fast])
    assert [(p.category, p.level) for p in got] == [("solvent-rate", 2)]
    slow = line(kb, 0, RX, "11124", reasonCode=[{"text": "x"}],
                dosageInstruction=[{"timing": {"repeat": {"duration": 2, "durationUnit": "h"}}}])
    assert not pr.appropriateness(kb, rules, [slow])
    iv_amox = line(kb, 0, RX, "723", reasonCode=[{"text": "x"}], extension=[
        {"url": pr.SKIN_TEST_EXT, "valueCode": "negative"}])
    assert [p.rule for p in pr.appropriateness(kb, rules, [iv_amox])] == ["amoxicillin-route"]


def test_a_positive_skin_test_and_an_unknown_drug(kb_rules) -> None:
    kb, rules = kb_rules
    pos = line(kb, 0, RX, "723", "oral", reasonCode=[{"text": "x"}],
               extension=[{"url": pr.SKIN_TEST_EXT, "valueCode": "positive"}])
    assert [(p.category, p.level) for p in pr.appropriateness(kb, rules, [pos])] == [("skin-test", 3)]
    unknown = line(kb, 0, LD, "LD-NOPE", "oral", reasonCode=[{"text": "x"}])
    assert [p.rule for p in pr.appropriateness(kb, rules, [unknown])] == ["unknown-drug"]


def test_which_institutions_need_pre_review(platform) -> None:
    from recogkit import institution

    town, county = institution(platform, "township"), institution(platform, "county")
    p = platform.prereview
    p.directory.forget()
    assert p.required_for(town) and not p.required_for(county) and not p.required_for(None)
    only = PreReview(platform.services, platform.medsafety, institutions=[county])
    assert only.required_for(county) and not only.required_for(town)
    with pytest.raises(Invalid):
        PreReview(platform.services, platform.medsafety, timeout_policy="drop")


def test_the_demo_region_has_a_centre_pharmacist_and_queued_township_prescriptions(platform, client) -> None:
    from grantkit import actor, ctx

    from healthlink.demogen.load import write_directory
    from healthlink.demogen.prereview import DOCTOR, PHARMACIST, seed_prereview

    write_directory(platform)
    platform.prereview.directory.forget()
    repo = platform.repository(ctx(actor("doctor", "jiegu-township")))
    for name in ("才仁", "拉毛", "多杰"):
        repo.create({"resourceType": "Patient", "name": [{"text": name}], "gender": "male",
                     "birthDate": "1975-01-01"}, res_type="Patient")
    first = seed_prereview(platform)
    assert seed_prereview(platform) == 0  # idempotent
    p, u = t.prereview_prescription, t.user_account
    with platform.db.read() as conn:
        rows = conn.execute(select(p.c.status).where(p.c.username == DOCTOR)).scalars().all()
        role = conn.execute(select(u.c.roles).where(u.c.username == PHARMACIST)).scalar_one()
    assert first in (0, 4) and len(rows) == 4
    assert sorted(rows).count("pending") == 3 and "auto-passed" in rows
    assert "prereview_pharmacist" in str(role)
    login = client.post("/api/auth/login", json={"username": PHARMACIST, "password": "demo-password-1"})
    assert login.status_code == 200
    q = client.get("/api/prereview/queue", headers={"Authorization": f"Bearer {login.json()['access_token']}"})
    assert sum(1 for i in q.json()["items"] if i["username"] == DOCTOR) == 3
