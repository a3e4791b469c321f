"""Typed client of ``AssetRegistry``: register assets, read their provenance.

``AssetInput``/``Asset`` are dataclasses mirroring the Solidity structs; every
transaction returns the dataclass of the event it emitted.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from eth_utils import to_checksum_address

from chain.client import ContractClient, Event, TxResult
from collab.errors import BadInput, InternalError

ZERO32 = bytes(32)


class AssetKind(enum.IntEnum):
    """``IAssetRegistry.AssetKind`` (same order as the Solidity enum)."""

    MODEL = 0
    DATASET = 1
    ADAPTER = 2
    AGENT = 3

    @property
    def label(self) -> str:
        """CLI spelling: ``model``, ``dataset``, ``adapter``, ``agent``."""
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | int | AssetKind) -> AssetKind:
        """From a CLI label, an enum name or the integer value; BadInput otherwise."""
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                raise BadInput(f"unknown asset kind {value}") from None
        key = str(value).strip().upper()
        if key in cls.__members__:
            return cls[key]
        raise BadInput(f"unknown asset kind {value!r} (known: {', '.join(k.label for k in cls)})")


@dataclass(frozen=True)
class AssetInput:
    """``IAssetRegistry.AssetInput``: what a registrant provides."""

    kind: AssetKind
    content_hash: bytes
    commitment_root: bytes = ZERO32
    key_commitment: bytes = ZERO32
    vault_uri: str = ""
    parents: tuple[int, ...] = ()
    derivative_royalty_bps: int = 0

    def as_tuple(self) -> tuple[Any, ...]:
        """ABI argument form (checks the fixed-size fields)."""
        for label, value in (("content hash", self.content_hash), ("commitment root", self.commitment_root),
                             ("key commitment", self.key_commitment)):
            if len(value) != 32:
                raise BadInput(f"the {label} is 32 bytes, got {len(value)}")
        if not 0 <= int(self.derivative_royalty_bps) < 2**16:
            raise BadInput(f"royalty bps out of range: {self.derivative_royalty_bps}")
        return (
            int(AssetKind.parse(self.kind)), bytes(self.content_hash), bytes(self.commitment_root),
            bytes(self.key_commitment), str(self.vault_uri), [int(p) for p in self.parents],
            int(self.derivative_royalty_bps),
        )


@dataclass(frozen=True)
class Asset:
    """``IAssetRegistry.Asset`` plus its id and parents."""

    id: int
    kind: AssetKind
    owner: str
    creator_id: int
    content_hash: bytes
    commitment_root: bytes
    key_commitment: bytes
    vault_uri: str
    derivative_royalty_bps: int
    registered_at: int
    parents: tuple[tuple[int, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (hashes as 0x-hex, parents as ``[{id, bps}]``)."""
        return {
            "id": self.id, "kind": self.kind.label, "owner": self.owner, "creator_id": self.creator_id,
            "content_hash": "0x" + self.content_hash.hex(), "commitment_root": "0x" + self.commitment_root.hex(),
            "key_commitment": "0x" + self.key_commitment.hex(), "vault_uri": self.vault_uri,
            "derivative_royalty_bps": self.derivative_royalty_bps, "registered_at": self.registered_at,
            "parents": [{"id": i, "bps": b} for i, b in self.parents],
        }


@dataclass(frozen=True)
class AssetRegistered:
    """``AssetRegistered``."""

    asset_id: int
    creator_id: int
    owner: str
    kind: AssetKind
    content_hash: bytes
    commitment_root: bytes
    tx: TxResult | None = field(default=None, compare=False)


@dataclass(frozen=True)
class AssetOwnershipTransferred:
    """``AssetOwnershipTransferred``."""

    asset_id: int
    previous_owner: str
    new_owner: str
    tx: TxResult | None = field(default=None, compare=False)


@dataclass(frozen=True)
class DerivativeRoyaltySet:
    """``DerivativeRoyaltySet``."""

    asset_id: int
    bps: int
    tx: TxResult | None = field(default=None, compare=False)


AssetEvent = AssetRegistered | AssetOwnershipTransferred | DerivativeRoyaltySet
E = TypeVar("E", AssetRegistered, AssetOwnershipTransferred, DerivativeRoyaltySet)


def decode_event(event: Event) -> AssetEvent | None:
    """The dataclass of one decoded registry event (None for other events)."""
    a = event.args
    if event.name == "AssetRegistered":
        return AssetRegistered(int(a["assetId"]), int(a["creatorId"]), to_checksum_address(a["owner"]),
                               AssetKind(int(a["kind"])), _hex(a["contentHash"]), _hex(a["commitmentRoot"]))
    if event.name == "AssetOwnershipTransferred":
        return AssetOwnershipTransferred(int(a["assetId"]), to_checksum_address(a["previousOwner"]),
                                         to_checksum_address(a["newOwner"]))
    if event.name == "DerivativeRoyaltySet":
        return DerivativeRoyaltySet(int(a["assetId"]), int(a["bps"]))
    return None


def events_in(tx: TxResult) -> list[AssetEvent]:
    """Every registry event a transaction emitted, in log order."""
    return [e for e in (decode_event(ev) for ev in tx.events) if e is not None]


