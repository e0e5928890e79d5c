"""What a bedside scanner reads: medicine packs, traceability codes, blood units, our own labels.

Everything here parses untrusted text (a keyboard-wedge scanner, a phone camera, a typed label)
and either returns a small frozen dataclass or raises :class:`healthlink.errors.Invalid` whose
message (and single issue) says what was wrong.  Nothing else escapes, whatever the input.
No HTTP, no database: the bedside service (issue 8, deliverable 4) calls :func:`parse_scan` and
compares the result with the order, the patient and the configured pairs.

Kinds of scan (:func:`parse_scan` detects which):

* **GS1 element strings** on a medicine pack (GS1 DataMatrix, GS1-128, GS1 QR, DataBar, DotCode):
  raw scanner output with or without an AIM symbology identifier (``]d2``, ``]C1``, ``]Q3``,
  ``]e0``, ``]J1``), FNC1 transmitted as GS (U+001D), several GS1-128 symbols concatenated
  with their ``]C1`` prefixes, or the human-readable form ``(01)…(17)…(10)…(21)…`` typed from
  the pack (``\\(`` is a literal bracket inside a value).  Parsed with ``biip`` (its AI table
  and per-element validation) -> :class:`Pack`.  An EAN-13/EAN-8 (``]E0``/``]E4`` or a bare
  8/12/13/14-digit GTIN with a valid check digit) gives a :class:`Pack` with only the GTIN.
  A GS1 wristband (GSRN, AI 8018, with an optional SRIN, AI 8019) gives a :class:`Wristband`.
* **The Chinese 20-digit drug traceability code** (药品追溯码, "码上放心", ex-电子监管码):
  7-digit product identification code + 9-digit serial + 4 check digits
  (../shared/research/medication-safety.md §2.5).  The notes do not give the check algorithm
  (it is not published), so only the length and the digits are validated -> :class:`TraceCode`.
  A bare 20-digit scan is read as a traceability code, although ``01`` + GTIN + ``10`` + two
  digits is 20 digits too; with AIM identifiers switched on (``]C0`` vs ``]C1``/``]d2``) the two
  never meet.
* **ISBT 128** blood-unit label data structures, one or several concatenated (also inside a
  compound message ``=+``): donation identification number (001, ``=αppppyynnnnnnff``, flag
  ``ff`` 60-96 verified as the ISO/IEC 7064 mod 37-2 check), blood groups (002, ``=%``),
  product code (003, ``=<``), expiration date (004, ``=>cyyjjj``) and date and time (005,
  ``&>cyyjjjhhmm``), collection and production dates (006-009), product divisions (032), and
  a DIN typed from the eye-readable label with its keyboard check character
  (``G123417654321A``) -> :class:`BloodUnit`.
* **The platform's own labels** (printed by HealthLink, QR or Code 128):

  - wristband ``HLW1.<Patient id>.<Encounter id>`` -> :class:`Wristband`; both ids are FHIR
    ids without a dot (the platform's ids are UUIDs), so the dot separates them unambiguously;
    :func:`wristband_payload` refuses an id with a dot rather than print an ambiguous label;
  - dispensing label ``HLD1.<MedicationRequest id>`` -> :class:`DispenseLabel` (the id may
    contain dots: everything after the prefix is the id).

  The electronic health code (``HL1.…``, healthlink.healthcode) names a Person, not an
  encounter, and is verified by its own service; at the bedside it is refused with a message
  saying to scan the wristband.

Dates: GS1 YYMMDD years follow GS1 General Specifications §7.12 (a window from 49 years back
to 50 years ahead of the scan date; pass ``today`` for a fixed clock), and day ``00`` means the
last day of the month.  ISBT 128 ``cyyjjj`` is year 2000 + 100·c + yy, day of year ``jjj``.

Leniency, on purpose: the AIs the bedside uses — GTIN (01), batch (10), production date (11),
expiry (17), serial (21), expiry date and time (7003), GSRN (8018) and SRIN (8019) — are always
validated strictly.  Another
AI whose value breaks its GS1 format (for example ``(20)BL``) is kept raw with a warning in
:attr:`Pack.warnings` as long as it is a known AI, its length fits and its characters are in
GS1's character set 82; ``strict=True`` refuses it instead.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time

from biip import ParseError
from biip.checksums import gs1_standard_check_digit
from biip.gs1_application_identifiers import _GS1_APPLICATION_IDENTIFIERS
from biip.gs1_element_strings import GS1ElementString

from healthlink.errors import Invalid, Issue

__all__ = [
    "BloodUnit",
    "DispenseLabel",
    "Pack",
    "Scan",
    "TraceCode",
    "Wristband",
    "din_check_character",
    "dispense_label_payload",
    "gs1_check_digit",
    "iso7064_mod37_2",
    "parse_blood_unit",
    "parse_dispense_label",
    "parse_gs1",
    "parse_scan",
    "parse_trace_code",
    "parse_tube_label",
    "parse_wristband",
    "split_symbology",
    "tube_label_payload",
    "wristband_payload",
]

MAX_SCAN_CHARS = 2048  # a GS1 DataMatrix holds at most ~3,100 digits; real packs use < 100
GS = "\x1d"
ACCEPTED = (
    "GS1 medicine pack (DataMatrix/GS1-128 element string or '(01)…' text), EAN-13, "
    "20-digit drug traceability code, ISBT 128 blood-unit label, "
    "wristband 'HLW1.<patient>.<encounter>' or GS1 GSRN (8018), dispensing label 'HLD1.<order>'"
)


def _invalid(message: str, expression: str = "scan") -> Invalid:
    return Invalid(message, [Issue(code="invalid", diagnostics=message, expression=(expression,))])


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Pack:
    """A medicine pack's GS1 data.  ``gtin`` is 14 digits with a verified check digit.

    ``gtin`` is None only when :func:`parse_gs1` was called with ``require_gtin=False`` (a
    GS1-128 symbol carrying, say, only a serial); :func:`parse_scan` always requires it.
    """

    gtin: str | None
    expiry: date | None = None
    expiry_raw: str | None = None  # YYMMDD as printed (day 00 = end of month)
    expiry_time: time | None = None  # from AI 7003 only
    batch: str | None = None
    serial: str | None = None
    production_date: date | None = None
    nhrn: tuple[tuple[str, str], ...] = ()  # national healthcare reimbursement numbers, AI 710-715
    other: tuple[tuple[str, str], ...] = ()  # every other AI, raw, in scan order
    elements: tuple[tuple[str, str], ...] = ()  # all (AI, value) pairs in scan order
    symbology: str | None = None  # AIM identifier as scanned, e.g. "]d2"; None if not sent
    warnings: tuple[str, ...] = ()
    kind: str = field(default="pack", init=False)

    @property
    def element_string(self) -> str:
        """The elements as one FNC1-separated string (GS after variable-length AIs)."""
        out = []
        for ai, value in self.elements:
            out.append(ai + value)
            if _AI[ai].separator_required:
                out.append(GS)
        return "".join(out).removesuffix(GS)

    def expired(self, on: date) -> bool:
        """True if the pack's expiry date is before ``on`` (usable through its expiry day)."""
        return self.expiry is not None and self.expiry < on


