"""The leaders' dashboard: the region's indicators (issue 10; docs/dashboard.md)."""
