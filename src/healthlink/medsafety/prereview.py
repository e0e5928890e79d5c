"""The regional prescription pre-review centre (区域处方前置审核, issue 8 item 3; docs/prereview.md).

``Platform.prereview`` is a :class:`PreReview`.  A doctor of an institution configured for
pre-review (default: every township health centre) submits a prescription — one or more
MedicationRequests of one patient — with :meth:`PreReview.submit`.  The automatic checks
(:mod:`.prereview_rules`, plus the order-time check of ``Platform.medsafety`` for interactions,
allergies, duplicates and dose at Person level) grade each problem by level; a prescription with a
problem at or above ``prereview_queue_level`` goes to the pharmacist queue, the others pass
automatically.  The centre's pharmacist (role ``prereview_pharmacist``) passes, returns with a
reason, or requires the doctor's double signature (:meth:`PreReview.decide`); the doctor
countersigns (:meth:`PreReview.countersign`).  A prescription still unreviewed after
``prereview_timeout_minutes`` passes by timeout (``timed-out``) or is held and escalated.

:meth:`PreReview.outcome` is the stable question other parts ask (bedside verification blocks a
pending or returned order): ``None`` (never submitted), ``pending``, ``passed``, ``returned``,
``double-signed``, ``timed-out``.
"""

from __future__ import annotations

import statistics as stats
from collections.abc import Callable, Iterable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import desc, select, update

from healthlink.access import Repository, RequestContext, Services
from healthlink.access import roles as R
from healthlink.access.directory import InstitutionDirectory
from healthlink.db import event_id
from healthlink.db import tables as t
from healthlink.errors import (
    Conflict,
    Forbidden,
    HealthLinkError,
    Invalid,
    Issue,
    NotFound,
)
from healthlink.ledger import AuditRecord
from healthlink.medsafety import prereview_rules as rules_mod
from healthlink.medsafety.knowledge import Knowledge, merge
from healthlink.medsafety.prereview_rules import CATEGORIES, LEVELS, Line, Problem

STATUSES = ("auto-passed", "pending", "passed", "returned", "double-sign-required", "double-signed", "timed-out")
#: the stable outcome of each status (``outcome``): a double signature still required is pending
OUTCOME = {"auto-passed": "passed", "pending": "pending", "passed": "passed", "returned": "returned",
           "double-sign-required": "pending", "double-signed": "double-signed", "timed-out": "timed-out"}
ACTIONS = ("pass", "return", "double-sign")
#: coded reasons for returning a prescription or requiring a double signature (zh, en)
REASONS: dict[str, tuple[str, str]] = {
    "no-right": ("医师无相应处方权", "The prescriber has no right to prescribe this drug"),
    "indication": ("无适应证或诊断不符", "No indication, or the diagnosis does not fit"),
    "skin-test": ("皮试结果缺失或阳性", "Skin test result missing or positive"),
    "dose": ("用法用量不适宜", "Dose, frequency or quantity not appropriate"),
    "route": ("剂型或给药途径不适宜", "Dosage form or route not appropriate"),
    "interaction": ("重复给药或有相互作用", "Duplicate therapy or interaction"),
    "incompatibility": ("配伍禁忌", "Incompatible combination"),
    "contraindication": ("禁忌证、特殊人群或过敏", "Contraindication, special population or allergy"),
    "solvent": ("溶媒或滴速不适宜", "Solvent or infusion rate not appropriate"),
    "format": ("处方书写不规范", "The prescription is incomplete or irregular"),
    "other": ("其他（请说明）", "Other (give the reason)"),
}
PRESCRIBERS = frozenset({"doctor"})
MAX_LINES = 20


new_id = event_id  # event ids (time-ordered: healthlink.db.event_id)


