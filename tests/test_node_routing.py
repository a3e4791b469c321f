"""`collab claims` and `collab merge` through a real node process (node.sock) give what the direct path gives.

A real anvil, a real orchestrator process and a real ``collab node start``
for the test home. Each command first runs with no node (in-process, the
home's keystore unlocked with the passphrase), then with the node running and
the passphrase *removed* from the environment: only the node, which holds the
unlocked keys, can then sign, so a success proves the request was routed. The
JSON output is compared field by field; bad ids and configs come back through
the node as one-line errors with the direct path's exit codes. Small config:
one-layer tiny BERTs (hidden 16), a 3-input FedAvg program.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chain.deployment import Deployment
from collab.errors import BadInput, NotFound
from collab.fraudproof.store import Store
from orchestrator.client import NodeSocketClient
from test_claim_manager import GameEnv, env, game_env  # noqa: F401 - fixtures
from test_claims_cli import _home, _job, _job_files, cli
from test_merge_claim import zoo  # noqa: F401 - fixture (tiny BERT fine-tunes)
from test_orchestrator import COLLAB, _funded_registered, _start

pytestmark = pytest.mark.slow  # real orchestrator and node processes, merges of tiny models


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def home(env: GameEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    monkeypatch.setenv("COLLAB_PASSPHRASE", "pw")
    for var in ("COLLAB_DEPLOYMENT", "COLLAB_RPC_URL", "COLLAB_HOME"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "h"
    _home(env, path, "route-node", True)
    return path


@pytest.fixture
def start_node(env: GameEnv, home: Path, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:  # noqa: F811
    """Starts the orchestrator now and returns a function that starts the home's node (both stopped after)."""
    orch_home = tmp_path / "o"
    orch_home.mkdir()
    _funded_registered(env.w3, env.deployment, orch_home, "route-orchestrator")
    env.deployment.save(orch_home / "deployment.json")
    orch, info = _start(orch_home, "tcp://127.0.0.2:0")
    procs = [orch]

    def start(*extra: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([*COLLAB, "--home", str(home), "node", "start", "--orchestrator", info["endpoint"],
                                 "--orchestrator-key", info["curve_key"], "--heartbeat", "0.5", *extra],
                                stdout=subprocess.PIPE, stderr=open(home / "node.log", "a"), text=True,
                                env={**os.environ, "COLLAB_PASSPHRASE": "pw"})
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline(), (home / "node.log").read_text()[-2000:]
        return proc

    yield start
    for proc in reversed(procs):
        _stop(proc)


def _ok(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> dict[str, Any]:
    code, out, err = cli(capsys, home, "--json", *args)
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def _error(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str]:
    code, out, err = cli(capsys, home, *args)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert out == "" and len(errors) == 1 and err.endswith(errors[0] + "\n") and "Traceback" not in err, err
    return code, errors[0]


def test_claims_and_merges_via_the_node_match_the_direct_path(
    env: GameEnv, home: Path, start_node: Callable[..., subprocess.Popen[str]], zoo: dict[str, Path],  # noqa: F811
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    program, inputs = _job_files(tmp_path, _job())
    linear = tmp_path / "linear.yml"
    linear.write_text(yaml.safe_dump({"merge_method": "linear", "models": [
        {"model": str(zoo[f"ft{i}"]), "parameters": {"weight": w}} for i, w in enumerate((0.7, 0.3))]}))
    missing = "0x" + "42" * 32

    # Direct: no node runs for this home.
    posted = _ok(capsys, home, "claims", "post", str(program), "--inputs", str(inputs), "--job-id", "0x" + "01" * 32)
    direct_mine = _ok(capsys, home, "claims", "list", "--mine")
    direct_show = _ok(capsys, home, "claims", "show", posted["claim_id"])
    direct_merge = _ok(capsys, home, "merge", "run", str(linear), "--out", str(tmp_path / "direct"))
    direct_errors = [_error(capsys, home, *args)[0] for args in (
        ("claims", "show", missing), ("claims", "show", "not-hex"), ("merge", "finalize", missing),
        ("merge", "run", str(tmp_path / "none.yml")))]
    assert direct_errors == [3, 2, 3, 3]

    node = start_node()
    monkeypatch.delenv("COLLAB_PASSPHRASE")  # from here on only the node can unlock this home's keys
    assert _ok(capsys, home, "claims", "list", "--mine") == direct_mine
    assert _ok(capsys, home, "claims", "show", posted["claim_id"]) == direct_show
    everyone = _ok(capsys, home, "claims", "list")["claims"]
    assert posted["claim_id"] in {c["claim_id"] for c in everyone}

    # The same program posted by the node under another job id: the same roots, the node's store serves it.
    again = _ok(capsys, home, "claims", "post", str(program), "--inputs", str(inputs), "--job-id", "0x" + "02" * 32)
    assert again["claim_id"] != posted["claim_id"]
    same = ("program_root", "input_root", "output_root", "trace_root", "steps", "audience", "da_pointer", "da_url")
    assert {k: again[k] for k in same} == {k: posted[k] for k in same}
    assert Store(home).trace(bytes.fromhex(again["claim_id"][2:])).root.hex() == again["trace_root"][2:]
    mine = _ok(capsys, home, "claims", "list", "--mine")["claims"]
    assert [c["claim_id"] for c in mine] == [posted["claim_id"], again["claim_id"]]

    routed_merge = _ok(capsys, home, "merge", "run", str(linear), "--out", str(tmp_path / "routed"))
    differ = ("out_dir", "seconds")
    assert {k: v for k, v in routed_merge.items() if k not in differ} == \
        {k: v for k, v in direct_merge.items() if k not in differ}
    assert routed_merge["out_dir"] == str(tmp_path / "routed") and (tmp_path / "routed" / "model.safetensors").is_file()
    assert "merging 2 input(s) with linear" in (home / "node.log").read_text()  # the node did the work

    # Errors through the node: the direct path's exit codes, one line each.
    routed_errors = [_error(capsys, home, *args) for args in (
        ("claims", "show", missing), ("claims", "show", "not-hex"), ("merge", "finalize", missing),
        ("merge", "run", str(tmp_path / "none.yml")))]
    assert [code for code, _ in routed_errors] == direct_errors
    assert "not a recorded merge" in routed_errors[2][1] and "does not exist" in routed_errors[3][1]
    code, err = _error(capsys, home, "claims", "post", str(program), "--inputs", str(inputs), "--job-id", "0x" + "02" * 32)
    assert code != 0 and "DuplicateClaim" in err

    # Hostile requests straight to node.sock: typed errors, and the node keeps serving.
    api = NodeSocketClient(home / "node.sock")
    with pytest.raises(BadInput, match="claim id"):
        api.request("claims_show", claim_id="0xzz")
    with pytest.raises(BadInput, match="unexpected keyword"):
        api.request("claims_list", mine=False, sudo=True)
    with pytest.raises(NotFound):
        api.request("merge_run", config=str(tmp_path / "none.yml"), out_dir=str(tmp_path / "x"))
    assert api.request("claims_list", mine=True) == {"claims": mine}

    # Another deployment on the command line: not silently the node's chain, the command runs here (chain down: 5).
    down = Deployment.load(home / "deployment.json")
    down.rpc_url = "http://127.0.0.1:9"
    down.save(tmp_path / "down.json")
    code, err = cli(capsys, home, "--deployment", str(tmp_path / "down.json"), "claims", "list")[::2]
    assert code == 5 and "not using this home's node" in err and "Traceback" not in err

    # A node without a chain (--no-workers) cannot act: the command runs here, with the passphrase.
    _stop(node)
    start_node("--no-workers")
    monkeypatch.setenv("COLLAB_PASSPHRASE", "pw")
    assert _ok(capsys, home, "claims", "list", "--mine")["claims"] == mine


def test_a_claimed_merge_runs_in_the_node_and_finalizes_through_it(
    env: GameEnv, home: Path, start_node: Callable[..., subprocess.Popen[str]], zoo: dict[str, Path],  # noqa: F811
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    time_travel: Callable[[int], int],
) -> None:
    config = tmp_path / "linear.yml"
    config.write_text(yaml.safe_dump({"merge_method": "linear", "models": [
        {"model": str(zoo[f"ft{i}"]), "parameters": {"weight": 1.0}} for i in range(2)]}))
    start_node()
    monkeypatch.delenv("COLLAB_PASSPHRASE")
    posted = _ok(capsys, home, "merge", "run", str(config), "--claim", "--out", str(tmp_path / "claimed"))
    mine = _ok(capsys, home, "claims", "list", "--mine")["claims"]
    assert [c["claim_id"] for c in mine] == [posted["claim_id"]] and mine[0]["status"] == "pending"
    code, err = _error(capsys, home, "merge", "run", str(config), "--claim", "--out", str(tmp_path / "again"))
    assert code == 2 and ("MergeJobExists" in err or "DuplicateClaim" in err)  # never claimed twice, via the node either
    time_travel(env.manager().params_of(bytes.fromhex(posted["claim_id"][2:])).challenge_window)
    final = _ok(capsys, home, "merge", "finalize", posted["claim_id"])
    assert final["status"] == "finalized" and final["asset"]["commitment_root"] == posted["output_root"]
    assert final["asset"]["owner"] == mine[0]["claimer"]
