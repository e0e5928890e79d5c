"""One-time authorisation codes and the SMS gateway (issue 5, item 3), on the real database.

The outbox is the platform's own adapter and is used for real: each test reads the code the
patient would read, from the outbox.  Only a gateway outside the platform is faked
(:class:`RecordingGateway`), and its behaviour is checked here too.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import uuid
from dataclasses import dataclass

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from healthlink.consent import (
    SMS_PURPOSE,
    ConsentCodeExpired,
    ConsentCodeLocked,
    ConsentCodeMalformed,
    ConsentCodeMismatch,
    ConsentCodes,
    ConsentCodeUnknown,
    ConsentCodeUsed,
    ConsentCodeWrong,
    ConsentRateLimited,
    OutboxGateway,
    SmsGatewayConfigError,
    SmsNotSent,
    authorisation_message,
    code_key,
    list_messages,
)
from healthlink.db import tables as t
from healthlink.runtime import Platform
from healthlink.settings import Settings

MESSAGE = authorisation_message(doctor="王医生", institution="玉树州人民医院", purpose="诊疗",
                                purpose_en="treatment")


class RecordingGateway:
    """Stands in for a commercial SMS gateway (outside the platform): records what it is given."""

    def __init__(self, sender: str = "HealthLink", fail: str = "") -> None:
        self.sender = sender
        self.fail = fail
        self.sent: list[tuple[str, str, str]] = []

    def send(self, to: str, text: str, *, purpose: str) -> str:
        if self.fail:
            raise ConnectionError(f"gateway down while sending {text!r}")  # quotes the code, as some do
        self.sent.append((to, text, purpose))
        return f"msg-{len(self.sent)}"


class NotAGateway:
    pass


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Req:
    request_id: str
    practitioner: str
    encounter: str
    phone: str


def new_request(*, practitioner: str | None = None, phone: str | None = None) -> Req:
    return Req(f"req-{uuid.uuid4().hex}", practitioner or f"Practitioner/p-{uuid.uuid4().hex[:10]}",
               f"Encounter/e-{uuid.uuid4().hex[:10]}", phone or f"139{secrets.randbelow(10 ** 8):08d}")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def codes(platform: Platform, settings: Settings, clock: Clock) -> ConsentCodes:
    return ConsentCodes.from_settings(settings, OutboxGateway(platform.db), clock=clock)


def send(codes: ConsentCodes, platform: Platform, req: Req) -> None:
    codes.issue(platform.db, req.request_id, practitioner=req.practitioner, encounter=req.encounter,
                phone=req.phone, message_builder=MESSAGE)


def verify(codes: ConsentCodes, platform: Platform, req: Req, code: str, **binding: str) -> object:
    return codes.verify(platform.db, req.request_id, code,
                        practitioner=binding.get("practitioner", req.practitioner),
                        encounter=binding.get("encounter", req.encounter), on_success=lambda conn: "granted")


def code_on_phone(platform: Platform, phone: str) -> str:
    """What the patient reads: the code in the newest message on the phone."""
    m = re.search(r"验证码 (\d{6})", list_messages(platform.db, phone)[0].text)
    assert m, "no code in the newest message"
    return m.group(1)


def other_than(code: str) -> str:
    return f"{(int(code) + 1) % 10 ** 6:06d}"


def row(platform: Platform, request_id: str):  # noqa: ANN201
    with platform.db.read() as conn:
        return conn.execute(select(t.consent_code).where(t.consent_code.c.request_id == request_id)).one()


def test_right_code_is_accepted_once_then_fails_as_used(codes, platform):
    req = new_request()
    send(codes, platform, req)
    code = code_on_phone(platform, req.phone)
    assert verify(codes, platform, req, code) == "granted"
    with pytest.raises(ConsentCodeUsed) as used:
        verify(codes, platform, req, code)
    assert used.value.status == 409 and used.value.reason == "used"
    with pytest.raises(ConsentCodeUsed):  # no new code for an approved request either
        send(codes, platform, req)
    assert row(platform, req.request_id).used is not None


def test_five_wrong_codes_lock_the_request_and_the_right_code_then_fails(codes, platform):
    req = new_request()
    send(codes, platform, req)
    code = code_on_phone(platform, req.phone)
    for left in (4, 3, 2, 1, 0):
        with pytest.raises(ConsentCodeWrong) as wrong:
            verify(codes, platform, req, other_than(code))
        assert (wrong.value.status, wrong.value.reason, wrong.value.remaining) == (403, "wrong-code", left)
    assert "locked" in wrong.value.message
    with pytest.raises(ConsentCodeLocked) as locked:
        verify(codes, platform, req, code)
    assert locked.value.status == 403 and locked.value.reason == "locked"
    with pytest.raises(ConsentCodeLocked):  # and no resend revives it
        send(codes, platform, req)
    assert row(platform, req.request_id).tries == 5


def test_expired_code_fails_and_is_not_counted(codes, platform, clock):
    req = new_request()
    send(codes, platform, req)
    code = code_on_phone(platform, req.phone)
    clock.advance(codes.ttl_seconds)
    with pytest.raises(ConsentCodeExpired) as expired:
        verify(codes, platform, req, code)
    assert expired.value.status == 410 and expired.value.reason == "expired"
    assert row(platform, req.request_id).tries == 0
    send(codes, platform, req)  # a resend gives a fresh code for the same request
    clock.advance(codes.ttl_seconds - 1)
    assert verify(codes, platform, req, code_on_phone(platform, req.phone)) == "granted"


def test_code_issued_for_one_doctor_or_encounter_fails_for_another_and_counts(codes, platform):
    req = new_request()
    send(codes, platform, req)
    code = code_on_phone(platform, req.phone)
    for binding in ({"practitioner": "Practitioner/someone-else"}, {"encounter": "Encounter/another-visit"}):
        with pytest.raises(ConsentCodeMismatch) as mismatch:
            verify(codes, platform, req, code, **binding)
        assert mismatch.value.status == 403 and mismatch.value.reason == "wrong-binding"
    assert row(platform, req.request_id).tries == 2
    with pytest.raises(ConsentCodeMismatch):  # nor may another doctor resend it
        codes.issue(platform.db, req.request_id, practitioner="Practitioner/someone-else",
                    encounter=req.encounter, phone=req.phone, message_builder=MESSAGE)
    with pytest.raises(ConsentCodeWrong) as wrong:
        verify(codes, platform, req, other_than(code))
    assert wrong.value.remaining == 2
    assert verify(codes, platform, req, code) == "granted"


def test_resend_keeps_the_wrong_try_count_and_the_rate_counters(codes, platform):
    req = new_request()
    send(codes, platform, req)
    first = code_on_phone(platform, req.phone)
    for _ in range(3):
        with pytest.raises(ConsentCodeWrong):
            verify(codes, platform, req, other_than(first))
    send(codes, platform, req)
    second = code_on_phone(platform, req.phone)
    assert row(platform, req.request_id).tries == 3
    if second != first:  # the resend voids the first code (1 in 10**6 they are equal)
        with pytest.raises(ConsentCodeWrong) as wrong:
            verify(codes, platform, req, first)
        assert wrong.value.remaining == 1
    with platform.db.read() as conn:
        sends = conn.execute(select(func.count()).where(
            t.consent_code_issue.c.request_id == req.request_id)).scalar_one()
    assert sends == 2
    assert verify(codes, platform, req, second) == "granted"


def test_patient_phone_rate_limit_counts_resends_and_every_doctor(codes, platform, clock):
    req = new_request()
    send(codes, platform, req)
    for _ in range(codes.per_phone_per_hour - 1):
        clock.advance(60)
        send(codes, platform, req)  # resends count
    with pytest.raises(ConsentRateLimited) as limited:
        send(codes, platform, req)
    assert limited.value.status == 429 and limited.value.reason == "rate-limited"
    assert "phone" in limited.value.message
    assert int(limited.value.headers["Retry-After"]) == 3600 - 4 * 60
    with pytest.raises(ConsentRateLimited):  # another doctor asking the same patient
        send(codes, platform, new_request(phone=req.phone))
    clock.advance(3600 - 4 * 60)  # the first send leaves the window
    send(codes, platform, new_request(phone=req.phone))


def test_doctor_rate_limit_counts_requests_to_different_patients(codes, platform, clock):
    doctor = f"Practitioner/p-{uuid.uuid4().hex[:10]}"
    for _ in range(codes.per_practitioner_per_hour):
        send(codes, platform, new_request(practitioner=doctor))
    with pytest.raises(ConsentRateLimited) as limited:
        send(codes, platform, new_request(practitioner=doctor))
    assert "doctor" in limited.value.message and limited.value.headers["Retry-After"] == "3600"
    send(codes, platform, new_request())  # another doctor is not held up
    clock.advance(3601)
    send(codes, platform, new_request(practitioner=doctor))


def test_only_a_keyed_hash_of_the_code_is_stored(codes, platform, settings):
    req = new_request()
    send(codes, platform, req)
    code = code_on_phone(platform, req.phone)
    stored = row(platform, req.request_id)
    assert all(code not in str(value) for value in stored)
    with platform.db.read() as conn:
        for issued in conn.execute(select(t.consent_code_issue)
                                   .where(t.consent_code_issue.c.request_id == req.request_id)):
            assert all(code not in str(value) for value in issued)
    assert stored.hash == hmac.new(code_key(settings), f"{req.request_id}\x00{code}".encode(),
                                   hashlib.sha256).hexdigest()
    unkeyed = {hashlib.sha256(v.encode()).hexdigest() for v in (code, f"{req.request_id}\x00{code}")}
    assert stored.hash not in unkeyed


def test_outbox_holds_the_message_with_doctor_institution_purpose_and_code_for_that_phone(codes, platform):
    req = new_request()
    send(codes, platform, req)
    first = code_on_phone(platform, req.phone)
    send(codes, platform, req)
    messages = list_messages(platform.db, req.phone)
    assert len(messages) == 2 and messages[0].created_us >= messages[1].created_us
    newest = messages[0]
    assert newest.to == req.phone and newest.purpose == SMS_PURPOSE
    zh, en = newest.text.split("\n")
    for part in ("王医生", "玉树州人民医院", "用途：诊疗", "10 分钟"):
        assert part in zh
    assert "Dr 王医生 (玉树州人民医院)" in en and "for: treatment" in en and "valid 10 min" in en
    assert code_on_phone(platform, req.phone) in zh and code_on_phone(platform, req.phone) in en
    assert first in messages[1].text
    assert list_messages(platform.db, new_request().phone) == []


def test_malformed_or_unknown_codes_are_refused_without_counting(codes, platform):
    req = new_request()
    send(codes, platform, req)
    for bad in ("12345", "1234567", "12a456", "１２３４５６", ""):
        with pytest.raises(ConsentCodeMalformed) as malformed:
            verify(codes, platform, req, bad)
        assert malformed.value.status == 400
    assert row(platform, req.request_id).tries == 0
    code = code_on_phone(platform, req.phone)
    with pytest.raises(ConsentCodeUnknown) as unknown:
        verify(codes, platform, new_request(), code)
    assert unknown.value.status == 404
    assert verify(codes, platform, req, f" {code[:3]} {code[3:]} ") == "granted"  # typed with spaces


def test_two_concurrent_submits_of_the_right_code_succeed_once(codes, platform):
    req = new_request()
    send(codes, platform, req)
    code = code_on_phone(platform, req.phone)
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def submit() -> None:
        barrier.wait()
        try:
            outcomes.append(str(verify(codes, platform, req, code)))
        except ConsentCodeUsed:
            outcomes.append("used")

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(outcomes) == ["granted", "used", "used", "used"]


def test_external_gateway_gets_the_message_and_a_failure_never_shows_the_code(platform, settings, clock):
    gateway = RecordingGateway()
    codes = ConsentCodes.from_settings(settings, gateway, clock=clock)
    req = new_request()
    send(codes, platform, req)
    [(to, text, purpose)] = gateway.sent
    assert (to, purpose) == (req.phone, SMS_PURPOSE)
    assert list_messages(platform.db, req.phone) == []  # not through the outbox
    code = re.search(r"验证码 (\d{6})", text).group(1)
    assert verify(codes, platform, req, code) == "granted"

    down = ConsentCodes.from_settings(settings, RecordingGateway(fail="yes"), clock=clock)
    req = new_request()
    with pytest.raises(SmsNotSent) as not_sent:
        send(down, platform, req)
    assert not_sent.value.status == 503 and not_sent.value.__cause__ is None
    assert not re.search(r"\d{6}", not_sent.value.message)
    assert row(platform, req.request_id).tries == 0  # stored and counted; a resend may follow


def test_outbox_is_the_default_gateway(platform):
    assert isinstance(platform.sms, OutboxGateway)
    assert platform.consent_codes.gateway is platform.sms


def test_configured_gateway_class_is_loaded_at_start(settings):
    plat = Platform.start(settings.model_copy(update={
        "sms_gateway": f"{RecordingGateway.__module__}:RecordingGateway",
        "sms_gateway_options": {"sender": "玉树健康"}}))
    try:
        assert type(plat.sms).__name__ == "RecordingGateway" and plat.sms.sender == "玉树健康"
        assert plat.consent_codes.gateway is plat.sms
    finally:
        plat.close()


@pytest.mark.parametrize(("path", "options", "says"), [
    ("no_such_healthlink_module.sms:Gateway", {}, "cannot import module 'no_such_healthlink_module.sms'"),
    (f"{__name__}:NoSuchGateway", {}, "has no class 'NoSuchGateway'"),
    (f"{__name__}:NotAGateway", {}, "has no send(to, text, *, purpose) method"),
    (f"{__name__}:RecordingGateway", {"api_key": "x"}, "unexpected keyword argument 'api_key'"),
])
def test_bad_gateway_setting_stops_the_start_with_a_clear_error(settings, path, options, says):
    with pytest.raises(SmsGatewayConfigError) as bad:
        Platform.start(settings.model_copy(update={"sms_gateway": path, "sms_gateway_options": options}))
    assert "HEALTHLINK_SMS_GATEWAY" in str(bad.value) and says in str(bad.value)


def test_gateway_setting_must_be_outbox_or_a_class_path():
    with pytest.raises(ValidationError, match="'outbox' or 'package.module:Class'"):
        Settings(sms_gateway="aliyun")


def test_cli_names_a_bad_gateway_instead_of_a_traceback(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from healthlink.cli.main import app as cli

    monkeypatch.setenv("HEALTHLINK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HEALTHLINK_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setenv("HEALTHLINK_SMS_GATEWAY", "no_such_healthlink_module.sms:Gateway")
    r = CliRunner().invoke(cli, ["serve"])
    assert r.exit_code == 2, r.output
    assert "configuration error" in r.output and "HEALTHLINK_SMS_GATEWAY" in r.output
