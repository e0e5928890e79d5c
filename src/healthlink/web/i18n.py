"""Page languages: Simplified Chinese (the default for the demo region) and English.

Message ids are the English text.  Translations live in Babel/gettext message catalogs
(``locale/<lang>/LC_MESSAGES/messages.po``).  The ``.po`` file is read at start with
Babel's own reader and compiled in memory to a standard ``gettext.GNUTranslations``
object, so there is no separate compile step to forget and no ``.mo`` file to keep in step
with its source (docs/web.md, "Languages").
"""

from __future__ import annotations

import gettext
from functools import lru_cache
from io import BytesIO
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALE_DIR = Path(__file__).parent / "locale"
DEFAULT_LANG = "zh-CN"
# page language (the html lang attribute and the cookie value) -> catalog directory
LANGS = {"zh-CN": "zh_CN", "en": None}
LANG_NAMES = {"zh-CN": "中文", "en": "English"}


def N_(message: str) -> str:
    """Mark a string for extraction; it is translated where it is shown."""
    return message


def catalog_path(lang: str) -> Path:
    return LOCALE_DIR / LANGS[lang] / "LC_MESSAGES" / "messages.po"  # type: ignore[operator]


@lru_cache(maxsize=None)
def translations(lang: str) -> gettext.NullTranslations:
    """The translations of ``lang``; English is the message ids themselves."""
    if LANGS.get(lang) is None:
        return gettext.NullTranslations()
    with catalog_path(lang).open("rb") as f:
        catalog = read_po(f, locale=LANGS[lang])
    buf = BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return gettext.GNUTranslations(buf)


def pick(lang: str | None) -> str:
    return lang if lang in LANGS else DEFAULT_LANG
