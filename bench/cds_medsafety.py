"""Benchmark: the medication-safety order-sign hook over HTTP at a fixed arrival rate (issue 8).

Not a test (STYLE.md 13): it prints figures and the machine they were measured on.

Goal (issue 8, "must show"): against the demo region in PostgreSQL, p99 <= 50 ms at 200
requests/s of ``POST /cds-services/medsafety-order-sign``.

What it does, end to end (the load generator, its open model and its figures are those of
``bench/cds_recognition.py``, imported from it):

1. uses the PostgreSQL database ``--database-url`` names (default ``hl_bench_medsafety`` on
   127.0.0.1:5432), created if missing and **kept**: it is migrated and must hold the generated
   demo region (``healthlink demo --patients N`` with ``HEALTHLINK_DATABASE_URL`` set; ``--load N``
   loads or extends it here, once per database).  The demo's patients carry active prescriptions
   (warfarin, amiodarone, simvastatin, clarithromycin, metoprolol ... ``demogen/catalog.py``);
2. samples up to ``--sample`` active MedicationRequests of the region (the ``status`` and ``code``
   index rows), and for each the Person's Patient at a hospital (prefecture or county tier, the
   caller): the draft to sign is a demo drug that **interacts** with that active drug by the
   knowledge in force (``--interacting``, default 80% of requests; the rest a random demo drug,
   mostly nothing to find).  The active drug is often recorded at another institution, so without
   a grant many findings are hints — the same work for the server;
3. registers a hospital-system client at each ordering hospital and logins for its doctors,
   runs ``CHECKPOINT`` (PostgreSQL; ``--no-checkpoint`` to skip, ``checkpoint_first``), starts
   the production server (``healthlink serve``, ``--workers`` processes) and gets each
   client's token (client credentials);
4. builds CDS Hooks 2.0 ``order-sign`` requests (one draft MedicationRequest with a fresh id, a
   dose and a route: every check of the four kinds runs) and drives them at a **fixed arrival
   rate** (open model; latency from the due time, no coordinated omission);
5. prints p50/p90/p99/max, errors by kind, the achieved rate, CPU of the server, PostgreSQL and the
   generator, the share of answers with a card and with a critical card, the events written, the
   machine and the command, a ``RESULT {...}`` line, and with ``--json FILE`` writes it all to FILE.

    .venv/bin/python bench/cds_medsafety.py --load 20000               # build the region, 200 req/s, 60 s
    .venv/bin/python bench/cds_medsafety.py --rate 100 --duration 30 --json /tmp/ms.json
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cds_recognition import request_bytes, serve_and_drive, summarise

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HEALTHLINK = str(BIN / "healthlink")
DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/hl_bench_medsafety"
HOOK = "/cds-services/medsafety-order-sign"
GOAL_P99_MS, GOAL_RATE = 50.0, 200.0
DOCTORS = 4  # ordering doctors per hospital (each gets a staff login: context.userId needs one)
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
GTS = "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation"


@dataclass(frozen=True)
class Case:
    client: str  # ordering institution (its client's token)
    practitioner: str
    patient: str
    rx: str  # the drug to sign (RxNorm)
    name: str
    dose: float
    unit: str
    route: tuple[str, str]
    timing: str
    interacting: bool  # chosen to interact with an active drug of the Person


def demo_drugs() -> list[tuple]:
    """The demo region's drugs (RxNorm, name, dose, unit, route, timing), each once."""
    from healthlink.demogen import catalog as c

    out: dict[str, tuple] = {}
    for group in (c.CHRONIC, c.ACUTE):
        for _code, _name, drugs in group:
            for d in drugs:
                out.setdefault(d[0], d)
    return list(out.values())


def active_medications(plat, *, sample: int, seed: int) -> list[tuple[str, str, str]]:
    """Up to ``sample`` (patient, institution, RxNorm code) of active MedicationRequests."""
    from sqlalchemy import and_, select

    from healthlink.db import tables as t

    r, st, cd = t.resource, t.idx_token.alias("st"), t.idx_token.alias("cd")
    q = (select(r.c.patient_id, r.c.institution_id, cd.c.code)
         .join(st, and_(st.c.rid == r.c.rid, st.c.res_type == "MedicationRequest", st.c.param == "status",
                        st.c.code == "active"))
         .join(cd, and_(cd.c.rid == r.c.rid, cd.c.res_type == "MedicationRequest", cd.c.param == "code",
                        cd.c.system == RXNORM))
         .where(r.c.res_type == "MedicationRequest", r.c.deleted.is_(False))
         .limit(sample * 4))
    with plat.db.read() as conn:
        rows = [tuple(x) for x in conn.execute(q)]
    rng = random.Random(f"{seed}:bench-medsafety-active")
    return rng.sample(rows, min(sample, len(rows)))


