"""ClaimManager.claimCredit against a malicious receiver (real anvil, real contracts).

The attacker is a contract (``tests/fixtures/contracts/ReentrantCreditTaker.sol``)
that wins a game as challenger (the claimer times out), so it holds a real
credit; when ``claimCredit`` pays it, its ``receive`` re-enters the manager
(``claimCredit`` again, or ``finalize``). The nested call must be refused and
the credit paid exactly once; a receiver that refuses ETH keeps its credit.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from web3 import Web3

from chain.client import ContractClient
from chain.clients.claim_manager import ClaimManagerClient, ClaimStatus
from chain.errors import revert_class
from revenue_env import deploy_fixture
from test_claim_manager import GameEnv, env, game_env  # noqa: F401 - fixtures

REENTRANT_CALL = Web3.keccak(text="ReentrancyGuardReentrantCall()")[:4]


def _attacker_with_credit(env: GameEnv, time_travel: Callable[[int], int]) -> tuple[ContractClient, ClaimManagerClient, int]:
    """A ReentrantCreditTaker that won a game by the claimer's timeout; returns it, the manager and its credit."""
    manager = env.manager(env.challengers[1])
    claim_id = env.claimer_agent(env.cheat(1, 1)).post()
    taker = deploy_fixture(env.w3, env.challengers[1], "ReentrantCreditTaker", manager.address)
    bond = manager.params_of(claim_id).challenger_bond
    opened = manager.contract.encode_abi("challenge", args=[claim_id, manager.roots_of(claim_id).as_tuple()])
    taker._transact("execute", opened, value=bond)
    game = env.game(env.challengers[1])
    game_id = int(game._events("GameOpened")[-1].args["gameId"])
    time_travel(game.deadline_of(game_id) - env.w3.eth.get_block("latest")["timestamp"] + 1)
    game.resolve_timeout(game_id)
    assert manager.claim_status(claim_id) == ClaimStatus.REJECTED
    credit = manager.credit_of(taker.address)
    assert credit > bond  # its bond back plus the claimer's bond less the burn
    return taker, manager, credit


@pytest.mark.parametrize("nested", ["claimCredit", "finalize"])
def test_a_reentrant_receiver_is_paid_exactly_once(env: GameEnv, time_travel: Callable[[int], int], nested: str) -> None:
    other = env.claimer_agent().post()  # an honest claim that becomes finalizable while the game runs
    taker, manager, credit = _attacker_with_credit(env, time_travel)
    time_travel(manager.params_of(other).challenge_window + 1)
    if nested == "claimCredit":
        attack = manager.contract.encode_abi("claimCredit", args=[])
    else:
        attack = manager.contract.encode_abi("finalize", args=[other, manager.roots_of(other).as_tuple()])
    taker._transact("setAttack", attack, False)
    held = env.w3.eth.get_balance(manager.address)
    taker._transact("execute", manager.contract.encode_abi("claimCredit", args=[]))
    assert taker._call("received") == credit == env.w3.eth.get_balance(taker.address)
    assert (taker._call("reentered"), taker._call("blocked")) == (0, 1)
    assert bytes(taker._call("lastError"))[:4] == REENTRANT_CALL
    assert env.w3.eth.get_balance(manager.address) == held - credit
    assert manager.credit_of(taker.address) == 0
    with pytest.raises(revert_class("NothingToClaim")):
        taker._transact("execute", manager.contract.encode_abi("claimCredit", args=[]))
    # The nested finalize did not happen; done properly it credits the claimer, not the attacker.
    assert manager.claim_status(other) == ClaimStatus.PENDING
    manager.finalize(other)
    assert manager.claim_status(other) == ClaimStatus.FINALIZED and manager.credit_of(taker.address) == 0


def test_a_receiver_that_refuses_keeps_its_credit(env: GameEnv, time_travel: Callable[[int], int]) -> None:
    taker, manager, credit = _attacker_with_credit(env, time_travel)
    taker._transact("setAttack", b"", True)
    with pytest.raises(revert_class("CreditTransferFailed")):
        taker._transact("execute", manager.contract.encode_abi("claimCredit", args=[]))
    assert manager.credit_of(taker.address) == credit and env.w3.eth.get_balance(taker.address) == 0
    taker._transact("setAttack", b"", False)
    taker._transact("execute", manager.contract.encode_abi("claimCredit", args=[]))
    assert env.w3.eth.get_balance(taker.address) == credit and manager.credit_of(taker.address) == 0
