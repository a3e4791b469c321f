"""The ``merge`` job kind: merge the participants' adapters, as a fraud-provable claim the orchestrator posts.

CREATED -> COLLECTING: each named node sees the job and reports its adapter
(safetensors, base64) under ``adapter``; COLLECTING -> COMPUTING once all
have; COMPUTING -> COMPUTED runs the merge as a VM program
(:mod:`collab.fraudproof.builders`: linear or TIES), so its output is exactly
what the claim commits to, stores it (program, inputs) for the blob server and
writes the merged safetensors in the orchestrator's home; COMPUTED -> CLAIMED
creates the child ``claim`` job (deterministic claim id) and the job follows
it to FINALIZED or REJECTED.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, ClassVar

from eth_utils import is_address, keccak

from collab.errors import BadInput, ProtocolViolation
from orchestrator.claims import claim_to_json, prepare_claim
from orchestrator.jobs import Job, JobState, JobStore, register_handler
from orchestrator.rounds import RoundJob

METHODS = ("linear", "ties")


def encode_adapter(path: Path) -> str:
    """A node's adapter file as the report value."""
    return base64.b64encode(Path(path).read_bytes()).decode()


def decode_adapter(text: str) -> dict[str, Any]:
    from safetensors.torch import load

    try:
        return dict(sorted(load(base64.b64decode(text)).items()))  # one parameter order for every adapter
    except Exception as exc:  # noqa: BLE001 - any malformed upload is the node's bad input
        raise BadInput(f"adapter is not a safetensors file: {exc}") from None


@register_handler
class MergeJob:
    """Collects adapters from nodes, merges them in the VM, claims the result."""

    kind: ClassVar[str] = "merge"

    def __init__(self, home: Path) -> None:
        self.home = Path(home)

    def validate(self, payload: dict[str, Any]) -> None:
        parts = payload.get("participants")
        if not isinstance(parts, list) or len(parts) < 2 or not all(is_address(str(p)) for p in parts):
            raise BadInput("a merge needs at least two participant addresses")
        if payload.get("method", "linear") not in METHODS:
            raise BadInput(f"merge method must be one of {', '.join(METHODS)}")
        weights = payload.get("weights")
        if weights is not None and (not isinstance(weights, list) or len(weights) != len(parts)):
            raise BadInput("weights must list one number per participant")

    def advance(self, job: Job, store: JobStore) -> JobState:
        needs = [str(a).lower() for a in job.payload.get("needs") or []]
        if job.state == JobState.CREATED:
            return JobState.COLLECTING
        if job.state == JobState.COLLECTING:
            return JobState.COMPUTING if all(job.data.get(f"r/{a}/adapter") for a in needs) else job.state
        if job.state == JobState.COMPUTING:
            return self._compute(job, store)
        return RoundJob.follow_claim(job, store)

    def _compute(self, job: Job, store: JobStore) -> JobState:
        from safetensors.torch import save_file

        from collab.fraudproof import builders

        parts = [str(a).lower() for a in job.payload["participants"]]
        states = [decode_adapter(job.data[f"r/{a}/adapter"]) for a in parts]
        method = job.payload.get("method", "linear")
        try:
            if method == "ties":
                built = builders.ties_merge(states[0], states[1:], float(job.payload.get("density", 0.5)))
            else:
                built = builders.linear_merge(states, [float(w) for w in job.payload.get("weights") or [1.0] * len(states)])
        except BadInput:
            raise
        except Exception as exc:  # noqa: BLE001 - mismatched adapters are the participants' bad input
            raise ProtocolViolation(f"cannot merge these adapters: {exc}") from None
        claim = prepare_claim(built, keccak(text=f"merge:{job.id}"), self.home)
        out = self.home / "merges" / f"{job.id[2:18]}.safetensors"
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in built.state_dict().items()}, str(out))
        store.update_data(job.id, {"claim": claim_to_json(claim), "claim_id": "0x" + claim.claim_id.hex(),
                                   "merged_path": str(out), "method": method, "tensors": len(states[0]),
                                   "parameters": int(sum(v.numel() for v in states[0].values()))})
        return JobState.COMPUTED
