"""RegMean/Fisher statistics summed over the network: each participant a separate process, SecAgg over TCP.

The in-process :class:`~collab.merge.datamerge.SecAggSum` runs every party in
one process. Here the merger runs the SecAgg **server** behind a TCP socket
(:class:`StatsServer`) and every participant runs its own
:class:`~collab.secagg.SecAggParticipant` in its own process
(:func:`participate`, ``collab merge stats-join``), holding its statistics
file and its identity key; only the canonical SecAgg messages cross the
socket, one length-prefixed frame each (u32 big-endian length ‖ message):

    participant → server : hello (u32 member id), KeyAdvertisement
    server → participant : KeyBroadcast         participant → server : ShareKeys
    server → participant : ForwardedShares      participant → server : MaskedInput
    server → participant : SurvivorList         participant → server : ConsistencySignature
    server → participant : ConsistencyBroadcast participant → server : UnmaskResponse

A participant that disconnects, times out or sends a message the server
rejects is dropped at that stage; SecAgg recovers the survivors' total while
at least ``threshold`` remain (else :class:`~collab.secagg.TooFewSurvivors`).
The merger learns only the total, written as one statistics file
(:meth:`StatsServer.total`) that ``collab merge run`` merges like any other
(every RegMean/Fisher term is additive, so merging the sum is merging the parts).

The round itself is public (:class:`StatsRound`, a JSON file): the SecAgg
round parameters plus the statistics layout (names and shapes in sorted
order, the method and its shared parameters), taken from any participant's
file header (no values are read).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from collab import fixedpoint as fx
from collab.errors import BadInput, CollabError, ProtocolViolation, Unavailable
from collab.merge.datamerge import DEFAULT_FRAC_BITS, RingSum
from collab.merge.stats import Contribution

MAX_FRAME = 1 << 31
HELLO = b"CMST"


# --------------------------------------------------------------------- the public round


@dataclass(frozen=True)
class StatsRound:
    """A statistics round: SecAgg parameters and the layout every participant's file must have."""

    config: Any  # collab.secagg.RoundConfig
    method: str
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    shared: dict[str, Any]  # alpha / fisher_floor: must agree across participants

    def to_json(self) -> dict[str, Any]:
        c = self.config
        return {"round_id": c.round_id.hex(), "members": [[m.id, m.address] for m in c.members],
                "threshold": c.threshold, "length": c.length, "frac_bits": c.frac_bits, "neighbours": c.neighbours,
                "graph_seed": c.graph_seed.hex(), "method": self.method, "names": list(self.names),
                "shapes": [list(s) for s in self.shapes], "shared": self.shared}

    @classmethod
    def from_json(cls, raw: Any) -> StatsRound:
        from collab.secagg import Member, RoundConfig

        try:
            config = RoundConfig(
                round_id=bytes.fromhex(raw["round_id"]), members=tuple(Member(int(i), str(a)) for i, a in raw["members"]),
                threshold=int(raw["threshold"]), length=int(raw["length"]), frac_bits=int(raw["frac_bits"]),
                neighbours=None if raw.get("neighbours") is None else int(raw["neighbours"]),
                graph_seed=bytes.fromhex(raw.get("graph_seed", "00" * 32)),
            )
            return cls(config, str(raw["method"]), tuple(str(n) for n in raw["names"]),
                       tuple(tuple(int(d) for d in s) for s in raw["shapes"]), dict(raw.get("shared", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"malformed statistics round: {exc}") from None

    def save(self, path: Path | str) -> Path:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))
        return Path(path)

    @classmethod
    def load(cls, path: Path | str) -> StatsRound:
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            from collab.errors import NotFound

            raise NotFound(f"statistics round file {path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise BadInput(f"{path} is not JSON: {exc.msg}") from None


def plan_round(layout: Contribution, addresses: Sequence[str], *, frac_bits: int = DEFAULT_FRAC_BITS,
               threshold: int | None = None, neighbours: int | None = None, round_id: bytes | None = None) -> StatsRound:
    """The public round for ``addresses`` (member ids 1..n in this order) over ``layout``'s names and shapes."""
    from eth_hash.auto import keccak

    from collab.secagg import Member, RoundConfig

    if len(addresses) < 2:
        raise BadInput("secure aggregation needs at least two participants")
    names = tuple(sorted(layout.tensors))
    shapes = tuple(tuple(layout.tensors[k].shape) for k in names)
    length = sum(int(np.prod(s)) if s else 1 for s in shapes)
    n = len(addresses)
    holders = n if neighbours is None or neighbours >= n - 1 else neighbours + 1
    config = RoundConfig(round_id=round_id or keccak(b"collab-merge-netstats" + os.urandom(32)),
                         members=tuple(Member(i + 1, a) for i, a in enumerate(addresses)),
                         threshold=threshold if threshold is not None else holders // 2 + 1,
                         length=length, frac_bits=frac_bits, neighbours=neighbours)
    shared = {k: layout.meta[k] for k in ("alpha", "fisher_floor") if k in layout.meta}
    return StatsRound(config, layout.method, names, shapes, shared)


def flatten(contribution: Contribution, rnd: StatsRound) -> np.ndarray:
    """A participant's ring words in the round's layout; BadInput when its file does not fit the round."""
    if contribution.method != rnd.method:
        raise BadInput(f"these statistics are for {contribution.method}, the round sums {rnd.method}")
    for key, value in rnd.shared.items():
        if contribution.meta.get(key) != value:
            raise BadInput(f"these statistics use {key}={contribution.meta.get(key)}, the round {value}")
    if tuple(sorted(contribution.tensors)) != rnd.names:
        raise BadInput("these statistics cover other tensors than the round's layout")
    for name, shape in zip(rnd.names, rnd.shapes):
        if tuple(contribution.tensors[name].shape) != shape:
            raise BadInput(f"shape mismatch for {name}: {list(contribution.tensors[name].shape)} vs the round's {list(shape)}")
    words = RingSum(rnd.config.frac_bits).encode(contribution, len(rnd.config.members))
    return np.concatenate([words[k].reshape(-1) for k in rnd.names])


def unflatten(words: np.ndarray, rnd: StatsRound) -> dict[str, torch.Tensor]:
    """The decoded total, back into named tensors."""
    flat = fx.from_fixed(np.asarray(words), rnd.config.frac_bits)
    out, offset = {}, 0
    for name, shape in zip(rnd.names, rnd.shapes):
        size = int(np.prod(shape)) if shape else 1
        out[name] = torch.from_numpy(flat[offset:offset + size].reshape(shape).copy())
        offset += size
    return out


# --------------------------------------------------------------------- framing


def send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def recv_frame(sock: socket.socket) -> bytes:
    (size,) = struct.unpack(">I", _recv_exact(sock, 4))
    if size > MAX_FRAME:
        raise ProtocolViolation(f"frame of {size} bytes is too large")
    return _recv_exact(sock, size)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        buf.extend(chunk)
    return bytes(buf)


# --------------------------------------------------------------------- merger side


class StatsServer:
    """The merger's SecAgg server on a TCP socket; :meth:`run` drives one round to its aggregate."""

    def __init__(self, rnd: StatsRound, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 60.0,
                 join_timeout: float = 300.0) -> None:
        self.round = rnd
        self.timeout = timeout  # per message
        self.join_timeout = join_timeout  # for every member to connect (processes start slowly under load)
        self.listener = socket.create_server((host, port))
        self.result: Any = None
        self.dropped: dict[int, str] = {}

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return str(host), int(port)

    def close(self) -> None:
        self.listener.close()

    def __enter__(self) -> StatsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self) -> Any:
        """Accept the members, run rounds 0-4, return the :class:`~collab.secagg.AggregateResult`."""
        from collab.secagg import (
            ConsistencySignature,
            KeyAdvertisement,
            MaskedInput,
            SecAggServer,
            ShareKeys,
            UnmaskResponse,
        )

        server = SecAggServer(self.round.config)
        conns = self._accept()
        try:
            self._collect(conns, None, lambda raw: server.receive_advertisement(KeyAdvertisement.from_bytes(raw)))
            self._collect(conns, lambda u: server.key_broadcast(u).to_bytes(),
                          lambda raw: server.receive_shares(ShareKeys.from_bytes(raw)))
            self._collect(conns, lambda u: server.forwarded_shares(u).to_bytes(),
                          lambda raw: server.receive_masked_input(MaskedInput.from_bytes(raw)))
            survivors = server.survivor_list()
            for u in [u for u in conns if u not in survivors.survivors]:
                self._drop(conns, u, "not among the survivors")
            self._collect(conns, lambda _u: survivors.to_bytes(),
                          lambda raw: server.receive_consistency_signature(ConsistencySignature.from_bytes(raw)))
            check = server.consistency_broadcast()
            self._collect(conns, lambda _u: check.to_bytes(),
                          lambda raw: server.receive_unmask(UnmaskResponse.from_bytes(raw)))
            self.result = server.aggregate()
        finally:
            for s in conns.values():
                s.close()
        return self.result

    def total(self) -> Contribution:
        """The summed statistics as one statistics file's content (merge it like any participant's)."""
        if self.result is None:
            raise BadInput("the round has not run")
        survivors = sorted(int(u) for u in self.result.survivors)
        meta = dict(self.round.shared) | {"secagg": {"survivors": survivors, "dropped": self.dropped,
                                                     "frac_bits": self.round.config.frac_bits}}
        return Contribution(self.round.method, unflatten(self.result.words, self.round), meta)

    def _accept(self) -> dict[int, socket.socket]:
        wanted = {m.id for m in self.round.config.members}
        conns: dict[int, socket.socket] = {}
        deadline = time.monotonic() + self.join_timeout
        while set(conns) != wanted and time.monotonic() < deadline:
            self.listener.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                break
            sock.settimeout(self.timeout)
            try:
                hello = recv_frame(sock)
                if len(hello) != 8 or hello[:4] != HELLO:
                    raise ProtocolViolation("bad hello")
                (member,) = struct.unpack(">I", hello[4:])
                if member not in wanted or member in conns:
                    raise ProtocolViolation(f"member {member} is not expected")
                conns[member] = sock
            except (OSError, ConnectionError, CollabError, struct.error):
                sock.close()
        for u in wanted - set(conns):
            self.dropped[u] = "never connected"
        return conns

    def _collect(self, conns: dict[int, socket.socket], outgoing: Any, incoming: Any) -> None:
        for u in sorted(conns):
            try:
                if outgoing is not None:
                    send_frame(conns[u], outgoing(u))
                incoming(recv_frame(conns[u]))
            except (OSError, ConnectionError, CollabError, ValueError, struct.error) as exc:
                self._drop(conns, u, f"{type(exc).__name__}: {exc}")

    def _drop(self, conns: dict[int, socket.socket], u: int, why: str) -> None:
        self.dropped[u] = why
        conns.pop(u).close()


