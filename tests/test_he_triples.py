"""HE preprocessing: dealer-free Beaver tuples in Z_2^64 from real SEAL/BFV ciphertexts.

Fast tests drive two separate :class:`HeParty` objects that share nothing but
the bytes on a channel; the slow test runs CrypTen in 2 real processes with
the ``"HE"`` provider and compares it with the dealer (TFP) path.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tenseal.sealapi as seal

from collab.errors import BadInput, InternalError, ProtocolViolation
from collab.he import BfvParams, BfvSuite, HeParty, QueueChannel, TripleGenerator, run_pair
from collab.he.bfv import Rng, coefficients, crt_mod_2_64, limbs_mod, mulmod
from collab.he.lookup import EncryptedTable
from collab.he.table_cache import TableCache
from collab.he.triples import MatmulPlan, mask_bits, pack, plan_matmul, unpack

U64 = np.uint64
ROOT = Path(__file__).resolve().parents[1]


def add(*xs: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        out = np.zeros(np.broadcast_shapes(*(x.shape for x in xs)), dtype=U64)
        for x in xs:
            out = out + x.astype(U64)
        return out


def sub(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return x.astype(U64) - y.astype(U64)


def mul(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return x.astype(U64) * y.astype(U64)


def mm(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.matmul(x.astype(U64), y.astype(U64))


@pytest.fixture(scope="module")
def suite() -> BfvSuite:
    return BfvSuite()


@pytest.fixture(scope="module")
def parties(suite: BfvSuite) -> tuple[HeParty, HeParty]:
    a, b = HeParty(suite), HeParty(BfvSuite())
    a.meet(b.hello())
    b.meet(a.hello())
    return a, b


def beaver(op, x, y, triple0, triple1):  # type: ignore[no-untyped-def]
    """Multiply secret-shared x, y with a triple exactly as CrypTen does, in Z_2^64."""
    (a0, b0, c0), (a1, b1, c1) = triple0, triple1
    rng = Rng()
    x0 = rng.uint64(x.shape)
    y0 = rng.uint64(y.shape)
    x1, y1 = sub(x, x0), sub(y, y0)
    eps = add(sub(x0, a0), sub(x1, a1))  # opened x - a
    delta = add(sub(y0, b0), sub(y1, b1))  # opened y - b
    z0 = add(c0, op(eps, b0), op(a0, delta), op(eps, delta))
    z1 = add(c1, op(eps, b1), op(a1, delta))
    return add(z0, z1)


# ---------------------------------------------------------------------- arithmetic helpers


def test_crt_recombination_is_exact_up_to_the_full_crt_range(suite: BfvSuite) -> None:
    values = [random.randrange(suite.modulus) for _ in range(2000)] + [0, 1, suite.modulus - 1]
    residues = [np.array([v % p for v in values], dtype=U64) for p in suite.primes]
    got = crt_mod_2_64(residues, suite.primes)
    assert [int(g) for g in got] == [v % 2**64 for v in values]


def test_mulmod_and_limb_reduction_match_python_integers(suite: BfvSuite) -> None:
    rng = Rng()
    p = suite.primes[2]
    a, b = rng.residues_below(3000, p), rng.residues_below(3000, p)
    a[:2], b[:2] = p - 1, p - 1
    assert [int(v) for v in mulmod(a, b, p)] == [int(x) * int(y) % p for x, y in zip(a, b)]
    limbs = rng.limbs(3000, 179)
    ints = [int(limbs[0, i]) | int(limbs[1, i]) << 64 | int(limbs[2, i]) << 128 for i in range(3000)]
    assert max(ints) < 2**179
    assert [int(v) for v in limbs_mod(limbs, p)] == [v % p for v in ints]


def test_crt_range_leaves_40_bits_of_masking_for_1536_long_inner_sums(suite: BfvSuite) -> None:
    bits = mask_bits(suite)
    assert suite.modulus > 2**bits + 2048 * 2**128  # value + mask never wraps the CRT range
    assert bits - math.log2(1536 * 2**128) >= 40  # FFN down-projection inner sum
    assert bits - 128 >= 40 + 10


# ---------------------------------------------------------------------- exactness


def test_elementwise_triples_multiply_shared_values_bit_for_bit() -> None:
    (t0, t1) = run_pair("mul", (3, 1, 5), (1, 4, 5))  # broadcasting like torch.mul
    rng = Rng()
    x, y = rng.uint64((3, 1, 5)), rng.uint64((1, 4, 5))
    x[0, 0, 0], y[0, 0, 0] = U64(2**64 - 1), U64(2**64 - 1)  # extreme ring elements
    z = beaver(mul, x, y, t0, t1)
    assert z.shape == (3, 4, 5)
    assert np.array_equal(z, mul(x, y))
    a, b, c = (add(u, v) for u, v in zip(t0, t1))
    assert np.array_equal(c, mul(a, b))


def test_matmul_triples_multiply_shared_matrices_bit_for_bit() -> None:
    (t0, t1) = run_pair("matmul", (4, 8), (8, 6))
    rng = Rng()
    x, y = rng.uint64((4, 8)), rng.uint64((8, 6))
    assert np.array_equal(beaver(mm, x, y, t0, t1), mm(x, y))


def test_batched_matmul_triples_follow_torch_matmul_shapes() -> None:
    (t0, t1) = run_pair("matmul", (2, 3, 5), (2, 5, 4))  # attention-style batch on both sides
    a, b, c = (add(u, v) for u, v in zip(t0, t1))
    assert c.shape == (2, 3, 4)
    assert np.array_equal(c, mm(a, b))
    (t0, t1) = run_pair("matmul", (2, 3, 5), (5, 4))  # activations @ weight
    a, b, c = (add(u, v) for u, v in zip(t0, t1))
    assert np.array_equal(c, mm(a, b))


def test_fixed_mask_matmul_triples_reuse_the_weight_mask_and_stay_exact() -> None:
    """Two queries against one per-load mask B: each (a, c) is fresh, c = a @ B exactly, B never moves."""
    ch0, ch1 = QueueChannel.pair(timeout=120.0)
    gens = [TripleGenerator(HeParty(), ch) for ch in (ch0, ch1)]
    rng = Rng()
    b_shares = [rng.uint64((8, 6)), rng.uint64((8, 6))]
    out: list[list[tuple[np.ndarray, np.ndarray]]] = [[], []]

    def body(i: int) -> None:
        for size in ((2, 3, 8), (4, 8)):
            out[i].append(gens[i].matmul_fixed(size, b_shares[i]))

    threads = [threading.Thread(target=body, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b = add(*b_shares)
    for (a0, c0), (a1, c1) in zip(out[0], out[1]):
        a, c = add(a0, a1), add(c0, c1)
        assert np.array_equal(c, mm(a, b))
    assert out[0][0][1].shape == (2, 3, 6)
    with pytest.raises(BadInput):
        gens[0].matmul_fixed((4, 7), b_shares[0])


def _fixed_pair(b_shares: list[np.ndarray], size: tuple[int, ...]) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[TripleGenerator]]:
    ch0, ch1 = QueueChannel.pair(timeout=120.0)
    gens = [TripleGenerator(HeParty(), ch) for ch in (ch0, ch1)]
    out: list[tuple[np.ndarray, np.ndarray]] = [None, None]  # type: ignore[list-item]

    def body(i: int) -> None:
        gens[i].setup()
        out[i] = gens[i].matmul_fixed(size, b_shares[i])

    threads = [threading.Thread(target=body, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, gens


def test_owner_held_fixed_mask_runs_one_cross_term_and_stays_exact() -> None:
    """B held by one party (the other's share is zero, as for an owner-held weight): half the HE work, exact."""
    rng = Rng()
    w = rng.uint64((8, 6))
    (t0, t1), gens = _fixed_pair([w, np.zeros((8, 6), dtype=U64)], (3, 8))
    a, c = add(t0[0], t1[0]), add(t0[1], t1[1])
    assert np.array_equal(c, mm(a, w))
    (s0, s1), both = _fixed_pair([w, rng.uint64((8, 6))], (3, 8))
    fixed_bytes = lambda gs: sum(v["bytes_sent"] for g in gs for k, v in g.traffic.kinds.items()  # noqa: E731
                                 if k.startswith("matmul_fixed"))
    one_way, two_way = fixed_bytes(gens), fixed_bytes(both)
    assert one_way < 0.6 * two_way  # one offer and one reply instead of two each
    assert gens[0].traffic.counts["matmul_fixed"] == 1


class _ScriptedPeer:
    """A channel whose 'peer' answers with fixed messages (an adversarial or broken party)."""

    def __init__(self, replies: list[bytes]) -> None:
        self.replies = list(replies)

    def exchange(self, payload: bytes) -> bytes:
        return self.replies.pop(0)


def test_a_peer_offering_against_a_zero_mask_is_a_protocol_violation(parties: tuple[HeParty, HeParty]) -> None:
    a, b = parties
    gen = TripleGenerator(a, _ScriptedPeer([b"\x00", b"unexpected offer"]))
    gen._met = True  # keys already exchanged (the fixture's parties met)
    with pytest.raises(ProtocolViolation):
        gen.matmul_fixed((2, 8), np.zeros((8, 6), dtype=U64))


def test_batched_requests_share_ciphertexts_and_stay_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    from collab.he import batch
    from collab.he.batch import Request

    reqs = [Request("mul", ((3, 1, 5), (1, 4, 5))), Request("square", ((6,),)), Request("b2a", ((300,),)),
            Request("binary", ((2, 3), (3,))), Request("matmul", ((2, 3, 4, 5), (2, 3, 5, 4))),
            Request("matmul", ((4, 5), (5, 2)))] + [Request("mul", ((7,), (7,)))] * 20
    monkeypatch.setattr(batch, "MAX_SLOTS", 400)  # several slot batches, one request larger than a batch
    t0, t1 = run_pair("batched", reqs)
    for req, s0, s1 in zip(reqs, t0, t1):
        if req.kind == "binary":
            x, y, z = (u ^ v for u, v in zip(s0, s1))
            assert np.array_equal(z, x & y)
            continue
        v = [add(u, w) for u, w in zip(s0, s1)]
        if req.kind == "mul":
            assert np.array_equal(v[2], mul(v[0], v[1]))
        elif req.kind == "square":
            assert np.array_equal(v[1], mul(v[0], v[0]))
        elif req.kind == "b2a":
            bits = s0[1] ^ s1[1]
            assert set(np.unique(bits).tolist()) == {0, 1} and np.array_equal(v[0], bits)
        else:
            assert v[2].shape == mm(v[0], v[1]).shape and np.array_equal(v[2], mm(v[0], v[1]))
    with pytest.raises(BadInput):
        run_pair("batched", [Request("conv", ((3,),))])


def test_batching_many_small_requests_needs_far_fewer_round_trips() -> None:
    from collab.he.batch import Request

    ch0, ch1 = QueueChannel.pair(timeout=120.0)
    gens = [TripleGenerator(HeParty(), ch) for ch in (ch0, ch1)]
    reqs = [Request("mul", ((16,), (16,)))] * 12 + [Request("binary", ((4,), (4,)))] * 12

    def body(i: int) -> None:
        gens[i].setup()
        gens[i].batched(reqs)

    threads = [threading.Thread(target=body, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kinds = gens[0].traffic.kinds
    assert kinds["slot batch"]["round_trips"] == 2 and kinds["binary batch"]["round_trips"] == 2  # not 24 + 24
    assert gens[0].traffic.counts["mul"] == 12 and gens[0].traffic.counts["binary"] == 12


def test_long_inner_dimension_is_split_into_separately_masked_groups(suite: BfvSuite) -> None:
    plan = plan_matmul(1, 5000, 1, suite)
    assert plan.groups >= 2  # 5000 products of 128 bits would leave < 40 bits of mask
    assert plan.group * plan.kw <= 2 ** (mask_bits(suite) - 128 - 40)
    (t0, t1) = run_pair("matmul", (1, 5000), (5000, 1))
    a, b, c = (add(u, v) for u, v in zip(t0, t1))
    assert np.array_equal(c, mm(a, b))


def test_every_block_plan_shape_stays_exact(parties: tuple[HeParty, HeParty]) -> None:
    """Row blocks sharing each answerer block (nb > 1), several masked groups, ragged edges and zero blocks
    of the answerer's matrix (skipped products): every plan gives the exact product mod 2^64."""
    a, b = parties
    rng = np.random.default_rng(7)
    x = rng.integers(0, 2**64, size=(5, 40), dtype=U64, endpoint=False)
    y = rng.integers(0, 2**64, size=(40, 7), dtype=U64, endpoint=False)
    y[8:16, :] = 0  # a whole zero block of y for kw = 8
    for nw, kw, mw, group in ((2, 8, 3, 2), (1, 16, 7, 1), (5, 40, 7, 1), (3, 8, 2, 5)):
        plan = MatmulPlan(5, 40, 7, nw, kw, mw, group)
        reply, share = b.answer_matmul(a.offer_matmul(x, plan), y, plan)
        assert np.array_equal(add(a.finish_matmul(reply, plan), share), mm(x, y)), plan


def test_the_planner_reuses_answerer_blocks_where_their_transforms_dominate(suite: BfvSuite) -> None:
    """The embedding's (32, 8192) @ (8192, 384) cross term: each answerer block (an NTT per block) serves
    several row blocks, without more offered ciphertexts (1 MB each) than the plan that ignored it (256)."""
    plan = plan_matmul(32, 8192, 384, suite)
    nb, kb, mb = plan.blocks
    assert nb > 1 and nb * kb <= 256
    assert plan.nw * plan.kw * plan.mw + plan.kw - 1 <= suite.n


def test_a_helper_process_answers_half_the_columns_exactly_and_a_dead_one_costs_only_time(
    parties: tuple[HeParty, HeParty], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answerer hands half the column blocks to a second process (the other party only waits); the
    replies are bit-exact either way, and a helper killed mid-answer or failing leaves its columns to the
    party itself, with a fresh helper for the next request."""
    from collab.he import helper as helpers

    a, b = parties
    rng = np.random.default_rng(11)
    x = rng.integers(0, 2**64, size=(6, 64), dtype=U64, endpoint=False)
    y = rng.integers(0, 2**64, size=(64, 9), dtype=U64, endpoint=False)
    plan = MatmulPlan(6, 64, 9, 3, 16, 3, 2)  # 2 row blocks, 4 inner blocks in 2 groups, 3 column blocks
    offer, want = a.offer_matmul(x, plan), mm(x, y)
    helper = helpers.AnswerHelper(b.suite.params)
    try:
        reply, share = b.answer_matmul(offer, y, plan, helper)
        assert np.array_equal(add(a.finish_matmul(reply, plan), share), want)
        first = helper._proc
        assert first is not None and first.poll() is None  # it answered and waits for more

        submit = helpers.AnswerHelper.submit

        def submit_then_die(self: helpers.AnswerHelper, *args: object) -> None:
            submit(self, *args)
            assert self._proc is not None
            self._proc.kill()

        monkeypatch.setattr(helpers.AnswerHelper, "submit", submit_then_die)
        reply, share = b.answer_matmul(offer, y, plan, helper)
        assert np.array_equal(add(a.finish_matmul(reply, plan), share), want)
        assert helper._proc is None  # ended; the next request starts another
        monkeypatch.setattr(helpers.AnswerHelper, "submit", submit)
        reply, share = b.answer_matmul(offer, y, plan, helper)
        assert np.array_equal(add(a.finish_matmul(reply, plan), share), want)
        assert helper._proc is not None and helper._proc.pid != first.pid
    finally:
        helper.close()
    monkeypatch.setenv(helpers.ENV_HELPER, "0")
    assert not helpers.wanted(10_000)
    monkeypatch.delenv(helpers.ENV_HELPER)
    assert not helpers.wanted(helpers.MIN_PRODUCTS - 1)


def test_owner_held_matmuls_use_the_helper_and_two_sided_ones_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a party answering alone (the peer offered and waits) hands columns to a helper."""
    from collab.he import helper as helpers

    used: list[int] = []
    answer = HeParty.answer_matmul

    def spy(self: HeParty, offer: bytes, y: np.ndarray, plan: MatmulPlan, helper: object = None) -> object:
        used.append(helper is not None)
        return answer(self, offer, y, plan, None)  # the helper itself is covered above

    monkeypatch.setattr(HeParty, "answer_matmul", spy)
    monkeypatch.setattr(helpers, "MIN_PRODUCTS", 1)
    run_pair("matmul", (4, 8), (8, 3))
    assert used == [False, False]
    used.clear()
    w = Rng().uint64((8, 3))
    (t0, t1), _ = _fixed_pair([w, np.zeros((8, 3), dtype=U64)], (4, 8))
    assert used == [True] and np.array_equal(add(t0[1], t1[1]), mm(add(t0[0], t1[0]), w))


def test_square_binary_and_b2a_tuples_are_exact() -> None:
    (r0, q0), (r1, q1) = run_pair("square", (6,))
    assert np.array_equal(add(q0, q1), mul(add(r0, r1), add(r0, r1)))
    (a0, b0, c0), (a1, b1, c1) = run_pair("binary", (5,), (5,))
    assert np.array_equal((a0 ^ a1) & (b0 ^ b1), c0 ^ c1)
    (x0, y0), (x1, y1) = run_pair("b2a_bits", (300,))
    bits = y0 ^ y1
    assert set(np.unique(bits).tolist()) == {0, 1}
    assert np.array_equal(add(x0, x1), bits)


def test_all_zero_operands_are_handled(parties: tuple[HeParty, HeParty]) -> None:
    a, b = parties
    zeros = np.zeros(70, dtype=U64)
    reply, s = b.answer_bits(a.offer_bits(zeros), zeros)  # SEAL refuses ct * 0: a fresh Enc(0) stands in
    assert np.array_equal(a.finish_bits(reply, 70) ^ s, zeros)
    x = np.arange(70, dtype=U64)
    reply, share_b = b.answer_slots(a.offer_slots(x), zeros)
    assert np.array_equal(add(a.finish_slots(reply, 70), share_b), zeros)


# ---------------------------------------------------------------------- what each party sees


def test_each_partys_shares_alone_look_uniform() -> None:
    (a0, b0, c0), _ = run_pair("mul", (4096,), (4096,))
    for share in (a0, c0):
        bits = ((share.reshape(-1, 1) >> np.arange(64, dtype=U64)) & U64(1)).astype(float)
        freq = bits.mean(axis=0)  # per bit position, 4096 draws: sd 0.0078
        assert np.all(np.abs(freq - 0.5) < 0.05), freq


def test_offers_travel_seeded_at_half_a_ciphertexts_bytes(parties: tuple[HeParty, HeParty]) -> None:
    """A secret-key ciphertext's c1 is uniform: the offer carries the seed it came from, the peer expands it
    into a fresh top-level 2-component ciphertext that decrypts to what was encrypted."""
    a, b = parties
    coeffs = np.arange(a.suite.n, dtype=U64) % 1000
    offer = a.encrypt(0, a.suite.coeff_plaintext(coeffs, 0))
    full = seal.Ciphertext()
    a._enc[0].encrypt_symmetric(a.suite.coeff_plaintext(coeffs, 0), full)
    assert len(offer) < 0.51 * len(a.suite.dumps(full))
    ct = b.suite.load_offer(0, offer)  # the peer's view: parsed, top-level, fresh
    assert ct.size() == 2 and not ct.is_transparent()
    pt = seal.Plaintext()
    a._dec[0].decrypt(ct, pt)
    assert np.array_equal(coefficients(pt, np.arange(a.suite.n)), coeffs)


def test_offerer_receives_only_ciphertexts_that_decrypt_to_masked_values(parties: tuple[HeParty, HeParty]) -> None:
    a, b = parties
    x = np.full(64, 2**64 - 1, dtype=U64)
    seen: dict[str, list[int]] = {}
    for label, y in (("y=0", np.zeros(64, dtype=U64)), ("y=max", np.full(64, 2**64 - 1, dtype=U64))):
        reply, _ = b.answer_slots(a.offer_slots(x), y)
        blobs = unpack(reply)
        # Structure: everything A gets is a valid 2-component ciphertext under its own key.
        cts = [a.suite.load_ciphertext(k, blob) for k, blob in enumerate(blobs)]
        assert all(ct.size() == 2 for ct in cts)
        vals = []
        for k, blob in enumerate(blobs):
            pt = a.open_reply(k, blob)
            vals.append(np.asarray(a.suite.encoders[k].decode_uint64(pt)[:64], dtype=U64))
        # What A decrypts is x*y + r as an integer in [0, 2^179 + 2^128): recombine fully.
        full = [sum(int(v[i]) * (a.suite.modulus // p) * pow(a.suite.modulus // p, -1, p) for v, p in
                    zip(vals, a.suite.primes)) % a.suite.modulus for i in range(64)]  # fmt: skip
        assert all(v < 2 ** mask_bits(a.suite) + 2**128 for v in full)
        seen[label] = full
    # The product (0 or ~2^128) is invisible next to a 179-bit mask: both look alike at the top.
    for full in seen.values():
        top = [v >> (mask_bits(a.suite) - 8) for v in full]
        assert len(set(top)) > 32  # 64 draws over 256 values
        assert 2**170 < float(np.mean([float(v) for v in full])) < 2**179


def test_matmul_replies_hide_every_coefficient_not_only_the_outputs(parties: tuple[HeParty, HeParty]) -> None:
    """Outputs carry 179-bit masks (exact after CRT); the partial sums elsewhere are uniform over Z_M."""
    a, b = parties
    plan = plan_matmul(2, 8, 3, a.suite)
    x, y = np.full((2, 8), 2**64 - 1, dtype=U64), np.full((8, 3), 2**64 - 1, dtype=U64)
    reply, share_b = b.answer_matmul(a.offer_matmul(x, plan), y, plan)
    assert np.array_equal(add(a.finish_matmul(reply, plan), share_b), mm(x, y))
    blobs, M = unpack(reply), a.suite.modulus
    pts = [a.open_reply(k, blob) for k, blob in enumerate(blobs)]  # one reply per prime
    coeff = lambda pt, i: pt[i] if i < pt.coeff_count() else 0  # noqa: E731
    full = [sum(coeff(pt, i) * (M // p) * pow(M // p, -1, p) for pt, p in zip(pts, a.suite.primes)) % M
            for i in range(0, a.suite.n, 97)]  # fmt: skip
    outputs = set(a._positions(plan).ravel().tolist())
    others = [v for i, v in zip(range(0, a.suite.n, 97), full) if i not in outputs]
    assert len(others) > 100 and len({v >> 172 for v in others}) > 64  # top bits spread over all of Z_M
    assert sum(v > 2 ** mask_bits(a.suite) for v in others) > len(others) // 4  # beyond the output masks' range


# ---------------------------------------------------------------------- noise flooding


def test_flooded_reply_decrypts_correctly_with_a_checked_noise_budget(parties: tuple[HeParty, HeParty]) -> None:
    a, b = parties
    rng = Rng()
    x, y = rng.uint64(100), rng.uint64(100)
    a.last_budgets.clear()
    reply, share_b = b.answer_slots(a.offer_slots(x), y)
    share_a = a.finish_slots(reply, 100)
    assert np.array_equal(add(share_a, share_b), mul(x, y))
    assert a.last_budgets and all(bits > 0 for bits in a.last_budgets)


@pytest.mark.parametrize("which", ["main", "bits"])
def test_flooding_adds_at_least_40_bits_of_noise_and_still_decrypts(suite: BfvSuite, which: str) -> None:
    """Both suites: the CRT suite of the arithmetic tuples and the N=8192 suite of the AND bits."""
    from collab.he.triples import BIT_PARAMS

    if which == "bits":
        suite = BfvSuite(BIT_PARAMS)
        assert suite.n == 8192 and sum(BIT_PARAMS.coeff_bits) <= 218  # SEAL's 128-bit bound at N = 8192
    ctx, k = suite.contexts[0], 0
    keygen = seal.KeyGenerator(ctx)
    pk = seal.PublicKey()
    keygen.create_public_key(pk)
    enc, dec = seal.Encryptor(ctx, pk), seal.Decryptor(ctx, keygen.secret_key())
    ev, encoder = suite.evaluators[k], suite.encoders[k]
    p = suite.primes[k]
    x, y = Rng().residues_below(suite.n, p), Rng().residues_below(suite.n, p)
    pt_x, pt_y, ct = seal.Plaintext(), seal.Plaintext(), seal.Ciphertext()
    encoder.encode(x.tolist(), pt_x)
    encoder.encode(y.tolist(), pt_y)
    enc.encrypt(pt_x, ct)
    ev.multiply_plain_inplace(ct, pt_y)
    before = dec.invariant_noise_budget(ct)
    ev.add_inplace(ct, suite.flood_ciphertext(k, ct.parms_id(), suite.flood_bits(suite.n), Rng()))
    after = dec.invariant_noise_budget(ct)
    assert before - after >= 40
    assert after > 0
    assert after >= suite.flood_margin_bits - 4  # the analytic room is what SEAL measures
    out = seal.Plaintext()
    dec.decrypt(ct, out)
    assert np.array_equal(np.asarray(encoder.decode_uint64(out), dtype=U64), mulmod(x, y, p))


def test_parameters_without_room_for_flooding_are_refused() -> None:
    with pytest.raises(InternalError, match="flooding"):
        BfvSuite(BfvParams(poly_degree=8192, coeff_bits=(60, 60, 60)))


# ---------------------------------------------------------------------- adversarial / malformed input


def test_malformed_and_mismatched_messages_are_protocol_violations(parties: tuple[HeParty, HeParty]) -> None:
    a, b = parties
    offer = a.offer_slots(np.arange(10, dtype=U64))
    with pytest.raises(ProtocolViolation):
        unpack(offer[:-5])
    with pytest.raises(ProtocolViolation):
        b.answer_slots(pack(unpack(offer)[:2]), np.arange(10, dtype=U64))  # a prime missing
    with pytest.raises(ProtocolViolation):
        b.answer_slots(pack([b"\x00" * 64] * 3), np.arange(10, dtype=U64))  # not SEAL objects
    with pytest.raises(ProtocolViolation):
        a.meet(pack([b"garbage"]))
    # A slot-wise reply where an AND reply is expected decrypts to non-bits or has the wrong shape.
    reply, _ = b.answer_slots(offer, np.full(10, 12345, dtype=U64))
    with pytest.raises(ProtocolViolation):
        a.finish_bits(reply, 10)
    with pytest.raises(ProtocolViolation):
        a.finish_bits(pack(unpack(reply)[:1]), 10)
    # A mod-switched (lower-level) ciphertext offered as fresh would void the flooding analysis.
    with pytest.raises(ProtocolViolation, match="top-level"):
        a.answer_slots(reply, np.arange(10, dtype=U64))


def test_a_silent_peer_times_out_instead_of_hanging() -> None:
    from collab.errors import Unavailable

    ch0, _ = QueueChannel.pair(timeout=0.2)
    gen = TripleGenerator(HeParty(), ch0)
    with pytest.raises(Unavailable):
        gen.setup()


def test_mismatched_matmul_shapes_are_bad_input() -> None:
    ch0, ch1 = QueueChannel.pair(timeout=5)
    gen = TripleGenerator(HeParty(), ch0)
    with pytest.raises(BadInput):
        gen.matmul((2, 3), (4, 5))
    del ch1


def test_provider_registers_as_HE_and_needs_no_third_party() -> None:
    from collab.he.provider import HomomorphicTupleProvider, install_provider  # imports the compat shim first

    import crypten.mpc
    from crypten.config import cfg

    provider = install_provider()
    assert getattr(crypten.mpc, "__SUPPORTED_PROVIDERS")["HE"] is provider
    assert isinstance(provider, HomomorphicTupleProvider)
    with cfg.temp_override({"mpc.provider": "HE"}):
        assert crypten.mpc.get_default_provider() is provider
        assert not crypten.mpc.ttp_required()
    with pytest.raises(BadInput):
        provider.generate_additive_triple((2, 2), (2, 2), "conv2d")


# ---------------------------------------------------------------------- CrypTen, 2 real processes


def _run_selfcheck(provider: str, tmp: Path) -> dict:
    from collab.mpc.parties import free_port

    master = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "collab.he.provider", "--rank", str(r), "--master", master,
             "--provider", provider, "--out", str(tmp / f"{provider}{r}.json"), "--timeout", "120"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        for r in (0, 1)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out.decode(errors="replace")[-3000:]
    return {r: json.loads((tmp / f"{provider}{r}.json").read_text()) for r in (0, 1)}


@pytest.mark.slow
def test_crypten_with_the_HE_provider_matches_the_dealer_path_in_two_processes(tmp_path: Path) -> None:
    import torch

    from collab.he.provider import selfcheck_inputs

    he, tfp = _run_selfcheck("HE", tmp_path), _run_selfcheck("TFP", tmp_path)
    data = selfcheck_inputs()
    # Precision-0 ring products are exact: identical on both paths and equal to Z_2^64 arithmetic.
    xi = data["xi"].numpy().view(np.uint64)
    wi = data["wi"].numpy().view(np.uint64)
    expected = {"ring_mm": mm(xi, wi), "ring_mul": mul(xi[:, :6], wi[:4, :])}
    for name, want in expected.items():
        got = np.array([[int(v) for v in row] for row in he[1]["ring"][name]], dtype=np.int64).view(U64)
        assert np.array_equal(got, want), name
        assert he[1]["ring"][name] == tfp[1]["ring"][name]
    # Fixed-point results agree with the dealer path and with plaintext (up to 2-party truncation).
    xw = data["x"] @ data["w"]
    plain = {"xw": xw, "z": xw * data["y"], "relu": xw.relu()}
    for name, want in plain.items():
        got_he, got_tfp = torch.tensor(he[1]["results"][name]), torch.tensor(tfp[1]["results"][name])
        assert torch.allclose(got_he, got_tfp, atol=2e-3), name
        assert torch.allclose(got_he, want, atol=5e-3), name
    # The HE path really ran the offline protocol in both processes; the dealer path did not.
    for r in (0, 1):
        offline = he[r]["offline"]
        assert offline["bytes_sent"] > 1_000_000 and offline["seconds"] > 0
        assert {"matmul", "mul", "binary", "b2a"} <= set(offline["counts"])
        assert he[r]["online_he_bytes"] == 0  # offline/online split: the online run used cached tuples only
        assert tfp[r]["offline"]["bytes_sent"] == 0
    # The online phase is the same protocol: same opened bytes.
    assert he[1]["online_bytes"] == tfp[1]["online_bytes"]


def test_run_pair_parties_exchange_nothing_but_bytes() -> None:
    seen: list[type] = []
    ch0, ch1 = QueueChannel.pair()
    original = QueueChannel.exchange

    def spy(self: QueueChannel, payload: bytes) -> bytes:
        seen.append(type(payload))
        return original(self, payload)

    QueueChannel.exchange = spy  # type: ignore[method-assign]
    try:
        gens = [TripleGenerator(HeParty(), ch) for ch in (ch0, ch1)]
        out: list[object] = [None, None]
        threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, gens[i].mul((8,), (8,)))) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        QueueChannel.exchange = original  # type: ignore[method-assign]
    assert seen and set(seen) == {bytes}
    (a0, b0, c0), (a1, b1, c1) = out  # type: ignore[misc]
    assert np.array_equal(add(c0, c1), mul(add(a0, a1), add(b0, b1)))


# ---------------------------------------------------------------------- oblivious row lookup


def _lookup_pair(table: np.ndarray | EncryptedTable, ids: np.ndarray, cache: TableCache | None = None,
                 timeout: float = 120.0) -> tuple[np.ndarray, np.ndarray, list[TripleGenerator]]:
    """The owner (its encrypted table) and the client (ids, its ``cache``) as two threads; returns both shares
    (an exception raised by a party in its place) and the generators."""
    encrypted = table if isinstance(table, EncryptedTable) else EncryptedTable(table)
    ch0, ch1 = QueueChannel.pair(timeout=timeout)
    gens = [TripleGenerator(HeParty(), ch) for ch in (ch0, ch1)]
    out: list[np.ndarray] = [None, None]  # type: ignore[list-item]
    args = [(encrypted, None, ids.size, encrypted.shape), (None, ids, ids.size, encrypted.shape, cache)]

    def body(i: int) -> None:
        try:
            out[i] = gens[i].lookup_rows(*args[i])  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out[i] = exc  # type: ignore[call-overload]

    threads = [threading.Thread(target=body, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out[0], out[1], gens


def test_oblivious_lookup_shares_the_chosen_rows_exactly() -> None:
    """Rows at both ends of every ciphertext, repeated ids, any 64-bit word: the shares add up to table[ids]."""
    from collab.he import lookup

    rng = Rng()
    rows, width = 400, 100  # 163 rows per ciphertext: three ciphertexts, the last one partly empty
    assert lookup.rows_per_ciphertext(16384, width) == 163
    table = rng.uint64((rows, width))
    table[7] = 2**64 - 1
    ids = np.array([0, 162, 163, 399, 7, 7, 325, 326], dtype=np.int64)
    owner, client, gens = _lookup_pair(table, ids)
    assert np.array_equal(add(owner, client), table[ids])
    for share in (owner, client):  # each share alone is uniform, not the rows
        assert not np.any(np.all(share == table[ids], axis=1))
    # The owner sends every table ciphertext (the client must not choose which), the client one reply per id.
    (kind,) = [k for k in gens[0].traffic.kinds if k.startswith("lookup")]
    assert kind == "lookup (400x100)[8]"
    sent = [g.traffic.kinds[kind]["bytes_sent"] for g in gens]
    assert sent[0] > 2 * 3 * 10**6 and sent[1] < 2 * ids.size * 10**6


def test_one_encrypted_table_serves_many_sessions_with_fresh_masks() -> None:
    """Encrypted once per model load, the table serves new session keys and new clients, exactly, each time."""
    table = Rng().uint64((300, 64))
    encrypted = EncryptedTable(table)
    ids = np.array([3, 299, 3], dtype=np.int64)
    first, second = _lookup_pair(encrypted, ids), _lookup_pair(encrypted, ids)
    for owner, client, _ in (first, second):
        assert np.array_equal(add(owner, client), table[ids])
    assert not np.array_equal(first[1], second[1])  # the client's masks are fresh per query


def test_what_the_owner_decrypts_is_the_row_under_a_104_bit_mask_and_nothing_else() -> None:
    """Outputs are row + s with s < 2^104 (exact after CRT); every other coefficient is uniform mod p0·p1."""
    from collab.he import lookup

    width = 64
    encrypted = EncryptedTable(np.full((300, width), 2**64 - 1, dtype=U64))
    primes = encrypted.suite.primes[:2]
    M = primes[0] * primes[1]
    blobs = dict(enumerate(b for message in encrypted.messages for b in unpack(message)))
    ids = np.array([5, 299], dtype=np.int64)
    replies, share = lookup.select_rows(HeParty(), encrypted.hello, blobs, ids, 300, width)
    assert np.array_equal(add(encrypted.open(replies, ids.size), share), np.full((2, width), 2**64 - 1, dtype=U64))
    pts = [encrypted.party.open_reply(k, replies[k * ids.size]) for k in range(2)]  # id 5, as the owner decrypts
    sampled = [coefficients(pt, np.arange(0, encrypted.suite.n, 61)) for pt in pts]
    full = [sum(c * (M // p) * pow(M // p, -1, p) for c, p in zip(cs, primes)) % M for cs in zip(*sampled)]
    outputs, others = full[:2], full[2:]  # coefficients 0 and 61 hold the row, the rest other rows' garbage
    assert all(2**64 <= v < 2**104 + 2**64 for v in outputs)
    assert len({v >> 112 for v in others}) > 64 and sum(v > 2**105 for v in others) > len(others) // 2


def _owner_sent(gens: list[TripleGenerator]) -> int:
    (kind,) = [k for k in gens[0].traffic.kinds if k.startswith("lookup")]
    return int(gens[0].traffic.kinds[kind]["bytes_sent"])


def test_a_client_that_kept_the_table_is_not_sent_it_again(tmp_path: Path) -> None:
    """The second query of a load reads its rows from the client's copy: exact, and the table does not travel."""
    table = Rng().uint64((300, 64))
    encrypted, cache = EncryptedTable(table), TableCache(tmp_path / "kept")
    ids = np.array([3, 299, 150], dtype=np.int64)
    first, second = _lookup_pair(encrypted, ids, cache), _lookup_pair(encrypted, ids, cache)
    for owner, client, _ in (first, second):
        assert np.array_equal(add(owner, client), table[ids])
    assert not np.array_equal(first[1], second[1])  # fresh masks all the same
    table_bytes = sum(len(m) for m in encrypted.messages)
    # The session's key exchange is counted in both (its compressed size varies by a few bytes); beyond it
    # the second sent a digest and empty messages, not the table and its keys.
    assert _owner_sent(first[2]) - _owner_sent(second[2]) > 0.99 * (table_bytes + len(encrypted.hello))
    assert [p.name for p in (tmp_path / "kept").iterdir()] == [encrypted.digest.hex()]
    other = EncryptedTable(table)  # another model load (a new key): another digest, sent and kept
    assert other.digest != encrypted.digest
    owner, client, gens = _lookup_pair(other, ids, cache)
    assert np.array_equal(add(owner, client), table[ids]) and _owner_sent(gens) > _owner_sent(second[2]) + table_bytes
    assert {p.name for p in (tmp_path / "kept").iterdir()} == {encrypted.digest.hex(), other.digest.hex()}


def test_a_damaged_copy_is_dropped_and_the_table_sent_again(tmp_path: Path) -> None:
    table = Rng().uint64((300, 64))
    encrypted, cache = EncryptedTable(table), TableCache(tmp_path)
    ids = np.array([0, 200], dtype=np.int64)
    _lookup_pair(encrypted, ids, cache)
    sent_once = _owner_sent(_lookup_pair(encrypted, ids, cache)[2])  # from the copy: the key exchange, no table
    kept = tmp_path / encrypted.digest.hex() / "table.bin"
    kept.write_bytes(bytes(kept.stat().st_size))  # same size, every ciphertext zeroed
    owner, client, gens = _lookup_pair(encrypted, ids, cache)
    assert np.array_equal(add(owner, client), table[ids])
    assert _owner_sent(gens) - sent_once > sum(len(m) for m in encrypted.messages) // 2  # sent again ...
    assert kept.read_bytes() != bytes(kept.stat().st_size)  # ... and kept again, intact
    (tmp_path / encrypted.digest.hex() / "index.npy").unlink()  # an incomplete copy: the same
    owner, client, gens = _lookup_pair(encrypted, ids, cache)
    assert np.array_equal(add(owner, client), table[ids]) and _owner_sent(gens) - sent_once > 10**6


def test_a_copy_whose_keys_were_damaged_is_dropped_before_the_client_answers(tmp_path: Path) -> None:
    """The keys are not per-ciphertext hashed: the table's digest covers them, so a read checks them too."""
    table = Rng().uint64((300, 64))
    encrypted, cache = EncryptedTable(table), TableCache(tmp_path)
    ids = np.array([9], dtype=np.int64)
    _lookup_pair(encrypted, ids, cache)
    keys = tmp_path / encrypted.digest.hex() / "hello.bin"
    damaged = bytearray(keys.read_bytes())
    damaged[-1] ^= 1  # always a change (overwriting with 0 was none if the byte was 0 already)
    keys.write_bytes(bytes(damaged))
    owner, client, _ = _lookup_pair(encrypted, ids, cache)
    assert np.array_equal(add(owner, client), table[ids])  # sent again, not failed on a bad key
    assert keys.read_bytes() == encrypted.hello


def test_a_table_that_does_not_match_its_digest_fails_the_lookup_and_is_not_kept(tmp_path: Path) -> None:
    encrypted = EncryptedTable(Rng().uint64((300, 64)))
    encrypted.digest = bytes(32)  # the owner names another table than the one it sends
    owner, client, _ = _lookup_pair(encrypted, np.array([1]), TableCache(tmp_path), timeout=5.0)
    assert isinstance(client, ProtocolViolation) and "does not match the digest" in str(client)
    assert isinstance(owner, Exception)  # the owner, left waiting for replies, times out
    assert list(tmp_path.iterdir()) == []  # nothing kept, no temporary left


def test_an_unwritable_cache_costs_the_copy_not_the_query(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    table = Rng().uint64((300, 64))
    owner, client, _ = _lookup_pair(EncryptedTable(table), np.array([5, 6]), TableCache(blocker / "kept"))
    assert np.array_equal(add(owner, client), table[[5, 6]])


def test_the_cache_keeps_the_most_recently_used_tables_and_sweeps_killed_writers(tmp_path: Path) -> None:
    """Eviction beyond ``keep`` by last use; a temporary copy a killed client left is removed after an hour."""
    import os
    import time

    from collab.he.table_cache import blob_hash, table_digest

    cache = TableCache(tmp_path, keep=2)
    digests = []
    for i in range(3):
        blobs, hello = [bytes([i]) * 100, bytes([i]) * 50], b"keys%d" % i
        digest = table_digest(hello, b"".join(blob_hash(b) for b in blobs))
        writer = cache.writer(digest)
        for b in blobs:
            writer.add(b)
        assert writer.commit(hello)
        digests.append(digest)
        if i == 1:  # the first table is used again after the second was written: the second is the oldest
            past = time.time() - 100
            os.utime(tmp_path / digests[1].hex(), (past, past))
            assert cache.rows(digests[0], {1}, 2) == (b"keys0", {1: bytes([0]) * 50})
    assert {p.name for p in tmp_path.iterdir()} == {digests[0].hex(), digests[2].hex()}
    left = tmp_path / ".incoming-killed"
    left.mkdir()
    cache.evict()
    assert left.exists()  # it may still be receiving
    os.utime(left, (time.time() - 7200, time.time() - 7200))
    cache.evict()
    assert not left.exists()
    assert cache.rows(digests[2], {0}, 3) is None  # asked for a table of another size: dropped, not misread
    assert not (tmp_path / digests[2].hex()).exists()


def test_lookup_refuses_bad_ids_before_sending_and_short_replies() -> None:
    from collab.he import lookup

    ch0, _ = QueueChannel.pair(timeout=0.2)
    gen = TripleGenerator(HeParty(), ch0)
    for bad in (np.array([0, 400]), np.array([-1]), np.array([1.5])):
        with pytest.raises(BadInput, match=r"\[0, 400\)"):
            gen.lookup_rows(None, bad, bad.size, (400, 100))
    assert gen.traffic.messages == 0  # refused before the key exchange: the peer is never left waiting
    encrypted = EncryptedTable(np.zeros((400, 99), dtype=U64))
    with pytest.raises(InternalError):
        gen.lookup_rows(encrypted, None, 2, (400, 100))
    with pytest.raises(ProtocolViolation, match="expected 4"):
        encrypted.open([b""] * 3, 2)
    with pytest.raises(ProtocolViolation, match="keys"):
        lookup.select_rows(HeParty(), pack([b"x"]), {}, np.array([1]), 400, 99)
    with pytest.raises(BadInput):
        lookup.rows_per_ciphertext(16384, 16385)


def test_attention_heads_share_ciphertexts_as_one_block_diagonal_matmul_and_stay_exact() -> None:
    """12 heads of (32x32)@(32x32), as the encoder's attention at seq 32: one block-diagonal cross term per
    direction, exact per head, with fewer replies (round trips) than one matmul per head."""
    from collab.he.triples import block_diagonal_pays

    assert block_diagonal_pays(12, 32, 32, 32, BfvSuite()) and not block_diagonal_pays(12, 128, 32, 128, BfvSuite())
    ch0, ch1 = QueueChannel.pair(timeout=120.0)
    gens = [TripleGenerator(HeParty(), ch) for ch in (ch0, ch1)]
    out: list[tuple[np.ndarray, ...]] = [(), ()]

    def body(i: int) -> None:
        gens[i].setup()  # the key exchange apart, so the matmul's own round trips are counted
        out[i] = gens[i].matmul((1, 12, 32, 32), (1, 12, 32, 32))

    threads = [threading.Thread(target=body, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a, b, c = (add(u, v) for u, v in zip(*out))
    assert c.shape == (1, 12, 32, 32) and np.array_equal(c, mm(a, b))
    (kind,) = [k for k in gens[0].traffic.kinds if k.startswith("matmul")]
    assert gens[0].traffic.kinds[kind]["round_trips"] == 2  # one offer and one reply exchange, not 2 per head
