"""``collab jobs list|show|cancel``: the orchestrator's jobs, through this home's node."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from rich.table import Table

from collab.commands._common import emit, settings

if TYPE_CHECKING:
    from orchestrator.client import NodeSocketClient

group = click.Group("jobs", help="List, inspect and cancel orchestrator jobs (via the local node).")


def _node(ctx: click.Context) -> NodeSocketClient:
    from orchestrator.client import NodeSocketClient

    return NodeSocketClient(settings(ctx).node_socket)


@group.command("list")
@click.pass_context
def list_jobs(ctx: click.Context) -> None:
    """Every job the orchestrator knows, oldest first."""
    jobs = _node(ctx).request("jobs")
    table = Table("id", "kind", "state", "error")
    for j in jobs:
        table.add_row(j["id"][:18], j["kind"], j["state"], j.get("error") or "")
    emit(ctx, {"jobs": jobs}, table)


@group.command("show")
@click.argument("job_id")
@click.pass_context
def show(ctx: click.Context, job_id: str) -> None:
    """One job, with its recorded data (claim id, tx hashes)."""
    emit(ctx, _node(ctx).request("job", id=job_id))


@group.command("cancel")
@click.argument("job_id")
@click.pass_context
def cancel(ctx: click.Context, job_id: str) -> None:
    """Cancel a job you submitted (refused once it is terminal)."""
    job = _node(ctx).request("cancel", id=job_id)
    emit(ctx, job, f"job {job['id']} cancelled")
