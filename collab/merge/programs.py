"""Claimed merges as fraud-proof programs that compute what mergekit computes.

``collab/fraudproof/builders.py`` has the generic jobs (a weighted average,
task arithmetic with one λ, TIES with one density). A claimed merge must be
the merge the config describes, with mergekit's parameters and defaults, so
this module builds the programs from a :class:`~collab.merge.config.MergeSpec`:

* ``linear``: Σ ŵᵢθᵢ with ŵ = w / Σw (``normalize``, default true) or w;
* ``task_arithmetic``: base + λ·Σ ŵᵢ(θᵢ − base), ŵ = w (default) or w / Σw;
* ``ties``: per input, the task vector Δᵢ = θᵢ − base trimmed to its
  k = max(1, ⌊densityᵢ·n⌋) largest magnitudes (mergekit's ``magnitude``
  rule; the threshold is a WITNESS checked by COUNT_ABS/ASSERT_KTH), the sign
  elected by Σ wᵢΔᵢ, the disjoint weighted mean Σ_S wᵢΔᵢ / Σ_S wᵢ over the
  agreeing inputs S (mergekit's ``normalize: true``, the default), then
  base + λ·mean. With equal weights that mean is TIES_MEAN's count mean.
  Unequal weights (any positive reals) use existing ops only: the weighted
  deltas wᵢtᵢ are exact (SCALE to f + 30 fractional bits, so S is the same
  set for every mean), TIES_MEAN gives Σ_S wᵢtᵢ / |S| and, over the signed
  weights wᵢ·sign(tᵢ), ±Σ_S wᵢ / |S|; |S| cancels, one RECIPROCAL and a MUL
  give the ratio, rounded once at the output (mergekit's float32 result to
  within its own rounding).

Differences from mergekit that remain (documented in docs/merging.md): values
equal to the threshold are all kept (mergekit breaks ties arbitrarily), and an
element whose trimmed deltas sum to exactly zero gets no delta (mergekit picks
the positive side).

**Exact artifacts.** Each output tensor has its own number of fractional
bits f ≤ 24, chosen from a bound on the output's magnitude so every output
word k·2^-f is exactly a float32 (|k| < 2^23). The dequantised VM output is
then stored as float32 without rounding, and re-quantising the stored file at
the program's output headers gives back the claim's output root.

**Inputs hashed once.** A linear merge quantises its inputs at bits that
depend on the tensor alone (:func:`input_frac_bits`: 24, at least the
output's), and its WEIGHTED_SUM rescales to the output's bits, rounding
once; so a model's words and their commitment are the same in every linear
merge, and a claimer hashes them once (:mod:`collab.fraudproof.known_roots`,
keyed by ``MergePlan.sources``). Task arithmetic and TIES still quantise
inputs at the output's bits (their SUB/ADD steps take one header); their
roots are reused when a merge repeats the same bits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from collab.errors import BadInput
from collab.fixedpoint import Domain, check_frac_bits
from collab.fraudproof import native
from collab.fraudproof.builders import Job
from collab.fraudproof.commitments import TensorHeader
from collab.fraudproof.convert import to_vm
from collab.fraudproof.program import MAX_INPUTS, MAX_REDUCE, Op, ProgramBuilder, Ref
from collab.fraudproof.vm import Value, tensor
from collab.merge.config import MergeSpec, ModelRef

CLAIMABLE: tuple[str, ...] = ("linear", "task_arithmetic", "ties")
MAX_F = 24
MIN_F = 8
FW = 30  # fractional bits of weights and λ
INPUT_MAG_BITS = 28  # inputs below 2^28 are quantised at MAX_F bits: words < 2^52 (input_frac_bits)

_DEFAULT_NORMALIZE = {"linear": True, "task_arithmetic": False, "ties": True}


@dataclass(frozen=True)
class MergePlan:
    """A claimed merge: its inputs in order, their merge weights, and the job."""

    method: str
    refs: tuple[ModelRef, ...]  # non-base inputs, in config order
    base: ModelRef | None
    weights: tuple[float, ...]  # the config weight of each non-base input (attribution)
    job: Job
    sources: Mapping[str, str] = field(default_factory=dict)  # input name → where its words came from (known_roots)


def load_state(ref: ModelRef) -> dict[str, torch.Tensor]:
    """Every tensor of a local model directory's safetensors files."""
    from safetensors.torch import load_file

    if ref.path is None:
        raise BadInput(f"{ref.label}: resolve asset ids before building a claimed merge")
    if ref.lora is not None:
        raise BadInput(f"{ref.label}: claimed merges take full checkpoints",
                       hint="fold the adapter first with an unclaimed `collab merge run` (base+lora)")
    files = sorted(Path(ref.path).glob("*.safetensors"))
    if not files:
        raise BadInput(f"{ref.path} has no safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    return state


def _param(spec: MergeSpec, params: Mapping[str, object], name: str, default: float | None) -> float:
    value = params.get(name, spec.parameters.get(name, default))
    if value is None:
        raise BadInput(f"{spec.method} needs parameter {name!r} for every model")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInput(f"{spec.method}: parameter {name!r} must be a number, got {value!r}")
    return float(value)


def _flag(spec: MergeSpec, name: str, default: bool) -> bool:
    value = spec.parameters.get(name, default)
    if not isinstance(value, bool):
        raise BadInput(f"{spec.method}: parameter {name!r} must be true or false")
    return value


def input_frac_bits(mags: Sequence[float], fallback: int) -> int:
    """Fractional bits of a linear merge's inputs: MAX_F whenever every |x| < 2^INPUT_MAG_BITS.

    Why not the output's bits: at bits that depend on the tensor alone (and
    MAX_F is at least the output's), a model's words and their commitment are
    the same in every merge that reads it, so a claimer hashes them once
    (:mod:`collab.fraudproof.known_roots`); WEIGHTED_SUM rescales to the
    output's bits, rounding once. Larger weights (never seen in a real model)
    fall back to the merge's own bits.
    """
    return MAX_F if max(mags, default=0.0) < 2.0 ** INPUT_MAG_BITS else fallback


def _frac_bits(bound: float) -> int:
    """Fractional bits such that every |x| ≤ bound is k·2^-f with |k| < 2^23 (exact float32), capped at 24."""
    if not math.isfinite(bound):
        raise BadInput("a weight is not finite")
    if bound <= 0:
        return MAX_F
    f = 22 - math.ceil(math.log2(bound))
    if f < MIN_F:
        raise BadInput(f"weights of magnitude {bound:.3g} are too large for a claimed merge")
    return min(MAX_F, f)


def _max_abs(t: torch.Tensor) -> float:
    """max |t| in one pass without a temporary (NaN propagates, so _frac_bits refuses it)."""
    if not t.numel():
        return 0.0
    lo, hi = torch.aminmax(t.detach())
    return max(-float(lo), float(hi)) if not (torch.isnan(lo) or torch.isnan(hi)) else math.nan


def _kth_largest_abs(words: np.ndarray, k: int) -> int:
    """The k-th largest |word|; ``words`` (a fresh int64 array) is overwritten."""
    mags = np.abs(words.reshape(-1), out=words.reshape(-1))
    mags.partition(mags.size - k)
    return int(mags[mags.size - k])


def build_plan(spec: MergeSpec) -> MergePlan:
    """The fraud-proof job of a linear / task-arithmetic / TIES merge over local inputs."""
    if spec.method not in CLAIMABLE:
        raise BadInput(f"{spec.method} merges cannot be claimed", hint=f"claimable: {', '.join(CLAIMABLE)}")
    others = [m for m in spec.models if m.ref is not None and (spec.method == "linear" or m.ref != spec.base)]
    if len(others) > MAX_INPUTS:
        raise BadInput(f"a claimed merge takes at most {MAX_INPUTS} models, got {len(others)}")
    if not others:
        raise BadInput(f"{spec.method} needs at least one model besides the base")
    weights = [_param(spec, m.parameters, "weight", None) for m in others]
    refs = tuple(m.ref for m in others if m.ref is not None)
    states = [load_state(r) for r in refs]
    if spec.method == "linear":
        job = _linear(states, weights, _flag(spec, "normalize", True))
        return MergePlan(spec.method, refs, None, tuple(weights), job, _sources(job, {"m": refs}))
    if spec.base is None:
        raise BadInput(f"{spec.method} needs base_model")
    base = load_state(spec.base)
    lam = _param(spec, {}, "lambda", 1.0)
    if spec.method == "task_arithmetic":
        job = _task_arithmetic(base, states, weights, lam, _flag(spec, "normalize", False))
    else:
        densities = [_param(spec, m.parameters, "density", 1.0) for m in others]
        if not _flag(spec, "normalize", True):
            raise BadInput("a claimed TIES merge needs normalize: true (the VM's disjoint mean divides by the count)")
        job = _ties(base, states, densities, lam, weights)
    return MergePlan(spec.method, refs, spec.base, tuple(weights), job, _sources(job, {"m": refs, "base": (spec.base,)}))


def _sources(job: Job, refs: Mapping[str, Sequence[ModelRef]]) -> dict[str, str]:
    """Input name (``m0/k``, ``base/k``) → the source key of its words: the model files' fingerprint and ``k``."""
    from collab.fraudproof.known_roots import files_fingerprint

    prints: dict[str, str] = {}
    for prefix, group in refs.items():
        for i, ref in enumerate(group):
            name = prefix if prefix == "base" else f"{prefix}{i}"
            if ref.source_id is not None:  # a decrypted asset: a fresh directory each time, one blob
                prints[name] = ref.source_id
            elif ref.path is not None:
                prints[name] = files_fingerprint(Path(ref.path).glob("*.safetensors"))
    out = {}
    for name in job.inputs:
        owner, _, tensor_name = name.partition("/")
        if owner in prints:
            out[name] = f"{prints[owner]}|{tensor_name}"
    return out


def _check_keys(states: Sequence[Mapping[str, torch.Tensor]], labels: Sequence[str]) -> list[str]:
    keys = list(states[0])
    for state, label in zip(states[1:], labels[1:]):
        missing = sorted(set(keys) ^ set(state))
        if missing:
            raise BadInput(f"{missing[0]} is in only some of the inputs ({label} differs from {labels[0]})")
        for k in keys:
            if tuple(state[k].shape) != tuple(states[0][k].shape):
                raise BadInput(f"shape mismatch for {k}: {list(states[0][k].shape)} vs {list(state[k].shape)} in {label}")
    return keys


def quantise(t: torch.Tensor, f: int, max_abs: float | None = None) -> Value:
    """The FIXED VM tensor of ``t`` at f fractional bits, bit-identical to ``to_vm(t, f)[0]``.

    Why not ``to_vm``: it also measures the round-trip error (a second
    quantisation) through float64, which dominated a claimed merge's time.
    Scaling a float32 by 2^f (f ≥ 0) is exact, and ``np.rint`` rounds half
    to even, so the words are the same; integer, float64,
    non-finite or saturating tensors take the generic path (which refuses NaN).
    ``max_abs`` (a finite max |t| the caller already has) skips the range scan.
    """
    x = t.detach()
    check_frac_bits(f)
    if not torch.is_floating_point(x) or x.dtype == torch.float64:
        return to_vm(x, f)[0]
    floats = x.float().cpu().numpy()
    words = native.quantise_f32(floats, f)  # one pass, no float temporary (None: library off, or out of range)
    if words is not None:
        return tensor(words, Domain.FIXED, f)
    # numpy: the same float32 products and half-to-even rounding, ~5x faster than torch's round + int64 cast
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = floats * np.float32(2.0 ** f)
        np.rint(scaled, out=scaled)
    trusted = max_abs is not None and math.isfinite(max_abs) and max_abs * 2.0 ** f < 2.0 ** 61
    if scaled.size and not trusted:
        lo, hi = torch.aminmax(torch.from_numpy(scaled))
        if not (-float(lo) < 2.0 ** 62 and float(hi) < 2.0 ** 62):  # also catches NaN/inf
            return to_vm(x, f)[0]
    return tensor(scaled.astype(np.int64), Domain.FIXED, f)


def _quantised_inputs(keys: Sequence[str], quantised: Callable[[str], tuple[int | None, list[Value]]],
                      with_base: bool = True) -> tuple[dict[str, Value], dict[str, int]]:
    """The program's inputs (``base/k``, ``m0/k``, ...) and each merged tensor's fractional bits.

    ``quantised(k)`` gives tensor ``k``'s bits (None: not merged, the first
    input's copy is passed through) and its words per input, base first when
    ``with_base``. Tensors are quantised on a thread per core (numpy and torch
    release the GIL); the result does not depend on the order they finish in.
    """
    from concurrent.futures import ThreadPoolExecutor

    from collab.fraudproof.trace import COMMIT_WORKERS

    names = ["base", *(f"m{i}" for i in range(MAX_INPUTS))] if with_base else [f"m{i}" for i in range(MAX_INPUTS)]
    inputs: dict[str, Value] = {}
    fs: dict[str, int] = {}
    with ThreadPoolExecutor(COMMIT_WORKERS, thread_name_prefix="quantise") as pool:
        for k, (f, values) in zip(keys, pool.map(quantised, keys)):
            if f is not None:
                fs[k] = f
            inputs.update({f"{name}/{k}": v for name, v in zip(names, values)})
    return inputs, fs


def _linear(states: list[dict[str, torch.Tensor]], weights: list[float], normalize: bool) -> Job:
    keys = _check_keys(states, [f"model {i}" for i in range(len(states))])
    total = sum(weights)
    if normalize and abs(total) < 1e-12:
        raise BadInput("merge weights sum to zero")
    w = [x / total for x in weights] if normalize else list(weights)

    def quantised(k: str) -> tuple[int | None, list[Value]]:
        if not torch.is_floating_point(states[0][k]):
            return None, [quantise(states[0][k], 0)]
        mags = [_max_abs(s[k]) for s in states]
        fo = _frac_bits(sum(abs(x) for x in w) * max(mags))
        out_bits[k] = fo
        f = input_frac_bits(mags, fo)
        return f, [quantise(s[k], f, m) for s, m in zip(states, mags)]

    out_bits: dict[str, int] = {}
    inputs, fs = _quantised_inputs(keys, quantised, with_base=False)
    b = ProgramBuilder({n: v.header for n, v in inputs.items()})
    out = {k: (b.weighted_sum([b[f"m{i}/{k}"] for i in range(len(states))], _fixed(w), FW, out_bits[k]) if k in fs
               else b[f"m0/{k}"])
           for k in keys}
    bundle_state(b, out)
    return Job(b.build(), inputs, like=dict(states[0]))


def _fixed(ws: Sequence[float]) -> list[int]:
    return [round(float(x) * (1 << FW)) for x in ws]


def _deltas_bound(base: torch.Tensor, states: Sequence[Mapping[str, torch.Tensor]], k: str) -> list[float]:
    """Upper bounds on max |θᵢ − base|: float32 differences round by at most 2^-24 relative, so the
    float32 maximum times (1 + 2^-23) bounds the exact one (half the memory traffic of float64)."""
    if base.dtype != torch.float32 or any(s[k].dtype != torch.float32 for s in states):
        b = base.double()
        return [_max_abs(s[k].double() - b) for s in states]
    return [_max_abs(s[k] - base) * (1 + 2.0 ** -23) for s in states]


def _task_arithmetic(base: dict[str, torch.Tensor], states: list[dict[str, torch.Tensor]], weights: list[float],
                     lam: float, normalize: bool) -> Job:
    keys = _check_keys([base, *states], ["base", *(f"model {i}" for i in range(len(states)))])
    total = sum(weights)
    w = [lam * x / total for x in weights] if normalize and abs(total) > 1e-12 else [lam * x for x in weights]

    def quantised(k: str) -> tuple[int | None, list[Value]]:
        if not torch.is_floating_point(base[k]):
            return None, [quantise(base[k], 0)]
        deltas = _deltas_bound(base[k], states, k)
        mags = [_max_abs(t[k]) for t in (base, *states)]
        f = _frac_bits(max(max(mags), mags[0] + sum(abs(x) * d for x, d in zip(w, deltas))))
        return f, [quantise(t[k], f, m) for t, m in zip((base, *states), mags)]

    inputs, fs = _quantised_inputs(keys, quantised)
    b = ProgramBuilder({n: v.header for n, v in inputs.items()})
    out: dict[str, Ref] = {}
    for k in keys:
        if k not in fs:
            out[k] = b[f"base/{k}"]
            continue
        ds = [b.sub(b[f"m{i}/{k}"], b[f"base/{k}"]) for i in range(len(states))]
        out[k] = b.add(b[f"base/{k}"], b.weighted_sum(ds, _fixed(w), FW))
    bundle_state(b, out)
    return Job(b.build(), inputs, like=dict(base))


def _ties(base: dict[str, torch.Tensor], states: list[dict[str, torch.Tensor]], densities: list[float],
          lam: float, weights: Sequence[float] | None = None) -> Job:
    """TIES with input i weighing ``weights[i]`` in the sign election and the disjoint mean."""
    weights = list(weights or [1.0] * len(states))
    if any(not math.isfinite(w) or w <= 0 for w in weights):
        raise BadInput("a claimed TIES merge needs positive weights (Shares are attributed by weight)")
    top = max(weights)  # the mean is a ratio of weighted sums: only the weights' ratios matter
    fixed_w = [max(1, round(w / top * (1 << FW))) for w in weights]
    keys = _check_keys([base, *states], ["base", *(f"model {i}" for i in range(len(states)))])
    for d in densities:
        if not 0 < d <= 1:
            raise BadInput(f"density must be in (0, 1], got {d}")

    def quantised(k: str) -> tuple[int | None, list[Value]]:
        if not torch.is_floating_point(base[k]):
            return None, [quantise(base[k], 0)]
        mags = [_max_abs(base[k]), *(_max_abs(s[k]) for s in states)]
        f = _frac_bits(max(max(mags), mags[0] + abs(lam) * max(_deltas_bound(base[k], states, k))))
        return f, [quantise(t[k], f, m) for t, m in zip((base, *states), mags)]

    inputs, fs = _quantised_inputs(keys, quantised)
    b = ProgramBuilder({n: v.header for n, v in inputs.items()})
    witnesses: dict[int, np.ndarray] = {}
    out: dict[str, Ref] = {}
    for k in keys:
        if k not in fs:
            out[k] = b[f"base/{k}"]
            continue
        base_ref = b[f"base/{k}"]
        trimmed = []
        for i, density in enumerate(densities):
            t = b.sub(b[f"m{i}/{k}"], base_ref)
            numel = t.header.numel
            if density >= 1:
                trimmed.append(t)
                continue
            kk = max(1, int(density * numel))
            block = min(MAX_REDUCE, numel)
            if -(-numel // block) > MAX_REDUCE:
                raise BadInput(f"{k}: more than {MAX_REDUCE * MAX_REDUCE} elements per tensor")
            words = np.subtract(inputs[f"m{i}/{k}"].data, inputs[f"base/{k}"].data, dtype=np.int64)
            witnesses[len(b.steps)] = np.array(_kth_largest_abs(words, kk))
            tau = b.witness(TensorHeader(Domain.FIXED, t.f, ()))
            b.assert_kth(b.sum(b.count_abs(t, tau, block)), kk)
            trimmed.append(b.ties_trim(t, tau))
        if len(set(fixed_w)) == 1:
            mean = b.ties_mean(b.ties_sign(trimmed), trimmed)
        else:
            mean = _weighted_disjoint_mean(b, trimmed, fixed_w, fs[k])
        out[k] = b.add(base_ref, b.scale(mean, round(lam * (1 << FW)), FW) if lam != 1 else mean)
    bundle_state(b, out)
    return Job(b.build(), inputs, witnesses, like=dict(base))


def _weighted_disjoint_mean(b: ProgramBuilder, trimmed: Sequence[Ref], fixed_w: Sequence[int], f: int) -> Ref:
    """Σ_S wᵢtᵢ / Σ_S wᵢ, S = {i : tᵢ ≠ 0, sign tᵢ = sign Σ wᵢtᵢ}, at ``f`` fractional bits (w at FW bits).

    Why two TIES_MEANs: the VM's disjoint mean divides by |S|, which cancels in
    their ratio. wᵢtᵢ is kept exact (|t| < 2^24, w ≤ 2^FW), so it is zero
    exactly where tᵢ is and S is the same set in both means; the weight mean
    comes out signed (it is over wᵢ·sign tᵢ), so it is multiplied by the
    elected sign before the reciprocal. With S empty both means are 0, and
    0 · RECIPROCAL(0) = 0.
    """
    weighted = [b.scale(t, w, FW, f + FW) for t, w in zip(trimmed, fixed_w)]
    sign = b.ties_sign(weighted)
    signed_w = [b.scale(b.ties_sign([t]), w, FW, FW) for t, w in zip(trimmed, fixed_w)]
    weight_mean = b.mul(b.ties_mean(sign, signed_w), sign, FW)
    return b.mul(b.ties_mean(sign, weighted), b.unary(Op.RECIPROCAL, weight_mean, FW), f)


# --------------------------------------------------------------------- the output bundle


def _groups(names: Sequence[str]) -> list[list[str]]:
    """Names in name-hash order, cut into runs of at most MAX_INPUTS (a BUNDLE step's limit)."""
    from collab.fraudproof.commitments import name_hash

    ordered = sorted(names, key=name_hash)
    return [ordered[i:i + MAX_INPUTS] for i in range(0, len(ordered), MAX_INPUTS)]


def group_name(index: int) -> str:
    """Entry name of the index-th group in a state dict of more than 64 tensors."""
    return f"collab/group/{index}"


def bundle_state(b: ProgramBuilder, out: Mapping[str, Ref]) -> Ref:
    """The program's output: a BUNDLE of the tensors by name, or (over 64 tensors) a BUNDLE of ≤64-tensor BUNDLEs."""
    groups = _groups(list(out))
    if len(groups) == 1:
        return b.bundle(dict(out))
    if len(groups) > MAX_INPUTS:
        raise BadInput(f"a claimed merge holds at most {MAX_INPUTS * MAX_INPUTS} tensors")
    return b.bundle({group_name(i): b.bundle({n: out[n] for n in g}) for i, g in enumerate(groups)})


def state_bundle(values: Mapping[str, Value]) -> Value:
    """The same (possibly two-level) bundle over VM tensors: its root is the merged asset's commitmentRoot."""
    from collab.fraudproof.commitments import name_hash
    from collab.fraudproof.vm import bundle

    def flat(names: Sequence[str]) -> Value:
        return bundle(sorted(((name_hash(n), values[n]) for n in names), key=lambda kv: kv[0]))

    groups = _groups(list(values))
    if len(groups) == 1:
        return flat(groups[0])
    return bundle(sorted(((name_hash(group_name(i)), flat(g)) for i, g in enumerate(groups)), key=lambda kv: kv[0]))


def output_values(value: Value) -> dict[bytes, Value]:
    """The output's numeric tensors by name hash (through the group level when there is one)."""
    out: dict[bytes, Value] = {}
    for h, v in value.entries or ():
        if v.entries is not None:
            out.update(output_values(v))
        else:
            out[h] = v
    return out


def _below_2_24(words: np.ndarray) -> bool:
    """Every |k| < 2^24 (min and max, no |words| temporary)."""
    return not words.size or max(-int(words.min()), int(words.max())) < 1 << 24


def output_state(value: Value, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The dequantised output state dict (dtypes and shapes of ``like``)."""
    from collab.fraudproof.commitments import name_hash
    from collab.fraudproof.convert import state_dict_from_vm

    by_hash = output_values(value)
    values = {n: by_hash[name_hash(n)] for n in like}
    out: dict[str, torch.Tensor] = {}
    slow: dict[str, Value] = {}
    for n, v in values.items():
        words = v.data
        if like[n].dtype == torch.float32 and words is not None and _below_2_24(words):
            # |k| < 2^24: k and k·2^-f are exact float32, the same value as float64 dequantisation then rounding
            scaled = np.multiply(words, np.float32(2.0 ** -v.header.frac_bits), out=np.empty(words.shape, np.float32),
                                 casting="unsafe")  # one pass, no int64 -> float32 temporary
            out[n] = torch.from_numpy(scaled.reshape(like[n].shape))
        else:
            slow[n] = v
    out.update({n: t.reshape(like[n].shape) for n, t in state_dict_from_vm(slow, like).items()})
    return {n: out[n] for n in like}


__all__ = ["CLAIMABLE", "MergePlan", "build_plan", "bundle_state", "load_state", "output_state", "output_values",
           "state_bundle"]
