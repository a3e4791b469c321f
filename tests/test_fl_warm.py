"""The warm ClientApp host: one process per SuperNode serves every Flower message; killing either ends both.

Real SuperLink, SuperNodes (``--isolation process``) and hosts on loopback,
tiny model, 8 articles per participant. The caches of :mod:`collab.fl.warm`
are checked in-process.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

import fl_helpers
from fl_helpers import PASSPHRASE, assert_all_stopped, process_tree
from collab.errors import Unauthorized
from collab.fl import warm
from collab.fl.task import TaskConfig, build_model
from collab.identity import Identity

NAMES = ("p0", "p1", "p2")


def _names(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            out.append(" ".join(p.cmdline()))
        except psutil.NoSuchProcess:
            pass
    return out


def _wait_gone(proc: psutil.Process, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
            return
        time.sleep(0.2)
    raise AssertionError(f"process {proc.pid} still running after {timeout} s")


def _supernode_of(host: psutil.Process, timeout: float = 120.0) -> psutil.Process:
    """The host's SuperNode child, once the host has started it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = [c for c in host.children() if c.cmdline()[1:3] == ["-m", "collab.fl.supernode"]]
        if children:
            return children[0]
        time.sleep(0.2)
    raise AssertionError(f"host {host.pid} started no SuperNode within {timeout} s")


@pytest.mark.slow
def test_one_host_process_per_node_serves_every_message_of_a_secure_round(tmp_path: Path) -> None:
    config = {
        "model": "tiny", "num-rounds": 1, "max-len": 32, "epochs": 1, "batch-size": 8, "lr": 0.01,
        "noise-multiplier": 1.0, "epsilon": 100.0, "test-samples": 20, "round-timeout": 300.0,
        "secagg-timeout": 300.0,
    }
    deployment = fl_helpers.start(tmp_path, NAMES, per_participant=8)
    try:
        hosts = {n: deployment.processes[f"supernode-{n}"].proc.pid for n in NAMES}
        record = deployment.run(config, tmp_path / "result.json", timeout=900)
        procs = process_tree(deployment)
        commands = _names(procs)
        assert {n: deployment.processes[f"supernode-{n}"].proc.pid for n in NAMES} == hosts  # never restarted
    finally:
        deployment.stop()
    assert_all_stopped(procs)
    assert record["status"] == "completed", record.get("reason")
    assert sorted(record["rounds"][0]["participants"]) == list(NAMES)
    assert not any("flwr-clientapp" in c for c in commands)
    assert sum("flower-superexec" in c for c in commands) == 1  # the SuperLink's (ServerApp) only; no node has one
    for name in NAMES:  # hello, train and the four SecAgg stages, all served by the one host process
        log = (tmp_path / name / "flower" / f"supernode-{name}.log").read_text(errors="replace")
        assert len(re.findall(r"\[collab warm host\] task done \(completed\)", log)) >= 6, log[-3000:]
        assert "--isolation process" in " ".join(c for c in commands if f"/{name}/" in c)


@pytest.mark.slow
def test_killing_the_host_kills_its_supernode_and_the_reverse(tmp_path: Path) -> None:
    deployment = fl_helpers.start(tmp_path, ("p0", "p1"), per_participant=4, deployment_kw={"secure": False})
    try:
        pairs = {}
        for name in ("p0", "p1"):
            host = psutil.Process(deployment.processes[f"supernode-{name}"].proc.pid)
            pairs[name] = (host, _supernode_of(host))
        host, node = pairs["p0"]
        host.send_signal(signal.SIGKILL)  # the host alone: its SuperNode must not outlive it
        _wait_gone(node)
        host, node = pairs["p1"]
        node.send_signal(signal.SIGKILL)  # the SuperNode alone: its host exits and reports the failure
        deployment.processes["supernode-p1"].proc.wait(timeout=120)
        assert deployment.processes["supernode-p1"].proc.returncode != 0
        procs = process_tree(deployment)
    finally:
        deployment.stop()
    assert_all_stopped(procs)


def test_host_without_a_supernode_command_exits_with_usage_error() -> None:
    done = subprocess.run([sys.executable, "-m", "collab.fl.clientapp_host", "--runtime-api-address", "127.0.0.1:1"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "flower-supernode command line is missing" in done.stderr


def test_fresh_model_is_a_private_copy_of_the_built_model() -> None:
    task = TaskConfig(num_labels=5, kind="tiny", max_len=32)
    first, built = warm.fresh_model(task), build_model(task)
    assert first is not warm.fresh_model(task)
    for (name, a), (_, b) in zip(first.state_dict().items(), built.state_dict().items()):
        assert torch.equal(a, b), name
    with torch.no_grad():  # training changes its copy, never the next message's
        for p in first.parameters():
            p.add_(1.0)
    again = warm.fresh_model(task)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), built.state_dict().values()))


def test_identity_is_unlocked_once_and_reloaded_when_recreated(tmp_path: Path) -> None:
    home = tmp_path / "home"
    created = Identity.create(home, PASSPHRASE, scrypt_n=2)
    one = warm.identity(str(home), PASSPHRASE)
    assert one is warm.identity(str(home), PASSPHRASE) and one.address == created.address
    with pytest.raises(Unauthorized):
        warm.identity(str(home), "wrong passphrase")
    for f in Identity.keys_dir(home).iterdir():
        f.unlink()
    time.sleep(0.01)
    recreated = Identity.create(home, PASSPHRASE, scrypt_n=2)
    assert warm.identity(str(home), PASSPHRASE).address == recreated.address != created.address
