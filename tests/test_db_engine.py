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


def test_sqlite_checkpoints_never_run_while_another_connection_commits(tmp_path) -> None:  # noqa: ANN001
    """SQLite's WAL-reset bug (3.7.0-3.51.2; sqlite.org/wal.html#walresetbug) corrupts the file
    when a commit resets the WAL while a checkpoint runs, so the background checkpointer waits
    for the write lock: while a write transaction is open, no checkpoint runs (ADR 0020)."""
    import threading
    import time

    d = Database(f"sqlite:///{tmp_path / 'ckpt.db'}")
    try:
        with d.write() as conn:
            conn.execute(text("CREATE TABLE t (n INTEGER)"))
        ckpt = d._checkpointer
        assert ckpt is not None
        deadline = time.monotonic() + 5
        while ckpt.passes < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ckpt.passes >= 2, "the background checkpointer does not run"
        inside = threading.Event()
        release = threading.Event()

        def hold_a_write() -> None:
            with d.write() as conn:
                conn.execute(text("INSERT INTO t VALUES (1)"))
                inside.set()
                release.wait(5)

        writer = threading.Thread(target=hold_a_write)
        writer.start()
        assert inside.wait(5)
        time.sleep(0.05)  # a pass that had the lock before the write finishes now
        before = ckpt.passes
        time.sleep(0.5)  # five checkpoint periods
        during = ckpt.passes - before
        release.set()
        writer.join(5)
        assert during == 0, f"{during} checkpoint(s) ran while a write transaction was open"
        deadline = time.monotonic() + 5
        while ckpt.passes == before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ckpt.passes > before, "checkpoints do not resume after the write"
        with d.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 1
    finally:
        d.dispose()
