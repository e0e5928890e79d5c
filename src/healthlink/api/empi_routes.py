"""The EMPI review queue and the reviewer's actions under /api/empi (problem+json errors):
a thin adapter over :class:`healthlink.identity.Review`, which checks the role and writes the
audit records (docs/identity.md, "Review")."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.responses import JSONResponse

from healthlink.api.deps import CurrentContext, CurrentPlatform
from healthlink.identity import Review

router = APIRouter(prefix="/api/empi", tags=["empi"])


class Pair(BaseModel):
    a: str  # Patient id (or Patient/<id>)
    b: str


class Persons(BaseModel):
    person: str  # the Person that stays
    other: str  # the Person whose Patients move to it


class OnePatient(BaseModel):
    patient: str


class OneDecision(BaseModel):
    decision: int


def _review(platform: CurrentPlatform) -> Review:
    return Review(platform.identity)


@router.get("/queue", summary="Open possible-duplicate Tasks, newest first")
def queue(platform: CurrentPlatform, ctx: CurrentContext, count: int = 20, cursor: str | None = None) -> JSONResponse:
    page = _review(platform).queue(ctx, count=count, cursor=cursor)
    return JSONResponse({"total": page.total, "next_cursor": page.next_cursor,
                         "items": [asdict(i) for i in page.items]})


@router.get("/explain", summary="Two Patients side by side, the score explained per field")
def explain(platform: CurrentPlatform, ctx: CurrentContext, a: str, b: str) -> JSONResponse:
    return JSONResponse(asdict(_review(platform).explain_pair(ctx, a, b)))


@router.get("/persons/{person_id}", summary="A Person's Patients and the decisions about it")
def person(platform: CurrentPlatform, ctx: CurrentContext, person_id: str) -> JSONResponse:
    return JSONResponse(asdict(_review(platform).person(ctx, person_id)))


@router.post("/link", summary="Put Patient b into Patient a's Person (a manual link)")
def link(body: Pair, platform: CurrentPlatform, ctx: CurrentContext) -> JSONResponse:
    return JSONResponse(asdict(_review(platform).link(ctx, body.a, body.b)))


@router.post("/keep-apart", summary="Record that a and b are different people (splits them if linked)")
def keep_apart(body: Pair, platform: CurrentPlatform, ctx: CurrentContext) -> JSONResponse:
    return JSONResponse(asdict(_review(platform).keep_apart(ctx, body.a, body.b)))


@router.post("/merge", summary="Move every Patient of Person 'other' into Person 'person'")
def merge(body: Persons, platform: CurrentPlatform, ctx: CurrentContext) -> JSONResponse:
    return JSONResponse(asdict(_review(platform).merge(ctx, body.person, body.other)))


@router.post("/unmerge", summary="Take a Patient out of its Person, kept apart from the rest")
def unmerge(body: OnePatient, platform: CurrentPlatform, ctx: CurrentContext) -> JSONResponse:
    return JSONResponse(asdict(_review(platform).unmerge(ctx, body.patient)))


@router.post("/undo", summary="Revert a decision: the previous links exactly, its Tasks reopened")
def undo(body: OneDecision, platform: CurrentPlatform, ctx: CurrentContext) -> JSONResponse:
    return JSONResponse(asdict(_review(platform).undo(ctx, body.decision)))
