"""Python vs Solidity, bit for bit: LibFixedPoint and LibMerkle on a real anvil via eth_call.

Hypothesis draws values across the int64 range plus the edges that break
naive implementations (rounding ties, saturation bounds, wraparound,
negative values); every case is computed by ``collab.fixedpoint`` /
``collab.fraudproof.commitments`` and by the harness contract, and must agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from web3 import Web3

from chain.client import AbiRegistry, ContractClient, deploy_contract
from chain.compiler import compile_contracts
from chain.errors import revert_class
from collab import fixedpoint as fx
from collab.errors import BadInput
from collab.fixedpoint import INT64_MAX, INT64_MIN, Domain
from collab.fraudproof import commitments as cm

FIXTURE_CONTRACTS = Path(__file__).parent / "fixtures" / "contracts"
CASES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

I64 = st.integers(INT64_MIN, INT64_MAX)
EDGE64 = st.sampled_from([INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX - 1, INT64_MAX, 1 << 32, -(1 << 32)])
VAL = st.one_of(I64, EDGE64)
BIG = st.integers(-(1 << 140), 1 << 140)
FRAC = st.integers(0, fx.FRAC_BITS_MAX)


class Harness(ContractClient):
    """Typed view of FraudProofLibHarness (read-only calls)."""

    def call(self, fn: str, *args: Any) -> Any:
        """eth_call ``fn``; reverts surface as decoded ContractRevert."""
        return self._call(fn, *args)


@pytest.fixture(scope="module")
def harness(w3: Web3, deployer: LocalAccount) -> Harness:
    artifacts = compile_contracts(source_root=FIXTURE_CONTRACTS)
    artifact = artifacts["FraudProofLibHarness"]
    registry = AbiRegistry.from_artifacts(artifacts.values())
    address, _ = deploy_contract(w3, deployer, artifact, registry=registry)
    return Harness(w3, address, artifact.abi, deployer, registry=registry, name="FraudProofLibHarness")


def ties(s: int) -> st.SearchStrategy[int]:
    """Values exactly halfway between two multiples of 2**s."""
    return st.integers(-(1 << 40), 1 << 40).map(lambda k: (2 * k + 1) << (s - 1))


# ------------------------------------------------------------------ primitives


@CASES
@given(BIG, st.integers(-(1 << 70), 1 << 70).filter(lambda d: d != 0))
@example(5, 2)
@example(-5, 2)
@example(-7, -2)
@example(INT64_MIN, -1)
def test_rdiv_agrees(harness: Harness, n: int, d: int) -> None:
    assert harness.call("rdiv", n, d) == fx.rdiv(n, d)


@CASES
@given(st.one_of(BIG, st.integers(1, 60).flatmap(ties)), st.integers(0, 200))
@example(3, 1)
@example(-3, 1)
@example(-(1 << 63), 64)
def test_rshift_agrees(harness: Harness, v: int, s: int) -> None:
    assert harness.call("rshift", v, s) == fx.rshift(v, s)


@CASES
@given(st.one_of(VAL, BIG), FRAC, FRAC)
@example(INT64_MAX, 0, 1)
@example(INT64_MIN, 0, 1)
@example(-(1 << 62), 0, 1)
@example(-(1 << 62) - 1, 0, 1)
@example((1 << 62) - 1, 0, 1)
@example(1 << 62, 0, 1)
@example(-1, 0, 62)
@example(1, 0, 63)
@example(3 << 15, 16, 0)
@example(-(3 << 15), 16, 0)
def test_rescale_agrees_including_saturation(harness: Harness, v: int, fa: int, fb: int) -> None:
    assert harness.call("rescale", v, fa, fb) == fx.rescale(v, fa, fb)


@CASES
@given(BIG, st.integers(1, 1 << 40), FRAC, FRAC)
def test_scaled_div_agrees(harness: Harness, n: int, d: int, fa: int, fb: int) -> None:
    assert harness.call("scaledDiv", n, d, fa, fb) == fx.scaled_div(n, d, fa, fb)


@CASES
@given(VAL, VAL)
@example(INT64_MAX, 1)
@example(INT64_MIN, -1)
@example(INT64_MIN, INT64_MIN)
def test_ring_ops_agree_with_wraparound(harness: Harness, a: int, b: int) -> None:
    want = (fx.ring_add(a, b), fx.ring_sub(a, b), fx.ring_neg(a), fx.ring_mul(a, b))
    assert tuple(harness.call("ring", a, b)) == want
    assert harness.call("sat", a * b) == fx.sat(a * b)
    assert harness.call("wrap", a * b) == fx.wrap(a * b)


def test_library_reverts_are_named(harness: Harness) -> None:
    with pytest.raises(revert_class("DivisionByZero")):
        harness.call("rdiv", 1, 0)
    with pytest.raises(revert_class("ShiftOutOfRange")):
        harness.call("rshift", 1, 255)


# ------------------------------------------------------------------ PRG


@CASES
@given(st.binary(min_size=32, max_size=32), st.lists(st.integers(0, 1 << 64), min_size=1, max_size=12))
def test_prg_agrees(harness: Harness, seed: bytes, indices: list[int]) -> None:
    assert harness.call("prgBlock", seed, indices[0]) == fx.prg_block(seed, indices[0])
    assert harness.call("prgElements", seed, indices) == [fx.prg_element(seed, i) for i in indices]


# ------------------------------------------------------------------ approximations


def batch(values: st.SearchStrategy[int]) -> st.SearchStrategy[list[int]]:
    return st.lists(values, min_size=1, max_size=24)


EXP_IN = st.one_of(st.integers(-(70 << 32), 70 << 32), EDGE64, st.sampled_from([0, 64 << 32, -(64 << 32), (64 << 32) - 1]))


@CASES
@given(batch(EXP_IN), st.just(32) | FRAC, FRAC)
def test_exp_agrees(harness: Harness, xs: list[int], fi: int, fo: int) -> None:
    assert harness.call("expBatch", xs, fi, fo) == [fx.exp_fx(x, fi, fo) for x in xs]


GELU_IN = st.one_of(st.integers(-(10 << 32), 10 << 32), EDGE64, st.sampled_from([8 << 32, -(8 << 32), (8 << 32) - 1]))


@CASES
@given(batch(GELU_IN), st.just(32) | FRAC, FRAC)
def test_gelu_agrees(harness: Harness, xs: list[int], fi: int, fo: int) -> None:
    assert harness.call("geluBatch", xs, fi, fo) == [fx.gelu_fx(x, fi, fo) for x in xs]


@CASES
@given(batch(VAL), FRAC, FRAC)
def test_reciprocal_and_inv_sqrt_agree(harness: Harness, xs: list[int], fi: int, fo: int) -> None:
    assert harness.call("reciprocalBatch", xs, fi, fo) == [fx.reciprocal_fx(x, fi, fo) for x in xs]
    assert harness.call("invSqrtBatch", xs, fi, fo) == [fx.inv_sqrt_fx(x, fi, fo) for x in xs]


ROW_VAL = st.integers(-(1 << 40), 1 << 40)


@CASES
@given(st.lists(ROW_VAL, min_size=1, max_size=48), st.integers(0, 32), st.integers(0, 40))
def test_softmax_row_agrees(harness: Harness, row: list[int], fi: int, fo: int) -> None:
    assert harness.call("softmaxRow", row, fi, fo) == fx.softmax_row(row, fi, fo)


@CASES
@given(st.lists(ROW_VAL, min_size=1, max_size=48), st.integers(0, 1 << 20), st.integers(0, 32), st.integers(0, 40))
def test_layernorm_row_agrees(harness: Harness, row: list[int], eps: int, fi: int, fo: int) -> None:
    assert harness.call("layernormRow", row, eps, fi, fo) == fx.layernorm_row(row, eps, fi, fo)


def test_one_softmax_and_layernorm_element_of_a_real_row_agrees_within_gas(harness: Harness) -> None:
    rng = np.random.default_rng(7)
    row = fx.to_fixed(rng.normal(scale=4.0, size=128), 16).tolist()
    soft = fx.softmax_row(row, 16, 16)
    for j in (0, 77, 127):
        assert harness.call("softmaxAt", row, j, 16, 16) == soft[j]
    wide = fx.to_fixed(rng.normal(loc=1.0, scale=3.0, size=384), 16).tolist()
    norm = fx.layernorm_row(wide, 1 << 4, 16, 16)
    for j in (0, 383):
        assert harness.call("layernormAt", wide, j, 1 << 4, 16, 16) == norm[j]
    # Bounded gas per element (docs/protocol.md §3.4): far below the 3M one-step target.
    assert harness.contract.functions.softmaxAt(row, 5, 16, 16).estimate_gas() < 1_500_000
    assert harness.contract.functions.layernormAt(wide, 5, 1 << 4, 16, 16).estimate_gas() < 1_500_000


# ------------------------------------------------------------------ commitments


@CASES
@given(st.lists(VAL, min_size=1, max_size=100))
def test_chunk_leaves_and_elements_agree(harness: Harness, values: list[int]) -> None:
    arr = np.array(values, dtype=np.int64)
    data = cm.chunk_data(arr)
    assert harness.call("chunkLeaves", data) == cm.chunk_leaves(arr)
    assert harness.call("elements", data[:256]) == [cm.element_of_chunk(data[:256], u) for u in range(32)]


def test_padding_constants_and_zero_hashes_agree(harness: Harness) -> None:
    assert tuple(harness.call("padLeaves")) == (cm.PAD_CHUNK_LEAF, cm.PAD_ENTRY_LEAF)
    assert harness.call("chunkLeaf", b"\x00" * 256) == cm.PAD_CHUNK_LEAF
    assert harness.call("zeroHash", cm.PAD_CHUNK_LEAF, 5) == cm.zero_hashes(cm.PAD_CHUNK_LEAF)[5]
    assert [harness.call("treeDepth", n) for n in (1, 2, 3, 5, 1025)] == [cm.tree_depth(n) for n in (1, 2, 3, 5, 1025)]


@CASES
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32), st.integers(0, 1 << 64), st.binary(max_size=200))
def test_leaf_kinds_agree(harness: Harness, a: bytes, b: bytes, index: int, descriptor: bytes) -> None:
    got = tuple(harness.call("leaves", index, a, b, descriptor))
    assert got == (
        cm.trace_leaf(index, a),
        cm.tensor_root(a, b),
        cm.step_leaf(index, descriptor),
        cm.entry_leaf(a, b),
        cm.program_root(index, a),
    )
    assert harness.call("nodeHash", a, b) == cm.node_hash(a, b)


@CASES
@given(st.integers(1, 70).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1), st.integers(1, 20))))
def test_range_and_single_proofs_verify_on_chain(harness: Harness, case: tuple[int, int, int]) -> None:
    n, start, length = case
    end = min(n, start + length)
    tree = cm.MerkleTree([bytes([i % 256]) * 32 for i in range(n)], cm.PAD_TRACE_LEAF)
    leaves = [tree.leaf(i) for i in range(start, end)]
    assert harness.call("rootFromRange", leaves, start, tree.depth, tree.range_proof(start, end)) == tree.root
    assert harness.call("rootFromProof", leaves[0], start, tree.proof(start)) == tree.root


def test_bad_proofs_revert_or_miss_the_root(harness: Harness) -> None:
    tree = cm.MerkleTree([bytes([i]) * 32 for i in range(9)], cm.PAD_TRACE_LEAF)
    leaves = [tree.leaf(i) for i in range(2, 6)]
    proof = tree.range_proof(2, 6)
    with pytest.raises(revert_class("ProofShapeMismatch")):
        harness.call("rootFromRange", leaves, 2, tree.depth, proof[:-1])
    with pytest.raises(revert_class("ProofShapeMismatch")):
        harness.call("rootFromRange", leaves, 2, tree.depth, proof + [b"\x00" * 32])
    wrong = [leaves[0], b"\x42" * 32] + leaves[2:]
    assert harness.call("rootFromRange", wrong, 2, tree.depth, proof) != tree.root
    with pytest.raises(revert_class("ChildrenNotPowerOfTwo")):
        harness.call("foldChildren", [b"\x00" * 32] * 3)
    with pytest.raises(revert_class("BadChunkLength")):
        harness.call("chunkLeaf", b"\x00" * 255)


@pytest.mark.parametrize("m", [1, 2, 4])
def test_fold_children_agrees(harness: Harness, m: int) -> None:
    tree = cm.MerkleTree([bytes([i]) * 32 for i in range(21)], cm.PAD_TRACE_LEAF)
    children = tree.children(0, 0, m)
    assert harness.call("foldChildren", children) == cm.fold_children(children) == tree.root


@CASES
@given(
    st.sampled_from(list(Domain)),
    st.integers(0, 62),
    st.lists(st.integers(1, 100), min_size=0, max_size=6),  # 100^6 < 2^40
)
def test_valid_headers_decode_identically(harness: Harness, domain: Domain, frac: int, shape: list[int]) -> None:
    if domain == Domain.BUNDLE:
        frac, shape = 0, shape[:1] or [3]
    header = cm.TensorHeader(domain, frac, tuple(shape))
    valid, dom, f, rank, numel, leaves = harness.call("header", header.encode())
    assert (valid, dom, f, rank, numel, leaves) == (True, int(domain), frac, len(shape), header.numel, header.num_leaves)


@CASES
@given(st.binary(min_size=32, max_size=32))
@example(bytes([0, 8, 1]) + (1).to_bytes(4, "big") + (5).to_bytes(4, "big") + b"\x00" * 21)
@example(bytes([0, 8, 2]) + (1 << 21).to_bytes(4, "big") + (1 << 20).to_bytes(4, "big") + b"\x00" * 21)
@example(bytes([2, 0, 1]) + (4).to_bytes(4, "big") + b"\x00" * 25)
def test_header_validity_agrees_on_arbitrary_words(harness: Harness, word: bytes) -> None:
    try:
        cm.TensorHeader.decode(word)
        python_valid = True
    except BadInput:
        python_valid = False
    assert harness.call("header", word)[0] is python_valid
