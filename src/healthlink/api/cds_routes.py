"""CDS Hooks 2.0 services for mutual recognition of results at order time (issue 7, item 4;
docs/cds-hooks.md), and for the order-time medication check (issue 8: ``medsafety-order-select``
and ``medsafety-order-sign``, built in ``api/cds_medsafety.py`` on the same parsing, client-context
mapping and feedback endpoint).

* ``GET /cds-services`` — discovery: ``healthlink-recognition-select`` (hook ``order-select``) and
  ``healthlink-recognition-sign`` (hook ``order-sign``, the last reminder before signing).
* ``POST /cds-services/{id}`` — a hook call: the draft ServiceRequests (``order-select``: only the
  selected ones) become :class:`~healthlink.recognition.service.Order` lines, ``Platform.recognition``
  checks them for the practitioner in ``context.userId``, and each hit becomes a card.
* ``POST /cds-services/{id}/feedback`` — accepted suggestions adopt the result, overrides decline it
  with the national reason; both count in the rates.

The caller is a hospital system with a platform-issued client-credentials token (``POST
/api/auth/token``), or a member of staff with their own token; ``context.userId`` names the acting
practitioner of that institution and ``context.patientId`` a Patient there.  The parsing is pure
(:func:`parse_request`, :func:`parse_feedback`, :func:`orders_from`), so tests run it on the
specification's own examples.  Errors are problem+json 4xx, never a stack trace.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from healthlink.access import RequestContext
from healthlink.api import cds_medsafety
from healthlink.api.deps import get_context
from healthlink.errors import Forbidden, Invalid, Issue, NotFound
from healthlink.recognition.catalogue import SNOMED, Catalogue
from healthlink.recognition.service import DECLINE_REASONS, REASON_SYSTEM, CheckResult, Hit, LineCheck, Order
from healthlink.runtime import Platform

router = APIRouter(tags=["CDS Hooks"])
NO_STORE = {"Cache-Control": "no-store"}
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
ORDER_HOOKS = ("order-select", "order-sign")
#: the namespace of the "use this result" suggestion's uuid (derived from the card's uuid, so a
#: feedback call can be checked against the card without storing the suggestion)
SUGGESTION_NS = uuid.UUID("5b0c3f0e-8a55-4f0e-9a3c-7d1e2b4c6a10")
SOURCE_LABEL = "HealthLink 检查检验结果互认 Mutual recognition of results"
TOPIC = {"system": "https://healthlink.example.org/fhir/CodeSystem/cds-topic", "code": "result-recognition",
         "display": "检查检验结果互认 Mutual recognition of results"}
SUMMARY_MAX = 139  # the specification: "<140-character summary"


@dataclass(frozen=True)
class Service:
    id: str
    hook: str
    title: str
    description: str
    record: bool  # does a call record check/reminder events (order-select) or only re-check?
    capability: str = "recognition"  # recognition | medsafety (api/cds_medsafety.py)

    def to_json(self) -> dict[str, Any]:
        return {"hook": self.hook, "id": self.id, "title": self.title, "description": self.description,
                "prefetch": dict(PREFETCH), "version": "2.0.0", "hookVersion": "1.0",
                "usageRequirements": USAGE}


PREFETCH = {"patient": "Patient/{{context.patientId}}"}
USAGE = ("Call with a HealthLink access token of the calling hospital system (POST /api/auth/token, client "
         "credentials) or of the ordering member of staff; context.userId must be that institution's "
         "Practitioner or PractitionerRole and context.patientId its Patient. Prefetch is optional: without "
         "it the service reads the Patient from the platform (docs/cds-hooks.md).")
SERVICES: dict[str, Service] = {s.id: s for s in (
    Service("healthlink-recognition-select", "order-select",
            "检查检验结果互认 Mutual recognition of results (order-select)",
            "When laboratory tests or examinations are selected, shows still-valid results of the same or an "
            "equivalent item for the same person from any qualified institution of the region (the HR "
            "mark), so the patient is not tested again. A card can adopt the result (the draft order is "
            "deleted) or be overridden with a reason from the national list. Before the patient has "
            "authorised access, a card only says that a result exists, with its institution and date.",
            record=True),
    Service("healthlink-recognition-sign", "order-sign",
            "检查检验结果互认 最后提醒 Mutual recognition: last reminder (order-sign)",
            "The last reminder before the orders are signed: the same check over every draft order of the "
            "session. A draft order already checked at order-select keeps its check and its cards (the same "
            "uuids), so each order line counts once; an order checked here first is counted here.",
            record=True),
    Service("medsafety-order-select", "order-select",
            "用药安全 Medication safety (order-select)",
            "When medications are selected, checks each selected draft MedicationRequest against the "
            "patient's active medications and recorded allergies at every institution of the region: "
            "interactions (the 15 ONC high-priority pairs and more), allergy and cross-sensitivity, duplicate "
            "therapy and dose. Contraindicated and major findings are critical cards that need an override "
            "reason; the others do not interrupt. Every card cites its knowledge source. Before the patient "
            "has authorised access, a finding about another institution's record only names the institution "
            "and the date.", record=True, capability="medsafety"),
    Service("medsafety-order-sign", "order-sign",
            "用药安全 签署前核查 Medication safety (order-sign)",
            "The same check over every draft MedicationRequest before signing. A draft already checked at "
            "order-select keeps its findings (the same card uuids, counted once); a finding overridden there "
            "is not shown again.", record=True, capability="medsafety"),
)}


# ------------------------------------------------------------------ parsing (pure)
@dataclass
class CdsRequest:
    """A parsed CDS Hooks request (the fields this platform uses; ``context`` keeps the rest)."""

    hook: str
    hook_instance: str | None
    fhir_server: str | None
    context: dict[str, Any]
    user_id: str | None = None
    patient_id: str | None = None
    encounter_id: str | None = None
    selections: list[str] | None = None
    draft_orders: list[dict[str, Any]] = field(default_factory=list)  # the Bundle's resources
    prefetch: dict[str, Any] = field(default_factory=dict)
    extension: dict[str, Any] | None = None


def _bad(msg: str, where: str) -> Invalid:
    return Invalid(f"{where}: {msg}", [Issue("invalid", f"{where}: {msg}", (where,))])


def _opt_str(obj: dict, key: str, where: str, *, required: bool = False) -> str | None:
    v = obj.get(key)
    if v is None:
        if required:
            raise _bad("is required", where)
        return None
    if not isinstance(v, str) or not v.strip():
        raise _bad("must be a non-empty string", where)
    return v


def parse_request(body: Any, *, hook: str | None = None, strict: bool = True) -> CdsRequest:
    """Parse a hook call.  ``hook``: the hook of the service called; the body's ``hook`` must match
    it.  ``strict`` (the HTTP endpoint) requires ``hook`` and ``hookInstance`` as the specification
    does; without it a bare ``{"context": ...}`` (the hook pages' examples) parses with ``hook``."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object", "$")
    got = _opt_str(body, "hook", "hook", required=strict or hook is None)
    if hook is not None and got is not None and got != hook:
        raise _bad(f"this service answers the {hook} hook, not {got}", "hook")
    the_hook = got or hook or ""
    instance = _opt_str(body, "hookInstance", "hookInstance", required=strict)
    fhir_server = _opt_str(body, "fhirServer", "fhirServer")
    auth = body.get("fhirAuthorization")
    if auth is not None:
        if not isinstance(auth, dict):
            raise _bad("must be an object", "fhirAuthorization")
        if fhir_server is None:
            raise _bad("is required when fhirAuthorization is given", "fhirServer")
    context = body.get("context")
    if not isinstance(context, dict):
        raise _bad("is required (an object)", "context")
    prefetch = body.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, dict):
        raise _bad("must be an object", "prefetch")
    for k, v in (prefetch or {}).items():
        if v is not None and not isinstance(v, dict):
            raise _bad("must be a FHIR resource or null", f"prefetch.{k}")
    ext = body.get("extension")
    if ext is not None and not isinstance(ext, dict):
        raise _bad("must be an object", "extension")
    req = CdsRequest(hook=the_hook, hook_instance=instance, fhir_server=fhir_server, context=context,
                     prefetch=dict(prefetch or {}), extension=ext)
    parse_context(req)
    return req


