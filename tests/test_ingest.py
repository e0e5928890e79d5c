"""Bulk ingest: 10,000 records with 37 invalid, quarantine with reasons, idempotent re-ingest."""

from __future__ import annotations

import orjson
import pytest
from ingest_data import INVALID, write_upload
from sqlalchemy import func, select

from healthlink.db import tables as t
from healthlink.errors import NotFound
from healthlink.ingest import ingest_files


def counts(platform, org: str) -> dict[str, int]:
    """Rows an upload of ``org`` leaves behind (what a re-ingest must not add to)."""
    r, v, q = t.resource.c, t.resource_version.c, t.ingest_quarantine.c
    with platform.db.read() as conn:
        return {
            "resources": conn.scalar(select(func.count()).where(r.institution_id == org)),
            "versions": conn.scalar(select(func.count()).select_from(t.resource_version)
                                    .where(v.institution_id == org)),
            "quarantine": conn.scalar(select(func.count()).where(q.institution_id == org)),
            "pending_empi": conn.scalar(select(func.count()).where(t.empi_pending.c.institution_id == org)),
            "linked": conn.scalar(select(func.count()).where(t.person_link.c.institution_id == org)),
        }


@pytest.fixture(scope="module")
def upload(tmp_path_factory):  # noqa: ANN001, ANN201
    return write_upload(tmp_path_factory.mktemp("ingest") / "upload.ndjson")


def test_upload_of_10000_with_37_invalid_stores_9963_and_quarantines_37(platform, make_institution, upload):
    org = make_institution()
    rep = ingest_files(platform.services, [upload], institution=org, batch_size=1000)
    assert rep.totals() == {"read": 10000, "accepted": 9963, "updated": 0, "unchanged": 0, "quarantined": 37}
    assert dict(rep.reasons) == INVALID
    assert counts(platform, org) == {"resources": 9963, "versions": 9963, "quarantine": 37,
                                     "pending_empi": 0, "linked": 1989}  # linked when the upload ended
    assert rep.pending_empi == rep.linked_empi == 1989
    q = t.ingest_quarantine.c
    with platform.db.read() as conn:
        rows = conn.execute(select(q.line, q.reason, q.element_path, q.message, q.raw)
                            .where(q.institution_id == org)).all()
    assert all(r.line >= 1 and r.raw and r.message for r in rows)
    by_reason = {r.reason: r for r in rows}
    assert by_reason["unit"].element_path == "Observation.valueQuantity.code"
    assert by_reason["future-date"].element_path == "Observation.effectiveDateTime"
    assert by_reason["resident-id"].element_path == "Patient.identifier[0].value"


def test_reingesting_the_same_file_adds_no_resource_version_or_quarantine_row(platform, make_institution,
                                                                               upload):
    org = make_institution()
    ingest_files(platform.services, [upload], institution=org)
    before = counts(platform, org)
    with platform.db.read() as conn:
        audits = conn.scalar(select(func.count()).select_from(t.audit_event))
    rep = ingest_files(platform.services, [upload], institution=org)
    assert rep.totals() == {"read": 10000, "accepted": 0, "updated": 0, "unchanged": 9963, "quarantined": 37}
    assert counts(platform, org) == before
    with platform.db.read() as conn:
        new = conn.execute(select(t.audit_event.c.subtype, t.audit_event.c.content)
                           .where(t.audit_event.c.seq > audits, t.audit_event.c.institution_id == org)).all()
    assert [r.subtype for r in new] == ["import"]  # only the upload's own audit record


def test_record_depending_on_a_quarantined_patient_is_quarantined_with_that_reason(platform, make_institution,
                                                                                   tmp_path):
    org = make_institution()
    bad = {"resourceType": "Patient", "id": "bad", "gender": "male", "birthDate": "2999-01-01"}
    obs = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
           "subject": {"reference": "Patient/bad"}}
    report = {"resourceType": "DiagnosticReport", "id": "r1", "status": "final", "code": {"text": "x"},
              "result": [{"reference": "Observation/o1"}]}
    # NDJSON comes one type per file: the dependants arrive before the Patient
    (tmp_path / "Observation.ndjson").write_bytes(orjson.dumps(obs) + b"\n")
    (tmp_path / "DiagnosticReport.ndjson").write_bytes(orjson.dumps(report) + b"\n")
    (tmp_path / "Patient.ndjson").write_bytes(orjson.dumps(bad) + b"\n")
    rep = ingest_files(platform.services, [tmp_path / "DiagnosticReport.ndjson", tmp_path / "Observation.ndjson",
                                           tmp_path / "Patient.ndjson"], institution=org)
    assert rep.totals()["quarantined"] == 3 and rep.totals()["accepted"] == 0
    q = t.ingest_quarantine.c
    with platform.db.read() as conn:
        rows = {r.source_id: r for r in conn.execute(select(q.source_id, q.reason, q.message, q.source_file)
                                                      .where(q.institution_id == org))}
    assert rows["bad"].reason == "future-date"
    assert rows["o1"].reason == "depends-on-quarantined" and "Patient/bad" in rows["o1"].message
    assert rows["r1"].reason == "depends-on-quarantined" and "Observation/o1" in rows["r1"].message
    assert rows["o1"].source_file == "Observation.ndjson"


def test_resend_with_changed_content_updates_the_same_resource(platform, make_institution, tmp_path):
    org = make_institution()
    p = {"resourceType": "Patient", "id": "x1", "gender": "male",
         "identifier": [{"system": "urn:example:mrn", "value": "A1"}]}
    f = tmp_path / "p.ndjson"
    f.write_bytes(orjson.dumps(p) + b"\n")
    ingest_files(platform.services, [f], institution=org)
    # same business identifier, another source id: the same resource, a new version
    f.write_bytes(orjson.dumps(dict(p, id="x2", gender="female")) + b"\n")
    rep = ingest_files(platform.services, [f], institution=org)
    assert rep.totals()["updated"] == 1 and rep.totals()["accepted"] == 0
    c = counts(platform, org)
    assert (c["resources"], c["versions"]) == (1, 2)


def test_upload_for_an_unknown_institution_is_refused(platform, tmp_path):
    f = tmp_path / "p.ndjson"
    f.write_text("{}\n")
    with pytest.raises(NotFound):
        ingest_files(platform.services, [f], institution="no-such-org")


def test_batch_is_not_written_when_its_audit_record_fails(platform, make_institution, tmp_path):
    from healthlink.errors import Unavailable

    org = make_institution()
    f = tmp_path / "p.ndjson"
    f.write_bytes(orjson.dumps({"resourceType": "Patient", "id": "a", "gender": "male"}) + b"\n")
    platform.audit.fail_next = RuntimeError("audit store unavailable")
    with pytest.raises(Unavailable):
        ingest_files(platform.services, [f], institution=org)
    assert counts(platform, org)["resources"] == 0
    u = t.ingest_upload.c
    with platform.db.read() as conn:
        assert conn.scalar(select(u.status).where(u.institution_id == org)) == "failed"
