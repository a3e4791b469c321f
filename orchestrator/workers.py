"""Workers a node (and the orchestrator) runs inside its own process.

* :class:`ClaimWorkers`: the blob server over the home's fraud-proof store (so
  the audience of this home's claims can fetch their data) and a watcher
  thread (:mod:`collab.fraudproof.watcher`) that re-executes every claim it can
  see, challenges wrong ones and defends this home's own. Blob-server URLs of
  the other nodes come from the orchestrator's node list, so a node watches
  claims of peers it never configured.
* :class:`TaskRunner`: acts on the jobs a heartbeat reply lists for this node:
  a SuperNode for a ``round`` (through :mod:`collab.fl.deployment`; connected
  to the SuperLink address the job carries, TLS with the CA the job carries,
  authenticated by a key the orchestrator registered; on the data the home
  joined the round with, else the node's ``--data``), the
  adapter upload for a ``merge``, the owner's CrypTen party for an
  ``inference``. Each action runs once per job (and a dead SuperNode is
  restarted while its round is still running).

All chain writes of one account go through one lock, so the watcher and the
metering of an inference never race for the account's nonce.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collab.errors import CollabError, ProtocolViolation

log = logging.getLogger("collab.node.workers")


@dataclass
class NodeChain:
    """The chain a node acts on: web3, the deployment, its unlocked account and its home's settings."""

    w3: Any
    deployment: Any
    account: Any
    settings: Any
    identity: Any = None  # the home's unlocked Identity: its BLS key signs round consents


class BackgroundWorker(ABC):
    """One daemon thread running ``_run`` until :meth:`stop`, which joins it (the node's workers)."""

    thread_name = "worker"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    @abstractmethod
    def _run(self) -> None:
        """The worker's loop; it returns once ``self._stop`` is set."""

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


class ClaimWorkers(BackgroundWorker):
    """Blob server + watcher thread for one home and account."""

    thread_name = "watcher"

    def __init__(self, chain: NodeChain, sources: Callable[[], list[str]], lock: threading.Lock, *,
                 interval: float = 1.0, host: str = "127.0.0.1") -> None:
        super().__init__()
        self.chain, self.sources, self.lock, self.interval, self.host = chain, sources, lock, interval, host
        self.server: Any = None
        self.games: list[dict[str, Any]] = []
        self.events: list[str] = []
        self._requests: queue.Queue[tuple[bytes, queue.Queue[Any]]] = queue.Queue()

    @property
    def blob_url(self) -> str:
        return self.server.url if self.server is not None else ""

    def start(self) -> ClaimWorkers:
        from chain.clients.claim_manager import ClaimManagerClient
        from collab.fraudproof.blobserver import BlobServer
        from collab.fraudproof.store import Store

        manager = ClaimManagerClient.from_deployment(self.chain.deployment, self.chain.w3, None)
        self.server = BlobServer(Store(self.chain.settings.home), int(self.chain.w3.eth.chain_id), manager.is_audience,
                                 host=self.host).start()
        self._start_thread()
        return self

    def stop(self) -> None:
        super().stop()
        if self.server is not None:
            self.server.stop()

    def challenge(self, claim_id: bytes, timeout: float = 120.0) -> dict[str, Any]:
        """Re-execute one claim now in the watcher thread (challenging it if wrong); its verdict."""
        reply: queue.Queue[Any] = queue.Queue()
        self._requests.put((claim_id, reply))
        try:
            out = reply.get(timeout=timeout)
        except queue.Empty:
            from collab.errors import Unavailable

            raise Unavailable(f"the node's watcher did not answer within {timeout:.0f} s") from None
        if isinstance(out, CollabError):
            raise out
        return out  # type: ignore[no-any-return]

    def _run(self) -> None:
        from collab.fraudproof.watcher import Watcher

        c = self.chain
        watcher = Watcher(c.w3, c.deployment, c.account, c.settings.home, [])  # its SQLite lives in this thread
        try:
            while not self._stop.is_set():
                try:
                    watcher.sources = [u for u in self.sources() if u and u != self.blob_url]
                    with self.lock:
                        new = watcher.poll()
                    self._serve_requests(watcher)
                    for e in new:
                        log.info("watcher: %s", e)
                    self.events = (self.events + new)[-200:]
                    self.games = [{**g.__dict__, "claim_id": "0x" + g.claim_id.hex()} for g in watcher.games()]
                except CollabError as exc:
                    log.warning("watcher pass failed: %s", exc)
                except Exception:  # noqa: BLE001 - a transient RPC error must not end the watcher
                    log.exception("watcher pass failed")
                self._stop.wait(self.interval)
        finally:
            watcher.close()

    def _serve_requests(self, watcher: Any) -> None:
        while True:
            try:
                claim_id, reply = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                with self.lock:
                    posted = watcher.manager.posted_event(claim_id)
                    events = watcher.challenge_one(claim_id, posted.claimer)
                verdict, detail = watcher.verdicts().get(claim_id, ("unknown", ""))
                games = [g.game_id for g in watcher.games() if g.claim_id == claim_id and g.role == "challenger"]
                reply.put({"claim_id": "0x" + claim_id.hex(), "verdict": verdict, "detail": detail, "games": games,
                           "events": events})
            except CollabError as exc:
                reply.put(exc)


