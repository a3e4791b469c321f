"""The orchestrator's ``merge`` job on a real anvil: the same claimed-merge path as ``collab merge run --claim``.

Two participants own their adapters as registered assets and grant the
orchestrator a Partnership; the job (weighted TIES, 2 : 1) collects the
adapters, runs the merge program, records it in MergeRegistry and posts
through its child ``claim`` job. A re-run of the computation (a crash before
the transition was written) reads its own record back and names the same
claim. Finalization registers the merged asset with both adapters as parents
and mints its Shares: the orchestrator's fraction, the rest 2 : 1 by weight.
Driven through the job store and the handlers (no processes: the SIGKILL
resume on real processes is tests/test_node_round.py).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save

from chain.clients.asset_registry import AssetInput, AssetKind, AssetRegistryClient
from chain.clients.claim_manager import ClaimManagerClient
from chain.clients.licensing import LicenseKind, LicensingClient, Terms
from chain.clients.merge_registry import MergeRegistryClient
from chain.clients.shares import SharesClient
from collab.config import Settings
from collab.errors import BadInput
from collab.vault import Vault
from orchestrator.claims import ClaimJob
from orchestrator.jobs import Job, JobState, JobStore, step, validate_kind
from orchestrator.merges import MergeJob
from test_claim_manager import GameEnv, env, game_env  # noqa: F401 - fixtures
from test_claims_cli import _home

pytestmark = pytest.mark.slow


def _adapter(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"lora_A": torch.randn(4, 8, generator=g) * 0.1, "lora_B": torch.randn(8, 4, generator=g) * 0.1}


def _run(store: JobStore, handlers: dict[str, object], job_id: str, until: set[JobState], max_steps: int = 20) -> Job:
    """Step the job and its child claim job until the job reaches one of ``until``."""
    for _ in range(max_steps):
        job = step(store, handlers, store.get(job_id))  # type: ignore[arg-type]
        child = job.data.get("claim_job")
        if child:
            step(store, handlers, store.get(child))  # type: ignore[arg-type]
        if job.state in until:
            return job
    raise AssertionError(f"job stuck in {store.get(job_id).state}: {store.get(job_id).error}")


def test_orchestrator_merge_job_registers_the_merged_asset_and_mints_shares_by_weight(
    env: GameEnv, tmp_path: Path, time_travel: Callable[[int], int], monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    monkeypatch.setenv("COLLAB_PASSPHRASE", "pw")
    orch_home = tmp_path / "orch"
    orch = _home(env, orch_home, "merge-orchestrator", True)
    people = [_home(env, tmp_path / f"p{i}", f"merge-part-{i}", True) for i in range(2)]
    adapters = [_adapter(i) for i in range(2)]
    assets = []
    for me, state in zip(people, adapters):  # each registers its adapter and co-signs a Partnership with the orchestrator
        blob = save(state)
        asset_id = AssetRegistryClient.from_deployment(env.deployment, env.w3, me.account).register(
            AssetInput(AssetKind.MODEL, hashlib.sha256(blob).digest())).asset_id
        licensing = LicensingClient.from_deployment(env.deployment, env.w3, me.account)
        offer = licensing.offer(asset_id, LicenseKind.PARTNERSHIP, Terms(partner=orch.address)).offer_id
        licensing.with_account(orch.account).buy(offer, 0)
        assets.append(asset_id)

    registry = MergeRegistryClient.from_deployment(env.deployment, env.w3, orch.account)
    handler = MergeJob(orch_home, registry=registry, account=orch.account,
                       vault=Vault(Settings.resolve(home=orch_home, env={}).vault_dir, owner=orch.x25519_public),
                       assets=AssetRegistryClient.from_deployment(env.deployment, env.w3))
    handlers: dict[str, object] = {"merge": handler,
                                   "claim": ClaimJob(ClaimManagerClient.from_deployment(env.deployment, env.w3, orch.account))}
    parts = [p.address.lower() for p in people]
    payload = {"participants": parts, "method": "ties", "weights": [2.0, 1.0], "density": 0.5, "assets": assets,
               "merger_share_bps": 1000, "submitter": parts[0], "needs": parts}
    validate_kind("merge", payload, handlers)  # type: ignore[arg-type]
    with pytest.raises(BadInput, match="one number per participant"):
        validate_kind("merge", {**payload, "assets": assets[:1]}, handlers)  # type: ignore[arg-type]
    store = JobStore(tmp_path / "jobs.db")
    job, _ = store.create("merge", payload)
    assert step(store, handlers, job).state == JobState.COLLECTING  # type: ignore[arg-type]
    for part, state in zip(parts, adapters):
        store.update_data(job.id, {f"r/{part}/adapter": base64.b64encode(save(state)).decode()})
    assert step(store, handlers, store.get(job.id)).state == JobState.COMPUTING  # type: ignore[arg-type]
    computed = step(store, handlers, store.get(job.id))  # type: ignore[arg-type]
    assert computed.state == JobState.COMPUTED, computed.error
    data = computed.data
    assert data["parents"] == assets and data["audience"] == "participants"
    assert {c["account"].lower(): c["weight"] for c in data["contributors"]} == {parts[0]: 2 * 10**6, parts[1]: 10**6}
    # A crash after the computation but before the transition: the re-run reads its own record back.
    assert handler._compute(store.get(job.id), store) == JobState.COMPUTED
    assert store.get(job.id).data["claim_id"] == data["claim_id"]
    assert len(handler.vault.list()) == 1  # the same output is vaulted once

    # The stored file equals mergekit's weighted TIES of the adapters against a zero base (its own
    # sparsify/get_mask and merge_group's arithmetic; adapters have no architecture for run_merge).
    from mergekit.merge_methods.generalized_task_arithmetic import get_mask
    from mergekit.sparsify import SparsificationMethod, sparsify

    merged = Path(data["merged_path"])
    for name, t in load_file(str(merged)).items():
        deltas = torch.stack([sparsify(a[name], 0.5, SparsificationMethod.magnitude) for a in adapters])
        weights = torch.tensor([2.0, 1.0]).view(2, *([1] * t.dim()))
        deltas = deltas * weights
        mask = get_mask(deltas, method="sum")
        divisor = (weights * mask).sum(dim=0)
        divisor[divisor == 0] = 1
        np.testing.assert_allclose(t.numpy(), ((deltas * mask).sum(dim=0) / divisor).numpy(), atol=2e-6, err_msg=name)

    claimed = _run(store, handlers, job.id, {JobState.CLAIMED})
    claim_id = bytes.fromhex(claimed.data["claim_id"][2:])
    manager = ClaimManagerClient.from_deployment(env.deployment, env.w3)
    assert all(manager.is_audience(claim_id, p) for p in parts)
    assert registry.settled_asset(claim_id) == 0
    time_travel(manager.params_of(claim_id).challenge_window)
    done = _run(store, handlers, job.id, {JobState.FINALIZED, JobState.REJECTED, JobState.FAILED})
    assert done.state == JobState.FINALIZED, done.error

    asset_id = registry.settled_asset(claim_id)
    asset = AssetRegistryClient.from_deployment(env.deployment, env.w3).asset(asset_id)
    assert asset.owner.lower() == orch.address.lower() and asset.commitment_root.hex() == data["output_root"][2:]
    assert "0x" + asset.content_hash.hex() == data["content_hash"]
    assert sorted(p for p, _ in asset.parents) == sorted(assets)
    shares = SharesClient.from_deployment(env.deployment, env.w3)
    supply = shares.total_supply(asset_id)
    creator, split = registry.share_split(supply, 1000, [2 * 10**6, 10**6])  # the contract's exact split
    assert [shares.balance_of(p.address, asset_id) for p in people] == split and split[0] in (2 * split[1], 2 * split[1] + 1)
    assert shares.balance_of(orch.address, asset_id) == supply - sum(split) >= creator
    # the vaulted blob is the merged file
    assert handler.vault.get(asset.content_hash.hex(), orch.x25519_private_key) == merged.read_bytes()
