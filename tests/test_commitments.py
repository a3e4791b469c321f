"""collab.fraudproof.commitments against the byte-level definitions of docs/protocol.md §2-§4."""

from __future__ import annotations

import numpy as np
import pytest
from eth_hash.auto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from collab.errors import BadInput, ProtocolViolation
from collab.fixedpoint import INT64_MAX, INT64_MIN, Domain
from collab.fraudproof import commitments as cm


def naive_root(leaves: list[bytes], pad: bytes) -> bytes:
    """The definition, written independently: pad to 2^D, hash pairs with prefix 0x01."""
    depth = 0 if len(leaves) == 1 else (len(leaves) - 1).bit_length()
    level = leaves + [pad] * ((1 << depth) - len(leaves))
    while len(level) > 1:
        level = [keccak(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def leaves_of(n: int) -> list[bytes]:
    return [keccak(i.to_bytes(8, "big")) for i in range(n)]


# ------------------------------------------------------------------ trees


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 33])
def test_tree_root_matches_the_definition(n: int) -> None:
    tree = cm.MerkleTree(leaves_of(n), cm.PAD_TRACE_LEAF)
    assert tree.root == naive_root(leaves_of(n), cm.PAD_TRACE_LEAF)
    assert tree.depth == cm.tree_depth(n)


def test_tree_depth_and_zero_hashes() -> None:
    assert [cm.tree_depth(n) for n in (1, 2, 3, 4, 5, 1024, 1025)] == [0, 1, 2, 2, 3, 10, 11]
    z = cm.zero_hashes(cm.PAD_CHUNK_LEAF)
    assert z[0] == keccak(b"\x00" * 257)
    assert z[3] == naive_root([cm.PAD_CHUNK_LEAF] * 8, cm.PAD_CHUNK_LEAF)
    with pytest.raises(BadInput):
        cm.tree_depth(0)


@settings(max_examples=80)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1), st.integers(1, n))))
def test_range_proofs_verify_for_every_range(case: tuple[int, int, int]) -> None:
    n, start, length = case
    end = min(n, start + length)
    tree = cm.MerkleTree(leaves_of(n), cm.PAD_TRACE_LEAF)
    proof = tree.range_proof(start, end)
    assert cm.root_from_range([tree.leaf(i) for i in range(start, end)], start, proof, tree.depth) == tree.root


def test_single_leaf_proofs_verify_and_tampering_fails() -> None:
    tree = cm.MerkleTree(leaves_of(11), cm.PAD_TRACE_LEAF)
    for i in range(16):  # including padding positions
        proof = tree.proof(i)
        assert len(proof) == tree.depth
        assert cm.root_from_proof(tree.leaf(i), i, proof) == tree.root
    proof = tree.proof(5)
    bad = list(proof)
    bad[1] = b"\x11" * 32
    assert cm.root_from_proof(tree.leaf(5), 5, bad) != tree.root
    assert cm.root_from_proof(tree.leaf(5), 4, proof) != tree.root
    assert cm.root_from_proof(tree.leaf(4), 5, proof) != tree.root


def test_malformed_range_proofs_are_refused() -> None:
    tree = cm.MerkleTree(leaves_of(8), cm.PAD_TRACE_LEAF)
    proof = tree.range_proof(2, 5)
    leaves = [tree.leaf(i) for i in range(2, 5)]
    with pytest.raises(ProtocolViolation):
        cm.root_from_range(leaves, 2, proof[:-1], tree.depth)
    with pytest.raises(ProtocolViolation):
        cm.root_from_range(leaves, 2, proof + [b"\x00" * 32], tree.depth)
    with pytest.raises(ProtocolViolation):
        cm.root_from_range([], 0, [], 0)
    with pytest.raises(ProtocolViolation):
        cm.root_from_range([tree.leaf(0)], 8, tree.proof(0), tree.depth)  # index outside the tree


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_revealed_children_fold_into_their_parent(m: int) -> None:
    tree = cm.MerkleTree(leaves_of(37), cm.PAD_TRACE_LEAF)  # depth 6
    depth, index = 0, 0
    while depth < tree.depth:
        children = tree.children(depth, index, m)
        assert cm.fold_children(children) == tree.node(depth, index)
        step = (len(children) - 1).bit_length()
        depth, index = depth + step, (index << step) + len(children) - 1
    assert depth == tree.depth
    with pytest.raises(ProtocolViolation):
        cm.fold_children(children[:3] if len(children) >= 4 else [children[0]] * 3)


# ------------------------------------------------------------------ headers and tensors


def test_header_layout_is_the_documented_word() -> None:
    h = cm.TensorHeader(Domain.RING, 16, (3, 70000))
    word = h.encode()
    assert word[:3] == bytes([1, 16, 2])
    assert word[3:7] == (3).to_bytes(4, "big") and word[7:11] == (70000).to_bytes(4, "big")
    assert word[11:] == b"\x00" * 21
    assert cm.TensorHeader.decode(word) == h
    scalar = cm.TensorHeader(Domain.FIXED, 0, ())
    assert scalar.numel == 1 and scalar.num_leaves == 1


