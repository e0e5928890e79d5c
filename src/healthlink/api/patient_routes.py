"""Patient accounts under /api/patient (problem+json errors, with a refused code's ``reason``):
sign-up, login by SMS code, the signed-in patient (``me``), phone change, and the registration
desk's in-person verification.  A thin adapter over ``Platform.patient_accounts``
(:class:`healthlink.consent.PatientAccounts`), which checks codes, limits and roles and writes
the audit records (docs/consent.md, "Patient accounts")."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from healthlink.api.deps import (
    PATIENT_COOKIE,
    CurrentContext,
    CurrentPatient,
    CurrentPlatform,
)
from healthlink.consent.patients import PatientProfile, mask_phone
from healthlink.web.session import secure_cookie

router = APIRouter(prefix="/api/patient", tags=["patient accounts"])
NO_STORE = {"Cache-Control": "no-store"}


class SignupStart(BaseModel):
    resident_id: str
    phone: str


class CodeAnswer(BaseModel):
    challenge_id: str
    code: str


class LoginStart(BaseModel):
    resident_id: str | None = None  # one of the two
    phone: str | None = None


class PhoneStart(BaseModel):
    new_phone: str


class InPerson(BaseModel):
    person_id: str
    phone: str
    create_account: bool = True


def _challenge(challenge_id: str) -> JSONResponse:
    return JSONResponse({"challenge_id": challenge_id}, status_code=202, headers=NO_STORE)


@router.post("/signup/start", status_code=202, summary="Send a sign-up code (resident ID + phone)")
def signup_start(body: SignupStart, platform: CurrentPlatform) -> JSONResponse:
    return _challenge(platform.patient_accounts.start_signup(platform.db, body.resident_id, body.phone))


@router.post("/signup/confirm", status_code=201, summary="Confirm the sign-up code: the account")
def signup_confirm(body: CodeAnswer, platform: CurrentPlatform) -> JSONResponse:
    account = platform.patient_accounts.confirm_signup(platform.db, body.challenge_id, body.code)
    return JSONResponse({"account_id": account.id, "person_id": account.person_id}, status_code=201)


@router.post("/login/start", status_code=202, summary="Send a login code to the verified phone")
def login_start(body: LoginStart, platform: CurrentPlatform) -> JSONResponse:
    return _challenge(platform.patient_accounts.start_login(platform.db, resident_id=body.resident_id,
                                                            phone=body.phone))


@router.post("/login/verify", summary="A login code -> a patient session (token and hl_patient cookie)")
def login_verify(body: CodeAnswer, request: Request, platform: CurrentPlatform) -> JSONResponse:
    client = request.client
    s = platform.patient_accounts.verify_login(platform.db, body.challenge_id, body.code,
                                               address=client.host if client else None,
                                               request_id=request.scope["state"]["request_id"])
    resp = JSONResponse({"access_token": s.token, "token_type": "Bearer", "expires_in": s.expires_in,
                         "person_id": s.person_id}, headers=NO_STORE)
    set_patient_cookie(request, resp, s.token, s.expires_in)
    return resp


@router.post("/logout", status_code=204, summary="Forget the hl_patient cookie")
def logout() -> Response:
    # The token itself stays valid until it expires (no revocation list yet, docs/consent.md);
    # the browser forgets it.
    resp = Response(status_code=204)
    resp.delete_cookie(PATIENT_COOKIE, path="/")
    return resp


@router.get("/me", summary="The signed-in patient: account, person, masked phone, whom it acts for")
def me(patient: CurrentPatient, platform: CurrentPlatform) -> JSONResponse:
    return JSONResponse(profile_json(platform.patient_accounts.profile(platform.db, patient.account_id)),
                        headers=NO_STORE)


@router.post("/phone/start", status_code=202, summary="Change the phone: a code goes to the OLD number")
def phone_start(body: PhoneStart, patient: CurrentPatient, platform: CurrentPlatform) -> JSONResponse:
    pa = platform.patient_accounts
    challenge = pa.start_phone_change(platform.db, patient.account_id, body.new_phone)
    return _challenge(challenge)


@router.post("/phone/confirm", summary="Confirm the phone change with the old number's code")
def phone_confirm(body: CodeAnswer, patient: CurrentPatient, platform: CurrentPlatform) -> JSONResponse:
    # the signed-in patient is required; the challenge itself names the Person it changes
    new = platform.patient_accounts.confirm_phone_change(platform.db, body.challenge_id, body.code)
    return JSONResponse({"phone": mask_phone(new)}, headers=NO_STORE)


@router.post("/verify-in-person", summary="Registration desk: set a Person's verified phone (and account)")
def verify_in_person(body: InPerson, ctx: CurrentContext, platform: CurrentPlatform) -> JSONResponse:
    account = platform.patient_accounts.verify_in_person(platform.db, ctx.actor, body.person_id, body.phone,
                                                         create_account=body.create_account)
    return JSONResponse({"person_id": body.person_id, "account_id": account.id if account else None,
                         "phone": mask_phone(body.phone)})


def set_patient_cookie(request: Request, resp: Response, token: str, max_age: int) -> None:
    """The ``hl_patient`` cookie: HttpOnly, SameSite=Lax, Secure except on plain http to loopback."""
    resp.set_cookie(PATIENT_COOKIE, token, max_age=max_age, httponly=True, samesite="lax",
                    secure=secure_cookie(request), path="/")


def profile_json(p: PatientProfile) -> dict:
    def when(us: int | None) -> str | None:
        return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat() if us is not None else None

    return {"account": {"id": p.account.id, "active": p.account.active},
            "person": {"id": p.account.person_id, "name": p.name},
            "phone": {"masked": p.phone_masked, "verified_by": p.phone_verified_how,
                      "verified_at": when(p.phone_verified_at_us)} if p.phone_masked else None,
            "acts_for": [{"person_id": a.person_id, "name": a.name, "relation": a.relation,
                          "guardianship_id": a.guardianship_id} for a in p.acts_for]}


@router.get("/records", summary="My records (or a ward's) from every institution, as a FHIR searchset Bundle")
def my_records(patient: CurrentPatient, platform: CurrentPlatform, request: Request,
               person: str | None = None, _count: int | None = None, _cursor: str | None = None) -> Response:
    """``$everything`` over every Patient linked to the Person, sensitive records included: a patient
    sees all of their own records.  ``person`` picks a ward for a guardian (default: the account's own
    Person).  Through the repository as a patient actor, so it is audited like any read."""
    from urllib.parse import urlencode

    from healthlink.access import RequestContext
    from healthlink.access.context import Actor
    from healthlink.api.fhir_routes import _bundle, _entry

    persons = tuple(platform.patient_accounts.acts_for(platform.db, patient.account_id))
    client = request.client
    ctx = RequestContext(actor=Actor.patient(patient.account_id, persons),
                         request_id=request.scope["state"]["request_id"],
                         address=client.host if client else None, user_agent=request.headers.get("user-agent"))
    repo = platform.repository(ctx)
    who = person or patient.person_id
    items, nxt = repo.person_records(who, count=_count, cursor=_cursor)
    base = repo.s.base_url
    url = str(request.url.remove_query_params("_cursor"))
    sep = "&" if "?" in url else "?"
    return _bundle(btype="searchset", base=base, self_url=str(request.url),
                   next_url=f"{url}{sep}{urlencode({'_cursor': nxt})}" if nxt else None, total=None,
                   entries=[_entry(base, s, "match") for s in items])
