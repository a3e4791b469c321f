"""CrypTen tuple provider ``"HE"``: Beaver tuples from the two-party BFV protocol, no dealer.

CrypTen's default provider (TFP) lets rank 0 generate every triple, so rank 0
could unmask everything the other party opens; its ``HomomorphicProvider`` is
a stub. :class:`HomomorphicTupleProvider` fills that slot: every tuple CrypTen
asks for (additive ``mul``/``matmul`` triples, squares, binary AND triples and
B2A bits) is produced jointly by the two parties with
:class:`collab.he.triples.TripleGenerator` over the CrypTen process group, so
neither party learns a, b or c.

Use it in each party process, before ``crypten.init()`` or at least before
the first secure multiplication::

    from collab.he.provider import install_provider
    install_provider()                 # registers "HE" in CrypTen
    cfg.mpc.provider = "HE"            # crypten.config.cfg

It needs no helper process, so ``crypten.mpc.ttp_required()`` stays False.
The triples are generated on demand (interleaved with the online phase); the
provider's :attr:`traffic` keeps the offline time and bytes separately from
CrypTen's own communication statistics.

``python -m collab.he.provider --rank R --master HOST:PORT --provider HE|TFP
--out OUT.json`` runs a small two-party self-check (an encrypted matmul, a
multiplication and a comparison) used by the tests and benchmarks.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

import collab.mpc.compat  # noqa: F401  (must precede crypten)
from collab.errors import BadInput, CollabError, UsageError
from collab.he.bfv import BfvParams
from collab.he.table_cache import TableCache
from collab.he.triples import HeParty, TripleGenerator, Traffic

import crypten  # noqa: E402  (after the compat shim)
import crypten.communicator as comm  # noqa: E402
from crypten.mpc.primitives import ArithmeticSharedTensor, BinarySharedTensor  # noqa: E402
from crypten.mpc.provider.provider import TupleProvider  # noqa: E402

NAME = "HE"
_REGISTRY = "__SUPPORTED_PROVIDERS"


class DistChannel:
    """The :class:`collab.he.triples.Channel` over CrypTen's torch.distributed group (gloo)."""

    def __init__(self, group: Any, peer: int) -> None:
        self.group, self.peer = group, peer

    def _swap(self, mine: torch.Tensor, theirs: torch.Tensor) -> None:
        req = dist.isend(mine, self.peer, group=self.group)
        dist.recv(theirs, self.peer, group=self.group)
        req.wait()

    def exchange(self, payload: bytes) -> bytes:
        size = torch.zeros(1, dtype=torch.int64)
        self._swap(torch.tensor([len(payload)], dtype=torch.int64), size)
        # A skipped direction sends b"" (one-direction fixed-mask matmuls); torch.frombuffer refuses an empty buffer,
        # so an empty message travels as one padding byte that the receiver drops.
        out = torch.empty(max(1, int(size.item())), dtype=torch.uint8)
        self._swap(torch.frombuffer(bytearray(payload or b"\0"), dtype=torch.uint8), out)
        return out[: int(size.item())].numpy().tobytes()


def _as_int64(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint64).view(np.int64))


