"""The batch keccak of ``keccak_native.c``, compiled on first use and loaded with ctypes.

Committing a trace hashes every chunk of every tensor and every Merkle node;
through Python each hash costs ~2.5 µs, of which ~2 µs is call overhead
(pycryptodome's C keccak itself needs ~0.4 µs per 136-byte block). One C call
per batch removes that overhead, and on x86-64 the C code hashes 4 (AVX2) or
8 (AVX-512) preimages side by side, one per vector lane. The shared object is built once per source
version with the system C compiler into ``$COLLAB_NATIVE_DIR`` (default
``~/.cache/collab``), written atomically so concurrent processes never load a
partial file. Without a compiler (or with ``COLLAB_NATIVE=0``) :func:`lib`
returns None and callers keep their pure-Python path; both give the same
bytes (tests/test_commitments.py holds them equal). The same library has the
two arithmetic kernels of a claimed merge's hot path, each one pass where numpy
needs several and their temporaries: the VM's WEIGHTED_SUM (:func:`weighted_sum`,
tests/test_vm.py holds it to the scalar definition and the numpy path) and
float32 quantisation (:func:`quantise_f32`, held to ``to_vm`` in
tests/test_merge_claim.py).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("keccak_native.c")
ENV_SWITCH = "COLLAB_NATIVE"
ENV_DIR = "COLLAB_NATIVE_DIR"


def _cache_dir() -> Path:
    explicit = os.environ.get(ENV_DIR)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "collab"


def _build(target: Path) -> bool:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        log.info("no C compiler: fraud-proof hashing stays in Python")
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        for extra in ([], ["-DCOLLAB_NO_SIMD"]):  # a compiler without AVX-512 support still gets the scalar code
            proc = subprocess.run([cc, "-O3", "-shared", "-fPIC", *extra, "-o", tmp, str(SOURCE)],
                                  capture_output=True, text=True, timeout=120, check=False)
            if proc.returncode == 0:
                os.replace(tmp, target)  # atomic: another process sees the old state or the whole file
                return True
        log.warning("building %s failed: %s", SOURCE.name, proc.stderr.strip()[-500:])
        return False
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@lru_cache(maxsize=1)
def lib() -> ctypes.CDLL | None:
    """The loaded library, or None when native hashing is off or cannot be built."""
    if os.environ.get(ENV_SWITCH, "1") == "0" or not SOURCE.is_file():
        return None
    tag = hashlib.sha256(SOURCE.read_bytes() + sys.platform.encode()).hexdigest()[:16]
    target = _cache_dir() / f"keccak-{tag}.so"
    try:
        if not target.is_file() and not _build(target):
            return None
        so = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("native keccak unavailable: %s", exc)
        return None
    so.collab_keccak_many.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
    so.collab_keccak_many.restype = ctypes.c_int
    so.collab_chunk_leaves_i64.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    so.collab_chunk_leaves_i64.restype = None
    so.collab_keccak_width.argtypes = [ctypes.c_int]
    so.collab_keccak_width.restype = ctypes.c_int
    so.collab_merkle_levels.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    so.collab_merkle_levels.restype = ctypes.c_size_t
    so.collab_weighted_sum_i64.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t,
                                           ctypes.c_int, ctypes.c_void_p]
    so.collab_weighted_sum_i64.restype = None
    so.collab_quantise_f32.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
    so.collab_quantise_f32.restype = ctypes.c_int
    return so


def _view(buf: bytearray) -> ctypes.Array[ctypes.c_char]:
    return (ctypes.c_char * len(buf)).from_buffer(buf)


def keccak_many(data: bytes | bytearray, size: int, prefix: int | None = None) -> bytearray | None:
    """keccak(prefix ‖ slice) of every ``size``-byte slice, concatenated; None without the library."""
    so = lib()
    if so is None:
        return None
    n = len(data) // size
    out = bytearray(32 * n)
    src = bytes(data) if isinstance(data, bytearray) else data
    if so.collab_keccak_many(src, size, n, -1 if prefix is None else prefix, _view(out)) != 0:
        return None  # a preimage longer than the C scratch buffer: the caller hashes it in Python
    return out


def chunk_leaves(words: np.ndarray) -> bytearray | None:
    """Chunk leaf hashes of a flat int64 tensor (big-endian chunks, zero-padded), concatenated;
    None without the library."""
    so = lib()
    flat = np.ascontiguousarray(words, dtype=np.int64).reshape(-1)
    if so is None or flat.size == 0:  # headers forbid empty tensors; leave that error to the caller
        return None
    out = bytearray(32 * -(-flat.size // 32))
    so.collab_chunk_leaves_i64(flat.ctypes.data, flat.size, _view(out))
    return out


def simd_width(limit: int = 0) -> int:
    """States hashed side by side (1, 4 with AVX2, 8 with AVX-512); ``limit`` > 0 caps it from now on."""
    so = lib()
    return 1 if so is None else int(so.collab_keccak_width(limit))


def merkle_levels(leaves: bytes | bytearray, zeros: bytes, depth: int) -> tuple[bytearray, list[int]] | None:
    """Every level of the padded tree over ``leaves`` (32 bytes each), leaves first, in one buffer,
    and the offset (in hashes) of each level; ``zeros[32 l : 32 l + 32]`` pads level ``l``.
    None without the library. One buffer and no per-level copies: at 2^16 leaves the copies
    cost as much as the hashing."""
    so = lib()
    if so is None:
        return None
    n = len(leaves) // 32
    buf = bytearray(32 * (2 * n + depth + 1))
    buf[: len(leaves)] = leaves
    so.collab_merkle_levels(_view(buf), n, zeros, depth)
    offsets, start, width = [], 0, n
    for _ in range(depth + 1):
        offsets.append(start)
        start += width
        width = (width + 1) // 2
    offsets.append(start)
    return buf, offsets


def weighted_sum(arrays: list[np.ndarray], weights: list[int], shift: int) -> np.ndarray | None:
    """``sat(rshift(Σ w_i · a_i, shift))`` elementwise (the VM's WEIGHTED_SUM), one pass, exact.

    Sums in int64 over blocks whose bound (Σ max|a_i| · |w_i|) proves it
    fits, else in 128 bits, so it needs ``len · max|w| < 2^63`` and
    ``0 ≤ shift ≤ 126``; outside that (or without the library) it returns
    None and the caller keeps its numpy path.
    """
    so = lib()
    if (so is None or not arrays or not 0 <= shift <= 126
            or len(weights) != len(arrays) or len(weights) * max(abs(int(w)) for w in weights) >= 1 << 63):
        return None
    flat = [np.ascontiguousarray(a, dtype=np.int64).reshape(-1) for a in arrays]
    n = flat[0].size
    if any(f.size != n for f in flat):
        return None
    out = np.empty(n, dtype=np.int64)
    pointers = (ctypes.c_void_p * len(flat))(*[f.ctypes.data for f in flat])
    ws = np.array([int(w) for w in weights], dtype=np.int64)
    so.collab_weighted_sum_i64(pointers, ws.ctypes.data, len(flat), n, shift, out.ctypes.data)
    return out.reshape(arrays[0].shape)


def quantise_f32(values: np.ndarray, frac_bits: int) -> np.ndarray | None:
    """``rint(values · 2^f)`` as int64 words for a float32 array, one pass and no float temporary.

    None without the library, for other dtypes, or when a value is not finite
    or reaches 2^62 in magnitude (the caller's generic path handles those).
    """
    so = lib()
    if so is None or values.dtype != np.float32 or not 0 <= frac_bits <= 62:
        return None
    flat = np.ascontiguousarray(values).reshape(-1)
    out = np.empty(flat.size, dtype=np.int64)
    if flat.size and so.collab_quantise_f32(flat.ctypes.data, flat.size, frac_bits, out.ctypes.data):
        return None
    return out.reshape(values.shape)


__all__ = ["chunk_leaves", "keccak_many", "lib", "merkle_levels", "quantise_f32", "simd_width", "weighted_sum"]
