"""Medication safety across institutions (issue 8; docs/medsafety.md).

Capability layer (no HTTP), beside ``recognition``: below ``ingest``, above ``identity``,
``consent`` and ``access``.

``knowledge.py``: the knowledge base as data (drugs and the local drug dictionary,
interactions, allergy cross-sensitivity groups, duplicate-therapy classes, dose limits), loaded
from the versioned ``data/knowledge-v1.json`` and extendable by a region (``merge``).
``service.py``: ``MedSafety``, the order-time check of a draft prescription at Person level and
the prescriber's overrides.  ``barcodes.py``: bedside scans.
"""
