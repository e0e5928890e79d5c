"""One-time authorisation codes: a patient's SMS code that approves one doctor's request.

Rules (NIST SP 800-63B-4 out-of-band secrets, ../shared/research/audit-consent-security.md §3;
docs/consent.md):

* a code is :data:`CODE_DIGITS` (6) decimal digits from the OS CSPRNG (``secrets``), bound to one
  authorisation request and, through it, to one practitioner and one encounter;
* only a keyed hash is stored: HMAC-SHA256 over the request id and the code, with a key derived
  (HKDF) from the platform secret.  A plain or slow hash would not do: 10**6 candidates are
  tried offline in seconds (SHA-256) or hours (argon2) by anyone holding a database copy, while
  the HMAC needs the key, which is not in the database;
* it is accepted once, for ``ttl_seconds`` (default and maximum 600: "SHALL be considered invalid
  unless completed within 10 minutes");
* ``max_tries`` (5) wrong tries per request lock it; a resend issues a new code for the same
  request and keeps the count ("generating a new authentication secret SHALL NOT reset the failed
  authentication count");
* codes sent (first sends and resends) are limited per doctor and per patient phone per hour;
* comparison is constant-time (``hmac.compare_digest``); one request's state is changed under a
  row lock (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite has one writer), so two concurrent
  submits cannot both succeed.

The code itself appears only in the SMS: never in a log line, an error or an audit record.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import secrets
import time
from collections.abc import Callable
from typing import TypeVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from healthlink.consent.messages import MessageBuilder
from healthlink.consent.sms import SmsGateway, TransactionalSmsGateway
from healthlink.db import Database
from healthlink.db import tables as t
from healthlink.errors import (
    Conflict,
    Forbidden,
    Gone,
    HealthLinkError,
    Invalid,
    Issue,
    NotFound,
    TooManyRequests,
    Unavailable,
)
from healthlink.settings import Settings

log = logging.getLogger(__name__)

CODE_DIGITS = 6
RATE_WINDOW_SECONDS = 3600
SMS_PURPOSE = "consent-code"  # sms_outbox.purpose of these messages
_KDF_INFO = b"healthlink consent-code hmac v1"
_ID = re.compile(r"[\x21-\x7e]{1,64}")  # printable ASCII, no spaces (request ids)
_REF = re.compile(r"[\x21-\x7e]{1,128}")  # Practitioner/..., Encounter/...
_PHONE = re.compile(r"\+?[0-9]{5,20}")
_CODE = re.compile(rf"[0-9]{{{CODE_DIGITS}}}")

T = TypeVar("T")


class ConsentCodeError(HealthLinkError):
    """A code was refused or could not be issued; ``reason`` is a stable machine-readable word.
    ``remaining`` is the wrong tries left, where the answer may tell it."""

    def __init__(self, message: str, *, reason: str, remaining: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message, [Issue(code=self.code, diagnostics=message)], headers=headers)
        self.reason = reason
        self.remaining = remaining


class ConsentCodeMalformed(ConsentCodeError, Invalid):
    """400: not a 6-digit code (not counted: no code was compared)."""


class ConsentCodeUnknown(ConsentCodeError, NotFound):
    """404: no code was ever issued for this request."""


class ConsentCodeWrong(ConsentCodeError, Forbidden):
    """403: the code does not match; counted; ``remaining`` tries are left."""


class ConsentCodeMismatch(ConsentCodeError, Forbidden):
    """403: the request belongs to another practitioner or encounter; counted, code not compared."""


class ConsentCodeLocked(ConsentCodeError, Forbidden):
    """403: too many wrong tries; the request is dead, the doctor must start a new one."""


class ConsentCodeUsed(ConsentCodeError, Conflict):
    """409: the request's code was already accepted once."""


class ConsentCodeExpired(ConsentCodeError, Gone):
    """410: the current code is past its expiry; a resend gives a new one."""

    code = "expired"


class ConsentRateLimited(ConsentCodeError, TooManyRequests):
    """429: the doctor or the patient's phone reached its hourly number of codes; Retry-After."""


class SmsNotSent(ConsentCodeError, Unavailable):
    """503: the gateway refused or failed; the code was stored (and counted) but not delivered."""


