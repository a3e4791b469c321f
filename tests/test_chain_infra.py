"""The chain infrastructure through its public interfaces, on a real anvil.

Uses the test-only ``Probe`` contract (tests/fixtures/contracts) compiled by
the same compiler as the product contracts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

import chain.compiler as compiler
from chain.anvil import AnvilProcess, free_port, rpc_answers
from chain.client import AbiRegistry, ContractClient, connect, deploy_contract
from chain.compiler import Artifact, compile_contracts
from chain.deployment import Deployment
from chain.errors import CompilationError, ContractRevert, DeploymentMismatch, revert_class
from collab.errors import BadInput, ChainUnavailable, NotFound, ProtocolViolation, Unauthorized

FIXTURE_CONTRACTS = Path(__file__).parent / "fixtures" / "contracts"
TAG = "0x" + "ab" * 32


@pytest.fixture(scope="module")
def probe_artifacts() -> dict[str, Artifact]:
    return compile_contracts(source_root=FIXTURE_CONTRACTS)


@pytest.fixture(scope="module")
def probe(w3: Web3, deployer: LocalAccount, probe_artifacts: dict[str, Artifact]) -> ContractClient:
    registry = AbiRegistry.from_artifacts(probe_artifacts.values())
    address, _ = deploy_contract(w3, deployer, probe_artifacts["Probe"], registry=registry)
    return ContractClient(w3, address, probe_artifacts["Probe"].abi, deployer, registry=registry, name="Probe")


# ------------------------------------------------------------------ compiler


def _copy_sources(tmp_path: Path) -> Path:
    root = tmp_path / "contracts"
    shutil.copytree(FIXTURE_CONTRACTS, root)
    return root


def test_compile_is_cached_until_a_source_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, build = _copy_sources(tmp_path), tmp_path / "build"
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


def test_anvil_refuses_a_port_already_serving(anvil: AnvilProcess) -> None:
    with pytest.raises(Exception, match="already serving"):
        AnvilProcess(port=anvil.port).start()


def test_anvil_state_file_survives_restart(tmp_path: Path, accounts: list[LocalAccount]) -> None:
    state = tmp_path / "state.json"
    with AnvilProcess(state_file=state) as node:
        w3 = connect(node.rpc_url)
        tx = {"to": accounts[5].address, "value": 12345, "gas": 21000, "gasPrice": w3.eth.gas_price, "nonce": 0, "chainId": 31337}
        w3.eth.send_raw_transaction(accounts[4].sign_transaction(tx).raw_transaction)
        balance = w3.eth.get_balance(accounts[5].address)
        block = w3.eth.block_number
    assert state.is_file()
    with AnvilProcess(state_file=state) as node:
        w3 = connect(node.rpc_url)
        assert w3.eth.get_balance(accounts[5].address) == balance
        assert w3.eth.block_number >= block


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
