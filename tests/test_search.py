"""FHIR search through the real app and database: every parameter type and its
modifiers and prefixes (FHIR R4 search.html), the standard parameters of the resource
types the platform holds, result parameters, paging while others write, and errors."""

from __future__ import annotations

import copy
import uuid

import pytest
from conftest import observation, patient

BASE = "http://testserver"
LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
ID_CARD = "urn:oid:2.16.156.10011.1.3"
DIRECTORY = {"Practitioner", "PractitionerRole", "Organization", "Location", "Questionnaire"}


def cc(system: str, code: str, display: str | None = None, text: str | None = None) -> dict:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    out: dict = {"coding": [coding]}
    if text:
        out["text"] = text
    return out


def ref(target: str) -> dict:
    return {"reference": target}


# ------------------------------------------------------------------ helpers
def _create(client, who, body: dict) -> dict:  # noqa: ANN001
    r = client.post(f"/fhir/{body['resourceType']}", json=body, headers=who.headers)
    assert r.status_code == 201, r.text
    return r.json()


def _bundle(client, who, path: str, params=None) -> dict:  # noqa: ANN001
    r = client.get(path, params=params, headers=who.headers)
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["resourceType"] == "Bundle" and b["type"] == "searchset"
    return b


def _ids(bundle: dict, mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def _next(bundle: dict) -> str | None:
    nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
    return nxt[0].removeprefix(BASE) if nxt else None


def _all_pages(client, who, path: str, params=None) -> list[dict]:  # noqa: ANN001
    pages = [_bundle(client, who, path, params)]
    while (url := _next(pages[-1])) is not None:
        pages.append(_bundle(client, who, url))
        assert len(pages) < 50
    return pages


def _error(r, status: int = 400) -> str:  # noqa: ANN001
    """The diagnostics a user reads in the OperationOutcome of an error answer."""
    assert r.status_code == status, r.text
    oo = r.json()
    assert oo["resourceType"] == "OperationOutcome"
    return " ".join(i.get("diagnostics", "") for i in oo["issue"])


def _fill(node, values: dict[str, str]):  # noqa: ANN001, ANN202
    """Replace the placeholders PID and UNIQ in every string of a body or query."""
    if isinstance(node, str):
        for k, v in values.items():
            node = node.replace(k, v)
        return node
    if isinstance(node, list):
        return [_fill(x, values) for x in node]
    if isinstance(node, dict):
        return {k: _fill(v, values) for k, v in node.items()}
    return node


# ------------------------------------------------------------------ realistic bodies
BODIES: dict[str, dict] = {
    "patient": {
        "resourceType": "Patient", "active": True, "gender": "male", "birthDate": "1980-05-01",
        "identifier": [{"system": ID_CARD, "value": "540102198005010011",
                        "type": {"text": "Resident identity card"}},
                       {"value": "MRN-UNIQ"}],
        "name": [{"family": "Müller", "given": ["Tsering", "Dorje"], "prefix": ["Dr"]},
                 {"text": "扎西次仁"}],
        "telecom": [{"system": "phone", "value": "13800000000", "use": "mobile"},
                    {"system": "email", "value": "tsering@example.cn"}],
        "address": [{"use": "home", "line": ["12 Beijing Road"], "city": "Lhasa", "district": "Chengguan",
                     "state": "Xizang", "postalCode": "850000", "country": "CN"}],
        "communication": [{"language": cc("urn:ietf:bcp:47", "bo", "Tibetan")}],
        "generalPractitioner": [ref("Practitioner/prac-UNIQ")],
        "managingOrganization": ref("Organization/org-UNIQ"),
        "deceasedDateTime": "2024-01-02T03:04:05Z",
        "link": [{"other": ref("Patient/PID"), "type": "seealso"}],
    },
    "patient_bare": {"resourceType": "Patient", "gender": "female"},
    "practitioner": {
        "resourceType": "Practitioner", "active": True, "gender": "female",
        "identifier": [{"system": "urn:healthlink:license", "value": "LIC-UNIQ"}],
        "name": [{"family": "Wangmo", "given": ["Pema"], "prefix": ["Dr"]}],
        "telecom": [{"system": "phone", "value": "0891-6321234"},
                    {"system": "email", "value": "pema@hospital.example.cn"}],
        "address": [{"use": "work", "city": "Shigatse", "country": "CN"}],
        "communication": [cc("urn:ietf:bcp:47", "zh", "Chinese")],
    },
    "practitioner_role": {
        "resourceType": "PractitionerRole", "active": True,
        "identifier": [{"system": "urn:healthlink:role", "value": "ROLE-UNIQ"}],
        "period": {"start": "2020-01-01", "end": "2030-12-31"},
        "practitioner": ref("Practitioner/prac-UNIQ"), "organization": ref("Organization/org-UNIQ"),
        "location": [ref("Location/loc-UNIQ")],
        "code": [cc("http://terminology.hl7.org/CodeSystem/practitioner-role", "doctor")],
        "specialty": [cc(SCT, "394579002", "Cardiology")],
        "telecom": [{"system": "phone", "value": "0891-6320000"}],
    },
    "organization": {
        "resourceType": "Organization", "active": True,
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.5", "value": "ORG-UNIQ"}],
        "type": [cc("http://terminology.hl7.org/CodeSystem/organization-type", "prov")],
        "name": "Lhasa People's Hospital UNIQ", "alias": ["拉萨市人民医院"],
        "address": [{"city": "Lhasa", "state": "Xizang", "country": "CN"}],
        "partOf": ref("Organization/region-UNIQ"),
    },
    "location": {
        "resourceType": "Location", "status": "active", "name": "Ward 3 UNIQ", "alias": ["Cardiology ward"],
        "operationalStatus": {"system": "http://terminology.hl7.org/CodeSystem/v2-0116", "code": "O"},
        "type": [cc("http://terminology.hl7.org/CodeSystem/v3-RoleCode", "HOSP")],
        "address": {"city": "Nyingchi", "country": "CN"},
        "managingOrganization": ref("Organization/org-UNIQ"), "partOf": ref("Location/building-UNIQ"),
    },
    "encounter": {
        "resourceType": "Encounter", "status": "finished",
        "identifier": [{"system": "urn:healthlink:visit", "value": "V-UNIQ"}],
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [cc(SCT, "11429006", "Consultation")],
        "subject": ref("Patient/PID"),
        "participant": [{"type": [cc("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "ATND")],
                         "individual": ref("Practitioner/prac-UNIQ")}],
        "period": {"start": "2024-03-01T08:00:00Z", "end": "2024-03-05T17:00:00Z"},
        "length": {"value": 30, "unit": "min", "system": UCUM, "code": "min"},
        "reasonCode": [cc(SCT, "38341003", "Hypertension")],
        "serviceProvider": ref("Organization/org-UNIQ"),
        "location": [{"location": ref("Location/loc-UNIQ"),
                      "period": {"start": "2024-03-01T08:00:00Z"}}],
    },
    "encounter_open": {
        "resourceType": "Encounter", "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": ref("Patient/PID"), "period": {"start": "2024-03-01T08:00:00Z"},
    },
    "observation": observation("PID", **{
        "identifier": [{"system": "urn:healthlink:lab", "value": "LAB-UNIQ"}],
        "category": [cc("http://terminology.hl7.org/CodeSystem/observation-category", "laboratory")],
        "performer": [ref("Practitioner/prac-UNIQ")], "encounter": ref("Encounter/enc-UNIQ"),
        "basedOn": [ref("ServiceRequest/sr-UNIQ")],
        "meta": {"tag": [{"system": "urn:healthlink:tag", "code": "reviewed"}],
                 "profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"],
                 "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                               "code": "N"}],
                 "source": "urn:healthlink:lis"},
    }),
    "observation_bp": {
        "resourceType": "Observation", "status": "final", "subject": ref("Patient/PID"),
        "code": cc(LOINC, "85354-9", "Blood pressure panel"),
        "effectivePeriod": {"start": "2024-08-01T08:00:00Z", "end": "2024-08-01T08:05:00Z"},
        "component": [
            {"code": cc(LOINC, "8480-6", "Systolic blood pressure"),
             "valueQuantity": {"value": 150, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
            {"code": cc(LOINC, "8462-4", "Diastolic blood pressure"),
             "valueQuantity": {"value": 95, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}}],
    },
    "observation_text": {
        "resourceType": "Observation", "status": "final", "subject": ref("Patient/PID"),
        "code": cc(LOINC, "8310-5", "Body temperature"),
        "valueCodeableConcept": cc(SCT, "260385009", "Negative", text="Negative for fever"),
    },
    "diagnostic_report": {
        "resourceType": "DiagnosticReport", "status": "final",
        "identifier": [{"system": "urn:healthlink:report", "value": "DR-UNIQ"}],
        "category": [cc("http://terminology.hl7.org/CodeSystem/v2-0074", "HM")],
        "code": cc(LOINC, "58410-2", "CBC panel"), "subject": ref("Patient/PID"),
        "basedOn": [ref("ServiceRequest/sr-UNIQ")],
        "effectiveDateTime": "2024-08-01T09:00:00Z", "issued": "2024-08-01T12:30:00Z",
        "performer": [ref("Organization/lab-UNIQ")], "result": [ref("Observation/obs-UNIQ")],
        "conclusionCode": [cc(SCT, "271737000", "Anemia")],
    },
    "imaging_study": {
        "resourceType": "ImagingStudy", "status": "available", "subject": ref("Patient/PID"),
        "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.840.99.UNIQ"}],
        "started": "2024-08-02T14:00:00+08:00", "referrer": ref("Practitioner/prac-UNIQ"),
        "reasonCode": [cc(SCT, "29857009", "Chest pain")],
        "series": [{"uid": "1.2.840.99.1", "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM",
                                                       "code": "CT"},
                    "bodySite": {"system": SCT, "code": "51185008", "display": "Thorax"},
                    "instance": [{"uid": "1.2.840.99.1.1",
                                  "sopClass": {"system": "urn:ietf:rfc:3986",
                                               "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"}}]}],
    },
    "service_request": {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "urgent",
        "code": cc(LOINC, "58410-2", "CBC panel"),
        "category": [cc(SCT, "108252007", "Laboratory procedure")],
        "subject": ref("Patient/PID"), "authoredOn": "2024-07-31T16:00:00Z",
        "occurrenceDateTime": "2024-08-01", "requester": ref("Practitioner/prac-UNIQ"),
        "performer": [ref("Organization/lab-UNIQ")],
        "requisition": {"system": "urn:healthlink:requisition", "value": "REQ-UNIQ"},
        "instantiatesUri": ["http://example.org/protocols/cbc-UNIQ"],
    },
    "medication_request": {
        "resourceType": "MedicationRequest", "status": "active", "intent": "order", "priority": "routine",
        "medicationCodeableConcept": cc("http://www.whocc.no/atc", "C09AA05", "ramipril"),
        "subject": ref("Patient/PID"), "authoredOn": "2024-08-01T10:30:00Z",
        "requester": ref("Practitioner/prac-UNIQ"),
        "category": [cc("http://terminology.hl7.org/CodeSystem/medicationrequest-category", "outpatient")],
        "dosageInstruction": [{"text": "5 mg once daily",
                               "timing": {"event": ["2024-08-02T08:00:00Z"]}}],
    },
    "medication_request_ref": {
        "resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationReference": ref("Medication/med-UNIQ"), "subject": ref("Patient/PID"),
    },
    "medication_dispense": {
        "resourceType": "MedicationDispense", "status": "completed",
        "medicationCodeableConcept": cc("http://www.whocc.no/atc", "C09AA05", "ramipril"),
        "subject": ref("Patient/PID"), "performer": [{"actor": ref("Practitioner/pharm-UNIQ")}],
        "authorizingPrescription": [ref("MedicationRequest/mr-UNIQ")],
        "type": cc("http://terminology.hl7.org/CodeSystem/v3-ActCode", "FF", "First Fill"),
        "whenPrepared": "2024-08-01T11:00:00Z", "whenHandedOver": "2024-08-01T11:30:00Z",
    },
    "medication_administration": {
        "resourceType": "MedicationAdministration", "status": "completed",
        "medicationCodeableConcept": cc("http://www.whocc.no/atc", "J01CA04", "amoxicillin"),
        "subject": ref("Patient/PID"),
        "effectivePeriod": {"start": "2024-08-01T08:00:00Z", "end": "2024-08-01T08:30:00Z"},
        "performer": [{"actor": ref("Practitioner/nurse-UNIQ")}],
        "request": ref("MedicationRequest/mr-UNIQ"),
        "reasonCode": [cc(SCT, "233604007", "Pneumonia")],
    },
    "allergy": {
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active"),
        "verificationStatus": cc("http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                                 "confirmed"),
        "type": "allergy", "category": ["medication"], "criticality": "high",
        "code": cc(SCT, "764146007", "Penicillin"), "patient": ref("Patient/PID"),
        "recordedDate": "2023-06-01", "lastOccurrence": "2023-05-20",
        "reaction": [{"manifestation": [cc(SCT, "39579001", "Anaphylaxis")], "severity": "severe",
                      "onset": "2023-05-20T09:00:00Z",
                      "exposureRoute": cc(SCT, "26643006", "Oral route")}],
    },
    "condition": {
        "resourceType": "Condition",
        "clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/condition-clinical", "resolved"),
        "verificationStatus": cc("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed"),
        "category": [cc("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item")],
        "severity": cc(SCT, "24484000", "Severe"), "code": cc("http://hl7.org/fhir/sid/icd-10", "I10",
                                                            "Essential hypertension"),
        "bodySite": [cc(SCT, "80891009", "Heart")], "subject": ref("Patient/PID"),
        "encounter": ref("Encounter/enc-UNIQ"), "onsetDateTime": "2019-02-10",
        "recordedDate": "2019-02-11T10:00:00Z", "abatementString": "after weight loss in spring",
        "stage": [{"summary": cc(SCT, "786005", "Stage 1")}],
        "evidence": [{"code": [cc(SCT, "271649006", "Systolic blood pressure")]}],
    },
    "condition_age": {
        "resourceType": "Condition", "subject": ref("Patient/PID"), "code": {"text": "Gout"},
        "onsetAge": {"value": 45, "unit": "years", "system": UCUM, "code": "a"},
    },
    "procedure": {
        "resourceType": "Procedure", "status": "completed",
        "category": cc(SCT, "387713003", "Surgical procedure"),
        "code": cc(SCT, "80146002", "Appendectomy"), "subject": ref("Patient/PID"),
        "performedPeriod": {"start": "2024-05-10T09:00:00Z", "end": "2024-05-10T10:30:00Z"},
        "performer": [{"actor": ref("Practitioner/prac-UNIQ")}], "location": ref("Location/loc-UNIQ"),
        "reasonCode": [cc(SCT, "74400008", "Appendicitis")], "basedOn": [ref("ServiceRequest/sr-UNIQ")],
    },
    "consent": {
        "resourceType": "Consent", "status": "active",
        "scope": cc("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy"),
        "category": [cc(LOINC, "59284-0", "Patient Consent")], "patient": ref("Patient/PID"),
        "dateTime": "2024-02-01T10:00:00Z", "performer": [ref("Patient/PID")],
        "organization": [ref("Organization/org-UNIQ")],
        "provision": {"type": "permit", "period": {"start": "2024-02-01", "end": "2025-01-31"},
                      "actor": [{"role": cc("http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                            "IRCP"),
                                 "reference": ref("Organization/partner-UNIQ")}],
                      "action": [cc("http://terminology.hl7.org/CodeSystem/consentaction", "access")],
                      "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                   "code": "TREAT"}],
                      "data": [{"meaning": "related", "reference": ref("Encounter/enc-UNIQ")}]},
    },
    "task": {
        "resourceType": "Task", "status": "requested", "intent": "order", "priority": "urgent",
        "identifier": [{"system": "urn:healthlink:task", "value": "T-UNIQ"}],
        "groupIdentifier": {"system": "urn:healthlink:task-group", "value": "G-UNIQ"},
        "businessStatus": {"text": "waiting for specimen"},
        "code": cc("http://hl7.org/fhir/CodeSystem/task-code", "fulfill"),
        "focus": ref("ServiceRequest/sr-UNIQ"), "for": ref("Patient/PID"),
        "authoredOn": "2024-08-01T09:00:00Z", "lastModified": "2024-08-01T09:30:00Z",
        "requester": ref("Practitioner/prac-UNIQ"), "owner": ref("Organization/lab-UNIQ"),
        "executionPeriod": {"start": "2024-08-01T09:00:00Z"},
        "performerType": [cc("http://terminology.hl7.org/CodeSystem/task-performer-type", "performer")],
    },
    "person": {
        "resourceType": "Person", "gender": "male", "birthDate": "1980-05-01",
        "identifier": [{"system": ID_CARD, "value": "PER-UNIQ"}],
        "name": [{"family": "Zhaxi", "given": ["Tsering"]}],
        "telecom": [{"system": "phone", "value": "13900000000"}],
        "address": [{"city": "Lhasa", "country": "CN"}],
        "link": [{"target": ref("Patient/PID")}],
    },
    "risk_assessment": {
        "resourceType": "RiskAssessment", "status": "final", "subject": ref("Patient/PID"),
        "occurrenceDateTime": "2024-08-01",
        "prediction": [{"outcome": {"text": "stroke within 10 years"}, "probabilityDecimal": 0.08}],
    },
    "questionnaire": {
        "resourceType": "Questionnaire", "status": "active",
        "url": "http://example.org/fhir/Questionnaire/phq9-UNIQ", "name": "PHQ9", "title": "PHQ-9",
    },
}

# (body, query, does the body match?) -- each query is ANDed with _id of the created resource.
CASES: list[tuple[str, str, bool]] = [
    # token: system|code, code, |code, system|, :not, :text
    ("observation", f"code={LOINC}|718-7", True),
    ("observation", f"code={LOINC}|999-9", False),
    ("observation", f"code={SCT}|718-7", False),
    ("observation", "code=718-7", True),
    ("observation", "code=|718-7", False),
    ("observation", f"code={LOINC}|", True),
    ("observation", f"code={SCT}|", False),
    ("observation", f"code=999-9,{LOINC}|718-7", True),
    ("observation", f"code:not={LOINC}|718-7", False),
    ("observation", f"code:not={LOINC}|999-9", True),
    ("observation", "code:text=hemoglobin", True),
    ("observation", "code:text=HEMOGLOBIN [mass", True),
    ("observation", "code:text=glucose", False),
    ("patient", "identifier=|MRN-UNIQ", True),
    ("patient", f"identifier={ID_CARD}|540102198005010011", True),
    ("patient", "identifier=|540102198005010011", False),
    ("patient", "identifier:text=resident identity", True),
    ("patient", "gender=male", True),
    ("patient", "gender=female", False),
    ("patient", "gender:not=female", True),
    ("patient", "active=true", True),
    ("patient", "active=false", False),
    ("patient", "phone=13800000000", True),
    ("patient", "email=tsering@example.cn", True),
    ("patient", "email=13800000000", False),
    ("patient", "telecom=phone|13800000000", True),
    ("patient", "address-use=home", True),
    ("patient", "language=urn:ietf:bcp:47|bo", True),
    # string: starts-with, case and accent, :exact, :contains, HumanName and Address parts
    ("patient", "family=mül", True),
    ("patient", "family=MULLER", True),
    ("patient", "family=ller", False),
    ("patient", "family:contains=LLER", True),
    ("patient", "family:exact=Müller", True),
    ("patient", "family:exact=Muller", False),
    ("patient", "family:exact=müller", False),
    ("patient", "given=dor", True),
    ("patient", "name=tser", True),
    ("patient", "name=dr", True),
    ("patient", "name=扎西", True),
    ("patient", "name=Wangmo", False),
    ("patient", "name:contains=次仁", True),
    ("patient", "phonetic=muller", True),
    ("patient", "address=lhasa", True),
    ("patient", "address=12 beijing", True),
    ("patient", "address=chengguan", True),
    ("patient", "address=Shanghai", False),
    ("patient", "address-city=LHA", True),
    ("patient", "address-state=xizang", True),
    ("patient", "address-postalcode=8500", True),
    ("patient", "address-country=CN", True),
    ("patient", "address-city=Shigatse", False),
    # date: prefixes, partial dates; Observation.effectiveDateTime 2024-08-01T02:00:00Z
    ("observation", "date=2024", True),
    ("observation", "date=2024-08", True),
    ("observation", "date=2024-08-01", True),
    ("observation", "date=2024-07", False),
    ("observation", "date=2023", False),
    ("observation", "date=2024-08-01T10:00:00%2B08:00", True),
    ("observation", "date=2024-08-01T02:00:00Z", True),
    ("observation", "date=eq2024-08-01", True),
    ("observation", "date=ne2024-08-01", False),
    ("observation", "date=ne2024-07-01", True),
    ("observation", "date=lt2024-08-02", True),
    ("observation", "date=lt2024-08-01", False),
    ("observation", "date=le2024-08-01", True),
    ("observation", "date=le2024-07-31", False),
    ("observation", "date=gt2024-07-31", True),
    ("observation", "date=gt2024-08-01", False),
    ("observation", "date=gt2024-08-01T01:59:59Z", True),
    ("observation", "date=ge2024-08-01", True),
    ("observation", "date=ge2024-08-01T10:00:00%2B08:00", True),
    ("observation", "date=gt2024-08-01T10:00:00%2B08:00", False),
    ("observation", "date=ge2024-08-02", False),
    ("observation", "date=sa2024-07-31", True),
    ("observation", "date=sa2024-08-01", False),
    ("observation", "date=eb2024-08-02", True),
    ("observation", "date=eb2024-08-01", False),
    ("observation", "date=ap2024-08-01", True),
    ("observation", "date=ap2020-01-01", False),
    ("observation", "date=ge2024-01-01&date=lt2025-01-01", True),
    ("observation", "date=ge2024-01-01&date=lt2024-06-01", False),
    ("observation", "date=2023,2024-08", True),
    ("patient", "birthdate=1980-05-01", True),
    ("patient", "birthdate=1980", True),
    ("patient", "birthdate=lt1980-05-01", False),
    ("patient", "birthdate=le1980-05-01", True),
    ("patient", "death-date=2024-01", True),
    # date on a Period: Encounter.period 2024-03-01T08:00Z .. 2024-03-05T17:00Z
    ("encounter", "date=2024-03", True),
    ("encounter", "date=2024", True),
    ("encounter", "date=2024-03-03", False),
    ("encounter", "date=ne2024-03-03", True),
    ("encounter", "date=ge2024-03-03", True),
    ("encounter", "date=gt2024-03-04", True),
    ("encounter", "date=gt2024-03-05", False),
    ("encounter", "date=le2024-03-03", True),
    ("encounter", "date=lt2024-03-01", False),
    ("encounter", "date=sa2024-02-29", True),
    ("encounter", "date=sa2024-03-02", False),
    ("encounter", "date=eb2024-03-06", True),
    ("encounter", "date=eb2024-03-04", False),
    ("encounter", "date=ap2024-03-03", True),
    ("encounter", "location-period=2024-03-01", False),
    ("encounter", "location-period=ge2024-03-01", True),
    # an open Period runs on: still going
    ("encounter_open", "date=gt2030-01-01", True),
    ("encounter_open", "date=lt2024-02-01", False),
    ("encounter_open", "date=2024-03", False),
    # reference: Type/id, bare id, absolute URL, :Type
    ("observation", "subject=Patient/PID", True),
    ("observation", "subject=PID", True),
    ("observation", "subject:Patient=PID", True),
    ("observation", "subject:Group=PID", False),
    ("observation", f"subject={BASE}/fhir/Patient/PID", True),
    ("observation", "subject=Patient/someone-else", False),
    ("observation", "patient=PID", True),
    ("observation", "patient=Patient/PID", True),
    ("observation", "performer=Practitioner/prac-UNIQ", True),
    ("observation", "performer=prac-UNIQ", True),
    ("observation", "encounter=Encounter/enc-UNIQ", True),
    ("observation", "based-on=ServiceRequest/sr-UNIQ", True),
    # quantity: prefixes, implied precision, value|system|code
    ("observation", "value-quantity=13.2", True),
    ("observation", "value-quantity=13", True),
    ("observation", "value-quantity=13.0", False),
    ("observation", "value-quantity=14", False),
    ("observation", "value-quantity=gt13", True),
    ("observation", "value-quantity=gt13.2", False),
    ("observation", "value-quantity=lt13", False),
    ("observation", "value-quantity=lt13.3", True),
    ("observation", "value-quantity=ge13.2", True),
    ("observation", "value-quantity=le13.2", True),
    ("observation", "value-quantity=ne13.2", False),
    ("observation", "value-quantity=ne20", True),
    ("observation", "value-quantity=sa13", True),
    ("observation", "value-quantity=eb13", False),
    ("observation", "value-quantity=ap13", True),
    ("observation", "value-quantity=ap20", False),
    ("observation", f"value-quantity=13.2|{UCUM}|g/dL", True),
    ("observation", f"value-quantity=13.2|{UCUM}|mg/dL", False),
    ("observation", "value-quantity=13.2||g/dL", True),
    ("observation", f"value-quantity=13.2|{LOINC}|g/dL", False),
    ("observation", "value-quantity=13.2e0", True),
    ("observation", "combo-value-quantity=13.2", True),
    # number: RiskAssessment.prediction.probabilityDecimal 0.08
    ("risk_assessment", "probability=0.08", True),
    ("risk_assessment", "probability=0.1", True),
    ("risk_assessment", "probability=0.10", False),
    ("risk_assessment", "probability=gt0.05", True),
    ("risk_assessment", "probability=lt0.05", False),
    ("risk_assessment", "probability=le0.08", True),
    ("risk_assessment", "probability=ne0.08", False),
    ("risk_assessment", "date=2024-08-01", True),
    ("risk_assessment", "patient=PID", True),
    # uri: exact, :below, :above
    ("questionnaire", "url=http://example.org/fhir/Questionnaire/phq9-UNIQ", True),
    ("questionnaire", "url=http://example.org/fhir/Questionnaire", False),
    ("questionnaire", "url:below=http://example.org/fhir/", True),
    ("questionnaire", "url:below=http://example.org/other/", False),
    ("questionnaire", "url:above=http://example.org/fhir/Questionnaire/phq9-UNIQ/v2", True),
    ("questionnaire", "url:above=http://example.org/other", False),
    ("questionnaire", "name=phq", True),
    ("questionnaire", "title=PHQ-9", True),
    ("questionnaire", "status=active", True),
    ("service_request", "instantiates-uri=http://example.org/protocols/cbc-UNIQ", True),
    ("observation", "_profile=http://hl7.org/fhir/StructureDefinition/vitalsigns", True),
    ("observation", "_source=urn:healthlink:lis", True),
    ("observation", "_tag=urn:healthlink:tag|reviewed", True),
    ("observation", "_tag=urn:healthlink:tag|draft", False),
    ("observation", "_security=N", True),
    # :missing
    ("patient", "birthdate:missing=false", True),
    ("patient", "birthdate:missing=true", False),
    ("patient_bare", "birthdate:missing=true", True),
    ("patient_bare", "birthdate:missing=false", False),
    ("patient_bare", "name:missing=true", True),
    ("patient_bare", "gender:missing=false", True),
    ("patient_bare", "organization:missing=true", True),
    ("patient", "organization:missing=true", False),
    ("observation", "value-quantity:missing=false", True),
    ("observation_text", "value-quantity:missing=true", True),
    # the standard parameters of the platform's types
    ("patient", "general-practitioner=Practitioner/prac-UNIQ", True),
    ("patient", "organization=org-UNIQ", True),
    ("patient", "link=Patient/PID", True),
    ("practitioner", "identifier=urn:healthlink:license|LIC-UNIQ", True),
    ("practitioner", "name=pema", True),
    ("practitioner", "family=wang", True),
    ("practitioner", "given=Pema", True),
    ("practitioner", "gender=female", True),
    ("practitioner", "active=true", True),
    ("practitioner", "email=pema@hospital.example.cn", True),
    ("practitioner", "phone=0891-6321234", True),
    ("practitioner", "address-city=shigatse", True),
    ("practitioner", "address-use=work", True),
    ("practitioner", "communication=zh", True),
    ("practitioner_role", "practitioner=Practitioner/prac-UNIQ", True),
    ("practitioner_role", "organization=org-UNIQ", True),
    ("practitioner_role", "location=Location/loc-UNIQ", True),
    ("practitioner_role", "role=doctor", True),
    ("practitioner_role", f"specialty={SCT}|394579002", True),
    ("practitioner_role", "date=2024-06-01", False),
    ("practitioner_role", "date=ge2024-06-01", True),
    ("practitioner_role", "date=lt2019-01-01", False),
    ("practitioner_role", "active=true", True),
    ("practitioner_role", "identifier=ROLE-UNIQ", True),
    ("practitioner_role", "phone=0891-6320000", True),
    ("organization", "name=lhasa people", True),
    ("organization", "name=拉萨", True),
    ("organization", "name:exact=拉萨市人民医院", True),
    ("organization", "identifier=urn:oid:2.16.156.10011.1.5|ORG-UNIQ", True),
    ("organization", "type=prov", True),
    ("organization", "partof=Organization/region-UNIQ", True),
    ("organization", "address-city=lhasa", True),
    ("organization", "address-state=Xizang", True),
    ("organization", "active=true", True),
    ("location", "name=ward 3", True),
    ("location", "name=cardiology", True),
    ("location", "status=active", True),
    ("location", "status=inactive", False),
    ("location", "operational-status=O", True),
    ("location", "type=HOSP", True),
    ("location", "organization=Organization/org-UNIQ", True),
    ("location", "partof=building-UNIQ", True),
    ("location", "address-city=nyingchi", True),
    ("location", "address=nyingchi", True),
    ("encounter", "status=finished", True),
    ("encounter", "status=in-progress", False),
    ("encounter", "class=AMB", True),
    ("encounter", "class=http://terminology.hl7.org/CodeSystem/v3-ActCode|IMP", False),
    ("encounter", "type=11429006", True),
    ("encounter", "identifier=urn:healthlink:visit|V-UNIQ", True),
    ("encounter", "patient=PID", True),
    ("encounter", "subject=Patient/PID", True),
    ("encounter", "participant=Practitioner/prac-UNIQ", True),
    ("encounter", "practitioner=prac-UNIQ", True),
    ("encounter", "participant-type=ATND", True),
    ("encounter", "service-provider=Organization/org-UNIQ", True),
    ("encounter", "reason-code=38341003", True),
    ("encounter", "location=Location/loc-UNIQ", True),
    ("encounter", "length=30", True),
    ("encounter", f"length=gt20|{UCUM}|min", True),
    ("encounter", "length=gt40", False),
    ("observation", "status=final", True),
    ("observation", "status=preliminary", False),
    ("observation", "status=final,amended", True),
    ("observation", "category=laboratory", True),
    ("observation", "category=vital-signs", False),
    ("observation", "identifier=LAB-UNIQ", True),
    ("observation", "combo-code=718-7", True),
    ("observation_bp", "component-code=8480-6", True),
    ("observation_bp", "combo-code=8462-4", True),
    ("observation_bp", "code=8480-6", False),
    ("observation_bp", "component-value-quantity=gt140", True),
    ("observation_bp", "component-value-quantity=gt160", False),
    ("observation_bp", "combo-value-quantity=95||mm[Hg]", True),
    ("observation_bp", "combo-value-quantity=95||mmHg", True),
    ("observation_bp", f"combo-value-quantity=95|{UCUM}|mm[Hg]", True),
    ("observation_bp", f"combo-value-quantity=95|{UCUM}|mmHg", False),
    ("observation_bp", "combo-value-quantity=95||kPa", False),
    ("observation_bp", "date=2024-08-01", True),
    ("observation_bp", "date=ge2024-08-01T08:03:00Z", True),
    ("observation_bp", "date=eb2024-08-01T08:03:00Z", False),
    ("observation_text", f"value-concept={SCT}|260385009", True),
    ("observation_text", "value-string=negative", True),
    ("observation_text", "value-string:contains=fever", True),
    ("observation_text", "value-string=fever", False),
    ("diagnostic_report", f"code={LOINC}|58410-2", True),
    ("diagnostic_report", "status=final", True),
    ("diagnostic_report", "category=HM", True),
    ("diagnostic_report", "date=2024-08-01", True),
    ("diagnostic_report", "issued=ge2024-08-01T12:00:00Z", True),
    ("diagnostic_report", "issued=lt2024-08-01T12:00:00Z", False),
    ("diagnostic_report", "result=Observation/obs-UNIQ", True),
    ("diagnostic_report", "patient=PID", True),
    ("diagnostic_report", "subject:Patient=PID", True),
    ("diagnostic_report", "performer=Organization/lab-UNIQ", True),
    ("diagnostic_report", "conclusion=271737000", True),
    ("diagnostic_report", "based-on=ServiceRequest/sr-UNIQ", True),
    ("diagnostic_report", "identifier=DR-UNIQ", True),
    ("imaging_study", "modality=CT", True),
    ("imaging_study", "modality=http://dicom.nema.org/resources/ontology/DCM|MR", False),
    ("imaging_study", "started=2024-08-02", True),
    ("imaging_study", "started=ge2024-08-02T06:00:00Z", True),
    ("imaging_study", "started=gt2024-08-02T06:00:00Z", False),
    ("imaging_study", "series=1.2.840.99.1", True),
    ("imaging_study", "instance=1.2.840.99.1.1", True),
    ("imaging_study", "dicom-class=urn:oid:1.2.840.10008.5.1.4.1.1.2", True),
    ("imaging_study", "bodysite=51185008", True),
    ("imaging_study", "status=available", True),
    ("imaging_study", "patient=PID", True),
    ("imaging_study", "referrer=Practitioner/prac-UNIQ", True),
    ("imaging_study", "reason=29857009", True),
    ("imaging_study", "identifier=urn:dicom:uid|urn:oid:1.2.840.99.UNIQ", True),
    ("service_request", f"code={LOINC}|58410-2", True),
    ("service_request", "status=active", True),
    ("service_request", "intent=order", True),
    ("service_request", "intent=plan", False),
    ("service_request", "priority=urgent", True),
    ("service_request", "category=108252007", True),
    ("service_request", "authored=2024-07-31", True),
    ("service_request", "authored=gt2024-08-01", False),
    ("service_request", "occurrence=2024-08-01", True),
    ("service_request", "requester=Practitioner/prac-UNIQ", True),
    ("service_request", "performer=lab-UNIQ", True),
    ("service_request", "requisition=REQ-UNIQ", True),
    ("service_request", "patient=PID", True),
    ("medication_request", "code=C09AA05", True),
    ("medication_request", "code=http://www.whocc.no/atc|C09AA06", False),
    ("medication_request", "status=active", True),
    ("medication_request", "intent=order", True),
    ("medication_request", "authoredon=2024-08", True),
    ("medication_request", "authoredon=lt2024-08-01", False),
    ("medication_request", "date=2024-08-02", True),
    ("medication_request", "date=2024-08-03", False),
    ("medication_request", "requester=Practitioner/prac-UNIQ", True),
    ("medication_request", "category=outpatient", True),
    ("medication_request", "priority=routine", True),
    ("medication_request", "patient=PID", True),
    ("medication_request", "medication:missing=true", True),
    ("medication_request_ref", "medication=Medication/med-UNIQ", True),
    ("medication_request_ref", "code:missing=true", True),
    ("medication_dispense", "code=C09AA05", True),
    ("medication_dispense", "status=completed", True),
    ("medication_dispense", "status=in-progress", False),
    ("medication_dispense", "whenhandedover=2024-08-01", True),
    ("medication_dispense", "whenprepared=lt2024-08-01T11:30:00Z", True),
    ("medication_dispense", "whenprepared=gt2024-08-01T11:30:00Z", False),
    ("medication_dispense", "prescription=MedicationRequest/mr-UNIQ", True),
    ("medication_dispense", "performer=Practitioner/pharm-UNIQ", True),
    ("medication_dispense", "type=FF", True),
    ("medication_dispense", "patient=PID", True),
    ("medication_administration", "code=J01CA04", True),
    ("medication_administration", "status=completed", True),
    ("medication_administration", "effective-time=2024-08-01", True),
    ("medication_administration", "effective-time=ge2024-08-01T08:15:00Z", True),
    ("medication_administration", "effective-time=gt2024-08-01T08:30:00Z", False),
    ("medication_administration", "request=MedicationRequest/mr-UNIQ", True),
    ("medication_administration", "performer=Practitioner/nurse-UNIQ", True),
    ("medication_administration", "reason-given=233604007", True),
    ("medication_administration", "patient=PID", True),
    ("allergy", "code=764146007", True),
    ("allergy", f"code={SCT}|91936005", False),
    ("allergy", "clinical-status=active", True),
    ("allergy", "verification-status=confirmed", True),
    ("allergy", "criticality=high", True),
    ("allergy", "criticality=low", False),
    ("allergy", "category=medication", True),
    ("allergy", "type=allergy", True),
    ("allergy", "patient=PID", True),
    ("allergy", "date=2023-06-01", True),
    ("allergy", "last-date=2023-05", True),
    ("allergy", "manifestation=39579001", True),
    ("allergy", "severity=severe", True),
    ("allergy", "onset=2023-05-20", True),
    ("allergy", "route=26643006", True),
    ("allergy", "code:text=penicillin", True),
    ("condition", "code=I10", True),
    ("condition", "code=http://hl7.org/fhir/sid/icd-10|I10", True),
    ("condition", "clinical-status=resolved", True),
    ("condition", "clinical-status=active", False),
    ("condition", "verification-status=confirmed", True),
    ("condition", "category=problem-list-item", True),
    ("condition", "severity=24484000", True),
    ("condition", "body-site=80891009", True),
    ("condition", "onset-date=2019-02", True),
    ("condition", "onset-date=lt2019-01-01", False),
    ("condition", "recorded-date=2019-02-11", True),
    ("condition", "abatement-string=after weight", True),
    ("condition", "abatement-string=weight", False),
    ("condition", "stage=786005", True),
    ("condition", "evidence=271649006", True),
    ("condition", "patient=PID", True),
    ("condition", "subject=Patient/PID", True),
    ("condition", "encounter=Encounter/enc-UNIQ", True),
    ("condition_age", "onset-age=45", True),
    ("condition_age", f"onset-age=ge40|{UCUM}|a", True),
    ("condition_age", "onset-age=lt40", False),
    ("condition_age", "code:text=gout", True),
    ("procedure", "code=80146002", True),
    ("procedure", "status=completed", True),
    ("procedure", "category=387713003", True),
    ("procedure", "date=2024-05-10", True),
    ("procedure", "date=2024-05-11", False),
    ("procedure", "patient=PID", True),
    ("procedure", "performer=Practitioner/prac-UNIQ", True),
    ("procedure", "location=Location/loc-UNIQ", True),
    ("procedure", "reason-code=74400008", True),
    ("procedure", "based-on=ServiceRequest/sr-UNIQ", True),
    ("consent", "status=active", True),
    ("consent", "scope=patient-privacy", True),
    ("consent", f"category={LOINC}|59284-0", True),
    ("consent", "patient=PID", True),
    ("consent", "date=2024-02-01", True),
    ("consent", "period=ge2024-06-01", True),
    ("consent", "period=gt2025-02-01", False),
    ("consent", "action=access", True),
    ("consent", "purpose=TREAT", True),
    ("consent", "actor=Organization/partner-UNIQ", True),
    ("consent", "organization=org-UNIQ", True),
    ("consent", "consentor=Patient/PID", True),
    ("consent", "data=Encounter/enc-UNIQ", True),
    ("task", "status=requested", True),
    ("task", "status=completed", False),
    ("task", "intent=order", True),
    ("task", "priority=urgent", True),
    ("task", "code=fulfill", True),
    ("task", "patient=PID", True),
    ("task", "subject=Patient/PID", True),
    ("task", "focus=ServiceRequest/sr-UNIQ", True),
    ("task", "owner=Organization/lab-UNIQ", True),
    ("task", "requester=Practitioner/prac-UNIQ", True),
    ("task", "authored-on=2024-08-01", True),
    ("task", "modified=ge2024-08-01T09:15:00Z", True),
    ("task", "period=gt2030-01-01", True),
    ("task", "business-status:text=waiting", True),
    ("task", "group-identifier=G-UNIQ", True),
    ("task", "identifier=urn:healthlink:task|T-UNIQ", True),
    ("task", "performer=performer", True),
    ("person", "name=zhaxi", True),
    ("person", "name=tsering", True),
    ("person", "birthdate=1980-05-01", True),
    ("person", "gender=male", True),
    ("person", f"identifier={ID_CARD}|PER-UNIQ", True),
    ("person", "link=Patient/PID", True),
    ("person", "patient=PID", True),
    ("person", "practitioner=PID", False),
    ("person", "address-city=lhasa", True),
    ("person", "phone=13900000000", True),
]


@pytest.mark.parametrize("body_key", sorted({c[0] for c in CASES}))
def test_each_parameter_matches_what_it_should_and_nothing_else(client, staff, body_key):
    """For one realistic resource, every query in CASES finds it or not, as FHIR says."""
    body = BODIES[body_key]
    doc = staff("doctor")
    who = staff("system_admin", institution=doc.institution) if body["resourceType"] in DIRECTORY else doc
    pid = _create(client, doc, patient())["id"]
    values = {"PID": pid, "UNIQ": uuid.uuid4().hex[:10]}
    created = _create(client, who, _fill(copy.deepcopy(body), values))
    wrong = []
    for key, query, expect in CASES:
        if key != body_key:
            continue
        q = _fill(query, values)
        r = client.get(f"/fhir/{body['resourceType']}?{q}&_id={created['id']}", headers=who.headers)
        if r.status_code != 200:
            wrong.append(f"{q}: HTTP {r.status_code} {r.text[:200]}")
        elif (_ids(r.json()) == [created["id"]]) != expect:
            wrong.append(f"{q}: expected {'a match' if expect else 'no match'}, got {_ids(r.json())}")
    assert not wrong, "\n".join(wrong)


# ------------------------------------------------------------------ _id and _lastUpdated
def test_id_finds_the_resources_named_and_no_others(client, staff):
    doc = staff("doctor")
    a, b, c = (_create(client, doc, patient())["id"] for _ in range(3))
    assert sorted(_ids(_bundle(client, doc, "/fhir/Patient", {"_id": f"{a},{c}"}))) == sorted([a, c])
    assert _ids(_bundle(client, doc, "/fhir/Patient", {"_id": "no-such"})) == []


def test_last_updated_prefixes_bracket_the_write_time(client, staff):
    doc = staff("doctor")
    p = _create(client, doc, patient())
    lu = p["meta"]["lastUpdated"]
    for query, expect in [(f"ge{lu}", True), (f"le{lu}", True), (f"gt{lu}", False), (f"lt{lu}", False),
                          ("gt2020-01-01", True), ("lt2020", False), (lu[:10], True),
                          ("2019", False)]:
        got = _ids(_bundle(client, doc, "/fhir/Patient", {"_lastUpdated": query, "_id": p["id"]}))
        assert (got == [p["id"]]) == expect, query


def test_last_updated_separates_older_from_newer_writes(client, staff):
    doc = staff("doctor")
    old = _create(client, doc, patient())
    new = _create(client, doc, patient())
    mark = new["meta"]["lastUpdated"]
    assert _ids(_bundle(client, doc, "/fhir/Patient", {"_lastUpdated": f"lt{mark}"})) == [old["id"]]
    assert _ids(_bundle(client, doc, "/fhir/Patient", {"_lastUpdated": f"ge{mark}"})) == [new["id"]]


# ------------------------------------------------------------------ chains
def test_chained_reference_by_patient_identifier_and_name(client, staff):
    doc = staff("doctor")
    system = f"urn:healthlink:test:{uuid.uuid4().hex[:8]}"
    tsering = _create(client, doc, patient(identifier=[{"system": system, "value": "P1"}]))["id"]
    pema = _create(client, doc, patient(name=[{"family": "Wangmo", "given": ["Pema"]}],
                                        identifier=[{"system": system, "value": "P2"}]))["id"]
    o1 = _create(client, doc, observation(tsering))["id"]
    o2 = _create(client, doc, observation(pema))["id"]
    assert _ids(_bundle(client, doc, "/fhir/Observation", {"subject:Patient.identifier": f"{system}|P1"})) == [o1]
    assert _ids(_bundle(client, doc, "/fhir/Observation", {"patient.identifier": f"{system}|P2"})) == [o2]
    assert _ids(_bundle(client, doc, "/fhir/Observation", {"patient.name": "wangmo"})) == [o2]
    assert _ids(_bundle(client, doc, "/fhir/Observation", {"patient.name:exact": "Zhaxi"})) == [o1]
    assert sorted(_ids(_bundle(client, doc, "/fhir/Observation", {"patient.gender": "male"}))) == sorted([o1, o2])
    assert _ids(_bundle(client, doc, "/fhir/Observation", {"patient.identifier": f"{system}|P3"})) == []


def test_chain_through_a_directory_resource(client, staff):
    doc = staff("doctor")
    admin = staff("system_admin", institution=doc.institution)
    lic = f"LIC-{uuid.uuid4().hex[:8]}"
    prac = _create(client, admin, {"resourceType": "Practitioner",
                                   "identifier": [{"system": "urn:healthlink:license", "value": lic}],
                                   "name": [{"family": "Wangmo"}]})["id"]
    pid = _create(client, doc, patient())["id"]
    enc = _create(client, doc, {"resourceType": "Encounter", "status": "finished",
                                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                          "code": "AMB"},
                                "subject": ref(f"Patient/{pid}"),
                                "participant": [{"individual": ref(f"Practitioner/{prac}")}]})["id"]
    _create(client, doc, {"resourceType": "Encounter", "status": "finished",
                          "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                          "subject": ref(f"Patient/{pid}")})
    got = _ids(_bundle(client, doc, "/fhir/Encounter", {"practitioner.identifier": f"urn:healthlink:license|{lic}"}))
    assert got == [enc]
    got = _ids(_bundle(client, doc, "/fhir/Encounter", {"participant:Practitioner.identifier": lic}))
    assert got == [enc]


def test_chain_on_a_parameter_with_several_target_types_must_name_one(client, staff):
    doc = staff("doctor")
    r = client.get("/fhir/Observation", params={"subject.name": "zhaxi"}, headers=doc.headers)
    assert "subject" in _error(r)


def test_chain_and_include_do_not_reach_another_institutions_patient(client, staff):
    other = staff("doctor")
    secret = _create(client, other, patient(name=[{"family": "Secretname"}]))["id"]
    doc = staff("doctor")
    own = _create(client, doc, patient(name=[{"family": "Secretname"}]))["id"]
    # subject decides the compartment; performer may name any Patient
    via_other = _create(client, doc, observation(own, performer=[ref(f"Patient/{secret}")]))["id"]
    via_own = _create(client, doc, observation(own, performer=[ref(f"Patient/{own}")]))["id"]
    got = _ids(_bundle(client, doc, "/fhir/Observation", {"performer:Patient.family": "secretname"}))
    assert got == [via_own]
    b = _bundle(client, doc, "/fhir/Observation", {"_id": via_other, "_include": "Observation:performer"})
    assert _ids(b) == [via_other] and _ids(b, "include") == []


# ------------------------------------------------------------------ sorting
def _patients_for_sorting(client, doc) -> dict[str, str]:  # noqa: ANN001
    rows = [("Baima", "1990-01-01"), ("Ciren", "1970-06-15"), ("Awang", "1985-03-03"),
            ("Baima", "2001-09-09"), (None, "1960-12-12")]
    out = {}
    for family, born in rows:
        name = {"family": family, "given": ["X"]} if family else {"given": ["Nameless"]}
        body = patient(birthDate=born, name=[name])
        out[f"{family}:{born}"] = _create(client, doc, body)["id"]
    return out


def test_sort_by_string_ascending_and_descending_puts_missing_values_last(client, staff):
    doc = staff("doctor")
    p = _patients_for_sorting(client, doc)
    asc = _ids(_bundle(client, doc, "/fhir/Patient", {"_sort": "family,birthdate"}))
    assert asc == [p["Awang:1985-03-03"], p["Baima:1990-01-01"], p["Baima:2001-09-09"],
                   p["Ciren:1970-06-15"], p["None:1960-12-12"]]
    desc = _ids(_bundle(client, doc, "/fhir/Patient", {"_sort": "-family,-birthdate"}))
    assert desc == [p["Ciren:1970-06-15"], p["Baima:2001-09-09"], p["Baima:1990-01-01"],
                    p["Awang:1985-03-03"], p["None:1960-12-12"]]


def test_sort_multi_key_mixes_directions(client, staff):
    doc = staff("doctor")
    p = _patients_for_sorting(client, doc)
    got = _ids(_bundle(client, doc, "/fhir/Patient", {"_sort": "family,-birthdate"}))
    assert got[:4] == [p["Awang:1985-03-03"], p["Baima:2001-09-09"], p["Baima:1990-01-01"],
                       p["Ciren:1970-06-15"]]


def test_sort_by_date_ascending_and_descending(client, staff):
    doc = staff("doctor")
    p = _patients_for_sorting(client, doc)
    asc = _ids(_bundle(client, doc, "/fhir/Patient", {"_sort": "birthdate"}))
    assert asc == [p["None:1960-12-12"], p["Ciren:1970-06-15"], p["Awang:1985-03-03"],
                   p["Baima:1990-01-01"], p["Baima:2001-09-09"]]
    assert _ids(_bundle(client, doc, "/fhir/Patient", {"_sort": "-birthdate"})) == asc[::-1]


def test_sort_by_last_updated_and_id(client, staff):
    doc = staff("doctor")
    made = [_create(client, doc, patient())["id"] for _ in range(3)]
    assert _ids(_bundle(client, doc, "/fhir/Patient", {"_sort": "_lastUpdated"})) == made
    assert _ids(_bundle(client, doc, "/fhir/Patient", {"_sort": "-_lastUpdated"})) == made[::-1]
    assert _ids(_bundle(client, doc, "/fhir/Patient", {"_sort": "_id"})) == sorted(made)
    assert _ids(_bundle(client, doc, "/fhir/Patient", {"_sort": "-_id"})) == sorted(made, reverse=True)


def test_sort_by_quantity_and_token(client, staff):
    doc = staff("doctor")
    pid = _create(client, doc, patient())["id"]
    made = {}
    for v, status in [(12.0, "final"), (9.5, "amended"), (15.1, "preliminary")]:
        made[v] = _create(client, doc, observation(pid, status=status, valueQuantity={
            "value": v, "unit": "g/dL", "system": UCUM, "code": "g/dL"}))["id"]
    assert _ids(_bundle(client, doc, "/fhir/Observation", {"_sort": "value-quantity"})) == [
        made[9.5], made[12.0], made[15.1]]
    assert _ids(_bundle(client, doc, "/fhir/Observation", {"_sort": "-status"})) == [
        made[15.1], made[12.0], made[9.5]]


def test_sorted_paging_visits_every_row_once_in_order(client, staff):
    doc = staff("doctor")
    p = _patients_for_sorting(client, doc)
    pages = _all_pages(client, doc, "/fhir/Patient", {"_sort": "-family,birthdate", "_count": "2"})
    assert [len(_ids(b)) for b in pages] == [2, 2, 1]
    got = [i for b in pages for i in _ids(b)]
    assert got == [p["Ciren:1970-06-15"], p["Baima:1990-01-01"], p["Baima:2001-09-09"],
                   p["Awang:1985-03-03"], p["None:1960-12-12"]]


def test_sort_by_an_unsortable_or_unknown_parameter_is_400(client, staff):
    doc = staff("doctor")
    assert "shoe-size" in _error(client.get("/fhir/Patient", params={"_sort": "shoe-size"}, headers=doc.headers))
    assert "organization" in _error(client.get("/fhir/Patient", params={"_sort": "organization"},
                                               headers=doc.headers))


# ------------------------------------------------------------------ paging while others write
@pytest.mark.parametrize("sort", [None, "date", "-date", "_lastUpdated", "-_lastUpdated"])
def test_paging_is_stable_while_new_matching_resources_are_written(client, staff, sort):
    doc = staff("doctor")
    pid = _create(client, doc, patient())["id"]
    before = [_create(client, doc, observation(pid, effectiveDateTime=f"2024-08-{d:02d}T10:00:00Z"))["id"]
              for d in (5, 1, 7, 3, 9)]
    params = {"patient": pid, "_count": "2"}
    if sort:
        params["_sort"] = sort
    expected = [i for b in _all_pages(client, doc, "/fhir/Observation", params) for i in _ids(b)]
    assert sorted(expected) == sorted(before)

    first = _bundle(client, doc, "/fhir/Observation", params)
    # new rows that would sort before, between and after the rows already seen
    late = [_create(client, doc, observation(pid, effectiveDateTime=f"2024-08-{d:02d}T10:00:00Z"))["id"]
            for d in (2, 6, 10)]
    # an update that does not change the sort value keeps its place
    unsorted = _ids(first)
    rest_first = [i for i in expected if i not in unsorted][0]
    cur = client.get(f"/fhir/Observation/{rest_first}", headers=doc.headers).json()
    if sort in (None, "date", "-date"):
        assert client.put(f"/fhir/Observation/{rest_first}", json=dict(cur, status="amended"),
                          headers=doc.headers).status_code == 200
    got = _ids(first)
    url = _next(first)
    while url:
        b = _bundle(client, doc, url)
        got += _ids(b)
        url = _next(b)
    assert not set(late) & set(got), "rows written after the first page were injected"
    assert len(got) == len(set(got)), "a row came twice"
    if sort in (None, "date", "-date"):
        assert got == expected
    else:  # the update moved one row in _lastUpdated order: nothing else skipped or repeated
        assert set(got) <= set(expected) and len(got) >= len(expected) - 1


def test_paging_through_equal_sort_values_visits_each_row_once(client, staff):
    doc = staff("doctor")
    pid = _create(client, doc, patient())["id"]
    made = [_create(client, doc, observation(pid))["id"] for _ in range(5)]
    for sort in ("date", "-date", "code", "-value-quantity"):
        pages = _all_pages(client, doc, "/fhir/Observation", {"patient": pid, "_sort": sort, "_count": "2"})
        assert [i for b in pages for i in _ids(b)] == made, sort


def test_paging_skips_a_row_deleted_between_pages_without_error(client, staff):
    doc = staff("doctor")
    pid = _create(client, doc, patient())["id"]
    made = [_create(client, doc, observation(pid))["id"] for _ in range(4)]
    first = _bundle(client, doc, "/fhir/Observation", {"patient": pid, "_count": "2"})
    assert _ids(first) == made[:2]
    client.delete(f"/fhir/Observation/{made[2]}", headers=doc.headers)
    second = _bundle(client, doc, _next(first))
    assert _ids(second) == [made[3]]


def test_count_limits_the_page_and_next_link_keeps_the_query(client, staff):
    doc = staff("doctor")
    pid = _create(client, doc, patient())["id"]
    for _ in range(3):
        _create(client, doc, observation(pid))
    b = _bundle(client, doc, "/fhir/Observation", {"patient": pid, "_count": "1"})
    assert len(_ids(b)) == 1
    nxt = _next(b)
    assert nxt and f"patient={pid}" in nxt and "_count=1" in nxt
    self_link = [x["url"] for x in b["link"] if x["relation"] == "self"][0]
    assert f"patient={pid}" in self_link
    last = _all_pages(client, doc, "/fhir/Observation", {"patient": pid, "_count": "1"})
    assert len(last) == 3 and _next(last[-1]) is None


def test_tampered_cursor_is_400(client, staff):
    doc = staff("doctor")
    r = client.get("/fhir/Patient", params={"_cursor": "not-a-cursor!"}, headers=doc.headers)
    assert "cursor" in _error(r)


# ------------------------------------------------------------------ _include / _revinclude
def _patient_with_observations(client, doc, n: int = 2) -> tuple[str, list[str]]:  # noqa: ANN001
    pid = _create(client, doc, patient())["id"]
    return pid, [_create(client, doc, observation(pid))["id"] for _ in range(n)]


def test_include_adds_the_referenced_patient_once(client, staff):
    doc = staff("doctor")
    pid, obs = _patient_with_observations(client, doc)
    b = _bundle(client, doc, "/fhir/Observation", {"patient": pid, "_include": "Observation:subject"})
    assert sorted(_ids(b)) == sorted(obs)
    assert _ids(b, "include") == [pid]
    assert [e["fullUrl"] for e in b["entry"] if e["search"]["mode"] == "include"] == [
        f"{BASE}/fhir/Patient/{pid}"]


def test_include_with_target_type_and_wildcard(client, staff):
    doc = staff("doctor")
    admin = staff("system_admin", institution=doc.institution)
    prac = _create(client, admin, {"resourceType": "Practitioner", "name": [{"family": "Wangmo"}]})["id"]
    pid = _create(client, doc, patient())["id"]
    oid = _create(client, doc, observation(pid, performer=[ref(f"Practitioner/{prac}")]))["id"]
    b = _bundle(client, doc, "/fhir/Observation", {"_id": oid, "_include": "Observation:*"})
    assert sorted(_ids(b, "include")) == sorted([pid, prac])
    b = _bundle(client, doc, "/fhir/Observation", {"_id": oid, "_include": "Observation:performer:Practitioner"})
    assert _ids(b, "include") == [prac]
    b = _bundle(client, doc, "/fhir/Observation", {"_id": oid, "_include": "Observation:subject:Group"})
    assert _ids(b, "include") == []


def test_revinclude_adds_observations_of_the_patients_found(client, staff):
    doc = staff("doctor")
    pid, obs = _patient_with_observations(client, doc, 3)
    other, _ = _patient_with_observations(client, doc, 1)
    b = _bundle(client, doc, "/fhir/Patient", {"_id": pid, "_revinclude": "Observation:subject"})
    assert _ids(b) == [pid]
    assert sorted(_ids(b, "include")) == sorted(obs)
    assert other not in _ids(b, "include")


def test_include_never_pulls_in_what_the_reader_may_not_see(client, staff):
    doc = staff("doctor")
    pid, obs = _patient_with_observations(client, doc, 1)
    stranger = staff("doctor")
    spid = _create(client, stranger, patient())["id"]
    _create(client, stranger, observation(spid))
    b = _bundle(client, doc, "/fhir/Patient", {"_revinclude": "Observation:subject"})
    assert _ids(b) == [pid] and _ids(b, "include") == obs


@pytest.mark.parametrize("name,spec", [
    ("_include", "Observation:shoe-size"),
    ("_include", "Patient:subject"),
    ("_include", "Observation"),
    ("_include", "Observation:status"),
    ("_include", "Observation:subject:Spaceship"),
    ("_revinclude", "Observation:shoe-size"),
    ("_revinclude", "Spaceship:subject"),
    ("_include:iterate", "Observation:subject"),
])
def test_bad_include_is_400_even_when_nothing_matches(client, staff, name, spec):
    doc = staff("doctor")
    r = client.get("/fhir/Observation", params={name: spec}, headers=doc.headers)
    assert name in _error(r)


def test_revinclude_with_a_target_type_of_another_type_adds_nothing(client, staff):
    doc = staff("doctor")
    pid, obs = _patient_with_observations(client, doc, 1)
    b = _bundle(client, doc, "/fhir/Patient", {"_id": pid, "_revinclude": "Observation:subject:Patient"})
    assert _ids(b, "include") == obs
    b = _bundle(client, doc, "/fhir/Patient", {"_id": pid, "_revinclude": "Observation:subject:Group"})
    assert _ids(b, "include") == []


# ------------------------------------------------------------------ result parameters
def test_summary_count_returns_only_the_total(client, staff):
    doc = staff("doctor")
    pid, _ = _patient_with_observations(client, doc, 3)
    b = _bundle(client, doc, "/fhir/Observation", {"patient": pid, "_summary": "count"})
    assert b["total"] == 3 and "entry" not in b


def test_elements_returns_the_named_elements_marked_subsetted(client, staff):
    doc = staff("doctor")
    pid = _create(client, doc, patient())["id"]
    b = _bundle(client, doc, "/fhir/Patient", {"_id": pid, "_elements": "gender,birthDate"})
    res = b["entry"][0]["resource"]
    assert res["gender"] == "male" and res["birthDate"] == "1980-05-01" and res["id"] == pid
    assert "name" not in res
    assert any(t["code"] == "SUBSETTED" for t in res["meta"]["tag"])
    full = client.get(f"/fhir/Patient/{pid}", headers=doc.headers).json()
    assert full["name"][0]["family"] == "Zhaxi"


def test_elements_keeps_choice_elements_by_their_base_name(client, staff):
    doc = staff("doctor")
    pid, (oid, _) = _patient_with_observations(client, doc)
    b = _bundle(client, doc, "/fhir/Observation", {"_id": oid, "_elements": "value"})
    res = b["entry"][0]["resource"]
    assert res["valueQuantity"]["value"] == 13.2 and "code" not in res


def test_total_accurate_counts_every_match_not_just_the_page(client, staff):
    doc = staff("doctor")
    pid, _ = _patient_with_observations(client, doc, 5)
    pages = _all_pages(client, doc, "/fhir/Observation", {"patient": pid, "_count": "2", "_total": "accurate"})
    assert [b["total"] for b in pages] == [5, 5, 5]
    assert "total" not in _bundle(client, doc, "/fhir/Observation", {"patient": pid})


def test_post_search_finds_the_same_as_get_and_pages(client, staff):
    doc = staff("doctor")
    pid, obs = _patient_with_observations(client, doc, 3)
    r = client.post("/fhir/Observation/_search", data={"patient": pid, "_count": "2"}, headers=doc.headers)
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["type"] == "searchset" and len(_ids(b)) == 2
    rest = _all_pages(client, doc, _next(b))
    assert _ids(b) + [i for p in rest for i in _ids(p)] == obs
    r = client.post("/fhir/Observation/_search?code=718-7", data={"patient": pid}, headers=doc.headers)
    assert sorted(_ids(r.json())) == sorted(obs)


def test_post_search_with_summary_count(client, staff):
    doc = staff("doctor")
    pid, _ = _patient_with_observations(client, doc, 2)
    r = client.post("/fhir/Observation/_search", data={"patient": pid, "_summary": "count"}, headers=doc.headers)
    assert r.status_code == 200 and r.json()["total"] == 2 and "entry" not in r.json()


def test_search_only_returns_the_own_institutions_patient_data(client, staff):
    doc = staff("doctor")
    mine = _create(client, doc, patient())["id"]
    _create(client, staff("doctor"), patient())
    assert _ids(_bundle(client, doc, "/fhir/Patient")) == [mine]


def test_search_leaves_out_deleted_resources(client, staff):
    doc = staff("doctor")
    keep = _create(client, doc, patient())["id"]
    drop = _create(client, doc, patient())["id"]
    client.delete(f"/fhir/Patient/{drop}", headers=doc.headers)
    assert _ids(_bundle(client, doc, "/fhir/Patient", {"family": "zhaxi"})) == [keep]


def test_updated_resource_is_found_by_its_new_values_only(client, staff):
    doc = staff("doctor")
    p = _create(client, doc, patient())
    client.put(f"/fhir/Patient/{p['id']}", json=dict(p, name=[{"family": "Wangmo"}]), headers=doc.headers)
    assert _ids(_bundle(client, doc, "/fhir/Patient", {"family": "zhaxi"})) == []
    assert _ids(_bundle(client, doc, "/fhir/Patient", {"family": "wangmo"})) == [p["id"]]


# ------------------------------------------------------------------ errors name the parameter
@pytest.mark.parametrize("query,named", [
    ("shoe-size=42", "shoe-size"),
    ("_has=Observation:patient:code=1", "_has"),
    ("birthdate=yesterday", "birthdate"),
    ("birthdate=2024-13-01", "birthdate"),
    ("birthdate=ge2024-02-30", "birthdate"),
    ("_lastUpdated=soon", "_lastUpdated"),
    ("family:fuzzy=zhaxi", "fuzzy"),
    ("birthdate:exact=1980", "exact"),
    ("gender:below=m", "below"),
    ("general-practitioner:identifier=x|y", "identifier"),
    ("birthdate:missing=maybe", "missing"),
    ("_count=many", "_count"),
    ("_summary=text", "_summary"),
    ("_id:missing=true", "missing"),
    ("_id.name=x", "_id"),
    ("_lastUpdated:missing=true", "missing"),
    ("organization.name.family=x", "chain"),
])
def test_bad_search_parameters_are_400_naming_them(client, staff, query, named):
    doc = staff("doctor")
    r = client.get(f"/fhir/Patient?{query}", headers=doc.headers)
    assert named in _error(r)


@pytest.mark.parametrize("query,named", [
    ("value-quantity=lots", "value-quantity"),
    ("value-quantity=NaN", "value-quantity"),
    ("value-quantity=Infinity", "value-quantity"),
    ("value-quantity=1e400", "value-quantity"),
    ("value-quantity=gt|g/dL", "value-quantity"),
    ("date=2024-08-01T25:00:00Z", "date"),
])
def test_bad_number_and_date_values_are_400_naming_the_parameter(client, staff, query, named):
    doc = staff("doctor")
    r = client.get(f"/fhir/Observation?{query}", headers=doc.headers)
    assert f"'{named}'" in _error(r)


def test_id_not_leaves_out_the_named_resources(client, staff):
    doc = staff("doctor")
    a, b = (_create(client, doc, patient())["id"] for _ in range(2))
    assert _ids(_bundle(client, doc, "/fhir/Patient", {"_id:not": a})) == [b]


def test_dates_at_the_edge_of_time_are_stored_and_searched(client, staff):
    # some systems write 9999-12-31 for "no end"; the year 0001 with an offset lies before
    # the first representable instant in UTC
    doc = staff("doctor")
    pid = _create(client, doc, patient(birthDate="0001-01-01"))["id"]
    enc = _create(client, doc, {"resourceType": "Encounter", "status": "in-progress",
                                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                          "code": "IMP"},
                                "subject": ref(f"Patient/{pid}"),
                                "period": {"start": "2024-03-01T08:00:00+08:00",
                                           "end": "9999-12-31T23:59:59+08:00"}})["id"]
    assert _ids(_bundle(client, doc, "/fhir/Encounter", {"date": "gt9999-11", "patient": pid})) == [enc]
    assert _ids(_bundle(client, doc, "/fhir/Encounter", {"date": "gt9999-12-31", "patient": pid})) == []
    assert _ids(_bundle(client, doc, "/fhir/Encounter", {"date": "9999", "patient": pid})) == []
    assert _ids(_bundle(client, doc, "/fhir/Patient", {"birthdate": "0001"})) == [pid]
    assert _ids(_bundle(client, doc, "/fhir/Patient", {"birthdate": "ge0001-01-01T00:00:00+14:00"})) == [pid]


def test_search_on_unknown_type_is_404(client, staff):
    doc = staff("doctor")
    r = client.get("/fhir/Spaceship", params={"name": "x"}, headers=doc.headers)
    assert "Spaceship" in _error(r, 404)
