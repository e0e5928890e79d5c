"""The demo region generator's invariants (docs/demo-region.md)."""

from __future__ import annotations

import hashlib
import math
import tracemalloc
from collections import Counter
from pathlib import Path

import orjson
import pytest

from healthlink.demogen import ErrorRates, Options, generate, load_region, write_region
from healthlink.demogen import errormodel as em
from healthlink.demogen.clinical import OUTPATIENT_PER_RECORD, RX_PER_RECORD
from healthlink.demogen.ids import check_char, is_valid
from healthlink.demogen.people import RESIDENT_ID
from healthlink.demogen.region import institutions
from healthlink.demogen.stream import patient_records, read_ground_truth
from healthlink.fhir.validation import check_resource

RECORDS = 3_000


def _rid(patient: dict) -> str | None:
    return next((i["value"] for i in patient.get("identifier", []) if i["system"] == RESIDENT_ID), None)


def _within(observed: int, n: int, rate: float) -> bool:
    """``observed`` out of ``n`` is within 4 standard deviations of ``rate``."""
    sd = math.sqrt(n * rate * (1 - rate))
    return abs(observed - n * rate) <= 4 * sd + 1


@pytest.fixture(scope="module")
def records():  # noqa: ANN201
    return list(patient_records(Options(patients=RECORDS, seed=7, clinical=False)))


def test_check_character_follows_gb_11643() -> None:
    assert check_char("11010519491231002") == "X"  # the standard's own example
    assert is_valid("11010519491231002X")
    assert not is_valid("11010519491231003X")


def test_generated_ids_agree_with_the_platforms_own_check(records) -> None:  # noqa: ANN001
    from healthlink.fhir.identifiers import resident_id_valid

    for rec in records[:500]:
        rid = _rid(rec.resource)
        if rid:
            assert resident_id_valid(rid) == is_valid(rid)


def test_no_two_persons_share_a_resident_id() -> None:
    """Real IDs are unique; drawn at random, persons born the same day in the same county
    would collide (500 numbers per sex), and the EMPI's deterministic rule would merge them."""
    from healthlink.demogen.people import make_person
    from healthlink.demogen.stream import IssuedIds, unique_id

    people: dict[str, str] = {}
    for rec in patient_records(Options(patients=60_000, seed=3, clinical=False)):
        people.setdefault(rec.person.key, rec.person.resident_id)
    assert len(set(people.values())) == len(people)
    drawn = [make_person(3, i).resident_id for i in range(len(people))]
    assert len(set(drawn)) < len(drawn)  # the draw alone collides at this size: the test bites
    issued = IssuedIds()
    a, b = make_person(3, 0), make_person(3, 0)
    assert unique_id(a, issued) == a
    moved = unique_id(b, issued)
    assert moved.resident_id != a.resident_id and is_valid(moved.resident_id)
    assert int(moved.resident_id[16]) % 2 == int(a.resident_id[16]) % 2  # same sex digit parity


def test_region_has_the_reference_prefectures_institutions() -> None:
    tiers = Counter(i.tier for i in institutions())
    assert tiers == {"prefecture": 3, "county": 11, "township": 50}
    by_id = {i.id: i for i in institutions()}
    for inst in institutions():  # township -> county hospital -> prefecture hospital
        if inst.tier == "township":
            assert by_id[inst.parent].tier == "county"
        if inst.tier == "county":
            assert by_id[inst.parent].tier == "prefecture"
    assert len({i.consortium for i in institutions() if i.consortium}) == 6
    assert {"yushu-peoples", "chenduo-county", "zhenqin-township"} <= set(by_id)  # the small seeder's ids


def test_ids_are_valid_exactly_where_the_error_model_left_them_alone(records) -> None:  # noqa: ANN001
    for rec in records:
        rid = _rid(rec.resource)
        if em.ID_MISSING in rec.errors:
            assert rid is None
        elif em.ID_TYPO in rec.errors or em.ID_TRANSPOSITION in rec.errors:
            assert rid and not is_valid(rid) and rid != rec.person.resident_id
        else:
            assert rid == rec.person.resident_id and is_valid(rid)
            assert rid.startswith("6327")


def test_about_three_records_per_person(records) -> None:  # noqa: ANN001
    persons = Counter(r.person.key for r in records)
    assert 2.85 <= len(records) / len(persons) <= 3.15
    for key in persons:  # each record of a person is at another institution
        insts = [r.institution for r in records if r.person.key == key]
        assert len(insts) == len(set(insts))
        if len(persons) > 200:
            break


