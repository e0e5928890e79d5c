"""Dependencies: the platform, the authenticated request context, the repository."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from healthlink.access import Repository, RequestContext
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
