"""The participant node: one process per home, between user commands and the orchestrator.

User commands never hold a ZMQ link or the unlocked keys themselves: they send
JSON lines to the node's Unix socket (``node.sock``, mode 0600, so only the
home's owner can use it), and the node signs and forwards what needs the
orchestrator. A heartbeat thread keeps the orchestrator's view of this node
fresh and records whether the orchestrator is reachable, for ``node status``;
the heartbeat reply lists the jobs this node takes part in, which the
:class:`~orchestrator.workers.TaskRunner` acts on. With a chain connection the
node also runs its blob server and watcher (:class:`~orchestrator.workers.ClaimWorkers`)
and serves ``infer`` (the client's side of a routed secure inference),
``challenge``, ``games`` and the claims, merge and round-join operations of
:mod:`orchestrator.local_ops` for the user commands (a joined round's data
path is kept in the home, and the task runner's SuperNode trains on it).
"""

from __future__ import annotations

import json
import logging
import os
import socketserver
import threading
import time
from pathlib import Path
from typing import Any

from collab.errors import BadInput, CollabError, InternalError, Unavailable
from collab.vault import Vault
from orchestrator import local_ops
from orchestrator.client import OrchestratorClient
from orchestrator.workers import ClaimWorkers, NodeChain, TaskRunner

log = logging.getLogger("collab.node")

FORWARDED = {"jobs", "job", "cancel", "submit", "nodes", "ping"}


