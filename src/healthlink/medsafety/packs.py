"""The pack master: which medicine pack a scanned code is (issue 8, item 4).

A bedside scan names a pack by its GTIN (GS1 DataMatrix, AI 01) or by the 7-digit product code of
the Chinese 20-digit drug traceability code (药品追溯码).  This small versioned file
(``data/packs-v1.json``) maps both to a product of the local drug dictionary
(``knowledge-v1.json``, whose products carry the ingredients) and adds what the bedside compares
and the dictionary does not hold: the strength per unit (per tablet, vial or mL), the dose form
and the routes the pack is for.  The demo file's codes are made up (see its provenance); a region
replaces it with its own pack master.  :func:`load` refuses a bad file naming entry and field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthlink.errors import Invalid, Issue
from healthlink.medsafety.barcodes import gs1_check_digit
from healthlink.medsafety.knowledge import Knowledge, Product

DEFAULT_PATH = Path(__file__).with_name("data") / "packs-v1.json"
GTIN_SYSTEM = "https://www.gs1.org/gtin"
TRACE_PREFIX_SYSTEM = "https://healthlink.example.org/fhir/sid/drug-trace-product-code"
MASS_UNITS = {"g": 1000.0, "mg": 1.0, "ug": 0.001}


@dataclass(frozen=True)
class Pack:
    """One pack of the master: a dictionary product in a form, with its strength per unit."""

    id: str
    product: Product
    gtins: tuple[str, ...]
    trace_prefixes: tuple[str, ...]
    form: str
    strength_value: float
    strength_unit: str  # mg | g | ug | [IU] | mL ...
    per: str  # tablet | capsule | vial | mL ...
    routes: tuple[str, ...]  # route ids of the knowledge base (oral, iv, im, ...)

    @property
    def strength(self) -> str:
        return f"{self.strength_value:g} {self.strength_unit}/{self.per}"

    def strength_mg(self) -> float | None:
        f = MASS_UNITS.get(self.strength_unit)
        return self.strength_value * f if f is not None else None


@dataclass(frozen=True)
class PackMaster:
    version: str
    packs: tuple[Pack, ...]

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "_gtin", {g: p for p in self.packs for g in p.gtins})
        put(self, "_trace", {t: p for p in self.packs for t in p.trace_prefixes})
        by_product: dict[str, Pack] = {}
        for p in self.packs:
            by_product.setdefault(p.product.id, p)
        put(self, "_product", by_product)

    def by_gtin(self, gtin: str) -> Pack | None:
        return self._gtin.get(gtin)  # type: ignore[attr-defined]

    def by_trace_code(self, product_code: str) -> Pack | None:
        return self._trace.get(product_code)  # type: ignore[attr-defined]

    def for_product(self, product_id: str) -> Pack | None:
        """The first pack of a dictionary product (its strength is the product's)."""
        return self._product.get(product_id)  # type: ignore[attr-defined]


def load(knowledge: Knowledge, path: str | Path | None = None) -> PackMaster:
    p = Path(path) if path is not None else DEFAULT_PATH
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Invalid(f"pack master {p}: cannot read: {exc}") from exc
    return parse(raw, knowledge)


def parse(raw: Any, knowledge: Knowledge) -> PackMaster:
    issues: list[Issue] = []

    def bad(where: str, msg: str) -> None:
        issues.append(Issue("invalid", f"{where}: {msg}", (where,)))

    products = {pr.id: pr for pr in knowledge.products}
    packs: list[Pack] = []
    seen: set[str] = set()
    entries = raw.get("packs") if isinstance(raw, dict) else None
    if not isinstance(entries, list) or not entries:
        bad("packs", "no packs")
        entries = []
    for n, e in enumerate(entries):
        where = f"packs[{n}]"
        if not isinstance(e, dict) or not isinstance(e.get("id"), str):
            bad(where, "not an object with an id")
            continue
        where += f" ({e['id']})"
        # a file from outside: every field is checked for its kind before it is used (a list as
        # the product or a string as the strength raised TypeError; found by the parser fuzz, issue 9)
        pid = e.get("product")
        product = products.get(pid) if isinstance(pid, str) else None
        if product is None:
            bad(f"{where}.product", f"unknown product {pid!r}; not in the drug dictionary")
        kinds_ok = True
        for key in ("gtins", "trace_prefixes", "routes"):
            if e.get(key) is not None and not isinstance(e.get(key), list):
                bad(f"{where}.{key}", "must be a list")
                kinds_ok = False
        if e.get("strength") is not None and not isinstance(e.get("strength"), dict):
            bad(f"{where}.strength", "must be an object with value, unit and per")
            kinds_ok = False
        if not kinds_ok:
            continue
        gtins = tuple(e.get("gtins") or ())
        for g in gtins:
            if not (isinstance(g, str) and len(g) == 14 and g.isdigit() and gs1_check_digit(g[:-1]) == int(g[-1])):
                bad(f"{where}.gtins", f"{g!r} is not a GTIN-14 with a valid check digit")
            elif g in seen:
                bad(f"{where}.gtins", f"GTIN {g} is already used by another pack")
            seen.add(str(g))
        prefixes = tuple(e.get("trace_prefixes") or ())
        for t in prefixes:
            if not (isinstance(t, str) and len(t) == 7 and t.isdigit()):
                bad(f"{where}.trace_prefixes", f"{t!r} is not a 7-digit traceability product code")
            elif "T" + t in seen:
                bad(f"{where}.trace_prefixes", f"product code {t} is already used by another pack")
            seen.add("T" + str(t))
        st = e.get("strength") or {}
        value = st.get("value")
        if not isinstance(value, (int, float)) or value <= 0 or not st.get("unit") or not st.get("per"):
            bad(f"{where}.strength", "needs value (> 0), unit and per")
        routes = tuple(e.get("routes") or ())
        for r in routes:
            if not isinstance(r, str) or knowledge.route_id(r) is None:
                bad(f"{where}.routes", f"unknown route {r!r}")
        if not issues and product is not None:
            packs.append(Pack(e["id"], product, gtins, prefixes, str(e.get("form") or ""), float(value),
                              str(st["unit"]), str(st["per"]), routes))
    if issues:
        raise Invalid(f"pack master: {len(issues)} error(s): " + "; ".join(i.diagnostics for i in issues[:5]),
                      issues)
    return PackMaster(str(raw.get("version", "?")), tuple(packs))


__all__ = ["GTIN_SYSTEM", "TRACE_PREFIX_SYSTEM", "Pack", "PackMaster", "load", "parse"]
