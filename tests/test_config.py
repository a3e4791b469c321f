"""Settings: precedence flags > env > config file > defaults, home creation, passphrase."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from collab.config import ENV_DEPLOYMENT, ENV_HOME, ENV_PASSPHRASE, ENV_RPC_URL, Settings, ensure_private_dir
from collab.errors import BadInput, Unauthorized


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_defaults_put_everything_under_home_collab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    conf = Settings.resolve(env={})
    assert conf.home == tmp_path / ".collab"
    assert conf.deployment_path == tmp_path / ".collab" / "deployment.json"
    assert conf.rpc_url is None
    assert conf.keys_dir == conf.home / "keys"
    assert conf.vault_dir == conf.home / "vault"
    assert conf.node_socket == conf.home / "node.sock"
    assert conf.flower_dir == conf.home / "flower"
    assert conf.logs_dir == conf.home / "logs"
    assert conf.chain_dir == conf.home / "chain"
    assert conf.jobs_db == conf.home / "jobs.db"
    assert conf.db_path("nonces") == conf.home / "nonces.db"


def test_resolving_settings_creates_nothing(tmp_path: Path) -> None:
    conf = Settings.resolve(home=tmp_path / "fresh", env={})
    assert conf.home == tmp_path / "fresh"
    assert not conf.home.exists()


def test_env_overrides_defaults_and_flags_override_env(tmp_path: Path) -> None:
    env = {
        ENV_HOME: str(tmp_path / "env-home"),
        ENV_DEPLOYMENT: str(tmp_path / "env-deployment.json"),
        ENV_RPC_URL: "http://127.0.0.1:9999",
    }
    from_env = Settings.resolve(env=env)
    assert from_env.home == tmp_path / "env-home"
    assert from_env.deployment_path == tmp_path / "env-deployment.json"
    assert from_env.rpc_url == "http://127.0.0.1:9999"

    from_flags = Settings.resolve(
        home=tmp_path / "flag-home", deployment=tmp_path / "flag.json", rpc_url="http://flag:1", env=env
    )
    assert from_flags.home == tmp_path / "flag-home"
    assert from_flags.deployment_path == tmp_path / "flag.json"
    assert from_flags.rpc_url == "http://flag:1"


def test_config_file_sits_between_env_and_defaults(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        'deployment = "shared/deployment.json"\nrpc_url = "http://file:8545"\n[orchestrator]\nendpoint = "tcp://x:1"\n'
    )
    from_file = Settings.resolve(home=home, env={})
    assert from_file.deployment_path == home / "shared" / "deployment.json"  # relative to the home
    assert from_file.rpc_url == "http://file:8545"
    assert from_file.section("orchestrator") == {"endpoint": "tcp://x:1"}
    assert from_file.section("absent") == {}

    env = {ENV_DEPLOYMENT: str(tmp_path / "env.json"), ENV_RPC_URL: "http://env:1"}
    from_env = Settings.resolve(home=home, env=env)
    assert from_env.deployment_path == tmp_path / "env.json"
    assert from_env.rpc_url == "http://env:1"


def test_relative_flag_paths_are_anchored_at_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    conf = Settings.resolve(home="h", deployment="d.json", env={})
    assert conf.home == tmp_path / "h"
    assert conf.deployment_path == tmp_path / "d.json"


@pytest.mark.parametrize(
    "body, needle",
    [
        ("rpc_url = [1, 2]", "must be a string"),
        ("colour = 'blue'", "unknown setting 'colour'"),
        ("this is not toml", "cannot read config file"),
    ],
)
def test_malformed_config_file_is_bad_input_naming_it(tmp_path: Path, body: str, needle: str) -> None:
    (tmp_path / "config.toml").write_text(body)
    with pytest.raises(BadInput, match=needle) as info:
        Settings.resolve(home=tmp_path, env={})
    assert "config" in str(info.value)


def test_home_is_created_private_on_first_use(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        conf = Settings.resolve(home=tmp_path / "a" / "home", env={})
        assert conf.ensure_home() == conf.home
        assert _mode(conf.home) == 0o700
        vault = conf.ensure_dir(conf.vault_dir)
        assert vault.is_dir() and _mode(vault) == 0o700
        conf.ensure_home()  # idempotent
    finally:
        os.umask(old)


def test_home_that_is_a_file_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "home").write_text("not a dir")
    with pytest.raises(BadInput, match="not a directory"):
        ensure_private_dir(tmp_path / "home")


def test_invalid_database_name_is_rejected(tmp_path: Path) -> None:
    conf = Settings.resolve(home=tmp_path, env={})
    with pytest.raises(BadInput):
        conf.db_path("../escape")


def test_passphrase_from_env(tmp_path: Path) -> None:
    conf = Settings.resolve(home=tmp_path, env={ENV_PASSPHRASE: "correct horse"})
    assert conf.passphrase() == "correct horse"


def test_empty_passphrase_env_is_unauthorized(tmp_path: Path) -> None:
    with pytest.raises(Unauthorized, match="empty"):
        Settings.resolve(home=tmp_path, env={ENV_PASSPHRASE: ""}).passphrase()


def test_missing_passphrase_without_a_terminal_is_unauthorized_not_a_hang(tmp_path: Path) -> None:
    # pytest's captured stdin is not a tty, exactly like a CI job or a pipe.
    conf = Settings.resolve(home=tmp_path, env={})
    with pytest.raises(Unauthorized, match=ENV_PASSPHRASE):
        conf.passphrase()