class HomomorphicTupleProvider(TupleProvider):  # type: ignore[misc]
    """Two-party, dealer-free tuples for CrypTen (semi-honest, non-colluding parties)."""

    NAME = NAME

    def __init__(self, params: BfvParams | None = None) -> None:
        super().__init__()
        self.params = params
        self._generator: TripleGenerator | None = None
        self._session: int | None = None
        self.traffic = Traffic()

    def _gen(self) -> TripleGenerator:
        """This session's generator; a new CrypTen session gets fresh keys."""
        c = comm.get()
        if c.get_world_size() != 2:
            raise UsageError("the HE tuple provider is two-party only; use TTP with a third party")
        if self._generator is None or self._session != id(c):
            party = HeParty(params=self.params)
            self._generator = TripleGenerator(party, DistChannel(c.main_group, 1 - c.get_rank()))
            self._generator.traffic = self.traffic
            self._session = id(c)
            self._generator.setup()
        return self._generator

    @staticmethod
    def _dry(*shapes: tuple[int, ...], binary: bool = False) -> tuple[Any, ...]:
        """Random local shares of the right shapes: what a *tracing* run gets, at no cost.

        CrypTen's tracing records every tuple request so that ``fill_cache()``
        can produce them all in an offline phase; the traced run's outputs are
        discarded, so it needs shapes, not valid tuples.
        """
        cls = BinarySharedTensor if binary else ArithmeticSharedTensor
        rng = np.random.default_rng()
        out = []
        for shape in shapes:
            share = torch.from_numpy(rng.integers(-(2**63), 2**63 - 1, size=shape, dtype=np.int64, endpoint=True))
            out.append(cls.from_shares(share) if binary else cls.from_shares(share, precision=0))
        return tuple(out)

    def generate_additive_triple(self, size0, size1, op, device=None, *args, **kwargs):  # type: ignore[no-untyped-def]
        """Shares of (a, b, op(a, b)) for op in {mul, matmul}."""
        if op not in ("mul", "matmul") or args or kwargs:
            raise BadInput(f"the HE provider makes mul and matmul triples, not {op!r} (no convolutions)")
        if self.tracing:
            meta0, meta1 = torch.empty(tuple(size0), device="meta"), torch.empty(tuple(size1), device="meta")
            out = torch.mul(meta0, meta1) if op == "mul" else torch.matmul(meta0, meta1)
            return self._dry(tuple(size0), tuple(size1), tuple(out.shape))
        gen = self._gen()
        a, b, c = gen.mul(tuple(size0), tuple(size1)) if op == "mul" else gen.matmul(tuple(size0), tuple(size1))
        return tuple(ArithmeticSharedTensor.from_shares(_as_int64(t), precision=0) for t in (a, b, c))

    def fixed_matmul_triple(self, size0, b_share):  # type: ignore[no-untyped-def]
        """Shares of (a, a @ B) for this party's share ``b_share`` of a per-load fixed mask B.

        Used by :class:`collab.mpc.fixed.MaskedWeight`; traced and cached like
        CrypTen's own requests (the cache key holds the ``b_share`` object,
        which lives for the model load).
        """
        out = (*tuple(size0)[:-1], int(b_share.shape[1]))
        if self.tracing:
            return self._dry(tuple(size0), out)
        a, c = self._gen().matmul_fixed(tuple(size0), b_share.numpy().view(np.uint64))
        return tuple(ArithmeticSharedTensor.from_shares(_as_int64(t), precision=0) for t in (a, c))

    def square(self, size, device=None):  # type: ignore[no-untyped-def]
        """Shares of (r, r^2)."""
        if self.tracing:
            return self._dry(tuple(size), tuple(size))
        r, r2 = self._gen().square(tuple(size))
        return (
            ArithmeticSharedTensor.from_shares(_as_int64(r), precision=0),
            ArithmeticSharedTensor.from_shares(_as_int64(r2), precision=0),
        )

    def generate_binary_triple(self, size0, size1, device=None):  # type: ignore[no-untyped-def]
        """XOR shares of (a, b, a & b) on 64-bit words."""
        if self.tracing:
            shape = tuple(torch.broadcast_shapes(tuple(size0), tuple(size1)))
            return self._dry(tuple(size0), tuple(size1), shape, binary=True)
        a, b, c = self._gen().binary(tuple(size0), tuple(size1))
        return tuple(BinarySharedTensor.from_shares(_as_int64(t)) for t in (a, b, c))

    def fill_cache(self) -> None:
        """The offline phase: every traced request, small ones batched into shared ciphertexts.

        CrypTen's own ``fill_cache`` calls the provider once per request; the
        encoder's hundreds of small slot-wise and AND requests would then each
        pay whole ciphertexts. Here they go through :func:`collab.he.batch.run_batched`
        (same tuples, same protocol, far fewer ciphertexts); large matmuls and
        fixed-mask matmuls still run one by one. Both parties traced the same
        computation, so they walk the same request list in the same order.
        """
        from collab.he.batch import Request, run_batched, slot_matmul_fits

        gen = self._gen()
        batched: list[tuple[int, Request]] = []
        results: list[Any] = [None] * len(self.request_cache)
        for i, (func, args, kwargs) in enumerate(self.request_cache):
            bound = inspect.signature(getattr(type(self), func)).bind(self, *args, **kwargs).arguments
            extra = bound.get("args") or bound.get("kwargs")
            req: Request | None = None
            if func == "generate_additive_triple" and not extra:
                s0, s1 = tuple(bound["size0"]), tuple(bound["size1"])
                if bound["op"] == "mul" or (bound["op"] == "matmul" and slot_matmul_fits(s0, s1)):
                    req = Request(bound["op"], (s0, s1))
            elif func == "square":
                req = Request("square", (tuple(bound["size"]),))
            elif func == "B2A_rng":
                req = Request("b2a", (tuple(bound["size"]),))
            elif func == "generate_binary_triple":
                req = Request("binary", (tuple(bound["size0"]), tuple(bound["size1"])))
            if req is None:
                results[i] = object.__getattribute__(self, func)(*args, **kwargs)
            else:
                batched.append((i, req))
        for (i, req), shares in zip(batched, run_batched(gen, [r for _, r in batched])):
            results[i] = _shared(req.kind, shares)
        for (func, args, kwargs), result in zip(self.request_cache, results):
            self.tuple_cache.setdefault((func, args, frozenset(kwargs.items())), []).append(result)

    def wrap_rng(self, size, device=None):  # type: ignore[no-untyped-def]
        """Only CrypTen's 3+-party truncation asks for wraps; this provider is two-party."""
        raise UsageError("wrap_rng is used only with 3 or more parties; the HE provider is two-party")

    def B2A_rng(self, size, device=None):  # type: ignore[no-untyped-def]
        """A random bit, shared both arithmetically and in XOR."""
        if self.tracing:
            return self._dry(tuple(size)) + self._dry(tuple(size), binary=True)
        ra, rb = self._gen().b2a_bits(tuple(size))
        return (
            ArithmeticSharedTensor.from_shares(_as_int64(ra), precision=0),
            BinarySharedTensor.from_shares(_as_int64(rb)),
        )


