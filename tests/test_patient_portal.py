"""Patient accounts over HTTP (issue 5, item 2): the /api/patient routes, the portal pages, the demo
phone page and the ``healthlink sms outbox`` command, through the real app on the real database.

A Person gets a verified phone at a registration desk first (the platform has no carrier check, so
that is how a first phone is bound); every code is then read from the outbox, the patient's phone.
"""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi.testclient import TestClient
from test_patient_accounts import (
    actor,
    last_code,
    make_patient,
    person_of,
    phone,
    rid,
    sent_to,
)
from test_web import csrf_of
from typer.testing import CliRunner

from healthlink.cli.main import app as cli
from healthlink.runtime import Platform


@pytest.fixture
def visitor(app):
    """A client of its own (its own cookies), like one phone's browser."""
    def make() -> TestClient:
        return TestClient(app, base_url="http://testserver")
    return make


class Resident:
    def __init__(self, platform: Platform, org: str, *, name: str = "次仁卓玛") -> None:
        self.rid, self.phone, self.org = rid(), phone(), org
        self.patient = make_patient(platform, actor("doctor", org), self.rid, name=name)
        self.person = person_of(platform, self.patient)


@pytest.fixture
def resident(platform: Platform, make_institution):
    """A patient whose phone a clerk verified at the desk (no account yet unless ``account``)."""
    def make(*, account: bool = False, name: str = "次仁卓玛") -> Resident:
        r = Resident(platform, make_institution(), name=name)
        platform.patient_accounts.verify_in_person(platform.db, actor("registration_clerk", r.org), r.person,
                                                   r.phone, create_account=account)
        return r
    return make


def api_login(platform: Platform, c: TestClient, r: Resident) -> dict:
    started = c.post("/api/patient/login/start", json={"resident_id": r.rid})
    assert started.status_code == 202, started.text
    done = c.post("/api/patient/login/verify", json={"challenge_id": started.json()["challenge_id"],
                                                     "code": last_code(platform, r.phone)})
    assert done.status_code == 200, done.text
    return done.json()


def masked(number: str) -> str:
    return f"{number[:3]}****{number[-4:]}"


# ---------------------------------------------------------------- API
def test_sign_up_then_log_in_by_api_with_codes_from_the_outbox(platform, visitor, resident):
    r, c = resident(), visitor()
    started = c.post("/api/patient/signup/start", json={"resident_id": r.rid, "phone": phone()})
    assert started.status_code == 202, started.text
    done = c.post("/api/patient/signup/confirm", json={"challenge_id": started.json()["challenge_id"],
                                                       "code": last_code(platform, r.phone)})
    assert done.status_code == 201 and done.json()["person_id"] == r.person

    body = api_login(platform, c, r)
    assert body["person_id"] == r.person and body["expires_in"] > 0
    cookie = c.cookies.get("hl_patient")
    assert cookie == body["access_token"]
    me = c.get("/api/patient/me", headers={"Authorization": f"Bearer {body['access_token']}"}).json()
    assert me["person"] == {"id": r.person, "name": "次仁卓玛"}
    assert me["phone"]["masked"] == masked(r.phone) and me["phone"]["verified_by"] == "in-person"
    assert r.phone not in str(me) and me["acts_for"] == []
    assert c.get("/api/patient/me").json()["account"]["id"] == done.json()["account_id"]  # by the cookie


