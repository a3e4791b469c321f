"""``collab infer ASSET_ID --text "..."``: licensed, metered, private inference on an asset.

Without ``--owner-home`` the call goes through this home's node
(:func:`collab.commands._route.via_node`), which submits it to the
orchestrator and runs the client's CrypTen party against the owner's node
(``--mode mpc``, two parties; docs/orchestrator.md). With ``--owner-home`` the
owner's side runs from the owner's home on this machine: its config says which
model serves the asset, its account posts the call receipts, its SQLite
ledgers hold the ε spent; the parties are still separate processes (CrypTen
over gloo/TCP, or the CKKS owner process). Two-party ``mpc`` calls are served
by the model's persistent owner party (:mod:`collab.mpc.persistent`: kept by
the owner's node across calls; with ``--owner-home`` it lives as long as this
process). Exit codes: 3 unknown asset, 4 not licensed or over the privacy
budget, 5 chain or a party unavailable (an owner party killed mid-call too).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from collab.commands._common import chain_session, emit, log, settings
from collab.errors import NotFound, UsageError

if TYPE_CHECKING:
    from collab.commands._common import ChainSession
    from collab.mpc.service import InferRequest, InferResult, OwnerNode

ENV_OWNER_PASSPHRASE = "COLLAB_OWNER_PASSPHRASE"


@click.command("infer")
@click.argument("asset_id", type=click.IntRange(min=1))
@click.option("--text", "texts", multiple=True, required=True, help="Input sentence (repeatable: a batch).")
@click.option("--mode", type=click.Choice(["mpc", "he", "plain"]), default="mpc", show_default=True,
              help="mpc: secret-shared encoder; he: CKKS head over a public encoder; plain: the owner sees the text.")
@click.option("--parties", type=click.Choice(["2", "3"]), default="2", show_default=True,
              help="3 adds an independent compute process that deals CrypTen's tuples (TTP).")
@click.option("--preprocessing", type=click.Choice(["he", "dealer"]), default="he", show_default=True,
              help="2 parties: tuples from the two-party BFV protocol (he) or CrypTen's dealer (benchmarks).")
@click.option("--approx", type=click.Choice(["cheap", "exact"]), default="cheap", show_default=True,
              help="mpc: cheap = one-comparison GELU, packed sign tests, softmax max in layer 0 only (calibrated on "
                   "MiniLM, mean cosine >= 0.9999); exact = CrypTen's recipes (max per row, 3-comparison GELU).")
@click.option("--dp-epsilon", type=float, default=None, help="Per-query ε of the owner's output noise.")
@click.option("--dp-mechanism", type=click.Choice(["gaussian", "laplace"]), default="gaussian", show_default=True)
@click.option("--seq-len", type=click.IntRange(2, 512), default=16, show_default=True,
              help="Public padded length (hides the true length).")
@click.option("--owner-home", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The asset owner's home, serving the call in this process (without it the call goes through this home's node).")
@click.option("--compute-party", "compute_parties", multiple=True, metavar="ADDRESS",
              help="Address of the third compute node credited its fee share (3 parties).")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds before the job is failed.")
@click.option("--claim", "claim", is_flag=True,
              help="plain only: the owner also runs the encoder in the fraud-proof VM and posts each output as a "
                   "claim (its data, weights and tokens included, goes to the asset's licensed verifiers).")
@click.option("--da-url", default=None, metavar="URL",
              help="With --claim: the owner's blob server (e.g. `collab watch --serve`), published on chain as the claims' daPointer.")
@click.pass_context
def group(ctx: click.Context, asset_id: int, texts: tuple[str, ...], mode: str, parties: str, preprocessing: str,
          approx: str, dp_epsilon: float | None, dp_mechanism: str, seq_len: int, owner_home: Path | None,
          compute_parties: tuple[str, ...], timeout: float, claim: bool, da_url: str | None) -> None:
    """Run inference on ASSET_ID; the output goes to this home's identity alone."""
    from collab.config import Settings
    from collab.identity import Identity
    from collab.mpc.service import InferRequest, OwnerNode, run_inference

    request = InferRequest(asset_id, tuple(texts), mode, int(parties), preprocessing,  # type: ignore[arg-type]
                           dp_epsilon, dp_mechanism, seq_len, timeout, approx)  # type: ignore[arg-type]
    if claim and mode != "plain":
        raise UsageError("--claim needs --mode plain: only the owner's plaintext run can be re-executed by verifiers")
    if da_url is not None and not claim:
        raise UsageError("--da-url is for --claim")
    if owner_home is None:  # routed: this home's node -> the orchestrator -> the asset owner's node
        from collab.commands._route import NO_NODE, via_node

        if mode != "mpc" or parties != "2" or claim:
            raise UsageError("a node routes --mode mpc with 2 parties; use --owner-home for other modes and --claim")
        routed = via_node(ctx, "infer", {
            "asset_id": asset_id, "texts": list(texts), "mode": mode, "parties": 2, "preprocessing": preprocessing,
            "dp_epsilon": dp_epsilon, "dp_mechanism": dp_mechanism, "seq_len": seq_len, "timeout": timeout,
            "approx": approx}, timeout=timeout + 120, missing=f"{NO_NODE}, or pass --owner-home with the asset owner's home",
            note=f"infer: asset {asset_id} via this home's node ({preprocessing} preprocessing)")
        emit(ctx, routed, _human(routed))
        return
    session = chain_session(ctx)  # exit 5 when the chain is down
    conf = settings(ctx)
    owner_conf = Settings.resolve(home=owner_home, deployment=conf.deployment_path)
    if not Identity.exists(owner_conf.home):
        raise NotFound(f"no identity in the owner's home {owner_conf.home}")
    passphrase = os.environ.get(ENV_OWNER_PASSPHRASE) or owner_conf.passphrase(prompt="Owner passphrase")
    owner_account = Identity.load(owner_conf.home, passphrase).account
    owner = OwnerNode.from_home(owner_conf, session.w3, session.deployment, owner_account)
    owner.compute_parties = tuple(compute_parties)
    assert session.account is not None
    log(f"infer: asset {asset_id}, mode {mode}" + (f", {parties} parties, {preprocessing} preprocessing"
                                                    if mode == "mpc" else ""))
    result = run_inference(owner, session.account, request, client_home=conf.ensure_home())
    data = result.to_json()
    if claim:
        data["claims"] = _post_claims(session, owner, result, request, da_url)
    emit(ctx, data, _human(data))


