"""A ``round`` job on real processes: a node dies mid-round, the orchestrator is SIGKILLed and restarted.

The orchestrator (127.0.0.2) and three participant nodes run as ``collab``
processes; each node starts its Flower SuperNode when the job reaches it. One
node's whole process group is SIGKILLed once the round runs (a crashed host:
the node and its SuperNode) and the orchestrator is SIGKILLed right after and
restarted on the same port. The round completes with the two survivors, the
dead node is named among the dropped and gets nothing in the claim, and the
round's claim is posted exactly once. The round is a RoundRegistry round:
the nodes accept it, its creator's node fixes it, the survivors' nodes
BLS-consent to the record, and its finalization mints Receipts and Shares to
them only. p1's node starts without ``--data``: p1 joins with ``collab join``
through its node (the passphrase removed from the command's environment, so
only the node can sign; malformed data is refused first), and the node's
SuperNode trains on the data it joined with. Multi-host configuration: the
orchestrator binds 127.0.0.2, so its SuperLink is advertised (job data,
certificate) and listens there; the nodes connect from 127.0.0.3-5. The run
config the SuperLink hands to every SuperNode holds no orchestrator-local path.
Small config: the tiny encoder, 16 examples per participant.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from web3 import Web3

from chain.clients.asset_registry import AssetInput, AssetKind, AssetRegistryClient
from chain.clients.claim_manager import ClaimManagerClient
from chain.clients.identity_registry import IdentityRegistryClient
from chain.clients.receipts import ReceiptsClient
from chain.clients.round_registry import (
    RoundConfig,
    RoundRegistryClient,
    RoundStatus,
    epsilon_units,
    recover_update_receipt,
)
from chain.clients.shares import SharesClient
from collab.fl.data import iid_split, load_bbc_news, take, train_test_split
from collab.fl.receipts import receipt_path, receipts_dir
from conftest import increase_time
from orchestrator.client import NodeSocketClient
from orchestrator.rounds import job_task_hash
from test_claim_manager import GameEnv, game_env  # noqa: F401  (session fixture)
from test_merge_orchestrator import _partnership, _register
from test_orchestrator import COLLAB, _funded_registered, _start

pytestmark = pytest.mark.slow

NAMES = ("p0", "p1", "p2")


def _node(home: Path, endpoint: str, key: str, data: Path | None, source: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "COLLAB_PASSPHRASE": "pw"}
    proc = subprocess.Popen([*COLLAB, "--home", str(home), "node", "start", "--orchestrator", endpoint, "--orchestrator-key", key,
                             "--heartbeat", "0.5", "--source", source, *(["--data", str(data)] if data else []), *extra],
                            stdout=subprocess.PIPE, stderr=open(home / "node.log", "a"), text=True, env=env,
                            start_new_session=True)  # its own process group: killing it kills its SuperNode too
    assert proc.stdout is not None and proc.stdout.readline(), (home / "node.log").read_text()[-2000:]
    return proc


def _wait(api: NodeSocketClient, job_id: str, pred: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            job = api.request("job", id=job_id)
            if pred(job):
                return job  # type: ignore[no-any-return]
        except Exception:  # noqa: BLE001 - the orchestrator is restarting
            pass
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not reach the expected state within {timeout} s")


@pytest.fixture
def network(game_env: GameEnv, tmp_path: Path) -> Iterator[dict[str, Any]]:  # noqa: F811
    orch_home = tmp_path / "orch"
    orch_home.mkdir()
    orch_ident = _funded_registered(game_env.w3, game_env.deployment, orch_home, "round-orchestrator")
    game_env.deployment.save(orch_home / "deployment.json")
    train, _ = train_test_split(load_bbc_news(), 0.2, seed=0)
    shards = iid_split(take(train, 16 * len(NAMES), seed=3), len(NAMES), seed=4)
    homes, procs = {}, {}
    orch, info = _start(orch_home, "tcp://127.0.0.2:0")
    net: dict[str, Any] = {"orch_home": orch_home, "orch": orch, "info": info, "homes": homes, "procs": procs,
                           "idents": {"orch": orch_ident}}
    try:
        for i, (name, shard) in enumerate(zip(NAMES, shards)):
            home = tmp_path / name
            home.mkdir()
            ident = _funded_registered(game_env.w3, game_env.deployment, home, f"round-{name}")
            game_env.deployment.save(home / "deployment.json")
            data = home / "train.jsonl"
            data.write_text("".join(json.dumps({"text": t, "label": shard.classes[y]}) + "\n" for t, y in zip(shard.texts, shard.labels)))
            _adapter(home / "adapter.safetensors", len(homes))  # what the node contributes to merges
            homes[name] = (home, ident.address)
            net["idents"][name] = ident
            net.setdefault("data", {})[name] = data  # p1's node runs without --data: p1 joins with `collab join`
            extra: list[str] = []
            if name == "p1":  # p1's adapter is a vaulted asset its node names itself in merges
                net["p1_asset"], _ = _register(game_env, ident, home / "adapter.safetensors", vaulted=True)
                extra = ["--adapter-asset", str(net["p1_asset"])]
            procs[name] = _node(home, info["endpoint"], info["curve_key"], None if name == "p1" else data,
                                f"127.0.0.{3 + i}", *extra)
        yield net
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        net["orch"].send_signal(signal.SIGTERM)
        try:
            net["orch"].wait(15)
        except subprocess.TimeoutExpired:
            net["orch"].kill()
        for pid in net.get("orphans", []):  # flower processes of the killed orchestrator, if the job did not end them
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass


def test_round_survives_a_dead_node_and_a_sigkilled_orchestrator(network: dict[str, Any], game_env: GameEnv) -> None:  # noqa: F811
    homes, procs = network["homes"], network["procs"]
    api = NodeSocketClient(homes["p0"][0] / "node.sock", timeout=30)
    parts = [homes[n][1] for n in NAMES]
    config = {"model": "tiny", "num-rounds": 1, "max-len": 32, "epochs": 1, "batch-size": 8, "test-samples": 20,
              "round-timeout": 90.0, "node-wait": 30.0}
    round_id = _open_round(network, game_env, config)
    _join_through_the_node(homes["p1"][0], round_id, network["data"]["p1"])
    job = api.request("submit", kind="round", payload={"participants": parts, "config": config, "min_participants": 2,
                                                       "round_id": round_id}, needs=parts, timeout=300)["job"]
    running = _wait(api, job["id"], lambda j: j["state"] == "computing" and j["data"].get("run_pid"), 240)
    network["orphans"] = [running["data"]["run_pid"], running["data"]["superlink_pid"]]

    os.killpg(procs["p2"].pid, signal.SIGKILL)  # p2's host dies mid-round: node and SuperNode at once
    procs["p2"].wait(10)
    network["orch"].send_signal(signal.SIGKILL)  # and the orchestrator with it
    network["orch"].wait(10)
    port = network["info"]["endpoint"].rsplit(":", 1)[1]
    network["orch"], _ = _start(network["orch_home"], f"tcp://127.0.0.2:{port}")  # same home, same port

    done = _wait(api, job["id"], lambda j: j["state"] in ("claimed", "challenged", "finalized", "failed"), 600)
    assert done["state"] in ("claimed", "finalized"), done.get("error")
    data = done["data"]
    p2 = homes["p2"][1].lower()
    assert sorted(data["participants"]) == sorted(homes[n][1].lower() for n in ("p0", "p1"))
    assert p2 not in data["participants"] and p2 not in data["examples"]  # the dead node gets nothing
    assert len(data["participants"]) == 2  # min_participants remained: the round completed without it
    # Exactly one claim for this round on chain, even though the orchestrator died in the middle.
    manager = ClaimManagerClient.from_deployment(game_env.deployment, game_env.w3)
    claim_id = bytes.fromhex(data["claim_id"][2:])
    posted = [p for p in manager.posted(from_block=game_env.deployment.deploy_block) if p.claim_id == claim_id]
    assert len(posted) == 1 and posted[0].claimer == network["info"]["address"]
    assert not any(_alive(pid) for pid in network["orphans"])  # the restarted orchestrator ended the old Flower run
    # Flower ran with TLS (the CA travelled in the job) and authenticated SuperNodes (each named node's key registered),
    # its SuperLink at the orchestrator's configured address; the run config all SuperNodes got has no orchestrator path.
    assert data["superlink_ca"].startswith("-----BEGIN CERTIFICATE-----") and data["superlink_address"] == "127.0.0.2"
    _assert_no_orchestrator_paths(network["orch_home"], job["id"], network["info"]["address"])
    assert all(data[f"registered/{homes[n][1].lower()}"] == data[f"r/{homes[n][1].lower()}/auth_key"] for n in NAMES)
    # Every included participant's node kept the aggregator's receipt for its final-round update; the dead one none.
    rr = RoundRegistryClient.from_deployment(game_env.deployment, game_env.w3)
    for name in ("p0", "p1"):
        kept = json.loads(receipt_path(homes[name][0], round_id, 1).read_text())
        assert recover_update_receipt(bytes.fromhex(kept["signature"][2:]), game_env.w3.eth.chain_id, rr.address, round_id,
                                      homes[name][1], 1, bytes.fromhex(kept["update_commitment"][2:]),
                                      kept["epsilon"]) == network["info"]["address"]
    assert not list(receipts_dir(homes["p2"][0]).glob("*.json")) if receipts_dir(homes["p2"][0]).exists() else True
    # `collab round status` in p1's home reads the job through p1's node: rounds done, accuracy, ε per participant.
    shown = subprocess.run([*COLLAB, "--home", str(homes["p1"][0]), "--json", "round", "status", str(round_id)],
                           env={**os.environ, "COLLAB_PASSPHRASE": "pw"}, capture_output=True, text=True, timeout=180)
    assert shown.returncode == 0, shown.stderr[-2000:]
    status = json.loads(shown.stdout.strip().splitlines()[-1])
    assert status["progress"]["source"] == "node" and status["progress"]["job_id"] == job["id"]
    assert status["progress"]["rounds_done"] == 1 and status["progress"]["accuracy"] == data["accuracy"]
    spent = {p["account"].lower(): p["epsilon_spent"] for p in status["participants"]}
    assert all(spent[a] == pytest.approx(data["epsilon"][a], abs=1e-6) for a in data["participants"]) and spent[p2] is None

    # RoundRegistry: fixed with all three, recorded with the survivors' consent, minted only at finalization.
    registry = RoundRegistryClient.from_deployment(game_env.deployment, game_env.w3)
    assert data["record_submitted"] and registry.get_round(round_id).status == RoundStatus.RECORDED
    assert registry.round_of_claim(claim_id) == round_id
    assert sorted(a.lower() for a in registry.included_of(round_id)) == sorted(data["participants"])
    receipts = ReceiptsClient.from_deployment(game_env.deployment, game_env.w3)
    assert all(receipts.receipts_of(homes[n][1]) == [] for n in NAMES)
    increase_time(game_env.w3, manager.params_of(claim_id).challenge_window + 1)
    final = _wait(api, job["id"], lambda j: j["state"] in ("finalized", "rejected", "failed"), 120)
    assert final["state"] == "finalized", final.get("error")
    asset = final["data"]["settled_asset"]
    assert asset and asset == registry.settled_asset(claim_id)
    shares = SharesClient.from_deployment(game_env.deployment, game_env.w3)
    record = final["data"]["record"]
    creator, amounts = registry.share_split(shares.total_supply(asset), 1_000, record["weights"])
    for account, weight, amount in zip(record["participants"], record["weights"], amounts, strict=True):
        extra = creator if account.lower() == homes["p0"][1].lower() else 0  # p0 opened the round: its 10 % too
        assert shares.balance_of(account, asset) == amount + extra and amount > 0
        assert [receipts.receipt(t).weight for t in receipts.receipts_of(account)] == [weight]
    assert receipts.receipts_of(homes["p2"][1]) == [] and shares.balance_of(homes["p2"][1], asset) == 0


def _join_through_the_node(home: Path, round_id: int, data: Path) -> None:
    """``collab join`` in p1's home without the passphrase: only its node can sign, so success means routed."""
    env = {k: v for k, v in os.environ.items() if k != "COLLAB_PASSPHRASE"}

    def join(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*COLLAB, "--home", str(home), "--json", "join", str(round_id), "--data", str(path)],
                              env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)

    bad = home / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "sport"}\n{"text": 3\n')
    refused = join(bad)  # with --json the error is one JSON object on stdout
    error = json.loads(refused.stdout.strip())
    assert refused.returncode == 2 and error["error"] == "BadInput" and "bad.jsonl" in error["message"], refused
    assert "Traceback" not in refused.stderr
    done = join(data)
    assert done.returncode == 0, done.stderr[-2000:]
    joined = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(joined) == {"round_id", "data", "samples", "classes", "dataset_asset", "joined_at", "registered_dataset", "tx"}
    assert joined["round_id"] == round_id and joined["samples"] == 16 and joined["data"] == str(data.resolve())
    assert joined["registered_dataset"] and joined["tx"]
    assert json.loads((home / "rounds" / f"{round_id}.json").read_text())["data"] == str(data.resolve())
    assert "registering train.jsonl as a dataset asset" in (home / "node.log").read_text()  # the node did it


def _assert_no_orchestrator_paths(orch_home: Path, job_id: str, aggregator: str) -> None:
    """The run configs the job's SuperLink stored (what it sends every SuperNode) name no orchestrator path."""
    db = orch_home / "rounds" / job_id[2:18] / "flower" / "superlink.db"
    with sqlite3.connect(db) as conn:
        configs = [json.loads(row[0]) for row in conn.execute("SELECT override_config FROM run")]
    assert configs
    for config in configs:
        assert not {"result-path", "aggregator-home"} & set(config) and config["server-run"]
        assert config["aggregator"] == aggregator  # the receipt settings are there, the aggregator's home is not
        assert str(orch_home) not in json.dumps(config) and not any("/" in str(v) for v in config.values()), config


def _open_round(network: dict[str, Any], game_env: GameEnv, config: dict[str, Any]) -> int:  # noqa: F811
    """The orchestrator gets the aggregator role; p0 registers a base model and opens a round naming it."""
    w3, dep, idents = game_env.w3, game_env.deployment, network["idents"]
    ids = IdentityRegistryClient.from_deployment(dep, w3, game_env.admin)
    ids.grant_aggregator(ids.id_of(idents["orch"].address))
    creator = idents["p0"].account
    base = AssetRegistryClient.from_deployment(dep, w3, creator).register(
        AssetInput(AssetKind.MODEL, Web3.keccak(text="node-round base"))).asset_id
    now = int(w3.eth.get_block("latest")["timestamp"])
    return RoundRegistryClient.from_deployment(dep, w3, creator).create_round(RoundConfig(
        base, 1, [ids.id_of(idents[n].address) for n in NAMES], 2, epsilon_units(50.0), 10**13, now + 3600, 1_000,
        job_task_hash(config), idents["orch"].address)).round_id


def _adapter(path: Path, seed: int) -> None:
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    save_file({"lora_A": torch.randn(4, 8, generator=g), "lora_B": torch.randn(8, 4, generator=g)}, str(path))


def test_merge_job_survives_a_sigkilled_orchestrator_with_one_claim(network: dict[str, Any], game_env: GameEnv) -> None:  # noqa: F811
    homes = network["homes"]
    api = NodeSocketClient(homes["p0"][0] / "node.sock", timeout=30)
    parts = [homes[n][1] for n in ("p0", "p1")]
    # Both adapters are assets licensed to the orchestrator. The job names p0's (a plain file); p1's node
    # names its own (`--adapter-asset`), which lives in its home's vault, so it uploads the vault blob with
    # its key (the orchestrator checks both against the asset on-chain).
    p0_asset, _ = _register(game_env, network["idents"]["p0"], homes["p0"][0] / "adapter.safetensors", vaulted=False)
    assets = [p0_asset, network["p1_asset"]]
    for n, asset_id in zip(("p0", "p1"), assets):
        _partnership(game_env, network["idents"][n], asset_id, network["idents"]["orch"])
    payload = {"participants": parts, "method": "linear", "assets": [p0_asset, 0]}
    job = api.request("submit", kind="merge", payload=payload, needs=parts, timeout=120)["job"]
    _wait(api, job["id"], lambda j: j["state"] not in ("created", "collecting"), 120)
    network["orch"].send_signal(signal.SIGKILL)  # somewhere between computing and posting
    network["orch"].wait(10)
    port = network["info"]["endpoint"].rsplit(":", 1)[1]
    network["orch"], _ = _start(network["orch_home"], f"tcp://127.0.0.2:{port}")
    done = _wait(api, job["id"], lambda j: j["state"] in ("claimed", "finalized", "failed"), 180)
    assert done["state"] in ("claimed", "finalized"), done.get("error")
    manager = ClaimManagerClient.from_deployment(game_env.deployment, game_env.w3)
    claim_id = bytes.fromhex(done["data"]["claim_id"][2:])
    assert [p.claim_id for p in manager.posted(from_block=game_env.deployment.deploy_block)].count(claim_id) == 1
    assert Path(done["data"]["merged_path"]).is_file() and done["data"]["parents"] == assets


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
