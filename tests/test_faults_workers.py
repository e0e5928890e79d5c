"""Fault test (issue 9): two app server processes against one database.  Concurrent
If-Match updates sent to both lose nothing (exactly one wins per version, the rest get 412);
the same human registered at the same moment at two institutions through the two processes
gets one Person, not two; the ledger, sequenced by both processes' sequencers, has no gaps
and verifies (docs/faults.md)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from faultkit import fault_db, new_client, settle_and_verify_ledger  # noqa: F401
from ingest_data import resident_id
from sqlalchemy import func, select

from healthlink.db import tables as t
from healthlink.fhir.identifiers import RESIDENT_ID_SYSTEM

pytestmark = pytest.mark.fault

N = 12  # concurrent writers per round
HUMANS = 8  # people registered twice at once


def _race(n: int, fn) -> list:  # noqa: ANN001
    barrier = threading.Barrier(n)

    def run(i: int):  # noqa: ANN202
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_two_server_processes_lose_no_update_make_no_duplicate_person_and_leave_no_ledger_gap(fault_db):
    s1 = fault_db.server("server1.log").start()
    s2 = fault_db.server("server2.log").start()
    servers = [s1, s2]
    try:
        org_a, org_b = fault_db.institution(), fault_db.institution()
        ha = [s.token(*new_client(fault_db.platform, org_a)) for s in servers]
        hb = [s.token(*new_client(fault_db.platform, org_b)) for s in servers]

        # 1. optimistic locking across processes: per version exactly one writer wins
        r = httpx.post(f"{s1.base}/fhir/Observation", headers=ha[0], timeout=30, json={
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
            "effectiveDateTime": "2024-08-01T10:00:00+08:00",
            "valueQuantity": {"value": 130, "unit": "g/L", "system": "http://unitsofmeasure.org", "code": "g/L"}})
        assert r.status_code == 201, r.text
        body = r.json()
        winners = []
        for version in (1, 2, 3):
            def put(i: int, version: int = version) -> tuple[int, int]:
                s = servers[i % 2]
                new = dict(body, valueQuantity=dict(body["valueQuantity"], value=100 * version + i))
                with httpx.Client(timeout=60) as c:
                    return i, c.put(f"{s.base}/fhir/Observation/{body['id']}", json=new,
                                    headers={**ha[i % 2], "If-Match": f'W/"{version}"'}).status_code

            results = _race(N, put)
            statuses = sorted(st for _, st in results)
            assert statuses == [200] + [412] * (N - 1), statuses
            winners.append(100 * version + next(i for i, st in results if st == 200))
        got = httpx.get(f"{s2.base}/fhir/Observation/{body['id']}", headers=ha[1], timeout=30).json()
        assert got["meta"]["versionId"] == "4" and got["valueQuantity"]["value"] == winners[-1]
        hist = httpx.get(f"{s1.base}/fhir/Observation/{body['id']}/_history", headers=ha[0], timeout=30).json()
        assert [e["resource"]["meta"]["versionId"] for e in hist["entry"]] == ["4", "3", "2", "1"]
        assert [e["resource"]["valueQuantity"]["value"] for e in hist["entry"][:3]] == winners[::-1]

        # 2. the same human registered at two institutions at the same moment, one through each process
        def register(i: int) -> str:
            human, side = divmod(i, 2)
            s, h = servers[side], (ha if side == 0 else hb)[side]
            patient = {"resourceType": "Patient",
                       "identifier": [{"system": RESIDENT_ID_SYSTEM, "value": resident_id(7000 + human)}],
                       "name": [{"text": f"才让{human}", "family": "才让"}], "gender": "male",
                       "birthDate": f"{1950 + (7000 + human) % 50}-{1 + (7000 + human) % 12:02d}-"
                                    f"{1 + (7000 + human) % 28:02d}"}
            with httpx.Client(timeout=60) as c:
                r = c.post(f"{s.base}/fhir/Patient", json=patient, headers=h)
            assert r.status_code == 201, r.text
            return r.json()["id"]

        ids = _race(2 * HUMANS, register)
        pl = t.person_link.c
        with fault_db.platform.db.read() as conn:
            persons = [conn.scalar(select(func.count(func.distinct(pl.person_id))).where(
                pl.patient_id.in_(ids[2 * h:2 * h + 2]))) for h in range(HUMANS)]
            links = conn.scalar(select(func.count()).where(pl.patient_id.in_(ids)))
        assert links == 2 * HUMANS  # every registration linked
        assert persons == [1] * HUMANS  # one Person per human, not one per institution
    finally:
        for s in servers:
            s.kill()

    # 3. both processes' sequencers took turns: every audit record has one leaf, no gaps, verifies
    settle_and_verify_ledger(fault_db.platform)
