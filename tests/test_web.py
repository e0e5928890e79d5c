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


# ------------------------------------------------------------------ the upload form and report
def post_upload(c: TestClient, files: list[tuple[str, bytes]], **data: str):  # noqa: ANN201
    return c.post("/uploads", files=[("file", (name, content, "application/octet-stream")) for name, content in files],
                  data=data, follow_redirects=False)


def upload(c: TestClient, files: list[tuple[str, bytes]]) -> tuple[str, str]:
    """Send files with the page's form; wait for the report page to say the upload ended.
    Returns (report url, report html)."""
    import time

    r = post_upload(c, files, csrf_token=csrf_of(c.get("/uploads").text))
    assert r.status_code == 303, r.text
    url = r.headers["location"]
    assert re.fullmatch(r"/uploads/[0-9a-f-]{36}", url), url
    deadline = time.time() + 60
    while True:
        page = c.get(url)
        assert page.status_code == 200, page.text
        if 'data-status="running"' not in page.text:
            return url, page.text
        assert 'hx-trigger="every 2s"' in page.text  # htmx polls while it runs
        assert time.time() < deadline, "the upload did not end"
        time.sleep(0.05)


def ndjson(*records: dict) -> bytes:
    import json

    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def counts_of(html: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r'<dd data-count="(\w+)">(\d+)</dd>', html)}


def test_upload_form_sends_several_files_and_the_report_shows_their_counts(browser, web_user, platform):
    import gzip
    import json

    c = sign_in(browser(), web_user("doctor")[0])
    form = c.get("/uploads").text
    assert 'enctype="multipart/form-data"' in form and 'type="file" name="file" multiple' in form
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:obs-1", "resource": observation("u1")}]}
    url, html = upload(c, [
        ("Patient.ndjson", ndjson(patient(id="u1", name=[{"text": "央金"}]), patient(id="u2"))),
        ("labs.json.gz", gzip.compress(json.dumps(bundle).encode()))])
    assert 'data-status="done"' in html and "已完成" in html
    assert counts_of(html) == {"read": 3, "accepted": 3, "updated": 0, "unchanged": 0, "quarantined": 0}
    rows = re.findall(r'<td data-label="资源类型">(\w+)</td><td data-label="已读取">(\d+)</td>\s*'
                      r'<td data-label="已接收">(\d+)</td>', html)
    assert rows == [("Observation", "1", "1"), ("Patient", "2", "2")], rows
    assert "本次上传没有被隔离的记录" in html
    # the files are kept in a folder of the upload under the data directory
    folder = platform.settings.data_dir / "uploads" / url.rsplit("/", 1)[1]
    assert sorted(p.name for p in folder.iterdir()) == ["0000-Patient.ndjson", "0001-labs.json.gz"]
    # the same files again: nothing new, every record an identical resend
    _, again = upload(c, [("Patient.ndjson", ndjson(patient(id="u1", name=[{"text": "央金"}]), patient(id="u2")))])
    assert counts_of(again) == {"read": 2, "accepted": 0, "updated": 0, "unchanged": 2, "quarantined": 0}
    # the list links each upload to its report
    assert f'href="{url}"' in c.get("/uploads").text
    # and the records are there for the doctor
    assert "央金" in c.get("/patients", params={"name": "央金"}).text


def test_upload_report_lists_quarantined_records_with_reason_and_line_paged_and_audited(
        browser, web_user, client, auditor):
    username, _ = web_user("doctor")
    c = sign_in(browser(), username)
    bad = [patient(id=f"future-{n}", birthDate="2999-01-01") for n in range(54)]
    records = [patient(id="ok-1"), patient(id="future-x", birthDate="2999-01-01"), *bad,
               {"resourceType": "Patient", "id": "broken", "gender": 5}]
    url, html = upload(c, [("Patient.ndjson", ndjson(*records))])
    assert counts_of(html) == {"read": 57, "accepted": 1, "updated": 0, "unchanged": 0, "quarantined": 56}
    # by reason, with its explanation in the page language
    assert re.search(r"日期晚于当前时间 <code>future-date</code></td><td data-label=\"记录数\">55</td>", html)
    assert "<code>structure</code></td><td data-label=\"记录数\">1</td>" in html
    # the list: file, line, type and source id, reason, element path, message; 50 a page
    rows = re.findall(r"<tr><td data-label=\"文件\">(.*?)</td><td data-label=\"行号/条目\">(\d+)</td>", html)
    assert len(rows) == 50 and rows[0] == ("0000-Patient.ndjson", "2"), rows[:2]
    first = html[html.index('<table class="list quarantine">'):]
    first = first[:first.index("</tr>", first.index("<tbody>"))]
    for text in ("Patient <code>future-x</code>", "日期晚于当前时间 <code>future-date</code>",
                 "<code>Patient.birthDate</code>", "Patient.birthDate 2999-01-01 is in the future"):
        assert text in first, text
    assert "第 1 页，共 2 页" in html and f'href="{url}?page=2"' in html
    page2 = c.get(url, params={"page": "2"}).text
    lines = [int(n) for _, n in re.findall(r"<tr><td data-label=\"文件\">(.*?)</td><td data-label=\"行号/条目\">(\d+)</td>", page2)]
    assert lines == [52, 53, 54, 55, 56, 57], lines
    assert "<code>structure</code>" in page2 and "第 2 页，共 2 页" in page2
    # English on a click
    en = c.post("/lang", data={"lang": "en", "csrf_token": csrf_of(html), "next": url})
    assert "Date in the future" in en.text and "Quarantined records" in en.text and "Line / entry" in en.text
    # reading the quarantine list is a read of patient data: one AuditEvent per page view
    prac = c.get("/api/me").json()["practitioner"]
    r = client.get("/fhir/AuditEvent", params={"agent": f"Practitioner/{prac}", "_count": "1000"},
                   headers=auditor.headers)
    evs = [e["resource"] for e in r.json().get("entry", [])]
    reads = [e for e in evs if any(st["code"] == "quarantine-read" for st in e.get("subtype", []))]
    upload_id = url.rsplit("/", 1)[1]
    queries = [base64.b64decode(x["query"]).decode() for e in reads for x in e.get("entity", []) if "query" in x]
    assert f"ingest_quarantine?upload={upload_id}&page=2&_count=50" in queries, queries
    assert all(e["outcome"] == "0" for e in reads) and len(reads) >= 3  # the poll's end, page 2, English


