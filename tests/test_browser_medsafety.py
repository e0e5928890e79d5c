"""Issue 8, "Must show": a browser test of the alert in the doctor's order entry, in Debian's
chromium driven by Playwright against the live server (``live_server``).

The doctor (a web user of medkit's county hospital A, with the patient's authorisation) opens
the order page, switches to the prescriptions tab, finds simvastatin in the drug dictionary and
adds it: the live check shows the blocking alert for clarithromycin recorded at the prefecture
hospital B (ONC high-priority pair), naming the drug, the institution and the source.  Signing
without a reason is refused; "remove this drug" takes it away; added again and overridden with a
reason, the prescription is signed and listed in the encounter.

Screenshot: docs/screenshots/medsafety-alert.png.  Like tests/test_browser.py this needs chromium
(``make install-browser``) and fails without it."""

from __future__ import annotations

import re
import uuid

import pytest
from grantkit import actor
from medkit import RXNORM, build
from test_browser import DESKTOP, chromium, shot, sign_in  # noqa: F401  (chromium: the fixture)

from healthlink.accounts import add_user
from healthlink.medsafety.knowledge import load
from healthlink.runtime import Platform

pytestmark = pytest.mark.browser

PASSWORD = "medsafety-browser-password-1"
KB = load()


def rx(ingredient: str) -> str:
    return KB.ingredient(ingredient).rxnorm


def test_doctor_orders_an_interacting_drug_sees_the_alert_overrides_it_and_signs(
        live_server, platform: Platform, chromium):  # noqa: F811
    base = live_server
    w = build(platform)
    username, prac = f"doctor-{uuid.uuid4().hex[:8]}", f"prac-{uuid.uuid4().hex[:8]}"
    add_user(platform.db, username=username, password=PASSWORD, display_name="卓玛医生", roles=["doctor"],
             institution_id=w.a, practitioner_id=prac)
    w.med(w.b, rx("clarithromycin"))  # prescribed at the prefecture hospital
    w.grant(actor("doctor", w.a, username, practitioner_id=prac))

    desk = chromium.new_context(viewport=DESKTOP, locale="zh-CN")
    dr = desk.new_page()
    try:
        sign_in(dr, base, username, password=PASSWORD, next_path=f"/patients/{w.patient}/orders")
        dr.click("a#tab-prescriptions")
        dr.wait_for_url(f"{base}/patients/{w.patient}/prescriptions*")

        # ---- find simvastatin and add it: the live check shows the blocking alert
        dr.fill("form#drug-search input[name=q]", "辛伐他汀")
        add = dr.locator(f"#drug-results li.drug[data-drug='{RXNORM}|{rx('simvastatin')}'] a.add-drug")
        add.wait_for()
        add.click()
        line = dr.locator("#lines fieldset.rx-line")
        line.wait_for()
        dr.locator("#alerts .rx-block").wait_for()
        line.locator("input[name=dose]").fill("20")
        line.locator("select[name=frequency]").select_option("HS")
        line.locator("input[name=days]").fill("14")
        dr.wait_for_timeout(900)  # let the check on change settle, then check on purpose
        with dr.expect_response(re.compile(r".*/prescriptions/check$")):
            dr.click("button#rx-check")
        block = dr.locator("#alerts .rx-block")
        block.wait_for()
        text = block.inner_text()
        for expected in ("禁忌", "克拉霉素", "州人民医院 B", "2026-10-01", "Phansalkar", "ONC"):
            assert expected in text, expected
        assert dr.locator("#alerts article.finding.interrupting").get_attribute("data-disclosed") == "true"
        block.scroll_into_view_if_needed()
        shot(dr, "medsafety-alert")

        # ---- signing without a reason is refused
        with dr.expect_response(re.compile(r".*/prescriptions/sign$")):
            dr.click("button#rx-sign")
        dr.locator("#sign-error").wait_for()
        assert "辛伐他汀" in dr.locator("#sign-error").inner_text()
        assert dr.locator("#prescriptions tr.prescription").count() == 0

        # ---- "remove this drug" takes the line and its alert away; added again, checked again
        dr.click("#alerts button.remove-drug")
        dr.wait_for_function("() => !document.querySelector('#alerts .rx-block')")
        assert dr.locator("#lines fieldset.rx-line").count() == 0
        add.click()
        line.wait_for()
        line.locator("input[name=dose]").fill("20")
        line.locator("select[name=frequency]").select_option("HS")
        line.locator("input[name=days]").fill("14")
        dr.wait_for_timeout(900)
        with dr.expect_response(re.compile(r".*/prescriptions/check$")):
            dr.click("button#rx-check")
        block.wait_for()

        # ---- with a reason: signed, and listed in the encounter
        dr.locator("#alerts select.override-reason").select_option("will-monitor")
        dr.click("button#rx-sign")
        dr.wait_for_url(re.compile(rf"{re.escape(base)}/patients/{w.patient}/prescriptions\?.*done=signed"))
        dr.locator("#flash").wait_for()
        row = dr.locator("#prescriptions tr.prescription")
        assert row.count() == 1
        assert "辛伐他汀" in row.inner_text() and "20 mg" in row.inner_text()
    finally:
        desk.close()
