"""The command line: the README's run path (`healthlink serve --demo`), migrations, TLS."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from healthlink.cli.main import app as cli

BIN = Path(sys.executable).parent / "healthlink"


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _serve(tmp_path: Path, extra_env: dict[str, str], scheme: str = "http"):  # noqa: ANN202
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHLINK_")}
    env.update({"HEALTHLINK_PORT": str(port), "HEALTHLINK_DATA_DIR": str(tmp_path / "var"),
                "HEALTHLINK_DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'healthlink.db'}",
                **extra_env})
    proc = subprocess.Popen([str(BIN), "serve", "--demo"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"{scheme}://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1, verify=False).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"server did not come up: {proc.stdout.read() if proc.stdout else ''}")


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def test_serve_demo_prints_url_and_a_login_that_works(tmp_path):
    proc, base = _serve(tmp_path, {})
    try:
        assert httpx.get(f"{base}/fhir/metadata").json()["fhirVersion"] == "4.0.1"
        r = httpx.post(f"{base}/api/auth/login", json={"username": "doctor", "password": "demo-password-1"})
        assert r.status_code == 200
        h = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = httpx.post(f"{base}/fhir/Patient", headers=h,
                       json={"resourceType": "Patient", "name": [{"text": "次仁卓玛"}]})
        assert r.status_code == 201
    finally:
        out = _stop(proc)
    assert f"http://127.0.0.1:{base.rsplit(':', 1)[1]}/" in out
    assert "doctor" in out and "demo-password-1" in out
    assert (tmp_path / "var" / "healthlink.db").exists()
    assert (tmp_path / "var" / "secret_key").stat().st_mode & 0o077 == 0


def test_serve_speaks_https_when_a_certificate_is_configured(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    proc, base = _serve(tmp_path, {"HEALTHLINK_TLS_CERTFILE": str(tmp_path / "cert.pem"),
                                   "HEALTHLINK_TLS_KEYFILE": str(tmp_path / "key.pem")}, scheme="https")
    try:
        r = httpx.post(f"{base}/api/auth/login", verify=False,
                       json={"username": "doctor", "password": "demo-password-1"})
        assert r.status_code == 200
        assert "secure" in r.headers["set-cookie"].lower()
        with pytest.raises(httpx.HTTPError):
            httpx.get(base.replace("https", "http") + "/healthz", timeout=2)
    finally:
        _stop(proc)


def test_db_upgrade_and_current_on_a_new_database(tmp_path, monkeypatch):
    monkeypatch.setenv("HEALTHLINK_DATABASE_URL", f"sqlite:///{tmp_path / 'new.db'}")
    runner = CliRunner()
    r = runner.invoke(cli, ["db", "current"])
    assert "empty" in r.output
    r = runner.invoke(cli, ["db", "upgrade"])
    assert r.exit_code == 0, r.output
    from alembic.script import ScriptDirectory

    from healthlink.db.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert f"revision {head}" in r.output
    assert head in runner.invoke(cli, ["db", "current"]).output


def test_bad_configuration_is_named_not_a_traceback(monkeypatch):
    monkeypatch.setenv("HEALTHLINK_SQLITE_SYNCHRONOUS", "SOMETIMES")
    r = CliRunner().invoke(cli, ["db", "current"])
    assert r.exit_code == 2
    assert "sqlite_synchronous" in r.output.lower()
