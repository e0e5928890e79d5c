"""Fault tests (issue 9): `healthlink serve` SIGKILLed in the middle of a bulk `$import` and in
the middle of a transaction Bundle, then restarted and the same request sent again.  Every
record ends stored exactly once, the quarantine holds what an uninterrupted run holds, nothing
of a killed transaction is left, every stored resource has its audit record, and the ledger
verifies (docs/faults.md)."""

from __future__ import annotations

import threading
import time

import httpx
import orjson
import pytest
from faultkit import fault_db, new_client, resources, settle_and_verify_ledger, versions  # noqa: F401
from ingest_data import INVALID, write_upload
from sqlalchemy import func, select

from healthlink.access import RequestContext
from healthlink.db import tables as t
from healthlink.ingest import jobs
from healthlink.ingest import service as ingest_service

pytestmark = pytest.mark.fault

N_INVALID = sum(INVALID.values())  # 37 of the 10,000 records


def _counts(db, org: str) -> dict[str, int]:  # noqa: ANN001
    r, q = t.resource.c, t.ingest_quarantine.c
    ref = r.res_type + "/" + r.res_id
    with db.read() as conn:
        return {
            "resources": conn.scalar(select(func.count()).where(r.institution_id == org)),
            "distinct ids": conn.scalar(select(func.count(func.distinct(ref))).where(r.institution_id == org)),
            "quarantine": conn.scalar(select(func.count()).where(q.institution_id == org)),
            "distinct quarantined records": conn.scalar(
                select(func.count(func.distinct(q.raw_hash))).where(q.institution_id == org)),
            "audited resources": conn.scalar(
                select(func.count(func.distinct(ref))).select_from(t.resource.join(
                    t.audit_entity, t.audit_entity.c.ref == ref)).where(r.institution_id == org)),
        }


def _wait_for(cond, *, timeout: float, what: str, server=None) -> None:  # noqa: ANN001
    deadline = time.time() + timeout
    while not cond():
        if server is not None and server.proc.poll() is not None:
            pytest.fail(f"the server died while waiting for {what}:\n{server.tail()}")
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_server_killed_during_import_then_import_again_stores_every_record_once(fault_db, tmp_path, monkeypatch):
    db = fault_db.platform.db
    upload = write_upload(tmp_path / "upload.ndjson")
    # what an uninterrupted upload of this file leaves (tests/test_ingest.py checks that it does)
    accepted = 10_000 - N_INVALID
    expected = {"resources": accepted, "distinct ids": accepted, "quarantine": N_INVALID,
                "distinct quarantined records": N_INVALID, "audited resources": accepted}

    org = fault_db.institution()
    cid, secret = new_client(fault_db.platform, org)
    server = fault_db.server().start()
    try:
        headers = {**server.token(cid, secret), "Content-Type": "application/fhir+ndjson"}
        r = httpx.post(f"{server.base}/fhir/$import", content=upload.read_bytes(), headers=headers, timeout=60)
        assert r.status_code == 202, r.text
        killed = r.headers["Content-Location"].rsplit("/", 1)[1]
        # several batches committed, the upload far from done: SIGKILL
        _wait_for(lambda: resources(db, org) >= 1500, timeout=120, what="the first batches", server=server)
        server.kill()
        partial = _counts(db, org)
        assert 1500 <= partial["resources"] < expected["resources"]
        # the killed upload's row still says running; once its heartbeat is overdue it is reported
        # failed (not 202 for ever), so the client knows to send the files again
        ctx = RequestContext(actor=ingest_service.ingest_actor(org), address="local", purpose_of_use="HOPERAT")
        assert jobs.import_status(fault_db.platform.services, killed, ctx=ctx) == ("running", None)
        monkeypatch.setattr(ingest_service, "STALE_AFTER_S", 0.2)
        time.sleep(0.3)
        assert jobs.import_status(fault_db.platform.services, killed, ctx=ctx) == ("failed", None)
        monkeypatch.undo()

        server.start()  # a new process on the same port and database
        r = httpx.post(f"{server.base}/fhir/$import", content=upload.read_bytes(), headers=headers, timeout=60)
        assert r.status_code == 202, r.text
        status_url = r.headers["Content-Location"]
        report = {}

        def done() -> bool:
            nonlocal report
            s = httpx.get(status_url, headers=headers, timeout=30)
            assert s.status_code in (200, 202), s.text
            report = s.json() if s.status_code == 200 else {}
            return s.status_code == 200

        _wait_for(done, timeout=180, what="the second $import", server=server)
    finally:
        server.kill()
    got = _counts(db, org)
    assert got == expected  # stored once, quarantine of an uninterrupted run, every resource audited
    assert got["distinct ids"] == got["resources"] == got["audited resources"]
    assert got["quarantine"] == got["distinct quarantined records"] == N_INVALID
    assert versions(db, org) == expected["resources"]  # a resend made no second version
    # the EMPI step at the end of the upload linked every accepted Patient, the killed run's too
    with db.read() as conn:
        linked = conn.scalar(select(func.count()).where(t.person_link.c.institution_id == org))
        pending = conn.scalar(select(func.count()).where(t.empi_pending.c.institution_id == org))
    patients = 2000 - INVALID["resident-id"] - (INVALID["structure"] - INVALID["structure"] // 2)
    assert linked == resources(db, org, "Patient") == patients and pending == 0
    totals = report["totals"]
    assert totals["read"] == 10_000 and totals["quarantined"] == N_INVALID
    assert totals["accepted"] + totals["unchanged"] == expected["resources"] and totals["updated"] == 0
    assert totals["unchanged"] >= partial["resources"]
    settle_and_verify_ledger(fault_db.platform)


N_OBS = 1000


def _bundle(org: str) -> bytes:
    """One transaction: a Patient and its Observations, each a conditional create on its
    identifier (the retry-safe way to send a transaction, FHIR http.html#ccreate)."""
    pat_url = "urn:uuid:0b9e4b3c-1f6a-4c41-9a51-3c1f6f1d0001"
    entries = [{"fullUrl": pat_url,
                "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:fault:mrn", "value": org}],
                             "name": [{"family": "Fault", "given": [org]}], "gender": "female",
                             "birthDate": "1970-01-01"},
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier=urn:fault:mrn|{org}"}}]
    for i in range(N_OBS):
        ident = f"{org}-{i}"
        entries.append({
            "resource": {"resourceType": "Observation", "status": "final",
                         "identifier": [{"system": "urn:fault:obs", "value": ident}],
                         "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
                         "subject": {"reference": pat_url}, "effectiveDateTime": "2024-08-01T10:00:00+08:00",
                         "valueQuantity": {"value": 110 + i % 50, "unit": "g/L",
                                           "system": "http://unitsofmeasure.org", "code": "g/L"}},
            "request": {"method": "POST", "url": "Observation", "ifNoneExist": f"identifier=urn:fault:obs|{ident}"}})
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


