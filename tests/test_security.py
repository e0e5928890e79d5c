"""Security review as tests (issue 9, item 4): access tokens (expiry, signature, algorithm,
tampering), scopes per endpoint, the password and lock-out policy, security headers and
cookies, CSRF on every form POST of the pages, secrets only from settings.

Runs in both database passes (not marked ``fuzz``).  See docs/security.md."""

from __future__ import annotations

import base64
import re
import time
import uuid
import warnings
from pathlib import Path

import jwt
import orjson
import pytest
from conftest import PASSWORD, patient
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import ValidationError

from healthlink.accounts import add_client, add_user
from healthlink.accounts import service as accounts
from healthlink.errors import Invalid
from healthlink.settings import Settings

SRC = Path(__file__).resolve().parents[1] / "src" / "healthlink"
CSRF_REFUSAL = "did not come from this site"


def _user(platform, make_institution, *roles: str) -> str:  # noqa: ANN001
    name = f"sec-{uuid.uuid4().hex[:10]}"
    add_user(platform.db, username=name, password=PASSWORD, display_name=name,
             roles=list(roles or ["doctor"]), institution_id=make_institution(),
             practitioner_id=f"prac-{name}")
    return name


def _claims(sub: str, **extra: object) -> dict:
    now = int(time.time())
    return {"iss": "healthlink", "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex, "sub": sub,
            "knd": "user", "roles": ["doctor"], "scope": "user/*.cruds", **extra}


def _b64(d: dict) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(d)).rstrip(b"=").decode()


# --------------------------------------------------------------------- tokens
def _hs512(key: str) -> str:
    with warnings.catch_warnings():  # PyJWT warns that the key is short for SHA-512: that is the point
        warnings.simplefilter("ignore")
        return jwt.encode(_claims("mallory"), key, algorithm="HS512")


FORGED = ["expired", "wrong key", "alg none", "alg none, signature kept", "HS512 with the key",
          "tampered payload", "wrong issuer", "no expiry", "not a jwt", "empty signature"]


def _forged_tokens(key: str) -> dict[str, str]:
    good = jwt.encode(_claims("mallory"), key, algorithm="HS256")
    head, body, sig = good.split(".")
    tampered = _b64({**_claims("mallory"), "roles": ["system_admin"], "ins": "another-org"})
    return {
        "expired": jwt.encode(_claims("mallory", iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
                              key, algorithm="HS256"),
        "wrong key": jwt.encode(_claims("mallory"), "another-key-" + "y" * 40, algorithm="HS256"),
        "alg none": _b64({"alg": "none", "typ": "JWT"}) + "." + body + ".",
        "alg none, signature kept": _b64({"alg": "none", "typ": "JWT"}) + "." + body + "." + sig,
        "HS512 with the key": _hs512(key),
        "tampered payload": f"{head}.{tampered}.{sig}",
        "wrong issuer": jwt.encode(_claims("mallory", iss="someone-else"), key, algorithm="HS256"),
        "no expiry": jwt.encode({k: v for k, v in _claims("mallory").items() if k != "exp"}, key,
                                algorithm="HS256"),
        "not a jwt": "not-a-token",
        "empty signature": f"{head}.{body}.",
    }


@pytest.mark.parametrize("kind", FORGED)
def test_a_forged_or_expired_token_is_refused_with_401_and_www_authenticate(client, settings, kind):
    token = _forged_tokens(settings.signing_key())[kind]
    h = {"Authorization": f"Bearer {token}"}
    for path, ctype in (("/api/me", "application/problem+json"), ("/fhir/Patient", "application/fhir+json")):
        r = client.get(path, headers=h)
        assert r.status_code == 401, (kind, path, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.headers["content-type"] == ctype
        assert "mallory" not in r.text and "Traceback" not in r.text
    assert client.post("/fhir/Patient", json=patient(), headers=h).status_code == 401
    # the cookie path checks the same signature
    with TestClient(client.app) as c:
        c.cookies.set("hl_token", token)
        assert c.get("/api/me").status_code == 401
        assert c.get("/", follow_redirects=False).status_code == 303  # the page sends to login


def test_a_token_of_the_platform_itself_is_accepted(client, staff):
    # the counterpart of the forged ones: the same requests with a real token succeed
    s = staff("doctor")
    assert client.get("/api/me", headers=s.headers).status_code == 200
    assert client.get("/fhir/Patient", headers=s.headers).status_code == 200


# --------------------------------------------------------------------- scopes
def _token(client, username: str, scope: str) -> dict[str, str]:  # noqa: ANN001
    r = client.post("/api/auth/login", json={"username": username, "password": PASSWORD, "scope": scope})
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == scope
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _writes(client, h: dict[str, str], pid: str) -> dict[str, int]:  # noqa: ANN001
    """Every FHIR write interaction on Patient, with its status."""
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient(), "request": {"method": "POST", "url": "Patient"}}]}
    ident = {"identifier": [{"system": "urn:test:mrn", "value": uuid.uuid4().hex}]}
    return {
        "create": client.post("/fhir/Patient", json=patient(), headers=h).status_code,
        "update": client.put(f"/fhir/Patient/{pid}", json=patient(id=pid, gender="female"), headers=h).status_code,
        "conditional update": client.put(f"/fhir/Patient?identifier=urn:test:mrn|{uuid.uuid4().hex}",
                                         json=patient(**ident), headers=h).status_code,
        "delete": client.delete(f"/fhir/Patient/{pid}", headers=h).status_code,
        "transaction": client.post("/fhir", json=bundle, headers=h).status_code,
    }


