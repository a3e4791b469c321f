"""Harness shared by the revenue tests: Shares + RevenueDistributor on the session's anvil.

Assets come from the real ``AssetRegistry`` of the shared ``deployment``
(``registerBySettlement``, which lets the tests choose holders and parents
without registering identities) once every contract of docs/contracts.md
compiles. Before that, and for the one state the real registry can never
produce (a registered asset without Shares), a fresh stack is deployed
directly with ``AssetTreeFixture`` (tests/fixtures/contracts) standing in for
the registry's two views the distributor reads.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain.client import AbiRegistry, ContractClient, default_artifacts, deploy_contract
from chain.clients.revenue_distributor import RevenueDistributorClient
from chain.clients.shares import SharesClient
from chain.compiler import Artifact, compile_contracts
from chain.deployment import Deployment
from collab import bls

FIXTURE_CONTRACTS = Path(__file__).parent / "fixtures" / "contracts"
SHARE_SUPPLY = 1_000_000
ZERO_ADDRESS = "0x" + "00" * 20
# What deploy_all needs compiled before the shared deployment can exist.
FULL_STACK = (
    "ProtocolParams", "CollabToken", "CollabGovernor", "IdentityRegistry", "Shares",
    "AssetRegistry", "RevenueDistributor", "Receipts", "Licensing",
)

Register = Callable[[Mapping[str, int], Sequence[int], int], int]


@functools.lru_cache(maxsize=1)
def fixture_artifacts() -> dict[str, Artifact]:
    """The test-only contracts (ReentrantClaimer, AssetTreeFixture, ...)."""
    return compile_contracts(source_root=FIXTURE_CONTRACTS)


@functools.lru_cache(maxsize=1)
def abi_registry() -> AbiRegistry:
    """Decoder for every project and fixture error/event."""
    return AbiRegistry([a.abi for a in default_artifacts().values()] + [a.abi for a in fixture_artifacts().values()])


def full_stack_available() -> bool:
    """Whether every contract deploy_all deploys is compiled (the shared deployment can exist)."""
    compiled = default_artifacts()
    return all(name in compiled and compiled[name].deployable for name in FULL_STACK)


@dataclass
class RevenueEnv:
    """The contracts under test, their admin, and a way to register assets with chosen holders."""

    w3: Web3
    admin: LocalAccount
    shares: SharesClient
    distributor: RevenueDistributorClient
    assets_address: str
    register_fn: Register
    real_registry: bool

    def register(self, holders: Mapping[str, int], *, parents: Sequence[int] = (), royalty_bps: int = 0) -> int:
        """Register an asset whose Shares go to ``holders``; ``royalty_bps`` is what its children will pay it."""
        return self.register_fn(holders, parents, royalty_bps)

    def shares_as(self, account: LocalAccount) -> SharesClient:
        """Shares acting as ``account``."""
        return self.shares.with_account(account)

    def distributor_as(self, account: LocalAccount) -> RevenueDistributorClient:
        """The distributor acting as ``account``."""
        return self.distributor.with_account(account)

    def deploy_fixture(self, name: str, *args: Any, account: LocalAccount | None = None) -> ContractClient:
        """Deploy a test-only contract from tests/fixtures/contracts."""
        return deploy_fixture(self.w3, account or self.admin, name, *args)


def deploy_fixture(w3: Web3, account: LocalAccount, name: str, *args: Any) -> ContractClient:
    """Deploy ``name`` from tests/fixtures/contracts and return a client acting as ``account``."""
    artifact = fixture_artifacts()[name]
    address, _ = deploy_contract(w3, account, artifact, *args, registry=abi_registry())
    return ContractClient(w3, address, artifact.abi, account, registry=abi_registry(), name=name)


def deploy_project(w3: Web3, account: LocalAccount, name: str, *args: Any) -> ContractClient:
    """Deploy project contract ``name`` (chain/contracts) and return a generic client."""
    artifact = default_artifacts()[name]
    address, _ = deploy_contract(w3, account, artifact, *args, registry=abi_registry())
    return ContractClient(w3, address, artifact.abi, account, registry=abi_registry(), name=name)


def direct_env(w3: Web3, admin: LocalAccount) -> RevenueEnv:
    """A fresh Shares + AssetTreeFixture + RevenueDistributor, wired like deploy_all wires the real ones."""
    shares_c = deploy_project(w3, admin, "Shares", admin.address)
    tree = deploy_fixture(w3, admin, "AssetTreeFixture", shares_c.address)
    dist_c = deploy_project(w3, admin, "RevenueDistributor", shares_c.address, tree.address)
    shares = SharesClient(w3, shares_c.address, shares_c.abi, admin, registry=abi_registry(), name="Shares")
    distributor = RevenueDistributorClient(w3, dist_c.address, dist_c.abi, admin, registry=abi_registry(), name="RevenueDistributor")
    shares.initialize(distributor.address)
    shares.grant_role(shares.minter_role(), tree.address)

    def register(holders: Mapping[str, int], parents: Sequence[int], royalty_bps: int) -> int:
        tree._transact("register", list(parents), royalty_bps, list(holders), list(holders.values()))
        return int(tree._call("assetCount"))

    return RevenueEnv(w3, admin, shares, distributor, tree.address, register, real_registry=False)


def registered_owner(w3: Web3, admin: LocalAccount, deployment: Deployment) -> LocalAccount:
    """A dedicated funded account with an active Sahara ID: the owner of every test asset.

    A fresh key (not one of anvil's dev accounts) so no other test's identity
    registration can collide with it.
    """
    owner: LocalAccount = Account.from_key(Web3.keccak(text="collab revenue tests: asset owner"))
    w3.provider.make_request("anvil_setBalance", [owner.address, hex(10**21)])  # type: ignore[arg-type]
    artifact = default_artifacts()[deployment.artifact_name("IdentityRegistry")]
    identity = ContractClient(w3, deployment.address("IdentityRegistry"), artifact.abi, owner, registry=abi_registry(), name="IdentityRegistry")
    if int(identity._call("idOf", owner.address)) != 0:
        return owner
    params_artifact = default_artifacts()[deployment.artifact_name("ProtocolParams")]
    params = ContractClient(w3, deployment.address("ProtocolParams"), params_artifact.abi, admin, registry=abi_registry())
    stake = int(params._call("get", Web3.keccak(text="ADMISSION_STAKE")))
    secret = 424242
    pubkey, pop = bls.sk_to_pk(secret), bls.prove_possession(secret, int(w3.eth.chain_id), identity.address, owner.address)
    keys = (Web3.keccak(text="curve"), Web3.keccak(text="x25519"), pubkey, pop)
    identity._transact("register", "revenue-test-owner", 0, keys, value=stake)
    return owner


def deployment_env(w3: Web3, admin: LocalAccount, deployment: Deployment) -> RevenueEnv:
    """The shared deployment's contracts; assets registered through the real AssetRegistry."""
    owner = registered_owner(w3, admin, deployment)
    shares = SharesClient.from_deployment(deployment, w3, admin)
    distributor = RevenueDistributorClient.from_deployment(deployment, w3, admin)
    artifact = default_artifacts()[deployment.artifact_name("AssetRegistry")]
    assets = ContractClient(w3, deployment.address("AssetRegistry"), artifact.abi, admin, registry=abi_registry(), name="AssetRegistry")
    counter = iter(range(1, 1 << 30))

    def register(holders: Mapping[str, int], parents: Sequence[int], royalty_bps: int) -> int:
        tag = Web3.keccak(text=f"revenue-test-{next(counter)}-{sorted(holders.items())}-{list(parents)}")
        asset_input = (0, tag, tag, tag, "vault://revenue-test", list(parents), royalty_bps)
        result = assets._transact("registerBySettlement", asset_input, owner.address, list(holders), list(holders.values()))
        (registered,) = result.events_named("AssetRegistered")
        return int(registered.args["assetId"])

    return RevenueEnv(w3, admin, shares, distributor, assets.address, register, real_registry=True)


@pytest.fixture(scope="session")
def revenue_env(request: pytest.FixtureRequest, w3: Web3, deployer: LocalAccount) -> RevenueEnv:
    """The stack under test: the shared deployment when it can exist, else a direct one."""
    if full_stack_available():
        return deployment_env(w3, deployer, request.getfixturevalue("deployment"))
    return direct_env(w3, deployer)


@pytest.fixture(scope="session")
def direct_revenue_env(w3: Web3, deployer: LocalAccount) -> RevenueEnv:
    """A separate stack over AssetTreeFixture, for states the real registry cannot reach."""
    return direct_env(w3, deployer)


def split(holders: Sequence[LocalAccount], weights: Sequence[int], total: int = SHARE_SUPPLY) -> dict[str, int]:
    """``total`` Shares split by ``weights`` (the last holder takes the rounding)."""
    whole = sum(weights)
    amounts = [total * w // whole for w in weights]
    amounts[-1] += total - sum(amounts)
    out: dict[str, int] = {}
    for account, amount in zip(holders, amounts, strict=True):
        out[account.address] = out.get(account.address, 0) + amount
    return out
