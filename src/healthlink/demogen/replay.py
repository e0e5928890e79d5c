"""A month of ordering in the demo region (``healthlink demo --replay-days 30``; issue 7, item 9).

The generated history ends on 2026-01-01 (:data:`healthlink.demogen.people.REFERENCE_DATE`), so
nothing of it is inside a recognition window today.  The replay makes the month itself, through
the real services:

1. **results** — for each planned order, a result of the same item (a laboratory panel, or an
   ImagingStudy and its report) for the same Person at one of the Person's institutions, a few
   days before the order (in the item's window, or for about one order in twenty just past it),
   written as that institution's system actor (:func:`.recognition.source_result`);
2. **visits** — in time order over the last ``days`` days, a doctor at the ordering institution
   (most often another institution of the Person, else the same one: a duplicate-test
   reminder) opens an Encounter; when a result may be from elsewhere the patient authorises
   access in person at the desk (``Platform.grants``: a QR request recorded by the registration
   clerk with the patient's signature), so values are disclosed; the doctor orders, and the real
   ``Platform.recognition.check`` runs with ``channel="demo"`` and the recognition clock pinned at
   the visit's time;
3. **decisions** — most reminders are opened; about 94% (``adopt_rate``) are adopted (the
   recognised result is written into the encounter), the rest declined with a reason from
   :data:`healthlink.recognition.service.DECLINE_REASONS` and ordered again (``reordered``); an
   order with nothing to recognise is placed (``reordered``); the Encounter is finished, which
   ends the grant.

Sizing: the default 2,700 order lines give ~2,400 adoptions at ~100-150 yuan, savings of a few
hundred thousand yuan, the order of magnitude of the reference regions' monthly figures.

**Once per database**: a marker ``Basic/demogen-replay`` is written when a replay completes; a
second run reports it and changes nothing.  A replay cut short leaves what it wrote (whole visits)
and no marker; running it again replays a fresh month on top (additive).
"""

from __future__ import annotations

import base64
import copy
import random
import struct
import time
import uuid
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import select

from healthlink.access import RequestContext
from healthlink.access.context import Actor
from healthlink.access.scopes import parse_scopes
from healthlink.db import tables as t
from healthlink.demogen.clinical import ACT
from healthlink.demogen.load import _repo
from healthlink.demogen.recognition import basic_items, order_code, source_result
from healthlink.demogen.region import by_id, institutions
from healthlink.fhir import store
from healthlink.recognition.catalogue import Catalogue, Item
from healthlink.recognition.catalogue import load as load_catalogue
from healthlink.recognition.service import DECLINE_REASONS, Order
from healthlink.runtime import Platform

TZ = ZoneInfo("Asia/Shanghai")
MARKER_ID = "demogen-replay"
MARKER_SYSTEM = "https://healthlink.example.org/fhir/CodeSystem/demogen"
MARKER_EXT = "https://healthlink.example.org/fhir/StructureDefinition/demogen-replay-"
# what doctors order (catalogue item id: weight): panels and imaging, as an outpatient mix
ITEM_WEIGHTS = {"HR-P-CBC": 14, "HR-P-ELEC": 7, "HR-P-RFT": 8, "HR-P-LFT": 8, "HR-P-LIPID": 6, "HR-P-GLU": 8,
                "HR-P-COAG": 4, "HR-P-TUMOR": 3, "HR-P-THYROID": 3,
                "HR-CT-CHEST": 12, "HR-DX-CHEST": 10, "HR-DX-KNEE": 4, "HR-MR-BRAIN": 5, "HR-US-ABD": 7}
IMAGING_AT = ("prefecture", "county")  # where imaging and all but the basic panels are done
# why doctors order again (weights; research notes: condition changes and emergencies dominate)
REASON_WEIGHTS = {"condition-changed": 38, "rapid-change": 20, "major-procedure": 14, "emergency": 14,
                  "appraisal": 2, "other": 12}
OTHER_TEXTS = ("患者要求本院复查", "外院结果单位与本院不一致，需复核", "结果与临床表现不符，复查确认",
               "Patient asked to be tested here", "Result inconsistent with the clinical picture")
PURPOSE = "检查检验结果互认：查看外院检查检验结果 (demo replay)"


