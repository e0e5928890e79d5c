"""The order-time recognition check, scenario by scenario (issue 7, "must show"), through the real
service and repository against the test database (SQLite or PostgreSQL)."""

from __future__ import annotations

import json
from datetime import date

import pytest
from grantkit import actor, ctx, patient_body, resident_id
from recogkit import LOINC, RWorld, build, institution, pinned
from sqlalchemy import select

from healthlink.db import tables as t
from healthlink.errors import Conflict, Forbidden, Invalid
from healthlink.recognition.service import DECLINE_REASONS, Order

HIS_LAB = "https://healthlink.example.org/fhir/CodeSystem/his-lab"
HIS_EXAM = "https://healthlink.example.org/fhir/CodeSystem/his-exam"
K = Order(LOINC, "2823-3")  # potassium, 7 days
NOON = "2026-03-08T12:00:00+08:00"


@pytest.fixture
def w(platform) -> RWorld:  # noqa: ANN001
    return build(platform)


def check(w: RWorld, *orders: Order, who=None, record: bool = True):  # noqa: ANN001, ANN201
    return w.platform.recognition.check(ctx(who or w.doctor), w.patient, list(orders),
                                        encounter_id=w.encounter, record=record)


def hits(w: RWorld, *orders: Order, who=None) -> list:  # noqa: ANN001
    return check(w, *orders, who=who).hits


def events(w: RWorld, **where) -> list:  # noqa: ANN003
    e = t.recognition_event
    with w.platform.db.read() as conn:
        return conn.execute(select(e).where(e.c.patient_id == w.patient,
                                            *(e.c[k] == v for k, v in where.items()))).all()


# ---------------------------------------------------------------- the validity window in the region's calendar
def test_one_day_inside_and_one_day_outside_the_window_at_the_time_zone_edges(platform, w: RWorld) -> None:
    w.grant()
    w.result(w.b, when="2026-03-01T23:30:00+08:00", value=4.4)  # 1 March in Shanghai: valid through 8 March
    with pinned(platform, "2026-03-08T23:59:00+08:00"):
        got = hits(w, K)
        assert [(h.date, h.valid_until, h.value) for h in got] == [(date(2026, 3, 1), date(2026, 3, 8), "4.4")]
    with pinned(platform, "2026-03-09T00:00:30+08:00"):  # one day past the window (still 8 March in UTC)
        assert hits(w, K) == []


def test_a_utc_time_is_placed_on_the_regions_calendar(platform, w: RWorld) -> None:
    w.grant()
    w.result(w.b, when="2026-03-01T16:30:00Z", value=3.9)  # already 2 March in Shanghai
    with pinned(platform, "2026-03-09T20:00:00+08:00"):
        got = hits(w, K)
        assert [(h.date, h.valid_until) for h in got] == [(date(2026, 3, 2), date(2026, 3, 9))]
    with pinned(platform, "2026-03-10T00:00:01+08:00"):
        assert hits(w, K) == []


# ---------------------------------------------------------------- status
def test_preliminary_and_amended_then_cancelled_results_are_not_recognised(platform, w: RWorld) -> None:
    w.grant()
    w.result(w.b, status="preliminary", value=4.0)
    amended = w.result(w.b, value=4.2)
    repo = w.repo(w.b)
    body = repo.read("Observation", amended).json()
    body["status"] = "amended"
    body["valueQuantity"]["value"] = 4.3
    repo.update("Observation", amended, body, if_match=None)
    with pinned(platform, NOON):
        assert [(h.status, h.value) for h in hits(w, K)] == [("amended", "4.3")]
        body["status"] = "cancelled"
        repo.update("Observation", amended, body, if_match=None)
        assert hits(w, K) == []


