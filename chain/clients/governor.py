"""Typed client for ``CollabGovernor``: proposals, votes, queueing and execution.

A proposal is identified by ``keccak256(abi.encode(targets, values,
calldatas, keccak256(description)))``, so the id is computed here without the
chain, and queue/execute need the full proposal again: :meth:`GovernorClient.find_proposal`
recovers it from the ``ProposalCreated`` log, which is what lets the CLI take
a bare proposal id. Times are chain timestamps (the token's clock), never the
wall clock, because tests and demos move chain time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from chain.client import ContractClient, Event, TxResult, rpc_guard
from chain.clients.protocol_params import NAME_OF_KEY, PARAM_NAMES, ParamSet, key_of
from chain.errors import ContractRevert
from collab.errors import BadInput, NotFound

SET_PARAM_SIGNATURE = "set(bytes32,uint256)"
SET_PARAM_SELECTOR = keccak(text=SET_PARAM_SIGNATURE)[:4]
UINT256_MAX = 2**256 - 1


class ProposalState(IntEnum):
    """``IGovernor.ProposalState``, in the contract's order."""

    PENDING = 0
    ACTIVE = 1
    CANCELED = 2
    DEFEATED = 3
    SUCCEEDED = 4
    QUEUED = 5
    EXPIRED = 6
    EXECUTED = 7

    @property
    def label(self) -> str:
        """Lower-case name for output."""
        return self.name.lower()


