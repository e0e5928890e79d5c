"""A FHIR-aware fuzz of /fhir (issue 9, item 3): malformed JSON, wrong types, huge strings and
arrays, deep nesting, bad search parameters and prefixes, unknown resource types, injection
attempts in every parameter, and XSS payloads in names that the pages must escape.

Every answer: never a 500, never a stack trace; a 4xx under /fhir is an OperationOutcome whose
issue says what was wrong (diagnostics, and the element or parameter where the platform knows
it); a rejected write stores nothing.  A fixed corpus of nasty cases, then Hypothesis.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import quote

import orjson
import pytest
from conftest import PASSWORD
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.fuzz

FHIR = "application/fhir+json"
STACK_MARKERS = ("Traceback (most recent call last)", 'File "/', "sqlalchemy.exc", "psycopg.", "sqlite3.")
INJECTIONS = [
    "' OR '1'='1", "1; DROP TABLE resource; --", "\" OR 1=1 --", "') OR ('x'='x", "%' OR 1=1 --",
    "../../../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "/etc/passwd\x00.json", "\x00", "%00",
    "${jndi:ldap://x.example/a}", "{{7*7}}", "<script>alert(1)</script>", "\r\nSet-Cookie: hl_token=x",
    "Patient/../AuditEvent/1", "*", "%", "_", "\\", "😀" * 50, "ｓｅｌｅｃｔ", "x" * 5000,
]


@pytest.fixture(scope="module")
def doctor(client, platform):  # noqa: ANN001, ANN201
    """A doctor of an institution of the module's own, with a real token."""
    from healthlink.accounts import add_user
    from healthlink.demo import organization

    org = f"org-{uuid.uuid4().hex[:10]}"
    repo = platform.system_repository("tests")
    with platform.db.write() as conn:
        repo.update_in(conn, "Organization", org, organization(org, f"Fuzz {org}", "county", None), if_match=None)
    name = f"fz-doc-{uuid.uuid4().hex[:6]}"
    add_user(platform.db, username=name, password=PASSWORD, display_name=name, roles=["doctor"],
             institution_id=org, practitioner_id=f"prac-{uuid.uuid4().hex[:10]}")
    r = client.post("/api/auth/login", json={"username": name, "password": PASSWORD})
    assert r.status_code == 200
    return {"name": name, "org": org, "h": {"Authorization": f"Bearer {r.json()['access_token']}"}}


