"""Programs of the tensor VM: ops, parameter encodings, step descriptors, programRoot (protocol §3).

A program is a list of steps over tensor ids (claim inputs first, then step
outputs). Each step's descriptor fixes its output header, so the one-step
proof can rule on one element without trusting anything the claimer revealed.
The shape rule below (:func:`expected_out`) is the single definition of what a
well-formed step is, shared by the builder, the VM and the tests that compare
it with ``OneStepVerifier.checkStepWellFormed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode

from collab.errors import BadInput
from collab.fixedpoint import FRAC_BITS_MAX, Domain
from collab.fraudproof.commitments import (
    PAD_STEP_LEAF,
    MerkleTree,
    TensorHeader,
    encode_descriptor,
    program_root,
    step_leaf,
)

MAX_INPUTS = 64
MAX_K = 4096  # MATMUL contraction length
MAX_REDUCE = 4096  # MEAN, SUM, COUNT_ABS block
MAX_SOFTMAX = 512
MAX_LAYERNORM = 2048


class Op(IntEnum):
    """Op ids of protocol §3.3."""

    ADD = 1
    SUB = 2
    BIAS_ADD = 3
    MUL = 4
    SCALE = 5
    MATMUL = 6
    RESHAPE = 7
    PERMUTE = 8
    GATHER = 9
    MEAN = 10
    SUM = 11
    WEIGHTED_SUM = 12
    RING_ADD = 13
    PRG_MASK = 14
    RING_TO_FIXED = 15
    FIXED_TO_RING = 16
    CLIP = 17
    RELU = 18
    GELU = 19
    EXP = 20
    RECIPROCAL = 21
    INV_SQRT = 22
    SOFTMAX = 23
    LAYERNORM = 24
    WITNESS = 25
    COUNT_ABS = 26
    ASSERT_KTH = 27
    TIES_TRIM = 28
    TIES_SIGN = 29
    TIES_MEAN = 30
    BUNDLE = 31
    BUNDLE_GET = 32


# Parameter tuple of each op (abi types); ops not listed take empty params.
PARAM_TYPES: dict[Op, tuple[str, ...]] = {
    Op.SCALE: ("int64", "uint8"),
    Op.PERMUTE: ("uint8[]",),
    Op.WEIGHTED_SUM: ("int64[]", "uint8"),
    Op.PRG_MASK: ("bytes32", "bool"),
    Op.CLIP: ("int64", "int64"),
    Op.LAYERNORM: ("int64",),
    Op.COUNT_ABS: ("uint32",),
    Op.ASSERT_KTH: ("uint64",),
    Op.BUNDLE: ("bytes32[]",),
    Op.BUNDLE_GET: ("uint32", "bytes32"),
}

_UNARY_FIXED = {Op.RELU, Op.GELU, Op.EXP, Op.RECIPROCAL, Op.INV_SQRT, Op.CLIP, Op.SCALE}


def encode_params(op: Op, *values: Any) -> bytes:
    """abi.encode of the op's parameter tuple (empty bytes for ops without params)."""
    types = PARAM_TYPES.get(Op(op), ())
    if len(values) != len(types):
        raise BadInput(f"{Op(op).name} takes {len(types)} params, got {len(values)}")
    return abi_encode(list(types), list(values)) if types else b""


def decode_params(op: int, params: bytes) -> tuple[Any, ...] | None:
    """Decode params canonically; None if they do not decode or are not the canonical encoding."""
    try:
        types = PARAM_TYPES.get(Op(op), ())
    except ValueError:
        return None
    if not types:
        return () if params == b"" else None
    try:
        values = tuple(abi_decode(list(types), params, strict=True))
    except Exception:  # eth_abi raises several unrelated types for malformed data
        return None
    if abi_encode(list(types), list(values)) != params:
        return None
    return values


def _hdr(word: bytes) -> TensorHeader | None:
    try:
        return TensorHeader.decode(word)
    except BadInput:
        return None


def _same_fixed(hs: Sequence[TensorHeader]) -> bool:
    return all(h.domain == Domain.FIXED and h == hs[0] for h in hs)


