"""Typed client of ``ProtocolParams``: governed numbers under ``keccak256(NAME)`` keys.

Callers name parameters (``"ADMISSION_STAKE"``) or pass raw 32-byte keys;
the key derivation is the same one ``chain.deploy.param_key`` and Solidity's
``ParamKeys`` use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eth_utils import keccak

from chain.client import ContractClient, TxResult
from collab.errors import BadInput, InternalError

# The parameters of docs/contracts.md and docs/protocol.md, by name.
PARAM_NAMES: tuple[str, ...] = (
    "ADMISSION_STAKE", "GENESIS_REPUTATION", "REPUTATION_HALF_LIFE", "MIN_REPUTATION_AGGREGATOR",
    "MIN_REPUTATION_CLAIMER", "COMPUTE_FEE_BPS", "KEY_DELIVERY_TIMEOUT", "KEY_DISPUTE_WINDOW",
    "CHALLENGE_WINDOW", "CLOCK_DURATION", "CLOCK_EXTENSION", "CLAIMER_BOND", "CHALLENGER_BOND",
    "BURN_BPS", "DA_BOND", "DA_RESPONSE_WINDOW",
)


def key_of(name_or_key: str | bytes) -> bytes:
    """The bytes32 key of a parameter name (or a 32-byte key / 0x-hex key passed through)."""
    if isinstance(name_or_key, (bytes, bytearray)):
        if len(name_or_key) != 32:
            raise BadInput(f"a parameter key is 32 bytes, got {len(name_or_key)}")
        return bytes(name_or_key)
    text = str(name_or_key)
    if text.startswith("0x") and len(text) == 66:
        return bytes.fromhex(text[2:])
    if not text:
        raise BadInput("empty parameter name")
    return keccak(text=text)


NAME_OF_KEY: dict[bytes, str] = {key_of(n): n for n in PARAM_NAMES}


@dataclass(frozen=True)
class ParamSet:
    """``ParamSet``: a governed value changed."""

    key: bytes
    old_value: int
    new_value: int
    tx: TxResult | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """The parameter's name when it is a known one, else the 0x key."""
        return NAME_OF_KEY.get(self.key, "0x" + self.key.hex())


class ProtocolParamsClient(ContractClient):
    """Calls on the deployed ``ProtocolParams``."""

    CONTRACT = "ProtocolParams"

    def get(self, name_or_key: str | bytes) -> int:
        """Current value; reverts ``UnknownParam`` for a key never set."""
        return int(self._call("get", key_of(name_or_key)))

    def get_many(self, names_or_keys: list[str | bytes]) -> list[int]:
        """Current values in one call (``getMany``); reverts ``UnknownParam`` if any key was never set."""
        return [int(v) for v in self._call("getMany", [key_of(n) for n in names_or_keys])]

    def epoch(self) -> int:
        """How many ``set`` calls so far: values read under one epoch stay valid until it moves."""
        return int(self._call("epoch"))

    def is_set(self, name_or_key: str | bytes) -> bool:
        """Whether the parameter was ever set."""
        return bool(self._call("isSet", key_of(name_or_key)))

    def owner(self) -> str:
        """The owner (the timelock after deployment)."""
        return str(self._call("owner"))

    def all(self) -> dict[str, int]:
        """Every known parameter that is set, by name."""
        return {n: self.get(n) for n in PARAM_NAMES if self.is_set(n)}

    def set(self, name_or_key: str | bytes, value: int) -> ParamSet:
        """Set a value (owner only; in production the timelock, via a proposal)."""
        if int(value) < 0:
            raise BadInput(f"parameter values are unsigned, got {value}")
        tx = self._transact("set", key_of(name_or_key), int(value))
        found = tx.events_named("ParamSet")
        if not found:
            raise InternalError(f"ProtocolParams.set {tx.tx_hash} emitted no ParamSet")
        a = found[0].args
        return ParamSet(bytes.fromhex(str(a["key"])[2:]), int(a["oldValue"]), int(a["newValue"]), tx)

    def transfer_ownership(self, new_owner: str) -> TxResult:
        """Hand the contract to ``new_owner`` (owner only)."""
        return self._transact("transferOwnership", new_owner)
