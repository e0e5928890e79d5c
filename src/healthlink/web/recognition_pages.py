"""Staff pages of mutual recognition of results (issue 7, items 7 and 8; docs/web.md
"Recognition of results"):

* ``/patients/{id}/orders`` — order entry in one of the patient's open encounters: the doctor
  picks items of the recognition catalogue and submits; ``Recognition.check`` finds still-valid
  results of the same items, and a pop-up (loaded by htmx) shows one card per result with
  "use this result" (``adopt``) and "order anyway" with a reason (``decline``, then the order is
  placed: a ServiceRequest in the encounter and ``reordered``).  Lines without a result are
  ordered at once.  Below the form, the encounter's orders and its recognised (adopted) results
  with their mark;
* ``/recognition/cards/{id}`` — one card's result in full (``opened``);
* ``/recognition/rates`` — the quality manager's (and the health commission's) rates: retrieval
  and recognition rates, savings and decline reasons from ``Recognition.rates``, with a bar chart
  drawn here as inline SVG.

A thin adapter: who may check, adopt, decline or see the rates, and what each hit discloses, is
decided by ``platform.recognition`` (which records the events and audits the reads); the orders
and the encounter's record go through the actor's repository.  No SQL here (import-linter)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from healthlink.access import Repository, RequestContext
from healthlink.access import roles as R
from healthlink.errors import Forbidden, HealthLinkError, Invalid, NotFound
from healthlink.recognition.catalogue import LOINC, Item
from healthlink.recognition.service import DECLINE_REASONS, RECOGNISED_TAG, Hit, Order
from healthlink.web import session
from healthlink.web.grant_pages import _open_encounters
from healthlink.web.i18n import N_
from healthlink.web.session import PageRoute, render
from healthlink.web.summary import _value, concept, patient_row

router = APIRouter(route_class=PageRoute, include_in_schema=False)

#: identifier system on a ServiceRequest placed from this page: the recognition check of its line
#: (so one line is ordered once, however many of its cards the doctor declines)
CHECK_SYSTEM = "https://healthlink.example.org/fhir/NamingSystem/recognition-check"
SNOMED = "http://snomed.info/sct"
ORDER_CATEGORY = {"laboratory": ("108252007", "Laboratory procedure"),
                  "examination": ("363679005", "Imaging")}
KIND_LABELS = {"laboratory": N_("Laboratory"), "examination": N_("Imaging")}
FLAG_LABELS = {"H": N_("high"), "HH": N_("critically high"), "L": N_("low"), "LL": N_("critically low"),
               "N": N_("normal"), "A": N_("abnormal"), "AA": N_("critically abnormal"),
               "POS": N_("positive"), "NEG": N_("negative")}
GROUPS = {"institution": N_("Institution"), "department": N_("Department"), "item": N_("Item"),
          "tier": N_("Tier"), "month": N_("Month"), "day": N_("Day")}
TIER_LABELS = {"prefecture": N_("Prefecture hospital"), "county": N_("County hospital"),
               "township": N_("Township health centre")}
#: who is offered the rates page (the service decides: a health-commission role sees the region,
#: others their own institution)
RATES_ROLES = session.RECOGNITION_RATES_ROLES


def may_order(roles: frozenset[str]) -> bool:
    """The order-entry page is for staff who may place an order (a ServiceRequest)."""
    return R.allowed(roles, "ServiceRequest", "c")


def may_see_rates(roles: frozenset[str]) -> bool:
    return bool(roles & RATES_ROLES)


def _recognition(request: Request):  # noqa: ANN202
    rec = getattr(request.app.state.platform, "recognition", None)
    if rec is None:
        raise NotFound(N_("Mutual recognition of results is not enabled on this platform."))
    return rec


def _fail(exc: HealthLinkError) -> None:
    """Errors a form shows next to itself; the rest go to the error page (PageRoute)."""
    if exc.status >= 500 or exc.status == 401:
        raise exc


def _hx(request: Request) -> bool:
    return bool(request.headers.get("hx-request"))


def _lang_name(lang: str, zh: str, en: str) -> str:
    return zh if lang == "zh-CN" else en


# ------------------------------------------------------------------ the catalogue
def catalogue_groups(catalogue, q: str = "",  # noqa: ANN001
                     keep: list[str] | None = None) -> list[tuple[str, list[Item]]]:
    """The catalogue's items, laboratory first, then imaging; ``q`` filters by name (either
    language), item id, LOINC or local code; items in ``keep`` (ticked already) stay."""
    q = q.strip().lower()
    kept = set(keep or [])
    out: dict[str, list[Item]] = {"laboratory": [], "examination": []}
    for item in catalogue.items:
        hay = " ".join([item.id, item.name_zh, item.name_en, item.loinc or "",
                        *(c for _, c in item.local_codes)]).lower()
        if q and q not in hay and item.id not in kept:
            continue
        out.setdefault(item.kind, []).append(item)
    return [(k, sorted(v, key=lambda i: i.name_en.lower())) for k, v in out.items() if v]


def order_of(item: Item) -> Order:
    """The order line of a catalogue item: its LOINC code, else its first local code; for
    imaging the item's body site and first modality."""
    system, code = (LOINC, item.loinc) if item.loinc else item.local_codes[0]
    return Order(system=system, code=code, display=item.name_en,
                 body_site=item.body_site.code if item.body_site else None,
                 modality=item.modality[0] if item.modality else None)