def share_words(provider: HomomorphicTupleProvider, held: dict[str, torch.Tensor] | None,
                one_hot: torch.Tensor | None, batch: int, seq_len: int, spec: Any,
                cache: TableCache | None = None) -> Any:
    """The client's word rows as a CrypTensor (batch, seq, hidden), by the oblivious lookup of :mod:`collab.he.lookup`.

    The owner passes its fixed-point table chunks (``word.i``, as
    :class:`collab.mpc.fixed.OwnerHeldWeight` holds them), the client its
    one-hot inputs (batch and length are public). It replaces the one-hot
    matmul, so the (n, V) Beaver triple is never made, and the rows are
    exact (no truncation). The owner encrypts its table once per model load
    (:func:`encrypted_table`), not once per query; a client with a ``cache``
    receives it once per load (:mod:`collab.he.table_cache`).
    """
    from crypten.mpc import MPCTensor

    shape, count = (spec.vocab_size, spec.hidden), batch * seq_len
    gen = provider._gen()
    if held is not None:
        share = gen.lookup_rows(encrypted_table(held, provider.params), None, count, shape)
    elif one_hot is not None:
        share = gen.lookup_rows(None, one_hot.argmax(-1).reshape(-1).numpy(), count, shape, cache)
    else:
        raise UsageError("the owner passes its table, the client its inputs")
    return MPCTensor.from_shares(_as_int64(share).reshape(batch, seq_len, spec.hidden))


_TABLES: dict[tuple[int, BfvParams | None], tuple[torch.Tensor, Any]] = {}