def expected_out(op: int, params: bytes, in_words: Sequence[bytes], out_word: bytes) -> str | None:
    """Why a step is ill formed (a short reason), or None if it is well formed (§3.2, §3.4).

    For BUNDLE_GET only the bundle's header is in ``in_words``; that the entry's
    header equals ``outHeader`` is part of the element check, not of this one.
    """
    out = _hdr(out_word)
    if out is None:
        return "invalid outHeader"
    try:
        kind = Op(op)
    except ValueError:
        return f"unknown op {op}"
    p = decode_params(kind, params)
    if p is None:
        return "params do not decode"
    ins: list[TensorHeader] = []
    for w in in_words:
        h = _hdr(w)
        if h is None:
            return "invalid input header"
        ins.append(h)
    n = len(ins)
    fixed_out = out.domain == Domain.FIXED

    def arity(k: int) -> str | None:
        return None if n == k else f"{kind.name} takes {k} inputs, got {n}"

    if kind in (Op.ADD, Op.SUB):
        if (r := arity(2)) is not None:
            return r
        a, b = ins
        if a.domain != Domain.FIXED or b.domain != Domain.FIXED or a.shape != b.shape:
            return "inputs must be FIXED of one shape"
        return None if fixed_out and out.shape == a.shape else "outHeader shape/domain"
    if kind == Op.BIAS_ADD:
        if (r := arity(2)) is not None:
            return r
        a, b = ins
        if a.domain != Domain.FIXED or b.domain != Domain.FIXED or not a.shape or b.shape != a.shape[-1:]:
            return "bias must be FIXED [n] over a FIXED [..., n]"
        return None if fixed_out and out.shape == a.shape else "outHeader shape/domain"
    if kind == Op.MUL:
        if (r := arity(2)) is not None:
            return r
        a, b = ins
        ok = a.domain == Domain.FIXED and b.domain == Domain.FIXED
        ok = ok and (b.shape == a.shape or (len(a.shape) >= 1 and b.shape == a.shape[-1:]))
        if not ok:
            return "MUL inputs must be FIXED, same shape or a row vector"
        return None if fixed_out and out.shape == a.shape else "outHeader shape/domain"
    if kind in _UNARY_FIXED or kind in (Op.RING_TO_FIXED, Op.FIXED_TO_RING, Op.SOFTMAX, Op.LAYERNORM):
        if (r := arity(1)) is not None:
            return r
        (a,) = ins
        if kind == Op.SCALE and p[1] > FRAC_BITS_MAX:
            return "SCALE fs > 62"
        want_in = Domain.RING if kind == Op.RING_TO_FIXED else Domain.FIXED
        if a.domain != want_in:
            return f"input must be {want_in.name}"
        if kind in (Op.SOFTMAX, Op.LAYERNORM):
            bound = MAX_SOFTMAX if kind == Op.SOFTMAX else MAX_LAYERNORM
            if not a.shape or a.shape[-1] > bound:
                return f"row length must be 1..{bound}"
        if kind == Op.FIXED_TO_RING:
            ok = out.domain == Domain.RING and out.shape == a.shape and out.frac_bits == a.frac_bits
            return None if ok else "outHeader must be RING with the input's shape and f"
        return None if fixed_out and out.shape == a.shape else "outHeader shape/domain"
    if kind == Op.MATMUL:
        if (r := arity(2)) is not None:
            return r
        a, w = ins
        if a.domain != Domain.FIXED or w.domain != Domain.FIXED or len(a.shape) < 2 or len(w.shape) != 2:
            return "MATMUL takes FIXED a [..., M, K] and w [N, K]"
        if w.shape[1] != a.shape[-1] or a.shape[-1] > MAX_K:
            return f"K must match and be <= {MAX_K}"
        return None if fixed_out and out.shape == a.shape[:-1] + (w.shape[0],) else "outHeader shape/domain"
    if kind == Op.RESHAPE:
        if (r := arity(1)) is not None:
            return r
        (a,) = ins
        ok = a.domain != Domain.BUNDLE and out.domain == a.domain and out.frac_bits == a.frac_bits
        return None if ok and out.numel == a.numel else "RESHAPE keeps numel, domain and f"
    if kind == Op.PERMUTE:
        if (r := arity(1)) is not None:
            return r
        (a,) = ins
        perm = list(p[0])
        if a.domain == Domain.BUNDLE or sorted(perm) != list(range(len(a.shape))):
            return "perm must be a permutation of the input's axes"
        shape = tuple(a.shape[q] for q in perm)
        ok = out.domain == a.domain and out.frac_bits == a.frac_bits and out.shape == shape
        return None if ok else "outHeader shape/domain"
    if kind == Op.GATHER:
        if (r := arity(2)) is not None:
            return r
        ids, table = ins
        if ids.domain != Domain.FIXED or ids.frac_bits != 0 or len(ids.shape) > 5:
            return "ids must be FIXED f=0 of rank <= 5"
        if table.domain == Domain.BUNDLE or len(table.shape) != 2:
            return "table must be [V, D]"
        ok = out.domain == table.domain and out.frac_bits == table.frac_bits
        return None if ok and out.shape == ids.shape + (table.shape[1],) else "outHeader shape/domain"
    if kind in (Op.MEAN, Op.SUM):
        if (r := arity(1)) is not None:
            return r
        (a,) = ins
        if a.domain != Domain.FIXED or not a.shape or a.shape[-1] > MAX_REDUCE:
            return f"input must be FIXED with rows of 1..{MAX_REDUCE}"
        return None if fixed_out and out.shape == a.shape[:-1] else "outHeader shape/domain"
    if kind == Op.WEIGHTED_SUM:
        weights, fw = p
        if not 1 <= n <= MAX_INPUTS or len(weights) != n or fw > FRAC_BITS_MAX:
            return "one weight per input, 1..64 inputs, fw <= 62"
        if not _same_fixed(ins):
            return "inputs must share one FIXED header"
        return None if fixed_out and out.shape == ins[0].shape else "outHeader shape/domain"
    if kind == Op.RING_ADD:
        if not 1 <= n <= MAX_INPUTS or ins[0].domain != Domain.RING or any(h != ins[0] for h in ins):
            return "1..64 RING inputs of one header"
        return None if out == ins[0] else "outHeader must equal the inputs' header"
    if kind == Op.PRG_MASK:
        if (r := arity(0)) is not None:
            return r
        return None if out.domain == Domain.RING else "PRG_MASK outputs RING"
    if kind == Op.WITNESS:
        if (r := arity(0)) is not None:
            return r
        return None if out.domain != Domain.BUNDLE else "a witness is numeric"
    if kind in (Op.COUNT_ABS, Op.TIES_TRIM):
        if (r := arity(2)) is not None:
            return r
        a, tau = ins
        ok = a.domain == Domain.FIXED and tau.domain == Domain.FIXED and tau.shape == ()
        if not ok or tau.frac_bits != a.frac_bits:
            return "a FIXED tensor and a FIXED scalar tau at the same f"
        if kind == Op.TIES_TRIM:
            return None if fixed_out and out.shape == a.shape else "outHeader shape/domain"
        block = p[0]
        if not 1 <= block <= MAX_REDUCE:
            return f"block length must be 1..{MAX_REDUCE}"
        want = (2, -(-a.numel // block))
        return None if fixed_out and out.frac_bits == 0 and out.shape == want else "outHeader must be [2, R] f=0"
    if kind == Op.ASSERT_KTH:
        if (r := arity(1)) is not None:
            return r
        (c,) = ins
        if c.domain != Domain.FIXED or c.frac_bits != 0 or c.shape != (2,):
            return "ASSERT_KTH reads FIXED [2] f=0 totals"
        return None if fixed_out and out.frac_bits == 0 and out.shape == () else "outHeader must be a f=0 scalar"
    if kind == Op.TIES_SIGN:
        if not 1 <= n <= MAX_INPUTS or not _same_fixed(ins):
            return "1..64 inputs of one FIXED header"
        return None if fixed_out and out.frac_bits == 0 and out.shape == ins[0].shape else "outHeader shape/f"
    if kind == Op.TIES_MEAN:
        if not 2 <= n <= MAX_INPUTS + 1:
            return "a sign tensor and 1..64 task tensors"
        s, ts = ins[0], ins[1:]
        if not _same_fixed(ts) or s.domain != Domain.FIXED or s.frac_bits != 0 or s.shape != ts[0].shape:
            return "sign FIXED f=0 and task tensors of one FIXED header"
        return None if fixed_out and out.shape == s.shape else "outHeader shape/domain"
    if kind == Op.BUNDLE:
        hashes = list(p[0])
        if not 1 <= n <= MAX_INPUTS or len(hashes) != n:
            return "one name hash per input, 1..64 inputs"
        if any(hashes[i] >= hashes[i + 1] for i in range(n - 1)):
            return "name hashes must be strictly increasing"
        return None if out == TensorHeader(Domain.BUNDLE, 0, (n,)) else "outHeader must be BUNDLE [N]"
    if kind == Op.BUNDLE_GET:
        if (r := arity(1)) is not None:
            return r
        (b,) = ins
        if b.domain != Domain.BUNDLE or p[0] >= b.numel:
            return "BUNDLE_GET reads an existing entry of a bundle"
        return None if out.domain != Domain.BUNDLE else "BUNDLE_GET outputs a numeric tensor"
    return f"unhandled op {kind.name}"  # pragma: no cover - every Op is handled above


def decode_descriptor(descriptor: bytes) -> Step:
    """Parse abi.encode(uint16 op, uint32[] inputs, bytes32 outHeader, bytes params) back into a Step."""
    try:
        op, inputs, out_header, params = abi_decode(["uint16", "uint32[]", "bytes32", "bytes"], descriptor, strict=True)
    except Exception as exc:  # eth_abi raises several unrelated types for malformed data
        raise BadInput(f"not a step descriptor: {exc}") from None
    step = Step(int(op), tuple(int(t) for t in inputs), bytes(out_header), bytes(params))
    if step.descriptor != descriptor:
        raise BadInput("non-canonical step descriptor")
    return step


@dataclass(frozen=True)
class Step:
    """One step: op, input tensor ids, the fixed output header word and abi-encoded params."""

    op: int
    inputs: tuple[int, ...]
    out_header: bytes
    params: bytes = b""

    @property
    def descriptor(self) -> bytes:
        """abi.encode(uint16 op, uint32[] inputs, bytes32 outHeader, bytes params)."""
        return encode_descriptor(self.op, self.inputs, self.out_header, self.params)

    @property
    def header(self) -> TensorHeader:
        """The declared output header (raises BadInput if it is not valid)."""
        return TensorHeader.decode(self.out_header)


@dataclass
class Program:
    """Steps over ``n_inputs`` claim inputs; programRoot commits to every descriptor."""

    n_inputs: int
    steps: list[Step]
    _tree: MerkleTree | None = field(default=None, init=False, repr=False)

    @property
    def step_tree(self) -> MerkleTree:
        """Merkle tree over the step leaves (padding leaf 0x00…00)."""
        if self._tree is None:
            if not self.steps:
                raise BadInput("a program needs at least one step")
            leaves = [step_leaf(i, s.descriptor) for i, s in enumerate(self.steps)]
            self._tree = MerkleTree(leaves, PAD_STEP_LEAF)
        return self._tree

    @property
    def root(self) -> bytes:
        """programRoot = keccak(0x06 ‖ uint256(n) ‖ stepTreeRoot)."""
        return program_root(len(self.steps), self.step_tree.root)

    def step_proof(self, index: int) -> list[bytes]:
        """Single-leaf proof of step ``index`` against the step tree root."""
        return self.step_tree.proof(index)

    def to_bytes(self) -> bytes:
        """abi.encode(uint32 nInputs, bytes[] descriptors): the file a claim's program is shipped in."""
        return abi_encode(["uint32", "bytes[]"], [self.n_inputs, [st.descriptor for st in self.steps]])

    @classmethod
    def from_bytes(cls, raw: bytes) -> Program:
        """Inverse of :meth:`to_bytes`; malformed bytes raise BadInput (steps may still be ill formed)."""
        try:
            n_inputs, descriptors = abi_decode(["uint32", "bytes[]"], raw, strict=True)
            steps = [decode_descriptor(d) for d in descriptors]
        except BadInput:
            raise
        except Exception as exc:  # eth_abi raises several unrelated types for malformed data
            raise BadInput(f"not an encoded program: {exc}") from None
        if not steps:
            raise BadInput("a program needs at least one step")
        return cls(int(n_inputs), steps)


@dataclass(frozen=True)
class Ref:
    """A tensor id inside a :class:`ProgramBuilder` with its header (so shapes are inferred)."""

    id: int
    header: TensorHeader

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's shape."""
        return self.header.shape

    @property
    def f(self) -> int:
        """Fractional bits."""
        return self.header.frac_bits


def _fx(shape: Sequence[int], f: int) -> TensorHeader:
    return TensorHeader(Domain.FIXED, f, tuple(shape))


class ProgramBuilder:
    """Builds well-formed programs: each method appends one step, checks it and returns its output.

    Inputs are the claim's input bundle entries, so their ids follow name-hash
    order; construct with every input's header, then call ops.
    """

    def __init__(self, inputs: dict[str, TensorHeader]) -> None:
        from collab.fraudproof.commitments import name_hash

        self.input_names = sorted(inputs, key=name_hash)
        self.inputs = {name: Ref(i, inputs[name]) for i, name in enumerate(self.input_names)}
        self.steps: list[Step] = []
        self._headers: list[TensorHeader] = [inputs[n] for n in self.input_names]

    def __getitem__(self, name: str) -> Ref:
        return self.inputs[name]

    def step(self, op: Op, inputs: Sequence[Ref], out: TensorHeader, *params: Any) -> Ref:
        """Append one step after checking it is well formed."""
        raw = encode_params(op, *params)
        words = [r.header.encode() for r in inputs]
        reason = expected_out(op, raw, words, out.encode())
        if reason is not None:
            raise BadInput(f"{Op(op).name}: {reason}")
        self.steps.append(Step(int(op), tuple(r.id for r in inputs), out.encode(), raw))
        ref = Ref(len(self._headers), out)
        self._headers.append(out)
        return ref

    def build(self) -> Program:
        """The program so far."""
        return Program(len(self.input_names), list(self.steps))

    # ---------------------------------------------------------------- op helpers (fo defaults to the input's f)

    def add(self, a: Ref, b: Ref, fo: int | None = None) -> Ref:
        return self.step(Op.ADD, [a, b], _fx(a.shape, max(a.f, b.f) if fo is None else fo))

    def sub(self, a: Ref, b: Ref, fo: int | None = None) -> Ref:
        return self.step(Op.SUB, [a, b], _fx(a.shape, max(a.f, b.f) if fo is None else fo))

    def bias_add(self, a: Ref, b: Ref, fo: int | None = None) -> Ref:
        return self.step(Op.BIAS_ADD, [a, b], _fx(a.shape, a.f if fo is None else fo))

    def mul(self, a: Ref, b: Ref, fo: int | None = None) -> Ref:
        return self.step(Op.MUL, [a, b], _fx(a.shape, a.f if fo is None else fo))

    def scale(self, a: Ref, s: int, fs: int, fo: int | None = None) -> Ref:
        return self.step(Op.SCALE, [a], _fx(a.shape, a.f if fo is None else fo), s, fs)

    def matmul(self, a: Ref, w: Ref, fo: int | None = None) -> Ref:
        return self.step(Op.MATMUL, [a, w], _fx(a.shape[:-1] + (w.shape[0],), a.f if fo is None else fo))

    def reshape(self, a: Ref, shape: Sequence[int]) -> Ref:
        return self.step(Op.RESHAPE, [a], TensorHeader(a.header.domain, a.f, tuple(shape)))

    def permute(self, a: Ref, perm: Sequence[int]) -> Ref:
        shape = tuple(a.shape[q] for q in perm)
        return self.step(Op.PERMUTE, [a], TensorHeader(a.header.domain, a.f, shape), list(perm))

    def gather(self, ids: Ref, table: Ref) -> Ref:
        out = TensorHeader(table.header.domain, table.f, ids.shape + (table.shape[1],))
        return self.step(Op.GATHER, [ids, table], out)

    def mean(self, a: Ref, fo: int | None = None) -> Ref:
        return self.step(Op.MEAN, [a], _fx(a.shape[:-1], a.f if fo is None else fo))

    def sum(self, a: Ref, fo: int | None = None) -> Ref:
        return self.step(Op.SUM, [a], _fx(a.shape[:-1], a.f if fo is None else fo))

    def weighted_sum(self, xs: Sequence[Ref], weights: Sequence[int], fw: int, fo: int | None = None) -> Ref:
        out = _fx(xs[0].shape, xs[0].f if fo is None else fo)
        return self.step(Op.WEIGHTED_SUM, list(xs), out, [int(w) for w in weights], fw)

    def ring_add(self, xs: Sequence[Ref]) -> Ref:
        return self.step(Op.RING_ADD, list(xs), xs[0].header)

    def prg_mask(self, seed: bytes, shape: Sequence[int], f: int, negate: bool = False) -> Ref:
        return self.step(Op.PRG_MASK, [], TensorHeader(Domain.RING, f, tuple(shape)), seed, negate)

    def ring_to_fixed(self, a: Ref, fo: int | None = None) -> Ref:
        return self.step(Op.RING_TO_FIXED, [a], _fx(a.shape, a.f if fo is None else fo))

    def fixed_to_ring(self, a: Ref) -> Ref:
        return self.step(Op.FIXED_TO_RING, [a], TensorHeader(Domain.RING, a.f, a.shape))

    def clip(self, a: Ref, lo: int, hi: int, fo: int | None = None) -> Ref:
        return self.step(Op.CLIP, [a], _fx(a.shape, a.f if fo is None else fo), lo, hi)

    def unary(self, op: Op, a: Ref, fo: int | None = None) -> Ref:
        """RELU, GELU, EXP, RECIPROCAL, INV_SQRT, SOFTMAX."""
        return self.step(op, [a], _fx(a.shape, a.f if fo is None else fo))

    def relu(self, a: Ref, fo: int | None = None) -> Ref:
        return self.unary(Op.RELU, a, fo)

    def gelu(self, a: Ref, fo: int | None = None) -> Ref:
        return self.unary(Op.GELU, a, fo)

    def softmax(self, a: Ref, fo: int | None = None) -> Ref:
        return self.unary(Op.SOFTMAX, a, fo)

    def layernorm(self, a: Ref, eps: int, fo: int | None = None) -> Ref:
        return self.step(Op.LAYERNORM, [a], _fx(a.shape, a.f if fo is None else fo), eps)

    def witness(self, header: TensorHeader) -> Ref:
        return self.step(Op.WITNESS, [], header)

    def count_abs(self, a: Ref, tau: Ref, block: int) -> Ref:
        return self.step(Op.COUNT_ABS, [a, tau], _fx((2, -(-a.header.numel // block)), 0), block)

    def assert_kth(self, counts: Ref, k: int) -> Ref:
        return self.step(Op.ASSERT_KTH, [counts], _fx((), 0), k)

    def ties_trim(self, a: Ref, tau: Ref, fo: int | None = None) -> Ref:
        return self.step(Op.TIES_TRIM, [a, tau], _fx(a.shape, a.f if fo is None else fo))

    def ties_sign(self, ts: Sequence[Ref]) -> Ref:
        return self.step(Op.TIES_SIGN, list(ts), _fx(ts[0].shape, 0))

    def ties_mean(self, sign: Ref, ts: Sequence[Ref], fo: int | None = None) -> Ref:
        return self.step(Op.TIES_MEAN, [sign, *ts], _fx(sign.shape, ts[0].f if fo is None else fo))

    def bundle(self, entries: dict[str, Ref]) -> Ref:
        """A BUNDLE of named tensors (entries sorted by name hash, as commit_bundle does)."""
        from collab.fraudproof.commitments import name_hash

        names = sorted(entries, key=name_hash)
        out = TensorHeader(Domain.BUNDLE, 0, (len(names),))
        return self.step(Op.BUNDLE, [entries[n] for n in names], out, [name_hash(n) for n in names])

    def bundle_get(self, bundle: Ref, index: int, name_hash_: bytes, header: TensorHeader) -> Ref:
        return self.step(Op.BUNDLE_GET, [bundle], header, index, name_hash_)


__all__ = [
    "Op",
    "PARAM_TYPES",
    "Program",
    "ProgramBuilder",
    "Ref",
    "Step",
    "decode_descriptor",
    "decode_params",
    "encode_params",
    "expected_out",
]
