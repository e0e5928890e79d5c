"""Fault tests (issue 9): resources running out.  An exhausted connection pool answers 503
with a Retry-After within the pool timeout instead of hanging; a database whose disk is full
answers 503 with a clear message, stores nothing half, and serves reads and takes writes
again once space is freed; a database server that accepts TCP but never answers does not hang
a request past the connect timeout (docs/faults.md)."""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from faultkit import PgCluster, TinyFs, fault_db, new_client, open_platform, resources  # noqa: F401
from sqlalchemy import func, select, text
from sqlalchemy.exc import TimeoutError as PoolTimeout

from healthlink.api import create_app
from healthlink.db import Database
from healthlink.db import tables as t
from healthlink.errors import Unavailable

pytestmark = pytest.mark.fault


def _org(plat) -> str:  # noqa: ANN001
    from healthlink.demo import organization

    org = f"org-{uuid.uuid4().hex[:10]}"
    with plat.db.write() as conn:
        plat.system_repository("tests").update_in(conn, "Organization", org,
                                                  organization(org, f"Test {org}", "county", None), if_match=None)
    return org


def _login(client: TestClient, plat, org: str) -> dict[str, str]:  # noqa: ANN001
    cid, secret = new_client(plat, org)
    r = client.post("/api/auth/token", data={"grant_type": "client_credentials", "client_id": cid,
                                             "client_secret": secret})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _assert_503(r, *, fhir: bool = True) -> None:  # noqa: ANN001
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) > 0
    body = r.json()
    if fhir:
        assert r.headers["content-type"].startswith("application/fhir+json")
        assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "transient"
    else:
        assert r.headers["content-type"].startswith("application/problem+json") and body["status"] == 503
    assert "Traceback" not in r.text and "sqlalchemy" not in r.text.lower()


PATIENT = {"resourceType": "Patient", "name": [{"family": "Pool"}], "gender": "male", "birthDate": "1970-01-01"}


def test_exhausted_connection_pool_answers_503_within_the_pool_timeout_and_stores_nothing(fault_db):
    plat = open_platform(fault_db.url, fault_db.data_dir, db_pool_size=1, db_pool_timeout=0.5,
                         ledger_sequencer=False)
    held = []
    try:
        org = _org(plat)
        with TestClient(create_app(plat.settings, platform=plat)) as client:
            h = _login(client, plat, org)
            r = client.post("/fhir/Patient", json=PATIENT, headers=h)
            assert r.status_code == 201, r.text
            url = f"/fhir/Patient/{r.json()['id']}"
            before = resources(fault_db.platform.db, org)
            # take every connection the pool will give (its size and its overflow)
            while True:
                try:
                    held.append(plat.db.engine.connect())
                except PoolTimeout:
                    break
                assert len(held) < 10
            for call in (lambda: client.get(url, headers=h),
                         lambda: client.post("/fhir/Patient", json=PATIENT, headers=h),
                         lambda: client.get("/fhir/Patient?gender=male", headers=h)):
                started = time.monotonic()
                r = call()
                assert time.monotonic() - started < 3.0  # the pool timeout (0.5 s) plus the audit path, not a hang
                _assert_503(r)
            r = client.get("/api/me", headers=h)
            assert r.status_code in (200, 503)  # /api/me needs no database, or answers 503 like the rest
            if r.status_code == 503:
                _assert_503(r, fhir=False)
            assert resources(fault_db.platform.db, org) == before  # the refused create stored nothing
            for c in held:
                c.close()
            held.clear()
            assert client.get(url, headers=h).status_code == 200
            assert client.post("/fhir/Patient", json=PATIENT, headers=h).status_code == 201
            assert resources(fault_db.platform.db, org) == before + 1
    finally:
        for c in held:
            c.close()
        plat.close()


def test_a_burst_beyond_the_pool_is_served_without_opening_a_connection_per_request(fault_db):  # noqa: ANN001
    """400 audited reads, 40 at a time, against a server whose pool holds 3 connections: every one
    answered 200, and the database saw no more new sessions than the pool's size and its overflow.
    (With more request threads than pooled connections, the pool opened connections beyond its
    size and closed them again on return, a new PostgreSQL backend per request under load;
    request handlers now wait their turn in the process: ADR 0017.)"""
    import httpx

    srv = fault_db.server("burst.log", db_pool_size="3").start()
    try:
        org = fault_db.institution()
        h = srv.token(*new_client(fault_db.platform, org))
        r = httpx.post(f"{srv.base}/fhir/Patient", headers=h, timeout=30, json={
            "resourceType": "Patient", "name": [{"family": "Burst"}], "gender": "female"})
        assert r.status_code == 201, r.text
        url = f"{srv.base}/fhir/Patient/{r.json()['id']}"

        def sessions() -> int:
            time.sleep(1.0)  # the statistics of backends that just started are flushed within a second
            with fault_db.platform.db.read() as conn:
                conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
                return conn.exec_driver_sql(
                    "SELECT sessions FROM pg_stat_database WHERE datname = current_database()").scalar()

        def read(_: int) -> int:
            with httpx.Client(timeout=60) as c:
                return c.get(url, headers=h).status_code

        from concurrent.futures import ThreadPoolExecutor
        before = sessions()
        with ThreadPoolExecutor(40) as pool:
            codes = list(pool.map(read, range(400)))
        opened = sessions() - before
    finally:
        srv.kill()
    assert codes == [200] * 400
    assert opened <= 2 * 3 + 1, f"{opened} new database sessions for 400 requests"  # pool + overflow + ours


