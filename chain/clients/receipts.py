"""Typed client of ``Receipts``: soulbound (ERC-5192) attribution receipts.

Receipts are minted only by settlement; everyone else reads them. Transfers
and approvals exist in the ABI (ERC-721) but always revert ``Soulbound``,
which the client exposes so that tests and tools can show exactly that.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

from eth_utils import to_checksum_address

from chain.client import ContractClient, Event, TxResult
from collab.errors import BadInput, InternalError

ERC5192_INTERFACE_ID = bytes.fromhex("b45a3c0e")
ERC721_INTERFACE_ID = bytes.fromhex("80ac58cd")


class ContributionKind(enum.IntEnum):
    """``IReceipts.ContributionKind`` (same order as the Solidity enum)."""

    TRAINING_UPDATE = 0
    MERGE_INPUT = 1
    COMPUTE = 2
    DATA = 3

    @property
    def label(self) -> str:
        """CLI spelling: ``training-update``, ``merge-input``, ``compute``, ``data``."""
        return self.name.lower().replace("_", "-")

    @classmethod
    def parse(cls, value: str | int | ContributionKind) -> ContributionKind:
        """From a CLI label, an enum name or the integer value; BadInput otherwise."""
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                raise BadInput(f"unknown contribution kind {value}") from None
        key = str(value).strip().upper().replace("-", "_")
        if key in cls.__members__:
            return cls[key]
        raise BadInput(f"unknown contribution kind {value!r} (known: {', '.join(k.label for k in cls)})")


@dataclass(frozen=True)
class Receipt:
    """``IReceipts.Receipt``: one contribution."""

    asset_id: int
    claim_id: bytes
    weight: int
    kind: ContributionKind

    def as_tuple(self) -> tuple[int, bytes, int, int]:
        """ABI argument form."""
        if len(self.claim_id) != 32:
            raise BadInput(f"a claim id is 32 bytes, got {len(self.claim_id)}")
        return (int(self.asset_id), bytes(self.claim_id), int(self.weight), int(ContributionKind.parse(self.kind)))


@dataclass(frozen=True)
class ReceiptMinted:
    """``ReceiptMinted`` (always followed by ERC-5192 ``Locked``)."""

    token_id: int
    to: str
    receipt: Receipt
    locked: bool = False
    tx: TxResult | None = field(default=None, compare=False)


def decode_minted(tx: TxResult) -> list[ReceiptMinted]:
    """Every receipt a transaction minted; ``locked`` tells whether ``Locked`` was emitted for it."""
    locked = {int(e.args["tokenId"]) for e in tx.events_named("Locked")}
    return [_minted(e, locked, tx) for e in tx.events_named("ReceiptMinted")]


def _minted(event: Event, locked: set[int], tx: TxResult | None) -> ReceiptMinted:
    a = event.args
    token_id = int(a["tokenId"])
    receipt = Receipt(int(a["assetId"]), _hex(a["claimId"]), int(a["weight"]), ContributionKind(int(a["kind"])))
    return ReceiptMinted(token_id, to_checksum_address(a["to"]), receipt, token_id in locked, tx)


class ReceiptsClient(ContractClient):
    """Calls on the deployed ``Receipts``."""

    CONTRACT = "Receipts"

    # ------------------------------------------------------------------ views

    def settlement_role(self) -> bytes:
        """Role id of the settlement minters."""
        return bytes(self._call("SETTLEMENT_ROLE"))

    def receipt(self, token_id: int) -> Receipt:
        """The contribution a receipt records; reverts ``UnknownReceipt``."""
        raw = self._call("receipt", int(token_id))
        return Receipt(int(raw[0]), bytes(raw[1]), int(raw[2]), ContributionKind(int(raw[3])))

    def receipts_of(self, owner: str) -> list[int]:
        """Token ids held by ``owner`` in mint order."""
        return [int(i) for i in self._call("receiptsOf", to_checksum_address(owner))]

    def receipt_count(self) -> int:
        """Receipts minted so far."""
        return int(self._call("receiptCount"))

    def owner_of(self, token_id: int) -> str:
        """Holder of a receipt (ERC-721)."""
        return to_checksum_address(self._call("ownerOf", int(token_id)))

    def balance_of(self, owner: str) -> int:
        """Receipts held (ERC-721)."""
        return int(self._call("balanceOf", to_checksum_address(owner)))

    def locked(self, token_id: int) -> bool:
        """ERC-5192 ``locked`` (always True for an existing receipt)."""
        return bool(self._call("locked", int(token_id)))

    def supports_interface(self, interface_id: bytes) -> bool:
        """ERC-165."""
        return bool(self._call("supportsInterface", bytes(interface_id)))

    def has_role(self, role: bytes, account: str) -> bool:
        """Whether ``account`` holds the AccessControl ``role``."""
        return bool(self._call("hasRole", role, to_checksum_address(account)))

    def get_approved(self, token_id: int) -> str:
        """ERC-721 approved address (always zero: approvals are refused)."""
        return to_checksum_address(self._call("getApproved", int(token_id)))

    def is_approved_for_all(self, owner: str, operator: str) -> bool:
        """ERC-721 operator approval (always False: approvals are refused)."""
        return bool(self._call("isApprovedForAll", to_checksum_address(owner), to_checksum_address(operator)))

    def minted(self, from_block: int = 0) -> list[ReceiptMinted]:
        """Every receipt minted since ``from_block``, in chain order (all locked at mint)."""
        events = self._events(from_block=from_block)
        locked = {int(e.args["tokenId"]) for e in events if e.name == "Locked"}
        return [_minted(e, locked, None) for e in events if e.name == "ReceiptMinted"]

    # ------------------------------------------------------------------ transactions

    def mint(self, to: str, receipt: Receipt) -> ReceiptMinted:
        """Mint a locked receipt (settlement role only)."""
        tx = self._transact("mint", to_checksum_address(to), receipt.as_tuple())
        minted = decode_minted(tx)
        if not minted:
            raise InternalError(f"Receipts.mint {tx.tx_hash} emitted no ReceiptMinted")
        return dataclasses.replace(minted[0], tx=tx)

    def transfer_from(self, holder: str, to: str, token_id: int) -> TxResult:
        """ERC-721 ``transferFrom``: always reverts ``Soulbound``."""
        return self._transact("transferFrom", to_checksum_address(holder), to_checksum_address(to), int(token_id))

    def safe_transfer_from(self, holder: str, to: str, token_id: int, data: bytes = b"") -> TxResult:
        """ERC-721 ``safeTransferFrom``: always reverts ``Soulbound``."""
        return self._transact(
            "safeTransferFrom(address,address,uint256,bytes)",
            to_checksum_address(holder), to_checksum_address(to), int(token_id), bytes(data),
        )

    def approve(self, spender: str, token_id: int) -> TxResult:
        """ERC-721 ``approve``: always reverts ``Soulbound``."""
        return self._transact("approve", to_checksum_address(spender), int(token_id))

    def set_approval_for_all(self, operator: str, approved: bool) -> TxResult:
        """ERC-721 ``setApprovalForAll``: always reverts ``Soulbound(0)``."""
        return self._transact("setApprovalForAll", to_checksum_address(operator), bool(approved))

    def grant_role(self, role: bytes, account: str) -> TxResult:
        """Grant an AccessControl role (admin only)."""
        return self._transact("grantRole", role, to_checksum_address(account))

    def revoke_role(self, role: bytes, account: str) -> TxResult:
        """Revoke an AccessControl role (admin only)."""
        return self._transact("revokeRole", role, to_checksum_address(account))


def _hex(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    text = str(value)
    return bytes.fromhex(text[2:] if text.startswith("0x") else text)
