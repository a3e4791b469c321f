"""Encrypted, content-addressed file storage for one home, with per-recipient key wraps.

Every entry is one file encrypted under a fresh random 32-byte data key
(AES-256-GCM) and stored under its content address: the sha256 of the
**stored ciphertext**. That is exactly the ``contentHash`` the AssetRegistry
records ("sha256 of the stored file"), so a blob fetched from any blob server
can be checked against the chain without a key, the id never reveals the
plaintext (no confirmation-of-file attack, which plaintext addressing allows),
and adding a recipient never changes the id.

The data key is wrapped separately for each recipient's X25519 key
(:func:`wrap_key`); wraps live in the entry's metadata, not in the blob. The
same wrap is what a Full-access key delivery posts on-chain, and the licensee
checks ``keccak256(key)`` against the asset's ``keyCommitment``
(:func:`unwrap_delivered_key`).

Blob format (version 1; all integers big-endian)::

    header  = "CVLT" | version u8 = 1 | chunk_size u32 | base_nonce 12 bytes   (21 bytes)
    body    = chunk_0 | chunk_1 | ... | chunk_{n-1}
    chunk_i = AES-GCM(key, nonce_i, plaintext_i, aad_i)       (ciphertext | 16-byte tag)
    nonce_i = base_nonce XOR i (as 12 bytes)
    aad_i   = header | i u64 | final u8 (1 for the last chunk, else 0)

Every chunk but the last holds exactly ``chunk_size`` plaintext bytes; the
last holds 0..chunk_size (an empty file is one tag-only final chunk). This is
the STREAM construction: files of any size stream through bounded memory,
reordering and truncation fail authentication (the final flag), and the
header (version, chunk size, nonce) is authenticated with every chunk. The
content id is not in the AAD because it is the hash of the ciphertext
itself; instead every read re-hashes the blob against its id.

Wrapped key format (version 1, 81 bytes)::

    0x01 | ephemeral X25519 public key (32) | AES-GCM(kek, nonce, data_key, aad=first 33 bytes) (48)
    kek | nonce = HKDF-SHA256(ECDH(eph, recipient), salt=none,
                              info="collab/vault/wrap/v1" | eph_pub | recipient_pub, 44 bytes)

On disk (``Settings.vault_dir``): ``blobs/<id>``, ``meta/<id>.json`` (written
last: an entry exists once its metadata does), ``tmp/`` for writes in
progress. Every write is temp + fsync + link/rename, so a killed writer
leaves the old state or the new one; its temp file is removed by the next
:class:`Vault` opened on the root (a writer holds a lock on its temp file, so
live writes are never touched).
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import functools
import hashlib
import io
import json
import os
import secrets
import struct
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_utils.crypto import keccak

from collab.config import ensure_private_dir
from collab.errors import BadInput, NotFound, ProtocolViolation, Unauthorized

KEY_SIZE = 32
TAG_SIZE = 16
NONCE_SIZE = 12
MAGIC = b"CVLT"
BLOB_VERSION = 1
HEADER = struct.Struct(">4sBI12s")
DEFAULT_CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 1 << 24  # bounds the memory a hostile header can demand
WRAP_VERSION = 1
WRAP_SIZE = 1 + 32 + KEY_SIZE + TAG_SIZE
WRAP_INFO = b"collab/vault/wrap/v1"
META_VERSION = 1
URI_SCHEME = "vault://"
FILE_MODE = 0o600
_IO_BLOCK = 1 << 20

PrivateKeyLike = X25519PrivateKey | bytes
_T = TypeVar("_T")
PublicKeyLike = X25519PublicKey | bytes


# --------------------------------------------------------------------- key commitment


def key_commitment(data_key: bytes) -> bytes:
    """``keccak256(abi.encodePacked(bytes32 vaultKey))``, the AssetRegistry's ``keyCommitment``."""
    return keccak(_check_key(data_key))


def check_key_commitment(data_key: bytes, commitment: bytes) -> None:
    """Raise ProtocolViolation unless ``data_key`` opens ``commitment`` (a delivered key is checked so)."""
    if key_commitment(data_key) != bytes(commitment):
        raise ProtocolViolation(
            f"the vault key does not match the key commitment 0x{bytes(commitment).hex()}",
            hint="dispute the key delivery",
        )


# --------------------------------------------------------------------- key wrapping


