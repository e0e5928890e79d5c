"""The automatic checks of regional prescription pre-review (issue 8, item 3; docs/prereview.md),
graded by level against 医疗机构处方审核规范 (国卫办医发〔2018〕14号): legality (合法性), format
(规范性) and the nine appropriateness (适宜性) categories.

Pure functions over a prescription's lines and the rules file (``data/prereview-v1.json``); no
database.  The order-time check of :class:`healthlink.medsafety.service.MedSafety` (interactions,
allergy and cross-sensitivity, duplicates, dose) is not repeated here: :func:`from_finding` maps
its findings to categories and levels; only pairs *inside* one prescription are looked up here,
through the same knowledge base.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from healthlink.errors import Invalid
from healthlink.medsafety.knowledge import Knowledge

DATA = Path(__file__).parent / "data" / "prereview-v1.json"
#: the prescriber's rights, on Practitioner.qualification.code (docs/prereview.md)
RIGHTS_SYSTEM = "https://healthlink.example.org/fhir/CodeSystem/prescribing-right"
TIERS = ("non-restricted", "restricted", "special")  # 抗菌药物 非限制/限制/特殊使用级, in rank
TIER_ZH = {"non-restricted": "非限制使用级", "restricted": "限制使用级", "special": "特殊使用级"}
RIGHTS = {"antimicrobial-non-restricted": "非限制使用级抗菌药物处方权",
          "antimicrobial-restricted": "限制使用级抗菌药物处方权",
          "antimicrobial-special": "特殊使用级抗菌药物处方权",
          "narcotic-psychotropic-1": "麻醉药品和第一类精神药品处方权"}
SKIN_TEST_EXT = "https://healthlink.example.org/fhir/StructureDefinition/skin-test-result"
#: levels: 1 notice (提示), 2 warning (警示: the pharmacist looks), 3 severe (严重)
LEVELS = {1: ("提示", "notice"), 2: ("警示", "warning"), 3: ("严重", "severe")}
#: the categories: legality, format and the nine appropriateness checks of the 2018 norms
CATEGORIES: dict[str, tuple[str, str]] = {
    "legality": ("合法性", "legality"),
    "format": ("规范性", "format"),
    "indication": ("适应证", "indication"),
    "skin-test": ("皮试", "skin test"),
    "dose-quantity": ("用法用量", "dose and quantity"),
    "form-route": ("剂型与给药途径", "form and route"),
    "duplicate-interaction": ("重复给药和相互作用", "duplicates and interactions"),
    "incompatibility": ("配伍禁忌", "incompatibility"),
    "special-population-allergy": ("特殊人群与过敏", "special populations and allergy"),
    "solvent-rate": ("溶媒与滴速", "solvent and infusion rate"),
    "other": ("其他", "other"),
}
#: medsafety severity -> pre-review level
SEVERITY_LEVEL = {"contraindicated": 3, "major": 2, "moderate": 1, "minor": 1}
NORMS = {"ref": "nhc-review-2018", "citation": "医疗机构处方审核规范（国卫办医发〔2018〕14号）",
         "url": "http://www.gov.cn/zhengce/zhengceku/2018-12/31/content_5435182.htm", "basis": "published"}
_DURATION_MIN = {"s": 1 / 60, "min": 1.0, "h": 60.0, "d": 1440.0}
_DAYS = {"d": 1.0, "wk": 7.0, "mo": 30.0, "h": 1 / 24, "min": 1 / 1440}


@dataclass
class Problem:
    category: str
    level: int
    message_zh: str
    message_en: str
    source: dict[str, Any]
    rule: str
    order_ref: str | None = None  # the line concerned (None: the prescription as a whole)
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Line:
    """One MedicationRequest of a prescription, resolved."""

    index: int
    order_ref: str
    body: dict
    ingredients: tuple[str, ...]
    name: str | None
    route: str | None  # our route id


@dataclass(frozen=True)
class Rules:
    raw: dict
    sources: dict[str, dict]

    def source(self, s: dict | None) -> dict[str, Any]:
        s = dict(s or {})
        ref = self.sources.get(s.get("ref", ""), {})
        return {"ref": s.get("ref"), "citation": s.get("citation") or ref.get("citation"),
                "url": s.get("url") or ref.get("url"), "section": s.get("section"),
                "basis": s.get("basis"), "note": s.get("note")}

    @property
    def p(self) -> dict:
        return self.raw["prereview"]


def load_rules(path: str | Path | None = None) -> tuple[dict, Rules]:
    """The rules file (raw, for :func:`healthlink.medsafety.knowledge.merge`) and its rules."""
    raw = json.loads(Path(path or DATA).read_text(encoding="utf-8"))
    pr = raw.get("prereview") if isinstance(raw, dict) else None
    if not isinstance(pr, dict):
        raise Invalid(f"{path or DATA}: no 'prereview' section")
    for key in ("antimicrobial_tiers", "controlled", "skin_test", "incompatibilities", "solvents",
                "infusion_rates", "routes"):
        if not isinstance(pr.get(key, []), list):
            raise Invalid(f"{path or DATA}: prereview.{key} must be a list")
    sources = {s["id"]: s for s in raw.get("provenance", {}).get("sources", [])}
    return raw, Rules(raw, sources)


def _name(kb: Knowledge, ing: str) -> tuple[str, str]:
    i = kb.ingredient(ing)
    return ((i.name_zh or i.name_en), i.name_en) if i else (ing, ing)


def _in(kb: Knowledge, ing: str, ingredients: list[str], classes: list[str]) -> bool:
    return ing in ingredients or bool(kb.classes_of(ing) & set(classes))


def tier_of(kb: Knowledge, rules: Rules, ing: str) -> tuple[str, dict] | None:
    """The antimicrobial tier of an ingredient: named ingredients first, then classes."""
    entries = rules.p.get("antimicrobial_tiers", [])
    for e in entries:
        if ing in e.get("ingredients", []):
            return e["tier"], e
    for e in entries:
        if kb.classes_of(ing) & set(e.get("classes", [])):
            return e["tier"], e
    return None


def rights_of(practitioner: dict | None) -> frozenset[str]:
    """The prescribing rights on a Practitioner's qualifications (current ones: no period end in
    the past is checked by the caller's clock)."""
    out: set[str] = set()
    for q in (practitioner or {}).get("qualification") or []:
        for c in (q.get("code") or {}).get("coding") or []:
            if c.get("system") == RIGHTS_SYSTEM and c.get("code") in RIGHTS:
                out.add(c["code"])
    return frozenset(out)


