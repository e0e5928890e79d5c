"""Regional prescription pre-review in the demo region (issue 8, item 3; docs/prereview.md).

:func:`seed_prereview`, run after the region is loaded (``healthlink demo`` and ``serve --demo``):

* the login ``prereview`` (role ``prereview_pharmacist``, 区域处方审核中心药师) of the regional
  centre, hosted by 玉树州人民医院 (no institution of its own in the directory: the role reads
  only what the pre-review service serves it);
* the login ``doctor.t`` at the township health centre that holds the most Patients, with a
  Practitioner whose prescribing rights are the township's usual ones: non-restricted
  antimicrobials only, no narcotic rights (抗菌药物临床应用管理办法 第二十四条);
* four prescriptions of that doctor for three of the township's Patients, submitted through
  ``Platform.prereview.submit``: a special-use antimicrobial (cefepime) without the right, amoxicillin
  without a skin-test result, aspirin without a diagnosis (queued), and paracetamol (passes
  automatically).

Idempotent: once the township doctor has submitted anything, nothing more is added.
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from healthlink.access import RequestContext
from healthlink.access.context import Actor
from healthlink.access.scopes import parse_scopes
from healthlink.accounts import add_user
from healthlink.db import tables as t
from healthlink.demo import DEMO_PASSWORD
from healthlink.demogen.region import institutions
from healthlink.medsafety.knowledge import RXNORM
from healthlink.medsafety.prereview_rules import RIGHTS_SYSTEM, SKIN_TEST_EXT
from healthlink.runtime import Platform

PHARMACIST, DOCTOR = "prereview", "doctor.t"
CENTRE_HOST = "yushu-peoples"
SNOMED, ORAL, IV = "http://snomed.info/sct", "26643006", "47625008"
GTS = "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation"


def _township(platform: Platform) -> str | None:
    towns = [i.id for i in institutions() if i.tier == "township"]
    r = t.resource
    with platform.db.read() as conn:
        row = conn.execute(select(r.c.institution_id, func.count()).where(
            r.c.res_type == "Patient", r.c.deleted.is_(False), r.c.institution_id.in_(towns))
            .group_by(r.c.institution_id).order_by(func.count().desc(), r.c.institution_id).limit(1)).first()
    return row[0] if row else None


def _users(platform: Platform) -> set[str]:
    u = t.user_account
    with platform.db.read() as conn:
        return set(conn.execute(select(u.c.username).where(u.c.username.in_([PHARMACIST, DOCTOR]))).scalars())


def _draft(patient: str, prac: str, code: str, *, dose: float, unit: str, route: str, timing: str,
           diagnosis: str | None, skin_test: str | None = None) -> dict:
    body: dict = {
        "resourceType": "MedicationRequest", "id": uuid.uuid4().hex, "status": "draft", "intent": "order",
        "authoredOn": "2026-12-03", "subject": {"reference": f"Patient/{patient}"},
        "requester": {"reference": f"Practitioner/{prac}"},
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code}]},
        "dosageInstruction": [{"route": {"coding": [{"system": SNOMED, "code": route}]},
                               "timing": {"code": {"coding": [{"system": GTS, "code": timing}]}},
                               "doseAndRate": [{"doseQuantity": {"value": dose, "unit": unit, "code": unit,
                                                                 "system": "http://unitsofmeasure.org"}}]}],
        "dispenseRequest": {"expectedSupplyDuration": {"value": 3, "unit": "d", "code": "d",
                                                       "system": "http://unitsofmeasure.org"}},
    }
    if diagnosis:
        body["reasonCode"] = [{"text": diagnosis}]
    if skin_test:
        body["extension"] = [{"url": SKIN_TEST_EXT, "valueCode": skin_test}]
    return body


def seed_prereview(platform: Platform) -> int:
    """Add the pre-review logins and the township doctor's prescriptions that are missing;
    returns the number of prescriptions submitted (0 when already there or the region has no
    township Patients)."""
    have = _users(platform)
    if PHARMACIST not in have:
        add_user(platform.db, username=PHARMACIST, password=DEMO_PASSWORD,
                 display_name="Demo prereview_pharmacist (prereview)", roles=["prereview_pharmacist"],
                 institution_id=None, practitioner_id="demo-prereview")
    town = _township(platform)
    if town is None:
        return 0
    prac = "demo-doctor-t"
    if DOCTOR not in have:
        repo = platform.system_repository("demo")
        with platform.db.write() as conn:
            repo.update_in(conn, "Practitioner", prac, {
                "resourceType": "Practitioner", "id": prac, "active": True, "name": [{"text": "Demo doctor (doctor.t)"}],
                "qualification": [{"code": {"coding": [{"system": RIGHTS_SYSTEM, "code": "antimicrobial-non-restricted",
                                                        "display": "非限制使用级抗菌药物处方权"}]}}]}, if_match=None)
        add_user(platform.db, username=DOCTOR, password=DEMO_PASSWORD, display_name="Demo doctor (doctor.t)",
                 roles=["doctor"], institution_id=town, practitioner_id=prac)
    u, p = t.user_account, t.prereview_prescription
    with platform.db.read() as conn:
        town = conn.execute(select(u.c.institution_id).where(u.c.username == DOCTOR)).scalar_one()
        if conn.execute(select(p.c.id).where(p.c.username == DOCTOR).limit(1)).first() is not None:
            return 0
        r = t.resource
        patients = list(conn.execute(select(r.c.res_id).where(
            r.c.res_type == "Patient", r.c.deleted.is_(False), r.c.institution_id == town)
            .order_by(r.c.res_id).limit(3)).scalars())
    if not patients:
        return 0
    doctor = Actor("user", DOCTOR, "Demo doctor (doctor.t)", town, frozenset({"doctor"}), parse_scopes("user/*.cruds"),
                   practitioner_id=prac)
    ctx = RequestContext(actor=doctor, address="local", user_agent="healthlink demo")
    first, second, third = (patients * 3)[:3]
    plan = [
        (first, [_draft(first, prac, "20481", dose=1, unit="g", route=IV, timing="Q12H", diagnosis="社区获得性肺炎")]),
        (second, [_draft(second, prac, "723", dose=500, unit="mg", route=ORAL, timing="TID", diagnosis="急性扁桃体炎")]),
        (third, [_draft(third, prac, "1191", dose=100, unit="mg", route=ORAL, timing="QD", diagnosis=None)]),
        (first, [_draft(first, prac, "161", dose=500, unit="mg", route=ORAL, timing="TID", diagnosis="发热")]),
    ]
    for patient, bodies in plan:
        platform.prereview.submit(ctx, patient, [{"resource": b} for b in bodies])
    return len(plan)


__all__ = ["CENTRE_HOST", "DOCTOR", "PHARMACIST", "seed_prereview"]
