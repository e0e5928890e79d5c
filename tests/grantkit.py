"""A small two-institution world for the grant tests (issue 5): one Person with a Patient at
institution A (where the doctor works) and at institution B, a verified phone, an open Encounter
at A, and records at B: a lab Observation, a MedicationRequest, a sensitive Condition (F32,
depression) and an HIV viral-load Observation.

Everything is written through the repository as each institution's doctor would, so the master
patient index links the two Patients (same resident ID) and the labels are written by the store.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import date, timedelta

from healthlink.access import RequestContext
from healthlink.access.context import Actor
from healthlink.access.scopes import parse_scopes
from healthlink.consent import list_messages
from healthlink.db import tables as t
from healthlink.demogen.ids import check_char
from healthlink.fhir.identifiers import RESIDENT_ID_SYSTEM
from healthlink.runtime import Platform

CODE = re.compile(r"验证码 (\d{6})")


def resident_id() -> str:
    n = uuid.uuid4().int
    born = date(1950, 1, 1) + timedelta(days=n % 20000)
    body = f"632701{born:%Y%m%d}{(n >> 20) % 1000:03d}"
    return body + check_char(body)


def phone() -> str:
    return f"139{uuid.uuid4().int % 10**8:08d}"


def actor(role: str, institution: str, username: str | None = None, *,
          practitioner_id: str | None = None) -> Actor:
    """A staff actor; to act as a web user (grants are bound to the username and practitioner),
    pass that user's ``username`` and ``practitioner_id``."""
    name = username or f"{role}-{uuid.uuid4().hex[:8]}"
    return Actor("user", name, name, institution, frozenset({role}), parse_scopes("user/*.cruds"),
                 practitioner_id=practitioner_id or f"prac-{uuid.uuid4().hex[:8]}")


def ctx(a: Actor) -> RequestContext:
    return RequestContext(actor=a)


def last_consent_code(platform: Platform, to: str) -> str:
    msgs = [m for m in list_messages(platform.db, to) if m.purpose == "consent-code"]
    assert msgs, f"no consent code sent to {to}"
    return CODE.search(msgs[0].text).group(1)


@dataclass
class World:
    a: str  # institution of the doctor
    b: str  # the other institution
    person: str
    phone: str
    patient_a: str
    patient_b: str
    encounter_a: str
    lab_b: str  # Observation (laboratory) at B
    med_b: str  # MedicationRequest at B
    depression_b: str  # Condition F32 at B (mental-health)
    hiv_b: str  # Observation HIV viral load at B (hiv-sti)
    encounter_b: str
    obs_a: str  # an Observation at A


def patient_body(ident: str, name: str = "次仁卓玛") -> dict:
    return {"resourceType": "Patient", "name": [{"text": name}], "gender": "female",
            "birthDate": f"{ident[6:10]}-{ident[10:12]}-{ident[12:14]}",
            "identifier": [{"system": RESIDENT_ID_SYSTEM, "value": ident}]}


def lab(pid: str, code: str = "2345-7", display: str = "Glucose", value: float = 5.4) -> dict:
    return {"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": "2026-11-20T08:00:00+08:00",
            "valueQuantity": {"value": value, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                              "code": "mmol/L"}}


def build(platform: Platform, a: str, b: str, *, doctor_a: Actor | None = None,
          records_at_b: bool = True) -> World:
    """The world above; ``records_at_b=False`` leaves institution B empty (no Patient, no
    records: the B fields of the World are ""), the control of the access-matrix test."""
    ident, number = resident_id(), phone()
    da = doctor_a or actor("doctor", a)
    db_ = actor("doctor", b)
    ra, rb = platform.repository(ctx(da)), platform.repository(ctx(db_))
    pa = ra.create(patient_body(ident), res_type="Patient").stored.res_id
    pb = rb.create(patient_body(ident), res_type="Patient").stored.res_id if records_at_b else ""
    with platform.db.read() as conn:
        from sqlalchemy import select

        pl = t.person_link
        person = conn.execute(select(pl.c.person_id).where(pl.c.patient_id == pa)).scalar_one()
        if records_at_b:
            assert conn.execute(select(pl.c.person_id).where(pl.c.patient_id == pb)).scalar_one() == person
    platform.patient_accounts.verify_in_person(platform.db, actor("registration_clerk", a), person, number)
    enc = ra.create({"resourceType": "Encounter", "status": "in-progress",
                     "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                     "subject": {"reference": f"Patient/{pa}"}}, res_type="Encounter").stored.res_id
    if not records_at_b:
        obs_a = ra.create(lab(pa, value=6.1), res_type="Observation").stored.res_id
        return World(a, b, person, number, pa, "", enc, "", "", "", "", "", obs_a)
    enc_b = rb.create({"resourceType": "Encounter", "status": "finished",
                       "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                       "subject": {"reference": f"Patient/{pb}"}}, res_type="Encounter").stored.res_id
    obs_a = ra.create(lab(pa, value=6.1), res_type="Observation").stored.res_id
    lab_b = rb.create(lab(pb), res_type="Observation").stored.res_id
    med_b = rb.create({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                       "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                                 "code": "6809", "display": "metformin"}]},
                       "subject": {"reference": f"Patient/{pb}"}}, res_type="MedicationRequest").stored.res_id
    dep = rb.create({"resourceType": "Condition",
                     "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "F32.1",
                                          "display": "Moderate depressive episode"}]},
                     "subject": {"reference": f"Patient/{pb}"}}, res_type="Condition").stored.res_id
    hiv = rb.create(lab(pb, "25836-8", "HIV 1 RNA", 40.0), res_type="Observation").stored.res_id
    return World(a, b, person, number, pa, pb, enc, lab_b, med_b, dep, hiv, enc_b, obs_a)