def _has_tier_right(rights: frozenset[str], tier: str) -> bool:
    have = [TIERS.index(r.removeprefix("antimicrobial-")) for r in rights if r.startswith("antimicrobial-")]
    return bool(have) and max(have) >= TIERS.index(tier)


def _p(category: str, level: int, zh: str, en: str, source: dict, rule: str, line: Line | None,
       **detail: Any) -> Problem:
    return Problem(category, level, zh, en, source, rule, line.order_ref if line else None, detail)


def legality(kb: Knowledge, rules: Rules, lines: list[Line], *, rights: frozenset[str],
             prescriber: dict | None) -> list[Problem]:
    out: list[Problem] = []
    if prescriber is None or prescriber.get("active") is False:
        out.append(_p("legality", 3, "处方医师不在执业人员目录中或已停用", "the prescriber is not an active "
                      "practitioner of the directory", NORMS, "prescriber-unknown", None))
    for ln in lines:
        for ing in ln.ingredients:
            dz, de = _name(kb, ing)
            got = tier_of(kb, rules, ing)
            if got is not None and not _has_tier_right(rights, got[0]):
                tier, e = got
                out.append(_p("legality", 3, f"处方医师无{TIER_ZH[tier]}抗菌药物处方权：{dz}",
                              f"the prescriber has no right to prescribe {tier} antimicrobials: {de}",
                              rules.source(e["source"]), f"antimicrobial-{tier}", ln, tier=tier, ingredient=ing))
            for c in rules.p.get("controlled", []):
                if ing in c.get("ingredients", []) and "narcotic-psychotropic-1" not in rights:
                    out.append(_p("legality", 3, f"处方医师无麻醉药品和第一类精神药品处方权：{dz}（{c['name_zh']}）",
                                  f"the prescriber has no right to prescribe narcotic and class 1 psychotropic "
                                  f"drugs: {de} ({c['name_en']})", rules.source(c["source"]), f"controlled-{c['kind']}",
                                  ln, ingredient=ing))
    return out


