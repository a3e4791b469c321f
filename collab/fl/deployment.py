"""Flower's deployment engine as real processes: one SuperLink, one SuperNode per participant, ``flwr run``.

The SuperLink listens on ``host`` (loopback by default; the orchestrator
passes the address nodes reach it at, which its TLS certificate names) and
SuperNodes connect to that address: multi-host is only a matter of the
addresses passed in. Each process gets ``FLWR_HOME`` inside its own collab
home (``<home>/flower``), telemetry and update checks off, and the SuperLink
runs with ``--disable-runtime-dependency-installation`` so nothing is
installed at run time. Every process started here is stopped by its PID (and
those of its descendants). A participant is, by default (``warm``), collab's
warm ClientApp host (:mod:`collab.fl.clientapp_host`) with its SuperNode as a
child in ``--isolation process`` mode: one long-lived process serves all of
the node's Flower messages instead of a fresh ``flwr-clientapp`` per message.
A participant's data is validated *before* its SuperNode starts, so bad data
never reaches a round.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from collab.config import ENV_PASSPHRASE
from collab.errors import BadInput, InternalError, Unavailable
from collab.fl.app import APP_DIR
from collab.fl.data import load_user_data
from collab.fl.tls import node_auth_key, server_tls, tls_hosts

CONNECTION = "collab"
BIN_DIR = Path(sys.executable).parent
# Run-config keys that hold orchestrator-local paths: never sent to participants (see ``start_run``).
SERVER_ONLY = ("result-path", "aggregator-home")
ENV_SERVER_RUNS = "COLLAB_FL_SERVER_RUNS"  # the SuperLink's (and so its ServerApp's) folder of server-only config


def listen_host(host: str) -> str:
    """Where a SuperLink advertised as ``host`` listens: that IP itself, every interface for a DNS name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "0.0.0.0"
    return host


def host_port(host: str, port: int) -> str:
    """``host:port`` as gRPC and Flower's config take it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def server_only(run_config: dict[str, Any]) -> dict[str, Any]:
    """The ServerApp's view of ``run_config``: its server-only values (``server-run`` key) merged back in.

    Called in the ServerApp's process, which inherits ``COLLAB_FL_SERVER_RUNS``
    from its SuperLink; participants never see these values.
    """
    key, folder = str(run_config.get("server-run", "")), os.environ.get(ENV_SERVER_RUNS, "")
    if not key or not folder:
        return dict(run_config)
    try:
        extra = json.loads((Path(folder) / f"{key}.json").read_text())
    except (OSError, ValueError) as exc:
        raise InternalError(f"the ServerApp's server-only config {key} is unreadable: {exc}") from None
    return {**run_config, **extra}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for a Flower process: its own FLWR_HOME, offline, no telemetry, our venv first on PATH."""
    flwr_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(flwr_home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PATH=f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}",  # the SuperLink spawns `flower-superexec` by name
    )
    return env


def _toml_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value).lower() if isinstance(value, bool) else repr(value)


def write_toml(path: Path, values: dict[str, Any]) -> Path:
    """A flat TOML file of key = value (how Flower takes node and run config from a file)."""
    path.write_text("".join(f"{key} = {_toml_value(value)}\n" for key, value in values.items()))
    return path


