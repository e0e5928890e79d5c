"""CDS Hooks 2.0 services for the order-time medication check (issue 8, item 2; docs/cds-hooks.md).

``medsafety-order-select`` (hook ``order-select``: the selected draft MedicationRequests) and
``medsafety-order-sign`` (hook ``order-sign``: every draft MedicationRequest) call
``Platform.medsafety.check`` per draft for the practitioner of ``context.userId`` (the client-context
mapping of the recognition services, ``cds_routes.practitioner_context``) and answer one card per
finding: ``critical`` when it interrupts (contraindicated and major by default), ``warning``
(moderate, or a major a region does not interrupt for) or ``info`` (minor).  Every card cites the
knowledge source of its finding.  A finding about another institution's record that no grant
discloses is a hint card: the institution, the date and "grant needed", with a link to ask the
patient for access.

The same draft order checked at order-select and again at order-sign keeps its check and its
finding ids (``MedSafety``'s rule), so each finding is counted once and an override given at select
covers sign: a finding already overridden gives no card again.

Feedback: ``overridden`` with an ``overrideReason`` (required for an interrupting finding) records
``MedSafety.override``; ``accepted`` (the "remove this draft order" suggestion) records
``MedSafety.accept``.  Parsing is shared with the recognition services (``cds_routes``).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from healthlink.access import RequestContext
from healthlink.errors import Forbidden, Invalid, Issue, NotFound
from healthlink.medsafety.service import (
    OVERRIDE_REASON_SYSTEM,
    OVERRIDE_REASONS,
    SEVERITY_ZH,
    Finding,
    MedCheck,
)
from healthlink.runtime import Platform

if TYPE_CHECKING:
    from healthlink.api.cds_routes import CdsRequest, Feedback

SOURCE_LABEL = "HealthLink 用药安全 Medication safety"
TOPIC = {"system": "https://healthlink.example.org/fhir/CodeSystem/cds-topic", "code": "medication-safety",
         "display": "用药安全 Medication safety"}
#: the namespace of the "remove this draft order" suggestion's uuid (derived from the card's uuid)
SUGGESTION_NS = uuid.UUID("0e6a7f1c-3d2b-4c55-8f10-6b9d2a4e7c31")
KIND_ZH = {"interaction": "相互作用 Interaction", "allergy": "过敏 Allergy", "duplicate": "重复用药 Duplicate therapy",
           "dose": "剂量 Dose"}


def drafts_from(req: CdsRequest) -> list[dict[str, Any]]:
    """The draft MedicationRequests to check: order-select only the selected ones, order-sign all."""
    chosen = set(req.selections) if req.selections is not None else None
    out = []
    for res in req.draft_orders:
        if res.get("resourceType") != "MedicationRequest":
            continue
        ref = f"MedicationRequest/{res.get('id')}" if isinstance(res.get("id"), str) else None
        if chosen is not None and ref not in chosen:
            continue
        out.append(res)
    return out


def suggestion_id(card_id: str) -> str:
    return str(uuid.uuid5(SUGGESTION_NS, f"{card_id}:remove"))


def override_reasons() -> list[dict[str, str]]:
    return [dict(r) for r in _OVERRIDE_REASONS]


#: every card carries the same list: built once, copied per card (a caller may change its copy)
_OVERRIDE_REASONS = tuple({"system": OVERRIDE_REASON_SYSTEM, "code": code, "display": f"{zh} / {en}"}
                          for code, (zh, en) in OVERRIDE_REASONS.items())


def indicator(f: Finding) -> str:
    if f.interrupt:
        return "critical"
    return "info" if f.severity == "minor" else "warning"


def summary(f: Finding) -> str:
    """Under 140 characters: zh-CN and English when both fit, else zh-CN (cut if need be)."""
    from healthlink.api.cds_routes import _fit

    if f.grant_needed:
        c = f.concerns
        assert c is not None
        kind = {"interaction": ("相互作用", "interaction"), "allergy": ("过敏", "allergy"),
                "duplicate": ("重复用药", "duplicate therapy")}.get(f.kind, (f.kind, f.kind))
        zh = f"{SEVERITY_ZH[f.severity]}{kind[0]}：{c.institution_name}（{c.date or '日期不详'}）有相关记录，需患者授权后查看"
        en = f"{f.severity} {kind[1]}: a record at {c.institution_name} ({c.date or 'date unknown'}); grant needed"
        return _fit(f"{zh} / {en}", zh)
    return _fit(f"{f.summary_zh} / {f.summary_en}", f.summary_zh)


def _source_text(f: Finding) -> str:
    s = f.source or {}
    text = str(s.get("citation") or "")
    if s.get("section"):
        text += f" ({s['section']})"
    if s.get("basis") and s["basis"] != "published":
        text += f" [basis: {s['basis']}]"
    return text


def detail(f: Finding) -> str:
    from healthlink.api.cds_routes import _md

    rows: list[tuple[str, object]] = [("类型 Kind", KIND_ZH.get(f.kind, f.kind)),
                                      ("严重程度 Severity", f"{SEVERITY_ZH[f.severity]} {f.severity}"
                                       + ("，ONC 高优先级 ONC high-priority" if f.onc_high_priority else ""))]
    c = f.concerns
    if c is not None:
        if c.disclosed and c.name:
            rows.append(("相关药物或过敏 Concerns", c.name))
        rows += [("机构 Institution", c.institution_name or "—"), ("日期 Date", c.date or "—")]
    if f.grant_needed:
        rows.append(("详情 Details", "需患者授权后查看 Grant needed: ask the patient to authorise access"))
    lines = ["| | |", "|---|---|"] + [f"| {k} | {_md(v)} |" for k, v in rows]
    if not f.grant_needed:
        lines += ["", f.summary_zh, "", f.summary_en]
    if f.mechanism:
        lines += ["", f"**机制 Mechanism:** {_md(f.mechanism)}"]
    if f.management:
        lines += ["", f"**处理 Management:** {_md(f.management)}"]
    lines += ["", f"来源 Source: {_md(_source_text(f))}"]
    return "\n".join(lines)


def links(f: Finding, *, base_url: str, patient_id: str) -> list[dict[str, str]]:
    base = base_url.rstrip("/")
    if f.grant_needed:
        return [{"label": "请患者授权查看 Ask the patient to authorise access",
                 "url": f"{base}/patients/{quote(patient_id, safe='')}/outside", "type": "absolute"}]
    out = []
    if f.concerns is not None and f.concerns.reference:
        out.append({"label": "相关记录 The record (FHIR)", "url": f"{base}/fhir/{f.concerns.reference}",
                    "type": "absolute"})
    url = (f.source or {}).get("url")
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        out.append({"label": "知识来源 Knowledge source", "url": url, "type": "absolute"})
    return out


def card(f: Finding, check: MedCheck, draft: dict, *, base_url: str) -> dict[str, Any]:
    """One CDS Hooks 2.0 card for a finding; its uuid is the finding's id (feedback names it)."""
    src_url = (f.source or {}).get("url")
    c: dict[str, Any] = {
        "uuid": f.id, "summary": summary(f), "indicator": indicator(f), "detail": detail(f),
        "source": {"label": SOURCE_LABEL,
                   "url": src_url if isinstance(src_url, str) and src_url.startswith(("http://", "https://"))
                   else base_url.rstrip("/") + "/", "topic": TOPIC},
        "links": links(f, base_url=base_url, patient_id=check.patient_id),
        "overrideReasons": override_reasons()}
    rid = draft.get("id")
    if isinstance(rid, str) and rid:
        c["suggestions"] = [{
            "label": "撤销此药物医嘱 Remove this draft medication order", "uuid": suggestion_id(f.id),
            "isRecommended": f.interrupt,
            "actions": [{"type": "delete", "resourceId": f"MedicationRequest/{rid}",
                         "description": "撤销此草稿医嘱 Remove the draft order"}]}]
        c["selectionBehavior"] = "at-most-one"
    return c


