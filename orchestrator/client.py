"""Thin clients: signed requests over CurveZMQ to the orchestrator.

A request is signed (EIP-712 envelope) with a fresh nonce and a short expiry,
sent on a DEALER socket that pins the orchestrator's CurveZMQ public key (so a
man in the middle cannot impersonate it), and waited for with a timeout: an
unreachable orchestrator is an ``Unavailable`` error, never a hang. Error
replies are raised again as the same CollabError class the server raised.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from pathlib import Path
from typing import Any

import zmq

from collab import errors
from collab.errors import CollabError, Unavailable

DEFAULT_TIMEOUT = 10.0


_BY_EXIT_CODE: dict[Any, type[CollabError]] = {c.exit_code: c for c in (
    errors.UsageError, errors.BadInput, errors.NotFound, errors.Unauthorized, errors.Unavailable,
    errors.ProtocolViolation, errors.InternalError)}


def raise_reply(reply: dict[str, Any]) -> None:
    """Re-raise an error reply as its CollabError subclass (by name), else the class of its exit code.

    A decoded contract revert (``UnknownClaim``, ``DuplicateClaim``) is named
    after its Solidity error, not a collab.errors class; its exit code keeps
    the meaning, so a routed command exits as the direct one does.
    """
    cls = getattr(errors, str(reply.get("error")), None)
    if not (isinstance(cls, type) and issubclass(cls, CollabError)):
        cls = _BY_EXIT_CODE.get(reply.get("exit_code"), errors.InternalError)
    try:
        exc = cls(str(reply.get("message", "error")))
    except TypeError:
        exc = errors.Unavailable(str(reply.get("message", "error")))
    raise exc


class OrchestratorClient:
    """Signed request/reply with one orchestrator, from one account."""

    def __init__(self, endpoint: str, server_key: bytes, account: Any, *, chain_id: int, orchestrator: str,
                 timeout: float = DEFAULT_TIMEOUT, curve_keypair: tuple[bytes, bytes] | None = None) -> None:
        self.endpoint, self.server_key, self.account = endpoint, server_key, account
        self.chain_id, self.orchestrator, self.timeout = chain_id, orchestrator, timeout
        self.public, self.secret = curve_keypair or zmq.curve_keypair()
        self._ctx = zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._nonces = itertools.count(time.time_ns())

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.curve_serverkey = self.server_key
            sock.curve_publickey, sock.curve_secretkey = self.public, self.secret
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    def send_raw(self, body: bytes, rid: Any = None) -> dict[str, Any]:
        """Send bytes as-is and wait for the reply with ``rid`` (tests use this for hostile input)."""
        sock = self._socket()
        sock.send(body)
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0:
            if not sock.poll(int(left * 1000), zmq.POLLIN):
                break
            reply = json.loads(sock.recv())
            if rid is None or reply.get("rid") == rid:
                return reply  # type: ignore[no-any-return]
        self.close()  # a late reply must not be read as the answer to the next request
        raise Unavailable(f"no reply from the orchestrator at {self.endpoint} within {self.timeout:.0f} s",
                          hint="is `collab orchestrator start` running and reachable?")

    def hello(self) -> dict[str, Any]:
        """The orchestrator's account and chain, learned over the key-pinned link (before any signing)."""
        reply = self.send_raw(json.dumps({"hello": True}).encode())
        if not reply.get("ok"):
            raise_reply(reply)
        self.orchestrator, self.chain_id = reply["result"]["address"], int(reply["result"]["chain_id"])
        return reply["result"]  # type: ignore[no-any-return]

    def signed(self, payload: dict[str, Any], *, ttl: int = 60) -> dict[str, Any]:
        from orchestrator.envelope import sign_request  # eth_account (~0.5 s): only clients that sign load it

        return sign_request(self.account, payload, chain_id=self.chain_id, verifying_contract=self.orchestrator,
                            nonce=next(self._nonces), ttl=ttl)

    def request(self, op: str, **fields: Any) -> Any:
        """Signed request; returns the result or raises the server's error."""
        rid = f"{op}-{time.time_ns()}"
        reply = self.send_raw(json.dumps(self.signed({"op": op, "rid": rid, **fields})).encode(), rid)
        if not reply.get("ok"):
            raise_reply(reply)
        return reply.get("result")


class NodeSocketClient:
    """JSON-lines requests to a node's local API on ``node.sock`` (what user commands use)."""

    def __init__(self, path: Path | str, timeout: float = 30.0) -> None:
        self.path, self.timeout = Path(path), timeout

    def request(self, op: str, **fields: Any) -> Any:
        if not self.path.exists():
            raise Unavailable(f"no node is listening on {self.path}", hint="start one with `collab node start`")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.path))
                sock.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
                line = sock.makefile("rb").readline()
        except OSError as exc:
            raise Unavailable(f"node at {self.path} did not answer: {exc}", hint="is `collab node start` running?") from exc
        if not line:
            raise Unavailable(f"node at {self.path} closed the connection")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise_reply(reply)
        return reply.get("result")


def node_status(path: Path | str) -> dict[str, Any] | None:
    """The status of the node answering on ``path`` within 5 s, else None (no socket, or a dead node's)."""
    if not Path(path).exists():
        return None
    try:
        return NodeSocketClient(path, timeout=5).request("status")  # type: ignore[no-any-return]
    except Unavailable:
        return None


def node_running(path: Path | str, timeout: float = 30.0) -> NodeSocketClient | None:
    """A client for the home's node if one answers on ``path`` (user commands route through it), else None."""
    return NodeSocketClient(path, timeout=timeout) if node_status(path) is not None else None
