"""A small demo region for the embedded default: institutions of each tier with
departments, staff logins for every role, one hospital-system client and a few patients.
(The prefecture-scale generator comes with its own issue.)  Idempotent: running it
again changes nothing."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from healthlink.accounts import add_client, add_user
from healthlink.db import tables as t
from healthlink.runtime import Platform

TIER = "https://healthlink.example.org/fhir/CodeSystem/institution-tier"
REFERRAL_PARENT = "https://healthlink.example.org/fhir/StructureDefinition/referral-parent"
DEMO_PASSWORD = "demo-password-1"  # demo only; printed by `healthlink serve --demo`

INSTITUTIONS = [
    # id, name, tier, referral parent
    ("yushu-peoples", "玉树州人民医院 Yushu Prefecture People's Hospital", "prefecture", None),
    ("yushu-tibetan", "玉树州藏医院 Yushu Prefecture Tibetan Medicine Hospital", "prefecture", None),
    ("chenduo-county", "称多县人民医院 Chenduo County People's Hospital", "county", "yushu-peoples"),
    ("zhenqin-township", "珍秦镇卫生院 Zhenqin Township Health Centre", "township", "chenduo-county"),
]
DEPARTMENTS = [("internal", "内科 Internal medicine"), ("lab", "检验科 Laboratory"),
               ("pharmacy", "药剂科 Pharmacy")]


@dataclass(frozen=True)
class DemoLogin:
    username: str
    role: str
    institution: str | None


def demo_logins() -> list[DemoLogin]:
    a, b = "yushu-peoples", "chenduo-county"
    return [DemoLogin("doctor", "doctor", a), DemoLogin("doctor.b", "doctor", b),
            DemoLogin("nurse", "nurse", a), DemoLogin("pharmacist", "pharmacist", a),
            DemoLogin("clerk", "registration_clerk", a), DemoLogin("empi", "empi_reviewer", a),
            DemoLogin("quality", "quality_manager", a), DemoLogin("president", "institution_manager", a),
            DemoLogin("leader", "health_commission_leader", None),
            DemoLogin("sysadmin", "system_admin", None), DemoLogin("secadmin", "security_admin", None),
            DemoLogin("auditor", "audit_admin", None)]


def organization(org_id: str, name: str, tier: str, parent: str | None) -> dict:
    org: dict = {"resourceType": "Organization", "id": org_id, "active": True, "name": name,
                 "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type",
                                       "code": "prov", "display": "Healthcare Provider"}]},
                          {"coding": [{"system": TIER, "code": tier}]}],
                 "address": [{"state": "青海省", "city": "玉树藏族自治州", "country": "CN"}]}
    if parent:
        org["extension"] = [{"url": REFERRAL_PARENT, "valueReference": {"reference": f"Organization/{parent}"}}]
    return org


def seed(platform: Platform) -> bool:
    """Seed the demo region; returns False if it was already there."""
    with platform.db.read() as conn:
        if conn.execute(select(t.user_account.c.id).where(t.user_account.c.username == "doctor")).first():
            return False
    repo = platform.system_repository("demo")
    with platform.db.write() as conn:
        for org_id, name, tier, parent in INSTITUTIONS:
            repo.update_in(conn, "Organization", org_id, organization(org_id, name, tier, parent), if_match=None)
            for dep, dname in DEPARTMENTS:
                did = f"{org_id}-{dep}"
                repo.update_in(conn, "Organization", did, {
                    "resourceType": "Organization", "id": did, "active": True, "name": dname,
                    "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type",
                                          "code": "dept", "display": "Hospital Department"}]}],
                    "partOf": {"reference": f"Organization/{org_id}"}}, if_match=None)
        for login in demo_logins():
            pid = f"demo-{login.username.replace('.', '-')}"
            repo.update_in(conn, "Practitioner", pid, {
                "resourceType": "Practitioner", "id": pid, "active": True,
                "name": [{"text": f"Demo {login.role.replace('_', ' ')} ({login.username})"}]}, if_match=None)
            if login.institution:
                repo.update_in(conn, "PractitionerRole", f"{pid}-role", {
                    "resourceType": "PractitionerRole", "id": f"{pid}-role", "active": True,
                    "practitioner": {"reference": f"Practitioner/{pid}"},
                    "organization": {"reference": f"Organization/{login.institution}"},
                    "code": [{"coding": [{"system": "https://healthlink.example.org/fhir/CodeSystem/role",
                                          "code": login.role}]}]}, if_match=None)
    for login in demo_logins():
        pid = f"demo-{login.username.replace('.', '-')}"
        add_user(platform.db, username=login.username, password=DEMO_PASSWORD,
                 display_name=f"Demo {login.role} ({login.username})", roles=[login.role],
                 institution_id=login.institution,
                 department_id=f"{login.institution}-internal" if login.institution else None,
                 practitioner_id=pid)
    add_client(platform.db, client_id="his-yushu-peoples", display_name="Yushu People's Hospital HIS",
               institution_id="yushu-peoples", secret="demo-client-secret-1")
    return True