def test_a_database_that_never_answers_fails_the_request_within_the_connect_timeout():
    """A black hole: a port that accepts TCP connections and never says a word (a hung server,
    a half-open network path).  Without a connect timeout psycopg waits 130 s, then raised an
    error that was not mapped (a 500).  Needs no database: the black hole is a socket here."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    db = Database(f"postgresql+psycopg://postgres@127.0.0.1:{port}/hl", pool_size=2, pool_timeout=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable) as exc:
            with db.read() as conn:
                conn.execute(text("SELECT 1"))
        took = time.monotonic() - started
        assert took < 5.0, f"waited {took:.1f} s for a server that never answers"
        assert exc.value.headers.get("Retry-After")
    finally:
        db.dispose()
        sock.close()


# ------------------------------------------------------------------ disk full
def _bundle(n: int, tag: str) -> dict:
    """n Patients of ~3 KB each in one transaction (fills a small disk quickly)."""
    note = "x" * 3000
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:fault:fill", "value": f"{tag}-{i}"}],
                      "name": [{"family": "Fill", "given": [note]}], "gender": "female"},
         "request": {"method": "POST", "url": "Patient"}} for i in range(n)]}


@pytest.fixture
def full_disk_db(tmp_path: Path):  # noqa: ANN201
    """(url, TinyFs, ballast file) — a database of the suite's kind whose data lives on a
    tiny tmpfs: a SQLite file, or a PostgreSQL database in a tablespace there (the WAL stays
    on the ordinary disk, so PostgreSQL refuses the write instead of stopping)."""
    fs = TinyFs("10m" if os.environ.get("HEALTHLINK_TEST_DB") == "postgresql" else "8m")
    cluster = None
    try:
        if os.environ.get("HEALTHLINK_TEST_DB") == "postgresql":
            cluster = PgCluster()
            cluster.start()
            cluster.make_owned_dir(fs.path / "ts")
            cluster.sql(f"CREATE TABLESPACE tiny LOCATION '{fs.path / 'ts'}'")
            cluster.sql("CREATE DATABASE hl_full TABLESPACE tiny")
            url = cluster.url("hl_full")
        else:
            url = f"sqlite:///{fs.path / 'full.db'}"
        plat = open_platform(url, tmp_path / "var", ledger_sequencer=False)
        ballast = fs.path / "ballast"
        ballast.write_bytes(b"\0" * (2 * 1024 * 1024))  # freed later: "the operator made room"
        try:
            yield plat, fs, ballast
        finally:
            plat.close()
    finally:
        if cluster is not None:
            cluster.close()
        fs.close()


def test_full_disk_answers_503_stores_nothing_half_and_recovers_when_space_is_freed(full_disk_db):
    plat, fs, ballast = full_disk_db
    org = _org(plat)
    with TestClient(create_app(plat.settings, platform=plat)) as client:
        h = {**_login(client, plat, org), "Content-Type": "application/fhir+json"}
        r = client.post("/fhir/Patient", json=PATIENT, headers=h)
        assert r.status_code == 201, r.text
        reader = r.json()["id"]
        ok_bundles, refused = 0, None
        for n in range(400):
            r = client.post("/fhir", content=orjson.dumps(_bundle(40, f"b{n}")), headers=h)
            if r.status_code != 200:
                refused = r
                break
            ok_bundles += 1
        assert refused is not None, f"the disk never filled (free {fs.free_bytes()} bytes)"
        _assert_503(refused)
        assert "full" in refused.text.lower() or "space" in refused.text.lower(), refused.text
        assert ok_bundles >= 1
        # nothing half-stored: whole bundles only, every stored resource audited
        assert resources(plat.db, org, "Patient") == 1 + 40 * ok_bundles
        with plat.db.read() as conn:
            r_ = t.resource.c
            audited = conn.scalar(select(func.count(func.distinct(t.audit_entity.c.ref))).where(
                t.audit_entity.c.ref.in_(select(r_.res_type + "/" + r_.res_id).where(r_.institution_id == org))))
        assert audited == 1 + 40 * ok_bundles
        # still full: another write is refused the same way, and changes nothing
        r = client.post("/fhir", content=orjson.dumps(_bundle(40, "again")), headers=h)
        _assert_503(r)
        assert resources(plat.db, org, "Patient") == 1 + 40 * ok_bundles
        ballast.unlink()  # room again
        # (a read needs room too: its audit record must be durable before the data leaves)
        assert client.get(f"/fhir/Patient/{reader}", headers=h).status_code == 200
        r = client.post("/fhir", content=orjson.dumps(_bundle(5, "after")), headers=h)
        assert r.status_code == 200, r.text
        assert resources(plat.db, org, "Patient") == 1 + 40 * ok_bundles + 5
    # nothing corrupted
    with plat.db.read() as conn:
        if plat.db.is_sqlite:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        else:
            conn.exec_driver_sql("SELECT count(*) FROM resource").scalar()
            n_idx = conn.exec_driver_sql(
                "SELECT count(*) FROM resource WHERE institution_id = %s", (org,)).scalar()
            assert n_idx == 1 + 40 * ok_bundles + 5
