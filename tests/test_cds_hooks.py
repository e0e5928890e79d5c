"""CDS Hooks 2.0 for mutual recognition (issue 7, item 4 and "Must show"; docs/cds-hooks.md).

The parser is run on the specification's own examples (../shared/testdata/cds-hooks-spec, HL7
cds-hooks, Apache-2.0; read in place, see its SOURCES.md): every hook request and every feedback
request in examples.json parses, and the card checker used on our cards accepts the
specification's own example cards.  Then, through the real HTTP app against the real database:
discovery, the cards of a call (every field the specification requires), feedback counted in the
decline-reason breakdown of the rates, and the authentication failures.
"""

from __future__ import annotations

import json
import uuid
from datetime import date
from decimal import Decimal

import orjson
import pytest

from conftest import TESTDATA
from healthlink.api.cds_routes import (
    card,
    orders_from,
    parse_feedback,
    parse_request,
    reason_of,
    suggestion_id,
)
from healthlink.errors import Invalid
from healthlink.recognition import load
from healthlink.recognition.service import DECLINE_REASONS, REASON_SYSTEM, Hit, LineCheck, Order

SPEC = TESTDATA / "cds-hooks-spec"
EXAMPLES = SPEC / "examples.json"
LAB = "https://healthlink.example.org/fhir/CodeSystem/his-lab"


def examples() -> list[dict]:
    assert EXAMPLES.is_file(), f"third-party test data missing: {EXAMPLES} (see shared/testdata/SOURCES.md)"
    return json.loads(EXAMPLES.read_text(encoding="utf-8"))


def hook_requests() -> list[tuple[str, dict]]:
    """Every example that is a hook request (a whole one, or the hook pages' bare context)."""
    return [(f"{e['source']}#{e['block']}", e["json"]) for e in examples()
            if isinstance(e["json"], dict) and isinstance(e["json"].get("context"), dict)]


def feedback_requests() -> list[tuple[str, dict]]:
    return [(f"{e['source']}#{e['block']}", e["json"]) for e in examples()
            if isinstance(e["json"], dict) and "feedback" in e["json"]]


def page_hook(name: str) -> str:
    """The hook of a bare context example: the hook page's own, else patient-view (the
    specification's prefetch-token examples are written for it)."""
    page = name.split("#")[0]
    return page[len("hook-"):-len(".md")] if page.startswith("hook-") else "patient-view"


# ------------------------------------------------------------------ the specification's examples
def test_the_examples_hold_what_these_tests_need():
    names = [n for n, _ in hook_requests()]
    assert len(names) >= 8, names
    assert {page_hook(n) for n in names} >= {"order-select", "order-sign", "patient-view"}
    assert len(feedback_requests()) == 3


@pytest.mark.parametrize("name,body", hook_requests(), ids=[n for n, _ in hook_requests()])
def test_every_hook_request_of_the_specification_parses(name, body):
    catalogue = load()
    if "hook" in body:  # a whole request: strict, as the endpoint parses it
        req = parse_request(body)
        assert req.hook == body["hook"] and req.hook_instance == body["hookInstance"]
    else:  # a hook page's bare context
        req = parse_request(body, hook=page_hook(name), strict=False)
    ctx = body["context"]
    assert (req.user_id, req.patient_id, req.encounter_id) == (
        ctx.get("userId"), ctx.get("patientId"), ctx.get("encounterId"))
    assert req.prefetch == (body.get("prefetch") or {})
    if req.hook in ("order-select", "order-sign"):
        assert [r["id"] for r in req.draft_orders] == [e["resource"]["id"] for e in ctx["draftOrders"]["entry"]]
        assert req.selections == ctx.get("selections")
        # the examples order diets and drugs: nothing a laboratory or imaging catalogue recognises
        assert orders_from(req, catalogue) == []


