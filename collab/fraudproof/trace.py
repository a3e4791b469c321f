"""Committed traces: run a program over an input bundle and commit every step's output (protocol §4).

The trace is what a claimer posts and a challenger recomputes: each step's
output tensor with its chunk tree and root, the trace tree over
``keccak(0x02 ‖ i ‖ outputRoot_i)``, and everything the one-step proof needs
(step proofs, input roots, input chunk ranges with range proofs, the expected
element). Commitment cost is kept low by hashing each tensor's chunks once, in
bulk, and reusing the trees for every proof.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from collab.errors import BadInput, ProtocolViolation
from collab.fixedpoint import Domain
from collab.fraudproof import native
from collab.fraudproof.commitments import (
    CHUNK_BYTES,
    CHUNK_ELEMS,
    PAD_CHUNK_LEAF,
    PAD_ENTRY_LEAF,
    PAD_TRACE_LEAF,
    MerkleTree,
    TensorHeader,
    entry_leaf,
    name_hash,
    chunk_leaves_raw,
    tensor_root,
    trace_leaf,
)
from collab.fraudproof.program import Op, Program, decode_params, expected_out
from collab.fraudproof.vm import NoValidOutput, Value, element_value, execute_step, input_ranges


class Verdict(IntEnum):
    """Mirror of IOneStepVerifier.Verdict."""

    VALUE = 0
    ANY_VALUE = 1
    NO_VALID_VALUE = 2


class Committed:
    """A VM value with its data tree: chunk tree (numeric) or entry tree (bundle).

    :meth:`known` makes one from a chunk root computed earlier (an input
    tensor hashed by an earlier claim): its tree is rebuilt, and checked
    against that root, only when a proof or a served chunk needs it.
    """

    def __init__(self, value: Value, tree: MerkleTree | None, data: bytes | None = None,
                 chunk_root: bytes | None = None) -> None:
        if tree is None and chunk_root is None:
            raise ValueError("a commitment needs its tree or its chunk root")
        self.value = value
        self._tree = tree
        self._data = data
        self._chunk_root = chunk_root if tree is None else tree.root

    @classmethod
    def known(cls, value: Value, chunk_root: bytes) -> Committed:
        """A numeric value whose chunk root is already known (its tree is built on first use)."""
        if value.header.domain == Domain.BUNDLE:
            raise ValueError("a bundle's commitment is built from its entries")
        return cls(value, None, chunk_root=chunk_root)

    @property
    def tree(self) -> MerkleTree:
        """The chunk (entry) tree; for a :meth:`known` root, rebuilt now and checked against it."""
        if self._tree is None:
            tree, data = _chunk_tree(self.value)
            if tree.root != self._chunk_root:
                raise ProtocolViolation(f"a cached commitment of a {self.header.shape} tensor does not match its words "
                                        f"(0x{tree.root.hex()} vs 0x{(self._chunk_root or b'').hex()})")
            self._tree, self._data = tree, self._data if data is None else data
        return self._tree

    @property
    def data(self) -> bytes:
        """Numeric: big-endian words padded to whole chunks; bundle: 64-byte entries.

        Built on first use: committing hashes the words natively without this
        copy, and only tensors that are revealed or served need it."""
        if self._data is None:
            words = np.ascontiguousarray(self.value.flat()).astype(">i8").tobytes()
            self._data = words + b"\x00" * ((-len(words)) % CHUNK_BYTES)
        return self._data

    @property
    def header(self) -> TensorHeader:
        """The tensor's header."""
        return self.value.header

    @property
    def chunk_root(self) -> bytes:
        """Root of the chunk (entry) tree."""
        return self._chunk_root if self._chunk_root is not None else self.tree.root

    @property
    def root(self) -> bytes:
        """Tensor root keccak(0x03 ‖ chunkRoot ‖ header)."""
        return tensor_root(self.chunk_root, self.header.encode())

    @property
    def leaf_size(self) -> int:
        """Bytes per leaf: 256 for a chunk, 64 for a bundle entry."""
        return 64 if self.header.domain == Domain.BUNDLE else CHUNK_BYTES

    def leaf_bytes(self, index: int) -> bytes:
        """Bytes of leaf ``index`` (zero beyond the data)."""
        size = self.leaf_size
        part = self.data[index * size : (index + 1) * size]
        return part if part else b"\x00" * size

    def element_range(self, start: int, end: int) -> tuple[int, bytes, list[bytes]]:
        """(first leaf, leaf bytes, range proof) covering elements [start, end); empty when start == end."""
        if start >= end:
            return 0, b"", []
        per = 1 if self.header.domain == Domain.BUNDLE else CHUNK_ELEMS
        first, last = start // per, (end - 1) // per
        size = self.leaf_size
        raw = b"".join(self.leaf_bytes(c) for c in range(first, last + 1))
        assert len(raw) == size * (last - first + 1)
        return first, raw, self.tree.range_proof(first, last + 1)