def test_a_read_only_user_scope_reads_but_cannot_write_anywhere(client, platform, make_institution, staff):
    name = _user(platform, make_institution, "doctor")
    full = _token(client, name, "user/*.cruds")
    pid = client.post("/fhir/Patient", json=patient(), headers=full).json()["id"]
    ro = _token(client, name, "user/*.rs")
    assert client.get(f"/fhir/Patient/{pid}", headers=ro).status_code == 200
    assert client.get("/fhir/Patient", headers=ro).status_code == 200
    statuses = _writes(client, ro, pid)
    # a transaction Bundle reports the refused entry in its own response or refuses the whole
    assert statuses.pop("transaction") in (400, 403)
    assert set(statuses.values()) == {403}, statuses
    assert client.get(f"/fhir/Patient/{pid}", headers=full).json()["gender"] == "male"  # nothing changed


def test_a_scope_for_one_type_gives_nothing_on_another(client, platform, make_institution):
    name = _user(platform, make_institution, "doctor")
    h = _token(client, name, "user/Observation.rs")
    assert client.get("/fhir/Observation", headers=h).status_code == 200
    assert client.get("/fhir/Patient", headers=h).status_code == 403
    assert client.post("/fhir/Patient", json=patient(), headers=h).status_code == 403


def test_staff_cannot_ask_for_patient_or_system_scopes_at_login(client, platform, make_institution):
    name = _user(platform, make_institution, "doctor")
    for scope in ("patient/*.read", "system/*.cruds", "user/*.cruds patient/Patient.rs"):
        r = client.post("/api/auth/login", json={"username": name, "password": PASSWORD, "scope": scope})
        assert r.status_code == 400 and "user/ scopes only" in r.json()["detail"], scope


def test_a_system_client_gets_only_the_scopes_it_was_registered_with(client, platform, make_institution):
    org = make_institution()
    cid = f"his-{uuid.uuid4().hex[:8]}"
    secret = add_client(platform.db, client_id=cid, display_name=cid, institution_id=org,
                        scopes="system/Patient.rs")
    r = client.post("/api/auth/token", data={"grant_type": "client_credentials", "client_id": cid,
                                             "client_secret": secret, "scope": "system/*.cruds"})
    assert r.status_code == 401  # nothing of what was asked is allowed
    r = client.post("/api/auth/token", data={"grant_type": "client_credentials", "client_id": cid,
                                             "client_secret": secret})
    h = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert client.get("/fhir/Patient", headers=h).status_code == 200
    assert client.post("/fhir/Patient", json=patient(), headers=h).status_code == 403
    assert client.get("/fhir/Observation", headers=h).status_code == 403


