"""Typed errors and the exit codes the CLI maps them to.

Every failure a user can cause or meet (bad input, unknown ids, missing
licenses, an unreachable chain, a bad signature) is raised as a subclass of
:class:`CollabError`. The CLI prints ``error: <message>`` on one line and exits
with the class's ``exit_code``; anything else is a bug and exits with
:data:`EXIT_INTERNAL`.
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_UNAUTHORIZED = 4
EXIT_UNAVAILABLE = 5
EXIT_PROTOCOL = 6
EXIT_INTERNAL = 10


class CollabError(Exception):
    """Base of every expected failure; ``str(err)`` is the one-line message."""

    exit_code: int = EXIT_INTERNAL

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_json(self) -> dict[str, Any]:
        """Machine-readable form, for ``--json`` output."""
        body: dict[str, Any] = {"error": type(self).__name__, "message": str(self), "exit_code": self.exit_code}
        if self.details:
            body["details"] = {k: _jsonable(v) for k, v in self.details.items()}
        return body


class UsageError(CollabError):
    """The command line itself is wrong (unknown option, missing argument)."""

    exit_code = EXIT_USAGE


class BadInput(CollabError):
    """A file, value or payload is malformed or out of range."""

    exit_code = EXIT_BAD_INPUT


class NotFound(CollabError):
    """An id, file, asset, claim or identity does not exist."""

    exit_code = EXIT_NOT_FOUND


class Unauthorized(CollabError):
    """The caller lacks the key, role, identity or license the action needs."""

    exit_code = EXIT_UNAUTHORIZED


class Unavailable(CollabError):
    """The chain, a node or the network cannot be reached."""

    exit_code = EXIT_UNAVAILABLE


class ChainUnavailable(Unavailable):
    """No JSON-RPC endpoint answers at the configured URL."""

    def __init__(self, url: str, reason: str = "") -> None:
        detail = f": {reason}" if reason else ""
        super().__init__(f"chain not reachable at {url}{detail}", hint="run `collab chain up`", url=url)


class ProtocolViolation(CollabError):
    """A signature, proof, commitment or message breaks the protocol."""

    exit_code = EXIT_PROTOCOL


class InternalError(CollabError):
    """An invariant of collab itself failed; always a bug worth reporting."""

    exit_code = EXIT_INTERNAL


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)
