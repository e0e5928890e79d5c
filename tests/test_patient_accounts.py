"""Patient portal accounts bound to a Person (issue 5, item 2), on the real database.

Patients are written through the repository as an institution's doctor would, so they are linked
to Persons by the master patient index; every code is read from the outbox, the patient's phone.
"""

from __future__ import annotations

import re
import uuid

import pytest
from grantkit import phone
from grantkit import resident_id as rid
from sqlalchemy import func, select

from healthlink.access import RequestContext
from healthlink.access.context import Actor
from healthlink.access.scopes import parse_scopes
from healthlink.consent import (
    ConsentCodeExpired,
    ConsentCodeLocked,
    ConsentCodeMalformed,
    ConsentCodeUsed,
    ConsentCodeWrong,
    ConsentRateLimited,
    list_messages,
)
from healthlink.consent.patients import (
    SMS_PURPOSE,
    PatientAccounts,
    PatientIdentityRefused,
)
from healthlink.db import tables as t
from healthlink.errors import Forbidden, Unauthorized
from healthlink.fhir.identifiers import RESIDENT_ID_SYSTEM
from healthlink.runtime import Platform

_CODE = re.compile(r"验证码 (\d{6})")


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


def actor(role: str, institution: str) -> Actor:
    name = f"{role}-{uuid.uuid4().hex[:8]}"
    return Actor("user", name, name, institution, frozenset({role}), parse_scopes("user/*.cruds"),
                 practitioner_id=f"prac-{uuid.uuid4().hex[:8]}")


def make_patient(platform: Platform, doctor: Actor, ident: str | None, *, telecom: str | None = None,
                 name: str = "次仁卓玛") -> str:
    body: dict = {"resourceType": "Patient", "name": [{"text": name}], "gender": "female",
                  "birthDate": f"{ident[6:10]}-{ident[10:12]}-{ident[12:14]}" if ident else "1990-01-01"}
    if ident:
        body["identifier"] = [{"system": RESIDENT_ID_SYSTEM, "value": ident}]
    if telecom:
        body["telecom"] = [{"system": "phone", "value": telecom, "use": "mobile"}]
    repo = platform.repository(RequestContext(actor=doctor))
    return repo.create(body, res_type="Patient").stored.res_id


def person_of(platform: Platform, patient_id: str) -> str:
    with platform.db.read() as conn:
        return conn.execute(select(t.person_link.c.person_id)
                            .where(t.person_link.c.patient_id == patient_id)).scalar_one()


def last_code(platform: Platform, to: str) -> str:
    msgs = [m for m in list_messages(platform.db, to) if m.purpose == SMS_PURPOSE]
    assert msgs, f"no patient code sent to {to}"
    return _CODE.search(msgs[0].text).group(1)


def sent_to(platform: Platform, to: str) -> int:
    return sum(1 for m in list_messages(platform.db, to) if m.purpose == SMS_PURPOSE)


@pytest.fixture
def org(make_institution) -> str:  # noqa: ANN001
    return make_institution()


@pytest.fixture
def accounts(platform: Platform, settings) -> PatientAccounts:  # noqa: ANN001
    """With a carrier real-name check that confirms every pair: the carrier lies outside the
    platform (without one, a first phone is only bound in person; see the test below)."""
    return PatientAccounts.from_settings(settings, platform.sms, audit=platform.audit, phone_owner_check=CARRIER)


def CARRIER(resident_id: str, phone: str) -> bool:  # noqa: N802 - a stand-in for the carrier's service
    return True


def test_without_a_carrier_check_a_first_phone_is_bound_in_person_only(platform, org):
    ident, number = rid(), phone()
    make_patient(platform, actor("doctor", org), ident)
    with pytest.raises(PatientIdentityRefused) as e:  # the platform as configured: no carrier check
        platform.patient_accounts.start_signup(platform.db, ident, number)
    assert e.value.reason == "not-possible" and sent_to(platform, number) == 0


@pytest.fixture
def clocked(platform: Platform, settings) -> tuple[PatientAccounts, Clock]:  # noqa: ANN001
    clock = Clock()
    return (PatientAccounts.from_settings(settings, platform.sms, audit=platform.audit, phone_owner_check=CARRIER,
                                          clock=clock), clock)


def signed_up(platform: Platform, accounts: PatientAccounts, org: str, *, ident: str | None = None,
              number: str | None = None):  # noqa: ANN202
    ident, number = ident or rid(), number or phone()
    make_patient(platform, actor("doctor", org), ident)
    challenge = accounts.start_signup(platform.db, ident, number)
    return accounts.confirm_signup(platform.db, challenge, last_code(platform, number)), ident, number


