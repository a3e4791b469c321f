"""A second process that answers part of a matmul cross term, so one party uses two cores.

In the owner-held case (``TripleGenerator.matmul_fixed``) only the weight's
holder answers: the other party has sent its offer and waits for the
replies, so one of two cores idles through most of the offline phase. SEAL's
Python binding holds the GIL (two threads run at cpu/wall 0.92), so the
second core needs a second process: :class:`AnswerHelper` starts one
(:func:`main` in a fresh interpreter) per process and BFV parameter set, and
the answering party gives it half of the column blocks
(:func:`collab.he.triples.answer_columns` on both sides).

The helper is the answering party's own child process, in its trust domain:
it gets the peer's public keys (to re-randomise replies), the offered
ciphertexts, the answerer's matrix (the weight) and the masks of its
replies, draws its own flooding noise, and sends back sealed replies; it
talks to nobody else.
It is an accelerator only: a helper that died, hung or failed is reported
as :class:`~collab.errors.Unavailable` and its columns are answered by the
party itself; the next request starts a new one.

Messages are pickled tuples, framed by an 8-byte length, over the helper's
stdin and stdout (the helper is this package's own code, started by this
party, and nothing else writes to those pipes).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
from typing import IO, Any, NoReturn

import numpy as np

from collab.errors import Unavailable
from collab.he.bfv import BfvParams

log = logging.getLogger(__name__)

ENV_HELPER = "COLLAB_HE_HELPER"
"""``0`` turns the helper off (the party answers alone)."""
MIN_PRODUCTS = 16
"""Cross terms below this many products per prime are answered alone: moving them costs more than it saves.
(A/B, 2026-11-27: a (4x384)(384x384) answer of 42 products per prime took 0.73 s with the helper, 1.02 s
without; one of (8x384)(384x384), 84 products, 1.00 vs 1.09 s.)"""

_FRAME = struct.Struct("<Q")


def _send_raw(pipe: IO[bytes], data: bytes) -> None:
    pipe.write(_FRAME.pack(len(data)))
    pipe.write(data)
    pipe.flush()


def _send(pipe: IO[bytes], obj: Any) -> None:
    _send_raw(pipe, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _recv_raw(pipe: IO[bytes]) -> bytes:
    head = pipe.read(_FRAME.size)
    if len(head) < _FRAME.size:
        raise EOFError("the other side closed the pipe")
    (size,) = _FRAME.unpack(head)
    data = pipe.read(size)
    if len(data) < size:
        raise EOFError("the other side closed the pipe mid-message")
    return data


def _recv(pipe: IO[bytes]) -> Any:
    return pickle.loads(_recv_raw(pipe))


def wanted(products: int) -> bool:
    """Whether a cross term of ``products`` products per prime is worth a helper on this machine."""
    return products >= MIN_PRODUCTS and (os.cpu_count() or 1) >= 2 and os.environ.get(ENV_HELPER, "1") != "0"


class AnswerHelper:
    """The parent's handle on one helper process (one request at a time)."""

    def __init__(self, params: BfvParams) -> None:
        self.params = params
        self._proc: subprocess.Popen[bytes] | None = None
        self._known_keys: set[bytes] = set()  # peer key sets the running helper already holds
        self._writer: threading.Thread | None = None
        self._write_error: BaseException | None = None

    def _started(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; from collab.he.helper import main; sys.exit(main())"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            self._known_keys = set()
            _send(self._proc.stdin, self.params)  # type: ignore[arg-type]
        return self._proc

    def submit(self, peer_hello: bytes, offer: bytes, y: np.ndarray, plan: Any, masks: dict[int, np.ndarray],
               columns: list[int]) -> None:
        """Start answering ``columns`` of the cross term ``offer`` (see
        :func:`collab.he.triples.answer_columns`); :meth:`collect` the replies.

        The request is written by a thread, so this party starts its own
        columns at once (the pipe holds 64 KiB; a starting helper reads late).
        """
        try:
            proc = self._started()
        except OSError as exc:
            self._fail(f"could not start the HE helper: {exc}")
        digest = hashlib.sha256(peer_hello).digest()
        keys = None if digest in self._known_keys else peer_hello
        self._known_keys.add(digest)
        self._write_error = None

        def write() -> None:
            try:
                _send(proc.stdin, (digest, keys, y, plan, masks, columns))  # type: ignore[arg-type]
                _send_raw(proc.stdin, offer)  # type: ignore[arg-type]
            except (OSError, ValueError) as exc:  # a dead helper: collect() reports it
                self._write_error = exc

        self._writer = threading.Thread(target=write, name="he-helper-writer", daemon=True)
        self._writer.start()

    def collect(self, timeout: float) -> dict[tuple[int, int], bytes]:
        """The submitted request's replies; Unavailable (after ending the helper) if it failed or took too long."""
        proc = self._proc
        if proc is None or proc.stdout is None:
            raise Unavailable("the HE helper is not running")
        try:
            ready, _, _ = select.select([proc.stdout], [], [], timeout)
            if not ready:
                self._fail(f"the HE helper did not answer within {timeout:.0f} s")
            status, body = _recv(proc.stdout)
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            self._fail(f"the HE helper stopped: {self._write_error or exc}")
        finally:
            if self._writer is not None:
                self._writer.join(timeout=5.0)
        if status != "ok":
            self._fail(f"the HE helper failed: {body}")
        return body  # type: ignore[no-any-return]

    def _fail(self, why: str) -> NoReturn:
        log.warning("%s; answering its part in this process", why)
        self.close()
        raise Unavailable(why)

    def close(self) -> None:
        """End the helper process (a later request starts a new one)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


_HELPERS: dict[BfvParams, AnswerHelper] = {}


def helper_for(params: BfvParams) -> AnswerHelper:
    """This process's helper for ``params`` (started on its first request, ended at exit)."""
    if params not in _HELPERS:
        _HELPERS[params] = AnswerHelper(params)
    return _HELPERS[params]


@atexit.register
def _close_all() -> None:
    for helper in _HELPERS.values():
        helper.close()


def main() -> int:
    """The helper process: build the suite, then answer requests until the parent closes the pipe."""
    from collab.he.bfv import BfvSuite, Rng
    from collab.he.triples import answer_columns, peer_encryptors, unpack

    _die_with_parent()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames on the real stdout
    try:
        params = _recv(stdin)
        suite, rng = BfvSuite(params), Rng()
        peers: dict[bytes, Any] = {}
        while True:
            digest, keys, y, plan, masks, columns = _recv(stdin)
            offer = _recv_raw(stdin)
            try:
                if keys is not None:
                    peers[digest] = peer_encryptors(suite, unpack(keys))
                replies = answer_columns(suite, peers[digest], rng, unpack(offer), y, plan, masks, columns)
                _send(stdout, ("ok", replies))
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which answers these columns itself
                _send(stdout, ("error", f"{type(exc).__name__}: {exc}"))
    except (EOFError, BrokenPipeError):  # the parent closed its end (or died): nothing left to answer
        return 0


def _die_with_parent() -> None:
    """Linux: SIGKILL this helper when its parent dies, even mid-computation (a SIGKILLed party leaves no
    helper behind). Elsewhere the closed pipe ends it at its next read or write."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

