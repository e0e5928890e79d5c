"""Transaction and batch Bundles (FHIR R4 http.html#transaction): atomicity, the audit of a
failed transaction, reference resolution across entries, processing order, per-entry
outcomes of a batch, and the limits."""

from __future__ import annotations

import uuid

from conftest import Staff, observation, patient
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from healthlink.db import tables as t
from healthlink.runtime import Platform

SYS = "https://hospital.example.org/mrn"
_TABLES = {"resource": t.resource, "resource_version": t.resource_version,
           **{tbl.name: tbl for tbl in t.INDEX_TABLES.values()}}


def _rows(platform: Platform) -> dict[str, int]:
    """Rows in the resource, version and every index table."""
    with platform.db.read() as conn:
        return {name: conn.execute(select(func.count()).select_from(tbl)).scalar_one()
                for name, tbl in _TABLES.items()}


def _post(client: TestClient, who: Staff, bundle: dict):  # noqa: ANN202
    return client.post("/fhir", json=bundle, headers=who.headers)


def _tx(*entries: dict, btype: str = "transaction") -> dict:
    return {"resourceType": "Bundle", "type": btype, "entry": list(entries)}


def _create(resource: dict, full_url: str | None = None, **request: str) -> dict:
    e: dict = {"resource": resource,
               "request": {"method": "POST", "url": resource["resourceType"], **request}}
    if full_url:
        e["fullUrl"] = full_url
    return e


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _expressions(body: dict) -> list[str]:
    return [e for i in body["issue"] for e in i.get("expression", [])]


def _transaction_audits(client: TestClient, auditor: Staff, his: Staff) -> list[dict]:
    r = client.get(f"/fhir/AuditEvent?agent=Device/{his.username}&subtype=transaction&_count=100",
                   headers=auditor.headers)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def _put_patient(client: TestClient, who: Staff, **extra: object) -> dict:
    pid = f"p-{uuid.uuid4().hex[:12]}"
    r = client.put(f"/fhir/Patient/{pid}", json=patient(id=pid, **extra), headers=who.headers)
    assert r.status_code == 201, r.text
    return r.json()


# ------------------------------------------------------------------ atomicity
def test_transaction_with_an_invalid_fifth_entry_leaves_no_resource_version_or_index_row(
        client: TestClient, platform: Platform, his_client, auditor: Staff) -> None:  # noqa: ANN001
    his = his_client()
    p = _urn()
    bad = observation("x", subject={"reference": p}, valueQuantity={"value": "high", "unit": "g/dL"})
    bundle = _tx(_create(patient(), p),
                 *(_create(observation("x", subject={"reference": p})) for _ in range(3)),
                 _create(bad))
    before = _rows(platform)

    r = _post(client, his, bundle)

    assert r.status_code == 400, r.text
    oo = r.json()
    assert oo["resourceType"] == "OperationOutcome"
    assert _expressions(oo) == ["Bundle.entry[4].resource.valueQuantity.value"]
    assert _rows(platform) == before
    assert client.get("/fhir/Patient?_summary=count", headers=his.headers).json()["total"] == 0
    audits = _transaction_audits(client, auditor, his)
    assert [a["outcome"] for a in audits] == ["4"]
    assert audits[0]["outcomeDesc"].startswith("400 ")


def test_runtime_failure_in_a_later_entry_rolls_back_the_entries_that_already_ran(
        client: TestClient, platform: Platform, his_client, auditor: Staff) -> None:  # noqa: ANN001
    his = his_client()
    target = _put_patient(client, his)  # version 1
    doomed = _put_patient(client, his)
    p = _urn()
    bundle = _tx(
        _create(patient(identifier=[{"system": SYS, "value": "rolled-back"}]), p),
        _create(observation("x", subject={"reference": p})),
        {"request": {"method": "DELETE", "url": f"Patient/{doomed['id']}"}},
        # entry 3: a stale version; it runs after the DELETE and the POSTs
        {"resource": dict(target, gender="female"),
         "request": {"method": "PUT", "url": f"Patient/{target['id']}", "ifMatch": 'W/"7"'}},
    )
    before = _rows(platform)

    r = _post(client, his, bundle)

    assert r.status_code == 412, r.text
    assert _expressions(r.json()) == ["Bundle.entry[3]"]
    assert _rows(platform) == before
    assert client.get(f"/fhir/Patient/{doomed['id']}", headers=his.headers).status_code == 200
    cur = client.get(f"/fhir/Patient/{target['id']}", headers=his.headers)
    assert cur.headers["ETag"] == 'W/"1"' and cur.json()["gender"] == "male"
    assert client.get(f"/fhir/Patient?identifier={SYS}|rolled-back&_summary=count",
                      headers=his.headers).json()["total"] == 0
    assert client.get("/fhir/Observation?_summary=count", headers=his.headers).json()["total"] == 0
    audits = _transaction_audits(client, auditor, his)
    assert [a["outcome"] for a in audits] == ["4"]
    assert audits[0]["outcomeDesc"].startswith("412 ")


