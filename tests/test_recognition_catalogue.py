"""The recognition catalogue (issue 7, item 1): the bundled file, its lookups, its validation
and the validity window in the region's calendar."""

import copy
import json
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from healthlink.demogen.catalog import IMAGING, PANELS
from healthlink.demogen.clinical import LOCAL_PANEL
from healthlink.recognition import (
    DEFAULT_PATH,
    LOINC,
    CatalogueError,
    is_valid,
    load,
    parse,
    valid_until,
)

HIS_LAB = "https://healthlink.example.org/fhir/CodeSystem/his-lab"
CST = timezone(timedelta(hours=8))


@pytest.fixture(scope="module")
def catalogue():
    return load()


@pytest.fixture
def raw():
    return json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))


def _entry(raw, item_id):
    return next(e for e in raw["items"] if e["id"] == item_id)


def _refused(raw) -> str:
    with pytest.raises(CatalogueError) as exc:
        parse(raw)
    return str(exc.value)


def test_bundled_catalogue_loads_with_at_least_100_items_and_provenance(catalogue):
    assert catalogue.version == "1"
    assert len(catalogue.items) >= 100
    assert catalogue.provenance["date"] == "2026-12-02"
    assert catalogue.provenance["sources"] and "licence" in catalogue.provenance
    assert {i.kind for i in catalogue.items} == {"laboratory", "examination"}


def test_every_item_has_a_source_a_positive_window_a_price_and_the_mark(catalogue):
    for item in catalogue.items:
        assert item.source.citation.strip(), item.id
        assert item.source.basis in ("published", "assumed"), item.id
        assert item.validity_days > 0, item.id
        assert item.price_yuan > 0, item.id
        assert item.mark == "HR", item.id


def test_published_hubei_windows_are_kept(catalogue):
    # 鄂卫通〔2023〕56号: electrolytes 7 days, chemistry 30 days, HbA1c 60 days
    assert catalogue.by_code(LOINC, "2823-3").validity_days == 7
    assert catalogue.by_code(LOINC, "1751-7").validity_days == 30
    assert catalogue.by_code(LOINC, "4548-4").validity_days == 60
    assert catalogue.by_code(LOINC, "4548-4").source.basis == "published"


def test_imaging_items_carry_modality_and_body_site(catalogue):
    imaging = [i for i in catalogue.items if i.kind == "examination"]
    assert len(imaging) >= 20
    for item in imaging:
        assert item.modality and item.body_site and item.body_site.code, item.id
    chest_xr = catalogue.by_code(LOINC, "36643-5")
    assert set(chest_xr.modality) == {"DX", "CR"} and chest_xr.body_site.code == "51185008"


def test_every_lab_code_the_demo_generates_resolves(catalogue):
    missing = [code for _, _, members in PANELS for code, *_ in members if catalogue.by_code(LOINC, code) is None]
    assert missing == []
    for panel, *_ in PANELS:
        system = LOCAL_PANEL if panel.startswith("HL-") else LOINC
        assert catalogue.by_code(system, panel) is not None, panel


def test_every_imaging_code_the_demo_generates_resolves_with_its_body_site(catalogue):
    for code, _, site, _, _ in IMAGING:
        item = catalogue.by_code(LOINC, code)
        assert item is not None and item.body_site.code == site, code


def test_unknown_code_is_not_recognised(catalogue):
    assert catalogue.by_code(LOINC, "0000-0") is None
    assert catalogue.by_code("http://example.org/other", "2823-3") is None


def test_equivalent_local_code_resolves_to_the_same_group(catalogue):
    by_loinc = catalogue.by_code(LOINC, "14682-9")  # creatinine, molar
    enzymatic = catalogue.by_code(HIS_LAB, "CREA-E")  # the HIS's enzymatic creatinine
    assert enzymatic is not None and enzymatic.id != by_loinc.id
    assert enzymatic.group == by_loinc.group
    assert enzymatic in catalogue.equivalents(by_loinc)
    assert catalogue.equivalents(by_loinc)[0] == by_loinc
    # two local codes (ALT / GPT) for one item
    assert catalogue.by_code(HIS_LAB, "GPT") is catalogue.by_code(LOINC, "1742-6")


def test_unknown_scope_is_refused_naming_entry_and_field(raw):
    _entry(raw, "HR-K")["scope"] = "province"
    msg = _refused(raw)
    assert "(HR-K).scope" in msg and "unknown scope 'province'" in msg


