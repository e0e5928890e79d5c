"""The tamper-evident ledger under /api/ledger (docs/ledger.md "Proofs").

Public, for outside verifiers (they reveal no patient data: hashes, sizes, signed tree heads):
the latest checkpoint, the log's vkey, inclusion proofs by leaf index, consistency proofs.
For the audit administrator: the ledger's status, a verification run, and the leaf and proof of
an audit record.  For anyone who may read a clinical result: that result version's leaf and proof
(the read is checked and audited by the repository).
"""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import JSONResponse, Response

from healthlink.api.deps import CurrentContext, CurrentPlatform
from healthlink.errors import Conflict, Forbidden, Invalid, Issue, NotFound
from healthlink.ledger import setup as ledger_setup

router = APIRouter(prefix="/api/ledger", tags=["ledger"])
NOTE = "text/plain; charset=utf-8"


def _b64(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


def _audit_admin(ctx) -> None:  # noqa: ANN001
    if "audit_admin" not in ctx.actor.roles and "system" not in ctx.actor.roles:
        raise Forbidden("only the audit administrator sees the ledger's status and audit records' proofs")


@router.get("/checkpoint", summary="The latest signed checkpoint (C2SP tlog-checkpoint) with cosignatures")
def checkpoint(platform: CurrentPlatform) -> Response:
    cps = platform.ledger.checkpoints(limit=1)
    if not cps:
        raise NotFound("no checkpoint yet")
    cp = cps[0]
    return Response(cp["note"] + "".join(c["line"] for c in cp["cosignatures"]), media_type=NOTE)


@router.get("/vkey", summary="The log's verifier key (signed-note vkey)")
def vkey(platform: CurrentPlatform) -> Response:
    return Response(ledger_setup.signer(platform.settings).vkey + "\n", media_type=NOTE)


@router.get("/proof/inclusion", summary="RFC 9162 inclusion proof of a leaf in the tree of a size")
def inclusion(platform: CurrentPlatform, index: Annotated[int, Query(ge=0)],
              size: Annotated[int, Query(ge=1)]) -> JSONResponse:
    try:
        proof = platform.ledger.inclusion_proof(index, size)
    except ValueError as exc:
        raise Invalid(str(exc), [Issue("invalid", str(exc), ("index",))]) from None
    return JSONResponse({"index": index, "size": size, "proof": _b64(proof)})


@router.get("/proof/consistency", summary="RFC 9162 consistency proof between two tree sizes")
def consistency(platform: CurrentPlatform, old: Annotated[int, Query(ge=1)],
                new: Annotated[int, Query(ge=1)]) -> JSONResponse:
    try:
        proof = platform.ledger.consistency_proof(old, new)
    except ValueError as exc:
        raise Invalid(str(exc), [Issue("invalid", str(exc), ("old",))]) from None
    return JSONResponse({"old": old, "new": new, "proof": _b64(proof)})


@router.get("/status", summary="Size, latest checkpoint, witnesses, last verification (audit administrator)")
def status(platform: CurrentPlatform, ctx: CurrentContext) -> JSONResponse:
    _audit_admin(ctx)
    return JSONResponse(platform.ledger_status())


@router.post("/verify", summary="Run `ledger verify` now (audit administrator)")
def verify_now(platform: CurrentPlatform, ctx: CurrentContext) -> JSONResponse:
    _audit_admin(ctx)
    return JSONResponse(platform.verify_ledger(ctx).to_json())


@router.get("/audit/{event_id}", summary="An audit record's leaf and inclusion proof (audit administrator)")
def audit_proof(event_id: str, platform: CurrentPlatform, ctx: CurrentContext) -> JSONResponse:
    _audit_admin(ctx)
    repo = platform.repository(ctx)
    content = repo.audit_read(event_id)  # checked and itself audited
    seq = platform.audit_seq(event_id)
    leaf = platform.ledger.audit_leaves([seq]).get(seq) if seq is not None else None
    if leaf is None:
        raise Conflict("this record is not in the ledger yet; try again in a second",
                       headers={"Retry-After": "1"})
    try:
        bundle = platform.ledger.proof_bundle(leaf["leaf_index"])
    except LookupError as exc:
        raise Conflict(str(exc), headers={"Retry-After": "1"}) from None
    import hashlib

    return JSONResponse({"event_id": event_id, "seq": seq, **leaf, **bundle,
                         "record_sha256": hashlib.sha256(content.encode()).hexdigest()})


@router.get("/result/{res_type}/{res_id}/{version}", summary="A clinical result version's leaf and proof")
def result_proof(res_type: str, res_id: str, version: str, platform: CurrentPlatform,
                 ctx: CurrentContext) -> JSONResponse:
    from healthlink.ledger.log import RESULT_TYPES

    if res_type not in RESULT_TYPES:
        raise NotFound(f"only {', '.join(RESULT_TYPES)} versions are results in the ledger")
    s = platform.repository(ctx).vread(res_type, res_id, version)  # checked and audited
    leaf = platform.ledger.result_leaf(s.rid, s.version_id)
    if leaf is None:
        raise Conflict("this version is not in the ledger yet; try again in a second",
                       headers={"Retry-After": "1"})
    try:
        bundle = platform.ledger.proof_bundle(leaf["leaf_index"])
    except LookupError as exc:
        raise Conflict(str(exc), headers={"Retry-After": "1"}) from None
    return JSONResponse({"resource": f"{res_type}/{res_id}/_history/{s.version_id}", **leaf, **bundle})