def _now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def place_order(repo: Repository, ctx: RequestContext, *, patient_id: str, encounter_id: str,
                item: Item | None, order: Order, check_id: str | None) -> str:
    """Write the order (an active ServiceRequest in the encounter) and return its reference.  A
    line already ordered for ``check_id`` is not ordered twice: the existing one is returned."""
    if check_id:
        found = repo.search("ServiceRequest", [("identifier", f"{CHECK_SYSTEM}|{check_id}"),
                                               ("patient", f"Patient/{patient_id}"), ("_count", "1")])
        if found.matches:
            return f"ServiceRequest/{found.matches[0].res_id}"
    kind = item.kind if item else "laboratory"
    cat_code, cat_display = ORDER_CATEGORY.get(kind, ORDER_CATEGORY["laboratory"])
    coding: list[dict[str, str]] = [{"system": order.system, "code": order.code}]
    if order.display:
        coding[0]["display"] = order.display
    body: dict[str, Any] = {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "category": [{"coding": [{"system": SNOMED, "code": cat_code, "display": cat_display}]}],
        "code": {"coding": coding, "text": item.name_zh if item else (order.display or order.code)},
        "subject": {"reference": f"Patient/{patient_id}"},
        "encounter": {"reference": f"Encounter/{encounter_id}"},
        "authoredOn": _now_iso(),
    }
    requester: dict[str, str] = {"display": ctx.actor.display}
    if ctx.actor.practitioner_id:
        requester["reference"] = f"Practitioner/{ctx.actor.practitioner_id}"
    body["requester"] = requester
    if check_id:
        body["identifier"] = [{"system": CHECK_SYSTEM, "value": check_id}]
    if item is not None and item.body_site is not None:
        body["bodySite"] = [{"coding": [{"system": item.body_site.system, "code": item.body_site.code,
                                         **({"display": item.body_site.display} if item.body_site.display
                                            else {})}]}]
    return f"ServiceRequest/{repo.create(body, res_type='ServiceRequest').stored.res_id}"


# ------------------------------------------------------------------ the encounter's record
@dataclass(frozen=True)
class OrderRow:
    ref: str
    what: str
    when: str
    status: str


@dataclass(frozen=True)
class AdoptedRow:
    ref: str
    what: str
    value: str
    when: str
    mark: str
    source: str  # the source result's reference (derivedFrom)
    source_institution: str


def _tag_mark(body: dict) -> str | None:
    for tag in (body.get("meta") or {}).get("tag", []) or []:
        if tag.get("system") == RECOGNISED_TAG:
            return str(tag.get("code") or tag.get("display") or "HR")
    return None


