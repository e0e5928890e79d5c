"""Bedside barcodes (healthlink.medsafety.barcodes): GS1 packs, traceability codes, ISBT 128,
wristbands and dispensing labels.

Third-party vectors are read in place from ../shared/testdata (see its SOURCES.md):

* gs1-barcodeparserbuilder (LGPL-2.1, test data only): 43 medicine-pack scans with the GTIN,
  batch, serial and expiry (or the error) that BarcodeParserBuilder's tests assert;
* gs1-syntax-engine (Apache-2.0): the GS1 reference library's own vectors;
* gs1-biip (Apache-2.0): biip's test inputs with biip 5.2.0's output.

Where our result differs from a vector on purpose, the test says so and why (look for
"deviation"); the gaps in GS1 linting that do not concern medicine packs are listed by name.
"""

from __future__ import annotations

import json
import re
from datetime import date, time

import pytest
from conftest import TESTDATA
from hypothesis import given, settings
from hypothesis import strategies as st

from healthlink.errors import Invalid
from healthlink.medsafety.barcodes import (
    BloodUnit,
    DispenseLabel,
    Pack,
    TraceCode,
    Wristband,
    din_check_character,
    dispense_label_payload,
    gs1_check_digit,
    iso7064_mod37_2,
    parse_blood_unit,
    parse_dispense_label,
    parse_gs1,
    parse_scan,
    parse_trace_code,
    parse_wristband,
    split_symbology,
    wristband_payload,
)

TODAY = date(2026, 12, 2)  # resolves two-digit years (GS1 General Specifications §7.12)
GS = "\x1d"