# ---------------------------------------------------------------- qualified issuers
def test_issuer_not_qualified_or_qualification_expired_before_the_result(platform, w: RWorld) -> None:
    w.grant()
    w.result(w.n, value=4.0)  # never qualified
    w.result(w.q, value=4.1)  # 5 March: the qualification ended 28 February
    glucose = Order(LOINC, "14771-0")  # fasting glucose, 30 days
    w.result(w.q, "14771-0", when="2026-02-20T08:00:00+08:00", value=5.5)  # qualified on that day
    with pinned(platform, NOON):
        assert hits(w, K) == []
        assert [(h.institution_id, h.value) for h in hits(w, glucose)] == [(w.q, "5.5")]


def test_a_qualification_for_one_item_only(platform, w: RWorld) -> None:
    rec = platform.recognition
    from recogkit import SYSTEM

    rec.qualify(ctx(SYSTEM), institution_id=w.n, item_id="HR-HBA1C", basis="eqa", valid_from=date(2026, 1, 1))
    w.grant()
    w.result(w.n, "4548-4", value=6.1, unit="%")
    w.result(w.n, value=4.1)
    with pinned(platform, NOON):
        assert [h.item_id for h in hits(w, Order(LOINC, "4548-4"))] == ["HR-HBA1C"]
        assert hits(w, K) == []


# ---------------------------------------------------------------- the same item
def test_equivalent_item_under_another_local_code(platform, w: RWorld) -> None:
    w.grant()
    w.result(w.b, "2160-0", value=0.9, unit="mg/dL")  # creatinine in mg/dL (HR-CREA-MASS)
    with pinned(platform, NOON):
        # the HIS orders creatinine by its own local code for the µmol/L item (HR-CREA)
        got = hits(w, Order(HIS_LAB, "CREA"))
        assert [(h.item_id, h.value, h.unit) for h in got] == [("HR-CREA", "0.9", "mg/dL")]
        assert hits(w, Order(HIS_LAB, "K")) == []  # another item: nothing


def test_a_code_outside_the_catalogue_is_not_checked(platform, w: RWorld) -> None:
    res = check(w, Order(LOINC, "99999-9"))
    assert res.lines[0].item is None and res.hits == []
    assert events(w) == []  # not a catalogue order: not counted in the rates


# ---------------------------------------------------------------- imaging
def test_imaging_needs_the_same_body_site_and_links_to_the_study(platform, w: RWorld) -> None:
    w.grant()
    study, report = w.imaging(w.b)  # CT chest, thoracic structure
    w.imaging(w.x, "24627-2", site="69536005", site_display="Head structure")  # the same code, another site
    with pinned(platform, NOON):
        got = hits(w, Order(HIS_EXAM, "CT-CHEST"))
        assert len(got) == 1
        h = got[0]
        assert (h.institution_id, h.kind, h.modality, h.body_site) == (w.b, "examination", "CT", "Thoracic structure")
        assert (h.study_ref, h.report_ref) == (f"ImagingStudy/{study}", f"DiagnosticReport/{report}")
        # the order names another body site: nothing
        assert hits(w, Order(HIS_EXAM, "CT-CHEST", body_site="69536005")) == []


def test_imaging_of_another_modality_is_not_the_same_examination(platform, w: RWorld) -> None:
    w.grant()
    w.imaging(w.b, modality="MR")  # an MR study filed under the CT chest code
    with pinned(platform, NOON):
        assert hits(w, Order(HIS_EXAM, "CT-CHEST")) == []


# ---------------------------------------------------------------- the Person
def test_result_of_another_person_with_the_same_name(platform, w: RWorld) -> None:
    w.grant()
    other = w.repo(w.b).create(patient_body(resident_id(), "次仁卓玛"), res_type="Patient").stored.res_id
    w.result(w.b, patient=other, value=5.9)
    with pinned(platform, NOON):
        assert hits(w, K) == []


def test_result_only_reachable_through_the_person_link(platform, w: RWorld) -> None:
    w.grant()
    w.result(w.b, value=4.6)  # at B, on B's own Patient record of the same Person
    with pinned(platform, NOON):
        res = check(w, K)
    assert res.person_id == w.person
    assert [(h.institution_id, h.value, h.own) for h in res.hits] == [(w.b, "4.6", False)]


