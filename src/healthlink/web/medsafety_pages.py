"""The doctor's prescription page with the medication-safety alerts (issue 8, item 5; docs/medsafety.md
"The doctor's prescription page").

* ``/patients/{id}/prescriptions`` — prescribing in one of the patient's open encounters at the
  doctor's institution (chosen like the order page's): search the drug dictionary and its
  ingredients (htmx), one line per drug with dose, route, frequency (HL7 GTS codes) and days;
  "check" runs ``MedSafety.check`` per line (live, htmx) and shows its findings: interrupting ones
  as a blocking panel that needs the drug removed or an override with a coded reason, the others
  as a quiet notice, hints with the way to ask the patient for access; "sign" writes the
  MedicationRequests (active order, encounter, requester) through the doctor's repository.
  Below, the encounter's prescriptions.  A tab links it with the order page of tests.

Signing checks again (unrecorded) and matches the findings it gets with the findings the doctor
saw (by what they are about: kind, severity, ingredient, record, institution and date), so an
override given on the page applies to the same finding at signing and a finding that appeared
since (another prescription somewhere, a changed dose) refuses the signature until it is seen.

A thin adapter: who may check or override and what a finding discloses is decided by
``platform.medsafety``; the prescriptions are written through the actor's repository (which checks
the role and audits).  No SQL here (import-linter)."""

from __future__ import annotations

import logging
import math
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from healthlink.access import Repository, RequestContext
from healthlink.errors import Conflict, Forbidden, HealthLinkError, Invalid, NotFound
from healthlink.medsafety.knowledge import RXNORM, SNOMED, Knowledge
from healthlink.medsafety.service import OVERRIDE_REASONS, Finding, MedCheck
from healthlink.web import i18n, session
from healthlink.web.grant_pages import _open_encounters
from healthlink.web.i18n import N_
from healthlink.web.recognition_pages import safe_url
from healthlink.web.session import PageRoute, render
from healthlink.web.summary import concept, patient_row

router = APIRouter(route_class=PageRoute, include_in_schema=False)
log = logging.getLogger("healthlink.web")

GTS = "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation"
UCUM = "http://unitsofmeasure.org"
#: identifier on a MedicationRequest signed here: the medication check it was signed after
CHECK_SYSTEM = "https://healthlink.example.org/fhir/NamingSystem/medsafety-check"
#: the frequencies offered (HL7 v3 GTS abbreviations, as ``MedSafety`` reads them from Timing.code)
FREQUENCIES = {"QD": N_("once a day"), "BID": N_("twice a day"), "TID": N_("three times a day"),
               "QID": N_("four times a day"), "Q8H": N_("every 8 hours"), "Q12H": N_("every 12 hours"),
               "QOD": N_("every other day"), "HS": N_("at bedtime"), "WK": N_("once a week")}
UNITS = {"mg": "mg", "g": "g", "ug": "µg", "mL": "mL", "[IU]": "IU", "mmol": "mmol"}
SEVERITY_LABELS = {"contraindicated": N_("Contraindicated"), "major": N_("Major"), "moderate": N_("Moderate"),
                   "minor": N_("Minor")}
KIND_LABELS = {"interaction": N_("Interaction"), "allergy": N_("Allergy"), "duplicate": N_("Duplicate therapy"),
               "dose": N_("Dose")}
PRODUCT_KINDS = {"chemical": N_("chemical drug"), "chinese-patent-medicine": N_("Chinese patent medicine"),
                 "tcm": N_("traditional Chinese medicine"), "tibetan-medicine": N_("Tibetan medicine")}
STATUS_LABELS = {"active": N_("active"), "on-hold": N_("on hold"), "completed": N_("completed"),
                 "cancelled": N_("cancelled"), "stopped": N_("stopped"), "draft": N_("draft"),
                 "entered-in-error": N_("entered in error")}
