"""Schemathesis over the platform API's OpenAPI (issue 9, item 3): every operation of the app's
schema (/api, /cds-services, /healthz, /metrics), in-process against the real app and database.

- authenticated with real tokens (a role that may use the operation, so requests get past the
  role check): no 500, no stack trace in any body; Schemathesis's ``ignored_auth`` check sends
  each accepted request again without and with a broken token, which must be refused;
- without valid auth (none, a forged token, an expired one): 0 requests accepted on every
  operation that needs auth, and the operations that do not are exactly the known public ones.

Which operations need auth is read from the routes themselves (a dependency on the request
context or the patient session), and declared as a bearer security scheme in the schema given to
Schemathesis, since the app's own schema does not declare it.  Bounded: ``MAX_EXAMPLES`` per
operation, no deadline (a first request may build caches), no shrinking beyond Hypothesis's own.
"""

from __future__ import annotations

import copy
import inspect
import time
import uuid

import jwt
import pytest
import schemathesis
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hsettings
from schemathesis.checks import ignored_auth, not_a_server_error

from healthlink.api.deps import get_context, get_patient_session

pytestmark = pytest.mark.fuzz

MAX_EXAMPLES = 12
STACK_MARKERS = ("Traceback (most recent call last)", 'File "/', "sqlalchemy.exc", "psycopg.", "sqlite3.")

# The operations that answer without a token, and why (a new public operation fails the test
# below until it is listed here on purpose).
PUBLIC = {
    "POST /api/auth/login": "staff sign-in",
    "POST /api/auth/token": "OAuth2 client credentials",
    "POST /api/auth/logout": "forgets the cookie; needs nothing",
    "GET /healthz": "liveness for the load balancer",
    "GET /api/ping": "bare benchmark endpoint",
    "GET /metrics": "Prometheus scrape (restrict at the proxy, docs/operations.md)",
    "POST /api/patient/signup/start": "patient sign-up by resident id and phone",
    "POST /api/patient/signup/confirm": "patient sign-up, the SMS code",
    "POST /api/patient/login/start": "patient sign-in",
    "POST /api/patient/login/verify": "patient sign-in, the SMS code",
    "POST /api/patient/logout": "forgets the patient cookie",
    "GET /api/ledger/checkpoint": "the signed checkpoint is public (witnesses, patients verify it)",
    "GET /api/ledger/vkey": "the ledger's public key",
    "GET /api/ledger/proof/inclusion": "Merkle proofs reveal only hashes",
    "GET /api/ledger/proof/consistency": "Merkle proofs reveal only hashes",
    "GET /cds-services": "CDS Hooks discovery (CDS Hooks 2.0 section 'Discovery')",
}

# the role that may use the operations under a path (the doctor for the rest)
ROLE_FOR = [("/api/empi", "empi_reviewer"), ("/api/ledger", "audit_admin"),
            ("/api/prereview/queue", "prereview_pharmacist"), ("/api/prereview/statistics", "prereview_pharmacist"),
            ("/api/prereview/prescriptions/{rx_id}/", "prereview_pharmacist"), ("/api/bedside", "nurse"),
            ("/api/dashboard", "health_commission_leader"), ("/api/consent/break-glass/review", "quality_manager"),
            ("/api/consent/break-glass/{grant_id}/review", "quality_manager"), ("/api/recognition/rates", "quality_manager")]


def _walk(routes):  # noqa: ANN001, ANN202
    for r in routes:
        if hasattr(r, "original_router"):  # FastAPI's lazily included routers
            yield from _walk(r.original_router.routes)
        elif isinstance(r, APIRoute):
            yield r


def _needs_auth(dependant) -> bool:  # noqa: ANN001
    return any(d.call in (get_context, get_patient_session) or _needs_auth(d) for d in dependant.dependencies)


def _calls_auth(endpoint) -> bool:  # noqa: ANN001
    """A handler that authenticates in its body (the CDS Hooks services read the body first)."""
    src = inspect.getsource(endpoint)
    return any(f"{f.__name__}(" in src for f in (get_context, get_patient_session))


def auth_operations(app) -> dict[str, bool]:  # noqa: ANN001
    """``"METHOD /path"`` -> whether the route needs a token, for every route in the schema."""
    out = {}
    for r in _walk(app.router.routes):
        if r.include_in_schema:
            for m in r.methods:
                out[f"{m} {r.path}"] = _needs_auth(r.dependant) or _calls_auth(r.endpoint)
    return out


@pytest.fixture(scope="module")
def tokens(staff, his_client):  # noqa: ANN001, ANN201
    """Real tokens of one institution: a user per role, and its hospital system."""
    doctor = staff("doctor")
    org = doctor.institution
    by_role = {"doctor": doctor.headers}
    for _, role in ROLE_FOR:
        if role not in by_role:
            by_role[role] = staff(role, institution=None if role in ("audit_admin", "health_commission_leader",
                                                                      "empi_reviewer") else org).headers
    by_role["his_client"] = his_client(org).headers
    return by_role


