"""Mutual recognition as plain JSON under /api/recognition (issue 7, item 4 "the same check as a
plain JSON API"; docs/cds-hooks.md "JSON API"), through the real HTTP app against the test
database: the check with a staff token and with a hospital system's token, the decisions on a
card, re-ordering, the rates and the catalogue, and their problem+json errors."""

from __future__ import annotations

import orjson
import pytest

from test_cds_hooks import LAB, NOON, _problem, his_world

CHECK = "/api/recognition/check"
MARCH = {"since": "2026-03-01", "until": "2026-03-31"}


@pytest.fixture
def world(platform, staff, his_client):  # noqa: ANN001, ANN201
    return his_world(platform, staff, his_client)


def test_the_check_with_a_staff_token_and_with_a_hospital_systems_token(client, platform, world):
    from recogkit import pinned

    w, login, prac, his = world
    oid = w.result(w.b, value=4.1)
    order = {"patient": w.patient, "encounter": w.encounter,
             "orders": [{"system": "http://loinc.org", "code": "2823-3", "orderRef": "ServiceRequest/k1"},
                        {"system": LAB, "code": "NA"}, {"system": "http://loinc.org", "code": "00000-0"}]}
    with pinned(platform, NOON):
        r = client.post(CHECK, json=order, headers=login.headers)  # no grant yet: a hint
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["grant_needed"] is True
        k, na, unknown = body["lines"]
        assert (k["item"]["id"], k["found"], na["item"]["id"], na["found"], unknown["item"]) == (
            "HR-K", True, "HR-NA", False, None)
        (hint,) = k["hits"]
        assert not hint["disclosed"] and hint["value"] is None and hint["institution_id"] == w.b
        assert oid not in r.text and "4.1" not in orjson.dumps(hint).decode()
        w.grant()
        # a hospital system names the ordering practitioner
        r = client.post(CHECK, json={**order, "practitioner": f"Practitioner/{prac}"}, headers=his.headers)
        assert r.status_code == 200, r.text
        (hit,) = r.json()["lines"][0]["hits"]
        assert (hit["disclosed"], hit["value"], hit["unit"], hit["result_ref"], hit["valid_until"], hit["mark"]) == (
            True, "4.1", "mmol/L", f"Observation/{oid}", "2026-03-12", "HR")
    p = _problem(client.post(CHECK, json=order, headers=his.headers), 400)
    assert p["errors"][0]["pointer"] == ["practitioner"]
    p = _problem(client.post(CHECK, json={**order, "practitioner": "Practitioner/nobody"}, headers=his.headers), 403)
    assert _problem(client.post(CHECK, json={**order, "orders": []}, headers=login.headers), 422)
    assert _problem(client.post(CHECK, json=order), 401)


