"""String similarities in pure Python, equal to DuckDB's functions of the same name.

The batch link computes comparison levels in DuckDB SQL; the real-time scorer computes the
same levels in Python.  These two functions reproduce DuckDB's ``jaro_winkler_similarity``
(prefix boost only above Jaro 0.7, prefix of at most 4, scale 0.1) and
``damerau_levenshtein`` (unrestricted, Lowrance-Wagner) exactly; tests/test_empi.py checks
them against DuckDB on random strings.
"""

from __future__ import annotations


def jaro(s1: str, s2: str) -> float:
    if s1 == s2:
        return 1.0 if s1 else 0.0  # DuckDB: two empty strings are 0, not 1
    l1, l2 = len(s1), len(s2)
    if not l1 or not l2:
        return 0.0
    window = max(max(l1, l2) // 2 - 1, 0)
    used1, used2 = [False] * l1, [False] * l2
    matches = 0
    for i, c in enumerate(s1):
        for j in range(max(0, i - window), min(l2, i + window + 1)):
            if not used2[j] and s2[j] == c:
                used1[i] = used2[j] = True
                matches += 1
                break
    if not matches:
        return 0.0
    half_transpositions, k = 0, 0
    for i in range(l1):
        if used1[i]:
            while not used2[k]:
                k += 1
            if s1[i] != s2[k]:
                half_transpositions += 1
            k += 1
    m = matches
    return (m / l1 + m / l2 + (m - half_transpositions // 2) / m) / 3


def jaro_winkler(s1: str, s2: str) -> float:
    j = jaro(s1, s2)
    if j > 0.7:
        prefix = 0
        for a, b in zip(s1[:4], s2[:4]):
            if a != b:
                break
            prefix += 1
        j += prefix * 0.1 * (1 - j)
    return j


def damerau_levenshtein(a: str, b: str) -> int:
    """Unrestricted Damerau-Levenshtein distance (transpositions may be edited again)."""
    la, lb = len(a), len(b)
    inf = la + lb
    d = [[0] * (lb + 2) for _ in range(la + 2)]
    d[0][0] = inf
    for i in range(la + 1):
        d[i + 1][0], d[i + 1][1] = inf, i
    for j in range(lb + 1):
        d[0][j + 1], d[1][j + 1] = inf, j
    last_row: dict[str, int] = {}
    for i in range(1, la + 1):
        last_col = 0
        for j in range(1, lb + 1):
            i1, j1 = last_row.get(b[j - 1], 0), last_col
            cost = 1
            if a[i - 1] == b[j - 1]:
                cost, last_col = 0, j
            d[i + 1][j + 1] = min(d[i][j] + cost, d[i + 1][j] + 1, d[i][j + 1] + 1,
                                  d[i1][j1] + (i - i1 - 1) + 1 + (j - j1 - 1))
        last_row[a[i - 1]] = i
    return d[la + 1][lb + 1]
