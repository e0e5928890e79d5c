"""Real-time EMPI linking against a full region: `python bench/empi_realtime.py [N] [M] [--db sqlite|postgresql]`.

Goal (issue 4): p99 <= 50 ms per registration against a region of 1.27 M Patient records.

1. Generates N Patient records (seed 1, the default error model, no clinical history;
   generation not timed) and fills the master patient index with all but M of them (every
   N/M-th record is held back):
   `person_link` (flat record, Person = the generator's person) and the candidate index
   `person_block`, with COPY / executemany (`healthlink.db.bulk_insert`), as a region that
   has been linked already.
2. Registers the M held-back records one at a time through the scoped repository
   (`Repository.create` of a Patient by the institution's system: validation, resource and
   index rows, linking in the same transaction, the audit record committed before it
   returns) and prints the latency percentiles of the whole registration and of the
   linking step inside it, and how the M records were linked against the ground truth.
3. With --relink, times `healthlink link` (the batch re-link, DuckDB, with stable Person ids)
   over the whole index, twice.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from healthlink.access import Actor, RequestContext
from healthlink.access.scopes import parse_scopes
from healthlink.db import bulk_insert
from healthlink.db import tables as t
from healthlink.db.migrate import upgrade
from healthlink.demogen import Options
from healthlink.demogen.stream import patient_records
from healthlink.empi import flat_record
from healthlink.identity import block_keys
from healthlink.runtime import Platform
from healthlink.settings import Settings

LINK_COLS = ("patient_id", "person_id", "institution_id", "assurance", "method", "score", "record", "updated")


def pct(xs: list[float], q: float) -> float:
    """The q-th percentile by the nearest-rank method (never above the largest value, unlike the
    interpolating ``statistics.quantiles`` on a few hundred samples)."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, -(-q * len(s) // 100) - 1))] if s else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=1_270_849)
    ap.add_argument("m", nargs="?", type=int, default=2_000)
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="postgresql")
    ap.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    ap.add_argument("--relink", action="store_true",
                    help="then time `healthlink link` (identity.relink, DuckDB) over the whole index")
    a = ap.parse_args()
    measure(a.n, a.m, db=a.db, pg=a.pg, relink_runs=2 if a.relink else 0)


