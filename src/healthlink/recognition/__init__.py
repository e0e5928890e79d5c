"""Mutual recognition of examination and laboratory results (issue 7).

Core layer (no HTTP, no tables yet), above ``identity`` and ``consent``, below ``ingest``;
docs/recognition.md.  Public surface so far (item 1, the catalogue):

* :func:`load` — read and validate a versioned catalogue file (default: the bundled
  ``data/catalogue-v1.json``); :func:`parse` does the same for an already-decoded object;
  :class:`CatalogueError` (an ``Invalid``) names each bad entry and field;
* :class:`Catalogue` — ``by_code(system, code)`` (LOINC or a mapped local code),
  ``by_id``, ``equivalents(item)``; :class:`Item`, :class:`Source`, :class:`Coding`;
* :func:`valid_until` and :func:`is_valid` — the validity window in the region's calendar.
"""

from healthlink.recognition.catalogue import (
    DEFAULT_PATH,
    LOINC,
    SNOMED,
    Catalogue,
    CatalogueError,
    Coding,
    Item,
    Source,
    load,
    parse,
)
from healthlink.recognition.validity import REGION_TZ, is_valid, valid_until

__all__ = [
    "DEFAULT_PATH",
    "LOINC",
    "REGION_TZ",
    "SNOMED",
    "Catalogue",
    "CatalogueError",
    "Coding",
    "Item",
    "Source",
    "is_valid",
    "load",
    "parse",
    "valid_until",
]
