"""Weight-space merges through mergekit itself, in-process and offline.

collab does not re-implement linear, task arithmetic, TIES, DARE or SLERP: it
validates the configuration (:mod:`collab.merge.config`), checks that the
inputs are compatible (same architecture, same tensor shapes) so failures are
one-line errors, then hands mergekit a ``MergeConfiguration`` built from local
directories and calls ``run_merge``. LoRA inputs (``base+lora``) are folded
into their base by mergekit through peft, in a per-run cache directory so a
stale fold of an older adapter can never be reused.

``HF_HUB_OFFLINE=1`` is set before mergekit (and so huggingface_hub) is
imported, and every input path is checked to exist first, so nothing is ever
downloaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pydantic  # noqa: E402  (after HF_HUB_OFFLINE on purpose)
from mergekit.config import MergeConfiguration  # noqa: E402
from mergekit.io.tasks import LoaderCache  # noqa: E402
from mergekit.merge import run_merge  # noqa: E402
from mergekit.merge_methods import registry  # noqa: E402
from mergekit.merge_methods.base import MISSING, BasePolicy, ParameterScope  # noqa: E402
from mergekit.options import MergeOptions  # noqa: E402
from mergekit.plan import MergePlanner  # noqa: E402

from collab.errors import BadInput, NotFound  # noqa: E402
from collab.hflog import quiet_transformers  # noqa: E402
from collab.merge.config import MERGEKIT_METHODS, MergeSpec, ModelRef  # noqa: E402

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParamInfo:
    """One parameter of a merge method, as ``collab merge methods`` lists it."""

    name: str
    scope: str  # "shared" (one value), "input" (per model, base included), "non_base" (per model but the base)
    type: str
    default: Any
    required: bool


@dataclass(frozen=True)
class MethodInfo:
    """A supported merge method: its parameters and what it needs."""

    name: str
    title: str
    engine: str  # "mergekit" or "collab"
    base: str  # "required", "optional" or "ignored"
    parameters: tuple[ParamInfo, ...]
    reference: str
    inputs: str = "models"
    notes: str = ""


@dataclass(frozen=True)
class MergeResult:
    """What a merge wrote: where, with which method, and the digest of the weights file."""

    method: str
    out_dir: Path
    inputs: tuple[str, ...]
    tensors: int
    parameters: int
    weights_sha256: str
    seconds: float
    details: dict[str, Any]


def mergekit_methods() -> list[MethodInfo]:
    """The mergekit methods collab exposes, with parameters read from mergekit's own specs."""
    out = []
    for name in MERGEKIT_METHODS:
        spec = registry.get(name).spec
        params = tuple(
            ParamInfo(
                name=p.name,
                scope=p.scope.value,
                type=getattr(p.value_type, "__name__", str(p.value_type)),
                default=None if p.default is MISSING else p.default,
                required=p.required,
            )
            for p in spec.parameters
        )
        base = spec.contract.base.value
        notes = "exactly two models: the base and one other" if name == "slerp" else ""
        out.append(MethodInfo(name=name, title=spec.pretty_name or name, engine="mergekit", base=base,
                              parameters=params, reference=spec.reference_url or "", notes=notes))
    return out


def check_parameters(spec: MergeSpec) -> None:
    """BadInput for unknown or missing parameters and for a base the method needs but lacks."""
    mk = registry.get(spec.method).spec
    known = {p.name for p in mk.parameters}
    sources = [("parameters", spec.parameters)] + [(f"{m.label} parameters", m.parameters) for m in spec.models]
    for where, params in sources:
        unknown = sorted(set(params) - known)
        if unknown:
            raise BadInput(f"{spec.method}: unknown parameter {unknown[0]!r} in {where}",
                           hint=f"{spec.method} takes {', '.join(sorted(known)) or 'no parameters'}")
    for p in mk.parameters:
        if not p.required:
            continue
        if p.scope == ParameterScope.SHARED:
            if p.name not in spec.parameters:
                raise BadInput(f"{spec.method} needs parameter {p.name!r} under `parameters`")
            continue
        for m in spec.models:
            is_base = m.ref == spec.base
            if is_base and p.scope == ParameterScope.NON_BASE:
                continue
            if p.name not in m.parameters and p.name not in spec.parameters:
                raise BadInput(f"{spec.method} needs parameter {p.name!r} for model {m.label}")
        if (p.scope == ParameterScope.INPUT and spec.base is not None and mk.contract.base != BasePolicy.IGNORED
                and all(m.ref != spec.base for m in spec.models) and p.name not in spec.parameters):
            raise BadInput(f"{spec.method} needs parameter {p.name!r} for the base model too",
                           hint="list the base under models with its parameters, or set it under `parameters`")
    if mk.contract.base == BasePolicy.REQUIRED and spec.base is None:
        raise BadInput(f"{spec.method} needs base_model")
    if spec.method == "slerp":
        others = [m for m in spec.models if m.ref != spec.base]
        if len(others) != 1:
            raise BadInput(f"slerp merges the base with exactly one other model, got {len(others)} others")


