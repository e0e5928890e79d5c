"""The leaders' dashboard (issue 10) through the real HTTP app: every indicator equals a count
taken independently from the raw records (SQL over the store and event tables, the recognition
module's own rates), the filters and the drill-down, per-role views, CSV export, the incremental
refresh equal to a full recount, and no patient's data in any answer."""

from __future__ import annotations

import csv
import io
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import PASSWORD
from dashboardkit import TZ, Region, build
from fastapi.testclient import TestClient
from sqlalchemy import distinct, func, select

from healthlink.accounts import add_user
from healthlink.db import tables as t
from healthlink.runtime import Platform


@pytest.fixture(scope="module")
def region(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Region:
    reg = build(platform, tmp_path_factory.mktemp("dash"))
    # the kit stamps its events at hours of yesterday and today, like an import of past events:
    # an incremental refresh counts only what is stamped after its mark, so recount everything
    platform.dashboard.refresh(full=True)
    return reg


def login(client: TestClient, platform: Platform, role: str, institution: str | None) -> dict[str, str]:
    username = f"dash-{role}-{uuid.uuid4().hex[:8]}"
    add_user(platform.db, username=username, password=PASSWORD, display_name=username, roles=[role],
             institution_id=institution, practitioner_id=f"prac-{uuid.uuid4().hex[:10]}")
    r = client.post("/api/auth/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture(scope="module")
def leader(client: TestClient, platform: Platform, region: Region) -> dict[str, str]:
    return login(client, platform, "health_commission_leader", None)


def period(reg: Region) -> dict[str, str]:
    return {"since": reg.since.isoformat(), "until": reg.until.isoformat()}


def bounds(reg: Region) -> tuple[int, int]:
    """The period in µs, computed here from the calendar (not by the dashboard's day numbers)."""
    lo = datetime(reg.since.year, reg.since.month, reg.since.day, tzinfo=TZ)
    end = reg.until + timedelta(days=1)
    hi = datetime(end.year, end.month, end.day, tzinfo=TZ)
    return int(lo.timestamp() * 1e6), int(hi.timestamp() * 1e6)


def row(table: dict, key: str, col: str = "institution") -> dict:
    found = [r for r in table["rows"] if r[col] == key]
    assert len(found) == 1, (key, table["rows"])
    return found[0]


def view(client: TestClient, headers: dict, **params: str) -> dict:
    r = client.get("/api/dashboard", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


# ------------------------------------------------------------------ indicators = raw counts
def test_records_held_equal_the_stored_resources_of_each_institution(client, platform, region, leader):
    v = view(client, leader, **period(region), county=region.county)
    r = t.resource
    with platform.db.read() as conn:
        def held(inst: str, *types: str) -> int:
            return conn.execute(select(func.count()).select_from(r).where(
                r.c.institution_id == inst, r.c.res_type.in_(types), r.c.deleted.is_(False))).scalar_one()
        for inst in (region.lead, region.town):
            got = row(v["tables"]["records"], inst)
            assert got["patients"] == held(inst, "Patient")
            assert got["visits"] == held(inst, "Encounter")
            assert got["prescriptions"] == held(inst, "MedicationRequest")
            assert got["results"] == held(inst, "Observation", "DiagnosticReport")
    lead = row(v["tables"]["records"], region.lead)
    # what the kit uploaded: 3 good Patients (one refused), 2 visits, 4 prescriptions, 5 results less one deleted
    assert (lead["patients"], lead["visits"], lead["prescriptions"], lead["results"]) == (3, 2, 4, 4)
    assert v["totals"]["records"]["patients"] == 4  # the county: lead and town
    inst = row(v["tables"]["institutions"], region.lead)
    assert inst["tier"] == "county" and inst["county"] == region.county and inst["last_upload"]
    assert v["totals"]["institutions"] == {"members": 2, "connected": 2, "by_tier": {"county": 1, "township": 1}}


def test_region_totals_equal_counts_over_the_whole_store(client, platform, region, leader):
    platform.dashboard.refresh()
    v = view(client, leader, **period(region))
    r, pl = t.resource, t.person_link
    with platform.db.read() as conn:
        members = {i["id"] for i in v["institutions"]}
        patients = conn.execute(select(func.count()).select_from(r).where(
            r.c.res_type == "Patient", r.c.deleted.is_(False), r.c.institution_id.in_(members))).scalar_one()
        persons = conn.execute(select(func.count(distinct(pl.c.person_id)))).scalar_one()
        links = conn.execute(select(func.count()).select_from(pl).where(pl.c.institution_id.in_(members))).scalar_one()
    assert v["totals"]["records"]["patients"] == patients
    assert v["totals"]["empi"]["persons"] == persons
    assert v["totals"]["empi"]["patient_records"] == links


def test_recognition_figures_equal_the_events_and_the_recognition_rates(client, platform, region, leader):
    v = view(client, leader, **period(region), institution=region.lead)
    lo, hi = bounds(region)
    e = t.recognition_event
    with platform.db.read() as conn:
        def n(kind: str, *extra) -> int:  # noqa: ANN002
            return conn.execute(select(func.count()).select_from(e).where(
                e.c.institution_id == region.lead, e.c.kind == kind, e.c.at >= lo, e.c.at < hi, *extra)).scalar_one()
        lines = conn.execute(select(func.count(distinct(e.c.check_id))).where(
            e.c.institution_id == region.lead, e.c.kind == "reminded", e.c.at >= lo, e.c.at < hi)).scalar_one()
        fen = conn.execute(select(func.sum(e.c.price_fen)).where(
            e.c.institution_id == region.lead, e.c.kind == "adopted", e.c.at >= lo, e.c.at < hi)).scalar_one()
        expected = (n("checked"), n("checked", e.c.found.is_(True)), lines, n("adopted"), n("declined"))
    tot = v["tables"]["recognition"]["totals"]
    assert (tot["checked"], tot["found"], tot["reminded"], tot["adopted"], tot["declined"]) == expected
    assert (tot["checked"], tot["found"], tot["reminded"], tot["adopted"], tot["declined"]) == (5, 4, 4, 3, 1)
    assert tot["savings_yuan"] == str(fen / 100).removesuffix(".0") == "335"
    assert tot["retrieval_rate"] == 0.8 and tot["recognition_rate"] == 0.75
    # the recognition module's own rates, computed its own way, agree
    from healthlink.access import Actor, RequestContext

    rates = platform.recognition.rates(RequestContext(actor=Actor.system("tests"), address="local"),
                                       since=region.since, until=region.until, institution_id=region.lead)["totals"]
    for k in ("checked", "found", "retrieval_rate", "reminded", "adopted", "declined", "recognition_rate",
              "savings_yuan", "opened"):
        assert tot[k] == rates[k], k
    # drill-down: the departments' rows add up to the institution
    internal = row(v["tables"]["recognition"], f"{region.lead}-internal", "unit")
    lab = row(v["tables"]["recognition"], f"{region.lead}-lab", "unit")
    assert (internal["checked"], lab["checked"]) == (4, 1)
    items = {r["item"]: r for r in v["tables"]["recognition_items"]["rows"]}
    assert items["cbc"]["adopted"] == 1 and items["ct-chest"]["savings_yuan"] == "300"
    assert v["tables"]["decline_reasons"]["rows"] == [{"reason": "emergency", "count": 1, "share": 1.0}]


def test_period_filter_leaves_out_events_before_it(client, region, leader):
    v = view(client, leader, **period(region), institution=region.other)
    assert v["tables"]["recognition"]["totals"]["checked"] == 1  # the day before the period is not counted
    assert v["tables"]["medsafety"]["totals"]["findings"] == 0
    wider = view(client, leader, since=(region.since - timedelta(days=1)).isoformat(),
                 until=region.until.isoformat(), institution=region.other)
    assert wider["tables"]["recognition"]["totals"]["checked"] == 2
    assert wider["tables"]["medsafety"]["totals"]["contraindicated"] == 1


def test_medication_safety_prereview_and_consent_equal_their_events(client, platform, region, leader):
    v = view(client, leader, **period(region), institution=region.lead)
    lo, hi = bounds(region)
    m, g, pe = t.medsafety_event, t.access_grant, t.prereview_event
    with platform.db.read() as conn:
        def ms(kind: str, *extra) -> int:  # noqa: ANN002
            return conn.execute(select(func.count()).select_from(m).where(
                m.c.institution_id == region.lead, m.c.kind == kind, m.c.at >= lo, m.c.at < hi, *extra)).scalar_one()
        grants = dict(conn.execute(select(g.c.kind, func.count()).where(
            g.c.institution_id == region.lead, g.c.created >= lo, g.c.created < hi).group_by(g.c.kind)).all())
        unreviewed = conn.execute(select(func.count()).select_from(g).where(
            g.c.institution_id == region.lead, g.c.kind == "break-glass", g.c.reviewed.is_(None))).scalar_one()
        pr = dict(conn.execute(select(pe.c.kind, func.count()).where(
            pe.c.institution_id == region.lead, pe.c.at >= lo, pe.c.at < hi).group_by(pe.c.kind)).all())
        raw = {"checks": ms("checked"), "findings": ms("finding"),
               "severities": (ms("finding", m.c.severity == "major"), ms("finding", m.c.severity == "moderate"),
                              ms("finding", m.c.severity == "minor")),
               "interrupting": ms("finding", m.c.interrupt.is_(True)),
               "overridden": ms("overridden", m.c.interrupt.is_(True)), "accepted": ms("accepted")}
    med = v["tables"]["medsafety"]["totals"]
    assert med["checks"] == raw["checks"] == 3
    assert med["findings"] == raw["findings"] == 4
    assert (med["major"], med["moderate"], med["minor"]) == raw["severities"] == (2, 1, 1)
    assert med["interrupting"] == raw["interrupting"] == 2
    assert med["overridden_interrupting"] == raw["overridden"] == 1
    assert med["override_rate"] == 0.5 and med["accepted"] == raw["accepted"] == 1
    pre = v["tables"]["prereview"]["totals"]
    assert pre["submitted"] == pr["submitted"] == 3
    assert pre["interventions"] == pr.get("returned", 0) + pr.get("double-sign-required", 0) == 1
    assert pre["intervention_rate"] == round(1 / 3, 4)
    assert pre["decided"] == 2 and pre["mean_turnaround_min"] == 15.0  # (10 + 20) / 2 minutes
    cons = row(v["tables"]["consent"], region.lead)
    assert cons["requests"] == grants["code"] + grants["qr"] == 3
    assert cons["break_glass"] == grants["break-glass"] == 2
    assert cons["break_glass_unreviewed"] == unreviewed == 1


def test_quarantine_rate_equals_the_quarantined_records_of_the_uploads(client, platform, region, leader):
    v = view(client, leader, **period(region), county=region.county)
    q, u = t.ingest_quarantine, t.ingest_upload
    with platform.db.read() as conn:
        reasons = dict(conn.execute(select(q.c.reason, func.count()).where(q.c.institution_id == region.lead)
                                    .group_by(q.c.reason)).all())
        uploads = conn.execute(select(func.count()).select_from(u).where(u.c.institution_id == region.lead)).scalar_one()
    got = row(v["tables"]["quality"], region.lead)
    read = 1 + 3 + 2 + 4 + 5  # the records in the kit's files
    assert got["uploads"] == uploads == 1 and got["read"] == read
    assert got["quarantined"] == sum(reasons.values()) == 1
    assert got["reason:future-date"] == reasons["future-date"] == 1
    assert got["quarantine_rate"] == round(1 / read, 4)
    assert row(v["tables"]["quality"], region.town)["quarantine_rate"] == 0.0


def test_ledger_figures_are_the_ledgers_status(client, platform, region, leader):
    v = view(client, leader, **period(region), county=region.county)
    st = platform.ledger_status()
    figures = {r["figure"]: r["value"] for r in v["tables"]["ledger"]["rows"]}
    assert figures["witnesses"] == len(st["witnesses"])
    assert 0 <= figures["size"] <= platform.ledger_status()["size"]


# ------------------------------------------------------------------ refresh
def test_incremental_refresh_counts_new_events_and_equals_a_full_recount(client, platform, region, leader):
    before = view(client, leader, **period(region), institution=region.other)["tables"]["recognition"]["totals"]
    with platform.db.write() as conn:  # stamped now, as the capabilities stamp their events
        conn.execute(t.recognition_event.insert(), [{
            "id": uuid.uuid4().hex, "at": int(time.time() * 1e6), "kind": "checked", "check_id": uuid.uuid4().hex,
            "channel": "api", "institution_id": region.other, "patient_id": region.patients[0], "found": True}])
    took = client.post("/api/dashboard/refresh", headers=leader)
    assert took.status_code == 200 and "recognition" in took.json()["refreshed"]
    after = view(client, leader, **period(region), institution=region.other)["tables"]["recognition"]["totals"]
    assert after["checked"] == before["checked"] + 1 and after["found"] == before["found"] + 1
    d = t.dashboard_daily
    with platform.db.read() as conn:
        incremental = sorted(tuple(r) for r in conn.execute(select(d)))
    platform.dashboard.refresh(full=True)
    with platform.db.read() as conn:
        full = sorted(tuple(r) for r in conn.execute(select(d)))
    assert incremental == full


# ------------------------------------------------------------------ filters and errors
def test_bad_filters_answer_400_naming_the_field(client, region, leader):
    for params, field in (({"since": "2026-02-30"}, "since"), ({"tier": "moon"}, "tier"),
                          ({"county": "nowhere"}, "county"), ({"institution": "no-such-org"}, "institution"),
                          ({"department": "x"}, "department"),
                          ({"since": "2026-05-02", "until": "2026-05-01"}, "since")):
        r = client.get("/api/dashboard", params=params, headers=leader)
        assert r.status_code == 400, (params, r.text)
        assert field in r.text
    assert client.get("/api/dashboard/tables/nope.csv", headers=leader).status_code == 400
    assert client.get("/api/dashboard").status_code == 401


def test_tier_and_county_filters_narrow_the_institutions(client, region, leader):
    v = view(client, leader, **period(region), county=region.county, tier="township")
    assert [i["id"] for i in v["institutions"]] == [region.town]
    assert region.county in v["choices"]["counties"]


def test_every_table_exports_as_csv_with_the_same_figures(client, region, leader):
    params = {**period(region), "institution": region.lead}
    v = view(client, leader, **params)
    for name, table in v["tables"].items():
        r = client.get(f"/api/dashboard/tables/{name}.csv", params=params, headers=leader)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(r.text.removeprefix("\ufeff"))))
        assert rows[0] == table["columns"], name
        assert len(rows) == 1 + len(table["rows"]) + (1 if table["totals"] else 0), name
    r = client.get("/api/dashboard/tables/recognition.csv", params=params, headers=leader)
    total = list(csv.DictReader(io.StringIO(r.text.removeprefix("\ufeff"))))[-1]
    assert total["unit"] == "total" and total["checked"] == str(v["tables"]["recognition"]["totals"]["checked"])


# ------------------------------------------------------------------ who sees what
def test_manager_of_a_consortium_lead_sees_the_consortium_and_no_other_institution(client, platform, region):
    h = login(client, platform, "institution_manager", region.lead)
    v = view(client, h, **period(region))
    assert {i["id"] for i in v["institutions"]} == {region.lead, region.town}
    assert v["view"] == "institution"
    assert client.get("/api/dashboard", params={"institution": region.other}, headers=h).status_code == 403
    assert view(client, h, **period(region), institution=region.town)["level"] == "institution"


def test_manager_of_a_township_sees_only_its_own_institution(client, platform, region):
    h = login(client, platform, "institution_manager", region.town)
    v = view(client, h, **period(region))
    assert [i["id"] for i in v["institutions"]] == [region.town]
    assert client.get("/api/dashboard", params={"institution": region.lead}, headers=h).status_code == 403
    assert client.get("/api/dashboard/tables/records.csv", params={"institution": region.lead},
                      headers=h).status_code == 403


def test_no_answer_of_any_drill_level_carries_patient_data(client, platform, region, leader):
    r = t.resource
    with platform.db.read() as conn:
        ids = set(conn.execute(select(r.c.res_id).where(r.c.institution_id.in_(region.members),
                                                        r.c.res_type != "Organization")).scalars())
        persons = set(conn.execute(select(t.person_link.c.person_id).where(
            t.person_link.c.patient_id.in_(region.patients))).scalars())
    assert region.patients and ids
    for params in ({}, {"county": region.county}, {"institution": region.lead},
                   {"institution": region.lead, "department": f"{region.lead}-internal"}):
        text = client.get("/api/dashboard", params={**period(region), **params}, headers=leader).text
        for name in ("records", "recognition", "medsafety", "consent", "quality", "empi"):
            text += client.get(f"/api/dashboard/tables/{name}.csv", params={**period(region), **params},
                               headers=leader).text
        leaked = [i for i in ids | persons if f'"{i}"' in text or f",{i}," in text]
        assert not leaked, (params, leaked[:3])
        assert "Dashpatient" not in text  # no patient's name


# ------------------------------------------------------------------ pages
def sign_in(app, platform: Platform, role: str, institution: str | None) -> TestClient:  # noqa: ANN001
    import re

    c = TestClient(app, base_url="http://testserver")
    username = f"dash-web-{role}-{uuid.uuid4().hex[:8]}"
    add_user(platform.db, username=username, password=PASSWORD, display_name=username, roles=[role],
             institution_id=institution, practitioner_id=f"prac-{uuid.uuid4().hex[:10]}")
    page = c.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    r = c.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token, "next": "/"},
               follow_redirects=False)
    assert r.status_code == 303, r.text
    return c