#: pre-review outcomes and submission statuses (medsafety.prereview.OUTCOME, STATUSES)
PREREVIEW_LABELS = {"auto-passed": N_("passed automatically"), "passed": N_("passed"),
                    "pending": N_("waiting for the pharmacist"), "returned": N_("returned by the pharmacist"),
                    "double-sign-required": N_("double signature required"), "double-signed": N_("double-signed"),
                    "timed-out": N_("passed by timeout"),
                    "not-submitted": N_("not submitted (refused by the centre): tell the pharmacy")}
MAX_LINES = 20
MAX_DAYS = 365
_LINE_ID = re.compile(r"^[0-9a-f]{8,32}$")
_CHECK_ID = re.compile(r"^[0-9a-f]{32}$")


def may_prescribe(roles: frozenset[str]) -> bool:
    """Only doctors prescribe (处方管理办法: prescriptions are written by licensed physicians);
    nurses carry out orders and pharmacists review them."""
    return "doctor" in roles


def prescribe_context(request: Request) -> RequestContext:
    """The signed-in doctor; other roles get the 403 page."""
    ctx = session.context(request)
    if not may_prescribe(ctx.actor.roles):
        raise Forbidden(N_("Only doctors prescribe."))
    return ctx


def _medsafety(request: Request):
    ms = getattr(request.app.state.platform, "medsafety", None)
    if ms is None:
        raise NotFound(N_("Medication safety checks are not enabled on this platform."))
    return ms


def _hx(request: Request) -> bool:
    return bool(request.headers.get("hx-request"))


def _tr(request: Request, message: str, **values: Any) -> str:
    """A message in the page's language, with its values put in."""
    text = i18n.translations(session.language(request)).gettext(message)
    return text % values if values else text


def _zh(request: Request) -> bool:
    return session.language(request) == "zh-CN"


# ------------------------------------------------------------------ the drug dictionary
@dataclass(frozen=True)
class Drug:
    """A drug the doctor can prescribe: an ingredient (by its RxNorm code) or a product of the
    local drug dictionary (by its first code)."""

    key: str  # "<system>|<code>"
    system: str
    code: str
    name_zh: str
    name_en: str
    kind: str  # ingredient | chemical | chinese-patent-medicine | tcm | tibetan-medicine
    complete: bool = True  # all ingredients known to the checks
    codes: tuple[str, ...] = ()

    def name(self, zh: bool) -> str:
        return self.name_zh if zh else self.name_en


def _drugs(kb: Knowledge) -> list[Drug]:
    cached = getattr(kb, "_web_drugs", None)
    if cached is not None:
        return cached
    out = [Drug(f"{RXNORM}|{i.rxnorm}", RXNORM, i.rxnorm, i.name_zh or i.name_en, i.name_en, "ingredient",
                codes=(i.id, i.rxnorm))
           for i in kb.ingredients if i.rxnorm]
    for p in kb.products:
        system, code = p.codes[0]
        out.append(Drug(f"{system}|{code}", system, code, p.name_zh, p.name_en or p.name_zh, p.kind,
                        p.ingredients_complete and bool(p.ingredients), tuple(c for _, c in p.codes) + (p.id,)))
    object.__setattr__(kb, "_web_drugs", out)  # the knowledge base is frozen; built once per base
    return out


def find_drugs(kb: Knowledge, q: str, *, limit: int = 30) -> list[Drug]:
    """Drugs whose Chinese or English name, ingredient id or a code contains ``q``; names that
    begin with it first."""
    q = q.strip().lower()
    if not q:
        return []
    hits = []
    for d in _drugs(kb):
        names = (d.name_zh.lower(), d.name_en.lower())
        if any(q in n for n in names) or any(q in c.lower() for c in d.codes):
            starts = any(n.startswith(q) for n in names) or q in (c.lower() for c in d.codes)
            hits.append((not starts, d.kind != "ingredient", d.name_en.lower(), d))
    return [h[-1] for h in sorted(hits, key=lambda h: h[:3])[:limit]]


def drug_of(kb: Knowledge, key: str) -> Drug | None:
    return next((d for d in _drugs(kb) if d.key == key), None)


