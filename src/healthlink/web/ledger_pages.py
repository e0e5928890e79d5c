"""The audit administrator's pages (issue 6, item 8; docs/web.md "Ledger and audit log"):
the tamper-evident ledger's status with a "verify now" button, the audit log search, and one
audit record with its ledger proof.

A thin adapter: the status comes from ``Platform.ledger_status``, the verification from
:func:`healthlink.ledger.verify.verify` (the same run as ``POST /api/ledger/verify``), audit
records from the actor's repository (``audit_search`` / ``audit_read``: they check the role and
audit the read themselves), proofs from ``Platform.ledger``.  No SQL here (import-linter).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import date, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from healthlink.access import RequestContext
from healthlink.errors import Forbidden, Invalid
from healthlink.ledger import merkle
from healthlink.web import session
from healthlink.web.healthcode_pages import SHOWN_ZONE
from healthlink.web.i18n import N_
from healthlink.web.session import PageRoute, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)

ZONE_NAME = "Asia/Shanghai"  # SHOWN_ZONE: UTC+8 all year, the region's clock
OUTCOMES = {"0": N_("success"), "4": N_("refused or invalid (minor failure)"),
            "8": N_("failed (serious failure)"), "12": N_("failed (major failure)")}
SUBTYPES = ("read", "vread", "search-type", "search-system", "history-instance", "create", "update",
            "patch", "delete", "everything", "export", "login", "login-failed", "logout",
            "grant-request", "grant-approve", "grant-close", "break-glass", "ledger-verify")
PAGE_SIZE = 50


def admin_context(request: Request) -> RequestContext:
    """The signed-in audit administrator; any other role gets the 403 page."""
    ctx = session.context(request)
    if "audit_admin" not in ctx.actor.roles:
        raise Forbidden(N_("Only the audit administrator may see the ledger and the audit log."))
    return ctx


def local_time(us: int | None) -> str:
    if not us:
        return ""
    return datetime.fromtimestamp(us / 1_000_000, SHOWN_ZONE).strftime("%Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------- ledger status
@router.get("/ledger")
def ledger_status(request: Request, verified: str = "") -> Response:
    ctx = admin_context(request)
    st = request.app.state.platform.ledger_status()
    latest = st["checkpoints"][0] if st["checkpoints"] else None
    if latest is not None:
        latest = {**latest, "created_text": local_time(latest["created"])}
    witnesses = [{**w, "behind": st["size"] - (w["cosigned_size"] or 0)} for w in st["witnesses"]]
    last = st["last_verification"]
    return render(request, "ledger_status.html", ctx=ctx, st=st, latest=latest, witnesses=witnesses,
                  last=last, last_when=local_time(last["finished"] or last["started"]) if last else "",
                  updated=local_time(st["updated"]),
                  retention_cutoff=local_time(st["retention_cutoff"]) if st["retention_cutoff"] else "",
                  just_verified=verified in ("ok", "failed"), zone=ZONE_NAME)


@router.post("/ledger/verify")
def verify_now(request: Request, csrf_token: Annotated[str | None, Form()] = None) -> Response:
    """Run ``ledger verify`` now (synchronously: it streams, and the run is recorded as the last
    verification), audit the run like ``POST /api/ledger/verify``, and go back to the status."""
    session.check_csrf(request, csrf_token)
    ctx = admin_context(request)
    rep = request.app.state.platform.verify_ledger(ctx)
    # post/redirect/get: a reload does not run it again; the page shows the stored last run
    return RedirectResponse(f"/ledger?verified={'ok' if rep.ok else 'failed'}", status_code=303)


# ---------------------------------------------------------------- audit search
def search_params(*, patient: str, actor: str, start: str, end: str, outcome: str, subtype: str,
                  cursor: str) -> list[tuple[str, str]]:
    """The page's filters as AuditEvent search parameters; dates are whole days in Asia/Shanghai."""
    params: list[tuple[str, str]] = []
    if patient.strip():
        params.append(("patient", patient.strip()))
    if actor.strip():
        params.append(("agent-name", actor.strip()))
    for name, value, prefix, suffix in (("from", start, "ge", "T00:00:00+08:00"),
                                        ("to", end, "le", "T23:59:59+08:00")):
        if value:
            try:
                date.fromisoformat(value)
            except ValueError:
                raise Invalid(N_("A date must be given as YYYY-MM-DD.")) from None
            params.append(("date", f"{prefix}{value}{suffix}"))
    if outcome in OUTCOMES:
        params.append(("outcome", outcome))
    if subtype.strip():
        params.append(("subtype", subtype.strip()))
    params.append(("_count", str(PAGE_SIZE)))
    if cursor:
        params.append(("_cursor", cursor))
    return params


