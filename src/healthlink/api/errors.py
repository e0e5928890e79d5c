"""One renderer for the error family: OperationOutcome under /fhir, problem+json under
/api and elsewhere.  No stack trace ever reaches a client; unexpected errors are logged
with the request id, which the client gets to quote."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from healthlink.errors import HealthLinkError, Issue

log = logging.getLogger("healthlink.api")

_HTTP_CODE = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
              406: "not-supported", 409: "conflict", 410: "deleted", 412: "conflict",
              413: "too-costly", 415: "not-supported", 422: "processing", 429: "throttled",
              503: "transient"}
_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 410: "Gone", 412: "Precondition Failed",
           413: "Payload Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Entity",
           429: "Too Many Requests",
           500: "Internal Server Error", 503: "Service Unavailable"}


def render(request: Request, status: int, message: str, issues: list[Issue],
           headers: dict[str, str] | None = None, extra: dict[str, object] | None = None) -> Response:
    """``extra``: problem+json extension members (RFC 9457 section 3.2), such as a refused
    code's ``reason`` and ``remaining`` tries; not used under /fhir."""
    headers = dict(headers or {})
    rid = request.scope.get("state", {}).get("request_id")
    if status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="healthlink"')
    if request.url.path.startswith("/fhir"):
        body = {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}
        return Response(orjson.dumps(body), status_code=status, headers=headers,
                        media_type="application/fhir+json")
    body = {"type": "about:blank", "title": _TITLES.get(status, "Error"), "status": status,
            "detail": message, "instance": request.url.path}
    if rid:
        body["request_id"] = rid
    body.update(extra or {})
    errs = [{"code": i.code, "detail": i.diagnostics, "pointer": list(i.expression)} for i in issues
            if i.expression]
    if errs:
        body["errors"] = errs
    return Response(orjson.dumps(body), status_code=status, headers=headers,
                    media_type="application/problem+json")


def install(app: FastAPI) -> None:
    @app.exception_handler(HealthLinkError)
    async def _hl(request: Request, exc: HealthLinkError) -> Response:
        # a refused code's stable reason word and the tries left (healthlink.consent.codes)
        extra = {k: getattr(exc, k) for k in ("reason", "remaining") if getattr(exc, k, None) is not None}
        return render(request, exc.status, exc.message, exc.issues, exc.headers, extra)

    @app.exception_handler(RequestValidationError)
    async def _val(request: Request, exc: RequestValidationError) -> Response:
        issues = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            issues.append(Issue("invalid", f"{loc}: {e.get('msg')}", (loc,) if loc else ()))
        return render(request, 400 if request.url.path.startswith("/fhir") else 422,
                      "the request is not valid", issues or [Issue("invalid", "invalid request")])

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        msg = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "error")
        if exc.status_code == 404 and msg == "Not Found":
            msg = f"nothing is served at {request.url.path}"
        if exc.status_code == 405:
            msg = f"{request.method} is not supported on {request.url.path}"
        return render(request, exc.status_code, msg,
                      [Issue(_HTTP_CODE.get(exc.status_code, "processing"), msg)],
                      dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _boom(request: Request, exc: Exception) -> Response:
        rid = request.scope.get("state", {}).get("request_id", "-")
        log.exception("unhandled error (request %s)", rid)
        msg = f"internal error; quote request id {rid} to the platform's administrators"
        # this handler runs outside the request middleware, so set the id header here
        return render(request, 500, msg, [Issue("exception", msg)], {"X-Request-ID": rid})
