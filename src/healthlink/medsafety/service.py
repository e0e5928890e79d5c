"""The order-time medication check at Person level and the prescriber's overrides (issue 8, item 2).

``Platform.medsafety`` is a :class:`MedSafety`.  Every adapter (CDS Hooks, the JSON API, the
doctor's pages; none wired yet) calls the same methods with a :class:`RequestContext` whose actor
is the prescriber (or a nurse or pharmacist) at the ordering institution:

* :meth:`MedSafety.check` — a draft MedicationRequest against the Person's current medications
  and recorded allergies from every institution (read once through
  :meth:`Repository.medication_context`): interactions (by ingredient and class), allergy (direct
  ingredient match, then cross-sensitivity groups), duplicate therapy (the same ingredient under
  any code; duplicate classes) and dose (single and daily maxima for the patient's age and latest
  visible body weight).  Each :class:`Finding` cites its knowledge source and says whether it
  interrupts (the tiering in force, ``HEALTHLINK_MEDSAFETY_INTERRUPT_SEVERITIES``).  A finding
  about another institution's record that no grant discloses is a hint: *that* an interacting drug
  (or an allergy, or the same drug) is recorded at that institution on that date, nothing more.
* :meth:`MedSafety.override` — the prescriber goes ahead despite a finding, with a reason (required
  for an interrupting finding).

Checks and findings are recorded as events in ``medsafety_event`` (ADR 0014's pattern), committed
with the audit record of the check's read in the audit writer's group commit
(:meth:`Repository.medication_context_scope`, ADR 0016): no write transaction per check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, select

from healthlink.access import Repository, RequestContext, Services
from healthlink.access.directory import InstitutionDirectory
from healthlink.db import const_in, driver_all, event_id
from healthlink.db import tables as t
from healthlink.errors import Conflict, Forbidden, Invalid, Issue, NotFound
from healthlink.fhir.store import Stored
from healthlink.medsafety.knowledge import INTERRUPTING, SEVERITIES, Knowledge, Source

#: a draft order checked again within this time (order-select, then order-sign; or selected again)
#: keeps its first check and its findings' ids (recognition's rule, docs/medsafety.md)
DEDUPE_US = 24 * 3600 * 1_000_000

KINDS = ("interaction", "allergy", "duplicate", "dose")
CHANNELS = ("cds", "api", "web", "demo")
CHECKED, FINDING, OVERRIDDEN, ACCEPTED = "checked", "finding", "overridden", "accepted"
#: the code system of OVERRIDE_REASONS (CDS Hooks overrideReasons, the JSON API)
OVERRIDE_REASON_SYSTEM = "https://healthlink.example.org/fhir/CodeSystem/medsafety-override-reason"
#: reasons to go ahead despite a finding (codes; "other" needs a text)
OVERRIDE_REASONS: dict[str, tuple[str, str]] = {
    "benefit-outweighs-risk": ("获益大于风险", "The benefit outweighs the risk"),
    "tolerated-before": ("患者既往已耐受", "The patient has tolerated this before"),
    "will-monitor": ("将加强监测", "Will monitor the patient closely"),
    "dose-adjusted": ("已调整剂量", "The dose has been adjusted"),
    "not-current": ("相关药物已停用", "The other medication is no longer taken"),
    "allergy-not-confirmed": ("过敏史不属实", "The recorded allergy is not a true allergy"),
    "other": ("其他（请说明）", "Other (give the reason)"),
}
#: how many doses a day the HL7 v3 GTS abbreviations on Timing.code mean
GTS_PER_DAY = {"QD": 1.0, "QOD": 0.5, "BID": 2.0, "TID": 3.0, "QID": 4.0, "AM": 1.0, "PM": 1.0, "HS": 1.0,
               "Q1H": 24.0, "Q2H": 12.0, "Q3H": 8.0, "Q4H": 6.0, "Q6H": 4.0, "Q8H": 3.0, "Q12H": 2.0,
               "Q24H": 1.0, "WK": 1 / 7, "MO": 1 / 30}
_PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.0, "a": 365.0}
_MASS = {"g": 1000.0, "mg": 1.0, "ug": 0.001, "mcg": 0.001, "µg": 0.001}
SEVERITY_ZH = {"contraindicated": "禁忌", "major": "严重", "moderate": "中度", "minor": "轻度"}
_WEIGHT_STATUS = frozenset({"final", "amended", "corrected"})


new_id = event_id  # finding, check and event ids (time-ordered: healthlink.db.event_id)


@dataclass
class Concerns:
    """What a finding is about besides the draft.  Disclosed: the drug or allergy, institution,
    date and reference.  A hint: only the institution and the date (and ``grant_needed``)."""

    disclosed: bool
    institution_id: str | None = None
    institution_name: str | None = None
    date: str | None = None  # YYYY-MM-DD
    # disclosed only
    name: str | None = None  # the drug (or allergen) as recorded
    ingredient: str | None = None  # the matching ingredient id
    reference: str | None = None  # MedicationRequest/<id> | MedicationStatement/<id> | AllergyIntolerance/<id>
    grant_needed: bool = False


@dataclass
class Finding:
    """One problem found with the draft.  ``id`` is the finding's uuid and its event's id:
    :meth:`MedSafety.override` names it."""

    id: str
    kind: str  # interaction | allergy | duplicate | dose
    severity: str  # contraindicated | major | moderate | minor
    interrupt: bool
    summary_zh: str
    summary_en: str
    source: dict[str, Any]  # the knowledge source: citation, url, ref, basis (section when disclosed)
    ingredient: str  # the draft's ingredient concerned
    onc_high_priority: bool = False
    concerns: Concerns | None = None  # None: about the draft alone (dose)
    knowledge_id: str | None = None  # the knowledge entry (not given in a hint: it names the pair)
    management: str | None = None  # disclosed or draft-only findings
    detail: dict[str, Any] = field(default_factory=dict)  # dose: dose, limit, unit, band ...
    #: the same finding of the same draft order was already overridden (at order-select, or an
    #: earlier check within a day): {"event", "reason", "text", "at"}; None otherwise
    overridden: dict[str, Any] | None = None
    mechanism: str | None = None  # an interaction's mechanism (disclosed findings only)

    @property
    def grant_needed(self) -> bool:
        return self.concerns is not None and self.concerns.grant_needed

    def to_json(self) -> dict[str, Any]:
        # what dataclasses.asdict gives, without its deep copy (~3% of an order-sign call): the
        # nested dicts are copied one level, and nothing that takes this dict changes them deeper
        d = {f.name: getattr(self, f.name) for f in _FINDING_FIELDS}
        for k in ("source", "detail", "overridden"):
            if d[k] is not None:
                d[k] = dict(d[k])
        d["concerns"] = None if self.concerns is None else dict(vars(self.concerns))
        d["grant_needed"] = self.grant_needed
        return d


_FINDING_FIELDS = fields(Finding)


@dataclass
class MedCheck:
    check_id: str
    patient_id: str
    person_id: str | None
    order_ref: str | None
    ingredients: list[str]  # the draft's ingredient ids ([]: the drug is not in the knowledge base)
    findings: list[Finding]
    knowledge_version: str
    weight_kg: float | None = None
    age_years: float | None = None

    @property
    def interrupt(self) -> bool:
        return any(f.interrupt for f in self.findings)

    @property
    def grant_needed(self) -> bool:
        return any(f.grant_needed for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {"check_id": self.check_id, "patient_id": self.patient_id, "person_id": self.person_id,
                "order_ref": self.order_ref, "ingredients": self.ingredients,
                "knowledge_version": self.knowledge_version, "interrupt": self.interrupt,
                "grant_needed": self.grant_needed, "weight_kg": self.weight_kg, "age_years": self.age_years,
                "findings": [f.to_json() for f in self.findings]}


@dataclass
class _Record:
    """A current medication or allergy of the Person, resolved to ingredients."""

    stored: Stored
    disclosed: bool
    kind: str  # medication | allergy
    name: str | None
    ingredients: tuple[str, ...]
    classes: tuple[str, ...]  # an allergy to a class (coded as the class id)
    day: str | None

    @property
    def ref(self) -> str:
        return f"{self.stored.res_type}/{self.stored.res_id}"


@dataclass
class _Earlier:
    """An earlier check of the same draft order (:meth:`MedSafety._earlier`)."""

    check_id: str
    known: dict[tuple, str]  # finding id by _key
    overrides: dict[str, Any]  # override event row by finding id


class _PairMemo:
    """The knowledge base's pair look-ups (interactions, cross-sensitivity, duplicate class) for
    one knowledge object, remembered: each walks every entry of its section and expands classes,
    and a check asks the same few pairs again and again (ADR 0016).  Knowledge put in force later
    is another object, so it gets a memo of its own; the answers are never changed by callers."""

    MAX = 200_000  # pairs remembered before starting afresh (a region's knowledge has far fewer)

    def __init__(self, kb: Knowledge) -> None:
        self.kb = kb
        self._got: dict[tuple[str, str, str], Any] = {}

    def _ask(self, what: str, a: str, b: str, fn: Callable[[str, str], Any]) -> Any:
        key = (what, a, b)
        try:
            return self._got[key]
        except KeyError:
            pass
        if len(self._got) >= self.MAX:
            self._got.clear()
        got = self._got[key] = fn(a, b)
        return got

    def interactions_between(self, a: str, b: str) -> list:
        return self._ask("ix", a, b, self.kb.interactions_between)

    def cross_sensitive(self, allergen: str, ordered: str) -> Any:
        return self._ask("allergy", allergen, ordered, self.kb.cross_sensitive)

    def duplicate_class(self, a: str, b: str) -> Any:
        return self._ask("dup", a, b, self.kb.duplicate_class)


class MedSafety:
    """The medication safety service (``Platform.medsafety``)."""

    def __init__(self, services: Services, knowledge: Knowledge | Callable[[], Knowledge], *,
                 interrupt_severities: Iterable[str] = INTERRUPTING, clock=None) -> None:  # noqa: ANN001
        self.s = services
        # the knowledge in force, or how to get it (``store.InForce``: read from the store on first
        # use, after migrations; cached, and re-read when another version is put in force)
        self.knowledge = knowledge  # type: ignore[assignment]
        self.interrupting = frozenset(interrupt_severities)
        bad = self.interrupting - set(SEVERITIES)
        if bad:
            raise Invalid(f"unknown severities {sorted(bad)}")
        self._clock = clock or (lambda: datetime.now().astimezone())
        self.directory = InstitutionDirectory(services.db)
        self._memo: _PairMemo | None = None

    def _pairs(self, kb: Knowledge) -> _PairMemo:
        memo = self._memo
        if memo is None or memo.kb is not kb:
            memo = self._memo = _PairMemo(kb)
        return memo

    @property
    def knowledge(self) -> Knowledge:
        return self._knowledge if self._load_knowledge is None else self._load_knowledge()

    @knowledge.setter
    def knowledge(self, kb: Knowledge | Callable[[], Knowledge]) -> None:
        self._knowledge = kb if isinstance(kb, Knowledge) else None
        self._load_knowledge = None if isinstance(kb, Knowledge) else kb

    @property
    def clock(self):  # noqa: ANN201
        return self._clock

    @clock.setter
    def clock(self, fn) -> None:  # noqa: ANN001
        self._clock = fn

    def _now_us(self) -> int:
        return int(self._clock().timestamp() * 1_000_000)

    # ------------------------------------------------------------ directory
    def _inst_name(self, inst: str | None) -> str | None:
        if inst is None:
            return None
        got = self.directory.get(inst)
        return got.name if got is not None else inst

    # ------------------------------------------------------------ the check
    @staticmethod
    def _actor(ctx: RequestContext) -> None:
        a = ctx.actor
        if a.kind != "user" or a.institution_id is None or not (a.roles & {"doctor", "nurse", "pharmacist"}):
            raise Forbidden("only a doctor, nurse or pharmacist of an institution checks a prescription")

    def resolve(self, body: dict) -> tuple[tuple[str, ...], str | None]:
        """Ingredient ids and a display name of what a MedicationRequest / MedicationStatement
        names (``medicationCodeableConcept``, or a contained Medication's code)."""
        cc = body.get("medicationCodeableConcept")
        ref = (body.get("medicationReference") or {}).get("reference") if isinstance(
            body.get("medicationReference"), dict) else None
        if cc is None and isinstance(ref, str) and ref.startswith("#"):
            for c in body.get("contained") or []:
                if isinstance(c, dict) and c.get("resourceType") == "Medication" and c.get("id") == ref[1:]:
                    cc = c.get("code")
        return self._codes(cc)

    def _codes(self, cc: Any) -> tuple[tuple[str, ...], str | None]:
        if not isinstance(cc, dict):
            return (), None
        out: list[str] = []
        name = cc.get("text")
        for c in cc.get("coding") or []:
            if not isinstance(c, dict):
                continue
            name = name or c.get("display")
            for i in self.knowledge.ingredients_of(c.get("system") or "", c.get("code") or ""):
                if i not in out:
                    out.append(i)
        if name is None and out:
            ing = self.knowledge.ingredient(out[0])
            name = ing.name_en if ing else None
        return tuple(out), name

    def _allergy_classes(self, cc: Any) -> tuple[str, ...]:
        """An allergy coded with one of our class ids (any system), e.g. 'penicillin'."""
        if not isinstance(cc, dict):
            return ()
        return tuple(c.get("code") for c in cc.get("coding") or []
                     if isinstance(c, dict) and self.knowledge.drug_class(c.get("code") or "") is not None)

    def check(self, ctx: RequestContext, patient_id: str, draft: dict, *, encounter_id: str | None = None,
              channel: str = "api", record: bool = True) -> MedCheck:
        """Check ``draft`` (a MedicationRequest for the actor's Patient ``patient_id``); see the
        module docstring.  Records a ``checked`` event and a ``finding`` event per finding
        (unless ``record`` is False)."""
        self._actor(ctx)
        if channel not in CHANNELS:
            raise Invalid(f"unknown channel {channel!r}")
        if not isinstance(draft, dict) or draft.get("resourceType") != "MedicationRequest":
            raise Invalid("the draft must be a MedicationRequest",
                          [Issue("invalid", "not a MedicationRequest", ("draft",))])
        kb = self.knowledge
        ingredients, _ = self.resolve(draft)
        draft_ref = f"MedicationRequest/{draft['id']}" if draft.get("id") else None
        repo = Repository(ctx, self.s)
        if not record:
            person, ctxs = repo.medication_context(patient_id)
            return self._judge(ctx, patient_id, draft, draft_ref, ingredients, person, ctxs, kb)
        # the events ride on the group commit of the read's audit record (ADR 0016): one commit
        # for both, awaited before the result is returned, instead of a write transaction per
        # check; the draft order's earlier events are read on the context's connection
        at = self._now_us()
        earlier = (lambda conn: self._earlier(conn, ctx, patient_id, draft_ref, list(ingredients), encounter_id,
                                              at)) if draft_ref else None
        with repo.medication_context_scope(patient_id, also=earlier) as scope:
            result = self._judge(ctx, patient_id, draft, draft_ref, ingredients, scope.person_id, scope.records, kb)
            scope.rows.append((t.medsafety_event, self._check_events(ctx, result, encounter_id, channel, at,
                                                                     scope.also)))  # type: ignore[arg-type]
        return result

    def _judge(self, ctx: RequestContext, patient_id: str, draft: dict, draft_ref: str | None,
               ingredients: tuple[str, ...], person: str | None, ctxs: list[tuple[Stored, bool]],
               kb: Knowledge) -> MedCheck:
        """The four checks of ``draft`` against the records of :meth:`Repository.medication_context`."""
        me = ctx.actor.institution_id
        patient_body: dict = {}
        weights: list[tuple[str, float]] = []
        records: list[_Record] = []
        for s, shown in ctxs:
            if s.res_type == "Patient":
                patient_body = s.plain()
                continue
            body = s.plain()
            if s.res_type == "Observation":
                w = _weight_kg(body)
                day = _day(body)
                if shown and w is not None and day:
                    weights.append((_effective_key(body), w))
                continue
            if draft_ref and f"{s.res_type}/{s.res_id}" == draft_ref:
                continue  # the draft itself, already saved
            if s.res_type == "AllergyIntolerance":
                ings, name = self._codes(body.get("code"))
                records.append(_Record(s, shown, "allergy", name, ings, self._allergy_classes(body.get("code")),
                                       _day(body)))
            else:
                ings, name = self.resolve(body)
                if ings:
                    records.append(_Record(s, shown, "medication", name, ings, (), _day(body)))
        weight = max(weights)[1] if weights else None
        # newest first: of several records giving the same finding, the newest one is shown
        records.sort(key=lambda r: r.day or "", reverse=True)
        today = self._clock().date()
        age = _age_years(patient_body.get("birthDate"), today)
        findings: list[Finding] = []
        for ing in ingredients:
            findings += self._interactions(ing, records, me)
            findings += self._allergies(ing, records, me)
            findings += self._duplicates(ing, records, me)
        findings += self._doses(ingredients, draft, age, weight)
        findings.sort(key=lambda f: (SEVERITIES.index(f.severity), KINDS.index(f.kind)))
        findings = _dedupe(findings)
        return MedCheck(new_id(), patient_id, person, draft_ref, list(ingredients), findings, kb.version,
                        weight, round(age, 2) if age is not None else None)

    # ------------------------------------------------------------ the four checks
    def _concerns(self, rec: _Record, ing: str | None, me: str | None) -> Concerns:
        inst = rec.stored.institution_id
        if rec.disclosed:
            return Concerns(True, inst, self._inst_name(inst), rec.day, rec.name, ing, rec.ref)
        return Concerns(False, inst, self._inst_name(inst), rec.day, grant_needed=True)

    def _finding(self, kind: str, severity: str, ing: str, source: Source, rec: _Record | None,
                 other: str | None, me: str | None, *, zh: tuple[str, str], en: tuple[str, str],
                 knowledge_id: str | None, management: str | None = None, onc: bool = False,
                 detail: dict | None = None, mechanism: str | None = None) -> Finding:
        """``zh``/``en``: (text when disclosed, text of the hint)."""
        concerns = self._concerns(rec, other, me) if rec is not None else None
        shown = concerns is None or concerns.disclosed
        src = {"citation": source.citation, "url": source.url, "ref": source.ref, "basis": source.basis}
        if shown:
            src["section"] = source.section
        f = Finding(new_id(), kind, severity, severity in self.interrupting, zh[0] if shown else zh[1],
                    en[0] if shown else en[1], src, ing, onc, concerns,
                    knowledge_id if shown else None, management if shown else None, detail or {},
                    mechanism=mechanism if shown else None)
        f._server = {"source_ref": rec.ref if rec else None, "knowledge": knowledge_id,  # type: ignore[attr-defined]
                     "source_institution": rec.stored.institution_id if rec else None}
        return f

    def _names(self, ing: str) -> tuple[str, str]:
        i = self.knowledge.ingredient(ing)
        return ((i.name_zh or i.name_en), i.name_en) if i else (ing, ing)

    def _where(self, rec: _Record) -> tuple[str, str]:
        inst = self._inst_name(rec.stored.institution_id) or ""
        return f"{inst}（{rec.day or '日期不详'}）", f"{inst} ({rec.day or 'date unknown'})"

    def _interactions(self, ing: str, records: list[_Record], me: str | None) -> list[Finding]:
        pairs = self._pairs(self.knowledge)
        out = []
        for rec in records:
            if rec.kind != "medication":
                continue
            for other in rec.ingredients:
                found = pairs.interactions_between(ing, other)
                if not found:
                    continue
                ix = next((x for x in found if x.onc_high_priority and x.severity == found[0].severity), found[0])
                dz, de = self._names(ing)
                oz, oe = self._names(other)
                wz, we = self._where(rec)
                sz = SEVERITY_ZH[ix.severity]
                out.append(self._finding(
                    "interaction", ix.severity, ing, ix.source, rec, other, me,
                    zh=(f"{sz}相互作用：{dz} 与 {oz}（{wz}登记）。{ix.name}",
                        f"{sz}相互作用：{dz} 与患者在{wz}登记的一种药物相互作用；经患者授权后可查看详情"),
                    en=(f"{ix.severity} interaction: {de} with {oe} (recorded at {we}). {ix.name}",
                        f"{ix.severity} interaction: {de} interacts with a medication recorded at {we}; "
                        "ask the patient to authorise access to see it"),
                    knowledge_id=",".join(x.id for x in found)[:160], management=ix.management,
                    onc=ix.onc_high_priority, mechanism=ix.mechanism))
        return out

    def _allergies(self, ing: str, records: list[_Record], me: str | None) -> list[Finding]:
        kb = self.knowledge
        pairs = self._pairs(kb)
        out = []
        dz, de = self._names(ing)
        for rec in records:
            if rec.kind != "allergy":
                continue
            wz, we = self._where(rec)
            hint = (f"过敏：患者在{wz}登记有与{dz}相关的过敏史；经患者授权后可查看详情",
                    f"allergy: an allergy relevant to {de} is recorded at {we}; "
                    "ask the patient to authorise access to see it")
            if ing in rec.ingredients:
                i = kb.ingredient(ing)
                severity = "contraindicated"
                src = i.source if i else Source(citation="recorded allergy")
                out.append(self._finding(
                    "allergy", severity, ing, src, rec, ing, me,
                    zh=(f"过敏：患者对{dz}过敏（{wz}登记）", hint[0]),
                    en=(f"allergy: the patient is allergic to {de} (recorded at {we})", hint[1]),
                    knowledge_id=f"ingredient:{ing}", management="Do not give; choose another drug."))
                continue
            for allergen in (*rec.ingredients, *rec.classes):
                g = pairs.cross_sensitive(allergen, ing)
                if g is None:
                    continue
                az = rec.name or allergen
                cond = f" ({g.condition})" if g.condition else ""
                out.append(self._finding(
                    "allergy", "major", ing, g.source, rec, allergen, me,
                    zh=(f"交叉过敏：患者对{az}过敏（{wz}登记），{dz}属同一交叉过敏组（{g.name_zh or g.name_en}）", hint[0]),
                    en=(f"cross-sensitivity: allergy to {az} (recorded at {we}); {de} is in the same "
                        f"group ({g.name_en}){cond}", hint[1]),
                    knowledge_id=f"allergy-group:{g.id}", management=g.note or g.condition))
                break
        return out

    def _duplicates(self, ing: str, records: list[_Record], me: str | None) -> list[Finding]:
        pairs = self._pairs(self.knowledge)
        out = []
        dz, de = self._names(ing)
        for rec in records:
            if rec.kind != "medication":
                continue
            for other in rec.ingredients:
                d = pairs.duplicate_class(ing, other)
                if d is None:
                    continue
                same = d.id == "same-ingredient"
                severity = "major" if same else "moderate"
                oz, oe = self._names(other)
                wz, we = self._where(rec)
                what_zh = "同一成分" if same else f"同类药物（{d.name_zh or d.name_en}）"
                what_en = "the same ingredient" if same else f"the same class ({d.name_en})"
                out.append(self._finding(
                    "duplicate", severity, ing, d.source, rec, other, me,
                    zh=(f"重复用药：{dz} 与 {oz}（{wz}登记）为{what_zh}",
                        f"重复用药：患者在{wz}登记有与{dz}{what_zh}的药物；经患者授权后可查看详情"),
                    en=(f"duplicate therapy: {de} and {oe} (recorded at {we}) are {what_en}",
                        f"duplicate therapy: a medication of {what_en} as {de} is recorded at {we}; "
                        "ask the patient to authorise access to see it"),
                    knowledge_id=f"duplicate:{d.id}",
                    management="Check whether both are meant; stop one or adjust the doses."))
                break
        return out

    def _doses(self, ingredients: tuple[str, ...], draft: dict, age: float | None,
               weight: float | None) -> list[Finding]:
        kb = self.knowledge
        dosage = (draft.get("dosageInstruction") or [{}])[0] or {}
        dq = ((dosage.get("doseAndRate") or [{}])[0] or {}).get("doseQuantity") or {}
        value = dq.get("value")
        unit = dq.get("code") or dq.get("unit")
        route = None
        for c in (dosage.get("route") or {}).get("coding") or []:
            route = kb.route_id(c.get("code") or "") or route
        if route is None:
            route = "oral" if not dosage.get("route") else None
        if not isinstance(value, (int, float)) or route is None or len(ingredients) != 1:
            return []  # no single-ingredient dose to judge (combination products are not dosed here)
        ing = ingredients[0]
        limit = kb.dose_limit(ing, route, age, weight)
        if limit is None:
            return []
        per_day = _per_day(dosage.get("timing") or {})
        single = _convert(float(value), unit, limit.unit)
        dz, de = self._names(ing)
        out = []
        base = {"dose": value, "unit": unit, "route": route, "band": limit.band.label, "limit_unit": limit.unit,
                "max_single": limit.max_single, "max_daily": limit.max_daily, "per_day": per_day,
                "weight_kg": weight, "age_years": round(age, 2) if age is not None else None}
        who = (f"（{limit.band.label}，体重 {weight:g} kg）" if weight else f"（{limit.band.label}）",
               f" ({limit.band.label}" + (f", {weight:g} kg)" if weight else ")"))
        if limit.contraindicated:
            out.append(self._finding(
                "dose", "contraindicated", ing, limit.source, None, None, None,
                zh=(f"禁用：{dz} 不适用于该年龄段{who[0]}", ""),
                en=(f"contraindicated: {de} is not for this age group{who[1]}", ""),
                knowledge_id=f"dose:{limit.limit.id}", management=limit.band.note, detail=base))
            return out
        if single is None:
            return []  # a unit the limit cannot be compared with (e.g. tablets)
        if limit.max_single is not None and single > limit.max_single * 1.0001:
            ratio = single / limit.max_single
            out.append(self._finding(
                "dose", "major", ing, limit.source, None, None, None,
                zh=(f"单次剂量过高：{dz} {value:g} {unit}，上限 {limit.max_single:g} {limit.unit}{who[0]}", ""),
                en=(f"single dose too high: {de} {value:g} {unit}, at most {limit.max_single:g} {limit.unit}"
                    f"{who[1]}", ""),
                knowledge_id=f"dose:{limit.limit.id}", management=limit.band.note,
                detail={**base, "which": "single", "ratio": round(ratio, 2)}))
        if per_day is not None and limit.max_daily is not None and single * per_day > limit.max_daily * 1.0001:
            daily = single * per_day
            out.append(self._finding(
                "dose", "major", ing, limit.source, None, None, None,
                zh=(f"日剂量过高：{dz} 每日 {daily:g} {limit.unit}，上限 {limit.max_daily:g} {limit.unit}{who[0]}", ""),
                en=(f"daily dose too high: {de} {daily:g} {limit.unit} a day, at most {limit.max_daily:g} "
                    f"{limit.unit}{who[1]}", ""),
                knowledge_id=f"dose:{limit.limit.id}", management=limit.band.note,
                detail={**base, "which": "daily", "daily": daily, "ratio": round(daily / limit.max_daily, 2)}))
        if limit.needs_weight and not out:
            out.append(self._finding(
                "dose", "minor", ing, limit.source, None, None, None,
                zh=(f"无可用体重：{dz} 的剂量上限按体重计算{who[0]}，请记录体重", ""),
                en=(f"no body weight: the limit for {de} is per kg{who[1]}; record the weight", ""),
                knowledge_id=f"dose:{limit.limit.id}", detail={**base, "which": "needs-weight"}))
        return out

    # ------------------------------------------------------------ events
    def _base_event(self, ctx: RequestContext, check: MedCheck, encounter_id: str | None, channel: str) -> dict:
        a = ctx.actor
        return {"check_id": check.check_id, "channel": channel, "institution_id": a.institution_id,
                "department_id": a.department_id,
                "practitioner": f"Practitioner/{a.practitioner_id}" if a.practitioner_id else None,
                "username": a.subject, "patient_id": check.patient_id, "person_id": check.person_id,
                "encounter_id": encounter_id, "order_ref": check.order_ref}

    def _earlier(self, conn: Any, ctx: RequestContext, patient_id: str, order_ref: str,
                 ingredients: list[str], encounter_id: str | None, at: int) -> _Earlier | None:
        """The latest check of the same draft order (``order_ref``) of the same patient at the same
        institution in the last day, for the same ingredients (and encounter, when both name one),
        with its findings' ids by :func:`_key` and their overrides; None when there is none.  One
        statement (the draft order's events, by ``ix_medsafety_event_patient``), run in the read
        transaction of the check's medication context."""
        rows = driver_all(conn, _EARLIER_SQL, {"patient": patient_id, "order_ref": order_ref,
                                               "institution": ctx.actor.institution_id})
        checks = sorted((r for r in rows if r.kind == CHECKED and r.at >= at - DEDUPE_US),
                        key=lambda r: (r.at, r.id), reverse=True)
        for r in checks:
            if encounter_id and r.encounter_id and r.encounter_id != encounter_id:
                continue
            if (orjson.loads(r.detail or "{}").get("ingredients") or []) != ingredients:
                continue  # the draft now names another drug: a new check
            known: dict[tuple, str] = {}
            overrides: dict[str, Any] = {}
            for fr in sorted((x for x in rows if x.check_id == r.check_id), key=lambda x: (x.at, x.id)):
                if fr.kind == FINDING:
                    d = orjson.loads(fr.detail or "{}")
                    known.setdefault((fr.finding_kind, fr.severity, d.get("ingredient"), bool(fr.disclosed),
                                      fr.source_ref, fr.knowledge, d.get("summary_en")), fr.id)
                elif fr.kind == OVERRIDDEN and fr.finding_id:
                    overrides[fr.finding_id] = fr
            return _Earlier(r.check_id, known, overrides)
        return None

    def _check_events(self, ctx: RequestContext, check: MedCheck, encounter_id: str | None,
                      channel: str, at: int, earlier: _Earlier | None) -> list[dict]:
        """The rows of a ``checked`` event and a ``finding`` event per finding (the caller has them
        committed with the check's audit record).  A draft order checked again within a day
        (order-select, then order-sign; ``earlier``, :meth:`_earlier`) keeps the first check and
        the ids of the findings shown the same way (so an override given at select covers sign,
        and nothing is counted twice); only findings new since then are recorded, under the first
        check."""
        base = self._base_event(ctx, check, encounter_id, channel)
        rows = []
        fresh = check.findings
        if earlier is not None:
            check.check_id = earlier.check_id
            base["check_id"] = check.check_id
            fresh = []
            for f in check.findings:
                got = earlier.known.get(_key(f))
                if got is None:
                    fresh.append(f)
                else:
                    f.id = got
            for f in check.findings:
                r = earlier.overrides.get(f.id)
                if r is not None:
                    f.overridden = {"event": r.id, "reason": r.reason, "text": r.reason_text,
                                    "at": datetime.fromtimestamp(r.at / 1e6).astimezone().isoformat(timespec="seconds")}
        else:
            rows.append(_full({**base, "id": new_id(), "at": at, "kind": CHECKED,
                               "detail": orjson.dumps({"ingredients": check.ingredients,
                                                       "knowledge_version": check.knowledge_version,
                                                       "findings": len(check.findings),
                                                       "interrupt": check.interrupt}).decode()}))
        for f in fresh:
            server = getattr(f, "_server", {})
            rows.append(_full({**base, "id": f.id, "at": at, "kind": FINDING, "finding_id": f.id,
                               "finding_kind": f.kind, "severity": f.severity, "interrupt": f.interrupt,
                               "disclosed": f.concerns.disclosed if f.concerns else True,
                               "source_institution": server.get("source_institution"),
                               "source_ref": server.get("source_ref"),
                               "knowledge": (server.get("knowledge") or "")[:160] or None,
                               "detail": orjson.dumps(f.to_json()).decode()}))
        return rows

    def finding(self, ctx: RequestContext, finding_id: str) -> tuple[dict, dict]:
        """A finding event (its columns) and the finding as shown; only for staff of the
        institution that checked (404 otherwise)."""
        e = t.medsafety_event
        with self.s.db.read() as conn:
            row = conn.execute(select(e).where(e.c.id == finding_id, e.c.kind == FINDING)).first()
        if row is None or row.institution_id != ctx.actor.institution_id:
            raise NotFound(f"medication-safety finding {finding_id} is not known",
                           [Issue("not-found", f"no finding {finding_id} of your institution", ("finding",))])
        ev = dict(row._mapping)
        return ev, orjson.loads(ev["detail"])

    def override(self, ctx: RequestContext, finding_id: str, reason: str | None = None,
                 text: str | None = None, *, channel: str = "api") -> str:
        """Go ahead despite a finding.  An interrupting finding needs ``reason`` (one of
        :data:`OVERRIDE_REASONS`; ``other`` needs ``text``); for the others a reason is optional.
        Returns the override event's id; overriding the same finding again returns the first."""
        self._actor(ctx)
        text = (text or "").strip() or None
        if channel not in CHANNELS:
            raise Invalid(f"unknown channel {channel!r}")
        ev, _ = self.finding(ctx, finding_id)
        if ev["interrupt"] and not reason:
            raise Invalid("an interrupting finding needs a reason to go ahead",
                          [Issue("required", "reason missing", ("reason",))])
        if reason is not None and reason not in OVERRIDE_REASONS:
            raise Invalid(f"unknown reason {reason!r}; one of {', '.join(OVERRIDE_REASONS)}",
                          [Issue("code-invalid", f"unknown reason {reason!r}", ("reason",))])
        if reason == "other" and not text:
            raise Invalid("reason 'other' needs the reason in words",
                          [Issue("required", "text missing for reason 'other'", ("text",))])
        if text and len(text) > 500:
            raise Invalid("the reason text is longer than 500 characters",
                          [Issue("too-long", "at most 500 characters", ("text",))])
        return self._decide(ctx, ev, OVERRIDDEN, channel, reason=reason, reason_text=text)

    def accept(self, ctx: RequestContext, finding_id: str, *, channel: str = "api") -> str:
        """The prescriber followed the finding (removed or changed the draft; a CDS card's suggestion
        accepted).  Returns the ``accepted`` event's id; accepting again returns the first.  A finding
        already overridden cannot be accepted, nor the other way round (409)."""
        self._actor(ctx)
        if channel not in CHANNELS:
            raise Invalid(f"unknown channel {channel!r}")
        ev, _ = self.finding(ctx, finding_id)
        return self._decide(ctx, ev, ACCEPTED, channel)

    def _decide(self, ctx: RequestContext, ev: dict, kind: str, channel: str, **extra: Any) -> str:
        e = t.medsafety_event
        a = ctx.actor
        finding_id = ev["id"]
        with self.s.db.write() as conn:
            done = conn.execute(select(e.c.id, e.c.kind).where(e.c.finding_id == finding_id,
                                                               e.c.kind.in_((OVERRIDDEN, ACCEPTED)))).first()
            if done is not None:
                if done.kind != kind:
                    raise Conflict(f"finding {finding_id} was already {done.kind}",
                                   [Issue("conflict", f"already {done.kind}", ("finding",))])
                return done.id
            oid = new_id()
            row = {k: ev[k] for k in ("check_id", "institution_id", "patient_id", "person_id", "encounter_id",
                                      "order_ref", "finding_kind", "severity", "interrupt", "disclosed",
                                      "source_institution", "source_ref", "knowledge")}
            row.update({"id": oid, "at": self._now_us(), "kind": kind, "finding_id": finding_id,
                        "channel": channel, "department_id": a.department_id,
                        "practitioner": f"Practitioner/{a.practitioner_id}" if a.practitioner_id else None,
                        "username": a.subject, **extra})
            conn.execute(e.insert(), [_full(row)])
        return oid

    def knowledge_info(self) -> dict[str, Any]:
        """The knowledge in force: version, date, provenance, counts per section, sources, and where
        it is stored (mode, files, SHA-256, loaded, by) — ``store.describe``."""
        from healthlink.medsafety import store

        kb = self.knowledge
        row_of = getattr(self._load_knowledge, "row", None)
        return store.describe(kb, row_of() if callable(row_of) else None)


_EVENT_COLUMNS = tuple(c.name for c in t.medsafety_event.columns)
_e = t.medsafety_event
#: :meth:`MedSafety._earlier`'s statement, built once (building it cost more than running it)
_EARLIER_SQL = select(_e.c.id, _e.c.at, _e.c.kind, _e.c.check_id, _e.c.finding_id, _e.c.encounter_id,
                      _e.c.finding_kind, _e.c.severity, _e.c.disclosed, _e.c.source_ref, _e.c.knowledge,
                      _e.c.reason, _e.c.reason_text, _e.c.detail).where(
    _e.c.patient_id == bindparam("patient"), _e.c.order_ref == bindparam("order_ref"),
    _e.c.institution_id == bindparam("institution"), const_in(_e.c.kind, (CHECKED, FINDING, OVERRIDDEN)))


def _full(row: dict) -> dict:
    return {c: row.get(c) for c in _EVENT_COLUMNS}


def _key(f: Finding) -> tuple:
    """What makes two checks' findings the same finding (shown the same way): a hint and the
    disclosed finding behind it are two findings, as are two different doses."""
    server = getattr(f, "_server", {})
    return (f.kind, f.severity, f.ingredient, f.concerns.disclosed if f.concerns else True,
            server.get("source_ref"), (server.get("knowledge") or "")[:160] or None, f.summary_en)


def _dedupe(findings: list[Finding]) -> list[Finding]:
    """One finding per kind and record (or per kind and knowledge entry for dose findings); and of
    the records of one institution that give the same finding (the same drug prescribed again and
    again, each order still active), only the first (the newest) — one alert per problem and
    institution, not one per repeat prescription."""
    seen: set[tuple] = set()
    out = []
    for f in findings:
        server = getattr(f, "_server", {})
        key = (f.kind, f.ingredient, server.get("source_ref"), server.get("knowledge") if f.kind == "dose" else None,
               f.detail.get("which"))
        again = (f.kind, f.ingredient, f.severity, server.get("knowledge"), server.get("source_institution"),
                 f.concerns.disclosed if f.concerns else True, f.concerns.ingredient if f.concerns else None)
        if key in seen or (f.concerns is not None and again in seen):
            continue
        seen.update((key, again))
        out.append(f)
    return out


def _day(body: dict) -> str | None:
    for k in ("authoredOn", "effectiveDateTime", "dateAsserted", "recordedDate", "onsetDateTime", "issued"):
        v = body.get(k)
        if isinstance(v, str) and len(v) >= 10:
            return v[:10]
    v = (body.get("effectivePeriod") or {}).get("start")
    return v[:10] if isinstance(v, str) and len(v) >= 10 else None


def _effective_key(body: dict) -> str:
    return body.get("effectiveDateTime") or (body.get("effectivePeriod") or {}).get("start") \
        or body.get("issued") or ""


def _weight_kg(body: dict) -> float | None:
    if body.get("status") not in _WEIGHT_STATUS:
        return None
    q = body.get("valueQuantity") or {}
    v = q.get("value")
    if not isinstance(v, (int, float)) or v <= 0:
        return None
    unit = q.get("code") or q.get("unit")
    if unit == "kg":
        return float(v)
    if unit == "g":
        return float(v) / 1000
    if unit in ("[lb_av]", "lb"):
        return float(v) * 0.45359237
    return None


def _age_years(birth: Any, today: date) -> float | None:
    if not isinstance(birth, str):
        return None
    try:
        if len(birth) == 10:
            b = date.fromisoformat(birth)
        elif len(birth) == 7:
            b = date(int(birth[:4]), int(birth[5:7]), 15)
        elif len(birth) == 4:
            b = date(int(birth), 7, 1)
        else:
            return None
    except ValueError:
        return None
    return max((today - b).days, 0) / 365.25


def _per_day(timing: dict) -> float | None:
    rep = timing.get("repeat") or {}
    freq, period, unit = rep.get("frequency"), rep.get("period"), rep.get("periodUnit")
    if isinstance(period, (int, float)) and period > 0 and unit in _PERIOD_DAYS:
        f = rep.get("frequencyMax") or freq or 1
        if isinstance(f, (int, float)):
            return f / (period * _PERIOD_DAYS[unit])
    for c in (timing.get("code") or {}).get("coding") or []:
        if isinstance(c, dict) and (c.get("code") or "").upper() in GTS_PER_DAY:
            return GTS_PER_DAY[c["code"].upper()]
    return None


def _convert(value: float, unit: Any, to: str) -> float | None:
    if unit == to:
        return value
    if unit in _MASS and to in _MASS:
        return value * _MASS[unit] / _MASS[to]
    return None


__all__ = ["CHANNELS", "DEDUPE_US", "KINDS", "OVERRIDE_REASONS", "OVERRIDE_REASON_SYSTEM", "Concerns", "Finding", "MedCheck", "MedSafety"]
