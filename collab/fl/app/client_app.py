"""ClientApp: one participant's side of a round, on its own node, with its own data, ledger and keys.

Node-local settings come from the SuperNode's ``--node-config`` (``participant-id``,
``data-path``, ``ledger-path``, ``home``); the identity passphrase from the
SuperNode's ``COLLAB_PASSPHRASE``; the task and DP parameters from the run
config every node shares.

Message types (Flower Message API, one ClientApp call per message):

* ``query.hello``: participant name, identity address, declared sample count;
* ``train``: local DP-SGD from the received global model; the reply carries
  the signed model receipt, the update commitment signed with this node's
  weight and cumulative ε and, with secure
  aggregation, the SecAgg round-0 key advertisement instead of the update;
  in a RoundRegistry round it also carries the aggregator's update receipt
  for the previous round, checked and kept (a bad one refuses the message);
* ``query.receipt``: the receipt for the last round's update, kept in the
  home for ``collab round dispute`` (:mod:`collab.fl.receipts`);
* ``train.secagg_share`` / ``_mask`` / ``_consistency`` / ``_unmask``:
  SecAgg rounds 1-4 (``collab.secagg``). The participant's secrets and its
  update between these messages live in ``Context.state``, which the
  SuperNode keeps in its own memory and never sends to the SuperLink.

Heavy imports (torch, transformers, Opacus) happen only in ``train``; the
SecAgg stages need none of them. Under Flower's ``flwr-clientapp`` every
message starts a fresh process; under collab's warm host
(:mod:`collab.fl.clientapp_host`) one process per node serves them all and
:mod:`collab.fl.warm` keeps the base model and the unlocked identity.
A refusal (bad data, exhausted budget, protocol violation) is an error reply
with its message, so the ServerApp drops this participant and says why.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from collab.config import ENV_PASSPHRASE
from collab.errors import BadInput, CollabError, Unauthorized
from collab.fl import attestation as att
from collab.fl import warm
from collab.fl.data import load_user_data
from collab.identity import Identity
from collab.secagg import (
    ConsistencyBroadcast,
    ForwardedShares,
    KeyBroadcast,
    RoundConfig,
    SecAggParticipant,
    SurvivorList,
    TensorLayout,
)

if TYPE_CHECKING:
    from collab.dp.dpsgd import DPConfig
    from collab.dp.ledger import PrivacyLedger

app = ClientApp()
log = logging.getLogger("collab.fl.client")
ERROR_CODE = 4242  # collab's refusals, distinct from Flower's own error codes
STATE_KEY = "collab-secagg"
FRAC_BITS = 24  # update words: n_k · θ_k at 2^-24 (|n_k θ| < 2^38 leaves ample ring headroom)


def _identity(context: Context) -> Identity:
    home = str(context.node_config.get("home", ""))
    passphrase = os.environ.get(ENV_PASSPHRASE, "")
    if not home or not passphrase:
        raise Unauthorized("this node has no identity home or no COLLAB_PASSPHRASE; it cannot sign its updates")
    return warm.identity(home, passphrase)


def _data(context: Context) -> Any:
    from collab.fl.runconfig import classes_of

    return load_user_data(str(context.node_config["data-path"])).with_classes(classes_of(context.run_config))


def _reply(msg: Message, **configs: dict[str, Any]) -> Message:
    return Message(RecordDict({k: ConfigRecord(v) for k, v in configs.items()}), reply_to=msg)


def _refuse(msg: Message, context: Context, exc: CollabError) -> Message:
    participant = context.node_config.get("participant-id", "?")
    return Message(Error(ERROR_CODE, f"{participant}: {exc}"), reply_to=msg)


def _guarded(handler: Any) -> Any:
    def run(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)  # type: ignore[no-any-return]
        except CollabError as exc:
            return _refuse(msg, context, exc)

    run.__doc__ = handler.__doc__
    return run


def _check_task(context: Context) -> None:
    """In a RoundRegistry round, refuse a run config whose task is not the one the round was opened with.

    The expected hash is the round's on-chain ``configHash``, which this node's
    own chain client put in the node config; the run config comes from the
    aggregator, who could otherwise swap the base model, classes or adapters
    the participants agreed to.
    """
    from collab.fl.runconfig import check_task

    expected = str(context.node_config.get("task-hash", ""))
    if expected:
        check_task(dict(context.run_config), expected, "this node refuses the round")


# ---------------------------------------------------------------------- hello


@app.query("hello")
@_guarded
def hello(msg: Message, context: Context) -> Message:
    """Who this node is: participant name, identity address, declared sample count (the weight)."""
    _check_task(context)
    home = str(context.node_config.get("home", ""))
    address = Identity.read_public(home).address if home else ""
    return _reply(
        msg,
        info={"participant": str(context.node_config["participant-id"]), "address": address,
              "num-examples": len(_data(context))},
    )


# ---------------------------------------------------------------------- train


def _local_round(msg: Message, context: Context) -> tuple[dict[str, np.ndarray], MetricRecord]:
    """DP-SGD from the received model; returns the new travelling weights and the metrics (ε, losses)."""
    warm.preload()  # in a warm host: waits for its background preload; elsewhere: imports in turn with other nodes
    import torch

    from collab.dp.dpsgd import DPConfig, train_dp
    from collab.dp.ledger import PrivacyLedger
    from collab.fl.runconfig import task_config
    from collab.fl.task import load_trainable, trainable_state

    _check_task(context)  # again: an aggregator may skip the introduction
    torch.set_num_threads(int(context.node_config.get("threads", 1)))
    rc, nc = dict(context.run_config), dict(context.node_config)
    participant = str(nc["participant-id"])
    rnd = int(msg.content["config"]["server-round"])
    data = _data(context)
    dp = DPConfig(
        noise_multiplier=0.0,
        max_grad_norm=float(rc["max-grad-norm"]),
        batch_size=int(rc["batch-size"]),
        epochs=int(rc["epochs"]),
        lr=float(rc["lr"]),
    )
    ledger = PrivacyLedger(str(nc["ledger-path"]))
    ledger.open(participant, float(rc["epsilon"]), float(rc["delta"]))
    dp = dataclasses.replace(dp, noise_multiplier=_noise_multiplier(rc, ledger, participant, dp, len(data), rnd))
    ledger.check(participant, dp.noise_multiplier, dp.sample_rate(len(data)), dp.steps(len(data)))
    task = task_config(rc)
    model = warm.fresh_model(task)  # the base model is loaded once per process
    load_trainable(model, msg.content["arrays"].to_torch_state_dict())
    seed = int.from_bytes(hashlib.sha256(f"{participant}/{rnd}/{task.seed}".encode()).digest()[:4], "big")
    report = train_dp(model, data, dp, task.max_len, seed)
    epsilon = ledger.record(participant, dp.noise_multiplier, report.sample_rate, report.steps)
    # The local losses stay in this node's log: they are exact statistics of the private data, which the
    # update's DP noise does not cover (the aggregator would see them even with secure aggregation on).
    log.info("%s round %d: σ=%.4f, %d steps, local loss %.4f -> %.4f, ε=%.4f", participant, rnd,
             dp.noise_multiplier, report.steps, report.loss_before, report.loss_after, epsilon)
    metrics = MetricRecord({"num-examples": len(data), "epsilon": epsilon, "steps": report.steps})
    return {k: v.detach().numpy() for k, v in trainable_state(model).items()}, metrics


def _noise_multiplier(rc: dict[str, Any], ledger: PrivacyLedger, participant: str, dp: DPConfig, examples: int,
                      rnd: int) -> float:
    """The run config's ``noise-multiplier``, or with ``"auto"`` this participant's own calibration.

    ``auto`` spends what is left of the participant's ε budget evenly over the
    job's remaining rounds at its own sample rate and step count (a larger
    shard needs less noise for the same ε); a fixed value is the same σ for
    everyone, and the ledger's check then stops whoever it would overspend.
    """
    value = rc["noise-multiplier"]
    if str(value).strip().lower() != "auto":
        try:
            return float(value)  # its range is DPConfig's to check
        except ValueError:
            raise BadInput(f"noise-multiplier must be \"auto\" or a number >= 0, got {value!r}") from None
    rounds_left = max(1, int(rc["num-rounds"]) - rnd + 1)
    return ledger.calibrate(participant, dp.sample_rate(examples), dp.steps(examples), rounds_left)


@app.train()
@_guarded
def train(msg: Message, context: Context) -> Message:
    """Train locally, sign the model receipt and the update commitment; start SecAgg or send the update."""
    from flwr.app import ArrayRecord

    from chain.clients.round_registry import epsilon_units
    from collab.fl.receipts import ReceiptContext, save_opening

    identity = _identity(context)
    cfg = msg.content["config"]
    job, rnd, member = str(cfg["job"]), int(cfg["server-round"]), int(cfg["member-id"])
    if "receipt" in cfg:  # the aggregator's receipt for this node's previous update: no further update without it
        _keep_receipt(context, cfg)
    received = {k: v.numpy() for k, v in msg.content["arrays"].items()}
    receipt = att.sign(identity.account, att.model_receipt_digest(job, rnd, att.model_hash(received)))
    state, metrics = _local_round(msg, context)
    weight, epsilon = int(metrics["num-examples"]), epsilon_units(float(metrics["epsilon"]))
    layout = TensorLayout.of(state)
    words = layout.pack({k: v.astype(np.float64) * weight for k, v in state.items()}, FRAC_BITS)
    round_id = att.job_round_id(job, rnd)
    salt = os.urandom(32)
    commitment = att.update_commitment(round_id, salt, words)
    where = ReceiptContext.from_run_config(dict(context.run_config))
    save_opening(str(context.node_config["home"]), job, rnd, where, salt, commitment, epsilon)
    info: dict[str, Any] = {
        "participant": str(context.node_config["participant-id"]),
        "model-receipt": receipt,
        "update-commitment": commitment,
        "update-signature": att.sign(identity.account, att.update_digest(round_id, member, weight, epsilon, commitment)),
    }
    if bool(context.node_config.get("keep-inputs", False)):  # audits and tests: this node's own input, locally
        np.save(Path(str(context.node_config["home"])) / "flower" / f"input-r{rnd}.npy", words)
    content = RecordDict({"metrics": metrics})
    if "secagg" in cfg:
        config = RoundConfig.from_bytes(bytes(cfg["secagg"]))
        participant = SecAggParticipant(config, member, identity.account)
        info["advertisement"] = participant.advertise_keys().to_bytes()
        context.state[STATE_KEY] = ConfigRecord(
            {"participant": participant.export_state(), "words": words.astype("<i8").tobytes(), "fl-round": rnd}
        )
    else:
        import torch

        content["arrays"] = ArrayRecord({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    content["info"] = ConfigRecord(info)
    return Message(content, reply_to=msg)


# ---------------------------------------------------------------------- update receipts


def _keep_receipt(context: Context, cfg: Any) -> Path:
    """Check the aggregator's receipt against the run's aggregator and this node's own commitment; store it."""
    from collab.errors import BadInput
    from collab.fl.receipts import ReceiptContext, keep, read_opening

    where = ReceiptContext.from_run_config(dict(context.run_config))
    if where is None:
        raise BadInput("an update receipt in a round outside the RoundRegistry")
    home = str(context.node_config["home"])
    saved = read_opening(home, str(cfg["receipt-job"]), int(cfg["receipt-round"]))
    try:
        own: tuple[bytes, int] | None = (bytes.fromhex(saved["commitment"]), int(saved["epsilon"])) if saved else None
    except (ValueError, KeyError, TypeError):
        own = None
    return keep(home, where, Identity.read_public(home).address, cfg, own)


