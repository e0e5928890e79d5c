"""The pages through the real app in-process: sign-in by form with a CSRF token, navigation
by role, patient pages limited to the actor's institution and audited, the language switch,
and translations complete for every string the pages show."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import PASSWORD, observation, patient
from fastapi.testclient import TestClient

from healthlink.accounts import add_user
from healthlink.runtime import Platform

WEB = Path(__file__).resolve().parents[1] / "src" / "healthlink" / "web"


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "the page has no CSRF field"
    return m.group(1)


@pytest.fixture
def browser(app) -> Callable[[], TestClient]:  # noqa: ANN001
    """A client of its own per page visitor, so its cookies stay out of the shared client."""
    def make() -> TestClient:
        return TestClient(app, base_url="http://testserver")
    return make


@pytest.fixture
def web_user(platform: Platform, make_institution):  # noqa: ANN001, ANN201
    def make(role: str = "doctor", institution: str | None = None) -> tuple[str, str]:
        org = institution or make_institution()
        username = f"web-{role}-{uuid.uuid4().hex[:8]}"
        add_user(platform.db, username=username, password=PASSWORD, display_name=username,
                 roles=[role], institution_id=org, practitioner_id=f"prac-{uuid.uuid4().hex[:10]}")
        return username, org
    return make


def sign_in(c: TestClient, username: str) -> TestClient:
    page = c.get("/login")
    r = c.post("/login", data={"username": username, "password": PASSWORD,
                               "csrf_token": csrf_of(page.text), "next": "/"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return c


def new_patient(c: TestClient, **extra: object) -> str:
    r = c.post("/fhir/Patient", json=patient(**extra), headers={"content-type": "application/fhir+json"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_login_form_sets_the_session_cookie_and_lands_on_home(browser, web_user):
    username, _ = web_user("doctor")
    c = browser()
    page = c.get("/login")
    assert page.status_code == 200 and 'lang="zh-CN"' in page.text
    r = c.post("/login", data={"username": username, "password": PASSWORD,
                               "csrf_token": csrf_of(page.text), "next": "/patients"},
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/patients"
    cookie = r.headers["set-cookie"]
    assert "hl_token=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    home = c.get("/")
    assert home.status_code == 200 and username in home.text


def test_wrong_password_shows_the_form_again_without_a_session(browser, web_user):
    username, _ = web_user("doctor")
    c = browser()
    page = c.get("/login")
    r = c.post("/login", data={"username": username, "password": "wrong-password",
                               "csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 401 and "用户名或密码错误" in r.text
    assert "hl_token" not in c.cookies


def test_form_posts_without_the_csrf_token_are_refused(browser, web_user):
    username, _ = web_user("doctor")
    c = browser()
    c.get("/login")  # sets the CSRF cookie
    for data in ({}, {"csrf_token": "forged"}):
        r = c.post("/login", data={"username": username, "password": PASSWORD, **data},
                   follow_redirects=False)
        assert r.status_code == 403 and "<html" in r.text
        assert "hl_token" not in c.cookies
    sign_in(c, username)
    assert c.post("/logout", data={"csrf_token": "forged"}).status_code == 403
    assert c.post("/lang", data={"lang": "en"}).status_code == 403


def test_a_page_without_a_session_redirects_to_login_with_the_way_back(browser):
    r = browser().get("/patients?name=x", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=%2Fpatients%3Fname%3Dx"
    # an htmx fragment request is told to navigate instead of swapping the login page in
    r = browser().get("/patients?name=x", headers={"HX-Request": "true"}, follow_redirects=False)
    assert r.headers["HX-Redirect"] == "/login?next=%2Fpatients%3Fname%3Dx"


def test_navigation_follows_the_role(browser, web_user):
    doctor, leader = browser(), browser()
    sign_in(doctor, web_user("doctor")[0])
    sign_in(leader, web_user("health_commission_leader")[0])
    d, lead = doctor.get("/").text, leader.get("/").text
    assert 'href="/patients"' in d and 'href="/uploads"' in d and 'href="/institutions"' in d
    assert 'href="/patients"' not in lead and 'href="/uploads"' not in lead
    assert 'href="/institutions"' in lead and "不涉及患者数据" in lead
    # the page itself refuses what the menu does not offer (the repository's 403)
    r = leader.get("/patients?name=Zhaxi")
    assert r.status_code == 403 and "无权访问" in r.text


def test_doctor_cannot_open_another_institutions_patient_summary(browser, web_user):
    mine, other = browser(), browser()
    sign_in(mine, web_user("doctor")[0])
    sign_in(other, web_user("doctor")[0])
    pid = new_patient(mine, name=[{"text": "次仁卓玛"}])
    assert mine.get(f"/patients/{pid}").status_code == 200
    r = other.get(f"/patients/{pid}")
    assert r.status_code == 404 and "未找到" in r.text and "次仁卓玛" not in r.text
    assert "Traceback" not in r.text
    found = other.get("/patients", params={"name": "次仁卓玛"})
    assert pid not in found.text


def test_patient_search_and_summary_show_the_record(browser, web_user):
    c = sign_in(browser(), web_user("doctor")[0])
    pid = new_patient(c, name=[{"text": "才仁多杰"}], identifier=[{"value": "632701199001010011"}],
                      birthDate="1990-01-01")
    assert c.post("/fhir/Observation", json=observation(pid),
                  headers={"content-type": "application/fhir+json"}).status_code == 201
    for params in ({"name": "才仁多杰"}, {"identifier": "632701199001010011"}, {"birthdate": "1990-01-01"}):
        r = c.get("/patients", params=params)
        assert f"/patients/{pid}" in r.text, params
    partial = c.get("/patients", params={"name": "才仁多杰"}, headers={"HX-Request": "true"})
    assert "<html" not in partial.text and f"/patients/{pid}" in partial.text
    summary = c.get(f"/patients/{pid}").text
    assert "才仁多杰" in summary and "Hemoglobin" in summary and "13.2 g/dL" in summary


def test_every_page_view_of_patient_data_leaves_an_audit_event(browser, web_user, client, auditor):
    username, _ = web_user("doctor")
    c = sign_in(browser(), username)
    pid = new_patient(c, name=[{"text": "泽仁拉姆"}])
    rid = uuid.uuid4().hex
    assert c.get(f"/patients/{pid}", headers={"X-Request-Id": rid}).status_code == 200
    prac = c.get("/api/me").json()["practitioner"]
    r = client.get("/fhir/AuditEvent", params={"agent": f"Practitioner/{prac}", "_count": "1000"},
                   headers=auditor.headers)
    evs = [e["resource"] for e in r.json().get("entry", [])]
    mine = [e for e in evs if any(x.get("valueString") == rid for x in e.get("extension", []))]
    subtypes = sorted(st["code"] for e in mine for st in e.get("subtype", []))
    # the Patient read and one search per section of the summary
    assert subtypes.count("read") == 1 and subtypes.count("search-type") == 4, subtypes
    queries = [base64.b64decode(x["query"]).decode() for e in mine for x in e.get("entity", []) if "query" in x]
    assert sorted(q.split("?")[0] for q in queries) == ["AllergyIntolerance", "Condition",
                                                        "MedicationRequest", "Observation"]
    assert all(f"patient=Patient/{pid}" in q for q in queries)


def test_language_switch_persists_in_a_cookie(browser, web_user):
    c = sign_in(browser(), web_user("doctor")[0])
    home = c.get("/")
    assert "查找患者" in home.text and 'lang="zh-CN"' in home.text
    r = c.post("/lang", data={"lang": "en", "csrf_token": csrf_of(home.text), "next": "/institutions"},
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/institutions"
    assert "hl_lang=en" in r.headers["set-cookie"]
    for path in ("/", "/patients", "/institutions"):
        page = c.get(path).text
        assert 'lang="en"' in page and "Sign out" in page, path
    assert "Find a patient" in c.get("/").text


def test_directory_shows_tiers_and_the_referral_hierarchy(browser, web_user, platform):
    from healthlink.demo import organization

    top, county = f"top-{uuid.uuid4().hex[:8]}", f"cty-{uuid.uuid4().hex[:8]}"
    repo = platform.system_repository("tests")
    with platform.db.write() as conn:
        repo.update_in(conn, "Organization", top, organization(top, "测试州医院", "prefecture", None), if_match=None)
        repo.update_in(conn, "Organization", county, organization(county, "测试县医院", "county", top), if_match=None)
    c = sign_in(browser(), web_user("nurse")[0])
    html = c.get("/institutions").text
    # the county hospital is listed inside its referral parent's branch
    branch = html[html.index(top):]
    assert "测试县医院" in branch[:branch.index("</li>\n</ul>\n</li>")] and "州级医院" in html


def test_upload_page_shows_its_state(browser, web_user):
    c = sign_in(browser(), web_user("doctor")[0])
    r = c.get("/uploads")
    assert r.status_code == 200 and "数据上传" in r.text


def test_errors_render_an_error_page_not_a_stack_trace(browser, web_user):
    c = sign_in(browser(), web_user("doctor")[0])
    r = c.get("/patients/does-not-exist")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "Traceback" not in r.text and "请求编号" in r.text


def test_vendored_assets_are_served_from_the_package():
    from healthlink.web.routes import STATIC

    js = (STATIC / "htmx.min.js").read_text()
    assert js.startswith("/*! htmx.org 2.0.11") and (STATIC / "htmx.LICENSE").is_file()
    for t in (WEB / "templates").glob("*.html"):
        assert "http://" not in t.read_text() and "https://" not in t.read_text(), t.name


def test_static_assets_are_served(client):
    assert client.get("/static/htmx.min.js").status_code == 200
    assert client.get("/static/app.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/..%2Fsession.py").status_code == 404


def test_every_page_string_has_a_chinese_translation():
    from babel.messages.extract import extract_from_dir
    from babel.messages.pofile import read_po

    from healthlink.web.i18n import catalog_path

    method_map = [("templates/**.html", "jinja2"), ("**.py", "python")]
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
    ids = {msg if isinstance(msg, str) else msg[0]
           for _, _, msg, _, _ in extract_from_dir(str(WEB), method_map=method_map, keywords=keywords)}
    assert len(ids) > 50
    with catalog_path("zh-CN").open("rb") as f:
        catalog = read_po(f)
    missing = sorted(i for i in ids if i not in catalog or not catalog[i].string)
    assert not missing, f"no zh_CN translation (see docs/web.md, 'Languages'): {missing}"


def test_sign_in_returns_only_to_pages_of_this_site(browser, web_user):
    username, _ = web_user("doctor")
    for target in ("//evil.example/x", "https://evil.example/", "javascript:alert(1)"):
        c = browser()
        page = c.get("/login")
        r = c.post("/login", data={"username": username, "password": PASSWORD,
                                   "csrf_token": csrf_of(page.text), "next": target},
                   follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/", target


def test_upload_rows_sum_per_type_counts_of_ingest_reports():
    from collections import Counter

    from healthlink.ingest import Report
    from healthlink.web.uploads import _row

    rep = Report("u-1", "org-1", accepted=Counter({"Patient": 3, "Observation": 7}),
                 quarantined=Counter({"Observation": 2}))
    row = _row(rep)
    assert (row["id"], row["accepted"], row["updated"], row["quarantined"]) == ("u-1", 10, 0, 2)


def test_registration_clerk_sees_demographics_but_not_clinical_sections(browser, web_user):
    doctor_name, org = web_user("doctor")
    doctor = sign_in(browser(), doctor_name)
    pid = new_patient(doctor, name=[{"text": "卓玛措"}])
    assert doctor.post("/fhir/Observation", json=observation(pid),
                       headers={"content-type": "application/fhir+json"}).status_code == 201
    clerk = sign_in(browser(), web_user("registration_clerk", institution=org)[0])
    r = clerk.get(f"/patients/{pid}")
    assert r.status_code == 200 and "卓玛措" in r.text
    assert "Hemoglobin" not in r.text and "您的角色不能查看病历的这一部分" in r.text


def test_upload_page_lists_the_institutions_ingest_reports(browser, web_user, platform, tmp_path):
    import json

    from healthlink.ingest import ingest_files

    username, org = web_user("doctor")
    f = tmp_path / "Patient.ndjson"
    good = {"resourceType": "Patient", "id": "p1", "name": [{"text": "扎西"}], "birthDate": "1990-01-01"}
    bad = {"resourceType": "Patient", "id": "p2", "birthDate": "2999-01-01"}
    f.write_text(json.dumps(good, ensure_ascii=False) + "\n" + json.dumps(bad) + "\n")
    ingest_files(platform.services, [f], institution=org)
    c = sign_in(browser(), username)
    html = c.get("/uploads").text
    assert "<table" in html and "已隔离" in html
    cells = re.findall(r'<td data-label="(已接收|已隔离)">(\d+)</td>', html)
    assert ("已接收", "1") in cells and ("已隔离", "1") in cells, cells
