"""``collab license offer|buy|show|check``: publish, take and inspect licenses on-chain.

Thin by design: parse, call :class:`chain.clients.licensing.LicensingClient`,
print through :func:`emit`. ``check`` exits 4 when the user is not licensed so
scripts (and the serving node) can gate on the exit code alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from eth_utils import is_address, keccak, to_checksum_address

from collab.commands._common import chain_session, emit, log, settings
from collab.errors import BadInput, NotFound, Unauthorized

if TYPE_CHECKING:
    from chain.clients.licensing import LicensingClient, Offer, Terms

KIND_LABELS = ("api", "full-access", "long-term", "partnership")

group = click.Group("license", help="Offer, buy, show and check licenses.")

_kind_option = click.option(
    "--kind", "kind_label", type=click.Choice(KIND_LABELS), required=True, help="License kind."
)


def _client(ctx: click.Context, need_account: bool = True) -> LicensingClient:
    from chain.clients.licensing import LicensingClient

    return chain_session(ctx, need_account=need_account).client(LicensingClient)


def _address(text: str, what: str) -> str:
    if not is_address(text):
        raise BadInput(f"{what} {text!r} is not an address")
    return to_checksum_address(text)


def _terms_hash(path: Path | None) -> bytes:
    """keccak256 of the terms document, so the on-chain offer commits to its exact text."""
    if path is None:
        return b"\x00" * 32
    try:
        return keccak(path.read_bytes())
    except OSError as exc:
        raise NotFound(f"cannot read terms file {path}: {exc.strerror or exc}") from None


def build_terms(
    kind_label: str,
    *,
    price: int,
    fee_per_call: int,
    duration: int,
    partner: str | None,
    terms_file: Path | None,
    revenue_split_bps: int,
    installments: int,
    interval: int,
) -> Terms:
    """Check the options a kind needs (before any transaction) and build its Terms."""
    from chain.clients.licensing import ZERO_ADDRESS, Terms

    if kind_label == "api" and fee_per_call <= 0:
        raise BadInput("an api offer needs --fee-per-call > 0")
    if kind_label in ("full-access", "long-term") and price < 0:
        raise BadInput("--price must be >= 0")
    if kind_label == "long-term" and duration <= 0:
        raise BadInput("a long-term offer needs --duration SECONDS > 0")
    if kind_label == "partnership":
        if partner is None:
            raise BadInput("a partnership offer needs --partner ADDRESS (the co-signer)")
        if price > 0 and installments < 1:
            raise BadInput("a paid partnership needs --installments N >= 1 (price is per installment)")
        if installments > 1 and interval <= 0:
            raise BadInput("several installments need --interval SECONDS > 0")
    elif partner is not None:
        raise BadInput("--partner applies to partnership offers only")
    if not 0 <= revenue_split_bps <= 10_000:
        raise BadInput(f"--revenue-split-bps must be within 0..10000, got {revenue_split_bps}")
    return Terms(
        price=price,
        fee_per_call=fee_per_call,
        duration=duration,
        terms_hash=_terms_hash(terms_file),
        revenue_split_bps=revenue_split_bps,
        installment_interval=interval,
        installment_count=installments,
        partner=_address(partner, "--partner") if partner else ZERO_ADDRESS,
    )


def default_value(offer: Offer) -> int:
    """What ``buy`` sends without ``--value``: one call of credit (api) or the price."""
    from chain.clients.licensing import LicenseKind

    return offer.terms.fee_per_call if offer.kind is LicenseKind.API else offer.terms.price


@group.command("offer")
@click.argument("asset_id", type=click.IntRange(min=1))
@_kind_option
@click.option("--price", type=click.IntRange(min=0), default=0, help="Wei: full-access/long-term price, partnership installment.")
@click.option("--fee-per-call", type=click.IntRange(min=0), default=0, help="Wei per API call.")
@click.option("--duration", type=click.IntRange(min=0), default=0, help="Seconds of validity (required for long-term).")
@click.option("--partner", default=None, metavar="ADDRESS", help="Partnership: the only account that can accept.")
@click.option("--terms-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Terms document; its keccak256 is recorded on-chain.")
@click.option("--revenue-split-bps", type=click.IntRange(min=0), default=0, help="Partnership revenue split (basis points).")
@click.option("--installments", type=click.IntRange(min=0), default=0, help="Partnership: number of installments.")
@click.option("--interval", type=click.IntRange(min=0), default=0, help="Partnership: seconds between installments.")
@click.pass_context
def offer_cmd(
    ctx: click.Context,
    asset_id: int,
    kind_label: str,
    price: int,
    fee_per_call: int,
    duration: int,
    partner: str | None,
    terms_file: Path | None,
    revenue_split_bps: int,
    installments: int,
    interval: int,
) -> None:
    """Publish an offer for ASSET_ID (you must own it)."""
    from chain.clients.licensing import offer_json

    terms = build_terms(
        kind_label, price=price, fee_per_call=fee_per_call, duration=duration, partner=partner,
        terms_file=terms_file, revenue_split_bps=revenue_split_bps, installments=installments, interval=interval,
    )
    client = _client(ctx)
    published = client.offer(asset_id, kind_label, terms)
    data = {**offer_json(client.offer_info(published.offer_id)), "tx": published.tx.tx_hash if published.tx else None}
    emit(ctx, data, f"offer {published.offer_id} published: {kind_label} license of asset {asset_id}")


@group.command("buy")
@click.argument("offer_id", type=click.IntRange(min=1))
@click.option("--value", type=click.IntRange(min=0), default=None,
              help="Wei to send (default: the price, or one call of credit for api offers).")
@click.pass_context
def buy_cmd(ctx: click.Context, offer_id: int, value: int | None) -> None:
    """Take offer OFFER_ID (needs a registered Sahara ID)."""
    client = _client(ctx)
    offer = client.offer_info(offer_id)
    amount = default_value(offer) if value is None else value
    log(f"buying offer {offer_id} ({offer.kind.label}) for {amount} wei …")
    bought = client.buy(offer_id, amount)
    data: dict[str, Any] = {
        "license_id": bought.license_id, "offer_id": bought.offer_id, "asset_id": bought.asset_id,
        "kind": bought.kind.label, "licensee": bought.licensee, "paid": bought.paid, "expires": bought.expires,
        "tx": bought.tx.tx_hash if bought.tx else None,
    }
    emit(ctx, data, f"license {bought.license_id}: {bought.kind.label} on asset {bought.asset_id}, paid {bought.paid} wei")


@group.command("show")
@click.argument("license_id", type=click.IntRange(min=1))
@click.pass_context
def show_cmd(ctx: click.Context, license_id: int) -> None:
    """Show license LICENSE_ID and whether it is current."""
    from chain.clients.licensing import ZERO_ADDRESS

    client = _client(ctx, need_account=False)
    record = client.license(license_id)
    user = client.user_of(license_id)
    data = {**record.to_json(), "current": user != to_checksum_address(ZERO_ADDRESS), "user": user}
    emit(ctx, data)


@group.command("check")
@click.argument("asset_id", type=click.IntRange(min=1))
@click.option("--user", default=None, metavar="ADDRESS", help="Account to check (default: this home's identity).")
@_kind_option
@click.pass_context
def check_cmd(ctx: click.Context, asset_id: int, user: str | None, kind_label: str) -> None:
    """Check that USER may use ASSET_ID under --kind; exit 4 when not licensed."""
    address = _address(user, "--user") if user else _home_address(ctx)
    client = _client(ctx, need_account=False)
    licensed = client.is_licensed(asset_id, address, kind_label)
    license_id = client.license_of(asset_id, address, kind_label)
    if not licensed:
        raise Unauthorized(
            f"{address} is not licensed for asset {asset_id} ({kind_label})",
            asset_id=asset_id, user=address, kind=kind_label, license_id=license_id,
        )
    data = {"asset_id": asset_id, "user": address, "kind": kind_label, "licensed": True, "license_id": license_id}
    emit(ctx, data, f"{address} is licensed for asset {asset_id} ({kind_label})")


def _home_address(ctx: click.Context) -> str:
    """The home identity's address, read from its public keys (no passphrase needed)."""
    from collab.identity import Identity

    home = settings(ctx).home
    if not Identity.exists(home):
        raise NotFound(f"no identity in {home}", hint="pass --user ADDRESS or create one with `collab id init`")
    return to_checksum_address(Identity.read_public(home).address)


@group.command("top-up")
@click.argument("license_id", type=click.IntRange(min=1))
@click.option("--value", type=click.IntRange(min=1), required=True, help="Wei of API credit to add.")
@click.pass_context
def top_up_cmd(ctx: click.Context, license_id: int, value: int) -> None:
    """Add prepaid credit to API license LICENSE_ID."""
    client = _client(ctx)
    tx = client.top_up(license_id, value)
    escrow = client.license(license_id).escrow
    emit(ctx, {"license_id": license_id, "added": value, "escrow": escrow, "tx": tx.tx_hash},
         f"license {license_id}: +{value} wei, {escrow} wei of credit")


@group.command("withdraw")
@click.pass_context
def withdraw_cmd(ctx: click.Context) -> None:
    """Withdraw what Licensing credited to this identity (refunds, compute fees)."""
    client = _client(ctx)
    owed = client.credited(client.require_account())
    if owed == 0:
        emit(ctx, {"withdrawn": 0}, "nothing to withdraw")
        return
    amount = client.withdraw()
    emit(ctx, {"withdrawn": amount}, f"withdrew {amount} wei")
