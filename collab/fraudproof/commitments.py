"""Commitments of the fraud-proof protocol: chunks, Merkle trees, tensor/trace/program roots.

Byte-exact with ``chain/contracts/lib/LibMerkle.sol`` and docs/protocol.md §2-§4:
binary trees padded to a power of two with a per-kind padding leaf, distinct
one-byte prefixes for every kind of leaf and for internal nodes, 32-element
(256-byte) chunks of big-endian int64 words. Trees keep every level in memory
so the game agents can answer any reveal or proof request without rehashing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from eth_abi import encode as abi_encode
from eth_hash.auto import keccak

from collab.errors import BadInput, ProtocolViolation
from collab.fixedpoint import FRAC_BITS_MAX, Domain
from collab.fraudproof import native

CHUNK_ELEMS = 32
CHUNK_BYTES = 8 * CHUNK_ELEMS
MAX_RANK = 6
MAX_NUMEL = 1 << 40

PREFIX_CHUNK = b"\x00"
PREFIX_NODE = b"\x01"
PREFIX_TRACE = b"\x02"
PREFIX_TENSOR = b"\x03"
PREFIX_STEP = b"\x04"
PREFIX_ENTRY = b"\x05"
PREFIX_PROGRAM = b"\x06"

ZERO32 = b"\x00" * 32
PAD_CHUNK_LEAF = keccak(PREFIX_CHUNK + b"\x00" * CHUNK_BYTES)
PAD_ENTRY_LEAF = keccak(PREFIX_ENTRY + b"\x00" * 64)
PAD_TRACE_LEAF = ZERO32
PAD_STEP_LEAF = ZERO32


# --------------------------------------------------------------------------- hashing


def _keccak_many_c(data: bytes, size: int) -> list[bytes]:
    """keccak of each ``size``-byte slice through pycryptodome's C keccak, one state reused.

    A ``keccak()`` call costs ~10 µs of Python object overhead for ~1 µs of
    hashing; driving the C functions directly over one buffer is ~3x cheaper,
    which is what keeps committing a trace within ~3x of executing it.
    """
    from Crypto.Hash.keccak import _raw_keccak_lib as lib
    from Crypto.Util._raw_api import ffi

    n = len(data) // size
    state = ffi.new("void **")
    if lib.keccak_init(state, 64, 24):
        raise RuntimeError("keccak_init failed")
    st = state[0]
    try:
        src = ffi.from_buffer(data)
        out = ffi.new("uint8_t[]", 32 * n)
        reset, absorb, digest = lib.keccak_reset, lib.keccak_absorb, lib.keccak_digest
        for i in range(n):
            reset(st)
            absorb(st, src + i * size, size)
            digest(st, out + 32 * i, 32, 1)
        raw = ffi.buffer(out)[:]
    finally:
        lib.keccak_destroy(st)
    return [raw[32 * i : 32 * i + 32] for i in range(n)]


def keccak_many_raw(data: bytes, size: int, prefix: bytes = b"") -> bytes | bytearray:
    """keccak(prefix ‖ slice) of every consecutive ``size``-byte slice of ``data``, concatenated.

    One native call (``native.py``) when the library is available, else
    pycryptodome's C keccak driven from Python; ``prefix`` is at most one byte.
    """
    if size <= 0 or len(data) % size:
        raise BadInput(f"{len(data)} bytes is not a whole number of {size}-byte preimages")
    if len(prefix) > 1:
        raise BadInput("a hash prefix is one byte")
    out = native.keccak_many(data, size, prefix[0] if prefix else None)
    if out is not None:
        return out
    if prefix:
        n = len(data) // size
        rows = np.frombuffer(data, dtype=np.uint8).reshape(n, size)
        data = np.hstack([np.full((n, 1), prefix[0], dtype=np.uint8), rows]).tobytes()
        size += 1
    if len(data) // size >= 8:
        try:
            return b"".join(_keccak_many_c(data, size))
        except (ImportError, AttributeError):  # pragma: no cover - pycryptodome without cffi
            pass
    return b"".join(keccak(data[i : i + size]) for i in range(0, len(data), size))


def _split(raw: bytes | bytearray) -> list[bytes]:
    raw = bytes(raw)
    return [raw[i : i + 32] for i in range(0, len(raw), 32)]


def keccak_many(data: bytes, size: int) -> list[bytes]:
    """keccak of every consecutive ``size``-byte slice of ``data`` (bulk hashing of leaves and nodes)."""
    return _split(keccak_many_raw(data, size))


def prefixed_many(prefix: bytes, data: bytes, size: int) -> list[bytes]:
    """keccak(prefix ‖ slice) for every ``size``-byte slice of ``data``."""
    return _split(keccak_many_raw(data, size, prefix))


def node_hash(left: bytes, right: bytes) -> bytes:
    """Internal node: keccak(0x01 ‖ left ‖ right)."""
    return keccak(PREFIX_NODE + left + right)


def chunk_leaf(chunk: bytes) -> bytes:
    """Leaf of one 256-byte chunk: keccak(0x00 ‖ chunk)."""
    if len(chunk) != CHUNK_BYTES:
        raise BadInput(f"a chunk is {CHUNK_BYTES} bytes, got {len(chunk)}")
    return keccak(PREFIX_CHUNK + chunk)


def trace_leaf(step: int, tensor_root: bytes) -> bytes:
    """Trace leaf: keccak(0x02 ‖ uint256(step) ‖ outputRoot)."""
    return keccak(PREFIX_TRACE + step.to_bytes(32, "big") + tensor_root)


def tensor_root(chunk_root: bytes, header: bytes) -> bytes:
    """Tensor root: keccak(0x03 ‖ chunkRoot ‖ header) — binds shape, domain and fractional bits."""
    return keccak(PREFIX_TENSOR + chunk_root + header)


def step_leaf(step: int, descriptor: bytes) -> bytes:
    """Program leaf: keccak(0x04 ‖ uint256(step) ‖ keccak(descriptor))."""
    return keccak(PREFIX_STEP + step.to_bytes(32, "big") + keccak(descriptor))


def entry_leaf(name_hash: bytes, root: bytes) -> bytes:
    """Bundle entry leaf: keccak(0x05 ‖ nameHash ‖ tensorRoot)."""
    return keccak(PREFIX_ENTRY + name_hash + root)


def program_root(step_count: int, step_tree_root: bytes) -> bytes:
    """Program root: keccak(0x06 ‖ uint256(n) ‖ stepTreeRoot), so the root binds the length."""
    return keccak(PREFIX_PROGRAM + step_count.to_bytes(32, "big") + step_tree_root)


def name_hash(name: str) -> bytes:
    """keccak of a tensor name's UTF-8 bytes (bundle entries are sorted by it)."""
    return keccak(name.encode("utf-8"))


