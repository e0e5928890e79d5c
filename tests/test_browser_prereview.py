"""Issue 8, "Must show": the pharmacist returns a township prescription — in Debian's chromium
driven by Playwright against the live server (``live_server``).

A doctor of a township health centre submitted a prescription of aspirin, without a diagnosis,
for a patient on warfarin (prereviewkit): it waits in the regional centre's queue.  The centre's
pharmacist opens the queue from the menu, opens the prescription (its problems, the patient's
medications and allergies), chooses a reason and returns it; the doctor's outcome page shows
"returned" with the reason.  Screenshot: docs/screenshots/prereview-queue.png."""

from __future__ import annotations

import pytest
from prereviewkit import PASSWORD, build, rx
from test_browser import DESKTOP, chromium, shot, sign_in  # noqa: F401  (chromium: the fixture)

from healthlink.runtime import Platform

pytestmark = pytest.mark.browser


def test_pharmacist_returns_a_township_prescription_and_the_doctor_sees_it(
        live_server, platform: Platform, client, chromium):  # noqa: F811
    base = live_server
    w = build(platform, client)
    w.med("11289")  # warfarin, active
    w.allergy("723")
    got = w.submit(rx(w, "1191", dose=100, timing="QD", diagnosis=False))
    ctx = chromium.new_context(viewport=DESKTOP, locale="zh-CN")
    pg = ctx.new_page()
    try:
        sign_in(pg, base, w.pharmacist.username, password=PASSWORD)
        pg.click("nav a[href='/prereview']")
        pg.wait_for_url(f"{base}/prereview")
        pg.fill("form#prereview-filters input[name=institution]", w.t)
        pg.click("form#prereview-filters button.primary")
        row = pg.locator(f"#prereview-queue tr[data-rx='{got['id']}']")
        row.wait_for()
        assert "卓玛测试" in row.inner_text() and "待审核" in row.inner_text()
        shot(pg, "prereview-queue", full_page=False)
        row.locator("a").click()
        pg.wait_for_url(f"{base}/prereview/rx/{got['id']}")
        assert "drug 11289" in pg.locator("#prereview-medications").inner_text()
        assert "allergen 723" in pg.locator("#prereview-allergies").inner_text()
        assert pg.locator("#prereview-problems tr[data-category='duplicate-interaction']").count() >= 1
        pg.select_option("#prereview-reason-code", "interaction")
        pg.fill("#prereview-text", "与华法林合用出血风险高")
        pg.click("#prereview-return")
        pg.wait_for_url(f"{base}/prereview/rx/{got['id']}")
        assert pg.locator("#prereview-status").get_attribute("data-status") == "returned"
        assert "与华法林合用出血风险高" in pg.locator("#prereview-reason").inner_text()
        shot(pg, "prereview-returned", full_page=False)
    finally:
        ctx.close()
    doc = chromium.new_context(viewport=DESKTOP, locale="zh-CN")
    dp = doc.new_page()
    try:
        sign_in(dp, base, w.doctor.username, password=PASSWORD)
        dp.goto(f"{base}/prereview/mine")
        mine = dp.locator(f"#prereview-mine tr[data-rx='{got['id']}']")
        assert mine.get_attribute("data-status") == "returned"
        assert "已退回医师" in mine.inner_text() and "与华法林合用出血风险高" in mine.inner_text()
    finally:
        doc.close()
