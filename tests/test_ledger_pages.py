"""The audit administrator's pages (issue 6, item 8): the ledger's status with "verify now", the
audit log search and one audit record with its ledger proof; other roles get the 403 page.  And
the portal's history page, which hands the browser what it needs to verify the proofs
(tests/test_browser_ledger.py runs that check in chromium)."""

from __future__ import annotations

import html
import re
import uuid
from datetime import datetime, timedelta

import pytest
from conftest import patient
from fastapi.testclient import TestClient
from test_web import csrf_of, sign_in

from healthlink.runtime import Platform
from healthlink.web import ledger_pages
from healthlink.web.healthcode_pages import SHOWN_ZONE


@pytest.fixture
def page_as(app, staff):
    """A browser signed in to the staff pages with a new user of the given role."""
    def make(role: str) -> tuple[TestClient, str]:
        s = staff(role)
        c = TestClient(app, base_url="http://testserver", cookies={"hl_lang": "en"})
        return sign_in(c, s.username), s.username
    return make


@pytest.fixture
def a_read(client: TestClient, staff):
    """A doctor creates a patient and reads it; returns (doctor username, patient id)."""
    doctor = staff("doctor")
    h = {**doctor.headers, "content-type": "application/fhir+json"}
    r = client.post("/fhir/Patient", json=patient(), headers=h)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert client.get(f"/fhir/Patient/{pid}", headers=doctor.headers).status_code == 200
    return doctor.username, pid


def result_rows(html: str) -> list[str]:
    return re.findall(r'<tr class="audit-event[^"]*".*?</tr>', html, re.DOTALL)


def test_other_roles_get_the_403_page_for_ledger_and_audit_pages(page_as):
    for role in ("doctor", "system_admin", "quality_manager"):
        c, _ = page_as(role)
        home = c.get("/")
        assert 'href="/ledger"' not in home.text and 'href="/audit"' not in home.text
        for path in ("/ledger", "/audit", f"/audit/{uuid.uuid4()}"):
            r = c.get(path)
            assert r.status_code == 403 and "audit administrator" in r.text, (role, path)
        r = c.post("/ledger/verify", data={"csrf_token": csrf_of(home.text)})
        assert r.status_code == 403


def test_audit_admin_finds_the_pages_in_the_nav_and_on_home(page_as):
    c, _ = page_as("audit_admin")
    home = c.get("/")
    assert home.status_code == 200
    assert home.text.count('href="/ledger"') >= 2 and home.text.count('href="/audit"') >= 2  # nav + card


def test_ledger_page_shows_size_root_latest_checkpoint_and_retention(page_as, platform: Platform, a_read):
    platform.ledger.integrate()
    size, _ = platform.ledger.checkpoint()
    c, _ = page_as("audit_admin")
    r = c.get("/ledger")
    assert r.status_code == 200
    # the sequencer runs in the background: the page shows the tree as it was, a root of that size
    shown = int(re.search(r'<dd id="ledger-size">(\d+)</dd>', r.text).group(1))
    assert shown >= size and platform.ledger.root_at(shown).hex() in r.text
    pre = re.search(r'<pre class="checkpoint">(.*?)</pre>', r.text, re.DOTALL).group(1)
    latest = platform.ledger.checkpoints(limit=1)[0]
    assert pre.startswith(platform.settings.ledger_origin + "\n") and str(latest["size"]) in pre
    assert "\u2014 " in pre  # the signature line
    assert f"kept {platform.settings.audit_retention_days} days" in r.text
    assert 'form method="post" action="/ledger/verify" id="verify-now"' in r.text


def test_verify_now_runs_the_verification_records_and_audits_it(page_as, platform: Platform, a_read):
    c, username = page_as("audit_admin")
    page = c.get("/ledger")
    assert c.post("/ledger/verify", data={}).status_code == 403  # no CSRF token
    r = c.post("/ledger/verify", data={"csrf_token": csrf_of(page.text)})
    assert r.history and r.history[0].status_code == 303  # post/redirect/get
    assert r.status_code == 200 and 'id="verify-result"' in r.text
    last = platform.ledger_status()["last_verification"]
    assert last is not None and last["finished"]
    ok = "true" if last["ok"] else "false"
    assert f'id="verify-result" data-ok="{ok}"' in r.text and f'id="verification-result" data-ok="{ok}"' in r.text
    assert last["message"] in r.text  # passed or not depends on what other tests left in the shared database
    audited = c.get("/audit", params={"actor": username, "subtype": "ledger-verify"})
    assert len(result_rows(audited.text)) == 1


