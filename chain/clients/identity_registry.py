"""Typed client of ``IdentityRegistry`` (Sahara ID): register, keys, roles, reputation.

Struct returns come back as :class:`Identity`/:class:`Keys` dataclasses and
every transaction as the dataclass of the event it emitted, so the CLI and
the orchestrator never touch raw ABI tuples or logs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, TypeVar

from eth_utils import to_checksum_address

from chain.client import ContractClient, Event, TxResult, default_artifacts
from chain.clients.protocol_params import ProtocolParamsClient
from collab.errors import BadInput, InternalError, Unauthorized


class Role(enum.IntEnum):
    """``IIdentityRegistry.Role`` (same order as the Solidity enum)."""

    HUMAN = 0
    AGENT = 1
    NODE = 2
    AGGREGATOR = 3

    @property
    def label(self) -> str:
        """CLI spelling: ``human``, ``agent``, ``node``, ``aggregator``."""
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | int | Role) -> Role:
        """From a CLI label, an enum name or the integer value; BadInput otherwise."""
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                raise BadInput(f"unknown role {value}") from None
        key = str(value).strip().upper()
        if key in cls.__members__:
            return cls[key]
        raise BadInput(f"unknown role {value!r} (known: {', '.join(r.label for r in cls)})")


@dataclass(frozen=True)
class Keys:
    """``IIdentityRegistry.Keys``: public halves registered for an identity."""

    curve_key: bytes
    x25519_key: bytes
    bls_pubkey: bytes
    bls_pop: bytes

    def as_tuple(self) -> tuple[bytes, bytes, bytes, bytes]:
        """ABI argument form."""
        return (_b32(self.curve_key), _b32(self.x25519_key), bytes(self.bls_pubkey), bytes(self.bls_pop))

    @classmethod
    def from_tuple(cls, raw: Any) -> Keys:
        """From the decoded ABI tuple."""
        return cls(bytes(raw[0]), bytes(raw[1]), bytes(raw[2]), bytes(raw[3]))


@dataclass(frozen=True)
class Identity:
    """``IIdentityRegistry.Identity`` plus its id."""

    id: int
    account: str
    name: str
    role: Role
    keys: Keys
    active: bool
    registered_at: int

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (keys as 0x-hex)."""
        return {
            "id": self.id, "account": self.account, "name": self.name, "role": self.role.label,
            "active": self.active, "registered_at": self.registered_at,
            "keys": {
                "curve_key": "0x" + self.keys.curve_key.hex(), "x25519_key": "0x" + self.keys.x25519_key.hex(),
                "bls_pubkey": "0x" + self.keys.bls_pubkey.hex(), "bls_pop": "0x" + self.keys.bls_pop.hex(),
            },
        }


@dataclass(frozen=True)
class IdentityRegistered:
    """``IdentityRegistered``."""

    id: int
    account: str
    role: Role
    name: str
    tx: TxResult | None = field(default=None, compare=False)


@dataclass(frozen=True)
class KeysUpdated:
    """``KeysUpdated``."""

    id: int
    tx: TxResult | None = field(default=None, compare=False)


@dataclass(frozen=True)
class AggregatorGranted:
    """``AggregatorGranted``."""

    id: int
    tx: TxResult | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ReputationChanged:
    """``ReputationChanged`` (``old_value`` is after decay)."""

    id: int
    old_value: int
    new_value: int
    tx: TxResult | None = field(default=None, compare=False)


@dataclass(frozen=True)
class IdentityExited:
    """``IdentityExited`` (+ the stake returned)."""

    id: int
    stake_returned: int = 0
    tx: TxResult | None = field(default=None, compare=False)


IdentityEvent = IdentityRegistered | KeysUpdated | AggregatorGranted | ReputationChanged | IdentityExited
E = TypeVar("E", IdentityRegistered, KeysUpdated, AggregatorGranted, ReputationChanged, IdentityExited)


def decode_event(event: Event) -> IdentityEvent | None:
    """The dataclass of one decoded registry event (None for other events)."""
    a = event.args
    if event.name == "IdentityRegistered":
        return IdentityRegistered(int(a["id"]), to_checksum_address(a["account"]), Role(int(a["role"])), str(a["name"]))
    if event.name == "KeysUpdated":
        return KeysUpdated(int(a["id"]))
    if event.name == "AggregatorGranted":
        return AggregatorGranted(int(a["id"]))
    if event.name == "ReputationChanged":
        return ReputationChanged(int(a["id"]), int(a["oldValue"]), int(a["newValue"]))
    if event.name == "IdentityExited":
        return IdentityExited(int(a["id"]))
    return None


def events_in(tx: TxResult) -> list[IdentityEvent]:
    """Every registry event a transaction emitted, in log order."""
    return [e for e in (decode_event(ev) for ev in tx.events) if e is not None]


