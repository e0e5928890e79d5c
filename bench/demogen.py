"""Demo region generation speed and size: `python bench/demogen.py [N] [OUT]`.

Prints resources/s for generation alone and for generation + NDJSON files, bytes per
resource, and the extrapolation to the reference prefecture (N = 1,270,849 Patient
records).  Figures go to docs/demo-region.md."""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from healthlink.demogen import Options, generate, write_region

FULL = 1_270_849


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    measure(n, Path(sys.argv[2]) if len(sys.argv) > 2 else None)


def measure(n: int = 10_000, out: Path | None = None) -> dict:
    """Generate N Patient records (counted), then write them as NDJSON under ``out`` (a temporary
    directory, removed after, if None); prints as it goes and returns the figures."""
    keep = out is not None
    out = out or Path(tempfile.mkdtemp(prefix="demogen-"))
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, "
          f"python {platform.python_version()}; N = {n:,} Patient records")
    t = time.perf_counter()
    count = sum(1 for _ in generate(Options(patients=n)))
    gen = time.perf_counter() - t
    t = time.perf_counter()
    w = write_region(Options(patients=n), out)
    wrote = time.perf_counter() - t
    per_record, per_res = w.resources / n, w.bytes / w.resources
    print(f"generate: {count:,} resources in {gen:.2f} s = {count / gen:,.0f} resources/s")
    print(f"generate + NDJSON: {w.bytes:,} bytes in {wrote:.2f} s = {w.resources / wrote:,.0f} resources/s, "
          f"{per_res:.0f} bytes/resource, {per_record:.2f} resources/record")
    full = FULL * per_record
    print(f"full size (extrapolated): {full / 1e6:.1f} M resources, {full * per_res / 1e9:.1f} GB NDJSON, "
          f"{full / (w.resources / wrote) / 60:.0f} min to write")
    if not keep:
        shutil.rmtree(out)
    return {"patients": n, "resources": count, "generate_per_s": round(count / gen),
            "write_per_s": round(w.resources / wrote), "bytes_per_resource": round(per_res),
            "resources_per_record": round(per_record, 2), "full_resources_extrapolated": round(full),
            "full_ndjson_bytes_extrapolated": round(full * per_res),
            "full_write_minutes_extrapolated": round(full / (w.resources / wrote) / 60)}


if __name__ == "__main__":
    main()
