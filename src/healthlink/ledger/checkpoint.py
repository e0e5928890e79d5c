"""Signed checkpoints: C2SP signed notes with Ed25519, checkpoint bodies, witness cosignatures.

Pinned versions (what this module implements, and nothing newer):

* ``c2sp.org/signed-note@v1.0.0`` — the note format, key names, key IDs and vkeys;
  only signature type 0x01 (Ed25519) and 0x04 (cosignature/v1) are supported.
* ``c2sp.org/tlog-checkpoint@v1.0.0`` — origin line, decimal size, base64 root hash,
  optional extension lines.  The log signs with Ed25519 (type 0x01), which the public
  witness network requires (tlog-tiles); the ML-DSA-44 form of later versions is not implemented.
* ``c2sp.org/tlog-cosignature@v1.0.0`` — the Ed25519 ``cosignature/v1`` witness signature
  (type 0x04): ``u64 timestamp || 64-byte signature`` over
  ``"cosignature/v1\\ntime <t>\\n" || checkpoint body``.

Keys are PKCS#8 PEM files, mirrored on :mod:`healthlink.healthcode.keys`: generated once with
mode 0600, written to a private temporary file and hard-linked into place.  A rotation keeps
the old public key as a vkey line in ``<key file>.previous`` so checkpoints signed before the
rotation still verify (docs/ledger.md, "Checkpoints and witnesses").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from healthlink.errors import Forbidden, Invalid
from healthlink.keyfiles import generated_ed25519, write_private_key

log = logging.getLogger(__name__)

SIGNED_NOTE_SPEC = "c2sp.org/signed-note@v1.0.0"
CHECKPOINT_SPEC = "c2sp.org/tlog-checkpoint@v1.0.0"
COSIGNATURE_SPEC = "c2sp.org/tlog-cosignature@v1.0.0"

ED25519 = 0x01  # signed-note "Signature types"
COSIGNATURE_V1 = 0x04  # timestamped Ed25519 witness cosignature (tlog-cosignature)
MAX_SIGNATURES = 64  # signed-note: verifiers MUST accept at least 16
MAX_NOTE_BYTES = 64 * 1024
DASH = "\u2014"  # em dash that starts every signature line
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")


class NoteError(Invalid):
    """A note, checkpoint, key name or vkey that does not follow its format (400)."""


class NoteNotVerified(Forbidden):
    """No signature from a trusted key verifies, or one from a trusted key fails (403)."""


class KeyFileError(ValueError):
    """A key file is missing, unreadable or not an Ed25519 key (a start-up error)."""


# -- key names, key IDs, vkeys ------------------------------------------------------------------

def check_key_name(name: str) -> str:
    """Key names are non-empty, without Unicode spaces or '+' (signed-note, "Format")."""
    if not name or "+" in name or any(c.isspace() or ord(c) < 0x20 for c in name):
        raise NoteError(f"bad key name {name!r}: it must be non-empty, without spaces or '+'")
    return name


def key_id(name: str, alg: int, public_key: bytes) -> bytes:
    """SHA-256(key name || 0x0A || signature type || public key)[:4] (signed-note, "Signatures")."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()[:4]


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    """A trusted public key: verifies note signatures of type ``alg`` made under ``name``."""

    name: str
    alg: int
    public_key: bytes  # 32 raw Ed25519 bytes
    key_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if self.alg not in (ED25519, COSIGNATURE_V1) or len(self.public_key) != 32:
            raise NoteError(f"unsupported key for {self.name}: type {self.alg:#04x}")
        object.__setattr__(self, "key_id", key_id(self.name, self.alg, self.public_key))

    @property
    def vkey(self) -> str:
        """``<name>+<hex key id>+<base64(type || public key)>``."""
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(bytes([self.alg]) + self.public_key).decode()}"

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse a vkey, refusing one whose key ID does not match its name and key."""
        name, sep, rest = vkey.strip().partition("+")
        kid, sep2, material = rest.partition("+")
        if not (sep and sep2) or not re.fullmatch(r"[0-9a-fA-F]{8}", kid):
            raise NoteError(f"bad vkey {vkey!r}: expected <name>+<8 hex>+<base64 key>")
        raw = _b64(material, what="vkey key material")
        if len(raw) != 33:
            raise NoteError(f"bad vkey for {name}: key material must be a type byte and 32 bytes")
        verifier = cls(name, raw[0], raw[1:])
        if verifier.key_id != bytes.fromhex(kid):
            raise NoteError(f"bad vkey for {name}: key id {kid} does not match the key")
        return verifier

    def verify(self, text: bytes, sig: bytes) -> int | None:
        """Check ``sig`` (without the key ID) over note ``text``; return the cosignature's
        timestamp (None for a plain Ed25519 signature).  Raises InvalidSignature."""
        key = Ed25519PublicKey.from_public_bytes(self.public_key)
        if self.alg == ED25519:
            if len(sig) != 64:
                raise InvalidSignature
            key.verify(sig, text)
            return None
        if len(sig) != 72:
            raise InvalidSignature
        (timestamp,) = struct.unpack(">Q", sig[:8])
        if timestamp >= 2**63:
            raise InvalidSignature
        key.verify(sig[8:], cosignature_message(text.decode(), timestamp))
        return timestamp


@dataclass(frozen=True)
class Signer:
    """A private key that signs notes (``alg`` 0x01) or cosigns checkpoints (``alg`` 0x04)."""

    name: str
    private_key: Ed25519PrivateKey
    alg: int = ED25519

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.alg, _raw(self.private_key.public_key()))

    @property
    def vkey(self) -> str:
        return self.verifier.vkey

    def signature_line(self, text: str, *, timestamp: int | None = None) -> str:
        """One ``— <name> base64(key ID || signature)`` line over ``text``."""
        if self.alg == ED25519:
            sig = self.private_key.sign(text.encode())
        else:
            ts = int(time.time()) if timestamp is None else timestamp
            sig = struct.pack(">Q", ts) + self.private_key.sign(cosignature_message(text, ts))
        return f"{DASH} {self.name} {base64.b64encode(self.verifier.key_id + sig).decode()}\n"


# -- signed notes -------------------------------------------------------------------------------

@dataclass(frozen=True)
class NoteSignature:
    """A verified signature: who made it and, for a cosignature, when."""

    name: str
    key_id: bytes
    line: str
    timestamp: int | None = None


def _b64(s: str, *, what: str) -> bytes:
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"{what} is not valid base64") from None


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end in a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("a note must not contain control characters other than newline")


def sign_note(text: str, signers: Signer | Sequence[Signer]) -> str:
    """The signed note: ``text``, a blank line, one signature line per signer."""
    _check_text(text)
    signers = [signers] if isinstance(signers, Signer) else list(signers)
    if not signers:
        raise NoteError("a signed note needs at least one signature")
    return text + "\n" + "".join(s.signature_line(text) for s in signers)


def split_note(note: str | bytes) -> tuple[str, list[tuple[str, bytes, bytes, str]]]:
    """The note's text and its signature lines as (name, key ID, signature, line), unverified.

    Refuses a malformed note: not UTF-8, control characters, no blank line before the
    signatures, a bad signature line, or more than MAX_SIGNATURES lines.
    """
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE_BYTES:
            raise NoteError(f"the note is larger than {MAX_NOTE_BYTES} bytes")
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("a note must be valid UTF-8") from None
    if len(note) > MAX_NOTE_BYTES:
        raise NoteError(f"the note is larger than {MAX_NOTE_BYTES} bytes")
    _check_text(note)
    cut = note.rfind("\n\n")  # the last empty line separates text and signatures
    if cut < 0:
        raise NoteError("a signed note needs a blank line before its signatures")
    text, block = note[:cut + 1], note[cut + 2:]
    lines = block.split("\n")[:-1]
    if not lines:
        raise NoteError("a signed note needs at least one signature line")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"more than {MAX_SIGNATURES} signatures")
    sigs = []
    for line in lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH:
            raise NoteError(f"malformed signature line {line[:80]!r}")
        name = check_key_name(parts[1])
        raw = _b64(parts[2], what=f"the signature by {name}")
        if len(raw) < 5:
            raise NoteError(f"the signature by {name} is too short")
        sigs.append((name, raw[:4], raw[4:], line + "\n"))
    return text, sigs


def open_note(note: str | bytes, verifiers: Iterable[Verifier]) -> tuple[str, list[NoteSignature]]:
    """Verify a signed note; return its text and the signatures that verified.

    Per signed-note: signatures from unknown keys (name and key ID not both known) are
    ignored; a signature from a known key that fails rejects the whole note; a note with no
    verified signature is rejected.
    """
    text, sigs = split_note(note)
    known = {(v.name, v.key_id): v for v in verifiers}
    verified: list[NoteSignature] = []
    for name, kid, sig, line in sigs:
        v = known.get((name, kid))
        if v is None:
            continue
        try:
            ts = v.verify(text.encode(), sig)
        except InvalidSignature:
            raise NoteNotVerified(f"the signature by {name} ({kid.hex()}) does not verify") from None
        verified.append(NoteSignature(name, kid, line, ts))
    if not verified:
        raise NoteNotVerified("no signature on the note is from a trusted key")
    return text, verified


# -- checkpoints and cosignatures ---------------------------------------------------------------

@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log's origin, its size and the RFC 9162 root hash (tlog-checkpoint)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def to_body(self) -> str:
        return "".join(f"{line}\n" for line in
                       (self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions))

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        """Parse a checkpoint's note text (with its final newline, without signatures)."""
        _check_text(body)
        lines = body[:-1].split("\n")
        if len(lines) < 3 or any(not ln for ln in lines):
            raise NoteError("a checkpoint has at least three lines, none empty")
        origin, size, root, *ext = lines
        if not _DECIMAL.fullmatch(size) or int(size) >= 2**63:
            raise NoteError(f"bad checkpoint size {size[:30]!r}: decimal, no leading zeroes")
        digest = _b64(root, what="the checkpoint root hash")
        if len(digest) != 32:
            raise NoteError("the checkpoint root hash must be 32 bytes (SHA-256)")
        return cls(origin, int(size), digest, tuple(ext))