# ---------------------------------------------------------------- scope
def test_result_from_an_institution_outside_the_catalogue_scope(platform, w: RWorld) -> None:
    w.grant()
    us = Order(HIS_EXAM, "US-ABD")  # abdominal ultrasound: within a consortium only
    w.imaging(w.x, "24558-9", site="10200004", site_display="Abdomen", modality="US")  # consortium c2
    with pinned(platform, NOON):
        assert hits(w, us) == []
    w.imaging(w.t, "24558-9", site="10200004", site_display="Abdomen", modality="US")  # consortium c1
    with pinned(platform, NOON):
        assert [h.institution_id for h in hits(w, us)] == [w.t]
    w.imaging(w.t, "24627-2")  # CT at a township centre: CT is county-and-above
    with pinned(platform, NOON):
        assert hits(w, Order(HIS_EXAM, "CT-CHEST")) == []


# ---------------------------------------------------------------- own institution, hints, sensitive
def test_own_institution_result_is_a_duplicate_test_reminder(platform, w: RWorld) -> None:
    w.result(w.a, value=4.8)  # no grant needed for one's own institution's records
    with pinned(platform, NOON):
        got = hits(w, K)
    assert [(h.own, h.disclosed, h.value) for h in got] == [(True, True, "4.8")]


def test_without_a_grant_a_hint_says_only_item_institution_and_date(platform, w: RWorld) -> None:
    oid = w.result(w.b, value=4.1)
    with pinned(platform, NOON):
        res = check(w, K)
    (h,) = res.hits
    assert res.grant_needed and not h.disclosed
    assert (h.institution_id, h.date, h.item_id) == (w.b, date(2026, 3, 5), "HR-K")
    assert h.value is h.unit is h.reference_range is h.flag is h.result_ref is h.effective is None
    assert oid not in json.dumps(h.to_json()) and "4.1" not in json.dumps(h.to_json())
    with pytest.raises(Forbidden):
        platform.recognition.adopt(ctx(w.doctor), h.id)
    w.grant()
    with pinned(platform, NOON):
        (h2,) = hits(w, K)
    assert h2.disclosed and h2.value == "4.1" and h2.result_ref == f"Observation/{oid}"


def test_a_sensitive_record_never_gives_a_hint(platform, w: RWorld) -> None:
    # a lithium level from a psychiatric clinic, labelled mental health (v3 ActCode PSY)
    oid = w.result(w.b, "14334-7", value=0.8)
    repo = w.repo(w.b)
    body = repo.read("Observation", oid).json()
    body["meta"] = {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]}
    repo.update("Observation", oid, body, if_match=None)
    lithium = Order(LOINC, "14334-7")
    assert platform.recognition.catalogue.by_code(LOINC, "14334-7").id == "HR-LI"
    with pinned(platform, NOON):
        assert hits(w, lithium) == []
        w.grant()  # a grant that does not name the category does not show it either
        assert hits(w, lithium) == []
    w.result(w.b, "14334-7", value=0.7)  # the same test without the label: recognised
    with pinned(platform, NOON):
        assert [h.value for h in hits(w, lithium)] == ["0.7"]


def test_only_clinical_staff_check(platform, w: RWorld) -> None:
    for role in ("registration_clerk", "quality_manager"):
        with pytest.raises(Forbidden):
            platform.recognition.check(ctx(actor(role, w.a)), w.patient, [K])


