"""View models of the pages, read through the actor's repository (so the access rules and
the audit trail apply to every page exactly as to the FHIR API)."""

from __future__ import annotations

from dataclasses import dataclass, field

from healthlink.access import Repository
from healthlink.access import roles as R
from healthlink.demo import REFERRAL_PARENT, TIER
from healthlink.errors import Forbidden
from healthlink.fhir.store import Stored
from healthlink.web.i18n import N_
from healthlink.web.session import RECOGNITION_RATES_ROLES

RECENT = 10  # rows per section of the patient summary
DIRECTORY_PAGE = 500  # Organizations per search page of the directory
# FHIR administrative-gender codes, translated where they are shown
GENDERS = (N_("male"), N_("female"), N_("other"), N_("unknown"))


# ------------------------------------------------------------------ home
@dataclass(frozen=True)
class Card:
    path: str | None
    title: str
    text: str


def home_cards(roles: frozenset[str]) -> list[Card]:
    """What the actor's roles let them do here, worded for the home page."""
    cards = []
    if R.allowed(roles, "Patient", "s"):
        own = not any(R.ROLES[r].scope == "region" for r in roles if r in R.ROLES)
        cards.append(Card("/patients", N_("Find a patient"),
                          N_("Search patients of your institution by name, identifier or birth date "
                             "and open a read-only summary.") if own else
                          N_("Search patients of every institution in the region (demographics only).")))
    if R.allowed(roles, "Observation", "c"):
        cards.append(Card(None, N_("Record clinical data"),
                          N_("Your hospital system records observations and orders through the FHIR API.")))
    if R.allowed(roles, "Patient", "c") or "system_admin" in roles:
        cards.append(Card("/uploads", N_("Uploads"), N_("See the reports of bulk uploads.")))
    if R.may_review_identity(roles):
        cards.append(Card("/review", N_("EMPI review"),
                          N_("Decide possible duplicate persons: link, keep apart, merge, unmerge, undo.")))
    if "quality_manager" in roles:
        cards.append(Card("/review/break-glass", N_("Break-the-glass review"),
                          N_("Review emergency accesses to other institutions' records opened without "
                             "the patient's authorisation.")))
    if roles & RECOGNITION_RATES_ROLES:
        cards.append(Card("/recognition/rates", N_("Recognition rates"),
                          N_("Mutual recognition of results: retrieval and recognition rates, savings and "
                             "the reasons for testing again, by institution, department, item, tier and month.")))
    if "registration_clerk" in roles:
        cards.append(Card("/desk/consents", N_("Consent at the desk"),
                          N_("Record the signed consent of a patient without a phone to a doctor's "
                             "request for their records at other institutions.")))
    if "audit_admin" in roles:
        cards.append(Card("/audit", N_("Audit log"),
                          N_("Search who accessed which record, by patient, actor, time and outcome; "
                             "each record with its proof in the ledger.")))
        cards.append(Card("/ledger", N_("Tamper-evident ledger"),
                          N_("The ledger's size, signed checkpoints, witnesses and last verification; "
                             "verify it now.")))
    elif R.allowed(roles, "AuditEvent", "s"):
        cards.append(Card(None, N_("Audit log"),
                          N_("Read who accessed which record, through the FHIR AuditEvent API.")))
    if not R.allowed(roles, "Patient", "r"):
        cards.append(Card(None, N_("No patient data"),
                          N_("Your role works from aggregates and reference data; it does not open "
                             "patient records.")))
    cards.append(Card("/institutions", N_("Institution directory"),
                      N_("The region's hospitals and health centres by tier and referral hierarchy.")))
    return cards


# ------------------------------------------------------------------ institutions
@dataclass
class Institution:
    id: str
    name: str
    tier: str
    parent: str | None
    children: list[Institution] = field(default_factory=list)


TIERS = {"prefecture": N_("Prefecture hospital"), "county": N_("County hospital"),
         "township": N_("Township health centre")}


def institution_tree(repo: Repository) -> list[Institution]:
    """Organizations with a tier coding, as a forest along the referral-parent extension."""
    params = [("type", f"{TIER}|"), ("_count", str(DIRECTORY_PAGE)), ("_sort", "_id")]
    matches: list[Stored] = []
    while True:  # every page: a province has a few thousand institutions, not more
        page = repo.search("Organization", params)
        matches += page.matches
        if not page.next_cursor:
            break
        params = [p for p in params if p[0] != "_cursor"] + [("_cursor", page.next_cursor)]
    found: dict[str, Institution] = {}
    for s in matches:
        org = s.json()
        tier = next((c.get("code") for ty in org.get("type", []) for c in ty.get("coding", [])
                     if c.get("system") == TIER), None)
        if tier is None:
            continue  # departments and other organizations
        parent = next((e.get("valueReference", {}).get("reference", "").removeprefix("Organization/")
                       for e in org.get("extension", []) if e.get("url") == REFERRAL_PARENT), None)
        found[s.res_id] = Institution(s.res_id, org.get("name", s.res_id), tier, parent or None)
    roots = []
    order = {"prefecture": 0, "county": 1, "township": 2}
    for inst in sorted(found.values(), key=lambda i: (order.get(i.tier, 9), i.name)):
        if inst.parent in found:
            found[inst.parent].children.append(inst)
        else:
            roots.append(inst)
    return roots