def test_search_by_patient_finds_the_doctors_read_and_the_search_is_audited(page_as, a_read):
    doctor, pid = a_read
    c, admin = page_as("audit_admin")
    r = c.get("/audit", params={"patient": pid})
    assert r.status_code == 200
    rows = result_rows(r.text)
    reads = [x for x in rows if doctor in x and "</code> read<" in x]
    assert reads and pid in reads[0]
    assert all(pid in x for x in rows)
    # by actor, by outcome and by the day (Asia/Shanghai)
    by_actor = result_rows(c.get("/audit", params={"actor": doctor}).text)
    assert by_actor and all(doctor in x for x in by_actor)
    today = datetime.now(SHOWN_ZONE).date()
    assert result_rows(c.get("/audit", params={"patient": pid, "from": str(today), "to": str(today),
                                               "outcome": "0", "subtype": "read"}).text)
    assert not result_rows(c.get("/audit", params={"patient": pid, "from": str(today + timedelta(days=1))}).text)
    assert not result_rows(c.get("/audit", params={"patient": pid, "to": str(today - timedelta(days=1))}).text)
    assert c.get("/audit", params={"from": "yesterday"}).status_code == 400
    # reading the audit log is itself audited
    mine = result_rows(c.get("/audit", params={"actor": admin, "subtype": "search-type"}).text)
    assert len(mine) >= 5


def test_search_results_page_older_records_with_a_cursor(page_as, a_read, monkeypatch):
    doctor, _ = a_read
    monkeypatch.setattr(ledger_pages, "PAGE_SIZE", 1)
    c, _ = page_as("audit_admin")
    first = c.get("/audit", params={"actor": doctor})
    assert len(result_rows(first.text)) == 1
    nxt = re.search(r'<a href="([^"]+)" id="audit-next"', first.text).group(1).replace("&amp;", "&")
    second = c.get(nxt)
    assert len(result_rows(second.text)) == 1 and result_rows(second.text) != result_rows(first.text)
    assert 'id="audit-first"' in second.text


def test_event_page_shows_the_auditevent_and_its_proof_once_integrated(page_as, platform: Platform, a_read):
    doctor, pid = a_read
    c, admin = page_as("audit_admin")
    row = next(x for x in result_rows(c.get("/audit", params={"patient": pid, "subtype": "read"}).text))
    event_id = re.search(r'data-event="([^"]+)"', row).group(1)
    platform.ledger.integrate()
    r = c.get(f"/audit/{event_id}")
    assert r.status_code == 200
    assert f'"id": "{event_id}"' in html.unescape(r.text) and doctor in r.text
    seq = platform.audit_seq(event_id)
    leaf = platform.ledger.audit_leaves([seq])[seq]
    assert f'<dd id="leaf-index">{leaf["leaf_index"]}</dd>' in r.text
    assert 'id="ledger-proof" data-included="true"' in r.text
    size = re.search(r"in the signed checkpoint of size (\d+)", r.text)
    assert size and int(size.group(1)) > leaf["leaf_index"]
    assert "the stored record matches its leaf" in r.text
    # opening the record is audited
    opened = result_rows(c.get("/audit", params={"actor": admin, "subtype": "read"}).text)
    assert opened and f"AuditEvent/{event_id}" in opened[0]
    assert c.get(f"/audit/{uuid.uuid4()}").status_code == 404


def test_pages_are_translated_to_chinese(page_as, a_read):
    c, _ = page_as("audit_admin")
    c.cookies.set("hl_lang", "zh-CN")
    assert "防篡改账本" in c.get("/ledger").text
    assert "审计日志" in c.get("/audit").text
