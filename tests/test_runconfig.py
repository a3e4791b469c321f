"""The run config's task and its hash: what a RoundRegistry round's configHash binds, and the ClientApp's refusal
of any other task (in process, the tiny model; live rounds with the check on: tests/test_round_e2e.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collab.errors import BadInput
from collab.fl.runconfig import TASK_KEYS, app_defaults, effective, task_config, task_hash, task_spec, with_task

BASE: dict[str, Any] = {"model": "tiny", "max-len": 32, "lora-r": 8, "seed": 1, "lora-top-layers": 0,
                        "lora-freeze-a": False, "classes": "business,entertainment,politics,sports,tech"}


def test_the_task_hash_names_model_classes_and_adapters_and_nothing_else() -> None:
    base = task_hash(BASE)
    assert task_hash({**BASE, "max-len": "32", "lora-r": "8"}) == base  # a JSON string and a TOML int: one task
    assert task_hash({**BASE, "lr": 0.5, "epochs": 7, "epsilon": 1.0, "num-rounds": 9}) == base  # not the task
    changed = {"model": "minilm", "max-len": 64, "lora-r": 4, "seed": 2, "lora-top-layers": 3, "lora-freeze-a": True,
               "classes": "tech,sports,politics,entertainment,business"}  # the same classes in another label order
    assert set(changed) == set(TASK_KEYS)
    hashes = {task_hash({**BASE, key: value}) for key, value in changed.items()}
    assert len(hashes) == len(changed) and base not in hashes
    spec = task_spec(BASE)
    assert spec["lora"]["targets"] == ["query", "value"] and spec["classes"][0] == "business"
    assert task_config(BASE).num_labels == 5


def test_defaults_are_the_apps_and_a_spelled_out_task_survives_any_orchestrator_default() -> None:
    assert app_defaults()["model"] == "minilm" and effective({"lr": 1.0})["lr"] == 1.0
    job = with_task({"lr": 0.02})
    assert {k: job[k] for k in TASK_KEYS} == {k: app_defaults()[k] for k in TASK_KEYS} and job["lr"] == 0.02
    orchestrator_defaults = {"model": "tiny", "max-len": 32}  # a job's config goes over these
    assert task_hash({**orchestrator_defaults, **job}) == task_hash(effective({}))
    for bad in ({"lora-freeze-a": "true"}, {"model": "gpt"}, {"max-len": "long"}, {"lora-r": 0}):
        with pytest.raises(BadInput):
            with_task(bad)
    with pytest.raises(BadInput, match="no classes"):
        task_config({k: v for k, v in BASE.items() if k != "classes"})


def _hello(tmp_path: Path, run_config: dict[str, Any], expected: bytes) -> Any:
    from flwr.app import Context, Message, Metadata, RecordDict

    from collab.fl.app import client_app

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": f"article {i} about markets", "label": "business"}) + "\n"
                            for i in range(4)))
    node_config = {"participant-id": "p0", "data-path": str(data), "task-hash": "0x" + expected.hex()}
    context = Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config=run_config)
    arrived = Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=1, reply_to_message_id="", group_id="1",
                       created_at=0.0, ttl=600.0, message_type="query.hello")
    return client_app.hello(Message(RecordDict(), metadata=arrived), context)


def test_a_clientapp_refuses_a_run_config_with_another_task_than_its_node_was_given(tmp_path: Path) -> None:
    """The node config's task-hash comes from the chain through the participant's own node: an aggregator that
    swaps the adapters (here: trains A too) is refused at the introduction, before any data is touched."""
    opened = task_hash(BASE)
    refused = _hello(tmp_path, {**BASE, "lora-freeze-a": True}, opened)
    assert refused.has_error() and "p0: this node refuses the round" in refused.error.reason
    assert "0x" + opened.hex() in refused.error.reason
    answered = _hello(tmp_path, BASE, opened)
    assert not answered.has_error() and answered.content["info"]["num-examples"] == 4


def test_a_round_job_with_a_malformed_task_is_refused_at_submission(tmp_path: Path) -> None:
    """Not only in a RoundRegistry round: a job whose run config names no valid task fails when submitted, with
    the reason, instead of in the ServerApp minutes later."""
    from orchestrator.rounds import RoundJob

    parts = ["0x" + "11" * 20, "0x" + "22" * 20]
    job = RoundJob(tmp_path / "orch-home")
    for config, message in (({"model": "gpt"}, "unknown model kind"), ({"max-len": "long"}, "invalid task"),
                            ({"lora-freeze-a": "no"}, "lora-freeze-a must be true or false")):
        with pytest.raises(BadInput, match=message):
            job.validate({"participants": parts, "config": config})
    job.validate({"participants": parts, "config": {"lora-freeze-a": True, "max-len": 64}})