def test_a_hook_request_missing_what_the_specification_requires_is_refused_naming_the_field():
    name, body = next((n, b) for n, b in hook_requests() if b.get("hook") == "order-sign")
    for field, where in (("hook", "hook"), ("hookInstance", "hookInstance"), ("context", "context")):
        broken = {k: v for k, v in body.items() if k != field}
        with pytest.raises(Invalid) as e:
            parse_request(broken, hook="order-sign")
        assert e.value.issues[0].expression == (where,), name
    ctx = {k: v for k, v in body["context"].items() if k != "draftOrders"}
    with pytest.raises(Invalid) as e:
        parse_request({**body, "context": ctx}, hook="order-sign")
    assert e.value.issues[0].expression == ("context.draftOrders",)
    with pytest.raises(Invalid) as e:
        parse_request(body, hook="order-select")  # sent to the other service
    assert "order-select" in e.value.message
    _, select = next((n, b) for n, b in hook_requests() if n.startswith("hook-order-select"))
    ctx = dict(select["context"], selections=["ServiceRequest/not-in-the-bundle"])
    with pytest.raises(Invalid) as e:
        parse_request({"context": ctx}, hook="order-select", strict=False)
    assert e.value.issues[0].expression == ("context.selections[0]",)


def test_draft_service_requests_become_order_lines_every_coding_tried():
    """The specification's order-select example, its drafts replaced by laboratory and imaging
    ServiceRequests: a local code the catalogue maps, a LOINC code after an unknown coding, a CT
    with its body site, an order not in the catalogue, and one not selected."""
    _, body = next((n, b) for n, b in hook_requests() if n.startswith("hook-order-select"))
    ctx = dict(body["context"])
    sr = [
        {"resourceType": "ServiceRequest", "id": "k", "status": "draft", "intent": "order",
         "code": {"coding": [{"system": LAB, "code": "K", "display": "钾"}]}},
        {"resourceType": "ServiceRequest", "id": "na", "status": "draft", "intent": "order",
         "code": {"coding": [{"system": "urn:oid:1.2.3", "code": "x"},
                             {"system": "http://loinc.org", "code": "2951-2"}]}},
        {"resourceType": "ServiceRequest", "id": "ct", "status": "draft", "intent": "order",
         "code": {"coding": [{"system": "http://loinc.org", "code": "24725-4"}]},
         "bodySite": [{"coding": [{"system": "http://snomed.info/sct", "code": "69536005"}]}],
         "orderDetail": [{"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}]}]},
        {"resourceType": "ServiceRequest", "id": "other", "status": "draft", "intent": "order",
         "code": {"coding": [{"system": "http://loinc.org", "code": "00000-0"}]}},
        {"resourceType": "ServiceRequest", "id": "unselected", "status": "draft", "intent": "order",
         "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]}},
    ]
    ctx["draftOrders"] = {"resourceType": "Bundle", "entry": [*body["context"]["draftOrders"]["entry"],
                                                              *({"resource": r} for r in sr)]}
    ctx["selections"] = ["ServiceRequest/k", "ServiceRequest/na", "ServiceRequest/ct", "ServiceRequest/other",
                         "MedicationRequest/smart-MedicationRequest-103"]
    req = parse_request({"hook": "order-select", "hookInstance": str(uuid.uuid4()), "context": ctx},
                        hook="order-select")
    got = orders_from(req, load())
    assert got == [Order(LAB, "K", "钾", "ServiceRequest/k"),
                   Order("http://loinc.org", "2951-2", None, "ServiceRequest/na"),
                   Order("http://loinc.org", "24725-4", None, "ServiceRequest/ct", body_site="69536005", modality="CT")]
    # order-sign: every draft order, selected or not
    sign = parse_request({"hook": "order-sign", "hookInstance": str(uuid.uuid4()),
                          "context": {k: v for k, v in ctx.items() if k != "selections"}}, hook="order-sign")
    assert [o.order_ref for o in orders_from(sign, load())] == [
        "ServiceRequest/k", "ServiceRequest/na", "ServiceRequest/ct", "ServiceRequest/unselected"]


@pytest.mark.parametrize("name,body", feedback_requests(), ids=[n for n, _ in feedback_requests()])
def test_every_feedback_request_of_the_specification_parses(name, body):
    items = parse_feedback(body)
    assert [(f.card, f.outcome, f.timestamp) for f in items] == [
        (f["card"], f["outcome"], f["outcomeTimestamp"]) for f in body["feedback"]]
    for f, raw in zip(items, body["feedback"], strict=True):
        assert f.accepted == tuple(s["id"] for s in raw.get("acceptedSuggestions", []))
        assert f.reason == (raw.get("overrideReason") or {}).get("reason")
        assert f.comment == (raw.get("overrideReason") or {}).get("userComment")


def test_an_override_needs_a_reason_and_a_foreign_reason_counts_as_other():
    by_name = dict(feedback_requests())
    bare = next(b for b in by_name.values() if b["feedback"][0]["outcome"] == "overridden"
                and "overrideReason" not in b["feedback"][0])
    with pytest.raises(Invalid) as e:
        reason_of(parse_feedback(bare)[0])
    assert e.value.issues[0].expression == ("feedback[0].overrideReason.reason",)
    foreign = next(b for b in by_name.values() if "overrideReason" in b["feedback"][0])
    code, text = reason_of(parse_feedback(foreign)[0])
    assert code == "other" and "d7ecf885" in text and "A comment entered by the clinician." in text
    ours = {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-12-01T00:00:00Z",
                          "overrideReason": {"reason": {"system": REASON_SYSTEM, "code": "emergency"}}}]}
    assert reason_of(parse_feedback(ours)[0]) == ("emergency", None)
    ours["feedback"][0]["overrideReason"]["reason"]["code"] = "bored"
    with pytest.raises(Invalid) as e:
        reason_of(parse_feedback(ours)[0])
    assert e.value.issues[0].expression == ("feedback[0].overrideReason.reason.code",)
    with pytest.raises(Invalid) as e:
        parse_feedback({"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": "x"}]})
    assert e.value.issues[0].expression == ("feedback[0].acceptedSuggestions",)


