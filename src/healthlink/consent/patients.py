"""Patient portal accounts bound to a Person (issue 5, item 2; docs/consent.md "Patient accounts").

Core layer (no HTTP), in ``consent``, directly below ``identity``: it reads ``person_link`` and
``person_block`` itself and never imports :mod:`healthlink.identity`.

* **The verified phone belongs to the Person** (``person_phone``): set by a sign-up code, or in
  person at a registration desk (recorded as ``in-person:<staff username>``).  It is never taken
  from an institution's ``Patient.telecom``: an institution can edit its own Patient record, and a
  code sent to a number a doctor typed in would let him act as the patient.
* **Sign-up**: resident ID + phone.  The Person is the one whose linked records carry that valid
  resident ID; none, several, or one that already has an account all give the same answer.  If the
  Person already has a verified phone the code goes there, whatever number was typed.
* **Login**: a code to the verified phone; the answer is a signed session token (JWT, its own key
  and issuer, so it is never a staff token).
* **Phone change**: a code to the *old* number, or in person.
* **Guardians**: an account may act for another Person (granted in person, or by that Person's
  own account); revocable.
* Codes as in :mod:`.codes`: 6 digits, HMAC-SHA256 hashes only, single use, 10-minute expiry,
  5 wrong tries per challenge, hourly limits per phone and per Person; wrong login codes also count
  against the account (not reset by a new code) and lock it for 5 minutes after 5 in a row.
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
from dataclasses import dataclass

import jwt
import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, func, insert, select, text, update

from healthlink.access.context import Actor
from healthlink.consent.codes import (
    CODE_DIGITS,
    RATE_WINDOW_SECONDS,
    ConsentCodeError,
    ConsentCodeExpired,
    ConsentCodeLocked,
    ConsentCodeMalformed,
    ConsentCodeUnknown,
    ConsentCodeUsed,
    ConsentCodeWrong,
    ConsentRateLimited,
    SmsNotSent,
)
from healthlink.consent.messages import PLATFORM_NAME_EN, PLATFORM_NAME_ZH
from healthlink.consent.sms import SmsGateway, TransactionalSmsGateway
from healthlink.db import Database
from healthlink.db import tables as t
from healthlink.empi.ids import normalise_resident_id, resident_id_valid
from healthlink.empi.records import normalise_phone
from healthlink.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from healthlink.ledger import Agent, AuditRecord, AuditWriter
from healthlink.settings import Settings

log = logging.getLogger(__name__)

SMS_PURPOSE = "patient-code"  # sms_outbox.purpose of these messages
SIGNUP, LOGIN, PHONE_CHANGE = "signup", "login", "phone-change"
MAX_FAILED = 5  # wrong codes in a row that lock an account
LOCK_SECONDS = 300
ISSUER = "healthlink-patient"
DESK_ROLES = frozenset({"registration_clerk", "system"})
RELATIONS = ("parent", "guardian", "carer", "other")
_CODE_KDF_INFO = b"healthlink patient-code hmac v1"
_SESSION_KDF_INFO = b"healthlink patient-session jwt v1"
_PHONE = re.compile(r"\+?[0-9]{5,20}")
_CODE = re.compile(rf"[0-9]{{{CODE_DIGITS}}}")
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{1,64}")


class PatientIdentityRefused(ConsentCodeError, Forbidden):
    """403: no online sign-up or login for what was given.  Deliberately one answer for an unknown
    resident ID, one shared by several Persons, a Person who already has an account, or no account:
    the caller learns nothing about who is registered."""


@dataclass(frozen=True)
class PatientAccount:
    id: int
    person_id: str
    active: bool


@dataclass(frozen=True)
class PatientSession:
    token: str
    account_id: int
    person_id: str
    expires_in: int


@dataclass(frozen=True)
class Guardianship:
    id: int
    guardian_account_id: int
    person_id: str
    relation: str
    granted_by: str
    created_us: int
    revoked_us: int | None


@dataclass(frozen=True)
class ActingFor:
    """A Person a guardian's account acts for, as the portal shows it."""

    guardianship_id: int
    person_id: str
    name: str | None
    relation: str


