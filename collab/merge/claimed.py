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
from collab.fraudproof.known_roots import KnownRoots
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


def execute(plan: MergePlan, out_dir: Path | str, config_source: Path | None,
            roots: KnownRoots | None = None) -> ClaimedOutput:
    """Run and commit the plan's program; write the dequantised output as a transformers model directory.

    ``config_source=None`` (adapters merged by the orchestrator) writes the
    weights without an architecture ``config.json``. ``roots`` (the home's
    cache) supplies the roots of inputs an earlier claim hashed and learns
    the others'.
    """
    import hashlib

    from collab.merge.blocked import write_state

    out = check_out_dir(out_dir)
    config_path = Path(config_source) / "config.json" if config_source is not None else None
    if config_path is not None and not config_path.is_file():
        raise BadInput(f"{config_source} has no config.json for the merged model")
    config_text = config_path.read_text(encoding="utf-8") if config_path is not None else None
    written: dict[str, Any] = {}

    def write(value: Any) -> None:
        """Dequantise and store the output while the commit threads hash (build_trace's ``executed``)."""
        t = time.perf_counter()
        state = {k: v.contiguous() for k, v in output_state(value, plan.job.like or {}).items()}
        digest = hashlib.sha256()  # fed as the file is written: no copy of the tensors, no second read
        with staging_dir(out) as stage:
            meta = {"format": "pt"} | ({CONFIG_METADATA_KEY: config_text} if config_text is not None else {})
            write_state(stage / "model.safetensors", state, meta, digest)
            if config_text is not None:
                (stage / "config.json").write_text(config_text, encoding="utf-8")
        written["sha256"] = digest.hexdigest()
        written["seconds"] = time.perf_counter() - t

    t0 = time.perf_counter()
    known = roots.committed(plan.job.inputs, plan.sources) if roots is not None else {}
    trace = plan.job.trace(executed=write, known=known)
    seconds = {"trace": time.perf_counter() - t0, "write": written["seconds"]}
    if roots is not None:
        roots.remember(trace, plan.job.inputs, {n: k for n, k in plan.sources.items() if n not in known})
    return ClaimedOutput(plan, trace, out, written["sha256"], seconds | {"inputs_known": len(known)})


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
    claim, recorded = prepare_claim(output, merger=merger, home=home, vault=vault, registry=registry,
                                    audience=audience, verify_asset=verify_asset, merger_share_bps=merger_share_bps,
                                    royalty_bps=royalty_bps, kind=kind, overrides=overrides)
    posted = manager.post_claim(claim)
    return replace(recorded, claim_id=posted.claim_id)


def prepare_claim(
    output: ClaimedOutput, *, merger: Any, home: Path, vault: Any, registry: Any, audience: str = "participants",
    verify_asset: int = 0, merger_share_bps: int = 0, royalty_bps: int = 0, kind: str = "model",
    overrides: Any = None, job_id: bytes | None = None,
) -> tuple[Any, PostedMerge]:
    """Everything before posting: vault the output, record the job in MergeRegistry, store the job; the claim input.

    Why separate: the orchestrator posts through its own ``claim`` job (so a
    restart never double-posts), the CLI posts at once (:func:`record_and_post`).
    Repeatable: an already recorded ``job_id`` (a restarted orchestrator) is
    read back instead of recorded again, and the vault entry of the same
    output is reused. ``job_id`` defaults to :func:`job_id_for`. ``registry=None``
    (a chain without MergeRegistry) stores and builds a public claim only.
    """
    from chain.clients.asset_registry import AssetKind
    from chain.clients.claim_manager import Audience
    from chain.clients.merge_registry import MergedAsset, MergeInput
    from collab.fraudproof.agents import ClaimerAgent
    from collab.fraudproof.store import Store

    plan, trace = output.plan, output.trace
    if registry is None:  # a chain without MergeRegistry: a plain public claim, nothing to settle
        if job_id is None:
            raise BadInput("a merge claim without MergeRegistry needs an explicit job id")
        claim = ClaimerAgent(None, None, None, trace, job_id=job_id).claim_input()  # type: ignore[arg-type]
        Store(home).save_job(claim.claim_id, plan.job.program, plan.job.inputs, plan.job.witnesses, overrides, trace)
        return claim, PostedMerge(claim.claim_id, job_id, b"", "", (), (), (), "public")
    aud = Audience.LICENSED_VERIFIERS if audience.startswith("licensed") else Audience.parse(audience)
    claim_kw: dict[str, Any] = {"audience": aud, "settlement_hook": registry.address}
    if aud == Audience.LICENSED_VERIFIERS:
        if not verify_asset:
            raise BadInput("the licensed-verifiers audience needs an asset whose licensees verify (--verify-asset)")
        claim_kw["asset_id"] = verify_asset
    inputs = [MergeInput(a, w) for a, w in merge_inputs(plan)]
    base_asset = plan.base.asset_id if plan.base is not None and plan.base.asset_id is not None else 0
    job_id = job_id or job_id_for(merger.address, plan, trace)
    entry = _vault_entry(vault, output)
    recorded_job = registry.job(job_id)
    if int(recorded_job.merger, 16) == 0:
        asset = MergedAsset(entry.content_hash, entry.key_commitment or b"\x00" * 32, entry.uri,
                            AssetKind.parse(kind), royalty_bps)
        rec = registry.record(job_id, plan.job.program.root, trace.input_root, trace.output_root, inputs, asset,
                              base_asset_id=base_asset, merger_share_bps=merger_share_bps)
        claim_id, parents, contributors, weights = rec.claim_id, rec.parents, rec.contributors, rec.weights
    else:  # recorded by an earlier run of this job that did not get to post
        if recorded_job.merger.lower() != merger.address.lower():
            raise BadInput(f"merge job 0x{job_id.hex()} was recorded by {recorded_job.merger}")
        claim_id, parents = recorded_job.claim_id, recorded_job.parents
        contributors, weights = recorded_job.contributors, recorded_job.weights
    agent = ClaimerAgent(None, None, None, trace, job_id=job_id)  # type: ignore[arg-type]  # only builds the input
    claim = agent.claim_input(**claim_kw)
    if aud == Audience.PARTICIPANTS:
        claim = replace(claim, participant_registry=registry.address)
    if claim.claim_id != claim_id:
        raise BadInput("MergeRegistry names a different claim id than the one about to be posted")
    Store(home).save_job(claim.claim_id, plan.job.program, plan.job.inputs, plan.job.witnesses, overrides,
                         trace)  # servable first
    return claim, PostedMerge(claim.claim_id, job_id, entry.content_hash, entry.uri, tuple(parents),
                              tuple(contributors), tuple(weights), aud.name.lower())


def _vault_entry(vault: Any, output: ClaimedOutput) -> Any:
    """The vault entry of the output's weights: an existing one with the same plaintext, else a new one."""
    digest = bytes.fromhex(output.weights_sha256)
    for entry in vault.list():
        if entry.plaintext_sha256 == digest and entry.key_commitment and getattr(vault, "owner", None) in entry.recipients:
            return entry
    return vault.put(output.out_dir / "model.safetensors")


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


__all__ = ["WEIGHT_SCALE", "ClaimedOutput", "PostedMerge", "prepare_claim", "record_and_post", "describe", "execute", "job_id_for", "merge_inputs", "verify_artifact"]
