"""Benchmark: the mutual recognition order-select hook over HTTP at a fixed arrival rate (issue 7).

Not a test (STYLE.md 13): it prints figures and the machine they were measured on.

Goal (issue 7, "must show"): against a 1.27M-patient region in PostgreSQL, p99 <= 50 ms at
200 requests/s of ``POST /cds-services/healthlink-recognition-select``.

What it does, end to end:

1. uses the PostgreSQL database ``--database-url`` names (default ``hl_bench_recog`` on
   127.0.0.1:5432), created if missing and **kept** (a region takes long to load): it is
   migrated and must hold the generated demo region (``healthlink demo --patients N`` with
   ``HEALTHLINK_DATABASE_URL`` set; ``--load N`` loads or extends it here, once per database);
2. records the region's qualifications (:func:`healthlink.demogen.recognition.seed_qualifications`,
   only those missing) and, once per day and database, **recent results**: for ``--recent``
   Persons with records at two or more institutions, one to three results (laboratory panels,
   imaging studies) 0-5 days old at one of their institutions, written as that institution
   (:func:`healthlink.demogen.recognition.source_result`);
3. registers a hospital-system client at each ordering hospital (the prefecture and county
   hospitals) with the operator's API (``healthlink.accounts.add_client``), runs ``CHECKPOINT``
   so that PostgreSQL's write-back of this setup does not overlap the run (``--no-checkpoint``
   to measure with it; :func:`checkpoint_first`), starts the production server (``healthlink serve``, ``--workers`` uvicorn processes, sharing the 2 cores
   with PostgreSQL and this load generator) and gets each client's token at
   ``POST /api/auth/token`` (client credentials);
4. builds the requests: a random Person of those with a recent result, the Person's Patient at
   another hospital (the caller; ``context.userId`` a Practitioner of that hospital), and a
   draft ServiceRequest of the item of the recent result (90%) or of another catalogue item
   (10%: nothing to find) — CDS Hooks 2.0 ``order-select`` with ``draftOrders`` and
   ``selections``;
5. drives them at a **fixed arrival rate** (open model): request *i* is due at t0 + i/rate
   whatever the earlier responses did; a free keep-alive connection of a pool of
   ``--connections`` sends it, and its latency is measured **from the time it was due**, so a
   stalled server shows in the figures instead of slowing the generator down (no coordinated
   omission; a request that waits for a connection waits on the clock);
6. prints p50/p90/p99/max, the error count by kind, the achieved rate, CPU of the server,
   PostgreSQL and the generator, the machine and the command, a ``RESULT {...}`` line, and with
   ``--json FILE`` writes all of it to FILE.

    .venv/bin/python bench/cds_recognition.py                         # 200 req/s for 60 s
    .venv/bin/python bench/cds_recognition.py --rate 100 --duration 30 --json /tmp/cds.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HEALTHLINK = str(BIN / "healthlink")
DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/hl_bench_recog"
HOOK = "/cds-services/healthlink-recognition-select"
GOAL_P99_MS, GOAL_RATE = 50.0, 200.0
RESULTS_MARKER = "bench-recognition-results"
DOCTORS = 4  # ordering doctors per hospital (each gets a staff login: CDS context.userId needs one)


# ------------------------------------------------------------------ the open-model load generator
@dataclass
class Sample:
    i: int
    due: float  # monotonic time the request was due (t0 + i / rate)
    sent: float  # when a connection sent it (>= due)
    done: float  # when its last byte arrived (or the error)
    status: int  # HTTP status; 0 for a transport error or timeout
    error: str | None = None
    nbytes: int = 0

    @property
    def latency(self) -> float:
        """From the due time: includes any wait for a free connection."""
        return self.done - self.due


@dataclass
class Run:
    rate: float
    duration: float
    connections: int
    samples: list[Sample] = field(default_factory=list)
    t0: float = 0.0
    ended: float = 0.0  # when the last response arrived (or the drain gave up)
    unsent: int = 0  # due but never sent (still waiting when the drain timed out)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, int, bool]:
    """Read one HTTP/1.1 response; returns (status, body bytes, keep-alive)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    n = 0
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size:
                await reader.readexactly(size)
                n += size
            await reader.readexactly(2)
            if not size:
                break
    elif "content-length" in headers:
        n = int(headers["content-length"])
        if n:
            await reader.readexactly(n)
    keep = headers.get("connection", "").lower() != "close"
    return status, n, keep


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except (OSError, asyncio.CancelledError):
        pass


