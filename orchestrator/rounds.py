"""The ``round`` job kind: one federated DP-LoRA training round among named participants' nodes.

The orchestrator runs the Flower SuperLink and the ServerApp (``flwr run``)
through :mod:`collab.fl.deployment`; each participant's node starts its own
SuperNode when it sees the job in a heartbeat reply. States:

* CREATED -> COLLECTING: the SuperLink's address (``superlink_host``: the
  orchestrator's configuration, named in the certificate's SANs), port and
  TLS CA certificate (the CA made in this job's directory,
  :mod:`collab.fl.tls`) are written first, so they travel to the nodes in
  heartbeat replies and the nodes connect to that address; then the SuperLink starts
  (TLS, ``--enable-supernode-auth``). Each named node reports the public half
  of the SuperNode key in its home (``auth_key``); the orchestrator registers
  exactly those keys (``registered/<address>``) and only then does the node
  start its SuperNode and report ``supernode``. A key from anyone else is
  never registered, so its SuperNode is refused;
* COLLECTING -> COMPUTING once every named node has reported (or the job's
  deadline fails it), then ``flwr run`` starts; a node lost mid-round is
  dropped by the ServerApp and the round completes if ``min_participants``
  remain (the claim names only those who contributed: the lost one gets
  nothing);
* COMPUTING -> COMPUTED when the ServerApp's record is final (after a restart
  it is read from the record file; live orphans of a SIGKILLed orchestrator
  are waited for, dead ones are restarted on the same port);
* COMPUTED -> CLAIMED: a child ``claim`` job with a deterministic id (so a
  re-run cannot post twice) over the FedAvg program of the participants'
  reported round metrics; CLAIMED -> FINALIZED/REJECTED follows that claim.

With ``round_id`` in the payload the job drives that ``RoundRegistry`` round
(:mod:`orchestrator.round_chain`): COLLECTING also waits until the round is
fixed on-chain (the nodes accept, the creator's node fixes); COMPUTED first
collects every included participant's BLS consent over the record root and
submits the record (when one refuses or stays silent, it proposes the record
on chain and submits it with those who consented by the deadline); the claim
then names the registry as settlement hook, so its finalization mints
Receipts and Shares. The ServerApp of such a round signs
an update receipt per accepted update with this home's identity (run config
from :meth:`RoundJob._chain_config`), which the participants' nodes keep for
an exclusion dispute.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import psutil
import torch
from eth_utils import is_address, keccak

from collab.config import ENV_PASSPHRASE
from collab.errors import BadInput, ProtocolViolation, Unavailable
from collab.fl.runconfig import check_task, effective, task_config, task_hash
from orchestrator.claims import claim_to_json, prepare_claim
from orchestrator.jobs import Job, JobState, JobStore, register_handler

log = logging.getLogger("collab.orchestrator.round")

DEFAULT_CONFIG: dict[str, Any] = {"model": "tiny", "num-rounds": 1, "max-len": 32, "epochs": 1, "batch-size": 8,
                                  "lr": 0.01, "noise-multiplier": "auto", "epsilon": 50.0, "test-samples": 40,
                                  "round-timeout": 180.0, "node-wait": 60.0}

CONSENT_WAIT = 300.0  # seconds the included participants' nodes have to sign the record root


def job_run_config(config: dict[str, Any]) -> dict[str, Any]:
    """The run config a round job with payload ``config`` trains with, before the chain's values: the app's
    defaults, then this orchestrator's, then the job's."""
    return effective({**DEFAULT_CONFIG, **config})


def job_task_hash(config: dict[str, Any]) -> bytes:
    """The task a round job with payload ``config`` trains: the ``configHash`` to open its RoundRegistry round with."""
    return task_hash(job_run_config(config))


def _alive(pid: int | None, name: str) -> bool:
    if not pid:
        return False
    try:
        proc = psutil.Process(int(pid))
        return proc.status() != psutil.STATUS_ZOMBIE and any(name in part for part in proc.cmdline())
    except psutil.Error:
        return False


def _kill(pid: int | None, name: str) -> None:
    """Stop a process this job started (checked by name, so a recycled pid is left alone) and its children."""
    if not _alive(pid, name):
        return
    proc = psutil.Process(int(pid))  # type: ignore[arg-type]
    for p in [*proc.children(recursive=True), proc]:
        try:
            p.kill()
        except psutil.Error:
            pass


@register_handler
class RoundJob:
    """Runs the Flower side in the orchestrator's home; the claim goes through the ``claim`` kind."""

    kind: ClassVar[str] = "round"

    def __init__(self, home: Path, store_home: Path | None = None, registry: Any = None,
                 superlink_host: str = "127.0.0.1") -> None:
        self.home = Path(home)
        self.superlink_host = superlink_host  # where nodes reach this orchestrator's SuperLinks (configuration)
        self.registry = registry  # RoundRegistryClient with the orchestrator's (aggregator's) account, or None
        self.store_home = Path(store_home or home)
        self.deployments: dict[str, Any] = {}
        self.runs: dict[str, Any] = {}

    def validate(self, payload: dict[str, Any]) -> None:
        parts = payload.get("participants")
        if not isinstance(parts, list) or len(parts) < 2 or not all(is_address(str(p)) for p in parts):
            raise BadInput("a round needs at least two participant addresses")
        if not isinstance(payload.get("config", {}), dict):
            raise BadInput("round config must be an object of Flower run-config values")
        minimum = payload.get("min_participants", 2)
        if not isinstance(minimum, int) or not 1 <= minimum <= len(parts):
            raise BadInput("min_participants must be between 1 and the number of participants")
        run_config = job_run_config(payload.get("config", {}))
        task_config(run_config)  # a malformed task fails here, not in the ServerApp
        rid = payload.get("round_id")
        if rid is not None:
            if not isinstance(rid, int) or rid <= 0:
                raise BadInput("round_id must be a positive RoundRegistry round id")
            if self.registry is None:
                raise BadInput("this orchestrator has no RoundRegistry: submit the round without round_id")
            registered = self.registry.get_round(rid)
            if registered.aggregator.lower() != str(self.registry.account.address).lower():
                raise BadInput(f"round {rid} names another aggregator than this orchestrator")
            # The participants' ClientApps refuse any other task; refusing here saves starting a doomed job.
            check_task(run_config, registered.config_hash, f"round {rid}")
            if not os.environ.get(ENV_PASSPHRASE):
                raise Unavailable(f"this orchestrator runs without {ENV_PASSPHRASE}: its ServerApp could not "
                                  "sign the participants' update receipts", hint=f"restart it with {ENV_PASSPHRASE} set")

    def _dir(self, job: Job) -> Path:
        path = self.home / "rounds" / job.id[2:18]
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _deployment(self, job: Job) -> Any:
        from collab.fl.deployment import FlowerDeployment

        dep = self.deployments.get(job.id)
        if dep is None:
            dep = self.deployments[job.id] = FlowerDeployment(  # the job's address: its certificate names it
                self._dir(job), port=int(job.data["superlink_port"]), host=str(job.data.get("superlink_address", "127.0.0.1")))
            for address in needs_of(job):  # a SuperLink restarted by this process re-registers the known keys
                if job.data.get(f"registered/{address}"):
                    dep.node_keys[address] = self._key_file(job, address)
        return dep

    def _key_file(self, job: Job, address: str) -> Path:
        return self._dir(job) / "flower" / "node-keys" / f"{address}.pub"

    def _register_keys(self, job: Job, store: JobStore) -> None:
        """Register the SuperNode key each named node reported (once per node); nobody else's."""
        dep = self._deployment(job)
        todo: list[tuple[str, str, Path]] = []
        for address in needs_of(job):
            reported = job.data.get(f"r/{address}/auth_key")
            if not reported or reported in (job.data.get(f"registered/{address}"), job.data.get(f"auth_refused/{address}")):
                continue
            try:
                public = check_auth_key(str(reported))
            except BadInput as exc:
                log.warning("job %s: SuperNode key of %s refused: %s", job.id, address, exc)
                store.update_data(job.id, {f"auth_refused/{address}": reported})
                continue
            path = self._key_file(job, address)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.write_text(public)
            todo.append((address, str(reported), path))
        if not todo:
            return
        # One `flwr supernode register` process per key, side by side (each takes seconds on a loaded machine).
        with ThreadPoolExecutor(len(todo)) as pool:
            list(pool.map(dep.register_node, [path for _, _, path in todo]))
        for address, _, path in todo:
            dep.node_keys[address] = path
        # Only now may the nodes start their SuperNodes: they wait for registered/<address>.
        store.update_data(job.id, {f"registered/{address}": reported for address, reported, _ in todo})
        log.info("job %s: SuperNode keys of %s registered", job.id, ", ".join(a for a, _, _ in todo))

    def _ensure_superlink(self, job: Job, store: JobStore) -> None:
        dep = self._deployment(job)
        if "superlink" in dep.processes and dep.processes["superlink"].proc.poll() is None:
            return
        if _alive(job.data.get("superlink_pid"), "flower-superlink"):
            return  # an orphan of a killed orchestrator still serves the nodes
        dep.start_superlink()  # returns once it accepts connections: nodes start SuperNodes only then
        store.update_data(job.id, {"superlink_pid": dep.processes["superlink"].proc.pid, "superlink_ready": True})

    def advance(self, job: Job, store: JobStore) -> JobState:
        from collab.fl.deployment import free_port, listen_host
        from collab.fl.tls import server_tls, tls_hosts

        needs = needs_of(job)
        if job.state == JobState.CREATED:
            host = self.superlink_host  # in the certificate's SANs; nodes connect to it (job data)
            tls = server_tls(self._dir(job) / "flower" / "tls", tls_hosts(host))  # the SuperLink reuses it; the CA key stays here
            store.update_data(job.id, {"superlink_port": free_port(listen_host(host)), "superlink_address": host,
                                       "superlink_ca": tls.ca_cert.read_text()})  # written before the SuperLink exists
            return JobState.COLLECTING
        result = self._dir(job) / "result.json"
        if job.state == JobState.COLLECTING:
            self._ensure_superlink(job, store)
            self._register_keys(job, store)
            reported = [a for a in needs if job.data.get(f"r/{a}/supernode")]
            if len(reported) < len(needs) or not self._fixed(job, store):
                return job.state
            return JobState.COMPUTING
        if job.state == JobState.COMPUTING:
            record = _record(result)
            if record.get("status") in ("completed", "failed"):
                return self._finish_run(job, store, record)
            _progress(job, store, record)
            if job.id in self.runs and self.runs[job.id].proc.poll() is None:
                return job.state
            if _alive(job.data.get("run_pid"), "flwr"):
                return job.state
            self._ensure_superlink(job, store)
            run = self._deployment(job).start_run(self.run_config(job), result)
            self.runs[job.id] = run
            store.update_data(job.id, {"run_pid": run.proc.pid, "run_started": time.time(),
                                       "restarts": int(job.data.get("restarts", -1)) + 1})
            return job.state
        if job.state == JobState.COMPUTED and job.payload.get("round_id") and not job.data.get("record_submitted"):
            if not self._submit_record(job, store):
                return job.state
        state = self.follow_claim(job, store)
        if state == JobState.FINALIZED and job.payload.get("round_id") and self.registry is not None:
            asset = self.registry.settled_asset(bytes.fromhex(job.data["claim_id"][2:]))
            store.update_data(job.id, {"settled_asset": asset})
        return state

    def run_config(self, job: Job) -> dict[str, Any]:
        """The Flower run config of ``job``: defaults, the job's config, then what the chain fixes."""
        return {**DEFAULT_CONFIG, **job.payload.get("config", {}), "expected-participants": len(needs_of(job)),
                "min-participants": int(job.payload.get("min_participants", 2)), **self._chain_config(job)}

    def _chain_config(self, job: Job) -> dict[str, Any]:
        """Run config a registry round takes from the chain; its ServerApp signs an update receipt per update.

        It runs under the SuperLink, which inherits this process's environment,
        so it unlocks this home's identity with the same ``COLLAB_PASSPHRASE``.
        ``aggregator-home`` is server-only: the deployment keeps it (like the
        result path) out of the run config the participants receive.
        The on-chain round count wins over the job's config (a dispute needs
        the receipt of the round the contract calls final), and so do ε and δ:
        the nodes' ledgers and calibrated noise follow the budget the
        participants accepted, which the contract also enforces on the record.
        """
        from chain.clients.round_registry import DELTA_SCALE, epsilon_value

        rid = job.payload.get("round_id")
        if not rid:
            return {}
        r = self.registry.get_round(int(rid))
        return {"registry-round": int(rid), "registry-address": str(self.registry.address),
                "chain-id": int(self.registry.w3.eth.chain_id), "aggregator": str(self.registry.account.address),
                "aggregator-home": str(Path(self.home).resolve()), "num-rounds": r.rounds,
                "epsilon": epsilon_value(r.epsilon_budget), "delta": r.delta / DELTA_SCALE}

    def _fixed(self, job: Job, store: JobStore) -> bool:
        """Without a registry round: always; with one: once the creator fixed it on-chain."""
        from chain.clients.round_registry import RoundStatus

        rid = job.payload.get("round_id")
        if not rid:
            return True
        r = self.registry.get_round(int(rid))
        if r.status < RoundStatus.FIXED:
            return False
        if "total_weight" not in job.data:
            store.update_data(job.id, {"total_weight": r.total_weight, "fixed_accepted": r.accepted})
        return True

    def _submit_record(self, job: Job, store: JobStore) -> bool:
        """Every included participant's consent (reported by its node) -> ``submitRecord``; True once on-chain.

        A participant that refuses, or stays silent past ``consent_wait``, cannot hold the round hostage:
        the record is then proposed on chain, where consents count until its deadline
        (``round_chain.record_by_proposal``), and it settles with those who consented.
        """
        from chain.clients.round_registry import prior_chains
        from orchestrator.round_chain import record_by_proposal, record_from_json, submit_record

        record = record_from_json(job.data["record"])
        sigs = {a: job.data.get(f"r/{a.lower()}/consent") for a in record.participants}
        signed = {a: bytes.fromhex(s[2:]) for a, s in sigs.items() if isinstance(s, str)}
        proposing = "proposal_root" in job.data
        if not proposing and len(signed) == len(sigs):
            tx = submit_record(self.registry, record, [signed[a] for a in record.participants])
            store.update_data(job.id, {"record_submitted": True, **({"record_tx": tx} if tx else {})})
            return True
        refused = {a: s["refused"] for a, s in sigs.items() if isinstance(s, dict)}
        if not proposing and not refused:
            asked = float(job.data.get("consent_asked") or 0)
            if not asked:
                store.update_data(job.id, {"consent_asked": time.time()})
            if not asked or time.time() - asked <= float(job.payload.get("consent_wait", CONSENT_WAIT)):
                return False
        if not proposing:
            why = "; ".join(f"{a} refused: {r}" for a, r in refused.items()) or "some stayed silent"
            log.warning("round job %s: not every included participant consented (%s): proposing the record on "
                        "chain", job.id, why)
        priors = prior_chains(json.loads((self._dir(job) / "attribution.json").read_text()), record)
        progress = record_by_proposal(self.registry, record, signed, priors)
        update: dict[str, Any] = {"consented": list(progress.consented)}
        if progress.root:  # empty on a re-run that finds the record already on chain
            update.update(proposal_root="0x" + progress.root.hex(), proposal_deadline=progress.deadline)
        if progress.proposal_tx:
            update["proposal_tx"] = progress.proposal_tx
        if progress.submitted:
            update.update(record_submitted=True, left_out=progress.left_out(record))
        if progress.record_tx:
            update["record_tx"] = progress.record_tx
        changed = {k: v for k, v in update.items() if job.data.get(k) != v}
        if changed:  # this runs every tick while consents come in: write only news
            store.update_data(job.id, changed)
        return progress.submitted

    @staticmethod
    def follow_claim(job: Job, store: JobStore) -> JobState:
        """COMPUTED -> CLAIMED through a child ``claim`` job (idempotent by its id), then follow its outcome."""
        if job.state == JobState.COMPUTED:
            claim_job, _ = store.create("claim", {"claim": job.data["claim"], "parent": job.id, "submitter": "", "needs": []})
            if job.data.get("claim_job") != claim_job.id:
                store.update_data(job.id, {"claim_job": claim_job.id})
            if claim_job.state in (JobState.FAILED, JobState.CANCELLED):
                raise ProtocolViolation(f"the claim job {claim_job.id} {claim_job.state.value}: {claim_job.error}")
            posted = claim_job.state in (JobState.CLAIMED, JobState.CHALLENGED, JobState.FINALIZED, JobState.REJECTED)
            if posted:
                store.update_data(job.id, {k: v for k, v in claim_job.data.items() if k in ("post_tx", "post_dedup")})
            return JobState.CLAIMED if posted else job.state  # CLAIMED once the claim is on chain
        if job.state in (JobState.CLAIMED, JobState.CHALLENGED):
            child = store.get(job.data["claim_job"])
            store.update_data(job.id, {k: v for k, v in child.data.items() if k in ("post_tx", "finalize_tx", "post_dedup")})
            if child.state in (JobState.FINALIZED, JobState.REJECTED):
                return child.state
            if child.state == JobState.CHALLENGED:
                return JobState.CHALLENGED
            if child.state in (JobState.FAILED, JobState.CANCELLED):
                raise ProtocolViolation(f"the claim job {child.id} {child.state.value}: {child.error}")
            return JobState.CLAIMED if job.state == JobState.CHALLENGED else job.state
        return job.state

    def _finish_run(self, job: Job, store: JobStore, record: dict[str, Any]) -> JobState:
        self._stop(job)
        if record["status"] == "failed":
            raise ProtocolViolation(f"the Flower round failed: {record.get('reason', 'no reason recorded')}")
        last = record["rounds"][-1]
        participants = sorted(last["participants"])
        from collab.fraudproof import builders

        witness = self._dir(job) / f"round-{len(record['rounds'])}.witness"
        if witness.is_file():  # secure aggregation: the claim is the masked ring sum of the SecAgg witness
            from collab.secagg.witness import AggregationWitness

            built = builders.masked_sum_from_witness(AggregationWitness.from_bytes(witness.read_bytes()))
            over = "the SecAgg masked sum of the contributors' updates (round witness)"
        else:  # plain (INSECURE) rounds: the claim is the FedAvg of the updates the aggregator received
            built = builders.fedavg(*_plain_updates(self._dir(job) / f"round-{len(record['rounds'])}.updates.pt",
                                                    participants))
            over = "the FedAvg of the contributors' updates as received (plain aggregation, no SecAgg)"
        extra: dict[str, Any] = {}
        rid = job.payload.get("round_id")
        if rid:  # the registry's job id, audience and hook; the record the participants consent to
            from orchestrator.round_chain import record_to_json, round_claim

            attribution = json.loads((self._dir(job) / "attribution.json").read_text())
            claim, rec = round_claim(self.registry, int(rid), attribution, built, self.store_home)
            extra = {"round_id": int(rid), "record": record_to_json(rec),
                     "record_root": "0x" + self.registry.local_root(rec).hex()}
        else:
            claim = prepare_claim(built, keccak(text=f"round:{job.id}"), self.store_home, participants=[])
        facts = {**extra, "claim": claim_to_json(claim), "claim_id": "0x" + claim.claim_id.hex(),
                 "participants": participants, "dropped": record.get("dropped", []),
                 "accuracy": record.get("final_accuracy"), "base_accuracy": record.get("base_accuracy"),
                 "epsilon": record.get("epsilon", {}), "examples": last["examples"], "rounds": len(record["rounds"]),
                 "rounds_done": len(record["rounds"]), "receipts": record.get("receipts", {}),
                 "secure_aggregation": bool(record.get("secure_aggregation")), "claim_over": over,
                 "flower_seconds": {k: round(float(last[k]), 1) for k in ("train_seconds", "secagg_seconds", "seconds")
                                    if k in last}}
        store.update_data(job.id, facts)
        return JobState.COMPUTED

    def _stop(self, job: Job) -> None:
        dep = self.deployments.pop(job.id, None)
        self.runs.pop(job.id, None)
        if dep is not None:
            dep.stop()
        _kill(job.data.get("run_pid"), "flwr")
        _kill(job.data.get("superlink_pid"), "flower-superlink")

    def close(self) -> None:
        for dep in self.deployments.values():
            dep.stop()