# ------------------------------------------------------------------ cards: the specification's shape
def assert_card(c: dict, *, ours: bool = True) -> None:
    """The fields the specification requires of a card (and of its source, suggestions, actions,
    links and override reasons); ``ours``: also the uuid that feedback names."""
    where = f"card {c.get('uuid') or c.get('summary')!r}"
    if ours:
        assert isinstance(c.get("uuid"), str) and c["uuid"], where
    assert isinstance(c.get("summary"), str) and 0 < len(c["summary"]) < 140, f"{where}: summary {c.get('summary')!r}"
    assert c.get("indicator") in ("info", "warning", "critical"), where
    assert isinstance(c.get("source"), dict) and isinstance(c["source"].get("label"), str) and c["source"]["label"], where
    if "detail" in c:
        assert isinstance(c["detail"], str), where
    if c.get("suggestions"):
        assert c.get("selectionBehavior") in ("at-most-one", "any"), f"{where}: suggestions need selectionBehavior"
        for s in c["suggestions"]:
            assert isinstance(s.get("label"), str) and s["label"], where
            for a in s.get("actions", []):
                assert a.get("type") in ("create", "update", "delete"), where
                assert isinstance(a.get("description"), str), f"{where}: an action needs its description"
                if a["type"] == "delete" and "resourceId" in a:
                    assert isinstance(a["resourceId"], str) and "/" in a["resourceId"], where
                if a["type"] in ("create", "update"):
                    assert isinstance(a.get("resource"), dict), where
    for link in c.get("links", []):
        assert isinstance(link.get("label"), str) and isinstance(link.get("url"), str), where
        assert link.get("type") in ("absolute", "smart"), where
        if link["type"] == "absolute":
            assert link["url"].startswith(("http://", "https://")), f"{where}: {link['url']}"
    for r in c.get("overrideReasons", []):
        assert isinstance(r.get("code"), str) and isinstance(r.get("display"), str) and r["display"], where


def assert_response(body: dict) -> None:
    assert isinstance(body.get("cards"), list)
    assert "systemActions" not in body, "never systemActions: the doctor chooses"
    for c in body["cards"]:
        assert_card(c)