def test_dashboard_page_shows_the_figures_filters_and_drill_links_in_both_languages(app, platform, region):
    from healthlink.web.session import LANG_COOKIE

    c = sign_in(app, platform, "health_commission_leader", None)
    c.cookies.set(LANG_COOKIE, "en")
    r = c.get("/dashboard", params={**period(region), "county": region.county})
    assert r.status_code == 200
    html = r.text
    assert 'href="/dashboard"' in html and "Dashboard" in html  # the nav link
    assert 'data-k="patients"><span>Patient files</span><strong>4</strong>' in html
    assert f"institution={region.lead}" in html  # a row drills down to the institution
    assert "/static/echarts.min.js" in html and 'id="chart-trend"' in html
    assert f"/dashboard/export/records.csv?since={region.since.isoformat()}" in html
    c.cookies.set(LANG_COOKIE, "zh-CN")
    zh = c.get("/dashboard", params={**period(region), "institution": region.lead}).text
    assert "数据驾驶舱" in zh and "检查检验结果互认" in zh and "互认率" in zh
    assert f"department={region.lead}-internal" in zh  # the next level: departments
    bad = c.get("/dashboard", params={"since": "someday"})
    assert bad.status_code == 400 and "since" in bad.text and "Traceback" not in bad.text


def test_page_csv_export_has_the_pages_labels_and_figures(app, platform, region):
    from healthlink.web.session import LANG_COOKIE

    c = sign_in(app, platform, "health_commission_leader", None)
    c.cookies.set(LANG_COOKIE, "zh-CN")
    r = c.get("/dashboard/export/recognition.csv", params={**period(region), "institution": region.lead})
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text.removeprefix("\ufeff"))))
    assert rows[0][:3] == ["单位", "名称", "检查的开单数"]
    internal = next(x for x in rows if x[0] == f"{region.lead}-internal")
    assert internal[2] == "4"


