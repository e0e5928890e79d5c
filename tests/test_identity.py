"""The master patient index at run time, through the HTTP app on the real database: every
Patient linked to one Person in the same unit of work, `person=` search across
institutions, `Patient/$match`, bulk uploads linked in one batch when they end."""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from healthlink.db import tables as t
from healthlink.demogen.ids import check_char
from healthlink.fhir.identifiers import RESIDENT_ID_SYSTEM
from healthlink.ingest import ingest_files

pytestmark = pytest.mark.usefixtures("platform")
FHIR = "application/fhir+json"


def rid(seed: str) -> str:
    """A valid resident ID unique to ``seed``: a birth date between 1950 and 2004 and a
    sequence number drawn from it (the region-wide index is shared by the whole session)."""
    n = uuid.uuid5(uuid.NAMESPACE_OID, seed).int
    born = date(1950, 1, 1) + timedelta(days=n % 20000)
    body = f"632701{born:%Y%m%d}{(n >> 20) % 1000:03d}"
    return body + check_char(body)


def person_patient(name: str, *, born: str | None = None, ident: str | None = None, phone: str | None = None,
                   sex: str = "female") -> dict:
    """A Patient; born on the date its resident ID gives unless ``born`` says otherwise."""
    if born is None:
        born = f"{ident[6:10]}-{ident[10:12]}-{ident[12:14]}" if ident else "1990-01-01"
    p: dict = {"resourceType": "Patient", "name": [{"text": name}], "gender": sex, "birthDate": born}
    if ident:
        p["identifier"] = [{"system": RESIDENT_ID_SYSTEM, "value": ident}]
    if phone:
        p["telecom"] = [{"system": "phone", "value": phone}]
    return p


def post(client, who, body: dict) -> str:  # noqa: ANN001
    r = client.post(f"/fhir/{body['resourceType']}", json=body, headers={**who.headers, "content-type": FHIR})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def person_of(platform, patient_id: str) -> str | None:  # noqa: ANN001
    with platform.db.read() as conn:
        return platform.identity.person_of(conn, patient_id)


def unique_name() -> str:
    """A Tibetan-style name no other test writes (the region-wide index is shared)."""
    syll = "扎西次仁卓玛多吉尼玛拉毛旦增央金格桑德吉索南巴桑才让"
    n = uuid.uuid4().int
    return "".join(syll[(n >> (5 * i)) % len(syll)] for i in range(6))


def test_same_valid_id_and_birth_date_link_deterministically_across_institutions(client, platform, his_client):
    a, b = his_client(), his_client()
    ident = rid(str(uuid.uuid4()))
    pa = post(client, a, person_patient("次仁卓玛", ident=ident))
    pb = post(client, b, person_patient("才仁卓嘛", ident=ident))  # another transliteration, same ID
    assert person_of(platform, pa) == person_of(platform, pb) is not None
    with platform.db.read() as conn:
        methods = dict(conn.execute(select(t.person_link.c.patient_id, t.person_link.c.method)
                                    .where(t.person_link.c.patient_id.in_([pa, pb]))).all())
    assert methods == {pa: "new", pb: "deterministic"}


def test_one_mistyped_id_digit_still_links_when_the_rest_agrees(client, platform, his_client):
    a, b = his_client(), his_client()
    name, phone = unique_name(), f"1389976{uuid.uuid4().int % 10000:04d}"
    ident = rid(name)
    typo = ident[:15] + str((int(ident[15]) + 1) % 10) + ident[16:]  # one substituted digit: check fails
    born = person_patient(name, ident=ident)["birthDate"]
    pa = post(client, a, person_patient(name, ident=ident, phone=phone))
    pb = post(client, b, person_patient(name, ident=typo, phone=phone, born=born))
    with platform.db.read() as conn:
        methods = dict(conn.execute(select(t.person_link.c.patient_id, t.person_link.c.method)
                                    .where(t.person_link.c.patient_id.in_([pa, pb]))).all())
    assert methods == {pa: "new", pb: "probabilistic"}  # not the deterministic rule: the check digit fails
    assert person_of(platform, pa) == person_of(platform, pb)