def test_sign_up_by_resident_id_and_code_then_log_in(platform, accounts, org):
    ident, number = rid(), phone()
    pid = make_patient(platform, actor("doctor", org), ident)
    person = person_of(platform, pid)
    challenge = accounts.start_signup(platform.db, ident.lower() if ident.endswith("X") else ident, number)
    msg = list_messages(platform.db, number)[0].text
    assert "注册" in msg and "a doctor included" in msg
    account = accounts.confirm_signup(platform.db, challenge, last_code(platform, number))
    assert account.person_id == person and account.active
    phone_, _, by = accounts.verified_phone(platform.db, person)
    assert (phone_, by) == (number, "sms")
    with platform.db.read() as conn:  # only the hash is stored
        stored = conn.execute(select(t.patient_code.c.hash).where(t.patient_code.c.id == challenge)).scalar_one()
    assert last_code(platform, number) not in stored

    login = accounts.start_login(platform.db, resident_id=ident)
    session = accounts.verify_login(platform.db, login, last_code(platform, number))
    assert (session.account_id, session.person_id) == (account.id, person)
    assert accounts.session(platform.db, session.token).person_id == person
    # by phone too; and a patient token is never a staff token
    login = accounts.start_login(platform.db, phone=number)
    assert accounts.verify_login(platform.db, login, last_code(platform, number)).account_id == account.id
    with pytest.raises(Unauthorized):
        platform.accounts.actor_from_token(session.token)
    with pytest.raises(Unauthorized):
        accounts.session(platform.db, session.token[:-4] + "AAAA")
    # a second sign-up for the same Person: the same answer as an unknown resident ID, no SMS
    with pytest.raises(PatientIdentityRefused):
        accounts.start_signup(platform.db, ident, phone())


def test_wrong_malformed_used_and_expired_codes(platform, clocked, org):
    accounts, clock = clocked
    ident, number = rid(), phone()
    make_patient(platform, actor("doctor", org), ident)
    challenge = accounts.start_signup(platform.db, ident, number)
    code = last_code(platform, number)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    with pytest.raises(ConsentCodeMalformed):
        accounts.confirm_signup(platform.db, challenge, "12ab56")
    with pytest.raises(ConsentCodeWrong) as e:
        accounts.confirm_signup(platform.db, challenge, wrong)
    assert e.value.remaining == 4
    account = accounts.confirm_signup(platform.db, challenge, code)
    with pytest.raises(ConsentCodeUsed):
        accounts.confirm_signup(platform.db, challenge, code)

    login = accounts.start_login(platform.db, resident_id=ident)
    clock.now += 601
    with pytest.raises(ConsentCodeExpired):
        accounts.verify_login(platform.db, login, last_code(platform, number))
    # five wrong codes in a row lock the account, across challenges (a new code does not reset it)
    for i in range(5):
        login = accounts.start_login(platform.db, resident_id=ident) if i in (0, 3) else login
        with pytest.raises(ConsentCodeWrong):
            accounts.verify_login(platform.db, login, f"{(int(last_code(platform, number)) + 1) % 10**6:06d}")
    with pytest.raises(ConsentCodeLocked) as e:
        accounts.verify_login(platform.db, login, last_code(platform, number))
    assert e.value.reason == "account-locked"
    with pytest.raises(ConsentCodeLocked):
        accounts.start_login(platform.db, resident_id=ident)
    clock.now += 301
    # the phone's hourly limit (5 codes) has been reached by now: sign-up 1 + logins 3 = 4; one more
    login = accounts.start_login(platform.db, resident_id=ident)
    session = accounts.verify_login(platform.db, login, last_code(platform, number))
    assert session.account_id == account.id
    with pytest.raises(ConsentRateLimited):
        accounts.start_login(platform.db, resident_id=ident)


