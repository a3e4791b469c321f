"""torch tensors / state dicts <-> VM tensors, with the quantisation error measured.

A claimed job stores the *dequantized VM output* (protocol §1.4), so the asset,
its vault blob and the claim commit to the same weights: ``from_vm`` is that
dequantisation, and ``state_dict_from_vm`` keeps each tensor's original dtype
and shape so the result loads back into the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from collab import fixedpoint as fx
from collab.errors import BadInput
from collab.fixedpoint import Domain, QuantError
from collab.fraudproof.commitments import name_hash
from collab.fraudproof.vm import Value, bundle, tensor


def to_vm(x: Any, f: int) -> tuple[Value, QuantError]:
    """Quantise a torch tensor / array to a FIXED VM tensor at ``f`` fractional bits, with its error."""
    arr = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    words = fx.to_fixed(arr, f)  # refuses NaN
    return tensor(words.reshape(arr.shape), Domain.FIXED, f), _error(arr, words, f)


def _error(arr: np.ndarray, words: np.ndarray, f: int) -> QuantError:
    """``fx.quantization_error(arr, f)`` from the words already computed (it would quantise a second time)."""
    if arr.size == 0:
        return QuantError(0.0, 0.0, 0)
    diff = fx.from_fixed(words, f) - arr
    saturated = int(np.count_nonzero((words == fx.INT64_MAX) | (words == fx.INT64_MIN)))
    return QuantError(float(np.abs(diff).max()), float(np.sqrt(np.mean(diff * diff))), saturated)


def from_vm(value: Value, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Dequantise a numeric VM tensor (RING words are read as fixed point at their f)."""
    if value.data is None:
        raise BadInput("a bundle has no numeric value; convert its entries")
    return torch.from_numpy(fx.from_fixed(value.data, value.header.frac_bits)).to(dtype)


def state_dict_to_vm(state: Mapping[str, Any], f: int) -> tuple[dict[str, Value], dict[str, QuantError]]:
    """Quantise every tensor of a state dict; returns the VM tensors and the per-tensor error."""
    values: dict[str, Value] = {}
    errors: dict[str, QuantError] = {}
    for name, t in state.items():
        values[name], errors[name] = to_vm(t, f)
    return values, errors


def state_dict_from_vm(values: Mapping[str, Value], like: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Dequantise VM tensors into a state dict (dtype of ``like``'s tensors, float32 otherwise)."""
    out: dict[str, torch.Tensor] = {}
    for name, v in values.items():
        ref = like.get(name) if like is not None else None
        dtype = ref.dtype if ref is not None else torch.float32
        t = from_vm(v)
        out[name] = (t.round() if not dtype.is_floating_point else t).to(dtype)
    return out


def state_dict_bundle(values: Mapping[str, Value]) -> Value:
    """The BUNDLE of a state dict's VM tensors (entries by name hash): its root is the asset's commitmentRoot."""
    if not values:
        raise BadInput("an empty state dict has no commitment")
    return bundle(sorted(((name_hash(n), v) for n, v in values.items()), key=lambda kv: kv[0]))


def max_error(errors: Mapping[str, QuantError]) -> dict[str, float | int]:
    """Summary over a state dict: worst max error, worst RMS, saturated element count."""
    if not errors:
        return {"max_abs": 0.0, "rms": 0.0, "saturated": 0}
    return {
        "max_abs": max(e.max_abs for e in errors.values()),
        "rms": max(e.rms for e in errors.values()),
        "saturated": sum(e.saturated for e in errors.values()),
    }


__all__ = ["from_vm", "max_error", "state_dict_bundle", "state_dict_from_vm", "state_dict_to_vm", "to_vm"]