# ------------------------------------------------------------------ patients
@dataclass(frozen=True)
class PatientRow:
    id: str
    name: str
    gender: str
    birth_date: str
    identifiers: list[str]


def human_name(p: dict) -> str:
    for n in p.get("name", []):
        if n.get("text"):
            return n["text"]
        parts = [n.get("family", "")] + n.get("given", [])
        if any(parts):
            return " ".join(x for x in parts if x)
    return "—"


def patient_row(s: Stored) -> PatientRow:
    p = s.json()
    return PatientRow(s.res_id, human_name(p), p.get("gender", ""), p.get("birthDate", ""),
                      [i.get("value", "") for i in p.get("identifier", []) if i.get("value")])


def find_patients(repo: Repository, criteria: dict[str, str]) -> list[PatientRow]:
    params = [(k, v) for k, v in criteria.items() if v] + [("_count", "50")]
    return [patient_row(s) for s in repo.search("Patient", params).matches]


def concept(c: dict | None) -> str:
    if not c:
        return "—"
    if c.get("text"):
        return c["text"]
    for cd in c.get("coding", []):
        if cd.get("display") or cd.get("code"):
            return cd.get("display") or cd["code"]
    return "—"


def _value(o: dict) -> str:
    q = o.get("valueQuantity")
    if q:
        return f"{q.get('value', '')} {q.get('unit') or q.get('code') or ''}".strip()
    for key in ("valueString", "valueInteger", "valueBoolean", "valueDateTime"):
        if key in o:
            return str(o[key])
    if "valueCodeableConcept" in o:
        return concept(o["valueCodeableConcept"])
    return "—"


@dataclass
class Summary:
    patient: PatientRow
    # None: the actor's role does not read that type
    observations: list[dict] | None
    conditions: list[dict] | None
    medications: list[dict] | None
    allergies: list[dict] | None


def _recent(repo: Repository, res_type: str, patient_id: str, sort: str) -> list[dict] | None:
    """The latest entries of one section; None when the actor's role does not read that type
    (a registration clerk sees demographics only): the repository's refusal, shown as such."""
    try:
        page = repo.search(res_type, [("patient", f"Patient/{patient_id}"), ("_sort", sort),
                                      ("_count", str(RECENT))])
    except Forbidden:
        return None
    return [s.json() for s in page.matches]


def _observation(o: dict) -> dict:
    return {"when": (o.get("effectiveDateTime") or o.get("issued") or "")[:16].replace("T", " "),
            "what": concept(o.get("code")), "value": _value(o),
            "flag": ", ".join(concept(i) for i in o.get("interpretation", []))}


def _condition(c: dict) -> dict:
    return {"what": concept(c.get("code")), "status": concept(c.get("clinicalStatus")),
            "when": (c.get("onsetDateTime") or c.get("recordedDate") or "")[:10]}


def _medication(m: dict) -> dict:
    return {"what": concept(m.get("medicationCodeableConcept")), "status": m.get("status", ""),
            "dose": "; ".join(d["text"] for d in m.get("dosageInstruction", []) if d.get("text")),
            "when": (m.get("authoredOn") or "")[:10]}


def _allergy(a: dict) -> dict:
    return {"what": concept(a.get("code")), "criticality": a.get("criticality", ""),
            "reaction": ", ".join(concept(m) for r in a.get("reaction", [])
                                  for m in r.get("manifestation", []))}


def _section(repo: Repository, res_type: str, patient_id: str, sort: str, row) -> list[dict] | None:
    found = _recent(repo, res_type, patient_id, sort)
    return None if found is None else [row(r) for r in found]


def patient_summary(repo: Repository, patient_id: str) -> Summary:
    """A read-only summary; a patient the actor may not see is 404 (and audited)."""
    p = patient_row(repo.read("Patient", patient_id))
    return Summary(p,
                   observations=_section(repo, "Observation", patient_id, "-date", _observation),
                   conditions=_section(repo, "Condition", patient_id, "-_lastUpdated", _condition),
                   medications=_section(repo, "MedicationRequest", patient_id, "-_lastUpdated", _medication),
                   allergies=_section(repo, "AllergyIntolerance", patient_id, "-_lastUpdated", _allergy))
