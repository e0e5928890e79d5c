"""The health-code service the platform holds: issue, verify, draw, resolve."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from healthlink.healthcode.codes import CLOCK_SKEW_SECONDS, HealthCode, issue_code, verify_code
from healthlink.healthcode.keys import KeyRing, load_keyring
from healthlink.healthcode.qr import qr_svg
from healthlink.healthcode.resolvers import HealthCodeResolver
from healthlink.settings import Settings


@dataclass(frozen=True)
class IssuedCode:
    """A code just issued: its text (the QR payload) and when it stops working."""

    text: str
    expires_at: datetime

    def svg(self) -> str:
        return qr_svg(self.text)


class HealthCodes:
    """Issue and verify health codes with one key ring and lifetime."""

    def __init__(self, keys: KeyRing, *, ttl_seconds: int = 300,
                 skew_seconds: int = CLOCK_SKEW_SECONDS) -> None:
        self.keys = keys
        self.ttl_seconds = ttl_seconds
        self.skew_seconds = skew_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> HealthCodes:
        """Keys and TTL from the settings (generates the key file on first use, see keys.py)."""
        return cls(load_keyring(settings), ttl_seconds=settings.health_code_ttl_seconds)

    def issue(self, person_id: str, *, now: datetime | None = None) -> IssuedCode:
        text = issue_code(self.keys, person_id, ttl_seconds=self.ttl_seconds, now=now)
        return IssuedCode(text, self.verify(text, now=now).expires_at)

    def verify(self, text: str, *, now: datetime | None = None) -> HealthCode:
        return verify_code(text, self.keys, now=now, skew_seconds=self.skew_seconds)

    def resolver(self) -> HealthCodeResolver:
        return HealthCodeResolver(self.keys, skew_seconds=self.skew_seconds)
