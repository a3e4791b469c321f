"""Weight matmuls whose Beaver mask is fixed per model load: ``W - B`` is opened once.

In CrypTen's Beaver matmul ``x @ W`` both operands are masked and opened on
every call: ``x - A`` (the activation, small) and ``W - B`` (the weight, large:
the embedding table alone is 30522 x 384). The weight does not change between
queries, so a mask ``B`` drawn once per model load can be reused: ``D = W - B``
is opened once (:class:`MaskedWeight`), and each query needs only a fresh
``A`` with ``C = A @ B``. Then, with ``E = x - A`` opened,

    x @ W = (E + A) @ (D + B) = C + E @ B + (A + E) @ D

where ``E @ B`` and ``A @ D`` are local products of a public and a shared
matrix. ``D`` hides ``W`` exactly as the per-query opening did (``B`` is
uniform and never opened); reusing ``B`` with fresh ``A`` reveals nothing new,
since ``D`` is the same value every time.

Who makes ``(A, C)`` for the fixed ``B`` depends on the tuple provider:

* ``TFP`` (CrypTen's dealer path): rank 0 draws ``B`` and each query's
  ``A``, computes ``C`` and shares them by pseudo-random zero sharing (no
  communication), as CrypTen's dealer does for ordinary triples;
* ``HE`` (:mod:`collab.he.provider`): each party draws its own share of
  ``B`` locally (so ``B`` is jointly random and unknown to both), and each
  query's ``(A, C)`` comes from the two-party BFV protocol with the party's
  fixed ``B`` share as the answerer's operand;
* other providers (the 3-party ``TTP``) keep CrypTen's per-query triples:
  :func:`supported` is False and the weights stay plain CrypTensors.
"""

from __future__ import annotations

from typing import Any

import torch

import collab.mpc.compat  # noqa: F401  (must precede crypten)
from collab.errors import InternalError

SUPPORTED = ("TFP", "HE")


def _provider_name() -> str:
    from crypten.config import cfg

    return str(cfg.mpc.provider)


def supported() -> bool:
    """Whether the current CrypTen session's provider can serve fixed-mask triples (2 parties)."""
    import crypten.communicator as comm

    return _provider_name() in SUPPORTED and comm.get().get_world_size() == 2


def _ring(size: tuple[int, ...]) -> torch.Tensor:
    from crypten.common.rng import generate_random_ring_element

    return generate_random_ring_element(size)


def _from_src0(tensor: torch.Tensor | None, size: tuple[int, ...]) -> Any:
    """A precision-0 sharing of rank 0's ``tensor`` by zero sharing (no communication)."""
    from crypten.mpc.primitives import ArithmeticSharedTensor

    return ArithmeticSharedTensor(tensor, size=size, precision=0, src=0)


class MaskedWeight:
    """A secret-shared weight ``W`` (in, out) with its mask ``B`` fixed and ``D = W - B`` public.

    Construction is collective (every party calls it with its share, in the
    same order): it opens ``D`` once, which is the only time the weight's
    size crosses the wire.
    """

    def __init__(self, weight: Any) -> None:
        import crypten.communicator as comm
        from crypten.mpc.primitives import ArithmeticSharedTensor

        if not supported():
            raise InternalError(f"fixed weight masks need a 2-party TFP or HE provider, not {_provider_name()}")
        share = weight._tensor  # ArithmeticSharedTensor at the encoder's scale
        self.shape = tuple(share.size())
        self.encoder = share.encoder
        self.rank = comm.get().get_rank()
        self.provider = _provider_name()
        if self.provider == "TFP":
            self._b_plain = _ring(self.shape) if self.rank == 0 else None
            self.b = _from_src0(self._b_plain, self.shape)
        else:
            self._b_plain = None
            self.b = ArithmeticSharedTensor.from_shares(_ring(self.shape), precision=0)
        self.delta = comm.get().all_reduce(share.share - self.b.share)

    def _triple(self, size: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """This party's shares of a fresh ``A`` of ``size`` and ``C = A @ B``."""
        if self.provider == "TFP":
            out_size = tuple(torch.empty(size, device="meta").matmul(torch.empty(self.shape, device="meta")).shape)
            a_plain = _ring(size) if self.rank == 0 else None
            c_plain = a_plain.matmul(self._b_plain) if self.rank == 0 else None  # type: ignore[union-attr]
            return _from_src0(a_plain, size).share, _from_src0(c_plain, out_size).share
        import crypten.mpc

        provider = crypten.mpc.get_default_provider()
        a, c = provider.fixed_matmul_triple(tuple(size), self.b.share)
        return a.share, c.share

    def rmatmul(self, x: Any) -> Any:
        """``x @ W`` for a secret-shared ``x`` (batch dims allowed), at ``x``'s fixed-point scale."""
        import crypten.communicator as comm

        xs = x._tensor
        a, c = self._triple(tuple(xs.size()))
        eps = comm.get().all_reduce(xs.share - a)
        left = a + eps if self.rank == 0 else a
        z = c + eps.matmul(self.b.share) + left.matmul(self.delta)
        out = xs.clone()
        out.share = z
        out.div_(self.encoder.scale)  # both operands carry the scale: truncate once, as CrypTen does
        return _wrap(x, out)


def _wrap(like: Any, tensor: Any) -> Any:
    out = like.shallow_copy()
    out._tensor = tensor
    return out


def masked(weight: Any) -> Any:
    """``weight`` as a :class:`MaskedWeight` when the provider supports it, else unchanged."""
    return MaskedWeight(weight) if supported() else weight


def matmul(x: Any, w: Any) -> Any:
    """``x @ w`` for a plain/shared ``w`` or a :class:`MaskedWeight`."""
    return w.rmatmul(x) if isinstance(w, MaskedWeight) else x.matmul(w)
