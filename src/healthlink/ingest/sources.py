"""Reading an upload's files: NDJSON (one resource a line) and Bundles (one per file),
plain or gzip-compressed.  A record keeps its file, line (NDJSON) or entry number
(Bundle) and raw text, so a rejected one can be quarantined as it arrived."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson


@dataclass
class Record:
    file: str
    line: int  # 1-based line (NDJSON) or entry number (Bundle)
    raw: str
    resource: dict | None  # None when the text is not a JSON object
    full_url: str | None = None  # Bundle.entry.fullUrl
    error: str | None = None


def _open(path: Path):  # noqa: ANN202
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def is_ndjson(path: Path) -> bool:
    return path.name.removesuffix(".gz").endswith(".ndjson")


def read_records(path: Path) -> Iterator[Record]:
    name = path.name
    if is_ndjson(path):
        with _open(path) as f:
            for n, raw in enumerate(f, 1):
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not text.strip():
                    continue
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    yield Record(name, n, text, None, error=f"not JSON: {exc}")
                    continue
                yield (Record(name, n, text, obj) if isinstance(obj, dict)
                       else Record(name, n, text, None, error="a line must be one JSON object"))
        return
    with _open(path) as f:
        data = f.read()
    try:
        bundle = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        yield Record(name, 0, data.decode("utf-8", "replace")[:100000], None, error=f"not JSON: {exc}")
        return
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        # a single resource in a .json file
        yield Record(name, 1, data.decode("utf-8", "replace"),
                     bundle if isinstance(bundle, dict) else None,
                     error=None if isinstance(bundle, dict) else "a file must hold a JSON object")
        return
    for n, entry in enumerate(bundle.get("entry") or [], 1):
        res = entry.get("resource") if isinstance(entry, dict) else None
        try:
            raw = orjson.dumps(res if res is not None else entry).decode()
        except TypeError:
            yield Record(name, n, "", None, error="the entry is nested deeper than 254 levels")
            continue
        if not isinstance(res, dict):
            yield Record(name, n, raw, None, error="a Bundle entry without a resource")
            continue
        yield Record(name, n, raw, res, full_url=entry.get("fullUrl"))
