"""Differential privacy on inference outputs: calibrated noise and ε ledgers.

A licensee who may query a model many times can extract it (or facts about its
training data) from the answers. The owner therefore adds noise to every
answer *inside* the protocol, before the client reconstructs it, and charges
each query's ε to two ledgers kept in SQLite in the owner's home:

* per (asset, licensee): one identity cannot exceed its budget;
* per asset: many identities cannot pool their budgets past the asset's total.

Sensitivity comes from output clipping. An embedding answer is the
L2-normalised sentence vector, so its L2 norm is ``clip_norm`` = 1 and any two
answers differ by at most ``2 * clip_norm`` in L2 (and ``2 * clip_norm *
sqrt(d)`` in L1). A linear head ``W e + b`` over such an embedding moves by at
most ``2 * clip_norm * ||W||_2`` (spectral norm). Budgets are composed
additively (basic composition): conservative, simple and auditable.
"""

from __future__ import annotations

import math
import sqlite3
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from collab import sqlite_store
from collab.errors import BadInput, Unauthorized

Mechanism = Literal["gaussian", "laplace"]
DEFAULT_DELTA = 1e-6


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def analytic_gaussian_sigma(epsilon: float, delta: float, l2_sensitivity: float) -> float:
    """Smallest σ of the Gaussian mechanism that is (ε, δ)-DP (Balle & Wang 2018, Thm. 8).

    Unlike the classic ``sqrt(2 ln(1.25/δ)) Δ / ε`` bound it is valid for every ε > 0,
    which matters because per-query budgets above 1 are common for embeddings.
    """
    if epsilon <= 0 or not 0 < delta < 1 or l2_sensitivity <= 0:
        raise BadInput("need epsilon > 0, 0 < delta < 1 and a positive sensitivity")

    def delta_of(sigma: float) -> float:
        a, b = l2_sensitivity / (2 * sigma), epsilon * sigma / l2_sensitivity
        return _phi(a - b) - math.exp(epsilon) * _phi(-a - b)

    lo, hi = 1e-6 * l2_sensitivity, l2_sensitivity
    while delta_of(hi) > delta:
        hi *= 2
    for _ in range(100):  # delta_of decreases in sigma: bisect to the boundary
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if delta_of(mid) <= delta else (mid, hi)
    return hi


@dataclass(frozen=True)
class OutputNoise:
    """The noise one answer gets: mechanism, budget and the sensitivity it was calibrated to."""

    mechanism: Mechanism
    epsilon: float
    delta: float
    l2_sensitivity: float
    dim: int

    @classmethod
    def calibrate(
        cls, epsilon: float, dim: int, *, mechanism: Mechanism = "gaussian", delta: float = DEFAULT_DELTA,
        clip_norm: float = 1.0, lipschitz: float = 1.0,
    ) -> OutputNoise:
        """Noise for an answer of ``dim`` values that is ``lipschitz`` times a vector clipped to ``clip_norm``."""
        if mechanism not in ("gaussian", "laplace"):
            raise BadInput(f"unknown DP mechanism {mechanism!r} (gaussian or laplace)")
        if not epsilon > 0 or not math.isfinite(epsilon):
            raise BadInput(f"--dp-epsilon must be a positive number, got {epsilon}")
        if dim < 1 or clip_norm <= 0 or lipschitz <= 0:
            raise BadInput("dimension, clip norm and Lipschitz constant must be positive")
        return cls(mechanism, float(epsilon), float(delta) if mechanism == "gaussian" else 0.0,
                   2.0 * clip_norm * lipschitz, int(dim))

    @property
    def scale(self) -> float:
        """σ (Gaussian) or b (Laplace, calibrated to the L1 bound ``sqrt(dim)`` times the L2 one)."""
        if self.mechanism == "gaussian":
            return analytic_gaussian_sigma(self.epsilon, self.delta, self.l2_sensitivity)
        return self.l2_sensitivity * math.sqrt(self.dim) / self.epsilon

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator | None = None) -> np.ndarray:
        """Fresh noise of ``shape`` (the owner's party draws it; the client never sees it alone)."""
        rng = rng or np.random.default_rng()
        if self.mechanism == "gaussian":
            return rng.normal(0.0, self.scale, size=shape)
        return rng.laplace(0.0, self.scale, size=shape)

    def to_json(self) -> dict[str, float | int | str]:
        return {"mechanism": self.mechanism, "epsilon": self.epsilon, "delta": self.delta,
                "l2_sensitivity": self.l2_sensitivity, "scale": self.scale}


