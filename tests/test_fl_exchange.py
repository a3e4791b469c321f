"""The ServerApp's reply loop and the warm SuperNode's shortened waits (Flower's own loops, polling faster)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from types import SimpleNamespace

import pytest

from collab.fl import exchange, supernode


class SlowNodesGrid:
    """A grid whose nodes answer over several pulls (``ready[i]`` pulls after the push), some never."""

    def __init__(self, ready: list[int | None], refused: frozenset[int] = frozenset()) -> None:
        self.ready, self.refused, self.pulls = ready, refused, 0

    def push_messages(self, messages: Iterable[str]) -> list[str | None]:
        return [None if i in self.refused else f"m{i}" for i in range(len(list(messages)))]

    def pull_messages(self, ids: Iterable[str]) -> list[SimpleNamespace]:
        self.pulls += 1
        ready = [m for m in ids if self.ready[int(m[1:])] is not None and self.ready[int(m[1:])] <= self.pulls]
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=m)) for m in ready]


def _messages(n: int) -> list[str]:
    return [f"to node {k}" for k in range(n)]


def test_replies_arriving_over_several_pulls_are_all_collected_without_waiting_seconds() -> None:
    grid = SlowNodesGrid([1, 3, 2])
    t0 = time.monotonic()
    replies = exchange.send_and_receive(grid, _messages(3), timeout=30)  # type: ignore[arg-type]
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    assert grid.pulls == 3
    assert time.monotonic() - t0 < 1.5  # Flower's own loop sleeps 3 s between pulls: 6 s for these three


def test_a_silent_node_ends_the_wait_at_the_timeout_with_the_others_replies() -> None:
    grid = SlowNodesGrid([1, None])
    t0 = time.monotonic()
    replies = exchange.send_and_receive(grid, _messages(2), timeout=0.5)  # type: ignore[arg-type]
    assert len(replies) == 1 and 0.5 <= time.monotonic() - t0 < 2.0


def test_a_refused_message_is_not_waited_for() -> None:
    grid = SlowNodesGrid([1, None], refused={1})
    assert len(exchange.send_and_receive(grid, _messages(2), timeout=30)) == 1  # type: ignore[arg-type]
    assert grid.pulls == 1


def test_the_supernode_loop_sleeps_at_most_the_cap_and_keeps_the_rest_of_time() -> None:
    loop = supernode.shorten_waits(0.01)
    assert loop is not None
    try:
        t0 = time.monotonic()
        loop.time.sleep(3)  # the idle wait between pulls in flwr's start_client_internal
        assert time.monotonic() - t0 < 0.5
        assert loop.time.monotonic() > 0 and loop.time.time() > 0
    finally:
        loop.time = time


def test_a_flower_without_the_loop_leaves_the_supernode_to_its_own_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    import flwr.supernode

    monkeypatch.delattr(flwr.supernode, "start_client_internal", raising=False)
    monkeypatch.setitem(sys.modules, "flwr.supernode.start_client_internal", None)  # importing it now fails
    assert supernode.shorten_waits() is None
