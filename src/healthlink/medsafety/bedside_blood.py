"""Blood transfusion and specimen collection at the bedside (issue 8, item 4; the medication
flow is :mod:`.bedside`).

**Transfusion.** The crossmatch is data the platform holds: table ``bedside_crossmatch``, one row
per unit the blood bank crossmatched for a patient (DIN, product code, ABO/RhD, the unit's expiry,
how long the crossmatch holds, status ``ready`` -> ``transfused``).  We keep a row rather than a
FHIR BiologicallyDerivedProduct because R4 puts that resource outside the Patient compartment (so
outside the per-institution access rules) and the platform stores no blood-bank inventory; the row
is written by :meth:`crossmatch` (audited) and read only inside the bedside check.  At the bedside
the scanned ISBT 128 label is compared with it: the unit (DIN), the patient it is for, product,
blood group, the unit's expiry and the crossmatch's validity.  Passed: a FHIR Procedure
"transfusion of blood product" (SNOMED CT 116859006), status in-progress, with the DIN and
product in ``usedCode``.

**Specimen.** The tube label ``HLT1.<ServiceRequest id>`` (printed with the lab order) is compared
with the wristband's patient and, when the nurse picked an order, with that order; the order must be
active.  Passed: a FHIR Specimen (status available, collected now by the nurse, ``request`` the
ServiceRequest), once per order.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from healthlink.access import Repository, RequestContext, Services
from healthlink.db import tables as t
from healthlink.errors import Conflict, Forbidden, Invalid, Issue
from healthlink.fhir.store import Stored
from healthlink.ledger import AuditRecord
from healthlink.medsafety import barcodes as B
from healthlink.medsafety.bedside_model import (
    CROSSMATCH_HOURS,
    ISBT_PRODUCT_SYSTEM,
    TRANSFUSION_SNOMED,
    TUBE_SYSTEM,
    Pair,
    Verification,
    _pair,
    _ref_id,
    new_id,
    patient_name,
)


class BloodAndSpecimen:
    """The transfusion and specimen flows of :class:`~healthlink.medsafety.bedside.Bedside`
    (a base class of it: they use its clock, events and the one write path ``_record``)."""

    s: Services
    tz: ZoneInfo
    clock: Callable[[], datetime]

    def crossmatch(self, ctx: RequestContext, patient_id: str, unit: str, *, encounter_id: str | None = None,
                   valid_hours: int = CROSSMATCH_HOURS) -> dict[str, Any]:
        """Record that the blood unit on ``unit`` (an ISBT 128 scan with DIN, product, blood groups
        and expiry) is crossmatched for the Patient: a doctor, nurse or the hospital's system of
        the patient's institution (standing in for the blood bank).  Audited; returns the row."""
        a = ctx.actor
        if a.institution_id is None or not (a.kind == "client" or a.roles & {"doctor", "nurse"}):
            raise Forbidden("only a doctor, nurse or the hospital's system records a crossmatch")
        if not (1 <= valid_hours <= 24 * 7):
            raise Invalid("valid_hours must be 1 to 168", [Issue("value", "out of range", ("valid_hours",))])
        got = B.parse_scan(unit)
        if not isinstance(got, B.BloodUnit):
            raise Invalid(f"not an ISBT 128 blood-unit label (a {got.kind})",
                          [Issue("invalid", "not a blood unit", ("unit",))])
        missing = [n for n, v in (("DIN", got.din), ("product code", got.product_code),
                                  ("blood group", got.abo), ("expiry", got.expiry)) if not v]
        if missing:
            raise Invalid(f"the unit label lacks {', '.join(missing)}: scan all of the unit's barcodes",
                          [Issue("required", f"missing {m}", ("unit",)) for m in missing])
        repo = Repository(ctx, self.s)
        p = repo.read("Patient", patient_id)
        now = self.clock()
        row = {"id": new_id(), "at": int(now.timestamp() * 1e6), "institution_id": a.institution_id,
               "patient_id": p.res_id, "encounter_id": encounter_id, "din": got.din,
               "product_code": got.product_code, "abo": got.abo, "rhd": got.rhd, "blood_group": got.blood_group,
               "expiry": got.expiry.isoformat() if got.expiry else None,
               "valid_until": int((now + timedelta(hours=valid_hours)).timestamp() * 1e6),
               "status": "ready", "username": a.subject, "record_ref": None}
        xm = t.bedside_crossmatch

        with self.s.db.write() as conn:
            dup = conn.execute(select(xm.c.id).where(xm.c.din == got.din, xm.c.status == "ready",
                                                     xm.c.institution_id == a.institution_id)).first()
            if dup is not None:
                raise Conflict(f"unit {got.din} is already crossmatched and ready (crossmatch {dup.id})")
            conn.execute(xm.insert(), [row])
            self.s.audit.write_in(conn, AuditRecord("operation", ctx.agent(), patients={p.res_id},
                                                    entities=[f"Patient/{p.res_id}"],
                                                    query=f"Patient/{p.res_id}/$crossmatch?din={got.din}"))
        return row

    def _transfusion(self, ctx: RequestContext, repo: Repository, patient: Stored, enc: Stored, unit: B.BloodUnit,
                     record: bool) -> Verification:
        now = self.clock()
        info = {"kind": "blood-unit", "din": unit.din, "product_code": unit.product_code,
                "blood_group": unit.blood_group, "expiry": unit.expiry.isoformat() if unit.expiry else None,
                "unit_id": unit.din}
        xm = t.bedside_crossmatch
        pairs: list[Pair] = []
        with self.s.db.read() as conn:
            rows = conn.execute(select(xm).where(xm.c.institution_id == ctx.actor.institution_id,
                                                 xm.c.status.in_(("ready", "transfused")))).all() if unit.din else []
        mine = [r for r in rows if r.patient_id == patient.res_id and r.status == "ready"]
        hit = next((r for r in rows if r.din == unit.din), None)
        pb = patient.json()
        who = (f"腕带：{patient_name(pb)}", f"wristband: {patient_name(pb)}")
        if unit.din is None:
            pairs.append(_pair("unit", False, ("血袋献血条码（DIN）", "the unit's donation number (DIN)"),
                               ("未扫描", "not scanned")))
        elif hit is None:
            ready = ", ".join(r.din for r in mine) or "—"
            pairs.append(_pair("unit", False,
                               (f"为该患者配血的血袋 {ready}", f"a unit crossmatched for this patient: {ready}"),
                               unit.din))
        elif hit.patient_id != patient.res_id:
            pairs.append(_pair("name", False,
                               ("该血袋配血的另一患者", "the other patient this unit is crossmatched for"), who))
        elif hit.status == "transfused" and hit.record_ref:
            ev = self._event(ctx, "transfusion", "already-recorded", patient_id=patient.res_id,
                             encounter_id=enc.res_id, order_ref=f"crossmatch/{hit.id}", record_ref=hit.record_ref,
                             scan_kind="blood-unit", unit_id=unit.din)
            return Verification(ev, "transfusion", "already-recorded", patient.res_id, f"crossmatch/{hit.id}",
                                [_pair("unit", True, unit.din, unit.din)], hit.record_ref, item=info)
        if hit is not None and hit.patient_id == patient.res_id and not pairs:
            pairs.append(_pair("name", True, patient_name(pb), patient_name(pb)))
            pairs.append(_pair("unit", True, hit.din, unit.din))
            pairs.append(_pair("product", unit.product_code == hit.product_code, hit.product_code,
                               unit.product_code or ("未扫描", "not scanned")))
            pairs.append(_pair("blood_group", (unit.abo, unit.rhd) == (hit.abo, hit.rhd), hit.blood_group or "?",
                               unit.blood_group or ("未扫描", "not scanned")))
            today = now.astimezone(self.tz).date()
            exp = unit.expiry
            pairs.append(_pair("expiry", exp is not None and exp >= today, (f"不早于 {today}", f"on or after {today}"),
                               exp.isoformat() if exp else ("未扫描", "not scanned")))
            valid = datetime.fromtimestamp(hit.valid_until / 1e6, UTC).astimezone(self.tz)
            pairs.append(_pair("crossmatch", valid >= now,
                               (f"有效至 {valid:%Y-%m-%d %H:%M}", f"valid until {valid:%Y-%m-%d %H:%M}"),
                               now.astimezone(self.tz).strftime("%Y-%m-%d %H:%M")))
        order_ref = f"crossmatch/{hit.id}" if hit is not None else None
        if any(p.ok is False for p in pairs):
            return self._blocked(ctx, "transfusion", patient, enc, order_ref, pairs, info)
        if not record:
            return self._passed(ctx, "transfusion", patient, enc, order_ref, pairs, info)
        assert hit is not None
        a = ctx.actor
        body = {"resourceType": "Procedure", "status": "in-progress",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": TRANSFUSION_SNOMED,
                                     "display": "Transfusion of blood product"}], "text": "输血"},
                "subject": {"reference": f"Patient/{patient.res_id}"},
                "encounter": {"reference": f"Encounter/{enc.res_id}"},
                "performedDateTime": now.astimezone(self.tz).isoformat(timespec="seconds"),
                "usedCode": [{"coding": [{"system": ISBT_PRODUCT_SYSTEM, "code": hit.product_code}],
                              "text": f"DIN {hit.din}, {hit.product_code}, {hit.blood_group}"}],
                "note": [{"text": f"ISBT 128 unit {hit.din} ({hit.blood_group}) verified at the bedside"}]}
        if a.practitioner_id:
            body["performer"] = [{"actor": {"reference": f"Practitioner/{a.practitioner_id}", "display": a.display}}]
        return self._record(ctx, repo, "transfusion", patient, enc, order_ref, pairs, info,
                            f"crossmatch/{hit.id}", unit.din or "", lambda: body, crossmatch_id=hit.id)

    # ------------------------------------------------------------ specimen
    def _specimen(self, ctx: RequestContext, repo: Repository, patient: Stored, enc: Stored, sr_id: str,
                  order_id: str | None, record: bool) -> Verification:
        now = self.clock()
        info = {"kind": "tube-label", "order": sr_id, "unit_id": f"tube/{sr_id}"}
        pairs: list[Pair] = []
        if order_id is not None and order_id != sr_id:
            pairs.append(_pair("tube", False,
                               (f"所选检验医嘱 {order_id} 的试管", f"the tube of the chosen order {order_id}"),
                               (f"医嘱 {sr_id} 的试管", f"the tube of order {sr_id}")))
        sr = self._read_order(repo, "ServiceRequest", sr_id, pairs)
        if sr is None:
            return self._blocked(ctx, "specimen", patient, enc, None, pairs, info)
        sb = sr.json()
        order_ref = f"ServiceRequest/{sr.res_id}"
        pb = patient.json()
        op = _ref_id(sb.get("subject"), "Patient")
        if op != patient.res_id:
            other = self._other_patient(repo, op)
            theirs = (patient_name(other), patient_name(other)) if other else ("另一患者", "another patient")
            pairs.append(_pair("name", False, (f"试管所属患者 {theirs[0]}", f"the tube's patient {theirs[1]}"),
                               (f"腕带：{patient_name(pb)}", f"wristband: {patient_name(pb)}")))
        else:
            pairs.append(_pair("name", True, patient_name(pb), patient_name(pb)))
        if sb.get("status") != "active":
            pairs.append(_pair("order", False, ("有效（active）检验医嘱", "an active lab order"),
                               (f"医嘱状态 {sb.get('status')}", f"order status {sb.get('status')}")))
        if any(p.ok is False for p in pairs):
            return self._blocked(ctx, "specimen", patient, enc, order_ref, pairs, info)
        if not record:
            return self._passed(ctx, "specimen", patient, enc, order_ref, pairs, info)
        a = ctx.actor
        body: dict[str, Any] = {
            "resourceType": "Specimen", "status": "available",
            "identifier": [{"system": TUBE_SYSTEM, "value": B.tube_label_payload(sr.res_id)}],
            "subject": {"reference": f"Patient/{patient.res_id}"},
            "request": [{"reference": order_ref}],
            "collection": {"collectedDateTime": now.astimezone(self.tz).isoformat(timespec="seconds")}}
        if a.practitioner_id:
            body["collection"]["collector"] = {"reference": f"Practitioner/{a.practitioner_id}", "display": a.display}
        return self._record(ctx, repo, "specimen", patient, enc, order_ref, pairs, info, order_ref,
                            f"tube/{sr.res_id}", lambda: body)


__all__ = ["BloodAndSpecimen"]
