"""``healthlink`` command line: serve, db upgrade, user add, client add, demo, sms outbox, witness,
ledger, recognition."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from healthlink.errors import HealthLinkError, Invalid
from healthlink.settings import Settings, load_settings

app = typer.Typer(help="HealthLink regional health information platform.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
user_app = typer.Typer(help="Staff accounts.", no_args_is_help=True)
client_app = typer.Typer(help="Machine clients (hospital systems).", no_args_is_help=True)
sms_app = typer.Typer(help="Text messages (the outbox of the default SMS gateway).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(sms_app, name="sms")
app.add_typer(user_app, name="user")
app.add_typer(client_app, name="client")
console = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except Exception as exc:  # noqa: BLE001 - pydantic's message names the bad variable
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def _platform(settings: Settings):  # noqa: ANN202
    from healthlink.runtime import Platform

    _check_sms_gateway(settings)
    # a one-shot command leaves the ledger's sequencer to the server (`healthlink ledger integrate`
    # runs it on demand)
    return Platform.start(settings.model_copy(update={"ledger_sequencer": False}))


def _check_sms_gateway(settings: Settings) -> None:
    """Load a configured SMS gateway once here, so a bad one is a one-line error, not a traceback."""
    from healthlink.consent import OUTBOX, SmsGatewayConfigError, build_gateway, gateway_class

    if settings.sms_gateway != OUTBOX:
        try:
            build_gateway(gateway_class(settings.sms_gateway), settings)
        except SmsGatewayConfigError as exc:
            err.print(f"[red]configuration error:[/red] {exc}")
            raise typer.Exit(2) from None


def _fail(exc: HealthLinkError) -> None:
    err.print(f"[red]error:[/red] {exc.message}")
    raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply database migrations (Alembic) up to REVISION."""
    from healthlink.db import Database
    from healthlink.db.migrate import current, upgrade

    s = _settings()
    db = Database(s.database_url, sqlite_synchronous=s.sqlite_synchronous)
    try:
        upgrade(db, revision)
        console.print(f"database at revision {current(db)}")
    except HealthLinkError as exc:
        _fail(exc)
    finally:
        db.dispose()


@db_app.command("current")
def db_current() -> None:
    """Show the database's migration revision."""
    from healthlink.db import Database
    from healthlink.db.migrate import current

    s = _settings()
    db = Database(s.database_url)
    console.print(current(db) or "empty (run `healthlink db upgrade`)")
    db.dispose()