def _source_institution(body: dict) -> str:
    """Where the recognised result comes from, as ``Recognition.adopt`` notes it (mark,
    institution, date, valid until)."""
    for note in body.get("note", []) or []:
        if note.get("text"):
            return str(note["text"])
    for ref in body.get("derivedFrom", []) or []:
        if ref.get("display"):
            return str(ref["display"])
    perf = body.get("performer") or []
    for p in perf:
        if p.get("display"):
            return str(p["display"])
    return ""


def encounter_record(repo: Repository, patient_id: str, encounter_id: str) -> tuple[list[OrderRow], list[AdoptedRow]]:
    """The encounter's orders and its recognised external results (carrying the mark tag)."""
    enc = [("encounter", f"Encounter/{encounter_id}"), ("patient", f"Patient/{patient_id}"),
           ("_sort", "-_lastUpdated"), ("_count", "100")]
    orders = []
    for s in repo.search("ServiceRequest", enc).matches:
        b = s.json()
        orders.append(OrderRow(f"ServiceRequest/{s.res_id}", concept(b.get("code")),
                               str(b.get("authoredOn") or "")[:16].replace("T", " "), str(b.get("status", ""))))
    adopted = []
    for res_type in ("Observation",):  # Recognition.adopt writes an Observation (for imaging too)
        for s in repo.search(res_type, enc).matches:
            b = s.json()
            mark = _tag_mark(b)
            if mark is None:
                continue
            src = next((r.get("reference", "") for r in b.get("derivedFrom", []) or [] if r.get("reference")), "")
            when = str(b.get("effectiveDateTime") or (b.get("effectivePeriod") or {}).get("start") or "")
            adopted.append(AdoptedRow(f"{res_type}/{s.res_id}", concept(b.get("code")),
                                      _value(b),
                                      when[:16].replace("T", " "), mark, src, _source_institution(b)))
    return orders, adopted


# ------------------------------------------------------------------ order entry
def _encounter_choice(encounters: list[dict], wanted: str | None) -> str | None:
    ids = [e["id"] for e in encounters]
    if wanted in ids:
        return wanted
    return ids[0] if ids else None


def _orders_page(request: Request, ctx: RequestContext, patient_id: str, *, encounter: str | None = None,
                 status: int = 200, error: str | None = None, result: Any = None,
                 chosen: list[str] | None = None, placed: list[str] | None = None) -> Response:
    rec = _recognition(request)
    repo = request.app.state.platform.repository(ctx)
    p = patient_row(repo.read("Patient", patient_id))
    encounters = _open_encounters(repo, ctx, patient_id)
    enc = _encounter_choice(encounters, encounter or request.query_params.get("encounter"))
    orders, adopted = encounter_record(repo, patient_id, enc) if enc else ([], [])
    q = request.query_params.get("q", "")
    lang = session.language(request)
    popup = _popup_values(request, result, p.id, enc, placed) if result is not None else None
    return render(request, "recognition_orders.html", status=status, ctx=ctx, p=p, encounters=encounters,
                  encounter=enc, orders=orders, adopted=adopted, error=error, q=q, popup=popup,
                  groups=catalogue_groups(rec.catalogue, q, keep=chosen), chosen=set(chosen or []),
                  name=lambda i: _lang_name(lang, i.name_zh, i.name_en), may_order=may_order(ctx.actor.roles),
                  done=request.query_params.get("done", ""), **_card_values(lang))


def _card_values(lang: str) -> dict[str, Any]:
    return {"flag_labels": FLAG_LABELS, "reasons": list(DECLINE_REASONS), "reason_label": reason_label(lang),
            "kind_labels": KIND_LABELS, "safe_url": safe_url,
            "hit_name": lambda h: _lang_name(lang, h.item_name_zh, h.item_name_en)}


def reason_label(lang: str):  # noqa: ANN201
    """The national list's wording of a decline reason, in the page's language (the service's
    ``DECLINE_REASONS`` holds both)."""
    def label(code: str | None) -> str:
        zh, en = DECLINE_REASONS.get(code or "", (code or "", code or ""))
        return _lang_name(lang, zh, en)
    return label


