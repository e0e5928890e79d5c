"""The 88 Synthea bundles (about 30,000 resources) through the bulk path: every record
accepted, per-type counts as in the data set's SOURCES.md, and a re-ingest adds nothing.
Third-party data, read from the shared folder (see test_realdata_synthea.py)."""

from __future__ import annotations

import pytest
from test_ingest import counts
from test_realdata_synthea import TOTALS, _bundle_files

from healthlink.ingest import ingest_files

pytestmark = pytest.mark.slow


def test_synthea_bundles_ingest_through_the_bulk_path_and_reingest_adds_nothing(platform, make_institution):
    org = make_institution()
    files = _bundle_files()
    rep = ingest_files(platform.services, files, institution=org, batch_size=1000)
    assert dict(rep.read) == TOTALS
    assert rep.totals()["quarantined"] == 0, dict(rep.reasons)
    # Organization and Practitioner recur across bundles with the same full URL: one
    # resource each, the repeats are identical resends
    for rt, n in TOTALS.items():
        assert rep.accepted[rt] + rep.unchanged[rt] == n
        if rt not in ("Organization", "Practitioner"):
            assert rep.accepted[rt] == n
    assert rep.pending_empi == 88
    after = counts(platform, org)
    assert after["resources"] == rep.totals()["accepted"]

    again = ingest_files(platform.services, files, institution=org, batch_size=1000)
    assert again.totals() == {"read": sum(TOTALS.values()), "accepted": 0, "updated": 0,
                              "unchanged": sum(TOTALS.values()), "quarantined": 0}
    assert counts(platform, org) == after
