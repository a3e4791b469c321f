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
* ``TTP`` (3 parties: the helper deals): each party draws its share of
  ``B`` from the generator it shares with the helper, and the helper, which
  regenerates those shares, keeps ``B`` for the session
  (:func:`install_ttp_server` adds the two requests ``fixed_mask`` and
  ``fixed_matmul`` to CrypTen's ``TTPServer``); per query it deals ``A`` and
  ``C = A @ B`` like any other triple. The helper already knows every tuple,
  so keeping ``B`` gives it nothing new.
"""

from __future__ import annotations

from typing import Any

import torch

import collab.mpc.compat  # noqa: F401  (must precede crypten)
from collab.errors import InternalError

SUPPORTED = ("TFP", "HE", "TTP")


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
            raise InternalError(f"fixed weight masks need a 2-party TFP, HE or TTP provider, not {_provider_name()}")
        share = weight._tensor  # ArithmeticSharedTensor at the encoder's scale
        self.shape = tuple(share.size())
        self.encoder = share.encoder
        self.rank = comm.get().get_rank()
        self.provider = _provider_name()
        self.key = _next_key()  # the helper's name for B (TTP); same construction order on every party
        if self.provider == "TFP":
            self._b_plain = _ring(self.shape) if self.rank == 0 else None
            self.b = _from_src0(self._b_plain, self.shape)
        elif self.provider == "TTP":
            from crypten.mpc.provider.ttp_provider import TTPClient

            self._b_plain = None
            b_share = _ring_from(self.shape, TTPClient.get().get_generator())
            if self.rank == 0:
                TTPClient.get().ttp_request("fixed_mask", None, self.key, self.shape)
            self.b = ArithmeticSharedTensor.from_shares(b_share, precision=0)
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
        if self.provider == "TTP":
            from crypten.mpc.provider.ttp_provider import TTPClient

            gen = TTPClient.get().get_generator()
            a_share = _ring_from(size, gen)  # drawn before C, in the order the helper regenerates them
            if self.rank == 0:
                return a_share, TTPClient.get().ttp_request("fixed_matmul", None, self.key, tuple(size))
            return a_share, _ring_from(_matmul_size(size, self.shape), gen)
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


_KEYS = [0]


def _next_key() -> int:
    _KEYS[0] += 1
    return _KEYS[0]


def _ring_from(size: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    from crypten.common.rng import generate_random_ring_element

    return generate_random_ring_element(size, generator=generator)


def _matmul_size(size0: tuple[int, ...], size1: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(torch.empty(size0, device="meta").matmul(torch.empty(size1, device="meta")).shape)


def install_ttp_server() -> None:
    """Teach CrypTen's ``TTPServer`` (the helper process) the fixed-mask requests; call before ``TTPServer()``.

    ``fixed_mask`` regenerates every party's share of ``B`` and keeps the sum;
    ``fixed_matmul`` regenerates the shares of a fresh ``A`` and returns rank
    0's share of ``C = A @ B`` (the others draw theirs from their generators),
    exactly as CrypTen's own ``additive`` request does for a fresh ``B``.
    """
    from crypten.mpc.provider.ttp_provider import TTPServer

    def fixed_mask(self: Any, key: int, size: tuple[int, ...]) -> torch.Tensor:
        if not hasattr(self, "_fixed_b"):
            self._fixed_b = {}
        self._fixed_b[key] = self._get_additive_PRSS(size)
        return torch.zeros(1, dtype=torch.long)

    def fixed_matmul(self: Any, key: int, size0: tuple[int, ...]) -> torch.Tensor:
        a = self._get_additive_PRSS(size0)
        c = a.matmul(self._fixed_b[key])
        return c - self._get_additive_PRSS(c.size(), remove_rank=True)

    TTPServer.fixed_mask = fixed_mask  # type: ignore[attr-defined]
    TTPServer.fixed_matmul = fixed_matmul  # type: ignore[attr-defined]


HELD_PROVIDERS = ("TFP", "HE")
MATMUL_FIELDS = ("q_w", "k_w", "v_w", "o_w", "ff1_w", "ff2_w")


def held_names(shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """The flat weight names (:func:`collab.mpc.encoder.weight_shapes`) that multiply activations as matmuls."""
    return [k for k in shapes if k.startswith("word.") or k.rsplit(".", 1)[-1] in MATMUL_FIELDS]


def encode_held(weight: torch.Tensor) -> torch.Tensor:
    """The owner's plaintext weight at CrypTen's fixed-point scale: computed once per model load."""
    from crypten.encoder import FixedPointEncoder

    return FixedPointEncoder().encode(weight.float())


class OwnerHeldWeight:
    """A weight the owner holds in the clear and never shares: its fixed mask is the weight itself.

    The persistent owner party (:mod:`collab.mpc.persistent`) serves each
    query to a *fresh* client process, which cannot keep a ``D = W - B``
    opened at model load. But the owner knows ``W``, so its fixed mask can be
    held by the owner alone: ``B = W`` (all on the owner's side), ``D = 0``,
    and nothing about the weight is ever opened. Each query's triple is a
    fresh shared ``A`` with ``C = A @ W``; the client's share of ``x - A``
    goes to the owner only (half the bytes of an opening), and

        x @ W = C + (x - A) @ W      (owner: c0 + E @ W, client: c1).

    ``E = x - A`` hides ``x`` from the owner as any Beaver opening does
    (``A`` is fresh per query and unknown to it; on the dealer path ``TFP``
    the owner deals ``A`` and could unmask, as for every TFP triple). The
    client sees only its shares of ``A`` and ``C``, uniform. Triples: ``TFP``
    the owner draws ``A`` and computes ``C`` locally; ``HE`` the two-party BFV
    ``fixed_matmul_triple`` with the owner's operand ``W`` and the client's
    zero (its noise flooding is what keeps ``W`` from the client). ``TTP`` is
    not supported: the helper would need ``W``.
    """

    def __init__(self, held: torch.Tensor | None, shape: tuple[int, ...]) -> None:
        import crypten.communicator as comm

        if _provider_name() not in HELD_PROVIDERS or comm.get().get_world_size() != 2:
            raise InternalError(f"owner-held weights need a 2-party TFP or HE provider, not {_provider_name()}")
        self.rank = comm.get().get_rank()
        self.shape = tuple(shape)
        if (held is None) != (self.rank != 0) or (held is not None and tuple(held.shape) != self.shape):
            raise InternalError("the owner (rank 0) alone holds the weight, of the agreed shape")
        self.held = held
        self._zero: torch.Tensor | None = None  # the client's operand in the HE protocol (same object when traced)

    def _triple(self, size: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """This party's shares of a fresh ``A`` of ``size`` and ``C = A @ W``."""
        if _provider_name() == "TFP":
            a_plain = _ring(size) if self.rank == 0 else None
            c_plain = a_plain.matmul(self.held) if self.rank == 0 else None  # type: ignore[union-attr,arg-type]
            return _from_src0(a_plain, size).share, _from_src0(c_plain, _matmul_size(size, self.shape)).share
        import crypten.mpc

        if self.held is None and self._zero is None:
            self._zero = torch.zeros(self.shape, dtype=torch.long)
        operand = self.held if self.held is not None else self._zero
        a, c = crypten.mpc.get_default_provider().fixed_matmul_triple(tuple(size), operand)
        return a.share, c.share

    def rmatmul(self, x: Any) -> Any:
        """``x @ W`` for a secret-shared ``x`` (batch dims allowed), at ``x``'s fixed-point scale."""
        import crypten.communicator as comm

        xs = x._tensor
        a, c = self._triple(tuple(xs.size()))
        eps = comm.get().reduce(xs.share - a, 0)  # only the owner needs x - A (dst positional: CrypTen logs it)
        z = c + eps.matmul(self.held) if self.rank == 0 else c
        out = xs.clone()
        out.share = z
        out.div_(xs.encoder.scale)  # both operands carry the scale: truncate once, as CrypTen does
        return _wrap(x, out)


def _wrap(like: Any, tensor: Any) -> Any:
    out = like.shallow_copy()
    out._tensor = tensor
    return out


def masked(weight: Any) -> Any:
    """``weight`` as a :class:`MaskedWeight` when the provider supports it, else unchanged."""
    return MaskedWeight(weight) if supported() else weight


def matmul(x: Any, w: Any) -> Any:
    """``x @ w`` for a plain/shared ``w``, a :class:`MaskedWeight` or an :class:`OwnerHeldWeight`."""
    return w.rmatmul(x) if isinstance(w, (MaskedWeight, OwnerHeldWeight)) else x.matmul(w)
