"""The witness's HTTP face (``healthlink witness serve``): ``c2sp.org/tlog-witness@v1.0.0``.

``POST /add-checkpoint``
    The spec's call.  Body: ``old <size>``, base64 proof lines, a blank line, the signed
    checkpoint.  200 with the cosignature line(s) (``text/plain``); 409 with the witness's
    latest size and ``Content-Type: text/x.tlog.size`` when the old size is not the one it
    last cosigned; 409 (problem+json) for a fork; 400 / 403 / 404 / 422 as the spec says.

``GET /checkpoint/{origin}``
    Not part of the spec (its monitor retrieval is still "TBD"): the latest checkpoint this
    witness cosigned for ``origin`` (percent-escaped, ``/`` may stay), as a signed note with the
    log's signature and the witness's cosignature.  ``healthlink ledger verify --witness``
    compares it with the local log, which catches a truncation that also removed the
    local checkpoints.

``GET /`` names the witness and its vkey; ``GET /healthz`` answers ``ok``.

A thin adapter: parsing and all checks are in :mod:`healthlink.ledger.witness`.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse, Response

from healthlink.api import errors
from healthlink.errors import NotFound, PayloadTooLarge
from healthlink.ledger.witness import (
    WITNESS_SPEC,
    SizeConflict,
    Witness,
    parse_add_checkpoint,
)

MAX_BODY = 64 * 1024  # 63 proof lines and a checkpoint with many signatures fit easily


def create_witness_app(witness: Witness) -> FastAPI:
    app = FastAPI(title="HealthLink witness", description=f"A {WITNESS_SPEC} witness.",
                  docs_url=None, redoc_url=None)
    errors.install(app)

    @app.exception_handler(SizeConflict)
    async def _size(request: Request, exc: SizeConflict) -> Response:
        # exactly this media type, without the charset Starlette adds to text/* types
        return Response(f"{exc.latest_size}\n", status_code=409,
                        headers={"Content-Type": "text/x.tlog.size"})

    @app.post("/add-checkpoint")
    async def add_checkpoint(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            raise PayloadTooLarge(f"the request body is larger than {MAX_BODY} bytes")
        old_size, proof, note = parse_add_checkpoint(body)
        lines = await run_in_threadpool(witness.add_checkpoint, old_size, proof, note)
        return PlainTextResponse(lines)

    @app.get("/checkpoint/{origin:path}")
    async def checkpoint(origin: str) -> Response:
        latest = witness.latest(origin)
        if latest is None:
            raise NotFound(f"this witness has cosigned no checkpoint of {origin!r}")
        return PlainTextResponse(latest[1])

    @app.get("/")
    async def about() -> Response:
        logs = "".join(f"log {o}\n" for o in sorted(witness.logs))
        return PlainTextResponse(f"{WITNESS_SPEC} witness\nname {witness.name}\n"
                                 f"vkey {witness.vkey}\n{logs}")

    @app.get("/healthz")
    async def healthz() -> Response:
        return PlainTextResponse("ok\n")

    return app
