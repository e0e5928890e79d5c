"""The official HL7 FHIR R4 (4.0.1) examples, sent by a hospital system.

Every non-Bundle example is PUT to ``/fhir/<Type>/<id>`` (update as create keeps the
example's id, so the examples' references to each other resolve) and must read back as
sent; the few the platform refuses are listed in ``REJECTED`` with the reason.  The six
OperationOutcome examples are stored like any directory resource (they hold no patient
data and the hospital system's role may write directory types).  The transaction and
batch Bundles go through ``POST /fhir``; Bundles of other types are refused (ADR 0008).

Third-party data (CC0, npm hl7.fhir.r4.examples@4.0.1; see
shared/testdata/hl7-fhir-r4-examples/SOURCES.md), read from the shared folder.  A missing
folder fails the test.  The examples' ids are fixed, so this module must be the only one
in a test session that stores them.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import TESTDATA, Staff
from fastapi.testclient import TestClient

from healthlink.fhir.store import SOURCE_INSTITUTION_EXT

pytestmark = pytest.mark.slow

EXAMPLES = TESTDATA / "hl7-fhir-r4-examples" / "examples"

# Examples the platform refuses: file -> (status, element the OperationOutcome names, why).
REJECTED: dict[str, tuple[int, str, str]] = {
    # PUT /fhir/DiagnosticReport/gingival-mass
    "DiagnosticReport-gingival-mass.json": (
        400, "DiagnosticReport.resultsInterpreter[0].display",
        "the display holds a no-break space (U+00A0), which the R4 JSON schema's string "
        "pattern [ \\r\\n\\t\\S]+ does not allow (SOURCES.md: the one example that fails the schema)"),
    # POST /fhir (transaction)
    "Bundle-bundle-transaction.json": (
        400, "Bundle.entry[7].request.url",
        "entry 7 is POST ValueSet/$lookup, an operation; a Bundle entry may only create, read, "
        "update or delete (the example also shows ifMatch on a resource that is not there)"),
    "Bundle-ussg-fht.json": (
        400, "Bundle.entry[0].request.url",
        "request.url is an absolute URL on another server (http://hl7.org/fhir/us/sdc/...); "
        "Bundle.entry.request.url is relative to the base the Bundle is posted to"),
}
# Bundles of other types (document, collection, message, searchset, *-response) are not
# stored: PUT /fhir/Bundle/<id> answers 405 (ADR 0008; a stored document would put patient
# data outside the per-institution rules and the audit trail), POST /fhir answers 400.
TRANSACTIONS_ACCEPTED = ("Bundle-hla-1.json", "Bundle-xds.json")


def _files() -> list[Path]:
    assert EXAMPLES.is_dir(), (
        f"third-party test data missing: {EXAMPLES} (shared/testdata must be present; "
        "see the SOURCES.md of that folder)")
    files = sorted(EXAMPLES.glob("*.json"))
    assert len(files) == 388, f"expected 388 examples in {EXAMPLES}, found {len(files)}"
    return files


def _load(path: Path) -> dict:
    # decimals as text: FHIR decimals keep their precision (1.00 is not 1.0)
    return json.loads(path.read_bytes(), parse_float=str)


def _as_sent(resource: dict) -> dict:
    """What must come back: the resource without id, and meta without what the server sets."""
    out = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    exts = [e for e in meta.get("extension", []) if e.get("url") != SOURCE_INSTITUTION_EXT]
    meta.pop("extension", None)
    if exts:
        meta["extension"] = exts
    if meta:
        out["meta"] = meta
    return out


def _put_order(path: Path) -> tuple[int, str]:
    # referenced resources first, so a resource never names a Patient before it exists
    first = ("Organization", "Practitioner", "Location", "Patient")
    rt = path.name.split("-")[0]
    return (first.index(rt) if rt in first else len(first), path.name)


def _send(client: TestClient, his: Staff, method: str, url: str, path: Path):  # noqa: ANN202
    return client.request(method, url, content=path.read_bytes(),
                          headers={**his.headers, "Content-Type": "application/fhir+json"})


def _names(r) -> list[str]:  # noqa: ANN001
    """The elements an OperationOutcome's issues name."""
    oo = r.json()
    assert oo["resourceType"] == "OperationOutcome", r.text
    return [e for i in oo["issue"] for e in i.get("expression", [])]


