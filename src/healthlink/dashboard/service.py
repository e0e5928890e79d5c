"""The dashboard service (``Platform.dashboard``): who sees which institutions, the filters, and
the indicators read from the pre-aggregated counts (docs/dashboard.md).

:meth:`Dashboard.view` answers one page: the filters as understood, the *units* its tables are
broken down by (institutions at the region level; the departments of one institution after a
drill-down), every indicator's totals, the tables (each exportable as CSV by
:meth:`Dashboard.table`) and the series the charts draw.  Only counts and rates leave it: no
patient, no record id, no name of a person."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, literal, select

from healthlink.access import RequestContext
from healthlink.access import roles as R
from healthlink.dashboard import aggregate as agg
from healthlink.dashboard.members import TIERS, Member, Members, Region
from healthlink.dashboard.tables import TABLES, Table, build_tables
from healthlink.db import Database
from healthlink.db import tables as t
from healthlink.errors import Forbidden, Invalid, Issue

MAX_DAYS = 3660  # a period of at most ten years


@dataclass(frozen=True)
class Filters:
    since: date
    until: date
    tier: str | None = None
    county: str | None = None
    institution: str | None = None
    department: str | None = None

    def query(self) -> dict[str, str]:
        q = {"since": self.since.isoformat(), "until": self.until.isoformat()}
        for k in ("tier", "county", "institution", "department"):
            v = getattr(self, k)
            if v:
                q[k] = v
        return q


@dataclass(frozen=True)
class Scope:
    """What the actor's roles let them see: the whole region, or some institutions."""

    view: str  # region | institution
    institutions: frozenset[str]  # visible members


def _bad(field: str, msg: str) -> Invalid:
    return Invalid(msg, [Issue("invalid", msg, (field,))])


