"""Engine and transactions.

SQLite (embedded default) runs in WAL mode: readers never block the writer and the
writer never blocks readers.  SQLite allows one writer at a time, so every write
transaction takes one lock and starts with ``BEGIN IMMEDIATE`` (which takes the
database's write lock up front, so two processes never deadlock by upgrading read
locks).  The lock is a mutex for the threads of a process and ``flock(2)`` on a file
next to the database for the server's worker processes, which queue on it instead of
polling in SQLite's busy handler; any other process still waits on ``busy_timeout``.
PostgreSQL uses a pool and ordinary transactions.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from collections import namedtuple
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import ColumnElement, Connection, Engine, Table, any_, bindparam, create_engine, event, literal_column
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DataError, DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from healthlink.errors import Invalid, Unavailable


CONNECT_TIMEOUT_S = 2  # libpq's connect_timeout (it treats 1 as 2): a server that never answers
_SQLITE_MMAP_BYTES = 1 << 30  # address space only; pages are read as used
_CHECKPOINT_EVERY_S = 0.1
_AUTOCHECKPOINT_PAGES = 10_000  # backstop should the background checkpoints fall behind


class _Checkpointer:
    """Copies the WAL back into the database file from a thread of its own.

    SQLite's automatic checkpoint runs inside the COMMIT that crosses the WAL threshold
    (1000 pages), so every few hundred audit commits one of them waits some 15-20 ms for
    the copy and its fsync, holding up every read waiting for that commit and, through
    the write lock, the other worker processes' commits too.  A PASSIVE checkpoint in
    the background does the same work without blocking readers.

    Each pass holds the write lock (:class:`_WriteLock`), so no checkpoint ever runs while
    another connection commits.  SQLite 3.7.0 to 3.51.2 (Debian 12 ships 3.40.1) has a race,
    the "WAL-reset bug" (https://sqlite.org/wal.html#walresetbug), that corrupts the database
    when a checkpoint starts right after another one completed and a commit on another
    connection resets the WAL while it runs: exactly what a checkpoint every 100 ms beside a
    stream of audit commits does (it showed as "database disk image is malformed" in CI).
    With the lock, checkpoints and commits alternate, and the automatic checkpoint runs inside
    a commit, which holds the lock too (ADR 0020)."""

    def __init__(self, engine: Engine, lock: _WriteLock) -> None:
        self._engine = engine
        self._lock = lock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.passes = 0  # checkpoints run (tests read it)

    def ensure_started(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(_CHECKPOINT_EVERY_S):
            try:
                conn = self._engine.raw_connection()
                try:
                    self._lock.acquire()
                    try:
                        conn.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")  # type: ignore[union-attr]
                        self.passes += 1
                    finally:
                        self._lock.release()
                finally:
                    conn.close()
            except Exception:  # noqa: BLE001 - retried next round; autocheckpoint is the backstop
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._pid == os.getpid():
            self._thread.join(timeout=5)
        self._thread = None


class _WriteLock:
    """One SQLite writer at a time: a mutex between this process's threads and, for a
    database file, ``flock(2)`` on ``<file>-writer`` between processes.

    SQLite serialises writers by itself, but a process that finds the database locked
    sleeps in its busy handler (1, 2, 5, 10, ... ms) before it retries, which puts those
    sleeps into the latency of every read waiting for its audit commit when several
    worker processes write.  A process blocked in ``flock`` wakes as soon as the lock is
    released.  SQLite's own lock still guarantees correctness."""

    def __init__(self, db_path: str | None) -> None:
        self._mutex = threading.Lock()
        self._path = f"{db_path}-writer" if db_path else None
        self._fd: int | None = None
        self._pid = 0
        self.owner: int | None = None  # the thread holding the lock

    def _file(self) -> int | None:
        if self._path is not None and (self._fd is None or self._pid != os.getpid()):
            try:  # reopened after a fork: a shared open file would share the lock
                self._fd, self._pid = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600), os.getpid()
            except OSError:
                self._path = None  # e.g. a read-only directory: rely on busy_timeout alone
        return self._fd if self._path is not None else None

    def acquire(self) -> None:
        self._mutex.acquire()
        try:
            fd = self._file()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)  # blocks without holding the GIL
        except BaseException:
            self._mutex.release()
            raise
        self.owner = threading.get_ident()

    def release(self) -> None:
        self.owner = None
        try:
            if self._fd is not None and self._path is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._mutex.release()


