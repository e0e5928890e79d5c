"""Health-code payloads: issue and verify the signed, rotating text inside the QR.

Format (docs/healthcode.md)::

    HL1.<base64url(body)>.<base64url(signature)>

* ``HL1.`` names the format and its version; another version is refused, not guessed at.
* body: compact JSON with sorted keys — ``p`` Person id, ``i`` issued at and ``e`` expires at
  (Unix seconds), ``n`` 16 random bytes (base64url), ``k`` the signing key's id.
* signature: Ed25519 (RFC 8032) over the ASCII bytes ``HL1.<base64url(body)>``, so the version
  prefix is signed too, as JWS signs its header.
* base64url without padding (RFC 4648 §5), and only its canonical form: a text that decodes to
  the same bytes but differs in unused bits is refused, so one code has exactly one spelling.

Verification checks in this order and stops at the first failure: length, version prefix,
shape, base64url, signature (by key id), body fields, then time.  Nothing in the body is
believed before the signature verifies, except the key id that picks the key to try.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from healthlink.errors import Forbidden, Gone, HealthLinkError, Invalid, Issue
from healthlink.healthcode.keys import KeyRing

VERSION = 1
PREFIX = f"HL{VERSION}."
MAX_CODE_CHARS = 1024  # a real code is about 200-270 characters; refuse floods before parsing
CLOCK_SKEW_SECONDS = 30  # tolerated difference between the issuer's and the scanner's clocks
NONCE_BYTES = 16
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR R4 id datatype (Person.id)
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_VERSIONED = re.compile(r"HL(\d{1,9})\.")


class HealthCodeError(HealthLinkError):
    """A presented health code was refused; ``reason`` is a stable machine-readable word."""

    reason = "rejected"

    def __init__(self, message: str, *, reason: str, issue_code: str | None = None) -> None:
        super().__init__(message, [Issue(code=issue_code or self.code, diagnostics=message)])
        self.reason = reason


class HealthCodeMalformed(HealthCodeError, Invalid):
    """400: not a well-formed HL1 code (empty, too long, wrong prefix, bad base64url, bad body)."""


class HealthCodeUntrusted(HealthCodeError, Forbidden):
    """403: the signature does not verify (altered, forged, another key) or the key id is unknown.

    Not 401: that status means the *caller's* credentials are bad (pages sign the user out on
    it); here the staff member is signed in and the presented code is refused.
    """

    code = "security"


class HealthCodeExpired(HealthCodeError, Gone):
    """410: a genuine code past its expiry (a screenshot or an old print-out)."""

    code = "expired"


@dataclass(frozen=True)
class HealthCode:
    """The verified content of a health code."""

    person_id: str
    issued_at: datetime
    expires_at: datetime
    nonce: str
    key_id: str


def issue_code(keys: KeyRing, person_id: str, *, ttl_seconds: int,
               now: datetime | None = None) -> str:
    """A fresh signed code for the Person, valid for ``ttl_seconds`` from ``now``."""
    if keys.signing_key is None:
        raise ValueError("this key ring holds no signing key")
    if not isinstance(person_id, str) or not _FHIR_ID.fullmatch(person_id):
        raise Invalid(f"not a Person id: {person_id!r} (FHIR id: 1-64 of A-Z a-z 0-9 - .)")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    issued = _seconds(now)
    body = {"e": issued + ttl_seconds, "i": issued, "k": keys.key_id,
            "n": _b64encode(secrets.token_bytes(NONCE_BYTES)), "p": person_id}
    signing_input = PREFIX + _b64encode(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    signature = keys.signing_key.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{_b64encode(signature)}"


def verify_code(text: str, keys: KeyRing, *, now: datetime | None = None,
                skew_seconds: int = CLOCK_SKEW_SECONDS) -> HealthCode:
    """The code's content if ``text`` is a genuine, unexpired code signed by a trusted key.

    Raises :class:`HealthCodeMalformed`, :class:`HealthCodeUntrusted` or
    :class:`HealthCodeExpired`; never another exception for any input text.
    """
    signing_input, body_bytes, signature = _split(text)
    try:
        body = json.loads(body_bytes)
    except (ValueError, RecursionError):
        body = None
    kid = body.get("k") if isinstance(body, dict) else None
    if not isinstance(kid, str):
        # The body does not even say which key signed it: an altered body usually looks like
        # this, so answer as for a bad signature unless a trusted key really signed it.
        if not any(_verifies(k, signature, signing_input) for k in keys.trusted.values()):
            raise HealthCodeUntrusted("health code signature does not verify: the code was altered "
                                      "or not signed by this platform", reason="bad-signature")
        raise HealthCodeMalformed("health code body is not a JSON object with a key id 'k'",
                                  reason="bad-body")
    key = keys.public_key(kid)
    if key is None:
        raise HealthCodeUntrusted(
            f"health code signed with unknown key id {kid[:16]!r}: not one of this platform's "
            f"trusted keys ({', '.join(sorted(keys.trusted)) or 'none'}); a code from another "
            "platform, or from a retired key", reason="unknown-key")
    if not _verifies(key, signature, signing_input):
        raise HealthCodeUntrusted(f"health code signature does not verify with key {kid}: the code "
                                  "was altered or signed by another key", reason="bad-signature")
    code = _fields(body, kid)
    t = _seconds(now)
    issued, expires = int(code.issued_at.timestamp()), int(code.expires_at.timestamp())
    if t >= expires + skew_seconds:
        raise HealthCodeExpired(
            f"health code expired at {code.expires_at.isoformat()} ({t - expires} s ago); "
            "ask the patient to show a fresh code", reason="expired")
    if issued > t + skew_seconds:
        raise HealthCodeUntrusted(
            f"health code issued in the future ({code.issued_at.isoformat()}, {issued - t} s ahead "
            "of this clock); check the clocks", reason="not-yet-valid")
    return code


def _split(text: str) -> tuple[bytes, bytes, bytes]:
    """(signing input, body, signature) of a well-formed code, else HealthCodeMalformed."""
    if not isinstance(text, str):
        raise HealthCodeMalformed(f"a health code is text, not {type(text).__name__}",
                                  reason="not-text")
    if len(text) > MAX_CODE_CHARS:
        raise HealthCodeMalformed(f"health code too long: {len(text)} characters, at most "
                                  f"{MAX_CODE_CHARS}", reason="too-long", issue_code="too-long")
    text = text.strip()  # scanners often append CR/LF
    if not text:
        raise HealthCodeMalformed("empty health code", reason="empty", issue_code="required")
    if not text.startswith(PREFIX):
        m = _VERSIONED.match(text)
        if m:
            raise HealthCodeMalformed(f"unsupported health code version HL{m.group(1)}: this platform "
                                      f"reads {PREFIX[:-1]}", reason="version")
        raise HealthCodeMalformed(f"not a HealthLink health code: expected text starting with "
                                  f"{PREFIX!r}", reason="prefix")
    parts = text[len(PREFIX):].split(".")
    if len(parts) != 2:
        raise HealthCodeMalformed(f"health code must be {PREFIX}<body>.<signature>: found "
                                  f"{len(parts)} part(s) after the prefix", reason="shape")
    body = _b64decode(parts[0], "body")
    signature = _b64decode(parts[1], "signature")
    if len(signature) != 64:
        raise HealthCodeMalformed(f"health code signature is {len(signature)} bytes; Ed25519 "
                                  "signatures are 64", reason="bad-signature-length")
    return (PREFIX + parts[0]).encode("ascii"), body, signature


def _fields(body: dict, kid: str) -> HealthCode:
    person, issued, expires, nonce = body.get("p"), body.get("i"), body.get("e"), body.get("n")
    if not isinstance(person, str) or not _FHIR_ID.fullmatch(person):
        raise HealthCodeMalformed("health code body has no valid Person id 'p'", reason="bad-body")
    if not (_is_int(issued) and _is_int(expires) and 0 <= issued < expires < 2**40):
        raise HealthCodeMalformed("health code body needs integer times 'i' < 'e'", reason="bad-body")
    if not isinstance(nonce, str):
        raise HealthCodeMalformed("health code body has no nonce 'n'", reason="bad-body")
    return HealthCode(person_id=person, issued_at=datetime.fromtimestamp(issued, UTC),
                      expires_at=datetime.fromtimestamp(expires, UTC), nonce=nonce, key_id=kid)


def _verifies(key: Ed25519PublicKey, signature: bytes, signing_input: bytes) -> bool:
    try:
        key.verify(signature, signing_input)
    except InvalidSignature:
        return False
    return True


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _seconds(now: datetime | None) -> int:
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return int(now.timestamp())


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(part: str, what: str) -> bytes:
    if not _B64URL.fullmatch(part) or len(part) % 4 == 1:
        raise HealthCodeMalformed(f"health code {what} is not base64url", reason="bad-base64")
    try:
        data = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise HealthCodeMalformed(f"health code {what} is not base64url", reason="bad-base64") from None
    if _b64encode(data) != part:
        raise HealthCodeMalformed(f"health code {what} is not canonical base64url (stray bits in its "
                                  "last character)", reason="bad-base64")
    return data


__all__ = ["CLOCK_SKEW_SECONDS", "MAX_CODE_CHARS", "PREFIX", "HealthCode", "HealthCodeError",
           "HealthCodeExpired", "HealthCodeMalformed", "HealthCodeUntrusted", "issue_code",
           "verify_code"]
