"""The member institutions as the dashboard groups them: tier, county (``address.district``),
county medical consortium, referral parent and departments (Organizations ``partOf`` an
institution), read from the Organization directory — directory data, never patient data — and
cached a minute per process (:data:`CACHE_S`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import orjson
from sqlalchemy import select

from healthlink.access.directory import CONSORTIUM_SYSTEM, TIER_SYSTEM
from healthlink.db import Database
from healthlink.db import tables as t

REFERRAL_PARENT = "https://healthlink.example.org/fhir/StructureDefinition/referral-parent"
CACHE_S = 60.0
TIERS = ("prefecture", "county", "township")


@dataclass(frozen=True)
class Member:
    id: str
    name: str
    tier: str
    county: str | None
    consortium: str | None
    parent: str | None
    departments: tuple[tuple[str, str], ...] = field(default=())  # (Organization id, name)


@dataclass(frozen=True)
class Region:
    members: dict[str, Member]

    def counties(self) -> list[str]:
        return sorted({m.county for m in self.members.values() if m.county})

    def consortium_lead(self, consortium: str) -> str | None:
        """The lead hospital of a county medical consortium: the member that is the referral
        parent of other members of the same consortium (docs/dashboard.md "Who sees what")."""
        inside = {m.id for m in self.members.values() if m.consortium == consortium}
        parents = [m.parent for m in self.members.values() if m.consortium == consortium and m.parent in inside]
        return max(set(parents), key=parents.count) if parents else None

    def department_name(self, dept_id: str) -> str:
        for m in self.members.values():
            for did, name in m.departments:
                if did == dept_id:
                    return name
        return dept_id


def _read(db: Database) -> Region:
    r = t.resource
    orgs: dict[str, dict] = {}
    with db.read() as conn:
        for res_id, content in conn.execute(select(r.c.res_id, r.c.content).where(
                r.c.res_type == "Organization", r.c.deleted.is_(False))):
            orgs[res_id] = orjson.loads(content)
    members: dict[str, Member] = {}
    depts: dict[str, list[tuple[str, str]]] = {}
    for oid, body in orgs.items():
        tier = consortium = None
        for cc in body.get("type") or []:
            for c in cc.get("coding") or []:
                if c.get("system") == TIER_SYSTEM:
                    tier = c.get("code")
                elif c.get("system") == CONSORTIUM_SYSTEM:
                    consortium = c.get("code")
        part_of = ((body.get("partOf") or {}).get("reference") or "").removeprefix("Organization/")
        if tier is None:
            if part_of:
                depts.setdefault(part_of, []).append((oid, body.get("name") or oid))
            continue
        parent = next((((e.get("valueReference") or {}).get("reference") or "").removeprefix("Organization/")
                       for e in body.get("extension") or [] if e.get("url") == REFERRAL_PARENT), None)
        county = next((a.get("district") for a in body.get("address") or [] if a.get("district")), None)
        members[oid] = Member(oid, body.get("name") or oid, tier, county, consortium, parent or None)
    for oid, ds in depts.items():
        if oid in members:
            m = members[oid]
            members[oid] = Member(m.id, m.name, m.tier, m.county, m.consortium, m.parent, tuple(sorted(ds)))
    return Region(members)


class Members:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: tuple[float, Region] | None = None

    def forget(self) -> None:
        self._cache = None

    def region(self) -> Region:
        cached = self._cache
        if cached is not None and time.monotonic() - cached[0] < CACHE_S:
            return cached[1]
        reg = _read(self.db)
        self._cache = (time.monotonic(), reg)
        return reg
