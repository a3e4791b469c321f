"""Merger side of RegMean and Fisher merging: merged weights from the sums of contributions only.

Both methods are ratios of sums over participants (see :mod:`collab.merge.stats`):

* RegMean, per linear layer: ``[W* b*]ᵀ = (Σ_i G'_i)⁻¹ · Σ_i G'_i [W_i b_i]ᵀ``,
  the minimiser of ``Σ_i ||X_i W − X_i W_i||²`` (with alpha = 1); other
  parameters ``Σ w_i θ_i / Σ w_i``.
* Fisher: ``θ* = Σ_i (F_i + ε) θ_i / Σ_i (F_i + ε)`` elementwise.

So the merger consumes one summed tensor per name and never needs a
participant's own statistics. How the sum is formed is a :class:`SumCollector`:
:class:`PlainSum` adds float64 tensors in the clear (a merger that holds the
statistics itself, and tests); :class:`RingSum` encodes every contribution in
fixed point (``collab.fixedpoint``) and adds in Z_2^64, which is exactly the
arithmetic of pairwise-masked secure aggregation; :class:`SecAggSum` runs a
real SecAgg/SecAgg+ round (``collab.secagg``) in which the merger sees only
masked vectors, and its total is the very same integers as :class:`RingSum`'s
because the masks cancel in the ring.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from collab import fixedpoint as fx
from collab.errors import BadInput
from collab.hflog import quiet_transformers
from collab.merge.config import MergeSpec
from collab.merge.mergekit_merge import (
    MergeResult,
    MethodInfo,
    ParamInfo,
    _sha256_files,
    check_out_dir,
    staging_dir,
    weight_shapes,
)
from collab.merge.stats import (
    AVG,
    AVG_WEIGHT,
    FISHER,
    FISHER_F,
    FISHER_FT,
    GRAM,
    GRAM_W,
    REGMEAN,
    Contribution,
    param_key,
)

DEFAULT_FRAC_BITS = 24


class SumCollector(Protocol):
    """Turns the participants' contributions into one summed tensor per name."""

    @property
    def name(self) -> str:
        """Short label recorded in merge results (plain, ring, secagg)."""
        ...

    def total(self, contributions: Sequence[Contribution]) -> dict[str, torch.Tensor]:
        """Σ over participants for every name (all contributions have the same names and shapes)."""
        ...


@dataclass(frozen=True)
class PlainSum:
    """Float64 sum in the clear: for a merger that holds the statistics anyway."""

    name: str = "plain"

    def total(self, contributions: Sequence[Contribution]) -> dict[str, torch.Tensor]:
        """Elementwise float64 sum."""
        check_contributions(contributions)
        return {k: sum((c.tensors[k].to(torch.float64) for c in contributions[1:]),
                       contributions[0].tensors[k].to(torch.float64).clone())
                for k in contributions[0].tensors}


@dataclass(frozen=True)
class RingSum:
    """Fixed-point sum in Z_2^64: the exact arithmetic a pairwise-masked sum performs.

    Each value is quantised to ``frac_bits`` fractional bits (round half to
    even) and the words are added with wraparound; the total is decoded once.
    Because a wrapped sum is silently wrong, every contribution is first
    checked to stay within ``2^(63 - frac_bits) / n`` in magnitude.
    """

    frac_bits: int = DEFAULT_FRAC_BITS
    name: str = "ring"

    def encode(self, contribution: Contribution, parties: int) -> dict[str, np.ndarray]:
        """One participant's words (what it would mask and send)."""
        limit = 2.0 ** (62 - self.frac_bits) / max(parties, 1)
        out = {}
        for key, value in contribution.tensors.items():
            arr = value.detach().to(torch.float64).numpy()
            peak = float(np.abs(arr).max()) if arr.size else 0.0
            if not np.isfinite(peak) or peak >= limit:
                raise BadInput(f"statistic {key} reaches {peak:.3g}, beyond the ring sum's range "
                               f"{limit:.3g} at {self.frac_bits} fractional bits for {parties} parties",
                               hint="lower frac_bits or normalise the statistics")
            out[key] = fx.to_fixed(arr, self.frac_bits)
        return out

    def total(self, contributions: Sequence[Contribution]) -> dict[str, torch.Tensor]:
        """Encode, add in the ring, decode."""
        check_contributions(contributions)
        words = [self.encode(c, len(contributions)) for c in contributions]
        return {k: torch.from_numpy(fx.from_fixed(fx.ring_sum_array([w[k] for w in words]), self.frac_bits))
                for k in words[0]}


