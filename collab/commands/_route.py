"""Routing of user commands through this home's node (``node.sock``), in one place.

The architecture makes ``join``, ``infer``, ``merge``, ``claims`` and
``challenge`` thin clients of the home's node: the node holds the unlocked
keys, the watcher's game state and the lock over the account's nonce. When a
node answers on the home's socket the command sends it the request;
otherwise it does the work in its own process (``local``) or, where only a
node can do it, stops with a one-line usage error. Errors come back from the
node as the same :class:`~collab.errors.CollabError` class, so exit codes do
not depend on the path taken.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from collab.commands._common import chain_session, identity, log, settings
from collab.config import Settings
from collab.errors import UsageError

NO_NODE = "no node is running for this home: start one with `collab node start`"


def via_node(ctx: click.Context, op: str, fields: dict[str, Any], *, timeout: float = 600.0,
             local: Callable[[], Any] | None = None, missing: str = NO_NODE, note: str | None = None) -> Any:
    """``op`` answered by the home's node if one runs, else ``local()`` (UsageError ``missing`` without one).

    A node serves only the chain it was started on: with ``--deployment`` or
    ``COLLAB_RPC_URL`` pointing elsewhere, or a node started ``--no-workers``
    (no chain), the command does not silently use the node's chain; it runs
    ``local`` instead, or stops with the reason. ``timeout`` bounds the wait
    for the node's answer (it replies when the work is done); ``note`` is
    logged when the request goes to the node.
    """
    from orchestrator.client import NodeSocketClient, node_status

    conf = settings(ctx)
    status = node_status(conf.node_socket)
    if status is not None:
        unfit = _unfit(status, conf)
        if unfit is None:
            if note:
                log(note)
            return NodeSocketClient(conf.node_socket, timeout=timeout).request(op, **fields)
        if local is None:
            raise UsageError(f"this home's node cannot take `{op}`: {unfit}",
                             hint="restart `collab node start` for this deployment")
        log(f"not using this home's node: {unfit}; running here on {conf.deployment_path}")
    if local is None:
        raise UsageError(missing)
    return local()


def _unfit(status: dict[str, Any], conf: Settings) -> str | None:
    """Why the running node cannot act for this invocation's chain (None if it can)."""
    if status.get("deployment") is None:
        return "it runs without a chain (--no-workers)"
    if (status["deployment"], status.get("rpc_url")) != (str(conf.deployment_path), conf.rpc_url):
        return f"it serves {status['deployment']} (RPC {status.get('rpc_url') or 'from that file'})"
    return None


def home_op(ctx: click.Context, op: str, fields: dict[str, Any], *, timeout: float = 600.0,
            note: str | None = None) -> dict[str, Any]:
    """A :mod:`orchestrator.local_ops` operation: in the node when it runs, else the same function here."""
    return via_node(ctx, op, fields, timeout=timeout, local=lambda: _run_here(ctx, op, fields),  # type: ignore[no-any-return]
                    note=note)


def _run_here(ctx: click.Context, op: str, fields: dict[str, Any]) -> dict[str, Any]:
    from orchestrator import local_ops

    conf = settings(ctx)
    actor = local_ops.Actor(home=conf.home, vault_dir=conf.vault_dir,
                            session=lambda need_account=True: chain_session(ctx, need_account=need_account),
                            identity=lambda: identity(ctx), log=log)
    return local_ops.run(op, actor, fields)
