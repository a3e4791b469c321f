"""Per-participant privacy ledger: ε spent across every DP-SGD round, persisted in the node's home.

Flower tracks no privacy budget across rounds; a participant must, because
ε composes over every round it ever trained on the same data. The ledger
keeps the exact DP-SGD mechanism history (noise multiplier, sample rate,
steps) per participant and recomputes ε with Opacus' RDP accountant, so a
restarted node reports the same number and refuses a round that would push it
past its budget *before* training touches the data.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from opacus.accountants import RDPAccountant

from collab.errors import BadInput

Step = tuple[float, float, int]


class PrivacyBudgetExceeded(BadInput):
    """Training would spend more ε than the participant's budget allows."""


def epsilon_of(history: list[Step], delta: float) -> float:
    """ε at ``delta`` after the DP-SGD steps in ``history`` (0 for an empty history, inf without noise)."""
    if not history:
        return 0.0
    if any(sigma <= 0 for sigma, _, _ in history):
        return float("inf")
    accountant = RDPAccountant()
    accountant.history = [(float(s), float(q), int(n)) for s, q, n in history]
    return float(accountant.get_epsilon(delta=delta))


@dataclass
class Account:
    """One participant's budget (ε, δ) and its mechanism history."""

    epsilon_budget: float
    delta: float
    history: list[Step] = field(default_factory=list)
    rounds: int = 0

    @property
    def spent(self) -> float:
        return epsilon_of(self.history, self.delta)

    def epsilon_after(self, sigma: float, sample_rate: float, steps: int) -> float:
        """ε this account would have spent after ``steps`` more steps of this mechanism."""
        return epsilon_of([*self.history, (sigma, sample_rate, steps)], self.delta)


class PrivacyLedger:
    """A JSON file of accounts, one per participant id, written atomically after every change."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.accounts: dict[str, Account] = {}
        if self.path.exists():
            try:
                raw = json.loads(self.path.read_text())
                for pid, entry in raw["accounts"].items():
                    self.accounts[pid] = Account(
                        float(entry["epsilon_budget"]),
                        float(entry["delta"]),
                        [(float(s), float(q), int(n)) for s, q, n in entry["history"]],
                        int(entry["rounds"]),
                    )
            except (ValueError, KeyError, TypeError) as exc:
                raise BadInput(f"privacy ledger {self.path} is corrupt ({exc}); refusing to guess ε spent") from exc

    def open(self, participant: str, epsilon_budget: float, delta: float) -> Account:
        """The participant's account, created on first use; the budget and δ cannot change later."""
        if epsilon_budget <= 0 or not 0 < delta < 1:
            raise BadInput(f"invalid privacy budget ε={epsilon_budget}, δ={delta}")
        account = self.accounts.get(participant)
        if account is None:
            account = self.accounts[participant] = Account(epsilon_budget, delta)
            self._save()
        elif (account.epsilon_budget, account.delta) != (epsilon_budget, delta):
            raise BadInput(
                f"participant {participant} already has budget ε={account.epsilon_budget}, δ={account.delta}; "
                f"a round cannot change it to ε={epsilon_budget}, δ={delta}"
            )
        return account

    def check(self, participant: str, sigma: float, sample_rate: float, steps: int) -> float:
        """Raise :class:`PrivacyBudgetExceeded` unless the planned steps fit; return ε after them."""
        account = self.accounts[participant]
        after = account.epsilon_after(sigma, sample_rate, steps)
        if after > account.epsilon_budget:
            raise PrivacyBudgetExceeded(
                f"privacy budget exhausted for {participant}: {account.rounds} round(s) spent "
                f"ε={account.spent:.3f} of {account.epsilon_budget:g} (δ={account.delta:g}); "
                f"this round would reach ε={after:.3f}, so training stops here"
            )
        return after

    def record(self, participant: str, sigma: float, sample_rate: float, steps: int) -> float:
        """Add one finished round's steps and persist; return the new ε spent."""
        account = self.accounts[participant]
        account.history.append((sigma, sample_rate, steps))
        account.rounds += 1
        self._save()
        return account.spent

    def _save(self) -> None:
        body = {
            "accounts": {
                pid: {
                    "epsilon_budget": a.epsilon_budget,
                    "delta": a.delta,
                    "history": [list(h) for h in a.history],
                    "rounds": a.rounds,
                }
                for pid, a in self.accounts.items()
            }
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".ledger-")
        with os.fdopen(fd, "w") as handle:
            json.dump(body, handle, indent=1)
        os.replace(tmp, self.path)
