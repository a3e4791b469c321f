"""IdentityRegistry (Sahara ID): stake, keys with BLS proof of possession, roles, decaying reputation."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain.client import ContractClient, TxResult, deploy_contract
from chain.clients.identity_registry import (
    IdentityExited,
    IdentityRegistered,
    IdentityRegistryClient,
    Keys,
    ReputationChanged,
    Role,
    events_in,
)
from chain.compiler import compile_contracts
from chain.deploy import DEFAULT_PARAMS
from chain.deployment import Deployment
from chain.errors import revert_class
from collab import bls
from collab.cli import run as collab
from collab.errors import NotFound, ProtocolViolation, Unauthorized

STAKE = DEFAULT_PARAMS["ADMISSION_STAKE"]
GENESIS = DEFAULT_PARAMS["GENESIS_REPUTATION"]
HALF_LIFE = DEFAULT_PARAMS["REPUTATION_HALF_LIFE"]
MIN_AGG = DEFAULT_PARAMS["MIN_REPUTATION_AGGREGATOR"]
MIN_CLAIM = DEFAULT_PARAMS["MIN_REPUTATION_CLAIMER"]
CURVE, X25519 = b"\x0c" * 32, b"\x0d" * 32


@pytest.fixture
def registry(w3: Web3, deployment: Deployment, deployer: LocalAccount) -> IdentityRegistryClient:
    """The registry as the deployer (admin and settlement role)."""
    return IdentityRegistryClient.from_deployment(deployment, w3, deployer)


def keys_for(registry: IdentityRegistryClient, account: LocalAccount, seed: bytes) -> Keys:
    return registry.with_account(account).keys_for(bls.keygen(seed), CURVE, X25519)


def register(registry: IdentityRegistryClient, account: LocalAccount, name: str = "someone", role: str = "human") -> IdentityRegistered:
    return registry.with_account(account).register(name, role, keys_for(registry, account, name.encode()))


def decayed(value: int, elapsed: int, half_life: int = HALF_LIFE) -> int:
    """Python model of the contract's decay: halve per period, linear inside one."""
    periods = elapsed // half_life
    if periods >= 256:
        return 0
    value >>= periods
    return value - value * (elapsed % half_life) // (2 * half_life)


def now(w3: Web3) -> int:
    return int(w3.eth.get_block("latest")["timestamp"])


# ------------------------------------------------------------------ registration


def test_register_locks_the_stake_and_records_the_identity(
    w3: Web3, registry: IdentityRegistryClient, accounts: list[LocalAccount], chain_snapshot: str
) -> None:
    alice = accounts[1]
    before = w3.eth.get_balance(registry.address)
    keys = keys_for(registry, alice, b"alice")
    event = registry.with_account(alice).register("alice", Role.AGENT, keys)
    assert (event.account, event.role, event.name) == (alice.address, Role.AGENT, "alice")
    assert isinstance(event.tx, TxResult)
    ident = registry.identity(event.id)
    assert (ident.account, ident.name, ident.role, ident.active) == (alice.address, "alice", Role.AGENT, True)
    assert ident.keys == keys
    assert ident.registered_at == now(w3)
    assert registry.id_of(alice.address) == event.id
    assert registry.is_active(event.id)
    assert registry.stake_of(event.id) == STAKE
    assert registry.reputation_of(event.id) == GENESIS
    assert registry.identity_count() >= event.id
    assert w3.eth.get_balance(registry.address) == before + STAKE
    assert registry.can_claim(alice.address) and not registry.can_aggregate(alice.address)


@pytest.mark.parametrize("stake", [0, STAKE - 1, STAKE + 1])
def test_register_with_a_wrong_stake_reverts(
    registry: IdentityRegistryClient, accounts: list[LocalAccount], stake: int, chain_snapshot: str
) -> None:
    client = registry.with_account(accounts[1])
    with pytest.raises(revert_class("WrongStake")) as err:
        client.register("alice", "human", keys_for(registry, accounts[1], b"alice"), stake=stake)
    assert err.value.error_args == {"sent": stake, "required": STAKE}


