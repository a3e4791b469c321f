"""Typed client of ``DataAvailability``: answer or expire scoped data challenges (docs/protocol.md §7).

Challenges are opened through ``ClaimManagerClient.challenge_data`` (the
manager holds the bond); :func:`encode_commitment` builds the proof that the
claim commits to the challenged tensor.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import keccak

from chain.client import ContractClient, TxResult
from collab.errors import BadInput, NotFound

MAX_SOURCE_BYTES = 256  # DataAvailability.MAX_SOURCE_BYTES


class CommitmentKind(enum.IntEnum):
    """``IDataAvailability.CommitmentKind``."""

    INPUT_BUNDLE = 0
    INPUT_ENTRY = 1
    TRACE_LEAF = 2


class DataStatus(enum.IntEnum):
    """``IDataAvailability.Status``."""

    NONE = 0
    OPEN = 1
    ANSWERED = 2
    EXPIRED = 3


@dataclass(frozen=True)
class TensorCommitment:
    """``IDataAvailability.TensorCommitment``: how the claim commits to a tensor."""

    kind: CommitmentKind
    index: int = 0
    name_hash: bytes = b"\x00" * 32
    bundle_chunk_root: bytes = b"\x00" * 32
    bundle_header: bytes = b"\x00" * 32
    proof: Sequence[bytes] = ()

    def encode(self) -> bytes:
        """abi.encode of the struct (what ``challengeData`` takes)."""
        return abi_encode(
            ["(uint8,uint256,bytes32,bytes32,bytes32,bytes32[])"],
            [(int(self.kind), int(self.index), self.name_hash, self.bundle_chunk_root, self.bundle_header, list(self.proof))],
        )


def encode_commitment(commitment: TensorCommitment) -> bytes:
    """Encoded form of ``commitment``."""
    return commitment.encode()


@dataclass(frozen=True)
class DataChallenge:
    """``IDataAvailability.DataChallenge``."""

    claim_id: bytes
    tensor_root: bytes
    chunk_index: int
    deadline: int
    status: DataStatus

    @classmethod
    def from_tuple(cls, raw: Sequence[Any]) -> DataChallenge:
        """From the ABI tuple."""
        return cls(bytes(raw[0]), bytes(raw[1]), int(raw[2]), int(raw[3]), DataStatus(int(raw[4])))


def source_pointer(url: str) -> bytes:
    """A claim's ``daPointer`` for a blob-server URL: keccak256 of its UTF-8 bytes."""
    return bytes(keccak(url.encode("utf-8")))


class DataAvailabilityClient(ContractClient):
    """Calls on the deployed ``DataAvailability``."""

    CONTRACT = "DataAvailability"

    def respond(self, challenge_id: int, chunk_root: bytes, header: bytes, data: bytes, proof: Sequence[bytes]) -> TxResult:
        """Post the challenged chunk (or bundle entry) with its proof."""
        return self._transact("respond", int(challenge_id), bytes(chunk_root), bytes(header), bytes(data), [bytes(p) for p in proof])

    def expire(self, challenge_id: int) -> TxResult:
        """After the deadline: reject the claim."""
        return self._transact("expire", int(challenge_id))

    def publish_source(self, url: str) -> bytes:
        """Publish a blob-server URL on chain (once; idempotent); returns its ``daPointer``."""
        raw = url.encode("utf-8")
        scheme = 8 if raw.startswith(b"https://") else 7 if raw.startswith(b"http://") else 0
        if not scheme or len(raw) <= scheme or len(raw) > MAX_SOURCE_BYTES:
            raise BadInput(f"blob-server URL {url!r} must be http(s):// and at most {MAX_SOURCE_BYTES} bytes")
        pointer = source_pointer(url)
        if self.source_of(pointer) != url:
            self._transact("publishSource", url)
        return pointer

    def source_of(self, pointer: bytes) -> str | None:
        """The blob-server URL published under ``pointer``, or None (zero pointer or never published)."""
        if bytes(pointer) == bytes(32):
            return None
        try:
            return str(self._call("sourceOf", bytes(pointer)))
        except NotFound:
            return None

    def get_data_challenge(self, challenge_id: int) -> DataChallenge:
        """The data challenge (reverts ``UnknownDataChallenge``)."""
        return DataChallenge.from_tuple(self._call("getDataChallenge", int(challenge_id)))

    def open_challenges(self, claim_id: bytes, from_block: int = 0) -> list[int]:
        """Ids of the claim's data challenges still open (what a claimer must answer)."""
        topic = "0x" + bytes(claim_id).hex()
        ids = [int(e.args["challengeId"]) for e in self._events("DataChallenged", from_block=from_block, topics=[None, topic])]
        return [i for i in ids if self.get_data_challenge(i).status == DataStatus.OPEN]

    def posted_data(self, challenge_id: int, from_block: int = 0) -> bytes:
        """The chunk a response posted."""
        topic = "0x" + int(challenge_id).to_bytes(32, "big").hex()
        found = self._events("DataPosted", from_block=from_block, topics=[topic])
        if not found:
            raise NotFound(f"data challenge {challenge_id} has no response")
        return bytes.fromhex(str(found[-1].args["data"])[2:])
