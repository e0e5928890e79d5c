"""The log's side of ``c2sp.org/tlog-witness@v1.0.0``: push a checkpoint, read one back.

Plain ``urllib`` (the standard library; httpx is only a test dependency), one request per
call, no keep-alive (the spec's SHOULD; a log pushes about once a second to a few witnesses).
A witness's refusal comes back as the core's error family, so the sequencer can tell a
conflict (retry from the size the witness names, or raise the alarm) from an outage.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

from healthlink.errors import (
    Forbidden,
    HealthLinkError,
    Invalid,
    NotFound,
    Unavailable,
    Unprocessable,
)
from healthlink.ledger.checkpoint import NoteSignature, Verifier, verify_cosignatures
from healthlink.ledger.witness import ForkConflict, SizeConflict, format_add_checkpoint

SIZE_MEDIA_TYPE = "text/x.tlog.size"
_BY_STATUS: dict[int, type[HealthLinkError]] = {400: Invalid, 403: Forbidden, 404: NotFound,
                                                422: Unprocessable}


def push(url: str, old_size: int, proof: Sequence[bytes], signed_checkpoint: str, *,
         timeout: float = 10.0, witness: Verifier | None = None) -> str:
    """POST ``<url>/add-checkpoint``; return the witness's cosignature line(s).

    With ``witness`` the lines are verified over the checkpoint first (NoteNotVerified if
    none from that key verifies).  A 409 with a ``text/x.tlog.size`` body raises SizeConflict
    with the witness's latest size; other refusals raise the matching HealthLinkError;
    an unreachable witness raises Unavailable.
    """
    req = urllib.request.Request(
        url.rstrip("/") + "/add-checkpoint", method="POST",
        data=format_add_checkpoint(old_size, proof, signed_checkpoint),
        headers={"Content-Type": "text/plain; charset=utf-8"})
    body = _send(req, timeout)
    if witness is not None:
        verify_cosignatures(signed_checkpoint, body, [witness])
    return body


def fetch_checkpoint(url: str, origin: str, *, timeout: float = 10.0) -> str:
    """The witness's latest cosigned checkpoint for ``origin`` (a signed note, unverified:
    open it with the log's and the witness's verifiers)."""
    req = urllib.request.Request(url.rstrip("/") + "/checkpoint/" + urllib.parse.quote(origin, safe=""))
    return _send(req, timeout)


def cosigned_by(signed_checkpoint: str, lines: str, witness: Verifier) -> list[NoteSignature]:
    """The verified cosignatures of ``witness`` among ``lines``."""
    return verify_cosignatures(signed_checkpoint, lines, [witness])


def _send(req: urllib.request.Request, timeout: float) -> str:
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        ctype = (exc.headers.get("Content-Type") or "").split(";")[0].strip()
        if exc.code == 409 and ctype == SIZE_MEDIA_TYPE:
            size = int(text.strip())
            raise SizeConflict(f"the witness at {req.full_url} last cosigned size {size}",
                               latest_size=size) from None
        if exc.code == 409:
            raise ForkConflict(f"the witness at {req.full_url} refused a fork: {_detail(text)}") from None
        cls = _BY_STATUS.get(exc.code, Unavailable)
        raise cls(f"the witness at {req.full_url} answered {exc.code}: {_detail(text)}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unavailable(f"the witness at {req.full_url} is unreachable: {exc}") from None


def _detail(text: str) -> str:
    try:
        return str(json.loads(text).get("detail", text))[:300]
    except (ValueError, AttributeError):
        return text[:300]
