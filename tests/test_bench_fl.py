"""``collab bench fl`` in quick mode end to end: real Flower rounds (tiny model), in-process DP experiments.

The suite runs once through the console script with ``COLLAB_BENCH_QUICK=1``
into a temporary results directory; the tests check structure and the
properties that hold whatever the machine's speed (no timed assertions).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bench_helpers import run_quick_bench

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # two real Flower runs on a shared machine


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    work = tmp_path_factory.mktemp("bench-fl")
    proc = run_quick_bench(work, "fl", timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((work / "results" / "fl.json").read_text()), work / "results"


def test_quick_bench_writes_json_and_png(bench: tuple[dict[str, Any], Path]) -> None:
    results, folder = bench
    assert results["suite"] == "fl" and results["quick"] is True
    assert (folder / "fl.png").stat().st_size > 0
    runs = results["flower"]["runs"]
    assert {(r["participants"], r["secure"]) for r in runs} == {(3, False), (3, True)}
    assert all(r["round_s"] > 0 for r in runs)
    assert next(r for r in runs if r["secure"])["secagg_bytes"] > 0


def test_quick_bench_figures_are_consistent(bench: tuple[dict[str, Any], Path]) -> None:
    results, _ = bench
    b = results["bytes"]["per_participant_bytes"]
    assert b["lora_plain"] < b["lora_secagg"] < b["full_plain"]  # LoRA travels, full fine-tuning would not
    assert b["ffa_lora_plain"] < b["lora_plain"]  # with A frozen only B and the head travel
    assert results["dp_step"]["ratio"] > 0
    for row in results["accuracy"].values():
        assert {"1", "8", "inf", "centralized", "local_only"} <= set(row)
        for k in ("1", "8", "inf", "centralized", "local_only"):  # scored on the tuning and the held-out articles
            assert 0.0 <= row[k]["accuracy"] <= 1.0 and 0.0 <= row[k]["held_out_accuracy"] <= 1.0
        eight = row["8"]  # the target's setting: two trainings (quick), each with its own noise and batch order
        assert eight["trainings"] == 2 and "trainings" not in row["1"] and "trainings" not in row["inf"]
        for measure in ("accuracy", "held_out_accuracy"):
            per = eight[f"{measure}_per_training"]
            assert len(per) == 2 and eight[measure] == pytest.approx(sum(per) / 2)
        strict, loose, none = row["1"]["sigma"], row["8"]["sigma"], row["inf"]["sigma"]  # one σ per participant
        assert len(strict) == len(loose) == len(none) == 3
        assert all(a > b > c == 0.0 for a, b, c in zip(strict, loose, none, strict=True))  # smaller ε, more noise
    mia = results["membership_inference"]
    reference = mia["reference"]  # trained as the target's setting is (ε = 8), on the same data, other canaries
    assert reference["epsilon"] == "8" and reference["sigma"] == mia["8"]["sigma"]
    from benchmarks.fl import _auc_se  # the mean's error: each training's, combined (about 1/√2 of one)

    n_in, n_out = mia["canaries_in"], mia["canaries_out"]
    for k in ("inf", "8", "1"):
        for attack in (mia[k], mia[k]["loss_attack"]):  # calibrated by the reference model, and by loss alone
            assert -50.0 <= attack["advantage_points"] <= 50.0
    eight = mia["8"]  # the target's setting: two trainings (quick), each with its own canaries and noise, averaged
    assert eight["trainings"] == 2 and mia["inf"]["trainings"] == mia["1"]["trainings"] == 1
    for attack in (eight, eight["loss_attack"]):
        per = attack["advantage_points_per_training"]
        assert len(per) == 2 and attack["advantage_points"] == pytest.approx(sum(per) / 2)
        errors = [_auc_se(0.5 + p / 100, n_in, n_out) for p in per]
        assert attack["advantage_se_points"] == pytest.approx(100 * (errors[0] ** 2 + errors[1] ** 2) ** 0.5 / 2)
    assert eight["advantage_points_per_training"] != eight["loss_attack"]["advantage_points_per_training"]


def test_trained_and_held_out_canaries_share_one_label_histogram() -> None:
    """Otherwise the attack could score the canary group's label prior, which per-example DP does not bound."""
    from collections import Counter

    from benchmarks.fl import _canaries

    classes = ("business", "entertainment", "politics", "sport", "tech")
    vocab = [f"w{i}" for i in range(500)]
    inside, outside = _canaries(50, classes, vocab, 7), _canaries(50, classes, vocab, 8)
    assert Counter(inside.labels) == Counter(outside.labels) == {c: 10 for c in range(5)}
    assert inside.labels != outside.labels and set(inside.texts).isdisjoint(outside.texts)


def test_the_attack_reports_its_own_noise_floor() -> None:
    """Hanley & McNeil's AUC standard error: ~5.8 points at 50 / 50 canaries, narrower with more held out."""
    from benchmarks.fl import _auc_se

    assert abs(100 * _auc_se(0.5, 50, 50) - 5.80) < 0.01
    assert _auc_se(0.5, 100, 400) < _auc_se(0.5, 100, 100) < _auc_se(0.5, 50, 50)
    assert _auc_se(1.0, 50, 50) == 0.0  # a perfect separation has no spread


@pytest.mark.timeout(120)
def test_trainings_run_on_spawned_workers_in_task_order() -> None:
    """The accuracy and membership phases' pool: results in task order, the repository's benchmarks package
    importable in each worker (site-packages holds another one), progress reported once per task."""
    import dataclasses

    from benchmarks.fl import QUICK, _in_workers

    said: list[str] = []
    s = dataclasses.replace(QUICK, workers=2)
    tasks = [("workers",), ("rounds",), ("model",), ("splits",)]
    out = _in_workers(s, getattr, tasks, said.append, lambda task, res: f"{task[0]}={res}")
    assert out == [2, QUICK.rounds, QUICK.model, QUICK.splits]
    assert sorted(said) == sorted(f"{t[0]}={r}" for t, r in zip(tasks, out, strict=True))
    with pytest.raises(AttributeError, match="no_such_size"):  # a failing training fails the phase
        _in_workers(s, getattr, [("rounds",), ("no_such_size",)], said.append, lambda task, res: "")


def test_calibration_removes_what_the_reference_model_shares() -> None:
    """A canary's loss is mostly its words' doing (shared with the reference model): calibrating by the
    reference's loss recovers a membership shift the raw losses drown; with no shift it finds nothing."""
    import numpy as np

    from benchmarks.fl import _attack_aucs

    rng = np.random.default_rng(0)
    words_in, words_out = rng.normal(0, 2.0, 100), rng.normal(0, 2.0, 400)  # per-canary difficulty
    noise = lambda n: rng.normal(0, 0.2, n)  # noqa: E731 - each model's own noise
    reference = (words_in + noise(100), words_out + noise(400))
    member = (words_in - 0.5 + noise(100), words_out + noise(400))  # trained canaries' loss falls by 0.5
    raw, calibrated = _attack_aucs(member, reference)
    assert calibrated > 0.85 and raw < 0.6
    _, none = _attack_aucs((words_in + noise(100), words_out + noise(400)), reference)
    assert abs(none - 0.5) < 0.1
