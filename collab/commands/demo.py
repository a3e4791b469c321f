"""``collab demo [--quick] [--keep] [--report PATH]``: the end-to-end story on a chain of its own.

Thin: :mod:`orchestrator.demo` does the work. Progress goes to stderr; the
final tables go to stdout, or with ``--json`` the report object as the last
line of stdout. The exit code is 0 only when every phase verified on-chain.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from collab.commands._common import emit, is_json, stderr_console
from collab.errors import EXIT_INTERNAL


@click.command("demo")
@click.option("--quick", is_flag=True, help="The same story with fewer calls (CI).")
@click.option("--keep", is_flag=True, help="Leave the chain running and keep the temporary homes.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the JSON report (default <tmp>/collab-demo-*/demo-report.json).")
@click.pass_context
def group(ctx: click.Context, quick: bool, keep: bool, report_path: Path | None) -> None:
    """Run the end-to-end demo: chain, identities, asset, licenses, metering, revenue."""
    from orchestrator.demo import DemoOptions, render, run_demo

    console = stderr_console()
    report = run_demo(DemoOptions(quick=quick, keep=keep, report_path=report_path), console)
    meta = report["demo"]
    if is_json(ctx):
        click.echo(json.dumps(report))
    else:
        emit(ctx, report, render(report))
        if keep:
            console.print(f"chain kept at {meta['rpc_url']}; stop it with `{meta['stop_with']}`", markup=False)
    if not meta["ok"]:
        reason = " ".join(str(meta["error"] or "a phase did not verify on-chain").split())
        console.print(f"error: demo failed: {reason}", markup=False, highlight=False, soft_wrap=True)
        ctx.exit(int(meta["exit_code"]) or EXIT_INTERNAL)
