"""The order-time check, the doctor's decisions and the rates (issue 7, items 2, 3, 5-7).

``Platform.recognition`` is a :class:`Recognition`.  Every adapter (CDS Hooks, the JSON API, the
doctor's pages, the demo replay) calls the same methods with a :class:`RequestContext` whose actor
is the ordering member of staff at the ordering institution:

* :meth:`Recognition.check` — for a draft order of one or more items, the still-valid results of
  the same or an equivalent item for the same Person from any institution (the rule in
  docs/recognition.md).  Each :class:`Hit` is disclosed (values) when it is the ordering
  institution's own or an active grant covers it, and a hint (item, institution, date) otherwise;
  sensitive records give nothing.  The check and each reminder are recorded as events.
* :meth:`opened`, :meth:`adopt`, :meth:`decline`, :meth:`reordered` — the doctor's decisions on a
  reminder (a card), recorded as events; adopting writes the recognised external result into the
  ordering encounter (a local Observation with a Provenance, shown with the mark).
* :meth:`rates` — retrieval rate, recognition rate, savings and decline reasons from the events.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, select, update

from healthlink.access import Repository, RequestContext, Services
from healthlink.access.directory import Institution, InstitutionDirectory
from healthlink.db import const, driver_all, event_id
from healthlink.db import tables as t
from healthlink.errors import Conflict, Forbidden, Invalid, Issue, NotFound
from healthlink.recognition.catalogue import Catalogue, Item
from healthlink.recognition.validity import REGION_TZ, _local_date

#: Code system of the reasons to order again (national list, 国卫医发〔2022〕6号 Art. 21; research
#: notes §1.4); "other" needs a text.
REASON_SYSTEM = "https://healthlink.example.org/fhir/CodeSystem/recognition-decline-reason"
DECLINE_REASONS: dict[str, tuple[str, str]] = {
    "condition-changed": ("病情变化", "The patient's condition has changed"),
    "rapid-change": ("检查检验结果在疾病进展中变化较快", "The result changes quickly as the disease progresses"),
    "major-procedure": ("对重大诊疗措施（如手术、输血）有重要意义", "Needed before a major procedure such as surgery or transfusion"),
    "emergency": ("急诊、急救等紧急情况", "Emergency or resuscitation"),
    "appraisal": ("涉及司法、伤残及病退等鉴定", "Medico-legal, disability or retirement appraisal"),
    "other": ("其他（请说明）", "Other (give the reason)"),
}
#: statuses of a result that may be recognised (a cancelled, preliminary or entered-in-error one not)
RECOGNISABLE_STATUS = frozenset({"final", "amended", "corrected"})
#: kinds of recognition_event
CHECKED, REMINDED, OPENED, ADOPTED, DECLINED, REORDERED = (
    "checked", "reminded", "opened", "adopted", "declined", "reordered")
CHANNELS = ("cds", "api", "web", "demo")
TIER_RANK = {"township": 1, "county": 2, "prefecture": 3}
#: how long a process keeps the qualifications it read (another process's new ones count after this)
QUAL_CACHE_S = 60.0
#: a draft order checked again within a day keeps its first check (order-select, then order-sign)
DEDUPE_US = 24 * 3600 * 1_000_000
#: the tag on a recognised external result written into the ordering encounter
RECOGNISED_TAG = "https://healthlink.example.org/fhir/CodeSystem/recognition-mark"


@dataclass(frozen=True)
class Order:
    """One line of a draft order: the code ordered (LOINC or a local code), and for imaging
    the requested body site and modality when the order says them."""

    system: str
    code: str
    display: str | None = None
    order_ref: str | None = None  # the draft order, e.g. "ServiceRequest/abc" (CDS: its id)
    body_site: str | None = None  # SNOMED CT code of the requested body site (imaging)
    modality: str | None = None  # DICOM modality (imaging)


@dataclass
class Hit:
    """One still-valid result shown to the doctor (a CDS card).  ``id`` is the card's uuid and
    the reminder event's id: decisions name it."""

    id: str
    item_id: str
    item_name_zh: str
    item_name_en: str
    kind: str  # laboratory | examination
    own: bool  # from the ordering institution (duplicate-test reminder)
    disclosed: bool  # values shown; False: a hint (item, institution, date) and an invitation
    institution_id: str
    institution_name: str
    date: date  # collection / study date in the region's calendar
    valid_until: date
    mark: str
    price_yuan: Decimal
    # disclosed only
    effective: str | None = None
    status: str | None = None
    value: str | None = None  # as shown: "4.1" / "阴性"
    unit: str | None = None
    reference_range: str | None = None  # "3.5-5.3 mmol/L"
    flag: str | None = None  # H | L | N | A ...
    result_ref: str | None = None  # Observation/<id> (lab) or DiagnosticReport/<id>
    report_ref: str | None = None  # DiagnosticReport/<id>
    study_ref: str | None = None  # ImagingStudy/<id> (imaging: the images are what is recognised)
    viewer_url: str | None = None  # the study's viewer endpoint (Endpoint.address), if any
    modality: str | None = None
    body_site: str | None = None  # display of the body site

    def to_json(self) -> dict[str, Any]:
        # the fields are flat (text, flags, dates, a Decimal): a shallow copy is what ``asdict``
        # gave, without its deep copy of every value (on every card of every check)
        d = {f: getattr(self, f) for f in _HIT_FIELDS}
        d["date"] = self.date.isoformat()
        d["valid_until"] = self.valid_until.isoformat()
        d["price_yuan"] = str(self.price_yuan)
        return d


_HIT_FIELDS = tuple(f.name for f in fields(Hit))


