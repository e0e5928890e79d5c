"""Benchmark: the leaders' dashboard's render time (issue 10, "fast at scale").

Not a test (STYLE.md 13): it prints figures and the machine they were measured on.

Goal (issue 10): indicators for the reference-prefecture region render in under 1 second, never
a full scan per page view.

What it does:

1. uses the database ``--database-url`` names (default: a SQLite file in a new temporary
   directory; ``postgresql+psycopg://postgres@127.0.0.1:5432/hl_dashboard_bench`` for PostgreSQL,
   created if missing, dropped at the end unless ``--keep``), migrated, and loads the generated demo
   region into it with ``healthlink demo --patients N --replay-days 30 --replay-orders M`` (the real
   loader and the real recognition check; skipped when the database already holds a region);
2. times the first (full) recount of the pre-aggregated counts over the whole store, then an
   incremental refresh after ``--new-events`` recognition events were recorded;
3. adds ``--history-days`` days of **synthetic** daily counts for every member institution and
   department (the rows ``dashboard_daily`` holds for a region that has run that long: every
   metric and key the sources write), so that the page reads an aggregate table of the size the
   reference prefecture would have, whatever the number of records loaded in step 1 (the page's
   cost depends on institutions x departments x days x metrics, not on the records: the records
   are counted once, by the refresh);
4. times, with the recount switched off for views (``dashboard_max_age_seconds=0``), ``--repeat``
   renders each of: the JSON API and the page for the region, one county, one institution (drill),
   for a 30-day and a 365-day period; prints p50 / p95 / max per case, the sizes, the machine, and
   a ``RESULT {...}`` line; ``--json FILE`` writes the same.

    .venv/bin/python bench/dashboard.py                       # SQLite, 3,000 patients, 2 years of history
    .venv/bin/python bench/dashboard.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/hl_dashboard_bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform as pyplatform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEALTHLINK = str(Path(sys.executable).parent / "healthlink")


def machine() -> str:
    cpus = os.cpu_count()
    try:
        mem = next(int(x.split()[1]) // 1024 for x in Path("/proc/meminfo").read_text().splitlines()
                   if x.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem = 0
    return f"{pyplatform.node()} {pyplatform.machine()} {cpus} CPUs {mem} MiB, Python {pyplatform.python_version()}"


def ensure_pg(url: str) -> str | None:
    if not url.startswith("postgresql"):
        return None
    import psycopg

    base, name = url.rsplit("/", 1)
    admin = base.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    return admin


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * len(xs) + 0.5)) - 1))]


def synthetic_history(plat, days: int, seed: int = 7) -> int:  # noqa: ANN001
    """Daily rows for every member and department for ``days`` days before the loaded data."""
    from sqlalchemy import func, select

    from healthlink.dashboard import aggregate as agg
    from healthlink.db import tables as t

    d = t.dashboard_daily
    with plat.db.read() as conn:
        first = conn.execute(select(func.min(d.c.day))).scalar() or agg.day_number(plat.dashboard.today())
    region = plat.dashboard.members.region()
    rng = random.Random(seed)
    rows, n = [], 0
    per_inst = [("resource", "held.created", k) for k in agg.RECORD_TYPES] + [("resource", "held.last", "")] + [
        ("consent", "cs.request", k) for k in ("code", "qr", "in-person")] + [("consent", "cs.btg", "")] + [
        ("quality", m, "") for m in ("dq.uploads", "dq.read", "dq.quarantined")] + [
        ("quality", "dq.reason", k) for k in ("invalid", "future-date", "unresolved-reference")]
    per_dept = [("recognition", m, "") for m in ("rg.checked", "rg.found", "rg.reminded", "rg.opened", "rg.adopted",
                                                   "rg.savings")] + [
        ("recognition", "rg.declined", k) for k in ("emergency", "condition-changed", "other")] + [
        ("recognition", "rg.item.adopted", k) for k in ("cbc", "glu", "ct-chest")] + [
        ("recognition", "rg.item.savings", k) for k in ("cbc", "glu", "ct-chest")] + [
        ("medsafety", "ms.checked", "")] + [("medsafety", "ms.finding", k) for k in ("major", "moderate", "minor")] + [
        ("medsafety", m, "") for m in ("ms.finding.int", "ms.overridden.int")] + [
        ("medsafety", "ms.overridden", "major"), ("medsafety", "ms.accepted", "moderate")] + [
        ("prereview", f"pr.{k}", "") for k in ("submitted", "auto-passed", "queued", "passed", "returned",
                                                "decided", "wait.s")] + [("bedside", "bs.scan", k)
                                                                         for k in ("passed", "blocked")]
    with plat.db.write() as conn:
        for day in range(first - days, first):
            for m in region.members.values():
                for src, metric, key in per_inst:
                    rows.append({"source": src, "day": day, "institution_id": m.id, "department_id": "",
                                 "metric": metric, "key": key, "value": rng.randint(1, 400)})
                for dept, _ in m.departments:
                    for src, metric, key in per_dept:
                        rows.append({"source": src, "day": day, "institution_id": m.id, "department_id": dept,
                                     "metric": metric, "key": key, "value": rng.randint(0, 60)})
            if len(rows) > 20_000:
                conn.execute(t.dashboard_daily.insert(), rows)
                n += len(rows)
                rows = []
        if rows:
            conn.execute(t.dashboard_daily.insert(), rows)
            n += len(rows)
    agg.rollup(plat.db)  # the monthly rows, as the refresh keeps them
    return n


def main() -> None:  # noqa: PLR0915
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database-url")
    ap.add_argument("--patients", type=int, default=3_000)
    ap.add_argument("--replay-orders", type=int, default=2_700)
    ap.add_argument("--history-days", type=int, default=730)
    ap.add_argument("--new-events", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hl_dashboard_bench_"))
    url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
    admin = ensure_pg(url)
    env = {**os.environ, "HEALTHLINK_DATABASE_URL": url, "HEALTHLINK_DATA_DIR": str(tmp / "var"),
           "HEALTHLINK_SECRET_KEY": "bench-signing-key-" + "x" * 32, "HEALTHLINK_LOG_LEVEL": "WARNING"}
    t0 = time.perf_counter()
    subprocess.run([HEALTHLINK, "demo", "--patients", str(args.patients), "--replay-days", "30",
                    "--replay-orders", str(args.replay_orders)], env=env, check=True, stdout=subprocess.DEVNULL)
    load_s = time.perf_counter() - t0

    from fastapi.testclient import TestClient
    from sqlalchemy import func, select

    from healthlink.api.app import create_app
    from healthlink.db import tables as t
    from healthlink.demo import DEMO_PASSWORD
    from healthlink.runtime import Platform
    from healthlink.settings import Settings

    settings = Settings(database_url=url, data_dir=tmp / "var", secret_key="bench-signing-key-" + "x" * 32,
                        log_level="WARNING", dashboard_max_age_seconds=0)
    plat = Platform.start(settings)
    out: dict = {"machine": machine(), "database": url.split("@")[-1], "patients": args.patients}
    try:
        with plat.db.read() as conn:
            out["resources"] = conn.execute(select(func.count()).select_from(t.resource)).scalar_one()
            out["resource_versions"] = conn.execute(select(func.count()).select_from(t.resource_version)).scalar_one()
            out["recognition_events"] = conn.execute(select(func.count()).select_from(t.recognition_event)).scalar_one()
        out["load_s"] = round(load_s, 1)
        t0 = time.perf_counter()
        took = plat.dashboard.refresh(full=True)
        out["full_recount_s"] = round(time.perf_counter() - t0, 3)
        out["full_recount_by_source_s"] = took
        # new events, stamped now as the capabilities stamp theirs, then the incremental refresh
        now = time.time_ns() // 1000
        insts = sorted(plat.dashboard.members.region().members)
        with plat.db.write() as conn:
            conn.execute(t.recognition_event.insert(), [
                {"id": uuid.uuid4().hex, "at": now + i, "kind": "checked", "check_id": uuid.uuid4().hex,
                 "channel": "api", "institution_id": insts[i % len(insts)], "patient_id": "bench", "found": i % 2 == 0}
                for i in range(args.new_events)])
        t0 = time.perf_counter()
        plat.dashboard.refresh()
        out["incremental_refresh_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        out["history_rows_added"] = synthetic_history(plat, args.history_days)
        out["history_s"] = round(time.perf_counter() - t0, 1)
        with plat.db.read() as conn:
            out["dashboard_daily_rows"] = conn.execute(select(func.count()).select_from(t.dashboard_daily)).scalar_one()
            out["dashboard_monthly_rows"] = conn.execute(
                select(func.count()).select_from(t.dashboard_monthly)).scalar_one()
        app = create_app(settings, platform=plat)
        today = plat.dashboard.today()
        from datetime import timedelta

        results: dict[str, dict] = {}
        with TestClient(app) as c:
            tok = c.post("/api/auth/login", json={"username": "leader", "password": DEMO_PASSWORD}).json()
            h = {"Authorization": f"Bearer {tok['access_token']}"}
            c.cookies.set("hl_token", tok["access_token"])
            for days in (30, 365):
                since = (today - timedelta(days=days - 1)).isoformat()
                for label, extra in (("region", {}), ("county", {"county": "称多县"}),
                                     ("institution", {"institution": "chenduo-county"})):
                    for kind, path in (("api", "/api/dashboard"), ("page", "/dashboard")):
                        times = []
                        for _ in range(args.repeat):
                            t0 = time.perf_counter()
                            r = c.get(path, params={"since": since, **extra}, headers=h if kind == "api" else None)
                            times.append((time.perf_counter() - t0) * 1000)
                            assert r.status_code == 200, r.text[:300]
                        results[f"{kind}:{label}:{days}d"] = {
                            "p50_ms": round(statistics.median(times), 1), "p95_ms": round(pct(times, 95), 1),
                            "max_ms": round(max(times), 1), "bytes": len(r.content)}
        out["renders"] = results
    finally:
        plat.close()
    print(f"machine: {out['machine']}\ndatabase: {out['database']}")
    print(f"region: {out['patients']:,} Patient records, {out['resources']:,} resources "
          f"({out['resource_versions']:,} versions), {out['recognition_events']:,} recognition events; "
          f"loaded in {out['load_s']} s")
    print(f"full recount {out['full_recount_s']} s; incremental refresh after {args.new_events:,} new events "
          f"{out['incremental_refresh_s']} s")
    print(f"dashboard_daily: {out['dashboard_daily_rows']:,} rows ({out['history_rows_added']:,} synthetic, "
          f"{args.history_days} days of history for every institution and department); dashboard_monthly: "
          f"{out['dashboard_monthly_rows']:,} rows")
    print(f"{'case':28} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'bytes':>9}")
    for k, v in out["renders"].items():
        print(f"{k:28} {v['p50_ms']:8} {v['p95_ms']:8} {v['max_ms']:8} {v['bytes']:9,}")
    print("command: " + " ".join(sys.argv))
    print("RESULT " + json.dumps(out, ensure_ascii=False))
    if args.json:
        Path(args.json).write_text(json.dumps(out, ensure_ascii=False, indent=2))
    if admin and not args.keep:
        import psycopg

        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


if __name__ == "__main__":
    main()