def _progress(job: Job, store: JobStore, record: dict[str, Any]) -> None:
    """Mirror the live record's completed rounds into the job (``collab round status`` reads them from there)."""
    rounds = record.get("rounds") or []
    if len(rounds) == job.data.get("rounds_done", 0) and ("base_accuracy" in job.data or "base_accuracy" not in record):
        return
    store.update_data(job.id, {"rounds_done": len(rounds), "base_accuracy": record.get("base_accuracy"),
                               "accuracy": rounds[-1].get("accuracy") if rounds else None,
                               "epsilon": record.get("epsilon", {}), "dropped": record.get("dropped", [])})


def needs_of(job: Job) -> list[str]:
    """The job's named nodes, lower-case (the form of their report keys)."""
    return [str(a).lower() for a in job.payload.get("needs") or []]


def check_auth_key(text: str) -> str:
    """An OpenSSH EC public key as a node reported it (one line); BadInput otherwise."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    line = text.strip()
    try:
        key = load_ssh_public_key(line.encode())
    except (ValueError, TypeError) as exc:
        raise BadInput(f"not an OpenSSH public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or "\n" in line:
        raise BadInput("a SuperNode key must be one OpenSSH EC public key")
    return line + "\n"


def _record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def _plain_updates(path: Path, participants: list[str]) -> tuple[list[dict[str, torch.Tensor]], list[int]]:
    """The last round's updates and sample counts, in ``participants`` order, as the ServerApp saved them."""
    try:
        saved = torch.load(path, weights_only=True)
        by_name = {n: (s, int(w)) for n, s, w in zip(saved["participants"], saved["states"], saved["weights"], strict=True)}
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ProtocolViolation(f"cannot read the plain round's updates {path.name}: {exc}") from None
    missing = [p for p in participants if p not in by_name]
    if missing:
        raise ProtocolViolation(f"the plain round's updates lack {', '.join(missing)}")
    return [by_name[p][0] for p in participants], [by_name[p][1] for p in participants]
