"""Typed client for OpenZeppelin's ``TimelockController``: delay, roles, operations.

The timelock is what actually owns ``ProtocolParams`` and the admin roles
governance decides on; the governor only schedules into it. Checking its
roles (governor as sole proposer/canceller, anyone executes, no admin but
itself) is how a user verifies that nobody can bypass a vote.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from eth_utils import keccak, to_checksum_address

from chain.client import ContractClient, Event, TxResult, rpc_guard

ZERO_ADDRESS = "0x" + "00" * 20
DEFAULT_ADMIN_ROLE = "0x" + "00" * 32
PROPOSER_ROLE = "0x" + keccak(text="PROPOSER_ROLE").hex()
EXECUTOR_ROLE = "0x" + keccak(text="EXECUTOR_ROLE").hex()
CANCELLER_ROLE = "0x" + keccak(text="CANCELLER_ROLE").hex()
ROLES: dict[str, str] = {
    "admin": DEFAULT_ADMIN_ROLE,
    "proposer": PROPOSER_ROLE,
    "executor": EXECUTOR_ROLE,
    "canceller": CANCELLER_ROLE,
}


class OperationState(IntEnum):
    """``TimelockController.OperationState``."""

    UNSET = 0
    WAITING = 1
    READY = 2
    DONE = 3


@dataclass(frozen=True)
class CallScheduled:
    """``CallScheduled(id, index, target, value, data, predecessor, delay)``."""

    operation_id: str
    index: int
    target: str
    value: int
    data: str
    delay: int


@dataclass(frozen=True)
class CallExecuted:
    """``CallExecuted(id, index, target, value, data)``."""

    operation_id: str
    index: int
    target: str
    value: int
    data: str


TimelockEvent = CallScheduled | CallExecuted


def decode_timelock_event(event: Event) -> TimelockEvent | None:
    """The dataclass for a timelock call event (None for any other event)."""
    a = event.args
    if event.name == "CallScheduled":
        return CallScheduled(a["id"], int(a["index"]), a["target"], int(a["value"]), a["data"], int(a["delay"]))
    if event.name == "CallExecuted":
        return CallExecuted(a["id"], int(a["index"]), a["target"], int(a["value"]), a["data"])
    return None


def timelock_events(result: TxResult) -> list[TimelockEvent]:
    """Every timelock call event a transaction emitted, in log order."""
    return [e for e in (decode_timelock_event(ev) for ev in result.events) if e is not None]


class TimelockClient(ContractClient):
    """The TimelockController that executes passed proposals."""

    CONTRACT = "TimelockController"

    def min_delay(self) -> int:
        """Seconds between queueing a proposal and being able to execute it."""
        return int(self._call("getMinDelay"))

    def has_role(self, role: str, account: str) -> bool:
        """Whether ``account`` holds ``role`` (a bytes32 hex or a name from :data:`ROLES`)."""
        return bool(self._call("hasRole", _role(role), to_checksum_address(account)))

    def role_holders(self, role: str, from_block: int = 0) -> list[str]:
        """Current holders of ``role``, replayed from RoleGranted/RoleRevoked logs.

        AccessControl keeps no member list, so the logs are the only way to
        show *who* may propose or administer (not just ask about one address).
        """
        role_id = _role(role)
        holders: dict[str, bool] = {}
        with rpc_guard(self.w3):
            for event_name in ("RoleGranted", "RoleRevoked"):
                logs = self.contract.events[event_name]().get_logs(from_block=from_block, argument_filters={"role": role_id})
                for log in logs:
                    holders.setdefault(to_checksum_address(log["args"]["account"]), False)
        return [account for account in holders if self.has_role(role_id, account)]

    def operation_state(self, operation_id: str) -> OperationState:
        """Unset, Waiting (delay running), Ready or Done."""
        return OperationState(int(self._call("getOperationState", operation_id)))

    def operation_timestamp(self, operation_id: str) -> int:
        """When the operation becomes executable (0 unset, 1 done)."""
        return int(self._call("getTimestamp", operation_id))

    def hash_operation_batch(
        self, targets: list[str], values: list[int], calldatas: list[bytes], predecessor: str, salt: str
    ) -> str:
        """The operation id the timelock uses for a batch."""
        raw = self._call("hashOperationBatch", [to_checksum_address(t) for t in targets], values, calldatas, predecessor, salt)
        return "0x" + bytes(raw).hex()

    def schedule_batch(
        self, targets: list[str], values: list[int], calldatas: list[bytes], predecessor: str, salt: str, delay: int
    ) -> TxResult:
        """Schedule directly (only a proposer, i.e. the governor, may)."""
        return self._transact(
            "scheduleBatch", [to_checksum_address(t) for t in targets], values, calldatas, predecessor, salt, int(delay)
        )


def _role(role: str) -> str:
    return ROLES.get(role, role)
