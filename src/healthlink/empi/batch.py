"""Batch linking with Splink: score every blocked pair, add the deterministic links, and
cluster into persons at the auto-link threshold (connected components).

Pairs scored between the review threshold and the auto-link threshold are returned too:
they are the review queue of a later step (FHIR Task); here they are only counted.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthlink.empi.comparisons import ComparisonSet
from healthlink.empi.model import Model, register_inputs


@dataclass(frozen=True)
class Pair:
    left: str
    right: str
    match_probability: float  # 1.0 for a deterministic link
    deterministic: bool


@dataclass
class LinkResult:
    clusters: dict[str, str]  # record id -> cluster id (the lowest record id in the cluster)
    pairs: list[Pair]  # every pair at or above the review threshold, deterministic links included
    auto_link: float
    review: float
    timings_s: dict[str, float] = field(default_factory=dict)

    def links(self) -> list[Pair]:
        return [p for p in self.pairs if p.match_probability >= self.auto_link]

    def review_pairs(self) -> list[Pair]:
        """Pairs between the thresholds whose records did not end in one cluster anyway."""
        c = self.clusters
        return [p for p in self.pairs if p.match_probability < self.auto_link
                and c.get(p.left) != c.get(p.right)]


def predict_pairs(inputs: Sequence[Iterable[Mapping[str, Any]]], model: Model, *,
                  threshold: float | None = None) -> list[tuple[str, str, float, float]]:
    """Splink's own scores of every blocked pair: (id_l, id_r, match_weight, match_probability).

    For checking the pure-Python scorer against Splink, and for diagnostics."""
    import duckdb
    from splink import DuckDBAPI, Linker

    con = duckdb.connect()
    db_api = DuckDBAPI(connection=con)
    tables, _ = register_inputs(db_api, inputs)
    uid = model.splink_settings["unique_id_column_name"]
    linker = Linker(tables if len(tables) > 1 else tables[0], copy.deepcopy(model.splink_settings),
                    log_level=logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = linker.inference.predict(threshold_match_probability=threshold)
    rows = con.execute(f'select "{uid}_l", "{uid}_r", match_weight, match_probability '
                       f"from {pred.physical_name}").fetchall()
    con.close()
    return rows


ENGINES = ("duckdb", "spark")


class _DuckDB:
    quote = '"'

    def __init__(self) -> None:
        import duckdb
        from splink import DuckDBAPI

        self.con = duckdb.connect()
        self.db_api = DuckDBAPI(connection=self.con)

    def settings(self, model: Model) -> dict[str, Any]:
        return copy.deepcopy(model.splink_settings)

    def register(self, inputs: Sequence[Iterable[Mapping[str, Any]]]) -> list[Any]:
        return register_inputs(self.db_api, inputs)[0]

    def create(self, name: str, sql: str) -> None:
        self.con.execute(f"create table {name} as {sql}")

    def rows(self, sql: str) -> list[tuple]:
        return self.con.execute(sql).fetchall()

    def close(self) -> None:
        self.con.close()


class _Spark:
    """Splink on Spark with the model's levels in Spark SQL (healthlink.empi.spark)."""

    quote = "`"

    def __init__(self, session: Any = None) -> None:
        from healthlink.empi.spark import register_udfs, spark_session

        self.own_session = session is None
        self.session = session if session is not None else spark_session()
        from splink.backends.spark import SparkAPI  # imports pyspark: after spark_session's check

        register_udfs(self.session)
        checkpoints = self.session.sparkContext.getCheckpointDir()
        self.checkpoints = checkpoints if isinstance(checkpoints, str) else None
        # Splink's intermediate tables: parquet in the checkpoint directory (cuts the lineage
        # of its iterative clustering), else kept in memory
        self.db_api = SparkAPI(spark_session=self.session,
                               break_lineage_method="parquet" if self.checkpoints else "persist",
                               register_udfs_automatically=False)  # Splink's Scala jar is not used
        self.views: list[str] = []

    def settings(self, model: Model) -> dict[str, Any]:
        from healthlink.empi.spark import spark_settings

        return spark_settings(model.splink_settings)

    def register(self, inputs: Sequence[Iterable[Mapping[str, Any]]]) -> list[Any]:
        import pyarrow as pa

        tables = []
        for i, records in enumerate(inputs):
            t = pa.Table.from_pylist([dict(r) for r in records])
            for j, f in enumerate(t.schema):  # an all-missing column: a string column, not NullType
                if pa.types.is_null(f.type):
                    t = t.set_column(j, f.name, t.column(j).cast(pa.string()))
            tables.append(self.db_api.register(self.session.createDataFrame(t), table_name=f"empi_input_{i}"))
            self.views.append(f"empi_input_{i}")
        return tables

    def create(self, name: str, sql: str) -> None:
        self.session.sql(sql).persist().createOrReplaceTempView(name)
        self.views.append(name)

    def rows(self, sql: str) -> list[tuple]:
        return [tuple(r) for r in self.session.sql(sql).collect()]

    def close(self) -> None:
        self.db_api.delete_tables_created_by_splink_from_db()
        for name in self.views:
            self.session.catalog.dropTempView(name)
        if self.own_session:  # free Splink's intermediate tables in our own session
            self.session.catalog.clearCache()
            if self.checkpoints and self.checkpoints.startswith("file:"):
                root = Path(self.checkpoints.removeprefix("file:"))
                for d in root.glob("__splink__*"):
                    shutil.rmtree(d, ignore_errors=True)


