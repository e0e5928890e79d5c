"""A small region for the pre-review tests (issue 8, item 3): a township health centre ``t``
(configured for pre-review by default), a county hospital ``h``; a patient at ``t`` with an
open Encounter; logged-in users (doctor at ``t`` with a Practitioner and chosen prescribing
rights, the centre's pharmacist, a hospital doctor).  ``rx`` builds a complete MedicationRequest.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from fastapi.testclient import TestClient
from grantkit import ctx
from recogkit import institution

from healthlink.access.context import Actor
from healthlink.access.scopes import parse_scopes
from healthlink.accounts import add_user
from healthlink.medsafety.knowledge import LOCAL_DRUG, RXNORM
from healthlink.medsafety.prereview_rules import RIGHTS_SYSTEM, SKIN_TEST_EXT
from healthlink.runtime import Platform

PASSWORD = "test-password-1"
SNOMED = "http://snomed.info/sct"
ORAL, IV = "26643006", "47625008"
GTS = "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation"
CST = "http://terminology.hl7.org/CodeSystem/"
__all__ = ["LOCAL_DRUG", "RXNORM", "PWorld", "User", "build", "rx", "user"]


@dataclass
class User:
    username: str
    institution: str | None
    practitioner: str
    headers: dict[str, str]
    actor: Actor


def user(client: TestClient, platform: Platform, role: str, institution: str | None, *,
         rights: tuple[str, ...] = (), practitioner: bool = True) -> User:
    """A staff user logged in over HTTP; with ``practitioner`` its Practitioner carries ``rights``
    as qualifications (codes of the prescribing-right system)."""
    name = f"{role}-{uuid.uuid4().hex[:8]}"
    pid = f"prac-{uuid.uuid4().hex[:10]}"
    if practitioner:
        body = {"resourceType": "Practitioner", "id": pid, "active": True, "name": [{"text": f"医师 {name}"}],
                "qualification": [{"code": {"coding": [{"system": RIGHTS_SYSTEM, "code": r}]}} for r in rights]}
        repo = platform.system_repository("tests")
        with platform.db.write() as conn:
            repo.update_in(conn, "Practitioner", pid, body, if_match=None)
    add_user(platform.db, username=name, password=PASSWORD, display_name=name, roles=[role],
             institution_id=institution, practitioner_id=pid)
    r = client.post("/api/auth/login", json={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    a = Actor("user", name, name, institution, frozenset({role}), parse_scopes("user/*.cruds"), practitioner_id=pid)
    return User(name, institution, pid, {"Authorization": f"Bearer {r.json()['access_token']}"}, a)


@dataclass
class PWorld:
    platform: Platform
    client: TestClient
    t: str  # township health centre
    h: str  # county hospital
    doctor: User  # at t, non-restricted and restricted antimicrobial rights
    pharmacist: User  # the centre's
    patient: str  # at t
    other: str  # another Patient at t, never submitted
    encounter: str

    def repo(self):
        return self.platform.repository(ctx(self.doctor.actor))

    def record(self, body: dict) -> str:
        return self.repo().create(body, res_type=body["resourceType"]).stored.res_id

    def med(self, code: str, *, patient: str | None = None, system: str = RXNORM) -> str:
        return self.record({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                            "medicationCodeableConcept": {"coding": [{"system": system, "code": code,
                                                                      "display": f"drug {code}"}]},
                            "subject": {"reference": f"Patient/{patient or self.patient}"},
                            "authoredOn": "2026-11-01"})

    def allergy(self, code: str, *, patient: str | None = None) -> str:
        return self.record({
            "resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{patient or self.patient}"},
            "clinicalStatus": {"coding": [{"system": CST + "allergyintolerance-clinical", "code": "active"}]},
            "verificationStatus": {"coding": [{"system": CST + "allergyintolerance-verification",
                                               "code": "confirmed"}]},
            "recordedDate": "2025-05-01", "code": {"coding": [{"system": RXNORM, "code": code,
                                                               "display": f"allergen {code}"}]}})

    def submit(self, *bodies: dict, who: User | None = None, expect: int = 201) -> dict:
        r = self.client.post("/api/prereview/prescriptions", headers=(who or self.doctor).headers,
                             json={"patient": self.patient, "encounter": self.encounter,
                                   "orders": [{"resource": b} for b in bodies]})
        assert r.status_code == expect, r.text
        return r.json()


def rx(world: PWorld, code: str, *, system: str = RXNORM, dose: float = 500, unit: str = "mg",
       route: str = ORAL, timing: str = "TID", days: int = 3, skin_test: str | None = None,
       minutes: float | None = None, diagnosis: bool = True, order_id: str | None = None) -> dict:
    """A complete MedicationRequest (every required element of the norms) for the world's patient."""
    timing_body: dict = {"code": {"coding": [{"system": GTS, "code": timing}]}}
    if minutes is not None:
        timing_body["repeat"] = {"duration": minutes, "durationUnit": "min"}
    body: dict = {
        "resourceType": "MedicationRequest", "id": order_id or uuid.uuid4().hex, "status": "draft",
        "intent": "order", "authoredOn": "2026-12-03",
        "medicationCodeableConcept": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{world.patient}"},
        "requester": {"reference": f"Practitioner/{world.doctor.practitioner}"},
        "dosageInstruction": [{"route": {"coding": [{"system": SNOMED, "code": route}]}, "timing": timing_body,
                               "doseAndRate": [{"doseQuantity": {"value": dose, "unit": unit,
                                                                 "system": "http://unitsofmeasure.org",
                                                                 "code": unit}}]}],
        "dispenseRequest": {"expectedSupplyDuration": {"value": days, "unit": "d", "code": "d",
                                                       "system": "http://unitsofmeasure.org"}},
    }
    if diagnosis:
        body["reasonCode"] = [{"text": "急性上呼吸道感染"}]
    if skin_test:
        body["extension"] = [{"url": SKIN_TEST_EXT, "valueCode": skin_test}]
    return body


def build(platform: Platform, client: TestClient) -> PWorld:
    t = institution(platform, "township", None, "测试乡卫生院 T")
    h = institution(platform, "county", None, "测试县人民医院 H")
    platform.prereview.directory.forget()
    platform.medsafety.directory.forget()
    doctor = user(client, platform, "doctor", t, rights=("antimicrobial-non-restricted", "antimicrobial-restricted"))
    pharmacist = user(client, platform, "prereview_pharmacist", None, practitioner=False)
    repo = platform.repository(ctx(doctor.actor))
    pats = [repo.create({"resourceType": "Patient", "name": [{"text": name}], "gender": "female",
                         "birthDate": "1970-03-04"}, res_type="Patient").stored.res_id
            for name in ("卓玛测试", "其他患者")]
    enc = repo.create({"resourceType": "Encounter", "status": "in-progress",
                       "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                       "subject": {"reference": f"Patient/{pats[0]}"}}, res_type="Encounter").stored.res_id
    return PWorld(platform, client, t, h, doctor, pharmacist, pats[0], pats[1], enc)
