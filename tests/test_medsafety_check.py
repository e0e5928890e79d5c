"""The order-time medication check at Person level (issue 8, item 2, "must show"), through the real
service and repository against the test database (SQLite or PostgreSQL)."""

from __future__ import annotations

import contextlib
import json
from datetime import date, datetime

import pytest
from grantkit import actor, ctx, last_consent_code
from medkit import LOCAL_DRUG, RXNORM, MWorld, build, draft
from sqlalchemy import select

from healthlink.db import tables as t
from healthlink.errors import Forbidden, Invalid, NotFound
from healthlink.medsafety.knowledge import load

KB = load()
ONC_ROWS = sorted(ix.onc_row for ix in KB.onc_high_priority())


def _labelled_rxnorm() -> set[str]:
    """RxNorm codes a sensitive label list names (atazanavir: hiv-sti; methadone: substance-use)."""
    from pathlib import Path

    from healthlink.fhir import labels

    raw = json.loads((Path(labels.__file__).parent / "data" / "labels.json").read_text(encoding="utf-8"))
    return {c if isinstance(c, str) else c.get("code") for lst in raw["lists"] if lst["system"] == "rxnorm"
            for c in lst.get("codes", [])}


LABELLED = _labelled_rxnorm()


def _onc_pair(row: int) -> tuple[str, str]:
    """(recorded, ordered): a member of each side of ONC row ``row``, both with an RxNorm code, the
    recorded one not carrying a sensitive label (a labelled record gives nothing without a grant
    that names its category; tested separately)."""
    ix = next(x for x in KB.onc_high_priority() if x.onc_row == row)
    side_a = sorted(i for i in KB.members_of(ix.a) if KB.ingredient(i).rxnorm)
    side_b = sorted(i for i in KB.members_of(ix.b) if KB.ingredient(i).rxnorm)
    for one, two in ((side_b, side_a), (side_a, side_b)):
        for x in one:
            if KB.ingredient(x).rxnorm in LABELLED:
                continue
            for y in two:
                if x != y and any(f.onc_row == row for f in KB.interactions_between(x, y)):
                    return x, y
    raise AssertionError(f"no member pair for ONC row {row}")


@pytest.fixture
def w(platform) -> MWorld:  # noqa: ANN001
    return build(platform)


@contextlib.contextmanager
def pinned(platform, moment: str):  # noqa: ANN001, ANN201
    ms = platform.medsafety
    old = ms.clock
    at = datetime.fromisoformat(moment)
    ms.clock = lambda: at
    try:
        yield
    finally:
        ms.clock = old


def rx(ingredient: str) -> str:
    return KB.ingredient(ingredient).rxnorm


def events(w: MWorld, **where) -> list:  # noqa: ANN003
    e = t.medsafety_event
    with w.platform.db.read() as conn:
        return conn.execute(select(e).where(e.c.patient_id == w.patient,
                                            *(e.c[k] == v for k, v in where.items()))).all()


# ---------------------------------------------------------------- the 15 ONC high-priority pairs
def test_there_are_15_onc_pairs() -> None:
    assert len(ONC_ROWS) == 15


@pytest.mark.parametrize("row", ONC_ROWS)
def test_onc_pair_with_the_interacting_drug_recorded_at_another_institution(platform, row: int) -> None:
    w = build(platform)
    other, ordered = _onc_pair(row)
    mid = w.med(w.b, rx(other))
    # without a grant: an interrupting hint that cites the ONC list, naming nothing of the record
    res = w.check(draft(rx(ordered)))
    (f,) = [f for f in res.findings if f.kind == "interaction"]
    assert f.interrupt and f.severity == "contraindicated" and f.onc_high_priority
    assert f.source["ref"] == "onc-2012" and f.source["citation"].startswith("Phansalkar")
    assert res.grant_needed and f.grant_needed and not f.concerns.disclosed
    assert (f.concerns.institution_id, f.concerns.date) == (w.b, "2026-10-01")
    assert f.concerns.name is f.concerns.reference is f.concerns.ingredient is f.knowledge_id is None
    shown = json.dumps(f.to_json(), ensure_ascii=False)
    ing = KB.ingredient(other)
    for secret in {mid, ing.name_en, ing.name_zh} - {None}:
        if secret not in (KB.ingredient(ordered).name_en, KB.ingredient(ordered).name_zh):
            assert secret not in shown, secret
    # with the patient's grant: the drug, institution, date and reference, and the ONC entry
    w.grant()
    res = w.check(draft(rx(ordered)))
    (f,) = [f for f in res.findings if f.kind == "interaction"]
    assert f.interrupt and f.onc_high_priority and f.concerns.disclosed and not f.grant_needed
    assert f.concerns.reference == f"MedicationRequest/{mid}" and f.concerns.ingredient == other
    assert f"onc-{row:02d}" in f.knowledge_id.split(",")
    assert f.source["ref"] == "onc-2012" and f.management