PING_IDLE_S = 1.0  # a pooled PostgreSQL connection unused for longer is tested before it is handed out


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's pre-ping, only for connections that sat in the pool for PING_IDLE_S or more:
    a connection given back a moment ago was working a moment ago.  A failed ping discards the
    connection and the pool takes another (SQLAlchemy's DisconnectionError protocol)."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn, record) -> None:  # noqa: ANN001
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, record, _proxy) -> None:  # noqa: ANN001
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # noqa: BLE001 - any failure: the connection is not to be used
            raise DisconnectionError(f"pooled connection failed its ping: {exc}") from exc


class Database:
    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 10,
                 pool_timeout: float = 5.0, connect_timeout: int = CONNECT_TIMEOUT_S,
                 pool_pre_ping: bool = True) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._stats_lock = threading.Lock()
        self._stats_rows = 0
        self._stats_threshold = 2000
        self._stats_running = False
        self._write_lock: _WriteLock | None = None
        self._checkpointer: _Checkpointer | None = None
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._write_lock = _WriteLock(path if path and path != ":memory:" else None)
            self.engine: Engine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=pool_size, max_overflow=2 * pool_size, pool_timeout=pool_timeout,
            )
            if path and path != ":memory:":
                self._checkpointer = _Checkpointer(self.engine, self._write_lock)
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
                # Map the file into memory: every write (each audit commit) invalidates the
                # other connections' page caches, and re-reading pages through mmap costs no
                # system call where pread costs one per page (ADR 0007).
                cur.execute(f"PRAGMA mmap_size={_SQLITE_MMAP_BYTES}")
                cur.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")
                cur.close()

            @event.listens_for(self.engine, "begin")
            def _begin(conn: Connection) -> None:
                if conn.info.get("write"):
                    conn.exec_driver_sql("BEGIN IMMEDIATE")  # may wait on busy_timeout: errors wrapped
                else:
                    # A deferred BEGIN takes no lock and cannot be busy; issuing it on the
                    # driver connection skips SQLAlchemy's statement machinery on every read.
                    conn.connection.driver_connection.execute("BEGIN")  # type: ignore[union-attr]
        else:
            # connect_timeout: libpq waits for ever (psycopg: 130 s) for a server that accepts
            # the TCP connection and never answers; fail the request fast instead (docs/faults.md).
            # pool_pre_ping: a connection idle for PING_IDLE_S is tested with a round trip before
            # it is handed out (not every checkout: under load that round trip was ~3% of a
            # request's CPU, ADR 0017); without it a restart of the database is still survived,
            # because an outage error discards the pool (_outage).
            self.engine = create_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_timeout=pool_timeout,
                connect_args={"connect_timeout": max(2, int(connect_timeout))},
            )
            if pool_pre_ping:
                _ping_when_idle(self.engine)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction: commits on success, rolls back on any exception."""
        lock = self._write_lock
        if self._checkpointer is not None:
            self._checkpointer.ensure_started()
        if lock is not None:
            lock.acquire()
        try:
            with self._outage():
                conn = self.engine.connect()
            try:
                conn.info["write"] = True
                with self._outage(), conn.begin():
                    yield conn
            finally:
                try:
                    # an invalidated connection (the database went away) would reconnect to
                    # answer .info, and raise past the 503 into a 500 (docs/faults.md)
                    if not conn.invalidated:
                        conn.info.pop("write", None)
                finally:
                    conn.close()
        finally:
            if lock is not None:
                lock.release()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only unit of work (one snapshot on both backends)."""
        with self._outage():
            conn = self.engine.connect()
        try:
            with self._outage(), conn.begin():
                yield conn
        finally:
            conn.close()

    @contextmanager
    def write_one(self) -> Iterator[Connection]:
        """:meth:`write` for a unit of work of one statement, which is atomic by itself.

        On PostgreSQL it runs in autocommit: the statement commits as it ends (durably:
        ``synchronous_commit`` as configured), without the BEGIN and COMMIT round trips, each
        of which costs as much client CPU as the statement (ADR 0018).  On SQLite it is
        :meth:`write`.  A second statement in the block would commit on its own: don't."""
        with self.write() if self.is_sqlite else self._autocommit() as conn:
            yield conn

    @contextmanager
    def read_one(self) -> Iterator[Connection]:
        """:meth:`read` for a unit of work of one statement, which is a snapshot by itself, or
        of several statements that need no common snapshot.

        On PostgreSQL it runs in autocommit, which saves the BEGIN and COMMIT round trips
        (half of those of a primary-key read, ADR 0007).  Under PostgreSQL's READ COMMITTED a
        transaction gives each statement a snapshot of its own anyway, so for plain reads the
        answers are the same as in :meth:`read` (not for a server-side cursor, which needs a
        transaction: use :meth:`read`).  On SQLite it is :meth:`read`, one snapshot."""
        with self.read() if self.is_sqlite else self._autocommit() as conn:
            yield conn

    @contextmanager
    def _autocommit(self) -> Iterator[Connection]:
        """A pooled PostgreSQL connection in autocommit (:meth:`read_one`, :meth:`write_one`).

        The driver's own switch (psycopg's ``autocommit``: no round trip), set on checkout and
        cleared before the connection goes back, instead of SQLAlchemy's ``isolation_level``
        option, whose set-and-restore machinery cost 5% of an order-sign check's CPU.  A
        connection whose switch cannot be cleared (it broke) is discarded, never pooled: a pooled
        connection left in autocommit would make :meth:`write` blocks non-atomic."""
        with self._outage():
            conn = self.engine.connect()
        raw = conn.connection.driver_connection
        try:
            raw.autocommit = True  # type: ignore[union-attr]
            with self._outage():
                yield conn
        finally:
            try:
                raw.autocommit = False  # type: ignore[union-attr]
            except Exception:  # noqa: BLE001 - broken or mid-transaction: not to be reused
                conn.invalidate()
            conn.close()

    def note_bulk_write(self, rows: int) -> None:
        """Count rows written in bulk; on PostgreSQL, refresh planner statistics in the
        background once many rows have arrived since the last refresh.  Autovacuum does this
        too, but only after a delay: a search planned on the statistics of an empty table
        right after a bulk load can pick nested loops over 100,000s of index rows."""
        if self.is_sqlite or rows <= 0:
            return
        with self._stats_lock:
            self._stats_rows += rows
            if self._stats_rows < self._stats_threshold or self._stats_running:
                return
            self._stats_threshold = max(2000, self._stats_rows * 2)
            self._stats_rows = 0
            self._stats_running = True
        threading.Thread(target=self._analyze, name="analyze", daemon=True).start()

    def _analyze(self) -> None:
        try:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ANALYZE")
        except Exception:  # noqa: BLE001 - statistics are an optimisation; autovacuum remains
            pass
        finally:
            with self._stats_lock:
                self._stats_running = False

    @contextmanager
    def _outage(self) -> Iterator[None]:
        """:func:`_unavailable_on_outage`, and when the database went away, drop every pooled
        connection: after a restart of PostgreSQL they are all dead, and the statements the hot
        paths send on the driver's own cursor (``driver_fetchone``, ``bulk_insert``) bypass
        SQLAlchemy's own disconnect handling, so without this a dead connection could be handed
        out again (and with ``pool_pre_ping`` off, again and again)."""
        try:
            with _unavailable_on_outage():
                yield
        except Unavailable as exc:
            if getattr(exc, "disconnect", False):
                # a new pool; the old one's idle connections are closed, the checked-out ones
                # are discarded when they are given back
                self.engine.dispose()
            raise

    def holds_write_lock(self) -> bool:
        """Whether this thread is inside a SQLite write transaction (:meth:`write`), so that another
        write would wait for it; always False on PostgreSQL."""
        lock = self._write_lock
        return lock is not None and lock.owner == threading.get_ident()

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()