@pytest.fixture(scope="module")
def stored(client: TestClient, module_his_client: Staff) -> dict:
    """PUT every non-Bundle example; -> {"problems": [...], "stored": n, "rejected": n}."""
    his = module_his_client
    files = [f for f in _files() if not f.name.startswith("Bundle-")]
    assert len(files) == 360
    out: dict = {"problems": [], "stored": 0, "rejected": 0}
    problems = out["problems"]  # every example's problem, not just the first one's
    for path in sorted(files, key=_put_order):
        sent = _load(path)
        rt, rid = sent["resourceType"], sent["id"]
        assert path.name == f"{rt}-{rid}.json"
        r = _send(client, his, "PUT", f"/fhir/{rt}/{rid}", path)
        if path.name in REJECTED:
            status, element, _why = REJECTED[path.name]
            if r.status_code != status or element not in _names(r):
                problems.append(f"{path.name}: expected {status} naming {element}, got {r.status_code} {r.text[:500]}")
            elif client.get(f"/fhir/{rt}/{rid}", headers=his.headers).status_code != 404:
                problems.append(f"{path.name}: rejected but stored")
            else:
                out["rejected"] += 1
            continue
        if r.status_code != 201 or r.headers["ETag"] != 'W/"1"':
            problems.append(f"{path.name}: {r.status_code} {r.text[:500]}")
            continue
        r = client.get(f"/fhir/{rt}/{rid}", headers=his.headers)
        got = json.loads(r.content, parse_float=str)
        if r.status_code != 200 or got["id"] != rid or got["meta"]["versionId"] != "1":
            problems.append(f"{path.name}: read back {r.status_code} {r.text[:300]}")
        elif _as_sent(got) != _as_sent(sent):
            problems.append(f"{path.name}: reads back changed: {_diff(_as_sent(sent), _as_sent(got))}")
        else:
            out["stored"] += 1
    return out


def test_every_non_bundle_example_is_stored_with_its_id_and_reads_back_as_sent(stored: dict) -> None:
    assert stored["problems"] == []
    rejected = [f for f in REJECTED if not f.startswith("Bundle-")]
    assert (stored["stored"], stored["rejected"]) == (360 - len(rejected), len(rejected))


def test_decimals_keep_their_precision(client: TestClient, module_his_client: Staff, stored: dict) -> None:
    # Observation-decimal.json is HL7's own test of this: 1.00, 1E-22 and
    # 1.000000000000000000E-245 must come back as written, not as 1.0, 1e-22, 1e-245
    r = client.get("/fhir/Observation/decimal", headers=module_his_client.headers)
    assert r.status_code == 200
    assert b'"value":1.00,' in r.content and b'"value":1E-22,' in r.content
    assert b'"value":1.000000000000000000E-245,' in r.content


