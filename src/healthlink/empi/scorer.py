"""The pure-Python scorer: a trained model's weights applied to two flat records.

This is what real-time linking uses: no Splink, no SQL, a few dictionary look-ups and
string comparisons per pair.  For each comparison it finds the level the pair falls in
(the same tests as Splink's SQL, ``comparisons.py``) and adds the level's match weight
log2(m/u) to the prior's log-odds, exactly as Splink's predict does (clamping m and u at
1e-300 as Splink does), so the two agree to floating-point rounding
(tests/test_empi.py).  The deterministic rule is checked first: a pair it links is a
match whatever the weights say.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from healthlink.empi.comparisons import Comparison, ComparisonSet
from healthlink.empi.model import Model, match_weight_to_probability

_CLAMP = 1e-300  # splink.internals.comparison_level.M_U_CLAMP_MIN


@dataclass(frozen=True)
class FieldScore:
    comparison: str
    level: str
    weight: float  # log2 Bayes factor this field contributes (0 for a missing value)


@dataclass(frozen=True)
class Score:
    match_weight: float  # prior log-odds + sum of field weights (Splink's match_weight)
    match_probability: float
    deterministic: bool  # linked by the deterministic rule
    fields: tuple[FieldScore, ...]

    @property
    def probability(self) -> float:
        """The probability the link decision uses: 1 for a deterministic link."""
        return 1.0 if self.deterministic else self.match_probability


class Scorer:
    """Scores pairs of flat records with a stored model; built once, used for many pairs."""

    def __init__(self, model: Model, cs: ComparisonSet) -> None:
        if model.comparison_set != cs.name:
            raise ValueError(f"model was trained for {model.comparison_set}, not {cs.name}")
        self.cs = cs
        self.prior_weight = math.log2(model.prior / (1.0 - model.prior))
        by_name = {c["output_column_name"]: c for c in model.splink_settings["comparisons"]}
        self._table: list[tuple[Comparison, tuple[tuple[str, float], ...]]] = []
        for comp in cs.comparisons:
            stored = by_name.get(comp.name)
            labels = [lv.label for lv in comp.all_levels]
            if stored is None or [lv.get("label_for_charts") for lv in stored["comparison_levels"]] != labels:
                raise ValueError(f"model's comparison {comp.name!r} does not have the levels {labels}")
            weights = tuple((lv["label_for_charts"], _weight(lv)) for lv in stored["comparison_levels"])
            self._table.append((comp, weights))

    def score(self, left: Mapping[str, Any], right: Mapping[str, Any]) -> Score:
        det = self.cs.deterministic is not None and self.cs.deterministic.test(left, right)
        total = self.prior_weight
        fields = []
        for comp, weights in self._table:
            label, w = weights[comp.level_index(left, right)]
            total += w
            fields.append(FieldScore(comp.name, label, w))
        return Score(total, match_weight_to_probability(total), det, tuple(fields))


def _weight(level: Mapping[str, Any]) -> float:
    if level.get("is_null_level"):
        return 0.0
    m, u = level.get("m_probability"), level.get("u_probability")
    if m is None or u is None:
        raise ValueError(f"level {level.get('label_for_charts')!r} has no trained m and u")
    return math.log2(max(m, _CLAMP) / max(u, _CLAMP))