@pytest.fixture(scope="module")
def existing(client, doctor):  # noqa: ANN001, ANN201
    """One Patient and one Observation of the institution, as targets for update and search."""
    p = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Fuzzbase"}],
                                           "gender": "female", "birthDate": "1970-01-01"}, headers=doctor["h"])
    assert p.status_code == 201, p.text
    pid = p.json()["id"]
    o = client.post("/fhir/Observation", json={
        "resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "effectiveDateTime": "2024-01-02", "valueQuantity": {"value": 5.4, "unit": "mmol/L"}}, headers=doctor["h"])
    assert o.status_code == 201, o.text
    return {"patient": pid, "observation": o.json()["id"]}


def counts(client, h) -> tuple[int, int]:  # noqa: ANN001
    """(Patients, Observations) the institution holds, counting deleted ones' absence too."""
    out = []
    for t in ("Patient", "Observation"):
        r = client.get(f"/fhir/{t}?_summary=count", headers=h)
        assert r.status_code == 200, r.text
        out.append(r.json()["total"])
    return out[0], out[1]


def check_answer(r, *, where: str, echo: int = 400) -> None:  # noqa: ANN001
    """Never 500, no stack trace; a 4xx is an OperationOutcome that says what was wrong.
    ``echo``: the longest diagnostics allowed; a message may quote a URL's value (the URL is
    bounded by the server), never a body's (up to max_body_bytes)."""
    assert r.status_code < 500, f"{where}: {r.status_code} {r.text[:400]}"
    for marker in STACK_MARKERS:
        assert marker not in r.text, f"{where}: {marker!r} in {r.text[:400]}"
    if r.status_code >= 400:
        assert r.headers["content-type"].startswith(FHIR), (where, r.headers["content-type"])
        oo = r.json()
        assert oo["resourceType"] == "OperationOutcome", (where, oo)
        assert oo["issue"] and all(i["severity"] in ("fatal", "error") for i in oo["issue"]), (where, oo)
        assert all(len(i.get("diagnostics", "")) >= 10 for i in oo["issue"]), (where, oo)
        # the answer does not echo a huge input back: short messages, a bounded list
        assert len(oo["issue"]) <= 101 and all(len(i["diagnostics"]) <= echo for i in oo["issue"]), where


# --------------------------------------------------------------------- bodies
def _deep(n: int) -> bytes:
    return b'{"resourceType":"Patient","extension":' + b'[' * n + b']' * n + b'}'


def _deep_objects(n: int) -> bytes:
    return (b'{"resourceType":"Patient","contained":[' + b'{"resourceType":"Patient","contained":[' * n
            + b'{"resourceType":"Patient"}' + b']}' * n + b']}')


MALFORMED = {
    "empty": b"", "whitespace": b"   ", "null": b"null", "true": b"true", "number": b"42", "string": b'"Patient"',
    "array": b"[]", "array of patient": b'[{"resourceType":"Patient"}]', "truncated": b'{"resourceType":"Pat',
    "trailing comma": b'{"resourceType":"Patient",}', "single quotes": b"{'resourceType':'Patient'}",
    "NaN": b'{"resourceType":"Patient","multipleBirthInteger":NaN}', "Infinity": b'{"resourceType":"Patient","x":1e999}',
    "bad utf-8": b'{"resourceType":"Patient","name":[{"text":"\xff\xfe"}]}', "nul byte": b'{"resourceType":"Patient"}\x00',
    "BOM": b'\xef\xbb\xbf{"resourceType":"Patient"}', "lone surrogate": b'{"resourceType":"Patient","id":"\\ud800"}',
    "two documents": b'{"resourceType":"Patient"}{"resourceType":"Patient"}', "comment": b'/*x*/{"resourceType":"Patient"}',
    "duplicate keys": b'{"resourceType":"Patient","resourceType":"Observation"}',
    "deep arrays 5000": _deep(5000), "deep arrays 900": _deep(900), "deep contained 400": _deep_objects(400),
    "huge number": b'{"resourceType":"Patient","multipleBirthInteger":' + b"9" * 400 + b"}",
    "negative zero id": b'{"resourceType":"Patient","id":-0}',
}

WRONG = {
    "no resourceType": {"name": [{"family": "X"}]},
    "resourceType number": {"resourceType": 1},
    "resourceType null": {"resourceType": None},
    "resourceType list": {"resourceType": ["Patient"]},
    "unknown type": {"resourceType": "Pateint"},
    "other type": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
    "name not a list": {"resourceType": "Patient", "name": "Zhaxi"},
    "name of numbers": {"resourceType": "Patient", "name": [1, 2]},
    "given not a list": {"resourceType": "Patient", "name": [{"given": "Tsering"}]},
    "given of objects": {"resourceType": "Patient", "name": [{"given": [{"x": 1}]}]},
    "gender bool": {"resourceType": "Patient", "gender": True},
    "gender unknown code": {"resourceType": "Patient", "gender": "dragon"},
    "birthDate number": {"resourceType": "Patient", "birthDate": 19800501},
    "birthDate bad": {"resourceType": "Patient", "birthDate": "1980-13-45"},
    "birthDate injection": {"resourceType": "Patient", "birthDate": "1980' OR '1'='1"},
    "active string": {"resourceType": "Patient", "active": "yes"},
    "id with slash": {"resourceType": "Patient", "id": "../../etc/passwd"},
    "id number": {"resourceType": "Patient", "id": 5},
    "meta not object": {"resourceType": "Patient", "meta": "v1"},
    "meta security junk": {"resourceType": "Patient", "meta": {"security": [{"system": 1, "code": []}]}},
    "extension not list": {"resourceType": "Patient", "extension": {"url": "x"}},
    "extension without url": {"resourceType": "Patient", "extension": [{"valueString": "x"}]},
    "unknown element": {"resourceType": "Patient", "favouriteColour": "blue"},
    "identifier of strings": {"resourceType": "Patient", "identifier": ["123"]},
    "telecom null in list": {"resourceType": "Patient", "telecom": [None]},
    "empty strings": {"resourceType": "Patient", "gender": "", "birthDate": "", "name": [{"family": ""}]},
    "managingOrganization string": {"resourceType": "Patient", "managingOrganization": "Organization/x"},
    "reference injection": {"resourceType": "Patient", "managingOrganization": {"reference": "Organization/' OR 1=1 --"}},
    "reference traversal": {"resourceType": "Patient", "generalPractitioner": [{"reference": "../../../etc/passwd"}]},
    "contained junk": {"resourceType": "Patient", "contained": [{"resourceType": "Nope"}]},
    "text div script": {"resourceType": "Patient", "text": {"status": "generated",
                                                            "div": "<div><script>alert(1)</script></div>"}},
}

HUGE = {
    "name text 1 MB": {"resourceType": "Patient", "name": [{"text": "x" * 1_000_000}]},
    "100k given names": {"resourceType": "Patient", "name": [{"given": ["a"] * 100_000}]},
    "20k names": {"resourceType": "Patient", "name": [{"family": f"f{i}"} for i in range(20_000)]},
    "20k identifiers": {"resourceType": "Patient",
                        "identifier": [{"system": "urn:x", "value": str(i)} for i in range(20_000)]},
    "long id": {"resourceType": "Patient", "id": "a" * 10_000},
    "long system": {"resourceType": "Patient", "identifier": [{"system": "urn:" + "s" * 100_000, "value": "1"}]},
}


def _marked(body: dict, mark: str) -> dict:
    """The body with a family name to find it by, if it has a name list to put one in."""
    body = orjson.loads(orjson.dumps(body))
    if body.get("resourceType") == "Patient" and "name" not in body:
        body["name"] = [{"family": mark}]
    return body


def test_malformed_json_is_refused_with_an_operation_outcome_and_nothing_is_stored(client, doctor, existing):
    before = counts(client, doctor["h"])
    for label, raw in MALFORMED.items():
        for method, url in (("POST", "/fhir/Patient"), ("PUT", f"/fhir/Patient/{existing['patient']}"),
                            ("POST", "/fhir"), ("POST", "/fhir/Patient/$match")):
            r = client.request(method, url, content=raw, headers={**doctor["h"], "content-type": FHIR})
            check_answer(r, where=f"{label} {method} {url}")
            assert r.status_code in (400, 413, 422), (label, url, r.status_code, r.text[:300])
    assert counts(client, doctor["h"]) == before
    assert client.get(f"/fhir/Patient/{existing['patient']}", headers=doctor["h"]).json()["gender"] == "female"


@pytest.mark.parametrize("label", list(WRONG) + list(HUGE))
def test_wrong_types_and_huge_bodies_are_refused_or_stored_exactly(client, doctor, existing, label):
    body = _marked(WRONG.get(label) or HUGE[label], mark := f"Mark{uuid.uuid4().hex[:10]}")
    before = counts(client, doctor["h"])
    r = client.post("/fhir/Patient", json=body, headers=doctor["h"])
    check_answer(r, where=label)
    if r.status_code >= 400:
        issue = r.json()["issue"][0]
        # the platform names the element it refused, or says plainly it is not a resource it takes
        assert issue.get("expression") or re.search(r"resourceType|JSON|Patient|larger|body", issue["diagnostics"]), \
            (label, issue)
        assert counts(client, doctor["h"]) == before, label
        assert not client.get(f"/fhir/Patient?family={mark}", headers=doctor["h"]).json().get("entry")
    else:  # accepted: it is stored as sent, and reads back
        assert r.status_code == 201, (label, r.text[:300])
        back = client.get(f"/fhir/Patient/{r.json()['id']}", headers=doctor["h"])
        assert back.status_code == 200 and back.json()["resourceType"] == "Patient"
    r = client.put(f"/fhir/Patient/{existing['patient']}", json={**body, "id": existing["patient"]},
                   headers=doctor["h"])
    check_answer(r, where=f"PUT {label}")


def test_a_transaction_with_one_bad_entry_stores_none_of_its_entries(client, doctor):
    mark = f"Tx{uuid.uuid4().hex[:10]}"
    before = counts(client, doctor["h"])
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "name": [{"family": mark}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "name": [{"family": mark}], "birthDate": "1980-99-99"},
         "request": {"method": "POST", "url": "Patient"}},
    ]}
    r = client.post("/fhir", json=bundle, headers=doctor["h"])
    check_answer(r, where="transaction")
    assert r.status_code == 400
    assert any("birthDate" in " ".join(i.get("expression", [])) + i["diagnostics"] for i in r.json()["issue"])
    assert counts(client, doctor["h"]) == before
    for junk in ({"resourceType": "Bundle", "type": "transaction", "entry": "x"},
                 {"resourceType": "Bundle", "type": "nonsense", "entry": []},
                 {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "TRACE", "url": "x"}}]},
                 {"resourceType": "Bundle", "type": "transaction", "entry": [
                     {"resource": {"resourceType": "Patient"}, "request": {"method": "PUT", "url": "Patient/../../x"}}]},
                 {"resourceType": "Bundle", "type": "batch", "entry": [None, 1, "x", {}]}):
        r = client.post("/fhir", json=junk, headers=doctor["h"])
        check_answer(r, where=f"bundle {junk}")
    assert counts(client, doctor["h"]) == before


