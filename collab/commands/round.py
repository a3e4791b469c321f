"""``collab round create|fix|status|join|dispute``: training rounds in the on-chain RoundRegistry.

A round is opened by the base model's owner (``create``), accepted by each
invited participant from its own home (``join``, through the home's node when
one runs: the data is validated and counted locally, committed to by a
dataset asset, and only the sample count and the asset id go on-chain), and
fixed (``fix``) before training starts. The Flower training itself is run by
the participant's node (on the data it joined with, else its ``--data``) and
the orchestrator; ``status`` shows participants,
weights, rounds done, accuracy, ε spent and the state of the round's claim;
``dispute`` uses the aggregator's update receipt the node kept.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from eth_utils import is_address, to_checksum_address
from rich.table import Table

from collab.commands._common import chain_session, emit, kv_table, log, settings
from collab.errors import BadInput, NotFound, Unauthorized, Unavailable

if TYPE_CHECKING:
    from chain.clients.round_registry import Round, RoundRegistryClient
    from collab.commands._common import ChainSession
    from collab.fl.data import Dataset

group = click.Group("round", help="Create, inspect and join training rounds.")

_DURATION = re.compile(r"^(\d+)\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3_600, "d": 86_400}


def _registry(ctx: click.Context, need_account: bool) -> tuple[ChainSession, RoundRegistryClient]:
    from chain.clients.round_registry import RoundRegistryClient

    session = chain_session(ctx, need_account=need_account)
    if "RoundRegistry" not in session.deployment.contracts:
        raise NotFound("this deployment has no RoundRegistry", hint="redeploy with `collab chain deploy`")
    return session, session.client(RoundRegistryClient)


def parse_duration(text: str) -> int:
    """``"3600"``, ``"90s"``, ``"30m"``, ``"2h"``, ``"1d"`` -> seconds (> 0)."""
    match = _DURATION.match(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise BadInput(f"--deadline takes a positive duration such as 3600, 30m, 2h or 1d; got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def parse_ids(text: str) -> list[int]:
    """``"3,4,5"`` -> [3, 4, 5] (Sahara IDs)."""
    ids = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) == 0:
            raise BadInput(f"--participants takes Sahara IDs separated by commas, got {part!r}")
        ids.append(int(part))
    return ids


def round_run_config(config: Path | None, options: dict[str, Any]) -> dict[str, Any]:
    """The run-config overrides a round is opened with: a ``--config`` file's (JSON object or TOML), then the
    options given (``None``: not given). Its task (:func:`collab.fl.runconfig.task_hash`) goes on chain."""
    overrides: dict[str, Any] = {}
    if config is not None:
        try:
            text = config.read_text()
        except FileNotFoundError:
            raise NotFound(f"no such config file: {config}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"{config}: cannot read it ({exc})") from None
        try:
            overrides = json.loads(text) if config.suffix == ".json" else tomllib.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise BadInput(f"{config}: not a {'JSON' if config.suffix == '.json' else 'TOML'} run config ({exc})") from None
        if not isinstance(overrides, dict):
            raise BadInput(f"{config}: a run config is an object of Flower run-config values")
    overrides.update({k: v for k, v in options.items() if v is not None})
    return overrides


def _resolve_account(session: ChainSession, who: str | None) -> str:
    """An address from a Sahara ID, an address, or (None) this home's account."""
    from chain.clients.identity_registry import IdentityRegistryClient

    if who is None:
        assert session.account is not None
        return str(session.account.address)
    if is_address(who):
        return to_checksum_address(who)
    if who.isdigit():
        ident = session.client(IdentityRegistryClient).identity(int(who))
        return ident.account
    raise BadInput(f"--aggregator takes a Sahara ID or an address, got {who!r}")


