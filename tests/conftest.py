"""Shared fixtures: one real anvil per test session, the deployed contracts, snapshots.

Every test that changes chain state takes ``chain_snapshot``, which reverts
the chain afterwards, so session-scoped deployments stay pristine and tests
stay independent without paying for a redeploy each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain.anvil import AnvilProcess, dev_account
from chain.client import connect
from chain.deploy import deploy_all
from chain.deployment import Deployment

N_ACCOUNTS = 10


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilProcess]:
    """A real anvil on a free port for the whole session (automine, chain id 31337)."""
    node = AnvilProcess().start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def w3(anvil: AnvilProcess) -> Web3:
    """Web3 connected to the session's anvil."""
    return connect(anvil.rpc_url)


@pytest.fixture(scope="session")
def accounts() -> list[LocalAccount]:
    """anvil's 10 funded dev accounts (10,000 ETH each) as local signing accounts."""
    return [dev_account(i) for i in range(N_ACCOUNTS)]


@pytest.fixture(scope="session")
def deployer(accounts: list[LocalAccount]) -> LocalAccount:
    """The account that deploys everything and holds the admin/settlement roles."""
    return accounts[0]


@pytest.fixture(scope="session")
def deployment(w3: Web3, deployer: LocalAccount) -> Deployment:
    """Every contract of docs/contracts.md deployed and wired once per session."""
    return deploy_all(w3, deployer)


@pytest.fixture
def chain_snapshot(w3: Web3, request: pytest.FixtureRequest) -> Iterator[str]:
    """``evm_snapshot`` before the test and ``evm_revert`` after it.

    If the test also uses ``deployment``, that is created first, so the
    session's deployment is never inside (and reverted with) a snapshot.
    """
    if "deployment" in request.fixturenames:
        request.getfixturevalue("deployment")
    snapshot_id = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    yield snapshot_id
    reverted = w3.provider.make_request("evm_revert", [snapshot_id])  # type: ignore[arg-type]
    assert reverted.get("result") is True, f"evm_revert failed: {reverted}"


def increase_time(w3: Web3, seconds: int) -> int:
    """Move the chain's clock forward and mine a block; returns the new block timestamp."""
    w3.provider.make_request("evm_increaseTime", [int(seconds)])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    return int(w3.eth.get_block("latest")["timestamp"])


@pytest.fixture
def time_travel(w3: Web3) -> Callable[[int], int]:
    """``time_travel(seconds)``: advance chain time (use with ``chain_snapshot``)."""
    return lambda seconds: increase_time(w3, seconds)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Kill what tests left running, so the run can exit.

    A test that times out (pytest-timeout) while its party processes
    (multiprocessing children) wait on each other leaves them alive, and
    multiprocessing's exit handler then joins them forever: the summary is
    printed but the process never exits (seen once locally). CI must end.
    """
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            pass
