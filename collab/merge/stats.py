"""Participant-side statistics for the data-aware merges, computed locally on private data.

Each participant turns its model and its private examples into a
:class:`Contribution`: a set of named tensors whose **sum over participants**
is all the merger needs (see :mod:`collab.merge.datamerge`). Nothing else
leaves the participant, and because only sums are needed the contributions can
be added under pairwise masks (``collab/secagg``) so that no single
participant's statistics are ever seen in the clear.

RegMean (Jin et al., ICLR 2023): for every ``nn.Linear`` the participant
records the Gram matrix of the layer's inputs ``G = XᵀX`` (inputs extended by a
constant 1 when the layer has a bias, so weight and bias are solved together),
shrinks its off-diagonal entries by ``alpha`` as the paper does
(``G' = alpha·G + (1 - alpha)·diag(G)``), and contributes ``w·G'`` and
``w·G'·[W b]ᵀ``. The shrinkage must happen before the product with the
participant's weights, which is why it is done here and not by the merger.
Parameters outside linear layers (embeddings, LayerNorm) are averaged:
``w·θ`` and ``w``.

Fisher merging (Matena & Raffel, NeurIPS 2022): the diagonal empirical Fisher
``F = mean over examples of (∂ log p(y|x) / ∂θ)²`` from per-example gradients,
floored by ``fisher_floor`` (as in the authors' code, so a parameter no example
moves falls back to plain averaging); contributes ``w·(F + floor)`` and
``w·(F + floor)·θ``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from collab.errors import BadInput, NotFound

REGMEAN = "regmean"
FISHER = "fisher"
GRAM = "gram::"  # G' of a linear layer (module name follows)
GRAM_W = "gram_w::"  # G'·[W b]ᵀ
AVG = "avg::"  # w·θ for parameters merged by weighted average
AVG_WEIGHT = "avg_weight"  # w
FISHER_F = "fisher::"  # w·(F + floor)
FISHER_FT = "fisher_theta::"  # w·(F + floor)·θ
FORMAT_VERSION = 1

Batch = Mapping[str, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
_RDP_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 256))


@dataclass(frozen=True)
class DPNoise:
    """Gaussian mechanism on one participant's statistics, so the sums also protect single examples.

    Each example's contribution is clipped (RegMean: Frobenius norm of its
    Gram ``Σ_t x_t x_tᵀ`` per layer to ``clip``; Fisher: L2 norm of its whole
    gradient to ``clip``, so its squared gradient has L2 norm <= clip²), then
    Gaussian noise of standard deviation ``noise_multiplier`` x sensitivity is
    added once to the released sums. The whole release is one Gaussian
    mechanism (RegMean's per-layer Grams compose into one of sensitivity
    ``clip·√layers``), and ``epsilon`` is computed with Opacus' RDP accountant
    at ``delta``. ``seed`` makes the noise reproducible (tests only; ``None``
    draws from the OS).
    """

    noise_multiplier: float
    clip: float
    delta: float = 1e-5
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0 or not self.clip > 0:
            raise BadInput("DP noise needs noise_multiplier > 0 and clip > 0")
        if not 0 < self.delta < 1:
            raise BadInput(f"DP delta must be in (0, 1), got {self.delta}")

    def epsilon(self) -> float:
        """ε of one Gaussian mechanism with this noise multiplier, at ``delta``."""
        from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

        rdp = compute_rdp(q=1.0, noise_multiplier=self.noise_multiplier, steps=1, orders=_RDP_ORDERS)
        eps, _ = get_privacy_spent(orders=_RDP_ORDERS, rdp=rdp, delta=self.delta)
        return float(eps)

    def generator(self) -> torch.Generator:
        """Noise source: seeded for tests, else seeded from the OS's randomness."""
        import secrets

        return torch.Generator().manual_seed(self.seed if self.seed is not None else secrets.randbits(63))

    def record(self, sensitivity: float) -> dict[str, float]:
        """What goes into the contribution's public metadata."""
        return {"epsilon": self.epsilon(), "delta": self.delta, "noise_multiplier": self.noise_multiplier,
                "clip": self.clip, "sensitivity": sensitivity, "sigma": self.noise_multiplier * sensitivity}


