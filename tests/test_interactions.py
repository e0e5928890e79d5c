"""Every FHIR REST interaction through the real app and database (FHIR R4 http.html):
read, vread, create, update (plain, versioned, as create, conditional), delete, history,
conditional create, Prefer, errors as OperationOutcome, and Patient/$everything paging."""

from __future__ import annotations

import uuid

import pytest
from conftest import observation, patient

BASE = "http://testserver"


def _system() -> str:
    return f"urn:healthlink:test:{uuid.uuid4().hex[:10]}"


def _create(client, who, body: dict) -> dict:  # noqa: ANN001
    r = client.post(f"/fhir/{body['resourceType']}", json=body, headers=who.headers)
    assert r.status_code == 201, r.text
    return r.json()


def _outcome(r) -> dict:  # noqa: ANN001
    assert r.headers["content-type"].startswith("application/fhir+json"), r.headers
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"] and body["issue"][0]["severity"] == "error"
    return body


def _follow(client, who, url: str) -> list[dict]:  # noqa: ANN001
    """Every bundle of a paged answer, following next links to the end."""
    bundles = []
    while url:
        r = client.get(url, headers=who.headers)
        assert r.status_code == 200, r.text
        b = r.json()
        bundles.append(b)
        nxt = [link["url"] for link in b["link"] if link["relation"] == "next"]
        url = nxt[0].removeprefix(BASE) if nxt else None
        assert len(bundles) < 50, "next links never end"
    return bundles


# ------------------------------------------------------------------ create / read / vread
def test_create_answers_201_with_location_etag_and_the_stored_resource(client, staff):
    doc = staff("doctor")
    r = client.post("/fhir/Patient", json=patient(), headers=doc.headers)
    assert r.status_code == 201, r.text
    body = r.json()
    pid = body["id"]
    assert r.headers["ETag"] == 'W/"1"'
    assert r.headers["Location"] == f"{BASE}/fhir/Patient/{pid}/_history/1"
    assert r.headers["Last-Modified"].endswith("GMT")
    assert body["meta"]["versionId"] == "1"
    assert body["name"][0]["family"] == "Zhaxi"


def test_create_ignores_a_client_supplied_id(client, staff):
    doc = staff("doctor")
    body = _create(client, doc, patient(id="chosen-by-client"))
    assert body["id"] != "chosen-by-client"


def test_read_returns_current_version_with_etag(client, staff):
    doc = staff("doctor")
    pid = _create(client, doc, patient())["id"]
    r = client.get(f"/fhir/Patient/{pid}", headers=doc.headers)
    assert r.status_code == 200
    assert r.headers["ETag"] == 'W/"1"'
    assert r.json()["id"] == pid and r.json()["gender"] == "male"


def test_read_of_unknown_id_is_404_operation_outcome(client, staff):
    doc = staff("doctor")
    r = client.get("/fhir/Patient/no-such-patient", headers=doc.headers)
    assert r.status_code == 404
    assert _outcome(r)["issue"][0]["code"] == "not-found"


def test_vread_returns_each_version_as_it_was(client, staff):
    doc = staff("doctor")
    p = _create(client, doc, patient())
    pid = p["id"]
    r = client.put(f"/fhir/Patient/{pid}", json=dict(p, gender="female"), headers=doc.headers)
    assert r.status_code == 200, r.text
    v1 = client.get(f"/fhir/Patient/{pid}/_history/1", headers=doc.headers)
    v2 = client.get(f"/fhir/Patient/{pid}/_history/2", headers=doc.headers)
    assert (v1.status_code, v2.status_code) == (200, 200)
    assert v1.json()["gender"] == "male" and v1.headers["ETag"] == 'W/"1"'
    assert v2.json()["gender"] == "female" and v2.headers["ETag"] == 'W/"2"'
    missing = client.get(f"/fhir/Patient/{pid}/_history/3", headers=doc.headers)
    assert missing.status_code == 404
    _outcome(missing)


# ------------------------------------------------------------------ update
def test_update_increments_version_and_etag(client, staff):
    doc = staff("doctor")
    p = _create(client, doc, patient())
    for expected in (2, 3):
        r = client.put(f"/fhir/Patient/{p['id']}", json=dict(p, birthDate=f"1980-05-0{expected}"),
                       headers=doc.headers)
        assert r.status_code == 200, r.text
        assert r.headers["ETag"] == f'W/"{expected}"'
        assert r.json()["meta"]["versionId"] == str(expected)
    assert client.get(f"/fhir/Patient/{p['id']}", headers=doc.headers).json()["birthDate"] == "1980-05-03"