def test_the_card_checker_accepts_the_specifications_own_example_cards():
    responses = [e["json"] for e in examples() if isinstance(e["json"], dict) and "cards" in e["json"]]
    assert len([c for r in responses for c in r["cards"]]) >= 3
    for r in responses:
        for c in r["cards"]:
            if "indicator" not in c:  # the autolaunchable example leaves it out; nothing else is missing
                c = {**c, "indicator": "info"}
            assert_card(c, ours=False)


def hit(**kw) -> Hit:
    base = dict(id=uuid.uuid4().hex, item_id="HR-K", item_name_zh="钾", item_name_en="Potassium",
                kind="laboratory", own=False, disclosed=True, institution_id="org-b",
                institution_name="玉树州人民医院", date=date(2026, 11, 30), valid_until=date(2026, 12, 7),
                mark="HR", price_yuan=Decimal("6"), effective="2026-11-30T08:00:00+08:00", status="final",
                value="4.1", unit="mmol/L", reference_range="3.5-5.3 mmol/L", flag="N",
                result_ref="Observation/lab-b")
    base.update(kw)
    return Hit(**base)


def test_cards_built_from_hits_have_the_required_fields_and_say_only_what_they_may():
    line = LineCheck("chk", Order(LAB, "K", order_ref="ServiceRequest/draft-1"), None)
    disclosed = card(hit(), line, base_url="https://hie.example", patient_id="pa")
    assert_card(disclosed)
    assert disclosed["summary"].startswith("钾 4.1 mmol/L（玉树州人民医院，2026-11-30）互认有效至 2026-12-07 HR")
    assert disclosed["indicator"] == "info"
    [s] = disclosed["suggestions"]
    assert s["uuid"] == suggestion_id(disclosed["uuid"]) and s["label"] == "采纳此结果 Use this result"
    assert s["actions"] == [{"type": "delete", "resourceId": "ServiceRequest/draft-1",
                             "description": s["actions"][0]["description"]}]
    assert disclosed["selectionBehavior"] == "at-most-one"
    assert [(r["system"], r["code"]) for r in disclosed["overrideReasons"]] == [
        (REASON_SYSTEM, code) for code in DECLINE_REASONS]
    for word in ("4.1", "mmol/L", "3.5-5.3", "2026-12-07", "HR"):
        assert word in disclosed["detail"]
    # a hint: no values, no suggestion, no id of the other institution's records, an invitation
    h = hit(disclosed=False, value=None, unit=None, reference_range=None, flag=None, result_ref=None,
            effective=None, status=None)
    hint = card(h, line, base_url="https://hie.example", patient_id="pa")
    assert_card(hint)
    assert "suggestions" not in hint and "selectionBehavior" not in hint
    assert "4.1" not in orjson.dumps(hint).decode() and "lab-b" not in orjson.dumps(hint).decode()
    assert hint["links"] == [{"label": "请患者授权查看 Ask the patient to authorise access",
                              "url": "https://hie.example/patients/pa/outside", "type": "absolute"}]
    # own institution: a duplicate-test warning
    own = card(hit(own=True), line, base_url="https://hie.example", patient_id="pa")
    assert_card(own)
    assert own["indicator"] == "warning"
    # long names still give a summary under 140 characters
    long = card(hit(item_name_zh="很长的项目名称" * 20, item_name_en="A very long item name " * 10,
                    institution_name="某某县人民医院" * 5), line, base_url="https://hie.example", patient_id="pa")
    assert_card(long)
    # without the draft's id there is nothing to delete: no suggestion
    no_ref = card(hit(), LineCheck("chk", Order(LAB, "K"), None), base_url="https://hie.example", patient_id="pa")
    assert_card(no_ref)
    assert "suggestions" not in no_ref


