"""The demo's phases on the process network: training round, shares, merge, secure inference, a won challenge.

Every phase here acts through the real processes (the orchestrator and the
nodes started by :mod:`orchestrator.demo_network`) and checks its outcome on
the chain: a round's claim and a merge's claim are read back from
ClaimManager, the inference's call receipt from Licensing, the cheater's
claim must end REJECTED with a watcher's game won. The round is a
RoundRegistry round opened by alice (the base model's owner) with the
orchestrator as aggregator; ``shares_minted`` reads the Receipts and Shares
its settlement minted to the participants back from the chain.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chain.clients.asset_registry import AssetRegistryClient
from chain.clients.claim_manager import ClaimManagerClient, ClaimStatus
from collab.errors import Unavailable
from orchestrator.demo_network import Network

if TYPE_CHECKING:
    from orchestrator.demo import Demo, Phase

PARTICIPANTS = ("alice", "bob", "carol")
TEXTS = ("Markets rallied after the central bank held rates.",)


def round_config(quick: bool) -> dict[str, Any]:
    """Flower run config: the tiny encoder in --quick, MiniLM otherwise (same DP-LoRA pipeline)."""
    if quick:  # plain FedAvg (labelled in the report): the four SecAgg stages were ~2/3 of the quick round's time
        return {"model": "tiny", "num-rounds": 1, "max-len": 32, "epochs": 1, "batch-size": 8, "lr": 0.01,
                "noise-multiplier": 0.8, "epsilon": 50.0, "test-samples": 40, "round-timeout": 180.0, "node-wait": 90.0,
                "secure-aggregation": False}
    return {"model": "minilm", "num-rounds": 1, "max-len": 32, "epochs": 2, "batch-size": 8, "lr": 0.01,
            "noise-multiplier": 0.7, "epsilon": 50.0, "test-samples": 60, "round-timeout": 400.0, "node-wait": 90.0}


def _write_shards(demo: Demo, per_participant: int) -> dict[str, Path]:
    from collab.fl.data import iid_split, load_bbc_news, take, train_test_split

    train, _ = train_test_split(load_bbc_news(), 0.2, seed=0)
    shards = iid_split(take(train, per_participant * len(PARTICIPANTS), seed=11), len(PARTICIPANTS), seed=12)
    out = {}
    for name, shard in zip(PARTICIPANTS, shards):
        path = demo.actors[name].home / "train.jsonl"
        path.write_text("".join(json.dumps({"text": t, "label": shard.classes[y]}) + "\n" for t, y in zip(shard.texts, shard.labels)))
        out[name] = path
    return out


def _write_adapters(demo: Demo) -> None:
    """Each participant's LoRA adapter (+ head) of the tiny encoder, seeded per participant, in its home."""
    from safetensors.torch import save_file

    from collab.fl.task import TaskConfig, build_model, trainable_state

    for i, name in enumerate(PARTICIPANTS):
        model = build_model(TaskConfig(num_labels=5, kind="tiny", max_len=32, lora_r=8, seed=100 + i))
        save_file({k: v.contiguous() for k, v in trainable_state(model).items()}, str(demo.actors[name].home / "adapter.safetensors"))


def start_network(demo: Demo, phase: Phase) -> Network:
    """Orchestrator + the three participants' nodes (with data) + the licensee's node; all online."""
    from collab.mpc.model import model_dir

    data = _write_shards(demo, 24 if demo.options.quick else 60)
    _write_adapters(demo)
    alice = demo.actors["alice"]
    with (alice.home / "config.toml").open("a") as cfg:  # alice's node serves her asset for secure inference
        cfg.write(f'\n[serve.{demo.asset_id}]\nmodel = "{model_dir()}"\n')
    net = demo.network = Network()
    net.start_orchestrator(demo.actors["orch"].home, demo.passphrase)
    net.start_nodes({name: (demo.actors[name].home, data.get(name)) for name in (*PARTICIPANTS, "dave")}, demo.passphrase)
    nodes = net.wait_online([*PARTICIPANTS, "dave"], timeout=60)
    phase.facts["processes"] = {
        "orchestrator": {"pid": net.orchestrator.proc.pid, "endpoint": net.orchestrator.info["endpoint"]},  # type: ignore[union-attr]
        **{n: {"pid": p.proc.pid, "socket": p.info["socket"]} for n, p in net.nodes.items()},
    }
    phase.facts["nodes_online"] = len([n for n in nodes if n["status"] == "online"])
    return net