@dataclass(frozen=True)
class TraceCode:
    """A Chinese 20-digit drug traceability code.  ``check`` is NOT verified (no published
    algorithm); ``product_code`` maps to the drug dictionary, ``serial`` identifies the unit."""

    code: str
    product_code: str  # 7 digits: 药品标识码 (product identification)
    serial: str  # 9 digits: 单件序列号
    check: str  # 4 digits, kept as read
    kind: str = field(default="trace-code", init=False)


@dataclass(frozen=True)
class BloodUnit:
    """ISBT 128 data structures from one or more blood-bag barcodes (each part optional)."""

    din: str | None = None  # 13 characters: FIN (5) + year (2) + sequence (6)
    din_flags: str | None = None  # ff as scanned ("00", "60"-"96" = verified check, ...)
    din_check_character: str | None = None  # K, the ISO 7064 mod 37-2 check printed boxed
    product_code: str | None = None  # product description code, e.g. "E0224"
    collection_type: str | None = None  # t of data structure 003
    division: str | None = None  # ds of data structure 003
    blood_group_code: str | None = None  # gg of data structure 002
    abo: str | None = None  # "O", "A", "B", "AB" (None for a special message / unknown)
    rhd: str | None = None  # "positive", "negative" or None (not specified / unknown)
    blood_group: str | None = None  # the code's meaning, e.g. "O RhD positive"
    expiry: date | None = None  # data structure 004 or 005
    expiry_time: time | None = None  # data structure 005 only; 004 means end of that day
    collected: datetime | date | None = None  # 006 / 007
    produced: datetime | date | None = None  # 008 / 009
    structures: tuple[tuple[str, str], ...] = ()  # (data identifier, content) as scanned
    kind: str = field(default="blood-unit", init=False)


@dataclass(frozen=True)
class Wristband:
    """A patient wristband: the patient identifier and the encounter it was printed for."""

    patient_id: str
    encounter_id: str | None  # None only for a GS1 GSRN wristband without a SRIN (8019)
    scheme: str = "healthlink"  # "healthlink" (HLW1) or "gs1-gsrn"
    kind: str = field(default="wristband", init=False)


@dataclass(frozen=True)
class DispenseLabel:
    """The pharmacy's dispensing label: which MedicationRequest this dose was prepared for."""

    medication_request_id: str
    kind: str = field(default="dispense-label", init=False)


Scan = Pack | TraceCode | BloodUnit | Wristband | DispenseLabel


# --------------------------------------------------------------------------- input hygiene


def _text(scan: str | bytes) -> str:
    if isinstance(scan, bytes | bytearray):
        if len(scan) > MAX_SCAN_CHARS * 4:
            raise _invalid(f"scan too long: more than {MAX_SCAN_CHARS} characters")
        try:
            scan = bytes(scan).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _invalid(f"scan is not UTF-8 text (byte {exc.start})") from None
    if not isinstance(scan, str):
        raise _invalid("scan must be text")
    if len(scan) > MAX_SCAN_CHARS:
        raise _invalid(f"scan too long: {len(scan)} characters, at most {MAX_SCAN_CHARS}")
    # keyboard-wedge scanners end with CR/LF; spaces never belong to any format here
    scan = scan.strip(" \t\r\n")
    if not scan:
        raise _invalid(f"empty scan; accepted: {ACCEPTED}")
    return scan