# ------------------------------------------------------------------ the lines of the form
@dataclass
class Line:
    """One drug of the prescription as the form holds it (values as typed)."""

    id: str
    drug: Drug
    dose: str = ""
    unit: str = "mg"
    route: str = ""  # SNOMED CT route code
    frequency: str = ""
    days: str = ""


def _new_line_id() -> str:
    return secrets.token_hex(8)


def lines_of(request: Request, kb: Knowledge, *, ids: list[str], drugs: list[str], doses: list[str],
             units: list[str], routes: list[str], frequencies: list[str], days: list[str]) -> list[Line]:
    """The form's parallel lists as lines; a drug that is not in the dictionary is refused."""
    if len(drugs) > MAX_LINES:
        raise Invalid(_tr(request, N_("At most %(n)s drugs in one prescription."), n=MAX_LINES))

    def at(values: list[str], n: int, default: str = "") -> str:
        return values[n].strip() if n < len(values) and values[n] is not None else default

    out = []
    for n, key in enumerate(drugs):
        drug = drug_of(kb, key.strip())
        if drug is None:
            raise Invalid(_tr(request, N_("Line %(n)s: the drug is not in the drug dictionary; choose it "
                                          "from the search."), n=n + 1))
        lid = at(ids, n)
        out.append(Line(lid if _LINE_ID.match(lid) else _new_line_id(), drug, at(doses, n), at(units, n, "mg"),
                        at(routes, n), at(frequencies, n), at(days, n)))
    return out


def _number(request: Request, line: Line, n: int, value: str, what: str, *, integer: bool = False,
            upper: float | None = None) -> float | None:
    if not value:
        return None
    try:
        x = float(value.replace(",", "."))
    except ValueError:
        x = math.nan
    if not math.isfinite(x) or x <= 0 or (integer and x != int(x)) or (upper is not None and x > upper):
        raise Invalid(_tr(request, what, n=n, drug=line.drug.name(_zh(request)), value=value))
    return x


def draft_of(request: Request, kb: Knowledge, line: Line, n: int, *, patient_id: str, encounter_id: str,
             complete: bool) -> dict:
    """The MedicationRequest of a line (status draft).  ``complete``: for signing, dose, unit,
    route, frequency and days are required."""
    zh = _zh(request)
    name = line.drug.name(zh)
    dose = _number(request, line, n, line.dose, N_("Line %(n)s (%(drug)s): the dose must be a positive number, "
                                                   "not “%(value)s”."))
    days = _number(request, line, n, line.days, N_("Line %(n)s (%(drug)s): the days must be a whole number "
                                                   "from 1 to 365, not “%(value)s”."), integer=True, upper=MAX_DAYS)
    if line.unit not in UNITS:
        raise Invalid(_tr(request, N_("Line %(n)s (%(drug)s): choose the dose unit."), n=n, drug=name))
    if line.frequency and line.frequency not in FREQUENCIES:
        raise Invalid(_tr(request, N_("Line %(n)s (%(drug)s): choose the frequency."), n=n, drug=name))
    route = next((r for r in kb.routes if r.snomed == line.route or r.id == line.route), None)
    if line.route and route is None:
        raise Invalid(_tr(request, N_("Line %(n)s (%(drug)s): choose the route."), n=n, drug=name))
    if complete:
        for missing, message in ((dose is None, N_("Line %(n)s (%(drug)s): give the dose.")),
                                 (route is None, N_("Line %(n)s (%(drug)s): choose the route.")),
                                 (not line.frequency, N_("Line %(n)s (%(drug)s): choose the frequency.")),
                                 (days is None, N_("Line %(n)s (%(drug)s): give the number of days."))):
            if missing:
                raise Invalid(_tr(request, message, n=n, drug=name))
    coding = {"system": line.drug.system, "code": line.drug.code, "display": line.drug.name_en}
    dosage: dict[str, Any] = {}
    text = []
    if dose is not None:
        dosage["doseAndRate"] = [{"doseQuantity": {"value": _num(dose), "unit": line.unit, "system": UCUM,
                                                   "code": line.unit}}]
        text.append(f"{_num(dose)} {UNITS[line.unit]}")
    if route is not None:
        dosage["route"] = {"coding": [{"system": SNOMED, "code": route.snomed, "display": route.name_en}]}
        text.append((route.name_zh or route.name_en) if zh else route.name_en)
    timing: dict[str, Any] = {}
    if line.frequency:
        timing["code"] = {"coding": [{"system": GTS, "code": line.frequency}]}
        text.append(_tr(request, FREQUENCIES[line.frequency]))
    if days is not None:
        timing["repeat"] = {"boundsDuration": {"value": int(days), "unit": "d", "system": UCUM, "code": "d"}}
        text.append(_tr(request, N_("for %(n)s days"), n=int(days)))
    if timing:
        dosage["timing"] = timing
    if text:
        dosage["text"] = " ".join(text)
    body: dict[str, Any] = {"resourceType": "MedicationRequest", "status": "draft", "intent": "order",
                            "medicationCodeableConcept": {"coding": [coding], "text": line.drug.name_zh},
                            "subject": {"reference": f"Patient/{patient_id}"},
                            "encounter": {"reference": f"Encounter/{encounter_id}"}}
    if dosage:
        body["dosageInstruction"] = [dosage]
    if days is not None:
        body["dispenseRequest"] = {"expectedSupplyDuration": {"value": int(days), "unit": "d", "system": UCUM,
                                                              "code": "d"}}
    return body