def encrypted_table(held: dict[str, torch.Tensor], params: BfvParams | None = None) -> Any:
    """The owner's word table encrypted for the lookup, made once per model load and kept with it.

    A load is identified by its first table chunk, which the persistent owner
    party (:mod:`collab.mpc.persistent`) keeps for its lifetime; a process
    serves one model, so an earlier load's table is dropped.
    """
    from collab.he.lookup import EncryptedTable
    from collab.mpc.encoder import word_table

    first = held["word.0"]
    key = (id(first), params)
    hit = _TABLES.get(key)
    if hit is None or hit[0] is not first:
        _TABLES.clear()
        _TABLES[key] = (first, EncryptedTable(word_table(held).numpy().view(np.uint64), params))
        print("lookup: word table encrypted for this model load", file=sys.stderr, flush=True)  # to the party's log
    return _TABLES[key][1]


def _shared(kind: str, shares: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
    """CrypTen's shared tensors for one batched request's shares (as the one-by-one methods return them)."""
    arith = lambda t: ArithmeticSharedTensor.from_shares(_as_int64(t), precision=0)  # noqa: E731
    if kind == "binary":
        return tuple(BinarySharedTensor.from_shares(_as_int64(t)) for t in shares)
    if kind == "b2a":
        return arith(shares[0]), BinarySharedTensor.from_shares(_as_int64(shares[1]))
    return tuple(arith(t) for t in shares)


def install_provider(params: BfvParams | None = None) -> HomomorphicTupleProvider:
    """Register (idempotently) the HE provider under ``"HE"`` in CrypTen, replacing its stub."""
    if "fixed_matmul_triple" not in TupleProvider.TRACEABLE_FUNCTIONS:  # CrypTen traces/caches by this list
        TupleProvider.TRACEABLE_FUNCTIONS.append("fixed_matmul_triple")
    registry: dict[str, Any] = getattr(crypten.mpc, _REGISTRY)
    current = registry.get(NAME)
    if isinstance(current, HomomorphicTupleProvider) and current.params == params:
        return current
    provider = HomomorphicTupleProvider(params)
    registry[NAME] = provider
    return provider


# ---------------------------------------------------------------------- two-party self-check


def selfcheck_inputs() -> dict[str, torch.Tensor]:
    """Fixed inputs of the self-check: rank 1 ("client") owns x, y and ints; rank 0 ("owner") owns w."""
    g = torch.Generator().manual_seed(7)
    return {
        "x": torch.randn(4, 8, generator=g),
        "w": torch.randn(8, 6, generator=g),
        "y": torch.randn(4, 6, generator=g),
        "xi": torch.randint(-(2**62), 2**62, (4, 8), generator=g),
        "wi": torch.randint(-(2**62), 2**62, (8, 6), generator=g),
    }


def run_selfcheck(rank: int, master: str, provider: str, timeout: float = 300.0) -> dict[str, Any]:
    """Body of one self-check party: x@w, (x@w)*y, relu, and exact ring products at precision 0."""
    from crypten.config import cfg

    import collab.mpc.compat as compat

    compat.set_collective_timeout(timeout)
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", RENDEZVOUS=f"tcp://{master}", DISTRIBUTED_BACKEND="gloo")
    he = install_provider() if provider == NAME else None
    compat.init_crypten()
    cfg.mpc.provider = provider
    data = selfcheck_inputs()
    try:
        torch.manual_seed(1000 + rank)
        mine = lambda name, src: data[name] if rank == src else torch.zeros_like(data[name])  # noqa: E731
        x = crypten.cryptensor(mine("x", 1), src=1)
        w = crypten.cryptensor(mine("w", 0), src=0)
        y = crypten.cryptensor(mine("y", 1), src=1)
        xi = crypten.cryptensor(mine("xi", 1), src=1, precision=0)
        wi = crypten.cryptensor(mine("wi", 0), src=0, precision=0)
        def compute() -> tuple[Any, ...]:
            xw = x.matmul(w)
            return xw, xw * y, xw.relu(), xi.matmul(wi), xi[:, :6] * wi[:4, :]

        offline_s = 0.0
        if he is not None:  # offline phase: trace the tuple requests, then produce them all
            he.trace(True)
            compute()
            he.trace(False)
            t0 = time.perf_counter()
            he.fill_cache()
            offline_s = time.perf_counter() - t0
            he.request_cache = []
        comm.get().reset_communication_stats()
        sent_before = he.traffic.bytes_sent if he is not None else 0
        t0 = time.perf_counter()
        xw, z, r, ring_mm, ring_mul = compute()  # online phase: tuples come from the cache
        seconds = time.perf_counter() - t0
        online_he_bytes = (he.traffic.bytes_sent if he is not None else 0) - sent_before
        out = {name: t.get_plain_text() for name, t in [("xw", xw), ("z", z), ("relu", r)]}
        ring = {"ring_mm": ring_mm.share, "ring_mul": ring_mul.share}
        # Reconstruct the precision-0 results bit for bit by summing shares (the ring is Z_2^64).
        ring_plain = {k: comm.get().all_reduce(v.clone()) for k, v in ring.items()}
        stats = comm.get().get_communication_stats()
    finally:
        crypten.uninit()
    traffic = he.traffic if he is not None else Traffic()
    return {
        "provider": provider,
        "seconds": seconds,
        "results": {k: v.tolist() for k, v in out.items()},
        "ring": {k: [[str(int(e)) for e in row] for row in v.tolist()] for k, v in ring_plain.items()},
        "online_bytes": int(stats["bytes"]),
        "online_he_bytes": online_he_bytes,
        "offline": {
            "seconds": offline_s,
            "generator_seconds": traffic.seconds,
            "bytes_sent": traffic.bytes_sent,
            "bytes_received": traffic.bytes_received,
            "counts": traffic.counts,
        },
    }


def op_timings(repeat: int = 5) -> dict[str, float]:
    """Milliseconds per SEAL/TenSEAL operation on this machine (for comparison with TenSEAL's CI figures)."""
    import tenseal as ts
    import tenseal.sealapi as seal

    from collab.he.bfv import BfvSuite, Rng

    def ms(fn: Any) -> float:
        fn()
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        return (time.perf_counter() - t0) / repeat * 1000

    out: dict[str, float] = {}
    suite, rng = BfvSuite(), Rng()
    party = HeParty(suite)
    party.meet(party.hello())
    k, ev = 0, suite.evaluators[0]
    x = rng.residues_below(suite.n, suite.primes[0])
    pt = seal.Plaintext()
    suite.encoders[0].encode(x.tolist(), pt)
    ct = seal.Ciphertext()
    party._enc[k].encrypt_symmetric(pt, ct)
    out["bfv16384_encode"] = ms(lambda: suite.encoders[0].encode(x.tolist(), seal.Plaintext()))
    out["bfv16384_encrypt_symmetric"] = ms(lambda: party._enc[k].encrypt_symmetric(pt, seal.Ciphertext()))
    out["bfv16384_multiply_plain"] = ms(lambda: ev.multiply_plain(ct, pt, seal.Ciphertext()))
    out["bfv16384_encrypt_zero_pk"] = ms(lambda: party._peer()[k].encrypt_zero(ct.parms_id(), seal.Ciphertext()))
    out["bfv16384_flood_polynomial"] = ms(lambda: suite.flood_ciphertext(k, ct.parms_id(), suite.flood_bits(suite.n), rng))
    out["bfv16384_serialize"] = ms(lambda: suite.dumps(ct))
    out["bfv16384_decrypt"] = ms(lambda: party._dec[k].decrypt(ct, seal.Plaintext()))
    ckks = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60])
    ckks.global_scale = 2**40
    ckks.generate_galois_keys()
    v = [0.5] * 4096
    a, b = ts.ckks_vector(ckks, v), ts.ckks_vector(ckks, v)
    out["ckks8192_multiply"] = ms(lambda: a * b)
    out["ckks8192_dot"] = ms(lambda: a.dot(b))
    return out


