"""Claimed plaintext inference (``collab infer ASSET --mode plain --claim``).

The owner runs the served BERT encoder in the tensor VM on each text's real
tokens (no padding: the program's shapes are the sequence's), stores the job
in its fraud-proof store (so ``collab watch`` on the owner's home defends the
claim and its blob server serves the data) and posts one claim per text. The
audience is the asset's licensed verifiers: the inputs include the model's
weights, which only the owner's named verifiers and Full-access licensees may
fetch. The claimed output is the mean-pooled embedding in fixed point; the
client compares it, L2-normalised, with what it was served
(``max_abs_vs_served``), since plain serving runs in float.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from eth_utils import keccak

from collab.errors import BadInput, ProtocolViolation
from collab.fraudproof.builders import EncoderShape, Job, encoder_forward, output_tensor
from collab.fraudproof.store import Store
from collab.fraudproof.vm import NoValidOutput, Value

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

    from chain.deployment import Deployment

FRAC_BITS = 16
JOB_TAG = b"collab/infer/plain"


@dataclass(frozen=True)
class InferenceClaim:
    """One posted claim over one text's encoder forward pass."""

    text_index: int
    claim_id: str
    job_id: str
    steps: int
    tokens: int
    output_root: str
    da_pointer: str
    embedding: list[float]  # the claimed pooled output, dequantised and L2-normalised
    max_abs_vs_served: float | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain data for the CLI."""
        return asdict(self)


def encoder_jobs(model_dir: Path, texts: Sequence[str], seq_len: int, *, f: int = FRAC_BITS) -> list[Job]:
    """One VM job per text: the served encoder over that text's tokens (padding dropped)."""
    from safetensors.torch import load_file

    from collab.mpc.model import load_spec, tokenize

    spec = load_spec(model_dir)
    state = load_file(str(model_dir / "model.safetensors"))
    prefix = "bert." if any(k.startswith("bert.") for k in state) else ""
    shape = EncoderShape(spec.hidden, spec.heads, spec.layers, spec.layer_norm_eps)
    tokens = tokenize(list(texts), seq_len, model_dir)
    jobs = []
    for ids, mask in zip(tokens.input_ids.tolist(), tokens.attention_mask.tolist()):
        real = [t for t, m in zip(ids, mask) if m]
        jobs.append(encoder_forward(state, real, shape, f=f, prefix=prefix))
    return jobs


def claimed_embedding(job: Job, output: Value | None = None) -> np.ndarray:
    """The job's pooled output, dequantised and L2-normalised like the served embedding."""
    pooled = output_tensor(job, "pooled").numpy() if output is None else _pooled(job, output)
    norm = float(np.linalg.norm(pooled))
    return pooled / norm if norm > 0 else pooled


def _pooled(job: Job, output: Value) -> np.ndarray:
    from collab.fraudproof.convert import from_vm

    return from_vm(job.outputs(output)["pooled"]).numpy()


def inference_job_id(asset_id: int, client: str, nonce: bytes) -> bytes:
    """A fresh job id per call (the same text twice is two claims, not a duplicate)."""
    return bytes(keccak(JOB_TAG + asset_id.to_bytes(32, "big") + bytes.fromhex(client.removeprefix("0x")) + nonce))


def post_inference_claims(
    w3: Web3,
    deployment: Deployment,
    owner: LocalAccount,
    store_home: Path,
    asset_id: int,
    client: str,
    jobs: Sequence[Job],
    *,
    served: Sequence[Sequence[float]] | None = None,
    da_url: str | None = None,
    log2k: int = 1,
    overrides: Sequence[dict[int, Value]] | None = None,
) -> list[InferenceClaim]:
    """Run, store and post each job as a ``LicensedVerifiers`` claim of ``asset_id``; returns what was posted.

    ``owner`` posts (it needs a Sahara ID that may claim); ``overrides``
    (per job) make a dishonest claimer for tests, stored with the job so the
    owner's watcher defends the same wrong trace.
    """
    from chain.clients.bisection_game import BisectionGameClient
    from chain.clients.claim_manager import Audience, ClaimManagerClient
    from chain.clients.data_availability import DataAvailabilityClient
    from collab.fraudproof.agents import ClaimerAgent

    manager = ClaimManagerClient.from_deployment(deployment, w3, owner)
    data = DataAvailabilityClient.from_deployment(deployment, w3, owner)
    game = BisectionGameClient.from_deployment(deployment, w3, owner)
    pointer = data.publish_source(da_url) if da_url else bytes(32)
    store = Store(store_home)
    out: list[InferenceClaim] = []
    for i, job in enumerate(jobs):
        cheat = dict(overrides[i]) if overrides else {}
        try:
            trace = job.trace(cheat)
        except NoValidOutput as exc:
            raise ProtocolViolation(f"the encoder program has no valid output for text {i}: {exc}") from None
        job_id = inference_job_id(asset_id, client, os.urandom(16))
        agent = ClaimerAgent(manager, game, data, trace, job_id=job_id, log2k=log2k)
        kw: dict[str, Any] = {"audience": Audience.LICENSED_VERIFIERS, "asset_id": asset_id, "da_pointer": pointer}
        claim = agent.claim_input(**kw)
        store.save_job(claim.claim_id, job.program, job.inputs, job.witnesses, cheat)  # servable before posting
        claim_id = agent.post(**kw)
        emb = claimed_embedding(job, trace.outputs[-1].value)
        diff = None
        if served is not None:
            row = np.asarray(served[i], dtype=np.float64)
            if row.shape != emb.shape:
                raise BadInput(f"served output {i} has {row.size} values, the encoder {emb.size}")
            diff = float(np.abs(row - emb).max())
        out.append(InferenceClaim(
            i, "0x" + claim_id.hex(), "0x" + job_id.hex(), len(job.program.steps), int(job.inputs["input_ids"].header.numel),
            "0x" + trace.output_root.hex(), "0x" + pointer.hex(), [float(v) for v in emb], diff,
        ))  # fmt: skip
    return out


__all__ = ["FRAC_BITS", "InferenceClaim", "claimed_embedding", "encoder_jobs", "inference_job_id", "post_inference_claims"]
