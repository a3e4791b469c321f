"""``flower-supernode`` with shorter waits in its message loop (what a warm host runs as its child).

Why: flwr 1.42's SuperNode sleeps 3 s whenever a pull from the SuperLink
brings no message, and 0.5 s between checks that its ClientApp's reply is
ready (``supernode/start_client_internal.py``, fixed in code), so every
message stage of a round waited ~1.5 s on average before a node even saw
its message. This entry point caps those sleeps at ``PULL_WAIT_S`` and runs
Flower's own ``flower_supernode``: the same loop, the same protocol, one
pull request per node every ``PULL_WAIT_S`` while idle.

Usage: ``python -m collab.fl.supernode`` with ``flower-supernode``'s arguments.
"""

from __future__ import annotations

import sys
import time
from types import ModuleType
from typing import Any

PULL_WAIT_S = 0.25


class _CappedSleep:
    """Stands in for the ``time`` module inside Flower's SuperNode loop: ``sleep`` waits at most ``cap``."""

    def __init__(self, real: ModuleType, cap: float) -> None:
        self._real, self._cap = real, cap

    def sleep(self, seconds: float) -> None:
        self._real.sleep(min(seconds, self._cap))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def shorten_waits(cap: float = PULL_WAIT_S) -> ModuleType | None:
    """Cap the sleeps of Flower's SuperNode message loop at ``cap`` seconds (in this process); the module.

    None, and Flower's own waits, when a Flower release no longer has the loop where 1.42 keeps it: the
    node then runs as it would under ``flower-supernode``, only slower.
    """
    try:
        from flwr.supernode import start_client_internal as loop
    except ImportError:
        return None
    if getattr(loop, "time", None) is not time:  # the loop no longer sleeps through its module's `time`
        return None
    loop.time = _CappedSleep(time, cap)  # type: ignore[assignment]
    return loop


def main() -> int:
    shorten_waits()
    from flwr.supernode.cli import flower_supernode

    sys.argv[0] = "flower-supernode"
    flower_supernode()
    return 0


if __name__ == "__main__":
    sys.exit(main())
