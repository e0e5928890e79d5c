"""Bedside labels for the demo region (issue 8, item 4): what a nurse scans on ``/bedside``.

:func:`pack_scan`, :func:`trace_code` and :func:`blood_unit_label` build the texts a scanner
sends for a medicine pack (GS1 DataMatrix element string), a 20-digit traceability code and an
ISBT 128 blood-unit label; the GTINs and product codes are those of the demo pack master
(``medsafety/data/packs-v1.json``).  :func:`demo_bedside` gives the demo patient's open stay a bed,
three medication orders due around the clock, a lab order and a crossmatched unit (once: fixed
ids), and returns the labels to try: the wristband, the right packs and wrong ones (expired, the
0.5 g capsule for a 0.25 g order), the unit and the tube.  :func:`label_svg` draws one as a QR
(segno) for printing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from healthlink.medsafety import barcodes as B
from healthlink.medsafety.knowledge import LOCAL_DRUG
from healthlink.runtime import Platform

GS = "\x1d"
SNOMED = "http://snomed.info/sct"
ORAL, IV = "26643006", "47625008"
GTIN = {"warfarin": "06900000010006", "ceftriaxone": "06900000010013", "amoxicillin-0.25": "06900000010020",
        "amoxicillin-0.5": "06900000010037", "aspirin": "06900000010044"}
EVERY_HOUR = [f"{h:02d}:00:00" for h in range(24)]  # demo only: the orders are always due


def pack_scan(gtin: str, *, expiry: date, batch: str = "B2611", serial: str = "S0001", aim: bool = True) -> str:
    """A GS1 DataMatrix scan of a pack: ]d2 (01) GTIN (17) expiry (10) batch GS (21) serial."""
    return f"{']d2' if aim else ''}01{gtin}17{expiry:%y%m%d}10{batch}{GS}21{serial}"


def pack_text(gtin: str, *, expiry: date, batch: str = "B2611", serial: str = "S0001") -> str:
    """The same pack as typed from its human-readable text: (01)…(17)…(10)…(21)… (pasteable)."""
    return f"(01){gtin}(17){expiry:%y%m%d}(10){batch}(21){serial}"


def trace_code(product_code: str, serial: int) -> str:
    """A 20-digit drug traceability code: product code (7), serial (9), check (4, not verified)."""
    return f"{product_code}{serial:09d}{(serial * 7) % 10000:04d}"


def blood_unit_label(din: str, *, product: str = "E0224V00", group: str = "51", expiry: date) -> str:
    """An ISBT 128 compound scan: DIN (001, with its check flags), blood groups (002), product
    (003), expiry date (004).  ``group`` is the RT005 code (51: O RhD positive, 62: A RhD positive)."""
    flags = 60 + B.iso7064_mod37_2(din)
    return f"={din}{flags:02d}=%{group}00=<{product}=>0{expiry:%y}{expiry.timetuple().tm_yday:03d}"


def label_svg(text: str) -> str:
    """A printable QR of a label's text (segno SVG)."""
    import io

    import segno

    buf = io.BytesIO()
    segno.make(text, error="m").save(buf, kind="svg", scale=4, xmldecl=False)
    return buf.getvalue().decode()


@dataclass
class DemoBedside:
    patient_id: str
    encounter_id: str
    labels: list[tuple[str, str]]  # (what, scan text)


def _order(rid: str, patient: str, enc: str, code: str, dose: float, unit: str, route: str) -> dict:
    return {"resourceType": "MedicationRequest", "id": rid, "status": "active", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": LOCAL_DRUG, "code": code}]},
            "subject": {"reference": f"Patient/{patient}"}, "encounter": {"reference": f"Encounter/{enc}"},
            "authoredOn": datetime.now(UTC).date().isoformat(),
            "dosageInstruction": [{"text": "demo: due every hour",
                                   "timing": {"repeat": {"timeOfDay": EVERY_HOUR}},
                                   "route": {"coding": [{"system": SNOMED, "code": route}]},
                                   "doseAndRate": [{"doseQuantity": {"value": dose, "unit": unit,
                                                                     "system": "http://unitsofmeasure.org",
                                                                     "code": unit}}]}]}