def measure(n: int = 1_270_849, m: int = 2_000, *, db: str = "postgresql",
            pg: str = "postgresql+psycopg://postgres@127.0.0.1:5432", relink_runs: int = 0,
            database: str | None = None) -> dict:
    """Fill the index with n - m records, register the m others one at a time, and (``relink_runs``
    times) time ``healthlink link``; on PostgreSQL in the database ``database`` (default
    ``bench_empi_<random>``; created, dropped after).  Prints as it goes; returns the figures."""
    a = argparse.Namespace(n=n, m=m, db=db, pg=pg)
    out: dict = {"index_records": n - m, "registrations": m, "database": db}
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}; "
          f"index of {a.n - a.m:,} Patient records, {a.m:,} registrations, {a.db}")
    tmp = Path(tempfile.mkdtemp(prefix="empi-rt-"))
    name = database or f"bench_empi_{uuid.uuid4().hex[:8]}"
    if a.db == "postgresql":
        import psycopg

        admin = a.pg.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            c.execute(f'CREATE DATABASE "{name}"')
        url = f"{a.pg}/{name}"
    else:
        url = f"sqlite:///{tmp / 'bench.db'}"
    plat = Platform.start(Settings(database_url=url, data_dir=tmp, secret_key="bench-" + "x" * 40,
                                   log_level="WARNING"))
    try:
        upgrade(plat.db)
        t0 = time.perf_counter()
        held: list[tuple[dict, str, str]] = []  # the M registrations: (Patient, institution, person)
        person_of: dict[str, str] = {}
        links: list[tuple] = []
        blocks: list[tuple[str, str]] = []
        filled = 0
        now = time.time_ns() // 1000

        def flush() -> None:
            nonlocal links, blocks
            with plat.db.write() as conn:
                bulk_insert(conn, t.person_link, LINK_COLS, links)
                bulk_insert(conn, t.person_block, ("key", "patient_id"), blocks, ignore_conflicts=True)
            links, blocks = [], []

        every = max(a.n // a.m, 2)  # the registrations are spread over the region: most of their
        # persons have other records in the index already
        for i, rec in enumerate(patient_records(Options(patients=a.n, clinical=False))):
            person_of[rec.patient_id] = rec.person.key
            if i % every == every - 1 and len(held) < a.m:
                held.append((rec.resource, rec.institution, rec.person.key))
                continue
            flat = dict(flat_record(rec.resource))
            flat["institution"] = rec.institution
            links.append((rec.patient_id, rec.person.key, rec.institution, "level3", "probabilistic", None,
                          orjson.dumps(flat).decode(), now))
            blocks.extend((k, rec.patient_id) for k in dict.fromkeys(block_keys(flat)))
            filled += 1
            if len(links) >= 20_000:
                flush()
        flush()
        plat.db.note_bulk_write(filled)
        if a.db == "postgresql":
            with plat.db.write() as conn:
                conn.exec_driver_sql("ANALYZE person_link")
                conn.exec_driver_sql("ANALYZE person_block")
        print(f"filled the index with {filled:,} records in {time.perf_counter() - t0:.0f} s (not timed below)")

        link_ms: list[float] = []
        real = plat.identity.patient_written

        def timed(conn, ctx, patient):  # noqa: ANN001, ANN202
            s = time.perf_counter()
            try:
                return real(conn, ctx, patient)
            finally:
                link_ms.append((time.perf_counter() - s) * 1000)

        plat.services.linker.patient_written = timed  # type: ignore[method-assign, union-attr]
        known = set(person_of.values())
        total_ms: list[float] = []
        outcomes = {"same person as the generator's": 0, "another person": 0, "new Person": 0}
        for body, inst, person in held:
            actor = Actor("client", f"his:{inst}", f"HIS {inst}", inst, frozenset({"his_client"}),
                          parse_scopes("system/*.cruds"))
            repo = plat.repository(RequestContext(actor=actor, address="127.0.0.1", purpose_of_use="TREAT"))
            body = {k: v for k, v in body.items() if k != "id"}
            s = time.perf_counter()
            w = repo.create(body, res_type="Patient")
            total_ms.append((time.perf_counter() - s) * 1000)
            with plat.db.read() as conn:
                got = plat.identity.person_of(conn, w.stored.res_id)
            if got == person:
                outcomes["same person as the generator's"] += 1
            elif got in known:
                outcomes["another person"] += 1
            else:
                outcomes["new Person"] += 1
        for key, label, xs in (("registration", "registration (create + link + audit)", total_ms),
                               ("linking", "linking step alone", link_ms)):
            out[key] = {"p50_ms": round(pct(xs, 50), 2), "p90_ms": round(pct(xs, 90), 2),
                        "p95_ms": round(pct(xs, 95), 2), "p99_ms": round(pct(xs, 99), 2),
                        "max_ms": round(max(xs), 2), "count": len(xs)}
            print(f"{label}: p50 {pct(xs, 50):.1f} ms  p95 {pct(xs, 95):.1f} ms  p99 {pct(xs, 99):.1f} ms  "
                  f"max {max(xs):.1f} ms  ({len(xs):,} registrations)")
        print("linked:", ", ".join(f"{k} {v:,}" for k, v in outcomes.items()),
              "(a record whose person has no earlier record founds a new Person, as it should)")
        out["linked"] = outcomes
        if relink_runs:
            from healthlink.identity.relink import relink

            s = time.perf_counter()
            rep = relink(plat.identity)
            took = time.perf_counter() - s
            out["relink"] = {"records": rep.records, "seconds": round(took, 2), "persons": rep.clusters,
                             "patients_moved": rep.patients_moved,
                             "timings_s": {k: round(v, 2) for k, v in rep.timings_s.items()}}
            print(f"healthlink link over {rep.records:,} records: {took:.1f} s "
                  f"({', '.join(f'{k} {v:.1f} s' for k, v in rep.timings_s.items())}); {rep.clusters:,} Persons, "
                  f"{rep.persons_kept:,} kept their id, {rep.persons_new:,} new, {rep.patients_moved:,} Patients moved")
        if relink_runs > 1:
            s = time.perf_counter()
            rep = relink(plat.identity)
            out["relink_again"] = {"seconds": round(time.perf_counter() - s, 2), "patients_moved": rep.patients_moved}
            print(f"again: {time.perf_counter() - s:.1f} s, {rep.patients_moved:,} Patients moved")
    finally:
        plat.close()
        if a.db == "postgresql":
            import psycopg

            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return out


if __name__ == "__main__":
    main()
