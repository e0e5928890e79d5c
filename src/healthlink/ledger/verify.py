"""``healthlink ledger verify``: recompute the Merkle tree from the stored records and check every
stored checkpoint (and, with a witness, the witness's checkpoint).

It streams (memory stays flat) through the leaves in order, re-deriving each leaf from the record
it stands for (the audit record's stored JSON, or the result version's) and its salt, and finds:

* an altered record (the re-derived leaf differs from the stored leaf hash);
* a deleted record (a leaf whose record is gone) or a deleted leaf (a gap in the leaf numbers);
* a reordered record (its leaf data names its sequence number: a record moved to another leaf no
  longer re-derives that leaf);
* an inserted record (an audit record older than the sequencer's window that no leaf covers);
* a truncation (fewer leaves than the latest checkpoint, or than the witness has cosigned);
* leaves rewritten to match altered records (the tree no longer has the root its signed checkpoint
  states; the first bad leaf is then found from the stored subtree hashes);
* an altered current version of a clinical result (``resource`` no longer equals its ledgered
  version);
* a purged record that is not past retention, or a checkpoint whose signature does not verify.

It names the first bad leaf index.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import and_, exists, false, select

from healthlink.db import Database
from healthlink.db import tables as t
from healthlink.ledger import merkle
from healthlink.ledger.log import RESULT_TYPES, audit_leaf_data, now_us, result_leaf_data

# a checkpoint note -> (size, root), raising ValueError when its signature does not verify
NoteOpener = Callable[[str], tuple[int, bytes]]


@dataclass
class Report:
    ok: bool = True
    size: int = 0
    first_bad: int | None = None
    problems: list[str] = field(default_factory=list)
    checkpoints: int = 0
    cosignatures: int = 0
    witness_size: int | None = None
    seconds: float = 0.0

    def bad(self, index: int | None, message: str) -> None:
        self.ok = False
        if index is not None and (self.first_bad is None or index < self.first_bad):
            self.first_bad = index
        if len(self.problems) < 100:
            self.problems.append(message)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def verify(db: Database, *, open_note: NoteOpener | None = None,
           witness_checkpoint: Callable[[], tuple[int, bytes] | None] | None = None,
           gap_seconds: float = 600.0, record: bool = True, chunk: int = 5000,
           workers: int | None = None) -> Report:
    """Verify the whole ledger; ``open_note`` checks checkpoint signatures, ``witness_checkpoint``
    fetches the (size, root) a witness cosigned for this log."""
    started = time.monotonic()
    rep = Report()
    run_id = None
    if record:
        with db.write() as conn:
            run_id = conn.execute(t.ledger_verification.insert().values(started=now_us())
                                  .returning(t.ledger_verification.c.id)).scalar_one()
    cp = t.ledger_checkpoint
    with db.read() as conn:
        cps = conn.execute(select(cp.c.size, cp.c.root, cp.c.note).order_by(cp.c.size)).all()
        rep.cosignatures = conn.execute(select(t.ledger_cosignature.c.id)).all().__len__()
        state = conn.execute(select(t.ledger_state).where(t.ledger_state.c.id == 1)).one()
    checkpoints: dict[int, bytes] = {}
    for c in cps:
        rep.checkpoints += 1
        if open_note is not None:
            try:
                size, root = open_note(c.note)
            except ValueError as exc:
                rep.bad(None, f"checkpoint of size {c.size}: its signature does not verify ({exc})")
                continue
            if size != c.size or root != c.root:
                rep.bad(None, f"checkpoint of size {c.size}: the stored size/root differ from the signed note")
                continue
        checkpoints[c.size] = c.root
    latest_cp = max(checkpoints) if checkpoints else 0

    frontier = merkle.Frontier()
    expect = 0
    good_until = 0  # largest checkpoint size whose root matched
    mismatch: tuple[int, int] | None = None  # (from good size, to bad size)
    size = state.size
    # Re-deriving each leaf from its record is the costly part and independent per leaf: it runs in
    # worker processes over ranges of leaf indices when the log is large; the tree itself is rebuilt
    # here from the stored leaf hashes, in order.
    n_workers = max(1, min(workers or os.cpu_count() or 1, 8)) if size >= PARALLEL_FROM else 1
    ranges = _ranges(size, n_workers * 4) if n_workers > 1 else []
    pool = None
    futures = []
    if ranges:
        pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=multiprocessing.get_context("spawn"))
        futures = [pool.submit(_rederive_url, db.url, lo, hi, state.retention_cutoff, chunk) for lo, hi in ranges]
    leaf = t.ledger_leaf
    try:
        with db.read() as conn:
            result = conn.execution_options(stream_results=True, yield_per=chunk * 4).execute(
                select(leaf.c.idx, leaf.c.hash).order_by(leaf.c.idx))
            for idx, h in result:
                if idx != expect:
                    rep.bad(expect, f"leaf {expect} is missing (leaves jump from {expect - 1} to {idx})")
                    expect = idx  # carry on from here so the rest is still checked
                frontier.append(bytes(h))
                expect = idx + 1
                if expect in checkpoints:
                    if frontier.root() == checkpoints[expect]:
                        if mismatch is None:
                            good_until = expect
                    elif mismatch is None:
                        mismatch = (good_until, expect)
        if pool is None:
            problems = _rederive(db, 0, max(expect, size), state.retention_cutoff, chunk)
        else:
            problems = [p for f in futures for p in f.result()]
            tail = max(expect, size)
            if ranges[-1][1] < tail:  # leaves appended after the ranges were cut
                problems += _rederive(db, ranges[-1][1], tail, state.retention_cutoff, chunk)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    for idx, message in sorted(problems):
        rep.bad(idx, message)
    rep.size = expect
    if mismatch is not None:
        lo, hi = mismatch
        at = _localise(db, lo, hi)
        rep.bad(at, f"the tree at size {hi} does not match its signed checkpoint: leaves from {at} "
                    "were rewritten or reordered")
    if latest_cp > rep.size:
        rep.bad(rep.size, f"truncated: the ledger has {rep.size} leaves but a checkpoint of size {latest_cp} exists")
    if state.size != rep.size:
        rep.bad(min(state.size, rep.size), f"the sequencer's state says {state.size} leaves, {rep.size} are stored")
    if witness_checkpoint is not None:
        try:
            w = witness_checkpoint()
        except Exception as exc:  # noqa: BLE001 - report, do not crash
            rep.bad(None, f"the witness could not be asked: {exc}")
            w = None
        if w is not None:
            wsize, wroot = w
            rep.witness_size = wsize
            if wsize > rep.size:
                rep.bad(rep.size, f"truncated: the witness cosigned size {wsize}, the ledger has {rep.size} leaves")
            else:
                try:
                    from healthlink.ledger.log import Ledger

                    root = Ledger(db).root_at(wsize) if wsize else merkle.EMPTY_ROOT
                except LookupError:
                    root = None
                if root != wroot:
                    rep.bad(None, f"the tree at size {wsize} differs from the checkpoint the witness cosigned")
    _check_stray_records(db, rep, gap_seconds)
    _check_current_results(db, rep)
    rep.seconds = round(time.monotonic() - started, 3)
    if run_id is not None:
        with db.write() as conn:
            conn.execute(t.ledger_verification.update().where(t.ledger_verification.c.id == run_id).values(
                finished=now_us(), size=rep.size, ok=rep.ok, first_bad=rep.first_bad,
                message="; ".join(rep.problems[:5])[:4000] or "ok"))
    return rep


PARALLEL_FROM = 200_000  # leaves: below this, one process re-derives them all


def _ranges(size: int, n: int) -> list[tuple[int, int]]:
    step = max(1, -(-size // n))
    return [(lo, min(size, lo + step)) for lo in range(0, size, step)]


def _rederive_url(url: str, lo: int, hi: int, cutoff: int, chunk: int) -> list[tuple[int, str]]:
    """:func:`_rederive` in a worker process, with a database connection of its own."""
    db = Database(url)
    try:
        return _rederive(db, lo, hi, cutoff, chunk)
    finally:
        db.dispose()


def _rederive(db: Database, lo: int, hi: int, cutoff: int, chunk: int = 5000) -> list[tuple[int, str]]:
    """Re-derive leaves [lo, hi) from their records and salts; the problems found, by leaf index."""
    leaf, a, v = t.ledger_leaf, t.audit_event, t.resource_version
    q = (select(leaf.c.idx, leaf.c.kind, leaf.c.audit_seq, leaf.c.result_rid, leaf.c.result_version, leaf.c.salt,
                leaf.c.hash, a.c.seq, a.c.content.label("a_content"), a.c.recorded, v.c.rid,
                v.c.content.label("v_content"))
         .select_from(leaf.outerjoin(a, a.c.seq == leaf.c.audit_seq)
                      .outerjoin(v, and_(v.c.rid == leaf.c.result_rid, v.c.version_id == leaf.c.result_version)))
         .where(leaf.c.idx >= lo, leaf.c.idx < hi)
         .order_by(leaf.c.idx))
    out: list[tuple[int, str]] = []
    with db.read() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk).execute(q)
        try:
            for r in result:
                derived = None
                if r.kind == "A":
                    if r.seq is None:
                        out.append((r.idx, f"leaf {r.idx}: audit record {r.audit_seq} was deleted"))
                    elif r.salt is None:
                        if r.a_content != "" or r.recorded >= cutoff:
                            out.append((r.idx, f"leaf {r.idx}: audit record {r.audit_seq} lost its salt but is "
                                               "not purged past retention"))
                    else:
                        derived = merkle.leaf_hash(audit_leaf_data(r.audit_seq, bytes(r.salt), r.a_content))
                elif r.kind == "R":
                    if r.rid is None:
                        out.append((r.idx, f"leaf {r.idx}: result version {r.result_rid}/{r.result_version} "
                                           "was deleted"))
                    elif r.salt is not None:
                        derived = merkle.leaf_hash(result_leaf_data(r.result_rid, r.result_version, bytes(r.salt),
                                                                    r.v_content))
                else:
                    out.append((r.idx, f"leaf {r.idx}: unknown kind {r.kind!r}"))
                if derived is not None and derived != bytes(r.hash):
                    what = f"audit record {r.audit_seq}" if r.kind == "A" else \
                        f"result version {r.result_rid}/{r.result_version}"
                    out.append((r.idx, f"leaf {r.idx}: {what} was altered (its leaf no longer re-derives)"))
                if len(out) > 1000:
                    break
        finally:
            result.close()
    return out


def _localise(db: Database, lo: int, hi: int) -> int:
    """The first leaf in [lo, hi) whose pair no longer hashes to the level-1 node stored when it was
    integrated (both leaves of that pair are suspect; the lower index is named)."""
    leaf, n = t.ledger_leaf, t.ledger_node
    start = lo - lo % 2
    with db.read() as conn:
        hashes = conn.execution_options(stream_results=True, yield_per=5000).execute(
            select(leaf.c.idx, leaf.c.hash).where(leaf.c.idx >= start, leaf.c.idx < hi).order_by(leaf.c.idx))
        pairs = {i: bytes(h) for i, h in conn.execute(
            select(n.c.idx, n.c.hash).where(n.c.level == 1, n.c.idx >= start // 2, n.c.idx < (hi + 1) // 2))}
        pending: dict[int, bytes] = {}
        try:
            for idx, h in hashes:
                pending[idx] = bytes(h)
                if idx % 2 == 1 and idx - 1 in pending:
                    stored = pairs.get(idx // 2)
                    if stored is None or stored != merkle.node_hash(pending[idx - 1], pending[idx]):
                        return max(lo, idx - 1)
                    pending.clear()
        finally:
            hashes.close()
    return lo


def _check_stray_records(db: Database, rep: Report, gap_seconds: float) -> None:
    """Audit records that no leaf covers though the sequencer has long passed them: inserted."""
    a, leaf = t.audit_event, t.ledger_leaf
    cutoff = now_us() - int(gap_seconds * 1_000_000)
    with db.read() as conn:
        hw = conn.execute(select(t.ledger_state.c.audit_hw).where(t.ledger_state.c.id == 1)).scalar() or 0
        rows = conn.execute(select(a.c.seq).where(a.c.seq <= hw, a.c.recorded < cutoff,
                                                  ~exists().where(leaf.c.audit_seq == a.c.seq))
                            .order_by(a.c.seq).limit(10)).scalars().all()
    for seq in rows:
        rep.bad(None, f"audit record {seq} is not in the ledger (inserted after the fact?)")


def _check_current_results(db: Database, rep: Report) -> None:
    """The current version of each clinical result must equal its stored (ledgered) version."""
    r, v, leaf = t.resource, t.resource_version, t.ledger_leaf
    with db.read() as conn:
        rows = conn.execute(
            select(r.c.res_type, r.c.res_id, leaf.c.idx)
            .select_from(r.join(v, and_(v.c.rid == r.c.rid, v.c.version_id == r.c.version_id))
                         .outerjoin(leaf, and_(leaf.c.result_rid == r.c.rid, leaf.c.result_version == r.c.version_id)))
            .where(r.c.res_type.in_(RESULT_TYPES), r.c.deleted == false(), r.c.content != v.c.content)
            .limit(10)).all()
    for res_type, res_id, idx in rows:
        rep.bad(idx, f"{res_type}/{res_id} was altered: its current content differs from its ledgered version"
                + (f" (leaf {idx})" if idx is not None else ""))