class IdentityRegistryClient(ContractClient):
    """Calls on the deployed ``IdentityRegistry``."""

    CONTRACT = "IdentityRegistry"

    # ------------------------------------------------------------------ views

    def settlement_role(self) -> bytes:
        """Role id of the settlement contracts that may move reputation."""
        return bytes(self._call("SETTLEMENT_ROLE"))

    def max_name_length(self) -> int:
        """Longest display name accepted, in bytes."""
        return int(self._call("MAX_NAME_LENGTH"))

    def params_address(self) -> str:
        """The ProtocolParams this registry reads."""
        return to_checksum_address(self._call("PARAMS"))

    def params(self) -> ProtocolParamsClient:
        """A client of the ProtocolParams this registry reads."""
        artifact = default_artifacts()["ProtocolParams"]
        return ProtocolParamsClient(self.w3, self.params_address(), artifact.abi, self.account, name="ProtocolParams")

    def admission_stake(self) -> int:
        """Wei ``register`` must send now."""
        return self.params().get("ADMISSION_STAKE")

    def id_of(self, account: str) -> int:
        """Identity id of ``account`` (0 if none)."""
        return int(self._call("idOf", to_checksum_address(account)))

    def identity(self, identity_id: int) -> Identity:
        """The record of an id; reverts ``UnknownIdentity``."""
        raw = self._call("identity", int(identity_id))
        return Identity(
            id=int(identity_id), account=to_checksum_address(raw[0]), name=str(raw[1]), role=Role(int(raw[2])),
            keys=Keys.from_tuple(raw[3]), active=bool(raw[4]), registered_at=int(raw[5]),
        )

    def identity_of(self, account: str) -> Identity | None:
        """The record of ``account``'s identity, None if it has none."""
        identity_id = self.id_of(account)
        return self.identity(identity_id) if identity_id else None

    def is_active(self, identity_id: int) -> bool:
        """Whether the id exists and has not exited."""
        return bool(self._call("isActive", int(identity_id)))

    def reputation_of(self, identity_id: int) -> int:
        """Decayed reputation now."""
        return int(self._call("reputationOf", int(identity_id)))

    def stake_of(self, identity_id: int) -> int:
        """Stake locked (0 after exit)."""
        return int(self._call("stakeOf", int(identity_id)))

    def identity_count(self) -> int:
        """Identities ever registered."""
        return int(self._call("identityCount"))

    def can_claim(self, account: str) -> bool:
        """Whether ``account`` may post claims now."""
        return bool(self._call("canClaim", to_checksum_address(account)))

    def can_aggregate(self, account: str) -> bool:
        """Whether ``account`` may act as aggregator now."""
        return bool(self._call("canAggregate", to_checksum_address(account)))

    def has_role(self, role: bytes, account: str) -> bool:
        """Whether ``account`` holds the AccessControl ``role``."""
        return bool(self._call("hasRole", role, to_checksum_address(account)))

    def pop_domain(self) -> bytes:
        """Domain tag the proof-of-possession message starts with."""
        return bytes(self._call("POP_DOMAIN"))

    def history(self, from_block: int = 0) -> list[IdentityEvent]:
        """Every registry event since ``from_block``, decoded, in chain order."""
        return [e for e in (decode_event(ev) for ev in self._events(from_block=from_block)) if e is not None]

    # ------------------------------------------------------------------ transactions

    def keys_for(self, bls_secret: int, curve_key: bytes, x25519_key: bytes, account: str | None = None) -> Keys:
        """Keys for ``account`` (default: the signing account) with a proof of possession bound to this registry."""
        from collab import bls

        owner = account or self._me()
        pubkey = bls.sk_to_pk(bls_secret)
        pop = bls.prove_possession(bls_secret, int(self.w3.eth.chain_id), self.address, owner)
        return Keys(bytes(curve_key), bytes(x25519_key), pubkey, pop)

    def register(self, name: str, role: Role | str | int, keys: Keys, *, stake: int | None = None) -> IdentityRegistered:
        """Register the account, staking ``stake`` wei (default: the current ``ADMISSION_STAKE``)."""
        value = self.admission_stake() if stake is None else int(stake)
        tx = self._transact("register", name, int(Role.parse(role)), keys.as_tuple(), value=value)
        event = _only(tx, IdentityRegistered)
        return IdentityRegistered(event.id, event.account, event.role, event.name, tx)

    def update_keys(self, keys: Keys) -> KeysUpdated:
        """Replace the account's keys (proof of possession checked again)."""
        tx = self._transact("updateKeys", keys.as_tuple())
        return KeysUpdated(_only(tx, KeysUpdated).id, tx)

    def exit(self) -> IdentityExited:
        """Deactivate the account's identity and take its stake back."""
        identity_id = self.id_of(self._me())
        stake = self.stake_of(identity_id) if identity_id else 0
        tx = self._transact("exit")
        return IdentityExited(_only(tx, IdentityExited).id, stake, tx)

    def grant_aggregator(self, identity_id: int) -> AggregatorGranted:
        """Grant the aggregator role (admin only)."""
        tx = self._transact("grantAggregator", int(identity_id))
        return AggregatorGranted(_only(tx, AggregatorGranted).id, tx)

    def adjust_reputation(self, identity_id: int, delta: int) -> ReputationChanged:
        """Move reputation by ``delta`` after decay, floored at 0 (settlement role only)."""
        tx = self._transact("adjustReputation", int(identity_id), int(delta))
        e = _only(tx, ReputationChanged)
        return ReputationChanged(e.id, e.old_value, e.new_value, tx)

    def grant_role(self, role: bytes, account: str) -> TxResult:
        """Grant an AccessControl role (admin only)."""
        return self._transact("grantRole", role, to_checksum_address(account))

    def revoke_role(self, role: bytes, account: str) -> TxResult:
        """Revoke an AccessControl role (admin only)."""
        return self._transact("revokeRole", role, to_checksum_address(account))

    def _me(self) -> str:
        if self.account is None:
            raise Unauthorized("this IdentityRegistry call needs a signing account", hint="unlock an identity (COLLAB_PASSPHRASE)")
        return str(self.account.address)


def _only(tx: TxResult, kind: type[E]) -> E:
    for event in events_in(tx):
        if isinstance(event, kind):
            return event
    raise InternalError(f"IdentityRegistry transaction {tx.tx_hash} emitted no {kind.__name__}")


def _b32(value: bytes) -> bytes:
    if len(value) != 32:
        raise BadInput(f"a Curve/X25519 public key is 32 bytes, got {len(value)}")
    return bytes(value)
