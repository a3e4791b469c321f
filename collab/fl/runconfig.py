"""The Flower app's run config: its defaults, typed readers, and the task a RoundRegistry round fixes on-chain.

Every node derives the model it trains from the run config (:func:`task_config`).
A ``RoundRegistry`` round records ``configHash`` when it is opened
(``collab round create``); :func:`task_hash` is that hash, computed from a run
config the same way everywhere: by the creator over the run config it
announces, by the orchestrator before it accepts the round's job, and by each
participant's ClientApp before it trains (the expected hash comes from the
chain through its node, never from the aggregator). So a participant trains,
and consents to, only the base model, classes and LoRA configuration the
round was opened with.
"""

from __future__ import annotations

import functools
import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from collab.errors import BadInput
from collab.fl.task import LORA_TARGETS, TaskConfig

APP_DIR = Path(__file__).parent / "app"
TASK_SPEC_VERSION = 1
TASK_KEYS = ("model", "classes", "max-len", "lora-r", "lora-top-layers", "lora-freeze-a", "seed")  # what task_spec reads


@functools.cache
def app_defaults() -> dict[str, Any]:
    """The app's own run-config defaults (``[tool.flwr.app.config]``), which Flower merges under every run's."""
    with (APP_DIR / "pyproject.toml").open("rb") as f:
        return dict(tomllib.load(f)["tool"]["flwr"]["app"]["config"])


def effective(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The run config a run with ``overrides`` sees (as Flower merges it: the app's defaults, then the run's)."""
    return {**app_defaults(), **overrides}


def switch(run_config: Mapping[str, Any], key: str, default: bool = False) -> bool:
    """A boolean run-config key (absent: ``default``); a string such as "false" is refused, not read as on."""
    value = run_config.get(key, default)
    if not isinstance(value, bool):
        raise BadInput(f"run config {key} must be true or false, got {value!r}")
    return value


def classes_of(run_config: Mapping[str, Any]) -> list[str]:
    """The task's class names in label order (``classes``: comma-separated)."""
    return str(run_config["classes"]).split(",")


def task_config(run_config: Mapping[str, Any]) -> TaskConfig:
    """The public task every node derives from the same run config."""
    try:
        return TaskConfig(
            num_labels=len(classes_of(run_config)),
            kind=str(run_config["model"]),
            max_len=int(run_config["max-len"]),
            lora_r=int(run_config["lora-r"]),
            seed=int(run_config["seed"]),
            lora_top_layers=int(run_config.get("lora-top-layers", 0)),
            lora_freeze_a=switch(run_config, "lora-freeze-a"),
        )
    except KeyError as exc:
        raise BadInput(f"the run config has no {exc.args[0]}") from None
    except (TypeError, ValueError) as exc:
        raise BadInput(f"invalid task in the run config: {exc}") from None


def task_spec(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """What a round's participants agree to train: base model, classes (in label order) and the LoRA adapters.

    Derived from the parsed :class:`TaskConfig`, so ``"64"`` and ``64`` (a JSON
    payload and a TOML file) name the same task; training hyper-parameters
    (epochs, lr, batch) and the privacy budget are not in it (the budget is on
    chain by itself).
    """
    task = task_config(run_config)
    lora = {"r": task.lora_r, "alpha": task.lora_alpha, "targets": list(LORA_TARGETS),
            "top_layers": task.lora_top_layers, "freeze_a": task.lora_freeze_a}
    return {"version": TASK_SPEC_VERSION, "model": task.kind, "classes": classes_of(run_config),
            "max_len": task.max_len, "seed": task.seed, "lora": lora}


def with_task(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """``run_config`` with every task key spelled out (from the app's defaults where absent): a job given it
    trains this task whatever defaults its orchestrator adds."""
    full = effective(run_config)
    task_spec(full)  # refuse an invalid task now
    return {**run_config, **{k: full[k] for k in TASK_KEYS}}


def task_hash(run_config: Mapping[str, Any]) -> bytes:
    """keccak of the canonical JSON of :func:`task_spec`: the ``configHash`` a RoundRegistry round records."""
    return _spec_hash(task_spec(run_config))


def _spec_hash(spec: dict[str, Any]) -> bytes:
    from eth_utils import keccak

    return keccak(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode())


def check_task(run_config: Mapping[str, Any], expected: str | bytes, where: str) -> None:
    """Refuse a run config whose task is not the one ``expected`` (the round's on-chain ``configHash``) names."""
    try:
        want = expected if isinstance(expected, bytes) else bytes.fromhex(str(expected).removeprefix("0x"))
    except ValueError:
        raise BadInput(f"{where}: the expected task hash {expected!r} is not hex") from None
    spec = task_spec(run_config)
    got = _spec_hash(spec)
    if got != want:
        raise BadInput(f"{where}: the run config's task {json.dumps(spec, sort_keys=True)} "
                       f"hashes to 0x{got.hex()}, but the round was opened with task 0x{want.hex()}",
                       hint="use the run config `collab round create` printed for this round")
