"""The electronic health code: one QR per Person that every member institution accepts.

Core layer (no HTTP); docs/healthcode.md, ADR 0011.  Public surface:

* :class:`HealthCodes` — the service: ``issue(person_id)`` -> :class:`IssuedCode` (text,
  expiry, ``svg()``), ``verify(text)`` -> :class:`HealthCode`, ``resolver()``;
* :func:`issue_code`, :func:`verify_code` — the same as functions of a :class:`KeyRing`;
  refusals are :class:`HealthCodeMalformed` (400), :class:`HealthCodeUntrusted` (403) and
  :class:`HealthCodeExpired` (410), all :class:`HealthCodeError`;
* :class:`KeyRing`, :func:`load_keyring`, :func:`key_id`, :func:`public_pem` — the signing key
  and the trusted (current and previous) public keys;
* :func:`qr_svg` — the QR as a standalone SVG document;
* :class:`IdentifierResolver`, :class:`ResolverRegistry`, :class:`PersonRef`,
  :class:`HealthCodeResolver` — presented identifier -> Person;
* :class:`LocalPatientResolver` (implemented by the identity service) and
  :func:`resolve_patient` — Person -> the scanning institution's Patient.
"""

from healthlink.healthcode.codes import (
    CLOCK_SKEW_SECONDS,
    MAX_CODE_CHARS,
    PREFIX,
    HealthCode,
    HealthCodeError,
    HealthCodeExpired,
    HealthCodeMalformed,
    HealthCodeUntrusted,
    issue_code,
    verify_code,
)
from healthlink.healthcode.keys import KeyFileError, KeyRing, key_id, load_keyring, public_pem
from healthlink.healthcode.qr import qr_svg
from healthlink.healthcode.resolvers import (
    HealthCodeResolver,
    IdentifierResolver,
    LocalPatientResolver,
    PersonRef,
    ResolvedPatient,
    ResolverRegistry,
    UnrecognisedIdentifier,
    resolve_patient,
)
from healthlink.healthcode.service import HealthCodes, IssuedCode

__all__ = ["CLOCK_SKEW_SECONDS", "MAX_CODE_CHARS", "PREFIX", "HealthCode", "HealthCodeError",
           "HealthCodeExpired", "HealthCodeMalformed", "HealthCodeResolver", "HealthCodeUntrusted",
           "HealthCodes", "IdentifierResolver", "IssuedCode", "KeyFileError", "KeyRing",
           "LocalPatientResolver", "PersonRef", "ResolvedPatient", "ResolverRegistry",
           "UnrecognisedIdentifier", "issue_code", "key_id", "load_keyring", "public_pem", "qr_svg",
           "resolve_patient", "verify_code"]