def _claim_facts(demo: Demo, claim_id: str) -> dict[str, Any]:
    manager = demo._client(ClaimManagerClient)
    claim = manager.get_claim(bytes.fromhex(claim_id[2:]))
    return {"claim_id": claim_id, "claim_status": claim.status.name.lower(), "claimer": claim.claimer,
            "steps": claim.step_count}


CREATOR_SHARE_BPS = 1_000  # alice keeps 10 % of the round's adapter asset


def open_round(demo: Demo, phase: Phase) -> int:
    """The orchestrator gets the aggregator role (chain admin); alice opens a round over her base model."""
    from chain.anvil import dev_account
    from chain.clients.identity_registry import IdentityRegistryClient
    from chain.clients.round_registry import RoundConfig, RoundRegistryClient, epsilon_units
    from orchestrator.rounds import job_task_hash

    assert demo.w3 is not None and demo.deployment is not None
    ids = IdentityRegistryClient.from_deployment(demo.deployment, demo.w3, dev_account(0))
    orch = demo.actors["orch"]
    if not ids.can_aggregate(orch.address):
        demo._tx(phase, "grant the orchestrator the aggregator role (chain admin)", ids.grant_aggregator(orch.sahara_id).tx)
    config = round_config(demo.options.quick)
    now = int(demo.w3.eth.get_block("latest")["timestamp"])
    registry = RoundRegistryClient.from_deployment(demo.deployment, demo.w3, demo.actors["alice"].account)
    created = registry.create_round(RoundConfig(
        demo.asset_id, int(config["num-rounds"]), [demo.actors[n].sahara_id for n in PARTICIPANTS], 2,
        epsilon_units(float(config["epsilon"])), 10**13, now + 600, CREATOR_SHARE_BPS,
        job_task_hash(config), orch.address))
    demo._tx(phase, "alice opens the round in RoundRegistry", created.tx)
    return created.round_id


def training_round(demo: Demo, phase: Phase) -> None:
    started = time.monotonic()
    net = start_network(demo, phase)
    phase.facts["network_start_s"] = round(time.monotonic() - started, 1)
    parts = [demo.actors[n].address for n in PARTICIPANTS]
    payload: dict[str, Any] = {"participants": parts, "config": round_config(demo.options.quick), "min_participants": 2}
    if "RoundRegistry" in demo.deployment.contracts:  # type: ignore[union-attr]
        payload["round_id"] = phase.facts["round_id"] = open_round(demo, phase)
    # A loaded machine can hold the node's one orchestrator link for a while: the submit gets two minutes.
    submitted = net.api("alice", timeout=120).request("submit", kind="round", needs=parts, timeout=300, payload=payload)
    job = net.wait_job("alice", submitted["job"]["id"], {"claimed", "challenged"}, timeout=600)
    demo.jobs["round"] = job["id"]
    data = job["data"]
    if job["state"] not in ("claimed", "challenged", "finalized"):
        raise Unavailable(f"round job {job['state']}: {job.get('error')}")
    names = {demo.actors[n].address.lower(): n for n in PARTICIPANTS}
    phase.facts.update({
        "job_id": job["id"], "state": job["state"], "model": round_config(demo.options.quick)["model"],
        "participants": [names.get(a, a) for a in data["participants"]], "dropped": data.get("dropped", []),
        "examples": {names.get(a, a): n for a, n in data["examples"].items()},
        "epsilon": {names.get(a, a): e for a, e in data["epsilon"].items()},
        "base_accuracy": data.get("base_accuracy"), "accuracy": data.get("accuracy"),
        "post_tx": data.get("post_tx"), "claim_over": data.get("claim_over"),
        "flower_seconds": data.get("flower_seconds", {}),
        "aggregation": ("SecAgg (masked sum claimed)" if data.get("secure_aggregation")
                        else "INSECURE plain FedAvg (--quick): the aggregator sees each update"),
        **_claim_facts(demo, data["claim_id"]),
    })
    if data.get("post_tx"):
        phase.transactions.append(demo.tx_record("the orchestrator posts the round's claim", data["post_tx"]))
    phase.ok = (sorted(phase.facts["participants"]) == sorted(PARTICIPANTS)
                and phase.facts["claim_status"] in ("pending", "finalized") and phase.facts["claimer"] == net.orchestrator.info["address"])  # type: ignore[union-attr]


