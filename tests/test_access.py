"""Access control through the real HTTP app: institutions are walled off from each other,
every staff role gets exactly what the role table (docs/roles.md) gives it, and tokens
are checked before anything else."""

from __future__ import annotations

import time

import jwt
import pytest
from conftest import PASSWORD, observation, patient

from healthlink.access.roles import STAFF_ROLES
from healthlink.accounts import add_client, add_user


def _post(client, path, body, who):  # noqa: ANN001, ANN202
    r = client.post(path, json=body, headers=who.headers)
    assert r.status_code == 201, r.text
    return r.json()


def _ids(bundle: dict) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])}


def medication_request(pid: str) -> dict:
    return {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
            "medicationCodeableConcept": {"text": "Amoxicillin 500 mg capsule"},
            "subject": {"reference": f"Patient/{pid}"}}


def encounter(pid: str) -> dict:
    return {"resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{pid}"}}


def person() -> dict:
    return {"resourceType": "Person", "name": [{"family": "Zhaxi", "given": ["Tsering"]}]}


def organization() -> dict:
    return {"resourceType": "Organization", "name": "Yushu county clinic"}


# --------------------------------------------------------------------- two institutions
@pytest.fixture
def two_sites(client, staff):  # noqa: ANN001, ANN201
    """Doctor A and doctor B of different institutions; B has a patient with an updated
    Observation (two versions) and an Observation that points at A's patient as focus."""
    a, b = staff("doctor"), staff("doctor")
    pa = _post(client, "/fhir/Patient", patient(name=[{"family": "Aden"}]), a)["id"]
    oa = _post(client, "/fhir/Observation", observation(pa), a)["id"]
    pb = _post(client, "/fhir/Patient", patient(name=[{"family": "Bailey"}]), b)["id"]
    ob = _post(client, "/fhir/Observation", observation(pb), b)
    r = client.put(f"/fhir/Observation/{ob['id']}", json=dict(ob, status="amended"), headers=b.headers)
    assert r.status_code == 200, r.text
    ob_focus = _post(client, "/fhir/Observation",
                     observation(pb, focus=[{"reference": f"Patient/{pa}"}]), b)["id"]
    return {"a": a, "b": b, "pa": pa, "oa": oa, "pb": pb, "ob": ob["id"], "ob_focus": ob_focus}


@pytest.mark.parametrize("path", [
    "/fhir/Patient/{pb}",
    "/fhir/Observation/{ob}",
    "/fhir/Observation/{ob}/_history/1",
    "/fhir/Observation/{ob}/_history/2",
    "/fhir/Observation/{ob}/_history",
    "/fhir/Patient/{pb}/_history",
    "/fhir/Patient/{pb}/$everything",
])
def test_other_institutions_ids_answer_404_as_if_unknown(client, two_sites, path):
    s = two_sites
    r = client.get(path.format(**s), headers=s["a"].headers)
    assert r.status_code == 404, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    unknown = client.get(path.format(pb="no-such-id", ob="no-such-id"), headers=s["a"].headers)
    assert unknown.status_code == 404
    # the same id is served to its own institution
    assert client.get(path.format(**s), headers=s["b"].headers).status_code == 200


@pytest.mark.parametrize("query", [
    "Patient?_id={pb}",
    "Patient?family=Bailey",
    "Observation?_id={ob}",
    "Observation?patient={pb}",
    "Observation?subject=Patient/{pb}",
    "Observation?subject:Patient.family=Bailey",
    "Observation?patient.family=Bailey",
    "Observation?code=http://loinc.org|718-7",
])
def test_searches_never_return_other_institutions_rows(client, two_sites, query):
    s = two_sites
    r = client.get("/fhir/" + query.format(**s), headers=s["a"].headers)
    assert r.status_code == 200, r.text
    assert not {f"Patient/{s['pb']}", f"Observation/{s['ob']}",
                f"Observation/{s['ob_focus']}"} & _ids(r.json())
    # B's own doctor finds B's rows with the same query
    assert _ids(client.get("/fhir/" + query.format(**s), headers=s["b"].headers).json())


