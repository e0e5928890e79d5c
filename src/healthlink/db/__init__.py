"""Database: engine, tables, migrations.  Knows nothing of HTTP or FHIR semantics."""

from healthlink.db.engine import Database, bulk_insert, const, const_in, driver_all, driver_fetchone, event_id, in_many, reserve_ids
from healthlink.db import tables

__all__ = ["Database", "bulk_insert", "const", "const_in", "driver_all", "driver_fetchone", "event_id", "in_many", "reserve_ids", "tables"]
