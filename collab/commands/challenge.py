"""``collab challenge CLAIM``: re-execute one claim now and challenge it if it is wrong.

The same logic as one ``collab watch`` pass restricted to one claim: fetch
the claim's data from ``--source`` blob servers (or this home's store), rerun
the program, challenge on a mismatch. The game is then played by ``collab
watch``, which finds it in the same SQLite state.
"""

from __future__ import annotations

from typing import Any

import click

from collab.commands._common import chain_session, emit, log, settings
from collab.commands._route import via_node
from collab.commands.claims import parse_claim_id


@click.command("challenge")
@click.argument("claim_id")
@click.option("--source", "sources", multiple=True, help="Blob server URL of the claimer; repeatable.")
@click.pass_context
def challenge(ctx: click.Context, claim_id: str, sources: tuple[str, ...]) -> None:
    """Challenge CLAIM_ID if re-execution disagrees with it."""
    from collab.fraudproof.watcher import Watcher

    cid = parse_claim_id(claim_id)

    def here() -> dict[str, Any]:
        log("no node is running for this home: re-executing here (start `collab node start` to have its watcher play the game)")
        session = chain_session(ctx)
        assert session.account is not None
        watcher = Watcher(session.w3, session.deployment, session.account, settings(ctx).home, sources)
        try:
            posted = watcher.manager.posted_event(cid)
            events = watcher.challenge_one(cid, posted.claimer)
            verdict, detail = watcher.verdicts().get(cid, ("unknown", ""))
            games = [g.game_id for g in watcher.games() if g.claim_id == cid and g.role == "challenger"]
        finally:
            watcher.close()
        return {"claim_id": "0x" + cid.hex(), "verdict": verdict, "detail": detail, "games": games, "events": events}

    # the node's watcher owns this home's game state and account: it challenges and plays
    data = via_node(ctx, "challenge", {"claim_id": "0x" + cid.hex()}, timeout=180, local=here)
    emit(ctx, {k: v for k, v in data.items() if k != "events"}, "\n".join(data["events"]) or f"{data['verdict']} {data['detail']}")

group = challenge