def test_type_history_shows_only_own_institutions_versions(client, two_sites):
    s = two_sites
    r = client.get("/fhir/Observation/_history?_count=1000", headers=s["a"].headers)
    assert r.status_code == 200
    urls = {e["fullUrl"].rsplit("/", 2)[-2] + "/" + e["fullUrl"].rsplit("/", 1)[-1]
            for e in r.json().get("entry", [])}
    assert f"Observation/{s['oa']}" in urls
    assert f"Observation/{s['ob']}" not in urls


def test_include_and_revinclude_never_reach_into_another_institution(client, two_sites):
    s = two_sites
    a = s["a"]
    # A cannot even place an Observation in B's patient's compartment ...
    r = client.post("/fhir/Observation", json=observation(s["pb"]), headers=a.headers)
    assert r.status_code == 422, r.text
    assert "Observation.subject" in r.json()["issue"][0]["expression"]
    # ... nor move its own Observation there
    own = client.get(f"/fhir/Observation/{s['oa']}", headers=a.headers).json()
    r = client.put(f"/fhir/Observation/{s['oa']}",
                   json=dict(own, subject={"reference": f"Patient/{s['pb']}"}), headers=a.headers)
    assert r.status_code == 422, r.text
    # a reference outside the compartment (focus) may point at B's patient, but _include
    # does not follow it across the wall
    oid = _post(client, "/fhir/Observation",
                observation(s["pa"], focus=[{"reference": f"Patient/{s['pb']}"}]), a)["id"]
    for inc in ("Observation:focus", "Observation:*", "Observation:subject"):
        r = client.get(f"/fhir/Observation?_id={oid}&_include={inc}", headers=a.headers)
        assert r.status_code == 200, r.text
        got = _ids(r.json())
        assert f"Observation/{oid}" in got and f"Patient/{s['pb']}" not in got
    # B's Observation that names A's patient as focus is not revincluded for A
    r = client.get(f"/fhir/Patient?_id={s['pa']}&_revinclude=Observation:focus"
                   f"&_revinclude=Observation:subject", headers=a.headers)
    got = _ids(r.json())
    assert f"Observation/{s['oa']}" in got and f"Observation/{s['ob_focus']}" not in got


def test_everything_of_own_patient_leaves_out_other_institutions_resources(client, two_sites):
    s = two_sites
    r = client.get(f"/fhir/Patient/{s['pa']}/$everything", headers=s["a"].headers)
    assert r.status_code == 200
    got = _ids(r.json())
    assert {f"Patient/{s['pa']}", f"Observation/{s['oa']}"} <= got
    assert not any(x.endswith((s["pb"], s["ob"], s["ob_focus"])) for x in got)


def test_other_institutions_data_cannot_be_updated_or_deleted(client, two_sites):
    s = two_sites
    a, b = s["a"], s["b"]
    ob = client.get(f"/fhir/Observation/{s['ob']}", headers=b.headers).json()
    r = client.put(f"/fhir/Observation/{s['ob']}", json=dict(ob, status="cancelled"), headers=a.headers)
    assert r.status_code == 404, r.text
    r = client.put(f"/fhir/Observation/{s['ob']}", json=dict(ob, status="cancelled"),
                   headers={**a.headers, "If-Match": 'W/"2"'})
    assert r.status_code == 404, r.text
    pb = client.get(f"/fhir/Patient/{s['pb']}", headers=b.headers).json()
    assert client.put(f"/fhir/Patient/{s['pb']}", json=dict(pb, gender="female"),
                      headers=a.headers).status_code == 404
    # deleting what A cannot see answers exactly like deleting what does not exist
    assert client.delete(f"/fhir/Observation/{s['ob']}", headers=a.headers).status_code == 204
    assert client.delete("/fhir/Observation/never-existed", headers=a.headers).status_code == 204
    assert client.delete(f"/fhir/Patient/{s['pb']}", headers=a.headers).status_code == 204
    # B's data is untouched
    r = client.get(f"/fhir/Observation/{s['ob']}", headers=b.headers)
    assert r.status_code == 200 and r.json()["status"] == "amended" and r.json()["meta"]["versionId"] == "2"
    r = client.get(f"/fhir/Patient/{s['pb']}", headers=b.headers)
    assert r.status_code == 200 and r.json()["gender"] == "male"


