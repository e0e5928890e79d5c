"""The dashboard's tables, built from the counts :meth:`Dashboard._read` gathered; each row is a
*unit* (an institution at the region level, a department after a drill-down to an institution)
or a breakdown (items, decline reasons).  Column keys are stable machine names (the CSV of the
API); the pages put translated labels over them.  Formulas: docs/dashboard.md."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from healthlink.dashboard.members import Region

if TYPE_CHECKING:
    from healthlink.dashboard.service import Dashboard, Filters

TABLES = ("institutions", "records", "empi", "recognition", "recognition_items", "decline_reasons",
          "medsafety", "prereview", "bedside", "consent", "quality", "ledger")
#: record types per column of "records held"
HELD = {"patients": ("Patient",), "visits": ("Encounter",), "prescriptions": ("MedicationRequest",),
        "results": ("Observation", "DiagnosticReport")}
SEVERITIES = ("contraindicated", "major", "moderate", "minor")
GRANT_KINDS = ("code", "qr", "in-person")
#: tables broken down by department after a drill-down (the others have no department)
BY_DEPARTMENT = frozenset({"recognition", "medsafety", "prereview", "bedside"})


@dataclass
class Table:
    name: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": self.rows, "totals": self.totals}

    def to_csv(self, labels: Mapping[str, str] | None = None) -> str:
        """RFC 4180 CSV with a header row (the labels given, else the column keys); the totals row
        last when the table has one.  A leading BOM lets spreadsheet programs read UTF-8."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n")
        w.writerow([(labels or {}).get(c, c) for c in self.columns])
        for r in [*self.rows, *([self.totals] if self.totals else [])]:
            w.writerow(["" if r.get(c) is None else _safe(r.get(c)) for c in self.columns])
        return "\ufeff" + buf.getvalue()


def _safe(v: Any) -> Any:
    """A cell a spreadsheet would run as a formula is quoted (CSV injection, OWASP)."""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r") and not _number(v):
        return "'" + v
    return v


