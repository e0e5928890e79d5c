"""The tamper-evident ledger on the real database (issue 6): the sequencer integrates audit records
and result versions, proofs verify against signed checkpoints, the append-only guards hold, and
`ledger verify` catches each kind of tampering done directly in SQL and names the leaf.

Tamper tests run on a database of their own (``fresh_db``): they break it on purpose.
"""

from __future__ import annotations

import base64
import os

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from healthlink.access import RequestContext
from healthlink.access.context import Actor
from healthlink.access.scopes import parse_scopes
from healthlink.db import tables as t
from healthlink.db.migrate import upgrade
from healthlink.ledger import merkle
from healthlink.ledger import setup as ledger_setup
from healthlink.ledger.verify import verify
from healthlink.runtime import Platform
from healthlink.settings import Settings


def doctor(org: str) -> Actor:
    return Actor("user", f"dr-{org}", "Dr Test", org, frozenset({"doctor"}), parse_scopes("user/*.cruds"),
                 practitioner_id=f"prac-{org}")


def observation(pid: str, value: float) -> dict:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "subject": {"reference": f"Patient/{pid}"}, "valueQuantity": {"value": value, "unit": "mmol/L"}}


@pytest.fixture
def region(fresh_db, monkeypatch):  # noqa: ANN001, ANN201
    """A platform on its own database with some audited reads and results, the ledger integrated and
    checkpointed (no background sequencer: the test drives it)."""
    monkeypatch.setenv("HEALTHLINK_LEDGER_SEQUENCER", "false")
    settings = Settings()
    plat = Platform.start(settings)
    upgrade(plat.db)
    repo = plat.repository(RequestContext(actor=doctor("org-a")))
    pid = repo.create({"resourceType": "Patient", "name": [{"family": "Test"}]}, res_type="Patient").stored.res_id
    obs = [repo.create(observation(pid, 5.0 + i), res_type="Observation").stored.res_id for i in range(6)]
    for o in obs:
        repo.read("Observation", o)
    repo.update("Observation", obs[0], dict(observation(pid, 9.9), id=obs[0]), if_match=None)
    assert plat.ledger.integrate() > 0
    plat.ledger.checkpoint()
    yield plat, settings, obs
    plat.close()


def counts(plat: Platform) -> tuple[int, int]:
    with plat.db.read() as conn:
        audits = conn.execute(select(t.audit_event.c.seq)).all()
        leaves = conn.execute(select(t.ledger_leaf.c.idx)).all()
    return len(audits), len(leaves)


def test_every_audit_record_and_result_version_becomes_a_leaf_and_proofs_verify(region):  # noqa: ANN001
    plat, settings, obs = region
    with plat.db.read() as conn:
        n_audit = conn.execute(select(t.audit_event.c.seq)).all().__len__()
        n_results = conn.execute(select(t.resource_version.c.rid).where(
            t.resource_version.c.res_type == "Observation")).all().__len__()
        leaves = conn.execute(select(t.ledger_leaf.c.idx, t.ledger_leaf.c.hash).order_by(t.ledger_leaf.c.idx)).all()
    assert len(leaves) == n_audit + n_results == plat.ledger.head().size
    assert n_results == 7  # six results and one new version
    hashes = [bytes(h) for _, h in leaves]
    head = plat.ledger.head()
    assert head.root == merkle.root(hashes)
    cp = plat.ledger.checkpoints()[0]
    size, root = ledger_setup.note_opener(settings)(cp["note"])
    assert (size, root) == (head.size, head.root)
    import random

    rnd = random.Random(6)

    def flipped(proof: list[bytes]) -> list[bytes]:
        k = rnd.randrange(len(proof))
        b = bytearray(proof[k])
        b[rnd.randrange(32)] ^= 1 << rnd.randrange(8)
        return proof[:k] + [bytes(b)] + proof[k + 1:]

    for i in range(size):  # every proof the ledger gives verifies; a flipped bit or a wrong size fails
        proof = plat.ledger.inclusion_proof(i, size)
        assert merkle.verify_inclusion(hashes[i], i, size, proof, root)
        if proof:
            assert not merkle.verify_inclusion(hashes[i], i, size, flipped(proof), root)
        assert not merkle.verify_inclusion(hashes[i], i, 2 * size + 1, proof, root)  # another path length
    for old in range(1, size):
        proof = plat.ledger.consistency_proof(old, size)
        assert merkle.verify_consistency(old, size, merkle.root(hashes[:old]), root, proof)
        assert plat.ledger.root_at(old) == merkle.root(hashes[:old])
        if proof:
            assert not merkle.verify_consistency(old, size, merkle.root(hashes[:old]), root, flipped(proof))
        assert not merkle.verify_consistency(old, 2 * size + 1, merkle.root(hashes[:old]), root, proof)
    assert plat.ledger.integrate() == 0  # nothing pending, nothing repeated
    rep = verify(plat.db, open_note=ledger_setup.note_opener(settings))
    assert rep.ok, rep.problems
    assert rep.size == size and rep.checkpoints == 1