_AIM = re.compile(r"\][A-Za-z][0-9A-Za-z]")
GS1_SYMBOLOGIES = {"]C1": "GS1-128", "]d2": "GS1 DataMatrix", "]Q3": "GS1 QR Code",
                   "]e0": "GS1 DataBar", "]J1": "GS1 DotCode"}
EAN_SYMBOLOGIES = {"]E0": 13, "]E4": 8, "]I1": 14}


def split_symbology(scan: str) -> tuple[str | None, str]:
    """Split an AIM symbology identifier (ISO/IEC 15424, ``]`` + 2 characters) off a scan."""
    if scan.startswith("]"):
        if not _AIM.match(scan):
            raise _invalid(f"scan starts with ']' but {scan[:3]!r} is not a symbology identifier")
        return scan[:3], scan[3:]
    return None, scan


def _printable(s: str, limit: int = 40) -> str:
    shown = s if len(s) <= limit else s[:limit] + "…"
    return repr(shown.replace(GS, "<GS>"))


# --------------------------------------------------------------------------- GS1


_AI = _GS1_APPLICATION_IDENTIFIERS
STRICT_AIS = frozenset({"01", "10", "11", "17", "21", "7003", "8018", "8019"})
NHRN_AIS = frozenset({"710", "711", "712", "713", "714", "715"})
_CSET82 = frozenset("!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")
_COMPONENT = re.compile(r"([NX])(\.\.)?(\d+)")


def _length(ai: str) -> tuple[int, int]:
    """(min, max) data length of an AI from biip's format text, e.g. 'N2+X..20' -> (1, 20)."""
    fmt = _AI[ai].format.split("+", 1)[1]
    lo = hi = 0
    optional = False
    for part in re.split(r"(\[|\])", fmt):
        if part == "[":
            optional = True
            continue
        if part == "]":
            optional = False
            continue
        for _kind, var, n in _COMPONENT.findall(part):
            hi += int(n)
            if not optional:
                lo += 1 if var else int(n)
    return lo, hi


def gs1_check_digit(digits: str) -> int:
    """The GS1 mod-10 check digit of a digit string (without its check digit)."""
    if not digits.isascii() or not digits.isdigit():
        raise _invalid(f"{_printable(digits)} is not a digit string")
    return gs1_standard_check_digit(digits)


def _gs1_date(raw: str, ai: str, today: date) -> date:
    """YYMMDD per GS1 General Specifications §7.12; day 00 = last day of the month."""
    if len(raw) != 6 or not raw.isascii() or not raw.isdigit():
        raise _invalid(f"AI ({ai}) date {raw!r} is not YYMMDD", f"gs1.{ai}")
    yy, mm, dd = int(raw[:2]), int(raw[2:4]), int(raw[4:])
    century = today.year - today.year % 100
    diff = yy - today.year % 100
    year = century - 100 + yy if 51 <= diff <= 99 else century + 100 + yy if -99 <= diff <= -50 else century + yy
    if not 1 <= mm <= 12:
        raise _invalid(f"AI ({ai}) date {raw!r}: month {raw[2:4]} does not exist", f"gs1.{ai}")
    last = calendar.monthrange(year, mm)[1]
    if dd == 0:
        dd = last
    if dd > last:
        raise _invalid(f"AI ({ai}) date {raw!r}: day {raw[4:]} does not exist in {year}-{mm:02d}", f"gs1.{ai}")
    return date(year, mm, dd)


def _ai_at(rest: str) -> str | None:
    for n in (2, 3, 4):
        if rest[:n] in _AI:
            return rest[:n]
    return None


def _element(ai: str, value: str, *, strict: bool, warnings: list[str]) -> tuple[str, str]:
    """Validate one element with biip; lenient fallback for AIs the bedside does not use."""
    if not value.isascii():  # biip's patterns use \d, which also matches non-ASCII digits
        raise _invalid(_reason(ai, value, ValueError("not ASCII")), f"gs1.{ai}")
    try:
        es = GS1ElementString.parse(ai + value)  # the whole value must match the AI's pattern
        if ai in ("01", "02", "03") and es.gtin is None:
            raise ParseError(es.gtin_error or "not a GTIN")
        if es.sscc_error or es.gln_error:  # SSCC (00) and GLN (41x) check digits
            raise ParseError(es.sscc_error or es.gln_error or "")
        return ai, es.value
    except (ParseError, ValueError, ArithmeticError) as exc:
        reason = _reason(ai, value, exc)
        if strict or ai in STRICT_AIS:
            raise _invalid(reason, f"gs1.{ai}") from None
        lo, hi = _length(ai)
        if _AI[ai].separator_required:
            lo = 1  # variable length: any length up to the maximum is kept raw
        if not lo <= len(value) <= hi or not set(value) <= _CSET82:
            raise _invalid(reason, f"gs1.{ai}") from None
        warnings.append(f"AI ({ai}) value {value!r} does not match its GS1 format {_AI[ai].format}; kept raw, not used")
        return ai, value