# ------------------------------------------------------------------ over HTTP
def test_discovery_lists_both_services_in_the_specifications_shape(client):
    r = client.get("/cds-services")
    assert r.status_code == 200
    services = r.json()["services"]
    spec = next(e["json"] for e in examples() if isinstance(e["json"], dict) and "services" in e["json"])
    allowed = {k for s in spec["services"] for k in s} | {"version", "hookVersion", "usageRequirements"}
    assert {s["id"]: s["hook"] for s in services} == {"healthlink-recognition-select": "order-select",
                                                      "healthlink-recognition-sign": "order-sign",
                                                      # issue 8: tests/test_cds_medsafety.py
                                                      "medsafety-order-select": "order-select",
                                                      "medsafety-order-sign": "order-sign"}
    for s in services:
        assert set(s) <= allowed, set(s) - allowed
        for key in ("hook", "id", "description", "title"):
            assert isinstance(s[key], str) and s[key], key
        assert s["prefetch"] == {"patient": "Patient/{{context.patientId}}"}


def select_body(patient_id: str, user_id: str, *, orders: list[dict] | None = None,
                encounter_id: str | None = None, prefetch: dict | None = None) -> dict:
    orders = orders or [{"resourceType": "ServiceRequest", "id": f"draft-{uuid.uuid4().hex[:8]}", "status": "draft",
                         "intent": "order", "subject": {"reference": f"Patient/{patient_id}"},
                         "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]}}]
    ctx = {"userId": user_id, "patientId": patient_id, "selections": [f"ServiceRequest/{o['id']}" for o in orders],
           "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": o} for o in orders]}}
    if encounter_id:
        ctx["encounterId"] = encounter_id
    body = {"hook": "order-select", "hookInstance": str(uuid.uuid4()), "context": ctx}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def _problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers["content-type"]
    return r.json()


def test_calls_that_are_not_allowed_are_refused_with_a_clear_4xx(client, platform, staff, his_client,
                                                                  make_institution):
    """No token; an unknown service; a malformed body; a staff token of another institution; a
    userId of another institution; a patientId of another institution — each a 4xx problem."""
    from grantkit import actor, ctx, patient_body, resident_id

    a, b = make_institution(), make_institution()
    his = his_client(institution=a)
    doc_a, doc_b = staff("doctor", institution=a), staff("doctor", institution=b)
    prac = {s.username: platform.accounts.actor_from_token(s.headers["Authorization"][7:]).practitioner_id
            for s in (doc_a, doc_b)}
    pa = platform.repository(ctx(actor("doctor", a))).create(patient_body(resident_id()), res_type="Patient").stored.res_id
    pb = platform.repository(ctx(actor("doctor", b))).create(patient_body(resident_id()), res_type="Patient").stored.res_id
    url = "/cds-services/healthlink-recognition-select"
    body = select_body(pa, f"Practitioner/{prac[doc_a.username]}")

    assert _problem(client.post(url, json=body), 401)["detail"]
    assert "healthlink-recognition-select" in _problem(client.post("/cds-services/nope", json=body,
                                                                   headers=his.headers), 404)["detail"]
    assert _problem(client.post(url, content=b"{not json", headers=his.headers), 400)
    assert _problem(client.post(url, json={"context": {}}, headers=his.headers), 400)["errors"][0]["pointer"] == ["hook"]
    bad_hook = dict(body, hook="patient-view")
    assert "order-select" in _problem(client.post(url, json=bad_hook, headers=his.headers), 400)["detail"]
    # a member of staff of another institution, naming themselves, for a patient of A
    other = select_body(pa, f"Practitioner/{prac[doc_b.username]}")
    assert "patientId" in _problem(client.post(url, json=other, headers=doc_b.headers), 403)["detail"]
    # a member of staff naming someone else
    assert _problem(client.post(url, json=body, headers=doc_b.headers), 403)
    # the system of A naming B's doctor
    assert "Practitioner/" in _problem(client.post(url, json=other, headers=his.headers), 403)["detail"]
    # ... or a practitioner nobody has, or not a practitioner at all
    assert _problem(client.post(url, json=select_body(pa, "Practitioner/nobody"), headers=his.headers), 403)
    bad_user = _problem(client.post(url, json=select_body(pa, "Patient/x"), headers=his.headers), 400)
    # a PractitionerRole stands for its practitioner when it is a role at the system's institution
    sysrepo = platform.system_repository("tests")
    roles = {org: sysrepo.create({"resourceType": "PractitionerRole", "active": True,
                                  "practitioner": {"reference": f"Practitioner/{prac[doc_a.username]}"},
                                  "organization": {"reference": f"Organization/{org}"}},
                                 res_type="PractitionerRole").stored.res_id for org in (a, b)}
    r = client.post(url, json=select_body(pa, f"PractitionerRole/{roles[a]}"), headers=his.headers)
    assert r.status_code == 200 and r.json() == {"cards": []}, r.text
    assert _problem(client.post(url, json=select_body(pa, f"PractitionerRole/{roles[b]}"), headers=his.headers), 403)
    assert _problem(client.post(url, json=select_body(pa, "PractitionerRole/none"), headers=his.headers), 403)
    assert bad_user["errors"][0]["pointer"] == ["context.userId"]
    # the system of A, its doctor, B's patient (or one that does not exist): the same answer
    for pid in (pb, "no-such-patient"):
        p = _problem(client.post(url, json=select_body(pid, f"Practitioner/{prac[doc_a.username]}"),
                                 headers=his.headers), 403)
        assert p["errors"][0]["pointer"] == ["context.patientId"]
    # a prefetched Patient that is not context.patientId
    p = _problem(client.post(url, json=select_body(pa, f"Practitioner/{prac[doc_a.username]}",
                                                   prefetch={"patient": {"resourceType": "Patient", "id": pb}}),
                             headers=his.headers), 400)
    assert p["errors"][0]["pointer"] == ["prefetch.patient"]
    # feedback: no token, unknown service, no feedback list, an override without a reason
    fb = {"feedback": [{"card": uuid.uuid4().hex, "outcome": "overridden", "outcomeTimestamp": "2026-12-01T00:00:00Z"}]}
    assert _problem(client.post(f"{url}/feedback", json=fb), 401)
    assert _problem(client.post("/cds-services/nope/feedback", json=fb, headers=his.headers), 404)
    assert _problem(client.post(f"{url}/feedback", json={}, headers=his.headers), 400)
    p = _problem(client.post(f"{url}/feedback", json=fb, headers=his.headers), 400)
    assert p["errors"][0]["pointer"] == ["feedback[0].overrideReason.reason"]