class VoteSupport(IntEnum):
    """``GovernorCountingSimple`` vote types."""

    AGAINST = 0
    FOR = 1
    ABSTAIN = 2

    @classmethod
    def parse(cls, text: str) -> VoteSupport:
        """``for``/``against``/``abstain`` (any case) -> the vote type; BadInput otherwise."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise BadInput(f"unknown vote {text!r} (use for, against or abstain)") from None


class ProposalNotReady(BadInput):
    """The proposal cannot move yet (voting still open, timelock delay running)."""


# --------------------------------------------------------------------- proposals


def description_hash(description: str) -> bytes:
    """``keccak256(bytes(description))``: what queue/execute take instead of the text."""
    return keccak(text=description)


def proposal_id(targets: Sequence[str], values: Sequence[int], calldatas: Sequence[bytes], desc_hash: bytes) -> int:
    """``Governor.hashProposal``: the id of a proposal, computed off-chain."""
    encoded = abi_encode(
        ["address[]", "uint256[]", "bytes[]", "bytes32"],
        [[to_checksum_address(t) for t in targets], [int(v) for v in values], [bytes(c) for c in calldatas], desc_hash],
    )
    return int.from_bytes(keccak(encoded), "big")


@dataclass(frozen=True)
class Proposal:
    """The calls a proposal makes (through the timelock) and its description."""

    targets: tuple[str, ...]
    values: tuple[int, ...]
    calldatas: tuple[bytes, ...]
    description: str

    def __post_init__(self) -> None:
        if not self.targets or not len(self.targets) == len(self.values) == len(self.calldatas):
            raise BadInput("a proposal needs at least one call and as many values and calldatas as targets")

    @property
    def description_hash(self) -> bytes:
        """keccak256 of the description."""
        return description_hash(self.description)

    @property
    def proposal_id(self) -> int:
        """The id the governor assigns to this proposal."""
        return proposal_id(self.targets, self.values, self.calldatas, self.description_hash)

    def args(self) -> tuple[list[str], list[int], list[bytes], bytes]:
        """(targets, values, calldatas, descriptionHash) as queue/execute take them."""
        return [to_checksum_address(t) for t in self.targets], list(self.values), list(self.calldatas), self.description_hash


@dataclass(frozen=True)
class ParamChange:
    """A decoded ``ProtocolParams.set(key, value)`` call."""

    target: str
    key: str
    name: str | None
    value: int


def known_param_names() -> list[str]:
    """Names of the governed parameters the deploy script sets."""
    return sorted(PARAM_NAMES)


def encode_param_set(name: str, value: int) -> bytes:
    """Calldata of ``ProtocolParams.set(keccak256(name), value)``; BadInput for unknown names or bad values."""
    if name not in PARAM_NAMES:
        raise BadInput(f"unknown protocol parameter {name!r} (known: {', '.join(known_param_names())})")
    if not 0 <= int(value) <= UINT256_MAX:
        raise BadInput(f"value for {name} must be a uint256, got {value}")
    return SET_PARAM_SELECTOR + abi_encode(["bytes32", "uint256"], [key_of(name), int(value)])


def decode_param_set(target: str, calldata: bytes) -> ParamChange | None:
    """The parameter change a call makes, or None if it is not ``set(bytes32,uint256)``."""
    if len(calldata) != 68 or calldata[:4] != SET_PARAM_SELECTOR:
        return None
    key, value = abi_decode(["bytes32", "uint256"], calldata[4:])
    return ParamChange(to_checksum_address(target), "0x" + bytes(key).hex(), NAME_OF_KEY.get(bytes(key)), int(value))


def propose_param_change(params_address: str, name: str, value: int, description: str | None = None) -> Proposal:
    """A proposal that sets one governed parameter of ``ProtocolParams`` at ``params_address``."""
    text = description or f"Set {name} to {value}"
    return Proposal((to_checksum_address(params_address),), (0,), (encode_param_set(name, value),), text)


def propose_call(target: ContractClient, fn_name: str, *args: Any, description: str) -> Proposal:
    """A one-call proposal: the timelock calls ``target.fn_name(*args)`` (e.g. ``resolveKeyDispute``)."""
    data = target.contract.encode_abi(fn_name, args=list(args))
    return Proposal((target.address,), (0,), (bytes.fromhex(data.removeprefix("0x")),), description)


# --------------------------------------------------------------------- events


@dataclass(frozen=True)
class ProposalCreated:
    """``ProposalCreated``: the full proposal, its proposer and voting window."""

    proposal_id: int
    proposer: str
    proposal: Proposal
    vote_start: int
    vote_end: int


@dataclass(frozen=True)
class VoteCast:
    """``VoteCast(voter, proposalId, support, weight, reason)``."""

    voter: str
    proposal_id: int
    support: VoteSupport
    weight: int
    reason: str


@dataclass(frozen=True)
class ProposalQueued:
    """``ProposalQueued(proposalId, etaSeconds)``."""

    proposal_id: int
    eta: int


@dataclass(frozen=True)
class ProposalExecuted:
    """``ProposalExecuted(proposalId)``."""

    proposal_id: int


@dataclass(frozen=True)
class ProposalCanceled:
    """``ProposalCanceled(proposalId)``."""

    proposal_id: int


GovernorEvent = ProposalCreated | VoteCast | ProposalQueued | ProposalExecuted | ProposalCanceled


def _created(a: dict[str, Any]) -> ProposalCreated:
    calldatas = tuple(bytes.fromhex(str(c).removeprefix("0x")) if isinstance(c, str) else bytes(c) for c in a["calldatas"])
    proposal = Proposal(
        tuple(to_checksum_address(t) for t in a["targets"]), tuple(int(v) for v in a["values"]), calldatas, str(a["description"])
    )
    return ProposalCreated(int(a["proposalId"]), to_checksum_address(a["proposer"]), proposal, int(a["voteStart"]), int(a["voteEnd"]))


def decode_governor_event(event: Event) -> GovernorEvent | None:
    """The dataclass for one of the governor's events (None for any other event)."""
    a = event.args
    if event.name == "ProposalCreated":
        return _created(a)
    if event.name == "VoteCast":
        return VoteCast(a["voter"], int(a["proposalId"]), VoteSupport(int(a["support"])), int(a["weight"]), str(a["reason"]))
    if event.name == "ProposalQueued":
        return ProposalQueued(int(a["proposalId"]), int(a["etaSeconds"]))
    if event.name == "ProposalExecuted":
        return ProposalExecuted(int(a["proposalId"]))
    if event.name == "ProposalCanceled":
        return ProposalCanceled(int(a["proposalId"]))
    return None


def governor_events(result: TxResult) -> list[GovernorEvent]:
    """Every governor event a transaction emitted, in log order."""
    return [e for e in (decode_governor_event(ev) for ev in result.events) if e is not None]


def param_set_events(result: TxResult) -> list[ParamSet]:
    """The parameter changes an execution made (ProtocolParams' ``ParamSet`` events)."""
    return [
        ParamSet(bytes.fromhex(str(e.args["key"]).removeprefix("0x")), int(e.args["oldValue"]), int(e.args["newValue"]), result)
        for e in result.events_named("ParamSet")
    ]


# --------------------------------------------------------------------- views


@dataclass(frozen=True)
class ProposalVotes:
    """Tally of a proposal, in token units."""

    against: int
    for_: int
    abstain: int