# --------------------------------------------------------------------- URLs, types, ids
BAD_PATHS = [
    "/fhir/Foo", "/fhir/patient", "/fhir/PATIENT", "/fhir/Patient%00", "/fhir/..%2F..%2Fetc%2Fpasswd",
    "/fhir/Patient/..%2F..%2Fetc%2Fpasswd", "/fhir/Patient/' OR '1'='1", "/fhir/Patient/" + "a" * 5000,
    "/fhir/Patient/x/_history/abc", "/fhir/Patient/x/_history/-1", "/fhir/Patient/x/_history/99999999999999999999",
    "/fhir/Patient/%2e%2e/AuditEvent", "/fhir/Patient/1/$everything?_count=-1", "/fhir/Foo/_history",
    "/fhir/Patient/_history?_since=yesterday", "/fhir/Patient/_history?_count=abc",
    "/fhir/Patient/x/$nonsense", "/fhir/$everything", "/fhir/Patient/$match", "/fhir/AuditEvent/' OR 1=1",
]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_unknown_types_and_odd_ids_get_a_clear_4xx(client, doctor, path):
    for method in ("GET", "DELETE", "PUT", "POST"):
        body = {"resourceType": "Patient"} if method in ("PUT", "POST") else None
        r = client.request(method, path, json=body, headers=doctor["h"])
        check_answer(r, where=f"{method} {path}", echo=len(path) + 400)
        # 204: deleting what does not exist is not an error (FHIR R4 http.html#delete)
        assert r.status_code in (200, 204, 400, 403, 404, 405, 409, 410, 413, 422), (method, path, r.status_code)


