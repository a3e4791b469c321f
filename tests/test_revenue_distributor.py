"""RevenueDistributor: payments, parent royalties, rounding carry, claims, the Shares hook, reentrancy."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain.client import ContractClient
from chain.clients.revenue_distributor import MAGNITUDE, Claim, RevenueClaimed, RevenuePaid, RoyaltyPaid, revenue_events
from chain.errors import revert_class
from collab.errors import EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_USAGE, BadInput, NotFound, Unauthorized
from revenue_env import (  # noqa: F401 - fixtures
    SHARE_SUPPLY,
    ZERO_ADDRESS,
    RevenueEnv,
    deploy_project,
    direct_revenue_env,
    revenue_env,
    split,
)

pytestmark = pytest.mark.usefixtures("chain_snapshot")
ETHER = 10**18
ACCEPT, REENTER, REENTER_MANY, REFUSE = range(4)


def eth_balance(w3: Web3, address: str) -> int:
    return int(w3.eth.get_balance(address))  # type: ignore[arg-type]


def sole_holder_claimable(*amounts: int) -> int:
    """What the only holder of SHARE_SUPPLY Shares can claim after these payments (carry included).

    ``amount * 2^128`` is rarely a multiple of the supply, so up to 1 wei waits
    in the carry for the next payment.
    """
    acc, carry = 0, 0
    for amount in amounts:
        acc += (amount * MAGNITUDE + carry) // SHARE_SUPPLY
        carry = (amount * MAGNITUDE + carry) % SHARE_SUPPLY
    return acc * SHARE_SUPPLY // MAGNITUDE


def gas_cost(w3: Web3, tx_hash: str) -> int:
    receipt = w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


# --------------------------------------------------------------------- construction and wiring


def test_constructor_refuses_zero_addresses(w3: Web3, deployer: LocalAccount) -> None:
    for args in ((ZERO_ADDRESS, deployer.address), (deployer.address, ZERO_ADDRESS)):
        with pytest.raises(revert_class("DistributorZeroAddress")):
            deploy_project(w3, deployer, "RevenueDistributor", *args)


def test_wired_to_shares_and_registry(revenue_env: RevenueEnv) -> None:
    assert revenue_env.distributor.shares_address() == revenue_env.shares.address
    assert revenue_env.distributor.assets_address() == revenue_env.assets_address
    assert revenue_env.shares.distributor() == revenue_env.distributor.address


# --------------------------------------------------------------------- pay


def test_pay_rejects_zero_value_and_unknown_asset(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    dist = revenue_env.distributor_as(accounts[3])
    asset = revenue_env.register({accounts[1].address: SHARE_SUPPLY})
    with pytest.raises(revert_class("ZeroPayment")) as zero:
        dist.pay(asset, 0)
    assert zero.value.error_args == {"assetId": asset}
    with pytest.raises(revert_class("UnknownAsset")) as unknown:
        dist.pay(asset + 1000, 1)
    assert isinstance(unknown.value, NotFound)
    with pytest.raises(revert_class("UnknownAsset")):
        dist.pay(0, 1)
    assert dist.total_paid(asset) == 0


def test_pay_to_asset_without_shares_reverts(direct_revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    # The real registry always mints SHARE_SUPPLY at registration; the fixture registry can register an asset with none.
    asset = direct_revenue_env.register({})
    with pytest.raises(revert_class("NoShareholders")) as info:
        direct_revenue_env.distributor_as(accounts[3]).pay(asset, 10)
    assert info.value.error_args == {"assetId": asset}
    assert isinstance(info.value, BadInput)


def test_pay_splits_pro_rata_and_is_conserved(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    a, b, c, payer = accounts[1], accounts[2], accounts[3], accounts[4]
    holders = split([a, b, c], [5, 3, 2])
    asset = revenue_env.register(holders)
    dist = revenue_env.distributor_as(payer)
    before = eth_balance(revenue_env.w3, dist.address)
    payment = dist.pay(asset, 10 * ETHER)
    assert payment.paid == RevenuePaid(asset, payer.address, 10 * ETHER, 10 * ETHER)
    assert payment.royalties == []
    assert eth_balance(revenue_env.w3, dist.address) - before == 10 * ETHER
    assert [dist.claimable(asset, x.address) for x in (a, b, c)] == [5 * ETHER, 3 * ETHER, 2 * ETHER]
    assert dist.claimable(asset, accounts[5].address) == 0
    assert dist.total_paid(asset) == 10 * ETHER
    assert dist.acc_per_share(asset) == 10 * ETHER * MAGNITUDE // SHARE_SUPPLY
    assert dist.dust(asset) == (10 * ETHER * MAGNITUDE) % SHARE_SUPPLY


def test_rounding_remainder_is_carried_not_lost(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    # Three holders of 1/3 each: one wei cannot be split, three can.
    a, b, c, payer = accounts[1], accounts[2], accounts[3], accounts[4]
    asset = revenue_env.register({a.address: 333_333, b.address: 333_333, c.address: 333_334})
    dist = revenue_env.distributor_as(payer)
    dist.pay(asset, 1)
    assert [dist.claimable(asset, x.address) for x in (a, b, c)] == [0, 0, 0]
    assert dist.dust(asset) == MAGNITUDE % SHARE_SUPPLY
    dist.pay(asset, 2)
    got = [dist.claimable(asset, x.address) for x in (a, b, c)]
    assert got == [0, 0, 1]  # 3 wei exactly: 0.999999, 0.999999, 1.000002
    owed = [
        dist.acc_per_share(asset) * revenue_env.shares.balance_of(x.address, asset) - dist.debt_of(asset, x.address)
        for x in (a, b, c)
    ]
    # Conservation in magnified units: 3 wei == claimable + fractional parts + carry, exactly.
    assert sum(owed) + dist.dust(asset) == 3 * MAGNITUDE
    assert sum(o // MAGNITUDE for o in owed) + (sum(o % MAGNITUDE for o in owed) + dist.dust(asset)) // MAGNITUDE == 3


def test_parents_take_their_royalty_first_and_only_direct_parents(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    p1_holder, p2_holder, child_holder, grandchild_holder, payer = accounts[1:6]
    p1 = revenue_env.register({p1_holder.address: SHARE_SUPPLY}, royalty_bps=1_000)
    p2 = revenue_env.register({p2_holder.address: SHARE_SUPPLY}, royalty_bps=2_500)
    child = revenue_env.register({child_holder.address: SHARE_SUPPLY}, parents=[p1, p2], royalty_bps=500)
    grandchild = revenue_env.register({grandchild_holder.address: SHARE_SUPPLY}, parents=[child])
    dist = revenue_env.distributor_as(payer)

    payment = dist.pay(child, 1_000_003)
    assert payment.royalties == [RoyaltyPaid(child, p1, 100_000), RoyaltyPaid(child, p2, 250_000)]
    assert payment.paid == RevenuePaid(child, payer.address, 1_000_003, 650_003)
    assert dist.claimable(p1, p1_holder.address) == sole_holder_claimable(100_000) == 99_999
    assert dist.claimable(p2, p2_holder.address) == sole_holder_claimable(250_000)
    assert dist.claimable(child, child_holder.address) == sole_holder_claimable(650_003)

    # The grandchild pays its direct parent (child) 5%, and nothing reaches p1/p2.
    payment = dist.pay(grandchild, 2 * ETHER)
    assert payment.royalties == [RoyaltyPaid(grandchild, child, ETHER // 10)]
    assert dist.claimable(child, child_holder.address) == sole_holder_claimable(650_003, ETHER // 10) == 650_002 + ETHER // 10
    assert dist.claimable(grandchild, grandchild_holder.address) == 2 * ETHER - ETHER // 10
    assert dist.claimable(p1, p1_holder.address) == 99_999
    assert dist.claimable(p2, p2_holder.address) == sole_holder_claimable(250_000)
    assert dist.total_paid(child) == 650_003 + ETHER // 10


def test_royalty_that_rounds_to_zero_stays_with_the_child(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    parent = revenue_env.register({accounts[1].address: SHARE_SUPPLY}, royalty_bps=1)
    child = revenue_env.register({accounts[2].address: SHARE_SUPPLY}, parents=[parent])
    payment = revenue_env.distributor_as(accounts[3]).pay(child, 9_999)  # 9999 * 1 / 10000 == 0
    assert payment.royalties == []
    assert payment.paid.distributed == 9_999
    assert revenue_env.distributor.total_paid(parent) == 0


def test_full_royalty_leaves_nothing_for_the_child(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    parent = revenue_env.register({accounts[1].address: SHARE_SUPPLY}, royalty_bps=10_000)
    child = revenue_env.register({accounts[2].address: SHARE_SUPPLY}, parents=[parent])
    payment = revenue_env.distributor_as(accounts[3]).pay(child, 12_345)
    assert payment.paid.distributed == 0
    assert revenue_env.distributor.claimable(parent, accounts[1].address) == sole_holder_claimable(12_345)
    assert revenue_env.distributor.total_paid(parent) == 12_345
    assert revenue_env.distributor.acc_per_share(child) == 0


# --------------------------------------------------------------------- claims


def test_claim_pays_once_and_is_idempotent(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    alice, bob, payer = accounts[1], accounts[2], accounts[3]
    asset = revenue_env.register(split([alice, bob], [3, 1]))
    revenue_env.distributor_as(payer).pay(asset, 4 * ETHER)
    dist = revenue_env.distributor_as(alice)
    w3 = revenue_env.w3
    before, pool_before = eth_balance(w3, alice.address), eth_balance(w3, dist.address)

    claim = dist.claim(asset)
    assert claim.total == 3 * ETHER and claim.per_asset == {asset: 3 * ETHER}
    assert claim.tx is not None
    assert revenue_events(claim.tx) == [RevenueClaimed(asset, alice.address, 3 * ETHER)]
    assert eth_balance(w3, alice.address) == before + 3 * ETHER - gas_cost(w3, claim.tx.tx_hash)
    assert eth_balance(w3, dist.address) == pool_before - 3 * ETHER
    assert dist.claimable(asset) == 0
    assert dist.total_claimed(asset) == 3 * ETHER

    again = dist.claim(asset)
    assert again.total == 0 and again.per_asset == {}
    assert again.tx is not None and again.tx.events_named("RevenueClaimed") == []
    assert dist.total_claimed(asset) == 3 * ETHER
    # Bob's part is untouched by alice's claims.
    assert dist.claimable(asset, bob.address) == ETHER


def test_claim_keeps_the_fractional_part_with_the_holder(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    # a holds 33.3333%: paid 5 wei it is owed 1.666665, claims 1 and keeps 0.666665 for later.
    a, b, c, payer = accounts[1], accounts[2], accounts[3], accounts[4]
    asset = revenue_env.register({a.address: 333_333, b.address: 333_333, c.address: 333_334})
    payer_dist, dist = revenue_env.distributor_as(payer), revenue_env.distributor_as(a)
    payer_dist.pay(asset, 5)
    assert dist.claim(asset).total == 1
    payer_dist.pay(asset, 1)  # owed 0.999998: still nothing whole
    assert dist.claimable(asset) == 0
    payer_dist.pay(asset, 1)  # owed 1.333331
    assert dist.claim(asset).total == 1
    # 2 == floor(7 * 0.333333): a reset of the debt at claim time would have paid only 1.
    assert dist.total_claimed(asset) == 2 == 7 * 333_333 // SHARE_SUPPLY


def test_claim_many_sums_assets_and_ignores_duplicates(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    alice, payer = accounts[1], accounts[2]
    a1 = revenue_env.register({alice.address: SHARE_SUPPLY})
    a2 = revenue_env.register(split([alice, accounts[3]], [1, 1]))
    a3 = revenue_env.register({accounts[3].address: SHARE_SUPPLY})
    revenue_env.distributor_as(payer).pay(a1, ETHER)
    revenue_env.distributor_as(payer).pay(a2, ETHER)
    revenue_env.distributor_as(payer).pay(a3, ETHER)
    dist = revenue_env.distributor_as(alice)
    before = eth_balance(revenue_env.w3, alice.address)
    claim = dist.claim_many([a1, a2, a2, a3, 999_999])
    assert claim == Claim(ETHER + ETHER // 2, {a1: ETHER, a2: ETHER // 2}, claim.tx)
    assert claim.tx is not None
    assert eth_balance(revenue_env.w3, alice.address) == before + claim.total - gas_cost(revenue_env.w3, claim.tx.tx_hash)
    assert dist.claim_many([a1, a2]).total == 0
    assert dist.claimable(a3, accounts[3].address) == ETHER


# --------------------------------------------------------------------- transfers and mints


def test_transfer_keeps_past_revenue_with_the_seller(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    seller, buyer, payer = accounts[1], accounts[2], accounts[3]
    asset = revenue_env.register({seller.address: SHARE_SUPPLY})
    dist = revenue_env.distributor_as(payer)
    dist.pay(asset, ETHER)
    revenue_env.shares_as(seller).transfer(buyer.address, asset, SHARE_SUPPLY // 4)
    assert dist.claimable(asset, seller.address) == ETHER
    assert dist.claimable(asset, buyer.address) == 0
    dist.pay(asset, 4 * ETHER)
    assert dist.claimable(asset, seller.address) == ETHER + 3 * ETHER
    assert dist.claimable(asset, buyer.address) == ETHER
    # Moving Shares back and forth never moves revenue.
    revenue_env.shares_as(buyer).transfer(seller.address, asset, SHARE_SUPPLY // 4)
    revenue_env.shares_as(seller).transfer(buyer.address, asset, SHARE_SUPPLY)
    assert dist.claimable(asset, seller.address) == 4 * ETHER
    assert dist.claimable(asset, buyer.address) == ETHER
    assert revenue_env.distributor_as(seller).claim(asset).total == 4 * ETHER


def test_passing_shares_around_after_a_claim_cannot_claim_twice(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    holder, accomplice, payer = accounts[1], accounts[2], accounts[3]
    asset = revenue_env.register(split([holder, accounts[4]], [1, 1]))
    revenue_env.distributor_as(payer).pay(asset, 2 * ETHER)
    assert revenue_env.distributor_as(holder).claim(asset).total == ETHER
    revenue_env.shares_as(holder).transfer(accomplice.address, asset, SHARE_SUPPLY // 2)
    assert revenue_env.distributor_as(accomplice).claim(asset).total == 0
    revenue_env.shares_as(accomplice).transfer(holder.address, asset, SHARE_SUPPLY // 2)
    assert revenue_env.distributor_as(holder).claim(asset).total == 0
    assert revenue_env.distributor.claimable(asset, accounts[4].address) == ETHER
    assert revenue_env.distributor.total_claimed(asset) == ETHER


def test_shares_minted_later_earn_only_later_revenue(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    early, late, payer = accounts[1], accounts[2], accounts[3]
    asset = revenue_env.register({early.address: SHARE_SUPPLY})
    dist = revenue_env.distributor_as(payer)
    dist.pay(asset, ETHER)
    shares = revenue_env.shares
    if not shares.has_role(shares.settlement_role(), revenue_env.admin.address):
        shares.grant_role(shares.settlement_role(), revenue_env.admin.address)
    shares.mint(late.address, asset, SHARE_SUPPLY)  # doubles the supply
    assert dist.claimable(asset, late.address) == 0
    assert dist.claimable(asset, early.address) == ETHER
    dist.pay(asset, 2 * ETHER)
    assert dist.claimable(asset, late.address) == ETHER
    assert dist.claimable(asset, early.address) == 2 * ETHER


def test_hook_is_callable_by_shares_only(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    attacker = accounts[6]
    asset = revenue_env.register({attacker.address: SHARE_SUPPLY})
    revenue_env.distributor_as(accounts[3]).pay(asset, ETHER)
    dist = revenue_env.distributor_as(attacker)
    # An EOA trying to zero its debt (i.e. claim twice) ...
    with pytest.raises(revert_class("OnlyShares")) as direct:
        dist._transact("beforeSharesUpdate", attacker.address, ZERO_ADDRESS, [asset], [SHARE_SUPPLY])
    assert isinstance(direct.value, Unauthorized)
    assert direct.value.error_args == {"caller": attacker.address}
    # ... and a contract doing the same.
    proxy = revenue_env.deploy_fixture("ReentrantClaimer", dist.address, account=attacker)
    with pytest.raises(revert_class("OnlyShares")) as via_contract:
        proxy._transact("poke", ZERO_ADDRESS, attacker.address, asset, SHARE_SUPPLY)
    assert via_contract.value.error_args == {"caller": proxy.address}
    assert dist.claimable(asset) == ETHER


# --------------------------------------------------------------------- adversarial receivers


def _claimer_with_revenue(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> tuple[ContractClient, int]:
    """A ReentrantClaimer holding half of a fresh asset that was paid 2 ether."""
    attacker = accounts[7]
    claimer = revenue_env.deploy_fixture("ReentrantClaimer", revenue_env.distributor.address, account=attacker)
    asset = revenue_env.register({attacker.address: SHARE_SUPPLY})
    revenue_env.shares_as(attacker).transfer(claimer.address, asset, SHARE_SUPPLY // 2)
    revenue_env.distributor_as(accounts[3]).pay(asset, 2 * ETHER)
    return claimer, asset


@pytest.mark.parametrize("mode", [REENTER, REENTER_MANY])
def test_reentrant_claim_is_blocked_and_pays_once(revenue_env: RevenueEnv, accounts: list[LocalAccount], mode: int) -> None:
    claimer, asset = _claimer_with_revenue(revenue_env, accounts)
    dist = revenue_env.distributor
    pool_before = eth_balance(revenue_env.w3, dist.address)
    claimer._transact("setMode", mode, asset)
    result = claimer._transact("claimMany" if mode == REENTER_MANY else "claim", *([[asset]] if mode == REENTER_MANY else [asset]))
    assert [e.args["amount"] for e in result.events_named("RevenueClaimed")] == [ETHER]
    assert claimer._call("reentered") == 0
    assert claimer._call("blocked") == 1
    selector = Web3.keccak(text="ReentrancyGuardReentrantCall()")[:4]
    assert bytes(claimer._call("lastError")) == selector
    assert claimer._call("received") == ETHER
    assert eth_balance(revenue_env.w3, claimer.address) == ETHER
    assert eth_balance(revenue_env.w3, dist.address) == pool_before - ETHER
    assert dist.claimable(asset, claimer.address) == 0
    assert dist.total_claimed(asset) == ETHER


def test_receiver_that_refuses_eth_keeps_its_claim(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    claimer, asset = _claimer_with_revenue(revenue_env, accounts)
    claimer._transact("setMode", REFUSE, asset)
    with pytest.raises(revert_class("ClaimTransferFailed")) as info:
        claimer._transact("claim", asset)
    assert info.value.error_args == {"holder": claimer.address, "amount": ETHER}
    dist = revenue_env.distributor
    assert dist.claimable(asset, claimer.address) == ETHER
    assert dist.total_claimed(asset) == 0
    claimer._transact("setMode", ACCEPT, asset)
    claimer._transact("claim", asset)
    assert eth_balance(revenue_env.w3, claimer.address) == ETHER


def test_no_plain_ether_deposits(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:
    w3 = revenue_env.w3
    tx = {"from": accounts[3].address, "to": revenue_env.distributor.address, "value": 1}
    with pytest.raises(Exception):  # noqa: B017 - any rejection: no receive() and no fallback
        w3.eth.estimate_gas(tx)  # type: ignore[arg-type]


# --------------------------------------------------------------------- CLI


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        revenue_env: RevenueEnv, request: pytest.FixtureRequest) -> Callable[..., CliResult]:
    """Run ``collab …`` in-process (real click tree, real error mapping) against the shared deployment."""
    from collab.cli import run

    if not revenue_env.real_registry:
        pytest.skip("the CLI needs the shared deployment")
    deployment_path = tmp_path / "deployment.json"
    request.getfixturevalue("deployment").save(deployment_path)

    def invoke(home: Path, *args: str) -> CliResult:
        monkeypatch.setenv("COLLAB_HOME", str(home))
        monkeypatch.setenv("COLLAB_DEPLOYMENT", str(deployment_path))
        monkeypatch.setenv("COLLAB_PASSPHRASE", "pw")
        capsys.readouterr()
        code = run(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


def test_cli_balance_and_claim(revenue_env: RevenueEnv, accounts: list[LocalAccount], tmp_path: Path,
                               cli: Callable[..., CliResult]) -> None:
    from collab.identity import Identity

    home = tmp_path / "holder"
    ident = Identity.create(home, "pw", scrypt_n=2)
    revenue_env.w3.provider.make_request("anvil_setBalance", [ident.address, hex(ETHER)])  # type: ignore[arg-type]
    other = accounts[2]
    a1 = revenue_env.register({ident.address: SHARE_SUPPLY // 4, other.address: 3 * SHARE_SUPPLY // 4})
    a2 = revenue_env.register({ident.address: SHARE_SUPPLY})
    a3 = revenue_env.register({other.address: SHARE_SUPPLY})
    payer = revenue_env.distributor_as(accounts[3])
    payer.pay(a1, 4 * ETHER)
    payer.pay(a2, 10**15)
    payer.pay(a3, ETHER)

    listed = cli(home, "--json", "revenue", "balance")
    assert listed.code == 0, listed.err
    body = json.loads(listed.out)
    assert body["account"] == ident.address
    assert [(p["asset_id"], p["shares"], p["claimable_wei"]) for p in body["assets"]] == [
        (a1, SHARE_SUPPLY // 4, ETHER), (a2, SHARE_SUPPLY, 10**15)
    ]
    assert body["total_claimable_wei"] == ETHER + 10**15
    assert body["total_claimable_eth"] == "1.001"

    human = cli(home, "revenue", "balance", str(a1))
    assert human.code == 0 and "25.0000%" in human.out and "total" in human.out

    claimed = cli(home, "--json", "revenue", "claim", str(a1), str(a2))
    assert claimed.code == 0, claimed.err
    result = json.loads(claimed.out)
    assert result["claimed_wei"] == ETHER + 10**15
    assert result["per_asset"] == {str(a1): ETHER, str(a2): 10**15}
    assert revenue_env.distributor.claimable(a1, ident.address) == 0

    again = cli(home, "revenue", "claim", str(a1))
    assert again.code == 0 and "nothing to claim" in again.out

    # Shares sold after a payment: the asset stays listed while revenue is unclaimed.
    payer.pay(a2, 2 * ETHER)
    assert cli(home, "--json", "revenue", "claim", str(a2)).code == 0
    theirs = cli(home, "--json", "revenue", "balance", "--holder", other.address)
    assert [p["asset_id"] for p in json.loads(theirs.out)["assets"]] == [a1, a3]


def test_cli_errors_map_to_exit_codes(revenue_env: RevenueEnv, tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    from collab.identity import Identity

    home = tmp_path / "someone"
    Identity.create(home, "pw", scrypt_n=2)
    unknown = cli(home, "revenue", "balance", "987654")
    assert unknown.code == EXIT_NOT_FOUND and "unknown asset id: 987654" in unknown.err
    assert "Traceback" not in unknown.err
    assert cli(home, "revenue", "claim", "987654").code == EXIT_NOT_FOUND
    assert cli(home, "revenue", "claim").code == EXIT_USAGE
    assert cli(home, "revenue", "balance", "--holder", "nope").code == EXIT_BAD_INPUT
    assert cli(tmp_path / "no-identity", "revenue", "balance").code == EXIT_NOT_FOUND
    empty = cli(home, "--json", "revenue", "balance")
    assert empty.code == 0 and json.loads(empty.out)["assets"] == []