def test_unknown_and_ambiguous_resident_ids_get_the_same_answer(platform, accounts, org, make_institution):
    doctor_a, doctor_b = actor("doctor", org), actor("doctor", make_institution())
    shared = rid()
    # two Persons carrying the same valid resident ID (different names and birth dates: not linked)
    make_patient(platform, doctor_a, shared, name="扎西多吉")
    other = make_patient(platform, doctor_b, None, name="格桑拉姆")
    repo = platform.repository(RequestContext(actor=doctor_b))
    body = dict(repo.read("Patient", other).json(), identifier=[{"system": RESIDENT_ID_SYSTEM, "value": shared}])
    repo.update("Patient", other, body, if_match=None)
    with platform.db.read() as conn:
        persons = conn.execute(select(func.count(func.distinct(t.person_link.c.person_id))).join(
            t.person_block, t.person_block.c.patient_id == t.person_link.c.patient_id)
            .where(t.person_block.c.key == f"id:{shared}")).scalar_one()
    assert persons == 2
    answers = []
    for ident in (shared, rid(), "not-an-id"):
        number = phone()
        with pytest.raises(PatientIdentityRefused) as e:
            platform.patient_accounts.start_signup(platform.db, ident, number)
        answers.append((type(e.value), e.value.reason, str(e.value), e.value.status))
        assert sent_to(platform, number) == 0
    assert answers[0] == answers[1] == answers[2]


def test_a_doctor_editing_patient_telecom_cannot_receive_the_patients_codes(platform, accounts, org):
    doctor = actor("doctor", org)
    ident, patients_phone, doctors_phone = rid(), phone(), phone()
    pid = make_patient(platform, doctor, ident, telecom=patients_phone)
    clerk = actor("registration_clerk", org)
    person = person_of(platform, pid)
    accounts.verify_in_person(platform.db, clerk, person, patients_phone)
    # the doctor puts his own number on his institution's Patient record
    repo = platform.repository(RequestContext(actor=doctor))
    body = dict(repo.read("Patient", pid).json(), telecom=[{"system": "phone", "value": doctors_phone}])
    repo.update("Patient", pid, body, if_match=None)
    # login and sign-up codes go to the Person's verified phone only
    accounts.start_login(platform.db, resident_id=ident)
    with pytest.raises(PatientIdentityRefused):  # the Person has an account already
        accounts.start_signup(platform.db, ident, doctors_phone)
    assert sent_to(platform, doctors_phone) == 0
    assert sent_to(platform, patients_phone) == 1
    with pytest.raises(PatientIdentityRefused):  # his number is no login either
        accounts.start_login(platform.db, phone=doctors_phone)

    # a Person without an account but with a verified phone: sign-up typed with another number
    # still sends the code to the verified phone, and the typed number is not bound
    ident2, verified2 = rid(), phone()
    pid2 = make_patient(platform, doctor, ident2, telecom=doctors_phone)
    accounts.verify_in_person(platform.db, clerk, person_of(platform, pid2), verified2, create_account=False)
    challenge = accounts.start_signup(platform.db, ident2, doctors_phone)
    assert sent_to(platform, doctors_phone) == 0
    account = accounts.confirm_signup(platform.db, challenge, last_code(platform, verified2))
    assert accounts.verified_phone(platform.db, account.person_id)[0] == verified2


def test_changing_the_phone_needs_the_old_numbers_code(platform, accounts, org):
    account, ident, old = signed_up(platform, accounts, org)
    new = phone()
    challenge = accounts.start_phone_change(platform.db, account.id, new)
    assert sent_to(platform, new) == 0  # the code goes to the old number
    with pytest.raises(ConsentCodeWrong):
        accounts.confirm_phone_change(platform.db, challenge, f"{(int(last_code(platform, old)) + 1) % 10**6:06d}")
    assert accounts.verified_phone(platform.db, account.person_id)[0] == old
    assert accounts.confirm_phone_change(platform.db, challenge, last_code(platform, old)) == new
    assert accounts.verified_phone(platform.db, account.person_id)[:3:2] == (new, "sms")
    accounts.start_login(platform.db, resident_id=ident)
    assert sent_to(platform, new) == 1
    # a login code is no phone-change code
    login = accounts.start_login(platform.db, resident_id=ident)
    with pytest.raises(Exception) as e:
        accounts.confirm_phone_change(platform.db, login, last_code(platform, new))
    assert getattr(e.value, "reason", None) == "unknown-request"


