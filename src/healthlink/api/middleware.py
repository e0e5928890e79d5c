"""Pure ASGI middleware: request id, JSON access log, Prometheus metrics, body-size limit,
per-client rate limit and the security headers of every response (docs/security.md).

The body-size limit (``max_body_bytes``) answers 413 before the application reads a byte when
``Content-Length`` says too much, and stops a chunked body as soon as it passes the limit.
The rate limit is a token bucket per client *in this worker process* (a deployment with N
workers lets a client through up to N times the configured rate; a shared limiter such as the
reverse proxy's is the place for a global one).  Both answer in the caller's dialect:
OperationOutcome under ``/fhir``, problem+json under ``/api`` and the other machine paths, a
small page (Chinese or English, as the ``hl_lang`` cookie says) elsewhere.
"""

from __future__ import annotations

import hashlib
import html
import logging
import math
import re
import time
import uuid
from base64 import b64encode
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.exceptions import HTTPException

log = logging.getLogger("healthlink.access_log")
_RID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

#: paths answered as machine errors (problem+json or OperationOutcome), never as a page
_MACHINE = ("/fhir", "/api", "/cds-services", "/healthz", "/metrics", "/docs", "/openapi.json", "/redoc")
#: logins and code requests: limited per address by ``rate_limit_login_per_minute``
_LOGIN = ("/api/auth/login", "/api/auth/token", "/login", "/api/patient/login", "/portal/login",
          "/portal/signup", "/api/patient/signup")


def _inline_script_hashes() -> str:
    """CSP hash sources of the inline ``<script>`` blocks of the page templates (CSP Level 3,
    section 8.2), so pages may keep a small inline script without ``'unsafe-inline'``.  A
    block whose text holds template syntax would not hash the same once rendered; none does."""
    tdir = Path(__file__).resolve().parents[1] / "web" / "templates"
    out = []
    for f in sorted(tdir.glob("*.html")):
        for m in re.finditer(r"<script>(.*?)</script>", f.read_text(encoding="utf-8"), re.S):
            out.append("'sha256-" + b64encode(hashlib.sha256(m.group(1).encode()).digest()).decode() + "'")
    return " ".join(out)


# Pages: scripts only from this site (plus the hashed inline blocks), no plugins, no framing,
# forms only to this site.  Inline style attributes stay allowed (the templates use a few; a
# style cannot run script).  The OpenAPI pages (/docs, /redoc) load Swagger UI from its CDN
# and get no CSP of their own beyond frame-ancestors.
CSP = ("default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; object-src 'none'; "
       "base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
_DOCS_CSP = "frame-ancestors 'none'; object-src 'none'"


def security_headers(path: str, scheme: str) -> list[tuple[bytes, bytes]]:
    """The headers every response carries (OWASP Secure Headers Project); four variants, built once."""
    key = (path.startswith(("/docs", "/redoc")), scheme == "https")
    out = _HEADERS.get(key)
    if out is None:
        docs, https = key
        csp = _DOCS_CSP if docs else CSP.format(hashes=_inline_script_hashes())
        out = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
               (b"referrer-policy", b"no-referrer"), (b"content-security-policy", csp.encode())]
        if https:
            out.append((b"strict-transport-security", b"max-age=31536000"))
        _HEADERS[key] = out
    return out


_HEADERS: dict[tuple[bool, bool], list[tuple[bytes, bytes]]] = {}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("healthlink_http_requests_total", "HTTP requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("healthlink_http_request_seconds", "HTTP request latency",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.throttled = Counter("healthlink_http_throttled_total", "Requests refused by a limit",
                                 ["limit"], registry=self.registry)


class TokenBuckets:
    """One token bucket per key: ``per_minute`` requests a minute on average, bursts of up to
    ``per_minute`` at once.  In-process (per worker).  At most ``max_keys`` buckets are kept;
    when full, the buckets that have refilled (idle clients) are forgotten first."""

    def __init__(self, per_minute: int, *, max_keys: int = 100_000) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.max_keys = max_keys
        self._b: dict[str, tuple[float, float]] = {}  # key -> (tokens, at monotonic time)

    def take(self, key: str, now: float | None = None) -> int:
        """0 when the request may pass (a token is taken), else the seconds to wait."""
        now = time.monotonic() if now is None else now
        tokens, at = self._b.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            if len(self._b) >= self.max_keys and key not in self._b:
                self._prune(now)
            self._b[key] = (tokens - 1.0, now)
            return 0
        self._b[key] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def _prune(self, now: float) -> None:
        full = [k for k, (tok, at) in self._b.items() if tok + (now - at) * self.rate >= self.capacity]
        for k in full:
            del self._b[k]
        if len(self._b) >= self.max_keys:  # all busy: start again rather than grow without end
            self._b.clear()


class _Limits:
    def __init__(self, settings) -> None:  # noqa: ANN001
        def mk(n: int) -> TokenBuckets | None:
            return TokenBuckets(n) if n and n > 0 else None

        self.client = mk(getattr(settings, "rate_limit_per_minute", 0))
        self.anonymous = mk(getattr(settings, "rate_limit_anonymous_per_minute", 0))
        self.login = mk(getattr(settings, "rate_limit_login_per_minute", 0))


_MESSAGES = {
    413: ("The upload is larger than this platform accepts ({limit} bytes at most).",
          "上传的内容超过平台允许的大小（最多 {limit} 字节）。", "Request too large", "请求过大"),
    429: ("Too many requests from you in a short time. Try again in {wait} seconds.",
          "短时间内请求过多，请在 {wait} 秒后重试。", "Too many requests", "请求过多"),
}