@dataclass(frozen=True)
class PatientProfile:
    """What the portal shows the signed-in patient about the account (``GET /api/patient/me``)."""

    account: PatientAccount
    name: str | None
    phone_masked: str | None  # 138****1234; the full number is never shown back
    phone_verified_how: str | None  # "sms" or "in-person" (the clerk's username is not shown)
    phone_verified_at_us: int | None
    acts_for: list[ActingFor]


def _derive(settings: Settings, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
        settings.signing_key().encode())


def patient_code_message(purpose: str) -> Callable[[str, int], str]:
    """The SMS text of a sign-up, login or phone-change code (zh-CN, then one English line)."""
    zh, en = {SIGNUP: ("注册", "sign-up"), LOGIN: ("登录", "login"),
              PHONE_CHANGE: ("更换手机号", "phone change")}[purpose]

    def build(code: str, minutes: int) -> str:
        return (f"【{PLATFORM_NAME_ZH}】您的患者账户{zh}验证码 {code}，{minutes} 分钟内有效。"
                f"任何人（包括医生）向您索要此验证码，请勿告知。\n"
                f"{PLATFORM_NAME_EN}: your patient-account {en} code is {code}, valid {minutes} min. "
                f"Never give it to anyone, a doctor included.")

    return build


class PatientAccounts:
    """Patient portal accounts: sign-up, login, phone, guardians.  One per platform
    (``Platform.patient_accounts``)."""

    def __init__(self, gateway: SmsGateway, *, code_key: bytes, session_key: bytes,
                 audit: AuditWriter | None = None, ttl_seconds: int = 600, max_tries: int = 5,
                 per_phone_per_hour: int = 5, per_person_per_hour: int = 10, session_ttl: int = 3600,
                 phone_owner_check: Callable[[str, str], bool] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if len(code_key) < 16 or len(session_key) < 16:
            raise ValueError("the patient-account keys need at least 128 bits")
        self.gateway = gateway
        self.audit = audit
        self._key = code_key
        self._session_key = session_key
        self.ttl_seconds = ttl_seconds
        self.max_tries = max_tries
        self.per_phone_per_hour = per_phone_per_hour
        self.per_person_per_hour = per_person_per_hour
        self.session_ttl = session_ttl
        # (resident ID, phone) -> does the carrier's real-name record give this phone to this person?
        # Asked before an online sign-up binds a phone the Person did not have verified yet.
        self.phone_owner_check = phone_owner_check
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, gateway: SmsGateway, *, audit: AuditWriter | None = None,
                      phone_owner_check: Callable[[str, str], bool] | None = None,
                      clock: Callable[[], float] = time.time) -> PatientAccounts:
        return cls(gateway, code_key=_derive(settings, _CODE_KDF_INFO),
                   session_key=_derive(settings, _SESSION_KDF_INFO), audit=audit,
                   ttl_seconds=settings.consent_code_ttl_seconds, max_tries=settings.consent_code_max_tries,
                   per_phone_per_hour=settings.consent_code_per_phone_per_hour,
                   session_ttl=settings.token_ttl_seconds, phone_owner_check=phone_owner_check, clock=clock)

    # ------------------------------------------------------------------ sign-up
    def start_signup(self, db: Database, resident_id: str, phone: str) -> str:
        """Send a sign-up code; return the challenge id to confirm it with.

        The code goes to the Person's verified phone if it has one (whatever ``phone`` says), else
        to ``phone``, which becomes the verified phone on :meth:`confirm_signup`.  Binding a new
        phone online this way proves only that the caller holds that phone and knows the resident
        ID (which every institution holding the patient's record knows), so it is refused unless
        ``phone_owner_check`` (a carrier's real-name check) is configured and accepts the pair;
        without one, a first phone is verified in person (:meth:`verify_in_person`)."""
        phone = _phone(phone)
        rid = _resident_id(resident_id)
        refused = PatientIdentityRefused(
            "online sign-up is not possible with this resident ID; sign up in person at a "
            "registration desk with your identity card", reason="not-possible")
        with db.read() as conn:
            person = _one_person(conn, rid) if rid else None
            if person is None or self._account_row(conn, person) is not None:
                raise refused
            verified = self._verified_phone(conn, person)
        # binding a first phone online needs the carrier's word that the number is the patient's:
        # the resident ID alone is known to every institution holding the record
        if verified is None and (self.phone_owner_check is None or not self.phone_owner_check(rid, phone)):
            raise refused
        to = verified or phone
        return self._issue(db, SIGNUP, person, to=to, new_phone=None if verified else phone)

    def confirm_signup(self, db: Database, challenge_id: str, code: str) -> PatientAccount:
        """Accept a sign-up code: create the account and, if the Person had none, its verified phone."""
        def done(conn: Connection, row) -> PatientAccount:  # noqa: ANN001
            if self._account_row(conn, row.person_id) is not None:
                raise Conflict("this person already has a patient account; log in instead")
            if row.new_phone:
                self._set_phone(conn, row.person_id, row.new_phone, "sms")
            return self._create_account(conn, row.person_id)
        return self._verify(db, challenge_id, code, SIGNUP, done)

    # ------------------------------------------------------------------ login
    def start_login(self, db: Database, *, resident_id: str | None = None, phone: str | None = None) -> str:
        """Send a login code to the verified phone of the account found by resident ID or by
        verified phone (one of them); return the challenge id."""
        refused = PatientIdentityRefused(
            "no patient account can log in with this; check the number or sign up first",
            reason="not-possible")
        with db.read() as conn:
            if resident_id:
                rid = _resident_id(resident_id)
                person = _one_person(conn, rid) if rid else None
            elif phone:
                pp = t.person_phone
                persons = conn.execute(select(pp.c.person_id).join(
                    t.patient_account, t.patient_account.c.person_id == pp.c.person_id)
                    .where(pp.c.phone == _phone(phone), t.patient_account.c.active.is_(True))).scalars().all()
                person = persons[0] if len(persons) == 1 else None
            else:
                raise Invalid("log in with a resident ID or a phone number")
            account = self._account_row(conn, person) if person else None
            to = self._verified_phone(conn, person) if person else None
            if account is None or not account.active or to is None:
                raise refused
            self._check_not_locked(account)
        return self._issue(db, LOGIN, person, to=to, new_phone=None)

    def verify_login(self, db: Database, challenge_id: str, code: str, *, address: str | None = None,
                     request_id: str | None = None) -> PatientSession:
        """Accept a login code: a session for the account.  Audited as a ``login`` of ``patient-account:<id>``, refusals too."""
        def done(conn: Connection, row) -> PatientSession:  # noqa: ANN001
            account = self._account_row(conn, row.person_id)
            if account is None or not account.active:
                raise PatientIdentityRefused("this patient account is not active", reason="inactive")
            return self._session(account.id, row.person_id)
        try:
            session = self._verify(db, challenge_id, code, LOGIN, done)
        except ConsentCodeError as exc:
            self._audit_login(None, address, request_id, exc.reason)
            raise
        self._audit_login(session, address, request_id, None)
        return session

    def session(self, db: Database, token: str) -> PatientSession:
        """The session a token stands for, once its signature, issuer and expiry are checked and
        its account is still active."""
        try:
            c = jwt.decode(token, self._session_key, algorithms=["HS256"], issuer=ISSUER,
                           options={"require": ["exp", "iat", "sub"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the patient session has expired; log in again") from None
        except jwt.PyJWTError:
            raise Unauthorized("the patient session is not valid") from None
        with db.read() as conn:
            account = self._account_row(conn, c["per"])
        if account is None or not account.active or str(account.id) != c["sub"]:
            raise Unauthorized("the patient account is no longer active")
        return PatientSession(token, account.id, account.person_id, max(0, c["exp"] - int(time.time())))

    # ------------------------------------------------------------------ phone
    def start_phone_change(self, db: Database, account_id: int, new_phone: str) -> str:
        """Send a code to the account's *current* verified phone, approving ``new_phone``."""
        new_phone = _phone(new_phone)
        with db.read() as conn:
            account = self._account_by_id(conn, account_id)
            old = self._verified_phone(conn, account.person_id)
            if old is None:
                raise Conflict("this person has no verified phone; set it in person at a registration desk")
            self._check_not_locked(account)
        return self._issue(db, PHONE_CHANGE, account.person_id, to=old, new_phone=new_phone)

    def confirm_phone_change(self, db: Database, challenge_id: str, code: str) -> str:
        def done(conn: Connection, row) -> str:  # noqa: ANN001
            self._set_phone(conn, row.person_id, row.new_phone, "sms")
            return row.new_phone
        return self._verify(db, challenge_id, code, PHONE_CHANGE, done)

    def verify_in_person(self, db: Database, staff: Actor, person_id: str, phone: str, *,
                         create_account: bool = True) -> PatientAccount | None:
        """A registration clerk checked the patient's identity card and phone at the desk: set the
        Person's verified phone (recorded with the clerk's username) and, unless told not to,
        create the account.  The Person must have a Patient at the clerk's institution."""
        phone = _phone(phone)
        with db.write() as conn:
            by = self._desk(conn, staff, person_id)
            self._set_phone(conn, person_id, phone, by)
            account = self._account_row(conn, person_id)
            result = (PatientAccount(account.id, person_id, account.active) if account is not None else
                      self._create_account(conn, person_id) if create_account else None)
        self._audit(staff, "patient-phone", person_id, f"verified phone set in person ({by})")
        return result

    def verified_phone(self, db: Database, person_id: str) -> tuple[str, int, str] | None:
        """(phone, verified at µs, verified by) of a Person, or None."""
        pp = t.person_phone
        with db.read() as conn:
            row = conn.execute(select(pp.c.phone, pp.c.verified_at, pp.c.verified_by)
                               .where(pp.c.person_id == person_id)).first()
        return tuple(row) if row else None  # type: ignore[return-value]

    def account(self, db: Database, account_id: int) -> PatientAccount:
        with db.read() as conn:
            row = self._account_by_id(conn, account_id)
        return PatientAccount(row.id, row.person_id, row.active)

    def profile(self, db: Database, account_id: int) -> PatientProfile:
        """The account, its Person's name, the masked verified phone and the Persons it acts for."""
        account = self.account(db, account_id)
        guards = self.guardianships(db, account_id) if account.active else []
        names = self.person_names(db, [account.person_id] + [g.person_id for g in guards])
        phone = self.verified_phone(db, account.person_id)
        return PatientProfile(
            account, names[account.person_id], mask_phone(phone[0]) if phone else None,
            (phone[2].split(":", 1)[0] if phone else None), phone[1] if phone else None,
            [ActingFor(g.id, g.person_id, names[g.person_id], g.relation) for g in guards
             if g.person_id != account.person_id])

    def person_names(self, db: Database, person_ids: list[str]) -> dict[str, str | None]:
        """The name to greet each Person by on the portal: the name of its most recently linked
        record (``person_link.record``, as the master patient index keeps it), or None."""
        pl = t.person_link
        names: dict[str, str | None] = dict.fromkeys(person_ids)
        if not person_ids:
            return names
        with db.read() as conn:
            rows = conn.execute(select(pl.c.person_id, pl.c.record).where(pl.c.person_id.in_(person_ids))
                                .order_by(pl.c.updated, pl.c.patient_id)).all()
        for r in rows:  # later rows win: the most recent record's name
            name = orjson.loads(r.record).get("name")
            if name:
                names[r.person_id] = name
        return names

    # ------------------------------------------------------------------ guardians
    def grant_guardian(self, db: Database, person_id: str, guardian_account_id: int, *, relation: str,
                       staff: Actor | None = None, account_id: int | None = None) -> Guardianship:
        """Let ``guardian_account_id`` act for ``person_id``: in person by a registration clerk
        (``staff``), or by the Person's own account (``account_id``)."""
        if relation not in RELATIONS:
            raise Invalid(f"relation is one of {', '.join(RELATIONS)}")
        with db.write() as conn:
            by = self._granter(conn, person_id, staff=staff, account_id=account_id)
            guardian = self._account_by_id(conn, guardian_account_id)
            if not guardian.active:
                raise Conflict("the guardian's patient account is not active")
            if guardian.person_id == person_id:
                raise Invalid("an account acts for its own person already")
            g = t.guardian
            if conn.execute(select(g.c.id).where(g.c.guardian_account_id == guardian_account_id,
                                                 g.c.person_id == person_id, g.c.revoked.is_(None))).first():
                raise Conflict("this account may act for this person already")
            now = self._now_us()
            gid = conn.execute(insert(g).values(guardian_account_id=guardian_account_id, person_id=person_id,
                                                relation=relation, granted_by=by, created=now)
                               .returning(g.c.id)).scalar_one()
        if staff is not None:
            self._audit(staff, "guardian-grant", person_id,
                        f"patient account {guardian_account_id} may act for the person ({relation})")
        return Guardianship(gid, guardian_account_id, person_id, relation, by, now, None)

    def revoke_guardian(self, db: Database, guardianship_id: int, *, staff: Actor | None = None,
                        account_id: int | None = None) -> None:
        """End a guardianship: by a registration clerk, by the Person's own account, or by the
        guardian's account (giving it up)."""
        g = t.guardian
        with db.write() as conn:
            row = conn.execute(select(g).where(g.c.id == guardianship_id).with_for_update()).first()
            if row is None:
                raise NotFound("no such guardianship")
            if account_id is not None and account_id == row.guardian_account_id:
                by = f"account:{account_id}"
            else:
                by = self._granter(conn, row.person_id, staff=staff, account_id=account_id)
            if row.revoked is not None:
                return
            conn.execute(update(g).where(g.c.id == guardianship_id).values(revoked=self._now_us(), revoked_by=by))
        if staff is not None:
            self._audit(staff, "guardian-revoke", row.person_id,
                        f"patient account {row.guardian_account_id} no longer acts for the person")

    def guardianships(self, db: Database, account_id: int) -> list[Guardianship]:
        """The active guardianships of an account (the Persons it acts for, besides its own)."""
        g = t.guardian
        with db.read() as conn:
            rows = conn.execute(select(g).where(g.c.guardian_account_id == account_id, g.c.revoked.is_(None))
                                .order_by(g.c.id)).all()
        return [Guardianship(r.id, r.guardian_account_id, r.person_id, r.relation, r.granted_by, r.created,
                             r.revoked) for r in rows]

    def acts_for(self, db: Database, account_id: int) -> list[str]:
        """The Persons an account may act for: its own first, then those it is a guardian of."""
        own = self.account(db, account_id)
        if not own.active:
            return []
        return [own.person_id] + [x.person_id for x in self.guardianships(db, account_id)
                                  if x.person_id != own.person_id]

    def may_act_for(self, db: Database, account_id: int, person_id: str) -> bool:
        return person_id in self.acts_for(db, account_id)

    # ------------------------------------------------------------------ internals: codes
    def _issue(self, db: Database, purpose: str, person_id: str, *, to: str, new_phone: str | None) -> str:
        challenge = secrets.token_urlsafe(24)
        code = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
        msg = patient_code_message(purpose)(code, max(1, self.ttl_seconds // 60))
        digest = self._hash(challenge, code)
        del code
        in_tx = isinstance(self.gateway, TransactionalSmsGateway)
        with db.write() as conn:
            now = self._now_us()
            self._check_rates(conn, phone=to, person_id=person_id, now=now)
            conn.execute(insert(t.patient_code).values(
                id=challenge, purpose=purpose, person_id=person_id, phone=to, new_phone=new_phone,
                hash=digest, created=now, expires=now + self.ttl_seconds * 1_000_000, tries=0, used=None))
            if in_tx:
                self.gateway.send_in(conn, to, msg, purpose=SMS_PURPOSE)  # type: ignore[attr-defined]
        if not in_tx:
            try:
                self.gateway.send(to, msg, purpose=SMS_PURPOSE)
            except Exception as exc:  # noqa: BLE001 - a gateway's error may quote the message (and code)
                log.warning("patient code not delivered: challenge purpose=%s gateway error %s", purpose,
                            type(exc).__name__)
                raise SmsNotSent("the SMS gateway did not take the message; ask for a new code in a moment",
                                 reason="not-sent", headers={"Retry-After": "10"}) from None
        log.info("patient code sent: purpose=%s person=%s", purpose, person_id)
        return challenge

    def _check_rates(self, conn: Connection, *, phone: str, person_id: str, now: int) -> None:
        c = t.patient_code
        if conn.dialect.name == "postgresql":
            for key in (f"patient-rate:phone:{phone}", f"patient-rate:person:{person_id}"):
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key})
        since = now - RATE_WINDOW_SECONDS * 1_000_000
        for column, value, limit, whose in ((c.c.phone, phone, self.per_phone_per_hour, "this phone has"),
                                            (c.c.person_id, person_id, self.per_person_per_hour,
                                             "this person has")):
            n, oldest = conn.execute(select(func.count(), func.min(c.c.created))
                                     .where(column == value, c.c.created > since)).one()
            if n >= limit:
                wait = max(1, math.ceil((oldest + RATE_WINDOW_SECONDS * 1_000_000 - now) / 1_000_000))
                raise ConsentRateLimited(f"{whose} been sent {n} codes in the last hour (limit {limit}); "
                                         f"try again in {wait} s", reason="rate-limited",
                                         headers={"Retry-After": str(wait)})

    def _verify(self, db: Database, challenge_id: str, code: str, purpose: str,
                on_success: Callable[[Connection, object], object]):  # noqa: ANN202
        digits = "".join(code.split()) if isinstance(code, str) and len(code) <= 64 else ""
        if not _CODE.fullmatch(digits):
            raise ConsentCodeMalformed(f"a code is {CODE_DIGITS} digits", reason="malformed")
        if not isinstance(challenge_id, str) or not _CHALLENGE.fullmatch(challenge_id):
            raise ConsentCodeUnknown("no code was sent for this", reason="unknown-request")
        c = t.patient_code
        failure: ConsentCodeError | None = None
        result = None
        with db.write() as conn:
            now = self._now_us()
            row = conn.execute(select(c).where(c.c.id == challenge_id).with_for_update()).first()
            if row is None or row.purpose != purpose:
                raise ConsentCodeUnknown("no code was sent for this", reason="unknown-request")
            account = None
            if purpose != SIGNUP:
                account = conn.execute(select(t.patient_account).where(
                    t.patient_account.c.person_id == row.person_id).with_for_update()).first()
            if row.used is not None:
                raise ConsentCodeUsed("this code was already used; ask for a new one", reason="used")
            if row.tries >= self.max_tries:
                raise ConsentCodeLocked(_LOCKED, reason="locked", remaining=0)
            if account is not None and account.locked_until and account.locked_until > now:
                raise ConsentCodeLocked(_ACCOUNT_LOCKED, reason="account-locked", remaining=0)
            if now >= row.expires:
                raise ConsentCodeExpired(f"this code expired {(now - row.expires) // 1_000_000} s ago; "
                                         "ask for a new code", reason="expired")
            if not hmac.compare_digest(self._hash(challenge_id, digits), row.hash):
                tries = conn.execute(update(c).where(c.c.id == challenge_id).values(tries=c.c.tries + 1)
                                     .returning(c.c.tries)).scalar_one()
                left = max(0, self.max_tries - tries)
                if account is not None:  # a lock that has run out starts a fresh count
                    lapsed = account.locked_until is not None and account.locked_until <= now
                    fails = 1 if lapsed else account.failed_logins + 1
                    conn.execute(update(t.patient_account).where(t.patient_account.c.id == account.id).values(
                        failed_logins=fails,
                        locked_until=now + LOCK_SECONDS * 1_000_000 if fails >= MAX_FAILED else None))
                    if fails >= MAX_FAILED:
                        left = 0
                failure = ConsentCodeWrong(
                    f"wrong code; {left} {'try' if left == 1 else 'tries'} left" if left else
                    f"wrong code; that was the last try: {_LOCKED}", reason="wrong-code", remaining=left)
            else:
                conn.execute(update(c).where(c.c.id == challenge_id).values(used=now))
                if account is not None and (account.failed_logins or account.locked_until):
                    conn.execute(update(t.patient_account).where(t.patient_account.c.id == account.id)
                                 .values(failed_logins=0, locked_until=None))
                result = on_success(conn, row)
        if failure is not None:
            log.info("patient code refused: purpose=%s reason=%s", purpose, failure.reason)
            raise failure
        log.info("patient code accepted: purpose=%s", purpose)
        return result

    def _hash(self, challenge_id: str, code: str) -> str:
        return hmac.new(self._key, f"{challenge_id}\x00{code}".encode(), hashlib.sha256).hexdigest()

    def _now_us(self) -> int:
        return int(self.clock() * 1_000_000)

    # ------------------------------------------------------------------ internals: rows
    def _account_row(self, conn: Connection, person_id: str):  # noqa: ANN202
        return conn.execute(select(t.patient_account).where(t.patient_account.c.person_id == person_id)).first()

    def _account_by_id(self, conn: Connection, account_id: int):  # noqa: ANN202
        row = conn.execute(select(t.patient_account).where(t.patient_account.c.id == account_id)).first()
        if row is None:
            raise NotFound("no such patient account")
        return row

    def _verified_phone(self, conn: Connection, person_id: str) -> str | None:
        return conn.execute(select(t.person_phone.c.phone)
                            .where(t.person_phone.c.person_id == person_id)).scalar_one_or_none()

    def _set_phone(self, conn: Connection, person_id: str, phone: str, by: str) -> None:
        pp = t.person_phone
        values = dict(phone=phone, verified_at=self._now_us(), verified_by=by)
        if conn.execute(update(pp).where(pp.c.person_id == person_id).values(**values)).rowcount == 0:
            conn.execute(insert(pp).values(person_id=person_id, **values))

    def _create_account(self, conn: Connection, person_id: str) -> PatientAccount:
        a = t.patient_account
        account_id = conn.execute(insert(a).values(person_id=person_id, created=self._now_us(), active=True,
                                                    failed_logins=0).returning(a.c.id)).scalar_one()
        return PatientAccount(account_id, person_id, True)

    def _check_not_locked(self, account) -> None:  # noqa: ANN001
        if account.locked_until and account.locked_until > self._now_us():
            raise ConsentCodeLocked(_ACCOUNT_LOCKED, reason="account-locked", remaining=0)

    def _session(self, account_id: int, person_id: str) -> PatientSession:
        now = int(time.time())
        token = jwt.encode({"iss": ISSUER, "iat": now, "exp": now + self.session_ttl, "sub": str(account_id),
                            "per": person_id, "knd": "patient", "jti": secrets.token_hex(16)},
                           self._session_key, algorithm="HS256")
        return PatientSession(token, account_id, person_id, self.session_ttl)

    def _desk(self, conn: Connection, staff: Actor, person_id: str) -> str:
        """``in-person:<username>`` if ``staff`` may act at a desk for ``person_id``: a registration
        clerk of an institution holding one of the Person's Patients (or the platform itself)."""
        if not (staff.roles & DESK_ROLES):
            raise Forbidden("only a registration clerk can verify a patient in person")
        if "system" not in staff.roles:
            pl = t.person_link
            if conn.execute(select(pl.c.patient_id).where(
                    pl.c.person_id == person_id, pl.c.institution_id == staff.institution_id)).first() is None:
                raise Forbidden("this person has no patient record at your institution; register the "
                                "patient first")
        return f"in-person:{staff.subject}"

    def _granter(self, conn: Connection, person_id: str, *, staff: Actor | None, account_id: int | None) -> str:
        if (staff is None) == (account_id is None):
            raise Invalid("a guardianship is granted or revoked either in person by staff or by the patient")
        if staff is not None:
            return self._desk(conn, staff, person_id)
        own = self._account_by_id(conn, account_id)  # type: ignore[arg-type]
        if not own.active or own.person_id != person_id:
            raise Forbidden("only the person's own patient account (or a registration desk) can do this")
        return f"account:{account_id}"

    def _audit_login(self, session: PatientSession | None, address: str | None, request_id: str | None,
                     reason: str | None) -> None:
        if self.audit is None:
            return
        agent = Agent(who=f"Person/{session.person_id}" if session else None,
                      username=f"patient-account:{session.account_id}" if session else None,
                      institution_id=None, address=address, request_id=request_id, purpose_of_use="PATRQT")
        self.audit.record(AuditRecord("login", agent, outcome="success" if session else "minor",
                                      outcome_desc=None if session else f"login code refused: {reason}"))

    def _audit(self, staff: Actor, subtype: str, person_id: str, desc: str) -> None:
        if self.audit is None:
            return
        self.audit.record(AuditRecord(subtype, Agent(
            who=staff.reference, username=staff.subject, institution_id=staff.institution_id,
            department_id=staff.department_id, roles=tuple(sorted(staff.roles)), purpose_of_use="HOPERAT"),
            outcome_desc=desc, entities=[f"Person/{person_id}"]))


_LOCKED = "too many wrong codes for this code; ask for a new one"
_ACCOUNT_LOCKED = (f"too many wrong codes in a row: the patient account is locked for {LOCK_SECONDS // 60} "
                   "minutes")


def mask_phone(phone: str | None) -> str | None:
    """A verified phone as a patient page or answer shows it: ``138****1234`` (the first three
    and last four digits of a mobile number; shorter numbers keep only their last two)."""
    if not phone:
        return None
    if len(phone) >= 11:
        return f"{phone[:3]}{'*' * (len(phone) - 7)}{phone[-4:]}"
    return f"{'*' * max(0, len(phone) - 2)}{phone[-2:]}"


def _phone(value: str) -> str:
    phone = normalise_phone(value) if isinstance(value, str) else None
    if not phone or not _PHONE.fullmatch(phone):
        raise Invalid("a phone number is 5-20 digits")
    return phone


def _resident_id(value: str) -> str | None:
    rid = normalise_resident_id(value) if isinstance(value, str) and len(value) <= 64 else None
    return rid if rid and resident_id_valid(rid) else None


def _one_person(conn: Connection, rid: str) -> str | None:
    """The one Person whose linked records carry the valid resident ID ``rid``; None if none or
    several (the caller treats both alike)."""
    pl, pb = t.person_link, t.person_block
    rows = conn.execute(select(pl.c.person_id, pl.c.record).join(pb, pb.c.patient_id == pl.c.patient_id)
                        .where(pb.c.key == f"id:{rid}")).all()
    persons = set()
    for r in rows:
        rec = orjson.loads(r.record)
        if rec.get("resident_id") == rid and rec.get("resident_id_valid"):
            persons.add(r.person_id)
    return next(iter(persons)) if len(persons) == 1 else None


__all__ = ["ActingFor", "Guardianship", "PatientAccount", "PatientAccounts", "PatientIdentityRefused", "PatientProfile",
           "PatientSession", "mask_phone", "patient_code_message"]
