"""The one error secure aggregation adds: too few participants left to finish safely."""

from __future__ import annotations

from collab.errors import Unavailable


class TooFewSurvivors(Unavailable):
    """Fewer than the threshold t of participants (keys, shares, inputs, signatures or
    unmask responses) remain, so the round must abort rather than weaken its guarantees."""