# ------------------------------------------------------------------ a call, its cards, feedback, rates
NOON = "2026-03-08T12:00:00+08:00"
SELECT = "/cds-services/healthlink-recognition-select"
SIGN = "/cds-services/healthlink-recognition-sign"


def draft(code: str, system: str = "http://loinc.org", **extra) -> dict:
    return {"resourceType": "ServiceRequest", "id": f"draft-{uuid.uuid4().hex[:8]}", "status": "draft",
            "intent": "order", "code": {"coding": [{"system": system, "code": code}]}, **extra}


def his_world(platform, staff, his_client):  # noqa: ANN001, ANN201
    """The recognition world (tests/recogkit.py) with a real staff login for the doctor at A (the
    grant holder) and the hospital system of A."""
    from grantkit import actor
    from recogkit import build

    w = build(platform)
    login = staff("doctor", institution=w.a)
    prac = platform.accounts.actor_from_token(login.headers["Authorization"][7:]).practitioner_id
    w.doctor = actor("doctor", w.a, username=login.username, practitioner_id=prac)
    w.doctors[w.a] = w.doctor
    return w, login, prac, his_client(institution=w.a)


def test_order_select_cards_feedback_and_the_decline_reasons_in_the_rates(client, platform, staff, his_client):
    from recogkit import pinned

    w, login, prac, his = his_world(platform, staff, his_client)
    w.grant()
    src_k = w.result(w.b, value=4.1)  # potassium at B (7 days)
    w.result(w.a, "2951-2", value=140.0)  # sodium here: a duplicate-test reminder
    w.result(w.b, "2951-2", value=139.0)
    k, na, other = draft("2823-3"), draft("NA", LAB), draft("00000-0")
    body = select_body(w.patient, f"Practitioner/{prac}", orders=[k, na, other], encounter_id=w.encounter,
                       prefetch={"patient": {"resourceType": "Patient", "id": w.patient}})
    with pinned(platform, NOON):
        r = client.post(SELECT, json=body, headers=his.headers)
        assert r.status_code == 200, r.text
        assert_response(r.json())
        cards_ = r.json()["cards"]
        by_draft = {}
        for c in cards_:
            by_draft.setdefault(c["suggestions"][0]["actions"][0]["resourceId"], []).append(c)
        assert set(by_draft) == {f"ServiceRequest/{k['id']}", f"ServiceRequest/{na['id']}"}
        (kc,) = by_draft[f"ServiceRequest/{k['id']}"]
        assert kc["indicator"] == "info" and kc["summary"].startswith("钾 4.1 mmol/L（州人民医院 B，2026-03-05）互认有效至 2026-03-12 HR")
        assert f"Observation/{src_k}" in orjson.dumps(kc["links"]).decode()
        assert sorted(c["indicator"] for c in by_draft[f"ServiceRequest/{na['id']}"]) == ["info", "warning"]
        na_card = next(c for c in by_draft[f"ServiceRequest/{na['id']}"] if c["indicator"] == "info")
        rates_before = client.get("/api/recognition/rates", params={"since": "2026-03-01", "until": "2026-03-31"},
                                  headers=login.headers).json()["totals"]
        # the last reminder at order-sign: the same cards (the same uuids), each order line counted once
        sign = {"hook": "order-sign", "hookInstance": str(uuid.uuid4()),
                "context": {k_: v for k_, v in body["context"].items() if k_ != "selections"}}
        r2 = client.post(SIGN, json=sign, headers=his.headers)
        assert r2.status_code == 200, r2.text
        assert_response(r2.json())
        assert sorted(c["uuid"] for c in r2.json()["cards"]) == sorted(c["uuid"] for c in cards_)
        after_sign = client.get("/api/recognition/rates", params={"since": "2026-03-01", "until": "2026-03-31"},
                                headers=login.headers).json()["totals"]
        assert after_sign == rates_before
        # feedback: potassium adopted, sodium ordered anyway in an emergency
        fb = {"feedback": [
            {"card": kc["uuid"], "outcome": "accepted", "acceptedSuggestions": [{"id": kc["suggestions"][0]["uuid"]}],
             "outcomeTimestamp": "2026-03-08T04:00:00Z"},
            {"card": na_card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-03-08T04:00:01Z",
             "overrideReason": {"reason": {"system": REASON_SYSTEM, "code": "emergency"}, "userComment": "抢救"}}]}
        r3 = client.post(f"{SELECT}/feedback", json=fb, headers=his.headers)
        assert r3.status_code == 200, r3.text
        adopted = r3.json()["feedback"][0]["recorded_as"]
        assert adopted.startswith("Observation/")
        # the same feedback again (the specification allows it) is answered the same way
        again = client.post(f"{SELECT}/feedback", json=fb, headers=his.headers)
        assert again.status_code == 200 and again.json()["feedback"][0]["recorded_as"] == adopted
        # a suggestion that is not the card's
        wrong = {"feedback": [dict(fb["feedback"][0], acceptedSuggestions=[{"id": str(uuid.uuid4())}])]}
        p = _problem(client.post(f"{SELECT}/feedback", json=wrong, headers=his.headers), 400)
        assert p["errors"][0]["pointer"] == ["feedback[0].acceptedSuggestions[0].id"]
        rates = client.get("/api/recognition/rates", params={"since": "2026-03-01", "until": "2026-03-31"},
                           headers=login.headers)
    assert rates.status_code == 200, rates.text
    got = rates.json()
    assert [(x["reason"], x["count"]) for x in got["reasons"]] == [("emergency", 1)]
    assert got["totals"]["adopted"] == 1 and got["totals"]["declined"] == 1 and got["totals"]["checked"] == 2
    # the adopted result is in the encounter, written for the practitioner the card was shown to
    enc = client.get("/fhir/Observation", params={"encounter": f"Encounter/{w.encounter}"}, headers=login.headers)
    assert adopted in {f"Observation/{e['resource']['id']}" for e in enc.json().get("entry", [])}


