"""Identifier systems the platform checks, named once.

``RESIDENT_ID_SYSTEM`` is the OID of the PRC resident identity card number
(居民身份证号码) used by the national health information standards (WS 363 / WS/T 500
data element sets: ``2.16.156.10011.1.3``).  Its 18th character is the ISO 7064
MOD 11-2 check digit of GB 11643-1999.
"""

from __future__ import annotations

import re

RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_SHAPE = re.compile(r"^\d{17}[\dX]$")


def resident_id_check_digit(first17: str) -> str:
    """GB 11643-1999: sum of digit x weight, mod 11, mapped through 1 0 X 9 8 7 6 5 4 3 2."""
    return _CHECK[sum(int(d) * w for d, w in zip(first17, _WEIGHTS)) % 11]


def resident_id_valid(value: str) -> bool:
    v = value.strip().upper()
    return bool(_SHAPE.match(v)) and resident_id_check_digit(v[:17]) == v[17]