def clip_rows(x: np.ndarray, clip_norm: float = 1.0) -> np.ndarray:
    """Scale each row down to L2 norm ≤ ``clip_norm`` (plaintext answers, e.g. ``--mode plain``)."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x * np.minimum(1.0, clip_norm / np.maximum(norms, 1e-12))


@dataclass(frozen=True)
class Budgets:
    """ε budgets: per (asset, licensee) and per asset; ``per_license`` overrides the first by license id."""

    licensee: float = 10.0
    asset: float = 100.0
    per_license: dict[int, float] | None = None

    def for_license(self, license_id: int) -> float:
        return (self.per_license or {}).get(int(license_id), self.licensee)


@dataclass(frozen=True)
class Charge:
    """One reserved ε spend (confirmed when the answer was delivered, released if the job failed)."""

    charge_id: int
    asset_id: int
    licensee: str
    epsilon: float


_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    asset_id INTEGER NOT NULL,
    licensee TEXT NOT NULL,
    license_id INTEGER NOT NULL,
    epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    mechanism TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('reserved', 'spent')),
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS spend_by_asset ON spend (asset_id, licensee);
"""


class EpsilonLedger:
    """ε spent per licensee and per asset, persisted in ``<owner home>/dp_ledger.db``.

    A query reserves its ε *before* any computation (so concurrent queries
    cannot overshoot), then is confirmed or released. Reserved spends count
    against the budgets until released.
    """

    def __init__(self, path: Path | str, budgets: Budgets | None = None) -> None:
        self.path = Path(path)
        self.budgets = budgets or Budgets()
        with self._db() as db:
            db.executescript(_SCHEMA)

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        return sqlite_store.connect(self.path)

    def spent(self, asset_id: int, licensee: str | None = None) -> float:
        """ε charged so far (reserved or spent) for the asset, or for one licensee of it."""
        with self._db() as db:
            return self._spent(db, asset_id, licensee)

    @staticmethod
    def _spent(db: sqlite3.Connection, asset_id: int, licensee: str | None) -> float:
        if licensee is None:
            row = db.execute("SELECT COALESCE(SUM(epsilon), 0) FROM spend WHERE asset_id = ?", (asset_id,)).fetchone()
        else:
            row = db.execute("SELECT COALESCE(SUM(epsilon), 0) FROM spend WHERE asset_id = ? AND licensee = ?",
                             (asset_id, licensee.lower())).fetchone()
        return float(row[0])

    def reserve(self, asset_id: int, licensee: str, license_id: int, noise: OutputNoise) -> Charge:
        """Charge ``noise.epsilon`` to both ledgers, or raise Unauthorized (exit 4) past a budget."""
        who = licensee.lower()
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                mine, total = self._spent(db, asset_id, who), self._spent(db, asset_id, None)
                own_budget = self.budgets.for_license(license_id)
                # INVARIANT: a licensee never spends past its own budget ...
                if mine + noise.epsilon > own_budget + 1e-12:
                    raise Unauthorized(
                        f"privacy budget exhausted: {licensee} has spent ε={mine:g} of its ε={own_budget:g} "
                        f"on asset {asset_id}; this query needs ε={noise.epsilon:g}",
                        hint="ask the asset owner for a larger budget", asset_id=asset_id, spent=mine,
                    )
                # ... and all licensees together never spend past the asset's budget (no pooling).
                if total + noise.epsilon > self.budgets.asset + 1e-12:
                    raise Unauthorized(
                        f"asset {asset_id}'s privacy budget is exhausted: ε={total:g} of ε={self.budgets.asset:g} "
                        f"spent across all licensees; this query needs ε={noise.epsilon:g}",
                        asset_id=asset_id, spent=total,
                    )
                cur = db.execute(
                    "INSERT INTO spend (asset_id, licensee, license_id, epsilon, delta, mechanism, state, at) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'reserved', ?)",
                    (asset_id, who, int(license_id), noise.epsilon, noise.delta, noise.mechanism, time.time()),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return Charge(int(cur.lastrowid or 0), asset_id, who, noise.epsilon)

    def confirm(self, charge: Charge) -> None:
        """The noised answer reached the client: the ε is spent for good."""
        with self._db() as db:
            db.execute("UPDATE spend SET state = 'spent' WHERE id = ?", (charge.charge_id,))

    def release(self, charge: Charge) -> None:
        """The job failed before the client saw anything: give the ε back."""
        with self._db() as db:
            db.execute("DELETE FROM spend WHERE id = ? AND state = 'reserved'", (charge.charge_id,))
