"""Merkle tree hashing and proofs exactly as RFC 9162 §2.1 defines them (same math as RFC 6962 §2.1).

Pure functions over SHA-256 (stdlib ``hashlib``); no storage, no I/O.  The ledger's store
persists what :meth:`Frontier.append` emits and answers ``perfect(level, index)``; the proof
functions here turn that into RFC 9162 proofs.

- §2.1.1 Merkle Tree Hash: ``leaf_hash`` (0x00 prefix), ``node_hash`` (0x01 prefix),
  ``EMPTY_ROOT`` = MTH({}) = SHA-256(""), ``root``; the split point is the largest power of
  two *strictly smaller* than n, never the midpoint.
- §2.1.2 verifying a tree head from all entries: the stack algorithm behind ``root`` and
  :class:`Frontier`.
- §2.1.3.1 / §2.1.3.2 inclusion proofs: ``inclusion_path``, ``inclusion_proof``,
  ``verify_inclusion``.
- §2.1.4.1 / §2.1.4.2 consistency proofs (SUBPROOF): ``consistency_path``,
  ``consistency_proof``, ``verify_consistency``.

Subtree addressing: ``perfect(level, index)`` is the MTH of the 2**level leaves starting at
leaf ``index * 2**level`` (level 0 is the leaf hash) — the same (level, index) scheme as the
C2SP tlog-tiles hashes.  A "range" is a half-open leaf interval ``(start, end)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "Perfect",
    "consistency_path",
    "consistency_proof",
    "inclusion_path",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "proof_size_bytes",
    "range_root",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
_sha256 = hashlib.sha256
EMPTY_ROOT: bytes = _sha256(b"").digest()  # §2.1.1: MTH({}) = HASH()

Perfect = Callable[[int, int], bytes]
"""``perfect(level, index)`` -> hash of the perfect subtree of leaves [index*2**level, (index+1)*2**level)."""


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d) (§2.1.1); the prefix separates leaves from nodes."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right) (§2.1.1)."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """k, the largest power of two strictly smaller than n (n >= 2), §2.1.1."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) from the leaf hashes, with the stack algorithm of §2.1.2 (O(n), O(log n) memory)."""
    stack: list[bytes] = []
    for i, h in enumerate(leaf_hashes):
        # Leaf i completes one perfect subtree per trailing 1-bit of i.
        merges = (i ^ (i + 1)).bit_length() - 1
        for _ in range(merges):
            h = node_hash(stack.pop(), h)
        stack.append(h)
    return _fold(stack)


def _fold(stack: Sequence[bytes]) -> bytes:
    """Fold the perfect subtrees of a compact range right-to-left, as MTH nests them."""
    if not stack:
        return EMPTY_ROOT
    h = stack[-1]
    for left in reversed(stack[:-1]):
        h = node_hash(left, h)
    return h