# ---------------------------------------------------------------- allergy
def test_allergy_at_another_institution_and_a_cross_sensitive_drug_ordered(platform, w: MWorld) -> None:
    aid = w.allergy(w.b, rx("amoxicillin"))
    cefalexin = draft(rx("cephalexin"), dose=500, timing="QID")
    (hint,) = [f for f in w.check(cefalexin).findings if f.kind == "allergy"]
    assert hint.interrupt and hint.grant_needed and hint.concerns.institution_id == w.b
    assert "amoxicillin" not in json.dumps(hint.to_json()).lower() and aid not in json.dumps(hint.to_json())
    w.grant()
    (f,) = [f for f in w.check(cefalexin).findings if f.kind == "allergy"]
    assert f.severity == "major" and f.interrupt and f.concerns.reference == f"AllergyIntolerance/{aid}"
    assert f.knowledge_id == "allergy-group:bl-r1-aminobenzyl" and f.source["ref"] == "bl-sidechain"
    # a cephalosporin of another side chain: nothing
    assert [f for f in w.check(draft(rx("ceftriaxone"))).findings if f.kind == "allergy"] == []
    # the allergen itself is a direct, contraindicated match
    (d,) = [f for f in w.check(draft(rx("amoxicillin"))).findings if f.kind == "allergy"]
    assert d.severity == "contraindicated" and d.knowledge_id == "ingredient:amoxicillin"


def test_refuted_and_resolved_allergies_and_finished_orders_do_not_count(platform, w: MWorld) -> None:
    w.grant()
    w.allergy(w.b, rx("amoxicillin"), verification="refuted")
    w.allergy(w.b, rx("amoxicillin"), status="resolved")
    w.med(w.b, rx("clarithromycin"), status="completed")
    w.med(w.b, rx("clarithromycin"), status="draft")
    assert w.check(draft(rx("simvastatin"))).findings == []
    assert w.check(draft(rx("cephalexin"))).findings == []
    w.med(w.b, rx("clarithromycin"), status="on-hold")
    assert [f.kind for f in w.check(draft(rx("simvastatin"))).findings] == ["interaction"]


# ---------------------------------------------------------------- duplicates
def test_the_same_drug_twice_under_different_local_codes(platform, w: MWorld) -> None:
    mid = w.med(w.a, "LD-0001", system=LOCAL_DRUG)  # own institution: no grant needed
    (f,) = w.check(draft("LD-0002", system=LOCAL_DRUG)).findings
    assert (f.kind, f.knowledge_id, f.severity, f.interrupt) == ("duplicate", "duplicate:same-ingredient", "major", True)
    assert f.concerns.disclosed and f.concerns.reference == f"MedicationRequest/{mid}"
    assert f.source["ref"] == "nhc-review-2018"


def test_duplicate_class_recorded_at_another_institution(platform, w: MWorld) -> None:
    w.grant()
    w.med(w.b, rx("atorvastatin"), statement=True)  # a MedicationStatement counts too
    (f,) = [f for f in w.check(draft(rx("simvastatin"))).findings if f.kind == "duplicate"]
    assert f.knowledge_id == "duplicate:dup-statin" and f.severity == "moderate" and not f.interrupt