def test_a_result_stamped_before_the_high_water_mark_but_committed_later_is_integrated(region, monkeypatch):  # noqa: ANN001
    """A result version is timestamped before its transaction commits, so it can reach the store
    after a later-stamped one has been integrated.  The sequencer's ordinary pass reads only from
    the high-water mark on (re-reading the minute before it on every pass cost a scan of everything
    just loaded, each second); its periodic sweep of that minute finds the late one."""
    from healthlink.fhir import store as store_mod
    from healthlink.ledger import log as ledger_log
    plat, settings, obs = region
    with plat.db.read() as conn:
        hw = conn.execute(select(t.ledger_state.c.result_hw)).scalar_one()
    repo = plat.repository(RequestContext(actor=doctor("org-a")))
    pid = repo.read("Observation", obs[1]).json()["subject"]["reference"].split("/")[1]
    monkeypatch.setattr(store_mod, "now_us", lambda: hw - 20_000_000)  # stamped 20 s before the mark
    late = repo.create(observation(pid, 6.6), res_type="Observation").stored
    monkeypatch.undo()
    assert late.last_updated < hw

    def leaf_of(rid: int) -> int | None:
        with plat.db.read() as conn:
            return conn.execute(select(t.ledger_leaf.c.idx).where(t.ledger_leaf.c.result_rid == rid)).scalar()

    plat.ledger._last_result_sweep = ledger_log.time.monotonic()  # the sweep just ran
    plat.ledger.integrate()
    assert leaf_of(late.rid) is None  # an ordinary pass starts at the mark
    plat.ledger._last_result_sweep -= ledger_log.RESULT_SWEEP_SECONDS  # the sweep is due
    assert plat.ledger.integrate() >= 1
    assert leaf_of(late.rid) is not None
    assert plat.ledger.integrate() == 0  # nothing repeated
    rep = verify(plat.db, open_note=ledger_setup.note_opener(settings))
    assert rep.ok, rep.problems


def test_the_application_cannot_update_or_delete_audit_or_ledger_rows(region):  # noqa: ANN001
    plat, _, _ = region
    for stmt in ("UPDATE audit_event SET username = 'x'", "DELETE FROM audit_event",
                 "DELETE FROM audit_entity", "UPDATE ledger_leaf SET hash = hash",
                 "DELETE FROM ledger_leaf", "DELETE FROM ledger_node", "DELETE FROM ledger_checkpoint"):
        with pytest.raises(DBAPIError, match="append-only"):
            with plat.db.write() as conn:
                conn.execute(text(stmt))


def _tamper(plat: Platform, *stmts: str | tuple[str, dict]) -> None:
    """What a database administrator could do: switch the guards off, change rows."""
    with plat.db.write() as conn:
        if conn.dialect.name == "postgresql":
            for table in ("audit_event", "audit_entity", "ledger_leaf", "ledger_node", "ledger_checkpoint"):
                conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        else:
            for (name,) in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).all():
                conn.execute(text(f"DROP TRIGGER {name}"))
        for s in stmts:
            sql, params = s if isinstance(s, tuple) else (s, {})
            conn.execute(text(sql), params)


