"""Batch linking with Splink: score every blocked pair, add the deterministic links, and
cluster into persons at the auto-link threshold (connected components).

Pairs scored between the review threshold and the auto-link threshold are returned too:
they are the review queue of a later step (FHIR Task); here they are only counted.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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


def link_batch(inputs: Sequence[Iterable[Mapping[str, Any]]], model: Model, cs: ComparisonSet, *,
               auto_link: float, review: float) -> LinkResult:
    """Link flat records (one input to deduplicate, or two to link) with a trained model.

    Record ids must be unique across the inputs: clusters and pairs are keyed by them."""
    import duckdb
    from splink import DuckDBAPI, Linker
    from splink.clustering import cluster_pairwise_predictions_at_threshold

    if not 0.0 < review <= auto_link < 1.0:
        raise ValueError("thresholds must satisfy 0 < review <= auto_link < 1")
    if model.comparison_set != cs.name:
        raise ValueError(f"model was trained for {model.comparison_set}, not {cs.name}")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    con = duckdb.connect()
    db_api = DuckDBAPI(connection=con)
    tables, _ = register_inputs(db_api, inputs)
    linker = Linker(tables if len(tables) > 1 else tables[0], copy.deepcopy(model.splink_settings),
                    log_level=logging.WARNING)
    timings["load_s"] = time.perf_counter() - t

    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = linker.inference.predict(threshold_match_probability=review)
    timings["predict_s"] = time.perf_counter() - t

    t = time.perf_counter()
    uid = cs.unique_id
    scored = (f'select "{uid}_l" id_l, "{uid}_r" id_r, match_probability p, false det '
              f"from {pred.physical_name}")
    if cs.deterministic is not None and cs.link_type == "dedupe_only":
        src = tables[0].physical_name
        scored += (f' union all select l."{uid}", r."{uid}", 1.0, true from {src} l join {src} r '
                   f'on l."{uid}" < r."{uid}" and ({cs.deterministic.sql})')
    con.execute(f"create table empi_edges as select id_l, id_r, max(p) match_probability, "
                f"bool_or(det) deterministic from ({scored}) group by id_l, id_r")
    nodes = " union all ".join(f'select "{uid}" from {tb.physical_name}' for tb in tables)
    con.execute(f"create table empi_nodes as {nodes}")
    timings["edges_s"] = time.perf_counter() - t

    t = time.perf_counter()
    cc = cluster_pairwise_predictions_at_threshold(
        "empi_nodes", "empi_edges", db_api, node_id_column_name=uid, edge_id_column_name_left="id_l",
        edge_id_column_name_right="id_r", threshold_match_probability=auto_link)
    clusters = dict(con.execute(f'select "{uid}", cluster_id from {cc.physical_name}').fetchall())
    timings["cluster_s"] = time.perf_counter() - t
    pairs = [Pair(a, b, p, d) for a, b, p, d in
             con.execute("select id_l, id_r, match_probability, deterministic from empi_edges").fetchall()]
    con.close()
    return LinkResult(clusters, pairs, auto_link, review, {k: round(v, 3) for k, v in timings.items()})
