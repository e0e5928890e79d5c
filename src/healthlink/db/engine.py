"""Engine and transactions.

SQLite (embedded default) runs in WAL mode: readers never block the writer and the
writer never blocks readers.  SQLite allows one writer at a time, so every write
transaction in this process takes one lock and starts with ``BEGIN IMMEDIATE`` (which
takes the database's write lock up front, so two processes never deadlock by upgrading
read locks); other processes wait on ``busy_timeout``.  PostgreSQL uses a pool and
ordinary transactions.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from healthlink.errors import Unavailable


class Database:
    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 10,
                 pool_timeout: float = 5.0) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._write_lock = threading.Lock() if self.is_sqlite else None
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=pool_size, max_overflow=2 * pool_size, pool_timeout=pool_timeout,
            )
            sync = sqlite_synchronous

            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn, _record):  # noqa: ANN001
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute(f"PRAGMA synchronous={sync}")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.execute("PRAGMA cache_size=-65536")
                cur.close()

            @event.listens_for(self.engine, "begin")
            def _begin(conn: Connection) -> None:
                conn.exec_driver_sql(
                    "BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN"
                )
        else:
            self.engine = create_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_timeout=pool_timeout,
                pool_pre_ping=True,
            )

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction: commits on success, rolls back on any exception."""
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        try:
            with _unavailable_on_outage():
                conn = self.engine.connect()
            try:
                conn.info["write"] = True
                with _unavailable_on_outage(), conn.begin():
                    yield conn
            finally:
                conn.info.pop("write", None)
                conn.close()
        finally:
            if lock is not None:
                lock.release()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only unit of work (one snapshot on both backends)."""
        with _unavailable_on_outage():
            conn = self.engine.connect()
        try:
            with _unavailable_on_outage(), conn.begin():
                yield conn
        finally:
            conn.close()

    def dispose(self) -> None:
        self.engine.dispose()


@contextmanager
def _unavailable_on_outage() -> Iterator[None]:
    """Turn 'the database is not there' into a 503 the client can retry."""
    try:
        yield
    except PoolTimeout as exc:
        raise Unavailable("database connection pool exhausted; retry shortly",
                          headers={"Retry-After": "1"}) from exc
    except OperationalError as exc:
        msg = str(exc.orig) if exc.orig else str(exc)
        if _is_outage(msg):
            raise Unavailable("database unavailable; retry shortly",
                              headers={"Retry-After": "2"}) from exc
        raise


def _is_outage(msg: str) -> bool:
    m = msg.lower()
    return any(s in m for s in (
        "connection refused", "could not connect", "server closed the connection",
        "terminating connection", "connection is closed", "database is locked",
        "disk i/o error", "database or disk is full", "no space left",
        "the database system is starting up", "the database system is shutting down",
    ))