def driver_fetchone(conn: Connection, sql: str, params: tuple) -> tuple | None:
    """Run one statement on the driver's own cursor inside ``conn``'s transaction and
    return its first row.  For the few statements every request runs, where SQLAlchemy's
    execution path costs several times the statement (ADR 0007); driver errors are
    re-raised as SQLAlchemy's, as if the statement had gone through it."""
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(sql, params)
        return cur.fetchone()
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(sql, params, exc, conn.dialect.loaded_dbapi.Error,
                                  dialect=conn.dialect) from exc
    finally:
        cur.close()


_random = threading.local()


def event_id() -> str:
    """A new id for an event row (recognition, medication-safety, bedside and pre-review events):
    a time-ordered UUID (version 7, RFC 9562: 48 bits of Unix milliseconds, then 74 random bits)
    as 32 hex digits.  Time-ordered, so the event tables' primary-key and id indexes grow at their
    end instead of taking inserts on random pages all over a large index (with random ids the
    order-sign benchmark slowed run after run as its event table outgrew the buffer cache, ADR
    0017).  The random bytes are taken from the operating system 64 ids at a time (one
    ``getrandom`` call instead of one per id: system calls are dear on the project's virtual
    machines, ADR 0016), per thread and per process, so a forked worker never repeats its parent's."""
    pid = os.getpid()
    buf = getattr(_random, "buf", b"")
    if not buf or getattr(_random, "pid", None) != pid:
        buf, _random.pid = os.urandom(10 * 64), pid
    _random.buf = buf[10:]
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(buf[:10], "big")  # 80 bits: 12 for rand_a, 62 for rand_b, 6 unused
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62 | rand & (2**62 - 1)
    return f"{value:032x}"


