"""Run the bundled anvil node: the local chain behind tests, the demo and `collab chain up`.

anvil dumps its state only when it exits cleanly, so stopping sends SIGTERM
first (and SIGKILL only after a timeout), and ``--state-interval`` dumps
periodically so a crash loses little.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO

from eth_account import Account
from eth_account.signers.local import LocalAccount

from chain.paths import ANVIL_BIN, SETUP_HINT
from collab.errors import ChainUnavailable, Unavailable

DEFAULT_PORT = 8545
CHAIN_ID = 31337
# anvil's public development mnemonic: its 10 accounts start with 10,000 ETH each.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
STATE_INTERVAL_S = 5
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@functools.lru_cache(maxsize=16)
def dev_account(index: int = 0) -> LocalAccount:
    """anvil's funded development account ``index`` (public keys: local chains only)."""
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def anvil_binary() -> Path:
    """The pinned anvil from chain/node_modules, or a clear Unavailable."""
    if not ANVIL_BIN.is_file():
        raise Unavailable(f"anvil not found at {ANVIL_BIN}", hint=SETUP_HINT)
    return ANVIL_BIN


def rpc_answers(url: str, timeout: float = 1.0) -> bool:
    """True when a JSON-RPC endpoint answers ``eth_chainId``."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    local = urllib.parse.urlparse(url).hostname in ("127.0.0.1", "localhost", "::1")
    # A loopback node never sits behind an HTTP proxy, whatever the environment says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if local else urllib.request.build_opener()
    try:
        with opener.open(request, timeout=timeout) as response:
            return "result" in json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return False


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; reaps it first if it is our exited child (no zombies)."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_anvil_pid(pid: int, port: int | None = None) -> bool:
    """Guard against pid reuse: only signal a process that really is anvil (on ``port``, if given)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if b"anvil" not in args[0]:
        return False
    if port is None:
        return True
    return any(a == b"--port" and i + 1 < len(args) and args[i + 1] == str(port).encode() for i, a in enumerate(args))


def terminate_pid(pid: int, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM (so anvil dumps its state), then SIGKILL if it is still alive after ``timeout``."""
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while pid_alive(pid):
        time.sleep(0.05)


class AnvilProcess:
    """One anvil on ``127.0.0.1:port`` with automine; optionally persisted to ``state_file``.

    ``detached=True`` starts it in its own session so it outlives the Python
    process that started it (``collab chain up``); otherwise it is a child that
    :meth:`stop` (or the context manager) ends.
    """

    def __init__(
        self,
        port: int | None = None,
        state_file: Path | str | None = None,
        *,
        log_path: Path | str | None = None,
        detached: bool = False,
        extra_args: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.state_file = Path(state_file) if state_file else None
        self.log_path = Path(log_path) if log_path else None
        self.detached = detached
        self.extra_args = list(extra_args or [])
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def rpc_url(self) -> str:
        """HTTP JSON-RPC endpoint."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id while started."""
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        """The anvil command line (automine, quiet, optional persisted state)."""
        cmd = [str(anvil_binary()), "--host", "127.0.0.1", "--port", str(self.port), "--silent"]
        if self.state_file is not None:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            cmd += ["--state", str(self.state_file), "--state-interval", str(STATE_INTERVAL_S)]
        return cmd + self.extra_args

    def start(self, timeout: float = START_TIMEOUT_S) -> AnvilProcess:
        """Start anvil and return once its JSON-RPC answers."""
        if rpc_answers(self.rpc_url, timeout=0.3):
            raise Unavailable(f"port {self.port} is already serving JSON-RPC", hint="pick another --port or run `collab chain down`")
        cmd = self.command()
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log or subprocess.DEVNULL,
            stderr=self._log or subprocess.DEVNULL,
            start_new_session=self.detached,
        )
        self._close_log()  # the child holds its own descriptor
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self._close_log()
                where = f"; see {self.log_path}" if self.log_path else ""
                raise ChainUnavailable(self.rpc_url, f"anvil exited with code {code} at start{where}")
            if rpc_answers(self.rpc_url, timeout=0.5):
                return self
            time.sleep(0.05)
        self.stop()
        raise ChainUnavailable(self.rpc_url, f"anvil did not answer within {timeout:.0f}s")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (state is dumped), SIGKILL after ``timeout``; idempotent."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> AnvilProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
