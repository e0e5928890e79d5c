"""The order-time medication check as plain JSON (``/api/medsafety``; issue 8, item 2), through the
real HTTP app against the test database: a check of one draft or several, the consent rule (a
hint without the patient's grant), overrides with and without a reason, the knowledge in force,
the reasons, the roles that may check, and bad input answered with the element it concerns."""

from __future__ import annotations

import orjson
import pytest
from grantkit import actor
from medkit import MWorld, build, draft
from sqlalchemy import select

from healthlink.db import tables as t
from healthlink.medsafety.knowledge import load
from healthlink.medsafety.service import OVERRIDE_REASON_SYSTEM, OVERRIDE_REASONS

KB = load()


def rx(ingredient: str) -> str:
    return KB.ingredient(ingredient).rxnorm


@pytest.fixture
def env(platform, staff, his_client):
    w = build(platform)
    login = staff("doctor", institution=w.a)
    prac = platform.accounts.actor_from_token(login.headers["Authorization"][7:]).practitioner_id
    w.doctor = actor("doctor", w.a, username=login.username, practitioner_id=prac)
    w.doctors[w.a] = w.doctor
    return w, login, prac, his_client(institution=w.a)


def events(platform, w: MWorld, **where) -> list:
    e = t.medsafety_event
    with platform.db.read() as conn:
        return conn.execute(select(e).where(e.c.patient_id == w.patient,
                                            *(e.c[k] == v for k, v in where.items()))).all()


def _problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers["content-type"]
    return r.json()


def test_a_check_shows_a_hint_without_a_grant_and_the_drug_with_one(client, platform, env) -> None:
    w, login, _prac, _his = env
    mid = w.med(w.b, rx("clarithromycin"))
    r = client.post("/api/medsafety/check", headers=login.headers,
                    json={"patient": w.patient, "encounter": w.encounter, "draft": draft(rx("simvastatin"))})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["interrupt"] and got["grant_needed"]
    (chk,) = got["checks"]
    (f,) = chk["findings"]
    assert (f["kind"], f["severity"], f["interrupt"], f["onc_high_priority"]) == ("interaction", "contraindicated",
                                                                                  True, True)
    assert f["concerns"]["institution_name"] == "州人民医院 B" and f["concerns"]["date"] == "2026-10-01"
    assert f["grant_needed"] and f["source"]["citation"].startswith("Phansalkar")
    for secret in (mid, "clarithromycin", "onc-25"):
        assert secret not in r.text, secret
    w.grant()
    r = client.post("/api/medsafety/check", headers=login.headers,
                    json={"patient": w.patient, "encounter": w.encounter,
                          "draft": [draft(rx("simvastatin")), draft(rx("metformin"))]})
    assert r.status_code == 200, r.text
    one, two = r.json()["checks"]
    (f,) = one["findings"]
    assert f["concerns"]["reference"] == f"MedicationRequest/{mid}" and "onc-25" in f["knowledge_id"]
    assert f["mechanism"] and f["management"] and not f["grant_needed"]
    assert two["findings"] == [] and two["ingredients"] == ["metformin"]


def test_override_needs_a_reason_for_an_interrupting_finding_and_is_recorded(client, platform, staff, env) -> None:
    w, login, _prac, his = env
    w.med(w.b, rx("clarithromycin"))
    r = client.post("/api/medsafety/check", headers=login.headers,
                    json={"patient": w.patient, "draft": draft(rx("simvastatin"))})
    fid = r.json()["checks"][0]["findings"][0]["id"]
    url = f"/api/medsafety/findings/{fid}/override"
    assert _problem(client.post(url, json={}, headers=login.headers), 400)["errors"][0]["pointer"] == ["reason"]
    assert _problem(client.post(url, json={"reason": "bored"}, headers=login.headers), 400)["errors"][0][
        "pointer"] == ["reason"]
    assert _problem(client.post(url, json={"reason": "other"}, headers=login.headers), 400)["errors"][0][
        "pointer"] == ["text"]
    r = client.post(url, json={"reason": "dose-adjusted", "text": "减量至 10 mg"}, headers=login.headers)
    assert r.status_code == 200, r.text
    (ev,) = events(platform, w, kind="overridden")
    assert (ev.id, ev.reason, ev.reason_text, ev.channel) == (r.json()["recorded_as"], "dose-adjusted",
                                                              "减量至 10 mg", "api")
    # a hospital system decides for the member of staff the finding was shown to
    r2 = client.post(url, json={"reason": "dose-adjusted"}, headers=his.headers)
    assert r2.status_code == 200 and r2.json()["recorded_as"] == ev.id
    # unknown, or another institution's: 404; accepting an overridden finding: 409
    _problem(client.post("/api/medsafety/findings/nope/override", json={"reason": "other"}, headers=login.headers), 404)
    _problem(client.post(url, json={"reason": "will-monitor"}, headers=staff("doctor", institution=w.b).headers), 404)
    _problem(client.post(f"/api/medsafety/findings/{fid}/accept", headers=login.headers), 409)


