"""``collab gov propose|vote|execute|show|delegate|votes``: governance of the protocol parameters.

Thin wrappers over :mod:`chain.clients.governor` and friends. Proposal ids
are uint256 hashes, so they are printed (and accepted) as decimal strings;
every wait is reported in chain time, which is what the contracts check.
"""

from __future__ import annotations

from typing import Any

import click

from collab.commands._common import chain_session, emit, log
from collab.errors import BadInput

group = click.Group("gov", help="Propose, vote on and execute governance proposals.")


def _proposal_id(text: str) -> int:
    try:
        value = int(text.strip(), 0)
    except ValueError:
        raise BadInput(f"proposal id must be an integer (decimal or 0x-hex), got {text!r}") from None
    if value < 0:
        raise BadInput(f"proposal id must be non-negative, got {text!r}")
    return value


def _uint(text: str, what: str) -> int:
    try:
        value = int(text.strip().replace("_", ""), 0)
    except ValueError:
        raise BadInput(f"{what} must be an integer (decimal or 0x-hex), got {text!r}") from None
    if value < 0:
        raise BadInput(f"{what} must be non-negative, got {text!r}")
    return value


def _changes_text(info_json: dict[str, Any]) -> str:
    lines = [f"  set {c['name'] or c['key']} = {c['value']}  ({c['target']})" for c in info_json["param_changes"]]
    other = len(info_json["calls"]) - len(info_json["param_changes"])
    if other:
        lines.append(f"  + {other} other call(s)")
    return "\n".join(lines)


@group.command("propose")
@click.option("--param", "name", required=True, metavar="NAME", help="Governed parameter, e.g. CHALLENGE_WINDOW.")
@click.option("--value", "value_text", required=True, metavar="N", help="New value (integer).")
@click.option("--description", required=True, help="What and why; part of the proposal id.")
@click.pass_context
def propose(ctx: click.Context, name: str, value_text: str, description: str) -> None:
    """Propose setting one ProtocolParams value (executed by the timelock if it passes)."""
    from chain.clients.governor import GovernorClient, ProposalCreated, format_seconds, governor_events, propose_param_change

    session = chain_session(ctx)
    governor = session.client(GovernorClient)
    param, value = name.strip().upper(), _uint(value_text, "--value")
    proposal = propose_param_change(session.deployment.address("ProtocolParams"), param, value, description)
    result = governor.propose(proposal)
    created = next(e for e in governor_events(result) if isinstance(e, ProposalCreated))
    now = governor.clock()
    pid = str(created.proposal_id)
    data = {
        "proposal_id": pid,
        "proposer": created.proposer,
        "param": param,
        "value": str(value),
        "description": description,
        "vote_start": created.vote_start,
        "vote_end": created.vote_end,
        "tx_hash": result.tx_hash,
    }
    emit(ctx, data, (
        f"proposal {pid} created: set {data['param']} to {data['value']}\n"
        f"voting opens in {format_seconds(created.vote_start + 1 - now)} and closes in {format_seconds(created.vote_end + 1 - now)}\n"
        f"vote with `collab gov vote {pid} --support for|against|abstain`"
    ))


@group.command("vote")
@click.argument("proposal_id")
@click.option("--support", required=True, type=click.Choice(["for", "against", "abstain"], case_sensitive=False),
              help="Your vote.")
@click.option("--reason", default="", help="Optional reason, recorded in the VoteCast event.")
@click.pass_context
def vote(ctx: click.Context, proposal_id: str, support: str, reason: str) -> None:
    """Vote on an active proposal with your voting power at its snapshot."""
    from chain.clients.collab_token import format_collab
    from chain.clients.governor import GovernorClient, VoteCast, VoteSupport, governor_events

    pid = _proposal_id(proposal_id)
    session = chain_session(ctx)
    governor = session.client(GovernorClient)
    governor.require_active(pid)
    result = governor.cast_vote(pid, VoteSupport.parse(support), reason)
    cast = next(e for e in governor_events(result) if isinstance(e, VoteCast))
    if cast.weight == 0:
        log("warning: you had no voting power at this proposal's snapshot (delegate with `collab gov delegate` before proposals start)")
    tally = governor.votes(pid)
    data = {
        "proposal_id": str(pid),
        "voter": cast.voter,
        "support": cast.support.name.lower(),
        "weight": str(cast.weight),
        "votes": {"for": str(tally.for_), "against": str(tally.against), "abstain": str(tally.abstain)},
        "tx_hash": result.tx_hash,
    }
    emit(ctx, data, (
        f"voted {data['support']} on proposal {pid} with {format_collab(cast.weight)} (weight {cast.weight})\n"
        f"tally: for {format_collab(tally.for_)}, against {format_collab(tally.against)}, abstain {format_collab(tally.abstain)}"
    ))


