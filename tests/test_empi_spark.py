"""The EMPI batch on Spark (docs/empi.md): one model trained on DuckDB links a small region on
DuckDB and on Spark (local mode) into the same persons, with the same pair scores.

No database: the same under both HEALTHLINK_TEST_DB modes, so it is marked ``spark`` and runs
once, in the PostgreSQL pass (Makefile).  Needs pyspark (in the test extra) and Java 17;
without them it fails, it does not skip."""

from __future__ import annotations

import random

import duckdb
import pytest

from healthlink.demogen import Options
from healthlink.demogen.stream import patient_records
import healthlink.empi.spark as empi_spark
from healthlink.empi import REGION, Model, flat_record, link_batch, train
from healthlink.empi.spark import register_udfs, spark_session, to_spark_sql
from healthlink.settings import Settings

AUTO, REVIEW = Settings().empi_auto_link_threshold, Settings().empi_review_threshold
# pyspark's DataFrame.collect leaves its local result socket for the garbage collector
pytestmark = [pytest.mark.spark,
              pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")]


@pytest.fixture(scope="module")
def spark():  # noqa: ANN201
    session = spark_session()
    register_udfs(session)
    return session


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return [dict(flat_record(r.resource)) for r in patient_records(Options(patients=600, seed=5, clinical=False))]


@pytest.fixture(scope="module")
def model(records: list[dict]) -> Model:
    return train([records], REGION, u_max_pairs=1e5, seed=1, version="test")


def _persons(clusters: dict[str, str]) -> set[frozenset[str]]:
    by: dict[str, set[str]] = {}
    for rid, c in clusters.items():
        by.setdefault(c, set()).add(rid)
    return {frozenset(v) for v in by.values()}


def test_spark_and_duckdb_link_a_region_into_the_same_persons(records: list[dict], model: Model, spark) -> None:  # noqa: ANN001
    on_duckdb = link_batch([records], model, REGION, auto_link=AUTO, review=REVIEW)
    on_spark = link_batch([records], model, REGION, auto_link=AUTO, review=REVIEW, engine="spark", spark=spark)

    persons = _persons(on_duckdb.clusters)
    assert len(on_duckdb.clusters) == len(records)
    assert any(len(p) > 1 for p in persons) and len(persons) < len(records)
    assert _persons(on_spark.clusters) == persons

    duck = {(p.left, p.right): p for p in on_duckdb.pairs}
    sprk = {(p.left, p.right): p for p in on_spark.pairs}
    assert set(sprk) == set(duck) and len(duck) > 100
    assert any(p.deterministic for p in duck.values())
    for k, p in duck.items():
        assert sprk[k].deterministic == p.deterministic
        assert sprk[k].match_probability == pytest.approx(p.match_probability, abs=1e-9)
    assert sorted(map(tuple, on_spark.review_pairs())) == sorted(map(tuple, on_duckdb.review_pairs()))


def _edge_pairs(records: list[dict]) -> list[tuple[dict, dict]]:
    """Record pairs, mostly random, plus the cases where the SQL of the two engines could
    part: dates across month and year ends, impossible dates, missing values, ID slips."""
    rng = random.Random(3)
    pairs = [(rng.choice(records), rng.choice(records)) for _ in range(400)]
    base = dict(records[0])
    rid = "632722199002290017"
    for a, b in [({"birth_date": "1990-02-28"}, {"birth_date": "1990-03-02"}),
                 ({"birth_date": "1989-12-30"}, {"birth_date": "1990-01-02"}),
                 ({"birth_date": "1990-02-30"}, {"birth_date": "1990-03-01"}),
                 ({"birth_date": "1990-02-28"}, {"birth_date": "1991-03-28"}),
                 ({"birth_date": None}, {"birth_date": "1990-03-01"}),
                 ({"resident_id": rid}, {"resident_id": rid[:3] + rid[4] + rid[3] + rid[5:]}),
                 ({"resident_id": rid}, {"resident_id": rid[:-1] + "X"}),
                 ({"resident_id": rid}, {"resident_id": rid[:-1]}),
                 ({"name_pinyin": "cirenzhuoma"}, {"name_pinyin": "cairenzhuoma"}),
                 ({"name_pinyin": ""}, {"name_pinyin": ""}),
                 ({"name_pinyin": None}, {"name_pinyin": "zhaxi"})]:
        pairs.append(({**base, **a}, {**base, **b}))
    return pairs


def test_every_level_means_the_same_on_spark_as_on_duckdb(records: list[dict], model: Model, spark) -> None:  # noqa: ANN001
    """The stored levels (DuckDB SQL) transpiled for Spark pick the same level on every pair."""
    cols = [c for c in records[0] if c != "record_id"]
    rows = [{f"{c}_{s}": rec[c] for s, rec in (("l", a), ("r", b)) for c in cols} for a, b in _edge_pairs(records)]
    cases_duck, cases_spark = [], []
    for comp in model.splink_settings["comparisons"]:
        levels = comp["comparison_levels"]
        whens = [(lv["sql_condition"], i) for i, lv in enumerate(levels) if lv["sql_condition"] != "ELSE"]
        cases_duck.append("case " + " ".join(f"when {c} then {i}" for c, i in whens) + f" else {len(levels) - 1} end")
        cases_spark.append("case " + " ".join(f"when {to_spark_sql(c)} then {i}" for c, i in whens)
                           + f" else {len(levels) - 1} end")

    import pyarrow as pa

    level_pairs = pa.Table.from_pylist(rows)  # noqa: F841 (read by DuckDB's replacement scan)
    con = duckdb.connect()
    on_duckdb = con.execute(f"select {', '.join(cases_duck)} from level_pairs").fetchall()
    con.close()
    spark.createDataFrame(level_pairs).createOrReplaceTempView("empi_level_pairs")
    on_spark = [tuple(r) for r in spark.sql(f"select {', '.join(cases_spark)} from empi_level_pairs").collect()]
    spark.catalog.dropTempView("empi_level_pairs")
    assert on_spark == on_duckdb
    assert {row[1] for row in on_duckdb} >= {0, 1, 2, 3}  # birth_date: every level seen
    assert 2 in {row[3] for row in on_duckdb}  # resident ID one typo apart


def test_unknown_engine_is_refused(records: list[dict], model: Model) -> None:
    with pytest.raises(ValueError, match="engine"):
        link_batch([records], model, REGION, auto_link=AUTO, review=REVIEW, engine="polars")


def test_a_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(empi_spark, "_session", None)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(empi_spark.shutil, "which", lambda _name: None)
    with pytest.raises(RuntimeError, match="Java 17"):
        spark_session()
