"""Asset inputs of a merge: the on-chain right to use them, then the weights out of the vault.

A merge may name registered assets (``model: {asset: 7}``). Before any tensor
is read the merger's right to each one is checked **on-chain**: it owns the
asset (``AssetRegistry.ownerOf``) or holds a current Full-access or
Partnership license (``Licensing.isLicensed``; owners always are). API and
Long-term licenses pay per call for serving and do not allow taking the
weights into a derived model, so they are refused (exit 4).

The weights then come from the merger's own vault (``<home>/vault``): the
asset's ``contentHash`` is the vault id of its encrypted blob, so a blob
imported from the owner's blob server is checked against the chain by its
hash alone. The data key is the merger's own wrap (the owner, or a partner the
owner shared the entry with) or, for Full-access, the key the owner delivered
on-chain, wrapped for the merger's registered X25519 key and checked against
the asset's ``keyCommitment``.

A model asset's blob is its ``model.safetensors``. The architecture
(``config.json``) travels in the safetensors metadata (``collab.config``) when
collab wrote the file (every merge output does); otherwise it is taken from a
local input of the same merge (the base model, typically).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collab.errors import BadInput, CollabError, NotFound, Unauthorized
from collab.merge.config import ResolvedAsset

CONFIG_METADATA_KEY = "collab.config"
"""safetensors metadata key holding the model's ``config.json`` text."""

GRANT_KINDS = ("owner", "full-access", "partnership")


@dataclass(frozen=True)
class AssetGrant:
    """Why the merger may use one asset, and where its weights are."""

    asset_id: int
    owner: str
    basis: str  # one of GRANT_KINDS
    license_id: int
    content_hash: bytes
    commitment_root: bytes
    key_commitment: bytes
    vault_uri: str

    def to_json(self) -> dict[str, Any]:
        """Plain data for CLI output."""
        return {"asset_id": self.asset_id, "owner": self.owner, "basis": self.basis, "license_id": self.license_id,
                "content_hash": "0x" + self.content_hash.hex(), "vault_uri": self.vault_uri}


def check_access(registry: Any, licensing: Any, merger: str, asset_ids: Iterable[int]) -> dict[int, AssetGrant]:
    """On-chain: every asset exists and is owned by or Full-access/Partnership-licensed to ``merger``.

    ``registry`` is an ``AssetRegistryClient``, ``licensing`` a
    ``LicensingClient``. Raises NotFound for an unregistered id and
    Unauthorized (exit 4) for the first asset the merger may not use.
    """
    from chain.clients.licensing import LicenseKind

    grants: dict[int, AssetGrant] = {}
    for asset_id in dict.fromkeys(asset_ids):
        if asset_id == 0 or not registry.exists(asset_id):
            raise NotFound(f"asset {asset_id} is not registered", hint="see `collab asset list`")
        asset = registry.asset(asset_id)
        basis, license_id = "", 0
        if asset.owner.lower() == merger.lower():
            basis = "owner"
        else:
            for kind, label in ((LicenseKind.FULL_ACCESS, "full-access"), (LicenseKind.PARTNERSHIP, "partnership")):
                if licensing.is_licensed(asset_id, merger, kind):
                    basis, license_id = label, licensing.license_of(asset_id, merger, kind)
                    break
        if not basis:
            raise Unauthorized(
                f"asset {asset_id} is owned by {asset.owner} and not licensed to {merger} for merging "
                "(needs ownership or a current Full-access or Partnership license)",
                hint=f"buy one with `collab license buy`; see `collab license show {asset_id}`",
            )
        grants[asset_id] = AssetGrant(asset_id, asset.owner, basis, license_id, asset.content_hash,
                                      asset.commitment_root, asset.key_commitment, asset.vault_uri)
    return grants