def test_duplicate_registration_reverts_even_after_exit(
    registry: IdentityRegistryClient, accounts: list[LocalAccount], chain_snapshot: str
) -> None:
    first = register(registry, accounts[1], "alice")
    with pytest.raises(revert_class("AlreadyRegistered")) as err:
        register(registry, accounts[1], "alice-again")
    assert err.value.error_args["id"] == first.id
    registry.with_account(accounts[1]).exit()
    with pytest.raises(revert_class("AlreadyRegistered")):
        register(registry, accounts[1], "alice-reborn")


def test_registering_as_aggregator_is_refused(
    registry: IdentityRegistryClient, accounts: list[LocalAccount], chain_snapshot: str
) -> None:
    with pytest.raises(revert_class("RoleNotGranted")) as err:
        register(registry, accounts[1], "greedy", role="aggregator")
    assert isinstance(err.value, Unauthorized)


@pytest.mark.parametrize("name", ["", "x" * 65])
def test_bad_names_revert(registry: IdentityRegistryClient, accounts: list[LocalAccount], name: str, chain_snapshot: str) -> None:
    with pytest.raises(revert_class("InvalidName")):
        registry.with_account(accounts[1]).register(name, "human", keys_for(registry, accounts[1], b"n"))


def test_zero_transport_keys_revert(registry: IdentityRegistryClient, accounts: list[LocalAccount], chain_snapshot: str) -> None:
    keys = keys_for(registry, accounts[1], b"z")
    with pytest.raises(revert_class("ZeroPublicKey")):
        registry.with_account(accounts[1]).register("z", "human", Keys(bytes(32), keys.x25519_key, keys.bls_pubkey, keys.bls_pop))


# ------------------------------------------------------------------ proof of possession


def test_pop_made_for_another_account_is_rejected(
    registry: IdentityRegistryClient, accounts: list[LocalAccount], chain_snapshot: str
) -> None:
    """Mallory copies Alice's public key and pop: the pop binds Alice's address."""
    alice_keys = keys_for(registry, accounts[1], b"alice")
    with pytest.raises(revert_class("InvalidProofOfPossession")) as err:
        registry.with_account(accounts[2]).register("mallory", "human", alice_keys)
    assert isinstance(err.value, ProtocolViolation)


def test_pop_signed_by_another_key_is_rejected(
    registry: IdentityRegistryClient, accounts: list[LocalAccount], chain_snapshot: str
) -> None:
    mine, other = keys_for(registry, accounts[1], b"mine"), keys_for(registry, accounts[1], b"other")
    with pytest.raises(revert_class("InvalidProofOfPossession")):
        registry.with_account(accounts[1]).register("x", "human", Keys(CURVE, X25519, mine.bls_pubkey, other.bls_pop))


@pytest.mark.parametrize("where", ["chain", "registry"])
def test_pop_for_another_chain_or_registry_is_rejected(
    w3: Web3, registry: IdentityRegistryClient, accounts: list[LocalAccount], where: str, chain_snapshot: str
) -> None:
    sk = bls.keygen(b"elsewhere")
    chain_id = w3.eth.chain_id + (1 if where == "chain" else 0)
    target = registry.address if where == "chain" else "0x" + "42" * 20
    pop = bls.prove_possession(sk, chain_id, target, accounts[1].address)
    with pytest.raises(revert_class("InvalidProofOfPossession")):
        registry.with_account(accounts[1]).register("x", "human", Keys(CURVE, X25519, bls.sk_to_pk(sk), pop))