def test_a_namesake_born_the_same_year_with_another_id_and_phone_stays_apart(client, platform, his_client):
    a, b = his_client(), his_client()
    name = unique_name()
    pa = post(client, a, person_patient(name, born="1990-03-04", ident=rid(name + "1"), phone="13899760001"))
    pb = post(client, b, person_patient(name, born="1990-08-21", ident=rid(name + "2"), phone="15809760002"))
    assert person_of(platform, pa) != person_of(platform, pb)


def test_person_resource_lists_its_patients_and_person_search_spans_institutions(client, platform, his_client,
                                                                                  staff):
    a, b = his_client(), his_client()
    ident = rid(str(uuid.uuid4()))
    pa = post(client, a, person_patient("扎西多吉", ident=ident, sex="male"))
    pb = post(client, b, person_patient("扎喜多杰", ident=ident, sex="male"))
    oa = post(client, a, {"resourceType": "Observation", "status": "final", "code": {"text": "Hb"},
                          "subject": {"reference": f"Patient/{pa}"}})
    ob = post(client, b, {"resourceType": "Observation", "status": "final", "code": {"text": "Hb"},
                          "subject": {"reference": f"Patient/{pb}"}})
    person = person_of(platform, pa)

    reviewer = staff("empi_reviewer")  # region-wide, demographics only
    r = client.get(f"/fhir/Person/{person}", headers=reviewer.headers)
    assert r.status_code == 200, r.text
    links = {lk["target"]["reference"]: lk["assurance"] for lk in r.json()["link"]}
    assert links == {f"Patient/{pa}": "level4", f"Patient/{pb}": "level4"}
    r = client.get("/fhir/Patient", params={"person": f"Person/{person}"}, headers=reviewer.headers)
    assert {e["resource"]["id"] for e in r.json()["entry"]} == {pa, pb}

    system = platform.system_repository("tests")  # region-wide clinical reader: both institutions
    page = system.search("Observation", [("person", f"Person/{person}")])
    assert {s.res_id for s in page.matches} == {oa, ob}
    # an institution's own reader sees its part only: access is checked inside the repository
    r = client.get("/fhir/Observation", params={"person": person}, headers=a.headers)
    assert {e["resource"]["id"] for e in r.json()["entry"]} == {oa}
    # bad values are refused with the element named
    r = client.get("/fhir/Observation", params={"person:exact": person}, headers=a.headers)
    assert r.status_code == 400 and "person" in r.text
    meta = client.get("/fhir/metadata").json()
    obs = next(x for x in meta["rest"][0]["resource"] if x["type"] == "Observation")
    assert any(p["name"] == "person" for p in obs["searchParam"])


def test_a_doctor_cannot_read_persons_and_the_link_is_audited(client, platform, his_client, staff, auditor):
    a = his_client()
    pa = post(client, a, person_patient(unique_name(), ident=rid(str(uuid.uuid4()))))
    person = person_of(platform, pa)
    doctor = staff("doctor", institution=a.institution)
    assert client.get(f"/fhir/Person/{person}", headers=doctor.headers).status_code == 404
    r = client.get("/fhir/AuditEvent", params={"entity": f"Person/{person}"}, headers=auditor.headers)
    assert r.status_code == 200
    events = [e["resource"] for e in r.json().get("entry", [])]
    creates = [e for e in events if e["subtype"][0]["code"] == "create"]
    assert creates and any(f"Patient/{pa}" in json.dumps(e) for e in creates)


def test_deleting_a_patient_takes_it_out_of_its_person(client, platform, his_client, staff):
    a, b = his_client(), his_client()
    ident = rid(str(uuid.uuid4()))
    pa = post(client, a, person_patient("德吉央金", ident=ident))
    pb = post(client, b, person_patient("德吉央金", ident=ident))
    person = person_of(platform, pa)
    assert client.delete(f"/fhir/Patient/{pb}", headers=b.headers).status_code in (200, 204)
    assert person_of(platform, pb) is None
    r = client.get(f"/fhir/Person/{person}", headers=staff("empi_reviewer").headers).json()
    assert [lk["target"]["reference"] for lk in r["link"]] == [f"Patient/{pa}"]
    assert r["meta"]["versionId"] == "3"  # founded, linked, unlinked: the history keeps each step