def commit_value(value: Value, cache: dict[int, Committed] | None = None) -> Committed:
    """Commit a VM value (bundles commit their entries' roots, reusing ``cache`` by identity)."""
    cache = {} if cache is None else cache
    hit = cache.get(id(value))
    if hit is not None and hit.value is value:
        return hit
    if value.header.domain == Domain.BUNDLE:
        entries = value.entries or ()
        roots = [commit_value(v, cache).root for _, v in entries]
        data = b"".join(nh + r for (nh, _), r in zip(entries, roots))
        tree = MerkleTree([entry_leaf(nh, r) for (nh, _), r in zip(entries, roots)], PAD_ENTRY_LEAF)
    else:
        tree, data = _chunk_tree(value)
    out = Committed(value, tree, data)
    cache[id(value)] = out
    return out


def _chunk_tree(value: Value) -> tuple[MerkleTree, bytes | None]:
    """A numeric value's chunk tree (hashed natively when the library is built), and its padded
    big-endian words when the fallback had to build them anyway."""
    leaves = native.chunk_leaves(value.flat())
    data = None
    if leaves is None:
        words = np.ascontiguousarray(value.flat()).astype(">i8").tobytes()
        data = words + b"\x00" * ((-len(words)) % CHUNK_BYTES)
        leaves = chunk_leaves_raw(data)
    return MerkleTree(leaves, PAD_CHUNK_LEAF), data


def input_bundle(inputs: Mapping[str, Value]) -> list[tuple[bytes, Value]]:
    """Named inputs in bundle order (by name hash): tensor id t is entry t."""
    return sorted(((name_hash(n), v) for n, v in inputs.items()), key=lambda kv: kv[0])


@dataclass
class OneStepInput:
    """One IOneStepVerifier.InputTensor, ready for abi encoding."""

    header: bytes
    chunk_root: bytes
    first_chunk: int
    chunks: bytes
    proof: list[bytes]

    def as_tuple(self) -> tuple[bytes, bytes, int, bytes, list[bytes]]:
        """(header, chunkRoot, firstChunk, chunks, proof) in struct order."""
        return (self.header, self.chunk_root, self.first_chunk, self.chunks, self.proof)


@dataclass
class InputOrigin:
    """Where an input tensor root of step i comes from, with its proof (protocol §5.3 item 2).

    ``kind`` is ``"input"`` (entry ``index`` of the claim's input bundle: leaf
    ``keccak(0x05 ‖ nameHash ‖ root)`` against the bundle's chunk root) or
    ``"trace"`` (leaf ``keccak(0x02 ‖ index ‖ root)`` against ``traceRoot``).
    """

    tensor_id: int
    kind: str
    index: int
    root: bytes
    name_hash: bytes
    proof: list[bytes]


@dataclass
class StepProof:
    """Everything ``proveStep`` needs for element ``element`` of step ``step``."""

    step: int
    descriptor: bytes
    step_proof: list[bytes]
    origins: list[InputOrigin]
    inputs: list[OneStepInput]
    element: int
    verdict: Verdict
    expected: bytes


