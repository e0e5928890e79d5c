"""FHIR date, dateTime and instant values as inclusive microsecond ranges.

A partial date stands for its whole span: ``2024`` is 2024-01-01T00:00:00 to
2024-12-31T23:59:59.999999.  Values without a time zone are read in the platform's
zone (UTC); see docs/fhir-api.md.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timedelta, timezone

from healthlink.errors import Invalid, Issue

_RE = re.compile(
    r"^(?P<y>\d{4})(-(?P<m>\d{2})(-(?P<d>\d{2})(T(?P<H>\d{2})(:(?P<M>\d{2})(:(?P<S>\d{2})(?P<f>\.\d+)?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
US = timedelta(microseconds=1)
MIN_US = -(2**62)
MAX_US = 2**62


def to_us(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return (dt - EPOCH) // US


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def instant(us: int) -> str:
    """Microseconds -> FHIR instant text, e.g. 2026-11-22T02:30:00.123456+00:00."""
    return from_us(us).isoformat()


def parse_range(text: str) -> tuple[int, int] | None:
    """Return (low, high) inclusive microseconds, or None when not a FHIR date."""
    m = _RE.match(text.strip()) if isinstance(text, str) else None
    if not m:
        return None
    y = int(m["y"])
    # The span is added in integer microseconds, not with datetime arithmetic, which
    # overflows at the edges of time (9999-12-31, an open end some systems write; 0001 with
    # a positive offset).
    try:
        if m["m"] is None:
            lo = datetime(y, 1, 1)
            span = timedelta(days=366 if calendar.isleap(y) else 365)
        elif m["d"] is None:
            mo = int(m["m"])
            lo = datetime(y, mo, 1)
            span = timedelta(days=calendar.monthrange(y, mo)[1])
        elif m["H"] is None:
            lo = datetime(y, int(m["m"]), int(m["d"]))
            span = timedelta(days=1)
        else:
            frac = m["f"] or ""
            micro = int((frac[1:] + "000000")[:6]) if frac else 0
            lo = datetime(y, int(m["m"]), int(m["d"]), int(m["H"]), int(m["M"] or 0),
                          int(m["S"] or 0), micro)
            if m["S"] is None:
                span = timedelta(minutes=1)
            elif frac:
                span = timedelta(microseconds=10 ** (6 - min(len(frac) - 1, 6)))
            else:
                span = timedelta(seconds=1)
    except ValueError:
        return None
    tz = m["tz"]
    offset_us = 0
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        offset_us = sign * (int(tz[1:3]) * 60 + int(tz[4:6])) * 60_000_000
    lo_us = to_us(lo) - offset_us
    hi_us = lo_us + span // US - 1
    return lo_us, hi_us


def parse_range_or_invalid(text: str, *, where: str) -> tuple[int, int]:
    r = parse_range(text)
    if r is None:
        raise Invalid(f"'{text}' is not a FHIR date, dateTime or instant",
                      [Issue("value", f"'{text}' is not a FHIR date, dateTime or instant", (where,))])
    return r