@dataclass
class Contribution:
    """One participant's additive terms for a data-aware merge (float64 tensors) and public metadata."""

    method: str
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path | str) -> Path:
        """Write as safetensors; method and metadata go in the header."""
        from safetensors.torch import save_file

        path = Path(path)
        header = {"collab_method": self.method, "collab_meta": json.dumps(self.meta, sort_keys=True),
                  "collab_format": str(FORMAT_VERSION)}
        save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(path), metadata=header)
        return path

    @classmethod
    def load(cls, path: Path | str) -> Contribution:
        """Read a file written by :meth:`save`; BadInput if it is not one."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise NotFound(f"statistics file {path} does not exist")
        try:
            with safe_open(str(path), framework="pt") as fh:
                header = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception as exc:  # noqa: BLE001 - safetensors raises several unrelated types for a bad file
            raise BadInput(f"{path} is not a statistics file: {' '.join(str(exc).split())}") from None
        method = header.get("collab_method")
        if method not in (REGMEAN, FISHER) or header.get("collab_format") != str(FORMAT_VERSION):
            raise BadInput(f"{path} is not a collab merge statistics file (no collab_method/format header)")
        return cls(method=method, tensors=tensors, meta=json.loads(header.get("collab_meta", "{}")))


def regmean_contribution(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    alpha: float = 0.9,
    weight: float = 1.0,
    include: Callable[[str], bool] | None = None,
    dp: DPNoise | None = None,
) -> Contribution:
    """Gram matrices of every linear layer's inputs on ``batches`` (``model(**batch)``), as RegMean terms.

    Padding positions are excluded when a batch carries ``attention_mask`` and
    the layer input has the mask's leading shape. ``include`` selects linear
    layers by module name (others are averaged like non-linear parameters).
    With ``dp``, each example's Gram is clipped and the summed Grams are
    noised before the shrinkage and the product with the weights (which are
    then post-processing); ε goes into ``meta["dp"]``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise BadInput(f"regmean alpha must be in [0, 1], got {alpha}")
    _check_weight(weight)
    linears = {name: mod for name, mod in model.named_modules()
               if isinstance(mod, nn.Linear) and (include is None or include(name))}
    grams: dict[str, torch.Tensor] = {}
    rows: dict[str, int] = {}
    mask_box: list[torch.Tensor | None] = [None]
    size_box = [0]

    def hook_for(name: str, layer: nn.Linear) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            x = (args[0] if args else kwargs["input"]).detach().to(torch.float64)
            if layer.bias is not None:
                x = torch.cat([x, torch.ones(*x.shape[:-1], 1, dtype=x.dtype)], dim=-1)
            mask = mask_box[0]
            if mask is not None and tuple(x.shape[:-1]) == tuple(mask.shape):
                x = x * mask.to(x.dtype)[..., None]  # padding rows become zero rows: no effect on XᵀX
                rows[name] = rows.get(name, 0) + int(mask.sum())
            else:
                rows[name] = rows.get(name, 0) + x[..., 0].numel()
            if dp is None:
                flat = x.reshape(-1, x.shape[-1])
                g = flat.T @ flat
            else:
                g = _clipped_gram(x, size_box[0], dp.clip, name)
            grams[name] = grams[name] + g if name in grams else g
        return hook

    handles = [mod.register_forward_pre_hook(hook_for(name, mod), with_kwargs=True) for name, mod in linears.items()]
    examples = 0
    try:
        with _eval_mode(model), torch.no_grad():
            for batch in batches:
                mask_box[0] = batch.get("attention_mask")
                size_box[0] = _batch_size(batch)
                model(**batch)
                examples += size_box[0]
    finally:
        for h in handles:
            h.remove()
    if examples == 0:
        raise BadInput("regmean statistics need at least one batch of examples")
    meta: dict[str, Any] = {"alpha": alpha, "examples": examples, "layers": len(grams), "rows": sum(rows.values())}
    if dp is not None:
        sensitivity = dp.clip * len(grams) ** 0.5
        gen = dp.generator()
        for name in sorted(grams):
            grams[name] = grams[name] + _symmetric_noise(grams[name].shape[0], dp.noise_multiplier * sensitivity, gen)
        meta["dp"] = dp.record(sensitivity)
    tensors: dict[str, torch.Tensor] = {}
    covered: set[str] = set()
    for name, g in grams.items():
        layer = linears[name]
        shrunk = alpha * g + (1.0 - alpha) * torch.diag(torch.diagonal(g))
        w_aug = layer.weight.detach().to(torch.float64).T  # [in, out]
        covered.add(param_key(name, "weight"))
        if layer.bias is not None:
            w_aug = torch.cat([w_aug, layer.bias.detach().to(torch.float64)[None, :]], dim=0)
            covered.add(param_key(name, "bias"))
        tensors[GRAM + name] = weight * shrunk
        tensors[GRAM_W + name] = weight * (shrunk @ w_aug)
    for key, value in model.state_dict().items():
        if key not in covered and value.is_floating_point():
            tensors[AVG + key] = weight * value.detach().to(torch.float64)
    tensors[AVG_WEIGHT] = torch.tensor([float(weight)], dtype=torch.float64)
    return Contribution(method=REGMEAN, tensors=tensors, meta=meta)


