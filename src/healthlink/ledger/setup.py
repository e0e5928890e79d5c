"""The ledger as configured: its signing key, checkpoint signer and opener, witnesses.

The key is the one ``HEALTHLINK_LEDGER_KEY_FILE`` names, or one generated once into
``<data_dir>/ledger_key.pem`` (mode 0600); ``healthlink ledger rotate-key`` replaces it and keeps
the old public key in ``<key file>.previous``, so older checkpoints still verify (docs/ledger.md).
"""

from __future__ import annotations

from pathlib import Path

from healthlink.db import Database
from healthlink.ledger.checkpoint import (
    Checkpoint,
    Signer,
    Verifier,
    generated_key,
    load_private_key,
    open_note,
    previous_verifiers,
    sign_note,
    trusted_verifiers,
)
from healthlink.ledger.log import Ledger
from healthlink.settings import Settings

GENERATED_KEY_FILE = "ledger_key.pem"


def key_path(settings: Settings) -> Path:
    if settings.ledger_key_file is not None:
        return settings.ledger_key_file
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings.data_dir / GENERATED_KEY_FILE


def signer(settings: Settings) -> Signer:
    path = key_path(settings)
    key = load_private_key(path) if settings.ledger_key_file is not None else generated_key(path)
    return Signer(settings.ledger_origin, key)


def verifiers(settings: Settings) -> tuple[Verifier, ...]:
    s = signer(settings)
    return trusted_verifiers(s, previous_verifiers(key_path(settings)))


def witnesses(settings: Settings) -> list[tuple[str, Verifier]]:
    out = []
    for entry in settings.ledger_witnesses:
        url, _, vkey = entry.strip().partition(" ")
        out.append((url, Verifier.from_vkey(vkey.strip())))
    return out


def checkpointer(settings: Settings):  # noqa: ANN201
    s = signer(settings)

    def sign(size: int, root: bytes) -> str:
        return sign_note(Checkpoint(settings.ledger_origin, size, root).to_body(), s)

    return sign


def note_opener(settings: Settings):  # noqa: ANN201
    """A signed checkpoint note -> (size, root), or ValueError (bad signature, other log)."""
    trusted = verifiers(settings)

    def open_(note: str) -> tuple[int, bytes]:
        try:
            text, _ = open_note(note, trusted)
            cp = Checkpoint.parse(text)
        except Exception as exc:  # noqa: BLE001 - NoteError / NoteNotVerified / malformed
            raise ValueError(str(exc)) from None
        if cp.origin != settings.ledger_origin:
            raise ValueError(f"checkpoint of another log ({cp.origin!r})")
        return cp.size, cp.root

    return open_


def ledger(db: Database, settings: Settings) -> Ledger:
    return Ledger(db, checkpointer=checkpointer(settings), opener=note_opener(settings),
                  witnesses=witnesses(settings),
                  interval=settings.ledger_interval_seconds,
                  checkpoint_seconds=settings.ledger_checkpoint_seconds)
