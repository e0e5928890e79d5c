"""88 Synthea patient records (about 30,000 resources), each a transaction Bundle with
``urn:uuid:`` full URLs, loaded by one hospital system the way a real HIS would send
them; then counted, searched and read back.

The data are third-party (SMART Health IT generated-sample-data, Synthea v2.4.0; see
shared/testdata/synthea-smart-generated-sample-data/SOURCES.md) and are read from the
shared folder, never copied into the repository.  A missing folder fails the test: a
silent skip would let CI pass without ever loading real data.
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from dataclasses import dataclass, field

import pytest
from conftest import TESTDATA, Staff
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from healthlink.db import tables
from healthlink.runtime import Platform

pytestmark = pytest.mark.slow

SYNTHEA = TESTDATA / "synthea-smart-generated-sample-data"

# SOURCES.md, "Totals"
TOTALS = {
    "Patient": 88, "Observation": 11358, "MedicationRequest": 617, "AllergyIntolerance": 365,
    "Encounter": 3492, "DiagnosticReport": 625, "Condition": 606, "Immunization": 1271,
    "Procedure": 2758, "CarePlan": 337, "Goal": 100, "ImagingStudy": 34, "Claim": 4109,
    "ExplanationOfBenefit": 3492, "Organization": 166, "Practitioner": 166,
}
DIRECTORY_TYPES = ("Organization", "Practitioner")  # shared across institutions


@dataclass
class Loaded:
    headers: dict[str, str]
    institution: str
    # per bundle: urn:uuid full URL -> "Type/<server id>" (Organization and Practitioner
    # full URLs repeat across bundles, each bundle POSTs its own copy)
    mappings: list[dict[str, str]] = field(default_factory=list)
    # (resource as sent, "Type/<server id>", index of its bundle) for every entry
    sent: list[tuple[dict, str, int]] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)


def _bundle_files() -> list:
    assert SYNTHEA.is_dir(), (
        f"third-party test data missing: {SYNTHEA} (shared/testdata must be present; "
        "see the SOURCES.md of that folder)")
    files = sorted((SYNTHEA / "bundles").glob("*.json.gz"))
    assert len(files) == 88, f"expected 88 Synthea bundles in {SYNTHEA / 'bundles'}, found {len(files)}"
    return files


@pytest.fixture(scope="module")
def loaded(client: TestClient, module_his_client: Staff) -> Loaded:
    files = _bundle_files()
    headers = module_his_client.headers
    out = Loaded(headers, module_his_client.institution)
    for path in files:
        raw = gzip.decompress(path.read_bytes())
        bundle = json.loads(raw, parse_float=str)  # decimals as text: precision must survive
        r = client.post("/fhir", content=raw,
                        headers={**headers, "Content-Type": "application/fhir+json"})
        assert r.status_code == 200, f"{path.name}: {r.status_code} {r.text[:2000]}"
        resp = r.json()
        assert resp["resourceType"] == "Bundle" and resp["type"] == "transaction-response", path.name
        assert len(resp["entry"]) == len(bundle["entry"]), path.name
        mapping: dict[str, str] = {}
        out.mappings.append(mapping)
        for sent, got in zip(bundle["entry"], resp["entry"]):
            status = got["response"]["status"]
            out.statuses[status] += 1
            rt, rid, hist, vid = got["response"]["location"].split("/")
            assert (rt, hist, vid) == (sent["resource"]["resourceType"], "_history", "1"), got
            assert got["fullUrl"] == f"http://testserver/fhir/{rt}/{rid}"
            mapping[sent["fullUrl"]] = f"{rt}/{rid}"
            out.sent.append((sent["resource"], f"{rt}/{rid}", len(out.mappings) - 1))
    return out


def test_every_synthea_entry_is_created(loaded: Loaded) -> None:
    assert loaded.statuses == Counter({"201 Created": sum(TOTALS.values())})
    refs = [ref for _, ref, _ in loaded.sent]
    assert len(set(refs)) == len(refs) == sum(TOTALS.values())
    assert Counter(ref.split("/")[0] for ref in refs) == Counter(TOTALS)


@pytest.mark.parametrize("res_type", [t for t in TOTALS if t not in DIRECTORY_TYPES])
def test_patient_data_counts_match_sources_md(client: TestClient, loaded: Loaded, res_type: str) -> None:
    # patient data are counted per institution: the new institution holds only this load
    r = client.get(f"/fhir/{res_type}?_summary=count", headers=loaded.headers)
    assert r.status_code == 200, r.text
    assert r.json()["total"] == TOTALS[res_type]


@pytest.mark.parametrize("res_type", DIRECTORY_TYPES)
def test_directory_counts_match_sources_md(client: TestClient, loaded: Loaded, res_type: str) -> None:
    # Organization and Practitioner are shared region-wide, so count exactly the ids this
    # load's transaction responses returned (other tests' directory data do not disturb it)
    ids = [ref.split("/")[1] for _, ref, _ in loaded.sent if ref.startswith(f"{res_type}/")]
    assert len(ids) == TOTALS[res_type]
    r = client.post(f"/fhir/{res_type}/_search", data={"_id": ",".join(ids), "_summary": "count"},
                    headers=loaded.headers)
    assert r.status_code == 200, r.text
    assert r.json()["total"] == TOTALS[res_type]
    # and each of them is found by the tag the generator put on it
    r = client.post(f"/fhir/{res_type}/_search", headers=loaded.headers, data={
        "_id": ",".join(ids), "_tag": "https://smarthealthit.org/tags|synthea-5-2019", "_summary": "count"})
    assert r.status_code == 200 and r.json()["total"] == TOTALS[res_type], r.text


def test_urn_uuid_references_point_at_server_ids(client: TestClient, loaded: Loaded) -> None:
    manifest = json.loads((SYNTHEA / "manifest.json").read_text())
    files = [p.name for p in _bundle_files()]
    first = manifest["bundles"][0]
    mapping = loaded.mappings[files.index(first["file"].split("/")[-1])]
    patient_ref = mapping[f"urn:uuid:{first['patient_id']}"]
    assert patient_ref.startswith("Patient/")
    pid = patient_ref.split("/")[1]
    assert pid != first["patient_id"]  # POST: the server assigns the id

    r = client.get(f"/fhir/Observation?patient={pid}&_count=1000", headers=loaded.headers)
    assert r.status_code == 200, r.text
    obs = [e["resource"] for e in r.json()["entry"]]
    assert len(obs) == first["resource_counts"]["Observation"]
    assert {o["subject"]["reference"] for o in obs} == {patient_ref}
    # an Observation's encounter is one of this load's Encounters, readable by its new id
    enc_ref = next(o["encounter"]["reference"] for o in obs if "encounter" in o)
    assert enc_ref in mapping.values()
    r = client.get(f"/fhir/{enc_ref}", headers=loaded.headers)
    assert r.status_code == 200 and r.json()["subject"]["reference"] == patient_ref

    r = client.get(f"/fhir/Patient/{pid}/$everything?_count=1000", headers=loaded.headers)
    assert r.status_code == 200, r.text
    assert '"urn:uuid:' not in r.text


def test_no_stored_reference_names_a_bundle_local_urn_uuid(platform: Platform, loaded: Loaded) -> None:
    R = tables.resource
    with platform.db.read() as conn:
        stored = conn.execute(select(func.count()).where(
            R.c.institution_id == loaded.institution)).scalar_one()
        dangling = conn.execute(select(R.c.res_type, R.c.res_id).where(
            R.c.institution_id == loaded.institution,
            R.c.content.like('%"reference":"urn:uuid:%'))).all()
    assert stored == sum(TOTALS.values())
    assert dangling == []


def _rewrite(node: object, mapping: dict[str, str]) -> object:
    if isinstance(node, dict):
        return {k: (mapping.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, mapping))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite(v, mapping) for v in node]
    return node


def _strip(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k not in ("meta", "id")}


def test_sampled_resources_read_back_as_sent(client: TestClient, loaded: Loaded) -> None:
    by_type: dict[str, list[tuple[dict, str, int]]] = {}
    for res, ref, b in loaded.sent:
        by_type.setdefault(res["resourceType"], []).append((res, ref, b))
    rng = random.Random(20240801)
    sample = [x for t in sorted(by_type) for x in rng.sample(by_type[t], min(5, len(by_type[t])))]
    assert len(sample) >= 70
    for sent, ref, b in sample:
        r = client.get(f"/fhir/{ref}", headers=loaded.headers)
        assert r.status_code == 200, r.text
        got = json.loads(r.content, parse_float=str)
        assert got["id"] == ref.split("/")[1]
        assert got["meta"]["versionId"] == "1"
        assert got["meta"].get("tag") == (sent.get("meta") or {}).get("tag")
        assert _strip(got) == _strip(_rewrite(sent, loaded.mappings[b])), ref
