"""What a warm ClientApp process keeps between Flower messages: heavy imports, base models, unlocked identities.

A participant's ClientApp messages are all served by one long-lived process
(:mod:`collab.fl.clientapp_host`), so whatever is expensive and identical
from one message to the next is paid once per node here instead of once per
message. Nothing that varies per message (the received weights, a round's
SecAgg state, the privacy ledger) is cached: those still come from the
message, ``Context.state`` and the node's files every time. Fresh processes
(Flower's own ``flwr-clientapp``) use the same helpers; they just start cold.
"""

from __future__ import annotations

import copy
import fcntl
import functools
import importlib
import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from collab.identity import PUBLIC_FILE, Identity

if TYPE_CHECKING:
    from collab.fl.task import Classifier, TaskConfig

# What a ``train`` message imports (torch, transformers, peft, opacus come with these), in the order it does.
HEAVY_MODULES = ("torch", "collab.dp.dpsgd", "collab.dp.ledger", "collab.fl.app.server_app", "collab.fl.task",
                 "collab.fl.app.client_app")
PRELOAD_SLOTS = os.cpu_count() or 1  # concurrent preloads per machine


_preload_lock = threading.Lock()
_preloaded = False


def preload() -> None:
    """Import everything a ``train`` message needs, and the tokenizer (seconds of CPU per process, once).

    At most one process per core at a time (file locks, a slot per core): twenty
    nodes on one host importing torch at once starved the SuperLink until its
    object-push sessions and heartbeats timed out. ``train`` calls it too, so a
    message that arrives first waits for its turn (and for a preload already
    running in this process) instead of importing beside it.
    """
    global _preloaded
    with _preload_lock:
        if not _preloaded:
            _preload_in_turn()
            _preloaded = True


def _preload_in_turn() -> None:
    slot = Path(tempfile.gettempdir()) / f"collab-warm-preload.{os.getpid() % PRELOAD_SLOTS}.lock"
    try:
        lock = slot.open("a")
    except OSError:  # another user's lock file: import unserialised
        lock = None
    try:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        for name in HEAVY_MODULES:
            importlib.import_module(name)
        from collab.fl.task import tokenizer

        tokenizer()
    finally:
        if lock is not None:
            lock.close()  # releases the lock


@functools.lru_cache(maxsize=2)
def _base_model(task: TaskConfig) -> Classifier:
    from collab.fl.task import build_model

    return build_model(task)


def fresh_model(task: TaskConfig) -> Classifier:
    """A private copy of the task's model as ``build_model`` returns it (loaded from disk once per process).

    A copy, because training wraps and changes the model it is given (Opacus
    hooks, updated adapters); the cached original stays as built.
    """
    return copy.deepcopy(_base_model(task))


@functools.lru_cache(maxsize=4)
def _identity(home: str, passphrase: str, version: int) -> Identity:
    del version  # part of the cache key only
    return Identity.load(home, passphrase)


def identity(home: str, passphrase: str) -> Identity:
    """The node's identity, unlocked once per process (its secrets decrypt lazily, each scrypt run once).

    Keyed by the public keys file's modification time too, so a re-created
    identity in the same home is loaded again rather than served stale.
    """
    public = Identity.keys_dir(home) / PUBLIC_FILE
    version = public.stat().st_mtime_ns if public.exists() else 0
    return _identity(home, passphrase, version)
