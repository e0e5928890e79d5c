"""The doctor's order page with the pop-up of recognisable results, and the recognition rates page
(issue 7, items 7 and 8; docs/web.md "Recognition of results"), through the real app in-process.

The world is recogkit's (a county hospital A where the doctor works, a qualified prefecture
hospital B, one Person with a Patient at each); the doctor is a web user of A, so grants and the
recognition events name them.  The recognition clock is pinned a day after the results."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

import pytest
from conftest import PASSWORD
from fastapi.testclient import TestClient
from grantkit import actor
from recogkit import RWorld, build, pinned
from sqlalchemy import select

from healthlink.accounts import add_user
from healthlink.db import tables as t
from healthlink.runtime import Platform

NOW = "2026-03-06T10:00:00+08:00"  # the results below are of 2026-03-05: potassium valid through 03-12


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "the page has no CSRF field"
    return m.group(1)


@pytest.fixture
def browser(app) -> Callable[[], TestClient]:  # noqa: ANN001
    return lambda: TestClient(app, base_url="http://testserver")


def signed_in(c: TestClient, platform: Platform, role: str, institution: str | None) -> tuple[TestClient, str, str]:
    username, prac = f"web-{role}-{uuid.uuid4().hex[:8]}", f"prac-{uuid.uuid4().hex[:10]}"
    add_user(platform.db, username=username, password=PASSWORD, display_name=username, roles=[role],
             institution_id=institution, practitioner_id=prac)
    page = c.get("/login")
    r = c.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": csrf_of(page.text),
                               "next": "/"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return c, username, prac


@pytest.fixture
def world(platform: Platform, browser) -> Iterator[tuple[TestClient, RWorld, object]]:
    """The recognition world, its clock pinned, and a doctor of A signed in on the web (the
    world's doctor at A is replaced by the web user, so a grant is bound to them)."""
    w = build(platform)
    c, username, prac = signed_in(browser(), platform, "doctor", w.a)
    web_doctor = actor("doctor", w.a, username, practitioner_id=prac)
    with pinned(platform, NOW):
        yield c, w, web_doctor


def order(c: TestClient, w: RWorld, *items: str, hx: bool = True):  # noqa: ANN201
    url = f"/patients/{w.patient}/orders"
    token = csrf_of(c.get(f"{url}?encounter={w.encounter}").text)
    return c.post(url, data={"encounter": w.encounter, "item": list(items), "csrf_token": token},
                  headers={"HX-Request": "true"} if hx else {}, follow_redirects=False)


def cards_of(html: str) -> list[dict[str, str]]:
    return [{"id": m.group(1), "disclosed": m.group(2), "own": m.group(3)} for m in re.finditer(
        r'<article class="hit[^"]*" id="card-([0-9a-f]+)" data-card="[^"]+" data-item="[^"]+" '
        r'data-disclosed="(true|false)" data-own="(true|false)"', html)]


def events(platform: Platform, **where: object) -> list:
    e = t.recognition_event
    with platform.db.read() as conn:
        return conn.execute(select(e).where(*(e.c[k] == v for k, v in where.items())).order_by(e.c.at)).all()


def decide(c: TestClient, w: RWorld, card: str, action: str, data: dict, *, hx: bool = True):  # noqa: ANN201
    token = csrf_of(c.get(f"/patients/{w.patient}/orders?encounter={w.encounter}").text)
    return c.post(f"/recognition/cards/{card}/{action}", data={**data, "csrf_token": token},
                  headers={"HX-Request": "true"} if hx else {}, follow_redirects=False)


# ---------------------------------------------------------------------- the order page
def test_patient_page_links_to_order_entry_with_the_catalogue(world):
    c, w, _ = world
    assert 'id="order-entry"' in c.get(f"/patients/{w.patient}").text
    html = c.get(f"/patients/{w.patient}/orders").text
    assert 'id="order-form"' in html and f'<option value="{w.encounter}" selected' in html
    assert 'data-kind="laboratory"' in html and 'data-kind="examination"' in html
    assert 'name="item" value="HR-K"' in html and "钾" in html and "开具检查检验" in html  # zh-CN by default
    # the htmx search narrows the list; ticked items stay
    frag = c.get(f"/patients/{w.patient}/orders/items?q=sodium&item=HR-K", headers={"HX-Request": "true"}).text
    assert "<html" not in frag and 'value="HR-NA"' in frag and 'value="HR-K" checked' in frag
    assert 'value="HR-CT-CHEST"' not in frag


def test_an_order_with_a_result_shows_the_card_with_value_mark_and_validity(world):
    c, w, doctor = world
    w.result(w.a, value=4.4)  # own institution: the duplicate-test reminder
    w.result(w.b, value=3.2, flag="L")
    w.grant(doctor)  # the patient authorised the web doctor: B's values are disclosed
    r = order(c, w, "HR-K")
    assert r.status_code == 200, r.text
    html = r.text
    assert 'id="recognition-popup"' in html and "<html" not in html  # an htmx fragment, the dialog
    cards = cards_of(html)
    assert len(cards) == 2 and all(x["disclosed"] == "true" for x in cards)
    assert sorted(x["own"] for x in cards) == ["false", "true"]
    for value in ("4.4", "3.2"):
        assert f'<span class="value">{value}</span>' in html
    assert html.count('<span class="mark"') == 2 and ">HR</span>" in html
    assert "3.5-5.3 mmol/L" in html and "2026-03-05" in html and "2026-03-12" in html  # date, valid until
    assert "州人民医院 B" in html and 'class="tag-own"' in html and "偏低" in html  # flag L
    assert 'class="primary adopt-submit"' in html and 'name="reason" required' in html
    # nothing ordered yet: the line waits for the doctor's decision
    assert events(platform=w.platform, patient_id=w.patient, kind="checked")[0].found is True
    assert 'id="no-orders"' in c.get(f"/patients/{w.patient}/orders?encounter={w.encounter}").text


def test_adopting_puts_the_result_in_the_encounter_with_the_mark(world):
    c, w, doctor = world
    src = w.result(w.b, value=3.9)
    w.grant(doctor)
    card = cards_of(order(c, w, "HR-K").text)[0]["id"]
    # opening the result is recorded once
    detail = c.get(f"/recognition/cards/{card}", headers={"HX-Request": "true"})
    assert detail.status_code == 200 and f"Observation/{src}" in detail.text
    assert len(events(w.platform, card_id=card, kind="opened")) == 1
    r = decide(c, w, card, "adopt", {"cards": [card]})
    assert r.status_code == 200, r.text
    assert 'data-outcome="adopted"' in r.text and r.headers["HX-Trigger"] == "recognition-changed"
    [adopted] = events(w.platform, card_id=card, kind="adopted")
    assert adopted.local_ref.startswith("Observation/")
    page = c.get(f"/patients/{w.patient}/orders?encounter={w.encounter}").text
    row = re.search(r'<tr class="adopted" data-ref="([^"]+)" data-source="([^"]*)">(.*?)</tr>', page, re.S)
    assert row and row.group(1) == adopted.local_ref and row.group(2) == f"Observation/{src}"
    assert '<span class="mark">HR</span>' in row.group(3) and "3.9" in row.group(3) and "州人民医院 B" in row.group(3)
    assert 'id="no-orders"' in page  # adopted: no new test ordered
    # the refreshed fragment (htmx) says the same
    frag = c.get(f"/patients/{w.patient}/orders/record?encounter={w.encounter}", headers={"HX-Request": "true"})
    assert adopted.local_ref in frag.text and "<html" not in frag.text
    # without htmx, the form posts and returns to the page
    card2 = cards_of(order(c, w, "HR-K").text)[0]["id"]
    r = decide(c, w, card2, "adopt", {}, hx=False)
    assert r.status_code == 303 and r.headers["location"].endswith("done=adopted")


def test_declining_without_a_reason_is_refused_visibly_and_records_nothing(world):
    c, w, doctor = world
    w.result(w.a)
    card = cards_of(order(c, w, "HR-K").text)[0]["id"]
    for data in ({}, {"reason": ""}, {"reason": "other", "text": "  "}, {"reason": "bored"}):
        r = decide(c, w, card, "decline", {**data, "cards": [card]})
        assert r.status_code == 400, r.text
        assert 'class="alert decision-error"' in r.text and 'data-outcome' not in r.text
        r = decide(c, w, card, "decline", data, hx=False)  # the plain form: the page with the error
        assert r.status_code == 400 and 'id="order-error"' in r.text
    assert events(w.platform, card_id=card, kind="declined") == []
    assert events(w.platform, patient_id=w.patient, kind="reordered") == []
    assert 'id="no-orders"' in c.get(f"/patients/{w.patient}/orders?encounter={w.encounter}").text


def test_declining_with_a_reason_places_the_order(world):
    c, w, doctor = world
    w.result(w.a)
    w.result(w.a, value=4.0, when="2026-03-04T08:00:00+08:00")
    html = order(c, w, "HR-K").text
    first, second = (x["id"] for x in cards_of(html))
    r = decide(c, w, first, "decline", {"reason": "other", "text": "溶血，需复查", "cards": [first, second]})
    assert r.status_code == 200, r.text
    assert 'data-outcome="declined"' in r.text and "其他（请说明）" in r.text
    assert 'class="muted decided-elsewhere"' in r.text  # the line's other card has no buttons now
    [declined] = events(w.platform, card_id=first, kind="declined")
    assert (declined.reason, declined.reason_text) == ("other", "溶血，需复查")
    [reordered] = events(w.platform, check_id=declined.check_id, kind="reordered")
    assert reordered.order_ref.startswith("ServiceRequest/")
    page = c.get(f"/patients/{w.patient}/orders?encounter={w.encounter}").text
    assert f'<tr class="order" data-ref="{reordered.order_ref}">' in page and "钾" in page
    # the other card of the same line cannot order it a second time
    r = decide(c, w, second, "decline", {"reason": "emergency", "cards": [first, second]})
    assert r.status_code == 409 and page.count('<tr class="order"') == 1


def test_an_imaging_card_names_the_study_and_its_adoption_is_recorded_in_the_encounter(world):
    c, w, _ = world
    study, report = w.imaging(w.a)  # a chest CT at the doctor's own hospital the day before
    r = order(c, w, "HR-CT-CHEST")
    [card] = cards_of(r.text)
    assert card["own"] == "true" and "CT" in r.text and "Thoracic structure" in r.text
    detail = c.get(f"/recognition/cards/{card['id']}").text  # the page, without htmx
    assert f"ImagingStudy/{study}" in detail and f"DiagnosticReport/{report}" in detail
    assert decide(c, w, card["id"], "adopt", {}).status_code == 200
    page = c.get(f"/patients/{w.patient}/orders?encounter={w.encounter}").text
    assert re.search(rf'<tr class="adopted" data-ref="Observation/[^"]+" data-source="DiagnosticReport/{report}">', page)


def test_an_order_without_a_result_is_placed_at_once(world):
    c, w, _ = world
    r = order(c, w, "HR-NA")
    assert r.status_code == 200 and 'id="nothing-found"' in r.text and 'id="placed"' in r.text
    [checked] = events(w.platform, patient_id=w.patient, kind="checked")
    assert checked.found is False
    page = c.get(f"/patients/{w.patient}/orders?encounter={w.encounter}").text
    assert page.count('<tr class="order"') == 1 and "钠" in page
    # without htmx the page itself shows the pop-up
    full = order(c, w, "HR-NA", hx=False)
    assert full.status_code == 200 and "<html" in full.text and 'id="recognition-popup"' in full.text


def test_an_order_needs_an_open_encounter_of_the_patient_and_catalogue_items(world):
    c, w, _ = world
    url = f"/patients/{w.patient}/orders"
    token = csrf_of(c.get(url).text)
    for data in ({"encounter": "no-such-encounter", "item": ["HR-K"]}, {"encounter": w.encounter, "item": []},
                 {"encounter": w.encounter, "item": ["NOT-AN-ITEM"]}, {"item": ["HR-K"]}):
        r = c.post(url, data={**data, "csrf_token": token}, follow_redirects=False)
        assert r.status_code == 400 and 'id="order-error"' in r.text, data
        r = c.post(url, data={**data, "csrf_token": token}, headers={"HX-Request": "true"}, follow_redirects=False)
        assert r.status_code == 400 and 'id="popup-error"' in r.text, data
    assert events(w.platform, patient_id=w.patient) == []
    # a patient of another institution is not found (and nothing is checked)
    r = c.post(f"/patients/{w.patients[w.b]}/orders", data={"encounter": w.encounter, "item": ["HR-K"],
                                                            "csrf_token": token}, follow_redirects=False)
    assert r.status_code == 404


def test_a_hint_for_a_doctor_without_a_grant_shows_no_value(world):
    c, w, _ = world
    w.result(w.b, value=4.77)
    r = order(c, w, "HR-K")
    [card] = cards_of(r.text)
    assert card["disclosed"] == "false"
    assert "4.77" not in r.text and 'class="value"' not in r.text and "3.5-5.3" not in r.text
    assert "州人民医院 B" in r.text and "2026-03-05" in r.text
    assert f'class="ask-authorisation" href="/patients/{w.patient}/outside"' in r.text
    assert "adopt-submit" not in r.text and 'id="grant-needed"' in r.text
    # adopting a hint by hand is refused (the service's 403), and nothing is adopted
    r = decide(c, w, card["id"], "adopt", {"cards": [card["id"]]})
    assert r.status_code == 403 and 'class="alert decision-error"' in r.text
    assert events(w.platform, card_id=card["id"], kind="adopted") == []
    assert c.get(f"/recognition/cards/{card['id']}").status_code in (200, 403)
    assert "4.77" not in c.get(f"/recognition/cards/{card['id']}").text


def test_a_card_of_another_institution_is_not_found(world, platform, browser):
    c, w, _ = world
    w.result(w.a)
    card = cards_of(order(c, w, "HR-K").text)[0]["id"]
    other, _, _ = signed_in(browser(), platform, "doctor", w.b)
    assert other.get(f"/recognition/cards/{card}").status_code == 404
    token = csrf_of(other.get("/").text)
    r = other.post(f"/recognition/cards/{card}/adopt", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 404
    assert events(w.platform, card_id=card, kind="adopted") == []


# ---------------------------------------------------------------------- the rates page
def test_rates_page_shows_the_numbers_and_the_decline_reasons(world, platform, browser):
    c, w, doctor = world
    w.result(w.b, value=3.9)
    w.grant(doctor)
    adopt_card = cards_of(order(c, w, "HR-K").text)[0]["id"]
    assert decide(c, w, adopt_card, "adopt", {}).status_code == 200
    decline_card = cards_of(order(c, w, "HR-K").text)[0]["id"]
    assert decide(c, w, decline_card, "decline", {"reason": "emergency"}).status_code == 200
    order(c, w, "HR-NA")  # checked, nothing found
    qm, _, _ = signed_in(browser(), platform, "quality_manager", w.a)
    home = qm.get("/").text
    assert 'href="/recognition/rates"' in home
    html = qm.get("/recognition/rates?since=2026-03-01&until=2026-03-31&by=institution").text
    totals = dict(re.findall(r'<dd data-k="(\w+)">([^<]*)</dd>', html))
    assert totals == {"checked": "3", "found": "2", "retrieval": "66.7%", "reminded": "2", "adopted": "1",
                      "declined": "1", "recognition": "50.0%", "savings": "6.00"}
    row = re.search(rf'<tr class="rate" data-key="{w.a}">(.*?)</tr>', html, re.S)
    assert row and "县人民医院 A" in row.group(1) and '<td data-label="已采纳" data-k="adopted">1</td>' in row.group(1)
    reason = re.search(r'<tr class="reason" data-reason="emergency">(.*?)</tr>', html, re.S)
    assert reason and "急诊、急救等紧急情况" in reason.group(1) and 'data-k="count">1<' in reason.group(1)
    assert '<figure class="chart" id="rates-chart">' in html and "<svg" in html and "<rect" in html
    # grouped by item, in English
    qm.cookies.set("hl_lang", "en")
    by_item = qm.get("/recognition/rates?since=2026-03-01&until=2026-03-31&by=item").text
    assert '<tr class="rate" data-key="HR-K">' in by_item and "Retrieval rate" in by_item
    assert "Medico-legal" not in by_item and "Emergency or resuscitation" in by_item
    # a bad date is refused on the page, not with a crash
    bad = qm.get("/recognition/rates?since=yesterday")
    assert bad.status_code == 400 and "<html" in bad.text


def test_the_chart_escapes_its_labels():
    from healthlink.web.recognition_pages import bar_chart, rate_row
    from healthlink.web.session import _env

    rows = [rate_row({"key": "x", "label": "<script>alert(1)</script>", "checked": 2, "found": 1,
                      "retrieval_rate": 0.5, "reminded": 1, "adopted": 1, "recognition_rate": 1.0,
                      "savings_yuan": "6"})]
    chart = bar_chart(rows)
    assert chart["bars"][0]["ret_w"] > 0 and chart["bars"][0]["rec_w"] > chart["bars"][0]["ret_w"]
    tpl = _env.from_string('{% for b in chart.bars %}<text>{{ b.label }}</text>{% endfor %}')
    assert "<script>" not in tpl.render(chart=chart) and "&lt;script&gt;" in tpl.render(chart=chart)


@pytest.mark.parametrize("role", ["nurse", "registration_clerk", "health_commission_leader", "audit_admin"])
def test_roles_that_do_not_order_get_403_on_the_order_pages(world, platform, browser, role):
    c, w, _ = world
    other, _, _ = signed_in(browser(), platform, role, w.a if role != "audit_admin" else None)
    r = other.get(f"/patients/{w.patient}/orders")
    assert r.status_code == 403 and "<html" in r.text
    token = csrf_of(other.get("/").text)
    r = other.post(f"/patients/{w.patient}/orders", data={"encounter": w.encounter, "item": ["HR-K"],
                                                           "csrf_token": token}, follow_redirects=False)
    assert r.status_code == 403
    assert events(w.platform, patient_id=w.patient, kind="checked") == []
    assert 'id="order-entry"' not in other.get(f"/patients/{w.patient}").text


@pytest.mark.parametrize("role", ["doctor", "nurse", "registration_clerk", "audit_admin", "system_admin"])
def test_roles_that_may_not_see_the_rates_get_403(platform, browser, make_institution, role):
    c, _, _ = signed_in(browser(), platform, role, make_institution())
    r = c.get("/recognition/rates")
    assert r.status_code == 403 and "<html" in r.text
    assert 'href="/recognition/rates"' not in c.get("/").text


@pytest.mark.parametrize("role", ["quality_manager", "institution_manager", "health_commission_leader"])
def test_rate_roles_see_the_page(platform, browser, make_institution, role):
    c, _, _ = signed_in(browser(), platform, role, make_institution())
    r = c.get("/recognition/rates?by=tier")
    assert r.status_code == 200, r.text
    assert 'id="rates-totals"' in r.text and 'href="/recognition/rates"' in r.text


def test_decisions_need_the_csrf_token(world):
    c, w, _ = world
    w.result(w.a)
    card = cards_of(order(c, w, "HR-K").text)[0]["id"]
    r = c.post(f"/recognition/cards/{card}/decline", data={"reason": "emergency"}, follow_redirects=False)
    assert r.status_code == 403
    assert events(w.platform, card_id=card, kind="declined") == []