def demo_bedside(platform: Platform, patient_id: str, encounter_id: str, institution: str) -> DemoBedside:
    """Orders, a lab order, a bed and a crossmatched unit for the demo patient's open stay at
    ``institution`` (written once, fixed ids), and the labels to scan on ``/bedside``."""
    from healthlink.demogen.load import _repo
    from healthlink.fhir import store

    key = hashlib.sha256(patient_id.encode()).hexdigest()[:16]
    ids = {"warfarin": f"bedside-{key}-warfarin", "amoxicillin": f"bedside-{key}-amoxicillin",
           "ceftriaxone": f"bedside-{key}-ceftriaxone", "lab": f"bedside-{key}-lab"}
    today = datetime.now(UTC).date()
    resources = [
        _order(ids["warfarin"], patient_id, encounter_id, "LD-0009", 2.5, "mg", ORAL),
        _order(ids["amoxicillin"], patient_id, encounter_id, "LD-0001", 250, "mg", ORAL),
        _order(ids["ceftriaxone"], patient_id, encounter_id, "LD-0007", 1, "g", IV),
        {"resourceType": "ServiceRequest", "id": ids["lab"], "status": "active", "intent": "order",
         "category": [{"coding": [{"system": SNOMED, "code": "108252007", "display": "Laboratory procedure"}]}],
         "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2"}], "text": "血常规 CBC"},
         "subject": {"reference": f"Patient/{patient_id}"}, "encounter": {"reference": f"Encounter/{encounter_id}"}},
    ]
    repo = _repo(platform, institution)
    with platform.db.write() as conn:
        have = store.read_current_many(conn, [(r["resourceType"], r["id"]) for r in resources])
        todo = [r for r in resources if (r["resourceType"], r["id"]) not in have]
        if todo:
            repo.create_many_in(conn, [(r, r["id"]) for r in todo])
        enc = store.read_current(conn, "Encounter", encounter_id)
        if enc is not None and not enc.deleted:
            body = enc.json()
            if not body.get("location"):
                body["location"] = [{"location": {"display": "内科一病区 12床 (Medicine ward 1, bed 12)"},
                                     "status": "active"}]
                repo.update_in(conn, "Encounter", encounter_id, body, if_match=None)
    din = "G1234" + f"{today:%y}" + f"{int(key.encode().hex(), 16) % 1000000:06d}"
    unit = blood_unit_label(din, expiry=today + timedelta(days=20))
    from healthlink.access import RequestContext
    from healthlink.access.context import Actor
    from healthlink.access.scopes import parse_scopes
    from healthlink.errors import Conflict

    nurse = Actor("user", "demo-blood-bank", "demo blood bank", institution, frozenset({"nurse"}),
                  parse_scopes("user/*.cruds"))
    try:
        platform.bedside.crossmatch(RequestContext(actor=nurse, address="local"), patient_id, unit,
                                    encounter_id=encounter_id, valid_hours=168)
    except Conflict:
        pass  # crossmatched on an earlier start
    serial = int(datetime.now(UTC).timestamp())
    labels = [
        ("wristband", B.wristband_payload(patient_id, encounter_id)),
        ("warfarin 2.5 mg pack (right)", pack_text(GTIN["warfarin"], expiry=today + timedelta(days=400),
                                                   serial=f"W{serial}")),
        ("warfarin pack, expired (blocked: expiry)", pack_text(GTIN["warfarin"], expiry=today - timedelta(days=3),
                                                              serial=f"X{serial}")),
        ("amoxicillin 0.5 g for the 0.25 g order (blocked: concentration, dose)",
         pack_text(GTIN["amoxicillin-0.5"], expiry=today + timedelta(days=300), serial=f"A{serial}")),
        ("amoxicillin 0.25 g, traceability code (right)", trace_code("8100003", serial % 10**9)),
        ("aspirin (no order: blocked, drug)", pack_text(GTIN["aspirin"], expiry=today + timedelta(days=300))),
        ("ceftriaxone dispensing label (right)", B.dispense_label_payload(ids["ceftriaxone"])),
        ("blood unit O RhD positive (crossmatched)", unit),
        ("blood tube for the CBC", B.tube_label_payload(ids["lab"])),
    ]
    return DemoBedside(patient_id, encounter_id, labels)


__all__ = ["DemoBedside", "blood_unit_label", "demo_bedside", "label_svg", "pack_scan", "pack_text", "trace_code"]
