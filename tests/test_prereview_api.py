"""Regional prescription pre-review over HTTP (issue 8, item 3; docs/prereview.md), on the real
app and database: automatic checks graded by level, the pharmacist's queue and decisions, the
doctor's double signature, the timeout policy, statistics and who may see what."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from prereviewkit import IV, PWorld, build, rx, user
from sqlalchemy import select

from healthlink.db import tables as t

ACETAMINOPHEN, CEFEPIME, AMOXICILLIN, WARFARIN, ASPIRIN = "161", "20481", "723", "11289", "1191"
FENTANYL = "4337"


@pytest.fixture
def w(platform, client) -> PWorld:
    return build(platform, client)


def _get(w: PWorld, path: str, who, expect: int = 200) -> dict:
    r = w.client.get(path, headers=who.headers)
    assert r.status_code == expect, r.text
    return r.json()


def _post(w: PWorld, path: str, who, body: dict, expect: int = 200) -> dict:
    r = w.client.post(path, headers=who.headers, json=body)
    assert r.status_code == expect, r.text
    return r.json()


def test_a_clean_township_prescription_passes_automatically(w: PWorld) -> None:
    body = rx(w, ACETAMINOPHEN, dose=500, timing="TID")
    got = w.submit(body)
    assert got["status"] == "auto-passed" and got["outcome"] == "passed" and not got["queued"]
    assert all(p["level"] < 2 for p in got["problems"])
    assert w.platform.prereview.outcome(f"MedicationRequest/{body['id']}") == "passed"
    out = _get(w, f"/api/prereview/outcome?order=MedicationRequest/{body['id']}", w.doctor)
    assert out["outcome"] == "passed"
    assert w.platform.prereview.outcome("MedicationRequest/never-submitted") is None
    hosp = user(w.client, w.platform, "doctor", w.h)  # another institution's order: not known to them
    assert _get(w, f"/api/prereview/outcome?order=MedicationRequest/{body['id']}", hosp)["outcome"] is None
    assert w.platform.prereview.required_for(w.t) and not w.platform.prereview.required_for(w.h)


def test_a_severe_problem_is_queued_and_the_returned_prescription_shows_the_reason(w: PWorld) -> None:
    w.med(WARFARIN)  # an active order of the patient: aspirin interacts
    body = rx(w, ASPIRIN, dose=100, timing="QD", diagnosis=False)
    got = w.submit(body)
    assert got["status"] == "pending" and got["queued"] and got["max_level"] >= 2
    cats = {p["category"] for p in got["problems"]}
    assert {"duplicate-interaction", "indication"} <= cats
    assert w.platform.prereview.outcome(f"MedicationRequest/{body['id']}") == "pending"
    queue = _get(w, f"/api/prereview/queue?institution={w.t}", w.pharmacist)
    mine = [i for i in queue["items"] if i["id"] == got["id"]]
    assert mine and mine[0]["patient"]["name"] == "卓玛测试"
    one = _get(w, f"/api/prereview/prescriptions/{got['id']}", w.pharmacist)
    assert any(m["name"] == f"drug {WARFARIN}" for m in one["medications"])
    _post(w, f"/api/prereview/prescriptions/{got['id']}/decision", w.pharmacist, {"action": "return"}, 400)
    done = _post(w, f"/api/prereview/prescriptions/{got['id']}/decision", w.pharmacist,
                 {"action": "return", "reason": "interaction", "text": "华法林合用阿司匹林出血风险高，请改药"})
    assert done["status"] == "returned"
    _post(w, f"/api/prereview/prescriptions/{got['id']}/decision", w.pharmacist, {"action": "pass"}, 409)
    seen = {i["id"]: i for i in _get(w, "/api/prereview/mine", w.doctor)["items"]}[got["id"]]
    assert seen["outcome"] == "returned" and seen["reason"] == "interaction"
    assert seen["reason_text"] == "华法林合用阿司匹林出血风险高，请改药" and seen["reason_zh"] == "重复给药或有相互作用"
    assert w.platform.prereview.outcome(f"MedicationRequest/{body['id']}") == "returned"


def test_a_special_use_antimicrobial_without_the_right_is_a_legality_problem(w: PWorld) -> None:
    got = w.submit(rx(w, CEFEPIME, dose=1, unit="g", route=IV, timing="Q12H"))
    legal = [p for p in got["problems"] if p["category"] == "legality"]
    assert legal and legal[0]["level"] == 3 and legal[0]["rule"] == "antimicrobial-special"
    assert "特殊使用级" in legal[0]["message_zh"] and legal[0]["source"]["ref"] == "moh-antimicrobial-2012"
    assert got["status"] == "pending"
    senior = user(w.client, w.platform, "doctor", w.t, rights=("antimicrobial-special",))
    ok = w.submit(rx(w, CEFEPIME, dose=1, unit="g", route=IV, timing="Q12H"), who=senior)
    assert not [p for p in ok["problems"] if p["category"] == "legality"]
    narcotic = w.submit(rx(w, FENTANYL, dose=0.05, unit="mg", route=IV, timing="QD"))
    assert any(p["rule"] == "controlled-narcotic" for p in narcotic["problems"])


def test_penicillin_needs_a_skin_test_result_and_missing_elements_are_format_problems(w: PWorld) -> None:
    got = w.submit(rx(w, AMOXICILLIN, dose=500, timing="TID"))
    assert any(p["category"] == "skin-test" and p["level"] == 3 for p in got["problems"])
    ok = w.submit(rx(w, AMOXICILLIN, dose=500, timing="TID", skin_test="negative"))
    assert not [p for p in ok["problems"] if p["category"] == "skin-test"]
    bare = rx(w, ACETAMINOPHEN)
    del bare["authoredOn"], bare["dispenseRequest"]
    fmt = [p for p in w.submit(bare)["problems"] if p["category"] == "format"]
    assert fmt and {"authoredOn", "dispenseRequest.quantity"} <= set(fmt[0]["detail"]["elements"])


def test_require_double_signature_then_the_doctor_countersigns(w: PWorld) -> None:
    got = w.submit(rx(w, ASPIRIN, dose=100, timing="QD", diagnosis=False))
    d = _post(w, f"/api/prereview/prescriptions/{got['id']}/decision", w.pharmacist,
              {"action": "double-sign", "reason": "indication"})
    assert d["status"] == "double-sign-required" and d["outcome"] == "pending"
    other = user(w.client, w.platform, "doctor", w.t)
    _post(w, f"/api/prereview/prescriptions/{got['id']}/countersign", other, {"text": "x"}, 404)
    _post(w, f"/api/prereview/prescriptions/{got['id']}/countersign", w.doctor, {}, 400)
    s = _post(w, f"/api/prereview/prescriptions/{got['id']}/countersign", w.doctor,
              {"text": "诊断为冠心病二级预防，坚持用药"})
    assert s["status"] == "double-signed" and s["outcome"] == "double-signed"
    assert s["countersign_text"] == "诊断为冠心病二级预防，坚持用药"
    _post(w, f"/api/prereview/prescriptions/{got['id']}/countersign", w.doctor, {"text": "again"}, 409)


def test_timeout_policy_pass_times_out_and_hold_escalates(w: PWorld) -> None:
    pr = w.platform.prereview
    body = rx(w, ASPIRIN, dose=100, timing="QD", diagnosis=False)
    got = w.submit(body)
    real = pr.clock
    try:
        later = real() + timedelta(minutes=pr.timeout_us / 60_000_000 + 1)
        pr.clock = lambda: later
        pr.timeout_policy = "hold"
        assert pr.outcome(f"MedicationRequest/{body['id']}") == "pending"
        one = _get(w, f"/api/prereview/prescriptions/{got['id']}", w.pharmacist)
        assert one["escalated"] and one["status"] == "pending"
        pr.timeout_policy = "pass"
        assert pr.outcome(f"MedicationRequest/{body['id']}") == "timed-out"
        one = _get(w, f"/api/prereview/prescriptions/{got['id']}", w.doctor)
        assert one["status"] == "timed-out" and one["decided_by"] == "system:timeout"
    finally:
        pr.clock = real
        pr.timeout_policy = "pass"


def test_statistics_equal_the_counts_of_the_rows(w: PWorld) -> None:
    a = w.submit(rx(w, ACETAMINOPHEN))
    b = w.submit(rx(w, ASPIRIN, dose=100, timing="QD", diagnosis=False))
    c = w.submit(rx(w, ASPIRIN, dose=100, timing="QD", diagnosis=False))
    d = w.submit(rx(w, ASPIRIN, dose=100, timing="QD", diagnosis=False))
    _post(w, f"/api/prereview/prescriptions/{b['id']}/decision", w.pharmacist, {"action": "pass"})
    _post(w, f"/api/prereview/prescriptions/{c['id']}/decision", w.pharmacist,
          {"action": "return", "reason": "other", "text": "请补充诊断"})
    _post(w, f"/api/prereview/prescriptions/{d['id']}/decision", w.pharmacist,
          {"action": "double-sign", "reason": "indication"})
    _post(w, f"/api/prereview/prescriptions/{d['id']}/countersign", w.doctor, {"text": "确需使用"})
    assert a["status"] == "auto-passed"
    stats = _get(w, f"/api/prereview/statistics?institution={w.t}", w.pharmacist)
    p = t.prereview_prescription
    with w.platform.db.read() as conn:
        rows = conn.execute(select(p.c.status, p.c.queued).where(p.c.institution_id == w.t)).all()
    tot = stats["totals"]
    assert tot["submitted"] == len(rows) == 4
    for key, status in (("auto_passed", "auto-passed"), ("passed", "passed"), ("returned", "returned"),
                        ("double_signed", "double-signed"), ("pending", "pending")):
        assert tot[key] == sum(1 for r in rows if r.status == status), key
    assert tot["queued"] == sum(1 for r in rows if r.queued) == 3
    assert tot["turnaround_median_minutes"] is not None and tot["turnaround_p90_minutes"] >= 0
    assert sum(r["submitted"] for r in stats["rows"]) == 4
    _get(w, "/api/prereview/statistics", w.doctor, 403)


def test_the_centre_pharmacist_sees_only_submitted_patients_and_is_audited(w: PWorld) -> None:
    w.allergy(AMOXICILLIN)
    w.med(WARFARIN, patient=w.other)
    got = w.submit(rx(w, ACETAMINOPHEN))
    one = _get(w, f"/api/prereview/prescriptions/{got['id']}", w.pharmacist)
    assert one["patient"]["name"] == "卓玛测试" and one["allergies"][0]["name"] == f"allergen {AMOXICILLIN}"
    # never submitted: the service refuses as if unknown; the FHIR API gives the role nothing
    from grantkit import ctx

    from healthlink.errors import NotFound
    with pytest.raises(NotFound):
        w.platform.repository(ctx(w.pharmacist.actor)).prereview_context([w.other], clinical=True, query="x")
    assert w.client.get(f"/fhir/Patient/{w.other}", headers=w.pharmacist.headers).status_code in (403, 404)
    assert w.client.get(f"/fhir/MedicationRequest?patient={w.other}",
                        headers=w.pharmacist.headers).status_code == 403
    ae = t.audit_event
    query = base64.b64encode(f"prereview/{got['id']}".encode()).decode()
    with w.platform.db.read() as conn:
        rows = [c for (c,) in conn.execute(select(ae.c.content).where(ae.c.username == w.pharmacist.username))]
    assert any(query in c and f"Patient/{w.patient}" in c for c in rows)


def test_a_hospital_doctor_cannot_open_the_queue_or_submit(w: PWorld) -> None:
    hosp = user(w.client, w.platform, "doctor", w.h)
    r = w.client.get("/api/prereview/queue", headers=hosp.headers)
    assert r.status_code == 403 and "pre-review centre" in r.text
    got = w.submit(rx(w, ACETAMINOPHEN))
    _get(w, f"/api/prereview/prescriptions/{got['id']}", hosp, 404)
    _post(w, f"/api/prereview/prescriptions/{got['id']}/decision", w.doctor, {"action": "pass"}, 403)
    r = w.client.post("/api/prereview/prescriptions", headers=hosp.headers,
                      json={"patient": w.patient, "orders": [{"resource": rx(w, ACETAMINOPHEN)}]})
    assert r.status_code == 403 and "not configured for pre-review" in r.text


def test_bad_input_is_named(w: PWorld) -> None:
    r = w.client.post("/api/prereview/prescriptions", headers=w.doctor.headers,
                      json={"patient": w.patient, "orders": [{"resource": {"resourceType": "Patient"}}]})
    assert r.status_code == 400 and "orders[0].resource" in r.text
    r = w.client.get("/api/prereview/queue?status=nonsense", headers=w.pharmacist.headers)
    assert r.status_code == 400 and "nonsense" in r.text
    r = w.client.post("/api/prereview/prescriptions/nope/decision", headers=w.pharmacist.headers,
                      json={"action": "pass"})
    assert r.status_code == 404


def test_access_matrix_of_the_prereview_pharmacist(platform, client) -> None:
    """The pre-review pharmacist x (records of a submitted patient at the submitting institution,
    the same Person's records at another institution, another patient never submitted) x read
    path (the pre-review service over HTTP, the repository, FHIR read / search / $everything):
    served exactly the data classes the review needs of the submitted patient, nothing else."""
    from grantkit import build as grant_world
    from grantkit import ctx, lab
    from recogkit import institution

    from healthlink.errors import NotFound

    a, b = institution(platform, "township"), institution(platform, "county")
    platform.prereview.directory.forget()
    doc = user(client, platform, "doctor", a)
    wg = grant_world(platform, a, b, doctor_a=doc.actor)
    ph = user(client, platform, "prereview_pharmacist", None, practitioner=False)
    ra = platform.repository(ctx(doc.actor))
    mk = lambda body: ra.create(body, res_type=body["resourceType"]).stored.res_id
    subj = {"reference": f"Patient/{wg.patient_a}"}
    served = {
        "active order": mk({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                            "subject": subj, "medicationCodeableConcept": {"text": "华法林"}}),
        "allergy": mk({"resourceType": "AllergyIntolerance", "patient": subj, "code": {"text": "青霉素"}}),
        "creatinine": mk(lab(wg.patient_a, "2160-0", "Creatinine", 88.0)),
    }
    hidden = {
        "stopped order": mk({"resourceType": "MedicationRequest", "status": "stopped", "intent": "order",
                             "subject": subj, "medicationCodeableConcept": {"text": "阿莫西林"}}),
        "condition": mk({"resourceType": "Condition", "subject": subj, "code": {"text": "高血压"}}),
        "glucose (not a review result)": wg.obs_a,
        "encounter": wg.encounter_a,
        "B's order (other institution)": wg.med_b, "B's lab": wg.lab_b, "B's depression": wg.depression_b,
    }
    other = mk({"resourceType": "Patient", "name": [{"text": "未提交患者"}], "gender": "male", "birthDate": "1990-01-01"})
    r = client.post("/api/prereview/prescriptions", headers=doc.headers, json={
        "patient": wg.patient_a, "orders": [{"resource": {
            "resourceType": "MedicationRequest", "id": "m1", "status": "draft", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                      "code": "161"}]}}}]})
    assert r.status_code == 201, r.text
    rx_id = r.json()["id"]
    got = client.get(f"/api/prereview/prescriptions/{rx_id}", headers=ph.headers).json()
    refs = {x["reference"] for k in ("medications", "allergies", "results") for x in got[k]}
    ids = {ref.split("/", 1)[1] for ref in refs}
    wrong = {k: "not served" for k, v in served.items() if v not in ids}
    wrong |= {k: "served" for k, v in hidden.items() if v in ids}
    repo = platform.repository(ctx(ph.actor))
    for pid, name in ((wg.patient_b, "B's Patient (same Person, not submitted)"), (other, "unsubmitted patient")):
        for clinical in (False, True):
            try:
                repo.prereview_context([pid], clinical=clinical, query="matrix")
                wrong[f"{name}, clinical={clinical}"] = "served"
            except NotFound:
                pass
    fhir = {"read Patient A": f"/fhir/Patient/{wg.patient_a}", "read order A": f"/fhir/MedicationRequest/{served['active order']}",
            "search orders": f"/fhir/MedicationRequest?patient={wg.patient_a}",
            "everything": f"/fhir/Patient/{wg.patient_a}/$everything", "read B": f"/fhir/Patient/{wg.patient_b}",
            "read other": f"/fhir/Patient/{other}"}
    for name, path in fhir.items():
        code = client.get(path, headers=ph.headers).status_code
        if code not in (403, 404):
            wrong[f"FHIR {name}"] = str(code)
    assert not wrong, wrong