def request_bytes(host: str, port: int, path: str, body: bytes, token: str | None,
                  method: str = "POST") -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
            "Accept: application/json", f"Content-Length: {len(body)}"]
    if token:
        head.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def open_loop(host: str, port: int, make: callable, *, rate: float, duration: float,  # type: ignore[valid-type]
                    connections: int = 64, timeout: float = 10.0, drain: float = 15.0) -> Run:
    """Send ``make(i)`` (the raw request bytes of request i) at ``rate`` per second for
    ``duration`` seconds, request i due at t0 + i/rate; see the module doc (step 5)."""
    run = Run(rate, duration, connections)
    queue: asyncio.Queue = asyncio.Queue()
    total = int(rate * duration)
    loop = asyncio.get_running_loop()
    run.t0 = t0 = loop.time() + 0.05

    async def schedule() -> None:
        for i in range(total):
            due = t0 + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((i, due))
        for _ in range(connections):
            queue.put_nowait(None)

    async def connection() -> None:
        reader = writer = None
        while True:
            job = await queue.get()
            if job is None:
                break
            i, due = job
            payload = make(i)
            sent = loop.time()
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
                writer.write(payload)
                status, n, keep = await asyncio.wait_for(_read_response(reader), timeout)
                run.samples.append(Sample(i, due, sent, loop.time(), status, None if status < 400 else f"HTTP {status}", n))
                if not keep:
                    await _close(writer)
                    reader = writer = None
            except (TimeoutError, asyncio.TimeoutError) as exc:  # noqa: UP041
                run.samples.append(Sample(i, due, sent, loop.time(), 0, f"timeout ({type(exc).__name__})"))
                if writer is not None:
                    await _close(writer)
                reader = writer = None
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
                run.samples.append(Sample(i, due, sent, loop.time(), 0, type(exc).__name__))
                if writer is not None:
                    await _close(writer)
                reader = writer = None
        if writer is not None:
            await _close(writer)

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    sched = asyncio.create_task(schedule())
    await sched
    try:
        await asyncio.wait_for(asyncio.gather(*workers), timeout=drain + timeout)
    except (TimeoutError, asyncio.TimeoutError):  # noqa: UP041
        for w in workers:
            w.cancel()
    run.ended = loop.time()
    run.unsent = total - len(run.samples)
    run.samples.sort(key=lambda s: s.i)
    return run


