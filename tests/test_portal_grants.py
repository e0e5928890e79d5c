"""The patient's grant pages in the portal (issue 5, items 4 and 9): my authorisations, scanning a
doctor's consultation QR to approve or refuse, and who saw my records; through the real app on
the real database, with the patient signed in by a code read from the outbox."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from grantkit import World, actor, build, ctx, last_consent_code
from test_patient_accounts import last_code
from test_web import csrf_of

from healthlink.runtime import Platform


@pytest.fixture
def world(platform, make_institution):
    a, b = make_institution(), make_institution()
    doctor = actor("doctor", a)
    return build(platform, a, b, doctor_a=doctor), doctor


@pytest.fixture
def phone_browser(app, platform, world):
    """The patient's phone browser, signed in to the portal with a code from the outbox."""
    w, _ = world
    c = TestClient(app, base_url="http://testserver", cookies={"hl_lang": "en"})
    started = c.post("/api/patient/login/start", json={"phone": w.phone})
    assert started.status_code == 202, started.text
    done = c.post("/api/patient/login/verify", json={"challenge_id": started.json()["challenge_id"],
                                                     "code": last_code(platform, w.phone)})
    assert done.status_code == 200, done.text
    return c


def ask(platform: Platform, w: World, doctor, *, method: str = "qr", **kw):
    return platform.grants.request(ctx(doctor), patient_id=w.patient_a, encounter_id=w.encounter_a,
                                   purpose=kw.pop("purpose", "diabetes follow-up"), method=method, **kw)


def scanned(c: TestClient, payload: str):
    form = c.get("/portal/scan")
    assert form.status_code == 200 and 'name="payload"' in form.text and 'id="scan-submit"' in form.text
    return c.post("/portal/scan", data={"payload": payload, "csrf_token": csrf_of(form.text)})


def in_chinese(c: TestClient, path: str) -> str:
    c.cookies.set("hl_lang", "zh-CN")
    try:
        return c.get(path).text
    finally:
        c.cookies.set("hl_lang", "en")


def block(html: str, element_id: str) -> str:
    m = re.search(rf'<ul id="{element_id}".*?</ul>', html, re.DOTALL)
    assert m, element_id
    return m.group(0)


def test_grant_pages_need_a_signed_in_patient(app):
    c = TestClient(app, base_url="http://testserver")
    for path in ("/portal/grants", "/portal/scan", "/portal/history"):
        resp = c.get(path, follow_redirects=False)
        assert resp.status_code == 303 and resp.headers["location"].startswith("/portal/login?next=%2Fportal%2F")


def test_pending_requests_say_how_to_approve_by_code_or_by_qr(platform, world, phone_browser):
    w, doctor = world
    by_code = ask(platform, w, doctor, method="code", purpose="chest pain, earlier ECGs")
    by_qr = ask(platform, w, doctor, classes=["laboratory", "medications"])
    page = phone_browser.get("/portal/grants")
    assert page.status_code == 200
    pending = block(page.text, "pending-requests")
    for g in (by_code, by_qr):
        assert f'class="request" data-grant="{g.id}"' in pending
    assert "read the code from your SMS to the doctor" in pending and "scan the doctor&#39;s QR" in pending
    assert "chest pain, earlier ECGs" in pending and "laboratory results、medications" in pending
    assert f"Test {w.a}" in pending  # the institution by name
    assert doctor.display in pending
    assert "No doctor can see your records" in block(page.text, "active-grants")
    zh = in_chinese(phone_browser, "/portal/grants")
    assert "待您答复" in zh and "请把短信里的验证码读给医生" in zh


def test_scanning_the_qr_shows_the_request_and_approving_leaves_out_unticked_sensitive_records(
        platform, world, phone_browser):
    w, doctor = world
    g = ask(platform, w, doctor, sensitive=["mental-health"])
    payload, _ = platform.grants.qr_payload(ctx(doctor), g.id)
    shown = scanned(phone_browser, payload)
    assert shown.status_code == 200
    for text in (doctor.display, f"Test {w.a}", "diabetes follow-up", "all my records", "mental health",
                 'id="approve"', 'id="refuse"', 'name="sensitive" value="mental-health" checked'):
        assert text in shown.text, text
    done = phone_browser.post(f"/portal/requests/{g.id}/decision",
                              data={"decision": "approve", "payload": payload, "csrf_token": csrf_of(shown.text)},
                              follow_redirects=False)  # the sensitive box unticked: not sent
    assert done.status_code == 303 and done.headers["location"] == "/portal/grants?done=approved"
    (view,) = platform.grants.for_holder(ctx(doctor), grant_id=g.id)
    assert view.status == "active" and view.sensitive == ()
    page = phone_browser.get(done.headers["location"])
    assert "You approved the request" in page.text
    active = block(page.text, "active-grants")
    assert f'class="grant" data-grant="{g.id}"' in active and 'class="revoke"' in active and "Until " in active
    # under the grant the doctor reads the lab result, not the depression
    assert platform.repository(ctx(doctor)).read("Observation", w.lab_b).institution_id == w.b


def test_a_bad_or_foreign_qr_is_refused_in_the_patients_language(platform, world, phone_browser, make_institution):
    w, _ = world
    resp = scanned(phone_browser, "HLG1.nothing.1.x")
    assert resp.status_code == 400 and "This is not a HealthLink consultation QR code" in resp.text
    # another patient's request: not shown to this one
    elsewhere = make_institution()
    other_doctor = actor("doctor", elsewhere)
    other = build(platform, elsewhere, w.b, doctor_a=other_doctor)
    g = platform.grants.request(ctx(other_doctor), patient_id=other.patient_a, encounter_id=other.encounter_a,
                                purpose="x-ray", method="qr")
    payload, _ = platform.grants.qr_payload(ctx(other_doctor), g.id)
    resp = scanned(phone_browser, payload)
    assert resp.status_code == 404 and "This request is not for you" in resp.text
    resp = phone_browser.post(f"/portal/requests/{g.id}/decision",
                              data={"decision": "approve", "payload": payload, "csrf_token": csrf_of(resp.text)})
    assert resp.status_code == 404
    assert platform.grants.for_holder(ctx(other_doctor), grant_id=g.id)[0].status == "pending"


