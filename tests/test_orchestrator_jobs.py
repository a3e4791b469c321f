"""Job kinds beyond ``claim`` and node presence, through the store and the handlers (no chain, no processes).

Presence: heartbeats land in the job store's SQLite, so a restarted
orchestrator still knows every node (as away until it beats again). The
``inference`` kind moves only on the nodes' reports and fails with a reason
when the owner's node goes away; ``merge`` turns reported adapters into a VM
program whose claim id is deterministic (a re-run after a crash names the same
claim, which ClaimManager refuses twice).
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from collab.errors import BadInput
from orchestrator.inference import InferenceJob
from orchestrator.jobs import JobState, JobStore, step, validate_kind
from orchestrator.merges import MergeJob
from orchestrator.rounds import RoundJob

OWNER = "0x" + "11" * 20
CLIENT = "0x" + "22" * 20
PEERS = ["0x" + "33" * 20, "0x" + "44" * 20, "0x" + "55" * 20]


def test_presence_survives_a_restart_and_goes_away(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    store.see_node(OWNER.upper().replace("0X", "0x"), 7, "127.0.0.2", {"blob_url": "http://127.0.0.2:1"}, now=100.0)
    store.close()
    again = JobStore(tmp_path / "jobs.db")  # the orchestrator restarted
    (node,) = again.nodes()
    assert node["address"] == OWNER and node["identity_id"] == 7 and node["info"]["blob_url"] == "http://127.0.0.2:1"
    assert again.last_seen(OWNER) == 100.0 and again.last_seen(CLIENT) is None


def _inference(store: JobStore, handler: InferenceJob) -> str:
    payload = {"asset_id": 1, "owner": OWNER, "request": {"mode": "mpc", "seq_len": 8}, "submitter": CLIENT, "needs": [OWNER]}
    validate_kind("inference", payload, {"inference": handler})  # type: ignore[dict-item]
    job, created = store.create("inference", payload)
    assert created and store.create("inference", payload)[1] is False  # the same request is the same job
    return job.id


def test_inference_moves_on_reports_only(tmp_path: Path) -> None:
    store, handler = JobStore(tmp_path / "jobs.db"), InferenceJob()
    handler.presence = lambda a: "online"
    jid = _inference(store, handler)
    handlers = {"inference": handler}
    assert step(store, handlers, store.get(jid)).state == JobState.COLLECTING  # type: ignore[arg-type]
    assert step(store, handlers, store.get(jid)).state == JobState.COLLECTING  # type: ignore[arg-type]  # owner not up yet
    store.update_data(jid, {f"r/{OWNER}/master": {"master": "127.0.0.1:1"}})
    assert step(store, handlers, store.get(jid)).state == JobState.COMPUTING  # type: ignore[arg-type]
    store.update_data(jid, {f"r/{OWNER}/done": {"ok": True}})
    assert step(store, handlers, store.get(jid)).state == JobState.COMPUTING  # type: ignore[arg-type]  # client still running
    store.update_data(jid, {f"r/{CLIENT}/done": {"ok": True}})
    assert step(store, handlers, store.get(jid)).state == JobState.COMPUTED  # type: ignore[arg-type]
    assert step(store, handlers, store.get(jid)).state == JobState.FINALIZED  # type: ignore[arg-type]


def test_inference_fails_clearly_when_the_owner_goes_away_or_a_side_fails(tmp_path: Path) -> None:
    store, handler = JobStore(tmp_path / "jobs.db"), InferenceJob()
    status = {"now": "online"}
    handler.presence = lambda a: status["now"]
    jid = _inference(store, handler)
    handlers = {"inference": handler}
    step(store, handlers, store.get(jid))  # type: ignore[arg-type]
    status["now"] = "away"
    job = step(store, handlers, store.get(jid))  # type: ignore[arg-type]
    assert job.state == JobState.FAILED and "went away" in (job.error or "")

    other = JobStore(tmp_path / "other.db")
    status["now"] = "online"
    jid = _inference(other, handler)
    step(other, handlers, other.get(jid))  # type: ignore[arg-type]
    other.update_data(jid, {f"r/{OWNER}/done": {"ok": False, "error": "not licensed for asset 1"}})
    job = step(other, handlers, other.get(jid))  # type: ignore[arg-type]
    assert job.state == JobState.FAILED and "not licensed" in (job.error or "")


def test_bad_job_payloads_are_refused() -> None:
    handlers = {"round": RoundJob(Path("/nonexistent")), "merge": MergeJob(Path("/nonexistent")), "inference": InferenceJob()}
    for kind, payload, match in [
        ("round", {"participants": [OWNER]}, "at least two"),
        ("round", {"participants": PEERS, "min_participants": 5}, "min_participants"),
        ("merge", {"participants": PEERS, "method": "slerp"}, "method"),
        ("merge", {"participants": PEERS, "weights": [1.0]}, "one number per participant"),
        ("inference", {"owner": "nobody", "asset_id": 1, "request": {"mode": "mpc"}}, "owner"),
        ("inference", {"owner": OWNER, "asset_id": 1, "request": {"mode": "plain"}}, "mpc"),
    ]:
        with pytest.raises(BadInput, match=match):
            validate_kind(kind, payload, handlers)  # type: ignore[arg-type]


def _adapter(seed: int, shape: tuple[int, int] = (3, 4)) -> str:
    g = torch.Generator().manual_seed(seed)
    state = {"b.weight": torch.randn(shape, generator=g), "a.bias": torch.randn(shape[0], generator=g)}
    return base64.b64encode(save(state)).decode()


def test_merge_collects_adapters_and_computes_a_deterministic_claim(tmp_path: Path) -> None:
    store, handler = JobStore(tmp_path / "jobs.db"), MergeJob(tmp_path / "orch")
    handlers = {"merge": handler}
    payload = {"participants": PEERS, "method": "linear", "weights": [1.0, 2.0, 1.0], "submitter": OWNER, "needs": PEERS}
    job, _ = store.create("merge", payload)
    assert step(store, handlers, job).state == JobState.COLLECTING  # type: ignore[arg-type]
    for i, peer in enumerate(PEERS[:2]):
        store.update_data(job.id, {f"r/{peer}/adapter": _adapter(i)})
    assert step(store, handlers, store.get(job.id)).state == JobState.COLLECTING  # type: ignore[arg-type]
    store.update_data(job.id, {f"r/{PEERS[2]}/adapter": _adapter(2)})
    assert step(store, handlers, store.get(job.id)).state == JobState.COMPUTING  # type: ignore[arg-type]
    done = step(store, handlers, store.get(job.id))  # type: ignore[arg-type]
    assert done.state == JobState.COMPUTED and Path(done.data["merged_path"]).is_file()
    first = done.data["claim_id"]
    # A crash after the computation but before the transition re-runs it: the same claim id.
    assert handler._compute(store.get(job.id), store) == JobState.COMPUTED and store.get(job.id).data["claim_id"] == first
    assert (tmp_path / "orch" / "fraudproof").exists()  # stored for the blob server and the defence


def test_merge_of_mismatched_adapters_fails_with_a_reason(tmp_path: Path) -> None:
    store, handler = JobStore(tmp_path / "jobs.db"), MergeJob(tmp_path / "orch")
    job, _ = store.create("merge", {"participants": PEERS[:2], "submitter": OWNER, "needs": PEERS[:2]})
    step(store, {"merge": handler}, job)  # type: ignore[arg-type]
    store.update_data(job.id, {f"r/{PEERS[0]}/adapter": _adapter(0), f"r/{PEERS[1]}/adapter": _adapter(1, (2, 4))})
    step(store, {"merge": handler}, store.get(job.id))  # type: ignore[arg-type]
    failed = step(store, {"merge": handler}, store.get(job.id))  # type: ignore[arg-type]
    assert failed.state == JobState.FAILED and "parameters" in (failed.error or "")


def test_infer_without_a_node_or_owner_home_says_how_to_route(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "collab"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "collab"]
    proc = subprocess.run([*command, "--home", str(tmp_path), "infer", "1", "--text", "hello"], capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, "COLLAB_PASSPHRASE": "pw"})
    from collab.errors import UsageError

    assert proc.returncode == UsageError("x").exit_code and "Traceback" not in proc.stderr
    assert "no node is running for this home" in proc.stderr and "collab node start" in proc.stderr
