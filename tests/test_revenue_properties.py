"""Stateful property test of Shares + RevenueDistributor against exact Python models.

Each example registers a small asset tree (two roots, a child of both, a
grandchild of the child) with random royalty rates and holders, then runs a
random sequence of payments, Share transfers (also to accounts that never held
any), settlement mints and claims. After every step the chain must match:

* a mirror of the contract's integer math (accumulator, carry, debts), exactly;
* conservation per asset, exactly: ``paid == claimed + sum(claimable) + dust``
  where dust is the carry plus the holders' fractional parts (whole wei);
* an independent exact model (fractions, no accumulator): every holder's
  ``claimed + claimable`` is within 1 wei of its pro-rata share of every
  payment made while it held Shares (so well within 1 wei per payment);
* the distributor's ETH balance equals what was paid in minus what was claimed.

Every example runs inside ``evm_snapshot``/``evm_revert``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction

from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from web3 import Web3

from chain.client import ContractClient
from chain.clients.revenue_distributor import BPS_DENOMINATOR, MAGNITUDE
from revenue_env import SHARE_SUPPLY, RevenueEnv, revenue_env  # noqa: F401 - fixture

MAX_EXAMPLES = int(os.environ.get("COLLAB_REVENUE_EXAMPLES", "25"))  # raise for a deeper local run
STEPS = 25
# accounts[1..4] may hold Shares from registration; accounts[5..8] start without any.
INITIAL_HOLDERS = range(1, 5)
ALL_HOLDERS = range(1, 9)
PAYER = 9

amounts = st.one_of(st.integers(1, 1_000), st.integers(1, 10**6), st.integers(1, 10**18))


@dataclass
class AssetModel:
    """One asset in both models: the contract's integer mirror and the exact fractions."""

    asset_id: int
    parents: list[tuple[int, int]]  # (model index, bps)
    supply: int = 0
    balances: dict[str, int] = field(default_factory=dict)
    acc: int = 0
    carry: int = 0
    debts: dict[str, int] = field(default_factory=dict)
    total_paid: int = 0
    total_claimed: int = 0
    exact: dict[str, Fraction] = field(default_factory=dict)
    slack: dict[str, Fraction] = field(default_factory=dict)
    claimed: dict[str, int] = field(default_factory=dict)

    def credit(self, amount: int) -> None:
        magnified = amount * MAGNITUDE + self.carry
        self.acc += magnified // self.supply
        self.carry = magnified % self.supply
        self.total_paid += amount
        for holder, balance in self.balances.items():
            self.exact[holder] = self.exact.get(holder, Fraction(0)) + Fraction(amount * balance, self.supply)
            # Flooring accPerShare (remainder carried on) shifts a holder by under balance / 2^128 wei.
            self.slack[holder] = self.slack.get(holder, Fraction(0)) + Fraction(balance, MAGNITUDE)

    def move(self, sender: str | None, receiver: str | None, value: int) -> None:
        delta = self.acc * value
        if sender is not None:
            self.debts[sender] = self.debts.get(sender, 0) - delta
            self.balances[sender] -= value
        else:
            self.supply += value
        if receiver is not None:
            self.debts[receiver] = self.debts.get(receiver, 0) + delta
            self.balances[receiver] = self.balances.get(receiver, 0) + value

    def owed(self, holder: str) -> int:
        """Magnified amount owed (the contract's ``accPerShare * balance - debt``)."""
        return self.acc * self.balances.get(holder, 0) - self.debts.get(holder, 0)

    def claim(self, holder: str) -> int:
        amount = self.owed(holder) // MAGNITUDE
        self.debts[holder] = self.debts.get(holder, 0) + amount * MAGNITUDE
        self.total_claimed += amount
        self.claimed[holder] = self.claimed.get(holder, 0) + amount
        return amount

    def known(self) -> set[str]:
        return set(self.balances) | set(self.debts) | set(self.exact)


