"""Operations basics: health, metrics, request ids, JSON logs, OpenAPI, errors without traces."""

import logging

import pytest


def test_healthz_reports_the_database(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    assert r.json()["database"] in ("sqlite", "postgresql")


def test_metrics_count_requests_by_route(client):
    client.get("/fhir/metadata")
    r = client.get("/metrics")
    assert r.status_code == 200
    assert 'healthlink_http_requests_total{method="GET",route="/fhir/metadata",status="200"}' in r.text


def test_every_response_carries_a_request_id_and_echoes_a_sane_one(client):
    assert len(client.get("/healthz").headers["x-request-id"]) == 32
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    bad = client.get("/healthz", headers={"X-Request-ID": "bad id\twith junk"}).headers["x-request-id"]
    assert bad != "bad id\twith junk"


def test_request_log_is_json_with_the_request_id(client, caplog):
    logger = logging.getLogger("healthlink.access_log")
    logger.addHandler(caplog.handler)  # the healthlink loggers do not propagate to root
    try:
        with caplog.at_level(logging.INFO, logger="healthlink.access_log"):
            r = client.get("/healthz", headers={"X-Request-ID": "log-check-1"})
    finally:
        logger.removeHandler(caplog.handler)
    lines = [rec.getMessage() for rec in caplog.records if "log-check-1" in rec.getMessage()]
    assert lines, "no access-log line for the request"
    import json

    entry = json.loads(lines[0])
    assert entry["request_id"] == "log-check-1" and entry["status"] == r.status_code


def test_openapi_documents_the_platform_api_not_fhir(client):
    spec = client.get("/openapi.json").json()
    assert "/api/auth/login" in spec["paths"]
    assert not any(p.startswith("/fhir") for p in spec["paths"])
    assert client.get("/docs").status_code == 200


def test_unknown_paths_and_methods_get_clean_errors(client):
    r = client.get("/fhir/Patient/x/y/z/w")
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome"
    r = client.get("/api/nothing-here")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    r = client.patch("/fhir/metadata")
    assert r.status_code == 405


def test_api_validation_errors_are_problem_json(client):
    r = client.post("/api/auth/login", json={"username": "x"})
    assert r.status_code == 422
    body = r.json()
    assert body["status"] == 422 and any("password" in e["detail"] for e in body["errors"])


@pytest.mark.parametrize("body", [b"{", b"[]", b'"text"', b"null", b'{"resourceType": 5}',
                                  b'{"resourceType": "Nope"}', b"\xff\xfe", b'{"resourceType":"Patient","name":"x"}'])
def test_garbage_bodies_never_cause_a_500(client, staff, body):
    doc = staff("doctor")
    for method, url in (("POST", "/fhir/Patient"), ("PUT", "/fhir/Patient/abc"), ("POST", "/fhir")):
        r = client.request(method, url, content=body,
                           headers={**doc.headers, "Content-Type": "application/fhir+json"})
        assert 400 <= r.status_code < 500, (method, url, body, r.status_code, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
        assert "Traceback" not in r.text


def test_unexpected_errors_answer_500_without_a_trace(app, client, staff, monkeypatch):
    from healthlink.access.repository import Repository

    def boom(self, *a, **k):  # noqa: ANN001, ANN002, ANN003
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(Repository, "_read_visible", boom)  # under read and read_async
    doc = staff("doctor")
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/fhir/Patient/whatever", headers=doc.headers)
    assert r.status_code == 500
    assert "secret internal detail" not in r.text and "Traceback" not in r.text
    assert r.headers["x-request-id"] in r.json()["issue"][0]["diagnostics"]