def parse_context(req: CdsRequest) -> None:
    """Fill the context fields of ``req`` by its hook's rules (order-select, order-sign; other
    hooks: userId, patientId and encounterId when present)."""
    c = req.context
    order = req.hook in ORDER_HOOKS
    req.user_id = _opt_str(c, "userId", "context.userId", required=order)
    req.patient_id = _opt_str(c, "patientId", "context.patientId", required=order)
    req.encounter_id = _opt_str(c, "encounterId", "context.encounterId")
    if not order:
        return
    if req.user_id and req.user_id.split("/", 1)[0] not in ("Practitioner", "PractitionerRole"):
        raise _bad("must be Practitioner/<id> or PractitionerRole/<id>", "context.userId")
    bundle = c.get("draftOrders")
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise _bad("is required: a Bundle of the draft orders", "context.draftOrders")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise _bad("must be a list", "context.draftOrders.entry")
    resources = []
    for n, e in enumerate(entries):
        res = e.get("resource") if isinstance(e, dict) else None
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            raise _bad("must be a FHIR resource", f"context.draftOrders.entry[{n}].resource")
        resources.append(res)
    req.draft_orders = resources
    if req.hook == "order-select":
        sel = c.get("selections")
        if not isinstance(sel, list) or not sel or not all(isinstance(s, str) and s for s in sel):
            raise _bad("is required: the ids of the newly selected orders, e.g. ServiceRequest/123",
                       "context.selections")
        known = {f"{r['resourceType']}/{r.get('id')}" for r in resources}
        for n, s in enumerate(sel):
            if s not in known:
                raise _bad(f"{s} is not in context.draftOrders", f"context.selections[{n}]")
        req.selections = list(sel)


