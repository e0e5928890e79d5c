"""The role table: what each staff role may do, on which data, and why.

Data classes:

* ``patient``   resources in a Patient's compartment, Patient and Person (clinical data);
* ``directory`` Organization, Practitioner, Location, Medication and other non-patient
                resources (shared across the region, readable by all staff);
* ``audit``     AuditEvent (the access log).

Operations are SMART letters: c create, r read/vread/history, u update, d delete, s search.
Staff act on their own institution's patient data; other institutions' data needs a
patient grant (a later issue).  docs/roles.md is generated from this table and checked by
a test.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from healthlink.fhir.definitions import patient_compartment

AUDIT_TYPES = frozenset({"AuditEvent"})


@cache
def patient_types() -> frozenset[str]:
    return frozenset(patient_compartment()) | {"Patient", "Person"}


def data_class(res_type: str) -> str:
    if res_type in AUDIT_TYPES:
        return "audit"
    if res_type in patient_types():
        return "patient"
    return "directory"


@dataclass(frozen=True)
class Role:
    code: str
    title: str
    title_zh: str
    # data class -> ops; "patient" may be narrowed by type via `patient_types_rw`
    ops: dict[str, str]
    write_types: frozenset[str] | None = None  # patient types it may c/u/d (None = all)
    read_types: frozenset[str] | None = None  # patient types it may r/s (None = all)
    scope: str = "institution"  # whose patient data: own institution, or "region" for its types
    basis: str = ""
    # reads and completes the platform's possible-duplicate Tasks and links, keeps apart, merges,
    # unmerges and undoes (the EMPI review queue, healthlink.identity.review); no other Task
    empi_review: bool = False
    # the regional prescription pre-review centre (issue 8; healthlink.medsafety.prereview): the
    # prescriptions submitted to the centre and, of their patients only, the data the checks need
    prereview: bool = False
    # the leaders' dashboard (issue 10; healthlink.dashboard): "region" (every institution) or
    # "institution" (own institution and, for a county medical consortium's lead hospital, its
    # consortium); aggregates only, never a patient's data
    dashboard: str = ""


_NURSE_WRITES = frozenset({"Observation", "MedicationAdministration", "Encounter", "Procedure",
                           "Specimen", "Flag", "Task", "AllergyIntolerance"})
_PHARM_WRITES = frozenset({"MedicationDispense", "MedicationRequest", "DetectedIssue",
                           "Task", "AllergyIntolerance", "Communication"})
_REG_TYPES = frozenset({"Patient", "Encounter", "Coverage", "Appointment", "RelatedPerson",
                        "Account", "Flag"})

ROLES: dict[str, Role] = {r.code: r for r in [
    Role("doctor", "Doctor", "医生", {"patient": "cruds", "directory": "rs"},
         basis="Treats the patient: reads and writes the clinical record at own institution "
               "(执业医师, 病历书写基本规范)."),
    Role("nurse", "Nurse", "护士", {"patient": "crus", "directory": "rs"}, write_types=_NURSE_WRITES,
         basis="Carries out orders and records observations and administrations; "
               "does not prescribe or diagnose."),
    Role("pharmacist", "Pharmacist", "药师", {"patient": "crus", "directory": "rs"},
         write_types=_PHARM_WRITES,
         basis="Reviews and dispenses prescriptions (处方管理办法; 医疗机构处方审核规范 2018)."),
    Role("registration_clerk", "Registration clerk", "挂号/登记员", {"patient": "crus", "directory": "rs"},
         write_types=_REG_TYPES, read_types=_REG_TYPES,
         basis="Registers patients and visits; needs demographics, not clinical content."),
    Role("empi_reviewer", "EMPI reviewer", "主索引审核员", {"patient": "rus", "directory": "rs"},
         write_types=frozenset({"Person"}), read_types=frozenset({"Patient", "Person"}),
         scope="region", empi_review=True,
         basis="Resolves possible duplicate persons across institutions: demographics only; reads "
               "and completes the platform's possible-duplicate Tasks (the review queue), no other Task."),
    Role("prereview_pharmacist", "Regional pre-review pharmacist", "区域处方审核中心药师", {"directory": "rs"},
         scope="region", prereview=True,
         basis="Reviews the prescriptions that institutions configured for pre-review submit to the "
               "regional centre (医疗机构处方审核规范 2018: pharmacists review every prescription "
               "before dispensing): sees those prescriptions and, of their patients only, the data "
               "the review needs (the Patient, active medications, allergies, weight and renal "
               "results) through the pre-review service, every access audited; no FHIR access to "
               "patient data, no other patients."),
    Role("quality_manager", "Quality manager", "质控管理员", {"patient": "rs", "directory": "rs"},
         basis="Reviews records of own institution for quality control (病历质控)."),
    Role("institution_manager", "Institution manager (president)", "院长/机构管理者",
         {"directory": "rs"}, dashboard="institution",
         basis="Runs the institution from aggregates; no patient-level data. The dashboard shows "
               "own institution and, at a county medical consortium's lead hospital, the consortium."),
    Role("health_commission_leader", "Health-commission leader", "卫健委领导", {"directory": "rs"},
         dashboard="region",
         basis="Oversees the region from aggregates; no patient-level data. The dashboard shows every "
               "institution, down to departments, as counts only."),
    Role("system_admin", "System administrator", "系统管理员", {"directory": "cruds"},
         scope="region",
         basis="MLPS level 3 三权分立: runs the system and its reference data; no clinical "
               "data, no audit records."),
    Role("security_admin", "Security administrator", "安全管理员", {"directory": "rs"},
         basis="MLPS level 3 三权分立: manages accounts, roles and keys; no clinical data, "
               "no audit records."),
    Role("audit_admin", "Audit administrator", "审计管理员", {"audit": "rs", "directory": "rs"},
         scope="region",
         basis="MLPS level 3 三权分立: the only role that reads audit records (GB/T 22239-2019 "
               "8.1.4.3, 安全管理中心 审计管理)."),
    Role("his_client", "Hospital information system (machine client)", "医院信息系统(机器客户端)",
         {"patient": "cruds", "directory": "cruds"},
         basis="A member institution's HIS uploading and reading its own institution's data."),
    Role("patient", "Patient (portal)", "患者(门户)", {"patient": "rs", "directory": "rs"}, scope="person",
         basis="Reads their own records, and those of the Persons they are guardian of, from every "
               "institution (issue 5); writes nothing clinical."),
    Role("system", "The platform itself", "平台", {"patient": "cruds", "directory": "cruds",
                                                  "audit": "rs"}, scope="region", empi_review=True,
         basis="Jobs, migrations and demo seeding run by the platform."),
]}

STAFF_ROLES = tuple(c for c in ROLES if c not in ("his_client", "system", "patient"))


def allowed(roles: frozenset[str], res_type: str, op: str) -> bool:
    """Does any of the roles allow ``op`` on ``res_type`` (before institution checks)?"""
    cls = data_class(res_type)
    for code in roles:
        role = ROLES.get(code)
        if role is None or op not in role.ops.get(cls, ""):
            continue
        if cls == "patient":
            limit = role.write_types if op in "cud" else role.read_types
            if limit is not None and res_type not in limit:
                continue
        return True
    return False


def may_review_identity(roles: frozenset[str]) -> bool:
    """May the roles use the EMPI review queue and its actions (link, keep apart, merge,
    unmerge, undo) on the platform's possible-duplicate Tasks?"""
    return any(ROLES[c].empi_review for c in roles if c in ROLES)


