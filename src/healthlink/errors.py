"""The one error family.  The core raises these; adapters render them.

Under ``/fhir`` an error is an OperationOutcome, under ``/api`` problem+json
(RFC 9457).  ``expression`` holds FHIR element paths such as
``Observation.valueQuantity.value``.  A client never sees a stack trace.

    HealthLinkError
    ├── Invalid (400)            parse or structure errors, bad search parameters
    ├── Unauthorized (401)       no or bad credentials
    ├── Forbidden (403)          authenticated, not allowed
    ├── NotFound (404)
    ├── MethodNotAllowed (405)
    ├── Conflict (409)           e.g. id clash
    ├── Gone (410)               deleted resource
    ├── PreconditionFailed (412) If-Match / conditional operation mismatch
    ├── PayloadTooLarge (413)
    ├── Unprocessable (422)      business rule violated
    ├── TooManyRequests (429)    a rate limit was reached; Retry-After
    └── Unavailable (503)        database down or pool exhausted; Retry-After
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue."""

    code: str  # FHIR issue-type code: invalid, structure, required, value, not-found, ...
    diagnostics: str
    expression: tuple[str, ...] = ()
    severity: str = "error"

    def to_fhir(self) -> dict:
        out: dict = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = list(self.expression)
        return out


class HealthLinkError(Exception):
    status = 500
    code = "exception"

    def __init__(
        self,
        message: str,
        issues: list[Issue] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.issues = list(issues or []) or [Issue(code=self.code, diagnostics=message)]
        self.headers = dict(headers or {})


class Invalid(HealthLinkError):
    status, code = 400, "invalid"


class Unauthorized(HealthLinkError):
    status, code = 401, "login"


class Forbidden(HealthLinkError):
    status, code = 403, "forbidden"


class NotFound(HealthLinkError):
    status, code = 404, "not-found"


class MethodNotAllowed(HealthLinkError):
    status, code = 405, "not-supported"


class Conflict(HealthLinkError):
    status, code = 409, "conflict"


class Gone(HealthLinkError):
    status, code = 410, "deleted"


class PreconditionFailed(HealthLinkError):
    status, code = 412, "conflict"


class PayloadTooLarge(HealthLinkError):
    status, code = 413, "too-costly"


class Unprocessable(HealthLinkError):
    status, code = 422, "business-rule"


class TooManyRequests(HealthLinkError):
    status, code = 429, "throttled"


class Unavailable(HealthLinkError):
    status, code = 503, "transient"
