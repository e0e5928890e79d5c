"""What the bedside check compares and answers (issue 8, item 4): the pairs and their names, the
results (:class:`Pair`, :class:`Verification`, :class:`Due`, :class:`BedsidePatient`) and small
readers of the FHIR resources at the bedside (the patient's name and record number, the stay's bed,
an order's dose and its scheduled time).  No database, no access: :mod:`.bedside` uses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from healthlink.db import event_id
from healthlink.errors import HealthLinkError
from healthlink.medsafety import barcodes as B
from healthlink.medsafety.packs import MASS_UNITS

#: every pair the platform can compare; a region picks its list (HEALTHLINK_BEDSIDE_PAIRS)
PAIRS = ("bed", "name", "gender", "age", "drug", "concentration", "dose", "route", "time", "expiry")
SEVEN_PAIRS = ("bed", "name", "drug", "concentration", "dose", "route", "time")
EIGHT_PAIRS = (*SEVEN_PAIRS, "expiry")
TEN_PAIRS = ("bed", "name", "gender", "age", "drug", "concentration", "dose", "route", "time", "expiry")
#: checks made whatever the list says (the pack's expiry, the order, pre-review; transfusion, specimen)
LABELS: dict[str, tuple[str, str]] = {
    "bed": ("床号", "bed"), "name": ("姓名", "patient"), "gender": ("性别", "sex"), "age": ("年龄", "age"),
    "drug": ("药名", "drug"), "concentration": ("浓度", "concentration"), "dose": ("剂量", "dose"),
    "route": ("用法", "route"), "time": ("时间", "time"), "expiry": ("有效期", "expiry"),
    "order": ("医嘱", "order"), "prereview": ("处方前置审核", "pre-review"), "given": ("本次给药", "this dose"),
    "unit": ("血袋", "blood unit"), "product": ("血液成分", "blood component"),
    "blood_group": ("血型", "blood group"), "crossmatch": ("交叉配血", "crossmatch"),
    "tube": ("标本试管", "specimen tube"),
}
FLOWS = ("wristband", "medication", "transfusion", "specimen")
PREREVIEW_BLOCKS = {"pending": ("等待药师审核", "waiting for the pharmacist's review"),
                    "returned": ("药师已退回医生", "returned to the doctor by the pharmacist")}
# "timed-out" is a pass by the pre-review centre's timeout policy (docs/prereview.md): not blocked
TRANSFUSION_SNOMED = "116859006"  # Transfusion of blood product (procedure)
ISBT_PRODUCT_SYSTEM = "https://healthlink.example.org/fhir/CodeSystem/isbt128-product"
ISBT_DIN_SYSTEM = "https://healthlink.example.org/fhir/sid/isbt128-din"
PACK_SERIAL_SYSTEM = "https://healthlink.example.org/fhir/sid/pack-serial"
TRACE_CODE_SYSTEM = "https://healthlink.example.org/fhir/sid/drug-trace-code"
TUBE_SYSTEM = "https://healthlink.example.org/fhir/sid/tube-label"
CROSSMATCH_HOURS = 72  # a crossmatch sample's usual validity (AABB: within 3 days of transfusion)
_ENCOUNTER_OPEN = frozenset({"planned", "arrived", "triaged", "in-progress", "onleave"})


new_id = event_id  # event ids (time-ordered: healthlink.db.event_id)


@dataclass
class Pair:
    """One comparison.  ``ok`` None: not comparable here (said in ``expected``)."""

    name: str
    ok: bool | None
    expected_zh: str
    expected_en: str
    scanned_zh: str
    scanned_en: str

    @property
    def message_zh(self) -> str:
        return f"{LABELS[self.name][0]}不符：应为 {self.expected_zh}，扫描为 {self.scanned_zh}"

    @property
    def message_en(self) -> str:
        return f"{LABELS[self.name][1]} does not match: expected {self.expected_en}, scanned {self.scanned_en}"

    def to_json(self) -> dict[str, Any]:
        return {"pair": self.name, "ok": self.ok, "label_zh": LABELS[self.name][0], "label_en": LABELS[self.name][1],
                "expected_zh": self.expected_zh, "expected_en": self.expected_en,
                "scanned_zh": self.scanned_zh, "scanned_en": self.scanned_en}


def _pair(name: str, ok: bool | None, expected: str | tuple[str, str], scanned: str | tuple[str, str]) -> Pair:
    ez, ee = (expected, expected) if isinstance(expected, str) else expected
    sz, se = (scanned, scanned) if isinstance(scanned, str) else scanned
    return Pair(name, ok, ez, ee, sz, se)


@dataclass
class Verification:
    """The outcome of one item scan."""

    id: str  # the event's id
    flow: str  # medication | transfusion | specimen
    outcome: str  # recorded | already-recorded | blocked
    patient_id: str
    order_ref: str | None
    pairs: list[Pair]
    record_ref: str | None = None  # MedicationAdministration/<id>, Procedure/<id>, Specimen/<id>
    conflict: bool = False  # blocked because this dose / unit / tube was already recorded otherwise
    item: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[Pair]:
        return [p for p in self.pairs if p.ok is False]

    @property
    def status(self) -> int:
        if self.outcome != "blocked":
            return 200
        return 409 if self.conflict else 422

    @property
    def message_zh(self) -> str:
        if self.outcome == "blocked":
            return "已拦截：" + "；".join(p.message_zh for p in self.failed)
        return "核对通过，已记录" if self.outcome == "recorded" else "核对通过，此前已记录（未重复记录）"

    @property
    def message_en(self) -> str:
        if self.outcome == "blocked":
            return "Blocked: " + "; ".join(p.message_en for p in self.failed)
        return ("Verified and recorded" if self.outcome == "recorded"
                else "Verified; already recorded before (not recorded twice)")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "flow": self.flow, "outcome": self.outcome, "patient": self.patient_id,
                "order": self.order_ref, "record": self.record_ref,
                "failed": [p.name for p in self.failed], "message_zh": self.message_zh,
                "message_en": self.message_en, "pairs": [p.to_json() for p in self.pairs], "item": self.item}


@dataclass
class Due:
    """Something due for the patient: an active order, a crossmatched unit, a lab order."""

    flow: str
    ref: str
    name_zh: str
    name_en: str
    dose: str | None = None
    route: str | None = None
    due: str | None = None  # the nearest scheduled time, region clock, "YYYY-MM-DD HH:MM"
    status: str | None = None
    label: str | None = None  # the label text the pharmacy / lab prints for it (demo, printing)
    given: str | None = None  # already recorded at the bedside for this dose: when (region clock, HH:MM)
    key: str | None = field(default=None, repr=False)  # the dose's key in bedside_dose

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "key"}


@dataclass
class BedsidePatient:
    patient_id: str
    encounter_id: str
    name: str
    record_number: str | None
    birth_date: str | None
    gender: str | None
    bed: str | None
    encounter_status: str | None
    due: list[Due]
    event_id: str

    def to_json(self) -> dict[str, Any]:
        return {"patient": {"id": self.patient_id, "name": self.name, "record_number": self.record_number,
                            "birth_date": self.birth_date, "gender": self.gender},
                "encounter": {"id": self.encounter_id, "status": self.encounter_status, "bed": self.bed},
                "due": [d.to_json() for d in self.due], "event": self.event_id}


# ------------------------------------------------------------------ small FHIR readers
def patient_name(body: dict) -> str:
    for n in body.get("name") or []:
        if isinstance(n, dict):
            if n.get("text"):
                return str(n["text"])
            parts = [*(n.get("family") and [n["family"]] or []), *(n.get("given") or [])]
            if parts:
                return " ".join(str(p) for p in parts)
    return "?"


def record_number(body: dict) -> str | None:
    """The medical record number (identifier of type MR), else None."""
    for i in body.get("identifier") or []:
        for c in ((i.get("type") or {}).get("coding") or []) if isinstance(i, dict) else []:
            if c.get("code") == "MR":
                return i.get("value")
    return None


def bed_of(encounter: dict) -> str | None:
    """The bed (or the latest location) of a stay, as displayed: a location cross-check only."""
    best = None
    for loc in encounter.get("location") or []:
        if not isinstance(loc, dict):
            continue
        shown = (loc.get("location") or {}).get("display")
        if shown and loc.get("status") in (None, "active"):
            best = shown
    return best


def _ref_id(ref: Any, res_type: str) -> str | None:
    r = (ref or {}).get("reference") if isinstance(ref, dict) else None
    if isinstance(r, str) and r.startswith(res_type + "/"):
        return r[len(res_type) + 1:]
    return None


def _dosage(order: dict) -> dict:
    d = (order.get("dosageInstruction") or [{}])[0]
    return d if isinstance(d, dict) else {}


def _dose_quantity(order: dict) -> tuple[float | None, str | None]:
    dq = ((_dosage(order).get("doseAndRate") or [{}])[0] or {}).get("doseQuantity") or {}
    v = dq.get("value")
    return (float(v) if isinstance(v, (int, float)) else None), (dq.get("code") or dq.get("unit"))


def _parse_dt(v: Any, tz: ZoneInfo) -> datetime | None:
    if not isinstance(v, str) or len(v) < 16:
        return None
    try:
        d = datetime.fromisoformat(v)
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=tz)


def scheduled_time(order: dict, now: datetime, tz: ZoneInfo) -> datetime | None:
    """The order's scheduled administration nearest ``now``: ``timing.event`` times, or
    ``timing.repeat.timeOfDay`` on the days around today (region clock, inside
    ``repeat.boundsPeriod``).  None: the order has no schedule (as needed, once now)."""
    timing = _dosage(order).get("timing") or {}
    times = [d for d in (_parse_dt(e, tz) for e in timing.get("event") or []) if d is not None]
    rep = timing.get("repeat") or {}
    bounds = rep.get("boundsPeriod") or {}
    start, end = _parse_dt(bounds.get("start"), tz), _parse_dt(bounds.get("end"), tz)
    local = now.astimezone(tz)
    for tod in rep.get("timeOfDay") or []:
        try:
            hh, mm = int(tod[:2]), int(tod[3:5])
        except (TypeError, ValueError):
            continue
        for shift in (-1, 0, 1):
            day = local.date() + timedelta(days=shift)
            d = datetime(day.year, day.month, day.day, hh, mm, tzinfo=tz)
            if (start is None or d >= start) and (end is None or d <= end):
                times.append(d)
    if not times:
        return None
    return min(times, key=lambda d: abs((d - now).total_seconds()))


def _mass_mg(value: float, unit: str | None) -> float | None:
    f = MASS_UNITS.get(unit or "")
    return value * f if f is not None else None


def _fmt(v: float) -> str:
    return f"{v:g}"


def _dose_key(order_ref: str, slot: datetime | None, unit_id: str | None) -> str:
    """One scheduled dose of an order (an unscheduled order: one dose per unit scanned)."""
    return f"{order_ref}@{slot.astimezone(UTC).strftime('%Y-%m-%dT%H:%MZ') if slot else unit_id}"


def _is_wristband(text: str) -> bool:
    try:
        return isinstance(B.parse_scan(text), B.Wristband)
    except HealthLinkError:
        return False


def _is_lab(body: dict) -> bool:
    for cat in body.get("category") or []:
        for c in (cat or {}).get("coding") or []:
            if c.get("code") in ("108252007", "laboratory"):  # SNOMED Laboratory procedure
                return True
    return False


__all__ = ["EIGHT_PAIRS", "LABELS", "PAIRS", "SEVEN_PAIRS", "TEN_PAIRS", "BedsidePatient", "Due", "Pair",
           "Verification", "bed_of", "patient_name", "record_number", "scheduled_time"]