def _leaf_of_seq(plat: Platform, seq: int) -> int:
    with plat.db.read() as conn:
        return conn.execute(select(t.ledger_leaf.c.idx).where(t.ledger_leaf.c.audit_seq == seq)).scalar_one()


def _seqs(plat: Platform) -> list[int]:
    with plat.db.read() as conn:
        return list(conn.execute(select(t.audit_event.c.seq).order_by(t.audit_event.c.seq)).scalars())


def check(plat: Platform, settings: Settings, expect_index: int | None, words: str, **kw):  # noqa: ANN003, ANN201
    rep = verify(plat.db, open_note=ledger_setup.note_opener(settings), **kw)
    assert not rep.ok
    assert any(words in p for p in rep.problems), rep.problems
    if expect_index is not None:
        assert rep.first_bad == expect_index, (rep.first_bad, rep.problems)
    return rep


def test_verify_catches_an_altered_audit_record(region):  # noqa: ANN001
    plat, settings, _ = region
    seq = _seqs(plat)[3]
    _tamper(plat, (f"UPDATE audit_event SET content = replace(content, :a, :b) WHERE seq = {seq}",
                   {"a": '"outcome":"0"', "b": '"outcome":"4"'}),
            f"UPDATE audit_event SET content = content || ' ' WHERE seq = {seq}")
    check(plat, settings, _leaf_of_seq(plat, seq), "was altered")


def test_verify_catches_a_deleted_audit_record(region):  # noqa: ANN001
    plat, settings, _ = region
    seq = _seqs(plat)[2]
    _tamper(plat, f"DELETE FROM audit_entity WHERE seq = {seq}", f"DELETE FROM audit_event WHERE seq = {seq}")
    check(plat, settings, _leaf_of_seq(plat, seq), "was deleted")


def test_verify_catches_reordered_audit_records(region):  # noqa: ANN001
    plat, settings, _ = region
    s1, s2 = _seqs(plat)[1:3]
    with plat.db.read() as conn:
        c1 = conn.execute(select(t.audit_event.c.content).where(t.audit_event.c.seq == s1)).scalar_one()
        c2 = conn.execute(select(t.audit_event.c.content).where(t.audit_event.c.seq == s2)).scalar_one()
    _tamper(plat, (f"UPDATE audit_event SET content = :c WHERE seq = {s1}", {"c": c2}),
            (f"UPDATE audit_event SET content = :c WHERE seq = {s2}", {"c": c1}))
    check(plat, settings, min(_leaf_of_seq(plat, s1), _leaf_of_seq(plat, s2)), "was altered")


def test_verify_catches_a_forged_record_below_the_high_water_mark(region):  # noqa: ANN001
    plat, settings, _ = region
    top = _seqs(plat)[-1]
    _tamper(plat)
    with plat.db.write() as conn:
        row = conn.execute(select(t.audit_event).where(t.audit_event.c.seq == top)).one()._asdict()
        row.update(seq=0, event_id="forged-event", recorded=1)
        conn.execute(t.audit_event.insert().values(**row))
    check(plat, settings, None, "not in the ledger")


def test_verify_catches_truncation_and_names_where(region):  # noqa: ANN001
    plat, settings, _ = region
    size = plat.ledger.head().size
    _tamper(plat, f"DELETE FROM ledger_leaf WHERE idx >= {size - 3}")
    check(plat, settings, size - 3, "truncated")


