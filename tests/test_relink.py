"""`healthlink link`: the whole region re-linked in one batch with Splink, on a database of its
own filled by `healthlink demo` (whose Patients were linked one at a time as they arrived).
Person ids stay stable, a reviewer's keep-apart survives, and the result agrees with the
generator's ground truth."""

from __future__ import annotations

from itertools import combinations

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from healthlink.access import Actor, RequestContext
from healthlink.access.scopes import parse_scopes
from healthlink.cli.main import app
from healthlink.db import tables as t
from healthlink.demogen import Options
from healthlink.demogen.stream import patient_records
from healthlink.identity import Review
from healthlink.runtime import Platform
from healthlink.settings import load_settings

N = 300


def links(plat: Platform) -> dict[str, str]:
    with plat.db.read() as conn:
        return dict(conn.execute(select(t.person_link.c.patient_id, t.person_link.c.person_id)).all())


def pairs(mapping: dict[str, str]) -> set[tuple[str, str]]:
    groups: dict[str, list[str]] = {}
    for pid, person in mapping.items():
        groups.setdefault(person, []).append(pid)
    return {pair for ids in groups.values() for pair in combinations(sorted(ids), 2)}


@pytest.fixture
def region(fresh_db: str, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    monkeypatch.setenv("HEALTHLINK_DEMO_PATIENTS", str(N))
    r = CliRunner().invoke(app, ["demo"])
    assert r.exit_code == 0, r.output
    plat = Platform.start(load_settings())
    yield plat
    plat.close()


def test_relink_keeps_person_ids_respects_keep_apart_and_agrees_with_ground_truth(region: Platform):
    before = links(region)
    assert len(before) == N  # every generated Patient linked as it arrived

    r = CliRunner().invoke(app, ["link"])
    assert r.exit_code == 0, r.output
    assert f"{N:,} Patient records" in " ".join(r.output.split())
    first = links(region)
    kept = {p for p in set(first.values()) & set(before.values())}
    # stable ids: a Person that still exists holds mostly the Patients it held before
    for person in kept:
        mine = {pid for pid, p in first.items() if p == person}
        assert sum(before[pid] == person for pid in mine) * 2 >= len(mine)

    truth = {rec.patient_id: rec.person.key for rec in patient_records(Options(patients=N, seed=1, clinical=False))}
    got, expected = pairs(first), pairs(truth)
    tp = len(got & expected)
    assert tp / len(got) >= 0.99 and tp / len(expected) >= 0.9, (tp, len(got), len(expected))

    r = CliRunner().invoke(app, ["link"])  # nothing changed: nothing moves, every id the same
    assert r.exit_code == 0 and "0 Patients moved" in " ".join(r.output.split()), r.output
    assert links(region) == first

    a, b = sorted(next(pair for pair in sorted(got)))
    ctx = RequestContext(actor=Actor("user", "reviewer", "EMPI reviewer", None, frozenset({"empi_reviewer"}),
                                     parse_scopes("user/*.cruds")), address="127.0.0.1", purpose_of_use="HOPERAT")
    Review(region.identity).keep_apart(ctx, a, b)
    assert links(region)[a] != links(region)[b]
    r = CliRunner().invoke(app, ["link"])
    assert r.exit_code == 0, r.output
    after = links(region)
    assert after[a] != after[b]  # the reviewer's decision survives the batch
    with region.db.read() as conn:
        person = conn.execute(select(t.resource.c.content).where(t.resource.c.res_type == "Person",
                                                                 t.resource.c.res_id == after[a])).scalar_one()
    assert f"Patient/{a}" in person and f"Patient/{b}" not in person
