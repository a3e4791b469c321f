"""A claimed merge: run the merge as a fraud-proof program, store it, record it, post the claim.

Steps (``collab merge run CONFIG --claim``):

1. the merge's program is built over the committed (quantised) inputs
   (:mod:`collab.merge.programs`) and executed; every step is committed;
2. the **dequantised VM output** is written as the merged model directory
   (``config.json`` + ``model.safetensors``, float32, exact: see
   :mod:`collab.merge.programs`), and ``model.safetensors`` goes into the
   merger's vault: its blob's sha256 is the asset's ``contentHash``, the VM
   output root its ``commitmentRoot``;
3. the job (inputs, weights, the merger's Share fraction, what to register) is
   recorded in ``MergeRegistry``, which checks every input on-chain again;
4. the program, inputs and witnesses are stored in the home's fraud-proof
   store (the blob server and ``collab watch`` serve and defend the claim
   from it), then the claim is posted with ``MergeRegistry`` as settlement
   hook and, by default, as participant registry (audience: the merger and
   the input owners).

Nothing is minted until the claim finalizes; a rejected claim mints nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from eth_utils import keccak

from collab.errors import BadInput
from collab.fraudproof.trace import Trace
from collab.merge.assets import CONFIG_METADATA_KEY
from collab.merge.mergekit_merge import check_out_dir, staging_dir
from collab.merge.programs import MergePlan, output_state, output_values, state_bundle

WEIGHT_SCALE = 10**6  # merge weights are recorded on-chain as integers (ratios are what count)


@dataclass
class ClaimedOutput:
    """The executed plan: trace, where the dequantised output went, and its digest."""

    plan: MergePlan
    trace: Trace
    out_dir: Path
    weights_sha256: str
    seconds: dict[str, float] = field(default_factory=dict)


def execute(plan: MergePlan, out_dir: Path | str, config_source: Path) -> ClaimedOutput:
    """Run and commit the plan's program; write the dequantised output as a transformers model directory."""
    import hashlib

    from safetensors.torch import save_file

    out = check_out_dir(out_dir)
    config_path = Path(config_source) / "config.json"
    if not config_path.is_file():
        raise BadInput(f"{config_source} has no config.json for the merged model")
    t0 = time.perf_counter()
    trace = plan.job.trace()
    t1 = time.perf_counter()
    value = trace.outputs[-1].value
    state = {k: v.contiguous() for k, v in output_state(value, plan.job.like or {}).items()}
    config_text = config_path.read_text(encoding="utf-8")
    with staging_dir(out) as stage:
        save_file(state, str(stage / "model.safetensors"),
                  metadata={"format": "pt", CONFIG_METADATA_KEY: config_text})
        (stage / "config.json").write_text(config_text, encoding="utf-8")
    digest = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    return ClaimedOutput(plan, trace, out, digest, {"trace": t1 - t0, "write": time.perf_counter() - t1})


def job_id_for(merger: str, plan: MergePlan, trace: Trace) -> bytes:
    """Deterministic job id: the same merger re-running the same merge gets the same (refused) claim."""
    return keccak(b"collab/merge/v1" + bytes.fromhex(merger.removeprefix("0x")) + plan.job.program.root + trace.input_root)


def merge_inputs(plan: MergePlan) -> list[tuple[int, int]]:
    """(asset id or 0 for a local model, integer weight) per input, for MergeRegistry."""
    out = []
    for ref, w in zip(plan.refs, plan.weights):
        if w <= 0:
            raise BadInput(f"{ref.label}: a claimed merge attributes Shares by weight, so weights must be positive")
        out.append((ref.asset_id or 0, max(1, round(w * WEIGHT_SCALE))))
    return out


def verify_artifact(out_dir: Path, trace: Trace) -> bool:
    """Re-quantise the stored file at the program's output headers: equal to the claim's output root?"""
    from safetensors.torch import load_file

    from collab.fraudproof.commitments import name_hash
    from collab.fraudproof.trace import commit_value
    from collab.merge.programs import quantise

    state = load_file(str(Path(out_dir) / "model.safetensors"))
    by_hash = {name_hash(n): n for n in state}
    outputs = output_values(trace.outputs[-1].value)
    if set(by_hash) != set(outputs):
        return False
    values = {by_hash[h]: quantise(state[by_hash[h]], v.header.frac_bits) for h, v in outputs.items()}
    return commit_value(state_bundle(values)).root == trace.output_root