def run_bench(rank: int, master: str, elements: int, matmuls: list[tuple[int, int, int]], timeout: float,
              small: int = 0) -> dict[str, Any]:
    """Offline throughput between 2 real processes over gloo (no CrypTen): element-wise and matmul triples.

    With ``small`` > 0 it also times that many encoder-sized requests (a
    600-element mul, square and 64-word AND each) one by one and then batched,
    in the same run, so the batching's speed-up is a ratio under one load.
    """
    import datetime

    dist.init_process_group(
        "gloo", init_method=f"tcp://{master}", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=timeout)
    )
    try:
        gen = TripleGenerator(HeParty(), DistChannel(None, 1 - rank))
        t0 = time.perf_counter()
        gen.setup()
        out: dict[str, Any] = {"setup_s": time.perf_counter() - t0, "setup_bytes_sent": gen.traffic.bytes_sent}
        sent0 = gen.traffic.bytes_sent
        t0 = time.perf_counter()
        gen.mul((elements,), (elements,))
        dt = time.perf_counter() - t0
        out["elementwise"] = {
            "triples": elements,
            "seconds": dt,
            "triples_per_s": elements / dt,
            "bytes_sent_per_party": gen.traffic.bytes_sent - sent0,
        }
        out["matmul"] = []
        for n, k, m in matmuls:
            sent0 = gen.traffic.bytes_sent
            t0 = time.perf_counter()
            gen.matmul((n, k), (k, m))
            out["matmul"].append(
                {"shape": f"({n}x{k})@({k}x{m})", "seconds": time.perf_counter() - t0,
                 "bytes_sent_per_party": gen.traffic.bytes_sent - sent0}
            )  # fmt: skip
        if small:
            out["small_requests"] = _small_requests(gen, small)
        dist.barrier()
        if rank == 0:
            out["ops_ms"] = op_timings()
        dist.barrier()
        return out
    finally:
        dist.destroy_process_group()


