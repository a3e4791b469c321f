"""`collab claims post|list|show`, `collab challenge`, `collab watch --once` on a real anvil, and their exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from web3 import Web3

from chain.clients.identity_registry import IdentityRegistryClient, Keys
from chain.deployment import Deployment
from collab.cli import run as collab
from collab.fraudproof import builders
from collab.fraudproof.blobserver import BlobServer
from collab.fraudproof.program import Op
from collab.fraudproof.store import Store, write_inputs_dir
from collab.fraudproof.vm import Value
from collab.identity import Identity
from test_claim_manager import GameEnv, env, game_env, needs_verifier  # noqa: F401 - fixtures


def _job() -> builders.Job:
    states = []
    for i in range(3):
        g = torch.Generator().manual_seed(7 + i)
        states.append({"w": torch.randn(3, 5, generator=g), "b": torch.randn(3, generator=g)})
    return builders.fedavg(states, [2, 1, 1])


def _home(env: GameEnv, path: Path, name: str, register: bool) -> Identity:
    me = Identity.create(path, "pw", scrypt_n=2**12)
    env.deployment.save(path / "deployment.json")
    env.w3.provider.make_request("anvil_setBalance", [me.address, hex(10**21)])  # type: ignore[arg-type]
    if register:
        client = IdentityRegistryClient.from_deployment(env.deployment, env.w3, me.account)
        client.register(name, "human", Keys(*me.registry_keys(int(env.w3.eth.chain_id), client.address)))
    return me


@pytest.fixture
def homes(env: GameEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("COLLAB_PASSPHRASE", "pw")
    for var in ("COLLAB_DEPLOYMENT", "COLLAB_RPC_URL", "COLLAB_HOME"):
        monkeypatch.delenv(var, raising=False)
    claimer, watcher = tmp_path / "claimer", tmp_path / "watcher"
    _home(env, claimer, "cli-claimer", True)
    _home(env, watcher, "cli-watcher", False)
    return claimer, watcher


def cli(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = collab(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out, err


def _job_files(tmp_path: Path, job: builders.Job) -> tuple[Path, Path]:
    program = tmp_path / "job.program"
    program.write_bytes(job.program.to_bytes())
    inputs = tmp_path / "inputs"
    write_inputs_dir(inputs, job.inputs, job.witnesses)
    return program, inputs


def test_post_list_show(env: GameEnv, homes: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    claimer, _ = homes
    job = _job()
    program, inputs = _job_files(tmp_path, job)
    code, out, err = cli(capsys, claimer, "--json", "claims", "post", str(program), "--inputs", str(inputs))
    assert code == 0, err
    posted = json.loads(out)
    trace = job.trace()
    assert posted["output_root"] == "0x" + trace.output_root.hex() and posted["steps"] == len(job.program.steps)
    code, out, err = cli(capsys, claimer, "--json", "claims", "show", posted["claim_id"])
    assert code == 0, err
    shown = json.loads(out)
    assert shown["status"] == "pending" and shown["trace_root"] == "0x" + trace.root.hex()
    code, out, _ = cli(capsys, claimer, "--json", "claims", "list", "--mine")
    assert [c["claim_id"] for c in json.loads(out)["claims"]] == [posted["claim_id"]]
    # the store can serve and rebuild the claim after the command exited
    assert Store(claimer).trace(bytes.fromhex(posted["claim_id"][2:])).root == trace.root
    # the same job again is a duplicate claim: a typed revert, not a traceback
    code, _, err = cli(capsys, claimer, "claims", "post", str(program), "--inputs", str(inputs))
    assert code != 0 and "error: " in err and "DuplicateClaim" in err and "Traceback" not in err


def test_exit_codes(env: GameEnv, homes: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    claimer, _ = homes
    code, _, err = cli(capsys, claimer, "claims", "show", "0x" + "ab" * 32)
    assert code == 3 and err.startswith("error:")
    bad = tmp_path / "bad.program"
    bad.write_bytes(b"\x00\x01garbage")
    _, inputs = _job_files(tmp_path, _job())
    code, _, err = cli(capsys, claimer, "claims", "post", str(bad), "--inputs", str(inputs))
    assert code == 2 and "program" in err
    code, _, err = cli(capsys, claimer, "claims", "show", "not-hex")
    assert code == 2
    program, _ = _job_files(tmp_path, _job())
    (tmp_path / "empty").mkdir()
    code, _, err = cli(capsys, claimer, "claims", "post", str(program), "--inputs", str(tmp_path / "empty"))
    assert code == 2
    down = Deployment.load(claimer / "deployment.json")
    down.rpc_url = "http://127.0.0.1:9"
    down.save(tmp_path / "down.json")
    code, _, err = cli(capsys, claimer, "--deployment", str(tmp_path / "down.json"), "claims", "list")
    assert code == 5 and "collab chain up" in err


def test_challenge_and_watch_commands_win_against_a_cheater(
    env: GameEnv, homes: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    needs_verifier(env)
    claimer, watcher = homes
    job = _job()
    program, inputs = _job_files(tmp_path, job)
    code, out, err = cli(capsys, claimer, "--json", "claims", "post", str(program), "--inputs", str(inputs))
    assert code == 0, err
    claim_id = json.loads(out)["claim_id"]
    # The honest claim: `collab challenge` re-executes and agrees.
    store = Store(claimer)
    server = BlobServer(store, int(env.w3.eth.chain_id), env.manager().is_audience).start()
    try:
        code, out, err = cli(capsys, watcher, "--json", "challenge", claim_id, "--source", server.url)
        assert code == 0, err
        assert json.loads(out)["verdict"] == "agree" and json.loads(out)["games"] == []

        # A cheating claim (one flipped element of the weighted sum), posted from the same store.
        from collab.fraudproof.agents import ClaimerAgent

        step = next(i for i, s in enumerate(job.program.steps) if s.op == Op.WEIGHTED_SUM)
        v = job.trace().outputs[step].value
        flat = v.flat().copy()
        flat[4] += 1
        overrides = {step: Value(v.header, flat.reshape(v.header.shape))}
        me = Identity.load(claimer, "pw").account
        agent = ClaimerAgent(env.manager(me), env.game(me), env.data(me), job.trace(overrides), job_id=Web3.keccak(text="cli-cheat"))
        cheat_id = agent.claim_input().claim_id
        store.save_job(cheat_id, job.program, job.inputs, job.witnesses, overrides)
        agent.post()
        code, out, err = cli(capsys, watcher, "--json", "challenge", "0x" + cheat_id.hex(), "--source", server.url)
        assert code == 0, err
        res = json.loads(out)
        assert res["verdict"] == "disagree" and len(res["games"]) == 1
        for _ in range(200):
            code, out, err = cli(capsys, watcher, "--json", "watch", "--once", "--source", server.url)
            assert code == 0, err
            cli(capsys, claimer, "watch", "--once")
            games = json.loads(out)["games"]
            if games and games[0]["status"] != "open":
                break
        assert games[0]["status"] == "won" and f"step {step} (WEIGHTED_SUM), element 4" in games[0]["detail"]
        code, out, _ = cli(capsys, claimer, "--json", "claims", "show", "0x" + cheat_id.hex())
        assert json.loads(out)["status"] == "rejected"
    finally:
        server.stop()


def test_a_claim_posted_with_da_url_is_verified_without_source(
    env: GameEnv, homes: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    claimer, watcher = homes
    program, inputs = _job_files(tmp_path, _job())
    server = BlobServer(Store(claimer), int(env.w3.eth.chain_id), env.manager().is_audience).start()
    try:
        code, _, err = cli(capsys, claimer, "claims", "post", str(program), "--inputs", str(inputs), "--da-url", "ftp://x")
        assert code == 2 and "http" in err
        code, out, err = cli(capsys, claimer, "--json", "claims", "post", str(program), "--inputs", str(inputs),
                             "--da-url", server.url)
        assert code == 0, err
        posted = json.loads(out)
        assert posted["da_url"] == server.url and posted["da_pointer"] != "0x" + "00" * 32
        code, out, err = cli(capsys, watcher, "--json", "claims", "show", posted["claim_id"])
        assert json.loads(out)["da_url"] == server.url
        # No --source: the watcher finds the blob server through the claim's daPointer.
        code, out, err = cli(capsys, watcher, "--json", "challenge", posted["claim_id"])
        assert code == 0, err
        assert json.loads(out)["verdict"] == "agree"
    finally:
        server.stop()
