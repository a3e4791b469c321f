"""``collab bench fraudproof`` in quick mode end to end: a real anvil of its own, real games, results on disk.

The suite runs once (module fixture) through the console script with
``COLLAB_BENCH_QUICK=1`` into a temporary results directory. The tests check
the JSON's structure and the properties that hold whatever the machine: every
played dispute stays within the protocol's round bound
⌈log_k steps⌉ + ⌈log_k chunks⌉ + 1, the formula table agrees with an
independent float computation of that bound, the targets' pass flags match
their figures, and each one-step proof was a real mined transaction.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

COLLAB = Path(sys.executable).parent / "collab"
ONE_STEPS = {"matmul_k384", "matmul_k1536", "softmax_row128", "layernorm_row384"}
MOVES = {"post", "challenge", "reveal", "pick", "reveal_header", "reveal_chunk", "pick_element", "prove_step",
         "da_challenge", "da_respond", "finalize"}


def _collab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [str(COLLAB)] if COLLAB.exists() else [sys.executable, "-m", "collab"]
    env = {**os.environ, "COLLAB_HOME": str(cwd / "home"), "COLLAB_BENCH_QUICK": "1"}
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    work = tmp_path_factory.mktemp("bench-fp")
    results = work / "results"
    proc = _collab("--json", "bench", "fraudproof", "--results-dir", str(results), cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "starting anvil" in proc.stderr
    return json.loads(proc.stdout), results


def _exact_bound(steps: int, chunks: int, k: int) -> int:
    def clog(n: int) -> int:
        return 0 if n <= 1 else math.ceil(math.log(n) / math.log(k) - 1e-12)

    return clog(steps) + clog(chunks) + 1


def test_files_written_and_equal_to_stdout(bench_run: tuple[dict[str, Any], Path]) -> None:
    data, results = bench_run
    assert json.loads((results / "fraudproof.json").read_text()) == data
    assert (results / "fraudproof.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert data["suite"] == "fraudproof" and data["quick"] is True


def test_every_operation_and_one_step_was_measured(bench_run: tuple[dict[str, Any], Path]) -> None:
    gas = bench_run[0]["gas"]
    assert MOVES <= set(gas["operations"])
    for kind, g in gas["operations"].items():
        assert 21_000 < g["min"] <= g["median"] <= g["max"] < 3_000_000, kind
    assert set(gas["one_step"]) == ONE_STEPS
    one = {k: v["gas"] for k, v in gas["one_step"].items()}
    # Longer rows cost more: the verifier really reads the K-row (not a constant-cost stub).
    assert one["matmul_k1536"] > one["matmul_k384"] > 100_000
    assert all(v > 100_000 for v in one.values())


def test_targets_are_reported_honestly(bench_run: tuple[dict[str, Any], Path]) -> None:
    data = bench_run[0]
    ops = data["gas"]["operations"]
    t = data["targets"]
    assert t["post"]["measured"] == ops["post"]["median"]
    assert t["one_step"]["measured"] == max(v["gas"] for v in data["gas"]["one_step"].values())
    assert t["move"]["measured"] == max(ops[k]["max"] for k in ("reveal", "pick", "reveal_header", "reveal_chunk", "pick_element"))
    for name, row in t.items():
        assert row["pass"] == (row["measured"] <= row["target"]), name


def test_played_disputes_stay_within_the_round_bound(bench_run: tuple[dict[str, Any], Path]) -> None:
    played = bench_run[0]["moves"]["played"]
    assert {r["k"] for r in played} == {2, 4, 16}
    for r in played:
        bound = _exact_bound(r["steps"], r["chunks"], r["k"])
        assert r["round_bound"] == bound
        assert 1 <= r["rounds"] <= bound and r["within_bound"] is True, r
        assert r["transactions"] <= 2 * bound + 2
        assert 0 <= r["disputed_step"] < r["steps"]
    # More branching, fewer rounds, on the same trace.
    by_k = {r["k"]: r["rounds"] for r in played if r["steps"] == played[0]["steps"]}
    assert by_k[2] > by_k[4] >= by_k[16]


def test_formula_table_covers_1e2_to_1e6(bench_run: tuple[dict[str, Any], Path]) -> None:
    rows = bench_run[0]["moves"]["formula"]
    assert {(r["steps"], r["k"]) for r in rows} == {(10**e, k) for e in range(2, 7) for k in (2, 4, 16)}
    for r in rows:
        assert r["rounds_chain_tensor"] == _exact_bound(r["steps"], 4, r["k"])
        assert r["rounds_minilm_ffn_128x1536"] == _exact_bound(r["steps"], 128 * 1536 // 32, r["k"])
    million = {r["k"]: r["rounds_minilm_ffn_128x1536"] for r in rows if r["steps"] == 10**6}
    assert million == {2: 20 + 13 + 1, 4: 10 + 7 + 1, 16: 5 + 4 + 1}


def test_encoder_dispute_offchain_and_bls(bench_run: tuple[dict[str, Any], Path]) -> None:
    data = bench_run[0]
    d = data["encoder_dispute"]
    assert d["steps"] > 10 and 0 <= d["disputed_step"] < d["steps"] and d["total_seconds"] > 0
    assert d["program"].startswith(("collab.fraudproof.builders.encoder_forward", "benchmarks.fraudproof.encoder_program"))
    assert d["transactions"] <= 2 * (math.ceil(math.log(d["steps"], 16)) + 5) + 2  # any output tensor here is < 16^4 chunks
    off = data["offchain"]
    assert set(off["jobs"]) == {"fedavg", "masked_sum", "ties", "encoder"}
    for name, job in off["jobs"].items():
        assert job["commit_vs_execute"] > 0 and job["execute_vs_float"] > 0, name
        # Fixed point at 16 fractional bits stays close to float for every job kind.
        assert job["error"]["max_abs"] <= 1e-2 * max(1.0, job["error"]["ref_max_abs"]), name
    assert off["jobs"]["masked_sum"]["error"]["max_abs"] == 0.0  # masks cancel exactly in the ring
    assert off["pass"] == (off["max_commit_vs_execute"] <= 3.0)
    # Both figures, with the work moved to receipt shown, never just the flattering one.
    assert off["pass_inputs_precommitted"] == (off["max_commit_outputs_vs_execute"] <= 3.0)
    assert all(j["commit_inputs_at_receipt_s"] >= 0 for j in off["jobs"].values())
    assert "not removed" in off["inputs_precommitted_reasoning"]
    bls = data["bls_consent"]
    assert bls["signers"] == 3 and 100_000 < bls["gas"] < 1_000_000 and len(bls["tx_hash"]) == 66