def test_patient_match_scores_and_grades_candidates(client, platform, his_client, staff):
    a = his_client()
    name, phone = unique_name(), f"1399736{uuid.uuid4().int % 10000:04d}"
    ident = rid(name)
    pa = post(client, a, person_patient(name, ident=ident, phone=phone))
    reviewer = staff("empi_reviewer")
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": person_patient(name, ident=ident, phone=phone)},
        {"name": "count", "valueInteger": 5}]}
    r = client.post("/fhir/Patient/$match", json=params, headers={**reviewer.headers, "content-type": FHIR})
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["type"] == "searchset"
    top = bundle["entry"][0]
    assert top["resource"]["id"] == pa and top["search"]["score"] == 1.0
    assert top["search"]["extension"] == [{"url": "http://hl7.org/fhir/StructureDefinition/match-grade",
                                           "valueCode": "certain"}]
    # a weaker description: the same name, another birth date, nothing else -> not certain
    weak = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": person_patient(name, born="1949-06-01")},
        {"name": "onlyCertainMatches", "valueBoolean": True}]}
    r = client.post("/fhir/Patient/$match", json=weak, headers={**reviewer.headers, "content-type": FHIR})
    assert pa not in {e["resource"]["id"] for e in r.json().get("entry", [])}
    # another institution's doctor is not shown a's patient
    other = staff("doctor")
    r = client.post("/fhir/Patient/$match", json=params, headers={**other.headers, "content-type": FHIR})
    assert r.status_code == 200 and r.json().get("entry", []) == []
    # bad input: no Patient
    r = client.post("/fhir/Patient/$match", json={"resourceType": "Parameters", "parameter": []},
                    headers={**reviewer.headers, "content-type": FHIR})
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"


def test_bulk_upload_links_its_patients_in_one_batch_when_it_ends(client, platform, make_institution, tmp_path,
                                                                   staff):
    org_a, org_b = make_institution(), make_institution()
    ident = rid(str(uuid.uuid4()))
    rows = [person_patient("索南拉毛", ident=ident) | {"id": "p1"},
            person_patient(unique_name(), ident=rid(str(uuid.uuid4()))) | {"id": "p2"}]
    f = tmp_path / "Patient.ndjson"
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    rep_a = ingest_files(platform.services, [f], institution=org_a)
    assert rep_a.pending_empi == 2 and rep_a.linked_empi == 2
    f.write_text(json.dumps(person_patient("索南拉姆", ident=ident) | {"id": "x9"}, ensure_ascii=False) + "\n")
    rep_b = ingest_files(platform.services, [f], institution=org_b)
    assert rep_b.linked_empi == 1
    with platform.db.read() as conn:
        assert conn.scalar(select(func.count()).where(t.empi_pending.c.institution_id.in_([org_a, org_b]))) == 0
        pl = t.person_link.c
        links = dict(conn.execute(select(pl.institution_id, pl.person_id)
                                  .where(pl.institution_id.in_([org_a, org_b]), pl.method != "new")).all())
        persons = conn.execute(select(pl.person_id, pl.institution_id)
                               .where(pl.institution_id.in_([org_a, org_b]))).all()
    assert list(links) == [org_b]  # the second institution's record joined the first's Person
    assert len({p for p, _ in persons}) == 2
    # the batch left one audit record naming the links
    with platform.db.read() as conn:
        n = conn.scalar(select(func.count()).select_from(t.audit_event).where(
            t.audit_event.c.subtype == "empi-link", t.audit_event.c.institution_id == org_b))
    assert n == 1
    # the Person the second upload's record joined has a new version naming both records (the
    # batch writes the Persons of earlier uploads together), and its search index follows it
    person = links[org_b]
    ids = {i: pid for i, pid in conn_ids(platform, [org_a, org_b])}
    reviewer = staff("empi_reviewer")
    r = client.get(f"/fhir/Person/{person}", headers=reviewer.headers)
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["versionId"] == "2"
    assert sorted(lk["target"]["reference"] for lk in r.json()["link"]) == sorted(
        [f"Patient/{ids[(org_a, 'p1')]}", f"Patient/{ids[(org_b, 'x9')]}"])
    h = client.get(f"/fhir/Person/{person}/_history", headers=reviewer.headers).json()
    assert [len(e["resource"]["link"]) for e in h["entry"]] == [2, 1]
    for pid in (ids[(org_a, "p1")], ids[(org_b, "x9")]):
        r = client.get("/fhir/Person", params={"link": f"Patient/{pid}"}, headers=reviewer.headers)
        assert [e["resource"]["id"] for e in r.json()["entry"]] == [person]


