"""Pre-aggregation: daily counts per institution, department, metric and key in
``dashboard_daily``, recounted incrementally from the store and the event tables
(docs/dashboard.md "Pre-aggregation").

Each *source* (a table the platform already writes) has a high-water mark in ``dashboard_state``:
the time its last refresh started.  A refresh recounts, from the source itself, every day from the
high-water mark less :data:`MARGIN_US` (rows stamped before they commit, e.g. a long upload,
land inside it) to today, replacing those days' rows in one transaction; older days are kept.  So
the counts are the store's, never a copy that drifts: running a full recount (``full=True``) gives
the same rows.  Each recount reads the source through its time index, never the whole table,
except the first.

Days are the region's calendar days, computed in SQL as ``(µs + offset) // 86_400_000_000``
with the region's UTC offset now (Asia/Shanghai has no daylight saving time; a region that has
one would see its days shift by an hour twice a year — docs/dashboard.md)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import and_, delete, distinct, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from healthlink.db import Database
from healthlink.db import tables as t

DAY_US = 86_400_000_000
MARGIN_US = 600 * 1_000_000  # ten minutes: rows committed later than that after their time stamp are missed
#: the record types counted as "records held" (docs/dashboard.md): patient files, visits,
#: prescriptions and results
RECORD_TYPES = ("Patient", "Encounter", "MedicationRequest", "Observation", "DiagnosticReport")
EMPI_TASK = "https://healthlink.example.org/fhir/CodeSystem/empi-task"

Row = tuple[int, str, str, str, str, int]  # day, institution, department, metric, key, value


def offset_us(tz: str) -> int:
    off = datetime.now(ZoneInfo(tz)).utcoffset() or timedelta(0)
    return int(off.total_seconds() * 1_000_000)


def day_number(d: date) -> int:
    return (d - date(1970, 1, 1)).days


def day_date(n: int) -> date:
    return date(1970, 1, 1) + timedelta(days=n)


def now_us() -> int:
    return time.time_ns() // 1000


class _Counter:
    """Rows of one source's recount: (day, institution, department, metric, key) -> value."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, str, str, str, str], int] = {}

    def add(self, rows: Iterable[Any], metric: str | Callable[[Any], str], *, key: Callable[[Any], str] | None = None,
            how: str = "sum") -> None:
        for r in rows:
            if r.v is None:
                continue
            k = (int(r.day), r.inst or "", getattr(r, "dept", None) or "",
                 metric(r) if callable(metric) else metric, (key(r) if key else "") or "")
            v = int(r.v)
            if how == "max":
                self.rows[k] = max(self.rows.get(k, v), v)
            else:
                self.rows[k] = self.rows.get(k, 0) + v


