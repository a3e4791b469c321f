"""AssetRegistry: registration by identities and by settlement, parents and royalties, ownership."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain.clients.asset_registry import AssetInput, AssetKind, AssetRegistryClient
from chain.clients.identity_registry import IdentityRegistryClient, Keys
from chain.clients.revenue_distributor import RevenueDistributorClient
from chain.clients.shares import SharesClient
from chain.deployment import Deployment
from chain.errors import revert_class
from collab import bls
from collab.cli import run as collab
from collab.errors import BadInput, NotFound, Unauthorized
from collab.identity import Identity
from collab.vault import Vault, key_commitment

SUPPLY = 1_000_000
ZERO = "0x" + "00" * 20


def content(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def model(label: str, *, parents: tuple[int, ...] = (), bps: int = 0, kind: AssetKind = AssetKind.MODEL) -> AssetInput:
    return AssetInput(
        kind=kind, content_hash=content(label), commitment_root=content("root:" + label),
        key_commitment=Web3.keccak(content("key:" + label)), vault_uri=f"vault://{label}",
        parents=parents, derivative_royalty_bps=bps,
    )


class World:
    """Clients of the shared deployment plus helpers to give accounts a Sahara ID."""

    def __init__(self, w3: Web3, deployment: Deployment, deployer: LocalAccount) -> None:
        self.w3 = w3
        self.assets = AssetRegistryClient.from_deployment(deployment, w3, deployer)
        self.identity = IdentityRegistryClient.from_deployment(deployment, w3, deployer)
        self.shares = SharesClient.from_deployment(deployment, w3, deployer)
        self.revenue = RevenueDistributorClient.from_deployment(deployment, w3, deployer)

    def enroll(self, account: LocalAccount) -> int:
        client = self.identity.with_account(account)
        keys = client.keys_for(bls.keygen(account.address.encode()), b"\x01" * 32, b"\x02" * 32)
        return client.register(account.address[:10], "human", keys).id

    def as_(self, account: LocalAccount) -> AssetRegistryClient:
        return self.assets.with_account(account)


@pytest.fixture
def world(w3: Web3, deployment: Deployment, deployer: LocalAccount, chain_snapshot: str) -> World:
    return World(w3, deployment, deployer)


@pytest.fixture
def alice(world: World, accounts: list[LocalAccount]) -> LocalAccount:
    world.enroll(accounts[1])
    return accounts[1]


@pytest.fixture
def bob(world: World, accounts: list[LocalAccount]) -> LocalAccount:
    world.enroll(accounts[2])
    return accounts[2]


# ------------------------------------------------------------------ register


def test_register_records_the_asset_and_mints_all_shares_to_the_creator(world: World, alice: LocalAccount) -> None:
    creator_id = world.identity.id_of(alice.address)
    before = world.assets.asset_count()
    spec = model("llama", bps=500, kind=AssetKind.ADAPTER)
    event = world.as_(alice).register(spec)
    assert event.asset_id == before + 1 == world.assets.asset_count()
    assert (event.creator_id, event.owner, event.kind) == (creator_id, alice.address, AssetKind.ADAPTER)
    assert (event.content_hash, event.commitment_root) == (spec.content_hash, spec.commitment_root)
    asset = world.assets.asset(event.asset_id)
    assert (asset.owner, asset.creator_id, asset.kind, asset.vault_uri) == (alice.address, creator_id, AssetKind.ADAPTER, "vault://llama")
    assert (asset.content_hash, asset.commitment_root, asset.key_commitment) == (spec.content_hash, spec.commitment_root, spec.key_commitment)
    assert asset.derivative_royalty_bps == 500 and asset.parents == ()
    assert asset.registered_at == world.w3.eth.get_block("latest")["timestamp"]
    assert world.assets.exists(event.asset_id) and world.assets.owner_of(event.asset_id) == alice.address
    assert world.shares.balance_of(alice.address, event.asset_id) == SUPPLY == world.shares.total_supply(event.asset_id)
    assert world.assets.share_supply() == SUPPLY


def test_register_without_an_identity_reverts(world: World, accounts: list[LocalAccount]) -> None:
    with pytest.raises(revert_class("NoIdentity")) as err:
        world.as_(accounts[7]).register(model("anon"))
    assert isinstance(err.value, Unauthorized)


def test_register_after_exit_reverts(world: World, alice: LocalAccount) -> None:
    world.identity.with_account(alice).exit()
    with pytest.raises(revert_class("NoIdentity")):
        world.as_(alice).register(model("ghost"))


def test_zero_content_hash_and_bad_royalty_revert(world: World, alice: LocalAccount) -> None:
    with pytest.raises(revert_class("EmptyContentHash")):
        world.as_(alice).register(AssetInput(AssetKind.DATASET, bytes(32)))
    with pytest.raises(revert_class("InvalidRoyaltyBps")):
        world.as_(alice).register(model("greedy", bps=10_001))


def test_unknown_assets_are_not_found(world: World) -> None:
    missing = world.assets.asset_count() + 1
    assert not world.assets.exists(missing) and not world.assets.exists(0)
    for view in (world.assets.asset, world.assets.owner_of, world.assets.parents_of):
        with pytest.raises(revert_class("UnknownAsset")) as err:
            view(missing)
        assert isinstance(err.value, NotFound)


# ------------------------------------------------------------------ parents and royalties


def test_parent_rates_are_copied_at_registration(world: World, alice: LocalAccount, bob: LocalAccount) -> None:
    base = world.as_(alice).register(model("base", bps=1_000)).asset_id
    data = world.as_(bob).register(model("data", bps=2_500, kind=AssetKind.DATASET)).asset_id
    child = world.as_(bob).register(model("child", parents=(base, data))).asset_id
    assert world.assets.parents_of(child) == [(base, 1_000), (data, 2_500)]
    # A later change of the parent's rate affects future children only.
    world.as_(alice).set_derivative_royalty(base, 4_000)
    assert world.assets.parents_of(child) == [(base, 1_000), (data, 2_500)]
    later = world.as_(bob).register(model("later", parents=(base,))).asset_id
    assert world.assets.parents_of(later) == [(base, 4_000)]


def test_revenue_of_a_child_pays_its_parents_royalty(world: World, alice: LocalAccount, bob: LocalAccount) -> None:
    base = world.as_(alice).register(model("base", bps=1_000)).asset_id
    child = world.as_(bob).register(model("child", parents=(base,))).asset_id
    world.revenue.with_account(bob).pay(child, 10**18)
    assert world.revenue.claimable(base, alice.address) == 10**17
    assert world.revenue.claimable(child, bob.address) == 9 * 10**17


def test_too_many_parents_revert(world: World, alice: LocalAccount) -> None:
    ids = [world.as_(alice).register(model(f"p{i}")).asset_id for i in range(17)]
    assert world.assets.max_parents() == 16
    assert world.as_(alice).register(model("ok", parents=tuple(ids[:16]))).asset_id
    with pytest.raises(revert_class("TooManyParents")) as err:
        world.as_(alice).register(model("too many", parents=tuple(ids)))
    assert err.value.error_args == {"count": 17, "maxParents": 16}


def test_duplicate_parent_reverts(world: World, alice: LocalAccount) -> None:
    a = world.as_(alice).register(model("a")).asset_id
    b = world.as_(alice).register(model("b")).asset_id
    with pytest.raises(revert_class("DuplicateParent")) as err:
        world.as_(alice).register(model("dup", parents=(a, b, a)))
    assert err.value.error_args == {"parentId": a}


@pytest.mark.parametrize("offset", [0, 1, 1_000])
def test_unknown_parent_reverts(world: World, alice: LocalAccount, offset: int) -> None:
    missing = 0 if offset == 0 else world.assets.asset_count() + offset
    with pytest.raises(revert_class("UnknownParent")):
        world.as_(alice).register(model("orphan", parents=(missing,)))


def test_parent_royalties_above_100_percent_revert(world: World, alice: LocalAccount) -> None:
    a = world.as_(alice).register(model("a", bps=6_000)).asset_id
    b = world.as_(alice).register(model("b", bps=4_000)).asset_id
    c = world.as_(alice).register(model("c", bps=1)).asset_id
    assert world.as_(alice).register(model("exactly 100%", parents=(a, b))).asset_id
    with pytest.raises(revert_class("RoyaltyTooHigh")) as err:
        world.as_(alice).register(model("over", parents=(a, b, c)))
    assert err.value.error_args == {"totalBps": 10_001, "maxBps": 10_000}
    assert isinstance(err.value, BadInput)


# ------------------------------------------------------------------ settlement


def test_register_by_settlement_splits_the_shares(world: World, alice: LocalAccount, accounts: list[LocalAccount]) -> None:
    holders = [alice.address, accounts[3].address, accounts[4].address]
    event = world.assets.register_by_settlement(model("merged"), alice.address, holders, [600_000, 399_999, 1])
    assert event.owner == alice.address
    assert event.creator_id == world.identity.id_of(alice.address)
    assert [world.shares.balance_of(h, event.asset_id) for h in holders] == [600_000, 399_999, 1]
    assert world.shares.total_supply(event.asset_id) == SUPPLY


def test_register_by_settlement_is_settlement_only(world: World, alice: LocalAccount) -> None:
    with pytest.raises(revert_class("AccessControlUnauthorizedAccount")) as err:
        world.as_(alice).register_by_settlement(model("forged"), alice.address, [alice.address], [SUPPLY])
    assert isinstance(err.value, Unauthorized)


def test_register_by_settlement_checks_holders_and_owner(world: World, alice: LocalAccount, accounts: list[LocalAccount]) -> None:
    settle = world.assets.register_by_settlement
    with pytest.raises(revert_class("WrongShareTotal")):
        settle(model("short"), alice.address, [alice.address], [SUPPLY - 1])
    with pytest.raises(revert_class("HoldersLengthMismatch")):
        settle(model("mismatch"), alice.address, [alice.address, accounts[3].address], [SUPPLY])
    with pytest.raises(revert_class("HoldersLengthMismatch")):
        settle(model("empty"), alice.address, [], [])
    with pytest.raises(revert_class("AssetZeroAddress")):
        settle(model("zero holder"), alice.address, [ZERO], [SUPPLY])
    with pytest.raises(revert_class("NoIdentity")):
        settle(model("no owner id"), accounts[8].address, [accounts[8].address], [SUPPLY])


# ------------------------------------------------------------------ ownership


def test_ownership_transfer_moves_management_but_not_shares(world: World, alice: LocalAccount, bob: LocalAccount) -> None:
    asset_id = world.as_(alice).register(model("sold")).asset_id
    with pytest.raises(revert_class("NotAssetOwner")) as err:
        world.as_(bob).transfer_asset_ownership(asset_id, bob.address)
    assert isinstance(err.value, Unauthorized)
    with pytest.raises(revert_class("AssetZeroAddress")):
        world.as_(alice).transfer_asset_ownership(asset_id, ZERO)
    moved = world.as_(alice).transfer_asset_ownership(asset_id, bob.address)
    assert (moved.asset_id, moved.previous_owner, moved.new_owner) == (asset_id, alice.address, bob.address)
    assert world.assets.owner_of(asset_id) == bob.address
    assert world.shares.balance_of(alice.address, asset_id) == SUPPLY
    with pytest.raises(revert_class("NotAssetOwner")):
        world.as_(alice).set_derivative_royalty(asset_id, 100)
    assert world.as_(bob).set_derivative_royalty(asset_id, 100).bps == 100


def test_set_derivative_royalty_bounds(world: World, alice: LocalAccount) -> None:
    asset_id = world.as_(alice).register(model("r")).asset_id
    assert world.as_(alice).set_derivative_royalty(asset_id, 10_000).bps == 10_000
    with pytest.raises(revert_class("InvalidRoyaltyBps")):
        world.as_(alice).set_derivative_royalty(asset_id, 10_001)
    with pytest.raises(revert_class("UnknownAsset")):
        world.as_(alice).set_derivative_royalty(asset_id + 1, 1)


def test_client_rejects_malformed_inputs_before_sending(world: World, alice: LocalAccount) -> None:
    with pytest.raises(BadInput):
        world.as_(alice).register(AssetInput(AssetKind.MODEL, b"\x01" * 31))
    with pytest.raises(BadInput):
        AssetKind.parse("painting")


# ------------------------------------------------------------------ CLI: collab asset register|list|show


@pytest.fixture
def home(
    world: World, deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Identity]:
    """A home with keys, funds and a Sahara ID, pointing at the shared deployment."""
    monkeypatch.setenv("COLLAB_PASSPHRASE", "pw")
    for var in ("COLLAB_DEPLOYMENT", "COLLAB_RPC_URL", "COLLAB_HOME"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "home"
    me = Identity.create(path, "pw", scrypt_n=2**12)
    deployment.save(path / "deployment.json")
    world.w3.provider.make_request("anvil_setBalance", [me.address, hex(10**19)])  # type: ignore[arg-type]
    return path, me


def run_cli(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = collab(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_register_list_show(
    world: World, home: tuple[Path, Identity], alice: LocalAccount, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, me = home
    weights = tmp_path / "adapter.safetensors"
    weights.write_bytes(b"\x00\x01" * 50_000)
    parent = world.as_(alice).register(model("base", bps=700)).asset_id

    code, _, err = run_cli(capsys, path, "asset", "register", "--kind", "adapter", "--file", str(weights))
    assert code == 4 and "NoIdentity" in err  # keys but no Sahara ID yet
    code, _, err = run_cli(capsys, path, "asset", "register", "--kind", "adapter", "--file", str(weights), "--vault")
    assert code == 4 and "no active Sahara ID" in err
    assert not (path / "vault").exists() or not list((path / "vault" / "meta").iterdir())  # nothing stored

    client = world.identity.with_account(me.account)
    client.register("cli", "human", Keys(*me.registry_keys(world.w3.eth.chain_id, client.address)))
    root, key_commitment = "0x" + "ab" * 32, "0x" + Web3.keccak(b"\x07" * 32).hex().removeprefix("0x")
    code, out, err = run_cli(
        capsys, path, "--json", "asset", "register", "--kind", "adapter", "--file", str(weights),
        "--vault-uri", "ipfs://bafyadapter", "--parents", str(parent), "--royalty-bps", "250",
        "--commitment", root, "--key-commitment", key_commitment,
    )
    assert code == 0, err
    shown = json.loads(out)
    assert shown["content_hash"] == "0x" + hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (shown["commitment_root"], shown["key_commitment"], shown["vault_uri"]) == (root, key_commitment, "ipfs://bafyadapter")
    assert shown["in_vault"] is False
    assert (shown["kind"], shown["owner"], shown["derivative_royalty_bps"]) == ("adapter", me.address, 250)
    assert shown["parents"] == [{"id": parent, "bps": 700}]
    assert world.shares.balance_of(me.address, shown["id"]) == SUPPLY

    code, out, _ = run_cli(capsys, path, "--json", "asset", "show", str(shown["id"]))
    assert code == 0 and json.loads(out)["content_hash"] == shown["content_hash"]
    code, out, _ = run_cli(capsys, path, "--json", "asset", "list", "--owner", "me")
    assert code == 0 and [a["id"] for a in json.loads(out)["assets"]] == [shown["id"]]
    code, out, _ = run_cli(capsys, path, "--json", "asset", "list")
    assert code == 0 and {parent, shown["id"]} <= {a["id"] for a in json.loads(out)["assets"]}
    code, out, _ = run_cli(capsys, path, "asset", "list")
    assert code == 0 and "adapter" in out
    code, out, _ = run_cli(capsys, path, "asset", "show", str(shown["id"]))
    assert code == 0 and f"{parent} (700 bps)" in out


def test_cli_asset_errors_have_exit_codes(
    world: World, home: tuple[Path, Identity], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, me = home
    client = world.identity.with_account(me.account)
    client.register("cli", "human", Keys(*me.registry_keys(world.w3.eth.chain_id, client.address)))
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    base = ["asset", "register", "--kind", "dataset", "--file"]
    assert run_cli(capsys, path, *base, str(tmp_path / "missing.bin"))[0] == 3
    assert run_cli(capsys, path, *base, str(data), "--commitment", "0x1234")[0] == 2
    assert run_cli(capsys, path, *base, str(data), "--key-commitment", "zz" * 32)[0] == 2
    assert run_cli(capsys, path, *base, str(data), "--parents", "1,x")[0] == 2
    code, _, err = run_cli(capsys, path, *base, str(data), "--parents", "99999")
    assert code == 3 and "UnknownParent" in err
    assert run_cli(capsys, path, *base, str(data), "--royalty-bps", "10001")[0] == 1
    assert run_cli(capsys, path, *base, str(data), "--kind", "painting")[0] == 1
    assert run_cli(capsys, path, "asset", "show", "99999")[0] == 3
    assert run_cli(capsys, path, "asset", "list", "--owner", "nobody")[0] == 2


def test_history_and_wiring(world: World, alice: LocalAccount, bob: LocalAccount, deployment: Deployment) -> None:
    start = world.w3.eth.block_number + 1
    asset_id = world.as_(alice).register(model("h")).asset_id
    world.as_(alice).set_derivative_royalty(asset_id, 5)
    world.as_(alice).transfer_asset_ownership(asset_id, bob.address)
    kinds = [type(e).__name__ for e in world.assets.history(from_block=start)]
    assert kinds == ["AssetRegistered", "DerivativeRoyaltySet", "AssetOwnershipTransferred"]
    assert world.assets.identity_address() == deployment.address("IdentityRegistry")
    assert world.assets.shares_address() == deployment.address("Shares")
    assert world.shares.has_role(world.shares.minter_role(), world.assets.address)


def test_cli_registers_vault_blobs_with_their_key_commitment(
    world: World, home: tuple[Path, Identity], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, me = home
    client = world.identity.with_account(me.account)
    client.register("cli", "human", Keys(*me.registry_keys(world.w3.eth.chain_id, client.address)))
    weights = tmp_path / "model.bin"
    weights.write_bytes(bytes(range(256)) * 1000)
    plain_hash = "0x" + hashlib.sha256(weights.read_bytes()).hexdigest()

    code, out, err = run_cli(capsys, path, "--json", "asset", "register", "--kind", "model", "--file", str(weights), "--vault")
    assert code == 0, err
    first = json.loads(out)
    vault = Vault(path / "vault")
    entry = vault.entry(first["vault_uri"])
    blob = path / "vault" / "blobs" / entry.id
    # The stored file is the encrypted blob: anyone serving it can check it against contentHash.
    assert first["content_hash"] == "0x" + hashlib.sha256(blob.read_bytes()).hexdigest() == "0x" + entry.id
    assert first["plaintext_sha256"] == plain_hash and first["in_vault"] is True
    data_key = vault.data_key(entry.id, me.x25519_private_key)
    assert first["key_commitment"] == "0x" + key_commitment(data_key).hex() != "0x" + "00" * 32

    # The same file again, no flags: found in the vault by its plaintext hash.
    code, out, _ = run_cli(capsys, path, "--json", "asset", "register", "--kind", "model", "--file", str(weights))
    again = json.loads(out)
    assert code == 0 and (again["content_hash"], again["key_commitment"], again["vault_uri"]) == (
        first["content_hash"], first["key_commitment"], first["vault_uri"])

    # Named explicitly: the file must be that entry's plaintext (or blob), and the commitment must agree.
    other = tmp_path / "other.bin"
    other.write_bytes(b"something else")
    base = ["asset", "register", "--kind", "model", "--file"]
    assert run_cli(capsys, path, *base, str(other), "--vault-uri", first["vault_uri"])[0] == 2
    assert run_cli(capsys, path, *base, str(weights), "--vault-uri", "vault://" + "ee" * 32)[0] == 3
    assert run_cli(capsys, path, *base, str(weights), "--vault-uri", first["vault_uri"], "--key-commitment", "0x" + "11" * 32)[0] == 2
    assert run_cli(capsys, path, *base, str(weights), "--vault", "--vault-uri", first["vault_uri"])[0] == 1
    code, out, _ = run_cli(capsys, path, "--json", *base, str(blob), "--vault-uri", first["vault_uri"])
    assert code == 0 and json.loads(out)["content_hash"] == first["content_hash"]
    assert json.loads(out)["plaintext_sha256"] == plain_hash
