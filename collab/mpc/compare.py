"""A cheaper secure sign test for bounded values: four comparisons per 64-bit adder word.

CrypTen's ``x < 0`` converts each secret-shared 64-bit value to XOR shares
and runs a 64-bit parallel-prefix adder on it (:func:`crypten.mpc.primitives.
converters._A2B`), then converts the sign bit back. The adder's AND gates are
the bulk of a comparison's traffic, one 64-bit word per value per gate.

When ``|x| < 2^(lane - 1 + drop - precision)`` (here 2^6 = 64 with 15-bit lanes,
8 dropped bits and 16 fractional bits) the sign survives two *local*
reductions of each party's share:

1. drop the low ``drop`` bits (a logical shift): the shares then add up to
   ``floor(x / 2^drop)`` or one less (the lost carry), which changes the sign
   only for ``0 <= x < 2^(drop - precision)`` (below 2^-8 here);
2. keep ``lane`` bits: addition mod 2^lane still gives the sign as the top bit.

Four 15-bit lanes, each followed by a zero guard bit that absorbs the lane's
carry, fit in one 64-bit word, so the same adder runs on a quarter of the words.
Callers must tolerate the band: the GELU of :mod:`collab.mpc.encoder` does,
since relu(x) - g(|x|) is also GELU(x) when -x stands in for |x|.
The sign bits are then shifted out locally and converted to arithmetic shares
exactly as CrypTen's ``_ltz`` does. Semi-honest security is unchanged: the
parties only ever add, shift and mask their own shares and run CrypTen's
binary adder and bit conversion.
"""

from __future__ import annotations

from typing import Any

import torch

import collab.mpc.compat  # noqa: F401  (must precede crypten)

LANE = 15
LANES = 4
DROP = 8
BOUND_LOG2 = 6  # |x| < 64 by default


def layout(lanes: int = LANES, bound_log2: int = BOUND_LOG2, precision_bits: int = 16) -> tuple[int, int]:
    """(lane bits, dropped bits) for ``lanes`` lanes per word and |x| < 2^bound_log2.

    More lanes means narrower lanes, so more low bits are dropped and the
    band of misread non-negative values widens: 4 lanes keep 15 bits (band
    2^-8 for |x| < 64), 5 keep 11 (2^-4), 6 keep 9 (2^-2).
    """
    if not 2 <= lanes <= 8:
        from collab.errors import BadInput

        raise BadInput("packed comparisons need 2 to 8 lanes per word")
    lane = 64 // lanes - 1  # one guard bit per lane
    return lane, bound_log2 + precision_bits - (lane - 1)


def bound(precision_bits: int = 16, lanes: int = LANES, bound_log2: int = BOUND_LOG2) -> float:
    """The largest |x| for which :func:`packed_ltz` is exact (up to the band above 0)."""
    lane, drop = layout(lanes, bound_log2, precision_bits)
    return float(2 ** (lane - 1 + drop - precision_bits))


def band(precision_bits: int = 16, lanes: int = LANES, bound_log2: int = BOUND_LOG2) -> float:
    """Values in [0, band) may read as negative (the carry lost when dropping bits)."""
    return float(2.0 ** (layout(lanes, bound_log2, precision_bits)[1] - precision_bits))


def packed_ltz(x: Any, lanes: int = LANES, bound_log2: int = BOUND_LOG2) -> Any:
    """``[x < 0]`` as an arithmetic CrypTensor (like ``x._ltz()``), for |x| below :func:`bound`."""
    import crypten.communicator as comm
    from crypten.mpc.primitives import BinarySharedTensor
    from crypten.mpc.ptype import ptype as Ptype

    ast = x._tensor
    shape = ast.share.shape
    lane, drop = layout(lanes, bound_log2, ast.encoder._precision_bits)
    kept = (ast.share >> drop) & ((1 << lane) - 1)  # bits [drop, drop + lane) of this party's share
    flat = kept.reshape(-1)
    n = flat.numel()
    per_lane = -(-n // lanes)
    flat = torch.nn.functional.pad(flat, (0, per_lane * lanes - n)).reshape(lanes, per_lane)
    packed = flat[0]
    for j in range(1, lanes):
        packed = packed | (flat[j] << (j * (lane + 1)))
    total = BinarySharedTensor.stack(
        [BinarySharedTensor(packed, src=i) for i in range(comm.get().get_world_size())]
    ).sum(dim=0)  # the parallel-prefix adder, on a third of the words
    bits = BinarySharedTensor.stack([(total >> (j * (lane + 1) + lane - 1)) & 1 for j in range(lanes)])
    bits.share = bits.share.reshape(-1)[:n].reshape(shape)
    bits.encoder = ast.encoder
    result = x.shallow_copy()
    result._tensor, result.ptype = bits, Ptype.binary
    precision = 0 if ast.encoder.scale == 1 else None
    result = result._to_ptype(Ptype.arithmetic, precision=precision, bits=1)
    result.encoder._scale = 1
    return result
