"""Patient consent: the SMS gateway and the one-time authorisation codes (issue 5, item 3).

Core layer (no HTTP), directly below ``identity``; docs/consent.md.  Public surface:

* :class:`SmsGateway` — the interface (``send(to, text, *, purpose) -> message id``);
  :class:`OutboxGateway` — the platform's own adapter, the ``sms_outbox`` table;
  :func:`list_messages` — a number's outbox messages, newest first; :func:`gateway_class` and
  :func:`build_gateway` — the adapter ``HEALTHLINK_SMS_GATEWAY`` names, or a
  :class:`SmsGatewayConfigError` at start;
* :class:`ConsentCodes` — ``issue(conn_or_db, request_id, *, practitioner, encounter, phone,
  message_builder)`` and ``verify(db, request_id, code, *, practitioner, encounter)``; refusals
  are :class:`ConsentCodeError` subclasses with a ``reason``;
* :func:`authorisation_message` — the SMS text (doctor, institution, purpose, code; zh-CN + English);
* :class:`PatientAccounts` (``patients.py``) — patient portal accounts bound to a Person: sign-up,
  login by code, the Person's verified phone, guardians (issue 5, item 2).
"""

from healthlink.consent.codes import (
    CODE_DIGITS,
    RATE_WINDOW_SECONDS,
    SMS_PURPOSE,
    ConsentCodeError,
    ConsentCodeExpired,
    ConsentCodeLocked,
    ConsentCodeMalformed,
    ConsentCodeMismatch,
    ConsentCodes,
    ConsentCodeUnknown,
    ConsentCodeUsed,
    ConsentCodeWrong,
    ConsentRateLimited,
    SmsNotSent,
    code_key,
)
from healthlink.consent.messages import MessageBuilder, authorisation_message
from healthlink.consent.patients import (
    Guardianship,
    PatientAccount,
    PatientAccounts,
    PatientIdentityRefused,
    PatientSession,
)
from healthlink.consent.sms import (
    OUTBOX,
    OutboxGateway,
    SmsGateway,
    SmsGatewayConfigError,
    SmsMessage,
    TransactionalSmsGateway,
    build_gateway,
    gateway_class,
    list_messages,
)

__all__ = ["CODE_DIGITS", "OUTBOX", "RATE_WINDOW_SECONDS", "SMS_PURPOSE", "ConsentCodeError",
           "ConsentCodeExpired", "ConsentCodeLocked", "ConsentCodeMalformed", "ConsentCodeMismatch",
           "ConsentCodeUnknown", "ConsentCodeUsed", "ConsentCodeWrong", "ConsentCodes",
           "ConsentRateLimited", "Guardianship", "MessageBuilder", "OutboxGateway", "PatientAccount",
           "PatientAccounts", "PatientIdentityRefused", "PatientSession", "SmsGateway", "SmsGatewayConfigError",
           "SmsMessage", "SmsNotSent", "TransactionalSmsGateway", "authorisation_message", "build_gateway", "code_key",
           "gateway_class", "list_messages"]