def _num(x: float) -> int | float:
    return int(x) if x == int(x) else x


# ------------------------------------------------------------------ findings
def finding_key(f: dict) -> tuple:
    """What a finding is about, the same however often the line is checked: kind, severity, the
    draft's ingredient, the record (or, in a hint, its institution and date), the knowledge entry
    and, for dose, which limit."""
    c = f.get("concerns") or {}
    return (f.get("kind"), f.get("severity"), f.get("ingredient"), c.get("institution_id"), c.get("date"),
            c.get("reference"), f.get("knowledge_id"), (f.get("detail") or {}).get("which"))


@dataclass
class Checked:
    """A line with its check: the findings that block signing and the quiet ones, and the
    override reasons already chosen (by finding id)."""

    line: Line
    result: MedCheck | None
    error: str | None = None
    reasons: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.result.findings if f.interrupt] if self.result else []

    @property
    def notices(self) -> list[Finding]:
        return [f for f in self.result.findings if not f.interrupt] if self.result else []


@dataclass
class Prior:
    """The findings the doctor saw (submitted with the form) and their override reasons."""

    by_key: dict[tuple, str] = field(default_factory=dict)  # finding key -> finding id
    interrupt: dict[str, bool] = field(default_factory=dict)
    reasons: dict[str, tuple[str, str]] = field(default_factory=dict)  # finding id -> (reason, text)
    ingredient: dict[str, str] = field(default_factory=dict)  # finding id -> the draft's ingredient
    checks: list[str] = field(default_factory=list)


def prior_of(request: Request, ctx: RequestContext, patient_id: str, finding_ids: list[str],
             form: dict[str, str], checks: list[str]) -> Prior:
    """The findings named by the form, read back from the service (only those of this doctor's
    institution and this patient count), with the reasons chosen for them."""
    ms = _medsafety(request)
    prior = Prior(checks=[c for c in checks if c])
    for fid in dict.fromkeys(finding_ids):
        try:
            ev, shown = ms.finding(ctx, fid)
        except HealthLinkError:
            continue
        if ev.get("patient_id") != patient_id:
            continue
        prior.by_key.setdefault(finding_key(shown), fid)
        prior.interrupt[fid] = bool(ev.get("interrupt"))
        prior.ingredient[fid] = str(shown.get("ingredient") or "")
        reason = (form.get(f"reason-{fid}") or "").strip()
        text = (form.get(f"text-{fid}") or "").strip()
        if reason or text:
            prior.reasons[fid] = (reason, text)
    return prior


