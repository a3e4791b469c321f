"""The work behind ``collab claims``, ``collab merge`` and ``collab join``: one implementation for the node and the command.

The architecture makes these user commands thin clients of the home's node:
the node holds the unlocked keys, the fraud-proof store its watcher defends
and the lock that serialises its account's transactions, so when it runs it
does the work (:meth:`orchestrator.node.Node.handle` dispatches here). Without
a node the command runs the very same function in its own process. Both get
JSON-able fields in and give plain data out, so ``--json`` output and error
exit codes are identical either way; the command only renders the human form.

An :class:`Actor` says whose keys and chain the work uses; its parts are
obtained lazily, so a merge of local files needs neither a chain nor a
passphrase, and ``claims list|show`` never unlock the keys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import inspect
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collab.errors import BadInput, NotFound, ProtocolViolation, UsageError

if TYPE_CHECKING:
    from collab.merge import MergeSpec
    from collab.merge.assets import AssetGrant

AUDIENCES = ("public", "participants", "licensed", "licensed-verifiers")
MERGE_AUDIENCES = ("participants", "public", "licensed-verifiers")


@dataclass
class Actor:
    """Whose chain session (``w3``, ``deployment``, ``account``), identity and home the work uses.

    ``session(need_account)`` connects (and unlocks the account only when
    asked); ``lock`` wraps every transaction so the node's watcher and these
    operations never race for the account's nonce; ``log`` takes progress lines.
    """

    home: Path
    vault_dir: Path
    session: Callable[[bool], Any]
    identity: Callable[[], Any]
    log: Callable[[str], None]
    lock: contextlib.AbstractContextManager[Any] = field(default_factory=contextlib.nullcontext)


def _client(session: Any, cls: type[Any]) -> Any:
    return cls.from_deployment(session.deployment, session.w3, session.account)


def parse_claim_id(text: str) -> bytes:
    """A 0x-prefixed or bare 32-byte hex claim id (BadInput otherwise)."""
    from collab.fraudproof.store import parse_bytes32

    return parse_bytes32(str(text), "claim id")


# --------------------------------------------------------------------- claims


def claims_post(actor: Actor, program_file: str, inputs_dir: str, audience: str = "public",
                participants: list[str] | None = None, job_id: str | None = None, asset_id: int = 0, log2k: int = 1,
                da_url: str | None = None) -> dict[str, Any]:
    """Run the program on the inputs, store everything for the blob server and watcher, post the claim."""
    from chain.clients.bisection_game import BisectionGameClient
    from chain.clients.claim_manager import Audience, ClaimManagerClient
    from chain.clients.data_availability import DataAvailabilityClient
    from collab.fraudproof.agents import ClaimerAgent
    from collab.fraudproof.store import Store, read_inputs_dir, read_program_file
    from collab.fraudproof.trace import build_trace
    from collab.fraudproof.vm import NoValidOutput
    from eth_utils import is_address, keccak, to_checksum_address

    if audience not in AUDIENCES:
        raise BadInput(f"audience must be one of {', '.join(AUDIENCES)}")
    program = read_program_file(Path(program_file))
    inputs, witnesses = read_inputs_dir(Path(inputs_dir))
    for p in participants or []:
        if not is_address(p):
            raise BadInput(f"participant {p!r} is not an address")
    try:
        trace = build_trace(program, inputs, witnesses)
    except NoValidOutput as exc:
        raise ProtocolViolation(f"the program has no valid output on these inputs: {exc}") from None
    jid = parse_claim_id(job_id) if job_id else keccak(program.root + trace.input_root)
    session = actor.session(True)
    agent = ClaimerAgent(_client(session, ClaimManagerClient), _client(session, BisectionGameClient),
                         _client(session, DataAvailabilityClient), trace, job_id=jid, log2k=int(log2k))
    aud = Audience.LICENSED_VERIFIERS if audience.startswith("licensed") else Audience.parse(audience)
    with actor.lock:
        pointer = _client(session, DataAvailabilityClient).publish_source(da_url) if da_url else bytes(32)
        kw = {"audience": aud, "participants": [to_checksum_address(p) for p in participants or []],
              "asset_id": int(asset_id), "da_pointer": pointer}
        claim = agent.claim_input(**kw)
        Store(actor.home).save_job(claim.claim_id, program, inputs, witnesses)  # before posting: it must be servable
        actor.log(f"posting claim over {len(program.steps)} steps")
        claim_id = agent.post(**kw)
    return {
        "claim_id": "0x" + claim_id.hex(), "job_id": "0x" + jid.hex(), "program_root": "0x" + program.root.hex(),
        "input_root": "0x" + trace.input_root.hex(), "output_root": "0x" + trace.output_root.hex(),
        "trace_root": "0x" + trace.root.hex(), "steps": len(program.steps), "audience": aud.name.lower(),
        "da_pointer": "0x" + pointer.hex(), "da_url": da_url,
    }


def claims_list(actor: Actor, mine: bool = False) -> dict[str, Any]:
    """Every claim posted on this deployment (``mine``: only the home's account's)."""
    from chain.clients.claim_manager import ClaimManagerClient

    session = actor.session(bool(mine))
    manager = _client(session, ClaimManagerClient)
    me = session.account.address.lower() if mine and session.account is not None else None
    rows = []
    for p in manager.posted(from_block=session.deployment.deploy_block):
        if me is not None and p.claimer.lower() != me:
            continue
        rows.append({"claim_id": "0x" + p.claim_id.hex(), "claimer": p.claimer,
                     "status": manager.claim_status(p.claim_id).name.lower(), "audience": p.audience.name.lower(),
                     "steps": p.step_count})
    return {"claims": rows}


def claims_show(actor: Actor, claim_id: str) -> dict[str, Any]:
    """One claim: status, audience, roots, its data-availability pointer and the URL it resolves to."""
    from chain.clients.claim_manager import ClaimManagerClient
    from chain.clients.data_availability import DataAvailabilityClient

    cid = parse_claim_id(claim_id)
    session = actor.session(False)
    manager = _client(session, ClaimManagerClient)
    c = manager.get_claim(cid)
    data = {
        "claim_id": "0x" + cid.hex(), "claimer": c.claimer, "status": c.status.name.lower(),
        "audience": c.audience.name.lower(), "posted_at": c.posted_at, "open_challenges": c.open_challenges,
        "step_count": c.step_count, "input_root": "0x" + c.input_root.hex(), "output_root": "0x" + c.output_root.hex(),
        "trace_root": "0x" + c.trace_root.hex(),
    }
    pointer = manager.roots_of(cid).da_pointer
    data["da_pointer"] = "0x" + pointer.hex()
    data["da_url"] = _client(session, DataAvailabilityClient).source_of(pointer)
    return data


# --------------------------------------------------------------------- merges


@contextlib.contextmanager
def _resolved(actor: Actor, spec: MergeSpec) -> Iterator[tuple[MergeSpec, dict[int, AssetGrant]]]:
    """The spec with asset inputs checked on-chain and decrypted from the vault (temp dirs removed after)."""
    from collab.merge.assets import VaultResolver, asset_ids_of, check_access, local_config_source

    ids = asset_ids_of(spec)
    if not ids:  # local models only: no chain client (web3 is ~0.6 s of imports)
        yield spec.resolve_assets(None), {}
        return
    from chain.clients.asset_registry import AssetRegistryClient
    from chain.clients.licensing import LicensingClient
    from collab.vault import Vault

    session = actor.session(True)
    licensing = _client(session, LicensingClient)
    grants = check_access(_client(session, AssetRegistryClient), licensing, session.account.address, ids)
    actor.log("on-chain check: " + ", ".join(f"asset {g.asset_id} ({g.basis})" for g in grants.values()))
    me = actor.identity()
    with tempfile.TemporaryDirectory(prefix="collab-merge-assets-") as work:
        resolver = VaultResolver(grants, Vault(actor.vault_dir), me.x25519_private_key, licensing, Path(work),
                                 config_from=local_config_source(spec))
        yield spec.resolve_assets(resolver), grants


def merge_run(actor: Actor, config: str, out_dir: str, seed: int = 0, ring_bits: int | None = None,
              claim: bool = False, audience: str = "participants", verify_asset: int | None = None,
              merger_share_bps: int = 0, royalty_bps: int = 0) -> dict[str, Any]:
    """Merge the models (or statistics) named in ``config``; with ``claim``, as a posted fraud-proof program."""
    from collab.merge import RingSum, load_config, merge

    spec = load_config(Path(config))
    out = Path(out_dir)
    if ring_bits is not None and not spec.is_data_aware:
        raise UsageError("--ring-bits applies to regmean and fisher merges only")
    if claim:
        from collab.merge.programs import CLAIMABLE

        if spec.method not in CLAIMABLE:
            raise UsageError(f"--claim takes {', '.join(CLAIMABLE)} merges, not {spec.method}")
        if audience not in MERGE_AUDIENCES:
            raise BadInput(f"audience must be one of {', '.join(MERGE_AUDIENCES)}")
        return _merge_claimed(actor, spec, out, audience, verify_asset, int(merger_share_bps), int(royalty_bps))
    collector = RingSum(frac_bits=int(ring_bits)) if ring_bits is not None else None
    with _resolved(actor, spec) as (resolved, grants):
        actor.log(f"merging {len(spec.models)} input(s) with {spec.method} into {out}")
        result = merge(resolved, out, seed=int(seed), collector=collector)
    return {
        "method": result.method, "out_dir": str(result.out_dir.resolve()), "inputs": list(result.inputs),
        "tensors": result.tensors, "parameters": result.parameters, "weights_sha256": result.weights_sha256,
        "seconds": round(result.seconds, 3), "assets": [g.to_json() for g in grants.values()],
        "details": result.details,
    }


def _merge_claimed(actor: Actor, spec: MergeSpec, out: Path, audience: str, verify_asset: int | None,
                   merger_share_bps: int, royalty_bps: int) -> dict[str, Any]:
    from chain.clients.bisection_game import BisectionGameClient
    from chain.clients.claim_manager import ClaimManagerClient
    from chain.clients.data_availability import DataAvailabilityClient
    from chain.clients.merge_registry import MergeRegistryClient
    from collab.fraudproof.known_roots import KnownRoots
    from collab.merge.assets import local_config_source
    from collab.merge.claimed import describe, execute, record_and_post
    from collab.merge.mergekit_merge import check_out_dir
    from collab.merge.programs import build_plan
    from collab.vault import Vault

    check_out_dir(out)
    session = actor.session(True)
    registry = _client(session, MergeRegistryClient)  # NotFound early when the deployment has no MergeRegistry
    with _resolved(actor, spec) as (resolved, grants):
        actor.log(f"building the {spec.method} program over {len(resolved.models)} input(s)")
        plan = build_plan(resolved)
        source = local_config_source(resolved)
        assert source is not None
        actor.log(f"running and committing {len(plan.job.program.steps)} steps")
        output = execute(plan, out, source, KnownRoots(actor.home))
    vault = Vault(actor.vault_dir, owner=actor.identity().x25519_public)
    with actor.lock:
        posted = record_and_post(
            output, merger=session.account, home=actor.home, vault=vault,
            manager=_client(session, ClaimManagerClient), game=_client(session, BisectionGameClient),
            data=_client(session, DataAvailabilityClient), registry=registry, audience=audience,
            verify_asset=verify_asset or next(iter(grants), 0), merger_share_bps=merger_share_bps,
            royalty_bps=royalty_bps,
        )
    return {
        "claim_id": "0x" + posted.claim_id.hex(), "job_id": "0x" + posted.job_id.hex(), "method": spec.method,
        "out_dir": str(out.resolve()), **describe(output), "content_hash": "0x" + posted.content_hash.hex(),
        "vault_uri": posted.vault_uri, "audience": posted.audience, "parents": list(posted.parents),
        "contributors": [{"account": a, "weight": w} for a, w in zip(posted.contributors, posted.weights)],
        "merger_share_bps": merger_share_bps, "assets": [g.to_json() for g in grants.values()],
    }


def merge_finalize(actor: Actor, claim_id: str) -> dict[str, Any]:
    """End a merge claim's window: the merged asset is registered and its Shares minted."""
    from chain.clients.asset_registry import AssetRegistryClient
    from chain.clients.claim_manager import ClaimManagerClient, ClaimStatus
    from chain.clients.merge_registry import MergeRegistryClient

    cid = parse_claim_id(claim_id)
    session = actor.session(True)
    manager = _client(session, ClaimManagerClient)
    registry = _client(session, MergeRegistryClient)
    job_id = registry.job_of_claim(cid)
    if job_id == bytes(32):
        raise NotFound(f"claim {claim_id} is not a recorded merge")
    status = manager.get_claim(cid).status
    if status == ClaimStatus.PENDING:
        with actor.lock:
            manager.finalize(cid)
        status = manager.get_claim(cid).status
    if status == ClaimStatus.REJECTED:
        raise ProtocolViolation(f"merge claim {claim_id} was rejected: nothing is registered or minted")
    asset_id = registry.settled_asset(cid)
    if asset_id == 0:
        raise ProtocolViolation(f"merge claim {claim_id} finalized but its settlement failed",
                                hint="retry with MergeRegistry.settle")
    job = registry.job(job_id)
    return {"claim_id": "0x" + cid.hex(), "status": status.name.lower(),
            "asset": _client(session, AssetRegistryClient).asset(asset_id).to_json(),
            "contributors": [{"account": a, "weight": w} for a, w in zip(job.contributors, job.weights)],
            "merger_share_bps": job.merger_share_bps}