def test_verify_catches_an_altered_result_in_either_table(region):  # noqa: ANN001
    plat, settings, obs = region
    with plat.db.read() as conn:
        rid = conn.execute(select(t.resource.c.rid).where(t.resource.c.res_id == obs[2])).scalar_one()
        leaf = conn.execute(select(t.ledger_leaf.c.idx).where(t.ledger_leaf.c.result_rid == rid)).scalar_one()
    _tamper(plat, f"UPDATE resource SET content = replace(content, '7.0', '4.0') WHERE rid = {rid}")
    check(plat, settings, leaf, f"Observation/{obs[2]} was altered")
    _tamper(plat, f"UPDATE resource_version SET content = replace(content, '7.0', '4.0') WHERE rid = {rid}")
    check(plat, settings, leaf, "was altered")


def test_verify_catches_leaves_rewritten_to_match_an_altered_record(region):  # noqa: ANN001
    """The administrator alters a record and recomputes its leaf hash: the leaf re-derives, but the
    tree no longer has the root its signed checkpoint states."""
    plat, settings, _ = region
    from healthlink.ledger.log import audit_leaf_data

    seq = _seqs(plat)[4]
    idx = _leaf_of_seq(plat, seq)
    with plat.db.read() as conn:
        content, salt = conn.execute(select(t.audit_event.c.content, t.ledger_leaf.c.salt).join(
            t.ledger_leaf, t.ledger_leaf.c.audit_seq == t.audit_event.c.seq).where(t.audit_event.c.seq == seq)).one()
    new = content.replace('"outcome":"0"', '"outcome":"4"')
    assert new != content
    h = merkle.leaf_hash(audit_leaf_data(seq, bytes(salt), new)).hex()
    lit = f"X'{h}'" if plat.db.is_sqlite else f"'\\x{h}'::bytea"
    _tamper(plat, (f"UPDATE audit_event SET content = :c WHERE seq = {seq}", {"c": new}),
            f"UPDATE ledger_leaf SET hash = {lit} WHERE idx = {idx}")
    rep = check(plat, settings, None, "does not match its signed checkpoint")
    assert rep.first_bad in (idx - idx % 2, idx)


