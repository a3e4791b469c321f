"""Where the chain toolchain and its outputs live, resolved from this package.

Everything is relative to the installed ``chain`` package so that the CLI works
from any working directory; nothing here reads outside the repository.
"""

from __future__ import annotations

from pathlib import Path

CHAIN_DIR: Path = Path(__file__).resolve().parent
CONTRACTS_DIR: Path = CHAIN_DIR / "contracts"
BUILD_DIR: Path = CHAIN_DIR / "build"
NODE_MODULES: Path = CHAIN_DIR / "node_modules"
SOLCJS: Path = NODE_MODULES / "solc" / "solc.js"
ANVIL_BIN: Path = NODE_MODULES / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
SETUP_HINT = "run `make setup` (installs the chain toolchain into chain/node_modules)"
