"""The QR a patient shows: an SVG drawn by segno, with nothing loaded from outside."""

from __future__ import annotations

import io

import segno

QR_ERROR = "m"  # at least level M (~15 % recovery); segno raises it when the version has room
QR_SCALE = 4  # px per module: a ~240 px symbol for a 250-character code, sharp on any screen
QR_BORDER = 4  # modules of quiet zone, as ISO/IEC 18004 requires around a QR symbol


def qr_matrix(payload: str) -> segno.QRCode:
    """The QR symbol of ``payload`` (a regular QR, never a Micro QR)."""
    return segno.make_qr(payload, error=QR_ERROR)


def qr_svg(payload: str, *, title: str = "HealthLink health code") -> str:
    """A standalone SVG document of the QR for ``payload``.

    It carries a ``viewBox`` and no fixed size, so a page scales it with CSS; dark modules are
    black strokes on a white square (scanners need the contrast in dark mode too); no fonts,
    scripts, images or links.
    """
    out = io.BytesIO()
    qr_matrix(payload).save(out, kind="svg", scale=QR_SCALE, border=QR_BORDER, xmldecl=False,
                            omitsize=True, title=title, dark="#000", light="#fff", nl=False)
    return out.getvalue().decode("utf-8")
