"""`collab round create|fix|status|join` and `collab join` on a real anvil: the happy path, the claim's
state in `round status`, and one-line errors with the architecture's exit codes for bad input."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain.clients.asset_registry import AssetInput, AssetKind, AssetRegistryClient
from chain.clients.bisection_game import BisectionGameClient
from chain.clients.claim_manager import Audience, ClaimManagerClient
from chain.clients.data_availability import DataAvailabilityClient
from chain.clients.identity_registry import IdentityRegistryClient, Keys
from chain.clients.round_registry import (
    AttributionRecord,
    RoundRegistryClient,
    aggregate_consent,
    epsilon_units,
    sign_update_receipt,
)
from chain.deployment import Deployment
from collab.cli import run as collab
from collab.errors import EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_PROTOCOL, EXIT_UNAUTHORIZED
from collab.fl.receipts import receipt_path
from collab.fraudproof.agents import ClaimerAgent
from collab.fraudproof.trace import build_trace
from collab.identity import Identity
from orchestrator.jobs import JobStore
from tests.test_claim_manager import add_chain_program


@dataclass
class Homes:
    creator: Path
    alice: Path
    bob: Path
    outsider: Path
    ids: dict[str, int]
    base_asset: int
    data: Path


def _home(w3: Web3, deployment: Deployment, path: Path, name: str) -> tuple[Identity, int]:
    me = Identity.create(path, "pw", scrypt_n=2**12)
    deployment.save(path / "deployment.json")
    w3.provider.make_request("anvil_setBalance", [me.address, hex(10**21)])  # type: ignore[arg-type]
    client = IdentityRegistryClient.from_deployment(deployment, w3, me.account)
    ident = client.register(name, "human", Keys(*me.registry_keys(int(w3.eth.chain_id), client.address))).id
    return me, ident


def _jsonl(path: Path, n: int, label_of: Callable[[int], str] = lambda i: ("sport", "tech")[i % 2]) -> Path:
    path.write_text("".join(json.dumps({"text": f"article {i} about things", "label": label_of(i)}) + "\n" for i in range(n)))
    return path


@pytest.fixture
def homes(w3: Web3, deployment: Deployment, deployer: LocalAccount, chain_snapshot: str, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Homes:
    if "RoundRegistry" not in deployment.contracts:
        pytest.skip("RoundRegistry is not deployed")
    monkeypatch.setenv("COLLAB_PASSPHRASE", "pw")
    for var in ("COLLAB_DEPLOYMENT", "COLLAB_RPC_URL", "COLLAB_HOME"):
        monkeypatch.delenv(var, raising=False)
    ids: dict[str, int] = {}
    paths = {}
    for name in ("creator", "alice", "bob", "outsider"):
        paths[name] = tmp_path / name
        me, ids[name] = _home(w3, deployment, paths[name], f"cli-round-{name}")
        if name == "creator":
            IdentityRegistryClient.from_deployment(deployment, w3, deployer).grant_aggregator(ids[name])
            base = AssetRegistryClient.from_deployment(deployment, w3, me.account).register(
                AssetInput(AssetKind.MODEL, Web3.keccak(text="cli base model"), derivative_royalty_bps=300)).asset_id
    return Homes(paths["creator"], paths["alice"], paths["bob"], paths["outsider"], ids, base,
                 _jsonl(tmp_path / "data.jsonl", 6))


def cli(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = collab(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out, err


def _record_and_post(h: Homes, w3: Web3, deployment: Deployment, rid: int, included: dict[Path, tuple[int, float]]) -> bytes:
    """As the aggregator (the creator's home): submit the record with the included homes' consent, post the claim."""
    creator = Identity.load(h.creator, "pw")
    signers = [Identity.load(p, "pw") for p in included]
    registry = RoundRegistryClient.from_deployment(deployment, w3, creator.account)
    program, inputs = add_chain_program()
    trace = build_trace(program, inputs)
    record = AttributionRecord(
        rid, trace.program.root, trace.input_root, trace.output_root, Web3.keccak(text="adapter"), "vault://adapter",
        [s.address for s in signers], [w for w, _ in included.values()], [bytes(32)] * len(signers),
        [epsilon_units(e) for _, e in included.values()]).sorted()
    root = registry.local_root(record)
    registry.submit_record(record, aggregate_consent([s.bls_sign(root) for s in signers]))
    manager = ClaimManagerClient.from_deployment(deployment, w3, creator.account)
    agent = ClaimerAgent(manager, BisectionGameClient.from_deployment(deployment, w3, creator.account),
                         DataAvailabilityClient.from_deployment(deployment, w3, creator.account), trace,
                         job_id=registry.job_id_of(rid))
    claim = dataclasses.replace(agent.claim_input(audience=Audience.PARTICIPANTS, settlement_hook=registry.address),
                                participant_registry=registry.address)
    return manager.post_claim(claim).claim_id


def _create(capsys: pytest.CaptureFixture[str], h: Homes, *extra: str) -> int:
    code, out, err = cli(capsys, h.creator, "--json", "round", "create", "--asset", str(h.base_asset), "--rounds", "2",
                         "--participants", f"{h.ids['alice']},{h.ids['bob']}", "--min-participants", "2",
                         "--epsilon", "8", "--delta", "1e-5", "--deadline", "30m", "--creator-share", "0.25", *extra)
    assert code == 0, err
    return int(json.loads(out)["id"])


def test_create_join_fix_and_status_with_the_claim_state(
    homes: Homes, tmp_path: Path, capsys: pytest.CaptureFixture[str], w3: Web3, deployment: Deployment
) -> None:
    h = homes
    rid = _create(capsys, h)
    code, out, err = cli(capsys, h.alice, "--json", "join", str(rid), "--data", str(h.data))
    assert code == 0, err
    joined = json.loads(out)
    assert joined["samples"] == 6 and joined["registered_dataset"] and (h.alice / "rounds" / f"{rid}.json").is_file()
    bob_data = _jsonl(tmp_path / "bob.jsonl", 9)
    code, out, err = cli(capsys, h.bob, "--json", "round", "join", str(rid), "--data", str(bob_data))
    assert code == 0, err
    code, out, err = cli(capsys, h.bob, "round", "fix", str(rid))
    assert code == EXIT_BAD_INPUT and "NotRoundCreator" in err and "Traceback" not in err
    code, out, err = cli(capsys, h.creator, "--json", "round", "fix", str(rid))
    assert code == 0, err
    assert json.loads(out)["status"] == "fixed"

    code, out, err = cli(capsys, h.outsider, "--json", "round", "status", str(rid))
    assert code == 0, err
    status = json.loads(out)
    assert status["round"]["status"] == "fixed" and status["round"]["total_weight"] == 15
    assert [(p["id"], p["weight"]) for p in status["participants"]] == [(h.ids["alice"], 6), (h.ids["bob"], 9)]
    assert status["claim"]["status"] == "none"
    assert status["progress"] == {**status["progress"], "source": "chain", "rounds_done": None, "rounds": 2}

    # Mid-training, the aggregator's home reads rounds done, accuracy and the live ε from its round job.
    alice = Identity.load(h.alice, "pw").address
    store = JobStore(h.creator / "jobs.db")
    job, _ = store.create("round", {"participants": [alice], "round_id": rid, "needs": []})
    store.update_data(job.id, {"rounds_done": 1, "accuracy": 0.625, "base_accuracy": 0.25, "epsilon": {alice.lower(): 1.5}})
    store.close()
    code, out, err = cli(capsys, h.creator, "round", "status", str(rid), "--json")
    assert code == 0, err
    status = json.loads(out)
    assert status["progress"]["source"] == "orchestrator" and status["progress"]["job_id"] == job.id
    assert (status["progress"]["rounds_done"], status["progress"]["accuracy"]) == (1, 0.625)
    assert [p["epsilon_spent"] for p in status["participants"]] == [1.5, None]  # bob's node has not reported yet
    code, out, err = cli(capsys, h.creator, "round", "status", str(rid))
    assert code == 0 and "1/2" in out and "0.625 (base 0.250)" in out and "1.5" in out

    # The aggregator records both participants' consent and posts the claim: status shows it pending, with ε.
    _record_and_post(h, w3, deployment, rid, {h.alice: (6, 3.25), h.bob: (9, 4.0)})
    code, out, err = cli(capsys, h.outsider, "--json", "round", "status", str(rid))
    assert code == 0, err
    status = json.loads(out)
    assert status["round"]["status"] == "recorded" and status["claim"]["status"] == "pending"
    assert sorted(p["epsilon"] for p in status["participants"]) == [3.25, 4.0]
    assert sorted(p["epsilon_spent"] for p in status["participants"]) == [3.25, 4.0]
    assert status["progress"]["rounds_done"] == 2  # the record covers all R rounds
    code, out, err = cli(capsys, h.outsider, "round", "status", str(rid))  # the human view renders too
    assert code == 0 and "pending" in out and "ε" in out


def test_bad_input_gets_one_line_errors_and_exit_codes(
    homes: Homes, tmp_path: Path, capsys: pytest.CaptureFixture[str], time_travel: Callable[[int], int]
) -> None:
    h = homes
    code, _, err = cli(capsys, h.outsider, "round", "status", "999")
    assert code == EXIT_NOT_FOUND and "UnknownRound" in err and "Traceback" not in err
    code, _, err = cli(capsys, h.alice, "join", "999", "--data", str(h.data))
    assert code == EXIT_NOT_FOUND and "UnknownRound" in err
    code, _, err = cli(capsys, h.outsider, "round", "create", "--asset", str(h.base_asset), "--rounds", "1",
                       "--participants", str(h.ids["alice"]), "--min-participants", "1", "--epsilon", "1")
    assert code == EXIT_UNAUTHORIZED and "not yours" in err
    code, _, err = cli(capsys, h.creator, "round", "create", "--asset", str(h.base_asset), "--rounds", "1",
                       "--participants", str(h.ids["alice"]), "--min-participants", "2", "--epsilon", "1")
    assert code == EXIT_BAD_INPUT and "--min-participants" in err
    code, _, err = cli(capsys, h.creator, "round", "create", "--asset", str(h.base_asset), "--rounds", "1",
                       "--participants", str(h.ids["alice"]), "--min-participants", "1", "--epsilon", "1",
                       "--deadline", "soon")
    assert code == EXIT_BAD_INPUT and "--deadline" in err
    rid = _create(capsys, h)
    code, _, err = cli(capsys, h.outsider, "join", str(rid), "--data", str(h.data))
    assert code == EXIT_UNAUTHORIZED and "not invited" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "a"}\n{"text": 3\n')
    code, _, err = cli(capsys, h.alice, "join", str(rid), "--data", str(bad))
    assert code == EXIT_BAD_INPUT and "bad.jsonl" in err and err.count("\n") == 1
    code, _, err = cli(capsys, h.alice, "join", str(rid), "--data", str(tmp_path / "missing"))
    assert code == EXIT_NOT_FOUND
    # the round stayed untouched by the rejected joins:
    code, out, _ = cli(capsys, h.outsider, "--json", "round", "status", str(rid))
    assert json.loads(out)["round"]["accepted"] == 0
    time_travel(31 * 60)
    code, _, err = cli(capsys, h.alice, "join", str(rid), "--data", str(h.data))
    assert code == EXIT_BAD_INPUT and "deadline passed" in err


def test_left_out_participant_disputes_with_its_receipt(
    homes: Homes, tmp_path: Path, capsys: pytest.CaptureFixture[str], w3: Web3, deployment: Deployment
) -> None:
    h = homes
    rid = _create(capsys, h, "--min-participants", "1")  # N = 1: a record with alice alone is valid
    for home, n in ((h.alice, 6), (h.bob, 9)):
        assert cli(capsys, home, "join", str(rid), "--data", str(_jsonl(tmp_path / f"{home.name}.jsonl", n)))[0] == 0
    assert cli(capsys, h.creator, "round", "fix", str(rid))[0] == 0
    claim_id = _record_and_post(h, w3, deployment, rid, {h.alice: (6, 1.0)})  # bob silently dropped
    aggregator, bob = Identity.load(h.creator, "pw"), Identity.load(h.bob, "pw")
    registry = RoundRegistryClient.from_deployment(deployment, w3)
    commitment = Web3.keccak(text="bob's last update")

    spent = epsilon_units(2.0)

    def receipt_file(name: str, signer: LocalAccount, fl_round: int = 2, path: Path | None = None) -> Path:
        sig = sign_update_receipt(signer, int(w3.eth.chain_id), registry.address, rid, bob.address, fl_round, commitment,
                                  spent)
        path = path or tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"round_id": rid, "participant": bob.address, "fl_round": fl_round,
                                    "update_commitment": "0x" + commitment.hex(), "epsilon": spent,
                                    "signature": "0x" + sig.hex()}))
        return path

    code, _, err = cli(capsys, h.bob, "round", "dispute", str(rid))  # bob's node kept no receipt (yet)
    assert code == EXIT_NOT_FOUND and "no update receipt" in err and "Traceback" not in err
    receipt_file("", aggregator.account, 1, receipt_path(h.bob, rid, 1))  # only round 1's: not the final round
    code, _, err = cli(capsys, h.bob, "round", "dispute", str(rid))
    assert code == EXIT_BAD_INPUT and "final round 2" in err

    code, _, err = cli(capsys, h.bob, "round", "dispute", str(rid), "--receipt", str(receipt_file("forged.json", bob.account)))
    assert code == EXIT_PROTOCOL and "not by the round's aggregator" in err
    code, _, err = cli(capsys, h.alice, "round", "dispute", str(rid), "--receipt", str(receipt_file("r.json", aggregator.account)))
    assert code == EXIT_UNAUTHORIZED and "not yours" in err
    stale = json.loads((tmp_path / "r.json").read_text())
    del stale["epsilon"]  # a receipt in the format before receipts named ε
    code, _, err = cli(capsys, h.bob, "round", "dispute", str(rid), "--receipt", str(_write(tmp_path / "old.json", stale)))
    assert code == EXIT_BAD_INPUT and "needs round_id, participant, fl_round, update_commitment, epsilon" in err
    code, _, err = cli(capsys, h.bob, "round", "dispute", str(rid), "--receipt",
                       str(_write(tmp_path / "lying.json", {**stale, "epsilon": spent + 1})))
    assert code == EXIT_PROTOCOL and "not by the round's aggregator" in err  # the signature names another ε
    receipt_path(h.bob, rid, 2).write_text((tmp_path / "r.json").read_text())  # as bob's node keeps it
    code, out, err = cli(capsys, h.bob, "--json", "round", "dispute", str(rid))  # the latest kept receipt
    assert code == 0, err
    result = json.loads(out)
    assert result["claim_id"] == "0x" + claim_id.hex() and result["claim_status"] == "rejected" and result["credit_wei"] > 0
    code, out, _ = cli(capsys, h.outsider, "--json", "round", "status", str(rid))
    assert json.loads(out)["claim"]["status"] == "rejected"


def _write(path: Path, body: dict[str, Any]) -> Path:
    path.write_text(json.dumps(body))
    return path


def test_an_included_participant_disputes_the_omission_of_a_survivor(
    homes: Homes, tmp_path: Path, capsys: pytest.CaptureFixture[str], w3: Web3, deployment: Deployment
) -> None:
    """alice is in the record, bob was dropped; alice's node holds the final round's survivor list the
    aggregator endorsed, naming bob: `round dispute --omission` rejects the claim."""
    from chain.clients.round_registry import sign_survivors
    from collab.fl.receipts import ReceiptContext, keep_survivors

    h = homes
    rid = _create(capsys, h, "--min-participants", "1")
    for home, n in ((h.alice, 6), (h.bob, 9)):
        assert cli(capsys, home, "join", str(rid), "--data", str(_jsonl(tmp_path / f"{home.name}.jsonl", n)))[0] == 0
    assert cli(capsys, h.creator, "round", "fix", str(rid))[0] == 0
    claim_id = _record_and_post(h, w3, deployment, rid, {h.alice: (6, 1.0)})  # bob silently dropped
    aggregator, alice, bob = (Identity.load(p, "pw") for p in (h.creator, h.alice, h.bob))
    registry = RoundRegistryClient.from_deployment(deployment, w3)
    where = ReceiptContext(int(w3.eth.chain_id), registry.address, rid, aggregator.address)

    code, _, err = cli(capsys, h.alice, "round", "dispute", str(rid), "--omission")
    assert code == EXIT_NOT_FOUND and "endorsed by its aggregator" in err and "Traceback" not in err
    code, _, err = cli(capsys, h.alice, "round", "dispute", str(rid), "--omission", "--receipt", str(tmp_path / "x"))
    assert code == EXIT_BAD_INPUT and "one of them" in err
    only_alice = [alice.address]
    keep_survivors(h.alice, where, 2, only_alice, sign_survivors(aggregator.account, where.chain_id, where.registry,
                                                                 rid, 2, only_alice))
    code, _, err = cli(capsys, h.alice, "round", "dispute", str(rid), "--omission")
    assert code == EXIT_BAD_INPUT and "nothing to dispute" in err
    both = [alice.address, bob.address]
    keep_survivors(h.alice, where, 2, both, sign_survivors(aggregator.account, where.chain_id, where.registry, rid, 2, both))
    code, out, err = cli(capsys, h.alice, "--json", "round", "dispute", str(rid), "--omission")
    assert code == 0, err
    result = json.loads(out)
    assert result["claim_id"] == "0x" + claim_id.hex() and result["claim_status"] == "rejected"
    assert result["omitted"] == bob.address and result["credit_wei"] > 0


def test_create_records_the_task_its_run_config_trains_and_refuses_a_bad_one(
    homes: Homes, tmp_path: Path, capsys: pytest.CaptureFixture[str], w3: Web3, deployment: Deployment
) -> None:
    """The on-chain configHash is the task hash of the run config `round create` prints (every task key spelled
    out), which the orchestrator and the participants' ClientApps check; a config file's values count, the
    options override them; a malformed or invalid task is refused before any transaction."""
    from collab.fl.runconfig import task_hash

    h = homes
    config = tmp_path / "round.toml"
    config.write_text('lr = 0.02\nmax-len = 128\nlora-r = 4\n')
    args = ("--json", "round", "create", "--asset", str(h.base_asset), "--rounds", "1", "--participants",
            str(h.ids["alice"]), "--min-participants", "1", "--epsilon", "8")
    code, out, err = cli(capsys, h.creator, *args, "--config", str(config), "--lora-rank", "16", "--lora-freeze-a")
    assert code == 0, err
    created = json.loads(out)
    run_config = created["run_config"]
    assert run_config["lr"] == 0.02 and run_config["max-len"] == 128 and run_config["lora-r"] == 16
    assert run_config["lora-freeze-a"] is True and run_config["model"] == "minilm" and run_config["seed"] == 0
    assert created["task"]["lora"] == {"r": 16, "alpha": 16, "targets": ["query", "value"], "top_layers": 0,
                                       "freeze_a": True}
    on_chain = RoundRegistryClient.from_deployment(deployment, w3).get_round(int(created["id"])).config_hash
    assert on_chain == task_hash(run_config) == bytes.fromhex(created["config_hash"][2:])
    assert task_hash({**run_config, "lora-freeze-a": False}) != on_chain  # each task key is in the hash
    assert task_hash({**run_config, "lr": 0.5, "epochs": 9}) == on_chain  # hyper-parameters are not

    before = RoundRegistryClient.from_deployment(deployment, w3).round_count()
    for bad, message in (("max-len = [", "not a TOML run config"), ('model = "gpt"', "unknown model kind"),
                         ('lora-freeze-a = "false"', "lora-freeze-a must be true or false")):
        config.write_text(bad + "\n")
        code, _, err = cli(capsys, h.creator, *args[1:], "--config", str(config))
        assert code == EXIT_BAD_INPUT and message in err and "Traceback" not in err
    code, _, err = cli(capsys, h.creator, *args[1:], "--config", str(tmp_path / "absent.toml"))
    assert code == EXIT_NOT_FOUND and "no such config file" in err
    assert RoundRegistryClient.from_deployment(deployment, w3).round_count() == before  # nothing was opened
