"""Bedside verification: the configured pairs, the schedule, the pack master, the settings and the
nurse's scan page (issue 8, item 4).  The "Must show" scenarios through the JSON API are in
tests/test_bedside_api.py; the browser walk-through in tests/test_browser_bedside.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from bedsidekit import GTIN, build, later, pack_scan
from grantkit import ctx
from pydantic import ValidationError
from test_web import csrf_of, sign_in

from healthlink.access.context import Actor
from healthlink.access.scopes import parse_scopes
from healthlink.errors import Forbidden, Invalid
from healthlink.medsafety import knowledge, packs
from healthlink.medsafety.bedside import EIGHT_PAIRS, SEVEN_PAIRS, TEN_PAIRS, Bedside, scheduled_time
from healthlink.runtime import Platform
from healthlink.settings import Settings

TZ = ZoneInfo("Asia/Shanghai")


def nurse_of(inst: str) -> Actor:
    return Actor("user", f"nurse-{inst}", "Nurse", inst, frozenset({"nurse"}), parse_scopes("user/*.cruds"),
                 practitioner_id=f"prac-n-{inst}")


def bedside(platform: Platform, pairs=SEVEN_PAIRS, **kw) -> Bedside:  # noqa: ANN001, ANN003
    return Bedside(platform.services, lambda: platform.medsafety.knowledge, platform.bedside.packs, pairs=pairs,
                   tz="Asia/Shanghai", prereview=platform.prereview.outcome, **kw)


# ------------------------------------------------------------------ configuration
def test_the_seven_eight_and_ten_pair_variants_are_the_documented_lists() -> None:
    assert SEVEN_PAIRS == ("bed", "name", "drug", "concentration", "dose", "route", "time")
    assert EIGHT_PAIRS == (*SEVEN_PAIRS, "expiry")
    assert set(TEN_PAIRS) == set(SEVEN_PAIRS) | {"gender", "age", "expiry"}
    assert Settings().bedside_pairs == list(SEVEN_PAIRS) and Settings().bedside_time_window_minutes == 30


def test_settings_refuse_unknown_pairs_and_a_list_without_the_patient() -> None:
    with pytest.raises(ValidationError, match="unknown pairs"):
        Settings(bedside_pairs=["bed", "name", "colour"])
    with pytest.raises(ValidationError, match="must include 'name'"):
        Settings(bedside_pairs=["drug", "dose"])


def test_a_region_without_the_time_pair_gives_a_late_dose(platform: Platform) -> None:
    ward = build(platform)
    ward.order("LD-0009", 2.5, at=datetime.now(UTC) - timedelta(hours=5))
    scan = pack_scan(GTIN["warfarin"], expiry=later(100), serial="NT1")
    strict = bedside(platform).verify(ctx(nurse_of(ward.inst)), wristband=ward.wristband(), scan=scan, record=False)
    assert [p.name for p in strict.failed] == ["time"]
    lax = bedside(platform, pairs=("bed", "name", "drug", "concentration", "dose", "route"))
    v = lax.verify(ctx(nurse_of(ward.inst)), wristband=ward.wristband(), scan=scan, record=False)
    assert v.outcome == "passed" and "time" not in [p.name for p in v.pairs]


def test_expiry_is_checked_even_where_the_list_leaves_it_out(platform: Platform) -> None:
    ward = build(platform)
    ward.order("LD-0009", 2.5)
    v = bedside(platform).verify(ctx(nurse_of(ward.inst)), wristband=ward.wristband(),
                                 scan=pack_scan(GTIN["warfarin"], expiry=later(-1)), record=False)
    assert [p.name for p in v.failed] == ["expiry"]


def test_a_wider_time_window_accepts_what_the_default_blocks(platform: Platform) -> None:
    ward = build(platform)
    ward.order("LD-0009", 2.5, at=datetime.now(UTC) - timedelta(minutes=50))
    scan = pack_scan(GTIN["warfarin"], expiry=later(100), serial="W60")
    assert bedside(platform).verify(ctx(nurse_of(ward.inst)), wristband=ward.wristband(), scan=scan,
                                    record=False).outcome == "blocked"
    assert bedside(platform, window_minutes=60).verify(ctx(nurse_of(ward.inst)), wristband=ward.wristband(),
                                                       scan=scan, record=False).outcome == "passed"


def test_ten_pairs_compare_sex_and_age_of_the_orders_patient(platform: Platform) -> None:
    from healthlink.medsafety import barcodes as B

    ward = build(platform)
    rx = ward.order("LD-0009", 2.5, n=1)
    v = bedside(platform, pairs=TEN_PAIRS).verify(ctx(nurse_of(ward.inst)), wristband=ward.wristband(0),
                                                  scan=B.dispense_label_payload(rx), record=False)
    # the other patient's order: the identity, sex, age and (the other stay's) bed all differ
    assert {p.name for p in v.failed} == {"name", "gender", "age", "bed"}
    v7 = bedside(platform).verify(ctx(nurse_of(ward.inst)), wristband=ward.wristband(0),
                                  scan=B.dispense_label_payload(rx), record=False)
    assert [p.name for p in v7.failed] == ["name", "bed"]


def test_only_nurses_verify(platform: Platform) -> None:
    ward = build(platform)
    with pytest.raises(Forbidden):
        platform.bedside.wristband(ctx(ward.doctor), ward.wristband())


# ------------------------------------------------------------------ schedule and pack master
def test_scheduled_time_is_the_nearest_event_or_time_of_day() -> None:
    now = datetime(2026, 12, 3, 8, 10, tzinfo=TZ)
    order = {"dosageInstruction": [{"timing": {"repeat": {"timeOfDay": ["08:00:00", "20:00:00"]}}}]}
    assert scheduled_time(order, now, TZ) == datetime(2026, 12, 3, 8, 0, tzinfo=TZ)
    late = datetime(2026, 12, 3, 23, 50, tzinfo=TZ)
    assert scheduled_time(order, late, TZ) == datetime(2026, 12, 3, 20, 0, tzinfo=TZ)
    events = {"dosageInstruction": [{"timing": {"event": ["2026-12-03T06:00:00+08:00", "2026-12-03T14:00:00+08:00"]}}]}
    assert scheduled_time(events, now, TZ) == datetime(2026, 12, 3, 6, 0, tzinfo=TZ)
    assert scheduled_time({"dosageInstruction": [{"asNeededBoolean": True}]}, now, TZ) is None
    bounded = {"dosageInstruction": [{"timing": {"repeat": {"timeOfDay": ["08:00:00"],
                                                            "boundsPeriod": {"start": "2026-12-04T00:00:00+08:00"}}}}]}
    assert scheduled_time(bounded, now, TZ) == datetime(2026, 12, 4, 8, 0, tzinfo=TZ)


def test_the_pack_master_maps_gtins_and_trace_prefixes_to_dictionary_products() -> None:
    kb = knowledge.load()
    m = packs.load(kb)
    assert m.by_gtin(GTIN["warfarin"]).product.id == "local-LD-0009"
    assert m.by_trace_code("8100003").product.ingredients == ("amoxicillin",)
    assert m.for_product("local-LD-0007").strength == "1 g/vial"
    with pytest.raises(Invalid) as e:
        packs.parse({"packs": [{"id": "x", "product": "nope", "gtins": ["06900000010007"],
                                "strength": {"value": 1, "unit": "mg", "per": "tablet"}, "routes": ["oral"]}]}, kb)
    text = " ".join(i.diagnostics for i in e.value.issues)
    assert "unknown product 'nope'" in text and "valid check digit" in text


# ------------------------------------------------------------------ the page
@pytest.fixture
def nurse_page(app, platform: Platform):  # noqa: ANN001, ANN201
    import uuid

    from fastapi.testclient import TestClient
    from test_web import PASSWORD

    from healthlink.accounts import add_user

    def make(inst: str) -> TestClient:
        username = f"web-nurse-{uuid.uuid4().hex[:8]}"
        add_user(platform.db, username=username, password=PASSWORD, display_name=username, roles=["nurse"],
                 institution_id=inst, practitioner_id=f"prac-{uuid.uuid4().hex[:8]}")
        return sign_in(TestClient(app, base_url="http://testserver"), username)
    return make


def test_scan_page_shows_the_patient_then_blocks_naming_the_pair_in_chinese(nurse_page, platform: Platform) -> None:
    ward = build(platform)
    ward.order("LD-0009", 2.5)
    c = nurse_page(ward.inst)
    page = c.get("/bedside")
    assert page.status_code == 200 and "扫描患者腕带" in page.text and 'autofocus' in page.text
    assert 'href="/bedside" aria-current="page"' in page.text  # in the nurse's menu
    r = c.post("/bedside", data={"csrf_token": csrf_of(page.text), "scan": ward.wristband(), "wristband": ""})
    assert r.status_code == 200 and ward.names[0] in r.text and "内科 12床" in r.text
    assert "仅作位置核对，不作身份识别" in r.text
    assert f'name="wristband" value="{ward.wristband()}"' in r.text
    bad = f"(01){GTIN['warfarin']}(17){later(-3):%y%m%d}(10)B1(21)PG1"
    r = c.post("/bedside", data={"csrf_token": csrf_of(page.text), "scan": bad, "wristband": ward.wristband()})
    assert r.status_code == 422
    assert "已拦截：请勿执行" in r.text and "有效期不符" in r.text
    good = f"(01){GTIN['warfarin']}(17){later(30):%y%m%d}(10)B1(21)PG2"
    r = c.post("/bedside", data={"csrf_token": csrf_of(page.text), "scan": good, "wristband": ward.wristband()})
    assert r.status_code == 200 and "核对通过，已记录" in r.text and "MedicationAdministration/" in r.text


def test_scan_page_shows_a_bad_scan_as_a_message_not_an_error_page(nurse_page, platform: Platform) -> None:
    ward = build(platform)
    c = nurse_page(ward.inst)
    page = c.get("/bedside")
    r = c.post("/bedside", data={"csrf_token": csrf_of(page.text), "scan": "nonsense", "wristband": ""})
    assert r.status_code == 400 and "扫描未被接受" in r.text and 'id="scan"' in r.text


# ------------------------------------------------------------------ the demo's labels
def test_demo_labels_can_be_tried_on_the_scan_page(platform: Platform) -> None:
    from healthlink.demogen.bedside import demo_bedside, label_svg

    ward = build(platform)
    got = demo_bedside(platform, ward.patients[0], ward.encounters[0], ward.inst)
    again = demo_bedside(platform, ward.patients[0], ward.encounters[0], ward.inst)  # once: nothing new
    labels = dict(got.labels)
    assert dict(again.labels)["wristband"] == labels["wristband"]
    nurse = ctx(nurse_of(ward.inst))
    seen = platform.bedside.wristband(nurse, labels["wristband"])
    assert {d.flow for d in seen.due} == {"medication", "specimen", "transfusion"}
    outcome = {what: platform.bedside.verify(nurse, wristband=labels["wristband"], scan=text)
               for what, text in got.labels if what != "wristband"}
    assert {w: [p.name for p in v.failed] for w, v in outcome.items() if v.outcome == "blocked"} == {
        "warfarin pack, expired (blocked: expiry)": ["expiry"],
        "amoxicillin 0.5 g for the 0.25 g order (blocked: concentration, dose)": ["concentration", "dose"],
        "aspirin (no order: blocked, drug)": ["drug"]}
    assert sum(v.outcome == "recorded" for v in outcome.values()) == 5
    assert label_svg(labels["wristband"]).startswith("<svg")


def test_scan_page_in_english_names_the_failed_pair(nurse_page, platform: Platform) -> None:
    ward = build(platform)
    ward.order("LD-0009", 25)
    c = nurse_page(ward.inst)
    c.cookies.set("hl_lang", "en")
    page = c.get("/bedside")
    assert "Scan the patient&#39;s wristband" in page.text
    scan = f"(01){GTIN['warfarin']}(17){later(30):%y%m%d}(10)B1(21)EN1"
    r = c.post("/bedside", data={"csrf_token": csrf_of(page.text), "scan": scan, "wristband": ward.wristband()})
    assert r.status_code == 422 and "Blocked: do not give" in r.text
    assert "dose does not match: expected 25 mg, scanned 1 tablet × 2.5 mg/tablet = 2.5 mg" in r.text
