"""Dependencies: the platform, the authenticated request context, the repository, and the
signed-in patient (``CurrentPatient``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from healthlink.access import Repository, RequestContext
from healthlink.consent.patients import PatientSession
from healthlink.errors import Unauthorized
from healthlink.runtime import Platform

COOKIE = "hl_token"


# These dependencies do no I/O (the token is verified by its signature, no database round
# trip), so they are ``async def``: FastAPI runs a plain ``def`` dependency in the thread
# pool, which costs two thread hand-offs per dependency per request.
async def get_platform(request: Request) -> Platform:
    return request.app.state.platform


async def get_context(request: Request) -> RequestContext:
    platform: Platform = request.app.state.platform
    auth = request.headers.get("authorization")
    token = None
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise Unauthorized("use 'Authorization: Bearer <access token>'")
        token = value.strip()
    else:
        token = request.cookies.get(COOKIE)
    if not token:
        raise Unauthorized("authentication required: obtain a token at /api/auth/login "
                           "(staff) or /api/auth/token (systems)")
    actor = platform.accounts.actor_from_token(token)
    client = request.client
    return RequestContext(actor=actor, request_id=request.scope["state"]["request_id"],
                          address=client.host if client else None,
                          user_agent=request.headers.get("user-agent"))


async def get_repository(request: Request,
                   ctx: Annotated[RequestContext, Depends(get_context)]) -> Repository:
    return request.app.state.platform.repository(ctx)


CurrentPlatform = Annotated[Platform, Depends(get_platform)]
CurrentContext = Annotated[RequestContext, Depends(get_context)]
Repo = Annotated[Repository, Depends(get_repository)]


# ---------------------------------------------------------------- patients (docs/consent.md)
PATIENT_COOKIE = "hl_patient"  # the patient portal's session cookie (set by /api/patient/login/verify)


def patient_token(request: Request) -> str | None:
    """A patient session token: ``Authorization: Bearer <token>``, else the ``hl_patient`` cookie."""
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("use 'Authorization: Bearer <patient access token>'")
        return value.strip()
    return request.cookies.get(PATIENT_COOKIE)


def get_patient_session(request: Request) -> PatientSession:
    """The signed-in patient.  A plain ``def``: it reads the account (still active?) from the
    database, so FastAPI runs it in the thread pool.  Staff tokens are refused here (their own
    key and issuer), as patient tokens are refused by :func:`get_context`."""
    token = patient_token(request)
    if not token:
        raise Unauthorized("patient login required: POST /api/patient/login/start, then /login/verify")
    platform: Platform = request.app.state.platform
    return platform.patient_accounts.session(platform.db, token)


CurrentPatient = Annotated[PatientSession, Depends(get_patient_session)]