def link_batch(inputs: Sequence[Iterable[Mapping[str, Any]]], model: Model, cs: ComparisonSet, *,
               auto_link: float, review: float, engine: str = "duckdb", spark: Any = None) -> LinkResult:
    """Link flat records (one input to deduplicate, or two to link) with a trained model.

    ``engine`` is "duckdb" or "spark"; both score with the same stored model (trained on
    DuckDB).  On Spark, ``spark`` is the session to use (for a cluster); by default a local
    one is started on first use (``healthlink.empi.spark.spark_session``).

    Record ids must be unique across the inputs: clusters and pairs are keyed by them."""
    from splink import Linker
    from splink.clustering import cluster_pairwise_predictions_at_threshold

    if not 0.0 < review <= auto_link < 1.0:
        raise ValueError("thresholds must satisfy 0 < review <= auto_link < 1")
    if model.comparison_set != cs.name:
        raise ValueError(f"model was trained for {model.comparison_set}, not {cs.name}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    db: _DuckDB | _Spark = _DuckDB() if engine == "duckdb" else _Spark(spark)
    try:
        tables = db.register(inputs)
        linker = Linker(tables if len(tables) > 1 else tables[0], db.settings(model),
                        log_level=logging.WARNING)
        timings["load_s"] = time.perf_counter() - t

        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = linker.inference.predict(threshold_match_probability=review)
        timings["predict_s"] = time.perf_counter() - t

        t = time.perf_counter()
        q = db.quote
        uid = f"{q}{cs.unique_id}{q}"
        scored = (f"select {q}{cs.unique_id}_l{q} id_l, {q}{cs.unique_id}_r{q} id_r, match_probability p, "
                  f"false det from {pred.physical_name}")
        if cs.deterministic is not None and cs.link_type == "dedupe_only":
            src = tables[0].physical_name
            scored += (f" union all select l.{uid}, r.{uid}, 1.0, true from {src} l join {src} r "
                       f"on l.{uid} < r.{uid} and ({cs.deterministic.sql})")
        db.create("empi_edges", f"select id_l, id_r, max(p) match_probability, "
                  f"bool_or(det) deterministic from ({scored}) group by id_l, id_r")
        db.create("empi_nodes", " union all ".join(f"select {uid} from {tb.physical_name}" for tb in tables))
        timings["edges_s"] = time.perf_counter() - t

        t = time.perf_counter()
        cc = cluster_pairwise_predictions_at_threshold(
            "empi_nodes", "empi_edges", db.db_api, node_id_column_name=cs.unique_id,
            edge_id_column_name_left="id_l", edge_id_column_name_right="id_r",
            threshold_match_probability=auto_link)
        clusters = dict(db.rows(f"select {uid}, cluster_id from {cc.physical_name}"))
        timings["cluster_s"] = time.perf_counter() - t
        pairs = [Pair(a, b, p, d) for a, b, p, d in
                 db.rows("select id_l, id_r, match_probability, deterministic from empi_edges")]
    finally:
        db.close()
    return LinkResult(clusters, pairs, auto_link, review, {k: round(v, 3) for k, v in timings.items()})
