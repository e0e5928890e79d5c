"""Medication safety across institutions (issue 8; docs/medsafety.md).

Capability layer (no HTTP), beside ``recognition``: below ``ingest``, above ``identity``,
``consent`` and ``access``.
"""
