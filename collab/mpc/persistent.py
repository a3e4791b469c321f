"""The owner's persistent CrypTen party: one process per loaded model, serving query after query.

A per-call owner party pays, on every ``collab infer``, the process start and
imports (torch, CrypTen), reading the model, encoding its weights and the
rendezvous. The owner's node instead keeps one party process per loaded model
(:class:`OwnerParties`, keyed by the model directory and its weights file):

* **Per model load** (once, in the child): imports, the weights read and
  prepared, and the matmul weights encoded at CrypTen's fixed-point scale.
  Those encoded weights are the owner-held fixed masks
  (:class:`collab.mpc.fixed.OwnerHeldWeight`): the mask is the weight itself,
  held by the owner alone, so nothing about it is opened, neither per query
  nor per load.
* **Per query**: a fresh rendezvous (a new port, a new CrypTen session, new
  pseudo-random seeds, for HE new BFV keys) with a *fresh* client process;
  every Beaver triple, including each weight matmul's ``(A, C = A @ W)``, is
  drawn anew in that session, never reused across queries.

Protocol (one JSON object per line): the node writes a request ``{"master",
"job", "timeout"}`` to the child's stdin; the child runs the session as rank
0 and answers on its stdout (the real one; anything else printed goes to its
log) ``{"ok": true, "result": ...}`` or ``{"ok": false, "error", "exit_code"}``.
A query that fails after the rendezvous ends the child (CrypTen's state is
not trusted after a broken session); the next call starts a fresh one, as it
does after an idle timeout, a SIGKILL or the node's exit (the child exits
when its stdin closes, so it never outlives the node).

Only the two-party providers whose triples need no third party's knowledge
of the weights are served this way (``TFP``, ``HE``); the 3-party ``TTP``
path stays per call (its helper would need ``W``; see docs/secure_inference.md).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import queue
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import collab.mpc.compat as compat
from collab.errors import CollabError, Unavailable
from collab.mpc.parties import CLIENT, OWNER, PROGRESS, free_port
from collab.mpc.spare import SpareParties, party_env, service_argv, start_service_party

DEFAULT_IDLE_TIMEOUT = 600.0
START_TIMEOUT = 300.0
IDLE_MARGIN = 30.0  # the child waits this much longer than the node's own idle limit, so they never race


# =========================================================================== the child process


def _loaded(model_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Per model load: the plaintext weights and the owner-held (encoded) matmul weights."""
    from collab.mpc import encoder as enc
    from collab.mpc import fixed
    from collab.mpc.model import load_spec, load_weights

    spec = load_spec(model_dir)
    weights = load_weights(model_dir)
    full = enc.prepare_weights(weights, spec, spec.max_positions)  # the matmul weights do not depend on seq_len
    return weights, {k: fixed.encode_held(full[k]) for k in fixed.held_names(full)}


def child_main(argv: list[str] | None = None) -> int:
    """``python -m collab.mpc.persistent --model-dir DIR [--idle-timeout S]``: serve queries from stdin."""
    ap = argparse.ArgumentParser(prog="python -m collab.mpc.persistent")
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT + IDLE_MARGIN)
    args = ap.parse_args(argv)
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints of libraries go to the log, never into the protocol

    def reply(obj: dict[str, Any]) -> None:
        channel.write(json.dumps(obj) + "\n")
        channel.flush()

    from collab.mpc.service import _party_tensors, run_session

    t0 = time.perf_counter()
    try:
        weights, held = _loaded(args.model_dir)
    except CollabError as exc:
        reply({"ok": False, "error": str(exc), "exit_code": exc.exit_code})
        return exc.exit_code
    load_s = time.perf_counter() - t0
    reply({"ready": True, "pid": os.getpid(), "load_s": load_s})
    served = 0
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], args.idle_timeout)
        line = sys.stdin.readline() if ready else ""
        if not line:  # idle for too long, or the node closed the channel (it stopped or died)
            return 0
        request = json.loads(line)
        job = dict(request["job"], model_dir=str(args.model_dir))
        try:
            compat.set_collective_timeout(float(request["timeout"]))
            t_query = time.perf_counter()
            spec, approx, own = _party_tensors(job, OWNER, loaded=weights)
        except CollabError as exc:  # refused before the rendezvous: this process is still sound
            reply({"ok": False, "error": str(exc), "exit_code": exc.exit_code, "alive": True})
            continue
        try:
            result = run_session(OWNER, str(request["master"]), job, spec, approx, own, held=held, t0=t_query)
        except CollabError as exc:
            reply({"ok": False, "error": str(exc), "exit_code": exc.exit_code})
            return exc.exit_code
        except Exception as exc:  # a broken session (a peer gone, a timeout): end, the next call starts afresh
            traceback.print_exc()  # to the log
            reply({"ok": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0], "exit_code": 10})
            return 10
        served += 1
        result["party"] = {"pid": os.getpid(), "query": served, "load_s": load_s}
        reply({"ok": True, "result": result})


