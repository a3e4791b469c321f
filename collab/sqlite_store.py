"""One way to open the small SQLite stores that homes keep (ledgers, receipts).

Each call gets its own autocommit connection with a busy timeout, closed
afterwards, so several processes of one home (CLI, node, parties) can share a
database file without holding connections or locks between operations.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def connect(path: Path | str, timeout: float = 30.0) -> Iterator[sqlite3.Connection]:
    """An autocommit connection to ``path`` that is closed when the block ends."""
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        yield db
    finally:
        db.close()