def _number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def rate(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


def yuan(fen: int) -> str:
    return str(Decimal(fen) / 100)


class _Sums:
    """The period's counts per unit (or in total: unit None) -> metric -> key."""

    def __init__(self, period: Mapping[tuple[str, str, str, str], int], unit: Callable[[str, str], str]) -> None:
        self.v: dict[str | None, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
        for (inst, dept, metric, key), n in period.items():
            self.v[unit(inst, dept)][metric][key] += n
            self.v[None][metric][key] += n

    def units(self, prefix: str) -> set[str]:
        return {u for u, ms in self.v.items() if u is not None
                and any(m.startswith(prefix) and any(ks.values()) for m, ks in ms.items())}

    def get(self, unit: str | None, metric: str, key: str = "") -> int:
        ms = self.v.get(unit)
        return ms[metric].get(key, 0) if ms is not None and metric in ms else 0

    def keys(self, unit: str | None, metric: str) -> dict[str, int]:
        ms = self.v.get(unit)
        return dict(ms[metric]) if ms is not None and metric in ms else {}


def build_tables(dash: Dashboard, region: Region, insts: list[str], f: Filters,  # noqa: C901, PLR0915
                 data: dict[str, Any]) -> dict[str, Table]:
    tz = ZoneInfo(dash.tz)
    names = {i: region.members[i].name for i in insts}
    drill = f.institution is not None
    byinst = _Sums(data["period"], lambda inst, dept: inst)
    byunit = _Sums(data["period"], (lambda inst, dept: dept) if drill else (lambda inst, dept: inst))
    if drill:
        wanted = [f.department] if f.department else [d for d, _ in region.members[f.institution].departments]
        seen = set().union(*(byunit.units(p) for p in ("rg.", "ms.", "pr.", "bs.")))
        units = list(dict.fromkeys([*wanted, *sorted(u for u in seen if u not in wanted)]))
        if f.department:
            units = [f.department]

        def label(u: str) -> str:
            return region.department_name(u) if u else "-"
    else:
        units = list(insts)

        def label(u: str) -> str:
            return names.get(u, u)
    out: dict[str, Table] = {}
    totals = data["totals"]

    def when(us: int | None) -> str | None:
        return datetime.fromtimestamp(us / 1e6, tz).strftime("%Y-%m-%d %H:%M") if us else None

    # -- institutions connected
    tb = Table("institutions", ["institution", "name", "tier", "county", "consortium", "last_record", "last_upload"])
    for i in insts:
        m = region.members[i]
        tb.rows.append({"institution": i, "name": m.name, "tier": m.tier, "county": m.county,
                        "consortium": m.consortium, "last_record": when(data["last"].get(i)),
                        "last_upload": when(data["uploads"].get(i))})
    by_tier: dict[str, int] = defaultdict(int)
    for i in insts:
        by_tier[region.members[i].tier] += 1
    connected = sum(1 for i in insts if i in data["last"] or i in data["uploads"])
    totals["institutions"] = {"members": len(insts), "connected": connected, "by_tier": dict(by_tier)}
    out["institutions"] = tb

    # -- records held (at the end of the period) and new in the period
    tb = Table("records", ["institution", "name", *HELD, "new_in_period"])
    sums = dict.fromkeys([*HELD, "new_in_period"], 0)
    for i in insts:
        row: dict[str, Any] = {"institution": i, "name": names[i]}
        for col, types in HELD.items():
            row[col] = sum(data["held"].get((i, ty, "held"), 0) for ty in types)
        row["new_in_period"] = sum(data["held"].get((i, ty, "new"), 0) for types in HELD.values() for ty in types)
        for k in sums:
            sums[k] += row[k]
        tb.rows.append(row)
    tb.totals = {"institution": "total", "name": "", **sums}
    totals["records"] = sums
    out["records"] = tb

    # -- EMPI linkage (a snapshot, counted whole)
    snap = data["snapshot"]
    tb = Table("empi", ["institution", "name", "patient_records", "persons", "records_per_person"])
    pt = 0
    for i in insts:
        p, n = snap.get(("empi.patients", i), 0), snap.get(("empi.persons", i), 0)
        pt += p
        tb.rows.append({"institution": i, "name": names[i], "patient_records": p, "persons": n,
                        "records_per_person": round(p / n, 3) if n else None})
    whole = set(insts) == set(region.members) and not drill
    persons = snap.get(("empi.persons.region", ""), 0) if whole else None
    tb.totals = {"institution": "total", "name": "", "patient_records": pt, "persons": persons,
                 "records_per_person": round(pt / persons, 3) if persons else None}
    totals["empi"] = {"patient_records": pt, "persons": persons,
                      "records_per_person": tb.totals["records_per_person"],
                      "review_backlog": snap.get(("empi.backlog", ""), 0)}
    out["empi"] = tb

    # -- mutual recognition
    def rec_row(s: _Sums, u: str | None) -> dict[str, Any]:
        checked, found = s.get(u, "rg.checked"), s.get(u, "rg.found")
        reminded, adopted = s.get(u, "rg.reminded"), s.get(u, "rg.adopted")
        declined = sum(s.keys(u, "rg.declined").values())
        return {"checked": checked, "found": found, "retrieval_rate": rate(found, checked), "reminded": reminded,
                "opened": s.get(u, "rg.opened"), "adopted": adopted, "declined": declined,
                "recognition_rate": rate(adopted, reminded), "savings_yuan": yuan(s.get(u, "rg.savings"))}
    cols = ["unit", "name", "checked", "found", "retrieval_rate", "reminded", "opened", "adopted", "declined",
            "recognition_rate", "savings_yuan"]
    tb = Table("recognition", cols, [{"unit": u, "name": label(u), **rec_row(byunit, u)} for u in units])
    tb.totals = {"unit": "total", "name": "", **rec_row(byunit, None)}
    totals["recognition"] = tb.totals
    out["recognition"] = tb
    items = byunit.keys(None, "rg.item.adopted")
    savings = byunit.keys(None, "rg.item.savings")
    tb = Table("recognition_items", ["item", "name", "adopted", "savings_yuan"])
    for k, n in sorted(items.items(), key=lambda x: (-x[1], x[0]))[:10]:
        tb.rows.append({"item": k, "name": dash.item_label(k), "adopted": n, "savings_yuan": yuan(savings.get(k, 0))})
    out["recognition_items"] = tb
    reasons = byunit.keys(None, "rg.declined")
    n_declined = sum(reasons.values())
    tb = Table("decline_reasons", ["reason", "count", "share"])
    for k, n in sorted(reasons.items(), key=lambda x: (-x[1], x[0])):
        tb.rows.append({"reason": k, "count": n, "share": rate(n, n_declined)})
    out["decline_reasons"] = tb

    # -- medication safety
    def ms_row(s: _Sums, u: str | None) -> dict[str, Any]:
        sev = s.keys(u, "ms.finding")
        interrupting, overridden = s.get(u, "ms.finding.int"), s.get(u, "ms.overridden.int")
        return {"checks": s.get(u, "ms.checked"), "findings": sum(sev.values()),
                **{k: sev.get(k, 0) for k in SEVERITIES}, "interrupting": interrupting,
                "overridden": sum(s.keys(u, "ms.overridden").values()), "overridden_interrupting": overridden,
                "override_rate": rate(overridden, interrupting), "accepted": sum(s.keys(u, "ms.accepted").values())}
    cols = ["unit", "name", "checks", "findings", *SEVERITIES, "interrupting", "overridden",
            "overridden_interrupting", "override_rate", "accepted"]
    tb = Table("medsafety", cols, [{"unit": u, "name": label(u), **ms_row(byunit, u)} for u in units])
    tb.totals = {"unit": "total", "name": "", **ms_row(byunit, None)}
    totals["medsafety"] = tb.totals
    out["medsafety"] = tb

    # -- prescription pre-review
    def pr_row(s: _Sums, u: str | None) -> dict[str, Any]:
        submitted = s.get(u, "pr.submitted")
        interventions = s.get(u, "pr.returned") + s.get(u, "pr.double-sign-required")
        decided, wait = s.get(u, "pr.decided"), s.get(u, "pr.wait.s")
        return {"submitted": submitted, "auto_passed": s.get(u, "pr.auto-passed"), "queued": s.get(u, "pr.queued"),
                "passed": s.get(u, "pr.passed"), "returned": s.get(u, "pr.returned"),
                "double_sign_required": s.get(u, "pr.double-sign-required"), "interventions": interventions,
                "intervention_rate": rate(interventions, submitted), "decided": decided,
                "mean_turnaround_min": round(wait / decided / 60, 2) if decided else None,
                "timed_out": s.get(u, "pr.timed-out")}
    cols = ["unit", "name", "submitted", "auto_passed", "queued", "passed", "returned", "double_sign_required",
            "interventions", "intervention_rate", "decided", "mean_turnaround_min", "timed_out"]
    tb = Table("prereview", cols, [{"unit": u, "name": label(u), **pr_row(byunit, u)} for u in units])
    tb.totals = {"unit": "total", "name": "", **pr_row(byunit, None)}
    totals["prereview"] = tb.totals
    out["prereview"] = tb

    # -- bedside verification
    def bs_row(s: _Sums, u: str | None) -> dict[str, Any]:
        k = s.keys(u, "bs.scan")
        scans = sum(k.values())
        return {"scans": scans, "passed": k.get("passed", 0), "recorded": k.get("recorded", 0),
                "blocked": k.get("blocked", 0), "blocked_rate": rate(k.get("blocked", 0), scans)}
    tb = Table("bedside", ["unit", "name", "scans", "passed", "recorded", "blocked", "blocked_rate"],
               [{"unit": u, "name": label(u), **bs_row(byunit, u)} for u in units])
    tb.totals = {"unit": "total", "name": "", **bs_row(byunit, None)}
    totals["bedside"] = tb.totals
    out["bedside"] = tb

    # -- consent (per institution: grants have no department)
    def cs_row(s: _Sums, u: str | None, btg_open: int) -> dict[str, Any]:
        k = s.keys(u, "cs.request")
        return {"requests": sum(k.values()), **{g.replace("-", "_"): k.get(g, 0) for g in GRANT_KINDS},
                "break_glass": s.get(u, "cs.btg"), "break_glass_unreviewed": btg_open}
    cols = ["institution", "name", "requests", "code", "qr", "in_person", "break_glass", "break_glass_unreviewed"]
    tb = Table("consent", cols, [{"institution": i, "name": names[i], **cs_row(byinst, i, data["btg"].get(i, 0))}
                                 for i in insts])
    tb.totals = {"institution": "total", "name": "", **cs_row(byinst, None, sum(data["btg"].get(i, 0) for i in insts))}
    totals["consent"] = tb.totals
    out["consent"] = tb

    # -- data quality (per institution: uploads have no department)
    all_reasons = sorted(byinst.keys(None, "dq.reason"))
    cols = ["institution", "name", "uploads", "read", "quarantined", "quarantine_rate", *(f"reason:{r}" for r in all_reasons)]

    def dq_row(s: _Sums, u: str | None) -> dict[str, Any]:
        rs = s.keys(u, "dq.reason")
        read, q = s.get(u, "dq.read"), s.get(u, "dq.quarantined")
        return {"uploads": s.get(u, "dq.uploads"), "read": read, "quarantined": q, "quarantine_rate": rate(q, read),
                **{f"reason:{r}": rs.get(r, 0) for r in all_reasons}}
    tb = Table("quality", cols, [{"institution": i, "name": names[i], **dq_row(byinst, i)} for i in insts])
    tb.totals = {"institution": "total", "name": "", **dq_row(byinst, None)}
    totals["quality"] = tb.totals
    out["quality"] = tb

    # -- ledger (the region's, the same for every view)
    led = data["ledger"] or {}
    lv = led.get("last_verification") or {}
    rows = [("size", led.get("size")), ("checkpoints", len(led.get("checkpoints") or [])),
            ("last_verification", when(lv.get("finished") or lv.get("started"))),
            ("last_verification_ok", lv.get("ok")), ("last_verification_size", lv.get("size")),
            ("witnesses", len(led.get("witnesses") or []))]
    rows += [(f"witness:{w.get('name')}", w.get("cosigned_size")) for w in led.get("witnesses") or []]
    out["ledger"] = Table("ledger", ["figure", "value"], [{"figure": k, "value": v} for k, v in rows])
    totals["ledger"] = {k: v for k, v in rows if not k.startswith("witness:")}
    return out