# --------------------------------------------------------------------- round join


def joined_path(home: Path, round_id: int) -> Path:
    """Where a home keeps what it joined ``round_id`` with (data path, samples, dataset asset)."""
    return Path(home) / "rounds" / f"{int(round_id)}.json"


def joined_data(home: Path, round_id: int) -> Path | None:
    """The data this home joined ``round_id`` with (its node's SuperNode trains on it), None if it did not join."""
    try:
        return Path(json.loads(joined_path(home, round_id).read_text())["data"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def round_join(actor: Actor, round_id: int, data: str, dataset_asset: int | None = None) -> dict[str, Any]:
    """Validate the data, commit to it with a dataset asset, accept the round on-chain, keep the data path.

    The data is parsed first, so malformed data is refused before any
    transaction; only the sample count and the dataset asset id go on-chain.
    The kept path (``<home>/rounds/<round>.json``) is what the home's node
    trains on when the round's job starts (:class:`orchestrator.workers.TaskRunner`).
    """
    import time

    from chain.clients.asset_registry import AssetInput, AssetKind, AssetRegistryClient
    from chain.clients.identity_registry import IdentityRegistryClient
    from chain.clients.round_registry import RoundRegistryClient, RoundStatus
    from collab.commands.round import data_commitment
    from collab.errors import Unauthorized
    from collab.fl.data import load_user_data

    for name, value in (("round_id", round_id), ("dataset_asset", dataset_asset)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise BadInput(f"{name} must be a positive integer, got {value!r}")
    path = Path(str(data))
    if not path.is_absolute():
        raise BadInput(f"the data path must be absolute (the node has its own working directory): {data}")
    dataset = load_user_data(path)  # BadInput naming the file and line, before anything is sent
    session = actor.session(True)
    if "RoundRegistry" not in session.deployment.contracts:
        raise NotFound("this deployment has no RoundRegistry", hint="redeploy with `collab chain deploy`")
    registry = _client(session, RoundRegistryClient)
    me = session.account.address
    r = registry.get_round(round_id)
    if r.status != RoundStatus.OPEN:
        raise BadInput(f"round {round_id} is {r.status.label}: it no longer accepts participants")
    now = int(session.w3.eth.get_block("latest")["timestamp"])
    if now >= r.deadline:
        raise BadInput(f"round {round_id} closed for joining {now - r.deadline} s ago (deadline passed)")
    my_id = _client(session, IdentityRegistryClient).id_of(me)
    if my_id == 0:
        raise Unauthorized(f"{me} has no Sahara ID", hint="register with `collab id register`")
    mine = next((p for p in registry.participants_of(round_id) if p.id == my_id), None)
    if mine is None:
        raise Unauthorized(f"identity {my_id} is not invited to round {round_id}")
    if mine.accepted:
        raise BadInput(f"identity {my_id} already joined round {round_id} with {mine.samples} samples")
    assets = _client(session, AssetRegistryClient)
    commitment = data_commitment(dataset)
    registered = False
    with actor.lock:
        if dataset_asset is None:
            found = next((a for a in assets.assets(owner=me)
                          if a.kind == AssetKind.DATASET and a.content_hash == commitment), None)
            if found is None:
                actor.log(f"registering {path.name} as a dataset asset (commitment {commitment.hex()[:16]}…) …")
                dataset_asset = assets.register(AssetInput(AssetKind.DATASET, commitment)).asset_id
                registered = True
            else:
                dataset_asset = found.id
        elif not assets.exists(dataset_asset) or assets.owner_of(dataset_asset) != me:
            raise Unauthorized(f"dataset asset {dataset_asset} is not yours")
        tx = registry.accept(round_id, len(dataset), dataset_asset)
    record = {"round_id": round_id, "data": str(path), "samples": len(dataset), "classes": dataset.class_counts(),
              "dataset_asset": dataset_asset, "joined_at": int(time.time())}
    kept = joined_path(actor.home, round_id)
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps(record, indent=2))
    return {**record, "registered_dataset": registered, "tx": tx.tx_hash}


# --------------------------------------------------------------------- dispatch

OPS: dict[str, Callable[..., dict[str, Any]]] = {
    "claims_post": claims_post, "claims_list": claims_list, "claims_show": claims_show,
    "merge_run": merge_run, "merge_finalize": merge_finalize, "round_join": round_join,
}


def run(op: str, actor: Actor, fields: dict[str, Any]) -> dict[str, Any]:
    """Run ``op`` with request ``fields`` (BadInput for an unknown op or fields it does not take)."""
    fn = OPS.get(op)
    if fn is None:
        raise BadInput(f"unknown operation {op!r}")
    try:
        inspect.signature(fn).bind(actor, **fields)
    except TypeError as exc:
        raise BadInput(f"{op}: {exc}") from None
    # The JSON round trip here, not only on node.sock, is what makes the direct and the routed result identical.
    return json.loads(json.dumps(fn(actor, **fields), default=_plain))  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)  # paths and the rest