def test_bundles_cannot_read_or_write_another_institutions_data(client, two_sites):
    s = two_sites
    a, b = s["a"], s["b"]
    # transaction: one forbidden entry fails the whole Bundle with 404
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{s['pb']}"}},
        {"fullUrl": "urn:uuid:1", "resource": observation(s["pa"]),
         "request": {"method": "POST", "url": "Observation"}}]}
    r = client.post("/fhir", json=tx, headers=a.headers)
    assert r.status_code == 404, r.text
    # batch: the entry answers 404, its search entry finds none of B's rows
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Observation/{s['ob']}"}},
        {"request": {"method": "GET", "url": f"Observation?patient={s['pb']}"}},
        {"resource": observation(s["pb"]), "request": {"method": "POST", "url": "Observation"}},
        {"request": {"method": "DELETE", "url": f"Observation/{s['ob']}"}}]}
    r = client.post("/fhir", json=batch, headers=a.headers)
    assert r.status_code == 200, r.text
    e = r.json()["entry"]
    assert e[0]["response"]["status"].startswith("404")
    assert e[1]["response"]["status"].startswith("200") and not e[1]["resource"].get("entry")
    assert e[2]["response"]["status"].startswith("422")
    assert client.get(f"/fhir/Observation/{s['ob']}", headers=b.headers).status_code == 200


def test_another_institutions_deleted_resource_is_unknown_not_gone(client, two_sites):
    s = two_sites
    a, b = s["a"], s["b"]
    assert client.delete(f"/fhir/Observation/{s['ob_focus']}", headers=b.headers).status_code == 204
    assert client.get(f"/fhir/Observation/{s['ob_focus']}", headers=b.headers).status_code == 410
    assert client.get(f"/fhir/Observation/{s['ob_focus']}", headers=a.headers).status_code == 404
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Observation/{s['ob_focus']}"}}]}
    r = client.post("/fhir", json=batch, headers=a.headers)
    assert r.json()["entry"][0]["response"]["status"].startswith("404")
    r = client.post("/fhir", json=batch, headers=b.headers)
    assert r.json()["entry"][0]["response"]["status"].startswith("410")


# --------------------------------------------------------------------- the role matrix
TYPES = ("Patient", "Observation", "MedicationRequest", "Encounter", "Organization", "AuditEvent",
         "Person")
PATIENT_DATA = ("Patient", "Observation", "MedicationRequest", "Encounter", "Person")

# What each staff role may do (c r s u d), written out by hand from the role table in
# docs/roles.md so that a change to roles.py that alters a permission fails here.
EXPECTED: dict[str, dict[str, str]] = {
    "doctor": {**dict.fromkeys(PATIENT_DATA, "crsud"), "Organization": "rs"},
    "nurse": {"Patient": "rs", "Observation": "crsu", "MedicationRequest": "rs",
              "Encounter": "crsu", "Person": "rs", "Organization": "rs"},
    "pharmacist": {"Patient": "rs", "Observation": "rs", "MedicationRequest": "crsu",
                   "Encounter": "rs", "Person": "rs", "Organization": "rs"},
    "registration_clerk": {"Patient": "crsu", "Encounter": "crsu", "Organization": "rs"},
    "empi_reviewer": {"Patient": "rs", "Person": "rsu", "Organization": "rs"},
    # no FHIR access to patient data: the pre-review service serves it (tests/test_prereview_api.py)
    "prereview_pharmacist": {"Organization": "rs"},
    "quality_manager": {**dict.fromkeys(PATIENT_DATA, "rs"), "Organization": "rs"},
    "institution_manager": {"Organization": "rs"},
    "health_commission_leader": {"Organization": "rs"},
    "system_admin": {"Organization": "crsud"},
    "security_admin": {"Organization": "rs"},
    "audit_admin": {"Organization": "rs", "AuditEvent": "rs"},
}
OK = {"c": 201, "r": 200, "s": 200, "u": 200, "d": 204}


def test_role_matrix_covers_every_staff_role():
    assert set(EXPECTED) == set(STAFF_ROLES)


def _expected(role: str, res_type: str, op: str) -> int:
    if res_type == "AuditEvent" and op in "cud":
        return 405  # AuditEvent is read-only for everyone
    return OK[op] if op in EXPECTED[role].get(res_type, "") else 403


