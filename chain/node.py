"""What ``collab chain up|status|down|deploy`` do, as plain functions.

The embedded chain is an anvil started detached (its own session) so that it
outlives the command that started it; its pid, port and state file are kept
in ``<home>/chain/anvil.json`` so later commands find and stop it. ``up`` is
idempotent: it reuses a running chain and a deployment whose contracts still
have code there, and deploys otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain.anvil import CHAIN_ID, DEFAULT_PORT, AnvilProcess, dev_account, is_anvil_pid, pid_alive, rpc_answers, terminate_pid
from chain.client import AbiRegistry, connect, default_artifacts, rpc_guard, send_transaction
from chain.deploy import deploy_all
from chain.deployment import Deployment
from collab.config import Settings
from collab.errors import BadInput, CollabError, Unavailable

log = logging.getLogger(__name__)

RUN_FILE = "anvil.json"
LOG_FILE = "anvil.log"


def _run_file(settings: Settings) -> Path:
    return settings.chain_dir / RUN_FILE


def running_chain(settings: Settings) -> dict[str, Any] | None:
    """The recorded embedded chain if its anvil is still alive, else None (stale records are removed)."""
    path = _run_file(settings)
    try:
        record: dict[str, Any] = json.loads(path.read_text())
        pid, port = int(record["pid"]), int(record["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid_alive(pid) and is_anvil_pid(pid, port):
        return record
    path.unlink(missing_ok=True)
    return None


def chain_up(
    settings: Settings,
    port: int | None = None,
    state_file: Path | str | None = None,
    *,
    profile: str = "default",
    params: Mapping[str, int] | None = None,
) -> Deployment:
    """Start (or reuse) the embedded anvil, deploy if needed, write the deployment file."""
    record = running_chain(settings)
    started = record is None
    if record is not None:
        if port is not None and int(record["port"]) != port:
            raise BadInput(f"the chain of this home already runs on port {record['port']}", hint="run `collab chain down` first")
        wanted = str(Path(state_file).expanduser().resolve()) if state_file else None
        if wanted is not None and wanted != record.get("state_file"):
            raise BadInput(f"the chain of this home already runs with state {record.get('state_file')}", hint="run `collab chain down` first")
        rpc_url = str(record["rpc_url"])
    else:
        default_artifacts()  # compile (or load the cache) first: a broken source must not leave a chain behind
        chain_dir = settings.ensure_dir(settings.chain_dir)
        state = Path(state_file).expanduser().resolve() if state_file else None
        node = AnvilProcess(port or DEFAULT_PORT, state, log_path=chain_dir / LOG_FILE, detached=True).start()
        rpc_url = node.rpc_url
        record = {"pid": node.pid, "port": node.port, "rpc_url": rpc_url, "state_file": str(state) if state else None, "started_at": int(time.time())}
        _run_file(settings).write_text(json.dumps(record, indent=2) + "\n")
    try:
        w3 = connect(rpc_url)
        return ensure_deployed(w3, settings, dev_account(0), rpc_url=rpc_url, profile=profile, params=params)
    except BaseException:
        if started:  # do not leave a chain without contracts behind (errors, Ctrl-C)
            chain_down(settings)
        raise


def ensure_deployed(
    w3: Web3,
    settings: Settings,
    deployer: LocalAccount,
    *,
    rpc_url: str,
    profile: str = "default",
    params: Mapping[str, int] | None = None,
) -> Deployment:
    """Reuse the home's deployment when it is live on this chain, else deploy and save."""
    existing = _load_if_present(settings.deployment_path)
    if existing is not None and deployment_is_live(w3, existing):
        existing.rpc_url = rpc_url
        existing.save(settings.deployment_path)
        log.info("reusing the deployment in %s", settings.deployment_path)
        return existing
    log.info("deploying collab's contracts to %s", rpc_url)
    deployment = deploy_all(w3, deployer, profile=profile, params=params, rpc_url=rpc_url)
    deployment.save(settings.deployment_path)
    return deployment


def _load_if_present(path: Path) -> Deployment | None:
    if not path.is_file():
        return None
    try:
        return Deployment.load(path)
    except CollabError:
        return None


