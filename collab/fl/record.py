"""What a training job leaves in its output directory, written atomically after every Flower round.

* ``result.json`` (the run's status record: rounds, accuracy, ε, drops);
* ``attribution.json`` (the attribution record material: participants,
  weights, signed update commitments and model receipts, ε per participant,
  per-round output hashes; the format is specified in docs/training.md);
* ``round-<r>.witness`` (the SecAgg ``AggregationWitness`` bytes the
  masked-sum program builder consumes: ``AggregationWitness.from_bytes`` →
  ``builders.masked_sum_from_witness``);
* ``checkpoint-r<r>.npz`` + ``checkpoint.json`` (the global weights after the last
  completed round and both records), from which a restarted ServerApp resumes.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from eth_hash.auto import keccak

from collab.errors import BadInput

RECORD_VERSION = 1


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, then rename: readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class JsonRecord:
    """A JSON document rewritten atomically on every change (``path`` None keeps it in memory)."""

    def __init__(self, path: Path | None, body: dict[str, Any]) -> None:
        self.path = path
        self.body = body

    def update(self, **fields: Any) -> None:
        self.body.update(fields)
        if self.path is not None:
            write_atomic(self.path, json.dumps(self.body, indent=1).encode())


def words_hash(words: np.ndarray) -> str:
    """keccak of int64 LE words, hex (the output hash of a round's ring sum)."""
    return "0x" + keccak(np.ascontiguousarray(words, dtype="<i8").tobytes()).hex()


class Checkpoint:
    """The global weights after the last completed round, and the records as they were then."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.meta = folder / "checkpoint.json"

    def save(self, job: str, rnd: int, weights: Mapping[str, np.ndarray], records: Mapping[str, Any]) -> None:
        """Weights to a per-round file, then the metadata naming it: a crash in between resumes one round earlier."""
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v, dtype=np.float32) for k, v in weights.items()})
        name = f"checkpoint-r{rnd}.npz"
        write_atomic(self.folder / name, buf.getvalue())
        meta = {"job": job, "round": rnd, "weights": name, "keccak": keccak(buf.getvalue()).hex(), "records": records}
        write_atomic(self.meta, json.dumps(meta).encode())
        for old in self.folder.glob("checkpoint-r*.npz"):
            if old.name != name:
                old.unlink()

    def load(self, job: str) -> tuple[int, dict[str, np.ndarray], dict[str, Any]] | None:
        """(last completed round, weights, records) of ``job``, or None when there is nothing to resume."""
        if not self.meta.exists():
            return None
        meta = json.loads(self.meta.read_text())
        if meta.get("job") != job:
            raise BadInput(f"{self.meta} belongs to job {meta.get('job')!r}, not {job!r}; use a fresh output directory")
        raw = (self.folder / str(meta["weights"])).read_bytes()
        if keccak(raw).hex() != meta["keccak"]:
            raise BadInput(f"checkpoint weights {meta['weights']} do not match {self.meta}")
        with np.load(io.BytesIO(raw)) as npz:
            weights = {k: npz[k] for k in npz.files}
        return int(meta["round"]), weights, dict(meta["records"])
