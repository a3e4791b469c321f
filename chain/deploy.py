"""Deploy and wire collab's contracts: the asset layer (docs/contracts.md), then the fraud-proof layer.

One function, :func:`deploy_all`, used by ``collab chain up``/``deploy``, the
test fixtures and the demo, so every chain collab talks to is wired the same
way: governed parameters set, roles granted, the timelock in charge.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain.client import AbiRegistry, ContractClient, TxResult, default_artifacts, deploy_contract, rpc_guard
from chain.compiler import Artifact
from chain.deployment import Deployment
from collab.errors import BadInput, InternalError

log = logging.getLogger(__name__)

ETHER = 10**18
DAY = 86_400
ZERO_ADDRESS = "0x" + "00" * 20

# Governed parameters (docs/contracts.md, docs/protocol.md): name -> default value.
DEFAULT_PARAMS: dict[str, int] = {
    "ADMISSION_STAKE": ETHER // 100,
    "GENESIS_REPUTATION": 100,
    "REPUTATION_HALF_LIFE": 30 * DAY,
    "MIN_REPUTATION_AGGREGATOR": 50,
    "MIN_REPUTATION_CLAIMER": 50,
    "COMPUTE_FEE_BPS": 1_000,
    "KEY_DELIVERY_TIMEOUT": DAY,
    "KEY_DISPUTE_WINDOW": DAY,
    "CHALLENGE_WINDOW": 3_600,
    "CLOCK_DURATION": 1_200,
    "CLOCK_EXTENSION": 60,
    "CLAIMER_BOND": ETHER // 10,
    "CHALLENGER_BOND": ETHER // 10,
    "BURN_BPS": 5_000,
    "DA_BOND": ETHER // 100,
    "DA_RESPONSE_WINDOW": 600,
}

# The demo runs whole games in real time: every window is seconds long.
DEMO_PARAMS: dict[str, int] = {
    **DEFAULT_PARAMS,
    "KEY_DELIVERY_TIMEOUT": 60,
    "KEY_DISPUTE_WINDOW": 20,
    "CHALLENGE_WINDOW": 20,
    "CLOCK_DURATION": 30,
    "CLOCK_EXTENSION": 5,
    "DA_RESPONSE_WINDOW": 15,
}


@dataclass(frozen=True)
class Governance:
    """Governor and timelock settings; times in seconds (the token uses a timestamp clock)."""

    voting_delay: int = DAY
    voting_period: int = 7 * DAY
    timelock_delay: int = 2 * DAY
    proposal_threshold: int = 0
    quorum_percent: int = 4
    token_supply: int = 1_000_000 * ETHER


PROFILES: dict[str, tuple[dict[str, int], Governance]] = {
    "default": (DEFAULT_PARAMS, Governance()),
    "demo": (DEMO_PARAMS, Governance(voting_delay=1, voting_period=20, timelock_delay=5)),
}

# Deployment order of docs/contracts.md (name in the deployment -> artifact).
CONTRACT_ORDER: tuple[str, ...] = (
    "ProtocolParams", "CollabToken", "TimelockController", "CollabGovernor", "IdentityRegistry",
    "Shares", "AssetRegistry", "RevenueDistributor", "Receipts", "Licensing",
)

# Fraud-proof layer (docs/protocol.md §4-§7), deployed after the asset layer.
FRAUD_PROOF_ORDER: tuple[str, ...] = ("OneStepVerifier", "ClaimManager", "BisectionGame", "DataAvailability")


def param_key(name: str) -> str:
    """The bytes32 key of a governed parameter: ``keccak256(name)`` as 0x-hex."""
    return "0x" + Web3.keccak(text=name).hex().removeprefix("0x")


def resolve_params(profile: str = "default", params: Mapping[str, int] | None = None) -> dict[str, int]:
    """Profile defaults overridden by ``params`` (names, not keys); unknown names are an error."""
    base, _ = _profile(profile)
    merged = dict(base)
    for name, value in (params or {}).items():
        if name not in base:
            raise BadInput(f"unknown protocol parameter {name!r} (known: {', '.join(sorted(base))})")
        if int(value) < 0:
            raise BadInput(f"protocol parameter {name} must be >= 0, got {value}")
        merged[name] = int(value)
    return merged


def _profile(profile: str) -> tuple[dict[str, int], Governance]:
    try:
        return PROFILES[profile]
    except KeyError:
        raise BadInput(f"unknown deploy profile {profile!r} (known: {', '.join(PROFILES)})") from None


@dataclass
class _Deployer:
    """Deploys artifacts and sends wiring transactions from one account."""

    w3: Web3
    account: LocalAccount
    artifacts: dict[str, Artifact]
    registry: AbiRegistry
    clients: dict[str, ContractClient] = field(default_factory=dict)
    first_block: int | None = None

    def deploy(self, name: str, *args: Any) -> ContractClient:
        artifact = self.artifacts.get(name)
        if artifact is None:
            raise InternalError(f"contract {name} is not among the compiled artifacts", hint="check chain/contracts/")
        address, result = deploy_contract(self.w3, self.account, artifact, *args, registry=self.registry)
        if self.first_block is None:
            self.first_block = result.block_number
        log.info("deployed %s at %s (gas %d)", name, address, result.gas_used)
        client = ContractClient(self.w3, address, artifact.abi, self.account, registry=self.registry, name=name)
        self.clients[name] = client
        return client

    def send(self, name: str, fn: str, *args: Any) -> TxResult:
        return self.clients[name]._transact(fn, *args)

    def read(self, name: str, fn: str, *args: Any) -> Any:
        return self.clients[name]._call(fn, *args)


def deploy_all(
    w3: Web3,
    deployer_account: LocalAccount,
    *,
    params: Mapping[str, int] | None = None,
    profile: str = "default",
    governance: Governance | None = None,
    voting_delay: int | None = None,
    voting_period: int | None = None,
    settlement_account: str | None = None,
    rpc_url: str | None = None,
) -> Deployment:
    """Deploy every asset-layer contract, wire roles and parameters, return the Deployment.

    ``params`` overrides governed parameters by name; ``profile`` ("default" or
    "demo") picks the defaults; ``voting_delay``/``voting_period`` (seconds)
    override the profile's governance timing. The settlement role goes to
    ``settlement_account`` (default: the deployer) until a claim manager exists.
    """
    values = resolve_params(profile, params)
    gov = governance or _profile(profile)[1]
    if voting_delay is not None or voting_period is not None:
        gov = Governance(
            voting_delay=gov.voting_delay if voting_delay is None else int(voting_delay),
            voting_period=gov.voting_period if voting_period is None else int(voting_period),
            timelock_delay=gov.timelock_delay,
            proposal_threshold=gov.proposal_threshold,
            quorum_percent=gov.quorum_percent,
            token_supply=gov.token_supply,
        )
    if gov.voting_period <= 0:
        raise BadInput("the governance voting period must be at least 1 second")
    artifacts = default_artifacts()
    d = _Deployer(w3, deployer_account, artifacts, AbiRegistry.from_artifacts(artifacts.values()))
    me = deployer_account.address
    settler = Web3.to_checksum_address(settlement_account or me)

    params_c = d.deploy("ProtocolParams", me)
    token = d.deploy("CollabToken", me, gov.token_supply)
    timelock = d.deploy("TimelockController", gov.timelock_delay, [], [ZERO_ADDRESS], me)
    governor = d.deploy(
        "CollabGovernor", token.address, timelock.address, gov.voting_delay, gov.voting_period,
        gov.proposal_threshold, gov.quorum_percent,
    )
    identity = d.deploy("IdentityRegistry", params_c.address, me)
    shares = d.deploy("Shares", me)
    assets = d.deploy("AssetRegistry", identity.address, shares.address, me)
    distributor = d.deploy("RevenueDistributor", shares.address, assets.address)
    d.deploy("Receipts", me)
    d.deploy("Licensing", params_c.address, identity.address, assets.address, distributor.address, me)

    # Shares <-> distributor hook, minting and settlement roles.
    d.send("Shares", "initialize", distributor.address)
    d.send("Shares", "grantRole", d.read("Shares", "MINTER_ROLE"), assets.address)
    for name in ("IdentityRegistry", "AssetRegistry", "Shares", "Receipts"):
        d.send(name, "grantRole", d.read(name, "SETTLEMENT_ROLE"), settler)

    # Governed parameters, then hand ProtocolParams to the timelock.
    for name, value in values.items():
        d.send("ProtocolParams", "set", param_key(name), value)
    d.send("ProtocolParams", "transferOwnership", timelock.address)

    # The timelock alone decides Full-access key disputes: the deployer gives its admin role up.
    licensing_admin = d.read("Licensing", "DEFAULT_ADMIN_ROLE")
    d.send("Licensing", "grantRole", licensing_admin, timelock.address)
    d.send("Licensing", "renounceRole", licensing_admin, me)

    # Timelock: the governor alone proposes and cancels; anyone executes; no admin left.
    d.send("TimelockController", "grantRole", d.read("TimelockController", "PROPOSER_ROLE"), governor.address)
    d.send("TimelockController", "grantRole", d.read("TimelockController", "CANCELLER_ROLE"), governor.address)
    d.send("TimelockController", "renounceRole", d.read("TimelockController", "DEFAULT_ADMIN_ROLE"), me)

    _deploy_fraud_proof(d, params_c.address, identity.address, assets.address, me)

    with rpc_guard(w3):
        chain_id = int(w3.eth.chain_id)
    url = rpc_url or str(getattr(w3.provider, "endpoint_uri", "") or "")
    contracts = {
        name: {"address": client.address, "abi_hash": artifacts[name].abi_hash, "artifact": name}
        for name, client in d.clients.items()
    }
    return Deployment(chain_id=chain_id, rpc_url=url, deploy_block=int(d.first_block or 0), contracts=contracts)


def _deploy_fraud_proof(d: _Deployer, params: str, identity: str, assets: str, admin: str) -> None:
    """ClaimManager + BisectionGame + DataAvailability, wired, with the settlement role on the asset layer.

    Skipped (with a warning) while the OneStepVerifier contract is not part of the
    sources yet: a game without its verifier could not end in a one-step proof.
    """
    if "OneStepVerifier" not in d.artifacts:
        log.warning("OneStepVerifier is not compiled: the fraud-proof contracts are not deployed")
        return
    verifier = d.clients.get("OneStepVerifier") or d.deploy("OneStepVerifier")
    manager = d.deploy("ClaimManager", params, identity, assets, d.clients["Licensing"].address, admin)
    game = d.deploy("BisectionGame", manager.address, verifier.address)
    da = d.deploy("DataAvailability", manager.address)
    d.send("ClaimManager", "initialize", game.address, da.address)
    for name in ("Shares", "Receipts", "AssetRegistry", "IdentityRegistry"):
        d.send(name, "grantRole", d.read(name, "SETTLEMENT_ROLE"), manager.address)
    _deploy_merge_registry(d, assets)
    _deploy_round_registry(d, identity, assets)


def _deploy_merge_registry(d: _Deployer, assets: str) -> None:
    """MergeRegistry (claimed merges, docs/merging.md): settlement roles and an allowed ClaimManager hook."""
    if "MergeRegistry" not in d.artifacts:
        return
    merges = d.deploy("MergeRegistry", d.clients["ClaimManager"].address, assets, d.clients["Receipts"].address,
                      d.clients["Licensing"].address)
    for name in ("Shares", "Receipts", "AssetRegistry"):
        d.send(name, "grantRole", d.read(name, "SETTLEMENT_ROLE"), merges.address)
    d.send("ClaimManager", "setSettlementHook", merges.address, True)


def _deploy_round_registry(d: _Deployer, identity: str, assets: str) -> None:
    """RoundRegistry (training rounds, docs/contracts.md): settlement roles, an allowed hook, REGISTRY_ROLE."""
    if "RoundRegistry" not in d.artifacts:
        return
    manager = d.clients["ClaimManager"].address
    rounds = d.deploy("RoundRegistry", identity, manager, assets, d.clients["Receipts"].address)
    for name in ("Shares", "Receipts", "AssetRegistry"):
        d.send(name, "grantRole", d.read(name, "SETTLEMENT_ROLE"), rounds.address)
    d.send("ClaimManager", "setSettlementHook", rounds.address, True)
    d.send("ClaimManager", "grantRole", d.read("ClaimManager", "REGISTRY_ROLE"), rounds.address)