_DRIVER_SQL: dict[tuple[int, str], tuple] = {}  # (id(statement), dialect) -> (statement, sql, ...)


def driver_all(conn: Connection, stmt, params: dict) -> list:  # noqa: ANN001
    """All rows of ``stmt`` (a SELECT built once: at module level or cached) run on the driver's
    own cursor inside ``conn``'s transaction, as named tuples.  Compiled once per dialect; each
    call then costs the driver's work alone, not SQLAlchemy's statement machinery (about 150 µs
    of CPU per statement: ADR 0007, ADR 0017).  ``params`` names the statement's bind parameters;
    no result processing, so only for columns the drivers give as they are (text, numbers; a
    boolean may come back as 0/1 on SQLite).  Driver errors are re-raised as SQLAlchemy's."""
    key = (id(stmt), conn.dialect.name)
    hit = _DRIVER_SQL.get(key)
    if hit is None or hit[0] is not stmt:
        c = stmt.compile(dialect=conn.dialect)
        defaults = c.construct_params({n: None for n in params}, _check=False)
        order = tuple(c.positiontup) if c.positional else None
        hit = _DRIVER_SQL[key] = (stmt, c.string, defaults, order, {})
    _, sql, defaults, order, row_types = hit
    values = dict(defaults)
    values.update(params)
    args = [values[n] for n in order] if order is not None else values
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(sql, args)
        row = row_types.get("row")  # the statement's columns do not change: described once
        if row is None:
            row = row_types["row"] = namedtuple("Row", [d[0] for d in cur.description])  # noqa: PYI024
        return [row._make(r) for r in cur.fetchall()]
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(sql, args, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect) from exc
    finally:
        cur.close()


SMALL_BATCH = 2  # rows up to which bulk_insert uses one INSERT on PostgreSQL (COPY above: ADR 0017)


_CONST = re.compile(r"[A-Za-z0-9_.:/|-]{1,200}")


def const(value: str):  # noqa: ANN201
    """A string constant of the platform's own (a status code, a parameter name, a code system)
    written into a statement's text instead of bound: a statement built once and run on every
    order-time check then needs no parameter of its own for it, and SQLAlchemy no longer re-renders
    an ``IN`` list's text on every execution (ADR 0017).  Only for the platform's constants: the
    value must be plain (letters, digits, ``_ . : / | -``), never anything from a request."""
    if not isinstance(value, str) or not _CONST.fullmatch(value):
        raise ValueError(f"not a plain constant for a statement's text: {value!r}")
    return literal_column(f"'{value}'")


def const_in(column, values) -> ColumnElement:  # noqa: ANN001
    """``column IN ('a', 'b')`` with the platform's constants written into the text (:func:`const`)."""
    return column.in_([const(v) for v in sorted(values)])


def in_many(conn: Connection, column, values: list) -> ColumnElement:  # noqa: ANN001
    """``column IN (values)`` for a long list (a bulk upload's keys): one array parameter on
    PostgreSQL (``= ANY(%s)``: one statement text whatever the length, so the driver and the
    server parse it once), the ordinary expanding ``IN`` on SQLite."""
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(list(values))


