"""``collab id init|register|show``: this home's keys and its Sahara ID on-chain.

``init`` creates the home's keys (secp256k1 account, X25519, CurveZMQ, BLS);
``register`` stakes and registers their public halves, with a BLS proof of
possession bound to this chain, registry and account; ``show`` reads any
identity by id or address (default: this home's) without unlocking keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
from eth_utils import is_address, to_checksum_address

from collab.commands._common import chain_session, emit, identity, kv_table, log, settings
from collab.errors import BadInput, NotFound, UsageError

if TYPE_CHECKING:
    from chain.clients.identity_registry import Identity, IdentityRegistryClient

ROLE_LABELS = ("human", "agent", "node")
WEI_PER_ETH = 10**18

group = click.Group("id", help="Create, register and show this home's identity (Sahara ID).")


def _registry(ctx: click.Context, need_account: bool) -> IdentityRegistryClient:
    from chain.clients.identity_registry import IdentityRegistryClient

    return chain_session(ctx, need_account=need_account).client(IdentityRegistryClient)


def _eth(wei: int) -> str:
    return f"{wei / WEI_PER_ETH:.6g} ETH"


@group.command("init")
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create this home's keys, encrypted with the passphrase (never overwrites)."""
    from collab.identity import Identity

    conf = settings(ctx)
    created = Identity.create(conf.home, conf.passphrase(confirm=True, prompt="New passphrase"))
    public = created.public
    data = {
        "home": str(conf.home),
        "address": created.address,
        "x25519_public": public.x25519_public,
        "curve_public": public.curve_public,
        "bls_public": public.bls_public,
    }
    emit(ctx, data, f"created identity {created.address} in {conf.home}\n"
                    f"next: fund it, then `collab id register --name NAME --role human|agent|node`")


@group.command("register")
@click.option("--name", required=True, help="Display name (1-64 bytes).")
@click.option("--role", "role_label", type=click.Choice(ROLE_LABELS), required=True,
              help="Role (the aggregator role is granted by the admin, not registered).")
@click.option("--stake-from-params", is_flag=True, default=False,
              help="Stake the current governed ADMISSION_STAKE (the default when --stake is absent).")
@click.option("--stake", "stake_wei", type=click.IntRange(min=0), default=None, metavar="WEI",
              help="Stake exactly this many wei (the registry refuses anything but ADMISSION_STAKE).")
@click.pass_context
def register(ctx: click.Context, name: str, role_label: str, stake_from_params: bool, stake_wei: int | None) -> None:
    """Stake and register this home's public keys as a Sahara ID."""
    from chain.clients.identity_registry import Keys

    if stake_from_params and stake_wei is not None:
        raise UsageError("give either --stake or --stake-from-params, not both")
    encoded = name.encode()
    if not encoded or len(encoded) > 64:
        raise BadInput(f"--name must be 1-64 bytes, got {len(encoded)}")
    registry = _registry(ctx, need_account=True)
    me = identity(ctx)
    existing = registry.id_of(me.address)
    if existing:
        raise BadInput(f"{me.address} is already registered as identity {existing}", hint="see `collab id show`")
    stake = registry.admission_stake() if stake_wei is None else stake_wei
    balance = int(registry.w3.eth.get_balance(me.address))  # type: ignore[arg-type]
    if balance <= stake:
        raise BadInput(f"{me.address} holds {_eth(balance)} but the stake alone is {_eth(stake)} (plus gas)",
                       hint="fund the account first")
    log(f"registering {me.address} as {role_label} {name!r} (stake {_eth(stake)}) …")
    keys = Keys(*me.registry_keys(int(registry.w3.eth.chain_id), registry.address))
    event = registry.register(name, role_label, keys, stake=stake)
    data = {"id": event.id, "account": event.account, "role": event.role.label, "name": event.name, "stake": stake,
            "tx": event.tx.tx_hash if event.tx else None}
    emit(ctx, data, f"registered identity {event.id}: {event.name} ({event.role.label}) for {event.account}")


@group.command("show")
@click.argument("who", required=False, metavar="[ID|ADDRESS]")
@click.pass_context
def show(ctx: click.Context, who: str | None) -> None:
    """Show an identity by id or address (default: this home's), with reputation and gates."""
    registry = _registry(ctx, need_account=False)
    identity_id = _resolve(ctx, registry, who)
    record = registry.identity(identity_id)
    data = _view(registry, record)
    emit(ctx, data, kv_table(_human(data), title=f"identity {record.id}"))


def _resolve(ctx: click.Context, registry: IdentityRegistryClient, who: str | None) -> int:
    """An identity id from an id, an address, or this home's public keys."""
    if who is None:
        from collab.identity import Identity

        address = Identity.read_public(settings(ctx).home).address
    elif who.isdigit():
        identity_id = int(who)
        if identity_id == 0 or identity_id > registry.identity_count():
            raise NotFound(f"no identity {identity_id}")
        return identity_id
    elif is_address(who):
        address = to_checksum_address(who)
    else:
        raise BadInput(f"{who!r} is neither an identity id nor an address")
    identity_id = registry.id_of(address)
    if identity_id == 0:
        raise NotFound(f"{address} has no Sahara ID", hint="register with `collab id register`")
    return identity_id


def _view(registry: IdentityRegistryClient, record: Identity) -> dict[str, Any]:
    data = record.to_json()
    data["reputation"] = registry.reputation_of(record.id)
    data["stake"] = registry.stake_of(record.id)
    data["can_claim"] = registry.can_claim(record.account)
    data["can_aggregate"] = registry.can_aggregate(record.account)
    return data


def _human(data: dict[str, Any]) -> dict[str, Any]:
    keys = data["keys"]
    return {
        "account": data["account"], "name": data["name"], "role": data["role"],
        "status": "active" if data["active"] else "exited", "registered at": data["registered_at"],
        "reputation": data["reputation"], "stake": _eth(data["stake"]),
        "can claim": "yes" if data["can_claim"] else "no", "can aggregate": "yes" if data["can_aggregate"] else "no",
        "curve key": keys["curve_key"], "x25519 key": keys["x25519_key"],
        "bls key": keys["bls_pubkey"][:34] + "…",
    }