@dataclass
class LineCheck:
    """The check of one order line."""

    check_id: str
    order: Order
    item: Item | None  # None: the code is not in the catalogue (nothing to recognise)
    hits: list[Hit] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.hits)


@dataclass
class CheckResult:
    patient_id: str
    person_id: str | None
    lines: list[LineCheck]
    grant_needed: bool  # some hit is a hint: values need the patient's authorisation

    @property
    def hits(self) -> list[Hit]:
        return [h for ln in self.lines for h in ln.hits]


new_id = event_id  # event ids (time-ordered: healthlink.db.event_id)


def now_us() -> int:
    return time.time_ns() // 1000



@dataclass(frozen=True)
class Qualification:
    id: int
    institution_id: str
    item_id: str  # '*' = every item
    basis: str  # eqa | qc-centre
    valid_from: date
    valid_to: date | None
    reference: str | None

    def covers(self, item_id: str, day: date) -> bool:
        return self.item_id in ("*", item_id) and self.valid_from <= day and (
            self.valid_to is None or day <= self.valid_to)


class Recognition:
    """The mutual recognition service (``Platform.recognition``)."""

    def __init__(self, services: Services, catalogue: Catalogue | Callable[[], Catalogue], *,
                 tz: str = REGION_TZ, clock=None) -> None:  # noqa: ANN001
        self.s = services
        # the catalogue in force, or how to get it (read from the store on first use, after migrations)
        self._catalogue = catalogue if isinstance(catalogue, Catalogue) else None
        self._load_catalogue = None if isinstance(catalogue, Catalogue) else catalogue
        self.tz = tz
        self._clock = clock or (lambda: datetime.now().astimezone())
        self.directory = InstitutionDirectory(services.db)
        self._qual_cache: tuple[float, dict[str, list[Qualification]]] | None = None

    @property
    def catalogue(self) -> Catalogue:
        if self._catalogue is None:
            assert self._load_catalogue is not None
            self._catalogue = self._load_catalogue()
        return self._catalogue

    def use_catalogue(self, catalogue: Catalogue) -> None:
        """Put a newly loaded catalogue in force in this process (``healthlink recognition load``
        stores it; other processes pick it up at their next start)."""
        self._catalogue = catalogue

    @property
    def clock(self):  # noqa: ANN201
        """The time source (an aware datetime); the demo replay sets its own to back-date events."""
        return self._clock

    @clock.setter
    def clock(self, fn) -> None:  # noqa: ANN001
        self._clock = fn

    def today(self) -> date:
        return _local_date(self._clock(), self.tz)

    def _now_us(self) -> int:
        return int(self._clock().timestamp() * 1_000_000)

    # ------------------------------------------------------------ directory
    def institutions(self) -> dict[str, Institution]:
        """The member institutions (Organization directory: name, tier, consortium), cached a minute."""
        return self.directory.all()

    def _institution(self, inst_id: str | None) -> Institution:
        if inst_id is None:
            return Institution("", "", None, None)
        return self.directory.get(inst_id) or Institution(inst_id, inst_id, None, None)

    def in_scope(self, item: Item, source: Institution, ordering: Institution) -> bool:
        """Whether a result of ``source`` is inside ``item``'s catalogue scope for ``ordering``."""
        if item.scope == "region":
            return True
        if item.scope == "consortium":
            return source.consortium is not None and source.consortium == ordering.consortium
        least = item.scope.removeprefix("tier:").removesuffix("-and-above")
        return TIER_RANK.get(source.tier or "", 0) >= TIER_RANK[least]

    # ------------------------------------------------------------ the check
    def _actor(self, ctx: RequestContext) -> None:
        a = ctx.actor
        if a.kind != "user" or a.institution_id is None or not (a.roles & {"doctor", "nurse", "pharmacist"}):
            raise Forbidden("only a doctor, nurse or pharmacist of an institution checks orders for recognition")

    def check(self, ctx: RequestContext, patient_id: str, orders: Sequence[Order], *,
              encounter_id: str | None = None, channel: str = "api",
              record: bool = True) -> CheckResult:
        """Check each order line; see the module docstring.  ``patient_id`` is a Patient of the
        actor's institution.  Records a ``checked`` event per line of a catalogue item and a
        ``reminded`` event per hit (unless ``record`` is False: the CDS ``order-sign`` re-check
        of a line already checked at ``order-select`` records nothing new)."""
        self._actor(ctx)
        if channel not in CHANNELS:
            raise Invalid(f"unknown channel {channel!r}")
        if not orders:
            raise Invalid("the order has no lines", [Issue("required", "no order lines", ("orders",))])
        lines = [LineCheck(new_id(), o, self.catalogue.by_code(o.system, o.code)) for o in orders]
        items = [ln.item for ln in lines if ln.item is not None]
        today = self.today()
        if not items:  # nothing to recognise; the patient must still be one of the institution's
            person, _ = Repository(ctx, self.s).result_candidates(patient_id, codes=[], since_us=0)
            return CheckResult(patient_id, person, lines, False)
        codes: dict[tuple[str, str], Item] = {}
        for it in items:
            for eq in self.catalogue.equivalents(it):
                for key in eq.codes():
                    codes[key] = eq
        oldest = today - timedelta(days=max(i.validity_days for i in items) + 1)
        since = int(datetime(oldest.year, oldest.month, oldest.day, tzinfo=_zone(self.tz)).timestamp() * 1e6)
        repo = Repository(ctx, self.s)
        studies = any(i.kind == "examination" for i in items)
        if not record:
            person, cands = repo.result_candidates(patient_id, codes=sorted(codes), since_us=since, studies=studies)
            return self._lines(ctx, patient_id, person, cands, lines, today)
        # the events ride on the group commit of the read's audit record (ADR 0016): one commit for
        # both, awaited before the result is returned, instead of a write transaction per check; the
        # draft orders' earlier checks are read on the candidates' connection
        at = self._now_us()
        refs = [ln.order.order_ref for ln in lines if ln.item is not None and ln.order.order_ref]
        earlier = (lambda conn: self._earlier(conn, ctx, patient_id, refs, at)) if refs else None
        with repo.result_candidates_scope(patient_id, codes=sorted(codes), since_us=since, studies=studies,
                                          also=earlier) as scope:
            result = self._lines(ctx, patient_id, scope.person_id, scope.records, lines, today)
            rows, found_later = self._check_events(ctx, result, encounter_id, channel, at,
                                                   scope.also or {})  # type: ignore[arg-type]
            scope.rows.append((t.recognition_event, rows))
        if found_later:  # a result arrived since the line was first checked: it was found after all
            e = t.recognition_event
            with self.s.db.write() as conn:
                conn.execute(update(e).where(e.c.check_id.in_(found_later), e.c.kind == CHECKED).values(found=True))
        return result

    def _lines(self, ctx: RequestContext, patient_id: str, person: str | None, cands: list,
               lines: list[LineCheck], today: date) -> CheckResult:
        """Judge the candidates of :meth:`Repository.result_candidates` for each order line."""
        me = self._institution(ctx.actor.institution_id)
        studies = {s.res_id: (s, shown) for s, shown in cands if s.res_type == "ImagingStudy"}
        results = [(s, shown, s.json()) for s, shown in cands if s.res_type != "ImagingStudy"]
        quals = self._quals({s.institution_id for s, _, _ in results if s.institution_id})
        for ln in lines:
            if ln.item is None:
                continue
            group = {k for eq in self.catalogue.equivalents(ln.item) for k in eq.codes()}
            for s, shown, body in results:
                hit = self._judge(ln, s, shown, body, group, today, me, quals, studies)
                if hit is not None:
                    ln.hits.append(hit)
            ln.hits.sort(key=lambda h: (not h.disclosed, h.own, h.date), reverse=False)
            ln.hits.sort(key=lambda h: h.date, reverse=True)
            ln.hits[:] = ln.hits[:5]
        return CheckResult(patient_id, person, lines, any(not h.disclosed for ln in lines for h in ln.hits))

    def _judge(self, ln: LineCheck, s, shown: bool, body: dict, group: set, today: date,  # noqa: ANN001, PLR0911
               me: Institution, quals: dict, studies: dict) -> Hit | None:
        item = ln.item
        assert item is not None
        coded = [(c.get("system"), c.get("code")) for c in (body.get("code") or {}).get("coding") or []
                 if isinstance(c, dict)]
        if not any(k in group for k in coded):
            return None
        if item.kind == "laboratory" and s.res_type == "DiagnosticReport" and _is_imaging(body):
            return None
        if body.get("status") not in RECOGNISABLE_STATUS:
            return None
        when = _effective(body)
        if when is None:
            return None
        day = when if isinstance(when, date) and not isinstance(when, datetime) else _local_date(when, self.tz)
        until = day + timedelta(days=item.validity_days)
        if today > until or day > today:
            return None
        own = s.institution_id == me.id
        source = self._institution(s.institution_id)
        if not own:
            if not any(q.covers(item.id, day) for q in quals.get(s.institution_id, ())):
                return None
            if not self.in_scope(item, source, me):
                return None
        study = study_ref = viewer = modality = site_name = None
        if item.kind == "examination":
            site = _report_site(body)
            for ref in body.get("imagingStudy") or []:
                sid = (ref.get("reference") or "").removeprefix("ImagingStudy/")
                if sid in studies:
                    study = studies[sid][0].json()
                    study_ref = f"ImagingStudy/{sid}"
            if study is not None:
                mods = {m.get("code") for m in study.get("modality") or []} | {
                    (se.get("modality") or {}).get("code") for se in study.get("series") or []}
                if item.modality and not (mods & set(item.modality)):
                    return None
                modality = next((m for m in item.modality if m in mods), None)
                if site is None:
                    site = next(((se.get("bodySite") or {}) for se in study.get("series") or []
                                 if se.get("bodySite")), None)
                for ep in study.get("endpoint") or []:
                    viewer = ep.get("reference")
                    break
            # the site the item names and, when the order names one, that site too
            wants = {w for w in (item.body_site.code if item.body_site else None, ln.order.body_site) if w}
            if wants and (site is None or {site.get("code")} != wants):
                return None
            site_name = (site or {}).get("display")
            modality = modality or (item.modality[0] if item.modality else None)
        hit = Hit(id=new_id(), item_id=item.id, item_name_zh=item.name_zh, item_name_en=item.name_en,
                  kind=item.kind, own=own, disclosed=shown, institution_id=source.id,
                  institution_name=source.name, date=day, valid_until=until, mark=item.mark,
                  price_yuan=item.price_yuan, modality=modality, body_site=site_name)
        hit._source = f"{s.res_type}/{s.res_id}"  # type: ignore[attr-defined]  # kept for decisions, never shown undisclosed
        hit._study = study_ref  # type: ignore[attr-defined]
        if shown:
            hit.effective = _effective_text(body)
            hit.status = body.get("status")
            hit.value, hit.unit = _value(body)
            hit.reference_range = _range(body)
            hit.flag = _flag(body)
            hit.result_ref = f"{s.res_type}/{s.res_id}"
            hit.report_ref = hit.result_ref if s.res_type == "DiagnosticReport" else None
            hit.study_ref = study_ref
            hit.viewer_url = viewer
            if item.kind == "examination":
                hit.value = body.get("conclusion")
        return hit

    def _quals(self, institutions: set[str]) -> dict[str, list[Qualification]]:
        """The qualifications of ``institutions``: all of them are read once a minute per process
        (a region has a few thousand rows at most); :meth:`qualify` refreshes at once."""
        cached = self._qual_cache
        if cached is None or time.monotonic() - cached[0] >= QUAL_CACHE_S:
            q = t.recognition_qualification
            every: dict[str, list[Qualification]] = {}
            with self.s.db.read() as conn:
                for r in conn.execute(select(q)):
                    every.setdefault(r.institution_id, []).append(_qual(r))
            cached = self._qual_cache = (time.monotonic(), every)
        return {i: cached[1][i] for i in institutions if i in cached[1]}

    def _base_event(self, ctx: RequestContext, me: Institution, channel: str, patient_id: str,
                    person_id: str | None, encounter_id: str | None) -> dict[str, Any]:
        a = ctx.actor
        return {"channel": channel, "institution_id": a.institution_id, "tier": me.tier,
                "department_id": a.department_id,
                "practitioner": f"Practitioner/{a.practitioner_id}" if a.practitioner_id else None,
                "username": a.subject, "patient_id": patient_id, "person_id": person_id,
                "encounter_id": encounter_id}

    def _earlier(self, conn: Connection, ctx: RequestContext, patient_id: str, refs: list[str],
                 at: int) -> dict[str, tuple[str, dict[tuple[str, bool], str]]]:
        """The checks of the same draft orders made in the last day (``order-select`` then
        ``order-sign``, or the order selected again) and their reminders ((source, disclosed) ->
        card id), by draft order; two statements for up to 16 draft orders (one, nearly always)."""
        latest: dict[str, tuple[int, str]] = {}
        for chunk in _chunks(sorted(set(refs))):
            for ref, check_id, when in driver_all(conn, _checked_sql(len(chunk)), {
                    "patient": patient_id, "institution": ctx.actor.institution_id, "since": at - DEDUPE_US,
                    **{f"v{i}": r for i, r in enumerate(chunk)}}):
                if ref not in latest or when > latest[ref][0]:
                    latest[ref] = (when, check_id)
        if not latest:
            return {}
        cards: dict[str, dict[tuple[str, bool], str]] = {cid: {} for _, cid in latest.values()}
        for chunk in _chunks(sorted(cards)):
            for check_id, src, shown, cid in driver_all(conn, _reminded_sql(len(chunk)),
                                                        {f"v{i}": c for i, c in enumerate(chunk)}):
                cards[check_id][(src, bool(shown))] = cid
        return {ref: (cid, cards[cid]) for ref, (_, cid) in latest.items()}

    def _check_events(self, ctx: RequestContext, result: CheckResult, encounter_id: str | None, channel: str,
                      at: int, earlier: dict[str, tuple[str, dict[tuple[str, bool], str]]]
                      ) -> tuple[list[dict], list[str]]:
        """The rows recording the check (the caller has them committed with the check's audit record):
        a ``checked`` event per catalogue line and a ``reminded`` event per hit; and the earlier
        checks whose line has a result now (``found`` to be set).  A line naming a draft order
        checked in the last day (``earlier``, :meth:`_earlier`) keeps that check and its cards (the
        same card uuids; only results new since then are recorded): each order line counts once."""
        me = self._institution(ctx.actor.institution_id)
        base = self._base_event(ctx, me, channel, result.patient_id, result.person_id, encounter_id)
        rows = []
        found_later: list[str] = []
        for ln in result.lines:
            if ln.item is None:
                continue
            price = int(ln.item.price_yuan * 100)
            seen = earlier.get(ln.order.order_ref or "")
            if seen is not None:
                ln.check_id, known = seen
                fresh = []
                for h in ln.hits:  # the same card while the result is shown the same way
                    key = (h._source, h.disclosed)  # type: ignore[attr-defined]
                    if key in known:
                        h.id = known[key]
                    else:
                        fresh.append(h)
                if fresh and not known:
                    found_later.append(ln.check_id)
            else:
                fresh = ln.hits
                rows.append({**base, "id": new_id(), "at": at, "kind": CHECKED, "check_id": ln.check_id,
                             "order_ref": ln.order.order_ref or f"{ln.order.system}|{ln.order.code}",
                             "item_id": ln.item.id, "found": ln.found, "price_fen": price})
            for h in fresh:
                detail = h.to_json()
                detail["source"] = h._source  # type: ignore[attr-defined]
                detail["study"] = h._study  # type: ignore[attr-defined]
                detail["order_ref"] = ln.order.order_ref
                rows.append({**base, "id": h.id, "at": at, "kind": REMINDED, "check_id": ln.check_id,
                             "card_id": h.id, "order_ref": ln.order.order_ref, "item_id": ln.item.id,
                             "own": h.own, "disclosed": h.disclosed, "source_institution": h.institution_id,
                             "source_ref": h._source, "price_fen": price,  # type: ignore[attr-defined]
                             "detail": orjson.dumps(detail).decode()})
        return [_full(r) for r in rows], found_later

    # ------------------------------------------------------------ decisions
    def _events(self, conn: Connection, **where: Any) -> list:
        e = t.recognition_event
        return conn.execute(select(e).where(*(e.c[k] == v for k, v in where.items())).order_by(e.c.at)).all()

    def card(self, ctx: RequestContext, card_id: str) -> tuple[dict, Hit]:
        """A reminder event (as a dict of its columns) and its hit; only for staff of the
        institution that was reminded (404 otherwise)."""
        with self.s.db.read() as conn:
            rows = self._events(conn, id=card_id, kind=REMINDED)
        if not rows or rows[0].institution_id != ctx.actor.institution_id:
            raise NotFound(f"recognition card {card_id} is not known",
                           [Issue("not-found", f"no card {card_id} of your institution", ("card",))])
        ev = dict(rows[0]._mapping)
        return ev, _hit(orjson.loads(ev["detail"]))

    def _decided(self, conn: Connection, ev: dict) -> list:
        e = t.recognition_event
        return conn.execute(select(e).where(e.c.check_id == ev["check_id"],
                                            e.c.kind.in_((ADOPTED, DECLINED)))).all()

    def _follow(self, ev: dict, ctx: RequestContext, kind: str, channel: str, **extra: Any) -> dict:
        a = ctx.actor
        row = {k: ev[k] for k in ("check_id", "institution_id", "tier", "patient_id", "person_id",
                                  "encounter_id", "order_ref", "item_id", "source_institution",
                                  "source_ref", "price_fen", "own", "disclosed")}
        row.update({"id": new_id(), "at": self._now_us(), "kind": kind, "card_id": ev["id"],
                    "channel": channel, "department_id": a.department_id or ev.get("department_id"),
                    "practitioner": f"Practitioner/{a.practitioner_id}" if a.practitioner_id else ev["practitioner"],
                    "username": a.subject})
        row.update(extra)
        return _full(row)

    def opened(self, ctx: RequestContext, card_id: str, *, channel: str = "api") -> Hit:
        """The doctor opened the result of a reminder (recorded once per card)."""
        self._actor(ctx)
        ev, hit = self.card(ctx, card_id)
        with self.s.db.write() as conn:
            if not self._events(conn, card_id=card_id, kind=OPENED):
                conn.execute(t.recognition_event.insert(), [self._follow(ev, ctx, OPENED, channel)])
        return hit

    def adopt(self, ctx: RequestContext, card_id: str, *, encounter_id: str | None = None,
              channel: str = "api") -> str | None:
        """Adopt the reminded result instead of re-testing.  With an encounter (the card's, or
        the one given) the recognised result is written into it: a local Observation with
        ``derivedFrom`` the source result (and for imaging the study), the mark as a tag, and a
        Provenance naming the source institution (performer) and the adopting doctor (author).
        Returns the local reference (``Observation/<id>``) or None.  A hint (not disclosed)
        cannot be adopted: the patient must authorise access first (403).  Adopting the same card
        again returns the same record; a line already declined, or adopted from another card, is
        a conflict (409)."""
        self._actor(ctx)
        ev, hit = self.card(ctx, card_id)
        if not ev["disclosed"]:
            raise Forbidden("this result is only a hint: ask the patient to authorise access to see and "
                            "adopt it", [Issue("forbidden", "result not disclosed without the patient's "
                                                            "authorisation", ("card",))])
        with self.s.db.read() as conn:
            done = self._decided(conn, ev)
        for d in done:
            if d.kind == ADOPTED and d.card_id == card_id:
                return d.local_ref
            raise Conflict(f"this order line was already {d.kind} (card {d.card_id})",
                           [Issue("conflict", f"already {d.kind}", ("card",))])
        encounter_id = encounter_id or ev["encounter_id"]
        repo = Repository(ctx, self.s)
        kind, _, sid = ev["source_ref"].partition("/")
        source = repo.read(kind, sid)  # the grant must still be in force (audited)
        body = source.json()
        detail = orjson.loads(ev["detail"])
        item = self.catalogue.by_id(ev["item_id"])
        local_ref = None
        with self.s.db.write() as conn:
            if encounter_id:
                obs = _recognised(body, ev, detail, item, encounter_id)
                stored = repo.create_in(conn, obs)
                prov = _provenance(f"Observation/{stored.res_id}", ev, detail, ctx, self._clock())
                p = repo.create_in(conn, prov)
                repo.audit_in(conn, "create", [stored, p], desc=f"recognised result of {ev['source_ref']}")
                local_ref = f"Observation/{stored.res_id}"
            conn.execute(t.recognition_event.insert(), [self._follow(
                ev, ctx, ADOPTED, channel, local_ref=local_ref, encounter_id=encounter_id)])
        return local_ref

    def decline(self, ctx: RequestContext, card_id: str, *, reason: str | None,
                text: str | None = None, channel: str = "api") -> None:
        """Order anyway: ``reason`` one of :data:`DECLINE_REASONS` (``other`` needs ``text``);
        a decline without a reason is refused (400 naming ``reason``)."""
        self._actor(ctx)
        text = (text or "").strip() or None
        if not reason:
            raise Invalid("a reason is required to order again instead of using the result",
                          [Issue("required", "reason missing", ("reason",))])
        if reason not in DECLINE_REASONS:
            raise Invalid(f"unknown reason {reason!r}; one of {', '.join(DECLINE_REASONS)}",
                          [Issue("code-invalid", f"unknown reason {reason!r}", ("reason",))])
        if reason == "other" and not text:
            raise Invalid("reason 'other' needs the reason in words",
                          [Issue("required", "text missing for reason 'other'", ("text",))])
        if text and len(text) > 500:
            raise Invalid("the reason text is longer than 500 characters",
                          [Issue("too-long", "at most 500 characters", ("text",))])
        ev, _ = self.card(ctx, card_id)
        with self.s.db.write() as conn:
            for d in self._decided(conn, ev):
                if d.kind == DECLINED and d.card_id == card_id:
                    return
                raise Conflict(f"this order line was already {d.kind} (card {d.card_id})",
                               [Issue("conflict", f"already {d.kind}", ("card",))])
            conn.execute(t.recognition_event.insert(), [self._follow(
                ev, ctx, DECLINED, channel, reason=reason, reason_text=text)])

    def reordered(self, ctx: RequestContext, check_id: str, *, order_ref: str | None = None,
                  channel: str = "api") -> None:
        """The order of a checked line was placed (signed) after all."""
        self._actor(ctx)
        with self.s.db.write() as conn:
            rows = self._events(conn, check_id=check_id, kind=CHECKED)
            if not rows or rows[0].institution_id != ctx.actor.institution_id:
                raise NotFound(f"recognition check {check_id} is not known",
                               [Issue("not-found", f"no check {check_id} of your institution", ("check",))])
            if self._events(conn, check_id=check_id, kind=REORDERED):
                return
            ev = dict(rows[0]._mapping)
            ev["own"] = ev["disclosed"] = None
            row = self._follow(ev, ctx, REORDERED, channel)
            row["card_id"] = None
            if order_ref:
                row["order_ref"] = order_ref
            conn.execute(t.recognition_event.insert(), [row])

    # ------------------------------------------------------------ rates
    def rates(self, ctx: RequestContext, *, since: date | None = None, until: date | None = None,
              institution_id: str | None = None, by: str = "institution") -> dict[str, Any]:
        """The rates from the events (docs/recognition.md "Rates"), for the period [since, until]
        (days in the region's calendar; default the last 30 days):

        * ``totals`` and ``rows`` (grouped ``by`` institution | department | item | tier | day |
          month), each with ``checked`` (order lines of catalogue items), ``found`` (lines with a
          recognisable result), ``retrieval_rate`` = found / checked, ``reminded`` (lines shown a
          card), ``opened``, ``adopted``, ``declined``, ``reordered``, ``recognition_rate`` =
          adopted / reminded, ``savings_yuan`` = sum of the prices of adopted lines;
        * ``reasons``: declines per reason code, with their share.

        Rates are None when their denominator is 0.  A health-commission leader sees the region
        (or one ``institution_id``); a quality manager, institution manager, doctor and the rest
        of an institution's staff see their own institution only."""
        a = ctx.actor
        if by not in ("institution", "department", "item", "tier", "day", "month"):
            raise Invalid(f"unknown grouping {by!r}", [Issue("code-invalid", f"unknown grouping {by!r}", ("by",))])
        if "health_commission_leader" in a.roles or "system" in a.roles:
            inst = institution_id
        elif a.kind == "user" and a.institution_id and a.roles & RATE_ROLES:
            if institution_id not in (None, a.institution_id):
                raise Forbidden("you see the rates of your own institution only")
            inst = a.institution_id
        else:
            raise Forbidden("the recognition rates are for quality managers, institution managers, "
                            "doctors and health-commission leaders")
        until = until or self.today()
        since = since or (until - timedelta(days=29))
        if since > until:
            raise Invalid("since is after until", [Issue("invalid", "since > until", ("since",))])
        lo = int(datetime(since.year, since.month, since.day, tzinfo=_zone(self.tz)).timestamp() * 1e6)
        end = until + timedelta(days=1)
        hi = int(datetime(end.year, end.month, end.day, tzinfo=_zone(self.tz)).timestamp() * 1e6)
        e = t.recognition_event
        q = select(e.c.kind, e.c.check_id, e.c.at, e.c.institution_id, e.c.department_id, e.c.item_id, e.c.tier,
                   e.c.found, e.c.price_fen, e.c.reason).where(e.c.at >= lo, e.c.at < hi)
        if inst:
            q = q.where(e.c.institution_id == inst)
        with self.s.db.read() as conn:
            rows = conn.execute(q).all()
        zone = _zone(self.tz)

        def key(r) -> str:  # noqa: ANN001
            if by in ("day", "month"):
                d = datetime.fromtimestamp(r.at / 1e6, zone).date()
                return d.isoformat() if by == "day" else d.isoformat()[:7]
            return getattr(r, {"institution": "institution_id", "department": "department_id",
                               "item": "item_id", "tier": "tier"}[by]) or "-"

        groups: dict[str, _Tally] = {}
        total = _Tally()
        reasons: dict[str, int] = {}
        for r in rows:
            for tally in (total, groups.setdefault(key(r), _Tally())):
                tally.add(r)
            if r.kind == DECLINED:
                reasons[r.reason or "-"] = reasons.get(r.reason or "-", 0) + 1
        names = self.institutions()
        declined = sum(reasons.values())
        out_rows = []
        for k in sorted(groups):
            row = groups[k].to_json()
            row["key"] = k
            if by == "institution":
                row["label"] = names[k].name if k in names else k
            elif by == "item":
                it = self.catalogue.by_id(k)
                row["label"] = f"{it.name_zh} {it.name_en}" if it else k
            else:
                row["label"] = k
            out_rows.append(row)
        return {"since": since.isoformat(), "until": until.isoformat(), "by": by, "institution": inst,
                "totals": total.to_json(), "rows": out_rows,
                "reasons": [{"reason": rc, "label_zh": DECLINE_REASONS.get(rc, (rc, rc))[0],
                             "label_en": DECLINE_REASONS.get(rc, (rc, rc))[1], "count": n,
                             "share": round(n / declined, 4) if declined else None}
                            for rc, n in sorted(reasons.items(), key=lambda x: -x[1])]}

    # ------------------------------------------------------------ qualifications
    def qualify(self, ctx: RequestContext, *, institution_id: str, item_id: str, basis: str,
                valid_from: date, valid_to: date | None = None, reference: str | None = None) -> Qualification:
        """Record that ``institution_id`` passed quality control for ``item_id`` ('*': every item)
        from ``valid_from`` to ``valid_to`` (inclusive, None: open).  A system administrator (or
        the platform) records it; an identical record is not written twice."""
        a = ctx.actor
        if not ({"system", "system_admin"} & a.roles):
            raise Forbidden("qualifications are recorded by a system administrator")
        if basis not in ("eqa", "qc-centre"):
            raise Invalid(f"unknown basis {basis!r}; eqa or qc-centre",
                          [Issue("code-invalid", f"unknown basis {basis!r}", ("basis",))])
        if item_id != "*" and self.catalogue.by_id(item_id) is None:
            raise Invalid(f"item {item_id!r} is not in the catalogue",
                          [Issue("code-invalid", f"unknown item {item_id!r}", ("item",))])
        if valid_to is not None and valid_to < valid_from:
            raise Invalid("valid_to is before valid_from", [Issue("invalid", "valid_to < valid_from", ("valid_to",))])
        if self.directory.get(institution_id) is None:
            raise Invalid(f"unknown institution {institution_id!r}",
                          [Issue("code-invalid", f"unknown institution {institution_id!r}", ("institution",))])
        q = t.recognition_qualification
        with self.s.db.write() as conn:
            same = conn.execute(select(q).where(
                q.c.institution_id == institution_id, q.c.item_id == item_id, q.c.basis == basis,
                q.c.valid_from == valid_from,
                q.c.valid_to.is_(None) if valid_to is None else q.c.valid_to == valid_to)).first()
            if same is not None:
                return _qual(same)
            qid = conn.execute(q.insert().values(
                institution_id=institution_id, item_id=item_id, basis=basis, valid_from=valid_from,
                valid_to=valid_to, reference=reference, recorded=now_us(), recorded_by=a.subject)
                .returning(q.c.id)).scalar_one()
        self._qual_cache = None  # after the commit: the next check reads it
        return Qualification(qid, institution_id, item_id, basis, valid_from, valid_to, reference)

    def qualifications(self, institution_id: str | None = None) -> list[Qualification]:
        q = t.recognition_qualification
        stmt = select(q).order_by(q.c.institution_id, q.c.item_id, q.c.valid_from)
        if institution_id:
            stmt = stmt.where(q.c.institution_id == institution_id)
        with self.s.db.read() as conn:
            return [_qual(r) for r in conn.execute(stmt)]


