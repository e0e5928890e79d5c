"""``healthlink demo --replay-days``: a month of ordering with mutual recognition (issue 7, item 9),
through the real check, grants and decisions; the rates come from the events it leaves."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import create_engine, func, select

from healthlink.db import tables as t


def _said(result) -> str:  # noqa: ANN001
    return " ".join(result.output.split())


def _events(url: str) -> dict:
    engine = create_engine(url)
    e, q = t.recognition_event, t.recognition_qualification
    with engine.connect() as conn:
        kinds = dict(conn.execute(select(e.c.kind, func.count()).group_by(e.c.kind)).all())
        span = conn.execute(select(func.min(e.c.at), func.max(e.c.at))).one()
        channels = set(conn.execute(select(e.c.channel).distinct()).scalars())
        reminded = set(conn.execute(select(e.c.check_id).where(e.c.kind == "reminded")).scalars())
        adopted = conn.execute(select(e.c.check_id, e.c.price_fen).where(e.c.kind == "adopted")).all()
        reasons = set(conn.execute(select(e.c.reason).where(e.c.kind == "declined")).scalars())
        quals = conn.execute(select(func.count()).select_from(q)).scalar_one()
        expired = conn.execute(select(q.c.valid_to).where(q.c.institution_id == "zaduo-tibetan")).scalars().all()
        resources = conn.execute(select(func.count()).select_from(t.resource)).scalar_one()
    engine.dispose()
    return {"kinds": kinds, "span": span, "channels": channels, "reminded": reminded, "adopted": adopted,
            "reasons": reasons, "quals": quals, "expired": expired, "resources": resources}


def test_replay_gives_the_reference_regions_rates_and_a_second_run_changes_nothing(fresh_db: str) -> None:
    from typer.testing import CliRunner

    from healthlink.cli.main import app
    from healthlink.recognition.service import DECLINE_REASONS

    r = CliRunner().invoke(app, ["demo", "--patients", "300", "--replay-days", "30", "--replay-orders", "120"])
    assert r.exit_code == 0, _said(r)
    said = _said(r)
    assert "demo replay" in said and "adopted (recognition" in said, said
    ev = _events(fresh_db)
    # qualifications were seeded with the region: every hospital, most townships, one expired
    assert ev["quals"] > 14 and ev["expired"] == [date(2026, 6, 30)]
    kinds = ev["kinds"]
    assert kinds["checked"] >= 100 and ev["channels"] == {"demo"}
    assert kinds["adopted"] > 0 and kinds["declined"] > 0 and kinds["reordered"] >= kinds["declined"]
    adopted_checks = {c for c, _ in ev["adopted"]}
    assert len(adopted_checks) / len(ev["reminded"]) > 0.90  # recognition rate, as the rates count it
    assert sum(p for _, p in ev["adopted"]) > 0  # savings, in fen
    assert ev["reasons"] <= set(DECLINE_REASONS)
    # the events are spread over the last 30 days (region time), not stamped now
    now = datetime.now(ZoneInfo("Asia/Shanghai"))
    lo, hi = (datetime.fromtimestamp(x / 1e6, ZoneInfo("Asia/Shanghai")) for x in ev["span"])
    assert now - timedelta(days=31) <= lo and hi <= now and hi - lo > timedelta(days=20)
    assert lo.date() >= now.date() - timedelta(days=29)  # inside the rates page's default period

    # the rates as the service computes them for the rates page
    from healthlink.access import RequestContext
    from healthlink.access.context import Actor
    from healthlink.access.scopes import parse_scopes
    from healthlink.runtime import Platform
    from healthlink.settings import load_settings

    plat = Platform.start(load_settings().model_copy(update={"ledger_sequencer": False}))
    try:
        leader = Actor("user", "leader-test", "leader", None, frozenset({"health_commission_leader"}),
                       parse_scopes("user/*.rs"))
        rates = plat.recognition.rates(RequestContext(actor=leader))
    finally:
        plat.close()
    totals = rates["totals"]
    assert totals["checked"] == kinds["checked"]  # the default period holds the whole replay
    assert totals["recognition_rate"] > 0.90 and float(totals["savings_yuan"]) > 0
    assert totals["retrieval_rate"] > 0.6
    assert rates["reasons"] and {x["reason"] for x in rates["reasons"]} <= set(DECLINE_REASONS)

    # idempotent: a second run reports the stored replay and writes nothing
    r = CliRunner().invoke(app, ["demo", "--patients", "300", "--replay-days", "30", "--replay-orders", "120"])
    assert r.exit_code == 0 and "demo replay already present" in _said(r), _said(r)
    again = _events(fresh_db)
    assert again == ev


def test_qualification_plan_covers_hospitals_most_townships_and_one_expiry() -> None:
    from healthlink.demogen.recognition import EXPIRED, basic_items, qualification_plan
    from healthlink.demogen.region import institutions
    from healthlink.recognition.catalogue import load

    cat = load()
    plan = qualification_plan(cat)
    tiers = {i.id: i.tier for i in institutions()}
    everything = {q.institution_id for q in plan if q.item_id == "*"}
    assert everything == {i for i, tier in tiers.items() if tier != "township"}
    assert [q.valid_to for q in plan if q.institution_id == EXPIRED] == [date(2026, 6, 30)]
    assert all(q.valid_to is None for q in plan if q.institution_id != EXPIRED)
    townships = {q.institution_id for q in plan if tiers[q.institution_id] == "township"}
    assert len(townships) == 40 and sum(1 for tr in tiers.values() if tr == "township") == 50
    basics = basic_items(cat)
    assert {"HR-P-CBC", "HR-P-ELEC", "HR-P-GLU", "HR-P-RFT", "HR-K", "HR-HGB", "HR-HBA1C"} <= set(basics)
    assert not {"HR-P-LFT", "HR-CT-CHEST"} & set(basics)
    assert all(cat.by_id(b) is not None for b in basics)
    assert len(plan) == len({(q.institution_id, q.item_id) for q in plan})  # no duplicates


def test_the_demo_patient_has_recent_results_to_recognise(fresh_db: str) -> None:
    from typer.testing import CliRunner

    from healthlink.access import RequestContext
    from healthlink.access.context import Actor
    from healthlink.access.scopes import parse_scopes
    from healthlink.cli.main import app
    from healthlink.demo import demo_logins, demo_patient
    from healthlink.recognition.service import Order
    from healthlink.runtime import Platform
    from healthlink.settings import load_settings

    r = CliRunner().invoke(app, ["demo", "--patients", "300"])
    assert r.exit_code == 0, _said(r)
    assert "demo patient's recent results at" in _said(r)
    again = CliRunner().invoke(app, ["demo", "--patients", "300"])
    assert again.exit_code == 0 and "demo patient's recent results at" in _said(again)
    plat = Platform.start(load_settings().model_copy(update={"ledger_sequencer": False}))
    try:
        dp = demo_patient(plat)
        assert dp is not None
        home = demo_logins()[0].institution
        doctor = Actor("user", "doctor", "doctor", home, frozenset({"doctor"}), parse_scopes("user/*.cruds"),
                       practitioner_id="demo-doctor")
        res = plat.recognition.check(RequestContext(actor=doctor), dp.patient_id,
                                     [Order("http://loinc.org", "2823-3"), Order("http://loinc.org", "24627-2")],
                                     encounter_id=dp.encounter_id, record=False)
        got = {(ln.item.id, h.disclosed, h.institution_id != home) for ln in res.lines for h in ln.hits}
        # without the patient's authorisation: hints (item, institution, date) from another institution
        assert ("HR-K", False, True) in got and ("HR-CT-CHEST", False, True) in got
        with plat.db.read() as conn:
            n = conn.execute(select(func.count()).select_from(t.resource)
                             .where(t.resource.c.res_id.like("demo-recent-%"))).scalar_one()
        assert n > 5  # written once: the second run added nothing (ids are fixed)
    finally:
        plat.close()