def check_compatible(refs: list[ModelRef]) -> dict[str, tuple[int, ...]]:
    """Same model type and same tensor shapes across inputs (LoRA inputs are checked by their base).

    Returns the reference tensor shapes (name -> shape) of the first input.
    """
    if not refs:
        raise BadInput("no models to merge")
    first = refs[0]
    assert first.path is not None
    ref_type = _model_type(first.path)
    ref_shapes = weight_shapes(first.path)
    for ref in refs[1:]:
        assert ref.path is not None
        kind = _model_type(ref.path)
        if kind != ref_type:
            raise BadInput(f"architecture mismatch: {first.label} is {ref_type!r} but {ref.label} is {kind!r}")
        shapes = weight_shapes(ref.path)
        for name in sorted(set(shapes) & set(ref_shapes)):
            if shapes[name] != ref_shapes[name]:
                raise BadInput(f"shape mismatch for {name}: {list(ref_shapes[name])} in {first.label} "
                               f"but {list(shapes[name])} in {ref.label}")
    return ref_shapes


def weight_shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from the safetensors headers (no tensor data is read)."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise BadInput(f"{model_dir} has no safetensors weights; collab merges safetensors checkpoints only")
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        try:
            with file.open("rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(size))
        except (OSError, ValueError, struct.error) as exc:
            raise BadInput(f"{file} is not a readable safetensors file: {exc}") from None
        for name, info in header.items():
            if name != "__metadata__":
                shapes[name] = tuple(int(d) for d in info["shape"])
    return shapes


def run_mergekit(spec: MergeSpec, out_dir: Path | str, *, seed: int = 0, blocked: bool = True) -> MergeResult:
    """Merge ``spec`` (local paths only; resolve assets first) into ``out_dir`` with mergekit.

    ``blocked``: merge the largest tensors in row blocks through mergekit's own
    method where that gives the same values (:mod:`collab.merge.blocked`).
    """
    if spec.method not in MERGEKIT_METHODS:
        raise BadInput(f"{spec.method} is not a mergekit method")
    if any(r.path is None for r in spec.input_refs()):
        raise BadInput("resolve asset ids to local directories before merging (MergeSpec.resolve_assets)")
    spec.check_paths()
    check_parameters(spec)
    shapes = check_compatible(spec.input_refs())
    out = check_out_dir(out_dir)
    config = _mergekit_config(spec)
    started = time.perf_counter()
    with (tempfile.TemporaryDirectory(prefix="collab-lora-") as lora_cache, staging_dir(out) as stage,
          quiet_transformers()):
        options = MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True, random_seed=seed,
                               lora_merge_cache=lora_cache, lora_merge_dtype="float32")
        _install_optional_alias_fix()
        _reset_loader_cache()
        try:
            from collab.merge import blocked as row_blocks

            large = row_blocks.plan(spec) if blocked else []
            # After plan's trims: their block-sized temporaries reuse heap memory (glibc's adaptive threshold),
            # which a fixed threshold would turn into one mmap + page faults each (~0.4 s on MiniLM's embeddings).
            with row_blocks.large_frees_to_os() if large else contextlib.nullcontext():
                with (row_blocks.reduced_inputs(spec, large, Path(lora_cache) / "blocked") if large
                      else contextlib.nullcontext(spec)) as run_spec:
                    run_merge(config if run_spec is spec else _mergekit_config(run_spec), str(stage), options)
                if large:
                    row_blocks.fill(stage, spec, large)
        except (RuntimeError, ValueError, TypeError, pydantic.ValidationError) as exc:
            raise BadInput(f"mergekit rejected the {spec.method} merge: {' '.join(str(exc).split())}") from exc
        except FileNotFoundError as exc:
            raise NotFound(f"mergekit could not read an input: {exc}") from exc
        finally:
            _reset_loader_cache()
    seconds = time.perf_counter() - started
    out_shapes = weight_shapes(out)
    return MergeResult(
        method=spec.method,
        out_dir=out,
        inputs=tuple(m.label for m in spec.models),
        tensors=len(out_shapes),
        parameters=sum(_numel(s) for s in out_shapes.values()),
        weights_sha256=_sha256_files(sorted(out.glob("*.safetensors"))),
        seconds=seconds,
        details={"engine": "mergekit", "seed": seed, "dtype": spec.dtype, "input_tensors": len(shapes),
                 "row_blocked": [b.name for b in large]},
    )


