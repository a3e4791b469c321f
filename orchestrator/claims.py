"""The built-in ``claim`` job kind: post a fraud-proof claim, wait out the window, finalize.

Every on-chain step is idempotent: the claim id is ``keccak(jobId, programRoot,
inputRoot)`` and ClaimManager refuses a second claim with the same id, so a
restarted orchestrator that re-runs the posting step gets ``DuplicateClaim``,
treats it as "already done" and moves on; finalizing an already-final claim
reverts ``ClaimNotPending`` and is likewise read back instead of retried.
"""

from __future__ import annotations

from typing import Any, ClassVar

from chain.clients.claim_manager import Audience, ClaimInput, ClaimManagerClient, ClaimStatus
from chain.errors import revert_class
from collab.errors import BadInput
from orchestrator.jobs import Job, JobState, JobStore, register_handler

_BYTES32 = ("job_id", "program_root", "step_tree_root", "input_root", "output_root", "trace_root")


def claim_to_json(claim: ClaimInput) -> dict[str, Any]:
    """JSON form of a claim input (bytes as 0x-hex) for a job payload."""
    out: dict[str, Any] = {k: "0x" + bytes(getattr(claim, k)).hex() for k in _BYTES32}
    out.update(step_count=int(claim.step_count), last_leaf_proof=["0x" + bytes(p).hex() for p in claim.last_leaf_proof],
               log2k=int(claim.log2k), audience=int(Audience.parse(claim.audience)),
               participants=list(claim.participants), participant_registry=claim.participant_registry,
               asset_id=int(claim.asset_id), da_pointer="0x" + bytes(claim.da_pointer).hex(),
               settlement_hook=claim.settlement_hook)
    return out


def claim_from_json(raw: Any) -> ClaimInput:
    """Parse a claim input from a job payload; BadInput if anything is missing or malformed."""
    if not isinstance(raw, dict):
        raise BadInput("claim must be an object")
    try:
        def b32(value: Any) -> bytes:
            data = bytes.fromhex(str(value).removeprefix("0x"))
            if len(data) != 32:
                raise ValueError(f"expected 32 bytes, got {len(data)}")
            return data

        return ClaimInput(
            **{k: b32(raw[k]) for k in _BYTES32},
            step_count=int(raw["step_count"]), last_leaf_proof=[b32(p) for p in raw["last_leaf_proof"]],
            log2k=int(raw.get("log2k", 1)), audience=Audience(int(raw.get("audience", 0))),
            participants=[str(a) for a in raw.get("participants", [])],
            participant_registry=str(raw.get("participant_registry", "0x" + "00" * 20)),
            asset_id=int(raw.get("asset_id", 0)), da_pointer=b32(raw.get("da_pointer", "0x" + "00" * 32)),
            settlement_hook=str(raw.get("settlement_hook", "0x" + "00" * 20)),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise BadInput(f"malformed claim: {exc}") from exc


@register_handler
class ClaimJob:
    """Claims a committed program + inputs from the orchestrator's own account."""

    kind: ClassVar[str] = "claim"

    def __init__(self, manager: ClaimManagerClient) -> None:
        self.manager = manager

    def validate(self, payload: dict[str, Any]) -> None:
        claim_from_json(payload.get("claim"))

    def advance(self, job: Job, store: JobStore) -> JobState:
        claim = claim_from_json(job.payload.get("claim"))
        cid = claim.claim_id
        if job.state == JobState.CREATED:
            return JobState.COMPUTING
        if job.state == JobState.COMPUTING:
            # The program and its trace were computed by the submitter; what the claim commits to is checked on post.
            store.update_data(job.id, {"claim_id": "0x" + cid.hex()})
            return JobState.COMPUTED
        if job.state == JobState.COMPUTED:
            try:
                posted = self.manager.post_claim(claim)
                if posted.tx is not None:
                    store.update_data(job.id, {"post_tx": posted.tx.tx_hash})
            except revert_class("DuplicateClaim"):
                store.update_data(job.id, {"post_dedup": True})  # an earlier run posted it before dying
            return JobState.CLAIMED
        if job.state in (JobState.CLAIMED, JobState.CHALLENGED):
            return self._settle(job, store, cid)
        return job.state

    def _settle(self, job: Job, store: JobStore, cid: bytes) -> JobState:
        status = self.manager.get_claim(cid).status
        if status == ClaimStatus.PENDING:
            try:
                tx = self.manager.finalize(cid)
                store.update_data(job.id, {"finalize_tx": tx.tx_hash})
                return JobState.FINALIZED
            except revert_class("ChallengeWindowOpen"):
                return job.state
            except revert_class("ChallengesOpen"):
                return JobState.CHALLENGED
            except revert_class("ClaimNotPending"):
                status = self.manager.get_claim(cid).status
        if status == ClaimStatus.FINALIZED:
            return JobState.FINALIZED
        if status == ClaimStatus.REJECTED:
            return JobState.REJECTED
        return job.state


def prepare_claim(built: Any, job_id: bytes, home: Any, *, participants: list[str] | None = None,
                  asset_id: int = 0) -> ClaimInput:
    """Trace a builder job, store it under its claim id in ``home``'s fraud-proof store (so the blob server
    serves it and the watcher can defend it) and return the claim input; nothing is posted here."""
    from collab.fraudproof.agents import ClaimerAgent
    from collab.fraudproof.store import Store

    trace = built.trace()
    agent = ClaimerAgent(None, None, None, trace, job_id=job_id)  # type: ignore[arg-type]  # only builds the input
    claim = agent.claim_input(audience=Audience.PUBLIC, participants=participants or [], asset_id=asset_id)
    Store(home).save_job(claim.claim_id, built.program, built.inputs, built.witnesses)
    return claim