def _vectors(folder: str) -> dict:
    path = TESTDATA / folder / "vectors.json"
    assert path.is_file(), f"third-party test data missing: {path} (see shared/testdata/SOURCES.md)"
    return json.loads(path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------- reference check digits
# Written differently from the module on purpose (weights from a table, not a running sum).


def _ref_gs1_check(digits: str) -> int:
    weights = [3, 1] * 20
    total = sum(int(d) * w for d, w in zip(reversed(digits), weights, strict=False))
    return (10 - total % 10) % 10


_MOD37_VALUES = {c: i for i, c in enumerate("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*")}


def _ref_mod37_2(chars: str) -> str:
    """ISO/IEC 7064 pure system, modulus 37, radix 2, by its defining congruence: the check
    value c makes c + sum(a_i * 2^i) ≡ 1 (mod 37), i counted from 1 at the rightmost data
    character.  Found by trying all 37 candidates."""
    weighted = sum(_MOD37_VALUES[c] * pow(2, i, 37) for i, c in enumerate(reversed(chars), start=1))
    (check,) = [c for c, v in _MOD37_VALUES.items() if (weighted + v) % 37 == 1]
    return check


# ----------------------------------------------------------------- medicine-pack vectors

PACKS = _vectors("gs1-barcodeparserbuilder")["vectors"]
# Deviation: GS1 General Specifications §7.12 puts YY within 49 years back and 50 ahead of the
# scan date, so in 2026 "99" is 1999; BarcodeParserBuilder always adds 2000.  The day-00 rule
# (end of month) is the same in both.
CENTURY_DEVIATION = {"991200": date(1999, 12, 31)}


def test_pack_vector_count() -> None:
    assert len(PACKS) == 43
    assert sum("expected_error" in v for v in PACKS) == 14  # 29 valid scans, 14 with an expected error


@pytest.mark.parametrize("vector", PACKS, ids=[f"{v['theory']}-{i}" for i, v in enumerate(PACKS)])
def test_medicine_pack_vectors(vector: dict) -> None:
    scan = vector["input"]
    if "expected_error" in vector:
        error = vector["expected_error"]
        if error == "Invalid GS1-128 identifier.":
            # Deviation: that parser reads only GS1-128 symbols and demands a "]C1" prefix. A
            # bedside scanner often sends no symbology identifier, so we read the data and say
            # that no identifier came (a caller that must have GS1-128 can refuse on that).
            pack = parse_gs1(scan, today=TODAY)
            assert pack.symbology is None
            assert (pack.gtin, pack.batch) == ("34567890123457", "3456789")
            return
        with pytest.raises(Invalid) as caught:
            parse_gs1(scan, today=TODAY)
        message = caught.value.message
        if m := re.search(r"\n(\d{2,4}) :", error):
            assert f"({m.group(1)})" in message, message
        elif m := re.search(r"Invalid character detected in AI '(..)'", error):
            assert f"no GS1 Application Identifier at '{m.group(1)}" in message, message
        else:
            assert "symbology ]C0" in message, message
        return
    exp = vector["expected"]
    if exp.get("product_code") is None:
        # A GS1-128 symbol with only a serial: readable, but not a pack we can identify.
        with pytest.raises(Invalid, match=r"no GTIN \(01\)"):
            parse_scan(scan, today=TODAY)
        pack = parse_gs1(scan, require_gtin=False, today=TODAY)
    else:
        pack = parse_scan(scan, today=TODAY)
        assert isinstance(pack, Pack)
    assert pack.gtin == exp.get("product_code")
    assert pack.batch == exp.get("BatchNumber")
    assert pack.serial == exp.get("SerialNumber")
    if (expiry := exp.get("ExpirationDate")) is not None:
        assert pack.expiry_raw == expiry["raw"]
        assert pack.expiry == CENTURY_DEVIATION.get(expiry["raw"], date.fromisoformat(expiry["date"]))
    else:
        assert pack.expiry is None
    if (production := exp.get("ProductionDate")) is not None:
        assert pack.production_date == date.fromisoformat(production["date"])
    else:
        assert pack.production_date is None
    if "symbology" in exp:
        assert pack.symbology == "]" + exp["symbology"]
    joined = {ai + value for ai, value in pack.elements}
    for ai, value in (exp.get("other_fields") or {}).items():
        if isinstance(value, str):
            # "71"+"025862471" is AI (710) "25862471": compare AI and data as one string
            assert ai + value in joined, (ai, value, pack.elements)
        elif "raw" in value:
            assert (ai, value["raw"]) in pack.elements
        else:  # decimals as C# renders them: the AI is there
            assert any(a.startswith(ai) for a, _ in pack.elements), (ai, pack.elements)


# ----------------------------------------------------------------- GS1 Syntax Engine vectors

ENGINE = _vectors("gs1-syntax-engine")["vectors"]
# Linters of the GS1 reference library that biip (and so this module) does not implement. None
# concerns a medicine pack's GTIN, batch, serial or expiry: coupons (8110/8112), IBAN (8007),
# ISO 3166/4217 code lists, GCP prefix rules, check pairs (8013), 8001/8026/4309/7252/7258/7040
# content rules, percent-encoding (4300) and day 00 where the AI forbids it (4326).
LINTERS_NOT_IMPLEMENTED = {
    "GS1_LINTER_IBAN_TOO_SHORT", "GS1_LINTER_ILLEGAL_DAY", "GS1_LINTER_ILLEGAL_IBAN_COUNTRY_CODE",
    "GS1_LINTER_ILLEGAL_ZERO_PREFIX", "GS1_LINTER_ILLEGAL_ZERO_VALUE", "GS1_LINTER_INCORRECT_CHECK_PAIR",
    "GS1_LINTER_INCORRECT_IBAN_CHECKSUM", "GS1_LINTER_INVALID_BIOLOGICAL_SEX_CODE",
    "GS1_LINTER_INVALID_GCP_PREFIX", "GS1_LINTER_INVALID_IBAN_CHARACTER",
    "GS1_LINTER_INVALID_IMPORT_IDX_CHARACTER", "GS1_LINTER_INVALID_LATITUDE", "GS1_LINTER_INVALID_LONGITUDE",
    "GS1_LINTER_INVALID_PERCENT_SEQUENCE", "GS1_LINTER_INVALID_WINDING_DIRECTION", "GS1_LINTER_NOT_ISO3166",
    "GS1_LINTER_NOT_ISO3166_ALPHA2", "GS1_LINTER_NOT_ISO3166_OR_999", "GS1_LINTER_NOT_ISO4217",
    "GS1_LINTER_PIECE_NUMBER_EXCEEDS_TOTAL", "GS1_LINTER_POSITION_EXCEEDS_END",
    "GS1_LINTER_TOO_SHORT_FOR_CHECK_PAIR", "GS1_LINTER_TOO_SHORT_FOR_GCP", "GS1_LINTER_ZERO_PIECE_NUMBER",
    "GS1_LINTER_ZERO_TOTAL_PIECES",
}
# processAIdata: the check digit inside AI (8003) GRAI is not verified by biip.
ENGINE_GAPS = {"^800302112345678901ABC"}
NON_GS1 = ("]Q1", "]d1", "]J0")


def _fnc1(pack: Pack) -> str:
    return "^" + pack.element_string.replace(GS, "^")


def _engine_case(v: dict) -> str:
    """'agree', 'gap' (listed above) or a description of the disagreement."""
    kind = v["test"].split(" ")[0]
    scan = v["input"]
    if kind == "processAIdata":  # "^" = FNC1: in first position it makes the data GS1
        scan = "]d2" + scan[1:].replace("^", GS) if scan.startswith("^") else "]d1" + scan
    elif kind == "generateScanData":  # read backwards: the scanner output parses to the data
        if not v["expected_valid"] or not v.get("expected_output"):
            return "agree"
        scan, v = v["expected_output"], {**v, "expected_output": v["input"]}
    if kind in ("processScanData", "generateScanData") and scan[:3] in NON_GS1:
        aim, payload = split_symbology(scan)  # not GS1: we hand the payload on, never as a pack
        with pytest.raises(Invalid, match="carries no GS1 data"):
            parse_gs1(scan, require_gtin=False)
        return "agree" if aim == scan[:3] and payload == scan[3:] else f"split {aim!r} {payload!r}"
    if kind == "generateScanData" and scan.startswith(("]Q1", "]d1", "]J0")):
        return "agree"
    try:
        pack = parse_gs1(scan, require_gtin=False, strict=True, today=TODAY)
    except Invalid as exc:
        if not v["expected_valid"]:
            return "agree"
        return f"refused: {exc.message}"
    if not v["expected_valid"]:
        if v.get("expected_linter") in LINTERS_NOT_IMPLEMENTED or "COUPON" in v.get("expected_linter", ""):
            return "gap"
        return "gap" if v["input"] in ENGINE_GAPS else "accepted an invalid vector"
    expected = v.get("expected_output")
    if not expected:
        return "agree"
    if kind in ("processScanData", "generateScanData"):
        got = list(pack.elements)
        if "Check digit computed" in v.get("comment", ""):  # the engine appended the check digit
            expected += str(_ref_gs1_check(expected))
        return "agree" if got == _expected_elements(expected) else f"got {got}"
    return "agree" if _fnc1(pack) == expected else f"got {_fnc1(pack)!r}, expected {expected!r}"


def _expected_elements(data: str) -> list[tuple[str, str]]:
    """The engine's '^'-encoded data ('|' before a composite component) as (AI, value) pairs."""
    primary, _, composite = data.partition("|")
    if primary.startswith("^"):
        pairs = list(parse_gs1("]d2" + primary[1:].replace("^", GS), require_gtin=False, strict=True).elements)
    else:  # EAN/UPC/ITF primary: a bare GTIN
        pairs = [("01", primary.zfill(14))]
    if composite:
        pairs += parse_gs1("]d2" + composite.lstrip("^").replace("^", GS), require_gtin=False, strict=True).elements
    return pairs


ENGINE_USED = [v for v in ENGINE if not v["test"].startswith("parseDLuri")]


@pytest.mark.parametrize("vector", ENGINE_USED, ids=[f"{v['source']}" for v in ENGINE_USED])
def test_gs1_syntax_engine_vectors(vector: dict) -> None:
    assert _engine_case(vector) in ("agree", "gap")


def test_gs1_syntax_engine_summary() -> None:
    results = [_engine_case(v) for v in ENGINE_USED]
    assert len(ENGINE) == 422 and len(ENGINE_USED) == 304  # 118 GS1 Digital Link URIs not used
    assert results.count("gap") == 81  # 80 linters listed above + the (8003) check digit
    assert results.count("agree") == 304 - 81


# ----------------------------------------------------------------- biip vectors

BIIP = _vectors("gs1-biip")["cases"]


def _biip_cases(prefix: str) -> list[dict]:
    return [c for c in BIIP if prefix in c["source"]]


@pytest.mark.parametrize(
    "case",
    _biip_cases("test_gs1_messages") + _biip_cases("test_gs1_element_strings"),
    ids=lambda c: c["source"],
)
def test_biip_element_string_vectors(case: dict) -> None:
    params = case["params"]
    if "ai_code" in params:  # a value that does not match its AI's pattern or date
        bad = params["bad_value"]
        bad = bad if bad.startswith(params["ai_code"]) else params["ai_code"] + bad
        with pytest.raises(Invalid, match=re.escape(f"({params['ai_code']})")):
            parse_gs1(bad, require_gtin=False, strict=True, today=TODAY)
        return
    value = params["value"]
    if case["test"] == "test_extract_with_nested_error":
        # biip records a wrong GTIN/SSCC/GLN check digit beside the element; we refuse the scan
        with pytest.raises(Invalid, match="check digit"):
            parse_gs1(value, require_gtin=False, strict=True, today=TODAY)
        return
    if case["test"] == "test_parse_hri":
        expected = re.findall(r"\((\d+)\)([^(]+)", value)
    else:
        recorded = case["biip_5_2_0_parse"]
        expected = [(e["ai"], e["value"]) for e in recorded["elements"]] if recorded.get("gs1_hri") else None
    if expected is None:
        with pytest.raises(Invalid):
            parse_gs1(value, require_gtin=False, strict=True, today=TODAY)
    else:
        assert list(parse_gs1(value, require_gtin=False, strict=True, today=TODAY).elements) == expected


CHECKSUM_CASES = [c for c in _biip_cases("test_checksums.py") if c["test"].startswith("test_gs1_standard_check_digit")]


@pytest.mark.parametrize("case", CHECKSUM_CASES, ids=lambda c: c["source"])
def test_biip_check_digit_vectors(case: dict) -> None:
    value = case["params"]["value"]
    if case["test"] == "test_gs1_standard_check_digit":
        assert gs1_check_digit(value) == case["params"]["expected"] == _ref_gs1_check(value)
    else:  # non-numeric value
        with pytest.raises(Invalid):
            gs1_check_digit(value)


# ----------------------------------------------------------------- GS1 behaviour


def test_check_digits_agree_with_reference() -> None:
    for body in ("0357466145194", "1030409490311", "629104150021", "3761042500212345", "00000000000"):
        assert gs1_check_digit(body) == _ref_gs1_check(body)


def test_bad_gtin_check_digit_names_expected_digit() -> None:
    with pytest.raises(Invalid, match=r"GTIN \(01\) 03574661451948: check digit is 8, expected 7"):
        parse_scan("]d2010357466145194817261231", today=TODAY)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("261200", date(2026, 12, 31)), ("280200", date(2028, 2, 29)), ("270200", date(2027, 2, 28)),
     ("260400", date(2026, 4, 30)), ("260415", date(2026, 4, 15))],
)
def test_expiry_day_00_is_last_day_of_month(raw: str, expected: date) -> None:
    pack = parse_scan(f"]d201035746614519471{7}{raw}10B1{GS}21S1", today=TODAY)
    assert pack.expiry == expected
    assert pack.expired(expected) is False and pack.expired(date.fromordinal(expected.toordinal() + 1))


