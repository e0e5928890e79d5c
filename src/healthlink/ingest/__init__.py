"""Bulk ingest: NDJSON and Bundle uploads, data-quality rules, quarantine, reports.

Public surface: :func:`ingest_files`, :func:`ingest_actor`, :func:`start_import`,
:func:`start_upload`, :func:`import_status`, :func:`list_uploads`, :func:`get_upload`,
:func:`list_quarantine`, :class:`Report`.
"""

from healthlink.ingest.report import Report
from healthlink.ingest.jobs import import_status, list_uploads, start_import, start_upload
from healthlink.ingest.queries import get_upload, list_quarantine
from healthlink.ingest.service import ingest_actor, ingest_files, register_upload

__all__ = ["Report", "get_upload", "import_status", "ingest_actor", "list_quarantine", "list_uploads",
           "ingest_files", "register_upload", "start_import", "start_upload"]