@pytest.mark.parametrize("role", STAFF_ROLES)
def test_role_matrix(client, staff, auditor, platform, role):
    user = staff(role)
    doc = staff("doctor", institution=user.institution)  # makes the data the role works on
    pid = _post(client, "/fhir/Patient", patient(), doc)["id"]
    bodies = {"Patient": patient, "Observation": lambda: observation(pid),
              "MedicationRequest": lambda: medication_request(pid), "Encounter": lambda: encounter(pid),
              "Person": person, "Organization": organization}
    targets = {rt: _post(client, f"/fhir/{rt}", make(), doc) for rt, make in bodies.items()
               if rt != "Organization"}
    sysrepo = platform.system_repository("tests")
    org = sysrepo.create(organization(), res_type="Organization").stored.json()
    targets["Organization"] = org
    event = client.get("/fhir/AuditEvent?_count=1", headers=auditor.headers).json()["entry"][0]["resource"]
    targets["AuditEvent"] = event
    bodies["AuditEvent"] = lambda: {k: v for k, v in event.items() if k not in ("id", "meta")}

    got: dict[tuple[str, str], int] = {}
    h = user.headers
    for rt in TYPES:
        tgt = targets[rt]
        url = f"/fhir/{rt}/{tgt['id']}"
        got[rt, "c"] = client.post(f"/fhir/{rt}", json=bodies[rt](), headers=h).status_code
        got[rt, "r"] = client.get(url, headers=h).status_code
        got[rt, "s"] = client.get(f"/fhir/{rt}?_count=5", headers=h).status_code
        got[rt, "u"] = client.put(url, json=tgt, headers=h).status_code
        got[rt, "d"] = client.delete(url, headers=h).status_code
    want = {(rt, op): _expected(role, rt, op) for rt in TYPES for op in "crsud"}
    wrong = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not wrong, f"{role}: (type, op): (got, expected) {wrong}"


# The leaders' dashboard (issue 10; docs/dashboard.md, docs/roles.md "dashboard"): which staff roles
# see it, and how wide; written out by hand so that a change to roles.py that widens it fails here.
DASHBOARD: dict[str, str | None] = {
    "health_commission_leader": "region", "institution_manager": "institution",
    **{r: None for r in ("doctor", "nurse", "pharmacist", "registration_clerk", "empi_reviewer",
                         "prereview_pharmacist", "quality_manager", "system_admin", "security_admin",
                         "audit_admin")},
}


def test_dashboard_matrix_covers_every_staff_role():
    assert set(DASHBOARD) == set(STAFF_ROLES)


@pytest.mark.parametrize("role", STAFF_ROLES)
def test_dashboard_matrix(client, staff, role):
    """Each role sees the dashboard as the matrix says, at every drill level, and the roles that see
    it still cannot read a single patient record of the institution whose counts they see."""
    user = staff(role)
    doc = staff("doctor", institution=user.institution)
    pid = _post(client, "/fhir/Patient", patient(), doc)["id"]
    want = DASHBOARD[role]
    # a recount now, so the new record is in the counts: for the roles that see the dashboard only
    assert client.post("/api/dashboard/refresh", headers=user.headers).status_code == (403 if want is None else 200)
    for params in ({}, {"institution": user.institution}, {"institution": user.institution,
                                                          "department": "no-such-department"}):
        r = client.get("/api/dashboard", params=params, headers=user.headers)
        if want is None:
            assert r.status_code == 403, (role, params, r.text)
            continue
        if "department" in params:  # an unknown department of a visible institution: named, not shown
            assert r.status_code == 400 and "department" in r.text, (role, r.text)
            continue
        assert r.status_code == 200, (role, params, r.text)
        body = r.json()
        assert body["view"] == want
        assert pid not in r.text  # counts only: the patient the doctor just wrote is not named
        assert body["tables"]["records"]["totals"]["patients"] >= (1 if params else 0)
    if want is not None:
        for path in (f"/fhir/Patient/{pid}", f"/fhir/Patient?_id={pid}", f"/fhir/Patient/{pid}/$everything"):
            assert client.get(path, headers=user.headers).status_code == 403, (role, path)
    csv = client.get("/api/dashboard/tables/records.csv", headers=user.headers)
    assert csv.status_code == (403 if want is None else 200), role