def test_patient_scopes_are_not_given_to_clients_and_grant_nothing_in_a_token(client, platform, settings,
                                                                             make_institution):
    org = make_institution()
    with pytest.raises(Invalid, match="system/"):
        add_client(platform.db, client_id=f"his-{uuid.uuid4().hex[:8]}", display_name="x",
                   institution_id=org, scopes="patient/*.read")
    # a token signed by the platform that carries only patient/ scopes (no launch patient exists
    # on this platform, SMART App Launch v2 "Scopes for requesting clinical data") reads nothing
    tok = jwt.encode(_claims(f"old-{uuid.uuid4().hex[:6]}", knd="client", ins=org, roles=["his_client"],
                            scope="patient/*.cruds"), settings.signing_key(), algorithm="HS256")
    h = {"Authorization": f"Bearer {tok}"}
    assert client.get("/fhir/Patient", headers=h).status_code == 403
    assert client.post("/fhir/Patient", json=patient(), headers=h).status_code == 403


# --------------------------------------------------------------------- passwords and lock-out
@pytest.mark.parametrize("password", ["", "short", "1234567", "       "])
def test_a_too_short_or_blank_password_is_refused(platform, make_institution, password):
    with pytest.raises(Invalid, match="password"):
        add_user(platform.db, username=f"pw-{uuid.uuid4().hex[:8]}", password=password, display_name="x",
                 roles=["doctor"], institution_id=make_institution())


def test_a_password_equal_to_the_username_is_refused(platform, make_institution):
    name = f"pw-{uuid.uuid4().hex[:10]}"
    with pytest.raises(Invalid, match="username"):
        add_user(platform.db, username=name, password=name, display_name="x", roles=["doctor"],
                 institution_id=make_institution())


def test_wrong_passwords_lock_the_account_until_the_lock_time_has_passed(client, platform, make_institution,
                                                                         monkeypatch):
    name = _user(platform, make_institution)

    def login(pw: str = PASSWORD) -> int:
        return client.post("/api/auth/login", json={"username": name, "password": pw}).status_code

    for _ in range(accounts.MAX_FAILED):
        assert login("wrong-password") == 401
    r = client.post("/api/auth/login", json={"username": name, "password": PASSWORD})
    assert r.status_code == 401 and "access_token" not in r.text  # locked: the right password fails
    assert r.headers["www-authenticate"].startswith("Bearer")
    t0 = int(time.time())
    monkeypatch.setattr(accounts, "_now", lambda: t0 + accounts.LOCK_SECONDS - 5)
    assert login() == 401
    monkeypatch.setattr(accounts, "_now", lambda: t0 + accounts.LOCK_SECONDS + 1)
    assert login() == 200


# --------------------------------------------------------------------- headers and cookies
def _check_headers(r) -> None:  # noqa: ANN001
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"


def test_pages_carry_a_content_security_policy_without_inline_script(client):
    r = client.get("/login")
    assert r.status_code == 200
    _check_headers(r)
    csp = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
    assert csp["script-src"].split()[0] == "'self'"
    assert "'unsafe-inline'" not in csp["script-src"] and "'unsafe-eval'" not in csp["script-src"]
    assert csp["object-src"] == "'none'" and csp["form-action"] == "'self'"
    assert r.headers["cache-control"] == "no-store"


def test_no_template_has_an_inline_event_handler_or_htmx_eval():
    """The policy allows neither inline handlers (``onchange=``) nor eval (htmx ``hx-on``,
    ``hx-vals="js:..."``, trigger filters): a page built with one loads but does nothing when
    clicked.  Behaviour lives in static files (``static/page.js`` and the page's own script)."""
    bad = re.compile(r"""\s(on[a-z]+|hx-on[:\w-]*)\s*=|hx-(vals|vars)\s*=\s*["']\s*(js|javascript):"""
                     r"""|hx-trigger\s*=\s*"[^"]*\[""", re.I)
    found = [f"{f.name}: {m.group(0).strip()}" for f in sorted((SRC / "web" / "templates").glob("*.html"))
             for m in bad.finditer(f.read_text(encoding="utf-8"))]
    assert found == []


