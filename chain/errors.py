"""Typed chain failures: compilation errors and decoded contract reverts.

A revert is raised as a subclass of :class:`ContractRevert` named after the
Solidity custom error (``revert_class("UnknownAsset")``), so tests can say
``pytest.raises(revert_class("UnknownAsset"))`` and the CLI maps it to an exit
code by what the error means (unauthorized, not found, protocol violation or
plain bad input) without a table that every contract author must extend.
"""

from __future__ import annotations

import re
from typing import Any

from collab.errors import BadInput, CollabError, InternalError, NotFound, ProtocolViolation, Unauthorized


class CompilationError(InternalError):
    """solc rejected the contract sources; the message holds its formatted errors."""


class DeploymentMismatch(BadInput):
    """A deployment file no longer matches the compiled contracts (or the chain)."""


class ContractRevert(CollabError):
    """A contract call or transaction reverted with a (decoded) error.

    ``error_name`` is the Solidity error name (``"Error"`` for ``require``
    strings, ``"Panic"`` for panics, ``"UnknownRevert"`` when no ABI knows the
    selector) and ``error_args`` its decoded arguments by parameter name.
    """

    error_name: str = "UnknownRevert"

    def __init__(self, error_args: dict[str, Any] | None = None, *, data: str = "", contract: str = "") -> None:
        self.error_args: dict[str, Any] = dict(error_args or {})
        self.data = data
        self.contract = contract
        rendered = ", ".join(f"{k}={_render(v)}" for k, v in self.error_args.items())
        where = f" in {contract}" if contract else ""
        super().__init__(
            f"contract reverted{where}: {self.error_name}({rendered})",
            error=self.error_name,
            args=self.error_args,
        )


# Exit-code category by error name: first match wins, anything else is bad input.
_CATEGORIES: list[tuple[re.Pattern[str], type[CollabError]]] = [
    (re.compile(r"Unauthorized|^Not\w*Owner$|^NotLicensed$|^NoIdentity$|^Only[A-Z]|^RoleNotGranted$"), Unauthorized),
    (re.compile(r"^Not(Partner|Licensee|Claimer|Challenger|Participant|Audience|Settlement)\w*$"), Unauthorized),
    (re.compile(r"Inactive$|^(Insufficient|Low)Reputation|ReputationTooLow"), Unauthorized),
    (re.compile(r"^Unknown|NotFound$|Nonexistent"), NotFound),
    (re.compile(r"Invalid\w*Signature|Invalid\w*Proof|^Stale|^Replayed|^ECDSAInvalid"), ProtocolViolation),
]

# Names collab itself gives to reverts without a custom error.
_FIXED: dict[str, type[CollabError]] = {"UnknownRevert": BadInput, "Error": BadInput, "Panic": BadInput}

_CLASSES: dict[str, type[ContractRevert]] = {}


def category_of(error_name: str) -> type[CollabError]:
    """The :mod:`collab.errors` class whose exit code a revert named ``error_name`` gets."""
    if error_name in _FIXED:
        return _FIXED[error_name]
    for pattern, category in _CATEGORIES:
        if pattern.search(error_name):
            return category
    return BadInput


def revert_class(error_name: str) -> type[ContractRevert]:
    """The (cached) :class:`ContractRevert` subclass for a Solidity error name."""
    cls = _CLASSES.get(error_name)
    if cls is None:
        category = category_of(error_name)
        cls = type(error_name, (category, ContractRevert), {"error_name": error_name, "__module__": __name__})
        _CLASSES[error_name] = cls
    return cls


def make_revert(error_name: str, error_args: dict[str, Any] | None = None, *, data: str = "", contract: str = "") -> ContractRevert:
    """Instantiate the named revert; the one place that builds them."""
    return revert_class(error_name)(error_args, data=data, contract=contract)


def _render(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)