def test_error_rates_are_the_promised_defaults(records) -> None:  # noqa: ANN001
    rates, n = ErrorRates(), len(records)
    seen = Counter(e for r in records for e in r.errors)
    for name in (em.ID_MISSING, em.ID_TYPO, em.PHONE_CHANGED, em.BIRTH_DAY_WRONG, em.ADDRESS_MOVED):
        assert _within(seen[name], n, getattr(rates, name)), (name, seen[name])
    assert _within(seen[em.ID_TRANSPOSITION], n, rates.id_transposition)
    eligible = sum(1 for r in records if r.person.name.has_variants())
    assert _within(seen[em.NAME_VARIANT], eligible, rates.name_variant)
    for r in records:
        written = r.resource["name"][0]["text"]
        assert (written != r.person.name.spell()[0] + r.person.name.spell()[1]) == (em.NAME_VARIANT in r.errors)
        assert (r.resource["birthDate"] != r.person.birth.isoformat()) == (em.BIRTH_DAY_WRONG in r.errors)
        assert (r.resource["telecom"][0]["value"] != r.person.phone) == (em.PHONE_CHANGED in r.errors)


def test_error_rates_are_options() -> None:
    clean = list(patient_records(Options(patients=300, seed=7, errors=ErrorRates.none(), clinical=False)))
    assert all(not r.errors and is_valid(_rid(r.resource)) for r in clean)
    with pytest.raises(ValueError, match="within 0..1"):
        ErrorRates(id_typo=1.5)


def test_names_are_mostly_tibetan_with_namesakes_and_transliterations(records) -> None:  # noqa: ANN001
    persons = {r.person.key: r.person for r in records}.values()
    tibetan = sum(p.name.tibetan for p in persons)
    assert tibetan / len(persons) > 0.88
    names = Counter("".join(p.name.spell()) for p in persons)
    assert sum(c for c in names.values() if c > 1) > len(persons) / 3  # many namesakes
    assert all(not p.name.family for p in persons if p.name.tibetan)
    written = {r.resource["name"][0]["text"] for r in records}
    assert {"次仁", "才仁"} & {w[:2] for w in written} == {"次仁", "才仁"}
    pinyin = records[0].resource["name"][1]["text"]
    assert pinyin.isascii() and pinyin.strip()


def test_ground_truth_file_matches_the_patient_files(tmp_path: Path) -> None:
    stats = write_region(Options(patients=400, seed=3), tmp_path)
    truth = read_ground_truth(tmp_path / "ground-truth.csv")
    assert len(truth) == stats.patients == stats.by_type["Patient"] == 400
    patients = {}
    for f in tmp_path.glob("*/Patient.ndjson"):
        for line in f.read_bytes().splitlines():
            p = orjson.loads(line)
            assert p["managingOrganization"]["reference"] == f"Organization/{f.parent.name}"
            patients[p["id"]] = p
    assert set(patients) == {row["patient_id"] for row in truth}
    for row in truth:
        rid = _rid(patients[row["patient_id"]])
        errors = set(filter(None, row["errors"].split(";")))
        assert (rid is None) == (em.ID_MISSING in errors)
        if rid:
            assert is_valid(rid) != bool(errors & {em.ID_TYPO, em.ID_TRANSPOSITION})


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_region(tmp_path: Path) -> None:
    a, b, c = (write_region(Options(patients=250, seed=s), tmp_path / n) and _digest(tmp_path / n)
               for s, n in ((11, "a"), (11, "b"), (12, "c")))
    assert a == b
    assert a["ground-truth.csv"] != c["ground-truth.csv"]
    assert a["yushu-peoples/Patient.ndjson"] != c["yushu-peoples/Patient.ndjson"]


def test_every_generated_resource_validates_and_proportions_follow_yushu() -> None:
    counts, n = Counter(), 1_500
    for _, res in generate(Options(patients=n, seed=5)):
        assert check_resource(res) == [], res
        rt = res["resourceType"]
        counts[rt] += 1
        if rt == "Encounter":
            counts[res["class"]["code"]] += 1
    assert counts["Patient"] == n
    assert abs(counts["AMB"] / n - OUTPATIENT_PER_RECORD) < 0.1
    assert abs(counts["MedicationRequest"] / n - RX_PER_RECORD) < 0.6
    for rt in ("Observation", "DiagnosticReport", "Condition", "AllergyIntolerance", "Practitioner"):
        assert counts[rt] > 0


