"""ServerApp: drives the federated rounds on the Message API and records what happened.

A run first asks every connected node who it is (``query.hello``: participant
name, identity address, declared sample count = its weight; member ids are
fixed by name order). Each Flower round then sends the global adapter + head
weights to every participant still in, waits up to ``round-timeout``, checks
each reply's signed model receipt (the hash of what was sent) and signed
update commitment (with the participant's weight and cumulative ε), and
aggregates:

* ``secure-aggregation = true`` (default): the replies carry SecAgg key
  advertisements, not updates; :class:`collab.fl.secure.SecureRound` runs
  SecAgg(+) rounds 1-4 as further Message API rounds and returns the exact
  ring sum Σ n_k·θ_k, divided here by Σ n_k of the survivors. The witness is
  saved for the masked-sum claim. The aggregator never sees an update.
* ``false``: plain FedAvg of the updates in :func:`aggregate` (needed only
  for scoring that looks at individual updates; the record says so).

For a ``RoundRegistry`` round (``registry-round`` > 0) the aggregator signs
an EIP-712 update receipt for every update in a round's aggregate
(:mod:`collab.fl.receipts`; its identity unlocked from ``aggregator-home``, a
server-only value like ``result-path`` that participants never see, with the
``COLLAB_PASSPHRASE`` the SuperLink inherited) and delivers it in the
participant's next message: the next round's ``train``, after the last round
a final ``query.receipt``. A participant left out of the record despite it
wins the exclusion dispute.

Failed or silent participants are dropped (a killed SuperNode, an exhausted
privacy budget, a bad signature); a round needs ``min-participants``. The
held-out BBC News test split is public, so accuracy is measured after each
round. The records and a checkpoint are rewritten after every round; a
restarted run of the same job resumes after the last completed round, with
that round's participants only (a node dropped before the restart stays
dropped, so every participant of the final round took part in every round).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from eth_hash.auto import keccak
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from collab.errors import CollabError, ProtocolViolation
from collab.fl import attestation as att
from collab.fl.data import load_bbc_news, take, train_test_split
from collab.fl.deployment import server_only
from collab.fl.exchange import send_and_receive
from collab.fl.receipts import ReceiptContext, ReceiptSigner, delivery
from collab.fl.record import RECORD_VERSION, Checkpoint, JsonRecord, words_hash
from collab.fl.secure import SecureRound
from collab.fl.runconfig import classes_of, switch, task_config
from collab.fl.task import build_model, evaluate, load_trainable, trainable_state
from collab.secagg import Member, RoundConfig, TensorLayout, TooFewSurvivors

log = logging.getLogger("collab.fl.server")
app = ServerApp()
FRAC_BITS = 24  # must match collab.fl.app.client_app.FRAC_BITS
RECEIPT_TIMEOUT = 60.0  # seconds the final receipt message waits for the participants' acknowledgements


def aggregate(updates: Sequence[tuple[dict[str, torch.Tensor], int]]) -> dict[str, torch.Tensor]:
    """Plain FedAvg: the sample-count-weighted mean of the participants' travelling tensors."""
    total = sum(n for _, n in updates)
    names = updates[0][0].keys()
    return {name: sum(state[name].double() * (n / total) for state, n in updates).float() for name in names}


@dataclass(frozen=True)
class Peer:
    """A participant node as it introduced itself."""

    node: int
    name: str
    address: str
    weight: int
    member: int


def job_id(rc: dict[str, Any], out: Path | None) -> str:
    """The job's stable id: ``job-id`` from the run config, else derived from the output directory."""
    if str(rc.get("job-id", "")):
        return str(rc["job-id"])
    return "job-" + hashlib.sha256(str(out.resolve() if out else "").encode()).hexdigest()[:16]


def _wait_for_nodes(grid: Grid, expected: int, minimum: int, wait: float) -> list[int]:
    deadline = time.monotonic() + wait
    nodes = sorted(grid.get_node_ids())
    while len(nodes) < expected and time.monotonic() < deadline:
        time.sleep(0.5)
        nodes = sorted(grid.get_node_ids())
    if len(nodes) < minimum:
        raise RuntimeError(f"only {len(nodes)} participant node(s) connected, {minimum} required")
    return nodes


