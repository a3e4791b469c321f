"""Governance end to end on a real anvil: CollabToken votes, CollabGovernor, the timelock.

A ProtocolParams value changes only by proposal -> vote -> queue -> timelock
delay -> execute; every shortcut (direct `set`, scheduling into the timelock,
voting with tokens bought after the snapshot, an admin left on the timelock)
is tried and must fail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import json
import re
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain.client import default_artifacts, deploy_contract
from chain.clients.collab_token import CollabTokenClient, DelegateChanged, format_collab, token_events
from chain.clients.governor import (
    GovernorClient,
    Proposal,
    ProposalCreated,
    ProposalExecuted,
    ProposalNotReady,
    ProposalQueued,
    ProposalState,
    VoteCast,
    VoteSupport,
    decode_param_set,
    description_hash,
    format_seconds,
    governor_events,
    param_set_events,
    propose_call,
    propose_param_change,
)
from chain.clients.protocol_params import ParamSet, ProtocolParamsClient
from chain.clients.timelock import CANCELLER_ROLE, DEFAULT_ADMIN_ROLE, EXECUTOR_ROLE, PROPOSER_ROLE, ZERO_ADDRESS, TimelockClient
from chain.deploy import DEFAULT_PARAMS, Governance, param_key
from chain.deployment import Deployment
from chain.errors import revert_class
from collab.cli import run as collab
from collab.errors import BadInput
from collab.identity import Identity

GOV = Governance()  # what deploy_all uses: 1 day delay, 7 days voting, 2 days timelock, 4% quorum
TOKEN = 10**18
PARAM = "CHALLENGE_WINDOW"


@dataclass
class Gov:
    """Clients of one governance deployment and the accounts that play in it."""

    deployment: Deployment
    token: CollabTokenClient
    governor: GovernorClient
    timelock: TimelockClient
    params: ProtocolParamsClient
    deployer: LocalAccount
    whale: LocalAccount  # 10% of the supply, delegated to itself: alone it meets the 4% quorum
    minnow: LocalAccount  # 1% of the supply, delegated: below quorum on its own
    outsider: LocalAccount  # no tokens, no role

    def param(self, name: str) -> int:
        return self.params.get(name)

    def passed_proposal(self, name: str, value: int, description: str, travel: Callable[[int], int]) -> Proposal:
        """Propose ``name = value`` and vote it through (state: Succeeded)."""
        proposal = propose_param_change(self.params.address, name, value, description)
        self.governor.with_account(self.whale).propose(proposal)
        travel(GOV.voting_delay + 1)
        self.governor.with_account(self.whale).cast_vote(proposal.proposal_id, VoteSupport.FOR)
        travel(GOV.voting_period + 1)
        return proposal


def _key(name: str) -> bytes:
    return bytes.fromhex(param_key(name).removeprefix("0x"))


@pytest.fixture
def gov(w3: Web3, deployment: Deployment, accounts: list[LocalAccount], chain_snapshot: str) -> Gov:
    """The session deployment (deploy_all) plus voters: whale 10%, minnow 1%, each self-delegated."""
    deployer = accounts[0]
    token = CollabTokenClient.from_deployment(deployment, w3, deployer)
    supply = token.total_supply()
    whale, minnow, outsider = accounts[1], accounts[2], accounts[3]
    token.transfer(whale.address, supply // 10)
    token.transfer(minnow.address, supply // 100)
    token.with_account(whale).delegate()
    token.with_account(minnow).delegate()
    params = ProtocolParamsClient.from_deployment(deployment, w3, deployer)
    return Gov(
        deployment=deployment,
        token=token,
        governor=GovernorClient.from_deployment(deployment, w3, deployer),
        timelock=TimelockClient.from_deployment(deployment, w3, deployer),
        params=params,
        deployer=deployer,
        whale=whale,
        minnow=minnow,
        outsider=outsider,
    )


# --------------------------------------------------------------------- token


def test_token_is_collab_with_a_timestamp_clock(gov: Gov, w3: Web3) -> None:
    assert gov.token._call("name") == "Collab"
    assert gov.token._call("symbol") == "COLLAB"
    assert gov.token.clock_mode() == "mode=timestamp"
    assert gov.token.clock() == w3.eth.get_block("latest")["timestamp"]
    assert gov.token.total_supply() == GOV.token_supply
    assert gov.token.votes(gov.whale.address) == GOV.token_supply // 10
    # A balance is not a vote until delegated.
    assert gov.token.balance_of(gov.deployer.address) > 0
    assert gov.token.votes(gov.deployer.address) == 0


def test_delegation_moves_votes_and_decodes_events(gov: Gov) -> None:
    result = gov.token.with_account(gov.minnow).delegate(gov.whale.address)
    changed = [e for e in token_events(result) if isinstance(e, DelegateChanged)]
    assert changed == [DelegateChanged(gov.minnow.address, gov.minnow.address, gov.whale.address)]
    assert gov.token.delegates(gov.minnow.address) == gov.whale.address
    assert gov.token.votes(gov.whale.address) == GOV.token_supply * 11 // 100
    assert gov.token.votes(gov.minnow.address) == 0


def test_permit_approves_by_signature_once(gov: Gov, w3: Web3) -> None:
    deadline = int(w3.eth.get_block("latest")["timestamp"]) + 3_600
    amount = 5 * TOKEN
    nonce = int(gov.token._call("nonces", gov.whale.address))
    signed = gov.whale.sign_typed_data(
        {"name": "Collab", "version": "1", "chainId": w3.eth.chain_id, "verifyingContract": gov.token.address},
        {"Permit": [
            {"name": "owner", "type": "address"}, {"name": "spender", "type": "address"},
            {"name": "value", "type": "uint256"}, {"name": "nonce", "type": "uint256"},
            {"name": "deadline", "type": "uint256"},
        ]},
        {"owner": gov.whale.address, "spender": gov.outsider.address, "value": amount, "nonce": nonce, "deadline": deadline},
    )
    args = (gov.whale.address, gov.outsider.address, amount, deadline, signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big"))
    gov.token.with_account(gov.outsider)._transact("permit", *args)  # anyone may relay it
    assert gov.token._call("allowance", gov.whale.address, gov.outsider.address) == amount
    with pytest.raises(revert_class("ERC2612InvalidSigner")):  # the nonce moved on: no replay
        gov.token.with_account(gov.outsider)._transact("permit", *args)


def test_token_refuses_a_zero_supply(w3: Web3, deployer: LocalAccount, chain_snapshot: str) -> None:
    with pytest.raises(revert_class("InvalidInitialSupply")):
        deploy_contract(w3, deployer, default_artifacts()["CollabToken"], deployer.address, 0)


def test_governor_refuses_a_zero_timelock(gov: Gov, w3: Web3) -> None:
    with pytest.raises(revert_class("InvalidTimelock")):
        deploy_contract(w3, gov.deployer, default_artifacts()["CollabGovernor"], gov.token.address, ZERO_ADDRESS, 1, 10, 0, 4)


def test_governor_fits_the_code_size_limit() -> None:
    code = default_artifacts()["CollabGovernor"].bytecode
    assert (len(code) - 2) // 2 < 24_576


# --------------------------------------------------------------------- wiring


def test_governor_is_wired_as_deployed(gov: Gov) -> None:
    assert gov.governor.token_address() == gov.token.address
    assert gov.governor.timelock_address() == gov.timelock.address
    assert gov.governor.voting_delay() == GOV.voting_delay
    assert gov.governor.voting_period() == GOV.voting_period
    assert gov.governor.proposal_threshold() == GOV.proposal_threshold
    assert gov.timelock.min_delay() == GOV.timelock_delay
    assert gov.params.owner() == gov.timelock.address


def test_timelock_admin_is_renounced_and_the_governor_alone_proposes(gov: Gov) -> None:
    start = gov.deployment.deploy_block
    assert not gov.timelock.has_role(DEFAULT_ADMIN_ROLE, gov.deployer.address)
    # Only the timelock administers itself (role changes need a vote).
    assert gov.timelock.role_holders("admin", start) == [gov.timelock.address]
    assert gov.timelock.role_holders(PROPOSER_ROLE, start) == [gov.governor.address]
    assert gov.timelock.role_holders(CANCELLER_ROLE, start) == [gov.governor.address]
    # Executor role on the zero address: anyone may execute a ready operation.
    assert gov.timelock.has_role(EXECUTOR_ROLE, ZERO_ADDRESS)
    # The former admin cannot hand itself the proposer role back.
    with pytest.raises(revert_class("AccessControlUnauthorizedAccount")):
        gov.timelock._transact("grantRole", PROPOSER_ROLE, gov.deployer.address)


@pytest.mark.parametrize("who", ["deployer", "whale", "outsider"])
def test_only_the_governor_can_schedule_in_the_timelock(gov: Gov, who: str) -> None:
    account: LocalAccount = getattr(gov, who)
    proposal = propose_param_change(gov.params.address, PARAM, 1, "bypass the vote")
    targets, values, calldatas, _ = proposal.args()
    with pytest.raises(revert_class("AccessControlUnauthorizedAccount")) as raised:
        gov.timelock.with_account(account).schedule_batch(targets, values, calldatas, "0x" + "00" * 32, "0x" + "00" * 32, GOV.timelock_delay)
    assert raised.value.error_args["neededRole"] == PROPOSER_ROLE
    assert raised.value.exit_code == 4


@pytest.mark.parametrize("who", ["deployer", "whale", "outsider"])
def test_direct_set_by_anyone_but_the_timelock_reverts(gov: Gov, who: str) -> None:
    account: LocalAccount = getattr(gov, who)
    before = gov.param(PARAM)
    with pytest.raises(revert_class("OwnableUnauthorizedAccount")) as raised:
        gov.params.with_account(account).set(PARAM, 1)
    assert raised.value.error_args["account"] == account.address
    assert gov.param(PARAM) == before


# --------------------------------------------------------------------- proposals


def test_param_change_calldata_round_trips() -> None:
    proposal = propose_param_change("0x" + "11" * 20, PARAM, 7, "desc")
    assert proposal.description_hash == description_hash("desc")
    change = decode_param_set(proposal.targets[0], proposal.calldatas[0])
    assert change is not None and (change.name, change.value) == (PARAM, 7)


def test_param_change_goes_through_vote_queue_and_timelock(gov: Gov, time_travel: Callable[[int], int]) -> None:
    new_value = DEFAULT_PARAMS[PARAM] * 2
    assert gov.param(PARAM) == DEFAULT_PARAMS[PARAM]
    proposal = propose_param_change(gov.params.address, PARAM, new_value, "Double the challenge window")
    pid = proposal.proposal_id
    assert gov.governor.hash_proposal(proposal) == pid

    created = governor_events(gov.governor.with_account(gov.whale).propose(proposal))
    assert isinstance(created[0], ProposalCreated)
    assert created[0].proposal_id == pid and created[0].proposal == proposal and created[0].proposer == gov.whale.address
    assert gov.governor.state(pid) is ProposalState.PENDING
    with pytest.raises(ProposalNotReady, match="voting opens in"):
        gov.governor.advance(pid)

    time_travel(GOV.voting_delay + 1)
    assert gov.governor.state(pid) is ProposalState.ACTIVE
    vote = governor_events(gov.governor.with_account(gov.whale).cast_vote(pid, VoteSupport.FOR, "longer is safer"))
    assert vote == [VoteCast(gov.whale.address, pid, VoteSupport.FOR, GOV.token_supply // 10, "longer is safer")]
    gov.governor.with_account(gov.minnow).cast_vote(pid, VoteSupport.AGAINST)
    with pytest.raises(ProposalNotReady, match="voting closes in"):
        gov.governor.advance(pid)

    time_travel(GOV.voting_period + 1)
    assert gov.governor.state(pid) is ProposalState.SUCCEEDED
    tally = gov.governor.votes(pid)
    assert (tally.for_, tally.against, tally.abstain) == (GOV.token_supply // 10, GOV.token_supply // 100, 0)

    queued = gov.governor.advance(pid)  # anyone may queue and execute: the deployer does
    assert queued.action == "queued" and queued.state is ProposalState.QUEUED
    assert [e for e in governor_events(queued.results[0]) if isinstance(e, ProposalQueued)] == [ProposalQueued(pid, queued.eta)]
    assert queued.eta - queued.now == GOV.timelock_delay
    assert gov.param(PARAM) == DEFAULT_PARAMS[PARAM]
    with pytest.raises(ProposalNotReady, match="executable in") as early:
        gov.governor.advance(pid)
    assert 0 < early.value.details["remaining_seconds"] <= GOV.timelock_delay

    time_travel(GOV.timelock_delay)
    done = gov.governor.advance(pid)
    assert done.action == "executed" and gov.governor.state(pid) is ProposalState.EXECUTED
    events = done.results[-1].events
    assert ProposalExecuted(pid) in governor_events(done.results[-1])
    param_set = [e for e in events if e.name == "ParamSet"]
    assert param_set and param_set[0].args["newValue"] == new_value and param_set[0].address == gov.params.address
    assert param_set_events(done.results[-1]) == [ParamSet(_key(PARAM), DEFAULT_PARAMS[PARAM], new_value)]
    assert gov.param(PARAM) == new_value
    # Executing again is a no-op report, not a second change.
    assert gov.governor.advance(pid).action == "none"


def test_proposal_without_quorum_is_defeated(gov: Gov, time_travel: Callable[[int], int]) -> None:
    proposal = propose_param_change(gov.params.address, PARAM, 1, "Tiny window, tiny turnout")
    pid = proposal.proposal_id
    gov.governor.with_account(gov.minnow).propose(proposal)
    time_travel(GOV.voting_delay + 1)
    gov.governor.with_account(gov.minnow).cast_vote(pid, VoteSupport.FOR)  # 1% for, 0 against
    time_travel(GOV.voting_period + 1)
    info = gov.governor.info(pid, gov.deployment.deploy_block)
    assert info.quorum == GOV.token_supply * GOV.quorum_percent // 100
    assert info.votes.for_ < info.quorum
    assert info.state is ProposalState.DEFEATED
    with pytest.raises(BadInput, match="defeated"):
        gov.governor.advance(pid)
    with pytest.raises(revert_class("GovernorUnexpectedProposalState")):
        gov.governor.queue(proposal)
    assert gov.param(PARAM) == DEFAULT_PARAMS[PARAM]


def test_majority_against_defeats_a_proposal_with_quorum(gov: Gov, time_travel: Callable[[int], int]) -> None:
    proposal = propose_param_change(gov.params.address, PARAM, 1, "Voted down")
    pid = proposal.proposal_id
    gov.governor.with_account(gov.minnow).propose(proposal)
    time_travel(GOV.voting_delay + 1)
    gov.governor.with_account(gov.minnow).cast_vote(pid, VoteSupport.FOR)
    gov.governor.with_account(gov.whale).cast_vote(pid, VoteSupport.AGAINST)
    time_travel(GOV.voting_period + 1)
    assert gov.governor.state(pid) is ProposalState.DEFEATED


def test_votes_bought_after_the_snapshot_do_not_count(gov: Gov, time_travel: Callable[[int], int]) -> None:
    proposal = propose_param_change(gov.params.address, PARAM, 1, "Late whale")
    pid = proposal.proposal_id
    gov.governor.with_account(gov.minnow).propose(proposal)
    time_travel(GOV.voting_delay + 1)
    # The outsider acquires 20% and delegates after the snapshot: its vote weighs nothing.
    gov.token.transfer(gov.outsider.address, GOV.token_supply // 5)
    gov.token.with_account(gov.outsider).delegate()
    vote = governor_events(gov.governor.with_account(gov.outsider).cast_vote(pid, VoteSupport.FOR))
    assert isinstance(vote[0], VoteCast) and vote[0].weight == 0
    time_travel(GOV.voting_period + 1)
    assert gov.governor.state(pid) is ProposalState.DEFEATED


def test_a_voter_cannot_vote_twice(gov: Gov, time_travel: Callable[[int], int]) -> None:
    proposal = propose_param_change(gov.params.address, PARAM, 5, "Vote once")
    pid = proposal.proposal_id
    gov.governor.with_account(gov.whale).propose(proposal)
    time_travel(GOV.voting_delay + 1)
    gov.governor.with_account(gov.whale).cast_vote(pid, VoteSupport.FOR)
    assert gov.governor.has_voted(pid, gov.whale.address)
    with pytest.raises(revert_class("GovernorAlreadyCastVote")):
        gov.governor.with_account(gov.whale).cast_vote(pid, VoteSupport.AGAINST)


def test_proposal_threshold_keeps_holders_without_votes_out(gov: Gov, w3: Web3, time_travel: Callable[[int], int]) -> None:
    threshold = GOV.token_supply // 100  # exactly the minnow's votes
    address, _ = deploy_contract(
        w3, gov.deployer, default_artifacts()["CollabGovernor"], gov.token.address, gov.timelock.address,
        GOV.voting_delay, GOV.voting_period, threshold, GOV.quorum_percent,
    )
    strict = GovernorClient(w3, address, gov.governor.abi, gov.outsider, name="CollabGovernor")
    proposal = propose_param_change(gov.params.address, PARAM, 3, "from nobody")
    with pytest.raises(revert_class("GovernorInsufficientProposerVotes")) as raised:
        strict.propose(proposal)
    assert raised.value.error_args["threshold"] == threshold
    time_travel(1)  # the threshold reads votes one second back: the minnow's delegation must be older
    strict.with_account(gov.minnow).propose(proposal)
    assert strict.state(proposal.proposal_id) is ProposalState.PENDING


def test_the_same_proposal_cannot_be_made_twice(gov: Gov) -> None:
    proposal = propose_param_change(gov.params.address, PARAM, 5, "Once only")
    gov.governor.with_account(gov.whale).propose(proposal)
    with pytest.raises(revert_class("GovernorUnexpectedProposalState")):
        gov.governor.with_account(gov.minnow).propose(proposal)


def test_unknown_proposals_and_params_are_clear_errors(gov: Gov) -> None:
    with pytest.raises(revert_class("GovernorNonexistentProposal")) as raised:
        gov.governor.state(12345)
    assert raised.value.exit_code == 3
    with pytest.raises(BadInput, match="unknown protocol parameter"):
        propose_param_change(gov.params.address, "NOT_A_PARAM", 1)
    with pytest.raises(BadInput, match="uint256"):
        propose_param_change(gov.params.address, PARAM, -1)


def test_propose_call_builds_the_same_proposal_as_propose_param_change(gov: Gov) -> None:
    generic = propose_call(gov.params, "set", _key(PARAM), 9, description="Set CHALLENGE_WINDOW to 9")
    assert generic == propose_param_change(gov.params.address, PARAM, 9)
    assert gov.governor.hash_proposal(generic) == generic.proposal_id


def test_queued_proposal_can_be_executed_by_anyone_once_ready(gov: Gov, time_travel: Callable[[int], int]) -> None:
    proposal = gov.passed_proposal(PARAM, 42, "Anyone executes", time_travel)
    gov.governor.with_account(gov.outsider).queue(proposal)
    with pytest.raises(revert_class("TimelockUnexpectedOperationState")):
        gov.governor.with_account(gov.outsider).execute(proposal)
    time_travel(GOV.timelock_delay)
    gov.governor.with_account(gov.outsider).execute(proposal)
    assert gov.param(PARAM) == 42


def test_format_collab_is_exact() -> None:
    assert format_collab(0) == "0 COLLAB"
    assert format_collab(1_500_000 * TOKEN) == "1,500,000 COLLAB"
    assert format_collab(TOKEN + 1) == "1.000000000000000001 COLLAB"
    assert format_collab(TOKEN // 4) == "0.25 COLLAB"


def test_format_seconds() -> None:
    assert format_seconds(0) == "0s"
    assert format_seconds(-5) == "0s"
    assert format_seconds(93_784) == "1d 2h 3m 4s"
    assert format_seconds(3_600) == "1h"


# --------------------------------------------------------------------- CLI

PASSPHRASE = "governance test passphrase"


@dataclass
class Cli:
    """A home with an identity holding 10% of COLLAB, and the deployment file beside it."""

    home: Path
    address: str
    capsys: pytest.CaptureFixture[str]

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = collab(["--home", str(self.home), *args])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str) -> dict[str, object]:
        code, out, err = self("--json", *args)
        assert code == 0, (out, err)
        return dict(json.loads(out))


@pytest.fixture
def cli(
    gov: Gov, w3: Web3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    home = tmp_path / "home"
    me = Identity.create(home, PASSPHRASE, scrypt_n=2**12)
    gov.deployment.save(home / "deployment.json")
    monkeypatch.setenv("COLLAB_PASSPHRASE", PASSPHRASE)
    for var in ("COLLAB_DEPLOYMENT", "COLLAB_RPC_URL"):
        monkeypatch.delenv(var, raising=False)
    w3.provider.make_request("anvil_setBalance", [me.address, hex(10**20)])  # type: ignore[arg-type]
    gov.token.transfer(me.address, GOV.token_supply // 10)
    return Cli(home, me.address, capsys)


def test_cli_param_change_from_proposal_to_execution(cli: Cli, gov: Gov, time_travel: Callable[[int], int]) -> None:
    delegated = cli.json("gov", "delegate")
    assert delegated["delegate"] == cli.address
    assert cli.json("gov", "votes")["votes"] == str(GOV.token_supply // 10)

    created = cli.json("gov", "propose", "--param", "challenge_window", "--value", "7200", "--description", "Two hours")
    pid = str(created["proposal_id"])
    assert created["param"] == PARAM and created["value"] == "7200"
    code, _, err = cli("gov", "vote", pid, "--support", "for")
    assert code == 2 and "opens in" in err

    time_travel(GOV.voting_delay + 1)
    voted = cli.json("gov", "vote", pid, "--support", "for", "--reason", "cli")
    assert voted["weight"] == str(GOV.token_supply // 10)
    code, _, err = cli("gov", "execute", pid)
    assert code == 2 and err.startswith("error: ") and "voting closes in" in err

    shown = cli.json("gov", "show", pid)
    assert shown["state"] == "active"
    assert shown["param_changes"] == [{"target": gov.params.address, "name": PARAM, "key": param_key(PARAM), "value": "7200"}]
    assert shown["votes"] == {"for": str(GOV.token_supply // 10), "against": "0", "abstain": "0"}

    time_travel(GOV.voting_period + 1)
    queued = cli.json("gov", "execute", pid)
    assert queued["action"] == "queued" and queued["state"] == "queued"
    code, out, err = cli("gov", "execute", pid)
    assert code == 2 and re.search(r"executable in (2d|1d 23h 59m)", err) and out == ""
    code, out, _ = cli("gov", "show", pid)
    assert code == 0 and "queued" in out and "set CHALLENGE_WINDOW = 7200" in out

    time_travel(GOV.timelock_delay)
    code, out, _ = cli("gov", "execute", pid)
    assert code == 0 and f"proposal {pid} executed" in out and f"{PARAM}: {DEFAULT_PARAMS[PARAM]} -> 7200" in out
    assert gov.param(PARAM) == 7200
    assert cli.json("gov", "show", pid)["state"] == "executed"


def test_cli_errors_are_one_line_with_exit_codes(cli: Cli, gov: Gov, time_travel: Callable[[int], int]) -> None:
    code, _, err = cli("gov", "propose", "--param", "NOPE", "--value", "1", "--description", "x")
    assert code == 2 and "unknown protocol parameter 'NOPE'" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("gov", "propose", "--param", PARAM, "--value", "ten", "--description", "x")
    assert code == 2 and "--value must be an integer" in err
    code, _, err = cli("gov", "show", "12345")
    assert code == 3 and "no proposal 12345" in err
    code, _, err = cli("gov", "vote", "notanid", "--support", "for")
    assert code == 2
    code, _, err = cli("gov", "vote", "1", "--support", "maybe")
    assert code == 1
    code, out, _ = cli("--json", "gov", "execute", "12345")
    assert code == 3 and json.loads(out)["exit_code"] == 3

    # A vote without delegated power is accepted with weight 0, and the CLI says why.
    proposal = propose_param_change(gov.params.address, PARAM, 9, "weightless")
    gov.governor.with_account(gov.whale).propose(proposal)
    time_travel(GOV.voting_delay + 1)
    code, out, err = cli("gov", "vote", str(proposal.proposal_id), "--support", "against")
    assert code == 0 and "weight 0" in out and "no voting power" in err
    time_travel(GOV.voting_period + 1)
    code, _, err = cli("gov", "vote", str(proposal.proposal_id), "--support", "for")
    assert code == 2 and "defeated: voting is closed" in err
    code, _, err = cli("gov", "execute", str(proposal.proposal_id))
    assert code == 2 and "can never execute" in err
