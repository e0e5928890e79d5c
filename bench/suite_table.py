"""bench/suite.py's table: the Markdown section of docs/benchmarks.md regenerated from a results dict."""

from __future__ import annotations

import re
from pathlib import Path


def _fmt(x: float | None, nd: int = 0) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and nd:
        return f"{x:,.{nd}f}"
    return f"{x:,.0f}" if abs(x) >= 10 else f"{x:.4g}"


def table(res: dict) -> str:
    m = res["machine"]
    load = res["load"]
    lines = [
        f"`{res['command']}` — {res['date']} UTC, commit {res['commit']}, wall time {res['wall_seconds']:.0f} s "
        f"(region load {res['region']['seconds']:.0f} s: {res['region']['patients']:,} Patient records, "
        f"{res['region']['resources']:,} resources).",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['memory_gib']} GiB RAM, Linux {m['kernel']}, "
        f"Python {m['python']}, {res.get('database', '')}. Load average (1 min) during the run "
        f"{load['loadavg_1m_min']}–{load['loadavg_1m_max']} (mean {load['loadavg_1m_mean']}); other people's "
        f"processes used {load['other_cores']} cores on average and PostgreSQL (the shared cluster, all "
        f"backends) {load['postgres_cores']}, the suite with its servers {load['suite_cores']}.",
        "",
    ]
    if load["other_cores"] > 0.5:
        lines += [f"**Not a quiet machine:** other people's work took {load['other_cores']} of the "
                  f"{m['nproc']} cores on average during this run, so every rate below is low and every "
                  "latency high by about that much; the per-row load column says how busy it was for each "
                  "benchmark. Rerun on a quiet machine for clean figures.", ""]
    lines += [
        "| benchmark | goal | figure | in-run limit | ratio | p50 / p90 / p99 / max ms | errors | CPU server / "
        "generator / PG / other | other load (cores, 1-min load avg) | met? |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for b in res["benchmarks"]:
        lt = b.get("latency_ms")
        lat_s = " / ".join(_fmt(lt[k], 1) if lt[k] is not None else "—" for k in ("p50", "p90", "p99", "max")) \
            if lt else "—"
        cpu = b.get("cpu")
        cpu_s = " / ".join(f"{cpu[k]:.2f}" for k in ("server", "generator", "postgres", "other")) if cpu else "—"
        w = b.get("load", {})
        w_s = f"{w.get('other_cores', '—')}, {w.get('loadavg_1m_mean', '—')}" if w else "—"
        lim = f"{_fmt(b['limit'])} ({b['limit_name']})" if b.get("limit") else "—"
        ratio = f"{b['ratio_to_limit']:.3f}" if b.get("ratio_to_limit") is not None else "—"
        met = {True: "**met**", False: "**missed**", None: "not (fully) assessed"}[b["met"]] if "met" in b else "—"
        fig = f"{_fmt(b['figure'])} {b['unit']}" if b.get("figure") is not None else "failed"
        what = f": {b['capability']}" if b.get("capability") else ""
        lines.append(f"| {b['name']} (#{b.get('issue', '')}){what} | {b.get('goal', '')} | {fig} | {lim} | {ratio} | "
                     f"{lat_s} | {b.get('errors', '—')} | {cpu_s} | {w_s} | {met}: {b.get('verdict', '')} |")
    lines += ["", f"How the cores are shared: {res['cpu_sharing']}", "",
              f"Results file: `{res['results_file']}`."]
    return "\n".join(lines)


def regenerate_docs(docs: Path, scale: str, body: str) -> None:
    """Replace the text between ``<!-- bench-suite:<scale> -->`` and ``<!-- /bench-suite:<scale> -->``
    (appended at the end when the markers are missing); the rest of the file is left as it is."""
    start, end = f"<!-- bench-suite:{scale} -->", f"<!-- /bench-suite:{scale} -->"
    text = docs.read_text(encoding="utf-8") if docs.exists() else ""
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, count=1, flags=re.S)
    else:
        text = text.rstrip("\n") + f"\n\n### Suite, scale {scale}\n\n{block}\n"
    docs.write_text(text, encoding="utf-8")