def _hello(grid: Grid, nodes: list[int], timeout: float, expected: dict[str, str]) -> tuple[list[Peer], dict[str, str]]:
    """Ask every node who it is; member ids follow participant names, so they are stable across restarts."""
    msgs = [Message(RecordDict({}), dst_node_id=n, message_type=f"{MessageType.QUERY}.hello") for n in nodes]
    replies = {r.metadata.src_node_id: r for r in send_and_receive(grid, msgs, timeout)}
    found: list[tuple[str, int, str, int]] = []
    refused: dict[str, str] = {}
    for node in nodes:
        reply = replies.get(node)
        if reply is None or reply.has_error():
            refused[f"node-{node}"] = reply.error.reason if reply is not None else "no hello reply"
            continue
        info = reply.content["info"]
        name, address = str(info["participant"]), str(info["address"])
        if expected and expected.get(name, "").lower() != address.lower():
            refused[name] = f"identity {address or '(none)'} is not the one fixed for {name}"
            continue
        found.append((name, node, address, int(info["num-examples"])))
    names = [f[0] for f in found]
    for dup in {n for n in names if names.count(n) > 1}:
        refused[dup] = "two nodes claim this participant"
    found = [f for f in found if f[0] not in refused]
    peers = [Peer(node, name, address, weight, i + 1) for i, (name, node, address, weight) in enumerate(sorted(found))]
    return peers, refused