def test_an_unknown_resource_type_is_named_in_the_answer(client, doctor):
    r = client.get("/fhir/Pateint", headers=doctor["h"])
    assert r.status_code in (400, 404)
    assert "Pateint" in r.json()["issue"][0]["diagnostics"]
    r = client.post("/fhir/Pateint", json={"resourceType": "Pateint"}, headers=doctor["h"])
    assert r.status_code in (400, 404) and "Pateint" in r.json()["issue"][0]["diagnostics"]


# --------------------------------------------------------------------- search parameters
BAD_SEARCHES = {
    "Patient": ["birthdate=xx2020", "birthdate=2020-13-45", "birthdate=ge", "birthdate=gtlt2020", "birthdate=2020-01-01T25:00",
                "_count=-1", "_count=abc", "_count=1e9", "_count=99999999999999999999", "_count=", "_count=0",
                "_sort=nonsense", "_include=Foo:bar", "_include=Patient:nonsense", "_revinclude=*",
                "_elements=..", "_cursor=garbage", "_cursor=' OR 1=1", "_summary=bogus", "_total=bogus",
                "gender:missing=maybe", "name:nonsense=x", "identifier=|", "identifier=|||", "nonsense=1",
                "_id=" + ",".join(str(i) for i in range(2000)), "name=" + "x" * 10_000, "organization=Organization/../..",
                "_has:Observation:subject:code=1", "general-practitioner.name=x", "_lastUpdated=lt"],
    "Observation": ["value-quantity=abc", "value-quantity=gt5||", "value-quantity=gt|x|y|z", "value-quantity=1e999",
                    "date=xx2020", "date=eb", "code=", "code=|", "subject=Patient/'", "subject:Nope=1",
                    "patient=../../x", "_count=-1", "value-quantity=ap", "date=2020-02-30"],
}


