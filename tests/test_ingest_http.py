"""POST /fhir/$import: asynchronous, with a status URL that ends in the upload's report."""

from __future__ import annotations

import time

import orjson
from conftest import patient

from healthlink.fhir.identifiers import RESIDENT_ID_SYSTEM


def _wait(client, url: str, headers: dict) -> dict:  # noqa: ANN001
    deadline = time.time() + 60
    while True:
        r = client.get(url, headers=headers)
        if r.status_code != 202:
            assert r.status_code == 200, r.text
            return r.json()
        assert time.time() < deadline
        time.sleep(0.05)


def test_import_of_ndjson_answers_202_and_its_status_url_gives_the_report(client, his_client):
    his = his_client()
    good = patient(id="a1")
    bad = patient(id="a2", identifier=[{"system": RESIDENT_ID_SYSTEM, "value": "632701199001011230"}])
    obs = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
           "subject": {"reference": "Patient/a1"}}
    body = b"\n".join(orjson.dumps(x) for x in (obs, good, bad)) + b"\n"
    r = client.post("/fhir/$import", content=body,
                    headers=his.headers | {"Content-Type": "application/fhir+ndjson"})
    assert r.status_code == 202, r.text
    status_url = r.headers["Content-Location"]
    assert "/fhir/$import-status/" in status_url
    report = _wait(client, status_url.replace("http://testserver", ""), his.headers)
    assert report["totals"] == {"read": 3, "accepted": 2, "updated": 0, "unchanged": 0, "quarantined": 1}
    assert report["reasons"] == {"resident-id": 1}
    # the Observation now points at the stored Patient
    found = client.get("/fhir/Observation", params={"subject:Patient.gender": "male"}, headers=his.headers)
    assert found.status_code == 200


def test_import_of_several_files_as_multipart(client, his_client):
    his = his_client()
    files = [("file", ("Patient.ndjson", orjson.dumps(patient(id="m1")) + b"\n", "application/fhir+ndjson")),
             ("file", ("b.json", orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
                 {"fullUrl": "urn:uuid:1", "resource": patient()}]}), "application/fhir+json"))]
    r = client.post("/fhir/$import", files=files, headers=his.headers)
    assert r.status_code == 202, r.text
    report = _wait(client, r.headers["Content-Location"].replace("http://testserver", ""), his.headers)
    assert report["totals"]["accepted"] == 2


def test_import_status_of_another_institution_is_not_found(client, his_client):
    a, b = his_client(), his_client()
    r = client.post("/fhir/$import", content=orjson.dumps(patient()) + b"\n",
                    headers=a.headers | {"Content-Type": "application/fhir+ndjson"})
    url = r.headers["Content-Location"].replace("http://testserver", "")
    _wait(client, url, a.headers)
    assert client.get(url, headers=b.headers).status_code == 404


def test_import_needs_an_institution_system(client, staff):
    doctor = staff("doctor")
    r = client.post("/fhir/$import", content=orjson.dumps(patient()) + b"\n",
                    headers=doctor.headers | {"Content-Type": "application/fhir+ndjson"})
    assert r.status_code == 403