@dataclass
class ReplaySummary:
    days: int = 0
    since: date | None = None
    until: date | None = None
    visits: int = 0
    orders: int = 0  # order lines of catalogue items
    found: int = 0  # lines with a recognisable result
    reminded: int = 0  # lines shown at least one reminder (as the rates count them)
    cards: int = 0  # reminders (cards) shown
    opened: int = 0
    adopted: int = 0
    declined: int = 0
    reordered: int = 0
    hints: int = 0  # reminders without values (no grant): not adoptable
    own: int = 0  # reminders of the ordering institution's own results
    savings_yuan: Decimal = Decimal(0)
    reasons: Counter = field(default_factory=Counter)
    results_written: int = 0
    grants: int = 0
    seconds: float = 0.0
    present: bool = False  # the database held a replay already: nothing done
    rates: dict | None = None  # Recognition.rates over the period, as the rates page shows it

    @property
    def retrieval_rate(self) -> float:
        return self.found / self.orders if self.orders else 0.0

    @property
    def recognition_rate(self) -> float:
        return self.adopted / self.reminded if self.reminded else 0.0


@dataclass
class _Line:
    person: str
    patient: str  # at the ordering institution
    inst: str  # ordering institution
    source_inst: str
    source_patient: str
    item: Item
    at: datetime  # order time (aware, region time)
    result_at: datetime  # naive, region time
    rid: str = ""