#: roles that see their own institution's rates
RATE_ROLES = frozenset({"quality_manager", "institution_manager", "doctor"})

_EVENT_COLUMNS = tuple(c.name for c in t.recognition_event.columns)


#: the draft orders of one check looked up per statement (:meth:`Recognition._earlier`)
_IN_CHUNK = 16


def _chunks(values: list[str]) -> list[list[str]]:
    return [values[i:i + _IN_CHUNK] for i in range(0, len(values), _IN_CHUNK)]


# The earlier checks of a check's draft orders: statements built once per number of values (one
# draft order, nearly always) and run on the driver's cursor (``driver_all``: SQLAlchemy's
# statement machinery cost more than the statement, ADR 0017), as the medication check's.
@functools.cache
def _checked_sql(n: int):  # noqa: ANN202
    e = t.recognition_event
    return select(e.c.order_ref, e.c.check_id, e.c.at).where(
        e.c.patient_id == bindparam("patient"), e.c.order_ref.in_([bindparam(f"v{i}") for i in range(n)]),
        e.c.kind == const(CHECKED), e.c.institution_id == bindparam("institution"), e.c.at >= bindparam("since"))


@functools.cache
def _reminded_sql(n: int):  # noqa: ANN202
    e = t.recognition_event
    return select(e.c.check_id, e.c.source_ref, e.c.disclosed, e.c.id).where(
        e.c.check_id.in_([bindparam(f"v{i}") for i in range(n)]), e.c.kind == const(REMINDED))


