"""Shared set-up for the Flower tests: participant homes (identity + IID BBC shard) and a live deployment."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psutil

from collab.fl.data import Dataset, iid_split, load_bbc_news, take, train_test_split
from collab.fl.deployment import FlowerDeployment
from collab.identity import Identity

PASSPHRASE = "fl-test"


def write_jsonl(path: Path, data: Dataset) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": data.classes[y]}) + "\n" for t, y in zip(data.texts, data.labels)))
    return path


def participant_home(root: Path, name: str, shard: Dataset) -> tuple[Path, Path]:
    """A collab home with a fresh identity (cheap scrypt, tests only) and the participant's data file."""
    home = root / name
    home.mkdir(parents=True, exist_ok=True)
    if not Identity.exists(home):
        Identity.create(home, PASSPHRASE, scrypt_n=2)
    return home, write_jsonl(home / "data.jsonl", shard)


def start(
    tmp_path: Path, names: tuple[str, ...], per_participant: int = 40, deployment_kw: dict[str, Any] | None = None,
    **node_kw: Any,
) -> FlowerDeployment:
    """A SuperLink and one SuperNode per participant home, each with an IID shard of the BBC training split.

    ``node_kw`` maps a participant name to extra ``add_participant`` keywords (``stall``, ``keep_inputs``).
    """
    train, _ = train_test_split(load_bbc_news(), 0.2, seed=0)
    shards = iid_split(take(train, per_participant * len(names), seed=11), len(names), seed=12)
    deployment = FlowerDeployment(tmp_path / "orchestrator", **(deployment_kw or {}))
    try:
        deployment.start_superlink()
        for name, shard in zip(names, shards):
            home, data = participant_home(tmp_path, name, shard)
            deployment.add_participant(name, home, data, passphrase=PASSPHRASE, **node_kw.get(name, {}))
    except BaseException:
        deployment.stop()
        raise
    return deployment


def process_tree(deployment: FlowerDeployment) -> list[psutil.Process]:
    procs = []
    for p in deployment.processes.values():
        if p.proc.poll() is None:
            procs.append(psutil.Process(p.proc.pid))
        procs.extend(p.descendants())
    return procs


def assert_all_stopped(procs: list[psutil.Process]) -> None:
    time.sleep(1)
    alive = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running: {[(p.pid, p.name()) for p in alive]}"


def wait_for(path: Path, predicate: Any, timeout: float) -> dict[str, Any]:
    """Poll a JSON record until ``predicate(record)`` or its status is failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            try:
                record: dict[str, Any] = json.loads(path.read_text())
            except json.JSONDecodeError:
                record = {}
            if predicate(record) or record.get("status") == "failed":
                return record
        time.sleep(0.5)
    raise AssertionError(f"{path} did not reach the expected state within {timeout} s")
