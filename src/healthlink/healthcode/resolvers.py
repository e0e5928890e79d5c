"""Identifier resolvers: whatever a patient presents at the desk -> the platform's Person.

Scanning or typing an identifier happens in two steps (docs/healthcode.md):

1. an :class:`IdentifierResolver` turns the presented text into a :class:`PersonRef` (the
   Person id), checking the credential itself — signature, expiry, format.  The platform's
   own health code is the first; the national electronic health card and the medical-insurance
   e-voucher plug in beside it.  A :class:`ResolverRegistry` picks the resolver by the text.
2. a :class:`LocalPatientResolver` — implemented by the identity service, not here — turns the
   Person into the scanning institution's own Patient, creating and linking one if the person
   is new there.  :func:`resolve_patient` runs both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from healthlink.access import RequestContext
from healthlink.errors import Invalid, Issue
from healthlink.healthcode.codes import CLOCK_SKEW_SECONDS, HealthCode, verify_code
from healthlink.healthcode.keys import KeyRing

MAX_PRESENTED_CHARS = 4096  # longer than any identifier we read; refused before any resolver runs


@dataclass(frozen=True)
class PersonRef:
    """The Person a presented identifier stands for.

    ``credential`` names what was presented without repeating it (safe for the audit record and
    logs): for a health code, its key id and nonce.  ``valid_until`` is when the presented
    credential stops being accepted, if it has such a time.
    """

    person_id: str
    resolver: str
    credential: str
    valid_until: datetime | None = None


class IdentifierResolver(Protocol):
    """One kind of presented identifier.

    * ``name`` — stable and unique in a registry (``healthlink-health-code``,
      ``national-health-card``, ``medical-insurance-voucher``).
    * ``can_resolve(text)`` — cheap and side-effect free: does this text look like my kind?
      (a prefix or shape test; no signature check, no network).  True means "mine, even if it
      may turn out bad", so that a damaged code of my kind gets my precise error.
    * ``resolve(text, now=...)`` — verify the credential and return the Person, or raise a
      :class:`~healthlink.errors.HealthLinkError` (Invalid, Forbidden, Gone, NotFound …) whose
      message says what was wrong; never another exception for any text.
    """

    name: str

    def can_resolve(self, text: str) -> bool: ...

    def resolve(self, text: str, *, now: datetime | None = None) -> PersonRef: ...


class HealthCodeResolver:
    """The platform's electronic health code (``HL1.…``), verified against the key ring."""

    name = "healthlink-health-code"
    _SHAPE = re.compile(r"\s*HL\d{1,9}\.")

    def __init__(self, keys: KeyRing, *, skew_seconds: int = CLOCK_SKEW_SECONDS) -> None:
        self.keys = keys
        self.skew_seconds = skew_seconds

    def can_resolve(self, text: str) -> bool:
        return bool(self._SHAPE.match(text))

    def resolve(self, text: str, *, now: datetime | None = None) -> PersonRef:
        code: HealthCode = verify_code(text, self.keys, now=now, skew_seconds=self.skew_seconds)
        return PersonRef(person_id=code.person_id, resolver=self.name,
                         credential=f"key {code.key_id} nonce {code.nonce}", valid_until=code.expires_at)


class UnrecognisedIdentifier(Invalid):
    """400: no registered resolver reads the presented text."""


class ResolverRegistry:
    """The resolvers a deployment accepts, tried in registration order."""

    def __init__(self, resolvers: Iterable[IdentifierResolver] = ()) -> None:
        self._resolvers: list[IdentifierResolver] = []
        for r in resolvers:
            self.register(r)

    def register(self, resolver: IdentifierResolver) -> None:
        if any(r.name == resolver.name for r in self._resolvers):
            raise ValueError(f"a resolver named {resolver.name!r} is already registered")
        self._resolvers.append(resolver)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self._resolvers)

    def resolver_for(self, text: str) -> IdentifierResolver:
        """The first resolver that claims ``text``; UnrecognisedIdentifier if none does."""
        if not isinstance(text, str) or not text.strip():
            raise UnrecognisedIdentifier("nothing presented: scan or type the patient's code",
                                         [Issue(code="required", diagnostics="nothing presented")])
        if len(text) > MAX_PRESENTED_CHARS:
            msg = f"presented identifier too long: {len(text)} characters, at most {MAX_PRESENTED_CHARS}"
            raise UnrecognisedIdentifier(msg, [Issue(code="too-long", diagnostics=msg)])
        for r in self._resolvers:
            if r.can_resolve(text):
                return r
        raise UnrecognisedIdentifier("not an identifier this platform reads; accepted: "
                                     + (", ".join(self.names) or "none configured"))

    def resolve(self, text: str, *, now: datetime | None = None) -> PersonRef:
        return self.resolver_for(text).resolve(text, now=now)


class LocalPatientResolver(Protocol):
    """The step after a scan: the institution's own Patient for a Person.

    The identity service (``healthlink.identity``) implements it.  Contract:

    * returns the id of the Patient at ``institution_id`` linked to ``person_id``;
    * if the Person has no Patient there yet, creates one from the Person's demographics,
      links it to the Person, and returns its id — in one transaction with its audit record,
      acting as ``ctx.actor``;
    * refuses (Forbidden) when ``ctx`` may not register patients at ``institution_id``, and
      raises NotFound for an unknown (or merged-away, unless it follows the merge) Person;
    * is idempotent: scanning twice yields the same Patient id.
    """

    def local_patient(self, ctx: RequestContext, person_id: str, *, institution_id: str) -> str: ...


@dataclass(frozen=True)
class ResolvedPatient:
    person: PersonRef
    patient_id: str
    institution_id: str


def resolve_patient(ctx: RequestContext, text: str, *, registry: ResolverRegistry,
                    patients: LocalPatientResolver, institution_id: str | None = None,
                    now: datetime | None = None) -> ResolvedPatient:
    """Presented text -> Person -> this institution's Patient (the scan at the desk).

    The institution is the acting user's unless given (e.g. a platform job acting for one).
    """
    inst = institution_id or ctx.actor.institution_id
    if not inst:
        raise Invalid("no institution to resolve the patient at: the actor belongs to none")
    person = registry.resolve(text, now=now)
    return ResolvedPatient(person, patients.local_patient(ctx, person.person_id, institution_id=inst), inst)
