"""Programs for collab's real jobs: FedAvg, masked sums, merges and an encoder forward pass.

Each builder returns a :class:`Job`: the program, its named VM inputs and the
claimer's witness values. Where a job's result is a state dict, the program
ends in a ``BUNDLE`` of the output tensors by parameter name, so the trace's
output root equals the asset commitmentRoot (``state_dict_bundle`` of the
dequantised result) and the claim and the registered asset commit to the same
weights. Input names are namespaced (``m{i}/<param>``, ``y/<sender>``,
``const/...``) so one claim's input bundle holds every model.

Quantisation: inputs are fixed point at ``f`` fractional bits (default 24);
weights are at ``fw`` bits, so FedAvg/linear results are within a few ulps of
``2^-f`` times the sum of |weights| of the float reference. TIES trims per
tensor (the k-th largest magnitude of each task tensor), which is how
mergekit applies ``density`` to every parameter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from collab import fixedpoint as fx
from collab.errors import BadInput
from collab.fixedpoint import Domain
from collab.fraudproof.commitments import TensorHeader
from collab.fraudproof.convert import from_vm, state_dict_from_vm, to_vm
from collab.fraudproof.program import MAX_INPUTS, MAX_REDUCE, Program, ProgramBuilder, Ref
from collab.fraudproof.trace import Committed, Trace, build_trace
from collab.fraudproof.vm import Value, run, tensor

DEFAULT_F = 24
DEFAULT_FW = 30


@dataclass
class Job:
    """A program with everything a claimer needs to run and commit it."""

    program: Program
    inputs: dict[str, Value]
    witnesses: dict[int, np.ndarray] = field(default_factory=dict)
    like: dict[str, torch.Tensor] | None = None  # dtype/shape template of a state-dict output
    out_names: tuple[str, ...] = ()  # names of a non-state-dict output bundle

    def run(self) -> Value:
        """The last step's value (the output bundle) by plain execution."""
        ordered = [self.inputs[n] for n in _ordered_names(self.inputs)]
        return run(self.program, ordered, self.witnesses)[-1]

    def trace(self, overrides: Mapping[int, Value] | None = None,
              executed: Callable[[Value], None] | None = None,
              known: Mapping[str, Committed] | None = None) -> Trace:
        """Execute and commit every step (``overrides`` for dishonest traces in tests; ``executed``
        gets the output while the commitments finish: :func:`build_trace`; ``known``: inputs
        committed earlier, not rehashed)."""
        inputs: dict[str, Value | Committed] = {**self.inputs, **(known or {})}
        return build_trace(self.program, inputs, self.witnesses, overrides, executed)

    def outputs(self, value: Value | None = None) -> dict[str, Value]:
        """The output bundle's entries by name (names come from the job's template)."""
        out = self.run() if value is None else value
        if out.entries is None:
            raise BadInput("the job's output is not a bundle")
        names = {_nh(n): n for n in [*(self.like or {}), *self.out_names]}
        return {names.get(h, h.hex()): v for h, v in out.entries}

    def state_dict(self, value: Value | None = None) -> dict[str, torch.Tensor]:
        """The dequantised output state dict (dtypes of the template)."""
        out = state_dict_from_vm(self.outputs(value), self.like)
        return {n: t.reshape(self.like[n].shape) if self.like and n in self.like else t for n, t in out.items()}


def _nh(name: str) -> bytes:
    from collab.fraudproof.commitments import name_hash

    return name_hash(name)


def _ordered_names(inputs: Mapping[str, Value]) -> list[str]:
    return sorted(inputs, key=_nh)


def _float_names(state: Mapping[str, torch.Tensor]) -> list[str]:
    return [n for n, t in state.items() if torch.is_floating_point(t)]


def _quantise(prefix: str, state: Mapping[str, Any], f: int, into: dict[str, Value]) -> None:
    for name, t in state.items():
        into[f"{prefix}{name}"] = to_vm(t, f)[0]