def fisher_contribution(
    model: nn.Module,
    batches: Iterable[Batch],
    loss_fn: LossFn | None = None,
    *,
    weight: float = 1.0,
    fisher_floor: float = 1e-6,
    dp: DPNoise | None = None,
) -> Contribution:
    """Diagonal empirical Fisher from per-example squared gradients, as Fisher-merge terms.

    ``loss_fn(model, batch)`` returns the per-example negative log-likelihood
    (shape ``[batch]``); the default reads ``labels`` from the batch and uses
    the model's ``logits`` (classification). Gradients are taken one example
    at a time, so the Fisher is the per-example one the paper defines, not the
    square of a batch-mean gradient. With ``dp``, each example's gradient is
    clipped to L2 norm ``dp.clip`` and the summed squares are noised (then
    clamped at 0, post-processing) before dividing by the example count.
    """
    if fisher_floor < 0:
        raise BadInput(f"fisher_floor must be >= 0, got {fisher_floor}")
    _check_weight(weight)
    loss_fn = loss_fn or classification_nll
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise BadInput("fisher statistics need trainable parameters (requires_grad)")
    sq = {name: torch.zeros_like(p, dtype=torch.float64) for name, p in params.items()}
    examples = 0
    with _eval_mode(model):
        for batch in batches:
            for single in _split(batch):
                loss = loss_fn(model, single).reshape(-1)
                if loss.numel() != 1:
                    raise BadInput(f"loss_fn must return one loss per example, got shape {tuple(loss.shape)}")
                grads = torch.autograd.grad(loss[0], list(params.values()), allow_unused=True)
                scale = 1.0
                if dp is not None:
                    norm = sum(float((g.detach().to(torch.float64) ** 2).sum()) for g in grads if g is not None) ** 0.5
                    scale = min(1.0, dp.clip / norm) if norm > 0 else 1.0
                for (name, _), g in zip(params.items(), grads):
                    if g is not None:
                        sq[name] += (scale * g.detach().to(torch.float64)) ** 2
                examples += 1
    if examples == 0:
        raise BadInput("fisher statistics need at least one example")
    meta: dict[str, Any] = {"fisher_floor": fisher_floor, "examples": examples}
    if dp is not None:
        sensitivity = dp.clip**2
        gen = dp.generator()
        for name in sorted(sq):
            noise = torch.randn(sq[name].shape, generator=gen, dtype=torch.float64) * dp.noise_multiplier * sensitivity
            sq[name] = (sq[name] + noise).clamp_min(0.0)
        meta["dp"] = dp.record(sensitivity)
    tensors: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if not value.is_floating_point():
            continue
        theta = value.detach().to(torch.float64)
        fisher = sq[key] / examples if key in sq else torch.zeros_like(theta)
        f = weight * (fisher + fisher_floor)
        tensors[FISHER_F + key] = f
        tensors[FISHER_FT + key] = f * theta
    return Contribution(method=FISHER, tensors=tensors, meta=meta)


def param_key(module_name: str, param: str) -> str:
    """State-dict key of a module's parameter (the root module has an empty name)."""
    return f"{module_name}.{param}" if module_name else param


def classification_nll(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Per-example ``-log p(label | x)`` from ``model(**inputs).logits`` (labels from the batch)."""
    if "labels" not in batch:
        raise BadInput("the default Fisher loss needs `labels` in every batch")
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = model(**inputs)
    logits = out.logits if hasattr(out, "logits") else out
    return torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="none")


def _clipped_gram(x: torch.Tensor, batch_size: int, clip: float, layer: str) -> torch.Tensor:
    """Σ over examples of each example's Gram, each scaled down to Frobenius norm <= clip."""
    if x.dim() < 2 or x.shape[0] != batch_size:
        raise BadInput(f"DP RegMean needs layer {layer or '<root>'}'s input to lead with the batch axis "
                       f"({batch_size} examples), got shape {list(x.shape)}")
    per = x.reshape(batch_size, -1, x.shape[-1])
    grams = torch.einsum("bti,btj->bij", per, per)
    norms = torch.linalg.matrix_norm(grams)  # Frobenius
    factors = torch.clamp(clip / torch.clamp(norms, min=1e-300), max=1.0)
    return (grams * factors[:, None, None]).sum(dim=0)


def _symmetric_noise(d: int, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """N(0, σ²) on the upper triangle (diagonal included), mirrored: a symmetric matrix release."""
    upper = torch.triu(torch.randn(d, d, generator=gen, dtype=torch.float64) * sigma)
    return upper + torch.triu(upper, diagonal=1).T


def _split(batch: Batch) -> Iterator[Batch]:
    n = _batch_size(batch)
    for i in range(n):
        yield {k: v[i:i + 1] for k, v in batch.items()}


def _batch_size(batch: Batch) -> int:
    if not batch:
        raise BadInput("empty batch")
    sizes = {int(v.shape[0]) for v in batch.values()}
    if len(sizes) != 1:
        raise BadInput(f"batch tensors disagree on the batch size: {sorted(sizes)}")
    return sizes.pop()


def _check_weight(weight: float) -> None:
    if not weight > 0:
        raise BadInput(f"participant weight must be > 0, got {weight}")


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Statistics of the deployed model: dropout off, training flag restored afterwards."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)
