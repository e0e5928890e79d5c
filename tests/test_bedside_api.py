"""Bedside verification through the HTTP API (issue 8, item 4, "Must show"): the nurse scans the
wristband, then an item; each blocked scan names the pair that failed, with what was expected
and what was scanned; a passed one records exactly one FHIR record.  Run on SQLite and
PostgreSQL.  The GS1 parsing itself is tested in tests/test_medsafety_barcodes.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from bedsidekit import GTIN, blood_unit_label, build, later, pack_scan, trace_code
from grantkit import actor, ctx
from sqlalchemy import func, select

from healthlink.db import tables as t
from healthlink.medsafety import barcodes as B
from healthlink.runtime import Platform


@pytest.fixture
def ward(platform: Platform):  # noqa: ANN201
    return build(platform)


@pytest.fixture
def nurse(staff, ward):  # noqa: ANN001, ANN201
    return staff("nurse", institution=ward.inst)


def administer(client, nurse, ward, scan: str, n: int = 0, **extra):  # noqa: ANN001, ANN003, ANN201
    return client.post("/api/bedside/administer", headers=nurse.headers,
                       json={"wristband": ward.wristband(n), "scan": scan, **extra})


def count(platform: Platform, res_type: str, patient: str) -> int:
    with platform.db.read() as conn:
        return conn.execute(select(func.count()).select_from(t.resource).where(
            t.resource.c.res_type == res_type, t.resource.c.patient_id == patient,
            t.resource.c.deleted.is_(False))).scalar_one()


def events(platform: Platform, inst: str) -> list:
    e = t.bedside_event
    with platform.db.read() as conn:
        return conn.execute(select(e).where(e.c.institution_id == inst).order_by(e.c.at)).all()


def test_wristband_scan_shows_the_patient_the_bed_and_the_due_orders(client, nurse, ward) -> None:
    rx = ward.order("LD-0009", 2.5)
    r = client.post("/api/bedside/wristband", headers=nurse.headers, json={"scan": ward.wristband()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["patient"]["name"] == ward.names[0]
    assert body["patient"]["record_number"].startswith("MR")
    assert body["encounter"]["bed"] == "内科 12床"
    due = [d for d in body["due"] if d["ref"] == f"MedicationRequest/{rx}"]
    assert due and due[0]["dose"] == "2.5 mg" and due[0]["name_zh"].startswith("华法林")


def test_a_pack_scanned_as_the_wristband_and_a_wristband_of_a_finished_stay_are_refused(
        client, nurse, ward, platform) -> None:
    r = client.post("/api/bedside/wristband", headers=nurse.headers,
                    json={"scan": pack_scan(GTIN["warfarin"], expiry=later(100))})
    assert r.status_code == 400 and "wristband" in r.json()["detail"]
    r = client.post("/api/bedside/wristband", headers=nurse.headers, json={"scan": "HLW1.nope"})
    assert r.status_code == 400
    other = B.wristband_payload(ward.patients[0], ward.encounters[1])  # the other patient's stay
    r = client.post("/api/bedside/wristband", headers=nurse.headers, json={"scan": other})
    assert r.status_code == 422 and "not this patient's" in r.json()["detail"]


def test_only_a_nurse_of_the_patients_institution_verifies(client, staff, ward) -> None:
    doctor = staff("doctor", institution=ward.inst)
    r = client.post("/api/bedside/wristband", headers=doctor.headers, json={"scan": ward.wristband()})
    assert r.status_code == 403
    elsewhere = staff("nurse")
    r = client.post("/api/bedside/wristband", headers=elsewhere.headers, json={"scan": ward.wristband()})
    assert r.status_code == 404


def test_expired_pack_is_blocked_naming_expiry(client, nurse, ward, platform) -> None:
    ward.order("LD-0009", 2.5)
    r = administer(client, nurse, ward, pack_scan(GTIN["warfarin"], expiry=later(-2), serial="EXP1"))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["outcome"] == "blocked" and body["failed"] == ["expiry"]
    assert "有效期不符" in body["message_zh"] and "expiry does not match" in body["message_en"]
    assert later(-2).isoformat() in body["message_en"]
    assert count(platform, "MedicationAdministration", ward.patients[0]) == 0
    assert events(platform, ward.inst)[-1].failed == "expiry"


def test_right_drug_for_the_wrong_patient_is_blocked_naming_the_patient(client, nurse, ward, platform) -> None:
    rx = ward.order("LD-0009", 2.5, n=1)  # the other patient's order, with its dispensing label
    r = administer(client, nurse, ward, B.dispense_label_payload(rx), n=0)
    assert r.status_code == 422, r.text
    body = r.json()
    assert "name" in body["failed"]
    name = next(p for p in body["pairs"] if p["pair"] == "name")
    assert ward.names[1] in name["expected_zh"] and ward.names[0] in name["scanned_zh"]
    assert body["message_en"].startswith("Blocked: patient does not match")
    # the pack alone finds no order of this drug for this patient: blocked naming the drug
    r = administer(client, nurse, ward, pack_scan(GTIN["warfarin"], expiry=later(200), serial="WP1"), n=0)
    assert r.status_code == 422 and r.json()["failed"] == ["drug"]
    assert count(platform, "MedicationAdministration", ward.patients[0]) == 0


def test_dose_off_by_a_factor_of_ten_is_blocked_naming_the_dose(client, nurse, ward) -> None:
    ward.order("LD-0009", 25)  # 25 mg ordered; one 2.5 mg tablet scanned
    r = administer(client, nurse, ward, pack_scan(GTIN["warfarin"], expiry=later(200), serial="D1"))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["failed"] == ["dose"]
    dose = next(p for p in body["pairs"] if p["pair"] == "dose")
    assert dose["expected_en"] == "25 mg" and dose["scanned_en"].endswith("= 2.5 mg")
    assert "剂量不符" in body["message_zh"]


def test_wrong_strength_of_the_right_drug_is_blocked_naming_concentration(client, nurse, ward) -> None:
    ward.order("LD-0001", 250)  # amoxicillin 0.25 g capsules; the 0.5 g capsule is scanned
    r = administer(client, nurse, ward, pack_scan(GTIN["amoxicillin-0.5"], expiry=later(200), serial="C1"))
    assert r.status_code == 422
    assert r.json()["failed"] == ["concentration", "dose"]


def test_dose_outside_the_time_window_is_blocked_naming_time(client, nurse, ward) -> None:
    ward.order("LD-0009", 2.5, at=datetime.now(UTC) - timedelta(hours=3))
    r = administer(client, nurse, ward, pack_scan(GTIN["warfarin"], expiry=later(200), serial="T1"))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["failed"] == ["time"]
    assert "±30 min" in next(p for p in body["pairs"] if p["pair"] == "time")["expected_en"]


def test_wrong_route_is_blocked_naming_route(client, nurse, ward) -> None:
    ward.order("LD-0009", 2.5, route="47625008")  # intravenous warfarin tablets
    r = administer(client, nurse, ward, pack_scan(GTIN["warfarin"], expiry=later(200), serial="R1"))
    assert r.status_code == 422 and r.json()["failed"] == ["route"]


def test_order_returned_by_the_pharmacist_is_blocked(client, nurse, platform, staff) -> None:
    from recogkit import institution

    township = institution(platform, "township", None, "乡镇卫生院 T")
    platform.prereview.directory.forget()
    ward = build(platform, inst=township)
    nurse_t = staff("nurse", institution=township)
    rx = ward.order("LD-0009", 2.5)
    rx_view = platform.prereview.submit(ctx(ward.doctor), ward.patients[0], [{"reference": f"MedicationRequest/{rx}"}])
    if rx_view["status"] != "pending":  # nothing to queue automatically: a pharmacist still reviews it
        pytest.fail(f"expected the prescription in the pharmacist queue, got {rx_view['status']}")
    pharmacist = actor("prereview_pharmacist", township)
    platform.prereview.decide(ctx(pharmacist), rx_view["id"], "return", reason="dose")
    assert platform.prereview.outcome(f"MedicationRequest/{rx}") == "returned"
    r = administer(client, nurse_t, ward, pack_scan(GTIN["warfarin"], expiry=later(200), serial="PR1"))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["failed"] == ["prereview"]
    assert "returned to the doctor by the pharmacist" in body["message_en"]
    assert "药师已退回医生" in body["message_zh"]


def test_right_pack_records_one_administration_and_a_rescan_records_none(client, nurse, ward, platform) -> None:
    rx = ward.order("LD-0009", 2.5)
    scan = pack_scan(GTIN["warfarin"], expiry=later(300), batch="LOT7", serial="SER42")
    r = administer(client, nurse, ward, scan)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["outcome"] == "recorded" and body["failed"] == []
    ref = body["record"]
    assert ref.startswith("MedicationAdministration/")
    ma = client.get(f"/fhir/{ref}", headers=nurse.headers).json()
    assert ma["request"]["reference"] == f"MedicationRequest/{rx}"
    assert ma["subject"]["reference"] == f"Patient/{ward.patients[0]}"
    med = ma["contained"][0]
    assert med["batch"] == {"lotNumber": "LOT7", "expirationDate": later(300).isoformat()}
    assert med["identifier"][0]["value"] == f"{GTIN['warfarin']}/SER42"
    assert ma["performer"][0]["actor"]["reference"].startswith("Practitioner/")
    # the same pack again: no second administration for the same dose
    again = administer(client, nurse, ward, scan)
    assert again.status_code == 200 and again.json()["outcome"] == "already-recorded"
    assert again.json()["record"] == ref
    # another pack for the same dose: blocked, 409
    other = administer(client, nurse, ward, pack_scan(GTIN["warfarin"], expiry=later(300), serial="SER43"))
    assert other.status_code == 409 and other.json()["failed"] == ["given"]
    assert count(platform, "MedicationAdministration", ward.patients[0]) == 1
    outcomes = [e.outcome for e in events(platform, ward.inst) if e.flow == "medication"]
    assert outcomes == ["recorded", "already-recorded", "blocked"]


def test_traceability_code_and_dispensing_label_record_an_administration(client, nurse, ward, platform) -> None:
    ward.order("LD-0001", 250)
    r = administer(client, nurse, ward, trace_code("8100003", 123456789))
    assert r.status_code == 200, r.text
    rx = ward.order("LD-0007", 1, "g", route="47625008")
    r = administer(client, nurse, ward, B.dispense_label_payload(rx))
    assert r.status_code == 200, r.text
    assert count(platform, "MedicationAdministration", ward.patients[0]) == 2


def test_verify_only_checks_and_records_nothing(client, nurse, ward, platform) -> None:
    ward.order("LD-0009", 2.5)
    r = client.post("/api/bedside/verify", headers=nurse.headers,
                    json={"wristband": ward.wristband(), "scan": pack_scan(GTIN["warfarin"], expiry=later(9))})
    assert r.status_code == 200 and r.json()["outcome"] == "passed"
    assert count(platform, "MedicationAdministration", ward.patients[0]) == 0


def test_transfusion_wrong_unit_blocked_right_unit_recorded(client, nurse, ward, staff, platform) -> None:
    doctor = staff("doctor", institution=ward.inst)
    right = blood_unit_label("G123426000001", expiry=later(10))
    wrong = blood_unit_label("G123426000002", group="62", expiry=later(10))
    r = client.post("/api/bedside/crossmatches", headers=doctor.headers,
                    json={"patient": ward.patients[0], "unit": right})
    assert r.status_code == 201, r.text
    r = client.post("/api/bedside/crossmatches", headers=doctor.headers,
                    json={"patient": ward.patients[1], "unit": wrong})
    assert r.status_code == 201, r.text
    r = administer(client, nurse, ward, blood_unit_label("G123426000009", expiry=later(10)))
    assert r.status_code == 422 and r.json()["failed"] == ["unit"]
    r = administer(client, nurse, ward, wrong)  # the other patient's unit
    assert r.status_code == 422 and r.json()["failed"] == ["name"]
    r = administer(client, nurse, ward, right)
    assert r.status_code == 200, r.text
    assert r.json()["record"].startswith("Procedure/")
    again = administer(client, nurse, ward, right)
    assert again.json()["outcome"] == "already-recorded"
    assert count(platform, "Procedure", ward.patients[0]) == 1


def test_specimen_wrong_tube_blocked_right_tube_records_the_specimen(client, nurse, ward, platform) -> None:
    mine, theirs = ward.lab(0), ward.lab(1)
    r = administer(client, nurse, ward, B.tube_label_payload(theirs))
    assert r.status_code == 422 and r.json()["failed"] == ["name"]
    r = administer(client, nurse, ward, B.tube_label_payload(mine), order=theirs)
    assert r.status_code == 422 and "tube" in r.json()["failed"]
    r = administer(client, nurse, ward, B.tube_label_payload(mine))
    assert r.status_code == 200, r.text
    spec = client.get(f"/fhir/{r.json()['record']}", headers=nurse.headers).json()
    assert spec["request"][0]["reference"] == f"ServiceRequest/{mine}"
    assert count(platform, "Specimen", ward.patients[0]) == 1


def test_every_scan_is_an_event_and_the_statistics_count_them(client, nurse, ward, platform) -> None:
    ward.order("LD-0009", 2.5)
    client.post("/api/bedside/wristband", headers=nurse.headers, json={"scan": ward.wristband()})
    administer(client, nurse, ward, pack_scan(GTIN["warfarin"], expiry=later(-1), serial="E9"))
    administer(client, nurse, ward, pack_scan(GTIN["warfarin"], expiry=later(90), serial="E10"))
    r = client.get("/api/bedside/stats", headers=nurse.headers)
    assert r.status_code == 200
    s = r.json()
    assert s["scans"]["wristband"]["passed"] == 1
    assert s["scans"]["medication"] == {"blocked": 1, "recorded": 1}
    assert s["blocked_by_pair"] == {"expiry": 1}


def test_bad_requests_are_400_never_500(client, nurse, ward) -> None:
    r = client.post("/api/bedside/administer", headers=nurse.headers, json={"wristband": ward.wristband(),
                                                                           "scan": "hello"})
    assert r.status_code == 400 and "unrecognised scan" in r.json()["detail"]
    r = client.post("/api/bedside/administer", headers=nurse.headers, json={"wristband": ward.wristband(),
                                                                           "scan": ward.wristband()})
    assert r.status_code == 400
    r = client.post("/api/bedside/administer", headers=nurse.headers, json={"wristband": ward.wristband()})
    assert r.status_code == 422
