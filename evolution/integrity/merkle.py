"""RFC 6962 / RFC 9162 Merkle trees: roots, inclusion and consistency proofs, and a chunked streaming builder.

Leaves and inner nodes are hashed with distinct one-byte prefixes (0x00 and 0x01) so that no inner node can be
passed off as a leaf (the second-preimage attack on naive Merkle trees). A tree over ``n > 1`` leaves splits
at ``k``, the largest power of two smaller than ``n``; the empty tree's root is SHA-256 of the empty string.

Dataset snapshots are hashed with :class:`ChunkedMerkle`: the leaves are fixed 64 KiB chunks of the canonical
byte stream rather than single rows. Hashing then costs one SHA-256 pass plus one tiny digest per 64 KiB,
within a few per cent of a flat ``hashlib.sha256``, while a leaf per row costs a hash object, a prefix and a
finalisation per row plus a node per row (several times the flat cost; ``bench/bench_merkle.py`` measures it).
Proofs still locate any byte range: chunk ``i`` covers bytes ``[i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE)``.

A proof is only as good as the tree size it is checked against: the same audit path can fit trees of different
sizes (leaf 0 climbs a tree of 3 leaves and one of 4 the same way), so what the system signs binds the size to the
root (snapshot statements, audit checkpoints), and proofs are checked against that signed pair only.

Consistency proofs from the empty tree are refused (:class:`EmptyTreeConsistency`), generated or checked, as
transparency-dev/merkle does since 2026 (its PR #236; RFC 6962 §2.1.2 defines them for ``0 < m < n`` only): the
empty tree is a prefix of every tree, so such a "proof" says nothing about the new tree, and a verifier that says
yes to it vouches for a root it never looked at.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

from evolution.errors import InvalidInput

HASH_SIZE: Final = 32
CHUNK_SIZE: Final = 64 * 1024
LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()

Buffer = bytes | bytearray | memoryview


class EmptyTreeConsistency(InvalidInput):
    """A consistency proof from a tree of size 0 was asked for or offered: there is none to give or check."""

    error_type = "EmptyTreeConsistency"

    def __init__(self, new_size: int) -> None:
        super().__init__(
            f"consistency proof from the empty tree (size 0) to size {new_size} refused: the empty tree is a "
            "prefix of every tree, so there is nothing to prove; check the new tree's signed root and size instead"
        )


def leaf_hash(data: Buffer) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    h = hashlib.sha256(LEAF_PREFIX)
    h.update(data)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 inner node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two below ``n`` (n >= 2): where RFC 6962 cuts a tree of ``n`` leaves."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_hashes(hashes: Sequence[bytes], what: str) -> None:
    for i, h in enumerate(hashes):
        if not isinstance(h, bytes | bytearray) or len(h) != HASH_SIZE:
            raise InvalidInput(f"{what}[{i}] is not a {HASH_SIZE}-byte hash")


def _root(leaf_hashes: Sequence[bytes]) -> bytes:
    """Bottom-up root: pair neighbours per level and carry an unpaired last node up unchanged.

    This yields exactly the RFC 6962 recursive tree (the left subtree is always the complete power-of-two
    part) in O(n) hashes without recursion.
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return bytes(level[0])


def merkle_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """Merkle Tree Hash over already-hashed leaves (each a 32-byte :func:`leaf_hash`)."""
    _check_hashes(leaf_hashes, "leaf_hashes")
    return _root(leaf_hashes)


def _path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n]), listed from the leaf upwards."""
    n = len(leaves)
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [*_path(index, leaves[:k]), _root(leaves[k:])]
    return [*_path(index - k, leaves[k:]), _root(leaves[:k])]


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """The audit path that proves leaf ``index`` is in the tree over ``leaf_hashes``."""
    if not 0 <= index < len(leaf_hashes):
        raise InvalidInput(f"leaf index {index} is outside a tree of {len(leaf_hashes)} leaves")
    _check_hashes(leaf_hashes, "leaf_hashes")
    return _path(index, leaf_hashes)


def root_from_inclusion_proof(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes]
) -> bytes | None:
    """RFC 9162 §2.1.3.2: the root ``proof`` implies for ``leaf`` at ``index``, or None if it is malformed."""
    if not 0 <= index < tree_size or len(leaf) != HASH_SIZE:
        return None
    fn, sn = index, tree_size - 1
    r = bytes(leaf)
    for p in proof:
        if sn == 0 or len(p) != HASH_SIZE:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """True iff ``proof`` puts leaf hash ``leaf`` at ``index`` in the tree of ``tree_size`` and ``root``."""
    computed = root_from_inclusion_proof(leaf, index, tree_size, proof)
    return computed is not None and computed == root


def _subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
    """RFC 6962 §2.1.2 SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if complete else [_root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete), _root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), _root(leaves[:k])]