def check_lines(request: Request, ctx: RequestContext, patient_id: str, encounter: str, lines: list[Line],
                prior: Prior | None = None, *, record: bool = True) -> list[Checked]:
    """``MedSafety.check`` for each line; reasons chosen for the same findings before are kept."""
    ms = _medsafety(request)
    kb = ms.knowledge
    out = []
    for n, line in enumerate(lines, 1):
        draft = draft_of(request, kb, line, n, patient_id=patient_id, encounter_id=encounter, complete=False)
        result = ms.check(ctx, patient_id, draft, encounter_id=encounter, channel="web", record=record)
        reasons = {}
        if prior is not None:
            for f in result.findings:
                old = prior.by_key.get(finding_key(f.to_json()))
                if old and old in prior.reasons:
                    reasons[f.id] = prior.reasons[old]
        out.append(Checked(line, result, reasons=reasons))
    return out


def _validate_reason(request: Request, name: str, reason: str, text: str) -> None:
    if reason not in OVERRIDE_REASONS:
        raise Invalid(_tr(request, N_("%(drug)s: choose the reason for going ahead despite the alert."), drug=name))
    if reason == "other" and not text:
        raise Invalid(_tr(request, N_("%(drug)s: give the reason in words (the reason “other”)."), drug=name))
    if len(text) > 500:
        raise Invalid(_tr(request, N_("%(drug)s: the reason is longer than 500 characters."), drug=name))


# ------------------------------------------------------------------ the encounter's prescriptions
@dataclass(frozen=True)
class RxRow:
    ref: str
    drug: str
    dosage: str
    when: str
    status: str
    requester: str
    prereview: str | None = None  # the pre-review outcome, where the institution takes part


def encounter_prescriptions(repo: Repository, patient_id: str, encounter_id: str,
                            prereview: Any = None) -> list[RxRow]:
    """The encounter's MedicationRequests, newest first; with ``prereview``, each one's outcome."""
    params = [("encounter", f"Encounter/{encounter_id}"), ("patient", f"Patient/{patient_id}"),
              ("_sort", "-_lastUpdated"), ("_count", "100")]
    rows = []
    for s in repo.search("MedicationRequest", params).matches:
        b = s.json()
        dosage = " ".join(str(d.get("text") or "") for d in b.get("dosageInstruction") or [] if isinstance(d, dict))
        rows.append(RxRow(f"MedicationRequest/{s.res_id}", concept(b.get("medicationCodeableConcept")),
                          dosage.strip(), str(b.get("authoredOn") or "")[:16].replace("T", " "),
                          str(b.get("status") or ""), str((b.get("requester") or {}).get("display") or ""),
                          prereview.outcome(f"MedicationRequest/{s.res_id}") if prereview is not None else None))
    return rows


# ------------------------------------------------------------------ rendering
def _values(request: Request, ctx: RequestContext, patient_id: str) -> dict[str, Any]:
    ms = _medsafety(request)
    zh = _zh(request)
    return {"frequencies": FREQUENCIES, "units": UNITS, "routes": ms.knowledge.routes,
            "route_name": lambda r: (r.name_zh or r.name_en) if zh else r.name_en,
            "drug_name": lambda d: d.name(zh), "product_kinds": PRODUCT_KINDS,
            "severity_labels": SEVERITY_LABELS, "kind_labels": KIND_LABELS, "reasons": list(OVERRIDE_REASONS),
            "reason_label": lambda code: OVERRIDE_REASONS.get(code, (code, code))[0 if zh else 1],
            "summary": lambda f: f.summary_zh if zh else f.summary_en,
            "ingredient_name": lambda i: _ingredient_name(ms.knowledge, i, zh),
            "safe_url": safe_url, "patient_id": patient_id, "status_labels": STATUS_LABELS,
            "prereview_labels": PREREVIEW_LABELS}


def _ingredient_name(kb: Knowledge, ingredient: str | None, zh: bool) -> str:
    i = kb.ingredient(ingredient or "")
    if i is None:
        return ingredient or ""
    return (i.name_zh or i.name_en) if zh else i.name_en


