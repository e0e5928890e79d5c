"""The electronic health code end to end, through the HTTP app on the real database (issue 4,
parts 6 and 7): a Patient's code at its institution, the scan at another institution's desk
(a new local Patient linked to the same Person, once), refused codes, the access rules and the
audit records, the code page (zh-CN and English, htmx rotation) and the desk's scan form."""

from __future__ import annotations

import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from conftest import PASSWORD
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import select

from healthlink.access import Actor, RequestContext, parse_scopes
from healthlink.accounts import add_user
from healthlink.db import tables as t
from healthlink.demogen.ids import check_char
from healthlink.errors import NotFound
from healthlink.fhir.identifiers import RESIDENT_ID_SYSTEM
from healthlink.healthcode import KeyRing, issue_code
from healthlink.web.healthcode_pages import refresh_seconds

pytestmark = pytest.mark.usefixtures("platform")
FHIR = "application/fhir+json"


def rid(seed: str) -> str:
    n = uuid.uuid5(uuid.NAMESPACE_OID, seed).int
    body = f"632701{1950 + n % 50}{1 + (n >> 8) % 12:02d}{1 + (n >> 12) % 28:02d}{(n >> 20) % 1000:03d}"
    return body + check_char(body)


def registered(client: TestClient, who, name: str | None = None) -> tuple[str, str]:  # noqa: ANN001
    """A Patient of ``who``'s institution with a valid resident ID: (Patient id, resident ID)."""
    ident = rid(str(uuid.uuid4()))
    body = {"resourceType": "Patient", "name": [{"text": name or f"卓玛{uuid.uuid4().hex[:6]}"}],
            "gender": "female", "birthDate": f"{ident[6:10]}-{ident[10:12]}-{ident[12:14]}",
            "identifier": [{"system": RESIDENT_ID_SYSTEM, "value": ident}]}
    r = client.post("/fhir/Patient", json=body, headers={**who.headers, "content-type": FHIR})
    assert r.status_code == 201, r.text
    return r.json()["id"], ident


def person_of(platform, patient_id: str) -> str | None:  # noqa: ANN001
    with platform.db.read() as conn:
        return platform.identity.person_of(conn, patient_id)


def scan(client: TestClient, who, code: str):  # noqa: ANN001, ANN201
    return client.post("/api/health-code/scan", json={"code": code}, headers=who.headers)


def code_of(client: TestClient, who, patient_id: str) -> str:  # noqa: ANN001
    r = client.get(f"/api/health-code/patient/{patient_id}", headers=who.headers)
    assert r.status_code == 200, r.text
    return r.json()["text"]


def events(client: TestClient, auditor, username: str, subtype: str) -> list[dict]:  # noqa: ANN001
    r = client.get("/fhir/AuditEvent", params={"subtype": subtype, "_count": "500"}, headers=auditor.headers)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", []) if username in json.dumps(e["resource"])]


