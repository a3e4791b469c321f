"""Helpers every command group shares: settings, output, progress, chain sessions.

Commands stay thin: they parse arguments, call a library, and hand the result
to :func:`emit`, which prints one JSON object on stdout with ``--json`` and a
human rendering otherwise. Logs and progress always go to stderr so that
stdout stays machine-readable.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from collab.config import Settings
from collab.errors import BadInput, NotFound

if TYPE_CHECKING:  # chain and identity are imported lazily: `collab --help` must stay light
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

    from chain.deployment import Deployment
    from collab.identity import Identity

C = TypeVar("C")
_SESSION_KEY = "collab.chain_session"
_IDENTITY_KEY = "collab.identity"


@dataclass
class CliState:
    """The root group's global options, stored as ``ctx.obj``."""

    home: str | None = None
    deployment: str | None = None
    json_output: bool = False
    _settings: Settings | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        """Resolve once per invocation (flags > env > config file > defaults)."""
        if self._settings is None:
            self._settings = Settings.resolve(home=self.home, deployment=self.deployment, json_output=self.json_output)
        return self._settings


def state(ctx: click.Context | None = None) -> CliState:
    """The global options; defaults (env only) when a group runs without the root."""
    ctx = ctx or click.get_current_context()
    found = ctx.find_object(CliState)
    if found is None:
        found = CliState()
        root = ctx.find_root()
        if root.obj is None:
            root.obj = found
    return found


def _enable_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        state(ctx).json_output = True


def json_option() -> click.Option:
    """``--json`` after a subcommand (``collab demo --json``): the same switch as the global flag."""
    return click.Option(["--json", "json_local"], is_flag=True, expose_value=False, is_eager=True,
                        callback=_enable_json, help="Print results as JSON on stdout.")


def accept_json_everywhere(command: click.Command) -> click.Command:
    """Give ``command`` and every subcommand under it a ``--json`` option (once each)."""
    if not any("--json" in p.opts for p in command.params):
        command.params.append(json_option())
    for sub in getattr(command, "commands", {}).values():
        accept_json_everywhere(sub)
    return command


def settings(ctx: click.Context | None = None) -> Settings:
    """The resolved :class:`Settings` of this invocation."""
    return state(ctx).settings()


def is_json(ctx: click.Context | None = None) -> bool:
    """Whether ``--json`` was given."""
    return state(ctx).json_output


# --------------------------------------------------------------------- output


def stderr_console() -> Console:
    """Console for logs and progress (never stdout, which carries results)."""
    return Console(stderr=True, highlight=False)


def log(message: str, *, style: str | None = None) -> None:
    """One log line on stderr (markup off: messages may contain brackets)."""
    stderr_console().print(message, style=style, markup=False, highlight=False, soft_wrap=True)


def emit(ctx: click.Context | None, data: Mapping[str, Any], human: RenderableType | None = None) -> None:
    """Print a command's result: ``data`` as JSON with ``--json``, else ``human``.

    ``human`` may be a string (printed verbatim) or any rich renderable; when
    omitted, ``data`` is shown as a two-column table.
    """
    if is_json(ctx):
        click.echo(json.dumps(to_jsonable(dict(data)), indent=None, sort_keys=False))
        return
    if human is None:
        human = kv_table(data)
    if isinstance(human, str):
        click.echo(human)
        return
    console = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)
    console.print(human)


def kv_table(data: Mapping[str, Any], title: str | None = None) -> Table:
    """A key/value table; nested values are shown as compact JSON."""
    table = Table(title=title, show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in data.items():
        shown = to_jsonable(value)
        table.add_row(str(key), shown if isinstance(shown, str) else json.dumps(shown))
    return table


def to_jsonable(value: Any) -> Any:
    """Plain JSON values: bytes as 0x-hex, paths and enums as strings, dataclasses as dicts."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "0x" + bytes(value).hex()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "hex") and callable(value.hex):  # HexBytes and friends
        text = value.hex()
        return text if text.startswith("0x") else "0x" + text
    return str(value)


def progress(ctx: click.Context | None = None, *, transient: bool = True) -> Progress:
    """A progress bar on stderr, silent with ``--json`` or when stderr is not a terminal.

    Use as ``with progress(ctx) as bar: task = bar.add_task("…", total=n); bar.advance(task)``.
    """
    console = stderr_console()
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
        disable=is_json(ctx) or not console.is_terminal,
    )


# --------------------------------------------------------------------- identity and chain


def identity(ctx: click.Context | None = None) -> Identity:
    """The home's identity, unlocked with the passphrase (once per invocation)."""
    ctx = ctx or click.get_current_context()
    root = ctx.find_root()
    if _IDENTITY_KEY not in root.meta:
        from collab.identity import Identity

        conf = settings(ctx)
        if not Identity.exists(conf.home):
            raise NotFound(f"no identity in {conf.home}", hint="create one with `collab id init`")
        root.meta[_IDENTITY_KEY] = Identity.load(conf.home, conf.passphrase())
    return root.meta[_IDENTITY_KEY]


@dataclass
class ChainSession:
    """A connected chain, the deployment on it, and the home's signing account."""

    w3: Web3
    deployment: Deployment
    account: LocalAccount | None
    settings: Settings

    def client(self, client_class: type[C]) -> C:
        """``client_class.from_deployment`` acting as this session's account."""
        return client_class.from_deployment(self.deployment, self.w3, self.account)  # type: ignore[attr-defined]


def chain_session(ctx: click.Context | None = None, need_account: bool = True) -> ChainSession:
    """Connect to the deployment's chain (RPC override from settings) and unlock the account.

    Raises NotFound without a deployment file, ChainUnavailable when nothing
    answers, BadInput when the endpoint is a different chain than the
    deployment's, and Unauthorized/NotFound from the identity when
    ``need_account`` and the keys cannot be unlocked.
    """
    ctx = ctx or click.get_current_context()
    root = ctx.find_root()
    session: ChainSession | None = root.meta.get(_SESSION_KEY)
    if session is None:
        from chain.client import connect
        from chain.deployment import Deployment

        conf = settings(ctx)
        deployment = Deployment.load(conf.deployment_path)
        rpc_url = conf.rpc_url or deployment.rpc_url
        w3 = connect(rpc_url)
        chain_id = w3.eth.chain_id
        if chain_id != deployment.chain_id:
            raise BadInput(
                f"{rpc_url} is chain {chain_id} but {conf.deployment_path} is for chain {deployment.chain_id}",
                hint="point --deployment at this chain's deployment file",
            )
        session = ChainSession(w3=w3, deployment=deployment, account=None, settings=conf)
        root.meta[_SESSION_KEY] = session
    if need_account and session.account is None:
        session.account = identity(ctx).account
    return session
