"""``collab bench SUITE|all``: run benchmark suites and print their tables (``--json``: the figures).

Suites live in ``benchmarks/<suite>.py`` (see :mod:`benchmarks`); each run
writes ``benchmarks/results/<suite>.json`` and ``<suite>.png`` unless
``--results-dir`` points elsewhere. Progress goes to stderr, so stdout holds
only the tables or the JSON.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from collab.commands._common import emit, is_json, log
from collab.errors import InternalError

_results_option = click.option(
    "--results-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Where to write <suite>.json and <suite>.png (default benchmarks/results).",
)


def benchmarks_package() -> ModuleType:
    """The repository's ``benchmarks`` package, imported from its own directory.

    The crypten and opacus wheels each install an unrelated top-level
    ``benchmarks`` package into site-packages, which comes before the
    editable install on ``sys.path`` and would shadow ours; so the package is
    loaded by path (next to ``chain/``) and registered under its name.
    """
    import chain

    root = Path(chain.__file__).resolve().parent.parent / "benchmarks"
    loaded = sys.modules.get("benchmarks")
    if loaded is not None and Path(getattr(loaded, "__file__", None) or "/").resolve().parent == root:
        return loaded
    for key in [k for k in sys.modules if k == "benchmarks" or k.startswith("benchmarks.")]:
        del sys.modules[key]
    spec = importlib.util.spec_from_file_location("benchmarks", root / "__init__.py", submodule_search_locations=[str(root)])
    if spec is None or spec.loader is None:
        raise InternalError(f"cannot load the benchmark suites from {root}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmarks"] = module
    spec.loader.exec_module(module)
    return module


def _run_suite(ctx: click.Context, name: str, results_dir: Path | None) -> dict[str, Any]:
    suite = benchmarks_package().load_suite(name)
    started = time.monotonic()
    log(f"bench {name}: starting")
    results: dict[str, Any] = suite.run(results_dir, log=lambda message: log(f"bench {name}: {message}"))
    log(f"bench {name}: done in {time.monotonic() - started:.1f}s")
    return results


def _show(ctx: click.Context, name: str, results: dict[str, Any]) -> None:
    if is_json(ctx):
        return
    render = getattr(benchmarks_package().load_suite(name), "render", None)
    emit(ctx, results, render(results) if callable(render) else None)


class BenchGroup(click.Group):
    """``bench`` whose subcommands are the suite modules found under ``benchmarks/`` plus ``all``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*benchmarks_package().suite_names(), "all"]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "all":
            return _all
        if cmd_name not in benchmarks_package().suite_names():
            return None
        return _suite_command(cmd_name)


def _suite_command(name: str) -> click.Command:
    @click.command(name, help=f"Run the {name} benchmark suite.")
    @_results_option
    @click.pass_context
    def command(ctx: click.Context, results_dir: Path | None) -> None:
        results = _run_suite(ctx, name, results_dir)
        if is_json(ctx):
            emit(ctx, results)
        else:
            _show(ctx, name, results)

    return command


@click.command("all", help="Run every benchmark suite under benchmarks/.")
@_results_option
@click.pass_context
def _all(ctx: click.Context, results_dir: Path | None) -> None:
    collected: dict[str, Any] = {}
    for name in benchmarks_package().suite_names():
        collected[name] = _run_suite(ctx, name, results_dir)
        _show(ctx, name, collected[name])
    if is_json(ctx):
        emit(ctx, {"suites": collected})


group = BenchGroup("bench", help="Run benchmark suites (SUITE or all); results in benchmarks/results/.")
