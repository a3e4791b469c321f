"""``collab merge run CONFIG [--claim] | finalize CLAIM | methods``: merge models, claim merges, list methods.

``run`` reads the config, checks every input exists and is compatible, merges
(mergekit in-process for weight-space methods, collab for RegMean/Fisher from
statistics files) and prints where the merged model went and the sha256 of its
weights. Inputs named by asset id (``model: asset:7``) are checked on-chain
first (owned by this home's account, or Full-access / Partnership licensed to
it; exit 4 otherwise) and decrypted from this home's vault.

With ``--claim`` a linear, task-arithmetic or TIES merge runs as a
fraud-proof program: the dequantised VM output is the merged model (and goes
into the vault), the job is recorded in MergeRegistry and the claim posted;
``finalize`` ends the challenge window and shows the asset registered with
its parents and Shares.

``run`` and ``finalize`` go through this home's node when it runs (its keys,
vault and account); otherwise they run in this process. Either way the work is
:mod:`orchestrator.local_ops`, so the output and exit codes are the same.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from collab.commands._common import emit, identity, kv_table, log, to_jsonable
from collab.commands._route import home_op
from orchestrator.local_ops import MERGE_AUDIENCES as AUDIENCES

group = click.Group("merge", help="Merge models, claim merges on-chain, list merge methods.")

MERGE_TIMEOUT = 24 * 3600.0  # a node answers `merge run` when the merge is done; a large one takes hours


@group.command("run")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output directory (must be empty or absent; default ./merged-<config name>).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the randomised methods (DARE).")
@click.option("--ring-bits", type=click.IntRange(1, 62), default=None,
              help="RegMean/Fisher: add the statistics in Z_2^64 at this many fractional bits "
                   "(the arithmetic of the masked sum) instead of in float64.")
@click.option("--claim", "claim", is_flag=True, help="Run as a fraud-proof program and post the claim (linear, "
              "task_arithmetic, ties).")
@click.option("--audience", type=click.Choice(AUDIENCES), default="participants", show_default=True,
              help="--claim: who may fetch the inputs and challenge (participants: the merger and the input owners).")
@click.option("--verify-asset", type=click.IntRange(min=1), default=None,
              help="--claim with licensed-verifiers: the asset whose licensees verify (default: the first input asset).")
@click.option("--merger-share", "merger_share_bps", type=click.IntRange(0, 10_000), default=0, show_default=True,
              help="--claim: Share fraction (bps) the merger keeps; the rest goes to input owners by weight.")
@click.option("--royalty-bps", type=click.IntRange(0, 10_000), default=0, show_default=True,
              help="--claim: royalty the merged asset takes from its own future children.")
@click.pass_context
def run_cmd(ctx: click.Context, config: Path, out_dir: Path | None, seed: int, ring_bits: int | None, claim: bool,
            audience: str, verify_asset: int | None, merger_share_bps: int, royalty_bps: int) -> None:
    """Merge the models (or statistics) named in CONFIG (in this home's node when it runs)."""
    out = out_dir if out_dir is not None else Path.cwd() / f"merged-{config.stem}"
    data = home_op(ctx, "merge_run", {  # absolute paths: a running node has its own working directory
        "config": str(config.absolute()), "out_dir": str(out.absolute()), "seed": seed, "ring_bits": ring_bits,
        "claim": claim, "audience": audience, "verify_asset": verify_asset, "merger_share_bps": merger_share_bps,
        "royalty_bps": royalty_bps}, timeout=MERGE_TIMEOUT, note="merge: running in this home's node (progress in its log)")
    if "claim_id" in data:
        human = kv_table({k: v for k, v in data.items() if k not in ("assets", "contributors", "seconds")},
                         "merge claim posted")
        emit(ctx, data, human)
        return
    emit(ctx, data, f"merged {len(data['inputs'])} input(s) with {data['method']} into {data['out_dir']}\n"
                    f"{data['tensors']} tensors, {data['parameters']} parameters, sha256 {data['weights_sha256']}, "
                    f"{data['seconds']:.2f}s")


@group.command("finalize")
@click.argument("claim_id")
@click.pass_context
def finalize_cmd(ctx: click.Context, claim_id: str) -> None:
    """End a merge claim's challenge window: the merged asset is registered and its Shares minted."""
    from collab.commands.claims import parse_claim_id

    data = home_op(ctx, "merge_finalize", {"claim_id": "0x" + parse_claim_id(claim_id).hex()}, timeout=300)
    asset = data["asset"]
    parents = ", ".join(f"{p['id']} ({p['bps']} bps)" for p in asset["parents"]) or "none"
    emit(ctx, data, f"merge claim finalized: asset {asset['id']} registered (parents {parents}), "
                    f"Shares to {len(data['contributors'])} input owner(s) and the merger")


def _host_port(text: str) -> tuple[str, int]:
    from collab.errors import BadInput

    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise BadInput(f"{text!r} is not HOST:PORT")
    return host, int(port)


@group.command("stats-round")
@click.option("--layout", "layout", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Any participant's statistics file: its names, shapes and shared parameters (no values are used).")
@click.option("--member", "members", multiple=True, required=True, help="Participant address, in member order; repeat.")
@click.option("--threshold", type=click.IntRange(min=2), default=None, help="Survivors needed (default: a majority).")
@click.option("--frac-bits", type=click.IntRange(1, 62), default=24, show_default=True, help="Fixed-point bits of the sum.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Round file (JSON).")
@click.pass_context
def stats_round_cmd(ctx: click.Context, layout: Path, members: tuple[str, ...], threshold: int | None, frac_bits: int,
                    out_path: Path) -> None:
    """Write the public round of a networked RegMean/Fisher statistics sum."""
    from eth_utils import is_address, to_checksum_address

    from collab.errors import BadInput
    from collab.merge import Contribution
    from collab.merge.netstats import plan_round

    for m in members:
        if not is_address(m):
            raise BadInput(f"member {m!r} is not an address")
    rnd = plan_round(Contribution.load(layout), [to_checksum_address(m) for m in members], frac_bits=frac_bits,
                     threshold=threshold)
    rnd.save(out_path)
    emit(ctx, {"round": str(out_path), "members": len(members), "threshold": rnd.config.threshold,
               "length": rnd.config.length, "method": rnd.method}, f"wrote {out_path}: {len(members)} members, "
         f"threshold {rnd.config.threshold}, {rnd.config.length} values")


@group.command("stats-collect")
@click.argument("round_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--listen", default="127.0.0.1:0", show_default=True, help="HOST:PORT the participants connect to.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where the summed statistics go (merge them with `collab merge run`).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True, help="Seconds per message.")
@click.option("--join-timeout", type=click.FloatRange(min=0.1), default=300.0, show_default=True,
              help="Seconds for every participant to connect.")
@click.pass_context
def stats_collect_cmd(ctx: click.Context, round_file: Path, listen: str, out_path: Path, timeout: float,
                      join_timeout: float) -> None:
    """Merger side: run the SecAgg server; only the participants' total is learnt and written."""
    from collab.merge.netstats import StatsRound, StatsServer

    rnd = StatsRound.load(round_file)
    host, port = _host_port(listen)
    with StatsServer(rnd, host, port, timeout=timeout, join_timeout=join_timeout) as server:
        log(f"listening on {server.address[0]}:{server.address[1]} for {len(rnd.config.members)} participants")
        result = server.run()
        server.total().save(out_path)
    emit(ctx, {"out": str(out_path), "survivors": list(result.survivors), "dropped": server.dropped},
         f"summed the statistics of {len(result.survivors)} participant(s) into {out_path}")


@group.command("stats-join")
@click.argument("round_file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("statistics", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--connect", required=True, help="HOST:PORT of the merger's stats-collect.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True, help="Seconds per message.")
@click.pass_context
def stats_join_cmd(ctx: click.Context, round_file: Path, statistics: Path, connect: str, timeout: float) -> None:
    """Participant side: mask this home's statistics and take part in the round (signed with its account)."""
    from collab.merge import Contribution
    from collab.merge.netstats import StatsRound, participate

    rnd = StatsRound.load(round_file)
    participate(rnd, identity(ctx).account, Contribution.load(statistics), _host_port(connect), timeout=timeout)
    emit(ctx, {"joined": True}, "statistics sent masked; the merger learns only the total")


@group.command("methods")
@click.pass_context
def methods_cmd(ctx: click.Context) -> None:
    """List the merge methods and their parameters."""
    from collab.merge import all_methods

    methods = all_methods()
    table = Table(show_header=True, box=None, pad_edge=False)
    for col in ("method", "engine", "base", "inputs", "parameters"):
        table.add_column(col, overflow="fold")
    for m in methods:
        params = ", ".join(
            f"{p.name} ({p.scope}, {p.type}{', required' if p.required else f', default {p.default}'})"
            for p in m.parameters
        )
        table.add_row(m.name, m.engine, m.base, m.inputs, params)
    emit(ctx, {"methods": [to_jsonable(m) for m in methods]}, table)