class PreReview:
    """The pre-review service (``Platform.prereview``)."""

    def __init__(self, services: Services, medsafety: Any, *, institutions: Iterable[str] | None = None,
                 queue_level: int = 2, timeout_minutes: float = 15.0, timeout_policy: str = "pass",
                 tz: str = "Asia/Shanghai", rules_path: str | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        if timeout_policy not in ("pass", "hold"):
            raise Invalid(f"unknown timeout policy {timeout_policy!r}; 'pass' or 'hold'")
        if queue_level not in LEVELS:
            raise Invalid(f"queue level must be one of {sorted(LEVELS)}")
        self.s = services
        self.medsafety = medsafety
        self.institutions = None if institutions is None else frozenset(institutions)
        self.queue_level = queue_level
        self.timeout_us = int(timeout_minutes * 60_000_000)
        self.timeout_policy = timeout_policy
        self.tz = ZoneInfo(tz)
        self.raw_rules, self.rules = rules_mod.load_rules(rules_path)
        self.clock = clock or (lambda: datetime.now().astimezone())
        self.directory = InstitutionDirectory(services.db)
        self._kb: tuple[str, Knowledge] | None = None

    @classmethod
    def from_settings(cls, services: Services, medsafety: Any, settings: Any) -> PreReview:
        return cls(services, medsafety, institutions=settings.prereview_institutions,
                   queue_level=settings.prereview_queue_level, timeout_minutes=settings.prereview_timeout_minutes,
                   timeout_policy=settings.prereview_timeout_policy, tz=settings.region_timezone)

    # ------------------------------------------------------------ basics
    @property
    def knowledge(self) -> Knowledge:
        """The medication-safety knowledge in force, extended by the pre-review rules file's
        ingredients and products (solvents, vancomycin, meropenem ...), cached per base version."""
        base = self.medsafety.knowledge
        if self._kb is None or self._kb[0] != base.version:
            self._kb = (base.version, merge(base, self.raw_rules))
        return self._kb[1]

    def _now_us(self) -> int:
        return int(self.clock().timestamp() * 1_000_000)

    def _day(self, us: int) -> str:
        return datetime.fromtimestamp(us / 1_000_000, self.tz).date().isoformat()

    def required_for(self, institution_id: str | None) -> bool:
        """Do this institution's prescriptions go to pre-review?  The configured list, else every
        township-tier institution of the directory."""
        if not institution_id:
            return False
        if self.institutions is not None:
            return institution_id in self.institutions
        inst = self.directory.get(institution_id)
        return inst is not None and inst.tier == "township"

    def _inst_name(self, inst: str) -> str:
        got = self.directory.get(inst)
        return got.name if got else inst

    # ------------------------------------------------------------ the outcome
    def outcome(self, order_ref: str) -> str | None:
        """The pre-review outcome of an order (``MedicationRequest/<id>``) by its latest
        submission: None (never submitted, or its institution needs no pre-review), ``pending``
        (queued, held, or waiting for the doctor's double signature), ``passed`` (automatically or
        by the pharmacist), ``returned``, ``double-signed``, ``timed-out`` (passed by the timeout
        policy).  Applies an overdue timeout first."""
        o, p = t.prereview_order, t.prereview_prescription
        with self.s.db.read() as conn:
            row = conn.execute(select(p.c.id, p.c.status, p.c.submitted_at).join(o, o.c.prescription_id == p.c.id)
                               .where(o.c.order_ref == order_ref)
                               .order_by(desc(o.c.submitted_at)).limit(1)).first()
        if row is None:
            return None
        status = row.status
        if status == "pending" and row.submitted_at + self.timeout_us <= self._now_us():
            self.apply_timeouts()
            with self.s.db.read() as conn:
                status = conn.execute(select(p.c.status).where(p.c.id == row.id)).scalar_one()
        return OUTCOME[status]

    def outcome_for(self, ctx: RequestContext, order_ref: str) -> str | None:
        """:meth:`outcome` for staff or a hospital system of the institution that submitted the
        order (the JSON API); for anyone else's order None, as if never submitted."""
        a = ctx.actor
        if a.kind not in ("user", "client") or a.institution_id is None:
            raise Forbidden("staff or a hospital system of an institution asks for an order's outcome")
        o, p = t.prereview_order, t.prereview_prescription
        with self.s.db.read() as conn:
            inst = conn.execute(select(p.c.institution_id).join(o, o.c.prescription_id == p.c.id)
                                .where(o.c.order_ref == order_ref).order_by(desc(o.c.submitted_at)).limit(1)).scalar()
        return self.outcome(order_ref) if inst == a.institution_id else None

    def apply_timeouts(self) -> int:
        """Apply the timeout policy to every queued prescription older than the timeout; returns
        how many changed.  Run before the queue, a prescription or the statistics are read."""
        p = t.prereview_prescription
        now = self._now_us()
        limit = now - self.timeout_us
        cond = [p.c.status == "pending", p.c.submitted_at <= limit]
        if self.timeout_policy == "hold":
            cond.append(p.c.escalated.is_(False))
        with self.s.db.read() as conn:
            due = conn.execute(select(p.c.id, p.c.institution_id, p.c.submitted_at).where(*cond)).all()
        if not due:
            return 0
        changed = 0
        with self.s.db.write() as conn:
            for r in due:
                at = r.submitted_at + self.timeout_us
                if self.timeout_policy == "pass":
                    n = conn.execute(update(p).where(p.c.id == r.id, p.c.status == "pending").values(
                        status="timed-out", decided_at=at, decided_by="system:timeout")).rowcount
                    kind = "timed-out"
                else:
                    n = conn.execute(update(p).where(p.c.id == r.id, p.c.status == "pending",
                                                     p.c.escalated.is_(False)).values(escalated=True)).rowcount
                    kind = "escalated"
                if n:
                    changed += 1
                    self._event(conn, r.id, kind, r.institution_id, at, username="system:timeout")
        return changed

    def _event(self, conn: Any, rx_id: str, kind: str, inst: str, at: int, *, username: str | None = None,
               reason: str | None = None, text: str | None = None) -> None:
        conn.execute(t.prereview_event.insert(), [{
            "id": new_id(), "at": at, "prescription_id": rx_id, "kind": kind, "institution_id": inst,
            "day": self._day(at), "username": username, "reason": reason, "text": text}])

    # ------------------------------------------------------------ submit
    def submit(self, ctx: RequestContext, patient_id: str, orders: list[dict], *, encounter_id: str | None = None,
               emergency: bool = False) -> dict:
        """Submit a prescription: ``orders`` are ``{"reference": "MedicationRequest/<id>"}`` (a
        stored order of the doctor's institution, read through the doctor's repository) or
        ``{"resource": {MedicationRequest}, "orderRef": optional}`` (a draft).  Runs the checks,
        stores the prescription and its problems, and returns it (:meth:`view`)."""
        a = ctx.actor
        if a.kind != "user" or not (a.roles & PRESCRIBERS) or a.institution_id is None:
            raise Forbidden("only a doctor of an institution submits a prescription to pre-review")
        if not self.required_for(a.institution_id):
            raise Forbidden(f"institution {a.institution_id} is not configured for pre-review")
        if not isinstance(orders, list) or not orders or len(orders) > MAX_LINES:
            raise Invalid(f"orders: give 1 to {MAX_LINES} MedicationRequests",
                          [Issue("invalid", "1 to 20 orders", ("orders",))])
        rx_id = new_id()
        repo = Repository(ctx, self.s)
        kb = self.knowledge
        lines: list[Line] = []
        for n, item in enumerate(orders):
            body, ref = self._order_body(repo, item, n, rx_id)
            subject = (body.get("subject") or {}).get("reference")
            if subject and subject != f"Patient/{patient_id}":
                raise Invalid(f"orders[{n}]: subject {subject} is not Patient/{patient_id}",
                              [Issue("invalid", "another patient", (f"orders[{n}].subject",))])
            ings, _ = self.medsafety.resolve(body)
            cc = body.get("medicationCodeableConcept") or {}
            codings = [c for c in cc.get("coding") or [] if isinstance(c, dict)]
            ings = tuple(dict.fromkeys(ings + tuple(i for c in codings for i in kb.ingredients_of(
                c.get("system") or "", c.get("code") or ""))))
            # the name as the order gives it, else the ingredients' (Chinese and English)
            name = cc.get("text") or next((c.get("display") for c in codings if c.get("display")), None)
            if name is None and ings:
                found = [kb.ingredient(i) for i in ings]
                name = "、".join(f"{i.name_zh} {i.name_en}" if i.name_zh else i.name_en for i in found if i) or None
            route = None
            for c in ((rules_mod._dosage(body).get("route") or {}).get("coding") or []):
                route = kb.route_id(c.get("code") or "") or route
            lines.append(Line(n, ref, body, ings, name, route))
        refs = {ln.order_ref for ln in lines}
        if len(refs) != len(lines):
            raise Invalid("an order appears twice in the prescription", [Issue("duplicate", "order twice", ("orders",))])
        problems: list[Problem] = []
        person = None
        for ln in lines:
            check = self.medsafety.check(ctx, patient_id, ln.body, encounter_id=encounter_id, record=False)
            person = check.person_id
            for f in check.findings:
                about = f.concerns.reference if f.concerns else None
                if about and about in refs:
                    continue  # a line of this prescription: judged among the pairs below
                problems.append(rules_mod.from_finding(f.to_json(), ln.order_ref))
        prescriber = None
        if a.practitioner_id:
            try:
                prescriber = repo.read("Practitioner", a.practitioner_id).json()
            except HealthLinkError:
                prescriber = None
        problems += rules_mod.legality(kb, self.rules, lines, rights=rules_mod.rights_of(prescriber),
                                       prescriber=prescriber)
        problems += rules_mod.fmt(kb, self.rules, lines)
        problems += rules_mod.appropriateness(kb, self.rules, lines, emergency=emergency)
        problems.sort(key=lambda p: (-p.level, list(CATEGORIES).index(p.category)))
        top = max((p.level for p in problems), default=0)
        queued = top >= self.queue_level
        now = self._now_us()
        row = {"id": rx_id, "institution_id": a.institution_id, "department_id": a.department_id,
               "practitioner": f"Practitioner/{a.practitioner_id}" if a.practitioner_id else None,
               "username": a.subject, "patient_id": patient_id, "person_id": person, "encounter_id": encounter_id,
               "submitted_at": now, "day": self._day(now), "status": "pending" if queued else "auto-passed",
               "max_level": top, "queued": queued, "escalated": False,
               "problems": orjson.dumps([p.to_json() for p in problems]).decode(),
               "lines": orjson.dumps([{"order_ref": ln.order_ref, "name": ln.name, "ingredients": list(ln.ingredients),
                                       "text": _dose_text(ln.body)} for ln in lines]).decode()}
        with self.s.db.write() as conn:
            conn.execute(t.prereview_prescription.insert(), [row])
            conn.execute(t.prereview_order.insert(), [{"order_ref": ln.order_ref, "prescription_id": rx_id,
                                                       "submitted_at": now} for ln in lines])
            self._event(conn, rx_id, "submitted", a.institution_id, now, username=a.subject)
            self._event(conn, rx_id, "queued" if queued else "auto-passed", a.institution_id, now,
                        username="system:prereview")
        return self._view(row)

    def _order_body(self, repo: Repository, item: Any, n: int, rx_id: str) -> tuple[dict, str]:
        if not isinstance(item, dict):
            raise Invalid(f"orders[{n}]: an object with 'reference' or 'resource'",
                          [Issue("invalid", "not an object", (f"orders[{n}]",))])
        ref = item.get("reference")
        if ref is not None:
            if not isinstance(ref, str) or not ref.startswith("MedicationRequest/") or len(ref) > 160:
                raise Invalid(f"orders[{n}].reference: MedicationRequest/<id>",
                              [Issue("invalid", "not a MedicationRequest reference", (f"orders[{n}].reference",))])
            return repo.read("MedicationRequest", ref.split("/", 1)[1]).json(), ref
        body = item.get("resource")
        if not isinstance(body, dict) or body.get("resourceType") != "MedicationRequest":
            raise Invalid(f"orders[{n}].resource: a MedicationRequest",
                          [Issue("invalid", "not a MedicationRequest", (f"orders[{n}].resource",))])
        ref = item.get("orderRef") or (f"MedicationRequest/{body['id']}" if body.get("id") else f"prereview:{rx_id}/{n}")
        if not isinstance(ref, str) or len(ref) > 160:
            raise Invalid(f"orders[{n}].orderRef: at most 160 characters",
                          [Issue("invalid", "orderRef too long", (f"orders[{n}].orderRef",))])
        return body, ref

    # ------------------------------------------------------------ reading
    def _row(self, rx_id: str) -> dict:
        p = t.prereview_prescription
        with self.s.db.read() as conn:
            row = conn.execute(select(p).where(p.c.id == rx_id)).first()
        if row is None:
            raise NotFound(f"prescription {rx_id} is not known",
                           [Issue("not-found", f"no prescription {rx_id}", ("prescription",))])
        return dict(row._mapping)

    def _view(self, row: dict) -> dict:
        problems = orjson.loads(row["problems"]) if isinstance(row["problems"], str) else row["problems"]
        waited = None
        if row.get("decided_at"):
            waited = round((row["decided_at"] - row["submitted_at"]) / 60_000_000, 2)
        return {"id": row["id"], "institution_id": row["institution_id"],
                "institution_name": self._inst_name(row["institution_id"]),
                "practitioner": row["practitioner"], "username": row["username"], "patient_id": row["patient_id"],
                "encounter_id": row["encounter_id"], "submitted": _iso(row["submitted_at"], self.tz),
                "day": row["day"], "status": row["status"], "outcome": OUTCOME[row["status"]],
                "max_level": row["max_level"], "queued": bool(row["queued"]), "escalated": bool(row["escalated"]),
                "decided": _iso(row.get("decided_at"), self.tz), "decided_by": row.get("decided_by"),
                "turnaround_minutes": waited, "reason": row.get("reason"),
                "reason_zh": REASONS.get(row.get("reason") or "", ("", ""))[0] or None,
                "reason_en": REASONS.get(row.get("reason") or "", ("", ""))[1] or None,
                "reason_text": row.get("reason_text"),
                "countersigned": _iso(row.get("countersigned_at"), self.tz),
                "countersign_text": row.get("countersign_text"),
                "lines": orjson.loads(row["lines"]), "problems": problems}

    @staticmethod
    def _pharmacist(ctx: RequestContext) -> None:
        if ctx.actor.kind != "user" or not R.may_prereview(ctx.actor.roles):
            raise Forbidden("only a pharmacist of the regional pre-review centre works the queue")

    @staticmethod
    def _same_institution(ctx: RequestContext, row: dict) -> bool:
        a = ctx.actor
        return a.kind == "user" and a.institution_id == row["institution_id"] and bool(
            a.roles & {"doctor", "nurse", "pharmacist"})

    def queue(self, ctx: RequestContext, *, status: str = "pending", institution: str | None = None,
              day: str | None = None, min_level: int | None = None, limit: int = 100) -> list[dict]:
        """The centre's prescriptions (pharmacist only), oldest first (escalated ones at the top),
        each with its patient's name, sex and birth date (read through the repository: audited)."""
        self._pharmacist(ctx)
        if status not in (*STATUSES, "all"):
            raise Invalid(f"unknown status {status!r}; one of {', '.join(STATUSES)}, all",
                          [Issue("code-invalid", "unknown status", ("status",))])
        if day is not None:
            _parse_day(day, "day")
        self.apply_timeouts()
        p = t.prereview_prescription
        q = select(p)
        if status != "all":
            q = q.where(p.c.status == status)
        if institution:
            q = q.where(p.c.institution_id == institution)
        if day:
            q = q.where(p.c.day == day)
        if min_level:
            q = q.where(p.c.max_level >= min_level)
        q = q.order_by(desc(p.c.escalated), p.c.submitted_at).limit(max(1, min(limit, 500)))
        with self.s.db.read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        people = self._patients(ctx, [r["patient_id"] for r in rows], clinical=False, query="prereview/queue")
        out = []
        for r in rows:
            v = self._view(r)
            v["patient"] = _patient_summary((people.get(r["patient_id"]) or [None])[0], self.clock().date())
            out.append(v)
        return out

    def _patients(self, ctx: RequestContext, ids: list[str], *, clinical: bool, query: str) -> dict[str, list]:
        if not ids:
            return {}
        return Repository(ctx, self.s).prereview_context(ids, clinical=clinical, query=query)

    def get(self, ctx: RequestContext, rx_id: str) -> dict:
        """One prescription.  The pharmacist sees it with the patient's data the review needs
        (``patient``, ``medications``, ``allergies``, ``results``; audited); staff of the submitting
        institution see it without (the outcome, the reason, the problems).  Anyone else: 404."""
        self.apply_timeouts()
        row = self._row(rx_id)
        if R.may_prereview(ctx.actor.roles) and ctx.actor.kind == "user":
            v = self._view(row)
            recs = self._patients(ctx, [row["patient_id"]], clinical=True,
                                  query=f"prereview/{rx_id}").get(row["patient_id"], [])
            v.update(_clinical(recs, self.clock().date()))
            return v
        if not self._same_institution(ctx, row):
            raise NotFound(f"prescription {rx_id} is not known",
                           [Issue("not-found", f"no prescription {rx_id} of your institution", ("prescription",))])
        self._audit(ctx, [row["patient_id"]], f"prereview/{rx_id}")
        return self._view(row)

    def _audit(self, ctx: RequestContext, patients: list[str], query: str) -> None:
        if patients:
            self.s.audit.record(AuditRecord("operation", ctx.agent(), patients=set(patients),
                                            entities=[f"Patient/{p}" for p in dict.fromkeys(patients)], query=query))

    def mine(self, ctx: RequestContext, *, limit: int = 100, status: str | None = None) -> list[dict]:
        """The submitting institution's prescriptions, newest first (a doctor sees the outcomes of
        their institution's submissions; the list is audited like a search)."""
        a = ctx.actor
        if a.kind != "user" or a.institution_id is None or not (a.roles & {"doctor", "nurse", "pharmacist"}):
            raise Forbidden("only staff of a submitting institution see its pre-review outcomes")
        self.apply_timeouts()
        p = t.prereview_prescription
        q = select(p).where(p.c.institution_id == a.institution_id)
        if status:
            if status not in STATUSES:
                raise Invalid(f"unknown status {status!r}", [Issue("code-invalid", "unknown status", ("status",))])
            q = q.where(p.c.status == status)
        with self.s.db.read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q.order_by(desc(p.c.submitted_at))
                                                           .limit(max(1, min(limit, 500))))]
        self._audit(ctx, [r["patient_id"] for r in rows], "prereview/mine")
        return [self._view(r) for r in rows]

    # ------------------------------------------------------------ decisions
    def decide(self, ctx: RequestContext, rx_id: str, action: str, *, reason: str | None = None,
               text: str | None = None) -> dict:
        """The pharmacist's decision on a queued prescription: ``pass``, ``return`` (a reason of
        :data:`REASONS` required; ``other`` needs a text) or ``double-sign`` (the doctor must
        countersign; a reason required).  A prescription already decided: 409."""
        self._pharmacist(ctx)
        if action not in ACTIONS:
            raise Invalid(f"unknown action {action!r}; one of {', '.join(ACTIONS)}",
                          [Issue("code-invalid", "unknown action", ("action",))])
        text = _text(text)
        if action in ("return", "double-sign") and not reason:
            raise Invalid(f"{action}: a reason is required", [Issue("required", "reason missing", ("reason",))])
        if reason is not None and reason not in REASONS:
            raise Invalid(f"unknown reason {reason!r}; one of {', '.join(REASONS)}",
                          [Issue("code-invalid", "unknown reason", ("reason",))])
        if reason == "other" and not text:
            raise Invalid("reason 'other' needs the reason in words", [Issue("required", "text missing", ("text",))])
        self.apply_timeouts()
        row = self._row(rx_id)
        status = {"pass": "passed", "return": "returned", "double-sign": "double-sign-required"}[action]
        now = self._now_us()
        p = t.prereview_prescription
        with self.s.db.write() as conn:
            n = conn.execute(update(p).where(p.c.id == rx_id, p.c.status == "pending").values(
                status=status, decided_at=now, decided_by=ctx.actor.subject, reason=reason,
                reason_text=text)).rowcount
            if not n:
                raise Conflict(f"prescription {rx_id} is {row['status']}, not waiting for review",
                               [Issue("conflict", f"status {row['status']}", ("status",))])
            self._event(conn, rx_id, status, row["institution_id"], now, username=ctx.actor.subject,
                        reason=reason, text=text)
        self._audit(ctx, [row["patient_id"]], f"prereview/{rx_id}/{action}")
        return self._view(self._row(rx_id))

    def countersign(self, ctx: RequestContext, rx_id: str, text: str | None) -> dict:
        """The prescriber's double signature (双签) after the pharmacist required it: a reason in
        words is required.  Only the prescriber who submitted it (404 for anyone else)."""
        a = ctx.actor
        row = self._row(rx_id)
        if a.kind != "user" or a.subject != row["username"] or a.institution_id != row["institution_id"]:
            raise NotFound(f"prescription {rx_id} is not known",
                           [Issue("not-found", f"no prescription {rx_id} of yours", ("prescription",))])
        text = _text(text)
        if not text:
            raise Invalid("a double signature needs the reason in words", [Issue("required", "text missing", ("text",))])
        now = self._now_us()
        p = t.prereview_prescription
        with self.s.db.write() as conn:
            n = conn.execute(update(p).where(p.c.id == rx_id, p.c.status == "double-sign-required").values(
                status="double-signed", countersigned_at=now, countersign_text=text)).rowcount
            if not n:
                raise Conflict(f"prescription {rx_id} is {row['status']}: no double signature was required",
                               [Issue("conflict", f"status {row['status']}", ("status",))])
            self._event(conn, rx_id, "double-signed", row["institution_id"], now, username=a.subject, text=text)
        self._audit(ctx, [row["patient_id"]], f"prereview/{rx_id}/countersign")
        return self._view(self._row(rx_id))

    # ------------------------------------------------------------ statistics
    def statistics(self, ctx: RequestContext, *, since: str | None = None, until: str | None = None,
                   institution: str | None = None) -> dict:
        """Per institution and day: submitted, auto-passed, queued, passed (by the pharmacist),
        returned, double-sign-required, double-signed, timed-out, pending, and the pharmacist's
        turnaround (median and 90th percentile, minutes, of decisions on queued prescriptions);
        plus totals.  The pharmacist and the health commission see every institution;
        institution managers and quality managers their own."""
        a = ctx.actor
        region = R.may_prereview(a.roles) or "health_commission_leader" in a.roles
        if a.kind != "user" or not (region or a.roles & {"institution_manager", "quality_manager"}):
            raise Forbidden("the pre-review statistics are for the centre, the health commission and "
                            "institution and quality managers")
        if not region:
            if institution and institution != a.institution_id:
                raise Forbidden("you see your own institution's statistics")
            institution = a.institution_id
        for v, name in ((since, "since"), (until, "until")):
            if v:
                _parse_day(v, name)
        self.apply_timeouts()
        p = t.prereview_prescription
        q = select(p.c.institution_id, p.c.day, p.c.status, p.c.queued, p.c.submitted_at, p.c.decided_at,
                   p.c.decided_by, p.c.escalated)
        if since:
            q = q.where(p.c.day >= since)
        if until:
            q = q.where(p.c.day <= until)
        if institution:
            q = q.where(p.c.institution_id == institution)
        with self.s.db.read() as conn:
            rows = conn.execute(q).all()
        groups: dict[tuple[str, str], list] = {}
        for r in rows:
            groups.setdefault((r.institution_id, r.day), []).append(r)
        out = [self._stat(inst, day, rs) for (inst, day), rs in sorted(groups.items(), key=lambda x: (x[0][1], x[0][0]))]
        return {"since": since, "until": until, "rows": out, "totals": self._stat(None, None, rows)}

    def _stat(self, inst: str | None, day: str | None, rows: list) -> dict:
        def n(status: str) -> int:
            return sum(1 for r in rows if r.status == status)
        waits = sorted((r.decided_at - r.submitted_at) / 60_000_000 for r in rows
                       if r.queued and r.decided_at and r.decided_by != "system:timeout")
        return {"institution_id": inst, "institution_name": self._inst_name(inst) if inst else None, "day": day,
                "submitted": len(rows), "auto_passed": n("auto-passed"), "queued": sum(1 for r in rows if r.queued),
                "passed": n("passed"), "returned": n("returned"), "double_sign_required": n("double-sign-required"),
                "double_signed": n("double-signed"), "timed_out": n("timed-out"), "pending": n("pending"),
                "escalated": sum(1 for r in rows if r.escalated),
                "intervention_rate": round((n("returned") + n("double-sign-required") + n("double-signed"))
                                           / len(rows), 4) if rows else None,
                "turnaround_median_minutes": round(stats.median(waits), 2) if waits else None,
                "turnaround_p90_minutes": round(_p90(waits), 2) if waits else None}