@dataclass(frozen=True)
class PostedMerge:
    """What a claimed merge left on-chain and in the home."""

    claim_id: bytes
    job_id: bytes
    content_hash: bytes
    vault_uri: str
    parents: tuple[int, ...]
    contributors: tuple[str, ...]
    weights: tuple[int, ...]
    audience: str


def record_and_post(
    output: ClaimedOutput, *, merger: Any, home: Path, vault: Any, manager: Any, game: Any, data: Any,
    registry: Any, audience: str = "participants", verify_asset: int = 0, merger_share_bps: int = 0,
    royalty_bps: int = 0, kind: str = "model", overrides: Any = None,
) -> PostedMerge:
    """Vault the output, record the job in MergeRegistry, store the job, post the claim (hook: the registry).

    ``merger`` is the signing account; ``vault`` the merger's :class:`~collab.vault.Vault`;
    ``manager``/``game``/``data``/``registry`` the ClaimManager, BisectionGame,
    DataAvailability and MergeRegistry clients acting as the merger.
    ``overrides`` (tests only) are the wrong step outputs of a cheating
    claimer's trace, stored so its watcher can serve and defend them.
    """
    from chain.clients.asset_registry import AssetKind
    from chain.clients.claim_manager import Audience
    from chain.clients.merge_registry import MergedAsset, MergeInput
    from collab.fraudproof.agents import ClaimerAgent
    from collab.fraudproof.store import Store

    plan, trace = output.plan, output.trace
    aud = Audience.LICENSED_VERIFIERS if audience.startswith("licensed") else Audience.parse(audience)
    claim_kw: dict[str, Any] = {"audience": aud, "settlement_hook": registry.address}
    if aud == Audience.LICENSED_VERIFIERS:
        if not verify_asset:
            raise BadInput("the licensed-verifiers audience needs an asset whose licensees verify (--verify-asset)")
        claim_kw["asset_id"] = verify_asset
    inputs = [MergeInput(a, w) for a, w in merge_inputs(plan)]
    base_asset = plan.base.asset_id if plan.base is not None and plan.base.asset_id is not None else 0
    entry = vault.put(output.out_dir / "model.safetensors")
    job_id = job_id_for(merger.address, plan, trace)
    asset = MergedAsset(entry.content_hash, entry.key_commitment or b"\x00" * 32, entry.uri, AssetKind.parse(kind),
                        royalty_bps)
    recorded = registry.record(job_id, plan.job.program.root, trace.input_root, trace.output_root, inputs, asset,
                               base_asset_id=base_asset, merger_share_bps=merger_share_bps)
    agent = ClaimerAgent(manager, game, data, trace, job_id=job_id)
    claim = agent.claim_input(**claim_kw)
    if aud == Audience.PARTICIPANTS:
        claim = replace(claim, participant_registry=registry.address)
    if claim.claim_id != recorded.claim_id:
        raise BadInput("MergeRegistry names a different claim id than the one about to be posted")
    Store(home).save_job(claim.claim_id, plan.job.program, plan.job.inputs, plan.job.witnesses, overrides)  # servable first
    posted = manager.post_claim(claim)
    return PostedMerge(posted.claim_id, job_id, entry.content_hash, entry.uri, recorded.parents, recorded.contributors,
                       recorded.weights, aud.name.lower())


def describe(output: ClaimedOutput) -> dict[str, Any]:
    """Plain data about an executed claimed merge (CLI output)."""
    trace = output.trace
    return {
        "program_root": "0x" + output.plan.job.program.root.hex(),
        "input_root": "0x" + trace.input_root.hex(),
        "output_root": "0x" + trace.output_root.hex(),
        "steps": len(output.plan.job.program.steps),
        "weights_sha256": output.weights_sha256,
        "seconds": {k: round(v, 3) for k, v in output.seconds.items()},
    }


__all__ = ["WEIGHT_SCALE", "ClaimedOutput", "PostedMerge", "record_and_post", "describe", "execute", "job_id_for", "merge_inputs", "verify_artifact"]
