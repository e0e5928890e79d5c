"""The doctor's prescription page with the medication-safety alerts (issue 8, item 5; docs/medsafety.md
"The doctor's prescription page"), through the real app in-process on both databases.

The world is medkit's (county hospital A where the doctor works, prefecture hospital B, one Person
with a Patient at each, an encounter open at A); the doctor is a web user of A, so the patient's
grant names them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from grantkit import actor, ctx
from medkit import LOCAL_DRUG, RXNORM, MWorld, build
from sqlalchemy import select
from test_recognition_pages import csrf_of, signed_in

from healthlink.db import tables as t
from healthlink.medsafety.knowledge import load
from healthlink.runtime import Platform

KB = load()
ORAL = "26643006"


def rx(ingredient: str) -> str:
    return KB.ingredient(ingredient).rxnorm


def key(ingredient: str) -> str:
    return f"{RXNORM}|{rx(ingredient)}"


@pytest.fixture
def browser(app) -> Callable[[], TestClient]:
    return lambda: TestClient(app, base_url="http://testserver")


class Doc:
    """The signed-in web doctor of A and the world."""

    def __init__(self, c: TestClient, w: MWorld, username: str, prac: str) -> None:
        self.c, self.w = c, w
        self.actor = actor("doctor", w.a, username, practitioner_id=prac)
        self.url = f"/patients/{w.patient}/prescriptions"

    def grant(self) -> str:
        return self.w.grant(self.actor)

    def token(self) -> str:
        return csrf_of(self.c.get(f"{self.url}?encounter={self.w.encounter}").text)

    def post(self, action: str, lines: list[dict], extra: dict | None = None, *, hx: bool = True):
        data: dict = {"encounter": self.w.encounter, "csrf_token": self.token(), "drug": [], "dose": [],
                      "unit": [], "route": [], "frequency": [], "days": [], "line": []}
        for n, ln in enumerate(lines):
            data["line"].append(f"{n:016x}")
            data["drug"].append(ln["drug"])
            data["dose"].append(str(ln.get("dose", "")))
            data["unit"].append(ln.get("unit", "mg"))
            data["route"].append(ln.get("route", ORAL))
            data["frequency"].append(ln.get("frequency", ""))
            data["days"].append(str(ln.get("days", "")))
        for k, v in (extra or {}).items():
            data[k] = v
        return self.c.post(f"{self.url}/{action}", data=data, headers={"HX-Request": "true"} if hx else {},
                           follow_redirects=False)


@pytest.fixture
def doc(platform: Platform, browser) -> Iterator[Doc]:
    w = build(platform)
    c, username, prac = signed_in(browser(), platform, "doctor", w.a)
    yield Doc(c, w, username, prac)


def findings_of(html: str) -> list[dict[str, str]]:
    return [m.groupdict() for m in re.finditer(
        r'<article class="finding (?P<cls>interrupting|notice) sev-(?P<severity>\w+)" id="finding-(?P<id>[0-9a-f]+)" '
        r'data-finding="[0-9a-f]+" data-kind="(?P<kind>\w+)" data-severity="\w+" data-disclosed="(?P<disclosed>\w+)">',
        html)]


def block_of(html: str) -> str:
    m = re.search(r'<div class="rx-block" role="alert">(.*?)<button type="button" class="remove-drug"', html,
                  re.DOTALL)
    return m.group(1) if m else ""


def checks_of(html: str) -> dict[str, str]:
    """The check of each line, as the alerts carry it (``check-<line>``)."""
    return dict(re.findall(r'<input type="hidden" name="(check-[0-9a-f]+)" value="([0-9a-f]+)">', html))


def events(platform: Platform, **where: object) -> list:
    e = t.medsafety_event
    with platform.db.read() as conn:
        return conn.execute(select(e).where(*(e.c[k] == v for k, v in where.items())).order_by(e.c.at)).all()


def prescriptions(doc: Doc) -> list:
    repo = doc.w.platform.repository(ctx(doc.actor))
    return [s.json() for s in repo.search("MedicationRequest", [("encounter", f"Encounter/{doc.w.encounter}"),
                                                                ("_count", "50")]).matches]


SIMVASTATIN = {"drug": key("simvastatin"), "dose": 20, "frequency": "HS", "days": 14}


# ---------------------------------------------------------------------- the page
def test_the_page_renders_for_a_doctor_with_the_encounter_search_and_tabs(doc: Doc):
    html = doc.c.get(doc.url).text
    assert 'id="rx-form"' in html and f'<option value="{doc.w.encounter}" selected' in html
    assert "开具处方" in html and 'id="no-prescriptions"' in html  # zh-CN by default
    assert 'id="tab-tests"' in html and 'id="tab-prescriptions" href=' in html
    # the order page links back
    assert f'id="tab-prescriptions" href="/patients/{doc.w.patient}/prescriptions' in doc.c.get(
        f"/patients/{doc.w.patient}/orders").text
    # the dictionary: Chinese name, English name, local product code
    for q, expect in (("辛伐他汀", key("simvastatin")), ("simva", key("simvastatin")),
                      ("LD-0001", f"{LOCAL_DRUG}|LD-0001"), ("消渴丸", "消渴丸")):
        frag = doc.c.get(f"{doc.url}/drugs", params={"q": q}, headers={"HX-Request": "true"}).text
        assert "<html" not in frag and expect in frag, q
    assert 'id="no-drugs"' in doc.c.get(f"{doc.url}/drugs", params={"q": "zzzz-nothing"}).text
    # adding a drug gives a line and asks for a check
    line = doc.c.get(f"{doc.url}/line", params={"drug": key("simvastatin")}, headers={"HX-Request": "true"})
    assert line.status_code == 200 and 'class="rx-line"' in line.text and 'name="frequency"' in line.text
    assert line.headers["HX-Trigger-After-Settle"] == "medsafety-recheck"
    assert "BID · 每日两次" in line.text and "口服" in line.text
    assert doc.c.get(f"{doc.url}/line", params={"drug": "x|y"}).status_code == 400
    # English
    doc.c.cookies.set("hl_lang", "en")
    html = doc.c.get(doc.url).text
    assert "Prescribe" in html and "Sign the prescription" in html and "开具处方" not in html


def test_onc_pair_at_another_institution_with_a_grant_blocks_naming_drug_institution_and_source(doc: Doc):
    w = doc.w
    w.med(w.b, rx("clarithromycin"))
    doc.grant()
    r = doc.post("check", [SIMVASTATIN])
    assert r.status_code == 200 and "<html" not in r.text
    [f] = findings_of(r.text)
    assert (f["cls"], f["kind"], f["severity"], f["disclosed"]) == ("interrupting", "interaction", "contraindicated",
                                                                    "true")
    block = block_of(r.text)
    assert "克拉霉素" in block and "clarithromycin" in block  # the drug recorded at B
    assert "州人民医院 B" in block and "2026-10-01" in block
    assert "Phansalkar" in block and "ONC" in block  # the knowledge source
    assert f'name="reason-{f["id"]}"' in block and "将加强监测" in block
    assert 'class="ask-authorisation"' not in block


def test_without_a_grant_only_the_hint_with_institution_and_date(doc: Doc):
    w = doc.w
    mid = w.med(w.b, rx("clarithromycin"))
    r = doc.post("check", [SIMVASTATIN])
    [f] = findings_of(r.text)
    assert f["cls"] == "interrupting" and f["disclosed"] == "false"
    block = block_of(r.text)
    assert "州人民医院 B" in block and "2026-10-01" in block and "Phansalkar" in block
    for secret in ("克拉霉素", "larithromycin", mid, rx("clarithromycin")):
        assert secret not in r.text, secret
    assert f'class="ask-authorisation" href="/patients/{w.patient}/outside"' in block


def test_a_minor_interaction_is_a_quiet_notice_and_signing_needs_no_reason(doc: Doc):
    w = doc.w
    w.med(w.a, rx("metoprolol"))
    line = {"drug": key("ibuprofen"), "dose": 200, "frequency": "TID", "days": 3}
    r = doc.post("check", [line])
    [f] = findings_of(r.text)
    assert (f["cls"], f["severity"]) == ("notice", "minor")
    assert 'class="rx-block"' not in r.text and 'class="rx-notices"' in r.text
    assert f'name="reason-{f["id"]}"' not in r.text
    s = doc.post("sign", [line], {"finding": [f["id"]], **checks_of(r.text)})
    assert s.status_code == 204, s.text
    assert s.headers["HX-Redirect"].endswith("done=signed")
    [mr] = [b for b in prescriptions(doc) if b["medicationCodeableConcept"]["coding"][0]["code"] == rx("ibuprofen")]
    assert (mr["status"], mr["intent"], mr["encounter"]["reference"]) == ("active", "order", f"Encounter/{w.encounter}")
    assert mr["requester"]["reference"] == f"Practitioner/{doc.actor.practitioner_id}"
    assert mr["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 200
    assert mr["dosageInstruction"][0]["timing"]["code"]["coding"][0]["code"] == "TID"
    [o] = events(w.platform, finding_id=f["id"], kind="overridden")
    assert o.reason is None
    page = doc.c.get(f"{doc.url}?encounter={w.encounter}&done=signed").text
    assert 'id="flash"' in page and page.count('<tr class="prescription"') == 1 and "布洛芬" in page


def test_signing_an_interrupting_finding_without_override_is_refused_and_with_a_reason_is_stored(doc: Doc):
    w = doc.w
    w.med(w.b, rx("clarithromycin"))
    doc.grant()
    r = doc.post("check", [SIMVASTATIN])
    [f] = findings_of(r.text)
    check = checks_of(r.text)
    # no reason: refused, the alerts shown again (out of band), nothing written
    s = doc.post("sign", [SIMVASTATIN], {"finding": [f["id"]], **check})
    assert s.status_code == 409 and 'id="sign-error"' in s.text and 'hx-swap-oob="outerHTML"' in s.text
    assert "辛伐他汀" in s.text and 'class="rx-block"' in s.text
    # "other" without words: refused naming what is missing
    s = doc.post("sign", [SIMVASTATIN], {"finding": [f["id"]], **check, f"reason-{f['id']}": "other"})
    assert s.status_code == 400 and "其他" in s.text
    # never checked at all: refused too (the check at signing finds it)
    s = doc.post("sign", [SIMVASTATIN])
    assert s.status_code == 409
    # without htmx the page says it
    s = doc.post("sign", [SIMVASTATIN], {"finding": [f["id"]], **check}, hx=False)
    assert s.status_code == 409 and 'id="rx-error"' in s.text and 'class="rx-block"' in s.text
    assert prescriptions(doc) == [] and events(w.platform, kind="overridden", patient_id=w.patient) == []
    # with a reason: overridden, signed, listed
    s = doc.post("sign", [SIMVASTATIN], {"finding": [f["id"]], **check,
                                         f"reason-{f['id']}": "will-monitor"}, hx=False)
    assert s.status_code == 303 and s.headers["location"].endswith("done=signed")
    [o] = events(w.platform, finding_id=f["id"], kind="overridden")
    assert (o.reason, o.severity, o.source_institution) == ("will-monitor", "contraindicated", w.b)
    [mr] = prescriptions(doc)
    assert mr["status"] == "active" and mr["identifier"][0]["value"] == check["check-" + "0" * 16]
    page = doc.c.get(s.headers["location"]).text
    row = re.search(r'<tr class="prescription" data-ref="MedicationRequest/[^"]+">(.*?)</tr>', page, re.DOTALL)
    assert row and "辛伐他汀" in row.group(1) and "20 mg" in row.group(1) and "14" in row.group(1)


def test_a_finding_that_appears_after_the_check_refuses_the_signature(doc: Doc):
    w = doc.w
    r = doc.post("check", [SIMVASTATIN])
    assert findings_of(r.text) == [] and 'class="rx-clear"' in r.text
    check = checks_of(r.text)
    w.med(w.a, rx("clarithromycin"))  # prescribed meanwhile at the doctor's own hospital
    s = doc.post("sign", [SIMVASTATIN], {**check})
    assert s.status_code == 409 and len(findings_of(s.text)) == 1
    assert prescriptions(doc) == []


def test_a_cross_sensitive_drug_with_an_allergy_at_another_institution_is_alerted(doc: Doc):
    w = doc.w
    w.allergy(w.b, rx("amoxicillin"))
    line = {"drug": key("cephalexin"), "dose": 500, "frequency": "QID", "days": 5}
    [hint] = findings_of(doc.post("check", [line]).text)
    assert (hint["kind"], hint["cls"], hint["disclosed"]) == ("allergy", "interrupting", "false")
    doc.grant()
    r = doc.post("check", [line])
    [f] = findings_of(r.text)
    assert (f["kind"], f["severity"], f["disclosed"]) == ("allergy", "major", "true")
    block = block_of(r.text)
    assert "阿莫西林" in block and "州人民医院 B" in block and "交叉过敏" in block and "2025-05-01" in block


def test_bad_input_is_refused_with_a_message_naming_it(doc: Doc):
    for line, expect in (({"drug": key("simvastatin"), "dose": "abc"}, "abc"),
                         ({"drug": key("simvastatin"), "dose": "-5"}, "-5"),
                         ({"drug": "nope|1"}, "药品字典"),
                         ({"drug": key("simvastatin"), "dose": 20, "frequency": "EVERY"}, "频次")):
        r = doc.post("check", [line])
        assert r.status_code == 400 and 'id="check-error"' in r.text and expect in r.text, line
    # signing needs the whole line
    r = doc.post("sign", [{"drug": key("simvastatin"), "dose": 20, "frequency": "HS"}])
    assert r.status_code == 400 and "天数" in r.text
    r = doc.post("sign", [])
    assert r.status_code == 400
    r = doc.post("check", [SIMVASTATIN], {"encounter": "no-such-encounter"})
    assert r.status_code == 400 and "就诊" in r.text
    assert prescriptions(doc) == []
    # another institution's patient is not found
    r = doc.c.get(f"/patients/{doc.w.patients[doc.w.b]}/prescriptions")
    assert r.status_code == 404


def test_user_input_is_escaped(doc: Doc):
    w = doc.w
    evil = "<script>alert(1)</script>"
    doc.grant()
    repo = w.repo(w.b)
    named = {"text": evil, "coding": [{"system": RXNORM, "code": rx("clarithromycin")}]}
    repo.create({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                 "medicationCodeableConcept": named, "subject": {"reference": f"Patient/{w.patients[w.b]}"},
                 "authoredOn": "2026-10-01"}, res_type="MedicationRequest")
    [f] = findings_of(doc.post("check", [SIMVASTATIN]).text)
    r = doc.post("check", [SIMVASTATIN], {"finding": [f["id"]], f"text-{f['id']}": evil})
    assert evil not in r.text and r.text.count("&lt;script&gt;") == 2  # the drug as recorded, the reason kept
    page = doc.c.get(f"{doc.url}?q={evil}").text
    assert evil not in page and "&lt;script&gt;" in page
    r = doc.post("check", [{"drug": key("simvastatin"), "dose": evil}])
    assert r.status_code == 400 and evil not in r.text


@pytest.mark.parametrize("role", ["nurse", "registration_clerk", "pharmacist"])
def test_only_doctors_prescribe(doc: Doc, platform: Platform, browser, role: str):
    other, _, _ = signed_in(browser(), platform, role, doc.w.a)
    assert other.get(doc.url).status_code == 403
    token = csrf_of(other.get("/").text)
    for action in ("check", "sign"):
        r = other.post(f"{doc.url}/{action}", data={"encounter": doc.w.encounter, "drug": [key("simvastatin")],
                                                    "dose": ["20"], "unit": ["mg"], "route": [ORAL],
                                                    "frequency": ["HS"], "days": ["7"], "csrf_token": token},
                       follow_redirects=False)
        assert r.status_code == 403 and "<html" in r.text
    assert prescriptions(doc) == [] and events(platform, patient_id=doc.w.patient) == []


def test_signing_needs_the_csrf_token(doc: Doc):
    r = doc.c.post(f"{doc.url}/sign", data={"encounter": doc.w.encounter, "drug": [key("simvastatin")]},
                   follow_redirects=False)
    assert r.status_code == 403 and prescriptions(doc) == []


def test_an_institution_in_pre_review_submits_what_is_signed_and_the_list_shows_the_outcome(
        doc: Doc, platform: Platform, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(platform.prereview, "institutions", [doc.w.a])  # as HEALTHLINK_PREREVIEW_INSTITUTIONS
    line = {"drug": key("acetaminophen"), "dose": 500, "frequency": "TID", "days": 3}
    s = doc.post("sign", [line], hx=False)
    assert s.status_code == 303 and "prereview=" in s.headers["location"]
    [mr] = prescriptions(doc)
    outcome = platform.prereview.outcome(f"MedicationRequest/{mr['id']}")
    assert outcome in ("passed", "pending")
    page = doc.c.get(s.headers["location"]).text
    assert 'id="prereview-flash"' in page and "已提交区域处方前置审核中心" in page
    assert f'class="prereview" data-outcome="{outcome}"' in page
    # an institution outside pre-review: no column, nothing submitted
    monkeypatch.setattr(platform.prereview, "institutions", [])
    assert 'class="prereview"' not in doc.c.get(s.headers["location"]).text
