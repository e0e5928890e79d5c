"""The tamper-evident log: audit records and result versions as leaves of an RFC 9162 Merkle tree.

docs/ledger.md, ADR 0013.  What the request path waits for is the *durable audit record*
(:class:`healthlink.ledger.audit.AuditWriter`); the tree is built behind it by one sequencer
(:meth:`Ledger.integrate`, run at least every second by :meth:`Ledger.start`), which

* takes the audit records not yet in the tree (by sequence number; on PostgreSQL a record whose
  number was drawn before a later one's may commit after it, so the numbers skipped are kept and
  looked for again for ``gap_seconds``), and the new versions of clinical results
  (:data:`RESULT_TYPES`) not yet in the tree;
* appends one leaf per record: ``SHA-256(0x00 || data)`` with ``data`` the salted digest of the
  stored record (:func:`audit_leaf_data`, :func:`result_leaf_data`), so a leaf, a proof or a
  checkpoint reveals nothing of the record;
* stores each leaf, the perfect-subtree hashes it completes (``ledger_node``) and the compact range
  (``ledger_state``) in one transaction, so a crash loses nothing and repeats nothing;
* signs a checkpoint (C2SP tlog-checkpoint) every ``checkpoint_seconds`` or on demand, and pushes it
  to the configured witnesses (:mod:`healthlink.ledger.witness`), storing their cosignatures.

Proofs (:meth:`inclusion_proof`, :meth:`consistency_proof`) are computed from the stored
perfect-subtree hashes.  :mod:`healthlink.ledger.verify` recomputes everything from the records.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, and_, exists, func, select, text, update

from healthlink.db import Database, bulk_insert
from healthlink.db import tables as t
from healthlink.ledger import merkle
from healthlink.ledger.checkpoint import Verifier

log = logging.getLogger("healthlink.ledger")

RESULT_TYPES = ("Observation", "DiagnosticReport", "ImagingStudy")
SALT_BYTES = 16
RESULT_GRACE_US = 60_000_000  # a result version may commit up to a minute after a later-stamped one
RESULT_SWEEP_SECONDS = 15.0  # how often that minute is looked through again
_AUDIT_TAG = b"HLA1"
_RESULT_TAG = b"HLR1"
_LEAF_COLS = ("idx", "kind", "audit_seq", "result_rid", "result_version", "salt", "hash", "integrated")
_NODE_COLS = ("level", "idx", "hash")


def audit_leaf_data(seq: int, salt: bytes, content: str) -> bytes:
    """The leaf data of an audit record: tag, its sequence number, the salt, the SHA-256 of the
    stored AuditEvent JSON (the canonical form: the exact text the platform stored)."""
    return _AUDIT_TAG + seq.to_bytes(8, "big") + salt + hashlib.sha256(content.encode()).digest()


def result_leaf_data(rid: int, version: int, salt: bytes, content: str | None) -> bytes:
    """The leaf data of one version of a clinical result: tag, row id, version, salt, the SHA-256 of
    the version's stored JSON (empty for a delete)."""
    return (_RESULT_TAG + rid.to_bytes(8, "big") + version.to_bytes(4, "big") + salt
            + hashlib.sha256((content or "").encode()).digest())


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class TreeHead:
    size: int
    root: bytes


