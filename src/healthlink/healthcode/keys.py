"""The platform's health-code keys: one Ed25519 signing key and the public keys it trusts.

The signing key is a PEM file (PKCS#8, as ``openssl genpkey -algorithm ed25519`` writes it):
the one named by ``HEALTHLINK_HEALTH_CODE_KEY_FILE``, or, when that is unset, one generated once
into ``<data_dir>/health_code_key.pem`` with mode 0600 and reused from then on.  Verification
trusts the signing key's public half plus the previous keys of
``HEALTHLINK_HEALTH_CODE_PREVIOUS_KEYS``, so a key rotation does not void codes issued a minute
before it (docs/healthcode.md, ADR 0011).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from healthlink.keyfiles import generated_ed25519
from healthlink.settings import Settings

log = logging.getLogger(__name__)

GENERATED_KEY_FILE = "health_code_key.pem"  # under Settings.data_dir


class KeyFileError(ValueError):
    """A key file is missing, unreadable or not an Ed25519 key (a start-up error)."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """8 hex characters: the first 4 bytes of SHA-256 over the raw 32-byte public key.

    Short, because it travels in every QR; it only picks the key to try, the signature
    decides (a clash between two trusted keys is refused when the ring is built).
    """
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:4].hex()


@dataclass(frozen=True)
class KeyRing:
    """The key that signs new codes (None for a verify-only ring) and every trusted public key."""

    signing_key: Ed25519PrivateKey | None
    trusted: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)

    @classmethod
    def of(cls, signing_key: Ed25519PrivateKey | None,
           previous: Iterable[Ed25519PublicKey] = ()) -> KeyRing:
        keys = ([signing_key.public_key()] if signing_key is not None else []) + list(previous)
        trusted: dict[str, Ed25519PublicKey] = {}
        for k in keys:
            kid = key_id(k)
            if kid in trusted and _raw(trusted[kid]) != _raw(k):
                raise KeyFileError(f"two different trusted health-code keys share key id {kid}; "
                                   "replace one of them")
            trusted[kid] = k
        return cls(signing_key, MappingProxyType(trusted))

    @property
    def key_id(self) -> str:
        """Key id of the signing key."""
        if self.signing_key is None:
            raise KeyFileError("this key ring only verifies: it holds no signing key")
        return key_id(self.signing_key.public_key())

    def public_key(self, kid: str) -> Ed25519PublicKey | None:
        return self.trusted.get(kid)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An unencrypted Ed25519 private key from a PEM file."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise KeyFileError(f"cannot read health-code key file {path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:  # not PEM, encrypted, unsupported
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}; health codes need an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file holding either the public or the private key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read health-code key file {path}: {exc.strerror}") from None
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyFileError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}; health codes need an Ed25519 key")
    return key


def public_pem(key: Ed25519PublicKey) -> str:
    """The public key as PEM (SubjectPublicKeyInfo), e.g. to keep it as a previous key."""
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def generated_key(path: Path) -> Ed25519PrivateKey:
    """The key at ``path``, generating it first (mode 0600) if the file does not exist
    (:func:`healthlink.keyfiles.generated_ed25519`)."""
    return generated_ed25519(path, load_private_key, what="health-code key")


def load_keyring(settings: Settings) -> KeyRing:
    """The platform's key ring as the settings describe it."""
    if settings.health_code_key_file is not None:
        signing = load_private_key(settings.health_code_key_file)
    else:
        signing = generated_key(settings.data_dir / GENERATED_KEY_FILE)
    return KeyRing.of(signing, [load_public_key(p) for p in settings.health_code_previous_keys])


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
