"""The SQLite job store: valid transitions only, compare-and-set, durability, nonces, the step runner."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from collab.errors import BadInput, NotFound, ProtocolViolation, Unauthorized, Unavailable
from orchestrator.jobs import Job, JobState, JobStore, job_id_for, step, validate_kind

S = JobState


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "jobs.db")


def test_create_is_idempotent_and_ids_are_deterministic(store: JobStore) -> None:
    job, created = store.create("claim", {"a": 1, "b": 2})
    again, created_again = store.create("claim", {"b": 2, "a": 1})
    assert created and not created_again and job.id == again.id == job_id_for("claim", {"a": 1, "b": 2})
    assert job.state == S.CREATED and store.active() == [job]


def test_happy_path_and_history_survive_reopen(store: JobStore, tmp_path: Path) -> None:
    job, _ = store.create("claim", {"x": 1})
    for a, b in [(S.CREATED, S.COMPUTING), (S.COMPUTING, S.COMPUTED), (S.COMPUTED, S.CLAIMED), (S.CLAIMED, S.FINALIZED)]:
        store.transition(job.id, a, b, data={b.value: True})
    store.close()
    reopened = JobStore(tmp_path / "jobs.db")
    got = reopened.get(job.id)
    assert got.state == S.FINALIZED and got.data == {"computing": True, "computed": True, "claimed": True, "finalized": True}
    assert [h["to"] for h in reopened.history(job.id)] == ["created", "computing", "computed", "claimed", "finalized"]
    assert reopened.active() == []


def test_invalid_and_stale_transitions_are_refused(store: JobStore) -> None:
    job, _ = store.create("claim", {})
    with pytest.raises(ProtocolViolation, match="not a valid transition"):
        store.transition(job.id, S.CREATED, S.FINALIZED)
    store.transition(job.id, S.CREATED, S.COMPUTING)
    with pytest.raises(ProtocolViolation, match="is computing"):  # someone else already moved it
        store.transition(job.id, S.CREATED, S.COMPUTING)
    store.cancel(job.id)
    with pytest.raises(ProtocolViolation, match="already cancelled"):
        store.cancel(job.id)
    with pytest.raises(ProtocolViolation):
        store.transition(job.id, S.CANCELLED, S.COMPUTING)
    with pytest.raises(NotFound):
        store.get("0xnope")


def test_nonces_refuse_replays_and_prune_expired(store: JobStore) -> None:
    store.use_nonce("0xAbC", 1, int(time.time()) + 60)
    store.use_nonce("0xabc", 2, int(time.time()) - 1)
    with pytest.raises(Unauthorized, match="replayed"):
        store.use_nonce("0xABC", 1, int(time.time()) + 60)
    assert store.prune_nonces() == 1
    store.use_nonce("0xabc", 2, int(time.time()) + 60)


class _Counting:
    kind: ClassVar[str] = "count"

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls = 0
        self.fail = fail

    def validate(self, payload: dict[str, Any]) -> None:
        if "n" not in payload:
            raise BadInput("n required")

    def advance(self, job: Job, store: JobStore) -> JobState:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return {S.CREATED: S.COMPUTING, S.COMPUTING: S.COMPUTED, S.COMPUTED: S.FINALIZED}[job.state]


def test_step_runner_drives_handlers_and_records_failures(store: JobStore) -> None:
    ok = _Counting()
    job, _ = store.create("count", {"n": 1})
    while not job.state.terminal:
        job = step(store, {"count": ok}, job)
    assert job.state == S.FINALIZED and ok.calls == 3

    flaky, _ = store.create("count", {"n": 2})
    assert step(store, {"count": _Counting(Unavailable("chain down"))}, flaky).state == S.CREATED  # retried later
    failed = step(store, {"count": _Counting(BadInput("bad program"))}, flaky)
    assert failed.state == S.FAILED and failed.error == "bad program"

    orphan, _ = store.create("nope", {})
    assert step(store, {}, orphan).state == S.FAILED

    late, _ = store.create("count", {"n": 3}, deadline=time.time() - 1)
    timed = step(store, {"count": ok}, late)
    assert timed.state == S.FAILED and "timed out" in (timed.error or "")


def test_validate_kind(store: JobStore) -> None:
    handlers: dict[str, Any] = {"count": _Counting()}
    validate_kind("count", {"n": 1}, handlers)
    for kind, payload in [("other", {}), ("count", []), ("count", {})]:
        with pytest.raises(BadInput):
            validate_kind(kind, payload, handlers)
