"""The leaders' dashboard pages (issue 10; docs/dashboard.md):

* ``/dashboard`` — indicators of the region (or of what the actor's role shows), filters by
  period, tier, county and institution, drill-down region -> institution -> department, charts
  (vendored ECharts, drawn by ``static/dashboard.js`` from the page's JSON; each chart exports a
  PNG through ECharts' own ``getDataURL``) and tables;
* ``/dashboard/export/{table}.csv`` — any table as CSV with the page's column labels in the
  page's language.

A thin adapter: scope, filters and figures come from ``platform.dashboard``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from healthlink.dashboard import TABLES
from healthlink.errors import Forbidden, HealthLinkError
from healthlink.web import session
from healthlink.web.i18n import N_, translations
from healthlink.web.session import PageRoute, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)

TABLE_TITLES = {
    "institutions": N_("Institutions connected"), "records": N_("Records held"),
    "empi": N_("Master patient index"), "recognition": N_("Mutual recognition of results"),
    "recognition_items": N_("Most recognised items"), "decline_reasons": N_("Why results were not recognised"),
    "medsafety": N_("Medication safety alerts"), "prereview": N_("Prescription pre-review"),
    "bedside": N_("Bedside verification"), "consent": N_("Patient authorisations"),
    "quality": N_("Data quality of uploads"), "ledger": N_("Audit ledger"),
}
COLUMNS = {
    "institution": N_("Institution"), "unit": N_("Unit"), "name": N_("Unit name"), "tier": N_("Tier"),
    "county": N_("County"), "consortium": N_("Consortium"), "last_record": N_("Last record received"),
    "last_upload": N_("Last bulk upload"), "patients": N_("Patient files"), "visits": N_("Visits"),
    "prescriptions": N_("Prescriptions"), "results": N_("Results"), "new_in_period": N_("New in period"),
    "patient_records": N_("Patient records"), "persons": N_("Persons"),
    "records_per_person": N_("Records per person"), "checked": N_("Orders checked"),
    "found": N_("Result found"), "retrieval_rate": N_("Retrieval rate"), "reminded": N_("Reminded"),
    "opened": N_("Opened"), "adopted": N_("Adopted"), "declined": N_("Ordered anyway"),
    "recognition_rate": N_("Recognition rate"), "savings_yuan": N_("Savings (yuan)"), "item": N_("Item"),
    "reason": N_("Reason"), "count": N_("Count"), "share": N_("Share"), "checks": N_("Checks"),
    "findings": N_("Alerts"), "contraindicated": N_("Contraindicated"), "major": N_("Major"),
    "moderate": N_("Moderate"), "minor": N_("Minor"), "interrupting": N_("Interrupting alerts"),
    "overridden": N_("Overridden"), "overridden_interrupting": N_("Interrupting alerts overridden"),
    "override_rate": N_("Override rate"), "accepted": N_("Followed"), "submitted": N_("Submitted"),
    "auto_passed": N_("Passed automatically"), "queued": N_("Queued for a pharmacist"), "passed": N_("Passed"),
    "returned": N_("Returned"), "double_sign_required": N_("Double signature required"),
    "interventions": N_("Interventions"), "intervention_rate": N_("Intervention rate"),
    "decided": N_("Decided by a pharmacist"), "mean_turnaround_min": N_("Mean turnaround (min)"),
    "timed_out": N_("Timed out"), "scans": N_("Scans"), "recorded": N_("Recorded"), "blocked": N_("Blocked"),
    "blocked_rate": N_("Blocked rate"), "requests": N_("Authorisation requests"), "code": N_("By SMS code"),
    "qr": N_("By QR code"), "in_person": N_("In person"), "break_glass": N_("Break-the-glass"),
    "break_glass_unreviewed": N_("Break-the-glass not yet reviewed"), "uploads": N_("Uploads"),
    "read": N_("Records read"), "quarantined": N_("Quarantined"), "quarantine_rate": N_("Quarantine rate"),
    "figure": N_("Figure"), "value": N_("Value"), "size": N_("Entries"), "last_verification": N_("Last verification"),
    "last_verification_ok": N_("Last verification passed"), "last_verification_size": N_("Entries verified"),
    "witnesses": N_("Witnesses"), "total": N_("Total"), "checkpoints": N_("Checkpoints"),
}
TIERS = {"prefecture": N_("Prefecture hospital"), "county": N_("County hospital"),
         "township": N_("Township health centre")}
RATES = frozenset({"retrieval_rate", "recognition_rate", "override_rate", "intervention_rate", "quarantine_rate",
                   "blocked_rate", "share"})
CHART_LABELS = {
    "trend": N_("Activity per day"), "records": N_("Records held"), "recognition": N_("Retrieval and recognition rate"),
    "severity": N_("Alerts by severity"), "tiers": N_("Institutions by tier"), "quality": N_("Quarantine rate"),
    "rg.checked": N_("Orders checked"), "rg.adopted": N_("Results adopted"), "ms.checked": N_("Medication checks"),
    "ms.finding.int": N_("Interrupting alerts"), "pr.submitted": N_("Prescriptions to pre-review"),
    "held.created": N_("Records received"), "png": N_("Save as PNG"),
}


def _label(tr: Any, col: str) -> str:
    if col.startswith("reason:"):
        return f"{tr.gettext('Quarantined')}: {col.removeprefix('reason:')}"
    if col.startswith("witness:"):
        return f"{tr.gettext('Witness')} {col.removeprefix('witness:')}"
    return tr.gettext(COLUMNS.get(col, col))


def _args(request: Request) -> dict[str, str | None]:
    q = request.query_params
    return {k: (q.get(k) or None) for k in ("since", "until", "tier", "county", "institution", "department")}


def _cell(col: str, v: Any, tr: Any) -> str:
    if v is None:
        return "—"
    if col in RATES and isinstance(v, (int, float)):
        return f"{v * 100:.1f}%"
    if col == "tier" and v in TIERS:
        return tr.gettext(TIERS[v])
    if isinstance(v, bool):
        return tr.gettext("yes") if v else tr.gettext("no")
    return str(v)


@router.get("/dashboard")
def dashboard_page(request: Request) -> Response:
    ctx = session.context(request)
    dash = request.app.state.platform.dashboard
    _scope(dash, ctx)  # not a dashboard role: the error page (403)
    tr = translations(session.language(request))
    args = _args(request)
    error, status, view = None, 200, None
    try:
        f = dash.filters(ctx, **args)
    except Forbidden:
        raise Forbidden(NOT_YOURS) from None
    except HealthLinkError as exc:
        if exc.status != 400:
            raise
        error, status = exc.message, 400
        f = dash.filters(ctx)
    view = dash.view(ctx, f)
    query = view["filters"]

    def link(**over: str | None) -> str:
        q = {**query, **over}
        return "/dashboard?" + urlencode({k: v for k, v in q.items() if v})
    tables = []
    for name in TABLES:
        tb = view["tables"][name]
        rows = []
        for r in tb["rows"] + ([tb["totals"]] if tb["totals"] else []):
            total = r is tb["totals"]
            cells = []
            for c in tb["columns"]:
                text = tr.gettext("Total") if total and c in ("unit", "institution") else _cell(c, r.get(c), tr)
                href = None
                if not total and c == "name":
                    if "institution" in tb["columns"] and view["level"] == "region":
                        href = link(institution=r["institution"], department=None)
                    elif "unit" in tb["columns"] and view["level"] == "region":
                        href = link(institution=r["unit"], department=None)
                    elif "unit" in tb["columns"] and view["level"] == "institution" and r["unit"]:
                        href = link(department=r["unit"])
                if c == "figure" and name == "ledger":
                    text = _label(tr, r.get(c) or "")
                if c == "reason" and name == "decline_reasons":
                    text = _reason(r.get(c), session.language(request))
                cells.append({"col": c, "label": _label(tr, c), "text": text, "href": href})
            rows.append({"cells": cells, "total": total})
        tables.append({"name": name, "title": tr.gettext(TABLE_TITLES[name]),
                       "columns": [_label(tr, c) for c in tb["columns"]], "rows": rows,
                       "csv": f"/dashboard/export/{name}.csv?" + urlencode(query)})
    chart_data = {"series": view["series"], "tables": {k: view["tables"][k] for k in
                                                        ("records", "recognition", "quality", "institutions")},
                  "totals": view["totals"], "labels": {k: tr.gettext(v) for k, v in CHART_LABELS.items()},
                  "tiers": {k: tr.gettext(v) for k, v in TIERS.items()},
                  "rateLabels": [tr.gettext("Retrieval rate"), tr.gettext("Recognition rate")],
                  "columns": {k: tr.gettext(COLUMNS[k]) for k in ("patients", "visits", "prescriptions", "results",
                                                                 "contraindicated", "major", "moderate", "minor")}}
    if view["view"] == "region":
        region_name = tr.gettext("Whole region")
    elif len(view["choices"]["institutions"]) > 1:
        region_name = tr.gettext("Your institution and consortium")
    else:
        region_name = tr.gettext("Your institution")
    crumbs = [(region_name, link(institution=None, department=None, tier=None, county=None))]
    inst = next((i for i in view["choices"]["institutions"] if i["id"] == query.get("institution")), None)
    if inst:
        crumbs.append((inst["name"], link(department=None)))
    if query.get("department"):
        crumbs.append((next((d["name"] for d in view["departments"] if d["id"] == query["department"]),
                            query["department"]), link()))
    return render(request, "dashboard.html", status=status, ctx=ctx, error=error, view=view, q=query,
                  tables=tables, crumbs=crumbs, tiers=TIERS, kpis=_kpis(view["totals"], tr),
                  chart_json=orjson.dumps(chart_data, default=str).decode().replace("</", "<\\/"))


NOT_A_VIEWER = N_("The dashboard is for health-commission leaders and institution managers.")
NOT_YOURS = N_("You see your own institution (and the consortium it leads) only.")


def _scope(dash: Any, ctx: Any) -> None:
    try:
        dash.scope(ctx)
    except Forbidden:
        raise Forbidden(NOT_A_VIEWER) from None


def _reason(code: str | None, lang: str) -> str:
    from healthlink.recognition.service import DECLINE_REASONS

    zh, en = DECLINE_REASONS.get(code or "", (code or "-", code or "-"))
    return zh if lang == "zh-CN" else en


def _kpis(t: dict[str, Any], tr: Any) -> list[tuple[str, str, str]]:
    def pct(v: float | None) -> str:
        return "—" if v is None else f"{v * 100:.1f}%"
    inst, rec, empi = t["institutions"], t["records"], t["empi"]
    return [
        ("connected", tr.gettext("Institutions connected"), f"{inst['connected']} / {inst['members']}"),
        ("patients", tr.gettext("Patient files"), f"{rec['patients']:,}"),
        ("visits", tr.gettext("Visits"), f"{rec['visits']:,}"),
        ("prescriptions", tr.gettext("Prescriptions"), f"{rec['prescriptions']:,}"),
        ("results", tr.gettext("Results"), f"{rec['results']:,}"),
        ("persons", tr.gettext("Persons"), "—" if empi["persons"] is None else f"{empi['persons']:,}"),
        ("retrieval", tr.gettext("Retrieval rate"), pct(t["recognition"]["retrieval_rate"])),
        ("recognition", tr.gettext("Recognition rate"), pct(t["recognition"]["recognition_rate"])),
        ("savings", tr.gettext("Savings (yuan)"), t["recognition"]["savings_yuan"]),
        ("override", tr.gettext("Override rate"), pct(t["medsafety"]["override_rate"])),
        ("intervention", tr.gettext("Intervention rate"), pct(t["prereview"]["intervention_rate"])),
        ("quarantine", tr.gettext("Quarantine rate"), pct(t["quality"]["quarantine_rate"])),
        ("btg", tr.gettext("Break-the-glass not yet reviewed"), str(t["consent"]["break_glass_unreviewed"])),
        ("backlog", tr.gettext("EMPI review backlog"), str(empi["review_backlog"])),
    ]


@router.get("/dashboard/export/{name}.csv")
def dashboard_csv(request: Request, name: str) -> Response:
    ctx = session.context(request)
    dash = request.app.state.platform.dashboard
    tr = translations(session.language(request))
    _scope(dash, ctx)
    try:
        f = dash.filters(ctx, **_args(request))
    except Forbidden:
        raise Forbidden(NOT_YOURS) from None
    tb = dash.table(ctx, f, name)
    body = tb.to_csv({c: _label(tr, c) for c in tb.columns})
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Cache-Control": "no-store",
                             "Content-Disposition": f'attachment; filename="dashboard-{name}.csv"'})