class Node:
    """State shared by the local API handlers and the heartbeat thread."""

    def __init__(self, client: OrchestratorClient, socket_path: Path, *, endpoint: str = "",
                 heartbeat_interval: float = 1.0, vault: Vault | None = None, chain: NodeChain | None = None,
                 data: Path | None = None, adapter: Path | None = None, adapter_asset: int | None = None,
                 release_escrow: bool = True) -> None:
        self.client, self.socket_path, self.endpoint = client, Path(socket_path), endpoint
        self.vault, self.chain = vault, chain
        self.chain_lock = threading.Lock()  # one account: the watcher and metering never race for its nonce
        self.claims: ClaimWorkers | None = None
        self.keys: Any = None  # orchestrator.key_delivery.KeyDelivery: Full-access keys of this account's assets
        self.release_escrow = release_escrow
        self.tasks = TaskRunner(self, data=data, adapter=adapter, adapter_asset=adapter_asset) if chain is not None else None
        self.orchestrator_blob_url = ""
        self._peers: tuple[float, list[str]] = (0.0, [])
        self.heartbeat_interval = heartbeat_interval
        self._lock = threading.Lock()  # one ZMQ socket, many API threads
        self._stop = threading.Event()
        self.started = time.time()
        self.last_ok: float | None = None
        self.last_error: str | None = None
        self._server: socketserver.ThreadingUnixStreamServer | None = None

    def forward(self, op: str, **fields: Any) -> Any:
        with self._lock:
            return self.client.request(op, **fields)

    def status(self) -> dict[str, Any]:
        now = time.time()
        connected = self.last_ok is not None and now - self.last_ok < 3 * self.heartbeat_interval + 1
        return {"address": self.client.account.address, "orchestrator": self.client.endpoint.split(";")[-1],
                "orchestrator_address": self.client.orchestrator, "chain_id": self.client.chain_id,
                "connected": connected, "last_heartbeat": self.last_ok, "last_error": self.last_error,
                "uptime": round(now - self.started, 1),
                "vault_entries": len(self.vault.list()) if self.vault is not None else None, "socket": str(self.socket_path), "pid": os.getpid(),
                "blob_url": self.claims.blob_url if self.claims else None,
                "deployment": str(self.chain.settings.deployment_path) if self.chain else None,
                "rpc_url": self.chain.settings.rpc_url if self.chain else None,
                "workers": {"watcher": self.claims is not None, "tasks": self.tasks is not None, "key_delivery": self.keys is not None,
                            "supernodes": sorted(self.tasks.supernodes) if self.tasks else []}}

    def sources(self) -> list[str]:
        """Blob servers to fetch claim data from: the orchestrator's and every peer node's (refreshed every 5 s)."""
        at, urls = self._peers
        if time.monotonic() - at > 5:
            try:
                urls = [str(n["info"].get("blob_url", "")) for n in self.forward("nodes")]
            except CollabError:
                pass
            self._peers = (time.monotonic(), urls)
        return [u for u in [self.orchestrator_blob_url, *urls] if u]

    def _claims(self) -> ClaimWorkers:
        if self.claims is None:
            raise Unavailable("this node runs no watcher (started without a chain connection)")
        return self.claims

    def _actor(self) -> local_ops.Actor:
        """This home as the actor of a claims or merge operation (chain writes under the account's lock)."""
        chain = self.chain
        if chain is None or chain.identity is None:
            raise Unavailable("this node runs without a chain connection (started with --no-workers)",
                              hint="restart it without --no-workers, or stop it to run the command in-process")
        return local_ops.Actor(home=Path(chain.settings.home), vault_dir=Path(chain.settings.vault_dir),
                               session=lambda need_account=True: chain, identity=lambda: chain.identity,
                               log=log.info, lock=self.chain_lock)

    def handle(self, request: Any) -> dict[str, Any]:
        try:
            if not isinstance(request, dict) or not isinstance(request.get("op"), str):
                raise BadInput("request must be a JSON object with an op")
            fields = {k: v for k, v in request.items() if k != "op"}
            op = request["op"]
            if op == "status":
                return {"ok": True, "result": self.status()}
            if op == "vault":
                entries = self.vault.list() if self.vault is not None else []
                return {"ok": True, "result": [e.to_json() for e in entries]}
            if op == "infer":
                from orchestrator.inference import run_client_side

                return {"ok": True, "result": run_client_side(self, fields)}
            if op == "challenge":
                cid = local_ops.parse_claim_id(str(fields.get("claim_id", "")))
                return {"ok": True, "result": self._claims().challenge(cid)}
            if op in local_ops.OPS:  # claims and merges: the node's keys, store and nonce lock do the work
                return {"ok": True, "result": local_ops.run(op, self._actor(), fields)}
            if op == "games":
                return {"ok": True, "result": {"games": self._claims().games, "events": self._claims().events[-50:]}}
            if op in FORWARDED:
                return {"ok": True, "result": self.forward(op, **fields)}
            raise BadInput(f"unknown node op {op!r}")
        except CollabError as exc:
            return {"ok": False, **exc.to_json()}
        except Exception as exc:  # a bug in one request must not kill the API thread or hang the user command
            log.exception("node op failed")
            return {"ok": False, **InternalError(f"{type(exc).__name__}: {exc}").to_json()}

    def _heartbeats(self) -> None:
        while not self._stop.is_set():
            try:
                info = {"pid": os.getpid(), "blob_url": self.claims.blob_url if self.claims else ""}
                reply = self.forward("heartbeat", endpoint=self.endpoint, info=info)
                self.last_ok, self.last_error = time.time(), None
                self.orchestrator_blob_url = str((reply or {}).get("blob_url") or "")
                if self.tasks is not None:
                    self.tasks.on_tasks(list((reply or {}).get("tasks") or []))
            except CollabError as exc:
                self.last_error = str(exc)
                log.warning("heartbeat failed: %s", exc)
            self._stop.wait(self.heartbeat_interval)

    def bind(self) -> None:
        """Create ``node.sock`` (0600) now, so a ready message printed after this is true."""
        node = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    try:
                        reply = node.handle(json.loads(line))
                    except ValueError as exc:
                        reply = {"ok": False, **BadInput(f"request is not JSON: {exc}").to_json()}
                    self.wfile.write(json.dumps(reply).encode() + b"\n")

        if self.socket_path.exists():
            self.socket_path.unlink()  # a stale socket from a dead node
        old_umask = os.umask(0o177)
        try:
            self._server = socketserver.ThreadingUnixStreamServer(str(self.socket_path), Handler)
        finally:
            os.umask(old_umask)
        self._server.daemon_threads = True

    def serve_forever(self) -> None:
        if self._server is None:
            self.bind()
        assert self._server is not None
        if self._stop.is_set():
            self._server.server_close()
            self.socket_path.unlink(missing_ok=True)
            return
        if self.chain is not None:
            self.claims = ClaimWorkers(self.chain, self.sources, self.chain_lock).start()
            if self.chain.identity is not None:  # its X25519 key unwraps the vault keys it delivers
                from orchestrator.key_delivery import KeyDelivery

                self.keys = KeyDelivery(self.chain, self.chain_lock, release=self.release_escrow).start()
        beat = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        beat.start()
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._stop.set()
            if self.tasks is not None:
                self.tasks.stop()
            if self.claims is not None:
                self.claims.stop()
            if self.keys is not None:
                self.keys.stop()
            self._server.server_close()
            self.socket_path.unlink(missing_ok=True)
            self.client.close()

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            threading.Thread(target=self._server.shutdown, daemon=True).start()