def _weights(ws: Sequence[float], fw: int) -> list[int]:
    return [round(float(w) * (1 << fw)) for w in ws]


def _check_same_keys(states: Sequence[Mapping[str, torch.Tensor]]) -> list[str]:
    if not states:
        raise BadInput("a job needs at least one state dict")
    if len(states) > MAX_INPUTS:
        raise BadInput(f"at most {MAX_INPUTS} state dicts per job, got {len(states)}")
    keys = list(states[0])
    for i, s in enumerate(states[1:], 1):
        if list(s) != keys or any(tuple(s[k].shape) != tuple(states[0][k].shape) for k in keys):
            raise BadInput(f"state dict {i} does not have the parameters (names and shapes) of state dict 0")
    return keys


def _headers(inputs: Mapping[str, Value]) -> dict[str, TensorHeader]:
    return {n: v.header for n, v in inputs.items()}


# --------------------------------------------------------------------------- FedAvg and linear merges


def weighted_average(
    states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float], *, f: int = DEFAULT_F, fw: int = DEFAULT_FW
) -> Job:
    """Σ_i w_i·θ_i per parameter (one WEIGHTED_SUM each); non-float buffers pass through from model 0."""
    keys = _check_same_keys(states)
    if len(weights) != len(states):
        raise BadInput("one weight per state dict")
    inputs: dict[str, Value] = {}
    for i, s in enumerate(states):
        _quantise(f"m{i}/", s, f, inputs)
    b = ProgramBuilder(_headers(inputs))
    wq = _weights(weights, fw)
    floats = set(_float_names(states[0]))
    out: dict[str, Ref] = {}
    for k in keys:
        if k in floats:
            out[k] = b.weighted_sum([b[f"m{i}/{k}"] for i in range(len(states))], wq, fw)
        else:
            out[k] = b[f"m0/{k}"]
    b.bundle(out)
    return Job(b.build(), inputs, like=dict(states[0]))


def fedavg(states: Sequence[Mapping[str, torch.Tensor]], num_examples: Sequence[int], **kw: int) -> Job:
    """FedAvg: the example-weighted mean of client state dicts."""
    total = sum(num_examples)
    if total <= 0 or any(n < 0 for n in num_examples):
        raise BadInput("example counts must be non-negative with a positive total")
    return weighted_average(states, [n / total for n in num_examples], **kw)


def linear_merge(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float], **kw: int) -> Job:
    """mergekit ``linear`` (normalised weights)."""
    total = sum(weights)
    if total == 0:
        raise BadInput("merge weights sum to zero")
    return weighted_average(states, [w / total for w in weights], **kw)


def task_arithmetic(
    base: Mapping[str, torch.Tensor],
    models: Sequence[Mapping[str, torch.Tensor]],
    lam: float = 1.0,
    *,
    f: int = DEFAULT_F,
    fw: int = DEFAULT_FW,
) -> Job:
    """base + λ·Σ_i (θ_i − base): SUB per model, WEIGHTED_SUM of the deltas, ADD to base."""
    keys = _check_same_keys([base, *models])
    inputs: dict[str, Value] = {}
    _quantise("base/", base, f, inputs)
    for i, s in enumerate(models):
        _quantise(f"m{i}/", s, f, inputs)
    b = ProgramBuilder(_headers(inputs))
    floats = set(_float_names(base))
    out: dict[str, Ref] = {}
    for k in keys:
        if k not in floats:
            out[k] = b[f"base/{k}"]
            continue
        deltas = [b.sub(b[f"m{i}/{k}"], b[f"base/{k}"]) for i in range(len(models))]
        out[k] = b.add(b[f"base/{k}"], b.weighted_sum(deltas, _weights([lam] * len(deltas), fw), fw))
    b.bundle(out)
    return Job(b.build(), inputs, like=dict(base))


# --------------------------------------------------------------------------- TIES


def kth_largest_abs(words: np.ndarray, k: int) -> int:
    """The k-th largest |word| (the WITNESS value ASSERT_KTH accepts)."""
    mags = np.sort(np.abs(words.reshape(-1).astype(object)))[::-1]
    return int(mags[k - 1])


