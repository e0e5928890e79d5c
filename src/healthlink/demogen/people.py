"""Persons of the region and their Patient records at several institutions.

A person is drawn from their own random stream (``seed:person:<key>``), so any person
can be regenerated alone and the output does not depend on how many came before.  Each
person registers at 1-6 institutions (mean 3: the weights below), mostly their home
township, their county's hospitals and the prefecture hospitals, under each
institution's own record number; every record then passes through the error model.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from healthlink.demogen import errormodel as em
from healthlink.demogen.ids import resident_id
from healthlink.demogen.names import Name, human_names, person_name
from healthlink.demogen.region import COUNTIES, County, institutions
from healthlink.fhir.identifiers import RESIDENT_ID_SYSTEM

REFERENCE_DATE = date(2026, 1, 1)  # ages and visit dates count back from here, never from the clock
RECORDS_PER_PERSON = {1: 0.20, 2: 0.25, 3: 0.20, 4: 0.15, 5: 0.10, 6: 0.10}  # mean 3.0
RESIDENT_ID = RESIDENT_ID_SYSTEM  # checked by the bulk ingest's resident-ID rule
MRN = "https://healthlink.example.org/fhir/sid/mrn/"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
PHONE_PREFIXES = ("1389976", "1399736", "1580976", "1599760", "1820976", "1899761", "1354976", "1520976")
VILLAGES = ("扎西", "多拉", "加吉", "拉则", "当卡", "日麻", "红旗", "团结", "江西", "尕拉", "改青", "帮布")


@dataclass(frozen=True)
class Person:
    key: str
    sex: str
    birth: date
    name: Name
    resident_id: str
    phone: str
    county: County
    township: str
    village: str


@dataclass(frozen=True)
class PatientRecord:
    patient_id: str
    institution: str
    person: Person
    errors: tuple[str, ...]
    resource: dict


def _phone(rng: random.Random) -> str:
    return rng.choice(PHONE_PREFIXES) + f"{rng.randrange(10000):04d}"


def make_person(seed: int, index: int) -> Person:
    rng = random.Random(f"{seed}:person:{index}")
    sex = rng.choice(("male", "female"))
    age_days = int(rng.triangular(0, 90, 28) * 365.25)
    birth = REFERENCE_DATE - timedelta(days=age_days + 1)
    county = rng.choices(COUNTIES, (40, 8, 8, 5, 13, 5))[0]  # roughly the population shares
    seq = rng.randrange(500) * 2 + (1 if sex == "male" else 0)
    return Person(key=f"P{index:07d}", sex=sex, birth=birth, name=person_name(rng, sex),
                  resident_id=resident_id(county.division, birth, seq), phone=_phone(rng), county=county,
                  township=rng.choice(county.townships), village=rng.choice(VILLAGES) + "村")


def _home_institutions(p: Person) -> tuple[list[str], list[float]]:
    ids, weights = [], []
    for inst in institutions():
        w = 0.0
        if inst.tier == "prefecture":
            w = {"yushu-peoples": 2.0, "yushu-tibetan": 1.5}.get(inst.id, 1.5 if p.sex == "female" else 0.3)
        elif inst.county is p.county:
            if inst.tier == "county":
                w = 2.0
            elif inst.name.startswith(p.township):
                w = 3.0
            else:
                w = 0.15
        if w:
            ids.append(inst.id)
            weights.append(w)
    return ids, weights


def _pick(rng: random.Random, ids: list[str], weights: list[float], k: int) -> list[str]:
    ids, weights, out = list(ids), list(weights), []
    for _ in range(min(k, len(ids))):  # weighted sampling without replacement
        i = rng.choices(range(len(ids)), weights)[0]
        out.append(ids.pop(i))
        weights.pop(i)
    return out


def records_of(seed: int, person: Person, rates: em.ErrorRates, *, first_record: int,
               limit: int) -> Iterator[PatientRecord]:
    """The person's Patient records (at most ``limit``), numbered from ``first_record``."""
    rng = random.Random(f"{seed}:records:{person.key}")
    k = rng.choices(list(RECORDS_PER_PERSON), list(RECORDS_PER_PERSON.values()))[0]
    ids, weights = _home_institutions(person)
    for n, inst in enumerate(_pick(rng, ids, weights, min(k, limit))):
        yield _record(rng, person, inst, first_record + n, rates)


def _record(rng: random.Random, p: Person, inst: str, number: int, rates: em.ErrorRates) -> PatientRecord:
    errors: list[str] = []
    rid: str | None = p.resident_id
    u = rng.random()
    if u < rates.id_missing:
        rid, errors = None, [em.ID_MISSING]
    elif u < rates.id_missing + rates.id_typo:
        rid = em.mistype_digit(rid, rng)
        errors.append(em.ID_TYPO)
    elif u < rates.id_missing + rates.id_typo + rates.id_transposition:
        swapped = em.transpose_digits(rid, rng)
        if swapped:
            rid = swapped
            errors.append(em.ID_TRANSPOSITION)
    variant = None
    if rng.random() < rates.name_variant and p.name.has_variants():
        variant = rng.choice(p.name.variant_parts())
        errors.append(em.NAME_VARIANT)
    family, given = p.name.spell(variant, rng)
    phone = p.phone
    if rng.random() < rates.phone_changed:
        while phone == p.phone:
            phone = _phone(rng)
        errors.append(em.PHONE_CHANGED)
    birth = p.birth
    if rng.random() < rates.birth_day_wrong:
        birth = em.shift_birth(birth, rng)
        errors.append(em.BIRTH_DAY_WRONG)
    county, township = p.county, p.township
    if rng.random() < rates.address_moved:
        county = rng.choice(COUNTIES)
        township = rng.choice([t for t in county.townships if t != p.township])
        errors.append(em.ADDRESS_MOVED)
    pid = f"{inst}-{number:07d}"
    mrn = f"{number % 10_000_000:07d}"
    ident = [{"use": "usual", "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
              "system": MRN + inst, "value": mrn}]
    if rid:
        ident.append({"use": "official", "type": {"coding": [{"system": V2_0203, "code": "NI"}]},
                      "system": RESIDENT_ID, "value": rid})
    res = {"resourceType": "Patient", "id": pid, "identifier": ident, "active": True,
           "name": human_names(family, given),
           "telecom": [{"system": "phone", "value": phone, "use": "mobile"}],
           "gender": p.sex, "birthDate": birth.isoformat(),
           "address": [{"use": "home", "line": [p.village if township == p.township else "牧委会"],
                        "city": "玉树藏族自治州", "district": county.name, "state": "青海省",
                        "country": "CN", "text": f"青海省玉树藏族自治州{county.name}{township}"}],
           "managingOrganization": {"reference": f"Organization/{inst}"}}
    return PatientRecord(pid, inst, p, tuple(errors), res)