def _png_signature() -> str:
    """A small PNG (a pen stroke) as the data: URL an in-person consent carries."""
    w, h = 64, 16
    rows = b"".join(b"\x00" + bytes(0 if abs(y - 8 - (x % 16 - 8) // 2) < 2 else 255 for x in range(w))
                    for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _doctor(inst: str, n: int) -> Actor:
    depts = {d for d, _ in by_id()[inst].departments}
    dept = "internal" if "internal" in depts else "general"
    pid = f"{inst}-pr{n:03d}"
    return Actor("user", f"demo-replay:{pid}", f"Replay doctor {pid}", inst, frozenset({"doctor"}),
                 parse_scopes("user/*.cruds"), practitioner_id=pid, department_id=f"{inst}-{dept}")


def _clerk(inst: str) -> Actor:
    return Actor("user", f"demo-replay:clerk@{inst}", f"Replay registration desk ({inst})", inst,
                 frozenset({"registration_clerk"}), parse_scopes("user/*.cruds"))


def replay_state(platform: Platform) -> dict | None:
    with platform.db.read() as conn:
        cur = store.read_current(conn, "Basic", MARKER_ID)
    if cur is None or cur.deleted:
        return None
    return {e["url"].removeprefix(MARKER_EXT): next(v for k, v in e.items() if k.startswith("value"))
            for e in cur.json().get("extension", [])}


def _persons(platform: Platform) -> dict[str, list[tuple[str, str]]]:
    pl = t.person_link
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    with platform.db.read() as conn:
        for person, patient, inst in conn.execute(
                select(pl.c.person_id, pl.c.patient_id, pl.c.institution_id)
                .where(pl.c.institution_id.is_not(None)).order_by(pl.c.person_id, pl.c.patient_id)):
            if inst in _INSTITUTIONS:
                out[person].append((patient, inst))
    return out


_INSTITUTIONS = {i.id for i in institutions()}


#: the latest of an order line's decisions after it (opened, adopted or declined, re-ordered: up to
#: three minutes): an order placed less than this before ``now`` would stamp them in the future
FOLLOW_UP = timedelta(minutes=5)


def plan(platform: Platform, cat: Catalogue, *, orders: int, days: int, now: datetime,
         rng: random.Random) -> list[_Line]:
    """The month's order lines, each with the result it may recognise (see the module doc)."""
    persons = _persons(platform)
    keys = sorted(persons)
    multi = [p for p in keys if len({i for _, i in persons[p]}) >= 2]
    if not keys:
        return []
    items = [cat.by_id(i) for i in ITEM_WEIGHTS]
    weights = list(ITEM_WEIGHTS.values())
    tiers = {i.id: i.tier for i in by_id().values()}
    basics = set(basic_items(cat))
    taken: set[tuple[str, str]] = set()
    today = now.astimezone(TZ).date()
    lines: list[_Line] = []
    tries = 0
    while len(lines) < orders and tries < orders * 20:
        tries += 1
        elsewhere = bool(multi) and rng.random() < 0.85
        person = rng.choice(multi if elsewhere else keys)
        item = rng.choices(items, weights)[0]
        if (person, item.group) in taken:
            continue
        recs = persons[person]
        # township centres run the basic panels only; imaging and the rest are done at hospitals
        sources = recs if item.id in basics else [r for r in recs if tiers[r[1]] in IMAGING_AT]
        if not sources:
            continue
        src_patient, src_inst = rng.choice(sources)
        if elsewhere:
            others = [r for r in recs if r[1] != src_inst]
            if not others:
                continue
            patient, inst = rng.choice(others)
        else:
            patient, inst = src_patient, src_inst
        # the last ``days`` days of the region's calendar, today included (as the rates page counts
        # them), and never after ``now``
        day = today - timedelta(days=rng.randrange(0, days))
        at = datetime.combine(day, datetime.min.time(), TZ) + timedelta(hours=rng.randrange(13, 17),
                                                                         minutes=rng.randrange(60))
        if at + FOLLOW_UP >= now:  # later today, or its decisions would be: the day before instead
            day, at = day - timedelta(days=1), at - timedelta(days=1)
        w = item.validity_days
        gap = rng.randrange(0, w + 1) if rng.random() < 0.95 else w + rng.randrange(1, 21)
        result_at = datetime.combine(day - timedelta(days=gap), datetime.min.time()) + timedelta(
            hours=rng.randrange(8, 12), minutes=rng.randrange(60))
        taken.add((person, item.group))
        lines.append(_Line(person, patient, inst, src_inst, src_patient, item, at, result_at))
    return lines


def _set_clock(rec, moment: datetime) -> None:  # noqa: ANN001
    fn = lambda: moment  # noqa: E731
    if hasattr(rec, "clock"):
        rec.clock = fn
    else:
        rec._clock = fn


def replay(platform: Platform, *, days: int = 30, orders: int = 2_700, seed: int = 1,
           adopt_rate: float = 0.94, now: datetime | None = None,
           progress: Callable[[int, int], None] | None = None, force: bool = False) -> ReplaySummary:
    """Replay ``orders`` order lines over the ``days`` days before ``now``; see the module doc.
    Returns the summary (``present`` when the database already holds a replay)."""
    started = time.monotonic()
    now = (now or datetime.now(TZ)).astimezone(TZ)
    s = ReplaySummary(days=days, since=now.date() - timedelta(days=days - 1), until=now.date())
    state = replay_state(platform)
    if state is not None and state.get("complete") and not force:
        s.present = True
        s.since, s.until = date.fromisoformat(state["since"]), date.fromisoformat(state["until"])
        s.orders, s.adopted, s.declined = state.get("orders", 0), state.get("adopted", 0), state.get("declined", 0)
        s.savings_yuan = Decimal(str(state.get("savings", "0")))
        return s
    cat = load_catalogue()
    rng = random.Random(f"{seed}:replay:{s.until.isoformat()}")
    lines = plan(platform, cat, orders=orders, days=days, now=now, rng=rng)
    run = uuid.uuid4().hex[:8]

    # 1. the results to recognise, per institution, in batches
    by_inst: dict[str, list[dict]] = defaultdict(list)
    for n, ln in enumerate(lines):
        ln.rid = f"rp-{run}-{n:05d}"
        by_inst[ln.source_inst].extend(source_result(rng, ln.rid, ln.item, ln.source_patient, ln.source_inst,
                                                     ln.result_at))
    for inst, resources in sorted(by_inst.items()):
        repo = _repo(platform, inst)
        for i in range(0, len(resources), 400):
            chunk = resources[i:i + 400]
            with platform.db.write() as conn:
                repo.create_many_in(conn, [(r, r["id"]) for r in chunk])
            s.results_written += len(chunk)

    # 2. visits in time order
    visits: dict[tuple[str, str, date], list[_Line]] = defaultdict(list)
    for ln in lines:
        visits[(ln.patient, ln.inst, ln.at.date())].append(ln)
    order = sorted(visits.items(), key=lambda kv: min(x.at for x in kv[1]))
    rec = copy.copy(platform.recognition)  # its own clock; the platform's stays real
    rec.directory = type(rec.directory)(platform.db)
    signature = _png_signature()
    owed = rng.random()  # declines owed (see below)
    for v, ((patient, inst, _), vlines) in enumerate(order):
        at = min(x.at for x in vlines)
        staff = {"prefecture": 24, "county": 10, "township": 3}[by_id()[inst].tier]
        doctor = _doctor(inst, rng.randrange(staff))
        ctx = RequestContext(actor=doctor, address="demo-replay", user_agent="healthlink demo --replay-days")
        repo = platform.repository(ctx)
        enc_body = {"resourceType": "Encounter", "status": "in-progress",
                    "class": {"system": ACT, "code": "AMB", "display": "ambulatory"},
                    "subject": {"reference": f"Patient/{patient}"},
                    "period": {"start": at.isoformat(timespec="seconds")},
                    "participant": [{"individual": {"reference": f"Practitioner/{doctor.practitioner_id}"}}],
                    "serviceProvider": {"reference": f"Organization/{inst}"}}
        enc = repo.create(enc_body, res_type="Encounter").stored.res_id
        if any(x.source_inst != inst for x in vlines):
            g = platform.grants.request(ctx, patient_id=patient, encounter_id=enc, purpose=PURPOSE, method="qr")
            platform.grants.in_person(RequestContext(actor=_clerk(inst), address="demo-replay"), g.id,
                                      signature=signature)
            s.grants += 1
        _set_clock(rec, at)
        ords = []
        for x in vlines:
            system, code = order_code(x.item)
            ords.append(Order(system, code, x.item.name_en, order_ref=f"ServiceRequest/{x.rid}-o",
                              body_site=x.item.body_site.code if x.item.body_site else None,
                              modality=(x.item.modality or (None,))[0]))
        res = rec.check(ctx, patient, ords, encounter_id=enc, channel="demo")
        s.visits += 1
        for k, line in enumerate(res.lines):
            if line.item is None:
                continue
            s.orders += 1
            ref = ords[k].order_ref
            if not line.hits:
                _set_clock(rec, at + timedelta(minutes=3))
                rec.reordered(ctx, line.check_id, order_ref=ref, channel="demo")
                s.reordered += 1
                continue
            s.found += 1
            s.reminded += 1
            s.cards += len(line.hits)
            s.own += sum(1 for h in line.hits if h.own)
            hit = next((h for h in line.hits if h.disclosed), line.hits[0])
            if rng.random() < 0.7:
                _set_clock(rec, at + timedelta(minutes=1))
                rec.opened(ctx, hit.id, channel="demo")
                s.opened += 1
            _set_clock(rec, at + timedelta(minutes=2))
            if not hit.disclosed:
                s.hints += 1
            # adopt ``adopt_rate`` of the reminders, spread evenly (error diffusion from a random
            # start), so that even a small replay lands on the rate
            owed += 1 - adopt_rate
            decline = owed >= 1
            if decline:
                owed -= 1
            if hit.disclosed and not decline:
                rec.adopt(ctx, hit.id, encounter_id=enc, channel="demo")
                s.adopted += 1
                s.savings_yuan += hit.price_yuan
            else:
                reason = rng.choices(list(REASON_WEIGHTS), list(REASON_WEIGHTS.values()))[0]
                assert reason in DECLINE_REASONS
                rec.decline(ctx, hit.id, reason=reason, text=rng.choice(OTHER_TEXTS) if reason == "other" else None,
                            channel="demo")
                s.declined += 1
                s.reasons[reason] += 1
                _set_clock(rec, at + timedelta(minutes=3))
                rec.reordered(ctx, line.check_id, order_ref=ref, channel="demo")
                s.reordered += 1
        enc_body["id"] = enc
        enc_body["status"] = "finished"
        enc_body["period"]["end"] = (at + timedelta(minutes=20)).isoformat(timespec="seconds")
        repo.update("Encounter", enc, enc_body, if_match=None)  # ends the grant
        if progress:
            progress(v + 1, len(order))
    _write_marker(platform, s)
    s.seconds = time.monotonic() - started
    try:
        leader = Actor("user", "demo-replay:leader", "Replay summary", None, frozenset({"health_commission_leader"}),
                       parse_scopes("user/*.rs"))
        s.rates = rec.rates(RequestContext(actor=leader), since=s.since, until=s.until)
    except Exception:  # noqa: BLE001 - the summary's own counts stand without it
        s.rates = None
    return s


def _write_marker(platform: Platform, s: ReplaySummary) -> None:
    ext = {"complete": ("valueBoolean", True), "since": ("valueString", s.since.isoformat()),
           "until": ("valueString", s.until.isoformat()), "orders": ("valueInteger", s.orders),
           "adopted": ("valueInteger", s.adopted), "declined": ("valueInteger", s.declined),
           "savings": ("valueString", str(s.savings_yuan))}
    body = {"resourceType": "Basic", "id": MARKER_ID,
            "code": {"coding": [{"system": MARKER_SYSTEM, "code": "replay",
                                 "display": "HealthLink demo: a month of ordering replayed (healthlink demo --replay-days)"}]},
            "extension": [{"url": MARKER_EXT + k, typ: v} for k, (typ, v) in ext.items()]}
    with platform.db.write() as conn:
        platform.system_repository("demogen").update_in(conn, "Basic", MARKER_ID, body, if_match=None)
