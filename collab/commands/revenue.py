"""``collab revenue balance|claim``: revenue this home's account can pull from RevenueDistributor.

``balance`` needs no passphrase (it reads the public address from the home,
or ``--holder``); with no asset ids it lists every asset the account holds
Shares of, found from the Shares transfer logs since the deployment, plus any
asset it sold but still has unclaimed revenue in. ``claim`` sends one
transaction (``claimMany`` for several assets) and reports what arrived.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import click
from eth_utils import is_address, to_checksum_address
from rich.table import Table

from collab.commands._common import ChainSession, chain_session, emit, log, settings
from collab.errors import BadInput, NotFound

if TYPE_CHECKING:
    from chain.clients.revenue_distributor import RevenueDistributorClient
    from chain.clients.shares import SharesClient

WEI_PER_ETH = Decimal(10**18)

group = click.Group("revenue", help="Show and claim revenue.")


@dataclass(frozen=True)
class Position:
    """One asset's Shares and claimable revenue for one account."""

    asset_id: int
    shares: int
    supply: int
    claimable: int

    def to_json(self) -> dict[str, Any]:
        return {
            "asset_id": self.asset_id,
            "shares": self.shares,
            "supply": self.supply,
            "claimable_wei": self.claimable,
            "claimable_eth": eth(self.claimable),
        }


def eth(wei: int) -> str:
    """Wei as an exact decimal ETH string (no float rounding)."""
    text = format(Decimal(wei) / WEI_PER_ETH, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _clients(session: ChainSession) -> tuple[SharesClient, RevenueDistributorClient]:
    from chain.clients.revenue_distributor import RevenueDistributorClient
    from chain.clients.shares import SharesClient

    return session.client(SharesClient), session.client(RevenueDistributorClient)


def _check_assets_exist(session: ChainSession, asset_ids: tuple[int, ...]) -> None:
    """NotFound for ids the registry does not know (the distributor would just answer 0)."""
    from chain.clients.asset_registry import AssetRegistryClient

    registry = session.client(AssetRegistryClient)
    missing = [i for i in dict.fromkeys(asset_ids) if not registry.exists(i)]
    if missing:
        raise NotFound(f"unknown asset id{'s' if len(missing) > 1 else ''}: {', '.join(map(str, missing))}",
                       hint="list assets with `collab asset list`")


def _holder(ctx: click.Context, holder: str | None) -> str:
    if holder is not None:
        if not is_address(holder):
            raise BadInput(f"--holder {holder!r} is not an address")
        return to_checksum_address(holder)
    from collab.identity import Identity

    return to_checksum_address(Identity.read_public(settings(ctx).home).address)


def positions(shares: SharesClient, distributor: RevenueDistributorClient, holder: str,
              asset_ids: list[int]) -> list[Position]:
    """The holder's Shares and claimable revenue in each asset, in the given order."""
    balances = shares.balances_of(holder, asset_ids) if asset_ids else {}
    return [
        Position(i, balances[i], shares.total_supply(i), distributor.claimable(i, holder))
        for i in asset_ids
    ]


@group.command("balance")
@click.argument("asset_ids", nargs=-1, type=click.IntRange(min=1))
@click.option("--holder", default=None, metavar="ADDRESS", help="Account to report (default: this home's identity).")
@click.pass_context
def balance(ctx: click.Context, asset_ids: tuple[int, ...], holder: str | None) -> None:
    """Claimable revenue per asset (default: every asset this account holds Shares of)."""
    session = chain_session(ctx, need_account=False)
    account = _holder(ctx, holder)
    shares, distributor = _clients(session)
    if asset_ids:
        _check_assets_exist(session, asset_ids)
        ids = list(dict.fromkeys(asset_ids))
        rows = positions(shares, distributor, account, ids)
    else:
        received = shares.assets_received(account, session.deployment.deploy_block)
        rows = [p for p in positions(shares, distributor, account, received) if p.shares > 0 or p.claimable > 0]
    total = sum(p.claimable for p in rows)
    data = {
        "account": account,
        "assets": [p.to_json() for p in rows],
        "total_claimable_wei": total,
        "total_claimable_eth": eth(total),
    }
    emit(ctx, data, _table(account, rows, total))


@group.command("claim")
@click.argument("asset_ids", nargs=-1, required=True, type=click.IntRange(min=1))
@click.pass_context
def claim(ctx: click.Context, asset_ids: tuple[int, ...]) -> None:
    """Withdraw this account's revenue of the given assets (one transaction)."""
    session = chain_session(ctx, need_account=True)
    _check_assets_exist(session, asset_ids)
    _, distributor = _clients(session)
    ids = list(dict.fromkeys(asset_ids))
    log(f"claiming revenue of asset{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))} …")
    result = distributor.claim(ids[0]) if len(ids) == 1 else distributor.claim_many(ids)
    data = {
        "account": distributor.account.address if distributor.account else None,
        "claimed_wei": result.total,
        "claimed_eth": eth(result.total),
        "per_asset": {str(i): result.per_asset.get(i, 0) for i in ids},
        "tx_hash": result.tx.tx_hash if result.tx else None,
    }
    if result.total == 0:
        human = "nothing to claim"
    else:
        parts = ", ".join(f"asset {i}: {eth(result.per_asset[i])} ETH" for i in ids if result.per_asset.get(i))
        human = f"claimed {eth(result.total)} ETH ({parts})"
    emit(ctx, data, human)


def _table(account: str, rows: list[Position], total: int) -> Table | str:
    if not rows:
        return f"{account} holds no Shares"
    table = Table(title=f"revenue of {account}", box=None, pad_edge=False)
    for name, justify in (("asset", "right"), ("shares", "right"), ("of supply", "right"), ("claimable ETH", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for p in rows:
        share = f"{Decimal(p.shares * 100) / Decimal(p.supply):.4f}%" if p.supply else "-"
        table.add_row(str(p.asset_id), str(p.shares), share, eth(p.claimable))
    table.add_row("total", "", "", eth(total), style="bold")
    return table
