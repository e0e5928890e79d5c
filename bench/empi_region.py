"""EMPI matching core on a generated demo region:
`python bench/empi_region.py [N] [u_max_pairs] [--engine duckdb|spark]`.

Writes a region of N Patient records with the generator (healthlink.demogen, Patients
only, default error model: ID typos and transpositions, missing IDs, Tibetan
transliteration variants, changed phones, birth days off by 1-3, moves; namesakes are
common), reads the Patient NDJSON back, extracts flat records, trains (unsupervised),
batch-links with Splink and clusters at the auto-link threshold, and scores the result
against ground-truth.csv.  Prints precision / recall / F1 of the pairs and of the clusters
at the auto-link threshold, the review-queue size (pairs between the thresholds), the
missed pairs by error, timings and the machine.  Figures go to docs/benchmarks.md.
With ``--engine spark`` the link runs on Splink's Spark backend (local mode, started before
the link is timed) with the model trained on DuckDB, as `healthlink link --engine spark` will.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import shutil
import statistics
import tempfile
import time
from itertools import combinations
from pathlib import Path

import orjson

from healthlink.demogen import Options, write_region
from healthlink.demogen.stream import read_ground_truth
from healthlink.empi import REGION, Scorer, flat_record, link_batch, train
from healthlink.settings import Settings


def pairs_of(groups: dict[str, list[str]]) -> set[tuple[str, str]]:
    return {(x, y) for ids in groups.values() for x, y in combinations(sorted(ids), 2)}


def prf(got: set, truth: set) -> str:
    tp = len(got & truth)
    p = tp / len(got) if got else 0.0
    r = tp / len(truth)
    f = 2 * p * r / (p + r) if p + r else 0.0
    return f"TP {tp:,} FP {len(got) - tp:,} FN {len(truth) - tp:,}  P {p:.4f}  R {r:.4f}  F1 {f:.4f}"


def prf_dict(got: set, truth: set) -> dict:
    tp = len(got & truth)
    p = tp / len(got) if got else 0.0
    r = tp / len(truth) if truth else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"tp": tp, "fp": len(got) - tp, "fn": len(truth) - tp, "precision": round(p, 4),
            "recall": round(r, 4), "f1": round(f, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int, nargs="?", default=20_000)
    ap.add_argument("u_pairs", type=float, nargs="?", default=1e7)
    ap.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb")
    args = ap.parse_args()
    measure(args.n, args.u_pairs, engine=args.engine)


def measure(n: int = 20_000, u_pairs: float = 1e7, *, engine: str = "duckdb") -> dict:
    """Generate, train, link and score the region of ``n`` records (see the module doc); prints as
    it goes and returns the figures: pairs and clusters at the auto-link threshold, review queue,
    timings."""
    fig: dict = {"records": n, "u_max_pairs": u_pairs, "engine": engine}
    settings = Settings()
    auto, review = settings.empi_auto_link_threshold, settings.empi_review_threshold
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}; "
          f"N = {n:,} Patient records, seed 1, thresholds auto-link {auto} / review {review}, "
          f"link engine {engine}")
    out = Path(tempfile.mkdtemp(prefix="empi-region-"))
    try:
        t = time.perf_counter()
        write_region(Options(patients=n, clinical=False), out)
        t_gen = time.perf_counter() - t
        t = time.perf_counter()
        records = [flat_record(orjson.loads(line)) for f in sorted(out.glob("*/Patient.ndjson"))
                   for line in f.read_bytes().splitlines()]
        t_extract = time.perf_counter() - t
        truth_rows = read_ground_truth(out / "ground-truth.csv")
    finally:
        shutil.rmtree(out)
    person = {r["patient_id"]: r["person_key"] for r in truth_rows}
    errors = {r["patient_id"]: r["errors"].split(";") if r["errors"] else [] for r in truth_rows}
    by_person: dict[str, list[str]] = collections.defaultdict(list)
    for rid, key in person.items():
        by_person[key].append(rid)
    truth = pairs_of(by_person)
    print(f"generate {t_gen:.1f} s; extract {len(records):,} flat records {t_extract:.1f} s "
          f"({t_extract / len(records) * 1e6:.0f} us each); {len(by_person):,} persons, {len(truth):,} true pairs")

    t = time.perf_counter()
    model = train([records], REGION, u_max_pairs=u_pairs, seed=1)
    t_train = time.perf_counter() - t
    print(f"train: {t_train:.1f} s {model.metadata['timings_s']}, prior {model.prior:.3g}")
    if engine == "spark":
        from healthlink.empi.spark import spark_session

        t = time.perf_counter()
        session = spark_session()
        print(f"spark {session.version} ({session.sparkContext.master}) started in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    res = link_batch([records], model, REGION, auto_link=auto, review=review, engine=engine)
    t_link = time.perf_counter() - t
    print(f"link ({engine}): {t_link:.1f} s {res.timings_s}")
    print(f"batch time (train + link): {t_train + t_link:.1f} s; link alone {t_link:.1f} s")
    fig.update(generate_seconds=round(t_gen, 1), train_seconds=round(t_train, 2), link_seconds=round(t_link, 2),
               persons=len(by_person), true_pairs=len(truth), auto_link=auto, review=review)

    links = {(min(p.left, p.right), max(p.left, p.right)) for p in res.links()}
    det = sum(p.deterministic for p in res.pairs)
    print(f"pairs at auto-link ({auto}), deterministic included: {prf(links, truth)}")
    fig["pairs_at_auto_link"] = prf_dict(links, truth)
    clusters: dict[str, list[str]] = collections.defaultdict(list)
    for rid, c in res.clusters.items():
        clusters[c].append(rid)
    in_clusters = pairs_of(clusters)
    print(f"clusters at auto-link: {len(clusters):,} for {len(by_person):,} persons; "
          f"pairs in clusters: {prf(in_clusters, truth)}")
    fig["clusters_at_auto_link"] = prf_dict(in_clusters, truth)
    between = [p for p in res.pairs if p.match_probability < auto]
    queue = res.review_pairs()
    true_in_queue = sum((min(p.left, p.right), max(p.left, p.right)) in truth for p in queue)
    print(f"deterministic links: {det:,}; pairs between thresholds: {len(between):,}; review queue "
          f"(records not already in one cluster): {len(queue):,}, of which true pairs {true_in_queue:,}")
    fig.update(between_thresholds=len(between), review_queue=len(queue))

    missed = collections.Counter()
    for x, y in truth - in_clusters:
        missed.update(set(errors[x]) | set(errors[y]) or {"(no error)"})
    by_id = {r["record_id"]: r for r in records}
    wrong = collections.Counter()
    for x, y in in_clusters - truth:
        # The generator draws the ID's 3-digit sequence at random, so two persons of one county,
        # birth date and sex can get the same valid ID; real IDs are unique.
        a, b = by_id[x], by_id[y]
        same_id = a["resident_id_valid"] and a["resident_id"] == b["resident_id"]
        wrong["same valid resident ID (two persons given one ID)" if same_id else "other"] += 1
    keys_by_id: dict[str, set[str]] = collections.defaultdict(set)
    for r in records:
        if r["resident_id_valid"]:
            keys_by_id[r["resident_id"]].add(person[r["record_id"]])
    shared = sum(len(k) > 1 for k in keys_by_id.values())
    print(f"missed true pairs by error on either record: {dict(missed.most_common())}")
    print(f"false pairs in clusters: {dict(wrong)}; valid resident IDs the generator gave to more than "
          f"one person: {shared:,} of {len(keys_by_id):,}")

    scorer = Scorer(model, REGION)
    sample = sorted(truth)[:5000]
    lat = []
    for x, y in sample:
        t = time.perf_counter()
        scorer.score(by_id[x], by_id[y])
        lat.append((time.perf_counter() - t) * 1e6)
    lat.sort()
    print(f"pure-Python scorer: p50 {statistics.median(lat):.0f} us, p99 {lat[int(0.99 * len(lat))]:.0f} us "
          f"per pair ({len(lat):,} true pairs)")
    fig.update(scorer_p50_us=round(statistics.median(lat), 1), scorer_p99_us=round(lat[int(0.99 * len(lat))], 1))
    return fig


if __name__ == "__main__":
    main()
