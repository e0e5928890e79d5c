"""The region as one stream, and its NDJSON form.

``generate`` yields ``(institution_id, resource)``: first the shared directory
(Organizations, institution ``None``), then each institution's staff, then persons one
at a time, each person's Patient records followed by their clinical history.  Nothing but
a fixed-size bitmap of the resident IDs already issued (kept unique, as real ones are) is
kept between persons, so memory stays flat whatever ``patients`` is.

``write_region`` lays the stream out as one NDJSON file per institution and resource
type — ``DIR/<institution>/<Type>.ndjson``, the directory ``DIR/_directory/`` for the
shared Organizations — so each institution's upload is one folder; plus
``DIR/ground-truth.csv`` (Patient record -> person) for the EMPI work.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import IO

import orjson

from healthlink.demogen.clinical import history
from healthlink.demogen.errormodel import ErrorRates
from healthlink.demogen.ids import resident_id
from healthlink.demogen.people import PatientRecord, Person, make_person, records_of
from healthlink.demogen.region import COUNTIES, region_resources

DIRECTORY = "_directory"
GROUND_TRUTH_COLUMNS = ("patient_id", "institution_id", "person_key", "errors")


class IssuedIds:
    """Which resident IDs of the region are taken: one bit per (county, birth date, sequence
    number), a fixed 27 MB whatever the region's size, so memory stays flat."""

    EPOCH = date(1930, 1, 1)
    DAYS = 36_600  # birth dates 1930-2030

    def __init__(self) -> None:
        self.divisions = {c.division: n for n, c in enumerate(COUNTIES)}
        self.bits = bytearray(len(self.divisions) * self.DAYS * 1000 // 8 + 1)

    def _bit(self, rid: str) -> int:
        born = date(int(rid[6:10]), int(rid[10:12]), int(rid[12:14]))
        return (self.divisions[rid[:6]] * self.DAYS + (born - self.EPOCH).days) * 1000 + int(rid[14:17])

    def __contains__(self, rid: str) -> bool:
        b = self._bit(rid)
        return bool(self.bits[b >> 3] & (1 << (b & 7)))

    def add(self, rid: str) -> None:
        b = self._bit(rid)
        self.bits[b >> 3] |= 1 << (b & 7)


def unique_id(person: Person, issued: IssuedIds) -> Person:
    """The person, with the next free sequence number (same parity, so the same sex) if
    another person already holds the drawn resident ID: two persons born on the same day
    in the same county draw from only 500 numbers per sex."""
    rid = person.resident_id
    seq = int(rid[14:17])
    for step in range(500):
        if rid not in issued:
            break
        rid = resident_id(person.county.division, person.birth, (seq + 2 * (step + 1)) % 1000)
    issued.add(rid)
    return person if rid == person.resident_id else replace(person, resident_id=rid)


@dataclass(frozen=True)
class Options:
    patients: int = 2_000  # Patient records (not persons), as in every issue
    seed: int = 1
    errors: ErrorRates = field(default_factory=ErrorRates)
    clinical: bool = True  # False: Patients only (EMPI tests)


def patient_records(opts: Options) -> Iterator[PatientRecord]:
    made, index = 0, 0
    issued = IssuedIds()  # real resident IDs are unique
    while made < opts.patients:
        person = unique_id(make_person(opts.seed, index), issued)
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
