"""The tensor VM: executes every op of protocol §3.3 over whole tensors, bit-exact.

Two evaluators with one meaning:

* :func:`execute_step` runs a step vectorised with numpy over whole tensors
  (the fast path a claimer or challenger uses on real jobs), built on the exact
  kernels of ``collab.fixedpoint``;
* :func:`element_value` recomputes ONE output element from scalars, line by
  line as ``OneStepVerifier`` does on chain. Tests hold the two equal, and the
  verifier equal to the latter, so the whole trace agrees with the chain.

Intermediates leave int64 only through exact paths: int64 arithmetic is used
when a bound proves it cannot overflow, 128-bit limb kernels or exact Python
integers (object arrays) otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from collab import fixedpoint as fx
from collab.errors import BadInput, ProtocolViolation
from collab.fixedpoint import Domain
from collab.fraudproof import native
from collab.fraudproof.commitments import TensorHeader
from collab.fraudproof.program import Op, Program, Step, decode_params, expected_out


class NoValidOutput(ProtocolViolation):
    """The step has no correct output: it is ill formed or its ASSERT_KTH does not hold."""


@dataclass(frozen=True)
class Value:
    """A VM tensor: int64 words in ``data`` (FIXED/RING) or named entries (BUNDLE)."""

    header: TensorHeader
    data: np.ndarray | None = None
    entries: tuple[tuple[bytes, Value], ...] | None = None

    def flat(self) -> np.ndarray:
        """Row-major int64 words (numeric tensors only)."""
        if self.data is None:
            raise BadInput("a bundle has no numeric elements")
        return self.data.reshape(-1)


def tensor(values: np.ndarray, domain: Domain, f: int) -> Value:
    """Wrap int64 words as a VM value with the matching header."""
    arr = np.asarray(values)
    if arr.dtype != np.int64:
        raise BadInput(f"VM tensors hold int64 words, got {arr.dtype}")
    return Value(TensorHeader(domain, f, tuple(arr.shape)), np.ascontiguousarray(arr))


def bundle(entries: Sequence[tuple[bytes, Value]]) -> Value:
    """A BUNDLE value over (name hash, tensor) pairs, kept in the given (sorted) order."""
    return Value(TensorHeader(Domain.BUNDLE, 0, (len(entries),)), None, tuple(entries))


# --------------------------------------------------------------------------- exact helpers


def _absmax(a: np.ndarray) -> int:
    if a.size == 0:
        return 0
    return max(abs(int(a.min())), abs(int(a.max())))


def _exact_sum(terms: Sequence[np.ndarray], bound: int) -> np.ndarray:
    """Σ terms, int64 when ``bound`` proves it fits, else exact Python ints."""
    if bound < (1 << 62):
        total = np.array(terms[0], dtype=np.int64)  # a copy: summed in place
        for t in terms[1:]:
            total += t
        return total
    total_o = np.zeros(terms[0].shape, dtype=object)
    for t in terms:
        total_o = total_o + t.astype(object)
    return total_o


def _shifted(a: np.ndarray, s: int) -> tuple[np.ndarray, int]:
    """a · 2^s exactly, with a bound on the result: int64 below 2^62 (``a`` itself when s = 0), else exact ints."""
    bound = _absmax(a) << s
    if bound < (1 << 62):
        if s == 0:
            return a, bound  # callers do not write to it
        return a << s, bound
    return a.astype(object) * (1 << s), bound


def _row_sum(a: np.ndarray) -> np.ndarray:
    """Exact sum over the last axis (int64 when it provably fits)."""
    n = a.shape[-1]
    if _absmax(a) * n < (1 << 62):
        return np.atleast_1d(a.sum(axis=-1))
    return np.atleast_1d(a.astype(object).sum(axis=-1))


def _scaled_div_array(num: np.ndarray, d: np.ndarray, fa: int, fo: int) -> np.ndarray:
    """sat(rdiv(num · 2^max(0, fo−fa), d · 2^max(0, fa−fo))) elementwise, d > 0."""
    up, down = max(0, fo - fa), max(0, fa - fo)
    shape = np.shape(num)
    n_arr, d_arr = np.asarray(num), np.broadcast_to(np.asarray(d), shape)
    d64 = np.asarray(d_arr, dtype=np.int64) if d_arr.dtype != object else d_arr
    if (
        n_arr.dtype == np.int64
        and d64.dtype == np.int64
        and up < 62
        and down < 62
        and _absmax(n_arr) < (1 << (62 - up))
        and _absmax(d64) < (1 << (62 - down))
    ):
        # int64 fast path: both scaled operands provably fit; divmod floors, so 0 <= r < d and 2r fits.
        n64 = n_arr << up if up else n_arr
        d64 = d64 << down if down else d64
        q, r = np.divmod(n64, d64)
        twice = r << 1
        inc = twice > d64
        inc |= (twice == d64) & (q & 1).astype(bool)
        q += inc
        return q.reshape(shape)
    n_o = np.asarray(num).astype(object).reshape(-1) * (1 << up)
    d_o = np.broadcast_to(np.asarray(d).astype(object), shape).reshape(-1) * (1 << down)
    q = n_o // d_o
    r = n_o - q * d_o
    inc = (2 * r > d_o) | ((2 * r == d_o) & ((q & 1) == 1))
    return fx.sat_array(q + np.asarray(inc, dtype=bool).astype(object)).reshape(shape)


def _wide_weighted_sum(arrays: Sequence[np.ndarray], weights: Sequence[int], s: int) -> np.ndarray:
    """sat(rshift(Σ w_i a_i, s)) with 128-bit limb arithmetic (caller checks the bound)."""
    hi = np.zeros(arrays[0].shape, dtype=np.int64)
    lo = np.zeros(arrays[0].shape, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for a, w in zip(arrays, weights):
            ph, pl = fx._mul_wide(a, np.full(a.shape, w, dtype=np.int64))
            new = lo + pl
            hi = hi + ph + (new < lo).astype(np.int64)
            lo = new
    return fx._wide_rshift(hi, lo, s)


def _sign(a: np.ndarray) -> np.ndarray:
    return np.sign(a).astype(np.int64)


# --------------------------------------------------------------------------- vectorised execution

def execute_step(step: Step, inputs: Sequence[Value], witness: np.ndarray | None = None) -> Value:
    """Run one step over whole tensors; raises NoValidOutput for a step with no correct output."""
    words = [v.header.encode() for v in inputs]
    reason = expected_out(step.op, step.params, words, step.out_header)
    if reason is not None:
        raise NoValidOutput(f"step {Op(step.op).name if step.op in Op._value2member_map_ else step.op}: {reason}")
    op = Op(step.op)
    p = decode_params(op, step.params)
    assert p is not None  # checked by expected_out
    out = TensorHeader.decode(step.out_header)
    fo = out.frac_bits
    # Rank-0 values become 1-element vectors: fixedpoint's object-array kernels need ndim >= 1,
    # and ``done`` restores the declared shape.
    data = [np.atleast_1d(v.data) if v.data is not None and op != Op.PERMUTE else v.data for v in inputs]
    fs = [v.header.frac_bits for v in inputs]

    def done(arr: np.ndarray) -> Value:
        return Value(out, np.ascontiguousarray(np.asarray(arr, dtype=np.int64).reshape(out.shape)))

    if op in (Op.ADD, Op.SUB):
        a, b = data
        big = max(fs)
        ta, ba = _shifted(a, big - fs[0])
        tb, bb = _shifted(b, big - fs[1])
        if ba + bb < (1 << 62):  # both int64 (see _shifted) and so is the exact result: one pass
            total = ta - tb if op == Op.SUB else ta + tb
            return done(total if big == fo else fx.rescale_array(total, big, fo))
        if op == Op.SUB:
            tb = -tb
        return done(fx.rescale_array(_exact_sum([ta, tb], ba + bb), big, fo))
    if op == Op.BIAS_ADD:
        a, b = data
        big = max(fs)
        ta, ba = _shifted(a, big - fs[0])
        tb, bb = _shifted(np.broadcast_to(b, a.shape), big - fs[1])
        return done(fx.rescale_array(_exact_sum([ta, tb], ba + bb), big, fo))
    if op == Op.MUL:
        a, b = data
        return done(fx.mul_rescale_array(a, np.broadcast_to(b, a.shape), fs[0] + fs[1], fo))
    if op == Op.SCALE:
        s, f_s = p
        return done(fx.mul_rescale_array(data[0], np.full(data[0].shape, s, dtype=np.int64), fs[0] + f_s, fo))
    if op == Op.MATMUL:
        return done(fx.matmul_rescale(data[0], data[1], fs[0] + fs[1], fo))
    if op == Op.RESHAPE:
        return done(data[0].reshape(out.shape))
    if op == Op.PERMUTE:
        return done(np.transpose(data[0], list(p[0])))
    if op == Op.GATHER:
        ids, table = data
        ok = (ids >= 0) & (ids < table.shape[0])
        rows = table[np.where(ok, ids, 0)]
        return done(np.where(ok[..., None], rows, 0))
    if op == Op.MEAN:
        a = data[0]
        return done(_scaled_div_array(_row_sum(a), np.full(a.shape[:-1], a.shape[-1]), fs[0], fo))
    if op == Op.SUM:
        return done(fx.rescale_array(_row_sum(data[0]), fs[0], fo))
    if op == Op.WEIGHTED_SUM:
        weights, fw = p
        fused = native.weighted_sum(data, weights, fs[0] + fw - fo) if fs[0] + fw >= fo else None
        if fused is not None:  # one pass, 128-bit, no range scan (native.weighted_sum)
            return done(fused)
        amax = max(_absmax(a) for a in data)
        wmax = max(abs(w) for w in weights)
        bound = amax * wmax * len(data)
        fab = fs[0] + fw
        if bound < (1 << 62):  # int64 throughout, summed in place
            total = np.multiply(data[0], np.int64(weights[0]))
            term = np.empty_like(total)
            for a, w in zip(data[1:], weights[1:]):
                total += np.multiply(a, np.int64(w), out=term)
            if 0 <= fab - fo <= 62:
                return done(fx.rshift_small_inplace(total, fab - fo))
            return done(fx.rescale_array(total, fab, fo))
        if bound < (1 << 125) and 1 <= fab - fo <= 126:
            return done(_wide_weighted_sum(data, weights, fab - fo))
        total_o = np.zeros(data[0].shape, dtype=object)
        for a, w in zip(data, weights):
            total_o = total_o + a.astype(object) * int(w)
        return done(fx.rescale_array(total_o, fab, fo))
    if op == Op.RING_ADD:
        return done(fx.ring_sum_array(data))
    if op == Op.PRG_MASK:
        seed, negate = p
        words = fx.prg_elements(seed, out.numel)
        if negate:
            with np.errstate(over="ignore"):
                words = np.negative(words)
        return done(words)
    if op == Op.RING_TO_FIXED:
        return done(fx.rescale_array(data[0], fs[0], fo))
    if op == Op.FIXED_TO_RING:
        return done(data[0].copy())
    if op == Op.CLIP:
        lo, hi = p
        return done(fx.rescale_array(np.minimum(np.maximum(data[0], lo), hi), fs[0], fo))
    if op == Op.RELU:
        return done(fx.rescale_array(np.maximum(data[0], 0), fs[0], fo))
    if op == Op.GELU:
        return done(fx.gelu_array(data[0], fs[0], fo))
    if op == Op.EXP:
        return done(fx.exp_array(data[0], fs[0], fo))
    if op == Op.RECIPROCAL:
        return done(fx.reciprocal_array(data[0], fs[0], fo))
    if op == Op.INV_SQRT:
        return done(fx.inv_sqrt_array(data[0], fs[0], fo))
    if op == Op.SOFTMAX:
        return done(fx.softmax_array(data[0], fs[0], fo))
    if op == Op.LAYERNORM:
        return done(fx.layernorm_array(data[0], p[0], fs[0], fo))
    if op == Op.WITNESS:
        if witness is None:
            raise BadInput("a WITNESS step needs the claimer's value")
        w = np.asarray(witness, dtype=np.int64)
        if w.size != out.numel:
            raise BadInput(f"witness has {w.size} elements, the step declares {out.numel}")
        return done(w)
    if op == Op.COUNT_ABS:
        a, tau_arr = data[0].reshape(-1), int(data[1].reshape(-1)[0])
        block = p[0]
        if tau_arr < 0:
            gt = ge = np.ones(a.shape, dtype=bool)
        else:
            gt = (a > tau_arr) | (a < -tau_arr)
            ge = (a >= tau_arr) | (a <= -tau_arr)
        r = out.shape[1]
        pad = r * block - a.size
        counts = [np.concatenate([m, np.zeros(pad, bool)]).reshape(r, block).sum(axis=1) for m in (gt, ge)]
        return done(np.stack(counts).astype(np.int64))
    if op == Op.ASSERT_KTH:
        c = data[0].reshape(-1)
        k = p[0]
        if not int(c[0]) < k <= int(c[1]):
            raise NoValidOutput(f"ASSERT_KTH({k}) fails: {int(c[0])} above, {int(c[1])} at or above")
        return done(np.array(1, dtype=np.int64))
    if op == Op.TIES_TRIM:
        a, tau_v = data[0], int(data[1].reshape(-1)[0])
        trimmed = a if tau_v <= 0 else np.where((a >= tau_v) | (a <= -tau_v), a, 0)
        return done(trimmed if fs[0] == fo else fx.rescale_array(trimmed, fs[0], fo))
    if op == Op.TIES_SIGN:
        bound = sum(_absmax(a) for a in data)
        return done(_sign(_exact_sum(list(data), bound)))
    if op == Op.TIES_MEAN:
        s, ts = data[0], data[1:]
        up, down = s > 0, s < 0
        masks = [(up & (t > 0)) | (down & (t < 0)) for t in ts]  # t ≠ 0 with sign(t) = s
        bound = sum(_absmax(t) for t in ts)
        if bound < (1 << 62):  # summed in place where picked
            total = np.zeros(s.shape, dtype=np.int64)
            for m, t in zip(masks, ts):
                np.add(total, t, out=total, where=m)
        else:
            total = _exact_sum([np.where(m, t, 0) for m, t in zip(masks, ts)], bound)
        count = np.zeros(s.shape, dtype=np.int64)
        for m in masks:
            count += m
        # Where no input agrees, total is 0, and so is 0 / 1: the mean is 0 without a mask.
        return done(_scaled_div_array(total, np.maximum(count, 1), fs[1], fo))
    if op == Op.BUNDLE:
        return Value(out, None, tuple(zip(list(p[0]), inputs)))
    if op == Op.BUNDLE_GET:
        index, nh = p
        entries = inputs[0].entries
        assert entries is not None
        got_hash, value = entries[index]
        if got_hash != nh or value.header != out:
            raise NoValidOutput("BUNDLE_GET: the entry's name or header is not the declared one")
        return value
    raise NoValidOutput(f"unhandled op {op}")  # pragma: no cover


def run(program: Program, inputs: Sequence[Value], witnesses: Mapping[int, np.ndarray] | None = None) -> list[Value]:
    """Execute every step; returns the outputs (no commitments: the baseline of the 3x target)."""
    if len(inputs) != program.n_inputs:
        raise BadInput(f"the program takes {program.n_inputs} inputs, got {len(inputs)}")
    values = list(inputs)
    outs: list[Value] = []
    for i, step in enumerate(program.steps):
        for t in step.inputs:
            if t >= program.n_inputs + i:
                raise NoValidOutput(f"step {i} reads tensor {t}, not yet computed")
        v = execute_step(step, [values[t] for t in step.inputs], (witnesses or {}).get(i))
        values.append(v)
        outs.append(v)
    return outs


# --------------------------------------------------------------------------- one element, scalar (the verifier's view)


def input_ranges(step: Step, in_headers: Sequence[TensorHeader], e: int, id_value: int = 0) -> list[tuple[int, int]]:
    """For each input, the flat element range [start, end) that output element ``e`` reads.

    Bundle inputs give entry ranges; for BUNDLE_GET the list has one more range,
    for the selected entry's tensor. ``id_value`` is GATHER's id (the table row).
    Mirrors ``OneStepVerifier.inputRange``.
    """
    op = Op(step.op)
    out = TensorHeader.decode(step.out_header)
    n = len(in_headers)
    if op == Op.ASSERT_KTH:
        return [(0, 2)]  # the assertion is checked for every element, padding included
    if op == Op.BUNDLE_GET:
        index = decode_params(op, step.params)[0]  # type: ignore[index]
        return [(index, index + 1), (e, e + 1) if e < out.numel else (0, 0)]
    if e >= out.numel:
        return [(0, 0)] * n
    if op in (Op.PRG_MASK, Op.WITNESS, Op.BUNDLE):
        return [(0, 0)] * n
    if op == Op.MATMUL:
        k = in_headers[0].shape[-1]
        big_n = in_headers[1].shape[0]
        row, col = e // big_n, e % big_n
        return [(row * k, row * k + k), (col * k, col * k + k)]
    if op in (Op.MEAN, Op.SUM, Op.SOFTMAX, Op.LAYERNORM):
        width = in_headers[0].shape[-1]
        row = e if op in (Op.MEAN, Op.SUM) else e // width
        return [(row * width, row * width + width)]
    if op == Op.BIAS_ADD or (op == Op.MUL and in_headers[1].shape != in_headers[0].shape):
        width = in_headers[1].numel
        return [(e, e + 1), (e % width, e % width + 1)]
    if op == Op.PERMUTE:
        perm = list(decode_params(op, step.params)[0])  # type: ignore[index]
        j = _permute_source(in_headers[0].shape, perm, e)
        return [(j, j + 1)]
    if op == Op.GATHER:
        dim = in_headers[1].shape[1]
        pos = e // dim
        if 0 <= id_value < in_headers[1].shape[0]:
            t = id_value * dim + e % dim
            return [(pos, pos + 1), (t, t + 1)]
        return [(pos, pos + 1), (0, 0)]
    if op in (Op.COUNT_ABS,):
        block = decode_params(op, step.params)[0]  # type: ignore[index]
        r = e % out.shape[1]
        return [(r * block, min((r + 1) * block, in_headers[0].numel)), (0, 1)]
    if op == Op.TIES_TRIM:
        return [(e, e + 1), (0, 1)]
    return [(e, e + 1)] * n  # elementwise ops (incl. RESHAPE: same flat index)


def _permute_source(shape: Sequence[int], perm: Sequence[int], e: int) -> int:
    """Flat input index of output element ``e`` of PERMUTE(perm)."""
    out_shape = [shape[q] for q in perm]
    idx = [0] * len(shape)
    rest = e
    for p in range(len(out_shape) - 1, -1, -1):
        idx[perm[p]] = rest % out_shape[p]
        rest //= out_shape[p]
    j = 0
    for axis, d in enumerate(shape):
        j = j * d + idx[axis]
    return j


def element_value(step: Step, inputs: Sequence[Value], e: int) -> int | None:
    """Correct int64 word of numeric output element ``e`` from scalar definitions; None for WITNESS.

    Raises NoValidOutput when no value is correct. BUNDLE outputs are judged by
    their entry leaf (see ``trace``), not here.
    """
    words = [v.header.encode() for v in inputs]
    if step.op == Op.BUNDLE_GET:
        words = words[:1]
    reason = expected_out(step.op, step.params, words, step.out_header)
    if reason is not None:
        raise NoValidOutput(reason)
    op = Op(step.op)
    p = decode_params(op, step.params)
    assert p is not None
    out = TensorHeader.decode(step.out_header)
    fo = out.frac_bits
    if op == Op.ASSERT_KTH:
        c = inputs[0].flat()
        if not int(c[0]) < p[0] <= int(c[1]):
            raise NoValidOutput("ASSERT_KTH fails")
    if op == Op.BUNDLE_GET:
        got_hash, value = inputs[0].entries[p[0]]  # type: ignore[index]
        if got_hash != p[1] or value.header != out:
            raise NoValidOutput("BUNDLE_GET entry mismatch")
    if e >= out.numel:
        return 0
    if op == Op.WITNESS:
        return None
    hs = [v.header for v in inputs]
    fs = [h.frac_bits for h in hs]
    x = [v.flat() if v.data is not None else None for v in inputs]

    def el(i: int, j: int) -> int:
        return int(x[i][j])  # type: ignore[index]

    if op in (Op.ADD, Op.SUB, Op.BIAS_ADD):
        big = max(fs)
        j = e % hs[1].numel
        b = el(1, j) << (big - fs[1])
        return fx.rescale((el(0, e) << (big - fs[0])) + (-b if op == Op.SUB else b), big, fo)
    if op == Op.MUL:
        return fx.rescale(el(0, e) * el(1, e % hs[1].numel), fs[0] + fs[1], fo)
    if op == Op.SCALE:
        return fx.rescale(el(0, e) * p[0], fs[0] + p[1], fo)
    if op == Op.MATMUL:
        k, big_n = hs[0].shape[-1], hs[1].shape[0]
        row, col = e // big_n, e % big_n
        acc = sum(el(0, row * k + i) * el(1, col * k + i) for i in range(k))
        return fx.rescale(acc, fs[0] + fs[1], fo)
    if op == Op.RESHAPE:
        return el(0, e)
    if op == Op.PERMUTE:
        return el(0, _permute_source(hs[0].shape, list(p[0]), e))
    if op == Op.GATHER:
        dim, vocab = hs[1].shape[1], hs[1].shape[0]
        ident = el(0, e // dim)
        return el(1, ident * dim + e % dim) if 0 <= ident < vocab else 0
    if op in (Op.MEAN, Op.SUM, Op.SOFTMAX, Op.LAYERNORM):
        width = hs[0].shape[-1]
        row = e if op in (Op.MEAN, Op.SUM) else e // width
        vals = [el(0, row * width + i) for i in range(width)]
        if op == Op.MEAN:
            return fx.scaled_div(sum(vals), width, fs[0], fo)
        if op == Op.SUM:
            return fx.rescale(sum(vals), fs[0], fo)
        if op == Op.SOFTMAX:
            return fx.softmax_row(vals, fs[0], fo)[e % width]
        return fx.layernorm_row(vals, p[0], fs[0], fo)[e % width]
    if op == Op.WEIGHTED_SUM:
        return fx.rescale(sum(w * el(i, e) for i, w in enumerate(p[0])), fs[0] + p[1], fo)
    if op == Op.RING_ADD:
        return fx.wrap(sum(el(i, e) for i in range(len(inputs))))
    if op == Op.PRG_MASK:
        v = fx.prg_element(p[0], e)
        return fx.ring_neg(v) if p[1] else v
    if op == Op.RING_TO_FIXED:
        return fx.rescale(el(0, e), fs[0], fo)
    if op == Op.FIXED_TO_RING:
        return el(0, e)
    if op == Op.CLIP:
        return fx.rescale(min(max(el(0, e), p[0]), p[1]), fs[0], fo)
    if op == Op.RELU:
        return fx.rescale(max(el(0, e), 0), fs[0], fo)
    if op in (Op.GELU, Op.EXP, Op.RECIPROCAL, Op.INV_SQRT):
        fn = {Op.GELU: fx.gelu_fx, Op.EXP: fx.exp_fx, Op.RECIPROCAL: fx.reciprocal_fx, Op.INV_SQRT: fx.inv_sqrt_fx}
        return fn[op](el(0, e), fs[0], fo)
    if op == Op.COUNT_ABS:
        block, r_count = p[0], out.shape[1]
        which, r = e // r_count, e % r_count
        tau = el(1, 0)
        vals = [abs(el(0, i)) for i in range(r * block, min((r + 1) * block, hs[0].numel))]
        return sum(1 for v in vals if (v > tau if which == 0 else v >= tau))
    if op == Op.ASSERT_KTH:
        return 1
    if op == Op.TIES_TRIM:
        v = el(0, e)
        return fx.rescale(v if abs(v) >= el(1, 0) else 0, fs[0], fo)
    if op == Op.TIES_SIGN:
        total = sum(el(i, e) for i in range(len(inputs)))
        return (total > 0) - (total < 0)
    if op == Op.TIES_MEAN:
        s = el(0, e)
        picked = [el(i, e) for i in range(1, len(inputs))]
        chosen = [v for v in picked if v != 0 and ((v > 0) - (v < 0)) == s]
        return fx.scaled_div(sum(chosen), len(chosen), fs[1], fo) if chosen else 0
    if op == Op.BUNDLE_GET:
        value = inputs[0].entries[p[0]][1]  # type: ignore[index]
        return int(value.flat()[e])
    raise NoValidOutput(f"no element semantics for {op.name}")


__all__ = [
    "NoValidOutput",
    "Value",
    "bundle",
    "element_value",
    "execute_step",
    "input_ranges",
    "run",
    "tensor",
]
