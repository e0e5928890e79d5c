"""Bulk ingest: NDJSON and Bundle uploads, data-quality rules, quarantine, reports.

Public surface: :func:`ingest_files`, :func:`ingest_actor`, :func:`start_import`,
:func:`import_status`, :class:`Report`.
"""

from healthlink.ingest.report import Report
from healthlink.ingest.jobs import import_status, list_uploads, start_import
from healthlink.ingest.service import ingest_actor, ingest_files, register_upload

__all__ = ["Report", "import_status", "ingest_actor", "list_uploads", "ingest_files", "register_upload", "start_import"]
