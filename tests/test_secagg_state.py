"""What the Flower app relies on from collab.secagg: participant state across processes, witness bytes.

A ClientApp is a new process per message, so a participant is exported after
every stage and restored for the next; a restored participant must behave
exactly like the original (same masks, same refusals). The aggregation
witness travels to disk and back before it is claimed.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from eth_account import Account

from collab.errors import BadInput, ProtocolViolation, Unauthorized
from collab.fl import attestation as att
from collab.fraudproof.builders import masked_sum_from_witness
from collab.secagg import (
    AggregationWitness,
    ConsistencyBroadcast,
    KeyAdvertisement,
    Member,
    RoundConfig,
    SecAggParticipant,
    SecAggServer,
    ShareKeys,
    encode,
    verify_seed_commitments,
)
from collab.secagg.messages import ConsistencySignature, MaskedInput, UnmaskResponse

ACCOUNTS = {i: Account.create() for i in (1, 2, 3, 4)}


def config(length: int = 16) -> RoundConfig:
    return RoundConfig(os.urandom(32), tuple(Member(i, a.address) for i, a in ACCOUNTS.items()), 3, length, 16)


def hop(p: SecAggParticipant, member: int) -> SecAggParticipant:
    """Through bytes, as between two ClientApp processes."""
    return SecAggParticipant.restore(p.export_state(), ACCOUNTS[member])


def run_round_with_restores(cfg: RoundConfig, inputs: dict[int, np.ndarray], drop: int | None) -> SecAggServer:
    server = SecAggServer(cfg)
    parts = {u: SecAggParticipant(cfg, u, ACCOUNTS[u]) for u in cfg.ids}
    for u in cfg.ids:
        server.receive_advertisement(KeyAdvertisement.from_bytes(parts[u].advertise_keys().to_bytes()))
        parts[u] = hop(parts[u], u)
    for u in cfg.ids:
        server.receive_shares(ShareKeys.from_bytes(parts[u].share_keys(server.key_broadcast(u)).to_bytes()))
        parts[u] = hop(parts[u], u)
    for u in cfg.ids:
        if u != drop:
            server.receive_masked_input(MaskedInput.from_bytes(parts[u].mask_input(server.forwarded_shares(u), inputs[u]).to_bytes()))
            parts[u] = hop(parts[u], u)
    survivors = server.survivor_list()
    for u in survivors.survivors:
        server.receive_consistency_signature(ConsistencySignature.from_bytes(parts[u].sign_survivors(survivors).to_bytes()))
        parts[u] = hop(parts[u], u)
    check = server.consistency_broadcast()
    for u in survivors.survivors:
        server.receive_unmask(UnmaskResponse.from_bytes(parts[u].unmask(check).to_bytes()))
    return server


@pytest.mark.parametrize("drop", [None, 2])
def test_restored_participants_sum_exactly_and_the_witness_survives_bytes(drop: int | None) -> None:
    cfg = config()
    rng = np.random.default_rng(1)
    inputs = {u: encode(rng.normal(size=cfg.length), cfg.frac_bits) for u in cfg.ids}
    result = run_round_with_restores(cfg, inputs, drop).aggregate()
    alive = [u for u in cfg.ids if u != drop]
    expected = np.sum(np.stack([inputs[u] for u in alive]), axis=0, dtype=np.int64)
    assert np.array_equal(result.words, expected)
    witness = AggregationWitness.from_bytes(result.witness.to_bytes())
    assert witness.to_bytes() == result.witness.to_bytes()
    verify_seed_commitments(cfg, witness)
    assert np.array_equal(witness.replay(), expected)
    out = masked_sum_from_witness(witness).outputs()["sum"]
    assert np.array_equal(np.asarray(out.data, dtype=np.int64).reshape(-1), expected)


def test_restore_refuses_another_identity_and_keeps_refusals() -> None:
    cfg = config()
    p = SecAggParticipant(cfg, 1, ACCOUNTS[1])
    p.advertise_keys()
    with pytest.raises(Unauthorized):
        SecAggParticipant.restore(p.export_state(), ACCOUNTS[2])
    restored = hop(p, 1)
    with pytest.raises(ProtocolViolation):  # a restored participant still enforces the stage order
        restored.unmask(ConsistencyBroadcast(cfg.round_id, (1, 2, 3), ()))


def test_witness_bytes_reject_garbage() -> None:
    with pytest.raises(BadInput):
        AggregationWitness.from_bytes(b"SAGG\x01\x1e" + b"\x00" * 3)
    with pytest.raises(BadInput):
        AggregationWitness.from_bytes(b"not a witness")


def test_signed_update_commitment_binds_round_member_weight_and_epsilon() -> None:
    acct = ACCOUNTS[1]
    rid = att.job_round_id("job", 1)
    commitment = att.update_commitment(rid, b"\x01" * 32, np.arange(4, dtype=np.int64))
    eps = 2_500_000  # ε = 2.5 in millionths
    sig = att.sign(acct, att.update_digest(rid, 1, 40, eps, commitment))
    att.check(att.update_digest(rid, 1, 40, eps, commitment), sig, acct.address, "ok")
    for digest in (att.update_digest(rid, 1, 41, eps, commitment),
                   att.update_digest(att.job_round_id("job", 2), 1, 40, eps, commitment),
                   att.update_digest(rid, 2, 40, eps, commitment), att.update_digest(rid, 1, 40, eps - 1, commitment)):
        with pytest.raises(ProtocolViolation):
            att.check(digest, sig, acct.address, "changed weight, round, member or ε")
    assert att.model_hash({"a": np.zeros(2)}) != att.model_hash({"a": np.ones(2)})