def _codings(concept: Any) -> list[dict]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, dict)
            and isinstance(c.get("system"), str) and isinstance(c.get("code"), str)]


def orders_from(req: CdsRequest, catalogue: Catalogue) -> list[Order]:
    """The order lines to check: the draft ServiceRequests (order-select: the selected ones) whose
    code names a catalogue item, every coding tried in turn; the first SNOMED CT ``bodySite`` and a
    DICOM modality in ``orderDetail``; ``order_ref`` is ``ServiceRequest/<id>``."""
    chosen = set(req.selections) if req.selections is not None else None
    out: list[Order] = []
    for res in req.draft_orders:
        if res.get("resourceType") != "ServiceRequest":
            continue
        rid = res.get("id") if isinstance(res.get("id"), str) else None
        ref = f"ServiceRequest/{rid}" if rid else None
        if chosen is not None and ref not in chosen:
            continue
        match = next((c for c in _codings(res.get("code")) if catalogue.by_code(c["system"], c["code"])), None)
        if match is None:
            continue  # not a recognised item: nothing to recognise
        site = next((c["code"] for bs in res.get("bodySite") or [] for c in _codings(bs)
                     if c["system"] == SNOMED), None)
        modality = next((c["code"] for od in res.get("orderDetail") or [] for c in _codings(od)
                         if c["system"] == DICOM), None)
        out.append(Order(system=match["system"], code=match["code"], display=match.get("display"),
                         order_ref=ref, body_site=site, modality=modality))
    return out


@dataclass(frozen=True)
class Feedback:
    card: str
    outcome: str  # accepted | overridden
    accepted: tuple[str, ...]  # suggestion uuids
    reason: dict[str, Any] | None  # the override reason's Coding
    comment: str | None
    timestamp: str
    where: str  # feedback[n]


