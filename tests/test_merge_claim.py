"""Claimed merges: programs that compute mergekit's merge, licensed asset inputs, MergeRegistry settlement, a cheater.

Offline: each claimable method's VM output equals mergekit's on a tiny BERT and
the stored file re-commits to the claim's output root. On a real anvil: the
CLI refuses an unlicensed asset (exit 4), merges a Full-access-licensed asset
decrypted with the key delivered on-chain, posts the claim, and finalization
registers the merged asset with its parent (the parent's royalty copied) and
Shares by merge weight; a wrong merge claim is challenged by the input owner's
watcher and lost, and nothing is minted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import BertConfig, BertModel

from chain.clients.asset_registry import AssetInput, AssetKind, AssetRegistryClient
from chain.clients.claim_manager import ClaimStatus
from chain.clients.licensing import LicenseKind, LicensingClient, Terms
from chain.clients.merge_registry import MergedAsset, MergeInput, MergeRegistryClient
from chain.clients.shares import SharesClient
from chain.deploy import DEFAULT_PARAMS
from chain.errors import revert_class
from collab.config import Settings
from collab.errors import BadInput
from collab.fraudproof.program import Op
from collab.fraudproof.vm import Value
from collab.identity import Identity
from collab.merge import merge, parse_config
from collab.merge.claimed import ClaimedOutput, execute, record_and_post, verify_artifact
from collab.merge.programs import build_plan
from collab.vault import Vault
from test_claim_manager import GameEnv, env, game_env, register_identity  # noqa: F401 - fixtures
from test_claims_cli import _home, cli
from test_one_step_verifier import verifier  # noqa: F401 - fixture

TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
        "vocab_size": 50, "max_position_embeddings": 16}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny base BERT and three seeded 'fine-tunes' on disk (small config: the claimed path commits every element)."""
    root = tmp_path_factory.mktemp("claim-zoo")
    torch.manual_seed(0)
    base = BertModel(BertConfig(**TINY))
    base.save_pretrained(root / "base")
    for i in range(3):
        model = BertModel(base.config)
        model.load_state_dict(base.state_dict())
        gen = torch.Generator().manual_seed(i + 1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=gen))
        model.save_pretrained(root / f"ft{i}")
    return {p.name: p for p in root.iterdir()}


def _cfg(zoo: dict[str, Path], method: str, weights: list[float], **params: Any) -> dict[str, Any]:
    per = [{"weight": w} for w in weights]
    if method == "ties":
        per = [p | {"density": 0.5} for p in per]
    cfg: dict[str, Any] = {"merge_method": method, "models": [{"model": str(zoo[f"ft{i}"]), "parameters": p}
                                                              for i, p in enumerate(per)]}
    if method != "linear":
        cfg["base_model"] = str(zoo["base"])
    if params:
        cfg["parameters"] = params
    return cfg


# --------------------------------------------------------------------- offline: the program is mergekit's merge


@pytest.mark.parametrize(("method", "weights", "params"), [
    ("linear", [1.0, 0.5], {}),
    ("task_arithmetic", [1.0, 0.5], {"lambda": 0.7}),
    ("ties", [1.0, 1.0], {"lambda": 0.9}),
    ("ties", [1.0, 0.5], {}),  # weighted: mergekit's disjoint mean divides by the agreeing inputs' weight sum
    ("ties", [0.5, 0.3, 0.2], {"lambda": 0.8}),
    ("ties", [1.0, 0.123456], {}),  # real-valued weights: no small-integer ratio
    ("ties", [0.37, 2.9e-3, 0.41], {"lambda": 0.9}),
])
def test_claimed_program_output_equals_mergekit_and_the_artifact_recommits_to_the_claim(
    zoo: dict[str, Path], tmp_path: Path, method: str, weights: list[float], params: dict[str, Any]
) -> None:
    spec = parse_config(_cfg(zoo, method, weights, **params))
    merge(spec, tmp_path / "mergekit")
    out = execute(build_plan(spec.resolve_assets(None)), tmp_path / "vm", zoo["base"])
    ref, got = load_file(str(tmp_path / "mergekit" / "model.safetensors")), load_file(str(out.out_dir / "model.safetensors"))
    assert set(got) == set(ref)
    for name in got:  # 2^-22-ish quantisation of inputs and outputs; TIES trims and elects exactly as mergekit
        np.testing.assert_allclose(got[name].double().numpy(), ref[name].double().numpy(), atol=2e-6, err_msg=name)
    assert got["encoder.layer.0.attention.self.query.weight"].dtype == torch.float32
    # the stored file is exactly the dequantised VM output: re-quantised, it commits to the claim's output root
    assert verify_artifact(out.out_dir, out.trace)
    BertModel.from_pretrained(out.out_dir)


