"""Secure inference as a product: license gate, metering, ε ledgers, HE heads, and the MPC job.

Real anvil with every contract deployed, real licenses bought by Sahara-ID
holders, real call receipts posted; the owner's model is a tiny BERT (random
weights, its own WordPiece vocabulary) written by transformers into a temp
dir and registered as an asset, so the party processes stay seconds long.
The multi-process tests are marked slow.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

import collab.mpc.service as service
from chain.client import ContractClient, default_artifacts
from chain.clients.licensing import LicenseKind, LicensingClient, Terms
from chain.clients.revenue_distributor import RevenueDistributorClient
from chain.deploy import DEFAULT_PARAMS
from chain.deployment import Deployment
from chain.errors import revert_class
from collab import bls
from collab.config import Settings
from collab.dp.output import Budgets, EpsilonLedger, OutputNoise, analytic_gaussian_sigma
from collab.errors import EXIT_NOT_FOUND, EXIT_UNAUTHORIZED, EXIT_UNAVAILABLE, ProtocolViolation, Unauthorized, Unavailable
from collab.he.ckks_head import CkksClient, LinearHead, evaluate, save_head
from collab.metering import sign_call_receipt
from collab.mpc.model import reference_embeddings, tokenize
from collab.mpc.service import (
    CLIENT, HELPER, LOOKUP_CACHE, OWNER, InferRequest, OwnerNode, ServiceParties, check_license, run_inference,
)  # fmt: skip

FEE = 10**15
BPS = 10_000
COMPUTE_FEE_BPS = DEFAULT_PARAMS["COMPUTE_FEE_BPS"]
TEXT = "A man is playing a guitar."
WORDS = "a man is playing guitar secure inference keeps the weights and text private hello world".split()


# --------------------------------------------------------------------------- the owner's model


def make_tiny_bert(out: Path) -> Path:
    """A 1-layer, 16-wide BERT with a 22-token vocabulary, in transformers' directory format."""
    from transformers import BertConfig, BertModel, BertTokenizer

    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + WORDS) + "\n")
    BertTokenizer(str(out / "vocab.txt"), do_lower_case=True).save_pretrained(out)
    config = BertConfig(vocab_size=22, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(out)
    return out


def _sha(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


# --------------------------------------------------------------------------- chain actors


def _actor(w3: Web3, label: str) -> LocalAccount:
    account: LocalAccount = Account.from_key(Web3.keccak(text=f"collab infer tests: {label}"))
    w3.provider.make_request("anvil_setBalance", [account.address, hex(10**22)])  # type: ignore[arg-type]
    return account


def _contract(w3: Web3, deployment: Deployment, name: str, account: LocalAccount) -> ContractClient:
    artifact = default_artifacts()[deployment.artifact_name(name)]
    return ContractClient(w3, deployment.address(name), artifact.abi, account, name=name)


def _register_identity(w3: Web3, deployment: Deployment, account: LocalAccount, name: str) -> None:
    identity = _contract(w3, deployment, "IdentityRegistry", account)
    params = _contract(w3, deployment, "ProtocolParams", account)
    stake = int(params._call("get", Web3.keccak(text="ADMISSION_STAKE")))
    sk = bls.keygen(name.encode())
    pop = bls.prove_possession(sk, int(w3.eth.chain_id), identity.address, account.address)
    keys = (Web3.keccak(text=f"curve {name}"), Web3.keccak(text=f"x25519 {name}"), bls.sk_to_pk(sk), pop)
    identity._transact("register", name, 0, keys, value=stake)


def _register_asset(w3: Web3, deployment: Deployment, owner: LocalAccount, content_hash: bytes) -> int:
    assets = _contract(w3, deployment, "AssetRegistry", owner)
    result = assets._transact("register", (0, content_hash, bytes(32), bytes(32), "", [], 0))
    return int(result.events_named("AssetRegistered")[0].args["assetId"])


@dataclass
class Env:
    w3: Web3
    deployment: Deployment
    owner: LocalAccount
    buyers: list[LocalAccount]
    stranger: LocalAccount  # no Sahara ID, no license
    helper: LocalAccount  # the third compute node's account
    encoder_asset: int
    classifier_asset: int
    model: Path
    head: LinearHead
    owner_home: Path

    def lic(self, account: LocalAccount) -> LicensingClient:
        return LicensingClient.from_deployment(self.deployment, self.w3, account)

    def node(self, *, batch: int = 1, budgets: Budgets | None = None, home: Path | None = None) -> OwnerNode:
        settings = Settings.resolve(home=home or self.owner_home, env={})
        return OwnerNode(settings, self.w3, self.deployment, self.owner, (self.helper.address,), batch,
                         budgets=budgets or Budgets())

    def buy(self, buyer: LocalAccount, kind: LicenseKind, asset: int | None = None, *, credit_calls: int = 10,
            duration: int = 0) -> int:
        asset = asset or self.encoder_asset
        if kind == LicenseKind.API:
            offer = self.lic(self.owner).offer(asset, kind, Terms(fee_per_call=FEE, duration=duration)).offer_id
            return self.lic(buyer).buy(offer, credit_calls * FEE).license_id
        offer = self.lic(self.owner).offer(asset, kind, Terms(price=FEE, duration=duration or 3600)).offer_id
        return self.lic(buyer).buy(offer, FEE).license_id


def _owner_home(root: Path, served: dict[int, dict[str, str]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for asset, entry in served.items():
        lines.append(f"[serve.{asset}]")
        lines += [f'{k} = "{v}"' for k, v in entry.items()]
    (root / "config.toml").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def env(w3: Web3, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    root = tmp_path_factory.mktemp("infer")
    model = make_tiny_bert(root / "tiny-bert")
    rng = np.random.default_rng(3)
    head = LinearHead(rng.normal(size=(3, 16)), rng.normal(size=3) * 0.1, ("sport", "tech", "politics"))
    save_head(head, root / "head.json")
    owner = _actor(w3, "owner")
    buyers = [_actor(w3, f"buyer-{i}") for i in range(3)]
    for account, name in [(owner, "infer-owner")] + [(b, f"infer-buyer-{i}") for i, b in enumerate(buyers)]:
        _register_identity(w3, deployment, account, name)
    encoder_asset = _register_asset(w3, deployment, owner, _sha(model / "model.safetensors"))
    classifier_asset = _register_asset(w3, deployment, owner, _sha(root / "head.json"))
    home = _owner_home(root / "owner-home", {
        encoder_asset: {"model": str(model)},
        classifier_asset: {"model": str(model), "head": str(root / "head.json")},
    })  # fmt: skip
    yield Env(w3, deployment, owner, buyers, _actor(w3, "stranger"), _actor(w3, "helper"), encoder_asset,
              classifier_asset, model, head, home)
    w3.provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]


@pytest.fixture
def spy_launch(monkeypatch: pytest.MonkeyPatch) -> list[dict[int, dict[str, Any]]]:
    """Records every party launch (and still runs the real processes)."""
    calls: list[dict[int, dict[str, Any]]] = []
    real = service.launch_parties

    def launch(jobs: dict[int, dict[str, Any]], timeout: float) -> dict[int, dict[str, Any]]:
        calls.append(jobs)
        return real(jobs, timeout)

    monkeypatch.setattr(service, "launch_parties", launch)
    return calls


def _plaintext(env: Env, texts: list[str], seq_len: int = 8) -> np.ndarray:
    return reference_embeddings(tokenize(texts, seq_len, env.model), env.model).double().numpy()


# --------------------------------------------------------------------------- license gate


def test_unlicensed_call_is_refused_before_any_party_starts(env: Env, chain_snapshot: str, tmp_path: Path,
                                                            spy_launch: list[Any]) -> None:
    request = InferRequest(env.encoder_asset, (TEXT,), "mpc", 2, "dealer", seq_len=8)
    with pytest.raises(Unauthorized, match="holds no API or Long-term license") as err:
        run_inference(env.node(), env.stranger, request, client_home=tmp_path)
    assert err.value.exit_code == EXIT_UNAUTHORIZED
    assert spy_launch == []  # no party process was started


def test_unknown_asset_is_not_found(env: Env, tmp_path: Path) -> None:
    with pytest.raises(revert_class("UnknownAsset")) as err:
        run_inference(env.node(), env.buyers[0], InferRequest(999_999, (TEXT,), seq_len=8), client_home=tmp_path)
    assert err.value.exit_code == EXIT_NOT_FOUND


def test_expired_long_term_license_is_refused(env: Env, chain_snapshot: str, time_travel: Callable[[int], int],
                                              tmp_path: Path, spy_launch: list[Any]) -> None:
    buyer = env.buyers[0]
    lid = env.buy(buyer, LicenseKind.LONG_TERM, duration=100)
    node = env.node()
    grant = check_license(node.licensing(), node.assets(), env.encoder_asset, buyer.address)
    assert (grant.kind, grant.license_id) == ("long-term", lid)
    time_travel(200)
    with pytest.raises(Unauthorized, match=f"Long-term license {lid} expired"):
        run_inference(node, buyer, InferRequest(env.encoder_asset, (TEXT,), "mpc", 2, "dealer", seq_len=8),
                      client_home=tmp_path)
    assert spy_launch == []


def test_exhausted_api_license_is_refused_counting_unposted_calls(env: Env, chain_snapshot: str, tmp_path: Path) -> None:
    buyer = env.buyers[1]
    lid = env.buy(buyer, LicenseKind.API, credit_calls=2)
    _owner_home(tmp_path / "owner", {env.encoder_asset: {"model": str(env.model)}})
    node = env.node(batch=100, home=tmp_path / "owner")  # the node holds receipts instead of posting each
    plain = InferRequest(env.encoder_asset, (TEXT,), "plain", seq_len=8)
    for _ in range(2):
        run_inference(node, buyer, plain, client_home=tmp_path)
    assert env.lic(buyer).license(lid).escrow == 2 * FEE  # nothing posted yet: credits still on-chain ...
    with pytest.raises(Unauthorized, match=rf"API license {lid} is exhausted.*2 signed call\(s\) await posting"):
        run_inference(node, buyer, plain, client_home=tmp_path)  # ... but already promised to 2 signed calls
    posted = node.meter().flush(node.licensing())
    assert [(p.total_calls, p.calls, p.amount) for p in posted] == [(2, 2, 2 * FEE)]
    with pytest.raises(Unauthorized, match="exhausted"):
        run_inference(node, buyer, plain, client_home=tmp_path)


# --------------------------------------------------------------------------- metering


def test_metered_call_pays_share_holders_and_a_replay_is_not_paid(env: Env, chain_snapshot: str, tmp_path: Path) -> None:
    buyer = env.buyers[2]
    lid = env.buy(buyer, LicenseKind.API, credit_calls=5)
    _owner_home(tmp_path / "owner", {env.encoder_asset: {"model": str(env.model)}})
    node = env.node(home=tmp_path / "owner")
    distributor = RevenueDistributorClient.from_deployment(env.deployment, env.w3, env.owner)
    lic = env.lic(env.owner)
    claimable0, credited0 = distributor.claimable(env.encoder_asset, env.owner.address), lic.credited(env.owner.address)

    result = run_inference(node, buyer, InferRequest(env.encoder_asset, (TEXT,), "plain", seq_len=8),
                           client_home=tmp_path)
    compute = FEE * COMPUTE_FEE_BPS // BPS  # one compute party in plain/2PC mode: the owner's node
    assert result.receipt is not None and result.receipt["total_calls"] == 1
    assert [(p["calls"], p["amount"], p["compute_fee_per_party"]) for p in result.posted] == [(1, FEE, compute)]
    assert distributor.claimable(env.encoder_asset, env.owner.address) - claimable0 == FEE - compute
    assert lic.credited(env.owner.address) - credited0 == compute
    assert lic.license(lid).calls_paid == 1 and lic.license(lid).escrow == 4 * FEE
    np.testing.assert_allclose(result.outputs, _plaintext(env, [TEXT]), atol=1e-5)

    receipt, signature, _ = node.meter().latest(lid)  # type: ignore[misc]
    with pytest.raises(revert_class("StaleCallReceipt")):  # the contract refuses to pay a replay
        lic.post_call_receipt(receipt, signature, [env.owner.address])
    with pytest.raises(ProtocolViolation, match="stale call receipt"):  # and the node refuses to store one
        node.meter().accept(lic, receipt, signature, buyer.address, [env.owner.address])
    forged = sign_call_receipt(env.stranger, lic.domain(), receipt.next(b"x"))
    with pytest.raises(ProtocolViolation, match="not by the licensee"):
        node.meter().accept(lic, receipt.next(b"x"), forged, buyer.address, [env.owner.address])
    assert node.meter().flush(lic) == []
    assert distributor.claimable(env.encoder_asset, env.owner.address) - claimable0 == FEE - compute


# --------------------------------------------------------------------------- DP on outputs


def test_noise_calibration() -> None:
    gauss = OutputNoise.calibrate(1.0, 16)
    assert gauss.l2_sensitivity == 2.0  # two unit-norm outputs differ by at most 2
    assert gauss.scale < 2.0 * np.sqrt(2 * np.log(1.25 / gauss.delta))  # analytic beats the classic bound
    assert analytic_gaussian_sigma(2.0, 1e-6, 2.0) < gauss.scale  # more ε, less noise
    lap = OutputNoise.calibrate(1.0, 16, mechanism="laplace")
    assert lap.scale == pytest.approx(2.0 * 4.0)  # L1 sensitivity 2 * sqrt(16)
    samples = gauss.sample((20000,), np.random.default_rng(0))
    assert np.std(samples) == pytest.approx(gauss.scale, rel=0.03)
    with pytest.raises(Exception, match="positive"):
        OutputNoise.calibrate(0.0, 16)


def test_epsilon_ledger_stops_a_licensee_and_pooled_identities(env: Env, chain_snapshot: str, tmp_path: Path,
                                                               spy_launch: list[Any]) -> None:
    home = _owner_home(tmp_path / "owner", {env.encoder_asset: {"model": str(env.model)}})
    node = env.node(home=home, budgets=Budgets(licensee=1.0, asset=1.5))
    for buyer in env.buyers:
        env.buy(buyer, LicenseKind.LONG_TERM)
    query = InferRequest(env.encoder_asset, (TEXT,), "plain", dp_epsilon=0.6, seq_len=8)
    first = run_inference(node, env.buyers[0], query, client_home=tmp_path)
    assert first.dp is not None and first.dp["spent_licensee"] == pytest.approx(0.6)
    noised, clean = np.asarray(first.outputs), _plaintext(env, [TEXT])
    assert 0 < np.linalg.norm(noised - clean)  # the client sees only the noised output
    with pytest.raises(Unauthorized, match="privacy budget exhausted.*ε=0.6 of its ε=1"):
        run_inference(node, env.buyers[0], query, client_home=tmp_path)
    run_inference(node, env.buyers[1], query, client_home=tmp_path)  # ε=1.2 of the asset's 1.5
    with pytest.raises(Unauthorized, match=r"asset \d+'s privacy budget is exhausted"):
        run_inference(node, env.buyers[2], query, client_home=tmp_path)  # a third identity cannot pool
    # The ledger is persisted in the owner's home: a restarted node sees the same spend.
    ledger = EpsilonLedger(home / "dp_ledger.db", Budgets(licensee=1.0, asset=1.5))
    assert ledger.spent(env.encoder_asset) == pytest.approx(1.2)
    assert ledger.spent(env.encoder_asset, env.buyers[0].address) == pytest.approx(0.6)


def test_budgets_from_the_owners_config_and_license_terms(env: Env, tmp_path: Path) -> None:
    home = _owner_home(tmp_path / "owner", {})
    (home / "config.toml").write_text(
        "[metering]\nbatch = 4\n[dp]\nlicensee_budget = 3.0\nasset_budget = 7.5\nrequire = true\n"
        "[dp.license_budgets]\n12 = 0.5\n"
    )
    node = OwnerNode.from_home(Settings.resolve(home=home, env={}), env.w3, env.deployment, env.owner)
    assert (node.batch, node.require_dp) == (4, True)
    assert (node.budgets.for_license(12), node.budgets.for_license(13), node.budgets.asset) == (0.5, 3.0, 7.5)
    ledger = node.ledger()
    with pytest.raises(Unauthorized, match="of its ε=0.5"):  # license 12's terms allow less than the default
        ledger.reserve(1, env.buyers[0].address, 12, OutputNoise.calibrate(0.6, 16))
    charge = ledger.reserve(1, env.buyers[0].address, 13, OutputNoise.calibrate(0.6, 16))
    ledger.release(charge)  # a failed job gives its ε back
    assert ledger.spent(1) == 0.0


# --------------------------------------------------------------------------- HE heads


def test_ckks_head_matches_plaintext_and_rejects_bad_requests() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=16)
    x /= np.linalg.norm(x)
    client = CkksClient()
    for poly in ((), (0.1, 1.0, 0.5)):
        head = LinearHead(rng.normal(size=(4, 16)), rng.normal(size=4), ("a", "b", "c", "d"), poly)
        got = client.decrypt(evaluate(client.request(x), head), head.classes)
        np.testing.assert_allclose(got, head.plain(x), atol=1e-3)
    noise = np.array([0.5, -1.0, 2.0, 0.25])  # the owner's DP draw joins under encryption
    noised = client.decrypt(evaluate(client.request(x), head, noise), head.classes)
    np.testing.assert_allclose(noised, head.plain(x) + noise, atol=1e-3)
    wrong = LinearHead(rng.normal(size=(2, 8)), np.zeros(2), ())
    with pytest.raises(Exception, match="expects 8"):
        evaluate(client.request(x), wrong)
    with pytest.raises(Exception, match="malformed"):
        evaluate(b"\x00" * 20, wrong)


def test_he_mode_classifies_like_plaintext_for_a_licensee(env: Env, chain_snapshot: str, tmp_path: Path) -> None:
    buyer = env.buyers[0]
    env.buy(buyer, LicenseKind.LONG_TERM, env.classifier_asset)
    texts = (TEXT, "secure inference keeps the text private")
    node = env.node()
    he = run_inference(node, buyer, InferRequest(env.classifier_asset, texts, "he", seq_len=8), client_home=tmp_path)
    plain = run_inference(node, buyer, InferRequest(env.classifier_asset, texts, "plain", seq_len=8),
                          client_home=tmp_path)
    np.testing.assert_allclose(he.outputs, plain.outputs, atol=1e-3)
    np.testing.assert_allclose(plain.outputs, env.head.plain(_plaintext(env, list(texts))), atol=1e-5)
    assert he.labels == plain.labels and set(he.labels or []) <= set(env.head.labels)
    assert he.license["kind"] == "long-term" and he.receipt is None  # long-term calls are not metered


# --------------------------------------------------------------------------- real party processes


@pytest.mark.slow
def test_mpc_3pc_metered_classifier_matches_plaintext(env: Env, chain_snapshot: str, tmp_path: Path,
                                                      spy_launch: list[Any]) -> None:
    buyer = env.buyers[1]
    env.buy(buyer, LicenseKind.API, env.classifier_asset, credit_calls=3)
    home = _owner_home(tmp_path / "owner", {env.classifier_asset: {"model": str(env.model),
                                                                   "head": str(env.model.parent / "head.json")}})
    node = env.node(home=home, budgets=Budgets(licensee=50.0, asset=50.0))
    lic = env.lic(env.owner)
    helper0 = lic.credited(env.helper.address)
    request = InferRequest(env.classifier_asset, (TEXT,), "mpc", 3, "dealer", dp_epsilon=20.0, seq_len=8)
    result = run_inference(node, buyer, request, client_home=tmp_path)
    jobs = spy_launch[0]
    assert sorted(jobs) == [OWNER, CLIENT, HELPER]
    assert "texts" not in jobs[OWNER] and jobs[CLIENT].get("noise") is None  # who knows what
    assert jobs[OWNER]["noise"] is not None and jobs[CLIENT]["dp"] is True  # the owner's noise joins inside MPC
    assert result.dp is not None and result.dp["l2_sensitivity"] == pytest.approx(2 * env.head.lipschitz)
    clean = env.head.plain(_plaintext(env, [TEXT]))
    # What the client opened is the clean head output plus exactly the owner's draw (to fixed-point precision).
    np.testing.assert_allclose(np.asarray(result.outputs) - np.asarray(jobs[OWNER]["noise"]), clean, atol=5e-3)
    assert np.abs(np.asarray(result.outputs) - clean).max() > 1e-3
    per_party = FEE * COMPUTE_FEE_BPS // BPS // 2  # owner's node and the helper node
    assert [p["compute_fee_per_party"] for p in result.posted] == [per_party]
    assert lic.credited(env.helper.address) - helper0 == per_party


@pytest.mark.slow
def test_mpc_dealer_and_he_preprocessing_give_the_same_embedding(env: Env, spy_launch: list[Any],
                                                                 tmp_path: Path, owner_parties: Any) -> None:
    node = OwnerNode(Settings.resolve(home=env.owner_home, env={}), env.w3, env.deployment, env.owner)
    outputs, lookups, sent = {}, {}, {}
    for pre in ("dealer", "he", "he again"):  # the owner queries its own asset: no license needed, nothing metered
        request = InferRequest(env.encoder_asset, ("hello world",), "mpc", 2, pre.split()[0], seq_len=4)
        result = run_inference(node, env.owner, request, client_home=tmp_path)
        outputs[pre], lookups[pre] = np.asarray(result.outputs), result.stats["lookup_s"]
        sent[pre] = result.stats.get("offline_bytes_sent", 0)
    # The client kept the word table of its first HE query (collab.he.table_cache), so the second was not sent it.
    (kept,) = (tmp_path / LOOKUP_CACHE).iterdir()
    assert sent["he"] - sent["he again"] > 0.9 * (kept / "table.bin").stat().st_size > 0
    assert [jobs[OWNER]["provider"] for jobs in spy_launch] == ["TFP", "HE", "HE"]
    # The HE path looks the words up obliviously (collab.he.lookup); the dealer path multiplies the one-hot.
    assert lookups["he"] > 0 and lookups["he again"] > 0 and lookups["dealer"] == 0
    # One persistent owner party served all three; it encrypted its word table once, for the first HE query.
    party = owner_parties.party(env.model)
    assert party is not None and party.log().count("word table encrypted") == 1
    np.testing.assert_allclose(outputs["he"], outputs["dealer"], atol=2e-3)
    np.testing.assert_allclose(outputs["he again"], outputs["he"], atol=2e-3)
    clean = _plaintext(env, ["hello world"], 4)
    cos = float((outputs["he"] @ clean.T).item() / np.linalg.norm(outputs["he"]))
    assert cos > 0.999


@pytest.mark.slow
def test_a_party_dying_mid_job_fails_cleanly(env: Env) -> None:
    common = {"seq_len": 8, "batch": 1, "out_dim": 16, "provider": "TFP", "model_dir": str(env.model), "dp": False,
              "head_classes": 0}
    group = ServiceParties({OWNER: dict(common), CLIENT: dict(common, texts=[TEXT])}, timeout=120)
    group.start()
    deadline = time.monotonic() + 90
    while "shared" not in group.log(CLIENT) and time.monotonic() < deadline:
        time.sleep(0.05)
    group.procs[CLIENT].kill()
    t0 = time.monotonic()
    with pytest.raises(Unavailable, match="party 1 .*exited"):
        group.wait()
    assert time.monotonic() - t0 < 30
    assert all(p.poll() is not None for p in group.procs.values())  # nothing left running


@pytest.mark.slow
def test_a_failed_job_costs_neither_a_call_nor_epsilon(env: Env, chain_snapshot: str, tmp_path: Path) -> None:
    buyer = env.buyers[0]
    lid = env.buy(buyer, LicenseKind.API, credit_calls=3)
    home = _owner_home(tmp_path / "owner", {env.encoder_asset: {"model": str(env.model)}})
    node = env.node(home=home, batch=100)
    run_inference(node, buyer, InferRequest(env.encoder_asset, (TEXT,), "plain", dp_epsilon=1.0, seq_len=8),
                  client_home=tmp_path)
    # seq 32 exceeds the model's 16 positions: the owner's party rejects its job, the client's is killed.
    bad = InferRequest(env.encoder_asset, (TEXT,), "mpc", 2, "dealer", dp_epsilon=1.0, seq_len=32, timeout=60)
    with pytest.raises(Unavailable, match="party 0 \\(owner\\).*exceeds the model's 16 positions"):
        run_inference(node, buyer, bad, client_home=tmp_path)
    meter = node.meter()
    held = meter.latest(lid)
    assert held is not None and held[0].total_calls == 1 and meter.unposted(lid) == 1
    assert node.ledger().spent(env.encoder_asset, buyer.address) == pytest.approx(1.0)
    again = run_inference(node, buyer, InferRequest(env.encoder_asset, (TEXT,), "plain", seq_len=8),
                          client_home=tmp_path)
    assert again.receipt is not None and again.receipt["total_calls"] == 2


@pytest.fixture
def owner_parties() -> Iterator[Any]:
    """The owner node's persistent parties (this test process acts as the owner's node), fresh; closed afterwards.

    Earlier tests in this process may have left a party for the same model in the pool: close it first.
    """
    from collab.mpc.persistent import owner_parties as pool

    pool().close()
    yield pool()
    pool().close()


@pytest.mark.slow
def test_calls_share_the_owners_party_and_a_killed_party_fails_the_call_then_recovers(
        env: Env, chain_snapshot: str, tmp_path: Path, owner_parties: Any) -> None:
    import os
    import signal
    import threading

    buyer = env.buyers[2]
    lid = env.buy(buyer, LicenseKind.API, credit_calls=5)
    node = env.node(home=_owner_home(tmp_path / "owner", {env.encoder_asset: {"model": str(env.model)}}), batch=100)
    request = InferRequest(env.encoder_asset, (TEXT,), "mpc", 2, "dealer", seq_len=8, timeout=120)
    first, second = (run_inference(node, buyer, request, client_home=tmp_path) for _ in range(2))
    pid = first.stats["owner_party"]["pid"]
    assert second.stats["owner_party"] == {**first.stats["owner_party"], "query": 2}  # same process, model loaded once
    clean = _plaintext(env, [TEXT])
    for result in (first, second):
        out = np.asarray(result.outputs)
        assert float((out @ clean.T).item() / np.linalg.norm(out)) > 0.999

    # SIGKILL the owner's party mid-query: the client gets a clear error (exit 5), is charged nothing ...
    failed: list[BaseException] = []
    party = owner_parties.party(env.model)
    assert party is not None and party.log().count("rank 0 shared") == 2
    call = threading.Thread(target=lambda: _capture(failed, run_inference, node, buyer, request, client_home=tmp_path))
    call.start()
    deadline = time.monotonic() + 120
    while party.log().count("rank 0 shared") < 3 and time.monotonic() < deadline:  # the third query is online
        time.sleep(0.05)
    assert party.pid == pid
    os.kill(pid, signal.SIGKILL)
    call.join(timeout=150)
    assert not call.is_alive() and len(failed) == 1 and isinstance(failed[0], Unavailable)
    assert failed[0].exit_code == EXIT_UNAVAILABLE
    assert f"MPC party 0 (owner, pid {pid}) died during the query (killed by SIGKILL)" in str(failed[0])
    assert "the next call starts a fresh one" in str(failed[0])
    held = node.meter().latest(lid)
    assert held is not None and held[0].total_calls == 2
    # ... and the next call starts a fresh party.
    again = run_inference(node, buyer, request, client_home=tmp_path)
    assert again.stats["owner_party"]["pid"] != pid and again.stats["owner_party"]["query"] == 1
    np.testing.assert_allclose(again.outputs, first.outputs, atol=2e-3)
    assert again.receipt is not None and again.receipt["total_calls"] == 3


def _capture(errors: list[BaseException], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        errors.append(exc)


# --------------------------------------------------------------------------- the command


def test_cli_exit_codes(env: Env, chain_snapshot: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    from collab.cli import run
    from collab.identity import Identity

    monkeypatch.setenv("COLLAB_PASSPHRASE", "pw")
    client_home = tmp_path / "client"
    client = Identity.create(client_home, "pw", scrypt_n=2**4).account
    Identity.create(tmp_path / "owner-id", "pw", scrypt_n=2**4)
    (tmp_path / "owner-id" / "config.toml").write_text((env.owner_home / "config.toml").read_text())
    dep = tmp_path / "deployment.json"
    env.deployment.save(dep)
    base = ["--home", str(client_home), "--deployment", str(dep), "infer"]
    owner = ["--owner-home", str(tmp_path / "owner-id"), "--text", TEXT, "--seq-len", "8"]
    assert run(base + [str(env.encoder_asset)] + owner) == EXIT_UNAUTHORIZED
    assert run(base + ["999999"] + owner) == EXIT_NOT_FOUND
    # Licensed: the embedding comes back as JSON on stdout.
    env.w3.provider.make_request("anvil_setBalance", [client.address, hex(10**22)])  # type: ignore[arg-type]
    _register_identity(env.w3, env.deployment, client, "infer-cli-client")
    env.buy(client, LicenseKind.LONG_TERM)
    capsys.readouterr()
    assert run(["--json"] + base + [str(env.encoder_asset), "--mode", "plain"] + owner) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["license"]["kind"] == "long-term" and len(out["outputs"][0]) == 16
    down = json.loads(dep.read_text())
    down["rpc_url"] = "http://127.0.0.1:9"
    dep.write_text(json.dumps(down))
    assert run(base + [str(env.encoder_asset)] + owner) == EXIT_UNAVAILABLE
