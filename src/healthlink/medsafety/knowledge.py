"""The medication-safety knowledge base as data (issue 8, item 1).

A versioned JSON file (default ``data/knowledge-v1.json``) holds drugs (ingredients with RxNorm
codes, classes of our own naming, a local drug dictionary of products mapped to ingredients),
drug-drug interactions (the 15 ONC high-priority class pairs and further pairs, each graded
contraindicated | major | moderate | minor), allergy cross-sensitivity groups (beta-lactam side
chains, not "all penicillins vs all cephalosporins"), duplicate-therapy classes and dose limits
(single and daily maxima; paediatric by weight and age; elderly).  Every entry carries its source.
Knowledge applies by ingredient and class: a product, whatever code names it, is checked through
its ingredients.

:func:`load` / :func:`parse` refuse a file with a :class:`KnowledgeError` whose issues name each
bad entry and field; :func:`merge` lets a region extend the bundled file with a file of the same
format (a licensed vendor base, its own codes): an extension entry replaces the base entry with
the same id, new ids are added, and the merged whole is validated again.  docs/medsafety.md.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthlink.errors import Invalid, Issue

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
LOCAL_DRUG = "https://healthlink.example.org/fhir/CodeSystem/local-drug"  # demo code system
DEFAULT_PATH = Path(__file__).with_name("data") / "knowledge-v1.json"

SEVERITIES = ("contraindicated", "major", "moderate", "minor")
INTERRUPTING = frozenset({"contraindicated", "major"})
BASES = ("published", "assigned", "unverified")
UNITS = frozenset({"mg", "ug", "g", "[IU]", "mmol", "mL"})
SECTIONS = ("routes", "classes", "ingredients", "products", "interactions", "allergy_groups",
            "duplicate_classes", "dose_limits")
_AGE_RE = re.compile(r"^(\d+(?:\.\d+)?)(d|wk|mo|y)$")
_DAYS = {"d": 1.0, "wk": 7.0, "mo": 365.25 / 12, "y": 365.25}


class KnowledgeError(Invalid):
    """The knowledge file is malformed; ``issues`` name each entry and field."""


@dataclass(frozen=True)
class Source:
    """Where an entry comes from.  ``basis``: ``published`` (printed in the cited source and
    confirmed), ``assigned`` (the source names the pair or group; the grade or the member list is
    ours, see ``note``), ``unverified`` (stated by the cited source to our knowledge, not re-read:
    check before clinical use)."""

    citation: str
    url: str | None = None
    basis: str = "published"
    ref: str | None = None  # id of a source in provenance.sources
    section: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Route:
    id: str
    snomed: str
    name_en: str
    name_zh: str | None = None


@dataclass(frozen=True)
class DrugClass:
    id: str
    name_en: str
    name_zh: str | None
    source: Source


@dataclass(frozen=True)
class Ingredient:
    id: str
    rxnorm: str | None
    name_en: str
    name_zh: str | None
    classes: tuple[str, ...]
    source: Source


@dataclass(frozen=True)
class Product:
    """An entry of the local drug dictionary: a product named by one or more codes (a local or
    national drug code, an RxNorm product code), mapped to the ingredients it contains.
    ``ingredients_complete`` is false when some ingredients (herbal, Tibetan) are not mapped;
    ``unmapped_ingredients`` then says what is known of them."""

    id: str
    codes: tuple[tuple[str, str], ...]
    name_zh: str
    name_en: str | None
    kind: str
    ingredients: tuple[str, ...]
    ingredients_complete: bool
    source: Source
    unmapped_ingredients: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Members:
    classes: tuple[str, ...] = ()
    ingredients: tuple[str, ...] = ()


@dataclass(frozen=True)
class Interaction:
    id: str
    name: str
    a: Members
    b: Members
    severity: str  # contraindicated | major | moderate | minor
    mechanism: str
    management: str
    source: Source
    onc_high_priority: bool = False
    onc_row: int | None = None
    effect: str | None = None

    @property
    def interrupts(self) -> bool:
        """Whether the default tiering interrupts the prescriber (contraindicated, major)."""
        return self.severity in INTERRUPTING


@dataclass(frozen=True)
class AllergyGroup:
    id: str
    name_en: str
    name_zh: str | None
    kind: str  # side-chain | class | cross-intolerance | chemical-group
    members: Members
    source: Source
    not_members: Members = Members()
    condition: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class DuplicateClass:
    id: str
    name_en: str
    name_zh: str | None
    members: Members
    source: Source
    note: str | None = None


SAME_INGREDIENT = DuplicateClass(
    id="same-ingredient", name_en="the same ingredient twice", name_zh="同一成分重复",
    members=Members(), note="built in: two orders whose products share an ingredient, under any codes",
    source=Source(citation="医疗机构处方审核规范（国卫办医发〔2018〕14号）: appropriateness check 5 (duplicate therapy)",
                  url="https://www.gov.cn/gongbao/content/2018/content_5435182.htm", basis="assigned",
                  ref="nhc-review-2018"))


@dataclass(frozen=True)
class DoseBand:
    """One population of a dose limit.  Ages in days (from inclusive, to exclusive), weights in
    kg (from inclusive, to exclusive).  Absolute maxima are in the limit's unit; ``*_per_kg``
    in unit per kg body weight, capped by the absolute maxima when both are given."""

    label: str
    age_from_days: float | None = None
    age_to_days: float | None = None
    weight_from_kg: float | None = None
    weight_to_kg: float | None = None
    max_single: float | None = None
    max_daily: float | None = None
    max_single_per_kg: float | None = None
    max_daily_per_kg: float | None = None
    contraindicated: bool = False
    note: str | None = None

    def matches(self, age_days: float | None, weight_kg: float | None) -> bool:
        if self.age_from_days is not None or self.age_to_days is not None:
            if age_days is None:
                return False
            if self.age_from_days is not None and age_days < self.age_from_days:
                return False
            if self.age_to_days is not None and age_days >= self.age_to_days:
                return False
        if self.weight_from_kg is not None or self.weight_to_kg is not None:
            if weight_kg is None:
                return False
            if self.weight_from_kg is not None and weight_kg < self.weight_from_kg:
                return False
            if self.weight_to_kg is not None and weight_kg >= self.weight_to_kg:
                return False
        return True


@dataclass(frozen=True)
class DoseLimit:
    id: str
    ingredient: str
    route: str
    unit: str
    bands: tuple[DoseBand, ...]
    source: Source
    note: str | None = None


@dataclass(frozen=True)
class ApplicableDose:
    """The limit that applies to one patient: the band chosen by age and weight, with per-kg
    maxima worked out for the weight (``None`` where a per-kg limit has no weight to use)."""

    limit: DoseLimit
    band: DoseBand
    max_single: float | None
    max_daily: float | None
    needs_weight: bool

    @property
    def unit(self) -> str:
        return self.limit.unit

    @property
    def contraindicated(self) -> bool:
        return self.band.contraindicated

    @property
    def source(self) -> Source:
        return self.limit.source


def _cap(per_kg: float | None, weight: float | None, absolute: float | None) -> tuple[float | None, bool]:
    if per_kg is None:
        return absolute, False
    if weight is None:
        return absolute, True
    value = per_kg * weight
    return (min(value, absolute) if absolute is not None else value), False


@dataclass(frozen=True)
class Knowledge:
    version: str
    date: str
    provenance: dict[str, Any]
    routes: tuple[Route, ...]
    classes: tuple[DrugClass, ...]
    ingredients: tuple[Ingredient, ...]
    products: tuple[Product, ...]
    interactions: tuple[Interaction, ...]
    allergy_groups: tuple[AllergyGroup, ...]
    duplicate_classes: tuple[DuplicateClass, ...]
    dose_limits: tuple[DoseLimit, ...]
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        ing = {i.id: i for i in self.ingredients}
        by_class: dict[str, set[str]] = {}
        for i in self.ingredients:
            for c in i.classes:
                by_class.setdefault(c, set()).add(i.id)
        codes: dict[tuple[str, str], tuple[str, ...]] = {}
        for i in self.ingredients:
            if i.rxnorm:
                codes[(RXNORM, i.rxnorm)] = (i.id,)
        products: dict[tuple[str, str], Product] = {}
        for p in self.products:
            for key in p.codes:
                codes[key] = p.ingredients
                products[key] = p
        routes: dict[str, str] = {}
        for r in self.routes:
            routes[r.id] = r.id
            routes[r.snomed] = r.id
        doses: dict[tuple[str, str], list[DoseLimit]] = {}
        for d in self.dose_limits:
            doses.setdefault((d.ingredient, d.route), []).append(d)
        put = object.__setattr__
        put(self, "_ing", ing)
        put(self, "_by_class", {c: frozenset(v) for c, v in by_class.items()})
        put(self, "_codes", codes)
        put(self, "_products", products)
        put(self, "_routes", routes)
        put(self, "_doses", doses)
        put(self, "_classes", {c.id: c for c in self.classes})

    # -- drugs -------------------------------------------------------------------------------
    def ingredient(self, ingredient_id: str) -> Ingredient | None:
        return self._ing.get(ingredient_id)  # type: ignore[attr-defined]

    def drug_class(self, class_id: str) -> DrugClass | None:
        return self._classes.get(class_id)  # type: ignore[attr-defined]

    def product(self, system: str, code: str) -> Product | None:
        """The local-dictionary entry a code names, or None (RxNorm ingredient codes are not products)."""
        return self._products.get((system, code))  # type: ignore[attr-defined]

    def ingredients_of(self, system: str, code: str) -> tuple[str, ...]:
        """Ingredient ids of what a code names: an RxNorm ingredient code, or a product code (a
        local or national drug code, an RxNorm product code) from the drug dictionary.  Empty
        when the code is unknown or names a product whose ingredients are not mapped."""
        return self._codes.get((system, code), ())  # type: ignore[attr-defined]

    def classes_of(self, ingredient_id: str) -> frozenset[str]:
        i = self.ingredient(ingredient_id)
        return frozenset(i.classes) if i else frozenset()

    def members_of(self, members: Members) -> frozenset[str]:
        """The ingredient ids a member list names, classes expanded."""
        out = set(members.ingredients)
        for c in members.classes:
            out |= self._by_class.get(c, frozenset())  # type: ignore[attr-defined]
        return frozenset(out)

    def _expand(self, ingredient_or_class: str) -> frozenset[str]:
        if ingredient_or_class in self._ing:  # type: ignore[attr-defined]
            return frozenset({ingredient_or_class})
        return self._by_class.get(ingredient_or_class, frozenset())  # type: ignore[attr-defined]

    # -- interactions ------------------------------------------------------------------------
    def interactions_between(self, ing_a: str, ing_b: str) -> list[Interaction]:
        """Every interaction between two ingredients, most severe first (file order within a
        grade).  The same ingredient twice is a duplicate, not an interaction."""
        if ing_a == ing_b:
            return []
        found = []
        for ix in self.interactions:
            sa, sb = self.members_of(ix.a), self.members_of(ix.b)
            if (ing_a in sa and ing_b in sb) or (ing_b in sa and ing_a in sb):
                found.append(ix)
        return sorted(found, key=lambda ix: SEVERITIES.index(ix.severity))

    def onc_high_priority(self) -> list[Interaction]:
        return [ix for ix in self.interactions if ix.onc_high_priority]

    # -- allergy -----------------------------------------------------------------------------
    def cross_sensitivities(self, allergen: str, ordered: str) -> list[AllergyGroup]:
        """Groups through which an allergy to ``allergen`` (an ingredient id or a class id)
        extends to the ordered ingredient, most specific first (file order).  An allergy to the
        ordered ingredient itself is a direct match, not cross-sensitivity, and is not listed."""
        allergens = self._expand(allergen)
        if not allergens or allergens == {ordered}:
            return []
        out = []
        for g in self.allergy_groups:
            members = self.members_of(g.members) - self.members_of(g.not_members)
            if ordered in members and (allergens - {ordered}) & members:
                out.append(g)
        return out

    def cross_sensitive(self, allergen: str, ordered: str) -> AllergyGroup | None:
        """The first group (with its source) through which ``allergen`` extends to ``ordered``, or None."""
        groups = self.cross_sensitivities(allergen, ordered)
        return groups[0] if groups else None

    # -- duplicates --------------------------------------------------------------------------
    def duplicate_class(self, ing_a: str, ing_b: str) -> DuplicateClass | None:
        """The duplicate-therapy class two ingredients share (first in file order), the built-in
        ``same-ingredient`` class for the same ingredient twice, or None."""
        if ing_a == ing_b:
            return SAME_INGREDIENT if ing_a in self._ing else None  # type: ignore[attr-defined]
        for d in self.duplicate_classes:
            members = self.members_of(d.members)
            if ing_a in members and ing_b in members:
                return d
        return None

    # -- doses -------------------------------------------------------------------------------
    def route_id(self, route: str) -> str | None:
        """Our route id for a route id or its SNOMED CT code."""
        return self._routes.get(route)  # type: ignore[attr-defined]

    def dose_limit(self, ingredient_id: str, route: str, age_years: float | None = None,
                   weight_kg: float | None = None) -> ApplicableDose | None:
        """The limit for one ingredient by one route (id or SNOMED code) for a patient of this
        age and weight: the first band, in file order, whose age and weight ranges hold them (a
        band with an age or weight range never applies when that value is unknown).  None when
        no limit is known."""
        rid = self.route_id(route)
        if rid is None:
            return None
        age_days = age_years * 365.25 if age_years is not None else None
        for limit in self._doses.get((ingredient_id, rid), ()):  # type: ignore[attr-defined]
            for band in limit.bands:
                if band.matches(age_days, weight_kg):
                    single, n1 = _cap(band.max_single_per_kg, weight_kg, band.max_single)
                    daily, n2 = _cap(band.max_daily_per_kg, weight_kg, band.max_daily)
                    return ApplicableDose(limit, band, single, daily, n1 or n2)
        return None

    # -- figures -----------------------------------------------------------------------------
    def counts(self) -> dict[str, Any]:
        """Sizes for docs and status pages."""
        by_sev = {s: sum(1 for ix in self.interactions if ix.severity == s) for s in SEVERITIES}
        return {
            "ingredients": len(self.ingredients),
            "ingredients_with_rxnorm": sum(1 for i in self.ingredients if i.rxnorm),
            "classes": len(self.classes),
            "products": len(self.products),
            "interactions": len(self.interactions),
            "interactions_by_severity": by_sev,
            "onc_high_priority": len(self.onc_high_priority()),
            "allergy_groups": len(self.allergy_groups),
            "duplicate_classes": len(self.duplicate_classes),
            "dose_limits": len(self.dose_limits),
            "dose_bands": sum(len(d.bands) for d in self.dose_limits),
        }


# ------------------------------------------------------------------------------ loading
def load(path: str | Path | None = None) -> Knowledge:
    """Read and validate a knowledge file (default: the bundled ``knowledge-v1.json``)."""
    p = Path(path) if path is not None else DEFAULT_PATH
    return parse(_read(p), origin=str(p))


def _read(p: Path) -> Any:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KnowledgeError(f"knowledge {p}: cannot read: {exc}") from exc


def merge(base: Knowledge, extension: Knowledge | dict | str | Path) -> Knowledge:
    """``base`` extended by a file of the same format: in every section an extension entry
    replaces the base entry with the same id (in its place); new ids are appended.  Provenance
    sources merge the same way.  The result is validated as a whole (an extension may refer to
    the base's ingredients and classes); its version is ``"<base>+<extension>"``."""
    if isinstance(extension, Knowledge):
        ext = extension.raw
    elif isinstance(extension, dict):
        ext = extension
    else:
        ext = _read(Path(extension))
    if not isinstance(ext, dict):
        raise KnowledgeError("knowledge extension: top level must be an object")
    merged = copy.deepcopy(base.raw)
    for section in SECTIONS:
        extra = ext.get(section)
        if extra is None:
            continue
        if not isinstance(extra, list):
            raise KnowledgeError(f"knowledge extension: {section} must be a list",
                                 [Issue(code="invalid", diagnostics=f"{section}: must be a list", expression=(section,))])
        merged[section] = _merge_list(merged.get(section) or [], extra)
    prov = merged.setdefault("provenance", {})
    ext_prov = ext.get("provenance") if isinstance(ext.get("provenance"), dict) else {}
    prov["sources"] = _merge_list(prov.get("sources") or [], ext_prov.get("sources") or [])
    prov["extensions"] = [*prov.get("extensions", []),
                          {k: ext_prov.get(k, ext.get(k)) for k in ("version", "date", "publisher", "licence")}]
    merged["version"] = f"{base.version}+{ext.get('version', '?')}"
    if ext.get("date"):
        merged["date"] = max(str(merged.get("date", "")), str(ext["date"]))
    return parse(merged, origin=f"{base.version} + extension {ext.get('version', '?')}")


def _merge_list(base: list, extra: list) -> list:
    out = list(base)
    where = {e.get("id"): n for n, e in enumerate(out) if isinstance(e, dict)}
    for e in extra:
        key = e.get("id") if isinstance(e, dict) else None
        if key is not None and key in where:
            out[where[key]] = e
        else:
            where[key] = len(out)
            out.append(e)
    return out


class _Checker:
    def __init__(self, sources: dict[str, dict]) -> None:
        self.issues: list[Issue] = []
        self.sources = sources

    def bad(self, where: str, msg: str) -> None:
        self.issues.append(Issue(code="invalid", diagnostics=f"{where}: {msg}", expression=(where,)))

    def text(self, e: dict, label: str, name: str, required: bool = True) -> str | None:
        v = e.get(name)
        if v is None and not required:
            return None
        if not isinstance(v, str) or not v.strip():
            self.bad(f"{label}.{name}", "missing" if v is None else "must be a non-empty string")
            return None
        return v

    def source(self, e: dict, label: str, name: str = "source") -> Source | None:
        s = e.get(name)
        where = f"{label}.{name}"
        if not isinstance(s, dict):
            self.bad(where, "missing source (citation of where the entry comes from)")
            return None
        ref = s.get("ref")
        if ref is not None and ref not in self.sources:
            self.bad(f"{where}.ref", f"unknown source {ref!r}; not in provenance.sources")
            return None
        known = self.sources.get(ref, {}) if ref else {}
        citation = s.get("citation") or known.get("citation")
        if not isinstance(citation, str) or not citation.strip():
            self.bad(where, "missing source (citation of where the entry comes from)")
            return None
        basis = s.get("basis", "published")
        if basis not in BASES:
            self.bad(f"{where}.basis", f"unknown basis {basis!r}; one of {', '.join(BASES)}")
            return None
        return Source(citation=citation, url=s.get("url") or known.get("url"), basis=basis, ref=ref,
                      section=s.get("section"), note=s.get("note"))

    def members(self, e: dict, label: str, name: str, classes: set[str], ingredients: set[str],
                required: bool = True) -> Members | None:
        m = e.get(name)
        where = f"{label}.{name}"
        if m is None and not required:
            return Members()
        if not isinstance(m, dict):
            self.bad(where, "missing member list ({classes, ingredients})")
            return None
        cls, ing = m.get("classes") or [], m.get("ingredients") or []
        if not isinstance(cls, list) or not isinstance(ing, list):
            self.bad(where, "classes and ingredients must be lists")
            return None
        ok = True
        for c in cls:
            if c not in classes:
                self.bad(f"{where}.classes", f"unknown class {c!r}")
                ok = False
        for i in ing:
            if i not in ingredients:
                self.bad(f"{where}.ingredients", f"unknown ingredient {i!r}; not in the drug list")
                ok = False
        if required and not cls and not ing:
            self.bad(where, "no members")
            ok = False
        return Members(tuple(cls), tuple(ing)) if ok else None


def _entries(raw: dict, section: str, ck: _Checker, required: bool = True) -> Iterable[tuple[str, dict]]:
    entries = raw.get(section)
    if entries is None and not required:
        return
    if not isinstance(entries, list) or (required and not entries):
        ck.bad(section, f"no {section}")
        return
    seen: dict[str, str] = {}
    for n, e in enumerate(entries):
        label = f"{section}[{n}]" + (f" ({e.get('id')})" if isinstance(e, dict) and e.get("id") else "")
        if not isinstance(e, dict):
            ck.bad(label, "not an object")
            continue
        eid = e.get("id")
        if not isinstance(eid, str) or not eid.strip():
            ck.bad(f"{label}.id", "missing")
            continue
        if eid in seen:
            ck.bad(f"{label}.id", f"duplicate id, also {seen[eid]}")
            continue
        seen[eid] = label
        yield label, e


def _number(ck: _Checker, v: Any, where: str, *, allow_zero: bool = False) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        ck.bad(where, f"must be a number, got {v!r}")
        return None
    if v < 0 or (v == 0 and not allow_zero):
        ck.bad(where, f"must be positive, got {v}")
        return None
    return float(v)


def _age(ck: _Checker, v: Any, where: str) -> float | None:
    if v is None:
        return None
    m = _AGE_RE.match(v) if isinstance(v, str) else None
    if not m:
        ck.bad(where, f"age must be like '28d', '6wk', '3mo' or '12y', got {v!r}")
        return None
    return float(m.group(1)) * _DAYS[m.group(2)]


def _ids(raw: dict, section: str) -> set[str]:
    """The ids a section declares (also of entries with other errors, so that one bad entry does
    not cascade into 'unknown' errors elsewhere)."""
    entries = raw.get(section)
    if not isinstance(entries, list):
        return set()
    return {e["id"] for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)}


