"""A BERT encoder written directly on CrypTensors, with its approximation knobs.

CrypTen has no transformer, LayerNorm or GELU module and its ONNX import is
fragile, so the encoder is spelled out here op by op. Every function takes
either CrypTensors (the secure path) or plain float tensors (the *plaintext
simulation*: the same approximations in float, which separates approximation
error from fixed-point error and lets tests check the maths without parties).

Who provides what (see docs/secure_inference.md):

* the owner secret-shares the weights (:func:`share_weights`, ``src=owner``),
  with public, lossless preprocessing folded in (``1/sqrt(head_dim)`` into the
  query projection, token-type row 0 into the position table);
* the client secret-shares its inputs (:func:`share_inputs`, ``src=client``):
  one-hot token ids, an additive attention bias and the pooling weights
  ``mask / length``, so the owner learns neither the tokens nor the length;
* :func:`encode` returns the secret-shared mean-pooled embedding; only the
  client opens it, and L2-normalises it in plaintext.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

import collab.mpc.compat  # noqa: F401  (must precede crypten)
from collab.errors import BadInput
from collab.mpc import fixed
from collab.mpc.model import EncoderSpec, EncoderWeights, LayerWeights, Tokens
from collab.mpc.profile import section, set_layer

Tensor = Any  # torch.Tensor or crypten.CrypTensor: the two share the ops used here

SoftmaxVariant = Literal["exact", "shifted"]
GeluVariant = Literal["poly", "poly2", "exppoly", "sigmoid", "tanh"]
NewtonStart = Literal["fixed", "compare"]


@dataclass(frozen=True)
class Approximations:
    """Every knob trading accuracy for cost in the secure encoder.

    softmax
        ``"exact"``: CrypTen's recipe, exp(x - rowmax) / sum; the row max costs
        a tree of secure comparisons (n - 1 per row). ``"shifted"``: the row
        max only in the layers listed in ``softmax_max_layers``; elsewhere
        exp(x - softmax_shift) with a public shift and no comparison. One
        shift cannot serve MiniLM's layer 0 (row maxima 0.1 to 31 in one
        head, scores down to -57), but layers 1-5 have row maxima in
        [-0.5, 9.2] (measured), so the default keeps the max in layer 0 only.
        The denominator then spans ~6 decades, so its reciprocal is computed
        as ``softmax_scale / sum`` by ``shifted_reciprocal_iters`` Newton steps
        from a public guess (the steps act on one value per row: rounds, not bytes).
    gelu
        ``"poly"``: relu(x) - g(min(|x|, gelu_clip)) where g(t) = t*Phi(-t) is a
        degree-``gelu_degree`` Chebyshev fit: 3 sign tests per element in one
        batch, then min(|x|, clip) and relu(x) as one broadcast product of x
        with two bit combinations (x opened once), then the polynomial. With
        packed sign tests, degree 7: max error 7e-4, 10 rounds, 173 bytes per
        element (the ``exppoly`` form: 1.0e-3, 16 rounds, 234 bytes).
        ``"poly2"``: the same maths with 2 comparisons per element (sign of x,
        then |x| against the clip: two rounds).
        ``"exppoly"``: 1 comparison per element (the sign): g as a degree
        ``gelu_degree`` polynomial of w = exp(-|x|) (limit exp, ``gelu_exp_iters``, valid for |x| <= 2^k),
        which needs no clipping since w is in (0, 1] (max error 1.2e-3 at degree
        10, 3.6e-4 at 12).
    packed_compare
        GELU's sign tests by :func:`collab.mpc.compare.packed_ltz`: a carry
        tree over a few kept bits (~25x fewer bytes per comparison), exact for
        |x| < 64 except that x in [0, 2^-8) may read as negative; for
        ``exppoly`` that is harmless (-x then stands in for |x|, and
        (x + t)/2 - g(t) is GELU(x) for t = +-x; the fit covers t >= -2^-8).
        MiniLM's FFN inputs stay within [-18, 25] (measured).
        ``"sigmoid"``: x*sigmoid(1.702x) (max error ~0.02). ``"tanh"``: the
        tanh form of GELU over CrypTen's tanh. CrypTen's own ``erf`` is broken
        outside [-1, 1] and is never used.
    compare_lanes
        The packed sign tests keep 64/lanes - 1 bits (named for when lanes shared
        an adder word): 4 (15 bits, band 2^-8), 5 (11, 2^-4) or 6 (9, 2^-2); the
        exp-polynomial GELU's fit covers the band.
    packed_max
        The layer-0 softmax row max by a tree of packed comparisons of
        differences below 512 (15 kept bits, band 2^-5: a misread picks a value
        at most 2^-5 below the max, and softmax is shift-invariant) instead
        of CrypTen's 64-bit comparisons. MiniLM's layer-0 logits, padding
        bias included, differ by at most ~350 within a row.
    exp_iters
        Squarings in exp(x) = (1 + x/2^k)^(2^k); valid for x >= -2^k.
    reciprocal_iters
        Newton-Raphson steps for the softmax denominator.
    inv_sqrt_iters
        Newton-Raphson steps for LayerNorm's 1/sqrt(var). MiniLM's variances
        span 0.002 (embeddings) to ~130 (FFN residuals): CrypTen's default of 3
        gives cosine 0.96-0.98 even in float, 8 gives 1.0000. Each step works
        on one value per token, so extra steps cost rounds, not bytes.
    layer_norm_scale
        Public divisor putting variances into inv_sqrt's convergence range
        (CrypTen's initial guess is good on about [0.5, 200]).
    softmax_lift
        The shifted softmax's two largest truncated products, exp's last
        squaring (values up to e^10.5) and ``num * (scale / sum)`` (up to
        ``scale``), are computed ``softmax_lift`` times smaller and lifted
        back by that public integer, which multiplies shares exactly: a
        two-party truncation fails with odds proportional to the value, so
        those ops fail ``softmax_lift`` times less often, at the price of
        log2(lift) fractional bits of the numerators (:func:`lifted_exp`).
        2^(2^m): exp's base is halved before its last m squarings; 1 keeps
        the plain products.
    newton_start
        Where the Newton iterations for 1/x (softmax denominators) and
        1/sqrt(x) (LayerNorm, the output's L2 norm) start. ``"fixed"``:
        CrypTen's exp-based guesses and, for the shifted softmax, one public
        guess; from those most steps only walk toward the answer (hence 8,
        10 and 26 steps), each a round trip. ``"compare"``: one batch of
        packed sign tests of x against powers of √2 (LayerNorm, layer 0's
        rows) or of 2 (the shifted softmax's rows) puts each value in its
        interval and starts at f of the interval's middle
        (:func:`newton_start`: one value per row or token, ~7 rounds); the
        error is then at most 0.17 or 1/3, so 3 or 4 steps pass 16-bit
        precision (``cheap``: ``inv_sqrt_iters`` and ``reciprocal_iters`` 3,
        ``shifted_reciprocal_iters`` 3, i.e. 2 steps and its cubic correction).
    """

    softmax: SoftmaxVariant = "exact"
    gelu: GeluVariant = "poly"
    gelu_degree: int = 10
    gelu_clip: float = 4.0
    exp_iters: int = 8
    reciprocal_iters: int = 10
    inv_sqrt_iters: int = 8
    layer_norm_scale: float = 1.0
    softmax_max_layers: tuple[int, ...] = (0,)
    softmax_shift: float = 4.0
    softmax_scale: float = 1024.0
    shifted_reciprocal_iters: int = 26
    packed_compare: bool = False
    gelu_exp_iters: int = 8
    compare_lanes: int = 4
    packed_max: bool = False
    softmax_lift: int = 1
    newton_start: NewtonStart = "fixed"

    def __post_init__(self) -> None:
        if self.softmax not in ("exact", "shifted"):
            raise BadInput(f"unknown softmax variant {self.softmax!r}")
        if self.gelu not in ("poly", "poly2", "exppoly", "sigmoid", "tanh"):
            raise BadInput(f"unknown GELU variant {self.gelu!r}")
        if self.newton_start not in ("fixed", "compare"):
            raise BadInput(f"unknown Newton start {self.newton_start!r} (fixed or compare)")
        for name in ("gelu_degree", "exp_iters", "reciprocal_iters", "inv_sqrt_iters", "shifted_reciprocal_iters",
                     "gelu_exp_iters"):
            if not 1 <= getattr(self, name) <= 64:
                raise BadInput(f"{name} must be in [1, 64]")
        if not 2 <= self.compare_lanes <= 8:
            raise BadInput("compare_lanes must be in [2, 8]")
        if LIFT_SQUARINGS.get(self.softmax_lift, 99) > self.exp_iters:
            raise BadInput("softmax_lift must be 1, 4, 16 or 256 (2^(2^m), m <= exp_iters)")
        if self.gelu_clip <= 0 or self.layer_norm_scale <= 0 or self.softmax_scale <= 0:
            raise BadInput("gelu_clip, layer_norm_scale and softmax_scale must be positive")
        object.__setattr__(self, "softmax_max_layers", tuple(int(i) for i in self.softmax_max_layers))

    def with_(self, **changes: Any) -> Approximations:
        return replace(self, **changes)


# Named presets of `collab infer --approx` and the benchmark. ``cheap`` is the
# clipped-polynomial GELU with packed sign tests (x opened once) plus the shifted
# softmax (row max in layer 0 only); its shift and scale were calibrated on
# all-MiniLM-L6-v2 (mean cosine per layer >= 0.99998 vs transformers, measured
# in benchmarks/results/mpc.json). ``exact`` keeps CrypTen's recipes.
APPROX_PRESETS: dict[str, dict[str, Any]] = {
    "exact": {},
    "cheap": {"gelu": "poly", "gelu_degree": 7, "packed_compare": True, "compare_lanes": 6, "packed_max": True,
              "softmax": "shifted", "exp_iters": 8, "softmax_lift": 16,
              "newton_start": "compare", "inv_sqrt_iters": 3, "reciprocal_iters": 3, "shifted_reciprocal_iters": 3},
}


def preset(name: str) -> dict[str, Any]:
    """The knobs of a named preset (``exact`` or ``cheap``) as a job-file dict."""
    if name not in APPROX_PRESETS:
        raise BadInput(f"unknown approximation preset {name!r} (exact or cheap)")
    return dict(APPROX_PRESETS[name])


# --------------------------------------------------------------------------- helpers


def _plain(x: Tensor) -> bool:
    return isinstance(x, torch.Tensor)


def _ltz(x: Tensor, packed: bool = False, lanes: int = 4, bound_log2: int = 6) -> Tensor:
    """1 where x < 0 else 0 (a secure comparison on CrypTensors; ``packed``: 64/lanes - 1 kept bits)."""
    if _plain(x):
        if packed:  # the packed test's band: [0, band) may read as negative; simulate its worst case
            from collab.mpc.compare import band

            return (x < band(lanes=lanes, bound_log2=bound_log2)).to(x.dtype)
        return (x < 0).to(x.dtype)
    if packed:
        from collab.mpc.compare import packed_ltz

        return packed_ltz(x, lanes, bound_log2)
    return x._ltz()


def _stack(xs: list[Tensor]) -> Tensor:
    if _plain(xs[0]):
        return torch.stack(xs)
    import crypten

    return crypten.stack(xs)


def approx_exp(x: Tensor, iters: int) -> Tensor:
    """exp(x) ~ (1 + x/2^iters)^(2^iters), CrypTen's limit approximation (see :func:`lifted_exp`)."""
    return lifted_exp(x, iters, 1)


LIFT_SQUARINGS = {1: 0, 4: 1, 16: 2, 256: 3}  # softmax_lift = 2^(2^m) -> m
DELTA_TAIL = 3  # squarings left in the plain form (exp's base below ~0.5 by then for the inputs that reach it)


def lifted_exp(x: Tensor, iters: int, lift: int) -> Tensor:
    """exp(x) / lift, ``lift`` = 2^(2^m), by the limit (1 + x/2^iters)^(2^iters), each truncated product small.

    Why: a two-party truncation fails with odds |value| / 2^32, and every
    squaring truncates. Two changes keep the values small, each exact in
    the arithmetic (the same products, rounds and bytes):

    * the first ``iters - DELTA_TAIL`` squarings act on d = y - 1, as
      d' = 2d + d² (an integer doubling multiplies shares exactly): while
      y is near 1, which it is for every element in the early squarings,
      d² is tiny where y² is ~1, and errors propagate as in y² (2y·err);
      once y falls below 1/2 (large negative inputs, late squarings) y² is
      the smaller product, so the last DELTA_TAIL squarings square y;
    * halving the base before the last m squarings (a division by the
      public integer 2: its truncation acts on a value below 2^8, odds
      ~2^-40) makes them square values 2^(2^i) times smaller, which for a
      shifted softmax (up to e^10.5 for MiniLM's scores) are the largest
      products; the result exp(x)/lift is lifted back by the caller with
      an integer. It costs the numerator's precision: held to 2^-16
      absolute, it is ``lift`` times coarser relative to exp(x).
    """
    m = LIFT_SQUARINGS[lift]
    delta = max(0, min(iters - DELTA_TAIL, iters - m))
    d = x * (1.0 / 2**iters)
    for _ in range(delta):
        d = d * 2 + d.square()
    y = d + 1.0
    for i in range(delta, iters):
        if i == iters - m:
            y = y / 2
        y = y.square()
    return y


def approx_reciprocal(x: Tensor, iters: int, start: NewtonStart = "fixed") -> Tensor:
    """1/x for x > 0 by Newton-Raphson from CrypTen's guess 3*exp(1 - 2x) + 0.003 or by interval (``compare``)."""
    if start == "compare":
        y = newton_start(x, lambda v: 1.0 / v, *START_OCTAVES["reciprocal"])
    else:
        y = approx_exp(1.0 - 2.0 * x, 8) * 3.0 + 0.003
    for _ in range(iters):
        y = 2.0 * y - y.square() * x
    return y


def approx_inv_sqrt(x: Tensor, iters: int, start: NewtonStart = "fixed") -> Tensor:
    """1/sqrt(x) for x > 0 by Newton-Raphson from CrypTen's initial guess or by interval (``compare``).

    From that start each step is y' = 1.5 y - 0.5 (x y)(y y): the two
    inner products in one round (stacked), so two rounds per step instead of
    CrypTen's three (y², x y², y (3 - x y²)), for the same maths.
    """
    if start == "compare":
        y = newton_start(x, lambda v: v**-0.5, *START_OCTAVES["inv_sqrt"])
        for _ in range(iters):
            xy_yy = _stack([x, y]) * _stack([y, y])
            y = y * 1.5 - (xy_yy[0] * xy_yy[1]) * 0.5
        return y
    y = approx_exp(-(x * 0.5 + 0.2), 8) * 2.2 + 0.2 - x * (1.0 / 1024)
    for _ in range(iters):
        y = y * (3.0 - x * y.square()) * 0.5
    return y


#: Per use, the range 2^lo .. 2^(hi+1) :func:`newton_start` places each input in, the tests' bound
#: (|x - t| < 2^bound) and the intervals per octave. Measured on all-MiniLM-L6-v2 (seq 32 and 128):
#: LayerNorm variances 0.002-130 and the output's squared norm 6.7-36 (``inv_sqrt``); the shifted
#: softmax's lifted totals 0.11-1212 over the bench's sentences and up to 44000 on BBC News
#: (``shifted``, toward RECIPROCAL_UNIT / total); the max-subtracted totals 1 to seq_len
#: (``reciprocal``). Each range keeps an octave or more of margin. Half-octaves where the values are
#: few (one per token; layer 0's rows): a Newton step less for twice the tests. The shifted softmax
#: has 12 rows per token in 5 layers, where whole octaves and its cubic correction after 2 steps cost
#: fewer bytes than half-octaves save in rounds.
START_OCTAVES = {"inv_sqrt": (-12, 11, 14, 2), "shifted": (-6, 16, 17, 1), "reciprocal": (0, 10, 14, 2)}
#: 2 lanes keep 31 bits: x - t reads right for |x - t| < 2^bound except for x in [t, t + band),
#: band = 2^(bound - 30) (2^-16 at bound 14, 2^-13 at 17), which then takes the interval below: a
#: start up to 2^(1/splits) / ((1 + 2^(1/splits)) / 2) (1 + band / t) times the best, still converging.
START_LANES = 2


def newton_start(x: Tensor, f: Callable[[float], float], lo: int, hi: int, bound_log2: int, splits: int) -> Tensor:
    """f(x)'s Newton start: sign tests of x against t_k = 2^(lo + k/splits) up to 2^(hi+1), f at each interval's middle.

    Why: Newton's steps for 1/x and 1/sqrt(x) square the relative error e
    (to ~0.75 e² for 1/sqrt), so they need a start with |e| well below 1;
    one public guess for a range of 2^20 spends most steps walking toward
    the answer, each a round trip. The tests of all thresholds run as one
    batch (a few AND bits per test, one value per row or token), and the
    start is a public combination of their bits: ``f_top - Σ_k [x < t_k]
    (f_(k+1) - f_k)``, exact (integer weights at the fixed-point scale, no
    truncation). On [t_k, t_(k+1)) the start is f((t_k + t_(k+1)) / 2), so
    |e| <= (r - 1)/(r + 1) for r = 2^(1/splits): 1/3 per octave (4 steps
    reach 2^-16), 0.17 per half-octave (3 steps: 1/x e², 1/sqrt 0.023, 4e-4,
    1.3e-7), for twice the tests. Below 2^lo the start is f(2^lo) (Newton
    still converges, slower); above the top threshold it is f at the last
    interval's middle, which converges up to twice (1/x) or three times
    (1/sqrt x) that middle.
    """
    thresholds = [2.0 ** (lo + k / splits) for k in range((hi + 1 - lo) * splits)]
    uppers = thresholds[1:] + [2.0 ** (hi + 1)]
    values = [f(thresholds[0])] + [f((t + u) / 2) for t, u in zip(thresholds, uppers, strict=True)]
    steps = [values[k + 1] - values[k] for k in range(len(thresholds))]
    below = _ltz(_stack([x - t for t in thresholds]), True, START_LANES, bound_log2)
    return _weighted_bits(below, [-c for c in steps], x) + values[-1]


def _weighted_bits(bits: Tensor, weights: list[float], like: Tensor) -> Tensor:
    """Σ_k weights[k] · bits[k] as a fixed-point tensor like ``like``, exactly.

    ``bits`` are sign-test outputs (CrypTen keeps them at scale 1), so each
    weight is rounded to the fixed-point scale once and multiplies the
    shares as an integer: no truncation, no error beyond that rounding.
    """
    if _plain(bits):
        return sum(w * b for w, b in zip(weights, bits, strict=True))
    from crypten.mpc.primitives import ArithmeticSharedTensor

    scaled = like._tensor
    ints = torch.tensor([round(w * scaled.encoder.scale) for w in weights], dtype=torch.long)
    share = (bits._tensor.share * ints.view(-1, *[1] * (bits.dim() - 1))).sum(0)
    result = like.shallow_copy()
    result._tensor = ArithmeticSharedTensor.from_shares(share, precision=scaled.encoder._precision_bits)
    return result


@functools.lru_cache(maxsize=16)
def gelu_residual_coefficients(degree: int, clip: float, lo: float = 0.0) -> tuple[float, ...]:
    """Monomial coefficients in u = 2(t - lo)/(clip - lo) - 1 of a Chebyshev fit of t*Phi(-t) on [lo, clip].

    In u (not t) the coefficients stay below 1 in magnitude, so their
    fixed-point rounding does not blow up through the powers. ``lo`` < 0 when
    packed sign tests may read x in [0, -lo) as negative: then t = -x, and
    relu(x) - g(-x) is GELU(x) as well.
    """
    from scipy.special import ndtr

    t = np.linspace(lo, clip, 20001)
    u = 2.0 * (t - lo) / (clip - lo) - 1.0
    cheb = np.polynomial.chebyshev.chebfit(u, t * ndtr(-t), degree)
    return tuple(float(c) for c in np.polynomial.chebyshev.cheb2poly(cheb))


@functools.lru_cache(maxsize=16)
def gelu_exp_coefficients(degree: int, exp_iters: int, lanes: int = 4) -> tuple[float, ...]:
    """Monomial coefficients in u = 2w - 1 of a Chebyshev fit of t*Phi(-t) against w = limit-exp(-t).

    w is the *approximated* exp the secure path computes, (1 - t/2^k)^(2^k),
    so the fit absorbs the limit approximation's error; t covers [0, 2^k].
    """
    from scipy.special import ndtr

    from collab.mpc.compare import band

    # From -band: a packed sign test may read x in [0, band) as negative, and then
    # -x stands in for |x|, which the same identity turns into GELU(x) again.
    t = np.linspace(-band(lanes=lanes), 2.0**exp_iters, 200001)
    w = (1.0 - t / 2.0**exp_iters) ** (2**exp_iters)
    cheb = np.polynomial.chebyshev.chebfit(2.0 * w - 1.0, t * ndtr(-t), degree)
    return tuple(float(c) for c in np.polynomial.chebyshev.cheb2poly(cheb))


def _polyval(u: Tensor, coeffs: tuple[float, ...]) -> Tensor:
    if _plain(u):
        return sum(c * u**k for k, c in enumerate(coeffs))
    return _polyval_split(u, coeffs)


def _polyval_split(u: Tensor, coeffs: tuple[float, ...]) -> Tensor:
    """p(u) = A(u) + u^m * B(u) with m = ceil((d + 1) / 2): powers u..u^m, then one product.

    CrypTen's ``polynomial`` builds every power up to the next power of two
    by stacked products (degree 7: 9 openings per element); this needs the
    powers up to u^m (squares where it can: 1 opening, else 2) and one more
    product (degree 6: 5 openings, degree 7: 6), in the same 3 rounds.
    """
    d = len(coeffs) - 1
    if d <= 2:
        return u.polynomial(list(coeffs[1:])) + coeffs[0]
    m = (d + 2) // 2
    powers = {1: u, 2: u.square()}
    for k in range(3, m + 1):
        powers[k] = powers[k // 2].square() if k % 2 == 0 else powers[k - 1] * u

    def combo(cs: tuple[float, ...]) -> Tensor:
        out = powers[1] * cs[1] + cs[0] if len(cs) > 1 else u * 0.0 + cs[0]
        for k, c in enumerate(cs[2:], start=2):
            out = out + powers[k] * c
        return out

    return combo(coeffs[:m]) + powers[m] * combo(coeffs[m:])


def gelu(x: Tensor, approx: Approximations) -> Tensor:
    """GELU(x) = x * Phi(x) under the selected approximation."""
    with section("gelu", not _plain(x)):
        return _gelu(x, approx)


def _gelu(x: Tensor, approx: Approximations) -> Tensor:
    if approx.gelu == "sigmoid":
        return x * (x * 1.702).sigmoid()
    if approx.gelu == "tanh":
        inner = (x + x.square() * x * 0.044715) * math.sqrt(2.0 / math.pi)
        return x * 0.5 * (inner.tanh() + 1.0)
    # GELU(x) = relu(x) - g(|x|) with g(t) = t*Phi(-t), which is < 1.3e-4 beyond t = 4.
    clip = approx.gelu_clip
    if approx.gelu in ("poly2", "exppoly"):
        absx = x * (1.0 - 2.0 * _ltz(x, approx.packed_compare, approx.compare_lanes))
        if approx.gelu == "exppoly":
            w = approx_exp(-absx, approx.gelu_exp_iters)
            coeffs = gelu_exp_coefficients(approx.gelu_degree, approx.gelu_exp_iters, approx.compare_lanes)
            return (x + absx) * 0.5 - _polyval(w * 2.0 - 1.0, coeffs)
        t = (absx - clip) * (1.0 - _ltz(-absx + clip, approx.packed_compare)) + clip  # min(|x|, clip)
        return (x + absx) * 0.5 - _polyval(t * (2.0 / clip) - 1.0, gelu_residual_coefficients(approx.gelu_degree, clip))
    from collab.mpc.compare import band

    # Three sign tests in one batch: neg = [x < 0], below = [x < -clip], above = [x > clip]. Then
    # min(|x|, clip) = x * (1 + below - above - 2 neg) + clip * (below + above) (below implies neg, above
    # excludes it) and relu(x) = x * (1 - neg): two products of x with bit combinations, one broadcast
    # multiplication that opens x once (3 openings per element instead of 4 in two rounds).
    lanes = approx.compare_lanes
    signs = _ltz(_stack([x, x + clip, -x + clip]), approx.packed_compare, lanes)
    neg, below, above = signs[0], signs[1], signs[2]
    both = x.unsqueeze(0) * _stack([1.0 + below - above - 2.0 * neg, 1.0 - neg])
    t = both[0] + _weighted_bits(signs[1:], [clip, clip], x)
    lo = -band(lanes=lanes) if approx.packed_compare else 0.0
    u = (t - lo) * (2.0 / (clip - lo)) - 1.0
    return both[1] - _polyval(u, gelu_residual_coefficients(approx.gelu_degree, clip, lo))


def layer_norm(x: Tensor, w: Tensor, b: Tensor, eps: float, approx: Approximations) -> Tensor:
    """LayerNorm over the last dim, with 1/sqrt(var) by Newton-Raphson."""
    with section("layernorm", not _plain(x)):
        centered = x - x.mean(-1, keepdim=True)
        var = centered.square().mean(-1, keepdim=True)
        s = approx.layer_norm_scale
        inv = approx_inv_sqrt((var + eps) * (1.0 / s), approx.inv_sqrt_iters, approx.newton_start)
        inv = inv * (1.0 / math.sqrt(s))
        return centered * inv * w + b


def _row_max(x: Tensor) -> Tensor:
    """Max over the last dim (CrypTen: a log-depth tree of secure comparisons)."""
    return x.max(-1, keepdim=True)[0]


def _packed_row_max(x: Tensor) -> Tensor:
    """Max over the last dim by a halving tree of packed sign tests on differences below 512."""
    while x.size(-1) > 1:
        half = x.size(-1) // 2
        a, b, rest = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
        d = b - a
        m = a + d * (1.0 - _ltz(d, True, 4, 9))  # b where b >= a (up to the band), else a
        x = m if rest.size(-1) == 0 else _cat([m, rest])
    return x


def _cat(xs: list[Tensor]) -> Tensor:
    if _plain(xs[0]):
        return torch.cat(xs, -1)
    import crypten

    return crypten.cat(xs, -1)


def softmax(scores: Tensor, bias: Tensor, approx: Approximations, layer_index: int | None = None) -> Tensor:
    """Softmax over the last dim of ``scores + bias``.

    ``bias`` is 0 on real keys and -2^exp_iters on padding keys: then the
    limit-exp of a padding entry is (|x|/2^k)^(2^k), i.e. zero, for any
    |x| < 2^k, and the bias costs no multiplication.
    """
    with section("softmax", not _plain(scores)):
        logits = scores + bias
        if approx.softmax == "exact" or layer_index is None or layer_index in approx.softmax_max_layers:
            logits = logits - (_packed_row_max(logits) if approx.packed_max else _row_max(logits))
            num = approx_exp(logits, approx.exp_iters)
            inv = approx_reciprocal(num.sum(-1, keepdim=True), approx.reciprocal_iters, approx.newton_start)
            return num * inv
        # Max-free: a public shift; padding keys stay at (score - shift)/2^k, i.e. exp ~ 0.
        lift = approx.softmax_lift
        num = lifted_exp(logits - approx.softmax_shift, approx.exp_iters, lift)  # exp(x) / lift
        total = num.sum(-1, keepdim=True)
        scaled_inv = scaled_reciprocal(total * lift if lift > 1 else total, approx)  # an int multiplies shares exactly
        # num * (scale/sum) = scale·p/lift: its truncation fails `lift` times less often than scale·p's would
        return (num * scaled_inv) * (lift / approx.softmax_scale)


def scaled_reciprocal(total: Tensor, approx: Approximations) -> Tensor:
    """softmax_scale / total over a ~6-decade range, keeping every truncated product small.

    Representing softmax_scale/total (not 1/total) keeps ~10 more bits of a
    large denominator's reciprocal in 16-bit fixed point. But a two-party
    truncation fails (the result is off by 2^32) with probability ~|v| / 2^32
    for a product of real value v, and Newton steps straight toward
    1024/total truncate ``y * total ~ 1024`` and ``y * (2 - ...) ~ y`` (up to
    ~10^4) about 50 times per row: ~0.03 failures per sentence at seq 128
    (measured, see docs/secure_inference.md). So Newton runs toward
    ``RECIPROCAL_UNIT / total`` (products ~8), and the last step lifts the
    result to the full scale exactly: ``r * (scale/unit)`` by a public integer
    (no truncation), corrected by the residual ``e = 1 - r * total / unit``
    as ``k/t = R / (1 - e) = R + R (e + e^2 + e^3)``, whose product is small
    because ``e`` is. From the guess y0 = unit/50000 Newton converges for
    totals below 100000; a total t needs about log2(50000/t) + 4 steps. From
    :func:`newton_start` (``newton_start="compare"``) 2 steps and the
    correction do (``shifted_reciprocal_iters`` = 3).
    """
    unit = RECIPROCAL_UNIT
    if approx.newton_start == "compare":
        y = newton_start(total, lambda t: unit / t, *START_OCTAVES["shifted"])
    else:
        y = total * 0.0 + shifted_guess(approx)
    for _ in range(approx.shifted_reciprocal_iters - 1):
        y = y * (2.0 - (y * total) * (1.0 / unit))
    e = 1.0 - (y * total) * (1.0 / unit)  # |e| <~ 2^-16 * total / unit: r's own rounding
    ratio = approx.softmax_scale / unit
    lifted = y * int(ratio) if ratio == int(ratio) else y * ratio  # an int multiplies shares exactly
    return lifted + lifted * (e * (e * (e + 1.0) + 1.0))


#: Newton's target scale in :func:`scaled_reciprocal`: products stay ~8 (failure odds ~2^-29
#: each), and 8/total is still ~5 fixed-point units at the largest convergent total (100000).
RECIPROCAL_UNIT = 8.0


def shifted_guess(approx: Approximations) -> float:
    """Newton's start for RECIPROCAL_UNIT / total: converges for totals below 100000."""
    return RECIPROCAL_UNIT / 50000.0


# --------------------------------------------------------------------------- the model


@dataclass
class SharedWeights:
    """The owner's weights as (secret-shared or plain) tensors, ready for :func:`encode`."""

    word_chunks: list[Tensor]
    pos_type: Tensor  # position[:seq_len] + token_type[0], (seq_len, d)
    emb_ln_w: Tensor
    emb_ln_b: Tensor
    layers: list[LayerWeights]


@dataclass
class SharedInputs:
    """The client's inputs as (secret-shared or plain) tensors.

    The words enter either as ``one_hot`` (multiplied by the table in
    :func:`embed`) or, on the HE path with an owner-held table, as ``word``:
    the table's rows already shared by the oblivious lookup of
    :mod:`collab.he.lookup`.
    """

    attn_bias: Tensor  # (batch, 1, 1, seq): 0 on tokens, -2^exp_iters on padding
    pool: Tensor  # (batch, seq, 1): mask / length
    one_hot: Tensor | None = None  # (batch, seq, vocab)
    word: Tensor | None = None  # (batch, seq, hidden)


VOCAB_CHUNK = 8192


def prepare_weights(weights: EncoderWeights, spec: EncoderSpec, seq_len: int) -> dict[str, torch.Tensor]:
    """Owner-side lossless preprocessing, flattened to name -> tensor in a fixed order."""
    if seq_len > spec.max_positions:
        raise BadInput(f"seq_len {seq_len} exceeds the model's {spec.max_positions} positions")
    scale = 1.0 / math.sqrt(spec.head_dim)
    out: dict[str, torch.Tensor] = {}
    for i, start in enumerate(range(0, spec.vocab_size, VOCAB_CHUNK)):
        out[f"word.{i}"] = weights.word[start : start + VOCAB_CHUNK]
    out["pos_type"] = weights.position[:seq_len] + weights.token_type[0]
    out["emb_ln_w"], out["emb_ln_b"] = weights.emb_ln_w, weights.emb_ln_b
    for i, lw in enumerate(weights.layers):
        for name, value in vars(lw).items():
            if name in ("q_w", "q_b"):
                value = value * scale
            out[f"layer.{i}.{name}"] = value
    return out


def weight_shapes(spec: EncoderSpec, seq_len: int) -> dict[str, tuple[int, ...]]:
    """The shapes :func:`prepare_weights` produces, known to the client from the public spec."""
    d, f = spec.hidden, spec.intermediate
    shapes: dict[str, tuple[int, ...]] = {}
    for i, start in enumerate(range(0, spec.vocab_size, VOCAB_CHUNK)):
        shapes[f"word.{i}"] = (min(VOCAB_CHUNK, spec.vocab_size - start), d)
    shapes["pos_type"] = (seq_len, d)
    shapes["emb_ln_w"] = shapes["emb_ln_b"] = (d,)
    per_layer = {
        "q_w": (d, d), "q_b": (d,), "k_w": (d, d), "k_b": (d,), "v_w": (d, d), "v_b": (d,),
        "o_w": (d, d), "o_b": (d,), "ln1_w": (d,), "ln1_b": (d,),
        "ff1_w": (d, f), "ff1_b": (f,), "ff2_w": (f, d), "ff2_b": (d,), "ln2_w": (d,), "ln2_b": (d,),
    }  # fmt: skip
    for i in range(spec.layers):
        for name, shape in per_layer.items():
            shapes[f"layer.{i}.{name}"] = shape
    return shapes


def assemble_weights(flat: dict[str, Tensor], spec: EncoderSpec) -> SharedWeights:
    """Regroup a flat name -> tensor dict (plain or shared) into :class:`SharedWeights`."""
    fields = list(LayerWeights.__dataclass_fields__)
    return SharedWeights(
        word_chunks=_word_chunks(flat),
        pos_type=flat["pos_type"],
        emb_ln_w=flat["emb_ln_w"],
        emb_ln_b=flat["emb_ln_b"],
        layers=[LayerWeights(**{n: flat[f"layer.{i}.{n}"] for n in fields}) for i in range(spec.layers)],
    )


def prepare_inputs(tokens: Tokens, spec: EncoderSpec, approx: Approximations) -> dict[str, torch.Tensor]:
    """Client-side encoding of its private inputs as float tensors to secret-share."""
    ids, mask = tokens.input_ids, tokens.attention_mask.float()
    if int(ids.max()) >= spec.vocab_size or int(ids.min()) < 0:
        raise BadInput("token id outside the vocabulary")
    if bool((mask.sum(1) == 0).any()):
        raise BadInput("every sequence needs at least one token")
    one_hot = torch.nn.functional.one_hot(ids, spec.vocab_size).float()
    attn_bias = ((mask - 1.0) * 2.0**approx.exp_iters)[:, None, None, :]
    pool = (mask / mask.sum(1, keepdim=True)).unsqueeze(-1)
    return {"one_hot": one_hot, "attn_bias": attn_bias, "pool": pool}


def input_shapes(batch: int, seq_len: int, spec: EncoderSpec) -> dict[str, tuple[int, ...]]:
    """Shapes of :func:`prepare_inputs`' tensors: batch size and length are public."""
    return {
        "one_hot": (batch, seq_len, spec.vocab_size),
        "attn_bias": (batch, 1, 1, seq_len),
        "pool": (batch, seq_len, 1),
    }


def embed(inputs: SharedInputs, w: SharedWeights, spec: EncoderSpec, approx: Approximations) -> Tensor:
    """Word rows (looked up already, or one-hot @ table chunked over the vocabulary) + positions, LayerNorm."""
    set_layer("embeddings")
    x = inputs.word
    if x is None:
        with section("embedding", not _plain(inputs.one_hot)):
            for i, chunk in enumerate(w.word_chunks):
                start = i * VOCAB_CHUNK
                rows = chunk.shape[0]
                part = fixed.matmul(inputs.one_hot[:, :, start : start + rows], chunk)
                x = part if x is None else x + part
    return layer_norm(x + w.pos_type, w.emb_ln_w, w.emb_ln_b, spec.layer_norm_eps, approx)


def word_table(flat: dict[str, Tensor]) -> Tensor:
    """The whole word table from :func:`prepare_weights`' ``word.i`` chunks (plain or fixed-point)."""
    return torch.cat(_word_chunks(flat))


def _word_chunks(flat: dict[str, Tensor]) -> list[Tensor]:
    """The ``word.i`` chunks of a flat weight dict, in vocabulary order."""
    return [flat[f"word.{i}"] for i in range(sum(1 for k in flat if k.startswith("word.")))]


def linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """x @ weight + bias; ``weight`` may be a :class:`collab.mpc.fixed.MaskedWeight`."""
    with section("linear", not _plain(x)):
        return fixed.matmul(x, weight) + bias


def _heads(x: Tensor, spec: EncoderSpec) -> Tensor:
    b, n, _ = x.shape
    return x.reshape(b, n, spec.heads, spec.head_dim).transpose(1, 2)


def attention(x: Tensor, bias: Tensor, lw: LayerWeights, spec: EncoderSpec, approx: Approximations,
              index: int | None = None) -> Tensor:
    """Multi-head self-attention; the 1/sqrt(head_dim) scale is already in q_w, q_b."""
    b, n, d = x.shape
    q = _heads(linear(x, lw.q_w, lw.q_b), spec)
    k = _heads(linear(x, lw.k_w, lw.k_b), spec)
    v = _heads(linear(x, lw.v_w, lw.v_b), spec)
    with section("attn_matmul", not _plain(x)):
        scores = q.matmul(k.transpose(2, 3))
    probs = softmax(scores, bias, approx, index)
    with section("attn_matmul", not _plain(x)):
        ctx = probs.matmul(v).transpose(1, 2).reshape(b, n, d)
    return linear(ctx, lw.o_w, lw.o_b)


def layer(x: Tensor, bias: Tensor, lw: LayerWeights, spec: EncoderSpec, approx: Approximations,
          index: int | None = None) -> Tensor:
    """One post-LN BERT layer: attention, residual + LN, GELU FFN, residual + LN.

    ``index`` (the layer's position) selects per-layer knobs such as
    ``softmax_max_layers``; None means "treat as a layer that keeps the max".
    """
    if index is not None:
        set_layer(f"layer{index}")
    eps = spec.layer_norm_eps
    x = layer_norm(x + attention(x, bias, lw, spec, approx, index), lw.ln1_w, lw.ln1_b, eps, approx)
    h = gelu(linear(x, lw.ff1_w, lw.ff1_b), approx)
    return layer_norm(x + linear(h, lw.ff2_w, lw.ff2_b), lw.ln2_w, lw.ln2_b, eps, approx)


def encode(inputs: SharedInputs, w: SharedWeights, spec: EncoderSpec, approx: Approximations) -> Tensor:
    """Mean-pooled (not yet normalised) sentence embeddings, (batch, hidden)."""
    x = embed(inputs, w, spec, approx)
    for i, lw in enumerate(w.layers):
        x = layer(x, inputs.attn_bias, lw, spec, approx, i)
    return (x * inputs.pool).sum(1)


def mask_weights(w: SharedWeights) -> SharedWeights:
    """Fix the Beaver masks of every matmul weight for this model load (collective; opens W - B once).

    Element-wise weights (LayerNorm, biases) stay CrypTensors: they are small
    and multiply activations element-wise. Without a supporting provider
    (see :func:`collab.mpc.fixed.supported`) the weights are returned unchanged.
    """
    if not fixed.supported():
        return w
    matmul_fields = ("q_w", "k_w", "v_w", "o_w", "ff1_w", "ff2_w")
    layers = [replace(lw, **{f: fixed.MaskedWeight(getattr(lw, f)) for f in matmul_fields}) for lw in w.layers]
    return replace(w, word_chunks=[fixed.MaskedWeight(c) for c in w.word_chunks], layers=layers)


def simulate(tokens: Tokens, weights: EncoderWeights, spec: EncoderSpec, approx: Approximations) -> torch.Tensor:
    """The plaintext simulation: the secure encoder's maths in float, L2-normalised."""
    flat = prepare_weights(weights, spec, tokens.seq_len)
    ins = prepare_inputs(tokens, spec, approx)
    inputs = SharedInputs(**ins)
    with torch.no_grad():
        pooled = encode(inputs, assemble_weights(flat, spec), spec, approx)
    return torch.nn.functional.normalize(pooled, dim=-1)
