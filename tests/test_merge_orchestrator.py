"""The orchestrator's ``merge`` job on a real anvil: the same claimed-merge path as ``collab merge run --claim``.

Two participants own their adapters as registered assets (one a plain
file, one a vault blob whose key travels with the upload) and grant the
orchestrator a Partnership; the job (weighted TIES, 2 : 1) collects the
adapters, checks each against its asset's hashes, runs the merge program, records it in MergeRegistry and posts
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
from collab.identity import Identity
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


def _register(env: GameEnv, me: Identity, path: Path, *, vaulted: bool) -> tuple[int, dict[str, str]]:
    """Register the adapter file at ``path`` as ``me``'s model asset, as the file itself or as its blob in the
    vault next to it (a home's ``vault``); the upload its node sends (the vault blob and key if vaulted)."""
    if not vaulted:
        blob = path.read_bytes()
        asset = AssetInput(AssetKind.MODEL, hashlib.sha256(blob).digest())
        upload = {"adapter": base64.b64encode(blob).decode()}
    else:
        vault = Vault(path.parent / "vault", owner=me.x25519_public)
        entry = vault.put(path)
        key = vault.data_key(entry.id, me.x25519_private_key)
        asset = AssetInput(AssetKind.MODEL, entry.content_hash, key_commitment=entry.key_commitment, vault_uri=entry.uri)
        upload = {"adapter_key": key.hex(), "adapter": base64.b64encode(vault.export(entry.id)).decode()}
    registry = AssetRegistryClient.from_deployment(env.deployment, env.w3, me.account)
    return registry.register(asset).asset_id, upload


def _partnership(env: GameEnv, owner: Identity, asset_id: int, partner: Identity) -> None:
    """``owner`` offers a Partnership on ``asset_id`` to ``partner``, who takes it."""
    licensing = LicensingClient.from_deployment(env.deployment, env.w3, owner.account)
    offer = licensing.offer(asset_id, LicenseKind.PARTNERSHIP, Terms(partner=partner.address)).offer_id
    licensing.with_account(partner.account).buy(offer, 0)


def _adapter_file(path: Path, state: dict[str, torch.Tensor]) -> Path:
    path.write_bytes(save(state))
    return path


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
    assets, uploads = [], []
    for i, (me, state) in enumerate(zip(people, adapters)):  # each registers its adapter, grants a Partnership
        asset_id, upload = _register(env, me, _adapter_file(tmp_path / f"adapter{i}.safetensors", state), vaulted=i == 1)
        _partnership(env, me, asset_id, orch)
        assets.append(asset_id)
        uploads.append(upload)

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
    for part, upload in zip(parts, uploads):
        store.update_data(job.id, {f"r/{part}/{k}": v for k, v in upload.items()})
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


@pytest.mark.parametrize("forgery", ["other_adapter", "wrong_key"])
def test_an_upload_that_is_not_the_named_asset_fails_the_job_before_anything_is_recorded(
    env: GameEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forgery: str,  # noqa: F811
) -> None:
    """A participant cannot pass off another adapter as its registered asset (Shares follow the asset)."""
    monkeypatch.setenv("COLLAB_PASSPHRASE", "pw")
    orch_home = tmp_path / "orch"
    orch = _home(env, orch_home, f"forge-orch-{forgery}", True)
    people = [_home(env, tmp_path / f"p{i}", f"forge-{forgery}-{i}", True) for i in range(2)]
    registered = [_register(env, me, _adapter_file(tmp_path / f"a{i}.safetensors", _adapter(i)), vaulted=True)
                  for i, me in enumerate(people)]
    assets, uploads = [a for a, _ in registered], [u for _, u in registered]
    if forgery == "other_adapter":  # p1 sends a different file than its asset (sha256 ≠ contentHash)
        uploads[1] = {"adapter": base64.b64encode(save(_adapter(7))).decode()}
    else:  # p1 sends its blob with p0's key (does not open p1's keyCommitment)
        uploads[1] = {**uploads[1], "adapter_key": uploads[0]["adapter_key"]}
    registry = MergeRegistryClient.from_deployment(env.deployment, env.w3, orch.account)
    handler = MergeJob(orch_home, registry=registry, account=orch.account,
                       vault=Vault(Settings.resolve(home=orch_home, env={}).vault_dir, owner=orch.x25519_public),
                       assets=AssetRegistryClient.from_deployment(env.deployment, env.w3))
    parts = [p.address.lower() for p in people]
    store = JobStore(tmp_path / "jobs.db")
    job, _ = store.create("merge", {"participants": parts, "method": "linear", "assets": assets, "needs": parts})
    for part, upload in zip(parts, uploads):
        store.update_data(job.id, {f"r/{part}/{k}": v for k, v in upload.items()})
    handlers: dict[str, object] = {"merge": handler}
    assert step(store, handlers, store.get(job.id)).state == JobState.COLLECTING  # type: ignore[arg-type]
    assert step(store, handlers, store.get(job.id)).state == JobState.COMPUTING  # type: ignore[arg-type]
    failed = step(store, handlers, store.get(job.id))  # type: ignore[arg-type]
    assert failed.state == JobState.FAILED
    expected = "is not asset" if forgery == "other_adapter" else "does not open asset"
    assert parts[1] in failed.error and expected in failed.error and str(assets[1]) in failed.error
    assert handler.vault.list() == [] and "claim_id" not in failed.data  # nothing vaulted, recorded or claimed


def test_nodes_name_their_own_adapter_assets_when_the_job_names_none(
    env: GameEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    """A submitter need not know the participants' asset ids: each node reports its own with its upload
    (``collab node start --adapter-asset``); the same checks apply, and a malformed id fails the job."""
    monkeypatch.setenv("COLLAB_PASSPHRASE", "pw")
    orch_home = tmp_path / "orch"
    orch = _home(env, orch_home, "own-assets-orch", True)
    people = [_home(env, tmp_path / f"p{i}", f"own-assets-{i}", True) for i in range(2)]
    registered = [_register(env, me, _adapter_file(tmp_path / f"a{i}.safetensors", _adapter(i)), vaulted=i == 0)
                  for i, me in enumerate(people)]
    for me, (asset_id, _) in zip(people, registered):
        _partnership(env, me, asset_id, orch)
    registry = MergeRegistryClient.from_deployment(env.deployment, env.w3, orch.account)
    handler = MergeJob(orch_home, registry=registry, account=orch.account,
                       vault=Vault(Settings.resolve(home=orch_home, env={}).vault_dir, owner=orch.x25519_public),
                       assets=AssetRegistryClient.from_deployment(env.deployment, env.w3))
    handlers: dict[str, object] = {"merge": handler}
    parts = [p.address.lower() for p in people]
    store = JobStore(tmp_path / "jobs.db")

    def computed(reports: list[dict[str, object]], weights: list[float]) -> Job:
        job, _ = store.create("merge", {"participants": parts, "method": "linear", "weights": weights, "needs": parts})
        for part, report in zip(parts, reports):
            store.update_data(job.id, {f"r/{part}/{k}": v for k, v in report.items()})
        for _ in range(3):
            job = step(store, handlers, store.get(job.id))  # type: ignore[arg-type]
        return job

    malformed = computed([{**registered[0][1], "adapter_asset": "one"}, registered[1][1]], [1.0, 2.0])
    assert malformed.state == JobState.FAILED and parts[0] in malformed.error and "malformed" in malformed.error
    done = computed([{**upload, "adapter_asset": asset_id} for asset_id, upload in registered], [1.0, 3.0])
    assert done.state == JobState.COMPUTED, done.error
    assert done.data["parents"] == [a for a, _ in registered] and done.data["audience"] == "participants"
    assert {c["account"].lower(): c["weight"] for c in done.data["contributors"]} == {parts[0]: 10**6, parts[1]: 3 * 10**6}
