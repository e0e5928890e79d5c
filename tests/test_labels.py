"""Data-class and sensitivity labels (issue 5): pure functions over FHIR R4 resources.

Hand-written resources follow R4 4.0.1; the demo generator's output, official HL7 examples
and Synthea bundles (shared/testdata, see its SOURCES.md) check that ordinary records get
the ordinary labels.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest
from conftest import TESTDATA

from healthlink.demogen import Options, generate
from healthlink.demogen import catalog as demo_catalog
from healthlink.fhir.labels import (
    DATA_CLASSES,
    SENSITIVE,
    code_lists,
    data_class,
    sensitive_categories,
)

ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SCT = "http://snomed.info/sct"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
EXAMPLES = TESTDATA / "hl7-fhir-r4-examples" / "examples"
SYNTHEA = TESTDATA / "synthea-smart-generated-sample-data" / "bundles"
SUBJECT = {"reference": "Patient/p1"}


def cc(system: str, code: str, display: str | None = None) -> dict:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def condition(code: str, system: str = ICD10) -> dict:
    return {"resourceType": "Condition", "id": "c1", "subject": SUBJECT,
            "clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
            "category": [cc("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item")],
            "code": cc(system, code)}


def observation(code: str, category: str | None = "laboratory", **extra: object) -> dict:
    obs = {"resourceType": "Observation", "id": "o1", "status": "final", "subject": SUBJECT,
           "code": cc(LOINC, code), "effectiveDateTime": "2024-03-01T09:30:00+08:00", **extra}
    if category:
        obs["category"] = [cc(OBS_CAT, category)]
    return obs


def report(*categories: tuple[str, str], **extra: object) -> dict:
    rep = {"resourceType": "DiagnosticReport", "id": "r1", "status": "final", "subject": SUBJECT,
           "code": cc(LOINC, "24627-2", "CT Chest"), **extra}
    if categories:
        rep["category"] = [cc(system, code) for system, code in categories]
    return rep


def prescription(rxcui: str, name: str) -> dict:
    return {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
            "subject": SUBJECT, "medicationCodeableConcept": cc(RXNORM, rxcui, name)}


# --- data classes -------------------------------------------------------------------------

@pytest.mark.parametrize(("rtype", "expected"), [
    ("Patient", "demographics"), ("Person", "demographics"), ("RelatedPerson", "demographics"),
    ("Coverage", "demographics"), ("Encounter", "encounters"), ("EpisodeOfCare", "encounters"),
    ("Appointment", "encounters"), ("ImagingStudy", "imaging"), ("Media", "imaging"),
    ("Specimen", "laboratory"), ("MedicationRequest", "medications"), ("MedicationStatement", "medications"),
    ("MedicationDispense", "medications"), ("MedicationAdministration", "medications"),
    ("Immunization", "medications"), ("AllergyIntolerance", "allergies"), ("Condition", "conditions"),
    ("Procedure", "procedures"), ("ServiceRequest", "procedures"), ("CarePlan", "procedures"),
    ("DocumentReference", "documents"), ("Composition", "documents"), ("Claim", "other"),
    ("ExplanationOfBenefit", "other"), ("Goal", "other"), ("Organization", "other"), ("Basic", "other"),
])
def test_resource_type_decides_the_data_class(rtype: str, expected: str) -> None:
    assert data_class({"resourceType": rtype, "id": "x"}) == expected


@pytest.mark.parametrize(("category", "expected"), [
    ("laboratory", "laboratory"), ("imaging", "imaging"), ("vital-signs", "other"), ("survey", "other"),
    ("social-history", "other"), ("exam", "other"), (None, "other"),
])
def test_observation_class_follows_its_category(category: str | None, expected: str) -> None:
    assert data_class(observation("2339-0", category)) == expected


def test_observation_category_from_another_system_does_not_make_it_laboratory() -> None:
    obs = observation("2339-0", None)
    obs["category"] = [cc("https://example.org/local-category", "laboratory")]
    assert data_class(obs) == "other"


@pytest.mark.parametrize(("categories", "expected"), [
    (((V2_0074, "LAB"),), "laboratory"), (((V2_0074, "HM"),), "laboratory"), (((V2_0074, "CH"),), "laboratory"),
    (((V2_0074, "MB"),), "laboratory"), (((V2_0074, "SP"),), "laboratory"), (((V2_0074, "PAT"),), "laboratory"),
    (((V2_0074, "RAD"),), "imaging"), (((V2_0074, "CT"),), "imaging"), (((V2_0074, "NMR"),), "imaging"),
    (((V2_0074, "RUS"),), "imaging"), (((V2_0074, "RX"),), "imaging"), (((LOINC, "LP29684-5"),), "imaging"),
    (((LOINC, "LP7839-6"),), "laboratory"), (((SCT, "394914008"), (V2_0074, "RAD")), "imaging"),
    (((V2_0074, "EC"),), "other"), (((LOINC, "LP29708-2"),), "other"),
])
def test_report_class_follows_its_service_section(categories: tuple, expected: str) -> None:
    assert data_class(report(*categories)) == expected


def test_report_without_category_is_imaging_only_when_it_points_at_an_imaging_study() -> None:
    assert data_class(report()) == "laboratory"
    assert data_class(report(imagingStudy=[{"reference": "ImagingStudy/s1"}])) == "imaging"
    assert data_class(report((V2_0074, "ZZZ"))) == "laboratory"  # unknown section: same fallback


def test_demo_generator_reports_and_results_get_the_class_a_clinician_expects() -> None:
    seen: Counter = Counter()
    for _, res in generate(Options(patients=300, seed=11)):
        rtype, cls = res["resourceType"], data_class(res)
        assert cls in DATA_CLASSES
        assert sensitive_categories(res) == frozenset(), res
        if rtype == "DiagnosticReport":
            section = res["category"][0]["coding"][0]["code"]
            assert cls == {"LAB": "laboratory", "RAD": "imaging"}[section], res["code"]
            seen[cls] += 1
        elif rtype == "Observation":
            assert cls == "laboratory"
        elif rtype == "MedicationRequest":
            assert cls == "medications"
    assert seen["laboratory"] and seen["imaging"]  # the sample holds both kinds of report


def test_demo_catalog_diagnoses_and_drugs_are_not_sensitive() -> None:
    for icd, name, drugs in demo_catalog.CHRONIC + demo_catalog.ACUTE:
        assert sensitive_categories(condition(icd)) == frozenset(), name
        for rxcui, drug, *_ in drugs:
            assert sensitive_categories(prescription(rxcui, drug)) == frozenset(), drug


def _example(name: str) -> dict:
    path = EXAMPLES / name
    assert path.is_file(), f"third-party test data missing: {path} (see shared/testdata/SOURCES.md)"
    return json.loads(path.read_text())


@pytest.mark.parametrize(("name", "expected"), [
    ("DiagnosticReport-f201.json", "imaging"),  # CT brain, v2-0074 RAD + SNOMED radiology
    ("DiagnosticReport-ultrasound.json", "imaging"),
    ("DiagnosticReport-gingival-mass.json", "laboratory"),  # pathology
    ("DiagnosticReport-102.json", "laboratory"),  # no category, no imaging study
    ("Observation-blood-pressure.json", "other"),
    ("Observation-bloodgroup.json", "laboratory"),
    ("Observation-f001.json", "other"),  # glucose without a category: the class comes from the category only
    ("Condition-f202.json", "conditions"),
    ("Patient-example.json", "demographics"),
])
def test_official_hl7_examples_get_their_data_class(name: str, expected: str) -> None:
    assert data_class(_example(name)) == expected


def test_security_labels_outside_the_sensitive_set_are_ignored() -> None:
    res = _example("Condition-f202.json")  # meta.security v3-ActCode TBOO (taboo)
    assert res["meta"]["security"][0]["code"] == "TBOO"
    assert sensitive_categories(res) == frozenset()


def test_synthea_lab_results_are_laboratory_and_not_sensitive() -> None:
    files = sorted(SYNTHEA.glob("*.json.gz"))
    assert files, f"third-party test data missing: {SYNTHEA} (see shared/testdata/SOURCES.md)"
    classes: Counter = Counter()
    for path in files[:10]:
        for entry in json.loads(gzip.decompress(path.read_bytes()))["entry"]:
            res = entry["resource"]
            cls = data_class(res)
            assert cls in DATA_CLASSES
            if res["resourceType"] == "Observation":
                cats = {c["code"] for cc_ in res.get("category", ()) for c in cc_["coding"]}
                if "laboratory" in cats:
                    assert cls == "laboratory"
                    assert sensitive_categories(res) == frozenset(), res["code"]
            classes[res["resourceType"], cls] += 1
    assert classes["Observation", "laboratory"] > 100
    assert classes["DiagnosticReport", "laboratory"] > 0


# --- sensitive categories ------------------------------------------------------------------

@pytest.mark.parametrize(("code", "expected"), [
    ("PSY", "mental-health"), ("PSYTHPN", "mental-health"), ("BH", "mental-health"), ("MH", "mental-health"),
    ("HIV", "hiv-sti"), ("STD", "hiv-sti"), ("SEX", "reproductive-health"), ("ETH", "substance-use"),
    ("SUD", "substance-use"), ("ETHUD", "substance-use"), ("OPIOIDUD", "substance-use"), ("GDIS", "genetics"),
])
def test_security_label_puts_any_resource_in_its_category(code: str, expected: str) -> None:
    res = {"resourceType": "DocumentReference", "id": "d1", "status": "current",
           "meta": {"security": [{"system": ACT, "code": code}]},
           "content": [{"attachment": {"contentType": "application/pdf", "url": "Binary/b1"}}]}
    assert sensitive_categories(res) == frozenset({expected})


def test_security_label_code_from_another_system_is_not_a_sensitivity_label() -> None:
    res = {"resourceType": "Patient", "id": "p1",
           "meta": {"security": [{"system": "https://example.org/local", "code": "HIV"},
                                 {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                  "code": "R"}]}}
    assert sensitive_categories(res) == frozenset()


@pytest.mark.parametrize(("code", "expected"), [
    ("F32.9", {"mental-health"}), ("F00.0", {"mental-health"}), ("F09", {"mental-health"}),
    ("F20.0", {"mental-health"}), ("F99", {"mental-health"}), ("f41.1", {"mental-health"}),
    ("X70", {"mental-health"}), ("X84.9", {"mental-health"}),
    ("F10.2", {"substance-use"}), ("F11.20", {"substance-use"}), ("F19", {"substance-use"}),
    ("B20", {"hiv-sti"}), ("B24", {"hiv-sti"}), ("Z21", {"hiv-sti"}), ("R75", {"hiv-sti"}),
    ("Z11.4", {"hiv-sti"}), ("A50.9", {"hiv-sti"}), ("A54.9", {"hiv-sti"}), ("A64", {"hiv-sti"}),
    ("O03.9", {"reproductive-health"}), ("O00.1", {"reproductive-health"}), ("O08", {"reproductive-health"}),
    ("Z30.0", {"reproductive-health"}), ("Z31.8", {"reproductive-health"}), ("N97.9", {"reproductive-health"}),
    ("N96", {"reproductive-health"}), ("Q90.9", {"genetics"}), ("Q99", {"genetics"}), ("Z15.01", {"genetics"}),
])
def test_icd10_code_in_a_listed_range_makes_a_condition_sensitive(code: str, expected: set) -> None:
    assert sensitive_categories(condition(code)) == frozenset(expected)


@pytest.mark.parametrize("code", [
    "I10", "E11.9", "J06.9", "B37.3", "A09", "B67.0", "N39.0", "Z11.3", "Z11", "O09.9", "O10", "N95.1",
    "Q89.9", "R74.0", "Z16", "Z29", "X59", "X85", "A49.9", "A65", "B19.9", "B25.0", "G30.9", "F", "F9", "",
])
def test_icd10_code_outside_the_ranges_is_not_sensitive(code: str) -> None:
    assert sensitive_categories(condition(code)) == frozenset()


def test_icd10_like_code_in_a_local_system_is_not_read_as_icd10() -> None:
    assert sensitive_categories(condition("F32.9", "https://example.org/local-diagnosis")) == frozenset()
    assert sensitive_categories(condition("F32.9", "http://hl7.org/fhir/sid/icd-10-cm")) == {"mental-health"}


def test_encounter_for_a_sensitive_reason_is_sensitive() -> None:
    enc = {"resourceType": "Encounter", "id": "e1", "status": "finished",
           "class": {"system": ACT, "code": "AMB", "display": "ambulatory"}, "subject": SUBJECT,
           "reasonCode": [cc(ICD10, "J06.9"), cc(ICD10, "F32.1", "Moderate depressive episode")]}
    assert sensitive_categories(enc) == {"mental-health"}
    enc["reasonCode"] = [cc(ICD10, "J06.9")]
    assert sensitive_categories(enc) == frozenset()


@pytest.mark.parametrize("loinc", ["7917-8", "56888-1", "75622-1", "25836-8", "20447-9", "68961-2", "5221-7",
                                   "20507-0", "21613-5", "24111-7"])
def test_hiv_and_sti_tests_are_sensitive_but_stay_laboratory(loinc: str) -> None:
    obs = observation(loinc, valueCodeableConcept=cc(SCT, "260385009", "Negative"))
    assert data_class(obs) == "laboratory"
    assert sensitive_categories(obs) == {"hiv-sti"}


def test_ordinary_lab_results_are_not_sensitive() -> None:
    for loinc in ("2339-0", "718-7", "4548-4", "2093-3", "6690-2"):
        assert sensitive_categories(observation(loinc, valueQuantity={"value": 5.4, "unit": "mmol/L"})) == frozenset()


def test_component_and_coded_value_are_read() -> None:
    panel = observation("24323-8")
    panel["component"] = [{"code": cc(LOINC, "7917-8"), "valueCodeableConcept": cc(SCT, "260385009")}]
    assert sensitive_categories(panel) == {"hiv-sti"}
    finding = observation("11350-6", "social-history", valueCodeableConcept=cc(SCT, "86406008", "HIV infection"))
    assert data_class(finding) == "other"
    assert sensitive_categories(finding) == {"hiv-sti"}


@pytest.mark.parametrize(("rxcui", "name", "expected"), [
    ("195085", "efavirenz", {"hiv-sti"}), ("1433868", "dolutegravir", {"hiv-sti"}),
    ("117466", "tenofovir", {"hiv-sti"}), ("6813", "methadone", {"substance-use"}),
    ("7243", "naltrexone", {"substance-use"}), ("17767", "amlodipine", set()), ("6809", "metformin", set()),
])
def test_prescription_of_a_listed_ingredient_is_sensitive(rxcui: str, name: str, expected: set) -> None:
    rx = prescription(rxcui, name)
    assert data_class(rx) == "medications"
    assert sensitive_categories(rx) == frozenset(expected)


def test_contained_medication_labels_the_request_that_holds_it() -> None:
    rx = {"resourceType": "MedicationRequest", "id": "m2", "status": "active", "intent": "order",
          "subject": SUBJECT, "medicationReference": {"reference": "#med"},
          "contained": [{"resourceType": "Medication", "id": "med", "code": cc(SCT, "386897000", "Lamivudine")}]}
    assert sensitive_categories(rx) == {"hiv-sti"}


def test_claim_diagnosis_codes_are_read() -> None:
    claim = {"resourceType": "Claim", "id": "cl1", "status": "active", "use": "claim", "patient": SUBJECT,
             "diagnosis": [{"sequence": 1, "diagnosisCodeableConcept": cc(ICD10, "B20")}]}
    assert data_class(claim) == "other"
    assert sensitive_categories(claim) == {"hiv-sti"}


def test_labels_from_security_and_codes_add_up() -> None:
    cond = condition("F10.2")
    cond["meta"] = {"security": [{"system": ACT, "code": "PSY"}, {"system": ACT, "code": "HIV"}]}
    assert sensitive_categories(cond) == {"substance-use", "mental-health", "hiv-sti"}


def test_resource_without_codes_has_no_sensitive_category() -> None:
    pat = {"resourceType": "Patient", "id": "p1", "name": [{"family": "卓玛"}], "gender": "female"}
    result = sensitive_categories(pat)
    assert isinstance(result, frozenset) and not result
    assert sensitive_categories({"resourceType": "Condition", "id": "c2", "code": {"text": "抑郁"}}) == frozenset()


def test_malformed_code_fields_do_not_raise() -> None:
    odd = {"resourceType": "Observation", "id": "o9", "code": "F32", "category": [None, {"coding": None}],
           "reasonCode": [{"coding": [{"system": ICD10}, {"system": ICD10, "code": 32}]}],
           "meta": {"security": [None, {"code": "PSY"}]}}
    assert sensitive_categories(odd) == frozenset()
    assert data_class(odd) == "other"


def test_every_code_list_names_its_source_and_version_and_a_known_category() -> None:
    data = code_lists()
    assert data["version"]
    assert data["security_labels"]["source"] and data["security_labels"]["version"]
    assert {cat for cat, _ in data["security_labels"]["codes"].values()} == set(SENSITIVE)
    covered = set()
    for lst in data["lists"]:
        assert lst["source"] and lst["version"], lst
        assert lst["category"] in SENSITIVE and lst["system"] in data["systems"]
        assert bool(lst.get("codes")) != bool(lst.get("ranges")), lst
        covered.add(lst["category"])
    assert covered == set(SENSITIVE)
