"""``collab bench chain`` end to end: a real anvil of its own, real receipts, results on disk.

The suite runs once (module fixture) through the installed console script
into a temporary results directory; the tests check the JSON's structure,
that it matches what ``--json`` printed, and the properties the figures must
show whatever the machine: a revenue claim costs the same however many
payments and holders there are (within 10%: a property of the accumulator,
not a timing), a receipt for 100 calls costs what one for 1 call does, and the
Shares transfer costs more than the stock ERC-1155 transfer by the hook.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
COLLAB = Path(sys.executable).parent / "collab"

EXPECTED_OPERATIONS = {
    "register_id", "register_asset", "register_asset_2_parents", "register_asset_16_parents",
    "offer_api", "buy_api", "post_receipt_1_call", "post_receipt_100_calls",
    "offer_full_access", "buy_full_access", "deliver_key", "release_escrow",
    "offer_long_term", "buy_long_term", "offer_partnership", "buy_partnership", "pay_installment",
    "pay", "pay_2_parents", "pay_16_parents", "claim", "claim_first", "transfer_shares",
}


def _collab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Run from a directory outside the repo: the command must find its suites by itself.
    command = [str(COLLAB)] if COLLAB.exists() else [sys.executable, "-m", "collab"]
    env = {**os.environ, "COLLAB_HOME": str(cwd / "home")}
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, subprocess.CompletedProcess[str]]:
    """One run of the chain suite; returns (JSON printed on stdout, results dir, the process)."""
    work = tmp_path_factory.mktemp("bench")
    results = work / "results"
    proc = _collab("--json", "bench", "chain", "--results-dir", str(results), cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), results, proc


def test_results_written_and_equal_to_stdout(bench_run: tuple[dict[str, Any], Path, Any]) -> None:
    printed, results, _ = bench_run
    on_disk = json.loads((results / "chain.json").read_text())
    assert on_disk == printed
    png = (results / "chain.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_json_structure(bench_run: tuple[dict[str, Any], Path, Any]) -> None:
    data, _, _ = bench_run
    assert data["suite"] == "chain"
    assert {"machine", "versions", "method", "operations", "baseline", "claim_scaling", "created_at", "seconds"} <= set(data)
    assert data["machine"]["cpu_count"] >= 1
    versions = data["versions"]
    assert versions["anvil"].startswith("1.7") and versions["solc"] and versions["openzeppelin_contracts"] == "5.7.0"
    assert EXPECTED_OPERATIONS <= set(data["operations"])
    for key, op in data["operations"].items():
        assert 21_000 < op["gas"] < 2_000_000, key
        assert op["tx_hash"].startswith("0x") and len(op["tx_hash"]) == 66, key
        assert op["label"], key
    # Every figure is its own transaction.
    hashes = [op["tx_hash"] for op in data["operations"].values()]
    assert len(set(hashes)) == len(hashes)


def test_claim_gas_is_flat_in_payments_and_holders(bench_run: tuple[dict[str, Any], Path, Any]) -> None:
    scaling = bench_run[0]["claim_scaling"]
    assert [p["count"] for p in scaling["payments"]] == [1, 10, 100]
    assert [p["count"] for p in scaling["holders"]] == [1, 10, 50]
    gases = [p["gas"] for p in scaling["payments"] + scaling["holders"]]
    assert max(gases) / min(gases) <= 1.10
    assert scaling["flat"] is True
    assert scaling["max_min_ratio"] == pytest.approx(max(gases) / min(gases), abs=1e-4)
    # The claims really paid something (revenue was there to claim).
    assert all(p["claimed"] > 0 for p in scaling["payments"] + scaling["holders"])


def test_metering_gas_does_not_grow_with_calls(bench_run: tuple[dict[str, Any], Path, Any]) -> None:
    ops = bench_run[0]["operations"]
    one, hundred = ops["post_receipt_1_call"]["gas"], ops["post_receipt_100_calls"]["gas"]
    assert abs(one - hundred) <= 0.02 * one


def test_shares_transfer_against_erc1155_baseline(bench_run: tuple[dict[str, Any], Path, Any]) -> None:
    b = bench_run[0]["baseline"]
    assert 30_000 < b["erc1155_transfer"] < 80_000
    assert b["shares_transfer"] == bench_run[0]["operations"]["transfer_shares"]["gas"]
    assert b["shares_transfer"] > b["shares_transfer_no_revenue"] > b["erc1155_supply_transfer"]
    assert b["hook_overhead"] == b["shares_transfer"] - b["erc1155_supply_transfer"]


def test_parents_make_payments_cost_more(bench_run: tuple[dict[str, Any], Path, Any]) -> None:
    ops = bench_run[0]["operations"]
    assert ops["pay"]["gas"] < ops["pay_2_parents"]["gas"] < ops["pay_16_parents"]["gas"]
    assert ops["register_asset"]["gas"] < ops["register_asset_2_parents"]["gas"] < ops["register_asset_16_parents"]["gas"]


def test_progress_goes_to_stderr_only(bench_run: tuple[dict[str, Any], Path, subprocess.CompletedProcess[str]]) -> None:
    proc = bench_run[2]
    assert "starting anvil" in proc.stderr
    assert proc.stdout.count("\n") == 1  # one JSON object, nothing else


def test_unknown_suite_is_a_one_line_usage_error(tmp_path: Path) -> None:
    proc = _collab("bench", "nosuch", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and "nosuch" in proc.stderr


def test_unwritable_results_dir_is_bad_input(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = _collab("bench", "chain", "--results-dir", str(blocker / "sub"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: cannot create the results directory")
    assert "Traceback" not in proc.stderr
    assert "starting anvil" not in proc.stderr  # refused before any chain was started