def test_an_unknown_deleted_or_other_institutions_patient_is_answered_as_a_read_would_be(platform, w: RWorld) -> None:
    """The Patient and its Person come in one statement; an id that is not a current Patient of
    the doctor's institution still gets a read's answer (404, 410), audited."""
    from healthlink.errors import Gone, NotFound

    with pytest.raises(NotFound):
        platform.recognition.check(ctx(w.doctor), "no-such-patient", [K])
    with pytest.raises(NotFound):  # a doctor elsewhere does not see A's patient
        platform.recognition.check(ctx(w.doctors[w.b]), w.patient, [K])
    repo = w.repo(w.a)
    gone = repo.create(patient_body(resident_id(), "Gone"), res_type="Patient").stored.res_id
    repo.delete("Patient", gone, if_match=None)
    with pytest.raises(Gone):
        platform.recognition.check(ctx(w.doctor), gone, [K])
    ae = t.audit_event
    with platform.db.read() as conn:
        failed = [c for (c,) in conn.execute(select(ae.c.content).where(ae.c.outcome != "0"))
                  if "no-such-patient" in c or f"Patient/{gone}" in c or f"Patient/{w.patient}" in c]
    assert len(failed) >= 3
    assert platform.recognition.check(ctx(w.doctor), w.patient, [K]).person_id == w.person


# ---------------------------------------------------------------- decisions
def test_adopted_result_appears_in_the_encounter_with_provenance(platform, w: RWorld) -> None:
    w.grant()
    src = w.result(w.b, value=4.1)
    with pinned(platform, NOON):
        (h,) = hits(w, K)
    ref = platform.recognition.adopt(ctx(w.doctor), h.id)
    assert ref and ref.startswith("Observation/")
    repo = platform.repository(ctx(w.doctor))
    page = repo.search("Observation", [("encounter", f"Encounter/{w.encounter}")])
    local = [s.json() for s in page.matches if f"Observation/{s.res_id}" == ref]
    assert local, "the recognised result is not in the encounter"
    obs = local[0]
    assert obs["derivedFrom"] == [{"reference": f"Observation/{src}"}]
    assert obs["meta"]["tag"][0]["code"] == "HR" and obs["valueQuantity"]["value"] == 4.1
    prov = [s.json() for s in repo.search("Provenance", [("target", ref)]).matches]
    assert len(prov) == 1
    whos = {a["type"]["coding"][0]["code"]: a["who"] for a in prov[0]["agent"]}
    assert whos["author"]["reference"] == f"Practitioner/{w.doctor.practitioner_id}"
    assert whos["performer"]["reference"] == f"Organization/{w.b}"
    # adopting again gives the same record; declining the adopted line is a conflict
    assert platform.recognition.adopt(ctx(w.doctor), h.id) == ref
    with pytest.raises(Conflict):
        platform.recognition.decline(ctx(w.doctor), h.id, reason="emergency")
    assert [e.local_ref for e in events(w, kind="adopted")] == [ref]


def test_decline_without_a_reason_is_refused(platform, w: RWorld) -> None:
    w.grant()
    w.result(w.b)
    with pinned(platform, NOON):
        (h,) = hits(w, K)
    rec = platform.recognition
    for reason, text, where in ((None, None, "reason"), ("", None, "reason"), ("bored", None, "reason"),
                                ("other", "  ", "text")):
        with pytest.raises(Invalid) as exc:
            rec.decline(ctx(w.doctor), h.id, reason=reason, text=text)
        assert exc.value.issues[0].expression == (where,)
    assert events(w, kind="declined") == []
    rec.decline(ctx(w.doctor), h.id, reason="other", text="患者要求复查")
    (ev,) = events(w, kind="declined")
    assert (ev.reason, ev.reason_text, ev.card_id) == ("other", "患者要求复查", h.id)


def test_another_institution_cannot_decide_on_a_card(platform, w: RWorld) -> None:
    w.grant()
    w.result(w.b)
    with pinned(platform, NOON):
        (h,) = hits(w, K)
    from healthlink.errors import NotFound

    with pytest.raises(NotFound):
        platform.recognition.decline(ctx(w.doctors[w.b]), h.id, reason="emergency")