def test_purge_past_retention_keeps_the_ledger_verifiable(region):  # noqa: ANN001
    plat, settings, _ = region
    import time

    n = plat.ledger.purge(retention_days=183, now=time.time_ns() // 1000 + 200 * 86_400 * 1_000_000)
    assert n > 0
    with plat.db.read() as conn:
        assert conn.execute(select(t.ledger_leaf.c.idx).where(t.ledger_leaf.c.salt.is_(None))).all().__len__() == n
    rep = verify(plat.db, open_note=ledger_setup.note_opener(settings))
    assert rep.ok, rep.problems


def test_a_bad_checkpoint_signature_is_reported(region):  # noqa: ANN001
    plat, settings, _ = region
    cp = plat.ledger.checkpoints()[0]
    note = cp["note"]
    sig = note.rsplit(" ", 1)[1].strip()
    raw = bytearray(base64.b64decode(sig))
    raw[-1] ^= 1
    bad = note.replace(sig, base64.b64encode(bytes(raw)).decode())
    _tamper(plat, (f"UPDATE ledger_checkpoint SET note = :n WHERE size = {cp['size']}", {"n": bad}))
    check(plat, settings, None, "signature does not verify")


def test_ledger_commands(region):  # noqa: ANN001
    from typer.testing import CliRunner

    from healthlink.cli.main import app

    plat, settings, obs = region
    runner = CliRunner()
    plat.repository(RequestContext(actor=doctor("org-a"))).read("Observation", obs[1])
    r = runner.invoke(app, ["ledger", "integrate"])
    assert r.exit_code == 0 and "leaves integrated" in r.output, r.output
    r = runner.invoke(app, ["ledger", "checkpoint"])
    assert r.exit_code == 0 and r.output.startswith(settings.ledger_origin + "\n"), r.output
    r = runner.invoke(app, ["ledger", "vkey"])
    assert r.output.strip() == ledger_setup.signer(settings).vkey
    r = runner.invoke(app, ["ledger", "verify", "--json"])
    assert r.exit_code == 0 and '"ok": true' in r.output, r.output
    r = runner.invoke(app, ["ledger", "purge", "--days", "30"])
    assert r.exit_code == 2  # below the legal minimum
    r = runner.invoke(app, ["ledger", "purge"])
    assert r.exit_code == 0 and "0 audit records" in r.output  # nothing is six years old


def test_verify_in_worker_processes_finds_the_same(region, monkeypatch):  # noqa: ANN001
    """A large log is re-derived by worker processes over index ranges: same verdict, same index."""
    from healthlink.ledger import verify as V

    plat, settings, _ = region
    monkeypatch.setattr(V, "PARALLEL_FROM", 1)
    rep = verify(plat.db, open_note=ledger_setup.note_opener(settings), workers=2)
    assert rep.ok, rep.problems
    seq = _seqs(plat)[5]
    _tamper(plat, (f"UPDATE audit_event SET content = content || :x WHERE seq = {seq}", {"x": " "}))
    rep = verify(plat.db, open_note=ledger_setup.note_opener(settings), workers=2)
    assert not rep.ok and rep.first_bad == _leaf_of_seq(plat, seq), rep.problems


def test_a_process_with_another_key_does_not_sign_the_log(region, tmp_path, monkeypatch):  # noqa: ANN001
    """A command run with another data directory would generate a key of its own: it must not add a
    checkpoint the log's verifiers reject."""
    from healthlink.ledger.log import Ledger

    plat, settings, obs = region
    other = settings.model_copy(update={"data_dir": tmp_path / "elsewhere"})
    stranger = ledger_setup.ledger(plat.db, other)
    plat.repository(RequestContext(actor=doctor("org-a"))).read("Observation", obs[0])
    stranger.integrate()
    with pytest.raises(LookupError, match="does not verify with this process's ledger key"):
        stranger.checkpoint()
    assert isinstance(stranger, Ledger)
    assert plat.ledger.checkpoint()[0] == plat.ledger.head().size  # the log's own key still signs
    assert verify(plat.db, open_note=ledger_setup.note_opener(settings)).ok


# The plan cache is PostgreSQL's: this test is collected in the PostgreSQL pass of the suite.
if os.environ.get("HEALTHLINK_TEST_DB", "sqlite") == "postgresql":
    def test_the_sequencer_plans_its_high_water_mark_reads_for_the_mark_of_each_pass(fresh_db, monkeypatch):  # noqa: ANN001
        """The sequencer reads what lies above its high-water marks.  A generic plan, which the
        driver's prepared statements get after a few passes, cannot know how narrow that range is:
        it estimates a third of the table and scans accordingly.  Every pass is planned for its own
        mark instead; and records added between passes still become leaves."""
        monkeypatch.setenv("HEALTHLINK_LEDGER_SEQUENCER", "false")
        monkeypatch.setenv("HEALTHLINK_DB_POOL_SIZE", "1")  # the sequencer's connection is the one inspected
        plat = Platform.start(Settings())
        try:
            upgrade(plat.db)
            repo = plat.repository(RequestContext(actor=doctor("org-a")))
            pid = repo.create({"resourceType": "Patient", "name": [{"family": "Plan"}]}, res_type="Patient").stored.res_id
            for i in range(14):  # past the driver's prepare threshold and the server's five custom plans
                repo.create(observation(pid, 5.0 + i), res_type="Observation")
                assert plat.ledger.integrate() >= 2  # the create's audit record and its result version
            with plat.db.read() as conn:
                plans = conn.execute(text(
                    "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements "
                    "WHERE statement LIKE '%FROM resource_version%' OR statement LIKE '%FROM audit_event%'")).all()
            assert {p.statement.split("FROM ")[1].split()[0] for p in plans} >= {"resource_version", "audit_event"}
            assert all(p.generic_plans == 0 and p.custom_plans > 0 for p in plans), plans
            audits, leaves = counts(plat)
            assert leaves >= audits > 14
        finally:
            plat.close()