def consistency_proof(old_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Proof that the tree of the first ``old_size`` leaves is a prefix of the tree over all ``leaf_hashes``.

    Empty for the whole tree. ``old_size`` 0 raises :class:`EmptyTreeConsistency`.
    """
    if old_size == 0:
        raise EmptyTreeConsistency(len(leaf_hashes))
    if not 0 < old_size <= len(leaf_hashes):
        raise InvalidInput(f"old tree size {old_size} is outside 1..{len(leaf_hashes)}")
    _check_hashes(leaf_hashes, "leaf_hashes")
    if old_size == len(leaf_hashes):
        return []
    return _subproof(old_size, leaf_hashes, True)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: True iff ``proof`` shows the ``old_size`` tree is a prefix of the new one.

    ``old_size`` 0 raises :class:`EmptyTreeConsistency` whatever the rest (even ``0 -> 0``), rather than answering:
    a yes would vouch for ``new_root`` without looking at it, a no would call a well-formed request a bad proof.
    """
    if old_size == 0:
        raise EmptyTreeConsistency(new_size)
    if not 0 < old_size <= new_size:
        return False
    if len(old_root) != HASH_SIZE or len(new_root) != HASH_SIZE or any(len(p) != HASH_SIZE for p in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is itself a node of the new tree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


class ChunkedMerkle:
    """Streaming RFC 6962 tree over a byte stream cut into fixed ``CHUNK_SIZE`` leaves (the last one shorter).

    The leaves depend only on the concatenated bytes, never on how they were split across ``update`` calls. An
    empty stream has no leaves and the empty-tree root. Data is hashed in place through memoryviews: no chunk
    is copied.
    """

    __slots__ = ("_chunk_size", "_current", "_filled", "_leaves", "_size")

    def __init__(self, chunk_size: int = CHUNK_SIZE) -> None:
        if chunk_size <= 0:
            raise InvalidInput(f"chunk_size must be positive, got {chunk_size}")
        self._chunk_size = chunk_size
        self._leaves: list[bytes] = []
        self._current = hashlib.sha256(LEAF_PREFIX)
        self._filled = 0  # bytes in the current, unfinished leaf
        self._size = 0

    def update(self, data: Buffer) -> ChunkedMerkle:
        """Append bytes to the stream; returns self so calls can be chained."""
        view = data if isinstance(data, bytes | bytearray) else memoryview(data).cast("B")
        n = len(view)
        room = self._chunk_size - self._filled
        if n < room:  # the common small-row case: no slicing, no leaf boundary
            self._current.update(view)
            self._filled += n
            self._size += n
            return self
        if not isinstance(view, memoryview):
            view = memoryview(view)
        pos = 0
        while n - pos >= room:
            self._current.update(view[pos : pos + room])
            self._leaves.append(self._current.digest())
            self._current = hashlib.sha256(LEAF_PREFIX)
            pos += room
            room = self._chunk_size
        self._filled = n - pos
        if self._filled:
            self._current.update(view[pos:])
        self._size += n
        return self

    @property
    def size(self) -> int:
        """Bytes fed so far."""
        return self._size

    @property
    def leaf_hashes(self) -> list[bytes]:
        """The leaf hashes so far, including the unfinished last chunk (a copy)."""
        if self._filled:
            return [*self._leaves, self._current.digest()]
        return list(self._leaves)

    @property
    def leaf_count(self) -> int:
        return len(self._leaves) + (1 if self._filled else 0)

    def root(self) -> bytes:
        """The Merkle root of everything fed so far; further updates may follow."""
        return _root(self.leaf_hashes)

    def inclusion_proof(self, chunk_index: int) -> list[bytes]:
        """Audit path of chunk ``chunk_index`` (bytes ``[i * chunk_size, (i + 1) * chunk_size)``)."""
        return inclusion_proof(chunk_index, self.leaf_hashes)


def chunked_merkle_root(data: Buffer, chunk_size: int = CHUNK_SIZE) -> bytes:
    """Root of ``data`` cut into ``chunk_size`` leaves, as :class:`ChunkedMerkle` gives fed in any pieces."""
    return ChunkedMerkle(chunk_size).update(data).root()


def chunk_leaf_hash(data: Buffer, chunk_index: int, chunk_size: int = CHUNK_SIZE) -> bytes:
    """Leaf hash of one chunk of ``data``, for checking an inclusion proof against the bytes it covers."""
    view = memoryview(data).cast("B")
    start = chunk_index * chunk_size
    if chunk_index < 0 or start >= len(view):
        raise InvalidInput(f"chunk {chunk_index} is outside data of {len(view)} bytes")
    return leaf_hash(view[start : start + chunk_size])