def _p90(values: list[float]) -> float:
    """The 90th percentile, nearest rank (values sorted)."""
    k = max(0, -(-len(values) * 9 // 10) - 1)
    return values[k]


def _text(text: str | None) -> str | None:
    text = (text or "").strip() or None
    if text and len(text) > 500:
        raise Invalid("the text is longer than 500 characters", [Issue("too-long", "at most 500 characters", ("text",))])
    return text


def _parse_day(v: str, name: str) -> date:
    try:
        return date.fromisoformat(v)
    except (TypeError, ValueError):
        raise Invalid(f"{name}: a date YYYY-MM-DD", [Issue("invalid", f"not a date: {v!r}", (name,))]) from None


def _iso(us: int | None, tz: ZoneInfo) -> str | None:
    return None if not us else datetime.fromtimestamp(us / 1_000_000, tz).isoformat(timespec="seconds")


def _dose_text(body: dict) -> str:
    d = rules_mod._dosage(body)
    if d.get("text"):
        return str(d["text"])[:200]
    dq = ((d.get("doseAndRate") or [{}])[0] or {}).get("doseQuantity") or {}
    parts = []
    if dq.get("value") is not None:
        parts.append(f"{dq.get('value')} {dq.get('unit') or dq.get('code') or ''}".strip())
    route = ((d.get("route") or {}).get("coding") or [{}])[0].get("display") or (d.get("route") or {}).get("text")
    if route:
        parts.append(route)
    timing = ((d.get("timing") or {}).get("code") or {})
    code = (timing.get("coding") or [{}])[0].get("code") or timing.get("text")
    rep = (d.get("timing") or {}).get("repeat") or {}
    if code:
        parts.append(code)
    elif rep.get("frequency"):
        parts.append(f"{rep.get('frequency')}/{rep.get('period', 1)}{rep.get('periodUnit', 'd')}")
    return " ".join(str(p) for p in parts)


def _name(body: dict) -> str | None:
    for n in body.get("name") or []:
        if n.get("text"):
            return n["text"]
        fam, given = n.get("family") or "", "".join(n.get("given") or [])
        if fam or given:
            return f"{fam}{given}" if any("\u4e00" <= ch <= "\u9fff" for ch in fam) else f"{' '.join(n.get('given') or [])} {fam}".strip()
    return None


def _patient_summary(stored: Any, today: date) -> dict:
    if stored is None:
        return {}
    body = stored.json()
    birth = body.get("birthDate")
    age = None
    if isinstance(birth, str) and len(birth) >= 4:
        try:
            b = date.fromisoformat(birth) if len(birth) == 10 else date(int(birth[:4]), 7, 1)
            age = today.year - b.year - ((today.month, today.day) < (b.month, b.day))
        except ValueError:
            age = None
    return {"id": stored.res_id, "name": _name(body), "gender": body.get("gender"), "birthDate": birth, "age": age}


def _code_text(cc: Any) -> str | None:
    if not isinstance(cc, dict):
        return None
    if cc.get("text"):
        return cc["text"]
    for c in cc.get("coding") or []:
        if c.get("display") or c.get("code"):
            return c.get("display") or c.get("code")
    return None


def _clinical(recs: list, today: date) -> dict:
    """The patient's data for the pharmacist's view: summary, medications, allergies, results."""
    out: dict[str, Any] = {"patient": {}, "medications": [], "allergies": [], "results": []}
    for s in recs:
        b = s.json()
        ref = f"{s.res_type}/{s.res_id}"
        if s.res_type == "Patient":
            out["patient"] = _patient_summary(s, today)
        elif s.res_type in ("MedicationRequest", "MedicationStatement"):
            out["medications"].append({"reference": ref, "name": _code_text(b.get("medicationCodeableConcept")),
                                       "status": b.get("status"), "dose": _dose_text(b),
                                       "date": (b.get("authoredOn") or b.get("effectiveDateTime") or "")[:10] or None})
        elif s.res_type == "AllergyIntolerance":
            out["allergies"].append({"reference": ref, "name": _code_text(b.get("code")),
                                     "criticality": b.get("criticality"),
                                     "date": (b.get("recordedDate") or b.get("onsetDateTime") or "")[:10] or None})
        elif s.res_type == "Observation":
            q = b.get("valueQuantity") or {}
            out["results"].append({"reference": ref, "name": _code_text(b.get("code")), "value": q.get("value"),
                                   "unit": q.get("unit") or q.get("code"),
                                   "date": (b.get("effectiveDateTime") or b.get("issued") or "")[:10] or None})
    out["results"].sort(key=lambda r: r["date"] or "", reverse=True)
    return out


__all__ = ["ACTIONS", "OUTCOME", "REASONS", "STATUSES", "PreReview"]