# ---------------------------------------------------------------- dose
def test_paediatric_overdose_by_weight(platform) -> None:
    w = build(platform, born=date(2020, 6, 1))
    paracetamol = draft(rx("acetaminophen"), dose=500, timing="TID")
    with pinned(platform, "2026-12-01T10:00:00+08:00"):
        # no weight the doctor may see (B's weight needs a grant): the check says a weight is needed
        w.weight(w.b, 20)
        (f,) = w.check(paracetamol).findings
        assert (f.kind, f.severity, f.interrupt, f.detail["which"]) == ("dose", "minor", False, "needs-weight")
        w.weight(w.a, 20, when="2026-11-30T09:00:00+08:00")
        res = w.check(paracetamol)
    assert res.weight_kg == 20 and 6 < res.age_years < 7
    (f,) = res.findings
    assert (f.kind, f.severity, f.interrupt, f.detail["which"]) == ("dose", "major", True, "single")
    assert f.detail["max_single"] == 300 and f.detail["dose"] == 500 and f.source["ref"] == "fda-label"
    assert f.knowledge_id == "dose:acetaminophen-oral"
    with pinned(platform, "2026-12-01T10:00:00+08:00"):  # 250 mg six times a day: the daily maximum
        (f,) = w.check(draft(rx("acetaminophen"), dose=250, per_day=8)).findings
    assert f.detail["which"] == "daily" and f.detail["daily"] == 2000 and f.detail["max_daily"] == 1500


def test_an_adult_dose_inside_the_limits_gives_nothing(platform, w: MWorld) -> None:
    assert w.check(draft(rx("acetaminophen"), dose=0.5, unit="g", timing="QID")).findings == []
    got = {f.detail["which"]: f for f in w.check(draft(rx("acetaminophen"), dose=5000, timing="QD")).findings}
    assert got["single"].detail["ratio"] == 5.0 and got["daily"].detail["ratio"] == 1.25
    assert all(f.interrupt for f in got.values())


# ---------------------------------------------------------------- tiering
def test_a_minor_interaction_does_not_interrupt_unless_the_region_says_so(platform, w: MWorld) -> None:
    w.grant()
    w.med(w.b, rx("metoprolol"))
    (f,) = w.check(draft(rx("ibuprofen"))).findings
    assert (f.kind, f.severity, f.interrupt) == ("interaction", "minor", False)
    assert f.source["ref"] == "onc-2013"
    ms = platform.medsafety
    old = ms.interrupting
    ms.interrupting = frozenset({"contraindicated", "major", "moderate", "minor"})
    try:
        (f,) = w.check(draft(rx("ibuprofen"))).findings
        assert f.interrupt
    finally:
        ms.interrupting = old


# ---------------------------------------------------------------- consent
def test_a_sensitive_record_gives_nothing_without_a_grant_that_names_it(platform, w: MWorld) -> None:
    w.med(w.b, rx("sertraline"), security="PSY")  # labelled mental health
    selegiline = draft(rx("selegiline"))
    assert w.check(selegiline).findings == []  # not even a hint
    w.grant()  # a grant that does not name the category
    assert w.check(selegiline).findings == []
    g = platform.grants.request(ctx(w.doctor), patient_id=w.patient, encounter_id=w.encounter,
                                purpose="medication check", sensitive=("mental-health",))
    platform.grants.confirm_code(ctx(w.doctor), g.id, last_consent_code(platform, w.phone))
    (f,) = w.check(selegiline).findings
    assert f.concerns.disclosed and f.onc_high_priority and f.interrupt


def test_a_check_is_audited_once_naming_the_disclosed_records(platform, w: MWorld) -> None:
    import base64

    w.grant()
    mid = w.med(w.b, rx("clarithromycin"))
    w.check(draft(rx("simvastatin")))
    query = base64.b64encode(f"Patient/{w.patient}/$medication-check".encode()).decode()
    ae = t.audit_event
    with platform.db.read() as conn:
        rows = [c for (c,) in conn.execute(select(ae.c.content).where(ae.c.username == w.doctor.subject))
                if query in c]
    assert len(rows) == 1 and f"MedicationRequest/{mid}" in rows[0]