@group.command("execute")
@click.argument("proposal_id")
@click.pass_context
def execute(ctx: click.Context, proposal_id: str) -> None:
    """Queue a passed proposal in the timelock, and execute it once the delay has passed."""
    from chain.clients.governor import GovernorClient, format_seconds, param_set_events

    pid = _proposal_id(proposal_id)
    session = chain_session(ctx)
    governor = session.client(GovernorClient)
    outcome = governor.advance(pid, session.deployment.deploy_block)
    changes = [c for r in outcome.results for c in param_set_events(r)]
    data = {
        "proposal_id": str(pid),
        "action": outcome.action,
        "state": outcome.state.label,
        "eta": outcome.eta,
        "now": outcome.now,
        "tx_hashes": [r.tx_hash for r in outcome.results],
        "param_changes": [{"name": c.name, "key": "0x" + c.key.hex(), "old": str(c.old_value), "new": str(c.new_value)} for c in changes],
    }
    if outcome.action == "queued":
        human = f"proposal {pid} queued in the timelock: executable in {format_seconds(outcome.eta - outcome.now)}; run this command again then"
    elif outcome.action == "executed":
        human = f"proposal {pid} executed" + "".join(f"\n  {c.name}: {c.old_value} -> {c.new_value}" for c in changes)
    else:
        human = f"proposal {pid} was already executed"
    emit(ctx, data, human)


@group.command("show")
@click.argument("proposal_id")
@click.pass_context
def show(ctx: click.Context, proposal_id: str) -> None:
    """Show a proposal: state, calls, tally, quorum and what happens next."""
    from chain.clients.collab_token import format_collab
    from chain.clients.governor import GovernorClient

    pid = _proposal_id(proposal_id)
    session = chain_session(ctx, need_account=False)
    governor = session.client(GovernorClient)
    info = governor.info(pid, session.deployment.deploy_block).to_json()
    votes = {k: format_collab(int(v)) for k, v in info["votes"].items()}
    quorum = format_collab(int(info["quorum"])) if info["quorum"] is not None else "(known after the snapshot)"
    emit(ctx, info, (
        f"proposal {info['proposal_id']}: {info['state']}\n"
        f"  {info['description']}\n"
        f"{_changes_text(info)}\n"
        f"proposer: {info['proposer']}\n"
        f"votes: for {votes['for']}, against {votes['against']}, abstain {votes['abstain']}; quorum {quorum}\n"
        f"next: {info['next']}"
    ))


@group.command("delegate")
@click.option("--to", "delegatee", default=None, metavar="ADDRESS", help="Delegate to this address (default: yourself).")
@click.pass_context
def delegate(ctx: click.Context, delegatee: str | None) -> None:
    """Turn your COLLAB balance into voting power (for yourself or a delegate)."""
    from eth_utils import is_address, to_checksum_address

    from chain.clients.collab_token import CollabTokenClient, format_collab

    if delegatee is not None and not is_address(delegatee):
        raise BadInput(f"--to: {delegatee!r} is not an address")
    session = chain_session(ctx)
    token = session.client(CollabTokenClient)
    me = token.account.address if token.account is not None else ""
    result = token.delegate(to_checksum_address(delegatee) if delegatee else None)
    balance = token.balance_of(me)
    data = {"delegator": me, "delegate": token.delegates(me), "balance": str(balance), "tx_hash": result.tx_hash}
    emit(ctx, data, f"{me} now delegates the voting power of {format_collab(balance)} to {data['delegate']}")


@group.command("votes")
@click.argument("address", required=False)
@click.pass_context
def votes(ctx: click.Context, address: str | None) -> None:
    """Show the COLLAB balance, delegate and voting power of ADDRESS (default: yours)."""
    from eth_utils import is_address, to_checksum_address

    from chain.clients.collab_token import CollabTokenClient, format_collab

    if address is not None and not is_address(address):
        raise BadInput(f"{address!r} is not an address")
    session = chain_session(ctx, need_account=address is None)
    who = to_checksum_address(address) if address else str(getattr(session.account, "address", ""))
    token = session.client(CollabTokenClient)
    balance, power = token.balance_of(who), token.votes(who)
    data = {"address": who, "balance": str(balance), "delegate": token.delegates(who), "votes": str(power)}
    emit(ctx, data, f"{who}\n  balance:  {format_collab(balance)}\n  delegate: {data['delegate']}\n  votes:    {format_collab(power)}")