def may_prereview(roles: frozenset[str]) -> bool:
    """May the roles work the regional pre-review centre's queue (and read, of the patients of
    submitted prescriptions only, what the review needs)?"""
    return any(ROLES[c].prereview for c in roles if c in ROLES)


def dashboard_view(roles: frozenset[str]) -> str:
    """The widest dashboard view the roles give: "region", "institution" or "" (none)."""
    views = {ROLES[c].dashboard for c in roles if c in ROLES}
    return "region" if "region" in views else "institution" if "institution" in views else ""


def region_wide(roles: frozenset[str], res_type: str, op: str) -> bool:
    """Does a role grant ``op`` on ``res_type`` across all institutions?"""
    cls = data_class(res_type)
    for code in roles:
        role = ROLES.get(code)
        if role is None or role.scope != "region" or op not in role.ops.get(cls, ""):
            continue
        if cls == "patient":
            limit = role.write_types if op in "cud" else role.read_types
            if limit is not None and res_type not in limit:
                continue
        return True
    return False


# ------------------------------------------------------------------ docs/roles.md
_OP_WORDS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}

_AUDITED = """\
## What is audited

Every record is a FHIR R4 `AuditEvent` (IHE Basic Audit Log Patterns fields) in the append-only
`audit_event` table. It carries: **when** (`recorded`, UTC, microseconds); **who** (`agent.who`:
`Practitioner/<id>` for staff, `Device/<client id>` for a hospital system, with the username as
`display`, and `agent.role`: the roles held); **from which institution** (`agent.location`,
`source.site`); **from which network address** (`agent.network.address`); the **request id**
(extension `request-id`, the `X-Request-Id` the response carried); **why** (`purposeOfEvent`:
`TREAT` for clinical requests, `HOPERAT` for logins and operations); **what** (`subtype`: the
FHIR interaction or platform event, `action` C/R/U/D/E, and `entity`: every patient concerned
with role *Patient*, every resource touched as `Type/id`, and a search's query text); and the
**outcome** (`0` success, `4` refused or invalid request, `8` server-side failure, with
`outcomeDesc` giving the HTTP status and reason).

Recorded:

* every request on **patient data** (the types of the *patient* class above): `read`, `vread`,
  `history-instance`, `history-type`, `search-type` (naming every patient on the returned page,
  matches and `_include`/`_revinclude` alike), `everything` (`Patient/$everything`), `create`,
  `update`, `delete`, `transaction` (one record per Bundle) and `batch` (one per entry), whether
  it succeeded, was refused (403), asked for something the actor may not see (404), or failed;
* every request on **audit data**: searches and reads of `AuditEvent` by the audit administrator
  (reading the log is itself logged) and every refused attempt by anyone else;
* every **staff login** (success and failure, including unknown usernames and locked accounts)
  and every **client-credentials token request** (success and failure).

Not recorded: requests without valid credentials (answered 401 before any data is touched);
request bodies refused as malformed or invalid FHIR (400) before any stored data is looked at;
logins asking for a malformed or non-`user/` scope (400); single reads and writes of directory
data; `/fhir/metadata`, `/api/me`, `/healthz` and `/metrics`.

Guarantees: a write and its record are one database transaction, so no change is made without
its record (if the record cannot be written the client gets 503 and nothing is changed). A
read's record is committed (group commit, ADR 0004) before any data is sent; if it cannot be,
the client gets 503 and no data. No route changes or deletes an audit record (`POST`, `PUT`,
`PATCH`, `DELETE` on `AuditEvent` answer 405), the platform never deletes them, and only the
audit administrator can read them.
"""


