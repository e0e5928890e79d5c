"""The first thing a newcomer does: log in, create a Patient and an Observation, read,
search and page them."""

from conftest import observation, patient


def test_metadata_answers_without_login(client):
    r = client.get("/fhir/metadata")
    assert r.status_code == 200
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"


def test_doctor_creates_reads_searches_and_pages(client, staff):
    doc = staff("doctor")
    r = client.post("/fhir/Patient", json=patient(), headers=doc.headers)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    for day in range(1, 6):
        r = client.post("/fhir/Observation", json=observation(
            pid, effectiveDateTime=f"2024-08-0{day}T10:00:00Z"), headers=doc.headers)
        assert r.status_code == 201, r.text
    r = client.get(f"/fhir/Patient/{pid}", headers=doc.headers)
    assert r.status_code == 200 and r.json()["name"][0]["family"] == "Zhaxi"
    seen = []
    url = f"/fhir/Observation?patient={pid}&_count=2&_sort=date"
    while url:
        r = client.get(url, headers=doc.headers)
        assert r.status_code == 200, r.text
        b = r.json()
        seen += [e["resource"]["effectiveDateTime"][:10] for e in b.get("entry", [])]
        nxt = [link["url"] for link in b["link"] if link["relation"] == "next"]
        url = nxt[0].replace("http://testserver", "") if nxt else None
    assert seen == [f"2024-08-0{d}" for d in range(1, 6)]