def bulk_insert(conn: Connection, table: Table, columns: tuple[str, ...], rows: list[tuple], *,
                ignore_conflicts: bool = False) -> None:
    """Insert many rows into ``table`` inside ``conn``'s transaction, the fastest way each
    database offers: ``COPY ... FROM STDIN`` on PostgreSQL, the driver's ``executemany`` on
    SQLite (bulk ingest, ADR 0009).  Rows are tuples in ``columns`` order.  Driver errors
    (a unique violation, say) are re-raised as SQLAlchemy's, as if the insert had gone
    through it, so callers catch :class:`sqlalchemy.exc.IntegrityError` as usual.  With
    ``ignore_conflicts`` rows that collide with a unique key are skipped (one
    ``INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING`` on PostgreSQL,
    ``INSERT OR IGNORE`` on SQLite)."""
    if not rows:
        return
    driver = conn.connection.driver_connection  # type: ignore[union-attr]
    cols = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        if ignore_conflicts:
            arrays = ", ".join(f"%s::{table.c[c].type.compile(dialect=conn.dialect)}[]" for c in columns)
            sql = f"INSERT INTO {table.name} ({cols}) SELECT * FROM unnest({arrays}) ON CONFLICT DO NOTHING"
        else:
            sql = f"COPY {table.name} ({cols}) FROM STDIN"
        if not ignore_conflicts and len(rows) <= SMALL_BATCH:  # a row or two: COPY's set-up costs more
            one = f"({', '.join(['%s'] * len(columns))})"
            sql = f"INSERT INTO {table.name} ({cols}) VALUES {', '.join([one] * len(rows))}"
        try:
            with driver.cursor() as cur:  # type: ignore[union-attr]
                if ignore_conflicts:
                    cur.execute(sql, [list(col) for col in zip(*rows)])
                elif len(rows) <= SMALL_BATCH:  # one statement (executemany: ~50 µs per row)
                    cur.execute(sql, [v for r in rows for v in r])
                else:
                    with cur.copy(sql) as cp:
                        write = cp.write_row
                        for r in rows:
                            write(r)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(sql, None, exc, conn.dialect.loaded_dbapi.Error,
                                      dialect=conn.dialect) from exc
        return
    verb = "INSERT OR IGNORE" if ignore_conflicts else "INSERT"
    sql = f"{verb} INTO {table.name} ({cols}) VALUES ({', '.join('?' * len(columns))})"
    try:
        driver.executemany(sql, rows)  # type: ignore[union-attr]
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(sql, None, exc, conn.dialect.loaded_dbapi.Error,
                                  dialect=conn.dialect) from exc


def reserve_ids(conn: Connection, table: Table, column: str, n: int) -> list[int]:
    """``n`` new values of ``table.column``'s sequence, for rows written by
    :func:`bulk_insert` (COPY cannot return generated keys).  On SQLite, whose writers
    are serialised by the write lock (module doc), the next free values of the rowid."""
    if n <= 0:
        return []
    if conn.dialect.name == "postgresql":
        rows = conn.exec_driver_sql(
            f"SELECT nextval(pg_get_serial_sequence('{table.name}', '{column}')) "
            f"FROM generate_series(1, {int(n)})").all()
        return [r[0] for r in rows]
    top = conn.exec_driver_sql(f"SELECT max({column}) FROM {table.name}").scalar() or 0
    return list(range(top + 1, top + 1 + n))


@contextmanager
def _unavailable_on_outage() -> Iterator[None]:
    """Turn 'the database is not there' (or cannot take the write) into a 503 the client can
    retry, with a message that says which; never the driver's text (docs/faults.md)."""
    try:
        yield
    except PoolTimeout as exc:
        raise Unavailable("database connection pool exhausted; retry shortly",
                          headers={"Retry-After": "1"}) from exc
    except OverflowError as exc:
        raise Invalid("a number in the request is out of range (64-bit integers at most)") from exc
    except DBAPIError as exc:
        msg = (str(exc.orig) if exc.orig else str(exc)).lower()
        if any(s in msg for s in _DISK_FULL):
            raise Unavailable("the database's disk is full: nothing was written; retry once the "
                              "platform's operators have made room", headers={"Retry-After": "30"}) from exc
        if isinstance(exc, DataError):
            # the client's value, not the database: a NUL in text (PostgreSQL refuses it), a
            # number out of the column's range
            why = ("text must not contain the NUL character" if "nul" in msg
                   else "a text is longer than the field allows" if "too long" in msg
                   else "a number is out of range" if "out of range" in msg
                   else "a value has the wrong form")
            raise Invalid("a value in the request cannot be stored or compared: " + why) from exc
        if not isinstance(exc, OperationalError) and not exc.connection_invalidated:
            raise
        if any(s in msg for s in _BUSY):
            raise Unavailable("database busy; retry shortly", headers={"Retry-After": "1"}) from exc
        if exc.connection_invalidated or any(s in msg for s in _GONE):
            err = Unavailable("database unavailable; retry shortly", headers={"Retry-After": "2"})
            err.disconnect = True  # type: ignore[attr-defined]  # Database._outage drops the pool
            raise err from exc
        raise


# SQLSTATE 53100 disk_full ("could not extend file ...: No space left on device"), SQLite's
# SQLITE_FULL, and an out-of-space I/O error
_DISK_FULL = ("database or disk is full", "no space left", "could not extend file", "disk full")
_BUSY = ("database is locked", "too many clients", "remaining connection slots are reserved")
_GONE = (
    "connection refused", "could not connect", "server closed the connection", "terminating connection",
    "connection is closed", "connection timeout expired", "timeout expired", "connection is lost",
    "consuming input failed", "ssl syscall error", "the database system is starting up",
    "the database system is shutting down", "the database system is in recovery mode",
    "disk i/o error", "no such host", "name or service not known",
)
