"""Tools for the fault tests (issue 9, item 2; docs/faults.md): `healthlink serve` as a real
process that can be SIGKILLed, a throw-away PostgreSQL cluster of the test's own (initdb/pg_ctl
on a free port; the shared cluster on 5432 is never touched), a tiny filesystem that fills up,
and the row counts and ledger check the tests assert."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from servers import BIN, free_port
from sqlalchemy import func, select

from healthlink.accounts import add_client
from healthlink.db import tables as t

SECRET = "test-signing-key-" + "x" * 32


# ------------------------------------------------------------------ the server as a process
@dataclass
class Server:
    """`healthlink serve` on a free loopback port against ``database_url``; every start is a
    new process on the same port (a restart)."""

    database_url: str
    data_dir: Path
    log: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHLINK_")}
        env.update({"HEALTHLINK_DATABASE_URL": self.database_url, "HEALTHLINK_DATA_DIR": str(self.data_dir),
                    "HEALTHLINK_SECRET_KEY": SECRET, "HEALTHLINK_PORT": str(self.port),
                    "HEALTHLINK_BASE_URL": self.base, "HEALTHLINK_LOG_LEVEL": "WARNING",
                    "HEALTHLINK_AUDIT_BATCH_WAIT_MS": "1"})
        env.update(self.env_extra)
        return env

    def start(self, *, timeout: float = 60) -> Server:
        out = open(self.log, "ab")  # noqa: SIM115 - the child keeps it
        # a session of its own: kill() reaches uvicorn's worker processes too (HEALTHLINK_WORKERS > 1)
        self.proc = subprocess.Popen([str(BIN), "serve"], env=self.env(), stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.kill()
        pytest.fail(f"{self.base} did not come up:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler, no rollback by the process itself."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the server and any worker it started
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def token(self, client_id: str, secret: str) -> dict[str, str]:
        r = httpx.post(f"{self.base}/api/auth/token", timeout=30, data={
            "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}


def new_client(platform, institution: str, prefix: str = "fault") -> tuple[str, str]:  # noqa: ANN001
    """A hospital system (client credentials) of ``institution``: (client id, secret)."""
    cid = f"{prefix}-{os.urandom(5).hex()}"
    return cid, add_client(platform.db, client_id=cid, display_name=cid, institution_id=institution,
                           scopes="system/*.cruds")


# ------------------------------------------------------------------ a cluster of our own
PG_BIN = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]) if glob.glob("/usr/lib/postgresql/*/bin") else None


class PgCluster:
    """A throw-away PostgreSQL cluster: initdb in a temporary directory, a free port, trust
    auth on loopback only.  initdb refuses to run as root, so as root the cluster is made and
    run by the ``postgres`` system user (``runuser``).  ``tablespace_dir``: a directory for a
    tablespace (the disk-full test puts one on a tiny tmpfs)."""

    def __init__(self) -> None:
        if PG_BIN is None:
            pytest.fail("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.root = Path(tempfile.mkdtemp(prefix="hl_fault_pg_"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync", "--no-instructions")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([*self._as, str(PG_BIN / tool), *args], capture_output=True, text=True,
                           timeout=120, cwd=self.root)
        if check and r.returncode != 0:
            pytest.fail(f"{tool} failed: {r.stdout}\n{r.stderr}\n{self.log_tail()}")
        return r

    def log_tail(self) -> str:
        p = self.root / "log"
        return p.read_text(errors="replace")[-3000:] if p.exists() else ""

    def start(self) -> None:
        # fsync off: a throw-away cluster; max_connections leaves room for two pools and the test
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c max_connections=60 -c shared_buffers=16MB")
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w",
                  "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def is_running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def admin_url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def sql(self, statement: str, db: str = "postgres") -> list[tuple]:
        import psycopg

        with psycopg.connect(self.admin_url(db), autocommit=True) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def make_owned_dir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if self._as:
            shutil.chown(path, "postgres", "postgres")
        path.chmod(0o700)

    def close(self) -> None:
        if self.data.exists() and self.is_running():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def pg_cluster():  # noqa: ANN201
    c = PgCluster()
    c.start()
    try:
        yield c
    finally:
        c.close()


# ------------------------------------------------------------------ a filesystem that fills up
class TinyFs:
    """A tmpfs of ``size`` at a new directory (needs root, as on the project's machines)."""

    def __init__(self, size: str = "3m") -> None:
        self.path = Path(tempfile.mkdtemp(prefix="hl_fault_fs_"))
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(self.path)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.path.rmdir()
            pytest.fail(f"cannot mount a tmpfs (the disk-full tests need root): {r.stderr}")

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
        shutil.rmtree(self.path, ignore_errors=True)


# ------------------------------------------------------------------ what the tests count
def resources(db, institution: str, res_type: str | None = None) -> int:  # noqa: ANN001
    r = t.resource.c
    q = select(func.count()).where(r.institution_id == institution)
    if res_type:
        q = q.where(r.res_type == res_type)
    with db.read() as conn:
        return conn.scalar(q)


def versions(db, institution: str) -> int:  # noqa: ANN001
    v = t.resource_version.c
    with db.read() as conn:
        return conn.scalar(select(func.count()).select_from(t.resource_version).where(v.institution_id == institution))


def audited(db, ref: str, subtype: str | None = None) -> int:  # noqa: ANN001
    """Audit records naming ``ref`` (``Type/id``), of ``subtype`` if given."""
    a, e = t.audit_event.c, t.audit_entity.c
    q = select(func.count(func.distinct(a.seq))).select_from(t.audit_event.join(
        t.audit_entity, e.seq == a.seq)).where(e.ref == ref)
    if subtype:
        q = q.where(a.subtype == subtype)
    with db.read() as conn:
        return conn.scalar(q)


def settle_and_verify_ledger(platform, *, within: float = 30.0):  # noqa: ANN001, ANN201
    """Integrate every committed audit record and result version (the sequencers of the test
    process and of any server process take turns), check that the leaves have no gaps and
    that every audit record has its leaf, then run the full verification with checkpoint
    signatures (the `healthlink ledger verify` code).  Returns the verification report."""
    from healthlink.ledger import setup as ls
    from healthlink.ledger.verify import verify

    deadline = time.time() + within
    a, leaf = t.audit_event.c, t.ledger_leaf.c
    while True:
        platform.ledger.integrate()
        with platform.db.read() as conn:
            uncovered = conn.scalar(select(func.count()).select_from(t.audit_event).where(
                ~select(leaf.idx).where(leaf.audit_seq == a.seq).exists()))
            n_leaves, max_idx = conn.execute(select(func.count(), func.max(leaf.idx))).one()
        if uncovered == 0 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert uncovered == 0, f"{uncovered} committed audit records have no ledger leaf"
    assert max_idx == n_leaves - 1, f"ledger leaves have gaps: {n_leaves} leaves, last index {max_idx}"
    platform.ledger.checkpoint()
    rep = verify(platform.db, open_note=ls.note_opener(platform.settings), record=False)
    assert rep.ok, rep.problems
    assert rep.size >= n_leaves  # the sequencers may have appended since
    return rep


# ------------------------------------------------------------------ a database of the test's own
@dataclass
class FaultDb:
    """A fresh, migrated database of the suite's kind (HEALTHLINK_TEST_DB) with an in-process
    platform on it: the test's counts and the ledger verification see only its own rows."""

    url: str
    data_dir: Path
    platform: object
    drop: object = None

    def server(self, log_name: str = "server.log", **env: str) -> Server:
        return Server(self.url, self.data_dir, self.data_dir / log_name,
                      {f"HEALTHLINK_{k.upper()}": v for k, v in env.items()})

    def institution(self) -> str:
        from healthlink.demo import organization

        org = f"org-{os.urandom(5).hex()}"
        repo = self.platform.system_repository("tests")  # type: ignore[attr-defined]
        with self.platform.db.write() as conn:  # type: ignore[attr-defined]
            repo.update_in(conn, "Organization", org, organization(org, f"Test {org}", "county", None),
                           if_match=None)
        return org


def open_platform(url: str, data_dir: Path, **overrides: object):  # noqa: ANN201
    from healthlink.db.migrate import upgrade
    from healthlink.runtime import Platform
    from healthlink.settings import Settings

    s = Settings(database_url=url, data_dir=data_dir, secret_key=SECRET, log_level="WARNING",
                 base_url="http://testserver", audit_batch_wait_ms=1.0, **overrides)
    plat = Platform.start(s)
    upgrade(plat.db)
    return plat


@pytest.fixture
def fault_db(tmp_path: Path):  # noqa: ANN201
    import uuid

    data_dir = tmp_path / "var"
    data_dir.mkdir()
    kind = os.environ.get("HEALTHLINK_TEST_DB", "sqlite")
    admin = name = None
    if kind == "postgresql":
        import psycopg

        base = os.environ.get("HEALTHLINK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
        name = f"hl_fault_{uuid.uuid4().hex[:12]}"
        admin = base.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"{base}/{name}"
    else:
        url = f"sqlite:///{tmp_path / 'fault.db'}"
    plat = open_platform(url, data_dir)
    try:
        yield FaultDb(url, data_dir, plat)
    finally:
        plat.close()
        if admin:
            import psycopg

            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
