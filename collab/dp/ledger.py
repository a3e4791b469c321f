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
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from opacus.accountants import RDPAccountant

from collab.errors import BadInput

Step = tuple[float, float, int]

# Opacus' default Rényi orders stop at 63; small noise multipliers (large budgets) have their best
# bound at higher orders, so the accountant would report a looser ε than the mechanism has.
# A sparse grid above 63 is enough (the bound varies slowly there) and keeps each ε evaluation cheap.
RDP_ORDERS = [*RDPAccountant.DEFAULT_ALPHAS, 80, 96, 128, 160, 192, 256, 320, 384, 512, 768, 1024]


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
    return float(accountant.get_epsilon(delta=delta, alphas=RDP_ORDERS))


# Noise multipliers the calibration searches: below 0.3 even one step of a small shard spends ε in the
# hundreds; above 64 a round learns nothing (the noise is 64x the clipped gradient sum).
SIGMA_RANGE = (0.3, 64.0)


def calibrate_sigma(budget: float, delta: float, history: list[Step], sample_rate: float, steps: int,
                    rounds: int = 1) -> float:
    """The smallest noise multiplier with which ``rounds`` more rounds of ``steps`` at ``sample_rate`` fit.

    Why the participant calibrates (not the round's creator): its sample rate and
    step count follow from its own shard size, so one σ for every participant
    either overspends the smallest shard's budget or over-noises the others.
    Planning every remaining round at once spreads the budget evenly over the
    job; the result is within 0.1% above the exact threshold (bisection),
    at least ``SIGMA_RANGE[0]``, and 0 (no noise) for an infinite budget.
    Raises :class:`PrivacyBudgetExceeded` when even the largest σ does not fit.
    """
    if rounds < 1 or steps < 1 or not 0 < sample_rate <= 1:
        raise BadInput(f"cannot calibrate noise for {rounds} round(s) of {steps} step(s) at rate {sample_rate}")
    if math.isinf(budget):
        return 0.0  # an unbounded budget is no DP: training without noise

    def fits(sigma: float) -> bool:
        return epsilon_of([*history, (sigma, sample_rate, steps * rounds)], delta) <= budget

    lo, hi = SIGMA_RANGE
    if not fits(hi):
        spent = epsilon_of(history, delta)
        raise PrivacyBudgetExceeded(
            f"privacy budget exhausted: ε={spent:.3f} of {budget:g} (δ={delta:g}) spent; {rounds} more round(s) "
            f"would exceed it even at noise multiplier {hi:g}, so training stops here")
    if fits(lo):
        return lo
    while hi / lo > 1.001:  # bisection on a log scale: ~13 ε evaluations over the whole range
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


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

    def calibrate(self, participant: str, sample_rate: float, steps: int, rounds: int) -> float:
        """The noise multiplier that spends what is left of the budget evenly over ``rounds`` more rounds."""
        account = self.accounts[participant]
        try:
            return calibrate_sigma(account.epsilon_budget, account.delta, account.history, sample_rate, steps, rounds)
        except PrivacyBudgetExceeded as exc:
            raise PrivacyBudgetExceeded(f"{participant}: {exc}") from None

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
