"""The staff pages of patient-authorised access (issue 5; docs/web.md "Consultation and shared
record"), through the real app in-process: the consultation panel, a request approved by code, by
QR and in person at the desk, the shared record grouped by institution, closing the consultation,
break-the-glass and the quality manager's review queue."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable

import pytest
from conftest import PASSWORD
from fastapi.testclient import TestClient
from grantkit import World, actor, build, ctx, last_consent_code

from healthlink.accounts import add_user
from healthlink.fhir.labels import DATA_CLASSES, SENSITIVE
from healthlink.runtime import Platform

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200).decode()


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "the page has no CSRF field"
    return m.group(1)


@pytest.fixture
def browser(app) -> Callable[[], TestClient]:
    return lambda: TestClient(app, base_url="http://testserver")


def signed_in(c: TestClient, platform: Platform, role: str, institution: str) -> tuple[TestClient, str, str]:
    """A web user of ``role`` at ``institution``, signed in on ``c``: (client, username, practitioner)."""
    username, prac = f"web-{role}-{uuid.uuid4().hex[:8]}", f"prac-{uuid.uuid4().hex[:10]}"
    add_user(platform.db, username=username, password=PASSWORD, display_name=username, roles=[role],
             institution_id=institution, practitioner_id=prac)
    page = c.get("/login")
    r = c.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": csrf_of(page.text),
                               "next": "/"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return c, username, prac


@pytest.fixture
def consult(platform, browser, make_institution):
    """A doctor of institution A signed in on the web, and the two-institution world of grantkit
    with its records built as that doctor (grants are bound to the web user's name)."""
    a, b = make_institution(), make_institution()
    c, username, prac = signed_in(browser(), platform, "doctor", a)
    w = build(platform, a, b, doctor_a=actor("doctor", a, username, practitioner_id=prac))
    return c, w


def post(c: TestClient, page_url: str, action: str, data: dict, **kw: object):
    token = csrf_of(c.get(page_url).text)
    return c.post(action, data={**data, "csrf_token": token}, follow_redirects=False, **kw)


def ask(c: TestClient, w: World, method: str = "code", **extra: object) -> str:
    r = post(c, f"/patients/{w.patient_a}/outside", f"/patients/{w.patient_a}/outside/request",
             {"encounter": w.encounter_a, "purpose": "follow-up of diabetes", "classes": ["*"],
              "method": method, **extra})
    assert r.status_code == 303, r.text
    assert r.headers["location"].startswith("/grants/")
    return r.headers["location"].removeprefix("/grants/")


def status_of(html: str) -> str:
    m = re.search(r'id="grant-status"[^>]*>([^<]*)<', html)
    assert m, "no #grant-status on the page"
    return m.group(1)


def test_patient_page_links_to_the_consultation_panel_with_the_request_form(consult):
    c, w = consult
    assert 'id="outside-records"' in c.get(f"/patients/{w.patient_a}").text
    html = c.get(f"/patients/{w.patient_a}/outside").text
    assert 'id="grant-request"' in html and f'action="/patients/{w.patient_a}/outside/request"' in html
    assert f'<option value="{w.encounter_a}"' in html  # the open encounter at A, not B's finished one
    assert w.encounter_b not in html
    assert re.search(r'name="classes" value="\*" checked', html)
    for cls in DATA_CLASSES:
        assert re.search(rf'name="classes" value="{cls}">', html), cls
    for cat in SENSITIVE:
        assert re.search(rf'name="sensitive" value="{cat}">', html), cat  # offered, unchecked
    assert re.search(r'name="method" value="code" checked', html) and 'name="method" value="qr"' in html
    assert 'id="grant-request-submit"' in html and 'id="break-glass"' in html and 'id="grants"' in html
    assert "其他机构的记录" in html  # zh-CN by default


def test_a_patient_without_an_open_encounter_cannot_be_asked(platform, browser, make_institution):
    a, b = make_institution(), make_institution()
    c, username, prac = signed_in(browser(), platform, "doctor", a)
    w = build(platform, a, b, doctor_a=actor("doctor", a, username, practitioner_id=prac))
    repo = platform.repository(ctx(actor("doctor", a, username, practitioner_id=prac)))
    body = repo.read("Encounter", w.encounter_a).json()
    body["status"] = "finished"
    repo.update("Encounter", w.encounter_a, body, if_match=None)
    html = c.get(f"/patients/{w.patient_a}/outside").text
    assert 'id="no-encounter"' in html and 'id="grant-request"' not in html


def test_code_request_code_entry_shared_record_and_closing_the_consultation(platform, consult):
    c, w = consult
    gid = ask(c, w)
    page = c.get(f"/grants/{gid}").text
    assert status_of(page) == "pending" and 'id="grant-code"' in page and 'id="grant-code-submit"' in page
    assert f'hx-get="/grants/{gid}/status"' in page and 'id="shared-record"' not in page
    assert gid in page  # the request id for the desk
    # the polled fragment
    frag = c.get(f"/grants/{gid}/status", headers={"HX-Request": "true"})
    assert status_of(frag.text) == "pending" and "HX-Refresh" not in frag.headers and "<html" not in frag.text
    # a wrong code is refused on the page, not with a crash
    code = last_consent_code(platform, w.phone)
    wrong = "000000" if code != "000000" else "111111"
    r = post(c, f"/grants/{gid}", f"/grants/{gid}/code", {"code": wrong})
    assert 400 <= r.status_code < 500 and 'class="alert"' in r.text and status_of(r.text) == "pending"
    # the right one makes it active
    r = post(c, f"/grants/{gid}", f"/grants/{gid}/code", {"code": code})
    assert r.status_code == 303 and r.headers["location"] == f"/grants/{gid}"
    page = c.get(f"/grants/{gid}").text
    assert status_of(page) == "active" and 'id="grant-code"' not in page
    assert f'id="shared-record" href="/patients/{w.patient_a}/shared"' in page
    assert f'action="/encounters/{w.encounter_a}/close"' in page and 'id="close-consultation-submit"' in page
    frag = c.get(f"/grants/{gid}/status", headers={"HX-Request": "true"})
    assert status_of(frag.text) == "active" and frag.headers["HX-Refresh"] == "true"
    panel = c.get(f"/patients/{w.patient_a}/outside").text
    assert re.search(rf'<tr class="grant" data-grant="{re.escape(gid)}">.*?class="grant-status">active<',
                     panel, re.DOTALL)
    # the shared record: B's section with B's lab result, not the sensitive records
    shared = c.get(f"/patients/{w.patient_a}/shared").text
    assert f'data-institution="{w.b}"' in shared and f"Test {w.b}" in shared
    assert f'data-institution="{w.a}"' in shared
    assert f'data-ref="Observation/{w.lab_b}"' in shared and "5.4 mmol/L" in shared
    assert f'data-ref="MedicationRequest/{w.med_b}"' in shared and "metformin" in shared
    assert w.hiv_b not in shared and w.depression_b not in shared
    assert 'id="btg-banner"' not in shared
    # closing the consultation ends access at once
    r = post(c, f"/grants/{gid}", f"/encounters/{w.encounter_a}/close", {"patient": w.patient_a})
    assert r.status_code == 303 and r.headers["location"] == f"/patients/{w.patient_a}/outside?closed=1"
    panel = c.get(r.headers["location"]).text
    assert "问诊已结束，访问权限已终止" in panel
    assert re.search(rf'data-grant="{re.escape(gid)}">.*?class="grant-status">closed<', panel, re.DOTALL)
    shared = c.get(f"/patients/{w.patient_a}/shared").text
    assert f'data-institution="{w.b}"' not in shared and w.lab_b not in shared
    assert 'id="no-grant"' in shared and f'href="/patients/{w.patient_a}/outside"' in shared


def test_qr_request_shows_a_rotating_code_and_turns_active_when_the_patient_approves(platform, consult):
    c, w = consult
    gid = ask(c, w, "qr")
    page = c.get(f"/grants/{gid}").text
    assert 'id="qr-image"' in page and "<svg" in page and 'id="grant-code"' not in page
    payload = re.search(r'id="qr-payload"[^>]*>([^<]+)<', page).group(1)
    assert payload.startswith("HLG1.") and f'hx-get="/grants/{gid}/qr"' in page and "every 60s" in page
    frag = c.get(f"/grants/{gid}/qr", headers={"HX-Request": "true"})
    assert frag.status_code == 200 and 'id="qr-image"' in frag.text and "<html" not in frag.text
    account = platform.patient_accounts.verify_in_person(platform.db, actor("registration_clerk", w.a),
                                                         w.person, w.phone)
    platform.grants.decide(account.id, gid, approve=True, payload=payload)
    assert c.get(f"/grants/{gid}/status", headers={"HX-Request": "true"}).headers["HX-Refresh"] == "true"
    page = c.get(f"/grants/{gid}").text
    assert status_of(page) == "active" and 'id="shared-record"' in page and 'id="qr-image"' not in page
    assert c.get(f"/grants/{gid}/qr", headers={"HX-Request": "true"}).headers["HX-Refresh"] == "true"


def test_a_refused_request_form_shows_the_reason_not_an_error_page(consult):
    c, w = consult
    r = post(c, f"/patients/{w.patient_a}/outside", f"/patients/{w.patient_a}/outside/request",
             {"encounter": w.encounter_a, "purpose": "  ", "method": "code"})
    assert r.status_code == 400 and 'id="grant-request"' in r.text and 'class="alert"' in r.text
    r = post(c, f"/patients/{w.patient_a}/outside", f"/patients/{w.patient_a}/outside/request",
             {"encounter": w.encounter_b, "purpose": "x", "method": "code"})
    assert r.status_code == 404 and 'id="grant-request"' in r.text
    # no CSRF token: refused
    r = c.post(f"/patients/{w.patient_a}/outside/request",
               data={"encounter": w.encounter_a, "purpose": "x"}, follow_redirects=False)
    assert r.status_code == 403
    # another doctor's request is not found
    assert c.get("/grants/not-a-request").status_code == 404


def test_break_the_glass_marks_the_shared_record_and_lands_in_the_quality_managers_queue(
        platform, consult, browser):
    c, w = consult
    url = f"/patients/{w.patient_a}/outside"
    r = post(c, url, f"{url}/break-glass", {"encounter": w.encounter_a, "reason": "short"})
    assert r.status_code == 400 and 'id="break-glass"' in r.text and 'class="alert"' in r.text
    reason = "unconscious after a road accident, no relative present"
    r = post(c, url, f"{url}/break-glass", {"encounter": w.encounter_a, "reason": reason})
    assert r.status_code == 303 and r.headers["location"] == f"/patients/{w.patient_a}/shared"
    shared = c.get(r.headers["location"]).text
    assert 'id="btg-banner"' in shared and f'data-institution="{w.b}"' in shared
    assert re.search(rf'<tr class="record btg" data-ref="Observation/{w.lab_b}"', shared)
    # the quality manager of A: the menu, the queue, the review
    qm, _, _ = signed_in(browser(), platform, "quality_manager", w.a)
    assert 'href="/review/break-glass"' in qm.get("/").text
    queue = qm.get("/review/break-glass").text
    m = re.search(r'<tr class="btg" data-grant="([^"]+)">', queue)
    assert m and 'id="btg-queue"' in queue and reason in queue and f"Patient/{w.patient_a}" in queue
    gid = m.group(1)
    r = post(qm, "/review/break-glass", f"/review/break-glass/{gid}", {"note": ""})
    assert r.status_code == 400 and 'class="alert"' in r.text
    r = post(qm, "/review/break-glass", f"/review/break-glass/{gid}", {"note": "justified: emergency"})
    assert r.status_code == 303
    after = qm.get(r.headers["location"]).text
    assert f'<tr class="btg" data-grant="{gid}">' not in after and "justified: emergency" in after
    # a doctor does not review
    assert c.get("/review/break-glass").status_code == 403


def test_the_registration_desk_records_a_signed_consent(platform, consult, browser):
    c, w = consult
    gid = ask(c, w)
    clerk, _, _ = signed_in(browser(), platform, "registration_clerk", w.a)
    assert 'href="/desk/consents"' in clerk.get("/").text
    desk = clerk.get("/desk/consents").text
    assert 'name="request"' in desk
    r = clerk.get(f"/desk/consents?request={gid}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/grants/{gid}/in-person"
    page = clerk.get(r.headers["location"]).text
    assert 'id="signature-pad"' in page and 'name="signature"' in page and "/static/signature.js" in page
    # the clerk goes through the request with the patient before they sign
    assert 'id="request-purpose">follow-up of diabetes' in page and 'id="request-status">pending' in page
    # a clerk of another institution does not see it
    other, _, _ = signed_in(browser(), platform, "registration_clerk", w.b)
    assert other.get(f"/grants/{gid}/in-person").status_code == 404
    assert clerk.get("/static/signature.js").status_code == 200
    r = post(clerk, f"/grants/{gid}/in-person", f"/grants/{gid}/in-person", {"signature": ""})
    assert r.status_code == 400 and 'class="alert"' in r.text
    r = post(clerk, f"/grants/{gid}/in-person", f"/grants/{gid}/in-person", {"signature": PNG})
    assert r.status_code == 200 and status_of(r.text) == "active" and "follow-up of diabetes" in r.text
    assert status_of(c.get(f"/grants/{gid}").text) == "active"
    # a doctor cannot record a consent at the desk
    r = post(c, f"/grants/{gid}", f"/grants/{gid}/in-person", {"signature": PNG})
    assert r.status_code in (403, 409)