@dataclass
class SecAggSum:
    """The sum through a real SecAgg/SecAgg+ round (``collab.secagg``): pairwise masks cancel in Z_2^64.

    Each contribution is flattened (names in sorted order), encoded at
    ``frac_bits`` and masked by its own :class:`~collab.secagg.SecAggParticipant`;
    the server side sees only masked vectors and unmasks the total. This
    in-process form runs every party in one process (single-machine merges,
    tests); the node/orchestrator carry the same messages over the network.
    ``accounts`` are the participants' identity accounts in contribution order
    (fresh throwaway accounts when omitted). With dropouts the total covers
    the survivors only, and so does every RegMean/Fisher ratio built from it.
    """

    frac_bits: int = DEFAULT_FRAC_BITS
    accounts: Sequence[Any] | None = None
    threshold: int | None = None
    neighbours: int | None = None
    round_id: bytes | None = None
    drop_before: Mapping[int, str] | None = None
    name: str = "secagg"
    last_result: Any = None

    def total(self, contributions: Sequence[Contribution]) -> dict[str, torch.Tensor]:
        """Run one secure-aggregation round over the flattened contributions and unflatten the sum."""
        import os

        from eth_account import Account
        from eth_hash.auto import keccak

        from collab.secagg import Member, RoundConfig, run_local_round

        check_contributions(contributions)
        if len(contributions) < 2:
            raise BadInput("secure aggregation needs at least two participants' statistics")
        names = sorted(contributions[0].tensors)
        shapes = [tuple(contributions[0].tensors[k].shape) for k in names]
        ring = RingSum(self.frac_bits)
        words = [ring.encode(c, len(contributions)) for c in contributions]
        vectors = [np.concatenate([w[k].reshape(-1) for k in names]) for w in words]
        accounts = list(self.accounts) if self.accounts is not None else [Account.create() for _ in contributions]
        if len(accounts) != len(contributions):
            raise BadInput(f"{len(accounts)} accounts for {len(contributions)} contributions")
        members = tuple(Member(i + 1, a.address) for i, a in enumerate(accounts))
        n = len(members)
        holders = n if self.neighbours is None or self.neighbours >= n - 1 else self.neighbours + 1  # N(u) ∪ {u}
        threshold = self.threshold if self.threshold is not None else holders // 2 + 1
        config = RoundConfig(
            round_id=self.round_id or keccak(b"collab-merge-stats" + os.urandom(32)),
            members=members, threshold=threshold, length=int(vectors[0].shape[0]), frac_bits=self.frac_bits,
            neighbours=self.neighbours,
        )
        result = run_local_round(config, {m.id: a for m, a in zip(members, accounts)},
                                 {m.id: v for m, v in zip(members, vectors)}, drop_before=self.drop_before)
        self.last_result = result
        flat = fx.from_fixed(result.words, self.frac_bits)
        out: dict[str, torch.Tensor] = {}
        offset = 0
        for key, shape in zip(names, shapes):
            size = int(np.prod(shape)) if shape else 1
            out[key] = torch.from_numpy(flat[offset:offset + size].reshape(shape).copy())
            offset += size
        return out


def check_contributions(contributions: Sequence[Contribution]) -> None:
    """Same method, same public parameters, same names and shapes, or BadInput naming the first difference."""
    if not contributions:
        raise BadInput("no statistics to merge")
    first = contributions[0]
    shared_meta = ("alpha", "fisher_floor")
    for i, c in enumerate(contributions[1:], start=1):
        if c.method != first.method:
            raise BadInput(f"statistics {i} are for {c.method} but statistics 0 are for {first.method}")
        for key in shared_meta:
            if c.meta.get(key) != first.meta.get(key):
                raise BadInput(f"statistics {i} use {key}={c.meta.get(key)} but statistics 0 use {first.meta.get(key)}")
        missing = sorted(set(first.tensors) ^ set(c.tensors))
        if missing:
            raise BadInput(f"statistics {i} and 0 cover different tensors (e.g. {_strip(missing[0])})",
                           hint="every participant must compute statistics on the same architecture")
        for key, value in c.tensors.items():
            if tuple(value.shape) != tuple(first.tensors[key].shape):
                raise BadInput(f"shape mismatch for {_strip(key)}: {list(first.tensors[key].shape)} in statistics 0 "
                               f"but {list(value.shape)} in statistics {i}")