def test_two_digit_year_window_follows_scan_date() -> None:
    scan = "010357466145194717760100"
    assert parse_gs1(scan, today=date(2026, 1, 1)).expiry == date(2076, 1, 31)
    assert parse_gs1(scan, today=date(2024, 1, 1)).expiry == date(1976, 1, 31)


@pytest.mark.parametrize("raw", ["261301", "260230", "2612AB", "991332"])
def test_impossible_expiry_refused(raw: str) -> None:
    with pytest.raises(Invalid, match=r"\(17\)"):
        parse_scan(f"0103574661451947{'17'}{raw}", today=TODAY)


def test_hri_form_and_escaped_bracket() -> None:
    pack = parse_scan("(01) 03574661451947 (17) 261231 (10)AB\\(1(21)XYZ", today=TODAY)
    assert (pack.gtin, pack.expiry, pack.batch, pack.serial) == ("03574661451947", date(2026, 12, 31), "AB(1", "XYZ")
    with pytest.raises(Invalid, match=r"unknown GS1 Application Identifier \(89\)"):
        parse_scan("(01)03574661451947(89)1")


def test_nhrn_and_other_ais_kept_raw_and_lenient_warning() -> None:
    pack = parse_scan(f"]d20103574661451947710PZN1234{GS}20BL", today=TODAY)
    assert pack.nhrn == (("710", "PZN1234"),)
    assert pack.other == (("20", "BL"),)
    assert pack.warnings and "(20)" in pack.warnings[0]
    with pytest.raises(Invalid, match=r"\(20\)"):
        parse_gs1(f"]d20103574661451947710PZN1234{GS}20BL", strict=True)


