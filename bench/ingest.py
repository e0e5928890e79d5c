"""Bulk ingest throughput: `python bench/ingest.py [N] [PG_URL]`.

Generates a demo region of N Patient records (generation is NOT timed), then times
`healthlink.ingest.ingest_files` for every institution's folder (pass 1 checks + reference
resolution + pass 2 batched writes with search indexing, source keys and audit records,
at production durability) into a fresh SQLite file and into a fresh PostgreSQL database.
On PostgreSQL it then copies exactly the rows the pipeline wrote (resource, resource_version
and idx_* rows, read back beforehand so nothing is computed in the timed part) into bare
tables of the same shape with `COPY ... FROM STDIN`: the physical limit of this machine for
that work; and again into tables with the platform's indexes and constraints (what the database
itself spends on those rows).  EMPI batch linking is not part of it (the EMPI is a later issue; new Patients
are only queued in `empi_pending`, which the timing includes).  Prints resources/s.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from healthlink.db.migrate import upgrade
from healthlink.demogen import Options, write_region
from healthlink.demogen.stream import DIRECTORY
from healthlink.ingest import ingest_files
from healthlink.runtime import Platform
from healthlink.settings import Settings

QUARANTINED: dict[str, int] = {}  # by database URL: the generator's error model trips the rules
TABLES = ("resource", "resource_version", "idx_token", "idx_string", "idx_date", "idx_reference",
          "idx_quantity", "idx_number", "idx_uri")


def _load_directory(plat: Platform, folder: Path) -> int:
    import orjson

    items = [(orjson.loads(line), None) for f in sorted(folder.glob("*.ndjson"))
             for line in f.read_bytes().splitlines() if line.strip()]
    items = [(r, r.get("id")) for r, _ in items]
    repo = plat.system_repository("bench")
    with plat.db.write() as conn:
        repo.create_many_in(conn, items)
    return len(items)


def _ingest_folder(args: tuple[str, str, str]) -> tuple[int, int]:
    """One institution's upload, in a worker process with a platform of its own."""
    url, folder, data_dir = args
    plat = Platform.start(Settings(database_url=url, data_dir=Path(data_dir), secret_key="bench-" + "x" * 40,
                                   log_level="WARNING"))
    try:
        rep = ingest_files(plat.services, sorted(Path(folder).glob("*.ndjson")), institution=Path(folder).name,
                           batch_size=1000)
        return rep.totals()["accepted"], rep.totals()["quarantined"]
    finally:
        plat.close()


def run(url: str, region: Path, data_dir: Path, workers: int = 1) -> tuple[int, float, Platform]:
    plat = Platform.start(Settings(database_url=url, data_dir=data_dir, secret_key="bench-" + "x" * 40,
                                   log_level="WARNING"))
    upgrade(plat.db)
    _load_directory(plat, region / DIRECTORY)
    # largest institutions first, so parallel workers finish together
    folders = sorted((p for p in region.iterdir() if p.is_dir() and p.name != DIRECTORY),
                     key=lambda p: -sum(f.stat().st_size for f in p.glob("*.ndjson")))
    n = 0
    t = time.perf_counter()
    if workers <= 1:
        for folder in folders:
            rep = ingest_files(plat.services, sorted(folder.glob("*.ndjson")), institution=folder.name,
                               batch_size=1000)
            n += rep.totals()["accepted"]
            QUARANTINED[url] = QUARANTINED.get(url, 0) + rep.totals()["quarantined"]
    else:  # institutions uploading at the same time, one process each (as over $import)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawned, not forked: this process's platform threads (ledger sequencer, SQLite
        # checkpointer) may hold SQLite's own mutex at the fork, and a forked child then hangs
        # in its first sqlite3.connect (seen: both workers stuck there, the run never ended)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for accepted, quarantined in pool.map(_ingest_folder, [(url, str(f), str(data_dir)) for f in folders]):
                n += accepted
                QUARANTINED[url] = QUARANTINED.get(url, 0) + quarantined
    return n, time.perf_counter() - t, plat


def raw_copy(plat: Platform, *, indexed: bool = False) -> tuple[int, float]:
    """COPY the rows the pipeline wrote into bare tables of the same shape (no indexes), or with
    ``indexed`` into tables with the same indexes and constraints as the platform's (what the
    database itself spends on those rows, with no pipeline in front of it)."""
    import psycopg

    dsn = str(plat.db.url).replace("postgresql+psycopg://", "postgresql://")
    prefix, like = ("indexed", "INCLUDING ALL") if indexed else ("bare", "INCLUDING DEFAULTS")
    with psycopg.connect(dsn) as conn, tempfile.TemporaryDirectory(prefix="bench-copy-") as spool:
        rows = 0
        for table in TABLES:  # spooled to disk, not held in memory (1.44 M resources: ~5 GB of rows)
            with open(Path(spool) / table, "wb") as out, conn.cursor().copy(f"COPY {table} TO STDOUT") as cp:
                for chunk in cp:
                    out.write(chunk)
                    rows += bytes(chunk).count(b"\n")
            conn.execute(f"CREATE TABLE {prefix}_{table} (LIKE {table} {like})")
        conn.commit()
        conn.execute("CHECKPOINT")  # the table set-up's writes are not part of the timing
        t = time.perf_counter()
        for table in TABLES:
            with open(Path(spool) / table, "rb") as f, conn.cursor().copy(f"COPY {prefix}_{table} FROM STDIN") as cp:
                while block := f.read(1 << 20):
                    cp.write(block)
        conn.commit()
        return rows, time.perf_counter() - t


