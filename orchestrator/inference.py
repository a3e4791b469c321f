"""The ``inference`` job kind: a secure inference call routed between the client's node and the owner's node.

The texts never leave the client's node. The orchestrator only routes: the
client's node submits the public request (asset, mode, lengths) with its
signed call receipt and ``needs = [owner]``; the owner's node sees the job in
its heartbeat reply, checks the license and the receipt on-chain, hands the
query to the model's persistent CrypTen party (rank 0, started on the first
call and kept across calls: :mod:`collab.mpc.persistent`), which opens a
fresh gloo rendezvous, and reports its address; the client's node then starts its own party (rank 1,
holding the texts) against it. Each side reports ``done``; the owner's node
posts the call receipts (metering) after a successful call.

The job moves CREATED -> COLLECTING (waiting for the owner) -> COMPUTING
(parties running) -> COMPUTED -> FINALIZED; an owner node that goes away
fails it with a clear reason instead of a hang.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from eth_utils import is_address

from collab.errors import BadInput, CollabError, ProtocolViolation, Unavailable
from orchestrator.jobs import Job, JobState, JobStore, register_handler

PUBLIC_FIELDS = ("mode", "parties", "preprocessing", "dp_epsilon", "dp_mechanism", "seq_len", "timeout", "approx", "batch")


def report_of(job: dict[str, Any] | Job, address: str, key: str) -> Any:
    """What ``address`` reported under ``key`` for a job (None if nothing yet)."""
    data = job.data if isinstance(job, Job) else job.get("data", {})
    return data.get(f"r/{address.lower()}/{key}")


@register_handler
class InferenceJob:
    """Routes one call; the work happens in the two nodes."""

    kind: ClassVar[str] = "inference"
    presence: Callable[[str], str] | None = None

    def validate(self, payload: dict[str, Any]) -> None:
        if not is_address(str(payload.get("owner", ""))):
            raise BadInput("inference job needs the owner's address")
        if not isinstance(payload.get("asset_id"), int) or payload["asset_id"] < 1:
            raise BadInput("inference job needs an asset_id >= 1")
        request = payload.get("request")
        if not isinstance(request, dict) or request.get("mode") != "mpc":
            raise BadInput("routed inference runs --mode mpc (plain and he run with --owner-home)")

    def advance(self, job: Job, store: JobStore) -> JobState:
        owner = str(job.payload["owner"])
        client = str(job.payload.get("submitter", ""))
        if job.state == JobState.CREATED:
            return JobState.COLLECTING
        if self.presence is not None and job.state in (JobState.COLLECTING, JobState.COMPUTING):
            if self.presence(owner) == "away":
                raise NodeAway(f"the owner's node {owner} went away")
        done_owner, done_client = report_of(job, owner, "done"), report_of(job, client, "done")
        for who, done in (("owner", done_owner), ("client", done_client)):
            if isinstance(done, dict) and not done.get("ok"):
                raise ProtocolViolation(f"the {who}'s side failed: {done.get('error', 'unknown error')}")
        if job.state == JobState.COLLECTING:
            return JobState.COMPUTING if report_of(job, owner, "master") else job.state
        if job.state == JobState.COMPUTING:
            return JobState.COMPUTED if done_owner and done_client else job.state
        if job.state == JobState.COMPUTED:
            return JobState.FINALIZED
        return job.state


class NodeAway(ProtocolViolation):
    """A needed node is away: the job fails with that reason (not retried like a transient Unavailable)."""


# ----------------------------------------------------------------------------- the two sides


def _party(rank: int, master: str, job: dict[str, Any], timeout: float, workdir: Path) -> subprocess.Popen[bytes]:
    """One CrypTen party process of :mod:`collab.mpc.service` (the same entry point ``collab infer`` uses):
    the node's spare, started after its previous call, when it has one (:mod:`collab.mpc.spare`)."""
    from collab.mpc.spare import service_argv, spare_parties, start_service_party

    (workdir / f"job{rank}.json").write_text(json.dumps(job))
    argv = service_argv(rank, master, workdir / f"job{rank}.json", workdir / f"out{rank}.json", timeout)
    return start_service_party(argv, workdir / f"party{rank}.log", spare_parties())


def _wait_party(proc: subprocess.Popen[bytes], rank: int, workdir: Path, timeout: float) -> dict[str, Any]:
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise Unavailable(f"MPC party {rank} timed out after {timeout:.0f} s") from None
    if code != 0:
        lines = [ln for ln in (workdir / f"party{rank}.log").read_text(errors="replace").splitlines() if ln.startswith("error:")]
        raise Unavailable(f"MPC party {rank} exited with code {code}: {(lines or ['no output'])[-1].removeprefix('error: ')}")
    return json.loads((workdir / f"out{rank}.json").read_text())  # type: ignore[no-any-return]