class Dashboard:
    def __init__(self, db: Database, *, tz: str, max_age_s: float,
                 ledger_status: Callable[[], dict] | None = None,
                 item_label: Callable[[str], str] | None = None) -> None:
        self.db = db
        self.tz = tz
        self.max_age_s = max_age_s
        self.members = Members(db)
        self.ledger_status = ledger_status
        self.item_label = item_label or (lambda k: k)

    # ------------------------------------------------------------ who sees what
    def scope(self, ctx: RequestContext) -> Scope:
        a = ctx.actor
        view = "region" if "system" in a.roles else R.dashboard_view(a.roles)
        region = self._region_with(a.institution_id if view == "institution" else None)
        if view == "region":
            return Scope("region", frozenset(region.members))
        if view == "institution" and a.kind == "user" and a.institution_id:
            mine = {a.institution_id}
            me = region.members.get(a.institution_id)
            if me is not None and me.consortium and region.consortium_lead(me.consortium) == me.id:
                mine |= {m.id for m in region.members.values() if m.consortium == me.consortium}
            return Scope("institution", frozenset(mine))
        raise Forbidden("the dashboard is for health-commission leaders and institution managers")

    def _region_with(self, inst_id: str | None) -> Region:
        """The members; read again at once when ``inst_id`` is not among them yet (a new institution)."""
        region = self.members.region()
        if inst_id and inst_id not in region.members:
            self.members.forget()
            region = self.members.region()
        return region

    def today(self) -> date:
        return datetime.now(ZoneInfo(self.tz)).date()

    def filters(self, ctx: RequestContext, *, since: str | None = None, until: str | None = None,
                tier: str | None = None, county: str | None = None, institution: str | None = None,
                department: str | None = None) -> Filters:
        """Parse and check the filters (400 naming the field; 403 for an institution not in view)."""
        def day(v: str | None, name: str) -> date | None:
            if not v:
                return None
            try:
                return date.fromisoformat(v)
            except ValueError:
                raise _bad(name, f"{name} must be a date (YYYY-MM-DD), not {v!r}") from None
        end = day(until, "until") or self.today()
        start = day(since, "since") or end - timedelta(days=29)
        if start > end:
            raise _bad("since", "since is after until")
        if (end - start).days > MAX_DAYS:
            raise _bad("since", "the period is longer than ten years")
        region = self._region_with(institution)
        if tier and tier not in TIERS:
            raise _bad("tier", f"unknown tier {tier!r}; one of {', '.join(TIERS)}")
        if county and county not in region.counties():
            raise _bad("county", f"unknown county {county!r}")
        sc = self.scope(ctx)
        if institution:
            if institution not in region.members:
                raise _bad("institution", f"unknown institution {institution!r}")
            if institution not in sc.institutions:
                raise Forbidden("you see your own institution (and the consortium it leads) only")
        if department:
            if not institution:
                raise _bad("department", "a department needs its institution")
            if department not in {d for d, _ in region.members[institution].departments}:
                raise _bad("department", f"unknown department {department!r} of {institution}")
        return Filters(start, end, tier or None, county or None, institution or None, department or None)

    # ------------------------------------------------------------ freshness
    def ensure_fresh(self) -> None:
        """Recount when the last refresh is older than the configured age (0: never here)."""
        if self.max_age_s <= 0:
            return
        st = agg.state(self.db)
        now = agg.now_us()
        if len(st) < len(agg.SOURCES) or min(s["refreshed"] for s in st.values()) < now - self.max_age_s * 1e6:
            self.refresh()

    def refresh(self, ctx: RequestContext | None = None, *, full: bool = False) -> dict[str, float]:
        if ctx is not None:
            self.scope(ctx)  # a dashboard viewer (or the platform) may ask for a recount
        took = agg.refresh(self.db, tz=self.tz, full=full, snapshot_max_age_s=max(self.max_age_s, 1.0))
        self.members.forget()
        return took

    # ------------------------------------------------------------ the page
    def view(self, ctx: RequestContext, f: Filters) -> dict[str, Any]:
        sc = self.scope(ctx)
        self.ensure_fresh()
        region = self.members.region()
        insts = self._institutions(sc, region, f)
        level = "department" if f.department else "institution" if f.institution else "region"
        data = self._read(insts, f)
        tables = build_tables(self, region, insts, f, data)
        return {"filters": f.query(), "level": level, "view": sc.view,
                "institutions": [_member_json(region.members[i]) for i in sorted(insts)],
                "choices": self._choices(sc, region),
                "departments": [{"id": d, "name": n} for d, n in region.members[f.institution].departments]
                if f.institution else [],
                "totals": data["totals"], "tables": {k: v.to_json() for k, v in tables.items()},
                "series": data["series"], "refreshed": agg.state(self.db)}

    def table(self, ctx: RequestContext, f: Filters, name: str) -> Table:
        if name not in TABLES:
            raise _bad("table", f"unknown table {name!r}; one of {', '.join(TABLES)}")
        sc = self.scope(ctx)
        self.ensure_fresh()
        region = self.members.region()
        insts = self._institutions(sc, region, f)
        return build_tables(self, region, insts, f, self._read(insts, f))[name]

    def _choices(self, sc: Scope, region: Region) -> dict[str, Any]:
        seen = [region.members[i] for i in sc.institutions if i in region.members]
        return {"tiers": [x for x in TIERS if any(m.tier == x for m in seen)],
                "counties": sorted({m.county for m in seen if m.county}),
                "institutions": [_member_json(m) for m in sorted(seen, key=lambda m: (TIERS.index(m.tier)
                                                                                     if m.tier in TIERS else 9, m.id))]}

    @staticmethod
    def _institutions(sc: Scope, region: Region, f: Filters) -> list[str]:
        if f.institution:
            return [f.institution]
        return sorted(i for i in sc.institutions if i in region.members
                      and (f.tier is None or region.members[i].tier == f.tier)
                      and (f.county is None or region.members[i].county == f.county))

    def _read(self, insts: list[str], f: Filters) -> dict[str, Any]:  # noqa: C901
        """The pre-aggregated rows for the institutions and period (whole months from the monthly
        rows, the rest from the daily rows), plus the few live figures (unreviewed break-the-glass,
        last upload, ledger) read through narrow indexes."""
        d, mo = t.dashboard_daily, t.dashboard_monthly
        lo, hi = agg.day_number(f.since), agg.day_number(f.until)
        period: dict[tuple[str, str, str, str], int] = {}
        held: dict[tuple[str, str, str], int] = {}
        last: dict[str, int] = {}
        series: dict[tuple[str, str], int] = {}
        snap: dict[tuple[str, str], int] = {}
        btg: dict[str, int] = {}
        uploads: dict[str, int] = {}
        monthly = hi - lo > SERIES_DAYS
        this_month = agg.month_start(hi)

        def add(acc: dict, key: tuple, v: int) -> None:
            acc[key] = acc.get(key, 0) + int(v)
        with self.db.read() as conn:
            for chunk in _chunks(insts):
                for tb, a, b, sign in segments(lo, hi):
                    where = [tb.c.institution_id.in_(chunk), tb.c.day >= a, tb.c.day <= b]
                    if f.department:
                        where.append(tb.c.department_id == f.department)
                    # the region level needs no department: fewer groups to carry back
                    dept = tb.c.department_id if f.institution else literal("")
                    grp = [tb.c.institution_id, tb.c.metric, tb.c.key] + ([tb.c.department_id] if f.institution else [])
                    for r in conn.execute(select(tb.c.institution_id, dept, tb.c.metric, tb.c.key, func.sum(tb.c.value))
                                          .where(*where, ~tb.c.metric.startswith("held.")).group_by(*grp)):
                        add(period, (r[0], r[1], r[2], r[3]), sign * int(r[4]))
                    for r in conn.execute(select(tb.c.institution_id, tb.c.key, func.sum(tb.c.value))
                                          .where(*where[:3], tb.c.metric == "held.created")
                                          .group_by(tb.c.institution_id, tb.c.key)):
                        add(held, (r[0], r[1], "new"), sign * int(r[2]))
                # the series: per day, or per month for a long period
                tb = mo if monthly else d
                a = agg.month_start(lo) if monthly else lo
                where = [tb.c.institution_id.in_(chunk), tb.c.day >= a, tb.c.day <= hi, tb.c.key == ""]
                if f.department:
                    where.append(tb.c.department_id == f.department)
                for r in conn.execute(select(tb.c.day, tb.c.metric, func.sum(tb.c.value))
                                      .where(*where, tb.c.metric.in_(SERIES_METRICS)).group_by(tb.c.day, tb.c.metric)):
                    add(series, (agg.day_date(int(r[0])).isoformat()[:7 if monthly else 10], r[1]), r[2])
                for r in conn.execute(select(tb.c.day, func.sum(tb.c.value))
                                      .where(*where[:3], tb.c.metric == "held.created").group_by(tb.c.day)):
                    add(series, (agg.day_date(int(r[0])).isoformat()[:7 if monthly else 10], "held.created"), r[1])
                # records held at the end of the period: whole months before its month, then its days
                for tb, a, b in ((mo, -(1 << 31), this_month - 1), (d, this_month, hi)):
                    for r in conn.execute(select(tb.c.institution_id, tb.c.metric, tb.c.key, func.sum(tb.c.value))
                                          .where(tb.c.institution_id.in_(chunk), tb.c.day >= a, tb.c.day <= b,
                                                 tb.c.metric.in_(("held.created", "held.deleted")))
                                          .group_by(tb.c.institution_id, tb.c.metric, tb.c.key)):
                        add(held, (r[0], r[2], "held"), int(r[3]) * (1 if r[1] == "held.created" else -1))
                for r in conn.execute(select(mo.c.institution_id, func.max(mo.c.value))
                                      .where(mo.c.institution_id.in_(chunk), mo.c.metric == "held.last")
                                      .group_by(mo.c.institution_id)):
                    last[r[0]] = int(r[1])
                g = t.access_grant
                for r in conn.execute(select(g.c.institution_id, func.count())
                                      .where(g.c.institution_id.in_(chunk), g.c.kind == "break-glass",
                                             g.c.reviewed.is_(None)).group_by(g.c.institution_id)):
                    btg[r[0]] = int(r[1])
                u = t.ingest_upload
                for r in conn.execute(select(u.c.institution_id, func.max(u.c.finished))
                                      .where(u.c.institution_id.in_(chunk)).group_by(u.c.institution_id)):
                    if r[1] is not None:
                        uploads[r[0]] = int(r[1])
            s = t.dashboard_snapshot
            for r in conn.execute(select(s.c.metric, s.c.institution_id, s.c.value)):
                snap[(r[0], r[1])] = int(r[2])
        ledger = self.ledger_status() if self.ledger_status else None
        if monthly:
            labels = sorted({agg.day_date(n).isoformat()[:7] for n in range(lo, hi + 1)})
        else:
            labels = [(f.since + timedelta(days=i)).isoformat() for i in range(hi - lo + 1)]
        out_series = {"days": labels, "grain": "month" if monthly else "day",
                      **{m: [series.get((x, m), 0) for x in labels] for m in (*SERIES_METRICS, "held.created")}}
        return {"period": period, "held": held, "last": last, "snapshot": snap, "btg": btg, "uploads": uploads,
                "ledger": ledger, "series": out_series, "totals": {}}