def _oral(kb: Knowledge) -> str:
    return next((r.snomed for r in kb.routes if r.id == "oral"), "")


def _encounter_choice(encounters: list[dict], wanted: str | None) -> str | None:
    ids = [e["id"] for e in encounters]
    if wanted in ids:
        return wanted
    return ids[0] if ids else None


def _page(request: Request, ctx: RequestContext, patient_id: str, *, encounter: str | None = None,
          lines: list[Line] | None = None, checked: list[Checked] | None = None, error: str | None = None,
          status: int = 200) -> Response:
    ms = _medsafety(request)
    repo = request.app.state.platform.repository(ctx)
    p = patient_row(repo.read("Patient", patient_id))
    encounters = _open_encounters(repo, ctx, patient_id)
    enc = _encounter_choice(encounters, encounter or request.query_params.get("encounter"))
    q = request.query_params.get("q", "")
    if lines is None:  # ?drug=... starts lines (the search's links without htmx)
        lines = [Line(_new_line_id(), d, route=_oral(ms.knowledge))
                 for d in (drug_of(ms.knowledge, k) for k in request.query_params.getlist("drug")[:MAX_LINES]) if d]
    pre = _prereviewer(request, ctx)
    return render(request, "medsafety_prescriptions.html", status=status, ctx=ctx, p=p, encounters=encounters,
                  encounter=enc, q=q, drugs=find_drugs(ms.knowledge, q), lines=lines, checked=checked, error=error,
                  prescriptions=encounter_prescriptions(repo, patient_id, enc, pre) if enc else [],
                  done=request.query_params.get("done", ""), prereview=request.query_params.get("prereview", ""),
                  has_prereview=pre is not None, tab="prescriptions", **_values(request, ctx, patient_id))


def _alerts(request: Request, ctx: RequestContext, patient_id: str, checked: list[Checked] | None, *,
            error: str | None = None, status: int = 200) -> Response:
    return render(request, "_medsafety_alerts.html", status=status, ctx=ctx, checked=checked, error=error,
                  **_values(request, ctx, patient_id))


def _fail(exc: HealthLinkError) -> None:
    """Errors the form shows next to itself; the rest go to the error page (PageRoute)."""
    if exc.status >= 500 or exc.status in (401, 403, 404):
        raise exc


def _open_encounter(request: Request, ctx: RequestContext, patient_id: str, encounter: str) -> None:
    repo = request.app.state.platform.repository(ctx)
    repo.read("Patient", patient_id)  # another institution's patient is 404 (and audited)
    if not encounter or encounter not in {e["id"] for e in _open_encounters(repo, ctx, patient_id)}:
        raise Invalid(_tr(request, N_("Choose the encounter to prescribe in.")))


# ------------------------------------------------------------------ routes
@router.get("/patients/{patient_id}/prescriptions")
def prescriptions_page(request: Request, patient_id: str) -> Response:
    return _page(request, prescribe_context(request), patient_id)


@router.get("/patients/{patient_id}/prescriptions/drugs")
def drug_search(request: Request, patient_id: str, q: str = "", encounter: str = "") -> Response:
    """The dictionary filtered by ``q`` (htmx replaces the result list as the doctor types)."""
    ctx = prescribe_context(request)
    ms = _medsafety(request)
    return render(request, "_medsafety_drugs.html", ctx=ctx, drugs=find_drugs(ms.knowledge, q), q=q,
                  encounter=encounter, **_values(request, ctx, patient_id))


@router.get("/patients/{patient_id}/prescriptions/line")
def new_line(request: Request, patient_id: str, drug: str = "") -> Response:
    """A new line of the prescription for one drug (htmx appends it to the form, then the lines
    are checked again)."""
    ctx = prescribe_context(request)
    ms = _medsafety(request)
    d = drug_of(ms.knowledge, drug)
    if d is None:
        raise Invalid(N_("The drug is not in the drug dictionary; choose it from the search."))
    resp = render(request, "_medsafety_line.html", ctx=ctx, line=Line(_new_line_id(), d, route=_oral(ms.knowledge)),
                  **_values(request, ctx, patient_id))
    resp.headers["HX-Trigger-After-Settle"] = "medsafety-recheck"
    return resp


