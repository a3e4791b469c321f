"""ServerApp: drives the federated rounds on the Message API and records what happened.

Each Flower round sends the global adapter + head weights to every
participant node still in the round, waits up to ``round-timeout`` for
replies, drops nodes that failed or stayed silent (a killed SuperNode, an
exhausted privacy budget), and aggregates the rest if at least
``min-participants`` answered. The held-out BBC News test split is public, so
the server measures accuracy before the first round and after each one. The
whole record is rewritten to ``result-path`` after every round (the seam a
restarted orchestrator resumes from).

Aggregation is plain FedAvg weighted by sample count in :func:`aggregate`:
the ServerApp sees individual updates. That is the seam for
``collab.secagg`` masked ring sums (a later slice); see docs/training.md.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from collab.fl.data import load_bbc_news, take, train_test_split
from collab.fl.task import TaskConfig, build_model, evaluate, load_trainable, trainable_state

log = logging.getLogger("collab.fl.server")
app = ServerApp()


def task_config(run_config: dict[str, Any]) -> TaskConfig:
    """The public task every node derives from the same run config."""
    return TaskConfig(
        num_labels=len(str(run_config["classes"]).split(",")),
        kind=str(run_config["model"]),
        max_len=int(run_config["max-len"]),
        lora_r=int(run_config["lora-r"]),
        seed=int(run_config["seed"]),
    )


def aggregate(updates: Sequence[tuple[dict[str, torch.Tensor], int]]) -> dict[str, torch.Tensor]:
    """FedAvg: the sample-count-weighted mean of the participants' travelling tensors."""
    total = sum(n for _, n in updates)
    names = updates[0][0].keys()
    return {name: sum(state[name].double() * (n / total) for state, n in updates).float() for name in names}


class RoundRecord:
    """The JSON record of a job's rounds, written atomically after every change."""

    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self.body: dict[str, Any] = {"status": "running", "rounds": [], "epsilon": {}, "dropped": []}

    def update(self, **fields: Any) -> None:
        self.body.update(fields)
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.body, indent=1))
            os.replace(tmp, self.path)


def _wait_for_nodes(grid: Grid, expected: int, minimum: int, wait: float) -> list[int]:
    deadline = time.monotonic() + wait
    nodes = sorted(grid.get_node_ids())
    while len(nodes) < expected and time.monotonic() < deadline:
        time.sleep(0.5)
        nodes = sorted(grid.get_node_ids())
    if len(nodes) < minimum:
        raise RuntimeError(f"only {len(nodes)} participant node(s) connected, {minimum} required")
    return nodes


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-rounds`` rounds of local DP-SGD + aggregation and record accuracy and ε per participant."""
    rc = dict(context.run_config)
    record = RoundRecord(str(rc.get("result-path", "")))
    task = task_config(rc)
    torch.set_num_threads(1)
    model = build_model(task)
    classes = str(rc["classes"]).split(",")
    _, test = train_test_split(load_bbc_news().with_classes(classes), 0.2, task.seed)
    test = take(test, int(rc["test-samples"]), task.seed + 1)
    base_loss, base_acc = evaluate(model, test, task.max_len)
    record.update(base_accuracy=base_acc, base_loss=base_loss, model=task.kind, test_samples=len(test))
    minimum = int(rc["min-participants"])
    try:
        active = _wait_for_nodes(grid, int(rc["expected-participants"]), minimum, float(rc["node-wait"]))
    except RuntimeError as exc:
        record.update(status="failed", reason=str(exc))
        raise
    names: dict[int, str] = {}
    for rnd in range(1, int(rc["num-rounds"]) + 1):
        arrays = ArrayRecord(trainable_state(model))
        messages = [
            Message(
                RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": rnd})}),
                dst_node_id=node,
                message_type=MessageType.TRAIN,
                group_id=str(rnd),
            )
            for node in active
        ]
        started = time.monotonic()
        replies = {r.metadata.src_node_id: r for r in grid.send_and_receive(messages, timeout=float(rc["round-timeout"]))}
        updates: list[tuple[dict[str, torch.Tensor], int]] = []
        entry: dict[str, Any] = {"round": rnd, "participants": [], "dropped": {}, "epsilon": {}, "examples": {}}
        for node in active:
            reply = replies.get(node)
            name = names.get(node, f"node-{node}")
            if reply is None:
                entry["dropped"][name] = "no reply before the round timeout"
            elif reply.has_error():
                reason = reply.error.reason or f"error code {reply.error.code}"
                entry["dropped"][name] = reason.removeprefix(f"{name}: ")
            else:
                name = names[node] = str(reply.content["info"]["participant"])
                metrics = reply.content["metrics"]
                updates.append((reply.content["arrays"].to_torch_state_dict(), int(metrics["num-examples"])))
                entry["participants"].append(name)
                entry["epsilon"][name] = float(metrics["epsilon"])
                entry["examples"][name] = int(metrics["num-examples"])
        active = [node for node in active if node in replies and not replies[node].has_error()]
        dropped = sorted(set(record.body["dropped"]) | set(entry["dropped"]))
        record.body["epsilon"].update(entry["epsilon"])
        if len(updates) < minimum:
            reason = f"round {rnd}: only {len(updates)} update(s), {minimum} required; " + "; ".join(
                f"{k}: {v}" for k, v in entry["dropped"].items()
            )
            record.update(status="failed", reason=reason, dropped=dropped, rounds=[*record.body["rounds"], entry])
            log.error(reason)
            return
        load_trainable(model, aggregate(updates))
        entry["loss"], entry["accuracy"] = evaluate(model, test, task.max_len)
        entry["seconds"] = time.monotonic() - started
        record.update(dropped=dropped, rounds=[*record.body["rounds"], entry])
        log.info("round %d: accuracy %.3f with %s", rnd, entry["accuracy"], entry["participants"])
    record.update(status="completed", final_accuracy=record.body["rounds"][-1]["accuracy"])
