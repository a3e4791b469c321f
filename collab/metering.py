"""EIP-712 call receipts: how an API licensee vouches for the calls it made.

The licensee signs a *cumulative* receipt (license id, total calls so far,
hash of the last request) after every call; the asset owner's node keeps the
latest one and posts it to ``Licensing.postCallReceipt`` in batches. Because
the counter only grows, the contract pays ``totalCalls - callsPaid`` and an old
receipt can never be replayed, so the node never needs the licensee online to
get paid and the licensee never pays twice for the same call.

This is a small library used by the CLI, the serving node and the tests; the
domain and type string must match ``chain/contracts/Licensing.sol`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from collab.errors import BadInput, ProtocolViolation

DOMAIN_NAME = "collab-licensing"
DOMAIN_VERSION = "1"
CALL_RECEIPT_TYPE = "CallReceipt(uint256 licenseId,uint256 totalCalls,bytes32 lastRequestHash)"
CALL_RECEIPT_TYPES: dict[str, list[dict[str, str]]] = {
    "CallReceipt": [
        {"name": "licenseId", "type": "uint256"},
        {"name": "totalCalls", "type": "uint256"},
        {"name": "lastRequestHash", "type": "bytes32"},
    ]
}
ZERO_HASH = b"\x00" * 32


@dataclass(frozen=True)
class MeteringDomain:
    """The EIP-712 domain of one ``Licensing`` deployment (binds receipts to chain and contract)."""

    chain_id: int
    verifying_contract: str
    name: str = DOMAIN_NAME
    version: str = DOMAIN_VERSION

    def to_eip712(self) -> dict[str, Any]:
        """The domain as eth-account's ``domain_data``."""
        return {
            "name": self.name,
            "version": self.version,
            "chainId": int(self.chain_id),
            "verifyingContract": to_checksum_address(self.verifying_contract),
        }


@dataclass(frozen=True)
class CallReceipt:
    """Cumulative statement: ``total_calls`` made under ``license_id``, the last one hashed."""

    license_id: int
    total_calls: int
    last_request_hash: bytes = ZERO_HASH

    def __post_init__(self) -> None:
        if self.license_id <= 0:
            raise BadInput(f"call receipt needs a license id >= 1, got {self.license_id}")
        if self.total_calls <= 0 or self.total_calls >= 2**256:
            raise BadInput(f"call receipt needs 1 <= total_calls < 2^256, got {self.total_calls}")
        if len(self.last_request_hash) != 32:
            raise BadInput(f"last_request_hash must be 32 bytes, got {len(self.last_request_hash)}")

    def to_eip712(self) -> dict[str, Any]:
        """The receipt as eth-account's ``message_data``."""
        return {"licenseId": self.license_id, "totalCalls": self.total_calls, "lastRequestHash": self.last_request_hash}

    def as_tuple(self) -> tuple[int, int, bytes]:
        """The receipt as the Solidity struct tuple ``(licenseId, totalCalls, lastRequestHash)``."""
        return (self.license_id, self.total_calls, self.last_request_hash)

    def to_json(self) -> dict[str, Any]:
        """JSON-able form (hash as 0x-hex)."""
        return {"license_id": self.license_id, "total_calls": self.total_calls, "last_request_hash": "0x" + self.last_request_hash.hex()}

    def next(self, request: bytes) -> CallReceipt:
        """The receipt after one more call whose request bytes are ``request``."""
        return CallReceipt(self.license_id, self.total_calls + 1, request_hash(request))


def request_hash(request: bytes) -> bytes:
    """keccak256 of a request's bytes: what a receipt names as its last request."""
    return keccak(request)


def first_receipt(license_id: int, request: bytes) -> CallReceipt:
    """The receipt after the first call of a license."""
    return CallReceipt(license_id, 1, request_hash(request))


def _signable(domain: MeteringDomain, receipt: CallReceipt) -> SignableMessage:
    return encode_typed_data(domain.to_eip712(), CALL_RECEIPT_TYPES, receipt.to_eip712())


def receipt_digest(domain: MeteringDomain, receipt: CallReceipt) -> bytes:
    """The 32-byte EIP-712 digest (equals ``Licensing.callReceiptDigest``)."""
    message = _signable(domain, receipt)
    return keccak(b"\x19" + message.version + message.header + message.body)


def sign_call_receipt(account: LocalAccount, domain: MeteringDomain, receipt: CallReceipt) -> bytes:
    """The licensee's 65-byte signature (r, s, v) over ``receipt``."""
    signed = account.sign_typed_data(domain.to_eip712(), CALL_RECEIPT_TYPES, receipt.to_eip712())
    return bytes(signed.signature)


def recover_signer(domain: MeteringDomain, receipt: CallReceipt, signature: bytes) -> str:
    """The checksummed address that signed ``receipt``; ProtocolViolation if the signature is malformed."""
    try:
        return to_checksum_address(Account.recover_message(_signable(domain, receipt), signature=signature))
    except Exception as exc:  # eth-keys raises several types for bad signatures
        raise ProtocolViolation(f"malformed call receipt signature: {exc}") from None


def verify_call_receipt(domain: MeteringDomain, receipt: CallReceipt, signature: bytes, licensee: str) -> None:
    """Raise ProtocolViolation unless ``licensee`` signed ``receipt`` (what the node checks before serving)."""
    signer = recover_signer(domain, receipt, signature)
    if signer != to_checksum_address(licensee):
        raise ProtocolViolation(
            f"call receipt for license {receipt.license_id} is signed by {signer}, not by the licensee {licensee}"
        )


def check_progress(previous: CallReceipt | None, receipt: CallReceipt) -> None:
    """Raise ProtocolViolation unless ``receipt`` counts more calls than ``previous`` (same license)."""
    if previous is None:
        return
    if receipt.license_id != previous.license_id:
        raise ProtocolViolation(f"receipt is for license {receipt.license_id}, expected {previous.license_id}")
    if receipt.total_calls <= previous.total_calls:
        raise ProtocolViolation(f"stale call receipt: total {receipt.total_calls} <= {previous.total_calls} already counted")