def refusal(scope, status: int, *, limit: int = 0, wait: int = 0,  # noqa: ANN001
            rid: str = "-") -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body and headers of a 413 or 429 sent by this middleware itself."""
    path: str = scope.get("path", "")
    en, zh, title_en, title_zh = _MESSAGES[status]
    en, zh = en.format(limit=limit, wait=wait), zh.format(limit=limit, wait=wait)
    headers: list[tuple[bytes, bytes]] = []
    if status == 429:
        headers.append((b"retry-after", str(wait).encode()))
    code = "too-costly" if status == 413 else "throttled"
    if path.startswith("/fhir"):
        body = orjson.dumps({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": code, "diagnostics": en}]})
        ctype = b"application/fhir+json"
    elif path.startswith(_MACHINE):
        title = "Payload Too Large" if status == 413 else "Too Many Requests"  # as api/errors.py
        body = orjson.dumps({"type": "about:blank", "title": title, "status": status, "detail": en,
                             "instance": path, "request_id": rid})
        ctype = b"application/problem+json"
    else:
        cookies = dict(h for h in scope.get("headers", ()) if h[0] == b"cookie")
        english = b"hl_lang=en" in cookies.get(b"cookie", b"")
        title, text = (title_en, en) if english else (title_zh, zh)
        lang = "en" if english else "zh-CN"
        body = (f'<!doctype html><html lang="{lang}"><meta charset="utf-8"><title>{status} {title}</title>'
                f'<body><main><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>'
                f'<p><a href="/">HealthLink</a> · <code>{html.escape(rid)}</code></p></main></body></html>').encode()
        ctype = b"text/html; charset=utf-8"
    headers += [(b"content-type", ctype), (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store")]
    return body, headers


class RequestMiddleware:
    def __init__(self, app, metrics: Metrics, *, max_body: int, settings=None) -> None:  # noqa: ANN001
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        # the app's settings; else (the app built before this argument existed) the ones found
        # on ``app.state.settings`` or the platform's, at the first request
        self._limits: _Limits | None = _Limits(settings) if settings is not None else None

    def limits(self, scope) -> _Limits:  # noqa: ANN001
        if self._limits is None:
            state = scope["app"].state if "app" in scope else None
            s = getattr(state, "settings", None) or getattr(getattr(state, "platform", None), "settings", None)
            self._limits = _Limits(s)
        return self._limits

    def _throttle(self, scope, headers: dict[bytes, bytes]) -> int:  # noqa: ANN001
        """Seconds to wait when a limit refuses this request, else 0."""
        lim = self.limits(scope)
        if not (lim.client or lim.anonymous or lim.login):
            return 0
        client = scope.get("client")
        ip = client[0] if client else "-"
        path = scope["path"]
        if lim.login and scope["method"] == "POST" and path.startswith(_LOGIN):
            wait = lim.login.take("ip:" + ip)
            if wait:
                self.metrics.throttled.labels("login").inc()
                return wait
        subject = None
        if lim.client or lim.anonymous:
            token = None
            auth = headers.get(b"authorization", b"").decode("latin-1")
            if auth[:7].lower() == "bearer ":
                token = auth[7:].strip()
            else:
                for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
                    k, _, v = part.strip().partition("=")
                    if k == "hl_token" and v:
                        token = v
                        break
            if token:
                try:  # the signature is checked (and cached) by the account service
                    subject = scope["app"].state.platform.accounts.actor_from_token(token).subject
                except Exception:  # noqa: BLE001 - a bad token counts as anonymous here; the route answers 401
                    subject = None
        if subject is not None and lim.client:
            wait = lim.client.take("sub:" + subject)
            if wait:
                self.metrics.throttled.labels("client").inc()
            return wait
        if subject is None and lim.anonymous:
            wait = lim.anonymous.take("ip:" + ip)
            if wait:
                self.metrics.throttled.labels("anonymous").inc()
            return wait
        return 0

    async def __call__(self, scope, receive, send):  # noqa: ANN001, ANN204
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        rid = None
        headers = dict(scope.get("headers", ()))
        cand = headers.get(b"x-request-id")
        if cand is not None:
            c = cand.decode("latin-1")
            rid = c if _RID.match(c) else None
        rid = rid or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        status = 500
        extra = security_headers(scope["path"], scope.get("scheme", "http"))

        async def _send(message):  # noqa: ANN001, ANN202
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                have = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = (list(message.get("headers", [])) + [(b"x-request-id", rid.encode())]
                                      + [(k, v) for k, v in extra if k not in have])
            await send(message)

        async def _refuse(code: int, **kw: int) -> None:
            body, hdrs = refusal(scope, code, rid=rid, **kw)
            await _send({"type": "http.response.start", "status": code, "headers": hdrs})
            await _send({"type": "http.response.body", "body": body})

        max_body = self.max_body
        seen = 0

        async def _receive():  # noqa: ANN202
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_body:
                    # raised inside the route's body reading: rendered by the app's error handlers
                    raise HTTPException(413, f"the request body is larger than {max_body} bytes")
            return message

        try:
            length = headers.get(b"content-length")
            wait = self._throttle(scope, headers)
            if wait:
                await _refuse(429, wait=wait)
            elif length is not None and length.isdigit() and int(length) > max_body:
                self.metrics.throttled.labels("body").inc()
                await _refuse(413, limit=max_body)
            else:
                await self.app(scope, _receive, _send)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            label = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], label, str(status)).inc()
            self.metrics.latency.labels(scope["method"], label).observe(elapsed)
            if log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                log.info(orjson.dumps({
                    "ts": time.time(), "request_id": rid, "method": scope["method"],
                    "path": scope["path"], "route": label, "status": status,
                    "ms": round(elapsed * 1000, 2), "client": client[0] if client else None,
                }).decode())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if msg.startswith("{"):
            return msg
        out = {"ts": record.created, "level": record.levelname, "logger": record.name, "msg": msg}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()