def workload(plat, active: list[tuple[str, str, str]], *, n: int, seed: int,
             interacting: float) -> list[Case]:
    """``n`` order-sign cases: a Person with an active drug, their Patient at a hospital, and a demo
    drug that interacts with the active one (share ``interacting``) or any demo drug."""
    from healthlink.demogen.region import STAFF, by_id
    from healthlink.demogen.replay import IMAGING_AT, _persons
    from healthlink.medsafety.knowledge import load

    kb = load()
    drugs = demo_drugs()
    ing = {d[0]: kb.ingredients_of(RXNORM, d[0]) for d in drugs}
    partners: dict[str, list[tuple]] = {}
    for _, _, code in active:
        if code in partners:
            continue
        mine = kb.ingredients_of(RXNORM, code)
        partners[code] = [d for d in drugs if d[0] != code and any(
            kb.interactions_between(a, b) for a in ing[d[0]] for b in mine)]
    tiers = {i.id: i.tier for i in by_id().values()}
    person_of: dict[str, str] = {}
    pmap = _persons(plat)
    for person, recs in pmap.items():
        for patient, _ in recs:
            person_of[patient] = person
    rng = random.Random(f"{seed}:bench-medsafety-workload")
    usable = [a for a in active if a[0] in person_of]
    cases: list[Case] = []
    while len(cases) < n and usable:
        patient, _inst, code = rng.choice(usable)
        callers = [r for r in pmap[person_of[patient]] if tiers.get(r[1]) in IMAGING_AT]
        if not callers:
            usable.remove((patient, _inst, code))
            continue
        caller_patient, inst = rng.choice(callers)
        want = rng.random() < interacting and partners.get(code)
        d = rng.choice(partners[code]) if want else rng.choice(drugs)
        rx, name, dose, unit, route, timing = d
        cases.append(Case(inst, f"{inst}-pr{rng.randrange(min(DOCTORS, STAFF[tiers[inst]])):03d}", caller_patient,
                          rx, name, dose, unit, route, timing, bool(want)))
    return cases


def hook_body(case: Case, fhir_base: str) -> bytes:
    mid = uuid.uuid4().hex[:16]
    mr = {"resourceType": "MedicationRequest", "id": mid, "status": "draft", "intent": "order",
          "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": case.rx, "display": case.name}]},
          "subject": {"reference": f"Patient/{case.patient}"},
          "dosageInstruction": [{"timing": {"code": {"coding": [{"system": GTS, "code": case.timing}]}},
                                 "route": {"coding": [{"system": SNOMED, "code": case.route[0],
                                                       "display": case.route[1]}]},
                                 "doseAndRate": [{"doseQuantity": {"value": case.dose, "unit": case.unit,
                                                                   "system": "http://unitsofmeasure.org",
                                                                   "code": case.unit}}]}]}
    body = {"hookInstance": str(uuid.uuid4()), "hook": "order-sign", "fhirServer": fhir_base,
            "context": {"userId": f"Practitioner/{case.practitioner}", "patientId": case.patient,
                        "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": mr}]}}}
    return json.dumps(body, ensure_ascii=False).encode()