def parse(raw: Any, *, origin: str = "<knowledge>") -> Knowledge:
    if not isinstance(raw, dict):
        raise KnowledgeError(f"knowledge {origin}: top level must be an object")
    sources_raw = (raw.get("provenance") or {}).get("sources") if isinstance(raw.get("provenance"), dict) else None
    sources: dict[str, dict] = {}
    ck = _Checker(sources)
    if not isinstance(sources_raw, list) or not sources_raw:
        ck.bad("provenance.sources", "missing provenance with its sources")
    else:
        for n, s in enumerate(sources_raw):
            if not (isinstance(s, dict) and isinstance(s.get("id"), str) and isinstance(s.get("citation"), str)
                    and s["citation"].strip()):
                ck.bad(f"provenance.sources[{n}]", "needs id and citation")
                continue
            if not s.get("licence"):
                ck.bad(f"provenance.sources[{n}] ({s['id']}).licence", "missing licence statement")
            sources[s["id"]] = s
    version = raw.get("version")
    if not isinstance(version, str) or not version:
        ck.bad("version", "missing knowledge version")
    date = raw.get("date")
    if not isinstance(date, str) or not re.match(r"^\d{4}-\d{2}-\d{2}$", date or ""):
        ck.bad("date", f"missing or not YYYY-MM-DD: {date!r}")

    routes: list[Route] = []
    for label, e in _entries(raw, "routes", ck):
        snomed, name = ck.text(e, label, "snomed"), ck.text(e, label, "name_en")
        if snomed and name:
            routes.append(Route(e["id"], snomed, name, e.get("name_zh")))
    route_ids = {r.id for r in routes}

    classes: list[DrugClass] = []
    for label, e in _entries(raw, "classes", ck):
        name, src = ck.text(e, label, "name_en"), ck.source(e, label)
        if name and src:
            classes.append(DrugClass(e["id"], name, e.get("name_zh"), src))
    class_ids = _ids(raw, "classes")

    ingredients: list[Ingredient] = []
    codes: dict[tuple[str, str], str] = {}
    for label, e in _entries(raw, "ingredients", ck):
        name, src = ck.text(e, label, "name_en"), ck.source(e, label)
        rx = e.get("rxnorm")
        ok = name is not None and src is not None
        if rx is not None and (not isinstance(rx, str) or not rx.isdigit()):
            ck.bad(f"{label}.rxnorm", f"must be an RxCUI (digits) or null, got {rx!r}")
            ok = False
        elif rx is not None:
            if (RXNORM, rx) in codes:
                ck.bad(f"{label}.rxnorm", f"duplicate code {RXNORM}|{rx}, also {codes[(RXNORM, rx)]}")
                ok = False
            codes.setdefault((RXNORM, rx), label)
        cls = e.get("classes") or []
        if not isinstance(cls, list):
            ck.bad(f"{label}.classes", "must be a list")
            ok = False
        else:
            for c in cls:
                if c not in class_ids:
                    ck.bad(f"{label}.classes", f"unknown class {c!r}")
                    ok = False
        if ok:
            ingredients.append(Ingredient(e["id"], rx, name, e.get("name_zh"), tuple(cls), src))  # type: ignore[arg-type]
    ing_ids = _ids(raw, "ingredients")

    products: list[Product] = []
    for label, e in _entries(raw, "products", ck, required=False):
        name, src, kind = ck.text(e, label, "name_zh"), ck.source(e, label), ck.text(e, label, "kind")
        ok = None not in (name, src, kind)
        pcodes: list[tuple[str, str]] = []
        raw_codes = e.get("codes")
        if not isinstance(raw_codes, list) or not raw_codes:
            ck.bad(f"{label}.codes", "a product needs at least one code {system, code}")
            ok = False
        else:
            for k, c in enumerate(raw_codes):
                if not (isinstance(c, dict) and isinstance(c.get("system"), str) and isinstance(c.get("code"), str)
                        and c["system"] and c["code"]):
                    ck.bad(f"{label}.codes[{k}]", "needs system and code")
                    ok = False
                    continue
                key = (c["system"], c["code"])
                if key in codes:
                    ck.bad(f"{label}.codes[{k}]", f"duplicate code {key[0]}|{key[1]}, also {codes[key]}")
                    ok = False
                codes.setdefault(key, label)
                pcodes.append(key)
        ings = e.get("ingredients")
        complete = e.get("ingredients_complete", True)
        if not isinstance(complete, bool):
            ck.bad(f"{label}.ingredients_complete", "must be true or false")
            ok = False
        if not isinstance(ings, list):
            ck.bad(f"{label}.ingredients", "must be a list of ingredient ids")
            ok = False
            ings = []
        for i in ings:
            if i not in ing_ids:
                ck.bad(f"{label}.ingredients", f"unknown ingredient {i!r}; not in the drug list")
                ok = False
        if not ings and complete is True:
            ck.bad(f"{label}.ingredients", "no ingredients: map them, or set ingredients_complete false and say what is unknown")
            ok = False
        if complete is False and not e.get("unmapped_ingredients"):
            ck.bad(f"{label}.unmapped_ingredients", "say what is known of the unmapped ingredients (or 'unknown')")
            ok = False
        if ok:
            products.append(Product(e["id"], tuple(pcodes), name, e.get("name_en"), kind, tuple(ings), complete,  # type: ignore[arg-type]
                                    src, e.get("unmapped_ingredients"), e.get("note")))  # type: ignore[arg-type]

    interactions: list[Interaction] = []
    for label, e in _entries(raw, "interactions", ck):
        name = ck.text(e, label, "name")
        a = ck.members(e, label, "a", class_ids, ing_ids)
        b = ck.members(e, label, "b", class_ids, ing_ids)
        sev = e.get("severity")
        if sev not in SEVERITIES:
            ck.bad(f"{label}.severity", f"unknown severity {sev!r}; one of {', '.join(SEVERITIES)}")
        mech, mgmt = ck.text(e, label, "mechanism"), ck.text(e, label, "management")
        src = ck.source(e, label)
        onc = e.get("onc_high_priority", False)
        row = e.get("onc_row")
        if not isinstance(onc, bool):
            ck.bad(f"{label}.onc_high_priority", "must be true or false")
        elif onc and (isinstance(row, bool) or not isinstance(row, int)):
            ck.bad(f"{label}.onc_row", "an ONC high-priority entry needs its row number in Phansalkar 2012")
        if None in (name, a, b, mech, mgmt, src) or sev not in SEVERITIES or not isinstance(onc, bool):
            continue
        interactions.append(Interaction(e["id"], name, a, b, sev, mech, mgmt, src, onc,  # type: ignore[arg-type]
                                        row if onc else None, e.get("effect")))

    groups: list[AllergyGroup] = []
    for label, e in _entries(raw, "allergy_groups", ck):
        name, kind, src = ck.text(e, label, "name_en"), ck.text(e, label, "kind"), ck.source(e, label)
        mem = ck.members(e, label, "members", class_ids, ing_ids)
        nm = ck.members(e, label, "not_members", class_ids, ing_ids, required=False)
        if None not in (name, kind, src, mem, nm):
            groups.append(AllergyGroup(e["id"], name, e.get("name_zh"), kind, mem, src, nm,  # type: ignore[arg-type]
                                       e.get("condition"), e.get("note")))

    dups: list[DuplicateClass] = []
    for label, e in _entries(raw, "duplicate_classes", ck):
        name, src = ck.text(e, label, "name_en"), ck.source(e, label)
        mem = ck.members(e, label, "members", class_ids, ing_ids)
        if None not in (name, src, mem):
            dups.append(DuplicateClass(e["id"], name, e.get("name_zh"), mem, src, e.get("note")))  # type: ignore[arg-type]

    doses: list[DoseLimit] = []
    for label, e in _entries(raw, "dose_limits", ck):
        ok = True
        ingr = e.get("ingredient")
        if ingr not in ing_ids:
            ck.bad(f"{label}.ingredient", f"unknown ingredient {ingr!r}; not in the drug list")
            ok = False
        route = e.get("route")
        if route not in route_ids:
            ck.bad(f"{label}.route", f"unknown route {route!r}; one of {', '.join(sorted(route_ids))}")
            ok = False
        unit = e.get("unit")
        if unit not in UNITS:
            ck.bad(f"{label}.unit", f"unknown unit {unit!r}; UCUM, one of {', '.join(sorted(UNITS))}")
            ok = False
        src = ck.source(e, label)
        bands: list[DoseBand] = []
        raw_bands = e.get("bands")
        if not isinstance(raw_bands, list) or not raw_bands:
            ck.bad(f"{label}.bands", "no bands")
            ok = False
            raw_bands = []
        for k, b in enumerate(raw_bands):
            where = f"{label}.bands[{k}]"
            if not isinstance(b, dict):
                ck.bad(where, "not an object")
                ok = False
                continue
            before = len(ck.issues)
            vals = {f: _number(ck, b.get(f), f"{where}.{f}") for f in
                    ("max_single", "max_daily", "max_single_per_kg", "max_daily_per_kg")}
            w_from = _number(ck, b.get("weight_from_kg"), f"{where}.weight_from_kg", allow_zero=True)
            w_to = _number(ck, b.get("weight_to_kg"), f"{where}.weight_to_kg")
            a_from, a_to = _age(ck, b.get("age_from"), f"{where}.age_from"), _age(ck, b.get("age_to"), f"{where}.age_to")
            contra = b.get("contraindicated", False)
            if not isinstance(contra, bool):
                ck.bad(f"{where}.contraindicated", "must be true or false")
            elif not contra and all(v is None for v in vals.values()) and len(ck.issues) == before:
                ck.bad(where, "a band needs a maximum (single or daily, absolute or per kg) or contraindicated: true")
            if a_from is not None and a_to is not None and a_from >= a_to:
                ck.bad(f"{where}.age_to", "must be above age_from")
            if w_from is not None and w_to is not None and w_from >= w_to:
                ck.bad(f"{where}.weight_to_kg", "must be above weight_from_kg")
            if len(ck.issues) > before:
                ok = False
                continue
            bands.append(DoseBand(str(b.get("label") or f"band {k}"), a_from, a_to, w_from, w_to,
                                  vals["max_single"], vals["max_daily"], vals["max_single_per_kg"],
                                  vals["max_daily_per_kg"], contra, b.get("note")))
        if ok and src:
            doses.append(DoseLimit(e["id"], ingr, route, unit, tuple(bands), src, e.get("note")))  # type: ignore[arg-type]

    if ck.issues:
        summary = "; ".join(i.diagnostics for i in ck.issues[:10])
        more = f" (and {len(ck.issues) - 10} more)" if len(ck.issues) > 10 else ""
        raise KnowledgeError(f"knowledge {origin} is invalid: {summary}{more}", ck.issues)
    return Knowledge(version=version, date=date, provenance=raw["provenance"], routes=tuple(routes),  # type: ignore[arg-type]
                     classes=tuple(classes), ingredients=tuple(ingredients), products=tuple(products),
                     interactions=tuple(interactions), allergy_groups=tuple(groups),
                     duplicate_classes=tuple(dups), dose_limits=tuple(doses), raw=copy.deepcopy(raw))


__all__ = [
    "BASES", "DEFAULT_PATH", "INTERRUPTING", "LOCAL_DRUG", "RXNORM", "SAME_INGREDIENT", "SEVERITIES", "SNOMED",
    "AllergyGroup", "ApplicableDose", "DoseBand", "DoseLimit", "DrugClass", "DuplicateClass", "Ingredient",
    "Interaction", "Knowledge", "KnowledgeError", "Members", "Product", "Route", "Source", "load", "merge", "parse",
]
