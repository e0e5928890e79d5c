"""The web application: ``create_app(settings)``."""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from healthlink import __version__
from healthlink.api import errors
from healthlink.api.cds_routes import router as cds_router
from healthlink.api.empi_routes import router as empi_router
from healthlink.api.fhir_routes import router as fhir_router
from healthlink.api.grant_routes import patient_router as patient_grant_router
from healthlink.api.grant_routes import staff_router as grant_router
from healthlink.api.healthcode_routes import router as healthcode_router
from healthlink.api.bedside_routes import router as bedside_router
from healthlink.api.dashboard_routes import router as dashboard_router
from healthlink.api.import_routes import router as import_router
from healthlink.api.ledger_routes import router as ledger_router
from healthlink.api.medsafety_routes import router as medsafety_router
from healthlink.api.middleware import JsonFormatter, Metrics, RequestMiddleware
from healthlink.api.patient_routes import router as patient_router
from healthlink.api.platform_routes import router as platform_router
from healthlink.api.prereview_routes import router as prereview_router
from healthlink.api.recognition_routes import router as recognition_router
from healthlink.runtime import Platform
from healthlink.settings import Settings
from healthlink.web import router as web_router


def configure_logging(level: str) -> None:
    root = logging.getLogger("healthlink")
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        h = logging.StreamHandler()
        h.setFormatter(JsonFormatter())
        root.addHandler(h)
    root.setLevel(level.upper())
    root.propagate = False


def request_threads(settings: Settings) -> int:
    """Requests served at once per worker (setting ``request_threads``; 0: on PostgreSQL the pool
    size less the connections of the background threads, BACKGROUND_CONNECTIONS; anyio's default of
    40 on SQLite, whose writers queue on one lock anyway)."""
    if settings.request_threads:
        return settings.request_threads
    if settings.database_url.startswith("postgresql"):
        return max(1, settings.db_pool_size - BACKGROUND_CONNECTIONS)
    return 40


BACKGROUND_CONNECTIONS = 3  # the audit writer, the ledger sequencer, one more (dashboard, imports)


def create_app(settings: Settings, *, platform: Platform | None = None) -> FastAPI:
    """Build the app.  ``platform`` may be passed in (tests share one per database)."""
    configure_logging(settings.log_level)
    own = platform is None
    plat = platform or Platform.start(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # What exists at start (modules, FHIR definitions, the app) lives as long as the
        # process; freezing it keeps the garbage collector's full passes, which otherwise
        # walk all of it and stop every request for tens of milliseconds, to new objects.
        gc.freeze()
        # Request handlers run in threads; each holds at most one pooled connection.  More threads
        # than pooled connections made the pool open connections beyond its size and close them
        # again on return, over and over under load: a new PostgreSQL backend per request, which
        # cost more than the request (ADR 0017).
        anyio.to_thread.current_default_thread_limiter().total_tokens = request_threads(settings)
        yield
        if own:
            plat.close()

    app = FastAPI(title="HealthLink platform API", version=__version__, lifespan=lifespan,
                  description="Platform API (login, tokens, operations). The FHIR R4 API is "
                              "under /fhir; its CapabilityStatement is at /fhir/metadata.")
    app.state.platform = plat
    app.state.settings = settings
    app.state.metrics = Metrics()
    errors.install(app)
    # the CDS Hooks services first: each request walks the routes in order (twice for an
    # included router, ADR 0007), and the order-time hooks are the hottest path (ADR 0016);
    # their paths (/cds-services/...) meet no other router's
    app.include_router(cds_router)  # /cds-services (CDS Hooks 2.0, docs/cds-hooks.md)
    app.include_router(web_router)  # pages; before the APIs, so its '/' is the home page
    app.include_router(platform_router)
    app.include_router(empi_router)
    app.include_router(healthcode_router)
    app.include_router(patient_router)
    app.include_router(grant_router)
    app.include_router(patient_grant_router)
    app.include_router(ledger_router)
    app.include_router(recognition_router)
    app.include_router(medsafety_router)  # issue 8: order-time checks, overrides, knowledge
    app.include_router(prereview_router)  # issue 8: regional prescription pre-review centre
    app.include_router(bedside_router)  # issue 8: bedside verification (three checks, seven pairs)
    app.include_router(dashboard_router)  # issue 10: the leaders' dashboard
    app.include_router(import_router)  # before fhir_router, whose /{res_type} would take $import
    app.include_router(fhir_router)
    app.add_middleware(RequestMiddleware, metrics=app.state.metrics,  # type: ignore[arg-type]
                       max_body=settings.max_body_bytes)
    return app