def test_a_scan_at_another_institution_creates_one_linked_local_patient(client, platform, staff, auditor):
    clerk_a, clerk_b = staff("registration_clerk"), staff("registration_clerk")
    pa, ident = registered(client, clerk_a, "次仁卓玛")
    person = person_of(platform, pa)

    r = client.get(f"/api/health-code/patient/{pa}", headers=clerk_a.headers)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["patient"] == pa and got["person"] == person and got["text"].startswith("HL1.")
    assert got["svg"].startswith("<svg") and r.headers["cache-control"] == "no-store"
    expires = datetime.fromisoformat(got["expiresAt"])
    assert timedelta(0) < expires - datetime.now(UTC) <= timedelta(seconds=platform.health_codes.ttl_seconds)

    r = scan(client, clerk_b, "\r\n" + got["text"] + "\r\n")  # scanners add line ends
    assert r.status_code == 200, r.text
    first = r.json()
    pb = first["patient"]
    assert first == {"patient": pb, "person": person, "created": True} and pb != pa
    # idempotent: the same code again, and a fresh code, give the same Patient
    for code in (got["text"], code_of(client, clerk_a, pa)):
        r = scan(client, clerk_b, code)
        assert r.status_code == 200 and r.json() == {"patient": pb, "person": person, "created": False}
    # the scanning institution's own clerk sees the new record; it carries the Person's demographics
    new = client.get(f"/fhir/Patient/{pb}", headers=clerk_b.headers).json()
    assert new["managingOrganization"] == {"reference": f"Organization/{clerk_b.institution}"}
    assert new["name"] == [{"text": "次仁卓玛"}] and new["gender"] == "female"
    assert new["birthDate"] == f"{ident[6:10]}-{ident[10:12]}-{ident[12:14]}"
    assert {"use": "official", "system": RESIDENT_ID_SYSTEM, "value": ident} in new["identifier"]
    assert client.get(f"/fhir/Patient/{pb}", headers=clerk_a.headers).status_code == 404

    reviewer = staff("empi_reviewer")
    r = client.get(f"/fhir/Person/{person}", headers=reviewer.headers)
    links = {lk["target"]["reference"]: lk["assurance"] for lk in r.json()["link"]}
    assert links == {f"Patient/{pa}": "level4", f"Patient/{pb}": "level4"}
    with platform.db.read() as conn:
        row = conn.execute(select(t.person_link.c.method, t.person_link.c.institution_id)
                           .where(t.person_link.c.patient_id == pb)).one()
    assert tuple(row) == ("manual", clerk_b.institution)

    scans = events(client, auditor, clerk_b.username, "health-code-scan")
    assert len(scans) == 3 and all(e["outcome"] == "0" for e in scans)
    descs = sorted(e["outcomeDesc"] for e in scans)
    assert sum("created Patient/" + pb in d for d in descs) == 1 and sum("found Patient/" + pb in d for d in descs) == 2
    assert all("nonce" in d and got["text"] not in d for d in descs)  # the credential, never the code
    for e in scans:
        refs = {x["what"]["reference"] for x in e["entity"]}
        assert {f"Patient/{pb}", f"Person/{person}"} <= refs
    issued = events(client, auditor, clerk_a.username, "health-code-issue")
    assert len(issued) == 2 and all(f"Patient/{pa}" in json.dumps(e) for e in issued)


def test_expired_altered_foreign_and_unknown_codes_are_refused_and_audited(client, platform, staff, auditor):
    clerk_a, clerk_b = staff("registration_clerk"), staff("registration_clerk")
    pa, _ = registered(client, clerk_a)
    person = person_of(platform, pa)
    codes = platform.health_codes
    old = datetime.now(UTC) - timedelta(seconds=codes.ttl_seconds + 120)
    expired = codes.issue(person, now=old).text
    good = codes.issue(person).text
    body, sig = good[4:].split(".")
    altered = "HL1." + body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + sig
    foreign = issue_code(KeyRing.of(Ed25519PrivateKey.generate()), person, ttl_seconds=300)
    unknown = codes.issue("no-such-person-" + uuid.uuid4().hex[:8]).text
    cases = [(expired, 410, "expired"), (altered, 403, "signature"), (foreign, 403, "unknown key"),
             ("HL1.not-a-code", 400, "health code"), ("", 400, "nothing presented"),
             ("HL2.abc.def", 400, "version"), (unknown, 404, "not known")]
    for code, status, words in cases:
        r = scan(client, clerk_b, code)
        assert r.status_code == status, (code, r.text)
        assert r.headers["content-type"] == "application/problem+json" and words in r.json()["detail"]
    refused = events(client, auditor, clerk_b.username, "health-code-scan")
    assert len(refused) == len(cases) and all(e["outcome"] == "4" for e in refused)
    assert sorted(e["outcomeDesc"].split()[0] for e in refused) == sorted(str(s) for _, s, _ in cases)
    # nothing was created at B
    with platform.db.read() as conn:
        assert platform.identity.patients_of(conn, person) == [pa]


