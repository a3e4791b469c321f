"""``collab orchestrator start``: run the coordinator for this home's identity."""

from __future__ import annotations

import json
import logging
import signal
import sys
from typing import Any

import click

from collab.commands._common import chain_session, identity, settings
from collab.errors import Unauthorized, UsageError

group = click.Group("orchestrator", help="Run the job coordinator (ZMQ ROUTER + CurveZMQ).")


@group.command("start")
@click.option("--bind", default="tcp://127.0.0.1:5555", show_default=True, help="ZMQ endpoint to listen on (port 0 = any).")
@click.option("--heartbeat-timeout", default=6.0, show_default=True, help="Seconds without a heartbeat before a node is away.")
@click.option("--superlink-host", default=None, metavar="HOST",
              help="Address (IP or DNS name) nodes reach this orchestrator's Flower SuperLinks at; "
                   "named in their TLS certificates. Default: the --bind host.")
@click.pass_context
def start(ctx: click.Context, bind: str, heartbeat_timeout: float, superlink_host: str | None) -> None:
    """Serve until SIGINT/SIGTERM; prints one JSON line (endpoint, CurveZMQ key, address) when ready."""
    from chain.clients.claim_manager import ClaimManagerClient
    from chain.clients.identity_registry import IdentityRegistryClient
    from orchestrator.claims import ClaimJob
    from orchestrator.jobs import JobStore
    from orchestrator.server import IdentityCache, OrchestratorServer

    conf = settings(ctx)
    flower_host = superlink_host or _bind_host(bind)
    me = identity(ctx)
    session = chain_session(ctx)
    registry = IdentityRegistryClient.from_deployment(session.deployment, session.w3, me.account)
    mine = registry.identity_of(me.address)
    # INVARIANT: nodes pin the CurveZMQ key registered in the orchestrator's Sahara ID, so it must match ours.
    if mine is None or not mine.active:
        raise Unauthorized(f"{me.address} has no active Sahara ID", hint="register with `collab id register`")
    if mine.keys.curve_key != me.curve_public:
        raise Unauthorized("this home's CurveZMQ key differs from the one registered in its Sahara ID")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from orchestrator.inference import InferenceJob
    from orchestrator.merges import MergeJob
    from orchestrator.rounds import RoundJob
    from orchestrator.workers import ClaimWorkers, NodeChain

    handlers: dict[str, Any] = {
        ClaimJob.kind: ClaimJob(ClaimManagerClient.from_deployment(session.deployment, session.w3, me.account)),
        RoundJob.kind: RoundJob(conf.home, registry=_round_registry(session, me.account), superlink_host=flower_host), MergeJob.kind: _merge_job(conf, session, me), InferenceJob.kind: InferenceJob(),
    }
    server = OrchestratorServer(
        store=JobStore(conf.jobs_db), address=me.address, chain_id=session.deployment.chain_id,
        curve_secret=me.curve_secret_z85, curve_public=me.curve_public_z85, identities=IdentityCache(registry),
        handlers=handlers, bind=bind, heartbeat_timeout=heartbeat_timeout,
    )
    # The claimer of its rounds and merges: serves their data and defends them in the fraud-proof game.
    # INVARIANT: one lock for every write of this account (job runner posting claims, watcher moves).
    claims = ClaimWorkers(NodeChain(session.w3, session.deployment, me.account, conf), lambda: [], server.chain_lock,
                          host=bind.removeprefix("tcp://").rsplit(":", 1)[0].replace("*", "0.0.0.0")).start()
    server.blob_url = claims.blob_url
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    click.echo(json.dumps({"endpoint": server.endpoint, "curve_key": me.curve_public_z85.decode(),
                           "address": me.address, "identity_id": mine.id, "chain_id": session.deployment.chain_id,
                           "blob_url": claims.blob_url, "job_kinds": sorted(handlers)}))
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()
    finally:
        claims.stop()
        handlers[RoundJob.kind].close()


def _bind_host(bind: str) -> str:
    """The host of ``--bind``: the default address of the SuperLinks (a wildcard names no address to reach)."""
    host = bind.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
    if host in ("*", "0.0.0.0", "::", ""):
        raise UsageError(f"--bind {bind} listens on every interface: pass --superlink-host, the address nodes "
                         "reach this orchestrator's Flower SuperLinks at")
    return host


def _merge_job(conf: Any, session: Any, me: Any) -> Any:
    """The merge job kind, settling through MergeRegistry (registry, vault, asset reads as this orchestrator)."""
    from orchestrator.merges import MergeJob

    if "MergeRegistry" not in session.deployment.contracts:
        return MergeJob(conf.home)
    from chain.clients.asset_registry import AssetRegistryClient
    from chain.clients.merge_registry import MergeRegistryClient
    from collab.vault import Vault

    return MergeJob(conf.home, registry=MergeRegistryClient.from_deployment(session.deployment, session.w3, me.account),
                    vault=Vault(conf.vault_dir, owner=me.x25519_public), account=me.account,
                    assets=AssetRegistryClient.from_deployment(session.deployment, session.w3))


def _round_registry(session: Any, account: Any) -> Any:
    """The RoundRegistry client a round job drives as aggregator (None on a chain without one)."""
    if "RoundRegistry" not in session.deployment.contracts:
        return None
    from chain.clients.round_registry import RoundRegistryClient

    return RoundRegistryClient.from_deployment(session.deployment, session.w3, account)
