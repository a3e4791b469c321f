"""Many small tuple requests in a few BFV round trips (the offline phase's batching).

Why: a traced encoder asks for hundreds of small element-wise, square, B2A and
AND tuples (at seq 4: 866 slot-wise requests averaging 600 elements). Run one
by one, each pays whole 16,384-slot ciphertexts per CRT prime and direction
(encrypt, multiply, re-randomise, flood, decrypt) for a few hundred useful
slots. Here the cross terms of many requests are concatenated into one vector,
so they share ciphertexts, and the results are cut apart again.

Batching changes nothing in the protocol: every slot still carries its own
fresh mask and each party's local randomness is drawn per request exactly as in
the one-by-one methods, so the tuples are the same distribution, exact, and
each party's view is the same as in :meth:`TripleGenerator.cross_slots` /
:meth:`TripleGenerator.cross_bits` on a longer vector.

Small batched matmuls (attention's per-head ``QK^T`` and ``AV`` at short
sequences) are expanded into slot-wise products: the cross term of
``a @ b`` is ``Σ_l a[..,i,l] b[..,l,j]``, so each party sums its exact shares of
the element-wise cross terms over ``l`` locally. That costs ``n·k·m`` slots, far
fewer ciphertexts than one coefficient-encoded product per head when the
matrices are tiny.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from collab.errors import BadInput
from collab.he.bfv import U64
from collab.he.triples import TripleGenerator, _bits_of

Shape = tuple[int, ...]
Result = tuple[np.ndarray, ...]

#: Slots per batched round trip (64 ciphertexts per prime): bounds the memory of one message.
MAX_SLOTS = 1 << 20
#: AND bits per batched round trip (256 single-prime ciphertexts).
MAX_BITS = 1 << 22
#: A batched matmul is expanded into slots when it needs at most this many (else coefficient encoding).
SLOT_MATMUL_LIMIT = 1 << 16


@dataclass(frozen=True)
class Request:
    """One tuple request: ``kind`` in mul, square, b2a, matmul (small, batched), binary."""

    kind: str
    sizes: tuple[Shape, ...]


@dataclass
class _Job:
    x: np.ndarray  # our operand of the cross term (flat)
    y: np.ndarray  # our other operand (flat)
    finish: Callable[[np.ndarray], Result]  # our shares of the tuple, from our share of the cross term


def slot_matmul_fits(size0: Shape, size1: Shape) -> bool:
    """Whether a matmul request is small enough to expand into slot-wise cross terms."""
    if len(size0) < 2 or len(size1) < 2 or size0[-1] != size1[-2]:
        return False
    batch = np.broadcast_shapes(tuple(size0[:-2]), tuple(size1[:-2]))
    return int(np.prod(batch)) * size0[-2] * size0[-1] * size1[-1] <= SLOT_MATMUL_LIMIT


def _job(gen: TripleGenerator, req: Request) -> _Job:
    rng = gen.party.rng
    if req.kind == "mul":
        a, b = rng.uint64(req.sizes[0]), rng.uint64(req.sizes[1])
        shape = np.broadcast_shapes(a.shape, b.shape)
        ab, bb = np.broadcast_to(a, shape), np.broadcast_to(b, shape)
        return _Job(ab.ravel(), bb.ravel(), lambda cr: (a, b, ab * bb + cr.reshape(shape)))
    if req.kind == "square":  # both directions of r_0 r_1 sum to 2 r_0 r_1
        r = rng.uint64(req.sizes[0])
        return _Job(r.ravel(), r.ravel(), lambda cr: (r, r * r + cr.reshape(r.shape)))
    if req.kind == "b2a":  # r = r0 XOR r1 = r0 + r1 - 2 r0 r1
        r = rng.bits(int(np.prod(req.sizes[0]))).reshape(req.sizes[0])
        return _Job(r.ravel(), r.ravel(), lambda cr: ((r - cr.reshape(r.shape)).astype(U64), r))
    if req.kind == "matmul":
        if not slot_matmul_fits(*req.sizes):
            raise BadInput(f"matmul {req.sizes} is too large to expand into slots")
        a, b = rng.uint64(req.sizes[0]), rng.uint64(req.sizes[1])
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        n, k, m = a.shape[-2], a.shape[-1], b.shape[-1]
        full = batch + (n, k, m)
        xa = np.broadcast_to(a[..., :, :, None], full)
        yb = np.broadcast_to(b[..., None, :, :], full)

        def finish(cr: np.ndarray) -> Result:
            return a, b, np.matmul(a, b) + cr.reshape(full).sum(axis=-2, dtype=U64)

        return _Job(xa.ravel(), yb.ravel(), finish)
    raise BadInput(f"no batched slot-wise tuple of kind {req.kind!r}")


def _binary_job(gen: TripleGenerator, req: Request) -> _Job:
    a, b = gen.party.rng.uint64(req.sizes[0]), gen.party.rng.uint64(req.sizes[1])
    shape = np.broadcast_shapes(a.shape, b.shape)
    ab, bb = np.broadcast_to(a, shape).ravel(), np.broadcast_to(b, shape).ravel()
    return _Job(_bits_of(ab), _bits_of(bb), lambda words: (a, b, ((ab & bb) ^ words).reshape(shape)))


def _count(req: Request) -> int:
    """Cross-term elements (slots or bits) a request needs, before drawing anything."""
    if req.kind == "matmul":
        s0, s1 = req.sizes
        return int(np.prod(np.broadcast_shapes(tuple(s0[:-2]), tuple(s1[:-2])))) * s0[-2] * s0[-1] * s1[-1]
    if req.kind in ("mul", "binary"):
        n = int(np.prod(np.broadcast_shapes(tuple(req.sizes[0]), tuple(req.sizes[1]))))
        return 64 * n if req.kind == "binary" else n
    return int(np.prod(req.sizes[0]))


def _groups(indices: list[int], requests: list[Request], cap: int) -> list[list[int]]:
    """Consecutive groups of requests of at most ``cap`` elements (a larger request goes alone)."""
    out: list[list[int]] = []
    size = 0
    for i in indices:
        n = _count(requests[i])
        if not out or size + n > cap:
            out.append([])
            size = 0
        out[-1].append(i)
        size += n
    return out


def run_batched(gen: TripleGenerator, requests: list[Request], label: str | None = None) -> list[Result]:
    """This party's shares of every request, in order; both parties pass the same list.

    Slot-wise kinds share cross_slots round trips, binary requests share
    cross_bits round trips; each batch is capped (and its randomness drawn only
    when it runs) so memory stays bounded at long sequences. ``label`` names
    the batches in the offline profile (default "slot batch" / "binary batch").
    """
    gen.setup()
    results: list[Result | None] = [None] * len(requests)
    binary = [i for i, r in enumerate(requests) if r.kind == "binary"]
    slots = [i for i, r in enumerate(requests) if r.kind != "binary"]
    passes = (  # (requests, cap, job builder, shared cross-term round trip, outputs per job input, profile label)
        (slots, MAX_SLOTS, _job, gen.cross_slots, 1, label or "slot batch"),
        (binary, MAX_BITS, _binary_job, gen.cross_bits, 64, label or "binary batch"),  # 64 bits in one output word
    )
    with np.errstate(over="ignore"):
        for indices, cap, make_job, cross_terms, per_output, name in passes:
            for group in _groups(indices, requests, cap):
                with gen._timed(name, count=False):
                    jobs = [make_job(gen, requests[i]) for i in group]
                    cross = cross_terms(np.concatenate([j.x for j in jobs]), np.concatenate([j.y for j in jobs]))
                    pos = 0
                    for i, j in zip(group, jobs):
                        count = j.x.size // per_output
                        results[i] = j.finish(cross[pos : pos + count])
                        pos += count
    for req in requests:
        gen.traffic.counts[req.kind] = gen.traffic.counts.get(req.kind, 0) + 1
    if any(r is None for r in results):
        raise BadInput("empty tuple request in a batch")
    return results  # type: ignore[return-value]
