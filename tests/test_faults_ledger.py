"""Fault test (issue 9): the ledger sequencer that saw an audit number skipped dies before that
transaction commits.  PostgreSQL hands out sequence numbers before commit, so a sequencer can
see record n+1 committed while n is still in flight; it remembers n in its process's memory.
A sequencer that starts afterwards (the restarted process, or another worker) must still
integrate n, else the ledger misses a record (docs/faults.md).  Always on a throw-away
PostgreSQL cluster: on SQLite writers are serialised and no number is ever skipped."""

from __future__ import annotations

import pytest
from faultkit import open_platform, pg_cluster, settle_and_verify_ledger  # noqa: F401
from sqlalchemy import func, select

from healthlink.db import tables as t
from healthlink.ledger import AuditRecord
from healthlink.ledger.audit import insert_records
from healthlink.ledger.log import Ledger

pytestmark = pytest.mark.fault


def test_a_record_skipped_by_a_sequencer_that_died_is_integrated_by_the_next_one(pg_cluster, tmp_path):
    pg_cluster.sql("CREATE DATABASE hl_fault")
    plat = open_platform(pg_cluster.url("hl_fault"), tmp_path / "var", ledger_sequencer=False)
    try:
        agent = plat.system_repository("tests").ctx.agent()
        in_flight = plat.db.write()
        conn = in_flight.__enter__()  # a write transaction that has drawn an audit number
        insert_records(conn, [AuditRecord("read", agent)])
        held = conn.execute(select(func.max(t.audit_event.c.seq))).scalar()
        plat.audit.record(AuditRecord("read", agent))  # a later number, committed first
        first = Ledger(plat.db)
        assert first.integrate() == 1  # the later record; the held number is remembered ...
        del first  # ... by a process that now dies
        in_flight.__exit__(None, None, None)  # the held transaction commits
        assert Ledger(plat.db).integrate() == 1  # the restarted sequencer finds it
        with plat.db.read() as c:
            assert c.scalar(select(func.count()).where(t.ledger_leaf.c.audit_seq == held)) == 1
        rep = settle_and_verify_ledger(plat)
        assert rep.size >= 2
    finally:
        plat.close()