def shares_minted(demo: Demo, phase: Phase) -> None:
    """Wait for the round's claim to finalize; ok only if its settlement minted Receipts and Shares by weight."""
    from chain.clients.receipts import ReceiptsClient
    from chain.clients.round_registry import RoundRegistryClient
    from chain.clients.shares import SharesClient

    assert demo.deployment is not None and demo.network is not None
    if "RoundRegistry" not in demo.deployment.contracts:
        phase.facts["pending"] = "RoundRegistry is not deployed: a finalized round claim cannot mint Receipts and Shares"
        phase.ok = False
        return
    job = _wait_final(demo, demo.jobs["round"], timeout=180)
    if job["state"] != "finalized":
        raise Unavailable(f"round job {job['state']}: {job.get('error')}")
    data = job["data"]
    registry = demo._client(RoundRegistryClient)
    claim_id = bytes.fromhex(data["claim_id"][2:])
    asset_id = registry.settled_asset(claim_id)
    receipts, shares = demo._client(ReceiptsClient), demo._client(SharesClient)
    supply = shares.total_supply(asset_id) if asset_id else 0
    names = {demo.actors[n].address.lower(): n for n in (*PARTICIPANTS, "orch")}
    record = data["record"]
    creator, expected = registry.share_split(supply, CREATOR_SHARE_BPS, record["weights"]) if asset_id else (0, [])
    holders = []
    creator_account = demo.actors["alice"].address.lower()
    for account, weight, want in zip(record["participants"], record["weights"], expected):
        want += creator if account.lower() == creator_account else 0  # alice also keeps the creator's fraction
        tokens = [t for t in receipts.receipts_of(account) if receipts.receipt(t).claim_id == claim_id]
        holders.append({"name": names.get(account.lower(), account), "account": account, "weight": weight,
                        "receipt_tokens": tokens, "receipt_weights": [receipts.receipt(t).weight for t in tokens],
                        "shares": shares.balance_of(account, asset_id) if asset_id else 0, "expected_shares": want})
    if data.get("record_tx"):
        phase.transactions.append(demo.tx_record("the orchestrator submits the consented record", data["record_tx"]))
    if data.get("finalize_tx"):
        phase.transactions.append(demo.tx_record("finalize: settlement mints Receipts and Shares", data["finalize_tx"]))
    phase.facts.update({"round_id": record["round_id"], "claim_id": data["claim_id"], "asset_id": asset_id,
                        "shares_supply": supply, "creator_share_bps": CREATOR_SHARE_BPS,
                        "creator_shares": creator,
                        "record_root": data.get("record_root"), "holders": holders,
                        "parents": demo._client(AssetRegistryClient).parents_of(asset_id) if asset_id else []})
    phase.ok = bool(asset_id) and len(holders) >= 2 and all(
        h["shares"] == h["expected_shares"] > 0 and h["receipt_weights"] == [h["weight"]] for h in holders)


def _wait_final(demo: Demo, job_id: str, timeout: float) -> dict[str, Any]:
    """Follow a job to a final state while the chain keeps producing blocks.

    anvil mines only on transactions, so a quiet demo chain would keep the
    timestamp of the claim's own block and its challenge window would never
    pass; an empty block every second (at wall-clock time, as a live chain
    does) lets the orchestrator finalize when the window really has passed.
    """
    assert demo.w3 is not None and demo.network is not None
    deadline = time.monotonic() + timeout
    while True:
        demo.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        job = demo.network.api("alice").request("job", id=job_id)
        if job["state"] in ("finalized", "rejected", "failed", "cancelled") or time.monotonic() > deadline:
            return job  # type: ignore[no-any-return]
        time.sleep(1.0)