def code_key(settings: Settings) -> bytes:
    """The HMAC key of code hashes: HKDF-SHA256 of the platform secret (``HEALTHLINK_SECRET_KEY``
    or the generated one), so the token-signing key itself is never used for a second purpose.
    Changing the secret voids the codes outstanding, which live 10 minutes at most."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=_KDF_INFO).derive(settings.signing_key().encode())


class ConsentCodes:
    """Issue and verify one-time codes through one gateway, key and policy."""

    def __init__(self, gateway: SmsGateway, *, key: bytes, ttl_seconds: int = 600, max_tries: int = 5,
                 per_practitioner_per_hour: int = 10, per_phone_per_hour: int = 5,
                 clock: Callable[[], float] = time.time) -> None:
        if len(key) < 16:
            raise ValueError("the consent-code key needs at least 128 bits")
        self.gateway = gateway
        self._key = key
        self.ttl_seconds = ttl_seconds
        self.max_tries = max_tries
        self.per_practitioner_per_hour = per_practitioner_per_hour
        self.per_phone_per_hour = per_phone_per_hour
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, gateway: SmsGateway, *,
                      clock: Callable[[], float] = time.time) -> ConsentCodes:
        return cls(gateway, key=code_key(settings), ttl_seconds=settings.consent_code_ttl_seconds,
                   max_tries=settings.consent_code_max_tries,
                   per_practitioner_per_hour=settings.consent_code_per_practitioner_per_hour,
                   per_phone_per_hour=settings.consent_code_per_phone_per_hour, clock=clock)

    # -- issue ---------------------------------------------------------------------------------

    def issue(self, conn_or_db: Connection | Database, request_id: str, *, practitioner: str,
              encounter: str, phone: str, message_builder: MessageBuilder) -> None:
        """Send a new code for ``request_id`` to ``phone``: the first one, or a resend.

        A resend must come from the same practitioner and encounter; it replaces the code and its
        expiry and keeps the wrong-try count.  Every send counts towards the hourly limits.

        With a :class:`Database` the code is committed in a transaction of its own; with a
        :class:`Connection` it joins the caller's (which commits or rolls it back).  The outbox
        writes the message in that same transaction.  Another gateway is called after the commit
        when given a Database (a failure: :class:`SmsNotSent`, the code stays counted), and at
        once, inside the open transaction, when given a Connection (a failure rolls the code back;
        on SQLite the write lock is held during the call, so prefer the Database there)."""
        _check_ids(request_id, practitioner, encounter)
        if not isinstance(phone, str) or not _PHONE.fullmatch(phone):
            raise Invalid("a phone number is 5-20 digits, optionally after '+'")
        code = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
        msg = message_builder(code, max(1, self.ttl_seconds // 60))
        digest = self._hash(request_id, code)
        del code  # from here on only the hash and the message carry it
        in_tx = isinstance(self.gateway, TransactionalSmsGateway)

        def store(conn: Connection) -> None:
            self._store(conn, request_id, practitioner=practitioner, encounter=encounter, phone=phone,
                        digest=digest)
            if in_tx:
                self.gateway.send_in(conn, phone, msg, purpose=SMS_PURPOSE)  # type: ignore[attr-defined]

        if isinstance(conn_or_db, Database):
            with conn_or_db.write() as conn:
                store(conn)
        else:
            store(conn_or_db)
        if not in_tx:
            self._send(request_id, phone, msg)
        log.info("consent code sent: request=%s", request_id)

    def _store(self, conn: Connection, request_id: str, *, practitioner: str, encounter: str, phone: str,
               digest: str) -> None:
        c = t.consent_code
        now = self._now_us()
        row = conn.execute(select(c).where(c.c.request_id == request_id).with_for_update()).first()
        if row is not None:
            if row.practitioner != practitioner or row.encounter != encounter:
                raise ConsentCodeMismatch(
                    "a code for this authorisation request can only be resent by the doctor who "
                    "asked, within the same encounter", reason="wrong-binding")
            if row.used is not None:
                raise ConsentCodeUsed("this authorisation request was already approved with its code; "
                                      "no new code is sent", reason="used")
            if row.tries >= self.max_tries:
                raise ConsentCodeLocked(_LOCKED, reason="locked", remaining=0)
        self._check_rates(conn, practitioner=practitioner, phone=phone, now=now)
        fields = dict(hash=digest, created=now, expires=now + self.ttl_seconds * 1_000_000, phone=phone)
        if row is None:
            try:  # a concurrent first send of the same request (PostgreSQL) loses here
                conn.execute(insert(c).values(request_id=request_id, tries=0, used=None,
                                              practitioner=practitioner, encounter=encounter, **fields))
            except IntegrityError as exc:
                raise Conflict("a code for this authorisation request is being sent already; "
                               "resend in a moment if none arrives") from exc
        else:
            conn.execute(update(c).where(c.c.request_id == request_id).values(**fields))
        conn.execute(insert(t.consent_code_issue).values(request_id=request_id, practitioner=practitioner,
                                                         phone=phone, created=now))

    def _check_rates(self, conn: Connection, *, practitioner: str, phone: str, now: int) -> None:
        i = t.consent_code_issue
        if conn.dialect.name == "postgresql":
            # serialise the count-then-insert per doctor and per phone, so parallel requests cannot
            # all see "9 of 10" and each send; always in this order, so two sends never deadlock
            for key in (f"consent-rate:practitioner:{practitioner}", f"consent-rate:phone:{phone}"):
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key})
        since = now - RATE_WINDOW_SECONDS * 1_000_000
        for column, value, limit, whose in (
                (i.c.practitioner, practitioner, self.per_practitioner_per_hour, "this doctor has had"),
                (i.c.phone, phone, self.per_phone_per_hour, "this patient's phone has received")):
            n, oldest = conn.execute(select(func.count(), func.min(i.c.created))
                                     .where(column == value, i.c.created > since)).one()
            if n >= limit:
                wait = max(1, math.ceil((oldest + RATE_WINDOW_SECONDS * 1_000_000 - now) / 1_000_000))
                raise ConsentRateLimited(
                    f"{whose} {n} authorisation codes in the last hour (limit {limit}); "
                    f"try again in {wait} s", reason="rate-limited", headers={"Retry-After": str(wait)})

    def _send(self, request_id: str, phone: str, msg: str) -> None:
        try:
            self.gateway.send(phone, msg, purpose=SMS_PURPOSE)
        except Exception as exc:  # noqa: BLE001 - a gateway's error may quote the message (and code)
            log.warning("consent code not delivered: request=%s gateway error %s", request_id,
                        type(exc).__name__)
            raise SmsNotSent("the SMS gateway did not take the message; resend the code in a moment",
                             reason="not-sent", headers={"Retry-After": "10"}) from None

    # -- verify --------------------------------------------------------------------------------

    def verify(self, db: Database, request_id: str, code: str, *, practitioner: str, encounter: str,
               on_success: Callable[[Connection], T] | None = None) -> T | None:
        """Accept ``code`` for ``request_id`` once, for the practitioner and encounter it was issued
        to, or raise a :class:`ConsentCodeError` saying why not.

        Takes the Database, not a caller's connection: a refusal's try count must be committed even
        though an error is raised.  ``on_success(conn)`` runs in the transaction that marks the
        code used (the grant written with it); if it raises, the code stays unused."""
        _check_ids(request_id, practitioner, encounter)
        digits = "".join(code.split()) if isinstance(code, str) and len(code) <= 64 else ""
        if not _CODE.fullmatch(digits):
            raise ConsentCodeMalformed(f"an authorisation code is {CODE_DIGITS} digits", reason="malformed")
        c = t.consent_code
        failure: ConsentCodeError | None = None
        result: T | None = None
        with db.write() as conn:
            now = self._now_us()
            row = conn.execute(select(c).where(c.c.request_id == request_id).with_for_update()).first()
            if row is None:
                raise ConsentCodeUnknown("no authorisation code was sent for this request",
                                         reason="unknown-request")
            if row.practitioner != practitioner or row.encounter != encounter:
                # Counted, and decided before anything else: a code presented outside its binding is a
                # misuse, and the answer tells nothing about the code or the request's state.
                self._count_wrong(conn, request_id)
                failure = ConsentCodeMismatch(
                    "this authorisation request belongs to another doctor or encounter; the attempt "
                    "was counted against the request", reason="wrong-binding")
            elif row.used is not None:
                raise ConsentCodeUsed("this code was already used; a new authorisation needs a new "
                                      "request", reason="used")
            elif row.tries >= self.max_tries:
                raise ConsentCodeLocked(_LOCKED, reason="locked", remaining=0)
            elif now >= row.expires:
                raise ConsentCodeExpired(
                    f"this code expired {(now - row.expires) // 1_000_000} s ago; ask for a new code",
                    reason="expired")
            elif not hmac.compare_digest(self._hash(request_id, digits), row.hash):
                left = max(0, self.max_tries - self._count_wrong(conn, request_id))
                failure = ConsentCodeWrong(
                    f"wrong code; {left} {'try' if left == 1 else 'tries'} left" if left else
                    f"wrong code; that was the last try: {_LOCKED}", reason="wrong-code", remaining=left)
            else:
                done = conn.execute(update(c).where(c.c.request_id == request_id, c.c.used.is_(None))
                                    .values(used=now))
                if done.rowcount != 1:  # unreachable under the row lock; kept as the guard it states
                    raise ConsentCodeUsed("this code was already used", reason="used")
                if on_success is not None:
                    result = on_success(conn)
        if failure is not None:
            log.info("consent code refused: request=%s reason=%s", request_id, failure.reason)
            raise failure
        log.info("consent code accepted: request=%s", request_id)
        return result

    def _count_wrong(self, conn: Connection, request_id: str) -> int:
        c = t.consent_code
        return conn.execute(update(c).where(c.c.request_id == request_id).values(tries=c.c.tries + 1)
                            .returning(c.c.tries)).scalar_one()

    def _hash(self, request_id: str, code: str) -> str:
        # the request id is inside the MAC: one code typed for another request never matches it
        return hmac.new(self._key, f"{request_id}\x00{code}".encode(), hashlib.sha256).hexdigest()

    def _now_us(self) -> int:
        return int(self.clock() * 1_000_000)


_LOCKED = "too many wrong codes: this authorisation request is locked; start a new request"


def _check_ids(request_id: str, practitioner: str, encounter: str) -> None:
    if not isinstance(request_id, str) or not _ID.fullmatch(request_id):
        raise Invalid("a request id is 1-64 printable ASCII characters without spaces")
    for name, value in (("practitioner", practitioner), ("encounter", encounter)):
        if not isinstance(value, str) or not _REF.fullmatch(value):
            raise Invalid(f"{name} is 1-128 printable ASCII characters without spaces")