def call(platform: Platform, pctx: RequestContext, req: CdsRequest) -> dict[str, Any]:
    """Check every draft MedicationRequest of the call; cards for the findings not yet overridden."""
    from healthlink.api.cds_routes import _not_ours

    drafts = drafts_from(req)
    ms = platform.medsafety
    out: list[dict[str, Any]] = []
    try:
        if not drafts:  # nothing to check: still only for a Patient of the institution (audited read)
            ms.check(pctx, req.patient_id, {"resourceType": "MedicationRequest"},  # type: ignore[arg-type]
                     encounter_id=req.encounter_id, channel="cds", record=False)
        for d in drafts:
            res = ms.check(pctx, req.patient_id, d, encounter_id=req.encounter_id, channel="cds")  # type: ignore[arg-type]
            out += [card(f, res, d, base_url=platform.settings.base_url) for f in res.findings if f.overridden is None]
    except NotFound:
        raise _not_ours(pctx, req.patient_id) from None  # type: ignore[arg-type]
    return {"cards": out}


def reason_of(f: Feedback) -> tuple[str | None, str | None]:
    """The override reason and its text; a Coding of another system counts as ``other`` with the
    client's reason as text.  No reason: (None, comment) — whether that is enough is the finding's."""
    from healthlink.api.cds_routes import _bad

    if f.reason is None:
        return None, f.comment
    system, code = f.reason.get("system"), f.reason["code"]
    if system in (None, OVERRIDE_REASON_SYSTEM):
        if code not in OVERRIDE_REASONS:
            raise _bad(f"unknown reason {code!r}; one of {', '.join(OVERRIDE_REASONS)}",
                       f"{f.where}.overrideReason.reason.code")
        if code == "other" and not f.comment:
            raise _bad("is required with reason 'other'", f"{f.where}.overrideReason.userComment")
        return code, f.comment
    said = f"{f.reason.get('display') or code} [{system}|{code}]"[:240]
    return "other", f"{said}; {f.comment}"[:500] if f.comment else said


