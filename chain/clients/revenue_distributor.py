"""Typed client of ``RevenueDistributor``: pay an asset, read and claim revenue.

Amounts are wei (int). ``claimable`` is what a claim would send now; the
accounting views (``acc_per_share``, ``debt_of``, ``dust``) expose the
magnified (2^128) state so callers and tests can check conservation exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from eth_utils import to_checksum_address

from chain.client import ContractClient, Event, TxResult
from collab.errors import Unauthorized

MAGNITUDE = 2**128
BPS_DENOMINATOR = 10_000


@dataclass(frozen=True)
class RevenuePaid:
    """``RevenuePaid``: ``amount`` arrived, ``distributed`` went to the asset's own holders."""

    asset_id: int
    payer: str
    amount: int
    distributed: int


@dataclass(frozen=True)
class RoyaltyPaid:
    """``RoyaltyPaid``: the holders of direct parent ``parent_id`` were credited ``amount``."""

    child_id: int
    parent_id: int
    amount: int


@dataclass(frozen=True)
class RevenueClaimed:
    """``RevenueClaimed``: ``holder`` withdrew ``amount`` of ``asset_id``'s revenue."""

    asset_id: int
    holder: str
    amount: int


RevenueEvent = RevenuePaid | RoyaltyPaid | RevenueClaimed


def decode_revenue_event(event: Event) -> RevenueEvent | None:
    """The dataclass for one of the distributor's events (None for any other event)."""
    a = event.args
    if event.name == "RevenuePaid":
        return RevenuePaid(int(a["assetId"]), to_checksum_address(a["payer"]), int(a["amount"]), int(a["distributed"]))
    if event.name == "RoyaltyPaid":
        return RoyaltyPaid(int(a["childId"]), int(a["parentId"]), int(a["amount"]))
    if event.name == "RevenueClaimed":
        return RevenueClaimed(int(a["assetId"]), to_checksum_address(a["holder"]), int(a["amount"]))
    return None


def revenue_events(result: TxResult) -> list[RevenueEvent]:
    """The distributor events of one transaction, in log order."""
    return [e for e in (decode_revenue_event(ev) for ev in result.events) if e is not None]


@dataclass(frozen=True)
class Payment:
    """What one ``pay`` did: the payment, the parents' royalties, the transaction."""

    paid: RevenuePaid
    royalties: list[RoyaltyPaid]
    tx: TxResult


@dataclass(frozen=True)
class Claim:
    """What one ``claim``/``claimMany`` sent: total and per asset (assets with 0 omitted)."""

    total: int
    per_asset: dict[int, int] = field(default_factory=dict)
    tx: TxResult | None = None


class RevenueDistributorClient(ContractClient):
    """Calls on the deployed ``RevenueDistributor``."""

    CONTRACT = "RevenueDistributor"

    # ------------------------------------------------------------------ views

    def claimable(self, asset_id: int, holder: str | None = None) -> int:
        """Wei ``holder`` (default: the client's account) can claim from ``asset_id`` now."""
        return int(self._call("claimable", int(asset_id), self._holder(holder)))

    def total_paid(self, asset_id: int) -> int:
        """Wei credited to ``asset_id``'s holders so far (net of parent royalties, plus royalties received)."""
        return int(self._call("totalPaid", int(asset_id)))

    def total_claimed(self, asset_id: int) -> int:
        """Wei claimed by ``asset_id``'s holders so far."""
        return int(self._call("totalClaimed", int(asset_id)))

    def dust(self, asset_id: int) -> int:
        """Magnified carry (units of 2^-128 wei) waiting for the next payment."""
        return int(self._call("dust", int(asset_id)))

    def acc_per_share(self, asset_id: int) -> int:
        """Magnified revenue per Share accumulated so far."""
        return int(self._call("accPerShare", int(asset_id)))

    def debt_of(self, asset_id: int, holder: str) -> int:
        """Signed magnified debt of ``holder``."""
        return int(self._call("debtOf", int(asset_id), to_checksum_address(holder)))

    def shares_address(self) -> str:
        """The Shares contract this distributor listens to."""
        return to_checksum_address(self._call("SHARES"))

    def assets_address(self) -> str:
        """The AssetRegistry this distributor reads."""
        return to_checksum_address(self._call("ASSETS"))

    # ------------------------------------------------------------------ transactions

    def pay(self, asset_id: int, amount: int) -> Payment:
        """Pay ``amount`` wei to ``asset_id`` (parents take their royalty first)."""
        tx = self._transact("pay", int(asset_id), value=int(amount))
        events = revenue_events(tx)
        paid = next(e for e in events if isinstance(e, RevenuePaid))
        return Payment(paid=paid, royalties=[e for e in events if isinstance(e, RoyaltyPaid)], tx=tx)

    def claim(self, asset_id: int) -> Claim:
        """Withdraw the account's revenue of one asset (0 sends nothing)."""
        return self._claim_result(self._transact("claim", int(asset_id)))

    def claim_many(self, asset_ids: Sequence[int]) -> Claim:
        """Withdraw the account's revenue of several assets in one transaction."""
        return self._claim_result(self._transact("claimMany", [int(i) for i in asset_ids]))

    # ------------------------------------------------------------------ helpers

    def _holder(self, holder: str | None) -> str:
        if holder is not None:
            return to_checksum_address(holder)
        if self.account is None:
            raise Unauthorized("no holder given and no account unlocked", hint="unlock an identity (COLLAB_PASSPHRASE)")
        return to_checksum_address(self.account.address)

    @staticmethod
    def _claim_result(tx: TxResult) -> Claim:
        per_asset: dict[int, int] = {}
        for event in revenue_events(tx):
            if isinstance(event, RevenueClaimed):
                per_asset[event.asset_id] = per_asset.get(event.asset_id, 0) + event.amount
        return Claim(total=sum(per_asset.values()), per_asset=per_asset, tx=tx)
