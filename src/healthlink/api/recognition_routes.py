"""Mutual recognition as plain JSON (issue 7, items 3, 6, 7; docs/cds-hooks.md "JSON API") for a
hospital system that does not speak CDS Hooks, and for the platform's own pages and scripts.

* ``POST /api/recognition/check`` — the order-time check of one or more order lines;
* ``POST /api/recognition/cards/{id}/open|adopt|decline`` — the doctor's decisions on a reminder;
* ``POST /api/recognition/checks/{id}/reordered`` — the order was placed after all;
* ``GET /api/recognition/rates`` — retrieval and recognition rates, savings, decline reasons;
* ``GET /api/recognition/catalogue`` — the catalogue in force (version, provenance, items).

A thin adapter over ``Platform.recognition``; a member of staff calls with their own token, a
hospital system (client credentials) names the ordering practitioner (``practitioner``) on a
check, and on a decision acts for the practitioner recorded on the reminder.  Errors are
problem+json.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from starlette.responses import Response

from healthlink.access import RequestContext
from healthlink.api.cds_routes import practitioner_context, staff_through_client
from healthlink.api.deps import CurrentContext, CurrentPlatform
from healthlink.errors import Forbidden, Invalid, Issue
from healthlink.recognition.service import CheckResult, Order
from healthlink.runtime import Platform

router = APIRouter(prefix="/api/recognition", tags=["mutual recognition"])
NO_STORE = {"Cache-Control": "no-store"}


def JSONResponse(content: object, *, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:  # noqa: N802
    """JSON with amounts (Decimal) as strings and dates in ISO form."""
    return Response(orjson.dumps(content, default=str), status_code=status_code, headers=headers,
                    media_type="application/json")

Id = Annotated[str, Field(min_length=1, max_length=64)]
CardId = Annotated[str, Path(max_length=64)]
CheckId = Annotated[str, Path(max_length=64)]


class OrderLine(BaseModel):
    system: str = Field(min_length=1, max_length=255)  # http://loinc.org or a local code system
    code: str = Field(min_length=1, max_length=64)
    display: str | None = Field(None, max_length=255)
    bodySite: str | None = Field(None, max_length=64)  # SNOMED CT code (imaging)
    modality: str | None = Field(None, max_length=16)  # DICOM modality (imaging)
    orderRef: str | None = Field(None, max_length=160)  # the HIS's draft order, e.g. ServiceRequest/123


class CheckRequest(BaseModel):
    patient: Id  # a Patient of the caller's institution
    encounter: Id | None = None
    orders: list[OrderLine] = Field(min_length=1, max_length=50)
    # a hospital system's token: the ordering member of staff (Practitioner/<id> or PractitionerRole/<id>)
    practitioner: str | None = Field(None, max_length=160)


class Adopt(BaseModel):
    encounter: Id | None = None


class Decline(BaseModel):
    reason: str | None = Field(None, max_length=32)  # one of the national reasons; required (400)
    text: str | None = Field(None, max_length=2000)  # required with "other"


class Reordered(BaseModel):
    orderRef: str | None = Field(None, max_length=160)
    # a hospital system's token: the member of staff who placed the order
    practitioner: str | None = Field(None, max_length=160)


def _check_json(result: CheckResult) -> dict:
    return {"patient": result.patient_id, "grant_needed": result.grant_needed,
            "lines": [{"check_id": ln.check_id,
                       "order": {"system": ln.order.system, "code": ln.order.code, "display": ln.order.display,
                                 "bodySite": ln.order.body_site, "modality": ln.order.modality,
                                 "orderRef": ln.order.order_ref},
                       "item": None if ln.item is None else {
                           "id": ln.item.id, "name_zh": ln.item.name_zh, "name_en": ln.item.name_en,
                           "kind": ln.item.kind, "validity_days": ln.item.validity_days, "mark": ln.item.mark},
                       "found": ln.found, "hits": [h.to_json() for h in ln.hits]}
                      for ln in result.lines]}


def _decider(platform: Platform, ctx: RequestContext, card_id: str) -> RequestContext:
    """Who decides on a card: the member of staff calling, or, for a hospital system, the
    practitioner the reminder was shown to."""
    if ctx.actor.kind == "user":
        return ctx
    if ctx.actor.kind != "client":
        raise Forbidden("decisions on a reminder are taken by a member of staff or their hospital system")
    event, _ = platform.recognition.card(ctx, card_id)
    return staff_through_client(platform, ctx, event["username"], f"client {ctx.actor.subject}")


@router.post("/check", summary="The order-time check: still-valid results of the ordered items")
def check(body: CheckRequest, ctx: CurrentContext, platform: CurrentPlatform) -> Response:
    if ctx.actor.kind == "client" and not body.practitioner:
        raise Invalid("practitioner: a hospital system names the ordering member of staff "
                      "(Practitioner/<id> or PractitionerRole/<id>)",
                      [Issue("required", "the ordering practitioner", ("practitioner",))])
    pctx = practitioner_context(platform, ctx, body.practitioner)
    orders = [Order(system=o.system, code=o.code, display=o.display, order_ref=o.orderRef,
                    body_site=o.bodySite, modality=o.modality) for o in body.orders]
    result = platform.recognition.check(pctx, body.patient, orders, encounter_id=body.encounter, channel="api")
    return JSONResponse(_check_json(result), headers=NO_STORE)


@router.post("/cards/{card_id}/open", summary="The doctor opened the reminded result")
def open_card(card_id: CardId, ctx: CurrentContext, platform: CurrentPlatform) -> Response:
    hit = platform.recognition.opened(_decider(platform, ctx, card_id), card_id, channel="api")
    return JSONResponse(hit.to_json(), headers=NO_STORE)


@router.post("/cards/{card_id}/adopt", summary="Use the reminded result instead of testing again")
def adopt(card_id: CardId, ctx: CurrentContext, platform: CurrentPlatform,
          body: Adopt | None = None) -> Response:
    local = platform.recognition.adopt(_decider(platform, ctx, card_id), card_id,
                                       encounter_id=body.encounter if body else None, channel="api")
    return JSONResponse({"card": card_id, "adopted": True, "recorded_as": local}, headers=NO_STORE)


@router.post("/cards/{card_id}/decline", summary="Order anyway, with a reason from the national list")
def decline(card_id: CardId, body: Decline, ctx: CurrentContext, platform: CurrentPlatform) -> Response:
    platform.recognition.decline(_decider(platform, ctx, card_id), card_id, reason=body.reason,
                                 text=body.text, channel="api")
    return JSONResponse({"card": card_id, "declined": True, "reason": body.reason}, headers=NO_STORE)


@router.post("/checks/{check_id}/reordered", summary="The checked order was placed after all")
def reordered(check_id: CheckId, ctx: CurrentContext, platform: CurrentPlatform,
              body: Reordered | None = None) -> Response:
    practitioner = body.practitioner if body else None
    if ctx.actor.kind == "client" and not practitioner:
        raise Invalid("practitioner: a hospital system names the member of staff who placed the order",
                      [Issue("required", "the ordering practitioner", ("practitioner",))])
    platform.recognition.reordered(practitioner_context(platform, ctx, practitioner), check_id,
                                   order_ref=body.orderRef if body else None, channel="api")
    return JSONResponse({"check": check_id, "reordered": True}, headers=NO_STORE)


@router.get("/rates", summary="Retrieval and recognition rates, savings and decline reasons")
def rates(ctx: CurrentContext, platform: CurrentPlatform,
          since: Annotated[date | None, Query()] = None, until: Annotated[date | None, Query()] = None,
          institution: Annotated[str | None, Query(max_length=64)] = None,
          by: Annotated[Literal["institution", "department", "item", "tier", "day", "month"],
                        Query()] = "institution") -> Response:
    if since and until and since > until:
        raise Invalid("since is after until", [Issue("invalid", "since is after until", ("since",))])
    return JSONResponse(platform.recognition.rates(ctx, since=since, until=until, institution_id=institution,
                                                   by=by), headers=NO_STORE)


@router.get("/catalogue", summary="The recognition catalogue in force: version, provenance, items")
def catalogue(ctx: CurrentContext, platform: CurrentPlatform) -> Response:
    cat = platform.recognition.catalogue
    kinds: dict[str, int] = {}
    for i in cat.items:
        kinds[i.kind] = kinds.get(i.kind, 0) + 1
    items = [{"id": i.id, "name_zh": i.name_zh, "name_en": i.name_en, "kind": i.kind, "loinc": i.loinc,
              "local_codes": [{"system": s, "code": c} for s, c in i.local_codes], "group": i.group,
              "validity_days": i.validity_days, "scope": i.scope, "price_yuan": str(i.price_yuan),
              "mark": i.mark, "modality": list(i.modality),
              "body_site": None if i.body_site is None else {"system": i.body_site.system, "code": i.body_site.code,
                                                             "display": i.body_site.display},
              "source": {"citation": i.source.citation, "url": i.source.url, "basis": i.source.basis}}
             for i in cat.items]
    return JSONResponse({"version": cat.version, "provenance": cat.provenance,
                         "summary": {"items": len(cat.items), "by_kind": kinds}, "items": items})