def feedback(platform: Platform, ctx: RequestContext, items: list[Feedback]) -> dict[str, Any]:
    """Record the feedback on medication-safety cards; everything is checked before anything is recorded."""
    from healthlink.api.cds_routes import _bad, staff_through_client

    ms = platform.medsafety
    plan = []
    for f in items:
        if ctx.actor.kind not in ("client", "user"):
            raise Forbidden("CDS feedback comes from a hospital system or a member of staff")
        event, _ = ms.finding(ctx, f.card)  # 404 unless a finding of the caller's institution
        if f.outcome == "accepted":
            for k, sid in enumerate(f.accepted):
                if sid != suggestion_id(f.card):
                    raise _bad(f"{sid} is not a suggestion of card {f.card}", f"{f.where}.acceptedSuggestions[{k}].id")
            reason = (None, None)
        else:
            reason = reason_of(f)
            if event["interrupt"] and reason[0] is None:
                raise Invalid(f"{f.where}.overrideReason.reason: is required: this finding interrupts; go ahead "
                              f"only with a reason from the card's overrideReasons ({', '.join(OVERRIDE_REASONS)})",
                              [Issue("required", "an interrupting finding needs a reason",
                                     (f"{f.where}.overrideReason.reason",))])
        if ctx.actor.kind == "client":
            dctx = staff_through_client(platform, ctx, event["username"],
                                        f"CDS client {ctx.actor.subject} ({ctx.actor.display})")
        else:
            dctx = ctx
        plan.append((f, reason, dctx))
    out = []
    for f, reason, dctx in plan:
        entry: dict[str, Any] = {"card": f.card, "outcome": f.outcome}
        if f.outcome == "accepted":
            entry["recorded_as"] = ms.accept(dctx, f.card, channel="cds")
        else:
            entry["recorded_as"] = ms.override(dctx, f.card, reason[0], reason[1], channel="cds")
            entry["reason"] = reason[0]
        out.append(entry)
    return {"feedback": out}


__all__ = ["call", "card", "drafts_from", "feedback", "override_reasons", "reason_of", "suggestion_id"]
