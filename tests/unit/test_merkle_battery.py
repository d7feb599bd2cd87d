"""Merkle battery: RFC 6962 known answers, and every corruption of every valid proof over sizes 1..64 rejected.

Known answers are the certificate-transparency reference vectors (Google's ``merkle_tree_test.cc``, carried over to
transparency-dev/merkle ``proof/verify_test.go``): the eight leaves, the roots of every prefix, the subtree hashes of
the 8-leaf tree, and the published inclusion and consistency proofs. Each vector is also recomputed here by an
independent, straight-from-the-RFC recursive implementation (MTH, PATH and SUBPROOF of RFC 6962 §2.1 and a
recursive verifier that rebuilds the roots from a proof), so a typo in a pasted constant cannot hide a bug.

The corruption battery builds, for every valid inclusion proof (every index of every size 1..64) and every valid
consistency proof (every pair of sizes 1 <= old <= new <= 64; from the empty tree there is no proof: asking for or
checking one is refused, as transparency-dev/merkle does since 2026), each corruption the issue lists: index +-1, size x2 and /2, a wrong leaf
(or a wrong old/new root), every single-bit flip of every proof node, each node removed, a node inserted at every
position (a duplicate of its neighbour and an all-zero node), each pair of neighbouring nodes swapped, and a node
appended or prepended. Every one goes through the implementation and through the independent verifier; the number
accepted must be 0. The exhaustive bit flips cover sizes up to ``EVOLUTION_FUZZ_MERKLE_SIZE`` (default 32, a few
seconds; ``make fuzz`` sets 64 and draws 2,000 random trees per property), every other corruption always covers
1..64.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evolution.integrity.merkle import (
    EMPTY_ROOT,
    EmptyTreeConsistency,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

# ---------------------------------------------------------------- the reference vectors (CT merkle_tree_test.cc)
CT_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = [  # root of the first n leaves, n = 0..8
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
CT_NODES = [  # the complete 8-leaf tree, level by level: leaf hashes, pairs, quads, root
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]
CT_INCLUSION = [  # (0-based leaf index, tree size, audit path); the reference lists 1-based "leaf" numbers
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CT_CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

MAX_SIZE = 64
BITFLIP_MAX_SIZE = int(os.environ.get("EVOLUTION_FUZZ_MERKLE_SIZE", "32"))
PROPERTY_EXAMPLES = 150 if BITFLIP_MAX_SIZE < 64 else 2_000  # the long run also draws more random trees
ZERO_NODE = bytes(32)


# ---------------------------------------------------------------- an independent RFC 6962 §2.1 implementation
def ref_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def ref_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def ref_split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, by the recursive definition."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = ref_split(len(hashes))
    return ref_node(ref_mth(hashes[:k]), ref_mth(hashes[k:]))


def ref_path(m: int, hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) (RFC 6962 §2.1.1)."""
    n = len(hashes)
    if n == 1:
        return []
    k = ref_split(n)
    if m < k:
        return [*ref_path(m, hashes[:k]), ref_mth(hashes[k:])]
    return [*ref_path(m - k, hashes[k:]), ref_mth(hashes[:k])]


def ref_subproof(m: int, hashes: Sequence[bytes], complete: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) (RFC 6962 §2.1.2)."""
    n = len(hashes)
    if m == n:
        return [] if complete else [ref_mth(hashes)]
    k = ref_split(n)
    if m <= k:
        return [*ref_subproof(m, hashes[:k], complete), ref_mth(hashes[k:])]
    return [*ref_subproof(m - k, hashes[k:], False), ref_mth(hashes[:k])]


def ref_proof(m: int, hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) for 0 < m <= n; empty for m = n."""
    assert 0 < m <= len(hashes), "RFC 6962 defines no consistency proof from the empty tree"
    return [] if m == len(hashes) else ref_subproof(m, hashes, True)


