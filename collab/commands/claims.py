"""``collab claims post|list|show``: post a fraud-provable claim over a job, and inspect claims.

``post`` runs the program on the inputs, commits the trace, stores
everything in the home's fraud-proof store (so ``collab watch`` or the
node's watcher can defend the claim and serve its data later, even after a
restart) and posts the claim with the claimer bond. When the home's node runs,
all three go through it (:mod:`collab.commands._route`); the work itself is
:mod:`orchestrator.local_ops`. File formats: see :mod:`collab.fraudproof.store`.
"""

from __future__ import annotations

from pathlib import Path

import click

from collab.commands._common import emit, kv_table
from collab.commands._route import home_op
from orchestrator.local_ops import AUDIENCES, parse_claim_id

group = click.Group("claims", help="Post, list and show on-chain claims.")

__all__ = ["group", "parse_claim_id"]


@group.command("post")
@click.argument("program_file", type=click.Path(path_type=Path))
@click.option("--inputs", "inputs_dir", type=click.Path(path_type=Path), required=True, help="Directory of input .safetensors files.")
@click.option("--audience", type=click.Choice(AUDIENCES), default="public", show_default=True, help="Who may fetch data and challenge.")
@click.option("--participant", "participants", multiple=True, help="Participant address (audience participants); repeatable.")
@click.option("--job-id", default=None, help="32-byte hex job id (default: keccak of programRoot and inputRoot).")
@click.option("--asset-id", type=int, default=0, show_default=True, help="Asset the claim is about (licensed audience).")
@click.option("--log2k", type=click.IntRange(1, 4), default=1, show_default=True, help="Dissection arity exponent.")
@click.option("--da-url", default=None, metavar="URL",
              help="This home's blob server (e.g. `collab watch --serve`): published on chain as the claim's daPointer.")
@click.pass_context
def post(
    ctx: click.Context, program_file: Path, inputs_dir: Path, audience: str, participants: tuple[str, ...],
    job_id: str | None, asset_id: int, log2k: int, da_url: str | None,
) -> None:
    """Run PROGRAM_FILE on the inputs and post the claim (by this home's node when it runs)."""
    data = home_op(ctx, "claims_post", {
        "program_file": str(program_file.absolute()), "inputs_dir": str(inputs_dir.absolute()), "audience": audience,
        "participants": list(participants), "job_id": job_id, "asset_id": asset_id, "log2k": log2k, "da_url": da_url,
    }, note="claims post: running in this home's node (its account posts; progress in its log)")
    emit(ctx, data, kv_table(data, "claim posted"))


@group.command("list")
@click.option("--mine", is_flag=True, help="Only this home's claims.")
@click.pass_context
def list_claims(ctx: click.Context, mine: bool) -> None:
    """Every claim posted on this deployment."""
    data = home_op(ctx, "claims_list", {"mine": mine}, timeout=120)
    rows = data["claims"]
    human = "\n".join(f"{r['claim_id']}  {r['status']:<9} {r['audience']:<18} {r['steps']:>6} steps  {r['claimer']}" for r in rows)
    emit(ctx, data, human or "no claims")


@group.command("show")
@click.argument("claim_id")
@click.pass_context
def show(ctx: click.Context, claim_id: str) -> None:
    """One claim: status, audience, roots."""
    data = home_op(ctx, "claims_show", {"claim_id": "0x" + parse_claim_id(claim_id).hex()}, timeout=120)
    emit(ctx, data, kv_table(data, "claim"))
