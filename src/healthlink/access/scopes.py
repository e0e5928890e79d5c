"""SMART App Launch v2 scopes: ``(patient|user|system)/(Type|*).[c][r][u][d][s]``.

v1 forms are read as their v2 equivalents (``.read`` = ``.rs``, ``.write`` = ``.cud``,
``.*`` = ``.cruds``).  Scopes narrow what a role allows; they never widen it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from healthlink.errors import Invalid

_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.(\*|read|write|c?r?u?d?s?)$")
_V1 = {"*": "cruds", "read": "rs", "write": "cud"}


@dataclass(frozen=True)
class Scope:
    context: str
    res_type: str  # or "*"
    ops: frozenset[str]

    def allows(self, res_type: str, op: str) -> bool:
        return (self.res_type in ("*", res_type)) and op in self.ops

    def __str__(self) -> str:
        return f"{self.context}/{self.res_type}." + "".join(c for c in "cruds" if c in self.ops)


def parse_scopes(text: str, *, strict: bool = False) -> tuple[Scope, ...]:
    """Parse a space-separated scope string; unknown scopes (openid, launch ...) are skipped
    unless ``strict``."""
    out = []
    for s in text.split():
        m = _SCOPE.match(s)
        if not m:
            if strict:
                raise Invalid(f"'{s}' is not a SMART v2 resource scope")
            continue
        ops = _V1.get(m[3], m[3])
        if not ops:
            if strict:
                raise Invalid(f"'{s}' grants no operations")
            continue
        out.append(Scope(m[1], m[2], frozenset(ops)))
    return tuple(out)


def scopes_allow(scopes: tuple[Scope, ...], res_type: str, op: str) -> bool:
    return any(s.allows(res_type, op) for s in scopes)
