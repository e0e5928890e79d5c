"""The audit log through the real HTTP app: every access to patient data leaves an
AuditEvent (who, institution, address, what, which patient, when, outcome, why) that the
audit administrator finds with FHIR search; the log is append-only; no change and no
data leaves the platform without its record."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import pytest
from conftest import PASSWORD, observation, patient
from fastapi.testclient import TestClient

RID_EXT = "https://healthlink.example.org/fhir/StructureDefinition/request-id"


def events(client, auditor, *params: tuple[str, str]) -> list[dict]:  # noqa: ANN001
    r = client.get("/fhir/AuditEvent?" + urlencode([*params, ("_count", "1000")]), headers=auditor.headers)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def request_id(ev: dict) -> str | None:
    return next((x["valueString"] for x in ev.get("extension", []) if x["url"] == RID_EXT), None)


def by_request(evs: list[dict]) -> dict[str, dict]:
    return {request_id(e): e for e in evs}


def whats(ev: dict) -> set[str]:
    return {e["what"]["reference"] for e in ev.get("entity", []) if "what" in e}


def patients_of(ev: dict) -> set[str]:
    return {e["what"]["reference"] for e in ev.get("entity", [])
            if e.get("role", {}).get("code") == "1" and "what" in e}


def query_of(ev: dict) -> str | None:
    q = [e["query"] for e in ev.get("entity", []) if "query" in e]
    return base64.b64decode(q[0]).decode() if q else None


def practitioner(client, who) -> str:  # noqa: ANN001
    return client.get("/api/me", headers=who.headers).json()["practitioner"]


def call(client, who, method, url, rid, **kw):  # noqa: ANN001, ANN003, ANN201
    return client.request(method, url, headers={**who.headers, "X-Request-Id": rid, **kw.pop("headers", {})}, **kw)


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------- what is recorded
def test_every_patient_data_interaction_is_audited_with_who_what_where_when_why(client, staff, auditor):
    doc = staff("doctor")
    prac = practitioner(client, doc)
    tag = uuid.uuid4().hex[:8]
    rid = {k: f"{tag}-{k}" for k in ("create-p", "create-o", "update", "read", "vread", "search",
                                    "history", "history-type", "everything", "transaction", "delete")}
    start = datetime.now(timezone.utc)
    r = call(client, doc, "POST", "/fhir/Patient", rid["create-p"], json=patient())
    pid = r.json()["id"]
    r = call(client, doc, "POST", "/fhir/Observation", rid["create-o"], json=observation(pid))
    obs = r.json()
    oid = obs["id"]
    assert call(client, doc, "PUT", f"/fhir/Observation/{oid}", rid["update"],
                json=dict(obs, status="amended")).status_code == 200
    assert call(client, doc, "GET", f"/fhir/Patient/{pid}", rid["read"]).status_code == 200
    assert call(client, doc, "GET", f"/fhir/Observation/{oid}/_history/1", rid["vread"]).status_code == 200
    assert call(client, doc, "GET", f"/fhir/Observation?patient={pid}", rid["search"]).status_code == 200
    assert call(client, doc, "GET", f"/fhir/Observation/{oid}/_history", rid["history"]).status_code == 200
    assert call(client, doc, "GET", "/fhir/Observation/_history?_count=5", rid["history-type"]).status_code == 200
    assert call(client, doc, "GET", f"/fhir/Patient/{pid}/$everything", rid["everything"]).status_code == 200
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation(pid), "request": {"method": "POST", "url": "Observation"}}]}
    r = call(client, doc, "POST", "/fhir", rid["transaction"], json=tx)
    assert r.status_code == 200, r.text
    tx_obs = r.json()["entry"][0]["response"]["location"].split("/_history")[0]
    assert call(client, doc, "DELETE", f"/fhir/Observation/{oid}", rid["delete"]).status_code == 204

    got = by_request(events(client, auditor, ("patient", pid)))
    expected = {  # request -> (subtype, action, resources it must name)
        "create-p": ("create", "C", {f"Patient/{pid}"}),
        "create-o": ("create", "C", {f"Observation/{oid}"}),
        "update": ("update", "U", {f"Observation/{oid}"}),
        "read": ("read", "R", {f"Patient/{pid}"}),
        "vread": ("vread", "R", {f"Observation/{oid}"}),
        "search": ("search-type", "E", {f"Observation/{oid}"}),
        "history": ("history-instance", "R", {f"Observation/{oid}"}),
        "history-type": ("history-type", "R", {f"Observation/{oid}"}),
        "everything": ("everything", "E", {f"Patient/{pid}", f"Observation/{oid}"}),
        "transaction": ("transaction", "E", {tx_obs}),
        "delete": ("delete", "D", {f"Observation/{oid}"}),
    }
    for key, (subtype, action, refs) in expected.items():
        ev = got.get(rid[key])
        assert ev is not None, f"no audit record for {key}"
        assert ev["subtype"][0]["code"] == subtype, key
        assert ev["action"] == action, key
        assert ev["outcome"] == "0", key
        assert refs <= whats(ev), (key, whats(ev))
        assert patients_of(ev) >= {f"Patient/{pid}"}, key  # which patient
        agent = ev["agent"][0]  # who, from which institution and address
        assert agent["who"] == {"reference": f"Practitioner/{prac}", "display": doc.username}, key
        assert agent["requestor"] is True
        assert agent["location"]["reference"] == f"Organization/{doc.institution}"
        assert agent["network"]["address"] == "testclient"
        assert agent["role"][0]["coding"][0]["code"] == "doctor"
        assert ev["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"  # why
        recorded = datetime.fromisoformat(ev["recorded"])  # when
        assert start - timedelta(seconds=1) <= recorded <= datetime.now(timezone.utc)
        assert ev["type"]["code"] == "rest" and ev["source"]["site"] == f"Organization/{doc.institution}"
    assert query_of(got[rid["search"]]) == f"Observation?patient={pid}"


def test_search_audit_names_every_patient_it_returned(client, staff, auditor):
    doc = staff("doctor")
    family = f"Fam{uuid.uuid4().hex[:8]}"
    ids = [client.post("/fhir/Patient", json=patient(name=[{"family": family}]), headers=doc.headers).json()["id"]
           for _ in range(3)]
    rid = uuid.uuid4().hex
    r = call(client, doc, "GET", f"/fhir/Patient?family={family}&_count=2", rid)
    assert r.status_code == 200 and len(r.json()["entry"]) == 2
    returned = {e["resource"]["id"] for e in r.json()["entry"]}
    for pid in ids:
        evs = [e for e in events(client, auditor, ("patient", pid), ("subtype", "search-type"))
               if request_id(e) == rid]
        # the record names exactly the patients the page returned, no more
        assert bool(evs) == (pid in returned), pid
    ev = by_request(events(client, auditor, ("patient", sorted(returned)[0])))[rid]
    assert patients_of(ev) == {f"Patient/{p}" for p in returned}
    assert query_of(ev) == f"Patient?family={family}&_count=2"


def test_refused_and_failed_attempts_are_audited(client, staff, auditor):
    a = staff("doctor")
    b = staff("doctor")
    nurse = staff("nurse", institution=a.institution)
    pa = client.post("/fhir/Patient", json=patient(), headers=a.headers).json()["id"]
    oa = client.post("/fhir/Observation", json=observation(pa), headers=a.headers).json()["id"]
    tag = uuid.uuid4().hex[:8]
    cases = {  # request id -> (who, method, url, body, status, subtype)
        f"{tag}-1": (nurse, "POST", "/fhir/MedicationRequest", {
            "resourceType": "MedicationRequest", "status": "active", "intent": "order",
            "medicationCodeableConcept": {"text": "x"}, "subject": {"reference": f"Patient/{pa}"}},
            403, "create"),
        f"{tag}-2": (b, "GET", f"/fhir/Patient/{pa}", None, 404, "read"),
        f"{tag}-3": (b, "GET", f"/fhir/Observation/{oa}/_history/1", None, 404, "vread"),
        f"{tag}-4": (b, "GET", f"/fhir/Observation/{oa}/_history", None, 404, "history-instance"),
        f"{tag}-5": (b, "PUT", f"/fhir/Observation/{oa}", observation(pa, id=oa), 404, "update"),
        f"{tag}-6": (b, "POST", "/fhir/Observation", observation(pa), 422, "create"),
        f"{tag}-7": (nurse, "DELETE", f"/fhir/Observation/{oa}", None, 403, "delete"),
        f"{tag}-8": (b, "GET", "/fhir/Observation?bogus=1", None, 400, "search-type"),
        f"{tag}-9": (b, "GET", f"/fhir/Patient/{pa}/$everything", None, 404, "everything"),
    }
    for rid, (who, method, url, body, status, _) in cases.items():
        r = call(client, who, method, url, rid, json=body)
        assert r.status_code == status, (rid, r.text)
    recent = events(client, auditor, ("outcome", "4"), ("date", "ge" + iso(
        datetime.now(timezone.utc) - timedelta(minutes=1))))
    # each refusal is recorded exactly once (a write refused inside its transaction
    # used to be recorded there and again after the rollback)
    counts = [request_id(e) for e in recent]
    assert {rid: counts.count(rid) for rid in cases} == dict.fromkeys(cases, 1)
    failed = by_request(recent)
    for rid, (who, _, url, _, status, subtype) in cases.items():
        ev = failed.get(rid)
        assert ev is not None, f"refusal {rid} {url} was not audited"
        assert ev["subtype"][0]["code"] == subtype
        assert ev["outcomeDesc"].startswith(str(status))
        assert ev["agent"][0]["who"]["display"] == who.username
    # a refused look at another institution's patient names that patient for the auditor
    assert {f"Patient/{pa}"} <= patients_of(failed[f"{tag}-2"])
    assert f"{tag}-2" in by_request(events(client, auditor, ("patient", pa), ("outcome", "4")))
    # and can be found by who made it
    by_b = by_request(events(client, auditor, ("agent", practitioner(client, b)), ("outcome", "4")))
    assert {f"{tag}-{i}" for i in (2, 3, 4, 5, 6, 8, 9)} <= set(by_b)


def test_logins_successful_and_failed_are_audited(client, staff, auditor):
    doc = staff("doctor")  # logged in once already
    prac = practitioner(client, doc)
    r = client.post("/api/auth/login", json={"username": doc.username, "password": "wrong-password"},
                    headers={"X-Request-Id": "login-fail-" + prac})
    assert r.status_code == 401
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    assert client.post("/api/auth/login", json={"username": ghost, "password": "whatever1"}).status_code == 401
    evs = events(client, auditor, ("agent", prac), ("subtype", "login"))
    assert sorted(e["outcome"] for e in evs) == ["0", "8"]
    for ev in evs:
        assert ev["type"]["code"] == "110114"  # DICOM User Authentication
        assert ev["agent"][0]["who"]["display"] == doc.username
        assert ev["agent"][0]["network"]["address"] == "testclient"
        assert ev["agent"][0]["location"]["reference"] == f"Organization/{doc.institution}"
        assert ev["purposeOfEvent"][0]["coding"][0]["code"] == "HOPERAT"
    assert request_id([e for e in evs if e["outcome"] == "8"][0]) == "login-fail-" + prac
    # an unknown username is recorded too, under the name that was tried
    since = iso(datetime.now(timezone.utc) - timedelta(minutes=1))
    failed = events(client, auditor, ("subtype", "login"), ("outcome", "8"), ("date", "ge" + since))
    assert any(e["agent"][0]["who"].get("display") == ghost for e in failed)


def test_client_token_requests_are_audited(client, platform, make_institution, auditor):
    from healthlink.accounts import add_client

    cid = f"his-{uuid.uuid4().hex[:8]}"
    org = make_institution()
    secret = add_client(platform.db, client_id=cid, display_name="HIS", institution_id=org,
                        scopes="system/Patient.rs")
    form = {"grant_type": "client_credentials", "client_id": cid}
    assert client.post("/api/auth/token", data=form | {"client_secret": secret}).status_code == 200
    assert client.post("/api/auth/token", data=form | {"client_secret": "nope"}).status_code == 401
    assert client.post("/api/auth/token", data=form | {"client_secret": secret,
                                                       "scope": "system/Observation.rs"}).status_code == 401
    evs = events(client, auditor, ("agent", f"Device/{cid}"), ("subtype", "token"))
    assert sorted(e["outcome"] for e in evs) == ["0", "4", "8"]
    assert {e["agent"][0]["location"]["reference"] for e in evs} == {f"Organization/{org}"}


def test_audit_search_by_date_agent_and_outcome(client, staff, auditor):
    doc = staff("doctor")
    prac = practitioner(client, doc)
    before = datetime.now(timezone.utc) - timedelta(milliseconds=5)
    pid = client.post("/fhir/Patient", json=patient(), headers=doc.headers).json()["id"]
    client.get(f"/fhir/Patient/{pid}", headers=doc.headers)
    client.get("/fhir/Patient/does-not-exist", headers=doc.headers)
    after = datetime.now(timezone.utc) + timedelta(milliseconds=5)
    mine = events(client, auditor, ("agent", f"Practitioner/{prac}"), ("date", "ge" + iso(before)))
    assert {e["subtype"][0]["code"] for e in mine} >= {"create", "read"}
    assert all(datetime.fromisoformat(e["recorded"]) >= before for e in mine)
    assert not events(client, auditor, ("agent", prac), ("date", "gt" + iso(after)))
    assert {e["outcome"] for e in events(client, auditor, ("agent", prac), ("outcome", "4"))} == {"4"}
    assert len(events(client, auditor, ("agent", prac), ("outcome", "0,4"))) == len(
        events(client, auditor, ("agent", prac)))
    r = client.get("/fhir/AuditEvent?date=ge-not-a-date", headers=auditor.headers)
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"


def test_reading_the_audit_log_is_itself_audited(client, staff, auditor):
    other = staff("audit_admin")
    me = practitioner(client, auditor)
    r = client.get("/fhir/AuditEvent?patient=some-patient&_count=3", headers=auditor.headers)
    assert r.status_code == 200
    any_event = events(client, auditor, ("_count", "1"))[0]["id"]
    assert client.get(f"/fhir/AuditEvent/{any_event}", headers=auditor.headers).status_code == 200
    mine = events(client, other, ("agent", me))
    queries = [query_of(e) for e in mine if e["subtype"][0]["code"] == "search-type"]
    assert "AuditEvent?patient=some-patient&_count=3" in queries
    reads = [e for e in mine if e["subtype"][0]["code"] == "read"]
    assert any(f"AuditEvent/{any_event}" in whats(e) for e in reads)
    # a doctor may not read the log, and the attempt is itself recorded
    doc = staff("doctor")
    assert client.get("/fhir/AuditEvent", headers=doc.headers).status_code == 403
    assert client.get(f"/fhir/AuditEvent/{any_event}", headers=doc.headers).status_code == 403
    refused = events(client, auditor, ("agent", practitioner(client, doc)), ("outcome", "4"))
    assert len(refused) == 2


def test_audit_records_are_append_only(client, staff, auditor):
    sysadmin = staff("system_admin")
    ev = events(client, auditor, ("_count", "1"))[0]
    url = f"/fhir/AuditEvent/{ev['id']}"
    changed = dict(ev, outcome="12")
    for who in (auditor, sysadmin, staff("doctor")):
        for method, path, body in (("PUT", url, changed), ("DELETE", url, None), ("PATCH", url, []),
                                   ("POST", "/fhir/AuditEvent", changed), ("PUT", "/fhir/AuditEvent?_id=" + ev["id"], changed),
                                   ("DELETE", "/fhir/AuditEvent?_id=" + ev["id"], None)):
            r = client.request(method, path, json=body, headers=who.headers)
            assert r.status_code == 405, (method, path, r.status_code)
            assert r.headers["allow"] == "GET"
    for btype in ("transaction", "batch"):
        bundle = {"resourceType": "Bundle", "type": btype, "entry": [
            {"request": {"method": "DELETE", "url": f"AuditEvent/{ev['id']}"}},
            {"resource": changed, "request": {"method": "PUT", "url": f"AuditEvent/{ev['id']}"}}]}
        r = client.post("/fhir", json=bundle, headers=sysadmin.headers)
        assert r.status_code in (200, 403), r.text
        if btype == "batch":
            assert all(e["response"]["status"].startswith("403") for e in r.json()["entry"])
    r = client.get(url, headers=auditor.headers)
    assert r.status_code == 200 and r.json() == ev


# --------------------------------------------------------------------- no record, no data
@pytest.fixture
def failing_audit(platform):  # noqa: ANN001, ANN201
    """Make the next audit write fail (ledger.audit.AuditWriter.fail_next)."""
    def arm() -> None:
        platform.audit.fail_next = RuntimeError("injected audit failure: disk full")
    yield arm
    platform.audit.fail_next = None


def _clean_error(r, status: int) -> None:  # noqa: ANN001
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert "Traceback" not in r.text and "injected" not in r.text and 'File "' not in r.text


def test_a_write_rolls_back_when_its_audit_record_fails(app, client, staff, auditor, failing_audit):
    doc = staff("doctor")
    prac = practitioner(client, doc)
    family = f"Roll{uuid.uuid4().hex[:8]}"
    with TestClient(app, raise_server_exceptions=False) as c:
        failing_audit()
        r = c.post("/fhir/Patient", json=patient(name=[{"family": family}]), headers=doc.headers)
        _clean_error(r, 503)
        assert r.headers.get("retry-after")
        r = c.get(f"/fhir/Patient?family={family}", headers=doc.headers)
        assert r.status_code == 200 and not r.json().get("entry")  # the create was undone
        # update and delete roll back too
        pid = c.post("/fhir/Patient", json=patient(name=[{"family": family}]), headers=doc.headers).json()["id"]
        before = c.get(f"/fhir/Patient/{pid}", headers=doc.headers).json()
        failing_audit()
        _clean_error(c.put(f"/fhir/Patient/{pid}", json=dict(before, gender="female"), headers=doc.headers), 503)
        failing_audit()
        _clean_error(c.delete(f"/fhir/Patient/{pid}", headers=doc.headers), 503)
        assert c.get(f"/fhir/Patient/{pid}", headers=doc.headers).json() == before
        # and a transaction: none of its entries stays
        failing_audit()
        tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:p1", "resource": patient(name=[{"family": family + "tx"}]),
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": observation("x", subject={"reference": "urn:uuid:p1"}),
             "request": {"method": "POST", "url": "Observation"}}]}
        _clean_error(c.post("/fhir", json=tx, headers=doc.headers), 503)
        assert not c.get(f"/fhir/Patient?family={family}tx", headers=doc.headers).json().get("entry")
    # the failed writes are recorded as failures once the log works again
    failures = events(client, auditor, ("agent", prac), ("outcome", "8"))
    assert {e["subtype"][0]["code"] for e in failures} >= {"create", "update", "delete", "transaction"}


def test_a_read_returns_nothing_when_its_audit_record_cannot_be_made_durable(client, staff, failing_audit):
    doc = staff("doctor")
    family = f"Secret{uuid.uuid4().hex[:8]}"
    pid = client.post("/fhir/Patient", json=patient(name=[{"family": family}]), headers=doc.headers).json()["id"]
    for url in (f"/fhir/Patient/{pid}", f"/fhir/Patient?family={family}", f"/fhir/Patient/{pid}/$everything",
                f"/fhir/Patient/{pid}/_history", f"/fhir/Patient/{pid}/_history/1"):
        failing_audit()
        r = client.get(url, headers=doc.headers)
        _clean_error(r, 503)
        assert r.headers["retry-after"]
        assert family not in r.text and pid not in r.text, url
        assert client.get(url, headers=doc.headers).status_code == 200  # works again afterwards


# --------------------------------------------------------------------- group commit
def test_concurrent_reads_each_leave_their_record_in_shared_commits(client, staff, auditor, platform):
    doc = staff("doctor")
    pid = client.post("/fhir/Patient", json=patient(), headers=doc.headers).json()["id"]
    n = 50
    tag = uuid.uuid4().hex[:8]
    barrier = threading.Barrier(n)
    writer = platform.audit
    batches0, records0 = writer.batches, writer.batched_records

    def read(i: int) -> int:
        barrier.wait()
        return client.get(f"/fhir/Patient/{pid}", headers={**doc.headers, "X-Request-Id": f"{tag}-{i}"}).status_code

    with ThreadPoolExecutor(n) as pool:
        statuses = list(pool.map(read, range(n)))
    batches, records = writer.batches - batches0, writer.batched_records - records0
    assert statuses == [200] * n
    got = {request_id(e) for e in events(client, auditor, ("patient", pid), ("subtype", "read"))}
    assert {f"{tag}-{i}" for i in range(n)} <= got
    # group commit: the 50 records (and the record of the create, maybe) went to the database
    # in fewer commits than records
    assert records >= n
    assert 0 < batches < records


def test_login_password_is_never_in_the_audit_log(client, staff, auditor, platform):
    doc = staff("doctor")
    client.post("/api/auth/login", json={"username": doc.username, "password": "wrong-" + PASSWORD})
    evs = events(client, auditor, ("agent", practitioner(client, doc)))
    assert PASSWORD not in str(evs)


def test_a_batch_takes_its_sequence_numbers_in_its_order_with_its_entities(platform):
    """One batch of the group commit (one statement on PostgreSQL, ADR 0018): each record gets the
    next sequence number in the batch's order, and its entity rows carry that number."""
    from sqlalchemy import select

    from healthlink.db import tables as t
    from healthlink.ledger.audit import Agent, AuditRecord, insert_records

    tag = uuid.uuid4().hex[:8]
    recs = [AuditRecord("read", Agent("Practitioner/x", f"user-{tag}", "inst-x"), patients={f"{tag}-{i}"},
                        entities=[f"Observation/{tag}-{i}"]) for i in range(5)]
    with platform.db.write_one() as conn:
        insert_records(conn, recs)
    ev, en = t.audit_event, t.audit_entity
    with platform.db.read() as conn:
        rows = conn.execute(select(ev.c.seq, ev.c.event_id).where(ev.c.username == f"user-{tag}")
                            .order_by(ev.c.seq)).all()
        ents = conn.execute(select(en.c.seq, en.c.kind, en.c.ref).where(en.c.seq.in_([r.seq for r in rows]))).all()
    # in sequence order the records come as they were in the batch
    assert [r.event_id for r in rows] == [r.event_id for r in recs]
    want = {(r.seq, k, ref) for i, r in enumerate(rows)
            for k, ref in (("P", f"Patient/{tag}-{i}"), ("E", f"Observation/{tag}-{i}"))}
    assert {(e.seq, e.kind, e.ref) for e in ents} == want


