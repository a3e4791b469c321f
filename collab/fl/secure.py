"""The aggregator's side of SecAgg(+) carried as Flower Message API rounds.

``collab.secagg.SecAggServer`` is transport-agnostic; this module moves its
messages between the ServerApp and the ClientApps: one ``train.secagg_*``
message per participant and stage, replies checked by the SecAgg server
(a reply that breaks the protocol is not recorded, and its sender counts as
dropped). A participant that does not answer a stage within ``timeout``
(killed, disconnected, refusing) is dropped; after round 1 its masks are
recovered from the survivors' Shamir shares. The aggregator only ever holds
masked inputs and the ring sum: no individual update in the clear.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from collab.errors import CollabError, ProtocolViolation
from collab.fl.exchange import send_and_receive
from collab.secagg import (
    AggregateResult,
    ConsistencySignature,
    KeyAdvertisement,
    MaskedInput,
    RoundConfig,
    SecAggServer,
    ShareKeys,
    UnmaskResponse,
)

log = logging.getLogger("collab.fl.secure")
STAGES = ("share", "mask", "consistency", "unmask")


def _from(kind: Any, data: bytes, member: int) -> Any:
    """Decode a reply and insist it is the replying node's own message (no relaying someone else's)."""
    msg = kind.from_bytes(data)
    if msg.sender != member:
        raise ProtocolViolation(f"node of participant {member} sent a message of participant {msg.sender}")
    return msg


@dataclass
class SecureRound:
    """One SecAgg round over a Flower grid.

    ``members`` maps Flower node id → SecAgg member id; ``names`` member id → participant name.
    """

    grid: Grid
    config: RoundConfig
    members: Mapping[int, int]
    names: Mapping[int, str]
    timeout: float
    group_id: str
    dropped: dict[str, str] = field(default_factory=dict)
    bytes_moved: int = 0  # SecAgg payloads both ways (rounds 1-4), for the overhead benchmark
    # The aggregator's endorsement of the survivor list (addresses -> signature), sent with the consistency check.
    endorse: Callable[[list[str]], bytes] | None = None
    server: SecAggServer = field(init=False)

    def __post_init__(self) -> None:
        self.server = SecAggServer(self.config)

    def _drop(self, member: int, why: str) -> None:
        name = self.names[member]
        self.dropped.setdefault(name, why)
        log.warning("secure aggregation: dropped %s (%s)", name, why)

    def _exchange(self, stage: str, payloads: Mapping[int, bytes], accept: Callable[[int, bytes], None],
                  extra: Mapping[str, Any] | None = None) -> list[int]:
        """Send each member its payload (and ``extra`` entries), hand every reply to ``accept``; the members whose
        reply was accepted."""
        by_member = {m: n for n, m in self.members.items()}
        messages = [
            Message(
                RecordDict({"secagg": ConfigRecord({"msg": payload, **(extra or {})})}),
                dst_node_id=by_member[member],
                message_type=f"{MessageType.TRAIN}.secagg_{stage}",
                group_id=self.group_id,
            )
            for member, payload in payloads.items()
        ]
        replies = {r.metadata.src_node_id: r for r in send_and_receive(self.grid, messages, self.timeout)}
        self.bytes_moved += sum(len(p) for p in payloads.values())
        ok: list[int] = []
        for member in payloads:
            reply = replies.get(by_member[member])
            if reply is None:
                self._drop(member, f"no {stage} reply within {self.timeout:.0f} s")
            elif reply.has_error():
                self._drop(member, f"{stage}: {reply.error.reason or reply.error.code}")
            else:
                try:
                    data = bytes(reply.content["secagg"]["msg"])
                    self.bytes_moved += len(data)
                    accept(member, data)
                    ok.append(member)
                except (CollabError, KeyError, TypeError) as exc:
                    self._drop(member, f"{stage}: rejected ({exc})")
        return sorted(ok)

    def run(self, advertisements: Mapping[int, bytes]) -> AggregateResult:
        """Rounds 0-4 from the members' key advertisements (sent with their train replies) to the ring sum.

        Raises ``TooFewSurvivors`` when fewer than the threshold remain at any stage.
        """
        srv = self.server
        advertised: list[int] = []
        for member, data in advertisements.items():
            try:
                srv.receive_advertisement(_from(KeyAdvertisement, data, member))
                advertised.append(member)
            except CollabError as exc:
                self._drop(member, f"keys: rejected ({exc})")
        broadcasts = {m: srv.key_broadcast(m).to_bytes() for m in advertised}
        shared = self._exchange("share", broadcasts, lambda m, d: srv.receive_shares(_from(ShareKeys, d, m)))
        forwarded = {m: srv.forwarded_shares(m).to_bytes() for m in shared}
        self._exchange("mask", forwarded, lambda m, d: srv.receive_masked_input(_from(MaskedInput, d, m)))
        survivors = srv.survivor_list()
        addresses = [self.config.member(u).address for u in survivors.survivors]
        signed = self._exchange(
            "consistency",
            {m: survivors.to_bytes() for m in survivors.survivors},
            lambda m, d: srv.receive_consistency_signature(_from(ConsistencySignature, d, m)),
            {"endorsement": self.endorse(addresses)} if self.endorse is not None else None,
        )
        check = srv.consistency_broadcast().to_bytes()
        self._exchange("unmask", {m: check for m in signed}, lambda m, d: srv.receive_unmask(_from(UnmaskResponse, d, m)))
        return srv.aggregate()
