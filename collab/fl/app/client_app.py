"""ClientApp: one participant's local round, on its own node, with its own data and privacy ledger.

Node-local settings come from the SuperNode's ``--node-config``
(``participant-id``, ``data-path``, ``ledger-path``); the task and the DP
parameters from the run config every node shares. The budget is checked in
the ledger *before* training; a refusal, bad data or a stalled DP-SGD run is
returned as an error reply with its message, so the ServerApp drops this
participant for the round and says why.
"""

from __future__ import annotations

import hashlib

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from collab.dp.dpsgd import DPConfig, train_dp
from collab.dp.ledger import PrivacyLedger
from collab.errors import CollabError
from collab.fl.app.server_app import task_config
from collab.fl.data import load_user_data
from collab.fl.task import build_model, load_trainable, trainable_state

app = ClientApp()
ERROR_CODE = 4242  # collab's refusals, distinct from Flower's own error codes


def _train(msg: Message, context: Context) -> Message:
    rc, nc = dict(context.run_config), dict(context.node_config)
    participant = str(nc["participant-id"])
    rnd = int(msg.content["config"]["server-round"])
    data = load_user_data(str(nc["data-path"])).with_classes(str(rc["classes"]).split(","))
    dp = DPConfig(
        noise_multiplier=float(rc["noise-multiplier"]),
        max_grad_norm=float(rc["max-grad-norm"]),
        batch_size=int(rc["batch-size"]),
        epochs=int(rc["epochs"]),
        lr=float(rc["lr"]),
    )
    ledger = PrivacyLedger(str(nc["ledger-path"]))
    ledger.open(participant, float(rc["epsilon"]), float(rc["delta"]))
    ledger.check(participant, dp.noise_multiplier, dp.sample_rate(len(data)), dp.steps(len(data)))
    task = task_config(rc)
    model = build_model(task)
    load_trainable(model, msg.content["arrays"].to_torch_state_dict())
    seed = int.from_bytes(hashlib.sha256(f"{participant}/{rnd}/{task.seed}".encode()).digest()[:4], "big")
    report = train_dp(model, data, dp, task.max_len, seed)
    epsilon = ledger.record(participant, dp.noise_multiplier, report.sample_rate, report.steps)
    metrics = MetricRecord(
        {
            "num-examples": len(data),
            "epsilon": epsilon,
            "loss-before": report.loss_before,
            "loss-after": report.loss_after,
            "steps": report.steps,
        }
    )
    info = ConfigRecord({"participant": participant})
    return Message(
        RecordDict({"arrays": ArrayRecord(trainable_state(model)), "metrics": metrics, "info": info}), reply_to=msg
    )


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train locally with DP-SGD and reply with the new adapters, ε spent so far and sample count."""
    torch.set_num_threads(int(context.node_config.get("threads", 1)))
    try:
        return _train(msg, context)
    except CollabError as exc:
        participant = context.node_config.get("participant-id", "?")
        return Message(Error(ERROR_CODE, f"{participant}: {exc}"), reply_to=msg)