def parse_feedback(body: Any) -> list[Feedback]:
    """``{"feedback": [...]}`` as the specification defines it (card, outcome, acceptedSuggestions
    for ``accepted``, optional overrideReason {reason: Coding, userComment}, outcomeTimestamp).
    Whether an override without a reason is accepted is the caller's rule, not the parser's."""
    if not isinstance(body, dict) or not isinstance(body.get("feedback"), list) or not body["feedback"]:
        raise _bad("is required: a non-empty list", "feedback")
    out = []
    for n, f in enumerate(body["feedback"]):
        w = f"feedback[{n}]"
        if not isinstance(f, dict):
            raise _bad("must be an object", w)
        card = _opt_str(f, "card", f"{w}.card", required=True)
        outcome = f.get("outcome")
        if outcome not in ("accepted", "overridden"):
            raise _bad("must be accepted or overridden", f"{w}.outcome")
        ts = _opt_str(f, "outcomeTimestamp", f"{w}.outcomeTimestamp", required=True)
        accepted: list[str] = []
        sugg = f.get("acceptedSuggestions")
        if outcome == "accepted":
            if not isinstance(sugg, list) or not sugg:
                raise _bad("is required for an accepted outcome", f"{w}.acceptedSuggestions")
            for k, s in enumerate(sugg):
                accepted.append(_opt_str(s if isinstance(s, dict) else {}, "id",
                                         f"{w}.acceptedSuggestions[{k}].id", required=True))  # type: ignore[arg-type]
        reason, comment = None, None
        o = f.get("overrideReason")
        if o is not None:
            if not isinstance(o, dict):
                raise _bad("must be an object", f"{w}.overrideReason")
            r = o.get("reason")
            if r is not None:
                if not isinstance(r, dict) or not isinstance(r.get("code"), str) or not r["code"]:
                    raise _bad("must be a Coding with a code", f"{w}.overrideReason.reason")
                reason = r
            comment = _opt_str(o, "userComment", f"{w}.overrideReason.userComment")
        out.append(Feedback(card, outcome, tuple(accepted), reason, comment, ts, w))  # type: ignore[arg-type]
    return out


# ------------------------------------------------------------------ cards
def suggestion_id(card_id: str) -> str:
    return str(uuid.uuid5(SUGGESTION_NS, f"{card_id}:adopt"))


def override_reasons() -> list[dict[str, str]]:
    return [{"system": REASON_SYSTEM, "code": code, "display": f"{zh} / {en}"}
            for code, (zh, en) in DECLINE_REASONS.items()]


_MD_CELL = str.maketrans({"\r": " ", "\n": " ", **{ch: "\\" + ch for ch in "\\|*_`[]<>#"}})


def _md(text: object) -> str:
    """A value inside a markdown table cell: no pipes, no line breaks, no markup."""
    return str(text).translate(_MD_CELL)


def _fit(*candidates: str) -> str:
    for c in candidates:
        if len(c) <= SUMMARY_MAX:
            return c
    last = candidates[-1]
    return last[:SUMMARY_MAX - 1] + "…"


def summary(hit: Hit) -> str:
    """One sentence under 140 characters, zh-CN first, English after it when it fits."""
    when, until = hit.date.isoformat(), hit.valid_until.isoformat()
    if not hit.disclosed:
        zh = f"{hit.institution_name}有可互认的{hit.item_name_zh}结果（{when}），需患者授权后查看"
        en = f"A recognisable {hit.item_name_en} result ({when}) exists elsewhere; ask the patient's authorisation"
        return _fit(f"{zh} / {en}", zh)
    if hit.kind == "examination":
        what_zh = " ".join(x for x in (hit.item_name_zh, hit.modality, hit.body_site) if x)
        what_en = hit.item_name_en
    else:
        val = " ".join(x for x in (hit.value, hit.unit) if x)
        what_zh = f"{hit.item_name_zh} {val}".strip()
        what_en = f"{hit.item_name_en} {val}".strip()
    if hit.own:
        zh = f"本院已有{what_zh}（{when}）互认有效至 {until}，避免重复检查"
        en = f"Duplicate: {what_en} done here on {when}, valid until {until}"
    else:
        zh = f"{what_zh}（{hit.institution_name}，{when}）互认有效至 {until} {hit.mark}"
        en = f"{what_en} valid until {until}"
    return _fit(f"{zh} / {en}", zh)