def test_a_member_of_staff_may_call_with_their_own_token_and_a_hint_cannot_be_adopted(client, platform, staff,
                                                                                     his_client):
    from recogkit import pinned

    w, login, prac, his = his_world(platform, staff, his_client)
    oid = w.result(w.b, value=4.1)  # no grant: a hint
    with pinned(platform, NOON):
        r = client.post(SELECT, json=select_body(w.patient, f"Practitioner/{prac}", orders=[draft("2823-3")],
                                                 encounter_id=w.encounter), headers=login.headers)
        assert r.status_code == 200, r.text
        assert_response(r.json())
        (hint,) = r.json()["cards"]
        text = orjson.dumps(r.json()).decode()
        assert oid not in text and w.patients[w.b] not in text and "4.1" not in text
        assert "suggestions" not in hint and hint["links"][0]["url"].endswith(f"/patients/{w.patient}/outside")
        fb = {"feedback": [{"card": hint["uuid"], "outcome": "accepted",
                            "acceptedSuggestions": [{"id": suggestion_id(hint["uuid"])}],
                            "outcomeTimestamp": "2026-03-08T04:00:00Z"}]}
        assert _problem(client.post(f"{SELECT}/feedback", json=fb, headers=his.headers), 403)
        # another institution's system does not know the card
        other = his_client()
        assert _problem(client.post(f"{SELECT}/feedback", json=fb, headers=other.headers), 404)