def encode_descriptor(op: int, inputs: Sequence[int], out_header: bytes, params: bytes = b"") -> bytes:
    """abi.encode(uint16 op, uint32[] inputs, bytes32 outHeader, bytes params)."""
    return abi_encode(["uint16", "uint32[]", "bytes32", "bytes"], [op, list(inputs), out_header, params])


# --------------------------------------------------------------------------- headers


@dataclass(frozen=True)
class TensorHeader:
    """What a tensor root binds besides its data: domain, fractional bits, shape."""

    domain: Domain
    frac_bits: int
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.domain == Domain.BUNDLE and (self.frac_bits != 0 or len(self.shape) != 1):
            raise BadInput("a bundle header has fractional bits 0 and rank 1")
        if not 0 <= self.frac_bits <= FRAC_BITS_MAX:
            raise BadInput(f"fractional bits must be in [0, {FRAC_BITS_MAX}], got {self.frac_bits}")
        if len(self.shape) > MAX_RANK:
            raise BadInput(f"rank {len(self.shape)} exceeds {MAX_RANK}")
        if any(not 1 <= d < (1 << 32) for d in self.shape):
            raise BadInput(f"every dimension must be in [1, 2^32), got {self.shape}")
        if self.numel > MAX_NUMEL:
            raise BadInput(f"{self.numel} elements exceed the 2^40 limit")

    @property
    def numel(self) -> int:
        """Element count (1 for a scalar)."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def num_leaves(self) -> int:
        """Leaves of the data tree: chunks, or entries for a bundle."""
        if self.domain == Domain.BUNDLE:
            return self.numel
        return -(-self.numel // CHUNK_ELEMS)

    @property
    def pad_leaf(self) -> bytes:
        """Padding leaf of this tensor's data tree."""
        return PAD_ENTRY_LEAF if self.domain == Domain.BUNDLE else PAD_CHUNK_LEAF

    def encode(self) -> bytes:
        """The 32-byte header word (protocol §2.1)."""
        dims = list(self.shape) + [0] * (MAX_RANK - len(self.shape))
        body = bytes([int(self.domain), self.frac_bits, len(self.shape)])
        body += b"".join(d.to_bytes(4, "big") for d in dims)
        return body + b"\x00" * (32 - len(body))

    @classmethod
    def decode(cls, word: bytes) -> TensorHeader:
        """Parse and validate a header word; anything non-canonical is refused."""
        if len(word) != 32:
            raise BadInput("a header is 32 bytes")
        domain, frac, rank = word[0], word[1], word[2]
        if domain > int(Domain.BUNDLE) or rank > MAX_RANK:
            raise BadInput(f"invalid header {word.hex()}")
        dims = [int.from_bytes(word[3 + 4 * i : 7 + 4 * i], "big") for i in range(MAX_RANK)]
        header = cls(Domain(domain), frac, tuple(dims[:rank]))
        if header.encode() != word:
            raise BadInput(f"non-canonical header {word.hex()}")
        return header


