"""The ``collab`` command: global options, lazy command groups, error-to-exit-code mapping.

Each command group lives in ``collab/commands/<name>.py`` and exposes a click
command named ``group``. Groups are imported only when invoked, so
``collab --help`` or ``collab chain status`` never pays for torch, Flower or
CrypTen. Every :class:`~collab.errors.CollabError` becomes one line on stderr
(or a JSON object on stdout with ``--json``) and its exit code; anything else
is a bug: one line, exit 10, and the traceback only with ``COLLAB_DEBUG=1``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from collab import __version__
from collab.commands._common import CliState, accept_json_everywhere
from collab.errors import EXIT_INTERNAL, EXIT_USAGE, CollabError, InternalError, UsageError

EXIT_INTERRUPTED = 130
COMMANDS_PACKAGE = "collab.commands"

# The architecture's CLI table: name -> one-line help shown by `collab --help`
# (static, so that listing commands imports none of them).
GROUPS: dict[str, str] = {
    "chain": "Start, inspect, deploy and stop the chain.",
    "id": "Register and show this home's identity (Sahara ID).",
    "asset": "Register, list and show assets.",
    "license": "Offer, buy, show and check licenses.",
    "revenue": "Show and claim revenue.",
    "gov": "Propose, vote on and execute governance proposals.",
    "orchestrator": "Run the orchestrator (coordinator and claimer).",
    "node": "Run a participant node and show its status.",
    "jobs": "List, show and cancel jobs.",
    "round": "Create, inspect and join training rounds.",
    "join": "Join a training round (same as `round join`).",
    "infer": "Run secure or plaintext inference on an asset.",
    "merge": "Merge models and list merge methods.",
    "claims": "Post, list and show on-chain claims.",
    "challenge": "Challenge a claim with a fraud proof.",
    "watch": "Watch claims and defend or challenge them.",
    "bench": "Run benchmark suites.",
    "demo": "Run the end-to-end demo.",
}


def available_groups() -> list[str]:
    """Names of the command groups whose module exists (others are still being written)."""
    return [name for name in GROUPS if importlib.util.find_spec(f"{COMMANDS_PACKAGE}.{name}") is not None]


class LazyGroup(click.Group):
    """A click group that imports ``collab.commands.<name>`` only when ``name`` runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(available_groups()), key=_order)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in GROUPS or importlib.util.find_spec(f"{COMMANDS_PACKAGE}.{cmd_name}") is None:
            return None
        module = importlib.import_module(f"{COMMANDS_PACKAGE}.{cmd_name}")
        command = getattr(module, "group", None)
        if not isinstance(command, click.Command):
            raise InternalError(f"{module.__name__} does not define a click command named `group`")
        return accept_json_everywhere(command)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List commands from the static table, without importing their modules."""
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(limit=formatter.width)))
            else:
                rows.append((name, GROUPS[name]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _order(name: str) -> tuple[int, str]:
    order = list(GROUPS)
    return (order.index(name), name) if name in order else (len(order), name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(file_okay=False), default=None, help="Home directory (env COLLAB_HOME, default ~/.collab).")
@click.option("--deployment", type=click.Path(dir_okay=False), default=None, help="Deployment file (env COLLAB_DEPLOYMENT, default <home>/deployment.json).")
@click.option("--json", "json_output", is_flag=True, help="Print results as JSON on stdout.")
@click.version_option(__version__, "--version", prog_name="collab")
@click.pass_context
def cli(ctx: click.Context, home: str | None, deployment: str | None, json_output: bool) -> None:
    """collab: collaborative AI with private data and on-chain settled results."""
    ctx.obj = CliState(home=home, deployment=deployment, json_output=json_output)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    json_mode = _wants_json(args)
    previous = _terminate_like_interrupt()
    try:
        result = cli.main(args=args, prog_name="collab", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:  # click turns Ctrl-C (and EOF at a prompt) into Abort
        _report_line("interrupted")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        _report_line("interrupted")
        return EXIT_INTERRUPTED
    except click.exceptions.NoArgsIsHelpError as exc:  # `collab` or `collab chain` alone
        _report_line(exc.format_message(), prefix="", single_line=False)
        return EXIT_USAGE
    except click.UsageError as exc:
        return _report_error(UsageError(_usage_message(exc)), json_mode)
    except click.ClickException as exc:  # e.g. FileError: the user's input, not a bug
        return _report_error(UsageError(exc.format_message()), json_mode)
    except CollabError as exc:
        return _report_error(exc, json_mode)
    except BrokenPipeError:  # `collab … | head`: the reader left; not an error of ours
        _silence_stdout()
        return 0
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no tracebacks for users
        if os.environ.get("COLLAB_DEBUG") == "1":
            traceback.print_exc()
        message = f"internal error: {type(exc).__name__}: {_one_line(str(exc))}"
        if json_mode:
            body = {"error": "InternalError", "message": message, "exit_code": EXIT_INTERNAL}
            _write_stdout(json.dumps(body))
        else:
            _report_line(message, prefix="")
        return EXIT_INTERNAL
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def _raise_interrupt(signum: int, _frame: Any) -> None:
    signal.signal(signum, signal.SIG_IGN)  # once: a second SIGTERM must not cut the clean-up short (SIGKILL still can)
    raise KeyboardInterrupt(f"signal {signum}")


def _terminate_like_interrupt() -> Any:
    """Make SIGTERM unwind the command like Ctrl-C; return the handler to restore (None: left alone).

    Why: commands own child processes (the demo's anvil, orchestrator and
    nodes; a bench's SuperLink and SuperNodes; CrypTen parties) that their
    ``with`` blocks stop. SIGTERM's default action ends the CLI at once and
    leaves them running, holding ports and temporary homes. A handler set by
    whoever started us (not the default) is respected, and servers
    (``orchestrator start``, ``node start``) install their own.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        return None
    signal.signal(signal.SIGTERM, _raise_interrupt)
    return previous


def main() -> None:
    """Console-script entry point (``collab = "collab.cli:main"``)."""
    exit_without_teardown(run())


def exit_without_teardown(code: int) -> NoReturn:
    """Exit with ``code``, skipping the interpreter's teardown when nothing else is left running.

    Why: after torch, transformers, peft and mergekit are imported, freeing
    their module graph at exit takes ~1.2 s on the 2-core machine, longer
    than most commands' own work after their imports. The atexit handlers
    (logging, process pools, temporary files) still run and stdio is
    flushed; while a non-daemon thread is alive (its normal exit would join
    it), or with ``COLLAB_FULL_EXIT=1``, the normal exit is kept.
    """
    import atexit
    import threading

    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    busy = any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread())
    if busy or run_exitfuncs is None or os.environ.get("COLLAB_FULL_EXIT") == "1":
        sys.exit(code)
    run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`collab … | head`) or a closed stream
            pass
    os._exit(code)


def _wants_json(args: list[str]) -> bool:
    """``--json`` among the global options (before the command), read before click parses."""
    return "--json" in args[: args.index("--")] if "--" in args else "--json" in args


def _usage_message(exc: click.UsageError) -> str:
    """click's message plus the command whose ``--help`` explains it."""
    command = exc.ctx.command_path if exc.ctx is not None else "collab"
    return f"{_one_line(exc.format_message())} (see `{command} --help`)"


def _report_error(exc: CollabError, json_mode: bool) -> int:
    if json_mode:
        _write_stdout(json.dumps(exc.to_json()))
    else:
        _report_line(str(exc))
    return exc.exit_code if isinstance(exc.exit_code, int) else EXIT_USAGE


def _report_line(message: str, prefix: str = "error: ", *, single_line: bool = True) -> None:
    text = _one_line(message) if single_line else message.rstrip("\n")
    try:
        sys.stderr.write(f"{prefix}{text}\n")
        sys.stderr.flush()
    except (BrokenPipeError, OSError):
        pass


def _write_stdout(text: str) -> None:
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


if __name__ == "__main__":
    main()
