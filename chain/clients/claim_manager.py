"""Typed client of ``ClaimManager``: optimistic claims, challenges, finalization and credits.

The manager is the bank of the fraud-proof game (docs/protocol.md §4-§7):
claims are posted here with their bond, games and data challenges are opened
here with theirs, outcomes are reported here by the game contracts, and every
payout is a pull credit withdrawn with :meth:`ClaimManagerClient.claim_credit`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_utils import keccak, to_checksum_address

from chain.client import ContractClient, Event, TxResult
from collab.errors import BadInput, InternalError, NotFound

ZERO_ADDRESS = "0x" + "00" * 20
BURN_ADDRESS = to_checksum_address("0x000000000000000000000000000000000000dEaD")


class Audience(enum.IntEnum):
    """``IClaimManager.Audience``: who may fetch a claim's data and challenge it."""

    PUBLIC = 0
    PARTICIPANTS = 1
    LICENSED_VERIFIERS = 2

    @classmethod
    def parse(cls, value: str | int | Audience) -> Audience:
        """From a CLI label (``public``, ``participants``, ``licensed-verifiers``) or the integer."""
        if isinstance(value, int):
            return cls(value)
        key = str(value).strip().upper().replace("-", "_")
        if key not in cls.__members__:
            raise BadInput(f"unknown audience {value!r} (known: public, participants, licensed-verifiers)")
        return cls[key]


class ClaimStatus(enum.IntEnum):
    """``IClaimManager.ClaimStatus``."""

    NONE = 0
    PENDING = 1
    FINALIZED = 2
    REJECTED = 3


class ChallengeKind(enum.IntEnum):
    """``IClaimManager.ChallengeKind``."""

    GAME = 0
    DATA = 1


class ChallengeStatus(enum.IntEnum):
    """``IClaimManager.ChallengeStatus``."""

    NONE = 0
    OPEN = 1
    CLAIMER_WON = 2
    CHALLENGER_WON = 3
    REFUNDED = 4


def _b32(value: bytes | str) -> bytes:
    raw = bytes.fromhex(value[2:]) if isinstance(value, str) else bytes(value)
    if len(raw) != 32:
        raise BadInput(f"expected 32 bytes, got {len(raw)}")
    return raw


def claim_id_of(job_id: bytes, program_root: bytes, input_root: bytes) -> bytes:
    """The deterministic claim id ``keccak(jobId ‖ programRoot ‖ inputRoot)``."""
    return keccak(_b32(job_id) + _b32(program_root) + _b32(input_root))


@dataclass(frozen=True)
class ClaimInput:
    """``IClaimManager.ClaimInput``: what a claimer posts."""

    job_id: bytes
    program_root: bytes
    step_tree_root: bytes
    step_count: int
    input_root: bytes
    output_root: bytes
    trace_root: bytes
    last_leaf_proof: Sequence[bytes]
    log2k: int = 1
    audience: Audience = Audience.PUBLIC
    participants: Sequence[str] = ()
    participant_registry: str = ZERO_ADDRESS
    asset_id: int = 0
    da_pointer: bytes = b"\x00" * 32
    settlement_hook: str = ZERO_ADDRESS

    @property
    def claim_id(self) -> bytes:
        """The id the contract will assign."""
        return claim_id_of(self.job_id, self.program_root, self.input_root)

    def as_tuple(self) -> tuple[Any, ...]:
        """ABI argument form (struct order)."""
        return (
            _b32(self.job_id), _b32(self.program_root), _b32(self.step_tree_root), int(self.step_count),
            _b32(self.input_root), _b32(self.output_root), _b32(self.trace_root),
            [_b32(p) for p in self.last_leaf_proof], int(self.log2k), int(Audience.parse(self.audience)),
            [to_checksum_address(a) for a in self.participants], to_checksum_address(self.participant_registry),
            int(self.asset_id), _b32(self.da_pointer), to_checksum_address(self.settlement_hook),
        )


