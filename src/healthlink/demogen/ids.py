"""18-digit resident identity numbers (GB 11643-1999): 6-digit division code (GB/T 2260;
6327xx for Yushu), birth date YYYYMMDD, 3-digit sequence (odd for men, even for women) and
an ISO 7064 MOD 11-2 check character ('X' for 10).  MOD 11-2 detects every single-digit
substitution and every transposition of two adjacent different digits, which is why the
error model's ID typos always leave an invalid check character."""

from __future__ import annotations

from datetime import date

WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))  # 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2


def check_char(first17: str) -> str:
    s = sum(int(c) * w for c, w in zip(first17, WEIGHTS, strict=True))
    v = (12 - s % 11) % 11
    return "X" if v == 10 else str(v)


def is_valid(rid: str) -> bool:
    return (len(rid) == 18 and rid[:17].isdigit() and rid[17] in "0123456789X"
            and check_char(rid[:17]) == rid[17])


def resident_id(division: str, birth: date, seq: int) -> str:
    body = f"{division}{birth:%Y%m%d}{seq:03d}"
    return body + check_char(body)