def test_every_inline_script_of_the_rendered_templates_is_allowed_by_its_hash():
    """The hash is taken from the template file; the browser hashes the rendered block."""
    import hashlib

    from jinja2 import ChainableUndefined

    from healthlink.api.middleware import CSP, _inline_script_hashes
    from healthlink.web import session

    hashes = _inline_script_hashes()
    env = session._env.overlay(undefined=ChainableUndefined)
    checked = 0
    for f in (SRC / "web" / "templates").glob("*.html"):
        if "<script>" not in f.read_text(encoding="utf-8"):
            continue
        html = env.get_template(f.name).render(_=lambda s, **k: s, gettext=lambda s, **k: s,
                                               ngettext=lambda a, b, n: a, lang="en", langs={}, csrf="x")
        for block in re.findall(r"<script>(.*?)</script>", html, re.S):
            digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in hashes, f"{f.name}: an inline script the CSP would block"
            checked += 1
    assert checked >= 1 and "{hashes}" in CSP


@pytest.mark.parametrize("path", ["/api/me", "/fhir/metadata", "/healthz", "/static/htmx.min.js", "/no-such-page"])
def test_api_and_fhir_answers_carry_the_security_headers(client, path):
    _check_headers(client.get(path))


def test_https_adds_strict_transport_security(app):
    with TestClient(app, base_url="https://testserver") as c:
        assert c.get("/login").headers["strict-transport-security"].startswith("max-age=")
    with TestClient(app, base_url="http://testserver") as c:
        assert "strict-transport-security" not in c.get("/login").headers


def _cookie_attrs(resp, name: str) -> set[str]:  # noqa: ANN001
    for raw in resp.headers.get_list("set-cookie"):
        if raw.startswith(name + "="):
            return {a.strip().lower() for a in raw.split(";")[1:]}
    raise AssertionError(f"no {name} cookie in {resp.headers.get_list('set-cookie')}")


def test_session_and_csrf_cookies_are_secure_httponly_and_samesite_over_https(app, platform, make_institution):
    name = _user(platform, make_institution)
    with TestClient(app, base_url="https://testserver") as c:
        page = c.get("/login")
        attrs = _cookie_attrs(page, "hl_csrf")
        assert {"secure", "httponly", "samesite=lax"} <= attrs
        tok = re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]
        r = c.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": tok, "next": "/"},
                   follow_redirects=False)
        assert r.status_code == 303
        assert {"secure", "httponly", "samesite=lax"} <= _cookie_attrs(r, "hl_token")
        api = c.post("/api/auth/login", json={"username": name, "password": PASSWORD})
        assert {"secure", "httponly", "samesite=lax"} <= _cookie_attrs(api, "hl_token")


def test_cookies_are_secure_whenever_the_public_base_url_is_https(settings, platform):
    """Behind a TLS proxy that does not pass the scheme on, the app sees plain http."""
    from healthlink.api import create_app

    own = settings.model_copy(update={"base_url": "https://hie.example.gov.cn"})
    app = create_app(own, platform=platform)
    app.state.settings = own
    with TestClient(app, base_url="http://testserver") as c:
        assert "secure" in _cookie_attrs(c.get("/login"), "hl_csrf")
    with TestClient(create_app(settings, platform=platform), base_url="http://testserver") as c:
        assert "secure" not in _cookie_attrs(c.get("/login"), "hl_csrf")  # plain http to a test host


# --------------------------------------------------------------------- CSRF on every form
def _web_routes():  # noqa: ANN202
    from healthlink.web import router

    def walk(routes, prefix: str = ""):  # noqa: ANN001, ANN202
        for r in routes:
            if hasattr(r, "original_router"):  # FastAPI's lazily included router
                yield from walk(r.original_router.routes, prefix + (getattr(r.include_context, "prefix", "") or ""))
            elif isinstance(r, APIRoute):
                yield prefix + r.path, r
    return list(walk(router.routes))


STATE_CHANGING = [(p, r) for p, r in _web_routes() if r.methods - {"GET", "HEAD", "OPTIONS"}]


def test_the_pages_state_changing_routes_are_all_form_posts_that_take_a_csrf_token():
    assert len(STATE_CHANGING) >= 30  # the enumeration found the included routers too
    for path, route in STATE_CHANGING:
        assert route.methods == {"POST"}, path
        assert "csrf_token" in {p.name for p in route.dependant.body_params}, f"{path}: no csrf_token field"


def _form(route) -> tuple[dict, dict]:  # noqa: ANN001
    data, files = {}, {}
    for p in route.dependant.body_params:
        if p.name == "csrf_token":
            continue
        if "UploadFile" in repr(p.field_info.annotation) or "bytes" in repr(p.field_info.annotation):
            files[p.name] = ("x.ndjson", b'{"resourceType":"Patient"}\n', "application/x-ndjson")
        else:
            data[p.name] = "1"
    return data, files


