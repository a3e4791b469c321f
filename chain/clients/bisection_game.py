"""Typed client of ``BisectionGame``: the moves of a claimer-reveals dissection (docs/protocol.md §5).

Every move is one transaction; the challenger's pick re-supplies the children
the claimer revealed, which this client reads back from ``ChildrenRevealed``
(the contract stores only their hash).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

from chain.client import ContractClient, Event, TxResult
from collab.errors import InternalError, NotFound


class Phase(enum.IntEnum):
    """``IBisectionGame.Phase``."""

    NONE = 0
    TRACE = 1
    HEADER = 2
    CHUNK = 3
    ELEMENT = 4
    STEP = 5
    RESOLVED = 6


class Side(enum.IntEnum):
    """``IBisectionGame.Side``."""

    CLAIMER = 0
    CHALLENGER = 1


class Reason(enum.IntEnum):
    """``IBisectionGame.Reason``: why a game ended."""

    PROOF = 0
    TIMEOUT = 1
    INVALID_HEADER = 2
    PADDING_LEAF = 3
    HEADER_MISMATCH = 4
    ILL_FORMED_INPUT = 5


@dataclass(frozen=True)
class Game:
    """``IBisectionGame.Game``."""

    claim_id: bytes
    claimer: str
    last_move_at: int
    log2k: int
    phase: Phase
    turn: Side
    revealed: bool
    claimer_won: bool
    challenger: str
    claimer_left: int
    challenger_left: int
    step_count: int
    step: int
    index: int
    depth: int
    tree_depth: int
    element: int
    clock_extension: int
    node: bytes
    pending: bytes
    header: bytes

    @classmethod
    def from_tuple(cls, raw: Sequence[Any]) -> Game:
        """From the ABI tuple."""
        return cls(
            bytes(raw[0]), to_checksum_address(raw[1]), int(raw[2]), int(raw[3]), Phase(int(raw[4])), Side(int(raw[5])),
            bool(raw[6]), bool(raw[7]), to_checksum_address(raw[8]), int(raw[9]), int(raw[10]), int(raw[11]),
            int(raw[12]), int(raw[13]), int(raw[14]), int(raw[15]), int(raw[16]), int(raw[17]),
            bytes(raw[18]), bytes(raw[19]), bytes(raw[20]),
        )

    @property
    def claimed_word(self) -> bytes:
        """The claimer's disputed element: ``pending`` holds it from the Step phase on (protocol §5.3)."""
        return self.pending

    @property
    def element_index(self) -> int:
        """The disputed output element (entry index for a bundle output)."""
        return self.index * 32 + self.element if self.header[:1] != b"\x02" else self.index


@dataclass(frozen=True)
class RootProof:
    """``IBisectionGame.RootProof``."""

    name_hash: bytes
    proof: Sequence[bytes]

    def as_tuple(self) -> tuple[bytes, list[bytes]]:
        """ABI form."""
        return (bytes(self.name_hash), [bytes(p) for p in self.proof])


@dataclass(frozen=True)
class StepProof:
    """``IBisectionGame.StepProof``; ``inputs`` are ``(header, chunkRoot, firstChunk, chunks, proof)`` tuples.

    ``claim_roots`` is the claim's ``ClaimRoots`` ABI tuple (from ``ClaimPosted``).
    """

    claim_roots: tuple[bytes, bytes, bytes, bytes, bytes]
    descriptor: bytes
    step_proof: Sequence[bytes]
    bundle_chunk_root: bytes
    bundle_header: bytes
    roots: Sequence[RootProof]
    inputs: Sequence[tuple[bytes, bytes, int, bytes, list[bytes]]]

    def as_tuple(self) -> tuple[Any, ...]:
        """ABI form."""
        return (
            tuple(bytes(r) for r in self.claim_roots),
            bytes(self.descriptor), [bytes(p) for p in self.step_proof], bytes(self.bundle_chunk_root),
            bytes(self.bundle_header), [r.as_tuple() for r in self.roots], [tuple(i) for i in self.inputs],
        )