def _round_config(job: str, rnd: int, peers: list[Peer], length: int, minimum: int, neighbours: int) -> RoundConfig:
    n = len(peers)
    k = neighbours if 0 < neighbours < n - 1 else None
    holders = n if k is None else k + 1
    threshold = min(holders, max(holders // 2 + 1, minimum))
    return RoundConfig(
        round_id=att.job_round_id(job, rnd),
        members=tuple(Member(p.member, p.address) for p in peers),
        threshold=threshold,
        length=length,
        frac_bits=FRAC_BITS,
        neighbours=k,
        graph_seed=att.job_round_id(job, 0),
    )


def _check_reply(reply: Message, peer: Peer, job: str, rnd: int, sent_hash: bytes) -> dict[str, Any]:
    """The attested facts of a train reply; ProtocolViolation/BadInput when a signature or the weight is off."""
    from chain.clients.round_registry import epsilon_units

    info, metrics = reply.content["info"], reply.content["metrics"]
    if str(info["participant"]) != peer.name or int(metrics["num-examples"]) != peer.weight:
        raise ProtocolViolation(f"reply claims participant {info['participant']} with weight {metrics['num-examples']}")
    receipt, commitment, usig = bytes(info["model-receipt"]), bytes(info["update-commitment"]), bytes(info["update-signature"])
    att.check(att.model_receipt_digest(job, rnd, sent_hash), receipt, peer.address, f"{peer.name}'s model receipt")
    epsilon = float(metrics["epsilon"])
    digest = att.update_digest(att.job_round_id(job, rnd), peer.member, peer.weight, epsilon_units(epsilon), commitment)
    att.check(digest, usig, peer.address, f"{peer.name}'s update commitment")
    return {
        "participant": peer.name, "address": peer.address, "member_id": peer.member, "weight": peer.weight,
        "epsilon": epsilon, "update_commitment": "0x" + commitment.hex(),
        "update_signature": "0x" + usig.hex(), "model_receipt": "0x" + receipt.hex(),
    }


def _numpy(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in state.items()}


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-rounds`` rounds of local DP-SGD + (secure) aggregation; record accuracy, ε and attestations."""
    rc = server_only(dict(context.run_config))  # + the orchestrator-local values participants never see
    result_path = Path(str(rc["result-path"])) if str(rc.get("result-path", "")) else None
    out = result_path.parent if result_path else None
    job, secure = job_id(rc, out), switch(rc, "secure-aggregation", True)
    record = JsonRecord(result_path, {"status": "running", "job": job, "secure_aggregation": secure,
                                      "rounds": [], "epsilon": {}, "dropped": []})
    attribution = JsonRecord(out / "attribution.json" if out else None, {})
    task = task_config(rc)
    torch.set_num_threads(1)
    model = build_model(task)
    classes = classes_of(rc)
    _, test = train_test_split(load_bbc_news().with_classes(classes), 0.2, task.seed)
    test = take(test, int(rc["test-samples"]), task.seed + 1)
    checkpoint, start = (Checkpoint(out) if out else None), 1
    resumed = checkpoint.load(job) if checkpoint and switch(rc, "resume", True) else None
    if resumed is not None:
        last, weights, records = resumed
        load_trainable(model, {k: torch.from_numpy(v) for k, v in weights.items()})
        record.body, attribution.body, start = records["result"], records["attribution"], last + 1
        record.update(status="running", resumed_after=last)
        log.info("job %s: resuming after round %d", job, last)
    else:
        base_loss, base_acc = evaluate(model, test, task.max_len)
        record.update(base_accuracy=base_acc, base_loss=base_loss, model=task.kind, test_samples=len(test))
        attribution.update(
            version=RECORD_VERSION, job=job, secure_aggregation=secure, frac_bits=FRAC_BITS,
            task={"model": task.kind, "classes": classes, "max_len": task.max_len, "lora_r": task.lora_r,
                  "lora_top_layers": task.lora_top_layers, "lora_freeze_a": task.lora_freeze_a,
                  "seed": task.seed, "epsilon_budget": float(rc["epsilon"]), "delta": float(rc["delta"])},
            participants={}, rounds=[],
        )
    minimum, timeout = int(rc["min-participants"]), float(rc["round-timeout"])

    def fail(reason: str, entry: dict[str, Any] | None = None) -> None:
        rounds = [*record.body["rounds"], entry] if entry else record.body["rounds"]
        record.update(status="failed", reason=reason, rounds=rounds)
        log.error(reason)

    where = ReceiptContext.from_run_config(rc)  # a RoundRegistry round: one signed receipt per accepted update
    try:
        signer = ReceiptSigner.load(where, str(rc.get("aggregator-home", ""))) if where else None
    except CollabError as exc:
        fail(str(exc))
        return
    pending = _pending_receipts(where, job, attribution.body) if where and resumed else {}

    try:
        nodes = _wait_for_nodes(grid, int(rc["expected-participants"]), minimum, float(rc["node-wait"]))
    except RuntimeError as exc:
        fail(str(exc))
        raise
    expected = dict(p.split("=", 1) for p in str(rc.get("participants", "")).split(",") if "=" in p)
    peers, refused = _hello(grid, nodes, timeout, expected)
    if refused:
        record.update(refused=refused)
    if resumed is not None and record.body["rounds"]:  # a node dropped before the restart stays dropped
        peers = [p for p in peers if p.name in record.body["rounds"][-1]["participants"]]
    if len(peers) < minimum:
        fail(f"only {len(peers)} participant(s) introduced themselves, {minimum} required: {refused}")
        return
    for rnd in range(start, int(rc["num-rounds"]) + 1):
        entry = _run_round(grid, rc, job, rnd, model, peers, minimum, timeout, out, pending, signer)
        dropped = sorted(set(record.body["dropped"]) | set(entry["dropped"]))
        record.body["epsilon"].update(entry["epsilon"])
        if "failed" in entry:
            fail(entry.pop("failed"), entry)
            record.update(dropped=dropped)
            return
        entry["loss"], entry["accuracy"] = evaluate(model, test, task.max_len)
        attested = entry.pop("attested")
        if signer is not None and where is not None:
            pending = _sign_receipts(signer, where, job, rnd, attested)
        parts = attribution.body["participants"]
        for item in attested:
            p = parts.setdefault(item["participant"], {"address": item["address"], "member_id": item["member_id"],
                                                      "weight": item["weight"], "rounds": []})
            p["epsilon"] = item["epsilon"]
            p["rounds"].append(rnd)
        attribution.update(rounds=[*attribution.body["rounds"], {**entry.pop("attribution"), "included": attested}])
        record.update(dropped=dropped, rounds=[*record.body["rounds"], entry])
        if checkpoint is not None:
            checkpoint.save(job, rnd, _numpy(trainable_state(model)),
                            {"result": record.body, "attribution": attribution.body})
        log.info("round %d: accuracy %.3f with %s", rnd, entry["accuracy"], entry["participants"])
        peers = [p for p in peers if p.name in entry["participants"]]
    if pending:  # before "completed": the orchestrator stops this run once the record is final
        # A node lost after the last aggregation must not hold the record back for a whole round timeout.
        record.update(receipts=_deliver_receipts(grid, peers, pending, min(timeout, RECEIPT_TIMEOUT)))
    record.update(status="completed", final_accuracy=record.body["rounds"][-1]["accuracy"])


def _sign_receipts(signer: ReceiptSigner, where: ReceiptContext, job: str, rnd: int,
                   attested: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Sign a receipt for every update in this round's aggregate; what each participant's next message carries."""
    from chain.clients.round_registry import epsilon_units

    pending = {}
    for item in attested:
        commitment, epsilon = bytes.fromhex(item["update_commitment"][2:]), epsilon_units(item["epsilon"])
        signature = signer.sign(item["address"], rnd, commitment, epsilon)
        item["aggregator_receipt"] = "0x" + signature.hex()  # kept in attribution.json too
        pending[item["participant"]] = delivery(where, job, rnd, commitment, epsilon, signature)
    return pending


def _pending_receipts(where: ReceiptContext, job: str, attribution: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """After a restart: the last completed round's receipts, still to be delivered."""
    from chain.clients.round_registry import epsilon_units

    rounds = attribution.get("rounds") or []
    last = rounds[-1] if rounds else {}
    return {i["participant"]: delivery(where, job, int(last["round"]), bytes.fromhex(i["update_commitment"][2:]),
                                       epsilon_units(i["epsilon"]), bytes.fromhex(i["aggregator_receipt"][2:]))
            for i in last.get("included", []) if i.get("aggregator_receipt")}


def _deliver_receipts(grid: Grid, peers: list[Peer], pending: dict[str, dict[str, Any]],
                      timeout: float) -> dict[str, str]:
    """The last round's receipts in a final ``query.receipt`` message; per participant, stored or why not."""
    targets = [p for p in peers if p.name in pending]
    msgs = [Message(RecordDict({"receipt": ConfigRecord(pending[p.name])}), dst_node_id=p.node,
                    message_type=f"{MessageType.QUERY}.receipt") for p in targets]
    replies = {r.metadata.src_node_id: r for r in send_and_receive(grid, msgs, timeout)}
    out = {}
    for p in targets:
        reply = replies.get(p.node)
        out[p.name] = ("no reply" if reply is None else
                       f"refused: {reply.error.reason}" if reply.has_error() else "stored")
        if out[p.name] != "stored":
            log.warning("receipt for %s not delivered: %s", p.name, out[p.name])
    return out


def _run_round(grid: Grid, rc: dict[str, Any], job: str, rnd: int, model: torch.nn.Module, peers: list[Peer],
               minimum: int, timeout: float, out: Path | None,
               receipts: dict[str, dict[str, Any]] | None = None, signer: ReceiptSigner | None = None) -> dict[str, Any]:
    """One Flower round; updates ``model`` in place and returns the round's entry (``failed`` set on failure).

    ``receipts``: the previous round's update receipts, delivered with each participant's train message.
    """
    secure = switch(rc, "secure-aggregation", True)
    sent = _numpy(trainable_state(model))
    sent_hash = att.model_hash(sent)
    layout = TensorLayout.of(sent)
    cfg = _round_config(job, rnd, peers, layout.length, minimum, int(rc["secagg-neighbours"])) if secure else None
    by_node = {p.node: p for p in peers}
    arrays = ArrayRecord(trainable_state(model))
    messages = []
    for p in peers:
        config: dict[str, Any] = {"server-round": rnd, "job": job, "member-id": p.member, **(receipts or {}).get(p.name, {})}
        if cfg is not None:
            config["secagg"] = cfg.to_bytes()
        messages.append(Message(RecordDict({"arrays": arrays, "config": ConfigRecord(config)}),
                                dst_node_id=p.node, message_type=MessageType.TRAIN, group_id=str(rnd)))
    started = time.monotonic()
    replies = {r.metadata.src_node_id: r for r in send_and_receive(grid, messages, timeout)}
    entry: dict[str, Any] = {"round": rnd, "participants": [], "dropped": {}, "epsilon": {}, "examples": {}}
    attested: dict[str, dict[str, Any]] = {}
    ads: dict[int, bytes] = {}
    updates: list[tuple[dict[str, torch.Tensor], int]] = []
    senders: list[str] = []
    for node, p in by_node.items():
        reply = replies.get(node)
        if reply is None:
            entry["dropped"][p.name] = "no reply before the round timeout"
            continue
        if reply.has_error():
            entry["dropped"][p.name] = (reply.error.reason or f"error code {reply.error.code}").removeprefix(f"{p.name}: ")
            continue
        try:
            attested[p.name] = _check_reply(reply, p, job, rnd, sent_hash)
        except (CollabError, KeyError, TypeError, ValueError) as exc:
            entry["dropped"][p.name] = f"rejected: {exc}"
            continue
        entry["epsilon"][p.name] = attested[p.name]["epsilon"]
        if secure:
            ads[p.member] = bytes(reply.content["info"]["advertisement"])
        else:
            updates.append((reply.content["arrays"].to_torch_state_dict(), p.weight))
            senders.append(p.name)
    entry["train_seconds"] = time.monotonic() - started
    summary: dict[str, Any] = {"round": rnd, "global_model_hash": "0x" + sent_hash.hex()}
    if secure:
        assert cfg is not None
        names = {p.member: p.name for p in peers}
        sr = SecureRound(grid, cfg, {p.node: p.member for p in peers if p.member in ads}, names,
                         float(rc["secagg-timeout"]), f"{rnd}-secagg",
                         endorse=(lambda addresses: signer.sign_survivors(rnd, addresses)) if signer else None)
        try:
            result = sr.run(ads) if len(ads) >= cfg.threshold else None
        except TooFewSurvivors as exc:
            result, why = None, str(exc)
        else:
            why = f"only {len(ads)} key advertisement(s), threshold {cfg.threshold}"
        entry["dropped"].update(sr.dropped)
        if result is None:
            entry["failed"] = f"round {rnd}: secure aggregation aborted: {why}; " + _reasons(entry)
            return entry
        included = [names[u] for u in result.survivors]
        total = sum(p.weight for p in peers if p.name in included)
        sums = layout.unpack(result.words, FRAC_BITS)
        new = {k: torch.from_numpy(v / total).float() for k, v in sums.items()}
        witness = result.witness.to_bytes()
        if out is not None:
            (out / f"round-{rnd}.witness").write_bytes(witness)
        summary.update(round_id="0x" + cfg.round_id.hex(), secagg_config="0x" + cfg.digest.hex(),
                       threshold=cfg.threshold, neighbours=cfg.neighbours or 0, output_hash=words_hash(result.words),
                       witness=f"round-{rnd}.witness", witness_keccak="0x" + keccak(witness).hex(),
                       total_weight=total, survivors=[names[u] for u in result.survivors],
                       dropped_after_keys=[names[u] for u in result.dropped])
        entry["secagg_seconds"] = time.monotonic() - started - entry["train_seconds"]
        entry["secagg_bytes"] = sr.bytes_moved
    else:
        included = [p.name for p in peers if p.name in attested]
        new = aggregate(updates) if len(updates) >= minimum else {}
        summary["round_id"] = "0x" + att.job_round_id(job, rnd).hex()
        if out is not None and updates:  # the aggregator sees plain updates anyway: keep them for the FedAvg claim
            torch.save({"participants": senders, "weights": [w for _, w in updates],
                        "states": [state for state, _ in updates]}, out / f"round-{rnd}.updates.pt")
            summary["updates"] = f"round-{rnd}.updates.pt"
    for name in list(attested):
        if name not in included:
            entry["dropped"].setdefault(name, "dropped during secure aggregation")
            del attested[name]
    if len(included) < minimum:
        entry["failed"] = f"round {rnd}: only {len(included)} update(s), {minimum} required; " + _reasons(entry)
        return entry
    load_trainable(model, new)
    summary["new_model_hash"] = "0x" + att.model_hash(_numpy(trainable_state(model))).hex()
    entry.update(participants=included, examples={n: attested[n]["weight"] for n in included},
                 seconds=time.monotonic() - started, attested=[attested[n] for n in included], attribution=summary)
    return entry


def _reasons(entry: dict[str, Any]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in entry["dropped"].items())
