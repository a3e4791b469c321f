"""``collab node start|status``: this home's participant node and its local API."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import click
import zmq
import zmq.utils.z85

from collab.commands._common import chain_session, emit, identity, settings
from collab.errors import BadInput, NotFound

group = click.Group("node", help="Run or query this home's participant node.")


@group.command("start")
@click.option("--orchestrator", "endpoint", default="tcp://127.0.0.1:5555", show_default=True, help="Orchestrator ZMQ endpoint.")
@click.option("--orchestrator-key", default=None, help="Orchestrator CurveZMQ public key (Z85).")
@click.option("--orchestrator-id", type=int, default=None, help="Orchestrator Sahara ID (its key is read on-chain).")
@click.option("--source", default=None, help="Local address to connect from (e.g. 127.0.0.3), for multi-host setups.")
@click.option("--heartbeat", default=1.0, show_default=True, help="Seconds between heartbeats.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for any orchestrator reply.")
@click.option("--data", type=click.Path(dir_okay=True, path_type=Path), default=None,
              help="This participant's training data (folder, CSV or JSONL) for training rounds.")
@click.option("--adapter", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Adapter (safetensors) this node contributes to merges (default <home>/adapter.safetensors).")
@click.option("--adapter-asset", type=click.IntRange(min=1), default=None,
              help="Asset id of that adapter, for merges that name none for this node (Shares go to its owner).")
@click.option("--no-workers", is_flag=True, help="Only the local API and heartbeats (no chain, watcher, blob server).")
@click.option("--no-release", is_flag=True,
              help="Deliver Full-access keys but leave releasing their escrow to someone else (anyone may, after the dispute window).")
@click.pass_context
def start(ctx: click.Context, endpoint: str, orchestrator_key: str | None, orchestrator_id: int | None,
          source: str | None, heartbeat: float, timeout: float, data: Path | None, adapter: Path | None,
          no_workers: bool, no_release: bool = False, adapter_asset: int | None = None) -> None:
    """Serve node.sock until SIGINT/SIGTERM; prints one JSON ready line."""
    from orchestrator.client import OrchestratorClient
    from orchestrator.node import Node

    conf = settings(ctx)
    me = identity(ctx)
    if (orchestrator_key is None) == (orchestrator_id is None):
        raise BadInput("give exactly one of --orchestrator-key or --orchestrator-id")
    expected_address = None
    if orchestrator_id is not None:
        from chain.clients.identity_registry import IdentityRegistryClient

        session = chain_session(ctx)
        registry = IdentityRegistryClient.from_deployment(session.deployment, session.w3, me.account)
        try:
            orch = registry.identity(orchestrator_id)
        except Exception as exc:
            raise NotFound(f"no Sahara ID {orchestrator_id}: {exc}") from exc
        key = zmq.utils.z85.encode(orch.keys.curve_key)
        expected_address = orch.account
    else:
        key = orchestrator_key.encode()  # type: ignore[union-attr]
        if len(key) != 40:
            raise BadInput("--orchestrator-key must be a 40-character Z85 CurveZMQ public key")
    host_port = endpoint.removeprefix("tcp://")
    connect = f"tcp://{source}:0;{host_port}" if source else endpoint
    client = OrchestratorClient(connect, key, me.account, chain_id=0, orchestrator="0x" + "00" * 20,
                                curve_keypair=(me.curve_public_z85, me.curve_secret_z85), timeout=timeout)
    hello = client.hello()
    # INVARIANT: with --orchestrator-id, the key-pinned link must lead to that identity's account.
    if expected_address is not None and hello["address"].lower() != expected_address.lower():
        raise BadInput(f"orchestrator at {endpoint} is {hello['address']}, not Sahara ID {orchestrator_id}")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from collab.vault import Vault

    vault = Vault(conf.vault_dir, owner=me.x25519_public)
    chain = None
    if not no_workers:
        from orchestrator.workers import NodeChain

        if data is not None and not data.exists():
            raise BadInput(f"no training data at {data}")
        session = chain_session(ctx)
        chain = NodeChain(session.w3, session.deployment, session.account, conf, identity=me)
    node = Node(client, conf.node_socket, endpoint=source or "", heartbeat_interval=heartbeat, vault=vault,
                chain=chain, data=data.resolve() if data else None, adapter=adapter,
                adapter_asset=adapter_asset, release_escrow=not no_release)
    signal.signal(signal.SIGTERM, lambda *_: node.stop())
    node.bind()
    click.echo(json.dumps({"socket": str(conf.node_socket), "address": me.address, "orchestrator": hello["address"]}))
    sys.stdout.flush()
    try:
        node.serve_forever()
    except KeyboardInterrupt:
        node.stop()


@group.command("status")
@click.pass_context
def status(ctx: click.Context) -> None:
    """Ask the running node for its state (exit 5 if none is running)."""
    from orchestrator.client import NodeSocketClient

    data = NodeSocketClient(settings(ctx).node_socket, timeout=10).request("status")
    emit(ctx, data)
