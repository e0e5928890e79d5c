"""Train the EMPI model shipped with the platform: `python tools/train_empi_model.py [N]`.

Generates a demo region of N Patient records (seed 1, the default error model, no clinical
history), extracts flat records and trains the region comparison set with Splink 5 on
DuckDB, unsupervised (the generator's ground truth is not used).  Writes
src/healthlink/identity/data/model-region-v1.json: the model real-time linking uses until
`healthlink link --train` stores one trained on the platform's own Patients
(docs/identity.md).  The data is our own generated data, so the artefact can be committed.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import orjson

from healthlink.demogen import Options, write_region
from healthlink.empi import REGION, flat_record, train

OUT = Path(__file__).resolve().parents[1] / "src" / "healthlink" / "identity" / "data" / "model-region-v1.json"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    tmp = Path(tempfile.mkdtemp(prefix="empi-train-"))
    try:
        write_region(Options(patients=n, clinical=False), tmp)
        records = [flat_record(orjson.loads(line)) for f in sorted(tmp.glob("*/Patient.ndjson"))
                   for line in f.read_bytes().splitlines()]
    finally:
        shutil.rmtree(tmp)
    model = train([records], REGION, u_max_pairs=1e7, seed=1, version="region-v1-default")
    model.metadata["trained_on"] = f"generated demo region, N = {n:,} Patient records, seed 1"
    model.save(OUT)
    print(f"wrote {OUT} ({model.version}, prior {model.prior:.3g}, {model.metadata['train_s']} s)")


if __name__ == "__main__":
    main()