def _full(row: dict) -> dict:
    return {c: row.get(c) for c in _EVENT_COLUMNS}


class _Tally:
    def __init__(self) -> None:
        self.n = dict.fromkeys((CHECKED, "found", REMINDED, OPENED, ADOPTED, DECLINED, REORDERED), 0)
        self.reminded_checks: set[str] = set()
        self.adopted_checks: set[str] = set()
        self.savings_fen = 0

    def add(self, r) -> None:  # noqa: ANN001
        if r.kind == CHECKED:
            self.n[CHECKED] += 1
            self.n["found"] += bool(r.found)
        elif r.kind == REMINDED:
            self.reminded_checks.add(r.check_id)
        elif r.kind == ADOPTED:
            if r.check_id not in self.adopted_checks:
                self.adopted_checks.add(r.check_id)
                self.savings_fen += r.price_fen or 0
        elif r.kind in self.n:
            self.n[r.kind] += 1

    def to_json(self) -> dict[str, Any]:
        n = self.n
        reminded, adopted = len(self.reminded_checks), len(self.adopted_checks)
        return {"checked": n[CHECKED], "found": n["found"],
                "retrieval_rate": round(n["found"] / n[CHECKED], 4) if n[CHECKED] else None,
                "reminded": reminded, "opened": n[OPENED], "adopted": adopted, "declined": n[DECLINED],
                "reordered": n[REORDERED],
                "recognition_rate": round(adopted / reminded, 4) if reminded else None,
                "savings_yuan": str(Decimal(self.savings_fen) / 100)}


