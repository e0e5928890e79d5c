"""Training with Splink 5 (DuckDB), and the trained model as a versioned artefact.

Training is unsupervised Fellegi-Sunter, as in docs/adr/0010-empi-matching.md:

1. the prior (probability that two random records match) from rules that are almost
   surely matches, at an assumed recall;
2. u for every level by random sampling of record pairs;
3. m by expectation maximisation, once per training block (a block cannot train the
   comparisons it blocks on, so the blocks are chosen to cover every comparison).

Levels that training never observed (for example a wholly different name among the
matches EM finds, or an ID one slip away from another person's among random pairs) get an
explicit value — u of one in the sampled pairs, m of 1e-6 as Splink itself assumes —
written into the artefact and listed in its metadata, so the Splink batch and the
pure-Python scorer use the same numbers.

The artefact is JSON: our metadata (format, version, comparison set, training figures)
and Splink's own settings under ``splink_settings`` (loadable by ``splink.Linker``).
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from healthlink.empi.comparisons import ComparisonSet

FORMAT = "healthlink-empi-model"
FORMAT_VERSION = 1
UNOBSERVED_M = 1e-6


@dataclass
class Model:
    """A trained matching model: Splink settings with m/u, plus our metadata."""

    comparison_set: str
    splink_settings: dict[str, Any]
    version: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def prior(self) -> float:
        return float(self.splink_settings["probability_two_random_records_match"])

    def as_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "version": self.version,
                "comparison_set": self.comparison_set, "metadata": self.metadata,
                "splink_settings": self.splink_settings}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_json(), ensure_ascii=False, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Model:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Model:
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"not a {FORMAT} v{FORMAT_VERSION} artefact")
        return cls(comparison_set=data["comparison_set"], splink_settings=dict(data["splink_settings"]),
                   version=data.get("version", ""), metadata=dict(data.get("metadata") or {}))


def splink_settings_creator(cs: ComparisonSet) -> Any:
    from splink import SettingsCreator, block_on

    return SettingsCreator(
        unique_id_column_name=cs.unique_id,
        link_type=cs.link_type,
        blocking_rules_to_generate_predictions=[r if isinstance(r, str) else block_on(*r)
                                                for r in cs.blocking_rules],
        comparisons=[c.splink() for c in cs.comparisons],
        additional_columns_to_retain=list(cs.retain),
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=True,
    )


def register_inputs(db_api: Any, inputs: Sequence[Iterable[Mapping[str, Any]]]) -> tuple[list[Any], list[int]]:
    """Each input (flat records) as a DuckDB table Splink can read; and the row counts."""
    import pyarrow as pa

    tables, counts = [], []
    for i, records in enumerate(inputs):
        rows = [dict(r) for r in records]
        tables.append(db_api.register(pa.Table.from_pylist(rows), table_name=f"empi_input_{i}"))
        counts.append(len(rows))
    return tables, counts


def _fill_unobserved(settings: dict[str, Any], u_pairs: float) -> list[str]:
    filled = []
    for comp in settings["comparisons"]:
        for lv in comp["comparison_levels"]:
            if lv.get("is_null_level"):
                continue
            label = f"{comp['output_column_name']}: {lv.get('label_for_charts')}"
            if lv.get("u_probability") is None:
                lv["u_probability"] = 1.0 / u_pairs
                filled.append(f"{label} (u)")
            if lv.get("m_probability") is None:
                lv["m_probability"] = UNOBSERVED_M
                filled.append(f"{label} (m)")
    return filled


def train(inputs: Sequence[Iterable[Mapping[str, Any]]], cs: ComparisonSet, *,
          u_max_pairs: float = 1e6, seed: int = 1, version: str = "") -> Model:
    """Train on flat records (one input for dedupe, two for link_only) and return the model."""
    import duckdb
    import splink
    from splink import DuckDBAPI, Linker, block_on

    t0 = time.perf_counter()
    db_api = DuckDBAPI(connection=duckdb.connect())
    tables, counts = register_inputs(db_api, inputs)
    linker = Linker(tables if len(tables) > 1 else tables[0], splink_settings_creator(cs),
                    log_level=logging.WARNING)
    timings: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Splink warns about untrained levels; handled below
        t = time.perf_counter()
        linker.training.estimate_probability_two_random_records_match(
            [block_on(*cols) for cols in cs.prior_rules], recall=cs.prior_recall)
        timings["prior_s"] = time.perf_counter() - t
        t = time.perf_counter()
        linker.training.estimate_u_using_random_sampling(max_pairs=u_max_pairs, seed=seed)
        timings["u_s"] = time.perf_counter() - t
        t = time.perf_counter()
        for cols in cs.em_blocks:
            linker.training.estimate_parameters_using_expectation_maximisation(
                block_on(*cols), estimate_without_term_frequencies=True)
        timings["em_s"] = time.perf_counter() - t
        settings = linker.misc.save_model_to_json()
    filled = _fill_unobserved(settings, u_max_pairs)
    metadata = {
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "records": counts,
        "u_max_pairs": u_max_pairs, "seed": seed,
        "unobserved_levels_filled": filled,
        "splink_version": splink.__version__, "duckdb_version": duckdb.__version__,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "train_s": round(time.perf_counter() - t0, 3),
    }
    return Model(comparison_set=cs.name, splink_settings=settings,
                 version=version or f"{cs.name}-{metadata['trained_at']}", metadata=metadata)


def match_weight_to_probability(weight: float) -> float:
    """As Splink computes it: 1 / (1 + 2^-w), written to avoid overflow either way."""
    if weight >= 0:
        return 1.0 / (1.0 + math.pow(2.0, -weight))
    p = math.pow(2.0, weight)
    return p / (1.0 + p)