@sms_app.command("outbox")
def sms_outbox(phone: str = typer.Option(..., "--phone", help="The phone number whose messages to show."),
               limit: int = typer.Option(20, "--limit", min=1, help="Most messages to show.")) -> None:
    """Show the outbox messages sent to a phone number, newest first (the demo's phone)."""
    from datetime import UTC, datetime

    from rich.table import Table

    from healthlink.consent import OUTBOX, list_messages
    from healthlink.db import Database

    s = _settings()
    if s.sms_gateway != OUTBOX:
        err.print(f"[red]error:[/red] the SMS gateway is {s.sms_gateway}, not the outbox: messages are "
                  "sent, not kept here")
        raise typer.Exit(2)
    db = Database(s.database_url)
    try:
        msgs = list_messages(db, "".join(phone.split()), limit=limit)
    finally:
        db.dispose()
    if not msgs:
        console.print(f"no messages to {phone}")
        return
    table = Table(title=f"messages to {phone}, newest first")
    for col in ("sent (UTC)", "purpose", "text"):
        table.add_column(col)
    for m in msgs:
        when = datetime.fromtimestamp(m.created_us / 1_000_000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(when, m.purpose, m.text)
    console.print(table)


@user_app.command("add")
def user_add(
    username: str,
    role: list[str] = typer.Option(..., "--role", "-r", help="Role code; repeat for several."),
    institution: str = typer.Option(None, help="Organization id of the user's institution."),
    department: str = typer.Option(None, help="Organization id of the department."),
    name: str = typer.Option(None, help="Display name."),
    practitioner: str = typer.Option(None, help="Practitioner id."),
    password_stdin: bool = typer.Option(False, help="Read the password from standard input."),
) -> None:
    """Add a staff user (the password is asked for, never given on the command line)."""
    from healthlink.accounts import add_user

    pw = sys.stdin.readline().rstrip("\n") if password_stdin else getpass.getpass("password: ")
    plat = _platform(_settings())
    try:
        uid = add_user(plat.db, username=username, password=pw, display_name=name or username,
                       roles=role, institution_id=institution, department_id=department,
                       practitioner_id=practitioner)
        console.print(f"user {username} added (id {uid}, roles {', '.join(role)})")
    except HealthLinkError as exc:
        _fail(exc)
    finally:
        plat.close()


@client_app.command("add")
def client_add(client_id: str, institution: str = typer.Option(..., help="Organization id."),
               name: str = typer.Option(None), scopes: str = typer.Option("system/*.cruds")) -> None:
    """Register a hospital system; prints its secret once."""
    from healthlink.accounts import add_client

    plat = _platform(_settings())
    try:
        secret = add_client(plat.db, client_id=client_id, display_name=name or client_id,
                            institution_id=institution, scopes=scopes)
        console.print(f"client {client_id} added; secret (shown once): {secret}")
    except HealthLinkError as exc:
        _fail(exc)
    finally:
        plat.close()


def _demo_region(plat, patients: int, seed: int = 1, *, serving: bool = False) -> None:  # noqa: ANN001
    """Seed the demo logins and load the generated region unless the database holds it.
    ``serving``: a database holding another region is served as it is, with a warning."""
    from healthlink.demogen import Options
    from healthlink.demogen.load import ensure_region, seed_demo

    made = seed_demo(plat)
    console.print("demo logins seeded" if made else "demo logins already present")
    opts = Options(patients=patients, seed=seed)
    doing = {"loaded": "loading the demo region:", "resumed": "finishing an interrupted load of the demo region:",
             "extended": "extending the demo region to"}
    done = {"loaded": "loaded", "resumed": "finished", "extended": "extended"}
    what = ["resources written"]
    with console.status("checking the demo region …") as status:
        def start(outcome: str) -> None:
            console.print(f"{doing[outcome]} {opts.patients:,} Patient records (seed {seed}), once per database")
            status.update(f"{doing[outcome].rstrip(':')} …")
            what[0] = "resources written" if outcome == "loaded" else "resources written or already there"

        try:
            got = ensure_region(plat, opts, on_start=start,
                                progress=lambda c: status.update(f"demo region: {c:,} {what[0]}"))
        except KeyboardInterrupt:
            err.print("[red]interrupted:[/red] the demo region is only partly loaded; run the same command "
                      "again to finish it")
            raise typer.Exit(130) from None
        except HealthLinkError as exc:  # e.g. Conflict: another seed's region is loaded
            if not serving:
                _fail(exc)
            err.print(f"[yellow]note:[/yellow] {exc.message}; serving the database as it is")
            return
    if got.outcome == "present":
        console.print(f"demo region already present: {got.state.patients:,} Patient records (seed {got.state.seed})")
    else:
        console.print(f"demo region {done[got.outcome]}: {got.written:,} resources written, "
                      f"{opts.patients:,} Patient records (seed {seed})")
    from healthlink.demo import demo_patient

    from healthlink.demo import demo_logins
    from healthlink.demogen.recognition import demo_patient_results

    dp = demo_patient(plat)
    if dp is not None:
        console.print(f"demo patient: Patient/{dp.patient_id} at the demo doctor's hospital, records at "
                      f"{dp.institutions} institutions, open Encounter/{dp.encounter_id}; patient portal "
                      f"/portal/login with phone {dp.phone} (codes on /phone)", highlight=False, soft_wrap=True)
        recent = demo_patient_results(plat, dp.person_id, demo_logins()[0].institution)
        if recent is not None:
            console.print(f"demo patient's recent results at {recent[0]} (electrolytes, glucose, chest CT): "
                          "order them on the patient's page to see mutual recognition", highlight=False,
                          soft_wrap=True)
        from healthlink.demogen.bedside import demo_bedside

        bed = demo_bedside(plat, dp.patient_id, dp.encounter_id, demo_logins()[0].institution)
        console.print("bedside verification: sign in as 'nurse', open /bedside and scan (or paste) these:",
                      highlight=False, soft_wrap=True)
        for what, text in bed.labels:
            console.print(f"  {what}: {text}", highlight=False, soft_wrap=True, markup=False)
    from healthlink.demogen.prereview import DOCTOR, PHARMACIST, seed_prereview

    queued = seed_prereview(plat)  # issue 8: the regional pre-review centre (docs/prereview.md)
    console.print(f"pre-review: logins {PHARMACIST} (centre pharmacist, /prereview) and {DOCTOR} (township doctor, "
                  f"/prereview/mine); {queued} prescriptions submitted now", highlight=False, soft_wrap=True)


@app.command("demo")
def demo(
    patients: int = typer.Option(None, "--patients", "-n", min=0,
                                 help="Patient records in the generated region (default: "
                                      "HEALTHLINK_DEMO_PATIENTS, 2,000)."),
    seed: int = typer.Option(1, "--seed", help="Random seed; the same seed gives the same region."),
    out: str = typer.Option(None, "--out", help="Write NDJSON files and ground-truth.csv to this "
                                                 "directory instead of the database."),
    replay_days: int = typer.Option(0, "--replay-days", min=0, max=366,
                                    help="Then replay this many days of ordering with mutual recognition "
                                         "(e.g. 30; once per database; docs/demo-region.md)."),
    replay_month: bool = typer.Option(False, "--replay-month", help="The same as --replay-days 30."),
    replay_orders: int = typer.Option(2_700, "--replay-orders", min=1,
                                      help="Order lines of catalogue items in the replay."),
) -> None:
    """Migrate, seed the demo logins and load the generated region (docs/demo-region.md) unless
    the database already holds it; a load cut short is finished.  With --out: write the
    region's files instead.  With --replay-days: replay a month of ordering (mutual recognition:
    checks, reminders, adoptions, declines), so the rates page has figures."""
    from pathlib import Path

    from healthlink import demogen
    from healthlink.db.migrate import upgrade

    s = _settings()
    n = s.demo_patients if patients is None else patients
    if out:
        opts = demogen.Options(patients=n, seed=seed)
        w = demogen.write_region(opts, Path(out))
        console.print(f"wrote {w.resources:,} resources ({w.patients:,} Patient records, {w.bytes:,} bytes) "
                      f"to {out}; ground truth in {Path(out) / 'ground-truth.csv'}")
        return
    plat = _platform(s)
    try:
        upgrade(plat.db)
        _demo_region(plat, n, seed)
        days = 30 if replay_month and not replay_days else replay_days
        if days:
            _demo_replay(plat, days, replay_orders, seed)
    except HealthLinkError as exc:
        _fail(exc)
    finally:
        plat.close()


def _demo_replay(plat, days: int, orders: int, seed: int) -> None:  # noqa: ANN001
    """``healthlink demo --replay-days``: a month of ordering (healthlink.demogen.replay)."""
    from healthlink.demogen.replay import replay

    with console.status(f"replaying {days} days of ordering ({orders:,} order lines) …") as status:
        try:
            r = replay(plat, days=days, orders=orders, seed=seed,
                       progress=lambda done, total: status.update(f"replay: visit {done:,} of {total:,}"))
        except KeyboardInterrupt:
            err.print("[red]interrupted:[/red] the replay is partly written (whole visits); a new run replays "
                      "a fresh month on top of it")
            raise typer.Exit(130) from None
    if r.present:
        console.print(f"demo replay already present: {r.since} to {r.until}, {r.orders:,} orders, "
                      f"{r.adopted:,} adopted, {r.declined:,} declined, savings {r.savings_yuan:,} yuan; "
                      "nothing replayed", highlight=False, soft_wrap=True)
        return
    console.print(
        f"demo replay {r.since} to {r.until}: {r.visits:,} visits, {r.orders:,} orders of catalogue items, "
        f"{r.found:,} with a recognisable result (retrieval {r.retrieval_rate:.1%}), {r.reminded:,} reminders, "
        f"{r.adopted:,} adopted (recognition {r.recognition_rate:.1%}), {r.declined:,} declined, "
        f"savings {r.savings_yuan:,} yuan; {r.results_written:,} result resources, {r.grants:,} in-person "
        f"grants, {r.seconds:.0f} s", highlight=False, soft_wrap=True)
    if r.reasons:
        console.print("decline reasons: " + ", ".join(f"{k} {v}" for k, v in r.reasons.most_common()),
                      highlight=False, soft_wrap=True)


@app.command("ingest")
def ingest(
    paths: list[Path] = typer.Argument(..., help="NDJSON (.ndjson) or Bundle (.json) files, optionally .gz."),
    institution: str = typer.Option(..., help="Organization id of the institution the data comes from."),
    batch_size: int = typer.Option(500, help="Records per transaction."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Bulk-ingest an institution's files; rejected records go to quarantine (docs/ingest.md)."""
    import orjson
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from healthlink.ingest import ingest_files

    plat = _platform(_settings())
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed:,}/{task.fields[of]} records"),
                      TextColumn("{task.fields[rate]:,.0f} rows/s"), TimeRemainingColumn(),
                      console=err, transient=True) as bar:
            task = bar.add_task("checking", total=None, rate=0.0, of="?")

            phase_now = ["read"]

            def progress(phase: str, done: int, total: int) -> None:
                if phase != phase_now[0]:  # pass 2: a bar with a total, so an ETA
                    phase_now[0] = phase
                    bar.reset(task, description="writing", total=total, of=f"{total:,}", rate=0.0)
                elapsed = bar.tasks[task].elapsed or 0.0
                bar.update(task, completed=done, total=total or None,
                           rate=done / elapsed if elapsed else 0.0)

            report = ingest_files(plat.services, paths, institution=institution,
                                  batch_size=batch_size, progress=progress)
        if as_json:
            console.print_json(orjson.dumps(report.to_json()).decode())
        else:
            _print_report(report)
    except HealthLinkError as exc:
        _fail(exc)
    finally:
        plat.close()


def _print_report(report) -> None:  # noqa: ANN001
    from rich.table import Table

    table = Table(title=f"upload {report.upload_id} ({report.institution})")
    for col in ("type", "read", "accepted", "updated", "unchanged", "quarantined"):
        table.add_column(col, justify="left" if col == "type" else "right")
    for rt in sorted(report.read):
        table.add_row(rt, *(str(getattr(report, k)[rt])
                            for k in ("read", "accepted", "updated", "unchanged", "quarantined")))
    tot = report.totals()
    table.add_row("total", *(str(tot[k]) for k in ("read", "accepted", "updated", "unchanged", "quarantined")))
    console.print(table)
    for reason, n in sorted(report.reasons.items()):
        console.print(f"quarantined ({reason}): {n}")
    if report.pending_empi or report.linked_empi:
        console.print(f"patients linked to persons (EMPI): {report.linked_empi:,}")


@app.command("link")
def link(
    engine: str = typer.Option("duckdb", help="Splink backend: duckdb (one machine) or spark (local mode, "
                                              "or the cluster of SPARK_MASTER; needs Java 17 and pyspark)."),
    retrain: bool = typer.Option(False, "--train", help="Train a new model on the linked records first "
                                                         "and make it the active one."),
) -> None:
    """Re-link every Patient in one batch (after a model change or a bulk load); Person ids
    stay stable and reviewers' decisions are kept (docs/identity.md)."""
    from healthlink.identity.relink import relink

    if engine not in ("duckdb", "spark"):
        _fail(Invalid(f"unknown engine '{engine}': use duckdb or spark"))
    plat = _platform(_settings())
    try:
        with console.status(f"linking with Splink on {engine} …"):
            rep = relink(plat.identity, engine=engine, retrain=retrain)
    except HealthLinkError as exc:
        _fail(exc)
    finally:
        plat.close()
    console.print(f"{rep.records:,} Patient records -> {rep.clusters:,} Persons "
                  f"({rep.persons_kept:,} kept their id, {rep.persons_new:,} new, {rep.persons_emptied:,} emptied); "
                  f"{rep.patients_moved:,} Patients moved; {rep.review_pairs:,} pairs for review; "
                  f"model {rep.model_version}; "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in rep.timings_s.items()))


