"""Issue 6, items 5 and 8, in a real browser (Debian's chromium driven by Playwright against the
live server, like tests/test_browser.py; fails without chromium).

The patient's "Who saw my records" page verifies every entry's inclusion proof and the signed
checkpoint in the browser (static/ledger-verify.js, WebCrypto only); a proof altered on the way
(the fetch intercepted, one byte flipped) makes that row fail and only that row.  The audit
administrator's ledger page runs a verification.

Screenshots: docs/screenshots/portal-history-proofs.png and docs/screenshots/ledger-status.png."""

from __future__ import annotations

import base64
import json
import re
import uuid

import httpx
import pytest
from grantkit import actor, build, ctx
from test_browser import DESKTOP, PHONE, chromium, shot, sign_in  # noqa: F401  (chromium: the fixture)
from test_patient_accounts import last_code

from healthlink.accounts import add_user
from healthlink.runtime import Platform

pytestmark = pytest.mark.browser

PASSWORD = "ledger-browser-password-1"
VERDICT = re.compile(r"^(\d+) of (\d+) entries verified against checkpoint of size (\d+) signed by (\S+)\.")


def portal_cookie(base: str, platform: Platform, phone: str) -> str:
    """Sign the patient in to the portal (the API the portal's login form uses); the session cookie."""
    with httpx.Client(base_url=base) as c:
        started = c.post("/api/patient/login/start", json={"phone": phone})
        assert started.status_code == 202, started.text
        done = c.post("/api/patient/login/verify", json={"challenge_id": started.json()["challenge_id"],
                                                         "code": last_code(platform, phone)})
        assert done.status_code == 200, done.text
        return c.cookies["hl_patient"]


def flip_one_proof(body: dict) -> int:
    """Flip one byte of the first entry's inclusion proof (its leaf data when the proof is empty);
    returns that entry's audit sequence number."""
    entry = next(e for e in body["history"] if e.get("ledger"))
    led = entry["ledger"]
    if led["inclusion_proof"]:
        raw = bytearray(base64.b64decode(led["inclusion_proof"][0]))
        raw[7] ^= 0x01
        led["inclusion_proof"][0] = base64.b64encode(bytes(raw)).decode()
    else:
        raw = bytearray(bytes.fromhex(led["leaf_data"]))
        raw[-1] ^= 0x01
        led["leaf_data"] = raw.hex()
    return entry["seq"]


def test_patient_verifies_every_access_in_the_browser_and_a_flipped_proof_fails(
        live_server, platform: Platform, make_institution, chromium):  # noqa: F811
    base = live_server
    a, b = make_institution(), make_institution()
    doctor = actor("doctor", a, f"dr-{uuid.uuid4().hex[:8]}")
    w = build(platform, a, b, doctor_a=doctor)
    repo = platform.repository(ctx(doctor))
    repo.read("Patient", w.patient_a)
    repo.read("Observation", w.obs_a)
    platform.ledger.integrate()

    phone = chromium.new_context(viewport=PHONE, locale="en-US", is_mobile=True, has_touch=True)
    phone.add_cookies([{"name": "hl_lang", "value": "en", "url": base},
                       {"name": "hl_patient", "value": portal_cookie(base, platform, w.phone), "url": base}])
    page = phone.new_page()
    try:
        page.goto(f"{base}/portal/history")
        verdict = page.locator("#ledger-verdict[data-ok]")
        verdict.wait_for()
        rows = page.locator("table#access-history tr.access")
        m = rows.count()
        assert m > 0 and rows.filter(has_text=doctor.subject).count() >= 2
        assert page.locator("td.proof[data-verified=true]").count() == m
        assert verdict.get_attribute("data-ok") == "true"
        got = VERDICT.match(verdict.inner_text())
        assert got, verdict.inner_text()
        assert (int(got[1]), int(got[2])) == (m, m) and got[4] == platform.settings.ledger_origin
        assert int(got[3]) > 0
        shot(page, "portal-history-proofs", full_page=False)

        # the same page with one proof altered on the way: that row fails, the others still verify
        flipped: list[int] = []

        def tamper(route) -> None:
            resp = route.fetch()
            body = resp.json()
            flipped.append(flip_one_proof(body))
            route.fulfill(response=resp, body=json.dumps(body), content_type="application/json")

        page.route("**/api/patient/history*", tamper)
        page.reload()
        page.locator("#ledger-verdict[data-ok]").wait_for()
        assert flipped
        bad = page.locator(f"tr.access[data-seq='{flipped[0]}'] td.proof")
        assert bad.get_attribute("data-verified") == "false"
        assert page.locator("td.proof[data-verified=true]").count() == m - 1
        assert page.locator("#ledger-verdict").get_attribute("data-ok") == "false"
        assert VERDICT.match(page.locator("#ledger-verdict").inner_text())[1] == str(m - 1)
    finally:
        phone.close()