def wrap_key(data_key: bytes, recipient: PublicKeyLike) -> bytes:
    """Encrypt ``data_key`` for ``recipient``'s X25519 key (81 bytes; layout in the module doc)."""
    recipient_pub = _public_bytes(recipient)
    ephemeral = X25519PrivateKey.generate()
    eph_pub = ephemeral.public_key().public_bytes_raw()
    try:
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_pub))
    except ValueError:
        raise BadInput(f"recipient X25519 key 0x{recipient_pub.hex()} is invalid (low order point)") from None
    kek, nonce = _derive_kek(shared, eph_pub, recipient_pub)
    header = bytes([WRAP_VERSION]) + eph_pub
    return header + AESGCM(kek).encrypt(nonce, _check_key(data_key), header)


def unwrap_key(wrapped: bytes, private_key: PrivateKeyLike) -> bytes:
    """Recover a data key wrapped for ``private_key``'s public half.

    Any failure (wrong length or version, a modified wrap, or a wrap made for
    another key, which look alike) is a ProtocolViolation: wraps arrive from
    peers and the chain, where a bad one is a broken promise to dispute.
    """
    wrapped = bytes(wrapped)
    if len(wrapped) != WRAP_SIZE or wrapped[0] != WRAP_VERSION:
        raise ProtocolViolation(
            f"malformed wrapped key: expected {WRAP_SIZE} bytes starting with version {WRAP_VERSION}, "
            f"got {len(wrapped)} bytes" + (f" starting with {wrapped[0]}" if wrapped else "")
        )
    private = _private_key(private_key)
    eph_pub = wrapped[1:33]
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        kek, nonce = _derive_kek(shared, eph_pub, private.public_key().public_bytes_raw())
        return AESGCM(kek).decrypt(nonce, wrapped[33:], wrapped[:33])
    except (ValueError, InvalidTag):
        raise ProtocolViolation(
            "wrapped key failed authentication: it was modified or is not wrapped for this key"
        ) from None


def unwrap_delivered_key(wrapped: bytes, private_key: PrivateKeyLike, commitment: bytes) -> bytes:
    """What a Full-access licensee runs on the on-chain delivery: unwrap, then check the commitment."""
    data_key = unwrap_key(wrapped, private_key)
    check_key_commitment(data_key, commitment)
    return data_key


def _derive_kek(shared: bytes, eph_pub: bytes, recipient_pub: bytes) -> tuple[bytes, bytes]:
    okm = HKDF(SHA256(), KEY_SIZE + NONCE_SIZE, None, WRAP_INFO + eph_pub + recipient_pub).derive(shared)
    return okm[:KEY_SIZE], okm[KEY_SIZE:]


# --------------------------------------------------------------------- blob format


def _chunk_nonce(base: bytes, index: int) -> bytes:
    return (int.from_bytes(base, "big") ^ index).to_bytes(NONCE_SIZE, "big")


def _chunk_aad(header: bytes, index: int, final: bool) -> bytes:
    return header + struct.pack(">QB", index, int(final))


def _encrypt_stream(read: Callable[[int], bytes], write: Callable[[bytes], Any], data_key: bytes, chunk_size: int) -> None:
    """Encrypt everything ``read`` yields into ``write`` (header then chunks), one chunk in memory."""
    header = HEADER.pack(MAGIC, BLOB_VERSION, chunk_size, secrets.token_bytes(NONCE_SIZE))
    aead, base = AESGCM(data_key), header[-NONCE_SIZE:]
    write(header)
    chunk, index = _read_full(read, chunk_size), 0
    while True:
        following = _read_full(read, chunk_size) if len(chunk) == chunk_size else b""
        final = not following
        write(aead.encrypt(_chunk_nonce(base, index), chunk, _chunk_aad(header, index, final)))
        if final:
            return
        chunk, index = following, index + 1


def _read_full(read: Callable[[int], bytes], size: int) -> bytes:
    """``size`` bytes, fewer only at end of input (pipes and FIFOs return short reads)."""
    parts, missing = [], size
    while missing:
        part = read(missing)
        if not part:
            break
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)