def test_roles_without_clinical_access_are_refused_and_the_refusal_is_audited(client, staff, auditor):
    doc = staff("doctor")
    pid = _post(client, "/fhir/Patient", patient(), doc)["id"]
    for role in ("institution_manager", "health_commission_leader", "system_admin",
                 "security_admin", "audit_admin"):
        u = staff(role, institution=doc.institution)
        for path in (f"/fhir/Patient/{pid}", "/fhir/Observation?patient=" + pid,
                     f"/fhir/Patient/{pid}/$everything"):
            assert client.get(path, headers=u.headers).status_code == 403, (role, path)
        me = client.get("/api/me", headers=u.headers).json()
        r = client.get(f"/fhir/AuditEvent?agent={me['practitioner']}&outcome=4", headers=auditor.headers)
        assert len(r.json()["entry"]) >= 3, role


def test_registration_clerk_writes_patients_but_cannot_read_observations(client, staff):
    clerk = staff("registration_clerk")
    doc = staff("doctor", institution=clerk.institution)
    pid = _post(client, "/fhir/Patient", patient(), clerk)["id"]
    oid = _post(client, "/fhir/Observation", observation(pid), doc)["id"]
    assert client.get(f"/fhir/Observation/{oid}", headers=clerk.headers).status_code == 403
    assert client.get(f"/fhir/Observation?patient={pid}", headers=clerk.headers).status_code == 403
    # _revinclude quietly leaves out what the role may not read
    r = client.get(f"/fhir/Patient?_id={pid}&_revinclude=Observation:subject", headers=clerk.headers)
    assert r.status_code == 200 and _ids(r.json()) == {f"Patient/{pid}"}
    # $everything returns only the types the clerk may read
    r = client.get(f"/fhir/Patient/{pid}/$everything", headers=clerk.headers)
    assert r.status_code == 200 and f"Observation/{oid}" not in _ids(r.json())


def test_empi_reviewer_reads_demographics_across_the_region_only(client, staff):
    doc = staff("doctor")
    pid = _post(client, "/fhir/Patient", patient(), doc)["id"]
    oid = _post(client, "/fhir/Observation", observation(pid), doc)["id"]
    empi = staff("empi_reviewer")  # of another institution
    assert client.get(f"/fhir/Patient/{pid}", headers=empi.headers).status_code == 200
    assert client.get(f"/fhir/Observation/{oid}", headers=empi.headers).status_code == 403