@pytest.mark.parametrize(("res_type", "query"), [(t, q) for t, qs in BAD_SEARCHES.items() for q in qs])
def test_bad_search_parameters_and_prefixes_get_a_useful_answer(client, doctor, existing, res_type, query):
    key = query.split("=", 1)[0].split(":", 1)[0]
    for method in ("GET", "POST"):
        if method == "GET":
            r = client.get(f"/fhir/{res_type}?{query}", headers=doctor["h"])
        else:
            k, _, v = query.partition("=")
            r = client.post(f"/fhir/{res_type}/_search", data={k: v}, headers=doctor["h"])
        check_answer(r, where=f"{method} {res_type}?{query[:80]}", echo=len(query) + 400)
        if r.status_code >= 400:
            text = orjson.dumps(r.json()).decode()
            assert key.lstrip("_") in text or key in text, f"{query[:60]}: the answer does not name {key}: {text[:300]}"
        else:  # a search that is not refused is a real searchset (lenient handling, FHIR R4 search.html#errors)
            assert r.json()["resourceType"] == "Bundle" and r.json()["type"] == "searchset"


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_in_every_search_parameter_is_inert(client, doctor, existing, payload):
    """Each payload in every parameter of Patient and Observation search: a 4xx naming it or an
    ordinary (normally empty) searchset; the two resources are still there afterwards."""
    params = ["name", "family", "given", "identifier", "birthdate", "gender", "_id", "organization", "_count",
              "_cursor", "_sort", "_include", "_elements", "address", "telecom", "phone"]
    for p in params:
        r = client.get(f"/fhir/Patient?{p}={quote(payload, safe='')}", headers=doctor["h"])
        check_answer(r, where=f"Patient?{p}={payload[:40]!r}", echo=len(payload) * 3 + 400)
        if r.status_code == 200 and p not in ("_count", "_cursor", "_sort", "_include", "_elements"):
            assert all(e["resource"]["id"] != existing["patient"] for e in r.json().get("entry", [])), p
    for p in ("code", "subject", "patient", "date", "value-quantity", "status", "category"):
        r = client.get(f"/fhir/Observation?{p}={quote(payload, safe='')}", headers=doctor["h"])
        check_answer(r, where=f"Observation?{p}={payload[:40]!r}", echo=len(payload) * 3 + 400)
    # in header values
    h = dict(doctor["h"])
    safe = payload.replace("\r", "").replace("\n", "").encode("ascii", "backslashreplace").decode()
    for name in ("If-Match", "If-None-Exist", "Prefer", "X-Request-ID", "Accept"):
        r = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Hdr"}]},
                        headers={**h, name: safe})
        check_answer(r, where=f"header {name}", echo=len(safe) * 2 + 400)
        assert "set-cookie" not in r.headers
        assert r.headers.get("x-request-id", "") != safe or re.fullmatch(r"[A-Za-z0-9._-]{1,64}", safe)
    assert client.get(f"/fhir/Patient/{existing['patient']}", headers=doctor["h"]).status_code == 200
    assert client.get(f"/fhir/Observation/{existing['observation']}", headers=doctor["h"]).status_code == 200


# --------------------------------------------------------------------- XSS in what pages show
XSS = ["<script>alert('hl')</script>", "\"><img src=x onerror=alert('hl')>", "<svg/onload=alert('hl')>",
       "javascript:alert('hl')", "{{7*7}}<b>bold</b>"]