def test_refusing_a_code_request_from_the_list_ends_it(platform, world, phone_browser):
    w, doctor = world
    g = ask(platform, w, doctor, method="code")
    page = phone_browser.get("/portal/grants")
    done = phone_browser.post(f"/portal/requests/{g.id}/decision",
                              data={"decision": "refuse", "csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/portal/grants?done=refused"
    page = phone_browser.get("/portal/grants")
    assert f'data-grant="{g.id}"' not in block(page.text, "pending-requests")
    assert f'data-grant="{g.id}" data-status="refused"' in block(page.text, "ended-grants")
    with pytest.raises(Exception, match="refused"):
        platform.grants.confirm_code(ctx(doctor), g.id, last_consent_code(platform, w.phone))


def test_revoking_an_active_grant_ends_the_doctors_access(platform, world, phone_browser):
    from healthlink.errors import NotFound

    w, doctor = world
    g = ask(platform, w, doctor, method="code")
    platform.grants.confirm_code(ctx(doctor), g.id, last_consent_code(platform, w.phone))
    page = phone_browser.get("/portal/grants")
    assert f'data-grant="{g.id}"' in block(page.text, "active-grants")
    no_token = phone_browser.post(f"/portal/grants/{g.id}/revoke", data={})
    assert no_token.status_code == 403
    done = phone_browser.post(f"/portal/grants/{g.id}/revoke", data={"csrf_token": csrf_of(page.text)},
                              follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/portal/grants?done=revoked"
    page = phone_browser.get(done.headers["location"])
    assert "The authorisation is revoked" in page.text
    assert f'data-grant="{g.id}" data-status="revoked"' in block(page.text, "ended-grants")
    with pytest.raises(NotFound):
        platform.repository(ctx(doctor)).read("Observation", w.lab_b)


def test_history_shows_who_read_what_from_which_institution_and_via_which_grant(platform, world, phone_browser):
    w, doctor = world
    g = ask(platform, w, doctor, method="code")
    platform.grants.confirm_code(ctx(doctor), g.id, last_consent_code(platform, w.phone))
    platform.repository(ctx(doctor)).read("Observation", w.lab_b)
    platform.grants.close_consultation(ctx(doctor), w.encounter_a)
    emergency = platform.grants.break_glass
    enc = platform.repository(ctx(doctor)).create(
        {"resourceType": "Encounter", "status": "in-progress",
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
         "subject": {"reference": f"Patient/{w.patient_a}"}}, res_type="Encounter").stored.res_id
    emergency(ctx(doctor), patient_id=w.patient_a, encounter_id=enc, reason="unconscious, allergies unknown")
    platform.repository(ctx(doctor)).read("MedicationRequest", w.med_b)

    page = phone_browser.get("/portal/history")
    assert page.status_code == 200 and 'id="access-history"' in page.text
    rows = re.findall(r'<tr class="access[^"]*".*?</tr>', page.text, re.DOTALL)
    assert rows
    reads = [r for r in rows if 'data-action="read"' in r and doctor.subject in r]
    by_code = [r for r in reads if 'data-via="code"' in r]
    btg = [r for r in reads if 'data-via="break-glass"' in r]
    assert by_code and "Observation × 1" in by_code[0] and f"Test {w.a}" in by_code[0]
    assert btg and 'class="access break-glass"' in btg[0] and "MedicationRequest × 1" in btg[0]
    assert btg[0].find("break-the-glass") > 0
    assert w.lab_b not in page.text and w.med_b not in page.text  # types and counts, not ids
    assert re.search(r"<time>\d{4}-\d\d-\d\d \d\d:\d\d</time>", rows[0]) and "Asia/Shanghai" in page.text
    zh = in_chinese(phone_browser, "/portal/history")
    assert "谁查看了我的记录" in zh and "紧急破窗" in zh and "验证码" in zh


def test_my_records_shows_every_institution_including_sensitive_ones(platform, make_institution):  # noqa: ANN001
    """Issue 5, item 1: patients see their own records — all of them, from every institution."""
    from fastapi.testclient import TestClient

    from healthlink.api.app import create_app

    a, b = make_institution(), make_institution()
    w = build(platform, a, b)
    with platform.db.read() as conn:
        from sqlalchemy import select

        from healthlink.db import tables as t

        account = conn.execute(select(t.patient_account.c.id).where(
            t.patient_account.c.person_id == w.person)).scalar_one()
    c = TestClient(create_app(platform.settings, platform=platform))
    assert c.get("/portal/records", follow_redirects=False).status_code in (302, 303)
    c.cookies.set("hl_patient", platform.patient_accounts._session(account, w.person).token)
    page = c.get("/portal/records").text
    for inst in (w.a, w.b):
        assert f'data-institution="{inst}"' in page
    for ref in (f"Observation/{w.lab_b}", f"Condition/{w.depression_b}", f"Observation/{w.hiv_b}",
                f"Observation/{w.obs_a}"):
        assert f'data-ref="{ref}"' in page
    other = build(platform, make_institution(), make_institution())
    page = c.get(f"/portal/records?person={other.person}").text  # not theirs: their own are shown
    assert f'data-ref="Observation/{other.lab_b}"' not in page and f'data-ref="Observation/{w.lab_b}"' in page
    assert 'href="/portal/records"' in c.get("/portal").text