@app.command("serve")
def serve(
    with_demo: bool = typer.Option(False, "--demo", help="Migrate, seed the demo logins, load the generated "
                                   "demo region (once per database) and print a demo login."),
) -> None:
    """Run the server (uvicorn) on HEALTHLINK_HOST:HEALTHLINK_PORT."""
    import uvicorn

    s = _settings()
    if with_demo or s.demo:
        from healthlink import demo as d
        from healthlink.db.migrate import upgrade

        plat = _platform(s)
        try:
            upgrade(plat.db)
            _demo_region(plat, s.demo_patients, serving=True)
        except HealthLinkError as exc:
            _fail(exc)
        finally:
            plat.close()
        scheme = "https" if s.tls_certfile else "http"
        console.print(f"\nHealthLink is starting at [bold]{scheme}://{s.host}:{s.port}/[/bold]")
        console.print(f"FHIR API: {scheme}://{s.host}:{s.port}/fhir/metadata   API docs: {scheme}://{s.host}:{s.port}/docs")
        console.print(f"Demo login: [bold]doctor[/bold] / [bold]{d.DEMO_PASSWORD}[/bold] "
                      f"(also nurse, pharmacist, clerk, empi, quality, president, leader, sysadmin, "
                      f"secadmin, auditor, doctor.b — same password)")
        console.print(f"  curl -s -X POST {scheme}://{s.host}:{s.port}/api/auth/login "
                      f"-H 'content-type: application/json' "
                      f"-d '{{\"username\":\"doctor\",\"password\":\"{d.DEMO_PASSWORD}\"}}'\n")
    _check_sms_gateway(s)
    os.environ.setdefault("HEALTHLINK_DATABASE_URL", s.database_url)
    uvicorn.run("healthlink.api.asgi:app", host=s.host, port=s.port, workers=s.workers,
                ssl_certfile=str(s.tls_certfile) if s.tls_certfile else None,
                ssl_keyfile=str(s.tls_keyfile) if s.tls_keyfile else None,
                proxy_headers=True, forwarded_allow_ips=s.forwarded_allow_ips,
                access_log=False, log_config=None)


