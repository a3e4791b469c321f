"""Send one message per node and collect the replies, polling the SuperLink every ``REPLY_POLL_S``.

Why not ``Grid.send_and_receive``: in flwr 1.42 the deployment grid
(``superlink/grid/http_grid.py``) sleeps 3 s between pulls, so every message
stage of a round (hello, train, each SecAgg stage) waited 1.5 s on average
after its last reply had arrived. This is the same push-then-pull loop over
the Grid's public ``push_messages`` / ``pull_messages``, polling faster; a
pull is one local request to the SuperLink.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

REPLY_POLL_S = 0.1


def send_and_receive(grid: Grid, messages: Iterable[Message], timeout: float) -> list[Message]:
    """Push ``messages``, then pull replies until every message has one or ``timeout`` seconds have passed."""
    waiting = {m for m in grid.push_messages(list(messages)) if m}  # a message the SuperLink refused has no id
    deadline = time.monotonic() + timeout
    replies: list[Message] = []
    while waiting:
        got = list(grid.pull_messages(waiting))
        replies.extend(got)
        waiting -= {r.metadata.reply_to_message_id for r in got}
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(REPLY_POLL_S)
    return replies