def test_same_ai_twice_with_different_values_refused() -> None:
    with pytest.raises(Invalid, match=r"\(10\) appears twice"):
        parse_scan(f"010357466145194710A{GS}10B")


def test_truncated_and_empty_scans() -> None:
    for scan in ("]d2", "]d20103574661", "0103574661451947171212", "  \r\n", "]", "]zz"):
        with pytest.raises(Invalid):
            parse_scan(scan)


def test_keyboard_wedge_cr_lf_and_bytes() -> None:
    pack = parse_scan(b"]d20103574661451947101724847.1\x1d17210331\r\n", today=TODAY)
    assert (pack.batch, pack.expiry) == ("1724847.1", date(2021, 3, 31))
    with pytest.raises(Invalid, match="not UTF-8"):
        parse_scan(b"\xff\xfe01")


def test_non_ascii_digits_are_not_gs1_digits() -> None:
    with pytest.raises(Invalid, match=r"GTIN \(01\) must be 14 digits"):
        parse_scan("01٠٣٥٧٤٦٦١٤٥١٩٤٧")
    with pytest.raises(Invalid, match=r"\(10\) BATCH/LOT: illegal character"):
        parse_scan("010357466145194710批号")


def test_ean13_on_a_domestic_pack() -> None:
    pack = parse_scan("6901234567892")
    assert isinstance(pack, Pack) and pack.gtin == "06901234567892" and pack.expiry is None
    with pytest.raises(Invalid, match="check digit"):
        parse_scan("6901234567891")