def test_update_with_matching_if_match_succeeds(client, staff):
    doc = staff("doctor")
    p = _create(client, doc, patient())
    r = client.put(f"/fhir/Patient/{p['id']}", json=dict(p, gender="female"),
                   headers={**doc.headers, "If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == 'W/"2"'


def test_update_with_stale_if_match_is_412_and_changes_nothing(client, staff):
    doc = staff("doctor")
    p = _create(client, doc, patient())
    assert client.put(f"/fhir/Patient/{p['id']}", json=dict(p, gender="female"),
                      headers=doc.headers).status_code == 200
    r = client.put(f"/fhir/Patient/{p['id']}", json=dict(p, gender="other"),
                   headers={**doc.headers, "If-Match": 'W/"1"'})
    assert r.status_code == 412
    _outcome(r)
    cur = client.get(f"/fhir/Patient/{p['id']}", headers=doc.headers)
    assert cur.json()["gender"] == "female" and cur.headers["ETag"] == 'W/"2"'


def test_if_match_that_is_not_a_version_etag_is_400(client, staff):
    doc = staff("doctor")
    p = _create(client, doc, patient())
    r = client.put(f"/fhir/Patient/{p['id']}", json=p, headers={**doc.headers, "If-Match": "yesterday"})
    assert r.status_code == 400
    _outcome(r)


def test_update_as_create_keeps_the_client_id(client, staff):
    doc = staff("doctor")
    pid = f"client-{uuid.uuid4().hex[:12]}"
    r = client.put(f"/fhir/Patient/{pid}", json=patient(id=pid), headers=doc.headers)
    assert r.status_code == 201, r.text
    assert r.headers["ETag"] == 'W/"1"'
    assert r.headers["Location"] == f"{BASE}/fhir/Patient/{pid}/_history/1"
    assert client.get(f"/fhir/Patient/{pid}", headers=doc.headers).json()["id"] == pid


def test_update_whose_body_id_differs_from_url_is_400(client, staff):
    doc = staff("doctor")
    p = _create(client, doc, patient())
    r = client.put(f"/fhir/Patient/{p['id']}", json=dict(p, id="someone-else"), headers=doc.headers)
    assert r.status_code == 400
    assert "id" in _outcome(r)["issue"][0]["diagnostics"]
    no_id = {k: v for k, v in p.items() if k != "id"}
    assert client.put(f"/fhir/Patient/{p['id']}", json=no_id, headers=doc.headers).status_code == 400


def test_update_with_another_resource_type_in_body_is_400(client, staff):
    doc = staff("doctor")
    p = _create(client, doc, patient())
    r = client.put(f"/fhir/Observation/{p['id']}", json=p, headers=doc.headers)
    assert r.status_code == 400
    _outcome(r)


# ------------------------------------------------------------------ delete
def test_delete_is_soft_read_is_gone_history_and_old_versions_remain(client, staff):
    doc = staff("doctor")
    p = _create(client, doc, patient())
    pid = p["id"]
    client.put(f"/fhir/Patient/{pid}", json=dict(p, gender="female"), headers=doc.headers)
    r = client.delete(f"/fhir/Patient/{pid}", headers=doc.headers)
    assert r.status_code in (200, 204)
    gone = client.get(f"/fhir/Patient/{pid}", headers=doc.headers)
    assert gone.status_code == 410
    _outcome(gone)
    assert client.get(f"/fhir/Patient/{pid}/_history/1", headers=doc.headers).json()["gender"] == "male"
    assert client.get(f"/fhir/Patient/{pid}/_history/2", headers=doc.headers).json()["gender"] == "female"
    assert client.get(f"/fhir/Patient/{pid}/_history/3", headers=doc.headers).status_code == 410
    hist = client.get(f"/fhir/Patient/{pid}/_history", headers=doc.headers).json()
    assert [e["request"]["method"] for e in hist["entry"]] == ["DELETE", "PUT", "POST"]
    assert hist["entry"][0]["response"]["status"].startswith("410")
    assert "resource" not in hist["entry"][0]
    assert [e["resource"]["meta"]["versionId"] for e in hist["entry"][1:]] == ["2", "1"]
    found = client.get(f"/fhir/Patient?_id={pid}", headers=doc.headers).json()
    assert found.get("entry", []) == []


def test_delete_with_stale_if_match_is_412_and_keeps_the_resource(client, staff):
    doc = staff("doctor")
    p = _create(client, doc, patient())
    client.put(f"/fhir/Patient/{p['id']}", json=p, headers=doc.headers)
    r = client.delete(f"/fhir/Patient/{p['id']}", headers={**doc.headers, "If-Match": 'W/"1"'})
    assert r.status_code == 412
    _outcome(r)
    assert client.get(f"/fhir/Patient/{p['id']}", headers=doc.headers).status_code == 200
    r = client.delete(f"/fhir/Patient/{p['id']}", headers={**doc.headers, "If-Match": 'W/"2"'})
    assert r.status_code in (200, 204)
    assert client.get(f"/fhir/Patient/{p['id']}", headers=doc.headers).status_code == 410


def test_delete_of_another_institutions_resource_leaves_it_alone(client, staff):
    owner = staff("doctor")
    p = _create(client, owner, patient())
    r = client.delete(f"/fhir/Patient/{p['id']}", headers=staff("doctor").headers)
    assert r.status_code in (200, 204, 404)
    assert client.get(f"/fhir/Patient/{p['id']}", headers=owner.headers).status_code == 200


def test_delete_of_unknown_resource_succeeds_without_effect(client, staff):
    doc = staff("doctor")
    r = client.delete("/fhir/Patient/never-existed-here", headers=doc.headers)
    assert r.status_code in (200, 204)


def test_update_after_delete_brings_the_resource_back_as_a_new_version(client, staff):
    doc = staff("doctor")
    p = _create(client, doc, patient())
    client.delete(f"/fhir/Patient/{p['id']}", headers=doc.headers)
    r = client.put(f"/fhir/Patient/{p['id']}", json=p, headers=doc.headers)
    assert r.status_code in (200, 201), r.text
    assert r.headers["ETag"] == 'W/"3"'
    assert client.get(f"/fhir/Patient/{p['id']}", headers=doc.headers).status_code == 200


# ------------------------------------------------------------------ history
def test_instance_history_pages_newest_first_through_next_links(client, staff):
    doc = staff("doctor")
    p = _create(client, doc, patient())
    for day in range(2, 6):
        assert client.put(f"/fhir/Patient/{p['id']}", json=dict(p, birthDate=f"1980-05-0{day}"),
                          headers=doc.headers).status_code == 200
    bundles = _follow(client, doc, f"/fhir/Patient/{p['id']}/_history?_count=2")
    assert [len(b.get("entry", [])) for b in bundles] == [2, 2, 1]
    assert all(b["type"] == "history" for b in bundles)
    versions = [e["resource"]["meta"]["versionId"] for b in bundles for e in b["entry"]]
    assert versions == ["5", "4", "3", "2", "1"]
    assert bundles[-1]["entry"][-1]["request"]["method"] == "POST"


def test_type_history_pages_over_every_version_of_the_institution_only(client, staff):
    doc = staff("doctor")
    other = staff("doctor")
    _create(client, other, patient())
    a = _create(client, doc, patient())
    b = _create(client, doc, patient(gender="female"))
    client.put(f"/fhir/Patient/{a['id']}", json=dict(a, active=True), headers=doc.headers)
    client.delete(f"/fhir/Patient/{b['id']}", headers=doc.headers)
    bundles = _follow(client, doc, "/fhir/Patient/_history?_count=2")
    seen = [(e["fullUrl"].rsplit("/", 1)[1], e["request"]["method"]) for bb in bundles
            for e in bb.get("entry", [])]
    assert seen == [(b["id"], "DELETE"), (a["id"], "PUT"), (b["id"], "POST"), (a["id"], "POST")]


def test_history_paging_does_not_inject_versions_written_between_pages(client, staff):
    doc = staff("doctor")
    p = _create(client, doc, patient())
    for day in range(2, 5):
        client.put(f"/fhir/Patient/{p['id']}", json=dict(p, birthDate=f"1980-05-0{day}"), headers=doc.headers)
    first = client.get(f"/fhir/Patient/{p['id']}/_history?_count=2", headers=doc.headers).json()
    client.put(f"/fhir/Patient/{p['id']}", json=dict(p, birthDate="1980-05-09"), headers=doc.headers)
    nxt = [link["url"] for link in first["link"] if link["relation"] == "next"][0].removeprefix(BASE)
    rest = _follow(client, doc, nxt)
    versions = [e["resource"]["meta"]["versionId"] for b in [first, *rest] for e in b["entry"]]
    assert versions == ["4", "3", "2", "1"]


def test_history_of_another_institutions_resource_is_404(client, staff):
    p = _create(client, staff("doctor"), patient())
    doc = staff("doctor")
    for path in (f"/fhir/Patient/{p['id']}/_history", f"/fhir/Patient/{p['id']}/_history/1",
                 f"/fhir/Patient/{p['id']}"):
        r = client.get(path, headers=doc.headers)
        assert r.status_code == 404, path
        _outcome(r)
    assert client.get("/fhir/Patient/_history", headers=doc.headers).json().get("entry", []) == []


def test_history_since_leaves_out_older_versions(client, staff):
    doc = staff("doctor")
    p = _create(client, doc, patient())
    r = client.put(f"/fhir/Patient/{p['id']}", json=dict(p, active=True), headers=doc.headers)
    since = r.json()["meta"]["lastUpdated"]
    hist = client.get(f"/fhir/Patient/{p['id']}/_history", params={"_since": since},
                      headers=doc.headers).json()
    assert [e["resource"]["meta"]["versionId"] for e in hist["entry"]] == ["2"]


# ------------------------------------------------------------------ conditional create
def test_conditional_create_with_no_match_creates(client, staff):
    doc = staff("doctor")
    system = _system()
    body = patient(identifier=[{"system": system, "value": "A1"}])
    r = client.post("/fhir/Patient", json=body,
                    headers={**doc.headers, "If-None-Exist": f"identifier={system}|A1"})
    assert r.status_code == 201, r.text
    assert r.headers["Location"].startswith(f"{BASE}/fhir/Patient/")


def test_conditional_create_with_one_match_returns_the_existing_resource(client, staff):
    doc = staff("doctor")
    system = _system()
    body = patient(identifier=[{"system": system, "value": "A1"}])
    first = _create(client, doc, body)
    r = client.post("/fhir/Patient", json=body,
                    headers={**doc.headers, "If-None-Exist": f"identifier={system}|A1"})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == first["id"]
    found = client.get("/fhir/Patient", params={"identifier": f"{system}|A1"}, headers=doc.headers).json()
    assert len(found["entry"]) == 1


def test_conditional_create_with_two_matches_is_412(client, staff):
    doc = staff("doctor")
    system = _system()
    body = patient(identifier=[{"system": system, "value": "A1"}])
    _create(client, doc, body)
    _create(client, doc, body)
    r = client.post("/fhir/Patient", json=body,
                    headers={**doc.headers, "If-None-Exist": f"identifier={system}|A1"})
    assert r.status_code == 412
    _outcome(r)


def test_conditional_create_does_not_match_another_institutions_patient(client, staff):
    system = _system()
    body = patient(identifier=[{"system": system, "value": "A1"}])
    _create(client, staff("doctor"), body)
    doc = staff("doctor")
    r = client.post("/fhir/Patient", json=body,
                    headers={**doc.headers, "If-None-Exist": f"identifier={system}|A1"})
    assert r.status_code == 201


def test_conditional_create_with_unknown_parameter_is_400(client, staff):
    doc = staff("doctor")
    r = client.post("/fhir/Patient", json=patient(),
                    headers={**doc.headers, "If-None-Exist": "shoe-size=42"})
    assert r.status_code == 400
    assert "shoe-size" in _outcome(r)["issue"][0]["diagnostics"]


# ------------------------------------------------------------------ conditional update
def test_conditional_update_with_no_match_creates(client, staff):
    doc = staff("doctor")
    system = _system()
    r = client.put(f"/fhir/Patient?identifier={system}|B1",
                   json=patient(identifier=[{"system": system, "value": "B1"}]), headers=doc.headers)
    assert r.status_code == 201, r.text
    assert r.headers["ETag"] == 'W/"1"'


def test_conditional_update_with_one_match_updates_it(client, staff):
    doc = staff("doctor")
    system = _system()
    ident = [{"system": system, "value": "B1"}]
    existing = _create(client, doc, patient(identifier=ident))
    r = client.put("/fhir/Patient", params={"identifier": f"{system}|B1"},
                   json=patient(identifier=ident, gender="female"), headers=doc.headers)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == existing["id"]
    assert r.headers["ETag"] == 'W/"2"'
    assert client.get(f"/fhir/Patient/{existing['id']}", headers=doc.headers).json()["gender"] == "female"


def test_conditional_update_with_several_matches_is_412(client, staff):
    doc = staff("doctor")
    system = _system()
    ident = [{"system": system, "value": "B1"}]
    _create(client, doc, patient(identifier=ident))
    _create(client, doc, patient(identifier=ident))
    r = client.put(f"/fhir/Patient?identifier={system}|B1", json=patient(identifier=ident),
                   headers=doc.headers)
    assert r.status_code == 412
    _outcome(r)


def test_conditional_update_naming_another_id_than_the_match_is_400(client, staff):
    doc = staff("doctor")
    system = _system()
    ident = [{"system": system, "value": "B1"}]
    _create(client, doc, patient(identifier=ident))
    r = client.put(f"/fhir/Patient?identifier={system}|B1", json=patient(identifier=ident, id="other-one"),
                   headers=doc.headers)
    assert r.status_code == 400
    _outcome(r)


def test_conditional_update_with_no_match_and_the_id_of_an_existing_resource_is_409(client, staff):
    # FHIR R4 3.1.0.4.3: no match, id provided and already exists -> 409 Conflict
    doc = staff("doctor")
    system = _system()
    existing = _create(client, doc, patient())
    r = client.put(f"/fhir/Patient?identifier={system}|nobody",
                   json=dict(existing, identifier=[{"system": system, "value": "nobody"}]),
                   headers=doc.headers)
    assert r.status_code == 409
    _outcome(r)
    assert client.get(f"/fhir/Patient/{existing['id']}", headers=doc.headers).headers["ETag"] == 'W/"1"'


def test_put_on_the_type_without_search_parameters_is_refused(client, staff):
    doc = staff("doctor")
    r = client.put("/fhir/Patient", json=patient(), headers=doc.headers)
    assert r.status_code in (400, 405)
    _outcome(r)


# ------------------------------------------------------------------ Prefer
def test_prefer_return_minimal_sends_headers_without_body(client, staff):
    doc = staff("doctor")
    r = client.post("/fhir/Patient", json=patient(), headers={**doc.headers, "Prefer": "return=minimal"})
    assert r.status_code == 201
    assert r.content == b""
    assert r.headers["ETag"] == 'W/"1"'
    loc = r.headers["Location"]
    pid = loc.removeprefix(f"{BASE}/fhir/Patient/").split("/")[0]
    got = client.get(f"/fhir/Patient/{pid}", headers=doc.headers).json()
    r = client.put(f"/fhir/Patient/{pid}", json=got, headers={**doc.headers, "Prefer": "return=minimal"})
    assert (r.status_code, r.content, r.headers["ETag"]) == (200, b"", 'W/"2"')


def test_prefer_return_representation_sends_the_resource(client, staff):
    doc = staff("doctor")
    r = client.post("/fhir/Patient", json=patient(),
                    headers={**doc.headers, "Prefer": "return=representation"})
    assert r.status_code == 201 and r.json()["resourceType"] == "Patient"


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("method,path", [
    ("GET", "/fhir/Spaceship/1"),
    ("GET", "/fhir/Spaceship"),
    ("GET", "/fhir/Spaceship/1/_history/1"),
    ("GET", "/fhir/Spaceship/_history"),
    ("DELETE", "/fhir/Spaceship/1"),
    ("POST", "/fhir/Spaceship"),
    ("PUT", "/fhir/Spaceship/1"),
])
def test_unknown_resource_type_is_404_operation_outcome(client, staff, method, path):
    doc = staff("doctor")
    body = {"resourceType": "Spaceship", "id": "1"} if method in ("POST", "PUT") else None
    r = client.request(method, path, json=body, headers=doc.headers)
    assert r.status_code == 404, r.text
    assert "Spaceship" in _outcome(r)["issue"][0]["diagnostics"]


@pytest.mark.parametrize("content,ctype", [
    (b'{"resourceType": "Patient", ', "application/fhir+json"),
    (b"not json at all", "application/json"),
    (b"", "application/fhir+json"),
    (b"[]", "application/fhir+json"),
    (b'"Patient"', "application/fhir+json"),
    (b"null", "application/fhir+json"),
    (b'{"gender": "male"}', "application/fhir+json"),
    (b'{"resourceType": "Patient", "gender": "male"}', "text/plain"),
    (b"resourceType=Patient", "application/x-www-form-urlencoded"),
    (b"<Patient xmlns='http://hl7.org/fhir'/>", "application/fhir+xml"),
    (b'{"resourceType": "Patient", "birthDate": NaN}', "application/fhir+json"),
    (b"\xff\xfe\x00", "application/fhir+json"),
])
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_bad_bodies_are_400_class_operation_outcome_never_500(client, staff, method, content, ctype):
    doc = staff("doctor")
    path = "/fhir/Patient" if method == "POST" else "/fhir/Patient/bad-body-1"
    r = client.request(method, path, content=content, headers={**doc.headers, "Content-Type": ctype})
    assert 400 <= r.status_code < 500, r.text
    _outcome(r)
    assert client.get("/fhir/Patient/bad-body-1", headers=doc.headers).status_code == 404


def test_invalid_resource_names_the_element(client, staff):
    doc = staff("doctor")
    r = client.post("/fhir/Observation", json=observation("x", status=None), headers=doc.headers)
    assert r.status_code == 400
    exprs = [x for i in _outcome(r)["issue"] for x in i.get("expression", [])]
    assert any(e.startswith("Observation.status") for e in exprs), exprs


def test_requests_without_credentials_are_401_operation_outcome(client):
    r = client.get("/fhir/Patient")
    assert r.status_code == 401
    _outcome(r)


# ------------------------------------------------------------------ $everything
def test_everything_pages_through_the_compartment_each_resource_once(client, staff):
    doc = staff("doctor")
    pid = _create(client, doc, patient())["id"]
    other = _create(client, doc, patient())["id"]
    _create(client, doc, observation(other))
    expected = {("Patient", pid)}
    for day in range(1, 4):
        o = _create(client, doc, observation(pid, effectiveDateTime=f"2024-08-0{day}T10:00:00Z"))
        expected.add(("Observation", o["id"]))
    cond = _create(client, doc, {"resourceType": "Condition", "subject": {"reference": f"Patient/{pid}"},
                                 "code": {"text": "Hypertension"}})
    expected.add(("Condition", cond["id"]))
    enc = _create(client, doc, {"resourceType": "Encounter", "status": "finished",
                                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                          "code": "AMB"},
                                "subject": {"reference": f"Patient/{pid}"}})
    expected.add(("Encounter", enc["id"]))
    allergy = _create(client, doc, {"resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{pid}"},
                                    "code": {"text": "Penicillin"}})
    expected.add(("AllergyIntolerance", allergy["id"]))
    dropped = _create(client, doc, observation(pid))
    client.delete(f"/fhir/Observation/{dropped['id']}", headers=doc.headers)

    bundles = _follow(client, doc, f"/fhir/Patient/{pid}/$everything?_count=2")
    assert all(len(b.get("entry", [])) <= 2 for b in bundles)
    assert len(bundles) == 4
    got = [(e["resource"]["resourceType"], e["resource"]["id"]) for b in bundles for e in b.get("entry", [])]
    assert len(got) == len(set(got)), "a resource came twice"
    assert set(got) == expected


def test_everything_does_not_add_resources_written_while_paging(client, staff):
    doc = staff("doctor")
    pid = _create(client, doc, patient())["id"]
    first_obs = {_create(client, doc, observation(pid))["id"] for _ in range(3)}
    r = client.get(f"/fhir/Patient/{pid}/$everything?_count=2", headers=doc.headers).json()
    late = _create(client, doc, observation(pid))["id"]
    nxt = [link["url"] for link in r["link"] if link["relation"] == "next"][0].removeprefix(BASE)
    rest = _follow(client, doc, nxt)
    got = [e["resource"]["id"] for b in [r, *rest] for e in b.get("entry", [])]
    assert late not in got
    assert sorted(got) == sorted([pid, *first_obs])


def test_everything_of_another_institutions_patient_is_404(client, staff):
    pid = _create(client, staff("doctor"), patient())["id"]
    r = client.get(f"/fhir/Patient/{pid}/$everything", headers=staff("doctor").headers)
    assert r.status_code == 404
    _outcome(r)