def cosignature_message(body: str, timestamp: int) -> bytes:
    """What a cosignature/v1 signs: header, time line, then the checkpoint body."""
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


def cosign(body: str, cosigner: Signer, *, timestamp: int | None = None) -> str:
    """The witness's cosignature line over a checkpoint body."""
    if cosigner.alg != COSIGNATURE_V1:
        raise NoteError("a cosignature needs a cosigner key (type 0x04)")
    Checkpoint.parse(body)
    return cosigner.signature_line(body, timestamp=timestamp)


def verify_cosignatures(signed_checkpoint: str, lines: str,
                        witnesses: Iterable[Verifier]) -> list[NoteSignature]:
    """Cosignatures in ``lines`` that verify over ``signed_checkpoint``'s body under ``witnesses``.

    As tlog-witness says, the response is appended to the checkpoint and opened as a note with
    only the witness keys; unknown keys are ignored, a bad known one raises NoteNotVerified.
    """
    cosigners = [w for w in witnesses if w.alg == COSIGNATURE_V1]
    return open_note(signed_checkpoint + lines, cosigners)[1]


# -- key files ----------------------------------------------------------------------------------

def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An unencrypted Ed25519 private key from a PEM file."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}; checkpoints need an Ed25519 key")
    return key


def generated_key(path: Path) -> Ed25519PrivateKey:
    """The key at ``path``, generating it first (mode 0600) if the file does not exist."""
    return generated_ed25519(path, load_private_key, what="key")


def previous_verifiers(path: Path) -> list[Verifier]:
    """The vkeys kept in ``<path>.previous`` by earlier rotations, oldest first."""
    prev = path.with_name(path.name + ".previous")
    if not prev.exists():
        return []
    return [Verifier.from_vkey(ln) for ln in prev.read_text().splitlines() if ln.strip()]


def rotate_key(path: Path, name: str, *, alg: int = ED25519) -> Signer:
    """Replace the key at ``path`` with a new one; keep the old public key as a vkey in
    ``<path>.previous`` (appended and fsynced before the private key is replaced)."""
    old = Signer(name, load_private_key(path), alg)
    prev = path.with_name(path.name + ".previous")
    with prev.open("a") as fh:
        fh.write(old.vkey + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    new = Ed25519PrivateKey.generate()
    write_private_key(path, new, replace=True)
    return Signer(name, new, alg)


def trusted_verifiers(signer: Signer, previous: Iterable[Verifier] = ()) -> tuple[Verifier, ...]:
    """The signer's own verifier followed by the kept previous keys."""
    return (signer.verifier, *previous)