def test_only_clinical_staff_of_the_patients_institution_check(platform, w: MWorld) -> None:
    for role in ("registration_clerk", "quality_manager"):
        with pytest.raises(Forbidden):
            w.check(draft(rx("simvastatin")), who=actor(role, w.a))
    with pytest.raises(NotFound):  # a doctor elsewhere does not see A's patient
        w.check(draft(rx("simvastatin")), who=w.doctors[w.b])
    assert w.check(draft(rx("simvastatin")), who=actor("pharmacist", w.a)).findings == []


def test_an_unknown_or_deleted_patient_is_answered_as_a_read_would_be_and_audited(platform, w: MWorld) -> None:
    """The Patient comes with the records in one statement; an id that is not a current Patient
    still gets a read's answer: 404 for an unknown one, 410 for a deleted one, each audited."""
    from healthlink.errors import Gone

    with pytest.raises(NotFound):
        w.platform.medsafety.check(ctx(w.doctor), "no-such-patient", draft(rx("simvastatin")))
    repo = platform.repository(ctx(w.doctor))
    gone = repo.create({"resourceType": "Patient", "name": [{"family": "Gone"}]}, res_type="Patient").stored.res_id
    repo.delete("Patient", gone, if_match=None)
    with pytest.raises(Gone):
        w.platform.medsafety.check(ctx(w.doctor), gone, draft(rx("simvastatin")))
    ae = t.audit_event
    with platform.db.read() as conn:
        failed = [c for (c,) in conn.execute(select(ae.c.content).where(
            ae.c.username == w.doctor.subject, ae.c.outcome != "0"))]
    assert any("Patient/no-such-patient" in c for c in failed)
    assert any(f"Patient/{gone}" in c for c in failed)
    assert w.check(draft(rx("simvastatin"))).patient_id == w.patient  # the patient of the world still checks


# ---------------------------------------------------------------- events and overrides
def test_findings_are_events_and_an_interrupting_one_needs_a_reason_to_override(platform, w: MWorld) -> None:
    w.grant()
    w.med(w.b, rx("clarithromycin"))
    res = w.check(draft(rx("simvastatin")))
    (f,) = res.findings
    assert [e.kind for e in events(w, check_id=res.check_id)].count("finding") == 1
    (ev,) = events(w, id=f.id)
    assert (ev.kind, ev.finding_kind, ev.severity, ev.interrupt, ev.disclosed, ev.source_institution) == (
        "finding", "interaction", "contraindicated", True, True, w.b)
    ms = platform.medsafety
    for reason, text, where in ((None, None, "reason"), ("bored", None, "reason"), ("other", " ", "text")):
        with pytest.raises(Invalid) as exc:
            ms.override(ctx(w.doctor), f.id, reason, text)
        assert exc.value.issues[0].expression == (where,)
    with pytest.raises(NotFound):
        ms.override(ctx(w.doctors[w.b]), f.id, "will-monitor")
    oid = ms.override(ctx(w.doctor), f.id, "will-monitor")
    assert ms.override(ctx(w.doctor), f.id, "will-monitor") == oid
    (o,) = events(w, kind="overridden")
    assert (o.finding_id, o.reason, o.severity) == (f.id, "will-monitor", "contraindicated")


def test_a_non_interrupting_finding_is_overridden_without_a_reason(platform, w: MWorld) -> None:
    w.med(w.a, rx("metoprolol"))
    (f,) = w.check(draft(rx("ibuprofen"))).findings
    assert not f.interrupt
    assert platform.medsafety.override(ctx(w.doctor), f.id)


def test_an_unknown_drug_is_checked_for_nothing_but_still_needs_the_patient(platform, w: MWorld) -> None:
    res = w.check(draft("NOPE", system=LOCAL_DRUG))
    assert res.ingredients == [] and res.findings == []
    with pytest.raises(Invalid):
        w.check({"resourceType": "ServiceRequest"})
