"""Authentication through the real HTTP app and the CLI: staff logins with lockout,
client credentials, token expiry, the session cookie, stored password hashes, the
separation of the three administrator roles."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import PASSWORD
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from healthlink.accounts import AccountService, add_client, add_user
from healthlink.accounts import service as accounts
from healthlink.cli.main import app as cli
from healthlink.db import tables as t
from healthlink.errors import Conflict, Invalid


def _user(platform, make_institution, *roles: str, password: str = PASSWORD) -> str:  # noqa: ANN001
    name = f"u-{uuid.uuid4().hex[:10]}"
    add_user(platform.db, username=name, password=password, display_name=f"Dr {name}",
             roles=list(roles or ["doctor"]), institution_id=make_institution(),
             practitioner_id=f"prac-{name}")
    return name


def _login(client, username: str, password: str = PASSWORD, **extra):  # noqa: ANN001, ANN201
    return client.post("/api/auth/login", json={"username": username, "password": password, **extra})


# --------------------------------------------------------------------- staff login
def test_login_returns_a_bearer_token_that_opens_the_api(client, platform, make_institution):
    name = _user(platform, make_institution)
    r = _login(client, name)
    assert r.status_code == 200, r.text
    tok = r.json()
    assert tok["token_type"] == "Bearer" and tok["expires_in"] == platform.settings.token_ttl_seconds
    assert tok["scope"] == "user/*.cruds"
    r = client.get("/api/me", headers={"Authorization": f"Bearer {tok['access_token']}"})
    assert r.status_code == 200 and r.json()["username"] == name


def test_wrong_password_and_unknown_user_get_the_same_answer(client, platform, make_institution):
    name = _user(platform, make_institution)
    wrong = _login(client, name, "not-the-password")
    unknown = _login(client, f"nobody-{uuid.uuid4().hex[:6]}", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    assert wrong.headers["content-type"] == "application/problem+json"
    assert wrong.json()["detail"] == unknown.json()["detail"]
    assert "access_token" not in wrong.text


def test_five_failures_lock_the_account_for_five_minutes(client, platform, make_institution, monkeypatch):
    name = _user(platform, make_institution)
    for _ in range(accounts.MAX_FAILED):
        assert _login(client, name, "wrong-password").status_code == 401
    assert _login(client, name).status_code == 401  # even the right password
    t0 = int(time.time())
    monkeypatch.setattr(accounts, "_now", lambda: t0 + accounts.LOCK_SECONDS - 60)
    assert _login(client, name).status_code == 401  # still locked; this try does not extend the lock
    monkeypatch.setattr(accounts, "_now", lambda: t0 + accounts.LOCK_SECONDS + 2)
    assert _login(client, name).status_code == 200
    with platform.db.read() as conn:
        row = conn.execute(select(t.user_account).where(t.user_account.c.username == name)).one()
    assert row.failed_logins == 0 and row.locked_until is None


def test_failures_below_the_limit_are_forgotten_after_a_success(client, platform, make_institution):
    name = _user(platform, make_institution)
    for _ in range(accounts.MAX_FAILED - 1):
        assert _login(client, name, "wrong-password").status_code == 401
    assert _login(client, name).status_code == 200
    for _ in range(accounts.MAX_FAILED - 1):
        assert _login(client, name, "wrong-password").status_code == 401
    assert _login(client, name).status_code == 200


def test_parallel_password_guesses_cannot_slip_past_the_lockout(client, platform, make_institution):
    name = _user(platform, make_institution)
    n = 3 * accounts.MAX_FAILED
    barrier = threading.Barrier(n)

    def guess(i: int) -> int:
        barrier.wait()
        return _login(client, name, f"guess-{i}").status_code

    with ThreadPoolExecutor(n) as pool:
        assert set(pool.map(guess, range(n))) == {401}
    with platform.db.read() as conn:
        row = conn.execute(select(t.user_account).where(t.user_account.c.username == name)).one()
    assert row.failed_logins >= accounts.MAX_FAILED and row.locked_until is not None
    assert _login(client, name).status_code == 401


def test_disabled_accounts_cannot_log_in(client, platform, make_institution):
    from sqlalchemy import update

    name = _user(platform, make_institution)
    with platform.db.write() as conn:
        conn.execute(update(t.user_account).where(t.user_account.c.username == name).values(active=False))
    assert _login(client, name).status_code == 401


# --------------------------------------------------------------------- machine clients
@pytest.fixture
def registered(platform, make_institution):  # noqa: ANN001, ANN201
    cid = f"his-{uuid.uuid4().hex[:10]}"
    org = make_institution()
    secret = add_client(platform.db, client_id=cid, display_name="County HIS", institution_id=org)
    return cid, secret, org


def test_client_credentials_in_the_form(client, registered):
    cid, secret, org = registered
    r = client.post("/api/auth/token", data={"grant_type": "client_credentials", "client_id": cid,
                                             "client_secret": secret})
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    me = client.get("/api/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}).json()
    assert me == {"kind": "client", "username": cid, "display": "County HIS", "institution": org,
                  "department": None, "practitioner": None, "roles": ["his_client"],
                  "scopes": ["system/*.cruds"]}


def test_client_credentials_with_http_basic(client, registered):
    cid, secret, _ = registered
    basic = base64.b64encode(f"{cid}:{secret}".encode()).decode()
    r = client.post("/api/auth/token", data={"grant_type": "client_credentials"},
                    headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 200, r.text
    assert client.get("/fhir/Patient", headers={"Authorization": f"Bearer {r.json()['access_token']}"}
                      ).status_code == 200


def test_wrong_client_secret_is_refused(client, registered):
    cid, secret, _ = registered
    for data, headers in (
        ({"grant_type": "client_credentials", "client_id": cid, "client_secret": secret + "x"}, {}),
        ({"grant_type": "client_credentials", "client_id": "no-such-client", "client_secret": secret}, {}),
        ({"grant_type": "client_credentials"},
         {"Authorization": "Basic " + base64.b64encode(f"{cid}:wrong".encode()).decode()}),
        ({"grant_type": "client_credentials", "client_id": cid}, {}),
    ):
        r = client.post("/api/auth/token", data=data, headers=headers)
        assert r.status_code == 401, (data, r.text)
        assert "access_token" not in r.text
    r = client.post("/api/auth/token", data={"grant_type": "password", "client_id": cid,
                                             "client_secret": secret})
    assert r.status_code == 400


def test_client_secrets_and_passwords_are_stored_as_argon2_hashes(platform, make_institution, registered):
    cid, secret, _ = registered
    name = _user(platform, make_institution)
    with platform.db.read() as conn:
        pw = conn.execute(select(t.user_account.c.password_hash)
                          .where(t.user_account.c.username == name)).scalar_one()
        sh = conn.execute(select(t.oauth_client.c.secret_hash)
                          .where(t.oauth_client.c.client_id == cid)).scalar_one()
    assert pw.startswith("$argon2id$") and PASSWORD not in pw
    assert sh.startswith("$argon2id$") and secret not in sh
    other = _user(platform, make_institution)
    with platform.db.read() as conn:
        pw2 = conn.execute(select(t.user_account.c.password_hash)
                           .where(t.user_account.c.username == other)).scalar_one()
    assert pw2 != pw  # salted


# --------------------------------------------------------------------- tokens
def test_an_expired_token_is_refused(client, platform, make_institution):
    name = _user(platform, make_institution)
    short = AccountService(platform.db, platform.audit, key=platform.settings.signing_key(), ttl=1)
    tok = short.login(name, PASSWORD).access_token
    h = {"Authorization": f"Bearer {tok}"}
    assert client.get("/api/me", headers=h).status_code == 200
    time.sleep(2.1)
    r = client.get("/api/me", headers=h)
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    assert client.get("/fhir/Patient", headers=h).status_code == 401


def test_api_me_shows_the_request_context(client, platform, make_institution):
    name = f"u-{uuid.uuid4().hex[:10]}"
    org = make_institution()
    add_user(platform.db, username=name, password=PASSWORD, display_name="Dr Dawa", roles=["nurse", "pharmacist"],
             institution_id=org, department_id="dept-er", practitioner_id="prac-dawa-" + name)
    tok = _login(client, name, scope="user/Observation.rs user/Patient.r").json()["access_token"]
    me = client.get("/api/me", headers={"Authorization": f"Bearer {tok}"}).json()
    assert me == {"kind": "user", "username": name, "display": "Dr Dawa", "institution": org,
                  "department": "dept-er", "practitioner": "prac-dawa-" + name,
                  "roles": ["nurse", "pharmacist"], "scopes": ["user/Observation.rs", "user/Patient.r"]}


# --------------------------------------------------------------------- session cookie
@pytest.mark.parametrize(("base_url", "secure"), [
    ("https://hl.example", True), ("http://hl.example", True), ("http://localhost", False)])
def test_session_cookie_is_httponly_and_secure_off_localhost(app, platform, make_institution, base_url, secure):
    name = _user(platform, make_institution)
    with TestClient(app, base_url=base_url) as c:
        r = _login(c, name)
        assert r.status_code == 200
        cookie = r.headers["set-cookie"]
        attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
        assert cookie.startswith("hl_token=") and "httponly" in attrs and "samesite" in attrs
        assert ("secure" in attrs) is secure
        if base_url.startswith("https") or not secure:  # the client only sends it where allowed
            assert c.get("/api/me").json()["username"] == name  # the cookie alone authenticates
            assert c.post("/api/auth/logout").status_code == 204
            assert c.get("/api/me").status_code == 401


# --------------------------------------------------------------------- accounts
@pytest.mark.parametrize("roles", [
    ["system_admin", "audit_admin"], ["system_admin", "security_admin"], ["security_admin", "audit_admin"],
    ["audit_admin", "doctor"], ["system_admin", "nurse"]])
def test_the_three_administrator_roles_are_never_combined(platform, roles):
    with pytest.raises(Invalid, match="separation of duties"):
        add_user(platform.db, username=f"u-{uuid.uuid4().hex[:8]}", password=PASSWORD, display_name="x",
                 roles=roles, institution_id=None)


def test_add_user_rejects_bad_input(platform):
    for kw in ({"roles": ["surgeon-general"]}, {"roles": []}, {"roles": ["his_client"]},
               {"roles": ["doctor"], "password": "short"}):
        args = {"username": f"u-{uuid.uuid4().hex[:8]}", "password": PASSWORD, "display_name": "x",
                "institution_id": None} | kw
        with pytest.raises(Invalid):
            add_user(platform.db, **args)
    name = f"u-{uuid.uuid4().hex[:8]}"
    add_user(platform.db, username=name, password=PASSWORD, display_name="x", roles=["doctor"], institution_id=None)
    with pytest.raises(Conflict):
        add_user(platform.db, username=name, password=PASSWORD, display_name="x", roles=["doctor"],
                 institution_id=None)


# --------------------------------------------------------------------- CLI
@pytest.fixture
def cli_env(settings, tmp_path):  # noqa: ANN001, ANN201
    return {"HEALTHLINK_DATABASE_URL": settings.database_url, "HEALTHLINK_DATA_DIR": str(tmp_path),
            "HEALTHLINK_SECRET_KEY": settings.signing_key(), "HEALTHLINK_LOG_LEVEL": "WARNING"}


def test_cli_user_add_reads_the_password_from_stdin(client, cli_env, make_institution):
    org = make_institution()
    name = f"cli-{uuid.uuid4().hex[:8]}"
    secret = "cli-password-" + uuid.uuid4().hex[:6]
    r = CliRunner().invoke(cli, ["user", "add", name, "--role", "doctor", "--institution", org,
                                 "--name", "Dr CLI", "--practitioner", "prac-" + name, "--password-stdin"],
                           input=secret + "\n", env=cli_env)
    assert r.exit_code == 0, r.output
    assert f"user {name} added" in r.output and secret not in r.output
    tok = _login(client, name, secret)
    assert tok.status_code == 200, tok.text
    me = client.get("/api/me", headers={"Authorization": f"Bearer {tok.json()['access_token']}"}).json()
    assert (me["institution"], me["display"], me["roles"]) == (org, "Dr CLI", ["doctor"])


def test_cli_user_add_refuses_combined_administrator_roles_and_duplicates(cli_env, make_institution):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    runner = CliRunner()
    r = runner.invoke(cli, ["user", "add", name, "--role", "system_admin", "--role", "audit_admin",
                            "--password-stdin"], input=PASSWORD + "\n", env=cli_env)
    assert r.exit_code == 1 and "separation of duties" in r.output.replace("\n", " ")
    args = ["user", "add", name, "--role", "audit_admin", "--password-stdin"]
    assert runner.invoke(cli, args, input=PASSWORD + "\n", env=cli_env).exit_code == 0
    r = runner.invoke(cli, args, input=PASSWORD + "\n", env=cli_env)
    assert r.exit_code == 1 and "already exists" in r.output
