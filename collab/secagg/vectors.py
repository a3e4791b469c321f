"""Named tensors ↔ one flat vector of ring words, so a LoRA update or a set of
RegMean Gram matrices / Fisher diagonals is aggregated in a single round.

The layout (names in sorted order, shapes) is public and the same at every
party; only the values are secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from collab.errors import BadInput
from collab.secagg.masking import decode, encode


@dataclass(frozen=True)
class TensorLayout:
    """Where each named tensor sits in the flat vector."""

    entries: tuple[tuple[str, tuple[int, ...]], ...]

    @classmethod
    def of(cls, tensors: Mapping[str, Any]) -> TensorLayout:
        """The layout of ``tensors`` (sorted by name, so every party derives the same one)."""
        return cls(tuple((name, tuple(np.shape(tensors[name]))) for name in sorted(tensors)))

    @property
    def length(self) -> int:
        """Total number of elements (the round's ``length``)."""
        return sum(int(np.prod(shape, dtype=np.int64)) for _, shape in self.entries)

    def pack(self, tensors: Mapping[str, Any], frac_bits: int) -> np.ndarray:
        """Encode the tensors (floats, numpy or torch) as one int64 word vector at ``frac_bits``."""
        if sorted(tensors) != [name for name, _ in self.entries]:
            raise BadInput("the tensors do not match the round's layout (names differ)")
        parts = []
        for name, shape in self.entries:
            value = tensors[name]
            if hasattr(value, "detach"):
                value = value.detach().cpu().double().numpy()
            arr = np.asarray(value, dtype=np.float64)
            if arr.shape != shape:
                raise BadInput(f"tensor {name!r} has shape {arr.shape}, the layout says {shape}")
            parts.append(encode(arr, frac_bits))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def unpack(self, words: np.ndarray, frac_bits: int) -> dict[str, np.ndarray]:
        """Decode a (summed) word vector back into named float64 tensors."""
        if len(words) != self.length:
            raise BadInput(f"expected {self.length} words, got {len(words)}")
        values = decode(words, frac_bits)
        out, offset = {}, 0
        for name, shape in self.entries:
            size = int(np.prod(shape, dtype=np.int64))
            out[name] = values[offset : offset + size].reshape(shape)
            offset += size
        return out