# ------------------------------------------------------------------ references
def test_urn_uuid_references_resolve_across_entries_including_if_none_exist_matches(
        client: TestClient, his_client) -> None:  # noqa: ANN001
    his = his_client()
    existing = _put_patient(client, his, identifier=[{"system": SYS, "value": "known-1"}])
    p, enc, other = _urn(), _urn(), _urn()
    other_id = f"p-{uuid.uuid4().hex[:12]}"
    bundle = _tx(
        # entry 0 refers to entry 1, which comes later and matches an existing Patient
        _create(observation("x", subject={"reference": p})),
        _create(patient(), p, ifNoneExist=f"identifier={SYS}|known-1"),
        _create({"resourceType": "Encounter", "status": "finished",
                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                 "subject": {"reference": p}}, enc),
        _create(observation("x", subject={"reference": p}, encounter={"reference": enc},
                            hasMember=[{"reference": other}],
                            extension=[{"url": "https://example.org/ext", "valueReference": {"reference": enc}}])),
        {"fullUrl": other, "resource": patient(id=other_id),
         "request": {"method": "PUT", "url": f"Patient/{other_id}"}},
    )

    r = _post(client, his, bundle)

    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    assert [e["response"]["status"] for e in out] == ["201 Created", "200 OK", "201 Created",
                                                      "201 Created", "201 Created"]
    assert out[1]["fullUrl"] == f"http://testserver/fhir/Patient/{existing['id']}"
    patient_ref = f"Patient/{existing['id']}"
    enc_ref = "/".join(out[2]["response"]["location"].split("/")[:2])
    first = client.get("/fhir/" + "/".join(out[0]["response"]["location"].split("/")[:2]),
                       headers=his.headers).json()
    assert first["subject"] == {"reference": patient_ref}
    obs = client.get("/fhir/" + "/".join(out[3]["response"]["location"].split("/")[:2]),
                     headers=his.headers).json()
    assert obs["subject"] == {"reference": patient_ref}
    assert obs["encounter"] == {"reference": enc_ref}
    assert obs["extension"][0]["valueReference"] == {"reference": enc_ref}
    assert obs["hasMember"] == [{"reference": f"Patient/{other_id}"}]
    assert client.get(f"/fhir/{enc_ref}", headers=his.headers).json()["subject"] == {"reference": patient_ref}
    # the ifNoneExist entry created nothing; and search by the rewritten reference works
    assert client.get("/fhir/Patient?_summary=count", headers=his.headers).json()["total"] == 2
    r = client.get(f"/fhir/Observation?patient={existing['id']}&_summary=count", headers=his.headers)
    assert r.json()["total"] == 2


