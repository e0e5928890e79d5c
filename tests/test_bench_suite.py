"""bench/suite.py: the benchmark suite of issue 9.

The end-to-end run (``bench`` marker: collected once, in the PostgreSQL pass of ``make test``) runs
the whole suite at its ``smoke`` scale against the PostgreSQL server on 127.0.0.1:5432, with a
database name of its own, and checks what a reader of the results gets: every benchmark with its
figures, latency percentiles where it has them, its in-run limit where it has one, no errors, the
machine, the date and the commit; and the docs section regenerated between its markers, nothing
else in the file touched.  The figures themselves are not asserted (STYLE.md 13).

The other tests check the docs regeneration on its own and that every script's command line
still answers ``--help`` after the refactor into functions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import suite  # noqa: E402

NETWORK = {"reads", "order-select", "order-sign", "everything"}  # driven over HTTP: latency and CPU
WITH_LIMIT = {"ingest", "reads", "order-select", "order-sign", "everything"}  # an in-run limit to compare with


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HEALTHLINK_")}


@pytest.mark.parametrize("script", ["suite.py", "fhir_read.py", "ingest.py", "cds_recognition.py",
                                    "cds_medsafety.py", "shared_record.py", "empi_region.py",
                                    "empi_realtime.py", "ledger.py"])
def test_every_benchmark_script_keeps_its_command_line(script: str) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--help"], capture_output=True, text=True,
                       timeout=120, env=_env(), cwd=ROOT, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("usage: ")


def test_docs_regeneration_replaces_only_its_own_section(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nintro\n\n<!-- bench-suite:small -->\nold small table\n<!-- /bench-suite:small -->\n"
                    "\n## Later section\n\nkept\n", encoding="utf-8")
    suite.regenerate_docs(docs, "small", "| new | table |")
    suite.regenerate_docs(docs, "smoke", "| smoke | table |")  # no markers yet: appended
    suite.regenerate_docs(docs, "small", "| newer | table |")
    text = docs.read_text(encoding="utf-8")
    assert "old small table" not in text and "| new | table |" not in text
    assert text.count("<!-- bench-suite:small -->\n| newer | table |\n<!-- /bench-suite:small -->") == 1
    assert text.count("<!-- bench-suite:smoke -->\n| smoke | table |\n<!-- /bench-suite:smoke -->") == 1
    assert text.startswith("# Benchmarks\n\nintro\n\n") and "## Later section\n\nkept\n" in text


def test_the_committed_docs_carry_the_small_scale_table() -> None:
    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    start, end = text.find("<!-- bench-suite:small -->"), text.find("<!-- /bench-suite:small -->")
    assert 0 <= start < end
    section = text[start:end]
    for name in suite.BENCHMARKS:
        assert f"| {name} (#" in section, name
    assert "make bench SCALE=full" in text  # the command of the full-scale table that is not run


@pytest.mark.bench
def test_the_smoke_scale_suite_runs_every_benchmark_without_errors(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    original = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    docs.write_text(original, encoding="utf-8")
    pg = os.environ.get("HEALTHLINK_TEST_PG_URL", suite.PG)
    db = f"hl_bench_suite_smoke_{uuid.uuid4().hex[:8]}"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "suite.py"), "--scale", "smoke", "--pg", pg,
                        "--database", db, "--out", str(tmp_path / "results"), "--docs", str(docs)],
                       capture_output=True, text=True, timeout=1200, env=_env(), cwd=ROOT, check=False)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]

    files = list((tmp_path / "results").glob("smoke-*.json"))
    assert len(files) == 1
    res = json.loads(files[0].read_text(encoding="utf-8"))
    assert res["scale"] == "smoke" and res["failed"] == []
    assert res["commit"] and res["date"] and res["machine"]["nproc"] >= 1
    assert res["machine"]["cpu"] and res["machine"]["memory_gib"] > 0
    assert res["region"]["patients"] == suite.SCALES["smoke"].patients and res["region"]["resources"] > 0
    assert "uvicorn worker" in res["cpu_sharing"]
    by_name = {b["name"]: b for b in res["benchmarks"]}
    assert list(by_name) == list(suite.BENCHMARKS)
    for name, b in by_name.items():
        assert b["errors"] == 0, (name, b["verdict"])
        assert isinstance(b["figure"], (int, float)) and b["figure"] > 0, (name, b["figure"])
        assert b["goal"] and b["unit"] and b["met"] in (True, False, None)
        assert b["load"]["seconds"] > 0 and "other_cores" in b["load"]
        if name in NETWORK:
            lat = b["latency_ms"]
            assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"], (name, lat)
            assert b["cpu"]["server"] > 0, (name, b["cpu"])
        if name in WITH_LIMIT:
            assert b["limit"] > 0 and b["ratio_to_limit"] == pytest.approx(b["figure"] / b["limit"], abs=1e-4)
    for hook in ("order-select", "order-sign"):  # what the hook's figures are read against
        c = by_name[hook]["details"]["cpu"]
        assert c["server_ms_per_call"] > 0 and c["postgres_ms_per_call"] >= 0, (hook, c)
        assert len(c["speed_probe_ms"]) == 2 and all(ms > 0 for ms in c["speed_probe_ms"]), (hook, c)
        # the setup's write-back is done before the server starts (PostgreSQL: the suite's database)
        assert by_name[hook]["details"]["checkpoint_before_s"] >= 0, hook
    assert by_name["reads"]["details"]["audit"]["verified"]
    assert by_name["ledger"]["details"]["ledger"]["verify"]["ok"]

    text = docs.read_text(encoding="utf-8")
    start, end = "<!-- bench-suite:smoke -->", "<!-- /bench-suite:smoke -->"
    section = text[text.index(start):text.index(end)]
    for name in suite.BENCHMARKS:
        assert f"| {name} (#" in section, name
    assert res["commit"] in section and res["machine"]["cpu"] in section
    # only the section changed: what was there before is all still there
    before = original.split(start)[0] if start in original else original
    assert text.startswith(before.rstrip("\n"))

    # the suite dropped its databases
    import psycopg

    with psycopg.connect(suite.admin_dsn(pg), autocommit=True) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (db + "%",)).fetchall()
    assert left == []
