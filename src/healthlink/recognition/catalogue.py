"""The recognition catalogue as data (issue 7, item 1).

A versioned JSON file lists the items the region recognises across institutions: the code
(LOINC, or a local code mapped to it), laboratory or examination, the equivalence group, the
validity window, the scope, the price (for savings) and the mark printed on reports ("HR",
国卫医发〔2022〕6号).  Windows are data, not code: the national measures set none, provinces
publish them per item (research notes §1.5).  A region replaces the file; :func:`load` refuses a
file with errors that name the entry and the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from healthlink.errors import Invalid, Issue

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
DEFAULT_PATH = Path(__file__).with_name("data") / "catalogue-v1.json"
KINDS = ("laboratory", "examination")
TIERS = ("prefecture", "county", "township")
SCOPE_RE = re.compile(r"^(region|consortium|tier:(prefecture|county|township)-and-above)$")
# DICOM PS3.16 CID 29 acquisition modalities a recognised examination may name
MODALITIES = frozenset({"CT", "MR", "DX", "CR", "US", "MG", "NM", "PT", "XA", "RF", "ECG", "OT"})


class CatalogueError(Invalid):
    """The catalogue file is malformed; ``issues`` name each entry and field."""


@dataclass(frozen=True)
class Coding:
    system: str
    code: str
    display: str | None = None


@dataclass(frozen=True)
class Source:
    """Where the item and its window come from.  ``basis`` is ``published`` when the window
    is printed in the cited list, ``assumed`` when the list names the item but the window was
    set by analogy (the citation says with what)."""

    citation: str
    url: str | None = None
    basis: str = "published"


@dataclass(frozen=True)
class Item:
    id: str
    name_zh: str
    name_en: str
    kind: str  # "laboratory" | "examination"
    loinc: str | None
    local_codes: tuple[tuple[str, str], ...]
    group: str  # equivalence group id: items of one group count as the same test
    validity_days: int
    scope: str  # "region" | "consortium" | "tier:<prefecture|county|township>-and-above"
    price_yuan: Decimal
    source: Source
    mark: str = "HR"
    modality: tuple[str, ...] = ()  # DICOM codes; an X-ray accepts DX and CR
    body_site: Coding | None = None  # SNOMED CT

    def codes(self) -> tuple[tuple[str, str], ...]:
        """Every (system, code) that names this item: its LOINC code, then its local codes."""
        return ((LOINC, self.loinc),) + self.local_codes if self.loinc else self.local_codes


@dataclass(frozen=True)
class Catalogue:
    version: str
    provenance: dict[str, Any]
    items: tuple[Item, ...]

    def __post_init__(self) -> None:
        index: dict[tuple[str, str], Item] = {}
        groups: dict[str, list[Item]] = {}
        for item in self.items:
            for key in item.codes():
                index[key] = item
            groups.setdefault(item.group, []).append(item)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_groups", {g: tuple(v) for g, v in groups.items()})

    def by_code(self, system: str, code: str) -> Item | None:
        """The item a LOINC or local code names, or None when it is not recognised."""
        return self._index.get((system, code))  # type: ignore[attr-defined]

    def by_id(self, item_id: str) -> Item | None:
        return next((i for i in self.items if i.id == item_id), None)

    def equivalents(self, item: Item) -> list[Item]:
        """Every item of ``item``'s equivalence group, ``item`` itself first: a result of any
        of them recognises an order of any other."""
        others = [i for i in self._groups.get(item.group, ()) if i.id != item.id]  # type: ignore[attr-defined]
        return [item, *others]


def load(path: str | Path | None = None) -> Catalogue:
    """Read and validate a catalogue file (default: the bundled ``catalogue-v1.json``)."""
    p = Path(path) if path is not None else DEFAULT_PATH
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogueError(f"catalogue {p}: cannot read: {exc}") from exc
    return parse(raw, origin=str(p))


def parse(raw: Any, *, origin: str = "<catalogue>") -> Catalogue:
    issues: list[Issue] = []

    def bad(where: str, msg: str) -> None:
        issues.append(Issue(code="invalid", diagnostics=f"{where}: {msg}", expression=(where,)))

    if not isinstance(raw, dict):
        raise CatalogueError(f"catalogue {origin}: top level must be an object")
    version = raw.get("version")
    if not isinstance(version, str) or not version:
        bad("version", "missing catalogue version")
    provenance = raw.get("provenance")
    if not isinstance(provenance, dict) or not provenance.get("sources"):
        bad("provenance.sources", "missing provenance with its sources")
    entries = raw.get("items")
    if not isinstance(entries, list) or not entries:
        bad("items", "no items")
        entries = []
    items: list[Item] = []
    seen_ids: dict[str, str] = {}
    seen_codes: dict[tuple[str, str], str] = {}
    for n, entry in enumerate(entries):
        label = f"items[{n}]" + (f" ({entry.get('id')})" if isinstance(entry, dict) and entry.get("id") else "")
        if not isinstance(entry, dict):
            bad(label, "not an object")
            continue
        before = len(issues)
        item = _item(entry, label, bad)
        if item is None or len(issues) > before:
            continue
        if item.id in seen_ids:
            bad(f"{label}.id", f"duplicate id, also {seen_ids[item.id]}")
        seen_ids.setdefault(item.id, label)
        for system, code in item.codes():
            field = "loinc" if system == LOINC else "local_codes"
            if (system, code) in seen_codes:
                bad(f"{label}.{field}", f"duplicate code {system}|{code}, also {seen_codes[(system, code)]}")
            seen_codes.setdefault((system, code), label)
        items.append(item)
    if issues:
        summary = "; ".join(i.diagnostics for i in issues[:10])
        more = f" (and {len(issues) - 10} more)" if len(issues) > 10 else ""
        raise CatalogueError(f"catalogue {origin} is invalid: {summary}{more}", issues)
    return Catalogue(version=version, provenance=provenance, items=tuple(items))  # type: ignore[arg-type]


def _item(e: dict, label: str, bad) -> Item | None:  # one check per field, in file order
    def text(field: str, required: bool = True) -> str | None:
        v = e.get(field)
        if v is None and not required:
            return None
        if not isinstance(v, str) or not v.strip():
            bad(f"{label}.{field}", "missing" if v is None else "must be a non-empty string")
            return None
        return v

    item_id, name_zh, name_en, group = text("id"), text("name_zh"), text("name_en"), text("group")
    kind = e.get("kind")
    if kind not in KINDS:
        bad(f"{label}.kind", f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    loinc = text("loinc", required=False)
    local: list[tuple[str, str]] = []
    for k, c in enumerate(e.get("local_codes") or []):
        if not (isinstance(c, dict) and isinstance(c.get("system"), str) and isinstance(c.get("code"), str)):
            bad(f"{label}.local_codes[{k}]", "needs system and code")
            continue
        local.append((c["system"], c["code"]))
    if not loinc and not local:
        bad(f"{label}.loinc", "an item needs a LOINC code or at least one local code")
    days = e.get("validity_days")
    if isinstance(days, bool) or not isinstance(days, int):
        bad(f"{label}.validity_days", f"must be a whole number of days, got {days!r}")
    elif days <= 0:
        bad(f"{label}.validity_days", f"window must be positive, got {days}")
    scope = e.get("scope")
    if not isinstance(scope, str) or not SCOPE_RE.match(scope):
        bad(f"{label}.scope", f"unknown scope {scope!r}; region, consortium or tier:<{'|'.join(TIERS)}>-and-above")
    price: Decimal | None = None
    try:
        price = Decimal(str(e.get("price_yuan")))
        if not price.is_finite() or price < 0:
            raise InvalidOperation
    except InvalidOperation:
        bad(f"{label}.price_yuan", f"must be a non-negative amount in yuan, got {e.get('price_yuan')!r}")
    mark = e.get("mark", "HR")
    if not isinstance(mark, str) or not mark:
        bad(f"{label}.mark", "must be a non-empty string")
    src = e.get("source")
    source = None
    if not isinstance(src, dict) or not isinstance(src.get("citation"), str) or not src["citation"].strip():
        bad(f"{label}.source", "missing source (citation of the list the item comes from)")
    elif src.get("basis", "published") not in ("published", "assumed"):
        bad(f"{label}.source.basis", f"unknown basis {src.get('basis')!r}; published or assumed")
    else:
        source = Source(citation=src["citation"], url=src.get("url"), basis=src.get("basis", "published"))
    raw_mod = e.get("modality")
    modality = tuple([raw_mod] if isinstance(raw_mod, str) else raw_mod or ())
    site = e.get("body_site")
    body_site = None
    if kind == "examination":
        if not modality:
            bad(f"{label}.modality", "an imaging item needs its modality (DICOM code)")
        elif any(m not in MODALITIES for m in modality):
            bad(f"{label}.modality", f"unknown DICOM modality in {list(modality)}")
        if not (isinstance(site, dict) and site.get("code")):
            bad(f"{label}.body_site", "an imaging item needs its body site (SNOMED CT code)")
        else:
            body_site = Coding(site.get("system", SNOMED), site["code"], site.get("display"))
    if None in (item_id, name_zh, name_en, group, source, price) or kind not in KINDS:
        return None
    return Item(id=item_id, name_zh=name_zh, name_en=name_en, kind=kind, loinc=loinc,  # type: ignore[arg-type]
                local_codes=tuple(local), group=group, validity_days=days, scope=scope,  # type: ignore[arg-type]
                price_yuan=price, source=source, mark=mark, modality=modality, body_site=body_site)  # type: ignore[arg-type]