def test_malformed_bls_material_is_rejected_with_named_errors(
    registry: IdentityRegistryClient, accounts: list[LocalAccount], chain_snapshot: str
) -> None:
    good = keys_for(registry, accounts[1], b"good")
    client = registry.with_account(accounts[1])
    cases = [
        (Keys(CURVE, X25519, good.bls_pubkey[:96], good.bls_pop), "InvalidBlsKeyLength"),
        (Keys(CURVE, X25519, good.bls_pubkey + b"\x00", good.bls_pop), "InvalidBlsKeyLength"),
        (Keys(CURVE, X25519, good.bls_pubkey, good.bls_pop[:192]), "InvalidBlsPopLength"),
        # The point at infinity with the all-zero "signature" would satisfy the pairing equation.
        (Keys(CURVE, X25519, bytes(128), bytes(256)), "InvalidBlsKey"),
        (Keys(CURVE, X25519, good.bls_pubkey[:127] + bytes([good.bls_pubkey[127] ^ 1]), good.bls_pop), "InvalidBlsKey"),
        (Keys(CURVE, X25519, good.bls_pubkey, good.bls_pop[:255] + bytes([good.bls_pop[255] ^ 1])), "InvalidProofOfPossession"),
        (Keys(CURVE, X25519, good.bls_pubkey, bytes(256)), "InvalidProofOfPossession"),
    ]
    for keys, error in cases:
        with pytest.raises(revert_class(error)):
            client.register("x", "human", keys)
    assert client.register("x", "human", good).id > 0  # the untouched keys pass


def test_update_keys_rechecks_the_proof(
    registry: IdentityRegistryClient, accounts: list[LocalAccount], chain_snapshot: str
) -> None:
    alice = registry.with_account(accounts[1])
    ident = register(registry, accounts[1], "alice")
    fresh = keys_for(registry, accounts[1], b"rotated")
    assert alice.update_keys(fresh).id == ident.id
    assert registry.identity(ident.id).keys == fresh
    stolen = keys_for(registry, accounts[2], b"bob")
    with pytest.raises(revert_class("InvalidProofOfPossession")):
        alice.update_keys(stolen)
    with pytest.raises(revert_class("NoIdentity")):
        registry.with_account(accounts[3]).update_keys(keys_for(registry, accounts[3], b"nobody"))


# ------------------------------------------------------------------ exit


def test_exit_returns_the_stake_and_deactivates(
    w3: Web3, registry: IdentityRegistryClient, accounts: list[LocalAccount], chain_snapshot: str
) -> None:
    alice = registry.with_account(accounts[1])
    ident = register(registry, accounts[1], "alice")
    balance = w3.eth.get_balance(accounts[1].address)
    exited = alice.exit()
    assert isinstance(exited, IdentityExited) and exited.id == ident.id and exited.stake_returned == STAKE
    assert exited.tx is not None
    receipt = w3.eth.get_transaction_receipt(exited.tx.tx_hash)  # type: ignore[arg-type]
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert w3.eth.get_balance(accounts[1].address) == balance + STAKE - gas_cost
    assert not registry.is_active(ident.id) and registry.stake_of(ident.id) == 0
    assert registry.identity(ident.id).keys.bls_pubkey  # kept for history
    assert not registry.can_claim(accounts[1].address)
    with pytest.raises(revert_class("NoIdentity")):
        alice.exit()


# ------------------------------------------------------------------ roles and reputation


def test_aggregator_role_is_granted_by_the_admin_only(
    registry: IdentityRegistryClient, accounts: list[LocalAccount], chain_snapshot: str
) -> None:
    node = register(registry, accounts[1], "node", role="node")
    with pytest.raises(revert_class("AccessControlUnauthorizedAccount")):
        registry.with_account(accounts[1]).grant_aggregator(node.id)
    assert not registry.can_aggregate(accounts[1].address)
    assert registry.grant_aggregator(node.id).id == node.id
    assert registry.identity(node.id).role is Role.AGGREGATOR
    assert registry.can_aggregate(accounts[1].address)
    with pytest.raises(revert_class("AlreadyAggregator")):
        registry.grant_aggregator(node.id)
    with pytest.raises(revert_class("UnknownIdentity")) as err:
        registry.grant_aggregator(999)
    assert isinstance(err.value, NotFound)


def test_aggregator_role_cannot_go_to_an_exited_identity(
    registry: IdentityRegistryClient, accounts: list[LocalAccount], chain_snapshot: str
) -> None:
    node = register(registry, accounts[1], "node", role="node")
    registry.with_account(accounts[1]).exit()
    with pytest.raises(revert_class("IdentityInactive")):
        registry.grant_aggregator(node.id)