def _popup_values(request: Request, result: Any, patient_id: str, encounter: str | None,
                  placed: list[str] | None) -> dict[str, Any]:
    lang = session.language(request)
    lines = []
    for ln in result.lines:
        if not ln.hits:
            continue
        name = (_lang_name(lang, ln.item.name_zh, ln.item.name_en) if ln.item is not None
                else (ln.order.display or ln.order.code))
        lines.append({"check_id": ln.check_id, "name": name, "hits": ln.hits})
    return {"lines": lines, "placed": placed or [], "patient_id": patient_id, "encounter": encounter,
            "grant_needed": result.grant_needed}


def order_context(request: Request) -> RequestContext:
    """The signed-in member of staff who may place orders; other roles get the 403 page."""
    ctx = session.context(request)
    if not may_order(ctx.actor.roles):
        raise Forbidden(N_("Your role does not place orders."))
    return ctx


@router.get("/patients/{patient_id}/orders")
def orders_page(request: Request, patient_id: str) -> Response:
    return _orders_page(request, order_context(request), patient_id)


@router.get("/patients/{patient_id}/orders/items")
def catalogue_items(request: Request, patient_id: str, q: str = "",
                    item: Annotated[list[str] | None, Query()] = None) -> Response:
    """The catalogue filtered by ``q`` (htmx replaces the item list as the doctor types); the
    items already ticked (``item``) stay listed and ticked."""
    ctx = order_context(request)
    rec = _recognition(request)
    lang = session.language(request)
    return render(request, "_recognition_items.html", ctx=ctx, groups=catalogue_groups(rec.catalogue, q, keep=item),
                  kind_labels=KIND_LABELS, chosen=set(item or []), q=q,
                  name=lambda i: _lang_name(lang, i.name_zh, i.name_en))


@router.get("/patients/{patient_id}/orders/record")
def orders_record(request: Request, patient_id: str, encounter: str = "") -> Response:
    """The encounter's orders and recognised results (htmx refreshes it after a decision)."""
    ctx = order_context(request)
    repo = request.app.state.platform.repository(ctx)
    repo.read("Patient", patient_id)  # a patient the actor may not see is 404 (and audited)
    orders, adopted = encounter_record(repo, patient_id, encounter) if encounter else ([], [])
    return render(request, "_recognition_record.html", ctx=ctx, patient_id=patient_id, encounter=encounter,
                  orders=orders, adopted=adopted)


@router.post("/patients/{patient_id}/orders")
def submit_orders(request: Request, patient_id: str, encounter: Annotated[str, Form()] = "",
                  item: Annotated[list[str] | None, Form()] = None,
                  csrf_token: Annotated[str | None, Form()] = None) -> Response:
    session.check_csrf(request, csrf_token)
    ctx = order_context(request)
    rec = _recognition(request)
    chosen = [i for i in (item or []) if i]
    try:
        if not encounter:
            raise Invalid(N_("Choose the encounter to order in."))
        items = [rec.catalogue.by_id(i) for i in chosen]
        if not items or any(i is None for i in items):
            raise Invalid(N_("Choose one or more items of the catalogue."))
        repo = request.app.state.platform.repository(ctx)
        if encounter not in {e["id"] for e in _open_encounters(repo, ctx, patient_id)}:
            raise Invalid(N_("Choose the encounter to order in."))
        result = rec.check(ctx, patient_id, [order_of(i) for i in items], encounter_id=encounter, channel="web")
        placed = []
        for ln in result.lines:  # nothing to recognise: the order is simply placed
            if not ln.hits:
                place_order(repo, ctx, patient_id=patient_id, encounter_id=encounter, item=ln.item,
                            order=ln.order, check_id=ln.check_id)
                placed.append(_lang_name(session.language(request), ln.item.name_zh, ln.item.name_en)
                              if ln.item else ln.order.code)
    except HealthLinkError as exc:
        _fail(exc)
        if exc.status == 404:
            raise
        if _hx(request):
            return render(request, "_recognition_popup.html", status=exc.status, ctx=ctx, error=exc.message,
                          popup=None, **_card_values(session.language(request)))
        return _orders_page(request, ctx, patient_id, encounter=encounter, status=exc.status,
                            error=exc.message, chosen=chosen)
    if _hx(request):
        resp = render(request, "_recognition_popup.html", ctx=ctx, error=None,
                      popup=_popup_values(request, result, patient_id, encounter, placed),
                      **_card_values(session.language(request)))
        resp.headers["HX-Trigger"] = "recognition-changed"
        return resp
    return _orders_page(request, ctx, patient_id, encounter=encounter, result=result, placed=placed)


