"""The leaders' dashboard in a real browser (issue 10): the health-commission leader opens the
dashboard, filters to one county, drills down to an institution (charts drawn by the vendored
ECharts), exports a table as CSV and checks what the file holds; the institution manager's phone
layout.  Screenshots go to docs/screenshots/dashboard-*.png."""

from __future__ import annotations

import csv
import io

import httpx
import pytest
from test_browser import DESKTOP, PHONE, chromium, shot, sign_in  # noqa: F401  (fixtures)

from healthlink.demo import DEMO_PASSWORD
from healthlink.demogen import Options, load_region
from healthlink.demogen.load import seed_demo
from healthlink.demogen.replay import replay
from healthlink.runtime import Platform

pytestmark = pytest.mark.browser

COUNTY, INSTITUTION = "称多县", "chenduo-county"


@pytest.fixture(scope="module")
def dashboard_server(live_server: str, platform: Platform) -> str:
    """The demo region's directory and logins, a small generated region with a replayed month of
    ordering (mutual recognition), counted into the dashboard."""
    seed_demo(platform)
    load_region(platform, Options(patients=150, seed=10), resume=True)
    replay(platform, days=30, orders=150)
    platform.dashboard.refresh(full=True)  # the replay stamps its events over the past month
    return live_server


def test_leader_filters_to_a_county_drills_to_an_institution_and_exports_csv(dashboard_server, chromium, tmp_path):  # noqa: F811
    base = dashboard_server
    ctx = chromium.new_context(viewport=DESKTOP, locale="zh-CN", accept_downloads=True)
    page = ctx.new_page()
    sign_in(page, base, "leader")
    page.click("nav >> text=数据驾驶舱")
    page.wait_for_url(f"{base}/dashboard")
    assert page.locator("h1").inner_text() == "数据驾驶舱"
    # ECharts drew every chart into a canvas
    page.wait_for_function("window.healthlinkDashboardCharts && Object.keys(window.healthlinkDashboardCharts).length === 6")
    assert page.locator("#chart-records canvas").count() == 1
    connected = page.locator('.kpi[data-k="connected"] strong').inner_text()
    assert connected.endswith("/ 64") or int(connected.split("/")[1]) >= 64
    shot(page, "dashboard-region", full_page=False)

    # filter to one county
    page.select_option("select[name=county]", COUNTY)
    page.click("#dash-filters button.primary")
    page.wait_for_url(f"{base}/dashboard?*county=*")
    names = page.locator("#table-institutions tbody tr td[data-col=institution]").all_inner_texts()
    assert INSTITUTION in names and "yushu-peoples" not in names

    # drill down to the county hospital: its departments become the rows
    page.click(f"#table-records a[href*='institution={INSTITUTION}']")
    page.wait_for_url(f"{base}/dashboard?*institution={INSTITUTION}*")
    assert page.locator("#dash-crumbs").inner_text().startswith("全区域")
    units = page.locator("#table-recognition tbody tr td[data-col=unit]").all_inner_texts()
    assert f"{INSTITUTION}-internal" in units
    page.wait_for_function("window.healthlinkDashboardCharts && window.healthlinkDashboardCharts.trend")
    shot(page, "dashboard-institution", full_page=False)

    # export the recognition table: the file holds the page's figures
    with page.expect_download() as dl:
        page.click("#table-recognition a[data-csv=recognition]")
    path = tmp_path / "recognition.csv"
    dl.value.save_as(path)
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    assert rows[0][:4] == ["单位", "名称", "检查的开单数", "查到结果"]
    tok = httpx.post(f"{base}/api/auth/login", json={"username": "leader", "password": DEMO_PASSWORD}).json()
    api = httpx.get(f"{base}/api/dashboard", params={"institution": INSTITUTION},
                    headers={"Authorization": f"Bearer {tok['access_token']}"}).json()
    want = api["tables"]["recognition"]
    assert len(rows) == 1 + len(want["rows"]) + 1  # header, departments, total
    assert rows[-1][0] == "total"
    assert rows[-1][2] == str(want["totals"]["checked"])
    shown = page.locator('#table-recognition tr.total td[data-col=checked]').inner_text()
    assert shown == rows[-1][2]

    # a chart exports as PNG through ECharts' getDataURL
    with page.expect_download() as png:
        page.click("button[data-png=trend]")
    assert png.value.suggested_filename == "dashboard-trend.png"
    ctx.close()


def test_manager_sees_the_consortium_on_a_phone(dashboard_server, chromium):  # noqa: F811
    base = dashboard_server
    ctx = chromium.new_context(viewport=PHONE, locale="zh-CN", is_mobile=True, has_touch=True)
    page = ctx.new_page()
    sign_in(page, base, "manager")
    page.goto(f"{base}/dashboard")
    options = page.locator("select[name=institution] option").all_inner_texts()
    assert any("称多县人民医院" in o for o in options) and not any("玉树州人民医院" in o for o in options)
    # phone layout: the figures are stacked two per row, tables become labelled cards
    boxes = [page.locator(".kpi").nth(i).bounding_box() for i in range(2)]
    assert boxes[0]["width"] < 200 and abs(boxes[0]["y"] - boxes[1]["y"]) < 2
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"] + 1
    shot(page, "dashboard-phone", full_page=False)
    ctx.close()