def pct(xs: list[float], q: float) -> float:
    """The q-quantile by the nearest-rank method (q in 0..1)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 1)) - 1))
    return s[k]


def summarise(run: Run) -> dict:
    ok = [s for s in run.samples if s.error is None]
    lat = [s.latency * 1000 for s in ok]
    wait = [(s.sent - s.due) * 1000 for s in run.samples]
    errors: dict[str, int] = {}
    for s in run.samples:
        if s.error:
            errors[s.error] = errors.get(s.error, 0) + 1
    if run.unsent:
        errors["not sent (drain timed out)"] = run.unsent
    last_due = run.t0 + (int(run.rate * run.duration) - 1) / run.rate
    in_window = [s for s in ok if s.done <= last_due + 1 / run.rate]
    span = (max(s.done for s in run.samples) - run.t0) if run.samples else 0.0
    return {
        "target_rate": run.rate, "duration_s": run.duration, "connections": run.connections,
        "scheduled": int(run.rate * run.duration), "completed": len(run.samples), "ok": len(ok),
        "errors": sum(errors.values()), "errors_by_kind": errors,
        "achieved_rate": round(len(ok) / span, 1) if span else 0.0,  # ok responses / (t0 .. last response)
        "rate_in_window": round(len(in_window) / run.duration, 1),  # ok responses inside the schedule
        "p50_ms": round(pct(lat, 0.50), 2), "p90_ms": round(pct(lat, 0.90), 2),
        "p99_ms": round(pct(lat, 0.99), 2), "p999_ms": round(pct(lat, 0.999), 2),
        "max_ms": round(max(lat), 2) if lat else float("nan"),
        "mean_ms": round(sum(lat) / len(lat), 2) if lat else float("nan"),
        "wait_for_connection_p99_ms": round(pct(wait, 0.99), 2),
        "late_start_s": round(max((s.sent - s.due for s in run.samples), default=0.0), 3),
    }


# ------------------------------------------------------------------ the region and the workload
@dataclass(frozen=True)
class Case:
    client: str  # ordering institution (its client's token)
    practitioner: str
    patient: str
    system: str
    code: str
    display: str
    modality: str | None
    body_site: tuple[str, str] | None
    expect: bool  # a recent result of the item exists


def _system_repo(plat, inst: str):  # noqa: ANN001, ANN202
    from healthlink.demogen.load import _repo

    return _repo(plat, inst)


def recent_results(plat, *, persons: int, seed: int, today) -> tuple[int, list[tuple[str, str]]]:  # noqa: ANN001
    """Write (once per day and database) recent results for ``persons`` Persons with records at
    two or more institutions; returns (resources written, [(person, item id)])."""
    from healthlink.demogen.recognition import basic_items, source_result
    from healthlink.demogen.region import by_id
    from healthlink.demogen.replay import IMAGING_AT, ITEM_WEIGHTS, _persons
    from healthlink.fhir import store
    from healthlink.recognition.catalogue import load as load_catalogue

    cat = load_catalogue()
    rng = random.Random(f"{seed}:bench-recent:{today.isoformat()}")
    pmap = _persons(plat)
    tiers = {i.id: i.tier for i in by_id().values()}
    hospitals = {i for i, tr in tiers.items() if tr in IMAGING_AT}
    # Persons with a record at a hospital (the caller) and at some other institution
    multi = sorted(p for p, recs in pmap.items()
                   if len({i for _, i in recs}) >= 2 and any(i in hospitals for _, i in recs))
    chosen = rng.sample(multi, min(persons, len(multi)))
    items = [cat.by_id(i) for i in ITEM_WEIGHTS]
    weights = list(ITEM_WEIGHTS.values())
    marker = f"{RESULTS_MARKER}-{today.isoformat()}"
    plan: list[tuple[str, str, str, object]] = []  # person, source institution, source patient, item
    basics = set(basic_items(cat))
    for person in chosen:
        recs = pmap[person]
        for item in {it.id: it for it in rng.choices(items, weights, k=rng.randint(1, 3))}.values():
            sources = recs if item.id in basics else [r for r in recs if tiers[r[1]] in IMAGING_AT]
            if not sources:
                continue
            patient, inst = rng.choice(sources)
            plan.append((person, inst, patient, item))
    with plat.db.read() as conn:
        done = store.read_current(conn, "Basic", marker) is not None
    written = 0
    if not done:
        by_inst: dict[str, list[dict]] = {}
        for n, (_, inst, patient, item) in enumerate(plan):
            when = datetime.combine(today - timedelta(days=rng.randrange(0, 6)), datetime.min.time()) + timedelta(
                hours=rng.randrange(0, 9), minutes=rng.randrange(60))
            by_inst.setdefault(inst, []).extend(
                source_result(rng, f"bench-{today:%Y%m%d}-{n:06d}", item, patient, inst, when))
        for inst, resources in sorted(by_inst.items()):
            repo = _system_repo(plat, inst)
            for i in range(0, len(resources), 500):
                chunk = resources[i:i + 500]
                with plat.db.write() as conn:
                    repo.create_many_in(conn, [(r, r["id"]) for r in chunk])
                written += len(chunk)
        with plat.db.write() as conn:
            plat.system_repository("bench").update_in(conn, "Basic", marker, {
                "resourceType": "Basic", "id": marker,
                "code": {"coding": [{"system": "https://healthlink.example.org/fhir/CodeSystem/demogen",
                                     "code": "bench-results"}]}}, if_match=None)
    return written, [(p, it.id) for p, _, _, it in plan]


def workload(plat, planned: list[tuple[str, str]], *, n: int, seed: int) -> list[Case]:  # noqa: ANN001
    from healthlink.demogen.recognition import order_code
    from healthlink.demogen.region import STAFF, by_id
    from healthlink.demogen.replay import IMAGING_AT, ITEM_WEIGHTS, _persons
    from healthlink.recognition.catalogue import load as load_catalogue

    cat = load_catalogue()
    rng = random.Random(f"{seed}:bench-workload")
    pmap = _persons(plat)
    tiers = {i.id: i.tier for i in by_id().values()}
    cases: list[Case] = []
    items = [cat.by_id(i) for i in ITEM_WEIGHTS]
    while len(cases) < n and planned:
        person, item_id = rng.choice(planned)
        callers = [r for r in pmap[person] if tiers[r[1]] in IMAGING_AT]
        if not callers:
            continue
        patient, inst = rng.choice(callers)
        item = cat.by_id(item_id)
        expect = rng.random() < 0.9
        if not expect:
            item = rng.choice([x for x in items if x.group != item.group])
        system, code = order_code(item)
        cases.append(Case(inst, f"{inst}-pr{rng.randrange(min(DOCTORS, STAFF[tiers[inst]])):03d}", patient, system, code,
                          item.name_en, (item.modality or (None,))[0],
                          (item.body_site.code, item.body_site.display) if item.body_site else None, expect))
    return cases


def hook_body(case: Case, fhir_base: str) -> bytes:
    sr_id = uuid.uuid4().hex[:16]
    sr = {"resourceType": "ServiceRequest", "id": sr_id, "status": "draft", "intent": "order",
          "code": {"coding": [{"system": case.system, "code": case.code, "display": case.display}]},
          "subject": {"reference": f"Patient/{case.patient}"}}
    if case.body_site:
        sr["bodySite"] = [{"coding": [{"system": "http://snomed.info/sct", "code": case.body_site[0],
                                       "display": case.body_site[1]}]}]
    if case.modality:
        sr["orderDetail"] = [{"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                                          "code": case.modality}]}]
    body = {"hookInstance": str(uuid.uuid4()), "hook": "order-select", "fhirServer": fhir_base,
            "context": {"userId": f"Practitioner/{case.practitioner}", "patientId": case.patient,
                        "selections": [f"ServiceRequest/{sr_id}"],
                        "draftOrders": {"resourceType": "Bundle", "type": "collection",
                                        "entry": [{"resource": sr}]}}}
    return json.dumps(body, ensure_ascii=False).encode()


# ------------------------------------------------------------------ main
def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--database-url", default=DEFAULT_DB, help="PostgreSQL database (created if missing, kept)")
    ap.add_argument("--load", type=int, default=None, metavar="N",
                    help="load (or extend) the demo region to N Patient records first")
    ap.add_argument("--recent", type=int, default=5_000, help="Persons given recent results")
    ap.add_argument("--rate", type=float, default=GOAL_RATE, help="requests per second (fixed arrival rate)")
    ap.add_argument("--duration", type=float, default=60, help="seconds of measured load")
    ap.add_argument("--warmup", type=float, default=10, help="seconds at the same rate before measuring")
    ap.add_argument("--connections", type=int, default=64, help="keep-alive connections of the generator")
    ap.add_argument("--workers", type=int, default=2, help="server worker processes")
    ap.add_argument("--server-cpus", default=None, help="taskset CPU list for the server (default: not pinned)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-checkpoint", action="store_true",
                    help="do not CHECKPOINT before starting the server (measure with the setup's write-back)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON to this file")
    return ap


def main() -> None:
    args = parser().parse_args()
    out = measure(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False))
    cpu, statuses, mach = out["cpu"], out["statuses"], out["machine"]
    print(f"\n{HOOK} at {args.rate:.0f} req/s for {args.duration:.0f} s (open model, {args.connections} connections)")
    print(f"  completed {out['completed']:,} of {out['scheduled']:,}; ok {out['ok']:,}; errors {out['errors']} "
          f"{out['errors_by_kind']}")
    print(f"  achieved {out['achieved_rate']}/s (in the schedule's window {out['rate_in_window']}/s)")
    print(f"  latency from due time: p50 {out['p50_ms']} / p90 {out['p90_ms']} / p99 {out['p99_ms']} / max "
          f"{out['max_ms']} ms")
    print(f"  CPU (cores, and ms per call): {cpu}; statuses {statuses}")
    print(f"  machine speed probe before / after: {cpu['speed_probe_ms'][0]} / {cpu['speed_probe_ms'][1]} ms "
          "(a fixed piece of Python; lower is faster)")
    print(f"  events written {out['events_written']:,}; machine {mach}")
    print(f"  goal {out['goal']}: {'met' if out['met'] else 'MISSED'}" + (f"; results in {args.json}" if args.json else ""))
    print("RESULT " + json.dumps({k: out[k] for k in ("when", "commit", "region_patients", "target_rate",
                                                       "achieved_rate", "p50_ms", "p90_ms", "p99_ms", "max_ms",
                                                       "errors", "met")}))


def measure(args: argparse.Namespace) -> dict:
    """The benchmark (steps 1-5 of the module doc) for the options of :func:`parser`; returns the
    figures (what ``--json`` writes).  Prints its progress."""
    from fhir_read import git_commit, machine, make_database

    from healthlink.accounts import add_client
    from healthlink.db.migrate import upgrade
    from healthlink.demogen import Options
    from healthlink.demogen.load import ensure_region, region_state
    from healthlink.demogen.recognition import seed_qualifications
    from healthlink.demogen.region import by_id
    from healthlink.runtime import Platform
    from healthlink.settings import Settings

    mach, commit = machine(), git_commit()
    work = Path(tempfile.mkdtemp(prefix="hl-bench-cds-"))
    db = make_database(args.database_url, work, reuse=True)
    settings = Settings(database_url=db.url, data_dir=work / "data", ledger_sequencer=False)
    plat = Platform.start(settings)
    t_setup = time.time()
    try:
        upgrade(plat.db)
        state = region_state(plat)
        if args.load:
            from healthlink.demogen.load import seed_demo

            seed_demo(plat)
            ensure_region(plat, Options(patients=args.load))
            state = region_state(plat)
        if state is None:
            sys.exit("the database holds no demo region: HEALTHLINK_DATABASE_URL=... healthlink demo --patients N, "
                     "or --load N")
        added = seed_qualifications(plat)
        today = datetime.now(timezone(timedelta(hours=8))).date()
        written, planned = recent_results(plat, persons=args.recent, seed=args.seed, today=today)
        total_n = int(args.rate * (args.duration + args.warmup))
        cases = workload(plat, planned, n=total_n, seed=args.seed)
        clients = sorted({c.client for c in cases})
        run_id = uuid.uuid4().hex[:6]
        secret = uuid.uuid4().hex
        from sqlalchemy import select as _select

        from healthlink.accounts import add_user
        from healthlink.db import tables as _t

        with plat.db.read() as conn:
            have = set(conn.execute(_select(_t.user_account.c.username)
                                    .where(_t.user_account.c.username.like("bench-cds-%"))).scalars())
        depts = {i.id: {d for d, _ in i.departments} for i in by_id().values()}
        for inst, pid in sorted({(c.client, c.practitioner) for c in cases}):
            if f"bench-cds-{pid}" not in have:
                add_user(plat.db, username=f"bench-cds-{pid}", password=uuid.uuid4().hex, display_name=f"Bench {pid}",
                         roles=["doctor"], institution_id=inst, practitioner_id=pid,
                         department_id=f"{inst}-internal" if "internal" in depts[inst] else None)
        for inst in clients:
            add_client(plat.db, client_id=f"bench-cds-{run_id}-{inst}", display_name=f"Bench HIS {inst}",
                       institution_id=inst, secret=secret)
        with plat.db.read() as conn:
            from sqlalchemy import func, select

            from healthlink.db import tables as t

            counts = dict(conn.execute(select(t.resource.c.res_type, func.count()).where(
                t.resource.c.res_type.in_(("Patient", "Observation", "DiagnosticReport", "ImagingStudy")))
                .group_by(t.resource.c.res_type)).all())
            events_before = conn.execute(select(func.count()).select_from(t.recognition_event)).scalar_one()
    finally:
        plat.close()
    setup_s = time.time() - t_setup
    print(f"region: {state.patients:,} Patient records (seed {state.seed}, complete={state.complete}); "
          f"stored {counts}; qualifications added {added}; recent result resources written {written:,} "
          f"for {len({p for p, _ in planned}):,} Persons; {len(cases):,} requests from {len(clients)} hospitals; "
          f"setup {setup_s:.0f} s", flush=True)

    d = serve_and_drive(db_url=db.url, work=work, workers=args.workers, server_cpus=args.server_cpus,
                        client_ids={inst: f"bench-cds-{run_id}-{inst}" for inst in clients}, secret=secret,
                        bodies=lambda base, port, tokens: [
                            request_bytes("127.0.0.1", port, HOOK, hook_body(c, base + "/fhir"), tokens[c.client])
                            for c in cases],
                        rate=args.rate, warmup=args.warmup, duration=args.duration, connections=args.connections,
                        checkpoint=not args.no_checkpoint)
    run, cpu, statuses, load0 = d.run, d.cpu, d.statuses, d.load_average_before
    r = summarise(run)
    from sqlalchemy import create_engine, func, select

    from healthlink.db import tables as t

    eng = create_engine(db.url)
    with eng.connect() as conn:
        ev = t.recognition_event
        kinds = dict(conn.execute(select(ev.c.kind, func.count()).group_by(ev.c.kind)).all())
        events_after = sum(kinds.values())
    eng.dispose()
    out = {
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit, "machine": mach,
        "database": db.version, "region_patients": state.patients, "region_complete": state.complete,
        "stored": counts, "persons_with_recent_results": len({p for p, _ in planned}),
        "hospitals": len(clients), "workers": args.workers, "load_average_before": load0,
        "command": "python " + shlex.join(sys.argv), **r, "statuses": statuses, "cpu": cpu,
        "checkpoint_before_s": d.checkpoint_s,
        "events_written": events_after - events_before, "events_by_kind": kinds,
        "goal": f"p99 <= {GOAL_P99_MS} ms at {GOAL_RATE:.0f} req/s",
        "met": bool(r["p99_ms"] <= GOAL_P99_MS and r["errors"] == 0 and r["rate_in_window"] >= 0.99 * args.rate
                    and args.rate >= GOAL_RATE),
        "server_log": str(work / "server.log"),
    }
    return out


@dataclass
class Driven:
    """What :func:`serve_and_drive` measured."""

    run: Run
    cpu: dict[str, float]  # cores used during the measured part: server, postgres, generator, machine, other
    statuses: dict[str, int]
    load_average_before: tuple[float, float, float]
    probe: str
    after: object = None  # what ``after`` returned
    checkpoint_s: float | None = None  # the CHECKPOINT before the server started (None: not run)


def serve_and_drive(*, db_url: str, work: Path, workers: int, server_cpus: str | None,
                    client_ids: dict[str, str], secret: str, bodies, rate: float, warmup: float,  # noqa: ANN001
                    duration: float, connections: int, after=None, checkpoint: bool = True) -> Driven:  # noqa: ANN001
    """With ``checkpoint`` (PostgreSQL), first write the setup's dirty pages out (:func:`checkpoint_first`).
    Start the production server (``healthlink serve``, ``workers`` processes, optionally pinned
    with taskset) on ``db_url``, get a client-credentials token for each of ``client_ids``
    (institution -> client id), build the requests with ``bodies(base, port, tokens)``, probe the
    first, run the warm-up and then the measured open loop at ``rate``, and count the CPU of the
    server, PostgreSQL, this generator and the whole machine during the measured part.
    ``after(base, port, tokens)`` runs while the server is still up.  The server is stopped
    (SIGINT, then SIGKILL after 30 s) whatever happens."""
    from fhir_read import _machine_busy_ticks, _ticks_of_command, _ticks_of_session, free_port, speed_probe, taskset

    ckpt = checkpoint_first(db_url) if checkpoint else None
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHLINK_")}
    env.update(HEALTHLINK_DATABASE_URL=db_url, HEALTHLINK_DATA_DIR=str(work / "data"),
               HEALTHLINK_SECRET_KEY=uuid.uuid4().hex + uuid.uuid4().hex, HEALTHLINK_HOST="127.0.0.1",
               HEALTHLINK_PORT=str(port), HEALTHLINK_WORKERS=str(workers), HEALTHLINK_BASE_URL=base)
    server = None
    try:
        with open(work / "server.log", "wb") as log:
            server = subprocess.Popen([*taskset(server_cpus), HEALTHLINK, "serve"], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        _wait_ready(base, server)
        tokens = {inst: _token(base, cid, secret) for inst, cid in client_ids.items()}
        raw = bodies(base, port, tokens)
        probe = _probe(base, raw[0])
        print(f"probe: {probe}", flush=True)
        warm_n = int(rate * warmup)
        if warmup:
            asyncio.run(open_loop("127.0.0.1", port, lambda i: raw[i], rate=rate, duration=warmup,
                                  connections=connections))
        hz = os.sysconf("SC_CLK_TCK")
        speed0 = speed_probe()  # the server idle for a moment, between the warm-up and the measurement
        srv0, pg0, mach0, me0, w0 = (_ticks_of_session(server.pid), _ticks_of_command("postgres"),
                                     _machine_busy_ticks(), os.times(), time.time())
        load0 = os.getloadavg()
        run = asyncio.run(open_loop("127.0.0.1", port, lambda i: raw[warm_n + i], rate=rate,
                                    duration=duration, connections=connections))
        wall = time.time() - w0
        srv1, pg1, mach1, me1 = (_ticks_of_session(server.pid), _ticks_of_command("postgres"),
                                 _machine_busy_ticks(), os.times())
        speed1 = speed_probe()
        extra = after(base, port, tokens) if after is not None else None
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
    cpu = {"server_cores": round((srv1 - srv0) / hz / wall, 2), "postgres_cores": round((pg1 - pg0) / hz / wall, 2),
           "generator_cores": round((me1.user + me1.system - me0.user - me0.system) / wall, 2),
           "machine_busy_cores": round((mach1 - mach0) / hz / wall, 2)}
    cpu["other_cores"] = round(cpu["machine_busy_cores"] - cpu["server_cores"] - cpu["postgres_cores"]
                               - cpu["generator_cores"], 2)
    # CPU per answered call (the same work costs more when the machine runs slower: speed probe)
    done = max(1, sum(1 for x in run.samples if x.error is None))
    cpu["server_ms_per_call"] = round((srv1 - srv0) / hz / done * 1000, 2)
    cpu["postgres_ms_per_call"] = round((pg1 - pg0) / hz / done * 1000, 2)
    cpu["speed_probe_ms"] = [speed0, speed1]
    statuses: dict[str, int] = {}
    for sample in run.samples:
        statuses[str(sample.status)] = statuses.get(str(sample.status), 0) + 1
    return Driven(run, cpu, statuses, load0, probe, extra, ckpt)


def checkpoint_first(db_url: str) -> float | None:
    """``CHECKPOINT`` on a PostgreSQL ``db_url``: the seconds it took, None elsewhere or when refused.

    The setup before a run writes (a region load, the recognition benchmark's recent results, the
    accounts), and PostgreSQL writes those pages back over the next minutes
    (``checkpoint_completion_target``): measured right after a large load, the hook shared the two
    cores with that write-back and paid twice the PostgreSQL CPU per call (docs/benchmarks.md,
    issue 7).  A run measures the hook, so the write-back of its own setup is done first; the
    time it took is printed and kept in the results."""
    if not db_url.startswith("postgresql"):
        return None
    import psycopg

    dsn = db_url.replace("postgresql+psycopg://", "postgresql://", 1)
    t0 = time.perf_counter()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.Error as e:  # not a superuser (or pg_checkpoint member): say so and go on
        print(f"CHECKPOINT before the run refused ({e.__class__.__name__}: {str(e).strip()}); "
              "the setup's write-back may overlap the run", flush=True)
        return None
    took = round(time.perf_counter() - t0, 2)
    print(f"CHECKPOINT before the run: {took} s", flush=True)
    return took


def _wait_ready(base: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited with code {proc.returncode}; see its log")
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    sys.exit("the server did not become ready")


def _token(base: str, client_id: str, secret: str) -> str:
    import urllib.parse
    import urllib.request

    data = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": client_id,
                                   "client_secret": secret}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{base}/api/auth/token", data=data), timeout=30) as r:
        return json.loads(r.read())["access_token"]


def _probe(base: str, raw: bytes) -> str:
    """One request before the load: its status and the cards' count (the route must work)."""
    import http.client

    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = dict(ln.split(": ", 1) for ln in lines[1:])
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    path = lines[0].split(" ")[1]  # the request line of ``raw``: POST <path> HTTP/1.1
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        sys.exit(f"the hook answered {resp.status}: {data[:500]!r}")
    cards = json.loads(data).get("cards", [])
    return f"200, {len(cards)} card(s)"


if __name__ == "__main__":
    main()
