"""The database layer's units of work (healthlink.db.engine): what ``read_one`` and
``write_one`` give and, above all, what they leave behind in the pool (ADR 0018)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from healthlink.db.engine import Database


@pytest.fixture
def db(database_url: str):  # noqa: ANN201
    """One pooled connection, so every block below gets the one the block before gave back."""
    d = Database(database_url, pool_size=1)
    table = f"t_{uuid.uuid4().hex[:8]}"
    with d.write() as conn:
        conn.execute(text(f"CREATE TABLE {table} (n INTEGER)"))
    yield d, table
    with d.write() as conn:
        conn.execute(text(f"DROP TABLE {table}"))
    d.engine.dispose()


def _xids(conn) -> tuple[int, int]:  # noqa: ANN001
    return (conn.execute(text("SELECT txid_current()")).scalar(), conn.execute(text("SELECT txid_current()")).scalar())


def test_write_stays_atomic_on_the_connection_read_one_and_write_one_used(db) -> None:  # noqa: ANN001
    d, table = db
    with d.read_one() as conn:
        if not d.is_sqlite:  # autocommit: each statement is a transaction of its own
            a, b = _xids(conn)
            assert a != b
    with d.write_one() as conn:
        conn.execute(text(f"INSERT INTO {table} VALUES (1)"))
    with pytest.raises(RuntimeError), d.write() as conn:
        if not d.is_sqlite:
            a, b = _xids(conn)
            assert a == b  # one transaction again
        conn.execute(text(f"INSERT INTO {table} VALUES (2)"))
        raise RuntimeError("the unit of work fails after its first statement")
    with d.read() as conn:
        assert conn.execute(text(f"SELECT n FROM {table} ORDER BY n")).scalars().all() == [1]


def test_a_failed_statement_in_read_one_leaves_a_usable_transactional_connection(db) -> None:  # noqa: ANN001
    d, table = db
    with pytest.raises(Exception, match="no_such_table"), d.read_one() as conn:
        conn.execute(text("SELECT * FROM no_such_table"))
    with pytest.raises(RuntimeError), d.write() as conn:
        conn.execute(text(f"INSERT INTO {table} VALUES (3)"))
        raise RuntimeError("rolled back")
    with d.read_one() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0
