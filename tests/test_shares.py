"""Shares: roles, one-time wiring, the distributor hook on every balance change, ERC-1155 behaviour."""

from __future__ import annotations

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain.clients.shares import SharesClient, transfers_in
from chain.errors import revert_class
from collab.errors import BadInput, Unauthorized
from revenue_env import (  # noqa: F401 - fixtures
    SHARE_SUPPLY,
    ZERO_ADDRESS,
    RevenueEnv,
    abi_registry,
    deploy_project,
    direct_revenue_env,
    revenue_env,
    split,
)

pytestmark = pytest.mark.usefixtures("chain_snapshot")


def fresh_shares(w3: Web3, admin: LocalAccount) -> SharesClient:
    """An uninitialised Shares contract (no distributor yet)."""
    deployed = deploy_project(w3, admin, "Shares", admin.address)
    return SharesClient(w3, deployed.address, deployed.abi, admin, registry=abi_registry(), name="Shares")


def test_constructor_refuses_zero_admin(w3: Web3, deployer: LocalAccount) -> None:
    with pytest.raises(revert_class("SharesZeroAddress")):
        deploy_project(w3, deployer, "Shares", ZERO_ADDRESS)


def test_initialize_is_admin_only_once_and_nonzero(w3: Web3, accounts: list[LocalAccount]) -> None:
    admin, stranger = accounts[0], accounts[1]
    shares = fresh_shares(w3, admin)
    assert shares.distributor() == ZERO_ADDRESS
    with pytest.raises(revert_class("AccessControlUnauthorizedAccount")) as info:
        shares.with_account(stranger).initialize(stranger.address)
    assert isinstance(info.value, Unauthorized)
    with pytest.raises(revert_class("SharesZeroAddress")):
        shares.initialize(ZERO_ADDRESS)
    result = shares.initialize(accounts[2].address)
    assert [e.args for e in result.events_named("DistributorSet")] == [{"distributor": accounts[2].address}]
    assert shares.distributor() == accounts[2].address
    with pytest.raises(revert_class("DistributorAlreadySet")) as again:
        shares.initialize(accounts[3].address)
    assert again.value.error_args == {"distributor": accounts[2].address}


def test_no_balance_change_before_the_distributor_is_wired(w3: Web3, deployer: LocalAccount) -> None:
    shares = fresh_shares(w3, deployer)
    shares.grant_role(shares.settlement_role(), deployer.address)
    with pytest.raises(revert_class("DistributorNotSet")):
        shares.mint(deployer.address, 1, 10)
    assert shares.total_supply(1) == 0