@dataclass(frozen=True)
class ProposalInfo:
    """Everything ``collab gov show`` prints about a proposal."""

    proposal_id: int
    state: ProposalState
    proposer: str
    proposal: Proposal
    snapshot: int
    deadline: int
    eta: int
    now: int
    votes: ProposalVotes
    quorum: int | None
    param_changes: list[ParamChange] = field(default_factory=list)

    def next_step(self) -> str:
        """One sentence on what happens next, with the remaining chain time."""
        s = self.state
        if s is ProposalState.PENDING:
            return f"voting opens in {format_seconds(self.snapshot + 1 - self.now)}"
        if s is ProposalState.ACTIVE:
            return f"voting closes in {format_seconds(self.deadline + 1 - self.now)}"
        if s is ProposalState.SUCCEEDED:
            return "passed: queue it in the timelock (`collab gov execute`)"
        if s is ProposalState.QUEUED:
            wait = self.eta - self.now
            return f"executable in {format_seconds(wait)}" if wait > 0 else "ready to execute (`collab gov execute`)"
        return f"final: {s.label}"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form (ids and token amounts as decimal strings where they exceed 2^53)."""
        return {
            "proposal_id": str(self.proposal_id),
            "state": self.state.label,
            "proposer": self.proposer,
            "description": self.proposal.description,
            "calls": [
                {"target": t, "value": str(v), "data": "0x" + c.hex()}
                for t, v, c in zip(self.proposal.targets, self.proposal.values, self.proposal.calldatas, strict=True)
            ],
            "param_changes": [{"target": p.target, "name": p.name, "key": p.key, "value": str(p.value)} for p in self.param_changes],
            "snapshot": self.snapshot,
            "deadline": self.deadline,
            "eta": self.eta,
            "now": self.now,
            "votes": {"for": str(self.votes.for_), "against": str(self.votes.against), "abstain": str(self.votes.abstain)},
            "quorum": None if self.quorum is None else str(self.quorum),
            "next": self.next_step(),
        }


@dataclass(frozen=True)
class Advance:
    """What :meth:`GovernorClient.advance` did: queued, executed, or nothing (already executed)."""

    proposal_id: int
    action: str
    state: ProposalState
    eta: int = 0
    now: int = 0
    results: list[TxResult] = field(default_factory=list)


def format_seconds(seconds: int) -> str:
    """``93784`` -> ``1d 2h 3m 4s`` (at least ``0s``)."""
    seconds = max(0, int(seconds))
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{seconds}s")
    return " ".join(parts)


# --------------------------------------------------------------------- client


class GovernorClient(ContractClient):
    """CollabGovernor: propose, vote, queue into the timelock, execute."""

    CONTRACT = "CollabGovernor"

    # ----------------------------------------------------------------- settings

    def voting_delay(self) -> int:
        """Seconds between proposing and the vote snapshot."""
        return int(self._call("votingDelay"))

    def voting_period(self) -> int:
        """Seconds the vote stays open."""
        return int(self._call("votingPeriod"))

    def proposal_threshold(self) -> int:
        """Votes a proposer needs."""
        return int(self._call("proposalThreshold"))

    def quorum(self, timepoint: int) -> int:
        """Votes (for + abstain) needed at a past ``timepoint``."""
        return int(self._call("quorum", int(timepoint)))

    def timelock_address(self) -> str:
        """The TimelockController that executes proposals."""
        return to_checksum_address(self._call("timelock"))

    def token_address(self) -> str:
        """The voting token."""
        return to_checksum_address(self._call("token"))

    def clock(self) -> int:
        """The governor's clock (the token's timestamp clock)."""
        return int(self._call("clock"))

    # ----------------------------------------------------------------- proposal views

    def state(self, pid: int) -> ProposalState:
        """Current state; ``GovernorNonexistentProposal`` (NotFound) for unknown ids."""
        return ProposalState(int(self._call("state", int(pid))))

    def snapshot(self, pid: int) -> int:
        """Timestamp at which voting power is read."""
        return int(self._call("proposalSnapshot", int(pid)))

    def deadline(self, pid: int) -> int:
        """Last timestamp at which votes are accepted."""
        return int(self._call("proposalDeadline", int(pid)))

    def eta(self, pid: int) -> int:
        """Timestamp from which a queued proposal can execute (0 if not queued)."""
        return int(self._call("proposalEta", int(pid)))

    def proposer(self, pid: int) -> str:
        """Who proposed it."""
        return to_checksum_address(self._call("proposalProposer", int(pid)))

    def votes(self, pid: int) -> ProposalVotes:
        """The tally so far."""
        against, for_, abstain = self._call("proposalVotes", int(pid))
        return ProposalVotes(int(against), int(for_), int(abstain))

    def has_voted(self, pid: int, account: str) -> bool:
        """Whether ``account`` already voted on ``pid``."""
        return bool(self._call("hasVoted", int(pid), to_checksum_address(account)))

    def hash_proposal(self, proposal: Proposal) -> int:
        """The contract's own id for ``proposal`` (cross-checks :func:`proposal_id`)."""
        return int(self._call("hashProposal", *proposal.args()))

    def find_proposal(self, pid: int, from_block: int = 0) -> ProposalCreated:
        """The ``ProposalCreated`` record of ``pid`` (NotFound if never proposed here)."""
        with rpc_guard(self.w3):
            logs = self.contract.events.ProposalCreated().get_logs(from_block=from_block)
        for log in logs:
            if int(log["args"]["proposalId"]) == int(pid):
                return _created(dict(log["args"]))
        raise NotFound(f"no proposal {pid} on governor {self.address}")

    def info(self, pid: int, from_block: int = 0) -> ProposalInfo:
        """State, tally, quorum, timing and decoded calls of one proposal."""
        created = self.find_proposal(pid, from_block)
        snapshot = self.snapshot(pid)
        now = self._now()
        changes = [
            c
            for c in (decode_param_set(t, d) for t, d in zip(created.proposal.targets, created.proposal.calldatas, strict=True))
            if c is not None
        ]
        return ProposalInfo(
            proposal_id=int(pid),
            state=self.state(pid),
            proposer=created.proposer,
            proposal=created.proposal,
            snapshot=snapshot,
            deadline=self.deadline(pid),
            eta=self.eta(pid),
            now=now,
            votes=self.votes(pid),
            quorum=self.quorum(snapshot) if snapshot < now else None,
            param_changes=changes,
        )

    def require_active(self, pid: int) -> None:
        """Raise unless ``pid`` accepts votes now: ProposalNotReady (with the wait) or BadInput."""
        state = self.state(pid)
        if state is ProposalState.ACTIVE:
            return
        if state is ProposalState.PENDING:
            wait = self.snapshot(pid) + 1 - self._now()
            raise ProposalNotReady(f"voting on proposal {pid} opens in {format_seconds(wait)}", remaining_seconds=wait)
        raise BadInput(f"proposal {pid} is {state.label}: voting is closed")

    # ----------------------------------------------------------------- transactions

    def propose(self, proposal: Proposal) -> TxResult:
        """Submit ``proposal``; its id is ``proposal.proposal_id``."""
        targets, values, calldatas, _ = proposal.args()
        return self._transact("propose", targets, values, calldatas, proposal.description)

    def cast_vote(self, pid: int, support: VoteSupport, reason: str = "") -> TxResult:
        """Vote with the signer's voting power at the proposal's snapshot."""
        if reason:
            return self._transact("castVoteWithReason", int(pid), int(support), reason)
        return self._transact("castVote", int(pid), int(support))

    def queue(self, proposal: Proposal) -> TxResult:
        """Schedule a succeeded proposal in the timelock."""
        return self._transact("queue", *proposal.args())

    def execute(self, proposal: Proposal) -> TxResult:
        """Execute a queued proposal whose timelock delay has passed."""
        return self._transact("execute", *proposal.args())

    def advance(self, pid: int, from_block: int = 0) -> Advance:
        """Queue the proposal if it passed, execute it once the timelock allows.

        Raises :class:`ProposalNotReady` with the remaining chain time while
        voting or the delay runs, BadInput when it was defeated, canceled or
        expired. An executed proposal is reported, not re-executed.
        """
        created = self.find_proposal(pid, from_block)
        state = self.state(pid)
        now = self._now()
        results: list[TxResult] = []
        if state is ProposalState.PENDING:
            wait = self.snapshot(pid) + 1 - now
            raise ProposalNotReady(f"proposal {pid} is pending: voting opens in {format_seconds(wait)}", remaining_seconds=wait)
        if state is ProposalState.ACTIVE:
            wait = self.deadline(pid) + 1 - now
            raise ProposalNotReady(f"proposal {pid} is still being voted on: voting closes in {format_seconds(wait)}", remaining_seconds=wait)
        if state in (ProposalState.DEFEATED, ProposalState.CANCELED, ProposalState.EXPIRED):
            raise BadInput(f"proposal {pid} is {state.label} and can never execute")
        if state is ProposalState.EXECUTED:
            return Advance(int(pid), "none", state, self.eta(pid), now)
        if state is ProposalState.SUCCEEDED:
            results.append(self.queue(created.proposal))
        eta = self.eta(pid)
        try:
            results.append(self.execute(created.proposal))
        except ContractRevert as exc:
            if exc.error_name != "TimelockUnexpectedOperationState":
                raise
            now = self._now()
            if results:  # just queued: that is progress, not an error
                return Advance(int(pid), "queued", ProposalState.QUEUED, eta, now, results)
            raise ProposalNotReady(
                f"proposal {pid} is queued: executable in {format_seconds(eta - now)}", remaining_seconds=max(0, eta - now)
            ) from None
        return Advance(int(pid), "executed", ProposalState.EXECUTED, eta, self._now(), results)

    def _now(self) -> int:
        with rpc_guard(self.w3):
            return int(self.w3.eth.get_block("latest")["timestamp"])