def test_names_with_script_are_escaped_on_every_page_that_shows_them(app, client, doctor):
    r = client.post("/fhir/Patient", json={
        "resourceType": "Patient", "gender": "male", "birthDate": "1981-02-03",
        "name": [{"family": XSS[0], "given": XSS[1:3]}, {"text": XSS[3] + XSS[4]}],
        "identifier": [{"system": "urn:fuzz", "value": XSS[1]}],
        "address": [{"text": XSS[2]}], "telecom": [{"system": "phone", "value": XSS[0]}]}, headers=doctor["h"])
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert r.headers["content-type"].startswith(FHIR)  # JSON, never rendered as HTML (nosniff)
    assert r.headers["x-content-type-options"] == "nosniff"
    with TestClient(app, base_url="http://testserver") as c:
        page = c.get("/login")
        tok = re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]
        assert c.post("/login", data={"username": doctor["name"], "password": PASSWORD, "csrf_token": tok, "next": "/"},
                      follow_redirects=False).status_code == 303
        pages = [c.get(f"/patients/{pid}"), c.get("/patients", params={"name": "<script>"}),
                 c.get("/patients", params={"birthdate": "1981-02-03"}),
                 c.get("/patients", params={"name": XSS[1]}, headers={"hx-request": "true"}),
                 c.get(f"/patients/{quote(XSS[0], safe='')}")]
        shown = 0
        for p in pages:
            assert p.status_code < 500, p.text[:300]
            if not p.headers["content-type"].startswith("text/html"):  # e.g. a 404 problem+json: never HTML
                assert p.headers["x-content-type-options"] == "nosniff"
                continue
            for bad in ("<script>alert", "<img src=x", "<svg/onload", "<b>bold</b>"):
                assert bad not in p.text, (p.url, bad)
            shown += "&lt;script&gt;alert(&#39;hl&#39;)&lt;/script&gt;" in p.text
        assert shown >= 2, [(p.status_code, p.url, p.text[-1500:]) for p in pages]  # the summary and the search list did show the names, escaped


# --------------------------------------------------------------------- Hypothesis
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False),
                      st.text(max_size=30), st.sampled_from(INJECTIONS + XSS))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                          max_leaves=20)
PATIENT_KEYS = ["id", "meta", "text", "extension", "identifier", "active", "name", "telecom", "gender", "birthDate",
                "deceasedBoolean", "deceasedDateTime", "address", "maritalStatus", "contact", "communication",
                "managingOrganization", "generalPractitioner", "link", "multipleBirthInteger", "photo"]
patients = st.fixed_dictionaries({"resourceType": st.just("Patient")},
                                 optional={k: json_value for k in PATIENT_KEYS})
_H = settings(max_examples=150, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))


@_H
@given(body=patients)
def test_random_patients_are_stored_whole_or_refused_naming_the_element(client, doctor, body):
    before = counts(client, doctor["h"])
    r = client.post("/fhir/Patient", json=body, headers=doctor["h"])
    check_answer(r, where=f"random Patient {str(body)[:200]}")
    if r.status_code >= 400:
        assert counts(client, doctor["h"]) == before
        issue = r.json()["issue"][0]
        assert issue.get("expression") or "Patient" in issue["diagnostics"], issue
    else:
        assert r.status_code == 201
        assert counts(client, doctor["h"]) == (before[0] + 1, before[1])


SEARCH_KEYS = ["name", "family", "given", "birthdate", "gender", "identifier", "_id", "_count", "_sort", "_include",
               "_elements", "_summary", "_total", "_cursor", "organization", "_lastUpdated", "name:exact",
               "name:contains", "birthdate:missing", "nonsense"]
PREFIXES = ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "xx", "gtlt"]
values = st.one_of(st.text(max_size=40), st.sampled_from(INJECTIONS),
                   st.builds(lambda p, d: p + d, st.sampled_from(PREFIXES),
                             st.one_of(st.dates().map(str), st.text("0123456789-:T.Z+", max_size=25))))


@_H
@given(query=st.lists(st.tuples(st.sampled_from(SEARCH_KEYS), values), min_size=1, max_size=4))
def test_random_searches_never_fail_on_the_server(client, doctor, query):
    from urllib.parse import urlencode

    r = client.get("/fhir/Patient?" + urlencode(query), headers=doctor["h"])
    check_answer(r, where=f"search {query}", echo=sum(len(k) + len(v) for k, v in query) * 3 + 400)
    if r.status_code == 200:
        assert r.json()["type"] == "searchset"


@_H
@given(raw=st.binary(max_size=300) | json_value.map(orjson.dumps))
def test_random_bytes_as_a_body_are_refused_cleanly(client, doctor, raw):
    r = client.post("/fhir/Observation", content=raw, headers={**doctor["h"], "content-type": FHIR})
    check_answer(r, where=f"bytes {raw[:80]!r}")
    assert r.status_code in (400, 403, 422), r.text[:200]