def detail(hit: Hit, *, base_url: str) -> str:
    rows: list[tuple[str, object]] = [("项目 Item", f"{hit.item_name_zh} {hit.item_name_en}")]
    if hit.disclosed:
        if hit.kind == "examination":
            rows += [("检查 Study", " ".join(x for x in (hit.modality, hit.body_site) if x) or "—")]
            if hit.value:
                rows += [("结论 Conclusion", hit.value)]
        else:
            rows += [("结果 Value", hit.value or "—"), ("单位 Unit", hit.unit or "—"),
                     ("参考范围 Reference range", hit.reference_range or "—"), ("异常标识 Flag", hit.flag or "—")]
    rows += [("机构 Institution", hit.institution_name), ("日期 Date", hit.date.isoformat()),
             ("互认有效至 Valid until", hit.valid_until.isoformat()), ("互认标识 Mark", hit.mark)]
    lines = ["| | |", "|---|---|"] + [f"| {k} | {_md(v)} |" for k, v in rows]
    if not hit.disclosed:
        lines += ["", "结果数值需患者授权后显示。/ The values are shown once the patient authorises access."]
    elif hit.kind == "examination":
        lines += ["", "互认的是影像本身，而非报告结论。/ What is recognised is the images, not the report's conclusion."]
    if hit.own:
        lines += ["", "本院结果：请避免重复检查。/ A result of this institution: avoid a duplicate test."]
    return "\n".join(lines)


def links(hit: Hit, *, base_url: str, patient_id: str, recorded: bool = True) -> list[dict[str, str]]:
    base = base_url.rstrip("/")
    if not hit.disclosed:
        return [{"label": "请患者授权查看 Ask the patient to authorise access",
                 "url": f"{base}/patients/{quote(patient_id, safe='')}/outside", "type": "absolute"}]
    out = []
    if recorded:  # the platform's page of the card: the result in full, recorded as opened
        out.append({"label": "查看结果 View the result", "url": f"{base}/recognition/cards/{quote(hit.id)}",
                    "type": "absolute"})
    if hit.kind == "examination":
        if hit.viewer_url and hit.viewer_url.startswith(("http://", "https://")):
            out.append({"label": "查看影像 View the images", "url": hit.viewer_url, "type": "absolute"})
        elif hit.viewer_url:  # a reference to the study's Endpoint
            out.append({"label": "影像查看端点 Viewer endpoint (FHIR)", "url": f"{base}/fhir/{hit.viewer_url}",
                        "type": "absolute"})
        if hit.study_ref:
            out.append({"label": "影像检查 ImagingStudy (FHIR)", "url": f"{base}/fhir/{hit.study_ref}",
                        "type": "absolute"})
        if hit.report_ref:
            out.append({"label": "报告 Report (FHIR)", "url": f"{base}/fhir/{hit.report_ref}", "type": "absolute"})
    elif hit.result_ref:
        out.append({"label": "结果 Result (FHIR)", "url": f"{base}/fhir/{hit.result_ref}", "type": "absolute"})
    return out


def card(hit: Hit, line: LineCheck, *, base_url: str, patient_id: str, recorded: bool = True) -> dict[str, Any]:
    """One CDS Hooks 2.0 card for a hit (a hint carries no values and no suggestion).

    ``recorded``: the hit is a stored reminder, so the card has its ``uuid`` (feedback names it), a
    "use this result" suggestion and the reasons to order anyway.  Without it (a check that records
    nothing) the card is information only, without a uuid, so a CDS client sends no feedback on it
    (the specification's rule for cards without one).  ``order-sign`` after ``order-select`` of the
    same draft order gives the same cards with the same uuids (the service keeps the first check)."""
    c: dict[str, Any] = {"summary": summary(hit), "indicator": "warning" if hit.own else "info",
                         "detail": detail(hit, base_url=base_url),
                         "source": {"label": SOURCE_LABEL, "url": base_url.rstrip("/") + "/", "topic": TOPIC},
                         "links": links(hit, base_url=base_url, patient_id=patient_id, recorded=recorded)}
    if not recorded:
        return c
    c = {"uuid": hit.id, **c, "overrideReasons": override_reasons()}
    if hit.disclosed and line.order.order_ref:
        c["suggestions"] = [{
            "label": "采纳此结果 Use this result", "uuid": suggestion_id(hit.id), "isRecommended": True,
            "actions": [{"type": "delete", "resourceId": line.order.order_ref,
                         "description": "撤销此草稿医嘱，采纳已有结果 Remove this draft order and use the "
                                        "existing result"}]}]
        c["selectionBehavior"] = "at-most-one"
    return c