@group.command("create")
@click.option("--asset", "asset_id", type=click.IntRange(min=1), required=True, help="Base model asset id (yours).")
@click.option("--rounds", type=click.IntRange(min=1, max=10_000), required=True, help="Flower rounds R.")
@click.option("--participants", required=True, metavar="ID,ID,…", help="Invited participants' Sahara IDs.")
@click.option("--min-participants", type=click.IntRange(min=1), required=True, help="N: participants needed.")
@click.option("--epsilon", type=float, required=True, help="ε budget per participant (inf: no DP budget).")
@click.option("--delta", type=float, default=1e-5, show_default=True, help="δ per participant.")
@click.option("--deadline", default="1h", show_default=True, help="Time to accept, from now (e.g. 3600, 30m, 2h).")
@click.option("--creator-share", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="Fraction of the new adapter's Shares you keep (the rest goes to participants by weight).")
@click.option("--aggregator", default=None, metavar="ID|ADDRESS", help="The aggregating orchestrator (default: you).")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Run-config overrides (JSON or TOML) the round's job will use; the options below override it.")
@click.option("--model", default=None, help="Base model: minilm or tiny [default: minilm].")
@click.option("--max-len", type=click.IntRange(8, 512), default=None, help="Tokens per article [default: 64].")
@click.option("--lora-rank", type=click.IntRange(min=1), default=None, help="LoRA rank [default: 8].")
@click.option("--lora-top-layers", type=click.IntRange(min=0), default=None,
              help="Adapters on the top k encoder layers only (0: every layer) [default: 0].")
@click.option("--lora-freeze-a", is_flag=True, default=None,
              help="FFA-LoRA: keep the adapters' A as built from the seed, train only B.")
@click.pass_context
def create(ctx: click.Context, asset_id: int, rounds: int, participants: str, min_participants: int, epsilon: float,
           delta: float, deadline: str, creator_share: float, aggregator: str | None, config: Path | None,
           model: str | None, max_len: int | None, lora_rank: int | None, lora_top_layers: int | None,
           lora_freeze_a: bool | None) -> None:
    """Open a training round over a base model you own."""
    from chain.clients.asset_registry import AssetRegistryClient
    from chain.clients.identity_registry import IdentityRegistryClient
    from chain.clients.round_registry import RoundConfig, delta_units, epsilon_units
    from collab.fl.runconfig import task_hash, task_spec, with_task

    ids = parse_ids(participants)
    if len(set(ids)) != len(ids):
        raise BadInput("--participants lists a Sahara ID twice")
    if min_participants > len(ids):
        raise BadInput(f"--min-participants {min_participants} exceeds the {len(ids)} invited participants")
    seconds = parse_duration(deadline)
    eps, dlt = epsilon_units(epsilon), delta_units(delta)
    run_config = round_run_config(config, {"model": model, "max-len": max_len, "lora-r": lora_rank,
                                           "lora-top-layers": lora_top_layers, "lora-freeze-a": lora_freeze_a})
    run_config = with_task(run_config)  # the job's config: the task spelled out, so no orchestrator default changes it
    spec, chash = task_spec(run_config), task_hash(run_config)
    session, registry = _registry(ctx, need_account=True)
    assert session.account is not None
    assets = session.client(AssetRegistryClient)
    if not assets.exists(asset_id):
        raise NotFound(f"no asset {asset_id}", hint="see `collab asset list`")
    if assets.owner_of(asset_id) != session.account.address:
        raise Unauthorized(f"asset {asset_id} is not yours: only its owner opens rounds over it")
    agg = _resolve_account(session, aggregator)
    if not session.client(IdentityRegistryClient).can_aggregate(agg):
        raise Unauthorized(f"{agg} may not aggregate (it needs the aggregator role, granted by the admin)")
    now = int(session.w3.eth.get_block("latest")["timestamp"])
    cfg = RoundConfig(asset_id, rounds, ids, min_participants, eps, dlt, now + seconds,
                      round(creator_share * 10_000), chash, agg)
    created = registry.create_round(cfg)
    log(f"round {created.round_id} opened; participants accept with `collab join {created.round_id} --data PATH`")
    data = {**registry.get_round(created.round_id).to_json(), "task": spec, "run_config": run_config,
            "tx": created.tx.tx_hash if created.tx else None}
    emit(ctx, data, f"opened round {created.round_id} over asset {asset_id} ({len(ids)} invited, N={min_participants}, "
                    f"ε={epsilon:g}); accept until chain time {now + seconds}; task 0x{chash.hex()} "
                    f"(the round's job runs with run config {json.dumps(run_config, sort_keys=True)})")


@group.command("fix")
@click.argument("round_id", type=click.IntRange(min=1), metavar="ROUND")
@click.pass_context
def fix(ctx: click.Context, round_id: int) -> None:
    """Fix the participant set and weights (the creator, or anyone after the deadline)."""
    _, registry = _registry(ctx, need_account=True)
    r = registry.get_round(round_id)
    if r.accepted < r.min_participants:
        raise BadInput(f"round {round_id} has {r.accepted} accepted participant(s); it needs {r.min_participants}")
    tx = registry.fix(round_id)
    r = registry.get_round(round_id)
    emit(ctx, {**r.to_json(), "tx": tx.tx_hash},
         f"round {round_id} fixed: {r.accepted} participants, total weight {r.total_weight}")


