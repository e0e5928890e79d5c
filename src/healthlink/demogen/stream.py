"""The region as one stream, and its NDJSON form.

``generate`` yields ``(institution_id, resource)``: first the shared directory
(Organizations, institution ``None``), then each institution's staff, then persons one
at a time, each person's Patient records followed by their clinical history.  Nothing is
kept between persons, so memory stays flat whatever ``patients`` is.

``write_region`` lays the stream out as one NDJSON file per institution and resource
type — ``DIR/<institution>/<Type>.ndjson``, the directory ``DIR/_directory/`` for the
shared Organizations — so each institution's upload is one folder; plus
``DIR/ground-truth.csv`` (Patient record -> person) for the EMPI work.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

from healthlink.demogen.clinical import history
from healthlink.demogen.errormodel import ErrorRates
from healthlink.demogen.people import PatientRecord, make_person, records_of
from healthlink.demogen.region import region_resources

DIRECTORY = "_directory"
GROUND_TRUTH_COLUMNS = ("patient_id", "institution_id", "person_key", "errors")


@dataclass(frozen=True)
class Options:
    patients: int = 2_000  # Patient records (not persons), as in every issue
    seed: int = 1
    errors: ErrorRates = field(default_factory=ErrorRates)
    clinical: bool = True  # False: Patients only (EMPI tests)


def patient_records(opts: Options) -> Iterator[PatientRecord]:
    made, index = 0, 0
    while made < opts.patients:
        person = make_person(opts.seed, index)
        for rec in records_of(opts.seed, person, opts.errors, first_record=made, limit=opts.patients - made):
            made += 1
            yield rec
        index += 1


def generate(opts: Options, *, on_record: Callable[[PatientRecord], None] | None = None,
             ) -> Iterator[tuple[str | None, dict]]:
    """The whole region; ``on_record(PatientRecord)`` sees each Patient record (ground truth)."""
    yield from region_resources(opts.seed)
    for rec in patient_records(opts):
        if on_record:
            on_record(rec)
        yield rec.institution, rec.resource
        if opts.clinical:
            for res in history(opts.seed, rec):
                yield rec.institution, res


def dumps(resource: dict) -> bytes:
    return orjson.dumps(resource) + b"\n"


@dataclass
class Written:
    resources: int = 0
    patients: int = 0
    bytes: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


def write_region(opts: Options, out: Path) -> Written:
    """Write the region under ``out`` (created; existing files are replaced)."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[tuple[str, str], IO[bytes]] = {}
    stats = Written()
    with (out / "ground-truth.csv").open("w", newline="", encoding="utf-8") as gt_file:
        gt = csv.writer(gt_file, lineterminator="\n")
        gt.writerow(GROUND_TRUTH_COLUMNS)

        def truth(rec: PatientRecord) -> None:
            gt.writerow((rec.patient_id, rec.institution, rec.person.key, ";".join(rec.errors)))
            stats.patients += 1

        try:
            for inst, res in generate(opts, on_record=truth):
                key = (inst or DIRECTORY, res["resourceType"])
                f = files.get(key)
                if f is None:
                    (out / key[0]).mkdir(exist_ok=True)
                    f = files[key] = (out / key[0] / f"{key[1]}.ndjson").open("wb")
                line = dumps(res)
                f.write(line)
                stats.resources += 1
                stats.bytes += len(line)
                stats.by_type[key[1]] = stats.by_type.get(key[1], 0) + 1
        finally:
            for f in files.values():
                f.close()
    return stats


def read_ground_truth(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))