# ------------------------------------------------------------------ a card's decisions
def safe_url(url: str | None) -> str | None:
    """A viewer link from the data only when it is http(s) (never ``javascript:``)."""
    if not url:
        return None
    return url if urlsplit(url).scheme in ("http", "https") else None


def _back(event: dict, done: str = "") -> str:
    q = {"encounter": event.get("encounter_id") or ""}
    if done:
        q["done"] = done
    return f"/patients/{quote(str(event.get('patient_id') or ''), safe='')}/orders?{urlencode(q)}"


def _line(request: Request, ctx: RequestContext, event: dict, hit: Hit, cards: list[str] | None, *,
          outcome: str = "", local_ref: str | None = None, order_ref: str | None = None,
          reason: str | None = None, error: str | None = None, status: int = 200) -> Response:
    """The order line's section of the pop-up again, after a decision on one of its cards (or
    with the error of a refused one): the decided card says what happened, the line's other cards
    lose their buttons (a line is decided once)."""
    rec = _recognition(request)
    hits: list[Hit] = []
    for cid in dict.fromkeys(cards or [hit.id]):
        if cid == hit.id:
            hits.append(hit)
            continue
        try:
            ev, other = rec.card(ctx, cid)
        except HealthLinkError:
            continue
        if ev.get("check_id") == event.get("check_id"):
            hits.append(other)
    if hit not in hits:
        hits.insert(0, hit)
    line = {"check_id": event.get("check_id"), "name": _card_values(session.language(request))["hit_name"](hit),
            "hits": hits}
    resp = render(request, "_recognition_line.html", status=status, ctx=ctx, line=line, decided=hit.id,
                  outcome=outcome, local_ref=local_ref, order_ref=order_ref, reason=reason, error=error,
                  patient_id=event.get("patient_id"), encounter=event.get("encounter_id"),
                  **_card_values(session.language(request)))
    if outcome:
        resp.headers["HX-Trigger"] = "recognition-changed"
    return resp


@router.get("/recognition/cards/{card_id}")
def open_card(request: Request, card_id: str) -> Response:
    """The result of a card in full; recorded as ``opened``."""
    ctx = session.context(request)
    rec = _recognition(request)
    event, _ = rec.card(ctx, card_id)
    hit = rec.opened(ctx, card_id, channel="web")
    template = "_recognition_detail.html" if _hx(request) else "recognition_card.html"
    return render(request, template, ctx=ctx, h=hit, event=event, back=_back(event),
                  **_card_values(session.language(request)))


@router.post("/recognition/cards/{card_id}/adopt")
def adopt(request: Request, card_id: str, cards: Annotated[list[str] | None, Form()] = None,
          csrf_token: Annotated[str | None, Form()] = None) -> Response:
    """Use this result: ``Recognition.adopt`` writes it into the card's encounter."""
    session.check_csrf(request, csrf_token)
    ctx = order_context(request)
    rec = _recognition(request)
    event, hit = rec.card(ctx, card_id)
    try:
        local = rec.adopt(ctx, card_id, encounter_id=event.get("encounter_id"), channel="web")
    except HealthLinkError as exc:
        _fail(exc)
        if exc.status == 404 or not _hx(request):
            raise
        return _line(request, ctx, event, hit, cards, error=exc.message, status=exc.status)
    if not _hx(request):
        return RedirectResponse(_back(event, "adopted"), status_code=303)
    return _line(request, ctx, event, hit, cards, outcome="adopted", local_ref=local)


