"""``collab bench rounds``: gas of a training round's on-chain protocol (RoundRegistry), on a real chain.

A fresh anvil, ``chain.deploy.deploy_all``, real Sahara IDs with BLS proofs of
possession, and for each participant count n: open, accept, fix, the aggregate
BLS consent check alone (``verifyConsent``, estimated), ``submitRecord``, a real
claim (a one-step VM program) finalized after the window, and the settlement
(through the hook when it fits its 1.5M gas, else ``settle``). One exclusion
dispute is measured too.

Baseline in the same run: the consent check with one signer (one key, one
hash-to-curve, one pairing); the figure that matters is the marginal gas per
extra signer, which should stay small (a G1 addition and the key's reads).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from eth_account import Account
from eth_account.signers.local import LocalAccount
from rich.console import Group, RenderableType
from web3 import Web3

from benchmarks import report
from chain.anvil import AnvilProcess, dev_account
from chain.client import connect
from chain.clients.asset_registry import AssetInput, AssetKind, AssetRegistryClient
from chain.clients.bisection_game import BisectionGameClient
from chain.clients.claim_manager import Audience, ClaimManagerClient
from chain.clients.data_availability import DataAvailabilityClient
from chain.clients.identity_registry import IdentityRegistryClient
from chain.clients.round_registry import (
    AttributionRecord,
    RoundConfig,
    RoundRegistryClient,
    aggregate_consent,
    epsilon_units,
    sign_consent,
    sign_survivors,
    sign_update_receipt,
    update_chain,
)
from chain.deploy import DEFAULT_PARAMS, deploy_all
from chain.deployment import Deployment
from collab import bls
from collab.fixedpoint import Domain
from collab.fraudproof.agents import ClaimerAgent
from collab.fraudproof.commitments import TensorHeader
from collab.fraudproof.program import ProgramBuilder
from collab.fraudproof.trace import Trace, build_trace
from collab.fraudproof.vm import tensor

SUITE = "rounds"
COUNTS: tuple[int, ...] = (1, 2, 4, 8, 16)
ARCHITECTURE_FIGURE = 191_000  # "about 191k gas for one aggregate check" (ARCHITECTURE.md, anvil 1.7.1)

Log = Callable[[str], None]


def run(results_dir: Path | str | None = None, log: Log | None = None) -> dict[str, Any]:
    """Run the suite on a fresh anvil; write ``rounds.json`` and ``rounds.png``; return the results."""
    say = log or (lambda _message: None)
    out_dir = report.results_dir(results_dir)
    started = time.monotonic()
    node = AnvilProcess()
    with node:
        w3 = connect(node.rpc_url)
        say("deploying collab's contracts")
        deployment = deploy_all(w3, dev_account(0), rpc_url=node.rpc_url)
        bench = _RoundBench(w3, deployment, say)
        series = [bench.measure(n) for n in COUNTS]
        dispute = bench.measure_dispute()
        veto = bench.measure_consent_veto()
    one = series[0]["consent_check"]
    marginal = (series[-1]["consent_check"] - one) / (COUNTS[-1] - 1)
    results: dict[str, Any] = {
        "suite": SUITE,
        "created_at": report.utc_now(),
        "seconds": round(time.monotonic() - started, 2),
        "machine": report.machine_facts(),
        "versions": report.package_versions(["web3", "eth-account", "py-ecc"]),
        "method": ("gasUsed of mined receipts on a fresh anvil (automine), deploy_all defaults; the consent check "
                   "alone is eth_estimateGas of RoundRegistry.verifyConsent minus the 21,000 intrinsic gas"),
        "series": series,
        "baseline": {"consent_check_one_signer": one, "marginal_gas_per_signer": round(marginal),
                     "architecture_figure": ARCHITECTURE_FIGURE},
        "dispute_exclusion": dispute,
        "consent_veto": veto,
    }
    return report.publish(out_dir, SUITE, results, lambda png: plot(results, png), say)


def _trace() -> Trace:
    header = TensorHeader(Domain.FIXED, 8, (4, 8))
    b = ProgramBuilder({"x": header, "y": header})
    b.add(b["x"], b["y"])
    rng = np.random.default_rng(3)
    inputs = {n: tensor(rng.integers(-(1 << 16), 1 << 16, size=(4, 8), dtype=np.int64), Domain.FIXED, 8) for n in "xy"}
    return build_trace(b.build(), inputs)


@dataclasses.dataclass
class _Member:
    account: LocalAccount
    id: int
    secret: int
    dataset: int


class _RoundBench:
    """The actors and clients of one run."""

    def __init__(self, w3: Web3, deployment: Deployment, log: Log) -> None:
        self.w3, self.deployment, self.log = w3, deployment, log
        self.creator = dev_account(1)
        self.trace = _trace()
        identity = IdentityRegistryClient.from_deployment(deployment, w3, self.creator)
        identity.register("creator", "human", identity.keys_for(bls.keygen(b"bench-creator"), b"\x01" * 32, b"\x02" * 32))
        IdentityRegistryClient.from_deployment(deployment, w3, dev_account(0)).grant_aggregator(
            identity.id_of(self.creator.address))
        self.base = self._assets(self.creator).register(
            AssetInput(AssetKind.MODEL, Web3.keccak(text="bench base"), derivative_royalty_bps=500)).asset_id
        log(f"registering {max(COUNTS)} participants")
        self.members = [self._member(i) for i in range(max(COUNTS))]

    def _assets(self, account: LocalAccount) -> AssetRegistryClient:
        return AssetRegistryClient.from_deployment(self.deployment, self.w3, account)

    def _registry(self, account: LocalAccount) -> RoundRegistryClient:
        return RoundRegistryClient.from_deployment(self.deployment, self.w3, account)

    def _member(self, i: int) -> _Member:
        acct: LocalAccount = Account.from_key(Web3.keccak(text=f"bench rounds member {i}"))
        self.w3.provider.make_request("anvil_setBalance", [acct.address, hex(10**21)])  # type: ignore[arg-type]
        secret = bls.keygen(f"bench-member-{i}".encode())
        identity = IdentityRegistryClient.from_deployment(self.deployment, self.w3, acct)
        ident = identity.register(f"member-{i}", "human", identity.keys_for(secret, b"\x01" * 32, b"\x02" * 32)).id
        dataset = self._assets(acct).register(AssetInput(AssetKind.DATASET, Web3.keccak(text=f"data {i}"))).asset_id
        return _Member(acct, ident, secret, dataset)

    def _open(self, members: list[_Member], min_participants: int) -> tuple[int, dict[str, int]]:
        now = int(self.w3.eth.get_block("latest")["timestamp"])
        registry = self._registry(self.creator)
        created = registry.create_round(RoundConfig(
            self.base, 1, [m.id for m in members], min_participants, epsilon_units(8.0), 10**13, now + 3_600, 2_000,
            Web3.keccak(text="bench config"), self.creator.address))
        gas = {"create_round": created.tx.gas_used if created.tx else 0}
        accepts = [self._registry(m.account).accept(created.round_id, 100 + i, m.dataset).gas_used
                   for i, m in enumerate(members)]
        gas["accept_mean"] = round(sum(accepts) / len(accepts))
        gas["fix"] = registry.fix(created.round_id).gas_used
        return created.round_id, gas

    def _record(self, rid: int, members: list[_Member]) -> AttributionRecord:
        t = self.trace
        return AttributionRecord(
            rid, t.program.root, t.input_root, t.output_root, Web3.keccak(text=f"adapter {rid}"), f"vault://{rid}",
            [m.account.address for m in members], [100 + i for i in range(len(members))],
            [update_chain([Web3.keccak(text=f"update {rid}/{m.account.address}")]) for m in members],  # real words: no
            # zero-byte calldata or zero-to-zero storage writes flattering the figures
            [epsilon_units(7.0)] * len(members)).sorted()

    def _post(self, rid: int) -> bytes:
        registry = self._registry(self.creator)
        manager = ClaimManagerClient.from_deployment(self.deployment, self.w3, self.creator)
        agent = ClaimerAgent(manager, BisectionGameClient.from_deployment(self.deployment, self.w3, self.creator),
                             DataAvailabilityClient.from_deployment(self.deployment, self.w3, self.creator), self.trace,
                             job_id=registry.job_id_of(rid))
        claim = dataclasses.replace(agent.claim_input(audience=Audience.PARTICIPANTS, settlement_hook=registry.address),
                                    participant_registry=registry.address)
        return manager.post_claim(claim).claim_id

    def measure(self, n: int) -> dict[str, Any]:
        self.log(f"round with {n} participant(s)")
        members = self.members[:n]
        rid, gas = self._open(members, n)
        record = self._record(rid, members)
        registry = self._registry(self.creator)
        root = registry.local_root(record)
        signature = aggregate_consent([sign_consent(m.secret, root) for m in members])
        gas["consent_check"] = registry.consent_gas(record, signature)
        gas["submit_record"] = registry.submit_record(record, signature).tx.gas_used  # type: ignore[union-attr]
        claim_id = self._post(rid)
        self.w3.provider.make_request("evm_increaseTime", [DEFAULT_PARAMS["CHALLENGE_WINDOW"] + 1])  # type: ignore[arg-type]
        self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        manager = ClaimManagerClient.from_deployment(self.deployment, self.w3, self.creator)
        tx = manager.finalize(claim_id)
        hooked = not tx.events_named("SettlementHookFailed")
        gas["finalize"] = tx.gas_used
        gas["settled_by"] = "hook" if hooked else "settle"
        if not hooked:
            gas["settle"] = registry.settle(claim_id, manager.roots_of(claim_id)).gas_used
        return {"participants": n, **gas}

    def measure_dispute(self) -> dict[str, int]:
        self.log("exclusion dispute")
        members = self.members[:3]
        rid, _ = self._open(members, 2)
        kept = members[:2]
        record = self._record(rid, kept)
        registry = self._registry(self.creator)
        root = registry.local_root(record)
        registry.submit_record(record, aggregate_consent([sign_consent(m.secret, root) for m in kept]))
        self._post(rid)
        dropped = members[2]
        commitment = Web3.keccak(text="bench dropped")
        spent = record.epsilons[0]
        receipt = sign_update_receipt(self.creator, int(self.w3.eth.chain_id), registry.address, rid,
                                      dropped.account.address, 1, commitment, spent)
        excluded = self._registry(dropped.account).dispute_exclusion(rid, 1, commitment, spent, receipt).gas_used
        # The same cheat disputed by an included survivor with the aggregator's endorsed survivor list.
        rid, _ = self._open(members, 2)
        record = self._record(rid, kept)
        root = registry.local_root(record)
        registry.submit_record(record, aggregate_consent([sign_consent(m.secret, root) for m in kept]))
        self._post(rid)
        survivors = [m.account.address for m in members]
        endorsement = sign_survivors(self.creator, int(self.w3.eth.chain_id), registry.address, rid, 1, survivors)
        omission = self._registry(kept[0].account).dispute_omission(rid, 1, survivors, endorsement).gas_used
        return {"gas": excluded, "omission_gas": omission}

    def measure_consent_veto(self) -> dict[str, int]:
        """The on-chain path when one of three withholds consent: propose, two consents, record after the deadline."""
        self.log("consent veto: proposal, consents, record")
        members = self.members[:3]
        rid, _ = self._open(members, 2)
        record = self._record(rid, members)
        registry = self._registry(self.creator)
        proposal = registry.propose_record(record)
        consents = [registry.consent(rid, m.account.address, sign_consent(m.secret, proposal.root)).gas_used
                    for m in members[:2]]
        now = int(self.w3.eth.get_block("latest")["timestamp"])
        self.w3.provider.make_request("evm_increaseTime", [proposal.deadline - now])  # type: ignore[arg-type]
        self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        submitted = registry.submit_proposed(record, [bytes(32)] * len(members))
        return {"propose_record": proposal.tx.gas_used if proposal.tx else 0, "consent_mean": round(sum(consents) / 2),
                "submit_proposed": submitted.tx.gas_used if submitted.tx else 0, "proposed": 3, "consented": 2}


# --------------------------------------------------------------------- output


def plot(results: dict[str, Any], path: Path) -> Path:
    """Consent-check gas and settlement gas against the participant count."""
    plt = report.pyplot()
    series = results["series"]
    ns = [s["participants"] for s in series]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    left.plot(ns, [s["consent_check"] for s in series], marker="o", label="BLS consent check (verifyConsent)")
    left.plot(ns, [s["submit_record"] for s in series], marker="s", label="submitRecord (all)")
    left.axhline(ARCHITECTURE_FIGURE, color="#999999", linestyle="--", label="architecture: ~191k for one check")
    left.set_xlabel("included participants")
    left.set_ylabel("gas")
    left.set_title(f"consent: +{results['baseline']['marginal_gas_per_signer']:,} gas per extra signer")
    left.legend(fontsize=8)
    settle = [s.get("settle", s["finalize"]) for s in series]
    colors = ["#4c72b0" if s["settled_by"] == "hook" else "#dd8452" for s in series]
    right.bar([str(n) for n in ns], settle, color=colors)
    right.axhline(1_500_000, color="#999999", linestyle="--", label="hook gas budget (1.5M)")
    right.set_xlabel("contributors")
    right.set_ylabel("gas")
    right.set_title("settlement: finalize with hook (blue) or settle() (orange)")
    right.legend(fontsize=8)
    return report.save_figure(fig, path)


def render(results: dict[str, Any]) -> RenderableType:
    """Per-count table and the baseline."""
    rows = [(s["participants"], s["accept_mean"], s["fix"], s["consent_check"], s["submit_record"], s["finalize"],
             s.get("settle", "-"), s["settled_by"]) for s in results["series"]]
    per_count = report.table("RoundRegistry gas by participant count",
                             ["n", "accept", "fix", "consent check", "submitRecord", "finalize", "settle", "settled by"],
                             rows)
    b = results["baseline"]
    base = report.table("BLS consent check (same run)", ["figure", "gas"], [
        ("one signer (baseline)", b["consent_check_one_signer"]),
        ("marginal per extra signer", b["marginal_gas_per_signer"]),
        ("architecture's figure for one aggregate check", b["architecture_figure"]),
        ("exclusion dispute", results["dispute_exclusion"]["gas"]),
        ("omission dispute (3 survivors)", results["dispute_exclusion"].get("omission_gas", "-")),
        *((f"consent veto: {k.replace('_', ' ')} (2 of 3 consent)", v)
          for k, v in results.get("consent_veto", {}).items() if k not in ("proposed", "consented")),
    ])
    return Group(per_count, base)