# --------------------------------------------------------------------- group commit of threads (ADR 0021)
def _thread_records(tag: str, n: int):  # noqa: ANN202
    from healthlink.ledger.audit import Agent, AuditRecord

    return [AuditRecord("operation", Agent("Practitioner/x", f"user-{tag}", "inst-x"), patients={f"{tag}-{i}"},
                        query=f"Patient/{tag}-{i}/$medication-check") for i in range(n)]


def _stored(platform, records) -> set[str]:  # noqa: ANN001
    from sqlalchemy import select

    from healthlink.db import tables as t

    with platform.db.read() as conn:
        return set(conn.execute(select(t.audit_event.c.event_id).where(
            t.audit_event.c.event_id.in_([r.event_id for r in records]))).scalars())


def _slow_first_commit(writer, *, hold: threading.Event | None = None, seconds: float = 0.05):  # noqa: ANN001, ANN202
    """The writer's first batch waits (``hold`` set, or ``seconds``) before it commits."""
    commit, calls = writer._commit, []

    def slow(records):  # noqa: ANN001, ANN202
        calls.append(len(records))
        if len(calls) == 1:
            if hold is not None:
                assert hold.wait(10)
            else:
                time.sleep(seconds)
        return commit(records)

    writer._commit = slow
    return calls


