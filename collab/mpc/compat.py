"""CrypTen 0.4 on torch 2.13: the import and export shims, applied once.

CrypTen was written for torch 1.x. Two things broke since, and every process
that runs CrypTen (the party processes too: they do not see pytest's conftest)
must import this module before its first ``import crypten``:

* ``crypten.nn.onnx_converter`` imports ``torch.onnx._internal.registration``,
  which moved to ``torch.onnx._internal.torchscript_exporter.registration``;
  we alias the old name (a no-op on a torch that still has it).
* ``crypten.nn.from_pytorch`` calls ``torch.onnx.export``, which now defaults
  to the dynamo exporter and needs ``onnxscript`` (not installed on purpose);
  :func:`torchscript_onnx_export` makes ``dynamo=False`` the default while it
  is active.

It also bounds the torch.distributed timeouts CrypTen never sets (gloo's
default is 30 minutes), so that a dead peer fails a job instead of hanging it:
see :func:`set_collective_timeout`; and every party body starts CrypTen with
:func:`init_crypten`, which drops a per-access debug check from CrypTensor
attribute lookups (:func:`skip_attribute_validation`) and decodes negative
fixed-point values exactly (:func:`exact_fixed_point_decode`).

This module is a leaf (layer 0): it imports only torch and the standard
library at import time (CrypTen only inside the functions that start it).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import importlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.onnx

_OLD_REGISTRATION = "torch.onnx._internal.registration"
_NEW_REGISTRATION = "torch.onnx._internal.torchscript_exporter.registration"

#: Timeout applied to process-group creation and every collective/p2p op.
_collective_timeout = datetime.timedelta(seconds=120)


def _alias_onnx_registration() -> None:
    """Make the pre-2.9 module path of torch's ONNX symbolic registry importable."""
    try:
        importlib.import_module(_OLD_REGISTRATION)
    except ImportError:
        sys.modules[_OLD_REGISTRATION] = importlib.import_module(_NEW_REGISTRATION)


def _with_default_timeout(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a torch.distributed group constructor so an omitted timeout is ours."""
    if getattr(fn, "_collab_timeout_wrapped", False):
        return fn

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = _collective_timeout
        return fn(*args, **kwargs)

    wrapper._collab_timeout_wrapped = True  # type: ignore[attr-defined]
    return wrapper


def set_collective_timeout(seconds: float) -> None:
    """Bound rendezvous and every gloo send/recv/collective to ``seconds``.

    CrypTen creates its process groups without a timeout, so a party whose peer
    died would block for gloo's default 30 minutes. Call this before
    ``crypten.init()``.
    """
    global _collective_timeout
    if seconds <= 0:
        raise ValueError("timeout must be positive")
    _collective_timeout = datetime.timedelta(seconds=seconds)


@contextlib.contextmanager
def torchscript_onnx_export() -> Iterator[None]:
    """Within the block, ``torch.onnx.export`` defaults to the TorchScript exporter.

    Wrap calls to ``crypten.nn.from_pytorch`` in it; the dynamo exporter would
    need ``onnxscript``.
    """
    original = torch.onnx.export

    @functools.wraps(original)
    def export(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("dynamo", False)
        return original(*args, **kwargs)

    torch.onnx.export = export  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.onnx.export = original  # type: ignore[assignment]


def skip_attribute_validation() -> None:
    """CrypTensor attribute lookups without CrypTen's debug check (idempotent).

    CrypTen wraps ``CrypTensor.__getattribute__`` in ``register_validation``,
    which reads ``cfg.debug.validation_mode`` on *every* attribute access: an
    omegaconf lookup of ~75 µs, ~24,000 times in a seq-32 MiniLM query, i.e.
    ~0.8 s of a 4.2 s online phase on this machine (measured with cProfile and
    A/B runs, `docs/secure_inference.md`). collab never turns validation mode
    on; if it is on when this runs, nothing changes. Turning it on later in a
    party process has no effect.
    """
    from crypten.config import cfg
    from crypten.cryptensor import CrypTensor

    lookup = CrypTensor.__getattribute__
    if cfg.debug.validation_mode or not hasattr(lookup, "__wrapped__"):
        return
    CrypTensor.__getattribute__ = lookup.__wrapped__  # type: ignore[method-assign]


def exact_fixed_point_decode() -> None:
    """CrypTen's fixed-point decode without its off-by-one for negative values (idempotent).

    CrypTen 0.4.1's ``FixedPointEncoder.decode`` floors a negative encoding by
    ``scale - 1`` instead of ``scale``, so a value in (-k, -k + (k-1)/scale]
    for an integer k >= 2 comes out exactly 1.0 too low (-131071 at 16 bits,
    i.e. -1.99998, decodes to -2.99998). Every opened output goes through it:
    the client's embedding, the benchmark's layer probes (where it showed as
    rare hidden-state errors of ~1.0, `docs/secure_inference.md`). The
    replacement splits the encoding exactly into floor(t / scale) and the
    remainder, as the original meant to.
    """
    from crypten.common.tensor_types import is_int_tensor
    from crypten.encoder import FixedPointEncoder

    original = FixedPointEncoder.decode
    if getattr(original, "_collab_exact", False):
        return

    @functools.wraps(original)
    def decode(self: Any, tensor: Any) -> Any:
        if tensor is None or self._scale <= 1 or not is_int_tensor(tensor):
            return original(self, tensor)
        whole = tensor.div(self._scale, rounding_mode="floor")
        return (whole.float() + (tensor - whole * self._scale).float() / self._scale).data

    decode._collab_exact = True  # type: ignore[attr-defined]
    FixedPointEncoder.decode = decode  # type: ignore[method-assign]


def init_crypten() -> None:
    """``crypten.init()`` as every party body runs it: the lookups above, an exact decode, then CrypTen's
    traffic accounting on."""
    import crypten
    from crypten.config import cfg

    skip_attribute_validation()
    exact_fixed_point_decode()
    crypten.init()
    cfg.communicator.verbose = True


def apply() -> None:
    """Install every shim; idempotent, and run on import of this module."""
    _alias_onnx_registration()
    dist.init_process_group = _with_default_timeout(dist.init_process_group)
    dist.new_group = _with_default_timeout(dist.new_group)


apply()