def _diff(a: object, b: object, path: str = "") -> list[str]:
    """Where two JSON values differ, as element paths."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: sent {a!r}, got {b!r}"]


def _rewrite(node: object, mapping: dict[str, str]) -> object:
    if isinstance(node, dict):
        return {k: (mapping.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, mapping))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite(v, mapping) for v in node]
    return node


@pytest.mark.parametrize("name", TRANSACTIONS_ACCEPTED)
def test_transaction_example_creates_every_entry_with_references_rewritten(
        client: TestClient, module_his_client: Staff, name: str) -> None:
    his = module_his_client
    bundle = _load(EXAMPLES / name)
    r = _send(client, his, "POST", "/fhir", EXAMPLES / name)
    assert r.status_code == 200, r.text
    resp = r.json()
    assert resp["type"] == "transaction-response" and len(resp["entry"]) == len(bundle["entry"])
    mapping = {}
    for sent, got in zip(bundle["entry"], resp["entry"]):
        assert got["response"]["status"] == "201 Created", got
        rt, rid, _, vid = got["response"]["location"].split("/")
        assert rt == sent["resource"]["resourceType"] and vid == "1"
        assert rid != sent["resource"].get("id")  # POST: the server names it
        mapping[sent["fullUrl"]] = f"{rt}/{rid}"
    for sent in bundle["entry"]:
        r = client.get(f"/fhir/{mapping[sent['fullUrl']]}", headers=his.headers)
        assert r.status_code == 200, r.text
        got = json.loads(r.content, parse_float=str)
        # references to other entries' full URLs now name the created resources; others
        # (Patient/119, and in xds Patient/a2 from an entry whose fullUrl is a urn:, which
        # FHIR bundle.html#references gives no meaning) are kept as sent
        assert _as_sent(got) == _as_sent(_rewrite(sent["resource"], mapping)), sent["fullUrl"]
    if name == "Bundle-hla-1.json":
        report = client.get(f"/fhir/{mapping[bundle['entry'][0]['fullUrl']]}", headers=his.headers).json()
        sent_results = bundle["entry"][0]["resource"]["result"]
        assert all(x["reference"].startswith("urn:uuid:") for x in sent_results)
        assert [x["reference"] for x in report["result"]] == [mapping[x["reference"]] for x in sent_results]


@pytest.mark.parametrize("name", [n for n in REJECTED if n.startswith("Bundle-")])
def test_rejected_transaction_example_answers_400_and_leaves_nothing(
        client: TestClient, module_his_client: Staff, name: str) -> None:
    his = module_his_client
    before = client.get("/fhir/Patient?_summary=count", headers=his.headers).json()["total"]
    r = _send(client, his, "POST", "/fhir", EXAMPLES / name)
    status, element, _why = REJECTED[name]
    assert r.status_code == status, r.text
    assert element in _names(r)
    assert client.get("/fhir/Patient?_summary=count", headers=his.headers).json()["total"] == before
    for entry in _load(EXAMPLES / name)["entry"]:
        res = entry.get("resource") or {}
        if res.get("id") and res["resourceType"] != "Patient":
            assert client.get(f"/fhir/{res['resourceType']}/{res['id']}", headers=his.headers).status_code == 404


def test_batch_examples_answer_each_entry_on_its_own(
        client: TestClient, module_his_client: Staff, stored: dict) -> None:
    his = module_his_client
    r = _send(client, his, "POST", "/fhir", EXAMPLES / "Bundle-bundle-request-simplesummary.json")
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["200 OK"] * 4
    assert entries[0]["resource"]["id"] == "example"
    # what the examples hold for Patient/example (computed from the files)
    conditions = [f for f in EXAMPLES.glob("Condition-*.json")
                  if _load(f).get("subject", {}).get("reference") == "Patient/example"]
    assert len(conditions) == 4
    assert sorted(x["resource"]["id"] for x in entries[1]["resource"]["entry"]) == sorted(
        _load(f)["id"] for f in conditions)
    assert entries[2]["resource"].get("entry", []) == []  # no MedicationStatement of Patient/example

    # _list and MedicationStatement's 'notgiven' are not R4 search parameters here: those
    # entries fail on their own with 400, the read still answers
    r = _send(client, his, "POST", "/fhir", EXAMPLES / "Bundle-bundle-request-medsallergies.json")
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["200 OK"] + ["400 Bad Request"] * 4
    assert entries[0]["resource"]["id"] == "example"
    for i, e in enumerate(entries[1:], start=1):
        issue = e["response"]["outcome"]["issue"][0]
        assert issue["expression"] == [f"Bundle.entry[{i}].request.url"]
        assert ("'_list'" if i < 4 else "'notgiven'") in issue["diagnostics"]


def test_other_bundle_types_are_neither_stored_nor_processed(
        client: TestClient, module_his_client: Staff) -> None:
    his = module_his_client
    others = [f for f in _files() if f.name.startswith("Bundle-")
              and _load(f)["type"] not in ("transaction", "batch")]
    assert Counter(_load(f)["type"] for f in others) == Counter(
        collection=14, searchset=2, message=2, document=1, **{"batch-response": 2, "transaction-response": 1})
    for path in others:
        bid = _load(path)["id"]
        r = _send(client, his, "PUT", f"/fhir/Bundle/{bid}", path)
        assert r.status_code == 405 and _names(r) == ["Bundle"], f"{path.name}: {r.text}"
        r = _send(client, his, "POST", "/fhir/Bundle", path)
        assert r.status_code == 405, f"{path.name}: {r.text}"
        r = _send(client, his, "POST", "/fhir", path)
        assert r.status_code == 400 and _names(r) == ["Bundle.type"], f"{path.name}: {r.text}"
        assert client.get(f"/fhir/Bundle/{bid}", headers=his.headers).status_code == 404