class TaskRunner:
    """Turns the jobs listed in heartbeat replies into this node's work (once per job)."""

    def __init__(self, node: Any, *, data: Path | None = None, adapter: Path | None = None,
                 adapter_asset: int | None = None) -> None:
        self.node, self.data, self.adapter, self.adapter_asset = node, data, adapter, adapter_asset
        self.started: set[str] = set()
        self.done: set[tuple[str, str]] = set()  # registry steps taken for (job, step)
        self.refused: set[str] = set()  # jobs whose on-chain proposal this node refused
        self.supernodes: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def me(self) -> str:
        return str(self.node.client.account.address).lower()

    def on_tasks(self, tasks: list[dict[str, Any]]) -> None:
        live = {t["id"] for t in tasks}
        for task in tasks:
            try:
                self._one(task)
            except CollabError as exc:
                log.warning("job %s: %s", task["id"], exc)
        with self._lock:
            for jid in [j for j in self.supernodes if j not in live]:
                self.supernodes.pop(jid).stop()  # the round is over (or gone): stop its SuperNode

    def _report(self, jid: str) -> Callable[[str, Any], None]:
        return lambda key, value: self.node.forward("report", id=jid, key=key, value=value)

    def _one(self, task: dict[str, Any]) -> None:
        jid, kind, state, payload = task["id"], task["kind"], task["state"], task["payload"]
        needed = self.me in [str(a).lower() for a in payload.get("needs") or []]
        if kind == "round" and payload.get("round_id"):
            try:
                self._registry_steps(task, needed)
            except CollabError:
                raise
            except Exception as exc:  # noqa: BLE001 - an RPC hiccup is retried at the next heartbeat
                log.warning("job %s: registry step failed: %s", jid, exc)
        if kind == "round" and needed and state in ("collecting", "computing"):
            self._supernode(task)
        elif kind == "round" and jid in self.supernodes:  # the Flower part is over (claiming): free the SuperNode
            with self._lock:
                self.supernodes.pop(jid).stop()
        elif jid in self.started:
            return
        elif kind == "merge" and needed and state == "collecting":
            self._adapter(task)
        elif kind == "inference" and needed and state == "collecting" and str(payload.get("owner", "")).lower() == self.me:
            self.started.add(jid)
            threading.Thread(target=self._owner_side, args=(task,), name=f"infer-{jid[:10]}", daemon=True).start()

    def data_for(self, task: dict[str, Any]) -> Path | None:
        """What this node trains on in ``task``: the data ``collab join`` kept for its RoundRegistry round, else ``--data``."""
        from orchestrator.local_ops import joined_data

        rid = task["payload"].get("round_id")
        joined = joined_data(Path(self.node.chain.settings.home), int(rid)) if rid else None
        return joined or self.data

    def _supernode(self, task: dict[str, Any]) -> None:
        """Report this home's SuperNode key, then (once the orchestrator registered it) start the SuperNode.

        It connects to the SuperLink's address from the job's data (the
        orchestrator's configuration; its certificate names it). TLS: the SuperLink's CA certificate arrives in the job's data; the node
        verifies the SuperLink with it. Authentication: the SuperLink refuses
        a SuperNode whose public key the orchestrator has not registered, so
        the node reports ``auth_key`` first and waits for ``registered/<me>``.
        A job without a CA (an older orchestrator) runs without TLS. In a
        RoundRegistry round the SuperNode's ClientApps train only the task the
        round was opened with: its on-chain ``configHash``, read here by this
        node, never taken from the aggregator.
        """
        from collab.fl.deployment import FlowerDeployment
        from collab.fl.tls import node_auth_key
        from orchestrator import round_chain

        jid, data = task["id"], task["data"]
        with self._lock:
            current = self.supernodes.get(jid)
            if current is not None and current.proc.poll() is None:
                return
            train = self.data_for(task)
            if train is None:
                if jid not in self.started:
                    self.started.add(jid)
                    self._report(jid)("supernode", {"ok": False, "error": "this node has no training data (`collab join` or --data)"})
                return
            home = Path(self.node.chain.settings.home)
            secure = bool(data.get("superlink_ca"))
            ca: Path | None = None
            if secure:
                public = node_auth_key(home / "flower" / "auth")[1].read_text()  # the key add_participant uses
                if data.get(f"r/{self.me}/auth_key") != public:
                    self._report(jid)("auth_key", public)
                    return
                if data.get(f"registered/{self.me}") != public:
                    return  # the orchestrator registers it with its SuperLink first
                ca = home / "flower-rounds" / f"{jid[2:18]}-ca.pem"
                ca.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                ca.write_text(str(data["superlink_ca"]))
            # A SuperNode started before its SuperLink listens backs off exponentially (one demo lost 18 s that way).
            if not data.get("superlink_ready"):
                return
            rid = task["payload"].get("round_id")
            try:
                task_hash = round_chain.round_task_hash(self.node.chain, int(rid)) if rid else None
            except Exception as exc:  # noqa: BLE001 - an RPC hiccup: retried at the next heartbeat
                log.warning("job %s: reading round %s's task from the chain failed: %s", jid, rid, exc)
                return
            deployment = FlowerDeployment(home / "flower-rounds", port=int(data["superlink_port"]), secure=secure,
                                          host=str(data.get("superlink_address") or "127.0.0.1"))
            self.supernodes[jid] = deployment.add_participant(self.me, home, train,
                                                              passphrase=os.environ.get("COLLAB_PASSPHRASE"),
                                                              superlink_ca=ca, register=False, task_hash=task_hash)
            log.info("job %s: SuperNode started (pid %d%s)", jid, self.supernodes[jid].proc.pid,
                     ", TLS + node authentication" if secure else ", no TLS")
        if jid not in self.started:
            self.started.add(jid)
            self._report(jid)("supernode", {"ok": True, "pid": self.supernodes[jid].proc.pid})

    def _registry_steps(self, task: dict[str, Any], needed: bool) -> None:
        """A RoundRegistry round: accept (participant), fix (creator), consent to the record (included participant),
        on chain as well when the orchestrator proposed it there.

        Each step reads the chain before acting, so a repeat after a node restart is harmless;
        ``done`` only saves the chain reads while this process lives.
        """
        from orchestrator import round_chain

        jid, state, rid, data = task["id"], task["state"], int(task["payload"]["round_id"]), task["data"]
        chain, report = self.node.chain, self._report(jid)
        train = self.data_for(task)
        if needed and state == "collecting" and (jid, "accepted") not in self.done and train is not None:
            with self.node.chain_lock:  # a no-op when `collab join` already accepted
                accepted = round_chain.node_accept(chain, rid, train)
            self.done.add((jid, "accepted"))
            report("accepted", accepted)
            log.info("round %d accepted with %d samples (dataset asset %d)", rid, accepted["samples"], accepted["dataset_asset"])
        submitter = str(task["payload"].get("submitter", "")).lower() == self.me
        in_record = self.me in [str(a).lower() for a in data.get("record", {}).get("participants", [])]
        if submitter and state == "collecting" and (jid, "fixed") not in self.done:
            with self.node.chain_lock:
                tx = round_chain.creator_fix(chain, rid)
            if tx is not None or data.get(f"r/{self.me}/fixed"):
                self.done.add((jid, "fixed"))
                report("fixed", {"tx": tx})
        if needed and state in ("computed", "claimed", "challenged") and (jid, "disputed") not in self.done:
            if "record" in data and (not in_record or jid in self.refused):
                try:
                    with self.node.chain_lock:  # left out: dispute if this node holds a final-round receipt
                        tx = round_chain.node_dispute(chain, Path(chain.settings.home), rid)
                except ProtocolViolation as exc:  # proposed with its own update, it did not consent: no dispute
                    self.done.add((jid, "disputed"))
                    log.info("round %d: %s", rid, exc)
                    return
                if tx is not None:
                    self.done.add((jid, "disputed"))
                    report("disputed", {"tx": tx})
                    log.warning("round %d: left out of the record despite the aggregator's receipt: disputed (%s)", rid, tx)
        if state == "computed" and "record" in data and (jid, "consent") not in self.done and chain.identity is not None:
            if not in_record:
                return
            self.done.add((jid, "consent"))
            try:
                signature: Any = round_chain.node_consent(chain, chain.identity.bls_sign, data["record"],
                                                            Path(chain.settings.home))
            except CollabError as exc:
                signature = {"refused": str(exc)}  # the orchestrator proposes the record on chain instead
            report("consent", signature)
        if needed and state in ("claimed", "challenged") and (jid, "omission") not in self.done:
            try:
                with self.node.chain_lock:  # a survivor on the endorsed list left out: any participant disputes
                    decided, tx = round_chain.node_dispute_omission(chain, Path(chain.settings.home), rid)
            except CollabError as exc:
                decided, tx = False, None
                log.warning("round %d: the omission check failed, retrying: %s", rid, exc)
            if decided:
                self.done.add((jid, "omission"))
            if tx is not None:
                report("disputed_omission", {"tx": tx})
                log.warning("round %d: the record omits a survivor the aggregator endorsed: disputed (%s)", rid, tx)
        proposed = state == "computed" and "proposal_root" in data and "record" in data
        if proposed and (jid, "consent_posted") not in self.done and chain.identity is not None:
            if not in_record:
                return
            try:  # our own post: an aggregator withholding our signature must not leave us out undisputed
                with self.node.chain_lock:
                    tx = round_chain.node_post_consent(chain, chain.identity.bls_sign, data["record"],
                                                       Path(chain.settings.home))
            except ProtocolViolation as exc:  # the record is wrong for us: refusing is final
                self.done.add((jid, "consent_posted"))
                self.refused.add(jid)  # left out of the record: dispute if the proposal misstated our update
                log.warning("round %d: not consenting to the proposed record: %s", rid, exc)
                return
            except CollabError as exc:  # the chain did not answer or refused the transaction: next heartbeat
                log.warning("round %d: posting the consent failed, retrying: %s", rid, exc)
                return
            self.done.add((jid, "consent_posted"))
            if tx is not None:
                log.info("round %d: consent to the proposed record posted on chain (%s)", rid, tx)

    def _adapter(self, task: dict[str, Any]) -> None:
        """Contribute this node's adapter: the asset's vault blob and key when it is a vaulted asset of ours
        (the orchestrator checks both against the chain), else the adapter file. The asset is the one the
        job names for this node, else this node's own (``--adapter-asset``, reported with the upload)."""
        from orchestrator.merges import encode_adapter

        jid, payload = task["id"], task["payload"]
        parts = [str(a).lower() for a in payload.get("participants") or []]
        assets = payload.get("assets") or []
        named = int(assets[parts.index(self.me)]) if self.me in parts and len(assets) == len(parts) else 0
        asset_id = named or self.adapter_asset or 0
        try:
            vaulted = self._vaulted(asset_id) if asset_id else None
        except Exception as exc:  # noqa: BLE001 - an RPC hiccup: retried at the next heartbeat
            log.warning("job %s: cannot read asset %d: %s", jid, asset_id, exc)
            return
        self.started.add(jid)
        if asset_id and not named:
            self._report(jid)("adapter_asset", asset_id)  # before the upload, which completes the node's part
        if vaulted is not None:
            blob, key = vaulted
            self._report(jid)("adapter_key", key.hex())  # first: the upload completes the node's part
            self._report(jid)("adapter", encode_adapter(blob))
            return
        path = self.adapter or Path(self.node.chain.settings.home) / "adapter.safetensors"
        if not path.is_file():
            log.warning("job %s: no adapter at %s to contribute", jid, path)
            return
        self._report(jid)("adapter", encode_adapter(path.read_bytes()))

    def _vaulted(self, asset_id: int) -> tuple[bytes, bytes] | None:
        """(blob, key) of asset ``asset_id`` when this home's vault holds it with a key we can open, else None."""
        from chain.clients.asset_registry import AssetRegistryClient
        from collab.vault import Vault

        c = self.node.chain
        vault = Vault(Path(c.settings.vault_dir))
        entry_id = AssetRegistryClient.from_deployment(c.deployment, c.w3, None).asset(asset_id).content_hash.hex()
        if c.identity is None or not vault.exists(entry_id):
            return None
        return vault.export(entry_id), vault.data_key(entry_id, c.identity.x25519_private_key)

    def _owner_side(self, task: dict[str, Any]) -> None:
        from collab.mpc.service import OwnerNode
        from orchestrator.inference import serve_owner_side

        c = self.node.chain
        owner = OwnerNode.from_home(c.settings, c.w3, c.deployment, c.account)
        serve_owner_side(owner, task, self._report(task["id"]), self.node.chain_lock)

    def stop(self) -> None:
        with self._lock:
            for proc in self.supernodes.values():
                proc.stop()
            self.supernodes.clear()
        from collab.mpc.persistent import owner_parties
        from collab.mpc.spare import spare_parties

        owner_parties().close()  # the owner's persistent CrypTen parties end with the node
        spare_parties().close()  # and so does the client's spare party
