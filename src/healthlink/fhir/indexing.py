"""Search-parameter index rows for one resource.

Paths come from the HL7 search-parameter definitions (definitions.py).  Each value is
reduced to the row shape of its parameter type; string values are case- and
accent-folded; values longer than the index columns are cut (the resource keeps the
whole value).  Rows are written in the same transaction as the resource.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from functools import cache, lru_cache

from healthlink.fhir import labels
from healthlink.fhir.dates import MAX_US, parse_range
from healthlink.fhir.definitions import SearchParam, choice_names, patient_compartment, search_params

MAXLEN = 255


@lru_cache(maxsize=1 << 16)
def fold(text: str) -> str:
    """Case- and accent-insensitive form used by string search (FHIR: 'case- and
    accent-insensitive'); CJK characters pass through unchanged.  Remembered: the same
    displays and names come back in resource after resource (bulk ingest)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()[:MAXLEN]


def _cut(v: object, n: int = MAXLEN) -> str | None:
    return None if v is None else str(v)[:n]


def evaluate(resource: dict, steps: tuple) -> Iterator[object]:
    """Yield the values an element path selects (arrays flattened; choice elements found
    by prefix when the path names the bare element, as in ``Observation.effective``)."""
    nodes: list = [resource]
    choices = choice_names()
    for step in steps:
        nxt: list = []
        if isinstance(step, tuple):  # where(<field>='<value>'), frozen {"field": f, "value": v}
            cond = dict(step)
            nxt = [n for n in nodes if isinstance(n, dict) and n.get(cond["field"]) == cond["value"]]
        else:
            for n in nodes:
                if not isinstance(n, dict):
                    continue
                v = n.get(step)
                if v is None and step in choices:
                    # choice element: effective -> effectiveDateTime / effectivePeriod ...
                    for k, val in n.items():
                        if k.startswith(step) and k[len(step):len(step) + 1].isupper():
                            v = val
                            break
                if v is None:
                    continue
                if isinstance(v, list):
                    nxt.extend(v)
                else:
                    nxt.append(v)
        nodes = nxt
        if not nodes:
            return
    yield from nodes


def parse_reference(ref: str, base_url: str | None = None) -> tuple[str | None, str | None, str | None]:
    """'Patient/1' -> ('Patient', '1', None); absolute URLs under our base become local;
    other absolute URLs, urn: and canonical references are kept as url."""
    if base_url and ref.startswith(base_url.rstrip("/") + "/"):
        ref = ref[len(base_url.rstrip("/")) + 1:]
    if ref.startswith("#"):
        return None, None, None
    parts = ref.split("/")
    if "://" not in ref and not ref.startswith("urn:") and len(parts) >= 2:
        if len(parts) >= 4 and parts[2] == "_history":
            parts = parts[:2]
        if len(parts) == 2 and parts[0][:1].isupper():
            return parts[0], parts[1], None
    if "://" in ref:
        segs = ref.split("|")[0].rstrip("/").split("/")
        if len(segs) >= 2 and segs[-2][:1].isupper():
            return segs[-2], segs[-1], ref[:512]
    return None, None, ref[:512]


def _token_rows(v: object) -> Iterator[tuple]:
    """(system, code, text) triples."""
    if isinstance(v, bool):
        yield None, "true" if v else "false", None
    elif isinstance(v, (str, int, float)):
        yield None, _cut(v), None
    elif isinstance(v, dict):
        if "coding" in v or ("text" in v and "value" not in v and "code" not in v):
            text = fold(v["text"]) if isinstance(v.get("text"), str) else None
            codings = [c for c in v.get("coding") or [] if isinstance(c, dict)]
            for c in codings:
                disp = c.get("display")
                t = text or (fold(disp) if isinstance(disp, str) else None)
                yield _cut(c.get("system")), _cut(c.get("code")), t
                if disp and text:
                    yield _cut(c.get("system")), _cut(c.get("code")), fold(disp)
            if not codings and text:
                yield None, None, text
        elif "code" in v:  # Coding
            disp = v.get("display")
            yield _cut(v.get("system")), _cut(v.get("code")), fold(disp) if isinstance(disp, str) else None
        elif "value" in v:  # Identifier, ContactPoint
            t = v.get("type", {}).get("text") if isinstance(v.get("type"), dict) else None
            yield _cut(v.get("system")), _cut(v.get("value")), fold(t) if t else None


_NAME_PARTS = ("text", "family", "given", "prefix", "suffix")
_ADDR_PARTS = ("text", "line", "city", "district", "state", "postalCode", "country")


def _string_values(v: object) -> Iterator[str]:
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        keys = _NAME_PARTS if ("family" in v or "given" in v) else _ADDR_PARTS \
            if any(k in v for k in ("line", "city", "postalCode", "country", "state", "district")) \
            else ("text", "display", "value", "name")
        for k in keys:
            x = v.get(k)
            if isinstance(x, list):
                yield from (s for s in x if isinstance(s, str))
            elif isinstance(x, str):
                yield x


def _date_ranges(v: object) -> Iterator[tuple[int, int]]:
    if isinstance(v, str):
        r = parse_range(v)
        if r:
            yield r
    elif isinstance(v, dict):
        if "start" in v or "end" in v:  # Period: an open end is unbounded
            lo = parse_range(v["start"]) if isinstance(v.get("start"), str) else None
            hi = parse_range(v["end"]) if isinstance(v.get("end"), str) else None
            if lo or hi:
                yield (lo[0] if lo else -MAX_US), (hi[1] if hi else MAX_US)
        for e in v.get("event") or []:  # Timing
            yield from _date_ranges(e)
        if isinstance(v.get("repeat"), dict):
            b = v["repeat"].get("boundsPeriod")
            if isinstance(b, dict):
                yield from _date_ranges(b)


def index_rows(resource: dict, *, base_url: str | None = None) -> dict[str, list[dict]]:
    """All index rows of a resource, by parameter type (rid and res_type filled in later)."""
    rt = resource["resourceType"]
    out: dict[str, list[dict]] = {}
    keys = resource.keys()
    memo: dict[tuple, list] = {}
    for sp, firsts, choice_firsts in _params_plan(rt):
        # most parameters select nothing: skip those whose first element is absent
        if firsts is not None and firsts.isdisjoint(keys) and (not choice_firsts or not any(
                k.startswith(c) and k[len(c):len(c) + 1].isupper() for c in choice_firsts for k in keys)):
            continue
        rows = _rows_for(resource, sp, base_url, memo)
        if rows:
            out.setdefault(sp.type, []).extend(rows)
    out.setdefault("token", []).extend(label_rows(resource))
    return out


LABEL_SYSTEM = "https://healthlink.example.org/fhir/CodeSystem/label"


def label_rows(resource: dict) -> list[dict]:
    """The access labels of a resource as token rows: ``_class`` (its data class, one) and
    ``_sensitive`` (its sensitive categories, any number), from :mod:`healthlink.fhir.labels`.
    The access layer filters on them (a grant names data classes; sensitive categories stay
    hidden unless the patient included them).  They are not search parameters a client can use."""
    rows = [{"param": "_class", "system": LABEL_SYSTEM, "code": labels.data_class(resource), "text": None}]
    rows += [{"param": "_sensitive", "system": LABEL_SYSTEM, "code": c, "text": None}
             for c in sorted(labels.sensitive_categories(resource))]
    return rows


@cache
def _params_plan(res_type: str) -> tuple[tuple[SearchParam, frozenset[str] | None, tuple[str, ...]], ...]:
    """Each parameter of the type with the first elements its paths start from (and those
    of them that are choice elements, found by prefix)."""
    choices = choice_names()
    plan = []
    for sp in search_params(res_type).values():
        if not all(p.steps and isinstance(p.steps[0], str) for p in sp.paths):
            plan.append((sp, None, ()))  # never skipped
            continue
        firsts = frozenset(p.steps[0] for p in sp.paths)
        plan.append((sp, firsts, tuple(sorted(f for f in firsts if f in choices))))
    return tuple(plan)


def _rows_for(resource: dict, sp: SearchParam, base_url: str | None,
              memo: dict[tuple, list] | None = None) -> list[dict]:
    rows: list[dict] = []
    seen: set = set()
    for path in sp.paths:
        if memo is None:
            values: list = list(evaluate(resource, path.steps))
        else:  # several parameters of a type share a path (subject / patient, code / combo-code)
            values = memo.get(path.steps)  # type: ignore[assignment]
            if values is None:
                values = memo[path.steps] = list(evaluate(resource, path.steps))
        for v in values:
            if sp.type == "token":
                for system, code, text in _token_rows(v):
                    key = (system, code, text)
                    if key not in seen and (code or text):
                        seen.add(key)
                        rows.append({"param": sp.code, "system": system, "code": code, "text": text})
            elif sp.type == "string":
                for s in _string_values(v):
                    key = fold(s)
                    if key not in seen:
                        seen.add(key)
                        rows.append({"param": sp.code, "value": key, "exact": s[:MAXLEN]})
            elif sp.type == "date":
                for lo, hi in _date_ranges(v):
                    if (lo, hi) not in seen:
                        seen.add((lo, hi))
                        rows.append({"param": sp.code, "low": lo, "high": hi})
            elif sp.type == "reference":
                ref = v.get("reference") if isinstance(v, dict) else v if isinstance(v, str) else None
                if not isinstance(ref, str):
                    continue
                t, i, url = parse_reference(ref, base_url)
                if path.target and t != path.target:
                    continue
                if (t, i, url) not in seen and (i or url):
                    seen.add((t, i, url))
                    rows.append({"param": sp.code, "target_type": t, "target_id": i, "url": url})
            elif sp.type == "quantity":
                if isinstance(v, dict) and isinstance(v.get("value"), (int, float)) \
                        and not isinstance(v["value"], bool):
                    value = float(v["value"])
                    code, unit = v.get("code"), v.get("unit")
                    rows.append({"param": sp.code, "value": value, "system": _cut(v.get("system")),
                                 "code": _cut(code or unit, 64)})
                    if code and isinstance(unit, str) and unit != code:
                        # 5.4||mg matches Quantity.code or Quantity.unit (FHIR R4 search
                        # 3.1.1.4.7); the unit row has no system so |system|code stays exact
                        rows.append({"param": sp.code, "value": value, "system": None,
                                     "code": _cut(unit, 64)})
            elif sp.type == "number":
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    rows.append({"param": sp.code, "value": float(v)})
            elif sp.type == "uri":
                if isinstance(v, str) and v not in seen:
                    seen.add(v)
                    rows.append({"param": sp.code, "value": v[:512]})
    return rows


def compartment_patient(resource: dict, rows: dict[str, list[dict]]) -> str | None:
    """The Patient whose compartment this resource is in (first matching parameter)."""
    rt = resource["resourceType"]
    if rt == "Patient":
        return resource.get("id")
    params = patient_compartment().get(rt)
    if not params:
        return None
    refs = rows.get("reference", [])
    for p in params:
        for r in refs:
            if r["param"] == p and r["target_type"] == "Patient" and r["target_id"]:
                return r["target_id"]
    return None
