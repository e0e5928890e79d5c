"""The pre-review pages (issue 8, items 3 and 5): the centre pharmacist's queue and one
prescription with its problems and the patient's medications and allergies, the decision buttons;
the doctor's outcome list and double-signature form; who is refused.  Real app, in-process."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from prereviewkit import PASSWORD, PWorld, User, build, rx, user

WARFARIN, ASPIRIN, ACETAMINOPHEN = "11289", "1191", "161"


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "the page has no CSRF field"
    return m.group(1)


def sign_in(app, who: User) -> TestClient:
    c = TestClient(app, base_url="http://testserver")
    page = c.get("/login")
    r = c.post("/login", data={"username": who.username, "password": PASSWORD, "csrf_token": csrf_of(page.text),
                               "next": "/"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return c


@pytest.fixture
def w(platform, client) -> PWorld:
    return build(platform, client)


def test_pharmacist_returns_a_prescription_from_the_queue_and_the_doctor_sees_why(app, w: PWorld) -> None:
    w.med(WARFARIN)
    w.allergy("723")
    got = w.submit(rx(w, ASPIRIN, dose=100, timing="QD", diagnosis=False))
    ph = sign_in(app, w.pharmacist)
    home = ph.get("/")
    assert "处方前置审核" in home.text  # the menu offers the queue
    q = ph.get(f"/prereview?institution={w.t}")
    assert q.status_code == 200 and got["id"] in q.text and "卓玛测试" in q.text and "待审核" in q.text
    page = ph.get(f"/prereview/rx/{got['id']}")
    assert page.status_code == 200
    assert f"drug {WARFARIN}" in page.text and "allergen 723" in page.text  # medications, allergies
    assert "重复给药和相互作用" in page.text and "适应证" in page.text  # problem categories
    csrf = csrf_of(page.text)
    bad = ph.post(f"/prereview/rx/{got['id']}/decision", data={"action": "return", "csrf_token": csrf})
    assert bad.status_code == 400 and "reason is required" in bad.text
    r = ph.post(f"/prereview/rx/{got['id']}/decision", follow_redirects=False,
                data={"action": "return", "reason": "interaction", "text": "请停用阿司匹林", "csrf_token": csrf})
    assert r.status_code == 303
    assert "已退回医师" in ph.get(f"/prereview/rx/{got['id']}").text
    doc = sign_in(app, w.doctor)
    mine = doc.get("/prereview/mine")
    row = re.search(rf'<tr data-rx="{got["id"]}" data-status="([^"]+)">(.*?)</tr>', mine.text, re.DOTALL)
    assert row and row.group(1) == "returned"
    assert "已退回医师" in row.group(2) and "重复给药或有相互作用" in row.group(2) and "请停用阿司匹林" in row.group(2)
    doc.cookies.set("hl_lang", "en")
    mine_en = doc.get("/prereview/mine")
    assert "Returned to the doctor" in mine_en.text


def test_the_doctor_countersigns_on_the_page(app, w: PWorld) -> None:
    got = w.submit(rx(w, ASPIRIN, dose=100, timing="QD", diagnosis=False))
    w.platform.prereview.decide(
        __import__("grantkit").ctx(w.pharmacist.actor), got["id"], "double-sign", reason="indication")
    doc = sign_in(app, w.doctor)
    page = doc.get(f"/prereview/rx/{got['id']}")
    assert "需医师双签" in page.text and 'id="prereview-countersign"' in page.text
    r = doc.post(f"/prereview/rx/{got['id']}/countersign", follow_redirects=False,
                 data={"text": "冠心病二级预防", "csrf_token": csrf_of(page.text)})
    assert r.status_code == 303
    after = doc.get(f"/prereview/rx/{got['id']}")
    assert "已双签" in after.text and "冠心病二级预防" in after.text and 'id="prereview-patient"' not in after.text


def test_a_hospital_doctor_cannot_open_the_queue_nor_a_prescription(app, w: PWorld) -> None:
    got = w.submit(rx(w, ACETAMINOPHEN))
    hosp = user(w.client, w.platform, "doctor", w.h)
    c = sign_in(app, hosp)
    assert c.get("/prereview").status_code == 403
    assert c.get(f"/prereview/rx/{got['id']}").status_code == 404
    assert 'href="/prereview"' not in c.get("/").text