def test_the_knowledge_in_force_and_the_reasons(client, env) -> None:
    login = env[1]
    r = client.get("/api/medsafety/knowledge", headers=login.headers)
    assert r.status_code == 200, r.text
    k = r.json()
    assert k["version"] == KB.version and k["counts"] == KB.counts()
    assert k["counts"]["onc_high_priority"] == 15 and k["stored"]["sha256"]
    assert "DDInter" in k["provenance"]["licence"]  # says what was not used, and why
    assert {s["id"] for s in k["sources"]} >= {"onc-2012", "onc-2013", "fda-label"}
    r = client.get("/api/medsafety/reasons", headers=login.headers)
    assert r.json()["system"] == OVERRIDE_REASON_SYSTEM
    assert [x["code"] for x in r.json()["reasons"]] == list(OVERRIDE_REASONS)
    assert _problem(client.get("/api/medsafety/reasons"), 401)


def test_only_prescribing_staff_or_their_hospital_system_check(client, platform, staff, env) -> None:
    w, login, prac, his = env
    body = {"patient": w.patient, "draft": draft(rx("simvastatin"))}
    for role in ("registration_clerk", "quality_manager"):
        _problem(client.post("/api/medsafety/check", json=body, headers=staff(role, institution=w.a).headers), 403)
    for role in ("nurse", "pharmacist"):
        assert client.post("/api/medsafety/check", json=body,
                           headers=staff(role, institution=w.a).headers).status_code == 200
    # a hospital system names the practitioner; without one it is told so
    assert _problem(client.post("/api/medsafety/check", json=body, headers=his.headers), 400)["errors"][0][
        "pointer"] == ["practitioner"]
    r = client.post("/api/medsafety/check", json={**body, "practitioner": f"Practitioner/{prac}"}, headers=his.headers)
    assert r.status_code == 200, r.text
    (ev,) = events(platform, w, kind="checked", channel="api", username=login.username)
    assert ev.practitioner == f"Practitioner/{prac}"
    # a Patient of another institution: refused (the same answer as one that does not exist)
    _problem(client.post("/api/medsafety/check", json={**body, "patient": w.patients[w.b]}, headers=login.headers),
             404)
    _problem(client.post("/api/medsafety/check", json=body), 401)


@pytest.mark.parametrize("body,status,pointer", [
    ({"draft": {"resourceType": "MedicationRequest"}}, 422, None),
    ({"patient": "P", "draft": "aspirin"}, 422, None),
    ({"patient": "P", "draft": {"resourceType": "Observation"}}, 400, "draft.resourceType"),
    ({"patient": "P", "draft": [{"resourceType": "MedicationRequest", "medicationCodeableConcept": {}},
                                {"resourceType": "MedicationRequest"}]}, 400, "draft[1].medication[x]"),
    ({"patient": "P", "draft": []}, 400, "draft"),
    ({"patient": "P", "draft": {"resourceType": "MedicationRequest", "id": 7,
                                "medicationCodeableConcept": {}}}, 400, "draft.id"),
])
def test_bad_input_is_refused_naming_the_element(client, env, body, status, pointer) -> None:
    p = _problem(client.post("/api/medsafety/check", json=body, headers=env[1].headers), status)
    if pointer:
        assert p["errors"][0]["pointer"] == [pointer], p
    assert "Traceback" not in orjson.dumps(p).decode()


def test_repeat_prescriptions_give_one_finding_per_institution_the_newest(client, platform, env) -> None:
    w, login, _prac, _his = env
    w.grant()
    old = [w.med(w.b, rx("warfarin"), when=day) for day in ("2026-06-01", "2026-08-01")]
    newest = w.med(w.b, rx("warfarin"), when="2026-11-01")
    own = w.med(w.a, rx("warfarin"), when="2026-09-01")
    r = client.post("/api/medsafety/check", headers=login.headers,
                    json={"patient": w.patient, "draft": draft(rx("ibuprofen"))})
    assert r.status_code == 200, r.text
    found = [f for f in r.json()["checks"][0]["findings"] if f["kind"] == "interaction"]
    assert sorted((f["concerns"]["institution_id"], f["concerns"]["reference"]) for f in found) == sorted(
        [(w.b, f"MedicationRequest/{newest}"), (w.a, f"MedicationRequest/{own}")])
    assert not any(o in r.text for o in old)
