"""Federated DP-LoRA rounds on Flower's real deployment engine (SuperLink + 3 SuperNodes on loopback).

Small configs on purpose, to keep each test within a few minutes on 2 cores:
40 BBC News articles per participant, sequence length 32, one local epoch or
two. The accuracy test uses the real all-MiniLM-L6-v2; the fault-tolerance and
budget test uses a tiny random encoder, since it only exercises the plumbing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from collab.dp.ledger import PrivacyLedger, calibrate_sigma, epsilon_of
from collab.fl.deployment import FlowerDeployment
import fl_helpers
from fl_helpers import assert_all_stopped, process_tree

pytestmark = pytest.mark.slow

PARTICIPANTS = ("p0", "p1", "p2")


def start(tmp_path: Path) -> FlowerDeployment:
    return fl_helpers.start(tmp_path, PARTICIPANTS)


def test_three_participants_minilm_dp_lora_round_improves_accuracy(tmp_path: Path) -> None:
    config: dict[str, Any] = {
        "model": "minilm", "num-rounds": 1, "max-len": 32, "epochs": 2, "batch-size": 8, "lr": 0.01,
        "noise-multiplier": "auto", "epsilon": 20.0, "test-samples": 60, "round-timeout": 400.0,
    }
    deployment = start(tmp_path)
    try:
        record = deployment.run(config, tmp_path / "result.json", timeout=600)
        procs = process_tree(deployment)
    finally:
        deployment.stop()
    assert_all_stopped(procs)
    assert record["status"] == "completed", record.get("reason")
    (rnd,) = record["rounds"]
    assert sorted(rnd["participants"]) == list(PARTICIPANTS) and rnd["dropped"] == {}
    assert rnd["examples"] == {p: 40 for p in PARTICIPANTS}
    assert record["final_accuracy"] >= record["base_accuracy"] + 0.15, record
    for name in PARTICIPANTS:  # ε reported by each node equals its own ledger's
        ledger = PrivacyLedger(tmp_path / name / "privacy_ledger.json")
        assert record["epsilon"][name] == pytest.approx(ledger.accounts[name].spent)
        # "auto": each node calibrated its own noise to spend its whole budget over the job's one round
        assert 19.9 < record["epsilon"][name] <= 20.0
        ((sigma, _, _),) = ledger.accounts[name].history
        assert sigma == pytest.approx(calibrate_sigma(20.0, 1e-5, [], 1 / 5, 10), rel=1e-6)


def wait_for_rounds(path: Path, count: int, timeout: float) -> dict[str, Any]:
    return fl_helpers.wait_for(path, lambda r: len(r.get("rounds", [])) >= count, timeout)


def test_killed_participant_is_dropped_and_budget_stop_ends_training(tmp_path: Path) -> None:
    sigma, rate, steps = 0.8, 1 / 3, 6  # 40 examples, batches of 16 (3 per epoch), two epochs per round
    budget = (epsilon_of([(sigma, rate, 2 * steps)], 1e-5) + epsilon_of([(sigma, rate, 3 * steps)], 1e-5)) / 2
    config: dict[str, Any] = {
        "model": "tiny", "num-rounds": 3, "min-participants": 2, "max-len": 32, "epochs": 2, "batch-size": 16,
        "lr": 0.01, "noise-multiplier": sigma, "epsilon": budget, "delta": 1e-5, "test-samples": 40,
        "round-timeout": 180.0,
    }
    result = tmp_path / "result.json"
    deployment = start(tmp_path)
    try:
        run = deployment.start_run(config, result)
        after_one = wait_for_rounds(result, 1, timeout=300)
        assert sorted(after_one["rounds"][0]["participants"]) == list(PARTICIPANTS), after_one
        deployment.kill_participant("p2")  # SIGKILL its SuperNode and everything it spawned
        record = deployment.wait_run(run, result, timeout=400)
        procs = process_tree(deployment)
    finally:
        deployment.stop()
    assert_all_stopped(procs)
    first, second, third = record["rounds"]
    # round 2 completes without the killed participant
    assert sorted(second["participants"]) == ["p0", "p1"] and "p2" in second["dropped"]
    assert "accuracy" in second and "p2" in record["dropped"]
    # ε composes across rounds, as each node's ledger computes it
    for name in ("p0", "p1"):
        assert first["epsilon"][name] == pytest.approx(epsilon_of([(sigma, rate, steps)], 1e-5))
        assert second["epsilon"][name] == pytest.approx(epsilon_of([(sigma, rate, 2 * steps)], 1e-5))
    # round 3 would exceed the budget: the nodes refuse before training and the job stops, saying why
    assert third["participants"] == [] and record["status"] == "failed"
    assert "privacy budget exhausted for p0" in record["reason"] and "privacy budget exhausted for p1" in record["reason"]
    assert PrivacyLedger(tmp_path / "p0" / "privacy_ledger.json").accounts["p0"].rounds == 2