def test_threads_write_their_own_records_in_shared_commits_each_durable_before_it_returns(platform):
    from healthlink.ledger.audit import AuditWriter

    writer = AuditWriter(platform.db)
    n = 40
    recs = _thread_records(uuid.uuid4().hex[:8], n)
    calls = _slow_first_commit(writer)  # the others arrive while the first leader writes
    barrier = threading.Barrier(n)

    def one(rec) -> bool:  # noqa: ANN001
        barrier.wait()
        writer.record(rec)
        return rec.event_id in _stored(platform, [rec])  # in the database when record() returns

    with ThreadPoolExecutor(n) as pool:
        durable = list(pool.map(one, recs))
    assert durable == [True] * n
    assert _stored(platform, recs) == {r.event_id for r in recs}
    assert writer.batched_records == n and sum(calls) == n
    assert writer.batches == len(calls) <= 3, calls  # the first alone, then the waiting ones together
    assert writer._thread is None  # no writer thread was needed


def test_a_failed_batch_fails_only_its_own_threads_and_the_next_batch_is_written(platform):
    from healthlink.errors import Unavailable
    from healthlink.ledger.audit import AuditWriter

    writer = AuditWriter(platform.db)
    first, *rest = _thread_records(uuid.uuid4().hex[:8], 6)
    hold = threading.Event()
    _slow_first_commit(writer, hold=hold)
    writer.fail_next = RuntimeError("injected audit failure: disk full")
    outcomes: dict[str, str] = {}

    def one(rec) -> None:  # noqa: ANN001
        try:
            writer.record(rec)
            outcomes[rec.event_id] = "ok"
        except Unavailable as exc:
            outcomes[rec.event_id] = exc.message

    leader = threading.Thread(target=one, args=(first,))
    leader.start()
    while not writer._leading:
        time.sleep(0.001)
    followers = [threading.Thread(target=one, args=(r,)) for r in rest]
    for th in followers:
        th.start()
    while len(writer._pending) < len(rest):  # the leader's own record is in its batch
        time.sleep(0.001)
    hold.set()
    for th in [leader, *followers]:
        th.join(10)
    assert outcomes[first.event_id] == "the audit record could not be written; nothing was returned"
    assert [outcomes[r.event_id] for r in rest] == ["ok"] * len(rest)
    assert _stored(platform, [first, *rest]) == {r.event_id for r in rest}


