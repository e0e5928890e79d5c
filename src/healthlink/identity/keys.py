"""Blocking keys of the real-time candidate index (table ``person_block``).

The same four rules as the batch linker's Splink blocking (``empi.REGION.blocking_rules``),
written as keys: a new record's candidates are the records sharing at least one key.  A
mistyped resident ID still finds its person through the name, birth month and phone keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAXLEN = 160  # person_block.key


def block_keys(r: Mapping[str, Any]) -> list[str]:
    keys: list[str] = []
    rid, name, born, phone = r.get("resident_id"), r.get("name_key"), r.get("birth_date"), r.get("phone")
    if rid:
        keys.append(f"id:{rid}")
    if name and born:
        keys.append(f"nb:{name}|{born[:7]}")
    if name and phone:
        keys.append(f"np:{name}|{phone}")
    if born and phone:
        keys.append(f"bp:{born}|{phone}")
    return [k[:MAXLEN] for k in keys]
