"""Bedside verification, "three checks, seven pairs" (三查七对; issue 8, item 4).

``Platform.bedside`` is a :class:`Bedside`.  A nurse of the patient's institution scans the
patient's wristband (:meth:`Bedside.wristband`: the patient, the stay, what is due), then the
item (:meth:`Bedside.verify`):

* **medication** — a GS1 pack (GTIN, expiry, batch, serial), a 20-digit traceability code, or the
  pharmacy's dispensing label ``HLD1.<MedicationRequest>``: the configured pairs (default bed,
  name, drug, concentration, dose, route, time; ``HEALTHLINK_BEDSIDE_PAIRS``) plus, always, the
  pack's expiry, that the order is active and that pre-review passed
  (``platform.prereview.outcome``).  Passed: one FHIR MedicationAdministration, written through
  the repository as the nurse (access-checked, audited), once per scheduled dose.
* **transfusion** — an ISBT 128 blood-unit label against the units crossmatched for the patient
  (:meth:`Bedside.crossmatch`, table ``bedside_crossmatch``): unit (DIN), product, blood group,
  expiry, crossmatch validity.  Passed: a Procedure "transfusion of blood product".
* **specimen** — a tube label ``HLT1.<ServiceRequest>`` against the patient's lab order.  Passed:
  a Specimen (collected).

Every scan, passed or blocked, is a ``bedside_event`` row (statistics); a blocked one names each
failed pair with what was expected and what was scanned, in Chinese and English.  The wristband's
Patient id and the order's patient are the two identifiers that must agree, with the record number
and name shown for the verbal check; the bed is a location cross-check, never the identifier
(国家卫健委《医疗质量安全核心制度要点》2018 查对制度; research notes §2.6, §2.7).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from healthlink.access import Repository, RequestContext, Services
from healthlink.db import tables as t
from healthlink.errors import Forbidden, HealthLinkError, Invalid, Issue, NotFound, Unprocessable
from healthlink.fhir.store import Stored
from healthlink.fhir.validation import validate_resource
from healthlink.medsafety import barcodes as B
from healthlink.medsafety.bedside_blood import BloodAndSpecimen
from healthlink.medsafety.bedside_model import (
    _ENCOUNTER_OPEN,
    EIGHT_PAIRS,
    LABELS,
    PACK_SERIAL_SYSTEM,
    PAIRS,
    PREREVIEW_BLOCKS,
    SEVEN_PAIRS,
    TEN_PAIRS,
    TRACE_CODE_SYSTEM,
    BedsidePatient,
    Due,
    Pair,
    Verification,
    _dosage,
    _dose_key,
    _dose_quantity,
    _fmt,
    _is_lab,
    _is_wristband,
    _mass_mg,
    _pair,
    _ref_id,
    bed_of,
    new_id,
    patient_name,
    record_number,
    scheduled_time,
)
from healthlink.medsafety.knowledge import Knowledge
from healthlink.medsafety.packs import GTIN_SYSTEM, Pack, PackMaster


class Bedside(BloodAndSpecimen):
    """The bedside verification service (``Platform.bedside``)."""

    def __init__(self, services: Services, knowledge: Knowledge | Callable[[], Knowledge], packs: PackMaster, *,
                 pairs: Iterable[str] = SEVEN_PAIRS, window_minutes: int = 30, tz: str = "Asia/Shanghai",
                 prereview: Callable[[str], str | None] | None = None, clock=None) -> None:  # noqa: ANN001
        self.s = services
        self._knowledge = knowledge
        self.packs = packs
        self.pairs = tuple(pairs)
        bad = [p for p in self.pairs if p not in PAIRS]
        if bad or "name" not in self.pairs:
            raise Invalid(f"bedside pairs: unknown {bad}" if bad else "bedside pairs must include 'name'")
        self.window = timedelta(minutes=window_minutes)
        self.tz = ZoneInfo(tz)
        self.prereview = prereview
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))

    @property
    def knowledge(self) -> Knowledge:
        """The knowledge in force (the medication check's: a region's file once loaded)."""
        k = self._knowledge
        return k if isinstance(k, Knowledge) else k()

    # ------------------------------------------------------------ who
    @staticmethod
    def _nurse(ctx: RequestContext) -> None:
        a = ctx.actor
        if a.kind != "user" or a.institution_id is None or "nurse" not in a.roles:
            raise Forbidden("only a nurse of the patient's institution verifies at the bedside")

    # ------------------------------------------------------------ the wristband
    def _wristband(self, repo: Repository, scan: str) -> tuple[Stored, Stored]:
        got = B.parse_scan(scan)
        if not isinstance(got, B.Wristband):
            raise Invalid(f"scan the patient's wristband first (this scan is a {got.kind})",
                          [Issue("invalid", f"not a wristband: {got.kind}", ("wristband",))])
        if got.encounter_id is None:
            raise Invalid("this wristband names no stay (GS1 GSRN without SRIN 8019): print a new wristband",
                          [Issue("invalid", "no encounter on the wristband", ("wristband",))])
        patient = repo.read("Patient", got.patient_id)
        enc = repo.read("Encounter", got.encounter_id)
        body = enc.json()
        if _ref_id(body.get("subject"), "Patient") != patient.res_id:
            raise Unprocessable("the wristband's stay is not this patient's: the wristband is wrong, print a new one",
                                [Issue("business-rule", "Encounter.subject is another patient", ("wristband",))])
        if body.get("status") not in _ENCOUNTER_OPEN:
            raise Unprocessable(f"the wristband's stay has ended (Encounter status {body.get('status')}): "
                                "print a new wristband for the current stay",
                                [Issue("business-rule", "the encounter is not open", ("wristband",))])
        return patient, enc

    def scan(self, ctx: RequestContext, *, wristband: str | None, scan: str, order: str | None = None,
             quantity: float | None = None) -> tuple[BedsidePatient, Verification | None]:
        """The scan page's one call: a wristband (or any first scan) opens the patient; another
        scan is verified against the current wristband and recorded when it passes.  Returns the
        patient as now due and the verification (None for a wristband)."""
        text = (scan or "").strip()
        if not wristband or _is_wristband(text):
            return self.wristband(ctx, text), None
        v = self.verify(ctx, wristband=wristband, scan=text, order=order, quantity=quantity, record=True)
        return self.wristband(ctx, wristband, event=False), v

    def wristband(self, ctx: RequestContext, scan: str, *, event: bool = True) -> BedsidePatient:
        """The patient on the wristband, the stay's bed and what is due (active medication
        orders with the nearest scheduled time, crossmatched units, lab orders to collect).
        ``event`` False: a re-read of the wristband already scanned (no scan event)."""
        self._nurse(ctx)
        repo = Repository(ctx, self.s)
        try:
            patient, enc = self._wristband(repo, scan)
        except HealthLinkError as exc:
            self._event(ctx, "wristband", "blocked", detail={"error": exc.message, "status": exc.status},
                        scan_kind="wristband")
            raise
        pb, eb = patient.json(), enc.json()
        now = self.clock()
        due: list[Due] = []
        for s in self._orders(repo, patient.res_id, "MedicationRequest"):
            b = s.json()
            if b.get("status") != "active":
                continue
            _, name_zh, name_en = self._ordered(b)
            value, unit = _dose_quantity(b)
            slot = scheduled_time(b, now, self.tz)
            due.append(Due("medication", f"MedicationRequest/{s.res_id}", name_zh, name_en,
                           f"{_fmt(value)} {unit}" if value is not None else None, self._route_text(b)[1],
                           slot.astimezone(self.tz).strftime("%Y-%m-%d %H:%M") if slot else None, b.get("status"),
                           B.dispense_label_payload(s.res_id),
                           key=_dose_key(f"MedicationRequest/{s.res_id}", slot, None) if slot else None))
        for s in self._orders(repo, patient.res_id, "ServiceRequest"):
            b = s.json()
            if b.get("status") != "active" or not _is_lab(b):
                continue
            cc = b.get("code") or {}
            text = cc.get("text") or next((c.get("display") for c in cc.get("coding") or [] if c.get("display")), "?")
            due.append(Due("specimen", f"ServiceRequest/{s.res_id}", text, text, status=b.get("status"),
                           label=B.tube_label_payload(s.res_id)))
        xm, dose = t.bedside_crossmatch, t.bedside_dose
        with self.s.db.read() as conn:
            keys = [d.key for d in due if d.key] + [d.ref for d in due if d.flow == "specimen"]
            given = {r.key: r.at for r in conn.execute(select(dose.c.key, dose.c.at).where(dose.c.key.in_(keys)))} \
                if keys else {}
            for d in due:
                at = given.get(d.key or d.ref)
                if at is not None:
                    d.given = datetime.fromtimestamp(at / 1e6, UTC).astimezone(self.tz).strftime("%H:%M")
            rows = conn.execute(select(xm).where(xm.c.patient_id == patient.res_id,
                                                 xm.c.institution_id == ctx.actor.institution_id,
                                                 xm.c.status == "ready")).all()
        for r in rows:
            due.append(Due("transfusion", f"crossmatch/{r.id}", f"{r.product_code} {r.blood_group}",
                           f"{r.product_code} {r.blood_group}", status=r.status, label=r.din))
        ev = self._event(ctx, "wristband", "passed", patient_id=patient.res_id, encounter_id=enc.res_id,
                         scan_kind="wristband") if event else ""
        return BedsidePatient(patient.res_id, enc.res_id, patient_name(pb), record_number(pb), pb.get("birthDate"),
                              pb.get("gender"), bed_of(eb), eb.get("status"), due, ev)

    def _orders(self, repo: Repository, patient_id: str, res_type: str) -> list[Stored]:
        page = repo.search(res_type, [("patient", f"Patient/{patient_id}"), ("_count", "100")])
        return list(page.matches)

    # ------------------------------------------------------------ what the order names
    def _ordered(self, order: dict) -> tuple[Any, str, str]:
        """(dictionary product or None, name zh, name en) of what a MedicationRequest orders."""
        cc = order.get("medicationCodeableConcept") or {}
        for c in cc.get("coding") or []:
            p = self.knowledge.product(c.get("system") or "", c.get("code") or "")
            if p is not None:
                return p, p.name_zh, p.name_en or p.name_zh
        name = cc.get("text") or next((c.get("display") for c in cc.get("coding") or [] if c.get("display")), None)
        ings = self._ingredients(order)
        if name is None and ings:
            i = self.knowledge.ingredient(ings[0])
            return None, (i.name_zh or i.name_en) if i else ings[0], i.name_en if i else ings[0]
        return None, name or "?", name or "?"

    def _ingredients(self, order: dict) -> tuple[str, ...]:
        out: list[str] = []
        for c in (order.get("medicationCodeableConcept") or {}).get("coding") or []:
            for i in self.knowledge.ingredients_of(c.get("system") or "", c.get("code") or ""):
                if i not in out:
                    out.append(i)
        return tuple(out)

    def _route_text(self, order: dict) -> tuple[str | None, str | None]:
        """(route id, shown text) of the order's route; oral when none is given."""
        route = _dosage(order).get("route")
        if not route:
            return "oral", "口服 oral"
        for c in route.get("coding") or []:
            rid = self.knowledge.route_id(c.get("code") or "")
            if rid is not None:
                r = next(x for x in self.knowledge.routes if x.id == rid)
                return rid, f"{r.name_zh or ''} {r.name_en}".strip()
        return None, route.get("text") or "?"

    # ------------------------------------------------------------ the item
    def verify(self, ctx: RequestContext, *, wristband: str, scan: str, order: str | None = None,
               quantity: float | None = None, record: bool = True) -> Verification:
        """Verify a scanned item against the wristband's patient (see the module docstring).
        ``order``: the MedicationRequest / ServiceRequest id the nurse picked (a pack then has to
        fit it); ``quantity``: units given (tablets, vials, mL; default 1).  ``record`` False
        checks only.  Blocked scans return a :class:`Verification` with outcome ``blocked``;
        only a malformed request (400), a refusal (403) or an unknown patient (404) raise."""
        self._nurse(ctx)
        if quantity is not None and not (0 < quantity <= 1000):
            raise Invalid("quantity must be more than 0 and at most 1000",
                          [Issue("value", "quantity out of range", ("quantity",))])
        repo = Repository(ctx, self.s)
        text = (scan or "").strip()
        if text.startswith(B.TUBE_PREFIX):
            item: Any = ("tube", B.parse_tube_label(text))
        else:
            item = B.parse_scan(text, today=self.clock().astimezone(self.tz).date())
        if isinstance(item, B.Wristband):
            raise Invalid("this is a wristband: scan the medicine, blood unit or tube next",
                          [Issue("invalid", "a wristband where an item was expected", ("scan",))])
        patient, enc = self._wristband(repo, wristband)
        if isinstance(item, tuple):
            return self._specimen(ctx, repo, patient, enc, item[1], order, record)
        if isinstance(item, B.BloodUnit):
            return self._transfusion(ctx, repo, patient, enc, item, record)
        return self._medication(ctx, repo, patient, enc, item, order, quantity, record)

    # ------------------------------------------------------------ medication
    def _pack_of(self, item: Any) -> tuple[Pack | None, dict[str, Any]]:
        if isinstance(item, B.Pack):
            pack = self.packs.by_gtin(item.gtin or "")
            info = {"kind": "pack", "gtin": item.gtin, "batch": item.batch, "serial": item.serial,
                    "expiry": item.expiry.isoformat() if item.expiry else None,
                    "unit_id": f"{item.gtin}/{item.serial or item.batch or '-'}"}
        elif isinstance(item, B.TraceCode):
            pack = self.packs.by_trace_code(item.product_code)
            info = {"kind": "trace-code", "trace_code": item.code, "product_code": item.product_code,
                    "serial": item.serial, "unit_id": item.code}
        else:
            return None, {"kind": "dispense-label", "order": item.medication_request_id}
        if pack is not None:
            info.update({"pack": pack.id, "product": pack.product.id, "name_zh": pack.product.name_zh,
                         "name_en": pack.product.name_en, "strength": pack.strength})
        return pack, info

    def _medication(self, ctx: RequestContext, repo: Repository, patient: Stored, enc: Stored, item: Any,
                    order_id: str | None, quantity: float | None, record: bool) -> Verification:
        now = self.clock()
        pack, info = self._pack_of(item)
        pb = patient.json()
        order: Stored | None = None
        pairs: list[Pair] = []
        if isinstance(item, B.DispenseLabel):
            order_id = item.medication_request_id if order_id is None else order_id
            if order_id != item.medication_request_id:
                pairs.append(_pair("drug", False,
                                   (f"所选医嘱 {order_id} 的标签", f"the label of the chosen order {order_id}"),
                                   (f"另一医嘱 {item.medication_request_id} 的标签",
                                    f"the label of another order {item.medication_request_id}")))
        if order_id is not None:
            order = self._read_order(repo, "MedicationRequest", order_id, pairs)
        elif pack is not None:
            order = self._match_order(repo, patient.res_id, pack, now)
        if pack is None and not isinstance(item, B.DispenseLabel):
            what = info.get("gtin") or info.get("product_code")
            pairs.append(_pair("drug", False, ("药品字典中的药品", "a pack of the drug dictionary"),
                               (f"未知包装码 {what}", f"unknown pack code {what}")))
        if order is None:
            if pack is not None and not pairs:
                pairs.append(_pair("drug", False,
                                   ("该患者的有效医嘱中的药品", "a drug of an active order of this patient"),
                                   (pack.product.name_zh, pack.product.name_en or pack.product.name_zh)))
            return self._blocked(ctx, "medication", patient, enc, None, pairs, info)
        ob = order.json()
        order_ref = f"MedicationRequest/{order.res_id}"
        info["order"] = order.res_id
        # ---- the patient: two identifiers (the wristband's Patient id and the order's), name and
        # record number shown for the verbal check; sex and age where the region lists them
        order_patient = _ref_id(ob.get("subject"), "Patient")
        other = self._other_patient(repo, order_patient) if order_patient != patient.res_id else None
        pairs += self._patient_pairs(pb, order_patient, other, ob)
        pairs.append(self._bed_pair(repo, enc, ob))
        # ---- the order itself: active, pre-reviewed
        if ob.get("status") != "active":
            pairs.append(_pair("order", False, ("有效（active）医嘱", "an active order"),
                               (f"医嘱状态 {ob.get('status')}", f"order status {ob.get('status')}")))
        outcome = self.prereview(order_ref) if self.prereview is not None else None
        if outcome in PREREVIEW_BLOCKS:
            z, e = PREREVIEW_BLOCKS[outcome]
            pairs.append(_pair("prereview", False,
                               ("审核通过（或医生双签）", "passed (or double-signed by the doctor)"),
                               (f"{z}（{outcome}）", f"{e} ({outcome})")))
        elif outcome is not None:
            pairs.append(_pair("prereview", True, "passed", outcome))
        # ---- drug, concentration, dose, route
        oprod, oz, oe = self._ordered(ob)
        opack = self.packs.for_product(oprod.id) if oprod is not None else None
        if pack is not None:
            ings = set(self._ingredients(ob))
            same = (oprod is not None and oprod.id == pack.product.id) or (
                bool(ings) and ings == set(pack.product.ingredients))
            pairs.append(_pair("drug", same, (oz, oe),
                               (pack.product.name_zh, pack.product.name_en or pack.product.name_zh)))
            if opack is not None:
                pairs.append(_pair("concentration", opack.strength == pack.strength, opack.strength, pack.strength))
            else:
                pairs.append(_pair("concentration", None, ("医嘱未注明规格", "no strength on the order"),
                                   pack.strength))
        else:  # the pharmacy's label for this order: prepared for it
            pairs.append(_pair("drug", True, (oz, oe), (f"药房标签：{oz}", f"pharmacy label: {oe}")))
        pairs.append(self._dose_pair(ob, pack or opack, quantity, labelled=pack is None))
        pairs.append(self._route_pair(ob, pack or opack))
        # ---- time and expiry
        slot = scheduled_time(ob, now, self.tz)
        shown_now = now.astimezone(self.tz).strftime("%Y-%m-%d %H:%M")
        if slot is None:
            pairs.append(_pair("time", None, ("医嘱无排定时间（临时/按需）", "no scheduled time (once / as needed)"),
                               shown_now))
        else:
            w = int(self.window.total_seconds() // 60)
            at = slot.astimezone(self.tz).strftime("%Y-%m-%d %H:%M")
            pairs.append(_pair("time", abs(now - slot) <= self.window, (f"{at}（±{w} 分钟）", f"{at} (±{w} min)"),
                               shown_now))
        if isinstance(item, B.Pack) and item.expiry is not None:
            today = now.astimezone(self.tz).date()
            pairs.append(_pair("expiry", not item.expired(today), (f"不早于 {today}", f"on or after {today}"),
                               item.expiry.isoformat()))
        else:
            pairs.append(_pair("expiry", None, ("扫描码无有效期", "the scan carries no expiry"), "—"))
        pairs = [p for p in pairs if p.name not in PAIRS or p.name in self.pairs or p.name == "expiry"]
        if any(p.ok is False for p in pairs) or not record:
            if any(p.ok is False for p in pairs):
                return self._blocked(ctx, "medication", patient, enc, order_ref, pairs, info)
            return self._passed(ctx, "medication", patient, enc, order_ref, pairs, info)
        key = _dose_key(order_ref, slot, info.get("unit_id"))
        unit_id = info.get("unit_id") or f"label/{order.res_id}"
        return self._record(ctx, repo, "medication", patient, enc, order_ref, pairs, info, key, unit_id,
                            lambda: self._administration(ctx, patient, enc, order, ob, item, pack or opack,
                                                         quantity, now))

    def _read_order(self, repo: Repository, res_type: str, rid: str, pairs: list[Pair]) -> Stored | None:
        try:
            return repo.read(res_type, rid)
        except NotFound:
            pairs.append(_pair("name", False, ("本院该患者的医嘱", "an order of this patient here"),
                               (f"未知医嘱 {res_type}/{rid}", f"unknown order {res_type}/{rid}")))
            return None

    def _match_order(self, repo: Repository, patient_id: str, pack: Pack, now: datetime) -> Stored | None:
        """The patient's order a pack is for: same product or same ingredients; active ones first,
        then the nearest scheduled time."""
        found = []
        for s in self._orders(repo, patient_id, "MedicationRequest"):
            b = s.json()
            prod, _, _ = self._ordered(b)
            ings = set(self._ingredients(b))
            if (prod is not None and prod.id == pack.product.id) or (ings and ings == set(pack.product.ingredients)):
                slot = scheduled_time(b, now, self.tz)
                found.append((b.get("status") != "active", abs((slot - now).total_seconds()) if slot else 0.0, s))
        if not found:
            return None
        return min(found, key=lambda x: (x[0], x[1]))[2]

    def _other_patient(self, repo: Repository, pid: str | None) -> dict | None:
        if pid is None:
            return None
        try:
            return repo.read("Patient", pid).json()
        except NotFound:
            return None

    def _patient_pairs(self, pb: dict, order_patient: str | None, other: dict | None, ob: dict) -> list[Pair]:
        mine = f"{patient_name(pb)}（病案号 {record_number(pb) or '—'}）"
        mine_en = f"{patient_name(pb)} (record no. {record_number(pb) or '—'})"
        if other is not None or order_patient is None:
            theirs = (f"{patient_name(other)}（病案号 {record_number(other) or '—'}）",
                      f"{patient_name(other)} (record no. {record_number(other) or '—'})") if other else (
                "另一患者", "another patient")
            out = [_pair("name", False, theirs, (f"腕带：{mine}", f"wristband: {mine_en}"))]
            if other is not None:
                out.append(_pair("gender", other.get("gender") == pb.get("gender"), str(other.get("gender")),
                                 str(pb.get("gender"))))
                out.append(_pair("age", other.get("birthDate") == pb.get("birthDate"), str(other.get("birthDate")),
                                 str(pb.get("birthDate"))))
            return out
        display = (ob.get("subject") or {}).get("display")
        ok = display is None or display.strip() == patient_name(pb)
        return [_pair("name", ok, (f"医嘱：{display or patient_name(pb)}", f"order: {display or patient_name(pb)}"),
                      (f"腕带：{mine}", f"wristband: {mine_en}")),
                _pair("gender", True, str(pb.get("gender")), str(pb.get("gender"))),
                _pair("age", True, str(pb.get("birthDate")), str(pb.get("birthDate")))]

    def _bed_pair(self, repo: Repository, enc: Stored, ob: dict) -> Pair:
        """The bed is a location cross-check: the order's stay must be the wristband's stay."""
        mine = bed_of(enc.json()) or "—"
        oenc = _ref_id(ob.get("encounter"), "Encounter")
        if oenc is None or oenc == enc.res_id:
            return _pair("bed", True, mine, mine)
        try:
            obed = bed_of(repo.read("Encounter", oenc).json()) or "—"
        except NotFound:
            obed = "—"
        return _pair("bed", False, (f"{obed}（医嘱所属住院 {oenc}）", f"{obed} (the order's stay {oenc})"),
                     (f"{mine}（腕带住院 {enc.res_id}）", f"{mine} (the wristband's stay {enc.res_id})"))

    def _dose_pair(self, ob: dict, pack: Pack | None, quantity: float | None, *, labelled: bool) -> Pair:
        value, unit = _dose_quantity(ob)
        if value is None:
            return _pair("dose", None, ("医嘱未注明剂量", "no dose on the order"), "—")
        ordered = f"{_fmt(value)} {unit}"
        n = quantity if quantity is not None else 1.0
        if pack is None:
            return _pair("dose", None, ordered, ("无规格可算", "no strength to work it out"))
        if labelled and quantity is None:  # the pharmacy prepared the ordered dose
            return _pair("dose", True, ordered, (f"药房按医嘱配制 {ordered}", f"prepared by the pharmacy: {ordered}"))
        given_mg = pack.strength_mg()
        want_mg = _mass_mg(value, unit)
        shown = f"{_fmt(n)} {pack.per} × {pack.strength} = "
        if given_mg is not None and want_mg is not None:
            total = n * given_mg
            ok = abs(total - want_mg) <= 0.01 * want_mg
            return _pair("dose", ok, ordered, shown + f"{_fmt(total)} mg")
        if unit in (pack.per, "{" + pack.per + "}"):
            return _pair("dose", abs(n - value) < 1e-9, ordered, f"{_fmt(n)} {pack.per}")
        if pack.strength_unit == (unit or ""):
            total = n * pack.strength_value
            return _pair("dose", abs(total - value) <= 0.01 * value, ordered, shown + f"{_fmt(total)} {unit}")
        return _pair("dose", None, ordered,
                     (f"单位无法比较（{pack.strength}）", f"units not comparable ({pack.strength})"))

    def _route_pair(self, ob: dict, pack: Pack | None) -> Pair:
        rid, shown = self._route_text(ob)
        if pack is None:
            return _pair("route", None, shown or "?", ("未知剂型", "form unknown"))
        names = []
        for r in pack.routes:
            x = next((y for y in self.knowledge.routes if y.id == self.knowledge.route_id(r)), None)
            names.append(f"{x.name_zh or ''} {x.name_en}".strip() if x else r)
        form = f"{pack.form}: {', '.join(names)}"
        return _pair("route", rid is not None and rid in {self.knowledge.route_id(r) for r in pack.routes},
                     shown or "?", form)

    def _administration(self, ctx: RequestContext, patient: Stored, enc: Stored, order: Stored, ob: dict,
                        item: Any, pack: Pack | None, quantity: float | None, now: datetime) -> dict:
        med: dict[str, Any] = {"resourceType": "Medication", "id": "scanned",
                               "code": dict(ob.get("medicationCodeableConcept") or {"text": "?"})}
        if pack is not None and isinstance(item, (B.Pack, B.TraceCode)):
            codings = list(med["code"].get("coding") or [])
            if isinstance(item, B.Pack) and item.gtin:
                codings.append({"system": GTIN_SYSTEM, "code": item.gtin})
            med["code"] = {**med["code"], "coding": codings}
            med["form"] = {"text": pack.form}
        if isinstance(item, B.Pack):
            batch = {k: v for k, v in (("lotNumber", item.batch),
                                       ("expirationDate", item.expiry.isoformat() if item.expiry else None)) if v}
            if batch:
                med["batch"] = batch
            if item.serial:
                med["identifier"] = [{"system": PACK_SERIAL_SYSTEM, "value": f"{item.gtin}/{item.serial}"}]
        elif isinstance(item, B.TraceCode):
            med["identifier"] = [{"system": TRACE_CODE_SYSTEM, "value": item.code}]
        dosage: dict[str, Any] = {}
        route = _dosage(ob).get("route")
        if route:
            dosage["route"] = route
        value, unit = _dose_quantity(ob)
        if value is not None:
            dosage["dose"] = {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
        a = ctx.actor
        body: dict[str, Any] = {
            "resourceType": "MedicationAdministration", "status": "completed", "contained": [med],
            "medicationReference": {"reference": "#scanned"},
            "subject": {"reference": f"Patient/{patient.res_id}"},
            "context": {"reference": f"Encounter/{enc.res_id}"},
            "effectiveDateTime": now.astimezone(self.tz).isoformat(timespec="seconds"),
            "request": {"reference": f"MedicationRequest/{order.res_id}"},
            "note": [{"text": "verified at the bedside (three checks, seven pairs)"}]}
        if a.practitioner_id:
            body["performer"] = [{"actor": {"reference": f"Practitioner/{a.practitioner_id}", "display": a.display}}]
        if dosage:
            body["dosage"] = dosage
        return body

    # ------------------------------------------------------------ outcomes and events
    def _blocked(self, ctx: RequestContext, flow: str, patient: Stored, enc: Stored, order_ref: str | None,
                 pairs: list[Pair], info: dict, *, conflict: bool = False) -> Verification:
        v = Verification("", flow, "blocked", patient.res_id, order_ref, pairs, conflict=conflict, item=info)
        v.id = self._event(ctx, flow, "blocked", patient_id=patient.res_id, encounter_id=enc.res_id,
                           order_ref=order_ref, scan_kind=info.get("kind"), unit_id=info.get("unit_id"),
                           failed=",".join(p.name for p in v.failed), detail=v.to_json())
        return v

    def _passed(self, ctx: RequestContext, flow: str, patient: Stored, enc: Stored, order_ref: str | None,
                pairs: list[Pair], info: dict) -> Verification:
        v = Verification("", flow, "passed", patient.res_id, order_ref, pairs, item=info)
        v.id = self._event(ctx, flow, "passed", patient_id=patient.res_id, encounter_id=enc.res_id,
                           order_ref=order_ref, scan_kind=info.get("kind"), unit_id=info.get("unit_id"),
                           detail=v.to_json())
        return v

    def _record(self, ctx: RequestContext, repo: Repository, flow: str, patient: Stored, enc: Stored,
                order_ref: str | None, pairs: list[Pair], info: dict, key: str, unit_id: str,
                build: Callable[[], dict], *, crossmatch_id: str | None = None) -> Verification:
        """Write the FHIR record once per dose (``key``): a re-scan of the same unit answers
        ``already-recorded`` with the first record; another unit for the same dose is blocked."""
        dose = t.bedside_dose
        body = build()
        validate_resource(body, expected_type=body["resourceType"])
        for attempt in (1, 2):
            with self.s.db.read() as conn:
                prior = conn.execute(select(dose).where(dose.c.key == key)).first()
            if prior is not None:
                if prior.unit_id == unit_id:
                    v = Verification("", flow, "already-recorded", patient.res_id, order_ref, pairs, prior.record_ref,
                                     item=info)
                    v.id = self._event(ctx, flow, "already-recorded", patient_id=patient.res_id,
                                       encounter_id=enc.res_id, order_ref=order_ref, scan_kind=info.get("kind"),
                                       unit_id=unit_id, record_ref=prior.record_ref, detail=v.to_json())
                    return v
                at = datetime.fromtimestamp(prior.at / 1e6, UTC).astimezone(self.tz)
                pairs = [*pairs, _pair("given", False, ("尚未给药", "not given yet"),
                                       (f"已于 {at:%H:%M} 用另一包装/血袋给予（{prior.record_ref}）",
                                        f"already given at {at:%H:%M} from another unit ({prior.record_ref})"))]
                return self._blocked(ctx, flow, patient, enc, order_ref, pairs, info, conflict=True)
            eid = new_id()
            now = self.clock()
            try:
                with self.s.db.write() as conn:
                    stored = repo.create_in(conn, body)
                    ref = f"{stored.res_type}/{stored.res_id}"
                    conn.execute(dose.insert(), [{"key": key, "institution_id": ctx.actor.institution_id,
                                                  "order_ref": order_ref, "unit_id": unit_id, "record_ref": ref,
                                                  "at": int(now.timestamp() * 1e6), "event_id": eid}])
                    if crossmatch_id is not None:
                        xm = t.bedside_crossmatch
                        conn.execute(xm.update().where(xm.c.id == crossmatch_id).values(status="transfused",
                                                                                       record_ref=ref))
                    v = Verification(eid, flow, "recorded", patient.res_id, order_ref, pairs, ref, item=info)
                    row = self._row(ctx, eid, flow, "recorded", patient_id=patient.res_id, encounter_id=enc.res_id,
                                    order_ref=order_ref, scan_kind=info.get("kind"), unit_id=unit_id,
                                    record_ref=ref, detail=v.to_json())
                    conn.execute(t.bedside_event.insert(), [row])
                    repo.audit_in(conn, "create", [stored])
                return v
            except IntegrityError:
                if attempt == 2:
                    raise
                continue  # another nurse recorded this dose at the same moment: answer as a re-scan
        raise AssertionError("unreachable")

    def _row(self, ctx: RequestContext, eid: str, flow: str, outcome: str, **kw: Any) -> dict:
        a = ctx.actor
        detail = kw.pop("detail", None)
        row = {c.name: None for c in t.bedside_event.columns}
        row.update({"id": eid, "at": int(self.clock().timestamp() * 1e6), "flow": flow, "outcome": outcome,
                    "institution_id": a.institution_id or "-", "department_id": a.department_id,
                    "username": a.subject,
                    "practitioner": f"Practitioner/{a.practitioner_id}" if a.practitioner_id else None,
                    "detail": orjson.dumps(detail).decode() if detail is not None else None})
        row.update({k: v for k, v in kw.items() if k in row})
        if row.get("unit_id"):
            row["unit_id"] = str(row["unit_id"])[:160]
        return row

    def _event(self, ctx: RequestContext, flow: str, outcome: str, **kw: Any) -> str:
        eid = new_id()
        with self.s.db.write() as conn:
            conn.execute(t.bedside_event.insert(), [self._row(ctx, eid, flow, outcome, **kw)])
        return eid

    # ------------------------------------------------------------ statistics
    def stats(self, ctx: RequestContext, *, since: date | None = None) -> dict[str, Any]:
        """Scans of the actor's institution by flow and outcome, and blocks by failed pair: for
        the nurse in charge and quality staff (no patient data)."""
        a = ctx.actor
        if a.kind != "user" or a.institution_id is None or not (a.roles & {"nurse", "quality_manager"}):
            raise Forbidden("bedside statistics are for nurses and quality managers of the institution")
        e = t.bedside_event
        cond = [e.c.institution_id == a.institution_id]
        if since is not None:
            cond.append(e.c.at >= int(datetime(since.year, since.month, since.day, tzinfo=self.tz).timestamp() * 1e6))
        with self.s.db.read() as conn:
            by = conn.execute(select(e.c.flow, e.c.outcome, func.count()).where(*cond)
                              .group_by(e.c.flow, e.c.outcome)).all()
            failed = conn.execute(select(e.c.failed).where(*cond, e.c.outcome == "blocked",
                                                           e.c.failed.is_not(None))).scalars()
            pairs: dict[str, int] = {}
            for f in failed:
                for p in (f or "").split(","):
                    if p:
                        pairs[p] = pairs.get(p, 0) + 1
        counts: dict[str, dict[str, int]] = {}
        for flow, outcome, n in by:
            counts.setdefault(flow, {})[outcome] = n
        return {"institution": a.institution_id, "scans": counts, "blocked_by_pair": pairs, "pairs": list(self.pairs)}


__all__ = ["EIGHT_PAIRS", "LABELS", "PAIRS", "SEVEN_PAIRS", "TEN_PAIRS", "Bedside", "BedsidePatient", "Due",
           "Pair", "Verification", "scheduled_time"]
