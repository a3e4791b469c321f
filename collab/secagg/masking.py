"""Masks in the ring Z_2^64, expanded by the VM's keccak PRG (docs/protocol.md §1.2-1.3).

Everything here is exactly what the claimed masked-sum program computes:
``PRG_MASK(seed, negate)`` is :func:`collab.fixedpoint.prg_elements` (negated
in the ring when ``negate``), ``RING_ADD`` is wrapping int64 addition, and
``RING_TO_FIXED`` at the same ``f`` is the identity on the word. The
accumulator is updated in place because a 10^6-word vector is summed with
dozens of masks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from collab import fixedpoint as fx
from collab.errors import BadInput


def encode(values: Any, frac_bits: int) -> np.ndarray:
    """Float values → fixed-point int64 words at ``frac_bits`` (the ring encoding is the identity)."""
    return fx.to_fixed(np.asarray(values, dtype=np.float64).reshape(-1), frac_bits)


def decode(words: np.ndarray, frac_bits: int) -> np.ndarray:
    """Ring sum → floats: ``RING_TO_FIXED`` (signed int64 at f) then ``from_fixed``."""
    return fx.from_fixed(fx.rescale_array(np.asarray(words, dtype=np.int64), frac_bits, frac_bits), frac_bits)


def check_words(words: Any, length: int) -> np.ndarray:
    """Validate an input vector of ring words: int64, one-dimensional, the round's length."""
    arr = np.asarray(words)
    if arr.dtype != np.int64:
        raise BadInput(f"secure-aggregation inputs are int64 fixed-point words, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != length:
        raise BadInput(f"expected a vector of {length} words, got shape {arr.shape}")
    return arr


def add_mask(acc: np.ndarray, seed: bytes, negate: bool) -> None:
    """acc += (−1 if negate else +1) · PRG(seed) in Z_2^64, in place (acc is int64)."""
    mask = fx.prg_elements(seed, acc.shape[0])
    # numpy int64 array arithmetic wraps modulo 2^64, which is the ring's addition.
    if negate:
        np.subtract(acc, mask, out=acc)
    else:
        np.add(acc, mask, out=acc)


def ring_sum(vectors: Iterable[np.ndarray], length: int) -> np.ndarray:
    """Σ vectors in Z_2^64 (``RING_ADD``); the zero vector when there are none."""
    items = list(vectors)
    return fx.ring_sum_array(items) if items else np.zeros(length, dtype=np.int64)


def mask_terms(owner: int, self_seed: bytes, pair_seeds: dict[int, bytes]) -> list[tuple[bytes, bool]]:
    """The (seed, negate) terms participant ``owner`` adds to its input.

    +PRG(b_u); +PRG(s_uv) for u < v and −PRG(s_uv) for u > v, so every pair
    cancels in the sum.
    """
    terms = [(self_seed, False)]
    terms += [(seed, owner > peer) for peer, seed in sorted(pair_seeds.items())]
    return terms