def test_reputation_gates_the_aggregator_and_claimer_roles(
    registry: IdentityRegistryClient, accounts: list[LocalAccount], chain_snapshot: str
) -> None:
    node = register(registry, accounts[1], "node", role="node")
    registry.grant_aggregator(node.id)
    drop = GENESIS - min(MIN_AGG, MIN_CLAIM) + 1
    registry.adjust_reputation(node.id, -drop)
    assert not registry.can_aggregate(accounts[1].address)
    assert not registry.can_claim(accounts[1].address)
    registry.adjust_reputation(node.id, drop)
    assert registry.can_aggregate(accounts[1].address) and registry.can_claim(accounts[1].address)


def test_reputation_moves_only_by_the_settlement_role(
    registry: IdentityRegistryClient, accounts: list[LocalAccount], chain_snapshot: str
) -> None:
    ident = register(registry, accounts[1], "alice")
    for cheater in (accounts[1], accounts[2]):
        with pytest.raises(revert_class("AccessControlUnauthorizedAccount")) as err:
            registry.with_account(cheater).adjust_reputation(ident.id, 1_000)
        assert isinstance(err.value, Unauthorized)
    assert registry.reputation_of(ident.id) == GENESIS
    with pytest.raises(revert_class("UnknownIdentity")):
        registry.adjust_reputation(0, 1)


def test_adjust_reputation_emits_and_floors_at_zero(
    registry: IdentityRegistryClient, accounts: list[LocalAccount], chain_snapshot: str
) -> None:
    ident = register(registry, accounts[1], "alice")
    up = registry.adjust_reputation(ident.id, 25)
    assert (up.old_value, up.new_value) == (GENESIS, GENESIS + 25)
    assert up.tx is not None and isinstance(events_in(up.tx)[0], ReputationChanged)
    down = registry.adjust_reputation(ident.id, -(10**30))
    assert (down.old_value, down.new_value) == (GENESIS + 25, 0)
    assert registry.adjust_reputation(ident.id, -(2**255)).new_value == 0  # int256 min does not overflow
    assert registry.reputation_of(ident.id) == 0