def merge(demo: Demo, phase: Phase) -> None:
    net = demo.network
    assert net is not None
    parts = [demo.actors[n].address for n in PARTICIPANTS]
    submitted = net.api("alice").request("submit", kind="merge", needs=parts, timeout=120,
                                         payload={"participants": parts, "method": "linear", "weights": [1.0, 1.0, 1.0]})
    job = net.wait_job("alice", submitted["job"]["id"], {"claimed", "challenged"}, timeout=300)
    demo.jobs["merge"] = job["id"]
    if job["state"] not in ("claimed", "challenged", "finalized"):
        raise Unavailable(f"merge job {job['state']}: {job.get('error')}")
    data = job["data"]
    phase.facts.update({"job_id": job["id"], "state": job["state"], "method": data["method"], "adapters": len(parts),
                        "tensors": data["tensors"], "parameters": data["parameters"], "merged_path": data["merged_path"],
                        "adapters_from": "each participant's tiny-encoder LoRA adapter, uploaded by its node",
                        "post_tx": data.get("post_tx"), **_claim_facts(demo, data["claim_id"])})
    if data.get("post_tx"):
        phase.transactions.append(demo.tx_record("the orchestrator posts the merge claim", data["post_tx"]))
    phase.ok = Path(data["merged_path"]).is_file() and phase.facts["claim_status"] in ("pending", "finalized")


def secure_inference(demo: Demo, phase: Phase) -> None:
    from chain.clients.licensing import LicenseKind, LicensingClient
    from collab.mpc.model import model_dir, reference_embeddings, tokenize

    net, dave = demo.network, demo.actors["dave"]
    assert net is not None
    buyer = demo._client(LicensingClient, dave)
    lt = buyer.license(demo.licenses["long_term"])
    while buyer.is_licensed(demo.asset_id, dave.address, LicenseKind.LONG_TERM):  # the API license must be the one used
        time.sleep(max(0.5, min(5.0, lt.expires - time.time() + 1)))
    api_id = demo.licenses["api"]
    topped = buyer.top_up(api_id, demo.fee_per_call)
    demo._tx(phase, "dave tops up his API license for one served call", topped, demo.fee_per_call)
    quick = demo.options.quick
    seq_len, preprocessing = (8, "dealer") if quick else (4, "he")
    result = net.api("dave", timeout=1800).request(
        "infer", asset_id=demo.asset_id, texts=list(TEXTS), mode="mpc", parties=2, preprocessing=preprocessing,
        seq_len=seq_len, timeout=1500)
    path = model_dir()
    ref = reference_embeddings(tokenize(list(TEXTS), seq_len, path), path).double().numpy()
    ref = ref / np.linalg.norm(ref, axis=-1, keepdims=True)
    got = np.asarray(result["outputs"], dtype=float)
    cosine = float((got * ref).sum(-1).min() / max(np.linalg.norm(got, axis=-1).max(), 1e-12))
    posted = result.get("posted") or []
    for p in posted:
        if p.get("tx"):
            phase.transactions.append(demo.tx_record(f"alice's node posts the receipt for call {p['total_calls']}", p["tx"],
                                                     p["amount"]))
        demo.fees_to_holders += int(p["amount"]) - int(p["compute_fee_per_party"])
    phase.facts.update({
        "job_id": result["job_id"], "routed": "dave's node -> orchestrator -> alice's node", "mode": "mpc",
        "preprocessing": preprocessing,
        "security": ("INSECURE dealer path: alice's party deals CrypTen's Beaver triples (demo speed only)" if preprocessing == "dealer"
                     else "two-party HE (TenSEAL BFV) preprocessing"),
        "seq_len": seq_len, "tokens_limit_for_he": 4, "output_dims": len(result["outputs"][0]),
        "cosine_vs_plaintext": round(cosine, 6), "license": result["license"], "receipt": result["receipt"],
        "posted": posted, "wall_s": round(result["stats"]["wall_s"], 2),
        "party_stats": result["stats"]["parties"],
    })
    phase.ok = (result["license"]["kind"] == "api" and bool(posted) and cosine > 0.99
                and buyer.license(api_id).calls_paid == int(result["receipt"]["total_calls"]))


def _flipped(job: Any) -> tuple[int, dict[int, Any]]:
    """One element of the first weighted sum, off by one ulp: the wrong result a cheating node posts."""
    from collab.fraudproof.program import Op
    from collab.fraudproof.vm import Value

    step = next(i for i, s in enumerate(job.program.steps) if s.op == Op.WEIGHTED_SUM)
    value = job.trace().outputs[step].value
    flat = value.flat().copy()
    flat[3] = np.int64(int(flat[3]) + 1)
    return step, {step: Value(value.header, flat.reshape(value.header.shape))}