def test_interacting_drug_pairs_occur() -> None:
    pairs = {frozenset(p) for p in (("11289", "1191"), ("36567", "21212"), ("32968", "7646"), ("3407", "703"))}
    by_patient: dict[str, set[str]] = {}
    for _, res in generate(Options(patients=1_000, seed=5)):
        if res["resourceType"] == "MedicationRequest":
            pid = res["subject"]["reference"]
            by_patient.setdefault(pid, set()).add(res["medicationCodeableConcept"]["coding"][0]["code"])
    assert any(pair <= drugs for drugs in by_patient.values() for pair in pairs)


def test_memory_stays_flat_as_the_region_grows() -> None:
    def peak(n: int) -> int:
        tracemalloc.start()
        for _ in generate(Options(patients=n, seed=2, clinical=False)):
            pass
        size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return size

    small, large = peak(1_000), peak(10_000)
    assert large < small * 1.5 + 256 * 1024


def test_loaded_region_is_owned_by_each_institution(fresh_db: str, tmp_path: Path) -> None:
    """On a database of its own: demo regions of other seeds (the browser tests load one into the
    session's database) hold other records under the same ids."""
    from fastapi.testclient import TestClient

    from healthlink.accounts import add_user
    from healthlink.api import create_app
    from healthlink.db.migrate import upgrade
    from healthlink.fhir import store
    from healthlink.runtime import Platform
    from healthlink.settings import Settings

    settings = Settings(database_url=fresh_db, data_dir=tmp_path / "data", secret_key="test-signing-key-" + "x" * 32,
                        log_level="WARNING", base_url="http://testserver", audit_batch_wait_ms=1.0)
    platform = Platform.start(settings)
    try:
        upgrade(platform.db)
        opts = Options(patients=120, seed=99)
        written = load_region(platform, opts)
        keys = [(res["resourceType"], res["id"]) for _, res in generate(opts)]
        assert written == len(set(keys))  # an empty database: every generated resource written
        with platform.db.read() as conn:
            stored = store.read_current_many(conn, keys)
        assert len(stored) == len(set(keys))  # every generated resource is stored, none lost
        mine = {r.patient_id for r in patient_records(opts) if r.institution == "yushu-peoples"}
        others = {r.patient_id for r in patient_records(opts)} - mine
        add_user(platform.db, username="doctor.own", password="test-password-1", display_name="doctor",
                 roles=["doctor"], institution_id="yushu-peoples", practitioner_id="prac-own")
        with TestClient(create_app(settings, platform=platform)) as client:
            r = client.post("/api/auth/login", json={"username": "doctor.own", "password": "test-password-1"})
            assert r.status_code == 200, r.text
            headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
            r = client.get("/fhir/Patient", params={"_count": 500}, headers=headers)
            assert r.status_code == 200, r.text
            seen = {e["resource"]["id"] for e in r.json().get("entry", [])}
            assert mine and mine <= seen and not (others & seen)
            other = sorted(others)[0]
            assert client.get(f"/fhir/Patient/{other}", headers=headers).status_code == 404
    finally:
        platform.close()