def segments(lo: int, hi: int) -> list[tuple[Any, int, int, int]]:
    """The days ``lo``..``hi`` as (table, first day, last day, sign) whose signed sums add up to the
    period: whole calendar months from ``dashboard_monthly`` (rows keyed by the month's first day);
    a partial month from ``dashboard_daily``, or — when it covers more of its month than it leaves
    out — as its whole month less the days left out (counts are sums, so this is exact and reads
    fewer rows)."""
    d, m = t.dashboard_daily, t.dashboard_monthly
    out: list[tuple[Any, int, int, int]] = []
    day = lo
    while day <= hi:
        ms = agg.month_start(day)
        nxt = agg.day_number((agg.day_date(ms).replace(day=28) + timedelta(days=4)).replace(day=1))
        a, b = day, min(hi, nxt - 1)  # the part of this month inside the period
        inside, outside = b - a + 1, (nxt - ms) - (b - a + 1)
        if outside == 0:
            out.append((m, ms, ms, 1))
        elif inside > outside:
            out.append((m, ms, ms, 1))
            if a > ms:
                out.append((d, ms, a - 1, -1))
            if b < nxt - 1:
                out.append((d, b + 1, nxt - 1, -1))
        else:
            out.append((d, a, b, 1))
        day = nxt
    return out


#: a period longer than this many days is drawn per month
SERIES_DAYS = 62
SERIES_METRICS = ("rg.checked", "rg.adopted", "ms.checked", "ms.finding.int", "pr.submitted")


def _chunks(ids: list[str], n: int = 500) -> list[list[str]]:
    return [ids[i:i + n] for i in range(0, len(ids), n)] or [[]]


def _member_json(m: Member) -> dict[str, Any]:
    return {"id": m.id, "name": m.name, "tier": m.tier, "county": m.county, "consortium": m.consortium}