def _dosage(body: dict) -> dict:
    return (body.get("dosageInstruction") or [{}])[0] or {}


def fmt(kb: Knowledge, rules: Rules, lines: list[Line]) -> list[Problem]:
    """Required elements (处方管理办法 第五条; 审核规范 规范性审核)."""
    out: list[Problem] = []
    if len(lines) > 5:
        out.append(_p("format", 1, f"每张处方不得超过5种药品（本处方{len(lines)}种）",
                      f"at most 5 drugs on one prescription ({len(lines)} here)", NORMS, "max-5-drugs", None))
    for ln in lines:
        b, d = ln.body, _dosage(ln.body)
        dq = ((d.get("doseAndRate") or [{}])[0] or {}).get("doseQuantity") or {}
        timing = d.get("timing") or {}
        rep = timing.get("repeat") or {}
        disp = b.get("dispenseRequest") or {}
        missing = []
        if not (b.get("subject") or {}).get("reference"):
            missing.append(("患者", "patient", "subject"))
        if not (b.get("requester") or {}).get("reference"):
            missing.append(("处方医师", "prescriber", "requester"))
        if not b.get("authoredOn"):
            missing.append(("开具日期", "date", "authoredOn"))
        if not isinstance(dq.get("value"), (int, float)):
            missing.append(("单次剂量", "dose", "dosageInstruction.doseAndRate.doseQuantity"))
        if not d.get("route"):
            missing.append(("给药途径", "route", "dosageInstruction.route"))
        if not (rep.get("frequency") or rep.get("period") or timing.get("code")):
            missing.append(("用药频次", "frequency", "dosageInstruction.timing"))
        if not ((disp.get("quantity") or {}).get("value") or disp.get("expectedSupplyDuration")
                or rep.get("boundsDuration")):
            missing.append(("数量或疗程", "quantity or duration", "dispenseRequest.quantity"))
        if missing:
            out.append(_p("format", 2, f"{ln.name or ln.order_ref}：缺少{'、'.join(m[0] for m in missing)}",
                          f"{ln.name or ln.order_ref}: missing {', '.join(m[1] for m in missing)}",
                          NORMS, "required-elements", ln, elements=[m[2] for m in missing]))
        text = str(d.get("text") or "")
        if ("遵医嘱" in text or "as directed" in text.lower()) and not isinstance(dq.get("value"), (int, float)):
            out.append(_p("format", 2, f"{ln.name or ln.order_ref}：用法不得写“遵医嘱”",
                          f"{ln.name or ln.order_ref}: 'as directed' is not a dosage", NORMS, "as-directed", ln))
    return out


def _days(body: dict) -> float | None:
    disp = body.get("dispenseRequest") or {}
    dur = disp.get("expectedSupplyDuration") or ((_dosage(body).get("timing") or {}).get("repeat") or {}
                                                 ).get("boundsDuration") or {}
    v, u = dur.get("value"), dur.get("code") or dur.get("unit")
    if isinstance(v, (int, float)) and u in _DAYS:
        return v * _DAYS[u]
    return None


