"""RFC 6962 Merkle trees: known answers, proofs for all indices and sizes, corrupted proofs, chunking."""

from __future__ import annotations

import base64
import hashlib
import random

import pytest

from evolution.errors import InvalidInput
from evolution.integrity.merkle import (
    CHUNK_SIZE,
    EMPTY_ROOT,
    ChunkedMerkle,
    EmptyTreeConsistency,
    chunk_leaf_hash,
    chunked_merkle_root,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

# The certificate-transparency reference inputs and roots (transparency-dev/merkle testonly/constants.go).
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
CT_ROOTS = [
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
CT_INCLUSION = {  # (index, size) -> audit path
    (0, 2): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"],
    (1, 2): ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"],
    (2, 3): ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    (1, 5): [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CT_CONSISTENCY = {  # (old size, new size) -> proof
    (1, 1): [],
    (1, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}
# transparency-dev/merkle compact/range_test.go golden roots: leaf i is the 2-byte little-endian i.
GOLDEN_U16_ROOTS = {
    10: "VjWMPSYNtCuCNlF/RLnQy6HcwSk6CIipfxm+hettA+4=",
    15: "j4SulYmocFuxdeyp12xXCIgK6PekBcxzAIj4zbQzNEI=",
    16: "c+4Uc6BCMOZf/v3NZK1kqTUJe+bBoFtOhP+P3SayKRE=",
    100: "dUh9hYH88p0CMoHkdr1wC2szbhcLAXOejWpINIooKUY=",
    255: "SmdsuKUqiod3RX2jyF2M6JnbdE4QuTwwipfAowI4/i0=",
    256: "qFI0t/tZ1MdOYgyPpPzHFiZVw86koScXy9q3FU5casA=",
    1000: "RXrgb8xHd55Y48FbfotJwCbV82Kx22LZfEbmBGAvwlQ=",
}
MAX_SIZE = 20


def naive_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH straight from the definition, independent of the implementation under test."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + naive_root(leaves[:k]) + naive_root(leaves[k:])).digest()


def hexes(values: list[bytes]) -> list[str]:
    return [v.hex() for v in values]


def tree(size: int) -> list[bytes]:
    return [leaf_hash(b"leaf-%d" % i) for i in range(size)]


@pytest.fixture(scope="module")
def ct_hashes() -> list[bytes]:
    return [leaf_hash(x) for x in CT_LEAVES]


def test_empty_tree_root_is_sha256_of_empty_string() -> None:
    assert merkle_root([]) == EMPTY_ROOT
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]


def test_leaf_and_node_hashes_use_rfc6962_prefixes() -> None:
    assert leaf_hash(b"L123456").hex() == "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    assert (
        node_hash(b"N123", b"N456").hex()
        == "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )


@pytest.mark.parametrize("size", range(len(CT_ROOTS)))
def test_roots_match_certificate_transparency_vectors(size: int, ct_hashes: list[bytes]) -> None:
    assert merkle_root(ct_hashes[:size]).hex() == CT_ROOTS[size]


@pytest.mark.parametrize(("size", "expected"), sorted(GOLDEN_U16_ROOTS.items()))
def test_roots_of_larger_trees_match_golden_values(size: int, expected: str) -> None:
    leaves = [leaf_hash(bytes([i & 0xFF, (i >> 8) & 0xFF])) for i in range(size)]
    assert base64.b64encode(merkle_root(leaves)).decode() == expected


def test_roots_match_a_naive_recursive_definition_for_every_size_up_to_70() -> None:
    data = [b"row %d" % i for i in range(70)]
    hashes = [leaf_hash(d) for d in data]
    for size in range(71):
        assert merkle_root(hashes[:size]) == naive_root(data[:size]), size


@pytest.mark.parametrize(("index", "size"), sorted(CT_INCLUSION))
def test_inclusion_proofs_match_certificate_transparency_vectors(
    index: int, size: int, ct_hashes: list[bytes]
) -> None:
    proof = inclusion_proof(index, ct_hashes[:size])
    assert hexes(proof) == CT_INCLUSION[(index, size)]
    assert verify_inclusion(ct_hashes[index], index, size, proof, bytes.fromhex(CT_ROOTS[size]))


@pytest.mark.parametrize(("old", "new"), sorted(CT_CONSISTENCY))
def test_consistency_proofs_match_certificate_transparency_vectors(
    old: int, new: int, ct_hashes: list[bytes]
) -> None:
    proof = consistency_proof(old, ct_hashes[:new])
    assert hexes(proof) == CT_CONSISTENCY[(old, new)]
    assert verify_consistency(old, new, bytes.fromhex(CT_ROOTS[old]), bytes.fromhex(CT_ROOTS[new]), proof)


def test_every_inclusion_proof_verifies_for_all_indices_and_sizes() -> None:
    leaves = tree(MAX_SIZE)
    for size in range(1, MAX_SIZE + 1):
        root = merkle_root(leaves[:size])
        for index in range(size):
            proof = inclusion_proof(index, leaves[:size])
            assert verify_inclusion(leaves[index], index, size, proof, root), (index, size)


def _corruptions(proof: list[bytes]) -> list[tuple[str, list[bytes]]]:
    some = hashlib.sha256(b"some other hash").digest()
    out: list[tuple[str, list[bytes]]] = []
    for i in range(len(proof)):
        for bit in (0, 3, 7):
            flipped = list(proof)
            flipped[i] = bytes([proof[i][0] ^ (1 << bit)]) + proof[i][1:]
            out.append((f"bit {bit} of node {i} flipped", flipped))
        out.append((f"node {i} removed", proof[:i] + proof[i + 1 :]))
    out.append(("node inserted at front", [some, *proof]))
    out.append(("node appended", [*proof, some]))
    if len(proof) > 1:
        out.append(("node inserted in the middle", [proof[0], some, *proof[1:]]))
        out.append(("two nodes swapped", [proof[1], proof[0], *proof[2:]]))
    return out


def test_corrupted_inclusion_proofs_are_rejected_for_all_indices_and_sizes() -> None:
    leaves = tree(MAX_SIZE)
    wrong_leaf = leaf_hash(b"not in the tree")
    for size in range(1, MAX_SIZE + 1):
        root = merkle_root(leaves[:size])
        for index in range(size):
            proof = inclusion_proof(index, leaves[:size])
            leaf = leaves[index]
            assert not verify_inclusion(wrong_leaf, index, size, proof, root)
            assert not verify_inclusion(leaf, index, size, proof, EMPTY_ROOT)
            for other in {index - 1, index + 1, index ^ 2} - {index}:
                assert not verify_inclusion(leaf, other, size, proof, root), (index, other, size)
            # size * 2 and size // 2 always change the path's shape (size + 1 need not: leaf 0 of 3 and of 4
            # climb the same way, which is why a proof is checked against a signed root *and* size)
            for bad_size in {size * 2, size // 2} - {size}:
                assert not verify_inclusion(leaf, index, bad_size, proof, root), (index, size, bad_size)
            for what, bad in _corruptions(proof):
                assert not verify_inclusion(leaf, index, size, bad, root), (index, size, what)


def test_every_consistency_proof_verifies_for_all_size_pairs() -> None:
    leaves = tree(MAX_SIZE)
    for new in range(1, MAX_SIZE + 1):
        new_root = merkle_root(leaves[:new])
        for old in range(1, new + 1):
            proof = consistency_proof(old, leaves[:new])
            assert verify_consistency(old, new, merkle_root(leaves[:old]), new_root, proof), (old, new)


def test_corrupted_consistency_proofs_are_rejected_for_all_size_pairs() -> None:
    leaves = tree(MAX_SIZE)
    forked = [*leaves[:3], leaf_hash(b"rewritten history"), *leaves[4:]]
    for new in range(2, MAX_SIZE + 1):
        new_root = merkle_root(leaves[:new])
        for old in range(1, new):
            old_root = merkle_root(leaves[:old])
            proof = consistency_proof(old, leaves[:new])
            assert not verify_consistency(old, new, old_root, EMPTY_ROOT, proof)
            assert not verify_consistency(old, new, new_root, new_root, proof)
            for bad_old in (old - 1, old + 1):
                if 0 < bad_old < new:
                    assert not verify_consistency(bad_old, new, old_root, new_root, proof), (
                        old,
                        bad_old,
                        new,
                    )
            # (new + 1 may share the proof's shape, as in inclusion proofs; doubling never does)
            assert not verify_consistency(old, new * 2, old_root, new_root, proof), (old, new)
            for what, bad in _corruptions(proof):
                assert not verify_consistency(old, new, old_root, new_root, bad), (old, new, what)
            if old > 3:  # a tree whose history was rewritten is not an extension of the old one
                forked_root = merkle_root(forked[:new])
                forked_proof = consistency_proof(old, forked[:new])
                assert not verify_consistency(old, new, old_root, forked_root, forked_proof), (old, new)


def test_consistency_from_the_empty_tree_is_refused_generated_or_checked() -> None:
    """transparency-dev/merkle refuses size1 = 0 whatever size2 (PR #236): an empty proof vouched for any root."""
    leaves = tree(5)
    for new in range(6):
        with pytest.raises(EmptyTreeConsistency, match=f"empty tree \\(size 0\\) to size {new}"):
            consistency_proof(0, leaves[:new])
        for new_root in (merkle_root(leaves[:new]), EMPTY_ROOT, bytes(32)):  # the right root, or any other
            with pytest.raises(EmptyTreeConsistency):
                verify_consistency(0, new, EMPTY_ROOT, new_root, [])
    error = EmptyTreeConsistency(5)
    assert isinstance(error, InvalidInput) and error.error_type == "EmptyTreeConsistency"


def test_proof_requests_outside_the_tree_are_refused() -> None:
    leaves = tree(4)
    with pytest.raises(InvalidInput):
        inclusion_proof(4, leaves)
    with pytest.raises(InvalidInput):
        inclusion_proof(-1, leaves)
    with pytest.raises(InvalidInput):
        consistency_proof(5, leaves)
    with pytest.raises(InvalidInput):
        merkle_root([b"short"])
    assert not verify_inclusion(leaves[0], 0, 0, [], EMPTY_ROOT)
    assert not verify_consistency(3, 2, merkle_root(leaves[:3]), merkle_root(leaves[:2]), [])
    assert not verify_consistency(-1, 2, EMPTY_ROOT, merkle_root(leaves[:2]), [])


def _random_cuts(data: bytes, rng: random.Random) -> list[bytes]:
    pieces, pos = [], 0
    while pos < len(data):
        step = rng.choice([1, 7, 100, 4096, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE])
        pieces.append(data[pos : pos + step])
        pos += step
    return pieces


@pytest.mark.parametrize(
    "length", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 5 * CHUNK_SIZE + 12345]
)
def test_chunked_root_does_not_depend_on_how_the_stream_is_split(length: int) -> None:
    rng = random.Random(length)
    data = rng.randbytes(length)
    expected = naive_root([data[i : i + CHUNK_SIZE] for i in range(0, length, CHUNK_SIZE)])
    assert chunked_merkle_root(data) == expected
    for _ in range(3):
        merkle = ChunkedMerkle()
        for piece in _random_cuts(data, rng):
            merkle.update(piece)
        assert merkle.root() == expected
        assert merkle.size == length
        assert len(merkle.leaf_hashes) == merkle.leaf_count == -(-length // CHUNK_SIZE)


def test_chunked_update_of_a_then_b_equals_update_of_a_plus_b() -> None:
    rng = random.Random(7)
    a, b = rng.randbytes(100_000), rng.randbytes(50_000)
    assert ChunkedMerkle().update(a).update(b).root() == chunked_merkle_root(a + b)
    assert ChunkedMerkle().update(memoryview(a)).update(bytearray(b)).root() == chunked_merkle_root(a + b)


def test_chunked_root_can_be_taken_midway_and_the_stream_continued() -> None:
    data = random.Random(3).randbytes(3 * CHUNK_SIZE)
    merkle = ChunkedMerkle().update(data[: CHUNK_SIZE + 10])
    assert merkle.root() == chunked_merkle_root(data[: CHUNK_SIZE + 10])
    merkle.update(data[CHUNK_SIZE + 10 :])
    assert merkle.root() == chunked_merkle_root(data)


def test_chunk_inclusion_proof_locates_the_bytes_it_covers() -> None:
    data = random.Random(5).randbytes(4 * CHUNK_SIZE + 99)
    merkle = ChunkedMerkle().update(data)
    root = merkle.root()
    for index in range(merkle.leaf_count):
        proof = merkle.inclusion_proof(index)
        assert verify_inclusion(chunk_leaf_hash(data, index), index, merkle.leaf_count, proof, root)
    tampered = bytearray(data)
    tampered[2 * CHUNK_SIZE + 5] ^= 1
    assert not verify_inclusion(
        chunk_leaf_hash(tampered, 2), 2, merkle.leaf_count, merkle.inclusion_proof(2), root
    )


def test_a_single_flipped_byte_changes_the_chunked_root() -> None:
    data = bytearray(random.Random(11).randbytes(3 * CHUNK_SIZE))
    before = chunked_merkle_root(data)
    data[CHUNK_SIZE + 1] ^= 0x80
    assert chunked_merkle_root(data) != before
