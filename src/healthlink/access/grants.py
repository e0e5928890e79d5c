"""Grants: what a member of staff may see of another institution's records (issue 5).

Staff see their own institution's patient data as their role allows.  Data of the same Person
held by other institutions is visible to a doctor, nurse or pharmacist only through an *active
grant* (``access_grant``, written by :mod:`healthlink.consent.grants`):

* it is held by one member of staff (``holder``, the username) at one institution, inside one
  Encounter there, for one local Patient and the Person the master patient index linked it to;
* it is active: approved (patient code, QR, in-person signature) or opened by break-the-glass,
  not yet expired, not revoked, and its encounter not closed (closing ends it in the same
  transaction, so the next request already sees it gone);
* the local Patient is still linked to the grant's Person: an EMPI unmerge that moves it away
  ends the grant's reach at once, and records split off into another Person are no longer
  reached (the Person's records are found through ``person_link`` on every query);
* it covers the data classes it names (``*`` for all; the Patient records themselves are always
  covered) and no record carrying a sensitive category the patient did not include
  (:mod:`healthlink.fhir.labels`; ``HEALTHLINK_SENSITIVE_CATEGORIES`` says which are active).

The repository asks this module for a SQL predicate (searches, includes, chains, history,
``$everything``) and for a single record's covering grant (read, vread, history of one
resource).  There is no other way to another institution's data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
from sqlalchemy import Connection, and_, bindparam, exists, false, or_, select, update

from healthlink.db import const, const_in, driver_all
from healthlink.db import tables as t
from healthlink.fhir import labels as L
from healthlink.fhir import store
from healthlink.fhir.dates import instant
from healthlink.fhir.indexing import LABEL_SYSTEM
from healthlink.fhir.store import Stored

R = t.resource
TOK = t.idx_token
PL = t.person_link

#: Staff roles that may hold a grant (issue 5: "a doctor (or nurse, pharmacist)").
GRANT_ROLES = frozenset({"doctor", "nurse", "pharmacist"})
#: Statuses of access_grant.status
PENDING, ACTIVE, REFUSED, REVOKED, CLOSED = "pending", "active", "refused", "revoked", "closed"
BREAK_GLASS = "break-glass"
#: Encounter.status values that close a consultation
CLOSED_ENCOUNTER = frozenset({"finished", "cancelled", "entered-in-error"})

ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class ActiveGrant:
    id: str
    consent_id: str
    kind: str
    person_id: str
    patient_id: str
    encounter_id: str
    classes: frozenset[str] | None  # None: every data class
    sensitive: frozenset[str]  # sensitive categories the patient included
    expires: int

    @property
    def break_glass(self) -> bool:
        return self.kind == BREAK_GLASS


def _split(text: str | None) -> frozenset[str]:
    return frozenset(x for x in (text or "").split(",") if x)


# built once: every read of a member of staff who may hold a grant runs them
_IN_FORCE = select(t.access_grant).where(
    t.access_grant.c.holder == bindparam("holder"), t.access_grant.c.status == ACTIVE,
    t.access_grant.c.institution_id == bindparam("inst"), t.access_grant.c.expires > bindparam("now"))
_LINKED = select(PL.c.patient_id, PL.c.person_id).where(PL.c.patient_id.in_(bindparam("ids", expanding=True)))


def active_grants(conn: Connection, holder: str, institution_id: str | None, *,
                  now: int | None = None) -> list[ActiveGrant]:
    """The holder's grants that are in force now, whose local Patient is still linked to the
    grant's Person."""
    if institution_id is None:
        return []
    now = now_us() if now is None else now
    rows = driver_all(conn, _IN_FORCE, {"holder": holder, "inst": institution_id, "now": now})
    if not rows:
        return []
    linked = dict(conn.execute(_LINKED, {"ids": sorted({r.patient_id for r in rows})}).all())
    return [ActiveGrant(r.id, r.consent_id, r.kind, r.person_id, r.patient_id, r.encounter_id,
                        None if r.classes == "*" else _split(r.classes) | {"demographics"},
                        _split(r.sensitive), r.expires)
            for r in rows if linked.get(r.patient_id) == r.person_id]


def _label(param: str, codes: frozenset[str], table=R, *, const_codes: bool = False):  # noqa: ANN001, ANN202
    """EXISTS a label row of ``param`` with one of ``codes`` for the row of ``table`` (an alias of
    the token table, so it never correlates with a join of the outer query).  ``const_codes``: the
    codes are the platform's own (the sensitive categories in force, from the settings), written
    into the statement's text (:func:`healthlink.db.const`) for a statement built once."""
    tok = TOK.alias()
    if const_codes:
        return exists(select(1).select_from(tok).where(
            tok.c.rid == table.c.rid, tok.c.param == const(param), tok.c.system == const(LABEL_SYSTEM),
            const_in(tok.c.code, codes)))
    return exists(select(1).select_from(tok).where(
        tok.c.rid == table.c.rid, tok.c.param == param, tok.c.system == LABEL_SYSTEM,
        tok.c.code.in_(sorted(codes))))


