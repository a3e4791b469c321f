"""``collab claims post|list|show``: post a fraud-provable claim over a job, and inspect claims.

``post`` runs the program on the inputs, commits the trace, stores
everything in the home's fraud-proof store (so ``collab watch`` can defend
the claim and serve its data later, even after a restart) and posts the
claim with the claimer bond. File formats: see :mod:`collab.fraudproof.store`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from eth_utils import is_address, keccak, to_checksum_address

from collab.commands._common import chain_session, emit, kv_table, log, settings
from collab.errors import BadInput, ProtocolViolation

if TYPE_CHECKING:
    from chain.clients.claim_manager import Claim, ClaimManagerClient

group = click.Group("claims", help="Post, list and show on-chain claims.")

AUDIENCES = ("public", "participants", "licensed", "licensed-verifiers")


def parse_claim_id(text: str) -> bytes:
    """A 0x-prefixed or bare 32-byte hex claim id."""
    from collab.fraudproof.store import parse_bytes32

    return parse_bytes32(text, "claim id")


def _manager(ctx: click.Context, need_account: bool = True) -> ClaimManagerClient:
    from chain.clients.claim_manager import ClaimManagerClient

    return chain_session(ctx, need_account=need_account).client(ClaimManagerClient)


def claim_view(claim_id: bytes, c: Claim) -> dict[str, Any]:
    """A claim as plain data (CLI output)."""
    return {
        "claim_id": "0x" + claim_id.hex(),
        "claimer": c.claimer,
        "status": c.status.name.lower(),
        "audience": c.audience.name.lower(),
        "posted_at": c.posted_at,
        "open_challenges": c.open_challenges,
        "step_count": c.step_count,
        "input_root": "0x" + c.input_root.hex(),
        "output_root": "0x" + c.output_root.hex(),
        "trace_root": "0x" + c.trace_root.hex(),
    }


@group.command("post")
@click.argument("program_file", type=click.Path(path_type=Path))
@click.option("--inputs", "inputs_dir", type=click.Path(path_type=Path), required=True, help="Directory of input .safetensors files.")
@click.option("--audience", type=click.Choice(AUDIENCES), default="public", show_default=True, help="Who may fetch data and challenge.")
@click.option("--participant", "participants", multiple=True, help="Participant address (audience participants); repeatable.")
@click.option("--job-id", default=None, help="32-byte hex job id (default: keccak of programRoot and inputRoot).")
@click.option("--asset-id", type=int, default=0, show_default=True, help="Asset the claim is about (licensed audience).")
@click.option("--log2k", type=click.IntRange(1, 4), default=1, show_default=True, help="Dissection arity exponent.")
@click.option("--da-url", default=None, metavar="URL",
              help="This home's blob server (e.g. `collab watch --serve`): published on chain as the claim's daPointer.")
@click.pass_context
def post(
    ctx: click.Context, program_file: Path, inputs_dir: Path, audience: str, participants: tuple[str, ...],
    job_id: str | None, asset_id: int, log2k: int, da_url: str | None,
) -> None:
    """Run PROGRAM_FILE on the inputs and post the claim."""
    from chain.clients.bisection_game import BisectionGameClient
    from chain.clients.claim_manager import Audience, ClaimManagerClient
    from chain.clients.data_availability import DataAvailabilityClient
    from collab.fraudproof.agents import ClaimerAgent
    from collab.fraudproof.store import Store, read_inputs_dir, read_program_file
    from collab.fraudproof.trace import build_trace
    from collab.fraudproof.vm import NoValidOutput

    program = read_program_file(program_file)
    inputs, witnesses = read_inputs_dir(inputs_dir)
    for p in participants:
        if not is_address(p):
            raise BadInput(f"participant {p!r} is not an address")
    try:
        trace = build_trace(program, inputs, witnesses)
    except NoValidOutput as exc:
        raise ProtocolViolation(f"the program has no valid output on these inputs: {exc}") from None
    jid = parse_claim_id(job_id) if job_id else keccak(program.root + trace.input_root)
    session = chain_session(ctx)
    agent = ClaimerAgent(
        session.client(ClaimManagerClient), session.client(BisectionGameClient), session.client(DataAvailabilityClient),
        trace, job_id=jid, log2k=log2k,
    )
    aud = Audience.LICENSED_VERIFIERS if audience.startswith("licensed") else Audience.parse(audience)
    pointer = session.client(DataAvailabilityClient).publish_source(da_url) if da_url else bytes(32)
    kw = {"audience": aud, "participants": [to_checksum_address(p) for p in participants], "asset_id": asset_id,
          "da_pointer": pointer}
    claim = agent.claim_input(**kw)  # type: ignore[arg-type]
    store = Store(settings(ctx).home)
    store.save_job(claim.claim_id, program, inputs, witnesses)  # before posting: the claim must be servable
    log(f"posting claim over {len(program.steps)} steps")
    claim_id = agent.post(**kw)
    data = {
        "claim_id": "0x" + claim_id.hex(), "job_id": "0x" + jid.hex(), "program_root": "0x" + program.root.hex(),
        "input_root": "0x" + trace.input_root.hex(), "output_root": "0x" + trace.output_root.hex(),
        "trace_root": "0x" + trace.root.hex(), "steps": len(program.steps), "audience": aud.name.lower(),
        "da_pointer": "0x" + pointer.hex(), "da_url": da_url,
    }
    emit(ctx, data, kv_table(data, "claim posted"))


@group.command("list")
@click.option("--mine", is_flag=True, help="Only this home's claims.")
@click.pass_context
def list_claims(ctx: click.Context, mine: bool) -> None:
    """Every claim posted on this deployment."""
    session = chain_session(ctx, need_account=mine)
    manager = _manager(ctx, need_account=mine)
    rows = []
    for p in manager.posted(from_block=session.deployment.deploy_block):
        if mine and session.account is not None and p.claimer.lower() != session.account.address.lower():
            continue
        status = manager.claim_status(p.claim_id)
        rows.append({
            "claim_id": "0x" + p.claim_id.hex(), "claimer": p.claimer, "status": status.name.lower(),
            "audience": p.audience.name.lower(), "steps": p.step_count,
        })
    human = "\n".join(f"{r['claim_id']}  {r['status']:<9} {r['audience']:<18} {r['steps']:>6} steps  {r['claimer']}" for r in rows)
    emit(ctx, {"claims": rows}, human or "no claims")


@group.command("show")
@click.argument("claim_id")
@click.pass_context
def show(ctx: click.Context, claim_id: str) -> None:
    """One claim: status, audience, roots."""
    from chain.clients.data_availability import DataAvailabilityClient

    cid = parse_claim_id(claim_id)
    manager = _manager(ctx, need_account=False)
    data = claim_view(cid, manager.get_claim(cid))
    pointer = manager.roots_of(cid).da_pointer
    data["da_pointer"] = "0x" + pointer.hex()
    data["da_url"] = chain_session(ctx, need_account=False).client(DataAvailabilityClient).source_of(pointer)
    emit(ctx, data, kv_table(data, "claim"))
