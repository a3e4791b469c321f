"""Local DP-SGD with Opacus on a LoRA model, with a guard against silently stalled adapters.

Opacus + peft has a known failure (opacus#820) where the loss and ε move but
the LoRA weights do not learn. :func:`train_dp` therefore checks after
training that a gradient signal reached every adapter tensor (the clipped
per-sample gradient sum, before noise: DP noise alone would move a tensor
that learns nothing), that every adapter tensor changed, and that the loss
on the local data fell, and raises :class:`TrainingStalled` otherwise: a
broken update must never be sent to the aggregator as if it were a
contribution. Under DP the loss may rise by :data:`DP_LOSS_TOLERANCE`: on a
short round the noise alone moves it (tiny test shards, noise 0.8, 2 steps:
14% of 90 rounds rose, by at most 0.8%), which is not the failure guarded.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from collab.errors import BadInput, InternalError
from collab.fl.data import Dataset
from collab.fl.task import encode, evaluate


DP_LOSS_TOLERANCE = 0.02  # relative rise of the local loss a noisy DP round may show


class TrainingStalled(InternalError):
    """DP-SGD ran but the adapters did not move or the loss did not fall."""


@dataclass(frozen=True)
class DPConfig:
    """DP-SGD hyper-parameters; ``noise_multiplier = 0`` means non-private (ε = ∞)."""

    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    batch_size: int = 16
    epochs: int = 1
    lr: float = 5e-3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):  # NaN compares False to 0
            raise BadInput(f"noise-multiplier must be a finite number >= 0, got {self.noise_multiplier!r}")
        if self.max_grad_norm <= 0 or self.batch_size < 1 or self.epochs < 1:
            raise BadInput(f"invalid DP-SGD config {self}")

    def batches(self, examples: int) -> int:
        return max(1, math.ceil(examples / self.batch_size))

    def sample_rate(self, examples: int) -> float:
        """Poisson sampling rate as Opacus derives it: 1 / (batches of the non-private loader)."""
        return 1.0 / self.batches(examples)

    def steps(self, examples: int) -> int:
        """Optimizer steps of one local round (Opacus draws ``int(1 / sample_rate)`` batches per epoch)."""
        return self.epochs * self.batches(examples)


@dataclass(frozen=True)
class TrainReport:
    """What one local round did: losses before/after on the local data, steps, largest adapter change."""

    loss_before: float
    loss_after: float
    steps: int
    sample_rate: float
    min_adapter_delta: float


def train_dp(model: nn.Module, data: Dataset, config: DPConfig, max_len: int, seed: int,
             on_step: Callable[[int], None] | None = None) -> TrainReport:
    """Run DP-SGD (hooks mode, optimizer over trainable parameters only) and check that it learned.

    ``on_step(batch size)`` is called after every optimizer step: a benchmark times steps with it, since
    subtracting whole trainings leaves set-up and evaluation noise of the size of the steps on a shared VM.
    """
    if len(data) < 2:
        raise BadInput("need at least 2 local examples to train")
    torch.manual_seed(seed)
    ids, mask, labels = encode(data, max_len)
    loader = DataLoader(TensorDataset(ids, mask, labels), batch_size=config.batch_size, shuffle=True)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    before = {n: p.detach().clone() for n, p in trainable}
    loss_before, _ = evaluate(model, data, max_len)
    optimizer = torch.optim.Adam([p for _, p in trainable], lr=config.lr)
    signal = dict.fromkeys(before, 0.0)  # largest |gradient before noise| each adapter tensor received
    steps = 0
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus warns about secure_mode and the RNG on every call
        if config.noise_multiplier > 0:
            engine = PrivacyEngine(accountant="rdp", secure_mode=False)
            module, optimizer, loader = engine.make_private(
                module=model,
                optimizer=optimizer,
                data_loader=loader,
                noise_multiplier=config.noise_multiplier,
                max_grad_norm=config.max_grad_norm,
                grad_sample_mode="hooks",
            )
        else:
            module = model
        module.train()
        for _ in range(config.epochs):
            for batch_ids, batch_mask, batch_y in loader:
                steps += 1  # an empty Poisson batch is still a step of the mechanism
                if len(batch_y) == 0:
                    continue
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(module(input_ids=batch_ids, attention_mask=batch_mask), batch_y)
                loss.backward()
                optimizer.step()
                if on_step is not None:
                    on_step(len(batch_y))
                for n, p in trainable:  # Opacus keeps the clipped sum (pre-noise) in summed_grad until zero_grad
                    grad = getattr(p, "summed_grad", None) if config.noise_multiplier > 0 else p.grad
                    if grad is not None:
                        signal[n] = max(signal[n], float(grad.detach().abs().max()))
        if config.noise_multiplier > 0:
            module._close()  # remove Opacus hooks so the plain model is reusable
    model.eval()
    deltas = {n: float((p.detach() - before[n]).abs().max()) for n, p in trainable}
    loss_after, _ = evaluate(model, data, max_len)
    report = TrainReport(loss_before, loss_after, steps, config.sample_rate(len(data)), min(deltas.values()))
    deaf = [n for n, g in signal.items() if not g > 0.0 and not _silent_by_design(n, before, steps)]
    if deaf:
        raise TrainingStalled(f"no gradient reached {len(deaf)} adapter tensor(s) (e.g. {deaf[0]}): "
                              "only noise would move them; not sending")
    stalled = [n for n, d in deltas.items() if not d > 0.0]
    if stalled:
        raise TrainingStalled(f"DP-SGD left {len(stalled)} adapter tensor(s) unchanged (e.g. {stalled[0]}); not sending")
    allowed = loss_before * (1 + DP_LOSS_TOLERANCE) if config.noise_multiplier > 0 else loss_before
    if not torch.isfinite(torch.tensor(loss_after)) or not loss_after < allowed:
        raise TrainingStalled(f"local loss did not fall under DP-SGD ({loss_before:.4f} -> {loss_after:.4f}); not sending")
    return report


def _silent_by_design(name: str, start: dict[str, torch.Tensor], steps: int) -> bool:
    """A LoRA ``A`` whose ``B`` started at zero (peft's init) gets no gradient until ``B`` has moved once."""
    partner = name.replace("lora_A", "lora_B")
    return steps < 2 and partner != name and partner in start and not bool(start[partner].any())
