"""The ledger's status for the audit administrator (page and API)."""

from __future__ import annotations

from sqlalchemy import select

from healthlink.db import Database
from healthlink.db import tables as t
from healthlink.ledger import setup as ledger_setup
from healthlink.ledger.log import Ledger
from healthlink.settings import Settings


def status(db: Database, ledger: Ledger, settings: Settings) -> dict:
    head = ledger.head()
    v = t.ledger_verification
    with db.read() as conn:
        last = conn.execute(select(v).order_by(v.c.id.desc()).limit(1)).first()
        st = conn.execute(select(t.ledger_state).where(t.ledger_state.c.id == 1)).one()
    sizes = ledger.witness_sizes()
    return {
        "origin": settings.ledger_origin,
        "vkey": ledger_setup.signer(settings).vkey,
        "size": head.size,
        "root": head.root.hex(),
        "updated": st.updated,
        "retention_days": settings.audit_retention_days,
        "retention_cutoff": st.retention_cutoff,
        "checkpoints": ledger.checkpoints(limit=5),
        "witnesses": [{"url": url, "name": ver.name, "vkey": ver.vkey, "cosigned_size": sizes.get(ver.name)}
                      for url, ver in ledger.witnesses],
        "last_verification": None if last is None else {
            "started": last.started, "finished": last.finished, "size": last.size, "ok": last.ok,
            "first_bad": last.first_bad, "message": last.message},
        "sequencer_error": ledger.last_error,
    }


def audit_seq(db: Database, event_id: str) -> int | None:
    with db.read() as conn:
        return conn.execute(select(t.audit_event.c.seq).where(t.audit_event.c.event_id == event_id)).scalar()
