"""The chain infrastructure through its public interfaces, on a real anvil.

Uses the test-only ``Probe`` contract (tests/fixtures/probe, a source root of
its own so that other fixtures never affect these tests) compiled by the same
compiler as the product contracts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

import chain.compiler as compiler
from chain.anvil import AnvilProcess, free_port, rpc_answers
from chain.client import AbiRegistry, ContractClient, connect, deploy_contract, send_transaction
from chain.compiler import Artifact, compile_contracts
from chain.deploy import CONTRACT_ORDER, DEFAULT_PARAMS, FRAUD_PROOF_ORDER, DEMO_PARAMS, ZERO_ADDRESS, Governance, deploy_all, param_key, resolve_params
from chain.deployment import Deployment
from chain.errors import CompilationError, ContractRevert, DeploymentMismatch, revert_class
from chain.node import chain_down, chain_status, chain_up, fund
from collab.config import Settings
from collab.errors import BadInput, ChainUnavailable, NotFound, ProtocolViolation, Unauthorized, Unavailable

PROBE_SOURCES = Path(__file__).parent / "fixtures" / "probe"
TAG = "0x" + "ab" * 32


@pytest.fixture(scope="module")
def probe_artifacts() -> dict[str, Artifact]:
    return compile_contracts(source_root=PROBE_SOURCES)


@pytest.fixture(scope="module")
def probe(w3: Web3, deployer: LocalAccount, probe_artifacts: dict[str, Artifact]) -> ContractClient:
    registry = AbiRegistry.from_artifacts(probe_artifacts.values())
    address, _ = deploy_contract(w3, deployer, probe_artifacts["Probe"], registry=registry)
    return ContractClient(w3, address, probe_artifacts["Probe"].abi, deployer, registry=registry, name="Probe")


# ------------------------------------------------------------------ compiler


def _copy_sources(tmp_path: Path) -> Path:
    root = tmp_path / "contracts"
    root.mkdir()
    shutil.copy(PROBE_SOURCES / "Probe.sol", root / "Probe.sol")
    return root


def test_compile_is_cached_until_a_source_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, build = _copy_sources(tmp_path), tmp_path / "build"
    # Isolate from chain/contracts, which other work may edit while this runs.
    monkeypatch.setattr(compiler, "CONTRACTS_DIR", tmp_path / "no-project-contracts")
    calls: list[int] = []
    real_run = compiler._run_solc

    def counting_run(*args: object) -> dict[str, object]:
        calls.append(1)
        return real_run(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(compiler, "_run_solc", counting_run)
    first = compile_contracts(source_root=root, build_dir=build)
    assert calls == [1]
    assert first["Probe"].deployable and not first["Ownable"].deployable
    assert any(item.get("name") == "TooBig" for item in first["Probe"].abi)

    second = compile_contracts(source_root=root, build_dir=build)
    assert calls == [1], "unchanged sources must not start solc again"
    assert second["Probe"].abi_hash == first["Probe"].abi_hash

    (root / "Extra.sol").write_text("// SPDX-License-Identifier: MIT\npragma solidity ^0.8.24;\ncontract Extra {}\n")
    third = compile_contracts(source_root=root, build_dir=build)
    assert calls == [1, 1] and "Extra" in third

    compile_contracts(force=True, source_root=root, build_dir=build)
    assert len(calls) == 3


def test_fixture_cache_follows_the_project_contracts_it_may_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project" / "contracts"
    project.mkdir(parents=True)
    (project / "Lib.sol").write_text("// v1\n")
    monkeypatch.setattr(compiler, "CONTRACTS_DIR", project)
    root, build = _copy_sources(tmp_path), tmp_path / "build"
    calls: list[int] = []
    real_run = compiler._run_solc
    monkeypatch.setattr(compiler, "_run_solc", lambda *a: calls.append(1) or real_run(*a))
    compile_contracts(source_root=root, build_dir=build)
    compile_contracts(source_root=root, build_dir=build)
    assert calls == [1]
    (project / "Lib.sol").write_text("// v2\n")
    compile_contracts(source_root=root, build_dir=build)
    assert calls == [1, 1], "a changed project contract must invalidate fixture builds that may import it"


def test_stack_too_deep_falls_back_to_via_ir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "contracts"
    root.mkdir()
    args = ", ".join(f"uint256 a{i}" for i in range(12))
    locals_ = " ".join(f"uint256 b{i} = a{i} * {i + 2};" for i in range(12))
    total = " + ".join([f"a{i}" for i in range(12)] + [f"b{i}" for i in range(12)])
    (root / "Deep.sol").write_text(
        "// SPDX-License-Identifier: MIT\npragma solidity ^0.8.24;\n"
        f"contract Deep {{ function f({args}) external pure returns (uint256) {{ {locals_} return {total}; }} }}\n"
    )
    monkeypatch.setattr(compiler, "CONTRACTS_DIR", tmp_path / "no-project-contracts")
    seen: list[bool] = []
    real_run = compiler._run_solc

    def recording_run(base: Path, sources: dict[str, str], settings: dict[str, object]) -> dict[str, object]:
        seen.append(bool(settings.get("viaIR")))
        return real_run(base, sources, settings)

    monkeypatch.setattr(compiler, "_run_solc", recording_run)
    artifacts = compile_contracts(source_root=root, build_dir=tmp_path / "build")
    assert seen == [False, True] and artifacts["Deep"].deployable


def test_project_contracts_compile_on_the_legacy_pipeline() -> None:
    """A stack-too-deep anywhere silently switches the whole tree to viaIR (~146 s compiles, other gas
    figures): the cache of chain/contracts records which pipeline built it, and it must be the legacy one."""
    from chain.paths import BUILD_DIR

    compile_contracts()  # cached unless a source changed
    cache = json.loads((BUILD_DIR / "artifacts-main.json").read_text())
    assert cache["via_ir"] is False, "a contract needs viaIR (stack too deep on the legacy pipeline): restructure it"


def test_compile_error_carries_solc_message(tmp_path: Path) -> None:
    root = tmp_path / "contracts"
    root.mkdir()
    (root / "Broken.sol").write_text("pragma solidity ^0.8.24;\ncontract Broken { function f() external { undefinedThing(); } }\n")
    with pytest.raises(CompilationError, match="undefinedThing") as info:
        compile_contracts(source_root=root, build_dir=tmp_path / "build")
    assert info.value.exit_code == 10


def test_compile_without_sources_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CompilationError, match="no contract sources"):
        compile_contracts(source_root=tmp_path / "missing", build_dir=tmp_path / "build")


# ------------------------------------------------------------------ anvil


def test_anvil_starts_answers_and_stops() -> None:
    node = AnvilProcess().start()
    try:
        assert rpc_answers(node.rpc_url)
        assert connect(node.rpc_url).eth.chain_id == 31337
    finally:
        node.stop()
    assert not rpc_answers(node.rpc_url)
    node.stop()  # idempotent


def test_missing_toolchain_says_to_run_make_setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import chain.anvil as anvil_module

    monkeypatch.setattr(anvil_module, "ANVIL_BIN", tmp_path / "no-anvil")
    with pytest.raises(Unavailable, match="make setup") as info:
        AnvilProcess().start()
    assert info.value.exit_code == 5
    monkeypatch.setattr(compiler, "SOLCJS", tmp_path / "solc" / "solc.js")
    with pytest.raises(Unavailable, match="make setup"):
        compile_contracts(source_root=PROBE_SOURCES, build_dir=tmp_path / "build", force=True)


def test_stale_run_record_is_ignored_and_foreign_processes_are_never_signalled(tmp_path: Path, anvil: AnvilProcess) -> None:
    conf = _settings(tmp_path / "home")
    conf.ensure_dir(conf.chain_dir)
    run_file = conf.chain_dir / "anvil.json"
    # The session's anvil is alive but is not this home's chain (other port): never touch it.
    run_file.write_text(json.dumps({"pid": anvil.pid, "port": anvil.port + 1, "rpc_url": "http://127.0.0.1:1"}))
    assert chain_down(conf)["stopped"] is False
    assert not run_file.exists() and rpc_answers(anvil.rpc_url)
    run_file.write_text(json.dumps({"pid": os.getpid(), "port": 1, "rpc_url": "http://127.0.0.1:1"}))  # not anvil at all
    assert chain_status(conf)["embedded"] is False
    run_file.write_text("{garbage")
    assert chain_down(conf)["stopped"] is False


def test_anvil_refuses_a_port_already_serving(anvil: AnvilProcess) -> None:
    with pytest.raises(Exception, match="already serving"):
        AnvilProcess(port=anvil.port).start()


def test_anvil_state_file_survives_restart(tmp_path: Path, accounts: list[LocalAccount]) -> None:
    state = tmp_path / "state.json"
    with AnvilProcess(state_file=state) as node:
        w3 = connect(node.rpc_url)
        tx = {"to": accounts[5].address, "value": 12345, "gas": 21000, "gasPrice": w3.eth.gas_price, "nonce": 0, "chainId": 31337}
        sent = w3.eth.send_raw_transaction(accounts[4].sign_transaction(tx).raw_transaction)
        w3.eth.wait_for_transaction_receipt(sent, timeout=30)  # automine is asynchronous under load
        balance = w3.eth.get_balance(accounts[5].address)
        block = w3.eth.block_number
    assert state.is_file()
    with AnvilProcess(state_file=state) as node:
        w3 = connect(node.rpc_url)
        assert w3.eth.get_balance(accounts[5].address) == balance
        assert w3.eth.block_number >= block


def test_pre_london_chain_gets_a_legacy_transaction(accounts: list[LocalAccount]) -> None:
    with AnvilProcess(extra_args=["--hardfork", "berlin"]) as node:
        w3 = connect(node.rpc_url)
        assert "baseFeePerGas" not in w3.eth.get_block("latest")
        result = send_transaction(w3, accounts[0], {"to": accounts[1].address, "value": 5}, AbiRegistry([]))
        assert result.gas_used == 21000 and w3.eth.get_transaction(result.tx_hash)["type"] == 0  # type: ignore[arg-type]


def test_connect_raises_chain_unavailable_when_nothing_listens() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ChainUnavailable) as info:
        connect(url)
    assert info.value.exit_code == 5
    assert "collab chain up" in str(info.value)


# ------------------------------------------------------------------ reverts


@pytest.mark.parametrize(
    ("fn", "args", "signer", "name", "category", "error_args"),
    [
        ("store", (5000, TAG, "x"), 0, "TooBig", BadInput, {"value": 5000, "max": 1000}),
        ("remove", (999,), 0, "UnknownItem", NotFound, {"id": 999}),
        ("verify", (b"sig",), 0, "InvalidItemSignature", ProtocolViolation, {}),
        ("legacy", (0,), 0, "Error", BadInput, {"reason": "x must be nonzero"}),
        ("divide", (0,), 0, "Panic", BadInput, {"code": 0x12, "reason": "division or modulo by zero"}),
        ("forward", (7,), 0, "HelperFailed", BadInput, {"code": 7, "why": "helper"}),
    ],
)
def test_reverts_decode_into_named_exceptions(
    probe: ContractClient, accounts: list[LocalAccount], chain_snapshot: str,
    fn: str, args: tuple[object, ...], signer: int, name: str, category: type, error_args: dict[str, object],
) -> None:
    with pytest.raises(revert_class(name)) as info:
        probe.with_account(accounts[signer])._transact(fn, *args)
    err = info.value
    assert isinstance(err, ContractRevert) and isinstance(err, category)
    assert err.error_name == name and err.error_args == error_args
    assert err.exit_code == category.exit_code
    assert name in str(err) and "\n" not in str(err)


def test_unauthorized_reverts_map_to_exit_code_4(probe: ContractClient, accounts: list[LocalAccount], chain_snapshot: str) -> None:
    probe._transact("store", 1, TAG, "mine")
    with pytest.raises(revert_class("NotItemOwner")) as info:
        probe.with_account(accounts[1])._transact("remove", 1)
    assert info.value.error_args == {"id": 1, "account": accounts[1].address}
    assert isinstance(info.value, Unauthorized) and info.value.exit_code == 4
    with pytest.raises(revert_class("OwnableUnauthorizedAccount")):
        probe.with_account(accounts[2])._call("adminOnly")


def test_view_call_revert_is_decoded_too(probe: ContractClient) -> None:
    with pytest.raises(revert_class("UnknownItem")) as info:
        probe._call("item", 42)
    assert info.value.error_args == {"id": 42}


def test_revert_class_is_stable_and_categorised() -> None:
    assert revert_class("UnknownAsset") is revert_class("UnknownAsset")
    assert issubclass(revert_class("UnknownAsset"), NotFound)
    assert issubclass(revert_class("AccessControlUnauthorizedAccount"), Unauthorized)
    assert issubclass(revert_class("NotAssetOwner"), Unauthorized)
    assert issubclass(revert_class("NotLicensed"), Unauthorized)
    assert issubclass(revert_class("NoIdentity"), Unauthorized)
    assert issubclass(revert_class("IdentityInactive"), Unauthorized)
    assert issubclass(revert_class("UnknownParam"), NotFound)
    assert issubclass(revert_class("InvalidProofOfPossession"), ProtocolViolation)
    assert issubclass(revert_class("StaleCallReceipt"), ProtocolViolation)
    assert issubclass(revert_class("WrongStake"), BadInput)
    assert not issubclass(revert_class("WrongStake"), Unauthorized)


def test_unknown_selector_is_an_unknown_revert() -> None:
    err = AbiRegistry([]).decode_revert("0xdeadbeef00")
    assert err.error_name == "UnknownRevert" and err.exit_code == 2


def test_transaction_without_account_is_unauthorized(probe: ContractClient, w3: Web3) -> None:
    reader = ContractClient(w3, probe.address, probe.abi, registry=probe.registry)
    with pytest.raises(Unauthorized):
        reader._transact("store", 1, TAG, "x")


# ------------------------------------------------------------------ events and snapshots


def test_events_decode_into_plain_python(probe: ContractClient, deployer: LocalAccount, chain_snapshot: str) -> None:
    result = probe._transact("store", 7, TAG, "hello")
    (event,) = result.events_named("ItemStored")
    assert event.address == probe.address
    assert event.args == {
        "id": 1, "by": deployer.address, "tag": TAG, "note": "hello",
        "item": {"value": 7, "tag": TAG, "by": deployer.address},
    }
    assert result.gas_used > 21000 and result.block_number > 0 and result.tx_hash.startswith("0x")
    paid = probe._transact("deposit", value=10**15)
    assert paid.events_named("Deposited")[0].args == {"from": deployer.address, "amount": 10**15}
    assert paid.events_named("ItemStored") == []


def test_event_history_query(probe: ContractClient, deployer: LocalAccount, accounts: list[LocalAccount], chain_snapshot: str) -> None:
    start = probe.w3.eth.block_number + 1
    probe._transact("store", 1, TAG, "a")
    probe.with_account(accounts[1])._transact("store", 2, TAG, "b")
    probe._transact("deposit", value=5)
    stored = probe._events("ItemStored", from_block=start)
    assert [e.args["note"] for e in stored] == ["a", "b"]
    by_second = "0x" + "00" * 12 + accounts[1].address[2:].lower()
    assert [e.args["id"] for e in probe._events("ItemStored", from_block=start, topics=[None, by_second])] == [2]
    assert [e.name for e in probe._events(from_block=start)] == ["ItemStored", "ItemStored", "Deposited"]


def test_threads_sharing_an_account_do_not_race_for_nonces(probe: ContractClient, chain_snapshot: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda i: probe._transact("store", i, TAG, f"t{i}"), range(8)))
    assert len({r.tx_hash for r in results}) == 8
    assert probe._call("count") == 8


def test_chain_snapshot_reverts_state(probe: ContractClient, chain_snapshot: str, time_travel) -> None:  # type: ignore[no-untyped-def]
    # The previous tests stored items inside their snapshots; none survived.
    assert probe._call("count") == 0
    before = probe.w3.eth.get_block("latest")["timestamp"]
    assert time_travel(3600) >= before + 3600


# ------------------------------------------------------------------ deployment file


def test_deployment_roundtrip_and_abi_check(tmp_path: Path, probe_artifacts: dict[str, Artifact]) -> None:
    art = probe_artifacts["Probe"]
    dep = Deployment(31337, "http://127.0.0.1:8545", 3, {"Probe": {"address": "0x" + "11" * 20, "abi_hash": art.abi_hash, "artifact": "Probe"}})
    path = tmp_path / "home" / "deployment.json"
    dep.save(path)
    loaded = Deployment.load(path)
    assert loaded == dep and loaded.address("Probe") == "0x" + "11" * 20
    loaded.check_abi("Probe", art.abi_hash)
    with pytest.raises(DeploymentMismatch, match="redeploy"):
        loaded.check_abi("Probe", "0x" + "00" * 32)
    with pytest.raises(NotFound):
        loaded.address("Licensing")


def test_deployment_load_failures(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="collab chain up"):
        Deployment.load(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BadInput):
        Deployment.load(bad)
    bad.write_text(json.dumps({"chain_id": 1, "contracts": {}}))
    with pytest.raises(BadInput, match="malformed"):
        Deployment.load(bad)


# ------------------------------------------------------------------ deploy_all (the real contracts)


def _client(deployment: Deployment, w3: Web3, name: str) -> ContractClient:
    cls = type(f"{name}Client", (ContractClient,), {"CONTRACT": name})
    return cls.from_deployment(deployment, w3)


def test_deploy_all_wires_roles_params_and_governance(deployment: Deployment, w3: Web3, deployer: LocalAccount) -> None:
    assert deployment.chain_id == 31337 and deployment.deploy_block >= 1
    assert set(CONTRACT_ORDER) <= set(deployment.contracts)
    for name in CONTRACT_ORDER:
        assert len(w3.eth.get_code(deployment.address(name))) > 0, name
    timelock, governor = deployment.address("TimelockController"), deployment.address("CollabGovernor")

    params = _client(deployment, w3, "ProtocolParams")
    assert params._call("owner") == timelock
    for name, value in DEFAULT_PARAMS.items():
        assert params._call("get", param_key(name)) == value, name

    shares = _client(deployment, w3, "Shares")
    assert shares._call("hasRole", shares._call("MINTER_ROLE"), deployment.address("AssetRegistry"))
    for name in ("IdentityRegistry", "AssetRegistry", "Shares", "Receipts"):
        c = _client(deployment, w3, name)
        assert c._call("hasRole", c._call("SETTLEMENT_ROLE"), deployer.address), name

    tl = _client(deployment, w3, "TimelockController")
    assert tl._call("hasRole", tl._call("PROPOSER_ROLE"), governor)
    assert tl._call("hasRole", tl._call("CANCELLER_ROLE"), governor)
    assert tl._call("hasRole", tl._call("EXECUTOR_ROLE"), ZERO_ADDRESS)
    assert not tl._call("hasRole", tl._call("DEFAULT_ADMIN_ROLE"), deployer.address)
    assert not tl._call("hasRole", tl._call("PROPOSER_ROLE"), deployer.address)

    if "ClaimManager" in deployment.contracts:  # the fraud-proof layer settles through the asset layer
        assert set(FRAUD_PROOF_ORDER) <= set(deployment.contracts)
        for name in ("IdentityRegistry", "AssetRegistry", "Shares", "Receipts"):
            c = _client(deployment, w3, name)
            assert c._call("hasRole", c._call("SETTLEMENT_ROLE"), deployment.address("ClaimManager")), name

    licensing = _client(deployment, w3, "Licensing")
    assert licensing._call("hasRole", licensing._call("DEFAULT_ADMIN_ROLE"), timelock)
    # Key disputes are governance's alone: the deployer kept no admin role on Licensing.
    assert not licensing._call("hasRole", licensing._call("DEFAULT_ADMIN_ROLE"), deployer.address)
    gov = _client(deployment, w3, "CollabGovernor")
    assert gov._call("votingPeriod") == Governance().voting_period
    assert gov._call("timelock") == timelock


def test_protocol_params_only_change_through_the_timelock(deployment: Deployment, w3: Web3, deployer: LocalAccount, chain_snapshot: str) -> None:
    params = _client(deployment, w3, "ProtocolParams").with_account(deployer)
    with pytest.raises(revert_class("OwnableUnauthorizedAccount")) as info:
        params._transact("set", param_key("CHALLENGE_WINDOW"), 1)
    assert info.value.exit_code == 4


def test_deploy_all_demo_profile_with_overrides(w3: Web3, deployer: LocalAccount, chain_snapshot: str) -> None:
    dep = deploy_all(w3, deployer, profile="demo", params={"CHALLENGE_WINDOW": 7}, voting_delay=2, voting_period=30)
    params = _client(dep, w3, "ProtocolParams")
    assert params._call("get", param_key("CHALLENGE_WINDOW")) == 7
    assert params._call("get", param_key("KEY_DISPUTE_WINDOW")) == DEMO_PARAMS["KEY_DISPUTE_WINDOW"]
    gov = _client(dep, w3, "CollabGovernor")
    assert (gov._call("votingDelay"), gov._call("votingPeriod")) == (2, 30)


def test_deploy_params_are_validated() -> None:
    with pytest.raises(BadInput, match="unknown protocol parameter"):
        resolve_params("default", {"NOT_A_PARAM": 1})
    with pytest.raises(BadInput, match="unknown deploy profile"):
        resolve_params("fast")
    assert resolve_params("demo", {"DA_BOND": 5})["DA_BOND"] == 5


def test_client_refuses_a_deployment_with_a_stale_abi(deployment: Deployment, w3: Web3) -> None:
    stale = Deployment.from_json(deployment.to_json())
    stale.contracts["Shares"]["abi_hash"] = "0x" + "00" * 32
    with pytest.raises(DeploymentMismatch, match="Shares"):
        _client(stale, w3, "Shares")


# ------------------------------------------------------------------ chain up / status / down


def _settings(home: Path) -> Settings:
    return Settings.resolve(home=home, env={})


@pytest.mark.slow
def test_chain_up_with_state_survives_down_and_up(tmp_path: Path) -> None:
    conf, state, port = _settings(tmp_path / "home"), tmp_path / "chain-state.json", free_port()
    try:
        first = chain_up(conf, port, state)
        assert conf.deployment_path.is_file() and Deployment.load(conf.deployment_path) == first
        status = chain_status(conf)
        assert status["embedded"] and status["reachable"] and status["deployed"]
        assert status["contracts"] == {n: e["address"] for n, e in first.contracts.items()}
        assert chain_up(conf, port, state) == first, "up on a running chain reuses it"
        with pytest.raises(BadInput, match="already runs on port"):
            chain_up(conf, free_port(), state)
        with pytest.raises(BadInput, match="already runs with state"):
            chain_up(conf, port, tmp_path / "other-state.json")

        stopped = chain_down(conf)
        assert stopped["stopped"] and state.is_file()
        assert not rpc_answers(first.rpc_url)
        assert chain_status(conf)["reachable"] is False
        assert chain_down(conf)["stopped"] is False

        again = chain_up(conf, port, state)
        assert again.contracts == first.contracts and again.deploy_block == first.deploy_block
        assert chain_status(conf)["deployed"]
    finally:
        chain_down(conf)


def test_chain_up_that_cannot_deploy_leaves_no_chain_behind(tmp_path: Path) -> None:
    conf, port = _settings(tmp_path / "home"), free_port()
    with pytest.raises(BadInput, match="unknown protocol parameter"):
        chain_up(conf, port, params={"NOT_A_PARAM": 1})
    assert not rpc_answers(f"http://127.0.0.1:{port}")
    assert chain_status(conf)["embedded"] is False and not conf.deployment_path.exists()


@pytest.mark.slow
def test_chain_up_without_state_redeploys_on_a_fresh_chain(tmp_path: Path) -> None:
    conf, port = _settings(tmp_path / "home"), free_port()
    try:
        chain_up(conf, port)
        w3 = connect(f"http://127.0.0.1:{port}")
        block = w3.eth.block_number
        chain_down(conf)
        chain_up(conf, port)
        assert chain_status(conf)["deployed"]
        assert connect(f"http://127.0.0.1:{port}").eth.block_number == block, "a fresh chain got the same deploy again"
    finally:
        chain_down(conf)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")} | (env or {})
    return subprocess.run([sys.executable, "-m", "collab", *args], capture_output=True, text=True, timeout=300, env=full_env, check=False)


@pytest.mark.slow
def test_cli_chain_up_status_down_with_state(tmp_path: Path) -> None:
    home, state, port = str(tmp_path / "home"), str(tmp_path / "state.json"), str(free_port())
    try:
        up = _cli("--home", home, "--json", "chain", "up", "--port", port, "--state", state, "--profile", "demo")
        assert up.returncode == 0, up.stderr
        deployed = json.loads(up.stdout)
        assert deployed["chain_id"] == 31337 and set(CONTRACT_ORDER) <= set(deployed["contracts"])

        status = _cli("--home", home, "--json", "chain", "status")
        assert status.returncode == 0 and json.loads(status.stdout)["deployed"] is True

        down = _cli("--home", home, "--json", "chain", "down")
        assert down.returncode == 0 and json.loads(down.stdout)["stopped"] is True
        status = _cli("--home", home, "chain", "status")
        assert status.returncode == 5 and "collab chain up" in status.stdout

        again = _cli("--home", home, "--json", "chain", "up", "--port", port, "--state", state)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["contracts"] == deployed["contracts"]
    finally:
        _cli("--home", home, "chain", "down")


@pytest.mark.slow
def test_cli_chain_deploy_to_a_running_chain(tmp_path: Path, anvil: AnvilProcess, accounts: list[LocalAccount], w3: Web3) -> None:
    home = str(tmp_path / "home")
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        key = "0x" + bytes(accounts[3].key).hex().removeprefix("0x")
        done = _cli("--home", home, "--json", "chain", "deploy", "--rpc", anvil.rpc_url, env={"MY_KEY": key})
        assert done.returncode == 3 and json.loads(done.stdout)["error"] == "NotFound"  # no key variable, no identity
        done = _cli("--home", home, "--json", "chain", "deploy", "--rpc", anvil.rpc_url, "--private-key-env", "MY_KEY",
                    "--voting-period", "60", "--param", "CHALLENGE_WINDOW=99", env={"MY_KEY": key})
        assert done.returncode == 0, done.stderr
        body = json.loads(done.stdout)
        assert body["deployer"] == accounts[3].address
        dep = Deployment.load(Path(home) / "deployment.json")
        assert _client(dep, w3, "ProtocolParams")._call("get", param_key("CHALLENGE_WINDOW")) == 99
        bad = _cli("--home", home, "chain", "deploy", "--rpc", anvil.rpc_url, "--private-key-env", "MY_KEY", "--param", "NOPE=1", env={"MY_KEY": key})
        assert bad.returncode == 2 and bad.stderr.startswith("error: unknown protocol parameter") and "Traceback" not in bad.stderr
        gone = _cli("--home", home, "chain", "deploy", "--rpc", f"http://127.0.0.1:{free_port()}", "--private-key-env", "MY_KEY", env={"MY_KEY": key})
        assert gone.returncode == 5
    finally:
        w3.provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]


@pytest.mark.slow
def test_cli_chain_deploy_from_the_home_identity(tmp_path: Path, anvil: AnvilProcess, w3: Web3) -> None:
    from collab.identity import Identity

    home = tmp_path / "home"
    me = Identity.create(home, "pw", scrypt_n=2).account.address
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        broke = _cli("--home", str(home), "chain", "deploy", "--rpc", anvil.rpc_url, env={"COLLAB_PASSPHRASE": "pw"})
        assert broke.returncode == 2 and "no funds" in broke.stderr
        env = {"COLLAB_PASSPHRASE": "pw", "COLLAB_RPC_URL": anvil.rpc_url}
        funded = _cli("--home", str(home), "--json", "chain", "fund", "--amount", "100", env=env)
        assert funded.returncode == 0, funded.stderr
        assert json.loads(funded.stdout)["balance_wei"] == w3.eth.get_balance(me) == 100 * 10**18
        done = _cli("--home", str(home), "--json", "chain", "deploy", "--rpc", anvil.rpc_url, env={"COLLAB_PASSPHRASE": "pw"})
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["deployer"] == me
        assert Deployment.load(home / "deployment.json").rpc_url == anvil.rpc_url
    finally:
        w3.provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]


def test_fund_sends_dev_ether_only_on_a_local_dev_chain(tmp_path: Path, anvil: AnvilProcess, accounts: list[LocalAccount], w3: Web3, chain_snapshot: str) -> None:
    conf = Settings.resolve(home=tmp_path / "home", env={"COLLAB_RPC_URL": anvil.rpc_url})
    target = "0x" + "42" * 20
    sent = fund(conf, target, 3 * 10**18)
    assert sent["balance_wei"] == w3.eth.get_balance(Web3.to_checksum_address(target)) == 3 * 10**18
    with pytest.raises(BadInput):
        fund(conf, target, 0)
    with pytest.raises(BadInput, match="not an address"):
        fund(conf, "0x1234", 1)
    with pytest.raises(Unavailable, match="no chain"):
        fund(Settings.resolve(home=tmp_path / "nothing", env={}), target, 1)
    with AnvilProcess(extra_args=["--mnemonic-random"]) as other:  # dev account 0 holds nothing there
        with pytest.raises(BadInput, match="not a local development chain"):
            fund(Settings.resolve(home=tmp_path / "other", env={"COLLAB_RPC_URL": other.rpc_url}), target, 1)


def test_a_nonce_taken_by_another_process_is_retried_with_a_fresh_one(
    accounts: list[LocalAccount], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A node and a CLI command of one identity send from one account in two processes: when the other
    took the nonce first, the transaction goes out again with the next one (once), not as an error."""
    with AnvilProcess() as node:
        w3 = connect(node.rpc_url)
        sender, other = accounts[6], accounts[7]
        stale = w3.eth.get_transaction_count(sender.address, "pending")
        # the other process's transaction, sent with the nonce this one is about to read
        w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(sender.sign_transaction(
            {"to": other.address, "value": 1, "gas": 21000, "gasPrice": 2 * w3.eth.gas_price, "nonce": stale,
             "chainId": w3.eth.chain_id}).raw_transaction), timeout=30)
        real = w3.eth.get_transaction_count
        reads: list[int] = []

        def first_read_is_stale(address: str, block: str = "latest") -> int:
            reads.append(1)
            return stale if len(reads) == 1 else real(address, block)  # type: ignore[arg-type]

        monkeypatch.setattr(w3.eth, "get_transaction_count", first_read_is_stale)
        result = send_transaction(w3, sender, {"to": other.address, "value": 5}, AbiRegistry([]))
        assert len(reads) == 2 and w3.eth.get_transaction(result.tx_hash)["nonce"] == stale + 1  # type: ignore[arg-type]
