"""The leaders' dashboard: the region's indicators (issue 10; docs/dashboard.md).

Public surface: :class:`Dashboard` (``Platform.dashboard``: scope, filters, the view, a table),
:class:`Filters`, :class:`Table` (with ``to_csv``), :data:`TABLES` and :func:`refresh` (the
incremental recount of the pre-aggregated counts, ``healthlink dashboard refresh``)."""

from healthlink.dashboard.aggregate import refresh, state
from healthlink.dashboard.service import Dashboard, Filters, Scope
from healthlink.dashboard.tables import TABLES, Table

__all__ = ["TABLES", "Dashboard", "Filters", "Scope", "Table", "refresh", "state"]