class Frontier:
    """The compact range [0, size): one perfect subtree per set bit of ``size``, largest first.

    What a sequencer keeps between batches: appending costs one leaf-level push plus, amortised,
    one node hash; ``root()`` costs at most log2(size) hashes.  ``append`` returns the perfect
    subtrees (level >= 1) the new leaf completed, so the store can answer ``perfect()`` for
    every complete subtree without rehashing.
    """

    __slots__ = ("_hashes", "size")

    def __init__(self) -> None:
        self.size = 0
        # The right border, largest subtree first: entry j is at the level of the j-th set bit of size.
        self._hashes: list[bytes] = []

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; return the completed subtrees as (level, index, hash), lowest first."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes, got {len(leaf_hash)}")
        i = self.size
        hashes = self._hashes
        h = leaf_hash
        completed: list[tuple[int, int, bytes]] = []
        level = 0
        while i & 1:  # each trailing 1-bit of the old size is a sibling waiting on the left
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            level += 1
            i >>= 1
            completed.append((level, i, h))
        hashes.append(h)
        self.size += 1
        return completed

    def extend(self, leaf_hashes: Sequence[bytes]) -> list[tuple[int, int, bytes]]:
        """Append many leaves; return every subtree they completed, in order."""
        out: list[tuple[int, int, bytes]] = []
        for h in leaf_hashes:
            out += self.append(h)
        return out

    def root(self) -> bytes:
        """MTH(D[size])."""
        return _fold(self._hashes)

    def subtrees(self) -> list[tuple[int, int, bytes]]:
        """The compact range as (level, index, hash), largest first."""
        out = []
        start = 0
        for h, level in zip(self._hashes, _set_bits_desc(self.size), strict=True):
            out.append((level, start >> level, h))
            start += 1 << level
        return out

    @classmethod
    def from_perfect(cls, size: int, perfect: Perfect) -> Frontier:
        """Rebuild the frontier of a stored tree of ``size`` leaves from its perfect subtrees."""
        if size < 0:
            raise ValueError("size must be >= 0")
        f = cls()
        start = 0
        for level in _set_bits_desc(size):
            f._hashes.append(perfect(level, start >> level))
            start += 1 << level
        f.size = size
        return f

    def to_bytes(self) -> bytes:
        """Size as big-endian uint64, then the border hashes largest subtree first."""
        return self.size.to_bytes(8, "big") + b"".join(self._hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> Frontier:
        if len(data) < 8:
            raise ValueError("frontier too short")
        size = int.from_bytes(data[:8], "big")
        want = 8 + HASH_SIZE * size.bit_count()
        if len(data) != want:
            raise ValueError(f"frontier of size {size} must be {want} bytes, got {len(data)}")
        f = cls()
        f.size = size
        f._hashes = [bytes(data[o : o + HASH_SIZE]) for o in range(8, want, HASH_SIZE)]
        return f

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Frontier) and (self.size, self._hashes) == (other.size, other._hashes)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Frontier(size={self.size}, root={self.root().hex()})"


def _set_bits_desc(n: int) -> list[int]:
    return [b for b in range(n.bit_length() - 1, -1, -1) if n >> b & 1]


def range_root(start: int, end: int, perfect: Perfect) -> bytes:
    """MTH(D[start:end]) from perfect-subtree hashes.

    Splits exactly as MTH does (§2.1.1, largest power of two < n on the left) and stops at every
    aligned perfect subtree, so a range from ``inclusion_path``/``consistency_path`` costs
    at most log2(end - start) ``perfect`` look-ups and as many node hashes.
    """
    if not 0 <= start < end:
        raise ValueError(f"empty or negative range [{start}, {end})")
    n = end - start
    if n & (n - 1) == 0 and start % n == 0:
        level = n.bit_length() - 1
        return perfect(level, start >> level)
    k = _split(n)
    return node_hash(range_root(start, start + k, perfect), range_root(start + k, end, perfect))


def inclusion_path(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTHs form PATH(index, D[size]) (§2.1.3.1), in proof order (leaf upwards).

    Left siblings are aligned perfect subtrees; a right sibling may be the incomplete right edge.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} outside tree of size {size}")
    out = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:  # PATH(m, D[0:k]) : MTH(D[k:n])
            out.append((lo + k, hi))
            hi = lo + k
        else:  # PATH(m - k, D[k:n]) : MTH(D[0:k])
            out.append((lo, lo + k))
            lo += k
    out.reverse()
    return out


