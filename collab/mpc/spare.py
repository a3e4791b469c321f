"""Party processes started before their call: a node pays the imports while nobody waits.

Every query gets a *fresh* client party process (its CrypTen session, seeds
and triples are never reused across queries), and most of a served call's
wall time beyond the online phase was that process starting: Python, torch,
CrypTen and transformers imports and the tokenizer (~3-4 s of a ~9.5 s call
at seq 32 on two cores). A long-lived process (a node) therefore keeps one
**spare**: ``python -m collab.mpc.spare`` has done those imports and blocks
on its stdin. A call hands it the argv a fresh ``python -m collab.mpc.service``
would have been started with and the path of the call's log; it points its
stdout/stderr there and runs :func:`collab.mpc.service.party_main` once, then
exits; the pool starts the next spare once that call has ended. A spare is
still one process per query: what it shares with earlier calls is only
imported code.

A spare that died, or outlived ``idle_timeout`` (it then exits by itself, so
an idle node does not hold ~300 MB for nothing), is replaced by a fresh
process for that call: a spare can make a call faster, never fail it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

DEFAULT_IDLE_TIMEOUT = 600.0
READY = "collab spare party ready"
PARTY_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

log = logging.getLogger(__name__)


def party_env() -> dict[str, str]:
    """The environment of every party process (offline model hubs, one OpenMP thread)."""
    return dict(os.environ, **PARTY_ENV)


def service_argv(rank: int, master: str, job: Path, out: Path, timeout: float) -> list[str]:
    """The arguments of one ``python -m collab.mpc.service`` party."""
    return ["--rank", str(rank), "--master", master, "--job", str(job), "--out", str(out), "--timeout", str(timeout)]


def start_service_party(argv: list[str], log_path: Path, spares: SpareParties | None = None) -> subprocess.Popen[bytes]:
    """A party of :mod:`collab.mpc.service` with ``argv``, its output in ``log_path``: a spare when ``spares``
    has one ready, else a fresh process."""
    if spares is not None:
        proc = spares.take(argv, log_path)
        if proc is not None:
            return proc
    with open(log_path, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "collab.mpc.service", *argv], stdout=out,
                                stderr=subprocess.STDOUT, env=party_env())


class SpareParties:
    """One spare party process kept ready (the first after the first call, the next after each call)."""

    def __init__(self, idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._spare: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._log: Path | None = None
        self._closed = False

    @property
    def spare_pid(self) -> int | None:
        """The pid of the spare waiting for the next call, if one is."""
        with self._lock:
            return self._spare.pid if self._spare is not None and self._spare.poll() is None else None

    def take(self, argv: list[str], log_path: Path) -> subprocess.Popen[bytes] | None:
        """Hand ``argv`` to the spare (None: none usable, start a fresh process); the next spare starts."""
        with self._lock:
            if self._closed:
                return None
            spare, started, spare_log = self._spare, self._started, self._log
            self._spare = self._log = None
        if spare is None:
            return None
        usable = spare.poll() is None and time.monotonic() - started < self.idle_timeout
        if usable:
            try:
                assert spare.stdin is not None
                spare.stdin.write((json.dumps({"argv": argv, "log": str(log_path)}) + "\n").encode())
                spare.stdin.close()
            except OSError:  # it died between the check and the write
                usable = False
        if not usable:
            reason = _tail(spare_log) if spare.poll() not in (None, 0) else "idle too long"
            log.info("spare party %d not used (%s): starting a fresh one", spare.pid, reason)
            _end(spare)
        if spare_log is not None:
            spare_log.unlink(missing_ok=True)
        return spare if usable else None

    def wait_ready(self, timeout: float) -> bool:
        """Whether the waiting spare has finished its imports within ``timeout`` s (benchmarks, tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                spare, spare_log = self._spare, self._log
            if spare is None or spare.poll() is not None:
                return False
            if spare_log is not None and spare_log.exists() and READY in spare_log.read_text(errors="replace"):
                return True
            time.sleep(0.1)
        return False

    def replenish(self) -> None:
        """Start the next spare, unless one is waiting. Called after a call ends, not when it starts: its
        imports would otherwise compete with that call's online phase for the cores."""
        with self._lock:
            if self._closed or (self._spare is not None and self._spare.poll() is None):
                return
            self._start()

    def _start(self) -> None:
        fd, name = tempfile.mkstemp(prefix="collab-spare-", suffix=".log")
        with os.fdopen(fd, "wb") as out:
            self._spare = subprocess.Popen(
                [sys.executable, "-m", "collab.mpc.spare", "--idle-timeout", str(self.idle_timeout)],
                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=party_env())
        self._started, self._log = time.monotonic(), Path(name)

    def close(self) -> None:
        """End the waiting spare; later calls start fresh processes."""
        with self._lock:
            spare, spare_log, self._spare, self._log, self._closed = self._spare, self._log, None, None, True
        if spare is not None:
            _end(spare)
        if spare_log is not None:
            spare_log.unlink(missing_ok=True)


def _tail(path: Path | None) -> str:
    if path is None or not path.exists():
        return "no output"
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no output"


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None and not proc.stdin.closed:
        try:
            proc.stdin.close()  # a waiting spare exits on end of input
        except OSError:
            pass
    try:
        proc.wait(2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


_POOL: SpareParties | None = None
_POOL_LOCK = threading.Lock()


def spare_parties() -> SpareParties:
    """This process's (a node's) spare pool; its spare ends with the process."""
    import atexit

    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = SpareParties(float(os.environ.get("COLLAB_MPC_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT)))
            atexit.register(_POOL.close)
        return _POOL


# =========================================================================== the spare itself


def spare_main(argv: list[str] | None = None) -> int:
    """``python -m collab.mpc.spare``: import what a party needs, then run the one call stdin names."""
    ap = argparse.ArgumentParser(prog="python -m collab.mpc.spare")
    ap.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT)
    args = ap.parse_args(argv)
    import transformers  # noqa: F401 - the client's tokenizer

    import collab.mpc.compat  # noqa: F401 - torch and CrypTen, with the compatibility fixes
    import collab.mpc.encoder  # noqa: F401
    from collab.mpc import service
    from collab.mpc.model import _tokenizer, load_spec, model_dir

    try:  # the bundled encoder's tokenizer and spec: what a client party reads first
        _tokenizer(str(model_dir()))
        load_spec(model_dir())
    except Exception as exc:  # noqa: BLE001 - warming only: the call itself reports what is wrong
        print(f"warming skipped: {exc}", flush=True)
    print(READY, flush=True)
    ready, _, _ = select.select([sys.stdin], [], [], args.idle_timeout)
    line = sys.stdin.readline() if ready else ""
    if not line.strip():  # idle too long, or the pool closed: nothing to run
        return 0
    request = json.loads(line)
    fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return service.party_main(list(request["argv"]))


if __name__ == "__main__":
    sys.exit(spare_main())
