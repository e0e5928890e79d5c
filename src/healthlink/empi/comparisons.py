"""Comparison levels written once, evaluated twice: as Splink SQL and in Python.

Each level carries its SQL condition (for Splink's batch predict in DuckDB) and a Python
test of the same meaning (for the real-time scorer).  The level builders below are the
only place either is written, and tests/test_empi.py checks that the scorer and Splink
agree on real pairs.  A ``ComparisonSet`` bundles the comparisons with the blocking and
training rules of one kind of data: ``REGION`` for our Patients; the FEBRL benchmark
builds its own set from the same builders.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from healthlink.empi.ids import one_typo_apart
from healthlink.empi.similarity import damerau_levenshtein, jaro_winkler

Record = Mapping[str, Any]
Test = Callable[[Record, Record], bool]


@dataclass(frozen=True)
class Level:
    label: str
    sql: str
    test: Test
    is_null: bool = False

    def splink(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sql_condition": self.sql, "label_for_charts": self.label}
        if self.is_null:
            out["is_null_level"] = True
        return out


ELSE = Level("All other comparisons", "ELSE", lambda _l, _r: True)


def _q(col: str, side: str) -> str:
    return f'"{col}_{side}"'


def null(*cols: str) -> Level:
    """Missing on either side: the comparison neither supports nor opposes a match."""
    sql = " OR ".join(f"{_q(c, 'l')} IS NULL OR {_q(c, 'r')} IS NULL" for c in cols)
    return Level(f"{'/'.join(cols)} missing", sql,
                 lambda l, r: any(l[c] is None or r[c] is None for c in cols), is_null=True)


def exact(col: str, label: str | None = None) -> Level:
    return Level(label or f"{col} equal", f"{_q(col, 'l')} = {_q(col, 'r')}",
                 lambda l, r: l[col] is not None and l[col] == r[col])


def jaro_winkler_at_least(col: str, threshold: float, label: str | None = None) -> Level:
    return Level(label or f"{col} Jaro-Winkler >= {threshold}",
                 f"jaro_winkler_similarity({_q(col, 'l')}, {_q(col, 'r')}) >= {threshold}",
                 lambda l, r: jaro_winkler(l[col], r[col]) >= threshold)


def damerau_levenshtein_at_most(col: str, distance: int, label: str | None = None) -> Level:
    return Level(label or f"{col} Damerau-Levenshtein <= {distance}",
                 f"damerau_levenshtein({_q(col, 'l')}, {_q(col, 'r')}) <= {distance}",
                 lambda l, r: damerau_levenshtein(l[col], r[col]) <= distance)


def one_typo(col: str) -> Level:
    """One character substituted or two adjacent ones swapped (equal length, DL distance 1)."""
    return Level(f"{col} one typo apart",
                 f"length({_q(col, 'l')}) = length({_q(col, 'r')}) AND "
                 f"damerau_levenshtein({_q(col, 'l')}, {_q(col, 'r')}) <= 1",
                 lambda l, r: len(l[col]) == len(r[col]) and
                 (l[col] == r[col] or one_typo_apart(l[col], r[col])))


def _days_apart(a: str, b: str) -> int | None:
    try:
        return abs((date.fromisoformat(a) - date.fromisoformat(b)).days)
    except ValueError:
        return None


def date_near(col: str, days: int) -> Level:
    """ISO dates (YYYY-MM-DD) that differ in one field only (a typo in the year, month or
    day), or that lie at most ``days`` apart (a day mistaken across a month's end)."""
    l_, r_ = _q(col, "l"), _q(col, "r")
    same = [f"substr({l_}, {a}, {n}) = substr({r_}, {a}, {n})" for a, n in ((1, 4), (6, 2), (9, 2))]
    one_differs = " OR ".join(f"({x} AND {y})" for x, y in ((same[0], same[1]), (same[0], same[2]),
                                                          (same[1], same[2])))
    sql = (f"({one_differs}) OR abs(date_diff('day', try_cast({l_} AS DATE), "
           f"try_cast({r_} AS DATE))) <= {days}")

    def test(l: Record, r: Record) -> bool:
        a, b = l[col], r[col]
        parts = [(a[0:4] == b[0:4]), (a[5:7] == b[5:7]), (a[8:10] == b[8:10])]
        if sum(parts) >= 2:
            return True
        apart = _days_apart(a, b)
        return apart is not None and apart <= days

    return Level(f"{col} one field differs or within {days} days", sql, test)


@dataclass(frozen=True)
class Comparison:
    """One field's comparison: levels from most to least specific; ``ELSE`` is appended."""

    name: str
    levels: tuple[Level, ...]

    @property
    def all_levels(self) -> tuple[Level, ...]:
        return (*self.levels, ELSE)

    def splink(self) -> Any:
        from splink import comparison_library as cl  # imported here: only training needs Splink

        return cl.CustomComparison(comparison_levels=[lv.splink() for lv in self.all_levels],
                                   output_column_name=self.name)

    def level_index(self, l: Record, r: Record) -> int:
        for i, lv in enumerate(self.levels):
            if lv.test(l, r):
                return i
        return len(self.levels)


@dataclass(frozen=True)
class Deterministic:
    """A rule that links on its own, before any probabilistic score."""

    label: str
    sql: str  # join condition on input rows ``l`` and ``r``
    test: Test


@dataclass(frozen=True)
class ComparisonSet:
    name: str
    unique_id: str
    comparisons: tuple[Comparison, ...]
    blocking_rules: tuple[tuple[str, ...] | str, ...]  # columns/expressions AND-ed, or a SQL rule
    em_blocks: tuple[tuple[str, ...], ...]  # EM sessions, one per block (m of blocked columns untrained)
    prior_rules: tuple[tuple[str, ...], ...]  # rules that are almost surely matches, for the prior
    prior_recall: float = 0.9
    link_type: str = "dedupe_only"
    deterministic: Deterministic | None = None
    retain: tuple[str, ...] = field(default=())


def _valid_same_id_and_birth(l: Record, r: Record) -> bool:
    return (bool(l["resident_id_valid"]) and bool(r["resident_id_valid"])
            and l["resident_id"] == r["resident_id"] and l["birth_date"] is not None
            and l["birth_date"] == r["birth_date"])


REGION = ComparisonSet(
    name="region-v1",
    unique_id="record_id",
    comparisons=(
        Comparison("name", (null("name"), exact("name", "same characters"),
                            exact("name_key", "same variant key"),
                            jaro_winkler_at_least("name_pinyin", 0.88, "pinyin Jaro-Winkler >= 0.88"))),
        Comparison("birth_date", (null("birth_date"), exact("birth_date"), date_near("birth_date", 3))),
        Comparison("sex", (null("sex"), exact("sex"))),
        Comparison("resident_id", (null("resident_id"), exact("resident_id"), one_typo("resident_id"))),
        Comparison("phone", (null("phone"), exact("phone"))),
        Comparison("address", (null("address"), exact("address"), exact("county", "same county"))),
    ),
    blocking_rules=(
        ("resident_id",),
        ("name_key", "substr(birth_date, 1, 7)"),
        ("name_key", "phone"),
        ("birth_date", "phone"),
    ),
    em_blocks=(("resident_id",), ("name_key", "birth_date")),
    prior_rules=(("resident_id", "birth_date"), ("name_key", "birth_date", "phone")),
    deterministic=Deterministic(
        "valid resident ID and birth date agree",
        "l.resident_id_valid AND r.resident_id_valid AND l.resident_id = r.resident_id "
        "AND l.birth_date = r.birth_date",
        _valid_same_id_and_birth),
    retain=("institution", "resident_id_valid"),
)