class RevenueMachine(RuleBasedStateMachine):
    """Random payments, transfers, mints and claims over a four-asset tree."""

    env: RevenueEnv
    accounts: list[LocalAccount]
    lens: ContractClient

    def __init__(self) -> None:
        super().__init__()
        self.w3: Web3 = self.env.w3
        self.snapshot = self.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
        self.assets: list[AssetModel] = []
        self.pool_baseline = int(self.w3.eth.get_balance(self.env.distributor.address))

    def teardown(self) -> None:
        reverted = self.w3.provider.make_request("evm_revert", [self.snapshot])  # type: ignore[arg-type]
        assert reverted.get("result") is True, reverted

    # ------------------------------------------------------------------ setup

    @initialize(
        root_bps=st.tuples(st.integers(0, 5_000), st.integers(0, 5_000)),
        child_bps=st.integers(0, 10_000),
        weights=st.lists(st.lists(st.integers(0, 5), min_size=len(INITIAL_HOLDERS), max_size=len(INITIAL_HOLDERS)).filter(any), min_size=4, max_size=4),
    )
    def register_tree(self, root_bps: tuple[int, int], child_bps: int, weights: list[list[int]]) -> None:
        """Roots r1, r2; child c of (r1, r2); grandchild g of c."""
        layout = [((), root_bps[0]), ((), root_bps[1]), ((0, 1), child_bps), ((2,), 0)]
        bps_of = [root_bps[0], root_bps[1], child_bps, 0]
        for index, (parents, royalty) in enumerate(layout):
            holders = self._split(weights[index])
            asset_id = self.env.register(holders, parents=[self.assets[p].asset_id for p in parents], royalty_bps=royalty)
            model = AssetModel(asset_id, [(p, bps_of[p]) for p in parents])
            for holder, amount in holders.items():
                model.move(None, holder, amount)
            self.assets.append(model)

    def _split(self, weights: list[int]) -> dict[str, int]:
        total = sum(weights)
        holders = {self.accounts[i].address: SHARE_SUPPLY * w // total for i, w in zip(INITIAL_HOLDERS, weights, strict=True) if w}
        last = next(reversed(holders))
        holders[last] += SHARE_SUPPLY - sum(holders.values())
        return holders

    # ------------------------------------------------------------------ rules

    @rule(index=st.integers(0, 3), amount=amounts)
    def pay(self, index: int, amount: int) -> None:
        model = self.assets[index]
        payment = self.env.distributor_as(self.accounts[PAYER]).pay(model.asset_id, amount)
        rest = amount
        expected_royalties = []
        for parent_index, bps in model.parents:
            parent = self.assets[parent_index]
            royalty = amount * bps // BPS_DENOMINATOR
            if royalty == 0 or parent.supply == 0:
                continue
            rest -= royalty
            parent.credit(royalty)
            expected_royalties.append((parent.asset_id, royalty))
        if rest:
            model.credit(rest)
        assert [(r.parent_id, r.amount) for r in payment.royalties] == expected_royalties
        assert payment.paid.distributed == rest

    @rule(index=st.integers(0, 3), data=st.data())
    def transfer(self, index: int, data: st.DataObject) -> None:
        model = self.assets[index]
        holders = sorted(h for h, b in model.balances.items() if b > 0)
        sender = data.draw(st.sampled_from(holders), label="sender")
        receiver = data.draw(st.sampled_from([self.accounts[i].address for i in ALL_HOLDERS]), label="receiver")
        value = data.draw(st.one_of(st.just(model.balances[sender]), st.integers(1, model.balances[sender])), label="value")
        account = next(a for a in self.accounts if a.address == sender)
        self.env.shares_as(account).transfer(receiver, model.asset_id, value)
        model.move(sender, receiver, value)

    @rule(index=st.integers(0, 3), holder=st.sampled_from(list(ALL_HOLDERS)), value=st.integers(1, SHARE_SUPPLY))
    def settlement_mint(self, index: int, holder: int, value: int) -> None:
        model = self.assets[index]
        receiver = self.accounts[holder].address
        self.env.shares.mint(receiver, model.asset_id, value)
        model.move(None, receiver, value)

    @rule(index=st.integers(0, 3), holder=st.sampled_from(list(ALL_HOLDERS)))
    def claim(self, index: int, holder: int) -> None:
        model = self.assets[index]
        account = self.accounts[holder]
        before = int(self.w3.eth.get_balance(account.address))
        result = self.env.distributor_as(account).claim(model.asset_id)
        expected = model.claim(account.address)
        assert result.total == expected
        assert result.tx is not None
        receipt = self.w3.eth.get_transaction_receipt(result.tx.tx_hash)  # type: ignore[arg-type]
        fee = int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])
        assert int(self.w3.eth.get_balance(account.address)) == before + expected - fee

    @precondition(lambda self: len(self.assets) == 4)
    @rule(holder=st.sampled_from(list(ALL_HOLDERS)), indices=st.lists(st.integers(0, 3), min_size=1, max_size=5))
    def claim_many(self, holder: int, indices: list[int]) -> None:
        account = self.accounts[holder]
        result = self.env.distributor_as(account).claim_many([self.assets[i].asset_id for i in indices])
        expected = {}
        for i in indices:
            amount = self.assets[i].claim(account.address)
            if amount:
                expected[self.assets[i].asset_id] = expected.get(self.assets[i].asset_id, 0) + amount
        assert result.per_asset == expected

    # ------------------------------------------------------------------ invariants

    @invariant()
    def chain_matches_models(self) -> None:
        holders = [self.accounts[i].address for i in ALL_HOLDERS]
        pools, holdings, eth_balance = self.lens._call(
            "read", self.env.distributor.address, self.env.shares.address, [m.asset_id for m in self.assets], holders
        )
        outstanding = 0
        for model, pool, positions in zip(self.assets, pools, holdings, strict=True):
            acc, dust, total_paid, total_claimed, supply = pool
            assert (acc, dust, total_paid, total_claimed, supply) == (
                model.acc, model.carry, model.total_paid, model.total_claimed, model.supply
            )
            assert model.known() <= set(holders)
            claimable_sum, fractions = 0, 0
            for holder, (balance, debt, claimable) in zip(holders, positions, strict=True):
                assert (balance, debt) == (model.balances.get(holder, 0), model.debts.get(holder, 0)), holder
                owed = model.owed(holder)
                assert owed >= 0
                assert claimable == owed // MAGNITUDE
                claimable_sum += claimable
                fractions += owed % MAGNITUDE
                # Independent exact model: less than 1 wei (plus the 2^-128 slack) short of the
                # exact pro-rata share of every payment made while holding, and never above it.
                got = model.claimed.get(holder, 0) + claimable
                exact, slack = model.exact.get(holder, Fraction(0)), model.slack.get(holder, Fraction(0))
                assert exact - 1 - slack < got <= exact + slack, (holder, got, exact)
            # Conservation, exactly: dust (carry + fractional parts) is a whole number of wei.
            dust_magnified = model.carry + fractions
            assert dust_magnified % MAGNITUDE == 0
            assert model.total_paid == model.total_claimed + claimable_sum + dust_magnified // MAGNITUDE
            outstanding += model.total_paid - model.total_claimed
        assert eth_balance == self.pool_baseline + outstanding


def test_revenue_state_machine(revenue_env: RevenueEnv, accounts: list[LocalAccount]) -> None:  # noqa: F811
    shares = revenue_env.shares
    if not shares.has_role(shares.settlement_role(), revenue_env.admin.address):  # the direct stack
        shares.grant_role(shares.settlement_role(), revenue_env.admin.address)
    RevenueMachine.env = revenue_env
    RevenueMachine.accounts = accounts
    RevenueMachine.lens = revenue_env.deploy_fixture("RevenueLens")
    machine = settings(
        max_examples=MAX_EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )(RevenueMachine)
    machine.TestCase().runTest()