# --------------------------------------------------------------------------- trees


def tree_depth(n: int) -> int:
    """D(n): 0 for one leaf, else ceil(log2 n)."""
    if n < 1:
        raise BadInput("a tree needs at least one leaf")
    return (n - 1).bit_length()


@lru_cache(maxsize=16)
def zero_hashes(pad_leaf: bytes, depth: int = 64) -> tuple[bytes, ...]:
    """Z_0 = pad leaf, Z_{l+1} = node(Z_l, Z_l): roots of all-padding subtrees."""
    out = [pad_leaf]
    for _ in range(depth):
        out.append(node_hash(out[-1], out[-1]))
    return tuple(out)


class MerkleTree:
    """A padded binary Merkle tree with every level kept (level 0 = leaves).

    Levels are stored as concatenated 32-byte hashes (one bytes object per
    level), built in one native call when available: a tree over 2^16 chunks
    is then one C loop instead of 2^17 Python-level hash calls.
    """

    def __init__(self, leaves: Sequence[bytes] | bytes | bytearray, pad_leaf: bytes) -> None:
        raw = leaves if isinstance(leaves, (bytes, bytearray)) else b"".join(leaves)
        if len(raw) % 32:
            raise BadInput("leaves are 32-byte hashes")
        depth = tree_depth(len(raw) // 32)
        zeros = zero_hashes(pad_leaf)
        self.pad_leaf = pad_leaf
        built = native.merkle_levels(raw, b"".join(zeros[:depth]), depth)
        if built is None:
            levels = [bytes(raw)]
            for level in range(depth):
                cur = levels[-1] + (zeros[level] if (len(levels[-1]) // 32) % 2 else b"")
                levels.append(bytes(keccak_many_raw(cur, 64, PREFIX_NODE)))
            built = bytearray(b"".join(levels)), [0]
            for lv in levels:
                built[1].append(built[1][-1] + len(lv) // 32)
        # One buffer for all levels (level l = hashes offsets[l] .. offsets[l + 1]); never mutated.
        self._buf, self._offsets = built

    @property
    def leaves(self) -> list[bytes]:
        """The leaf hashes."""
        return _split(bytes(self._buf[: 32 * self._offsets[1]]))

    @property
    def depth(self) -> int:
        """D(n)."""
        return len(self._offsets) - 2

    @property
    def root(self) -> bytes:
        """The tree's root."""
        return bytes(self._buf[32 * self._offsets[-2] : 32 * self._offsets[-2] + 32])

    def node(self, depth: int, index: int) -> bytes:
        """Node at (depth from the root, index); padding subtrees answer their zero hash."""
        level = self.depth - depth
        if not 0 <= level <= self.depth or not 0 <= index < (1 << depth):
            raise BadInput(f"no node ({depth}, {index}) in a tree of depth {self.depth}")
        start, end = self._offsets[level], self._offsets[level + 1]
        if start + index < end:
            return bytes(self._buf[32 * (start + index) : 32 * (start + index) + 32])
        return zero_hashes(self.pad_leaf)[level]

    def children(self, depth: int, index: int, m: int) -> list[bytes]:
        """The 2**m' descendants a reveal shows, m' = min(m, depth left)."""
        step = min(m, self.depth - depth)
        base = index << step
        return [self.node(depth + step, base + j) for j in range(1 << step)]

    def proof(self, index: int) -> list[bytes]:
        """Single-leaf proof: siblings bottom-up."""
        return self.range_proof(index, index + 1)

    def range_proof(self, start: int, end: int) -> list[bytes]:
        """Proof of the contiguous leaves [start, end) in the protocol's order (§2.4)."""
        if not 0 <= start < end <= (1 << self.depth):
            raise BadInput(f"bad leaf range [{start}, {end}) for depth {self.depth}")
        out: list[bytes] = []
        lo, hi = start, end - 1
        for level in range(self.depth):
            d = self.depth - level
            if lo % 2:
                out.append(self.node(d, lo - 1))
            if hi % 2 == 0:
                out.append(self.node(d, hi + 1))
            lo, hi = lo // 2, hi // 2
        return out

    def leaf(self, index: int) -> bytes:
        """Leaf hash at ``index`` (padding beyond the real leaves)."""
        return self.node(self.depth, index)


def root_from_range(leaves: Sequence[bytes], start: int, proof: Sequence[bytes], depth: int) -> bytes:
    """Recompute a root from contiguous leaves and their range proof (mirrors LibMerkle)."""
    nodes = list(leaves)
    if not nodes:
        raise ProtocolViolation("a range proof needs at least one leaf")
    k = 0
    lo = start
    try:
        for _ in range(depth):
            if lo % 2:
                nodes.insert(0, proof[k])
                k += 1
                lo -= 1
            if (lo + len(nodes) - 1) % 2 == 0:
                nodes.append(proof[k])
                k += 1
            nodes = [node_hash(nodes[i], nodes[i + 1]) for i in range(0, len(nodes), 2)]
            lo //= 2
    except IndexError as exc:
        raise ProtocolViolation("range proof too short") from exc
    if len(nodes) != 1 or k != len(proof) or lo != 0:
        raise ProtocolViolation("range proof does not match the range and depth")
    return nodes[0]


def root_from_proof(leaf: bytes, index: int, proof: Sequence[bytes]) -> bytes:
    """Root implied by a single-leaf proof (depth = proof length)."""
    return root_from_range([leaf], index, proof, len(proof))


def fold_children(children: Sequence[bytes]) -> bytes:
    """Fold 2**m revealed descendants back into their ancestor."""
    nodes = list(children)
    if not nodes or len(nodes) & (len(nodes) - 1):
        raise ProtocolViolation(f"{len(nodes)} children is not a power of two")
    while len(nodes) > 1:
        nodes = [node_hash(nodes[i], nodes[i + 1]) for i in range(0, len(nodes), 2)]
    return nodes[0]


# --------------------------------------------------------------------------- tensors


def chunk_data(values: np.ndarray) -> bytes:
    """Flat big-endian int64 bytes, zero-padded to whole chunks."""
    flat = np.ascontiguousarray(np.asarray(values, dtype=np.int64).ravel())
    raw = flat.astype(">i8").tobytes()
    pad = (-len(raw)) % CHUNK_BYTES
    return raw + b"\x00" * pad


def chunk_leaves(values: np.ndarray) -> list[bytes]:
    """Leaf hashes of every chunk of a flat int64 tensor."""
    return prefixed_many(PREFIX_CHUNK, chunk_data(values), CHUNK_BYTES)


def chunk_leaves_raw(data: bytes) -> bytes:
    """Leaf hashes of chunked data (whole 256-byte chunks), concatenated: what ``MerkleTree`` takes."""
    return keccak_many_raw(data, CHUNK_BYTES, PREFIX_CHUNK)


def element_of_chunk(chunk: bytes, u: int) -> int:
    """Element u (0..31) of a revealed chunk."""
    return int.from_bytes(chunk[8 * u : 8 * u + 8], "big", signed=True)


@dataclass
class CommittedTensor:
    """A VM tensor with its chunk tree and root: what a claimer serves and reveals from."""

    values: np.ndarray
    header: TensorHeader
    tree: MerkleTree

    @property
    def chunk_root(self) -> bytes:
        """Root of the chunk tree."""
        return self.tree.root

    @property
    def root(self) -> bytes:
        """Tensor root."""
        return tensor_root(self.tree.root, self.header.encode())

    def chunk(self, index: int) -> bytes:
        """The 256 bytes of chunk ``index`` (all zero beyond the data)."""
        flat = self.values.ravel()
        part = flat[index * CHUNK_ELEMS : (index + 1) * CHUNK_ELEMS]
        return chunk_data(part) if part.size else b"\x00" * CHUNK_BYTES

    def element_range_proof(self, start: int, end: int) -> tuple[list[bytes], int, list[bytes]]:
        """Chunks covering elements [start, end), the first chunk index, and their range proof."""
        first, last = start // CHUNK_ELEMS, (end - 1) // CHUNK_ELEMS
        chunks = [self.chunk(c) for c in range(first, last + 1)]
        return chunks, first, self.tree.range_proof(first, last + 1)


def commit_tensor(values: np.ndarray, header: TensorHeader) -> CommittedTensor:
    """Commit a FIXED or RING tensor (values are the int64 words)."""
    arr = np.asarray(values)
    if arr.dtype != np.int64:
        raise BadInput(f"VM tensors hold int64 words, got {arr.dtype}")
    if header.domain == Domain.BUNDLE:
        raise BadInput("use commit_bundle for bundles")
    if arr.size != header.numel:
        raise BadInput(f"{arr.size} values for a header of {header.numel} elements")
    leaves = native.chunk_leaves(arr)
    if leaves is None:
        leaves = chunk_leaves_raw(chunk_data(arr))
    return CommittedTensor(arr.reshape(header.shape), header, MerkleTree(leaves, PAD_CHUNK_LEAF))


@dataclass
class CommittedBundle:
    """A named list of tensor roots (a state dict's commitment, an asset's ``commitmentRoot``)."""

    names: list[str]
    roots: list[bytes]
    tree: MerkleTree

    @property
    def header(self) -> TensorHeader:
        """(BUNDLE, 0, [N])."""
        return TensorHeader(Domain.BUNDLE, 0, (len(self.names),))

    @property
    def root(self) -> bytes:
        """Bundle root."""
        return tensor_root(self.tree.root, self.header.encode())


def commit_bundle(entries: dict[str, bytes]) -> CommittedBundle:
    """Commit named tensor roots; entries are ordered by their name hash."""
    if not entries:
        raise BadInput("a bundle needs at least one entry")
    ordered = sorted(entries.items(), key=lambda kv: name_hash(kv[0]))
    names = [k for k, _ in ordered]
    roots = [v for _, v in ordered]
    leaves = [entry_leaf(name_hash(n), r) for n, r in zip(names, roots)]
    return CommittedBundle(names, roots, MerkleTree(leaves, PAD_ENTRY_LEAF))
