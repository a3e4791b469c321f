"""ClaimManager on a real anvil: posting checks, the window, finalization, audiences, hooks, credits.

Also holds the fraud-proof test environment (``game_env``) that
``test_bisection_game.py`` and ``test_data_availability.py`` import: the
deployed game layer, a claimer with a Sahara ID, funded challengers and an
ADD-chain program whose honest and cheating traces come from the real VM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain.client import ContractClient, default_artifacts, deploy_contract
from chain.clients.asset_registry import AssetInput, AssetRegistryClient
from chain.clients.bisection_game import BisectionGameClient
from chain.clients.claim_manager import (
    BURN_ADDRESS,
    Audience,
    ClaimManagerClient,
    ClaimStatus,
)
from chain.clients.data_availability import DataAvailabilityClient
from chain.clients.identity_registry import IdentityRegistryClient
from chain.deploy import DEFAULT_PARAMS, param_key
from chain.deployment import Deployment
from chain.errors import revert_class
from collab import bls
from collab.errors import NotFound
from collab.fixedpoint import Domain
from collab.fraudproof.agents import ChallengerAgent, ClaimerAgent, GasLog, wrong_element_trace
from collab.fraudproof.commitments import TensorHeader
from collab.fraudproof.program import Program, ProgramBuilder
from collab.fraudproof.trace import Trace, build_trace
from collab.fraudproof.vm import Value, tensor

SHAPE = (4, 40)  # 160 elements = 5 chunks: a chunk tree of depth 3 with padding
FRAC = 8
N_STEPS = 5  # a trace tree of depth 3 with padding leaves 5..7
GAS = GasLog()  # every game test adds its moves; test_gas_report prints them


# --------------------------------------------------------------------------- environment


@dataclass
class GameEnv:
    """The deployed fraud-proof layer and the accounts that play on it."""

    w3: Web3
    deployment: Deployment
    contracts: dict[str, str]
    claimer: LocalAccount
    challengers: list[LocalAccount]
    admin: LocalAccount
    has_verifier: bool
    program: Program
    inputs: dict[str, Value]
    honest: Trace
    jobs: list[int] = field(default_factory=lambda: [0])

    def _client(self, cls: Any, account: LocalAccount) -> Any:
        artifact = default_artifacts()[cls.CONTRACT]
        return cls(self.w3, self.contracts[cls.CONTRACT], artifact.abi, account, name=cls.CONTRACT)

    def manager(self, account: LocalAccount | None = None) -> ClaimManagerClient:
        return self._client(ClaimManagerClient, account or self.admin)  # type: ignore[no-any-return]

    def game(self, account: LocalAccount | None = None) -> BisectionGameClient:
        return self._client(BisectionGameClient, account or self.admin)  # type: ignore[no-any-return]

    def data(self, account: LocalAccount | None = None) -> DataAvailabilityClient:
        return self._client(DataAvailabilityClient, account or self.admin)  # type: ignore[no-any-return]

    def new_job(self) -> bytes:
        """A fresh job id (claim ids must be unique per job)."""
        self.jobs[0] += 1
        return Web3.keccak(text=f"game-test-job-{self.jobs[0]}")

    def claimer_agent(self, trace: Trace | None = None, *, log2k: int = 1, **kw: Any) -> ClaimerAgent:
        acct = kw.pop("account", self.claimer)
        return ClaimerAgent(
            self.manager(acct), self.game(acct), self.data(acct), trace or self.honest,
            job_id=kw.pop("job_id", None) or self.new_job(), log2k=log2k, gas=GAS, **kw,
        )

    def challenger_agent(self, trace: Trace | None = None, index: int = 0, **kw: Any) -> ChallengerAgent:
        acct = self.challengers[index]
        return ChallengerAgent(self.manager(acct), self.game(acct), trace or self.honest, gas=GAS, **kw)

    def cheat(self, step: int, element: int, delta: int = 1) -> Trace:
        """A trace whose step ``step`` has element ``element`` off by ``delta`` (later steps follow from it)."""
        return wrong_element_trace(self.honest, self.inputs, step, element, delta)

    def set_param(self, name: str, value: int) -> None:
        """Change a governed parameter as the timelock (its owner) would."""
        params = self.manager().params_address()
        owner = ContractClient(self.w3, params, default_artifacts()["ProtocolParams"].abi)._call("owner")
        self.w3.provider.make_request("anvil_impersonateAccount", [owner])  # type: ignore[arg-type]
        self.w3.provider.make_request("anvil_setBalance", [owner, hex(10**20)])  # type: ignore[arg-type]
        contract = self.w3.eth.contract(address=params, abi=default_artifacts()["ProtocolParams"].abi)
        tx = contract.functions.set(param_key(name), value).transact({"from": owner})
        self.w3.eth.wait_for_transaction_receipt(tx)
        self.w3.provider.make_request("anvil_stopImpersonatingAccount", [owner])  # type: ignore[arg-type]


def add_chain_program() -> tuple[Program, dict[str, Value]]:
    """N_STEPS ADD steps over two FIXED inputs x, y of SHAPE (each step adds an input to the last output)."""
    header = TensorHeader(Domain.FIXED, FRAC, SHAPE)
    b = ProgramBuilder({"x": header, "y": header})
    r = b.add(b["x"], b["y"])
    for i in range(N_STEPS - 1):
        r = b.add(r, b["x"] if i % 2 else b["y"])
    rng = np.random.default_rng(7)
    inputs = {n: tensor(rng.integers(-(1 << 20), 1 << 20, size=SHAPE, dtype=np.int64), Domain.FIXED, FRAC) for n in "xy"}
    return b.build(), inputs


def _funded(w3: Web3, label: str) -> LocalAccount:
    acct: LocalAccount = Account.from_key(Web3.keccak(text=f"collab game tests: {label}"))
    w3.provider.make_request("anvil_setBalance", [acct.address, hex(10**22)])  # type: ignore[arg-type]
    return acct


def _deploy_layer(w3: Web3, deployment: Deployment, admin: LocalAccount) -> tuple[dict[str, str], bool]:
    """The game layer as deploy_all wires it; deployed here only if the session deployment lacks it."""
    if "ClaimManager" in deployment.contracts:
        return {n: deployment.address(n) for n in ("ClaimManager", "BisectionGame", "DataAvailability")}, True
    arts = default_artifacts()
    has_verifier = "OneStepVerifier" in arts
    # Until the verifier is compiled, the game is wired to a code-less address and proveStep tests skip.
    verifier = deploy_contract(w3, admin, arts["OneStepVerifier"])[0] if has_verifier else admin.address
    manager, _ = deploy_contract(
        w3, admin, arts["ClaimManager"], deployment.address("ProtocolParams"), deployment.address("IdentityRegistry"),
        deployment.address("AssetRegistry"), deployment.address("Licensing"), admin.address,
    )
    game, _ = deploy_contract(w3, admin, arts["BisectionGame"], manager, verifier)
    da, _ = deploy_contract(w3, admin, arts["DataAvailability"], manager)
    ContractClient(w3, manager, arts["ClaimManager"].abi, admin)._transact("initialize", game, da)
    identity = ContractClient(w3, deployment.address("IdentityRegistry"), arts["IdentityRegistry"].abi, admin)
    identity._transact("grantRole", identity._call("SETTLEMENT_ROLE"), manager)
    return {"ClaimManager": manager, "BisectionGame": game, "DataAvailability": da}, has_verifier


def register_identity(w3: Web3, deployment: Deployment, account: LocalAccount, name: str) -> int:
    """A Sahara ID for ``account`` (idempotent)."""
    registry = IdentityRegistryClient.from_deployment(deployment, w3, account)
    existing = registry.id_of(account.address)
    if existing:
        return existing
    keys = registry.keys_for(bls.keygen(name.encode()), b"\x0c" * 32, b"\x0d" * 32)
    return registry.register(name, "human", keys).id


@pytest.fixture(scope="session")
def game_env(w3: Web3, deployment: Deployment, accounts: list[LocalAccount]) -> GameEnv:
    """Deployed game layer, a registered claimer, four challengers, the ADD-chain program and its honest trace."""
    admin = accounts[0]
    contracts, has_verifier = _deploy_layer(w3, deployment, admin)
    claimer = _funded(w3, "claimer")
    register_identity(w3, deployment, claimer, "game-claimer")
    challengers = [_funded(w3, f"challenger-{i}") for i in range(4)]
    program, inputs = add_chain_program()
    return GameEnv(w3, deployment, contracts, claimer, challengers, admin, has_verifier, program, inputs, build_trace(program, inputs))


@pytest.fixture
def env(game_env: GameEnv, chain_snapshot: str) -> GameEnv:
    """``game_env`` inside a chain snapshot."""
    return game_env


def needs_verifier(env: GameEnv) -> None:
    if not env.has_verifier:
        pytest.skip("OneStepVerifier is not compiled yet: no one-step proof possible")


# --------------------------------------------------------------------------- posting


def test_honest_claim_finalizes_after_the_window_and_never_before(env: GameEnv, time_travel: Callable[[int], int]) -> None:
    agent = env.claimer_agent()
    claim_id = agent.post()
    manager = env.manager(env.claimer)
    claim = manager.get_claim(claim_id)
    params = manager.params_of(claim_id)
    assert claim.status == ClaimStatus.PENDING and claim.output_root == env.honest.output_root
    posted = manager.posted_event(claim_id)
    assert posted.program_root == env.program.root and posted.roots.hash == claim.roots_hash
    with pytest.raises(revert_class("ChallengeWindowOpen")):
        manager.finalize(claim_id)
    time_travel(params.challenge_window - 5)
    with pytest.raises(revert_class("ChallengeWindowOpen")):
        manager.finalize(claim_id)
    time_travel(10)
    tx = manager.finalize(claim_id)
    GAS.add("finalize", tx)
    assert tx.events_named("ClaimFinalized")[0].args["outputRoot"] == "0x" + env.honest.output_root.hex()
    assert manager.get_claim(claim_id).status == ClaimStatus.FINALIZED
    assert manager.credit_of(env.claimer.address) == params.claimer_bond
    before = env.w3.eth.get_balance(env.claimer.address)
    assert manager.claim_credit() == params.claimer_bond
    assert env.w3.eth.get_balance(env.claimer.address) > before
    with pytest.raises(revert_class("NothingToClaim")):
        manager.claim_credit()
    with pytest.raises(revert_class("ClaimNotPending")):
        manager.finalize(claim_id)
    with pytest.raises(revert_class("ClaimNotPending")):
        env.manager(env.challengers[0]).challenge(claim_id)


def test_wrong_output_root_with_an_honest_trace_is_refused_at_posting(env: GameEnv) -> None:
    agent = env.claimer_agent()
    wrong = env.honest.outputs[N_STEPS - 2].root  # a real tensor root, just not the last leaf's
    with pytest.raises(revert_class("OutputNotLastLeaf")):
        agent.post(output_root=wrong)
    short = agent.claim_input()
    with pytest.raises(revert_class("InvalidLastLeafProof")):
        env.manager(env.claimer).post_claim(
            type(short)(**{**short.__dict__, "last_leaf_proof": list(short.last_leaf_proof)[:-1]})
        )


def test_posting_checks_id_bond_program_branching_identity_and_hook(env: GameEnv) -> None:
    agent = env.claimer_agent()
    good = agent.claim_input()
    manager = env.manager(env.claimer)

    def variant(**changes: Any) -> Any:
        return type(good)(**{**good.__dict__, **changes})

    bond = manager.current_claimer_bond()
    with pytest.raises(revert_class("WrongBond")):
        manager.post_claim(good, bond=bond - 1)
    with pytest.raises(revert_class("ProgramRootMismatch")):
        manager.post_claim(variant(step_count=N_STEPS + 1))
    with pytest.raises(revert_class("InvalidBranching")):
        manager.post_claim(variant(log2k=5))
    with pytest.raises(revert_class("HookNotAllowed")):
        manager.post_claim(variant(settlement_hook=env.challengers[0].address))
    with pytest.raises(revert_class("InvalidAudience")):
        manager.post_claim(variant(audience=Audience.PARTICIPANTS))
    with pytest.raises(revert_class("InvalidAudience")):
        manager.post_claim(variant(audience=Audience.LICENSED_VERIFIERS, asset_id=10**9))
    stranger = env.manager(env.challengers[0])
    with pytest.raises(revert_class("NotAllowedClaimer")):
        stranger.post_claim(good)
    posted = manager.post_claim(good)
    assert posted.claim_id == good.claim_id == manager.claim_id_of(good.job_id, good.program_root, good.input_root)
    with pytest.raises(revert_class("DuplicateClaim")):
        manager.post_claim(good)


def test_a_claim_keeps_its_parameter_snapshot_when_governance_changes_them(
    env: GameEnv, time_travel: Callable[[int], int]
) -> None:
    manager = env.manager(env.claimer)
    first = env.claimer_agent().post()
    old = manager.params_of(first)
    env.set_param("CHALLENGE_WINDOW", old.challenge_window * 2)
    env.set_param("CHALLENGER_BOND", old.challenger_bond * 3)
    second = env.claimer_agent().post()
    new = manager.params_of(second)
    assert manager.params_of(first) == old
    assert new.challenge_window == old.challenge_window * 2 and new.challenger_bond == old.challenger_bond * 3
    # The old claim's challenge still costs the old bond and its window still ends at the old time.
    with pytest.raises(revert_class("WrongBond")):
        env.manager(env.challengers[0]).challenge(first, bond=new.challenger_bond)
    time_travel(old.challenge_window + 1)
    manager.finalize(first)
    with pytest.raises(revert_class("ChallengeWindowOpen")):
        manager.finalize(second)


def test_a_change_back_to_the_same_values_reuses_the_snapshot(env: GameEnv) -> None:
    # The epoch moves, so the values are read again (batched), but equal values keep the stored version.
    manager = env.manager(env.claimer)
    first = env.claimer_agent().post()
    version = manager.get_claim(first).params_version
    env.set_param("BURN_BPS", manager.params_of(first).burn_bps)
    second = env.claimer_agent().post()
    assert second != first and manager.get_claim(second).params_version == version
    env.set_param("BURN_BPS", manager.params_of(first).burn_bps + 1)
    third = env.claimer_agent().post()
    assert manager.get_claim(third).params_version == version + 1
    assert manager.params_of(third).burn_bps == manager.params_of(first).burn_bps + 1


# --------------------------------------------------------------------------- audiences


def test_participants_audience_limits_who_may_challenge(env: GameEnv) -> None:
    inside, outside = env.challengers[0], env.challengers[1]
    claim_id = env.claimer_agent().post(audience=Audience.PARTICIPANTS, participants=[inside.address])
    manager = env.manager()
    assert manager.is_audience(claim_id, inside.address) and not manager.is_audience(claim_id, outside.address)
    with pytest.raises(revert_class("NotAudience")):
        env.manager(outside).challenge(claim_id)
    game_id, _ = env.manager(inside).challenge(claim_id)
    assert env.game().get_game(game_id).challenger == inside.address


def test_licensed_verifiers_audience_follows_the_asset_owner_and_licenses(env: GameEnv) -> None:
    owner = env.claimer
    assets = AssetRegistryClient.from_deployment(env.deployment, env.w3, owner)
    asset_id = assets.register(AssetInput("model", Web3.keccak(text="game-test-asset"))).asset_id
    claim_id = env.claimer_agent().post(audience=Audience.LICENSED_VERIFIERS, asset_id=asset_id)
    verifier, stranger = env.challengers[0], env.challengers[1]
    manager = env.manager(owner)
    assert not manager.is_audience(claim_id, verifier.address)
    with pytest.raises(revert_class("NotAssetOwner")):
        env.manager(stranger).set_verifier(asset_id, stranger.address, True)
    manager.set_verifier(asset_id, verifier.address, True)
    assert manager.is_audience(claim_id, verifier.address)
    assert manager.is_audience(claim_id, owner.address)  # owners are always licensed
    env.manager(verifier).challenge(claim_id)
    with pytest.raises(revert_class("NotAudience")):
        env.manager(stranger).challenge(claim_id)
    manager.set_verifier(asset_id, verifier.address, False)
    assert not manager.is_audience(claim_id, verifier.address)


# --------------------------------------------------------------------------- hooks and credits


def test_a_reverting_settlement_hook_does_not_undo_finalization(env: GameEnv, time_travel: Callable[[int], int]) -> None:
    # ProtocolParams has no onClaimFinalized: a real contract that reverts when called as a hook.
    hook = env.manager().params_address()
    with pytest.raises(revert_class("AccessControlUnauthorizedAccount")):
        env.manager(env.claimer).set_settlement_hook(hook, True)
    env.manager().set_settlement_hook(hook, True)
    claim_id = env.claimer_agent().post(settlement_hook=hook)
    time_travel(env.manager().params_of(claim_id).challenge_window)
    tx = env.manager(env.challengers[0]).finalize(claim_id)
    assert [e.args["hook"] for e in tx.events_named("SettlementHookFailed")] == [hook]
    assert env.manager().claim_status(claim_id) == ClaimStatus.FINALIZED


def test_unknown_claims_and_challenges_are_named_errors(env: GameEnv) -> None:
    manager = env.manager(env.challengers[0])
    missing = b"\x42" * 32
    zero_roots = (b"\x00" * 32,) * 5
    for call in (
        lambda: manager.get_claim(missing),
        lambda: manager._transact("finalize", missing, zero_roots),
        lambda: manager._transact("challenge", missing, zero_roots, value=1),
    ):
        with pytest.raises(revert_class("UnknownClaim")):
            call()
    with pytest.raises(NotFound):
        manager.finalize(missing)  # the client looks the roots up in ClaimPosted first
    with pytest.raises(revert_class("UnknownChallenge")):
        manager.get_challenge(10**6)
    with pytest.raises(revert_class("NotCourt")):
        manager._transact("onGameResolved", 1, True)
    with pytest.raises(revert_class("AlreadyInitialized")):
        env.manager().initialize(env.admin.address, env.admin.address)
    assert manager.credit_of(BURN_ADDRESS) >= 0


def test_roots_passed_back_must_be_the_posted_ones(env: GameEnv) -> None:
    claim_id = env.claimer_agent().post()
    manager = env.manager(env.challengers[0])
    roots = manager.roots_of(claim_id)
    assert manager.check_roots(claim_id, roots) == N_STEPS
    forged = type(roots)(roots.step_tree_root, roots.input_root, roots.output_root, b"\x01" * 32, roots.da_pointer)
    with pytest.raises(revert_class("RootsMismatch")):
        manager.check_roots(claim_id, forged)
    bond = manager.params_of(claim_id).challenger_bond
    with pytest.raises(revert_class("RootsMismatch")):
        manager._transact("challenge", claim_id, forged.as_tuple(), value=bond)



def test_a_full_access_licensee_is_in_the_licensed_verifiers_audience(
    env: GameEnv, time_travel: Callable[[int], int]
) -> None:
    from chain.clients.licensing import LicenseKind, LicensingClient, Terms

    owner, licensee = env.claimer, env.challengers[2]
    register_identity(env.w3, env.deployment, licensee, "game-licensee")
    assets = AssetRegistryClient.from_deployment(env.deployment, env.w3, owner)
    asset_id = assets.register(AssetInput("model", Web3.keccak(text="game-test-licensed-asset"))).asset_id
    claim_id = env.claimer_agent().post(audience=Audience.LICENSED_VERIFIERS, asset_id=asset_id)
    manager = env.manager(licensee)
    assert not manager.is_audience(claim_id, licensee.address)
    licensing = LicensingClient.from_deployment(env.deployment, env.w3, owner)
    offer = licensing.offer(asset_id, LicenseKind.FULL_ACCESS, Terms(price=10**15)).offer_id
    license_id = licensing.with_account(licensee).buy(offer, 10**15).license_id
    assert not manager.is_audience(claim_id, licensee.address)  # paid, but no key yet
    licensing.deliver_key(license_id, b"\x01" * 60)
    time_travel(DEFAULT_PARAMS["KEY_DISPUTE_WINDOW"] + 1)
    licensing.release(license_id)
    assert manager.is_audience(claim_id, licensee.address)