def test_login_sets_an_httponly_cookie_not_secure_on_loopback_http(platform, visitor, resident):
    r, c = resident(account=True), visitor()
    started = c.post("/api/patient/login/start", json={"phone": r.phone}).json()
    resp = c.post("/api/patient/login/verify", json={**started, "code": last_code(platform, r.phone)})
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith("hl_patient=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie
    https = TestClient(c.app, base_url="https://portal.example")
    started = https.post("/api/patient/login/start", json={"phone": r.phone}).json()
    resp = https.post("/api/patient/login/verify", json={**started, "code": last_code(platform, r.phone)})
    assert "Secure" in resp.headers["set-cookie"]


def test_a_wrong_code_is_problem_json_with_its_reason_and_tries_left(platform, visitor, resident):
    r, c = resident(account=True), visitor()
    started = c.post("/api/patient/login/start", json={"resident_id": r.rid}).json()
    right = last_code(platform, r.phone)
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    resp = c.post("/api/patient/login/verify", json={**started, "code": wrong})
    assert resp.status_code == 403 and resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["reason"] == "wrong-code" and resp.json()["remaining"] == 4
    assert "hl_patient" not in resp.headers.get("set-cookie", "")


def test_unknown_resident_id_is_refused_with_one_answer_and_no_sms(visitor):
    c = visitor()
    resp = c.post("/api/patient/signup/start", json={"resident_id": rid(), "phone": phone()})
    assert resp.status_code == 403 and resp.json()["reason"] == "not-possible"


def test_too_many_codes_to_one_phone_is_429_with_retry_after(platform, settings, visitor, resident):
    r, c = resident(account=True), visitor()
    for _ in range(settings.consent_code_per_phone_per_hour):
        assert c.post("/api/patient/login/start", json={"resident_id": r.rid}).status_code == 202
    resp = c.post("/api/patient/login/start", json={"resident_id": r.rid})
    assert resp.status_code == 429 and resp.json()["reason"] == "rate-limited"
    assert int(resp.headers["retry-after"]) > 0


def test_phone_change_is_approved_by_a_code_to_the_old_number(platform, visitor, resident):
    r, c = resident(account=True), visitor()
    api_login(platform, c, r)
    new = phone()
    started = c.post("/api/patient/phone/start", json={"new_phone": new})
    assert started.status_code == 202, started.text
    assert sent_to(platform, new) == 0  # the code went to the old number
    done = c.post("/api/patient/phone/confirm", json={**started.json(), "code": last_code(platform, r.phone)})
    assert done.status_code == 200 and done.json()["phone"] == masked(new)
    assert c.get("/api/patient/me").json()["phone"] == {"masked": masked(new), "verified_by": "sms",
                                                        "verified_at": c.get("/api/patient/me").json()
                                                        ["phone"]["verified_at"]}
    r.phone = new  # the next login code goes to the new number
    assert api_login(platform, visitor(), r)["person_id"] == r.person


def test_phone_change_needs_a_signed_in_patient(visitor):
    resp = visitor().post("/api/patient/phone/start", json={"new_phone": phone()})
    assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Bearer")


def test_a_staff_token_is_not_a_patient_token(staff, visitor):
    doctor = staff("doctor")
    resp = visitor().get("/api/patient/me", headers=doctor.headers)
    assert resp.status_code == 401


def test_a_patient_token_is_not_a_staff_token(platform, visitor, resident):
    r, c = resident(account=True), visitor()
    token = api_login(platform, c, r)["access_token"]
    resp = visitor().get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401 and resp.json()["resourceType"] == "OperationOutcome"
    assert visitor().get(f"/fhir/Patient/{r.patient}", headers={"Authorization": f"Bearer {token}"}
                         ).status_code == 401


def test_logout_forgets_the_cookie(platform, visitor, resident):
    r, c = resident(account=True), visitor()
    api_login(platform, c, r)
    assert c.get("/api/patient/me").status_code == 200
    out = c.post("/api/patient/logout")
    assert out.status_code == 204 and 'hl_patient=""' in out.headers["set-cookie"]
    assert c.get("/api/patient/me").status_code == 401


def test_a_clerk_verifies_a_phone_in_person_and_a_doctor_may_not(platform, staff, visitor, make_institution):
    org = make_institution()
    r = Resident(platform, org)
    doctor, clerk = staff("doctor", institution=org), staff("registration_clerk", institution=org)
    body = {"person_id": r.person, "phone": r.phone}
    assert visitor().post("/api/patient/verify-in-person", json=body, headers=doctor.headers).status_code == 403
    resp = visitor().post("/api/patient/verify-in-person", json=body, headers=clerk.headers)
    assert resp.status_code == 200 and resp.json()["account_id"] is not None
    assert platform.patient_accounts.verified_phone(platform.db, r.person)[2] == f"in-person:{clerk.username}"
    assert api_login(platform, visitor(), r)["person_id"] == r.person


# ---------------------------------------------------------------- pages
def portal_sign_in(platform: Platform, c: TestClient, r: Resident, *, nxt: str = "/portal") -> None:
    page = c.get(f"/portal/login?next={nxt}")
    assert page.status_code == 200
    step = c.post("/portal/login", data={"who": r.rid, "csrf_token": csrf_of(page.text), "next": nxt})
    assert step.status_code == 200 and 'name="challenge_id"' in step.text, step.text
    challenge = re.search(r'name="challenge_id" value="([^"]+)"', step.text).group(1)
    done = c.post("/portal/login/verify", data={"challenge_id": challenge, "code": last_code(platform, r.phone),
                                                "csrf_token": csrf_of(step.text), "next": nxt},
                  follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == nxt


def test_portal_pages_redirect_to_the_portal_sign_in_without_a_session(visitor):
    c = visitor()
    resp = c.get("/portal", follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/portal/login?next=%2Fportal"
    c.cookies.set("hl_patient", "not-a-token")
    resp = c.get("/portal", follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"].startswith("/portal/login")
    assert 'hl_patient=""' in resp.headers["set-cookie"]


def test_signed_in_patient_sees_home_with_links_in_chinese_and_english(platform, visitor, resident):
    r, c = resident(account=True), visitor()
    portal_sign_in(platform, c, r)
    home = c.get("/portal")
    assert home.status_code == 200 and 'lang="zh-CN"' in home.text
    assert "次仁卓玛" in home.text and masked(r.phone) in home.text and r.phone not in home.text
    for href in ("/portal/grants", "/portal/history", "/portal/scan"):
        assert f'href="{href}"' in home.text
    assert "我的授权" in home.text and "访问记录" in home.text
    c.cookies.set("hl_lang", "en")
    home = c.get("/portal")
    assert "My authorisations" in home.text and "Access history" in home.text and 'lang="en"' in home.text
    assert 'href="/patients"' not in home.text  # not the staff menu


def test_a_guardian_sees_whom_the_account_acts_for(platform, visitor, resident):
    parent, child = resident(account=True, name="扎西"), resident(name="小卓玛")
    c = visitor()
    portal_sign_in(platform, c, parent)
    me = c.get("/api/patient/me").json()
    platform.patient_accounts.grant_guardian(platform.db, child.person, me["account"]["id"], relation="parent",
                                             staff=actor("registration_clerk", child.org))
    home = c.get("/portal")
    assert "小卓玛" in home.text and "父母" in home.text
    assert c.get("/api/patient/me").json()["acts_for"][0]["person_id"] == child.person


def test_portal_sign_up_by_form_then_sign_in(platform, visitor, resident):
    r, c = resident(), visitor()
    page = c.get("/portal/signup")
    step = c.post("/portal/signup", data={"resident_id": r.rid, "phone": phone(), "csrf_token": csrf_of(page.text)})
    assert step.status_code == 200 and 'name="challenge_id"' in step.text
    challenge = re.search(r'name="challenge_id" value="([^"]+)"', step.text).group(1)
    done = c.post("/portal/signup/confirm", data={"challenge_id": challenge, "code": last_code(platform, r.phone),
                                                  "csrf_token": csrf_of(step.text)}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/portal/login?signed_up=1"
    portal_sign_in(platform, c, r)
    assert c.get("/portal").status_code == 200


def test_portal_forms_show_refusals_in_the_patients_language(platform, visitor, resident):
    c = visitor()
    c.cookies.set("hl_lang", "en")
    page = c.get("/portal/login")
    resp = c.post("/portal/login", data={"who": rid(), "csrf_token": csrf_of(page.text)})
    assert resp.status_code == 403 and "No patient account can sign in with this" in resp.text
    r = resident(account=True)
    step = c.post("/portal/login", data={"who": r.phone, "csrf_token": csrf_of(page.text)})
    challenge = re.search(r'name="challenge_id" value="([^"]+)"', step.text).group(1)
    wrong = f"{(int(last_code(platform, r.phone)) + 1) % 10**6:06d}"
    resp = c.post("/portal/login/verify", data={"challenge_id": challenge, "code": wrong,
                                                "csrf_token": csrf_of(page.text)})
    assert resp.status_code == 403 and "Wrong code. Tries left: 4" in resp.text and "hl_patient" not in c.cookies


def test_portal_forms_need_the_csrf_token(platform, visitor, resident):
    r, c = resident(account=True), visitor()
    c.get("/portal/login")
    resp = c.post("/portal/login", data={"who": r.rid})
    assert resp.status_code == 403 and sent_to(platform, r.phone) == 0


def test_portal_sign_out_forgets_the_session(platform, visitor, resident):
    r, c = resident(account=True), visitor()
    portal_sign_in(platform, c, r)
    home = c.get("/portal")
    out = c.post("/portal/logout", data={"csrf_token": csrf_of(home.text)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/portal/login"
    assert c.get("/portal", follow_redirects=False).status_code == 303


# ---------------------------------------------------------------- the demo phone and the CLI
def test_demo_phone_page_shows_the_numbers_codes_newest_first(platform, visitor, resident):
    r, c = resident(account=True), visitor()
    c.post("/api/patient/login/start", json={"resident_id": r.rid})
    first = last_code(platform, r.phone)
    c.post("/api/patient/login/start", json={"resident_id": r.rid})
    second = last_code(platform, r.phone)
    page = c.get(f"/phone?number={r.phone}")
    assert page.status_code == 200 and "模拟" in page.text  # says it is a simulator (zh-CN by default)
    assert page.text.index(second) < page.text.index(first)
    part = c.get(f"/phone?number={r.phone}", headers={"HX-Request": "true"})
    assert part.text.lstrip().startswith('<section id="inbox"') and 'hx-trigger="every 3s"' in part.text
    assert second in part.text
    assert first not in c.get(f"/phone?number={phone()}").text


def test_demo_phone_page_is_not_served_with_a_real_gateway(platform, visitor, monkeypatch):
    monkeypatch.setattr(platform.settings, "sms_gateway", "carrier.sms:Gateway")
    assert visitor().get("/phone").status_code == 404


def test_cli_prints_a_numbers_outbox(platform, settings, visitor, resident, monkeypatch):
    r, c = resident(account=True), visitor()
    c.post("/api/patient/login/start", json={"resident_id": r.rid})
    code = last_code(platform, r.phone)
    for k, v in {"DATABASE_URL": settings.database_url, "DATA_DIR": str(settings.data_dir),
                 "SECRET_KEY": settings.secret_key.get_secret_value()}.items():
        monkeypatch.setenv(f"HEALTHLINK_{k}", v)
    out = CliRunner().invoke(cli, ["sms", "outbox", "--phone", r.phone, "--limit", "1"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert code in out.output and "patient-code" in out.output
    empty = CliRunner().invoke(cli, ["sms", "outbox", "--phone", f"1{uuid.uuid4().int % 10**10:010d}"])
    assert empty.exit_code == 0 and "no messages" in empty.output
    monkeypatch.setenv("HEALTHLINK_SMS_GATEWAY", "carrier.sms:Gateway")
    assert CliRunner().invoke(cli, ["sms", "outbox", "--phone", r.phone]).exit_code == 2
