"""One typed settings object, resolved as flags > environment > config file > defaults.

Every command and service reads its paths and endpoints from :class:`Settings`
so that a whole node (keys, vault, sockets, databases, logs) lives under one
home directory and several homes can run side by side on one machine.
Resolving settings never touches the disk beyond reading the optional
``<home>/config.toml``; directories are created (0700) only when a caller asks
for them, so ``collab --help`` leaves no trace.

The config file is optional and never holds secrets::

    deployment = "/path/to/deployment.json"
    rpc_url = "http://127.0.0.1:8545"

    [orchestrator]          # free-form sections, read with Settings.section()
    endpoint = "tcp://127.0.0.1:5555"
"""

from __future__ import annotations

import getpass
import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collab.errors import BadInput, Unauthorized

ENV_HOME = "COLLAB_HOME"
ENV_DEPLOYMENT = "COLLAB_DEPLOYMENT"
ENV_RPC_URL = "COLLAB_RPC_URL"
ENV_PASSPHRASE = "COLLAB_PASSPHRASE"
DEFAULT_HOME = Path("~/.collab")
CONFIG_FILE = "config.toml"
PRIVATE_DIR_MODE = 0o700

_FILE_KEYS = {"deployment": str, "rpc_url": str}


@dataclass(frozen=True)
class Settings:
    """Where a home's files live and which chain it talks to.

    Build it with :meth:`resolve`; the fields are already absolute paths.
    ``rpc_url`` is an override: ``None`` means "use the deployment file's URL".
    """

    home: Path
    deployment_path: Path
    rpc_url: str | None = None
    json_output: bool = False
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False, compare=False)

    # ----------------------------------------------------------------- resolution

    @classmethod
    def resolve(
        cls,
        *,
        home: str | os.PathLike[str] | None = None,
        deployment: str | os.PathLike[str] | None = None,
        rpc_url: str | None = None,
        json_output: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        """Apply flags > env > ``<home>/config.toml`` > defaults.

        The home itself comes only from the flag, ``COLLAB_HOME`` or the
        default, since the config file lives inside it.
        """
        environ: Mapping[str, str] = os.environ if env is None else env
        home_path = _absolute(home or environ.get(ENV_HOME) or DEFAULT_HOME)
        file_values, sections = _read_config_file(home_path / CONFIG_FILE)

        if deployment or environ.get(ENV_DEPLOYMENT):
            deployment_path = _absolute(deployment or environ[ENV_DEPLOYMENT])
        elif "deployment" in file_values:  # relative to the home that holds the file
            deployment_path = _absolute(file_values["deployment"], base=home_path)
        else:
            deployment_path = home_path / "deployment.json"
        rpc = rpc_url or environ.get(ENV_RPC_URL) or file_values.get("rpc_url") or None
        return cls(
            home=home_path,
            deployment_path=deployment_path,
            rpc_url=rpc,
            json_output=json_output,
            sections=sections,
            env=environ,
        )

    def section(self, name: str) -> Mapping[str, Any]:
        """A free-form ``[name]`` table of the config file (empty when absent)."""
        return self.sections.get(name, {})

    # ----------------------------------------------------------------- paths

    @property
    def keys_dir(self) -> Path:
        """Encrypted keystores of this home's identity."""
        return self.home / "keys"

    @property
    def vault_dir(self) -> Path:
        """Encrypted content-addressed blobs."""
        return self.home / "vault"

    @property
    def node_socket(self) -> Path:
        """The node's local API (a Unix socket)."""
        return self.home / "node.sock"

    @property
    def flower_dir(self) -> Path:
        """FLWR_HOME for Flower's CLI and runtime files."""
        return self.home / "flower"

    @property
    def logs_dir(self) -> Path:
        """Log files of long-running processes started from this home."""
        return self.home / "logs"

    @property
    def chain_dir(self) -> Path:
        """The embedded chain's state file and pid."""
        return self.home / "chain"

    def db_path(self, name: str) -> Path:
        """SQLite database ``<home>/<name>.db`` (e.g. ``jobs``, ``nonces``, ``node``)."""
        if not name or "/" in name or name.startswith("."):
            raise BadInput(f"invalid database name {name!r}")
        return self.home / f"{name}.db"

    @property
    def jobs_db(self) -> Path:
        """The orchestrator's job store."""
        return self.db_path("jobs")

    @property
    def node_db(self) -> Path:
        """A participant node's local state."""
        return self.db_path("node")

    # ----------------------------------------------------------------- creation

    def ensure_home(self) -> Path:
        """Create the home (0700) on first use and return it."""
        return ensure_private_dir(self.home)

    def ensure_dir(self, path: Path) -> Path:
        """Create ``path`` (a directory under the home) and the home, both 0700."""
        self.ensure_home()
        return ensure_private_dir(path)

    # ----------------------------------------------------------------- secrets

    def passphrase(self, *, confirm: bool = False, prompt: str = "Passphrase") -> str:
        """The keystore passphrase: ``COLLAB_PASSPHRASE`` or an interactive prompt.

        Without a terminal and without the variable, raise Unauthorized rather
        than hang waiting for input that will never come.
        """
        value = self.env.get(ENV_PASSPHRASE)
        if value is not None:
            if not value:
                raise Unauthorized(f"{ENV_PASSPHRASE} is set but empty")
            return value
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise Unauthorized(
                f"a passphrase is needed for the keys in {self.keys_dir}",
                hint=f"set {ENV_PASSPHRASE} or run in a terminal",
            )
        first = getpass.getpass(f"{prompt}: ", stream=sys.stderr)
        if not first:
            raise Unauthorized("empty passphrase")
        if confirm and getpass.getpass(f"{prompt} (again): ", stream=sys.stderr) != first:
            raise Unauthorized("the passphrases do not match")
        return first


def ensure_private_dir(path: Path) -> Path:
    """``mkdir -p`` with mode 0700 for every directory it creates (keys live below)."""
    path = Path(path)
    if not path.is_dir():
        try:
            path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        except FileExistsError:
            raise BadInput(f"{path} exists and is not a directory") from None
        except OSError as exc:
            raise BadInput(f"cannot create {path}: {exc.strerror or exc}") from None
        path.chmod(PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask
    return path


def _absolute(value: str | os.PathLike[str], base: Path | None = None) -> Path:
    """Expand ``~`` and anchor a relative path at ``base`` (default: the working directory)."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return path.resolve()


def _read_config_file(path: Path) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Top-level known keys and free-form tables of ``config.toml`` (both empty if absent)."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}, {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"cannot read config file {path}: {exc}") from None
    values: dict[str, str] = {}
    sections: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            sections[key] = value
        elif key in _FILE_KEYS:
            if not isinstance(value, _FILE_KEYS[key]):
                raise BadInput(f"{path}: {key!r} must be a string")
            values[key] = value
        else:
            raise BadInput(f"{path}: unknown setting {key!r} (known: {', '.join(sorted(_FILE_KEYS))})")
    return values, sections
