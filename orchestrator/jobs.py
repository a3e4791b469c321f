"""The orchestrator's durable job store, its state machine and the request nonce store.

One SQLite database in WAL mode holds every job, its transition history and
the nonces already used by each sender. A transition is a compare-and-set
written and committed *before* the side effect it announces, so after a crash
the runner knows which step may have half-happened and repeats it; handlers
make that safe by keying every side effect on a deterministic id (a claim id
the contract refuses twice, for example).
"""

from __future__ import annotations

import enum
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from eth_utils import keccak

from collab.errors import BadInput, CollabError, NotFound, ProtocolViolation, Unauthorized, Unavailable


class JobState(str, enum.Enum):
    """The one life cycle every job kind shares (ARCHITECTURE.md, Job states)."""

    CREATED = "created"
    COLLECTING = "collecting"
    COMPUTING = "computing"
    COMPUTED = "computed"
    CLAIMED = "claimed"
    CHALLENGED = "challenged"
    FINALIZED = "finalized"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobState.FINALIZED, JobState.REJECTED, JobState.FAILED, JobState.CANCELLED})
_S = JobState
ALLOWED: dict[JobState, frozenset[JobState]] = {
    _S.CREATED: frozenset({_S.COLLECTING, _S.COMPUTING}),
    _S.COLLECTING: frozenset({_S.COMPUTING}),
    _S.COMPUTING: frozenset({_S.COMPUTED}),
    _S.COMPUTED: frozenset({_S.CLAIMED, _S.FINALIZED}),
    _S.CLAIMED: frozenset({_S.CHALLENGED, _S.FINALIZED, _S.REJECTED}),
    _S.CHALLENGED: frozenset({_S.CLAIMED, _S.FINALIZED, _S.REJECTED}),
}
# INVARIANT: any non-terminal job may fail or be cancelled; terminal states never move.
for _state in list(ALLOWED):
    ALLOWED[_state] = ALLOWED[_state] | {_S.FAILED, _S.CANCELLED}


@dataclass(frozen=True)
class Job:
    """A snapshot of one stored job."""

    id: str
    kind: str
    state: JobState
    payload: dict[str, Any]
    data: dict[str, Any]
    error: str | None
    created_at: float
    updated_at: float
    deadline: float | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "state": self.state.value, "payload": self.payload,
                "data": self.data, "error": self.error, "created_at": self.created_at,
                "updated_at": self.updated_at, "deadline": self.deadline}


def job_id_for(kind: str, payload: dict[str, Any]) -> str:
    """Deterministic job id: the same request submitted twice is the same job."""
    body = json.dumps({"kind": kind, "payload": payload}, sort_keys=True, separators=(",", ":")).encode()
    return "0x" + keccak(body).hex()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL, payload TEXT NOT NULL,
  data TEXT NOT NULL DEFAULT '{}', error TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL, deadline REAL);
CREATE TABLE IF NOT EXISTS transitions (
  job_id TEXT NOT NULL, from_state TEXT, to_state TEXT NOT NULL, at REAL NOT NULL, note TEXT);
CREATE TABLE IF NOT EXISTS nonces (
  sender TEXT NOT NULL, nonce TEXT NOT NULL, expiry INTEGER NOT NULL, PRIMARY KEY (sender, nonce));
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS nodes (
  address TEXT PRIMARY KEY, identity_id INTEGER NOT NULL, last_seen REAL NOT NULL,
  endpoint TEXT NOT NULL DEFAULT '', info TEXT NOT NULL DEFAULT '{}');