def check_out_dir(out_dir: Path | str) -> Path:
    """The output directory, which must be absent or an empty directory (BadInput otherwise)."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(f"output {out} exists and is not an empty directory")
    return out


@contextlib.contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """A sibling temp directory renamed to ``out`` on success and removed on failure.

    A merge that fails half-way (or is interrupted) never leaves a
    half-written model where a finished one is expected.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield stage
        if out.exists():
            out.rmdir()  # empty, checked by check_out_dir
        stage.rename(out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def _mergekit_config(spec: MergeSpec) -> MergeConfiguration:
    """The mergekit configuration object, with structured (not ``a+b`` string) model references."""
    raw: dict[str, Any] = {
        "merge_method": spec.method,
        "models": [{"model": _ref_dict(m.ref), "parameters": dict(m.parameters) or None}
                   for m in spec.models if m.ref is not None],
        "dtype": spec.dtype,
        "out_dtype": spec.dtype,
    }
    if spec.base is not None:
        raw["base_model"] = _ref_dict(spec.base)
    if spec.parameters:
        raw["parameters"] = dict(spec.parameters)
    try:
        return MergeConfiguration.model_validate(raw)
    except (pydantic.ValidationError, RuntimeError, ValueError) as exc:
        raise BadInput(f"invalid {spec.method} configuration: {' '.join(str(exc).split())}") from None


def _ref_dict(ref: ModelRef | None) -> dict[str, Any]:
    assert ref is not None and ref.path is not None
    out: dict[str, Any] = {"model": {"path": str(ref.path)}}
    if ref.lora is not None:
        out["lora"] = {"path": str(ref.lora)}
    return out


def _model_type(model_dir: Path) -> str:
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInput(f"{model_dir}/config.json is not readable JSON: {exc}") from None
    return str(config.get("model_type", "")) + ":" + ",".join(config.get("architectures") or [])


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _sha256_files(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _reset_loader_cache() -> None:
    """Forget mergekit's process-wide loaders: they are keyed by path, so a rewritten directory would be stale."""
    cache = LoaderCache()
    cache.flush_all()
    cache.loaders.clear()


class _Aliases(tuple):  # type: ignore[type-arg]
    """A tuple of alias names that a list can be concatenated with (``[name] + aliases``)."""

    def __radd__(self, other: Any) -> Any:
        if isinstance(other, list):
            return other + list(self)
        return NotImplemented


def _install_optional_alias_fix() -> None:
    """Work around mergekit 0.1.5 planning optional weights that have aliases.

    ``MergePlanner.plan_tensor`` evaluates ``[w.name] + (w.aliases or [])`` for
    optional weights, but ``WeightInfo.aliases`` is a tuple, so any such weight
    (BERT's ``embeddings.position_ids``) raises ``TypeError`` and BERT-family
    models cannot be merged at all. The wrapper hands mergekit the same input
    weight descriptions with their aliases as a tuple subclass that supports
    exactly that concatenation; nothing else changes (same names, equality and
    hash), so mergekit's own optional-weight policy decides as it intends:
    skipped when absent everywhere, and e.g. the base's non-float buffer
    copied when only the base checkpoint stores it.
    """
    original = MergePlanner.plan_tensor
    if getattr(original, "_collab_alias_fix", False):
        return

    def plan_tensor(self: MergePlanner, weight: Any, weights_in: list[Any], models: list[Any], cfg_reader: Any) -> Any:
        if weight.optional:
            weights_in = [w.model_copy(update={"aliases": _Aliases(w.aliases)}) if w.aliases else w for w in weights_in]
        return original(self, weight, weights_in, models, cfg_reader)

    plan_tensor._collab_alias_fix = True  # type: ignore[attr-defined]
    MergePlanner.plan_tensor = plan_tensor
