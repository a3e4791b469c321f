"""The CLI root: exit codes, one-line errors, --json error shape, lazy command groups."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

import collab.commands
from collab import __version__
from collab.cli import GROUPS, available_groups, cli, run
from collab.commands._common import chain_session, emit, settings
from collab.errors import (
    BadInput,
    ChainUnavailable,
    CollabError,
    InternalError,
    NotFound,
    ProtocolViolation,
    Unauthorized,
    Unavailable,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def probe() -> Iterator[click.Group]:
    """A throwaway `probe` group on the root for the duration of one test."""
    group = click.Group("probe")
    cli.add_command(group)
    try:
        yield group
    finally:
        cli.commands.pop("probe", None)


def _raiser(group: click.Group, exc: BaseException) -> None:
    @group.command("boom")
    def boom() -> None:
        raise exc


def _collab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point in a fresh interpreter."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "collab", *args], capture_output=True, text=True, cwd=REPO, env=full_env, timeout=60
    )


# --------------------------------------------------------------------- usage


def test_unknown_option_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--no-such-flag"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: No such option") and err.count("\n") == 1


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["no-such-command"]) == 1
    assert "No such command 'no-such-command'" in capsys.readouterr().err


def test_missing_argument_names_the_subcommand_help(probe: click.Group, capsys: pytest.CaptureFixture[str]) -> None:
    @probe.command("need")
    @click.argument("thing")
    def need(thing: str) -> None:
        click.echo(thing)

    assert run(["probe", "need"]) == 1
    err = capsys.readouterr().err
    assert "Missing argument 'THING'" in err and "collab probe need --help" in err


def test_bare_collab_prints_help_and_exits_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert run([]) == 1
    assert "Usage: collab" in capsys.readouterr().err


def test_version_and_help_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert run(["--help"]) == 0
    assert "--json" in capsys.readouterr().out


# --------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "exc, code",
    [
        (BadInput("bad file x.json"), 2),
        (NotFound("no asset 7"), 3),
        (Unauthorized("not licensed"), 4),
        (Unavailable("node down"), 5),
        (ChainUnavailable("http://127.0.0.1:1"), 5),
        (ProtocolViolation("bad signature"), 6),
        (InternalError("invariant broken"), 10),
    ],
)
def test_collab_errors_map_to_their_exit_code_and_one_stderr_line(
    probe: click.Group, capsys: pytest.CaptureFixture[str], exc: CollabError, code: int
) -> None:
    _raiser(probe, exc)
    assert run(["probe", "boom"]) == code
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"error: {exc}\n"


def test_json_error_is_the_errors_json_on_stdout(probe: click.Group, capsys: pytest.CaptureFixture[str]) -> None:
    _raiser(probe, NotFound("no asset 7", asset=7))
    assert run(["--json", "probe", "boom"]) == 3
    out, err = capsys.readouterr()
    assert err == ""
    assert json.loads(out) == {"error": "NotFound", "message": "no asset 7", "exit_code": 3, "details": {"asset": 7}}


def test_json_usage_error_has_the_same_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--json", "nope"]) == 1
    body = json.loads(capsys.readouterr().out)
    assert body["error"] == "UsageError" and body["exit_code"] == 1 and "nope" in body["message"]


def test_json_after_the_subcommand_is_the_global_switch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`collab merge methods --json` and `collab id show --json` behave like `collab --json ...`."""
    assert run(["merge", "methods", "--json"]) == 0
    assert "methods" in json.loads(capsys.readouterr().out)
    monkeypatch.setenv("COLLAB_HOME", str(tmp_path))
    assert run(["id", "show", "--json"]) == 3  # no deployment in an empty home
    assert json.loads(capsys.readouterr().out)["error"] == "NotFound"
    for name in available_groups():  # every command of every group takes it
        group = cli.get_command(click.Context(cli), name)
        commands = [group, *getattr(group, "commands", {}).values()]
        assert all(any("--json" in p.opts for p in c.params) for c in commands), name


