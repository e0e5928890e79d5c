"""bench/cds_medsafety.py at a tiny size: its workload against a small demo region (drafts that
interact with the Persons' active drugs), its requests through the real app (every one answered,
critical cards for most interacting drafts), ``--help``, and on PostgreSQL one short run end to
end (a real ``healthlink serve``, the open-model load generator, the JSON it writes).  The figures
are not asserted (STYLE.md 13): the benchmark is run by hand on a quiet machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import cds_medsafety as bench

from healthlink.api.app import create_app
from healthlink.db.migrate import upgrade
from healthlink.demogen import Options
from healthlink.demogen.load import ensure_region, seed_demo
from healthlink.runtime import Platform
from healthlink.settings import load_settings


def test_help_runs() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "cds_medsafety.py"), "--help"], capture_output=True, check=False,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--rate" in r.stdout and "--load" in r.stdout and "order-sign" in r.stdout


def test_the_workload_against_a_small_demo_region_through_the_real_app(fresh_db) -> None:
    settings = load_settings()
    plat = Platform.start(settings)
    try:
        upgrade(plat.db)
        seed_demo(plat)
        ensure_region(plat, Options(patients=50))
        secret = uuid.uuid4().hex
        cases, clients = bench.prepare(plat, sample=500, n=40, seed=1, interacting=0.8, run_id="t", secret=secret)
        assert len(cases) == 40 and clients
        assert sum(c.interacting for c in cases) >= 20
        with TestClient(create_app(settings, platform=plat)) as client:
            tokens = {}
            for inst in clients:
                r = client.post("/api/auth/token", data={"grant_type": "client_credentials",
                                                         "client_id": f"bench-ms-t-{inst}", "client_secret": secret})
                assert r.status_code == 200, r.text
                tokens[inst] = r.json()["access_token"]
            critical = 0
            for c in cases:
                body = json.loads(bench.hook_body(c, "http://testserver/fhir"))
                assert body["hook"] == "order-sign"
                r = client.post(bench.HOOK, json=body, headers={"Authorization": f"Bearer {tokens[c.client]}"})
                assert r.status_code == 200, r.text
                critical += c.interacting and any(x["indicator"] == "critical" for x in r.json()["cards"])
            assert critical >= 1
    finally:
        plat.close()


# The benchmark runs against PostgreSQL only: this test is collected in the PostgreSQL pass of the
# suite (`make test-postgresql`, part of `.ci/run`), not skipped in the SQLite pass.
if os.environ.get("HEALTHLINK_TEST_DB", "sqlite") == "postgresql":
    def test_a_short_run_end_to_end(fresh_db, tmp_path) -> None:
        out = tmp_path / "ms.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHLINK_")}
        r = subprocess.run([sys.executable, str(ROOT / "bench" / "cds_medsafety.py"), "--database-url", fresh_db,
                            "--load", "80", "--rate", "10", "--duration", "1", "--warmup", "0", "--workers", "1",
                            "--json", str(out)], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT, check=False)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        got = json.loads(out.read_text())
        assert got["completed"] == got["ok"] == 10 and got["errors"] == 0
        assert got["events_by_kind"].get("checked", 0) >= 10
        assert "RESULT {" in r.stdout
