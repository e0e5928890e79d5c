"""Issue 5, "Must show": a browser test of both grant flows, in Debian's chromium driven by
Playwright against the live server (``live_server``), with two browser contexts: the doctor at a
desktop and the patient on a phone.

By code: the doctor asks, the patient reads the code on the demo phone (the outbox), the doctor
types it, sees the other institution's records in the shared record, closes the consultation and
loses them.  By QR: in a second encounter the doctor asks by QR, the patient signs in to the
portal (code from the demo phone), pastes the QR payload, approves; the doctor's page notices by
polling and the shared record opens again.  The patient's access history shows both.

Screenshots go to docs/screenshots/ (grant-request, portal-scan, shared-record, portal-history).
Like tests/test_browser.py this needs chromium (``make install-browser``) and fails without it."""

from __future__ import annotations

import re
import uuid

import pytest
from grantkit import actor, build, ctx
from test_browser import DESKTOP, PHONE, chromium, shot, sign_in  # noqa: F401  (chromium: the fixture)

from healthlink.accounts import add_user
from healthlink.runtime import Platform

pytestmark = pytest.mark.browser

PASSWORD = "grant-browser-password-1"
SMS_CODE = re.compile(r"验证码 (\d{6})")
POLL_MS = 15_000  # the doctor's page polls the status every 3 s


def newest_code(page, base: str, number: str) -> str:
    """Open the demo phone for ``number`` and read the code in the newest text message."""
    page.goto(f"{base}/phone")
    page.fill("input[name=number]", number)
    page.click("button.primary")
    first = page.locator("#inbox article.sms").first
    first.wait_for()
    m = SMS_CODE.search(first.inner_text())
    assert m, first.inner_text()
    return m.group(1)


def ask(page, base: str, patient_id: str, *, encounter: str, purpose: str, method: str) -> str:
    """From the patient's summary to the request form, ask, and return the grant id."""
    page.goto(f"{base}/patients/{patient_id}")
    page.click("a#outside-records")
    page.wait_for_url(f"{base}/patients/{patient_id}/outside*")
    form = page.locator("form#grant-request")
    form.locator("select[name=encounter]").select_option(encounter)
    form.locator("input[name=purpose]").fill(purpose)
    form.locator("input[name=classes][value='*']").check()
    form.locator(f"input[name=method][value={method}]").check()
    if method == "code":
        shot(page, "grant-request")
    form.locator("button#grant-request-submit").click()
    page.wait_for_url(re.compile(rf"{re.escape(base)}/grants/[^/?]+$"))
    return page.url.rsplit("/", 1)[1]


def institutions_shown(page) -> set[str]:
    return set(page.locator("section.institution").evaluate_all("els => els.map(e => e.dataset.institution)"))