def test_only_staff_of_the_patients_institution_get_its_code_and_only_registrars_scan(client, platform, staff):
    clerk_a = staff("registration_clerk")
    pa, _ = registered(client, clerk_a)
    nurse_a = staff("nurse", institution=clerk_a.institution)
    assert client.get(f"/api/health-code/patient/{pa}", headers=nurse_a.headers).status_code == 200
    doctor_b = staff("doctor")
    r = client.get(f"/api/health-code/patient/{pa}", headers=doctor_b.headers)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert client.get("/api/health-code/patient/nope", headers=clerk_a.headers).status_code == 404
    reviewer = staff("empi_reviewer")  # reads Patients region-wide, but is no one's institution
    assert client.get(f"/api/health-code/patient/{pa}", headers=reviewer.headers).status_code == 404
    leader = staff("institution_manager", institution=clerk_a.institution)
    assert client.get(f"/api/health-code/patient/{pa}", headers=leader.headers).status_code == 403
    assert client.get(f"/api/health-code/patient/{pa}").status_code == 401

    code = code_of(client, clerk_a, pa)
    nurse_b = staff("nurse")  # may not register patients
    assert scan(client, nurse_b, code).status_code == 403
    doctor_b_scan = scan(client, doctor_b, code)  # a doctor may
    assert doctor_b_scan.status_code == 200 and doctor_b_scan.json()["created"] is True
    # the scanning actor's own institution only, even for a direct call
    ctx = RequestContext(actor=Actor("user", "t", "t", doctor_b.institution, frozenset({"doctor"}),
                                     parse_scopes("user/*.cruds")))
    with pytest.raises(Exception, match="own institution"):
        platform.local_patients.local_patient(ctx, person_of(platform, pa), institution_id=clerk_a.institution)


def test_concurrent_scans_give_one_patient(client, platform, staff):
    clerk_a = staff("registration_clerk")
    pa, _ = registered(client, clerk_a)
    person = person_of(platform, pa)
    org_b = staff("registration_clerk").institution
    ctx = RequestContext(actor=Actor("user", "clerk-b", "clerk-b", org_b, frozenset({"registration_clerk"}),
                                     parse_scopes("user/*.cruds")))
    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(lambda _: platform.local_patients.local_patient(ctx, person, institution_id=org_b),
                              range(6)))
    assert len(set(found)) == 1
    with platform.db.read() as conn:
        assert sorted(platform.identity.patients_of(conn, person)) == sorted([pa, found[0]])
    with pytest.raises(NotFound):
        platform.local_patients.local_patient(ctx, "no-such-person", institution_id=org_b)


def test_a_code_of_a_person_merged_away_resolves_to_the_surviving_person(client, platform, staff):
    clerk_x, clerk_y, clerk_b = staff("registration_clerk"), staff("registration_clerk"), staff("registration_clerk")
    px, _ = registered(client, clerk_x)
    py, _ = registered(client, clerk_y)
    x, y = person_of(platform, px), person_of(platform, py)
    code = platform.health_codes.issue(y).text  # shown before the merge
    reviewer = staff("empi_reviewer")
    r = client.post("/api/empi/merge", json={"person": x, "other": y}, headers=reviewer.headers)
    assert r.status_code == 200, r.text
    r = scan(client, clerk_b, code)
    assert r.status_code == 200 and r.json()["person"] == x and r.json()["created"] is True
    assert person_of(platform, r.json()["patient"]) == x


# ------------------------------------------------------------------ pages
def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "the page has no CSRF field"
    return m.group(1)


def page_user(app, platform, role: str, institution: str) -> TestClient:  # noqa: ANN001
    username = f"web-{role}-{uuid.uuid4().hex[:8]}"
    add_user(platform.db, username=username, password=PASSWORD, display_name=username, roles=[role],
             institution_id=institution, practitioner_id=f"prac-{uuid.uuid4().hex[:10]}")
    c = TestClient(app, base_url="http://testserver")
    r = c.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": csrf_of(c.get("/login").text),
                               "next": "/"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return c


