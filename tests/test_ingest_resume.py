"""`healthlink ingest` killed with SIGKILL mid-file, then run again, ends where an
uninterrupted run ends: commits are per batch and every decision is idempotent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ingest_data import write_upload
from sqlalchemy import func, select
from test_ingest import counts
from typer.testing import CliRunner

from healthlink.cli.main import app as cli
from healthlink.db import tables as t
from healthlink.ingest import ingest_files

BIN = os.path.join(os.path.dirname(sys.executable), "healthlink")


def _env(settings) -> dict[str, str]:  # noqa: ANN001
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHLINK_")}
    env.update({"HEALTHLINK_DATABASE_URL": settings.database_url, "HEALTHLINK_DATA_DIR": str(settings.data_dir),
                "HEALTHLINK_SECRET_KEY": settings.secret_key.get_secret_value(),
                "HEALTHLINK_LOG_LEVEL": "WARNING"})
    return env


def _stored(platform, org: str) -> int:  # noqa: ANN001
    with platform.db.read() as conn:
        return conn.scalar(select(func.count()).where(t.resource.c.institution_id == org))


def test_ingest_killed_mid_file_then_rerun_ends_with_the_counts_of_an_uninterrupted_run(
        platform, settings, make_institution, tmp_path):
    upload = write_upload(tmp_path / "upload.ndjson")
    whole = make_institution()
    ingest_files(platform.services, [upload], institution=whole)
    expected = counts(platform, whole)

    org = make_institution()
    with open(tmp_path / "stderr.txt", "w") as stderr:
        proc = subprocess.Popen([BIN, "ingest", str(upload), "--institution", org, "--batch-size", "200"],
                                env=_env(settings), stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.time() + 300
        while _stored(platform, org) < 1000:  # several batches committed
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-2000:]
            assert time.time() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    partial = counts(platform, org)
    assert 1000 <= partial["resources"] < expected["resources"]

    r = CliRunner().invoke(cli, ["ingest", str(upload), "--institution", org, "--json"], env=_env(settings))
    assert r.exit_code == 0, r.output
    assert counts(platform, org) == expected
    assert '"quarantined": 37' in r.output
