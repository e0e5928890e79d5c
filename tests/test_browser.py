"""End to end in a real browser: Playwright (PyPI) drives Debian's chromium against the app
served by uvicorn (``live_server``), on the demo region.  Saves screenshots of the main
pages to docs/screenshots/ (the README shows some of them).

These tests run in ``make test``, which installs chromium and a CJK font first
(``make install-browser``); without chromium they fail, they do not skip."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from healthlink.demo import DEMO_PASSWORD
from healthlink.demogen.load import seed_demo
from healthlink.runtime import Platform

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
FIXTURE_UPLOAD: dict[str, str] = {}  # "id": the upload made by demo_server


@pytest.fixture(scope="module")
def demo_server(live_server: str, platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The live server with the demo region, a few patients of the demo hospital and one
    bulk upload (one record accepted, one quarantined for a birth date in the future)."""
    import json

    from healthlink.ingest import ingest_files

    seed_demo(platform)
    f = tmp_path_factory.mktemp("upload") / "Patient.ndjson"
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in (
        {"resourceType": "Patient", "id": "his-0001", "name": [{"text": "尼玛"}], "birthDate": "1992-03-04"},
        {"resourceType": "Patient", "id": "his-0002", "name": [{"text": "拉毛"}], "birthDate": "2999-01-01"})) + "\n")
    FIXTURE_UPLOAD["id"] = ingest_files(platform.services, [f], institution="yushu-peoples").upload_id
    tok = httpx.post(f"{live_server}/api/auth/login",
                     json={"username": "doctor", "password": DEMO_PASSWORD}).json()["access_token"]
    h = {"Authorization": f"Bearer {tok}", "content-type": "application/fhir+json"}

    def post(body: dict) -> str:
        r = httpx.post(f"{live_server}/fhir/{body['resourceType']}", json=body, headers=h)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    pid = post({"resourceType": "Patient", "name": [{"text": "次仁卓玛"}], "gender": "female",
                "birthDate": "1986-04-12",
                "identifier": [{"system": "urn:oid:1.2.156.112606.1.1.1", "value": "632701198604120027"}]})
    post({"resourceType": "Patient", "name": [{"text": "次仁多吉"}], "gender": "male", "birthDate": "1979-11-02"})
    ref = {"reference": f"Patient/{pid}"}
    for code, display, value, unit, when in (
            ("718-7", "血红蛋白 Hemoglobin", 11.2, "g/dL", "2026-10-08T09:30:00+08:00"),
            ("2345-7", "葡萄糖 Glucose", 7.9, "mmol/L", "2026-10-08T09:30:00+08:00"),
            ("4548-4", "糖化血红蛋白 HbA1c", 7.4, "%", "2026-09-12T10:00:00+08:00")):
        post({"resourceType": "Observation", "status": "final", "subject": ref, "effectiveDateTime": when,
              "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
              "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}})
    post({"resourceType": "Condition", "subject": ref, "onsetDateTime": "2021-03-01",
          "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                         "code": "active", "display": "Active"}]},
          "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11.9",
                               "display": "2型糖尿病 Type 2 diabetes mellitus"}]}})
    post({"resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": ref,
          "authoredOn": "2026-10-08",
          "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                    "code": "860975", "display": "二甲双胍 Metformin 500 mg"}]},
          "dosageInstruction": [{"text": "500 mg 口服 每日两次"}]})
    post({"resourceType": "AllergyIntolerance", "patient": ref, "criticality": "high",
          "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "7980",
                               "display": "青霉素 Penicillin"}]},
          "reaction": [{"manifestation": [{"text": "皮疹 Rash"}]}]})
    return live_server


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("chromium is not installed: run `make install-browser` (apt-get install chromium "
                    "fonts-noto-cjk); the browser tests do not skip")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--headless", "--no-sandbox", "--disable-gpu",
                                           "--disable-background-networking"])
        yield browser
        browser.close()


