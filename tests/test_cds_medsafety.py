"""CDS Hooks 2.0 services for the order-time medication check (issue 8, item 2; docs/cds-hooks.md),
through the real HTTP app against the test database: discovery, an ONC high-priority pair with the
drug at another institution (a hint without the patient's grant, the drug named with it), a minor
interaction that does not interrupt, overrides and acceptances by feedback, and order-select
followed by order-sign of the same draft (the same finding ids, nothing counted twice)."""

from __future__ import annotations

import uuid

import orjson
import pytest
from grantkit import actor
from medkit import RXNORM, MWorld, build, draft
from sqlalchemy import select
from test_cds_hooks import assert_card, assert_response

from healthlink.api.cds_medsafety import suggestion_id
from healthlink.db import tables as t
from healthlink.medsafety.knowledge import load
from healthlink.medsafety.service import OVERRIDE_REASON_SYSTEM, OVERRIDE_REASONS

KB = load()
SELECT = "/cds-services/medsafety-order-select"
SIGN = "/cds-services/medsafety-order-sign"


def rx(ingredient: str) -> str:
    return KB.ingredient(ingredient).rxnorm


def world(platform, staff, his_client):
    """tests/medkit.py's region with a real login for the doctor at A and A's hospital system."""
    w = build(platform)
    login = staff("doctor", institution=w.a)
    prac = platform.accounts.actor_from_token(login.headers["Authorization"][7:]).practitioner_id
    w.doctor = actor("doctor", w.a, username=login.username, practitioner_id=prac)
    w.doctors[w.a] = w.doctor
    return w, login, prac, his_client(institution=w.a)


def med_draft(ingredient: str, **kw) -> dict:
    d = draft(rx(ingredient), **kw)
    d["id"] = f"draft-{uuid.uuid4().hex[:8]}"
    return d


def hook(kind: str, w: MWorld, prac: str, drafts: list[dict], *, selections: list[str] | None = None,
         prefetch: bool = False) -> dict:
    ctx = {"userId": f"Practitioner/{prac}", "patientId": w.patient, "encounterId": w.encounter,
           "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": d} for d in drafts]}}
    if kind == "order-select":
        ctx["selections"] = selections or [f"MedicationRequest/{d['id']}" for d in drafts]
    body = {"hook": kind, "hookInstance": str(uuid.uuid4()), "context": ctx}
    if prefetch:
        body["prefetch"] = {"patient": {"resourceType": "Patient", "id": w.patient}}
    return body


def events(platform, w: MWorld, **where) -> list:
    e = t.medsafety_event
    with platform.db.read() as conn:
        return conn.execute(select(e).where(e.c.patient_id == w.patient,
                                            *(e.c[k] == v for k, v in where.items()))).all()


def _problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers["content-type"]
    return r.json()


def test_discovery_lists_the_medication_safety_services(client) -> None:
    services = {s["id"]: s for s in client.get("/cds-services").json()["services"]}
    assert services["medsafety-order-select"]["hook"] == "order-select"
    assert services["medsafety-order-sign"]["hook"] == "order-sign"
    for sid in ("medsafety-order-select", "medsafety-order-sign"):
        s = services[sid]
        assert s["prefetch"] == {"patient": "Patient/{{context.patientId}}"} and s["title"] and s["description"]


def test_an_onc_pair_at_another_institution_is_a_critical_hint_without_a_grant_and_named_with_one(
        client, platform, staff, his_client) -> None:
    w, login, prac, his = world(platform, staff, his_client)
    mid = w.med(w.b, rx("clarithromycin"))  # ONC row 25 with simvastatin, recorded at B
    d = med_draft("simvastatin")
    r = client.post(SELECT, json=hook("order-select", w, prac, [d], prefetch=True), headers=his.headers)
    assert r.status_code == 200, r.text
    assert_response(r.json())
    (c,) = r.json()["cards"]
    assert c["indicator"] == "critical"
    assert "州人民医院 B" in c["summary"] and "2026-10-01" in c["summary"] and "需患者授权" in c["summary"]
    assert len(c["summary"]) < 140
    text = orjson.dumps(r.json()).decode()
    for secret in (mid, w.patients[w.b], "clarithromycin", KB.ingredient("clarithromycin").name_zh, "onc-25"):
        assert secret not in text, secret
    assert c["links"] == [{"label": "请患者授权查看 Ask the patient to authorise access",
                           "url": f"http://testserver/patients/{w.patient}/outside", "type": "absolute"}]
    assert "Phansalkar" in c["detail"] and "Grant needed" in c["detail"]
    assert [(x["system"], x["code"]) for x in c["overrideReasons"]] == [
        (OVERRIDE_REASON_SYSTEM, code) for code in OVERRIDE_REASONS]
    assert c["suggestions"][0]["actions"] == [{"type": "delete", "resourceId": f"MedicationRequest/{d['id']}",
                                               "description": "撤销此草稿医嘱 Remove the draft order"}]
    assert c["selectionBehavior"] == "at-most-one"
    # the patient authorises access: the same order now names the drug, with mechanism, management, source
    w.grant()
    d2 = med_draft("simvastatin")
    r = client.post(SIGN, json=hook("order-sign", w, prac, [d2]), headers=login.headers)
    assert r.status_code == 200, r.text
    assert_response(r.json())
    (c,) = r.json()["cards"]
    assert c["indicator"] == "critical" and "clarithromycin" in c["summary"].lower() + c["detail"].lower()
    for words in ("Mechanism", "Management", "Phansalkar", "Table 2, row 25", "ONC"):
        assert words in c["detail"], words
    assert {"label": "相关记录 The record (FHIR)", "url": f"http://testserver/fhir/MedicationRequest/{mid}",
            "type": "absolute"} in c["links"]


