"""The ``merge`` job kind: merge the participants' adapters, as a claimed merge settled by MergeRegistry.

CREATED -> COLLECTING: each named node sees the job and reports its adapter
(safetensors, base64) under ``adapter``; COLLECTING -> COMPUTING once all
have. An adapter named as an asset must be that asset: the upload's sha256
is its ``contentHash`` (a plain-file asset), or the upload is the asset's
vault blob and the node also reports the blob's key under ``adapter_key``,
which must open the asset's ``keyCommitment`` (the orchestrator merges the
plaintext anyway, so the key shows it nothing more). Otherwise the job
fails naming the participant, before anything is recorded or claimed.
COMPUTING -> COMPUTED builds and runs the merge exactly as ``collab merge
run --claim`` does (:mod:`collab.merge.programs` + :mod:`collab.merge.claimed`:
linear, task arithmetic or weighted TIES, the stored file is the dequantised
VM output), vaults the output, records the job in ``MergeRegistry`` (inputs:
the participants' adapter assets named in ``assets`` or, where it names none,
by the participant's node with its upload (``adapter_asset``), or 0 for an
unregistered adapter, which weighs for the orchestrator) and stores the program for the
blob server; COMPUTED -> CLAIMED creates the child ``claim`` job (deterministic
claim id, the registry as settlement hook) and the job follows it to FINALIZED
(the merged asset is registered with the input assets as parents and its
Shares minted to their owners by weight) or REJECTED (nothing minted).

Crash-safe: the MergeRegistry job id is ``keccak("merge:" + job id)``, so a
restarted orchestrator re-running COMPUTING reads its own record back instead
of recording twice, reuses the vault entry of the same output, and names the
same claim, which the claim job posts once.

An adapter is a task vector: TIES and task arithmetic merge it against a zero
base (trim, elect, disjoint mean of the adapters themselves).
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any, ClassVar

from eth_utils import is_address, keccak

from collab.errors import BadInput, CollabError, ProtocolViolation, Unauthorized
from orchestrator.claims import claim_to_json
from orchestrator.jobs import Job, JobState, JobStore, register_handler
from orchestrator.rounds import RoundJob

METHODS = ("linear", "task_arithmetic", "ties")


def encode_adapter(raw: bytes) -> str:
    """A node's adapter (its file, or its asset's vault blob) as the report value."""
    return base64.b64encode(raw).decode()


def decode_adapter(raw: bytes) -> dict[str, Any]:
    from safetensors.torch import load

    try:
        return dict(sorted(load(raw).items()))  # one parameter order for every adapter
    except Exception as exc:  # noqa: BLE001 - any malformed upload is the node's bad input
        raise BadInput(f"adapter is not a safetensors file: {exc}") from None


def adapter_bytes(upload: str, key_hex: str | None, asset: Any, who: str) -> bytes:
    """The adapter a participant uploaded (base64), checked against ``asset`` (None: unregistered).

    Unauthorized unless the upload is the asset: its sha256 is the asset's
    ``contentHash``; with ``key_hex`` the upload is the asset's vault blob, the
    key must open the asset's ``keyCommitment``, and the plaintext is returned.
    """
    import hashlib

    from collab.vault import check_key_commitment, decrypt_blob

    try:
        raw = base64.b64decode(upload, validate=True)
    except (ValueError, TypeError):
        raise BadInput(f"participant {who}'s adapter upload is not base64") from None
    if asset is None:
        return raw
    digest = hashlib.sha256(raw).digest()
    if digest != bytes(asset.content_hash):
        raise Unauthorized(f"participant {who}'s upload is not asset {asset.id}: its sha256 0x{digest.hex()} is not the "
                           f"asset's contentHash 0x{bytes(asset.content_hash).hex()}")
    if key_hex is None:
        return raw
    try:
        key = bytes.fromhex(str(key_hex).removeprefix("0x"))
    except ValueError:
        raise BadInput(f"participant {who}'s adapter key is not hex") from None
    try:
        check_key_commitment(key, asset.key_commitment)
    except CollabError:
        raise Unauthorized(f"participant {who}'s adapter key does not open asset {asset.id}'s key commitment") from None
    return decrypt_blob(raw, key)


@register_handler
class MergeJob:
    """Collects adapters from nodes, merges them as a claimed merge, records it in MergeRegistry, claims it."""

    kind: ClassVar[str] = "merge"

    def __init__(self, home: Path, *, registry: Any = None, vault: Any = None, assets: Any = None,
                 account: Any = None) -> None:
        """``registry``/``assets``: MergeRegistry / AssetRegistry clients acting as the orchestrator
        (``account``); ``vault``: the orchestrator's vault. Without a registry (a chain without
        MergeRegistry) the claim is a plain public one and nothing is settled."""
        self.home = Path(home)
        self.registry = registry
        self.vault = vault
        self.assets = assets
        self.account = account

    def validate(self, payload: dict[str, Any]) -> None:
        parts = payload.get("participants")
        if not isinstance(parts, list) or len(parts) < 2 or not all(is_address(str(p)) for p in parts):
            raise BadInput("a merge needs at least two participant addresses")
        if payload.get("method", "linear") not in METHODS:
            raise BadInput(f"merge method must be one of {', '.join(METHODS)}")
        for key in ("weights", "assets"):
            value = payload.get(key)
            if value is not None and (not isinstance(value, list) or len(value) != len(parts)):
                raise BadInput(f"{key} must list one number per participant")
        weights = payload.get("weights") or []
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in weights):
            raise BadInput("merge weights must be positive numbers (Shares are minted by weight)")
        assets = payload.get("assets") or []
        if not all(isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in assets):
            raise BadInput("assets must be asset ids (0 for an unregistered adapter)")
        if any(assets) and self.registry is None:
            raise BadInput("this orchestrator has no MergeRegistry: submit the merge without assets")
        bps = payload.get("merger_share_bps", 0)
        if not isinstance(bps, int) or not 0 <= bps <= 10_000:
            raise BadInput("merger_share_bps must be 0..10000")

    def advance(self, job: Job, store: JobStore) -> JobState:
        needs = [str(a).lower() for a in job.payload.get("needs") or []]
        if job.state == JobState.CREATED:
            return JobState.COLLECTING
        if job.state == JobState.COLLECTING:
            return JobState.COMPUTING if all(job.data.get(f"r/{a}/adapter") for a in needs) else job.state
        if job.state == JobState.COMPUTING:
            return self._compute(job, store)
        return RoundJob.follow_claim(job, store)

    def _dir(self, job: Job) -> Path:
        return self.home / "merges" / job.id[2:18]

    def _spec(self, job: Job, states: list[dict[str, Any]], assets: list[int]) -> Any:
        """The job as a MergeSpec over the adapters written as local model directories (asset ids as provenance)."""
        import torch
        from safetensors.torch import save_file

        from collab.merge.config import MergeSpec, ModelInput, ModelRef

        payload = job.payload
        method = payload.get("method", "linear")
        weights = [float(w) for w in payload.get("weights") or [1.0] * len(states)]
        density = payload.get("density", 0.5)
        densities = density if isinstance(density, list) else [density] * len(states)
        root = self._dir(job) / "inputs"
        if root.exists():
            shutil.rmtree(root)  # a re-run after a crash writes the same files again

        def write(name: str, state: dict[str, Any]) -> Path:
            (root / name).mkdir(parents=True)
            save_file({k: v.contiguous() for k, v in state.items()}, str(root / name / "model.safetensors"))
            return root / name

        models = []
        for i, (state, w, a) in enumerate(zip(states, weights, assets)):
            params: dict[str, Any] = {"weight": w} | ({"density": float(densities[i])} if method == "ties" else {})
            models.append(ModelInput(ModelRef(path=write(f"p{i}", state), asset_id=a or None), params))
        base = None
        if method != "linear":  # an adapter is a task vector: its base is zero
            base = ModelRef(path=write("base", {k: torch.zeros_like(v) for k, v in states[0].items()}))
        shared = {"lambda": float(payload["lambda"])} if "lambda" in payload else {}
        return MergeSpec(method, tuple(models), base, shared)

    def _asset_ids(self, job: Job, parts: list[str]) -> list[int]:
        """Each participant's adapter asset: the one the job names, else the one its node named with its
        upload (``adapter_asset``), else 0 (an unregistered adapter)."""
        out = []
        for part, named in zip(parts, job.payload.get("assets") or [0] * len(parts)):
            own = job.data.get(f"r/{part}/adapter_asset") or 0
            if not named and own:
                if not isinstance(own, int) or isinstance(own, bool) or own < 0:
                    raise ProtocolViolation(f"participant {part} named a malformed adapter asset {own!r}")
                if self.registry is None:
                    raise ProtocolViolation(f"participant {part} named its adapter asset {own}, but this orchestrator "
                                            "has no MergeRegistry to record asset inputs")
            out.append(int(named or own))
        return out

    def _named_assets(self, job: Job, parts: list[str], asset_ids: list[int]) -> list[Any]:
        """Each participant's asset, read from the chain once (None: an unregistered adapter, or no
        registry); Unauthorized unless its owner is the participant contributing it (Shares go to the owner)."""
        out = []
        for part, asset_id in zip(parts, asset_ids):
            asset = self.assets.asset(asset_id) if asset_id and self.assets is not None else None
            if asset is not None and asset.owner.lower() != part:
                raise Unauthorized(f"asset {asset_id} is owned by {asset.owner.lower()}, not by participant {part}")
            out.append(asset)
        return out

    def _compute(self, job: Job, store: JobStore) -> JobState:
        from collab.merge.claimed import execute, prepare_claim
        from collab.merge.programs import build_plan

        parts = [str(a).lower() for a in job.payload["participants"]]
        asset_ids = self._asset_ids(job, parts)
        states = [decode_adapter(adapter_bytes(job.data[f"r/{a}/adapter"], job.data.get(f"r/{a}/adapter_key"), asset, a))
                  for a, asset in zip(parts, self._named_assets(job, parts, asset_ids))]
        out = self._dir(job) / "merged"
        if out.exists():
            shutil.rmtree(out)
        try:
            output = execute(build_plan(self._spec(job, states, asset_ids)), out, None)
        except CollabError as exc:
            raise ProtocolViolation(f"cannot merge these adapters (the participants' parameters differ?): {exc}") from None
        claim, posted = prepare_claim(
            output, merger=self.account, home=self.home, vault=self.vault, registry=self.registry,
            audience=job.payload.get("audience") or ("participants" if all(asset_ids) else "public"),
            merger_share_bps=int(job.payload.get("merger_share_bps", 0)),
            royalty_bps=int(job.payload.get("royalty_bps", 0)), job_id=keccak(text=f"merge:{job.id}"),
        )
        method = job.payload.get("method", "linear")
        store.update_data(job.id, {
            "claim": claim_to_json(claim), "claim_id": "0x" + claim.claim_id.hex(), "merged_path": str(out / "model.safetensors"),
            "method": method, "tensors": len(states[0]), "parameters": int(sum(v.numel() for v in states[0].values())),
            "merge_job_id": "0x" + posted.job_id.hex(), "content_hash": "0x" + posted.content_hash.hex(),
            "vault_uri": posted.vault_uri, "parents": list(posted.parents), "audience": posted.audience,
            "contributors": [{"account": c, "weight": w} for c, w in zip(posted.contributors, posted.weights)],
            "output_root": "0x" + output.trace.output_root.hex(), "weights_sha256": output.weights_sha256,
        })
        return JobState.COMPUTED