"""


class JobStore:
    """SQLite (WAL) store of jobs and nonces; safe to share between threads of one process."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ------------------------------------------------------------------ jobs

    def create(self, kind: str, payload: dict[str, Any], *, job_id: str | None = None,
               deadline: float | None = None) -> tuple[Job, bool]:
        """Create a job (idempotent by id); returns ``(job, created_now)``."""
        jid = job_id or job_id_for(kind, payload)
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE id=?", (jid,)).fetchone()
            if row is not None:
                return _job(row), False
            db.execute("INSERT INTO jobs (id, kind, state, payload, created_at, updated_at, deadline) "
                       "VALUES (?,?,?,?,?,?,?)", (jid, kind, JobState.CREATED.value, json.dumps(payload), now, now, deadline))
            db.execute("INSERT INTO transitions VALUES (?,?,?,?,?)", (jid, None, JobState.CREATED.value, now, None))
        return self.get(jid), True

    def get(self, job_id: str) -> Job:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return _job(row)

    def list(self, states: Iterable[JobState] | None = None) -> list[Job]:
        with self._lock:
            if states is None:
                rows = self._db.execute("SELECT * FROM jobs ORDER BY created_at").fetchall()
            else:
                values = [s.value for s in states]
                marks = ",".join("?" * len(values))
                rows = self._db.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created_at", values).fetchall()
        return [_job(r) for r in rows]

    def active(self) -> list[Job]:
        """Non-terminal jobs: what the runner resumes after a restart."""
        return self.list([s for s in JobState if not s.terminal])

    def history(self, job_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM transitions WHERE job_id=? ORDER BY rowid", (job_id,)).fetchall()
        return [{"from": r["from_state"], "to": r["to_state"], "at": r["at"], "note": r["note"]} for r in rows]

    def transition(self, job_id: str, expected: JobState, to: JobState, *, data: dict[str, Any] | None = None,
                   error: str | None = None, note: str | None = None) -> Job:
        """Move ``job_id`` from ``expected`` to ``to`` (compare-and-set), merging ``data`` into its record.

        Raises ProtocolViolation if the move is not allowed or another actor moved the job first.
        """
        # INVARIANT: only the moves in ALLOWED exist; terminal states never change.
        if to not in ALLOWED.get(expected, frozenset()):
            raise ProtocolViolation(f"job {job_id}: {expected.value} -> {to.value} is not a valid transition")
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(f"no job {job_id}")
            if row["state"] != expected.value:
                raise ProtocolViolation(f"job {job_id} is {row['state']}, not {expected.value}")
            merged = {**json.loads(row["data"]), **(data or {})}
            db.execute("UPDATE jobs SET state=?, data=?, error=COALESCE(?, error), updated_at=? WHERE id=?",
                       (to.value, json.dumps(merged), error, now, job_id))
            db.execute("INSERT INTO transitions VALUES (?,?,?,?,?)", (job_id, expected.value, to.value, now, note or error))
        return self.get(job_id)

    def update_data(self, job_id: str, data: dict[str, Any]) -> Job:
        """Record progress inside a state (e.g. the tx hash of a side effect) without moving it."""
        with self._tx() as db:
            row = db.execute("SELECT data FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(f"no job {job_id}")
            db.execute("UPDATE jobs SET data=?, updated_at=? WHERE id=?",
                       (json.dumps({**json.loads(row["data"]), **data}), time.time(), job_id))
        return self.get(job_id)

    def cancel(self, job_id: str, reason: str = "cancelled by request") -> Job:
        job = self.get(job_id)
        if job.state.terminal:
            raise ProtocolViolation(f"job {job_id} is already {job.state.value}")
        return self.transition(job_id, job.state, JobState.CANCELLED, error=reason)

    # ---------------------------------------------------------------- nodes

    def see_node(self, address: str, identity_id: int, endpoint: str, info: dict[str, Any], now: float | None = None) -> None:
        """Record a heartbeat: presence survives an orchestrator restart (a node is away until it beats again)."""
        with self._tx() as db:
            db.execute("INSERT INTO nodes VALUES (?,?,?,?,?) ON CONFLICT(address) DO UPDATE SET identity_id=excluded.identity_id, "
                       "last_seen=excluded.last_seen, endpoint=excluded.endpoint, info=excluded.info",
                       (address.lower(), int(identity_id), time.time() if now is None else now, endpoint, json.dumps(info)))

    def nodes(self) -> list[dict[str, Any]]:
        """Every node ever seen: address (lower case), identity_id, last_seen, endpoint, info."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM nodes ORDER BY address").fetchall()
        return [{"address": r["address"], "identity_id": r["identity_id"], "last_seen": r["last_seen"],
                 "endpoint": r["endpoint"], "info": json.loads(r["info"])} for r in rows]

    def last_seen(self, address: str) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT last_seen FROM nodes WHERE address=?", (address.lower(),)).fetchone()
        return None if row is None else float(row["last_seen"])

    # ---------------------------------------------------------------- nonces

    def use_nonce(self, sender: str, nonce: int, expiry: int) -> None:
        """Record ``(sender, nonce)``; a second use is a replay (Unauthorized)."""
        with self._tx() as db:
            try:
                db.execute("INSERT INTO nonces VALUES (?,?,?)", (sender.lower(), str(nonce), int(expiry)))
            except sqlite3.IntegrityError as exc:
                raise Unauthorized(f"replayed request: nonce {nonce} of {sender} was already used") from exc

    def prune_nonces(self, now: float | None = None) -> int:
        """Forget nonces whose requests have expired (the expiry check refuses them anyway)."""
        with self._tx() as db:
            cur = db.execute("DELETE FROM nonces WHERE expiry < ?", (int(time.time() if now is None else now),))
            return cur.rowcount


def _job(row: sqlite3.Row) -> Job:
    return Job(row["id"], row["kind"], JobState(row["state"]), json.loads(row["payload"]), json.loads(row["data"]),
               row["error"], row["created_at"], row["updated_at"], row["deadline"])


# ---------------------------------------------------------------- handlers


class JobHandler(Protocol):
    """One job kind: ``advance`` performs the next idempotent step and returns the state to move to.

    Returning the job's current state means "nothing to do yet" (waiting on a
    window, on nodes). It must be safe to call again after a crash at any point.
    """

    kind: ClassVar[str]

    def validate(self, payload: dict[str, Any]) -> None: ...

    def advance(self, job: Job, store: JobStore) -> JobState: ...


HANDLERS: dict[str, type] = {}


def register_handler(cls: type) -> type:
    """Class decorator adding a job kind to the registry."""
    HANDLERS[cls.kind] = cls  # type: ignore[attr-defined]
    return cls


def step(store: JobStore, handlers: dict[str, JobHandler], job: Job) -> Job:
    """Advance one job by one step, recording the outcome; never raises for a job's own failure."""
    handler = handlers.get(job.kind)
    if handler is None:
        return store.transition(job.id, job.state, JobState.FAILED, error=f"no handler for job kind {job.kind!r}")
    if job.deadline is not None and time.time() > job.deadline and job.state in (JobState.CREATED, JobState.COLLECTING):
        return store.transition(job.id, job.state, JobState.FAILED, error="timed out waiting for participants")
    try:
        new = handler.advance(job, store)
    except Unavailable:
        return job  # transient: retried on the next pass
    except CollabError as exc:
        return store.transition(job.id, store.get(job.id).state, JobState.FAILED, error=str(exc))
    current = store.get(job.id)
    if new == current.state:
        return current
    return store.transition(job.id, current.state, new)


def validate_kind(kind: str, payload: Any, handlers: dict[str, JobHandler]) -> None:
    if kind not in handlers:
        raise BadInput(f"unknown job kind {kind!r} (known: {', '.join(sorted(handlers))})")
    if not isinstance(payload, dict):
        raise BadInput("job payload must be an object")
    handlers[kind].validate(payload)
