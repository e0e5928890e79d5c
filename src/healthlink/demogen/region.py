"""The prefecture: institutions in a referral hierarchy, departments, practitioners.

Modelled on Yushu Tibetan Autonomous Prefecture (Qinghai): 3 prefecture-level hospitals,
11 county hospitals (general and Tibetan medicine) across the 6 county-level divisions,
50 township health centres.  Referral runs township -> its county's general hospital (or
the county's only hospital) -> 玉树州人民医院; each county's hospitals and townships form
one county medical consortium (医共体), led by the county's first hospital.  Township
names are those of the real townships where we know them; ids of the small seeder in
:mod:`healthlink.demo` (``yushu-peoples``, ``chenduo-county``, ``zhenqin-township`` …)
are kept so its demo logins see this region's patients.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from pypinyin import lazy_pinyin

from healthlink.demo import organization

ORG_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
CONSORTIUM = "https://healthlink.example.org/fhir/CodeSystem/county-medical-consortium"
ROLE = "https://healthlink.example.org/fhir/CodeSystem/role"


@dataclass(frozen=True)
class County:
    code: str  # id stem
    name: str
    division: str  # GB/T 2260 code of the county-level division (6327xx)
    townships: tuple[str, ...]

    @property
    def english(self) -> str:
        stem = self.name.removesuffix("市").removesuffix("县")
        return "".join(lazy_pinyin(stem)).title() + (" City" if self.name.endswith("市") else " County")


COUNTIES = (
    County("yushu-city", "玉树市", "632701",
           ("结古街道", "西杭街道", "扎西科街道", "新寨街道", "隆宝镇", "下拉秀镇", "仲达镇", "巴塘乡",
            "小苏莽乡", "上拉秀乡", "哈秀乡", "安冲乡")),
    County("zaduo", "杂多县", "632722", ("萨呼腾镇", "昂赛乡", "结多乡", "阿多乡", "苏鲁乡", "查旦乡",
                                         "莫云乡", "扎青乡")),
    County("chenduo", "称多县", "632723", ("称文镇", "歇武镇", "扎朵镇", "清水河镇", "珍秦镇", "尕朵乡",
                                           "拉布乡")),
    County("zhiduo", "治多县", "632724", ("加吉博洛镇", "索加乡", "扎河乡", "多彩乡", "治渠乡", "立新乡")),
    County("nangqian", "囊谦县", "632725", ("香达镇", "白扎乡", "吉曲乡", "娘拉乡", "毛庄乡", "觉拉乡",
                                            "东坝乡", "尕羊乡", "吉尼赛乡", "着晓乡")),
    County("qumalai", "曲麻莱县", "632726", ("约改镇", "巴干乡", "秋智乡", "叶格乡", "麻多乡", "曲麻河乡",
                                             "多秀乡")),
)

PREFECTURE = (  # id, name
    ("yushu-peoples", "玉树州人民医院 Yushu Prefecture People's Hospital"),
    ("yushu-tibetan", "玉树州藏医院 Yushu Prefecture Tibetan Medicine Hospital"),
    ("yushu-maternal", "玉树州妇幼保健院 Yushu Prefecture Maternal and Child Health Hospital"),
)
HOSPITAL_DEPTS = (("internal", "内科 Internal medicine"), ("surgery", "外科 Surgery"),
                  ("obstetrics", "妇产科 Obstetrics and gynaecology"), ("paediatrics", "儿科 Paediatrics"),
                  ("lab", "检验科 Laboratory"), ("imaging", "影像科 Imaging"), ("pharmacy", "药剂科 Pharmacy"))
TIBETAN_DEPTS = (("internal", "内科 Internal medicine"), ("tibetan", "藏医科 Tibetan medicine"),
                 ("lab", "检验科 Laboratory"), ("imaging", "影像科 Imaging"), ("pharmacy", "藏药房 Pharmacy"))
TOWNSHIP_DEPTS = (("general", "全科 General practice"), ("pharmacy", "药房 Pharmacy"))
STAFF = {"prefecture": 24, "county": 10, "township": 3}
ROLES = (("doctor", 0.5), ("nurse", 0.3), ("pharmacist", 0.1), ("lab_technician", 0.1))


@dataclass(frozen=True)
class Institution:
    id: str
    name: str
    tier: str  # prefecture | county | township
    parent: str | None  # referral parent
    county: County | None
    consortium: str | None  # id of the county medical consortium (its lead hospital's county)
    departments: tuple[tuple[str, str], ...]


def _slug(name: str) -> str:
    stem = name.removesuffix("街道").removesuffix("镇").removesuffix("乡")
    return "".join(lazy_pinyin(stem)).replace("ü", "v")


def _township_english(name: str) -> str:
    """珍秦镇 -> Zhenqin Town Health Centre (the English half of the displayed name)."""
    place = "".join(lazy_pinyin(name.removesuffix("街道").removesuffix("镇").removesuffix("乡"))).title()
    if name.endswith("街道"):
        return f"{place} Subdistrict Community Health Service Centre"
    return f"{place} {'Town' if name.endswith('镇') else 'Township'} Health Centre"


@cache
def institutions() -> tuple[Institution, ...]:
    out = [Institution(pid, name, "prefecture", None, None, None,
                       TIBETAN_DEPTS if "tibetan" in pid else HOSPITAL_DEPTS) for pid, name in PREFECTURE]
    for c in COUNTIES:
        cons = f"{c.code}-consortium"
        general = None
        if c.code != "yushu-city":  # the city is served by the prefecture hospitals
            general = "chenduo-county" if c.code == "chenduo" else f"{c.code}-county"
            out.append(Institution(general, f"{c.name}人民医院 {c.english} People's Hospital", "county",
                                   "yushu-peoples", c, cons, HOSPITAL_DEPTS))
        tib_parent = "yushu-tibetan"
        out.append(Institution(f"{c.code}-tibetan", f"{c.name}藏医院 {c.english} Tibetan Medicine Hospital", "county",
                               tib_parent, c, cons, TIBETAN_DEPTS))
        head = general or f"{c.code}-tibetan"
        for tname in c.townships:
            tid = f"{_slug(tname)}-township"
            kind = "社区卫生服务中心" if tname.endswith("街道") else "卫生院"
            out.append(Institution(tid, f"{tname}{kind} {_township_english(tname)}", "township", head, c, cons,
                                   TOWNSHIP_DEPTS))
    return tuple(out)


def by_id() -> dict[str, Institution]:
    return {i.id: i for i in institutions()}


def _org(inst: Institution) -> dict:
    org = organization(inst.id, inst.name, inst.tier, inst.parent)
    if inst.county:
        org["address"][0]["district"] = inst.county.name
        org["address"][0]["postalCode"] = "815000"
    if inst.consortium:
        org["type"].append({"coding": [{"system": CONSORTIUM, "code": inst.consortium,
                                        "display": f"{inst.county.name}医共体"}]})  # type: ignore[union-attr]
    return org


def region_resources(seed: int) -> Iterator[tuple[str | None, dict]]:
    """Organizations (shared directory, institution ``None``), then each institution's
    Practitioners and PractitionerRoles."""
    from healthlink.demogen.names import human_names, practitioner_name

    for inst in institutions():
        yield None, _org(inst)
        for dep, dname in inst.departments:
            did = f"{inst.id}-{dep}"
            yield None, {"resourceType": "Organization", "id": did, "active": True, "name": dname,
                         "type": [{"coding": [{"system": ORG_TYPE, "code": "dept", "display": "Hospital Department"}]}],
                         "partOf": {"reference": f"Organization/{inst.id}"}}
    for inst in institutions():
        rng = random.Random(f"{seed}:staff:{inst.id}")
        for n in range(STAFF[inst.tier]):
            pid = f"{inst.id}-pr{n:03d}"
            family, given, sex = practitioner_name(rng)
            role = rng.choices([r for r, _ in ROLES], [w for _, w in ROLES])[0]
            dep = rng.choice(inst.departments)[0]
            yield inst.id, {"resourceType": "Practitioner", "id": pid, "active": True,
                            "name": human_names(family, given),
                            "gender": sex}
            yield inst.id, {"resourceType": "PractitionerRole", "id": f"{pid}-role", "active": True,
                            "practitioner": {"reference": f"Practitioner/{pid}"},
                            "organization": {"reference": f"Organization/{inst.id}-{dep}"},
                            "code": [{"coding": [{"system": ROLE, "code": role}]}]}