def appropriateness(kb: Knowledge, rules: Rules, lines: list[Line], *, emergency: bool = False,
                    now_hours: float | None = None) -> list[Problem]:
    """Indication, skin test, quantity (days), form and route, pairs inside the prescription
    (duplicates, interactions, incompatibility), solvent and infusion rate, drugs the knowledge
    base does not know (other)."""
    out: list[Problem] = []
    pr = rules.p
    for ln in lines:
        b, label = ln.body, ln.name or ln.order_ref
        if not (b.get("reasonCode") or b.get("reasonReference")):
            out.append(_p("indication", 2, f"{label}：处方未写临床诊断（适应证无法判断）",
                          f"{label}: no diagnosis on the prescription (the indication cannot be judged)",
                          NORMS, "no-diagnosis", ln))
        if not ln.ingredients and not _is_solvent(kb, ln):
            out.append(_p("other", 2, f"{label}：药品不在知识库中，系统无法审核，需药师人工审核",
                          f"{label}: the drug is not in the knowledge base; a pharmacist reviews it", NORMS,
                          "unknown-drug", ln))
        for ing in ln.ingredients:
            dz, de = _name(kb, ing)
            for st in pr.get("skin_test", []):
                if not _in(kb, ing, st.get("ingredients", []), st.get("classes", [])):
                    continue
                result = _skin_test(b)
                if result is None:
                    out.append(_p("skin-test", 3, f"{dz}需皮试，处方未注明皮试结果", f"{de} needs a skin test; the "
                                  "prescription gives no result", rules.source(st["source"]), st["id"], ln))
                elif result == "positive":
                    out.append(_p("skin-test", 3, f"{dz}皮试阳性，不得使用", f"{de}: the skin test is positive; do "
                                  "not give", rules.source(st["source"]), st["id"], ln))
                break
            for r in pr.get("routes", []):
                if r["ingredient"] == ing and ln.route and ln.route not in r["routes"]:
                    out.append(_p("form-route", 2, f"{dz}不宜经{ln.route}途径给药（应为{'/'.join(r['routes'])}）",
                                  f"{de} is not given by the {ln.route} route ({'/'.join(r['routes'])} only)",
                                  rules.source(r["source"]), r["id"], ln, route=ln.route))
            for rate in pr.get("infusion_rates", []):
                if rate["ingredient"] != ing or ln.route != "iv":
                    continue
                minutes = _infusion_minutes(b)
                if minutes is None:
                    out.append(_p("solvent-rate", 1, f"{dz}静滴未注明输注时间（应不少于{rate['min_minutes']}分钟）",
                                  f"{de} IV: no infusion time given (at least {rate['min_minutes']} minutes)",
                                  rules.source(rate["source"]), rate["id"], ln))
                elif minutes < rate["min_minutes"]:
                    out.append(_p("solvent-rate", 2, f"{dz}滴速过快：{minutes:g}分钟（应不少于{rate['min_minutes']}分钟）",
                                  f"{de} infused too fast: {minutes:g} minutes (at least {rate['min_minutes']})",
                                  rules.source(rate["source"]), rate["id"], ln, minutes=minutes))
        days = _days(b)
        limit = (pr.get("max_days") or {}).get("emergency" if emergency else "outpatient")
        if days is not None and limit and days > limit:
            md = pr["max_days"]
            out.append(_p("dose-quantity", 1, f"{label}：用量{days:g}日，超过{'急诊' if emergency else '门诊'}{limit}日，"
                          "需注明理由", f"{label}: {days:g} days' supply, more than the {limit} days of an "
                          f"{'emergency' if emergency else 'outpatient'} prescription; give the reason",
                          rules.source(md.get("source")), "max-days", ln, days=days))
    out += _pairs(kb, rules, lines)
    return out


def _is_solvent(kb: Knowledge, ln: Line) -> bool:
    return any("iv-solvent" in kb.classes_of(i) for i in ln.ingredients)


def _skin_test(body: dict) -> str | None:
    for e in body.get("extension") or []:
        if e.get("url") == SKIN_TEST_EXT:
            v = e.get("valueCode") or ((e.get("valueCodeableConcept") or {}).get("coding") or [{}])[0].get("code")
            return v if v in ("negative", "positive") else None
    return None


def _infusion_minutes(body: dict) -> float | None:
    rep = (_dosage(body).get("timing") or {}).get("repeat") or {}
    v, u = rep.get("duration"), rep.get("durationUnit")
    return v * _DURATION_MIN[u] if isinstance(v, (int, float)) and u in _DURATION_MIN else None