def shot(page, name: str, *, full_page: bool = True) -> None:  # noqa: ANN001
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


def sign_in(page, base: str, username: str = "doctor", *, password: str = DEMO_PASSWORD,  # noqa: ANN001
            next_path: str = "/") -> None:
    """Sign in on the login page and wait for the page it sends on to (``next_path``)."""
    page.goto(f"{base}/login" + (f"?next={next_path}" if next_path != "/" else ""))
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button.primary")
    page.wait_for_url(f"{base}{next_path}")


def test_doctor_signs_in_switches_language_finds_a_patient_and_opens_the_summary(demo_server, chromium):
    ctx = chromium.new_context(viewport=DESKTOP, locale="zh-CN")
    page = ctx.new_page()
    page.goto(f"{demo_server}/patients")
    assert page.url.startswith(f"{demo_server}/login")  # no session: to the login page
    assert page.locator("h1").inner_text() == "登录"
    shot(page, "login")
    page.fill("input[name=username]", "doctor")
    page.fill("input[name=password]", DEMO_PASSWORD)
    page.click("button.primary")
    page.wait_for_url(f"{demo_server}/patients")
    page.goto(f"{demo_server}/")
    assert "查找患者" in page.locator("main").inner_text()
    shot(page, "home")

    page.click("button[name=lang][value=en]")
    page.wait_for_load_state()
    assert page.locator("html").get_attribute("lang") == "en"
    assert "Find a patient" in page.locator("main").inner_text()
    page.click("button[name=lang][value=zh-CN]")
    page.wait_for_load_state()
    assert "查找患者" in page.locator("main").inner_text()

    page.click("nav >> text=患者")
    page.fill("input[name=name]", "次仁")
    page.click("form.search button")
    page.locator("#results table").wait_for()  # htmx swapped the results in
    # the fixture's two patients are found; other tests may add more 次仁 at this hospital
    names = page.locator("#results tbody tr td:first-child a").all_inner_texts()
    assert {"次仁卓玛", "次仁多吉"} <= set(names), names
    assert all("次仁" in n for n in names), names
    assert "name=" in page.url  # the search is in the address bar (hx-push-url)
    shot(page, "patient-search")

    page.click("#results >> text=次仁卓玛")
    page.wait_for_url(f"{demo_server}/patients/*")
    main = page.locator("main").inner_text()
    for text in ("次仁卓玛", "青霉素", "糖化血红蛋白", "2型糖尿病", "二甲双胍"):
        assert text in main, text
    shot(page, "patient-summary")
    ctx.close()


def test_institution_directory_in_english_and_on_a_phone(demo_server, chromium):
    ctx = chromium.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, locale="en")
    page = ctx.new_page()
    sign_in(page, demo_server, "nurse")
    page.click("button[name=lang][value=en]")
    page.wait_for_load_state()
    page.goto(f"{demo_server}/institutions")
    main = page.locator("main").inner_text()
    assert "Institution directory" in main and "Prefecture hospital" in main
    assert "称多县人民医院" in page.locator("li:has(> strong:text('玉树州人民医院')) > ul").inner_text()
    # nothing wider than the phone's screen
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(page, "institutions-phone", full_page=False)  # the suite adds test institutions
    ctx.close()


def test_upload_page_shows_its_state(demo_server, chromium):
    ctx = chromium.new_context(viewport=DESKTOP)
    page = ctx.new_page()
    sign_in(page, demo_server)
    page.click("nav >> text=数据上传")
    page.wait_for_url(f"{demo_server}/uploads")
    assert page.locator("h1").inner_text() == "数据上传"
    row = page.locator(f"main table tbody tr:has(a[href='/uploads/{FIXTURE_UPLOAD['id']}'])")
    cells = row.locator("td").all_inner_texts()
    assert cells[2:] == ["done", "1", "0", "1"], cells  # status, accepted, updated, quarantined
    shot(page, "uploads")
    ctx.close()


