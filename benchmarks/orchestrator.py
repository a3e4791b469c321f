"""Orchestrator load: N clients sending signed requests over CurveZMQ on loopback for a bounded time.

The real server (``orchestrator.server``: CurveZMQ, EIP-712 envelope check,
Sahara ID check against a real anvil with the TTL cache, SQLite nonce store)
runs in this process; the clients run in a separate process (closed loop: a
client sends its next request when the previous reply arrived) so they do not
share the server's interpreter lock. Every request's latency is recorded; a
request without an ``ok`` reply within the client timeout counts as lost.
Targets: at least 100 req/s, p99 < 200 ms, none lost.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
from eth_account import Account
from rich.console import RenderableType

from benchmarks import report
from chain.anvil import AnvilProcess, dev_account
from chain.client import connect
from chain.clients.identity_registry import IdentityRegistryClient
from chain.deploy import deploy_all
from collab import bls
from orchestrator.client import OrchestratorClient
from orchestrator.jobs import JobStore
from orchestrator.server import IdentityCache, OrchestratorServer

SUITE = "orchestrator"
CLIENTS = 20
DURATION = 10.0
TARGET_RPS = 100.0
TARGET_P99_MS = 200.0
Log = Callable[[str], None]


def _client_worker(endpoint: str, server_key: bytes, keys: list[bytes], chain_id: int, orchestrator: str,
                   duration: float, out: Any) -> None:
    """Run one closed-loop client per key in threads; put (latencies_ms, sent, lost) on ``out``."""
    lat: list[float] = []
    counts = {"sent": 0, "lost": 0}
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def loop(key: bytes) -> None:
        client = OrchestratorClient(endpoint, server_key, Account.from_key(key), chain_id=chain_id,
                                    orchestrator=orchestrator, timeout=5.0)
        mine: list[float] = []
        sent = lost = 0
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            sent += 1
            try:
                client.request("ping")
                mine.append((time.perf_counter() - t0) * 1000)
            except Exception:
                lost += 1
        client.close()
        with lock:
            lat.extend(mine)
            counts["sent"] += sent
            counts["lost"] += lost

    threads = [threading.Thread(target=loop, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((lat, counts["sent"], counts["lost"]))


def run(results_dir: Path | str | None = None, log: Log | None = None, *, clients: int = CLIENTS,
        duration: float = DURATION) -> dict[str, Any]:
    """Run the load on a fresh anvil; write ``orchestrator.json`` and ``.png``; return the results."""
    say = log or (lambda _m: None)
    out_dir = report.results_dir(results_dir)
    node = AnvilProcess()
    with node, tempfile.TemporaryDirectory() as tmp:
        w3 = connect(node.rpc_url)
        say(f"anvil on {node.rpc_url}; deploying")
        deployment = deploy_all(w3, dev_account(0), rpc_url=node.rpc_url)
        keys = [Account.create().key for _ in range(clients)]
        say(f"registering {clients} Sahara IDs")
        for i, key in enumerate(keys):
            acct = Account.from_key(key)
            w3.provider.make_request("anvil_setBalance", [acct.address, hex(10**21)])  # type: ignore[arg-type]
            registry = IdentityRegistryClient.from_deployment(deployment, w3, acct)
            registry.register(f"bench-{i}", "human", registry.keys_for(bls.keygen(key), b"\x0c" * 32, b"\x0d" * 32))
        server_public, server_secret = zmq.curve_keypair()
        orch_account = dev_account(1)
        server = OrchestratorServer(
            store=JobStore(Path(tmp) / "jobs.db"), address=orch_account.address, chain_id=deployment.chain_id,
            curve_secret=server_secret, curve_public=server_public,
            identities=IdentityCache(IdentityRegistryClient.from_deployment(deployment, w3)), handlers={},
            bind="tcp://127.0.0.1:0",
        )
        serving = threading.Thread(target=server.serve_forever, daemon=True)
        serving.start()
        say(f"{clients} clients for {duration:.0f} s against {server.endpoint}")
        queue: Any = mp.get_context("spawn").Queue()
        worker = mp.get_context("spawn").Process(
            target=_client_worker,
            args=(server.endpoint, server_public, keys, deployment.chain_id, orch_account.address, duration, queue),
        )
        started = time.monotonic()
        worker.start()
        latencies, sent, lost = queue.get(timeout=duration + 120)
        worker.join(30)
        elapsed = time.monotonic() - started
        server.stop()
        serving.join(10)
    latencies.sort()
    ok = len(latencies)
    # the client process's spawn time is inside ``elapsed``: the rate is a lower bound
    rps = ok / duration
    p = (lambda q: latencies[min(ok - 1, int(q * ok))] if ok else float("nan"))
    results: dict[str, Any] = {
        "suite": SUITE, "created_at": report.utc_now(), "machine": report.machine_facts(),
        "versions": report.package_versions(["pyzmq", "eth-account", "web3"]),
        "method": (f"{clients} closed-loop clients (threads of one separate process) sending EIP-712 signed ping "
                   f"requests over CurveZMQ on loopback for {duration:.0f} s; server checks signature, Sahara ID "
                   "(on-chain, 10 s cache) and nonce (SQLite WAL) per request"),
        "clients": clients, "duration_s": duration, "wall_s": round(elapsed, 2),
        "sent": sent, "ok": ok, "lost": lost, "rps": round(rps, 1),
        "latency_ms": {"p50": round(p(0.50), 2), "p90": round(p(0.90), 2), "p99": round(p(0.99), 2),
                       "max": round(latencies[-1], 2) if ok else None,
                       "mean": round(statistics.fmean(latencies), 2) if ok else None},
        "targets": {"rps": TARGET_RPS, "p99_ms": TARGET_P99_MS, "lost": 0},
    }
    results["meets_targets"] = bool(rps >= TARGET_RPS and p(0.99) < TARGET_P99_MS and lost == 0)
    return report.publish(out_dir, SUITE, results, lambda png: plot(results, latencies, png), say)


def plot(results: dict[str, Any], latencies: list[float], path: Path) -> Path:
    """Latency histogram with the percentile marks and the p99 target."""
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    if latencies:
        ax.hist(latencies, bins=60, color="#4c72b0")
    for name, value in results["latency_ms"].items():
        if name in ("p50", "p99") and value == value:
            ax.axvline(value, linestyle="--", color="#333333")
            ax.text(value, ax.get_ylim()[1] * 0.9, f" {name} {value} ms", fontsize=8)
    ax.axvline(TARGET_P99_MS, color="#c44e52", label="p99 target")
    ax.set_xlabel("request latency (ms)")
    ax.set_ylabel("requests")
    ax.set_title(f"orchestrator: {results['clients']} clients, {results['rps']} req/s, lost {results['lost']}")
    ax.legend()
    return report.save_figure(fig, path)


def render(results: dict[str, Any]) -> RenderableType:
    lat = results["latency_ms"]
    return report.table("orchestrator load", ["metric", "value"], [
        ["clients", results["clients"]], ["requests ok", results["ok"]], ["lost", results["lost"]],
        ["req/s", results["rps"]], ["p50 ms", lat["p50"]], ["p99 ms", lat["p99"]], ["max ms", lat["max"]],
        ["meets targets", results["meets_targets"]],
    ])


if __name__ == "__main__":
    import sys

    res = run(log=lambda m: print(m, file=sys.stderr))
    report.print_renderable(render(res))
