"""The orchestrator as a real process on loopback: hostile requests, Sahara ID checks, heartbeats, claim jobs, SIGKILL.

The orchestrator listens on 127.0.0.2 and clients connect from 127.0.0.3 (a
ZMQ source address), the multi-host configuration on one machine. Its home
has a real keystore and a registered Sahara ID whose CurveZMQ key clients pin.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain.clients.claim_manager import ClaimManagerClient
from chain.clients.identity_registry import IdentityRegistryClient, Keys
from chain.deployment import Deployment
from collab.errors import BadInput, ProtocolViolation, Unauthorized, Unavailable
from collab.identity import Identity
from orchestrator.claims import claim_to_json
from orchestrator.client import OrchestratorClient
from test_claim_manager import GameEnv, game_env  # noqa: F401  (session fixture)

ROOT = Path(__file__).resolve().parents[1]
COLLAB = [sys.executable, "-m", "collab.cli"] if not (ROOT / ".venv/bin/collab").exists() else [str(ROOT / ".venv/bin/collab")]


@dataclass
class Orch:
    home: Path
    ident: Identity
    info: dict[str, Any]
    proc: subprocess.Popen[str]

    def client(self, account: LocalAccount, *, key: bytes | None = None, timeout: float = 10.0) -> OrchestratorClient:
        host, port = self.info["endpoint"].removeprefix("tcp://").rsplit(":", 1)
        return OrchestratorClient(f"tcp://127.0.0.3:0;{host}:{port}", key or self.info["curve_key"].encode(), account,
                                  chain_id=self.info["chain_id"], orchestrator=self.info["address"], timeout=timeout)

    def job_state(self, job_id: str) -> str | None:
        with sqlite3.connect(self.home / "jobs.db", timeout=10) as db:
            row = db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
        return row[0] if row else None


def _start(home: Path, bind: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    env = {**os.environ, "COLLAB_PASSPHRASE": "pw"}
    proc = subprocess.Popen([*COLLAB, "--home", str(home), "orchestrator", "start", "--bind", bind, "--heartbeat-timeout", "1.5"],
                            stdout=subprocess.PIPE, stderr=open(home / "orchestrator.log", "a"), text=True, env=env)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        proc.wait(10)
        raise AssertionError(f"orchestrator did not start: {(home / 'orchestrator.log').read_text()[-2000:]}")
    return proc, json.loads(line)


def _funded_registered(w3: Web3, deployment: Deployment, home: Path, name: str) -> Identity:
    ident = Identity.create(home, "pw", scrypt_n=2**12)
    w3.provider.make_request("anvil_setBalance", [ident.address, hex(10**22)])  # type: ignore[arg-type]
    registry = IdentityRegistryClient.from_deployment(deployment, w3, ident.account)
    keys = ident.registry_keys(deployment.chain_id, registry.address)
    registry.register(name, "human", Keys(*keys))
    return ident


@pytest.fixture(scope="module")
def orch(game_env: GameEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orch]:  # noqa: F811
    home = tmp_path_factory.mktemp("orch-home")
    ident = _funded_registered(game_env.w3, game_env.deployment, home, "orchestrator")
    game_env.deployment.save(home / "deployment.json")
    proc, info = _start(home, "tcp://127.0.0.2:0")
    o = Orch(home, ident, info, proc)
    yield o
    o.proc.send_signal(signal.SIGTERM)
    try:
        o.proc.wait(10)
    except subprocess.TimeoutExpired:
        o.proc.kill()


@pytest.fixture(scope="module")
def member(game_env: GameEnv) -> LocalAccount:  # noqa: F811
    return game_env.claimer  # has a Sahara ID


def test_pinned_key_and_signed_ping(orch: Orch, member: LocalAccount) -> None:
    assert orch.info["endpoint"].startswith("tcp://127.0.0.2:")
    assert orch.ident.curve_public_z85.decode() == orch.info["curve_key"]
    got = orch.client(member).request("ping")
    assert got["pong"] is True and got["identity_id"] > 0
    impostor_key = orch.client(member, timeout=1.5)
    impostor_key.server_key = b"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"  # a different server's public key
    with pytest.raises(Unavailable, match="no reply"):
        impostor_key.request("ping")


def test_hostile_requests_get_error_replies_and_the_server_keeps_serving(orch: Orch, member: LocalAccount) -> None:
    c = orch.client(member)
    req = c.signed({"op": "ping", "rid": "r1"})
    assert c.send_raw(json.dumps(req).encode(), "r1")["ok"] is True
    replay = c.send_raw(json.dumps(req).encode(), "r1")
    assert not replay["ok"] and replay["error"] == "Unauthorized" and "replayed" in replay["message"]

    forged = c.signed({"op": "ping", "rid": "r2"})
    forged["envelope"]["sender"] = Account.create().address
    assert c.send_raw(json.dumps(forged).encode(), "r2")["error"] == "Unauthorized"

    expired = c.signed({"op": "ping", "rid": "r3"}, ttl=-5)
    assert "expired" in c.send_raw(json.dumps(expired).encode(), "r3")["message"]

    unsigned = c.signed({"op": "ping", "rid": "r4"})
    unsigned["signature"] = ""
    assert "not signed" in c.send_raw(json.dumps(unsigned).encode(), "r4")["message"]

    big = c.signed({"op": "ping", "rid": "r5", "pad": "x" * 300_000})
    reply = c.send_raw(json.dumps(big).encode())
    assert reply["error"] == "BadInput" and "exceeds" in reply["message"]

    for junk in (b"", b"\xff\xfe", b"[1,2", b"{}", b"null", b'{"payload": {"op": "ping"}}'):
        bad = c.send_raw(junk)
        assert bad["ok"] is False and bad["error"] in ("BadInput", "Unauthorized"), junk

    with pytest.raises(BadInput, match="unknown op"):
        c.request("fly")
    with pytest.raises(BadInput, match="unknown job kind"):
        c.request("submit", kind="teleport", payload={})
    with pytest.raises(BadInput, match="malformed claim"):
        c.request("submit", kind="claim", payload={"claim": {"job_id": "0x12"}})
    for bad_fields in ({"needs": "everyone"}, {"timeout": "soon"}, {"timeout": -1}):
        with pytest.raises(BadInput, match="needs must be"):
            c.request("submit", kind="claim", payload={"claim": {}}, **bad_fields)
    with pytest.raises(BadInput, match="heartbeat info"):
        c.request("heartbeat", info=[1, 2])
    assert c.request("ping")["pong"] is True  # still serving


def test_unknown_sahara_id_is_refused(orch: Orch) -> None:
    with pytest.raises(Unauthorized, match="no active Sahara ID"):
        orch.client(Account.create()).request("ping")


def test_silent_node_is_marked_away_and_a_job_needing_it_times_out(orch: Orch, member: LocalAccount, game_env: GameEnv) -> None:  # noqa: F811
    c = orch.client(member)
    c.request("heartbeat", endpoint="tcp://127.0.0.3:7000")
    nodes = {n["address"]: n for n in c.request("nodes")}
    assert nodes[member.address]["status"] == "online"
    ghost = Account.create().address
    claim = claim_to_json(game_env.claimer_agent().claim_input())
    job = c.request("submit", kind="claim", payload={"claim": claim}, needs=[member.address, ghost], timeout=2)["job"]
    deadline = time.time() + 15
    while (state := c.request("job", id=job["id"]))["state"] not in ("failed",) and time.time() < deadline:
        time.sleep(0.3)
    assert state["state"] == "failed" and ghost in state["error"] and "away" in state["error"]
    time.sleep(1.6)
    assert {n["address"]: n for n in c.request("nodes")}[member.address]["status"] == "away"


def _claim_posted_count(w3: Web3, manager: ClaimManagerClient, claim_id: str) -> int:
    event = manager.contract.events.ClaimPosted
    logs = event.get_logs(from_block=0)
    return sum(1 for e in logs if "0x" + bytes(e["args"]["claimId"]).hex() == claim_id)


def _wait(orch: Orch, job_id: str, states: set[str], timeout: float = 30) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = orch.job_state(job_id)
        if state in states:
            return state
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} stuck in {orch.job_state(job_id)}; wanted {states}")


@pytest.mark.slow
def test_claim_job_resumes_after_sigkill_and_never_double_posts(
    orch: Orch, member: LocalAccount, game_env: GameEnv, chain_snapshot: str, time_travel: Callable[[int], int],  # noqa: F811
) -> None:
    c = orch.client(member)
    manager = ClaimManagerClient.from_deployment(game_env.deployment, game_env.w3, orch.ident.account)
    # A claim whose post "already happened" before a crash could record it: the job must dedup, not fail.
    pre = game_env.claimer_agent().claim_input()
    manager.post_claim(pre)
    dedup = c.request("submit", kind="claim", payload={"claim": claim_to_json(pre)})["job"]
    fresh_input = game_env.claimer_agent().claim_input()
    fresh = c.request("submit", kind="claim", payload={"claim": claim_to_json(fresh_input)})["job"]
    assert c.request("submit", kind="claim", payload={"claim": claim_to_json(fresh_input)})["created"] is False

    _wait(orch, fresh["id"], {"computed", "claimed"})
    orch.proc.send_signal(signal.SIGKILL)  # mid-job: around the posting step
    orch.proc.wait(10)
    old = c.signed({"op": "ping", "rid": "before-restart"})
    orch.proc, orch.info = _start(orch.home, orch.info["endpoint"])
    c = orch.client(member)
    _wait(orch, fresh["id"], {"claimed"})
    _wait(orch, dedup["id"], {"claimed"})
    c.send_raw(json.dumps(old).encode(), "before-restart")
    again = c.send_raw(json.dumps(old).encode(), "before-restart")
    assert "replayed" in again["message"]  # the nonce store survived the restart too

    window = manager.params_of(bytes.fromhex(fresh_input.claim_id.hex())).challenge_window
    time_travel(window + 10)
    assert _wait(orch, fresh["id"], {"finalized", "failed"}) == "finalized"
    assert _wait(orch, dedup["id"], {"finalized", "failed"}) == "finalized"
    shown = c.request("job", id=dedup["id"])
    assert shown["data"].get("post_dedup") is True and shown["data"]["claim_id"] == "0x" + pre.claim_id.hex()
    for cid in (pre.claim_id, fresh_input.claim_id):
        assert _claim_posted_count(game_env.w3, manager, "0x" + cid.hex()) == 1


def test_only_the_submitter_cancels(orch: Orch, member: LocalAccount, game_env: GameEnv) -> None:  # noqa: F811
    c = orch.client(member)
    claim = claim_to_json(game_env.claimer_agent().claim_input())
    job = c.request("submit", kind="claim", payload={"claim": claim}, needs=[Account.create().address], timeout=60)["job"]
    with pytest.raises(Unauthorized, match="submitter"):
        orch.client(orch.ident.account).request("cancel", id=job["id"])
    assert c.request("cancel", id=job["id"])["state"] == "cancelled"
    with pytest.raises(ProtocolViolation, match="already cancelled"):
        c.request("cancel", id=job["id"])


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLLAB_PASSPHRASE": "pw"}
    return subprocess.run([*COLLAB, "--home", str(home), *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.slow
def test_node_local_api_status_and_jobs_cli(orch: Orch, game_env: GameEnv, tmp_path_factory: pytest.TempPathFactory) -> None:  # noqa: F811
    home = tmp_path_factory.mktemp("node-home")
    node_ident = _funded_registered(game_env.w3, game_env.deployment, home, "node-a")
    game_env.deployment.save(home / "deployment.json")
    assert _cli(home, "node", "status").returncode == 5  # nothing running yet
    both = _cli(home, "node", "start", "--orchestrator-key", "x" * 40, "--orchestrator-id", "1")
    assert both.returncode == 2 and "exactly one" in both.stderr
    wrong_id = _cli(home, "node", "start", "--orchestrator", orch.info["endpoint"], "--timeout", "2", "--orchestrator-id",
                    str(IdentityRegistryClient.from_deployment(game_env.deployment, game_env.w3).id_of(game_env.claimer.address)))
    assert wrong_id.returncode != 0 and "Traceback" not in wrong_id.stderr  # that ID's key is not the server's
    env = {**os.environ, "COLLAB_PASSPHRASE": "pw"}
    proc = subprocess.Popen(
        [*COLLAB, "--home", str(home), "node", "start", "--orchestrator", orch.info["endpoint"],
         "--orchestrator-id", str(orch.info["identity_id"]), "--source", "127.0.0.3", "--heartbeat", "0.3"],
        stdout=subprocess.PIPE, stderr=open(home / "node.log", "w"), text=True, env=env)
    try:
        ready = json.loads(proc.stdout.readline() if proc.stdout else "")
        assert ready["orchestrator"] == orch.info["address"] and (home / "node.sock").exists()
        assert oct((home / "node.sock").stat().st_mode & 0o777) == "0o600"
        time.sleep(0.8)
        status = json.loads(_cli(home, "--json", "node", "status").stdout)
        assert status["connected"] is True and status["address"] == node_ident.address
        assert status["orchestrator_address"] == orch.info["address"] and status["vault_entries"] == 0

        from orchestrator.client import NodeSocketClient

        api = NodeSocketClient(home / "node.sock")
        from collab.vault import Vault

        Vault(home / "vault", owner=node_ident.x25519_public).put(b"weights")
        assert [e["plaintext_size"] for e in api.request("vault")] == [7]
        with pytest.raises(BadInput, match="unknown node op"):
            api.request("format-disk")
        claim = claim_to_json(game_env.claimer_agent().claim_input())
        job = api.request("submit", kind="claim", payload={"claim": claim}, needs=[Account.create().address], timeout=60)["job"]
        listed = json.loads(_cli(home, "jobs", "list", "--json").stdout)["jobs"]
        assert job["id"] in {j["id"] for j in listed}
        shown = json.loads(_cli(home, "--json", "jobs", "show", job["id"]).stdout)
        assert shown["state"] == "created" and shown["payload"]["submitter"] == node_ident.address
        assert json.loads(_cli(home, "--json", "jobs", "cancel", job["id"]).stdout)["state"] == "cancelled"
        again = _cli(home, "jobs", "cancel", job["id"])
        assert again.returncode == 6 and again.stderr.startswith("error:") and "Traceback" not in again.stderr
        missing = _cli(home, "jobs", "show", "0xdead")
        assert missing.returncode == 3 and "no job" in missing.stderr
        human = _cli(home, "node", "status")
        assert human.returncode == 0 and node_ident.address in human.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert not (home / "node.sock").exists()
    assert _cli(home, "node", "status").returncode == 5
    time.sleep(1.6)  # the orchestrator's heartbeat timeout in these tests is 1.5 s
    nodes = {n["address"]: n for n in orch.client(game_env.claimer).request("nodes")}
    assert nodes[node_ident.address]["status"] == "away" and nodes[node_ident.address]["endpoint"] == "127.0.0.3"


@pytest.mark.slow
def test_load_benchmark_runs_bounded_and_loses_nothing(tmp_path: Path) -> None:
    from benchmarks.orchestrator import run

    res = run(results_dir=tmp_path, clients=3, duration=1.5)
    assert res["lost"] == 0 and res["ok"] > 10 and res["sent"] == res["ok"]
    assert (tmp_path / "orchestrator.json").exists() and (tmp_path / "orchestrator.png").exists()
    assert res["latency_ms"]["p50"] <= res["latency_ms"]["p99"]