def serve_owner_side(owner: Any, job: dict[str, Any], report: Callable[[str, Any], None], chain_lock: Any,
                     host: str = "127.0.0.1") -> None:
    """The asset owner's node: license gate, receipt, its party, then metering. Reports ``master`` and ``done``."""
    from chain.clients.licensing import LicenseKind
    from collab.dp.output import OutputNoise
    from collab.metering import CallReceipt
    from collab.mpc.encoder import preset
    from collab.mpc.persistent import owner_parties
    from collab.mpc.service import InferRequest, _compute_parties, _hidden, check_license

    payload = job["payload"]
    public = payload["request"]
    client = str(payload["submitter"])
    charge = ledger = meter = previous = None
    accepted = False
    try:
        request = InferRequest(int(payload["asset_id"]), ("hidden",) * int(public.get("batch", 1)), "mpc",
                               int(public.get("parties", 2)), public.get("preprocessing", "dealer"),
                               public.get("dp_epsilon"), public.get("dp_mechanism", "gaussian"),
                               int(public.get("seq_len", 16)), float(public.get("timeout", 600)),
                               str(public.get("approx", "cheap")))  # type: ignore[arg-type]
        if request.parties != 2:
            raise BadInput("routed inference runs two parties (owner and client)")
        assets, licensing = owner.assets(), owner.licensing()
        asset = assets.asset(request.asset_id)
        served = owner.served(asset)
        head = served.head()
        meter, ledger = owner.meter(), owner.ledger()
        api_id = licensing.license_of(asset.id, client, LicenseKind.API)
        held_paid = licensing.license(api_id).calls_paid if api_id else 0
        grant = check_license(licensing, assets, asset.id, client, meter.unposted(api_id, held_paid) if api_id else 0)
        out_dim = head.classes if head is not None else _hidden(served.model_dir)
        noise = None
        if request.dp_epsilon is not None:
            noise = OutputNoise.calibrate(request.dp_epsilon, out_dim, mechanism=request.dp_mechanism,
                                          lipschitz=head.lipschitz if head is not None else 1.0)
            charge = ledger.reserve(asset.id, client, grant.license_id, noise)
        if grant.kind == "api":
            raw = payload.get("receipt") or {}
            receipt = CallReceipt(int(raw["license_id"]), int(raw["total_calls"]), bytes.fromhex(str(raw["last_request_hash"])[2:]))
            previous = meter.accept(licensing, receipt, bytes.fromhex(str(payload["signature"]).removeprefix("0x")),
                                    client, _compute_parties(owner, request))
            accepted = True
        drawn = noise.sample((len(request.texts), out_dim)) if noise is not None else None
        # Both parties must run the same approximations and mask schedule: the client copies these from ``master``.
        common = {"seq_len": request.seq_len, "batch": len(request.texts), "out_dim": out_dim, "provider": request.provider,
                  "dp": drawn is not None, "head_classes": head.classes if head is not None else 0,
                  "approx": preset(request.approx), "fixed_masks": False, "owner_held": True}
        mine = dict(common, model_dir=str(served.model_dir), head=str(served.head_path) if served.head_path else None,
                    noise=drawn.tolist() if drawn is not None else None)
        # The model's persistent party (started on the first call, kept across calls) opens a fresh rendezvous.
        with owner_parties().acquire(served.model_dir) as party:
            master = party.begin(mine, request.timeout, host)
            report("master", {"master": master, **common, "license": {"kind": grant.kind, "license_id": grant.license_id,
                                                                     "calls_left": grant.calls_left}})
            result = party.finish(request.timeout + 30)
        if charge is not None:
            ledger.confirm(charge)
        with chain_lock:
            posted = meter.flush(licensing, owner.batch) if grant.kind == "api" else []
        report("done", {"ok": True, "stats": result.get("stats"), "owner_party": result.get("party"), "posted": [
            {"license_id": p.license_id, "total_calls": p.total_calls, "calls": p.calls, "amount": p.amount,
             "compute_fee_per_party": p.compute_fee_per_party, "tx": p.tx.tx_hash if p.tx else None} for p in posted]})
    except CollabError as exc:
        if charge is not None and ledger is not None:
            ledger.release(charge)
        if accepted and meter is not None:
            meter.restore(int(payload["receipt"]["license_id"]), previous)
        report("done", {"ok": False, "error": str(exc)})
    except Exception as exc:  # noqa: BLE001 - the job must fail with a reason, never hang the client
        report("done", {"ok": False, "error": f"{type(exc).__name__}: {exc}"})


