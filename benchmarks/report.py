"""Shared output of the benchmark suites: machine facts, the JSON file, the PNG, the table.

Every suite writes ``benchmarks/results/<suite>.json`` (figures plus the
machine and versions they were measured on, so a number is never quoted
without its context) and ``<suite>.png``, and prints a rich table. Keeping
that here means every suite's results look and read the same.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from collab.errors import BadInput

RESULTS_DIR: Path = Path(__file__).resolve().parent / "results"


def results_dir(override: Path | str | None = None) -> Path:
    """The directory results go to (created): ``override`` or ``benchmarks/results``."""
    path = Path(override).expanduser().resolve() if override else RESULTS_DIR
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot create the results directory {path}: {exc.strerror}") from None
    return path


def utc_now() -> str:
    """ISO-8601 UTC timestamp (seconds)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def machine_facts() -> dict[str, Any]:
    """Where the figures were measured: CPU, cores, memory, OS, Python."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "python": platform.python_version(),
    }


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed versions of Python distributions (None when absent)."""
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def command_version(cmd: Sequence[str]) -> str | None:
    """First line a ``--version``-style command prints (None when it cannot run)."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else None


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` atomically as indented JSON (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.chmod(tmp, 0o644)  # results are published, not secret (mkstemp creates 0600)
    os.replace(tmp, path)
    return path


def publish(
    out_dir: Path, suite: str, results: dict[str, Any], draw: Callable[[Path], Any], say: Callable[[str], Any]
) -> dict[str, Any]:
    """Write ``<suite>.png`` (through ``draw``) and ``<suite>.json`` under ``out_dir``; return ``results``.

    The JSON is written last and names both files, so a JSON on disk always
    has its plot beside it.
    """
    json_path, png_path = out_dir / f"{suite}.json", out_dir / f"{suite}.png"
    results["files"] = {"json": str(json_path), "png": str(png_path)}
    draw(png_path)
    write_json(json_path, results)
    say(f"wrote {json_path} and {png_path}")
    return results


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display on CI machines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Save a matplotlib figure as PNG and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric_from: int = 1) -> Table:
    """A rich table; columns from ``numeric_from`` on are right-aligned numbers with separators."""
    out = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        out.add_column(name, justify="right" if i >= numeric_from else "left")
    for row in rows:
        out.add_row(*(_cell(v) for v in row))
    return out


def print_renderable(renderable: Any) -> None:
    """Print a table on stdout (wide enough when stdout is a file or pipe)."""
    import sys

    Console(highlight=False, width=None if sys.stdout.isatty() else 140).print(renderable)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}"
    return str(value)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None
