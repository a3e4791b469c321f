"""ProtocolParams: governed values, owner-only writes, UnknownParam for keys never set."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain.client import ContractClient, default_artifacts, deploy_contract
from chain.clients.protocol_params import PARAM_NAMES, ProtocolParamsClient, key_of
from chain.compiler import compile_contracts
from chain.deploy import DEFAULT_PARAMS, param_key
from chain.deployment import Deployment
from chain.errors import revert_class
from chain.paths import CONTRACTS_DIR
from collab.errors import BadInput, NotFound, Unauthorized


@pytest.fixture
def deployed(w3: Web3, deployment: Deployment, deployer: LocalAccount) -> ProtocolParamsClient:
    """The shared deployment's ProtocolParams (owned by the timelock)."""
    return ProtocolParamsClient.from_deployment(deployment, w3, deployer)


@pytest.fixture
def fresh(w3: Web3, deployer: LocalAccount, chain_snapshot: str) -> ProtocolParamsClient:
    """A new ProtocolParams owned by the deployer."""
    artifact = default_artifacts()["ProtocolParams"]
    address, _ = deploy_contract(w3, deployer, artifact, deployer.address)
    return ProtocolParamsClient(w3, address, artifact.abi, deployer, name="ProtocolParams")


def test_keys_are_keccak_of_the_names() -> None:
    for name in PARAM_NAMES:
        assert "0x" + key_of(name).hex() == param_key(name)
    assert key_of(b"\x01" * 32) == b"\x01" * 32
    with pytest.raises(BadInput):
        key_of(b"\x01" * 31)


def test_deployment_sets_every_parameter_and_hands_ownership_to_the_timelock(
    deployed: ProtocolParamsClient, deployment: Deployment
) -> None:
    assert {name: deployed.get(name) for name in DEFAULT_PARAMS} == DEFAULT_PARAMS
    assert deployed.all() == {name: DEFAULT_PARAMS[name] for name in PARAM_NAMES if name in DEFAULT_PARAMS}
    assert deployed.owner() == deployment.address("TimelockController")


def test_the_deployer_can_no_longer_set_parameters(deployed: ProtocolParamsClient, chain_snapshot: str) -> None:
    with pytest.raises(revert_class("OwnableUnauthorizedAccount")) as err:
        deployed.set("ADMISSION_STAKE", 0)
    assert isinstance(err.value, Unauthorized)
    assert deployed.get("ADMISSION_STAKE") == DEFAULT_PARAMS["ADMISSION_STAKE"]


def test_unknown_keys_revert_instead_of_reading_zero(deployed: ProtocolParamsClient) -> None:
    assert not deployed.is_set("NO_SUCH_PARAM")
    with pytest.raises(revert_class("UnknownParam")) as err:
        deployed.get("NO_SUCH_PARAM")
    assert isinstance(err.value, NotFound)
    assert err.value.error_args == {"key": "0x" + key_of("NO_SUCH_PARAM").hex()}


def test_set_emits_old_and_new_values_and_zero_is_a_real_value(fresh: ProtocolParamsClient) -> None:
    first = fresh.set("CHALLENGE_WINDOW", 60)
    assert (first.name, first.old_value, first.new_value) == ("CHALLENGE_WINDOW", 0, 60)
    second = fresh.set("CHALLENGE_WINDOW", 0)
    assert (second.old_value, second.new_value) == (60, 0)
    assert fresh.is_set("CHALLENGE_WINDOW") and fresh.get("CHALLENGE_WINDOW") == 0


def test_only_the_owner_sets_and_ownership_moves(fresh: ProtocolParamsClient, accounts: list[LocalAccount]) -> None:
    with pytest.raises(revert_class("OwnableUnauthorizedAccount")):
        fresh.with_account(accounts[1]).set("BURN_BPS", 1)
    fresh.transfer_ownership(accounts[1].address)
    assert fresh.owner() == accounts[1].address
    assert fresh.with_account(accounts[1]).set("BURN_BPS", 1).new_value == 1
    with pytest.raises(revert_class("OwnableUnauthorizedAccount")):
        fresh.set("BURN_BPS", 2)


PARAM_KEYS_HARNESS = """
// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ParamKeys} from "./ParamKeys.sol";

contract ParamKeysHarness {
    function keys() external pure returns (bytes32[16] memory k) {
        k = [
            ParamKeys.ADMISSION_STAKE, ParamKeys.GENESIS_REPUTATION, ParamKeys.REPUTATION_HALF_LIFE,
            ParamKeys.MIN_REPUTATION_AGGREGATOR, ParamKeys.MIN_REPUTATION_CLAIMER, ParamKeys.COMPUTE_FEE_BPS,
            ParamKeys.KEY_DELIVERY_TIMEOUT, ParamKeys.KEY_DISPUTE_WINDOW, ParamKeys.CHALLENGE_WINDOW,
            ParamKeys.CLOCK_DURATION, ParamKeys.CLOCK_EXTENSION, ParamKeys.CLAIMER_BOND, ParamKeys.CHALLENGER_BOND,
            ParamKeys.BURN_BPS, ParamKeys.DA_BOND, ParamKeys.DA_RESPONSE_WINDOW
        ];
    }
}
"""


def test_solidity_param_keys_equal_the_python_keys(w3: Web3, deployer: LocalAccount, tmp_path: Path) -> None:
    """ParamKeys.sol and the Python side derive every key from the same name."""
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(CONTRACTS_DIR / "lib" / "ParamKeys.sol", source / "ParamKeys.sol")
    (source / "ParamKeysHarness.sol").write_text(PARAM_KEYS_HARNESS)
    artifact = compile_contracts(source_root=source, build_dir=tmp_path / "build")["ParamKeysHarness"]
    address, _ = deploy_contract(w3, deployer, artifact)
    keys = ContractClient(w3, address, artifact.abi, name="ParamKeysHarness")._call("keys")
    assert [bytes(k) for k in keys] == [key_of(name) for name in PARAM_NAMES]


def test_get_many_reads_values_in_order_and_refuses_unknown_keys(deployed: ProtocolParamsClient) -> None:
    names = ["CLAIMER_BOND", "CHALLENGE_WINDOW", "BURN_BPS"]
    assert deployed.get_many(names) == [DEFAULT_PARAMS[n] for n in names]
    assert deployed.get_many([]) == []
    with pytest.raises(revert_class("UnknownParam")) as err:
        deployed.get_many(["CLAIMER_BOND", "NO_SUCH_PARAM"])
    assert err.value.error_args == {"key": "0x" + key_of("NO_SUCH_PARAM").hex()}


def test_every_set_moves_the_epoch_even_to_the_same_value(fresh: ProtocolParamsClient) -> None:
    # ClaimManager reuses its parameter snapshot while the epoch stands still, so no set may leave it unmoved.
    assert fresh.epoch() == 0
    fresh.set("BURN_BPS", 10)
    fresh.set("BURN_BPS", 10)
    assert fresh.epoch() == 2 and fresh.get_many(["BURN_BPS"]) == [10]
