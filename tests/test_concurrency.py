"""Concurrent writers through the real HTTP app: optimistic locking with If-Match lets
exactly one of many simultaneous updates of one version win (PostgreSQL: row locks;
SQLite: the single writer), and updates without If-Match are serialised, none lost."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import observation, patient

N = 12


def _race(n: int, put) -> list[int]:  # noqa: ANN001
    """Run ``put(i)`` in n threads released together; return their statuses."""
    barrier = threading.Barrier(n)

    def run(i: int) -> int:
        barrier.wait()
        return put(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


@pytest.fixture
def obs(client, staff):  # noqa: ANN001, ANN201
    doc = staff("doctor")
    pid = client.post("/fhir/Patient", json=patient(), headers=doc.headers).json()["id"]
    r = client.post("/fhir/Observation", json=observation(pid), headers=doc.headers)
    assert r.status_code == 201
    return doc, r.json()


def test_concurrent_if_match_updates_of_one_version_exactly_one_wins(client, obs):
    doc, body = obs
    url = f"/fhir/Observation/{body['id']}"

    def put(i: int) -> int:
        new = dict(body, valueQuantity=dict(body["valueQuantity"], value=100 + i))
        return client.put(url, json=new, headers={**doc.headers, "If-Match": 'W/"1"'}).status_code

    statuses = _race(N, put)
    assert sorted(statuses) == [200] + [412] * (N - 1)
    r = client.get(url, headers=doc.headers)
    assert r.json()["meta"]["versionId"] == "2" and r.headers["etag"] == 'W/"2"'
    winner = statuses.index(200)
    assert r.json()["valueQuantity"]["value"] == 100 + winner
    hist = client.get(f"{url}/_history", headers=doc.headers).json()
    assert [e["resource"]["meta"]["versionId"] for e in hist["entry"]] == ["2", "1"]


def test_concurrent_if_match_updates_over_real_http(live_server, obs):
    doc, body = obs
    url = f"{live_server}/fhir/Observation/{body['id']}"

    def put(i: int) -> int:
        with httpx.Client(timeout=30) as c:
            return c.put(url, json=dict(body, status="amended", issued=f"2024-08-01T10:00:{i:02d}Z"),
                         headers={**doc.headers, "If-Match": 'W/"1"'}).status_code

    statuses = _race(N, put)
    assert sorted(statuses) == [200] + [412] * (N - 1)
    r = httpx.get(url, headers=doc.headers)
    assert r.json()["meta"]["versionId"] == "2"


def test_concurrent_updates_without_if_match_are_serialised_and_none_is_lost(client, obs):
    doc, body = obs
    url = f"/fhir/Observation/{body['id']}"

    def put(i: int) -> int:
        return client.put(url, json=dict(body, issued=f"2024-08-01T10:00:{i:02d}Z"),
                          headers=doc.headers).status_code

    assert _race(N, put) == [200] * N
    r = client.get(url, headers=doc.headers)
    assert r.json()["meta"]["versionId"] == str(N + 1)
    hist = client.get(f"{url}/_history?_count=100", headers=doc.headers).json()
    assert sorted(int(e["resource"]["meta"]["versionId"]) for e in hist["entry"]) == list(range(1, N + 2))
    issued = {e["resource"].get("issued") for e in hist["entry"]} - {None}
    assert len(issued) == N  # every writer's version is in the history


def test_concurrent_if_match_deletes_and_updates_one_wins(client, obs):
    doc, body = obs
    url = f"/fhir/Observation/{body['id']}"

    def act(i: int) -> int:
        h = {**doc.headers, "If-Match": 'W/"1"'}
        if i % 2:
            return client.delete(url, headers=h).status_code
        return client.put(url, json=dict(body, status="amended"), headers=h).status_code

    statuses = _race(N, act)
    assert sum(s in (200, 204) for s in statuses) == 1
    assert statuses.count(412) == N - 1
    hist = client.get(f"{url}/_history", headers=doc.headers).json()
    assert len(hist["entry"]) == 2