def ties_merge(
    base: Mapping[str, torch.Tensor],
    models: Sequence[Mapping[str, torch.Tensor]],
    density: float = 0.5,
    lam: float = 1.0,
    *,
    f: int = DEFAULT_F,
    fw: int = DEFAULT_FW,
) -> Job:
    """TIES: trim each task tensor to its top-k magnitudes, elect signs, disjoint mean, scale, add to base.

    The threshold tau of each task tensor is a WITNESS checked by COUNT_ABS →
    SUM → ASSERT_KTH (protocol §3.5), so a wrong tau loses at the assertion.
    """
    if not 0 < density <= 1:
        raise BadInput("density must be in (0, 1]")
    keys = _check_same_keys([base, *models])
    inputs: dict[str, Value] = {}
    _quantise("base/", base, f, inputs)
    for i, s in enumerate(models):
        _quantise(f"m{i}/", s, f, inputs)
    b = ProgramBuilder(_headers(inputs))
    witnesses: dict[int, np.ndarray] = {}
    floats = set(_float_names(base))
    out: dict[str, Ref] = {}
    for key in keys:
        if key not in floats:
            out[key] = b[f"base/{key}"]
            continue
        base_ref = b[f"base/{key}"]
        trimmed = []
        for i in range(len(models)):
            t = b.sub(b[f"m{i}/{key}"], base_ref)
            numel = t.header.numel
            k = max(1, math.ceil(density * numel))
            block = min(MAX_REDUCE, numel)
            if -(-numel // block) > MAX_REDUCE:
                raise BadInput(f"{key}: more than {MAX_REDUCE * MAX_REDUCE} elements per tensor")
            delta_words = fx.rescale_array(
                inputs[f"m{i}/{key}"].data.astype(object) - inputs[f"base/{key}"].data.astype(object), f, f
            )
            witnesses[len(b.steps)] = np.array(kth_largest_abs(np.asarray(delta_words, dtype=np.int64), k))
            tau = b.witness(TensorHeader(Domain.FIXED, t.f, ()))
            totals = b.sum(b.count_abs(t, tau, block))
            b.assert_kth(totals, k)
            trimmed.append(b.ties_trim(t, tau))
        sign = b.ties_sign(trimmed)
        mean = b.ties_mean(sign, trimmed)
        scaled = b.scale(mean, round(lam * (1 << fw)), fw)
        out[key] = b.add(base_ref, scaled)
    b.bundle(out)
    return Job(b.build(), inputs, witnesses, like=dict(base))


def ties_reference(
    base: Mapping[str, torch.Tensor], models: Sequence[Mapping[str, torch.Tensor]], density: float, lam: float = 1.0
) -> dict[str, np.ndarray]:
    """Float TIES with the same per-tensor top-k and keep-all-ties rule (independent numpy reference)."""
    out: dict[str, np.ndarray] = {}
    for key, b0 in base.items():
        b = b0.double().numpy()
        ts = []
        for m in models:
            t = m[key].double().numpy() - b
            k = max(1, math.ceil(density * t.size))
            tau = np.sort(np.abs(t).reshape(-1))[::-1][k - 1]
            ts.append(np.where(np.abs(t) >= tau, t, 0.0))
        stack = np.stack(ts)
        sign = np.sign(stack.sum(axis=0))
        sel = (stack != 0) & (np.sign(stack) == sign)
        cnt = sel.sum(axis=0)
        mean = np.where(cnt > 0, (stack * sel).sum(axis=0) / np.maximum(cnt, 1), 0.0)
        out[key] = b + lam * mean
    return out


# --------------------------------------------------------------------------- masked sum (secure aggregation)


def masked_sum(
    masked: Mapping[int, np.ndarray], masks: Sequence[tuple[bytes, bool]], frac_bits: int, name: str = "sum"
) -> Job:
    """RING_ADD of the masked inputs and every revealed ±PRG(seed) term, then RING_TO_FIXED.

    ``masked`` maps sender → int64 ring words; ``masks`` are the (seed,
    negate) terms of an ``AggregationWitness``. The output bundle holds one
    vector named ``name``.
    """
    if not masked:
        raise BadInput("a masked sum needs at least one masked input")
    lengths = {np.asarray(w).size for w in masked.values()}
    if len(lengths) != 1:
        raise BadInput("masked inputs have different lengths")
    (length,) = lengths
    inputs = {f"y/{u}": tensor(np.asarray(w, dtype=np.int64).reshape(-1), Domain.RING, frac_bits) for u, w in masked.items()}
    b = ProgramBuilder(_headers(inputs))
    terms: list[Ref] = [b[n] for n in sorted(inputs)]
    terms += [b.prg_mask(seed, (length,), frac_bits, negate) for seed, negate in masks]
    while len(terms) > 1:
        terms = [b.ring_add(terms[i : i + MAX_INPUTS]) if len(terms[i : i + MAX_INPUTS]) > 1 else terms[i] for i in range(0, len(terms), MAX_INPUTS)]
    b.bundle({name: b.ring_to_fixed(terms[0])})
    return Job(b.build(), inputs, out_names=(name,))


def masked_sum_from_witness(witness: Any, name: str = "sum") -> Job:
    """The masked-sum job of a secure-aggregation round (``collab.secagg.aggregation_witness``)."""
    masked = {m.sender: m.words for m in witness.masked_inputs}
    return masked_sum(masked, [(t.seed, t.negate) for t in witness.masks], witness.config.frac_bits, name)


# --------------------------------------------------------------------------- BERT / MiniLM encoder


def _const_ids(ids: Sequence[int]) -> Value:
    return tensor(np.asarray(list(ids), dtype=np.int64), Domain.FIXED, 0)


@dataclass(frozen=True)
class EncoderShape:
    """What the program needs from a BERT config."""

    hidden: int
    heads: int
    layers: int
    eps: float = 1e-12


def encoder_forward(
    state: Mapping[str, torch.Tensor],
    token_ids: Sequence[int],
    shape: EncoderShape,
    *,
    f: int = 16,
    prefix: str = "",
    pooled: bool = True,
) -> Job:
    """BERT encoder over ``token_ids`` (one sequence, no padding): embeddings, ``shape.layers`` layers, mean pool.

    Heads are split with RESHAPE/PERMUTE and selected with GATHER of constant
    row ids (the VM has no slicing op); the output projection is applied per
    head and the heads summed, which equals projecting their concatenation.
    ``state`` keys follow transformers' ``BertModel`` (``prefix`` strips e.g.
    ``bert.``); the output bundle holds ``pooled`` [D] or ``hidden`` [S, D].
    """
    s_len, d, h = len(token_ids), shape.hidden, shape.heads
    if d % h:
        raise BadInput("hidden size must be a multiple of the head count")
    dh = d // h
    p = prefix

    def w(name: str) -> torch.Tensor:
        key = f"{p}{name}"
        if key not in state:
            raise BadInput(f"state dict has no {key}")
        return state[key]

    names = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
             "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]
    for li in range(shape.layers):
        lp = f"encoder.layer.{li}."
        for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                     "intermediate.dense", "output.dense"):
            names += [f"{lp}{part}.weight", f"{lp}{part}.bias"]
        names += [f"{lp}attention.output.LayerNorm.weight", f"{lp}attention.output.LayerNorm.bias",
                  f"{lp}output.LayerNorm.weight", f"{lp}output.LayerNorm.bias"]
    inputs: dict[str, Value] = {n: to_vm(w(n), f)[0] for n in names}
    vocab = w(names[0]).shape[0]
    if any(not 0 <= t < vocab for t in token_ids) or s_len > w(names[1]).shape[0] or s_len == 0:
        raise BadInput("token ids out of the vocabulary or sequence longer than the position table")
    inputs["input_ids"] = _const_ids(token_ids)
    inputs["const/positions"] = _const_ids(range(s_len))
    inputs["const/zeros"] = _const_ids([0] * s_len)
    for hh in range(h):
        inputs[f"const/rows_s{hh}"] = _const_ids(range(hh * s_len, (hh + 1) * s_len))
        inputs[f"const/rows_d{hh}"] = _const_ids(range(hh * dh, (hh + 1) * dh))
    eps = max(1, round(shape.eps * (1 << f)))
    b = ProgramBuilder(_headers(inputs))

    def ln(x: Ref, pre: str) -> Ref:
        return b.bias_add(b.mul(b.layernorm(x, eps), b[f"{pre}.weight"]), b[f"{pre}.bias"])

    def linear(x: Ref, pre: str) -> Ref:
        return b.bias_add(b.matmul(x, b[f"{pre}.weight"]), b[f"{pre}.bias"])

    x = b.add(b.gather(b["input_ids"], b[names[0]]), b.gather(b["const/positions"], b[names[1]]))
    x = ln(b.add(x, b.gather(b["const/zeros"], b[names[2]])), "embeddings.LayerNorm")
    inv_sqrt_dh = round((1 << 30) / math.sqrt(dh))
    for li in range(shape.layers):
        lp = f"encoder.layer.{li}."
        heads_first = [1, 0, 2]

        def split(t: Ref) -> Ref:  # [S, D] -> [H*S, dh], head-major rows
            return b.reshape(b.permute(b.reshape(t, (s_len, h, dh)), heads_first), (h * s_len, dh))

        q = split(linear(x, f"{lp}attention.self.query"))
        k = split(linear(x, f"{lp}attention.self.key"))
        v = linear(x, f"{lp}attention.self.value")
        v_t = b.reshape(b.permute(b.reshape(v, (s_len, h, dh)), [1, 2, 0]), (h * dh, s_len))  # [H*dh, S]
        wo_t = b.permute(b[f"{lp}attention.output.dense.weight"], [1, 0])  # [D_in, D_out]
        per_head = []
        for hh in range(h):
            qh = b.gather(b[f"const/rows_s{hh}"], q)
            kh = b.gather(b[f"const/rows_s{hh}"], k)
            probs = b.softmax(b.scale(b.matmul(qh, kh), inv_sqrt_dh, 30))  # [S, S]
            ctx = b.matmul(probs, b.gather(b[f"const/rows_d{hh}"], v_t))  # [S, dh]
            wo_h = b.permute(b.gather(b[f"const/rows_d{hh}"], wo_t), [1, 0])  # [D_out, dh]
            per_head.append(b.matmul(ctx, wo_h))
        attn = per_head[0] if h == 1 else b.weighted_sum(per_head, [1] * h, 0)
        attn = b.bias_add(attn, b[f"{lp}attention.output.dense.bias"])
        x = ln(b.add(attn, x), f"{lp}attention.output.LayerNorm")
        inter = b.gelu(linear(x, f"{lp}intermediate.dense"))
        x = ln(b.add(linear(inter, f"{lp}output.dense"), x), f"{lp}output.LayerNorm")
    out_name = "pooled" if pooled else "hidden"
    b.bundle({out_name: b.mean(b.permute(x, [1, 0])) if pooled else x})
    return Job(b.build(), inputs, out_names=(out_name,))


def output_tensor(job: Job, name: str) -> torch.Tensor:
    """One output entry of a job, dequantised to float64."""
    outs = job.outputs()
    if name not in outs:
        raise BadInput(f"the job has no output {name}")
    return from_vm(outs[name])


__all__ = [
    "EncoderShape",
    "Job",
    "encoder_forward",
    "fedavg",
    "kth_largest_abs",
    "linear_merge",
    "masked_sum",
    "masked_sum_from_witness",
    "output_tensor",
    "task_arithmetic",
    "ties_merge",
    "ties_reference",
    "weighted_average",
]