def cards(result: CheckResult, *, base_url: str, recorded: bool = True) -> list[dict[str, Any]]:
    return [card(h, ln, base_url=base_url, patient_id=result.patient_id, recorded=recorded)
            for ln in result.lines for h in ln.hits]


# ------------------------------------------------------------------ who acts
def staff_through_client(platform: Platform, ctx: RequestContext, username: str, agent: str) -> RequestContext:
    """The member of staff ``username`` (to whom a card or finding was shown) acting through their
    hospital system's request ``ctx``; ``agent`` names the system in the audit's user agent."""
    staff = platform.accounts.actor_for_username(ctx.actor, username)
    return RequestContext(actor=staff, request_id=ctx.request_id, address=ctx.address,
                          user_agent=f"{agent}; {ctx.user_agent}" if ctx.user_agent else agent)


def practitioner_context(platform: Platform, ctx: RequestContext, user_id: str | None) -> RequestContext:
    """The request context of the acting member of staff.  A hospital system names them in
    ``context.userId`` (a Practitioner or PractitionerRole of its institution); a member of staff
    calling with their own token must name themselves."""
    a = ctx.actor
    if a.kind == "client":
        if not user_id:
            raise _bad("is required: the acting Practitioner", "context.userId")
        staff = platform.accounts.actor_for_practitioner(a, user_id)
        agent = f"CDS client {a.subject} ({a.display})"
        return RequestContext(actor=staff, request_id=ctx.request_id, address=ctx.address,
                              user_agent=f"{agent}; {ctx.user_agent}" if ctx.user_agent else agent,
                              purpose_of_use="TREAT")
    if a.kind == "user":
        if user_id and user_id != f"Practitioner/{a.practitioner_id}":
            if user_id.startswith("PractitionerRole/"):
                raise Forbidden("with a staff token, context.userId must be your own Practitioner/<id>")
            raise Forbidden(f"{user_id} is not the signed-in member of staff")
        return ctx
    raise Forbidden("CDS services are called by a hospital system or a member of staff")


def check_prefetch(patient_id: str, prefetch: dict[str, Any]) -> None:
    """A prefetched Patient must be the one of ``context.patientId``; it is only checked for
    consistency (it proves nothing): the platform's own record decides whether the patient is the
    institution's (the lookup path, inside the repository, audited)."""
    pre = prefetch.get("patient")
    if pre is not None and (not isinstance(pre, dict) or pre.get("resourceType") != "Patient"
                            or pre.get("id") != patient_id):
        raise _bad("must be the Patient of context.patientId", "prefetch.patient")


def _not_ours(ctx: RequestContext, patient_id: str) -> Forbidden:
    return Forbidden(f"context.patientId: Patient/{patient_id} is not a patient of {ctx.actor.institution_id}",
                     [Issue("forbidden", "not a patient of the institution", ("context.patientId",))])


# ------------------------------------------------------------------ routes
def _service(service_id: str) -> Service:
    s = SERVICES.get(service_id)
    if s is None:
        raise NotFound(f"no CDS service '{service_id}'; GET /cds-services lists them: {', '.join(SERVICES)}")
    return s


async def _json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise _bad("the request needs a JSON body", "$")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"not JSON: {exc}", "$") from None


@router.get("/cds-services", summary="CDS Hooks discovery")
async def discovery() -> JSONResponse:
    return JSONResponse({"services": [s.to_json() for s in SERVICES.values()]})


def _call(platform: Platform, ctx: RequestContext, service: Service, body: Any) -> dict[str, Any]:
    req = parse_request(body, hook=service.hook)
    pctx = practitioner_context(platform, ctx, req.user_id)
    check_prefetch(req.patient_id, req.prefetch)  # type: ignore[arg-type]
    if service.capability == "medsafety":
        return cds_medsafety.call(platform, pctx, req)
    orders = orders_from(req, platform.recognition.catalogue)
    if not orders:  # nothing to recognise: still only for a Patient of the institution
        orders = [Order("urn:healthlink:none", "none")]
    try:
        # the repository refuses a Patient that is not the institution's own (404, audited)
        result = platform.recognition.check(pctx, req.patient_id, orders,  # type: ignore[arg-type]
                                            encounter_id=req.encounter_id, channel="cds", record=service.record)
    except NotFound:
        raise _not_ours(pctx, req.patient_id) from None  # type: ignore[arg-type]
    return {"cards": cards(result, base_url=platform.settings.base_url, recorded=service.record)}