def test_unexpected_exception_is_internal_without_traceback(
    probe: click.Group, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLLAB_DEBUG", raising=False)
    _raiser(probe, ZeroDivisionError("division by zero\nsecond line"))
    assert run(["probe", "boom"]) == 10
    err = capsys.readouterr().err
    assert err == "internal error: ZeroDivisionError: division by zero second line\n"
    assert "Traceback" not in err


def test_collab_debug_shows_the_traceback(
    probe: click.Group, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLAB_DEBUG", "1")
    _raiser(probe, KeyError("k"))
    assert run(["probe", "boom"]) == 10
    assert "Traceback" in capsys.readouterr().err


def test_json_internal_error_shape(probe: click.Group, capsys: pytest.CaptureFixture[str]) -> None:
    _raiser(probe, RuntimeError("boom"))
    assert run(["--json", "probe", "boom"]) == 10
    body = json.loads(capsys.readouterr().out)
    assert body == {"error": "InternalError", "message": "internal error: RuntimeError: boom", "exit_code": 10}


def test_keyboard_interrupt_exits_130(probe: click.Group, capsys: pytest.CaptureFixture[str]) -> None:
    _raiser(probe, KeyboardInterrupt())
    assert run(["probe", "boom"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_console_script_exits_with_the_code_and_never_prints_a_traceback() -> None:
    proc = _collab("--definitely-not-an-option")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


# --------------------------------------------------------------------- output and settings


def test_emit_prints_json_or_human(probe: click.Group, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    @probe.command("show")
    @click.pass_context
    def show(ctx: click.Context) -> None:
        conf = settings(ctx)
        emit(ctx, {"home": conf.home, "deployment": conf.deployment_path, "blob": b"\x01\x02"}, f"home is {conf.home}")

    deployment = tmp_path / "dep.json"
    assert run(["--json", "--home", str(tmp_path), "--deployment", str(deployment), "probe", "show"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"home": str(tmp_path), "deployment": str(deployment), "blob": "0x0102"}
    assert err == ""

    assert run(["--home", str(tmp_path), "probe", "show"]) == 0
    assert capsys.readouterr().out == f"home is {tmp_path}\n"


def test_emit_without_human_renders_a_table(probe: click.Group, capsys: pytest.CaptureFixture[str]) -> None:
    @probe.command("table")
    @click.pass_context
    def table(ctx: click.Context) -> None:
        emit(ctx, {"asset": 7, "owner": "0xabc"})

    assert run(["probe", "table"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["asset", "7"] in lines and ["owner", "0xabc"] in lines


def test_home_from_env_when_no_flag(
    probe: click.Group, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    @probe.command("home")
    @click.pass_context
    def home(ctx: click.Context) -> None:
        click.echo(settings(ctx).home)

    monkeypatch.setenv("COLLAB_HOME", str(tmp_path / "from-env"))
    assert run(["probe", "home"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "from-env")


def test_chain_session_without_deployment_is_not_found(
    probe: click.Group, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    @probe.command("session")
    @click.pass_context
    def session(ctx: click.Context) -> None:
        chain_session(ctx, need_account=False)

    assert run(["--home", str(tmp_path), "probe", "session"]) == 3
    err = capsys.readouterr().err
    assert "no deployment file" in err and "collab chain up" in err


def test_chain_session_with_dead_rpc_is_unavailable(
    probe: click.Group, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from chain.anvil import free_port
    from chain.deployment import Deployment

    deployment = tmp_path / "deployment.json"
    Deployment(chain_id=31337, rpc_url=f"http://127.0.0.1:{free_port()}", deploy_block=0).save(deployment)

    @probe.command("session")
    @click.pass_context
    def session(ctx: click.Context) -> None:
        chain_session(ctx, need_account=False)

    assert run(["--home", str(tmp_path), "--deployment", str(deployment), "probe", "session"]) == 5
    assert "chain not reachable" in capsys.readouterr().err


# --------------------------------------------------------------------- lazy groups


@pytest.fixture
def fake_group_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A `demo` command module on a temporary path in front of collab/commands."""
    pkg = tmp_path / "cmds"
    pkg.mkdir()
    (pkg / "demo.py").write_text(
        textwrap.dedent(
            """
            import click

            @click.group("demo")
            def group() -> None:
                "A stand-in demo group."

            @group.command("hello")
            def hello() -> None:
                click.echo("hello from demo")
            """
        )
    )
    (pkg / "watch.py").write_text("value = 1  # no `group`: a broken command module\n")
    monkeypatch.setattr(collab.commands, "__path__", [str(pkg), *collab.commands.__path__])
    for name in ("demo", "watch"):
        monkeypatch.delitem(sys.modules, f"collab.commands.{name}", raising=False)
    yield "collab.commands.demo"
    for name in ("demo", "watch"):
        sys.modules.pop(f"collab.commands.{name}", None)


def test_groups_import_only_when_invoked(fake_group_module: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert "demo" in available_groups()
    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    assert GROUPS["demo"] in out
    assert fake_group_module not in sys.modules  # listed from the static table, not imported

    assert run(["demo", "hello"]) == 0
    assert capsys.readouterr().out == "hello from demo\n"
    assert fake_group_module in sys.modules


def test_a_module_without_group_is_an_internal_error(fake_group_module: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["watch"]) == 10
    assert "does not define a click command named `group`" in capsys.readouterr().err


def test_only_existing_modules_are_listed() -> None:
    listed = available_groups()
    commands_dir = Path(collab.commands.__file__).parent
    assert listed == [name for name in GROUPS if (commands_dir / f"{name}.py").exists()]


def test_help_and_chain_help_do_not_import_heavy_libraries() -> None:
    code = (
        "import sys\n"
        "from collab.cli import run\n"
        "run(['--help'])\n"
        "if 'chain' in __import__('collab.cli').cli.available_groups():\n"
        "    run(['chain', '--help'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'crypten', 'flwr', 'tenseal', 'opacus', 'transformers'})\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


# --------------------------------------------------------------------- chain sessions on a real chain


@pytest.mark.slow
def test_chain_session_unlocks_the_homes_account_and_builds_clients(
    probe: click.Group,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    deployment: object,
) -> None:
    from chain.clients.protocol_params import ProtocolParamsClient
    from collab.identity import Identity

    home = tmp_path / "home"
    ident = Identity.create(home, "pw", scrypt_n=2**12)
    deployment.save(home / "deployment.json")  # type: ignore[attr-defined]
    monkeypatch.setenv("COLLAB_PASSPHRASE", "pw")

    @probe.command("whoami")
    @click.pass_context
    def whoami(ctx: click.Context) -> None:
        session = chain_session(ctx)
        params = session.client(ProtocolParamsClient)
        emit(ctx, {"account": session.account.address, "chain_id": session.w3.eth.chain_id, "owner": params.owner()})

    assert run(["--json", "--home", str(home), "probe", "whoami"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["account"] == ident.address and body["chain_id"] == 31337
    assert body["owner"].startswith("0x")

    monkeypatch.setenv("COLLAB_PASSPHRASE", "wrong")
    assert run(["--home", str(home), "probe", "whoami"]) == 4
    assert "wrong passphrase" in capsys.readouterr().err

    monkeypatch.setenv("COLLAB_PASSPHRASE", "pw")
    other_home = tmp_path / "no-identity"
    assert run(["--home", str(other_home), "--deployment", str(home / "deployment.json"), "probe", "whoami"]) == 3
    assert "no identity" in capsys.readouterr().err


@pytest.mark.slow
def test_chain_session_refuses_a_deployment_of_another_chain(
    probe: click.Group, capsys: pytest.CaptureFixture[str], tmp_path: Path, anvil: object
) -> None:
    from chain.deployment import Deployment

    path = tmp_path / "deployment.json"
    Deployment(chain_id=1, rpc_url=anvil.rpc_url, deploy_block=0).save(path)  # type: ignore[attr-defined]

    @probe.command("session")
    @click.pass_context
    def session(ctx: click.Context) -> None:
        chain_session(ctx, need_account=False)

    assert run(["--deployment", str(path), "probe", "session"]) == 2
    assert "is chain 31337" in capsys.readouterr().err


def test_progress_is_silent_with_json_or_without_a_terminal(probe: click.Group, capsys: pytest.CaptureFixture[str]) -> None:
    from collab.commands._common import progress

    @probe.command("work")
    @click.pass_context
    def work(ctx: click.Context) -> None:
        with progress(ctx) as bar:
            task = bar.add_task("working", total=3)
            for _ in range(3):
                bar.advance(task)
            emit(ctx, {"disabled": bar.disable})

    assert run(["--json", "probe", "work"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"disabled": True} and err == ""
    assert run(["probe", "work"]) == 0  # captured stderr is not a terminal
    assert capsys.readouterr().err == ""


def test_group_run_without_the_root_still_resolves_settings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    @click.command()
    @click.pass_context
    def standalone(ctx: click.Context) -> None:
        click.echo(settings(ctx).home)

    result = CliRunner().invoke(standalone, [], env={"COLLAB_HOME": str(tmp_path)})
    assert result.exit_code == 0 and result.output.strip() == str(tmp_path)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)


def test_the_console_entry_point_keeps_exit_codes_output_and_atexit_handlers() -> None:
    """The CLI skips the interpreter's teardown (~1.2 s after torch is imported): not its exit code, its
    buffered output or its atexit handlers; a still-running non-daemon thread gets the normal, joining exit."""
    fast = _python("import atexit; from collab.cli import exit_without_teardown\n"
                   "atexit.register(lambda: print('atexit ran'))\n"
                   "print('buffered', end=' ')\nexit_without_teardown(7)")
    assert fast.returncode == 7 and fast.stdout == "buffered atexit ran\n"
    joined = _python("import threading, time, sys; from collab.cli import exit_without_teardown\n"
                     "threading.Thread(target=lambda: (time.sleep(0.3), print('thread done'))).start()\n"
                     "exit_without_teardown(3)")
    assert joined.returncode == 3 and joined.stdout == "thread done\n"
    cli = subprocess.run([sys.executable, "-m", "collab", "--json", "merge", "methods"], capture_output=True, text=True,
                         timeout=300, check=False)
    assert cli.returncode == 0 and "ties" in {m["name"] for m in json.loads(cli.stdout)["methods"]}
    bad = subprocess.run([sys.executable, "-m", "collab", "merge", "run", "/nonexistent/merge.yml"], capture_output=True,
                         text=True, timeout=300, check=False)
    assert bad.returncode == 3 and bad.stderr.strip().splitlines() == ["error: merge config /nonexistent/merge.yml does not exist"]