class VaultResolver:
    """Maps a granted asset id to a local model directory decrypted from the merger's vault.

    Callable as the :data:`~collab.merge.config.AssetResolver` of
    :meth:`MergeSpec.resolve_assets`. Directories are written under
    ``work_dir`` (a temporary directory the caller removes).
    """

    def __init__(self, grants: dict[int, AssetGrant], vault: Any, x25519_private: Any, licensing: Any,
                 work_dir: Path, *, config_from: Path | None = None) -> None:
        self.grants = grants
        self.vault = vault
        self.private = x25519_private
        self.licensing = licensing
        self.work_dir = Path(work_dir)
        self.config_from = config_from
        self.resolved: dict[int, ResolvedAsset] = {}

    def __call__(self, asset_id: int) -> ResolvedAsset:
        if asset_id in self.resolved:
            return self.resolved[asset_id]
        grant = self.grants.get(asset_id)
        if grant is None:
            raise Unauthorized(f"asset {asset_id} was not checked on-chain before merging")
        entry_id = grant.content_hash.hex()
        if not self.vault.exists(entry_id):
            raise NotFound(f"asset {asset_id}: its blob {grant.vault_uri or entry_id} is not in this home's vault",
                           hint="import the blob served by the owner into <home>/vault first")
        out = self.work_dir / f"asset-{asset_id}"
        out.mkdir(parents=True, exist_ok=True)
        key = self._data_key(grant, entry_id)
        weights = self.vault.get_to_path(entry_id, key, out / "model.safetensors")
        self._write_config(asset_id, weights, out)
        # blob and key name the plaintext (authenticated decryption); the key enters only as a hash
        key_id = hashlib.sha256(b"collab/merge/source-key" + bytes(key)).hexdigest()[:32]
        self.resolved[asset_id] = ResolvedAsset(out, f"vault:{entry_id}:{key_id}")
        return self.resolved[asset_id]

    def _data_key(self, grant: AssetGrant, entry_id: str) -> bytes:
        """The merger's own wrap in the vault entry, else (Full-access) the key delivered on-chain."""
        from collab.vault import unwrap_delivered_key

        try:
            return bytes(self.vault.data_key(entry_id, self.private))
        except Unauthorized:
            if grant.basis != "full-access":
                raise Unauthorized(f"asset {grant.asset_id}: the vault entry is not shared with this home's key",
                                   hint="ask the owner to add this home's X25519 key as a recipient") from None
        wrapped = bytes(self.licensing.wrapped_key(grant.license_id))
        if not wrapped:
            raise Unauthorized(f"asset {grant.asset_id}: Full-access license {grant.license_id} has no delivered key yet")
        return unwrap_delivered_key(wrapped, self.private, grant.key_commitment)

    def _write_config(self, asset_id: int, weights: Path, out: Path) -> None:
        text = read_config_metadata(weights)
        if text is None and self.config_from is not None and (self.config_from / "config.json").is_file():
            text = (self.config_from / "config.json").read_text(encoding="utf-8")
        if text is None:
            raise BadInput(f"asset {asset_id}: its weights carry no architecture config and no local input gives one",
                           hint="give base_model as a local model directory")
        (out / "config.json").write_text(text, encoding="utf-8")


def read_config_metadata(weights: Path) -> str | None:
    """The ``config.json`` text a collab-written safetensors file carries in its metadata, if any."""
    try:
        with Path(weights).open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
    except (OSError, ValueError, struct.error) as exc:
        raise BadInput(f"{weights} is not a safetensors file: {exc}") from None
    meta = header.get("__metadata__") or {}
    text = meta.get(CONFIG_METADATA_KEY)
    return text if isinstance(text, str) else None


def asset_ids_of(spec: Any) -> list[int]:
    """Every asset id a spec names (base first), without duplicates."""
    refs = ([spec.base] if spec.base is not None else []) + [m.ref for m in spec.models if m.ref is not None]
    return list(dict.fromkeys(r.asset_id for r in refs if r.asset_id is not None))


def local_config_source(spec: Any) -> Path | None:
    """A local input directory whose ``config.json`` describes the architecture (base first)."""
    refs = ([spec.base] if spec.base is not None else []) + [m.ref for m in spec.models if m.ref is not None]
    for ref in refs:
        if ref.path is not None and (ref.path / "config.json").is_file():
            return Path(ref.path)
    return None


__all__ = ["CONFIG_METADATA_KEY", "AssetGrant", "CollabError", "VaultResolver", "asset_ids_of", "check_access",
           "local_config_source", "read_config_metadata"]