# -- witness: a standalone tlog-witness (docs/ledger.md, "Checkpoints and witnesses") ------------
witness_app = typer.Typer(help="Run a transparency-log witness (c2sp.org/tlog-witness@v1.0.0).",
                          no_args_is_help=True)
app.add_typer(witness_app, name="witness")


@witness_app.command("init")
def witness_init(directory: Path = typer.Option(..., "--dir", help="The witness's own directory."),
                 name: str = typer.Option(..., "--name", help="Key name, e.g. witness.commission.example/w1.")
                 ) -> None:
    """Create the witness's key (once) and print its vkey for the log operators."""
    from healthlink.ledger.witness import init_witness

    try:
        cosigner = init_witness(directory, name)
    except HealthLinkError as exc:
        _fail(exc)
    console.print(cosigner.vkey, highlight=False, soft_wrap=True)


@witness_app.command("serve")
def witness_serve(
    directory: Path = typer.Option(..., "--dir", help="The directory 'witness init' created."),
    logs: list[str] = typer.Option(..., "--log", help="'<origin> <vkey> [<vkey>...]' of a log to "
                                   "witness; repeat for several."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8470, "--port"),
) -> None:
    """Serve POST /add-checkpoint and GET /checkpoint/{origin} with uvicorn."""
    import uvicorn

    from healthlink.api.witness_app import create_witness_app
    from healthlink.ledger.witness import LogConfig, Witness

    try:
        witness = Witness.open(directory, [LogConfig.parse(spec) for spec in logs])
    except HealthLinkError as exc:
        _fail(exc)
    console.print(f"witness {witness.name} at http://{host}:{port}/  vkey {witness.vkey}",
                  highlight=False, soft_wrap=True)
    try:
        uvicorn.run(create_witness_app(witness), host=host, port=port, access_log=False, log_config=None)
    finally:
        witness.close()


