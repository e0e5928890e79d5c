"""Issue 7, "Must show": a browser test of the recognition pop-up, in Debian's chromium driven by
Playwright against the live server (``live_server``).

The doctor (a web user of recogkit's county hospital A, with the patient's authorisation) opens
the order page from the patient's summary, searches the catalogue, orders potassium, sees the
card of the prefecture hospital's result in the pop-up, opens it and adopts it: the recognised
result appears in the encounter with its mark.  Then the doctor orders sodium, sees its card and
orders anyway with a reason: the order appears in the encounter.  The quality manager's rates page
shows both: one adopted, one declined with that reason.

Screenshots go to docs/screenshots/ (recognition-popup, recognition-rates).  Like
tests/test_browser.py this needs chromium (``make install-browser``) and fails without it."""

from __future__ import annotations

import re
import uuid

import pytest
from grantkit import actor
from recogkit import build, pinned
from test_browser import DESKTOP, chromium, shot, sign_in  # noqa: F401  (chromium: the fixture)

from healthlink.accounts import add_user
from healthlink.runtime import Platform

pytestmark = pytest.mark.browser

PASSWORD = "recognition-browser-password-1"
NOW = "2026-03-06T10:00:00+08:00"


def web_user(platform: Platform, role: str, institution: str) -> tuple[str, str]:
    username, prac = f"{role[:6]}-{uuid.uuid4().hex[:8]}", f"prac-{uuid.uuid4().hex[:8]}"
    add_user(platform.db, username=username, password=PASSWORD, display_name=username, roles=[role],
             institution_id=institution, practitioner_id=prac)
    return username, prac


def order(page, item: str, search: str) -> None:  # noqa: ANN001
    """Search the catalogue, tick ``item`` and order; wait for the pop-up."""
    page.fill("form#catalogue-search input[name=q]", search)
    box = page.locator(f"#catalogue input[name=item][value='{item}']")
    box.wait_for()
    page.wait_for_function("n => document.querySelectorAll('#catalogue input[name=item]').length < n", arg=148)
    box.check()
    page.click("button#order-submit")
    page.locator("#recognition-popup").wait_for()


def test_doctor_adopts_one_result_and_orders_another_anyway_and_the_rates_show_both(
        live_server, platform: Platform, chromium):  # noqa: F811
    base = live_server
    w = build(platform)
    username, prac = web_user(platform, "doctor", w.a)
    qm, _ = web_user(platform, "quality_manager", w.a)
    with pinned(platform, NOW):
        w.result(w.b, "2823-3", value=3.3, flag="L")  # potassium at the prefecture hospital
        w.result(w.b, "2951-2", value=141, low=137, high=147)  # sodium
        w.grant(actor("doctor", w.a, username, practitioner_id=prac))

        desk = chromium.new_context(viewport=DESKTOP, locale="zh-CN")
        dr = desk.new_page()
        try:
            sign_in(dr, base, username, password=PASSWORD, next_path=f"/patients/{w.patient}")
            dr.click("a#order-entry")
            dr.wait_for_url(f"{base}/patients/{w.patient}/orders*")

            # ---- order potassium: the card, opened, adopted
            order(dr, "HR-K", "钾")
            card = dr.locator("#recognition-popup article.hit").first
            assert card.get_attribute("data-disclosed") == "true"
            text = card.inner_text()
            for expected in ("HR", "钾", "3.3", "mmol/L", "3.5-5.3 mmol/L", "州人民医院 B", "2026-03-05", "2026-03-12"):
                assert expected in text, expected
            assert card.locator(".flag").inner_text() == "偏低"
            card.locator("a.open-result").click()
            card.locator(".result-detail").wait_for()
            assert "Observation/" in card.locator(".result-detail").inner_text()
            shot(dr, "recognition-popup", full_page=False)
            card.locator("button.adopt-submit").click()
            dr.locator("#recognition-popup section.line[data-outcome=adopted]").wait_for()
            adopted = dr.locator("#encounter-record tr.adopted")  # refreshed by htmx after the decision
            adopted.wait_for()
            assert adopted.locator(".mark").inner_text() == "HR" and "3.3" in adopted.inner_text()
            dr.click("a#popup-close")
            dr.wait_for_url(re.compile(rf"{re.escape(base)}/patients/{w.patient}/orders\?encounter="))
            assert dr.locator("#encounter-record tr.adopted").count() == 1
            assert dr.locator("#encounter-record tr.order").count() == 0  # adopted: nothing ordered

            # ---- order sodium: order anyway, with a reason
            order(dr, "HR-NA", "钠")
            card = dr.locator("#recognition-popup article.hit").first
            assert "141" in card.inner_text()
            # without a reason: the browser's own check is bypassed, the server refuses in the card
            card.locator("select[name=reason]").evaluate("e => e.removeAttribute('required')")
            card.locator("button.decline-submit").click()
            dr.locator("#recognition-popup .decision-error").wait_for()
            assert dr.locator("#recognition-popup section.line[data-outcome]").count() == 0
            card.locator("select[name=reason]").select_option("major-procedure")
            card.locator("button.decline-submit").click()
            dr.locator("#recognition-popup section.line[data-outcome=declined]").wait_for()
            assert "对重大诊疗措施" in dr.locator("#recognition-popup section.line").inner_text()
            dr.locator("#encounter-record tr.order").wait_for()
            assert "钠" in dr.locator("#encounter-record tr.order").inner_text()
        finally:
            desk.close()

        # ---- the quality manager's rates page reflects both decisions
        office = chromium.new_context(viewport=DESKTOP, locale="zh-CN")
        pg = office.new_page()
        try:
            sign_in(pg, base, qm, password=PASSWORD)
            pg.click("nav a[href='/recognition/rates']")
            pg.wait_for_url(f"{base}/recognition/rates")
            pg.fill("input[name=since]", "2026-03-01")
            pg.fill("input[name=until]", "2026-03-31")
            pg.click("form#rates-filters button.primary")
            pg.wait_for_url(re.compile(r".*/recognition/rates\?since=2026-03-01.*"))
            totals = {k: pg.locator(f"#rates-totals dd[data-k={k}]").inner_text()
                      for k in ("checked", "found", "reminded", "adopted", "declined", "recognition", "savings")}
            assert totals == {"checked": "2", "found": "2", "reminded": "2", "adopted": "1", "declined": "1",
                              "recognition": "50.0%", "savings": "6.00"}, totals
            row = pg.locator(f"table#rates tr.rate[data-key='{w.a}']")
            assert row.locator("td[data-k=adopted]").inner_text() == "1"
            assert row.locator("td[data-k=declined]").inner_text() == "1"
            reason = pg.locator("table#decline-reasons tr.reason[data-reason='major-procedure']")
            assert reason.locator("td[data-k=count]").inner_text() == "1"
            assert pg.locator("#rates-chart svg rect.bar-recognition").count() == 1
            shot(pg, "recognition-rates")
        finally:
            office.close()
