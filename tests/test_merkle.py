"""The ledger's Merkle tree is RFC 9162 §2.1 exactly: the transparency-dev/merkle proof vectors
(shared/testdata/merkle-proof-vectors, Apache-2.0, read from the shared folder, see its
SOURCES.md) give their expected verdicts, the RFC's reference roots and worked example match,
and property tests show every proof we produce verifies while any tampering fails."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from conftest import TESTDATA
from hypothesis import given, settings
from hypothesis import strategies as st

from healthlink.ledger.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_path,
    consistency_proof,
    inclusion_path,
    inclusion_proof,
    leaf_hash,
    node_hash,
    proof_size_bytes,
    range_root,
    root,
    verify_consistency,
    verify_inclusion,
)

VECTORS = TESTDATA / "merkle-proof-vectors"

# RFC 6962 reference leaves and the roots of their prefixes (transparency-dev/merkle
# testonly/constants.go; the same in Trillian and certificate-transparency).
RFC_LEAVES = [
    bytes.fromhex(x)
    for x in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
]
RFC_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def vector_files(kind: str) -> list[Path]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    assert files, f"third-party test data missing: {VECTORS} (see its SOURCES.md)"
    return files


def b64(s: str) -> bytes:
    return base64.b64decode(s)


def vector_id(p: Path) -> str:
    return str(p.relative_to(VECTORS))


class Tree:
    """A log built the way the ledger builds it: leaves through a Frontier, emitted nodes stored."""

    def __init__(self, n: int, salt: bytes = b"", *, leaves: list[bytes] | None = None) -> None:
        self.leaves = leaves if leaves is not None else [leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]
        self.nodes: dict[tuple[int, int], bytes] = {}
        f = Frontier()
        self.roots = [f.root()]
        for i, h in enumerate(self.leaves):
            self.nodes[(0, i)] = h
            for level, index, node in f.append(h):
                self.nodes[(level, index)] = node
            self.roots.append(f.root())

    def perfect(self, level: int, index: int) -> bytes:
        return self.nodes[(level, index)]


def flip(proof: list[bytes], element: int, bit: int) -> list[bytes]:
    out = list(proof)
    e = bytearray(out[element])
    e[bit // 8] ^= 1 << (bit % 8)
    out[element] = bytes(e)
    return out


# --- the transparency-dev vectors -------------------------------------------------------


def test_vector_set_is_complete() -> None:
    assert len(vector_files("inclusion")) + len(vector_files("consistency")) == 196


@pytest.mark.parametrize("path", vector_files("inclusion"), ids=vector_id)
def test_inclusion_vector_gives_expected_verdict(path: Path) -> None:
    v = json.loads(path.read_text())
    proof = [b64(p) for p in v["proof"] or []]
    ok = verify_inclusion(b64(v["leafHash"]), v["leafIdx"], v["treeSize"], proof, b64(v["root"]))
    assert ok is not v["wantErr"], v["desc"]


@pytest.mark.parametrize("path", vector_files("consistency"), ids=vector_id)
def test_consistency_vector_gives_expected_verdict(path: Path) -> None:
    v = json.loads(path.read_text())
    proof = [b64(p) for p in v["proof"] or []]
    ok = verify_consistency(v["size1"], v["size2"], b64(v["root1"]), b64(v["root2"]), proof)
    assert ok is not v["wantErr"], v["desc"]


@pytest.mark.parametrize("path", sorted(VECTORS.glob("*/*/happy-path.json")), ids=vector_id)
def test_we_produce_the_vectors_valid_proofs_from_the_rfc_leaves(path: Path) -> None:
    v = json.loads(path.read_text())
    t = Tree(0, leaves=[leaf_hash(d) for d in RFC_LEAVES])
    want = [b64(p) for p in v["proof"] or []]
    if "leafIdx" in v:
        assert inclusion_proof(v["leafIdx"], v["treeSize"], t.perfect) == want
        assert t.roots[v["treeSize"]] == b64(v["root"])
    else:
        assert consistency_proof(v["size1"], v["size2"], t.perfect) == want
        assert (t.roots[v["size1"]], t.roots[v["size2"]]) == (b64(v["root1"]), b64(v["root2"]))


# --- RFC reference roots and the worked example of §2.1.5 ---------------------------------


def test_root_matches_rfc_reference_roots_for_every_prefix() -> None:
    hashes = [leaf_hash(d) for d in RFC_LEAVES]
    assert EMPTY_ROOT.hex() == RFC_ROOTS[0]
    assert [root(hashes[:n]).hex() for n in range(9)] == RFC_ROOTS


def test_empty_tree_and_single_leaf_follow_rfc_definitions() -> None:
    assert root([]) == EMPTY_ROOT == Frontier().root()
    assert leaf_hash(b"") == bytes.fromhex(RFC_ROOTS[1])
    assert node_hash(leaf_hash(b""), leaf_hash(b"\x00")) == bytes.fromhex(RFC_ROOTS[2])


def test_proof_ranges_match_rfc_worked_example() -> None:
    # RFC 9162 §2.1.5, 7 leaves: a..d, e..f, g..h are leaves; i=(4,6) j=(6,7) ... in leaf ranges
    c, d, e, f_ = (2, 3), (3, 4), (4, 5), (5, 6)
    b, h = (1, 2), (2, 4)
    g, i, j, k, l_ = (0, 2), (4, 6), (6, 7), (0, 4), (4, 7)
    assert inclusion_path(0, 7) == [b, h, l_]
    assert inclusion_path(3, 7) == [c, g, l_]
    assert inclusion_path(4, 7) == [f_, j, k]
    assert inclusion_path(6, 7) == [i, k]
    assert consistency_path(3, 7) == [c, d, g, l_]
    assert consistency_path(4, 7) == [l_]
    assert consistency_path(6, 7) == [i, j, k]
    assert e == (4, 5)


def test_root_splits_at_largest_power_of_two_below_n_not_the_midpoint() -> None:
    hs = [leaf_hash(bytes([i])) for i in range(6)]
    rfc = node_hash(node_hash(node_hash(hs[0], hs[1]), node_hash(hs[2], hs[3])), node_hash(hs[4], hs[5]))
    midpoint = node_hash(node_hash(node_hash(hs[0], hs[1]), hs[2]), node_hash(node_hash(hs[3], hs[4]), hs[5]))
    assert root(hs) == rfc != midpoint


# --- property tests: what we produce verifies, anything tampered fails ----------------------

sizes = st.integers(min_value=1, max_value=2000)


@st.composite
def tree_and_index(draw: st.DrawFn) -> tuple[Tree, int]:
    n = draw(sizes)
    return Tree(n), draw(st.integers(0, n - 1))


@st.composite
def tree_and_sizes(draw: st.DrawFn) -> tuple[Tree, int, int]:
    n = draw(sizes)
    return Tree(n), draw(st.integers(1, n)), n


@settings(max_examples=200, deadline=None)
@given(tree_and_index())
def test_every_inclusion_proof_verifies_against_root(ti: tuple[Tree, int]) -> None:
    t, i = ti
    n = len(t.leaves)
    proof = inclusion_proof(i, n, t.perfect)
    assert len(proof) * 32 <= proof_size_bytes(n)
    assert verify_inclusion(t.leaves[i], i, n, proof, root(t.leaves))


@settings(max_examples=200, deadline=None)
@given(tree_and_index(), st.data())
def test_tampered_inclusion_proof_fails(ti: tuple[Tree, int], data: st.DataObject) -> None:
    t, i = ti
    n = len(t.leaves)
    r = t.roots[n]
    leaf = t.leaves[i]
    proof = inclusion_proof(i, n, t.perfect)
    if proof:
        e = data.draw(st.integers(0, len(proof) - 1), label="element")
        bit = data.draw(st.integers(0, 255), label="bit")
        assert not verify_inclusion(leaf, i, n, flip(proof, e, bit), r)
        assert not verify_inclusion(leaf, i, n, proof[:-1], r)
    assert not verify_inclusion(leaf, i, n, [*proof, r], r)
    assert not verify_inclusion(leaf, i, n, [leaf, *proof], r)
    assert not verify_inclusion(flip([leaf], 0, data.draw(st.integers(0, 255), label="leaf bit"))[0], i, n, proof, r)
    assert not verify_inclusion(leaf, i, n, proof, flip([r], 0, data.draw(st.integers(0, 255), label="root bit"))[0])
    if n > 1:
        j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i), label="wrong index")
        assert not verify_inclusion(leaf, j, n, proof, r)
    assert not verify_inclusion(leaf, n, n, proof, r)
    assert not verify_inclusion(leaf, -1, n, proof, r)
    # A wrong size with that size's own root fails unless both sizes give the very same proof.
    m = data.draw(st.integers(i + 1, 2 * n + 1).filter(lambda m: m != n), label="wrong size")
    other = Tree(m)
    assert other.leaves[i] == leaf
    assert verify_inclusion(leaf, i, m, proof, other.roots[m]) is (inclusion_path(i, m) == inclusion_path(i, n))
    # With the original root, a wrong size fails unless the leaf sits on the same left/right path
    # in both shapes (the RFC verifier only walks the path; the signed checkpoint binds the size).
    same_shape = sides(i, m) == sides(i, n)
    assert verify_inclusion(leaf, i, m, proof, r) is same_shape


def sides(i: int, n: int) -> list[bool]:
    """For each inclusion proof element: is the sibling on the left of the leaf?"""
    return [end <= i for _, end in inclusion_path(i, n)]


def test_inclusion_proof_binds_leaf_to_root_not_size_alone() -> None:
    # Leaf 0 of a 3-leaf tree sits on the same all-left path as in a 4-leaf tree, so RFC 9162
    # §2.1.3.2 accepts the 3-leaf proof and root with size 4: the size is bound to the root by
    # the signed checkpoint, which is why checkpoints, not proofs, carry the size.
    t = Tree(3)
    proof = inclusion_proof(0, 3, t.perfect)
    assert verify_inclusion(t.leaves[0], 0, 4, proof, t.roots[3])
    assert not verify_inclusion(t.leaves[0], 0, 4, proof, Tree(4).roots[4])
    assert not verify_inclusion(t.leaves[0], 0, 6, proof, t.roots[3])


@settings(max_examples=200, deadline=None)
@given(tree_and_sizes())
def test_every_consistency_proof_verifies_against_roots(tmn: tuple[Tree, int, int]) -> None:
    t, m, n = tmn
    proof = consistency_proof(m, n, t.perfect)
    assert len(proof) <= (n - 1).bit_length() + 1
    assert verify_consistency(m, n, root(t.leaves[:m]), root(t.leaves), proof)


@settings(max_examples=200, deadline=None)
@given(tree_and_sizes(), st.data())
def test_tampered_consistency_proof_fails(tmn: tuple[Tree, int, int], data: st.DataObject) -> None:
    t, m, n = tmn
    r1, r2 = t.roots[m], t.roots[n]
    proof = consistency_proof(m, n, t.perfect)
    if proof:
        e = data.draw(st.integers(0, len(proof) - 1), label="element")
        bit = data.draw(st.integers(0, 255), label="bit")
        assert not verify_consistency(m, n, r1, r2, flip(proof, e, bit))
        assert not verify_consistency(m, n, r1, r2, proof[:-1])
        assert not verify_consistency(m, n, r2, r1, proof)
    assert not verify_consistency(m, n, r1, r2, [*proof, r2])
    assert not verify_consistency(m, n, r1, r2, [r1, *proof])
    assert not verify_consistency(m, n, flip([r1], 0, data.draw(st.integers(0, 255), label="r1 bit"))[0], r2, proof)
    assert not verify_consistency(m, n, r1, flip([r2], 0, data.draw(st.integers(0, 255), label="r2 bit"))[0], proof)
    assert not verify_consistency(n + 1, n, r1, r2, proof)
    # A forked log: same size, one earlier leaf changed.
    forked = Tree(n, salt=b"fork")
    if m < n:
        assert not verify_consistency(m, n, r1, forked.roots[n], proof)
        assert not verify_consistency(m, n, forked.roots[m], r2, proof)
    # Wrong sizes, each with its own honest root: fails unless both size pairs give the same proof.
    big = Tree(2 * n + 2)
    assert big.leaves[:n] == t.leaves
    m2 = data.draw(st.integers(1, n), label="wrong old size")
    n2 = data.draw(st.integers(m2, 2 * n + 2), label="wrong new size")
    if (m2, n2) != (m, n):
        expected = consistency_path(m2, n2) == consistency_path(m, n)
        assert verify_consistency(m2, n2, big.roots[m2], big.roots[n2], proof) is expected


def test_consistency_proof_binds_roots_not_sizes_alone() -> None:
    # PROOF(2, D[3]) = [d2] walks the same path as PROOF(2, D[4]) would, so §2.1.4.2 accepts it
    # with the size-3 root claimed at size 4; size is bound to root by the signed checkpoint.
    t = Tree(4)
    proof = consistency_proof(2, 3, t.perfect)
    assert verify_consistency(2, 4, t.roots[2], t.roots[3], proof)
    assert not verify_consistency(2, 4, t.roots[2], t.roots[4], proof)


def test_consistency_from_the_empty_tree_is_not_provable() -> None:
    t = Tree(5)
    with pytest.raises(ValueError):
        consistency_path(0, 5)
    assert not verify_consistency(0, 5, EMPTY_ROOT, t.roots[5], [])
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(5, 5, t.roots[5], t.roots[5], [])


@pytest.mark.parametrize(
    "args",
    [
        ("not bytes", 0, 1, [], b"x" * 32),
        (b"x" * 32, "0", 1, [], b"x" * 32),
        (b"x" * 32, 0, 2, None, b"x" * 32),
        (b"x" * 32, 0, 2, [b"short"], b"x" * 32),
        (b"x" * 32, 0, 2, ["str" * 11], b"x" * 32),
        (b"x" * 32, True, 2, [b"y" * 32], b"x" * 32),
        (b"x" * 32, 0, 2.0, [b"y" * 32], b"x" * 32),
        (None, None, None, None, None),
    ],
)
def test_verify_inclusion_rejects_malformed_input_without_raising(args: tuple) -> None:
    assert verify_inclusion(*args) is False


@pytest.mark.parametrize(
    "args",
    [
        (1, 2, b"x" * 32, b"y" * 32, None),
        (1, 2, b"x" * 32, b"y" * 32, [b"short"]),
        (1, 2, None, None, [b"y" * 32]),
        ("1", 2, b"x" * 32, b"y" * 32, [b"y" * 32]),
        (-1, 2, b"x" * 32, b"y" * 32, [b"y" * 32]),
        (None, None, None, None, None),
        (1, 1, b"x" * 32, b"x" * 32, 5),
    ],
)
def test_verify_consistency_rejects_malformed_input_without_raising(args: tuple) -> None:
    assert verify_consistency(*args) is False


# --- proof ranges and range_root ----------------------------------------------------------


def is_perfect(s: int, e: int) -> bool:
    w = e - s
    return w & (w - 1) == 0 and s % w == 0


@pytest.mark.parametrize("n", range(1, 130))
def test_proof_ranges_are_perfect_subtrees_or_the_right_edge(n: int) -> None:
    for i in range(n):
        for s, e in inclusion_path(i, n):
            assert 0 <= s < e <= n and not (s <= i < e)
            assert is_perfect(s, e) or e == n
    for m in range(1, n + 1):
        for s, e in consistency_path(m, n):
            assert 0 <= s < e <= n
            assert is_perfect(s, e) or e == n


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 600).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1), st.integers(0, n))))
def test_range_root_is_mth_of_any_range(nse: tuple[int, int, int]) -> None:
    n, s, e = nse
    if s == e:
        e = s + 1
    s, e = min(s, e), max(s, e)
    t = Tree(n)
    assert range_root(s, e, t.perfect) == root(t.leaves[s:e])


def test_proof_size_is_the_longest_inclusion_proof_and_under_1kb_at_a_billion() -> None:
    for n in range(1, 300):
        assert proof_size_bytes(n) == 32 * max(len(inclusion_path(i, n)) for i in range(n))
    assert proof_size_bytes(0) == proof_size_bytes(1) == 0
    assert proof_size_bytes(10**9) == 960  # ceil(log2 1e9) = 30 hashes
    assert proof_size_bytes(10**9) <= 1024


# --- Frontier ------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2000))
def test_frontier_root_equals_root_at_every_size_and_emits_exactly_the_perfect_subtrees(n: int) -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    f = Frontier()
    emitted: dict[tuple[int, int], bytes] = {}
    for size, h in enumerate(leaves, start=1):
        for level, index, node in f.append(h):
            assert level >= 1 and (level, index) not in emitted
            emitted[(level, index)] = node
        assert f.size == size
        if size & (size - 1) == 0 or size % 97 == 0 or size == n:
            assert f.root() == root(leaves[:size])
    expected = {
        (level, index): root(leaves[index << level : (index + 1) << level])
        for level in range(1, n.bit_length())
        for index in range(n >> level)
    }
    assert emitted == expected


def test_frontier_root_equals_root_at_every_size_up_to_300() -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(300)]
    f = Frontier()
    for size, h in enumerate(leaves, start=1):
        f.append(h)
        assert f.root() == root(leaves[:size])


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 3000))
def test_frontier_round_trips_through_bytes_and_keeps_growing(n: int) -> None:
    t = Tree(n)
    f = Frontier()
    f.extend(t.leaves)
    g = Frontier.from_bytes(f.to_bytes())
    assert g == f and g.size == n and g.root() == root(t.leaves)
    assert Frontier.from_perfect(n, t.perfect) == f
    assert sum(1 << level for level, _, _ in f.subtrees()) == n
    assert all(t.perfect(level, index) == h for level, index, h in f.subtrees())
    extra = leaf_hash(b"next")
    assert g.append(extra) == f.append(extra)
    assert g.root() == root([*t.leaves, extra])


@pytest.mark.parametrize("blob", [b"", b"\x00" * 7, (3).to_bytes(8, "big") + b"\x00" * 32, (1).to_bytes(8, "big")])
def test_frontier_from_bytes_rejects_corrupt_state(blob: bytes) -> None:
    with pytest.raises(ValueError):
        Frontier.from_bytes(blob)


def test_frontier_refuses_a_leaf_that_is_not_a_hash() -> None:
    with pytest.raises(ValueError):
        Frontier().append(b"raw leaf data")