@dataclass
class FlowerProcess:
    """One started process, its log file, and how to stop it."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL the process and its descendants at once (a crashed machine)."""
        family = self.descendants()
        for p in [psutil.Process(self.proc.pid), *family] if self.proc.poll() is None else family:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(timeout=10)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL whatever of the process tree is still alive after ``grace`` seconds."""
        family = self.descendants()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        for p in [psutil.Process(self.proc.pid), *family] if self.proc.poll() is None else family:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


@dataclass
class FlowerDeployment:
    """A SuperLink in ``home`` plus SuperNodes added per participant home; a context manager that cleans up."""

    home: Path
    port: int = 0
    host: str = "127.0.0.1"  # the SuperLink's address as nodes reach it (listened on, in its certificate's SANs)
    secure: bool = True
    persist: bool = True
    warm: bool = True  # False: Flower's default, a SuperExec and a fresh ClientApp process per message
    processes: dict[str, FlowerProcess] = field(default_factory=dict)
    node_keys: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home = Path(self.home)
        self.port = self.port or free_port(listen_host(self.host))

    def _spawn(self, name: str, args: list[str], flwr_home: Path, extra_env: dict[str, str] | None = None) -> FlowerProcess:
        log = flwr_home / f"{name}.log"
        with log.open("ab") as out:  # a restarted process appends to its predecessor's log
            env = {**flower_env(flwr_home), **(extra_env or {})}
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.processes[name] = FlowerProcess(name, proc, log)
        return self.processes[name]

    def start_superlink(self, timeout: float = 180.0) -> None:
        """Start the SuperLink (all APIs on one loopback port) and wait until it accepts connections.

        With ``secure`` (the default): TLS with a locally generated CA and
        ``--enable-supernode-auth``; the public keys of the SuperNodes already
        added are (re-)registered, since the SuperLink keeps them in memory.
        """
        flwr_home = self.home / "flower"
        flwr_home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.secure:
            tls = server_tls(flwr_home / "tls", tls_hosts(self.host))
            security = ["--ssl-ca-certfile", str(tls.ca_cert), "--ssl-certfile", str(tls.cert),
                        "--ssl-keyfile", str(tls.key), "--enable-supernode-auth"]
            connection = f'root-certificates = "{tls.ca_cert}"\n'
        else:
            security, connection = ["--insecure"], "insecure = true\n"
        # The CLI's connection to this SuperLink, named `collab`, in the orchestrator's FLWR_HOME.
        (flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{host_port(self.host, self.port)}"\n{connection}'
        )
        link = self._spawn(
            "superlink",
            [str(BIN_DIR / "flower-superlink"), *security, "--disable-runtime-dependency-installation",
             # nodes, runs and registered keys survive a restart (SQLite; in memory without ``persist``)
             *(["--database", str(flwr_home / "superlink.db")] if self.persist else []),
             "--host", listen_host(self.host), "--port", str(self.port)],
            flwr_home, {ENV_SERVER_RUNS: str(flwr_home / "server-runs")},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if link.proc.poll() is not None:
                raise Unavailable(f"flower-superlink exited with {link.proc.returncode}:\n{link.tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise Unavailable(f"flower-superlink did not listen on {self.host}:{self.port} within {timeout:.0f} s")
        for public in self.node_keys.values():
            self.register_node(public)

    def register_node(self, public_key: Path) -> None:
        """``flwr supernode register``: let a SuperNode with this OpenSSH public key connect."""
        flwr_home = self.home / "flower"
        done = subprocess.run(
            [str(BIN_DIR / "flwr"), "supernode", "register", str(public_key), CONNECTION],
            env=flower_env(flwr_home), capture_output=True, text=True, timeout=120, check=False,
        )
        if done.returncode != 0 and "already" not in (done.stdout + done.stderr).lower():
            raise Unavailable(f"flwr supernode register failed ({done.returncode}): {(done.stdout + done.stderr)[-500:]}")

    def add_participant(
        self,
        participant: str,
        home: Path,
        data: Path,
        threads: int = 1,
        *,
        passphrase: str | None = None,
        keep_inputs: bool = False,
        stall: str = "",
        superlink_ca: Path | None = None,
        register: bool = True,
        task_hash: bytes | None = None,
    ) -> FlowerProcess:
        """Validate the participant's data, then start its SuperNode with FLWR_HOME in its home.

        ``passphrase`` unlocks the identity in ``home`` (given to the SuperNode
        as ``COLLAB_PASSPHRASE``; its ClientApps sign with it). ``keep_inputs``
        keeps the node's own SecAgg inputs in its home (audits, tests);
        ``stall`` names a SecAgg stage at which the node hangs (fault
        injection for tests). Multi-host (``secure``): ``superlink_ca`` is the
        SuperLink's CA certificate as the node received it, and ``register =
        False`` leaves registering ``<home>/flower/auth/node_auth_key.pub`` to
        the orchestrator (``register_node`` on its side). ``task_hash`` (a
        RoundRegistry round's on-chain ``configHash``, read by the participant's
        own node) makes its ClientApps refuse a run config with another task
        (:func:`collab.fl.runconfig.check_task`). Raises
        :class:`BadInput` (nothing started) when the data is malformed.
        """
        load_user_data(data)  # fail before any process or round exists
        flwr_home = Path(home) / "flower"
        flwr_home.mkdir(parents=True, exist_ok=True, mode=0o700)
        node_config = write_toml(
            flwr_home / "node-config.toml",
            {
                "participant-id": participant,
                "data-path": str(Path(data).resolve()),
                "ledger-path": str((Path(home) / "privacy_ledger.json").resolve()),
                "home": str(Path(home).resolve()),
                "threads": threads,
                "keep-inputs": keep_inputs,
                "secagg-stall": stall,
                "task-hash": "0x" + task_hash.hex() if task_hash else "",
            },
        )
        security = ["--insecure"]
        if self.secure:  # the CA certificate travels to the participant out of band; here, a local copy
            ca = flwr_home / "superlink-ca.pem"
            shutil.copyfile(superlink_ca or self.home / "flower" / "tls" / "ca.pem", ca)
            private, public = node_auth_key(flwr_home / "auth")
            if register:
                self.node_keys[participant] = public
                self.register_node(public)
            security = ["--root-certificates", str(ca), "--auth-supernode-private-key", str(private)]
        runtime = f"127.0.0.1:{free_port()}"  # the SuperNode's Runtime API, where ClientApps claim messages
        args = [*security, "--superlink", host_port(self.host, self.port), "--host", "127.0.0.1",
                "--port", runtime.rsplit(":", 1)[1], "--node-config", str(node_config)]
        supernode = [str(BIN_DIR / "flower-supernode"), *args]  # Flower's own, for the default executor
        if self.warm:  # the warm host, with Flower's SuperNode loop polling faster (collab.fl.supernode)
            supernode = [sys.executable, "-m", "collab.fl.clientapp_host", "--runtime-api-address", runtime,
                         "--", sys.executable, "-m", "collab.fl.supernode", *args, "--isolation", "process"]
        return self._spawn(f"supernode-{participant}", supernode, flwr_home,
                           {ENV_PASSPHRASE: passphrase} if passphrase else None)

    def kill_participant(self, participant: str) -> None:
        """SIGKILL a participant's SuperNode and everything it spawned (a crash, for fault-tolerance tests)."""
        self.processes[f"supernode-{participant}"].kill()

    def start_run(self, run_config: dict[str, Any], result_path: Path) -> FlowerProcess:
        """``flwr run APP_DIR collab --stream`` with ``run_config`` overriding the app's defaults."""
        config_file = self.write_run_config(run_config, result_path)
        return self._spawn(
            "flwr-run",
            [str(BIN_DIR / "flwr"), "run", str(APP_DIR), CONNECTION, "--stream", "--run-config", str(config_file)],
            self.home / "flower",
        )

    def write_run_config(self, run_config: dict[str, Any], result_path: Path) -> Path:
        """The ``--run-config`` file of a run, without the orchestrator-local values.

        Every participant receives the run config, so the orchestrator-local
        values (``SERVER_ONLY``: the result path, the aggregator's home) go to
        a file in the SuperLink's ``server-runs`` folder instead, named by
        the ``server-run`` key the run config carries; the ServerApp merges
        them back (:func:`server_only`).
        """
        flwr_home = self.home / "flower"
        private = {"result-path": str(result_path.resolve()),
                   **{k: v for k, v in run_config.items() if k in SERVER_ONLY and k != "result-path"}}
        key = hashlib.sha256(private["result-path"].encode()).hexdigest()[:16]
        runs = flwr_home / "server-runs"
        runs.mkdir(parents=True, exist_ok=True, mode=0o700)
        (runs / f"{key}.json").write_text(json.dumps(private))
        public = {k: v for k, v in run_config.items() if k not in SERVER_ONLY}
        return write_toml(flwr_home / "run-config.toml", {**public, "server-run": key})

    def wait_run(self, run: FlowerProcess, result_path: Path, timeout: float) -> dict[str, Any]:
        """Wait for the run's record to reach a final state; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if result_path.exists():
                try:
                    record: dict[str, Any] = json.loads(result_path.read_text())
                except json.JSONDecodeError:
                    record = {}
                if record.get("status") in ("completed", "failed"):
                    return record
            if run.proc.poll() not in (None, 0):
                raise InternalError(f"flwr run exited with {run.proc.returncode}:\n{run.tail()}")
            time.sleep(0.5)
        raise Unavailable(f"the Flower run did not finish within {timeout:.0f} s:\n{run.tail()}")

    def run(self, run_config: dict[str, Any], result_path: Path, timeout: float = 600.0) -> dict[str, Any]:
        """Start a run and wait for its record."""
        if "result-path" in run_config:
            raise BadInput("result-path is set by the deployment")
        return self.wait_run(self.start_run(run_config, result_path), result_path, timeout)

    def stop(self) -> None:
        """Stop every process this deployment started (run, supernodes, then the SuperLink)."""
        for name in sorted(self.processes, key=lambda n: n == "superlink"):
            self.processes[name].stop()

    def __enter__(self) -> FlowerDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
