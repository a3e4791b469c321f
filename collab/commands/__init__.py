"""Command groups of the ``collab`` CLI, one module per group.

Each module ``collab/commands/<name>.py`` defines a click command named
``group`` (usually a ``click.Group``); ``collab.cli`` imports it only when the
command runs. Shared helpers (settings, output, chain sessions) are in
``collab.commands._common``.
"""
