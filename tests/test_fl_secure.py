"""Secure aggregation inside the Flower app, on real SuperLink/SuperNode processes (tiny model, marked).

The tiny random encoder keeps each run to a minute or two on 2 cores: these
tests exercise the protocol plumbing (SecAgg stages as Message API rounds,
signatures, witness, dropout recovery), not learning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from collab.fl import attestation as att
from collab.fl.record import words_hash
from collab.fraudproof.builders import masked_sum_from_witness
from collab.secagg import AggregationWitness, masking, verify_seed_commitments
from tests.fl_helpers import assert_all_stopped, process_tree, start, wait_for

pytestmark = pytest.mark.slow

NAMES = ("p0", "p1", "p2")
TINY: dict[str, Any] = {
    "model": "tiny", "num-rounds": 1, "min-participants": 2, "max-len": 32, "epochs": 1, "batch-size": 16,
    "lr": 0.01, "noise-multiplier": 0.8, "epsilon": 50.0, "test-samples": 40, "round-timeout": 120.0,
    "secagg-timeout": 60.0,
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
    from collab.fl.record import words_hash

    assert summary["output_hash"] == words_hash(words)
    job = masked_sum_from_witness(witness)  # what the orchestrator claims
    assert np.array_equal(np.asarray(job.outputs()["sum"].data, dtype=np.int64).reshape(-1), words)
    assert sorted(summary["survivors"]) == survivors
    for item in summary["included"]:  # every included participant signed its commitment and model receipt
        att.check(att.model_receipt_digest(attribution["job"], rnd, bytes.fromhex(summary["global_model_hash"][2:])),
                  bytes.fromhex(item["model_receipt"][2:]), item["address"], "receipt")
        digest = att.update_digest(bytes.fromhex(summary["round_id"][2:]), item["member_id"], item["weight"],
                                   bytes.fromhex(item["update_commitment"][2:]))
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