@dataclass(frozen=True)
class _Layout:
    """Structure of a blob, derived from its header and total length alone."""

    header: bytes
    chunk_size: int
    chunks: int
    size: int

    @property
    def plaintext_size(self) -> int:
        return self.size - HEADER.size - self.chunks * TAG_SIZE

    @classmethod
    def parse(cls, header: bytes, size: int) -> _Layout:
        """Check the header and the length; ValueError says what is wrong."""
        if size < HEADER.size + TAG_SIZE or len(header) < HEADER.size:
            raise ValueError(f"{size} bytes is too short for a vault blob")
        magic, version, chunk_size, _ = HEADER.unpack(header[: HEADER.size])
        if magic != MAGIC:
            raise ValueError("not a collab vault blob (bad magic)")
        if version != BLOB_VERSION:
            raise ValueError(f"unsupported vault blob version {version}")
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size {chunk_size} out of range 1..{MAX_CHUNK_SIZE}")
        segment, body = chunk_size + TAG_SIZE, size - HEADER.size
        chunks = -(-body // segment)
        if body - (chunks - 1) * segment < TAG_SIZE:
            raise ValueError("the last chunk is shorter than an authentication tag")
        return cls(header[: HEADER.size], chunk_size, chunks, size)


def _decrypt_stream(
    stream: BinaryIO, size: int, data_key: bytes, write: Callable[[bytes], Any], on_bytes: Callable[[bytes], Any]
) -> None:
    """Decrypt a whole blob, passing every ciphertext byte to ``on_bytes`` (hashing) as read.

    Raises ValueError for structure, InvalidTag for authentication; plaintext
    of a chunk reaches ``write`` only after that chunk authenticated.
    """
    header = stream.read(HEADER.size)
    on_bytes(header)
    layout = _Layout.parse(header, size)
    aead, base = AESGCM(_check_key(data_key)), header[-NONCE_SIZE:]
    for index in range(layout.chunks):
        final = index == layout.chunks - 1
        expected = size - HEADER.size - index * (layout.chunk_size + TAG_SIZE) if final else layout.chunk_size + TAG_SIZE
        sealed = _read_full(stream.read, expected)
        if len(sealed) != expected:
            raise ValueError("the blob changed size while being read")
        on_bytes(sealed)
        write(aead.decrypt(_chunk_nonce(base, index), sealed, _chunk_aad(layout.header, index, final)))


def decrypt_blob(blob: bytes, data_key: bytes) -> bytes:
    """Decrypt a blob held in memory (e.g. fetched from a blob server); ProtocolViolation if it fails."""
    out = bytearray()
    try:
        _decrypt_stream(io.BytesIO(blob), len(blob), data_key, out.extend, lambda _: None)
    except ValueError as exc:
        raise BadInput(f"malformed vault blob: {exc}") from None
    except InvalidTag:
        raise ProtocolViolation("vault blob failed authentication: ciphertext was modified or the key is wrong") from None
    return bytes(out)


# --------------------------------------------------------------------- entries


@dataclass(frozen=True)
class VaultEntry:
    """One stored file: its content address and what is known about its key and plaintext.

    ``key_commitment`` and ``plaintext_sha256`` are ``None`` for a blob
    imported without its key (e.g. held only to serve it).
    """

    id: str
    size: int
    plaintext_size: int
    chunk_size: int
    key_commitment: bytes | None
    plaintext_sha256: bytes | None
    recipients: tuple[bytes, ...]
    created: float

    @property
    def uri(self) -> str:
        """``vault://<id>``, what the AssetRegistry records as ``vaultUri``."""
        return URI_SCHEME + self.id

    @property
    def content_hash(self) -> bytes:
        """The 32-byte sha256 of the stored blob, the AssetRegistry's ``contentHash``."""
        return bytes.fromhex(self.id)

    def to_json(self) -> dict[str, Any]:
        """JSON form for ``--json`` output (hex strings)."""
        return {
            "id": self.id,
            "uri": self.uri,
            "content_hash": "0x" + self.id,
            "size": self.size,
            "plaintext_size": self.plaintext_size,
            "chunk_size": self.chunk_size,
            "key_commitment": _hex_or_none(self.key_commitment),
            "plaintext_sha256": _hex_or_none(self.plaintext_sha256),
            "recipients": ["0x" + r.hex() for r in self.recipients],
            "created": self.created,
        }


def parse_id(ref: str) -> str:
    """Normalise ``vault://<id>``, ``0x<id>`` or ``<id>`` to 64 lowercase hex digits (BadInput otherwise)."""
    text = str(ref).strip()
    for prefix in (URI_SCHEME, "0x"):
        text = text.removeprefix(prefix)
    text = text.lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise BadInput(f"invalid vault id {ref!r}: expected 64 hex digits (sha256 of the stored blob)")
    return text


def _storage_errors(method: Callable[..., _T]) -> Callable[..., _T]:
    """Report an OS failure (disk full, permissions) as BadInput naming the vault, never a traceback."""

    @functools.wraps(method)
    def wrapper(self: Vault, *args: Any, **kwargs: Any) -> _T:
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            raise BadInput(f"vault {self.root}: {exc.strerror or exc} ({exc.filename or 'i/o'})") from None

    return wrapper


class Vault:
    """A home's encrypted store. ``owner`` (an X25519 public key) is a recipient of every put."""

    def __init__(self, root: Path | str, *, owner: PublicKeyLike | None = None) -> None:
        self.root = Path(root)
        self.owner = _public_bytes(owner) if owner is not None else None
        ensure_private_dir(self.root)  # first: mkdir -p would give the root the umask's mode
        for sub in ("blobs", "meta", "tmp"):
            ensure_private_dir(self.root / sub)
        self._clean_tmp()

    # ------------------------------------------------------------- writing

    @_storage_errors
    def put(
        self, data: bytes | bytearray | memoryview | Path, *, recipients: Sequence[PublicKeyLike] = (),
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> VaultEntry:
        """Encrypt ``data`` (bytes, or a file streamed from disk) under a fresh key and store it.

        The key is wrapped for every recipient and the owner; without any of
        them it would be lost, so that is refused.
        """
        publics = _unique(([self.owner] if self.owner else []) + [_public_bytes(r) for r in recipients])
        if not publics:
            raise BadInput("a vault entry needs at least one recipient (or a vault owner), or its key is lost")
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise BadInput(f"chunk size {chunk_size} out of range 1..{MAX_CHUNK_SIZE}")
        data_key = secrets.token_bytes(KEY_SIZE)
        plain_hash, plain_size = hashlib.sha256(), 0

        with _open_source(data) as source:

            def read(n: int) -> bytes:
                nonlocal plain_size
                block = source.read(n)
                plain_hash.update(block)
                plain_size += len(block)
                return block

            with self._temp() as (tmp, handle, cipher_hash):
                _encrypt_stream(read, lambda b: _write_hashed(handle, cipher_hash, b), data_key, chunk_size)
                size = _finish(handle)
                entry_id = cipher_hash.hexdigest()
                self._commit_blob(tmp, entry_id)
        return self._merge_meta(entry_id, {
            "size": size,
            "plaintext_size": plain_size,
            "chunk_size": chunk_size,
            "plaintext_sha256": plain_hash.digest(),
            "key_commitment": key_commitment(data_key),
            "recipients": {pub: wrap_key(data_key, pub) for pub in publics},
        })

    @_storage_errors
    def import_blob(
        self, blob: bytes | Path, *, expected_id: str | None = None, wrapped_keys: dict[bytes, bytes] | None = None
    ) -> VaultEntry:
        """Store a blob made elsewhere (from a blob server, an export); idempotent.

        ``expected_id`` (e.g. the asset's on-chain ``contentHash``) must match
        or ProtocolViolation is raised before anything is stored.
        ``wrapped_keys`` maps recipient X25519 public keys to their wraps.
        """
        want = parse_id(expected_id) if expected_id is not None else None
        wraps = {_public_bytes(k): bytes(v) for k, v in (wrapped_keys or {}).items()}
        for pub, wrap in wraps.items():
            if len(wrap) != WRAP_SIZE or wrap[0] != WRAP_VERSION:
                raise BadInput(f"wrapped key for 0x{pub.hex()} is malformed ({len(wrap)} bytes)")
        name = str(blob) if isinstance(blob, Path) else "blob"
        with _open_source(blob) as source, self._temp() as (tmp, handle, cipher_hash):
            while block := source.read(_IO_BLOCK):
                _write_hashed(handle, cipher_hash, block)
            size = _finish(handle)
            handle.seek(0)
            try:
                layout = _Layout.parse(handle.read(HEADER.size), size)
            except ValueError as exc:
                raise BadInput(f"cannot import {name}: {exc}") from None
            entry_id = cipher_hash.hexdigest()
            if want is not None and want != entry_id:
                raise ProtocolViolation(f"blob hashes to {entry_id}, not the expected {want}")
            self._commit_blob(tmp, entry_id)
        return self._merge_meta(entry_id, {
            "size": size, "plaintext_size": layout.plaintext_size, "chunk_size": layout.chunk_size,
            "plaintext_sha256": None, "key_commitment": None, "recipients": wraps,
        })

    @_storage_errors
    def add_recipient(self, entry_id: str, owner_private: PrivateKeyLike, recipient: PublicKeyLike) -> bytes:
        """Wrap an entry's key for one more recipient; returns the wrap (what a key delivery posts)."""
        entry_id = parse_id(entry_id)
        data_key = self.data_key(entry_id, owner_private)
        wrap = wrap_key(data_key, recipient)
        self._merge_meta(entry_id, {"recipients": {_public_bytes(recipient): wrap}})
        return wrap

    # ------------------------------------------------------------- reading

    def exists(self, entry_id: str) -> bool:
        """Whether an entry with this id is stored (its metadata, the commit point, exists)."""
        entry_id = parse_id(entry_id)
        return self._meta_path(entry_id).is_file() and self._blob_path(entry_id).is_file()

    def entry(self, entry_id: str) -> VaultEntry:
        """The entry's metadata (NotFound if absent, BadInput if its file is malformed)."""
        return _entry_from(self._read_meta(parse_id(entry_id)))

    @_storage_errors
    def list(self) -> builtins.list[VaultEntry]:  # builtins: the method shadows `list` here
        """Every entry, oldest first (temp files and half-written entries are not entries)."""
        entries = [self.entry(p.stem) for p in (self.root / "meta").glob("*.json") if _is_id(p.stem)]
        return sorted(entries, key=lambda e: (e.created, e.id))

    def data_key(self, entry_id: str, private_key: PrivateKeyLike) -> bytes:
        """Unwrap the entry's key for ``private_key``: Unauthorized if it is not a recipient."""
        entry_id = parse_id(entry_id)
        meta = self._read_meta(entry_id)
        pub = _private_key(private_key).public_key().public_bytes_raw()
        wrap = meta["recipients"].get(pub)
        if wrap is None:
            raise Unauthorized(f"vault entry {entry_id} is not shared with X25519 key 0x{pub.hex()}")
        try:
            data_key = unwrap_key(wrap, private_key)
        except ProtocolViolation:
            raise _auth_failure(entry_id) from None
        if meta["key_commitment"] is not None and key_commitment(data_key) != meta["key_commitment"]:
            raise _auth_failure(entry_id)
        return data_key

    def get(self, entry_id: str, private_key: PrivateKeyLike) -> bytes:
        """The plaintext, for a recipient (or the owner)."""
        entry_id = parse_id(entry_id)
        return self.get_with_key(entry_id, self.data_key(entry_id, private_key))

    @_storage_errors
    def get_with_key(self, entry_id: str, data_key: bytes) -> bytes:
        """The plaintext, given the data key itself (e.g. one delivered on-chain)."""
        out = bytearray()
        self._decrypt(parse_id(entry_id), data_key, out.extend)
        return bytes(out)

    @_storage_errors
    def get_to_path(self, entry_id: str, data_key: bytes, dest: Path | str) -> Path:
        """Stream the plaintext into ``dest`` (atomically: written in full only once authenticated)."""
        dest, entry_id = Path(dest), parse_id(entry_id)
        try:
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}-", suffix=".tmp")
        except OSError as exc:
            raise BadInput(f"cannot write {dest}: {exc.strerror or exc}") from None
        try:
            with os.fdopen(fd, "wb") as handle:
                self._decrypt(entry_id, data_key, handle.write)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return dest

    @_storage_errors
    def export(self, entry_id: str) -> bytes:
        """The stored ciphertext blob (what a blob server serves), checked against its id."""
        entry_id = parse_id(entry_id)
        self._read_meta(entry_id)
        blob = self._blob_path(entry_id).read_bytes()
        if hashlib.sha256(blob).hexdigest() != entry_id:
            raise _auth_failure(entry_id)
        return blob

    # ------------------------------------------------------------- internals

    def _blob_path(self, entry_id: str) -> Path:
        return self.root / "blobs" / entry_id

    def _meta_path(self, entry_id: str) -> Path:
        return self.root / "meta" / f"{entry_id}.json"

    def _decrypt(self, entry_id: str, data_key: bytes, write: Callable[[bytes], Any]) -> None:
        meta = self._read_meta(entry_id)
        path = self._blob_path(entry_id)
        digest, plain = hashlib.sha256(), hashlib.sha256()

        def sink(block: bytes) -> None:
            plain.update(block)
            write(block)

        try:
            with path.open("rb") as stream:
                _decrypt_stream(stream, os.fstat(stream.fileno()).st_size, data_key, sink, digest.update)
        except FileNotFoundError:
            raise NotFound(f"vault entry {entry_id} has metadata but no blob at {path}") from None
        except (ValueError, InvalidTag):
            raise _auth_failure(entry_id) from None
        if digest.hexdigest() != entry_id:
            raise _auth_failure(entry_id)
        if meta["plaintext_sha256"] is not None and plain.digest() != meta["plaintext_sha256"]:
            raise ProtocolViolation(f"vault entry {entry_id} decrypted to a plaintext its metadata does not name")

    @contextlib.contextmanager
    def _temp(self) -> Iterator[tuple[Path, BinaryIO, Any]]:
        """A locked blob temp file in ``tmp/``; removed on exit unless it was linked into place."""
        fd, tmp = _new_temp(self.root / "tmp", "w-")
        try:
            with os.fdopen(fd, "w+b") as handle:
                yield tmp, handle, hashlib.sha256()
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _commit_blob(self, tmp: Path, entry_id: str) -> None:
        """Link the fsynced temp into ``blobs/<id>``; an existing blob must be the same content."""
        target = self._blob_path(entry_id)
        try:
            os.link(tmp, target)
        except FileExistsError:
            if _sha256_file(target) != entry_id:
                raise BadInput(
                    f"{target} exists with different content (corrupted); refusing to overwrite it",
                    hint="inspect or remove that file",
                ) from None
            return
        _fsync_dir(target.parent)

    def _merge_meta(self, entry_id: str, update: dict[str, Any]) -> VaultEntry:
        """Create or update ``meta/<id>.json`` under the vault lock; recipients are merged."""
        with _flock(self.root / ".lock", fcntl.LOCK_EX):
            path = self._meta_path(entry_id)
            meta: dict[str, Any] = self._read_meta(entry_id) if path.exists() else {"created": time.time(), "recipients": {}}
            for field in ("size", "plaintext_size", "chunk_size"):
                if field in update:
                    meta[field] = update[field]
            for field in ("plaintext_sha256", "key_commitment"):
                if update.get(field) is not None:
                    meta[field] = update[field]
                meta.setdefault(field, None)
            meta["recipients"] = {**meta["recipients"], **update.get("recipients", {})}
            _atomic_write(path, _meta_json(entry_id, meta), self.root / "tmp")
        return _entry_from(meta | {"id": entry_id})

    def _read_meta(self, entry_id: str) -> dict[str, Any]:
        path = self._meta_path(entry_id)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFound(f"no vault entry {entry_id} in {self.root}") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise BadInput(f"malformed vault metadata {path}: {exc}") from None
        try:
            if not isinstance(raw, dict) or raw.get("version") != META_VERSION or raw.get("id") != entry_id:
                raise ValueError(f"expected a version {META_VERSION} object for entry {entry_id}")
            return {
                "id": entry_id,
                "size": _nonneg(raw["size"]),
                "plaintext_size": _nonneg(raw["plaintext_size"]),
                "chunk_size": _nonneg(raw["chunk_size"]),
                "created": float(raw["created"]),
                "plaintext_sha256": _opt_hex(raw["plaintext_sha256"], 32),
                "key_commitment": _opt_hex(raw["key_commitment"], 32),
                "recipients": {_hex(k, 32): _hex(v, WRAP_SIZE) for k, v in dict(raw["recipients"]).items()},
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            detail = f"missing field {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
            raise BadInput(f"malformed vault metadata {path}: {detail}") from None

    def _clean_tmp(self) -> None:
        """Remove temp files of writers that died (their lock is free); live writers keep theirs."""
        tmp_dir = self.root / "tmp"
        with _flock(tmp_dir / ".lock", fcntl.LOCK_EX):
            for path in tmp_dir.glob("*.tmp"):
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                else:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                finally:
                    os.close(fd)


# --------------------------------------------------------------------- helpers


def _auth_failure(entry_id: str) -> ProtocolViolation:
    return ProtocolViolation(f"vault entry {entry_id} failed authentication: ciphertext was modified or the key is wrong")


def _check_key(data_key: bytes) -> bytes:
    if not isinstance(data_key, (bytes, bytearray, memoryview)) or len(data_key) != KEY_SIZE:
        raise BadInput(f"a vault data key is {KEY_SIZE} bytes")
    return bytes(data_key)


def _public_bytes(key: PublicKeyLike) -> bytes:
    if isinstance(key, X25519PublicKey):
        return key.public_bytes_raw()
    if isinstance(key, (bytes, bytearray, memoryview)) and len(key) == 32:
        return bytes(key)
    raise BadInput("an X25519 public key is 32 raw bytes")


def _private_key(key: PrivateKeyLike) -> X25519PrivateKey:
    if isinstance(key, X25519PrivateKey):
        return key
    if isinstance(key, (bytes, bytearray, memoryview)) and len(key) == 32:
        return X25519PrivateKey.from_private_bytes(bytes(key))
    raise BadInput("an X25519 private key is 32 raw bytes")


def _unique(items: list[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


@contextlib.contextmanager
def _open_source(data: bytes | bytearray | memoryview | Path) -> Iterator[IO[bytes]]:

    if isinstance(data, (bytes, bytearray, memoryview)):
        yield io.BytesIO(bytes(data))
        return
    if not isinstance(data, Path):
        raise BadInput(f"vault data must be bytes or a Path, not {type(data).__name__}")
    try:
        handle = data.open("rb")
    except FileNotFoundError:
        raise NotFound(f"no such file: {data}") from None
    except OSError as exc:
        raise BadInput(f"cannot read {data}: {exc.strerror or exc}") from None
    with handle:
        yield handle


def _write_hashed(handle: BinaryIO, digest: Any, block: bytes) -> None:
    handle.write(block)
    digest.update(block)


def _finish(handle: BinaryIO) -> int:
    """Flush and fsync a temp file before it is linked into place; returns its size."""
    handle.flush()
    os.fsync(handle.fileno())
    return handle.tell()


def _new_temp(tmp_dir: Path, prefix: str) -> tuple[int, Path]:
    """Create a 0600 temp file and lock it for the writer's lifetime.

    The lock tells :meth:`Vault._clean_tmp` the writer is alive (the kernel
    drops it when the process dies); creating and locking happen under a
    shared lock on ``tmp/.lock`` so a cleaner never sees an unlocked new file.
    """
    with _flock(tmp_dir / ".lock", fcntl.LOCK_SH):
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix=prefix, suffix=".tmp")
        fcntl.flock(fd, fcntl.LOCK_EX)
    os.fchmod(fd, FILE_MODE)
    return fd, Path(name)


def _atomic_write(path: Path, text: str, tmp_dir: Path) -> None:
    """Replace ``path`` with ``text``: temp + fsync + rename + directory fsync."""
    fd, tmp = _new_temp(tmp_dir, "m-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_IO_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _meta_json(entry_id: str, meta: dict[str, Any]) -> str:
    body = {
        "version": META_VERSION,
        "id": entry_id,
        "size": meta["size"],
        "plaintext_size": meta["plaintext_size"],
        "chunk_size": meta["chunk_size"],
        "created": meta["created"],
        "plaintext_sha256": _hex_or_none(meta["plaintext_sha256"]),
        "key_commitment": _hex_or_none(meta["key_commitment"]),
        "recipients": {"0x" + k.hex(): "0x" + v.hex() for k, v in meta["recipients"].items()},
    }
    return json.dumps(body, indent=2) + "\n"


def _entry_from(meta: dict[str, Any]) -> VaultEntry:
    return VaultEntry(
        id=meta["id"],
        size=meta["size"],
        plaintext_size=meta["plaintext_size"],
        chunk_size=meta["chunk_size"],
        key_commitment=meta["key_commitment"],
        plaintext_sha256=meta["plaintext_sha256"],
        recipients=tuple(meta["recipients"]),
        created=meta["created"],
    )


def _is_id(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _hex(value: Any, length: int) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"expected a hex string, got {type(value).__name__}")
    raw = bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != length:
        raise ValueError(f"expected {length} bytes, got {len(raw)}")
    return raw


def _opt_hex(value: Any, length: int) -> bytes | None:
    return None if value is None else _hex(value, length)


def _nonneg(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value


def _hex_or_none(value: bytes | None) -> str | None:
    return None if value is None else "0x" + value.hex()
