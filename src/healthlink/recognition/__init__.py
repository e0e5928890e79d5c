"""Mutual recognition of examination and laboratory results (issue 7; docs/recognition.md).

Capability layer (no HTTP), above ``identity``, ``consent`` and ``access``, below ``ingest``:

* :func:`load` / :func:`parse` — read and validate a versioned catalogue file (default: the
  bundled ``data/catalogue-v1.json``); :class:`CatalogueError` names each bad entry and field;
  :class:`Catalogue` (``by_code``, ``by_id``, ``equivalents``), :class:`Item`, :class:`Source`;
* :mod:`.store` — the catalogue in the store (``recognition_catalogue``): ``load``, ``active``,
  ``in_force``, ``history``;
* :func:`valid_until` and :func:`is_valid` — the validity window in the region's calendar;
* :mod:`.service` — :class:`~healthlink.recognition.service.Recognition` (``Platform.recognition``):
  the order-time check at Person level, the doctor's decisions as events, the recognised result
  with its Provenance, rates and savings, qualified issuers.
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