def test_claimed_merges_refuse_what_the_vm_cannot_prove(zoo: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="positive weights"):
        build_plan(parse_config(_cfg(zoo, "ties", [1.0, -0.5])).resolve_assets(None))
    with pytest.raises(BadInput, match="cannot be claimed"):
        build_plan(parse_config({**_cfg(zoo, "linear", [1.0, 1.0]), "merge_method": "slerp",
                                 "base_model": str(zoo["base"]), "parameters": {"t": 0.5}}).resolve_assets(None))
    spec = parse_config({"merge_method": "linear", "models": [{"model": "asset:7", "parameters": {"weight": 1}}]})
    assert spec.models[0].ref is not None and spec.models[0].ref.asset_id == 7
    with pytest.raises(BadInput, match="asset:<id>"):
        parse_config({"merge_method": "linear", "models": [{"model": "asset:x", "parameters": {"weight": 1}}]})


# --------------------------------------------------------------------- inputs hashed once (known_roots)


def _input_roots(plan: Any, trace: Any) -> dict[str, bytes]:
    return {n: trace.committed(v).root for n, v in plan.job.inputs.items()}


def test_a_linear_merges_input_words_do_not_depend_on_the_merge(zoo: dict[str, Path]) -> None:
    a = build_plan(parse_config(_cfg(zoo, "linear", [1.0, 0.5])).resolve_assets(None))
    b = build_plan(parse_config(_cfg(zoo, "linear", [0.2, 3.0], normalize=False)).resolve_assets(None))
    # 3.2x the output's bound: some outputs (LayerNorm's ~1.0 weights) get fewer fractional bits
    assert any(x.out_header != y.out_header for x, y in zip(a.job.program.steps, b.job.program.steps))
    for name, v in a.job.inputs.items():  # m0 and m1 are ft0 and ft1 in both merges
        assert v.header == b.job.inputs[name].header and np.array_equal(v.data, b.job.inputs[name].data), name
    assert a.sources == b.sources and set(a.sources) == set(a.job.inputs)
    assert a.job.program.root != b.job.program.root  # the weights (and output bits) differ


def test_known_input_roots_give_the_same_claim_without_rehashing(zoo: dict[str, Path], tmp_path: Path) -> None:
    from collab.fraudproof.known_roots import KnownRoots

    roots = KnownRoots(tmp_path / "home")
    plain = execute(build_plan(parse_config(_cfg(zoo, "linear", [1.0, 0.5])).resolve_assets(None)), tmp_path / "a", zoo["base"])
    first = execute(build_plan(parse_config(_cfg(zoo, "linear", [1.0, 0.5])).resolve_assets(None)), tmp_path / "b",
                    zoo["base"], roots)
    assert first.seconds["inputs_known"] == 0 and roots.path.is_file()
    # a different merge over the same files: every input root is known, nothing about the claim changes
    plan = build_plan(parse_config(_cfg(zoo, "linear", [0.2, 3.0])).resolve_assets(None))
    second = execute(plan, tmp_path / "c", zoo["base"], roots)
    fresh = plan.job.trace()
    assert second.seconds["inputs_known"] == len(plan.job.inputs)
    assert (second.trace.input_root, second.trace.root, second.trace.output_root) == (fresh.input_root, fresh.root,
                                                                                     fresh.output_root)
    assert _input_roots(plan, second.trace) == _input_roots(plan, fresh)
    assert plain.trace.input_root == first.trace.input_root and verify_artifact(second.out_dir, second.trace)
    # a proof over a known input rebuilds its tree, checked against the cached root
    c = second.trace.committed(plan.job.inputs["m0/embeddings.word_embeddings.weight"])
    assert c is not None and c.tree.root == c.chunk_root


