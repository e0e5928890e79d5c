"""Benchmark: the tamper-evident audit ledger (issue 6).

Not a test (STYLE.md 13): it prints figures and the machine they were measured on.

Goals (issue 6, "Must show"): >= 20,000 leaves/s appended, batched; an inclusion proof <= 1 KB at
1 billion leaves (computed); ``verify`` of 10M leaves <= 2 minutes, re-deriving each leaf from its
stored record; the ledger costs <= 15% of authenticated read throughput.

What it does, end to end, on databases of its own (a throw-away PostgreSQL database on
127.0.0.1:5432, user postgres, dropped afterwards; ``--sqlite``: SQLite files in a temporary
directory; an existing database is never touched), with production durability (SQLite WAL
``synchronous=FULL``, PostgreSQL ``synchronous_commit=on``):

1. **Append.** Inserts ``--leaves`` audit records like the repository writes for a read
   (``Repository._record``: subtype read, the doctor as agent with institution, role, address
   and request id, one Patient and one Observation entity) with
   :func:`healthlink.ledger.audit.insert_records`, ``--insert-batch`` records per transaction
   (as the group-commit writer does; timed on its own), then calls ``Ledger.integrate()`` until
   nothing is pending, as the sequencer does (each call takes up to ``batch_max`` = 50,000
   records, hashes them and stores leaves, subtree nodes and state in one transaction).
   Leaves/s = leaves / total time of those calls.
2. **Proofs.** An inclusion proof (the leaf with the longest path) and a consistency proof at the
   bench's tree size, as base64 JSON (the API's form), and the sizes computed at 10**9 leaves
   (``merkle.proof_size_bytes`` and the longest consistency path).
3. **Verify.** Signs a checkpoint, then runs :func:`healthlink.ledger.verify.verify` over the
   whole tree in a fresh child process (every leaf re-derived from its stored record, every
   checkpoint signature and root checked), and reports its time, its peak RSS and the linear
   extrapolation to 10M leaves.  ``--verify-leaves N`` appends (untimed) more records first so
   the verify runs over N leaves (about 2.6 KB of database per audit record with its entity rows, leaf and indexes).
4. **Reads.** On a second database, bench/fhir_read.py's setup (``healthlink serve``, a doctor,
   seeded Patients and Observations, ``wrk``): authenticated, audited
   ``GET /fhir/Observation/{id}`` at full speed for ``--duration`` s, once with
   ``HEALTHLINK_LEDGER_SEQUENCER=false`` and once with ``true`` (``--rounds`` pairs, alternating),
   and the ratio.  Audit records are written in both: only the tree is off.  Before an "on"
   run, the backlog of the "off" run is integrated, so the sequencer only carries the run's own
   reads.  While it runs, the records not yet in the tree are sampled (the sequencer's lag).

Prints a table and ``RESULT {...}``; ``--json FILE`` writes the same.

    .venv/bin/python bench/ledger.py                    # PostgreSQL on 127.0.0.1:5432
    .venv/bin/python bench/ledger.py --sqlite
    .venv/bin/python bench/ledger.py --leaves 1000000 --verify-leaves 10000000
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fhir_read import (
    DOCTOR,
    HEALTHLINK,
    INSTITUTION,
    PASSWORD,
    BenchDatabase,
    audited_request_ids,
    ensure_wrk,
    free_port,
    git_commit,
    http,
    lua_script,
    machine,
    make_database,
    run_wrk,
    seed,
    summary,
    wait_ready,
)
from sqlalchemy import create_engine, func, select, text

from healthlink.db import Database
from healthlink.db import tables as t
from healthlink.db.migrate import upgrade
from healthlink.ledger import merkle
from healthlink.ledger import setup as ledger_setup
from healthlink.ledger.audit import Agent, AuditRecord, insert_records
from healthlink.ledger.log import Ledger
from healthlink.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
GOAL_LEAVES_PER_S = 20_000
GOAL_PROOF_BYTES_1E9 = 1024
GOAL_VERIFY_10M_S = 120.0
GOAL_READ_COST = 0.15
BILLION = 10**9
TEN_MILLION = 10**7


# ------------------------------------------------------------------ records
def records(start: int, n: int) -> list[AuditRecord]:
    """Audit records as ``Repository._record`` makes them for one Observation read."""
    out = []
    for i in range(start, start + n):
        p = i % 1000
        agent = Agent(who="Practitioner/bench-prac", username=DOCTOR, institution_id=INSTITUTION,
                      roles=("doctor",), address="127.0.0.1", request_id=f"ledger-{uuid.uuid4().hex}",
                      user_agent="wrk")
        out.append(AuditRecord(subtype="read", agent=agent, patients={f"bench-p{p}"},
                               entities=[f"Observation/bench-o{p}-{i % 5}"]))
    return out


def insert(db: Database, start: int, n: int, batch: int) -> float:
    """Insert n records, ``batch`` per committed transaction; returns the seconds taken."""
    t0 = time.perf_counter()
    for s in range(start, start + n, batch):
        recs = records(s, min(batch, start + n - s))
        with db.write() as conn:
            insert_records(conn, recs)
    return time.perf_counter() - t0


def integrate_all(ledger: Ledger) -> tuple[int, float, list[float]]:
    """Call integrate() until nothing is pending; (leaves, seconds, seconds per call)."""
    calls, total = [], 0
    while True:
        t0 = time.perf_counter()
        n = ledger.integrate()
        dt = time.perf_counter() - t0
        if n == 0:
            break
        calls.append(dt)
        total += n
    return total, sum(calls), calls


def db_bytes(db: Database, url: str) -> int:
    if db.is_sqlite:
        path = Path(url.split("///", 1)[-1])
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    with db.read() as conn:
        return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar())


def b64_json_bytes(proof: list[bytes]) -> int:
    """The proof as the API sends it: a JSON list of base64 strings."""
    return len(json.dumps([base64.b64encode(h).decode() for h in proof], separators=(",", ":")))


def computed_proofs(size: int) -> dict:
    """Largest inclusion and (sampled) consistency proofs at ``size``, computed without a database."""
    incl = merkle.proof_size_bytes(size)
    incl_hashes = incl // merkle.HASH_SIZE
    # a consistency proof from `old` is longest for an old size with many set bits
    olds = {1, 2, 3, size // 2 + 1, size // 3, size - 1, (size // 3) | 1, 0x2AAAAAAA % size or 1,
            0x15555555 % size or 1}
    cons = max(len(merkle.consistency_path(o, size)) for o in olds if 0 < o < size)
    return {"size": size, "inclusion_hashes": incl_hashes, "inclusion_bytes": incl,
            "inclusion_b64_json_bytes": b64_json_bytes([b"\0" * 32] * incl_hashes),
            "consistency_hashes_max_sampled": cons, "consistency_bytes": cons * 32,
            "consistency_b64_json_bytes": b64_json_bytes([b"\0" * 32] * cons)}


# ------------------------------------------------------------------ verify (child process)
def verify_child(url: str, data_dir: str) -> None:
    """Run verify() in this fresh process and print its figures (peak RSS is this process's)."""
    from healthlink.ledger.verify import verify

    settings = Settings(database_url=url, data_dir=Path(data_dir), ledger_sequencer=False)
    db = Database(url, sqlite_synchronous="FULL")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss counts file pages too, and SQLite maps the database file (PRAGMA mmap_size):
    # the heap's peak is sampled from RssAnon
    anon = [_rss_anon_kib()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            anon.append(_rss_anon_kib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    rep = verify(db, open_note=ledger_setup.note_opener(settings))
    dt = time.perf_counter() - t0
    done.set()
    sampler.join()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    db.dispose()
    print("VERIFYJSON " + json.dumps({"seconds": dt, "ok": rep.ok, "size": rep.size, "problems": rep.problems[:3],
                                      "checkpoints": rep.checkpoints, "rss_before_kib": rss0,
                                      "peak_rss_kib": rss1, "anon_before_kib": anon[0],
                                      "peak_anon_kib": max(anon)}), flush=True)


def _rss_anon_kib() -> int:
    with open("/proc/self/status") as f:
        return int(next(x for x in f if x.startswith("RssAnon:")).split()[1])


def run_verify(url: str, data_dir: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--_verify-child", url, str(data_dir)],
                         capture_output=True, text=True, cwd=ROOT)
    line = next((x for x in out.stdout.splitlines() if x.startswith("VERIFYJSON ")), None)
    if line is None:
        sys.exit(f"verify failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(line[len("VERIFYJSON "):])


# ------------------------------------------------------------------ part 1-3
def ledger_part(args: argparse.Namespace, bdb: BenchDatabase, data_dir: Path) -> dict:
    db = Database(bdb.url, sqlite_synchronous="FULL")
    upgrade(db)
    settings = Settings(database_url=bdb.url, data_dir=data_dir, ledger_sequencer=False)
    ledger = Ledger(db, checkpointer=ledger_setup.checkpointer(settings))
    n = args.leaves
    print(f"[ledger] inserting {n:,} audit records ({args.insert_batch} per transaction) ...", flush=True)
    ins_s = insert(db, 0, n, args.insert_batch)
    with db.read() as conn:
        avg_content = conn.execute(select(func.avg(func.length(t.audit_event.c.content)))).scalar()
    print("[ledger] integrating (Ledger.integrate until nothing is pending) ...", flush=True)
    leaves, int_s, calls = integrate_all(ledger)
    assert leaves == n, (leaves, n)
    head = ledger.head()
    ledger.checkpoint()
    size_bytes = db_bytes(db, bdb.url)

    # proofs at the bench's size: the leaf with the longest path, and a consistency proof
    size = head.size
    worst = max(range(0, size, max(1, size // 64)), key=lambda i: len(merkle.inclusion_path(i, size)))
    t0 = time.perf_counter()
    incl = ledger.inclusion_proof(worst, size)
    incl_ms = (time.perf_counter() - t0) * 1000
    old = (size // 3) | 1
    t0 = time.perf_counter()
    cons = ledger.consistency_proof(old, size)
    cons_ms = (time.perf_counter() - t0) * 1000
    proofs = {"size": size, "inclusion_index": worst, "inclusion_hashes": len(incl),
              "inclusion_b64_json_bytes": b64_json_bytes(incl), "inclusion_ms": round(incl_ms, 1),
              "consistency_from": old, "consistency_hashes": len(cons),
              "consistency_b64_json_bytes": b64_json_bytes(cons), "consistency_ms": round(cons_ms, 1)}

    # verify (optionally over more leaves)
    extra = {}
    if args.verify_leaves and args.verify_leaves > size:
        more = args.verify_leaves - size
        print(f"[ledger] --verify-leaves: appending {more:,} more records (not timed as leaves/s) ...",
              flush=True)
        t0 = time.perf_counter()
        done = 0
        while done < more:
            k = min(200_000, more - done)
            insert(db, n + done, k, args.insert_batch)
            integrate_all(ledger)
            done += k
        ledger.checkpoint()
        extra = {"appended_seconds": round(time.perf_counter() - t0, 1)}
        size_bytes = db_bytes(db, bdb.url)
    vsize = ledger.head().size
    db.dispose()
    print(f"[ledger] verifying {vsize:,} leaves in a child process ...", flush=True)
    v = run_verify(bdb.url, data_dir)
    per_leaf = v["seconds"] / max(1, v["size"])
    return {
        "append": {"leaves": leaves, "integrate_seconds": round(int_s, 3), "leaves_per_s": round(leaves / int_s),
                   "integrate_calls": len(calls), "slowest_call_s": round(max(calls), 3),
                   "audit_insert_seconds": round(ins_s, 3), "audit_records_per_s": round(n / ins_s),
                   "audit_content_bytes_avg": round(avg_content or 0), "insert_batch": args.insert_batch,
                   "batch_max": ledger.batch_max},
        "proofs": proofs, "proofs_at_1e9": computed_proofs(BILLION),
        "verify": {**v, **extra, "seconds": round(v["seconds"], 2),
                   "us_per_leaf": round(per_leaf * 1e6, 2),
                   "extrapolated_10m_seconds": round(per_leaf * TEN_MILLION, 1),
                   "extrapolated_from": v["size"], "measured_at_10m": v["size"] >= TEN_MILLION},
        "database_bytes": size_bytes, "database_bytes_per_leaf": round(size_bytes / max(1, vsize)),
    }


# ------------------------------------------------------------------ part 4: reads, ledger on/off
class LagSampler(threading.Thread):
    """Samples the audit records not yet in the tree (max seq - the sequencer's high-water mark)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(url)
        self.samples: list[int] = []
        self.stop = threading.Event()

    def pending(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT coalesce((SELECT max(seq) FROM audit_event), 0) - "
                "(SELECT audit_hw FROM ledger_state WHERE id = 1)")).scalar())

    def run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                self.samples.append(self.pending())
            except Exception:  # noqa: BLE001 - a busy SQLite file: skip the sample
                pass

    def catch_up(self, timeout: float = 30.0) -> float | None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.pending() <= 0:
                return time.monotonic() - t0
            time.sleep(0.05)
        return None


def reads_part(args: argparse.Namespace, bdb: BenchDatabase, work: Path, wrk: str) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHLINK_")}
    env.update(HEALTHLINK_DATABASE_URL=bdb.url, HEALTHLINK_DATA_DIR=str(work / "data"),
               HEALTHLINK_SECRET_KEY=uuid.uuid4().hex + uuid.uuid4().hex, HEALTHLINK_HOST="127.0.0.1",
               HEALTHLINK_PORT=str(port), HEALTHLINK_WORKERS=str(args.workers), HEALTHLINK_BASE_URL=base,
               HEALTHLINK_SQLITE_SYNCHRONOUS="FULL")
    subprocess.run([HEALTHLINK, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run([HEALTHLINK, "user", "add", DOCTOR, "--role", "doctor", "--institution", INSTITUTION,
                    "--name", "Bench Doctor", "--practitioner", "bench-prac", "--password-stdin"],
                   env=env, check=True, capture_output=True, input=PASSWORD + "\n", text=True)
    db = Database(bdb.url, sqlite_synchronous="FULL")
    ledger = Ledger(db)
    ids: list[str] = []
    runs = []
    order = [False, True] * args.rounds
    if args.on_first:
        order = [True, False] * args.rounds
    for i, on in enumerate(order):
        if on:  # the backlog of earlier runs (and the seed) goes into the tree first
            integrate_all(ledger)
        e = dict(env, HEALTHLINK_LEDGER_SEQUENCER="true" if on else "false")
        server_cmd = [HEALTHLINK, "serve"]
        with open(work / f"server-{i}.log", "wb") as log:
            server = subprocess.Popen(server_cmd, env=e, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        try:
            wait_ready(base, server)
            status, tok = http("POST", f"{base}/api/auth/login", {"username": DOCTOR, "password": PASSWORD})
            if status != 200:
                sys.exit(f"login failed: {status} {tok}")
            token = tok["access_token"]
            if not ids:
                print(f"[reads] seeding {args.patients} patients x {args.observations} observations ...",
                      flush=True)
                ids = seed(base, token, patients=args.patients, per_patient=args.observations)
            tag = f"run{i}-"
            ok_file = work / f"ok-{i}.txt"
            lua, warm = work / f"read-{i}.lua", work / f"warm-{i}.lua"
            lua_script(lua, ids=ids, token=token, prefix="/fhir/Observation/", out=str(ok_file), tag=tag)
            lua_script(warm, ids=ids, token=token, prefix="/fhir/Observation/", out="", tag=f"warm{i}-")
            kw = dict(connections=args.connections, threads=1, cpus=None, server_sid=server.pid)
            if args.warmup:
                run_wrk(wrk, base, warm, seconds=args.warmup, **kw)
            sampler = LagSampler(bdb.url) if on else None
            if sampler:
                sampler.start()
            with open("/proc/loadavg") as f:
                load = " ".join(f.read().split()[:3])
            print(f"[reads] sequencer {'ON ' if on else 'OFF'}: {args.duration} s of wrk (load {load}) ...",
                  flush=True)
            res, cmd, _ = run_wrk(wrk, base, lua, seconds=args.duration, **kw)
            lag = None
            if sampler:
                sampler.stop.set()
                sampler.join()
                catch = sampler.catch_up()
                s = sampler.samples or [0]
                lag = {"pending_max": max(s), "pending_mean": round(sum(s) / len(s)),
                       "catch_up_after_stop_s": round(catch, 2) if catch is not None else None}
                sampler.engine.dispose()
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGINT)
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
        ok_ids = [x for x in ok_file.read_text().splitlines() if x]
        audited = {r for r in audited_request_ids(bdb.url) if r and r.startswith(tag)}
        missing = sum(1 for r in ok_ids if r not in audited)
        runs.append({"sequencer": on, "loadavg_before": load, **summary(res, cmd), "lag": lag,
                     "audited_ok": len(ok_ids) - missing, "audit_missing": missing})
    with db.read() as conn:
        st = conn.execute(select(t.ledger_state.c.size)).scalar()
    db.dispose()
    on_rps = [r["rps"] for r in runs if r["sequencer"]]
    off_rps = [r["rps"] for r in runs if not r["sequencer"]]
    on_m, off_m = sum(on_rps) / len(on_rps), sum(off_rps) / len(off_rps)
    return {"runs": runs, "rps_on": round(on_m, 1), "rps_off": round(off_m, 1),
            "ratio_on_off": round(on_m / off_m, 3), "cost": round(1 - on_m / off_m, 3),
            "tree_size_after": st, "server": f"healthlink serve, HEALTHLINK_WORKERS={args.workers}",
            "data": {"patients": args.patients, "observations": len(ids)}}


# ------------------------------------------------------------------ report
def report(r: dict) -> None:
    m = r["machine"]
    print()
    print("HealthLink ledger benchmark (issue 6)")
    print(f"  date {r['date']}   commit {r['commit']}")
    print(f"  machine: {m['nproc']} CPUs, {m['cpu']}, {m['memory_gib']} GiB RAM, Linux {m['kernel']}, "
          f"Python {m['python']}; load average at start {m['loadavg_at_start']}, at end {r['loadavg_at_end']}")
    print(f"  database: {r['database']}")
    print(f"  command: {r['command']}")
    rows = []
    if "ledger" in r:
        L = r["ledger"]
        a, p, p9, v = L["append"], L["proofs"], L["proofs_at_1e9"], L["verify"]
        rows += [
            ("audit records inserted (batches of %d, committed)" % a["insert_batch"],
             f"{a['audit_records_per_s']:,}/s ({a['audit_content_bytes_avg']} B JSON each)", "", ""),
            (f"leaves appended (Ledger.integrate, {a['integrate_calls']} calls of <= {a['batch_max']:,})",
             f"{a['leaves_per_s']:,}/s ({a['leaves']:,} in {a['integrate_seconds']} s)",
             f">= {GOAL_LEAVES_PER_S:,}/s", a["leaves_per_s"] >= GOAL_LEAVES_PER_S),
            (f"inclusion proof at {p['size']:,} (measured)",
             f"{p['inclusion_hashes']} hashes, {p['inclusion_b64_json_bytes']} B b64 JSON ({p['inclusion_ms']} ms)",
             "", ""),
            (f"consistency proof {p['consistency_from']:,} -> {p['size']:,} (measured)",
             f"{p['consistency_hashes']} hashes, {p['consistency_b64_json_bytes']} B b64 JSON "
             f"({p['consistency_ms']} ms)", "", ""),
            ("inclusion proof at 10^9 (computed)",
             f"{p9['inclusion_bytes']} B raw, {p9['inclusion_b64_json_bytes']} B b64 JSON",
             f"<= {GOAL_PROOF_BYTES_1E9} B", p9["inclusion_bytes"] <= GOAL_PROOF_BYTES_1E9),
            ("consistency proof at 10^9 (computed, longest sampled)",
             f"{p9['consistency_bytes']} B raw, {p9['consistency_b64_json_bytes']} B b64 JSON", "", ""),
            (f"verify {v['size']:,} leaves (re-derive + checkpoints)",
             f"{v['seconds']} s ({v['us_per_leaf']} us/leaf), heap (RssAnon) {v['anon_before_kib'] // 1024} -> "
             f"peak {v['peak_anon_kib'] // 1024} MiB, peak RSS incl. mapped file {v['peak_rss_kib'] // 1024} MiB, "
             f"{'ok' if v['ok'] else 'FAILED'}", "", ""),
            ("verify 10M leaves" + ("" if v["measured_at_10m"] else
                                    f" (EXTRAPOLATED linearly from {v['extrapolated_from']:,})"),
             f"{v['extrapolated_10m_seconds'] if not v['measured_at_10m'] else v['seconds']} s",
             f"<= {GOAL_VERIFY_10M_S:.0f} s",
             (v["seconds"] if v["measured_at_10m"] else v["extrapolated_10m_seconds"]) <= GOAL_VERIFY_10M_S),
            ("database size", f"{L['database_bytes'] / 1e6:,.0f} MB, {L['database_bytes_per_leaf']:,} B per leaf",
             "", ""),
        ]
    if "reads" in r:
        R = r["reads"]
        for x in R["runs"]:
            lag = ""
            if x["lag"]:
                lag = (f"; not yet in tree: max {x['lag']['pending_max']}, mean {x['lag']['pending_mean']}, "
                       f"caught up {x['lag']['catch_up_after_stop_s']} s after stop")
            rows.append((f"audited reads, sequencer {'on' if x['sequencer'] else 'off'} "
                         f"(load {x['loadavg_before']})",
                         f"{x['rps']:,.0f}/s p99 {x['p99_ms']:.1f} ms, server CPU {x['server_cpu_us_per_request']} us/read, "
                         f"other {x['cpu']['other_cores']} cores, errors {x['errors']}, "
                         f"unaudited {x['audit_missing']}{lag}", "", ""))
        rows.append(("read throughput with ledger / without", f"{R['ratio_on_off']:.3f} (cost {R['cost']:.1%})",
                     f"cost <= {GOAL_READ_COST:.0%}", R["cost"] <= GOAL_READ_COST))
    print()
    w = max(len(x[0]) for x in rows)
    print(f"  {'measure':<{w}}  {'figure':<60}  goal / met")
    for name, fig, goal, ok in rows:
        g = f"{goal}: {'met' if ok else 'MISSED'}" if goal else ""
        print(f"  {name:<{w}}  {fig:<60}  {g}")
    print()
    print("RESULT " + json.dumps(r, separators=(",", ":")))


# ------------------------------------------------------------------ main
def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--_verify-child":
        verify_child(sys.argv[2], sys.argv[3])
        return
    args = parser().parse_args()
    result = measure(args)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--database-url", help="postgresql+psycopg://user@host:port/<new database> (created and "
                    "dropped; the read part uses <name>_reads); default: a new hl_bench_ledger_<random> on "
                    f"{DEFAULT_PG}")
    ap.add_argument("--sqlite", action="store_true", help="SQLite files in a temporary directory instead")
    ap.add_argument("--leaves", type=int, default=200_000, help="audit records appended and integrated")
    ap.add_argument("--insert-batch", type=int, default=512,
                    help="audit records per insert transaction (the group-commit writer's batch_max)")
    ap.add_argument("--verify-leaves", type=int, default=0,
                    help="append more (untimed) before verify so it covers this many leaves; 10000000 "
                    "needs ~26 GB of disk (about 2.6 KB per audit record with its entity rows, leaf and indexes) and takes long")
    ap.add_argument("--skip-ledger", action="store_true", help="only the read part")
    ap.add_argument("--skip-reads", action="store_true", help="only the append / proof / verify part")
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--observations", type=int, default=5, help="observations per patient")
    ap.add_argument("--workers", type=int, default=2, help="server worker processes")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections")
    ap.add_argument("--duration", type=int, default=20, help="seconds per measured read run")
    ap.add_argument("--warmup", type=int, default=5, help="seconds of warm-up per read run")
    ap.add_argument("--rounds", type=int, default=1, help="pairs of (off, on) read runs, alternating")
    ap.add_argument("--on-first", action="store_true", help="each pair starts with the sequencer on")
    ap.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    ap.add_argument("--keep", action="store_true", help="keep the working directory and the databases")
    return ap


def measure(args: argparse.Namespace) -> dict:
    """Parts 1-4 of the module doc for the options of :func:`parser`; returns the figures
    (what ``--json`` writes).  Prints its progress."""
    mach = machine()
    result: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": git_commit(),
                    "machine": mach, "command": shlex.join([sys.executable.replace(str(ROOT) + "/", ""),
                                                            *sys.argv])}
    work = Path(tempfile.mkdtemp(prefix="hl-bench-ledger-"))
    url = None if args.sqlite else (args.database_url or f"{DEFAULT_PG}/hl_bench_ledger_{uuid.uuid4().hex[:8]}")
    made: list[BenchDatabase] = []
    try:
        if not args.skip_ledger:
            (work / "ledger").mkdir()
            bdb = make_database(url, work / "ledger")
            made.append(bdb)
            result["database"] = bdb.version
            result["ledger"] = ledger_part(args, bdb, work / "ledger" / "data")
        if not args.skip_reads:
            wrk = ensure_wrk()
            (work / "reads").mkdir()
            bdb = make_database(url + "_reads" if url else None, work / "reads")
            made.append(bdb)
            result["database"] = bdb.version
            result["reads"] = reads_part(args, bdb, work / "reads", wrk)
    finally:
        if not args.keep:
            for b in made:
                b.cleanup()
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept: {work}; databases: {[b.url for b in made]}")
    with open("/proc/loadavg") as f:
        result["loadavg_at_end"] = " ".join(f.read().split()[:3])
    return result


if __name__ == "__main__":
    main()
