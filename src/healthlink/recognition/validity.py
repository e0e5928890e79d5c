"""The validity window of a recognised result.

Rule (issue 7, item 3; windows per item from the provincial lists, research notes §1.5): the
window is counted in calendar days from the specimen collection date (``Observation.effective``)
or the imaging study date, taken in the region's time zone, and the result stays valid through
the end of that date plus N days.  A specimen drawn 2026-03-01T23:30+08:00 is dated 2026-03-01
in Shanghai; one drawn 2026-03-01T16:30Z is already 2026-03-02 there.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from healthlink.recognition.catalogue import Item

REGION_TZ = "Asia/Shanghai"


def _local_date(moment: datetime, tz: str) -> date:
    if moment.tzinfo is None:
        # a timestamp without offset cannot be placed on the region's calendar safely
        raise ValueError(f"time without a time zone offset: {moment.isoformat()}")
    return moment.astimezone(ZoneInfo(tz)).date()


def valid_until(effective: datetime, item: Item, tz: str = REGION_TZ) -> date:
    """The last calendar date (in ``tz``) on which a result of ``item`` taken at ``effective``
    may be recognised."""
    return _local_date(effective, tz) + timedelta(days=item.validity_days)


def is_valid(effective: datetime, item: Item, now: datetime, tz: str = REGION_TZ) -> bool:
    """Whether the result is inside its window at ``now`` (both placed in ``tz``)."""
    return _local_date(now, tz) <= valid_until(effective, item, tz)
