"""Typed client for ``CollabToken``: balances, delegation and voting power.

Balances only become votes once delegated (to oneself or to another
account), and the governor reads votes at a past timepoint of the token's
timestamp clock, so a holder must delegate *before* a proposal's snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_utils import to_checksum_address

from chain.client import ContractClient, Event, TxResult
from collab.errors import Unauthorized


@dataclass(frozen=True)
class Transfer:
    """``Transfer(from, to, value)``; ``from`` is the zero address at mint."""

    sender: str
    recipient: str
    value: int


@dataclass(frozen=True)
class DelegateChanged:
    """``DelegateChanged(delegator, fromDelegate, toDelegate)``."""

    delegator: str
    from_delegate: str
    to_delegate: str


@dataclass(frozen=True)
class DelegateVotesChanged:
    """``DelegateVotesChanged(delegate, previousVotes, newVotes)``."""

    delegate: str
    previous_votes: int
    new_votes: int


TokenEvent = Transfer | DelegateChanged | DelegateVotesChanged


def decode_token_event(event: Event) -> TokenEvent | None:
    """The dataclass for one of the token's events (None for any other event)."""
    a = event.args
    if event.name == "Transfer" and "value" in a:
        return Transfer(a["from"], a["to"], int(a["value"]))
    if event.name == "DelegateChanged":
        return DelegateChanged(a["delegator"], a["fromDelegate"], a["toDelegate"])
    if event.name == "DelegateVotesChanged":
        return DelegateVotesChanged(a["delegate"], int(a["previousVotes"]), int(a["newVotes"]))
    return None


def token_events(result: TxResult) -> list[TokenEvent]:
    """Every token event a transaction emitted, in log order."""
    return [e for e in (decode_token_event(ev) for ev in result.events) if e is not None]


DECIMALS = 18


def format_collab(units: int) -> str:
    """Token units as exact decimal COLLAB: ``1500000000000000000`` -> ``1.5 COLLAB``."""
    whole, frac = divmod(abs(int(units)), 10**DECIMALS)
    sign = "-" if units < 0 else ""
    tail = f".{frac:0{DECIMALS}d}".rstrip("0") if frac else ""
    return f"{sign}{whole:,}{tail} COLLAB"


class CollabTokenClient(ContractClient):
    """COLLAB: ERC-20 + permit + ERC-5805 votes on a timestamp clock."""

    CONTRACT = "CollabToken"

    # ----------------------------------------------------------------- views

    def balance_of(self, account: str) -> int:
        """Token units (18 decimals) held by ``account``."""
        return int(self._call("balanceOf", to_checksum_address(account)))

    def total_supply(self) -> int:
        """The fixed supply minted at deployment."""
        return int(self._call("totalSupply"))

    def votes(self, account: str) -> int:
        """Current voting power of ``account`` (delegated to it, not its balance)."""
        return int(self._call("getVotes", to_checksum_address(account)))

    def past_votes(self, account: str, timepoint: int) -> int:
        """Voting power of ``account`` at a past timestamp (what the governor counts)."""
        return int(self._call("getPastVotes", to_checksum_address(account), int(timepoint)))

    def delegates(self, account: str) -> str:
        """Whom ``account`` delegates to (the zero address if nobody yet)."""
        return to_checksum_address(self._call("delegates", to_checksum_address(account)))

    def clock(self) -> int:
        """The votes clock: the current block timestamp."""
        return int(self._call("clock"))

    def clock_mode(self) -> str:
        """ERC-6372 clock description ("mode=timestamp")."""
        return str(self._call("CLOCK_MODE"))

    # ----------------------------------------------------------------- transactions

    def delegate(self, delegatee: str | None = None) -> TxResult:
        """Give the signer's votes to ``delegatee`` (default: the signer itself)."""
        target = delegatee or self._signer()
        return self._transact("delegate", to_checksum_address(target))

    def transfer(self, to: str, amount: int) -> TxResult:
        """Move ``amount`` units; votes follow the delegates of both sides."""
        return self._transact("transfer", to_checksum_address(to), int(amount))

    def _signer(self) -> str:
        if self.account is None:
            raise Unauthorized(f"{self.name}.delegate needs a signing account", hint="unlock an identity (COLLAB_PASSPHRASE)")
        return str(self.account.address)