@dataclass(frozen=True)
class ClaimRoots:
    """``IClaimManager.ClaimRoots``: the roots a claim binds (stored on chain as one hash)."""

    step_tree_root: bytes
    input_root: bytes
    output_root: bytes
    trace_root: bytes
    da_pointer: bytes

    def as_tuple(self) -> tuple[bytes, bytes, bytes, bytes, bytes]:
        """ABI form (struct order)."""
        return (_b32(self.step_tree_root), _b32(self.input_root), _b32(self.output_root), _b32(self.trace_root), _b32(self.da_pointer))

    @classmethod
    def from_args(cls, raw: Any) -> ClaimRoots:
        """From a decoded event struct (dict by field name) or an ABI tuple."""
        if isinstance(raw, dict):
            names = ("stepTreeRoot", "inputRoot", "outputRoot", "traceRoot", "daPointer")
            return cls(*(_b32(raw[n]) for n in names))
        return cls(*(_b32(r) if isinstance(r, str) else bytes(r) for r in raw))

    @property
    def hash(self) -> bytes:
        """``keccak256(abi.encode(roots))``, what the claim stores."""
        return keccak(b"".join(self.as_tuple()))


@dataclass(frozen=True)
class Params:
    """``IClaimManager.Params``: a claim's snapshot of the governed numbers."""

    challenge_window: int
    clock_duration: int
    clock_extension: int
    da_response_window: int
    claimer_bond: int
    challenger_bond: int
    da_bond: int
    burn_bps: int

    @classmethod
    def from_tuple(cls, raw: Sequence[Any]) -> Params:
        """From the ABI tuple."""
        return cls(*(int(v) for v in raw))

    def winner_share(self, bond: int) -> int:
        """What a winner receives of a loser's ``bond`` (§5.5); the rest is burnt."""
        return bond * (10_000 - self.burn_bps) // 10_000


@dataclass(frozen=True)
class Claim:
    """``IClaimManager.Claim``."""

    claimer: str
    posted_at: int
    status: ClaimStatus
    audience: Audience
    log2k: int
    open_challenges: int
    step_count: int
    params_version: int
    settlement_hook: str
    roots_hash: bytes
    roots: ClaimRoots | None = None

    @classmethod
    def from_tuple(cls, raw: Sequence[Any], roots: ClaimRoots | None = None) -> Claim:
        """From the ABI tuple (``roots`` from ``ClaimPosted``)."""
        return cls(
            to_checksum_address(raw[0]), int(raw[1]), ClaimStatus(int(raw[2])), Audience(int(raw[3])), int(raw[4]),
            int(raw[5]), int(raw[6]), int(raw[7]), to_checksum_address(raw[8]), bytes(raw[9]), roots,
        )

    def _roots(self) -> ClaimRoots:
        if self.roots is None:
            raise InternalError("the claim's roots were not loaded from ClaimPosted")
        return self.roots

    @property
    def step_tree_root(self) -> bytes:
        """Root of the program's step tree."""
        return self._roots().step_tree_root

    @property
    def input_root(self) -> bytes:
        """Input bundle root."""
        return self._roots().input_root

    @property
    def output_root(self) -> bytes:
        """Output tensor root."""
        return self._roots().output_root

    @property
    def trace_root(self) -> bytes:
        """Trace root."""
        return self._roots().trace_root

    @property
    def da_pointer(self) -> bytes:
        """Blob server record pointer."""
        return self._roots().da_pointer


@dataclass(frozen=True)
class Challenge:
    """``IClaimManager.Challenge``."""

    claim_id: bytes
    challenger: str
    kind: ChallengeKind
    status: ChallengeStatus
    bond: int

    @classmethod
    def from_tuple(cls, raw: Sequence[Any]) -> Challenge:
        """From the ABI tuple."""
        return cls(bytes(raw[0]), to_checksum_address(raw[1]), ChallengeKind(int(raw[2])), ChallengeStatus(int(raw[3])), int(raw[4]))


