"""Update receipts in the live Flower flow, end to end once (tiny model, plain FedAvg, two rounds; marked slow).

A RoundRegistry round runs on real SuperLink/SuperNode processes with the
aggregator's identity unlocked in the ServerApp (``COLLAB_PASSPHRASE``
inherited through the SuperLink). Every included participant's node checks
and keeps the aggregator's receipt for each of its updates (round 1's
arrives with round 2's train message, round 2's in the final
``query.receipt``), and the SecAgg survivor list it signed in each round
with the aggregator's endorsement. The aggregator then cheats: it records
and claims the round without p1. p0's node refuses to consent to that record
(p1 is on the survivor list p0 signed, so the aggregator cannot drop p1 even
by withholding p1's last receipt), and p0's endorsed list names p1 as an
omitted survivor on-chain; with p0's consent forged into the test anyway, p1
wins the exclusion dispute with ``collab round dispute ROUND`` from its
home, no receipt file named.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain.clients.asset_registry import AssetInput, AssetKind, AssetRegistryClient
from chain.clients.bisection_game import BisectionGameClient
from chain.clients.claim_manager import Audience, ClaimManagerClient
from chain.clients.data_availability import DataAvailabilityClient
from chain.clients.identity_registry import IdentityRegistryClient, Keys
from chain.clients.round_registry import (
    AttributionRecord,
    RoundConfig,
    RoundRegistryClient,
    aggregate_consent,
    epsilon_units,
    recover_survivors,
    recover_update_receipt,
)
from chain.deployment import Deployment
from collab.cli import run as collab
from collab.fl.data import load_user_data
from collab.errors import ProtocolViolation
from collab.fl.receipts import SURVIVORS_DIR, endorsed_survivors, receipt_path
from collab.fraudproof.agents import ClaimerAgent
from collab.fraudproof.trace import build_trace
from collab.identity import Identity
from fl_helpers import PASSPHRASE, start
from orchestrator import round_chain
from orchestrator.workers import NodeChain
from test_claim_manager import add_chain_program

pytestmark = pytest.mark.slow

NAMES = ("p0", "p1")
TINY = {"model": "tiny", "num-rounds": 2, "min-participants": 2, "max-len": 32, "epochs": 1, "batch-size": 8,
        "lr": 0.01, "noise-multiplier": 0.8, "epsilon": 50.0, "test-samples": 10, "round-timeout": 240.0,
        "secagg-timeout": 150.0}


def _register(w3: Web3, deployment: Deployment, me: Identity, name: str) -> int:
    w3.provider.make_request("anvil_setBalance", [me.address, hex(10**21)])  # type: ignore[arg-type]
    reg = IdentityRegistryClient.from_deployment(deployment, w3, me.account)
    return reg.register(f"rcpt-{name}", "human", Keys(*me.registry_keys(int(w3.eth.chain_id), reg.address))).id


def test_included_nodes_keep_receipts_and_a_left_out_one_wins_the_dispute(
    tmp_path: Path, w3: Web3, deployment: Deployment, deployer: LocalAccount, chain_snapshot: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    if "RoundRegistry" not in deployment.contracts:
        pytest.skip("RoundRegistry is not deployed")
    monkeypatch.setenv("COLLAB_PASSPHRASE", PASSPHRASE)  # the SuperLink, hence the ServerApp, inherits it
    for var in ("COLLAB_DEPLOYMENT", "COLLAB_RPC_URL", "COLLAB_HOME"):
        monkeypatch.delenv(var, raising=False)
    aggregator = Identity.create(tmp_path / "orchestrator", PASSPHRASE, scrypt_n=2)
    flower = start(tmp_path, NAMES, per_participant=12)
    try:
        homes = {n: Identity.load(tmp_path / n, PASSPHRASE) for n in NAMES}
        ids = {n: _register(w3, deployment, me, n) for n, me in [("agg", aggregator), *homes.items()]}
        IdentityRegistryClient.from_deployment(deployment, w3, deployer).grant_aggregator(ids["agg"])
        base = AssetRegistryClient.from_deployment(deployment, w3, aggregator.account).register(
            AssetInput(AssetKind.MODEL, Web3.keccak(text="receipts base"))).asset_id
        registry = RoundRegistryClient.from_deployment(deployment, w3, aggregator.account)
        now = int(w3.eth.get_block("latest")["timestamp"])
        rid = registry.create_round(RoundConfig(base, 2, [ids[n] for n in NAMES], 1, epsilon_units(50.0), 10**13,
                                                now + 600, 1_000, Web3.keccak(text="receipts"), aggregator.address)).round_id
        weights = {}
        for name, me in homes.items():
            weights[name] = len(load_user_data(tmp_path / name / "data.jsonl"))
            dataset = AssetRegistryClient.from_deployment(deployment, w3, me.account).register(
                AssetInput(AssetKind.DATASET, Web3.keccak(text=f"data of {name}"))).asset_id
            RoundRegistryClient.from_deployment(deployment, w3, me.account).accept(rid, weights[name], dataset)
        registry.fix(rid)
        config = {**TINY, "registry-round": rid, "registry-address": registry.address, "chain-id": int(w3.eth.chain_id),
                  "aggregator": aggregator.address, "aggregator-home": str(tmp_path / "orchestrator")}
        record = flower.run(config, tmp_path / "orchestrator" / "result.json", timeout=900)
    finally:
        flower.stop()
    assert record["status"] == "completed", record.get("reason")
    assert record["receipts"] == {n: "stored" for n in NAMES}

    for name, me in homes.items():  # every included participant holds a valid receipt per update
        for fl_round in (1, 2):
            kept = json.loads(receipt_path(tmp_path / name, rid, fl_round).read_text())
            signer = recover_update_receipt(bytes.fromhex(kept["signature"][2:]), int(w3.eth.chain_id), registry.address,
                                            rid, me.address, fl_round, bytes.fromhex(kept["update_commitment"][2:]),
                                            kept["epsilon"])
            assert signer == aggregator.address and kept["participant"] == me.address
            assert kept["epsilon"] == epsilon_units(record["epsilon"][name]) if fl_round == 2 else kept["epsilon"] > 0

    both = sorted(me.address for me in homes.values())
    for name in NAMES:  # each node kept the survivor list it signed, per Flower round, endorsed by the aggregator
        for fl_round in (1, 2):
            kept = json.loads((tmp_path / name).joinpath(*SURVIVORS_DIR, f"{rid}-r{fl_round}.json").read_text())
            assert sorted(kept["survivors"]) == both
            assert recover_survivors(bytes.fromhex(kept["aggregator_signature"][2:]), int(w3.eth.chain_id),
                                     registry.address, rid, fl_round, kept["survivors"]) == aggregator.address

    # The aggregator records and claims the round without p1; p0's node will not consent to that.
    trace = build_trace(*add_chain_program())
    cheat = AttributionRecord(rid, trace.program.root, trace.input_root, trace.output_root, Web3.keccak(text="adapter"),
                              "vault://adapter", [homes["p0"].address], [weights["p0"]], [bytes(32)],
                              [epsilon_units(1.0)])
    p0_node = NodeChain(w3, deployment, homes["p0"].account, None, identity=homes["p0"])
    with pytest.raises(ProtocolViolation, match=f"leaves out {homes['p1'].address}"):
        round_chain.node_consent(p0_node, homes["p0"].bls_sign, round_chain.record_to_json(cheat), tmp_path / "p0")
    # p0's BLS key signs it here directly (a colluding p0): p1's receipt still rejects the claim.
    registry.submit_record(cheat, aggregate_consent([homes["p0"].bls_sign(registry.local_root(cheat))]))
    manager = ClaimManagerClient.from_deployment(deployment, w3, aggregator.account)
    agent = ClaimerAgent(manager, BisectionGameClient.from_deployment(deployment, w3, aggregator.account),
                         DataAvailabilityClient.from_deployment(deployment, w3, aggregator.account), trace,
                         job_id=registry.job_id_of(rid))
    claim_id = manager.post_claim(dataclasses.replace(
        agent.claim_input(audience=Audience.PARTICIPANTS, settlement_hook=registry.address),
        participant_registry=registry.address)).claim_id

    # p0's endorsed list of the last round is evidence against the record on its own (any participant's).
    survivors, _ = endorsed_survivors(tmp_path / "p0", rid, 2) or ([], b"")
    assert registry.omitted_survivor(rid, survivors) == homes["p1"].address
    deployment.save(tmp_path / "p1" / "deployment.json")
    capsys.readouterr()
    code = collab(["--home", str(tmp_path / "p1"), "--json", "round", "dispute", str(rid)])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert result["claim_id"] == "0x" + claim_id.hex() and result["claim_status"] == "rejected"