def event_row(content: str) -> dict[str, Any]:
    """What the results table shows of one AuditEvent."""
    ev = orjson.loads(content) if content else {}
    agent = (ev.get("agent") or [{}])[0]
    refs = [e["what"]["reference"] for e in ev.get("entity", []) if e.get("what", {}).get("reference")]
    return {"id": ev.get("id", ""), "when": ev.get("recorded", ""),
            "who": agent.get("who", {}).get("display", ""),
            "institution": agent.get("location", {}).get("reference", "").removeprefix("Organization/"),
            "action": ev.get("action", ""), "subtype": (ev.get("subtype") or [{}])[0].get("code", ""),
            "outcome": ev.get("outcome", ""),
            "patients": [r.removeprefix("Patient/") for r in refs if r.startswith("Patient/")],
            "entities": [r for r in refs if not r.startswith("Patient/")]}


def shown_instant(instant: str) -> str:
    """An AuditEvent.recorded instant in the region's clock."""
    try:
        return datetime.fromisoformat(instant).astimezone(SHOWN_ZONE).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return instant


@router.get("/audit")
def audit_search(request: Request, patient: str = "", actor: str = "",
                 start: Annotated[str, Query(alias="from")] = "", end: Annotated[str, Query(alias="to")] = "",
                 outcome: str = "", subtype: str = "", cursor: str = "") -> Response:
    ctx = admin_context(request)
    filters = {"patient": patient, "actor": actor, "from": start, "to": end, "outcome": outcome,
               "subtype": subtype}
    # without filters: the newest records (the search itself is audited by the repository)
    params = search_params(patient=patient, actor=actor, start=start, end=end, outcome=outcome,
                           subtype=subtype, cursor=cursor)
    items, nxt = request.app.state.platform.repository(ctx).audit_search(params)
    rows = [event_row(c) for c in items]
    for r in rows:
        r["when"] = shown_instant(r["when"])
    base = {k: v for k, v in filters.items() if v}
    return render(request, "audit_search.html", ctx=ctx, f=filters, rows=rows,
                  next_url=f"/audit?{urlencode({**base, 'cursor': nxt})}" if nxt else None,
                  first_url=f"/audit?{urlencode(base)}" if cursor else None,
                  outcomes=OUTCOMES, subtypes=SUBTYPES, zone=ZONE_NAME)


# ---------------------------------------------------------------- one audit record and its proof
def proof_status(request: Request, event_id: str, content: str) -> dict[str, Any] | None:
    """The record's leaf and its inclusion proof against a signed checkpoint, checked here:
    the leaf data names the record's digest, the leaf hash is SHA-256(0x00 || data) (RFC 9162
    §2.1.1) and the proof leads to the checkpoint's root (§2.1.3.2).  None: not in the tree yet."""
    platform = request.app.state.platform
    seq = platform.audit_seq(event_id)
    leaf = platform.ledger.audit_leaves([seq]).get(seq) if seq is not None else None
    if leaf is None:
        return None
    try:
        bundle = platform.ledger.proof_bundle(leaf["leaf_index"])
    except LookupError:
        return {**leaf, "tree_size": None, "checkpoint": None, "inclusion_proof": [], "included": False,
                "digest_matches": None}
    data = bytes.fromhex(leaf["leaf_data"]) if leaf.get("leaf_data") else None
    lh = bytes.fromhex(leaf["leaf_hash"])
    root_line = bundle["checkpoint"].split("\n")[2]
    proof = [base64.b64decode(p) for p in bundle["inclusion_proof"]]
    included = merkle.verify_inclusion(lh, leaf["leaf_index"], bundle["tree_size"], proof,
                                       base64.b64decode(root_line))
    digest_ok = None if data is None else (data[-32:] == hashlib.sha256(content.encode()).digest()
                                           and merkle.leaf_hash(data) == lh)
    return {**leaf, **bundle, "included": included, "digest_matches": digest_ok, "seq": seq}


@router.get("/audit/{event_id}")
def audit_event(request: Request, event_id: str) -> Response:
    ctx = admin_context(request)
    content = request.app.state.platform.repository(ctx).audit_read(event_id)  # checked and audited
    pretty = orjson.dumps(orjson.loads(content), option=orjson.OPT_INDENT_2).decode() if content else ""
    row = event_row(content)
    row["when"] = shown_instant(row["when"])
    return render(request, "audit_event.html", ctx=ctx, event_id=event_id, row=row, pretty=pretty,
                  purged=not content, proof=proof_status(request, event_id, content), zone=ZONE_NAME)


__all__ = ["router"]