# ------------------------------------------------------------------ processing order
def test_entries_run_delete_then_post_then_put_then_get(client: TestClient, his_client) -> None:  # noqa: ANN001
    his = his_client()
    a = _put_patient(client, his)
    mark = f"order-{uuid.uuid4().hex[:8]}"
    bundle = _tx(
        {"request": {"method": "GET", "url": f"Patient?identifier={SYS}|{mark}"}},
        {"resource": dict(a, gender="female"), "request": {"method": "PUT", "url": f"Patient/{a['id']}"}},
        _create(patient(identifier=[{"system": SYS, "value": mark}])),
        {"request": {"method": "DELETE", "url": f"Patient/{a['id']}"}},
    )

    r = _post(client, his, bundle)

    assert r.status_code == 200, r.text
    out = r.json()["entry"]  # answers come in the order of the request
    assert [e["response"]["status"] for e in out] == ["200 OK", "200 OK", "201 Created", "204 No Content"]
    # GET ran last: it finds the Patient the POST created
    found = out[0]["resource"]["entry"]
    assert [e["resource"]["identifier"][0]["value"] for e in found] == [mark]
    # DELETE ran before PUT: the PUT brought the deleted Patient back as version 3
    r = client.get(f"/fhir/Patient/{a['id']}/_history", headers=his.headers)
    history = [(e["request"]["method"], e["resource"]["meta"]["versionId"] if "resource" in e else None)
               for e in r.json()["entry"]]
    assert history[:2] == [("PUT", "3"), ("DELETE", None)] and len(history) == 3
    assert client.get(f"/fhir/Patient/{a['id']}", headers=his.headers).json()["gender"] == "female"


# ------------------------------------------------------------------ batch
def test_batch_entry_that_fails_gets_its_own_error_while_the_others_succeed(
        client: TestClient, his_client) -> None:  # noqa: ANN001
    his = his_client()
    bad = observation("x", status=None)
    del bad["status"]
    bundle = _tx(_create(patient(gender="female")),
                 _create(bad),
                 {"request": {"method": "GET", "url": "Patient/no-such-patient"}},
                 _create(patient(gender="male")), btype="batch")

    r = _post(client, his, bundle)

    assert r.status_code == 200, r.text
    b = r.json()
    assert b["type"] == "batch-response"
    out = b["entry"]
    assert [e["response"]["status"] for e in out] == ["201 Created", "400 Bad Request", "404 Not Found",
                                                      "201 Created"]
    assert _expressions(out[1]["response"]["outcome"]) == ["Bundle.entry[1].resource.status"]
    assert out[2]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    for e in (out[0], out[3]):
        assert client.get(e["fullUrl"].replace("http://testserver", ""), headers=his.headers).status_code == 200
    assert client.get("/fhir/Observation?_summary=count", headers=his.headers).json()["total"] == 0


# ------------------------------------------------------------------ what is refused
def test_bundle_types_other_than_transaction_or_batch_are_refused_with_400(
        client: TestClient, platform: Platform, his_client) -> None:  # noqa: ANN001
    his = his_client()
    before = _rows(platform)
    for btype in ("collection", "document", "searchset", "transaction-response", None):
        bundle = _tx(_create(patient()), btype=btype)  # type: ignore[arg-type]
        r = _post(client, his, bundle)
        assert r.status_code == 400, r.text
        assert _expressions(r.json()) == ["Bundle.type"]
    r = _post(client, his, patient())
    assert r.status_code == 400 and _expressions(r.json()) == ["Bundle.resourceType"]
    assert _rows(platform) == before


def test_a_bundle_over_the_entry_limit_is_refused_with_413(
        client: TestClient, platform: Platform, his_client) -> None:  # noqa: ANN001
    his = his_client()
    limit = platform.settings.max_bundle_entries
    entry = {"request": {"method": "PATCH", "url": "Patient/x"}}  # never run: refused up front
    r = _post(client, his, _tx(*[entry] * (limit + 1)))
    assert r.status_code == 413, r.text[:500]
    assert r.json()["resourceType"] == "OperationOutcome"
    assert str(limit) in r.json()["issue"][0]["diagnostics"]
    # at the limit the entries are looked at (and these are refused one by one)
    r = _post(client, his, _tx(*[entry] * limit))
    assert r.status_code == 400
    assert len(r.json()["issue"]) == limit


def test_entry_naming_another_institutions_patient_fails_the_transaction_at_that_entry(
        client: TestClient, platform: Platform, his_client) -> None:  # noqa: ANN001
    his, other = his_client(), his_client()
    theirs = _put_patient(client, other)
    p = _urn()
    bundle = _tx(_create(patient(), p),
                 _create(observation("x", subject={"reference": p})),
                 _create(observation(theirs["id"])),  # entry 2: not a patient of this institution
                 _create(observation("x", subject={"reference": p})))
    before = _rows(platform)

    r = _post(client, his, bundle)

    assert r.status_code == 422, r.text
    assert _expressions(r.json()) == ["Bundle.entry[2].resource.subject"]
    assert _rows(platform) == before