@dataclass(frozen=True)
class ClaimPosted:
    """``ClaimPosted``."""

    claim_id: bytes
    claimer: str
    job_id: bytes
    program_root: bytes
    roots: ClaimRoots
    step_count: int
    log2k: int
    audience: Audience
    tx: TxResult | None = field(default=None, compare=False)

    @classmethod
    def from_event(cls, event: Event, tx: TxResult | None = None) -> ClaimPosted:
        """From a decoded event."""
        a = event.args
        return cls(
            _b32(a["claimId"]), str(a["claimer"]), _b32(a["jobId"]), _b32(a["programRoot"]), ClaimRoots.from_args(a["roots"]),
            int(a["stepCount"]), int(a["log2K"]), Audience(int(a["audience"])), tx,
        )

    @property
    def output_root(self) -> bytes:
        """Output tensor root."""
        return self.roots.output_root

    @property
    def trace_root(self) -> bytes:
        """Trace root."""
        return self.roots.trace_root


def _one(tx: TxResult, name: str) -> Event:
    found = tx.events_named(name)
    if not found:
        raise InternalError(f"transaction {tx.tx_hash} emitted no {name}")
    return found[0]


class ClaimManagerClient(ContractClient):
    """Calls on the deployed ``ClaimManager``."""

    CONTRACT = "ClaimManager"

    @property
    def _roots_cache(self) -> dict[bytes, ClaimRoots]:
        # Shared by with_account() clones: roots of a claim never change.
        cache: dict[bytes, ClaimRoots] | None = self.__dict__.get("_roots")
        if cache is None:
            cache = self.__dict__["_roots"] = {}
        return cache

    # ---------------------------------------------------------------- transactions

    def post_claim(self, claim: ClaimInput, *, bond: int | None = None) -> ClaimPosted:
        """Post ``claim`` with the current CLAIMER_BOND (or ``bond`` wei, to test a wrong one)."""
        value = self.current_claimer_bond() if bond is None else int(bond)
        tx = self._transact("postClaim", claim.as_tuple(), value=value)
        return ClaimPosted.from_event(_one(tx, "ClaimPosted"), tx)

    def challenge(self, claim_id: bytes, *, bond: int | None = None) -> tuple[int, TxResult]:
        """Open a game against ``claim_id`` with the claim's CHALLENGER_BOND; returns (game id, tx)."""
        value = self.params_of(claim_id).challenger_bond if bond is None else int(bond)
        tx = self._transact("challenge", _b32(claim_id), self.roots_of(claim_id).as_tuple(), value=value)
        return int(_one(tx, "ChallengeOpened").args["challengeId"]), tx

    def challenge_data(
        self, claim_id: bytes, tensor_root: bytes, chunk_index: int, commitment: bytes, *, bond: int | None = None
    ) -> tuple[int, TxResult]:
        """Open a data challenge (``commitment``: encoded ``TensorCommitment``); returns (id, tx)."""
        value = self.params_of(claim_id).da_bond if bond is None else int(bond)
        roots = self.roots_of(claim_id).as_tuple()
        tx = self._transact("challengeData", _b32(claim_id), roots, _b32(tensor_root), int(chunk_index), commitment, value=value)
        return int(_one(tx, "ChallengeOpened").args["challengeId"]), tx

    def finalize(self, claim_id: bytes) -> TxResult:
        """Finalize after the window (reverts ``ChallengeWindowOpen`` / ``ChallengesOpen`` otherwise)."""
        return self._transact("finalize", _b32(claim_id), self.roots_of(claim_id).as_tuple())

    def refund_challenge(self, challenge_id: int) -> TxResult:
        """Refund a challenge left open when another one rejected its claim."""
        return self._transact("refundChallenge", int(challenge_id))

    def claim_credit(self) -> int:
        """Withdraw every credit of the account; returns the wei sent."""
        tx = self._transact("claimCredit")
        return int(_one(tx, "CreditClaimed").args["amount"])

    def set_verifier(self, asset_id: int, account: str, allowed: bool = True) -> TxResult:
        """Grant (or revoke) the verifier role of ``account`` for an asset (asset owner only)."""
        return self._transact("setVerifier", int(asset_id), to_checksum_address(account), bool(allowed))

    def set_settlement_hook(self, hook: str, allowed: bool = True) -> TxResult:
        """Allow (or disallow) a settlement hook (admin only)."""
        return self._transact("setSettlementHook", to_checksum_address(hook), bool(allowed))

    def initialize(self, game: str, data_availability: str) -> TxResult:
        """Wire the game and data-availability contracts (admin, once)."""
        return self._transact("initialize", to_checksum_address(game), to_checksum_address(data_availability))

    # ---------------------------------------------------------------- views

    def get_claim(self, claim_id: bytes) -> Claim:
        """The claim (reverts ``UnknownClaim``), with its roots read back from ``ClaimPosted``."""
        raw = self._call("getClaim", _b32(claim_id))
        return Claim.from_tuple(raw, self.roots_of(claim_id))

    def posted_event(self, claim_id: bytes) -> ClaimPosted:
        """The ``ClaimPosted`` of ``claim_id`` (NotFound if there is none)."""
        found = self._events("ClaimPosted", topics=["0x" + _b32(claim_id).hex()])
        if not found:
            raise NotFound(f"no claim 0x{_b32(claim_id).hex()} was posted on this chain")
        return ClaimPosted.from_event(found[-1])

    def roots_of(self, claim_id: bytes) -> ClaimRoots:
        """The roots the claim was posted with (what challenge/finalize pass back)."""
        key = _b32(claim_id)
        if key not in self._roots_cache:
            self._roots_cache[key] = self.posted_event(key).roots
        return self._roots_cache[key]

    def claim_status(self, claim_id: bytes) -> ClaimStatus:
        """Status (``NONE`` for an unknown id)."""
        return ClaimStatus(int(self._call("claimStatus", _b32(claim_id))))

    def params_of(self, claim_id: bytes) -> Params:
        """The claim's parameter snapshot."""
        return Params.from_tuple(self._call("paramsOf", _b32(claim_id)))

    def check_roots(self, claim_id: bytes, roots: ClaimRoots) -> int:
        """The claim's step count if ``roots`` are its roots (reverts ``RootsMismatch`` otherwise)."""
        return int(self._call("checkRoots", _b32(claim_id), roots.as_tuple()))

    def get_challenge(self, challenge_id: int) -> Challenge:
        """The challenge (reverts ``UnknownChallenge``)."""
        return Challenge.from_tuple(self._call("getChallenge", int(challenge_id)))

    def is_audience(self, claim_id: bytes, account: str) -> bool:
        """Whether ``account`` may fetch the claim's data and challenge it."""
        return bool(self._call("isAudience", _b32(claim_id), to_checksum_address(account)))

    def credit_of(self, account: str) -> int:
        """Wei ``account`` can withdraw."""
        return int(self._call("creditOf", to_checksum_address(account)))

    def claim_id_of(self, job_id: bytes, program_root: bytes, input_root: bytes) -> bytes:
        """The contract's claim id of (job, program, inputs)."""
        return bytes(self._call("claimIdOf", _b32(job_id), _b32(program_root), _b32(input_root)))

    def game_address(self) -> str:
        """The BisectionGame wired in."""
        return str(self._call("game"))

    def data_availability_address(self) -> str:
        """The DataAvailability wired in."""
        return str(self._call("dataAvailability"))

    def params_address(self) -> str:
        """ProtocolParams."""
        return str(self._call("PARAMS"))

    def current_claimer_bond(self) -> int:
        """CLAIMER_BOND as governed now (what a new claim must send)."""
        from chain.clients.protocol_params import ProtocolParamsClient

        params = ProtocolParamsClient(self.w3, self.params_address(), _params_abi(), self.account)
        return params.get("CLAIMER_BOND")

    def posted(self, from_block: int = 0) -> list[ClaimPosted]:
        """Every ``ClaimPosted`` since ``from_block`` (watchers, ``claims list``)."""
        return [ClaimPosted.from_event(e) for e in self._events("ClaimPosted", from_block=from_block)]


def _params_abi() -> list[dict[str, Any]]:
    from chain.client import default_artifacts

    return default_artifacts()["ProtocolParams"].abi