def _reason(ai: str, value: str, exc: Exception) -> str:
    title = _AI[ai].data_title
    if ai in ("01", "02", "03"):
        if len(value) != 14 or not value.isascii() or not value.isdigit():
            return f"GTIN (01) must be 14 digits, got {_printable(value)}"
        expected = gs1_standard_check_digit(value[:13])
        return f"GTIN (01) {value}: check digit is {value[13]}, expected {expected}"
    if isinstance(exc, ParseError) and ("check digit" in str(exc).lower() or "checksum" in str(exc).lower()):
        return f"AI ({ai}) {title}: {value} has a wrong check digit"
    if bad := sorted({c for c in value if c not in _CSET82}):
        return f"AI ({ai}) {title}: illegal character(s) {''.join(bad)!r} in {_printable(value)}"
    lo, hi = _length(ai)
    if not lo <= len(value) <= hi:
        return f"AI ({ai}) {title}: {len(value)} characters, expected {lo}-{hi}" if lo != hi else (
            f"AI ({ai}) {title}: {len(value)} characters, expected {hi}")
    return f"AI ({ai}) {title}: {_printable(value)} does not match format {_AI[ai].format}"


def _tokenise(data: str, *, strict: bool, warnings: list[str]) -> list[tuple[str, str]]:
    """Split raw element strings (GS-separated) into (AI, value) pairs."""
    out: list[tuple[str, str]] = []
    rest = data.lstrip(GS)  # a leading GS is a transmitted FNC1 in first position
    while rest:
        ai = _ai_at(rest)
        if ai is None:
            msg = f"no GS1 Application Identifier at {_printable(rest)}"
            if not out:
                msg += "; a GS1 scan starts with an AI such as (01)"
            raise _invalid(msg)
        body = rest[len(ai):]
        lo, hi = _length(ai)
        if _AI[ai].separator_required:
            chunk = body.split(GS, 1)[0]
            # a fixed-length AI that GS1 still ends with FNC1 (e.g. 402, 8001): take its length
            value = chunk[:hi] if lo == hi else chunk
        else:
            value = body[:hi]
            if len(value) < hi:
                raise _invalid(f"AI ({ai}) {_AI[ai].data_title} truncated: {len(value)} of {hi} characters",
                               f"gs1.{ai}")
        if _AI[ai].separator_required and len(value) > hi:
            raise _invalid(f"AI ({ai}) {_AI[ai].data_title}: {len(value)} characters, at most {hi} "
                           "(too long, or a GS separator is missing)", f"gs1.{ai}")
        if not value:
            raise _invalid(f"AI ({ai}) {_AI[ai].data_title} has no value", f"gs1.{ai}")
        out.append(_element(ai, value, strict=strict, warnings=warnings))
        rest = body[len(value):].lstrip(GS)
    return out


_HRI_AI = re.compile(r"\((\d{2,4})\)")


