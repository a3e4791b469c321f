"""The largest tensors of a merge in row blocks, through mergekit's own merge methods: same values, bounded memory.

Why: mergekit's executor loads every input of a tensor at once and its TIES
holds ~11 copies of it (inputs, stacked deltas, argsort indices, masks), so
one 30522×384 embedding set a MiniLM merge's peak at 5.6x the model's size.

How, without changing a value: the merge runs as usual through ``run_merge``,
but on input copies whose large tensors are cut to their first row (byte
ranges copied, nothing decoded); each large tensor is then merged by
mergekit's registered method itself (``mergekit.merge_methods.registry``,
the same ``method(groups, parameters=...)`` the executor calls), one row
block at a time read straight from the input files, and streamed into the
output file in place of the one-row placeholder.

When this is the same merge:

* ``task_arithmetic`` (and ``linear``, not blocked: mergekit already needs
  only ~1x for it) is elementwise: a row block's output is the rows of the
  whole tensor's output.
* ``ties`` trims each task vector to its k = max(1, ⌊density·n⌋) largest
  magnitudes, a choice over the whole tensor. Its k-th largest magnitude is
  found exactly in two streaming passes over the row blocks (a radix select
  on the float32 bit patterns of |θ − base|, which order like the values:
  16-bit histograms, then the low 16 bits within the selected bin); the trim
  keeps every magnitude above it and, among those equal to it, the first ones
  in index order, k in all. That is mergekit's ``magnitude`` with a *stable*
  ``argsort``; mergekit's own ``argsort`` is unstable (its order among equal
  magnitudes depends on the whole tensor and on torch's sort internals), and
  float32 deltas, multiples of their ulp, do tie at the k-th magnitude in
  practice, so the two differ only in which of those tied elements are kept.
  Everything after the trim is elementwise: per row block mergekit's TIES
  gets θ where the trim keeps it and the base elsewhere, with density 1,
  which is the same trimmed task vector (a trimmed entry is +0 rather than
  ±0: equal values). Peak: a few row blocks, nothing of tensor size.
* Not blocked: DARE (random masks drawn per tensor), SLERP (norms of whole
  tensors), TIES with ``rescale`` (an L1 norm of the whole tensor), LoRA
  inputs, non-float32 merges, per-layer parameter gradients, a base that is
  also listed among the models.

The tests compare the output with mergekit's unblocked ``run_merge`` (for TIES
with a stable ``argsort``), bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import torch

from collab.errors import BadInput
from collab.merge.config import MergeSpec, ModelRef

LARGE_BYTES = 8 * 2**20  # a tensor this big (per input) is merged in row blocks
BLOCK_BYTES = 4 * 2**20  # bytes of one input's row block (smaller blocks pay mergekit's per-call overhead)
BLOCKABLE = ("task_arithmetic", "ties")
"""Methods merged in row blocks. Linear could be (it is elementwise) but mergekit already stays near 1x for it
(no intermediates beyond the output), so blocking would only add the input copies' time (+0.3 s of 1.6 s)."""


# --------------------------------------------------------------------- safetensors files, read and written by byte range


@dataclass(frozen=True)
class _Entry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offsets in the file
    end: int


def _entries(file: Path) -> tuple[dict[str, _Entry], dict[str, str]]:
    """Tensor entries (absolute byte ranges) and the ``__metadata__`` of a safetensors file."""
    with file.open("rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    meta = header.pop("__metadata__", None) or {}
    base = 8 + size
    return ({n: _Entry(n, h["dtype"], tuple(h["shape"]), base + h["data_offsets"][0], base + h["data_offsets"][1])
             for n, h in header.items()}, meta)


def _write(out: Path, layout: list[tuple[str, str, tuple[int, ...], int]], meta: Mapping[str, str],
           chunks: Iterator[bytes | memoryview], digest: Any = None) -> None:
    """Write a safetensors file: the header for ``layout`` (name, dtype, shape, nbytes) then ``chunks`` in order.

    ``digest`` (a hashlib object) is fed every byte written, so the file's hash needs no second read.
    """
    header: dict[str, Any] = {"__metadata__": dict(meta)} if meta else {}
    offset = 0
    for name, dtype, shape, nbytes in layout:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors aligns the data to 8 bytes
    written = 0
    with out.open("wb") as fh:
        head = struct.pack("<Q", len(text)) + text
        fh.write(head)
        if digest is not None:
            digest.update(head)
        for chunk in chunks:
            fh.write(chunk)
            if digest is not None:
                digest.update(chunk)
            written += len(chunk)
    if written != offset:
        raise RuntimeError(f"wrote {written} tensor bytes to {out}, the header says {offset}")


SAFETENSORS_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                      torch.uint8: "U8", torch.bool: "BOOL"}


