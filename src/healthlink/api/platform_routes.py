"""Platform API under /api (problem+json errors, OpenAPI at /docs), health and metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from healthlink import __version__
from healthlink.api.deps import COOKIE, CurrentContext, CurrentPlatform
from healthlink.errors import Invalid, Unauthorized

router = APIRouter()


class LoginRequest(BaseModel):
    username: str
    password: str
    scope: str | None = None


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    scope: str


class Me(BaseModel):
    kind: str
    username: str
    display: str
    institution: str | None
    department: str | None
    practitioner: str | None
    roles: list[str]
    scopes: list[str]


def _secure_cookie(request: Request) -> bool:
    host = (request.url.hostname or "").lower()
    return not (host in ("localhost", "127.0.0.1", "::1") and request.url.scheme == "http")


@router.post("/api/auth/login", response_model=TokenResponse, tags=["auth"],
             summary="Staff login: username and password for a short-lived access token")
def login(body: LoginRequest, request: Request, platform: CurrentPlatform) -> JSONResponse:
    client = request.client
    tok = platform.accounts.login(body.username, body.password, scope=body.scope,
                                  ctx_address=client.host if client else None,
                                  request_id=request.scope["state"]["request_id"])
    resp = JSONResponse(TokenResponse(access_token=tok.access_token, expires_in=tok.expires_in,
                                      scope=tok.scope).model_dump())
    resp.set_cookie(COOKIE, tok.access_token, max_age=tok.expires_in, httponly=True,
                    samesite="lax", secure=_secure_cookie(request))
    return resp


@router.post("/api/auth/token", response_model=TokenResponse, tags=["auth"],
             summary="OAuth2 token endpoint (grant_type=client_credentials) for hospital systems")
def token(request: Request, platform: CurrentPlatform,
          grant_type: Annotated[str, Form()],
          client_id: Annotated[str | None, Form()] = None,
          client_secret: Annotated[str | None, Form()] = None,
          scope: Annotated[str | None, Form()] = None) -> JSONResponse:
    if grant_type != "client_credentials":
        raise Invalid("grant_type must be client_credentials")
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        import base64

        try:
            client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
        except Exception:  # noqa: BLE001
            raise Unauthorized("malformed Basic credentials") from None
    if not client_id or not client_secret:
        raise Unauthorized("client_id and client_secret are required")
    client = request.client
    tok = platform.accounts.client_credentials(client_id, client_secret, scope=scope,
                                               ctx_address=client.host if client else None,
                                               request_id=request.scope["state"]["request_id"])
    return JSONResponse(TokenResponse(access_token=tok.access_token, expires_in=tok.expires_in,
                                      scope=tok.scope).model_dump(),
                        headers={"Cache-Control": "no-store"})


@router.post("/api/auth/logout", tags=["auth"], status_code=204)
def logout() -> Response:
    resp = Response(status_code=204)
    resp.delete_cookie(COOKIE)
    return resp


@router.get("/api/me", response_model=Me, tags=["auth"], summary="Who the token says you are")
def me(ctx: CurrentContext) -> Me:
    a = ctx.actor
    return Me(kind=a.kind, username=a.subject, display=a.display, institution=a.institution_id,
              department=a.department_id, practitioner=a.practitioner_id, roles=sorted(a.roles),
              scopes=[str(s) for s in a.scopes])


@router.get("/healthz", tags=["operations"], summary="Liveness and database reachability")
def healthz(platform: CurrentPlatform) -> JSONResponse:
    if platform.ping():
        return JSONResponse({"status": "ok", "version": __version__,
                             "database": "sqlite" if platform.db.is_sqlite else "postgresql"})
    return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503,
                        headers={"Retry-After": "2"})


@router.get("/api/ping", tags=["operations"],
            summary="Bare endpoint: no login, no database (the server's own ceiling in benchmarks)")
async def ping() -> JSONResponse:
    return JSONResponse({"ok": True})


@router.get("/metrics", tags=["operations"], summary="Prometheus metrics")
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False)
def home() -> HTMLResponse:
    return HTMLResponse("""<!doctype html><html lang="en"><meta charset="utf-8">
<title>HealthLink</title><body style="font-family:sans-serif;max-width:40em;margin:2em auto">
<h1>HealthLink</h1><p>Regional health information platform.</p>
<ul><li><a href="/fhir/metadata">FHIR R4 CapabilityStatement</a> (<code>/fhir</code>)</li>
<li><a href="/docs">Platform API (OpenAPI)</a>: log in at <code>POST /api/auth/login</code></li>
<li><a href="/healthz">Health</a> · <a href="/metrics">Metrics</a></li></ul></body></html>""")