def test_audit_admin_sees_the_ledger_status_and_verifies_it_now(live_server, platform: Platform,
                                                               make_institution, chromium):  # noqa: F811
    base = live_server
    username = f"auditor-{uuid.uuid4().hex[:8]}"
    add_user(platform.db, username=username, password=PASSWORD, display_name=username, roles=["audit_admin"],
             institution_id=make_institution(), practitioner_id=f"prac-{uuid.uuid4().hex[:8]}")
    platform.ledger.integrate()
    platform.ledger.checkpoint()
    desk = chromium.new_context(viewport=DESKTOP, locale="en-US")
    desk.add_cookies([{"name": "hl_lang", "value": "en", "url": base}])
    page = desk.new_page()
    try:
        sign_in(page, base, username, password=PASSWORD, next_path="/ledger")
        assert int(page.locator("#ledger-size").inner_text()) > 0
        assert page.locator("#latest-checkpoint pre.checkpoint").inner_text().startswith(
            platform.settings.ledger_origin)
        page.click("form#verify-now button")
        page.locator("#verify-result").wait_for()
        # the page shows the run just stored (whether it passes depends on what the session's other
        # tests left in the shared database, e.g. checkpoints a CLI run signed with another key)
        last = platform.ledger_status()["last_verification"]
        assert page.locator("#verify-result").get_attribute("data-ok") == ("true" if last["ok"] else "false")
        assert page.locator("#verification-result").get_attribute("data-ok") == ("true" if last["ok"] else "false")
        assert last["message"] in page.locator("#last-verification").inner_text()
        shot(page, "ledger-status")
        page.click("nav a[href='/audit']")
        page.wait_for_url(f"{base}/audit")
        assert page.locator("table#audit-results tr.audit-event").count() > 0
    finally:
        desk.close()


def test_the_browser_checker_gives_every_proof_vector_its_verdict_and_checks_note_signatures(
        live_server, chromium):  # noqa: F811
    """ledger-verify.js itself, in chromium: the transparency-dev inclusion vectors (valid and
    tampered, as tests/test_merkle.py runs them through merkle.py), and signed notes from
    healthlink.ledger.checkpoint with a vkey whose base64 contains '+'."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from test_merkle import vector_files

    from healthlink.ledger.checkpoint import Signer, sign_note

    vectors = [json.loads(p.read_text()) for p in vector_files("inclusion")]
    signer = next(s for s in (Signer("log.example/test", Ed25519PrivateKey.generate()) for _ in range(500))
                  if "+" in s.vkey.split("+", 2)[2])
    root = base64.b64encode(bytes(range(32))).decode()
    note = sign_note(f"log.example/test\n5\n{root}\n", signer)
    forged = note.replace("\n5\n", "\n6\n")
    page = chromium.new_page()
    try:
        page.goto(f"{live_server}/healthz")
        page.add_script_tag(url=f"{live_server}/static/ledger-verify.js")
        verdicts = page.evaluate("""async (vs) => {
            const L = window.HealthLinkLedger, out = [];
            for (const v of vs) {
              try {
                out.push(await L.verifyInclusion(L.b64ToBytes(v.leafHash), v.leafIdx, v.treeSize,
                                                 (v.proof || []).map(L.b64ToBytes), L.b64ToBytes(v.root)));
              } catch (e) { out.push(false); }
            }
            return out;
        }""", vectors)
        assert len(verdicts) == len(vectors) > 0
        wrong = [v["desc"] for v, ok in zip(vectors, verdicts, strict=True) if ok is v["wantErr"]]
        assert not wrong, wrong
        sig = page.evaluate("""async ([note, forged, vkey]) => {
            const L = window.HealthLinkLedger;
            return [await L.verifySignature(L.parseNote(note), vkey),
                    await L.verifySignature(L.parseNote(forged), vkey)];
        }""", [note, forged, signer.vkey])
        assert sig == [True, False]
    finally:
        page.close()