# ----------------------------------------------------------------- traceability code


def test_trace_code_parts() -> None:
    code = parse_scan("81234561234567890123")
    assert code == parse_trace_code("]C081234561234567890123")
    assert isinstance(code, TraceCode)
    assert (code.product_code, code.serial, code.check) == ("8123456", "123456789", "0123")


@pytest.mark.parametrize("scan", ["8123456123456789012", "812345612345678901234", "8123456123456789012X",
                                  "８１２３４５６１２３４５６７８９０１２３"])
def test_trace_code_must_be_20_ascii_digits(scan: str) -> None:
    with pytest.raises(Invalid, match="20 digits"):
        parse_trace_code(scan)


# ----------------------------------------------------------------- ISBT 128


def test_din_check_character_worked_example() -> None:
    # ICCBBA ST-001 Appendix A: DIN G1234 17 654321 -> K = "A" (value 10), type-3 flag "70"
    assert din_check_character("G123417654321") == "A" == _ref_mod37_2("G123417654321")
    assert iso7064_mod37_2("G123417654321") + 60 == 70


@given(st.from_regex(r"[A-NP-Z1-9][0-9]{12}", fullmatch=True))
def test_din_check_character_matches_reference(din: str) -> None:
    assert din_check_character(din) == _ref_mod37_2(din)


def _din_with_flag(din: str) -> str:
    return f"={din}{iso7064_mod37_2(din) + 60}"


def test_blood_unit_label_concatenated() -> None:
    scan = _din_with_flag("G123417654321") + "=%5100" + "=<E0224V00" + "=>026032"
    unit = parse_scan(scan)
    assert isinstance(unit, BloodUnit)
    assert (unit.din, unit.din_flags, unit.din_check_character) == ("G123417654321", "70", "A")
    assert (unit.abo, unit.rhd, unit.blood_group) == ("O", "positive", "O RhD positive")
    assert (unit.product_code, unit.collection_type, unit.division) == ("E0224", "V", "00")
    assert unit.expiry == date(2026, 2, 1) and unit.expiry_time is None


def test_blood_unit_compound_message_with_time() -> None:
    unit = parse_blood_unit("=+03000" + "=A999926000001" + "00" + "=%0600" + "&>0263652359")
    assert unit.din == "A999926000001" and unit.abo == "A" and unit.rhd == "negative"
    assert unit.expiry == date(2026, 12, 31) and unit.expiry_time == time(23, 59)
    with pytest.raises(Invalid, match="announces 4"):
        parse_blood_unit("=+04000" + "=%0600" + "&>0263652359")


@pytest.mark.parametrize(
    ("scan", "message"),
    [
        ("=G12341765432171", "flag 71 is not its check value 70"),
        ("=G1234176543", "truncated"),
        ("=%5100=!123", "not supported"),
        ("=>025366", "day 366 does not exist in 2025"),
        ("&>0260012460", "time 2460"),
        ("=%5100=%9500", "appears twice"),
        ("=<12345V00", "letter and 4 digits"),
        ("G123417654321B", "check character is B, expected A"),
    ],
)
def test_blood_unit_errors(scan: str, message: str) -> None:
    with pytest.raises(Invalid, match=re.escape(message)):
        parse_scan(scan)


