"""``collab merge run CONFIG | methods``: merge models from a mergekit-style YAML, list the methods.

``run`` reads the config, checks every input exists and is compatible, merges
(mergekit in-process for weight-space methods, collab for RegMean/Fisher from
statistics files) and prints where the merged model went and the sha256 of its
weights. Inputs named by asset id need the license-checked resolver of the
claimed-merge path; until then, give local directories.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from collab.commands._common import emit, log, to_jsonable

group = click.Group("merge", help="Merge models and list merge methods.")


@group.command("run")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output directory (must be empty or absent; default ./merged-<config name>).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the randomised methods (DARE).")
@click.option("--ring-bits", type=click.IntRange(1, 62), default=None,
              help="RegMean/Fisher: add the statistics in Z_2^64 at this many fractional bits "
                   "(the arithmetic of the masked sum) instead of in float64.")
@click.pass_context
def run_cmd(ctx: click.Context, config: Path, out_dir: Path | None, seed: int, ring_bits: int | None) -> None:
    """Merge the models (or statistics) named in CONFIG."""
    from collab.merge import RingSum, load_config, merge

    spec = load_config(config)
    out = out_dir if out_dir is not None else Path.cwd() / f"merged-{config.stem}"
    if ring_bits is not None and not spec.is_data_aware:
        raise click.UsageError("--ring-bits applies to regmean and fisher merges only")
    collector = RingSum(frac_bits=ring_bits) if ring_bits is not None else None
    log(f"merging {len(spec.models)} input(s) with {spec.method} into {out}")
    result = merge(spec, out, seed=seed, collector=collector)
    data: dict[str, Any] = {
        "method": result.method,
        "out_dir": str(result.out_dir.resolve()),
        "inputs": list(result.inputs),
        "tensors": result.tensors,
        "parameters": result.parameters,
        "weights_sha256": result.weights_sha256,
        "seconds": round(result.seconds, 3),
        "details": to_jsonable(result.details),
    }
    human = (f"merged {len(result.inputs)} input(s) with {result.method} into {data['out_dir']}\n"
             f"{result.tensors} tensors, {result.parameters} parameters, sha256 {result.weights_sha256}, "
             f"{result.seconds:.2f}s")
    emit(ctx, data, human)


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
