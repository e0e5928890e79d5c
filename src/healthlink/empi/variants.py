"""Transliteration variants of Tibetan name parts written in Chinese characters.

A Tibetan name is transliterated into characters by ear, so one name part has several
spellings in use: Tsering is 次仁, 才仁, 泽仁 or 才让; Tashi 扎西, 扎喜 or 扎什.  They sound
alike to a registration clerk but their pinyin differs (ci-ren / cai-ren / ze-ren), so
neither exact characters nor pinyin make them agree.  Each group below is one name part;
every spelling maps to the group's first spelling, which is the key the matcher compares.

The groups cover every variant the demo generator writes (``healthlink.demogen.names``,
checked by tests/test_empi.py) plus common spellings seen in Qinghai and Tibet
registries.  Adding a spelling to a group is a data change: retrain is not needed, but
re-run the batch link so existing records get the new key.
"""

from __future__ import annotations

GROUPS: tuple[tuple[str, ...], ...] = (
    # parts used by men and women
    ("次仁", "才仁", "泽仁", "才让", "策仁"),
    ("扎西", "扎喜", "扎什", "札西", "扎希"),
    ("尼玛", "尼马", "尼麻"),
    ("达娃", "达哇", "达瓦"),
    ("索南", "索朗", "锁南"),
    ("旦增", "丹增", "旦真", "丹珍"),
    ("尕玛", "嘎玛", "噶玛", "尕马", "嘎马"),
    ("昂文", "昂旺", "阿旺", "昂望"),
    ("格桑", "格松"),
    ("白玛", "白马", "贝玛", "白麻"),
    ("更尕", "更嘎", "更噶"),
    ("久美", "久麦", "晋美", "久迈"),
    ("仁青", "仁钦", "仁庆"),
    ("巴桑", "巴松"),
    ("公保", "贡保", "贡布", "公布"),
    ("桑周", "桑珠", "桑州"),
    ("东周", "东珠", "顿珠"),
    ("群培", "群佩", "群沛"),
    ("江永", "江勇"),
    ("洛桑", "罗桑", "洛松"),
    # parts mostly in men's names
    ("多杰", "多吉", "朵杰", "多介"),
    ("达杰", "达吉"),
    ("才旦", "才丹", "次旦", "次丹"),
    ("加措", "嘉措", "加错", "嘉错"),
    ("尖措", "坚措", "尖错", "坚错"),
    ("闹布", "诺布", "罗布"),
    ("文德", "旺德"),
    ("松保", "松宝"),
    # parts mostly in women's names
    ("卓玛", "卓嘛", "卓马", "桌玛"),
    ("拉毛", "拉姆", "拉母", "拉木", "拉茂"),
    ("求措", "曲措", "秋措", "求错", "曲错"),
    ("文措", "文错"),
    ("央金", "央吉", "扬金"),
    ("卓嘎", "卓尕"),
    ("措毛", "错毛", "措姆"),
    ("德吉", "德几"),
)


def canonical_parts() -> dict[str, str]:
    """Every spelling -> its group's first spelling."""
    out: dict[str, str] = {}
    for group in GROUPS:
        for spelling in group:
            if out.setdefault(spelling, group[0]) != group[0]:
                raise ValueError(f"{spelling} is in two variant groups")
    return out