@router.post("/recognition/cards/{card_id}/decline")
def decline(request: Request, card_id: str, reason: Annotated[str, Form()] = "",
            text: Annotated[str, Form()] = "", cards: Annotated[list[str] | None, Form()] = None,
            csrf_token: Annotated[str | None, Form()] = None) -> Response:
    """Order anyway: the reason is required (``other`` with a text); the decline is recorded,
    then the order is placed in the encounter and recorded as re-ordered."""
    session.check_csrf(request, csrf_token)
    ctx = order_context(request)
    rec = _recognition(request)
    event, hit = rec.card(ctx, card_id)
    reason, text = reason.strip(), text.strip()
    try:
        if reason not in DECLINE_REASONS:  # refused here too, before anything is recorded
            raise Invalid(N_("Choose the reason for ordering the test again."))
        if reason == "other" and not text:
            raise Invalid(N_("Give the reason for ordering the test again."))
        rec.decline(ctx, card_id, reason=reason, text=text or None, channel="web")
    except HealthLinkError as exc:
        _fail(exc)
        if exc.status == 404:
            raise
        if _hx(request):
            return _line(request, ctx, event, hit, cards, error=exc.message, status=exc.status)
        return _orders_page(request, ctx, str(event.get("patient_id")), encounter=event.get("encounter_id"),
                            status=exc.status, error=exc.message)
    order_ref = None
    encounter = event.get("encounter_id")
    if encounter:
        item = rec.catalogue.by_id(event.get("item_id") or hit.item_id)
        repo = request.app.state.platform.repository(ctx)
        if item is not None:
            order = order_of(item)
        else:  # the catalogue changed since the check: order the code that was checked
            system, _, code = str(event.get("order_ref") or "").partition("|")
            order = Order(system=system, code=code)
        order_ref = place_order(repo, ctx, patient_id=str(event.get("patient_id")), encounter_id=encounter,
                                item=item, order=order, check_id=event.get("check_id"))
        rec.reordered(ctx, event["check_id"], order_ref=order_ref, channel="web")
    if not _hx(request):
        return RedirectResponse(_back(event, "ordered"), status_code=303)
    return _line(request, ctx, event, hit, cards, outcome="declined", order_ref=order_ref, reason=reason)


# ------------------------------------------------------------------ rates
def _parse_day(value: str) -> date | None:
    value = value.strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise Invalid(N_("A date must be written YYYY-MM-DD.")) from exc


def _pct(x: Any) -> str:
    if x is None:
        return "—"
    try:
        return f"{float(x) * 100:.1f}%"
    except (TypeError, ValueError):
        return str(x)


def _yuan(x: Any) -> str:
    if x is None:
        return "—"
    try:
        return f"{Decimal(str(x)):,.2f}"
    except ArithmeticError:
        return str(x)


