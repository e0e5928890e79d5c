"""The ledger's HTTP API (issue 6, item 5): public checkpoint, vkey and proofs that verify with the
RFC 9162 algorithms; the audit administrator's status and per-record proofs; a result version's
proof for whoever may read it; a patient's access history with inclusion proofs."""

from __future__ import annotations

import base64
import hashlib

from grantkit import actor, build
from sqlalchemy import select

from healthlink.access import RequestContext
from healthlink.db import tables as t
from healthlink.ledger import merkle
from healthlink.ledger.checkpoint import Checkpoint, Verifier, open_note


def _b(xs: list[str]) -> list[bytes]:
    return [base64.b64decode(x) for x in xs]


def _head(client) -> tuple[Checkpoint, str]:  # noqa: ANN001
    vkey = client.get("/api/ledger/vkey").text.strip()
    note = client.get("/api/ledger/checkpoint").text
    text, _ = open_note(note, [Verifier.from_vkey(vkey)])
    return Checkpoint.parse(text), vkey


def test_public_checkpoint_and_proofs_verify(client, platform, staff):  # noqa: ANN001
    d = staff("doctor")
    client.post("/fhir/Patient", headers=d.headers, json={"resourceType": "Patient", "name": [{"family": "L"}]})
    platform.ledger.integrate()
    platform.ledger.checkpoint()
    cp, _ = _head(client)
    assert cp.size >= 1 and cp.origin == platform.settings.ledger_origin
    r = client.get("/api/ledger/proof/inclusion", params={"index": cp.size - 1, "size": cp.size})
    assert r.status_code == 200
    with platform.db.read() as conn:  # the leaf hash as the store holds it
        h = bytes(conn.execute(select(t.ledger_leaf.c.hash).where(t.ledger_leaf.c.idx == cp.size - 1)).scalar_one())
    assert merkle.verify_inclusion(h, cp.size - 1, cp.size, _b(r.json()["proof"]), cp.root)
    if cp.size > 1:
        old = cp.size // 2
        r = client.get("/api/ledger/proof/consistency", params={"old": old, "new": cp.size})
        assert merkle.verify_consistency(old, cp.size, platform.ledger.root_at(old), cp.root, _b(r.json()["proof"]))
    assert client.get("/api/ledger/proof/inclusion", params={"index": 10**9, "size": 10**9 + 1}).status_code == 400
    assert client.get("/api/ledger/proof/consistency", params={"old": 5, "new": 2}).status_code == 400


def test_status_and_audit_record_proofs_are_for_the_audit_administrator(client, platform, staff):  # noqa: ANN001
    d, admin = staff("doctor"), staff("audit_admin")
    client.post("/fhir/Patient", headers=d.headers, json={"resourceType": "Patient", "name": [{"family": "M"}]})
    assert client.get("/api/ledger/status", headers=d.headers).status_code == 403
    platform.ledger.integrate()
    st = client.get("/api/ledger/status", headers=admin.headers).json()
    assert st["size"] >= 1 and st["vkey"].startswith(platform.settings.ledger_origin)
    events = client.get("/fhir/AuditEvent", headers=admin.headers, params={"_count": "5"}).json()
    event_id = events["entry"][0]["resource"]["id"]
    platform.ledger.integrate()
    r = client.get(f"/api/ledger/audit/{event_id}", headers=admin.headers)
    assert r.status_code == 200, r.text
    p = r.json()
    data = bytes.fromhex(p["leaf_data"])
    assert data.endswith(bytes.fromhex(p["record_sha256"]))  # the record's digest is in the leaf
    assert merkle.leaf_hash(data).hex() == p["leaf_hash"]
    cp = Checkpoint.parse(open_note(p["checkpoint"], [Verifier.from_vkey(st["vkey"])])[0])
    assert cp.size == p["tree_size"]
    assert merkle.verify_inclusion(merkle.leaf_hash(data), p["leaf_index"], cp.size, _b(p["inclusion_proof"]), cp.root)
    assert client.get(f"/api/ledger/audit/{event_id}", headers=d.headers).status_code == 403


def test_a_result_version_is_shown_with_its_proof_to_whoever_may_read_it(client, platform, staff):  # noqa: ANN001
    d, other = staff("doctor"), staff("doctor")
    pid = client.post("/fhir/Patient", headers=d.headers,
                      json={"resourceType": "Patient", "name": [{"family": "R"}]}).json()["id"]
    obs = client.post("/fhir/Observation", headers=d.headers, json={
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{pid}"}, "valueQuantity": {"value": 5.1}}).json()
    platform.ledger.integrate()
    r = client.get(f"/api/ledger/result/Observation/{obs['id']}/1", headers=d.headers)
    assert r.status_code == 200, r.text
    p = r.json()
    stored = client.get(f"/fhir/Observation/{obs['id']}/_history/1", headers=d.headers).content
    assert hashlib.sha256(stored).hexdigest() == p["content_sha256"]
    assert bytes.fromhex(p["leaf_data"]).endswith(hashlib.sha256(stored).digest())
    text = p["checkpoint"]  # the bundle carries the checkpoint it proves against
    vkey = client.get("/api/ledger/vkey").text.strip()
    cp = Checkpoint.parse(open_note(text, [Verifier.from_vkey(vkey)])[0])
    assert merkle.verify_inclusion(bytes.fromhex(p["leaf_hash"]), p["leaf_index"], cp.size,
                                   _b(p["inclusion_proof"]), cp.root)
    assert client.get(f"/api/ledger/result/Observation/{obs['id']}/1", headers=other.headers).status_code == 404
    assert client.get(f"/api/ledger/result/Patient/{pid}/1", headers=d.headers).status_code == 404


def test_a_patients_access_history_comes_with_proofs(client, platform, make_institution):  # noqa: ANN001
    a, b = make_institution(), make_institution()
    doctor = actor("doctor", a)
    w = build(platform, a, b, doctor_a=doctor)
    platform.repository(RequestContext(actor=doctor)).read("Observation", w.obs_a)
    platform.ledger.integrate()
    session = platform.patient_accounts
    with platform.db.read() as conn:
        account = conn.execute(select(t.patient_account.c.id).where(
            t.patient_account.c.person_id == w.person)).scalar_one()
    token = session._session(account, w.person).token  # a signed-in patient
    r = client.get("/api/patient/history", params={"proofs": "true"}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    body = r.json()
    proved = [i for i in body["history"] if "ledger" in i]
    assert proved, body
    cp = Checkpoint.parse(open_note(body["checkpoint"], [Verifier.from_vkey(body["vkey"])])[0])
    for i in proved:
        leaf = i["ledger"]
        h = merkle.leaf_hash(bytes.fromhex(leaf["leaf_data"]))
        assert h.hex() == leaf["leaf_hash"]
        assert merkle.verify_inclusion(h, leaf["leaf_index"], cp.size, _b(leaf["inclusion_proof"]), cp.root)