def _tokenise_hri(text: str, *, strict: bool, warnings: list[str]) -> list[tuple[str, str]]:
    """'(01)…(10)…' -> pairs; '\\(' is a literal bracket inside a value."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        m = _HRI_AI.match(text, i)
        if not m:
            raise _invalid(f"human-readable GS1 text must continue with '(AI)', found {_printable(text[i:])}")
        ai = m.group(1)
        if ai not in _AI:
            raise _invalid(f"unknown GS1 Application Identifier ({ai})", f"gs1.{ai}")
        j = m.end()
        value = []
        while j < len(text) and text[j] != "(":
            if text[j] == "\\" and j + 1 < len(text) and text[j + 1] == "(":
                value.append("(")
                j += 2
                continue
            value.append(text[j])
            j += 1
        v = "".join(value)
        if not v:
            raise _invalid(f"AI ({ai}) {_AI[ai].data_title} has no value", f"gs1.{ai}")
        out.append(_element(ai, v, strict=strict, warnings=warnings))
        i = j
    return out


def _gs1_read(text: str, *, strict: bool, today: date) -> tuple[str | None, list[tuple[str, str]], list[str]]:
    aim, data = split_symbology(text)
    warnings: list[str] = []
    if aim is not None and aim in EAN_SYMBOLOGIES:
        return aim, _ean(aim, data, warnings), warnings
    if aim is not None and aim not in GS1_SYMBOLOGIES:
        raise _invalid(f"symbology {aim} carries no GS1 data (no FNC1 in first position): not a GS1 pack code")
    if aim == "]C1":  # several GS1-128 symbols read as one scan: each keeps its ]C1
        data = data.replace("]C1", GS)
    if data.startswith("("):  # typed from the pack; printed HRI often has spaces between groups
        return aim, _tokenise_hri("".join(data.split()), strict=strict, warnings=warnings), warnings
    if not data.strip(GS):
        raise _invalid("GS1 scan has no data" + (f" after its symbology identifier {aim}" if aim else ""))
    return aim, _tokenise(data, strict=strict, warnings=warnings), warnings


def _distinct(pairs: list[tuple[str, str]]) -> dict[str, str]:
    seen: dict[str, str] = {}
    for ai, value in pairs:
        if ai in seen and seen[ai] != value:
            raise _invalid(f"AI ({ai}) appears twice with different values {seen[ai]!r} and {value!r}", f"gs1.{ai}")
        seen[ai] = value
    return seen


def parse_gs1(
    scan: str | bytes,
    *,
    require_gtin: bool = True,
    strict: bool = False,
    today: date | None = None,
) -> Pack:
    """Parse GS1 element strings (raw, AIM-prefixed, concatenated GS1-128 or '(01)…' text).

    ``require_gtin=False`` accepts element strings without a GTIN (``Pack.gtin`` is then None);
    ``strict=True`` refuses every AI whose value breaks its GS1 format, not only the AIs used at
    the bedside; ``today`` fixes the date that resolves two-digit years (GS1 GenSpecs §7.12).
    """
    text = _text(scan)
    today = today or datetime.now(UTC).date()
    aim, pairs, warnings = _gs1_read(text, strict=strict, today=today)
    seen = _distinct(pairs)
    if require_gtin and "01" not in seen and "8018" in seen:
        raise _invalid("this is a GS1 patient wristband (GSRN, AI 8018), not a medicine pack", "gs1.8018")
    return _pack(pairs, seen, aim=aim, require_gtin=require_gtin, today=today, warnings=warnings)


def _ean(aim: str, data: str, warnings: list[str]) -> list[tuple[str, str]]:
    primary, _, composite = data.partition("|")
    n = EAN_SYMBOLOGIES[aim]
    name = {13: "EAN-13", 8: "EAN-8", 14: "ITF-14"}[n]
    if len(primary) != n or not primary.isascii() or not primary.isdigit():
        raise _invalid(f"{name} must be {n} digits, got {_printable(primary)}")
    if gs1_standard_check_digit(primary[:-1]) != int(primary[-1]):
        raise _invalid(f"{name} {primary}: check digit is {primary[-1]}, expected "
                       f"{gs1_standard_check_digit(primary[:-1])}")
    pairs = [("01", primary.zfill(14))]
    if composite:
        if not composite.startswith("]e0"):
            raise _invalid("the composite component after '|' must start with ]e0")
        pairs += _tokenise(composite[3:], strict=False, warnings=warnings)
    return pairs


def _pack(pairs: list[tuple[str, str]], seen: dict[str, str], *, aim: str | None, require_gtin: bool,
          today: date, warnings: list[str]) -> Pack:
    gtin = seen.get("01")
    if gtin is None and require_gtin:
        raise _invalid("GS1 scan has no GTIN (01): cannot identify the medicine"
                       + (f" (read AIs {', '.join(seen)})" if seen else ""), "gs1.01")
    expiry = _gs1_date(seen["17"], "17", today) if "17" in seen else None
    expiry_time = None
    if "7003" in seen:
        raw = seen["7003"]
        d7003 = _gs1_date(raw[:6], "7003", today)
        hh, mi = int(raw[6:8]), int(raw[8:10])
        if hh > 23 or mi > 59:
            raise _invalid(f"AI (7003) time {raw[6:]} does not exist", "gs1.7003")
        if expiry is not None and expiry != d7003:
            raise _invalid(f"expiry (17) {expiry} and (7003) {d7003} disagree", "gs1.7003")
        expiry, expiry_time = d7003, time(hh, mi)
    used = {"01", "10", "11", "17", "21", "7003"}
    return Pack(
        gtin=gtin,
        expiry=expiry,
        expiry_raw=seen.get("17") or (seen["7003"][:6] if "7003" in seen else None),
        expiry_time=expiry_time,
        batch=seen.get("10"),
        serial=seen.get("21"),
        production_date=_gs1_date(seen["11"], "11", today) if "11" in seen else None,
        nhrn=tuple((ai, v) for ai, v in pairs if ai in NHRN_AIS),
        other=tuple((ai, v) for ai, v in pairs if ai not in used and ai not in NHRN_AIS),
        elements=tuple(pairs),
        symbology=aim,
        warnings=tuple(warnings),
    )


def _gsrn_wristband(seen: dict[str, str]) -> Wristband:
    gsrn = seen["8018"]
    if len(gsrn) != 18 or not gsrn.isascii() or not gsrn.isdigit():
        raise _invalid(f"GSRN (8018) must be 18 digits, got {_printable(gsrn)}", "gs1.8018")
    if gs1_standard_check_digit(gsrn[:-1]) != int(gsrn[-1]):
        raise _invalid(f"GSRN (8018) {gsrn}: check digit is {gsrn[-1]}, expected "
                       f"{gs1_standard_check_digit(gsrn[:-1])}", "gs1.8018")
    return Wristband(patient_id=gsrn, encounter_id=seen.get("8019"), scheme="gs1-gsrn")


# --------------------------------------------------------------------------- traceability code

_TRACE = re.compile(r"\d{20}")


def parse_trace_code(scan: str | bytes) -> TraceCode:
    """The 20-digit 码上放心 code: 7-digit product code, 9-digit serial, 4 check digits.

    The check digits are not verified: the research notes give no algorithm and none is
    published, so only the length and the digits are validated.
    """
    text = _text(scan)
    aim, code = split_symbology(text)
    if aim is not None and aim not in ("]C0", "]I0", "]d1", "]Q1"):
        raise _invalid(f"a traceability code is plain Code 128; symbology {aim} is not")
    if not (code.isascii() and _TRACE.fullmatch(code)):
        raise _invalid(f"a drug traceability code is 20 digits, got {_printable(code)}", "trace-code")
    return TraceCode(code=code, product_code=code[:7], serial=code[7:16], check=code[16:])


# --------------------------------------------------------------------------- ISBT 128

_MOD37 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"


def iso7064_mod37_2(chars: str) -> int:
    """ISO/IEC 7064 MOD 37-2 check value (0-36) of ``chars`` (0-9, A-Z)."""
    p = 0
    for c in chars:
        v = _MOD37.find(c)
        if v < 0 or v == 36:
            raise _invalid(f"{c!r} is not an ISO 7064 mod 37-2 character", "isbt128")
        p = (p + v) * 2 % 37
    return (38 - p) % 37


def din_check_character(din: str) -> str:
    """The keyboard-entry check character K of a 13-character donation identification number."""
    if len(din) != 13:
        raise _invalid(f"a donation identification number has 13 characters, got {len(din)}", "isbt128.001")
    return _MOD37[iso7064_mod37_2(din)]


_DIN_FIRST = frozenset("ABCDEFGHIJKLMNPQRSTUVWXYZ123456789")
_DIN = re.compile(r"[A-NP-Z1-9]\d{4}\d{2}\d{6}")
_DIN_KEYED = re.compile(r"([A-NP-Z1-9]\d{4}) ?(\d{2}) ?(\d{6}) ?([0-9A-Z*])")
# ST-001 Table 4 [RT005]: ABO/RhD codes of data structure 002 (blood components)
BLOOD_GROUPS: dict[str, tuple[str, str | None]] = {
    "95": ("O", "negative"), "51": ("O", "positive"), "06": ("A", "negative"), "62": ("A", "positive"),
    "17": ("B", "negative"), "73": ("B", "positive"), "28": ("AB", "negative"), "84": ("AB", "positive"),
    "55": ("O", None), "66": ("A", None), "77": ("B", None), "88": ("AB", None),
}
# fixed-length data structures: data identifier -> (number, content length)
_ISBT_FIXED: dict[str, tuple[str, int]] = {
    "=%": ("002", 4), "=<": ("003", 8), "=>": ("004", 6), "&>": ("005", 10),
    "=*": ("006", 6), "&*": ("007", 10), "=}": ("008", 6), "&}": ("009", 10),
    "=,": ("032", 6), "=+": ("023", 5),
}


def _julian(content: str, number: str) -> tuple[date, time | None]:
    if not content.isascii() or not content.isdigit():
        raise _invalid(f"ISBT 128 data structure {number}: {content!r} is not cyyjjj[hhmm]", f"isbt128.{number}")
    year = 2000 + 100 * int(content[0]) + int(content[1:3])
    day = int(content[3:6])
    if not 1 <= day <= (366 if calendar.isleap(year) else 365):
        raise _invalid(f"ISBT 128 data structure {number}: day {content[3:6]} does not exist in {year}",
                       f"isbt128.{number}")
    d = date.fromordinal(date(year, 1, 1).toordinal() + day - 1)
    if len(content) == 6:
        return d, None
    hh, mi = int(content[6:8]), int(content[8:10])
    if hh > 23 or mi > 59:
        raise _invalid(f"ISBT 128 data structure {number}: time {content[6:]} does not exist", f"isbt128.{number}")
    return d, time(hh, mi)


def parse_blood_unit(scan: str | bytes) -> BloodUnit:
    """Parse ISBT 128 data structures (concatenated, or in a compound message)."""
    text = _text(scan)
    aim, data = split_symbology(text)
    if aim is not None and aim not in ("]C0", "]C4", "]d1", "]Q1"):
        raise _invalid(f"ISBT 128 is carried by Code 128 or a plain 2-D code, not {aim}", "isbt128")
    if keyed := _DIN_KEYED.fullmatch(data):
        din = "".join(keyed.groups()[:3])
        k = din_check_character(din)
        if keyed.group(4) != k:
            raise _invalid(f"donation number {din}: check character is {keyed.group(4)}, expected {k}",
                           "isbt128.001")
        return BloodUnit(din=din, din_check_character=k, structures=(("=", din),))
    structures: list[tuple[str, str]] = []
    fields: dict[str, object] = {}
    compound: int | None = None
    i = 0
    while i < len(data):
        if data[i] not in "=&":
            raise _invalid(f"ISBT 128 data structure must start with '=' or '&', found {_printable(data[i:])}",
                           "isbt128")
        di = data[i:i + 2]
        if len(di) == 2 and di[0] == "=" and di[1] in _DIN_FIRST:
            content = data[i + 1:i + 16]
            if len(content) < 15:
                raise _invalid("ISBT 128 donation identification number (001) truncated", "isbt128.001")
            din, ff = content[:13], content[13:]
            if not _DIN.fullmatch(din):
                raise _invalid(f"ISBT 128 donation identification number {din!r} is not "
                               "facility (letter + 4 digits), year (2 digits), sequence (6 digits)", "isbt128.001")
            if not ff.isascii() or not ff.isalnum():
                raise _invalid(f"donation number {din}: flag characters {ff!r} are not alphanumeric", "isbt128.001")
            if ff.isdigit() and 60 <= int(ff) <= 96 and int(ff) - 60 != iso7064_mod37_2(din):
                raise _invalid(f"donation number {din}: flag {ff} is not its check value "
                               f"{iso7064_mod37_2(din) + 60}", "isbt128.001")
            _put(fields, "001", (din, ff))
            structures.append(("=", content))
            i += 16
            continue
        if di not in _ISBT_FIXED:
            raise _invalid(f"ISBT 128 data identifier {di!r} is not supported (001-009, 023, 032 are)",
                           "isbt128")
        number, n = _ISBT_FIXED[di]
        content = data[i + 2:i + 2 + n]
        if len(content) < n:
            raise _invalid(f"ISBT 128 data structure {number} truncated: {len(content)} of {n} characters",
                           f"isbt128.{number}")
        if not content.isascii() or not content.isalnum():
            raise _invalid(f"ISBT 128 data structure {number}: illegal characters in {_printable(content)}",
                           f"isbt128.{number}")
        i += 2 + n
        if number == "023":
            if structures or compound is not None:
                raise _invalid("ISBT 128 compound message header (023) must come first", "isbt128.023")
            if not content.isdigit():
                raise _invalid("ISBT 128 compound message header (023) must be digits", "isbt128.023")
            compound = int(content[:2])
            continue
        _put(fields, number, content)
        structures.append((di, content))
    if compound is not None and compound != len(structures):
        raise _invalid(f"ISBT 128 compound message announces {compound} data structures, has {len(structures)}",
                       "isbt128.023")
    if not structures:
        raise _invalid("ISBT 128 scan holds no data structure", "isbt128")
    return _blood_unit(fields, tuple(structures))


def _put(fields: dict[str, object], number: str, value: object) -> None:
    if number in fields and fields[number] != value:
        raise _invalid(f"ISBT 128 data structure {number} appears twice with different content", f"isbt128.{number}")
    fields[number] = value


def _blood_unit(fields: dict[str, object], structures: tuple[tuple[str, str], ...]) -> BloodUnit:
    out: dict[str, object] = {"structures": structures}
    if "001" in fields:
        din, ff = fields["001"]  # type: ignore[misc]
        out.update(din=din, din_flags=ff, din_check_character=din_check_character(din))
    if "002" in fields:
        gg = str(fields["002"])[:2]
        out["blood_group_code"] = gg
        if gg in BLOOD_GROUPS:
            abo, rhd = BLOOD_GROUPS[gg]
            out.update(abo=abo, rhd=rhd, blood_group=f"{abo} RhD {rhd}" if rhd else f"{abo} (RhD not specified)")
        elif gg == "00":
            out["blood_group"] = "no ABO or RhD information"
    if "003" in fields:
        pc = str(fields["003"])
        if not (pc[0].isalpha() and pc[1:5].isdigit()):
            raise _invalid(f"ISBT 128 product code {pc!r} is not a letter and 4 digits", "isbt128.003")
        out.update(product_code=pc[:5], collection_type=pc[5], division=pc[6:])
    if "004" in fields or "005" in fields:
        d4 = _julian(str(fields["004"]), "004")[0] if "004" in fields else None
        if "005" in fields:
            d5, t5 = _julian(str(fields["005"]), "005")
            if d4 is not None and d4 != d5:
                raise _invalid(f"ISBT 128 expiry dates disagree: {d4} (004) and {d5} (005)", "isbt128.005")
            out.update(expiry=d5, expiry_time=t5)
        else:
            out["expiry"] = d4
    for key, (plain, timed) in {"collected": ("006", "007"), "produced": ("008", "009")}.items():
        if timed in fields:
            d, t = _julian(str(fields[timed]), timed)
            out[key] = datetime.combine(d, t or time())
        elif plain in fields:
            out[key] = _julian(str(fields[plain]), plain)[0]
    if "032" in fields and "division" not in out:
        out["division"] = str(fields["032"])
    return BloodUnit(**out)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- our own labels

WRISTBAND_PREFIX = "HLW1."
DISPENSE_PREFIX = "HLD1."
HEALTH_CODE_PREFIX = "HL1."
_ID = re.compile(r"[A-Za-z0-9\-]{1,64}")  # a FHIR id without '.', which separates the two ids
_ID_DOTTED = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR R4 id


def wristband_payload(patient_id: str, encounter_id: str) -> str:
    """The text to print in a wristband's QR / Code 128: ``HLW1.<patient>.<encounter>``."""
    for name, value in (("patient", patient_id), ("encounter", encounter_id)):
        if not _ID.fullmatch(value or ""):
            raise _invalid(f"{name} id {value!r} cannot go on a wristband: 1-64 of A-Z a-z 0-9 '-' (no '.')",
                           "wristband")
    return f"{WRISTBAND_PREFIX}{patient_id}.{encounter_id}"