def test_staff_without_a_dashboard_role_get_the_error_page_and_no_nav_link(app, platform, region):
    from healthlink.web.session import LANG_COOKIE

    c = sign_in(app, platform, "doctor", region.lead)
    c.cookies.set(LANG_COOKIE, "en")
    assert 'href="/dashboard"' not in c.get("/").text
    r = c.get("/dashboard")
    assert r.status_code == 403 and "health-commission leaders and institution managers" in r.text
    assert c.get("/dashboard/export/records.csv").status_code == 403
    town = sign_in(app, platform, "institution_manager", region.town)
    town.cookies.set(LANG_COOKIE, "en")
    r = town.get("/dashboard", params={"institution": region.lead})
    assert r.status_code == 403 and "own institution" in r.text


# ------------------------------------------------------------------ long periods: whole months
def test_segments_read_whole_months_from_the_monthly_rows():
    from datetime import date

    from healthlink.dashboard.aggregate import day_date
    from healthlink.dashboard.aggregate import day_number as n
    from healthlink.dashboard.service import segments

    def names(lo: date, hi: date) -> list[tuple[str, str, str, int]]:
        return [(tb.name.removeprefix("dashboard_"), day_date(a).isoformat(), day_date(b).isoformat(), sign)
                for tb, a, b, sign in segments(n(lo), n(hi))]
    assert names(date(2026, 3, 5), date(2026, 3, 12)) == [("daily", "2026-03-05", "2026-03-12", 1)]
    # most of March: the month less the days left out
    assert names(date(2026, 3, 5), date(2026, 3, 20)) == [
        ("monthly", "2026-03-01", "2026-03-01", 1), ("daily", "2026-03-01", "2026-03-04", -1),
        ("daily", "2026-03-21", "2026-03-31", -1)]
    assert names(date(2026, 1, 20), date(2026, 4, 3)) == [
        ("daily", "2026-01-20", "2026-01-31", 1), ("monthly", "2026-02-01", "2026-02-01", 1),
        ("monthly", "2026-03-01", "2026-03-01", 1), ("daily", "2026-04-01", "2026-04-03", 1)]
    assert names(date(2026, 2, 1), date(2026, 2, 28)) == [("monthly", "2026-02-01", "2026-02-01", 1)]
    assert names(date(2025, 12, 4), date(2026, 1, 31)) == [
        ("monthly", "2025-12-01", "2025-12-01", 1), ("daily", "2025-12-01", "2025-12-03", -1),
        ("monthly", "2026-01-01", "2026-01-01", 1)]
    # every day of a year is counted exactly once, whatever the split
    lo, hi = date(2025, 12, 4), date(2026, 12, 3)
    cover: dict[int, int] = {}
    for tb, a, b, sign in segments(n(lo), n(hi)):
        days = range(a, b + 1) if tb.name == "dashboard_daily" else range(a, n((day_date(a).replace(day=28) + timedelta(days=4)).replace(day=1)))
        for x in days:
            cover[x] = cover.get(x, 0) + sign
    assert {x for x, c in cover.items() if c} == set(range(n(lo), n(hi) + 1))
    assert set(cover.values()) <= {0, 1}