class AssetRegistryClient(ContractClient):
    """Calls on the deployed ``AssetRegistry``."""

    CONTRACT = "AssetRegistry"

    # ------------------------------------------------------------------ views

    def settlement_role(self) -> bytes:
        """Role id of the settlement contracts."""
        return bytes(self._call("SETTLEMENT_ROLE"))

    def share_supply(self) -> int:
        """Shares minted per asset."""
        return int(self._call("SHARE_SUPPLY"))

    def max_parents(self) -> int:
        """Most direct parents an asset may list."""
        return int(self._call("MAX_PARENTS"))

    def exists(self, asset_id: int) -> bool:
        """Whether ``asset_id`` is registered."""
        return bool(self._call("exists", int(asset_id)))

    def owner_of(self, asset_id: int) -> str:
        """Current owner; reverts ``UnknownAsset``."""
        return to_checksum_address(self._call("ownerOf", int(asset_id)))

    def parents_of(self, asset_id: int) -> list[tuple[int, int]]:
        """``[(parent id, royalty bps)]``; reverts ``UnknownAsset``."""
        ids, bps = self._call("parentsOf", int(asset_id))
        return [(int(i), int(b)) for i, b in zip(ids, bps, strict=True)]

    def asset(self, asset_id: int) -> Asset:
        """The record of an asset with its parents; reverts ``UnknownAsset``."""
        raw = self._call("asset", int(asset_id))
        return Asset(
            id=int(asset_id), kind=AssetKind(int(raw[0])), owner=to_checksum_address(raw[1]), creator_id=int(raw[2]),
            content_hash=bytes(raw[3]), commitment_root=bytes(raw[4]), key_commitment=bytes(raw[5]),
            vault_uri=str(raw[6]), derivative_royalty_bps=int(raw[7]), registered_at=int(raw[8]),
            parents=tuple(self.parents_of(asset_id)),
        )

    def asset_count(self) -> int:
        """Assets registered so far (the highest id)."""
        return int(self._call("assetCount"))

    def assets(self, *, owner: str | None = None) -> list[Asset]:
        """Every asset (optionally only ``owner``'s), by id."""
        wanted = to_checksum_address(owner) if owner else None
        found = [self.asset(i) for i in range(1, self.asset_count() + 1)]
        return [a for a in found if wanted is None or a.owner == wanted]

    def has_role(self, role: bytes, account: str) -> bool:
        """Whether ``account`` holds the AccessControl ``role``."""
        return bool(self._call("hasRole", role, to_checksum_address(account)))

    def identity_address(self) -> str:
        """The IdentityRegistry registrants need an active Sahara ID in."""
        return to_checksum_address(self._call("IDENTITY"))

    def shares_address(self) -> str:
        """The Shares contract that mints each asset's supply."""
        return to_checksum_address(self._call("SHARES"))

    def history(self, from_block: int = 0) -> list[AssetEvent]:
        """Every registry event since ``from_block``, decoded, in chain order."""
        return [e for e in (decode_event(ev) for ev in self._events(from_block=from_block)) if e is not None]

    # ------------------------------------------------------------------ transactions

    def register(self, asset_input: AssetInput) -> AssetRegistered:
        """Register an asset created by the account, which receives all its Shares."""
        tx = self._transact("register", asset_input.as_tuple())
        return _with_tx(_only(tx, AssetRegistered), tx)

    def register_by_settlement(
        self, asset_input: AssetInput, owner: str, holders: Sequence[str], amounts: Sequence[int]
    ) -> AssetRegistered:
        """Register a settled job's asset, Shares to ``holders`` (settlement role only)."""
        tx = self._transact(
            "registerBySettlement", asset_input.as_tuple(), to_checksum_address(owner),
            [to_checksum_address(h) for h in holders], [int(a) for a in amounts],
        )
        return _with_tx(_only(tx, AssetRegistered), tx)

    def transfer_asset_ownership(self, asset_id: int, new_owner: str) -> AssetOwnershipTransferred:
        """Hand an asset the account owns to ``new_owner`` (Shares stay where they are)."""
        tx = self._transact("transferAssetOwnership", int(asset_id), to_checksum_address(new_owner))
        return _with_tx(_only(tx, AssetOwnershipTransferred), tx)

    def set_derivative_royalty(self, asset_id: int, bps: int) -> DerivativeRoyaltySet:
        """Set the rate future children pay this asset (owner only)."""
        tx = self._transact("setDerivativeRoyalty", int(asset_id), int(bps))
        return _with_tx(_only(tx, DerivativeRoyaltySet), tx)

    def grant_role(self, role: bytes, account: str) -> TxResult:
        """Grant an AccessControl role (admin only)."""
        return self._transact("grantRole", role, to_checksum_address(account))

    def revoke_role(self, role: bytes, account: str) -> TxResult:
        """Revoke an AccessControl role (admin only)."""
        return self._transact("revokeRole", role, to_checksum_address(account))


def _only(tx: TxResult, kind: type[E]) -> E:
    for event in events_in(tx):
        if isinstance(event, kind):
            return event
    raise InternalError(f"AssetRegistry transaction {tx.tx_hash} emitted no {kind.__name__}")


def _with_tx(event: E, tx: TxResult) -> E:
    return dataclasses.replace(event, tx=tx)


def _hex(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    text = str(value)
    return bytes.fromhex(text[2:] if text.startswith("0x") else text)
