/* The leaders' dashboard charts (templates/dashboard.html; docs/dashboard.md).
   Reads the page's JSON (#dash-data), draws each chart with the vendored ECharts, and exports a
   chart as PNG with ECharts' own getDataURL.  A bar of an institution or department drills down. */
(function () {
  "use strict";
  var holder = document.getElementById("dash-data");
  if (!holder || !window.echarts) { return; }
  var data = JSON.parse(holder.textContent);
  var L = data.labels, zh = (document.documentElement.lang || "").indexOf("zh") === 0;
  var charts = {};

  function shortName(name) {  // "玉树州人民医院 Yushu Prefecture People's Hospital": one language
    var i = (name || "").indexOf(" ");
    if (i < 0) { return name || "-"; }
    return zh ? name.slice(0, i) : name.slice(i + 1);
  }
  function pct(v) { return v === null || v === undefined ? null : Math.round(v * 1000) / 10; }
  function unitKey(r) { return r.unit !== undefined ? r.unit : r.institution; }
  function drill(key) {
    var u = new URL(window.location.href), level = document.getElementById("dashboard").dataset.level;
    if (!key) { return; }
    if (level === "region") { u.searchParams.set("institution", key); u.searchParams.delete("department"); }
    else if (level === "institution") { u.searchParams.set("department", key); }
    else { return; }
    window.location.href = u.pathname + "?" + u.searchParams.toString();
  }
  function barChart(id, rows, series, opts) {
    opts = opts || {};
    var names = rows.map(function (r) { return shortName(r.name); });
    return {
      title: { text: L[id], left: "center", textStyle: { fontSize: 14 } },
      tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
      legend: { bottom: 0, type: "scroll" },
      grid: { left: 8, right: 16, top: 36, bottom: 36, containLabel: true },
      xAxis: { type: "value", max: opts.max, axisLabel: { formatter: opts.unit ? "{value}" + opts.unit : "{value}" } },
      yAxis: { type: "category", data: names, inverse: true, axisLabel: { width: 110, overflow: "truncate" } },
      series: series.map(function (s) {
        return { name: s.name, type: "bar", stack: opts.stack ? "all" : undefined,
                 data: rows.map(function (r) { return s.value(r); }) };
      })
    };
  }
  function pie(id, entries) {
    return {
      title: { text: L[id], left: "center", textStyle: { fontSize: 14 } },
      tooltip: { trigger: "item" }, legend: { bottom: 0, type: "scroll" },
      series: [{ type: "pie", radius: ["35%", "65%"], data: entries.filter(function (e) { return e.value > 0; }) }]
    };
  }
  var t = data.tables, s = data.series, T = data.totals, C = data.columns;
  var options = {
    trend: {
      title: { text: L.trend, left: "center", textStyle: { fontSize: 14 } },
      tooltip: { trigger: "axis" }, legend: { bottom: 0, type: "scroll" },
      grid: { left: 8, right: 16, top: 36, bottom: 48, containLabel: true },
      xAxis: { type: "category", data: s.days }, yAxis: [{ type: "value" }, { type: "value" }],
      series: ["rg.checked", "rg.adopted", "ms.checked", "ms.finding.int", "pr.submitted"].map(function (k) {
        return { name: L[k], type: "line", smooth: true, data: s[k] };
      }).concat([{ name: L["held.created"], type: "bar", yAxisIndex: 1, data: s["held.created"], itemStyle: { opacity: 0.35 } }])
    },
    records: barChart("records", t.records.rows, ["patients", "visits", "prescriptions", "results"].map(function (k) {
      return { name: C[k], value: function (r) { return r[k]; } };
    }), { stack: true }),
    recognition: barChart("recognition", t.recognition.rows.filter(function (r) { return r.checked > 0; }), [
      { name: data.rateLabels[0], value: function (r) { return pct(r.retrieval_rate); } },
      { name: data.rateLabels[1], value: function (r) { return pct(r.recognition_rate); } }], { unit: "%", max: 100 }),
    severity: pie("severity", ["contraindicated", "major", "moderate", "minor"].map(function (k) {
      return { name: C[k], value: T.medsafety[k] };
    })),
    tiers: pie("tiers", Object.keys(T.institutions.by_tier).map(function (k) {
      return { name: data.tiers[k] || k, value: T.institutions.by_tier[k] };
    })),
    quality: barChart("quality", t.quality.rows.filter(function (r) { return r.read > 0; }), [
      { name: L.quality, value: function (r) { return pct(r.quarantine_rate); } }], { unit: "%" })
  };
  var unitRows = { records: t.records.rows, recognition: t.recognition.rows.filter(function (r) { return r.checked > 0; }),
                   quality: t.quality.rows.filter(function (r) { return r.read > 0; }) };
  Array.prototype.forEach.call(document.querySelectorAll("[data-chart]"), function (el) {
    var name = el.dataset.chart;
    var chart = echarts.init(el, null, { renderer: "canvas" });
    chart.setOption(Object.assign({ animation: false }, options[name]));
    if (unitRows[name]) {
      chart.on("click", function (p) { var r = unitRows[name][p.dataIndex]; if (r) { drill(unitKey(r)); } });
    }
    charts[name] = chart;
  });
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("[data-png]");
    if (b && charts[b.dataset.png]) {
      var a = document.createElement("a");
      a.href = charts[b.dataset.png].getDataURL({ type: "png", pixelRatio: 2, backgroundColor: "#fff" });
      a.download = "dashboard-" + b.dataset.png + ".png";
      document.body.appendChild(a); a.click(); a.remove();
    }
    if (ev.target.closest("[data-print]")) { window.print(); }
  });
  window.addEventListener("resize", function () { Object.keys(charts).forEach(function (k) { charts[k].resize(); }); });
  window.healthlinkDashboardCharts = charts;  // for tests and the browser console
}());
