"""Migrations are the source of the schema; the table definitions must agree with them."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from healthlink.db.migrate import current
from healthlink.db.tables import metadata


def test_database_is_at_the_newest_migration(platform):
    from alembic.script import ScriptDirectory

    from healthlink.db.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config(platform.db.url)).get_current_head()
    assert current(platform.db) == head


def test_migrations_match_table_definitions(platform):
    with platform.db.read() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == [], f"tables.py and the migrations differ: {diff}"
