"""Checkpoints, signed notes and the witness (c2sp.org/tlog-witness@v1.0.0), up to a real
``healthlink witness serve`` process that cosigns two checkpoints and refuses a fork and a rollback."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import subprocess
import types

import httpx
import pytest
from servers import BIN, free_port, stop, wait_until_up

from healthlink.errors import Invalid, NotFound, Unprocessable
from healthlink.ledger import merkle
from healthlink.ledger.checkpoint import (
    COSIGNATURE_V1,
    ED25519,
    Checkpoint,
    NoteError,
    NoteNotVerified,
    Signer,
    Verifier,
    cosign,
    generated_key,
    key_id,
    open_note,
    previous_verifiers,
    rotate_key,
    sign_note,
    trusted_verifiers,
    verify_cosignatures,
)
from healthlink.ledger.witness import (
    ForkConflict,
    LogConfig,
    SizeConflict,
    Witness,
    format_add_checkpoint,
    init_witness,
    parse_add_checkpoint,
)

ORIGIN = "audit.healthlink.example/log2026"


# -- a small RFC 9162 tree to make real roots and consistency proofs -----------------------------

def _mth(hashes: list[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)  # largest power of two < n
    return merkle.node_hash(_mth(hashes[:k]), _mth(hashes[k:]))


def _subproof(m: int, hashes: list[bytes], complete: bool) -> list[bytes]:
    n = len(hashes)
    if m == n:
        return [] if complete else [_mth(hashes)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return _subproof(m, hashes[:k], complete) + [_mth(hashes[k:])]
    return _subproof(m - k, hashes[k:], False) + [_mth(hashes[:k])]


class Tree:
    def __init__(self, tag: bytes = b"e") -> None:
        self.tag = tag
        self.leaves: list[bytes] = []

    def grow(self, n: int) -> None:
        self.leaves += [merkle.leaf_hash(self.tag + str(len(self.leaves) + i).encode()) for i in range(n)]

    def root(self, size: int | None = None) -> bytes:
        return _mth(self.leaves[:size or len(self.leaves)])

    def proof(self, old: int) -> list[bytes]:
        return _subproof(old, self.leaves, True) if 0 < old < len(self.leaves) else []


def _log_signer(name: str = ORIGIN) -> Signer:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Signer(name, Ed25519PrivateKey.generate())


def _signed(tree: Tree, signer: Signer, size: int | None = None) -> str:
    size = len(tree.leaves) if size is None else size
    return sign_note(Checkpoint(ORIGIN, size, tree.root(size)).to_body(), signer)


# -- signed notes -------------------------------------------------------------------------------

def test_signed_note_round_trips_and_names_the_keys_that_verified():
    a, b = _log_signer("a.example/k"), _log_signer("b.example/k")
    note = sign_note("hello\n\nworld\n", [a, b])
    text, sigs = open_note(note, [a.verifier])
    assert text == "hello\n\nworld\n"  # an empty line inside the text is allowed
    assert [s.name for s in sigs] == ["a.example/k"]  # b is unknown, so ignored


def test_note_from_the_go_sumdb_note_documentation_verifies():
    # golang.org/x/mod/sumdb/note example: an independent implementation of signed-note.
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    note = ("If you think cryptography is the answer to your problem,\n"
            "then you don't know what your problem is.\n\n"
            "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n")
    text, sigs = open_note(note, [Verifier.from_vkey(vkey)])
    assert text.startswith("If you think") and sigs[0].name == "PeterNeumann"


def test_key_id_and_vkey_follow_signed_note():
    s = _log_signer()
    raw = s.verifier.public_key
    assert s.verifier.key_id == hashlib.sha256(ORIGIN.encode() + b"\n\x01" + raw).digest()[:4]
    assert key_id(ORIGIN, ED25519, raw) == s.verifier.key_id
    material = base64.b64encode(bytes([ED25519]) + raw).decode()
    assert s.vkey == f"{ORIGIN}+{s.verifier.key_id.hex()}+{material}"
    assert Verifier.from_vkey(s.vkey) == s.verifier
    wrong_id = f"{ORIGIN}+00000000+{material}"  # the base64 part may itself hold '+'
    with pytest.raises(NoteError, match="does not match"):
        Verifier.from_vkey(wrong_id)
    cosigner = Signer("w.example/1", s.private_key, COSIGNATURE_V1)
    assert cosigner.verifier.key_id != Signer("w.example/1", s.private_key).verifier.key_id


def test_open_note_refuses_a_bad_signature_from_a_known_key():
    s = _log_signer()
    note = sign_note("hello\n", s)
    with pytest.raises(NoteNotVerified, match="does not verify"):
        open_note(note.replace("hello", "jello"), [s.verifier])


def test_open_note_refuses_a_note_signed_only_by_an_unknown_key():
    s, other = _log_signer(), _log_signer()  # same name, different key: not both name and id
    with pytest.raises(NoteNotVerified, match="trusted key"):
        open_note(sign_note("hello\n", s), [other.verifier])


@pytest.mark.parametrize("note", [
    "hello\n\u2014 k AAAAAAAA\n",                # no blank line before the signatures
    "hello\n\n\u2014 k AAAAAAAAAA==",           # no final newline
    "hel\x07lo\n\n\u2014 k AAAAAAAAAA==\n",     # a control character
    "hello\n\n- k AAAAAAAAAA==\n",              # a hyphen, not an em dash
    "hello\n\n\u2014 k not*base64\n",           # bad base64
    "hello\n\n\u2014 k+x AAAAAAAAAA==\n",       # '+' in the key name
    "hello\n\n\u2014 k AAAA\n",                 # shorter than a key id and one byte
    "hello\n\n" + "\u2014 k AAAAAAAAAA==\n" * 65,  # too many signatures
], ids=["no-blank", "no-newline", "control", "hyphen", "base64", "plus", "short", "too-many"])
def test_open_note_refuses_malformed_notes(note):
    with pytest.raises(NoteError):
        open_note(note, [_log_signer("k").verifier])


def test_open_note_refuses_invalid_utf8():
    with pytest.raises(NoteError, match="UTF-8"):
        open_note(b"h\xffi\n\n\xe2\x80\x94 k AAAAAAAAAA==\n", [_log_signer("k").verifier])


# -- checkpoints and cosignatures ---------------------------------------------------------------

def test_checkpoint_body_is_origin_size_root_and_extension_lines():
    cp = Checkpoint(ORIGIN, 20852163, bytes(range(32)), ("ext one",))
    body = cp.to_body()
    assert body == f"{ORIGIN}\n20852163\n{base64.b64encode(bytes(range(32))).decode()}\next one\n"
    assert Checkpoint.parse(body) == cp


@pytest.mark.parametrize("body", [
    f"{ORIGIN}\n012\n{base64.b64encode(bytes(32)).decode()}\n",   # leading zero
    f"{ORIGIN}\n-1\n{base64.b64encode(bytes(32)).decode()}\n",
    f"{ORIGIN}\n12\n{base64.b64encode(bytes(31)).decode()}\n",    # not a SHA-256
    f"{ORIGIN}\n12\n",                                            # no root
    f"{ORIGIN}\n12\n{base64.b64encode(bytes(32)).decode()}\n\nx\n",  # empty extension line
    f"{ORIGIN}\n12\n{base64.b64encode(bytes(32)).decode()}",      # no final newline
])
def test_checkpoint_parse_refuses_malformed_bodies(body):
    with pytest.raises(NoteError):
        Checkpoint.parse(body)


def test_cosignature_signs_time_and_body_and_verifies_with_the_witness_vkey():
    log_key, w = _log_signer(), Signer("witness.example/w1", _log_signer().private_key, COSIGNATURE_V1)
    note = sign_note(Checkpoint(ORIGIN, 5, bytes(32)).to_body(), log_key)
    line = cosign(Checkpoint(ORIGIN, 5, bytes(32)).to_body(), w, timestamp=1679315147)
    raw = base64.b64decode(line.split()[2])
    assert raw[:4] == w.verifier.key_id and int.from_bytes(raw[4:12], "big") == 1679315147
    w.private_key.public_key().verify(
        raw[12:], f"cosignature/v1\ntime 1679315147\n{ORIGIN}\n5\n{base64.b64encode(bytes(32)).decode()}\n".encode())
    sigs = verify_cosignatures(note, line, [Verifier.from_vkey(w.vkey)])
    assert sigs[0].timestamp == 1679315147
    other = sign_note(Checkpoint(ORIGIN, 6, bytes(32)).to_body(), log_key)
    with pytest.raises(NoteNotVerified):
        verify_cosignatures(other, line, [w.verifier])
    with pytest.raises(NoteNotVerified):  # a log key cannot vouch as a witness
        verify_cosignatures(note, line, [log_key.verifier])


def test_key_file_is_generated_once_with_mode_0600_and_rotation_keeps_the_old_public_key(tmp_path):
    path = tmp_path / "log_key.pem"
    key = generated_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert generated_key(path).private_bytes_raw() == key.private_bytes_raw()
    old = Signer(ORIGIN, key)
    before = sign_note("old checkpoint\n", old)
    new = rotate_key(path, ORIGIN)
    assert new.vkey != old.vkey and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [v.vkey for v in previous_verifiers(path)] == [old.vkey]
    trusted = trusted_verifiers(Signer(ORIGIN, generated_key(path)), previous_verifiers(path))
    assert open_note(before, trusted)[0] == "old checkpoint\n"
    assert open_note(sign_note("new\n", new), trusted)[0] == "new\n"


# -- the witness core ---------------------------------------------------------------------------

@pytest.fixture
def world(tmp_path):
    log_key = _log_signer()
    init_witness(tmp_path / "w", "witness.commission.example/w1")
    w = Witness.open(tmp_path / "w", [LogConfig.parse(f"{ORIGIN} {log_key.vkey}")])
    yield types.SimpleNamespace(log_key=log_key, witness=w, tree=Tree(), dir=tmp_path / "w")
    w.close()


def test_witness_cosigns_a_first_checkpoint_then_one_with_a_consistency_proof(world):
    tree, w = world.tree, world.witness
    tree.grow(5)
    first = _signed(tree, world.log_key)
    lines = w.add_checkpoint(0, [], first)
    assert verify_cosignatures(first, lines, [Verifier.from_vkey(w.vkey)])
    tree.grow(8)
    second = _signed(tree, world.log_key)
    lines = w.add_checkpoint(5, tree.proof(5), second)
    assert verify_cosignatures(second, lines, [w.cosigner.verifier])
    size, note = w.latest(ORIGIN)
    assert size == 13
    open_note(note, [world.log_key.verifier])
    open_note(note, [w.cosigner.verifier])  # the stored note carries the cosignature


def test_witness_refuses_a_rollback_with_409_and_its_latest_size(world):
    tree, w = world.tree, world.witness
    tree.grow(10)
    w.add_checkpoint(0, [], _signed(tree, world.log_key))
    with pytest.raises(SizeConflict) as exc:  # a log that lost 4 records starts again from 0
        w.add_checkpoint(0, [], _signed(tree, world.log_key, size=6))
    assert exc.value.status == 409 and exc.value.latest_size == 10
    with pytest.raises(Invalid):  # old size larger than the checkpoint: 400
        w.add_checkpoint(10, [], _signed(tree, world.log_key, size=6))
    assert w.latest(ORIGIN)[0] == 10


def test_witness_refuses_a_fork_at_the_same_size_with_409_and_keeps_the_evidence(world):
    tree, w = world.tree, world.witness
    tree.grow(7)
    w.add_checkpoint(0, [], _signed(tree, world.log_key))
    forked = Tree(b"forked")
    forked.grow(7)
    note = _signed(forked, world.log_key)
    with pytest.raises(ForkConflict) as exc:
        w.add_checkpoint(7, [], note)
    assert exc.value.status == 409
    assert w.evidence(ORIGIN)[0][2] == note
    # the same fork one leaf later fails its consistency proof: 422
    forked.grow(1)
    with pytest.raises(Unprocessable):
        w.add_checkpoint(7, forked.proof(7), _signed(forked, world.log_key))
    assert len(w.evidence(ORIGIN)) == 2 and w.latest(ORIGIN)[0] == 7


def test_witness_refuses_a_wrong_log_key_with_403_and_an_unknown_origin_with_404(world):
    world.tree.grow(3)
    with pytest.raises(NoteNotVerified) as exc:
        world.witness.add_checkpoint(0, [], _signed(world.tree, _log_signer()))
    assert exc.value.status == 403
    other = sign_note(Checkpoint("other.example/log", 3, world.tree.root()).to_body(), world.log_key)
    with pytest.raises(NotFound):
        world.witness.add_checkpoint(0, [], other)
    assert world.witness.latest(ORIGIN) is None


def test_witness_state_survives_a_restart(world):
    world.tree.grow(4)
    world.witness.add_checkpoint(0, [], _signed(world.tree, world.log_key))
    world.witness.close()
    again = Witness.open(world.dir, world.witness.logs.values())
    try:
        assert again.vkey == world.witness.vkey
        with pytest.raises(SizeConflict) as exc:
            again.add_checkpoint(0, [], _signed(world.tree, world.log_key))
        assert exc.value.latest_size == 4
    finally:
        again.close()
    world.witness = again  # the fixture closes it (a second close is harmless)


def test_add_checkpoint_body_round_trips_and_refuses_bad_bodies():
    proof = [bytes([i]) * 32 for i in range(3)]
    body = format_add_checkpoint(5, proof, "note\n")
    assert body.startswith(b"old 5\n") and parse_add_checkpoint(body) == (5, proof, "note\n")
    for bad in (b"old 05\n\nx", b"new 5\n\nx", b"old 5\nnot base64!\n\nx", b"old 5\nx",
                b"old 1\n" + b"".join(base64.b64encode(bytes(32)) + b"\n" for _ in range(64)) + b"\nx"):
        with pytest.raises(Invalid):
            parse_add_checkpoint(bad)


# -- end to end: healthlink witness serve --------------------------------------------------------

def test_witness_serve_cosigns_two_checkpoints_and_refuses_a_fork_and_a_rollback(tmp_path):
    from healthlink.ledger.witness_client import fetch_checkpoint, push

    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHLINK_")}
    init = subprocess.run([str(BIN), "witness", "init", "--dir", str(tmp_path / "w"),
                           "--name", "witness.commission.example/w1"],
                          env=env, capture_output=True, text=True, check=True)
    witness = Verifier.from_vkey(init.stdout.strip())
    assert witness.alg == COSIGNATURE_V1
    log_key, tree, port = _log_signer(), Tree(), free_port()
    proc = subprocess.Popen([str(BIN), "witness", "serve", "--dir", str(tmp_path / "w"),
                             "--log", f"{ORIGIN} {log_key.vkey}", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    wait_until_up(proc, base, timeout=30)
    try:
        tree.grow(3)
        first = _signed(tree, log_key)
        cosigs = push(base, 0, [], first, timeout=5, witness=witness)
        stored = [first + cosigs]  # what the log keeps: its checkpoint with the cosignature
        tree.grow(6)
        second = _signed(tree, log_key)
        cosigs = push(base, 3, tree.proof(3), second, timeout=5, witness=witness)
        stored.append(second + cosigs)
        assert all(open_note(n, [witness])[1][0].timestamp for n in stored)

        held = fetch_checkpoint(base, ORIGIN, timeout=5)
        assert Checkpoint.parse(open_note(held, [log_key.verifier])[0]).size == 9
        assert open_note(held, [witness])  # cosigned by the witness

        forked = Tree(b"forked")
        forked.grow(9)
        r = httpx.post(f"{base}/add-checkpoint", content=format_add_checkpoint(9, [], _signed(forked, log_key)))
        assert r.status_code == 409
        with pytest.raises(SizeConflict) as exc:  # rolled back to 5 leaves, starting again
            push(base, 0, [], _signed(tree, log_key, size=5), timeout=5)
        assert exc.value.latest_size == 9
        r = httpx.post(f"{base}/add-checkpoint", content=format_add_checkpoint(3, tree.proof(3), second))
        assert (r.status_code, r.headers["content-type"], r.text) == (409, "text/x.tlog.size", "9\n")
        r = httpx.post(f"{base}/add-checkpoint", content=format_add_checkpoint(0, [], _signed(tree, _log_signer())))
        assert r.status_code == 403
    finally:
        stop(proc)