def prepare(plat, *, sample: int, n: int, seed: int, interacting: float, run_id: str,
            secret: str) -> tuple[list[Case], list[str]]:
    """The cases, and the logins and clients they need (created once; clients per run)."""
    from sqlalchemy import select

    from healthlink.accounts import add_client, add_user
    from healthlink.db import tables as t
    from healthlink.demogen.region import by_id

    cases = workload(plat, active_medications(plat, sample=sample, seed=seed), n=n, seed=seed,
                     interacting=interacting)
    clients = sorted({c.client for c in cases})
    with plat.db.read() as conn:
        have = set(conn.execute(select(t.user_account.c.username)
                                .where(t.user_account.c.username.like("bench-ms-%"))).scalars())
    depts = {i.id: {d for d, _ in i.departments} for i in by_id().values()}
    for inst, pid in sorted({(c.client, c.practitioner) for c in cases}):
        if f"bench-ms-{pid}" not in have:
            add_user(plat.db, username=f"bench-ms-{pid}", password=uuid.uuid4().hex, display_name=f"Bench {pid}",
                     roles=["doctor"], institution_id=inst, practitioner_id=pid,
                     department_id=f"{inst}-internal" if "internal" in depts[inst] else None)
    for inst in clients:
        add_client(plat.db, client_id=f"bench-ms-{run_id}-{inst}", display_name=f"Bench HIS {inst}",
                   institution_id=inst, secret=secret)
    return cases, clients


def _events(url: str) -> dict[str, int]:
    from sqlalchemy import create_engine, func, select

    from healthlink.db import tables as t

    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            ev = t.medsafety_event
            return {k: n for k, n in conn.execute(select(ev.c.kind, func.count()).group_by(ev.c.kind)).all()}
    finally:
        eng.dispose()


def _cards(base: str, bodies: list[bytes], k: int = 200) -> dict[str, float]:
    """Outside the measured run: what share of a sample of the requests answers a card / a critical one."""
    import http.client

    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    any_card = critical = 0
    sample = bodies[:k]
    for raw in sample:
        head, body = raw.split(b"\r\n\r\n", 1)
        headers = dict(ln.split(": ", 1) for ln in head.decode().split("\r\n")[1:])
        conn.request("POST", HOOK, body=body, headers=headers)
        cards = json.loads(conn.getresponse().read()).get("cards", [])
        any_card += bool(cards)
        critical += any(c.get("indicator") == "critical" for c in cards)
    conn.close()
    return {"with_card": round(any_card / max(len(sample), 1), 3),
            "with_critical_card": round(critical / max(len(sample), 1), 3)}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--database-url", default=DEFAULT_DB, help="PostgreSQL database (created if missing, kept)")
    ap.add_argument("--load", type=int, default=None, metavar="N",
                    help="load (or extend) the demo region to N Patient records first")
    ap.add_argument("--sample", type=int, default=20_000, help="active MedicationRequests sampled for the workload")
    ap.add_argument("--interacting", type=float, default=0.8, help="share of drafts that interact with an active drug")
    ap.add_argument("--rate", type=float, default=GOAL_RATE, help="requests per second (fixed arrival rate)")
    ap.add_argument("--duration", type=float, default=60, help="seconds of measured load")
    ap.add_argument("--warmup", type=float, default=10, help="seconds at the same rate before measuring")
    ap.add_argument("--connections", type=int, default=64, help="keep-alive connections of the generator")
    ap.add_argument("--workers", type=int, default=2, help="server worker processes")
    ap.add_argument("--server-cpus", default=None, help="taskset CPU list for the server (default: not pinned)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-checkpoint", action="store_true",
                    help="do not CHECKPOINT before starting the server (measure with the setup's write-back)")
    ap.add_argument("--cards", type=int, default=200,
                    help="requests re-sent after the run to count the answers with a card (0: none)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON to this file")
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    out = measure(args, argv)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False))
    cpu, statuses, mach, shown = out["cpu"], out["statuses"], out["machine"], out["answers"]
    print(f"\n{HOOK} at {args.rate:.0f} req/s for {args.duration:.0f} s (open model, {args.connections} connections)")
    print(f"  completed {out['completed']:,} of {out['scheduled']:,}; ok {out['ok']:,}; errors {out['errors']} "
          f"{out['errors_by_kind']}")
    print(f"  achieved {out['achieved_rate']}/s (in the schedule's window {out['rate_in_window']}/s)")
    print(f"  latency from due time: p50 {out['p50_ms']} / p90 {out['p90_ms']} / p99 {out['p99_ms']} / max "
          f"{out['max_ms']} ms")
    if args.cards:
        print(f"  answers with a card {shown['with_card']:.0%}, with a critical card {shown['with_critical_card']:.0%}")
    print(f"  CPU (cores, and ms per call): {cpu}; statuses {statuses}")
    print(f"  machine speed probe before / after: {cpu['speed_probe_ms'][0]} / {cpu['speed_probe_ms'][1]} ms "
          "(a fixed piece of Python; lower is faster)")
    print(f"  events written {out['events_written']:,}; machine {mach}")
    print(f"  goal {out['goal']}: {'met' if out['met'] else 'MISSED'}" + (f"; results in {args.json}" if args.json else ""))
    print("RESULT " + json.dumps({k: out[k] for k in ("when", "commit", "region_patients", "target_rate",
                                                       "achieved_rate", "p50_ms", "p90_ms", "p99_ms", "max_ms",
                                                       "errors", "met")}))


