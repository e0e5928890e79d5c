"""The error model: how one person's records differ between institutions.

Each Patient record gets each error independently with the rate below (a rate of 0 turns
an error off).  The rates are per record; ``name_variant`` only applies to names that have
another spelling (almost every Tibetan name), ``id_*`` only to records that carry an ID.
Defaults are plausible for manual registration at township and county level; they are
not measured from the reference prefecture.  docs/demo-region.md lists them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from datetime import timedelta

ID_MISSING = "id_missing"
ID_TYPO = "id_typo"
ID_TRANSPOSITION = "id_transposition"
NAME_VARIANT = "name_variant"
PHONE_CHANGED = "phone_changed"
BIRTH_DAY_WRONG = "birth_day_wrong"
ADDRESS_MOVED = "address_moved"


@dataclass(frozen=True)
class ErrorRates:
    id_missing: float = 0.06  # registered without the ID card (children, elderly herders)
    id_typo: float = 0.02  # one of the first 17 digits mistyped
    id_transposition: float = 0.01  # two adjacent different digits swapped
    name_variant: float = 0.15  # a name part written in another transliteration (次仁 -> 才仁)
    phone_changed: float = 0.10  # another phone number (new SIM, a relative's phone)
    birth_day_wrong: float = 0.03  # birth date off by 1-3 days
    address_moved: float = 0.05  # an address in another township

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"error rate {f.name} must be within 0..1, not {v}")
        if self.id_missing + self.id_typo + self.id_transposition > 1.0:
            raise ValueError("id_missing + id_typo + id_transposition must not exceed 1")

    @classmethod
    def none(cls) -> ErrorRates:
        return cls(**{f.name: 0.0 for f in fields(cls)})


def mistype_digit(rid: str, rng: random.Random) -> str:
    i = rng.randrange(17)
    d = rng.choice([c for c in "0123456789" if c != rid[i]])
    return rid[:i] + d + rid[i + 1:]


def transpose_digits(rid: str, rng: random.Random) -> str | None:
    """Swap two adjacent different digits among the first 17 (None if all are equal)."""
    spots = [i for i in range(16) if rid[i] != rid[i + 1]]
    if not spots:
        return None
    i = rng.choice(spots)
    return rid[:i] + rid[i + 1] + rid[i] + rid[i + 2:]


def shift_birth(birth, rng: random.Random):  # noqa: ANN001, ANN201 - date in, date out
    return birth + timedelta(days=rng.choice((-3, -2, -1, 1, 2, 3)))
