"""Clinical history of one Patient record: encounters, laboratory results, imaging
reports, prescriptions, allergies and diagnoses.

Counts per record follow the reference prefecture (Yushu: 1,270,849 patient files,
1,154,277 outpatient visits, 6,310,356 prescriptions): on average 0.908 outpatient visits
and 4.97 prescriptions per Patient record.  Each record's history comes from its own
random stream, so it does not depend on any other record.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import datetime, timedelta

from healthlink.demogen import catalog as c
from healthlink.demogen.people import REFERENCE_DATE, PatientRecord
from healthlink.demogen.region import STAFF, by_id

OUTPATIENT_PER_RECORD = 1_154_277 / 1_270_849
RX_PER_RECORD = 6_310_356 / 1_270_849
INPATIENT_PER_RECORD = 0.06
RX_PER_ENCOUNTER = RX_PER_RECORD / (OUTPATIENT_PER_RECORD + INPATIENT_PER_RECORD)
LOINC, UCUM, ICD10 = "http://loinc.org", "http://unitsofmeasure.org", "http://hl7.org/fhir/sid/icd-10"
SNOMED, RXNORM = "http://snomed.info/sct", "http://www.nlm.nih.gov/research/umls/rxnorm"
LOCAL_PANEL = "https://healthlink.example.org/fhir/CodeSystem/lab-panel"
INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
GTS = "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation"
BODY_SITE = "http://hl7.org/fhir/StructureDefinition/bodySite"  # R4 DiagnosticReport has no bodySite
CST = "http://terminology.hl7.org/CodeSystem/"
TZ = "+08:00"


def poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method: fine for the small means used here
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _cc(system: str, code: str, display: str | None = None) -> dict:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def _when(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + TZ


def history(seed: int, rec: PatientRecord) -> Iterator[dict]:
    rng = random.Random(f"{seed}:clinical:{rec.patient_id}")
    pid, subject = rec.patient_id, {"reference": f"Patient/{rec.patient_id}"}
    age = (REFERENCE_DATE - rec.person.birth).days / 365.25
    n_chronic = poisson(rng, 0.1 + age / 80)
    chronic = {x[0]: x for x in rng.choices(c.CHRONIC, c.CHRONIC_WEIGHTS, k=n_chronic)}.values()
    for i, (code, disp, _) in enumerate(chronic):
        yield {"resourceType": "Condition", "id": f"{pid}-c{i}", "subject": subject,
               "clinicalStatus": _cc(CST + "condition-clinical", "active"),
               "verificationStatus": _cc(CST + "condition-ver-status", "confirmed"),
               "category": [_cc(CST + "condition-category", "problem-list-item")],
               "code": _cc(ICD10, code, disp)}
    if rng.random() < 0.08:
        rx, name, cat = rng.choice(c.ALLERGENS)
        yield {"resourceType": "AllergyIntolerance", "id": f"{pid}-a0", "patient": subject,
               "clinicalStatus": _cc(CST + "allergyintolerance-clinical", "active"),
               "verificationStatus": _cc(CST + "allergyintolerance-verification", "confirmed"),
               "type": "allergy", "category": [cat], "criticality": rng.choice(("low", "high")),
               "code": _cc(RXNORM, rx, name),
               "reaction": [{"manifestation": [_cc(SNOMED, *rng.choice(c.REACTIONS))]}]}
    doctors = STAFF[by_id()[rec.institution].tier]
    kinds = ["AMB"] * poisson(rng, OUTPATIENT_PER_RECORD) + ["IMP"] * poisson(rng, INPATIENT_PER_RECORD)
    for e, kind in enumerate(kinds):
        yield from _encounter(rng, rec, f"{pid}-e{e}", kind, list(chronic), doctors)


def _encounter(rng: random.Random, rec: PatientRecord, eid: str, kind: str, chronic: list, doctors: int) -> Iterator[dict]:
    subject, enc = {"reference": f"Patient/{rec.patient_id}"}, {"reference": f"Encounter/{eid}"}
    start = datetime(REFERENCE_DATE.year, 1, 1, 8) - timedelta(days=rng.randrange(3 * 365), minutes=rng.randrange(600))
    end = start + (timedelta(minutes=rng.randrange(10, 60)) if kind == "AMB" else timedelta(days=rng.randrange(2, 15)))
    reason = rng.choices(c.ACUTE, c.ACUTE_WEIGHTS)[0] if (not chronic or rng.random() < 0.6) else rng.choice(chronic)
    doctor = f"{rec.institution}-pr{rng.randrange(doctors):03d}"
    yield {"resourceType": "Encounter", "id": eid, "status": "finished",
           "class": {"system": ACT, "code": kind, "display": "ambulatory" if kind == "AMB" else "inpatient encounter"},
           "subject": subject, "period": {"start": _when(start), "end": _when(end)},
           "participant": [{"individual": {"reference": f"Practitioner/{doctor}"}}],
           "reasonCode": [_cc(ICD10, reason[0], reason[1])],
           "serviceProvider": {"reference": f"Organization/{rec.institution}"}}
    yield {"resourceType": "Condition", "id": f"{eid}-dx", "subject": subject, "encounter": enc,
           "clinicalStatus": _cc(CST + "condition-clinical", "active" if reason in chronic else "resolved"),
           "verificationStatus": _cc(CST + "condition-ver-status", "confirmed"),
           "category": [_cc(CST + "condition-category", "encounter-diagnosis")],
           "code": _cc(ICD10, reason[0], reason[1]), "recordedDate": _when(start)}
    panels = (1 if rng.random() < 0.8 else 0) + (1 if rng.random() < 0.4 else 0) + (2 if kind == "IMP" else 0)
    for k, panel in enumerate(rng.choices(c.PANELS, c.PANEL_WEIGHTS, k=panels)):
        yield from _lab(rng, f"{eid}-l{k}", panel, subject, enc, start + timedelta(minutes=30))
    if rng.random() < (0.5 if kind == "IMP" else 0.1):
        yield _imaging(rng, f"{eid}-i0", subject, enc, start + timedelta(hours=1))
    pool = [d for cond in chronic for d in cond[2]] + list(reason[2])
    for k in range(poisson(rng, RX_PER_ENCOUNTER)):
        yield _prescription(rng, f"{eid}-m{k}", rng.choice(pool), subject, enc, doctor, start)


def _lab(rng: random.Random, rid: str, panel: tuple, subject: dict, enc: dict, when: datetime) -> Iterator[dict]:
    code, name, tests = panel
    refs = []
    for j, (loinc, disp, unit, low, high) in enumerate(tests):
        lo = low if low is not None else high * 0.3
        hi = high if high is not None else low * 2.5
        value = round(max(rng.gauss((lo + hi) / 2, (hi - lo) / 3.2), lo * 0.2), 2 if hi < 20 else 1)
        flag = "H" if high is not None and value > high else "L" if low is not None and value < low else "N"
        rng_: dict = {}
        if low is not None:
            rng_["low"] = {"value": low, "unit": unit, "system": UCUM, "code": unit}
        if high is not None:
            rng_["high"] = {"value": high, "unit": unit, "system": UCUM, "code": unit}
        oid = f"{rid}-{j}"
        refs.append({"reference": f"Observation/{oid}"})
        yield {"resourceType": "Observation", "id": oid, "status": "final",
               "category": [_cc(CST + "observation-category", "laboratory")],
               "code": _cc(LOINC, loinc, disp), "subject": subject, "encounter": enc,
               "effectiveDateTime": _when(when),
               "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
               "interpretation": [_cc(INTERP, flag)], "referenceRange": [rng_]}
    yield {"resourceType": "DiagnosticReport", "id": rid, "status": "final",
           "category": [_cc(CST + "v2-0074", "LAB")],
           "code": _cc(LOCAL_PANEL if code.startswith("HL-") else LOINC, code, name),
           "subject": subject, "encounter": enc, "effectiveDateTime": _when(when),
           "issued": _when(when + timedelta(hours=2)), "result": refs}


def _imaging(rng: random.Random, rid: str, subject: dict, enc: dict, when: datetime) -> dict:
    loinc, disp, site, site_disp, (normal, abnormal) = rng.choice(c.IMAGING)
    finding = abnormal if rng.random() < 0.3 else normal
    return {"resourceType": "DiagnosticReport", "id": rid, "status": "final",
            "extension": [{"url": BODY_SITE, "valueCodeableConcept": _cc(SNOMED, site, site_disp)}],
            "category": [_cc(CST + "v2-0074", "RAD")], "code": _cc(LOINC, loinc, disp),
            "subject": subject, "encounter": enc, "effectiveDateTime": _when(when),
            "issued": _when(when + timedelta(hours=3)), "conclusion": finding}


def _prescription(rng: random.Random, mid: str, drug: tuple, subject: dict, enc: dict, doctor: str,
                  when: datetime) -> dict:
    rx, name, dose, unit, (route, route_disp), timing = drug
    return {"resourceType": "MedicationRequest", "id": mid, "status": rng.choice(("completed", "active")),
            "intent": "order", "medicationCodeableConcept": _cc(RXNORM, rx, name),
            "subject": subject, "encounter": enc, "authoredOn": _when(when),
            "requester": {"reference": f"Practitioner/{doctor}"},
            "dosageInstruction": [{"text": f"{name} {dose} {unit} {timing}",
                                   "timing": {"code": _cc(GTS, timing)},
                                   "route": _cc(SNOMED, route, route_disp),
                                   "doseAndRate": [{"doseQuantity": {"value": dose, "unit": unit,
                                                                     "system": UCUM, "code": unit}}]}],
            "dispenseRequest": {"expectedSupplyDuration": {"value": rng.choice((3, 7, 14, 28)), "unit": "d",
                                                           "system": UCUM, "code": "d"}}}
