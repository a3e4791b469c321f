"""Per-op cost accounting of the secure encoder: time, rounds and bytes by (layer, op kind).

The benchmark needs to say *where* a secure forward pass spends its time and
traffic. The encoder wraps each of its op kinds (``embedding``, ``linear``,
``attn_matmul``, ``softmax``, ``gelu``, ``layernorm``) in :func:`section`; with
no :class:`OpProfile` active that is a no-op, so the encoder's normal path
pays nothing. Sections do not nest: an op kind's inner helpers (softmax's
reciprocal, LayerNorm's inverse square root) are charged to the outer kind.

Bytes and rounds are CrypTen's own communication counters (``verbose`` must
be on), so they count what CrypTen counts: 8 bytes per ring element, sent
plus received by this party.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

OP_KINDS = ("embedding", "linear", "attn_matmul", "softmax", "gelu", "layernorm")


@dataclass
class OpCost:
    """Accumulated cost of one (layer, kind) cell."""

    seconds: float = 0.0
    rounds: int = 0
    bytes: int = 0
    calls: int = 0


@dataclass
class OpProfile:
    """Costs keyed by (layer label, op kind); the encoder sets :attr:`layer` as it goes."""

    layer: str = "embeddings"
    cells: dict[tuple[str, str], OpCost] = field(default_factory=dict)
    _open: bool = False

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {"layer": layer, "kind": kind, "seconds": c.seconds, "rounds": c.rounds, "bytes": c.bytes, "calls": c.calls}
            for (layer, kind), c in self.cells.items()
        ]


_active: OpProfile | None = None


def _counters() -> tuple[int, int]:
    import crypten.communicator as comm

    stats = comm.get().get_communication_stats()
    return int(stats["rounds"]), int(stats["bytes"])


@contextlib.contextmanager
def profiling(profile: OpProfile) -> Iterator[OpProfile]:
    """Make ``profile`` the active one for the block (one per party process at a time)."""
    global _active
    previous, _active = _active, profile
    try:
        yield profile
    finally:
        _active = previous


def set_layer(label: str) -> None:
    """Name the layer the next sections belong to (no-op without an active profile)."""
    if _active is not None:
        _active.layer = label


@contextlib.contextmanager
def section(kind: str, secure: bool = True) -> Iterator[None]:
    """Charge the block's time, rounds and bytes to ``kind`` in the current layer.

    ``secure`` False (the plaintext simulation) or no active profile: no-op.
    """
    prof = _active
    if prof is None or not secure or prof._open:
        yield
        return
    prof._open = True
    r0, b0 = _counters()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        dt = time.perf_counter() - t0
        r1, b1 = _counters()
        prof._open = False
        cell = prof.cells.setdefault((prof.layer, kind), OpCost())
        cell.seconds += dt
        cell.rounds += r1 - r0
        cell.bytes += b1 - b0
        cell.calls += 1
