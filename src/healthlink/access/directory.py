"""The member institutions as the capabilities need them: name, tier and county medical
consortium, read from the Organization directory (directory data, not patient data) and cached a
minute per process; an id not yet seen is looked up again at once."""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
from sqlalchemy import select

from healthlink.db import Database
from healthlink.db import tables as t

#: the tier on Organization.type (healthlink.demo.TIER) and the consortium code system
TIER_SYSTEM = "https://healthlink.example.org/fhir/CodeSystem/institution-tier"
CONSORTIUM_SYSTEM = "https://healthlink.example.org/fhir/CodeSystem/county-medical-consortium"
CACHE_S = 60.0


@dataclass(frozen=True)
class Institution:
    id: str
    name: str
    tier: str | None
    consortium: str | None


class InstitutionDirectory:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: tuple[float, dict[str, Institution]] | None = None

    def forget(self) -> None:
        """Read the directory again at the next use (a new institution was just written)."""
        self._cache = None

    def all(self) -> dict[str, Institution]:
        cached = self._cache
        if cached is not None and time.monotonic() - cached[0] < CACHE_S:
            return cached[1]
        r = t.resource
        out: dict[str, Institution] = {}
        with self.db.read() as conn:
            for res_id, content in conn.execute(select(r.c.res_id, r.c.content).where(
                    r.c.res_type == "Organization", r.c.deleted.is_(False))):
                body = orjson.loads(content)
                tier = consortium = None
                for cc in body.get("type") or []:
                    for c in cc.get("coding") or []:
                        if c.get("system") == TIER_SYSTEM:
                            tier = c.get("code")
                        elif c.get("system") == CONSORTIUM_SYSTEM:
                            consortium = c.get("code")
                out[res_id] = Institution(res_id, body.get("name") or res_id, tier, consortium)
        self._cache = (time.monotonic(), out)
        return out

    def get(self, inst_id: str) -> Institution | None:
        """One institution; an id the cache does not know yet is read again once."""
        got = self.all().get(inst_id)
        if got is None:
            self.forget()
            got = self.all().get(inst_id)
        return got