def parse_wristband(scan: str | bytes) -> Wristband:
    text = _text(scan)
    _aim, text = split_symbology(text)
    if not text.startswith(WRISTBAND_PREFIX):
        raise _invalid(f"not a HealthLink wristband: expected {WRISTBAND_PREFIX}<patient>.<encounter>", "wristband")
    parts = text[len(WRISTBAND_PREFIX):].split(".")
    if len(parts) != 2 or not all(_ID.fullmatch(p) for p in parts):
        raise _invalid("wristband must be HLW1.<patient id>.<encounter id>, each 1-64 of A-Z a-z 0-9 '-'",
                       "wristband")
    return Wristband(patient_id=parts[0], encounter_id=parts[1])


def dispense_label_payload(medication_request_id: str) -> str:
    """The text on a dispensing label: ``HLD1.<MedicationRequest id>``."""
    if not _ID_DOTTED.fullmatch(medication_request_id or ""):
        raise _invalid(f"MedicationRequest id {medication_request_id!r} is not a FHIR id", "dispense-label")
    return DISPENSE_PREFIX + medication_request_id


def parse_dispense_label(scan: str | bytes) -> DispenseLabel:
    text = _text(scan)
    _aim, text = split_symbology(text)
    if not text.startswith(DISPENSE_PREFIX):
        raise _invalid(f"not a HealthLink dispensing label: expected {DISPENSE_PREFIX}<MedicationRequest id>",
                       "dispense-label")
    rid = text[len(DISPENSE_PREFIX):]
    if not _ID_DOTTED.fullmatch(rid):
        raise _invalid("dispensing label must be HLD1.<MedicationRequest id> (1-64 of A-Z a-z 0-9 '-' '.')",
                       "dispense-label")
    return DispenseLabel(medication_request_id=rid)