@pytest.mark.parametrize(
    "word",
    [
        bytes([3, 0, 1]) + (1).to_bytes(4, "big") + b"\x00" * 25,  # unknown domain
        bytes([0, 63, 1]) + (1).to_bytes(4, "big") + b"\x00" * 25,  # too many fractional bits
        bytes([0, 8, 1]) + (0).to_bytes(4, "big") + b"\x00" * 25,  # zero dimension
        bytes([0, 8, 1]) + (1).to_bytes(4, "big") + (5).to_bytes(4, "big") + b"\x00" * 21,  # dim beyond rank
        bytes([0, 8, 1]) + (1).to_bytes(4, "big") + b"\x00" * 24 + b"\x01",  # trailing byte
        bytes([0, 8, 2]) + (1 << 21).to_bytes(4, "big") + (1 << 20).to_bytes(4, "big") + b"\x00" * 21,  # > 2^40
        bytes([2, 1, 1]) + (1).to_bytes(4, "big") + b"\x00" * 25,  # bundle with fractional bits
    ],
)
def test_invalid_headers_are_refused(word: bytes) -> None:
    with pytest.raises(BadInput):
        cm.TensorHeader.decode(word)


def test_tensor_root_binds_data_shape_domain_and_fractional_bits() -> None:
    values = np.arange(-50, 50, dtype=np.int64)
    base = cm.commit_tensor(values, cm.TensorHeader(Domain.FIXED, 16, (10, 10)))
    variants = [
        cm.commit_tensor(values, cm.TensorHeader(Domain.FIXED, 16, (100,))),
        cm.commit_tensor(values, cm.TensorHeader(Domain.FIXED, 15, (10, 10))),
        cm.commit_tensor(values, cm.TensorHeader(Domain.RING, 16, (10, 10))),
        cm.commit_tensor(values + (np.arange(100) == 99), cm.TensorHeader(Domain.FIXED, 16, (10, 10))),
    ]
    roots = {base.root} | {v.root for v in variants}
    assert len(roots) == 5
    assert base.root == keccak(b"\x03" + base.chunk_root + base.header.encode())


def test_chunks_are_big_endian_and_zero_padded() -> None:
    values = np.array([1, -1, INT64_MAX, INT64_MIN] + list(range(36)), dtype=np.int64)  # 40 elements
    t = cm.commit_tensor(values, cm.TensorHeader(Domain.FIXED, 0, (40,)))
    c0, c1 = t.chunk(0), t.chunk(1)
    assert c0[:16] == (1).to_bytes(8, "big") + b"\xff" * 8
    assert cm.element_of_chunk(c0, 2) == INT64_MAX and cm.element_of_chunk(c0, 3) == INT64_MIN
    assert c1[64:] == b"\x00" * 192  # elements 40..63 are padding zeros
    assert t.chunk(5) == b"\x00" * 256
    assert t.tree.leaves == [cm.chunk_leaf(c0), cm.chunk_leaf(c1)]
    three = cm.commit_tensor(np.ones(65, dtype=np.int64), cm.TensorHeader(Domain.FIXED, 0, (65,)))
    assert three.tree.depth == 2 and three.tree.leaf(3) == cm.PAD_CHUNK_LEAF
    assert t.chunk_root == naive_root([cm.chunk_leaf(c0), cm.chunk_leaf(c1)], cm.PAD_CHUNK_LEAF)


def test_element_range_proof_reads_a_matmul_row() -> None:
    w = np.arange(7 * 48, dtype=np.int64).reshape(7, 48)
    t = cm.commit_tensor(w, cm.TensorHeader(Domain.FIXED, 8, (7, 48)))
    row = 3
    chunks, first, proof = t.element_range_proof(row * 48, (row + 1) * 48)
    leaves = [cm.chunk_leaf(c) for c in chunks]
    assert cm.root_from_range(leaves, first, proof, t.tree.depth) == t.chunk_root
    flat = [cm.element_of_chunk(c, u) for c in chunks for u in range(32)]
    offset = row * 48 - first * 32
    assert flat[offset : offset + 48] == w[row].tolist()


def test_commit_tensor_refuses_mismatched_or_non_int64_values() -> None:
    with pytest.raises(BadInput):
        cm.commit_tensor(np.zeros(3, dtype=np.int64), cm.TensorHeader(Domain.FIXED, 0, (4,)))
    with pytest.raises(BadInput):
        cm.commit_tensor(np.zeros(4, dtype=np.float64), cm.TensorHeader(Domain.FIXED, 0, (4,)))
    with pytest.raises(BadInput):
        cm.chunk_leaf(b"\x00" * 255)


# ------------------------------------------------------------------ bundles, traces, programs


