"""``collab --json demo --quick`` end to end in a subprocess: real anvil, real keystores, real transactions.

Checks the report (every phase ok and backed by transactions, the amounts
adding up to the wei), that the last stdout line is the report, that the
chain it started is gone afterwards, and that it never touches the user's
``~/.collab`` or a deployment file named by the environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chain.anvil import rpc_answers

pytestmark = pytest.mark.slow

COLLAB = Path(sys.executable).parent / "collab"
PHASES = ("identities", "asset", "license", "metering", "training_round", "shares_minted", "merge", "secure_inference",
          "challenge_won", "revenue_claimed")
ETHER = 10**18


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], subprocess.CompletedProcess[str], Path]:
    work = tmp_path_factory.mktemp("demo")
    fake_home = work / "user-home"
    fake_home.mkdir()
    report_path = work / "report.json"
    env = {
        **os.environ,
        "HOME": str(fake_home),
        # A user's settings must not leak into the demo (it uses temporary homes only).
        "COLLAB_DEPLOYMENT": str(work / "users-deployment.json"),
        "COLLAB_HOME": str(work / "users-collab-home"),
    }
    command = [str(COLLAB)] if COLLAB.exists() else [sys.executable, "-m", "collab"]
    proc = subprocess.run(
        [*command, "--json", "demo", "--quick", "--report", str(report_path)],
        cwd=work, env=env, capture_output=True, text=True, timeout=1200, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return report, proc, work


def test_every_phase_ok_with_transactions(demo: tuple[dict[str, Any], Any, Path]) -> None:
    report = demo[0]
    assert report["demo"]["ok"] is True and report["demo"]["quick"] is True
    for phase in PHASES:
        entry = report[phase]
        if entry.get("pending"):  # waits for another issue's contracts: reported not ok, with the reason
            assert entry["ok"] is False and phase in report["demo"]["pending"]
            continue
        assert entry["ok"] is True, (phase, entry)
        assert entry["seconds"] > 0
        assert entry["transactions"], phase
        for tx in entry["transactions"]:
            assert tx["tx_hash"].startswith("0x") and len(tx["tx_hash"]) == 66
            assert tx["gas"] >= 21_000


def test_round_merge_inference_and_challenge_ran_in_the_processes(demo: tuple[dict[str, Any], Any, Path]) -> None:
    report = demo[0]
    rnd = report["training_round"]
    assert sorted(rnd["participants"]) == ["alice", "bob", "carol"] and rnd["dropped"] == []
    assert all(0 < e <= 50 for e in rnd["epsilon"].values()) and rnd["claim_status"] == "finalized"
    assert len(rnd["processes"]) == 5 and rnd["nodes_online"] == 4  # orchestrator + 4 nodes, real pids
    assert rnd["aggregation"].startswith("INSECURE") and "updates" in rnd["claim_over"]  # --quick: FedAvg of the updates
    merge = report["merge"]
    assert merge["adapters"] == 3 and merge["claim_status"] == "finalized" and merge["parameters"] > 0
    inf = report["secure_inference"]
    assert inf["preprocessing"] == "dealer" and inf["security"].startswith("INSECURE")  # --quick, labelled
    assert inf["cosine_vs_plaintext"] > 0.99 and inf["license"]["kind"] == "api" and inf["posted"]
    won = report["challenge_won"]
    assert won["claim_status"] == "rejected" and won["claimer"] == "bob"
    assert any(g["status"] == "won" for games in won["games"].values() for g in games)
    assert sum(won["credit_gained_wei"].values()) >= won["winner_share_of_bond_wei"] > 0


def test_round_settlement_minted_receipts_and_shares_by_weight(demo: tuple[dict[str, Any], Any, Path]) -> None:
    shares = demo[0]["shares_minted"]
    assert shares["ok"] is True and "pending" not in shares and shares["asset_id"] > 0
    assert sorted(h["name"] for h in shares["holders"]) == ["alice", "bob", "carol"]
    for h in shares["holders"]:  # read back from Shares / Receipts, compared with the contract's shareSplit
        assert h["shares"] == h["expected_shares"] > 0 and h["receipt_weights"] == [h["weight"]]
    actions = [t["action"] for t in shares["transactions"]]
    assert any("record" in a for a in actions) and any("finalize" in a for a in actions)


def test_report_file_equals_last_stdout_line(demo: tuple[dict[str, Any], Any, Path]) -> None:
    report, _, work = demo
    assert json.loads((work / "report.json").read_text()) == report


def test_identities_registered_with_their_keys(demo: tuple[dict[str, Any], Any, Path]) -> None:
    ids = demo[0]["identities"]["identities"]
    assert [i["name"] for i in ids] == ["alice", "bob", "carol", "dave", "orch"]
    assert sorted(i["sahara_id"] for i in ids) == [1, 2, 3, 4, 5]
    assert len({i["address"] for i in ids}) == 5
    assert all(i["active"] and i["bls_key_registered"] and i["x25519_key_registered"] for i in ids)


def test_asset_is_the_real_model_file(demo: tuple[dict[str, Any], Any, Path]) -> None:
    asset = demo[0]["asset"]
    assert asset["file"].endswith("model.safetensors") and asset["file_bytes"] > 50_000_000
    assert asset["kind"] == "model" and asset["shares_supply"] == 1_000_000
    if asset["in_vault"]:  # stored encrypted: the content hash is the blob's, not the plaintext's
        assert asset["vault_uri"] == "vault://" + asset["content_hash"][2:]
        assert asset["content_hash"] != asset["plaintext_sha256"]
        assert int(asset["key_commitment"], 16) != 0
    else:
        assert asset["content_hash"] == asset["plaintext_sha256"]


def test_full_access_key_delivered_checked_and_released(demo: tuple[dict[str, Any], Any, Path]) -> None:
    report = demo[0]
    full = report["license"]["full_access"]
    assert full["escrow_state"] == "key_delivered" and full["escrow_wei"] == full["price_wei"] > 0
    assert full["wrapped_key_bytes"] == 81  # collab.vault's X25519 + AES-GCM wrap
    ids = {i["name"]: i for i in report["identities"]["identities"]}
    assert full["key_matches_commitment"] and full["decrypted_matches_registered_file"]
    assert full["licensed_before_release"] is False  # access counts once the escrow is released
    r = report["revenue_claimed"]
    assert r["revenue_sources_wei"]["full_access_escrow"] == full["price_wei"]
    assert r["full_access_licensed_after_release"] is True
    assert any(t["action"] == "release the Full-access escrow" for t in r["transactions"])
    assert ids["dave"]["x25519_key_registered"]


def test_metering_amounts_add_up(demo: tuple[dict[str, Any], Any, Path]) -> None:
    report = demo[0]
    m, lic = report["metering"], report["license"]
    fee = lic["api"]["fee_per_call_wei"]
    assert m["calls"] == m["calls_paid_on_chain"] == sum(b["calls"] for b in m["batches"])
    assert len(m["batches"]) >= 2
    assert m["fees_released_wei"] == m["calls"] * fee == sum(b["amount_wei"] for b in m["batches"])
    assert m["compute_fees_wei"] == m["fees_released_wei"] * m["compute_fee_bps"] // 10_000
    assert m["compute_withdrawn_wei"] == m["compute_fees_wei"]
    assert m["fees_to_share_holders_wei"] == m["fees_released_wei"] - m["compute_fees_wei"]
    assert m["credit_left_wei"] == lic["api"]["prepaid_credit_wei"] - m["fees_released_wei"]
    assert m["replayed_receipt_rejected"] is True


def test_revenue_amounts_add_up(demo: tuple[dict[str, Any], Any, Path]) -> None:
    report = demo[0]
    r = report["revenue_claimed"]
    sources = r["revenue_sources_wei"]
    served = sum(p["amount"] - p["compute_fee_per_party"] for p in report["secure_inference"]["posted"])
    assert sources["api_fees_to_holders"] == report["metering"]["fees_to_share_holders_wei"] + served
    assert sources["long_term_license"] == report["license"]["long_term"]["price_wei"]
    assert r["total_paid_wei"] == sum(sources.values())
    claimed = r["claimed_wei"]
    assert set(claimed) == {"alice", "bob"}
    # Revenue before the Share transfer is alice's alone; what is paid after it splits 70/30.
    assert r["paid_before_transfer_wei"] == sources["api_fees_to_holders"] + sources["long_term_license"]
    after, moved = sources["full_access_escrow"] + sources["direct_payment"], r["shares_moved_to_bob"]
    assert moved == 300_000
    assert claimed["bob"] == after * moved // 1_000_000
    assert claimed["alice"] == r["paid_before_transfer_wei"] + after * (1_000_000 - moved) // 1_000_000
    assert 0 <= r["total_paid_wei"] - sum(claimed.values()) == r["unclaimed_dust_wei"] <= 2
    assert r["total_claimed_wei"] == sum(claimed.values())
    assert all(v == 0 for v in r["claimable_left_wei"].values())


def test_chain_stopped_and_nothing_left_behind(demo: tuple[dict[str, Any], Any, Path]) -> None:
    report, _, work = demo
    meta = report["demo"]
    assert meta["kept"] is False and "passphrase" not in meta
    assert not rpc_answers(meta["rpc_url"], timeout=0.5)
    assert not Path(meta["workdir"]).exists()  # homes and chain records removed (the report went elsewhere)


def test_user_settings_untouched(demo: tuple[dict[str, Any], Any, Path]) -> None:
    work = demo[2]
    assert not (work / "user-home" / ".collab").exists()
    assert not (work / "users-deployment.json").exists()
    assert not (work / "users-collab-home").exists()


def test_progress_on_stderr_report_on_stdout(demo: tuple[dict[str, Any], subprocess.CompletedProcess[str], Path]) -> None:
    proc = demo[1]
    assert "identities" in proc.stderr and "revenue_claimed" in proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1


def test_unwritable_report_path_fails_before_any_chain(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    command = [str(COLLAB)] if COLLAB.exists() else [sys.executable, "-m", "collab"]
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.run([*command, "demo", "--quick", "--report", str(blocker / "report.json")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write the demo report to {blocker / 'report.json'}")
    assert "starting anvil" not in proc.stderr
    assert proc.stdout == ""


def test_sigterm_mid_demo_stops_every_process_it_started(tmp_path: Path) -> None:
    """`kill PID` on a running demo unwinds like Ctrl-C: its chain, orchestrator and nodes stop with it."""
    import contextlib
    import threading
    import time

    import psutil

    command = [str(COLLAB)] if COLLAB.exists() else [sys.executable, "-m", "collab"]
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.Popen([*command, "demo", "--quick"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    children: list[psutil.Process] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 300
        while not any(" node start" in _cmdline(c) for c in children):  # the nodes start with the training round
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-2000:]
            time.sleep(0.5)
            children = [c for c in psutil.Process(proc.pid).children(recursive=True) if _cmdline(c)]
        assert any("anvil" in _cmdline(c) for c in children) and any(" orchestrator start" in _cmdline(c) for c in children)
        proc.terminate()
        assert proc.wait(timeout=120) == 130
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, [_cmdline(p)[:120] for p in alive]
        reader.join(timeout=10)
        assert "interrupted" in "".join(lines)
    finally:
        for process in [*children, psutil.Process(proc.pid)] if proc.poll() is None else children:
            with contextlib.suppress(psutil.Error):
                process.kill()


def _cmdline(process: Any) -> str:
    import psutil

    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # exited (or a zombie) since it was listed
        return ""