def test_a_rewritten_input_file_is_rehashed_and_a_damaged_cache_is_only_a_miss(zoo: dict[str, Path],
                                                                              tmp_path: Path) -> None:
    import shutil

    from collab.fraudproof.known_roots import KnownRoots

    for name in ("ft0", "ft1"):
        shutil.copytree(zoo[name], tmp_path / name)
    cfg = _cfg({**zoo, "ft0": tmp_path / "ft0", "ft1": tmp_path / "ft1"}, "linear", [1.0, 1.0])
    roots = KnownRoots(tmp_path / "home")
    execute(build_plan(parse_config(cfg).resolve_assets(None)), tmp_path / "a", zoo["base"], roots)
    # ft1 rewritten in place (other weights, same name): its roots are recomputed, ft0's still known
    torch.manual_seed(9)
    other = BertModel(BertConfig(**TINY))
    other.save_pretrained(tmp_path / "ft1")
    plan = build_plan(parse_config(cfg).resolve_assets(None))
    out = execute(plan, tmp_path / "b", zoo["base"], roots)
    assert out.seconds["inputs_known"] == sum(n.startswith("m0/") for n in plan.job.inputs)
    assert out.trace.input_root == plan.job.trace().input_root
    roots.path.write_bytes(b"not a database")  # damaged: a logged miss, the claim unchanged
    again = execute(build_plan(parse_config(cfg).resolve_assets(None)), tmp_path / "c", zoo["base"], roots)
    assert again.seconds["inputs_known"] == 0 and again.trace.input_root == out.trace.input_root


