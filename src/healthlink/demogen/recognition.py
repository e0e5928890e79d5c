"""Mutual recognition in the demo region (issue 7, item 9): who is qualified, and results to
recognise.

* :func:`qualification_plan` / :func:`seed_qualifications` — the region's qualified issuers,
  recorded through ``Platform.recognition.qualify`` by the platform's system actor, once:
  a second run adds nothing.  The prefecture and county hospitals passed the provincial
  external quality assessment (EQA) for every item; four of five township centres passed the
  county quality-control centre's check for the basic panels (blood count, electrolytes,
  glucose, renal function) and their analytes only; the other townships are not qualified;
  one county hospital's qualification (:data:`EXPIRED`) ran out on 2026-06-30.
* :func:`source_result` — a laboratory panel (DiagnosticReport and its Observations, as
  :mod:`healthlink.demogen.clinical` writes them) or an imaging study (ImagingStudy plus its
  DiagnosticReport) of one Patient at one date, for the replay (:mod:`.replay`) and
  bench/cds_recognition.py.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from healthlink.access import RequestContext
from healthlink.access.context import Actor
from healthlink.demogen import catalog as c
from healthlink.demogen.clinical import BODY_SITE, CST, LOINC, SNOMED, _cc, _lab, _when
from healthlink.demogen.region import institutions
from healthlink.recognition.catalogue import Catalogue, Item
from healthlink.recognition.catalogue import load as load_catalogue
from healthlink.runtime import Platform

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EXPIRED = "zaduo-tibetan"  # the institution whose qualification expired
EQA_FROM, TOWNSHIP_FROM, EXPIRED_TO = date(2025, 1, 1), date(2025, 7, 1), date(2026, 6, 30)
BASIC_PANELS = ("58410-2", "24326-1", "HL-GLU", "24362-6")  # CBC, electrolytes, glucose, renal
EQA_REF = "青海省临床检验中心室间质量评价 2025 (demo)"
QC_REF = "县质控中心现场检查 2025 (demo)"


@dataclass(frozen=True)
class Qual:
    institution_id: str
    item_id: str
    basis: str
    valid_from: date
    valid_to: date | None
    reference: str


def basic_items(cat: Catalogue) -> list[str]:
    """The basic panels and their member analytes, as catalogue item ids."""
    out: list[str] = []
    for code, _, tests in c.PANELS:
        if code not in BASIC_PANELS:
            continue
        for item in (_item_of(cat, code), *(cat.by_code(LOINC, t[0]) for t in tests)):
            if item is not None and item.id not in out:
                out.append(item.id)
    return out


def qualification_plan(cat: Catalogue | None = None) -> list[Qual]:
    cat = cat or load_catalogue()
    basics = basic_items(cat)
    plan: list[Qual] = []
    townships = 0
    for inst in institutions():
        if inst.id == EXPIRED:
            plan.append(Qual(inst.id, "*", "eqa", date(2024, 1, 1), EXPIRED_TO, "青海省临床检验中心室间质量评价 2024 (demo)"))
        elif inst.tier in ("prefecture", "county"):
            plan.append(Qual(inst.id, "*", "eqa", EQA_FROM, None, EQA_REF))
        else:
            townships += 1
            if townships % 5 == 0:
                continue  # not (yet) qualified
            plan.extend(Qual(inst.id, item, "qc-centre", TOWNSHIP_FROM, None, QC_REF) for item in basics)
    return plan


def system_context() -> RequestContext:
    return RequestContext(actor=Actor.system("demogen"), address="local", purpose_of_use="HOPERAT")


def seed_qualifications(platform: Platform) -> int:
    """Record the planned qualifications that are missing; returns how many were added."""
    have = {(q.institution_id, q.item_id, q.basis, q.valid_from, q.valid_to)
            for q in platform.recognition.qualifications()}
    ctx, added = system_context(), 0
    for q in qualification_plan():
        if (q.institution_id, q.item_id, q.basis, q.valid_from, q.valid_to) in have:
            continue
        platform.recognition.qualify(ctx, institution_id=q.institution_id, item_id=q.item_id, basis=q.basis,
                                     valid_from=q.valid_from, valid_to=q.valid_to, reference=q.reference)
        added += 1
    return added


# ------------------------------------------------------------------ results to recognise
def _item_of(cat: Catalogue, code: str) -> Item | None:
    from healthlink.demogen.clinical import LOCAL_PANEL

    return cat.by_code(LOCAL_PANEL if code.startswith("HL-") else LOINC, code)


def panel_of(item: Item) -> tuple | None:
    """The generator's panel for a panel item (``HR-P-CBC`` -> the CBC panel), else None."""
    codes = {item.loinc} | {code for _, code in item.local_codes}
    return next((p for p in c.PANELS if p[0] in codes), None)


def imaging_of(item: Item) -> tuple | None:
    return next((i for i in c.IMAGING if i[0] == item.loinc), None)