@dataclass
class Trace:
    """A program run over an input bundle with every output committed."""

    program: Program
    inputs: list[Committed]
    bundle: Committed
    outputs: list[Committed]
    tree: MerkleTree
    _cache: dict[int, Committed] = field(default_factory=dict, repr=False)

    @property
    def root(self) -> bytes:
        """traceRoot."""
        return self.tree.root

    def committed(self, value: Value) -> Committed | None:
        """The commitment this trace made (or was given) of ``value``, by identity; None if it has none."""
        c = self._cache.get(id(value))
        return c if c is not None and c.value is value else None

    @property
    def input_root(self) -> bytes:
        """inputRoot: the input bundle's root."""
        return self.bundle.root

    @property
    def output_root(self) -> bytes:
        """Tensor root of the last step's output."""
        return self.outputs[-1].root

    def tensor(self, t: int) -> Committed:
        """Tensor id ``t``: input entry or a step's output."""
        n_in = self.program.n_inputs
        return self.inputs[t] if t < n_in else self.outputs[t - n_in]

    def step_inputs(self, i: int) -> list[Committed]:
        """The committed inputs of step ``i`` in descriptor order."""
        return [self.tensor(t) for t in self.program.steps[i].inputs]

    def one_step_inputs(self, i: int, e: int) -> list[OneStepInput]:
        """The ``inputs`` argument of IOneStepVerifier.evaluate for element ``e`` of step ``i``."""
        step = self.program.steps[i]
        ins = self.step_inputs(i)
        if step.op == Op.BUNDLE_GET:
            index = int.from_bytes(step.params[:32], "big")
            entries = ins[0].value.entries or ()
            if index < len(entries):
                ins = ins + [commit_value(entries[index][1], self._cache)]
            else:  # ill-formed: the verifier ignores the appended tensor, but the slot must exist
                ins = ins + [commit_value(Value(TensorHeader(Domain.FIXED, 0, ()), np.zeros((), np.int64)), self._cache)]
        id_value = 0
        if step.op == Op.GATHER:
            dim = ins[1].header.shape[1]
            if e < TensorHeader.decode(step.out_header).numel:
                id_value = int(ins[0].value.flat()[e // dim])
        try:
            ranges = input_ranges(step, [c.header for c in ins], e, id_value)
        except (BadInput, ValueError, IndexError):
            ranges = [(0, 0)] * len(ins)
        out: list[OneStepInput] = []
        for c, (start, end) in zip(ins, ranges):
            first, raw, proof = c.element_range(start, end)
            out.append(OneStepInput(c.header.encode(), c.chunk_root, first, raw, proof))
        return out

    def expected(self, i: int, e: int) -> tuple[Verdict, bytes]:
        """What the verifier must answer for element ``e`` of step ``i`` (32-byte word)."""
        step = self.program.steps[i]
        ins = [c.value for c in self.step_inputs(i)]
        if step.op == Op.BUNDLE:
            words = [v.header.encode() for v in ins]
            if expected_out(step.op, step.params, words, step.out_header) is not None:
                return Verdict.NO_VALID_VALUE, b"\x00" * 32
            if e >= len(ins):
                return Verdict.VALUE, PAD_ENTRY_LEAF
            hashes = decode_params(step.op, step.params)[0]  # type: ignore[index]
            return Verdict.VALUE, entry_leaf(hashes[e], self.step_inputs(i)[e].root)
        try:
            v = element_value(step, ins, e)
        except NoValidOutput:
            return Verdict.NO_VALID_VALUE, b"\x00" * 32
        if v is None:
            return Verdict.ANY_VALUE, b"\x00" * 32
        return Verdict.VALUE, (v % (1 << 256)).to_bytes(32, "big")

    def origin(self, t: int) -> InputOrigin:
        """The provenance proof of tensor id ``t`` (input-bundle entry or trace leaf)."""
        n_in = self.program.n_inputs
        if t < n_in:
            entries = self.bundle.value.entries or ()
            return InputOrigin(t, "input", t, self.inputs[t].root, entries[t][0], self.bundle.tree.proof(t))
        j = t - n_in
        return InputOrigin(t, "trace", j, self.outputs[j].root, b"", self.tree.proof(j))

    def step_proof(self, i: int, e: int) -> StepProof:
        """The one-step proof of element ``e`` of step ``i`` against this trace's commitments."""
        step = self.program.steps[i]
        verdict, expected = self.expected(i, e)
        return StepProof(
            step=i,
            descriptor=step.descriptor,
            step_proof=self.program.step_proof(i),
            origins=[self.origin(t) for t in step.inputs],
            inputs=self.one_step_inputs(i, e),
            element=e,
            verdict=verdict,
            expected=expected,
        )

    def claimed_element(self, i: int, e: int) -> bytes:
        """The element this trace reveals at (i, e), encoded like ``expected`` (entry leaf for bundles)."""
        c = self.outputs[i]
        if c.header.domain == Domain.BUNDLE:
            return c.tree.leaf(e) if e < (1 << c.tree.depth) else PAD_ENTRY_LEAF
        flat = c.value.flat()
        v = int(flat[e]) if e < flat.size else 0
        return (v % (1 << 256)).to_bytes(32, "big")


COMMIT_WORKERS = max(1, min(4, os.cpu_count() or 1))  # hashing dominates memory-bound programs


class _Committer:
    """Commits values on a thread pool: each value object once, a bundle only after its entries.

    Tasks start in submission order and a bundle's entries are submitted
    before it, so a task only ever waits on tasks already running or done.
    """

    def __init__(self, pool: ThreadPoolExecutor, cache: dict[int, Committed]) -> None:
        self.pool, self.cache = pool, cache
        self.futures: dict[int, tuple[Value, Future[Committed]]] = {}

    def submit(self, value: Value) -> Future[Committed]:
        known = self.futures.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        future = self.pool.submit(self._commit, value, self._entry_futures(value))
        self.futures[id(value)] = (value, future)
        return future

    def _entry_futures(self, value: Value) -> list[Future[Committed]]:
        out: list[Future[Committed]] = []
        for _, entry in value.entries or ():
            known = self.futures.get(id(entry))
            if known is not None and known[0] is entry:
                out.append(known[1])
            else:
                out.extend(self._entry_futures(entry))
        return out

    def _commit(self, value: Value, entries: list[Future[Committed]]) -> Committed:
        for f in entries:
            f.result()
        return commit_value(value, self.cache)


def build_trace(
    program: Program,
    inputs: Mapping[str, Value | Committed],
    witnesses: Mapping[int, np.ndarray] | None = None,
    overrides: Mapping[int, Value] | None = None,
    executed: Callable[[Value], None] | None = None,
) -> Trace:
    """Execute and commit ``program``; ``overrides`` replace step outputs (dishonest agents, tests).

    Inputs may be passed already committed (e.g. an asset's tensors, hashed
    once at registration), which skips rehashing them. ``executed`` gets the
    last step's value as soon as execution ends, on this thread, while the
    commit threads are still hashing: work on the result (a claimed merge
    writes its artifact) overlaps the commitments instead of following them.
    """
    cache: dict[int, Committed] = {}
    plain: dict[str, Value] = {}
    for name, item in inputs.items():
        if isinstance(item, Committed):
            cache[id(item.value)] = item
            plain[name] = item.value
        else:
            plain[name] = item
    ordered = input_bundle(plain)
    if len(ordered) != program.n_inputs:
        raise BadInput(f"the program takes {program.n_inputs} inputs, got {len(ordered)}")
    values = [v for _, v in ordered]
    # Pipeline: this thread executes step i+1 while COMMIT_WORKERS threads commit the inputs and
    # earlier steps (numpy's large-array kernels and the native keccak release the GIL). Every value
    # is committed once, a bundle only after its entries, so the result is the sequential one.
    with ThreadPoolExecutor(max_workers=COMMIT_WORKERS, thread_name_prefix="commit") as pool:
        committer = _Committer(pool, cache)
        inputs_pending = [committer.submit(v) for _, v in ordered]
        pending: list[Future[Committed]] = []
        for i, step in enumerate(program.steps):
            if overrides and i in overrides:
                v = overrides[i]
            else:
                if any(t >= program.n_inputs + i for t in step.inputs):
                    raise NoValidOutput(f"step {i} reads a tensor that is not computed yet")
                v = execute_step(step, [values[t] for t in step.inputs], (witnesses or {}).get(i))
            values.append(v)
            pending.append(committer.submit(v))
        if executed is not None and program.steps:
            executed(values[-1])
        committed_in = [f.result() for f in inputs_pending]
        outputs = [f.result() for f in pending]
    bundle_value = Value(TensorHeader(Domain.BUNDLE, 0, (len(ordered),)), None, tuple(ordered))
    bundle_c = commit_value(bundle_value, cache)  # its entries' roots are cached by now
    leaves = [trace_leaf(i, c.root) for i, c in enumerate(outputs)]
    tree = MerkleTree(leaves, PAD_TRACE_LEAF)
    return Trace(program, committed_in, bundle_c, outputs, tree, cache)


def trace_element_count(trace: Trace) -> int:
    """Total committed elements (benchmarks)."""
    return sum(c.header.numel for c in trace.outputs if c.header.domain != Domain.BUNDLE)


__all__ = [
    "Committed",
    "InputOrigin",
    "OneStepInput",
    "StepProof",
    "Trace",
    "Verdict",
    "build_trace",
    "commit_value",
    "input_bundle",
    "trace_element_count",
]
