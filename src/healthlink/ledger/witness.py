"""A transparency-log witness: ``add-checkpoint`` of ``c2sp.org/tlog-witness@v1.0.0``.

The witness knows a set of logs (origin + the log's vkeys), keeps for each the latest
checkpoint it cosigned, and cosigns a new one only when it is signed by the log and provably
extends the old one (an RFC 9162 consistency proof).  Its answers are the spec's:

====================================================  ======================================
unknown origin                                        NotFound (404)
no log signature verifies                             NoteNotVerified, a Forbidden (403)
malformed body, old size > checkpoint size             Invalid (400)
old size is not the size it last cosigned (rollback)   SizeConflict (409), carries that size
same size, different root (fork)                       ForkConflict (409)
consistency proof does not verify                      Unprocessable (422)
====================================================  ======================================

Its state is its own small SQLite file in its own directory (``witness.sqlite``), never the
platform database: the commission that runs a witness must not depend on the platform.  The
check of the old size and the store of the new checkpoint run in one ``BEGIN IMMEDIATE``
transaction, so two concurrent requests cannot roll the witness back (tlog-witness,
"add-checkpoint", the race it spells out).  Refused requests whose log signature verified are
kept in ``evidence``: a fork or a failed proof is proof of log misbehaviour.

The directory (``witness init``) holds ``witness.json`` (the witness's name) and
``witness_key.pem`` (its Ed25519 cosigner key, mode 0600).  No HTTP here: the adapter is
:mod:`healthlink.api.witness_app`, the log's client is :mod:`healthlink.ledger.witness_client`.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from healthlink.errors import Conflict, Invalid, NotFound, Unprocessable
from healthlink.ledger import merkle
from healthlink.ledger.checkpoint import (
    COSIGNATURE_V1,
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    check_key_name,
    cosign,
    generated_key,
    open_note,
    split_note,
)

WITNESS_SPEC = "c2sp.org/tlog-witness@v1.0.0"
MAX_PROOF_LINES = 63  # tlog-witness: the client MUST NOT send more
CONFIG_FILE = "witness.json"
KEY_FILE = "witness_key.pem"
STATE_FILE = "witness.sqlite"


class SizeConflict(Conflict):
    """The old size is not the size this witness last cosigned for the origin (409)."""

    def __init__(self, message: str, *, latest_size: int) -> None:
        super().__init__(message)
        self.latest_size = latest_size


class ForkConflict(Conflict):
    """A checkpoint of the size already cosigned, with a different root hash (409)."""


@dataclass(frozen=True)
class LogConfig:
    """A log the witness follows: its origin and the public keys it signs checkpoints with."""

    origin: str
    verifiers: tuple[Verifier, ...]

    @classmethod
    def parse(cls, spec: str) -> LogConfig:
        """``"<origin> <vkey> [<vkey> ...]"`` (more vkeys while the log rotates its key)."""
        origin, *vkeys = spec.split()
        if not vkeys:
            raise NoteError(f"log {spec!r}: expected '<origin> <vkey>'")
        return cls(origin, tuple(Verifier.from_vkey(v) for v in vkeys))


# -- the add-checkpoint request body --------------------------------------------------------------

def format_add_checkpoint(old_size: int, proof: Sequence[bytes], signed_checkpoint: str) -> bytes:
    """``old <size>``, one base64 proof hash a line, a blank line, the signed checkpoint."""
    head = f"old {old_size}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof)
    return (head + "\n" + signed_checkpoint).encode()


def parse_add_checkpoint(body: bytes) -> tuple[int, list[bytes], str]:
    """The (old size, proof, signed checkpoint) of a request body; Invalid when malformed."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("the request body must be UTF-8") from None
    head, sep, note = text.partition("\n\n")
    lines = head.split("\n")
    if not sep or not lines[0].startswith("old "):
        raise Invalid("the body must start with 'old <size>', proof lines and a blank line")
    size = lines[0][4:]
    if not size.isascii() or not size.isdigit() or (size != "0" and size.startswith("0")):
        raise Invalid(f"bad old size {size[:30]!r}: decimal, no leading zeroes")
    if len(size) > 20:
        raise Invalid(f"bad old size {size[:30]!r}: more than 20 digits")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise Invalid(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for ln in lines[1:]:
        try:
            h = base64.b64decode(ln, validate=True)
        except ValueError:
            raise Invalid("a consistency proof line is not base64") from None
        if len(h) != 32:
            raise Invalid("a consistency proof line must hold a 32-byte hash")
        proof.append(h)
    return int(size), proof, note


# -- the witness --------------------------------------------------------------------------------

def init_witness(directory: Path, name: str) -> Signer:
    """Create the witness's directory, name and key (once); return its cosigner."""
    check_key_name(name)
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / CONFIG_FILE
    if config.exists():
        existing = json.loads(config.read_text())["name"]
        if existing != name:
            raise Invalid(f"{directory} already holds witness {existing!r}")
    else:
        config.write_text(json.dumps({"name": name, "spec": WITNESS_SPEC}) + "\n")
    return Signer(name, generated_key(directory / KEY_FILE), COSIGNATURE_V1)


class Witness:
    """One witness: its cosigner key, the logs it follows and its persisted state."""

    def __init__(self, directory: Path, cosigner: Signer, logs: Iterable[LogConfig], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.cosigner = cosigner
        self.logs = {lg.origin: lg for lg in logs}
        self._clock = clock
        self._lock = threading.Lock()  # one connection, used by one request at a time
        self._db = sqlite3.connect(directory / STATE_FILE, isolation_level=None,
                                   check_same_thread=False)
        self._db.executescript("""
            PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
            CREATE TABLE IF NOT EXISTS checkpoints (
                origin TEXT PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL,
                cosigned_at INTEGER NOT NULL, note TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS evidence (
                id INTEGER PRIMARY KEY, origin TEXT NOT NULL, received_at INTEGER NOT NULL,
                reason TEXT NOT NULL, old_size INTEGER NOT NULL, proof TEXT NOT NULL,
                note TEXT NOT NULL);
        """)

    @classmethod
    def open(cls, directory: Path, logs: Iterable[LogConfig], *,
             clock: Callable[[], float] = time.time) -> Witness:
        """The witness ``init_witness`` created in ``directory``."""
        config = directory / CONFIG_FILE
        if not config.exists():
            raise NotFound(f"{directory} holds no witness; run 'healthlink witness init' first")
        name = json.loads(config.read_text())["name"]
        return cls(directory, Signer(name, generated_key(directory / KEY_FILE), COSIGNATURE_V1),
                   logs, clock=clock)

    @property
    def name(self) -> str:
        return self.cosigner.name

    @property
    def vkey(self) -> str:
        return self.cosigner.vkey

    def close(self) -> None:
        self._db.close()

    def latest(self, origin: str) -> tuple[int, str] | None:
        """The size and note (log signature + this witness's cosignature) last cosigned."""
        with self._lock:
            row = self._db.execute("SELECT size, note FROM checkpoints WHERE origin = ?",
                                   (origin,)).fetchone()
        return (row[0], row[1]) if row else None

    def evidence(self, origin: str) -> list[tuple[str, int, str]]:
        """Refused, log-signed requests kept as evidence: (reason, old size, note)."""
        with self._lock:
            return self._db.execute("SELECT reason, old_size, note FROM evidence WHERE origin = ? "
                                    "ORDER BY id", (origin,)).fetchall()

    def add_checkpoint(self, old_size: int, consistency_proof: Sequence[bytes],
                       signed_checkpoint: str) -> str:
        """Verify and cosign ``signed_checkpoint``; return the cosignature line(s)."""
        text, _ = split_note(signed_checkpoint)
        cp = Checkpoint.parse(text)
        log_cfg = self.logs.get(cp.origin)
        if log_cfg is None:
            raise NotFound(f"this witness does not follow the log {cp.origin!r}")
        open_note(signed_checkpoint, log_cfg.verifiers)  # 403 unless the log signed it
        if old_size > cp.size:
            raise Invalid(f"old size {old_size} is larger than the checkpoint size {cp.size}")
        if len(consistency_proof) > MAX_PROOF_LINES:
            raise Invalid(f"more than {MAX_PROOF_LINES} consistency proof hashes")
        if old_size == 0 and consistency_proof:
            raise Invalid("the consistency proof must be empty when the old size is 0")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                lines = self._check_and_store(old_size, consistency_proof, signed_checkpoint, text, cp)
            except (ForkConflict, Unprocessable) as exc:
                self._db.execute(
                    "INSERT INTO evidence (origin, received_at, reason, old_size, proof, note) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (cp.origin, int(self._clock()), exc.message, old_size,
                     "".join(base64.b64encode(h).decode() + "\n" for h in consistency_proof),
                     signed_checkpoint))
                self._db.execute("COMMIT")
                raise
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")  # persisted before the answer (tlog-witness)
        return lines

    def _check_and_store(self, old_size: int, proof: Sequence[bytes], note: str, body: str,
                         cp: Checkpoint) -> str:
        row = self._db.execute("SELECT size, root, cosigned_at FROM checkpoints WHERE origin = ?",
                               (cp.origin,)).fetchone()
        latest_size, latest_root, last_ts = row if row else (0, None, 0)
        if old_size != latest_size:
            raise SizeConflict(f"this witness last cosigned {cp.origin} at size {latest_size}, "
                               f"not {old_size}", latest_size=latest_size)
        if old_size == cp.size:
            if latest_root is not None and bytes(latest_root) != cp.root:
                raise ForkConflict(f"{cp.origin} at size {cp.size} has a different root hash than "
                                   "the one this witness cosigned: the log forked")
        elif old_size > 0 and not merkle.verify_consistency(old_size, cp.size, bytes(latest_root),
                                                            cp.root, list(proof)):
            raise Unprocessable(f"the consistency proof from size {old_size} to {cp.size} "
                                "does not verify")
        ts = max(int(self._clock()), last_ts)  # cosignature times never go backwards
        line = cosign(body, self.cosigner, timestamp=ts)
        self._db.execute(
            "INSERT INTO checkpoints (origin, size, root, cosigned_at, note) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root, "
            "cosigned_at = excluded.cosigned_at, note = excluded.note",
            (cp.origin, cp.size, cp.root, ts, note + line))
        return line
