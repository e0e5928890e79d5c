"""Names as the matcher compares them: characters, pinyin, and a variant key.

* ``normalise_name`` — NFKC (full-width letters), no spaces or the middle dot some
  registries put between Tibetan name parts (扎西·多杰).
* ``pinyin_key`` — toneless pinyin of the characters in one lower-case word
  (才仁卓玛 -> ``cairenzhuoma``); a name written only in Latin letters keeps its letters.
* ``variant_key`` — the name with each Tibetan name part replaced by its group's first
  spelling (``variants.GROUPS``: 才仁 -> 次仁), and every other character by a folded
  pinyin syllable (zh/ch/sh -> z/c/s, -ng -> -n: the confusions of registration by ear),
  so transliteration variants and homophones agree.

Many names have no family name (most Tibetan names): the matcher always compares the whole
name, family and given together, never the family name alone.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from pypinyin import lazy_pinyin

from healthlink.empi.variants import canonical_parts

_CANONICAL = canonical_parts()
_PART_LENGTHS = sorted({len(s) for s in _CANONICAL}, reverse=True)
_DROP = re.compile(r"[\s·•・.\-_'’]+")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def normalise_name(text: str | None) -> str | None:
    if not text:
        return None
    out = _DROP.sub("", unicodedata.normalize("NFKC", text)).lower()
    return out or None


def has_chinese(text: str) -> bool:
    return bool(_CJK.search(text))


@lru_cache(maxsize=65536)
def pinyin_key(name: str) -> str:
    """Toneless pinyin, one word, lower case, ü as v; Latin letters pass through."""
    return "".join(lazy_pinyin(name, v_to_u=False)).replace("ü", "v").lower()


def fold_syllable(syllable: str) -> str:
    """Fold the initials and finals that registration by ear confuses."""
    s = syllable.lower().replace("ü", "v")
    for retroflex, plain in (("zh", "z"), ("ch", "c"), ("sh", "s")):
        if s.startswith(retroflex):
            s = plain + s[2:]
            break
    return s[:-1] if s.endswith("ng") else s


@lru_cache(maxsize=65536)
def variant_key(name: str) -> str:
    """The key that transliteration variants of one name share (才仁卓玛 == 次仁卓嘛)."""
    if not has_chinese(name):
        return "".join(fold_syllable(w) for w in re.findall(r"[a-z]+", name.lower()))
    out: list[str] = []
    i = 0
    while i < len(name):
        for n in _PART_LENGTHS:
            part = _CANONICAL.get(name[i:i + n])
            if part is not None:
                out.append("".join(fold_syllable(s) for s in lazy_pinyin(part)))
                i += n
                break
        else:
            out.append(fold_syllable(lazy_pinyin(name[i])[0]))
            i += 1
    return "".join(out)