def conn_ids(platform, institutions: list[str]) -> list[tuple[tuple[str, str], str]]:  # noqa: ANN001
    """((institution, source id), stored Patient id) of the institutions' uploaded records."""
    sk = t.ingest_source_key.c
    with platform.db.read() as conn:
        rows = conn.execute(select(sk.institution_id, sk.key, sk.res_id).where(
            sk.institution_id.in_(institutions), sk.res_type == "Patient", sk.key.like("id:%"))).all()
    return [((r.institution_id, r.key[3:]), r.res_id) for r in rows]


def test_records_of_one_person_in_one_upload_share_a_person(platform, make_institution, tmp_path):
    """The batch step links an upload's Patients as a set: a record joins the Person an earlier
    record of the same upload founded, and a namesake with another ID stays apart."""
    org = make_institution()
    name, ident = unique_name(), rid(str(uuid.uuid4()))
    rows = [person_patient(name, ident=ident) | {"id": "a1"},
            person_patient(name, ident=ident, phone="13899769999") | {"id": "a2"},
            person_patient(name, ident=rid(str(uuid.uuid4())), born="1951-02-03") | {"id": "a3"}]
    f = tmp_path / "Patient.ndjson"
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    rep = ingest_files(platform.services, [f], institution=org)
    assert rep.linked_empi == 3
    with platform.db.read() as conn:
        pl = t.person_link.c
        got = conn.execute(select(pl.person_id, pl.method).where(pl.institution_id == org)
                           .order_by(pl.updated, pl.patient_id)).all()
        persons = {p for p, _ in got}
        assert len(persons) == 2 and sorted(m for _, m in got) == ["deterministic", "new", "new"]
        for person in persons:  # each Person resource lists exactly its Patients
            body = json.loads(conn.execute(select(t.resource.c.content).where(
                t.resource.c.res_type == "Person", t.resource.c.res_id == person)).scalar_one())
            linked = {lk["target"]["reference"] for lk in body["link"]}
            mine = {r.patient_id for r in conn.execute(select(pl.patient_id).where(pl.person_id == person))}
            assert linked == {f"Patient/{m}" for m in mine}


def test_persons_written_together_are_version_guarded_and_searchable(client, platform, staff):
    """``store.update_many`` (the EMPI's batch write of Persons): every resource gets its next
    version and fresh index rows; if one changed meanwhile, the writer is refused and, its
    transaction rolled back, nothing of the batch is kept."""
    from healthlink.errors import PreconditionFailed
    from healthlink.fhir import store

    pids = [str(uuid.uuid4()) for _ in range(3)]
    with platform.db.write() as conn:
        made = store.create_many(conn, [({"resourceType": "Person", "active": True,
                                          "link": [{"target": {"reference": f"Patient/{p}"}}]}, None)
                                        for p in pids], institution_id=None)
    with platform.db.write() as conn:
        new = store.update_many(conn, [(s, {"resourceType": "Person", "active": True, "link": [
            {"target": {"reference": f"Patient/{p}"}}, {"target": {"reference": f"Patient/{p}-b"}}]})
            for s, p in zip(made, pids)])
    assert [s.version_id for s in new] == [2, 2, 2]
    reviewer = staff("empi_reviewer")
    for s, p in zip(made, pids):
        r = client.get(f"/fhir/Person/{s.res_id}", headers=reviewer.headers).json()
        assert r["meta"]["versionId"] == "2" and len(r["link"]) == 2
        for ref in (f"Patient/{p}", f"Patient/{p}-b"):
            found = client.get("/fhir/Person", params={"link": ref}, headers=reviewer.headers).json()
            assert [e["resource"]["id"] for e in found["entry"]] == [s.res_id]
    # made[0] is stale now (version 1): the batch is refused and rolled back
    with pytest.raises(PreconditionFailed, match=f"Person/{made[0].res_id} changed"):
        with platform.db.write() as conn:
            store.update_many(conn, [(new[1], {"resourceType": "Person", "active": False}),
                                     (made[0], {"resourceType": "Person", "active": False})])
    for s in made[:2]:
        r = client.get(f"/fhir/Person/{s.res_id}", headers=reviewer.headers).json()
        assert r["meta"]["versionId"] == "2" and r["active"] is True
