"""Compile the Solidity sources with the pinned solcjs, cached by source hash.

Native solc downloads are impossible on these machines, so compilation goes
through ``node solc.js --standard-json``; it takes seconds, hence the cache:
the key is a sha256 over the solc version, the settings and every source path
and content, and an unchanged tree never starts node again. The legacy
pipeline is tried first (fast); only sources it rejects with "stack too deep"
are compiled through the IR pipeline (``viaIR``), which is several times slower.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chain.errors import CompilationError
from chain.paths import BUILD_DIR, CHAIN_DIR, CONTRACTS_DIR, NODE_MODULES, SETUP_HINT, SOLCJS
from collab.errors import Unavailable

SETTINGS: dict[str, Any] = {
    "evmVersion": "prague",
    "optimizer": {"enabled": True, "runs": 200},
    # Foundry-style `solady/utils/...` imports resolve into the npm package's src/.
    "remappings": ["solady/utils/=solady/src/utils/"],
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
}
_TIMEOUT_S = 600
STACK_TOO_DEEP = "Stack too deep"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Artifact:
    """One compiled contract: what deploying and calling it needs."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    source: str = ""

    @property
    def abi_hash(self) -> str:
        """sha256 of the canonical ABI JSON; recorded in deployments to spot stale ones."""
        return abi_hash(self.abi)

    @property
    def deployable(self) -> bool:
        """False for interfaces, abstract contracts and libraries without code."""
        return len(self.bytecode) > 2