def measure(n: int, pg: str = "postgresql+psycopg://postgres@127.0.0.1:5432", *, workers: int = 1,
            only: str | None = None, database: str | None = None, log=print) -> dict:  # noqa: ANN001
    """Generate N Patient records (not timed) and ingest them into SQLite and/or a fresh PostgreSQL
    database (``database``, default ``bench_ingest_<random>``; created, dropped after), then the raw
    COPY of the same rows on PostgreSQL; returns the figures.  ``log`` sees the lines printed."""
    import psycopg

    out: dict = {"patients": n, "workers": workers}
    QUARANTINED.clear()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        t = time.perf_counter()
        stats = write_region(Options(patients=n), tmp / "region")
        gen_s = time.perf_counter() - t
        out["generated"] = {"resources": stats.resources, "bytes": stats.bytes, "seconds": round(gen_s, 2),
                            "resources_per_s": round(stats.resources / gen_s)}
        log(f"generated {stats.resources:,} resources, {stats.bytes / 1e6:,.0f} MB of NDJSON "
            f"in {gen_s:.0f} s (not timed below)")
        if only != "postgresql":
            count, secs, plat = run(f"sqlite:///{tmp / 'bench.db'}", tmp / "region", tmp / "sq", workers)
            plat.close()
            size = (tmp / "bench.db").stat().st_size
            out["sqlite"] = {"resources": count, "seconds": round(secs, 2), "resources_per_s": round(count / secs),
                             "quarantined": sum(QUARANTINED.values()), "database_bytes": size,
                             "bytes_per_resource": round(size / count)}
            log(f"SQLite:     {count:,} resources in {secs:.1f} s = {count / secs:,.0f} resources/s "
                f"({sum(QUARANTINED.values()):,} records quarantined); database {size / 1e6:,.0f} MB "
                f"= {size / count:,.0f} bytes/resource")
            (tmp / "bench.db").unlink()
        if only == "sqlite":
            return out
        name = database or f"bench_ingest_{uuid.uuid4().hex[:8]}"
        admin = pg.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            c.execute(f'CREATE DATABASE "{name}"')
        try:
            QUARANTINED.clear()
            count, secs, plat = run(f"{pg}/{name}", tmp / "region", tmp / "pg", workers)
            with psycopg.connect(admin, autocommit=True) as c:
                size = c.execute("SELECT pg_database_size(%s)", (name,)).fetchone()[0]
            log(f"PostgreSQL: {count:,} resources in {secs:.1f} s = {count / secs:,.0f} resources/s; "
                f"database {size / 1e6:,.0f} MB = {size / count:,.0f} bytes/resource")
            rows, csecs = raw_copy(plat)
            _, isecs = raw_copy(plat, indexed=True)
            plat.close()
            out["postgresql"] = {"resources": count, "seconds": round(secs, 2), "resources_per_s": round(count / secs),
                                 "quarantined": sum(QUARANTINED.values()), "database_bytes": size,
                                 "bytes_per_resource": round(size / count)}
            out["raw_copy"] = {"rows": rows, "seconds": round(csecs, 3), "resources_per_s": round(count / csecs)}
            out["indexed_copy"] = {"rows": rows, "seconds": round(isecs, 3), "resources_per_s": round(count / isecs)}
            out["share_of_copy"] = round((count / secs) / (count / csecs), 4)
            log(f"raw COPY of the same {rows:,} rows (resources + versions + index rows): {csecs:.2f} s "
                f"= {count / csecs:,.0f} resources/s; pipeline reaches "
                f"{100 * (count / secs) / (count / csecs):.1f}% of it")
            log(f"COPY of the same rows into tables with the platform's indexes and constraints: {isecs:.2f} s "
                f"= {count / isecs:,.0f} resources/s (the database's own share of the work)")
        finally:
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("patients", nargs="?", type=int, default=2_000, help="N, Patient records")
    ap.add_argument("pg", nargs="?", default="postgresql+psycopg://postgres@127.0.0.1:5432",
                    help="PostgreSQL server URL (a fresh database is created and dropped)")
    ap.add_argument("--workers", type=int, default=1,
                    help="institutions uploading at the same time (one process each)")
    ap.add_argument("--only", choices=("sqlite", "postgresql"), help="run one database only")
    a = ap.parse_args()
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}; "
          f"N = {a.patients:,} Patient records; {a.workers} upload(s) at a time")
    measure(a.patients, a.pg, workers=a.workers, only=a.only)


if __name__ == "__main__":
    main()