@pytest.mark.parametrize("elapsed", [HALF_LIFE // 2, HALF_LIFE, HALF_LIFE * 3 // 2, 5 * HALF_LIFE + 12_345])
def test_reputation_decays_by_halving_with_linear_interpolation(
    w3: Web3,
    registry: IdentityRegistryClient,
    accounts: list[LocalAccount],
    time_travel: Callable[[int], int],
    elapsed: int,
    chain_snapshot: str,
) -> None:
    ident = register(registry, accounts[1], "alice")
    registry.adjust_reputation(ident.id, 900)  # 1000 points make the interpolation visible
    start = now(w3)
    end = time_travel(elapsed)
    expected = decayed(GENESIS + 900, end - start)
    assert registry.reputation_of(ident.id) == expected
    if elapsed == HALF_LIFE:
        assert expected == (GENESIS + 900) // 2
    # adjust applies the decay first
    changed = registry.adjust_reputation(ident.id, 10)
    assert changed.old_value == decayed(GENESIS + 900, now(w3) - start)
    assert changed.new_value == changed.old_value + 10


def test_reputation_decays_to_zero_and_closes_the_gates(
    registry: IdentityRegistryClient, accounts: list[LocalAccount], time_travel: Callable[[int], int], chain_snapshot: str
) -> None:
    node = register(registry, accounts[1], "node", role="node")
    registry.grant_aggregator(node.id)
    time_travel(HALF_LIFE)  # 100 -> 50: still at both minimums
    assert registry.can_aggregate(accounts[1].address) and registry.can_claim(accounts[1].address)
    time_travel(HALF_LIFE // 10)
    assert not registry.can_aggregate(accounts[1].address) and not registry.can_claim(accounts[1].address)
    time_travel(300 * HALF_LIFE)
    assert registry.reputation_of(node.id) == 0


def test_views_of_unknown_ids(registry: IdentityRegistryClient, accounts: list[LocalAccount]) -> None:
    assert registry.id_of(accounts[9].address) == 0
    assert not registry.is_active(10**6)
    assert not registry.can_claim(accounts[9].address) and not registry.can_aggregate(accounts[9].address)
    for fn in (registry.identity, registry.reputation_of):
        with pytest.raises(revert_class("UnknownIdentity")):
            fn(10**6)
    assert registry.identity_of(accounts[9].address) is None


def test_settlement_role_is_wired_to_the_deployer(registry: IdentityRegistryClient, deployer: LocalAccount) -> None:
    role = registry.settlement_role()
    assert role == Web3.keccak(text="SETTLEMENT_ROLE")
    assert registry.has_role(role, deployer.address)
    assert registry.max_name_length() == 64
    assert registry.admission_stake() == STAKE


# ------------------------------------------------------------------ CLI: collab id init|register|show


class Cli:
    """``collab --home HOME ...`` in-process, returning (exit code, stdout, stderr)."""

    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.home, self.capsys = home, capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = collab(["--home", str(self.home), *args])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str) -> dict[str, Any]:
        code, out, err = self("--json", *args)
        assert code == 0, (out, err)
        return dict(json.loads(out))


@pytest.fixture
def cli(
    deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], chain_snapshot: str
) -> Cli:
    monkeypatch.setenv("COLLAB_PASSPHRASE", "correct horse")
    for var in ("COLLAB_DEPLOYMENT", "COLLAB_RPC_URL", "COLLAB_HOME"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    deployment.save(home / "deployment.json")
    return Cli(home, capsys)


def test_cli_init_register_and_show(w3: Web3, cli: Cli, registry: IdentityRegistryClient) -> None:
    created = cli.json("id", "init")
    address = created["address"]
    assert len(bytes.fromhex(created["bls_public"][2:])) == 128
    code, _, err = cli("id", "init")
    assert code == 2 and "refusing to overwrite" in err

    code, _, err = cli("id", "register", "--name", "alice", "--role", "node")
    assert code == 2 and err.startswith("error: ") and "fund the account" in err  # no ETH yet
    w3.provider.make_request("anvil_setBalance", [address, hex(10**19)])  # type: ignore[arg-type]
    code, _, err = cli("id", "register", "--name", "alice", "--role", "node", "--stake", "1")
    assert code == 2 and "WrongStake" in err

    registered = cli.json("id", "register", "--name", "alice", "--role", "node", "--stake-from-params")
    assert (registered["account"], registered["role"], registered["name"]) == (address, "node", "alice")
    assert registered["stake"] == STAKE
    assert registry.identity(registered["id"]).keys.bls_pop  # a real, on-chain-verified pop

    mine = cli.json("id", "show")
    assert (mine["id"], mine["account"], mine["role"], mine["reputation"]) == (registered["id"], address, "node", GENESIS)
    assert mine["active"] and mine["can_claim"] and not mine["can_aggregate"] and mine["stake"] == STAKE
    assert cli.json("id", "show", str(registered["id"]))["account"] == address
    assert cli.json("id", "show", address.lower())["id"] == registered["id"]
    code, out, _ = cli("id", "show")
    assert code == 0 and "reputation" in out and "alice" in out

    code, _, err = cli("id", "register", "--name", "again", "--role", "human")
    assert code == 2 and "already registered" in err


def test_cli_errors_have_exit_codes(cli: Cli) -> None:
    code, _, err = cli("id", "show")
    assert code == 3 and "no identity" in err  # no keys in the home yet
    cli.json("id", "init")
    code, _, err = cli("id", "show")
    assert code == 3 and "has no Sahara ID" in err
    assert cli("id", "show", "424242")[0] == 3
    assert cli("id", "show", "0x" + "77" * 20)[0] == 3
    assert cli("id", "show", "bob")[0] == 2
    assert cli("id", "register", "--name", "x", "--role", "aggregator")[0] == 1
    assert cli("id", "register", "--name", "x", "--role", "human", "--stake", "1", "--stake-from-params")[0] == 1
    assert cli("id", "register", "--name", "x" * 65, "--role", "human")[0] == 2


def test_history_decodes_every_registry_event(
    w3: Web3, registry: IdentityRegistryClient, accounts: list[LocalAccount], chain_snapshot: str
) -> None:
    start = w3.eth.block_number + 1
    node = register(registry, accounts[1], "node", role="node")
    registry.grant_aggregator(node.id)
    registry.adjust_reputation(node.id, 5)
    registry.with_account(accounts[1]).update_keys(keys_for(registry, accounts[1], b"rotated"))
    registry.with_account(accounts[1]).exit()
    kinds = [type(e).__name__ for e in registry.history(from_block=start)]
    assert kinds == ["IdentityRegistered", "AggregatorGranted", "ReputationChanged", "KeysUpdated", "IdentityExited"]
    assert registry.pop_domain() == bls.POP_DOMAIN


# ------------------------------------------------------------------ adversary: a stake-returning reentrancy

REENTRANT_EXIT = """
// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

interface IRegistry {
    struct Keys { bytes32 curveKey; bytes32 x25519Key; bytes blsPubkey; bytes blsPop; }
    function register(string calldata name, uint8 role, Keys calldata keys) external payable returns (uint256);
    function exit() external;
}

/// Registers itself, then exits and tries to exit again from inside the stake refund.
contract ReentrantExit {
    IRegistry public immutable REGISTRY;
    bool public reentryFailed;
    uint256 public refunds;

    constructor(address registry) { REGISTRY = IRegistry(registry); }

    function join(IRegistry.Keys calldata keys) external payable {
        REGISTRY.register{value: msg.value}("reentrant", 0, keys);
    }

    function leave() external { REGISTRY.exit(); }

    receive() external payable {
        refunds += 1;
        try REGISTRY.exit() {} catch { reentryFailed = true; }
    }
}
"""


def test_exit_pays_the_stake_once_to_a_reentrant_contract(
    w3: Web3, registry: IdentityRegistryClient, deployer: LocalAccount, tmp_path: Path, chain_snapshot: str
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "ReentrantExit.sol").write_text(REENTRANT_EXIT)
    artifact = compile_contracts(source_root=source, build_dir=tmp_path / "build")["ReentrantExit"]
    address, _ = deploy_contract(w3, deployer, artifact, registry.address)
    attacker = ContractClient(w3, address, artifact.abi, deployer, name="ReentrantExit")
    sk = bls.keygen(b"reentrant")
    pop = bls.prove_possession(sk, w3.eth.chain_id, registry.address, address)
    attacker._transact("join", (CURVE, X25519, bls.sk_to_pk(sk), pop), value=STAKE)
    identity_id = registry.id_of(address)
    held = w3.eth.get_balance(registry.address)

    attacker._transact("leave")
    assert attacker._call("refunds") == 1 and attacker._call("reentryFailed")
    assert w3.eth.get_balance(Web3.to_checksum_address(address)) == STAKE
    assert w3.eth.get_balance(registry.address) == held - STAKE
    assert not registry.is_active(identity_id) and registry.stake_of(identity_id) == 0


def test_decay_matches_the_model_across_period_boundaries_and_never_rises(
    w3: Web3, registry: IdentityRegistryClient, accounts: list[LocalAccount], time_travel: Callable[[int], int], chain_snapshot: str
) -> None:
    ident = register(registry, accounts[1], "decaying")
    registry.adjust_reputation(ident.id, 10**6 - GENESIS)  # a large value shows every rounding step
    start, last = now(w3), 10**6
    for step in (1, HALF_LIFE - 2, 1, 1, 1, 7_777, HALF_LIFE // 3, HALF_LIFE, 3 * HALF_LIFE - 1, 2, 19 * HALF_LIFE):
        end = time_travel(step)
        value = registry.reputation_of(ident.id)
        assert value == decayed(10**6, end - start), f"after {end - start}s"
        assert value <= last
        last = value
    assert last == 0  # 25+ half-lives of a 10**6 value