# -- ledger: the tamper-evident audit ledger (docs/ledger.md) -------------------------------------
ledger_app = typer.Typer(help="The tamper-evident audit ledger (Merkle tree, checkpoints, witnesses).",
                         no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")


def _ledger_settings() -> Settings:
    import os

    os.environ.setdefault("HEALTHLINK_LEDGER_SEQUENCER", "false")  # this command drives it itself
    return _settings()


@ledger_app.command("verify")
def ledger_verify(
    witness: str | None = typer.Option(None, "--witness", help="URL of a witness: its latest cosigned "
                                       "checkpoint of this log must be consistent with the stored tree "
                                       "(catches a truncation that also removed the local checkpoints)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Recompute the tree from the stored records and check every checkpoint; exit 1 on any finding."""
    import json

    from healthlink.db import Database
    from healthlink.ledger import setup as ls
    from healthlink.ledger.verify import verify

    s = _ledger_settings()
    db = Database(s.database_url)
    opener = ls.note_opener(s)
    fetch = None
    if witness:
        from healthlink.ledger.witness_client import fetch_checkpoint

        def fetch():  # noqa: ANN202
            return opener(fetch_checkpoint(witness, s.ledger_origin))
    try:
        rep = verify(db, open_note=opener, witness_checkpoint=fetch)
    finally:
        db.dispose()
    if as_json:
        console.print_json(json.dumps(rep.to_json()))
    elif rep.ok:
        console.print(f"[green]ledger verified[/green]: {rep.size} leaves, {rep.checkpoints} checkpoints, "
                      f"{rep.cosignatures} cosignatures" + (f", witness at size {rep.witness_size}"
                                                             if rep.witness_size is not None else "")
                      + f" ({rep.seconds} s)")
    else:
        err.print(f"[red]ledger verification FAILED[/red]: first bad leaf index {rep.first_bad}")
        for p in rep.problems:
            err.print(f"  - {p}", highlight=False)
    raise typer.Exit(0 if rep.ok else 1)


@ledger_app.command("integrate")
def ledger_integrate(checkpoint: bool = typer.Option(True, help="Sign a checkpoint afterwards.")) -> None:
    """Integrate every pending audit record and result version now (the server's sequencer does this
    every second), then sign a checkpoint and push it to the witnesses."""
    from healthlink.db import Database
    from healthlink.ledger import setup as ls

    s = _ledger_settings()
    db = Database(s.database_url)
    try:
        led = ls.ledger(db, s)
        total = 0
        while (n := led.integrate()) > 0:
            total += n
        try:
            cp = led.checkpoint() if checkpoint else None
        except LookupError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
        size = led.head().size
    finally:
        db.dispose()
    console.print(f"{total} leaves integrated; tree size {size}"
                  + (f"; checkpoint of size {cp[0]}" if cp else ""))


@ledger_app.command("checkpoint")
def ledger_checkpoint() -> None:
    """Print the latest signed checkpoint (C2SP tlog-checkpoint note with any cosignatures)."""
    from healthlink.db import Database
    from healthlink.ledger import setup as ls

    s = _ledger_settings()
    db = Database(s.database_url)
    try:
        cps = ls.ledger(db, s).checkpoints(limit=1)
    finally:
        db.dispose()
    if not cps:
        err.print("no checkpoint yet")
        raise typer.Exit(1)
    console.print(cps[0]["note"] + "".join(c["line"] for c in cps[0]["cosignatures"]), end="",
                  highlight=False, soft_wrap=True)


@ledger_app.command("purge")
def ledger_purge(days: int | None = typer.Option(None, "--days", help="Retention in days (default: "
                                                 "HEALTHLINK_AUDIT_RETENTION_DAYS).")) -> None:
    """Empty the bodies and salts of audit records older than the retention period (their leaf hashes
    stay: the ledger still verifies)."""
    from healthlink.db import Database
    from healthlink.ledger import setup as ls

    s = _ledger_settings()
    keep = days if days is not None else s.audit_retention_days
    if keep < 183:
        err.print("[red]error:[/red] retention is at least 183 days (the Cybersecurity Law's 6 months)")
        raise typer.Exit(2)
    db = Database(s.database_url)
    try:
        total = 0
        while (n := ls.ledger(db, s).purge(retention_days=keep)) > 0:
            total += n
    finally:
        db.dispose()
    console.print(f"{total} audit records older than {keep} days purged")


@ledger_app.command("rotate-key")
def ledger_rotate_key() -> None:
    """Replace the checkpoint signing key; the old public key stays trusted for older checkpoints.
    Give witnesses the new vkey (printed) before the next checkpoint."""
    from healthlink.ledger import setup as ls
    from healthlink.ledger.checkpoint import rotate_key

    s = _ledger_settings()
    ls.signer(s)  # make sure there is a key to rotate
    new = rotate_key(ls.key_path(s), s.ledger_origin)
    console.print(new.vkey, highlight=False, soft_wrap=True)


@ledger_app.command("vkey")
def ledger_vkey() -> None:
    """Print the log's verifier key (give it to witnesses and outside verifiers)."""
    from healthlink.ledger import setup as ls

    console.print(ls.signer(_ledger_settings()).vkey, highlight=False, soft_wrap=True)


recognition_app = typer.Typer(help="Mutual recognition of results: the catalogue and qualified issuers.",
                              no_args_is_help=True)
app.add_typer(recognition_app, name="recognition")


@recognition_app.command("load")
def recognition_load(path: Path = typer.Argument(..., help="The region's catalogue file (JSON, docs/recognition.md).")
                     ) -> None:
    """Validate a catalogue file and put it in force (stored with its version and SHA-256; loading the
    same file again changes nothing).  Running servers take it up at their next start."""
    from healthlink.recognition import store

    plat = _platform(_settings())
    try:
        cat, new = store.load(plat.db, path, by=f"cli:{getpass.getuser()}")
    except HealthLinkError as exc:
        for issue in exc.issues or []:
            err.print(f"  {issue.diagnostics}", highlight=False, soft_wrap=True)
        _fail(exc)
    finally:
        plat.close()
    console.print(f"catalogue version {cat.version}: {len(cat.items)} items "
                  f"({'now in force' if new else 'already in force, unchanged'})")


@recognition_app.command("catalogue")
def recognition_catalogue() -> None:
    """The catalogue in force and those loaded before it."""
    from datetime import datetime, timezone

    from healthlink.recognition import store

    plat = _platform(_settings())
    try:
        plat.recognition.catalogue  # noqa: B018 - stores the bundled default on first use
        rows = store.history(plat.db)
    finally:
        plat.close()
    for r in rows:
        when = datetime.fromtimestamp(r["loaded"] / 1e6, timezone.utc).isoformat(timespec="seconds")
        console.print(f"{'*' if r['active'] else ' '} version {r['version']}  {r['items']} items  "
                      f"sha256 {r['sha256'][:16]}  loaded {when} by {r['loaded_by']}", highlight=False, soft_wrap=True)


@recognition_app.command("qualify")
def recognition_qualify(
    institution: str = typer.Option(..., help="Organization id of the issuing institution."),
    item: str = typer.Option("*", help="Catalogue item id (e.g. HR-K), or * for every item."),
    basis: str = typer.Option("eqa", help="eqa (external quality assessment) or qc-centre."),
    valid_from: str = typer.Option(..., "--from", help="First day qualified (YYYY-MM-DD)."),
    valid_to: str | None = typer.Option(None, "--to", help="Last day qualified (YYYY-MM-DD); default open."),
    reference: str | None = typer.Option(None, help="Certificate or EQA round."),
) -> None:
    """Record that an institution passed quality control for an item: only results it issued on days it
    was qualified are recognised elsewhere."""
    from datetime import date

    from healthlink.access import RequestContext
    from healthlink.access.context import Actor

    try:
        start = date.fromisoformat(valid_from)
        end = date.fromisoformat(valid_to) if valid_to else None
    except ValueError as exc:
        err.print(f"[red]error:[/red] dates are YYYY-MM-DD: {exc}")
        raise typer.Exit(2) from None
    plat = _platform(_settings())
    try:
        q = plat.recognition.qualify(RequestContext(actor=Actor.system(f"cli:{getpass.getuser()}"), address="local",
                                                    purpose_of_use="HOPERAT"),
                                     institution_id=institution, item_id=item, basis=basis, valid_from=start,
                                     valid_to=end, reference=reference)
    except HealthLinkError as exc:
        _fail(exc)
    finally:
        plat.close()
    console.print(f"{q.institution_id} qualified for {q.item_id} ({q.basis}) from {q.valid_from}"
                  f"{' to ' + str(q.valid_to) if q.valid_to else ''}")


@recognition_app.command("qualifications")
def recognition_qualifications(institution: str | None = typer.Option(None, help="Only this institution.")) -> None:
    """List the recorded qualifications."""
    plat = _platform(_settings())
    try:
        rows = plat.recognition.qualifications(institution)
    finally:
        plat.close()
    for q in rows:
        console.print(f"{q.institution_id}  {q.item_id}  {q.basis}  {q.valid_from} .. {q.valid_to or 'open'}"
                      f"{'  ' + q.reference if q.reference else ''}", highlight=False, soft_wrap=True)



medsafety_app = typer.Typer(help="Medication safety: the knowledge base in force.", no_args_is_help=True)
app.add_typer(medsafety_app, name="medsafety")


@medsafety_app.command("load")
def medsafety_load(
    files: list[Path] = typer.Argument(..., help="Knowledge file(s) (JSON, the format of docs/medsafety.md)."),
    extend: bool = typer.Option(False, "--extend", help="Add the files' entries to the bundled knowledge base "
                                "(same ids replace) instead of replacing it."),
) -> None:
    """Validate knowledge file(s) and put them in force: the first file replaces the bundled knowledge
    base (further files extend it), or with --extend every file extends the bundled base.  Stored with
    version and SHA-256; a bad file changes nothing, and each error is named with its file and path.
    Running servers take it up within seconds."""
    from healthlink.medsafety import store

    plat = _platform(_settings())
    try:
        kb, new = store.load(plat.db, files, extend=extend, by=f"cli:{getpass.getuser()}")
    except HealthLinkError as exc:
        for issue in exc.issues or []:
            err.print(f"  {issue.diagnostics}", highlight=False, soft_wrap=True)
        _fail(exc)
    finally:
        plat.close()
    c = kb.counts()
    console.print(f"knowledge version {kb.version}: {c['ingredients']} ingredients, {c['products']} products, "
                  f"{c['interactions']} interactions ({'now in force' if new else 'already in force, unchanged'})",
                  highlight=False, soft_wrap=True)


@medsafety_app.command("knowledge")
def medsafety_knowledge(as_json: bool = typer.Option(False, "--json", help="Print it as JSON.")) -> None:
    """The knowledge in force (version, provenance, counts per section, sources) and those loaded before it."""
    import json
    from datetime import datetime, timezone

    from healthlink.medsafety import store

    plat = _platform(_settings())
    try:
        plat.medsafety.knowledge  # noqa: B018 - stores the bundled default on first use
        kb, row = store.active(plat.db)  # type: ignore[misc]
        rows = store.history(plat.db)
    finally:
        plat.close()
    info = store.describe(kb, row)
    if as_json:
        console.print_json(json.dumps({**info, "history": rows}, ensure_ascii=False))
        return
    prov = info["provenance"]
    console.print(f"version {info['version']} ({info['date']}), {row['mode']}, publisher {prov['publisher']}",
                  highlight=False, soft_wrap=True)
    for f in row["files"]:
        console.print(f"  {f['role']}: {f['name']} version {f['version']} sha256 {f['sha256'][:16]}",
                      highlight=False, soft_wrap=True)
    for k, v in info["counts"].items():
        console.print(f"  {k}: {v}", highlight=False, soft_wrap=True)
    console.print(f"sources ({len(info['sources'])}):", highlight=False)
    for src in info["sources"]:
        console.print(f"  [{src['id']}] {src['citation']}", highlight=False, soft_wrap=True, markup=False)
    console.print("loaded:", highlight=False)
    for r in rows:
        when = datetime.fromtimestamp(r["loaded"] / 1e6, timezone.utc).isoformat(timespec="seconds")
        console.print(f"{'*' if r['active'] else ' '} version {r['version']}  {r['mode']}  sha256 {r['sha256'][:16]}  "
                      f"loaded {when} by {r['loaded_by']}", highlight=False, soft_wrap=True, markup=False)

if __name__ == "__main__":
    app()


dashboard_app = typer.Typer(help="The leaders' dashboard: recount its pre-aggregated indicators.",
                            no_args_is_help=True)
app.add_typer(dashboard_app, name="dashboard")


@dashboard_app.command("refresh")
def dashboard_refresh(full: bool = typer.Option(
        False, "--full", help="Recount every day, not only those since each source's high-water mark.")) -> None:
    """Recount the dashboard's daily and monthly counts (docs/dashboard.md "Pre-aggregation")."""
    plat = _platform(_settings())
    try:
        took = plat.dashboard.refresh(full=full)
    finally:
        plat.close()
    for source, seconds in took.items():
        console.print(f"{source:12} {seconds:8.3f} s")
