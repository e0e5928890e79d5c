"""``healthlink`` command line: serve, db upgrade, user add, client add, demo."""

from __future__ import annotations

import getpass
import os
import sys

import typer
from rich.console import Console

from healthlink.errors import HealthLinkError
from healthlink.settings import Settings, load_settings

app = typer.Typer(help="HealthLink regional health information platform.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
user_app = typer.Typer(help="Staff accounts.", no_args_is_help=True)
client_app = typer.Typer(help="Machine clients (hospital systems).", no_args_is_help=True)
app.add_typer(db_app, name="db")
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

    return Platform.start(settings)


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


@app.command("demo")
def demo() -> None:
    """Seed the small demo region (institutions, logins for every role, a HIS client)."""
    from healthlink import demo as d

    plat = _platform(_settings())
    try:
        made = d.seed(plat)
        console.print("demo region seeded" if made else "demo region already present")
    finally:
        plat.close()


@app.command("serve")
def serve(
    with_demo: bool = typer.Option(False, "--demo", help="Migrate, seed the demo region and print demo logins."),
) -> None:
    """Run the server (uvicorn) on HEALTHLINK_HOST:HEALTHLINK_PORT."""
    import uvicorn

    s = _settings()
    if with_demo or s.demo:
        from healthlink import demo as d
        from healthlink.db.migrate import upgrade

        plat = _platform(s)
        upgrade(plat.db)
        d.seed(plat)
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
    os.environ.setdefault("HEALTHLINK_DATABASE_URL", s.database_url)
    uvicorn.run("healthlink.api.asgi:app", host=s.host, port=s.port, workers=s.workers,
                ssl_certfile=str(s.tls_certfile) if s.tls_certfile else None,
                ssl_keyfile=str(s.tls_keyfile) if s.tls_keyfile else None,
                proxy_headers=True, forwarded_allow_ips=s.forwarded_allow_ips,
                access_log=False, log_config=None)


if __name__ == "__main__":
    app()
