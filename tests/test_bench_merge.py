"""``collab bench merge`` in quick mode through the console script: structure and machine-independent properties.

Quick mode (``COLLAB_BENCH_QUICK=1``, clearly small: 150 BBC News articles,
24 tokens, 3 participants) still trains real participants on a Dirichlet
split, merges real MiniLM classifiers through mergekit and collab, times
``mergekit-yaml`` and runs the claimed path on a tiny BERT. The tests check
what holds on any machine: the recovery figure follows from the accuracies,
the pass flags follow from the figures, merges leave the frozen encoder
unchanged, the claimed artifacts re-commit to their claims, and the files exist.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from bench_helpers import run_quick_bench

METHODS = {"linear", "task_arithmetic", "ties", "dare_ties", "dare_linear", "regmean", "fisher"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("bench-merge")
    proc = run_quick_bench(work, "merge", timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results: dict[str, Any] = json.loads(proc.stdout)
    assert json.loads((work / "results" / "merge.json").read_text())["quality"] == results["quality"]
    assert (work / "results" / "merge.png").stat().st_size > 10_000
    return results


def test_quality_figures_are_consistent(bench: dict[str, Any]) -> None:
    assert bench["quick"] is True and "small/fast config" in bench["config"]["trained"]
    q = bench["quality"]["dirichlet_0.5"]
    assert set(q["merges"]) == METHODS and len(q["individual"]) == bench["config"]["participants"]
    accs = [q["base"], q["ensemble"], *q["individual"], *(m["accuracy"] for m in q["merges"].values())]
    assert all(0.0 <= a <= 1.0 for a in accs)
    best = q["merges"][q["best_merge"]]["accuracy"]
    assert best == max(m["accuracy"] for m in q["merges"].values())
    assert q["recovery_of_ensemble_gain"] == pytest.approx((best - q["base"]) / (q["ensemble"] - q["base"]), abs=1e-3)
    assert q["ensemble"] > q["base"]  # real training happened
    for m in q["merges"].values():  # the frozen encoder is the base's in every merge
        assert m["encoder_max_abs_diff"] < 1e-5


def test_timing_claimed_memory_and_targets(bench: dict[str, Any]) -> None:
    for row in bench["timing"]["methods"].values():
        assert row["collab_cli_s"] > 0 and row["mergekit_cli_s"] > 0
        assert row["overhead"] == pytest.approx(row["collab_cli_s"] / row["mergekit_cli_s"] - 1, abs=2e-3)
    for row in bench["claimed"]["methods"].values():
        assert row["artifact_recommits"] is True and row["steps"] > 0
        assert row["ratio"] == pytest.approx(row["claimed_s"] / row["unclaimed_s"], rel=0.02, abs=0.02)
        assert row["ratio_hashed"] == pytest.approx(row["claimed_hashed_s"] / row["unclaimed_s"], rel=0.02, abs=0.02)
        assert row["inputs_known"] > 0  # the repeats reuse the roots run 0 computed
    mem = bench["memory"]
    assert mem["model_mib"] > 50 and set(mem["engines"]) == {"collab", "mergekit"}
    recovery = bench["targets"]["best merge recovers ≥ 90% of the ensemble's gain (Dirichlet 0.5)"]
    assert recovery["pass"] == (recovery["measured"] >= 0.9)
    for name, target in bench["targets"].items():
        if "recovers" not in name:
            assert target["pass"] == (target["measured"] <= target["target"])
