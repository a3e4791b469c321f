"""Number domains shared by the tensor VM, the chain and merges (docs/protocol.md §1).

Two domains, bit-exact with ``chain/contracts/lib/LibFixedPoint.sol``:

* FIXED: a signed int64 word ``q`` meaning ``q / 2**f`` (``f`` per tensor),
  one round-half-to-even rounding per op and saturation (never wraparound), so
  every step of a program has exactly one defined result;
* RING: Z_2^64 with wraparound, for pairwise-masked sums and secret shares.

The scalar functions (Python ``int`` in, ``int`` out) are the reference: they
mirror the Solidity code line by line. The ``*_array`` functions are the
vectorised forms the VM uses; the tests hold them equal to the scalar ones.
Intermediates that may leave int64 are computed exactly (Python ints or numpy
object arrays); the int64 fast paths are taken only where they are provably
exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
from eth_hash.auto import keccak

from collab.errors import BadInput

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
FRAC_BITS_MAX = 62
ONE_Q32 = 1 << 32
LOG2E_Q62 = 6653256548922161246
EXP_C = (4294967296, 2977044472, 1031764991, 238388332, 41309550, 5726720, 661577, 65510, 5676)
GELU_A = 192049463
GELU_B = 3426888095
_MASK64 = (1 << 64) - 1


class Domain(IntEnum):
    """Tensor domain byte of a header (protocol §2.1)."""

    FIXED = 0
    RING = 1
    BUNDLE = 2


# --------------------------------------------------------------------------- scalar primitives


def check_frac_bits(f: int) -> int:
    """Validate a fractional-bit count; headers only allow 0..62."""
    if not 0 <= f <= FRAC_BITS_MAX:
        raise BadInput(f"fractional bits must be in [0, {FRAC_BITS_MAX}], got {f}")
    return f


def sat(v: int) -> int:
    """Clamp to int64: the FIXED domain saturates instead of wrapping."""
    return INT64_MAX if v > INT64_MAX else INT64_MIN if v < INT64_MIN else v


def wrap(v: int) -> int:
    """Reduce into Z_2^64, represented as a signed int64 (two's complement)."""
    return ((v + (1 << 63)) & _MASK64) - (1 << 63)


def rdiv(n: int, d: int) -> int:
    """Integer nearest to n/d, ties to even (the protocol's only rounding rule)."""
    if d == 0:
        raise ZeroDivisionError("rdiv by zero")
    if d < 0:
        n, d = -n, -d
    q, r = divmod(n, d)  # floor division: 0 <= r < d
    if 2 * r > d or (2 * r == d and q & 1):
        q += 1
    return q


def rshift(v: int, s: int) -> int:
    """v / 2**s rounded half to even (s >= 0)."""
    if s == 0:
        return v
    q = v >> s
    r = v - (q << s)
    half = 1 << (s - 1)
    if r > half or (r == half and q & 1):
        q += 1
    return q


def rescale(v: int, fa: int, fb: int) -> int:
    """Re-express the exact integer v at scale 2**-fa at scale 2**-fb, round once, saturate."""
    if fb >= fa:
        return sat(v << (fb - fa))
    return sat(rshift(v, fa - fb))


def scaled_div(n: int, d: int, fa: int, fb: int) -> int:
    """(n / d) at scale fa, re-expressed at scale fb with a single rounding (d > 0)."""
    return sat(rdiv(n << max(0, fb - fa), d << max(0, fa - fb)))


def ring_add(a: int, b: int) -> int:
    """Addition in Z_2^64."""
    return wrap(a + b)


def ring_sub(a: int, b: int) -> int:
    """Subtraction in Z_2^64."""
    return wrap(a - b)


def ring_neg(a: int) -> int:
    """Additive inverse in Z_2^64 (what a PRG mask with ``negate`` adds)."""
    return wrap(-a)


def ring_mul(a: int, b: int) -> int:
    """Multiplication in Z_2^64."""
    return wrap(a * b)


# --------------------------------------------------------------------------- PRG


def prg_block(seed: bytes, counter: int) -> bytes:
    """keccak(seed ‖ uint256(counter)): one 32-byte block of the mask stream."""
    if len(seed) != 32:
        raise BadInput(f"PRG seed must be 32 bytes, got {len(seed)}")
    return keccak(seed + counter.to_bytes(32, "big"))


def prg_element(seed: bytes, index: int) -> int:
    """Element ``index`` of the stream: one keccak, so the one-step proof can recompute it alone."""
    block = prg_block(seed, index // 4)
    j = index % 4
    return int.from_bytes(block[8 * j : 8 * j + 8], "big", signed=True)


def prg_elements(seed: bytes, count: int, start: int = 0) -> np.ndarray:
    """Elements [start, start + count) of the stream as an int64 array.

    Long streams (secure-aggregation masks of 10^5-10^6 words) go through a
    numpy Keccak-f[1600] that hashes thousands of counter blocks at once; it is
    the same function as :func:`prg_block` (tests hold them equal), only
    batched, because one Python-level keccak call per 4 words is the bottleneck.
    """
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    if len(seed) != 32:
        raise BadInput(f"PRG seed must be 32 bytes, got {len(seed)}")
    first, last = start // 4, (start + count - 1) // 4
    if last - first + 1 >= _BATCH_MIN_BLOCKS and last < 1 << 64:
        words = _prg_words_batched(seed, first, last - first + 1)
    else:
        stream = b"".join(prg_block(seed, c) for c in range(first, last + 1))
        words = np.frombuffer(stream, dtype=">i8").astype(np.int64)
    offset = start - 4 * first
    return words[offset : offset + count].copy()


# Batched Keccak-256 over the PRG's fixed 64-byte preimages seed ‖ uint256(c).
# State: 25 lanes (lane x + 5y, little-endian words) × n independent blocks.
_BATCH_MIN_BLOCKS = 64
_BATCH_CHUNK = 8192  # blocks per pass: the working set stays in cache
_KECCAK_RC = tuple(
    np.uint64(v)
    for v in (
        0x0000000000000001, 0x0000000000008082, 0x800000000000808A, 0x8000000080008000,
        0x000000000000808B, 0x0000000080000001, 0x8000000080008081, 0x8000000000008009,
        0x000000000000008A, 0x0000000000000088, 0x0000000080008009, 0x000000008000000A,
        0x000000008000808B, 0x800000000000008B, 0x8000000000008089, 0x8000000000008003,
        0x8000000000008002, 0x8000000000000080, 0x000000000000800A, 0x800000008000000A,
        0x8000000080008081, 0x8000000000008080, 0x0000000080000001, 0x8000000080008008,
    )
)  # fmt: skip
_KECCAK_ROT = ((0, 36, 3, 41, 18), (1, 44, 10, 45, 2), (62, 6, 43, 15, 61), (28, 55, 25, 21, 56), (27, 20, 39, 8, 14))
_ROT_L = np.array([[_KECCAK_ROT[x][y] for x in range(5)] for y in range(5)], dtype=np.uint64).reshape(25, 1)
_ROT_R = (np.uint64(64) - _ROT_L) % np.uint64(64)


def _pi_source() -> np.ndarray:
    """For the pi step laid out as 5 rows of 7 (x wraps twice, so chi reads slices): source lane per slot."""
    src = [0] * 25
    for x in range(5):
        for y in range(5):
            src[y + 5 * ((2 * x + 3 * y) % 5)] = x + 5 * y
    return np.array([src[(c % 5) + 5 * y] for y in range(5) for c in range(7)], dtype=np.intp)


_PI_SRC = _pi_source()


def _keccak_f1600_batched(state: np.ndarray) -> None:
    """Keccak-f[1600] in place on a (25, n) uint64 array (n states side by side)."""
    n = state.shape[1]
    a3 = state.reshape(5, 5, n)
    c = np.empty((7, n), np.uint64)
    d = np.empty((5, n), np.uint64)
    t = np.empty((5, n), np.uint64)
    r1 = np.empty((25, n), np.uint64)
    r2 = np.empty((25, n), np.uint64)
    b = np.empty((35, n), np.uint64)
    b3 = b.reshape(5, 7, n)
    chi = np.empty((5, 5, n), np.uint64)
    one, s63 = np.uint64(1), np.uint64(63)
    for rc in _KECCAK_RC:
        # theta (c[1:6] = column parities, c[0] and c[6] wrap around)
        np.bitwise_xor(a3[0], a3[1], out=c[1:6])
        for y in (2, 3, 4):
            c[1:6] ^= a3[y]
        c[0], c[6] = c[5], c[1]
        np.left_shift(c[2:7], one, out=d)
        np.right_shift(c[2:7], s63, out=t)
        d |= t
        d ^= c[0:5]
        a3 ^= d
        # rho, then pi into the 5x7 layout
        np.left_shift(state, _ROT_L, out=r1)
        np.right_shift(state, _ROT_R, out=r2)
        r1 |= r2
        np.take(r1, _PI_SRC, axis=0, out=b)
        # chi and iota
        np.invert(b3[:, 1:6], out=chi)
        chi &= b3[:, 2:7]
        np.bitwise_xor(b3[:, 0:5], chi, out=a3)
        state[0] ^= rc


def _prg_words_batched(seed: bytes, first_block: int, blocks: int) -> np.ndarray:
    """Words of prg_block(seed, c) for c in [first_block, first_block + blocks), as int64."""
    seed_lanes = np.frombuffer(seed, dtype="<u8")
    out = np.empty((blocks, 4), dtype=np.uint64)
    for c0 in range(0, blocks, _BATCH_CHUNK):
        n = min(_BATCH_CHUNK, blocks - c0)
        state = np.zeros((25, n), dtype=np.uint64)
        state[0:4] = seed_lanes[:, None]
        # uint256(c) big-endian fills bytes 32..63; c < 2**64 sits in lane 7, byte-swapped.
        state[7] = np.arange(first_block + c0, first_block + c0 + n, dtype=np.uint64).byteswap()
        state[8] = np.uint64(0x01)  # keccak padding: 0x01 at byte 64 ...
        state[16] = np.uint64(0x80 << 56)  # ... and 0x80 at byte 135 (rate 136)
        _keccak_f1600_batched(state)
        out[c0 : c0 + n] = state[0:4].T
    return out.byteswap().view(np.int64).reshape(-1)


# --------------------------------------------------------------------------- approximations (scalar reference)


def exp_fx(x: int, fi: int, fo: int) -> int:
    """e**x in fixed point: base-2 range reduction and a degree-8 Taylor polynomial in Q32."""
    big_x = rescale(x, fi, 32)
    if big_x >= 64 * ONE_Q32:
        return INT64_MAX
    if big_x <= -64 * ONE_Q32:
        return 0
    t = rshift(big_x * LOG2E_Q62, 62)
    n = t >> 32
    r = t - (n << 32)
    p = EXP_C[8]
    for c in EXP_C[7::-1]:
        p = rshift(p * r, 32) + c
    s = n + fo - 32
    return sat(p << s) if s >= 0 else rshift(p, -s)


def gelu_fx(x: int, fi: int, fo: int) -> int:
    """GELU, tanh form, with tanh built from exp_fx and one exact division."""
    big_x = rescale(x, fi, 32)
    if big_x >= 8 * ONE_Q32:
        return rescale(x, fi, fo)
    if big_x <= -8 * ONE_Q32:
        return 0
    x3 = rshift(rshift(big_x * big_x, 32) * big_x, 32)
    y = rshift((big_x + rshift(GELU_A * x3, 32)) * GELU_B, 32)
    e = exp_fx(2 * y, 32, 32)
    th = ONE_Q32 - rdiv(1 << 65, ONE_Q32 + e)
    g = rshift(big_x * (ONE_Q32 + th), 33)
    return rescale(g, 32, fo)


def reciprocal_fx(x: int, fi: int, fo: int) -> int:
    """1/x, exact up to one rounding; 1/0 saturates to INT64_MAX."""
    if x == 0:
        return INT64_MAX
    return sat(rdiv(1 << (fi + fo), x))


def inv_sqrt_fx(x: int, fi: int, fo: int) -> int:
    """1/sqrt(x), nearest integer (ties up); x <= 0 saturates to INT64_MAX."""
    if x <= 0:
        return INT64_MAX
    return sat((math.isqrt((1 << (2 * fo + fi + 2)) // x) + 1) >> 1)


def softmax_row(row: list[int], fi: int, fo: int) -> list[int]:
    """Row softmax: max-shifted exp in Q32, exact sum, one rounded division per element."""
    m = max(row)
    e = [exp_fx(v - m, fi, 32) for v in row]
    s = sum(e)
    return [sat(rdiv(v << fo, s)) for v in e]


def layernorm_row(row: list[int], eps: int, fi: int, fo: int) -> list[int]:
    """Row layer normalisation without the affine part (that is MUL + BIAS_ADD)."""
    n = len(row)
    mu = rdiv(sum(row), n)
    d = [v - mu for v in row]
    var = rdiv(sum(v * v for v in d), n << fi)
    r = inv_sqrt_fx(var + eps, fi, 32)
    return [rescale(v * r, fi + 32, fo) for v in d]


# --------------------------------------------------------------------------- vectorised forms

IntArray = np.ndarray


def _obj(a: Any) -> np.ndarray:
    """Exact-integer view of an array (numpy object dtype holding Python ints)."""
    arr = np.asarray(a)
    if arr.dtype == object:
        return arr
    return arr.astype(object)


def sat_array(v: Any) -> IntArray:
    """Saturate exact integers (object or int64 array) to an int64 array."""
    arr = np.asarray(v)
    if arr.dtype == np.int64:
        return arr.copy()
    arr = _obj(arr)
    return np.minimum(np.maximum(arr, INT64_MIN), INT64_MAX).astype(np.int64)


def wrap_array(v: Any) -> IntArray:
    """Reduce exact integers into Z_2^64 (signed int64 representatives)."""
    arr = np.asarray(v)
    if arr.dtype == np.int64:
        return arr.copy()
    arr = _obj(arr)
    return (((arr + (1 << 63)) & _MASK64) - (1 << 63)).astype(np.int64)


def rdiv_array(n: Any, d: int) -> np.ndarray:
    """Elementwise rdiv by a positive scalar, exact (object array out)."""
    if d <= 0:
        raise ValueError("rdiv_array needs a positive divisor")
    n = _obj(n)
    q = n // d
    r = n - q * d
    up = (2 * r > d) | ((2 * r == d) & ((q & 1) == 1))
    return q + up.astype(object)


def rshift_array(v: Any, s: int) -> IntArray:
    """Elementwise rshift; int64 fast path when v is int64 (result always fits)."""
    arr = np.asarray(v)
    if s == 0:
        return arr.copy()
    if arr.dtype == np.int64 and s <= 62:
        q = arr >> s
        r = arr & ((1 << s) - 1)
        half = 1 << (s - 1)
        up = (r > half) | ((r == half) & ((q & 1) == 1))
        return q + up.astype(np.int64)
    return rdiv_array(arr, 1 << s)


def rshift_small_inplace(arr: IntArray, s: int) -> IntArray:
    """:func:`rshift_array` of an int64 array with every |x| < 2^62, computed in ``arr`` itself.

    floor((x + 2^(s-1) - 1 + parity) / 2^s), parity the low bit of floor(x / 2^s),
    rounds half to even in four passes and one temporary (the general kernel
    takes eight and four); the bound keeps the sum below 2^63.
    """
    if s == 0:
        return arr
    parity = arr >> s
    parity &= 1
    arr += parity
    arr += (1 << (s - 1)) - 1
    arr >>= s
    return arr


def rescale_array(v: Any, fa: int, fb: int) -> IntArray:
    """Vectorised :func:`rescale`: int64 (or exact object) in, int64 out."""
    arr = np.asarray(v)
    if fb >= fa:
        s = fb - fa
        if arr.dtype == np.int64 and s == 0:
            return arr.astype(np.int64)  # a copy, as on every other path
        if arr.dtype == np.int64 and s <= 62:
            hi = (1 << (63 - s)) - 1
            lo = -(1 << (63 - s))
            out = np.where(arr > hi, INT64_MAX, np.where(arr < lo, INT64_MIN, arr << s))
            return out.astype(np.int64)
        return sat_array(_obj(arr) * (1 << s))
    out = rshift_array(arr, fa - fb)
    return sat_array(out)


def mul_rescale_array(a: Any, b: Any, fab: int, fo: int) -> IntArray:
    """rescale(a*b, fab, fo) elementwise; int64 products only when |a|,|b| < 2**31."""
    a_arr, b_arr = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    small = a_arr.size == 0 or (
        int(np.abs(a_arr.astype(np.float64)).max()) < (1 << 31)
        and int(np.abs(b_arr.astype(np.float64)).max()) < (1 << 31)
    )
    if small:
        return rescale_array(a_arr * b_arr, fab, fo)
    if 1 <= fab - fo <= 126:
        return mul_rshift_i64(a_arr, b_arr, fab - fo)
    return rescale_array(_obj(a_arr) * _obj(b_arr), fab, fo)


def _limbs(x: np.ndarray, width: int) -> list[np.ndarray]:
    """Split int64 words into base-2**width limbs (low limbs unsigned, top limb signed) as float64."""
    lo_v, hi_v = (int(x.min()), int(x.max())) if x.size else (0, 0)
    bits = max(lo_v.bit_length(), hi_v.bit_length()) + 1
    count = max(1, -(-bits // width))
    out: list[np.ndarray] = []
    rest = x.astype(np.int64)
    for _ in range(count - 1):
        out.append((rest & ((1 << width) - 1)).astype(np.float64))
        rest = rest >> width
    out.append(rest.astype(np.float64))
    return out


def matmul_exact(a: Any, w: Any) -> np.ndarray:
    """Exact Σ_k a[..., m, k] * w[n, k] (torch Linear layout) as an int64 or object array.

    The words are split into limbs small enough that every float64 BLAS product
    sum stays below 2**53, hence exact; limb products are recombined with exact
    integers. The result is int64 when it provably fits, else an object array.
    """
    a_arr = np.asarray(a, dtype=np.int64)
    w_arr = np.asarray(w, dtype=np.int64)
    k = a_arr.shape[-1]
    if w_arr.ndim != 2 or w_arr.shape[1] != k:
        raise BadInput(f"matmul shapes {a_arr.shape} x {w_arr.shape} do not match (weight is [out, in])")
    width = max(1, (52 - max(1, k).bit_length()) // 2)
    a_limbs, w_limbs = _limbs(a_arr, width), _limbs(w_arr, width)
    groups: dict[int, np.ndarray] = {}
    for i, al in enumerate(a_limbs):
        for j, wl in enumerate(w_limbs):
            term = np.rint(np.matmul(al, wl.T)).astype(np.int64)
            groups[i + j] = groups[i + j] + term if i + j in groups else term
    bound = k * max(abs(int(a_arr.min(initial=0))), int(a_arr.max(initial=0))) * max(
        abs(int(w_arr.min(initial=0))), int(w_arr.max(initial=0))
    )
    if bound < (1 << 62):
        # The true sum fits int64, so summing the limb groups modulo 2**64 (numpy's
        # wrapping int64 shifts and adds) lands exactly on it.
        total = np.zeros(groups[0].shape, dtype=np.int64)
        for t, g in groups.items():
            total += g << (width * t)
        return total
    total_obj = np.zeros(groups[0].shape, dtype=object)
    for t, g in groups.items():
        total_obj = total_obj + g.astype(object) * (1 << (width * t))
    return total_obj


def matmul_rescale(a: Any, w: Any, fab: int, fo: int) -> IntArray:
    """MATMUL op: rescale(Σ_k a·w, fa + fw, fo) per output element, exact."""
    return rescale_array(matmul_exact(a, w), fab, fo)


def softmax_array(a: Any, fi: int, fo: int) -> IntArray:
    """Row softmax over the last axis, equal to :func:`softmax_row` on every row."""
    arr = np.asarray(a, dtype=np.int64)
    shifted = arr.astype(object) - arr.max(axis=-1, keepdims=True).astype(object)
    e = _exp_i64(rescale_array(shifted, fi, 32), 32)
    total = e.sum(axis=-1, keepdims=True)  # each e <= 2**32, rows <= 2**20 long: fits int64
    num = e.astype(object) * (1 << fo)
    return sat_array(_rdiv_obj(num, np.broadcast_to(total, e.shape).astype(object)))


def layernorm_array(a: Any, eps: int, fi: int, fo: int) -> IntArray:
    """Row layer normalisation over the last axis, equal to :func:`layernorm_row` on every row."""
    arr = np.asarray(a, dtype=np.int64).astype(object)
    n = arr.shape[-1]
    mu = _rdiv_obj(arr.sum(axis=-1, keepdims=True), np.full(arr.shape[:-1] + (1,), n, dtype=object))
    d = arr - mu
    var = _rdiv_obj((d * d).sum(axis=-1, keepdims=True), np.full(mu.shape, n << fi, dtype=object))
    r = np.vectorize(lambda v: inv_sqrt_fx(int(v) + eps, fi, 32), otypes=[object])(var)
    return rescale_array(d * r, fi + 32, fo)


def _rdiv_obj(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Elementwise rdiv for exact-integer arrays with positive divisors."""
    q = n // d
    r = n - q * d
    up = (2 * r > d) | ((2 * r == d) & ((q & 1) == 1))
    return q + up.astype(object)


def ring_sum_array(arrays: list[Any]) -> IntArray:
    """Z_2^64 sum of same-shape int64 arrays (numpy int64 addition wraps, as the ring does)."""
    if not arrays:
        raise BadInput("ring sum of no tensors")
    total = np.array(arrays[0], dtype=np.int64, copy=True)
    with np.errstate(over="ignore"):
        for arr in arrays[1:]:
            total += np.asarray(arr, dtype=np.int64)
    return total


# --------------------------------------------------------------------------- exact int64 kernels
# Products of two int64 words need 128 bits. These kernels keep them as a
# (signed high int64, unsigned low uint64) pair built from 32-bit limbs, so the
# hot approximations run at numpy speed and still equal the scalar reference.

_U32 = np.uint64(0xFFFFFFFF)


def _mul_wide(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact a*b for int64 arrays as (hi int64, lo uint64), value = hi*2**64 + lo."""
    ah, bh = a >> 32, b >> 32
    al, bl = (a & 0xFFFFFFFF).astype(np.uint64), (b & 0xFFFFFFFF).astype(np.uint64)
    hi = ah * bh
    lo = al * bl
    with np.errstate(over="ignore"):
        for m in (ah * bl.astype(np.int64), al.astype(np.int64) * bh):
            hi = hi + (m >> 32)
            add = (m.astype(np.uint64) & _U32) << np.uint64(32)
            new = lo + add
            hi = hi + (new < lo).astype(np.int64)
            lo = new
    return hi, lo


def _wide_rshift(hi: np.ndarray, lo: np.ndarray, s: int) -> np.ndarray:
    """sat(rshift(hi*2**64 + lo, s)) for 1 <= s <= 126, as int64."""
    if s < 64:
        q_hi = hi >> s
        q_lo = (lo >> np.uint64(s)) | (hi.astype(np.uint64) << np.uint64(64 - s)) if s else lo
        rem = lo & np.uint64((1 << s) - 1)
        half = np.uint64(1 << (s - 1))
        above = rem > half
        tie = rem == half
    else:
        k = s - 64
        q_hi = hi >> 63 if k == 63 else (hi >> k) >> 63
        q_lo = (hi >> k).astype(np.uint64)
        rem_hi = (hi & ((1 << k) - 1)).astype(np.uint64) if k else np.zeros_like(lo)
        if k == 0:
            above, tie = lo > np.uint64(1 << 63), lo == np.uint64(1 << 63)
        else:
            half_hi = np.uint64(1 << (k - 1))
            above = (rem_hi > half_hi) | ((rem_hi == half_hi) & (lo > 0))
            tie = (rem_hi == half_hi) & (lo == 0)
    q = q_lo.astype(np.int64)
    fits = q_hi == (q >> 63)
    up = above | (tie & ((q & 1) == 1))
    with np.errstate(over="ignore"):
        rounded = q + up.astype(np.int64)
    overflow_up = up & (q == INT64_MAX)
    out = np.where(overflow_up, INT64_MAX, rounded)
    return np.where(fits, out, np.where(hi < 0, INT64_MIN, INT64_MAX)).astype(np.int64)


def mul_rshift_i64(a: Any, b: Any, s: int) -> IntArray:
    """sat(rshift(a*b, s)) elementwise for int64 arrays, exact, 1 <= s <= 126."""
    a_arr = np.asarray(a, dtype=np.int64)
    b_arr = np.broadcast_to(np.asarray(b, dtype=np.int64), a_arr.shape)
    hi, lo = _mul_wide(a_arr, b_arr)
    return _wide_rshift(hi, lo, s)


def _shift_rows(p: np.ndarray, s: np.ndarray) -> np.ndarray:
    """sat(p << s) where s >= 0, rshift(p, -s) where s < 0; p in [0, 2**34), per-element s."""
    left = np.clip(s, 0, 62)
    limit = np.int64(INT64_MAX) >> left
    shifted = np.where((s >= 31) | (p > limit), INT64_MAX, p << left)
    k = np.clip(-s, 1, 62)
    q = p >> k
    rem = p & ((np.int64(1) << k) - 1)
    half = np.int64(1) << (k - 1)
    down = q + ((rem > half) | ((rem == half) & ((q & 1) == 1))).astype(np.int64)
    down = np.where(-s > 40, 0, down)
    return np.where(s >= 0, np.where(p == 0, 0, shifted), down).astype(np.int64)


def _exp_i64(big_x: np.ndarray, fo: int) -> np.ndarray:
    """EXP on Q32 inputs already rescaled (int64), output at fo: the fast path of exp_array."""
    hi = big_x >= 64 * ONE_Q32
    lo = big_x <= -64 * ONE_Q32
    x = np.where(hi | lo, 0, big_x).astype(np.int64)
    t = mul_rshift_i64(x, LOG2E_Q62, 62)
    n = t >> 32
    r = t - (n << 32)
    r_hi, r_lo = r >> 16, r & 0xFFFF
    p = np.full(x.shape, EXP_C[8], dtype=np.int64)
    for c in EXP_C[7::-1]:
        # rshift(p*r, 32) with p < 2**34 and r < 2**32, from 16-bit limbs of r.
        m = p * r_hi
        low = (m & 0xFFFF) << 16
        low = low + p * r_lo
        q = (m >> 16) + (low >> 32)
        rem = low & 0xFFFFFFFF
        up = (rem > (1 << 31)) | ((rem == (1 << 31)) & ((q & 1) == 1))
        p = q + up.astype(np.int64) + c
    out = _shift_rows(p, n + (fo - 32))
    return np.where(hi, INT64_MAX, np.where(lo, 0, out)).astype(np.int64)


def _where(cond: np.ndarray, a: Any, b: Any) -> np.ndarray:
    return np.where(cond, a, b).astype(object)


def _rshift_obj(v: np.ndarray, s: int) -> np.ndarray:
    q = v >> s
    r = v - (q << s)
    half = 1 << (s - 1)
    up = (r > half) | ((r == half) & ((q & 1) == 1))
    return q + up.astype(object)


def _rescale_obj(v: np.ndarray, fa: int, fb: int) -> np.ndarray:
    if fb >= fa:
        out = v * (1 << (fb - fa))
    else:
        out = _rshift_obj(v, fa - fb)
    return np.minimum(np.maximum(out, INT64_MIN), INT64_MAX)


def _exp_obj(x: np.ndarray, fi: int, fo: int) -> np.ndarray:
    big_x = _rescale_obj(x, fi, 32)
    hi = big_x >= 64 * ONE_Q32
    lo = big_x <= -64 * ONE_Q32
    safe = _where(hi | lo, 0, big_x)
    t = _rshift_obj(safe * LOG2E_Q62, 62)
    n = t >> 32
    r = t - (n << 32)
    p = np.full(x.shape, EXP_C[8], dtype=object)
    for c in EXP_C[7::-1]:
        p = _rshift_obj(p * r, 32) + c
    s = n + (fo - 32)
    pos = s >= 0
    # Shift amounts are per element: apply them with exact Python ints.
    shifted = np.array(
        [pi << si if si >= 0 else 0 for pi, si in zip(p.ravel(), s.ravel())], dtype=object
    ).reshape(x.shape)
    neg = np.array(
        [rshift(pi, -si) if si < 0 else 0 for pi, si in zip(p.ravel(), s.ravel())], dtype=object
    ).reshape(x.shape)
    out = _where(pos, np.minimum(shifted, INT64_MAX), neg)
    out = _where(hi, INT64_MAX, out)
    return _where(lo, 0, out)


def exp_array(x: Any, fi: int, fo: int) -> IntArray:
    """Vectorised :func:`exp_fx` (int64 kernels; exact-integer fallback for object input)."""
    arr = np.asarray(x)
    if not arr.size:
        return np.zeros(arr.shape, np.int64)
    if arr.dtype == object:
        return _exp_obj(arr, fi, fo).astype(np.int64)
    return _exp_i64(rescale_array(arr.astype(np.int64), fi, 32), fo)


def _rdiv_2_65(d: np.ndarray) -> np.ndarray:
    """rdiv(2**65, d) for uint64 d >= 2**32, without leaving 64 bits."""
    all_ones = np.uint64(0xFFFFFFFFFFFFFFFF)
    q0, r0 = all_ones // d, all_ones % d  # 2**64 = q0*d + r0 + 1
    wraps = (r0 + np.uint64(1)) == d
    q1 = np.where(wraps, q0 + np.uint64(1), q0)
    r1 = np.where(wraps, np.uint64(0), r0 + np.uint64(1))
    carry = r1 >= d - r1  # 2**65 = 2*q1*d + 2*r1
    q = (q1 << np.uint64(1)) + carry.astype(np.uint64)
    r = np.where(carry, r1 - (d - r1), r1 << np.uint64(1))
    up = (r > d - r) | ((r == d - r) & ((q & np.uint64(1)) == 1))
    return (q + up.astype(np.uint64)).astype(np.int64)


def gelu_array(x: Any, fi: int, fo: int) -> IntArray:
    """Vectorised :func:`gelu_fx` (int64 kernels, exact)."""
    arr = np.asarray(x, dtype=np.int64)
    if not arr.size:
        return np.zeros(arr.shape, np.int64)
    big_x = rescale_array(arr, fi, 32)
    hi = big_x >= 8 * ONE_Q32
    lo = big_x <= -8 * ONE_Q32
    mx = np.where(hi | lo, 0, big_x).astype(np.int64)
    x3 = mul_rshift_i64(mul_rshift_i64(mx, mx, 32), mx, 32)
    y = mul_rshift_i64(mx + mul_rshift_i64(x3, GELU_A, 32), GELU_B, 32)
    e = _exp_i64(2 * y, 32)
    th = ONE_Q32 - _rdiv_2_65(e.astype(np.uint64) + np.uint64(ONE_Q32))
    g = mul_rshift_i64(mx, ONE_Q32 + th, 33)
    mid = rescale_array(g, 32, fo)
    out = np.where(hi, rescale_array(arr, fi, fo), np.where(lo, 0, mid))
    return out.astype(np.int64)


def reciprocal_array(x: Any, fi: int, fo: int) -> IntArray:
    """Vectorised :func:`reciprocal_fx`: int64 arithmetic when 2^(fi+fo) ≤ 2^61 and no word is INT64_MIN."""
    arr = np.asarray(x, dtype=np.int64)
    if fi + fo > 61 or (arr.size and int(arr.min()) == INT64_MIN):
        return np.array([reciprocal_fx(int(v), fi, fo) for v in arr.ravel()], dtype=np.int64).reshape(arr.shape)
    n = np.int64(1 << (fi + fo))
    d = np.abs(arr)
    num = np.where(arr < 0, -n, n)  # rdiv(n, x) = rdiv(sign(x)·n, |x|)
    d_safe = np.where(d == 0, 1, d)
    q, r = np.divmod(num, d_safe)  # floor: 0 <= r < d, so d - r >= 1 and nothing overflows
    half_up = (r > d_safe - r) | ((r == d_safe - r) & (q & 1).astype(bool))
    return np.where(d == 0, INT64_MAX, q + half_up)


def inv_sqrt_array(x: Any, fi: int, fo: int) -> IntArray:
    """Vectorised :func:`inv_sqrt_fx`."""
    arr = np.asarray(x, dtype=np.int64)
    return np.array([inv_sqrt_fx(int(v), fi, fo) for v in arr.ravel()], dtype=np.int64).reshape(arr.shape)


# --------------------------------------------------------------------------- float conversion

_TWO63 = float(1 << 63)


def to_fixed(x: Any, f: int) -> IntArray:
    """Quantise floats (numpy, torch or Python) to int64 words at f fractional bits."""
    check_frac_bits(f)
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if np.isnan(arr).any():
        raise BadInput("cannot quantise NaN")
    scaled = np.rint(np.ldexp(arr, f))
    hi = scaled >= _TWO63
    lo = scaled < -_TWO63
    inner = np.where(hi | lo, 0.0, scaled).astype(np.int64)
    return np.where(hi, INT64_MAX, np.where(lo, INT64_MIN, inner)).astype(np.int64)


def from_fixed(q: Any, f: int) -> np.ndarray:
    """Dequantise int64 words at f fractional bits to float64."""
    check_frac_bits(f)
    return np.ldexp(np.asarray(q, dtype=np.int64).astype(np.float64), -f)


@dataclass(frozen=True)
class QuantError:
    """Error a float → fixed → float round trip introduces."""

    max_abs: float
    rms: float
    saturated: int

    def as_dict(self) -> dict[str, float | int]:
        """JSON-ready form (benchmarks, `collab bench`)."""
        return {"max_abs": self.max_abs, "rms": self.rms, "saturated": self.saturated}


def quantization_error(x: Any, f: int) -> QuantError:
    """Measure the round-trip error of quantising x at f fractional bits."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    q = to_fixed(arr, f)
    diff = from_fixed(q, f) - arr
    saturated = int(np.count_nonzero((q == INT64_MAX) | (q == INT64_MIN)))
    if arr.size == 0:
        return QuantError(0.0, 0.0, 0)
    return QuantError(float(np.abs(diff).max()), float(np.sqrt(np.mean(diff * diff))), saturated)


def compare_to_float(fixed: Any, f: int, reference: Any) -> QuantError:
    """Error of a fixed-point result against a float reference (e.g. torch's own op)."""
    if hasattr(reference, "detach"):
        reference = reference.detach().cpu().double().numpy()
    ref = np.asarray(reference, dtype=np.float64)
    got = from_fixed(fixed, f)
    diff = got - ref
    q = np.asarray(fixed, dtype=np.int64)
    saturated = int(np.count_nonzero((q == INT64_MAX) | (q == INT64_MIN)))
    if ref.size == 0:
        return QuantError(0.0, 0.0, 0)
    return QuantError(float(np.abs(diff).max()), float(np.sqrt(np.mean(diff * diff))), saturated)
