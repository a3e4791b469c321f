"""Typed client of ``MergeRegistry``: record a claimed merge, read it back, settle it.

The merger records the job (inputs with weights, its Share fraction, what to
register) before posting the claim; the registry checks every input on-chain
and names the claim id that will settle it. At finalization ClaimManager runs
the registry as the claim's settlement hook, which registers the merged asset
and mints its Shares and Receipts (``settle`` retries that for anyone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_utils import to_checksum_address

from chain.client import ContractClient, TxResult
from chain.clients.asset_registry import AssetKind
from chain.clients.claim_manager import ClaimRoots
from collab.errors import BadInput, InternalError

ZERO32 = b"\x00" * 32


def _b32(value: Any) -> bytes:
    """bytes32 from a call result or decoded event (bytes or 0x-hex)."""
    return bytes.fromhex(value.removeprefix("0x")) if isinstance(value, str) else bytes(value)


@dataclass(frozen=True)
class MergeInput:
    """``IMergeRegistry.MergeInput``: an input asset (0: the merger's own local model) and its integer weight."""

    asset_id: int
    weight: int

    def as_tuple(self) -> tuple[int, int]:
        if self.asset_id < 0 or self.weight <= 0:
            raise BadInput(f"merge input {self.asset_id}: weight must be positive, got {self.weight}")
        return (int(self.asset_id), int(self.weight))


@dataclass(frozen=True)
class MergedAsset:
    """``IMergeRegistry.MergedAsset``: what the settlement registers."""

    content_hash: bytes
    key_commitment: bytes = ZERO32
    vault_uri: str = ""
    kind: AssetKind = AssetKind.MODEL
    derivative_royalty_bps: int = 0

    def as_tuple(self) -> tuple[int, bytes, bytes, str, int]:
        if len(self.content_hash) != 32 or len(self.key_commitment) != 32:
            raise BadInput("content hash and key commitment are 32 bytes")
        if not 0 <= self.derivative_royalty_bps <= 10_000:
            raise BadInput(f"royalty bps out of range: {self.derivative_royalty_bps}")
        return (int(AssetKind.parse(self.kind)), bytes(self.content_hash), bytes(self.key_commitment),
                str(self.vault_uri), int(self.derivative_royalty_bps))


@dataclass(frozen=True)
class MergeJob:
    """``IMergeRegistry.MergeJob`` plus its recorded contributors and parents."""

    job_id: bytes
    merger: str
    claim_id: bytes
    output_root: bytes
    merger_share_bps: int
    base_asset_id: int
    contributors: tuple[str, ...] = ()
    weights: tuple[int, ...] = ()
    parents: tuple[int, ...] = ()


@dataclass(frozen=True)
class MergeRecorded:
    """``MergeRecorded``."""

    job_id: bytes
    merger: str
    claim_id: bytes
    parents: tuple[int, ...]
    contributors: tuple[str, ...]
    weights: tuple[int, ...]
    tx: TxResult | None = field(default=None, compare=False)


class MergeRegistryClient(ContractClient):
    """``MergeRegistry``."""

    CONTRACT = "MergeRegistry"

    def record(
        self, job_id: bytes, program_root: bytes, input_root: bytes, output_root: bytes, inputs: Sequence[MergeInput],
        asset: MergedAsset, *, base_asset_id: int = 0, merger_share_bps: int = 0,
    ) -> MergeRecorded:
        """Record a merge before posting its claim; reverts ``InputNotLicensed`` for an input the caller may not use."""
        if not 0 <= merger_share_bps <= 10_000:
            raise BadInput(f"the merger's Share fraction must be 0..10000 bps, got {merger_share_bps}")
        tx = self._transact("record", job_id, program_root, input_root, output_root, [i.as_tuple() for i in inputs],
                            int(base_asset_id), int(merger_share_bps), asset.as_tuple())
        events = tx.events_named("MergeRecorded")
        if not events:
            raise InternalError("record did not emit MergeRecorded")
        a = events[0].args
        return MergeRecorded(_b32(a["jobId"]), to_checksum_address(a["merger"]), _b32(a["claimId"]),
                             tuple(int(p) for p in a["parents"]), tuple(to_checksum_address(c) for c in a["contributors"]),
                             tuple(int(w) for w in a["weights"]), tx)

    def may_merge(self, asset_id: int, merger: str) -> bool:
        """Whether ``merger`` owns or holds a current Full-access / Partnership license for ``asset_id``."""
        return bool(self._call("mayMerge", int(asset_id), to_checksum_address(merger)))

    def is_participant(self, job_id: bytes, account: str) -> bool:
        """The merger and the input owners (the claim's participants audience)."""
        return bool(self._call("isParticipant", job_id, to_checksum_address(account)))

    def job(self, job_id: bytes) -> MergeJob:
        """A recorded job with its contributors and parents."""
        raw = self._call("job", job_id)
        contributors, weights = self._call("contributorsOf", job_id)
        parents = self._call("parentsOf", job_id)
        return MergeJob(job_id, to_checksum_address(raw[0]), _b32(raw[1]), _b32(raw[2]), int(raw[3]), int(raw[4]),
                        tuple(to_checksum_address(c) for c in contributors), tuple(int(w) for w in weights),
                        tuple(int(p) for p in parents))

    def job_of_claim(self, claim_id: bytes) -> bytes:
        """The job a claim settles (zero bytes if none)."""
        return _b32(self._call("jobOfClaim", claim_id))

    def settled_asset(self, claim_id: bytes) -> int:
        """The asset registered when the claim settled (0 before)."""
        return int(self._call("settledAsset", claim_id))

    def share_split(self, supply: int, creator_bps: int, weights: Sequence[int]) -> tuple[int, list[int]]:
        """The contract's exact split of ``supply`` (creator's amount, per-contributor amounts)."""
        creator, amounts = self._call("shareSplit", int(supply), int(creator_bps), [int(w) for w in weights])
        return int(creator), [int(a) for a in amounts]

    def settle(self, claim_id: bytes, roots: ClaimRoots) -> TxResult:
        """Retry the settlement of a finalized claim whose hook failed."""
        return self._transact("settle", claim_id, roots.as_tuple())


__all__ = ["MergeInput", "MergeJob", "MergeRecorded", "MergeRegistryClient", "MergedAsset"]
