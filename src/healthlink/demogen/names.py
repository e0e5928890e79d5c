"""Names of the region: Tibetan names written in Chinese characters, and Han names.

A Tibetan name is usually two two-syllable parts (才仁卓玛, 扎西多杰) and no family name.
Each part has several Chinese transliterations in use (次仁 / 才仁 / 泽仁 / 才让 for
Tsering), and the same person's name can be written differently at two institutions —
that is the "transliteration variant" error of the error model.  The small pool of parts
gives many namesakes, as in the reference prefecture.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from pypinyin import lazy_pinyin

# each group: spellings of one Tibetan name part, the most common first
NEUTRAL = (
    ("次仁", "才仁", "泽仁", "才让"), ("扎西", "扎喜", "扎什"), ("尼玛", "尼马"), ("达娃", "达哇"),
    ("索南", "索朗"), ("旦增", "丹增", "旦真"), ("尕玛", "嘎玛", "噶玛"), ("昂文", "昂旺", "阿旺"),
    ("格桑", "格松"), ("白玛", "白马", "贝玛"), ("更尕", "更嘎"), ("久美", "久麦", "晋美"),
    ("仁青", "仁钦"), ("巴桑", "巴松"), ("公保", "贡保", "贡布"), ("桑周", "桑珠"), ("东周", "东珠"),
    ("群培", "群佩"), ("江永",), ("洛桑", "罗桑"),
)
MALE = (("多杰", "多吉", "朵杰"), ("达杰", "达吉"), ("才旦", "才丹"), ("加措", "嘉措", "加错"),
        ("尖措", "坚措"), ("闹布", "诺布"), ("文德",), ("松保", "松宝"))
FEMALE = (("卓玛", "卓嘛"), ("拉毛", "拉姆", "拉母"), ("求措", "曲措", "秋措"), ("文措", "文错"),
          ("央金", "央吉"), ("卓嘎",), ("措毛", "错毛"), ("德吉",))
HAN_FAMILY = ("王", "李", "张", "刘", "陈", "杨", "赵", "马", "韩", "周", "吴", "徐", "孙", "何", "罗")
HAN_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国红梅文斌海燕"
TIBETAN_SHARE = 0.92  # the reference prefecture is over 90% Tibetan


@dataclass(frozen=True)
class Name:
    """A person's true name: Tibetan parts as (group table, group index, spelling index)."""

    tibetan: bool
    parts: tuple[tuple[str, int, int], ...] = ()
    family: str = ""
    given: str = ""

    def spell(self, variant_part: int | None = None, rng: random.Random | None = None) -> tuple[str, str]:
        """(family, given) as written; ``variant_part`` writes that part in another spelling."""
        if not self.tibetan:
            return self.family, self.given
        out = []
        for k, (table, g, s) in enumerate(self.parts):
            group = _TABLES[table][g]
            if k == variant_part and len(group) > 1 and rng is not None:
                s = rng.choice([i for i in range(len(group)) if i != s])
            out.append(group[s])
        return "", "".join(out)

    def has_variants(self) -> bool:
        return self.tibetan and any(len(_TABLES[t][g]) > 1 for t, g, _ in self.parts)

    def variant_parts(self) -> list[int]:
        return [k for k, (t, g, _) in enumerate(self.parts) if len(_TABLES[t][g]) > 1]


_TABLES = {"n": NEUTRAL, "m": MALE, "f": FEMALE}


def _spelling(rng: random.Random, group: tuple[str, ...]) -> int:
    # the first spelling is the most common; later ones rarer
    return rng.choices(range(len(group)), [4, 2, 1, 1][: len(group)])[0]


def person_name(rng: random.Random, sex: str) -> Name:
    if rng.random() >= TIBETAN_SHARE:
        given = "".join(rng.choice(HAN_GIVEN) for _ in range(rng.choice((1, 2, 2))))
        return Name(False, family=rng.choice(HAN_FAMILY), given=given)
    second = "m" if sex == "male" else "f"
    g1 = rng.randrange(len(NEUTRAL))
    parts = [("n", g1, _spelling(rng, NEUTRAL[g1]))]
    if rng.random() < 0.9:  # most have two parts; some only one
        table = second if rng.random() < 0.7 else "n"
        g2 = rng.randrange(len(_TABLES[table]))
        if (table, g2) != ("n", g1):
            parts.append((table, g2, _spelling(rng, _TABLES[table][g2])))
    return Name(True, tuple(parts))


def practitioner_name(rng: random.Random) -> tuple[str, str, str]:
    sex = rng.choice(("male", "female"))
    family, given = person_name(rng, sex).spell()
    return family, given, sex


@lru_cache(maxsize=4096)
def pinyin(text: str) -> str:
    """才仁卓玛 -> 'Cairenzhuoma'; written as one word, as on Tibetan residents' cards."""
    return "".join(lazy_pinyin(text)).replace("ü", "v").capitalize()


def human_names(family: str, given: str) -> list[dict]:
    """The Chinese name and its pinyin form (a second HumanName, use "usual")."""
    zh: dict = {"use": "official", "text": family + given, "given": [given]}
    py: dict = {"use": "usual", "text": (pinyin(family) + " " + pinyin(given)).strip(), "given": [pinyin(given)]}
    if family:
        zh["family"] = family
        py["family"] = pinyin(family)
    return [zh, py]