@group.command("status")
@click.argument("round_id", type=click.IntRange(min=1), metavar="ROUND")
@click.pass_context
def status(ctx: click.Context, round_id: int) -> None:
    """Participants, rounds done, accuracy, ε spent per participant, and the round's claim on-chain.

    The chain holds the participants, weights, the recorded ε and the claim;
    rounds done and accuracy come from the round's job: this home's
    orchestrator store if it aggregates the round, else the orchestrator
    through this home's running node; without either, only what the chain
    records (all R rounds once the record is submitted).
    """
    from chain.clients.claim_manager import ClaimManagerClient
    from chain.clients.round_registry import RoundStatus

    session, registry = _registry(ctx, need_account=False)
    r = registry.get_round(round_id)
    parts = registry.participants_of(round_id)
    claim: dict[str, Any] = {"claim_id": None, "status": "none", "settled_asset": None}
    job, source = round_job(ctx, round_id)
    data = job["data"] if job else {}
    claim_id = r.claim_id if any(r.claim_id) else bytes.fromhex(str(data.get("claim_id", "0x"))[2:])
    if len(claim_id) == 32:  # the registry learns the claim id at submitRecord; the job knows it earlier
        status_ = session.client(ClaimManagerClient).claim_status(claim_id)
        claim = {"claim_id": "0x" + claim_id.hex(), "status": status_.name.lower(),
                 "settled_asset": registry.settled_asset(claim_id) or None}
    recorded = r.status >= RoundStatus.RECORDED
    done = data.get("rounds_done", data.get("rounds"))
    progress = {"source": source, "job_id": job["id"] if job else None, "job_state": job["state"] if job else None,
                "job_error": job.get("error") if job else None,
                "rounds_done": int(done) if done is not None else (r.rounds if recorded else None),
                "rounds": r.rounds, "accuracy": data.get("accuracy"), "base_accuracy": data.get("base_accuracy"),
                "dropped": data.get("dropped") or []}
    live_eps = {str(k).lower(): v for k, v in (data.get("epsilon") or {}).items()}
    rows = []
    for p in parts:
        row = p.to_json()
        row["epsilon_spent"] = row["epsilon"] if p.included else live_eps.get(p.account.lower())
        rows.append(row)
    out = {"round": r.to_json(), "participants": rows, "progress": progress, "claim": claim}
    emit(ctx, out, _status_view(r, rows, progress, claim))


def round_job(ctx: click.Context, round_id: int) -> tuple[dict[str, Any] | None, str]:
    """The orchestrator's newest job for ``round_id`` and where it was read ("orchestrator", "node" or "chain")."""
    from orchestrator.client import node_running

    conf = settings(ctx)
    if conf.jobs_db.is_file():  # this home aggregates: its own job store (SQLite WAL, safe to read alongside)
        from orchestrator.jobs import JobStore

        store = JobStore(conf.jobs_db)
        try:
            jobs = [j.to_json() for j in store.list() if j.kind == "round" and j.payload.get("round_id") == round_id]
        finally:
            store.close()
        if jobs:
            return jobs[-1], "orchestrator"
    node = node_running(conf.node_socket, timeout=10)
    if node is not None:
        try:
            listed = node.request("jobs")
        except Unavailable as exc:  # the node runs but its orchestrator is away: the chain still answers
            log(f"the orchestrator did not answer through this home's node ({exc}); showing the chain only")
            return None, "chain"
        jobs = [j for j in listed if j["kind"] == "round" and j["payload"].get("round_id") == round_id]
        if jobs:
            return jobs[-1], "node"
    return None, "chain"


def _fmt(value: Any, spec: str = "g") -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return format(value, spec)