# --------------------------------------------------------------------- tokens
def test_anonymous_requests_are_refused_with_www_authenticate(client):
    for method, path in (("GET", "/fhir/Patient"), ("GET", "/fhir/Patient/x"), ("POST", "/fhir/Patient"),
                         ("GET", "/fhir/AuditEvent"), ("GET", "/api/me"), ("POST", "/fhir")):
        r = client.request(method, path, json=patient() if method == "POST" else None)
        assert r.status_code == 401, (method, path, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("auth", ["Bearer garbage", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer a.b.c"])
def test_malformed_credentials_are_refused(client, auth):
    r = client.get("/fhir/Patient", headers={"Authorization": auth})
    assert r.status_code == 401
    assert r.json()["resourceType"] == "OperationOutcome"


def _token(platform, **claims) -> str:  # noqa: ANN001
    now = int(time.time())
    body = {"iss": "healthlink", "iat": now - 3600, "exp": now - 60, "sub": "doctor-x", "knd": "user",
            "roles": ["doctor"], "scope": "user/*.cruds", "ins": "org-x"} | claims
    return jwt.encode(body, platform.settings.signing_key(), algorithm="HS256")


def test_expired_and_forged_tokens_are_refused(client, platform):
    expired = _token(platform)
    r = client.get("/fhir/Patient", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and "expired" in r.json()["issue"][0]["diagnostics"]
    forged = jwt.encode(jwt.decode(_token(platform, exp=int(time.time()) + 600),
                                   options={"verify_signature": False}), "another-key-" + "y" * 32,
                        algorithm="HS256")
    assert client.get("/fhir/Patient", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert client.get("/fhir/Patient", headers={"Cookie": f"hl_token={expired}"}).status_code == 401


def test_narrower_login_scope_limits_what_the_role_allows(client, staff, platform, make_institution):
    doc = staff("doctor")
    pid = _post(client, "/fhir/Patient", patient(), doc)["id"]
    oid = _post(client, "/fhir/Observation", observation(pid), doc)["id"]
    r = client.post("/api/auth/login", json={"username": doc.username, "password": PASSWORD,
                                             "scope": "user/Patient.rs"})
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "user/Patient.rs"
    h = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert client.get(f"/fhir/Patient/{pid}", headers=h).status_code == 200
    assert client.get(f"/fhir/Patient?_id={pid}", headers=h).status_code == 200
    assert client.post("/fhir/Patient", json=patient(), headers=h).status_code == 403
    assert client.get(f"/fhir/Observation/{oid}", headers=h).status_code == 403
    assert client.get("/fhir/Observation", headers=h).status_code == 403
    # _include / $everything silently leave out what the scopes do not cover
    r = client.get(f"/fhir/Patient?_id={pid}&_revinclude=Observation:subject", headers=h)
    assert _ids(r.json()) == {f"Patient/{pid}"}
    r = client.get(f"/fhir/Patient/{pid}/$everything", headers=h)
    assert _ids(r.json()) == {f"Patient/{pid}"}
    # a scope can never widen the role: a nurse asking for MedicationRequest writes gets none
    nurse_name = f"nurse-{pid[:8]}"
    add_user(platform.db, username=nurse_name, password=PASSWORD, display_name="N", roles=["nurse"],
             institution_id=doc.institution)
    r = client.post("/api/auth/login", json={"username": nurse_name, "password": PASSWORD,
                                             "scope": "user/MedicationRequest.cruds"})
    h = {"Authorization": f"Bearer {r.json()['access_token']}"}
    mr = medication_request(pid)
    assert client.post("/fhir/MedicationRequest", json=mr, headers=h).status_code == 403


def test_staff_login_grants_only_user_level_scopes(client, staff):
    doc = staff("doctor")
    for scope in ("patient/Observation.rs", "system/*.cruds"):
        r = client.post("/api/auth/login", json={"username": doc.username, "password": PASSWORD,
                                                 "scope": scope})
        assert r.status_code == 400, (scope, r.text)


def test_client_credentials_with_restricted_scopes(client, his_client, platform, make_institution):
    his = his_client(scopes="system/Patient.cruds system/Organization.rs")
    r = client.post("/fhir/Patient", json=patient(), headers=his.headers)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert client.post("/fhir/Observation", json=observation(pid), headers=his.headers).status_code == 403
    assert client.get("/fhir/Observation", headers=his.headers).status_code == 403
    assert client.get("/fhir/AuditEvent", headers=his.headers).status_code == 403
    # a narrower scope asked for at the token endpoint narrows further
    org = make_institution()
    secret = add_client(platform.db, client_id=f"his-ro-{pid[:8]}", display_name="ro", institution_id=org,
                        scopes="system/*.cruds")
    r = client.post("/api/auth/token", data={"grant_type": "client_credentials", "client_id": f"his-ro-{pid[:8]}",
                                             "client_secret": secret, "scope": "system/Patient.rs"})
    assert r.status_code == 200 and r.json()["scope"] == "system/Patient.rs"
    h = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert client.get("/fhir/Patient", headers=h).status_code == 200
    assert client.post("/fhir/Patient", json=patient(), headers=h).status_code == 403
    assert client.get("/fhir/Observation", headers=h).status_code == 403
    # a scope wider than the client's registration is not granted
    secret = add_client(platform.db, client_id=f"his-narrow-{pid[:8]}", display_name="narrow",
                        institution_id=org, scopes="system/Patient.rs")
    r = client.post("/api/auth/token", data={"grant_type": "client_credentials",
                                             "client_id": f"his-narrow-{pid[:8]}", "client_secret": secret,
                                             "scope": "system/Patient.cruds"})
    assert r.status_code in (400, 401) and "access_token" not in r.text


# --------------------------------------------------------------------- docs
def test_roles_doc_is_the_rendered_role_table():
    from pathlib import Path

    from healthlink.access.roles import render_markdown

    doc = Path(__file__).resolve().parents[1] / "docs" / "roles.md"
    assert doc.read_text(encoding="utf-8") == render_markdown(), (
        "docs/roles.md is stale; regenerate it: .venv/bin/python -c \"from healthlink.access.roles "
        "import render_markdown; print(render_markdown(), end='')\" > docs/roles.md")
