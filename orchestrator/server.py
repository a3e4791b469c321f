"""The coordinator: a CurveZMQ ROUTER that authenticates signed requests and runs durable jobs.

CurveZMQ encrypts the link and proves the server's identity to nodes (its
public key is the one registered in the orchestrator's Sahara ID); a client's
identity is proven per request by its EIP-712 envelope, checked against the
IdentityRegistry (with a short cache, so a revoked identity stops working
within seconds). A bad request of any kind gets an error reply and a log line:
the loop never dies on input. Jobs are stepped by a runner thread from the
SQLite store, so a restarted server resumes whatever was in flight.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import zmq
from eth_utils import to_checksum_address
from zmq.auth.thread import ThreadAuthenticator

from collab.errors import BadInput, CollabError, Unauthorized
from orchestrator.envelope import verify_request
from orchestrator.jobs import JobHandler, JobState, JobStore, step, validate_kind

log = logging.getLogger("collab.orchestrator")

MAX_REQUEST_BYTES = 256 * 1024
IDENTITY_TTL = 10.0
HEARTBEAT_TIMEOUT = 6.0


class IdentityCache:
    """sender -> Sahara ID, checked on-chain and kept for ``ttl`` seconds."""

    def __init__(self, registry: Any, ttl: float = IDENTITY_TTL) -> None:
        self.registry = registry
        self.ttl = ttl
        self._cache: dict[str, tuple[float, int]] = {}

    def require(self, account: str) -> int:
        hit = self._cache.get(account)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        ident = self.registry.identity_of(account)
        if ident is None or not ident.active:
            raise Unauthorized(f"{account} has no active Sahara ID", hint="register with `collab id register`")
        self._cache[account] = (time.monotonic() + self.ttl, ident.id)
        return int(ident.id)


class OrchestratorServer:
    """ROUTER loop + job runner. ``serve_forever`` blocks; ``stop`` ends both threads."""

    def __init__(self, *, store: JobStore, address: str, chain_id: int, curve_secret: bytes, curve_public: bytes,
                 identities: IdentityCache, handlers: dict[str, JobHandler], bind: str = "tcp://127.0.0.1:0",
                 heartbeat_timeout: float = HEARTBEAT_TIMEOUT, runner_interval: float = 0.5) -> None:
        self.store, self.address, self.chain_id = store, address, chain_id
        self.identities, self.handlers = identities, handlers
        self.heartbeat_timeout, self.runner_interval = heartbeat_timeout, runner_interval
        self.chain_lock = threading.Lock()  # the runner's claim posts and the watcher share one account
        self.blob_url = ""  # the orchestrator's blob server (claims it posts), told to nodes in heartbeat replies
        for handler in handlers.values():
            if hasattr(handler, "presence"):
                handler.presence = self.node_status
        self._stop = threading.Event()
        self.ctx = zmq.Context()
        self.auth = ThreadAuthenticator(self.ctx)
        self.auth.start()
        self.auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.curve_server = True
        self.sock.curve_secretkey = curve_secret
        self.sock.curve_publickey = curve_public
        self.sock.setsockopt(zmq.MAXMSGSIZE, 4 * MAX_REQUEST_BYTES)  # far beyond: drop the peer outright
        self.sock.setsockopt(zmq.LINGER, 0)
        if bind.endswith(":0"):
            port = self.sock.bind_to_random_port(bind.rsplit(":", 1)[0])
            self.endpoint = f"{bind.rsplit(':', 1)[0]}:{port}"
        else:
            self.sock.bind(bind)
            self.endpoint = bind
        self.stats = {"served": 0, "rejected": 0}

    # ----------------------------------------------------------------- loop

    def serve_forever(self) -> None:
        runner = threading.Thread(target=self._run_jobs, name="job-runner", daemon=True)
        runner.start()
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(200):
                    continue
                frames = self.sock.recv_multipart()
                if len(frames) < 2:
                    continue
                peer, body = frames[0], frames[-1]
                self.sock.send_multipart([peer, json.dumps(self.handle(body)).encode()])
        finally:
            self._stop.set()
            runner.join(timeout=5)
            self.sock.close(0)
            self.auth.stop()
            self.ctx.term()

    def stop(self) -> None:
        self._stop.set()

    def handle(self, body: bytes) -> dict[str, Any]:
        """One request -> one reply; every failure becomes an error reply."""
        rid = None
        try:
            if len(body) > MAX_REQUEST_BYTES:
                raise BadInput(f"request of {len(body)} bytes exceeds the {MAX_REQUEST_BYTES}-byte limit")
            try:
                request = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise BadInput(f"request is not JSON: {exc}") from exc
            if isinstance(request, dict) and request.get("hello") is True:
                # Unsigned, but only reachable through the CurveZMQ link that pins our key.
                return {"ok": True, "rid": None, "result": {"address": self.address, "chain_id": self.chain_id}}
            if isinstance(request, dict) and isinstance(request.get("payload"), dict):
                rid = request["payload"].get("rid")
            env = verify_request(request, chain_id=self.chain_id, verifying_contract=self.address)
            identity_id = self.identities.require(env.sender)
            self.store.use_nonce(env.sender, env.nonce, env.expiry)
            result = self.dispatch(env.sender, identity_id, request["payload"])
            self.stats["served"] += 1
            return {"ok": True, "rid": rid, "result": result}
        except CollabError as exc:
            self.stats["rejected"] += 1
            log.warning("rejected request: %s", exc)
            return {"ok": False, "rid": rid, **exc.to_json()}
        except Exception as exc:  # a bug must not take the server down; the reply says so
            self.stats["rejected"] += 1
            log.exception("internal error handling a request")
            return {"ok": False, "rid": rid, "error": "InternalError", "message": str(exc), "exit_code": 10}

    # ------------------------------------------------------------- dispatch

    def dispatch(self, sender: str, identity_id: int, payload: dict[str, Any]) -> Any:
        op = payload.get("op")
        now = time.time()
        if op == "ping":
            return {"pong": True, "identity_id": identity_id, "time": now}
        if op == "heartbeat":
            info = payload.get("info") or {}
            if not isinstance(info, dict):
                raise BadInput("heartbeat info must be an object")
            self.store.see_node(sender, identity_id, str(payload.get("endpoint", "")), info, now)
            return {"status": "online", "timeout": self.heartbeat_timeout, "blob_url": self.blob_url,
                    "tasks": self.tasks_for(sender)}
        if op == "nodes":
            return [{**n, "address": to_checksum_address(n["address"]), "status": self.node_status(n["address"], now)}
                    for n in self.store.nodes()]
        if op == "report":
            return self.report(sender, payload)
        if op == "submit":
            kind, job_payload = payload.get("kind"), payload.get("payload")
            needs, timeout = payload.get("needs") or [], payload.get("timeout", 60)
            if not isinstance(needs, list) or not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
                raise BadInput("needs must be a list of addresses and timeout a positive number of seconds")
            validate_kind(str(kind), job_payload, self.handlers)
            body = {**job_payload, "submitter": sender, "needs": [str(a) for a in needs]}
            job, created = self.store.create(str(kind), body, deadline=now + timeout if needs else None)
            return {"job": job.to_json(), "created": created}
        if op == "job":
            return self.store.get(str(payload.get("id"))).to_json()
        if op == "jobs":
            return [j.to_json() for j in self.store.list()]
        if op == "cancel":
            job = self.store.get(str(payload.get("id")))
            if job.payload.get("submitter", "").lower() != sender.lower():
                raise Unauthorized("only the job's submitter may cancel it")
            return self.store.cancel(job.id).to_json()
        raise BadInput(f"unknown op {op!r}")

    # ---------------------------------------------------------------- runner

    def _run_jobs(self) -> None:
        last_prune = 0.0
        while not self._stop.wait(self.runner_interval):
            if time.monotonic() - last_prune > 60:
                self.store.prune_nonces()  # expired requests are refused by their expiry anyway
                last_prune = time.monotonic()
            for job in self.store.active():
                try:
                    with self.chain_lock:
                        self._advance(job)
                except Exception:
                    log.exception("job %s: runner step failed; retried next pass", job.id)

    def _advance(self, job: Any) -> None:
        needs = job.payload.get("needs") or []
        now = time.time()
        missing = [a for a in needs if self.node_status(a, now) != "online"]
        if missing and job.state in (JobState.CREATED, JobState.COLLECTING):
            if job.deadline is not None and now > job.deadline:
                self.store.transition(job.id, job.state, JobState.FAILED,
                                      error=f"timed out waiting for node(s) {', '.join(missing)} (away)")
            return
        step(self.store, self.handlers, job)

    # ---------------------------------------------------------------- nodes

    def node_status(self, address: str, now: float | None = None) -> str:
        """``online`` if ``address`` beat within the timeout, ``away`` if it beat before, ``unknown`` if never."""
        seen = self.store.last_seen(address)
        if seen is None:
            return "unknown"
        return "online" if (now or time.time()) - seen <= self.heartbeat_timeout else "away"

    def tasks_for(self, sender: str) -> list[dict[str, Any]]:
        """Active jobs this node takes part in (needed, or submitted): what its workers act on."""
        me = sender.lower()
        out = []
        for job in self.store.active():
            needs = [str(a).lower() for a in job.payload.get("needs") or []]
            if me in needs or str(job.payload.get("submitter", "")).lower() == me:
                out.append(job.to_json())
        return out

    def report(self, sender: str, payload: dict[str, Any]) -> dict[str, Any]:
        """A node's result for a job it takes part in, stored under ``r/<address>/<key>`` in the job's data."""
        job = self.store.get(str(payload.get("id")))
        key, value = payload.get("key"), payload.get("value")
        if not isinstance(key, str) or not key or "/" in key:
            raise BadInput("report key must be a non-empty string without '/'")
        me = sender.lower()
        if me not in [str(a).lower() for a in job.payload.get("needs") or []] and me != str(job.payload.get("submitter", "")).lower():
            raise Unauthorized(f"{sender} takes no part in job {job.id}")
        if job.state.terminal:
            raise BadInput(f"job {job.id} is already {job.state.value}")
        self.store.update_data(job.id, {f"r/{me}/{key}": value})
        return {"recorded": True}
