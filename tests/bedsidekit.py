"""A ward for the bedside verification tests (issue 8, item 4).

A new institution per ward (the session's database is shared) with two inpatients, each with a
record number, an open stay and a bed; ``order`` writes a MedicationRequest as the ward's doctor
would (scheduled at a given time, or every hour); ``lab`` a lab ServiceRequest.  Scan texts come
from ``healthlink.demogen.bedside`` (GS1 pack, traceability code, ISBT 128 unit).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from grantkit import actor, ctx
from recogkit import institution

from healthlink.access.context import Actor
from healthlink.demogen.bedside import GTIN, blood_unit_label, pack_scan, trace_code
from healthlink.medsafety import barcodes as B
from healthlink.medsafety.knowledge import LOCAL_DRUG
from healthlink.runtime import Platform

SNOMED = "http://snomed.info/sct"
ORAL, IV = "26643006", "47625008"
MR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}
__all__ = ["GTIN", "Ward", "blood_unit_label", "build", "pack_scan", "trace_code"]


@dataclass
class Ward:
    platform: Platform
    inst: str
    doctor: Actor
    patients: list[str]  # two inpatients
    encounters: list[str]
    names: list[str]

    def wristband(self, n: int = 0) -> str:
        return B.wristband_payload(self.patients[n], self.encounters[n])

    def order(self, code: str, dose: float, unit: str = "mg", *, n: int = 0, route: str = ORAL,
              at: datetime | None = None, status: str = "active", tier_inst: str | None = None) -> str:
        """A MedicationRequest for patient ``n``: scheduled at ``at`` (default: now)."""
        when = (at or datetime.now(UTC)).isoformat(timespec="seconds")
        body = {"resourceType": "MedicationRequest", "status": status, "intent": "order",
                "medicationCodeableConcept": {"coding": [{"system": LOCAL_DRUG, "code": code}]},
                "subject": {"reference": f"Patient/{self.patients[n]}"},
                "encounter": {"reference": f"Encounter/{self.encounters[n]}"},
                "authoredOn": datetime.now(UTC).date().isoformat(),
                "dosageInstruction": [{"timing": {"event": [when]},
                                       "route": {"coding": [{"system": SNOMED, "code": route}]},
                                       "doseAndRate": [{"doseQuantity": {"value": dose, "unit": unit,
                                                                         "system": "http://unitsofmeasure.org",
                                                                         "code": unit}}]}]}
        return self.platform.repository(ctx(self.doctor)).create(body, res_type="MedicationRequest").stored.res_id

    def lab(self, n: int = 0) -> str:
        body = {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                "category": [{"coding": [{"system": SNOMED, "code": "108252007"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2"}], "text": "CBC"},
                "subject": {"reference": f"Patient/{self.patients[n]}"},
                "encounter": {"reference": f"Encounter/{self.encounters[n]}"}}
        return self.platform.repository(ctx(self.doctor)).create(body, res_type="ServiceRequest").stored.res_id


def build(platform: Platform, *, inst: str | None = None, tier: str = "county") -> Ward:
    inst = inst or institution(platform, tier, None, f"病区测试医院 {uuid.uuid4().hex[:6]}")
    platform.prereview.directory.forget() if hasattr(platform.prereview, "directory") else None
    doctor = actor("doctor", inst)
    repo = platform.repository(ctx(doctor))
    names = [f"卓玛{uuid.uuid4().hex[:4]}", f"扎西{uuid.uuid4().hex[:4]}"]
    patients, encounters = [], []
    for n, name in enumerate(names):
        p = repo.create({"resourceType": "Patient", "name": [{"text": name}], "gender": ["female", "male"][n],
                         "birthDate": ["1961-03-04", "1958-07-09"][n],
                         "identifier": [{"type": MR, "system": f"urn:mrn:{inst}",
                                         "value": f"MR{uuid.uuid4().int % 10**8:08d}"}]},
                        res_type="Patient").stored.res_id
        e = repo.create({"resourceType": "Encounter", "status": "in-progress",
                         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                         "subject": {"reference": f"Patient/{p}"},
                         "location": [{"location": {"display": f"内科 {12 + n}床"}, "status": "active"}]},
                        res_type="Encounter").stored.res_id
        patients.append(p)
        encounters.append(e)
    return Ward(platform, inst, doctor, patients, encounters, names)


def later(days: int) -> date:
    return datetime.now(UTC).date() + timedelta(days=days)