@router.post("/cds-services/{service_id}", summary="Call a CDS service (order-select, order-sign)")
async def call(service_id: str, request: Request) -> Response:
    service = _service(service_id)
    ctx = await get_context(request)
    body = await _json(request)
    out = await run_in_threadpool(_call, request.app.state.platform, ctx, service, body)
    # orjson: the cards are the largest answer of the hook, rendered on the event loop (ADR 0016)
    return Response(orjson.dumps(out), media_type="application/json", headers=NO_STORE)


def reason_of(f: Feedback) -> tuple[str, str | None]:
    """The national decline reason of an override, and its text.  A Coding of another system (a
    CDS client may add its own reasons) counts as ``other`` with the client's reason as text."""
    if f.reason is None:
        raise _bad("is required: order anyway only with a reason from the card's overrideReasons "
                   f"({', '.join(DECLINE_REASONS)})", f"{f.where}.overrideReason.reason")
    system, code = f.reason.get("system"), f.reason["code"]
    if system in (None, REASON_SYSTEM):
        if code not in DECLINE_REASONS:
            raise _bad(f"unknown reason {code!r}; one of {', '.join(DECLINE_REASONS)}",
                       f"{f.where}.overrideReason.reason.code")
        return code, f.comment
    said = f"{f.reason.get('display') or code} [{system}|{code}]"[:240]
    return "other", f"{said}; {f.comment}" if f.comment else said


def _feedback(platform: Platform, ctx: RequestContext, body: Any) -> dict[str, Any]:
    items = parse_feedback(body)
    plan = []
    for f in items:  # everything is checked before anything is recorded
        reason = reason_of(f) if f.outcome == "overridden" else None
        if f.outcome == "accepted":
            for k, sid in enumerate(f.accepted):
                if sid != suggestion_id(f.card):
                    raise _bad(f"{sid} is not a suggestion of card {f.card}", f"{f.where}.acceptedSuggestions[{k}].id")
        event, _hit = platform.recognition.card(ctx, f.card)
        if ctx.actor.kind == "client":
            dctx = staff_through_client(platform, ctx, event["username"],
                                        f"CDS client {ctx.actor.subject} ({ctx.actor.display})")
        elif ctx.actor.kind == "user":
            dctx = ctx
        else:
            raise Forbidden("CDS feedback comes from a hospital system or a member of staff")
        plan.append((f, reason, event, dctx))
    out = []
    for f, reason, event, dctx in plan:
        entry: dict[str, Any] = {"card": f.card, "outcome": f.outcome}
        # the same feedback again is answered as the first time; a contrary decision is a 409
        if f.outcome == "accepted":
            entry["recorded_as"] = platform.recognition.adopt(dctx, f.card, encounter_id=event.get("encounter_id"),
                                                              channel="cds")
        else:
            platform.recognition.decline(dctx, f.card, reason=reason[0], text=reason[1], channel="cds")  # type: ignore[index]
            entry["reason"] = reason[0]  # type: ignore[index]
        out.append(entry)
    return {"feedback": out}


@router.post("/cds-services/{service_id}/feedback", summary="Feedback on cards: adopted or overridden")
async def feedback(service_id: str, request: Request) -> JSONResponse:
    service = _service(service_id)
    ctx = await get_context(request)
    body = await _json(request)
    if service.capability == "medsafety":
        out = await run_in_threadpool(lambda: cds_medsafety.feedback(request.app.state.platform, ctx,
                                                                     parse_feedback(body)))
        return JSONResponse(out, headers=NO_STORE)
    out = await run_in_threadpool(_feedback, request.app.state.platform, ctx, body)
    return JSONResponse(out, headers=NO_STORE)