def test_upload_a_file_and_see_its_report(demo_server, chromium):
    import json

    ctx = chromium.new_context(viewport=DESKTOP)
    page = ctx.new_page()
    sign_in(page, demo_server)
    page.goto(f"{demo_server}/uploads")
    lines = [{"resourceType": "Patient", "id": "web-0001", "name": [{"text": "索南旺姆"}], "gender": "female",
              "birthDate": "1995-07-21"},
             {"resourceType": "Patient", "id": "web-0002", "name": [{"text": "更登"}], "birthDate": "2998-02-03"},
             {"resourceType": "Observation", "id": "web-obs-1", "status": "final",
              "subject": {"reference": "Patient/web-0001"}, "effectiveDateTime": "2026-10-09T08:00:00+08:00",
              "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
              "valueQuantity": {"value": 12.1, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"}}]
    page.set_input_files("input[type=file][name=file]", files=[
        {"name": "Patient.ndjson", "mimeType": "application/fhir+ndjson",
         "buffer": "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines[:2]).encode()},
        {"name": "Observation.ndjson", "mimeType": "application/fhir+ndjson",
         "buffer": (json.dumps(lines[2]) + "\n").encode()}])
    page.click("form.upload button.primary")
    page.wait_for_url(f"{demo_server}/uploads/*")
    page.locator("[data-status=done]").wait_for(timeout=30000)  # htmx polls until the upload ends
    assert page.locator("h1").inner_text() == "上传报告"
    assert page.locator("dd[data-count=accepted]").inner_text() == "2"
    assert page.locator("dd[data-count=quarantined]").inner_text() == "1"
    row = page.locator("table.quarantine tbody tr")
    assert row.count() == 1
    text = row.inner_text()
    for part in ("0000-Patient.ndjson", "2", "web-0002", "日期晚于当前时间", "future-date", "Patient.birthDate"):
        assert part in text, (part, text)
    shot(page, "upload-report")
    ctx.close()


def test_health_code_page_shows_the_qr_and_another_hospital_scans_it(demo_server, chromium):
    tok = httpx.post(f"{demo_server}/api/auth/login",
                     json={"username": "doctor", "password": DEMO_PASSWORD}).json()["access_token"]
    h = {"Authorization": f"Bearer {tok}"}
    found = httpx.get(f"{demo_server}/fhir/Patient", params={"identifier": "632701198604120027"}, headers=h).json()
    pid = found["entry"][0]["resource"]["id"]

    ctx = chromium.new_context(viewport=PHONE, locale="zh-CN")
    page = ctx.new_page()
    sign_in(page, demo_server)
    page.goto(f"{demo_server}/patients/{pid}")
    page.click("main >> text=健康码")
    page.wait_for_url(f"{demo_server}/patients/{pid}/health-code")
    page.locator("#health-code svg").wait_for()
    assert "有效期至" in page.locator("main").inner_text()
    assert page.locator("#health-code").get_attribute("hx-trigger").startswith("every ")
    shot(page, "health-code")
    ctx.close()

    code = httpx.get(f"{demo_server}/api/health-code/patient/{pid}", headers=h).json()["text"]
    ctx = chromium.new_context(viewport=DESKTOP, locale="zh-CN")
    page = ctx.new_page()
    sign_in(page, demo_server, "doctor.b")  # another hospital
    page.click("nav >> text=扫描健康码")
    page.fill("input[name=code]", code)
    page.click("button.primary")
    page.wait_for_url(f"{demo_server}/patients/*")
    local = page.url.rsplit("/", 1)[1]
    assert local != pid and page.locator("h1").inner_text()
    page.goto(f"{demo_server}/health-code/scan")  # the same code again: the same record
    page.fill("input[name=code]", code)
    page.click("button.primary")
    page.wait_for_url(f"{demo_server}/patients/{local}")
    ctx.close()