def challenge_won(demo: Demo, phase: Phase) -> None:
    from safetensors.torch import load_file

    from chain.clients.bisection_game import BisectionGameClient
    from chain.clients.data_availability import DataAvailabilityClient
    from collab.fraudproof import builders
    from collab.fraudproof.agents import ClaimerAgent
    from collab.fraudproof.store import Store
    from eth_utils import keccak

    net, bob = demo.network, demo.actors["bob"]
    assert net is not None
    states = [dict(sorted(load_file(str(demo.actors[n].home / "adapter.safetensors")).items())) for n in PARTICIPANTS]
    job = builders.linear_merge(states, [1.0, 1.0, 1.0])
    step, overrides = _flipped(job)
    agent = ClaimerAgent(demo._client(ClaimManagerClient, bob), demo._client(BisectionGameClient, bob),
                         demo._client(DataAvailabilityClient, bob), job.trace(overrides), job_id=keccak(text=f"bob-cheats:{time.time()}"))
    claim = agent.claim_input()
    Store(bob.home).save_job(claim.claim_id, job.program, job.inputs, job.witnesses, overrides)  # bob's node serves + defends it
    manager = demo._client(ClaimManagerClient)
    posted = demo._client(ClaimManagerClient, bob).post_claim(claim)
    cid = posted.claim_id
    params = manager.params_of(cid)
    bond = params.claimer_bond
    demo._tx(phase, "bob posts a merge claim with one flipped value (claimer bond)", posted.tx, bond)
    watchers = ("alice", "carol", "dave")  # every other node's watcher re-executes it; the first to win rejects it
    before = {n: manager.credit_of(demo.actors[n].address) for n in watchers}
    deadline = time.monotonic() + 300
    while manager.claim_status(cid) != ClaimStatus.REJECTED:
        if time.monotonic() > deadline:
            raise Unavailable("the wrong claim was not rejected within 300 s")
        if manager.claim_status(cid) == ClaimStatus.FINALIZED:
            raise Unavailable("the wrong claim was finalized: no watcher challenged it")
        time.sleep(1)
    games: dict[str, list[dict[str, Any]]] = {}
    settle = time.monotonic() + 60
    while True:  # until a watcher recorded its game as won (the other games close with the rejected claim)
        games = {n: [g for g in net.api(n).request("games")["games"] if g["claim_id"] == "0x" + cid.hex()]
                 for n in watchers}
        if any(g["status"] == "won" for gs in games.values() for g in gs) or time.monotonic() > settle:
            break
        time.sleep(1)
    won = {n: [g for g in gs if g["role"] == "challenger" and g["status"] == "won"] for n, gs in games.items()}
    after = {n: manager.credit_of(demo.actors[n].address) for n in watchers}
    phase.facts.update({
        "claim_id": "0x" + cid.hex(), "claimer": "bob", "wrong_step": step, "claim_status": "rejected",
        "claimer_bond_wei": bond, "winner_share_of_bond_wei": params.winner_share(bond), "burn_bps": params.burn_bps,
        "games": {n: [{"game_id": g["game_id"], "status": g["status"], "detail": g["detail"]} for g in gs] for n, gs in games.items()},
        "credit_gained_wei": {n: after[n] - before[n] for n in after},
    })
    phase.ok = any(won.values()) and sum(after.values()) > sum(before.values())


def settle_claims(demo: Demo) -> None:
    """Record the round's and the merge's claims as finalized once their windows pass (the orchestrator finalizes)."""
    net = demo.network
    if net is None:
        return
    for phase_name, key in (("training_round", "round"), ("merge", "merge")):
        jid = demo.jobs.get(key)
        if not jid:
            continue
        job = _wait_final(demo, jid, timeout=90)
        if job["state"] != "finalized":
            continue
        facts = demo.phases[phase_name].facts
        facts["claim_status"] = job["state"]
        facts["finalize_tx"] = job["data"].get("finalize_tx")
        if job["data"].get("finalize_tx"):
            demo.phases[phase_name].transactions.append(demo.tx_record("the orchestrator finalizes the claim",
                                                                       job["data"]["finalize_tx"]))