@app.query("receipt")
@_guarded
def receipt(msg: Message, context: Context) -> Message:
    """The aggregator's receipt for this node's last-round update: checked, then kept in the home for disputes."""
    return _reply(msg, info={"stored": str(_keep_receipt(context, msg.content["receipt"]))})


# ---------------------------------------------------------------------- SecAgg rounds 1-4


def _stage(msg: Message, context: Context, step: Any) -> Message:
    saved = context.state.get(STATE_KEY)
    if saved is None:
        raise Unauthorized("no secure-aggregation state on this node for this round (restarted mid-round?)")
    stall = str(context.node_config.get("secagg-stall", ""))
    if stall and msg.metadata.message_type.endswith(stall):  # fault injection for tests: hang here
        time.sleep(3600)
    participant = SecAggParticipant.restore(bytes(saved["participant"]), _identity(context).account)
    words = np.frombuffer(bytes(saved["words"]), dtype="<i8").astype(np.int64)
    try:
        out = step(participant, bytes(msg.content["secagg"]["msg"]), words)
    finally:  # an aborted participant stays aborted in later calls
        context.state[STATE_KEY] = ConfigRecord({**dict(saved), "participant": participant.export_state()})
    return _reply(msg, secagg={"msg": out.to_bytes()})


@app.train("secagg_share")
@_guarded
def secagg_share(msg: Message, context: Context) -> Message:
    """Round 1: check the signed keys, send sealed Shamir shares and signed seed commitments."""
    return _stage(msg, context, lambda p, data, _: p.share_keys(KeyBroadcast.from_bytes(data)))