def _pairs(kb: Knowledge, rules: Rules, lines: list[Line]) -> list[Problem]:
    out: list[Problem] = []
    pr = rules.p
    for n, a in enumerate(lines):
        for b in lines[n + 1:]:
            for ia in a.ingredients:
                for ib in b.ingredients:
                    az, ae = _name(kb, ia)
                    bz, be = _name(kb, ib)
                    d = kb.duplicate_class(ia, ib)
                    if d is not None:
                        same = d.id == "same-ingredient"
                        out.append(_p("duplicate-interaction", 2 if same else 1,
                                      f"本处方重复用药：{az} 与 {bz}（{'同一成分' if same else d.name_zh or d.name_en}）",
                                      f"duplicate in this prescription: {ae} and {be} "
                                      f"({'the same ingredient' if same else d.name_en})",
                                      _ksource(d.source), f"duplicate:{d.id}", b))
                    for it in kb.interactions_between(ia, ib)[:1]:
                        out.append(_p("duplicate-interaction", SEVERITY_LEVEL[it.severity],
                                      f"本处方药物相互作用：{az} + {bz}（{it.severity}）",
                                      f"interaction in this prescription: {ae} + {be} ({it.severity}): {it.effect or ''}",
                                      _ksource(it.source), f"interaction:{it.id}", b, severity=it.severity))
                    if a.route == "iv" and b.route == "iv":
                        for inc in pr.get("incompatibilities", []):
                            hit = (_in(kb, ia, inc["a"], inc["a"]) and _in(kb, ib, inc["b"], inc["b"])) or \
                                  (_in(kb, ib, inc["a"], inc["a"]) and _in(kb, ia, inc["b"], inc["b"]))
                            if hit:
                                out.append(_p("incompatibility", 3, f"配伍禁忌：{az} + {bz}：{inc['text_zh']}",
                                              f"incompatible: {ae} + {be}: {inc['text_en']}",
                                              rules.source(inc["source"]), inc["id"], b))
                    for sv in pr.get("solvents", []):
                        for drug, other, line in ((ia, ib, a), (ib, ia, b)):
                            if drug == sv["drug"] and other in sv["not_with"]:
                                dz, de = _name(kb, drug)
                                oz, oe = _name(kb, other)
                                uz, ue = _name(kb, sv["use"])
                                out.append(_p("solvent-rate", 3, f"溶媒不当：{dz}不得用{oz}溶解或稀释（应用{uz}）",
                                              f"wrong solvent: {de} must not be diluted in {oe} (use {ue})",
                                              rules.source(sv["source"]), sv["id"], line))
    return out


def _ksource(s: Any) -> dict[str, Any]:
    return {"ref": s.ref, "citation": s.citation, "url": s.url, "section": s.section, "basis": s.basis}


def from_finding(f: dict, order_ref: str) -> Problem:
    """A finding of the order-time check (``Finding.to_json()``) as a pre-review problem.  Hints
    stay hints: the text is the one the prescriber saw."""
    kind, sev = f["kind"], f["severity"]
    category = {"interaction": "duplicate-interaction", "duplicate": "duplicate-interaction",
                "allergy": "special-population-allergy"}.get(kind, "dose-quantity")
    if kind == "dose" and sev == "contraindicated":
        category = "special-population-allergy"  # an age group the drug is not for
    return Problem(category, SEVERITY_LEVEL.get(sev, 1), f["summary_zh"], f["summary_en"], f.get("source") or {},
                   f"medsafety:{kind}", order_ref,
                   {"severity": sev, "grant_needed": f.get("grant_needed", False),
                    "onc_high_priority": f.get("onc_high_priority", False)})


__all__ = ["CATEGORIES", "LEVELS", "RIGHTS", "RIGHTS_SYSTEM", "SKIN_TEST_EXT", "TIERS", "Line", "Problem",
           "Rules", "appropriateness", "fmt", "from_finding", "legality", "load_rules", "rights_of", "tier_of"]
