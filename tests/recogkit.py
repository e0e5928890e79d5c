"""A small region for the mutual recognition tests (issue 7).

Institutions, each new per world (the session's database is shared):

* ``a``  — county hospital of consortium ``c1``: where the ordering doctor works;
* ``b``  — prefecture hospital, qualified for every item (EQA) since 2020;
* ``t``  — township centre of consortium ``c1``, qualified for every item;
* ``x``  — county hospital of another consortium ``c2``, qualified for every item;
* ``q``  — county hospital whose qualification ran out on 2026-02-28;
* ``n``  — county hospital never qualified.

One Person (same resident ID) has a Patient at each, linked by the master patient index; an
Encounter is open at ``a``.  ``result(inst, ...)`` writes a result there as that institution's
doctor would.  The recognition clock is pinned with :func:`pinned` (the region's calendar is
Asia/Shanghai).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime

from grantkit import actor, ctx, last_consent_code, patient_body, resident_id
from sqlalchemy import select

from healthlink.access.context import Actor
from healthlink.db import tables as t
from healthlink.demo import organization
from healthlink.runtime import Platform

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
CONSORTIUM = "https://healthlink.example.org/fhir/CodeSystem/county-medical-consortium"
BODY_SITE = "http://hl7.org/fhir/StructureDefinition/bodySite"
SYSTEM = Actor.system("tests")


def institution(platform: Platform, tier: str, consortium: str | None = None, name: str | None = None) -> str:
    org_id = f"org-{uuid.uuid4().hex[:10]}"
    body = organization(org_id, name or f"Test {tier} {org_id}", tier, None)
    if consortium:
        body["type"].append({"coding": [{"system": CONSORTIUM, "code": consortium}]})
    repo = platform.system_repository("tests")
    with platform.db.write() as conn:
        repo.update_in(conn, "Organization", org_id, body, if_match=None)
    platform.recognition.directory.forget()  # the directory cache: see the new institution now
    return org_id


@dataclass
class RWorld:
    platform: Platform
    a: str
    b: str
    t: str
    x: str
    q: str
    n: str
    ident: str
    person: str
    phone: str
    patients: dict[str, str]  # institution -> local Patient id
    encounter: str  # open Encounter at a
    doctor: Actor  # doctor at a
    doctors: dict[str, Actor] = field(default_factory=dict)  # a doctor per institution

    @property
    def patient(self) -> str:
        return self.patients[self.a]

    def repo(self, inst: str):  # noqa: ANN201
        return self.platform.repository(ctx(self.doctors[inst]))

    def result(self, inst: str, code: str = "2823-3", *, when: str = "2026-03-05T09:00:00+08:00",
               status: str = "final", value: float = 4.1, unit: str = "mmol/L", system: str = LOINC,
               patient: str | None = None, low: float | None = 3.5, high: float | None = 5.3,
               flag: str = "N") -> str:
        """A laboratory Observation at ``inst``; returns its id."""
        body = {"resourceType": "Observation", "status": status,
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                          "code": "laboratory"}]}],
                "code": {"coding": [{"system": system, "code": code}]},
                "subject": {"reference": f"Patient/{patient or self.patients[inst]}"},
                "effectiveDateTime": when,
                "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
                "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                                "code": flag}]}],
                "referenceRange": [{"low": {"value": low, "unit": unit}, "high": {"value": high, "unit": unit}}]}
        return self.repo(inst).create(body, res_type="Observation").stored.res_id

    def imaging(self, inst: str, loinc: str = "24627-2", *, site: str = "51185008",
                site_display: str = "Thoracic structure", modality: str = "CT",
                when: str = "2026-03-05T10:00:00+08:00") -> tuple[str, str]:
        """An ImagingStudy and its DiagnosticReport at ``inst``; returns (study id, report id)."""
        repo, pid = self.repo(inst), self.patients[inst]
        study = repo.create({
            "resourceType": "ImagingStudy", "status": "available", "subject": {"reference": f"Patient/{pid}"},
            "started": when, "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": modality}],
            "series": [{"uid": f"1.2.826.0.1.{uuid.uuid4().int % 10**12}", "modality": {
                "system": "http://dicom.nema.org/resources/ontology/DCM", "code": modality},
                "bodySite": {"system": SNOMED, "code": site, "display": site_display}}]},
            res_type="ImagingStudy").stored.res_id
        report = repo.create({
            "resourceType": "DiagnosticReport", "status": "final",
            "extension": [{"url": BODY_SITE, "valueCodeableConcept": {"coding": [
                {"system": SNOMED, "code": site, "display": site_display}]}}],
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
            "code": {"coding": [{"system": LOINC, "code": loinc}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
            "imagingStudy": [{"reference": f"ImagingStudy/{study}"}],
            "conclusion": "未见明显异常 No abnormality"}, res_type="DiagnosticReport").stored.res_id
        return study, report

    def grant(self, who: Actor | None = None) -> str:
        """An active grant (patient's code) for ``who`` (default the doctor at a); returns its id."""
        who = who or self.doctor
        g = self.platform.grants.request(ctx(who), patient_id=self.patient, encounter_id=self.encounter,
                                         purpose="recognition test")
        g = self.platform.grants.confirm_code(ctx(who), g.id, last_consent_code(self.platform, self.phone))
        assert g.status == "active"
        return g.id


def build(platform: Platform, *, name: str = "次仁卓玛") -> RWorld:
    from grantkit import phone

    a = institution(platform, "county", "c1", "县人民医院 A")
    b = institution(platform, "prefecture", None, "州人民医院 B")
    tt = institution(platform, "township", "c1", "乡卫生院 T")
    x = institution(platform, "county", "c2", "另一县医院 X")
    q = institution(platform, "county", "c1", "资质过期医院 Q")
    n = institution(platform, "county", "c1", "未获资质医院 N")
    rec = platform.recognition
    sysctx = ctx(SYSTEM)
    for inst in (b, tt, x):
        rec.qualify(sysctx, institution_id=inst, item_id="*", basis="eqa", valid_from=date(2020, 1, 1))
    rec.qualify(sysctx, institution_id=q, item_id="*", basis="qc-centre", valid_from=date(2020, 1, 1),
                valid_to=date(2026, 2, 28))
    ident, number = resident_id(), phone()
    doctors = {i: actor("doctor", i) for i in (a, b, tt, x, q, n)}
    patients = {}
    for inst, d in doctors.items():
        patients[inst] = platform.repository(ctx(d)).create(patient_body(ident, name), res_type="Patient").stored.res_id
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
    return RWorld(platform, a, b, tt, x, q, n, ident, person, number, patients, enc, doctors[a], doctors)


@contextlib.contextmanager
def pinned(platform: Platform, moment: str) -> Iterator[None]:
    """Pin the recognition clock at ``moment`` (ISO 8601 with offset)."""
    rec = platform.recognition
    old = rec.clock
    at = datetime.fromisoformat(moment)
    rec.clock = lambda: at
    try:
        yield
    finally:
        rec.clock = old
