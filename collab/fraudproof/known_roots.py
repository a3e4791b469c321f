"""Chunk roots of input tensors that earlier claims hashed, so a model merged again is not rehashed.

Why: a claimed linear merge is one memory-bound weighted sum, and hashing
its inputs' words costs more than the merge itself. Merge programs quantise
every input at bits that depend on the tensor alone
(:func:`collab.merge.programs.input_frac_bits`), so a model's words, and
their root, are the same in every merge that reads it: hashed once, by the
first claim over the file, they serve every later one (as a FedAvg
aggregator commits each update once, at receipt).

An entry is keyed like git's index: the source files' paths, sizes,
modification times (ns), inodes and devices, then the tensor's name and
header, so a file rewritten in place gets new keys. An entry is a hint the
claimer gives itself, never evidence for anyone else: a stale one could only
make the claimer's own input root wrong, and the tree rebuilt for any proof
or served chunk is checked against it (:meth:`Committed.known`). A damaged
database is a cache miss, logged, never a failed merge.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

from collab import sqlite_store
from collab.fraudproof.trace import Committed, Trace
from collab.fraudproof.vm import Value

log = logging.getLogger(__name__)

_SCHEMA = "CREATE TABLE IF NOT EXISTS roots (key TEXT PRIMARY KEY, chunk_root BLOB NOT NULL)"


def files_fingerprint(files: Iterable[Path]) -> str:
    """Identity of the bytes in ``files`` as the file system reports it (no read): path, size, mtime, inode."""
    rows = []
    for f in sorted(Path(p).resolve() for p in files):
        st = os.stat(f)
        rows.append([str(f), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev])
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _key(source: str, value: Value) -> str:
    return f"{source}|{value.header.encode().hex()}"


class KnownRoots:
    """The home's cache of input chunk roots (``<home>/fraudproof/roots.sqlite``)."""

    def __init__(self, home: Path | str) -> None:
        self.path = Path(home) / "fraudproof" / "roots.sqlite"

    def committed(self, inputs: Mapping[str, Value], sources: Mapping[str, str]) -> dict[str, Committed]:
        """The inputs whose roots are known, as :meth:`Committed.known` (``sources``: input name → source key)."""
        keys = {name: _key(sources[name], v) for name, v in inputs.items() if name in sources and v.data is not None}
        if not keys or not self.path.is_file():
            return {}
        try:
            with sqlite_store.connect(self.path) as db:
                db.execute(_SCHEMA)
                found: dict[str, bytes] = {}
                wanted = list(set(keys.values()))
                for i in range(0, len(wanted), 500):  # SQLite's parameter limit
                    part = wanted[i : i + 500]
                    found.update(db.execute(f"SELECT key, chunk_root FROM roots WHERE key IN ({','.join('?' * len(part))})",
                                            part).fetchall())
        except (sqlite3.Error, OSError) as exc:
            log.warning("input root cache %s unreadable (%s): hashing every input", self.path, exc)
            return {}
        return {name: Committed.known(inputs[name], bytes(found[k])) for name, k in keys.items() if k in found}

    def remember(self, trace: Trace, inputs: Mapping[str, Value], sources: Mapping[str, str]) -> int:
        """Store the roots ``trace`` computed for the inputs with a source; how many were new or changed."""
        rows = []
        for name, v in inputs.items():
            c = trace.committed(v)
            if name in sources and v.data is not None and c is not None:
                rows.append((_key(sources[name], v), c.chunk_root))
        if not rows:
            return 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with sqlite_store.connect(self.path) as db:
                db.execute(_SCHEMA)
                before = db.total_changes
                db.executemany("INSERT OR REPLACE INTO roots (key, chunk_root) VALUES (?, ?)", rows)
                return db.total_changes - before
        except (sqlite3.Error, OSError) as exc:
            log.warning("input root cache %s not written (%s)", self.path, exc)
            return 0


__all__ = ["KnownRoots", "files_fingerprint"]
