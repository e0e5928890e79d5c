"""Pure ASGI middleware: request id, JSON access log, Prometheus metrics, body-size limit."""

from __future__ import annotations

import logging
import re
import time
import uuid

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram

log = logging.getLogger("healthlink.access_log")
_RID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("healthlink_http_requests_total", "HTTP requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("healthlink_http_request_seconds", "HTTP request latency",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10))


class RequestMiddleware:
    def __init__(self, app, metrics: Metrics, *, max_body: int) -> None:  # noqa: ANN001
        self.app = app
        self.metrics = metrics
        self.max_body = max_body

    async def __call__(self, scope, receive, send):  # noqa: ANN001, ANN204
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        rid = None
        for k, v in scope.get("headers", ()):
            if k == b"x-request-id":
                cand = v.decode("latin-1")
                rid = cand if _RID.match(cand) else None
                break
        rid = rid or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        status = 500

        async def _send(message):  # noqa: ANN001, ANN202
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, _send)
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