def _words(ops: str) -> str:
    return ", ".join(_OP_WORDS[o] for o in "crsud" if o in ops)


def _ops_text(role: Role, cls: str) -> str:
    ops = role.ops.get(cls, "")
    if not ops:
        return "—"
    if cls != "patient" or (role.read_types is None and role.write_types is None):
        return _words(ops)
    parts = []
    for subset, types in (("rs", role.read_types), ("cud", role.write_types)):
        mine = "".join(o for o in ops if o in subset)
        if mine:
            parts.append(f"{_words(mine)}: " + ("all types" if types is None else ", ".join(sorted(types))))
    return "; ".join(parts)


def _scope_text(role: Role) -> str:
    if role.prereview:
        return "patients of prescriptions submitted to pre-review (through the pre-review service)"
    if "patient" not in role.ops:
        return "no patient data"
    if role.scope == "person":
        return "own Persons (every institution)"
    return "all institutions (region)" if role.scope == "region" else "own institution"


_DASHBOARD_TEXT = {"": "—", "region": "whole region", "institution": "own institution (and consortium if lead)"}


def render_markdown() -> str:
    """docs/roles.md, generated from :data:`ROLES` (a test keeps the file equal to this)."""
    lines = [
        "# Roles",
        "",
        "<!-- Generated from src/healthlink/access/roles.py by "
        "healthlink.access.roles.render_markdown(); do not edit by hand. -->",
        "",
        "What an actor may do is what its roles allow, narrowed by the SMART v2 scopes of its "
        "access token (scopes never widen a role). Data falls into three classes:",
        "",
        "* **patient** — Patient, Person and every type in the Patient compartment "
        f"({len(patient_types())} types, e.g. Observation, Encounter, MedicationRequest);",
        "* **directory** — Organization, Practitioner, Location, Medication and every other "
        "non-patient type, shared across the region;",
        "* **audit** — AuditEvent, the access log (read-only for everyone).",
        "",
        "Patient data of another institution is not visible to an institution-scoped role: reading "
        "its id answers 404 (its existence is not revealed), searches, `_include`, `_revinclude`, "
        "chains, history and `$everything` leave it out, and no resource may be written into the "
        "compartment of a patient the actor cannot see (422). A missing permission for a whole "
        "type answers 403. The system, security and audit administrator roles are held separately "
        "(MLPS level 3 separation of duties): a user holding one holds no other role.",
        "",
        "A `doctor`, `nurse` or `pharmacist` also sees another institution's records of the same "
        "Person through an active grant the patient gave (or break-the-glass), limited to the data "
        "classes it names and never including a sensitive category the patient did not name "
        "(docs/consent.md). The `patient` role belongs to patient-portal sessions, never to staff.",
        "",
        "The leaders' dashboard (docs/dashboard.md) shows counts and rates, never a patient's data: "
        "`health_commission_leader` sees the whole region, `institution_manager` its own institution "
        "and, at a county medical consortium's lead hospital, the consortium's members.",
        "",
        "| role | title | 中文 | patient data of | patient data | directory data | audit data | dashboard | basis |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in ROLES.values():
        lines.append(f"| `{r.code}` | {r.title} | {r.title_zh} | {_scope_text(r)} | "
                     f"{_ops_text(r, 'patient')} | {_ops_text(r, 'directory')} | "
                     f"{_ops_text(r, 'audit')} | {_DASHBOARD_TEXT[r.dashboard]} | {r.basis} |")
    lines += [
        "",
        f"Staff accounts hold the roles {', '.join(f'`{c}`' for c in STAFF_ROLES)}. "
        "`his_client` is given to hospital systems that log in with client credentials, "
        "`system` to the platform's own jobs, `patient` to patient-portal sessions; none of them "
        "can be given to a staff user.",
        "",
        _AUDITED,
    ]
    return "\n".join(lines)
