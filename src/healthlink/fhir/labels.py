"""Labels every stored resource carries: one data class and a set of sensitive categories.

They exist for consent (issue 5).  A doctor's grant to see another institution's records
names the *data classes* the patient authorises (``laboratory``, ``medications`` …); a
resource is visible under the grant only if its class is one of them.  Resources in a
*sensitive category* (mental health, HIV and other sexually transmitted infections,
reproductive health, substance use, genetics) stay hidden unless the patient names that
category explicitly as well.

The labels are computed here, at write time, from the resource alone (no database, no
references followed): :func:`data_class` from the resource type, refined by category for
Observation and DiagnosticReport; :func:`sensitive_categories` from ``meta.security``
(HL7 v3 ActCode sensitivity labels) and from the codes the resource states about itself
(code, category, value, medication, reason, report conclusion, claim diagnosis, contained
resources).  The code lists, each with its source and version, are in ``data/labels.json``.

The labels are always computed and stored in full.  Which sensitive categories are
*active* is a setting applied at query time by the access layer; switching a category off
there makes it behave like an ordinary one without relabelling anything, and switching it
back on needs no re-ingest either.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import orjson

DATA_CLASSES = ("demographics", "encounters", "laboratory", "imaging", "medications", "allergies",
                "conditions", "procedures", "documents", "other")
SENSITIVE = ("mental-health", "hiv-sti", "reproductive-health", "substance-use", "genetics")

DATA_FILE = Path(__file__).parent / "data" / "labels.json"

_BY_TYPE = {
    **dict.fromkeys(("Patient", "Person", "RelatedPerson", "Coverage"), "demographics"),
    **dict.fromkeys(("Encounter", "EpisodeOfCare", "Appointment"), "encounters"),
    **dict.fromkeys(("ImagingStudy", "Media"), "imaging"),
    "Specimen": "laboratory",
    **dict.fromkeys(("MedicationRequest", "MedicationStatement", "MedicationDispense",
                     "MedicationAdministration", "Immunization"), "medications"),
    "AllergyIntolerance": "allergies",
    "Condition": "conditions",
    **dict.fromkeys(("Procedure", "ServiceRequest", "CarePlan"), "procedures"),
    **dict.fromkeys(("DocumentReference", "Composition"), "documents"),
}

OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"  # HL7 v2 table 0074, diagnostic service section
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"

# DiagnosticReport.category (R4 example binding: v2-0074; US Core adds LOINC LP parts).
_REPORT_CATEGORY = {
    V2_0074: {
        **dict.fromkeys(("LAB", "BG", "BLB", "CH", "CP", "GE", "HM", "IMM", "MB", "MCB", "MYC", "OSL",
                         "PAT", "SP", "SR", "TX", "URN", "VR"), "laboratory"),
        # "MR" is not in table 0074 but some senders use it for magnetic resonance
        **dict.fromkeys(("RAD", "CT", "MR", "NMR", "NMS", "RUS", "OUS", "CUS", "VUS", "RX", "XRC"), "imaging"),
        **dict.fromkeys(("AU", "CTH", "EC", "EN", "ICU", "NRS", "OT", "OTH", "PF", "PHR", "PHY", "PT",
                         "RC", "RT"), "other"),
    },
    LOINC: {"LP29684-5": "imaging", "LP7839-6": "laboratory", "LP29708-2": "other"},  # radiology, pathology, cardiology
    SNOMED: {"394914008": "imaging", "108252007": "laboratory"},  # radiology; laboratory procedure
}

# Elements holding a CodeableConcept (or a list of them) that say what the resource is about.
_CODE_FIELDS = ("code", "category", "valueCodeableConcept", "medicationCodeableConcept", "reasonCode",
                "conclusionCode")
_EMPTY: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Tables:
    security: dict[tuple[str, str], str]  # (system, code) -> category
    exact: dict[str, dict[str, frozenset[str]]]  # system URI -> code -> categories
    ranges: dict[str, tuple[tuple[str, str, int, str], ...]]  # system URI -> (from, to, length, category)


def normalise_code(code: str) -> str:
    """ICD-10 form used for range comparison: no dots or spaces, upper case (``f32.1`` -> ``F321``)."""
    return code.replace(".", "").replace(" ", "").upper()


@cache
def code_lists() -> dict:
    """The parsed data file (code lists with source and version), read once."""
    return orjson.loads(DATA_FILE.read_bytes())


@cache
def _tables() -> _Tables:
    data = code_lists()
    sec = data["security_labels"]
    security = {(system, code): cat for system in sec["systems"] for code, (cat, _display) in sec["codes"].items()}
    exact: dict[str, dict[str, set[str]]] = {}
    ranges: dict[str, list[tuple[str, str, int, str]]] = {}
    for lst in data["lists"]:
        cat = lst["category"]
        if cat not in SENSITIVE:
            raise ValueError(f"labels.json: unknown category {cat!r}")
        for uri in data["systems"][lst["system"]]:
            for code in lst.get("codes", ()):
                exact.setdefault(uri, {}).setdefault(code, set()).add(cat)
            for r in lst.get("ranges", ()):
                lo, hi = normalise_code(r["from"]), normalise_code(r["to"])
                if len(lo) != len(hi) or lo > hi:
                    raise ValueError(f"labels.json: bad range {r['from']}-{r['to']}")
                ranges.setdefault(uri, []).append((lo, hi, len(lo), cat))
    return _Tables(security=security,
                   exact={u: {c: frozenset(s) for c, s in m.items()} for u, m in exact.items()},
                   ranges={u: tuple(v) for u, v in ranges.items()})


def data_class(resource: dict) -> str:
    """The one data class (of :data:`DATA_CLASSES`) a resource belongs to."""
    rtype = resource.get("resourceType")
    if rtype == "Observation":
        return _observation_class(resource)
    if rtype == "DiagnosticReport":
        return _report_class(resource)
    return _BY_TYPE.get(rtype, "other")


def _codings(value: object) -> list:
    """Codings of a CodeableConcept or of a list of them (anything else yields none)."""
    if isinstance(value, dict):
        return value.get("coding") or []
    if isinstance(value, list):
        return [c for cc in value if isinstance(cc, dict) for c in cc.get("coding") or ()]
    return []


def _observation_class(obs: dict) -> str:
    # R4 observation-category: only laboratory and imaging have classes of their own;
    # vital-signs, survey, social-history, exam … are "other".
    codes = {c.get("code") for c in _codings(obs.get("category"))
             if isinstance(c, dict) and c.get("system", OBSERVATION_CATEGORY) == OBSERVATION_CATEGORY}
    if "laboratory" in codes:
        return "laboratory"
    return "imaging" if "imaging" in codes else "other"


def _report_class(report: dict) -> str:
    found = set()
    for c in _codings(report.get("category")):
        if isinstance(c, dict) and (cls := _REPORT_CATEGORY.get(c.get("system"), {}).get(c.get("code"))):
            found.add(cls)
    for cls in ("laboratory", "imaging", "other"):
        if cls in found:
            return cls
    # no recognised category: a report that points at an ImagingStudy is imaging, else a lab report
    return "imaging" if report.get("imagingStudy") else "laboratory"


def sensitive_categories(resource: dict) -> frozenset[str]:
    """The sensitive categories (a subset of :data:`SENSITIVE`) a resource falls in."""
    t = _tables()
    found: set[str] | None = None
    meta = resource.get("meta")
    if meta and (labels := meta.get("security")):
        for label in labels:
            if isinstance(label, dict) and (cat := t.security.get((label.get("system"), label.get("code")))):
                found = found or set()
                found.add(cat)
    codings: list = []
    for field in _CODE_FIELDS:
        if (value := resource.get(field)) is not None:
            codings += _codings(value)
    for part in resource.get("component") or ():  # Observation.component[].code / value
        if isinstance(part, dict):
            codings += _codings(part.get("code")) + _codings(part.get("valueCodeableConcept"))
    for dx in resource.get("diagnosis") or ():  # Claim / ExplanationOfBenefit diagnosis codes
        if isinstance(dx, dict):
            codings += _codings(dx.get("diagnosisCodeableConcept"))
    for coding in codings:
        if isinstance(coding, dict) and (cats := _match(t, coding)):
            found = found or set()
            found |= cats
    for inner in resource.get("contained") or ():  # a contained Medication labels its request
        if isinstance(inner, dict) and (cats := sensitive_categories(inner)):
            found = found or set()
            found |= cats
    return frozenset(found) if found else _EMPTY


def _match(t: _Tables, coding: dict) -> frozenset[str] | set[str] | None:
    system, code = coding.get("system"), coding.get("code")
    if not isinstance(code, str) or not code:
        return None
    if (codes := t.exact.get(system)) is not None and (cats := codes.get(code.strip())):
        return cats
    if (ranges := t.ranges.get(system)) is not None:
        norm = normalise_code(code)
        hits = {cat for lo, hi, n, cat in ranges if len(norm) >= n and lo <= norm[:n] <= hi}
        return hits or None
    return None