def _open_write_transactions(db, app_name: str) -> int:  # noqa: ANN001
    """PostgreSQL: the server's sessions inside a transaction that has written (has an xid)."""
    with db.read_one() as conn:
        return conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND backend_xid IS NOT NULL",
            (app_name,)).scalar()


def test_server_killed_during_a_transaction_bundle_leaves_nothing_and_the_retry_stores_each_entry_once(
        fault_db):
    db = fault_db.platform.db
    on_pg = not db.is_sqlite
    app_name = "hl_fault_tx"
    url = fault_db.url + (f"?application_name={app_name}" if on_pg else "")
    server = fault_db.server(database_url=url).start()
    try:
        # an uninterrupted run of the same shape, for its duration and its counts
        ref = fault_db.institution()
        cid, secret = new_client(fault_db.platform, ref)
        ref_headers = {**server.token(cid, secret), "Content-Type": "application/fhir+json"}
        started = time.monotonic()
        r = httpx.post(f"{server.base}/fhir", content=_bundle(ref), headers=ref_headers, timeout=300)
        took = time.monotonic() - started
        assert r.status_code == 200, r.text
        assert resources(db, ref) == N_OBS + 1

        org = fault_db.institution()
        cid, secret = new_client(fault_db.platform, org)
        headers = {**server.token(cid, secret), "Content-Type": "application/fhir+json"}
        body = _bundle(org)
        outcome: dict[str, object] = {}

        def send() -> None:
            try:
                outcome["status"] = httpx.post(f"{server.base}/fhir", content=body, headers=headers,
                                               timeout=300).status_code
            except httpx.HTTPError as exc:
                outcome["error"] = exc

        th = threading.Thread(target=send)
        th.start()
        if on_pg:  # kill once the transaction has written rows (it holds an xid)
            _wait_for(lambda: _open_write_transactions(db, app_name) > 0, timeout=took * 3 + 30,
                      what="the transaction's first write", server=server)
            time.sleep(took / 4)
        else:  # SQLite shows no open transaction to another process: half the reference time
            time.sleep(took / 2)
        server.kill()
        th.join(timeout=60)
        assert "error" in outcome, f"the transaction was not in flight when the server died: {outcome}"
        # PostgreSQL rolls the dead session's transaction back; SQLite's WAL never had its commit
        _wait_for(lambda: not on_pg or _open_write_transactions(db, app_name) == 0, timeout=30,
                  what="the dead session's rollback")
        assert resources(db, org) == 0 and versions(db, org) == 0

        server.start()
        for _ in range(2):  # the retry, and a retry of the retry: conditional creates match
            r = httpx.post(f"{server.base}/fhir", content=body, headers=headers, timeout=300)
            assert r.status_code == 200, r.text
            assert resources(db, org, "Observation") == N_OBS and resources(db, org, "Patient") == 1
            assert versions(db, org) == N_OBS + 1
        statuses = [e["response"]["status"] for e in r.json()["entry"]]
        assert all(s.startswith("200") for s in statuses), set(statuses)  # the second retry created nothing
    finally:
        server.kill()
    got = _counts(db, org)
    assert got["resources"] == got["distinct ids"] == got["audited resources"] == N_OBS + 1
    settle_and_verify_ledger(fault_db.platform)