def run_client_side(node: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """The client's node: sign the receipt, submit the job, run the client's party once the owner's is up."""
    from chain.clients.asset_registry import AssetRegistryClient
    from chain.clients.licensing import LicenseKind, LicensingClient
    from collab.metering import sign_call_receipt
    from collab.mpc.parties import CLIENT
    from collab.mpc.service import ClientCounter, InferRequest
    from collab.mpc.spare import spare_parties

    chain = node.chain
    if chain is None:
        raise Unavailable("this node has no chain connection")
    texts = fields.get("texts")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise BadInput("infer needs a non-empty list of texts")
    try:
        request = InferRequest(int(fields["asset_id"]), tuple(texts), str(fields.get("mode", "mpc")),  # type: ignore[arg-type]
                               int(fields.get("parties", 2)), str(fields.get("preprocessing", "dealer")),  # type: ignore[arg-type]
                               fields.get("dp_epsilon"), str(fields.get("dp_mechanism", "gaussian")),  # type: ignore[arg-type]
                               int(fields.get("seq_len", 16)), float(fields.get("timeout", 600)),
                               str(fields.get("approx", "cheap")))  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"bad infer request: {exc}") from None
    if request.mode != "mpc" or request.parties != 2:
        raise BadInput("a node routes --mode mpc with 2 parties; use --owner-home for other modes")
    me = chain.account.address
    asset = AssetRegistryClient.from_deployment(chain.deployment, chain.w3, chain.account).asset(request.asset_id)
    licensing = LicensingClient.from_deployment(chain.deployment, chain.w3, chain.account)
    api_id = licensing.license_of(asset.id, me, LicenseKind.API) if asset.owner.lower() != me.lower() else 0
    counter = ClientCounter(chain.settings.ensure_home() / "calls.db")
    receipt = signature = None
    if api_id:
        receipt = counter.next_receipt(api_id, licensing.license(api_id).calls_paid, request.request_bytes(os.urandom(16)))
        signature = sign_call_receipt(chain.account, licensing.domain(), receipt)
    public = {k: getattr(request, k) for k in PUBLIC_FIELDS if k != "batch"} | {"batch": len(request.texts)}
    body = {"asset_id": asset.id, "owner": asset.owner, "request": public, "nonce": os.urandom(8).hex(),
            "receipt": receipt.to_json() if receipt else None, "signature": "0x" + signature.hex() if signature else None}
    t0 = time.perf_counter()
    job = node.forward("submit", kind="inference", payload=body, needs=[asset.owner], timeout=request.timeout)["job"]
    jid = job["id"]
    deadline = time.monotonic() + request.timeout
    master = None
    while master is None:
        current = node.forward("job", id=jid)
        if current["state"] in ("failed", "cancelled", "rejected"):
            raise Unavailable(f"inference job {jid} {current['state']}: {current.get('error')}")
        master = report_of(current, asset.owner, "master")
        if time.monotonic() > deadline:
            raise Unavailable(f"the owner's node did not start its party within {request.timeout:.0f} s")
        if master is None:
            time.sleep(0.3)
    shared = ("seq_len", "batch", "out_dim", "provider", "dp", "head_classes", "approx", "fixed_masks", "owner_held")
    mine = {k: master[k] for k in shared if k in master} | {"texts": list(request.texts)}
    try:
        with tempfile.TemporaryDirectory(prefix="collab-client-") as tmp:
            party = _party(CLIENT, master["master"], mine, request.timeout, Path(tmp))
            result = _wait_party(party, CLIENT, Path(tmp), request.timeout + 30) | {"pid": party.pid}
    except CollabError as exc:
        node.forward("report", id=jid, key="done", value={"ok": False, "error": str(exc)})
        raise
    finally:
        spare_parties().replenish()  # the next call's client party, now that this one's cores are free
    if receipt is not None:
        counter.commit(receipt)
    node.forward("report", id=jid, key="done", value={"ok": True})
    owner_done = None
    while owner_done is None and time.monotonic() < deadline:
        owner_done = report_of(node.forward("job", id=jid), asset.owner, "done")
        if owner_done is None:
            time.sleep(0.3)
    return {"asset_id": asset.id, "mode": "mpc", "job_id": jid, "routed": True, "owner": asset.owner,
            "preprocessing": request.preprocessing,
            "outputs": [[float(v) for v in row] for row in result["output"]], "labels": None,
            "license": master.get("license"), "receipt": receipt.to_json() if receipt else None, "dp": None,
            "posted": (owner_done or {}).get("posted", []),
            "stats": {"parties": [(owner_done or {}).get("stats"), result.get("stats")],
                      "owner_party": (owner_done or {}).get("owner_party"), "wall_s": time.perf_counter() - t0}}