def test_cli_writes_the_region_and_its_ground_truth(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from healthlink.cli.main import app

    r = CliRunner().invoke(app, ["demo", "--patients", "60", "--seed", "3", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert len(read_ground_truth(tmp_path / "ground-truth.csv")) == 60
    assert (tmp_path / "_directory" / "Organization.ndjson").exists()
    assert _digest(tmp_path) == _digest(write_region(Options(patients=60, seed=3), tmp_path / "again")
                                        and tmp_path / "again")


def _counts(url: str) -> Counter:
    from sqlalchemy import create_engine, func, select

    from healthlink.db import tables as t

    engine = create_engine(url)
    empi = ("Person", "Task")  # written by the master patient index as the Patients arrive: counted as links
    with engine.connect() as conn:
        rows = conn.execute(select(t.resource.c.res_type, func.count()).where(t.resource.c.res_type.not_in(empi))
                            .group_by(t.resource.c.res_type)).all()
        versions = conn.execute(select(func.count()).select_from(t.resource_version)
                                .where(t.resource_version.c.res_type.not_in(("Basic", *empi)))).scalar_one()
        linked = conn.execute(select(func.count()).select_from(t.person_link)).scalar_one()
    engine.dispose()
    return Counter(dict(rows)) + Counter(versions=versions, linked=linked)


def test_demo_default_size_is_the_settings_constant() -> None:
    from healthlink.settings import DEMO_PATIENTS, Settings

    assert Settings.model_fields["demo_patients"].default == DEMO_PATIENTS == Options().patients == 2_000


def _said(result) -> str:  # noqa: ANN001
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_cli_demo_loads_once_and_finishes_a_load_cut_short(fresh_db: str, monkeypatch) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from healthlink.cli.main import app
    from healthlink.demo import demo_logins
    from healthlink.demogen import load

    real, calls = load.load_region, []

    def cut_short(platform, opts, *, progress=None, resume=False):  # noqa: ANN001, ANN202
        def interrupt(done: int) -> None:
            calls.append(done)
            if len(calls) == 3:  # three batches of patient data are written, then Ctrl-C
                raise KeyboardInterrupt

        return real(platform, opts, progress=interrupt, resume=resume)

    monkeypatch.setattr(load, "load_region", cut_short)
    r = CliRunner().invoke(app, ["demo"])
    assert r.exit_code == 130, _said(r)
    assert "interrupted" in _said(r) and "again to finish it" in _said(r)
    assert isinstance(r.exception, SystemExit)  # a message, not a stack trace
    partial = _counts(fresh_db)
    expected = Counter(res["resourceType"] for _, res in generate(Options(patients=40, seed=1)))
    assert 0 < partial["Patient"] < expected["Patient"]

    monkeypatch.setattr(load, "load_region", real)
    r = CliRunner().invoke(app, ["demo"])
    assert r.exit_code == 0, _said(r)
    assert "finishing an interrupted load of the demo region: 40 Patient records" in _said(r)
    demo_staff = Counter(Practitioner=len(demo_logins()),
                         PractitionerRole=sum(1 for lg in demo_logins() if lg.institution))
    # the demo patient (healthlink.demo.demo_patient) gets an open Encounter for a consultation
    demo_patient = Counter(Encounter=1) if "demo patient: Patient/" in _said(r) else Counter()
    if "demo patient's recent results at" in _said(r):  # electrolytes, glucose and a chest CT (issue 7)
        from healthlink.demogen.recognition import DEMO_RECENT, imaging_of, panel_of, source_result
        from healthlink.recognition import load as load_catalogue

        cat, rng = load_catalogue(), __import__("random").Random(0)
        for item_id, _ in DEMO_RECENT:
            item = cat.by_id(item_id)
            if panel_of(item) is not None or imaging_of(item) is not None:
                demo_patient += Counter(x["resourceType"] for x in source_result(
                    rng, "x", item, "p", "i", __import__("datetime").datetime(2026, 1, 1)))
    if "pre-review: logins" in _said(r):  # issue 8: the township doctor's Practitioner (demogen/prereview.py)
        demo_patient += Counter(Practitioner=1)
    bedside_versions = 0
    if "bedside verification:" in _said(r):  # issue 8: three orders, a lab order, the bed (demogen/bedside.py)
        demo_patient += Counter(MedicationRequest=3, ServiceRequest=1)
        bedside_versions = 1  # the open Encounter gets its bed: a second version
    full = _counts(fresh_db)
    assert full["linked"] == expected["Patient"]  # every Patient linked to a Person, once
    assert full - Counter(versions=full["versions"], linked=full["linked"]) == \
        expected + demo_staff + demo_patient + Counter(Basic=1)  # no duplicates
    assert full["versions"] == sum(expected.values()) + sum(demo_staff.values()) + sum(demo_patient.values()) \
        + bedside_versions

    r = CliRunner().invoke(app, ["demo"])  # a second run changes nothing
    assert r.exit_code == 0 and "demo region already present: 40 Patient records (seed 1)" in _said(r), _said(r)
    assert "demo logins already present" in _said(r)
    assert _counts(fresh_db) == full
    assert _counts(fresh_db) == full

    r = CliRunner().invoke(app, ["demo", "--seed", "2"])  # another seed: a clear refusal
    assert r.exit_code == 1 and "seed 1" in _said(r) and "new database" in _said(r), _said(r)
    assert isinstance(r.exception, SystemExit)

    r = CliRunner().invoke(app, ["demo", "--patients", "60"])  # a larger region of the seed extends it
    assert r.exit_code == 0 and "extending the demo region to 60 Patient records" in _said(r), _said(r)
    more = Counter(res["resourceType"] for _, res in generate(Options(patients=60, seed=1)))
    assert _counts(fresh_db)["Patient"] == more["Patient"]
    assert _counts(fresh_db)["MedicationRequest"] == more["MedicationRequest"] + demo_patient["MedicationRequest"]