# --------------------------------------------------------------------- participant side


def participate(rnd: StatsRound, account: Any, contribution: Contribution, address: tuple[str, int], *,
                timeout: float = 60.0, stop_before: str | None = None) -> None:
    """Run this participant's rounds 0-4 against the merger's server (``stop_before``: tests of dropouts)."""
    from collab.secagg import ConsistencyBroadcast, ForwardedShares, KeyBroadcast, SecAggParticipant, SurvivorList

    member = next((m.id for m in rnd.config.members if m.address.lower() == account.address.lower()), None)
    if member is None:
        raise BadInput(f"{account.address} is not a member of this statistics round")
    words = flatten(contribution, rnd)
    me = SecAggParticipant(rnd.config, member, account)
    try:
        sock = socket.create_connection(address, timeout=timeout)
    except OSError as exc:
        raise Unavailable(f"cannot reach the merger at {address[0]}:{address[1]}: {exc.strerror or exc}") from None
    with sock:
        send_frame(sock, HELLO + struct.pack(">I", member))
        send_frame(sock, me.advertise_keys().to_bytes())
        if stop_before == "shares":
            return
        send_frame(sock, me.share_keys(KeyBroadcast.from_bytes(recv_frame(sock))).to_bytes())
        if stop_before == "masked":
            return
        send_frame(sock, me.mask_input(ForwardedShares.from_bytes(recv_frame(sock)), words).to_bytes())
        send_frame(sock, me.sign_survivors(SurvivorList.from_bytes(recv_frame(sock))).to_bytes())
        send_frame(sock, me.unmask(ConsistencyBroadcast.from_bytes(recv_frame(sock))).to_bytes())


__all__ = ["StatsRound", "StatsServer", "flatten", "participate", "plan_round", "unflatten"]
