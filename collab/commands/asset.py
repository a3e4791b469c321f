"""``collab asset register|list|show``: AI assets in the on-chain AssetRegistry.

``register`` commits to the stored file by its sha256 (the ``contentHash``
every verifier recomputes), optionally to its fraud-proof tensor root
(``--commitment``) and to the vault key that encrypts it (``keyCommitment``,
what a Full-access licensee checks a delivered key against).

When the file is in this home's vault (put there now with ``--vault``, named
with ``--vault-uri``, or found by its plaintext hash), the stored file is the
encrypted blob: ``contentHash`` is the blob's sha256 (the vault id, checkable
by anyone who serves the blob without the key), ``keyCommitment`` commits to
its data key and ``vaultUri`` names it. Otherwise ``contentHash`` is the
file's own sha256 and the key commitment is zero (or ``--key-commitment``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
from eth_utils import is_address, to_checksum_address
from rich.table import Table

from collab.commands._common import chain_session, emit, kv_table, log, settings
from collab.config import Settings
from collab.errors import BadInput, NotFound, Unauthorized, UsageError

if TYPE_CHECKING:
    from chain.clients.asset_registry import Asset, AssetRegistryClient

KIND_LABELS = ("model", "dataset", "adapter", "agent")
_CHUNK = 1 << 20

group = click.Group("asset", help="Register, list and show assets.")


def _registry(ctx: click.Context, need_account: bool) -> AssetRegistryClient:
    from chain.clients.asset_registry import AssetRegistryClient

    return chain_session(ctx, need_account=need_account).client(AssetRegistryClient)


def file_sha256(path: Path) -> bytes:
    """sha256 of a file, streamed (model files can be large)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        raise NotFound(f"no such file: {path}") from None
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.digest()


def parse_bytes32(text: str | None, option: str) -> bytes:
    """A 0x-prefixed 32-byte hex value (zero when absent)."""
    if text is None:
        return bytes(32)
    body = text[2:] if text.lower().startswith("0x") else text
    try:
        value = bytes.fromhex(body)
    except ValueError:
        raise BadInput(f"{option} must be hex, got {text!r}") from None
    if len(value) != 32:
        raise BadInput(f"{option} must be 32 bytes (64 hex digits), got {len(value)}")
    return value


def parse_parents(text: str | None) -> tuple[int, ...]:
    """``"1,2,3"`` -> (1, 2, 3); the registry checks existence, duplicates and the count."""
    if not text:
        return ()
    parents = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) == 0:
            raise BadInput(f"--parents takes asset ids separated by commas, got {part!r}")
        parents.append(int(part))
    return tuple(parents)


@dataclass(frozen=True)
class StoredContent:
    """What the registry commits to for one file."""

    content_hash: bytes
    key_commitment: bytes
    vault_uri: str
    plaintext_sha256: bytes
    in_vault: bool


def stored_content(
    conf: Settings, path: Path, *, vault_uri: str, into_vault: bool, key_commitment: str | None
) -> StoredContent:
    """Hashes and vault pointers for ``path``, from this home's vault when the file is (or goes) there."""
    from collab.vault import URI_SCHEME, Vault

    file_hash = file_sha256(path)
    explicit_commitment = parse_bytes32(key_commitment, "--key-commitment") if key_commitment is not None else None
    entry = None
    if into_vault:
        if vault_uri:
            raise UsageError("--vault stores the file and picks its URI; do not combine it with --vault-uri")
        from collab.identity import Identity

        owner = Identity.read_public(conf.home).x25519_public
        entry = Vault(conf.vault_dir, owner=owner).put(path)
    elif vault_uri.startswith(URI_SCHEME):
        if not conf.vault_dir.is_dir():
            raise NotFound(f"{vault_uri} is not in this home's vault ({conf.vault_dir} does not exist)")
        entry = Vault(conf.vault_dir).entry(vault_uri)
        if file_hash not in (entry.plaintext_sha256, entry.content_hash):
            raise BadInput(f"{path} is neither the plaintext nor the blob of {vault_uri}")
    elif not vault_uri and conf.vault_dir.is_dir():
        entry = next((e for e in Vault(conf.vault_dir).list() if e.plaintext_sha256 == file_hash), None)
    if entry is None:
        return StoredContent(file_hash, explicit_commitment or bytes(32), vault_uri, file_hash, False)
    commitment = entry.key_commitment or bytes(32)
    if explicit_commitment is not None and explicit_commitment != commitment:
        raise BadInput(f"--key-commitment differs from the key commitment of {entry.uri}")
    return StoredContent(entry.content_hash, commitment, entry.uri, entry.plaintext_sha256 or file_hash, True)


