"""Test fixtures: the real app, in-process, against a real database.

The database is chosen by ``HEALTHLINK_TEST_DB``: ``sqlite`` (default; a fresh file per
session) or ``postgresql`` (a fresh database per session on
``HEALTHLINK_TEST_PG_URL``, default postgresql+psycopg://postgres@127.0.0.1:5432).
Tests isolate themselves by making their own institutions and users (``staff``).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from healthlink.accounts import add_client, add_user
from healthlink.api import create_app
from healthlink.db.migrate import upgrade
from healthlink.runtime import Platform
from healthlink.settings import Settings

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TESTDATA = SHARED / "testdata"
PASSWORD = "test-password-1"


def pytest_report_header(config: pytest.Config) -> str:
    return f"healthlink test database: {os.environ.get('HEALTHLINK_TEST_DB', 'sqlite')}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    kind = os.environ.get("HEALTHLINK_TEST_DB", "sqlite")
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'healthlink.db'}"
        return
    if kind != "postgresql":
        raise pytest.UsageError("HEALTHLINK_TEST_DB must be sqlite or postgresql")
    import psycopg

    base = os.environ.get("HEALTHLINK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
    name = f"hl_test_{uuid.uuid4().hex[:12]}"
    admin = base.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(database_url=database_url, data_dir=tmp_path_factory.mktemp("data"),
                    secret_key="test-signing-key-" + "x" * 32, log_level="WARNING",
                    base_url="http://testserver", audit_batch_wait_ms=1.0)


@pytest.fixture(scope="session")
def platform(settings: Settings) -> Iterator[Platform]:
    plat = Platform.start(settings)
    upgrade(plat.db)
    yield plat
    if plat.db.is_sqlite:  # the whole suite's writes left an intact file (ADR 0020)
        with plat.db.read() as conn:
            problems = [r[0] for r in conn.exec_driver_sql("PRAGMA integrity_check")]
        assert problems == ["ok"], f"the suite's SQLite database is damaged: {problems[:10]}"
    plat.close()


@pytest.fixture(scope="session")
def app(settings: Settings, platform: Platform):  # noqa: ANN201
    return create_app(settings, platform=platform)


@pytest.fixture(scope="session")
def client(app) -> Iterator[TestClient]:  # noqa: ANN001
    with TestClient(app) as c:
        yield c


@dataclass
class Staff:
    username: str
    institution: str
    headers: dict[str, str]
    roles: list[str]


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_institution(platform: Platform):  # noqa: ANN201
    """Create an institution (Organization) of its own for a test; returns its id."""
    def make(tier: str = "county") -> str:
        from healthlink.demo import organization

        org_id = _unique("org")
        repo = platform.system_repository("tests")
        with platform.db.write() as conn:
            repo.update_in(conn, "Organization", org_id, organization(org_id, f"Test {org_id}", tier, None),
                           if_match=None)
        return org_id
    return make


@pytest.fixture
def staff(client: TestClient, platform: Platform, make_institution):  # noqa: ANN001, ANN201
    """Make a logged-in staff user: staff("doctor") or staff("nurse", institution=org)."""
    def make(*roles: str, institution: str | None = None) -> Staff:
        org = institution or make_institution()
        username = _unique(roles[0] if roles else "doctor")
        add_user(platform.db, username=username, password=PASSWORD, display_name=username,
                 roles=list(roles or ["doctor"]), institution_id=org,
                 practitioner_id=_unique("prac"))
        r = client.post("/api/auth/login", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return Staff(username, org, {"Authorization": f"Bearer {r.json()['access_token']}"},
                     list(roles or ["doctor"]))
    return make


@pytest.fixture
def his_client(client: TestClient, platform: Platform, make_institution):  # noqa: ANN001, ANN201
    """A hospital system (OAuth2 client credentials) of a new institution."""
    def make(institution: str | None = None, scopes: str = "system/*.cruds") -> Staff:
        org = institution or make_institution()
        cid = _unique("his")
        secret = add_client(platform.db, client_id=cid, display_name=cid, institution_id=org, scopes=scopes)
        r = client.post("/api/auth/token", data={"grant_type": "client_credentials",
                                                 "client_id": cid, "client_secret": secret})
        assert r.status_code == 200, r.text
        return Staff(cid, org, {"Authorization": f"Bearer {r.json()['access_token']}"}, ["his_client"])
    return make


@pytest.fixture(scope="module")
def module_his_client(client: TestClient, platform: Platform) -> Staff:
    """One hospital system of a new institution for a whole module (modules that load a
    large data set once, then check it in several tests)."""
    from healthlink.demo import organization

    org, cid = _unique("org"), _unique("his")
    repo = platform.system_repository("tests")
    with platform.db.write() as conn:
        repo.update_in(conn, "Organization", org, organization(org, f"Test {org}", "county", None),
                       if_match=None)
    secret = add_client(platform.db, client_id=cid, display_name=cid, institution_id=org)
    r = client.post("/api/auth/token", data={"grant_type": "client_credentials",
                                             "client_id": cid, "client_secret": secret})
    assert r.status_code == 200, r.text
    return Staff(cid, org, {"Authorization": f"Bearer {r.json()['access_token']}"}, ["his_client"])


@pytest.fixture
def auditor(staff):  # noqa: ANN001, ANN201
    return staff("audit_admin")


@pytest.fixture(scope="session")
def live_server(app) -> Iterator[str]:  # noqa: ANN001
    """The same app served by uvicorn on a free loopback port (for third-party clients)."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, lifespan="off"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    th.join(timeout=10)


def patient(**extra: object) -> dict:
    body = {"resourceType": "Patient", "name": [{"family": "Zhaxi", "given": ["Tsering"]}],
            "gender": "male", "birthDate": "1980-05-01"}
    body.update(extra)
    return body


def observation(patient_id: str, **extra: object) -> dict:
    body = {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7",
                                 "display": "Hemoglobin [Mass/volume] in Blood"}]},
            "subject": {"reference": f"Patient/{patient_id}"},
            "effectiveDateTime": "2024-08-01T10:00:00+08:00",
            "valueQuantity": {"value": 13.2, "unit": "g/dL", "system": "http://unitsofmeasure.org",
                              "code": "g/dL"}}
    body.update(extra)
    return body


@pytest.fixture
def fresh_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """An empty database of the suite's kind (HEALTHLINK_TEST_DB) that the CLI uses: the demo
    region's marker and patient ids are per database, so these tests do not share one."""
    url, admin, name = f"sqlite:///{tmp_path / 'demo.db'}", None, None
    if os.environ.get("HEALTHLINK_TEST_DB", "sqlite") == "postgresql":
        import psycopg

        base = os.environ.get("HEALTHLINK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
        name = f"hl_demo_{uuid.uuid4().hex[:12]}"
        admin = base.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"{base}/{name}"
    for k, v in {"DATABASE_URL": url, "DATA_DIR": str(tmp_path / "var"), "DEMO_PATIENTS": "40",
                 "SECRET_KEY": "test-signing-key-" + "x" * 32}.items():
        monkeypatch.setenv(f"HEALTHLINK_{k}", v)
    yield url
    if admin:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