def ref_verify_inclusion(leaf: bytes, m: int, n: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Rebuild the root by walking PATH's recursion backwards; any shape mismatch is a rejection."""

    def rebuild(m: int, n: int, path: Sequence[bytes]) -> bytes | None:
        if n == 1:
            return leaf if not path else None
        if not path:
            return None
        k = ref_split(n)
        if m < k:
            left = rebuild(m, k, path[:-1])
            return None if left is None else ref_node(left, path[-1])
        right = rebuild(m - k, n - k, path[:-1])
        return None if right is None else ref_node(path[-1], right)

    if not 0 <= m < n or any(len(p) != 32 for p in proof):
        return False
    return rebuild(m, n, list(proof)) == root


def ref_verify_consistency(m: int, n: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """Rebuild both roots by walking SUBPROOF's recursion backwards."""

    def rebuild(m: int, n: int, complete: bool, path: Sequence[bytes]) -> tuple[bytes, bytes] | None:
        if m == n:
            if complete:
                return (old_root, old_root) if not path else None
            return (path[0], path[0]) if len(path) == 1 else None
        if not path:
            return None
        k = ref_split(n)
        if m <= k:
            sub = rebuild(m, k, complete, path[:-1])
            return None if sub is None else (sub[0], ref_node(sub[1], path[-1]))
        sub = rebuild(m - k, n - k, False, path[:-1])
        return None if sub is None else (ref_node(path[-1], sub[0]), ref_node(path[-1], sub[1]))

    if not 0 < m <= n or any(len(p) != 32 for p in proof):
        return False  # m = 0 included: there is no proof from the empty tree to rebuild anything from
    if m == n:
        return not proof and old_root == new_root
    rebuilt = rebuild(m, n, True, list(proof))
    return rebuilt == (old_root, new_root)


# ---------------------------------------------------------------- known answers
def _hexes(values: Sequence[bytes]) -> list[str]:
    return [v.hex() for v in values]


CT_HASHES = [ref_leaf(x) for x in CT_LEAVES]


def test_independent_reference_reproduces_every_published_vector() -> None:
    """The cross-check: the pasted constants agree with the RFC's definitions computed from scratch."""
    assert [ref_mth(CT_HASHES[:n]).hex() for n in range(9)] == CT_ROOTS
    level = CT_HASHES
    for expected in CT_NODES:
        assert _hexes(level) == expected
        level = [ref_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    for index, size, path in CT_INCLUSION:
        assert _hexes(ref_path(index, CT_HASHES[:size])) == path
        assert ref_verify_inclusion(
            CT_HASHES[index], index, size, ref_path(index, CT_HASHES[:size]), bytes.fromhex(CT_ROOTS[size])
        )
    for old, new, proof in CT_CONSISTENCY:
        assert _hexes(ref_proof(old, CT_HASHES[:new])) == proof
        assert ref_verify_consistency(
            old,
            new,
            bytes.fromhex(CT_ROOTS[old]),
            bytes.fromhex(CT_ROOTS[new]),
            [bytes.fromhex(h) for h in proof],
        )


def test_leaf_hashes_are_the_published_level_zero_nodes() -> None:
    assert _hexes([leaf_hash(x) for x in CT_LEAVES]) == CT_NODES[0]


@pytest.mark.parametrize("size", range(9))
def test_root_of_every_prefix_of_the_reference_leaves_is_the_published_root(size: int) -> None:
    assert merkle_root(CT_HASHES[:size]).hex() == CT_ROOTS[size]


def test_every_subtree_of_the_complete_8_leaf_tree_is_the_published_node() -> None:
    for height, nodes in enumerate(CT_NODES):
        width = 1 << height
        for i, expected in enumerate(nodes):
            assert merkle_root(CT_HASHES[i * width : (i + 1) * width]).hex() == expected, (height, i)


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_published_inclusion_proofs_are_produced_and_verified(index: int, size: int, path: list[str]) -> None:
    assert _hexes(inclusion_proof(index, CT_HASHES[:size])) == path
    root = bytes.fromhex(CT_ROOTS[size])
    proof = [bytes.fromhex(h) for h in path]
    assert verify_inclusion(CT_HASHES[index], index, size, proof, root)
    assert root_from_inclusion_proof(CT_HASHES[index], index, size, proof) == root


@pytest.mark.parametrize(("old", "new", "proof"), CT_CONSISTENCY)
def test_published_consistency_proofs_are_produced_and_verified(old: int, new: int, proof: list[str]) -> None:
    assert _hexes(consistency_proof(old, CT_HASHES[:new])) == proof
    assert verify_consistency(
        old,
        new,
        bytes.fromhex(CT_ROOTS[old]),
        bytes.fromhex(CT_ROOTS[new]),
        [bytes.fromhex(h) for h in proof],
    )


def test_roots_and_proofs_equal_the_reference_for_every_size_up_to_64() -> None:
    hashes = _tree(MAX_SIZE)
    for n in range(MAX_SIZE + 1):
        assert merkle_root(hashes[:n]) == ref_mth(hashes[:n]), n
        for m in range(n):
            assert inclusion_proof(m, hashes[:n]) == ref_path(m, hashes[:n]), (m, n)
        for m in range(1, n + 1):
            assert consistency_proof(m, hashes[:n]) == ref_proof(m, hashes[:n]), (m, n)


# ---------------------------------------------------------------- the corruption battery
def _tree(size: int, salt: bytes = b"") -> list[bytes]:
    return [ref_leaf(salt + b"leaf %d" % i) for i in range(size)]


def _flip(node: bytes, bit: int) -> bytes:
    out = bytearray(node)
    out[bit >> 3] ^= 1 << (bit & 7)
    return bytes(out)


def bit_flips(proof: Sequence[bytes]) -> Iterator[tuple[str, list[bytes]]]:
    """Every single-bit flip of every node: 256 variants per node."""
    for i, node in enumerate(proof):
        for bit in range(len(node) * 8):
            bad = list(proof)
            bad[i] = _flip(node, bit)
            yield "bit flip", bad


def shape_corruptions(proof: Sequence[bytes], outsider: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """Removed, inserted (duplicate, zero, foreign), swapped, appended and prepended nodes."""
    proof = list(proof)
    for i in range(len(proof)):
        yield "node removed", proof[:i] + proof[i + 1 :]
    for i in range(len(proof) + 1):
        if i < len(proof):
            yield "duplicate node inserted", [*proof[:i], proof[i], *proof[i:]]
        yield "zero node inserted", [*proof[:i], ZERO_NODE, *proof[i:]]
        yield "foreign node inserted", [*proof[:i], outsider, *proof[i:]]
    for i in range(len(proof) - 1):
        if proof[i] != proof[i + 1]:
            yield "neighbours swapped", [*proof[:i], proof[i + 1], proof[i], *proof[i + 2 :]]
    if len(proof) > 2 and proof[0] != proof[-1]:
        yield "first and last swapped", [proof[-1], *proof[1:-1], proof[0]]
    if proof[::-1] != proof:
        yield "all nodes reversed", proof[::-1]
    if proof:
        yield "proof emptied", []


def accepts_consistency(m: int, n: int, r1: bytes, r2: bytes, proof: Sequence[bytes]) -> bool:
    """The implementation's verdict; a corruption that turns the old size into 0 is refused, i.e. not accepted."""
    try:
        return verify_consistency(m, n, r1, r2, proof)
    except EmptyTreeConsistency:
        return False


class Tally:
    """Counts every corrupted proof tried and every one accepted, by kind."""

    def __init__(self) -> None:
        self.tried: Counter[str] = Counter()
        self.accepted: list[tuple[str, object]] = []

    def check(self, kind: str, where: object, *verdicts: bool) -> None:
        self.tried[kind] += 1
        if any(verdicts):
            self.accepted.append((kind, where))

    @property
    def total(self) -> int:
        return sum(self.tried.values())


def inclusion_battery(
    hashes: Sequence[bytes], index: int, tally: Tally, *, bits: bool, cross_check: bool = True
) -> None:
    """Every corruption of the valid proof of leaf ``index`` in the tree over ``hashes``."""
    size = len(hashes)
    root = merkle_root(hashes)
    proof = inclusion_proof(index, hashes)
    leaf = hashes[index]
    outsider = ref_leaf(b"not in any tree")

    def judge(
        kind: str,
        where: object,
        leaf_: bytes,
        index_: int,
        size_: int,
        proof_: Sequence[bytes],
        root_: bytes = root,
    ) -> None:
        verdicts = [verify_inclusion(leaf_, index_, size_, proof_, root_)]
        if cross_check:
            verdicts.append(ref_verify_inclusion(leaf_, index_, size_, proof_, root_))
        tally.check(kind, where, *verdicts)

    assert verify_inclusion(leaf, index, size, proof, root), (index, size)
    assert ref_verify_inclusion(leaf, index, size, proof, root), (index, size)
    where = (index, size)
    for other in (index - 1, index + 1):
        judge("index ±1", (where, other), leaf, other, size, proof)
    for other_size in (size * 2, size // 2):
        judge("size ×2 and ÷2", (where, other_size), leaf, index, other_size, proof)
    judge("wrong leaf", where, outsider, index, size, proof)
    judge("wrong leaf", where, ZERO_NODE, index, size, proof)
    if size > 1:
        judge("wrong leaf", where, hashes[index ^ 1 if index ^ 1 < size else index - 1], index, size, proof)
    judge("wrong leaf", where, ref_node(leaf, leaf), index, size, proof)  # an inner node passed off as a leaf
    judge("wrong root", where, leaf, index, size, proof, EMPTY_ROOT)
    judge("wrong root", where, leaf, index, size, proof, _flip(root, 0))
    for kind, bad in shape_corruptions(proof, outsider):
        judge(kind, where, leaf, index, size, bad)
    if bits:
        for kind, bad in bit_flips(proof):
            tally.check(kind, where, verify_inclusion(leaf, index, size, bad, root))


def consistency_battery(
    hashes: Sequence[bytes], old: int, tally: Tally, *, bits: bool, cross_check: bool = True
) -> None:
    """Every corruption of the valid proof that the first ``old`` (>= 1) leaves are a prefix of ``hashes``."""
    new = len(hashes)
    old_root, new_root = merkle_root(hashes[:old]), merkle_root(hashes)
    proof = consistency_proof(old, hashes)
    outsider = ref_leaf(b"not in any tree")
    forked = [*hashes[: old - 1], outsider, *hashes[old:]]  # the old tree's last leaf rewritten

    def judge(
        kind: str, where: object, m: int, n: int, r1: bytes, r2: bytes, proof_: Sequence[bytes]
    ) -> None:
        verdicts = [accepts_consistency(m, n, r1, r2, proof_)]
        if cross_check:
            verdicts.append(ref_verify_consistency(m, n, r1, r2, proof_))
        tally.check(kind, where, *verdicts)

    assert verify_consistency(old, new, old_root, new_root, proof), (old, new)
    assert ref_verify_consistency(old, new, old_root, new_root, proof), (old, new)
    where = (old, new)
    for bad_old in (old - 1, old + 1, old * 2, old // 2):
        if bad_old != old:
            judge("old size ±1, ×2, ÷2", (where, bad_old), bad_old, new, old_root, new_root, proof)
    # (new + 1 is not on the list: like an inclusion proof's size, it can share the proof's shape; the roots and
    # sizes are what the log signs together, so only a signed (size, root) pair is ever checked)
    for bad_new in (new * 2, new // 2):
        if bad_new != new:
            judge("new size ×2, ÷2", (where, bad_new), old, bad_new, old_root, new_root, proof)
    for wrong in (outsider, ZERO_NODE, _flip(old_root, 255), merkle_root(hashes[: max(old - 1, 0)])):
        if wrong != old_root:
            judge("wrong old root", where, old, new, wrong, new_root, proof)
    for wrong in (outsider, ZERO_NODE, _flip(new_root, 0), merkle_root(hashes[:-1])):
        if wrong != new_root:
            judge("wrong new root", where, old, new, old_root, wrong, proof)
    # the old tree's history rewritten: neither its own proof nor the old one links the two
    forked_root = merkle_root(forked)
    judge("forked history", where, old, new, old_root, forked_root, proof)
    judge("forked history", where, old, new, old_root, forked_root, consistency_proof(old, forked))
    for kind, bad in shape_corruptions(proof, outsider):
        judge(kind, where, old, new, old_root, new_root, bad)
    if bits:
        for kind, bad in bit_flips(proof):
            tally.check(kind, where, verify_consistency(old, new, old_root, new_root, bad))


def test_every_corruption_of_every_inclusion_proof_up_to_64_leaves_is_rejected() -> None:
    hashes = _tree(MAX_SIZE)
    tally = Tally()
    expected_flips = 0
    for size in range(1, MAX_SIZE + 1):
        bits = size <= BITFLIP_MAX_SIZE
        for index in range(size):
            inclusion_battery(hashes[:size], index, tally, bits=bits)
            if bits:
                expected_flips += 256 * len(inclusion_proof(index, hashes[:size]))
    assert tally.accepted == []
    assert tally.tried["bit flip"] == expected_flips
    pairs = MAX_SIZE * (MAX_SIZE + 1) // 2
    assert tally.tried["index ±1"] == 2 * pairs and tally.tried["size ×2 and ÷2"] == 2 * pairs
    assert tally.total > 50_000 if BITFLIP_MAX_SIZE >= 32 else tally.total > 10_000


def test_every_corruption_of_every_consistency_proof_up_to_64_leaves_is_rejected() -> None:
    hashes = _tree(MAX_SIZE)
    tally = Tally()
    expected_flips = 0
    for new in range(1, MAX_SIZE + 1):
        bits = new <= BITFLIP_MAX_SIZE
        for old in range(1, new + 1):
            consistency_battery(hashes[:new], old, tally, bits=bits)
            if bits:
                expected_flips += 256 * len(consistency_proof(old, hashes[:new]))
    assert tally.accepted == []
    assert tally.tried["bit flip"] == expected_flips
    assert tally.tried["node removed"] > 0 and tally.tried["neighbours swapped"] > 0
    assert tally.total > 50_000 if BITFLIP_MAX_SIZE >= 32 else tally.total > 10_000


def test_a_leaf_hash_cannot_pose_as_an_inner_node_or_the_other_way_round() -> None:
    """The 0x00/0x01 prefixes: the two children of a node, presented as a leaf, never verify."""
    hashes = _tree(8)
    root = merkle_root(hashes)
    inner = hashes[0] + hashes[1]  # the preimage of node(0, 1), as leaf data
    assert leaf_hash(inner) != merkle_root(hashes[:2])
    proof = inclusion_proof(0, [merkle_root(hashes[:2]), merkle_root(hashes[2:4]), merkle_root(hashes[4:8])])
    assert not verify_inclusion(leaf_hash(inner), 0, 4, proof, root)
    assert not verify_inclusion(merkle_root(hashes[:2]), 0, 4, inclusion_proof(0, hashes[:4])[1:], root)


# ---------------------------------------------------------------- properties on random, larger trees
_CORRUPTIONS: list[str] = ["index", "size", "leaf", "bit", "remove", "insert", "swap", "root"]


def _corrupt(
    kind: str, draw: Callable[[st.SearchStrategy[int]], int], proof: list[bytes]
) -> list[bytes] | None:
    if kind == "bit" and proof:
        node = draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[node] = _flip(proof[node], draw(st.integers(0, 255)))
        return bad
    if kind == "remove" and proof:
        i = draw(st.integers(0, len(proof) - 1))
        return proof[:i] + proof[i + 1 :]
    if kind == "insert":
        i = draw(st.integers(0, len(proof)))
        extra = proof[min(i, len(proof) - 1)] if proof and draw(st.booleans()) else ZERO_NODE
        return [*proof[:i], extra, *proof[i:]]
    if kind == "swap" and len(proof) > 1:
        i = draw(st.integers(0, len(proof) - 2))
        j = draw(st.integers(i + 1, len(proof) - 1))
        if proof[i] == proof[j]:
            return None
        bad = list(proof)
        bad[i], bad[j] = bad[j], bad[i]
        return bad
    return None


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), size=st.integers(1, 3000), salt=st.binary(max_size=8))
def test_property_random_inclusion_proofs_verify_and_their_corruptions_do_not(
    data: st.DataObject, size: int, salt: bytes
) -> None:
    hashes = _tree(size, salt)
    root = merkle_root(hashes)
    index = data.draw(st.integers(0, size - 1))
    proof = inclusion_proof(index, hashes)
    assert verify_inclusion(hashes[index], index, size, proof, root)
    assert ref_verify_inclusion(hashes[index], index, size, proof, root)
    kind = data.draw(st.sampled_from(_CORRUPTIONS))
    leaf, idx, n, bad_root = hashes[index], index, size, root
    bad: list[bytes] | None = proof
    if kind == "index":
        idx = index + data.draw(st.sampled_from([-1, 1]))
    elif kind == "size":
        n = data.draw(st.sampled_from([size * 2, size // 2]))
    elif kind == "leaf":
        leaf = ref_leaf(b"outsider" + salt)
    elif kind == "root":
        bad_root = _flip(root, data.draw(st.integers(0, 255)))
    else:
        bad = _corrupt(kind, data.draw, proof)
    if bad is None:  # that corruption does not exist for this proof (e.g. no node to swap)
        return
    assert not verify_inclusion(leaf, idx, n, bad, bad_root), (kind, index, size)
    assert not ref_verify_inclusion(leaf, idx, n, bad, bad_root), (kind, index, size)


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), new=st.integers(2, 3000), salt=st.binary(max_size=8))
def test_property_random_consistency_proofs_verify_and_their_corruptions_do_not(
    data: st.DataObject, new: int, salt: bytes
) -> None:
    hashes = _tree(new, salt)
    old = data.draw(st.integers(1, new - 1))
    old_root, new_root = merkle_root(hashes[:old]), merkle_root(hashes)
    proof = consistency_proof(old, hashes)
    assert verify_consistency(old, new, old_root, new_root, proof)
    assert ref_verify_consistency(old, new, old_root, new_root, proof)
    kind = data.draw(st.sampled_from(_CORRUPTIONS))
    m, n, r1, r2 = old, new, old_root, new_root
    bad: list[bytes] | None = proof
    if kind == "index":
        m = old + data.draw(st.sampled_from([-1, 1]))
    elif kind == "size":
        n = data.draw(st.sampled_from([new * 2, new // 2]))
    elif kind == "leaf":
        r1 = merkle_root([*hashes[: old - 1], ref_leaf(b"outsider" + salt)])
    elif kind == "root":
        r2 = _flip(new_root, data.draw(st.integers(0, 255)))
    else:
        bad = _corrupt(kind, data.draw, proof)
    if bad is None or ((m, n) == (old, new) and bad == proof and (r1, r2) == (old_root, new_root)):
        return
    assert not accepts_consistency(m, n, r1, r2, bad), (kind, old, new)
    assert not ref_verify_consistency(m, n, r1, r2, bad), (kind, old, new)
