"""One way to run a benchmark suite in quick mode as a real `collab` process (the bench tests share it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

COLLAB = Path(sys.executable).parent / "collab"


def run_quick_bench(work: Path, suite: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``collab --json bench SUITE --results-dir WORK/results`` with COLLAB_BENCH_QUICK=1 and a home in ``work``."""
    command = [str(COLLAB)] if COLLAB.exists() else [sys.executable, "-m", "collab"]
    env = {**os.environ, "COLLAB_BENCH_QUICK": "1", "COLLAB_HOME": str(work / "home")}
    return subprocess.run([*command, "--json", "bench", suite, "--results-dir", str(work / "results")],
                          cwd=work, env=env, capture_output=True, text=True, timeout=timeout, check=False)