def test_a_long_period_equals_the_raw_events_and_is_drawn_per_month(client, platform, region, leader):
    from dashboardkit import us

    today = region.until
    old_month = (today.replace(day=1) - timedelta(days=1)).replace(day=1)  # the whole month before this one
    rows = [{"id": uuid.uuid4().hex, "at": us(old_month + timedelta(days=k), 10), "kind": "checked",
             "check_id": uuid.uuid4().hex, "channel": "api", "institution_id": region.other,
             "patient_id": region.patients[0], "found": k % 2 == 0} for k in (0, 3, 9, 20)]
    with platform.db.write() as conn:
        conn.execute(t.recognition_event.insert(), rows)
    platform.dashboard.refresh(full=True)  # stamped in the past: only a full recount sees them
    since = old_month - timedelta(days=40)  # a partial month, the whole month, this month: > 62 days
    v = view(client, leader, since=since.isoformat(), until=today.isoformat(), institution=region.other)
    lo = int(datetime(since.year, since.month, since.day, tzinfo=TZ).timestamp() * 1e6)
    e = t.recognition_event
    with platform.db.read() as conn:
        checked = conn.execute(select(func.count()).select_from(e).where(
            e.c.institution_id == region.other, e.c.kind == "checked", e.c.at >= lo)).scalar_one()
        found = conn.execute(select(func.count()).select_from(e).where(
            e.c.institution_id == region.other, e.c.kind == "checked", e.c.found.is_(True), e.c.at >= lo)).scalar_one()
    tot = v["tables"]["recognition"]["totals"]
    assert (tot["checked"], tot["found"]) == (checked, found)
    assert v["series"]["grain"] == "month" and old_month.isoformat()[:7] in v["series"]["days"]
    month = v["series"]["days"].index(old_month.isoformat()[:7])
    assert v["series"]["rg.checked"][month] == 4