def test_a_thread_that_waits_too_long_gets_503_leaves_the_queue_and_later_records_are_written(platform):
    from healthlink.errors import Unavailable
    from healthlink.ledger.audit import AuditWriter

    writer = AuditWriter(platform.db)
    first, late, after = _thread_records(uuid.uuid4().hex[:8], 3)
    hold = threading.Event()
    _slow_first_commit(writer, hold=hold)
    leader = threading.Thread(target=writer.record, args=(first,))
    leader.start()
    while not writer._leading:
        time.sleep(0.001)
    with pytest.raises(Unavailable):
        writer.record(late, timeout=0.2)
    assert writer._pending == []  # the late one left the queue (the first is in the held batch)
    hold.set()
    leader.join(10)
    writer.record(after, timeout=5)  # nobody holds the lead any more
    assert _stored(platform, [first, late, after]) == {first.event_id, after.event_id}
    assert not writer._leading and writer._pending == []


def test_a_record_inside_a_write_transaction_never_hangs(platform):
    """On SQLite the transaction holds the only write lock: the record cannot be written before it
    ends, so the caller gets 503 after its timeout (and the record is written afterwards) instead
    of waiting for ever on the lock it holds itself.  On PostgreSQL it is written at once."""
    from healthlink.errors import Unavailable
    from healthlink.ledger.audit import AuditWriter

    writer = AuditWriter(platform.db)
    (rec,) = _thread_records(uuid.uuid4().hex[:8], 1)
    try:
        with platform.db.write():
            if platform.db.is_sqlite:
                with pytest.raises(Unavailable):
                    writer.record(rec, timeout=0.3)
            else:
                writer.record(rec, timeout=5)
        if platform.db.is_sqlite:
            writer.close()  # the writer thread writes it once the transaction is over
        assert _stored(platform, [rec]) == {rec.event_id}
    finally:
        writer.close()
