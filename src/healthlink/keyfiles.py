"""Private key files of the platform's Ed25519 keys (health codes, ledger checkpoints, a witness).

A key is a PEM file (PKCS#8, as ``openssl genpkey -algorithm ed25519`` writes it), mode 0600.
:func:`generated_ed25519` makes one on first use: written to a private temporary file, fsynced, and
hard-linked into place, so two processes starting at once end up with the same complete key, never
a half-written one.  :func:`write_private_key` also replaces a key (rotation).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger(__name__)


def write_private_key(path: Path, key: Ed25519PrivateKey, *, replace: bool) -> bool:
    """Write ``key`` (mode 0600, fsynced); False when not replacing and the file appeared first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    except FileExistsError:  # another process won the race: use its key
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def generated_ed25519(path: Path, load: Callable[[Path], Ed25519PrivateKey], *, what: str = "key") -> Ed25519PrivateKey:
    """The key at ``path`` (read with ``load``), generating it first if the file does not exist."""
    if path.exists():
        if path.stat().st_mode & 0o077:
            log.warning("%s file %s is readable by other users; chmod 600 it", what, path)
        return load(path)
    key = Ed25519PrivateKey.generate()
    return key if write_private_key(path, key, replace=False) else load(path)