def test_mint_requires_minter_or_settlement_role(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    stranger = accounts[7]
    shares = revenue_env.shares
    assert not shares.has_role(shares.minter_role(), stranger.address)
    with pytest.raises(revert_class("AccessControlUnauthorizedAccount")) as info:
        shares.with_account(stranger).mint(stranger.address, 1, 5)
    assert info.value.error_args["account"] == stranger.address
    assert isinstance(info.value, Unauthorized)

    asset = revenue_env.register({accounts[1].address: SHARE_SUPPLY})
    # The admin holds the settlement role in both stacks (deploy_all grants it to the deployer).
    if not shares.has_role(shares.settlement_role(), revenue_env.admin.address):
        shares.grant_role(shares.settlement_role(), revenue_env.admin.address)
    result = shares.mint(accounts[2].address, asset, 250)
    assert [(m.sender, m.receiver, m.asset_id, m.amount) for m in transfers_in(result)] == [
        (ZERO_ADDRESS, accounts[2].address, asset, 250)
    ]
    assert shares.total_supply(asset) == SHARE_SUPPLY + 250
    assert shares.balance_of(accounts[2].address, asset) == 250

    # A minter granted by the admin can mint too; revoking nothing else is needed for that.
    shares.grant_role(shares.minter_role(), stranger.address)
    shares.with_account(stranger).mint(stranger.address, asset, 1)
    assert shares.balance_of(stranger.address, asset) == 1


def test_transfers_move_balances_and_settle_debts_first(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    alice, bob = accounts[1], accounts[2]
    asset = revenue_env.register({alice.address: SHARE_SUPPLY})
    dist = revenue_env.distributor
    dist.with_account(accounts[3]).pay(asset, 10**6)
    acc = dist.acc_per_share(asset)
    assert dist.claimable(asset, alice.address) == 10**6

    result = revenue_env.shares_as(alice).transfer(bob.address, asset, 400_000)
    assert [(m.sender, m.receiver, m.amount) for m in transfers_in(result)] == [(alice.address, bob.address, 400_000)]
    assert revenue_env.shares.balance_of(alice.address, asset) == 600_000
    assert revenue_env.shares.balance_of(bob.address, asset) == 400_000
    # Debts moved with the Shares: alice keeps everything paid before, bob starts at zero.
    assert dist.debt_of(asset, alice.address) == -acc * 400_000
    assert dist.debt_of(asset, bob.address) == acc * 400_000
    assert dist.claimable(asset, alice.address) == 10**6
    assert dist.claimable(asset, bob.address) == 0


def test_batch_transfer_and_approved_operator(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    alice, bob, operator = accounts[1], accounts[2], accounts[3]
    a1 = revenue_env.register({alice.address: SHARE_SUPPLY})
    a2 = revenue_env.register({alice.address: SHARE_SUPPLY})
    revenue_env.distributor.with_account(operator).pay(a1, 3 * 10**6)
    result = revenue_env.shares_as(alice).transfer_batch(bob.address, [a1, a2], [10, 20])
    assert [(m.asset_id, m.amount) for m in transfers_in(result)] == [(a1, 10), (a2, 20)]
    assert revenue_env.shares.balances_of(bob.address, [a1, a2]) == {a1: 10, a2: 20}
    assert revenue_env.distributor.claimable(a1, bob.address) == 0

    with pytest.raises(revert_class("ERC1155MissingApprovalForAll")):
        revenue_env.shares_as(operator).transfer_from(alice.address, operator.address, a1, 1)
    revenue_env.shares_as(alice).set_approval_for_all(operator.address, True)
    assert revenue_env.shares.is_approved_for_all(alice.address, operator.address)
    revenue_env.shares_as(operator).transfer_from(alice.address, operator.address, a1, 5)
    assert revenue_env.shares.balance_of(operator.address, a1) == 5
    assert revenue_env.distributor.claimable(a1, alice.address) == 3 * 10**6


def test_transfer_beyond_balance_reverts(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    alice, bob = accounts[1], accounts[2]
    asset = revenue_env.register(split([alice, bob], [1, 1]))
    with pytest.raises(revert_class("ERC1155InsufficientBalance")) as info:
        revenue_env.shares_as(alice).transfer(bob.address, asset, SHARE_SUPPLY)
    assert isinstance(info.value, BadInput)
    assert revenue_env.shares.balance_of(alice.address, asset) == SHARE_SUPPLY // 2


def test_assets_held_lists_current_holdings_from_logs(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    carol, dave = accounts[4], accounts[5]
    start = revenue_env.w3.eth.block_number
    a1 = revenue_env.register({carol.address: SHARE_SUPPLY})
    a2 = revenue_env.register(split([carol, dave], [1, 3]))
    a3 = revenue_env.register({dave.address: SHARE_SUPPLY})
    revenue_env.shares_as(carol).transfer(dave.address, a1, SHARE_SUPPLY)  # carol sells all of a1
    assert revenue_env.shares.assets_received(carol.address, start) == [a1, a2]
    assert revenue_env.shares.assets_held(carol.address, start) == {a2: SHARE_SUPPLY // 4}
    assert revenue_env.shares.assets_held(dave.address, start) == {a1: SHARE_SUPPLY, a2: 3 * SHARE_SUPPLY // 4, a3: SHARE_SUPPLY}


def test_supports_erc1155_access_control_and_ishares(revenue_env: RevenueEnv) -> None:
    shares = revenue_env.shares
    ishares = _interface_id(
        ["MINTER_ROLE()", "SETTLEMENT_ROLE()", "initialize(address)", "mint(address,uint256,uint256)", "totalSupply(uint256)", "distributor()"]
    )
    for interface in (bytes.fromhex("d9b67a26"), bytes.fromhex("7965db0b"), bytes.fromhex("01ffc9a7"), ishares):
        assert shares._call("supportsInterface", interface), interface.hex()
    assert not shares._call("supportsInterface", bytes.fromhex("ffffffff"))


def _interface_id(signatures: list[str]) -> bytes:
    value = 0
    for signature in signatures:
        value ^= int.from_bytes(Web3.keccak(text=signature)[:4], "big")
    return value.to_bytes(4, "big")