def test_a_minor_interaction_is_an_info_card_that_does_not_interrupt(client, platform, staff, his_client) -> None:
    w, _login, prac, his = world(platform, staff, his_client)
    w.grant()
    w.med(w.b, rx("metoprolol"))
    r = client.post(SELECT, json=hook("order-select", w, prac, [med_draft("ibuprofen")]), headers=his.headers)
    assert r.status_code == 200, r.text
    (c,) = r.json()["cards"]
    assert c["indicator"] == "info" and c["suggestions"][0]["isRecommended"] is False
    assert_card(c)
    # going ahead needs no reason
    fb = {"feedback": [{"card": c["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-12-03T01:00:00Z"}]}
    r = client.post(f"{SELECT}/feedback", json=fb, headers=his.headers)
    assert r.status_code == 200, r.text
    (ev,) = events(platform, w, kind="overridden")
    assert ev.finding_id == c["uuid"] and ev.reason is None and ev.channel == "cds"


def test_an_override_by_feedback_needs_a_reason_for_a_critical_card_and_is_recorded(
        client, platform, staff, his_client) -> None:
    w, _login, prac, his = world(platform, staff, his_client)
    w.med(w.b, rx("clarithromycin"))
    r = client.post(SELECT, json=hook("order-select", w, prac, [med_draft("simvastatin")]), headers=his.headers)
    (c,) = r.json()["cards"]
    fb = {"feedback": [{"card": c["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-12-03T01:00:00Z"}]}
    p = _problem(client.post(f"{SELECT}/feedback", json=fb, headers=his.headers), 400)
    assert p["errors"][0]["pointer"] == ["feedback[0].overrideReason.reason"] and "will-monitor" in p["detail"]
    fb["feedback"][0]["overrideReason"] = {"reason": {"system": OVERRIDE_REASON_SYSTEM, "code": "bored"}}
    p = _problem(client.post(f"{SELECT}/feedback", json=fb, headers=his.headers), 400)
    assert p["errors"][0]["pointer"] == ["feedback[0].overrideReason.reason.code"]
    fb["feedback"][0]["overrideReason"] = {"reason": {"system": OVERRIDE_REASON_SYSTEM, "code": "other"}}
    p = _problem(client.post(f"{SELECT}/feedback", json=fb, headers=his.headers), 400)
    assert p["errors"][0]["pointer"] == ["feedback[0].overrideReason.userComment"]
    assert events(platform, w, kind="overridden") == []
    fb["feedback"][0]["overrideReason"] = {"reason": {"system": OVERRIDE_REASON_SYSTEM, "code": "will-monitor"},
                                           "userComment": "短期合用，监测肌酸激酶"}
    r = client.post(f"{SELECT}/feedback", json=fb, headers=his.headers)
    assert r.status_code == 200, r.text
    (entry,) = r.json()["feedback"]
    assert entry["reason"] == "will-monitor"
    (ev,) = events(platform, w, kind="overridden")
    assert (ev.id, ev.finding_id, ev.reason, ev.reason_text, ev.username) == (
        entry["recorded_as"], c["uuid"], "will-monitor", "短期合用，监测肌酸激酶", w.doctor.subject)
    # the same feedback again: the same event; accepting it now is a contradiction
    assert client.post(f"{SELECT}/feedback", json=fb, headers=his.headers).json()["feedback"][0][
        "recorded_as"] == entry["recorded_as"]
    acc = {"feedback": [{"card": c["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-12-03T01:00:00Z",
                         "acceptedSuggestions": [{"id": suggestion_id(c["uuid"])}]}]}
    _problem(client.post(f"{SELECT}/feedback", json=acc, headers=his.headers), 409)
    # another institution's system does not know the card
    _problem(client.post(f"{SELECT}/feedback", json=fb, headers=his_client().headers), 404)


def test_an_accepted_suggestion_is_recorded(client, platform, staff, his_client) -> None:
    w, login, prac, _his = world(platform, staff, his_client)
    w.med(w.b, rx("clarithromycin"))
    r = client.post(SIGN, json=hook("order-sign", w, prac, [med_draft("simvastatin")]), headers=login.headers)
    (c,) = r.json()["cards"]
    wrong = {"feedback": [{"card": c["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-12-03T01:00:00Z",
                           "acceptedSuggestions": [{"id": str(uuid.uuid4())}]}]}
    p = _problem(client.post(f"{SIGN}/feedback", json=wrong, headers=login.headers), 400)
    assert p["errors"][0]["pointer"] == ["feedback[0].acceptedSuggestions[0].id"]
    acc = {"feedback": [{"card": c["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-12-03T01:00:00Z",
                         "acceptedSuggestions": [{"id": c["suggestions"][0]["uuid"]}]}]}
    r = client.post(f"{SIGN}/feedback", json=acc, headers=login.headers)
    assert r.status_code == 200, r.text
    (ev,) = events(platform, w, kind="accepted")
    assert ev.finding_id == c["uuid"] and ev.id == r.json()["feedback"][0]["recorded_as"]


def test_select_then_sign_keeps_the_finding_ids_and_counts_nothing_twice(client, platform, staff, his_client) -> None:
    w, _login, prac, his = world(platform, staff, his_client)
    w.med(w.b, rx("clarithromycin"))  # a hint (no grant): shown the same way at select and at sign
    w.med(w.a, rx("metoprolol"))  # own record: a minor interaction with ibuprofen
    simva, ibu, other = med_draft("simvastatin"), med_draft("ibuprofen"), med_draft("metformin")
    sel = hook("order-select", w, prac, [simva, ibu, other],
               selections=[f"MedicationRequest/{simva['id']}", f"MedicationRequest/{ibu['id']}"])
    r1 = client.post(SELECT, json=sel, headers=his.headers)
    assert r1.status_code == 200, r1.text
    first = {c["uuid"]: c for c in r1.json()["cards"]}
    assert sorted(c["indicator"] for c in first.values()) == ["critical", "info"]
    n_events = len(events(platform, w))
    assert len(events(platform, w, kind="checked")) == 2  # only the selected drafts
    sign = hook("order-sign", w, prac, [simva, ibu, other])
    r2 = client.post(SIGN, json=sign, headers=his.headers)
    assert r2.status_code == 200, r2.text
    second = {c["uuid"]: c for c in r2.json()["cards"]}
    assert second == first  # the same cards, the same uuids, shown the same way
    # the third draft is checked here first (metformin: nothing found); nothing else recorded again
    assert len(events(platform, w, kind="checked")) == 3 and len(events(platform, w)) == n_events + 1
    # overridden at select: covered at sign (no card again), and the override is not doubled
    crit = next(c for c in first.values() if c["indicator"] == "critical")
    fb = {"feedback": [{"card": crit["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-12-03T01:00:00Z",
                        "overrideReason": {"reason": {"system": OVERRIDE_REASON_SYSTEM, "code": "benefit-outweighs-risk"}}}]}
    oid = client.post(f"{SELECT}/feedback", json=fb, headers=his.headers).json()["feedback"][0]["recorded_as"]
    r3 = client.post(SIGN, json=hook("order-sign", w, prac, [simva, ibu, other]), headers=his.headers)
    assert [c["uuid"] for c in r3.json()["cards"]] == [c["uuid"] for c in first.values() if c["indicator"] == "info"]
    assert client.post(f"{SIGN}/feedback", json=fb, headers=his.headers).json()["feedback"][0]["recorded_as"] == oid
    assert len(events(platform, w, kind="overridden")) == 1
    # the doctor changes the drug of the draft: a new check with new findings
    changed = dict(simva, medicationCodeableConcept={"coding": [{"system": RXNORM, "code": rx("lovastatin")}]})
    r4 = client.post(SIGN, json=hook("order-sign", w, prac, [changed]), headers=his.headers)
    (c4,) = r4.json()["cards"]
    assert c4["indicator"] == "critical" and c4["uuid"] not in first


def test_a_card_leaves_only_once_its_audit_record_and_events_are_durable(client, platform, staff, his_client) -> None:
    """Nothing of a check is answered before its audit record is written, with the check's events
    in the same commit (ADR 0016, 0018): a failed write answers 503 with nothing of the check in it
    and no event recorded."""
    w, _login, prac, his = world(platform, staff, his_client)
    w.med(w.a, rx("clarithromycin"))  # own record: a critical card with the drug named
    body = hook("order-sign", w, prac, [med_draft("simvastatin")])
    platform.audit.fail_next = RuntimeError("injected audit failure: disk full")
    try:
        r = client.post(SIGN, json=body, headers=his.headers)
    finally:
        platform.audit.fail_next = None
    problem = _problem(r, 503)
    assert r.headers["retry-after"] and "audit" in problem["detail"]
    assert "clarithromycin" not in r.text.lower() and "cards" not in r.text
    assert events(platform, w) == []
    batches = platform.audit.batches
    r = client.post(SIGN, json=body, headers=his.headers)
    assert r.status_code == 200, r.text
    (card,) = r.json()["cards"]
    assert card["indicator"] == "critical"
    # in the database the moment the answer is here: the check, its finding under the card's
    # uuid, in a batch the writer committed
    assert sorted(e.kind for e in events(platform, w)) == ["checked", "finding"]
    assert [e.id for e in events(platform, w, kind="finding")] == [card["uuid"]]
    assert platform.audit.batches > batches


def test_calls_that_are_not_allowed_or_malformed_get_a_clear_4xx(client, platform, staff, his_client) -> None:
    w, _login, prac, his = world(platform, staff, his_client)
    body = hook("order-select", w, prac, [med_draft("simvastatin")])
    _problem(client.post(SELECT, json=body), 401)
    p = _problem(client.post(SELECT, json={**body, "hook": "order-sign"}, headers=his.headers), 400)
    assert "order-select" in p["detail"]
    p = _problem(client.post(SELECT, json=dict(body, context=dict(body["context"], selections=["MedicationRequest/x"])),
                             headers=his.headers), 400)
    assert p["errors"][0]["pointer"] == ["context.selections[0]"]
    # a patient of another institution
    other = dict(body, context=dict(body["context"], patientId=w.patients[w.b]))
    assert _problem(client.post(SELECT, json=other, headers=his.headers), 403)["errors"][0]["pointer"] == [
        "context.patientId"]
    # a registration clerk's own token: not a prescriber
    clerk = staff("registration_clerk", institution=w.a)
    prac_c = platform.accounts.actor_from_token(clerk.headers["Authorization"][7:]).practitioner_id
    _problem(client.post(SELECT, json=hook("order-select", w, prac_c, [med_draft("simvastatin")]),
                         headers=clerk.headers), 403)
    # no medication draft at all: no cards (the patient is still checked to be the institution's)
    diet = {"resourceType": "NutritionOrder", "id": "diet-1", "status": "draft"}
    r = client.post(SIGN, json=hook("order-sign", w, prac, [diet]), headers=his.headers)
    assert r.status_code == 200 and r.json() == {"cards": []}, r.text
    for raw in (b"[]", b"{}", b'{"feedback": []}', b'{"feedback": [{"card": "x", "outcome": "maybe"}]}'):
        r = client.post(f"{SIGN}/feedback", content=raw, headers={**his.headers, "content-type": "application/json"})
        assert r.status_code == 400, (raw, r.text)
    fb = {"feedback": [{"card": uuid.uuid4().hex, "outcome": "overridden", "outcomeTimestamp": "2026-12-03T01:00:00Z"}]}
    _problem(client.post(f"{SIGN}/feedback", json=fb, headers=his.headers), 404)


@pytest.mark.parametrize("sid", ["medsafety-order-select", "medsafety-order-sign"])
def test_every_card_fits_the_specification_on_a_busy_record(client, platform, staff, his_client, sid) -> None:
    """Many findings at once (interaction, allergy, duplicate, dose), granted: every card has what the
    specification requires and a summary under 140 characters."""
    w, _login, prac, his = world(platform, staff, his_client)
    w.grant()
    w.med(w.b, rx("clarithromycin"))
    w.med(w.b, rx("simvastatin"))
    w.allergy(w.b, rx("simvastatin"))
    d = med_draft("simvastatin", dose=800, unit="mg", timing="TID")
    kind = "order-select" if sid.endswith("select") else "order-sign"
    r = client.post(f"/cds-services/{sid}", json=hook(kind, w, prac, [d]), headers=his.headers)
    assert r.status_code == 200, r.text
    assert_response(r.json())
    kinds = {next(k for k in ("Interaction", "Allergy", "Duplicate therapy", "Dose") if k in c["detail"].split("\n")[2])
             for c in r.json()["cards"]}
    assert kinds == {"Interaction", "Allergy", "Duplicate therapy", "Dose"}, kinds
