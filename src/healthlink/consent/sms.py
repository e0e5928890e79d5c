"""Sending SMS: the gateway interface, the platform's own outbox adapter, and the configured choice.

``HEALTHLINK_SMS_GATEWAY`` picks the adapter (docs/consent.md):

* ``outbox`` (default) — :class:`OutboxGateway` writes each message to the ``sms_outbox`` table;
  the demo "phone" page and the CLI read it back with :func:`list_messages`.  It holds live codes,
  so it is the demo's and the tests' phone, not a production channel.
* ``package.module:Class`` — a real gateway: a class implementing :class:`SmsGateway`, imported
  and built with the keyword arguments of ``HEALTHLINK_SMS_GATEWAY_OPTIONS`` once, at start
  (:func:`gateway_class`, :func:`build_gateway`, called by ``Platform.start`` before it opens
  anything); anything wrong stops the start with a :class:`SmsGatewayConfigError`.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sqlalchemy import Connection, insert, select

from healthlink.db import Database
from healthlink.db import tables as t
from healthlink.settings import Settings

OUTBOX = "outbox"


@runtime_checkable
class SmsGateway(Protocol):
    """Anything that can deliver a text message to a phone number."""

    def send(self, to: str, text: str, *, purpose: str) -> str:
        """Deliver ``text`` to ``to``; return the gateway's message id.  ``purpose`` says what the
        message is for (``consent-code``); raise on failure, never return silently undelivered."""
        ...


@runtime_checkable
class TransactionalSmsGateway(SmsGateway, Protocol):
    """A gateway that can also write a message inside the caller's database transaction, so the
    message and what it announces (a code) are committed, or rolled back, together."""

    def send_in(self, conn: Connection, to: str, text: str, *, purpose: str) -> str: ...


class SmsGatewayConfigError(ValueError):
    """The configured gateway cannot be loaded (a start-up error, like a bad key file)."""


@dataclass(frozen=True)
class SmsMessage:
    id: str
    to: str
    text: str
    purpose: str
    created_us: int  # microseconds since the epoch, UTC


class OutboxGateway:
    """The platform's own adapter: a message "sent" is a row of ``sms_outbox``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def send(self, to: str, text: str, *, purpose: str) -> str:
        with self.db.write() as conn:
            return self.send_in(conn, to, text, purpose=purpose)

    def send_in(self, conn: Connection, to: str, text: str, *, purpose: str) -> str:
        row_id = conn.execute(insert(t.sms_outbox).values(
            recipient=to, text=text, purpose=purpose, created=time.time_ns() // 1000,
        ).returning(t.sms_outbox.c.id)).scalar_one()
        return str(row_id)


def list_messages(db: Database, phone: str, *, limit: int = 50) -> list[SmsMessage]:
    """The outbox messages sent to ``phone``, newest first."""
    o = t.sms_outbox
    with db.read() as conn:
        rows = conn.execute(select(o).where(o.c.recipient == phone)
                            .order_by(o.c.created.desc(), o.c.id.desc()).limit(limit)).all()
    return [SmsMessage(str(r.id), r.recipient, r.text, r.purpose, r.created) for r in rows]


def gateway_class(path: str) -> type:
    """Import ``package.module:Class`` and check that it looks like an :class:`SmsGateway`."""
    hint = (f"HEALTHLINK_SMS_GATEWAY={path!r}: set it to 'outbox' or to 'package.module:Class' of a "
            "class implementing healthlink.consent.SmsGateway")
    module_name, sep, class_name = path.partition(":")
    if not sep or not module_name or not class_name:
        raise SmsGatewayConfigError(f"{hint} (no ':' between module and class)")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is a configuration error
        raise SmsGatewayConfigError(f"{hint} (cannot import module {module_name!r}: {exc})") from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise SmsGatewayConfigError(f"{hint} (module {module_name!r} has no class {class_name!r})")
    if not callable(getattr(cls, "send", None)):
        raise SmsGatewayConfigError(f"{hint} ({class_name} has no send(to, text, *, purpose) method)")
    return cls


def build_gateway(cls: type, settings: Settings) -> SmsGateway:
    """``cls(**settings.sms_gateway_options)``, with a start-up error naming what went wrong."""
    try:
        gateway = cls(**settings.sms_gateway_options)
    except Exception as exc:  # noqa: BLE001 - a constructor's refusal is a configuration error
        raise SmsGatewayConfigError(
            f"HEALTHLINK_SMS_GATEWAY={settings.sms_gateway!r}: {cls.__name__}(**HEALTHLINK_SMS_GATEWAY_"
            f"OPTIONS) failed: {type(exc).__name__}: {exc}") from exc
    return gateway