class Ledger:
    """The platform's log (one per platform: ``Platform.ledger``)."""

    def __init__(self, db: Database, *, checkpointer: Callable[[int, bytes], str] | None = None,
                 opener: Callable[[str], tuple[int, bytes]] | None = None,
                 witnesses: Iterable[tuple[str, Verifier]] = (), interval: float = 1.0,
                 checkpoint_seconds: float = 60.0, batch_max: int = 10_000,
                 gap_seconds: float = 600.0) -> None:
        self.db = db
        self.checkpointer = checkpointer  # (size, root) -> signed note
        self.opener = opener  # signed note -> (size, root), ValueError if not this log's key
        self.witnesses = list(witnesses)  # (URL, the witness's cosignature verifier)
        self.interval = interval
        self.checkpoint_seconds = checkpoint_seconds
        self.batch_max = batch_max
        self.gap_seconds = gap_seconds
        self._gaps: dict[int, float] = {}  # audit seqs skipped -> when first seen missing
        # when the committed records of the window that no leaf covers were last looked for: the
        # skipped numbers above live in this process's memory only, so a sequencer that starts
        # (after a crash) or outlives the one that saw a number skipped would never look for it
        # again (docs/faults.md); -inf: on the first pass
        self._last_sweep = float("-inf")
        self.sweep_seconds = min(60.0, gap_seconds / 4)
        self._last_result_sweep = float("-inf")  # the results' minute of grace (_pending_results)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_checkpoint = 0.0
        self.last_error: str | None = None

    # ------------------------------------------------------------------ sequencer
    def integrate(self) -> int:
        """One sequencer pass: append the pending records as leaves; the number appended."""
        with self._lock, self.db.write() as conn:
            if conn.dialect.name == "postgresql":
                got = conn.execute(text("SELECT pg_try_advisory_xact_lock(hashtextextended('healthlink-ledger', 0))")).scalar()
                if not got:
                    return 0  # another worker's sequencer is at it
                # the pass reads ranges above high-water marks that grow; a generic (cached) plan
                # cannot know how narrow they are and estimates a third of the table: on a
                # 32,000-version region it took a parallel bitmap scan (7.7 ms instead of 0.07
                # ms, each pass), on a large region it would read the whole table each pass
                conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
            st = conn.execute(select(t.ledger_state).where(t.ledger_state.c.id == 1).with_for_update()).one()
            frontier = merkle.Frontier.from_bytes(st.frontier) if st.size else merkle.Frontier()
            audits = self._pending_audit(conn, st.audit_hw)
            results = self._pending_results(conn, st.result_hw, self.batch_max - len(audits))
            if not audits and not results:
                return 0
            ts = now_us()
            leaves, nodes = [], []
            idx = st.size
            for seq, content in audits:
                salt = os.urandom(SALT_BYTES)
                h = merkle.leaf_hash(audit_leaf_data(seq, salt, content))
                nodes.extend(frontier.append(h))
                leaves.append((idx, "A", seq, None, None, salt, h, ts))
                idx += 1
            for rid, version, content, _lu in results:
                salt = os.urandom(SALT_BYTES)
                h = merkle.leaf_hash(result_leaf_data(rid, version, salt, content))
                nodes.extend(frontier.append(h))
                leaves.append((idx, "R", None, rid, version, salt, h, ts))
                idx += 1
            bulk_insert(conn, t.ledger_leaf, _LEAF_COLS, leaves)
            if nodes:
                bulk_insert(conn, t.ledger_node, _NODE_COLS, nodes)
            audit_hw = max([st.audit_hw] + [s for s, _ in audits])
            result_hw = max([st.result_hw] + [r[3] for r in results])
            conn.execute(update(t.ledger_state).where(t.ledger_state.c.id == 1).values(
                size=idx, frontier=frontier.to_bytes(), audit_hw=audit_hw, result_hw=result_hw, updated=ts))
        return len(leaves)

    def _pending_audit(self, conn: Connection, hw: int) -> list[tuple[int, str]]:
        a = t.audit_event
        rows = conn.execute(select(a.c.seq, a.c.content).where(a.c.seq > hw).order_by(a.c.seq)
                            .limit(self.batch_max)).all()
        now = time.monotonic()
        found = [(r.seq, r.content) for r in rows]
        # numbers skipped below the high-water mark: drawn by a transaction not yet committed (or
        # rolled back); look for them again until gap_seconds have passed
        expect = hw
        for seq, _ in found:
            for missing in range(expect + 1, seq):
                self._gaps.setdefault(missing, now)
            expect = seq
        if now - self._last_sweep >= self.sweep_seconds:
            self._last_sweep = now
            cutoff = now_us() - int(self.gap_seconds * 1_000_000)
            leaf = t.ledger_leaf.c
            # only numbers above the last one integrated before the window: a number skipped
            # earlier than that is past the window whatever its record's (forgeable) timestamp
            # says, and verification keeps reporting a record put there (docs/ledger.md)
            floor = conn.execute(select(func.max(leaf.audit_seq)).where(leaf.integrated < cutoff)).scalar() or 0
            for s in conn.execute(select(a.c.seq).where(
                    a.c.seq > floor, a.c.seq <= hw, a.c.recorded >= cutoff,
                    ~exists().where(leaf.audit_seq == a.c.seq)).limit(self.batch_max)).scalars():
                self._gaps.setdefault(s, now)
        late = [s for s in list(self._gaps) if s <= hw]
        if late:
            got = conn.execute(select(a.c.seq, a.c.content).where(
                a.c.seq.in_(late), ~exists().where(t.ledger_leaf.c.audit_seq == a.c.seq))).all()
            for r in got:
                self._gaps.pop(r.seq, None)
            found = sorted([(r.seq, r.content) for r in got] + found)
        seen = {f for f, _ in found}
        for s, since in list(self._gaps.items()):
            if now - since > self.gap_seconds or s in seen:
                self._gaps.pop(s, None)
        return found

    def _pending_results(self, conn: Connection, hw: int, limit: int) -> list[tuple[int, int, str | None, int]]:
        if limit <= 0:
            return []
        v, leaf = t.resource_version, t.ledger_leaf
        # a version is timestamped before its transaction commits, so one stamped up to a minute
        # before the newest integrated one may commit after it: the minute behind the high-water
        # mark is looked through again every RESULT_SWEEP_SECONDS, not on every pass (after a bulk
        # load that minute holds every row just loaded, and each pass would re-read them all)
        now = time.monotonic()
        since = hw
        if now - self._last_result_sweep >= RESULT_SWEEP_SECONDS:
            self._last_result_sweep = now
            since = hw - RESULT_GRACE_US
        rows = conn.execute(
            select(v.c.rid, v.c.version_id, v.c.content, v.c.last_updated)
            .where(v.c.res_type.in_(RESULT_TYPES), v.c.last_updated >= since,
                   ~exists().where(and_(leaf.c.result_rid == v.c.rid, leaf.c.result_version == v.c.version_id)))
            .order_by(v.c.last_updated, v.c.rid, v.c.version_id).limit(limit)).all()
        return [(r.rid, r.version_id, r.content, r.last_updated) for r in rows]

    def start(self) -> None:
        """Run the sequencer (and the checkpoint schedule) in a background thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ledger-sequencer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                while self.integrate() >= self.batch_max:
                    pass
                if self.checkpointer is not None and time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds:
                    self.checkpoint()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - keep sequencing; the status page shows it
                first = (str(exc).splitlines() or [""])[0]
                err = f"{type(exc).__name__}: {first}"
                if err != self.last_error:  # once per kind of failure, not every second
                    if "ledger_state" in first and ("does not exist" in first or "no such table" in first):
                        log.info("ledger sequencer: waiting for the schema (healthlink db upgrade)")
                    else:
                        log.warning("ledger sequencer: %s", err)
                self.last_error = err
            self._stop.wait(max(0.05, self.interval - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None

    # ------------------------------------------------------------------ tree heads
    def head(self) -> TreeHead:
        with self.db.read() as conn:
            st = conn.execute(select(t.ledger_state.c.size, t.ledger_state.c.frontier)
                              .where(t.ledger_state.c.id == 1)).one()
        root = merkle.Frontier.from_bytes(st.frontier).root() if st.size else merkle.EMPTY_ROOT
        return TreeHead(st.size, root)

    def checkpoint(self) -> tuple[int, str] | None:
        """Sign a checkpoint of the current tree (unless one of that size exists), store it, push it
        to the witnesses and store their cosignatures.  Returns (size, note)."""
        if self.checkpointer is None:
            return None
        self._last_checkpoint = time.monotonic()
        head = self.head()
        if head.size == 0:
            return None
        cp = t.ledger_checkpoint
        with self.db.read() as conn:
            last = conn.execute(select(cp.c.size, cp.c.note).order_by(cp.c.size.desc()).limit(1)).first()
        if last is not None and last.size == head.size:
            return last.size, last.note
        if last is not None and self.opener is not None:
            try:
                self.opener(last.note)
            except ValueError as exc:
                # this process's key is not the log's (e.g. a command run with another data directory):
                # signing would fork the log in the eyes of every verifier; refuse and say why
                self.last_error = (f"not signing: the latest checkpoint (size {last.size}) does not verify with "
                                   f"this process's ledger key ({exc}); set HEALTHLINK_LEDGER_KEY_FILE to the "
                                   "log's key")
                log.error("ledger: %s", self.last_error)
                raise LookupError(self.last_error) from None
        note = self.checkpointer(head.size, head.root)
        with self.db.write() as conn:
            exists_ = conn.execute(select(cp.c.size).where(cp.c.size == head.size)).first()
            if exists_ is None:
                conn.execute(cp.insert().values(size=head.size, root=head.root, note=note, created=now_us()))
        self.push(head.size, note)
        return head.size, note

    def push(self, size: int, note: str) -> int:
        """Offer the checkpoint to every witness, with a consistency proof from the size it last
        cosigned (c2sp.org/tlog-witness); store the verified cosignatures.  A witness that names
        another size (409) is offered the checkpoint once more from that size.  Returns how many
        witnesses cosigned.  A witness being down never stops the log."""
        from healthlink.ledger.witness import SizeConflict
        from healthlink.ledger.witness_client import push

        n = 0
        sizes = self.witness_sizes()
        for url, verifier in self.witnesses:
            old = sizes.get(verifier.name, 0)
            if old >= size:
                continue
            try:
                try:
                    line = push(url, old, self.consistency_proof(old, size) if old else [], note, witness=verifier)
                except SizeConflict as exc:
                    old = exc.latest_size
                    if old >= size:
                        raise
                    line = push(url, old, self.consistency_proof(old, size) if old else [], note, witness=verifier)
            except Exception as exc:  # noqa: BLE001
                log.warning("witness %s did not cosign size %d: %s", verifier.name, size, exc)
                self.last_error = f"witness {verifier.name}: {exc}"
                continue
            with self.db.write() as conn:
                conn.execute(t.ledger_cosignature.insert().values(size=size, witness=verifier.name, line=line,
                                                                  created=now_us()))
            n += 1
        return n

    def checkpoints(self, limit: int = 50) -> list[dict]:
        cp, cs = t.ledger_checkpoint, t.ledger_cosignature
        with self.db.read() as conn:
            rows = conn.execute(select(cp).order_by(cp.c.size.desc()).limit(limit)).all()
            sigs = conn.execute(select(cs).where(cs.c.size.in_([r.size for r in rows]))).all() if rows else []
        by: dict[int, list] = {}
        for s in sigs:
            by.setdefault(s.size, []).append({"witness": s.witness, "line": s.line, "created": s.created})
        return [{"size": r.size, "root": r.root.hex(), "note": r.note, "created": r.created,
                 "cosignatures": by.get(r.size, [])} for r in rows]

    def witness_sizes(self) -> dict[str, int]:
        """Each witness and the largest size it cosigned."""
        cs = t.ledger_cosignature
        with self.db.read() as conn:
            return dict(conn.execute(select(cs.c.witness, func.max(cs.c.size)).group_by(cs.c.witness)).all())

    # ------------------------------------------------------------------ proofs
    def _perfect(self, conn: Connection, want: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        out: dict[tuple[int, int], bytes] = {}
        leaves = [i for lvl, i in want if lvl == 0]
        if leaves:
            out.update({(0, i): h for i, h in conn.execute(
                select(t.ledger_leaf.c.idx, t.ledger_leaf.c.hash).where(t.ledger_leaf.c.idx.in_(leaves)))})
        by_level: dict[int, list[int]] = {}
        for lvl, i in want:
            if lvl:
                by_level.setdefault(lvl, []).append(i)
        n = t.ledger_node
        for lvl, idxs in by_level.items():
            out.update({(lvl, i): h for i, h in conn.execute(
                select(n.c.idx, n.c.hash).where(n.c.level == lvl, n.c.idx.in_(idxs)))})
        return out

    def _prove(self, fn: Callable[..., list[bytes]], *args: int) -> list[bytes]:
        # first pass records which perfect subtrees the proof needs, one query fetches them
        want: set[tuple[int, int]] = set()

        def record(level: int, index: int) -> bytes:
            want.add((level, index))
            return b"\x00" * 32

        fn(*args, record)
        with self.db.read() as conn:
            got = self._perfect(conn, want)
        missing = want - got.keys()
        if missing:
            raise LookupError(f"the ledger lacks {len(missing)} node(s) for this proof")
        return fn(*args, lambda level, index: got[(level, index)])

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        if not 0 <= index < size:
            raise ValueError(f"leaf {index} is not in a tree of size {size}")
        if size > self.head().size:
            raise ValueError(f"the tree has not reached size {size}")
        return self._prove(merkle.inclusion_proof, index, size)

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        if not 0 < old <= new:
            raise ValueError("a consistency proof needs 0 < old <= new")
        if new > self.head().size:
            raise ValueError(f"the tree has not reached size {new}")
        return self._prove(merkle.consistency_proof, old, new)

    def root_at(self, size: int) -> bytes:
        """The root hash of the tree at an earlier size (from the stored subtrees)."""
        if size == 0:
            return merkle.EMPTY_ROOT
        return self._prove(lambda s, perfect: [merkle.range_root(0, s, perfect)], size)[0]

    def leaf_of_audit(self, seqs: list[int]) -> dict[int, tuple[int, bytes]]:
        """audit seq -> (leaf index, leaf hash), for the records already in the tree."""
        if not seqs:
            return {}
        leaf = t.ledger_leaf
        with self.db.read() as conn:
            return {s: (i, h) for s, i, h in conn.execute(
                select(leaf.c.audit_seq, leaf.c.idx, leaf.c.hash).where(leaf.c.audit_seq.in_(seqs)))}

    def leaf_of_result(self, rid: int, version: int) -> tuple[int, bytes] | None:
        leaf = t.ledger_leaf
        with self.db.read() as conn:
            row = conn.execute(select(leaf.c.idx, leaf.c.hash).where(
                leaf.c.result_rid == rid, leaf.c.result_version == version)).first()
        return (row.idx, row.hash) if row else None

    def audit_leaves(self, seqs: list[int]) -> dict[int, dict]:
        """For audit records already in the tree: seq -> {leaf_index, leaf_data (hex), leaf_hash (hex)}.
        The leaf data is tag || seq || salt || SHA-256(record): whoever holds the record checks its
        digest against it; a purged record's leaf has no salt left (``leaf_data`` None)."""
        if not seqs:
            return {}
        leaf, a = t.ledger_leaf, t.audit_event
        with self.db.read() as conn:
            rows = conn.execute(select(leaf.c.audit_seq, leaf.c.idx, leaf.c.salt, leaf.c.hash, a.c.content)
                                .join(a, a.c.seq == leaf.c.audit_seq).where(leaf.c.audit_seq.in_(seqs))).all()
        return {r.audit_seq: {"leaf_index": r.idx, "leaf_hash": bytes(r.hash).hex(),
                              "leaf_data": audit_leaf_data(r.audit_seq, bytes(r.salt), r.content).hex()
                              if r.salt is not None else None} for r in rows}

    def result_leaf(self, rid: int, version: int) -> dict | None:
        leaf, v = t.ledger_leaf, t.resource_version
        with self.db.read() as conn:
            r = conn.execute(select(leaf.c.idx, leaf.c.salt, leaf.c.hash, v.c.content)
                             .join(v, and_(v.c.rid == leaf.c.result_rid, v.c.version_id == leaf.c.result_version))
                             .where(leaf.c.result_rid == rid, leaf.c.result_version == version)).first()
        if r is None:
            return None
        return {"leaf_index": r.idx, "leaf_hash": bytes(r.hash).hex(),
                "leaf_data": result_leaf_data(rid, version, bytes(r.salt), r.content).hex(),
                "content_sha256": hashlib.sha256((r.content or "").encode()).hexdigest()}

    def signed_head_covering(self, index: int) -> tuple[int, str]:
        """The latest checkpoint that includes leaf ``index``; one is signed now if none does yet.
        LookupError when the leaf is not in the tree yet (the sequencer runs every second)."""
        cp = t.ledger_checkpoint
        with self.db.read() as conn:
            last = conn.execute(select(cp.c.size, cp.c.note).order_by(cp.c.size.desc()).limit(1)).first()
        if last is not None and last.size > index:
            return last.size, last.note
        if self.head().size <= index:
            raise LookupError("not in the ledger yet; try again in a second")
        made = self.checkpoint()
        if made is None or made[0] <= index:
            raise LookupError("no checkpoint covers this entry yet")
        return made

    def proof_bundle(self, index: int, *, head: tuple[int, str] | None = None) -> dict:
        """What an outside party needs to check one leaf: the signed checkpoint and the inclusion
        proof of the leaf in the tree of that size (base64 hashes)."""
        import base64

        size, note = head or self.signed_head_covering(index)
        return {"leaf_index": index, "tree_size": size, "checkpoint": note,
                "inclusion_proof": [base64.b64encode(h).decode() for h in self.inclusion_proof(index, size)]}

    # ------------------------------------------------------------------ retention
    def purge(self, *, retention_days: int, now: int | None = None) -> int:
        """Empty the bodies and salts of audit records older than the retention period; their
        leaf hashes stay, so the tree and every checkpoint still verify.  Returns the count."""
        now = now_us() if now is None else now
        cutoff = now - retention_days * 86_400 * 1_000_000
        a, leaf = t.audit_event, t.ledger_leaf
        with self.db.write() as conn:
            conn.execute(update(t.ledger_state).where(t.ledger_state.c.id == 1).values(retention_cutoff=cutoff))
            seqs = list(conn.execute(select(a.c.seq).where(a.c.recorded < cutoff, a.c.content != "",
                                                           exists().where(leaf.c.audit_seq == a.c.seq))
                                     .limit(100_000)).scalars())
            if seqs:
                conn.execute(update(a).where(a.c.seq.in_(seqs)).values(content=""))
                conn.execute(update(leaf).where(leaf.c.audit_seq.in_(seqs)).values(salt=None))
        return len(seqs)


__all__ = ["Ledger", "RESULT_TYPES", "TreeHead", "audit_leaf_data", "result_leaf_data"]