# ---------------------------------------------------------------- rates
def test_draft_orders_checked_again_keep_their_check_and_cards_and_a_result_found_later_counts(
        platform, w: RWorld) -> None:
    """order-select, then order-sign (or the order selected again) within a day: each draft order keeps
    its first check and the uuids of the cards already shown; a result that arrived in between is
    recorded under the first check, which now counts as found."""
    w.grant()
    w.result(w.b, value=4.1)
    k, a1c = Order(LOINC, "2823-3", order_ref="ServiceRequest/k1"), Order(LOINC, "4548-4", order_ref="ServiceRequest/g1")
    with pinned(platform, NOON):
        first = check(w, k, a1c)
        assert [len(ln.hits) for ln in first.lines] == [1, 0]
        w.result(w.b, "4548-4", value=6.0, unit="%")  # the HbA1c arrives before the order is signed
        again = check(w, k, a1c)
    assert [ln.check_id for ln in again.lines] == [ln.check_id for ln in first.lines]
    assert again.lines[0].hits[0].id == first.lines[0].hits[0].id  # the same card, not a new one
    assert len(again.lines[1].hits) == 1
    checked = {r.order_ref: r for r in events(w, kind="checked")}
    assert set(checked) == {"ServiceRequest/k1", "ServiceRequest/g1"}  # one check per draft order
    assert checked["ServiceRequest/g1"].found and checked["ServiceRequest/k1"].found
    reminded = events(w, kind="reminded")
    assert sorted((r.order_ref, r.check_id) for r in reminded) == sorted(
        [("ServiceRequest/k1", first.lines[0].check_id), ("ServiceRequest/g1", first.lines[1].check_id)])


def test_rates_from_the_events(platform) -> None:
    w = build(platform)
    w.grant()
    w.result(w.b, value=4.1)
    w.result(w.b, "4548-4", value=6.0, unit="%")
    rec = platform.recognition
    with pinned(platform, NOON):
        k = check(w, K)
        a1c = check(w, Order(LOINC, "4548-4"))
        none = check(w, Order(LOINC, "14682-9"))  # creatinine: no result anywhere
        rec.opened(ctx(w.doctor), k.hits[0].id)
        rec.adopt(ctx(w.doctor), k.hits[0].id)
        rec.decline(ctx(w.doctor), a1c.hits[0].id, reason="condition-changed")
        rec.reordered(ctx(w.doctor), a1c.lines[0].check_id)
        rec.reordered(ctx(w.doctor), none.lines[0].check_id)
        qm = actor("quality_manager", w.a)
        r = rec.rates(ctx(qm), since=date(2026, 3, 1), until=date(2026, 3, 31))
    tot = r["totals"]
    assert (tot["checked"], tot["found"], tot["reminded"], tot["opened"], tot["adopted"], tot["declined"],
            tot["reordered"]) == (3, 2, 2, 1, 1, 1, 2)
    assert tot["retrieval_rate"] == round(2 / 3, 4) and tot["recognition_rate"] == 0.5
    k_price = rec.catalogue.by_id("HR-K").price_yuan
    assert tot["savings_yuan"] == str(k_price.normalize()) or float(tot["savings_yuan"]) == float(k_price)
    assert [(x["reason"], x["count"], x["share"]) for x in r["reasons"]] == [("condition-changed", 1, 1.0)]
    items = {row["key"]: row for row in rec.rates(ctx(qm), since=date(2026, 3, 1), until=date(2026, 3, 31),
                                                  by="item")["rows"]}
    assert items["HR-K"]["adopted"] == 1 and items["HR-HBA1C"]["declined"] == 1
    with pytest.raises(Forbidden):
        rec.rates(ctx(actor("registration_clerk", w.a)))
    with pytest.raises(Forbidden):
        rec.rates(ctx(qm), institution_id=w.b)
    assert set(DECLINE_REASONS) >= {"condition-changed", "emergency", "other"}


def test_catalogue_is_loaded_into_the_store(platform) -> None:
    from healthlink.recognition import store

    cat, row = store.active(platform.db)
    assert row["version"] == cat.version and row["items"] == len(cat.items) >= 100
    again, new = store.load(platform.db, None)
    assert not new and again.version == cat.version


def test_new_institution_is_seen(platform) -> None:
    inst = institution(platform, "township")
    assert platform.recognition.institutions()[inst].tier == "township"
