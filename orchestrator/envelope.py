"""EIP-712 signed request envelopes between nodes and the orchestrator.

Every request carries ``(sender, nonce, expiry, payloadHash)`` signed under the
domain ``("collab", "1", chainId, orchestrator address)``, so a signature made
for one orchestrator or chain cannot be replayed against another, and the
nonce + expiry let the server refuse replays without keeping history forever.
The payload is hashed in a canonical JSON form (sorted keys, no spaces) so the
same dict always signs to the same hash, whatever process built it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address

from collab.errors import BadInput, Unauthorized

DOMAIN_NAME = "collab"
DOMAIN_VERSION = "1"
DEFAULT_TTL = 60
TYPES: dict[str, list[dict[str, str]]] = {
    "Request": [
        {"name": "sender", "type": "address"},
        {"name": "nonce", "type": "uint256"},
        {"name": "expiry", "type": "uint64"},
        {"name": "payloadHash", "type": "bytes32"},
    ]
}


def canonical(payload: Any) -> bytes:
    """The canonical JSON bytes a payload hash is taken over."""
    try:
        return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    except (TypeError, ValueError) as exc:
        raise BadInput(f"payload is not JSON-serialisable: {exc}") from exc


def payload_hash(payload: Any) -> bytes:
    """keccak256 of the canonical JSON of ``payload``."""
    return keccak(canonical(payload))


def domain(chain_id: int, verifying_contract: str) -> dict[str, Any]:
    """The EIP-712 domain of one orchestrator on one chain."""
    return {
        "name": DOMAIN_NAME,
        "version": DOMAIN_VERSION,
        "chainId": int(chain_id),
        "verifyingContract": to_checksum_address(verifying_contract),
    }


@dataclass(frozen=True)
class Envelope:
    """The signed header of one request."""

    sender: str
    nonce: int
    expiry: int
    payload_hash: bytes

    def message(self) -> dict[str, Any]:
        return {"sender": to_checksum_address(self.sender), "nonce": self.nonce, "expiry": self.expiry,
                "payloadHash": self.payload_hash}

    def to_json(self) -> dict[str, Any]:
        return {"sender": to_checksum_address(self.sender), "nonce": self.nonce, "expiry": self.expiry,
                "payloadHash": "0x" + self.payload_hash.hex()}

    @classmethod
    def from_json(cls, raw: Any) -> Envelope:
        """Parse an envelope header; anything malformed is BadInput (never a crash)."""
        if not isinstance(raw, dict):
            raise BadInput("envelope must be an object")
        try:
            sender = to_checksum_address(str(raw["sender"]))
            nonce, expiry = raw["nonce"], raw["expiry"]
            digest = bytes.fromhex(str(raw["payloadHash"]).removeprefix("0x"))
        except (KeyError, ValueError, TypeError) as exc:
            raise BadInput(f"malformed envelope: {exc}") from exc
        if not (isinstance(nonce, int) and isinstance(expiry, int)) or isinstance(nonce, bool) or isinstance(expiry, bool):
            raise BadInput("envelope nonce and expiry must be integers")
        if not (0 <= nonce < 2**256 and 0 <= expiry < 2**64) or len(digest) != 32:
            raise BadInput("envelope field out of range")
        return cls(sender, nonce, expiry, digest)


def _signable(env: Envelope, chain_id: int, verifying_contract: str) -> Any:
    return encode_typed_data(domain(chain_id, verifying_contract), TYPES, env.message())


def sign_request(account: Any, payload: Any, *, chain_id: int, verifying_contract: str, nonce: int,
                 ttl: int = DEFAULT_TTL, now: float | None = None) -> dict[str, Any]:
    """A wire request: ``{"envelope", "signature", "payload"}`` signed by ``account`` (an eth_account signer)."""
    expiry = int((time.time() if now is None else now) + ttl)
    env = Envelope(account.address, nonce, expiry, payload_hash(payload))
    signed = account.sign_message(_signable(env, chain_id, verifying_contract))
    return {"envelope": env.to_json(), "signature": "0x" + bytes(signed.signature).hex(), "payload": payload}


def verify_request(request: Any, *, chain_id: int, verifying_contract: str, now: float | None = None) -> Envelope:
    """Check shape, payload hash, expiry and signature; returns the envelope (sender authenticated).

    Raises BadInput for malformed requests and Unauthorized for a bad, expired
    or mismatched signature; nonce freshness is the caller's job (it needs state).
    """
    if not isinstance(request, dict) or "payload" not in request:
        raise BadInput("request must be an object with envelope, signature and payload")
    if "signature" not in request or not request["signature"]:
        raise Unauthorized("request is not signed")
    env = Envelope.from_json(request.get("envelope"))
    if payload_hash(request["payload"]) != env.payload_hash:
        raise Unauthorized("payload hash does not match the signed envelope")
    if env.expiry < (time.time() if now is None else now):
        raise Unauthorized(f"request expired at {env.expiry}")
    try:
        signature = bytes.fromhex(str(request["signature"]).removeprefix("0x"))
        signer = Account.recover_message(_signable(env, chain_id, verifying_contract), signature=signature)
    except Exception as exc:  # eth_keys raises several types for junk signatures
        raise Unauthorized(f"bad signature: {exc}") from exc
    if signer != env.sender:
        raise Unauthorized(f"signature is by {signer}, not the envelope's sender {env.sender}")
    return env
