"""Grants over HTTP (issue 5, items 3-6 and 9): /api/consent (staff) and /api/patient (the patient),
with the FHIR reads they open and close, through the real app on the real database.

The world is :func:`tests.grantkit.build`'s two institutions, with the doctor of institution A being
the logged-in HTTP user (the Actor his token stands for: grants are bound to his username and his
Practitioner).  The patient's phone is the SMS outbox; the patient signs in to the portal by phone.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from healthlink.consent import list_messages
from healthlink.consent.patients import SMS_PURPOSE as LOGIN_PURPOSE
from healthlink.db import tables as t
from grantkit import CODE, World, build, last_consent_code, phone

SIGNATURE = "data:image/png;base64," + "iVBORw0KGgo" + "A" * 200


@dataclass
class Caller:
    """A signed-in member of staff (or patient) over HTTP."""

    c: TestClient
    username: str
    institution: str | None
    headers: dict[str, str]

    def get(self, url: str, **kw):
        return self.c.get(url, headers=self.headers, **kw)

    def post(self, url: str, body: dict | None = None):
        return self.c.post(url, json=body or {}, headers=self.headers)

    def put(self, url: str, body: dict):
        return self.c.put(url, json=body, headers=self.headers)

    def ask(self, w: World, *, method: str = "code", classes: list[str] | None = None, encounter: str | None = None,
            **extra: object):
        return self.post("/api/consent/requests", {"patient": w.patient_a, "encounter": encounter or w.encounter_a,
                                                   "purpose": "diabetes follow-up", "method": method,
                                                   "classes": classes or ["*"], **extra})

    def granted(self, w: World, **kw: object) -> dict:
        r = self.ask(w, **kw)
        assert r.status_code == 201, r.text
        g = r.json()
        ok = self.post(f"/api/consent/requests/{g['id']}/code", {"code": last_consent_code(self.c.app.state.platform,
                                                                                          w.phone)})
        assert ok.status_code == 200, ok.text
        return ok.json()


@pytest.fixture
def world(platform, client, staff, make_institution):
    """The world and its doctor at A (the HTTP user)."""
    def make(role: str = "doctor") -> tuple[World, Caller]:
        a, b = make_institution(), make_institution()
        s = staff(role, institution=a)
        me = platform.accounts.actor_from_token(s.headers["Authorization"].split(" ", 1)[1])
        return build(platform, a, b, doctor_a=me), Caller(client, s.username, s.institution, s.headers)
    return make


@pytest.fixture
def colleague(client, staff):
    def make(w: World, role: str) -> Caller:
        return _caller(client, staff(role, institution=w.a))
    return make


@pytest.fixture
def patient_phone(app, platform):
    """The patient of a world, signed in to the portal by SMS code on a client of their own."""
    def make(w: World) -> Caller:
        c = TestClient(app, base_url="http://testserver")
        started = c.post("/api/patient/login/start", json={"phone": w.phone})
        assert started.status_code == 202, started.text
        msgs = [m for m in list_messages(platform.db, w.phone) if m.purpose == LOGIN_PURPOSE]
        done = c.post("/api/patient/login/verify", json={"challenge_id": started.json()["challenge_id"],
                                                         "code": CODE.search(msgs[0].text).group(1)})
        assert done.status_code == 200, done.text
        return Caller(c, f"person:{w.person}", None, {"Authorization": f"Bearer {done.json()['access_token']}"})
    return make


def _caller(client: TestClient, s) -> Caller:
    return Caller(client, s.username, s.institution, s.headers)


def ids_of(bundle: dict) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])}


# ---------------------------------------------------------------- grant by code
def test_code_grant_opens_the_other_institution_until_the_consultation_is_closed(world):
    w, doc = world()
    assert doc.get(f"/fhir/Observation/{w.lab_b}").status_code == 404
    before = doc.get(f"/fhir/Patient/{w.patient_a}/$everything")
    assert before.status_code == 200 and f"Observation/{w.lab_b}" not in ids_of(before.json())

    r = doc.ask(w, classes=["laboratory", "medications"])
    assert r.status_code == 201, r.text
    g = r.json()
    assert g["status"] == "pending" and g["holder"] == doc.username and g["kind"] == "code"
    assert g["classes"] == ["laboratory", "medications"] and "Cache-Control" in r.headers
    ok = doc.post(f"/api/consent/requests/{g['id']}/code", {"code": last_consent_code(doc.c.app.state.platform, w.phone)})
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "active" and ok.json()["approved_by"] == "code"

    obs = doc.get(f"/fhir/Observation/{w.lab_b}")
    assert obs.status_code == 200 and obs.json()["id"] == w.lab_b
    after = ids_of(doc.get(f"/fhir/Patient/{w.patient_a}/$everything").json())
    assert {f"Observation/{w.lab_b}", f"MedicationRequest/{w.med_b}", f"Observation/{w.obs_a}"} <= after
    assert f"Condition/{w.depression_b}" not in after and f"Observation/{w.hiv_b}" not in after

    mine = doc.get("/api/consent/grants", params={"encounter": w.encounter_a})
    assert [x["id"] for x in mine.json()["grants"]] == [g["id"]]
    closed = doc.post(f"/api/consent/encounters/{w.encounter_a}/close")
    assert closed.status_code == 200 and closed.json() == {"ended": [g["id"]]}
    assert doc.get(f"/fhir/Observation/{w.lab_b}").status_code == 404
    assert doc.get("/api/consent/grants", params={"encounter": w.encounter_a}).json()["grants"][0]["status"] == "closed"
    again = doc.post(f"/api/consent/requests/{g['id']}/code", {"code": "123456"})
    assert again.status_code == 409 and again.json()["reason"] == "used"


def test_finishing_the_encounter_by_fhir_put_ends_access_for_the_next_request(world):
    w, doc = world()
    doc.granted(w)
    assert doc.get(f"/fhir/Observation/{w.lab_b}").status_code == 200
    enc = doc.get(f"/fhir/Encounter/{w.encounter_a}").json()
    enc["status"] = "finished"
    assert doc.put(f"/fhir/Encounter/{w.encounter_a}", enc).status_code == 200
    r = doc.get(f"/fhir/Observation/{w.lab_b}")
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
    # and a closed encounter cannot be asked in again
    assert doc.ask(w).status_code == 409


def test_five_wrong_codes_lock_the_request_and_the_right_code_is_refused_after(world):
    w, doc = world()
    g = doc.ask(w).json()
    right = last_consent_code(doc.c.app.state.platform, w.phone)
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    for left in (4, 3, 2, 1, 0):
        r = doc.post(f"/api/consent/requests/{g['id']}/code", {"code": wrong})
        assert r.status_code == 403, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["reason"] == "wrong-code" and r.json().get("remaining", 0) == left
    r = doc.post(f"/api/consent/requests/{g['id']}/code", {"code": right})
    assert r.status_code == 403 and r.json()["reason"] == "locked"
    assert doc.get(f"/fhir/Observation/{w.lab_b}").status_code == 404
    # a resend does not reset the count
    assert doc.post(f"/api/consent/requests/{g['id']}/resend").status_code == 403


def test_a_used_code_fails(world):
    w, doc = world()
    g = doc.ask(w).json()
    code = last_consent_code(doc.c.app.state.platform, w.phone)
    assert doc.post(f"/api/consent/requests/{g['id']}/code", {"code": code}).status_code == 200
    r = doc.post(f"/api/consent/requests/{g['id']}/code", {"code": code})
    assert r.status_code == 409 and r.json()["reason"] == "used"


def test_an_expired_code_fails(world, platform):
    w, doc = world()
    g = doc.ask(w).json()
    code = last_consent_code(platform, w.phone)
    with platform.db.write() as conn:
        conn.execute(update(t.consent_code).where(t.consent_code.c.request_id == g["id"]).values(expires=1))
    r = doc.post(f"/api/consent/requests/{g['id']}/code", {"code": code})
    assert r.status_code == 410 and r.json()["reason"] == "expired"
    assert doc.get(f"/fhir/Observation/{w.lab_b}").status_code == 404


def test_a_code_for_one_doctor_fails_for_another(world, colleague):
    w, doc = world()
    g = doc.ask(w).json()
    code = last_consent_code(doc.c.app.state.platform, w.phone)
    other = colleague(w, "doctor")
    r = other.post(f"/api/consent/requests/{g['id']}/code", {"code": code})
    assert r.status_code == 404  # not his request: refused before the code is even looked at
    assert other.get(f"/fhir/Observation/{w.lab_b}").status_code == 404
    # and not counted against the request (a colleague who learnt its id cannot lock it):
    # 5 tries are still there for its own doctor
    assert doc.post(f"/api/consent/requests/{g['id']}/code", {"code": "000000" if code != "000000" else "111111"}
                    ).json()["remaining"] == 4
    # the code still works for the doctor it was issued to
    assert doc.post(f"/api/consent/requests/{g['id']}/code", {"code": code}).status_code == 200


def test_a_code_for_one_encounter_fails_for_another(world, platform):
    w, doc = world()
    enc2 = doc.c.post("/fhir/Encounter", headers=doc.headers, json={
        "resourceType": "Encounter", "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{w.patient_a}"}}).json()["id"]
    first = doc.ask(w).json()
    code_first = last_consent_code(platform, w.phone)
    second = doc.ask(w, encounter=enc2).json()
    r = doc.post(f"/api/consent/requests/{second['id']}/code", {"code": code_first})
    assert r.status_code == 403 and r.json()["reason"] == "wrong-code"
    assert first["encounter_id"] == w.encounter_a and second["encounter_id"] == enc2


def test_a_doctor_who_types_his_own_number_into_patient_telecom_does_not_get_the_code(world, platform):
    w, doc = world()
    mine = phone()
    body = doc.get(f"/fhir/Patient/{w.patient_a}").json()
    body["telecom"] = [{"system": "phone", "value": mine, "use": "mobile"}]
    assert doc.put(f"/fhir/Patient/{w.patient_a}", body).status_code == 200
    assert doc.ask(w).status_code == 201
    assert list_messages(platform.db, mine) == []
    text = next(m for m in list_messages(platform.db, w.phone) if m.purpose == "consent-code").text
    assert "diabetes follow-up" in text and f"Test {w.a}" in text  # the purpose and Organization.name


def test_resend_sends_a_new_code_and_keeps_the_request(world, platform):
    w, doc = world()
    g = doc.ask(w).json()
    r = doc.post(f"/api/consent/requests/{g['id']}/resend")
    assert r.status_code == 202, r.text
    assert len([m for m in list_messages(platform.db, w.phone) if m.purpose == "consent-code"]) == 2
    assert doc.post(f"/api/consent/requests/{g['id']}/code",
                    {"code": last_consent_code(platform, w.phone)}).json()["status"] == "active"


# ---------------------------------------------------------------- grant by QR; the patient's side
def test_qr_flow_patient_scans_approves_and_the_doctor_reads(world, patient_phone):
    w, doc = world()
    g = doc.ask(w, method="qr").json()
    assert g["kind"] == "qr"
    qr = doc.get(f"/api/consent/requests/{g['id']}/qr")
    assert qr.status_code == 200, qr.text
    assert qr.json()["svg"].startswith("<svg") and qr.json()["payload"].startswith("HLG1.")
    assert doc.get(f"/fhir/Observation/{w.lab_b}").status_code == 404

    p = patient_phone(w)
    seen = p.post("/api/patient/requests/scan", {"payload": qr.json()["payload"]})
    assert seen.status_code == 200, seen.text
    assert seen.json()["id"] == g["id"] and seen.json()["purpose"] == "diabetes follow-up"
    assert seen.json()["holder"] == doc.username and seen.json()["status"] == "pending"
    # a QR request is approved only with the scanned payload
    assert p.post(f"/api/patient/requests/{g['id']}/decision", {"approve": True}).status_code == 403
    ok = p.post(f"/api/patient/requests/{g['id']}/decision", {"approve": True, "payload": qr.json()["payload"]})
    assert ok.status_code == 200 and ok.json()["status"] == "active", ok.text
    assert doc.get(f"/fhir/Observation/{w.lab_b}").status_code == 200

    mine = p.get("/api/patient/grants").json()["grants"]
    assert [(x["id"], x["status"]) for x in mine] == [(g["id"], "active")]
    hist = p.get("/api/patient/history").json()["history"]
    reads = [h for h in hist if h["who"] == doc.username and f"Observation/{w.lab_b}" in h["what"]]
    assert reads and reads[0]["via"] == "qr" and reads[0]["grant"] == g["id"]
    assert reads[0]["institution_id"] == w.a


def test_a_patient_who_refuses_gives_no_access(world, patient_phone):
    w, doc = world()
    g = doc.ask(w, method="qr").json()
    p = patient_phone(w)
    r = p.post(f"/api/patient/requests/{g['id']}/decision", {"approve": False})
    assert r.status_code == 200 and r.json()["status"] == "refused"
    assert doc.get(f"/fhir/Observation/{w.lab_b}").status_code == 404
    payload = doc.get(f"/api/consent/requests/{g['id']}/qr")
    assert payload.status_code == 409  # no QR for a refused request


def test_an_expired_qr_payload_is_gone(world, patient_phone, platform, monkeypatch):
    w, doc = world()
    g = doc.ask(w, method="qr").json()
    monkeypatch.setattr(platform.grants, "qr_ttl", -5)
    stale = doc.get(f"/api/consent/requests/{g['id']}/qr").json()["payload"]
    monkeypatch.undo()
    p = patient_phone(w)
    r = p.post("/api/patient/requests/scan", {"payload": stale})
    assert r.status_code == 410 and r.headers["content-type"] == "application/problem+json"
    r = p.post(f"/api/patient/requests/{g['id']}/decision", {"approve": True, "payload": stale})
    assert r.status_code == 410
    assert doc.get(f"/fhir/Observation/{w.lab_b}").status_code == 404
    bad = p.post("/api/patient/requests/scan", {"payload": "HLG1.x.1.y"})
    assert bad.status_code == 400


def test_a_patient_revokes_and_the_doctors_next_request_is_refused(world, patient_phone):
    w, doc = world()
    g = doc.granted(w)
    assert doc.get(f"/fhir/Observation/{w.lab_b}").status_code == 200
    p = patient_phone(w)
    r = p.post(f"/api/patient/grants/{g['id']}/revoke")
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    assert doc.get(f"/fhir/Observation/{w.lab_b}").status_code == 404
    assert f"Observation/{w.lab_b}" not in ids_of(doc.get(f"/fhir/Patient/{w.patient_a}/$everything").json())
    hist = p.get("/api/patient/history").json()["history"]
    assert any(h["who"] == doc.username and h["via"] == "code" and f"Observation/{w.lab_b}" in h["what"]
               for h in hist)
    assert p.post("/api/patient/grants/unknown-grant/revoke").status_code == 404


def test_a_patient_cannot_see_or_decide_another_persons_requests(world, patient_phone):
    w, doc = world()
    w2, _ = world()
    g = doc.ask(w, method="qr").json()
    qr = doc.get(f"/api/consent/requests/{g['id']}/qr").json()["payload"]
    stranger = patient_phone(w2)
    assert stranger.post("/api/patient/requests/scan", {"payload": qr}).status_code == 404
    assert stranger.post(f"/api/patient/requests/{g['id']}/decision",
                         {"approve": True, "payload": qr}).status_code == 404
    assert stranger.post(f"/api/patient/grants/{g['id']}/revoke").status_code == 404
    assert stranger.get("/api/patient/grants").json()["grants"] == []


# ---------------------------------------------------------------- break-the-glass
def test_break_the_glass_needs_a_reason_marks_records_and_waits_for_review(world, colleague, patient_phone):
    w, doc = world()
    no = doc.post("/api/consent/break-glass", {"patient": w.patient_a, "encounter": w.encounter_a})
    assert no.status_code == 400 and no.json()["errors"][0]["pointer"] == ["reason"]
    assert doc.get(f"/fhir/Observation/{w.lab_b}").status_code == 404
    r = doc.post("/api/consent/break-glass", {"patient": w.patient_a, "encounter": w.encounter_a,
                                              "reason": "unconscious after a road accident, allergies unknown"})
    assert r.status_code == 201 and r.json()["kind"] == "break-glass" and r.json()["status"] == "active"
    obs = doc.get(f"/fhir/Observation/{w.lab_b}")
    assert obs.status_code == 200
    assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "BTG",
            "display": "break the glass"} in obs.json()["meta"]["security"]
    assert doc.get(f"/fhir/Condition/{w.depression_b}").status_code == 404  # never sensitive

    qm = colleague(w, "quality_manager")
    queue = qm.get("/api/consent/break-glass/review")
    assert [x["id"] for x in queue.json()["grants"]] == [r.json()["id"]]
    assert doc.get("/api/consent/break-glass/review").status_code == 403
    assert qm.post(f"/api/consent/break-glass/{r.json()['id']}/review", {}).status_code == 400
    done = qm.post(f"/api/consent/break-glass/{r.json()['id']}/review", {"note": "justified: emergency admission"})
    assert done.status_code == 200 and done.json()["reviewed_by"] == qm.username
    assert qm.get("/api/consent/break-glass/review").json()["grants"] == []
    assert qm.post(f"/api/consent/break-glass/{r.json()['id']}/review", {"note": "again"}).status_code == 409

    hist = patient_phone(w).get("/api/patient/history").json()["history"]
    assert any(h["who"] == doc.username and h["via"] == "break-glass" and f"Observation/{w.lab_b}" in h["what"]
               for h in hist)


def test_only_a_doctor_breaks_the_glass(world, colleague):
    w, _ = world()
    nurse = colleague(w, "nurse")
    r = nurse.post("/api/consent/break-glass", {"patient": w.patient_a, "encounter": w.encounter_a,
                                                "reason": "cardiac arrest in the waiting room"})
    assert r.status_code == 403


# ---------------------------------------------------------------- who may ask; the registration desk
@pytest.mark.parametrize("role", ["nurse", "pharmacist"])
def test_a_nurse_or_pharmacist_may_ask(world, colleague, platform, role):
    w, _ = world()
    r = colleague(w, role).ask(w)
    assert r.status_code == 201 and r.json()["status"] == "pending", r.text


def test_a_registration_clerk_may_not_ask(world, colleague, platform):
    w, _ = world()
    r = colleague(w, "registration_clerk").ask(w)
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    assert [m for m in list_messages(platform.db, w.phone) if m.purpose == "consent-code"] == []


def test_a_clerk_records_a_signed_consent_in_person(world, colleague, platform):
    w, doc = world()
    g = doc.ask(w, method="qr").json()
    assert doc.post(f"/api/consent/requests/{g['id']}/in-person", {"signature": SIGNATURE}).status_code == 403
    clerk = colleague(w, "registration_clerk")
    assert clerk.post(f"/api/consent/requests/{g['id']}/in-person", {"signature": "scribble"}).status_code == 400
    r = clerk.post(f"/api/consent/requests/{g['id']}/in-person", {"signature": SIGNATURE})
    assert r.status_code == 200 and r.json()["status"] == "active", r.text
    assert r.json()["approved_by"] == f"in-person:{clerk.username}"
    assert doc.get(f"/fhir/Observation/{w.lab_b}").status_code == 200
    consent = doc.get(f"/fhir/Consent/{g['consent_id']}").json()
    assert consent["status"] == "active" and consent["sourceAttachment"]["contentType"] == "image/png"


# ---------------------------------------------------------------- errors are the platform's
def test_requests_are_checked_with_clear_errors(world, colleague, patient_phone):
    w, doc = world()
    cases = [
        ({"purpose": ""}, 400), ({"classes": ["secrets"]}, 400), ({"sensitive": ["astrology"]}, 400),
        ({"method": "fax"}, 422), ({"purpose": "x" * 201}, 422), ({"patient": "no-such-patient"}, 404),
        ({"encounter": "no-such-encounter"}, 404), ({"patient": w.patient_b}, 404),
    ]
    for extra, status in cases:
        body = {"patient": w.patient_a, "encounter": w.encounter_a, "purpose": "follow-up", **extra}
        r = doc.post("/api/consent/requests", body)
        assert r.status_code == status, (extra, r.text)
        assert r.headers["content-type"] == "application/problem+json" and r.json()["detail"]
    assert doc.post("/api/consent/requests/nope/code", {"code": "123456"}).status_code == 404
    assert doc.post("/api/consent/requests/nope/resend").status_code == 404
    assert doc.get("/api/consent/requests/nope/qr").status_code == 404
    assert doc.post(f"/api/consent/requests/{'x' * 65}/code", {"code": "123456"}).status_code == 422
    assert doc.post("/api/consent/encounters/nope/close").status_code == 404
    g = doc.ask(w).json()
    assert doc.post(f"/api/consent/requests/{g['id']}/code", {"code": "12ab"}).status_code == 400
    assert doc.get(f"/api/consent/requests/{g['id']}/qr").status_code == 409  # a code request
    # another doctor does not see, nor send, this doctor's request
    other = colleague(w, "doctor")
    assert other.post(f"/api/consent/requests/{g['id']}/resend").status_code == 404
    assert other.get("/api/consent/grants").json()["grants"] == []
    # no token: 401; a patient's token is not a staff token, nor the other way round
    assert doc.c.post("/api/consent/requests", json={}).status_code == 401
    p = patient_phone(w)
    assert doc.c.get("/api/consent/grants", headers=p.headers).status_code == 401
    assert doc.c.get("/api/patient/grants", headers=doc.headers).status_code == 401
    # a code request is approved with the code, not in the portal (refusing there is fine)
    assert p.post(f"/api/patient/requests/{g['id']}/decision", {"approve": True}).status_code == 409
    assert p.post(f"/api/patient/requests/{g['id']}/decision", {"approve": False}).json()["status"] == "refused"
    assert p.post(f"/api/patient/requests/{g['id']}/decision", {"approve": False}).status_code == 409


def test_grant_json_is_what_the_core_returns(world):
    w, doc = world()
    g = doc.granted(w)
    assert set(g) >= {"id", "consent_id", "kind", "status", "holder", "practitioner", "institution_id",
                      "encounter_id", "patient_id", "person_id", "classes", "sensitive", "purpose", "expires"}
    assert g["patient_id"] == w.patient_a and g["person_id"] == w.person and g["institution_id"] == w.a
    consent = orjson.loads(doc.get(f"/fhir/Consent/{g['consent_id']}").content)
    assert consent["status"] == "active" and consent["patient"]["reference"] == f"Patient/{w.patient_a}"
