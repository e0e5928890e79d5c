"""Grants: a patient authorises one doctor, for one consultation, to see their outside records.

Issue 5, items 3-6 and 9; docs/consent.md "Grants".  The life of a grant:

1. **request** — a doctor (nurse, pharmacist) inside an open Encounter of their institution asks
   for the patient's records at other institutions: purpose, data classes (``*`` or some of
   :data:`healthlink.fhir.labels.DATA_CLASSES`), sensitive categories to include (none by
   default).  A FHIR Consent (status ``proposed``) and an ``access_grant`` row (``pending``) are
   written; by ``code`` a one-time code goes to the Person's verified phone (never to a
   Patient.telecom an institution typed in: :meth:`PatientAccounts.verified_phone`);
2. **approval** — the doctor types the code the patient reads out (:meth:`confirm_code`), or the
   patient, signed in to the portal, scans the doctor's short-lived QR and approves
   (:meth:`decide`), or a registration clerk records the patient's signed consent at the desk
   (:meth:`in_person`).  The Consent becomes ``active`` with ``provision.period`` now ..
   now + ``grant_ttl`` (4 h by default);
3. **end** — whichever comes first: the encounter closes (Encounter.status finished or an
   explicit :meth:`close_consultation`), the expiry, or the patient revokes (:meth:`revoke`).
   The repository (:mod:`healthlink.access.grants`) checks the row on every read.

**Break-the-glass** (:meth:`break_glass`): a doctor opens access without the patient, giving a
reason; it lasts ``break_glass_ttl`` (1 h), covers every data class except sensitive
categories, marks every record served under it (``meta.security`` BTG), records purpose of use
ETREAT, and waits in the institution's quality manager's review queue (:meth:`review_queue`,
:meth:`review`).

Every step writes an audit record in its own transaction (subtypes ``grant-request``,
``grant-approve``, ``grant-refuse``, ``grant-revoke``, ``grant-close``, ``break-glass``,
``break-glass-review``), naming the local Patient and the Consent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from sqlalchemy import Connection, and_, insert, select, update

from healthlink.access import RequestContext, Services
from healthlink.access import grants as G
from healthlink.access.context import Actor
from healthlink.consent.codes import ConsentCodes
from healthlink.consent.messages import authorisation_message
from healthlink.consent.patients import PatientAccounts
from healthlink.db import tables as t
from healthlink.errors import Conflict, Forbidden, Gone, Invalid, Issue, NotFound
from healthlink.fhir import store
from healthlink.fhir.dates import instant
from healthlink.fhir.labels import DATA_CLASSES, SENSITIVE
from healthlink.ledger import AuditRecord, Agent

EXT = "https://healthlink.example.org/fhir/StructureDefinition/"
LABELS = "https://healthlink.example.org/fhir/CodeSystem/label"
METHODS = ("code", "qr")
QR_PREFIX = "HLG1."
_SIGNATURE = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]{100,400000}")


@dataclass(frozen=True)
class GrantView:
    """One grant or request as its holder, the patient or a reviewer sees it."""

    id: str
    consent_id: str
    kind: str
    status: str  # pending | active | expired | refused | revoked | closed
    holder: str
    practitioner: str | None
    institution_id: str
    encounter_id: str
    patient_id: str
    person_id: str
    classes: tuple[str, ...]  # ("*",) for all
    sensitive: tuple[str, ...]
    purpose: str
    reason: str | None
    created: int
    activated: int | None
    expires: int
    ended: int | None
    end_reason: str | None
    approved_by: str | None
    reviewed: int | None
    reviewed_by: str | None
    review_note: str | None

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def _view(r, now: int) -> GrantView:  # noqa: ANN001
    status = r.status
    if status in (G.ACTIVE, G.PENDING) and r.expires <= now:
        status = "expired"
    return GrantView(r.id, r.consent_id, r.kind, status, r.holder, r.practitioner, r.institution_id,
                     r.encounter_id, r.patient_id, r.person_id, tuple((r.classes or "").split(",")),
                     tuple(x for x in (r.sensitive or "").split(",") if x), r.purpose, r.reason, r.created,
                     r.activated, r.expires, r.ended, r.end_reason, r.approved_by, r.reviewed,
                     r.reviewed_by, r.review_note)


class Grants:
    """The grant workflow (one per platform: ``Platform.grants``)."""

    def __init__(self, services: Services, codes: ConsentCodes, accounts: PatientAccounts, *, key: bytes,
                 grant_ttl: int = 4 * 3600, request_ttl: int = 600, qr_ttl: int = 120,
                 break_glass_ttl: int = 3600, clock=time.time) -> None:  # noqa: ANN001
        self.s = services
        self.codes = codes
        self.accounts = accounts
        self._key = key
        self.grant_ttl = grant_ttl
        self.request_ttl = request_ttl
        self.qr_ttl = qr_ttl
        self.break_glass_ttl = break_glass_ttl
        self.clock = clock

    def _now(self) -> int:
        return int(self.clock() * 1_000_000)

    # ------------------------------------------------------------------ doctor: request
    def request(self, ctx: RequestContext, *, patient_id: str, encounter_id: str, purpose: str,
                classes: Iterable[str] = ("*",), sensitive: Iterable[str] = (), method: str = "code",
                institution_name: str | None = None) -> GrantView:
        """Ask the patient of ``patient_id`` (a Patient of the doctor's institution), inside the open
        ``encounter_id``, for their records at other institutions."""
        a = self._holder(ctx)
        if method not in METHODS:
            raise Invalid(f"method must be one of {', '.join(METHODS)}",
                          [Issue("invalid", "unknown method", ("method",))])
        purpose = self._purpose(purpose)
        cls, sens = self._scope(classes, sensitive)
        now = self._now()
        gid = secrets.token_urlsafe(18)
        with self.s.db.write() as conn:
            person = self._consultation(conn, a, patient_id, encounter_id)
            phone = None
            if method == "code":
                phone = self._phone(conn, person)
            consent = self._consent(conn, a, gid, person=person, patient_id=patient_id,
                                    encounter_id=encounter_id, purpose=purpose, classes=cls,
                                    sensitive=sens, kind=method, status="proposed", now=now)
            conn.execute(insert(t.access_grant).values(
                id=gid, consent_id=consent, kind=method, status=G.PENDING, holder=a.subject,
                practitioner=a.reference, institution_id=a.institution_id, encounter_id=encounter_id,
                patient_id=patient_id, person_id=person, classes=",".join(cls), sensitive=",".join(sens),
                purpose=purpose, created=now, expires=now + self.request_ttl * 1_000_000))
            if phone is not None:
                self.codes.issue(conn, gid, practitioner=a.reference, encounter=f"Encounter/{encounter_id}",
                                 phone=phone, message_builder=authorisation_message(
                                     doctor=a.display, institution=institution_name or a.institution_id,
                                     purpose=purpose))
            self._audit(conn, ctx, "grant-request", patient_id, consent, f"{method}: {purpose}")
            row = conn.execute(select(t.access_grant).where(t.access_grant.c.id == gid)).one()
        return _view(row, now)

    def resend(self, ctx: RequestContext, grant_id: str, *, institution_name: str | None = None) -> None:
        """A new code for a pending code request (the wrong-try count and rate limits carry on)."""
        a = self._holder(ctx)
        with self.s.db.write() as conn:
            g = self._pending(conn, grant_id, a)
            if g.kind != "code":
                raise Conflict("this request is approved by QR, not by code")
            phone = self._phone(conn, g.person_id)
            # the new code lives request_ttl from now: the request must too, or a code resent late
            # would be refused as an expired request although the code itself is valid
            conn.execute(update(t.access_grant).where(t.access_grant.c.id == grant_id)
                         .values(expires=self._now() + self.request_ttl * 1_000_000))
            self.codes.issue(conn, grant_id, practitioner=a.reference, encounter=f"Encounter/{g.encounter_id}",
                             phone=phone, message_builder=authorisation_message(
                                 doctor=a.display, institution=institution_name or a.institution_id,
                                 purpose=g.purpose))

    def confirm_code(self, ctx: RequestContext, grant_id: str, code: str) -> GrantView:
        """The code the patient read out: the grant is active once it matches (see
        :class:`ConsentCodes` for the rules: single use, 10 min, 5 tries, bound to doctor and
        encounter)."""
        a = self._holder(ctx)
        with self.s.db.read() as conn:
            g = conn.execute(select(t.access_grant).where(t.access_grant.c.id == grant_id)).first()
        if g is None or g.holder != a.subject:
            # not counted against the request: someone who learnt its id must not lock it
            raise NotFound("no such request of yours")
        encounter = f"Encounter/{g.encounter_id}"

        def activate(conn: Connection) -> GrantView:
            row = self._pending(conn, grant_id, a)
            return self._activate(conn, ctx, row, approved_by="code")

        return self.codes.verify(self.s.db, grant_id, code, practitioner=a.reference, encounter=encounter,
                                 on_success=activate)  # type: ignore[return-value]

    # ------------------------------------------------------------------ QR
    def qr_payload(self, ctx: RequestContext, grant_id: str) -> tuple[str, int]:
        """A short-lived payload for the doctor's screen (the page asks for a fresh one as it
        nears expiry): ``HLG1.<grant id>.<expiry s>.<MAC>``.  Returns it and its expiry (s)."""
        a = self._holder(ctx)
        with self.s.db.read() as conn:
            g = self._pending(conn, grant_id, a)
        if g.kind != "qr":
            raise Conflict("this request is approved by code, not by QR")
        exp = int(self.clock()) + self.qr_ttl
        body = f"{grant_id}.{exp}"
        return QR_PREFIX + body + "." + self._mac(body), exp

    def _mac(self, body: str) -> str:
        d = hmac.new(self._key, b"healthlink grant qr v1\x00" + body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(d[:18]).decode().rstrip("=")

    def _from_qr(self, payload: str) -> str:
        payload = (payload or "").strip()
        parts = payload[len(QR_PREFIX):].split(".") if payload.startswith(QR_PREFIX) else []
        if len(parts) != 3 or not hmac.compare_digest(self._mac(f"{parts[0]}.{parts[1]}"), parts[2]):
            raise Invalid("this is not a HealthLink consultation QR code",
                          [Issue("invalid", "not a consultation QR payload", ("payload",))])
        if not parts[1].isdigit() or int(parts[1]) < self.clock():
            raise Gone("this QR code has expired; ask the doctor to show the current one")
        return parts[0]

    def describe(self, account_id: int, *, payload: str | None = None, grant_id: str | None = None) -> GrantView:
        """What the patient is asked to approve (by QR payload, or a pending request of theirs)."""
        gid = self._from_qr(payload) if payload is not None else grant_id
        persons = self.accounts.acts_for(self.s.db, account_id)
        with self.s.db.read() as conn:
            row = conn.execute(select(t.access_grant).where(t.access_grant.c.id == gid)).first()
        if row is None or row.person_id not in persons:
            raise NotFound("no such request for you")
        return _view(row, self._now())

    def decide(self, account_id: int, grant_id: str, *, approve: bool, sensitive: Iterable[str] | None = None,
               payload: str | None = None, address: str | None = None) -> GrantView:
        """The patient (or their guardian) approves or refuses a pending request.  A QR request needs
        the scanned payload (it proves the patient is in front of the doctor's screen); a code
        request can be refused here too.  Approval may add sensitive categories, never more than
        the doctor asked for."""
        if payload is not None and self._from_qr(payload) != grant_id:
            raise Invalid("the QR code is for another request")
        persons = self.accounts.acts_for(self.s.db, account_id)
        now = self._now()
        with self.s.db.write() as conn:
            row = conn.execute(select(t.access_grant).where(t.access_grant.c.id == grant_id)
                               .with_for_update()).first()
            if row is None or row.person_id not in persons:
                raise NotFound("no such request for you")
            self._still_pending(row, now)
            agent = Agent(who=f"Person/{row.person_id}", username=f"patient-account:{account_id}",
                          institution_id=None, address=address, purpose_of_use="TREAT")
            if not approve:
                G.end(conn, t.access_grant.c.id == grant_id, reason="refused", status=G.REFUSED,
                      by=f"account:{account_id}", base_url=self.s.base_url)
                self.s.audit.write_in(conn, AuditRecord("grant-refuse", agent, patients={row.patient_id},
                                                        entities=[f"Consent/{row.consent_id}"]))
            else:
                if row.kind == "qr" and payload is None:
                    raise Forbidden("approve a QR request by scanning the doctor's QR code")
                if row.kind == "code":
                    raise Conflict("this request is approved with the code sent to your phone: "
                                   "read it out to the doctor, or refuse it here")
                if sensitive is not None:
                    asked = set(x for x in row.sensitive.split(",") if x)
                    extra = set(sensitive) - asked
                    if extra:
                        raise Invalid(f"the doctor did not ask for {', '.join(sorted(extra))}")
                    conn.execute(update(t.access_grant).where(t.access_grant.c.id == grant_id)
                                 .values(sensitive=",".join(sorted(set(sensitive)))))
                    row = conn.execute(select(t.access_grant).where(t.access_grant.c.id == grant_id)).one()
                self._activate(conn, None, row, approved_by=f"account:{account_id}", agent=agent)
            out = conn.execute(select(t.access_grant).where(t.access_grant.c.id == grant_id)).one()
        return _view(out, now)

    def for_desk(self, ctx: RequestContext, grant_id: str) -> GrantView:
        """A request as the registration clerk of its institution sees it before the patient signs:
        who asks, why, what for (audited: the desk looked at a patient's request)."""
        a = ctx.actor
        if "registration_clerk" not in a.roles or a.institution_id is None:
            raise Forbidden("only a registration clerk records an in-person consent")
        with self.s.db.read() as conn:
            row = conn.execute(select(t.access_grant).where(t.access_grant.c.id == grant_id)).first()
        if row is None or row.institution_id != a.institution_id:
            raise NotFound("no such request at your institution")
        self.s.audit.record(AuditRecord("grant-desk-view", ctx.agent(), patients={row.patient_id},
                                        entities=[f"Consent/{row.consent_id}"]))
        return _view(row, self._now())

    def in_person(self, ctx: RequestContext, grant_id: str, *, signature: str) -> GrantView:
        """A patient without a phone authorises at the registration desk: the clerk of the same
        institution records the signed consent (the signature image goes into
        ``Consent.sourceAttachment``)."""
        a = ctx.actor
        if not (a.roles & {"registration_clerk"}) or a.institution_id is None:
            raise Forbidden("only a registration clerk records an in-person consent")
        if not isinstance(signature, str) or not _SIGNATURE.fullmatch(signature):
            raise Invalid("the patient's signature (a PNG data: URL) is required",
                          [Issue("required", "signature missing or not a PNG image", ("signature",))])
        now = self._now()
        with self.s.db.write() as conn:
            row = conn.execute(select(t.access_grant).where(t.access_grant.c.id == grant_id)
                               .with_for_update()).first()
            if row is None or row.institution_id != a.institution_id:
                raise NotFound("no such request at your institution")
            self._still_pending(row, now)
            conn.execute(update(t.access_grant).where(t.access_grant.c.id == grant_id)
                         .values(kind="in-person", signature=signature))
            row = conn.execute(select(t.access_grant).where(t.access_grant.c.id == grant_id)).one()
            self._activate(conn, ctx, row, approved_by=f"in-person:{a.subject}",
                           attachment=signature.split(",", 1)[1])
            out = conn.execute(select(t.access_grant).where(t.access_grant.c.id == grant_id)).one()
        return _view(out, now)

    # ------------------------------------------------------------------ ending
    def revoke(self, account_id: int, grant_id: str, *, address: str | None = None) -> GrantView:
        persons = self.accounts.acts_for(self.s.db, account_id)
        with self.s.db.write() as conn:
            row = conn.execute(select(t.access_grant).where(t.access_grant.c.id == grant_id)).first()
            if row is None or row.person_id not in persons:
                raise NotFound("no such grant for you")
            if row.kind == G.BREAK_GLASS:
                raise Conflict("an emergency (break-the-glass) access is not revoked by the patient: it "
                               "ends with the encounter or after its time, and the institution's quality "
                               "manager reviews it")
            G.end(conn, t.access_grant.c.id == grant_id, reason="revoked", status=G.REVOKED,
                  by=f"account:{account_id}", base_url=self.s.base_url)
            agent = Agent(who=f"Person/{row.person_id}", username=f"patient-account:{account_id}",
                          institution_id=None, address=address)
            self.s.audit.write_in(conn, AuditRecord("grant-revoke", agent, patients={row.patient_id},
                                                    entities=[f"Consent/{row.consent_id}"]))
            out = conn.execute(select(t.access_grant).where(t.access_grant.c.id == grant_id)).one()
        return _view(out, self._now())

    def close_consultation(self, ctx: RequestContext, encounter_id: str) -> list[str]:
        """The doctor closes the consultation window: every grant of the encounter ends now."""
        a = ctx.actor
        if a.institution_id is None or a.kind != "user" or not (a.roles & (G.GRANT_ROLES | {"registration_clerk"})):
            raise Forbidden("only a doctor, nurse, pharmacist or registration clerk of the encounter's "
                            "institution closes its consultation")
        with self.s.db.write() as conn:
            enc = store.read_current(conn, "Encounter", encounter_id)
            if enc is None or enc.deleted or enc.institution_id != a.institution_id:
                raise NotFound(f"Encounter/{encounter_id} is not known")
            ended = G.close_encounter(conn, encounter_id, by=a.subject, reason="consultation-closed",
                                      base_url=self.s.base_url)
            self._audit(conn, ctx, "grant-close", enc.patient_id, None, f"{len(ended)} grant(s) ended",
                        entities=[f"Encounter/{encounter_id}"])
        return ended

    # ------------------------------------------------------------------ break-the-glass
    def break_glass(self, ctx: RequestContext, *, patient_id: str, encounter_id: str, reason: str) -> GrantView:
        a = self._holder(ctx, roles={"doctor"})
        reason = (reason or "").strip()
        if len(reason) < 10:
            raise Invalid("break-the-glass needs the emergency reason (at least 10 characters)",
                          [Issue("required", "reason missing or too short", ("reason",))])
        if len(reason) > 2000:
            raise Invalid("the reason is at most 2000 characters", [Issue("too-long", "too long", ("reason",))])
        now = self._now()
        gid = secrets.token_urlsafe(18)
        with self.s.db.write() as conn:
            person = self._consultation(conn, a, patient_id, encounter_id)
            exp = now + self.break_glass_ttl * 1_000_000
            consent = self._consent(conn, a, gid, person=person, patient_id=patient_id, encounter_id=encounter_id,
                                    purpose="emergency treatment", classes=("*",), sensitive=(),
                                    kind=G.BREAK_GLASS, status="active", now=now, end=exp, reason=reason)
            conn.execute(insert(t.access_grant).values(
                id=gid, consent_id=consent, kind=G.BREAK_GLASS, status=G.ACTIVE, holder=a.subject,
                practitioner=a.reference, institution_id=a.institution_id, encounter_id=encounter_id,
                patient_id=patient_id, person_id=person, classes="*", sensitive="", reason=reason,
                purpose="emergency treatment", created=now, activated=now, expires=exp,
                approved_by=G.BREAK_GLASS))
            rec = AuditRecord("break-glass", _etreat(ctx), patients={patient_id},
                              entities=[f"Consent/{consent}", f"Encounter/{encounter_id}"], outcome_desc=reason)
            self.s.audit.write_in(conn, rec)
            row = conn.execute(select(t.access_grant).where(t.access_grant.c.id == gid)).one()
        return _view(row, now)

    def review_queue(self, ctx: RequestContext, *, reviewed: bool = False) -> list[GrantView]:
        """Break-the-glass accesses of the quality manager's institution, waiting for review
        (or, with ``reviewed``, those already reviewed), newest first."""
        a = self._reviewer(ctx)
        g = t.access_grant
        cond = g.c.reviewed.is_not(None) if reviewed else g.c.reviewed.is_(None)
        with self.s.db.read() as conn:
            rows = conn.execute(select(g).where(g.c.institution_id == a.institution_id,
                                                g.c.kind == G.BREAK_GLASS, cond)
                                .order_by(g.c.created.desc()).limit(500)).all()
        now = self._now()
        return [_view(r, now) for r in rows]

    def review(self, ctx: RequestContext, grant_id: str, *, note: str) -> GrantView:
        a = self._reviewer(ctx)
        note = (note or "").strip()
        if not note:
            raise Invalid("a review needs a note (justified / not justified and why)",
                          [Issue("required", "note missing", ("note",))])
        now = self._now()
        g = t.access_grant
        with self.s.db.write() as conn:
            row = conn.execute(select(g).where(g.c.id == grant_id).with_for_update()).first()
            if row is None or row.kind != G.BREAK_GLASS or row.institution_id != a.institution_id:
                raise NotFound("no such break-the-glass access at your institution")
            if row.reviewed is not None:
                raise Conflict("this access was reviewed already")
            conn.execute(update(g).where(g.c.id == grant_id).values(reviewed=now, reviewed_by=a.subject,
                                                                    review_note=note[:4000]))
            self._audit(conn, ctx, "break-glass-review", row.patient_id, row.consent_id, note[:200])
            out = conn.execute(select(g).where(g.c.id == grant_id)).one()
        return _view(out, now)

    # ------------------------------------------------------------------ views
    def for_holder(self, ctx: RequestContext, *, encounter_id: str | None = None,
                   grant_id: str | None = None) -> list[GrantView]:
        """The doctor's own requests and grants (of one encounter, or one), newest first."""
        a = ctx.actor
        g = t.access_grant
        conds = [g.c.holder == a.subject]
        if encounter_id:
            conds.append(g.c.encounter_id == encounter_id)
        if grant_id:
            conds.append(g.c.id == grant_id)
        with self.s.db.read() as conn:
            rows = conn.execute(select(g).where(and_(*conds)).order_by(g.c.created.desc()).limit(200)).all()
        now = self._now()
        return [_view(r, now) for r in rows]

    def for_patient(self, account_id: int) -> list[GrantView]:
        """The grants and requests of the Persons the account acts for, newest first."""
        persons = self.accounts.acts_for(self.s.db, account_id)
        if not persons:
            return []
        g = t.access_grant
        with self.s.db.read() as conn:
            rows = conn.execute(select(g).where(g.c.person_id.in_(persons))
                                .order_by(g.c.created.desc()).limit(500)).all()
        now = self._now()
        return [_view(r, now) for r in rows]

    def history(self, account_id: int, *, limit: int = 200) -> list[dict]:
        """Who read the patient's records, when, from which institution, under which grant (or
        break-the-glass): the audit records naming any Patient of the account's Persons, newest
        first.  Reads by the patient themselves are left out."""
        persons = self.accounts.acts_for(self.s.db, account_id)
        if not persons:
            return []
        ae, ent, pl = t.audit_event, t.audit_entity, t.person_link
        with self.s.db.read() as conn:
            pids = list(conn.execute(select(pl.c.patient_id).where(pl.c.person_id.in_(persons))).scalars())
            if not pids:
                return []
            seqs = select(ent.c.seq).where(ent.c.kind == "P", ent.c.ref.in_([f"Patient/{p}" for p in pids]))
            rows = conn.execute(select(ae.c.seq, ae.c.recorded, ae.c.subtype, ae.c.outcome, ae.c.username,
                                       ae.c.institution_id, ae.c.agent_ref, ae.c.content)
                                .where(ae.c.seq.in_(seqs), ae.c.username.not_like("patient-account:%"),
                                       ae.c.username.not_like("system:%"))
                                .order_by(ae.c.seq.desc()).limit(limit)).all()
            grant_kinds: dict[str, tuple[str, str]] = {}
            consents = set()
            parsed = []
            for r in rows:
                ev = orjson.loads(r.content)
                refs = [e.get("what", {}).get("reference", "") for e in ev.get("entity", [])]
                cons = [x[8:] for x in refs if x.startswith("Consent/")]
                consents.update(cons)
                what = [x for x in refs if x and not x.startswith(("Consent/", "Person/"))]
                parsed.append((r, ev, cons, what))
            if consents:
                g = t.access_grant
                grant_kinds = {c: (k, i) for c, k, i in conn.execute(
                    select(g.c.consent_id, g.c.kind, g.c.id).where(g.c.consent_id.in_(consents)))}
        out = []
        for r, ev, cons, what in parsed:
            purpose = ev.get("purposeOfEvent", [{}])[0].get("coding", [{}])[0].get("code")
            via = [grant_kinds[c][0] for c in cons if c in grant_kinds]
            out.append({"seq": r.seq, "event_id": ev.get("id"), "when": r.recorded, "action": r.subtype, "outcome": r.outcome, "who": r.username,
                        "practitioner": r.agent_ref, "institution_id": r.institution_id,
                        "what": what[:50], "more": max(0, len(what) - 50),
                        "grant": next((grant_kinds[c][1] for c in cons if c in grant_kinds), None),
                        "via": ("break-glass" if G.BREAK_GLASS in via or purpose == "ETREAT" else
                                via[0] if via else "own institution"),
                        "purpose": purpose})
        return out

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _holder(ctx: RequestContext, roles: frozenset[str] | set[str] = G.GRANT_ROLES) -> Actor:
        a = ctx.actor
        if a.kind != "user" or not (a.roles & roles) or a.institution_id is None:
            raise Forbidden("only a doctor, nurse or pharmacist of an institution asks for a patient's "
                            "records at other institutions" if roles == G.GRANT_ROLES else
                            "only a doctor may break the glass")
        return a

    @staticmethod
    def _reviewer(ctx: RequestContext) -> Actor:
        a = ctx.actor
        if "quality_manager" not in a.roles or a.institution_id is None:
            raise Forbidden("only the institution's quality manager reviews break-the-glass accesses")
        return a

    @staticmethod
    def _purpose(purpose: str) -> str:
        purpose = (purpose or "").strip()
        if not purpose or len(purpose) > 200:
            raise Invalid("say why you need the records (purpose, 1-200 characters)",
                          [Issue("required", "purpose missing or too long", ("purpose",))])
        return purpose

    @staticmethod
    def _scope(classes: Iterable[str], sensitive: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        cls = tuple(dict.fromkeys(c.strip() for c in classes if c and c.strip())) or ("*",)
        if "*" in cls:
            cls = ("*",)
        bad = [c for c in cls if c != "*" and c not in DATA_CLASSES]
        if bad:
            raise Invalid(f"unknown data class(es) {', '.join(bad)}; known: {', '.join(DATA_CLASSES)}",
                          [Issue("code-invalid", f"unknown data class {b}", ("classes",)) for b in bad])
        sens = tuple(sorted(set(s.strip() for s in sensitive if s and s.strip())))
        bad = [s for s in sens if s not in SENSITIVE]
        if bad:
            raise Invalid(f"unknown sensitive categor(ies) {', '.join(bad)}; known: {', '.join(SENSITIVE)}",
                          [Issue("code-invalid", f"unknown sensitive category {b}", ("sensitive",)) for b in bad])
        return cls, sens

    def _consultation(self, conn: Connection, a: Actor, patient_id: str, encounter_id: str) -> str:
        """Check the open encounter of the doctor's institution for the patient; the Person."""
        p = store.read_current(conn, "Patient", patient_id)
        if p is None or p.deleted or p.institution_id != a.institution_id:
            raise NotFound(f"Patient/{patient_id} is not a patient of your institution",
                           [Issue("not-found", "not a patient of your institution", ("patient",))])
        e = store.read_current(conn, "Encounter", encounter_id)
        if e is None or e.deleted or e.institution_id != a.institution_id or e.patient_id != patient_id:
            raise NotFound(f"Encounter/{encounter_id} is not an encounter of this patient at your institution",
                           [Issue("not-found", "no such encounter of this patient", ("encounter",))])
        status = orjson.loads(e.content or "{}").get("status")
        if status in G.CLOSED_ENCOUNTER:
            raise Conflict(f"Encounter/{encounter_id} is {status}: open a new encounter to ask again",
                           [Issue("business-rule", f"encounter is {status}", ("encounter",))])
        person = conn.execute(select(t.person_link.c.person_id)
                              .where(t.person_link.c.patient_id == patient_id)).scalar()
        if person is None:
            raise Conflict("this patient is not linked to a person yet (the master patient index runs "
                           "after an upload); try again in a moment")
        return person

    def _phone(self, conn: Connection, person: str) -> str:
        pp = t.person_phone
        phone = conn.execute(select(pp.c.phone).where(pp.c.person_id == person)).scalar()
        if phone is None:
            raise Conflict("the patient has no verified phone: ask them to authorise by scanning your QR "
                           "in the patient portal, or in person at the registration desk",
                           [Issue("business-rule", "no verified phone", ("method",))])
        return phone

    def _pending(self, conn: Connection, grant_id: str, a: Actor):  # noqa: ANN202
        row = conn.execute(select(t.access_grant).where(t.access_grant.c.id == grant_id)).first()
        if row is None or row.holder != a.subject:
            raise NotFound("no such request of yours")
        self._still_pending(row, self._now())
        return row

    @staticmethod
    def _still_pending(row, now: int) -> None:  # noqa: ANN001
        if row.status != G.PENDING:
            raise Conflict(f"this request is {row.status} already")
        if row.expires <= now:
            raise Gone("this request has expired; ask again")

    def _activate(self, conn: Connection, ctx: RequestContext | None, row, *, approved_by: str,  # noqa: ANN001
                  agent: Agent | None = None, attachment: str | None = None) -> GrantView:
        now = self._now()
        exp = now + self.grant_ttl * 1_000_000
        g = t.access_grant
        done = conn.execute(update(g).where(g.c.id == row.id, g.c.status == G.PENDING)
                            .values(status=G.ACTIVE, activated=now, expires=exp, approved_by=approved_by))
        if done.rowcount != 1:
            raise Conflict("this request is no longer pending")
        cur = store.read_current(conn, "Consent", row.consent_id, for_update=True)
        if cur is not None and cur.content:
            body = orjson.loads(cur.content)
            body["status"] = "active"
            body["dateTime"] = instant(now)
            body.setdefault("provision", {})["period"] = {"start": instant(now), "end": instant(exp)}
            if row.sensitive:
                body["provision"]["securityLabel"] = _sens_labels(row.sensitive.split(","))
            if attachment:
                body["sourceAttachment"] = {"contentType": "image/png", "data": attachment,
                                            "title": "signed consent (in person)"}
            store.update(conn, cur, body, base_url=self.s.base_url)
        rec_agent = agent if agent is not None else ctx.agent() if ctx is not None else None
        self.s.audit.write_in(conn, AuditRecord("grant-approve", rec_agent, patients={row.patient_id},
                                                entities=[f"Consent/{row.consent_id}"],
                                                outcome_desc=approved_by))
        out = conn.execute(select(g).where(g.c.id == row.id)).one()
        return _view(out, now)

    def _consent(self, conn: Connection, a: Actor, gid: str, *, person: str, patient_id: str, encounter_id: str,
                 purpose: str, classes: tuple[str, ...], sensitive: tuple[str, ...], kind: str, status: str,
                 now: int, end: int | None = None, reason: str | None = None) -> str:
        prov: dict = {"type": "permit",
                      "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                                      "code": "IRCP", "display": "information recipient"}]},
                                 "reference": {"reference": a.reference, "display": a.display}}],
                      "purpose": [{"system": G.ACT_REASON, "code": "ETREAT" if kind == G.BREAK_GLASS else "TREAT"}]}
        if classes != ("*",):
            prov["class"] = [{"system": LABELS, "code": c} for c in classes]
        if sensitive:
            prov["securityLabel"] = _sens_labels(sensitive)
        if end is not None:
            prov["period"] = {"start": instant(now), "end": instant(end)}
        body = {
            "resourceType": "Consent", "status": status,
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0",
                                      "display": "Patient Consent"}]}],
            "patient": {"reference": f"Patient/{patient_id}"},
            "dateTime": instant(now),
            "organization": [{"reference": f"Organization/{a.institution_id}"}],
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                       "code": "EMRGONLY" if kind == G.BREAK_GLASS else "OPTIN"}]},
            "provision": prov,
            "extension": [
                {"url": EXT + "consent-person", "valueReference": {"reference": f"Person/{person}"}},
                {"url": EXT + "consent-encounter", "valueReference": {"reference": f"Encounter/{encounter_id}"}},
                {"url": EXT + "grant-method", "valueCode": kind},
                {"url": EXT + "grant-purpose", "valueString": purpose},
                *([{"url": EXT + "break-glass-reason", "valueString": reason}] if reason else []),
            ],
        }
        s = store.create(conn, body, institution_id=a.institution_id, base_url=self.s.base_url)
        return s.res_id

    def _audit(self, conn: Connection, ctx: RequestContext, subtype: str, patient_id: str | None,
               consent: str | None, desc: str, *, entities: list[str] | None = None) -> None:
        ents = list(entities or []) + ([f"Consent/{consent}"] if consent else [])
        self.s.audit.write_in(conn, AuditRecord(subtype, ctx.agent(), patients={patient_id} if patient_id else set(),
                                                entities=ents, outcome_desc=desc))


def grant_key(settings) -> bytes:  # noqa: ANN001
    """The MAC key of consultation QR payloads: HKDF of the platform secret (its own info string)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"healthlink grant qr v1").derive(settings.signing_key().encode())


def _sens_labels(cats: Iterable[str]) -> list[dict]:
    return [{"system": LABELS, "code": c} for c in cats if c]


def _etreat(ctx: RequestContext) -> Agent:
    from dataclasses import replace

    return replace(ctx.agent(), purpose_of_use="ETREAT")


__all__ = ["GrantView", "Grants", "grant_key"]
