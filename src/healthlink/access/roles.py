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

from healthlink.fhir.definitions import patient_compartment

AUDIT_TYPES = frozenset({"AuditEvent"})


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
         scope="region",
         basis="Resolves possible duplicate persons across institutions: demographics only."),
    Role("quality_manager", "Quality manager", "质控管理员", {"patient": "rs", "directory": "rs"},
         basis="Reviews records of own institution for quality control (病历质控)."),
    Role("institution_manager", "Institution manager (president)", "院长/机构管理者",
         {"directory": "rs"},
         basis="Runs the institution from aggregates; no patient-level data."),
    Role("health_commission_leader", "Health-commission leader", "卫健委领导", {"directory": "rs"},
         basis="Oversees the region from aggregates; no patient-level data."),
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
    Role("system", "The platform itself", "平台", {"patient": "cruds", "directory": "cruds",
                                                  "audit": "rs"}, scope="region",
         basis="Jobs, migrations and demo seeding run by the platform."),
]}

STAFF_ROLES = tuple(c for c in ROLES if c not in ("his_client", "system"))


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
