"""``collab join ROUND --data PATH``: the same as ``collab round join`` (the first thing a participant runs)."""

from __future__ import annotations

from pathlib import Path

import click

from collab.commands.round import join_round


@click.command("join", help="Join a training round (same as `round join`).")
@click.argument("round_id", type=click.IntRange(min=1), metavar="ROUND")
@click.option("--data", "data_path", type=click.Path(path_type=Path), required=True,
              help="Your labelled data: a folder <class>/<file>, a CSV (text,label) or a JSONL file.")
@click.option("--dataset-asset", type=click.IntRange(min=1), default=None,
              help="Your dataset asset committing to the data (default: found by its commitment, or registered).")
@click.pass_context
def group(ctx: click.Context, round_id: int, data_path: Path, dataset_asset: int | None) -> None:
    """Accept an invitation: declare your sample count and dataset asset on-chain."""
    join_round(ctx, round_id, data_path, dataset_asset)
