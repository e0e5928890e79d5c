"""The demo logins: staff logins for every role (with their Practitioner and
PractitionerRole) and one hospital-system client, at institutions of the generated
region's directory (:mod:`healthlink.demogen`, which writes the directory and then calls
:func:`seed`; ``healthlink serve --demo`` and ``healthlink demo``).  Also the Organization
shape the directory uses.  Idempotent: running it again changes nothing."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from healthlink.accounts import add_client, add_user
from healthlink.db import tables as t
from healthlink.errors import NotFound
from healthlink.runtime import Platform

TIER = "https://healthlink.example.org/fhir/CodeSystem/institution-tier"
REFERRAL_PARENT = "https://healthlink.example.org/fhir/StructureDefinition/referral-parent"
DEMO_PASSWORD = "demo-password-1"  # demo only; printed by `healthlink serve --demo`

DEMO_CLIENT = "his-yushu-peoples"


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
            # the dashboard's institution view at a consortium's lead hospital (issue 10)
            DemoLogin("manager", "institution_manager", b),
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
    """Add the demo logins, their Practitioners and the demo client that are missing (a
    seed cut short is finished); returns False if all were there.  The logins'
    institutions and departments must exist: :func:`healthlink.demogen.seed_demo` writes
    the region's directory first."""
    logins = demo_logins()
    with platform.db.read() as conn:
        have = set(conn.execute(select(t.user_account.c.username)
                                .where(t.user_account.c.username.in_([lg.username for lg in logins]))).scalars())
        client = conn.execute(select(t.oauth_client.c.client_id)
                              .where(t.oauth_client.c.client_id == DEMO_CLIENT)).first() is not None
        needed = {o for lg in logins if lg.institution for o in (lg.institution, f"{lg.institution}-internal")}
        orgs = set(conn.execute(select(t.resource.c.res_id).where(
            t.resource.c.res_type == "Organization", t.resource.c.res_id.in_(sorted(needed)),
            t.resource.c.deleted.is_(False))).scalars())
    missing = [lg for lg in logins if lg.username not in have]
    if not missing and client:
        return False
    if needed - orgs:
        raise NotFound(f"the demo logins' institutions are not in the directory: {', '.join(sorted(needed - orgs))} "
                       "(load the demo region's directory first: `healthlink demo`)")
    repo = platform.system_repository("demo")
    with platform.db.write() as conn:
        for login in missing:
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
    for login in missing:
        pid = f"demo-{login.username.replace('.', '-')}"
        add_user(platform.db, username=login.username, password=DEMO_PASSWORD,
                 display_name=f"Demo {login.role} ({login.username})", roles=[login.role],
                 institution_id=login.institution,
                 department_id=f"{login.institution}-internal" if login.institution else None,
                 practitioner_id=pid)
    if not client:
        add_client(platform.db, client_id=DEMO_CLIENT, display_name="Yushu People's Hospital HIS",
                   institution_id="yushu-peoples", secret="demo-client-secret-1")
    return True


DEMO_PATIENT_PHONE = "13800000001"  # demo only; its codes are on the /phone page


@dataclass(frozen=True)
class DemoPatient:
    person_id: str
    patient_id: str  # the Patient at the demo doctor's institution
    encounter_id: str  # an open Encounter there, for a consultation
    institutions: int  # how many institutions hold records of the Person
    phone: str


def demo_patient(platform: Platform) -> DemoPatient | None:
    """A patient to try patient-authorised access with (issue 5): a Person of the generated region
    with records at the demo doctor's hospital and at least one other institution, given the
    verified phone :data:`DEMO_PATIENT_PHONE` (set in person by the demo clerk, as a registration desk
    would) and an open Encounter at the doctor's hospital.  Idempotent; None when the region has no
    such Person (a tiny region)."""
    from sqlalchemy import func

    from healthlink.access import RequestContext
    from healthlink.access.context import Actor
    from healthlink.access.scopes import parse_scopes

    home = demo_logins()[0].institution
    pl, pp, r = t.person_link, t.person_phone, t.resource
    with platform.db.read() as conn:
        person = conn.execute(select(pp.c.person_id).where(pp.c.phone == DEMO_PATIENT_PHONE)).scalar()
        if person is None:
            multi = (select(pl.c.person_id).group_by(pl.c.person_id)
                     .having(func.count(func.distinct(pl.c.institution_id)) >= 2))
            candidates = conn.execute(
                select(pl.c.person_id).where(pl.c.institution_id == home, pl.c.person_id.in_(multi),
                                             pl.c.person_id.not_in(select(pp.c.person_id)))
                .order_by(pl.c.person_id).limit(500)).scalars().all()
            # prefer a Person also known at a hospital qualified for every item, so the demo shows
            # mutual recognition (issue 7; the region's qualifications are seeded with the logins)
            everything = {q.institution_id for q in platform.recognition.qualifications()
                          if q.item_id == "*" and q.valid_to is None} - {home}
            elsewhere = set(conn.execute(select(pl.c.person_id).where(
                pl.c.person_id.in_(candidates), pl.c.institution_id.in_(sorted(everything)))).scalars()) \
                if candidates and everything else set()
            person = next((c for c in candidates if c in elsewhere), candidates[0] if candidates else None)
        if person is None:
            return None
        patient = conn.execute(select(pl.c.patient_id).where(pl.c.person_id == person, pl.c.institution_id == home)
                               .order_by(pl.c.patient_id).limit(1)).scalar()
        n = conn.execute(select(func.count(func.distinct(pl.c.institution_id))).where(pl.c.person_id == person)).scalar()
        encounters = conn.execute(select(r.c.res_id, r.c.content).where(
            r.c.res_type == "Encounter", r.c.patient_id == patient, r.c.deleted.is_(False))).all()
        clerk = conn.execute(select(t.user_account.c.username).where(t.user_account.c.username == "clerk")).scalar()
    import orjson

    open_enc = next((e for e, c in encounters if orjson.loads(c).get("status") == "in-progress"), None)
    if clerk is not None and platform.patient_accounts.verified_phone(platform.db, person) is None:
        desk = Actor("user", "clerk", "clerk", home, frozenset({"registration_clerk"}), parse_scopes("user/*.cruds"))
        platform.patient_accounts.verify_in_person(platform.db, desk, person, DEMO_PATIENT_PHONE)
    if open_enc is None:
        doctor = Actor("user", "doctor", "doctor", home, frozenset({"doctor"}), parse_scopes("user/*.cruds"))
        open_enc = platform.repository(RequestContext(actor=doctor)).create({
            "resourceType": "Encounter", "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB",
                      "display": "ambulatory"},
            "subject": {"reference": f"Patient/{patient}"},
            "serviceProvider": {"reference": f"Organization/{home}"}}, res_type="Encounter").stored.res_id
    return DemoPatient(person, patient, open_enc, n, DEMO_PATIENT_PHONE)