def write_state(out: Path, state: Mapping[str, torch.Tensor], meta: Mapping[str, str], digest: Any = None) -> None:
    """``save_file`` without its copy: each tensor's bytes are written from its own memory (and fed to
    ``digest``); tensors in ``state`` order. Loads with safetensors / transformers like ``save_file``'s."""
    layout, views = [], []
    for name, t in state.items():
        flat = t.detach().contiguous().reshape(-1)
        if t.dtype not in SAFETENSORS_DTYPES or flat.device.type != "cpu":
            raise BadInput(f"{name}: cannot store a {t.dtype} tensor on {flat.device}")
        raw = flat.view(torch.uint8) if flat.numel() else torch.empty(0, dtype=torch.uint8)
        layout.append((name, SAFETENSORS_DTYPES[t.dtype], tuple(t.shape), raw.numel()))
        views.append(raw)
    _write(out, layout, meta, (memoryview(v.numpy()) for v in views), digest)


def _copy(fh: BinaryIO, start: int, end: int, step: int = 8 * 2**20) -> Iterator[bytes]:
    fh.seek(start)
    while start < end:
        chunk = fh.read(min(step, end - start))
        start += len(chunk)
        yield chunk


# --------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Trim:
    """One input's TIES trim of a tensor: keep |Δ| above ``threshold`` and the first ``ties`` equal to it.

    ``threshold`` is the float32 bit pattern (as int32) of the k-th largest
    |Δ|; bit patterns of non-negative floats order like the floats (NaN
    above +inf, as in torch's sort).
    """

    threshold: int
    ties: int


KEEP_NONE = Trim(threshold=2**31 - 1, ties=0)  # density ≤ 0: mergekit zeroes the task vector


@dataclass(frozen=True)
class Blocked:
    """A tensor merged in row blocks; ``kept[i]``: input i's TIES trim (None: density ≥ 1, nothing trimmed)."""

    name: str
    shape: tuple[int, ...]
    kept: tuple[Trim | None, ...] = ()


def _files(ref: ModelRef) -> dict[str, tuple[Path, _Entry]]:
    assert ref.path is not None
    out: dict[str, tuple[Path, _Entry]] = {}
    for file in sorted(Path(ref.path).glob("*.safetensors")):
        out.update({n: (file, e) for n, e in _entries(file)[0].items()})
    return out


def _scalar_params(params: Mapping[str, Any]) -> bool:
    return all(isinstance(v, (int, float, bool)) for v in params.values())


def _eligible(spec: MergeSpec) -> bool:
    refs = spec.input_refs()
    non_base = [m for m in spec.models if m.ref is not None]
    return (spec.method in BLOCKABLE and spec.dtype == "float32" and all(r.lora is None and r.path is not None for r in refs)
            and (spec.base is None or all(m.ref != spec.base for m in non_base)) and _scalar_params(spec.parameters)
            and all(_scalar_params(m.parameters) for m in non_base) and not spec.parameters.get("rescale", False)
            and (spec.method != "linear" or spec.base is None))


