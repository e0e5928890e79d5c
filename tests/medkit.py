"""A small region for the order-time medication check tests (issue 8, item 2).

Institutions ``a`` (where the prescriber works) and ``b`` (another hospital), each new per world
(the session's database is shared).  One Person (same resident ID, so the master patient index
links them) has a Patient at each; an Encounter is open at ``a``.  ``med``, ``allergy`` and
``weight`` write records at an institution as its doctor would; ``draft`` builds the draft
MedicationRequest the doctor at ``a`` is about to sign; ``grant`` gives the doctor at ``a`` an
active grant by the patient's code.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, timedelta

from grantkit import actor, ctx, last_consent_code, phone
from recogkit import institution
from sqlalchemy import select

from healthlink.access.context import Actor
from healthlink.db import tables as t
from healthlink.demogen.ids import check_char
from healthlink.fhir.identifiers import RESIDENT_ID_SYSTEM
from healthlink.medsafety.knowledge import LOCAL_DRUG, RXNORM
from healthlink.medsafety.service import MedCheck
from healthlink.runtime import Platform

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ORAL = "26643006"
GTS = "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation"
CST = "http://terminology.hl7.org/CodeSystem/"
__all__ = ["LOCAL_DRUG", "RXNORM", "MWorld", "build"]


def resident_id(born: date) -> str:
    body = f"632701{born:%Y%m%d}{uuid.uuid4().int % 1000:03d}"
    return body + check_char(body)


@dataclass
class MWorld:
    platform: Platform
    a: str
    b: str
    person: str
    phone: str
    patients: dict[str, str]  # institution -> local Patient id
    encounter: str  # open Encounter at a
    doctor: Actor  # doctor at a
    doctors: dict[str, Actor]

    @property
    def patient(self) -> str:
        return self.patients[self.a]

    def repo(self, inst: str):  # noqa: ANN201
        return self.platform.repository(ctx(self.doctors[inst]))

    def med(self, inst: str, code: str, *, system: str = RXNORM, status: str = "active",
            when: str = "2026-10-01", security: str | None = None, statement: bool = False) -> str:
        """A MedicationRequest (or MedicationStatement) at ``inst``; returns its id."""
        subject = {"reference": f"Patient/{self.patients[inst]}"}
        cc = {"coding": [{"system": system, "code": code}]}
        if statement:
            body = {"resourceType": "MedicationStatement", "status": status, "medicationCodeableConcept": cc,
                    "subject": subject, "effectiveDateTime": when}
        else:
            body = {"resourceType": "MedicationRequest", "status": status, "intent": "order",
                    "medicationCodeableConcept": cc, "subject": subject, "authoredOn": when}
        if security:
            body["meta"] = {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                          "code": security}]}
        return self.repo(inst).create(body, res_type=body["resourceType"]).stored.res_id

    def allergy(self, inst: str, code: str, *, system: str = RXNORM, status: str = "active",
                verification: str = "confirmed", when: str = "2025-05-01") -> str:
        body = {"resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{self.patients[inst]}"},
                "clinicalStatus": {"coding": [{"system": CST + "allergyintolerance-clinical", "code": status}]},
                "verificationStatus": {"coding": [{"system": CST + "allergyintolerance-verification",
                                                   "code": verification}]},
                "type": "allergy", "category": ["medication"], "recordedDate": when,
                "code": {"coding": [{"system": system, "code": code}]}}
        return self.repo(inst).create(body, res_type="AllergyIntolerance").stored.res_id

    def weight(self, inst: str, kg: float, *, when: str = "2026-11-20T09:00:00+08:00") -> str:
        body = {"resourceType": "Observation", "status": "final",
                "category": [{"coding": [{"system": CST + "observation-category", "code": "vital-signs"}]}],
                "code": {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body weight"}]},
                "subject": {"reference": f"Patient/{self.patients[inst]}"}, "effectiveDateTime": when,
                "valueQuantity": {"value": kg, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}}
        return self.repo(inst).create(body, res_type="Observation").stored.res_id

    def grant(self, who: Actor | None = None) -> str:
        who = who or self.doctor
        g = self.platform.grants.request(ctx(who), patient_id=self.patient, encounter_id=self.encounter,
                                         purpose="medication check test")
        g = self.platform.grants.confirm_code(ctx(who), g.id, last_consent_code(self.platform, self.phone))
        assert g.status == "active"
        return g.id

    def check(self, draft: dict, who: Actor | None = None, **kw) -> MedCheck:  # noqa: ANN003
        return self.platform.medsafety.check(ctx(who or self.doctor), self.patient, draft,
                                             encounter_id=self.encounter, **kw)


def draft(code: str, *, system: str = RXNORM, dose: float | None = None, unit: str = "mg",
          route: str = ORAL, timing: str | None = None, per_day: int | None = None) -> dict:
    """A draft MedicationRequest at ``a`` (no subject needed by the check)."""
    body: dict = {"resourceType": "MedicationRequest", "status": "draft", "intent": "order",
                  "medicationCodeableConcept": {"coding": [{"system": system, "code": code}]}}
    dosage: dict = {"route": {"coding": [{"system": SNOMED, "code": route}]}}
    if dose is not None:
        dosage["doseAndRate"] = [{"doseQuantity": {"value": dose, "unit": unit,
                                                   "system": "http://unitsofmeasure.org", "code": unit}}]
    if timing:
        dosage["timing"] = {"code": {"coding": [{"system": GTS, "code": timing}]}}
    elif per_day:
        dosage["timing"] = {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}}
    body["dosageInstruction"] = [dosage]
    return body


def build(platform: Platform, *, born: date | None = None, name: str = "次仁卓玛") -> MWorld:
    a = institution(platform, "county", None, "县人民医院 A")
    b = institution(platform, "prefecture", None, "州人民医院 B")
    platform.medsafety.directory.forget()  # the directory cache: see the new institutions now
    born = born or date(1960, 1, 1) + timedelta(days=uuid.uuid4().int % 12000)
    ident, number = resident_id(born), phone()
    doctors = {i: actor("doctor", i) for i in (a, b)}
    patients = {}
    for inst, d in doctors.items():
        body = {"resourceType": "Patient", "name": [{"text": name}], "gender": "female",
                "birthDate": born.isoformat(), "identifier": [{"system": RESIDENT_ID_SYSTEM, "value": ident}]}
        patients[inst] = platform.repository(ctx(d)).create(body, res_type="Patient").stored.res_id
    with platform.db.read() as conn:
        pl = t.person_link
        persons = {conn.execute(select(pl.c.person_id).where(pl.c.patient_id == p)).scalar_one()
                   for p in patients.values()}
    assert len(persons) == 1, "the master patient index did not link the world's Patients"
    person = persons.pop()
    platform.patient_accounts.verify_in_person(platform.db, actor("registration_clerk", a), person, number)
    enc = platform.repository(ctx(doctors[a])).create(
        {"resourceType": "Encounter", "status": "in-progress",
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
         "subject": {"reference": f"Patient/{patients[a]}"}}, res_type="Encounter").stored.res_id
    return MWorld(platform, a, b, person, number, patients, enc, doctors[a], doctors)