def test_decisions_on_a_card_reordering_and_the_rates(client, platform, staff, world):
    from recogkit import pinned

    w, login, prac, his = world
    w.grant()
    w.result(w.b, value=4.1)
    w.result(w.b, "4548-4", value=6.0, unit="%")  # HbA1c
    with pinned(platform, NOON):
        def check(code: str) -> dict:
            r = client.post(CHECK, json={"patient": w.patient, "encounter": w.encounter,
                                         "orders": [{"system": "http://loinc.org", "code": code}]},
                            headers=login.headers)
            assert r.status_code == 200, r.text
            return r.json()["lines"][0]

        k, a1c, none = check("2823-3"), check("4548-4"), check("14682-9")
        kc, ac = k["hits"][0]["id"], a1c["hits"][0]["id"]
        opened = client.post(f"/api/recognition/cards/{kc}/open", headers=login.headers)
        assert opened.status_code == 200 and opened.json()["value"] == "4.1"
        r = client.post(f"/api/recognition/cards/{kc}/adopt", json={}, headers=login.headers)
        assert r.status_code == 200, r.text
        assert r.json()["recorded_as"].startswith("Observation/")
        # decline: without a reason, with "other" and no words, with an unknown reason -> 400 naming the field
        for body, where in (({}, "reason"), ({"reason": "other"}, "text"), ({"reason": "bored"}, "reason")):
            p = _problem(client.post(f"/api/recognition/cards/{ac}/decline", json=body, headers=login.headers), 400)
            assert p["errors"][0]["pointer"] == [where], p
        r = client.post(f"/api/recognition/cards/{ac}/decline", json={"reason": "condition-changed"},
                        headers=login.headers)
        assert r.status_code == 200, r.text
        # the adopted line cannot be declined any more
        assert _problem(client.post(f"/api/recognition/cards/{kc}/decline", json={"reason": "emergency"},
                                    headers=login.headers), 409)
        for check_id in (a1c["check_id"], none["check_id"]):
            r = client.post(f"/api/recognition/checks/{check_id}/reordered", json={"orderRef": "ServiceRequest/x"},
                            headers=login.headers)
            assert r.status_code == 200, r.text
        assert _problem(client.post("/api/recognition/checks/nope/reordered", headers=login.headers), 404)
        # a hospital system reports a re-order for the member of staff who placed it
        p = _problem(client.post(f"/api/recognition/checks/{none['check_id']}/reordered", json={},
                                 headers=his.headers), 400)
        assert p["errors"][0]["pointer"] == ["practitioner"]
        r = client.post(f"/api/recognition/checks/{none['check_id']}/reordered",
                        json={"practitioner": f"Practitioner/{prac}"}, headers=his.headers)
        assert r.status_code == 200, r.text
        assert _problem(client.post("/api/recognition/cards/nope/open", headers=login.headers), 404)
        # a hospital system decides for the practitioner the card was shown to; another institution's does not know it
        assert client.post(f"/api/recognition/cards/{kc}/open", headers=his.headers).status_code == 200
        outsider = staff("doctor")
        assert _problem(client.post(f"/api/recognition/cards/{kc}/adopt", headers=outsider.headers), 404)

        qm = staff("quality_manager", institution=w.a)
        r = client.get("/api/recognition/rates", params=MARCH, headers=qm.headers)
        assert r.status_code == 200, r.text
        tot = r.json()["totals"]
        assert (tot["checked"], tot["found"], tot["reminded"], tot["opened"], tot["adopted"], tot["declined"],
                tot["reordered"]) == (3, 2, 2, 1, 1, 1, 2)
        assert [(x["reason"], x["count"]) for x in r.json()["reasons"]] == [("condition-changed", 1)]
        items = client.get("/api/recognition/rates", params={**MARCH, "by": "item"}, headers=qm.headers).json()
        rows = {row["key"]: row for row in items["rows"]}
        assert rows["HR-K"]["adopted"] == 1 and rows["HR-HBA1C"]["declined"] == 1 and len(rows) == 3
        assert _problem(client.get("/api/recognition/rates", params={**MARCH, "by": "colour"}, headers=qm.headers), 422)
        assert _problem(client.get("/api/recognition/rates", params={"since": "2026-03-31", "until": "2026-03-01"},
                                   headers=qm.headers), 400)
        assert _problem(client.get("/api/recognition/rates", params={**MARCH, "institution": w.b},
                                   headers=qm.headers), 403)
        clerk = staff("registration_clerk", institution=w.a)
        assert _problem(client.get("/api/recognition/rates", params=MARCH, headers=clerk.headers), 403)


def test_only_clinical_staff_check(client, platform, staff, world):
    w, *_ = world
    order = {"patient": w.patient, "orders": [{"system": "http://loinc.org", "code": "2823-3"}]}
    for role in ("registration_clerk", "quality_manager", "institution_manager"):
        assert _problem(client.post(CHECK, json=order, headers=staff(role, institution=w.a).headers), 403)
    nurse = staff("nurse", institution=w.a)
    assert client.post(CHECK, json=order, headers=nurse.headers).status_code == 200


def test_the_catalogue_in_force(client, platform, staff):
    r = client.get("/api/recognition/catalogue", headers=staff("doctor").headers)
    assert r.status_code == 200, r.text
    cat = r.json()
    assert cat["version"] == platform.recognition.catalogue.version and cat["provenance"]["sources"]
    assert cat["summary"]["items"] == len(cat["items"]) >= 100
    assert cat["summary"]["by_kind"]["laboratory"] > 0 and cat["summary"]["by_kind"]["examination"] > 0
    k = next(i for i in cat["items"] if i["id"] == "HR-K")
    assert (k["loinc"], k["validity_days"], k["mark"], k["source"]["basis"]) == ("2823-3", 7, "HR", "published")
    assert _problem(client.get("/api/recognition/catalogue"), 401)