Lists = Annotated[list[str] | None, Form()]


async def _form(request: Request) -> dict[str, str]:
    """The fields whose names vary: override reasons (``reason-<finding>``, ``text-<finding>``) and
    the check each line was last checked by (``check-<line>``)."""
    form = await request.form()
    return {k: str(v) for k, v in form.items() if k.startswith(("reason-", "text-", "check-"))}


@router.post("/patients/{patient_id}/prescriptions/check")
async def check(request: Request, patient_id: str, encounter: Annotated[str, Form()] = "",
                line: Lists = None, drug: Lists = None, dose: Lists = None, unit: Lists = None,
                route: Lists = None, frequency: Lists = None, days: Lists = None, finding: Lists = None,
                csrf_token: Annotated[str | None, Form()] = None) -> Response:
    """Check every line; the alerts (htmx), or the page with them."""
    session.check_csrf(request, csrf_token)
    ctx = prescribe_context(request)
    form = await _form(request)
    ms = _medsafety(request)
    lines: list[Line] = []
    try:
        lines = lines_of(request, ms.knowledge, ids=line or [], drugs=drug or [], doses=dose or [],
                         units=unit or [], routes=route or [], frequencies=frequency or [], days=days or [])
        _open_encounter(request, ctx, patient_id, encounter)
        prior = prior_of(request, ctx, patient_id, finding or [], form, [])
        checked = check_lines(request, ctx, patient_id, encounter, lines, prior)
    except HealthLinkError as exc:
        _fail(exc)
        if _hx(request):
            return _alerts(request, ctx, patient_id, None, error=exc.message, status=exc.status)
        return _page(request, ctx, patient_id, encounter=encounter, lines=lines, error=exc.message,
                     status=exc.status)
    if _hx(request):
        return _alerts(request, ctx, patient_id, checked)
    return _page(request, ctx, patient_id, encounter=encounter, lines=lines, checked=checked)