@pytest.mark.parametrize("body", [b"[]", b"null", b'"text"', b"{}", b'{"hook": 5}',
                                  b'{"hook": "order-select", "hookInstance": "x", "context": []}',
                                  b'{"hook": "order-select", "hookInstance": "x", "context": {"userId": 7}}',
                                  b'{"hook": "order-select", "hookInstance": "x", "context": {"userId": "Practitioner/p",'
                                  b' "patientId": "p", "selections": [1], "draftOrders": {"resourceType": "Bundle"}}}',
                                  b'{"hook": "order-select", "hookInstance": "x", "context": {"userId": "Practitioner/p",'
                                  b' "patientId": "p", "selections": ["ServiceRequest/a"],'
                                  b' "draftOrders": {"resourceType": "Bundle", "entry": {"resource": 1}}}}',
                                  b'{"hook": "order-select", "hookInstance": "x", "prefetch": [], "context": {}}'])
def test_malformed_calls_get_a_400_never_a_500(client, his_client, body):
    his = his_client()
    for url in (SELECT, SIGN, f"{SELECT}/feedback"):
        r = client.post(url, content=body, headers={**his.headers, "content-type": "application/json"})
        assert r.status_code == 400, (url, body, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")


def test_an_imaging_card_links_the_study_and_says_the_images_are_what_is_recognised():
    line = LineCheck("chk", Order("http://loinc.org", "24627-2", order_ref="ServiceRequest/ct-1"), None)
    h = hit(item_id="HR-CT-CHEST", item_name_zh="胸部CT平扫", item_name_en="CT chest without contrast",
            kind="examination", value="未见明显异常 No abnormality", unit=None, reference_range=None, flag=None,
            result_ref="DiagnosticReport/rep-1", report_ref="DiagnosticReport/rep-1", study_ref="ImagingStudy/st-1",
            viewer_url="Endpoint/wado-1", modality="CT", body_site="Thoracic structure", valid_until=date(2026, 12, 30))
    c = card(h, line, base_url="https://hie.example", patient_id="pa")
    assert_card(c)
    assert c["summary"].startswith("胸部CT平扫 CT Thoracic structure（玉树州人民医院，2026-11-30）互认有效至 2026-12-30 HR")
    urls = [link["url"] for link in c["links"]]
    assert urls == [f"https://hie.example/recognition/cards/{h.id}", "https://hie.example/fhir/Endpoint/wado-1",
                    "https://hie.example/fhir/ImagingStudy/st-1", "https://hie.example/fhir/DiagnosticReport/rep-1"]
    assert "互认的是影像本身" in c["detail"] and "the images, not the report's conclusion" in c["detail"]
    assert c["suggestions"][0]["actions"][0]["resourceId"] == "ServiceRequest/ct-1"
