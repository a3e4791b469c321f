"""``collab bench he`` in quick mode: real 2-process HE triples, op timings, free encoder traces, results on disk.

Quick mode (``COLLAB_BENCH_QUICK=1``) takes about a minute: 16,384
element-wise triples, one (8x384)(384x384) matmul triple, SEAL/TenSEAL op
timings and free traces of the encoder's tuple requests at seq 4; the 14-23
minute offline runs are carried over from the last full run and labelled so.
Checks are structural or protocol facts, never timings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bench_helpers import run_quick_bench

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    work = tmp_path_factory.mktemp("bench-he")
    proc = run_quick_bench(work, "he", timeout=580)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), work / "results"


def test_json_and_png_written(bench: tuple[dict[str, Any], Path]) -> None:
    printed, out = bench
    assert json.loads((out / "he.json").read_text()) == printed
    assert (out / "he.png").read_bytes().startswith(b"\x89PNG")


def test_throughput_and_op_timings_are_measured_here(bench: tuple[dict[str, Any], Path]) -> None:
    results = bench[0]
    ew = results["throughput"]["elementwise"]
    assert ew["triples"] == 16384 and ew["triples_per_s"] > 0
    assert ew["bytes_sent_per_party"] > 0
    assert [m["shape"] for m in results["throughput"]["matmul"]] == ["(8x384)@(384x384)"]
    assert set(results["ops_vs_tenseal_ci"]) == {"ckks8192_multiply", "ckks8192_dot"}
    assert all(v > 0 for v in results["ops_ms"].values())


def test_batched_small_requests_send_far_fewer_bytes(bench: tuple[dict[str, Any], Path]) -> None:
    sr = bench[0]["throughput"]["small_requests"]
    assert sr["requests"] == 30  # 10 each of mul, square, AND
    assert sr["batched_bytes_sent"] * 5 < sr["one_by_one_bytes_sent"]  # shared ciphertexts, not one set per request
    assert sr["speedup"] > 0 and len(sr["load_average"]) == 3


def test_quick_mode_labels_the_long_offline_runs_as_previous(bench: tuple[dict[str, Any], Path]) -> None:
    results = bench[0]
    assert results["quick"] is True and results["encoder"] == []  # no long offline run in quick mode
    assert [e["seq_len"] for e in results["previous"]["encoder"]] == [4, 8]


def test_cheap_approximations_need_far_fewer_and_triples(bench: tuple[dict[str, Any], Path]) -> None:
    traces = {t["approx"]: t["requests"] for t in bench[0]["traces"] if t["seq_len"] == 4}
    default, cheap = traces["default"], traces["cheap"]
    assert default["binary_triple"]["elements"] > 4 * cheap["binary_triple"]["elements"]
    assert default["matmul_triple"]["calls"] == cheap["matmul_triple"]["calls"]  # the same linear algebra


def test_seq_128_is_opt_in_for_full_runs_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from collab.commands.bench import benchmarks_package

    he = benchmarks_package().load_suite("he")
    monkeypatch.delenv("COLLAB_BENCH_QUICK", raising=False)
    monkeypatch.delenv("COLLAB_BENCH_HE_SEQ128", raising=False)
    assert 128 not in he.plan_of_run()["encoder_runs"]
    monkeypatch.setenv("COLLAB_BENCH_HE_SEQ128", "1")
    assert he.plan_of_run()["encoder_runs"][-1] == 128 and he.plan_of_run()["trace"][-1] == 128
    monkeypatch.setenv("COLLAB_BENCH_QUICK", "1")
    assert he.plan_of_run()["encoder_runs"] == []
