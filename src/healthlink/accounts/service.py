"""Staff logins (argon2 password hashes), machine clients (OAuth2 client credentials)
and short-lived signed access tokens (JWT, HS256) that carry SMART v2 scopes.

A token carries everything the request context needs (institution, department, roles,
scopes), so authenticating a request needs no database round trip; tokens are short
lived (``token_ttl_seconds``) so that a disabled account loses access within minutes.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass

import jwt
import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import and_, case, insert, null, select, update
from sqlalchemy.exc import IntegrityError

from healthlink.access.context import Actor, RequestContext
from healthlink.access.roles import ROLES, STAFF_ROLES
from healthlink.access.scopes import Scope, parse_scopes
from healthlink.db import Database
from healthlink.db import tables as t
from healthlink.errors import Conflict, Forbidden, Invalid, Issue, Unauthorized
from healthlink.fhir.store import read_current
from healthlink.ledger import Agent, AuditRecord, AuditWriter

_hasher = PasswordHasher()
# A hash to verify against when the username is unknown, so timing does not reveal it.
_DUMMY = _hasher.hash("not-a-real-password")
STAFF_SCOPES = "user/*.cruds"
MAX_FAILED = 5
LOCK_SECONDS = 300
ISSUER = "healthlink"
_CLAIMS_CACHE_MAX = 10_000  # verified tokens kept per process (a few MB at most)
# a hospital system's userId -> staff actor is kept this long (a disabled account, or one moved to
# another institution, stops acting through the system within it; tokens live longer)
STAFF_CACHE_SECONDS = 30.0


@dataclass(frozen=True)
class TokenIssued:
    access_token: str
    expires_in: int
    scope: str
    token_type: str = "Bearer"


def _now() -> int:
    return int(time.time())


MIN_PASSWORD = 8  # NIST SP 800-63B-4 section 3.1.1.2: at least 8 where a second factor may follow
MAX_PASSWORD = 256  # argon2 hashes any length; a bound keeps a login request cheap to refuse


def check_password(password: str, *, username: str) -> None:
    """The password policy (docs/security.md): 8 to 256 characters, not blank, not the username."""
    if len(password) < MIN_PASSWORD or not password.strip():
        raise Invalid(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise Invalid(f"a password has at most {MAX_PASSWORD} characters")
    if password.strip().lower() == username.strip().lower():
        raise Invalid("a password must not be the username")


def add_user(db: Database, *, username: str, password: str, display_name: str, roles: list[str],
             institution_id: str | None, department_id: str | None = None,
             practitioner_id: str | None = None) -> int:
    bad = [r for r in roles if r not in STAFF_ROLES]
    if bad:
        raise Invalid(f"unknown role(s): {', '.join(bad)}; known: {', '.join(STAFF_ROLES)}")
    if not roles:
        raise Invalid("a user needs at least one role")
    admin = {"system_admin", "security_admin", "audit_admin"}
    if len(admin & set(roles)) > 1 or (admin & set(roles) and set(roles) - admin):
        raise Invalid("the system, security and audit administrator roles are held separately "
                      "(MLPS level 3 separation of duties) and not combined with clinical roles")
    check_password(password, username=username)
    try:
        with db.write() as conn:
            return conn.execute(insert(t.user_account).values(
                username=username, password_hash=_hasher.hash(password), display_name=display_name,
                practitioner_id=practitioner_id, institution_id=institution_id,
                department_id=department_id, roles=" ".join(roles), active=True,
                created=time.time_ns() // 1000, failed_logins=0,
            ).returning(t.user_account.c.id)).scalar_one()
    except IntegrityError as exc:
        raise Conflict(f"user '{username}' already exists") from exc


def add_client(db: Database, *, client_id: str, display_name: str, institution_id: str,
               scopes: str = "system/*.cruds", secret: str | None = None) -> str:
    """Register a machine client; returns its secret (shown once, stored hashed).  A client gets
    system/ scopes only: patient/ scopes need a launch patient and user/ scopes a user, and a
    client has neither (SMART App Launch v2, backend services)."""
    if any(s.context != "system" for s in parse_scopes(scopes, strict=True)):
        raise Invalid(f"a client gets system/ scopes only, e.g. system/Patient.rs; not '{scopes}'")
    secret = secret or secrets.token_urlsafe(32)
    try:
        with db.write() as conn:
            conn.execute(insert(t.oauth_client).values(
                client_id=client_id, secret_hash=_hasher.hash(secret), display_name=display_name,
                institution_id=institution_id, scopes=scopes, active=True,
                created=time.time_ns() // 1000))
    except IntegrityError as exc:
        raise Conflict(f"client '{client_id}' already exists") from exc
    return secret


class AccountService:
    def __init__(self, db: Database, audit: AuditWriter, *, key: str, ttl: int) -> None:
        self.db = db
        self.audit = audit
        self.key = key
        self.ttl = ttl
        self._claims_cache: dict[str, dict] = {}
        self._staff_cache: dict[tuple, tuple[float, Actor]] = {}

    # -------------------------------------------------------------- tokens
    def _issue(self, claims: dict) -> TokenIssued:
        now = _now()
        body = {"iss": ISSUER, "iat": now, "exp": now + self.ttl, "jti": uuid.uuid4().hex, **claims}
        return TokenIssued(jwt.encode(body, self.key, algorithm="HS256"), self.ttl, claims["scope"])

    def _verified_claims(self, token: str) -> dict:
        """The token's claims once its signature, issuer and expiry are checked.

        A token is immutable, so the claims of one already verified are kept (keyed by the
        whole token, signature included) until it expires: verifying an HS256 JWT costs
        about 80 us of Python, the largest single item of an authenticated read.
        """
        hit = self._claims_cache.get(token)
        if hit is not None and time.time() < hit["exp"]:
            return hit
        try:
            c = jwt.decode(token, self.key, algorithms=["HS256"], issuer=ISSUER,
                           options={"require": ["exp", "iat", "sub"]})
        except jwt.ExpiredSignatureError:
            self._claims_cache.pop(token, None)
            raise Unauthorized("the access token has expired; log in again") from None
        except jwt.PyJWTError:
            raise Unauthorized("the access token is not valid") from None
        if len(self._claims_cache) >= _CLAIMS_CACHE_MAX:
            self._claims_cache.clear()
        self._claims_cache[token] = c
        return c

    def actor_from_token(self, token: str) -> Actor:
        c = self._verified_claims(token)
        return Actor(kind=c.get("knd", "user"), subject=c["sub"], display=c.get("name", c["sub"]),
                     institution_id=c.get("ins"), roles=frozenset(c.get("roles", [])),
                     # patient/ scopes need a launch patient, which this platform never issues:
                     # they grant nothing (else the repository would read them as user/ scopes)
                     scopes=tuple(s for s in parse_scopes(c.get("scope", "")) if s.context != "patient"),
                     practitioner_id=c.get("pra"),
                     department_id=c.get("dep"))

    # -------------------------------------------------------------- staff login
    def login(self, username: str, password: str, *, ctx_address: str | None = None,
              request_id: str | None = None, scope: str | None = None) -> TokenIssued:
        granted = STAFF_SCOPES
        if scope:
            asked = parse_scopes(scope, strict=True)
            if any(s.context != "user" for s in asked):
                # SMART v2: patient/ scopes need a patient launch context (none exists for a
                # password login) and system/ scopes belong to machine clients.
                raise Invalid("a staff login grants user/ scopes only, e.g. user/Patient.rs")
            granted = " ".join(str(s) for s in asked)
        with self.db.read() as conn:
            row = conn.execute(select(t.user_account).where(t.user_account.c.username == username)).first()
        agent = Agent(who=f"Practitioner/{row.practitioner_id}" if row and row.practitioner_id else None,
                      username=username, institution_id=row.institution_id if row else None,
                      address=ctx_address, request_id=request_id, purpose_of_use="HOPERAT")
        now = _now()
        ok = False
        locked = bool(row is not None and row.locked_until and row.locked_until > now * 1_000_000)
        if row is None or not row.active or locked:
            try:  # the same cost as a real check, so timing tells nothing about the account
                _hasher.verify(_DUMMY, password)
            except VerifyMismatchError:
                pass
        else:
            try:
                ok = _hasher.verify(row.password_hash, password)
            except (VerifyMismatchError, InvalidHashError):
                ok = False
        if not ok:
            if row is not None and row.active and not locked:
                self._count_failure(row.id, now)
            self.audit.record(AuditRecord("login", agent, outcome="serious",
                                          outcome_desc="wrong username or password, or account locked"))
            raise Unauthorized("wrong username or password (accounts lock for 5 minutes after 5 failures)")
        if row.failed_logins:
            with self.db.write() as conn:
                conn.execute(update(t.user_account).where(t.user_account.c.id == row.id)
                             .values(failed_logins=0, locked_until=None))
        roles = row.roles.split()
        self.audit.record(AuditRecord("login", agent))
        return self._issue({"sub": username, "knd": "user", "name": row.display_name,
                            "ins": row.institution_id, "dep": row.department_id,
                            "pra": row.practitioner_id, "roles": roles, "scope": granted})

    def _count_failure(self, user_id: int, now: int) -> None:
        """Count a wrong password in one UPDATE, so that concurrent guesses cannot all
        read the same old count and write it back plus one (which let parallel guesses
        slip past the lockout).  The MAX_FAILED-th consecutive failure locks the account
        for LOCK_SECONDS; a lock that has run out starts a fresh count.  Attempts while
        locked are refused without a password check and are not counted, so the lock
        ends LOCK_SECONDS after the failure that set it."""
        ua = t.user_account
        lapsed = and_(ua.c.locked_until.is_not(None), ua.c.locked_until <= now * 1_000_000)
        fails = case((lapsed, 1), else_=ua.c.failed_logins + 1)
        with self.db.write() as conn:
            conn.execute(update(ua).where(ua.c.id == user_id).values(
                failed_logins=fails,
                locked_until=case((fails >= MAX_FAILED, (now + LOCK_SECONDS) * 1_000_000),
                                  (lapsed, null()), else_=ua.c.locked_until)))

    # -------------------------------------------------------------- machine clients
    def client_credentials(self, client_id: str, secret: str, *, scope: str | None = None,
                           ctx_address: str | None = None, request_id: str | None = None) -> TokenIssued:
        with self.db.read() as conn:
            row = conn.execute(select(t.oauth_client).where(t.oauth_client.c.client_id == client_id)).first()
        agent = Agent(who=f"Device/{client_id}", username=client_id,
                      institution_id=row.institution_id if row else None, address=ctx_address,
                      request_id=request_id, purpose_of_use="HOPERAT")
        ok = False
        if row is None:
            try:
                _hasher.verify(_DUMMY, secret)
            except VerifyMismatchError:
                pass
        elif row.active:
            try:
                ok = _hasher.verify(row.secret_hash, secret)
            except (VerifyMismatchError, InvalidHashError):
                ok = False
        if not ok:
            self.audit.record(AuditRecord("token", agent, outcome="serious",
                                          outcome_desc="invalid client credentials"))
            raise Unauthorized("invalid client credentials")
        allowed = parse_scopes(row.scopes)
        if scope:
            asked = parse_scopes(scope, strict=True)
            granted = [s for s in asked if any(a.res_type in ("*", s.res_type) and s.ops <= a.ops
                                               for a in allowed)]
            if not granted:
                self.audit.record(AuditRecord("token", agent, outcome="minor",
                                              outcome_desc=f"scope '{scope}' is not allowed for this client"))
                raise Unauthorized(f"scope '{scope}' is not allowed for this client")
            scope_text = " ".join(str(s) for s in granted)
        else:
            scope_text = row.scopes
        self.audit.record(AuditRecord("token", agent))
        return self._issue({"sub": client_id, "knd": "client", "name": row.display_name,
                            "ins": row.institution_id, "roles": ["his_client"], "scope": scope_text})


    # -------------------------------------------------------------- staff acting through a client
    def actor_for_practitioner(self, client: Actor, user_id: str) -> Actor:
        """The staff member a hospital system (``client``, a machine client's actor) names as the
        acting user: ``Practitioner/<id>`` or ``PractitionerRole/<id>`` (CDS Hooks
        ``context.userId``).  A PractitionerRole is read from the store and, when it is a role at
        the client's institution (held by it or naming it as ``organization``), stands for its
        ``practitioner``.  The account must be active and at the client's institution; anything
        else is refused with 403 that does not tell whether the practitioner exists elsewhere.
        An answer is kept :data:`STAFF_CACHE_SECONDS` (a CDS call must be quick).

        The actor is the staff user's (kind ``user``, the username as subject, so that grants,
        which are held by username, apply; the user's roles and department), its display names
        the client, and its scopes are the client's narrowed to ``user/`` (a user acting through
        a system gets no more than the system was given)."""
        if client.kind != "client" or not client.institution_id:
            raise Forbidden("only a hospital system (client credentials) may act for its staff")
        key = (client.subject, client.institution_id, client.scopes, user_id)
        hit = self._staff_cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        kind, _, ident = (user_id or "").partition("/")
        if kind not in ("Practitioner", "PractitionerRole") or not ident or "/" in ident or len(ident) > 64:
            raise Invalid(f"userId {user_id!r} must be Practitioner/<id> or PractitionerRole/<id>",
                          [Issue("invalid", "must be Practitioner/<id> or PractitionerRole/<id>",
                                 ("context.userId",))])
        with self.db.read() as conn:
            if kind == "PractitionerRole":
                stored = read_current(conn, "PractitionerRole", ident)
                ref = ""
                if stored is not None and not stored.deleted and stored.content:
                    role = orjson.loads(stored.content)
                    org = (role.get("organization") or {}).get("reference")
                    # the role is one at the client's institution (held by it, or naming it)
                    if stored.institution_id == client.institution_id or org == f"Organization/{client.institution_id}":
                        ref = (role.get("practitioner") or {}).get("reference") or ""
                if not ref.startswith("Practitioner/"):
                    raise Forbidden(f"{user_id} is not a member of staff of {client.institution_id}")
                ident = ref.split("/", 1)[1]
            ua = t.user_account
            row = conn.execute(select(ua).where(ua.c.practitioner_id == ident,
                                                ua.c.institution_id == client.institution_id,
                                                ua.c.active.is_(True)).order_by(ua.c.id).limit(1)).first()
        if row is None:
            raise Forbidden(f"{user_id} is not an active member of staff of {client.institution_id}")
        actor = self._staff_through(client, row)
        if len(self._staff_cache) >= _CLAIMS_CACHE_MAX:
            self._staff_cache.clear()
        self._staff_cache[key] = (time.monotonic() + STAFF_CACHE_SECONDS, actor)
        return actor

    def actor_for_username(self, client: Actor, username: str) -> Actor:
        """As :meth:`actor_for_practitioner`, for the staff account ``username`` (e.g. the
        practitioner recorded on an earlier reminder)."""
        if client.kind != "client" or not client.institution_id:
            raise Forbidden("only a hospital system (client credentials) may act for its staff")
        with self.db.read() as conn:
            ua = t.user_account
            row = conn.execute(select(ua).where(ua.c.username == username,
                                                ua.c.institution_id == client.institution_id,
                                                ua.c.active.is_(True))).first()
        if row is None:
            raise Forbidden(f"{username!r} is not an active member of staff of {client.institution_id}")
        return self._staff_through(client, row)

    @staticmethod
    def _staff_through(client: Actor, row) -> Actor:  # noqa: ANN001
        scopes = tuple(Scope("user", s.res_type, s.ops) for s in client.scopes if s.context == "system")
        return Actor(kind="user", subject=row.username, display=f"{row.display_name} (via {client.subject})",
                     institution_id=row.institution_id, roles=frozenset(row.roles.split()),
                     scopes=scopes, practitioner_id=row.practitioner_id, department_id=row.department_id)


def context_for_cli(actor: Actor) -> RequestContext:
    return RequestContext(actor=actor, address="cli", purpose_of_use="HOPERAT")


__all__ = ["AccountService", "add_user", "add_client", "check_password", "TokenIssued", "ROLES"]
