"""The request context: who acts, for which institution, with which roles and scopes.

Every entry point (HTTP, CLI, jobs) builds one and hands it to :class:`Repository`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from healthlink.access.scopes import Scope, parse_scopes
from healthlink.ledger import Agent


@dataclass(frozen=True)
class Actor:
    kind: str  # "user" (staff), "client" (a hospital system), "system" (the platform itself)
    subject: str  # username or client id
    display: str
    institution_id: str | None
    roles: frozenset[str]
    scopes: tuple[Scope, ...]
    practitioner_id: str | None = None
    department_id: str | None = None
    persons: tuple[str, ...] = ()  # a patient: the Persons the account may act for (self, wards)

    @classmethod
    def patient(cls, account_id: int, persons: tuple[str, ...], display: str | None = None) -> Actor:
        """A patient signed in to the portal, reading their own records (and their wards')."""
        return cls("patient", f"patient-account:{account_id}", display or f"patient account {account_id}",
                   None, frozenset({"patient"}), parse_scopes("patient/*.rs"), persons=tuple(persons))

    @property
    def reference(self) -> str:
        if self.practitioner_id:
            return f"Practitioner/{self.practitioner_id}"
        if self.kind == "patient" and self.persons:
            return f"Person/{self.persons[0]}"
        return f"Device/{self.subject}"

    @classmethod
    def system(cls, purpose: str = "platform") -> Actor:
        """The platform acting for itself (migrations, demo data, jobs)."""
        return cls("system", f"system:{purpose}", f"HealthLink ({purpose})", None,
                   frozenset({"system"}), parse_scopes("system/*.cruds"))


@dataclass(frozen=True)
class RequestContext:
    actor: Actor
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    address: str | None = None
    user_agent: str | None = None
    purpose_of_use: str = "TREAT"  # v3 ActReason; HOPERAT for operations, ETREAT later

    def agent(self) -> Agent:
        a = self.actor
        return Agent(who=a.reference, username=a.subject, institution_id=a.institution_id,
                     department_id=a.department_id, roles=tuple(sorted(a.roles)),
                     address=self.address, request_id=self.request_id,
                     purpose_of_use=self.purpose_of_use, user_agent=self.user_agent)