def regmean_merge(sums: Mapping[str, torch.Tensor], template: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Merged state dict from summed RegMean terms; names the sums lack keep the template's value."""
    out = {k: v.clone() for k, v in template.items()}
    if AVG_WEIGHT not in sums:
        raise BadInput("regmean sums lack the participant weight total")
    total_weight = float(sums[AVG_WEIGHT].reshape(-1)[0])
    if not total_weight > 0:
        raise BadInput("regmean: the participant weights sum to zero")
    for key, value in sums.items():
        if key.startswith(GRAM):
            layer = key[len(GRAM):]
            solved = _solve(value, sums[GRAM_W + layer])  # [in(+1), out]
            w_key, b_key = param_key(layer, "weight"), param_key(layer, "bias")
            _expect(template, w_key)
            n_in = template[w_key].shape[1]
            out[w_key] = solved[:n_in].T.contiguous().to(template[w_key].dtype)
            if solved.shape[0] == n_in + 1:
                _expect(template, b_key)
                out[b_key] = solved[n_in].contiguous().to(template[b_key].dtype)
        elif key.startswith(AVG):
            name = key[len(AVG):]
            _expect(template, name)
            out[name] = (value / total_weight).to(template[name].dtype)
    return out


def fisher_merge(sums: Mapping[str, torch.Tensor], template: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Merged state dict ``Σ F θ / Σ F`` from summed Fisher terms (template fills the rest)."""
    out = {k: v.clone() for k, v in template.items()}
    for key, value in sums.items():
        if not key.startswith(FISHER_F):
            continue
        name = key[len(FISHER_F):]
        _expect(template, name)
        denom = value
        if bool((denom <= 0).any()):
            raise BadInput(f"fisher: summed Fisher of {name} is not positive everywhere (set fisher_floor > 0)")
        out[name] = (sums[FISHER_FT + name] / denom).to(template[name].dtype)
    return out


def merge_contributions(
    contributions: Sequence[Contribution],
    template: Mapping[str, torch.Tensor],
    collector: SumCollector | None = None,
) -> dict[str, torch.Tensor]:
    """Sum the contributions with ``collector`` (default :class:`PlainSum`) and solve the merge."""
    chosen: SumCollector = collector or PlainSum()
    sums = chosen.total(contributions)
    method = contributions[0].method
    if method == REGMEAN:
        return regmean_merge(sums, template)
    if method == FISHER:
        return fisher_merge(sums, template)
    raise BadInput(f"unknown statistics method {method!r}")


def run_data_merge(spec: MergeSpec, out_dir: Path | str, *, collector: SumCollector | None = None) -> MergeResult:
    """RegMean/Fisher merge of the statistics files in ``spec`` onto ``spec.base``'s architecture."""
    import transformers  # lazily: statistics-only users never pay for it

    if not spec.is_data_aware or spec.base is None or spec.base.path is None:
        raise BadInput("a data-aware merge needs regmean/fisher, statistics files and a local base_model")
    spec.check_paths()
    _check_data_parameters(spec)
    out = check_out_dir(out_dir)
    started = time.perf_counter()
    contributions = [Contribution.load(m.statistics) for m in spec.models if m.statistics is not None]
    wrong = [m.label for m, c in zip(spec.models, contributions) if c.method != spec.method]
    if wrong:
        raise BadInput(f"{wrong[0]} holds statistics for another method than {spec.method}")
    with quiet_transformers():
        config = transformers.AutoConfig.from_pretrained(str(spec.base.path))
        arch = (config.architectures or ["AutoModel"])[0]
        model_cls = getattr(transformers, arch, None) or transformers.AutoModel
        model = model_cls.from_pretrained(str(spec.base.path), dtype=torch.float32)
    template = model.state_dict()
    _check_against_template(contributions[0], template)
    chosen: SumCollector = collector or PlainSum()
    merged = merge_contributions(contributions, template, chosen)
    model.load_state_dict(merged)
    with staging_dir(out) as stage:
        model.save_pretrained(str(stage), safe_serialization=True)
    shapes = weight_shapes(out)
    return MergeResult(
        method=spec.method,
        out_dir=out,
        inputs=tuple(m.label for m in spec.models),
        tensors=len(shapes),
        parameters=sum(int(np.prod(s)) for s in shapes.values()),
        weights_sha256=_sha256_files(sorted(out.glob("*.safetensors"))),
        seconds=time.perf_counter() - started,
        details={"engine": "collab", "collector": chosen.name, "participants": len(contributions),
                 "statistics": {k: v for k, v in contributions[0].meta.items() if k in ("alpha", "fisher_floor")}
                 | {"examples": [c.meta.get("examples") for c in contributions],
                    "dp": [c.meta.get("dp") for c in contributions]}},
    )


def _check_data_parameters(spec: MergeSpec) -> None:
    if spec.parameters or any(m.parameters for m in spec.models):
        raise BadInput(f"{spec.method} takes its parameters (alpha, weight, fisher_floor) when each participant "
                       "computes its statistics, not in the merge config")


def _check_against_template(contribution: Contribution, template: Mapping[str, Any]) -> None:
    for key, value in contribution.tensors.items():
        for prefix in (AVG, FISHER_F, FISHER_FT):
            if key.startswith(prefix):
                name = key[len(prefix):]
                _expect(template, name)
                if tuple(template[name].shape) != tuple(value.shape):
                    raise BadInput(f"shape mismatch for {name}: {list(value.shape)} in the statistics "
                                   f"but {list(template[name].shape)} in base_model")
        if key.startswith(GRAM_W):
            layer = key[len(GRAM_W):]
            _expect(template, param_key(layer, "weight"))
            out_f, in_f = template[param_key(layer, "weight")].shape
            if value.shape[1] != out_f or value.shape[0] not in (in_f, in_f + 1):
                raise BadInput(f"shape mismatch for {layer}: statistics for {list(value.shape)} "
                               f"but base_model has a [{out_f}, {in_f}] weight")


def _solve(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Least-squares solve of ``gram · X = rhs`` (min-norm when an input direction was never seen)."""
    gram = gram.to(torch.float64)
    rhs = rhs.to(torch.float64)
    solution: torch.Tensor
    try:
        solution = torch.linalg.solve(gram, rhs)
    except RuntimeError:  # singular: a dead input feature; fall back to the min-norm solution
        solution = torch.linalg.lstsq(gram, rhs, driver="gelsd").solution
    return solution


def _expect(template: Mapping[str, Any], name: str) -> None:
    if name not in template:
        raise BadInput(f"the statistics include tensor {name}, which base_model does not have",
                       hint="compute statistics on a model of base_model's architecture")


def _strip(key: str) -> str:
    return key.split("::", 1)[-1]


def data_methods() -> list[MethodInfo]:
    """RegMean and Fisher as ``collab merge methods`` lists them (parameters are set per participant)."""
    weight = ParamInfo("weight", "participant", "float", 1.0, False)
    return [
        MethodInfo(
            name=REGMEAN, title="RegMean", engine="collab", base="required", inputs="statistics",
            parameters=(ParamInfo("alpha", "participant", "float", 0.9, False), weight),
            reference="https://arxiv.org/abs/2212.09849",
            notes="statistics: Gram matrices of linear-layer inputs (collab.merge.regmean_contribution); "
                  "merged from their sums",
        ),
        MethodInfo(
            name=FISHER, title="Fisher-weighted averaging", engine="collab", base="required", inputs="statistics",
            parameters=(ParamInfo("fisher_floor", "participant", "float", 1e-6, False), weight),
            reference="https://arxiv.org/abs/2111.09832",
            notes="statistics: diagonal empirical Fisher (collab.merge.fisher_contribution); merged from their sums",
        ),
    ]
