"""Issue 8, "Must show": the nurse's bedside scan in a real browser (Debian's chromium driven by
Playwright against the live server), on a phone-sized screen.

The nurse signs in, scans the patient's wristband (typed into the focused field and sent with
Enter, as a keyboard-wedge scanner does): the patient, the bed and the due warfarin appear.  Then a
pack of the right drug but expired: blocked, the expiry pair named.  Then the right pack: verified
and recorded, and exactly one MedicationAdministration exists.  Screenshots:
docs/screenshots/bedside-blocked.png and bedside-recorded.png."""

from __future__ import annotations

import uuid

import pytest
from bedsidekit import GTIN, build, later
from sqlalchemy import func, select
from test_browser import PHONE, chromium, shot, sign_in  # noqa: F401  (chromium: the fixture)

from healthlink.accounts import add_user
from healthlink.db import tables as t
from healthlink.runtime import Platform

pytestmark = pytest.mark.browser
PASSWORD = "bedside-browser-password-1"


def test_nurse_scans_wristband_then_a_wrong_pack_is_blocked_and_the_right_one_recorded(
        live_server, platform: Platform, chromium) -> None:  # noqa: F811
    base = live_server
    ward = build(platform)
    ward.order("LD-0009", 2.5)
    username = f"nurse-{uuid.uuid4().hex[:8]}"
    add_user(platform.db, username=username, password=PASSWORD, display_name="护士 王芳", roles=["nurse"],
             institution_id=ward.inst, practitioner_id=f"prac-{uuid.uuid4().hex[:8]}")
    ctx = chromium.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, locale="zh-CN")
    page = ctx.new_page()
    sign_in(page, base, username, password=PASSWORD, next_path="/bedside")
    assert page.evaluate("document.activeElement.id") == "scan"  # a wedge scanner types here
    page.keyboard.type(ward.wristband())
    page.keyboard.press("Enter")
    page.locator("#patient").wait_for()
    assert ward.names[0] in page.inner_text("#patient") and "内科 12床" in page.inner_text("#patient")
    assert "华法林" in page.inner_text("#patient .due")

    expired = f"(01){GTIN['warfarin']}(17){later(-5):%y%m%d}(10)L2611(21)BR0001"
    page.keyboard.type(expired)
    page.keyboard.press("Enter")
    page.locator("#result[data-outcome=blocked]").wait_for()
    text = page.inner_text("#result")
    assert "已拦截" in text and "有效期不符" in text and later(-5).isoformat() in text
    shot(page, "bedside-blocked")

    right = f"(01){GTIN['warfarin']}(17){later(400):%y%m%d}(10)L2611(21)BR0002"
    page.fill("#scan", right)
    page.press("#scan", "Enter")
    page.locator("#result[data-outcome=recorded]").wait_for()
    assert "核对通过，已记录" in page.inner_text("#result")
    assert "已于" in page.inner_text("#patient .due")  # the dose is shown as given
    shot(page, "bedside-recorded")
    ctx.close()
    with platform.db.read() as conn:
        n = conn.execute(select(func.count()).select_from(t.resource).where(
            t.resource.c.res_type == "MedicationAdministration",
            t.resource.c.patient_id == ward.patients[0])).scalar_one()
    assert n == 1