def consistency_path(old: int, new: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTHs form PROOF(old, D[new]) = SUBPROOF(old, D[new], true) (§2.1.4.1).

    Defined for 0 < old <= new (empty when equal).  From size 0 there is nothing to prove and the
    RFC's verifier is undefined, so it is refused (tlog-witness sends an empty proof then and
    does not verify it).
    """
    if not 0 < old <= new:
        raise ValueError(f"no consistency proof from size {old} to size {new}")
    out = []
    lo, hi = 0, new
    whole = True  # the b flag of SUBPROOF: still on the path of the old tree's own root
    while old - lo != hi - lo:
        n = hi - lo
        k = _split(n)
        if old - lo <= k:  # SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            out.append((lo + k, hi))
            hi = lo + k
        else:  # SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            out.append((lo, lo + k))
            lo += k
            whole = False
    if not whole:  # SUBPROOF(m, D[m], false) = {MTH(D[m])}
        out.append((lo, hi))
    out.reverse()
    return out


def inclusion_proof(index: int, size: int, perfect: Perfect) -> list[bytes]:
    """The RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
    return [range_root(s, e, perfect) for s, e in inclusion_path(index, size)]


def consistency_proof(old: int, new: int, perfect: Perfect) -> list[bytes]:
    """The RFC 9162 consistency proof from tree size ``old`` to ``new``."""
    return [range_root(s, e, perfect) for s, e in consistency_path(old, new)]


def _is_size(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _is_hash(x: object) -> bool:
    return isinstance(x, bytes | bytearray | memoryview) and len(x) == HASH_SIZE


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """§2.1.3.2: is ``leaf_hash`` leaf ``index`` of the tree of ``size`` leaves with ``root``?

    Returns False, never raises, on malformed input.  Note the proof binds the leaf to the root;
    it is the signed checkpoint that binds the root to its size.
    """
    try:
        if not (_is_size(index) and _is_size(size) and index < size and _is_hash(leaf_hash)):
            return False
        if not all(_is_hash(p) for p in proof):
            return False
        fn, sn = index, size - 1
        r = bytes(leaf_hash)
        for p in proof:
            if sn == 0:
                return False
            if fn & 1 or fn == sn:
                r = node_hash(bytes(p), r)
                if not fn & 1:  # step 4.b.ii: skip levels where the node has no right sibling
                    while fn and not fn & 1:
                        fn >>= 1
                        sn >>= 1
            else:
                r = node_hash(r, bytes(p))
            fn >>= 1
            sn >>= 1
        return sn == 0 and r == root
    except (TypeError, ValueError):
        return False


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """§2.1.4.2: is the tree (new_size, new_root) an append-only extension of (old_size, old_root)?

    Equal sizes are consistent iff the proof is empty and the roots are equal (and, at size 0,
    the root is MTH({})).  From size 0 to a larger size there is nothing to verify and the RFC's
    algorithm is undefined: False.  Returns False, never raises, on malformed input.
    """
    try:
        if not (_is_size(old_size) and _is_size(new_size)) or old_size > new_size:
            return False
        if old_size == new_size:
            return len(proof) == 0 and old_root == new_root and (old_size > 0 or old_root == EMPTY_ROOT)
        if old_size == 0 or len(proof) == 0 or not all(_is_hash(p) for p in proof):
            return False
        path = [bytes(p) for p in proof]
        if old_size & (old_size - 1) == 0:  # step 2: the old root is itself a node of the new tree
            path.insert(0, bytes(old_root))
        fn, sn = old_size - 1, new_size - 1
        while fn & 1:  # step 4
            fn >>= 1
            sn >>= 1
        fr = sr = path[0]
        for c in path[1:]:
            if sn == 0:
                return False
            if fn & 1 or fn == sn:
                fr = node_hash(c, fr)
                sr = node_hash(c, sr)
                if not fn & 1:
                    while fn and not fn & 1:
                        fn >>= 1
                        sn >>= 1
            else:
                sr = node_hash(sr, c)
            fn >>= 1
            sn >>= 1
        return fr == old_root and sr == new_root and sn == 0
    except (TypeError, ValueError):
        return False


def proof_size_bytes(size: int) -> int:
    """Bytes in the largest inclusion proof at this tree size: 32 * ceil(log2 size) (§2.1.3.1)."""
    if size < 0:
        raise ValueError("size must be >= 0")
    return HASH_SIZE * (size - 1).bit_length() if size > 1 else 0