def test_in_person_verification_records_the_staff_member(platform, accounts, org, make_institution):
    ident, number = rid(), phone()
    pid = make_patient(platform, actor("doctor", org), ident)
    person = person_of(platform, pid)
    with pytest.raises(Forbidden):  # a doctor is not a registration desk
        accounts.verify_in_person(platform.db, actor("doctor", org), person, number)
    with pytest.raises(Forbidden):  # a clerk elsewhere has no record of this person
        accounts.verify_in_person(platform.db, actor("registration_clerk", make_institution()), person, number)
    assert accounts.verified_phone(platform.db, person) is None
    clerk = actor("registration_clerk", org)
    account = accounts.verify_in_person(platform.db, clerk, person, number)
    assert account is not None and account.person_id == person
    assert accounts.verified_phone(platform.db, person)[2] == f"in-person:{clerk.subject}"
    with platform.db.read() as conn:
        audited = conn.execute(select(func.count()).select_from(t.audit_event).where(
            t.audit_event.c.username == clerk.subject, t.audit_event.c.subtype == "patient-phone")).scalar_one()
    assert audited == 1
    # in person, a lost phone is replaced without the old number
    newer = phone()
    accounts.verify_in_person(platform.db, clerk, person, newer)
    assert accounts.verified_phone(platform.db, person)[0] == newer
    login = accounts.start_login(platform.db, resident_id=ident)
    assert accounts.verify_login(platform.db, login, last_code(platform, newer)).account_id == account.id


def test_guardian_acts_for_a_childs_person_until_revoked(platform, accounts, org):
    parent, _, _ = signed_up(platform, accounts, org)
    child_pid = make_patient(platform, actor("doctor", org), rid(), name="小卓玛")
    child = person_of(platform, child_pid)
    clerk = actor("registration_clerk", org)
    assert accounts.acts_for(platform.db, parent.id) == [parent.person_id]
    with pytest.raises(Forbidden):  # another patient cannot make himself the child's guardian
        accounts.grant_guardian(platform.db, child, parent.id, relation="parent", account_id=parent.id)
    g = accounts.grant_guardian(platform.db, child, parent.id, relation="parent", staff=clerk)
    assert g.granted_by == f"in-person:{clerk.subject}"
    assert accounts.acts_for(platform.db, parent.id) == [parent.person_id, child]
    assert accounts.may_act_for(platform.db, parent.id, child)
    accounts.revoke_guardian(platform.db, g.id, staff=clerk)
    assert accounts.acts_for(platform.db, parent.id) == [parent.person_id]
    assert not accounts.may_act_for(platform.db, parent.id, child)

    # an adult patient names a carer herself, and revokes it herself
    elder, _, _ = signed_up(platform, accounts, org)
    carer, _, _ = signed_up(platform, accounts, org)
    g = accounts.grant_guardian(platform.db, elder.person_id, carer.id, relation="carer", account_id=elder.id)
    assert accounts.acts_for(platform.db, carer.id) == [carer.person_id, elder.person_id]
    with pytest.raises(Forbidden):  # nobody else revokes it
        accounts.revoke_guardian(platform.db, g.id, account_id=parent.id)
    accounts.revoke_guardian(platform.db, g.id, account_id=elder.id)
    assert accounts.acts_for(platform.db, carer.id) == [carer.person_id]


def test_a_carrier_real_name_check_guards_binding_a_new_phone_online(platform, settings, org):
    """Without a verified phone, online sign-up binds the number typed: anyone who knows the
    resident ID (every institution holding the record does) could bind his own.  A configured
    carrier check refuses a pair the carrier does not confirm, with the same answer as always."""
    owners: dict[str, str] = {}
    accounts = PatientAccounts.from_settings(settings, platform.sms,
                                             phone_owner_check=lambda r, p: owners.get(r) == p)
    ident, patients_phone, doctors_phone = rid(), phone(), phone()
    owners[ident] = patients_phone
    make_patient(platform, actor("doctor", org), ident, telecom=doctors_phone)
    with pytest.raises(PatientIdentityRefused) as e:
        accounts.start_signup(platform.db, ident, doctors_phone)
    assert e.value.reason == "not-possible" and sent_to(platform, doctors_phone) == 0
    challenge = accounts.start_signup(platform.db, ident, patients_phone)
    account = accounts.confirm_signup(platform.db, challenge, last_code(platform, patients_phone))
    assert accounts.verified_phone(platform.db, account.person_id)[0] == patients_phone


def test_patient_logins_are_audited(platform, accounts, org):
    account, ident, number = signed_up(platform, accounts, org)
    login = accounts.start_login(platform.db, resident_id=ident)
    with pytest.raises(ConsentCodeWrong):
        accounts.verify_login(platform.db, login, f"{(int(last_code(platform, number)) + 1) % 10**6:06d}")
    accounts.verify_login(platform.db, login, last_code(platform, number))
    with platform.db.read() as conn:
        rows = conn.execute(select(t.audit_event.c.outcome, t.audit_event.c.agent_ref).where(
            t.audit_event.c.subtype == "login", t.audit_event.c.username == f"patient-account:{account.id}")).all()
    assert [(r.outcome, r.agent_ref) for r in rows] == [("0", f"Person/{account.person_id}")]