@router.post("/patients/{patient_id}/prescriptions/sign")
async def sign(request: Request, patient_id: str, encounter: Annotated[str, Form()] = "",
               line: Lists = None, drug: Lists = None, dose: Lists = None, unit: Lists = None,
               route: Lists = None, frequency: Lists = None, days: Lists = None, finding: Lists = None,
               csrf_token: Annotated[str | None, Form()] = None) -> Response:
    """Sign: check again, refuse while an interrupting finding has no override reason (or was not
    seen), else record the overrides and write the MedicationRequests."""
    session.check_csrf(request, csrf_token)
    ctx = prescribe_context(request)
    form = await _form(request)
    ms = _medsafety(request)
    kb = ms.knowledge
    lines: list[Line] = []
    checked: list[Checked] | None = None
    try:
        lines = lines_of(request, kb, ids=line or [], drugs=drug or [], doses=dose or [], units=unit or [],
                         routes=route or [], frequencies=frequency or [], days=days or [])
        if not lines:
            raise Invalid(_tr(request, N_("Add a drug to the prescription first.")))
        _open_encounter(request, ctx, patient_id, encounter)
        drafts = [draft_of(request, kb, ln, n, patient_id=patient_id, encounter_id=encounter, complete=True)
                  for n, ln in enumerate(lines, 1)]
        seen = {ln.id: form.get(f"check-{ln.id}", "") for ln in lines}
        prior = prior_of(request, ctx, patient_id, finding or [], form,
                         [c for c in seen.values() if _CHECK_ID.match(c)])
        for fid, (reason, text) in prior.reasons.items():  # every reason given must be valid
            if prior.interrupt.get(fid) or reason:
                _validate_reason(request, _ingredient_name(kb, prior.ingredient.get(fid), _zh(request)),
                                 reason, text)
        # checked again as it will be signed; recorded only when a line was never checked
        unseen = any(not _CHECK_ID.match(c) for c in seen.values())
        fresh = check_lines(request, ctx, patient_id, encounter, lines, prior, record=unseen)
        overrides: list[tuple[str, str | None, str | None]] = []
        refused: list[str] = []
        for c in fresh:
            for f in c.result.findings if c.result else []:
                old = prior.by_key.get(finding_key(f.to_json()))
                reason, text = prior.reasons.get(old, ("", "")) if old else ("", "")
                if f.interrupt and (old is None or not reason):
                    refused.append(c.line.drug.name(_zh(request)))
                elif old is not None:
                    overrides.append((old, reason or None, text or None))
        if refused:
            # shown again, recorded, so the doctor can override what blocks (reasons given are kept)
            checked = check_lines(request, ctx, patient_id, encounter, lines, prior)
            raise Conflict(_tr(request, N_("%(drugs)s: an alert stops the prescription. Remove the drug, or "
                                           "choose a reason to go ahead despite the alert."),
                               drugs="、".join(dict.fromkeys(refused))))
        for fid, reason, text in overrides:
            ms.override(ctx, fid, reason, text, channel="web")
        refs = _write(request, ctx, drafts, [seen[ln.id] if not unseen else c.result.check_id if c.result else ""
                                             for ln, c in zip(lines, fresh, strict=True)])
        reviewed = _prereview(request, ctx, patient_id, encounter, refs)
    except HealthLinkError as exc:
        _fail(exc)
        if _hx(request):  # the message by the buttons; the alerts again when the check refused
            return render(request, "_medsafety_sign_error.html", status=exc.status, ctx=ctx, error=exc.message,
                          checked=checked, oob=True, **_values(request, ctx, patient_id))
        return _page(request, ctx, patient_id, encounter=encounter, lines=lines, checked=checked,
                     error=exc.message, status=exc.status)
    done = {"encounter": encounter, "done": "signed"}
    if reviewed:
        done["prereview"] = reviewed
    target = f"/patients/{quote(patient_id, safe='')}/prescriptions?{urlencode(done)}"
    if _hx(request):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def _write(request: Request, ctx: RequestContext, drafts: list[dict], checks: list[str]) -> list[str]:
    """The signed prescriptions: active orders of the doctor, written through their repository,
    each naming the (recorded) check the doctor saw."""
    repo = request.app.state.platform.repository(ctx)
    now = datetime.now(UTC).astimezone().isoformat(timespec="seconds")
    requester: dict[str, str] = {"display": ctx.actor.display}
    if ctx.actor.practitioner_id:
        requester["reference"] = f"Practitioner/{ctx.actor.practitioner_id}"
    refs = []
    for body, check_id in zip(drafts, checks, strict=True):
        body = {**body, "status": "active", "authoredOn": now, "requester": requester}
        if check_id:
            body["identifier"] = [{"system": CHECK_SYSTEM, "value": check_id}]
        refs.append(f"MedicationRequest/{repo.create(body, res_type='MedicationRequest').stored.res_id}")
    return refs


def _prereviewer(request: Request, ctx: RequestContext):
    """``platform.prereview`` when the doctor's institution sends its prescriptions to the regional
    pre-review centre (issue 8, item 3; docs/prereview.md), else None."""
    pre = getattr(request.app.state.platform, "prereview", None)
    if pre is None or not pre.required_for(ctx.actor.institution_id):
        return None
    return pre


def _prereview(request: Request, ctx: RequestContext, patient_id: str, encounter: str,
               refs: list[str]) -> str | None:
    """Submit what was signed, as one prescription, to pre-review; its status (``auto-passed``,
    ``pending``)."""
    pre = _prereviewer(request, ctx)
    if pre is None:
        return None
    try:
        view = pre.submit(ctx, patient_id, [{"reference": r} for r in refs], encounter_id=encounter)
    except HealthLinkError as exc:  # signed already: say that it did not reach the centre
        if exc.status >= 500:
            raise
        log.warning("signed prescription not submitted to pre-review: %s", exc.message)
        return "not-submitted"
    return str(view.get("status") or "") or None


__all__ = ["may_prescribe", "router"]