def _status_view(r: Round, rows: list[dict[str, Any]], progress: dict[str, Any], claim: dict[str, Any]) -> Table:
    from chain.clients.round_registry import epsilon_value

    budget = epsilon_value(r.epsilon_budget)
    acc = progress["accuracy"]
    accuracy = "-" if acc is None else f"{acc:.3f}" + (
        f" (base {progress['base_accuracy']:.3f})" if progress.get("base_accuracy") is not None else "")
    summary = {"status": r.status.label, "base asset": r.base_asset_id,
               "rounds done": f"{_fmt(progress['rounds_done'])}/{r.rounds}", "accuracy": accuracy,
               "participants": f"{r.accepted}/{r.invited} accepted, N={r.min_participants}",
               "ε budget": "inf" if math.isinf(budget) else f"{budget:g}", "creator share": f"{r.creator_share_bps / 100:g}%",
               "aggregator": r.aggregator, "claim": f"{claim['status']} {claim['claim_id'] or ''}".strip()}
    if progress["job_id"]:
        summary["job"] = f"{progress['job_state']} {progress['job_id'][:18]} (via {progress['source']})"
        if progress.get("job_error"):
            summary["job error"] = progress["job_error"]
    if claim.get("settled_asset"):
        summary["new asset"] = claim["settled_asset"]
    table = kv_table(summary, title=f"round {r.id}")
    view = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in ("id", "account", "accepted", "weight", "dataset", "included", "ε spent"):
        view.add_column(column)
    dropped = {str(d).lower() for d in progress["dropped"]}
    for p in rows:
        included = "yes" if p["included"] else ("dropped" if p["account"].lower() in dropped else "no")
        view.add_row(str(p["id"]), p["account"] if p["accepted"] else "-", "yes" if p["accepted"] else "no",
                     str(p["weight"] or "-"), str(p["dataset_asset_id"] or "-"), included, _fmt(p["epsilon_spent"]))
    outer = Table.grid()
    outer.add_row(table)
    outer.add_row(view)
    return outer


# --------------------------------------------------------------------- join


def data_commitment(data: Dataset) -> bytes:
    """sha256 over the canonical JSON of the examples (class names, not indices): the dataset asset's contentHash."""
    digest = hashlib.sha256()
    digest.update(json.dumps(list(data.classes)).encode())
    for text, label in zip(data.texts, data.labels, strict=True):
        digest.update(b"\n" + json.dumps([text, data.classes[label]], ensure_ascii=False).encode())
    return digest.digest()


def join_round(ctx: click.Context, round_id: int, data_path: Path, dataset_asset: int | None) -> None:
    """Accept the round through this home's node (or here without one): :func:`orchestrator.local_ops.round_join`.

    The node validates the data before any transaction, accepts on-chain with
    its unlocked keys and keeps the data path for the round, so its SuperNode
    trains on this data when the round's job starts. Without a node the same
    function runs in this process; ``--json`` output and exit codes are the same.
    """
    from collab.commands._route import home_op

    fields = {"round_id": round_id, "data": str(data_path.resolve()), "dataset_asset": dataset_asset}
    out = home_op(ctx, "round_join", fields, note=f"joining round {round_id} through this home's node")
    emit(ctx, out, f"joined round {round_id} with {out['samples']} samples (dataset asset {out['dataset_asset']}); "
                   f"this home's node (`collab node start`) trains on {data_path} when the round starts")


@group.command("join")
@click.argument("round_id", type=click.IntRange(min=1), metavar="ROUND")
@click.option("--data", "data_path", type=click.Path(path_type=Path), required=True,
              help="Your labelled data: a folder <class>/<file>, a CSV (text,label) or a JSONL file.")
@click.option("--dataset-asset", type=click.IntRange(min=1), default=None,
              help="Your dataset asset committing to the data (default: found by its commitment, or registered).")
@click.pass_context
def join(ctx: click.Context, round_id: int, data_path: Path, dataset_asset: int | None) -> None:
    """Accept an invitation: declare your sample count and dataset asset on-chain (through your node if it runs)."""
    join_round(ctx, round_id, data_path, dataset_asset)


# --------------------------------------------------------------------- exclusion dispute


