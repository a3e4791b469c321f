"""Run a whole round in one process: the reference wiring of participants and server.

The orchestrator and the Flower app carry the same messages over the network;
this driver carries them in memory (through their byte encodings, so the wire
format is exercised too). Tests, benchmarks and single-machine merges of
RegMean/Fisher statistics use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eth_account.signers.local import LocalAccount

from collab.errors import BadInput
from collab.secagg.config import RoundConfig
from collab.secagg.messages import (
    ConsistencyBroadcast,
    ConsistencySignature,
    ForwardedShares,
    KeyAdvertisement,
    KeyBroadcast,
    MaskedInput,
    ShareKeys,
    SurvivorList,
    UnmaskResponse,
)
from collab.secagg.participant import SecAggParticipant
from collab.secagg.server import AggregateResult, SecAggServer

# A participant listed in ``drop_before`` stops answering before that round.
ROUNDS = ("keys", "shares", "masked", "consistency", "unmask")


def run_local_round(
    config: RoundConfig,
    accounts: Mapping[int, LocalAccount],
    inputs: Mapping[int, Any],
    *,
    drop_before: Mapping[int, str] | None = None,
) -> AggregateResult:
    """Run rounds 0-4 with every member of ``config`` and return the server's aggregate.

    Parameters
    ----------
    config : RoundConfig
        The round.
    accounts : Mapping[int, LocalAccount]
        Each member's identity account.
    inputs : Mapping[int, Any]
        Each member's input as int64 fixed-point words (see ``encode``).
    drop_before : Mapping[int, str] | None
        Member id to the round (one of ``ROUNDS``) it drops out before.
    """
    drops = dict(drop_before or {})
    for member_id, stage in drops.items():
        if stage not in ROUNDS:
            raise BadInput(f"unknown round {stage!r} for participant {member_id}; choose from {ROUNDS}")

    def alive(member_id: int, stage: str) -> bool:
        return member_id not in drops or ROUNDS.index(stage) < ROUNDS.index(drops[member_id])

    server = SecAggServer(config)
    parts = {u: SecAggParticipant(config, u, accounts[u]) for u in config.ids}
    for u, p in parts.items():
        if alive(u, "keys"):
            server.receive_advertisement(KeyAdvertisement.from_bytes(p.advertise_keys().to_bytes()))
    for u, p in parts.items():
        if alive(u, "shares"):
            broadcast = KeyBroadcast.from_bytes(server.key_broadcast(u).to_bytes())
            server.receive_shares(ShareKeys.from_bytes(p.share_keys(broadcast).to_bytes()))
    for u, p in parts.items():
        if alive(u, "masked"):
            forwarded = ForwardedShares.from_bytes(server.forwarded_shares(u).to_bytes())
            server.receive_masked_input(MaskedInput.from_bytes(p.mask_input(forwarded, inputs[u]).to_bytes()))
    survivors = SurvivorList.from_bytes(server.survivor_list().to_bytes())
    for u, p in parts.items():
        if alive(u, "consistency") and u in survivors.survivors:
            sig = p.sign_survivors(survivors)
            server.receive_consistency_signature(ConsistencySignature.from_bytes(sig.to_bytes()))
    check = ConsistencyBroadcast.from_bytes(server.consistency_broadcast().to_bytes())
    for u, p in parts.items():
        if alive(u, "unmask") and u in survivors.survivors:
            server.receive_unmask(UnmaskResponse.from_bytes(p.unmask(check).to_bytes()))
    return server.aggregate()
