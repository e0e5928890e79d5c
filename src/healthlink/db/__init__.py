"""Database: engine, tables, migrations.  Knows nothing of HTTP or FHIR semantics."""

from healthlink.db.engine import Database, driver_fetchone
from healthlink.db import tables

__all__ = ["Database", "driver_fetchone", "tables"]