def _get(row: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        if isinstance(row, dict) and n in row:
            return row[n]
        if not isinstance(row, dict) and hasattr(row, n):
            return getattr(row, n)
    return default


@dataclass(frozen=True)
class RateRow:
    key: str
    label: str
    checked: int
    found: int
    retrieval: float | None
    reminded: int
    adopted: int
    declined: int
    recognition: float | None
    savings: str


def rate_row(row: Any, *, label: str | None = None) -> RateRow:
    """One row (or the totals) of ``Recognition.rates``, whatever its exact key names."""
    key = str(_get(row, "key", "group", "id", default="") or "")
    checked = int(_get(row, "checked", "orders", default=0) or 0)
    found = int(_get(row, "found", default=0) or 0)
    reminded = int(_get(row, "reminded", default=0) or 0)
    adopted = int(_get(row, "adopted", default=0) or 0)
    retrieval = _get(row, "retrieval_rate", "retrieval")
    recognition = _get(row, "recognition_rate", "recognition")
    if retrieval is None and checked:
        retrieval = found / checked
    if recognition is None and reminded:
        recognition = adopted / reminded
    savings = _get(row, "savings_yuan", "savings", default=None)
    if savings is None and _get(row, "savings_fen") is not None:
        savings = Decimal(int(_get(row, "savings_fen"))) / 100
    return RateRow(key, label or str(_get(row, "label", "name", default=key) or key), checked, found,
                   None if retrieval is None else float(retrieval), reminded, adopted,
                   int(_get(row, "declined", default=0) or 0),
                   None if recognition is None else float(recognition), _yuan(savings or 0))


def reason_rows(reasons: Any) -> list[tuple[str, int, str]]:
    """(code, count, share) of the decline reasons, most frequent first."""
    if isinstance(reasons, dict):
        pairs = [(str(k), int(v if not isinstance(v, dict) else v.get("count", 0))) for k, v in reasons.items()]
    else:
        pairs = [(str(_get(r, "reason", "code", default="")), int(_get(r, "count", "n", default=0) or 0))
                 for r in reasons or []]
    total = sum(n for _, n in pairs) or 1
    return [(code, n, f"{n * 100 / total:.1f}%") for code, n in sorted(pairs, key=lambda x: (-x[1], x[0]))]


#: chart geometry (px)
CHART_W, LABEL_W, BAR_H, GAP = 640, 200, 12, 10


def bar_chart(rows: list[RateRow], limit: int = 20) -> dict[str, Any]:
    """Horizontal bars, two per row (retrieval rate, recognition rate) on a 0-100 % scale; the
    template draws them as inline SVG (text escaped by the template engine)."""
    shown = rows[:limit]
    span = CHART_W - LABEL_W - 60
    bars = []
    for n, r in enumerate(shown):
        y = 30 + n * (2 * BAR_H + GAP)
        ret = max(0.0, min(1.0, r.retrieval or 0.0))
        recog = max(0.0, min(1.0, r.recognition or 0.0))
        bars.append({"label": r.label[:28], "y": y, "ret_w": round(ret * span, 1), "rec_w": round(recog * span, 1),
                     "ret": _pct(r.retrieval), "rec": _pct(r.recognition)})
    height = 30 + len(shown) * (2 * BAR_H + GAP) + 10
    ticks = [{"x": LABEL_W + round(span * f / 100, 1), "label": f"{f}%"} for f in (0, 25, 50, 75, 100)]
    return {"bars": bars, "width": CHART_W, "height": height, "x0": LABEL_W, "bar_h": BAR_H, "ticks": ticks,
            "more": max(0, len(rows) - limit)}


def rates_context(request: Request) -> RequestContext:
    ctx = session.context(request)
    if not may_see_rates(ctx.actor.roles):
        raise Forbidden(N_("Only quality managers, institution managers and the health commission see the "
                           "recognition rates."))
    return ctx


@router.get("/recognition/rates")
def rates_page(request: Request, since: str = "", until: str = "", by: str = "institution") -> Response:
    ctx = rates_context(request)
    rec = _recognition(request)
    by = by if by in GROUPS else "institution"
    error, data = None, None
    status = 200
    try:
        data = rec.rates(ctx, since=_parse_day(since), until=_parse_day(until), by=by)
    except HealthLinkError as exc:
        if exc.status in (401, 403, 404) or exc.status >= 500:
            raise
        error, status = exc.message, exc.status
    totals = rate_row((data or {}).get("totals") or {}, label="")
    rows = [rate_row(r) for r in (data or {}).get("rows") or []]
    since = since or str((data or {}).get("since") or "")
    until = until or str((data or {}).get("until") or "")
    return render(request, "recognition_rates.html", status=status, ctx=ctx, error=error, totals=totals,
                  rows=rows, reasons=reason_rows((data or {}).get("reasons")),
                  reason_label=reason_label(session.language(request)),
                  groups=GROUPS, by=by, since=since, until=until, chart=bar_chart(rows), pct=_pct,
                  tier_labels=TIER_LABELS)


__all__ = ["may_order", "may_see_rates", "router"]