@app.train("secagg_mask")
@_guarded
def secagg_mask(msg: Message, context: Context) -> Message:
    """Round 2: the masked input y_u in Z_2^64, signed."""
    return _stage(msg, context, lambda p, data, words: p.mask_input(ForwardedShares.from_bytes(data), words))


@app.train("secagg_consistency")
@_guarded
def secagg_consistency(msg: Message, context: Context) -> Message:
    """Round 3: sign the survivor list (once), and keep who was on it (the record must include them all)."""
    endorsement = msg.content["secagg"].get("endorsement")

    def sign(p: SecAggParticipant, data: bytes, _: Any) -> Any:
        survivors = SurvivorList.from_bytes(data)
        signature = p.sign_survivors(survivors)
        _keep_survivors(context, [p.config.member(u).address for u in survivors.survivors],
                        bytes(endorsement) if endorsement is not None else None)
        return signature

    return _stage(msg, context, sign)


def _keep_survivors(context: Context, addresses: list[str], endorsement: bytes | None) -> None:
    from collab.fl.receipts import ReceiptContext, keep_survivors

    where = ReceiptContext.from_run_config(dict(context.run_config))
    saved = context.state.get(STATE_KEY)
    if where is not None and saved is not None and "fl-round" in saved:
        if not keep_survivors(str(context.node_config["home"]), where, int(saved["fl-round"]), addresses, endorsement):
            log.warning("round %d: the survivor list of Flower round %s carries no valid endorsement by the "
                        "aggregator %s: no omission dispute possible", where.round_id, saved["fl-round"], where.aggregator)


@app.train("secagg_unmask")
@_guarded
def secagg_unmask(msg: Message, context: Context) -> Message:
    """Round 4: check the consistency signatures, reveal one share per peer; then forget the round."""
    reply = _stage(msg, context, lambda p, data, _: p.unmask(ConsistencyBroadcast.from_bytes(data)))
    del context.state[STATE_KEY]
    return reply
