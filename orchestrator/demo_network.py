"""The demo's process network: the orchestrator and the participant nodes as real ``collab`` processes.

Each process runs from its own temporary home with the demo's throwaway
passphrase in its environment, prints one JSON ready line and is stopped by
its PID (SIGTERM, then SIGKILL) when the demo ends. Nodes talk to the
orchestrator over CurveZMQ with its key pinned; the demo talks to nodes only
through their ``node.sock`` local API, like the user commands.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collab.errors import Unavailable
from orchestrator.client import NodeSocketClient

STARTUP_TIMEOUT = 120.0


def collab_command() -> list[str]:
    exe = Path(sys.executable).parent / "collab"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "collab"]


@dataclass
class Proc:
    """A started ``collab`` process, its ready line and log."""

    name: str
    home: Path
    proc: subprocess.Popen[str]
    info: dict[str, Any]
    log: Path

    def stop(self, grace: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def start_process(name: str, home: Path, args: list[str], passphrase: str) -> Proc:
    """Start ``collab --home HOME ARGS`` and wait for its JSON ready line."""
    return wait_ready(spawn(name, home, args, passphrase))


def spawn(name: str, home: Path, args: list[str], passphrase: str) -> Proc:
    """Start ``collab --home HOME ARGS`` (not waiting: several processes start side by side)."""
    log = home / f"{name}.log"
    env = {**os.environ, "COLLAB_PASSPHRASE": passphrase, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("COLLAB_HOME", None)
    env.pop("COLLAB_DEPLOYMENT", None)
    with log.open("a") as err:
        proc = subprocess.Popen([*collab_command(), "--home", str(home), *args], stdout=subprocess.PIPE, stderr=err,
                                text=True, env=env)
    return Proc(name, home, proc, {}, log)


def wait_ready(started: Proc) -> Proc:
    """Read the process's JSON ready line (Unavailable with its log tail if it exits instead)."""
    line = started.proc.stdout.readline() if started.proc.stdout else ""
    if not line:
        started.proc.wait(10)
        raise Unavailable(f"{started.name} did not start (exit {started.proc.returncode}): {started.tail(5)}")
    started.info = json.loads(line)
    return started


@dataclass
class Network:
    """The orchestrator and the nodes, by name."""

    orchestrator: Proc | None = None
    nodes: dict[str, Proc] = field(default_factory=dict)

    def start_orchestrator(self, home: Path, passphrase: str) -> Proc:
        self.orchestrator = start_process("orchestrator", home, ["orchestrator", "start", "--bind", "tcp://127.0.0.1:0",
                                                                 "--heartbeat-timeout", "4"], passphrase)
        return self.orchestrator

    def start_node(self, name: str, home: Path, passphrase: str, *, data: Path | None = None) -> Proc:
        assert self.orchestrator is not None
        args = ["node", "start", "--orchestrator", self.orchestrator.info["endpoint"],
                "--orchestrator-key", self.orchestrator.info["curve_key"], "--heartbeat", "0.5",
                "--no-release"]  # the demo's revenue phase releases the Full-access escrow itself
        if data is not None:
            args += ["--data", str(data)]
        self.nodes[name] = start_process(f"node-{name}", home, args, passphrase)
        return self.nodes[name]

    def start_nodes(self, nodes: dict[str, tuple[Path, Path | None]], passphrase: str) -> None:
        """Start several nodes side by side (name -> (home, training data or None)), then wait for each."""
        assert self.orchestrator is not None
        for name, (home, data) in nodes.items():
            args = ["node", "start", "--orchestrator", self.orchestrator.info["endpoint"],
                    "--orchestrator-key", self.orchestrator.info["curve_key"], "--heartbeat", "0.5",
                    "--no-release"]  # as above
            self.nodes[name] = spawn(f"node-{name}", home, args + (["--data", str(data)] if data else []), passphrase)
        for proc in self.nodes.values():
            wait_ready(proc)

    def api(self, name: str, timeout: float = 30.0) -> NodeSocketClient:
        return NodeSocketClient(self.nodes[name].info["socket"], timeout=timeout)

    def wait_online(self, names: list[str], timeout: float = 30.0) -> list[dict[str, Any]]:
        """Until the orchestrator lists every named node online (their heartbeats arrived)."""
        deadline = time.monotonic() + timeout
        wanted = {self.nodes[n].info["address"].lower() for n in names}
        while True:
            nodes = self.api(names[0]).request("nodes")
            online = {n["address"].lower() for n in nodes if n["status"] == "online"}
            if wanted <= online:
                return nodes  # type: ignore[no-any-return]
            if time.monotonic() > deadline:
                raise Unavailable(f"nodes not online after {timeout:.0f} s: {sorted(wanted - online)}")
            time.sleep(0.3)

    def wait_job(self, via: str, job_id: str, states: set[str], timeout: float) -> dict[str, Any]:
        """Poll a job through a node until its state is in ``states`` (or terminal); the last snapshot."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.api(via).request("job", id=job_id)
            if job["state"] in states or job["state"] in ("failed", "cancelled", "rejected", "finalized"):
                return job  # type: ignore[no-any-return]
            if time.monotonic() > deadline:
                raise Unavailable(f"job {job_id} still {job['state']} after {timeout:.0f} s")
            time.sleep(0.5)

    def stop(self) -> None:
        for proc in [*self.nodes.values(), *([self.orchestrator] if self.orchestrator else [])]:
            proc.stop()
