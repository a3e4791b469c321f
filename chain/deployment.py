"""The deployment file: where collab's contracts live on one chain.

``collab chain up`` writes it into the home; other homes point at it with
``--deployment``. It records an ABI hash per contract so that a client built
from newer sources fails clearly instead of calling a contract that changed.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chain.errors import DeploymentMismatch
from collab.errors import BadInput, NotFound

FORMAT_VERSION = 1


@dataclass
class Deployment:
    """Chain id, RPC URL, deploy block and, per contract name, ``{address, abi_hash, artifact}``."""

    chain_id: int
    rpc_url: str
    deploy_block: int
    contracts: dict[str, dict[str, str]] = field(default_factory=dict)

    def address(self, name: str) -> str:
        """Checksummed address of a deployed contract, or NotFound."""
        return self.entry(name)["address"]

    def entry(self, name: str) -> dict[str, str]:
        """The recorded entry of a contract, or NotFound naming what exists."""
        try:
            return self.contracts[name]
        except KeyError:
            known = ", ".join(sorted(self.contracts)) or "none"
            raise NotFound(f"contract {name!r} is not in this deployment (deployed: {known})") from None

    def artifact_name(self, name: str) -> str:
        """The compiled artifact a deployed contract was built from (defaults to its name)."""
        return self.entry(name).get("artifact", name)

    def to_json(self) -> dict[str, Any]:
        """The JSON body written to ``deployment.json``."""
        return {
            "version": FORMAT_VERSION,
            "chain_id": self.chain_id,
            "rpc_url": self.rpc_url,
            "deploy_block": self.deploy_block,
            "contracts": {k: dict(v) for k, v in sorted(self.contracts.items())},
        }

    def save(self, path: Path | str) -> None:
        """Write atomically, so a reader never sees half a file."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".deployment-", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(self.to_json(), handle, indent=2)
            handle.write("\n")
        os.replace(tmp, target)

    @classmethod
    def load(cls, path: Path | str) -> Deployment:
        """Read a deployment file; NotFound or BadInput with the path on failure."""
        source = Path(path)
        try:
            data = json.loads(source.read_text())
        except FileNotFoundError:
            raise NotFound(f"no deployment file at {source}", hint="run `collab chain up` or pass --deployment") from None
        except (OSError, ValueError) as exc:
            raise BadInput(f"cannot read deployment file {source}: {exc}") from None
        return cls.from_json(data, source=str(source))

    @classmethod
    def from_json(cls, data: Any, *, source: str = "deployment") -> Deployment:
        """Validate and build from parsed JSON."""
        try:
            contracts = {
                str(name): {"address": str(e["address"]), "abi_hash": str(e["abi_hash"]), "artifact": str(e.get("artifact", name))}
                for name, e in data["contracts"].items()
            }
            return cls(int(data["chain_id"]), str(data["rpc_url"]), int(data["deploy_block"]), contracts)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadInput(f"malformed deployment file {source}: missing or bad field {exc}") from None

    def check_abi(self, name: str, current_hash: str) -> None:
        """Fail clearly when a contract's ABI changed since it was deployed."""
        recorded = self.entry(name)["abi_hash"]
        if recorded != current_hash:
            raise DeploymentMismatch(
                f"{name}'s ABI changed since it was deployed (recorded {recorded[:12]}…, compiled {current_hash[:12]}…)",
                hint="redeploy with `collab chain up` (or `collab chain deploy`)",
            )
