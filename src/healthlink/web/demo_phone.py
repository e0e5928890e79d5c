"""The demo phone, ``GET /phone`` (issue 5: "the default adapter writes to an outbox that a demo
'phone' page and the CLI can show").  A device simulator: type a number, read the text messages
the outbox holds for it, newest first; htmx fetches the list again every few seconds.

It has no login, because it stands in for the patient's own phone, and so it is served only while
the platform's SMS gateway is the outbox (``HEALTHLINK_SMS_GATEWAY=outbox``, the default).  In
that mode no message leaves the server, so the platform is a demonstration by construction; with
a real gateway configured the page does not exist (404).  docs/consent.md, "The demo phone".
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response

from healthlink.consent import OUTBOX, SmsMessage, list_messages
from healthlink.empi.records import normalise_phone
from healthlink.errors import NotFound
from healthlink.web.healthcode_pages import SHOWN_ZONE
from healthlink.web.portal import render_portal
from healthlink.web.session import PageRoute

router = APIRouter(route_class=PageRoute, include_in_schema=False)
REFRESH_SECONDS = 3
SHOWN = 30  # messages on the page


def demo_phone_served(request: Request) -> bool:
    return request.app.state.platform.settings.sms_gateway == OUTBOX


def inbox(platform, number: str, *, limit: int = SHOWN) -> list[SmsMessage]:
    """The outbox messages to ``number`` as typed (spaces dropped) and as the platform stores
    patient phones (digits only, without +86), newest first."""
    typed = "".join(number.split())
    keys = dict.fromkeys(k for k in (typed, normalise_phone(typed)) if k)
    msgs = {m.id: m for k in keys for m in list_messages(platform.db, k, limit=limit)}
    return sorted(msgs.values(), key=lambda m: (m.created_us, int(m.id) if m.id.isdigit() else 0),
                  reverse=True)[:limit]


@router.get("/phone")
def phone(request: Request, number: str = "") -> Response:
    if not demo_phone_served(request):
        raise NotFound(f"nothing is served at {request.url.path}")
    number = number.strip()[:32]
    msgs = inbox(request.app.state.platform, number) if number else []
    shown = [(m, datetime.fromtimestamp(m.created_us / 1_000_000, SHOWN_ZONE).strftime("%Y-%m-%d %H:%M:%S"))
             for m in msgs]
    template = "_phone_inbox.html" if request.headers.get("hx-request") else "phone.html"
    return render_portal(request, template, number=number, messages=shown, refresh=REFRESH_SECONDS,
                         zone=SHOWN_ZONE.tzname(None))