@pytest.mark.parametrize(("path", "route"), STATE_CHANGING, ids=[p for p, _ in STATE_CHANGING])
def test_a_form_post_without_or_with_a_wrong_csrf_token_is_refused(app, platform, make_institution, path, route):
    name = _user(platform, make_institution, "doctor")
    url = re.sub(r"\{[^}]+\}", "1", path)
    data, files = _form(route)
    with TestClient(app, base_url="http://testserver") as c:
        c.cookies.set("hl_lang", "en")
        page = c.get("/login")
        tok = re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]
        r = c.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": tok, "next": "/"},
                   follow_redirects=False)
        assert r.status_code == 303
        for sent in ({}, {"csrf_token": "forged-" + tok}, {"csrf_token": ""}):
            r = c.post(url, data={**data, **sent}, files=files or None, follow_redirects=False)
            assert r.status_code == 403, (path, sent, r.status_code, r.text[:300])
            assert CSRF_REFUSAL in r.text, (path, r.text[:300])
        # without the cookie, even the token of the page is refused (double submit)
        c.cookies.delete("hl_csrf")
        r = c.post(url, data={**data, "csrf_token": tok}, files=files or None, follow_redirects=False)
        assert r.status_code == 403 and CSRF_REFUSAL in r.text, path


# --------------------------------------------------------------------- secrets
_SECRETISH = re.compile(
    r"""(?ix)\b(secret|password|passwd|api_?key|token|private_?key|signing_?key)\w*\s*[:=]\s*[rbf]?["']([^"'\s]{8,})["']""")
# literals that are not secrets: the demo logins (docs: "Demo credentials exist only in demo
# databases"), the name of a cookie or a form field, a placeholder shown in help text
_ALLOWED = {"demo-password-1", "demo-client-secret-1", "hl_token", "hl_patient", "hl_csrf",
            "not-a-real-password"}


def test_no_secret_looking_literal_in_the_source():
    found = []
    for f in SRC.rglob("*.py"):
        text = f.read_text(encoding="utf-8")
        if "-----BEGIN" in text and "PRIVATE KEY-----" in text.split("-----BEGIN", 1)[1][:40]:
            found.append(f"{f}: a PEM private key")
        for m in _SECRETISH.finditer(text):
            if m[2] not in _ALLOWED and not m[2].startswith(("Bearer", "http", "/", "{", "%")):
                found.append(f"{f.relative_to(SRC)}: {m[0]}")
    assert not found, found
    assert not list(SRC.rglob("*.pem")) and not list(SRC.rglob("secret_key"))


@pytest.mark.parametrize("value", ["", "short", "changeme" + " " * 30, "x" * 31])
def test_an_empty_short_or_placeholder_signing_key_stops_the_start(tmp_path, value):
    with pytest.raises(ValidationError, match="secret_key"):
        Settings(secret_key=value, data_dir=tmp_path)


def test_without_a_configured_key_a_random_one_is_kept_private_in_the_data_directory(tmp_path):
    a = Settings(data_dir=tmp_path / "a").signing_key()
    b = Settings(data_dir=tmp_path / "b").signing_key()
    assert a != b and len(a) >= 32
    assert (tmp_path / "a" / "secret_key").stat().st_mode & 0o077 == 0
    assert Settings(data_dir=tmp_path / "a").signing_key() == a  # kept across restarts


# --------------------------------------------------------------------- request size and rate limits
def _limited_app(settings, platform, **limits: int):  # noqa: ANN001, ANN202
    """An app of the test's own with low limits, on the session's platform and database."""
    from healthlink.api import create_app

    own = settings.model_copy(update=limits)
    app = create_app(own, platform=platform)
    app.state.settings = own  # the middleware reads the app's settings (the platform's are shared)
    return app