def _post_claims(session: ChainSession, owner: OwnerNode, result: InferResult, request: InferRequest,
                 da_url: str | None) -> list[dict[str, object]]:
    """``--claim``: the owner's VM run of the served encoder on each text, stored and posted as claims."""
    from collab.fraudproof.inference import encoder_jobs, post_inference_claims

    served = owner.served(owner.assets().asset(request.asset_id))
    log(f"infer: running the encoder in the fraud-proof VM for {len(request.texts)} claim(s)")
    jobs = encoder_jobs(served.model_dir, request.texts, request.seq_len)
    plain_embedding = result.labels is None and result.dp is None  # else the served output is not the embedding
    assert session.account is not None
    claims = post_inference_claims(
        session.w3, session.deployment, owner.account, owner.settings.home, request.asset_id,
        session.account.address, jobs, served=result.outputs if plain_embedding else None, da_url=da_url,
    )
    return [c.to_json() for c in claims]


def _human(data: dict[str, object]) -> str:
    lines = []
    labels = data.get("labels")
    for i, out in enumerate(data["outputs"]):  # type: ignore[attr-defined]
        head = f"[{i}] class {labels[i]}: " if labels else f"[{i}] embedding ({len(out)} dims): "  # type: ignore[index]
        lines.append(head + " ".join(f"{v:+.4f}" for v in out[:8]) + (" …" if len(out) > 8 else ""))
    lic = data["license"]
    lines.append(f"license: {lic['kind']}" + (f" #{lic['license_id']}, {lic['calls_left']} call(s) covered"  # type: ignore[index]
                                               if lic["kind"] == "api" else ""))  # type: ignore[index]
    if data.get("dp"):
        dp = data["dp"]
        lines.append(f"dp: {dp['mechanism']} ε={dp['epsilon']:g} scale={dp['scale']:.4g}; "  # type: ignore[index]
                     f"spent ε={dp['spent_licensee']:g} (you), ε={dp['spent_asset']:g} (asset)")  # type: ignore[index]
    for p in data.get("posted") or []:  # type: ignore[attr-defined]
        lines.append(f"receipt posted: license {p['license_id']} calls {p['calls']} paid {p['amount']} wei")
    for c in data.get("claims") or []:  # type: ignore[attr-defined]
        lines.append(f"claim posted: {c['claim_id']} (text {c['text_index']}, {c['steps']} steps, output {c['output_root']})")
    return "\n".join(lines)