def test_a_decrypted_asset_keeps_its_known_roots_across_fresh_directories(zoo: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from collab.fraudproof.known_roots import KnownRoots
    from collab.merge.config import ResolvedAsset

    runs = iter(range(100))

    def decrypt(asset_id: int) -> ResolvedAsset:  # as VaultResolver: a fresh directory per resolution
        out = tmp_path / f"asset-{asset_id}-{next(runs)}"
        shutil.copytree(zoo["ft0"], out)
        return ResolvedAsset(out, "vault:blob-7:key-7")

    cfg = {"merge_method": "linear", "models": [{"model": "asset:7", "parameters": {"weight": 1.0}},
                                                {"model": str(zoo["ft1"]), "parameters": {"weight": 1.0}}]}
    roots = KnownRoots(tmp_path / "home")
    first = execute(build_plan(parse_config(cfg).resolve_assets(decrypt)), tmp_path / "a", zoo["base"], roots)
    plan = build_plan(parse_config(cfg).resolve_assets(decrypt))
    second = execute(plan, tmp_path / "b", zoo["base"], roots)
    assert first.seconds["inputs_known"] == 0 and second.seconds["inputs_known"] == len(plan.job.inputs)
    assert plan.sources["m0/pooler.dense.weight"].startswith("vault:blob-7:key-7|")
    assert second.trace.input_root == first.trace.input_root == plan.job.trace().input_root


def test_a_wrong_known_root_is_caught_when_a_proof_needs_the_tree(zoo: dict[str, Path]) -> None:
    from collab.errors import ProtocolViolation
    from collab.fraudproof.trace import Committed

    plan = build_plan(parse_config(_cfg(zoo, "linear", [1.0, 1.0])).resolve_assets(None))
    value = plan.job.inputs["m0/embeddings.word_embeddings.weight"]
    wrong = Committed.known(value, b"\x11" * 32)
    trace = plan.job.trace(known={"m0/embeddings.word_embeddings.weight": wrong})
    assert trace.input_root != plan.job.trace().input_root  # only the claimer's own claim is wrong ...
    with pytest.raises(ProtocolViolation, match="does not match its words"):
        wrong.tree  # ... and it cannot serve a proof for it


# --------------------------------------------------------------------- on-chain


def _vault(home: Path, me: Identity) -> Vault:
    return Vault(Settings.resolve(home=home, env={}).vault_dir, owner=me.x25519_public)


def _full_access(env: GameEnv, owner: Identity, owner_home: Path, licensee: Identity, licensee_home: Path,
                 weights: Path, time_travel: Callable[[int], int], royalty_bps: int = 0) -> int:
    """``owner`` registers ``weights`` from its vault; ``licensee`` buys Full-access, gets the key on-chain and the blob."""
    owner_vault = _vault(owner_home, owner)
    entry = owner_vault.put(weights)
    assets = AssetRegistryClient.from_deployment(env.deployment, env.w3, owner.account)
    asset_id = assets.register(AssetInput(AssetKind.MODEL, entry.content_hash, key_commitment=entry.key_commitment or bytes(32),
                                          vault_uri=entry.uri, derivative_royalty_bps=royalty_bps)).asset_id
    licensing = LicensingClient.from_deployment(env.deployment, env.w3, owner.account)
    offer = licensing.offer(asset_id, LicenseKind.FULL_ACCESS, Terms(price=10**15)).offer_id
    license_id = licensing.with_account(licensee.account).buy(offer, 10**15).license_id
    licensing.deliver_key(license_id, owner_vault.add_recipient(entry.id, owner.x25519_private_key, licensee.x25519_public))
    time_travel(DEFAULT_PARAMS["KEY_DISPUTE_WINDOW"] + 1)
    licensing.release(license_id)
    # the owner's blob server hands out the encrypted blob; the licensee checks it against the chain by hash
    _vault(licensee_home, licensee).import_blob(owner_vault.export(entry.id), expected_id=entry.content_hash.hex())
    return asset_id


@pytest.fixture
def parties(env: GameEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[Path, Identity]]:
    monkeypatch.setenv("COLLAB_PASSPHRASE", "pw")
    for var in ("COLLAB_DEPLOYMENT", "COLLAB_RPC_URL", "COLLAB_HOME"):
        monkeypatch.delenv(var, raising=False)
    return {name: (tmp_path / name, _home(env, tmp_path / name, f"merge-{name}", True))
            for name in ("merger", "owner", "stranger")}


def _write(tmp_path: Path, name: str, cfg: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_cli_claimed_merge_of_a_licensed_asset_registers_lineage_and_shares_by_weight(
    env: GameEnv, zoo: dict[str, Path], parties: dict[str, tuple[Path, Identity]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], time_travel: Callable[[int], int],
) -> None:
    (merger_home, merger), (owner_home, owner), (stranger_home, stranger) = parties.values()
    licensed = _full_access(env, owner, owner_home, merger, merger_home, zoo["ft0"] / "model.safetensors", time_travel,
                            royalty_bps=700)
    foreign = AssetRegistryClient.from_deployment(env.deployment, env.w3, stranger.account).register(
        AssetInput(AssetKind.MODEL, b"\x07" * 32)).asset_id
    cfg = {"merge_method": "ties", "base_model": str(zoo["base"]), "parameters": {"lambda": 1.0},
           "models": [{"model": f"asset:{licensed}", "parameters": {"weight": 1.0, "density": 0.5}},
                      {"model": str(zoo["ft1"]), "parameters": {"weight": 1.0, "density": 0.5}}]}

    # An input neither owned nor licensed: refused on-chain before any tensor is read, exit 4, nothing written.
    bad = _write(tmp_path, "bad.yml", {**cfg, "models": [{"model": f"asset:{foreign}", "parameters": {"weight": 1.0}},
                                                         cfg["models"][1]]})
    code, _, err = cli(capsys, merger_home, "merge", "run", str(bad), "--claim", "--out", str(tmp_path / "bad-out"))
    assert code == 4 and f"asset {foreign}" in err and "not licensed" in err and "Traceback" not in err
    assert not (tmp_path / "bad-out").exists()

    # Unclaimed: the licensed asset is decrypted with the Full-access key delivered on-chain and merged by mergekit.
    good = _write(tmp_path, "good.yml", cfg)
    code, out, err = cli(capsys, merger_home, "--json", "merge", "run", str(good), "--out", str(tmp_path / "plain"))
    assert code == 0, err
    assert json.loads(out)["assets"][0]["basis"] == "full-access"

    # Claimed.
    code, out, err = cli(capsys, merger_home, "--json", "merge", "run", str(good), "--claim", "--merger-share", "2000",
                         "--out", str(tmp_path / "claimed"))
    assert code == 0, err
    posted = json.loads(out)
    claim_id = bytes.fromhex(posted["claim_id"][2:])
    assert posted["parents"] == [licensed]
    assert {c["account"]: c["weight"] for c in posted["contributors"]} == {owner.address: 10**6, merger.address: 10**6}
    mergekit_out = load_file(str(tmp_path / "plain" / "model.safetensors"))
    claimed_out = load_file(str(tmp_path / "claimed" / "model.safetensors"))
    for name, t in claimed_out.items():
        np.testing.assert_allclose(t.numpy(), mergekit_out[name].numpy(), atol=2e-6)
    BertModel.from_pretrained(tmp_path / "claimed")
    manager = env.manager()
    assert manager.is_audience(claim_id, owner.address) and manager.is_audience(claim_id, merger.address)
    assert not manager.is_audience(claim_id, stranger.address)
    code, _, err = cli(capsys, merger_home, "merge", "run", str(good), "--claim", "--out", str(tmp_path / "again"))
    # the same merge cannot be claimed twice (a re-run reads its record back, so one cut short before posting completes)
    assert code != 0 and "DuplicateClaim" in err and "Traceback" not in err

    registry = MergeRegistryClient.from_deployment(env.deployment, env.w3)
    assert registry.settled_asset(claim_id) == 0  # nothing before finalization
    time_travel(manager.params_of(claim_id).challenge_window)
    code, out, err = cli(capsys, merger_home, "--json", "merge", "finalize", posted["claim_id"])
    assert code == 0, err
    asset = json.loads(out)["asset"]
    assert asset["owner"] == merger.address and asset["parents"] == [{"id": licensed, "bps": 700}]
    assert asset["commitment_root"] == posted["output_root"] and asset["content_hash"] == posted["content_hash"]
    shares = SharesClient.from_deployment(env.deployment, env.w3)
    supply = shares.total_supply(asset["id"])
    keep = supply * 2000 // 10_000
    assert shares.balance_of(owner.address, asset["id"]) == (supply - keep) // 2
    assert shares.balance_of(merger.address, asset["id"]) == supply - (supply - keep) // 2
    # the registered blob is in the merger's vault and is the file it wrote
    vault = _vault(merger_home, merger)
    assert vault.get(asset["content_hash"][2:], merger.x25519_private_key) == (tmp_path / "claimed" / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_a_wrong_merge_claim_is_challenged_by_the_input_owner_and_loses_and_mints_nothing(
    env: GameEnv, zoo: dict[str, Path], parties: dict[str, tuple[Path, Identity]], tmp_path: Path,
    time_travel: Callable[[int], int],
) -> None:
    from collab.fraudproof.blobserver import BlobServer
    from collab.fraudproof.watcher import Watcher

    (merger_home, merger), (owner_home, owner), _ = parties.values()
    licensed = _full_access(env, owner, owner_home, merger, merger_home, zoo["ft0"] / "model.safetensors", time_travel)
    spec = parse_config({"merge_method": "linear", "models": [
        {"model": f"asset:{licensed}", "parameters": {"weight": 2.0}}, {"model": str(zoo["ft1"]), "parameters": {"weight": 1.0}}]})
    plan = build_plan(spec.resolve_assets(lambda _: zoo["ft0"]))  # the same weights the vault would decrypt
    honest = execute(plan, tmp_path / "out", zoo["base"])
    step = next(i for i, s in enumerate(plan.job.program.steps) if s.op == Op.WEIGHTED_SUM)
    value = honest.trace.outputs[step].value
    flat = value.flat().copy()
    flat[3] += 1
    overrides = {step: Value(value.header, flat.reshape(value.header.shape))}
    cheat = ClaimedOutput(plan, plan.job.trace(overrides), honest.out_dir, honest.weights_sha256)

    def client(cls: Any, me: Identity) -> Any:
        return cls.from_deployment(env.deployment, env.w3, me.account)

    from chain.clients.bisection_game import BisectionGameClient
    from chain.clients.claim_manager import ClaimManagerClient
    from chain.clients.data_availability import DataAvailabilityClient

    registry = client(MergeRegistryClient, merger)
    count_before = AssetRegistryClient.from_deployment(env.deployment, env.w3).asset_count()
    posted = record_and_post(cheat, merger=merger.account, home=merger_home, vault=_vault(merger_home, merger),
                             manager=client(ClaimManagerClient, merger), game=client(BisectionGameClient, merger),
                             data=client(DataAvailabilityClient, merger), registry=registry, overrides=overrides)
    from collab.fraudproof.store import Store

    server = BlobServer(Store(merger_home), int(env.w3.eth.chain_id), env.manager().is_audience).start()
    defender = Watcher(env.w3, env.deployment, merger.account, merger_home)
    challenger = Watcher(env.w3, env.deployment, owner.account, owner_home, [server.url])
    try:
        for _ in range(400):
            challenger.poll()
            defender.poll()
            if challenger.games() and not challenger.games("open"):
                break
        games = challenger.games()
        assert [g.status for g in games] == ["won"] and f"step {step} (WEIGHTED_SUM)" in games[0].detail
    finally:
        server.stop()
        defender.close()
        challenger.close()
    manager = env.manager()
    assert manager.claim_status(posted.claim_id) == ClaimStatus.REJECTED
    time_travel(manager.params_of(posted.claim_id).challenge_window)
    with pytest.raises(revert_class("ClaimNotFinalized")):
        registry.settle(posted.claim_id, manager.roots_of(posted.claim_id))
    assert registry.settled_asset(posted.claim_id) == 0
    assert AssetRegistryClient.from_deployment(env.deployment, env.w3).asset_count() == count_before


def test_merge_registry_checks_inputs_on_chain(env: GameEnv, parties: dict[str, tuple[Path, Identity]]) -> None:
    (_, merger), (_, owner), _ = parties.values()
    owned = AssetRegistryClient.from_deployment(env.deployment, env.w3, merger.account).register(
        AssetInput(AssetKind.MODEL, b"\x01" * 32)).asset_id
    foreign = AssetRegistryClient.from_deployment(env.deployment, env.w3, owner.account).register(
        AssetInput(AssetKind.MODEL, b"\x02" * 32)).asset_id
    registry = MergeRegistryClient.from_deployment(env.deployment, env.w3, merger.account)
    asset = MergedAsset(b"\x03" * 32)
    roots = (b"\x0a" * 32, b"\x0b" * 32, b"\x0c" * 32)
    assert registry.may_merge(owned, merger.address) and not registry.may_merge(foreign, merger.address)
    with pytest.raises(revert_class("InputNotLicensed")):
        registry.record(b"\x01" * 32, *roots, [MergeInput(owned, 1), MergeInput(foreign, 1)], asset)
    with pytest.raises(revert_class("InvalidMergeInputs")):
        registry.record(b"\x01" * 32, *roots, [MergeInput(owned, 1), MergeInput(owned, 2)], asset)
    rec = registry.record(b"\x01" * 32, *roots, [MergeInput(owned, 3), MergeInput(0, 1)], asset, merger_share_bps=100)
    assert rec.parents == (owned,) and rec.contributors == (merger.address,) and rec.weights == (4,)
    with pytest.raises(revert_class("MergeJobExists")):
        registry.record(b"\x01" * 32, *roots, [MergeInput(owned, 1)], asset)
    assert registry.is_participant(b"\x01" * 32, merger.address) and not registry.is_participant(b"\x01" * 32, owner.address)
    assert registry.share_split(1000, 100, [1, 2]) == (10 + 0, [330, 660])


def test_a_model_with_more_than_64_tensors_is_bundled_in_groups(tmp_path: Path) -> None:
    """A BUNDLE step takes at most 64 entries: bigger state dicts commit as a bundle of ≤64-tensor bundles."""
    torch.manual_seed(3)
    cfg = BertConfig(**(TINY | {"num_hidden_layers": 4}))
    base = BertModel(cfg)
    for i in range(2):
        model = BertModel(cfg)
        model.load_state_dict(base.state_dict())
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * (i + 1))
        model.save_pretrained(tmp_path / f"m{i}")
    spec = parse_config({"merge_method": "linear", "models": [
        {"model": str(tmp_path / f"m{i}"), "parameters": {"weight": 1.0}} for i in range(2)]})
    plan = build_plan(spec.resolve_assets(None))
    out = execute(plan, tmp_path / "out", tmp_path / "m0")
    assert len(load_file(str(out.out_dir / "model.safetensors"))) > 64
    assert out.trace.outputs[-1].value.header.shape == (2,)  # two groups
    assert verify_artifact(out.out_dir, out.trace)
    merge(spec, tmp_path / "mk")
    ref = load_file(str(tmp_path / "mk" / "model.safetensors"))
    for name, t in load_file(str(out.out_dir / "model.safetensors")).items():
        np.testing.assert_allclose(t.numpy(), ref[name].numpy(), atol=2e-6)


@pytest.mark.parametrize("native_kernel", [True, False])
def test_fast_quantise_is_bit_identical_to_to_vm(native_kernel: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The claimed path's quantiser (native one-pass kernel, or numpy) gives to_vm's words
    (ties to even, subnormals, saturation, NaN)."""
    import numpy as np
    import torch

    from collab.errors import BadInput
    from collab.fraudproof import native
    from collab.fraudproof.convert import to_vm
    from collab.merge.programs import quantise

    if not native_kernel:
        monkeypatch.setattr(native, "lib", lambda: None)
    elif native.lib() is None:
        pytest.skip("no C compiler")
    g = torch.Generator().manual_seed(0)
    ties = torch.tensor([0.5, 1.5, 2.5, -0.5, -2.5, -0.0, 1e-40])
    x = torch.cat([torch.randn(5000, generator=g) * 3, ties, torch.tensor([3e38, -3e38])])
    in_range = torch.cat([torch.randn(5000, generator=g) * 3, ties])  # the kernel's own path end to end
    for t, f in [(x, 20), (in_range, 20), (in_range / 2**20, 24), (x / 2**20, 24), (x.half().float(), 10),
                 (x.to(torch.bfloat16), 12), (x.double(), 16), (torch.arange(7), 0)]:
        words = quantise(t, f).data
        assert np.array_equal(words, to_vm(t, f)[0].data), (t.dtype, f)
        assert quantise(t[:100], f, float(t[:100].abs().max())).data.tolist() == to_vm(t[:100], f)[0].data.tolist()
    with pytest.raises(BadInput):
        quantise(torch.tensor([1.0, float("nan")]), 8)


def test_weighted_ties_steps_agree_on_chain(verifier: Any) -> None:  # noqa: F811
    """OneStepVerifier evaluates every step kind of the weighted disjoint mean, where inputs agree and where none do."""
    from collab.fraudproof.trace import Verdict
    from collab.merge.programs import _ties

    g = torch.Generator().manual_seed(5)
    base = {"w": torch.randn(4, 6, generator=g)}
    states = [{"w": base["w"] + 0.1 * torch.randn(4, 6, generator=g)} for _ in range(2)]
    job = _ties(base, states, [0.5, 0.5], 1.0, [1.0, 0.3217])
    trace = job.trace()
    kinds = (Op.SCALE, Op.TIES_SIGN, Op.TIES_MEAN, Op.MUL, Op.RECIPROCAL)
    steps = [i for i, s in enumerate(job.program.steps) if s.op in kinds]
    assert {job.program.steps[i].op for i in steps} == set(kinds)
    sign = next(i for i in steps if job.program.steps[i].op == Op.TIES_SIGN and len(job.program.steps[i].inputs) == 2)
    no_agreement = [e for e in range(24) if trace.expected(sign, e)[1] == bytes(32)]  # the sign word is 0
    assert no_agreement  # density 0.5 of two inputs: some elements keep neither delta (S empty, 0 · 1/0)
    for i in steps:
        for e in (0, 7, 23, no_agreement[0]):
            verdict, expected = trace.expected(i, e)
            assert verdict == Verdict.VALUE
            assert verifier.evaluate(job.program.steps[i], trace.one_step_inputs(i, e), e) == (int(verdict), expected)