def test_an_upload_report_is_only_for_its_institution_and_system_admins(browser, web_user):
    c = sign_in(browser(), web_user("doctor")[0])
    url, _ = upload(c, [("Patient.ndjson", ndjson(patient(id="s1"), patient(id="s2", birthDate="2999-01-01")))])
    other = sign_in(browser(), web_user("doctor")[0])
    r = other.get(url)
    assert r.status_code == 404 and "未找到" in r.text
    assert "future-date" not in r.text and "Traceback" not in r.text
    assert other.get(url, headers={"HX-Request": "true"}).status_code == 404
    admin = sign_in(browser(), web_user("system_admin")[0])
    r = admin.get(url)
    assert r.status_code == 200 and "future-date" in r.text
    assert "<form method=\"post\" action=\"/uploads\"" not in admin.get("/uploads").text  # no institution's files
    assert c.get("/uploads/not-an-upload").status_code == 404


def test_upload_without_the_csrf_token_is_refused_and_records_nothing(browser, web_user):
    c = sign_in(browser(), web_user("doctor")[0])
    c.get("/uploads")  # sets the CSRF cookie
    for data in ({}, {"csrf_token": "forged"}):
        r = post_upload(c, [("Patient.ndjson", ndjson(patient(id="c1")))], **data)
        assert r.status_code == 403 and "表单已过期" in r.text
    assert "本机构尚未上传任何文件" in c.get("/uploads").text


def test_a_file_that_is_not_fhir_json_gets_a_clear_error_not_a_500(browser, web_user, platform):
    username, org = web_user("doctor")
    c = sign_in(browser(), username)
    token = csrf_of(c.get("/uploads").text)
    for files, says in (
            ([("garbage.ndjson", b"\x89PNG\r\n\x1a\n\x00\x00binary junk\xff\xfe")], "garbage.ndjson' holds no FHIR JSON"),
            ([("notes.txt", b"hello")], "the name must end in one of .ndjson"),
            ([("fake.ndjson.gz", b"not gzip at all")], "fake.ndjson.gz' cannot be read as gzip"),
            ([("empty.json", b"")], "empty.json' holds no FHIR JSON"),
            ([("Patient.ndjson", ndjson(patient(id="g1"))), ("junk.json", b"<html>no</html>")], "junk.json"),
            ([], "请选择一个或多个要上传的文件")):
        r = post_upload(c, files, csrf_token=token)
        assert r.status_code == 400, (files, r.status_code, r.text[-500:])
        assert "文件未上传" in r.text and says in r.text.replace("&#39;", "'"), (says, r.text[-800:])
        assert "Traceback" not in r.text and 'type="file"' in r.text  # the form again
    # none of them was recorded as an upload, and no file of theirs is kept
    assert "本机构尚未上传任何文件" in c.get("/uploads").text
    assert not list((platform.settings.data_dir / "uploads").glob(".incoming-*"))
    # a role may only send the types it may write: a registration clerk's Observations are refused
    clerk = sign_in(browser(), web_user("registration_clerk", institution=org)[0])
    r = post_upload(clerk, [("Observation.ndjson", ndjson(observation("g1")))],
                    csrf_token=csrf_of(clerk.get("/uploads").text))
    assert r.status_code == 403 and "Observation" in r.text and "文件未上传" in r.text


def test_a_running_upload_report_polls_with_htmx(browser, web_user, platform):
    from healthlink.access import Actor
    from healthlink.ingest import register_upload

    username, org = web_user("doctor")
    c = sign_in(browser(), username)
    actor = Actor("user", username, username, org, frozenset({"doctor"}), ())
    upload_id = register_upload(platform.services, [Path("Patient.ndjson")], institution=org, actor=actor)
    html = c.get(f"/uploads/{upload_id}").text
    assert 'hx-get="/uploads/' + upload_id + '"' in html and 'hx-trigger="every 2s"' in html
    assert "进行中" in html and 'class="list quarantine"' not in html
    part = c.get(f"/uploads/{upload_id}", headers={"HX-Request": "true"})
    assert part.status_code == 200 and "<html" not in part.text and 'id="report"' in part.text
    other = sign_in(browser(), web_user("doctor")[0])  # another institution: not even its status
    assert other.get(f"/uploads/{upload_id}").status_code == 404
