"""FHIR search on the index tables.

A request is parsed into clauses (one per parameter occurrence, AND-ed; comma-separated
values OR-ed), each a ``rid IN (subquery on an index table)``.  Visibility (which rows
the actor may see) comes from the caller as a SQL predicate per resource type, and is
applied to matches, chained targets, ``_include`` and ``_revinclude`` alike.

Paging is keyset paging: the ``next`` link carries the sort values of the last row and
a snapshot ceiling (the highest rid at the first page), so pages neither repeat nor
skip rows while other clients write (docs/adr/0003-search-paging.md).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import orjson
from sqlalchemy import (
    ColumnElement, Connection, and_, case, false, func, literal, not_, or_, select, true,
)

from healthlink.db import tables as t
from healthlink.errors import Invalid, Issue
from healthlink.fhir.dates import MAX_US, MIN_US, parse_range, to_us
from healthlink.fhir.definitions import SearchParam, patient_compartment, resource_types, search_params
from healthlink.fhir.indexing import fold, parse_reference
from healthlink.fhir.store import Stored, row_to_stored

# A predicate on the resource table saying which rows of a type the caller may see:
# True (all), False (none) or a SQL expression.
Visibility = Callable[[str], "ColumnElement[bool] | bool"]

RESULT_PARAMS = {"_count", "_sort", "_include", "_revinclude", "_summary", "_elements",
                 "_total", "_cursor", "_format", "_pretty"}
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
R = t.resource


@dataclass
class Page:
    matches: list[Stored]
    includes: list[Stored] = field(default_factory=list)
    total: int | None = None
    next_cursor: str | None = None
    summary_count: bool = False
    elements: list[str] | None = None
    self_params: list[tuple[str, str]] = field(default_factory=list)


def _bad(msg: str, where: str) -> Invalid:
    return Invalid(msg, [Issue("invalid", msg, (where,))])


def _bad_value(value: str, kind: str, where: str) -> Invalid:
    """A value that does not parse; the message names the parameter ('Type?param')."""
    param = where.partition("?")[2] or where
    return _bad(f"search parameter '{param}': '{value}' is not {kind}", where)


def _vis(visible: Visibility, res_type: str) -> ColumnElement[bool]:
    v = visible(res_type)
    if v is True:
        return true()
    if v is False:
        return false()
    return v  # type: ignore[return-value]


# ---------------------------------------------------------------- value parsers
def _split_or(value: str) -> list[str]:
    """Comma separates alternatives; '\\,' is a literal comma."""
    parts = re.split(r"(?<!\\),", value)
    return [p.replace("\\,", ",").replace("\\|", "\x00") for p in parts]


def _prefix(v: str) -> tuple[str, str]:
    if len(v) > 2 and v[:2] in PREFIXES and (v[2].isdigit() or v[2] in "-+."):
        return v[:2], v[2:]
    return "eq", v


def _decimal_range(text: str, where: str) -> tuple[float, float, float]:
    """A number with its implied precision: '100' -> [99.5, 100.5)."""
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise _bad_value(text, "a number", where) from None
    # NaN, Infinity and values beyond a double are not FHIR decimals
    if not d.is_finite() or abs(float(d)) == float("inf"):
        raise _bad_value(text, "a finite number", where)
    exp = d.as_tuple().exponent
    half = Decimal(5).scaleb(int(exp) - 1)
    return float(d), float(d - half), float(d + half)


# ---------------------------------------------------------------- clause builders
def _token_clause(res_type: str, code: str, modifier: str | None, value: str, where: str):
    it = t.idx_token
    base = [it.c.res_type == res_type, it.c.param == code]
    if modifier == "text":
        cond = it.c.text.like("%" + _esc(fold(value)) + "%", escape="\\")
    else:
        if "|" in value:
            system, code_v = value.split("|", 1)
            system, code_v = system.replace("\x00", "|"), code_v.replace("\x00", "|")
            if system and code_v:
                cond = and_(it.c.system == system, it.c.code == code_v)
            elif system:
                cond = it.c.system == system
            else:
                cond = and_(it.c.system.is_(None), it.c.code == code_v)
        else:
            cond = it.c.code == value.replace("\x00", "|")
    return select(it.c.rid).where(*base, cond)


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _string_clause(res_type: str, code: str, modifier: str | None, value: str):
    it = t.idx_string
    base = [it.c.res_type == res_type, it.c.param == code]
    value = value.replace("\x00", "|")
    if modifier == "exact":
        cond = it.c.exact == value
    elif modifier == "contains":
        cond = it.c.value.like("%" + _esc(fold(value)) + "%", escape="\\")
    else:
        cond = it.c.value.like(_esc(fold(value)) + "%", escape="\\")
    return select(it.c.rid).where(*base, cond)


def _date_cond(lo, hi, prefix: str, plo: int, phi: int):  # noqa: ANN001
    contained = and_(lo >= plo, hi <= phi)
    if prefix == "eq":
        return contained
    if prefix == "ne":
        return not_(contained)
    if prefix == "gt":
        return hi > phi
    if prefix == "lt":
        return lo < plo
    if prefix == "ge":
        return or_(hi > phi, contained)
    if prefix == "le":
        return or_(lo < plo, contained)
    if prefix == "sa":
        return lo > phi
    if prefix == "eb":
        return hi < plo
    # ap: within 10% of the distance from now (FHIR 3.2.1.5.6), at least a day
    import time

    now = time.time_ns() // 1000
    gap = max(abs(now - plo) // 10, 86_400_000_000)
    return and_(lo <= phi + gap, hi >= plo - gap)


def _date_clause(res_type: str, code: str, value: str, where: str):
    prefix, v = _prefix(value)
    rng = parse_range(v)
    if rng is None:
        raise _bad_value(v, "a FHIR date, dateTime or instant", where)
    it = t.idx_date
    return select(it.c.rid).where(it.c.res_type == res_type, it.c.param == code,
                                  _date_cond(it.c.low, it.c.high, prefix, *rng))


def _number_cond(col, prefix: str, v: float, lo: float, hi: float):  # noqa: ANN001
    return {
        "eq": and_(col >= lo, col < hi), "ne": or_(col < lo, col >= hi),
        "gt": col > v, "lt": col < v, "ge": col >= v, "le": col <= v,
        "sa": col > v, "eb": col < v,
        "ap": and_(col >= v - abs(v) * 0.1, col <= v + abs(v) * 0.1),
    }[prefix]


def _quantity_clause(res_type: str, code: str, value: str, where: str):
    prefix, rest = _prefix(value)
    parts = rest.split("|")
    num = parts[0]
    system = parts[1].replace("\x00", "|") if len(parts) > 1 and parts[1] else None
    unit = parts[2].replace("\x00", "|") if len(parts) > 2 and parts[2] else None
    v, lo, hi = _decimal_range(num, where)
    it = t.idx_quantity
    conds = [it.c.res_type == res_type, it.c.param == code, _number_cond(it.c.value, prefix, v, lo, hi)]
    if system:
        conds.append(it.c.system == system)
    if unit:
        conds.append(it.c.code == unit)
    return select(it.c.rid).where(*conds)


def _number_clause(res_type: str, code: str, value: str, where: str):
    prefix, rest = _prefix(value)
    v, lo, hi = _decimal_range(rest, where)
    it = t.idx_number
    return select(it.c.rid).where(it.c.res_type == res_type, it.c.param == code,
                                  _number_cond(it.c.value, prefix, v, lo, hi))


def _uri_clause(res_type: str, code: str, modifier: str | None, value: str):
    it = t.idx_uri
    base = [it.c.res_type == res_type, it.c.param == code]
    if modifier == "below":
        cond = it.c.value.like(_esc(value) + "%", escape="\\")
    elif modifier == "above":
        cond = literal(value).like(func.replace(func.replace(it.c.value, "%", "\\%"), "_", "\\_")
                                   + "%", escape="\\")
    else:
        cond = it.c.value == value
    return select(it.c.rid).where(*base, cond)


def _reference_clause(res_type: str, sp: SearchParam, modifier: str | None, value: str,
                      where: str, base_url: str | None):
    it = t.idx_reference
    base = [it.c.res_type == res_type, it.c.param == sp.code]
    type_mod = modifier if modifier and modifier[:1].isupper() else None
    if modifier and not type_mod:
        raise _bad(f"modifier :{modifier} is not supported on reference parameter {sp.code}", where)
    if "/" not in value and ":" not in value:  # a bare id
        rtype, rid, url = type_mod, value, None
    else:
        rtype, rid, url = parse_reference(value, base_url)
    if rtype and rid:
        if type_mod and type_mod != rtype:
            raise _bad(f"reference {value} does not match :{type_mod}", where)
        return select(it.c.rid).where(*base, it.c.target_type == rtype, it.c.target_id == rid)
    if rid:
        cond = it.c.target_id == rid
        if rtype:
            cond = and_(cond, it.c.target_type == rtype)
        return select(it.c.rid).where(*base, cond)
    return select(it.c.rid).where(*base, it.c.url == value)


def _missing_clause(res_type: str, sp: SearchParam, value: str, where: str):
    if value not in ("true", "false"):
        raise _bad(":missing takes true or false", where)
    it = t.INDEX_TABLES[sp.type]
    present = select(it.c.rid).where(it.c.res_type == res_type, it.c.param == sp.code)
    return ("not_in" if value == "true" else "in"), present


# ---------------------------------------------------------------- parsing
@dataclass
class _Parsed:
    clauses: list = field(default_factory=list)
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (param, descending)
    count: int = 20
    includes: list[str] = field(default_factory=list)
    revincludes: list[str] = field(default_factory=list)
    summary_count: bool = False
    elements: list[str] | None = None
    total: bool = False
    cursor: dict | None = None


PERSON_PARAM = "person"  # custom: a Person's resources across institutions, through person_link


def person_searchable(res_type: str) -> bool:
    """Patient and the types of the Patient compartment take ``person=Person/<id>``."""
    return res_type == "Patient" or res_type in patient_compartment()


def _param_clause(res_type: str, name: str, value: str, *, visible: Visibility,
                  base_url: str | None, depth: int = 0):
    """One parameter occurrence -> ('in'|'not_in', subquery of rids)."""
    where = f"{res_type}?{name}"
    chain = None
    if "." in name:
        name, chain = name.split(".", 1)
    code, _, modifier = name.partition(":")
    modifier = modifier or None
    if code in ("_id", "_lastUpdated"):
        if chain is not None:
            raise _bad(f"{code} cannot be chained", where)
        if modifier not in ((None, "not") if code == "_id" else (None,)):
            raise _bad(f"modifier :{modifier} is not supported on {code}", where)
    if code == "_id":
        vals = [v.replace("\x00", "|") for v in _split_or(value)]
        sub = select(R.c.rid).where(R.c.res_type == res_type, R.c.res_id.in_(vals))
        return ("not_in" if modifier == "not" else "in"), sub
    if code == "_lastUpdated":
        conds = []
        for v in _split_or(value):
            prefix, vv = _prefix(v)
            rng = parse_range(vv)
            if rng is None:
                raise _bad_value(vv, "a FHIR instant", where)
            conds.append(_date_cond(R.c.last_updated, R.c.last_updated, prefix, *rng))
        return "in", select(R.c.rid).where(R.c.res_type == res_type, or_(*conds))
    if code == PERSON_PARAM and person_searchable(res_type):
        if chain is not None or modifier is not None:
            raise _bad("person takes a Person id or Person/<id>, without modifiers or chains", where)
        ids = [v.removeprefix("Person/") for v in _split_or(value)]
        if not all(ids) or any("/" in i for i in ids):
            raise _bad_value(value, "Person/<id>", where)
        pl = t.person_link.c
        linked = select(pl.patient_id).where(pl.person_id.in_(ids))
        col = R.c.res_id if res_type == "Patient" else R.c.patient_id
        return "in", select(R.c.rid).where(R.c.res_type == res_type, col.in_(linked))
    params = search_params(res_type)
    sp = params.get(code)
    if sp is None:
        raise _bad(f"unknown search parameter '{code}' for {res_type}", where)
    if modifier == "missing":
        return _missing_clause(res_type, sp, value, where)
    if chain is not None:
        if sp.type != "reference" or depth > 0:
            raise _bad(f"chained search is supported one level on reference parameters only", where)
        targets = [modifier] if modifier else list(sp.targets)
        if len(targets) != 1:
            raise _bad(f"{code} may refer to several types; name one, e.g. {code}:{targets[0] if targets else 'Patient'}.{chain}", where)
        target = targets[0]
        kind, inner = _param_clause(target, chain, value, visible=visible, base_url=base_url, depth=1)
        tr = R.alias("chain_target")
        inner_cond = tr.c.rid.in_(inner) if kind == "in" else tr.c.rid.not_in(inner)
        tid = select(tr.c.res_id).where(tr.c.res_type == target, tr.c.deleted == false(), inner_cond,
                                        _vis_alias(visible, target, tr))
        it = t.idx_reference
        return "in", select(it.c.rid).where(it.c.res_type == res_type, it.c.param == code,
                                            it.c.target_type == target, it.c.target_id.in_(tid))
    values = _split_or(value)
    subs = []
    negate = False
    for v in values:
        if sp.type == "token":
            if modifier not in (None, "not", "text"):
                raise _bad(f"modifier :{modifier} is not supported on token parameter {code}", where)
            negate = modifier == "not"
            subs.append(_token_clause(res_type, code, None if negate else modifier, v, where))
        elif sp.type == "string":
            if modifier not in (None, "exact", "contains"):
                raise _bad(f"modifier :{modifier} is not supported on string parameter {code}", where)
            subs.append(_string_clause(res_type, code, modifier, v))
        elif sp.type == "date":
            if modifier:
                raise _bad(f"modifier :{modifier} is not supported on date parameter {code}", where)
            subs.append(_date_clause(res_type, code, v, where))
        elif sp.type == "reference":
            subs.append(_reference_clause(res_type, sp, modifier, v.replace("\x00", "|"), where, base_url))
        elif sp.type == "quantity":
            if modifier:
                raise _bad(f"modifier :{modifier} is not supported on quantity parameter {code}", where)
            subs.append(_quantity_clause(res_type, code, v, where))
        elif sp.type == "number":
            if modifier:
                raise _bad(f"modifier :{modifier} is not supported on number parameter {code}", where)
            subs.append(_number_clause(res_type, code, v, where))
        elif sp.type == "uri":
            if modifier not in (None, "below", "above"):
                raise _bad(f"modifier :{modifier} is not supported on uri parameter {code}", where)
            subs.append(_uri_clause(res_type, code, modifier, v))
        else:
            raise _bad(f"search parameter type {sp.type} is not supported", where)
    from sqlalchemy import union_all

    sub = subs[0] if len(subs) == 1 else union_all(*subs)
    return ("not_in" if negate else "in"), sub


def _vis_alias(visible: Visibility, res_type: str, alias) -> ColumnElement[bool]:  # noqa: ANN001
    """Visibility predicate re-targeted at an alias of the resource table."""
    v = visible(res_type)
    if v is True:
        return true()
    if v is False:
        return false()
    from sqlalchemy.sql.util import ClauseAdapter

    return ClauseAdapter(alias).traverse(v)  # type: ignore[arg-type]


def parse(res_type: str, params: list[tuple[str, str]], *, visible: Visibility,
          base_url: str | None, default_count: int, max_count: int) -> _Parsed:
    if res_type not in resource_types():
        raise _bad(f"unknown resource type {res_type}", res_type)
    p = _Parsed(count=default_count)
    for name, value in params:
        where = f"{res_type}?{name}"
        if name == "_count":
            if not value.isdigit():
                raise _bad("_count must be a non-negative integer", where)
            p.count = min(int(value), max_count)
        elif name == "_sort":
            for key in value.split(","):
                desc = key.startswith("-")
                key = key.lstrip("-")
                if key not in ("_id", "_lastUpdated") and (
                        key not in search_params(res_type)
                        or search_params(res_type)[key].type not in ("date", "string", "number", "quantity", "token")):
                    raise _bad(f"cannot sort {res_type} by '{key}'", where)
                p.sort.append((key, desc))
        elif name == "_include":
            _check_include(res_type, value)
            p.includes.append(value)
        elif name == "_revinclude":
            _check_revinclude(res_type, value)
            p.revincludes.append(value)
        elif name.startswith(("_include:", "_revinclude:")):
            raise _bad(f"{name} is not supported; _include and _revinclude reach one level", where)
        elif name == "_summary":
            if value == "count":
                p.summary_count = True
            elif value != "false":
                raise _bad("_summary supports 'count' and 'false'", where)
        elif name == "_elements":
            p.elements = [e.strip() for e in value.split(",") if e.strip()]
        elif name == "_total":
            p.total = value == "accurate"
        elif name == "_cursor":
            try:
                p.cursor = orjson.loads(base64.urlsafe_b64decode(value.encode() + b"=="))
                assert isinstance(p.cursor, dict)
            except Exception:  # noqa: BLE001
                raise _bad("the paging cursor is not valid; start the search again", where) from None
        elif name in ("_format", "_pretty"):
            continue
        else:
            p.clauses.append(_param_clause(res_type, name, value, visible=visible, base_url=base_url))
    return p


# ---------------------------------------------------------------- sorting and paging
def _sort_exprs(res_type: str, sort: list[tuple[str, bool]]) -> list[tuple[ColumnElement, bool]]:
    """Each sort key as (non-null expression, descending), nulls last."""
    out: list[tuple[ColumnElement, bool]] = []
    for key, desc in sort:
        if key == "_lastUpdated":
            out.append((R.c.last_updated, desc))
            continue
        if key == "_id":
            out.append((R.c.res_id, desc))
            continue
        sp = search_params(res_type)[key]
        it = t.INDEX_TABLES[sp.type]
        if sp.type == "date":
            col = it.c.high if desc else it.c.low
            agg = (func.max if desc else func.min)(col)
            zero = literal(0)
        elif sp.type == "token":
            agg = (func.max if desc else func.min)(it.c.code)
            zero = literal("")
        else:
            col = it.c.value
            agg = (func.max if desc else func.min)(col)
            zero = literal("") if sp.type == "string" else literal(0.0)
        sub = (select(agg).where(it.c.rid == R.c.rid, it.c.param == key).scalar_subquery())
        out.append((case((sub.is_(None), 1), else_=0), False))  # nulls last
        out.append((func.coalesce(sub, zero), desc))
    out.append((R.c.rid, False))
    return out


def _after(keys: list[tuple[ColumnElement, bool]], values: list) -> ColumnElement[bool]:
    """Keyset condition: the row comes strictly after ``values`` in the sort order."""
    ors = []
    for i, (expr, desc) in enumerate(keys):
        eqs = [k == v for (k, _), v in zip(keys[:i], values[:i])]
        ors.append(and_(*eqs, (expr < values[i]) if desc else (expr > values[i])))
    return or_(*ors)


def _encode_cursor(data: dict) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


_COLS = (R.c.rid, R.c.res_type, R.c.res_id, R.c.version_id, R.c.last_updated, R.c.deleted,
         R.c.institution_id, R.c.patient_id, R.c.content)


def search(conn: Connection, res_type: str, params: list[tuple[str, str]], *, visible: Visibility,
           base_url: str | None = None, default_count: int = 20, max_count: int = 1000) -> Page:
    p = parse(res_type, params, visible=visible, base_url=base_url,
              default_count=default_count, max_count=max_count)
    conds = [R.c.res_type == res_type, R.c.deleted == false(), _vis(visible, res_type)]
    for kind, sub in p.clauses:
        conds.append(R.c.rid.in_(sub) if kind == "in" else R.c.rid.not_in(sub))
    self_params = [(k, v) for k, v in params if k != "_cursor"]
    if p.summary_count:
        total = conn.execute(select(func.count()).select_from(R).where(*conds)).scalar_one()
        return Page([], total=total, summary_count=True, self_params=self_params)
    snap = p.cursor.get("s") if p.cursor else None
    if snap is None:
        snap = conn.execute(select(func.max(R.c.rid))).scalar() or 0
    total = None
    if p.total:
        total = conn.execute(select(func.count()).select_from(R)
                             .where(*conds, R.c.rid <= snap)).scalar_one()
    keys = _sort_exprs(res_type, p.sort)
    q_conds = list(conds) + [R.c.rid <= snap]
    if p.cursor and "k" in p.cursor:
        if len(p.cursor["k"]) != len(keys):
            raise _bad("the paging cursor does not match this search", f"{res_type}?_cursor")
        q_conds.append(_after(keys, p.cursor["k"]))
    order = [k.desc() if d else k.asc() for k, d in keys]
    q = (select(*_COLS, *(k.label(f"sk{i}") for i, (k, _) in enumerate(keys)))
         .where(*q_conds).order_by(*order).limit(p.count + 1))
    rows = conn.execute(q).all() if p.count > 0 else []
    nxt = None
    if len(rows) > p.count:
        rows = rows[: p.count]
        last = rows[-1]
        nxt = _encode_cursor({"s": snap, "k": [last._mapping[f"sk{i}"] for i in range(len(keys))]})
    matches = [row_to_stored(r) for r in rows]
    includes = _includes(conn, res_type, matches, p, visible=visible)
    return Page(matches, includes, total, nxt, False, p.elements, self_params)


# ---------------------------------------------------------------- _include / _revinclude
def _check_include(res_type: str, spec: str) -> None:
    """Checked while parsing, so a bad spec is refused even when nothing matches."""
    where = f"{res_type}?_include"
    parts = spec.split(":")
    if parts[0] != res_type or len(parts) not in (2, 3):
        raise _bad(f"_include '{spec}' must name {res_type}:<parameter>[:<type>]", where)
    if parts[1] != "*":
        sp = search_params(res_type).get(parts[1])
        if sp is None or sp.type != "reference":
            raise _bad(f"_include '{spec}': '{parts[1]}' is not a reference parameter of {res_type}", where)
    if len(parts) == 3 and parts[2] not in resource_types():
        raise _bad(f"_include '{spec}': unknown resource type '{parts[2]}'", where)


def _check_revinclude(res_type: str, spec: str) -> None:
    where = f"{res_type}?_revinclude"
    parts = spec.split(":")
    if len(parts) not in (2, 3) or parts[0] not in resource_types():
        raise _bad(f"_revinclude '{spec}' must name <type>:<parameter>[:{res_type}]", where)
    sp = search_params(parts[0]).get(parts[1])
    if sp is None or sp.type != "reference":
        raise _bad(f"_revinclude '{spec}': '{parts[1]}' is not a reference parameter of {parts[0]}", where)


def _includes(conn: Connection, res_type: str, matches: list[Stored], p: _Parsed, *,
              visible: Visibility) -> list[Stored]:
    if not matches or not (p.includes or p.revincludes):
        return []
    seen = {(m.res_type, m.res_id) for m in matches}
    out: list[Stored] = []
    rids = [m.rid for m in matches]
    it = t.idx_reference
    for spec in p.includes:
        parts = spec.split(":")  # checked by _check_include
        q = select(it.c.target_type, it.c.target_id).where(it.c.rid.in_(rids), it.c.target_id.is_not(None))
        if parts[1] != "*":
            q = q.where(it.c.param == parts[1])
        if len(parts) > 2:
            q = q.where(it.c.target_type == parts[2])
        by_type: dict[str, set[str]] = {}
        for tt, tid in conn.execute(q).all():
            if (tt, tid) not in seen:
                by_type.setdefault(tt, set()).add(tid)
        for tt, ids in by_type.items():
            if tt not in resource_types():
                continue
            for row in conn.execute(select(*_COLS).where(
                    R.c.res_type == tt, R.c.res_id.in_(sorted(ids)), R.c.deleted == false(),
                    _vis(visible, tt))).all():
                s = row_to_stored(row)
                if (s.res_type, s.res_id) not in seen:
                    seen.add((s.res_type, s.res_id))
                    out.append(s)
    for spec in p.revincludes:
        src_type, param, *target = spec.split(":")  # checked by _check_revinclude
        if target and target[0] != res_type:
            continue
        ids = [m.res_id for m in matches]
        sub = select(it.c.rid).where(it.c.res_type == src_type, it.c.param == param,
                                     it.c.target_type == res_type, it.c.target_id.in_(ids))
        for row in conn.execute(select(*_COLS).where(
                R.c.res_type == src_type, R.c.rid.in_(sub), R.c.deleted == false(),
                _vis(visible, src_type)).order_by(R.c.rid)).all():
            s = row_to_stored(row)
            if (s.res_type, s.res_id) not in seen:
                seen.add((s.res_type, s.res_id))
                out.append(s)
    return out


def apply_elements(resource: dict, elements: list[str]) -> dict:
    """_elements: keep the named top-level elements plus the mandatory ones; mark SUBSETTED."""
    keep = {"resourceType", "id", "meta", *elements}
    out = {k: v for k, v in resource.items() if k in keep or k.rstrip("0123456789") in keep
           or any(k.startswith(e) and k[len(e):len(e) + 1].isupper() for e in elements)}
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}]
    out["meta"] = meta
    return out


def everything(conn: Connection, patient_id: str | list[str], *, visible: Visibility, count: int,
               cursor: str | None) -> tuple[list[Stored], str | None]:
    """The Patient and every resource in its compartment, paged by rid (several Patients: the
    records of one Person at several institutions)."""
    ids = [patient_id] if isinstance(patient_id, str) else list(patient_id)
    after = 0
    snap = None
    if cursor:
        try:
            c = orjson.loads(base64.urlsafe_b64decode(cursor.encode() + b"=="))
            after, snap = int(c["a"]), int(c["s"])
        except Exception:  # noqa: BLE001
            raise _bad("the paging cursor is not valid", "Patient/$everything?_cursor") from None
    if snap is None:
        snap = conn.execute(select(func.max(R.c.rid))).scalar() or 0
    # one clause per distinct predicate (the visibility of most types is the same object), not one
    # per type: 145 copies of a grant's predicate made a statement that took longer to plan than to run
    groups: dict[int, tuple[object, list[str]]] = {}
    for rt in sorted(resource_types()):
        v = visible(rt)
        if v is not False:
            groups.setdefault(id(v), (v, []))[1].append(rt)
    vis = or_(*[R.c.res_type.in_(types) if v is True else and_(R.c.res_type.in_(types), v)  # type: ignore[arg-type]
                for v, types in groups.values()]) if groups else false()
    rows = conn.execute(
        select(*_COLS).where(R.c.patient_id.in_(ids) if len(ids) > 1 else R.c.patient_id == ids[0],
                             R.c.deleted == false(), R.c.rid > after,
                             R.c.rid <= snap, vis)
        .order_by(R.c.rid).limit(count + 1)).all()
    nxt = None
    if len(rows) > count:
        rows = rows[:count]
        nxt = _encode_cursor({"a": rows[-1].rid, "s": snap})
    return [row_to_stored(r) for r in rows], nxt


def history(conn: Connection, res_type: str | None, res_id: str | None, *, visible: Visibility,
            count: int, cursor: str | None, since: str | None = None) -> tuple[list[Stored], str | None]:
    """Versions newest first (instance or type level), keyset-paged."""
    v = t.resource_version
    conds = []
    if res_type:
        conds.append(v.c.res_type == res_type)
        conds.append(v.c.rid.in_(select(R.c.rid).where(R.c.res_type == res_type, _vis(visible, res_type))))
    if res_id:
        conds.append(v.c.res_id == res_id)
    if since:
        rng = parse_range(since)
        if rng is None:
            raise _bad(f"'{since}' is not a FHIR instant", "_since")
        conds.append(v.c.last_updated >= rng[0])
    if cursor:
        try:
            c = orjson.loads(base64.urlsafe_b64decode(cursor.encode() + b"=="))
            lu, rid, vid = int(c["l"]), int(c["r"]), int(c["v"])
        except Exception:  # noqa: BLE001
            raise _bad("the paging cursor is not valid", "_cursor") from None
        conds.append(or_(v.c.last_updated < lu, and_(v.c.last_updated == lu, or_(
            v.c.rid < rid, and_(v.c.rid == rid, v.c.version_id < vid)))))
    rows = conn.execute(
        select(v.c.rid, v.c.res_type, v.c.res_id, v.c.version_id, v.c.last_updated, v.c.deleted,
               v.c.institution_id, v.c.content, v.c.method)
        .where(*conds).order_by(v.c.last_updated.desc(), v.c.rid.desc(), v.c.version_id.desc())
        .limit(count + 1)).all()
    nxt = None
    if len(rows) > count:
        rows = rows[:count]
        last = rows[-1]
        nxt = _encode_cursor({"l": last.last_updated, "r": last.rid, "v": last.version_id})
    return [Stored(r.rid, r.res_type, r.res_id, r.version_id, r.last_updated, bool(r.deleted),
                   r.institution_id, None, r.content, r.method) for r in rows], nxt


__all__ = ["Page", "Visibility", "search", "everything", "history", "apply_elements",
           "MIN_US", "MAX_US", "to_us"]