def _zone(tz: str):  # noqa: ANN202
    from zoneinfo import ZoneInfo

    return ZoneInfo(tz)


def _qual(r) -> Qualification:  # noqa: ANN001
    return Qualification(r.id, r.institution_id, r.item_id, r.basis, r.valid_from, r.valid_to, r.reference)


def _hit(d: dict) -> Hit:
    d = dict(d)
    source, study = d.pop("source", None), d.pop("study", None)
    d.pop("order_ref", None)
    d["date"] = date.fromisoformat(d["date"])
    d["valid_until"] = date.fromisoformat(d["valid_until"])
    d["price_yuan"] = Decimal(d["price_yuan"])
    h = Hit(**d)
    h._source = source  # type: ignore[attr-defined]
    h._study = study  # type: ignore[attr-defined]
    return h


def _is_imaging(body: dict) -> bool:
    for cc in body.get("category") or []:
        for c in cc.get("coding") or []:
            if c.get("code") in ("RAD", "imaging", "CT", "MR", "US"):
                return True
    return bool(body.get("imagingStudy"))


def _effective(body: dict) -> datetime | date | None:
    v = body.get("effectiveDateTime") or (body.get("effectivePeriod") or {}).get("start") \
        or body.get("effectiveInstant") or body.get("started")
    if not isinstance(v, str):
        return None
    try:
        if len(v) == 10:
            return date.fromisoformat(v)
        if len(v) < 10:
            return None
        moment = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _effective_text(body: dict) -> str | None:
    return body.get("effectiveDateTime") or (body.get("effectivePeriod") or {}).get("start") \
        or body.get("effectiveInstant")