@group.command("register")
@click.option("--kind", "kind_label", type=click.Choice(KIND_LABELS), required=True, help="Asset kind.")
@click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The file to register (its sha256, or its vault blob's, becomes the contentHash).")
@click.option("--vault", "into_vault", is_flag=True, default=False,
              help="Encrypt the file into this home's vault first and register the stored blob.")
@click.option("--vault-uri", default="", help="Where the encrypted blob lives (vault://<id>).")
@click.option("--key-commitment", "key_commitment", default=None, metavar="0x…",
              help="keccak256 of the 32-byte vault key (what Full-access deliveries are checked against).")
@click.option("--commitment", default=None, metavar="0x…", help="Fraud-proof VM tensor root of the weights.")
@click.option("--parents", default=None, metavar="ID,ID", help="Direct parent asset ids (at most 16).")
@click.option("--royalty-bps", type=click.IntRange(0, 10_000), default=0, show_default=True,
              help="Royalty this asset takes from future derived assets (basis points).")
@click.pass_context
def register(
    ctx: click.Context, kind_label: str, path: Path, into_vault: bool, vault_uri: str, key_commitment: str | None,
    commitment: str | None, parents: str | None, royalty_bps: int,
) -> None:
    """Register an asset created by this home's identity, which receives all its Shares."""
    from chain.clients.asset_registry import AssetInput, AssetKind

    commitment_root = parse_bytes32(commitment, "--commitment")
    parent_ids = parse_parents(parents)
    registry = _registry(ctx, need_account=True)
    if into_vault:
        _require_identity(ctx)  # before encrypting a copy that would otherwise be left unregistered
    stored = stored_content(settings(ctx), path, vault_uri=vault_uri, into_vault=into_vault, key_commitment=key_commitment)
    spec = AssetInput(
        kind=AssetKind.parse(kind_label),
        content_hash=stored.content_hash,
        commitment_root=commitment_root,
        key_commitment=stored.key_commitment,
        vault_uri=stored.vault_uri,
        parents=parent_ids,
        derivative_royalty_bps=royalty_bps,
    )
    where = f"vault blob {stored.vault_uri}" if stored.in_vault else "plain file"
    log(f"registering {path.name} ({kind_label}, {where}, contentHash {spec.content_hash.hex()[:16]}…) …")
    event = registry.register(spec)
    asset = registry.asset(event.asset_id)
    data = {**asset.to_json(), "plaintext_sha256": "0x" + stored.plaintext_sha256.hex(), "in_vault": stored.in_vault,
            "tx": event.tx.tx_hash if event.tx else None}
    emit(ctx, data, f"registered asset {event.asset_id} ({kind_label}) owned by {event.owner}; "
                    f"{registry.share_supply():,} Shares minted to it")


@group.command("list")
@click.option("--owner", default=None, metavar="ADDRESS|me", help="Only assets owned by this address (me: this home's).")
@click.pass_context
def list_assets(ctx: click.Context, owner: str | None) -> None:
    """List registered assets."""
    wanted = _owner(ctx, owner)
    registry = _registry(ctx, need_account=False)
    assets = registry.assets(owner=wanted)
    rows = [a.to_json() for a in assets]
    emit(ctx, {"count": len(rows), "assets": rows}, _table(assets) if assets else "no assets registered")


@group.command("show")
@click.argument("asset_id", type=click.IntRange(min=1), metavar="ID")
@click.pass_context
def show(ctx: click.Context, asset_id: int) -> None:
    """Show one asset: hashes, owner, creator, parents and royalty."""
    registry = _registry(ctx, need_account=False)
    if not registry.exists(asset_id):
        raise NotFound(f"no asset {asset_id}", hint="see `collab asset list`")
    data = registry.asset(asset_id).to_json()
    human = dict(data)
    human["parents"] = ", ".join(f"{p['id']} ({p['bps']} bps)" for p in data["parents"]) or "none"
    emit(ctx, data, kv_table(human, title=f"asset {asset_id}"))


def _require_identity(ctx: click.Context) -> None:
    """NoIdentity-style failure before any side effect, when this home has no active Sahara ID."""
    from chain.clients.identity_registry import IdentityRegistryClient

    session = chain_session(ctx, need_account=True)
    identities = session.client(IdentityRegistryClient)
    assert session.account is not None
    identity_id = identities.id_of(session.account.address)
    if identity_id == 0 or not identities.is_active(identity_id):
        raise Unauthorized(f"{session.account.address} has no active Sahara ID", hint="register with `collab id register`")


def _owner(ctx: click.Context, owner: str | None) -> str | None:
    if owner is None:
        return None
    if owner == "me":
        from collab.identity import Identity

        return Identity.read_public(settings(ctx).home).address
    if not is_address(owner):
        raise BadInput(f"--owner {owner!r} is not an address")
    return to_checksum_address(owner)


def _table(assets: list[Asset]) -> Table:
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in ("id", "kind", "owner", "creator", "content sha256", "parents", "royalty"):
        table.add_column(column)
    for a in assets:
        parents = ",".join(str(i) for i, _ in a.parents) or "-"
        table.add_row(str(a.id), a.kind.label, a.owner, str(a.creator_id), a.content_hash.hex()[:16] + "…",
                      parents, f"{a.derivative_royalty_bps} bps")
    return table