def _day(col, off: int):  # noqa: ANN001, ANN202
    return ((col + off) // DAY_US).label("day")


# ------------------------------------------------------------------ the sources
def _resource(conn: Connection, lo: int, off: int, out: _Counter) -> None:
    v = t.resource_version
    day = _day(v.c.last_updated, off)
    base = and_(v.c.res_type.in_(RECORD_TYPES), v.c.last_updated >= lo)
    grp = (day, v.c.institution_id, v.c.res_type)
    out.add(conn.execute(select(day, v.c.institution_id.label("inst"), v.c.res_type.label("k"), func.count().label("v"))
                         .where(base, v.c.version_id == 1, v.c.deleted.is_(False)).group_by(*grp)),
            "held.created", key=lambda r: r.k)
    out.add(conn.execute(select(day, v.c.institution_id.label("inst"), v.c.res_type.label("k"), func.count().label("v"))
                         .where(base, v.c.method == "DELETE").group_by(*grp)),
            "held.deleted", key=lambda r: r.k)
    # a deleted record written again is held again
    prev = v.alias("prev")
    out.add(conn.execute(select(day, v.c.institution_id.label("inst"), v.c.res_type.label("k"), func.count().label("v"))
                         .join(prev, and_(prev.c.rid == v.c.rid, prev.c.version_id == v.c.version_id - 1))
                         .where(base, v.c.version_id > 1, v.c.deleted.is_(False), prev.c.deleted.is_(True))
                         .group_by(*grp)),
            "held.created", key=lambda r: r.k)
    out.add(conn.execute(select(day, v.c.institution_id.label("inst"), func.max(v.c.last_updated).label("v"))
                         .where(base).group_by(day, v.c.institution_id)), "held.last", how="max")


def _recognition(conn: Connection, lo: int, off: int, out: _Counter) -> None:
    e = t.recognition_event
    day = _day(e.c.at, off)
    cols = (day, e.c.institution_id.label("inst"), e.c.department_id.label("dept"))
    grp = (day, e.c.institution_id, e.c.department_id)
    since = e.c.at >= lo
    out.add(conn.execute(select(*cols, e.c.kind.label("k"), func.count().label("v"))
                         .where(since, e.c.kind.in_(("checked", "opened"))).group_by(*grp, e.c.kind)),
            lambda r: f"rg.{r.k}")
    out.add(conn.execute(select(*cols, func.count().label("v"))
                         .where(since, e.c.kind == "checked", e.c.found.is_(True)).group_by(*grp)), "rg.found")
    for kind in ("reminded", "adopted"):  # lines, not cards: one per check
        out.add(conn.execute(select(*cols, func.count(distinct(e.c.check_id)).label("v"))
                             .where(since, e.c.kind == kind).group_by(*grp)), f"rg.{kind}")
    out.add(conn.execute(select(*cols, e.c.reason.label("k"), func.count().label("v"))
                         .where(since, e.c.kind == "declined").group_by(*grp, e.c.reason)),
            "rg.declined", key=lambda r: r.k or "-")
    rows = conn.execute(select(*cols, e.c.item_id.label("k"), func.count().label("v"),
                               func.coalesce(func.sum(e.c.price_fen), 0).label("fen"))
                        .where(since, e.c.kind == "adopted").group_by(*grp, e.c.item_id)).all()
    out.add(rows, "rg.item.adopted", key=lambda r: r.k or "-")
    out.add([_Val(r, r.fen) for r in rows], "rg.item.savings", key=lambda r: r.k or "-")
    out.add([_Val(r, r.fen) for r in rows], "rg.savings")


class _Val:
    """A result row with another value (the savings of the same group)."""

    def __init__(self, row: Any, v: int) -> None:
        self.day, self.inst, self.dept, self.k, self.v = row.day, row.inst, row.dept, row.k, v


def _medsafety(conn: Connection, lo: int, off: int, out: _Counter) -> None:
    e = t.medsafety_event
    day = _day(e.c.at, off)
    cols = (day, e.c.institution_id.label("inst"), e.c.department_id.label("dept"))
    grp = (day, e.c.institution_id, e.c.department_id)
    since = e.c.at >= lo
    out.add(conn.execute(select(*cols, func.count().label("v")).where(since, e.c.kind == "checked").group_by(*grp)),
            "ms.checked")
    for kind in ("finding", "overridden", "accepted"):
        out.add(conn.execute(select(*cols, e.c.severity.label("k"), func.count().label("v"))
                             .where(since, e.c.kind == kind).group_by(*grp, e.c.severity)),
                f"ms.{kind}", key=lambda r: r.k or "-")
        out.add(conn.execute(select(*cols, func.count().label("v"))
                             .where(since, e.c.kind == kind, e.c.interrupt.is_(True)).group_by(*grp)),
                f"ms.{kind}.int")


def _prereview(conn: Connection, lo: int, off: int, out: _Counter) -> None:
    e, p = t.prereview_event, t.prereview_prescription
    day = _day(e.c.at, off)
    cols = (day, e.c.institution_id.label("inst"), p.c.department_id.label("dept"))
    grp = (day, e.c.institution_id, p.c.department_id)
    j = e.join(p, p.c.id == e.c.prescription_id)
    since = e.c.at >= lo
    out.add(conn.execute(select(*cols, e.c.kind.label("k"), func.count().label("v")).select_from(j)
                         .where(since).group_by(*grp, e.c.kind)), lambda r: f"pr.{r.k}")
    # the pharmacist's turnaround: decision - submission, seconds, of the first decision per prescription
    decided = e.c.kind.in_(("passed", "returned", "double-sign-required"))
    rows = conn.execute(select(*cols, func.count().label("v"),
                               func.sum((e.c.at - p.c.submitted_at) // 1_000_000).label("secs"))
                        .select_from(j).where(since, decided, e.c.username.is_not(None)).group_by(*grp)).all()
    out.add(rows, "pr.decided")
    out.add([_Val2(r, r.secs) for r in rows], "pr.wait.s")


class _Val2:
    def __init__(self, row: Any, v: int | None) -> None:
        self.day, self.inst, self.dept, self.v = row.day, row.inst, row.dept, v


def _consent(conn: Connection, lo: int, off: int, out: _Counter) -> None:
    g = t.access_grant
    day = _day(g.c.created, off)
    out.add(conn.execute(select(day, g.c.institution_id.label("inst"), g.c.kind.label("k"), func.count().label("v"))
                         .where(g.c.created >= lo).group_by(day, g.c.institution_id, g.c.kind)),
            lambda r: "cs.btg" if r.k == "break-glass" else "cs.request", key=lambda r: "" if r.k == "break-glass" else r.k)


def _quality(conn: Connection, lo: int, off: int, out: _Counter) -> None:
    u = t.ingest_upload
    rows = conn.execute(select(u.c.institution_id, u.c.finished, u.c.counts)
                        .where(u.c.finished >= lo, u.c.counts.is_not(None))).all()
    for r in rows:
        rep = orjson.loads(r.counts)
        d = (r.finished + off) // DAY_US
        one = [_Plain(d, r.institution_id, 1)]
        out.add(one, "dq.uploads")
        out.add([_Plain(d, r.institution_id, (rep.get("totals") or {}).get("read", 0))], "dq.read")
        out.add([_Plain(d, r.institution_id, (rep.get("totals") or {}).get("quarantined", 0))], "dq.quarantined")
        for reason, n in (rep.get("reasons") or {}).items():
            out.add([_Plain(d, r.institution_id, n)], "dq.reason", key=lambda _r, reason=reason: reason)


def _bedside(conn: Connection, lo: int, off: int, out: _Counter) -> None:
    b = t.bedside_event
    day = _day(b.c.at, off)
    out.add(conn.execute(select(day, b.c.institution_id.label("inst"), b.c.department_id.label("dept"),
                                b.c.outcome.label("k"), func.count().label("v"))
                         .where(b.c.at >= lo).group_by(day, b.c.institution_id, b.c.department_id, b.c.outcome)),
            "bs.scan", key=lambda r: r.k)


class _Plain:
    def __init__(self, day: int, inst: str, v: int) -> None:
        self.day, self.inst, self.dept, self.v = day, inst, "", v


SOURCES: dict[str, Callable[[Connection, int, int, _Counter], None]] = {
    "resource": _resource, "recognition": _recognition, "medsafety": _medsafety, "prereview": _prereview,
    "consent": _consent, "quality": _quality, "bedside": _bedside,
}


# ------------------------------------------------------------------ snapshot figures
def _snapshot(conn: Connection) -> list[tuple[str, str, int]]:
    """EMPI figures, counted whole (a merge changes old links, so they cannot be added up by day)."""
    pl = t.person_link
    out: list[tuple[str, str, int]] = []
    for inst, patients, persons in conn.execute(select(pl.c.institution_id, func.count(),
                                                       func.count(distinct(pl.c.person_id)))
                                                .group_by(pl.c.institution_id)):
        out += [("empi.patients", inst or "", patients), ("empi.persons", inst or "", persons)]
    out.append(("empi.persons.region", "", conn.execute(select(func.count(distinct(pl.c.person_id)))).scalar_one()))
    tok, r = t.idx_token, t.resource
    status = tok.alias("st")
    backlog = conn.execute(
        select(func.count(distinct(tok.c.rid))).select_from(tok)
        .join(status, and_(status.c.rid == tok.c.rid, status.c.res_type == "Task", status.c.param == "status",
                           status.c.code == "requested"))
        .join(r, and_(r.c.rid == tok.c.rid, r.c.deleted.is_(False)))
        .where(tok.c.res_type == "Task", tok.c.param == "code", tok.c.code == "possible-duplicate",
               tok.c.system == EMPI_TASK)).scalar_one()
    out.append(("empi.backlog", "", backlog))
    return out


def month_start(n: int) -> int:
    """The day number of the first day of the month of day number ``n``."""
    return day_number(day_date(n).replace(day=1))


def _rollup(conn: Connection, source: str, first_day: int) -> None:
    """Recompute ``dashboard_monthly`` of ``source`` for the months from the one of ``first_day``
    on, from the daily rows (``held.last`` is a maximum, every other metric a sum)."""
    d, m = t.dashboard_daily, t.dashboard_monthly
    m0 = month_start(first_day) if first_day > 0 else -1
    acc: dict[tuple[int, str, str, str, str], int] = {}
    months: dict[int, int] = {}
    for day, inst, dept, metric, key, value in conn.execute(
            select(d.c.day, d.c.institution_id, d.c.department_id, d.c.metric, d.c.key, d.c.value)
            .where(d.c.source == source, d.c.day >= m0)):
        mo = months.get(day)
        if mo is None:
            mo = months[day] = month_start(day)
        k = (mo, inst, dept, metric, key)
        acc[k] = max(acc.get(k, value), value) if metric == "held.last" else acc.get(k, 0) + value
    conn.execute(delete(m).where(m.c.source == source, m.c.day >= m0))
    rows = [{"source": source, "day": k[0], "institution_id": k[1], "department_id": k[2], "metric": k[3],
             "key": k[4], "value": v} for k, v in acc.items()]
    for i in range(0, len(rows), 20_000):
        conn.execute(m.insert(), rows[i:i + 20_000])


def rollup(db: Database, *, first_day: int = -1) -> None:
    """Recompute the monthly rows of every source from ``first_day`` (all: -1) on."""
    with db.write() as conn:
        for name in SOURCES:
            _rollup(conn, name, first_day)


_LOCK = threading.Lock()


def refresh(db: Database, *, tz: str, full: bool = False, snapshot_max_age_s: float = 300.0,
            sources: Iterable[str] | None = None) -> dict[str, float]:
    """Recount each source's days since its high-water mark (all days with ``full``); returns the
    seconds each took.  Safe to run from several processes: a recount that collides with another
    one's rows is left to that one."""
    off = offset_us(_tz(tz))
    took: dict[str, float] = {}
    st = t.dashboard_state
    with _LOCK:
        with db.read() as conn:
            hws = {r.source: r.hw for r in conn.execute(select(st))}
        for name in sources or SOURCES:
            started, t0 = now_us(), time.perf_counter()
            hw = None if full else hws.get(name)
            first_day = -1 if hw is None else (hw - MARGIN_US + off) // DAY_US
            lo = -(1 << 62) if hw is None else first_day * DAY_US - off
            counter = _Counter()
            try:
                with db.write() as conn:
                    SOURCES[name](conn, lo, off, counter)
                    d = t.dashboard_daily
                    conn.execute(delete(d).where(d.c.source == name, d.c.day >= first_day))
                    if counter.rows:
                        conn.execute(d.insert(), [{"source": name, "day": k[0], "institution_id": k[1],
                                                   "department_id": k[2], "metric": k[3], "key": k[4][:64],
                                                   "value": v} for k, v in counter.rows.items()])
                    _rollup(conn, name, first_day)
                    row = {"hw": started, "refreshed": now_us(), "seconds": time.perf_counter() - t0}
                    if conn.execute(st.update().where(st.c.source == name).values(**row)).rowcount == 0:
                        conn.execute(st.insert().values(source=name, **row))
            except IntegrityError:  # another process recounted the same days meanwhile
                continue
            took[name] = round(time.perf_counter() - t0, 4)
        with db.read() as conn:
            taken = conn.execute(select(func.max(t.dashboard_snapshot.c.taken))).scalar()
        if full or taken is None or now_us() - taken > snapshot_max_age_s * 1e6:
            t0 = time.perf_counter()
            with db.write() as conn:
                rows = _snapshot(conn)
                stamp = now_us()
                conn.execute(delete(t.dashboard_snapshot))
                conn.execute(t.dashboard_snapshot.insert(), [{"metric": m, "institution_id": i, "value": v,
                                                              "taken": stamp} for m, i, v in rows])
            took["snapshot"] = round(time.perf_counter() - t0, 4)
    return took


def state(db: Database) -> dict[str, dict]:
    """Each source's high-water mark, last refresh and its duration."""
    st = t.dashboard_state
    with db.read() as conn:
        return {r.source: {"hw": r.hw, "refreshed": r.refreshed, "seconds": r.seconds}
                for r in conn.execute(select(st))}


def _tz(tz: str) -> str:
    return tz or "Asia/Shanghai"


__all__ = ["DAY_US", "RECORD_TYPES", "SOURCES", "day_date", "day_number", "month_start", "offset_us", "refresh",
           "rollup", "state"]
