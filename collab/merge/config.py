"""Parse and validate a mergekit-style merge configuration (YAML) into a :class:`MergeSpec`.

The file format is mergekit's own (``merge_method``, ``base_model``,
``models: [{model, parameters}]``, ``parameters``, ``dtype``) so configs move
between collab and ``mergekit-yaml`` unchanged, with three additions:

* an input may name a registered asset instead of a path: ``model: asset:7`` or
  ``model: {asset: 7}`` (resolved to a local directory by an :data:`AssetResolver`, which is where
  the on-chain ownership/license check belongs);
* a LoRA adapter applied onto a base is ``model: ./base+./lora`` (mergekit's
  syntax) or ``model: {model: ./base, lora: ./lora}``;
* the data-aware methods (``regmean``, ``fisher``) take per-participant
  statistics files instead of models: ``models: [{statistics: ./p0.safetensors}]``,
  with ``base_model`` giving the architecture the merged weights are saved as.

Validation happens here, before any tensor is read, so that every mistake a
user can make in the file is a one-line :class:`~collab.errors.BadInput` or
:class:`~collab.errors.NotFound` rather than an exception deep inside mergekit.
Relative paths are resolved against the directory of the config file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from collab.errors import BadInput, NotFound

MERGEKIT_METHODS: tuple[str, ...] = ("linear", "task_arithmetic", "ties", "dare_ties", "dare_linear", "slerp")
DATA_METHODS: tuple[str, ...] = ("regmean", "fisher")
METHODS: tuple[str, ...] = MERGEKIT_METHODS + DATA_METHODS
DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16", "float64")

_TOP_KEYS = {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype"}
_MODEL_KEYS = {"model", "parameters", "statistics"}
ASSET_PREFIX = "asset:"

@dataclass(frozen=True)
class ResolvedAsset:
    """What a resolver may return instead of a bare directory: the directory and a stable identity of its
    weights (a vault blob's content hash). Why: each resolution writes a fresh directory, so the files'
    own identity changes every time, while a claimer's known input roots need one that does not."""

    path: Path
    source_id: str


AssetResolver = Callable[[int], "Path | ResolvedAsset"]
"""Maps an asset id to a local model directory; raises a CollabError when it cannot."""


@dataclass(frozen=True)
class ModelRef:
    """One model input: a local directory, a registered asset, or either with a LoRA adapter on top."""

    path: Path | None = None
    asset_id: int | None = None
    lora: Path | None = None
    source_id: str | None = None  # a resolved asset's stable identity (ResolvedAsset), else None

    @property
    def label(self) -> str:
        """Human name used in messages and results."""
        head = f"asset {self.asset_id}" if self.asset_id is not None else str(self.path)
        return f"{head}+{self.lora}" if self.lora is not None else head

    def resolved(self, resolver: AssetResolver | None) -> ModelRef:
        """This reference with its asset resolved to a local directory (the asset id is kept as provenance)."""
        if self.path is not None:
            return self
        if resolver is None:
            raise BadInput(
                f"input asset {self.asset_id} needs an asset resolver",
                hint="give local model directories, or resolve assets through the license-checked path",
            )
        assert self.asset_id is not None
        got = resolver(self.asset_id)
        if isinstance(got, ResolvedAsset):
            return replace(self, path=Path(got.path), source_id=got.source_id)
        return replace(self, path=Path(got))


@dataclass(frozen=True)
class ModelInput:
    """A model (or, for data-aware methods, a statistics file) and its per-input parameters."""

    ref: ModelRef | None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    statistics: Path | None = None

    @property
    def label(self) -> str:
        """Human name used in messages and results."""
        if self.statistics is not None:
            return str(self.statistics)
        assert self.ref is not None
        return self.ref.label


@dataclass(frozen=True)
class MergeSpec:
    """A validated merge: method, optional base, inputs and shared parameters."""

    method: str
    models: tuple[ModelInput, ...]
    base: ModelRef | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    dtype: str = "float32"
    source: Path | None = None

    @property
    def is_data_aware(self) -> bool:
        """RegMean/Fisher: merged from summed statistics, not by mergekit."""
        return self.method in DATA_METHODS

    def resolve_assets(self, resolver: AssetResolver | None) -> MergeSpec:
        """The same spec with every asset id resolved to a local directory (and checked to exist)."""
        base = self.base.resolved(resolver) if self.base is not None else None
        models = tuple(replace(m, ref=m.ref.resolved(resolver)) if m.ref is not None else m for m in self.models)
        spec = replace(self, base=base, models=models)
        spec.check_paths()
        return spec

    def check_paths(self) -> None:
        """NotFound for any input directory, adapter or statistics file that is missing or incomplete."""
        refs = ([self.base] if self.base is not None else []) + [m.ref for m in self.models if m.ref is not None]
        for ref in refs:
            if ref.path is not None:
                _check_model_dir(ref.path)
            if ref.lora is not None:
                _check_lora_dir(ref.lora)
        for model in self.models:
            if model.statistics is not None and not model.statistics.is_file():
                raise NotFound(f"statistics file {model.statistics} does not exist")

    def input_refs(self) -> list[ModelRef]:
        """Every model reference (base first), for architecture and shape checks."""
        refs = [self.base] if self.base is not None else []
        refs += [m.ref for m in self.models if m.ref is not None and m.ref != self.base]
        return refs


def load_config(path: Path | str) -> MergeSpec:
    """Read and validate a YAML merge config; relative paths are taken from its directory."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"merge config {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise BadInput(f"merge config {path} is not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    except UnicodeDecodeError:
        raise BadInput(f"merge config {path} is not UTF-8 text") from None
    return parse_config(raw, base_dir=path.parent, source=path)


def parse_config(raw: Any, *, base_dir: Path | str = ".", source: Path | None = None) -> MergeSpec:
    """Validate a config already loaded into Python objects (see :func:`load_config`)."""
    where = f"merge config {source}" if source is not None else "merge config"
    if not isinstance(raw, dict):
        raise BadInput(f"{where} must be a mapping with merge_method and models")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise BadInput(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_TOP_KEYS))}")
    method = raw.get("merge_method")
    if not isinstance(method, str) or not method:
        raise BadInput(f"{where}: merge_method is missing", hint=f"one of {', '.join(METHODS)}")
    if method not in METHODS:
        raise BadInput(f"{where}: unknown merge method {method!r}", hint=f"supported: {', '.join(METHODS)}")
    base_dir = Path(base_dir)
    base = _parse_ref(raw["base_model"], base_dir, "base_model") if raw.get("base_model") is not None else None
    models_raw = raw.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise BadInput(f"{where}: models must be a non-empty list")
    models = tuple(_parse_input(item, base_dir, i, method) for i, item in enumerate(models_raw))
    parameters = _parameters(raw.get("parameters"), "parameters")
    dtype = raw.get("dtype", "float32")
    if dtype not in DTYPES:
        raise BadInput(f"{where}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if "out_dtype" in raw and raw["out_dtype"] not in DTYPES:
        raise BadInput(f"{where}: out_dtype {raw['out_dtype']!r} is not one of {', '.join(DTYPES)}")
    spec = MergeSpec(method=method, models=models, base=base, parameters=parameters, dtype=dtype, source=source)
    _check_shape_of_inputs(spec, where)
    return spec


def _check_shape_of_inputs(spec: MergeSpec, where: str) -> None:
    """Structural rules that do not need the method's parameter table (see the method modules for those)."""
    if spec.is_data_aware:
        missing = [i for i, m in enumerate(spec.models) if m.statistics is None]
        if missing:
            raise BadInput(f"{where}: {spec.method} merges statistics files; models[{missing[0]}] has no `statistics`")
        if spec.base is None:
            raise BadInput(f"{where}: {spec.method} needs base_model (the architecture the merged weights are saved as)")
        if spec.base.lora is not None:
            raise BadInput(f"{where}: base_model of a {spec.method} merge cannot carry a LoRA adapter")
        return
    with_stats = [i for i, m in enumerate(spec.models) if m.statistics is not None]
    if with_stats:
        raise BadInput(f"{where}: models[{with_stats[0]}] gives statistics, which only regmean and fisher use")
    labels = [m.label for m in spec.models]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise BadInput(f"{where}: model {dupes[0]} is listed twice")


def _parse_input(item: Any, base_dir: Path, index: int, method: str) -> ModelInput:
    what = f"models[{index}]"
    if isinstance(item, (str, int)) and not isinstance(item, bool):
        item = {"model": item}
    if not isinstance(item, dict):
        raise BadInput(f"{what} must be a mapping with `model` (or `statistics`) and optional `parameters`")
    unknown = sorted(set(item) - _MODEL_KEYS)
    if unknown:
        raise BadInput(f"{what}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_MODEL_KEYS))}")
    parameters = _parameters(item.get("parameters"), f"{what}.parameters")
    if "statistics" in item:
        stats = item["statistics"]
        if not isinstance(stats, str) or not stats:
            raise BadInput(f"{what}.statistics must be a file path")
        if "model" in item:
            raise BadInput(f"{what}: give either `model` or `statistics`, not both")
        return ModelInput(ref=None, parameters=parameters, statistics=_path(stats, base_dir))
    if "model" not in item:
        raise BadInput(f"{what} has no `model`")
    return ModelInput(ref=_parse_ref(item["model"], base_dir, f"{what}.model"), parameters=parameters)


def _parse_ref(value: Any, base_dir: Path, what: str) -> ModelRef:
    """``path``, ``path+lora``, ``asset:id``, ``{asset: id}``, ``{model: path|{asset: id}, lora: path}``."""
    if isinstance(value, str):
        if not value.strip():
            raise BadInput(f"{what} is an empty path")
        if value.startswith(ASSET_PREFIX):
            return _parse_ref({"asset": _asset_number(value, what)}, base_dir, what)
        if "+" in value and not _path(value, base_dir).exists():
            model_part, _, lora_part = value.partition("+")
            if not model_part or not lora_part or "+" in lora_part:
                raise BadInput(f"{what}: {value!r} is not `MODEL+LORA`")
            return ModelRef(path=_path(model_part, base_dir), lora=_path(lora_part, base_dir))
        return ModelRef(path=_path(value, base_dir))
    if isinstance(value, dict):
        extra = sorted(set(value) - {"asset", "model", "lora"})
        if extra:
            raise BadInput(f"{what}: unknown key(s) {', '.join(extra)}; allowed: asset, model, lora")
        if "asset" in value:
            if "model" in value:
                raise BadInput(f"{what}: give either `asset` or `model`, not both")
            asset = value["asset"]
            if isinstance(asset, bool) or not isinstance(asset, int) or asset < 0:
                raise BadInput(f"{what}.asset must be a non-negative integer asset id, got {asset!r}")
            head = ModelRef(asset_id=asset)
        elif "model" in value:
            head = _parse_ref(value["model"], base_dir, f"{what}.model")
            if head.lora is not None and "lora" in value:
                raise BadInput(f"{what}: two LoRA adapters given")
        else:
            raise BadInput(f"{what} needs `model` or `asset`")
        lora = value.get("lora")
        if lora is None:
            return head
        if not isinstance(lora, str) or not lora:
            raise BadInput(f"{what}.lora must be an adapter directory")
        return replace(head, lora=_path(lora, base_dir))
    raise BadInput(f"{what} must be a path or a mapping, got {type(value).__name__}")


def _asset_number(text: str, what: str) -> int:
    digits = text[len(ASSET_PREFIX):].strip()
    if not digits.isdigit():
        raise BadInput(f"{what}: {text!r} is not `asset:<id>`")
    return int(digits)


def _parameters(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise BadInput(f"{what} must be a mapping of parameter names to values")
    return dict(value)


def _path(text: str, base_dir: Path) -> Path:
    path = Path(text).expanduser()
    return (path if path.is_absolute() else base_dir / path).resolve()


def _check_model_dir(path: Path) -> None:
    if not path.is_dir():
        raise NotFound(f"model directory {path} does not exist")
    if not (path / "config.json").is_file():
        raise NotFound(f"{path} has no config.json (not a transformers model directory)")
    if not any(path.glob("*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
        raise NotFound(f"{path} has no weights (*.safetensors or pytorch_model*.bin)")


def _check_lora_dir(path: Path) -> None:
    if not path.is_dir():
        raise NotFound(f"LoRA adapter directory {path} does not exist")
    if not (path / "adapter_config.json").is_file():
        raise NotFound(f"{path} has no adapter_config.json (not a peft adapter directory)")