def predicate(grants: list[ActiveGrant], sensitive_active: frozenset[str]):  # noqa: ANN201
    """SQL predicate on ``resource``: the rows some grant covers (``false()`` without grants)."""
    clauses = []
    for g in grants:
        c = [R.c.patient_id.in_(select(PL.c.patient_id).where(PL.c.person_id == g.person_id))]
        if g.classes is not None:
            c.append(_label("_class", g.classes))
        hidden = sensitive_active - g.sensitive
        if hidden:
            c.append(~_label("_sensitive", hidden))
        clauses.append(and_(*c))
    return or_(*clauses) if clauses else false()


def covering(conn: Connection, grants: list[ActiveGrant], items: list[Stored],
             sensitive_active: frozenset[str]) -> dict[int, ActiveGrant]:
    """id(item) -> the grant that covers it, for records (versions) of other institutions, judged
    on that version's own content; a consent grant is preferred over break-the-glass when both
    cover a record."""
    items = [s for s in items if s.patient_id]
    if not grants or not items:
        return {}
    persons = dict(conn.execute(select(PL.c.patient_id, PL.c.person_id)
                                .where(PL.c.patient_id.in_({s.patient_id for s in items}))).all())
    # labels from each version's own content, not the index (which holds the current version's): an
    # older version can carry a sensitive code its correction no longer has
    labels: dict[int, tuple[str | None, frozenset[str]]] = {}
    for s in items:
        body = orjson.loads(s.content) if s.content else None
        labels[id(s)] = ((L.data_class(body), L.sensitive_categories(body)) if isinstance(body, dict)
                         else (None, frozenset()))
    out: dict[int, ActiveGrant] = {}
    ordered = sorted(grants, key=lambda g: g.break_glass)  # consent grants first
    for s in items:
        cls, sens = labels[id(s)]
        for g in ordered:
            if persons.get(s.patient_id) != g.person_id:
                continue
            if g.classes is not None and cls not in g.classes:
                continue
            if (sens & sensitive_active) - g.sensitive:
                continue
            out[id(s)] = g
            break
    return out


def mark(s: Stored, grant: ActiveGrant | None) -> Stored:
    """The record as a grant holder is served it.  Every stored record names its source
    institution already (``meta.extension`` source-institution, written by the store); a record
    that break-the-glass opened also carries the v3 ActReason ``BTG`` security label."""
    if s.content is None or grant is None or not grant.break_glass:
        return s
    body = orjson.loads(s.content)
    body.setdefault("meta", {}).setdefault("security", []).append(
        {"system": ACT_REASON, "code": "BTG", "display": "break the glass"})
    return Stored(s.rid, s.res_type, s.res_id, s.version_id, s.last_updated, s.deleted, s.institution_id,
                  s.patient_id, orjson.dumps(body).decode(), s.method)


def end(conn: Connection, where, *, reason: str, by: str, status: str = CLOSED,  # noqa: ANN001
        now: int | None = None, base_url: str | None = None) -> list[str]:
    """End the pending and active grants ``where`` selects: the row and its Consent resource
    (status ``inactive``, or ``rejected`` for a refused request; provision period ends now), in the
    caller's transaction.  Returns the ended grant ids."""
    g = t.access_grant
    now = now_us() if now is None else now
    rows = conn.execute(select(g.c.id, g.c.consent_id, g.c.status).where(
        where, g.c.status.in_((PENDING, ACTIVE))).with_for_update()).all()
    for r in rows:
        conn.execute(update(g).where(g.c.id == r.id).values(status=status, ended=now, end_reason=reason,
                                                            ended_by=by))
        cur = store.read_current(conn, "Consent", r.consent_id, for_update=True)
        if cur is None or cur.deleted or cur.content is None:
            continue
        body = orjson.loads(cur.content)
        body["status"] = "rejected" if status == REFUSED else "inactive"
        prov = body.setdefault("provision", {})
        period = prov.setdefault("period", {})
        if r.status == ACTIVE:
            period["end"] = instant(now)
        body.setdefault("extension", []).append(
            {"url": "https://healthlink.example.org/fhir/StructureDefinition/grant-ended",
             "valueCode": reason})
        store.update(conn, cur, body, base_url=base_url)
    return [r.id for r in rows]


def close_encounter(conn: Connection, encounter_id: str, *, by: str, reason: str = "encounter-closed",
                    base_url: str | None = None) -> list[str]:
    """The consultation is over: every grant bound to the encounter ends now."""
    return end(conn, t.access_grant.c.encounter_id == encounter_id, reason=reason, by=by,
               base_url=base_url)