def test_bundle_is_order_independent_and_binds_names_and_roots() -> None:
    r1, r2 = keccak(b"a"), keccak(b"b")
    b1 = cm.commit_bundle({"w": r1, "b": r2})
    b2 = cm.commit_bundle({"b": r2, "w": r1})
    assert b1.root == b2.root
    assert [cm.name_hash(n) for n in b1.names] == sorted(cm.name_hash(n) for n in b1.names)
    assert cm.commit_bundle({"w": r2, "b": r1}).root != b1.root
    assert cm.commit_bundle({"w2": r1, "b": r2}).root != b1.root
    leaves = [cm.entry_leaf(cm.name_hash(n), r) for n, r in zip(b1.names, b1.roots)]
    assert b1.tree.root == naive_root(leaves, cm.PAD_ENTRY_LEAF)
    assert b1.header.encode()[:3] == bytes([2, 0, 1])


def test_trace_step_and_program_leaves_use_distinct_prefixes() -> None:
    root = keccak(b"out")
    descriptor = cm.encode_descriptor(6, [0, 3], cm.TensorHeader(Domain.FIXED, 16, (2, 2)).encode(), b"")
    assert cm.trace_leaf(4, root) == keccak(b"\x02" + (4).to_bytes(32, "big") + root)
    assert cm.step_leaf(4, descriptor) == keccak(b"\x04" + (4).to_bytes(32, "big") + keccak(descriptor))
    assert cm.program_root(9, root) == keccak(b"\x06" + (9).to_bytes(32, "big") + root)
    assert cm.entry_leaf(root, root) == keccak(b"\x05" + root + root)
    # An internal node over (a, b) never equals a leaf built from the same bytes.
    assert cm.node_hash(root, root) != cm.entry_leaf(root, root)
    # The descriptor is the Solidity abi.encode of (uint16, uint32[], bytes32, bytes).
    assert descriptor[:32] == (6).to_bytes(32, "big") and len(descriptor) % 32 == 0


# ------------------------------------------------------------------ native batch hashing


@pytest.mark.parametrize("size", [1, 64, 135, 136, 137, 256, 300])
def test_batch_keccak_is_keccak_of_each_slice_with_and_without_prefix(size: int) -> None:
    data = bytes(range(256)) * (3 * size // 256 + 1)
    data = data[: 3 * size]
    slices = [data[i : i + size] for i in range(0, len(data), size)]
    assert cm.keccak_many(data, size) == [keccak(s) for s in slices]
    assert cm.prefixed_many(b"\x00", data, size) == [keccak(b"\x00" + s) for s in slices]
    with pytest.raises(BadInput):
        cm.keccak_many_raw(data + b"\x01", size) if size > 1 else cm.keccak_many_raw(data, size, b"\x00\x01")


def test_native_and_python_paths_commit_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    from collab.fraudproof import native

    if native.lib() is None:
        pytest.skip("no C compiler: only the Python path exists here")
    values = np.arange(-5000, 5000, 7, dtype=np.int64)
    header = cm.TensorHeader(Domain.FIXED, 8, (values.size,))
    fast = cm.commit_tensor(values, header)
    leaves = leaves_of(77)
    fast_tree = cm.MerkleTree(leaves, cm.PAD_CHUNK_LEAF)
    monkeypatch.setattr(native, "lib", lambda: None)
    slow = cm.commit_tensor(values, header)
    slow_tree = cm.MerkleTree(leaves, cm.PAD_CHUNK_LEAF)
    assert fast.root == slow.root and fast_tree.root == slow_tree.root == naive_root(leaves, cm.PAD_CHUNK_LEAF)
    assert [fast_tree.node(7, i) for i in range(128)] == [slow_tree.node(7, i) for i in range(128)]
    assert fast.tree.range_proof(3, 9) == slow.tree.range_proof(3, 9)


@pytest.mark.parametrize("n", [1, 31, 32, 33, 255, 256, 257, 1000])
def test_native_chunk_leaves_are_the_big_endian_zero_padded_chunks(n: int) -> None:
    from collab.fraudproof import native

    values = (np.arange(n, dtype=np.int64) - n // 2) * 0x0101010101  # every byte position used, negatives too
    values[0] = INT64_MIN
    got = native.chunk_leaves(values)
    if got is None:
        pytest.skip("no C compiler")
    assert cm._split(got) == cm.chunk_leaves(values)


def test_every_simd_width_hashes_alike() -> None:
    from collab.fraudproof import native

    if native.lib() is None:
        pytest.skip("no C compiler")
    data = bytes(range(256)) * 40
    widest = native.simd_width()
    try:
        for width in (1, 4, 8):
            native.simd_width(width)
            for size in (64, 136, 257):
                n = len(data) // size
                expected = b"".join(keccak(b"\x01" + data[i * size : (i + 1) * size]) for i in range(n))
                assert native.keccak_many(data[: n * size], size, 1) == expected, (width, size)
    finally:
        native.simd_width(max(widest, 8))
