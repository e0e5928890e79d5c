"""A FHIR Patient as the flat record the matcher compares.

Only what identifies a person is kept: the name (characters, pinyin key, variant key),
birth date, sex, resident ID (and whether its check character is valid), phone, county
and address.  Missing values are ``None`` — never an empty string — so that every
comparison sees them as missing (its null level) rather than as a disagreement.
"""

from __future__ import annotations

import re
from typing import TypedDict

from healthlink.empi.ids import normalise_resident_id, resident_id_valid
from healthlink.empi.names import has_chinese, normalise_name, pinyin_key, variant_key
from healthlink.fhir.identifiers import RESIDENT_ID_SYSTEM

_FULL_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NON_DIGIT = re.compile(r"\D+")


class FlatRecord(TypedDict):
    record_id: str
    institution: str | None
    name: str | None
    name_pinyin: str | None
    name_key: str | None
    birth_date: str | None
    sex: str | None
    resident_id: str | None
    resident_id_valid: bool
    phone: str | None
    county: str | None
    address: str | None


COLUMNS = tuple(FlatRecord.__annotations__)


def _name(patient: dict) -> str | None:
    """The name in characters if any HumanName has them, else the first name given."""
    written: list[str] = []
    for hn in patient.get("name") or []:
        text = hn.get("text") or (hn.get("family") or "") + "".join(hn.get("given") or [])
        if text:
            written.append(text)
    for text in written:
        if has_chinese(text):
            return normalise_name(text)
    return normalise_name(written[0]) if written else None


def _resident_id(patient: dict) -> str | None:
    for ident in patient.get("identifier") or []:
        if ident.get("system") == RESIDENT_ID_SYSTEM:
            return normalise_resident_id(ident.get("value"))
    return None


def normalise_phone(value: str | None) -> str | None:
    """Digits only; the country code 86 in front of an 11-digit mobile number dropped."""
    digits = _NON_DIGIT.sub("", value or "")
    if len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    return digits or None


def _phone(patient: dict) -> str | None:
    phones = [t for t in patient.get("telecom") or [] if t.get("system") == "phone" and t.get("value")]
    phones.sort(key=lambda t: t.get("use") != "mobile")  # a mobile number first
    return normalise_phone(phones[0]["value"]) if phones else None


def _address(patient: dict) -> tuple[str | None, str | None]:
    addresses = patient.get("address") or []
    if not addresses:
        return None, None
    a = next((x for x in addresses if x.get("use") == "home"), addresses[0])
    text = a.get("text") or "".join(
        [a.get("state") or "", a.get("city") or "", a.get("district") or "", *(a.get("line") or [])])
    return a.get("district") or None, normalise_name(text)


def flat_record(patient: dict) -> FlatRecord:
    """The flat record of one Patient resource (FHIR R4 JSON)."""
    name = _name(patient)
    rid = _resident_id(patient)
    birth = patient.get("birthDate")
    sex = patient.get("gender")
    county, address = _address(patient)
    org = (patient.get("managingOrganization") or {}).get("reference") or ""
    return FlatRecord(
        record_id=str(patient["id"]),
        institution=org.removeprefix("Organization/") or None,
        name=name,
        name_pinyin=pinyin_key(name) if name else None,
        name_key=variant_key(name) if name else None,
        birth_date=birth if isinstance(birth, str) and _FULL_DATE.match(birth) else None,
        sex=sex if sex in ("male", "female") else None,
        resident_id=rid,
        resident_id_valid=bool(rid) and resident_id_valid(rid),
        phone=_phone(patient),
        county=county,
        address=address,
    )