def read_receipt(path: Path) -> dict[str, Any]:
    """An update receipt file: ``{round_id, participant, fl_round, update_commitment, epsilon, signature}`` (hex
    bytes; ε in millionths, as ``chain.clients.round_registry.epsilon_units``)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFound(f"no such receipt file: {path}") from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path}: not a JSON receipt ({exc})") from None
    try:
        receipt = {"round_id": int(raw["round_id"]), "participant": to_checksum_address(raw["participant"]),
                   "fl_round": int(raw["fl_round"]), "update_commitment": _hex(raw["update_commitment"], 32),
                   "epsilon": _epsilon_millionths(raw["epsilon"]), "signature": _hex(raw["signature"], 65)}
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"{path}: a receipt needs round_id, participant, fl_round, update_commitment, epsilon and "
                       f"signature ({exc})") from None
    return receipt


def _epsilon_millionths(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise ValueError(f"epsilon must be an integer number of millionths, got {value!r}")
    return value


def _hex(text: str, size: int) -> bytes:
    value = bytes.fromhex(str(text).removeprefix("0x"))
    if len(value) != size:
        raise ValueError(f"expected {size} bytes, got {len(value)}")
    return value


@group.command("dispute")
@click.argument("round_id", type=click.IntRange(min=1), metavar="ROUND")
@click.option("--receipt", "receipt_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The aggregator's signed receipt for your last-round update (JSON); default: the one your node "
                   "received and kept in this home.")
@click.option("--omission", is_flag=True,
              help="Dispute a record that omits a survivor of the last SecAgg round instead, with the survivor list "
                   "the aggregator endorsed to your node (any participant may, included or not).")
@click.pass_context
def dispute(ctx: click.Context, round_id: int, receipt_path: Path | None, omission: bool) -> None:
    """Reject the round's claim when its record leaves you out despite the aggregator's receipt (or, with
    --omission, leaves out a survivor whose masked update is in the sum)."""
    from chain.clients.claim_manager import ClaimManagerClient, ClaimStatus
    from chain.clients.round_registry import RoundStatus, recover_update_receipt
    from collab.errors import NotFound, ProtocolViolation
    from collab.fl.receipts import endorsed_survivors, latest

    if omission and receipt_path is not None:
        raise BadInput("--omission uses the endorsed survivor list, not a receipt: pass one of them")
    receipt = None
    if not omission:
        receipt_path = receipt_path or latest(settings(ctx).home, round_id)
        receipt = read_receipt(receipt_path)
        if receipt["round_id"] != round_id:
            raise BadInput(f"{receipt_path} is a receipt for round {receipt['round_id']}, not {round_id}")
    session, registry = _registry(ctx, need_account=True)
    assert session.account is not None
    me = session.account.address
    r = registry.get_round(round_id)
    if r.status != RoundStatus.RECORDED:
        raise BadInput(f"round {round_id} is {r.status.label}: there is no recorded claim to dispute")
    manager = session.client(ClaimManagerClient)
    if receipt is None:
        held = endorsed_survivors(settings(ctx).home, round_id, r.rounds)
        if held is None:
            raise NotFound(f"this home holds no survivor list of round {round_id}'s final Flower round {r.rounds} "
                           "endorsed by its aggregator")
        omitted = registry.omitted_survivor(round_id, held[0])
        if omitted is None:
            raise BadInput(f"the record of round {round_id} includes every survivor on your list: nothing to dispute")
        tx = registry.dispute_omission(round_id, r.rounds, held[0], held[1])
        status = manager.claim_status(r.claim_id)
        emit(ctx, {"round_id": round_id, "claim_id": "0x" + r.claim_id.hex(), "claim_status": status.name.lower(),
                   "omitted": omitted, "credit_wei": manager.credit_of(me), "tx": tx.tx_hash},
             f"claim 0x{r.claim_id.hex()[:16]}… {status.name.lower()} (omitted survivor {omitted}); withdraw your "
             f"credit of {manager.credit_of(me)} wei from ClaimManager")
        return
    if receipt["participant"] != me:
        raise Unauthorized(f"{receipt_path} acknowledges {receipt['participant']}'s update, not yours ({me})")
    if receipt["fl_round"] != r.rounds:
        raise BadInput(f"{receipt_path} acknowledges Flower round {receipt['fl_round']}; a dispute needs the "
                       f"receipt of the final round {r.rounds}")
    signer = recover_update_receipt(receipt["signature"], int(session.w3.eth.chain_id), registry.address, round_id, me,
                                    receipt["fl_round"], receipt["update_commitment"], receipt["epsilon"])
    if signer != r.aggregator:
        raise ProtocolViolation(f"the receipt is signed by {signer}, not by the round's aggregator {r.aggregator}")
    if me in registry.included_of(round_id):
        raise BadInput(f"the record of round {round_id} includes you: nothing to dispute")
    tx = registry.dispute_exclusion(round_id, receipt["fl_round"], receipt["update_commitment"], receipt["epsilon"],
                                    receipt["signature"])
    status = manager.claim_status(r.claim_id)
    emit(ctx, {"round_id": round_id, "claim_id": "0x" + r.claim_id.hex(), "claim_status": status.name.lower(),
               "credit_wei": manager.credit_of(me), "tx": tx.tx_hash},
         f"claim 0x{r.claim_id.hex()[:16]}… {'rejected' if status == ClaimStatus.REJECTED else status.name.lower()}; "
         f"withdraw your credit of {manager.credit_of(me)} wei from ClaimManager")
