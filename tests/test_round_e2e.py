"""A training round end to end (tiny model, marked slow): opened, accepted and fixed on-chain; a real secure
Flower round on SuperLink/SuperNodes; its attribution record consented by every participant's BLS key; the
masked-sum claim posted; Receipts and Shares by weight minted only once the claim finalizes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain.clients.asset_registry import AssetInput, AssetKind, AssetRegistryClient
from chain.clients.bisection_game import BisectionGameClient
from chain.clients.claim_manager import Audience, ClaimManagerClient, ClaimStatus
from chain.clients.data_availability import DataAvailabilityClient
from chain.clients.identity_registry import IdentityRegistryClient, Keys
from chain.clients.receipts import ReceiptsClient
from chain.clients.round_registry import (
    RoundConfig,
    RoundRegistryClient,
    aggregate_consent,
    epsilon_units,
    record_from_attribution,
)
from chain.clients.shares import SharesClient
from chain.deployment import Deployment
from collab import bls
from collab.fl.data import load_user_data
from collab.fl.runconfig import effective, task_hash
from collab.fraudproof.agents import ClaimerAgent
from collab.fraudproof.builders import masked_sum_from_witness
from collab.identity import Identity
from collab.secagg import AggregationWitness
from fl_helpers import PASSPHRASE, start

pytestmark = pytest.mark.slow

NAMES = ("p0", "p1", "p2")
TINY = {"model": "tiny", "num-rounds": 1, "min-participants": 2, "max-len": 32, "epochs": 1, "batch-size": 16,
        "lr": 0.01, "noise-multiplier": 0.8, "epsilon": 50.0, "test-samples": 20, "round-timeout": 240.0,
        "secagg-timeout": 240.0}


def _fund(w3: Web3, address: str) -> None:
    w3.provider.make_request("anvil_setBalance", [address, hex(10**21)])  # type: ignore[arg-type]


def test_a_real_secure_round_settles_attribution_only_after_finalization(
    tmp_path: Path, w3: Web3, deployment: Deployment, deployer: LocalAccount, chain_snapshot: str,
    time_travel: Callable[[int], int],
) -> None:
    if "RoundRegistry" not in deployment.contracts:
        pytest.skip("RoundRegistry is not deployed")
    task = task_hash(effective(TINY))  # each node holds its ClientApps to the task the round is opened with
    flower = start(tmp_path, NAMES, per_participant=24, **{n: {"task_hash": task} for n in NAMES})
    try:
        # The creator (also the aggregator here) and the participants' homes get Sahara IDs and dataset assets.
        creator = Identity.create(tmp_path / "creator", PASSPHRASE, scrypt_n=2)
        homes = {n: Identity.load(tmp_path / n, PASSPHRASE) for n in NAMES}
        ids = {}
        for name, me in [("creator", creator), *homes.items()]:
            _fund(w3, me.address)
            reg = IdentityRegistryClient.from_deployment(deployment, w3, me.account)
            ids[name] = reg.register(f"e2e-{name}", "human", Keys(*me.registry_keys(int(w3.eth.chain_id), reg.address))).id
        IdentityRegistryClient.from_deployment(deployment, w3, deployer).grant_aggregator(ids["creator"])
        base = AssetRegistryClient.from_deployment(deployment, w3, creator.account).register(
            AssetInput(AssetKind.MODEL, Web3.keccak(text="tiny encoder"), derivative_royalty_bps=250)).asset_id
        registry = RoundRegistryClient.from_deployment(deployment, w3, creator.account)
        now = int(w3.eth.get_block("latest")["timestamp"])
        rid = registry.create_round(RoundConfig(base, 1, [ids[n] for n in NAMES], 2, epsilon_units(50.0), 10**13,
                                                now + 600, 1_000, task,
                                                creator.address)).round_id
        for name, me in homes.items():
            samples = len(load_user_data(tmp_path / name / "data.jsonl"))  # what `collab join` declares
            dataset = AssetRegistryClient.from_deployment(deployment, w3, me.account).register(
                AssetInput(AssetKind.DATASET, Web3.keccak(text=f"data of {name}"))).asset_id
            RoundRegistryClient.from_deployment(deployment, w3, me.account).accept(rid, samples, dataset)
        registry.fix(rid)

        record = flower.run(TINY, tmp_path / "result.json", timeout=900)
    finally:
        flower.stop()
    assert record["status"] == "completed", record.get("reason")

    attribution = json.loads((tmp_path / "attribution.json").read_text())
    witness = AggregationWitness.from_bytes((tmp_path / attribution["rounds"][-1]["witness"]).read_bytes())
    job = masked_sum_from_witness(witness)  # the aggregate the orchestrator claims
    trace = job.trace()
    output = job.outputs()["sum"]
    rec = record_from_attribution(
        attribution, rid, program_root=job.program.root, input_root=trace.input_root, output_root=trace.output_root,
        content_hash=hashlib.sha256(np.asarray(output.data).tobytes()).digest(), vault_uri=f"vault://round-{rid}",
    )
    root = registry.local_root(rec)
    by_address = {me.address: me for me in homes.values()}
    for account in rec.participants:  # every participant checks its own row before it consents
        assert bls.verify(by_address[account].bls_public, root, by_address[account].bls_sign(root))
    signature = aggregate_consent([by_address[a].bls_sign(root) for a in rec.participants])
    submitted = registry.submit_record(rec, signature)

    manager = ClaimManagerClient.from_deployment(deployment, w3, creator.account)
    agent = ClaimerAgent(manager, BisectionGameClient.from_deployment(deployment, w3, creator.account),
                         DataAvailabilityClient.from_deployment(deployment, w3, creator.account), trace,
                         job_id=registry.job_id_of(rid))
    claim = dataclasses.replace(agent.claim_input(audience=Audience.PARTICIPANTS, settlement_hook=registry.address),
                                participant_registry=registry.address)
    claim_id = manager.post_claim(claim).claim_id
    assert claim_id == submitted.claim_id
    receipts = ReceiptsClient.from_deployment(deployment, w3)
    assert all(receipts.receipts_of(a) == [] for a in rec.participants)  # nothing before finalization
    time_travel(manager.params_of(claim_id).challenge_window + 1)
    manager.finalize(claim_id)
    assert manager.claim_status(claim_id) == ClaimStatus.FINALIZED
    asset_id = registry.settled_asset(claim_id)
    assert asset_id and AssetRegistryClient.from_deployment(deployment, w3).parents_of(asset_id) == [(base, 250)]
    shares = SharesClient.from_deployment(deployment, w3)
    _, amounts = registry.share_split(1_000_000, 1_000, rec.weights)
    for account, weight, amount in zip(rec.participants, rec.weights, amounts, strict=True):
        assert shares.balance_of(account, asset_id) == amount
        [token] = receipts.receipts_of(account)
        assert receipts.receipt(token).weight == weight
    assert sorted(p.epsilon for p in registry.participants_of(rid)) == sorted(rec.epsilons)