def test_tier_scopes_are_accepted_and_unknown_tier_refused(raw):
    _entry(raw, "HR-K")["scope"] = "tier:township-and-above"
    assert parse(copy.deepcopy(raw)).by_id("HR-K").scope == "tier:township-and-above"
    _entry(raw, "HR-K")["scope"] = "tier:village-and-above"
    assert "(HR-K).scope" in _refused(raw)


def test_negative_window_is_refused_naming_entry_and_field(raw):
    _entry(raw, "HR-NA")["validity_days"] = -7
    msg = _refused(raw)
    assert "(HR-NA).validity_days" in msg and "positive" in msg


def test_duplicate_code_is_refused_naming_both_entries(raw):
    _entry(raw, "HR-CL")["loinc"] = "2823-3"  # potassium's code
    msg = _refused(raw)
    assert "(HR-CL).loinc" in msg and "duplicate code http://loinc.org|2823-3" in msg and "(HR-K)" in msg


def test_duplicate_local_code_is_refused(raw):
    _entry(raw, "HR-CL")["local_codes"].append({"system": HIS_LAB, "code": "K"})
    assert "(HR-CL).local_codes" in _refused(raw)


def test_imaging_item_without_modality_is_refused(raw):
    del _entry(raw, "HR-CT-HEAD")["modality"]
    assert "(HR-CT-HEAD).modality" in _refused(raw)


def test_imaging_item_without_body_site_is_refused(raw):
    del _entry(raw, "HR-MR-BRAIN")["body_site"]
    assert "(HR-MR-BRAIN).body_site" in _refused(raw)


def test_item_without_source_is_refused(raw):
    del _entry(raw, "HR-HBA1C")["source"]
    msg = _refused(raw)
    assert "(HR-HBA1C).source" in msg and "missing source" in msg


def test_every_error_is_reported_as_an_issue_with_its_element(raw):
    _entry(raw, "HR-K")["scope"] = "province"
    del _entry(raw, "HR-HBA1C")["source"]
    with pytest.raises(CatalogueError) as exc:
        parse(raw)
    expressions = [e for issue in exc.value.issues for e in issue.expression]
    assert any(e.endswith("(HR-K).scope") for e in expressions)
    assert any(e.endswith("(HR-HBA1C).source") for e in expressions)
    assert exc.value.status == 400


def test_a_region_replaces_the_file(tmp_path, raw):
    raw["version"] = "qh-2027-1"
    raw["items"] = [_entry(raw, "HR-K")]
    _entry(raw, "HR-K")["mark"] = "青HR"
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    regional = load(path)
    assert regional.version == "qh-2027-1" and len(regional.items) == 1
    assert regional.by_code(LOINC, "2823-3").mark == "青HR"


def test_unreadable_file_is_refused(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(CatalogueError, match="cannot read"):
        load(path)


def test_specimen_late_evening_in_shanghai_counts_from_that_date(catalogue):
    potassium = catalogue.by_code(LOINC, "2823-3")  # 7 days
    drawn = datetime(2026, 3, 1, 23, 30, tzinfo=CST)
    assert valid_until(drawn, potassium) == date(2026, 3, 8)
    assert is_valid(drawn, potassium, now=datetime(2026, 3, 8, 23, 59, tzinfo=CST))
    assert not is_valid(drawn, potassium, now=datetime(2026, 3, 9, 0, 0, tzinfo=CST))


def test_specimen_in_utc_afternoon_is_next_day_in_shanghai(catalogue):
    potassium = catalogue.by_code(LOINC, "2823-3")
    drawn = datetime(2026, 3, 1, 16, 30, tzinfo=UTC)  # 2026-03-02 00:30 in Shanghai
    assert valid_until(drawn, potassium) == date(2026, 3, 9)
    assert is_valid(drawn, potassium, now=datetime(2026, 3, 9, 15, 59, tzinfo=UTC))  # 23:59 CST
    assert not is_valid(drawn, potassium, now=datetime(2026, 3, 9, 16, 0, tzinfo=UTC))  # 3-10 00:00 CST


def test_window_is_counted_in_another_region_time_zone_when_asked(catalogue):
    potassium = catalogue.by_code(LOINC, "2823-3")
    drawn = datetime(2026, 3, 1, 16, 30, tzinfo=UTC)
    assert valid_until(drawn, potassium, tz="UTC") == date(2026, 3, 8)


def test_time_without_offset_is_refused(catalogue):
    with pytest.raises(ValueError, match="time zone"):
        valid_until(datetime(2026, 3, 1, 12, 0), catalogue.by_code(LOINC, "2823-3"))
