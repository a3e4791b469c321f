"""The RoundRegistry steps of a ``round`` job on a real anvil chain, without Flower (fast).

Nodes accept with their data's sample count and a dataset asset (once), the
creator fixes only when everyone accepted, a node consents only to a record
carrying its on-chain weight, the aggregated consent verifies on-chain, and
the orchestrator refuses a round naming another aggregator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from chain.clients.asset_registry import AssetInput, AssetKind, AssetRegistryClient
from chain.clients.identity_registry import IdentityRegistryClient, Keys
from chain.clients.round_registry import (
    AttributionRecord,
    RoundConfig,
    RoundRegistryClient,
    RoundStatus,
    aggregate_consent,
    epsilon_units,
)
from collab.errors import BadInput, ProtocolViolation, Unavailable
from collab.identity import Identity
from orchestrator import round_chain
from orchestrator.rounds import RoundJob, job_task_hash
from orchestrator.workers import NodeChain

TEXTS = [("Shares rose after the bank's results.", "business"), ("The striker scored twice.", "sport"),
         ("Profits fell in the third quarter.", "business"), ("The team won the cup final.", "sport")]


def _identity(w3: Web3, deployment: Any, home: Path, name: str) -> Identity:
    me = Identity.create(home, "pw", scrypt_n=2)
    w3.provider.make_request("anvil_setBalance", [me.address, hex(10**21)])  # type: ignore[arg-type]
    reg = IdentityRegistryClient.from_deployment(deployment, w3, me.account)
    reg.register(f"rc-{name}", "human", Keys(*me.registry_keys(int(w3.eth.chain_id), reg.address)))
    return me


@pytest.fixture
def env(tmp_path: Path, w3: Web3, deployment: Any, deployer: Any, chain_snapshot: str) -> dict[str, Any]:
    if "RoundRegistry" not in deployment.contracts:
        pytest.skip("RoundRegistry is not deployed")
    people = {n: _identity(w3, deployment, tmp_path / n, n) for n in ("creator", "orch", "p1")}
    ids = IdentityRegistryClient.from_deployment(deployment, w3, deployer)
    ids.grant_aggregator(ids.id_of(people["orch"].address))
    base = AssetRegistryClient.from_deployment(deployment, w3, people["creator"].account).register(
        AssetInput(AssetKind.MODEL, Web3.keccak(text="rc base"))).asset_id
    now = int(w3.eth.get_block("latest")["timestamp"])
    rid = RoundRegistryClient.from_deployment(deployment, w3, people["creator"].account).create_round(RoundConfig(
        base, 1, [ids.id_of(people[n].address) for n in ("creator", "p1")], 2, epsilon_units(8.0), 10**13,
        now + 3600, 1_000, job_task_hash({}), people["orch"].address)).round_id
    data = {}
    for i, name in enumerate(("creator", "p1")):
        path = tmp_path / name / "train.jsonl"
        path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in TEXTS[: 3 + i]))
        data[name] = path
    chains = {n: NodeChain(w3, deployment, p.account, None, identity=p) for n, p in people.items()}
    return {"w3": w3, "deployment": deployment, "people": people, "rid": rid, "data": data, "chains": chains}


def _update(name: str) -> bytes:
    """``name``'s update commitment in the fixture round's one Flower round."""
    return Web3.keccak(text=f"update of {name}")


def _record(env: dict[str, Any], weights: dict[str, int]) -> AttributionRecord:
    from chain.clients.round_registry import update_chain

    people = env["people"]
    names = list(weights)
    return AttributionRecord(env["rid"], b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, b"\x04" * 32, "vault://rc",
                             tuple(people[n].address for n in names), tuple(weights[n] for n in names),
                             tuple(update_chain([_update(n)]) for n in names),
                             tuple(epsilon_units(1.5) for _ in names)).sorted()


def _trained(env: dict[str, Any], home: Path, rid: int, commitment: bytes, fl_round: int = 1, job: str = "job",
             registry: str | None = None) -> None:
    """The node in ``home`` sent ``commitment`` in ``fl_round`` of registry round ``rid`` (of the fixture's
    RoundRegistry, or of another ``registry``): its ClientApp keeps the opening."""
    from collab.fl.receipts import ReceiptContext, save_opening

    address = registry or RoundRegistryClient.from_deployment(env["deployment"], env["w3"]).address
    where = ReceiptContext(int(env["w3"].eth.chain_id), address, rid, "")
    save_opening(home, job, fl_round, where, b"\x00" * 32, commitment, epsilon_units(1.5))


def test_accept_fix_consent_and_an_aggregate_the_contract_accepts(env: dict[str, Any]) -> None:
    rid, chains, data = env["rid"], env["chains"], env["data"]
    registry = RoundRegistryClient.from_deployment(env["deployment"], env["w3"])
    first = round_chain.node_accept(chains["creator"], rid, data["creator"])
    assert first["samples"] == 3 and first["tx"] and first["dataset_asset"] > 0
    assert round_chain.creator_fix(chains["creator"], rid) is None  # p1 has not accepted yet
    assert round_chain.node_accept(chains["p1"], rid, data["p1"])["samples"] == 4
    again = round_chain.node_accept(chains["p1"], rid, data["p1"])  # a restarted node: read back, no second tx
    assert again == {"samples": 4, "dataset_asset": again["dataset_asset"], "tx": None}
    assert round_chain.creator_fix(chains["p1"], rid) is None  # only the creator fixes before the deadline
    assert round_chain.creator_fix(chains["creator"], rid)
    assert registry.get_round(rid).status == RoundStatus.FIXED and registry.get_round(rid).total_weight == 7

    record = _record(env, {"creator": 3, "p1": 4})
    raw = round_chain.record_to_json(record)
    assert round_chain.record_from_json(raw) == record
    sigs = [bytes.fromhex(round_chain.node_consent(chains[n], env["people"][n].bls_sign, raw)[2:]) for n in ("creator", "p1")]
    by_account = dict(zip((env["people"][n].address for n in ("creator", "p1")), sigs))
    ordered = [by_account[a] for a in record.participants]
    assert registry.verify_consent(record, aggregate_consent(ordered)) == registry.local_root(record)


def test_a_node_refuses_a_reweighted_record_or_one_without_it(env: dict[str, Any]) -> None:
    rid, chains, data = env["rid"], env["chains"], env["data"]
    for name in ("creator", "p1"):
        round_chain.node_accept(chains[name], rid, data[name])
    round_chain.creator_fix(chains["creator"], rid)
    reweighted = round_chain.record_to_json(_record(env, {"creator": 30, "p1": 4}))
    with pytest.raises(ProtocolViolation, match="weight 30"):
        round_chain.node_consent(chains["creator"], env["people"]["creator"].bls_sign, reweighted)
    without_me = round_chain.record_to_json(_record(env, {"p1": 4}))
    with pytest.raises(ProtocolViolation, match="does not include"):
        round_chain.node_consent(chains["creator"], env["people"]["creator"].bls_sign, without_me)
    with pytest.raises(BadInput, match="malformed"):
        round_chain.record_from_json({"round_id": rid})


def test_a_node_refuses_a_record_that_leaves_out_a_survivor_it_signed_for(env: dict[str, Any], tmp_path: Path) -> None:
    """The aggregator withheld p1's last receipt and left it out: the creator, who signed p1 onto the
    final survivor list, refuses; an unreadable survivor file refuses too (never consent blind)."""
    from collab.fl.receipts import SURVIVORS_DIR, ReceiptContext, keep_survivors

    rid, chains, people = env["rid"], env["chains"], env["people"]
    for name in ("creator", "p1"):
        round_chain.node_accept(chains[name], rid, env["data"][name])
    round_chain.creator_fix(chains["creator"], rid)
    home = tmp_path / "creator-home"
    both = [people["creator"].address, people["p1"].address]
    where = ReceiptContext(int(env["w3"].eth.chain_id), "0x" + "00" * 20, rid, people["orch"].address)
    keep_survivors(home, where, 1, [people["creator"].address], None)  # an earlier Flower round: superseded
    keep_survivors(home, where, 2, both, None)
    without_p1 = round_chain.record_to_json(_record(env, {"creator": 3}))
    with pytest.raises(ProtocolViolation, match=f"leaves out {people['p1'].address}.*Flower round 2"):
        round_chain.node_consent(chains["creator"], people["creator"].bls_sign, without_p1, home)
    complete = round_chain.record_to_json(_record(env, {"creator": 3, "p1": 4}))
    _trained(env, home, rid, _update("creator"))
    assert round_chain.node_consent(chains["creator"], people["creator"].bls_sign, complete, home).startswith("0x")
    assert round_chain.node_consent(chains["creator"], people["creator"].bls_sign, without_p1).startswith("0x")
    home.joinpath(*SURVIVORS_DIR, f"{rid}-r3.json").write_text("{not json")
    with pytest.raises(ProtocolViolation, match="unreadable"):
        round_chain.node_consent(chains["creator"], people["creator"].bls_sign, complete, home)


def test_a_node_consents_only_to_the_chain_of_its_own_updates_over_every_flower_round(
    env: dict[str, Any], tmp_path: Path
) -> None:
    """The round count is bound into each consent: a node that did not train the round's last Flower round
    (a job stopped early), trained another registry round, or sent another update than the record names
    refuses; the chain of its own updates over all rounds is what it signs."""
    from chain.clients.round_registry import update_chain
    from collab.fl.receipts import ReceiptContext, own_update_chains

    rid, chains, people = env["rid"], env["chains"], env["people"]
    for name in ("creator", "p1"):
        round_chain.node_accept(chains[name], rid, env["data"][name])
    round_chain.creator_fix(chains["creator"], rid)
    record = round_chain.record_to_json(_record(env, {"creator": 3, "p1": 4}))
    home = tmp_path / "creator-home"
    sign = people["creator"].bls_sign
    with pytest.raises(ProtocolViolation, match="kept no update for every one of them"):
        round_chain.node_consent(chains["creator"], sign, record, home)
    _trained(env, home, rid + 1, _update("creator"))  # the same update, but for another registry round
    _trained(env, home, rid, _update("creator"), job="old", registry="0x" + "ab" * 20)  # ... or another registry
    _trained(env, home, rid, Web3.keccak(text="another update"), job="job-a")
    with pytest.raises(ProtocolViolation, match="not the chain of its own updates over the round's 1 Flower round"):
        round_chain.node_consent(chains["creator"], sign, record, home)
    _trained(env, home, rid, _update("creator"), job="job-b")  # a second job of the round: this one's record
    assert round_chain.node_consent(chains["creator"], sign, record, home).startswith("0x")

    where = ReceiptContext(int(env["w3"].eth.chain_id), "0x" + "cd" * 20, 7, "")
    first, second = Web3.keccak(text="r1"), Web3.keccak(text="r2")
    _trained(env, home, 7, first, 1, "two-rounds", where.registry)
    assert own_update_chains(home, where, 2) == {}  # stopped after Flower round 1 of 2: nothing to consent with
    _trained(env, home, 7, second, 2, "two-rounds", where.registry)
    assert own_update_chains(home, where, 2) == {"two-rounds": update_chain([first, second])}
    home.joinpath("flower", "commitments", "junk-r1.json").write_text("{not json")  # skipped, not trusted
    assert own_update_chains(home, where, 2) == {"two-rounds": update_chain([first, second])}


def test_the_orchestrator_refuses_a_round_of_another_aggregator(env: dict[str, Any], tmp_path: Path) -> None:
    other = RoundRegistryClient.from_deployment(env["deployment"], env["w3"], env["people"]["p1"].account)
    job = RoundJob(tmp_path / "orch-home", registry=other)
    parts = [env["people"][n].address for n in ("creator", "p1")]
    with pytest.raises(BadInput, match="another aggregator"):
        job.validate({"participants": parts, "round_id": env["rid"]})
    with pytest.raises(BadInput, match="round_id"):
        job.validate({"participants": parts, "round_id": -1})
    with pytest.raises(BadInput, match="no RoundRegistry"):
        RoundJob(tmp_path / "orch-home").validate({"participants": parts, "round_id": env["rid"]})


def test_a_registry_rounds_run_config_takes_rounds_and_budget_from_the_chain(env: dict[str, Any], tmp_path: Path) -> None:
    """The nodes' ledgers and calibrated noise follow the ε and δ the participants accepted on chain, not
    whatever the job's config says (the contract rejects a record over that budget anyway)."""
    from orchestrator.jobs import JobStore

    registry = RoundRegistryClient.from_deployment(env["deployment"], env["w3"], env["people"]["orch"].account)
    store = JobStore(tmp_path / "jobs.sqlite")
    job, _ = store.create("round", {"round_id": env["rid"], "participants": [], "config": {
        "num-rounds": 5, "epsilon": 50.0, "delta": 1e-3, "lr": 0.02}})
    config = RoundJob(tmp_path / "orch-home", registry=registry).run_config(job)
    assert (config["num-rounds"], config["epsilon"], config["delta"]) == (1, 8.0, 1e-5)  # the chain's
    assert config["lr"] == 0.02 and config["noise-multiplier"] == "auto"  # the job's, then the defaults
    plain, _ = store.create("round", {"participants": [], "config": {"epsilon": 3.0}})
    assert RoundJob(tmp_path / "orch-home").run_config(plain)["epsilon"] == 3.0  # no registry round: the job's


