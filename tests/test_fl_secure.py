"""Secure aggregation inside the Flower app, on real SuperLink/SuperNode processes (tiny model, marked).

The tiny random encoder keeps each run to a minute or two on 2 cores: these
tests exercise the protocol plumbing (SecAgg stages as Message API rounds,
signatures, witness, dropout recovery), not learning.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chain.clients.round_registry import epsilon_units
from collab.fl import attestation as att
from collab.fl.record import words_hash
from collab.fraudproof.builders import masked_sum_from_witness
from collab.secagg import AggregationWitness, masking, verify_seed_commitments
from fl_helpers import assert_all_stopped, process_tree, start, wait_for

pytestmark = pytest.mark.slow

NAMES = ("p0", "p1", "p2")
TINY: dict[str, Any] = {
    "model": "tiny", "num-rounds": 1, "min-participants": 2, "max-len": 32, "epochs": 1, "batch-size": 16,
    "lr": 0.01, "noise-multiplier": 0.8, "epsilon": 50.0, "test-samples": 40, "round-timeout": 120.0,
    "secagg-timeout": 150.0,
}


def check_round(tmp_path: Path, rnd: int, survivors: list[str]) -> AggregationWitness:
    """The witness verifies, replays to the recorded output and to the sum of the survivors' own inputs."""
    attribution = json.loads((tmp_path / "attribution.json").read_text())
    summary = attribution["rounds"][rnd - 1]
    witness = AggregationWitness.from_bytes((tmp_path / summary["witness"]).read_bytes())
    verify_seed_commitments(witness.config, witness)
    words = witness.replay()
    inputs = [np.load(tmp_path / name / "flower" / f"input-r{rnd}.npy") for name in survivors]
    assert np.array_equal(words, masking.ring_sum(inputs, len(words)))  # exact: the masks cancelled in Z_2^64
    assert summary["output_hash"] == words_hash(words)
    job = masked_sum_from_witness(witness)  # what the orchestrator claims
    assert np.array_equal(np.asarray(job.outputs()["sum"].data, dtype=np.int64).reshape(-1), words)
    assert sorted(summary["survivors"]) == survivors
    for item in summary["included"]:  # every included participant signed its commitment and model receipt
        att.check(att.model_receipt_digest(attribution["job"], rnd, bytes.fromhex(summary["global_model_hash"][2:])),
                  bytes.fromhex(item["model_receipt"][2:]), item["address"], "receipt")
        digest = att.update_digest(bytes.fromhex(summary["round_id"][2:]), item["member_id"], item["weight"],
                                   epsilon_units(item["epsilon"]), bytes.fromhex(item["update_commitment"][2:]))
        att.check(digest, bytes.fromhex(item["update_signature"][2:]), item["address"], "commitment")
    return witness


def test_secure_round_equals_ring_sum_and_is_attested(tmp_path: Path) -> None:
    deployment = start(tmp_path, NAMES, **{n: {"keep_inputs": True} for n in NAMES})
    try:
        record = deployment.run(TINY, tmp_path / "result.json", timeout=400)
        procs = process_tree(deployment)
    finally:
        deployment.stop()
    assert_all_stopped(procs)
    assert record["status"] == "completed", record.get("reason")
    assert record["secure_aggregation"] and sorted(record["rounds"][0]["participants"]) == list(NAMES)
    witness = check_round(tmp_path, 1, list(NAMES))
    assert witness.dropped == ()
    attribution = json.loads((tmp_path / "attribution.json").read_text())
    assert {n: p["weight"] for n, p in attribution["participants"].items()} == {n: 40 for n in NAMES}
    assert all(0 < p["epsilon"] <= 50 for p in attribution["participants"].values())


def wait_for_log(path: Path, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise AssertionError(f"{needle!r} not in {path} within {timeout} s")


def test_participant_killed_mid_secagg_is_dropped_and_its_masks_recovered(tmp_path: Path) -> None:
    # p2 shares its keys, then hangs on its masked input; the test SIGKILLs its SuperNode there.
    deployment = start(tmp_path, NAMES, p0={"keep_inputs": True}, p1={"keep_inputs": True}, p2={"stall": "mask"})
    try:
        # The mask stage waits out this timeout for p2 (most of the test's time); the live nodes answer in seconds.
        run = deployment.start_run({**TINY, "secagg-timeout": 45.0}, tmp_path / "result.json")
        wait_for_log(tmp_path / "p2" / "flower" / "supernode-p2.log", "Receiving: train.secagg_mask", timeout=300)
        deployment.kill_participant("p2")
        record = deployment.wait_run(run, tmp_path / "result.json", timeout=300)
        procs = process_tree(deployment)
    finally:
        deployment.stop()
    assert_all_stopped(procs)
    assert record["status"] == "completed", record.get("reason")
    (rnd,) = record["rounds"]
    assert sorted(rnd["participants"]) == ["p0", "p1"] and "mask" in rnd["dropped"]["p2"]
    witness = check_round(tmp_path, 1, ["p0", "p1"])  # the sum is exactly p0 + p1: p2's pair masks were removed
    assert witness.dropped == (3,) and any(t.owner == 3 and t.peer is not None for t in witness.masks)
    attribution = json.loads((tmp_path / "attribution.json").read_text())
    assert sorted(attribution["participants"]) == ["p0", "p1"]  # p2 gets nothing for a round it did not finish
    assert attribution["rounds"][0]["dropped_after_keys"] == ["p2"]


def test_restarted_superlink_resumes_after_the_last_completed_round(tmp_path: Path) -> None:
    result = tmp_path / "result.json"
    deployment = start(tmp_path, NAMES)
    try:
        deployment.start_run({**TINY, "num-rounds": 2}, result)
        first = wait_for(result, lambda r: len(r.get("rounds", [])) >= 1, timeout=400)
        assert first["status"] == "running", first.get("reason")
        deployment.processes["superlink"].kill()  # the orchestrator's machine dies mid-job (ServerApp with it)
        deployment.processes["flwr-run"].stop()
        deployment.start_superlink()  # same port; the SuperNodes reconnect
        record = deployment.run({**TINY, "num-rounds": 2}, result, timeout=600)
        procs = process_tree(deployment)
    finally:
        deployment.stop()
    assert_all_stopped(procs)
    assert record["status"] == "completed", record.get("reason")
    assert record["resumed_after"] == 1 and [r["round"] for r in record["rounds"]] == [1, 2]
    assert record["rounds"][0] == first["rounds"][0]  # round 1 was not redone
    attribution = json.loads((tmp_path / "attribution.json").read_text())
    assert [r["round"] for r in attribution["rounds"]] == [1, 2]
    assert attribution["rounds"][1]["global_model_hash"] == attribution["rounds"][0]["new_model_hash"]
    assert all(p["rounds"] == [1, 2] for p in attribution["participants"].values())
