"""The ledger with a real witness (issue 6, must show): `healthlink witness serve` cosigns two
checkpoints pushed by the log (the second with a consistency proof), the cosignatures are stored
with the checkpoints, and a truncation of audit records, leaves and local checkpoints together —
which the local data alone no longer reveals — is caught by `healthlink ledger verify --witness`.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from servers import BIN, free_port, stop, wait_until_up
from sqlalchemy import select, text, update

from healthlink.access import RequestContext
from healthlink.access.context import Actor
from healthlink.access.scopes import parse_scopes
from healthlink.db import tables as t
from healthlink.db.migrate import upgrade
from healthlink.ledger import merkle
from healthlink.ledger import setup as ledger_setup
from healthlink.ledger.checkpoint import Verifier, open_note
from healthlink.runtime import Platform
from healthlink.settings import Settings


@pytest.fixture
def witness(tmp_path, fresh_db, monkeypatch):  # noqa: ANN001, ANN201
    monkeypatch.setenv("HEALTHLINK_LEDGER_SEQUENCER", "false")
    log_vkey = ledger_setup.signer(Settings()).vkey
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHLINK_")}
    init = subprocess.run([str(BIN), "witness", "init", "--dir", str(tmp_path / "w"), "--name",
                           "witness.commission.example/w1"], env=env, capture_output=True, text=True, check=True)
    vkey = init.stdout.strip()
    port = free_port()
    proc = subprocess.Popen([str(BIN), "witness", "serve", "--dir", str(tmp_path / "w"), "--log",
                             f"{Settings().ledger_origin} {log_vkey}", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(proc, url, timeout=30)
    monkeypatch.setenv("HEALTHLINK_LEDGER_WITNESSES", f'["{url} {vkey}"]')
    yield url, Verifier.from_vkey(vkey)
    stop(proc)


def _activity(plat: Platform, n: int) -> None:
    a = Actor("user", "dr-w", "Dr W", "org-w", frozenset({"doctor"}), parse_scopes("user/*.cruds"),
              practitioner_id="prac-w")
    repo = plat.repository(RequestContext(actor=a))
    pid = repo.create({"resourceType": "Patient", "name": [{"family": "W"}]}, res_type="Patient").stored.res_id
    for i in range(n):
        oid = repo.create({"resourceType": "Observation", "status": "final",
                           "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
                           "subject": {"reference": f"Patient/{pid}"}, "valueQuantity": {"value": i}},
                          res_type="Observation").stored.res_id
        repo.read("Observation", oid)


def test_witness_cosigns_and_catches_a_truncation_the_local_data_hides(witness):  # noqa: ANN001
    url, wkey = witness
    settings = Settings()
    plat = Platform.start(settings)
    try:
        upgrade(plat.db)
        _activity(plat, 3)
        plat.ledger.integrate()
        first = plat.ledger.checkpoint()
        _activity(plat, 4)
        plat.ledger.integrate()
        second = plat.ledger.checkpoint()
        assert first[0] < second[0]
        cps = {c["size"]: c for c in plat.ledger.checkpoints()}
        for size in (first[0], second[0]):
            [cosig] = cps[size]["cosignatures"]
            assert open_note(cps[size]["note"] + cosig["line"], [wkey])  # the witness's cosignature verifies
        assert plat.ledger.witness_sizes() == {wkey.name: second[0]}

        env = {**os.environ}
        ok = subprocess.run([str(BIN), "ledger", "verify", "--witness", url], env=env, capture_output=True,
                            text=True, timeout=120)
        assert ok.returncode == 0, ok.stdout + ok.stderr

        # the administrator cuts the tail: audit records, their leaves and nodes, the checkpoints,
        # and rewrites the sequencer's state to match, so the local data is consistent again
        keep = first[0]
        with plat.db.write() as conn:
            if conn.dialect.name == "postgresql":
                for table in ("audit_event", "audit_entity", "ledger_leaf", "ledger_node", "ledger_checkpoint",
                              "ledger_cosignature"):
                    conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            else:
                for (name,) in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).all():
                    conn.execute(text(f"DROP TRIGGER {name}"))
            seqs = [s for (s,) in conn.execute(select(t.ledger_leaf.c.audit_seq).where(
                t.ledger_leaf.c.idx >= keep, t.ledger_leaf.c.audit_seq.is_not(None)))]
            conn.execute(t.audit_entity.delete().where(t.audit_entity.c.seq.in_(seqs)))
            conn.execute(t.audit_event.delete().where(t.audit_event.c.seq.in_(seqs)))
            conn.execute(t.ledger_leaf.delete().where(t.ledger_leaf.c.idx >= keep))
            conn.execute(t.ledger_cosignature.delete())
            conn.execute(t.ledger_checkpoint.delete().where(t.ledger_checkpoint.c.size > keep))
            hashes = [bytes(h) for (h,) in conn.execute(select(t.ledger_leaf.c.hash).order_by(t.ledger_leaf.c.idx))]
            fr = merkle.Frontier()
            for h in hashes:
                fr.append(h)
            conn.execute(update(t.ledger_state).values(size=keep, frontier=fr.to_bytes(),
                                                       audit_hw=max(s for (s,) in conn.execute(
                                                           select(t.ledger_leaf.c.audit_seq).where(
                                                               t.ledger_leaf.c.audit_seq.is_not(None))))))
        alone = subprocess.run([str(BIN), "ledger", "verify"], env=env, capture_output=True, text=True, timeout=120)
        assert alone.returncode == 0, alone.stdout + alone.stderr  # the local data no longer shows it
        caught = subprocess.run([str(BIN), "ledger", "verify", "--witness", url], env=env, capture_output=True,
                                text=True, timeout=120)
        assert caught.returncode == 1
        assert f"the witness cosigned size {second[0]}" in caught.stderr
        assert f"first bad leaf index {keep}" in caught.stderr
    finally:
        plat.close()
