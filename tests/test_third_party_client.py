"""A FHIR client this project does not write (fhirpy) works against the served platform:
log in, create, read, search with parameters, and follow ``next`` links page by page.

The server's public base URL (``settings.base_url``, used in Bundle links) differs from
the loopback address the test connects to, as it does behind a reverse proxy; fhirpy's
``url_aliases`` maps the public address onto the one it connects to.
"""

from __future__ import annotations

import httpx
import pytest
from conftest import PASSWORD, observation, patient
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import AuthorizationError, ResourceNotFound

N_OBSERVATIONS = 7
PAGE = 2


@pytest.fixture
def fhir(live_server: str, settings, staff) -> SyncFHIRClient:  # noqa: ANN001
    """fhirpy logged in as a new doctor: token from /api/auth/login over real HTTP."""
    doc = staff("doctor")
    r = httpx.post(f"{live_server}/api/auth/login",
                   json={"username": doc.username, "password": PASSWORD}, timeout=10)
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    return SyncFHIRClient(f"{live_server}/fhir", authorization=f"Bearer {token}",
                          url_aliases=[settings.base_url.rstrip("/") + "/fhir"])


@pytest.fixture
def patient_with_observations(fhir: SyncFHIRClient) -> tuple[str, dict[str, str]]:
    """A Patient and N Observations on distinct days; returns (patient id, {obs id: day})."""
    pat = fhir.resource("Patient", **patient())
    pat.save()
    assert pat.id
    made = {}
    for day in range(1, N_OBSERVATIONS + 1):
        obs = fhir.resource("Observation", **observation(
            pat.id, effectiveDateTime=f"2024-08-{day:02d}T10:00:00Z"))
        obs.save()
        assert obs.id and obs.id not in made
        made[obs.id] = f"2024-08-{day:02d}"
    return pat.id, made


def test_fhirpy_reads_back_what_it_created(fhir, patient_with_observations):
    pid, made = patient_with_observations
    pat = fhir.reference("Patient", pid).to_resource()
    assert pat["name"][0]["family"] == "Zhaxi"
    assert pat["meta"]["versionId"] == "1"
    for obs_id, day in made.items():
        obs = fhir.reference("Observation", obs_id).to_resource()  # GET /Observation/{id}
        assert obs.id == obs_id
        assert obs["effectiveDateTime"].startswith(day)
        assert obs["subject"]["reference"] == f"Patient/{pid}"
        assert obs["valueQuantity"]["value"] == 13.2
    some = next(iter(made))
    assert fhir.resources("Observation").search(_id=some).get().id == some


def test_fhirpy_search_parameters_narrow_the_result(fhir, patient_with_observations):
    pid, made = patient_with_observations
    found = (fhir.resources("Observation")
             .search(patient=pid, code="http://loinc.org|718-7", date__ge="2024-08-03")
             .sort("date").limit(50).fetch())
    assert [o["effectiveDateTime"][:10] for o in found] == sorted(
        d for d in made.values() if d >= "2024-08-03")
    counted = fhir.resources("Observation").search(patient=pid, _summary="count").fetch_raw()
    assert counted["total"] == N_OBSERVATIONS and not counted.get("entry")
    assert fhir.resources("Observation").search(patient=pid, code="http://loinc.org|0000-0").fetch() == []


def test_fhirpy_follows_next_links_and_sees_each_observation_once(fhir, patient_with_observations):
    pid, made = patient_with_observations
    search = fhir.resources("Observation").search(patient=pid).sort("date").limit(PAGE)

    # page by page, as fhirpy's iterator follows Bundle.link[next]
    raw = search.fetch_raw()
    pages = 0
    seen: list[str] = []
    while True:
        pages += 1
        entries = raw.get("entry", [])
        assert len(entries) <= PAGE
        seen += [e["resource"]["id"] for e in entries]
        nxt = [link["url"] for link in raw["link"] if link["relation"] == "next"]
        if not nxt:
            break
        raw = fhir.execute(nxt[0], method="get")
    assert pages == -(-N_OBSERVATIONS // PAGE)
    assert sorted(seen) == sorted(made) and len(seen) == len(set(seen))
    assert [made[i] for i in seen] == sorted(made.values())

    # and all at once
    every = [o.id for o in search.fetch_all()]
    assert sorted(every) == sorted(made) and len(every) == len(set(every))
    assert [o.id for o in search] == every


def test_fhirpy_is_refused_without_a_token_and_told_unknown_ids_are_not_found(fhir, live_server):
    anonymous = SyncFHIRClient(f"{live_server}/fhir")
    with pytest.raises(AuthorizationError) as exc:
        anonymous.resources("Observation").fetch()
    assert '"OperationOutcome"' in str(exc.value)
    with pytest.raises(ResourceNotFound):
        fhir.reference("Observation", "no-such-observation").to_resource()
