"""Data-quality rules applied to every uploaded record (after the R4 structure check).

Each rule returns a :class:`Finding` (reason code, element path, message) or nothing.
Reason codes are listed in docs/ingest.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from healthlink.fhir.identifiers import RESIDENT_ID_SYSTEM, resident_id_valid
from healthlink.fhir.validation import check_resource

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"

# UCUM units accepted for common LOINC codes (the code's property: mass or substance
# concentration, count, ratio ...).  Codes not listed are not checked.
LOINC_UNITS: dict[str, frozenset[str]] = {k: frozenset(v) for k, v in {
    "718-7": ("g/dL", "g/L", "mmol/L"),  # haemoglobin
    "6690-2": ("10*3/uL", "10*9/L", "/uL"),  # leukocytes
    "777-3": ("10*3/uL", "10*9/L", "/uL"),  # platelets
    "789-8": ("10*6/uL", "10*12/L"),  # erythrocytes
    "2345-7": ("mg/dL", "mmol/L"),  # glucose
    "2339-0": ("mg/dL", "mmol/L"),  # glucose (blood)
    "4548-4": ("%", "mmol/mol"),  # HbA1c
    "2160-0": ("mg/dL", "umol/L"),  # creatinine
    "3094-0": ("mg/dL", "mmol/L"),  # urea nitrogen
    "2093-3": ("mg/dL", "mmol/L"),  # cholesterol
    "2571-8": ("mg/dL", "mmol/L"),  # triglyceride
    "2085-9": ("mg/dL", "mmol/L"),  # HDL
    "18262-6": ("mg/dL", "mmol/L"),  # LDL
    "2823-3": ("mmol/L", "meq/L", "m[eq]/L"),  # potassium
    "2951-2": ("mmol/L", "meq/L", "m[eq]/L"),  # sodium
    "1742-6": ("U/L",),  # ALT
    "1920-8": ("U/L",),  # AST
    "8867-4": ("/min", "{beats}/min"),  # heart rate
    "8480-6": ("mm[Hg]",),  # systolic blood pressure
    "8462-4": ("mm[Hg]",),  # diastolic blood pressure
    "29463-7": ("kg", "g", "[lb_av]"),  # body weight
    "8302-2": ("cm", "m", "[in_i]"),  # body height
    "39156-5": ("kg/m2",),  # BMI
    "8310-5": ("Cel", "[degF]"),  # body temperature
}.items()}

# Elements that record something that has happened: a value after tomorrow (UTC, so any
# time zone's today passes) is an error.  Planned dates (Period.end of a CarePlan, due
# dates) are not listed.
PAST_ELEMENTS = ("birthDate", "deceasedDateTime", "effectiveDateTime", "effectiveInstant", "issued",
                 "authoredOn", "recordedDate", "onsetDateTime", "abatementDateTime",
                 "performedDateTime", "occurrenceDateTime", "recorded", "assertedDate")


@dataclass(frozen=True)
class Finding:
    reason: str
    path: str | None
    message: str


def check_structure(res: dict) -> Finding | None:
    issues = check_resource(res)
    if not issues:
        return None
    i = issues[0]
    return Finding("structure", i.expression[0] if i.expression else None,
                   f"{len(issues)} R4 schema error(s): {i.diagnostics}")


def check_resident_id(res: dict) -> Finding | None:
    if res.get("resourceType") != "Patient":
        return None
    for n, ident in enumerate(res.get("identifier") or []):
        if ident.get("system") == RESIDENT_ID_SYSTEM and not resident_id_valid(str(ident.get("value", ""))):
            return Finding("resident-id", f"Patient.identifier[{n}].value",
                           f"resident ID {ident.get('value')!r} fails the GB 11643 check digit")
    return None


def check_dates(res: dict, *, today: date | None = None) -> Finding | None:
    limit = ((today or date.today()) + timedelta(days=1)).isoformat()
    rt = res["resourceType"]
    for name in PAST_ELEMENTS:
        v = res.get(name)
        if isinstance(v, str) and len(v) >= 4:
            d = v[:10]
            if d > limit[:len(d)]:
                return Finding("future-date", f"{rt}.{name}", f"{rt}.{name} {v} is in the future")
    return None


def _quantity_unit(q: dict) -> str | None:
    if q.get("system") in (None, UCUM) and q.get("code"):
        return q["code"]
    return q.get("unit") if q.get("system") is None else None


def _loinc_codes(cc: object) -> list[str]:
    if not isinstance(cc, dict):
        return []
    return [c.get("code") for c in cc.get("coding") or [] if isinstance(c, dict) and c.get("system") == LOINC]


def check_units(res: dict) -> Finding | None:
    if res.get("resourceType") != "Observation":
        return None
    parts = [("Observation", res)] + [(f"Observation.component[{i}]", c)
                                      for i, c in enumerate(res.get("component") or []) if isinstance(c, dict)]
    for path, part in parts:
        q = part.get("valueQuantity")
        if not isinstance(q, dict):
            continue
        unit = _quantity_unit(q)
        for code in _loinc_codes(part.get("code")):
            allowed = LOINC_UNITS.get(code)
            if allowed and unit is not None and unit not in allowed:
                return Finding("unit", f"{path}.valueQuantity.code",
                               f"unit {unit!r} does not fit LOINC {code} (expected one of "
                               f"{', '.join(sorted(allowed))})")
    return None


RULES = (check_structure, check_resident_id, check_dates, check_units)


def first_finding(res: dict) -> Finding | None:
    for rule in RULES:
        f = rule(res)
        if f is not None:
            return f
    return None
