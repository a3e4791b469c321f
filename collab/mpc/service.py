"""Secure inference as a product: license gate, metering, DP, and the job itself.

One call of :func:`run_inference` is what ``collab infer`` does:

1. **License gate, before any computation.** The client must hold a current
   Long-term license, or an API license whose prepaid credits cover this call
   *plus* every call already signed but not yet posted by the owner's node
   (the contract only debits credits when receipts are posted). Otherwise
   :class:`~collab.errors.Unauthorized` (exit 4) names the reason. No party
   process is started before this check passes.
2. **Privacy budget.** With ``--dp-epsilon`` the owner reserves ε in its
   per-licensee and per-asset ledgers (:mod:`collab.dp.output`); past a budget
   the call is refused, again before any computation.
3. **Call receipt.** An API licensee signs its cumulative, counter-bound
   EIP-712 receipt (:mod:`collab.metering`); the owner's node verifies it,
   stores it in ``<owner home>/metering.db`` and posts the latest one in
   batches with ``Licensing.postCallReceipt`` naming the compute parties, who
   get the governed compute share of the fee; the rest goes to the asset's
   Share holders through the RevenueDistributor.
4. **The job**, by mode:

   * ``mpc``: real CrypTen party processes (``python -m collab.mpc.service``;
     with 2 parties the owner's is the model's persistent party of
     :mod:`collab.mpc.persistent`, the client's a fresh process per call):
     the owner secret-shares the weights, the client its token ids; the
     embedding is L2-normalised on shares (sum of squares, Newton inverse
     square root), an optional classifier head is applied on shares, the
     owner's DP noise is secret-shared *by the owner* and added, and only the
     client opens the result. ``--parties 3`` adds an independent compute
     process acting as CrypTen's TTP (the dealer of every Beaver tuple), so
     neither owner nor client generates tuples; ``--preprocessing he`` (2
     parties) produces them with the two-party TenSEAL BFV protocol of
     :mod:`collab.he` instead (offline phase, then online); ``dealer`` is
     CrypTen's TFP, where the owner's process deals (benchmarks only).
   * ``he``: the asset is a head over a public encoder's embedding; the client
     embeds locally and sends CKKS ciphertexts (:mod:`collab.he.ckks_head`),
     the owner's process evaluates the head and its noise homomorphically.
   * ``plain``: the owner runs the encoder in plaintext on the client's text
     (no input privacy; fastest).

The owner's home says which assets it serves, in ``config.toml``::

    [serve.7]                      # asset id 7
    model = "/path/to/model_dir"   # transformers BERT dir (config, tokenizer, model.safetensors)
    head = "/path/to/head.json"    # optional: a classifier head (collab.he.ckks_head format)

The registered ``contentHash`` must be the sha256 of the head file if there is
one, else of ``model.safetensors`` (or of the vault blob holding it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

import collab.mpc.compat as compat
from collab.dp.output import Budgets, EpsilonLedger, Mechanism, OutputNoise, clip_rows
from collab import sqlite_store
from collab.errors import BadInput, CollabError, NotFound, Unauthorized, Unavailable, UsageError
from collab.metering import CallReceipt, check_progress, request_hash, sign_call_receipt, verify_call_receipt
from collab.mpc.parties import (
    CLIENT, DEFAULT_TIMEOUT, OWNER, PROGRESS, PartyGroup, PartyStats, _share, free_port, run_party_process,
)
from collab.mpc.spare import service_argv, start_service_party

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

    from chain.clients.asset_registry import Asset, AssetRegistryClient
    from chain.clients.licensing import CallReceiptPosted, LicensingClient
    from chain.deployment import Deployment
    from collab.config import Settings
    from collab.he.ckks_head import LinearHead

HELPER = 2
Mode = Literal["mpc", "he", "plain"]
Preprocessing = Literal["he", "dealer"]
Approx = Literal["cheap", "exact"]
DEFAULT_SEQ_LEN = 16
DEFAULT_BATCH = 1
#: Where a client's home keeps owners' encrypted word tables (HE path; collab.he.table_cache)
LOOKUP_CACHE = Path("cache") / "lookup-tables"


# =========================================================================== the party processes


def _party_tensors(job: dict[str, Any], rank: int, loaded: Any = None) -> tuple[Any, Any, dict[str, torch.Tensor] | None]:
    """Each party's private, local preparation (before the rendezvous); ``loaded``: the owner's weights, if kept."""
    from collab.mpc import encoder as enc
    from collab.mpc.model import load_spec, load_weights, model_dir, tokenize

    path = Path(job["model_dir"]) if job.get("model_dir") else model_dir()
    spec = load_spec(path)
    approx = enc.Approximations(**job.get("approx", {}))
    own: dict[str, torch.Tensor] | None = None
    if rank == OWNER:
        own = enc.prepare_weights(loaded if loaded is not None else load_weights(path), spec, int(job["seq_len"]))
        if job.get("head"):
            from collab.he.ckks_head import load_head

            head = load_head(job["head"])
            own["head.w"] = torch.tensor(head.weight.T, dtype=torch.float32)
            own["head.b"] = torch.tensor(head.bias, dtype=torch.float32)
        if job.get("noise") is not None:
            own["noise"] = torch.tensor(job["noise"], dtype=torch.float32)
    if rank == CLIENT:
        tokens = tokenize(list(job["texts"]), int(job["seq_len"]), path)
        own = enc.prepare_inputs(tokens, spec, approx)
    return spec, approx, own


def run_party(rank: int, master: str, job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Body of one party process of a served call; returns what goes to its result file."""
    compat.set_collective_timeout(timeout)
    if rank == HELPER:  # the independent compute node: CrypTen's dealer, sees no input, weight or output
        os.environ.update(RANK=str(rank), WORLD_SIZE="2", RENDEZVOUS=f"tcp://{master}", DISTRIBUTED_BACKEND="gloo")
        from crypten.config import cfg
        from crypten.mpc.provider import TTPServer

        from collab.mpc.fixed import install_ttp_server

        t0 = time.perf_counter()
        cfg.mpc.provider = str(job["provider"])
        install_ttp_server()  # it keeps the fixed weight masks B of this model load
        TTPServer()  # returns when rank 0 sends "terminate" at uninit
        return {"role": "helper", "wall_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    spec, approx, own = _party_tensors(job, rank)
    return run_session(rank, master, job, spec, approx, own, t0=t0)


def run_session(rank: int, master: str, job: dict[str, Any], spec: Any, approx: Any,
                own: dict[str, torch.Tensor] | None, held: dict[str, torch.Tensor] | None = None,
                t0: float | None = None) -> dict[str, Any]:
    """One CrypTen session of a served call: rendezvous, share, (offline,) online, open to the client, uninit.

    A per-call party process runs it once; the owner's persistent party
    (:mod:`collab.mpc.persistent`) runs it once per query with its ``held``
    weights (fixed-point, encoded once per model load) and a fresh rendezvous.
    With ``owner_held`` in the job the matmul weights are never shared:
    :class:`collab.mpc.fixed.OwnerHeldWeight`.
    """
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", RENDEZVOUS=f"tcp://{master}", DISTRIBUTED_BACKEND="gloo")
    import crypten
    import crypten.communicator as comm
    from crypten.config import cfg

    from collab.mpc import encoder as enc
    from collab.mpc import fixed
    from collab.mpc.compat import init_crypten

    t0 = time.perf_counter() if t0 is None else t0
    provider = str(job["provider"])
    he = None
    if provider == "HE":
        from collab.he.provider import install_provider

        he = install_provider()
        he._generator = None  # a new session gets fresh keys (never a previous session's generator) ...
        he.traffic = type(he.traffic)()  # ... and its own traffic count
    cfg.mpc.provider = provider
    batch, seq_len, out_dim = int(job["batch"]), int(job["seq_len"]), int(job["out_dim"])
    init_crypten()
    offline_s = lookup_s = 0.0
    try:
        w_shapes = enc.weight_shapes(spec, seq_len)
        if job.get("head_classes"):
            w_shapes["head.w"], w_shapes["head.b"] = (spec.hidden, int(job["head_classes"])), (int(job["head_classes"]),)
        if job.get("dp"):
            w_shapes["noise"] = (batch, out_dim)
        names = fixed.held_names(w_shapes) if job.get("owner_held") else []
        t_share = time.perf_counter()
        shared = {k: v for k, v in w_shapes.items() if k not in names}
        flat_w = _share({k: own[k] for k in shared} if rank == OWNER and own is not None else None, shared, src=OWNER)
        if names and rank == OWNER and held is None:  # a per-call owner encodes them now
            held = {k: fixed.encode_held(own[k]) for k in names}  # type: ignore[index]
        for k in names:
            flat_w[k] = fixed.OwnerHeldWeight(held[k] if rank == OWNER else None, w_shapes[k])  # type: ignore[index]
        # HE path, owner-held table: the words come from the oblivious lookup, not a one-hot matmul
        lookup = he is not None and bool(names)
        in_shapes = enc.input_shapes(batch, seq_len, spec)
        if lookup:
            del in_shapes["one_hot"]
        flat_in = _share(own if rank == CLIENT else None, in_shapes, src=CLIENT)
        weights = enc.assemble_weights({k: v for k, v in flat_w.items() if not k.startswith(("head.", "noise"))}, spec)
        if job.get("fixed_masks") and not names:  # W - B opened once per session; each query opens only x - A
            weights = enc.mask_weights(weights)
        share_s = time.perf_counter() - t_share
        if lookup:
            from collab.he.provider import share_words
            from collab.he.table_cache import TableCache

            t_lookup = time.perf_counter()
            kept = TableCache(job["lookup_cache"]) if rank == CLIENT and job.get("lookup_cache") else None
            flat_in["word"] = share_words(he, held if rank == OWNER else None,  # type: ignore[arg-type]
                                          own["one_hot"] if rank == CLIENT else None,  # type: ignore[index]
                                          batch, seq_len, spec, kept)
            lookup_s = time.perf_counter() - t_lookup
        inputs = enc.SharedInputs(**flat_in)

        def forward() -> Any:
            pooled = enc.encode(inputs, weights, spec, approx)
            # L2-normalise on shares: this is the output clipping the DP sensitivity rests on.
            norm_sq = (pooled * pooled).sum(-1, keepdim=True)
            out = pooled * enc.approx_inv_sqrt(norm_sq, approx.inv_sqrt_iters, approx.newton_start)
            if "head.w" in flat_w:
                out = out.matmul(flat_w["head.w"]) + flat_w["head.b"]
            return out

        if he is not None:  # offline phase: trace the tuple requests, then produce them all jointly
            he.trace(True)
            forward()
            he.trace(False)
            t_off = time.perf_counter()
            he.fill_cache()
            offline_s = time.perf_counter() - t_off
            he.request_cache = []
        print(f"{PROGRESS} rank {rank} shared", file=sys.stderr, flush=True)
        comm.get().reset_communication_stats()
        t_online = time.perf_counter()
        out = forward()
        if "noise" in flat_w:  # the owner's noise joins before anything is opened
            out = out + flat_w["noise"]
        plain = out.get_plain_text(dst=CLIENT)
        online_s = time.perf_counter() - t_online
        stats = comm.get().get_communication_stats()
    finally:
        crypten.uninit()
    result: dict[str, Any] = {
        "stats": asdict(PartyStats(
            rank=rank, role="owner" if rank == OWNER else "client", wall_s=time.perf_counter() - t0,
            share_s=share_s, online_s=online_s,
            max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            comm_rounds=int(stats["rounds"]), comm_bytes=int(stats["bytes"]),
        )),
        "offline_s": offline_s,
        "lookup_s": lookup_s,
    }  # fmt: skip
    if he is not None:
        result["offline_bytes_sent"] = he.traffic.bytes_sent
    if rank == CLIENT:
        result["output"] = plain.tolist()
    return result


def party_main(argv: list[str] | None = None) -> int:
    """``python -m collab.mpc.service --rank R --master HOST:PORT --job J --out O``; exit code = the error's."""
    ap = argparse.ArgumentParser(prog="python -m collab.mpc.service")
    ap.add_argument("--rank", type=int, required=True, choices=[OWNER, CLIENT, HELPER])
    ap.add_argument("--master", required=True)
    ap.add_argument("--job", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    args = ap.parse_args(argv)
    return run_party_process(
        args.rank, args.out, lambda: run_party(args.rank, args.master, json.loads(args.job.read_text()), args.timeout)
    )


class ServiceParties(PartyGroup):
    """:class:`PartyGroup` running this module's party body (owner, client, optional TTP helper)."""

    def start(self) -> None:
        master = f"{self.host}:{free_port(self.host)}"
        for rank, job in self.jobs.items():
            (self.workdir / f"job{rank}.json").write_text(json.dumps(job))
            argv = service_argv(rank, master, self.workdir / f"job{rank}.json", self.workdir / f"out{rank}.json",
                                self.timeout)
            self.procs[rank] = start_service_party(argv, self.workdir / f"party{rank}.log")
        self._started = time.monotonic()


def launch_parties(jobs: dict[int, dict[str, Any]], timeout: float) -> dict[int, dict[str, Any]]:
    """Run the parties of one call and wait for them (the only place a call's processes start).

    A job with ``owner_held`` weights is served by the model's persistent owner
    party (:func:`collab.mpc.persistent.owner_parties`) and a fresh client
    process; any other (3 parties, ``fixed_masks`` per call) by fresh processes.
    """
    if jobs[OWNER].get("owner_held"):
        from collab.mpc.persistent import owner_parties

        return owner_parties().serve(Path(jobs[OWNER]["model_dir"]), jobs[OWNER], jobs[CLIENT], timeout)
    group = ServiceParties(jobs, timeout=timeout)
    group.start()
    return group.wait()


# =========================================================================== license gate


@dataclass(frozen=True)
class LicenseGrant:
    """Why the client may make this call: as owner, under a Long-term or under an API license."""

    kind: Literal["owner", "long-term", "api"]
    license_id: int = 0
    fee_per_call: int = 0
    calls_left: int | None = None  # API: calls the credits still cover, this one included
    expires: int = 0


def check_license(
    licensing: LicensingClient, assets: AssetRegistryClient, asset_id: int, user: str, unposted: int = 0
) -> LicenseGrant:
    """The client's right to one more call, read on-chain; Unauthorized (exit 4) with the reason otherwise.

    ``unposted`` is the number of calls the owner's node holds signed receipts
    for but has not posted: their fees are still in escrow on-chain, so they
    must be subtracted from the credits.
    """
    from chain.clients.licensing import LicenseKind

    owner = assets.owner_of(asset_id)  # UnknownAsset -> NotFound (exit 3)
    if owner.lower() == user.lower():
        return LicenseGrant("owner")
    reasons: list[str] = []
    lt_id = licensing.license_of(asset_id, user, LicenseKind.LONG_TERM)
    if lt_id:
        lt = licensing.license(lt_id)
        if licensing.is_licensed(asset_id, user, LicenseKind.LONG_TERM):
            return LicenseGrant("long-term", lt_id, expires=lt.expires)
        reasons.append(f"Long-term license {lt_id} expired at {_utc(lt.expires)}")
    api_id = licensing.license_of(asset_id, user, LicenseKind.API)
    if api_id:
        api = licensing.license(api_id)
        fee = api.terms.fee_per_call
        covered = api.escrow // fee if fee else 10**18
        left = covered - max(0, unposted)
        if api.expires and not licensing.is_licensed(asset_id, user, LicenseKind.API) and covered >= 1:
            reasons.append(f"API license {api_id} expired at {_utc(api.expires)}")
        elif left >= 1:
            return LicenseGrant("api", api_id, fee, left, api.expires)
        else:
            reasons.append(
                f"API license {api_id} is exhausted: its {api.escrow} wei of credit cover {covered} call(s) at "
                f"{fee} wei and {unposted} signed call(s) await posting"
            )
    if not reasons:
        raise Unauthorized(f"{user} holds no API or Long-term license for asset {asset_id}",
                           hint="buy one with `collab license buy OFFER_ID`", asset_id=asset_id)
    raise Unauthorized(f"not licensed for asset {asset_id}: " + "; ".join(reasons),
                       hint="top up with `collab license top-up` or buy a new license", asset_id=asset_id)


def _utc(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# =========================================================================== metering (owner's node)


_METER_SCHEMA = """
CREATE TABLE IF NOT EXISTS receipts (
    license_id INTEGER PRIMARY KEY,
    licensee TEXT NOT NULL,
    total_calls INTEGER NOT NULL,
    last_hash BLOB NOT NULL,
    signature BLOB NOT NULL,
    compute_parties TEXT NOT NULL,
    posted_total INTEGER NOT NULL DEFAULT 0
);
"""


class MeterStore:
    """The owner node's latest signed receipt per license and what it has posted (``metering.db``)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        with self._db() as db:
            db.executescript(_METER_SCHEMA)

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        return sqlite_store.connect(self.path)

    def latest(self, license_id: int) -> tuple[CallReceipt, bytes, int] | None:
        """(receipt, signature, posted_total) held for the license, or None."""
        with self._db() as db:
            row = db.execute("SELECT total_calls, last_hash, signature, posted_total FROM receipts WHERE license_id = ?",
                             (int(license_id),)).fetchone()
        if row is None:
            return None
        return CallReceipt(int(license_id), int(row[0]), bytes(row[1])), bytes(row[2]), int(row[3])

    def unposted(self, license_id: int, calls_paid: int = 0) -> int:
        """Signed calls whose fees have not been released on-chain yet."""
        held = self.latest(license_id)
        return 0 if held is None else max(0, held[0].total_calls - max(held[2], calls_paid))

    def accept(self, licensing: LicensingClient, receipt: CallReceipt, signature: bytes, licensee: str,
               compute_parties: Sequence[str]) -> tuple[CallReceipt, bytes, int] | None:
        """Verify the licensee's signature and that the counter grew; keep it as the one to post.

        Returns what was held before, for :meth:`restore` if the call then fails.
        """
        verify_call_receipt(licensing.domain(), receipt, signature, licensee)
        held = self.latest(receipt.license_id)
        check_progress(held[0] if held else None, receipt)
        with self._db() as db:
            db.execute(
                "INSERT INTO receipts (license_id, licensee, total_calls, last_hash, signature, compute_parties) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(license_id) DO UPDATE SET total_calls = excluded.total_calls, "
                "last_hash = excluded.last_hash, signature = excluded.signature, "
                "compute_parties = excluded.compute_parties",
                (receipt.license_id, licensee, receipt.total_calls, receipt.last_request_hash, signature,
                 json.dumps(list(compute_parties))),
            )
        return held

    def restore(self, license_id: int, previous: tuple[CallReceipt, bytes, int] | None) -> None:
        """Forget a receipt whose call failed (the client is not charged for it)."""
        with self._db() as db:
            if previous is None:
                db.execute("DELETE FROM receipts WHERE license_id = ? AND posted_total = 0", (int(license_id),))
            else:
                receipt, signature, _ = previous
                db.execute("UPDATE receipts SET total_calls = ?, last_hash = ?, signature = ? WHERE license_id = ?",
                           (receipt.total_calls, receipt.last_request_hash, signature, int(license_id)))

    def flush(self, licensing: LicensingClient, min_calls: int = 1) -> list[CallReceiptPosted]:
        """Post every held receipt with at least ``min_calls`` unpaid calls (one transaction each)."""
        from chain.errors import ContractRevert

        with self._db() as db:
            rows = db.execute("SELECT license_id, compute_parties FROM receipts WHERE total_calls > posted_total").fetchall()
        posted = []
        for license_id, parties in rows:
            held = self.latest(int(license_id))
            assert held is not None
            receipt, signature, posted_total = held
            calls_paid = licensing.license(receipt.license_id).calls_paid
            if receipt.total_calls - max(posted_total, calls_paid) < min_calls and receipt.total_calls > calls_paid:
                continue
            if receipt.total_calls > calls_paid:
                try:
                    posted.append(licensing.post_call_receipt(receipt, signature, json.loads(parties)))
                except ContractRevert as exc:
                    if exc.error_name != "StaleCallReceipt":
                        raise
            with self._db() as db:
                db.execute("UPDATE receipts SET posted_total = ? WHERE license_id = ?",
                           (receipt.total_calls, receipt.license_id))
        return posted


class ClientCounter:
    """The licensee's own count of calls signed per license (``<client home>/calls.db``)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        with sqlite3.connect(self.path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS calls (license_id INTEGER PRIMARY KEY, total INTEGER NOT NULL)")

    def next_receipt(self, license_id: int, calls_paid: int, request: bytes) -> CallReceipt:
        """The receipt for one more call: max(own count, paid on-chain) + 1."""
        with sqlite3.connect(self.path) as db:
            row = db.execute("SELECT total FROM calls WHERE license_id = ?", (int(license_id),)).fetchone()
        return CallReceipt(int(license_id), max(int(row[0]) if row else 0, calls_paid) + 1, request_hash(request))

    def commit(self, receipt: CallReceipt) -> None:
        with sqlite3.connect(self.path) as db:
            db.execute("INSERT INTO calls VALUES (?, ?) ON CONFLICT(license_id) DO UPDATE SET total = excluded.total",
                       (receipt.license_id, receipt.total_calls))


# =========================================================================== the owner's node


@dataclass(frozen=True)
class ServedModel:
    """What the owner's home serves for one asset."""

    asset_id: int
    model_dir: Path
    head_path: Path | None = None

    def head(self) -> LinearHead | None:
        from collab.he.ckks_head import load_head

        return load_head(self.head_path) if self.head_path else None


def _sha256(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()


@dataclass
class OwnerNode:
    """The asset owner's side: its home's config, ledgers, metering store and chain account."""

    settings: Settings
    w3: Web3
    deployment: Deployment
    account: LocalAccount
    compute_parties: tuple[str, ...] = ()
    batch: int = 1
    require_dp: bool = False
    budgets: Budgets = field(default_factory=Budgets)

    @classmethod
    def from_home(cls, settings: Settings, w3: Web3, deployment: Deployment, account: LocalAccount) -> OwnerNode:
        """Read ``[metering]`` (batch) and ``[dp]`` (budgets, require) from the owner's config.toml."""
        meter, dp = settings.section("metering"), settings.section("dp")
        try:
            per_offer = {int(k): float(v) for k, v in dict(dp.get("license_budgets", {})).items()}
            budgets = Budgets(float(dp.get("licensee_budget", Budgets.licensee)),
                              float(dp.get("asset_budget", Budgets.asset)), per_offer)
            return cls(settings, w3, deployment, account, batch=max(1, int(meter.get("batch", 1))),
                       require_dp=bool(dp.get("require", False)), budgets=budgets)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"bad [metering]/[dp] settings in {settings.home / 'config.toml'}: {exc}") from None

    @property
    def address(self) -> str:
        return str(self.account.address)

    def licensing(self) -> LicensingClient:
        from chain.clients.licensing import LicensingClient

        return LicensingClient.from_deployment(self.deployment, self.w3, self.account)

    def assets(self) -> AssetRegistryClient:
        from chain.clients.asset_registry import AssetRegistryClient

        return AssetRegistryClient.from_deployment(self.deployment, self.w3, self.account)

    def meter(self) -> MeterStore:
        self.settings.ensure_home()
        return MeterStore(self.settings.db_path("metering"))

    def ledger(self) -> EpsilonLedger:
        self.settings.ensure_home()
        return EpsilonLedger(self.settings.db_path("dp_ledger"), self.budgets)

    def served(self, asset: Asset) -> ServedModel:
        """The model this home serves for ``asset``; NotFound if none, BadInput if it is not the registered file."""
        entry = self.settings.section("serve").get(str(asset.id))
        if not isinstance(entry, dict) or "model" not in entry:
            raise NotFound(f"the owner's home {self.settings.home} does not serve asset {asset.id}",
                           hint=f"add [serve.{asset.id}] model = \"DIR\" to its config.toml")
        served = ServedModel(asset.id, Path(entry["model"]).expanduser(),
                             Path(entry["head"]).expanduser() if entry.get("head") else None)
        committed = served.head_path or served.model_dir / "model.safetensors"
        if not committed.is_file():
            raise NotFound(f"asset {asset.id}: {committed} does not exist")
        if _sha256(committed) not in self._accepted_hashes(asset):
            raise BadInput(f"{committed} is not the file registered as asset {asset.id} (contentHash differs)")
        return served

    def _accepted_hashes(self, asset: Asset) -> set[bytes]:
        hashes = {asset.content_hash}
        if asset.vault_uri.startswith("vault://") and self.settings.vault_dir.is_dir():
            from collab.vault import Vault

            try:
                entry = Vault(self.settings.vault_dir).entry(asset.vault_uri)
                if entry.plaintext_sha256:
                    hashes.add(entry.plaintext_sha256)
            except CollabError:
                pass
        return hashes


# =========================================================================== one call


@dataclass(frozen=True)
class InferRequest:
    """What the client asks for (all public except ``texts``)."""

    asset_id: int
    texts: tuple[str, ...]
    mode: Mode = "mpc"
    parties: int = 2
    preprocessing: Preprocessing = "he"
    dp_epsilon: float | None = None
    dp_mechanism: Mechanism = "gaussian"
    seq_len: int = DEFAULT_SEQ_LEN
    timeout: float = DEFAULT_TIMEOUT
    approx: Approx = "cheap"

    def __post_init__(self) -> None:
        if self.approx not in ("cheap", "exact"):
            raise UsageError("--approx is cheap or exact")
        if self.mode not in ("mpc", "he", "plain"):
            raise UsageError(f"unknown mode {self.mode!r} (mpc, he or plain)")
        if self.parties not in (2, 3):
            raise UsageError("--parties is 2 or 3")
        if self.preprocessing not in ("he", "dealer"):
            raise UsageError("--preprocessing is he or dealer")
        if self.parties == 3 and self.preprocessing == "he":
            raise UsageError("with 3 parties the third one deals the tuples; --preprocessing he is two-party")
        if not self.texts or any(not t.strip() for t in self.texts):
            raise BadInput("need a non-empty --text")
        if not 2 <= self.seq_len <= 512:
            raise BadInput("--seq-len must be in [2, 512]")

    @property
    def provider(self) -> str:
        """CrypTen's tuple provider name for this request."""
        if self.parties == 3:
            return "TTP"
        return "HE" if self.preprocessing == "he" else "TFP"

    def request_bytes(self, nonce: bytes) -> bytes:
        """What the receipt's request hash binds: the public parameters and a fresh nonce (never the text)."""
        public = {"asset": self.asset_id, "mode": self.mode, "parties": self.parties, "pre": self.preprocessing,
                  "eps": self.dp_epsilon, "seq": self.seq_len, "batch": len(self.texts), "nonce": nonce.hex()}
        return json.dumps(public, sort_keys=True).encode()


@dataclass
class InferResult:
    """What the client receives, plus the call's public accounting."""

    asset_id: int
    mode: str
    outputs: list[list[float]]
    labels: list[str] | None
    license: dict[str, Any]
    receipt: dict[str, Any] | None
    dp: dict[str, Any] | None
    posted: list[dict[str, Any]]
    stats: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_inference(owner: OwnerNode, client: LocalAccount, request: InferRequest, *,
                  client_home: Path | None = None) -> InferResult:
    """One licensed, metered, optionally DP call; see the module docstring for the order of checks."""
    t0 = time.perf_counter()
    assets, licensing = owner.assets(), owner.licensing()
    asset = assets.asset(request.asset_id)  # NotFound (exit 3) for an unknown asset
    served = owner.served(asset)
    head = served.head()
    if request.mode == "he" and head is None:
        raise BadInput(f"asset {asset.id} has no head: --mode he evaluates a head over a public encoder's embedding")
    meter = owner.meter()

    # 1. License gate (on-chain), before any computation.
    held_paid = 0
    from chain.clients.licensing import LicenseKind

    api_id = licensing.license_of(asset.id, client.address, LicenseKind.API)
    if api_id:
        held_paid = licensing.license(api_id).calls_paid
    grant = check_license(licensing, assets, asset.id, client.address,
                          meter.unposted(api_id, held_paid) if api_id else 0)

    # 2. Privacy budget.
    if owner.require_dp and request.dp_epsilon is None and grant.kind != "owner":
        raise Unauthorized(f"the owner of asset {asset.id} serves it only with DP noise", hint="pass --dp-epsilon E")
    out_dim = head.classes if head is not None else _hidden(served.model_dir)
    noise = charge = None
    ledger = owner.ledger()
    if request.dp_epsilon is not None:
        noise = OutputNoise.calibrate(request.dp_epsilon, out_dim, mechanism=request.dp_mechanism,
                                      lipschitz=head.lipschitz if head is not None else 1.0)
        if head is not None and head.poly:
            raise BadInput("DP noise is calibrated for linear heads only (a polynomial head has no clipped bound)")
        charge = ledger.reserve(asset.id, client.address, grant.license_id, noise)

    # 3. The licensee's receipt, checked and kept by the owner's node before serving.
    receipt = None
    compute = _compute_parties(owner, request)
    counter = ClientCounter((client_home or owner.settings.home) / "calls.db")
    accepted = False
    previous: tuple[CallReceipt, bytes, int] | None = None
    try:
        if grant.kind == "api":
            receipt = counter.next_receipt(grant.license_id, held_paid, request.request_bytes(os.urandom(16)))
            signature = sign_call_receipt(client, licensing.domain(), receipt)
            previous = meter.accept(licensing, receipt, signature, client.address, compute)
            accepted = True
        # 4. The job.
        outputs, stats = _execute(request, served, head, noise, len(request.texts), out_dim,
                                  (client_home or owner.settings.home) / LOOKUP_CACHE)
    except BaseException:  # a failed call costs the client neither a call nor ε
        if charge is not None:
            ledger.release(charge)
        if accepted and receipt is not None:
            meter.restore(receipt.license_id, previous)
        raise
    if receipt is not None:
        counter.commit(receipt)
    if charge is not None:
        ledger.confirm(charge)
    posted = [{"license_id": p.license_id, "total_calls": p.total_calls, "calls": p.calls, "amount": p.amount,
               "compute_fee_per_party": p.compute_fee_per_party, "tx": p.tx.tx_hash if p.tx else None}
              for p in meter.flush(licensing, owner.batch)] if grant.kind == "api" else []
    stats["wall_s"] = time.perf_counter() - t0
    return InferResult(
        asset_id=asset.id, mode=request.mode, outputs=outputs,
        labels=[head.label_of(np.asarray(o)) for o in outputs] if head is not None else None,
        license={"kind": grant.kind, "license_id": grant.license_id, "calls_left": grant.calls_left},
        receipt=receipt.to_json() if receipt else None,
        dp={**noise.to_json(), "spent_licensee": ledger.spent(asset.id, client.address),
            "spent_asset": ledger.spent(asset.id)} if noise else None,
        posted=posted, stats=stats,
    )  # fmt: skip


def _hidden(model_dir: Path) -> int:
    from collab.mpc.model import load_spec

    return load_spec(model_dir).hidden


def _compute_parties(owner: OwnerNode, request: InferRequest) -> list[str]:
    """Who computed: the owner's node always; with 3 parties also the configured helper node."""
    parties = [owner.address]
    if request.mode == "mpc" and request.parties == 3:
        parties += [p for p in owner.compute_parties if p.lower() != owner.address.lower()]
    return parties


def _execute(request: InferRequest, served: ServedModel, head: LinearHead | None, noise: OutputNoise | None,
             batch: int, out_dim: int, lookup_cache: Path) -> tuple[list[list[float]], dict[str, Any]]:
    drawn = noise.sample((batch, out_dim)) if noise is not None else None  # the owner's draw
    if request.mode == "plain":
        return _plain(request, served, head, drawn), {}
    if request.mode == "he":
        return _he(request, served, head, drawn)  # type: ignore[arg-type]
    from collab.mpc.encoder import preset

    # Two parties: the model's persistent owner party with owner-held weights (nothing opened, per load or
    # per query); three: fresh processes with W - B opened once per call (the helper keeps B, see fixed.py).
    persistent = request.parties == 2
    common = {"seq_len": request.seq_len, "batch": batch, "out_dim": out_dim, "provider": request.provider,
              "model_dir": str(served.model_dir), "dp": drawn is not None,
              "approx": preset(request.approx), "fixed_masks": not persistent, "owner_held": persistent,
              "head_classes": head.classes if head is not None else 0}
    jobs: dict[int, dict[str, Any]] = {
        OWNER: dict(common, head=str(served.head_path) if served.head_path else None,
                    noise=drawn.tolist() if drawn is not None else None),
        # the client's job alone carries the texts, and where it keeps owners' encrypted tables (HE path)
        CLIENT: dict(common, texts=list(request.texts), lookup_cache=str(lookup_cache)),
    }
    if request.parties == 3:
        jobs[HELPER] = {"provider": "TTP"}
    results = launch_parties(jobs, request.timeout)
    stats = {"parties": [results[r]["stats"] for r in (OWNER, CLIENT)], "offline_s": results[OWNER].get("offline_s", 0.0),
             "lookup_s": results[OWNER].get("lookup_s", 0.0)}
    if "party" in results[OWNER]:  # the persistent owner party: its pid, how many queries it served, its load time
        stats["owner_party"] = results[OWNER]["party"]
    if "offline_bytes_sent" in results[OWNER]:
        stats["offline_bytes_sent"] = results[OWNER]["offline_bytes_sent"] + results[CLIENT]["offline_bytes_sent"]
    return [[float(v) for v in row] for row in results[CLIENT]["output"]], stats


def _plain(request: InferRequest, served: ServedModel, head: LinearHead | None,
           drawn: np.ndarray | None) -> list[list[float]]:
    """``--mode plain``: the owner runs the real encoder on the client's text."""
    from collab.mpc.model import reference_embeddings, tokenize

    emb = clip_rows(reference_embeddings(tokenize(list(request.texts), request.seq_len, served.model_dir),
                                         served.model_dir).double().numpy())
    out = head.plain(emb) if head is not None else emb
    if drawn is not None:
        out = out + drawn
    return np.asarray(out).tolist()


def _he(request: InferRequest, served: ServedModel, head: LinearHead,
        drawn: np.ndarray | None) -> tuple[list[list[float]], dict[str, Any]]:
    """``--mode he``: client-side public embedding, CKKS, the owner's head in a separate process."""
    from collab.he.ckks_head import CkksClient
    from collab.mpc.model import reference_embeddings, tokenize

    emb = clip_rows(reference_embeddings(tokenize(list(request.texts), request.seq_len, served.model_dir),
                                         served.model_dir).double().numpy())
    client = CkksClient()
    outputs, sent = [], 0
    with tempfile.TemporaryDirectory(prefix="collab-he-") as tmp:
        work = Path(tmp)
        for i, row in enumerate(emb):
            req = client.request(row)
            sent += len(req)
            (work / "request.bin").write_bytes(req)
            cmd = [sys.executable, "-m", "collab.he.ckks_head", "--head", str(served.head_path),
                   "--request", str(work / "request.bin"), "--reply", str(work / "reply.bin")]
            if drawn is not None:
                (work / "noise.json").write_text(json.dumps(drawn[i].tolist()))
                cmd += ["--noise", str(work / "noise.json")]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=request.timeout)
            except subprocess.TimeoutExpired:
                raise Unavailable(f"the owner's HE process timed out after {request.timeout:.0f} s") from None
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1].removeprefix("error: ")
                raise Unavailable(f"the owner's HE process exited with code {proc.returncode}: {last}")
            outputs.append(client.decrypt((work / "reply.bin").read_bytes(), head.classes).tolist())
    return outputs, {"he_request_bytes": sent}


if __name__ == "__main__":
    sys.exit(party_main())