def order_code(item: Item) -> tuple[str, str]:
    """The code a doctor orders the item by: the generator's panel or study code."""
    p = panel_of(item)
    if p is not None:
        from healthlink.demogen.clinical import LOCAL_PANEL

        return (LOCAL_PANEL if p[0].startswith("HL-") else LOINC), p[0]
    return LOINC, item.loinc or ""


def source_result(rng: random.Random, rid: str, item: Item, patient_id: str, institution: str,
                  when: datetime, *, encounter_id: str | None = None) -> list[dict]:
    """The resources of one result of ``item`` for ``patient_id`` at ``when`` (naive, region
    time): a panel's Observations and DiagnosticReport, or an ImagingStudy and its report."""
    subject = {"reference": f"Patient/{patient_id}"}
    enc = {"reference": f"Encounter/{encounter_id}"} if encounter_id else None
    panel = panel_of(item)
    if panel is not None:
        out = list(_lab(rng, rid, panel, subject, enc or {}, when))
        if enc is None:
            for res in out:
                res.pop("encounter", None)
        return out
    img = imaging_of(item)
    if img is None:
        raise ValueError(f"the demo writes no results of {item.id}")
    loinc, disp, site, site_disp, (normal, abnormal) = img
    modality = (item.modality or ("OT",))[0]
    uid = "2.25." + str(rng.getrandbits(96))
    study = {"resourceType": "ImagingStudy", "id": f"{rid}-s", "status": "available",
             "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}],
             "modality": [{"system": DCM, "code": modality}], "subject": subject, "started": _when(when),
             "numberOfSeries": 1, "numberOfInstances": rng.randrange(1, 300),
             "procedureCode": [_cc(LOINC, loinc, disp)],
             "series": [{"uid": f"{uid}.1", "number": 1, "modality": {"system": DCM, "code": modality},
                         "bodySite": {"system": SNOMED, "code": site, "display": site_disp},
                         "started": _when(when)}]}
    report = {"resourceType": "DiagnosticReport", "id": rid, "status": "final",
              "extension": [{"url": BODY_SITE, "valueCodeableConcept": _cc(SNOMED, site, site_disp)}],
              "category": [_cc(CST + "v2-0074", "RAD")], "code": _cc(LOINC, loinc, disp),
              "subject": subject, "effectiveDateTime": _when(when),
              "issued": _when(when + timedelta(hours=3)),
              "imagingStudy": [{"reference": f"ImagingStudy/{rid}-s"}],
              "conclusion": abnormal if rng.random() < 0.3 else normal}
    if enc is not None:
        study["encounter"] = enc
        report["encounter"] = enc
    return [study, report]


# ------------------------------------------------------------------ the demo patient's recent results
DEMO_RECENT = (("HR-P-ELEC", 2), ("HR-P-GLU", 3), ("HR-CT-CHEST", 5))  # item, days before the seed


def demo_patient_results(platform: Platform, person_id: str, home: str, *,
                         now: datetime | None = None) -> tuple[str, int] | None:
    """Give the demo patient (``healthlink serve --demo`` prints it) recent results at another
    institution of the Person that is qualified for every item — electrolytes 2 days, glucose 3
    days and a chest CT 5 days before the seed — so that ordering them at the demo doctor's hospital
    pops up recognisable results (issue 7).  Written once (fixed ids; a second run writes nothing).
    Returns (the institution, resources written), or None when the Person has no such institution."""
    from sqlalchemy import select

    from healthlink.db import tables as tb
    from healthlink.demogen.load import _repo
    from healthlink.fhir import store

    cat = platform.recognition.catalogue
    everything = {q.institution_id for q in platform.recognition.qualifications() if q.item_id == "*"
                  and q.valid_to is None}
    tiers = {i.id: i.tier for i in institutions()}
    with platform.db.read() as conn:
        rows = conn.execute(select(tb.person_link.c.institution_id, tb.person_link.c.patient_id)
                            .where(tb.person_link.c.person_id == person_id)
                            .order_by(tb.person_link.c.institution_id, tb.person_link.c.patient_id)).all()
    source = next(((inst, pid) for inst, pid in rows if inst != home and inst in everything
                   and tiers.get(inst) in ("prefecture", "county")), None)
    if source is None:
        return None
    inst, patient = source
    now = now or datetime.now()
    rng = random.Random(f"demo-recent-{person_id}")
    resources: list[dict] = []
    for n, (item_id, days) in enumerate(DEMO_RECENT):
        item = cat.by_id(item_id)
        if item is None or (panel_of(item) is None and imaging_of(item) is None):
            continue
        when = (now - timedelta(days=days)).replace(hour=9, minute=30, second=0, microsecond=0)
        resources += source_result(rng, f"demo-recent-{person_id[:24]}-{n}", item, patient, inst, when)
    with platform.db.write() as conn:
        have = store.read_current_many(conn, [(r["resourceType"], r["id"]) for r in resources])
        todo = [r for r in resources if (r["resourceType"], r["id"]) not in have]
        if todo:
            _repo(platform, inst).create_many_in(conn, [(r, r["id"]) for r in todo])
    return inst, len(todo)