def test_a_registry_round_needs_the_aggregator_passphrase_for_its_receipts(
    env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = RoundRegistryClient.from_deployment(env["deployment"], env["w3"], env["people"]["orch"].account)
    job = RoundJob(tmp_path / "orch-home", registry=mine)
    parts = [env["people"][n].address for n in ("creator", "p1")]
    monkeypatch.delenv("COLLAB_PASSPHRASE", raising=False)
    with pytest.raises(Unavailable, match="update receipts"):  # its ServerApp could not sign them
        job.validate({"participants": parts, "round_id": env["rid"]})
    monkeypatch.setenv("COLLAB_PASSPHRASE", "pw")
    job.validate({"participants": parts, "round_id": env["rid"]})


@pytest.mark.parametrize("config", [{"lora-freeze-a": True}, {"model": "minilm"}, {"lora-r": "4"},
                                    {"classes": "sports,tech,politics,business,entertainment"}])
def test_a_job_whose_config_trains_another_task_than_its_round_was_opened_with_is_refused(
    env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict[str, Any]
) -> None:
    """The round's configHash names base model, classes (in label order) and adapters: a job that would train
    anything else is refused at submission (the participants' ClientApps would refuse it anyway), while
    training hyper-parameters stay the job's to set."""
    monkeypatch.setenv("COLLAB_PASSPHRASE", "pw")
    job = RoundJob(tmp_path / "orch-home", registry=RoundRegistryClient.from_deployment(
        env["deployment"], env["w3"], env["people"]["orch"].account))
    parts = [env["people"][n].address for n in ("creator", "p1")]
    with pytest.raises(BadInput, match=f"round {env['rid']}: the run config's task .* was opened with task 0x"):
        job.validate({"participants": parts, "round_id": env["rid"], "config": config})
    job.validate({"participants": parts, "round_id": env["rid"], "config": {"lr": 0.02, "epochs": 3, "max-len": "32"}})


def _round_of_one(env: dict[str, Any]) -> int:
    """A fixed round like the fixture's (creator and p1 accepted) that records with one participant (N = 1)."""
    chains, data, people, w3, dep = env["chains"], env["data"], env["people"], env["w3"], env["deployment"]
    first = RoundRegistryClient.from_deployment(dep, w3).get_round(env["rid"])
    ids = IdentityRegistryClient.from_deployment(dep, w3)
    rid = RoundRegistryClient.from_deployment(dep, w3, people["creator"].account).create_round(RoundConfig(
        first.base_asset_id, 1, [ids.id_of(people[n].address) for n in ("creator", "p1")], 1, epsilon_units(8.0), 10**13,
        first.deadline, 1_000, first.config_hash, people["orch"].address)).round_id
    for name in ("creator", "p1"):
        round_chain.node_accept(chains[name], rid, data[name])
    round_chain.creator_fix(chains["creator"], rid)
    return rid


def _post_claim(env: dict[str, Any], rid: int, trace: Any) -> bytes:
    """The aggregator posts the round's claim (the ADD-chain program's trace), naming the registry as hook."""
    import dataclasses

    from chain.clients.bisection_game import BisectionGameClient
    from chain.clients.claim_manager import Audience, ClaimManagerClient
    from chain.clients.data_availability import DataAvailabilityClient
    from collab.fraudproof.agents import ClaimerAgent

    w3, dep, orch = env["w3"], env["deployment"], env["people"]["orch"].account
    registry = RoundRegistryClient.from_deployment(dep, w3, orch)
    manager = ClaimManagerClient.from_deployment(dep, w3, orch)
    agent = ClaimerAgent(manager, BisectionGameClient.from_deployment(dep, w3, orch),
                         DataAvailabilityClient.from_deployment(dep, w3, orch), trace, job_id=registry.job_id_of(rid))
    return manager.post_claim(dataclasses.replace(
        agent.claim_input(audience=Audience.PARTICIPANTS, settlement_hook=registry.address),
        participant_registry=registry.address)).claim_id


def _keep_p1_receipt(env: dict[str, Any], rid: int, home: Path, commitment: bytes, epsilon: int,
                     signer: Any = None) -> None:
    """p1's node keeps a receipt for Flower round 1 (``rid``'s final round) over ``commitment`` and ``epsilon``, as
    its ClientApp does; signed by the round's aggregator, or by ``signer`` (whom p1's run config then names)."""
    from chain.clients.round_registry import sign_update_receipt
    from collab.fl.receipts import ReceiptContext, delivery, keep

    people = env["people"]
    signer = signer or people["orch"].account
    registry = RoundRegistryClient.from_deployment(env["deployment"], env["w3"])
    where = ReceiptContext(int(env["w3"].eth.chain_id), registry.address, rid, signer.address)
    signature = sign_update_receipt(signer, where.chain_id, where.registry, rid, people["p1"].address, 1, commitment,
                                    epsilon)
    keep(home, where, people["p1"].address, delivery(where, "job", 1, commitment, epsilon, signature),
         (commitment, epsilon))


def _both(env: dict[str, Any], rid: int, trace: Any, last: dict[str, bytes], epsilons: tuple[int, int]) -> AttributionRecord:
    """A record of ``rid`` with the creator (weight 3) and p1 (weight 4), one Flower round each, ``epsilons`` in
    that order."""
    from chain.clients.round_registry import update_chain

    people = env["people"]
    return AttributionRecord(
        rid, trace.program.root, trace.input_root, trace.output_root, b"\x04" * 32, "vault://rc",
        (people["creator"].address, people["p1"].address), (3, 4),
        (update_chain([last["creator"]]), update_chain([last["p1"]])), epsilons).sorted()


def test_a_left_out_node_holding_a_final_receipt_disputes_by_itself(env: dict[str, Any], tmp_path: Path) -> None:
    from chain.clients.claim_manager import ClaimManagerClient, ClaimStatus
    from collab.fraudproof.trace import build_trace
    from test_claim_manager import add_chain_program

    chains, people, w3, dep = env["chains"], env["people"], env["w3"], env["deployment"]
    rid = _round_of_one(env)
    orch = people["orch"].account
    registry = RoundRegistryClient.from_deployment(dep, w3, orch)
    p1_home, mine = tmp_path / "p1-home", b"\x07" * 32
    assert round_chain.node_dispute(chains["p1"], p1_home, rid) is None  # no receipt held: no chain reads, nothing
    eps = epsilon_units(1.0)
    _keep_p1_receipt(env, rid, p1_home, mine, eps, signer=people["creator"].account)  # not from the aggregator
    # The aggregator records and claims the round with the creator alone (p1 silently dropped).
    trace = build_trace(*add_chain_program())
    record = AttributionRecord(rid, trace.program.root, trace.input_root, trace.output_root, b"\x04" * 32, "vault://rc",
                               (people["creator"].address,), (3,), (b"\x09" * 32,), (epsilon_units(1.0),))
    registry.submit_record(record, aggregate_consent([people["creator"].bls_sign(registry.local_root(record))]))
    assert round_chain.node_dispute(chains["p1"], p1_home, rid) is None  # recorded, but the claim is not posted yet
    manager = ClaimManagerClient.from_deployment(dep, w3, orch)
    claim_id = _post_claim(env, rid, trace)
    assert round_chain.node_dispute(chains["p1"], p1_home, rid) is None  # the forged receipt is not relied on
    assert round_chain.node_dispute(chains["creator"], tmp_path / "creator", rid) is None  # included, holds no receipt
    _keep_p1_receipt(env, rid, p1_home, mine, eps)
    assert round_chain.node_dispute(chains["p1"], p1_home, rid)  # the aggregator's own receipt: disputed
    assert manager.claim_status(claim_id) == ClaimStatus.REJECTED
    assert round_chain.node_dispute(chains["p1"], p1_home, rid) is None  # decided: not twice


def test_a_silent_participant_cannot_hold_the_round_hostage_nor_profit_from_it(
    env: dict[str, Any], tmp_path: Path, time_travel: Any
) -> None:
    """The consent-veto path end to end on the chain: p1 never consents; the orchestrator proposes the
    record, relays the creator's consent, records without p1 after the deadline and claims; p1's
    receipt for the update the proposal named wins it nothing. The creator's node posts its own consent
    (an aggregator withholding it would otherwise leave it out undisputed)."""
    from chain.clients.claim_manager import ClaimManagerClient, ClaimStatus
    from collab.fraudproof.trace import build_trace
    from test_claim_manager import add_chain_program

    chains, people, w3, dep = env["chains"], env["people"], env["w3"], env["deployment"]
    rid = _round_of_one(env)
    orch = people["orch"].account
    registry = RoundRegistryClient.from_deployment(dep, w3, orch)
    trace = build_trace(*add_chain_program())
    last = {n: Web3.keccak(text=f"last update of {n}") for n in ("creator", "p1")}
    record = _both(env, rid, trace, last, (epsilon_units(1.0),) * 2)
    priors = [bytes(32)] * 2  # one Flower round: the chain before the last update is empty
    raw = round_chain.record_to_json(record)

    progress = round_chain.record_by_proposal(registry, record, {}, priors)
    assert not progress.submitted and progress.consented == () and progress.proposal_tx
    assert round_chain.node_post_consent(chains["creator"], people["creator"].bls_sign, raw)  # its own post
    assert round_chain.node_post_consent(chains["creator"], people["creator"].bls_sign, raw) is None  # once
    again = round_chain.record_by_proposal(registry, record, {}, priors)
    assert again.consented == (people["creator"].address,) and not again.submitted and again.proposal_tx is None
    time_travel(again.deadline - int(w3.eth.get_block("latest")["timestamp"]))
    done = round_chain.record_by_proposal(registry, record, {}, priors)
    assert done.submitted and done.record_tx and done.left_out(record) == [people["p1"].address]
    assert registry.included_of(rid) == [people["creator"].address]
    assert round_chain.record_by_proposal(registry, record, {}, priors).record_tx is None  # a re-run: no transaction

    claim_id = _post_claim(env, rid, trace)
    p1_home = tmp_path / "p1-home"
    _keep_p1_receipt(env, rid, p1_home, last["p1"], epsilon_units(1.0))
    with pytest.raises(ProtocolViolation, match="did not consent in time"):
        round_chain.node_dispute(chains["p1"], p1_home, rid)
    assert ClaimManagerClient.from_deployment(dep, w3).claim_status(claim_id) == ClaimStatus.PENDING


def test_a_node_refuses_a_proposal_misstating_its_epsilon_and_wins_its_dispute(
    env: dict[str, Any], tmp_path: Path, time_travel: Any
) -> None:
    """p1 reported ε = 1.25 with its last update (its receipt says so); the proposal states 1.0 for it. Its
    node refuses, is left out, and its receipt wins the exclusion dispute: a refusal over a misstated ε is
    justified, so it costs the aggregator the claim, not the participant its Shares."""
    from chain.clients.claim_manager import ClaimManagerClient, ClaimStatus
    from collab.fraudproof.trace import build_trace
    from test_claim_manager import add_chain_program

    chains, people, w3, dep = env["chains"], env["people"], env["w3"], env["deployment"]
    rid = _round_of_one(env)
    orch = people["orch"].account
    registry = RoundRegistryClient.from_deployment(dep, w3, orch)
    trace = build_trace(*add_chain_program())
    last = {n: Web3.keccak(text=f"last update of {n}") for n in ("creator", "p1")}
    reported = epsilon_units(1.25)

    def record_stating(p1_epsilon: int) -> AttributionRecord:
        return _both(env, rid, trace, last, (epsilon_units(1.0), p1_epsilon))

    p1_home = tmp_path / "p1-home"
    _trained(env, p1_home, rid, last["p1"])
    wrong = round_chain.record_to_json(record_stating(epsilon_units(1.0)))
    sign_p1 = people["p1"].bls_sign
    assert round_chain.node_consent(chains["p1"], sign_p1, wrong, p1_home)  # no receipt held: nothing to prove with
    _keep_p1_receipt(env, rid, p1_home, last["p1"], reported)
    with pytest.raises(ProtocolViolation, match="states ε = 1 for this node; it reported 1.25"):
        round_chain.node_consent(chains["p1"], sign_p1, wrong, p1_home)
    right = round_chain.record_to_json(record_stating(reported))
    assert round_chain.node_consent(chains["p1"], sign_p1, right, p1_home).startswith("0x")

    proposed = record_stating(epsilon_units(1.0))
    progress = round_chain.record_by_proposal(registry, proposed, {}, [bytes(32)] * 2)
    with pytest.raises(ProtocolViolation, match="states ε = 1"):  # the node does not post its consent either
        round_chain.node_post_consent(chains["p1"], sign_p1, wrong, p1_home)
    assert round_chain.node_post_consent(chains["creator"], people["creator"].bls_sign, wrong)
    time_travel(progress.deadline - int(w3.eth.get_block("latest")["timestamp"]))
    assert round_chain.record_by_proposal(registry, proposed, {}, [bytes(32)] * 2).submitted
    assert registry.included_of(rid) == [people["creator"].address]
    claim_id = _post_claim(env, rid, trace)
    assert round_chain.node_dispute(chains["p1"], p1_home, rid)  # the receipt's ε is not the proposal's: it wins
    assert ClaimManagerClient.from_deployment(dep, w3).claim_status(claim_id) == ClaimStatus.REJECTED


def test_a_proposal_nobody_else_consents_to_fails_the_round_with_a_clear_error(
    env: dict[str, Any], time_travel: Any
) -> None:
    registry = RoundRegistryClient.from_deployment(env["deployment"], env["w3"], env["people"]["orch"].account)
    record = _record(env, {"creator": 3, "p1": 4})
    round_chain.node_accept(env["chains"]["creator"], env["rid"], env["data"]["creator"])
    round_chain.node_accept(env["chains"]["p1"], env["rid"], env["data"]["p1"])
    round_chain.creator_fix(env["chains"]["creator"], env["rid"])
    progress = round_chain.record_by_proposal(registry, record, {}, [bytes(32)] * 2)
    time_travel(progress.deadline - int(env["w3"].eth.get_block("latest")["timestamp"]))
    with pytest.raises(ProtocolViolation, match="only 0 of round .* 2 included participants consented .* needs 2"):
        round_chain.record_by_proposal(registry, record, {}, [bytes(32)] * 2)


def test_the_round_job_proposes_on_a_refusal_and_records_the_consenters(
    env: dict[str, Any], tmp_path: Path, time_travel: Any
) -> None:
    """``RoundJob.advance`` in COMPUTED: p1's node refused, so the job proposes the record on chain instead
    of failing, relays the creator's off-chain consent, and after the deadline records the creator alone."""
    from chain.clients.round_registry import record_from_attribution
    from collab.fraudproof.trace import build_trace
    from orchestrator.claims import claim_to_json
    from orchestrator.jobs import JobState, JobStore
    from test_claim_manager import add_chain_program

    people, w3, dep = env["people"], env["w3"], env["deployment"]
    rid = _round_of_one(env)
    registry = RoundRegistryClient.from_deployment(dep, w3, people["orch"].account)
    trace = build_trace(*add_chain_program())
    attribution = {"rounds": [{"round": 1, "included": [
        {"address": people[n].address, "weight": w, "epsilon": 1.0, "update_commitment": "0x" + bytes([k]).hex() * 32}
        for k, (n, w) in enumerate((("creator", 3), ("p1", 4)), start=1)]}]}
    record = record_from_attribution(attribution, rid, program_root=trace.program.root, input_root=trace.input_root,
                                     output_root=trace.output_root, content_hash=b"\x04" * 32, vault_uri="vault://rc")
    job_handler = RoundJob(tmp_path / "orch-home", registry=registry)
    store = JobStore(tmp_path / "jobs.sqlite")
    job, _ = store.create("round", {"round_id": rid, "participants": [], "consent_wait": 600})
    (job_handler._dir(job) / "attribution.json").write_text(json.dumps(attribution))
    creator = people["creator"].address.lower()
    for before, after in ((JobState.CREATED, JobState.COLLECTING), (JobState.COLLECTING, JobState.COMPUTING)):
        store.transition(job.id, before, after)  # Flower is not what this test is about
    store.transition(job.id, JobState.COMPUTING, JobState.COMPUTED, data={
        "record": round_chain.record_to_json(record), "claim": claim_to_json(_claim_input(env, rid, trace)),
        f"r/{creator}/consent": round_chain.node_consent(env["chains"]["creator"], people["creator"].bls_sign,
                                                          round_chain.record_to_json(record)),
        f"r/{people['p1'].address.lower()}/consent": {"refused": "the record gives me the wrong weight"}})

    assert job_handler.advance(store.get(job.id), store) == JobState.COMPUTED
    data = store.get(job.id).data
    assert data["proposal_root"] == "0x" + registry.local_root(record).hex() and data["proposal_tx"]
    assert data["consented"] == [people["creator"].address] and not data.get("record_submitted")
    time_travel(int(data["proposal_deadline"]) - int(w3.eth.get_block("latest")["timestamp"]))
    job_handler.advance(store.get(job.id), store)
    data = store.get(job.id).data
    assert data["record_submitted"] and data["record_tx"] and data["left_out"] == [people["p1"].address]
    assert registry.included_of(rid) == [people["creator"].address]
    assert data["claim_job"]  # the claim follows, as on the fast path


def _claim_input(env: dict[str, Any], rid: int, trace: Any) -> Any:
    import dataclasses

    from chain.clients.claim_manager import Audience
    from collab.fraudproof.agents import ClaimerAgent

    registry = RoundRegistryClient.from_deployment(env["deployment"], env["w3"])
    agent = ClaimerAgent(None, None, None, trace, job_id=registry.job_id_of(rid))  # type: ignore[arg-type]
    return dataclasses.replace(agent.claim_input(audience=Audience.PARTICIPANTS, settlement_hook=registry.address),
                               participant_registry=registry.address)


def test_any_participant_holding_the_endorsed_survivor_list_disputes_an_omission(
    env: dict[str, Any], tmp_path: Path
) -> None:
    """The aggregator drops p1 (and withholds its receipt); the creator, included and consenting, still holds
    the last round's survivor list the aggregator endorsed, and its node disputes the omission by itself."""
    from chain.clients.claim_manager import ClaimManagerClient, ClaimStatus
    from chain.clients.round_registry import sign_survivors
    from collab.fl.receipts import ReceiptContext, keep_survivors
    from collab.fraudproof.trace import build_trace
    from test_claim_manager import add_chain_program

    chains, people, w3, dep = env["chains"], env["people"], env["w3"], env["deployment"]
    rid = _round_of_one(env)
    orch = people["orch"].account
    registry = RoundRegistryClient.from_deployment(dep, w3, orch)
    where = ReceiptContext(int(w3.eth.chain_id), registry.address, rid, orch.address)
    survivors = [people["creator"].address, people["p1"].address]
    home, other_home = tmp_path / "creator-home", tmp_path / "p1-home"
    forged = sign_survivors(people["p1"].account, where.chain_id, where.registry, rid, 1, survivors)
    assert not keep_survivors(other_home, where, 1, survivors, forged)  # not the aggregator's: kept unendorsed
    assert not keep_survivors(other_home, where, 1, survivors, b"\x01" * 10)  # garbage: no crash, no endorsement
    assert keep_survivors(home, where, 1, survivors, sign_survivors(orch, where.chain_id, where.registry, rid, 1, survivors))

    trace = build_trace(*add_chain_program())
    record = AttributionRecord(rid, trace.program.root, trace.input_root, trace.output_root, b"\x04" * 32, "vault://rc",
                               (people["creator"].address,), (3,), (b"\x09" * 32,), (epsilon_units(1.0),))
    assert round_chain.node_dispute_omission(chains["creator"], home, rid) == (False, None)  # nothing recorded yet
    registry.submit_record(record, aggregate_consent([people["creator"].bls_sign(registry.local_root(record))]))
    assert round_chain.node_dispute_omission(chains["creator"], home, rid) == (False, None)  # the claim is not posted
    claim_id = _post_claim(env, rid, trace)
    assert round_chain.node_dispute_omission(chains["p1"], other_home, rid) == (True, None)  # no evidence held
    decided, tx = round_chain.node_dispute_omission(chains["creator"], home, rid)
    assert decided and tx
    assert ClaimManagerClient.from_deployment(dep, w3).claim_status(claim_id) == ClaimStatus.REJECTED
