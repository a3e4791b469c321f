"""Flower TLS + SuperNode authentication in the orchestrator's ``round`` job (real SuperLink and SuperNodes, no chain).

The job carries the SuperLink's CA certificate to the nodes (heartbeat
replies show the job's data); the orchestrator registers exactly the SuperNode
keys its named nodes report. A SuperNode with a registered key connects over
TLS; one holding any other key is refused by the SuperLink; a malformed
report is never registered. Multi-host addressing: the SuperLink is
advertised at 127.0.0.2 (the orchestrator's configuration), listens only
there, and the nodes connect to the address the job carries. Marked slow: it
starts Flower processes.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from collab.fl.deployment import BIN_DIR, CONNECTION, FlowerDeployment, flower_env
from collab.fl.tls import node_auth_key
from collab.identity import Identity
from orchestrator.jobs import JobState, JobStore, step
from orchestrator.rounds import RoundJob

pytestmark = pytest.mark.slow

PASSPHRASE = "tls-test"


def _home(root: Path, name: str) -> tuple[Path, str, Path]:
    home = root / name
    home.mkdir(parents=True)
    me = Identity.create(home, PASSPHRASE, scrypt_n=2)
    data = home / "data.jsonl"
    data.write_text("".join(json.dumps({"text": f"{name} article {i}", "label": ("sport", "tech")[i % 2]}) + "\n"
                            for i in range(4)))
    return home, me.address.lower(), data


def _nodes(orchestrator_dir: Path) -> list[dict[str, Any]]:
    """The SuperLink's SuperNodes as ``flwr supernode list`` reports them (over its TLS Control API)."""
    done = subprocess.run([str(BIN_DIR / "flwr"), "supernode", "list", CONNECTION, "--format", "json"],
                          env=flower_env(orchestrator_dir / "flower"), capture_output=True, text=True, timeout=120)
    out = done.stdout[done.stdout.find("{"):]
    return json.loads(out)["nodes"] if out else []  # type: ignore[no-any-return]


def test_only_the_named_nodes_registered_keys_connect(tmp_path: Path) -> None:
    store, handler = JobStore(tmp_path / "jobs.db"), RoundJob(tmp_path / "orch", superlink_host="127.0.0.2")
    handlers: dict[str, Any] = {"round": handler}
    (alice, a, a_data), (bob, b, _), (mallory, _, m_data) = (_home(tmp_path, n) for n in ("alice", "bob", "mallory"))
    job, _ = store.create("round", {"participants": [a, b], "needs": [a, b], "submitter": a, "config": {}})
    nodes = FlowerDeployment(tmp_path / "nodes", port=1)
    try:
        assert step(store, handlers, store.get(job.id)).state == JobState.COLLECTING  # type: ignore[arg-type]
        data = store.get(job.id).data
        assert data["superlink_ca"].startswith("-----BEGIN CERTIFICATE-----") and data["superlink_port"]
        step(store, handlers, store.get(job.id))  # type: ignore[arg-type]  # the SuperLink starts (TLS, node auth)
        assert store.get(job.id).data["superlink_ready"] and data["superlink_address"] == "127.0.0.2"
        with pytest.raises(OSError):  # it listens where it is advertised, not on 127.0.0.1
            socket.create_connection(("127.0.0.1", int(data["superlink_port"])), timeout=2).close()

        public = node_auth_key(alice / "flower" / "auth")[1].read_text()  # what alice's node reports
        store.update_data(job.id, {f"r/{a}/auth_key": public, f"r/{b}/auth_key": "ssh-rsa not-a-key"})
        step(store, handlers, store.get(job.id))  # type: ignore[arg-type]
        data = store.get(job.id).data
        assert data[f"registered/{a}"] == public
        assert f"registered/{b}" not in data and data[f"auth_refused/{b}"] == "ssh-rsa not-a-key"

        ca = tmp_path / "ca-from-job.pem"
        ca.write_text(data["superlink_ca"])
        nodes.port, nodes.host = int(data["superlink_port"]), data["superlink_address"]  # as the nodes' TaskRunner
        good = nodes.add_participant(a, alice, a_data, passphrase=PASSPHRASE, superlink_ca=ca, register=False)
        rogue = nodes.add_participant("mallory", mallory, m_data, passphrase=PASSPHRASE, superlink_ca=ca, register=False)
        deadline = time.monotonic() + 240
        listed = _nodes(handler._dir(store.get(job.id)))
        while time.monotonic() < deadline and not any(n["status"] == "online" for n in listed):
            time.sleep(2)
            listed = _nodes(handler._dir(store.get(job.id)))
        assert [n["status"] for n in listed] == ["online"], (listed, good.tail(), rogue.tail())
        time.sleep(5)  # the rogue SuperNode had every chance to connect
        assert [n["status"] for n in _nodes(handler._dir(store.get(job.id)))] == ["online"], rogue.tail()
        assert good.proc.poll() is None
        assert rogue.proc.wait(timeout=120) != 0 and "Failed to activate SuperNode" in rogue.tail(60), rogue.tail(60)
    finally:
        nodes.stop()
        handler._stop(store.get(job.id))
        store.close()