def _small_requests(gen: TripleGenerator, count: int) -> dict[str, Any]:
    """``count`` encoder-sized requests of each kind, one by one vs batched (collab.he.batch), same run."""
    from collab.he.batch import Request

    reqs = [Request("mul", ((600,), (600,))), Request("square", ((600,),)), Request("binary", ((64,), (64,)))] * count
    t0, sent0 = time.perf_counter(), gen.traffic.bytes_sent
    for r in reqs:
        {"mul": gen.mul, "square": gen.square, "binary": gen.binary}[r.kind](*r.sizes)
    one_s, one_b = time.perf_counter() - t0, gen.traffic.bytes_sent - sent0
    t0, sent0 = time.perf_counter(), gen.traffic.bytes_sent
    gen.batched(reqs)
    batch_s, batch_b = time.perf_counter() - t0, gen.traffic.bytes_sent - sent0
    return {"requests": len(reqs), "one_by_one_s": one_s, "batched_s": batch_s, "speedup": one_s / batch_s,
            "one_by_one_bytes_sent": one_b, "batched_bytes_sent": batch_b, "load_average": os.getloadavg()}


def _request_summary(requests: list[Any]) -> dict[str, dict[str, int]]:
    """Tuple requests of a traced run, per kind: how many calls and how many output elements."""
    out: dict[str, dict[str, int]] = {}
    for func, args, kwargs in requests:
        if func == "generate_additive_triple":
            s0, s1, op = args[0], args[1], args[2]
            m0, m1 = torch.empty(tuple(s0), device="meta"), torch.empty(tuple(s1), device="meta")
            kind = f"{op}_triple"
            numel = (torch.mul(m0, m1) if op == "mul" else torch.matmul(m0, m1)).numel()
        elif func == "fixed_matmul_triple":
            kind, numel = "fixed_matmul_triple", int(torch.Size(args[0][:-1]).numel()) * int(args[1].shape[1])
        elif func == "generate_binary_triple":
            kind, numel = "binary_triple", int(torch.broadcast_shapes(tuple(args[0]), tuple(args[1])).numel()) * 64
        else:
            kind, numel = func, int(torch.Size(args[0]).numel())
        entry = out.setdefault(kind, {"calls": 0, "elements": 0})
        entry["calls"] += 1
        entry["elements"] += numel
    return out