def test_a_body_over_the_limit_gets_413_in_each_dialect_and_stores_nothing(settings, platform, staff):
    s = staff("doctor")
    family = f"Big{uuid.uuid4().hex[:8]}"
    big = patient(name=[{"family": family, "given": ["x" * 3000]}])
    with TestClient(_limited_app(settings, platform, max_body_bytes=2000)) as c:
        r = c.post("/fhir/Patient", json=big, headers=s.headers)
        assert r.status_code == 413
        assert r.headers["content-type"] == "application/fhir+json"
        issue = r.json()["issue"][0]
        assert r.json()["resourceType"] == "OperationOutcome" and issue["code"] == "too-costly"
        assert "2000 bytes" in issue["diagnostics"]
        # a chunked body (no Content-Length) is stopped once it passes the limit
        r = c.post("/fhir/Patient", content=iter([orjson.dumps(big)[:1500], orjson.dumps(big)[1500:]]),
                   headers={**s.headers, "content-type": "application/fhir+json"})
        assert r.status_code == 413 and r.json()["issue"][0]["code"] == "too-costly", r.text
        found = c.get(f"/fhir/Patient?family={family}", headers=s.headers)
        assert found.status_code == 200 and not found.json().get("entry")  # nothing was stored
        r = c.post("/api/auth/login", json={"username": "x" * 3000, "password": "y"})
        assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 413 and "2000 bytes" in r.json()["detail"]
        r = c.post("/login", data={"username": "x" * 3000, "password": "y"})
        assert r.status_code == 413 and r.headers["content-type"].startswith("text/html")
        assert "请求过大" in r.text
        c.cookies.set("hl_lang", "en")
        r = c.post("/login", content=iter([b"username=" + b"x" * 1500, b"x" * 1500]),
                   headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 413 and "larger than this platform accepts" in r.text
        assert "Traceback" not in r.text
        assert c.post("/fhir/Patient", json=patient(), headers=s.headers).status_code == 201  # small is fine


def test_a_client_over_its_rate_gets_429_with_retry_after_and_others_are_not_slowed(settings, platform, staff):
    a, b = staff("doctor"), staff("doctor")
    with TestClient(_limited_app(settings, platform, rate_limit_per_minute=3)) as c:
        assert [c.get("/fhir/Patient", headers=a.headers).status_code for _ in range(3)] == [200] * 3
        r = c.get("/fhir/Patient", headers=a.headers)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["resourceType"] == "OperationOutcome" and r.json()["issue"][0]["code"] == "throttled"
        assert "Try again in" in r.json()["issue"][0]["diagnostics"]
        r = c.get("/api/me", headers=a.headers)
        assert r.status_code == 429 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["title"] == "Too Many Requests" and int(r.headers["retry-after"]) >= 1
        assert c.get("/fhir/Patient", headers=b.headers).status_code == 200  # another user: own bucket
    # the session's app has no limit (the default): the same client goes on
    from healthlink.settings import Settings as S
    assert S.model_fields["rate_limit_per_minute"].default == 0


def test_sign_in_attempts_and_anonymous_requests_are_limited_per_address(settings, platform, make_institution):
    name = _user(platform, make_institution)
    with TestClient(_limited_app(settings, platform, rate_limit_login_per_minute=2)) as c:
        for _ in range(2):
            assert c.post("/api/auth/login", json={"username": name, "password": "wrong-one"}).status_code == 401
        r = c.post("/api/auth/login", json={"username": name, "password": PASSWORD})
        assert r.status_code == 429 and "access_token" not in r.text and int(r.headers["retry-after"]) >= 1
    with TestClient(_limited_app(settings, platform, rate_limit_anonymous_per_minute=2)) as c:
        assert [c.get("/login").status_code for _ in range(2)] == [200, 200]
        r = c.get("/login")
        assert r.status_code == 429 and r.headers["content-type"].startswith("text/html")
        assert "请求过多" in r.text and int(r.headers["retry-after"]) >= 1
        assert c.get("/fhir/metadata").status_code == 429


def test_a_token_bucket_refills_at_its_rate():
    from healthlink.api.middleware import TokenBuckets

    b = TokenBuckets(60)  # one a second, bursts of 60
    assert all(b.take("k", now=100.0) == 0 for _ in range(60))
    assert b.take("k", now=100.0) == 1
    assert b.take("k", now=101.01) == 0 and b.take("k", now=101.01) == 1
    assert b.take("other", now=101.01) == 0
    small = TokenBuckets(6, max_keys=3)  # bounded memory: idle (refilled) buckets are dropped
    for i in range(10):
        assert small.take(f"k{i}", now=200.0 + i * 60) == 0
    assert len(small._b) <= 3
