"""``collab join ROUND --data PATH``: the same as ``collab round join`` (the first thing a participant runs)."""

from __future__ import annotations

import click

from collab.commands.round import join as _round_join

# One definition of the arguments and options: this command reuses `round join`'s.
group = click.Command("join", callback=_round_join.callback, params=_round_join.params,
                      help="Join a training round (same as `round join`).")
