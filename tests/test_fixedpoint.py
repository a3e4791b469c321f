"""collab.fixedpoint: the protocol's number domains against exact rational arithmetic.

Solidity agreement is in test_fixedpoint_differential.py; here the Python
reference is checked against its definition (docs/protocol.md §1), the
vectorised forms against the scalar reference, and the approximations
against float math.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from collab import fixedpoint as fx
from collab.errors import BadInput

I64 = st.integers(fx.INT64_MIN, fx.INT64_MAX)
BIG = st.integers(-(1 << 140), 1 << 140)
FRAC = st.integers(0, fx.FRAC_BITS_MAX)


def nearest_even(q: Fraction) -> int:
    """Reference rounding straight from the definition."""
    lo = math.floor(q)
    diff = q - lo
    if diff > Fraction(1, 2) or (diff == Fraction(1, 2) and lo % 2):
        return lo + 1
    return lo


# ------------------------------------------------------------------ primitives


@given(BIG, st.integers(-(1 << 70), 1 << 70).filter(lambda d: d != 0))
@example(5, 2)
@example(-5, 2)
@example(7, 2)
@example(-7, 2)
@example(3, -2)
def test_rdiv_is_nearest_with_ties_to_even(n: int, d: int) -> None:
    assert fx.rdiv(n, d) == nearest_even(Fraction(n, d))


def test_rdiv_ties_go_to_the_even_neighbour() -> None:
    assert [fx.rdiv(v, 2) for v in (-5, -3, -1, 1, 3, 5)] == [-2, -2, 0, 0, 2, 2]


def test_rdiv_by_zero_raises() -> None:
    with pytest.raises(ZeroDivisionError):
        fx.rdiv(1, 0)


@given(BIG, st.integers(0, 200))
def test_rshift_matches_rdiv_by_power_of_two(v: int, s: int) -> None:
    assert fx.rshift(v, s) == fx.rdiv(v, 1 << s)


@given(BIG, FRAC, FRAC)
def test_rescale_rounds_once_and_saturates(v: int, fa: int, fb: int) -> None:
    exact = nearest_even(Fraction(v) * Fraction(2) ** (fb - fa))
    assert fx.rescale(v, fa, fb) == max(fx.INT64_MIN, min(fx.INT64_MAX, exact))


def test_saturation_never_wraps() -> None:
    assert fx.rescale(fx.INT64_MAX, 0, 1) == fx.INT64_MAX
    assert fx.rescale(fx.INT64_MIN, 0, 1) == fx.INT64_MIN
    assert fx.rescale(1, 0, 63) == fx.INT64_MAX
    assert fx.rescale(-1, 0, 63) == -(1 << 63)
    assert fx.sat(1 << 100) == fx.INT64_MAX and fx.sat(-(1 << 100)) == fx.INT64_MIN


@given(BIG, st.integers(1, 1 << 40), FRAC, FRAC)
def test_scaled_div_is_one_rounding_of_the_exact_quotient(n: int, d: int, fa: int, fb: int) -> None:
    exact = nearest_even(Fraction(n, d) * Fraction(2) ** (fb - fa))
    assert fx.scaled_div(n, d, fa, fb) == max(fx.INT64_MIN, min(fx.INT64_MAX, exact))


@given(I64, I64)
def test_ring_ops_wrap_modulo_2_64(a: int, b: int) -> None:
    for got, want in [
        (fx.ring_add(a, b), a + b),
        (fx.ring_sub(a, b), a - b),
        (fx.ring_mul(a, b), a * b),
        (fx.ring_neg(a), -a),
    ]:
        assert fx.INT64_MIN <= got <= fx.INT64_MAX
        assert (got - want) % (1 << 64) == 0


def test_ring_wraps_where_fixed_saturates() -> None:
    assert fx.ring_add(fx.INT64_MAX, 1) == fx.INT64_MIN
    assert fx.sat(fx.INT64_MAX + 1) == fx.INT64_MAX
    assert fx.ring_neg(fx.INT64_MIN) == fx.INT64_MIN


def test_masked_ring_sum_decodes_to_the_true_fixed_point_sum() -> None:
    rng = np.random.default_rng(1)
    values = [fx.to_fixed(rng.normal(size=64), 16) for _ in range(3)]
    masked = []
    for i, v in enumerate(values):
        m = v.copy()
        for j in range(3):
            if i != j:
                # Pair (i, j) shares one seed: the lower id adds the stream, the higher subtracts it.
                stream = fx.prg_elements(bytes([min(i, j), max(i, j)]) * 16, 64)
                m = fx.ring_sum_array([m, stream if i < j else fx.wrap_array(-stream.astype(object))])
        assert not np.array_equal(m, v)
        masked.append(m)
    total = fx.ring_sum_array(masked)
    assert total.tolist() == [sum(int(v[k]) for v in values) for k in range(64)]


# ------------------------------------------------------------------ vectorised == scalar


@settings(max_examples=60)
@given(st.lists(I64, min_size=1, max_size=40), FRAC, FRAC)
def test_rescale_array_matches_scalar(values: list[int], fa: int, fb: int) -> None:
    arr = np.array(values, dtype=np.int64)
    assert fx.rescale_array(arr, fa, fb).tolist() == [fx.rescale(v, fa, fb) for v in values]


@settings(max_examples=80)
@given(st.lists(st.integers(-(1 << 62) + 1, (1 << 62) - 1), min_size=1, max_size=40), st.integers(0, 62))
def test_in_place_shift_of_bounded_words_matches_scalar(values: list[int], s: int) -> None:
    arr = np.array(values, dtype=np.int64)
    assert fx.rshift_small_inplace(arr, s) is arr
    assert arr.tolist() == [fx.rshift(v, s) for v in values]


def test_in_place_shift_rounds_ties_to_even_at_the_bounds() -> None:
    edge = (1 << 62) - 1
    for s in (1, 2, 30, 61, 62):
        half = 1 << (s - 1)
        values = [v for v in (edge, -edge, half, -half, 3 * half, -3 * half, half - 1, half + 1, 0, -1, 1) if abs(v) <= edge]
        assert fx.rshift_small_inplace(np.array(values, dtype=np.int64), s).tolist() == [fx.rshift(v, s) for v in values]


@settings(max_examples=60)
@given(st.lists(st.tuples(I64, I64), min_size=1, max_size=30), st.integers(0, 124), FRAC)
def test_mul_rescale_array_matches_scalar(pairs: list[tuple[int, int]], fab: int, fo: int) -> None:
    a = np.array([p[0] for p in pairs], dtype=np.int64)
    b = np.array([p[1] for p in pairs], dtype=np.int64)
    assert fx.mul_rescale_array(a, b, fab, fo).tolist() == [fx.rescale(x * y, fab, fo) for x, y in pairs]


def test_mul_rescale_array_fast_path_matches_scalar() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(-(1 << 30), 1 << 30, size=500)
    b = rng.integers(-(1 << 30), 1 << 30, size=500)
    want = [fx.rescale(int(x) * int(y), 32, 16) for x, y in zip(a, b)]
    assert fx.mul_rescale_array(a, b, 32, 16).tolist() == want


APPROX_IN = st.one_of(I64, st.integers(-(1 << 45), 1 << 45), st.integers(-(80 << 32), 80 << 32))


@settings(max_examples=80)
@given(st.lists(APPROX_IN, min_size=1, max_size=30), FRAC, FRAC)
def test_exp_and_gelu_arrays_match_scalar(values: list[int], fi: int, fo: int) -> None:
    arr = np.array(values, dtype=np.int64)
    assert fx.exp_array(arr, fi, fo).tolist() == [fx.exp_fx(v, fi, fo) for v in values]
    assert fx.exp_array(arr.astype(object), fi, fo).tolist() == [fx.exp_fx(v, fi, fo) for v in values]
    assert fx.gelu_array(arr, fi, fo).tolist() == [fx.gelu_fx(v, fi, fo) for v in values]


TIE_PRODUCTS = st.tuples(st.integers(-(1 << 20), 1 << 20), st.integers(1, 40)).map(lambda t: ((2 * t[0] + 1) << (t[1] - 1), t[1]))


@settings(max_examples=120)
@given(st.lists(st.tuples(I64, I64), min_size=1, max_size=20), st.integers(1, 126))
def test_wide_multiply_kernel_is_exact(pairs: list[tuple[int, int]], s: int) -> None:
    a = np.array([p[0] for p in pairs], dtype=np.int64)
    b = np.array([p[1] for p in pairs], dtype=np.int64)
    assert fx.mul_rshift_i64(a, b, s).tolist() == [fx.sat(fx.rshift(x * y, s)) for x, y in pairs]


@given(TIE_PRODUCTS, st.sampled_from([1, -1]))
def test_wide_multiply_kernel_rounds_ties_to_even(case: tuple[int, int], sign: int) -> None:
    value, s = case
    got = fx.mul_rshift_i64(np.array([value], dtype=np.int64), sign, s)[0]
    assert got == fx.rshift(value * sign, s)


def test_reciprocal_and_inv_sqrt_arrays_match_scalar() -> None:
    values = [-(1 << 20), -1, 0, 1, 3, 1 << 16, 12345678901]
    arr = np.array(values, dtype=np.int64)
    assert fx.reciprocal_array(arr, 16, 16).tolist() == [fx.reciprocal_fx(v, 16, 16) for v in values]
    assert fx.inv_sqrt_array(arr, 16, 16).tolist() == [fx.inv_sqrt_fx(v, 16, 16) for v in values]


@settings(max_examples=80)
@given(st.lists(st.one_of(I64, st.integers(-(1 << 12), 1 << 12), st.sampled_from([0, 1, -1, fx.INT64_MIN, fx.INT64_MAX])),
                min_size=1, max_size=40), st.integers(0, 40), st.integers(0, 40))
def test_reciprocal_array_matches_scalar_on_both_paths(values: list[int], fi: int, fo: int) -> None:
    """int64 path when 2^(fi+fo) ≤ 2^61 and no INT64_MIN, the exact per-element path otherwise."""
    tie = 1 << (fi + fo + 1)  # 2^(fi+fo) / x is exactly ±1/2 here: the only ties, rounded to even (0)
    values = values + [v for v in (tie, -tie, tie - 1, 1 - tie) if abs(v) <= fx.INT64_MAX]
    arr = np.array(values, dtype=np.int64)
    assert fx.reciprocal_array(arr, fi, fo).tolist() == [fx.reciprocal_fx(v, fi, fo) for v in values]


def naive_matmul(a: np.ndarray, w: np.ndarray) -> list[list[int]]:
    return [[sum(int(x) * int(y) for x, y in zip(row, col)) for col in w] for row in a]


MAGNITUDE = st.sampled_from([1, 1 << 8, 1 << 24, 1 << 40, 1 << 63])


@settings(max_examples=60)
@given(st.integers(1, 6), st.integers(1, 70), st.integers(1, 5), MAGNITUDE, MAGNITUDE, st.integers(0, 2**32))
def test_matmul_exact_equals_python_integers(m: int, k: int, n: int, amax: int, wmax: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(-amax, amax, size=(m, k), endpoint=amax < (1 << 63))
    w = rng.integers(-wmax, wmax, size=(n, k), endpoint=wmax < (1 << 63))
    assert np.asarray(fx.matmul_exact(a, w), dtype=object).tolist() == naive_matmul(a, w)
    want = [[fx.rescale(v, 32, 16) for v in row] for row in naive_matmul(a, w)]
    assert fx.matmul_rescale(a, w, 32, 16).tolist() == want


def test_matmul_exact_at_the_int64_extremes_and_batched() -> None:
    a = np.array([[fx.INT64_MIN, fx.INT64_MAX, -1]] * 2, dtype=np.int64)
    w = np.array([[fx.INT64_MIN, fx.INT64_MIN, fx.INT64_MIN], [fx.INT64_MAX, 1, 0]], dtype=np.int64)
    assert np.asarray(fx.matmul_exact(a, w), dtype=object).tolist() == naive_matmul(a, w)
    batched = np.arange(2 * 3 * 4, dtype=np.int64).reshape(2, 3, 4)
    wt = np.arange(20, dtype=np.int64).reshape(5, 4)
    assert fx.matmul_exact(batched, wt).shape == (2, 3, 5)
    assert fx.matmul_exact(batched, wt)[1].tolist() == naive_matmul(batched[1], wt)
    with pytest.raises(BadInput):
        fx.matmul_exact(batched, wt.T)


@settings(max_examples=40)
@given(st.lists(st.lists(st.integers(-(1 << 40), 1 << 40), min_size=6, max_size=6), min_size=1, max_size=4), st.integers(0, 32), st.integers(0, 40))
def test_row_op_arrays_match_row_functions(rows: list[list[int]], fi: int, fo: int) -> None:
    arr = np.array(rows, dtype=np.int64)
    assert fx.softmax_array(arr, fi, fo).tolist() == [fx.softmax_row(r, fi, fo) for r in rows]
    assert fx.layernorm_array(arr, 3, fi, fo).tolist() == [fx.layernorm_row(r, 3, fi, fo) for r in rows]


# ------------------------------------------------------------------ approximations vs float


def test_exp_is_accurate_over_the_softmax_range() -> None:
    xs = np.linspace(-20, 10, 2001)
    got = fx.from_fixed(fx.exp_array(fx.to_fixed(xs, 24), 24, 24), 24)
    want = np.exp(fx.from_fixed(fx.to_fixed(xs, 24), 24))
    # Output rounding (half an ulp at f=24) plus a small relative polynomial error.
    assert (np.abs(got - want) <= 2.0**-25 + 1e-6 * want).all()
    assert fx.exp_fx(0, 16, 32) == fx.ONE_Q32


def test_exp_saturates_and_underflows() -> None:
    assert fx.exp_fx(100 << 16, 16, 16) == fx.INT64_MAX
    assert fx.exp_fx(50 << 16, 16, 16) == fx.INT64_MAX  # e^50 * 2^16 > 2^63
    assert fx.exp_fx(-(100 << 16), 16, 16) == 0
    assert fx.exp_fx(fx.INT64_MIN, 0, 62) == 0


def test_gelu_tracks_torch_gelu() -> None:
    xs = torch.linspace(-10, 10, 4001, dtype=torch.float64)
    got = fx.from_fixed(fx.gelu_array(fx.to_fixed(xs, 20), 20, 20), 20)
    err_tanh = np.abs(got - torch.nn.functional.gelu(xs, approximate="tanh").numpy()).max()
    err_erf = np.abs(got - torch.nn.functional.gelu(xs).numpy()).max()
    assert err_tanh < 1e-5
    assert err_erf < 5e-4


def test_reciprocal_and_inv_sqrt_are_correctly_rounded() -> None:
    for x in [1, 3, 7, 1 << 16, 3 << 16, (1 << 40) + 17]:
        assert fx.reciprocal_fx(x, 16, 16) == nearest_even(Fraction(1 << 32, x))
        exact = math.sqrt((1 << 48) / x)
        assert abs(fx.inv_sqrt_fx(x, 16, 16) - exact) <= 0.5 + 1e-9
    assert fx.reciprocal_fx(0, 16, 16) == fx.INT64_MAX
    assert fx.reciprocal_fx(-(2 << 16), 16, 16) == -(1 << 15)
    assert fx.inv_sqrt_fx(0, 16, 16) == fx.INT64_MAX
    assert fx.inv_sqrt_fx(-5, 16, 16) == fx.INT64_MAX


def test_softmax_row_sums_to_one_and_matches_torch() -> None:
    rng = np.random.default_rng(3)
    row = rng.normal(scale=3.0, size=128)
    q = fx.to_fixed(row, 16).tolist()
    out = fx.from_fixed(fx.softmax_row(q, 16, 24), 24)
    want = torch.softmax(torch.tensor(fx.from_fixed(q, 16)), dim=0).numpy()
    assert np.abs(out - want).max() < 1e-6
    assert abs(out.sum() - 1.0) < 1e-5


def test_layernorm_row_matches_torch() -> None:
    rng = np.random.default_rng(4)
    row = rng.normal(loc=2.0, scale=5.0, size=384)
    q = fx.to_fixed(row, 16).tolist()
    eps = fx.to_fixed(1e-5, 16).item()
    out = fx.from_fixed(fx.layernorm_row(q, eps, 16, 16), 16)
    ref = torch.nn.functional.layer_norm(torch.tensor(fx.from_fixed(q, 16)), (384,), eps=1e-5).numpy()
    assert np.abs(out - ref).max() < 1e-3


def test_layernorm_of_a_constant_row_is_zero() -> None:
    assert fx.layernorm_row([5 << 16] * 8, 1, 16, 16) == [0] * 8


# ------------------------------------------------------------------ PRG


def test_prg_is_keccak_counter_mode() -> None:
    from eth_hash.auto import keccak

    seed = bytes(range(32))
    block = keccak(seed + (7).to_bytes(32, "big"))
    assert fx.prg_block(seed, 7) == block
    assert fx.prg_element(seed, 29) == int.from_bytes(block[8:16], "big", signed=True)


@given(st.binary(min_size=32, max_size=32), st.integers(0, 1000), st.integers(1, 40))
def test_prg_elements_match_single_element_expansion(seed: bytes, start: int, count: int) -> None:
    assert fx.prg_elements(seed, count, start).tolist() == [fx.prg_element(seed, start + i) for i in range(count)]


def test_prg_rejects_short_seed() -> None:
    with pytest.raises(BadInput):
        fx.prg_block(b"short", 0)


# ------------------------------------------------------------------ float conversion


def test_conversion_error_is_at_most_half_an_ulp() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(scale=10.0, size=10_000)
    err = fx.quantization_error(x, 20)
    assert err.max_abs <= 2.0**-21
    assert 0 < err.rms < err.max_abs
    assert err.saturated == 0


def test_conversion_rounds_half_to_even_and_saturates() -> None:
    assert fx.to_fixed([0.5, 1.5, 2.5, -0.5, -1.5], 0).tolist() == [0, 2, 2, 0, -2]
    assert fx.to_fixed([1e30, -1e30, float("inf"), float("-inf")], 0).tolist() == [
        fx.INT64_MAX,
        fx.INT64_MIN,
        fx.INT64_MAX,
        fx.INT64_MIN,
    ]
    assert fx.quantization_error(np.array([1e30]), 16).saturated == 1


def test_conversion_accepts_torch_and_refuses_nan() -> None:
    t = torch.tensor([[0.25, -1.0]], dtype=torch.float32)
    q = fx.to_fixed(t, 8)
    assert q.tolist() == [[64, -256]] and q.dtype == np.int64
    assert np.array_equal(fx.from_fixed(q, 8), t.double().numpy())
    with pytest.raises(BadInput):
        fx.to_fixed([float("nan")], 8)
    with pytest.raises(BadInput):
        fx.to_fixed([1.0], 63)


def test_compare_to_float_reports_error_of_a_fixed_point_result() -> None:
    x = np.linspace(-3, 3, 101)
    err = fx.compare_to_float(fx.gelu_array(fx.to_fixed(x, 16), 16, 16), 16, torch.nn.functional.gelu(torch.tensor(x)))
    assert 0 < err.max_abs < 1e-3
    assert set(err.as_dict()) == {"max_abs", "rms", "saturated"}
