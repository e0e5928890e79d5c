"""Prefecture-scale demo region generator (modelled on Yushu, Qinghai).

Public surface:

* :class:`Options` / :class:`ErrorRates` — size, seed and the error model's rates;
* :func:`generate` — a stream of ``(institution_id, resource)`` (``None`` for the shared
  directory: Organizations), memory flat whatever the size;
* :func:`write_region` — NDJSON files plus the ground truth, see docs/demo-region.md;
* :func:`load_region` — the same stream written into the database through the repository.
"""

from healthlink.demogen.errormodel import ErrorRates
from healthlink.demogen.load import load_region
from healthlink.demogen.stream import Options, generate, write_region

__all__ = ["ErrorRates", "Options", "generate", "load_region", "write_region"]