def measure(args: argparse.Namespace, argv: list[str] | None = None) -> dict:
    """The benchmark (steps 1-5 of the module doc) for the options of :func:`parser`; returns the
    figures (what ``--json`` writes).  Prints its progress."""
    from fhir_read import git_commit, machine, make_database

    from healthlink.db.migrate import upgrade
    from healthlink.demogen import Options
    from healthlink.demogen.load import ensure_region, region_state
    from healthlink.runtime import Platform
    from healthlink.settings import Settings

    mach, commit = machine(), git_commit()
    work = Path(tempfile.mkdtemp(prefix="hl-bench-ms-"))
    db = make_database(args.database_url, work, reuse=True)
    settings = Settings(database_url=db.url, data_dir=work / "data", ledger_sequencer=False)
    plat = Platform.start(settings)
    t_setup = time.time()
    run_id, secret = uuid.uuid4().hex[:6], uuid.uuid4().hex
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
        knowledge = plat.medsafety.knowledge.version  # stores the bundled default on first use
        total_n = int(args.rate * (args.duration + args.warmup))
        cases, clients = prepare(plat, sample=args.sample, n=total_n, seed=args.seed,
                                 interacting=args.interacting, run_id=run_id, secret=secret)
        if not cases:
            sys.exit("no active MedicationRequest of a Person known at a hospital: load a larger region")
    finally:
        plat.close()
    events_before = _events(db.url)
    setup_s = time.time() - t_setup
    print(f"region: {state.patients:,} Patient records (seed {state.seed}, complete={state.complete}); "
          f"knowledge {knowledge}; {len(cases):,} requests from {len(clients)} hospitals "
          f"({sum(c.interacting for c in cases) / len(cases):.0%} interacting); setup {setup_s:.0f} s", flush=True)

    d = serve_and_drive(db_url=db.url, work=work, workers=args.workers, server_cpus=args.server_cpus,
                        client_ids={inst: f"bench-ms-{run_id}-{inst}" for inst in clients}, secret=secret,
                        bodies=lambda base, port, tokens: [
                            request_bytes("127.0.0.1", port, HOOK, hook_body(c, base + "/fhir"), tokens[c.client])
                            for c in cases],
                        rate=args.rate, warmup=args.warmup, duration=args.duration, connections=args.connections,
                        # fresh draft ids: re-send a sample (new hookInstance and ids) to count what doctors saw
                        after=lambda base, port, tokens: _cards(base, [
                            request_bytes("127.0.0.1", port, HOOK, hook_body(c, base + "/fhir"), tokens[c.client])
                            for c in cases[:args.cards]]),
                        checkpoint=not args.no_checkpoint)
    run, cpu, statuses, load0, shown = d.run, d.cpu, d.statuses, d.load_average_before, d.after
    r = summarise(run)
    kinds = _events(db.url)
    out = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit, "machine": mach,
        "database": db.version, "region_patients": state.patients, "region_complete": state.complete,
        "knowledge": knowledge, "hospitals": len(clients), "workers": args.workers,
        "interacting_share": args.interacting, "answers": shown, "load_average_before": load0,
        "command": "python " + shlex.join(sys.argv if argv is None else ["bench/cds_medsafety.py", *argv]),
        **r, "statuses": statuses, "cpu": cpu, "checkpoint_before_s": d.checkpoint_s,
        "events_written": sum(kinds.values()) - sum(events_before.values()), "events_by_kind": kinds,
        "goal": f"p99 <= {GOAL_P99_MS} ms at {GOAL_RATE:.0f} req/s",
        "met": bool(r["p99_ms"] <= GOAL_P99_MS and r["errors"] == 0 and r["rate_in_window"] >= 0.99 * args.rate
                    and args.rate >= GOAL_RATE),
        "server_log": str(work / "server.log"),
    }
    return out


if __name__ == "__main__":
    main()