def test_doctor_gets_outside_records_by_code_and_by_qr_and_the_patient_sees_both_in_history(
        live_server, platform: Platform, make_institution, chromium):  # noqa: F811
    base = live_server
    a, b = make_institution(), make_institution()
    username, prac = f"dr-{uuid.uuid4().hex[:8]}", f"prac-{uuid.uuid4().hex[:8]}"
    add_user(platform.db, username=username, password=PASSWORD, display_name=username, roles=["doctor"],
             institution_id=a, practitioner_id=prac)
    doctor = actor("doctor", a, username, practitioner_id=prac)
    w = build(platform, a, b, doctor_a=doctor)

    desk = chromium.new_context(viewport=DESKTOP, locale="en-US")
    desk.add_cookies([{"name": "hl_lang", "value": "en", "url": base}])
    phone = chromium.new_context(viewport=PHONE, locale="zh-CN", is_mobile=True, has_touch=True)
    phone.add_cookies([{"name": "hl_lang", "value": "en", "url": base}])
    dr, pt = desk.new_page(), phone.new_page()
    try:
        sign_in(dr, base, username, password=PASSWORD, next_path=f"/patients/{w.patient_a}")

        # ---- by code: the patient reads the code on the phone, the doctor types it
        gid = ask(dr, base, w.patient_a, encounter=w.encounter_a, purpose="diabetes follow-up", method="code")
        assert dr.locator("#grant-status").inner_text() == "pending"
        code = newest_code(pt, base, w.phone)
        assert "diabetes follow-up" in pt.locator("#inbox article.sms").first.inner_text()
        dr.fill("form#grant-code input[name=code]", code)
        dr.click("button#grant-code-submit")
        dr.wait_for_url(f"{base}/grants/{gid}")
        assert dr.locator("#grant-status").inner_text() == "active"
        dr.click("a#shared-record")
        dr.wait_for_url(f"{base}/patients/{w.patient_a}/shared")
        other = dr.locator(f"section.institution[data-institution='{b}']")
        other.wait_for()
        assert other.locator(f"tr.record[data-ref='Observation/{w.lab_b}']").count() == 1
        assert other.locator(f"tr.record[data-ref='MedicationRequest/{w.med_b}']").count() == 1
        assert other.locator(f"tr.record[data-ref='Condition/{w.depression_b}']").count() == 0  # sensitive
        shot(dr, "shared-record")

        dr.goto(f"{base}/grants/{gid}")
        dr.click("button#close-consultation-submit")
        dr.wait_for_url(f"{base}/patients/{w.patient_a}/outside*")
        dr.goto(f"{base}/patients/{w.patient_a}/shared")
        assert b not in institutions_shown(dr)
        assert dr.locator(f"tr.record[data-ref='Observation/{w.lab_b}']").count() == 0

        # ---- by QR, in a new encounter
        enc2 = platform.repository(ctx(doctor)).create(
            {"resourceType": "Encounter", "status": "in-progress",
             "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
             "subject": {"reference": f"Patient/{w.patient_a}"}}, res_type="Encounter").stored.res_id
        gid2 = ask(dr, base, w.patient_a, encounter=enc2, purpose="review of outside results", method="qr")
        dr.locator("#qr-image").wait_for()
        payload = dr.locator("#qr-payload").inner_text().strip()
        assert payload.startswith("HLG1.")

        pt.goto(f"{base}/portal/scan")
        pt.wait_for_url(f"{base}/portal/login*")  # not signed in yet
        pt.fill("input[name=who]", w.phone)
        pt.click("button.primary")
        pt.locator("input[name=code]").wait_for()
        sms = phone.new_page()
        login_code = newest_code(sms, base, w.phone)
        sms.close()
        pt.fill("input[name=code]", login_code)
        pt.click("button.primary")
        pt.wait_for_url(f"{base}/portal/scan")
        pt.fill("textarea[name=payload]", payload)
        pt.click("button#scan-submit")
        pt.locator("button#approve").wait_for()
        request_text = pt.locator("#grant-request").inner_text()
        for text in (username, f"Test {a}", "review of outside results", "all my records"):
            assert text in request_text, text
        shot(pt, "portal-scan")
        pt.click("button#approve")
        pt.wait_for_url(f"{base}/portal/grants?done=approved")
        assert pt.locator(f"ul#active-grants li.grant[data-grant='{gid2}']").count() == 1

        # the doctor's page polls and reloads once the patient approved
        dr.locator("#grant-status", has_text="active").wait_for(timeout=POLL_MS)
        dr.locator("a#shared-record").wait_for(timeout=POLL_MS)
        dr.click("a#shared-record")
        dr.wait_for_url(f"{base}/patients/{w.patient_a}/shared")
        dr.locator(f"section.institution[data-institution='{b}'] tr.record[data-ref='Observation/{w.lab_b}']"
                   ).wait_for()

        # ---- the patient's history: the doctor's accesses, by code and by QR
        pt.goto(f"{base}/portal/history")
        rows = pt.locator("table#access-history tr.access")
        assert rows.count() > 0
        for via in ("code", "qr"):
            mine = pt.locator(f"table#access-history tr.access[data-via='{via}']", has_text=username)
            assert mine.count() > 0, via
            assert f"Test {a}" in mine.first.inner_text()
        shot(pt, "portal-history", full_page=False)  # the newest rows
    finally:
        desk.close()
        phone.close()