# =========================================================================== the node's side


def _describe(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class OwnerParty:
    """One persistent owner party process (rank 0 of every query's session) and its protocol channel."""

    def __init__(self, model_dir: Path, *, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 start_timeout: float = START_TIMEOUT) -> None:
        self.model_dir = Path(model_dir)
        self.idle_timeout = idle_timeout
        self.lock = threading.Lock()  # one query at a time: CrypTen's state is per process
        self.workdir = Path(tempfile.mkdtemp(prefix="collab-owner-party-"))
        self.queries = 0
        self.last_used = time.monotonic()
        env = party_env()
        cmd = [sys.executable, "-m", "collab.mpc.persistent", "--model-dir", str(self.model_dir),
               "--idle-timeout", str(idle_timeout + IDLE_MARGIN)]
        with open(self.workdir / "owner.log", "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc.stdout,), name=f"owner-party-{self.proc.pid}",
                         daemon=True).start()
        try:
            ready = self._reply(start_timeout, starting=True)
        except BaseException:
            self.close()
            raise
        self.load_s = float(ready.get("load_s", 0.0))

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def alive(self) -> bool:
        """Running, and not so long idle that the child may be ending on its own."""
        return self.proc.poll() is None and time.monotonic() - self.last_used < self.idle_timeout

    def log(self) -> str:
        path = self.workdir / "owner.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _read(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        for raw in stream:
            self._lines.put(raw.decode(errors="replace"))
        self._lines.put(None)

    def _last_error(self) -> str:
        lines = [ln for ln in self.log().splitlines() if ln.strip() and not ln.startswith(PROGRESS)]
        return lines[-1] if lines else "no output"

    def _reply(self, timeout: float, *, starting: bool = False) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise Unavailable(f"the owner's MPC party (pid {self.pid}) did not answer within {timeout:.0f} s",
                              timeout=timeout) from None
        if line is None:
            code = self.proc.wait()
            what = "failed to load the model" if starting else "died during the query"
            raise Unavailable(f"MPC party 0 (owner, pid {self.pid}) {what} ({_describe(code)}): {self._last_error()}; "
                              "the next call starts a fresh one", rank=OWNER, exit_code=code)
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok", reply.get("ready", False)):
            if not reply.get("alive"):  # it ends itself after a broken session; make sure it is gone
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.close()
            raise Unavailable(f"MPC party 0 (owner) failed: {reply.get('error', 'unknown error')}", rank=OWNER,
                              exit_code=reply.get("exit_code"))
        return reply

    def begin(self, job: dict[str, Any], timeout: float, host: str = "127.0.0.1") -> str:
        """Send one query's owner job; the owner's party opens a fresh rendezvous at the returned ADDR:PORT."""
        master = f"{host}:{free_port(host)}"
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps({"master": master, "job": job, "timeout": timeout}) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            code = self.proc.wait()
            raise Unavailable(f"MPC party 0 (owner, pid {self.pid}) is gone ({_describe(code)}); "
                              "the next call starts a fresh one", rank=OWNER) from None
        self.last_used = time.monotonic()
        return master

    def finish(self, timeout: float) -> dict[str, Any]:
        """The owner's result of the query sent by :meth:`begin` (Unavailable if it failed or died)."""
        try:
            result: dict[str, Any] = self._reply(timeout)["result"]
        finally:
            self.last_used = time.monotonic()
        self.queries += 1
        return result

    def poll(self) -> dict[str, Any] | None:
        """The query's result if it is there (without waiting), else None; raises like :meth:`finish`."""
        return None if self._lines.empty() else self.finish(0.1)

    def close(self) -> None:
        """End the process (its stdin closes first, so an idle child exits by itself)."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _model_key(model_dir: Path) -> tuple[str, int, int]:
    """A loaded model is its directory and its weights file's identity: replacing the file means a new load."""
    path = Path(model_dir).resolve()
    try:
        st = (path / "model.safetensors").stat()
        return str(path), int(st.st_mtime_ns), int(st.st_size)
    except OSError:
        return str(path), 0, 0


class OwnerParties:
    """The owner node's persistent parties, one per loaded model; closed with the node."""

    def __init__(self, idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        self.idle_timeout = idle_timeout
        self._parties: dict[tuple[str, int, int], OwnerParty] = {}
        self._lock = threading.Lock()

    @contextmanager
    def acquire(self, model_dir: Path) -> Iterator[OwnerParty]:
        """The model's party (started if missing, dead or idle too long), held for one query."""
        key = _model_key(model_dir)
        with self._lock:
            party = self._parties.get(key)
            if party is None or (not party.alive() and not party.lock.locked()):
                if party is not None:
                    party.close()
                party = self._parties[key] = OwnerParty(Path(model_dir), idle_timeout=self.idle_timeout)
        with party.lock:
            if party.proc.poll() is not None:  # it died while we waited for the previous query
                with self._lock:
                    party.close()
                    party = self._parties[key] = OwnerParty(Path(model_dir), idle_timeout=self.idle_timeout)
            yield party

    def party(self, model_dir: Path) -> OwnerParty | None:
        """The model's party if one is running (for status and tests), without starting one."""
        with self._lock:
            party = self._parties.get(_model_key(model_dir))
        return party if party is not None and party.proc.poll() is None else None

    def pids(self) -> dict[str, int]:
        """Model directory -> pid of its party, for those running."""
        with self._lock:
            return {k[0]: p.pid for k, p in self._parties.items() if p.proc.poll() is None}

    def close(self) -> None:
        with self._lock:
            parties, self._parties = list(self._parties.values()), {}
        for party in parties:
            party.close()

    def serve(self, model_dir: Path, owner_job: dict[str, Any], client_job: dict[str, Any],
              timeout: float, spares: SpareParties | None = None) -> dict[int, dict[str, Any]]:
        """One query on this host: the model's persistent owner party and a fresh client party process
        (``spares``' waiting one when it has one)."""
        with self.acquire(model_dir) as party:
            return _serve_with_client(party, owner_job, client_job, timeout, spares)


def _serve_with_client(party: OwnerParty, owner_job: dict[str, Any], client_job: dict[str, Any],
                       timeout: float, spares: SpareParties | None = None) -> dict[int, dict[str, Any]]:
    from collab.mpc.parties import ROLES

    master = party.begin(owner_job, timeout)
    work = Path(tempfile.mkdtemp(prefix="collab-mpc-client-"))
    try:
        (work / "job.json").write_text(json.dumps(client_job))
        client = start_service_party(service_argv(CLIENT, master, work / "job.json", work / "out.json", timeout),
                                     work / "client.log", spares)
        deadline = time.monotonic() + timeout
        owner_result = None
        try:
            while True:
                if owner_result is None:
                    owner_result = party.poll()  # raises when the owner's party failed or died
                code = client.poll()
                if code not in (None, 0):
                    lines = [ln for ln in (work / "client.log").read_text(errors="replace").splitlines()
                             if ln.startswith("error:")]
                    party.close()  # its session is broken: the next call starts a fresh owner party
                    reason = (lines or ["killed or crashed without output"])[-1].removeprefix("error: ")
                    raise Unavailable(f"MPC party {CLIENT} ({ROLES[CLIENT]}) exited with code {code}: {reason}",
                                      rank=CLIENT, exit_code=code)
                if code == 0 and owner_result is not None:
                    return {OWNER: owner_result, CLIENT: json.loads((work / "out.json").read_text()) | {"pid": client.pid}}
                if time.monotonic() > deadline:
                    party.close()
                    raise Unavailable(f"MPC job timed out after {timeout:.0f} s", timeout=timeout)
                time.sleep(0.05)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if spares is not None:
            spares.replenish()


_POOL: OwnerParties | None = None
_POOL_LOCK = threading.Lock()


def owner_parties() -> OwnerParties:
    """This process's (the owner node's) pool of persistent parties; closed at exit."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            idle = float(os.environ.get("COLLAB_MPC_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT))
            _POOL = OwnerParties(idle)
            atexit.register(_POOL.close)
        return _POOL


if __name__ == "__main__":
    sys.exit(child_main())