class BisectionGameClient(ContractClient):
    """Calls on the deployed ``BisectionGame``."""

    CONTRACT = "BisectionGame"

    # ---------------------------------------------------------------- moves

    def reveal(self, game_id: int, children: Sequence[bytes]) -> TxResult:
        """Claimer: reveal the descendants of the current node."""
        return self._transact("reveal", int(game_id), [bytes(c) for c in children])

    def pick(self, game_id: int, children: Sequence[bytes], choice: int) -> TxResult:
        """Challenger: pick child ``choice`` of the revealed ``children``."""
        return self._transact("pick", int(game_id), [bytes(c) for c in children], int(choice))

    def reveal_header(
        self, game_id: int, chunk_root: bytes, header: bytes, children: Sequence[bytes] = (), chunk: bytes = b""
    ) -> TxResult:
        """Claimer: reveal the disputed step's output header with the first chunk-tree reveal."""
        return self._transact("revealHeader", int(game_id), bytes(chunk_root), bytes(header), [bytes(c) for c in children], bytes(chunk))

    def reveal_chunk(self, game_id: int, chunk: bytes) -> TxResult:
        """Claimer: reveal the disputed chunk's 256 bytes."""
        return self._transact("revealChunk", int(game_id), bytes(chunk))

    def pick_element(self, game_id: int, chunk: bytes, element: int) -> TxResult:
        """Challenger: pick the first differing element of the revealed chunk."""
        return self._transact("pickElement", int(game_id), bytes(chunk), int(element))

    def prove_step(self, game_id: int, proof: StepProof) -> TxResult:
        """Anyone: the one-step proof; decides the game."""
        return self._transact("proveStep", int(game_id), proof.as_tuple())

    def resolve_timeout(self, game_id: int) -> TxResult:
        """Anyone: the side to move lost on time."""
        return self._transact("resolveTimeout", int(game_id))

    # ---------------------------------------------------------------- views

    def get_game(self, game_id: int) -> Game:
        """The game (reverts ``UnknownGame``)."""
        return Game.from_tuple(self._call("getGame", int(game_id)))

    def deadline_of(self, game_id: int) -> int:
        """When the side to move runs out of time (block timestamp)."""
        return int(self._call("deadlineOf", int(game_id)))

    def verifier_address(self) -> str:
        """The OneStepVerifier."""
        return str(self._call("VERIFIER"))

    # ---------------------------------------------------------------- history

    def _game_events(self, name: str, game_id: int, from_block: int = 0) -> list[Event]:
        topic = "0x" + int(game_id).to_bytes(32, "big").hex()
        return self._events(name, from_block=from_block, topics=[topic])

    def reveals(self, game_id: int, from_block: int = 0) -> list[dict[str, Any]]:
        """Every ``ChildrenRevealed`` of the game, oldest first (children as bytes)."""
        out = []
        for e in self._game_events("ChildrenRevealed", game_id, from_block):
            a = dict(e.args)
            a["children"] = [bytes.fromhex(str(c)[2:]) for c in a["children"]]
            out.append(a)
        return out

    def last_reveal(self, game_id: int, from_block: int = 0) -> list[bytes]:
        """The children of the latest reveal (what a pick must re-supply)."""
        found = self.reveals(game_id, from_block)
        if not found:
            raise NotFound(f"game {game_id} has no reveal yet")
        return list(found[-1]["children"])

    def revealed_chunk(self, game_id: int, from_block: int = 0) -> bytes:
        """The chunk the claimer revealed in the element round."""
        found = self._game_events("ChunkRevealed", game_id, from_block)
        if not found:
            raise NotFound(f"game {game_id} has no revealed chunk yet")
        return bytes.fromhex(str(found[-1].args["chunk"])[2:])

    def resolution(self, game_id: int, from_block: int = 0) -> tuple[bool, Reason]:
        """(claimer won, reason) of a resolved game."""
        found = self._game_events("GameResolved", game_id, from_block)
        if not found:
            raise InternalError(f"game {game_id} is not resolved")
        a = found[-1].args
        return bool(a["claimerWon"]), Reason(int(a["reason"]))
