"""View model of the shared record page (issue 5, item 8): the Person's records that
``Patient/$everything`` serves the signed-in doctor, grouped by source institution and, within it,
by date, newest first.

The records come through the actor's repository, so the grant rules (data classes, sensitive
categories, the grant's end) and the audit trail are the repository's; this module only arranges
what it was given."""

from __future__ import annotations

from dataclasses import dataclass, field

from healthlink.access import Repository
from healthlink.errors import HealthLinkError
from healthlink.fhir.store import SOURCE_INSTITUTION_EXT, Stored
from healthlink.web.summary import concept, human_name

CAP = 2000  # records shown at most (a page says so when it stops there)
PAGE = 500  # records asked of $everything at a time
BTG_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


@dataclass(frozen=True)
class Row:
    ref: str
    res_type: str
    date: str  # YYYY-MM-DD, or "" when the record has no date of its own
    when: str  # the date and time as shown
    display: str
    value: str
    btg: bool


@dataclass
class Day:
    date: str
    rows: list[Row] = field(default_factory=list)


@dataclass
class Institution:
    id: str
    name: str
    own: bool
    days: list[Day] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(d.rows) for d in self.days)


@dataclass
class SharedRecord:
    institutions: list[Institution]
    btg: bool  # some record was opened by break-the-glass
    capped: bool  # there were more than CAP records


def _clinical_date(r: dict) -> str:
    """The record's own date (when it happened), else its last update."""
    for key in ("effectiveDateTime", "issued", "onsetDateTime", "recordedDate", "authoredOn",
                "occurrenceDateTime", "performedDateTime", "date", "started", "created"):
        v = r.get(key)
        if isinstance(v, str) and v:
            return v
    for key in ("period", "effectivePeriod", "performedPeriod", "onsetPeriod"):
        v = r.get(key)
        if isinstance(v, dict) and isinstance(v.get("start"), str):
            return v["start"]
    return str((r.get("meta") or {}).get("lastUpdated") or "")


def _display(r: dict) -> str:
    t = r.get("resourceType")
    if t in ("Patient", "Practitioner", "RelatedPerson", "Person"):
        return human_name(r)
    for key in ("code", "medicationCodeableConcept", "vaccineCode", "type", "category"):
        v = r.get(key)
        if isinstance(v, list):
            v = v[0] if v else None
        if isinstance(v, dict):
            shown = concept(v)
            if shown != "—":
                return shown
    if t == "Encounter" and isinstance(r.get("class"), dict):
        return r["class"].get("display") or r["class"].get("code") or "—"
    return str(r.get("name") or r.get("title") or "—")


def _value(r: dict) -> str:
    if r.get("resourceType") != "Observation":
        return ""
    q = r.get("valueQuantity")
    if isinstance(q, dict):
        return f"{q.get('value', '')} {q.get('unit') or q.get('code') or ''}".strip()
    for key in ("valueString", "valueInteger", "valueBoolean", "valueDateTime"):
        if key in r:
            return str(r[key])
    if "valueCodeableConcept" in r:
        return concept(r["valueCodeableConcept"])
    return ""


def _institution_of(r: dict, s: Stored) -> str:
    for e in (r.get("meta") or {}).get("extension") or []:
        if e.get("url") == SOURCE_INSTITUTION_EXT:
            return str(e.get("valueReference", {}).get("reference", "")).removeprefix("Organization/")
    return s.institution_id or ""


def is_btg(r: dict) -> bool:
    return any(x.get("system") == BTG_SYSTEM and x.get("code") == "BTG"
               for x in (r.get("meta") or {}).get("security") or [])


def fetch(repo: Repository, patient_id: str, *, cap: int = CAP) -> tuple[list[Stored], bool]:
    """Every page of ``$everything`` (each page audited by the repository), at most ``cap``."""
    items: list[Stored] = []
    cursor: str | None = None
    while True:
        page, cursor = repo.everything(patient_id, count=min(PAGE, cap - len(items)), cursor=cursor)
        items += page
        if not cursor or len(items) >= cap:
            return items[:cap], bool(cursor) or len(items) > cap


def _org_name(repo: Repository, org_id: str) -> str:
    if not org_id:
        return "—"
    try:
        return str(repo.read("Organization", org_id).json().get("name") or org_id)
    except HealthLinkError:  # an institution left the directory: show its id
        return org_id


def arrange(repo: Repository, items: list[Stored], *, own: str | None, capped: bool = False) -> SharedRecord:
    """Group by institution (the actor's own first, then by name) and date (newest first)."""
    groups: dict[str, list[Row]] = {}
    for s in items:
        if s.content is None:
            continue
        r = s.json()
        when = _clinical_date(r)
        row = Row(f"{s.res_type}/{s.res_id}", s.res_type, when[:10], when[:16].replace("T", " "),
                  _display(r), _value(r), is_btg(r))
        groups.setdefault(_institution_of(r, s), []).append(row)
    out = []
    for org, rows in groups.items():
        inst = Institution(org, _org_name(repo, org), org == own)
        days: dict[str, Day] = {}
        for row in sorted(rows, key=lambda x: (x.when, x.ref), reverse=True):
            days.setdefault(row.date, Day(row.date)).rows.append(row)
        inst.days = list(days.values())
        out.append(inst)
    out.sort(key=lambda i: (not i.own, i.name))
    return SharedRecord(out, any(r.btg for rows in groups.values() for r in rows), capped)
