"""Resident identity numbers as the matcher compares them.

The check character (GB 11643-1999, ISO 7064 MOD 11-2) is computed by
``healthlink.fhir.identifiers``, the one place the platform defines it.  MOD 11-2 catches
every single mistyped digit and every swap of two adjacent different digits, so an
invalid ID is usually one such slip away from the person's real ID: ``one_typo_apart``
recognises exactly those two slips, which is what the ID comparison's middle level means.
"""

from __future__ import annotations

from healthlink.fhir.identifiers import resident_id_valid

__all__ = ["normalise_resident_id", "one_typo_apart", "resident_id_valid"]


def normalise_resident_id(value: str | None) -> str | None:
    """Upper-case, no spaces; ``None`` for empty (a lower-case x check character is common)."""
    if not value:
        return None
    v = "".join(value.split()).upper()
    return v or None


def one_typo_apart(a: str, b: str) -> bool:
    """True when ``b`` is ``a`` with one character substituted or two adjacent ones swapped.

    For strings of equal length this is Damerau-Levenshtein distance 1, the SQL the batch
    comparison uses (``damerau_levenshtein(l, r) <= 1`` with equal lengths)."""
    if len(a) != len(b) or a == b:
        return False
    diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    if len(diff) == 1:
        return True
    i = diff[0]
    return len(diff) == 2 and diff[1] == i + 1 and a[i] == b[i + 1] and a[i + 1] == b[i]