def test_the_code_page_shows_a_rotating_qr_in_both_languages(app, client, platform, staff):
    clerk_a = staff("registration_clerk")
    pa, _ = registered(client, clerk_a, "扎西卓玛")
    c = page_user(app, platform, "doctor", clerk_a.institution)
    summary = c.get(f"/patients/{pa}")
    assert f'href="/patients/{pa}/health-code"' in summary.text and "健康码" in summary.text
    refresh = refresh_seconds(platform.health_codes.ttl_seconds)
    assert 0 < refresh < platform.health_codes.ttl_seconds
    texts = []
    for lang, words in (("zh-CN", "有效期至"), ("en", "Valid until")):
        c.cookies.set("hl_lang", lang)
        r = c.get(f"/patients/{pa}/health-code")
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        assert "<svg" in r.text and words in r.text and "扎西卓玛" in r.text
        assert f'hx-get="/patients/{pa}/health-code"' in r.text and f'hx-trigger="every {refresh}s"' in r.text
        assert 'hx-swap="outerHTML"' in r.text and "<time datetime=" in r.text
        texts.append(r.text)
    assert "Patients cannot sign in yet" in texts[1] and "患者暂时还不能登录" in texts[0]
    # htmx asks for the code part only; each answer is a new code
    part = c.get(f"/patients/{pa}/health-code", headers={"HX-Request": "true"})
    assert part.text.lstrip().startswith('<section id="health-code"') and "<html" not in part.text
    svgs = [re.search(r"<svg.*?</svg>", x, re.S).group(0) for x in (*texts, part.text)]
    assert len(set(svgs)) == 3
    # another institution's staff get the 404 page
    other = page_user(app, platform, "doctor", staff("doctor").institution)
    r = other.get(f"/patients/{pa}/health-code")
    assert r.status_code == 404 and "<svg" not in r.text


def test_the_desk_scan_form_opens_the_local_patient_and_needs_the_csrf_token(app, client, platform, staff):
    clerk_a = staff("registration_clerk")
    pa, _ = registered(client, clerk_a)
    person = person_of(platform, pa)
    org_b = staff("registration_clerk").institution
    desk = page_user(app, platform, "registration_clerk", org_b)
    home = desk.get("/")
    assert 'href="/health-code/scan"' in home.text and "扫描健康码" in home.text
    form = desk.get("/health-code/scan")
    assert form.status_code == 200 and 'name="code"' in form.text
    code = code_of(client, clerk_a, pa)

    for data in ({"code": code}, {"code": code, "csrf_token": "forged"}):
        r = desk.post("/health-code/scan", data=data, follow_redirects=False)
        assert r.status_code == 403
    with platform.db.read() as conn:
        assert platform.identity.patients_of(conn, person) == [pa]  # nothing created

    token = csrf_of(form.text)
    r = desk.post("/health-code/scan", data={"code": code, "csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    pb = r.headers["location"].removeprefix("/patients/")
    with platform.db.read() as conn:
        assert sorted(platform.identity.patients_of(conn, person)) == sorted([pa, pb])
    r = desk.post("/health-code/scan", data={"code": code, "csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/patients/{pb}"
    assert desk.get(r.headers["location"]).status_code == 200

    desk.cookies.set("hl_lang", "en")
    expired = platform.health_codes.issue(person, now=datetime.now(UTC) - timedelta(hours=1)).text
    r = desk.post("/health-code/scan", data={"code": expired, "csrf_token": token})
    assert r.status_code == 410 and "The code was not accepted." in r.text and "expired" in r.text
    assert 'name="code"' in r.text  # the form again, ready for the next scan

    nurse = page_user(app, platform, "nurse", org_b)
    assert 'href="/health-code/scan"' not in nurse.get("/").text
    assert "cannot scan health codes" not in nurse.get("/health-code/scan").text  # zh-CN by default
    assert "不能扫描健康码" in nurse.get("/health-code/scan").text
