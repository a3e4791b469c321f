"""A client's copies of owners' encrypted lookup tables, so a model load's later queries skip the transfer.

Why: the oblivious word lookup (:mod:`collab.he.lookup`) has the owner send
its whole encrypted table with every query (0.77 GB for MiniLM, seeded):
the client must receive every ciphertext, or the owner would see which rows
it wanted. The table is the same for every query of a model load (the owner
encrypts it once, under a key kept for the load), so a client that keeps it
needs it only once per load: over a WAN link that is about a minute per
query at 100 Mb/s. The owner announces the table's digest; a client holding
a complete, intact copy says so and reads its rows locally.

What the owner learns: whether this client has queried this model load
before (one bit per query, about a licensee it already meters by name),
never which rows. The copy is only ciphertexts under the owner's key.

Layout, one directory per table (``<root>/<digest hex>/``): ``hello.bin``
(the owner's public keys), ``table.bin`` (every ciphertext in wire order),
``index.npy`` (offset, length per ciphertext) and ``sha256.bin`` (each
ciphertext's hash). A read checks the keys and the hash list against the
digest, then each ciphertext it uses against its hash. A copy is written under a
temporary name and renamed into place only once its digest matched the
owner's, so a killed client leaves no half table behind; the least recently
used copies beyond :data:`KEEP` are removed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np

#: Tables kept per client home (0.77 GB each for MiniLM): the owners' model loads a client queries at once.
KEEP = 2


def blob_hash(blob: bytes) -> bytes:
    """One ciphertext's hash (32 bytes): what :func:`table_digest` covers and a read checks."""
    return hashlib.sha256(blob).digest()


def table_digest(hello: bytes, blob_hashes: bytes) -> bytes:
    """The name both ends give a table: the owner's keys and its ciphertexts' hashes, in wire order.

    Over the hashes rather than the ciphertexts, so a kept copy's keys and
    hash list are checked against the name without reading the table.
    """
    return hashlib.sha256(len(hello).to_bytes(8, "little") + hello + hashlib.sha256(blob_hashes).digest()).digest()


class TableCache:
    """Encrypted tables under ``root``, by digest (see the module docstring)."""

    def __init__(self, root: Path | str, keep: int = KEEP) -> None:
        self.root = Path(root)
        self.keep = keep

    def rows(self, digest: bytes, positions: set[int], count: int) -> tuple[bytes, dict[int, bytes]] | None:
        """The owner's keys and the ciphertexts at ``positions`` of a complete, intact copy; None otherwise.

        Any inconsistency (a missing or short file, a ciphertext whose hash
        differs, a table of another size) drops the copy, so the owner sends
        the table again; reading happens before the client answers, so a bad
        copy never fails a query.
        """
        entry = self.root / digest.hex()
        try:
            if not entry.is_dir():
                return None
            index = np.load(entry / "index.npy")
            hashes = (entry / "sha256.bin").read_bytes()
            hello = (entry / "hello.bin").read_bytes()
            if index.shape != (count, 2) or len(hashes) != 32 * count:
                raise ValueError("index of another size")
            if table_digest(hello, hashes) != digest:
                raise ValueError("keys or hashes do not match the table's digest")
            blobs: dict[int, bytes] = {}
            with open(entry / "table.bin", "rb") as table:
                for pos in sorted(positions):
                    offset, length = (int(v) for v in index[pos])
                    table.seek(offset)
                    blob = table.read(length)
                    if blob_hash(blob) != hashes[32 * pos : 32 * pos + 32]:
                        raise ValueError(f"ciphertext {pos} does not match its hash")
                    blobs[pos] = blob
            os.utime(entry)  # most recently used
            return hello, blobs
        except (OSError, ValueError, IndexError, EOFError) as exc:  # np.load of a cut .npy: EOFError or ValueError
            _note(f"lookup cache: dropping {entry.name[:16]}…: {exc}")
            shutil.rmtree(entry, ignore_errors=True)
            return None

    def writer(self, digest: bytes) -> TableWriter:
        return TableWriter(self, digest)

    def evict(self) -> None:
        """Remove the least recently used copies beyond :attr:`keep` (and temporary ones left by a killed client)."""
        try:
            entries = [p for p in self.root.iterdir() if p.is_dir()]
        except OSError:
            return
        done = sorted((p for p in entries if not p.name.startswith(".")), key=_mtime, reverse=True)
        for stale in done[self.keep :] + [p for p in entries if p.name.startswith(".") and _stale_temp(p)]:
            shutil.rmtree(stale, ignore_errors=True)


class TableWriter:
    """Writes one table as it arrives; :meth:`commit` puts it in place if its digest is the announced one.

    A full disk or an unwritable home only costs the copy (noted in the
    party's log), never the query: :meth:`add` then stops writing.
    """

    def __init__(self, cache: TableCache, digest: bytes) -> None:
        self.cache, self.digest = cache, digest
        self._offsets: list[tuple[int, int]] = []
        self._hashes: list[bytes] = []
        self._size = 0
        self._dir: Path | None = None
        self._table: BinaryIO | None = None
        try:
            cache.root.mkdir(parents=True, exist_ok=True)
            self._dir = Path(tempfile.mkdtemp(prefix=".incoming-", dir=cache.root))
            self._table = open(self._dir / "table.bin", "wb")  # noqa: SIM115 - closed in commit/abandon
        except OSError as exc:
            self._fail(exc)

    def add(self, blob: bytes) -> None:
        self._hashes.append(blob_hash(blob))
        self._offsets.append((self._size, len(blob)))
        self._size += len(blob)
        if self._table is not None:
            try:
                self._table.write(blob)
            except OSError as exc:
                self._fail(exc)

    def commit(self, hello: bytes) -> bool:
        """True when the received table hashes to the announced digest (whether or not it could be kept)."""
        matches = table_digest(hello, b"".join(self._hashes)) == self.digest
        if self._table is None or self._dir is None or not matches:
            self.abandon()
            return matches
        try:
            self._table.close()
            self._table = None
            (self._dir / "hello.bin").write_bytes(hello)
            (self._dir / "sha256.bin").write_bytes(b"".join(self._hashes))
            np.save(self._dir / "index.npy", np.array(self._offsets, dtype=np.int64).reshape(-1, 2))
            os.replace(self._dir, self.cache.root / self.digest.hex())
            self._dir = None
        except OSError as exc:  # e.g. another client party of this home put the same table in place first
            self._fail(exc)
        self.cache.evict()
        return True

    def abandon(self) -> None:
        if self._table is not None:
            self._table.close()
            self._table = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _fail(self, exc: OSError) -> None:
        _note(f"lookup cache: not keeping this table ({exc})")
        self.abandon()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _stale_temp(path: Path) -> bool:
    """A temporary copy no client has touched for an hour: left by a killed one."""
    return time.time() - _mtime(path) > 3600


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # to the party's log
