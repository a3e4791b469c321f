"""Federated DP-LoRA rounds on Flower's real deployment engine (SuperLink + 3 SuperNodes on loopback).

Small configs on purpose, to keep each test within a few minutes on 2 cores:
40 BBC News articles per participant, sequence length 32, one local epoch or
two. The accuracy test uses the real all-MiniLM-L6-v2; the fault-tolerance and
budget test uses a tiny random encoder, since it only exercises the plumbing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from collab.dp.ledger import PrivacyLedger, epsilon_of
from collab.fl.data import Dataset, iid_split, load_bbc_news, take, train_test_split
from collab.fl.deployment import FlowerDeployment

pytestmark = pytest.mark.slow

PARTICIPANTS = ("p0", "p1", "p2")


def write_jsonl(path: Path, data: Dataset) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": data.classes[y]}) + "\n" for t, y in zip(data.texts, data.labels)))
    return path


def start(tmp_path: Path, per_participant: int = 40) -> FlowerDeployment:
    """A SuperLink and one SuperNode per participant home, each with an IID shard of the BBC training split."""
    train, _ = train_test_split(load_bbc_news(), 0.2, seed=0)
    shards = iid_split(take(train, per_participant * len(PARTICIPANTS), seed=11), len(PARTICIPANTS), seed=12)
    deployment = FlowerDeployment(tmp_path / "orchestrator")
    deployment.start_superlink()
    for name, shard in zip(PARTICIPANTS, shards):
        home = tmp_path / name
        home.mkdir()
        deployment.add_participant(name, home, write_jsonl(home / "data.jsonl", shard))
    return deployment


def process_tree(deployment: FlowerDeployment) -> list[psutil.Process]:
    procs = []
    for p in deployment.processes.values():
        if p.proc.poll() is None:
            procs.append(psutil.Process(p.proc.pid))
        procs.extend(p.descendants())
    return procs


def assert_all_stopped(procs: list[psutil.Process]) -> None:
    time.sleep(1)
    alive = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running: {[(p.pid, p.name()) for p in alive]}"


def test_three_participants_minilm_dp_lora_round_improves_accuracy(tmp_path: Path) -> None:
    config: dict[str, Any] = {
        "model": "minilm", "num-rounds": 1, "max-len": 32, "epochs": 2, "batch-size": 8, "lr": 0.01,
        "noise-multiplier": 0.7, "epsilon": 50.0, "test-samples": 60, "round-timeout": 400.0,
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
        assert 0 < record["epsilon"][name] <= 50.0


def wait_for_rounds(path: Path, count: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            try:
                record: dict[str, Any] = json.loads(path.read_text())
            except json.JSONDecodeError:
                record = {}
            if len(record.get("rounds", [])) >= count or record.get("status") == "failed":
                return record
        time.sleep(0.5)
    raise AssertionError(f"fewer than {count} rounds after {timeout} s")


def test_killed_participant_is_dropped_and_budget_stop_ends_training(tmp_path: Path) -> None:
    sigma, rate, steps = 0.8, 1 / 3, 6  # 40 examples, batches of 16 (3 per epoch), two epochs per round
    budget = (epsilon_of([(sigma, rate, 2 * steps)], 1e-5) + epsilon_of([(sigma, rate, 3 * steps)], 1e-5)) / 2
    config: dict[str, Any] = {
        "model": "tiny", "num-rounds": 3, "min-participants": 2, "max-len": 32, "epochs": 2, "batch-size": 16,
        "lr": 0.01, "noise-multiplier": sigma, "epsilon": budget, "delta": 1e-5, "test-samples": 40,
        "round-timeout": 90.0,
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