def run_encoder(rank: int, master: str, seq_len: int, layers: int, timeout: float, execute: bool,
                approx_knobs: dict[str, Any] | None = None, fixed_masks: bool = False,
                owner_held: bool = False) -> dict[str, Any]:
    """The MiniLM encoder with HE preprocessing: trace the tuple requests, produce them offline, run online.

    With ``execute`` False only the (free) trace runs: the request counts tell
    what the offline phase must produce.
    """
    from crypten.config import cfg

    import collab.mpc.compat as compat
    from collab.mpc import encoder as enc
    from collab.mpc import fixed
    from collab.mpc.model import load_spec, load_weights, model_dir, tokenize

    compat.set_collective_timeout(timeout)
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", RENDEZVOUS=f"tcp://{master}", DISTRIBUTED_BACKEND="gloo")
    he = install_provider()
    path = model_dir()
    spec = load_spec(path)
    approx = enc.Approximations(**(approx_knobs or {}))
    text = "Secure inference keeps both the weights and the text private."
    own: dict[str, torch.Tensor] | None = None
    if rank == 0:
        own = enc.prepare_weights(load_weights(path), spec, seq_len)
    compat.init_crypten()
    cfg.mpc.provider = NAME
    try:
        shapes = enc.weight_shapes(spec, seq_len)
        # owner_held: the matmul weights stay the owner's plaintext (collab infer's routed path, fixed.OwnerHeldWeight)
        names = fixed.held_names(shapes) if owner_held else []
        flat_w = {n: crypten.cryptensor(own[n] if own else torch.zeros(s), src=0) for n, s in shapes.items()
                  if n not in names}
        held = {n: fixed.encode_held(own[n]) for n in names} if own else None
        for n in names:
            flat_w[n] = fixed.OwnerHeldWeight(held[n] if held else None, shapes[n])
        inputs_plain = enc.prepare_inputs(tokenize([text], seq_len, path), spec, approx) if rank == 1 else None
        flat_in = {n: crypten.cryptensor(inputs_plain[n] if inputs_plain else torch.zeros(s), src=1)
                   for n, s in enc.input_shapes(1, seq_len, spec).items()}
        dealer_inputs = inputs = enc.SharedInputs(**flat_in)  # the dealer path: one-hot @ table
        lookup_s, lookup_again_s, lookup_bytes, lookup_again_bytes, both_lookups_bytes = 0.0, 0.0, 0, 0, 0
        if owner_held and execute:  # the HE path's words come from the oblivious lookup (as in collab infer)
            one_hot = inputs_plain["one_hot"] if inputs_plain else None
            before = he._gen().traffic.bytes_sent  # after the key exchange
            with tempfile.TemporaryDirectory(prefix="collab-lookup-cache-") as kept:
                cache = TableCache(kept) if rank == 1 else None  # the client keeps the table, as its node does
                t0 = time.perf_counter()
                rows = share_words(he, held, one_hot, 1, seq_len, spec, cache)  # the load's first query: encrypted, sent
                t1 = time.perf_counter()
                lookup_bytes = he.traffic.bytes_sent - before
                share_words(he, held, one_hot, 1, seq_len, spec, cache)  # any later query of the load: neither
                lookup_s, lookup_again_s = t1 - t0, time.perf_counter() - t1
            both_lookups_bytes = he.traffic.bytes_sent - before  # not part of the input-independent tuples
            lookup_again_bytes = both_lookups_bytes - lookup_bytes
            inputs = replace(dealer_inputs, one_hot=None, word=rows)
        elif owner_held:  # a trace: shapes only
            inputs = replace(dealer_inputs, one_hot=None, word=crypten.cryptensor(torch.zeros(1, seq_len, spec.hidden)))
        weights = enc.assemble_weights(flat_w, spec)
        setup_bytes = 0
        if fixed_masks and not owner_held:  # once per model load: B drawn locally by each party, W - B opened
            comm.get().reset_communication_stats()
            weights = enc.mask_weights(weights)
            setup_bytes = int(comm.get().get_communication_stats()["bytes"])

        def forward(inputs: enc.SharedInputs = inputs) -> Any:
            x = enc.embed(inputs, weights, spec, approx)
            for i, lw in enumerate(weights.layers[:layers]):
                x = enc.layer(x, inputs.attn_bias, lw, spec, approx, i)
            return (x * inputs.pool).sum(1)

        he.trace(True)
        forward()
        he.trace(False)
        result: dict[str, Any] = {"seq_len": seq_len, "layers": layers, "fixed_masks": fixed_masks,
                                  "owner_held": owner_held,
                                  "setup_bytes": setup_bytes, "requests": _request_summary(he.request_cache)}
        if execute:
            t0 = time.perf_counter()
            he.fill_cache()
            result["offline_s"] = time.perf_counter() - t0
            result["offline_bytes_sent"] = he.traffic.bytes_sent - both_lookups_bytes  # the input-independent tuples
            result["lookup_s"], result["lookup_bytes_sent"] = lookup_s, lookup_bytes
            result["lookup_again_s"], result["lookup_again_bytes_sent"] = lookup_again_s, lookup_again_bytes
            result["offline_kinds"] = he.traffic.kinds
            result["load_average"] = os.getloadavg()
            he.request_cache = []
            comm.get().reset_communication_stats()
            t0 = time.perf_counter()
            pooled = forward()
            result["online_s"] = time.perf_counter() - t0
            result["online_bytes"] = int(comm.get().get_communication_stats()["bytes"])
            plain = pooled.get_plain_text(dst=1)
            if rank == 1:
                result["embedding"] = torch.nn.functional.normalize(plain, dim=-1).tolist()
            # The same forward pass on the dealer path (TFP deals its tuples as it goes), same session and
            # weights: the HE path's online phase is meant to equal it, except that with owner-held weights
            # its words are looked up already where the dealer path multiplies the one-hot by the table.
            cfg.mpc.provider = "TFP"
            comm.get().reset_communication_stats()
            t0 = time.perf_counter()
            dealt = forward(dealer_inputs).get_plain_text(dst=1)
            result["online_dealer_s"] = time.perf_counter() - t0
            result["online_dealer_bytes"] = int(comm.get().get_communication_stats()["bytes"])
            cfg.mpc.provider = NAME
            if rank == 1:
                result["dealer_embedding"] = torch.nn.functional.normalize(dealt, dim=-1).tolist()
        he.request_cache = []
        he.tuple_cache = {}
    finally:
        crypten.uninit()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m collab.he.provider")
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--master", required=True)
    ap.add_argument("--provider", default=NAME, choices=[NAME, "TFP"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--bench", action="store_true", help="measure offline throughput instead of the self-check")
    ap.add_argument("--elements", type=int, default=65536)
    ap.add_argument("--small-requests", type=int, default=0, help="with --bench: one-by-one vs batched, N of each kind")
    ap.add_argument("--matmul", action="append", default=[], help="NxKxM, repeatable")
    ap.add_argument("--encoder", type=int, default=0, help="run the MiniLM encoder at this seq_len with HE tuples")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--trace-only", action="store_true", help="with --encoder: count tuple requests only")
    ap.add_argument("--approx", default="{}", help="with --encoder: Approximations knobs as JSON")
    ap.add_argument("--fixed-masks", action="store_true", help="with --encoder: weight masks fixed per model load")
    ap.add_argument("--owner-held", action="store_true",
                    help="with --encoder: matmul weights held by the owner in the clear (collab infer's routed path)")
    args = ap.parse_args(argv)
    try:
        if args.encoder:
            result = run_encoder(args.rank, args.master, args.encoder, args.layers, args.timeout, not args.trace_only,
                                 json.loads(args.approx), args.fixed_masks, args.owner_held)
        elif args.bench:
            shapes = [tuple(int(v) for v in s.split("x")) for s in args.matmul]
            result = run_bench(args.rank, args.master, args.elements, shapes, args.timeout,  # type: ignore[arg-type]
                               args.small_requests)
        else:
            result = run_selfcheck(args.rank, args.master, args.provider, args.timeout)
    except CollabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    with open(args.out, "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