TUBE_PREFIX = "HLT1."


def tube_label_payload(service_request_id: str) -> str:
    """The text on a specimen tube label printed for a lab order: ``HLT1.<ServiceRequest id>``
    (bedside specimen collection, healthlink.medsafety.bedside)."""
    if not _ID_DOTTED.fullmatch(service_request_id or ""):
        raise _invalid(f"ServiceRequest id {service_request_id!r} is not a FHIR id", "tube-label")
    return TUBE_PREFIX + service_request_id


def parse_tube_label(scan: str | bytes) -> str:
    """The ServiceRequest id of a specimen tube label ``HLT1.<ServiceRequest id>``."""
    text = _text(scan)
    _aim, text = split_symbology(text)
    if not text.startswith(TUBE_PREFIX):
        raise _invalid(f"not a HealthLink tube label: expected {TUBE_PREFIX}<ServiceRequest id>", "tube-label")
    rid = text[len(TUBE_PREFIX):]
    if not _ID_DOTTED.fullmatch(rid):
        raise _invalid("tube label must be HLT1.<ServiceRequest id> (1-64 of A-Z a-z 0-9 '-' '.')", "tube-label")
    return rid


# --------------------------------------------------------------------------- detection


def parse_scan(scan: str | bytes, *, today: date | None = None) -> Scan:
    """Detect what a bedside scan is and parse it; anything else is :class:`Invalid`."""
    text = _text(scan)
    aim, data = split_symbology(text)
    if data.startswith(WRISTBAND_PREFIX):
        return parse_wristband(data)
    if data.startswith(DISPENSE_PREFIX):
        return parse_dispense_label(data)
    if data.startswith(HEALTH_CODE_PREFIX) or re.match(r"HL\d+\.", data):
        raise _invalid("this is an electronic health code (identifies a person, not a stay): "
                       "scan the patient's wristband at the bedside")
    if aim in GS1_SYMBOLOGIES or aim in EAN_SYMBOLOGIES or (aim is None and data[:1] in ("(", GS)):
        return _gs1_or_wristband(text, today)
    if data[:1] in ("=", "&") or (aim in (None, "]C0", "]C4") and _DIN_KEYED.fullmatch(data)):
        return parse_blood_unit(text)
    if data.isascii() and data.isdigit():
        if len(data) == 20:
            return parse_trace_code(text)
        if aim is None and len(data) in (8, 12, 13, 14):
            if gs1_standard_check_digit(data[:-1]) != int(data[-1]):
                raise _invalid(f"GTIN {data}: check digit is {data[-1]}, expected "
                               f"{gs1_standard_check_digit(data[:-1])}")
            gtin = data.zfill(14)
            return Pack(gtin=gtin, elements=(("01", gtin),))
    if aim is None and _ai_at(data) is not None:
        return _gs1_or_wristband(text, today)
    shown = f"{aim} " if aim else ""
    raise _invalid(f"unrecognised scan {shown}{_printable(data)}; accepted: {ACCEPTED}")


def _gs1_or_wristband(text: str, today: date | None) -> Pack | Wristband:
    today = today or datetime.now(UTC).date()
    aim, pairs, warnings = _gs1_read(text, strict=False, today=today)
    seen = _distinct(pairs)
    if "8018" in seen and "01" not in seen:
        return _gsrn_wristband(seen)
    return _pack(pairs, seen, aim=aim, require_gtin=True, today=today, warnings=warnings)