@pytest.fixture(scope="module")
def staff(client, platform):  # noqa: ANN001, ANN201 - module scope: one set of users for the module
    from conftest import PASSWORD, Staff

    from healthlink.accounts import add_user
    from healthlink.demo import organization

    made: dict[str, str] = {}

    def org_of(institution: str | None) -> str:
        if institution:
            return institution
        oid = f"org-{uuid.uuid4().hex[:10]}"
        repo = platform.system_repository("tests")
        with platform.db.write() as conn:
            repo.update_in(conn, "Organization", oid, organization(oid, f"Fuzz {oid}", "county", None), if_match=None)
        return oid

    def make(role: str, institution: str | None = None) -> Staff:
        org = org_of(institution)
        name = f"fz-{role}-{uuid.uuid4().hex[:6]}"
        add_user(platform.db, username=name, password=PASSWORD, display_name=name, roles=[role],
                 institution_id=org, practitioner_id=f"prac-{uuid.uuid4().hex[:10]}")
        r = client.post("/api/auth/login", json={"username": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        made[name] = org
        return Staff(name, org, {"Authorization": f"Bearer {r.json()['access_token']}"}, [role])
    return make


@pytest.fixture(scope="module")
def his_client(client, platform):  # noqa: ANN001, ANN201
    from conftest import Staff

    from healthlink.accounts import add_client

    def make(org: str) -> Staff:
        cid = f"fz-his-{uuid.uuid4().hex[:6]}"
        secret = add_client(platform.db, client_id=cid, display_name=cid, institution_id=org)
        r = client.post("/api/auth/token", data={"grant_type": "client_credentials", "client_id": cid,
                                                 "client_secret": secret})
        return Staff(cid, org, {"Authorization": f"Bearer {r.json()['access_token']}"}, ["his_client"])
    return make


def _schema_of_routes():  # noqa: ANN202
    """The app's OpenAPI, with the bearer scheme declared on the operations that need a token.

    Built at import (``@schema.parametrize()`` needs the schema then; the pytest plugin's lazy
    ``from_fixture`` does not run on this pytest) from an app with no platform behind it: the
    schema depends only on the routes.  Requests go to the session's real app (``app=``)."""
    import tempfile
    from types import SimpleNamespace

    from healthlink.api import create_app
    from healthlink.settings import Settings

    routes_only = create_app(Settings(secret_key="s" * 40, data_dir=tempfile.gettempdir(), log_level="WARNING"),
                             platform=SimpleNamespace())  # type: ignore[arg-type]
    raw = copy.deepcopy(routes_only.openapi())
    raw.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    needs = auth_operations(routes_only)
    for path, ops in raw["paths"].items():
        for method, op in ops.items():
            if needs.get(f"{method.upper()} {path}"):
                op["security"] = [{"bearer": []}]
    return schemathesis.openapi.from_dict(raw)


schema = _schema_of_routes()
_AUTH: dict[int, dict[str, bool]] = {}


_SETTINGS = hsettings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                     phases=[Phase.explicit, Phase.generate],
                     suppress_health_check=list(HealthCheck))


def _headers_for(tokens: dict, path: str) -> dict[str, str]:
    if path.startswith("/cds-services"):
        return tokens["his_client"]
    for prefix, role in ROLE_FOR:
        if path.startswith(prefix):
            return tokens[role]
    return tokens["doctor"]


def _no_stack_trace(response) -> None:  # noqa: ANN001
    text = response.text
    for marker in STACK_MARKERS:
        assert marker not in text, f"{marker!r} in the body: {text[:500]}"


@schema.parametrize()
@_SETTINGS
def test_authenticated_fuzzing_finds_no_server_error_and_no_ignored_auth(case, app, tokens):  # noqa: ANN001
    case.operation.schema.app = app  # Schemathesis's own probes (ignored_auth) go in-process too
    response = case.call(app=app, headers=_headers_for(tokens, case.path))
    case.validate_response(response, checks=[not_a_server_error, ignored_auth], transport_kwargs={"app": app})
    assert response.status_code < 500, response.text[:500]
    _no_stack_trace(response)


@schema.parametrize()
@_SETTINGS
def test_unauthenticated_fuzzing_is_never_accepted_where_auth_is_needed(case, app, settings):  # noqa: ANN001
    op = f"{case.operation.method.upper()} {case.operation.path}"  # case.method may be a probe's (TRACE)
    needs = _AUTH.setdefault(id(app), auth_operations(app))[op]
    now = int(time.time())
    expired = jwt.encode({"iss": "healthlink", "iat": now - 7200, "exp": now - 3600, "sub": "doctor",
                          "knd": "user", "roles": ["doctor"], "scope": "user/*.cruds"},
                         settings.signing_key(), algorithm="HS256")
    forged = jwt.encode({"iss": "healthlink", "iat": now, "exp": now + 600, "sub": "doctor", "knd": "user",
                         "roles": ["system_admin"], "scope": "system/*.cruds"}, "x" * 48, algorithm="HS256")
    for headers in ({}, {"Authorization": f"Bearer {expired}"}, {"Authorization": f"Bearer {forged}"},
                    {"Authorization": "Basic ZG9jdG9yOmRlbW8tcGFzc3dvcmQtMQ=="}):
        response = case.call(app=app, headers=headers)
        assert response.status_code < 500, response.text[:500]
        _no_stack_trace(response)
        if needs:
            assert not 200 <= response.status_code < 300, f"{op} accepted {headers or 'no auth'}"
            assert response.status_code in (401, 403, 404, 405, 422, 400), (op, response.status_code)


def test_only_the_known_operations_are_public(app):  # noqa: ANN001
    public = {op for op, needs in auth_operations(app).items() if not needs}
    assert public == set(PUBLIC), f"new public: {public - set(PUBLIC)}; now needing auth: {set(PUBLIC) - public}"
    assert len(auth_operations(app)) > 60


def test_an_integer_id_out_of_the_databases_range_is_refused_not_a_server_error(client, tokens):  # noqa: ANN001
    """Found by this module's fuzzing: the EMPI decision id went to the database as it came, and a
    number past 64 bits raised OverflowError (SQLite) or NumericValueOutOfRange (PostgreSQL): 500."""
    h = tokens["empi_reviewer"]
    for decision in (2**63, 10**30, -(2**63) - 1):
        r = client.post("/api/empi/undo", json={"decision": decision}, headers=h)
        assert 400 <= r.status_code < 500, (decision, r.status_code, r.text[:300])
        assert r.headers["content-type"] == "application/problem+json"