def _rows(shape: tuple[int, ...]) -> int:
    per_row = 4
    for d in shape[1:]:
        per_row *= d
    return max(1, BLOCK_BYTES // per_row)


def _read_rows(file: Path, name: str, r0: int, r1: int) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        return f.get_slice(name)[r0:r1]


def _row_blocks(shape: tuple[int, ...]) -> Iterator[tuple[int, int]]:
    step = _rows(shape)
    for r0 in range(0, shape[0], step):
        yield r0, min(shape[0], r0 + step)


def _magnitude_bits(theta: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """|θ − base| as float32 bit patterns (int32), flattened: mergekit's delta and magnitudes, elementwise."""
    return (theta - base).abs().reshape(-1).view(torch.int32)


def _select(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """The bin holding the k-th largest value (bins in ascending order) and how many values lie above that bin."""
    at_or_above = torch.flip(hist, [0]).cumsum(0)
    j = int(torch.searchsorted(at_or_above, k))
    b = len(hist) - 1 - j
    return b, int(at_or_above[j] - hist[b])


def _trim(base: tuple[Path, _Entry], model: tuple[Path, _Entry], density: float) -> Trim:
    """mergekit's magnitude trim of θ − base (k = max(1, ⌊density·n⌋)) as a threshold, in two passes over row blocks."""
    shape = base[1].shape
    n = math.prod(shape)
    if density <= 0:
        return KEEP_NONE
    k = max(1, int(density * n))

    def bits() -> Iterator[torch.Tensor]:
        for r0, r1 in _row_blocks(shape):
            yield _magnitude_bits(_read_rows(model[0], model[1].name, r0, r1), _read_rows(base[0], base[1].name, r0, r1))

    high = torch.zeros(1 << 15, dtype=torch.int64)  # sign bit clear: the top 16 bits are < 2^15
    for b in bits():
        high += torch.bincount(b >> 16, minlength=1 << 15)
    h, above = _select(high, k)
    low = torch.zeros(1 << 16, dtype=torch.int64)
    for b in bits():
        low += torch.bincount(b[(b >> 16) == h] & 0xFFFF, minlength=1 << 16)
    lo, above_in_bin = _select(low, k - above)
    return Trim(threshold=(h << 16) | lo, ties=k - above - above_in_bin)


def _kept(trim: Trim, theta: torch.Tensor, base: torch.Tensor, ties_before: int) -> tuple[torch.Tensor, int]:
    """The block's kept elements (θ's shape) and how many of its magnitudes equal the threshold."""
    bits = _magnitude_bits(theta, base)
    keep = bits > trim.threshold
    tied = bits == trim.threshold
    if trim.ties > ties_before:  # tied elements still to keep, the first in index order
        keep |= tied & (tied.cumsum(0) + ties_before <= trim.ties)
    return keep.reshape(theta.shape), int(tied.sum())


@contextlib.contextmanager
def large_frees_to_os(threshold: int = 1 << 20) -> Iterator[None]:
    """Inside the block, serve allocations of ``threshold`` bytes or more with mmap, so freed tensors go
    back to the OS (glibc).

    Why: glibc raises its mmap threshold (up to 32 MiB) each time a large
    mmapped block is freed; after mergekit's whole tensors are freed, the row
    blocks' tensors then come from the heap, which keeps what it grew to. A
    TIES merge of three MiniLM peaked at 1.4-1.6x one model that way and at
    0.8-1.0x with the threshold fixed. On exit the threshold goes to 32 MiB
    (trim at 64), glibc's own ceiling: an explicit threshold stays fixed for
    the process, and 1 MiB made a later claimed merge in the same process
    (the bench, an orchestrator) pay an mmap and its page faults per tensor
    (0.8 s -> 1.1-1.3 s for a linear one). A no-op without glibc's ``mallopt``.
    """
    import ctypes

    m_trim_threshold, m_mmap_threshold = -1, -3

    def mallopt(param: int, value: int) -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").mallopt(param, value)

    mallopt(m_mmap_threshold, threshold)
    try:
        yield
    finally:
        mallopt(m_mmap_threshold, 32 << 20)
        mallopt(m_trim_threshold, 64 << 20)


def plan(spec: MergeSpec) -> list[Blocked]:
    """The tensors of ``spec`` to merge in row blocks (empty when the method or inputs do not allow it).

    For TIES this already finds each input's trim threshold of each large
    tensor (the part that needs the whole tensor).
    """
    if not _eligible(spec):
        return []
    refs = spec.input_refs()  # base first
    files = [_files(r) for r in refs]
    out = []
    non_base = [m for m in spec.models if m.ref is not None]
    for name, (_, entry) in files[0].items():
        sizes = [f[name][1] for f in files if name in f]
        if (len(sizes) != len(files) or any(e.dtype != "F32" or e.shape != entry.shape for e in sizes)
                or len(entry.shape) < 1 or entry.shape[0] < 2 or entry.end - entry.start < LARGE_BYTES):
            continue
        if spec.method == "ties":
            kept = []
            for i, m in enumerate(non_base):
                density = float(m.parameters.get("density", spec.parameters.get("density", 1.0)))
                kept.append(_trim(files[0][name], files[i + 1][name], density) if density < 1 else None)
            out.append(Blocked(name, entry.shape, tuple(kept)))
            continue
        out.append(Blocked(name, entry.shape))
    return out


# --------------------------------------------------------------------- inputs without the large tensors, and the fill


@contextlib.contextmanager
def reduced_inputs(spec: MergeSpec, blocked: list[Blocked], work: Path) -> Iterator[MergeSpec]:
    """The spec over input copies whose blocked tensors are cut to their first row (config files linked)."""
    names = {b.name for b in blocked}
    mapping: dict[ModelRef, ModelRef] = {}
    try:
        for i, ref in enumerate(spec.input_refs()):
            assert ref.path is not None
            copy = work / f"in{i}"
            copy.mkdir(parents=True)
            for extra in Path(ref.path).iterdir():
                if extra.is_file() and not extra.name.endswith(".safetensors") and not extra.name.endswith(".index.json"):
                    (copy / extra.name).symlink_to(extra.resolve())
            entries = sorted(_files(ref).items(), key=lambda kv: (str(kv[1][0]), kv[1][1].start))

            def cut(e: _Entry) -> tuple[int, tuple[int, ...]]:
                per_row = (e.end - e.start) // e.shape[0]
                return (per_row, (1, *e.shape[1:])) if e.name in names else (e.end - e.start, e.shape)

            layout = [(n, e.dtype, cut(e)[1], cut(e)[0]) for n, (_, e) in entries]

            def chunks(entries: list[tuple[str, tuple[Path, _Entry]]] = entries) -> Iterator[bytes]:
                for _, (file, e) in entries:
                    with file.open("rb") as fh:
                        yield from _copy(fh, e.start, e.start + cut(e)[0])

            _write(copy / "model.safetensors", layout, {"format": "pt"}, chunks())
            mapping[ref] = replace(ref, path=copy)
        models = tuple(replace(m, ref=mapping[m.ref]) if m.ref is not None else m for m in spec.models)
        yield replace(spec, base=mapping[spec.base] if spec.base is not None else None, models=models)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _parameters(spec: MergeSpec, blocked: Blocked) -> dict[str, Any]:
    """mergekit's parameters for one blocked tensor: shared ones as given, per-input ones by input id."""
    from mergekit.merge_methods import registry
    from mergekit.merge_methods.base import ParameterScope

    method = registry.get(spec.method)
    non_base = [m for m in spec.models if m.ref is not None]
    out: dict[str, Any] = {}
    for p in method.spec.parameters:
        if p.scope == ParameterScope.SHARED:
            if p.name in spec.parameters:
                out[p.name] = spec.parameters[p.name]
            continue
        values = {i: m.parameters.get(p.name, spec.parameters.get(p.name)) for i, m in enumerate(non_base)}
        if p.name == "density" and blocked.kept:
            values = dict.fromkeys(values, 1.0)  # trimmed by τ before mergekit sees the block
        if any(v is not None for v in values.values()):
            out[p.name] = {k: v for k, v in values.items() if v is not None}
    return out


def _merged_rows(spec: MergeSpec, blocked: Blocked, sources: list[tuple[Path, _Entry]], r0: int, r1: int,
                 ties_seen: list[int]) -> torch.Tensor:
    """Rows r0:r1 of the merged tensor; ``ties_seen[i]``: input i's tied magnitudes in earlier blocks (updated)."""
    from mergekit.merge_methods import registry
    from mergekit.merge_methods.base import TensorGroup

    has_base = spec.base is not None
    tensors = [_read_rows(f, e.name, r0, r1) for f, e in sources]
    if blocked.kept:  # TIES: θ where the trim keeps it, the base elsewhere (mergekit's delta is then the trimmed one)
        base = tensors[0]
        for i, trim in enumerate(blocked.kept):
            if trim is not None:
                keep, tied = _kept(trim, tensors[i + 1], base, ties_seen[i])
                ties_seen[i] += tied
                tensors[i + 1] = torch.where(keep, tensors[i + 1], base)
    ids: list[Any] = (["base"] if has_base else []) + list(range(len(tensors) - int(has_base)))
    group = TensorGroup.from_tensors(tensors, ids=ids, base_index=0 if has_base else None, name=blocked.name)
    (merged,) = registry.get(spec.method)([group], parameters=_parameters(spec, blocked), dtype=torch.float32,
                                          out_dtype=torch.float32)
    return merged.contiguous()


def fill(out_dir: Path, spec: MergeSpec, blocked: list[Blocked]) -> None:
    """Replace each blocked tensor's one-row placeholder in ``out_dir``'s safetensors by its row-blocked merge."""
    names = {b.name: b for b in blocked}
    refs = spec.input_refs()
    files = [_files(r) for r in refs]
    for file in sorted(out_dir.glob("*.safetensors")):
        entries, meta = _entries(file)
        if not names.keys() & entries.keys():
            continue
        ordered = sorted(entries.values(), key=lambda e: e.start)
        layout = []
        for e in ordered:
            shape = names[e.name].shape if e.name in names else e.shape
            nbytes = (e.end - e.start) * (shape[0] if e.name in names else 1)
            layout.append((e.name, e.dtype, shape, nbytes))

        def chunks(ordered: list[_Entry] = ordered, file: Path = file) -> Iterator[bytes]:
            with file.open("rb") as fh:
                for e in ordered:
                    if e.name not in names:
                        yield from _copy(fh, e.start, e.end)
                        continue
                    b = names[e.name]
                    ties_seen = [0] * len(b.kept)
                    for r0, r1 in _row_blocks(b.shape):
                        yield _merged_rows(spec, b, [f[b.name] for f in files], r0, r1, ties_seen).numpy().tobytes()

        tmp = file.with_name(file.name + ".blocked")
        _write(tmp, layout, meta, chunks())
        tmp.replace(file)


__all__ = ["BLOCKABLE", "Blocked", "LARGE_BYTES", "Trim", "fill", "plan", "reduced_inputs"]