def test_din_typed_from_eye_readable_label() -> None:
    unit = parse_scan("G1234 17 654321 A")
    assert isinstance(unit, BloodUnit) and unit.din == "G123417654321"


# ----------------------------------------------------------------- wristband, dispensing label

PATIENT = "3f2b8c1e-0a4d-4e55-9c1a-7b6f0e2d9a11"
ENCOUNTER = "c0ffee00-1111-4222-8333-444455556666"


def test_wristband_round_trip() -> None:
    payload = wristband_payload(PATIENT, ENCOUNTER)
    assert payload == f"HLW1.{PATIENT}.{ENCOUNTER}"
    band = parse_scan("]Q1" + payload)
    assert band == Wristband(patient_id=PATIENT, encounter_id=ENCOUNTER) == parse_wristband(payload)


@pytest.mark.parametrize("scan", [f"HLW1.{PATIENT}", f"HLW1.{PATIENT}.", f"HLW1.{PATIENT}.a.b", "HLW1..x",
                                  f"HLW1.{PATIENT}.{'x' * 65}", "HLW1.p t.e"])
def test_wristband_malformed(scan: str) -> None:
    with pytest.raises(Invalid, match="wristband"):
        parse_scan(scan)


def test_wristband_refuses_ids_with_a_dot() -> None:
    with pytest.raises(Invalid, match="no '.'"):
        wristband_payload("patient.1", ENCOUNTER)


def test_gs1_gsrn_wristband() -> None:
    body = "12345678901234567"
    gsrn = body + str(_ref_gs1_check(body))
    band = parse_scan(f"]d28018{gsrn}{GS}8019123")
    assert band == Wristband(patient_id=gsrn, encounter_id="123", scheme="gs1-gsrn")
    with pytest.raises(Invalid, match="GSRN"):
        parse_scan(f"]d28018{body}{(_ref_gs1_check(body) + 1) % 10}")
    with pytest.raises(Invalid, match="wristband"):
        parse_gs1(f"]d28018{gsrn}")


def test_dispense_label_round_trip() -> None:
    assert parse_scan(dispense_label_payload("mr-1.2")) == DispenseLabel(medication_request_id="mr-1.2")
    assert parse_dispense_label("]C0HLD1.abc").medication_request_id == "abc"
    for bad in ("HLD1.", "HLD1.a b", "HLD1." + "x" * 65):
        with pytest.raises(Invalid, match="dispensing label"):
            parse_scan(bad)


def test_health_code_is_not_a_wristband() -> None:
    with pytest.raises(Invalid, match="scan the patient's wristband"):
        parse_scan("HL1.eyJwIjoxfQ.c2ln")


def test_unrecognised_scan_lists_accepted_kinds() -> None:
    with pytest.raises(Invalid, match="accepted: GS1 medicine pack") as caught:
        parse_scan("hello nurse")
    assert caught.value.issues[0].code == "invalid"


# ----------------------------------------------------------------- hostile input

_ALPHABET = st.sampled_from(list("0123456789()=&%<>*}{,+.]-_ABCDEFGHLQWdeCJ \\\r\n") + [GS, "|", "^", "µ"])
_SEEDS = [
    f"]d20103574661451947101724847.1{GS}1721033121118165795226",
    "(01)03574661451947(17)261200(10)A",
    "=G12341765432170=%5100=<E0224V00=>026032",
    f"HLW1.{PATIENT}.{ENCOUNTER}",
    "81234561234567890123",
]


def _only_invalid(scan: str | bytes) -> None:
    try:
        result = parse_scan(scan, today=TODAY)
    except Invalid as exc:
        assert exc.message and exc.issues
        return
    assert isinstance(result, Pack | TraceCode | BloodUnit | Wristband | DispenseLabel)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=80), st.text(_ALPHABET, max_size=80), st.binary(max_size=80)))
def test_fuzz_arbitrary_input_raises_only_invalid(scan: str | bytes) -> None:
    _only_invalid(scan)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_SEEDS), st.integers(0, 80), st.integers(0, 6), st.text(_ALPHABET, max_size=6))
def test_fuzz_mutated_real_scans_raise_only_invalid(seed: str, at: int, cut: int, insert: str) -> None:
    at = min(at, len(seed))
    _only_invalid(seed[:at] + insert + seed[at + cut:])


def test_huge_input_refused_early() -> None:
    with pytest.raises(Invalid, match="too long"):
        parse_scan("0" * 100_000)
