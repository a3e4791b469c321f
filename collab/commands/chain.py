"""``collab chain up|status|down|deploy``: the bundled chain and collab's contracts on it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from collab.commands._common import emit, identity, log, settings
from collab.errors import EXIT_UNAVAILABLE, BadInput, Unauthorized

DEFAULT_KEY_ENV = "COLLAB_DEPLOYER_KEY"

group = click.Group("chain", help="Start, inspect, deploy and stop the chain.")

_profile_option = click.option(
    "--profile", type=click.Choice(["default", "demo"]), default="default", show_default=True,
    help="Governed parameter defaults (demo: windows of seconds).",
)
_param_option = click.option(
    "--param", "param_pairs", multiple=True, metavar="NAME=VALUE",
    help="Override a governed parameter (e.g. CHALLENGE_WINDOW=60); repeatable.",
)


def _parse_params(pairs: tuple[str, ...]) -> dict[str, int]:
    params: dict[str, int] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise BadInput(f"--param expects NAME=VALUE, got {pair!r}")
        try:
            params[name.strip().upper()] = int(value, 0)
        except ValueError:
            raise BadInput(f"--param {name}: {value!r} is not an integer") from None
    return params


def _deployment_view(deployment: Any) -> dict[str, Any]:
    return {
        "chain_id": deployment.chain_id,
        "rpc_url": deployment.rpc_url,
        "deploy_block": deployment.deploy_block,
        "contracts": {name: entry["address"] for name, entry in deployment.contracts.items()},
    }


def _contracts_text(contracts: dict[str, str]) -> str:
    return "\n".join(f"  {name:<20} {address}" for name, address in contracts.items())


@group.command("up")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port of the embedded anvil (default 8545).")
@click.option("--state", "state_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Persist the chain in this file (loaded at start, dumped while running and at stop).")
@_profile_option
@_param_option
@click.pass_context
def up(ctx: click.Context, port: int | None, state_file: Path | None, profile: str, param_pairs: tuple[str, ...]) -> None:
    """Start the embedded chain (or reuse it) and deploy collab's contracts if needed."""
    from chain.node import chain_up

    conf = settings(ctx)
    log(f"starting the chain for {conf.home} …")
    deployment = chain_up(conf, port, state_file, profile=profile, params=_parse_params(param_pairs))
    data = {**_deployment_view(deployment), "deployment_path": str(conf.deployment_path), "state_file": str(state_file) if state_file else None}
    emit(ctx, data, f"chain up at {deployment.rpc_url} (chain {deployment.chain_id})\n"
                    f"deployment: {conf.deployment_path}\n{_contracts_text(data['contracts'])}")


@group.command("status")
@click.pass_context
def status(ctx: click.Context) -> None:
    """Show whether the chain answers and what is deployed on it (exit 5 when it does not answer)."""
    from chain.node import chain_status

    data = chain_status(settings(ctx))
    if not data["reachable"]:
        where = data["rpc_url"] or "no RPC URL known"
        human = f"chain not reachable ({where}); run `collab chain up`"
    else:
        state = "deployed" if data["deployed"] else "not deployed (run `collab chain up` or `collab chain deploy`)"
        human = (f"chain {data['chain_id']} at {data['rpc_url']}, block {data['block_number']}"
                 f"{' (embedded, pid ' + str(data['pid']) + ')' if data['embedded'] else ''}\n"
                 f"contracts: {state}\n{_contracts_text(data['contracts']) if data['deployed'] else ''}").rstrip()
    emit(ctx, data, human)
    if not data["reachable"]:
        ctx.exit(EXIT_UNAVAILABLE)  # scripts can wait on `collab chain status`


@group.command("down")
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop the embedded chain (its --state file, if any, keeps the chain)."""
    from chain.node import chain_down

    data = chain_down(settings(ctx))
    emit(ctx, data, f"chain stopped (pid {data['pid']})" if data["stopped"] else data["reason"])


@group.command("deploy")
@click.option("--rpc", "rpc_url", required=True, help="JSON-RPC URL of the target chain.")
@click.option("--private-key-env", "key_env", default=DEFAULT_KEY_ENV, show_default=True,
              help="Environment variable holding the deployer's private key (else the home identity deploys).")
@_profile_option
@_param_option
@click.option("--voting-delay", type=click.IntRange(min=0), default=None, help="Governor voting delay in seconds.")
@click.option("--voting-period", type=click.IntRange(min=1), default=None, help="Governor voting period in seconds.")
@click.pass_context
def deploy(
    ctx: click.Context, rpc_url: str, key_env: str, profile: str, param_pairs: tuple[str, ...],
    voting_delay: int | None, voting_period: int | None,
) -> None:
    """Deploy a fresh set of collab's contracts to any EVM JSON-RPC endpoint."""
    from eth_account import Account

    from chain.node import deploy_to

    from chain.deploy import resolve_params

    conf = settings(ctx)
    params = _parse_params(param_pairs)
    resolve_params(profile, params)  # fail on a bad --param before touching keys or the chain
    key = os.environ.get(key_env)
    if key:
        try:
            account = Account.from_key(key.strip())
        except (ValueError, TypeError):
            raise Unauthorized(f"${key_env} does not hold a valid private key") from None
    else:
        account = identity(ctx).account
    log(f"deploying from {account.address} to {rpc_url} …")
    deployment = deploy_to(
        rpc_url, account, conf, profile=profile, params=params,
        voting_delay=voting_delay, voting_period=voting_period,
    )
    data = {**_deployment_view(deployment), "deployment_path": str(conf.deployment_path), "deployer": account.address}
    emit(ctx, data, f"deployed to {rpc_url} (chain {deployment.chain_id}) from {account.address}\n"
                    f"deployment: {conf.deployment_path}\n{_contracts_text(data['contracts'])}")


@group.command("fund")
@click.argument("address", required=False)
@click.option("--amount", default="10", show_default=True, help="ETH to send.")
@click.pass_context
def fund_account(ctx: click.Context, address: str | None, amount: str) -> None:
    """Send ETH from an anvil dev account to ADDRESS (default: this home's identity). Local chains only."""
    from decimal import Decimal, InvalidOperation

    from chain.node import fund

    conf = settings(ctx)
    if address is None:
        from collab.identity import Identity

        address = Identity.read_public(conf.home).address
    try:
        wei = int(Decimal(amount) * 10**18)
    except InvalidOperation:
        raise BadInput(f"--amount {amount!r} is not a number of ETH") from None
    data = fund(conf, address, wei)
    emit(ctx, data, f"sent {amount} ETH to {data['address']} (balance now {Decimal(data['balance_wei']) / 10**18} ETH)")