def abi_hash(abi: list[dict[str, Any]]) -> str:
    """Canonical hash of an ABI (key order and whitespace do not matter)."""
    return "0x" + hashlib.sha256(json.dumps(abi, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def solc_version() -> str:
    """The solcjs version string; part of the cache key."""
    package = SOLCJS.parent / "package.json"
    if not package.is_file():
        raise Unavailable(f"solcjs not found at {SOLCJS}", hint=SETUP_HINT)
    return str(json.loads(package.read_text())["version"])


def compile_contracts(
    force: bool = False, *, source_root: Path | None = None, build_dir: Path | None = None
) -> dict[str, Artifact]:
    """Compile every ``*.sol`` under ``source_root`` (default ``chain/contracts``).

    Returns artifacts by contract name, including the library contracts the
    sources import (e.g. OpenZeppelin's ``TimelockController``); on a name
    clash the project's own contract wins. ``force`` ignores the cache.
    """
    root = (source_root or CONTRACTS_DIR).resolve()
    out_dir = build_dir or BUILD_DIR
    sources = _collect_sources(root)
    version = solc_version()
    key = _cache_key(version, sources, _importable_sources(root))
    cache = out_dir / f"artifacts-{_root_tag(root)}.json"
    with _locked(out_dir):
        if not force:
            cached = _read_cache(cache, key)
            if cached is not None:
                return cached
        settings: dict[str, Any] = SETTINGS
        try:
            output = _run_solc(root.parent, sources, settings)
        except CompilationError as exc:
            if STACK_TOO_DEEP not in exc.message:
                raise
            # The legacy pipeline ran out of stack slots; the IR pipeline (slower) does not.
            log.warning("solc: stack too deep, compiling again with viaIR (slower)")
            settings = {**SETTINGS, "viaIR": True}
            output = _run_solc(root.parent, sources, settings)
        artifacts = _artifacts_from(output, own_sources=set(sources))
        _write_cache(cache, key, version, artifacts, via_ir=bool(settings.get("viaIR")))
    return artifacts


def _collect_sources(root: Path) -> dict[str, str]:
    """Source unit name (path relative to the root's parent) -> content, sorted."""
    if not root.is_dir():
        raise CompilationError(f"no contract sources at {root}")
    files = sorted(root.rglob("*.sol"))
    if not files:
        raise CompilationError(f"no .sol files under {root}")
    return {p.relative_to(root.parent).as_posix(): p.read_text() for p in files}


def _importable_sources(root: Path) -> dict[str, str]:
    """The project's contracts, which sources under another root may import (so they key the cache too)."""
    if root == CONTRACTS_DIR.resolve() or not CONTRACTS_DIR.is_dir():
        return {}
    return _collect_sources(CONTRACTS_DIR.resolve())


def _cache_key(version: str, sources: dict[str, str], imported: dict[str, str]) -> str:
    digest = hashlib.sha256()
    digest.update(version.encode())
    digest.update(json.dumps(SETTINGS, sort_keys=True).encode())
    for tag, group in ((b"S", sources), (b"I", imported)):
        for path, content in group.items():
            digest.update(tag + b"\0" + path.encode() + b"\0" + content.encode())
    return digest.hexdigest()


def _root_tag(root: Path) -> str:
    """Cache file tag: ``main`` for chain/contracts, a short path hash otherwise."""
    if root == CONTRACTS_DIR.resolve():
        return "main"
    return hashlib.sha256(str(root).encode()).hexdigest()[:12]


@contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """Serialise compilations across processes (parallel test runs share chain/build)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_cache(cache: Path, key: str) -> dict[str, Artifact] | None:
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != key:
        return None
    return {name: Artifact(name=name, **fields) for name, fields in data["contracts"].items()}


def _write_cache(cache: Path, key: str, version: str, artifacts: dict[str, Artifact], *, via_ir: bool) -> None:
    body = {
        "key": key,
        "solc": version,
        "via_ir": via_ir,
        "contracts": {a.name: {"abi": a.abi, "bytecode": a.bytecode, "source": a.source} for a in artifacts.values()},
    }
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".artifacts-", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(body, handle)
    os.replace(tmp, cache)


def _run_solc(base_path: Path, sources: dict[str, str], settings: dict[str, Any]) -> dict[str, Any]:
    if not SOLCJS.is_file():
        raise Unavailable(f"solcjs not found at {SOLCJS}", hint=SETUP_HINT)
    request = {"language": "Solidity", "sources": {p: {"content": c} for p, c in sources.items()}, "settings": settings}
    cmd = [
        "node", str(SOLCJS), "--standard-json",
        "--base-path", str(base_path),
        "--include-path", str(NODE_MODULES),
    ]
    if base_path.resolve() != CHAIN_DIR:
        # Let fixture sources import the project's contracts and interfaces too.
        cmd += ["--include-path", str(CHAIN_DIR)]
    # stdin and stdout are files, not pipes: solc.js reads stdin with readFileSync,
    # which fails with EAGAIN once the request outgrows the 64 KiB pipe buffer, and
    # calls process.exit() right after console.log, which cuts piped output at 64 KiB.
    with tempfile.TemporaryFile() as request_file, tempfile.TemporaryFile() as out:
        request_file.write(json.dumps(request).encode())
        request_file.seek(0)
        try:
            proc = subprocess.run(cmd, stdin=request_file, stdout=out, stderr=subprocess.PIPE, timeout=_TIMEOUT_S, check=False)
        except FileNotFoundError as exc:
            raise Unavailable("node is not installed", hint=SETUP_HINT) from exc
        except subprocess.TimeoutExpired as exc:
            raise CompilationError(f"solcjs did not finish within {_TIMEOUT_S}s") from exc
        out.seek(0)
        stdout = out.read().decode()
    start = stdout.find("{")
    if start < 0:
        raise CompilationError(f"solcjs produced no JSON (exit {proc.returncode}): {proc.stderr.decode().strip()[-2000:]}")
    output: dict[str, Any] = json.loads(stdout[start:])
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        text = "\n".join(e.get("formattedMessage", e.get("message", "")).strip() for e in errors)
        raise CompilationError(f"solc reported {len(errors)} error(s):\n{text}")
    return output


def _artifacts_from(output: dict[str, Any], own_sources: set[str]) -> dict[str, Artifact]:
    artifacts: dict[str, Artifact] = {}
    # Library sources first, so the project's own contracts overwrite name clashes.
    units = sorted(output.get("contracts", {}).items(), key=lambda item: item[0] in own_sources)
    for source, contracts in units:
        for name, body in contracts.items():
            code = body.get("evm", {}).get("bytecode", {}).get("object", "")
            artifacts[name] = Artifact(name=name, abi=body.get("abi", []), bytecode="0x" + code if code else "0x", source=source)
    return artifacts
