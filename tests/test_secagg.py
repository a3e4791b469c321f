"""Secure aggregation: exact masked sums, dropout recovery, and the adversaries it must stop.

Adversaries are explicit: a server that fakes a dropout to unmask someone, a
server that forges or re-routes keys and shares, a share holder that lies,
and a claimer that reveals a wrong seed to the verifier.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from collab import fixedpoint as fx
from collab.errors import EXIT_UNAVAILABLE, BadInput, CollabError, ProtocolViolation, Unauthorized
from collab.secagg import (
    ROUNDS,
    AggregateResult,
    AggregationWitness,
    ConsistencyBroadcast,
    ForwardedShares,
    KeyAdvertisement,
    KeyBroadcast,
    MaskedInput,
    MaskTerm,
    Member,
    RoundConfig,
    SecAggParticipant,
    SecAggServer,
    SeedCommitment,
    ShareKeys,
    SurvivorList,
    TensorLayout,
    TooFewSurvivors,
    UnmaskResponse,
    decode,
    encode,
    run_local_round,
    shamir,
    verify_seed_commitments,
)
from collab.secagg.messages import EncryptedShare

ACCOUNTS: dict[int, LocalAccount] = {i: Account.from_key(keccak(b"secagg-test-%d" % i)) for i in range(1, 21)}


def make_config(
    n: int,
    threshold: int,
    length: int,
    *,
    frac_bits: int = 16,
    neighbours: int | None = None,
    seed: bytes = b"\x07" * 32,
) -> RoundConfig:
    members = tuple(Member(i, ACCOUNTS[i].address) for i in range(1, n + 1))
    return RoundConfig(keccak(b"round" + seed), members, threshold, length, frac_bits, neighbours, seed)


def wrapping_sum(vectors: list[np.ndarray]) -> np.ndarray:
    """The plain sum in Z_2^64, by Python integers (independent of the library's numpy path)."""
    return np.array([fx.wrap(sum(int(v[i]) for v in vectors)) for i in range(len(vectors[0]))], dtype=np.int64)


class Round:
    """Drive one round by hand so tests can play the server's part, honestly or not."""

    def __init__(self, config: RoundConfig) -> None:
        self.config = config
        self.server = SecAggServer(config)
        self.parts = {u: SecAggParticipant(config, u, ACCOUNTS[u]) for u in config.ids}

    def through_masked(self, inputs: dict[int, np.ndarray], skip_masked: tuple[int, ...] = ()) -> None:
        for p in self.parts.values():
            self.server.receive_advertisement(p.advertise_keys())
        for u, p in self.parts.items():
            self.server.receive_shares(p.share_keys(self.server.key_broadcast(u)))
        for u, p in self.parts.items():
            if u not in skip_masked:
                self.server.receive_masked_input(p.mask_input(self.server.forwarded_shares(u), inputs[u]))


def inputs_for(config: RoundConfig, rng: np.random.Generator) -> dict[int, np.ndarray]:
    return {u: encode(rng.normal(size=config.length), config.frac_bits) for u in config.ids}


# ---------------------------------------------------------------------- correctness


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # skip the slow explain phase
)
@given(
    n=st.integers(2, 10),
    length=st.integers(1, 40),
    data=st.data(),
)
def test_masked_sum_equals_plain_sum_exactly(n: int, length: int, data: st.DataObject) -> None:
    threshold = data.draw(st.integers(n // 2 + 1, n), label="threshold")
    word = st.integers(fx.INT64_MIN, fx.INT64_MAX)
    inputs = {
        u: np.array(data.draw(st.lists(word, min_size=length, max_size=length)), dtype=np.int64)
        for u in range(1, n + 1)
    }
    # Any n - t participants may drop out, each before any round.
    most = n - threshold
    quitters = data.draw(
        st.lists(st.integers(1, n), unique=True, min_size=min(1, most), max_size=most), label="quitters"
    )
    drops = {u: data.draw(st.sampled_from(ROUNDS), label=f"drop {u}") for u in quitters}
    config = make_config(n, threshold, length)
    result = run_local_round(config, ACCOUNTS, inputs, drop_before=drops)
    summed = [u for u in config.ids if drops.get(u) not in ("keys", "shares", "masked")]
    assert result.survivors == tuple(summed)
    assert result.words.tolist() == wrapping_sum([inputs[u] for u in summed]).tolist()
    verify_seed_commitments(config, result.witness)


def test_fixed_point_values_decode_to_the_float_sum() -> None:
    config = make_config(4, 3, 64, frac_bits=20)
    rng = np.random.default_rng(1)
    floats = {u: rng.normal(scale=3.0, size=64) for u in config.ids}
    result = run_local_round(config, ACCOUNTS, {u: encode(x, 20) for u, x in floats.items()})
    expected = sum(fx.from_fixed(encode(x, 20), 20) for x in floats.values())
    assert np.array_equal(result.values, expected)  # exact: the ring sum of the fixed-point words
    assert np.allclose(result.values, sum(floats.values()), atol=4 * 2.0**-20)
    assert np.array_equal(decode(result.words, 20), result.values)


# ---------------------------------------------------------------------- privacy of one masked input


def test_single_masked_input_differs_from_x_everywhere_and_looks_uniform() -> None:
    config = make_config(3, 2, 4096)
    zeros = {u: np.zeros(4096, dtype=np.int64) for u in config.ids}
    ones = {u: encode(np.ones(4096), 16) for u in config.ids}
    views = []
    for inputs in (zeros, ones):
        r = Round(config)
        r.through_masked(inputs)
        y = r.server._masked[1].words
        assert np.all(y != inputs[1])  # each word equal by chance with probability 2^-64
        views.append(y)
    for y in views:
        # The server's view of u's input is the input plus a uniform mask, whatever the input:
        # signs are balanced and every bit is set about half the time.
        assert 0.45 < np.mean(y < 0) < 0.55
        bits = (y.view(np.uint64)[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
        assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 0.05)
    assert not np.array_equal(views[0] - zeros[1], views[1] - ones[1])  # fresh masks every round


def test_unmasking_needs_the_shares() -> None:
    config = make_config(4, 3, 32)
    inputs = inputs_for(config, np.random.default_rng(2))
    r = Round(config)
    r.through_masked(inputs)
    masked_sum = fx.ring_sum_array([m.words for m in r.server._masked.values()])
    assert np.all(masked_sum != wrapping_sum(list(inputs.values())))  # the self masks do not cancel
    survivors = r.server.survivor_list()
    for u in (1, 2, 3):
        r.server.receive_consistency_signature(r.parts[u].sign_survivors(survivors))
    check = r.server.consistency_broadcast()
    for u in (1, 2):  # only two of the three needed share holders answer
        r.server.receive_unmask(r.parts[u].unmask(check))
    with pytest.raises(TooFewSurvivors):
        r.server.aggregate()


# ---------------------------------------------------------------------- dropouts and the threshold


def test_dropouts_after_masking_are_recovered_with_exactly_t_survivors() -> None:
    config = make_config(5, 3, 300)
    inputs = inputs_for(config, np.random.default_rng(3))
    result = run_local_round(config, ACCOUNTS, inputs, drop_before={2: "masked", 4: "masked"})
    assert result.survivors == (1, 3, 5) and result.dropped == (2, 4)
    assert np.array_equal(result.words, wrapping_sum([inputs[u] for u in (1, 3, 5)]))
    assert {t.kind for t in result.witness.masks} == {"self", "pair"}


def test_a_survivor_silent_in_the_last_rounds_is_still_summed() -> None:
    config = make_config(7, 4, 50)
    inputs = inputs_for(config, np.random.default_rng(4))
    result = run_local_round(config, ACCOUNTS, inputs, drop_before={1: "masked", 2: "consistency", 5: "unmask"})
    assert result.survivors == (2, 3, 4, 5, 6, 7)  # 2 and 5 sent masked inputs: their inputs count
    assert np.array_equal(result.words, wrapping_sum([inputs[u] for u in (2, 3, 4, 5, 6, 7)]))


@pytest.mark.parametrize("stage", ["keys", "shares", "masked", "consistency", "unmask"])
def test_round_aborts_below_threshold(stage: str) -> None:
    config = make_config(5, 3, 8)
    inputs = inputs_for(config, np.random.default_rng(5))
    with pytest.raises(TooFewSurvivors) as err:
        run_local_round(config, ACCOUNTS, inputs, drop_before={1: stage, 2: stage, 3: stage})
    assert isinstance(err.value, CollabError) and err.value.exit_code == EXIT_UNAVAILABLE
    assert "threshold is 3" in str(err.value)


# ---------------------------------------------------------------------- a malicious server


def test_server_faking_a_dropout_cannot_obtain_both_shares() -> None:
    config = make_config(4, 3, 16)
    r = Round(config)
    r.through_masked(inputs_for(config, np.random.default_rng(6)))  # the server holds y_4
    honest = SurvivorList(config.round_id, (1, 2, 3, 4))
    fake = SurvivorList(config.round_id, (1, 2, 3))  # claims 4 dropped, to learn s_4^SK as well
    sigs = [r.parts[u].sign_survivors(honest) for u in (1, 2, 3, 4)]
    # A participant signs one survivor list per round: the second is refused and the round aborts for it.
    with pytest.raises(ProtocolViolation, match="already signed a different survivor list"):
        r.parts[1].sign_survivors(fake)
    with pytest.raises(ProtocolViolation, match="aborted"):
        r.parts[1].unmask(ConsistencyBroadcast(config.round_id, honest.survivors, tuple(sigs)))
    # Unmasking against a list other than the one signed is refused too.
    with pytest.raises(ProtocolViolation, match="different survivor list"):
        r.parts[2].unmask(ConsistencyBroadcast(config.round_id, fake.survivors, tuple(sigs)))
    # Participant 3 answers the honest list: b_4's share, never s_4^SK's.
    resp = r.parts[3].unmask(ConsistencyBroadcast(config.round_id, honest.survivors, tuple(sigs)))
    assert 4 in dict(resp.seed_shares) and 4 not in dict(resp.key_shares)
    with pytest.raises(ProtocolViolation):
        r.parts[3].unmask(ConsistencyBroadcast(config.round_id, fake.survivors, tuple(sigs)))


def test_split_survivor_lists_fail_the_consistency_check() -> None:
    config = make_config(4, 3, 16)
    r = Round(config)
    r.through_masked(inputs_for(config, np.random.default_rng(7)))
    honest = SurvivorList(config.round_id, (1, 2, 3, 4))
    fake = SurvivorList(config.round_id, (1, 2, 3))
    sig_honest = [r.parts[u].sign_survivors(honest) for u in (3, 4)]
    sig_fake = [r.parts[u].sign_survivors(fake) for u in (1, 2)]
    # Participant 1 saw "4 dropped"; the signatures of 3 and 4 are over another list.
    with pytest.raises(ProtocolViolation, match="inconsistent lists"):
        r.parts[1].unmask(ConsistencyBroadcast(config.round_id, fake.survivors, tuple(sig_fake + sig_honest)))
    # Without them, fewer than t signatures: abort, reveal nothing.
    with pytest.raises(TooFewSurvivors):
        r.parts[2].unmask(ConsistencyBroadcast(config.round_id, fake.survivors, tuple(sig_fake)))


def test_participant_refuses_a_survivor_list_without_itself() -> None:
    config = make_config(3, 2, 4)
    r = Round(config)
    r.through_masked(inputs_for(config, np.random.default_rng(8)))
    with pytest.raises(ProtocolViolation, match="missing from the survivor list"):
        r.parts[3].sign_survivors(SurvivorList(config.round_id, (1, 2)))


def test_forged_key_advertisement_is_rejected() -> None:
    config = make_config(3, 2, 4)
    parts = {u: SecAggParticipant(config, u, ACCOUNTS[u]) for u in config.ids}
    ads = {u: p.advertise_keys() for u, p in parts.items()}
    mallory = Account.from_key(keccak(b"mallory"))
    forged_keys = os.urandom(32), os.urandom(32)
    unsigned = KeyAdvertisement(config.round_id, 2, *forged_keys, b"")
    forged = dataclasses.replace(
        unsigned, signature=bytes(mallory.sign_message(_defunct(unsigned.signed_digest(config))).signature)
    )
    server = SecAggServer(config)
    with pytest.raises(ProtocolViolation, match="bad signature on keys of participant 2"):
        server.receive_advertisement(forged)
    # A server that substitutes its own keys for participant 2's is caught by every participant.
    with pytest.raises(ProtocolViolation, match="bad signature"):
        parts[1].share_keys(KeyBroadcast(config.round_id, (ads[1], forged, ads[3])))
    # Keys signed for another round (or participant id) do not verify either.
    other = make_config(3, 2, 4, seed=b"\x08" * 32)
    replayed = SecAggParticipant(other, 2, ACCOUNTS[2]).advertise_keys()
    with pytest.raises(ProtocolViolation):
        server.receive_advertisement(dataclasses.replace(replayed, round_id=config.round_id))
    with pytest.raises(ProtocolViolation):
        server.receive_advertisement(dataclasses.replace(ads[3], sender=2))


def test_tampered_or_rerouted_share_fails_authentication() -> None:
    config = make_config(3, 2, 4)
    r = Round(config)
    for p in r.parts.values():
        r.server.receive_advertisement(p.advertise_keys())
    for u, p in r.parts.items():
        r.server.receive_shares(p.share_keys(r.server.key_broadcast(u)))
    fwd = r.server.forwarded_shares(1)
    first = fwd.shares[0]
    flipped = bytearray(first.ciphertext)
    flipped[20] ^= 1
    tampered = ForwardedShares(fwd.round_id, 1, (EncryptedShare(first.sender, 1, bytes(flipped)),) + fwd.shares[1:])
    with pytest.raises(ProtocolViolation, match="failed authentication"):
        r.parts[1].mask_input(tampered, np.zeros(4, dtype=np.int64))
    # A share sealed for participant 3, relabelled for participant 2, fails too.
    to_three = next(s for s in r.server.forwarded_shares(3).shares if s.sender == 1)
    fwd2 = r.server.forwarded_shares(2)
    rerouted = ForwardedShares(
        fwd2.round_id, 2, tuple(s for s in fwd2.shares if s.sender != 1) + (EncryptedShare(1, 2, to_three.ciphertext),)
    )
    with pytest.raises(ProtocolViolation, match="failed authentication"):
        r.parts[2].mask_input(rerouted, np.zeros(4, dtype=np.int64))


def test_a_lying_share_holder_is_caught_before_its_share_is_used() -> None:
    config = make_config(4, 3, 8)
    r = Round(config)
    r.through_masked(inputs_for(config, np.random.default_rng(9)))
    survivors = r.server.survivor_list()
    for p in r.parts.values():
        r.server.receive_consistency_signature(p.sign_survivors(survivors))
    check = r.server.consistency_broadcast()
    for u, p in r.parts.items():
        resp = p.unmask(check)
        if u == 4:
            owner, share = resp.seed_shares[0]
            bad = (int.from_bytes(share, "big") + 1).to_bytes(len(share), "big")
            resp = dataclasses.replace(resp, seed_shares=((owner, bad),) + resp.seed_shares[1:])
        r.server.receive_unmask(resp)
    with pytest.raises(ProtocolViolation, match="inconsistent shares"):
        r.server.aggregate()


# ---------------------------------------------------------------------- SecAgg+


def test_secaggplus_graph_with_20_participants() -> None:
    config = make_config(20, 3, 200, neighbours=4, seed=b"\x2a" * 32)
    for u in config.ids:
        nb = config.neighbours_of(u)
        assert len(nb) == 4 and u not in nb
        assert all(u in config.neighbours_of(v) for v in nb)  # symmetric: masks cancel pairwise
    again = make_config(20, 3, 200, neighbours=4, seed=b"\x2a" * 32)
    other = make_config(20, 3, 200, neighbours=4, seed=b"\x2b" * 32)
    assert all(config.neighbours_of(u) == again.neighbours_of(u) for u in config.ids)
    assert any(config.neighbours_of(u) != other.neighbours_of(u) for u in config.ids)

    inputs = inputs_for(config, np.random.default_rng(10))
    dropped = {3: "masked", 11: "masked", 17: "unmask"}
    start = time.perf_counter()
    result = run_local_round(config, ACCOUNTS, inputs, drop_before=dropped)
    elapsed = time.perf_counter() - start
    alive = [u for u in config.ids if u not in (3, 11)]
    assert np.array_equal(result.words, wrapping_sum([inputs[u] for u in alive]))
    verify_seed_commitments(config, result.witness)
    assert len(result.witness.masks) == len(alive) + sum(len(config.neighbours_of(d) - {3, 11}) for d in (3, 11))
    assert elapsed < 60


def test_config_rejects_unsafe_thresholds_and_graphs() -> None:
    with pytest.raises(BadInput, match="strict majority"):
        make_config(4, 2, 8)  # two disjoint pairs could each reconstruct
    with pytest.raises(BadInput, match="strict majority"):
        make_config(20, 2, 8, neighbours=4)
    with pytest.raises(BadInput, match="even neighbour count"):
        make_config(20, 3, 8, neighbours=3)
    with pytest.raises(BadInput, match="at least two"):
        make_config(1, 1, 8)
    config = make_config(6, 4, 8, neighbours=4)
    assert RoundConfig.from_bytes(config.to_bytes()) == config


# ---------------------------------------------------------------------- verifiability


DropoutRound = tuple[RoundConfig, AggregateResult, dict[int, np.ndarray]]


@pytest.fixture(scope="module")
def dropout_round() -> DropoutRound:
    config = make_config(5, 3, 64)
    inputs = inputs_for(config, np.random.default_rng(11))
    return config, run_local_round(config, ACCOUNTS, inputs, drop_before={4: "masked"}), inputs


def test_seed_commitments_verify_and_the_witness_replays_the_sum(dropout_round: DropoutRound) -> None:
    config, result, inputs = dropout_round
    witness = result.witness
    verify_seed_commitments(config, witness)
    assert np.array_equal(witness.replay(), result.words)
    pairs = [(t.owner, t.peer, t.negate) for t in witness.masks if t.kind == "pair"]
    assert pairs == [(4, v, v < 4) for v in (1, 2, 3, 5)]  # the survivor's mask sign, cancelled
    assert all(t.negate for t in witness.masks if t.kind == "self")


def _mutations(w: AggregationWitness) -> list[tuple[str, Callable[[], AggregationWitness]]]:
    masks = list(w.masks)
    self_i = next(i for i, t in enumerate(masks) if t.kind == "self")
    pair_i = next(i for i, t in enumerate(masks) if t.kind == "pair")

    def with_masks(new: list[MaskTerm]) -> AggregationWitness:
        return dataclasses.replace(w, masks=tuple(new))

    def swap(i: int, term: MaskTerm) -> AggregationWitness:
        return with_masks(masks[:i] + [term] + masks[i + 1 :])

    masked = list(w.masked_inputs)
    tampered_input = dataclasses.replace(masked[0], words=masked[0].words + 1)
    commitments = list(w.commitments)
    forged_commit = dataclasses.replace(commitments[0], self_commitment=keccak(b"other"))
    return [
        (
            "does not match its commitment",
            lambda: swap(self_i, dataclasses.replace(masks[self_i], seed=os.urandom(32))),
        ),
        ("does not match participant", lambda: swap(pair_i, dataclasses.replace(masks[pair_i], seed=os.urandom(32)))),
        ("wrong sign", lambda: swap(pair_i, dataclasses.replace(masks[pair_i], negate=not masks[pair_i].negate))),
        ("missing", lambda: with_masks(masks[:pair_i] + masks[pair_i + 1 :])),
        ("self-mask terms missing", lambda: with_masks(masks[:self_i] + masks[self_i + 1 :])),
        ("unexpected", lambda: with_masks(masks + [masks[self_i]])),
        ("masked input", lambda: dataclasses.replace(w, masked_inputs=(tampered_input, *masked[1:]))),
        ("seed commitment", lambda: dataclasses.replace(w, commitments=(forged_commit, *commitments[1:]))),
    ]


@pytest.mark.parametrize("index", range(8))
def test_a_wrong_revealed_seed_or_tampered_witness_is_detected(dropout_round: DropoutRound, index: int) -> None:
    config, result, _ = dropout_round
    match, mutate = _mutations(result.witness)[index]
    with pytest.raises(ProtocolViolation, match=match):
        verify_seed_commitments(config, mutate())


def test_witness_for_another_round_is_rejected(dropout_round: DropoutRound) -> None:
    config, result, _ = dropout_round
    with pytest.raises(ProtocolViolation, match="another round"):
        verify_seed_commitments(make_config(5, 3, 64, seed=b"\x09" * 32), result.witness)


# ---------------------------------------------------------------------- pieces


@settings(max_examples=25, deadline=None)
@given(secret=st.binary(min_size=32, max_size=32), n=st.integers(2, 9), data=st.data())
def test_shamir_any_t_shares_recover_and_fewer_do_not(secret: bytes, n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    holders = data.draw(st.lists(st.integers(1, shamir.MAX_ID), min_size=n, max_size=n, unique=True))
    shares = shamir.split(secret, t, holders)
    subset = data.draw(st.lists(st.sampled_from(holders), min_size=t, max_size=n, unique=True))
    assert shamir.combine({x: shares[x] for x in subset}, t) == secret
    with pytest.raises(ProtocolViolation):
        shamir.combine({x: shares[x] for x in subset[: t - 1]}, t)


def test_shamir_detects_an_inconsistent_share() -> None:
    shares = shamir.split(os.urandom(32), 3, [1, 2, 3, 4, 5])
    shares[5] = (int.from_bytes(shares[5], "big") ^ 1).to_bytes(shamir.SHARE_LEN, "big")
    with pytest.raises(ProtocolViolation, match="inconsistent shares"):
        shamir.combine(shares, 3)
    assert shamir.PRIME == (1 << 256) + 297


@settings(max_examples=15, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), start=st.integers(0, 1 << 40), count=st.integers(200, 1200))
def test_batched_prg_is_bit_identical_to_the_spec(seed: bytes, start: int, count: int) -> None:
    first = start // 4
    blocks = b"".join(fx.prg_block(seed, c) for c in range(first, (start + count - 1) // 4 + 1))
    reference = np.frombuffer(blocks, dtype=">i8").astype(np.int64)[start - 4 * first :][:count]
    assert np.array_equal(fx.prg_elements(seed, count, start), reference)


def test_messages_round_trip_through_bytes_and_reject_garbage() -> None:
    config = make_config(3, 2, 5)
    r = Round(config)
    ads = [p.advertise_keys() for p in r.parts.values()]
    for ad in ads:
        r.server.receive_advertisement(ad)
    msgs: list[object] = [ads[0], r.server.key_broadcast()]
    shares = [p.share_keys(r.server.key_broadcast()) for p in r.parts.values()]
    for s in shares:
        r.server.receive_shares(s)
    msgs += [shares[0], shares[0].commitment, r.server.forwarded_shares(1)]
    masked = r.parts[1].mask_input(r.server.forwarded_shares(1), np.arange(5, dtype=np.int64))
    msgs += [masked, SurvivorList(config.round_id, (1, 2, 3))]
    sig = r.parts[1].sign_survivors(SurvivorList(config.round_id, (1, 2, 3)))
    msgs += [
        sig,
        ConsistencyBroadcast(config.round_id, (1, 2, 3), (sig,)),
        UnmaskResponse(config.round_id, 1, ((2, bytes(33)),), ()),
    ]
    for m in msgs:
        raw = m.to_bytes()  # type: ignore[attr-defined]
        assert type(m).from_bytes(raw) == m  # type: ignore[attr-defined]
        with pytest.raises(BadInput):
            type(m).from_bytes(raw[:-1])  # type: ignore[attr-defined]
        with pytest.raises(BadInput):
            type(m).from_bytes(raw + b"\x00")  # type: ignore[attr-defined]
    with pytest.raises(BadInput):
        MaskedInput.from_bytes(ShareKeys.to_bytes(shares[0]))
    with pytest.raises(BadInput):
        SeedCommitment.from_bytes(b"SAGG")


def test_participant_signs_with_its_identity_account_only(tmp_path: Path) -> None:
    from collab.identity import Identity

    identity = Identity.create(tmp_path, "pw", scrypt_n=2)
    members = (Member(1, identity.address), Member(2, ACCOUNTS[2].address))
    config = RoundConfig(keccak(b"id-round"), members, 2, 4, 8)
    result = run_local_round(
        config, {1: identity.account, 2: ACCOUNTS[2]}, {1: np.arange(4, dtype=np.int64), 2: np.ones(4, dtype=np.int64)}
    )
    assert result.words.tolist() == [1, 2, 3, 4]
    with pytest.raises(Unauthorized):
        SecAggParticipant(config, 1, ACCOUNTS[2])


def test_inputs_must_be_words_of_the_round_length() -> None:
    config = make_config(2, 2, 4)
    with pytest.raises(BadInput, match="int64"):
        run_local_round(config, ACCOUNTS, {1: np.zeros(4), 2: np.zeros(4)})
    with pytest.raises(BadInput, match="vector of 4"):
        run_local_round(config, ACCOUNTS, {1: np.zeros(3, dtype=np.int64), 2: np.zeros(4, dtype=np.int64)})


def test_large_vectors_are_fast() -> None:
    config = make_config(3, 2, 200_000)
    rng = np.random.default_rng(12)
    inputs = {u: rng.integers(-(1 << 40), 1 << 40, size=200_000, dtype=np.int64) for u in config.ids}
    start = time.perf_counter()
    result = run_local_round(config, ACCOUNTS, inputs, drop_before={3: "masked"})
    elapsed = time.perf_counter() - start
    assert np.array_equal(result.words, inputs[1] + inputs[2])
    assert elapsed < 60, f"a 3-party round over 2e5 words took {elapsed:.1f}s"


def _defunct(digest: bytes) -> object:
    from eth_account.messages import encode_defunct

    return encode_defunct(primitive=digest)


def test_the_vm_running_the_masked_sum_program_over_the_witness_gives_the_aggregate(
    dropout_round: DropoutRound,
) -> None:
    """The verifiability link: the fraud-proof VM's RING_ADD / PRG_MASK / RING_TO_FIXED over the witness."""
    from collab.fixedpoint import Domain
    from collab.fraudproof import TensorHeader
    from collab.fraudproof.program import ProgramBuilder
    from collab.fraudproof.vm import run, tensor

    config, result, _ = dropout_round
    witness = result.witness
    header = TensorHeader(Domain.RING, config.frac_bits, (config.length,))
    names = {m.sender: f"masked/{m.sender}" for m in witness.masked_inputs}
    builder = ProgramBuilder({name: header for name in names.values()})
    terms = [builder[name] for name in names.values()]
    terms += [builder.prg_mask(t.seed, (config.length,), config.frac_bits, t.negate) for t in witness.masks]
    total = builder.ring_add(terms)  # fewer than 64 terms here; larger rounds chain RING_ADD steps
    builder.ring_to_fixed(total)
    words = {names[m.sender]: m.words for m in witness.masked_inputs}
    outs = run(builder.build(), [tensor(words[name], Domain.RING, config.frac_bits) for name in builder.input_names])
    assert np.array_equal(outs[-2].flat(), result.words)
    assert np.array_equal(outs[-1].flat(), result.words)  # RING_TO_FIXED at the same f is the identity


def test_named_tensors_are_summed_through_one_flat_vector() -> None:
    rng = np.random.default_rng(13)
    shapes = {"lora_A": (4, 8), "lora_B": (8, 4), "gram/layer0": (6, 6)}
    per_party = {u: {k: rng.normal(size=s) for k, s in shapes.items()} for u in (1, 2, 3)}
    layout = TensorLayout.of(per_party[1])
    config = make_config(3, 2, layout.length, frac_bits=24)
    result = run_local_round(config, ACCOUNTS, {u: layout.pack(t, 24) for u, t in per_party.items()})
    summed = layout.unpack(result.words, 24)
    for name in shapes:
        assert summed[name].shape == shapes[name]
        assert np.allclose(summed[name], sum(t[name] for t in per_party.values()), atol=3 * 2.0**-24)
    with pytest.raises(BadInput, match="shape"):
        layout.pack({**per_party[1], "lora_A": np.zeros((8, 4))}, 24)
    with pytest.raises(BadInput, match="names differ"):
        layout.pack({"lora_A": np.zeros((4, 8))}, 24)