def _num(v: Any) -> str:
    return format(Decimal(str(v)).normalize(), "f") if isinstance(v, (int, float)) else str(v)


def _value(body: dict) -> tuple[str | None, str | None]:
    q = body.get("valueQuantity")
    if isinstance(q, dict) and "value" in q:
        return (q.get("comparator") or "") + _num(q["value"]), q.get("unit") or q.get("code")
    cc = body.get("valueCodeableConcept")
    if isinstance(cc, dict):
        return cc.get("text") or next((c.get("display") or c.get("code") for c in cc.get("coding") or []), None), None
    for k in ("valueString", "valueInteger", "valueBoolean"):
        if k in body:
            return str(body[k]), None
    return None, None


def _range(body: dict) -> str | None:
    for rr in body.get("referenceRange") or []:
        if rr.get("text"):
            return rr["text"]
        lo, hi = rr.get("low") or {}, rr.get("high") or {}
        unit = hi.get("unit") or lo.get("unit") or ""
        if "value" in lo and "value" in hi:
            return f"{_num(lo['value'])}-{_num(hi['value'])} {unit}".strip()
        if "value" in hi:
            return f"<= {_num(hi['value'])} {unit}".strip()
        if "value" in lo:
            return f">= {_num(lo['value'])} {unit}".strip()
    return None