def deployment_is_live(w3: Web3, deployment: Deployment) -> bool:
    """Same chain id, code at every address and ABIs unchanged since deploy."""
    artifacts = default_artifacts()
    with rpc_guard(w3):
        if int(w3.eth.chain_id) != deployment.chain_id:
            return False
        for name, entry in deployment.contracts.items():
            artifact = artifacts.get(entry.get("artifact", name))
            if artifact is None or artifact.abi_hash != entry["abi_hash"]:
                return False
            if len(w3.eth.get_code(Web3.to_checksum_address(entry["address"]))) == 0:
                return False
    return bool(deployment.contracts)


def chain_status(settings: Settings) -> dict[str, Any]:
    """What runs and what is deployed, as a JSON-able dict (never raises for a down chain)."""
    record = running_chain(settings)
    deployment = _load_if_present(settings.deployment_path)
    rpc_url = str(record["rpc_url"]) if record else (settings.rpc_url or (deployment.rpc_url if deployment else None))
    status: dict[str, Any] = {
        "embedded": record is not None,
        "pid": record["pid"] if record else None,
        "state_file": record.get("state_file") if record else None,
        "rpc_url": rpc_url,
        "reachable": False,
        "chain_id": None,
        "block_number": None,
        "deployment_path": str(settings.deployment_path),
        "deployed": False,
        "contracts": {name: e["address"] for name, e in deployment.contracts.items()} if deployment else {},
    }
    if rpc_url and rpc_answers(rpc_url):
        w3 = connect(rpc_url)
        status.update(reachable=True, chain_id=int(w3.eth.chain_id), block_number=int(w3.eth.block_number))
        status["deployed"] = bool(deployment and deployment_is_live(w3, deployment))
    return status


def chain_down(settings: Settings) -> dict[str, Any]:
    """Stop the embedded anvil (SIGTERM, so a --state file is dumped); idempotent."""
    record = running_chain(settings)
    if record is None:
        return {"stopped": False, "reason": "no embedded chain is running for this home"}
    terminate_pid(int(record["pid"]))
    with contextlib.suppress(FileNotFoundError):
        _run_file(settings).unlink()
    return {"stopped": True, "pid": record["pid"], "rpc_url": record["rpc_url"], "state_file": record.get("state_file")}


def deploy_to(
    rpc_url: str,
    account: LocalAccount,
    settings: Settings,
    *,
    profile: str = "default",
    params: Mapping[str, int] | None = None,
    voting_delay: int | None = None,
    voting_period: int | None = None,
) -> Deployment:
    """Deploy a fresh set of contracts to any JSON-RPC endpoint and save the deployment file."""
    w3 = connect(rpc_url)
    with rpc_guard(w3):
        if w3.eth.get_balance(account.address) == 0:
            raise BadInput(f"the deployer {account.address} has no funds on {rpc_url}")
    deployment = deploy_all(
        w3, account, profile=profile, params=params, voting_delay=voting_delay, voting_period=voting_period, rpc_url=rpc_url
    )
    deployment.save(settings.deployment_path)
    return deployment


def fund(settings: Settings, address: str, wei: int, *, funder_index: int = 0) -> dict[str, Any]:
    """Send ``wei`` to ``address`` from an anvil development account (local dev chains only).

    New identities need ETH for the admission stake and gas; on the embedded
    chain the dev accounts hold it. A real transfer (not ``anvil_setBalance``)
    keeps the chain's accounting honest and works on any anvil-compatible node.
    """
    if wei <= 0:
        raise BadInput(f"the amount must be positive, got {wei} wei")
    if not Web3.is_address(address):
        raise BadInput(f"{address!r} is not an address")
    record = running_chain(settings)
    deployment = _load_if_present(settings.deployment_path)
    rpc_url = settings.rpc_url or (str(record["rpc_url"]) if record else None) or (deployment.rpc_url if deployment else None)
    if rpc_url is None:
        raise Unavailable("no chain is known for this home", hint="run `collab chain up`")
    w3 = connect(rpc_url)
    funder = dev_account(funder_index)
    with rpc_guard(w3):
        if int(w3.eth.chain_id) != CHAIN_ID or w3.eth.get_balance(funder.address) < wei:
            raise BadInput(f"{rpc_url} is not a local development chain with funded dev accounts", hint="fund the account from a wallet instead")
    result = send_transaction(w3, funder, {"to": Web3.to_checksum_address(address), "value": wei}, AbiRegistry([]))
    with rpc_guard(w3):
        balance = int(w3.eth.get_balance(Web3.to_checksum_address(address)))
    return {"address": Web3.to_checksum_address(address), "amount_wei": wei, "balance_wei": balance, "tx_hash": result.tx_hash, "rpc_url": rpc_url}
