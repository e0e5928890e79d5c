"""Searching the audit log (AuditEvent is read-only over /fhir, for the audit administrator).

Parameters: ``_id``, ``date`` (with prefixes), ``patient``, ``entity``, ``agent``,
``agent-name`` (the username, exact: FHIR R4 AuditEvent ``agent-name``; unindexed, so it is meant
to be combined with another filter on large logs), ``action``, ``subtype``, ``outcome``,
``_count``; newest first; keyset-paged by sequence.
"""

from __future__ import annotations

import base64

import orjson
from sqlalchemy import Connection, select

from healthlink.db import tables as t
from healthlink.errors import Invalid, Issue, NotFound
from healthlink.fhir.dates import parse_range

A, E = t.audit_event, t.audit_entity
PARAMS = ("_id", "date", "patient", "entity", "agent", "agent-name", "action", "subtype", "outcome",
          "_count", "_cursor", "_format")


def _bad(msg: str, name: str) -> Invalid:
    return Invalid(msg, [Issue("invalid", msg, (f"AuditEvent?{name}",))])


def _ref(v: str, default_type: str | None) -> str:
    return v if "/" in v or default_type is None else f"{default_type}/{v}"


def search(conn: Connection, params: list[tuple[str, str]], *, default_count: int,
           max_count: int) -> tuple[list[str], str | None]:
    conds = []
    count = default_count
    for name, value in params:
        vals = value.split(",")
        if name == "_count":
            if not value.isdigit():
                raise _bad("_count must be a non-negative integer", name)
            count = min(int(value), max_count)
        elif name == "_id":
            conds.append(A.c.event_id.in_(vals))
        elif name == "date":
            prefix, v = (value[:2], value[2:]) if value[:2] in ("gt", "lt", "ge", "le", "eq") else ("eq", value)
            rng = parse_range(v)
            if rng is None:
                raise _bad(f"'{v}' is not a FHIR date", name)
            lo, hi = rng
            conds.append({"eq": A.c.recorded.between(lo, hi), "gt": A.c.recorded > hi,
                          "lt": A.c.recorded < lo, "ge": A.c.recorded >= lo,
                          "le": A.c.recorded <= hi}[prefix])
        elif name in ("patient", "entity"):
            refs = [_ref(v, "Patient" if name == "patient" else None) for v in vals]
            sub = select(E.c.seq).where(E.c.ref.in_(refs))
            if name == "patient":
                sub = sub.where(E.c.kind == "P")
            conds.append(A.c.seq.in_(sub))
        elif name == "agent":
            conds.append(A.c.agent_ref.in_([_ref(v, "Practitioner") for v in vals]))
        elif name == "agent-name":
            conds.append(A.c.username.in_(vals))
        elif name == "action":
            conds.append(A.c.action.in_(vals))
        elif name == "subtype":
            conds.append(A.c.subtype.in_([v.split("|")[-1] for v in vals]))
        elif name == "outcome":
            conds.append(A.c.outcome.in_(vals))
        elif name == "_cursor":
            try:
                conds.append(A.c.seq < int(orjson.loads(base64.urlsafe_b64decode(value + "=="))["q"]))
            except Exception:  # noqa: BLE001
                raise _bad("the paging cursor is not valid", name) from None
        elif name == "_format":
            continue
        else:
            raise _bad(f"unknown search parameter '{name}' for AuditEvent "
                       f"(supported: {', '.join(PARAMS)})", name)
    rows = conn.execute(select(A.c.seq, A.c.content).where(*conds).order_by(A.c.seq.desc())
                        .limit(count + 1)).all()
    nxt = None
    if len(rows) > count:
        rows = rows[:count]
        nxt = base64.urlsafe_b64encode(orjson.dumps({"q": rows[-1].seq})).decode().rstrip("=")
    return [r.content for r in rows], nxt


def read(conn: Connection, event_id: str) -> str:
    row = conn.execute(select(A.c.content).where(A.c.event_id == event_id)).first()
    if row is None:
        raise NotFound(f"AuditEvent/{event_id} is not known")
    return row.content
