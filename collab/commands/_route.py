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
from collab.errors import UsageError

NO_NODE = "no node is running for this home: start one with `collab node start`"


def via_node(ctx: click.Context, op: str, fields: dict[str, Any], *, timeout: float = 600.0,
             local: Callable[[], Any] | None = None, missing: str = NO_NODE, note: str | None = None) -> Any:
    """``op`` answered by the home's node if one runs, else ``local()`` (UsageError ``missing`` without one).

    ``timeout`` bounds the wait for the node's answer: the node does the whole job before replying.
    ``note`` is logged when the request goes to the node.
    """
    from orchestrator.client import node_running

    node = node_running(settings(ctx).node_socket, timeout=timeout)
    if node is not None:
        if note:
            log(note)
        return node.request(op, **fields)
    if local is None:
        raise UsageError(missing)
    return local()


def home_op(ctx: click.Context, op: str, fields: dict[str, Any], *, timeout: float = 600.0) -> dict[str, Any]:
    """A :mod:`orchestrator.local_ops` operation: in the node when it runs, else the same function here."""
    return via_node(ctx, op, fields, timeout=timeout, local=lambda: _run_here(ctx, op, fields))  # type: ignore[no-any-return]


def _run_here(ctx: click.Context, op: str, fields: dict[str, Any]) -> dict[str, Any]:
    from orchestrator import local_ops

    conf = settings(ctx)
    actor = local_ops.Actor(home=conf.home, vault_dir=conf.vault_dir,
                            session=lambda need_account=True: chain_session(ctx, need_account=need_account),
                            identity=lambda: identity(ctx), log=log)
    return local_ops.run(op, actor, fields)