def _flag(body: dict) -> str | None:
    for cc in body.get("interpretation") or []:
        for c in cc.get("coding") or []:
            if c.get("code"):
                return c["code"]
    return None


BODY_SITE_EXT = "http://hl7.org/fhir/StructureDefinition/bodySite"


def _report_site(body: dict) -> dict | None:
    for ext in body.get("extension") or []:
        if ext.get("url") == BODY_SITE_EXT:
            for c in (ext.get("valueCodeableConcept") or {}).get("coding") or []:
                return c
    for c in (body.get("bodySite") or {}).get("coding") or []:  # Observation.bodySite
        return c
    return None


def _recognised(body: dict, ev: dict, detail: dict, item: Item | None, encounter_id: str) -> dict:
    """The recognised external result as written into the ordering encounter."""
    obs: dict[str, Any] = {
        "resourceType": "Observation", "status": "final",
        "meta": {"tag": [{"system": RECOGNISED_TAG, "code": detail.get("mark") or "HR",
                          "display": "互认结果 recognised external result"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "laboratory" if (item and item.kind == "laboratory") else "imaging"}]}],
        "code": body.get("code") or {"text": detail.get("item_name_zh")},
        "subject": {"reference": f"Patient/{ev['patient_id']}"},
        "encounter": {"reference": f"Encounter/{encounter_id}"},
        "derivedFrom": [{"reference": ev["source_ref"]}] + (
            [{"reference": detail["study"]}] if detail.get("study") else []),
        "note": [{"text": f"{detail.get('mark') or 'HR'} 互认: {detail.get('institution_name')} "
                          f"{detail.get('date')}，互认有效至 {detail.get('valid_until')}"}],
    }
    if body.get("effectiveDateTime"):
        obs["effectiveDateTime"] = body["effectiveDateTime"]
    elif body.get("effectivePeriod"):
        obs["effectivePeriod"] = body["effectivePeriod"]
    for k in ("valueQuantity", "valueCodeableConcept", "valueString", "interpretation", "referenceRange"):
        if k in body:
            obs[k] = body[k]
    if "conclusion" in body and "valueString" not in obs and not any(k.startswith("value") for k in obs):
        obs["valueString"] = body["conclusion"]
    return obs


def _provenance(target: str, ev: dict, detail: dict, ctx: RequestContext, when: datetime) -> dict:
    ptype = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
    a = ctx.actor
    return {
        "resourceType": "Provenance",
        "target": [{"reference": target}],
        "recorded": when.astimezone().isoformat(timespec="seconds"),
        "activity": {"text": "mutual recognition: result adopted instead of re-testing (检查检验结果互认)"},
        "agent": [
            {"type": {"coding": [{"system": ptype, "code": "author"}]},
             "who": {"reference": f"Practitioner/{a.practitioner_id}"} if a.practitioner_id
             else {"display": a.display},
             "onBehalfOf": {"reference": f"Organization/{a.institution_id}"}},
            {"type": {"coding": [{"system": ptype, "code": "performer"}]},
             "who": {"reference": f"Organization/{ev['source_institution']}",
                     "display": detail.get("institution_name")}},
        ],
        "entity": [{"role": "source", "what": {"reference": ev["source_ref"]}}],
    }
