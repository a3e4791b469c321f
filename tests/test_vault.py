"""Vault: round trips, recipients, tampering, key commitments, content addressing, concurrency, crashes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3

from chain.deployment import Deployment

from collab.config import Settings
from collab.errors import BadInput, NotFound, ProtocolViolation, Unauthorized
from collab.identity import Identity
from collab.vault import (
    HEADER,
    TAG_SIZE,
    WRAP_SIZE,
    Vault,
    check_key_commitment,
    decrypt_blob,
    key_commitment,
    parse_id,
    unwrap_delivered_key,
    unwrap_key,
    wrap_key,
)

REPO = Path(__file__).resolve().parents[1]
SMALL_CHUNK = 64  # many chunks from a few hundred bytes
AUTH_FAILED = "failed authentication: ciphertext was modified or the key is wrong"


def _pub(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


@pytest.fixture
def owner() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


@pytest.fixture
def vault(tmp_path: Path, owner: X25519PrivateKey) -> Vault:
    return Vault(tmp_path / "vault", owner=_pub(owner))


def _flip(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


# --------------------------------------------------------------------- round trips


@pytest.mark.parametrize("size", [0, 1, SMALL_CHUNK - 1, SMALL_CHUNK, SMALL_CHUNK + 1, 3 * SMALL_CHUNK, 1000])
def test_bytes_round_trip_at_every_chunk_boundary(vault: Vault, owner: X25519PrivateKey, size: int) -> None:
    data = os.urandom(size)
    entry = vault.put(data, chunk_size=SMALL_CHUNK)
    assert vault.get(entry.id, owner) == data
    assert entry.plaintext_size == size
    assert entry.plaintext_sha256 == hashlib.sha256(data).digest()
    chunks = max(1, -(-size // SMALL_CHUNK))
    assert entry.size == HEADER.size + size + chunks * TAG_SIZE


def test_multi_megabyte_file_streams_and_is_addressed_by_the_stored_blob(
    vault: Vault, owner: X25519PrivateKey, tmp_path: Path
) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(os.urandom(5 * 1024 * 1024 + 12345))
    entry = vault.put(source)
    # contentHash on-chain = sha256 of the stored file; the id is that hash.
    stored = vault.root / "blobs" / entry.id
    assert hashlib.sha256(stored.read_bytes()).digest() == entry.content_hash
    assert entry.uri == f"vault://{entry.id}" and parse_id(entry.uri) == entry.id
    assert entry.plaintext_sha256 == hashlib.sha256(source.read_bytes()).digest()
    out = vault.get_to_path(entry.id, vault.data_key(entry.id, owner), tmp_path / "restored.bin")
    assert out.read_bytes() == source.read_bytes()
    assert vault.get(entry.id, owner) == source.read_bytes()
    assert source.read_bytes()[:64] not in stored.read_bytes()  # not stored in the clear


def test_put_of_a_missing_file_is_not_found(vault: Vault, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such file"):
        vault.put(tmp_path / "absent.bin")


def test_files_and_directories_are_private(vault: Vault) -> None:
    entry = vault.put(b"secret")
    assert (vault.root.stat().st_mode & 0o777) == 0o700
    for path in (vault.root / "blobs" / entry.id, vault.root / "meta" / f"{entry.id}.json"):
        assert (path.stat().st_mode & 0o777) == 0o600


def test_vault_works_with_the_keys_an_identity_stores(tmp_path: Path) -> None:
    settings = Settings.resolve(home=tmp_path / "home", env={})
    alice = Identity.create(settings.home, "pw", scrypt_n=2**4)
    bob = Identity.create(tmp_path / "bob", "pw", scrypt_n=2**4)
    vault = Vault(settings.vault_dir, owner=alice.x25519_public)
    entry = vault.put(b"adapter weights", recipients=[bob.x25519_public])
    assert vault.get(entry.id, alice.x25519_private_key) == b"adapter weights"
    assert vault.get(entry.id, Identity.load(tmp_path / "bob", "pw").x25519_private_key) == b"adapter weights"
    assert settings.vault_dir.is_dir()


# --------------------------------------------------------------------- recipients


def test_every_recipient_decrypts_and_nobody_else(vault: Vault, owner: X25519PrivateKey) -> None:
    readers = [X25519PrivateKey.generate() for _ in range(3)]
    entry = vault.put(b"shared model", recipients=[r.public_key() for r in readers])
    assert set(entry.recipients) == {_pub(owner), *(_pub(r) for r in readers)}
    for reader in [owner, *readers]:
        assert vault.get(entry.id, reader) == b"shared model"
    stranger = X25519PrivateKey.generate()
    with pytest.raises(Unauthorized, match="not shared with X25519 key"):
        vault.get(entry.id, stranger)


def test_add_recipient_needs_the_owner_key_and_keeps_the_id(vault: Vault, owner: X25519PrivateKey) -> None:
    entry = vault.put(b"model", chunk_size=SMALL_CHUNK)
    licensee = X25519PrivateKey.generate()
    with pytest.raises(Unauthorized):
        vault.add_recipient(entry.id, licensee, _pub(licensee))
    wrap = vault.add_recipient(entry.id, owner, _pub(licensee))
    assert len(wrap) == WRAP_SIZE
    assert vault.get(entry.id, licensee) == b"model"
    assert vault.entry(entry.id).content_hash == entry.content_hash  # the on-chain contentHash is unchanged
    assert unwrap_delivered_key(wrap, licensee, entry.key_commitment or b"") == vault.data_key(entry.id, owner)


def test_put_without_any_recipient_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="at least one recipient"):
        Vault(tmp_path / "v").put(b"data")
    assert Vault(tmp_path / "v").list() == []


def test_bad_arguments_are_bad_input(vault: Vault) -> None:
    with pytest.raises(BadInput, match="X25519 public key"):
        vault.put(b"x", recipients=[b"short"])
    with pytest.raises(BadInput, match="low order"):
        vault.put(b"x", recipients=[bytes(32)])
    with pytest.raises(BadInput, match="chunk size"):
        vault.put(b"x", chunk_size=0)
    with pytest.raises(BadInput, match="32 bytes"):
        wrap_key(b"short key", X25519PrivateKey.generate().public_key())
    assert vault.list() == []


# --------------------------------------------------------------------- the documented format


def _seal(key: bytes, plaintext: bytes, chunk_size: int) -> bytes:
    """An independent implementation of the blob format in collab/vault.py's module docstring."""
    base = os.urandom(12)
    header = b"CVLT" + bytes([1]) + struct.pack(">I", chunk_size) + base
    pieces = [plaintext[i : i + chunk_size] for i in range(0, len(plaintext), chunk_size)] or [b""]
    out = [header]
    for i, piece in enumerate(pieces):
        nonce = (int.from_bytes(base, "big") ^ i).to_bytes(12, "big")
        aad = header + struct.pack(">QB", i, int(i == len(pieces) - 1))
        out.append(AESGCM(key).encrypt(nonce, piece, aad))
    return b"".join(out)


def test_blobs_follow_the_documented_format(vault: Vault) -> None:
    key, data = os.urandom(32), os.urandom(300)
    blob = _seal(key, data, SMALL_CHUNK)
    entry = vault.import_blob(blob)
    assert entry.id == hashlib.sha256(blob).hexdigest() and entry.plaintext_size == 300
    assert vault.get_with_key(entry.id, key) == data == decrypt_blob(blob, key)


def test_a_valid_blob_swapped_in_under_another_id_is_caught(vault: Vault) -> None:
    # Someone holding the key replaces the stored file with another authentic encryption:
    # AES-GCM accepts it, the content address does not.
    key = os.urandom(32)
    entry = vault.import_blob(_seal(key, b"the registered weights", SMALL_CHUNK))
    (vault.root / "blobs" / entry.id).write_bytes(_seal(key, b"backdoored weights!!!!", SMALL_CHUNK))
    with pytest.raises(ProtocolViolation, match=f"vault entry {entry.id} {AUTH_FAILED}"):
        vault.get_with_key(entry.id, key)


# --------------------------------------------------------------------- wrong keys and tampering


def test_wrong_data_key_fails_authentication(vault: Vault) -> None:
    entry = vault.put(b"weights")
    with pytest.raises(ProtocolViolation, match=AUTH_FAILED):
        vault.get_with_key(entry.id, os.urandom(32))


def _blob_regions(size: int) -> dict[str, int]:
    return {"version": 4, "chunk size": 7, "nonce": 12, "ciphertext": HEADER.size + 1, "tag": size - 1}


@pytest.mark.parametrize("region", ["version", "chunk size", "nonce", "ciphertext", "tag"])
def test_one_flipped_bit_in_the_stored_blob_is_caught(vault: Vault, owner: X25519PrivateKey, region: str) -> None:
    entry = vault.put(os.urandom(200), chunk_size=SMALL_CHUNK)
    path = vault.root / "blobs" / entry.id
    path.write_bytes(_flip(path.read_bytes(), _blob_regions(entry.size)[region]))
    with pytest.raises(ProtocolViolation, match=f"vault entry {entry.id} {AUTH_FAILED}"):
        vault.get(entry.id, owner)
    with pytest.raises(ProtocolViolation):
        vault.export(entry.id)  # a blob server never serves a modified blob


@pytest.mark.parametrize("region", ["nonce", "ciphertext", "tag"])
def test_aes_gcm_itself_rejects_a_modified_blob_under_its_new_address(
    vault: Vault, owner: X25519PrivateKey, region: str
) -> None:
    # Re-importing the modified blob gives it a consistent new id, so only AES-GCM can catch it.
    entry = vault.put(os.urandom(200), chunk_size=SMALL_CHUNK)
    key = vault.data_key(entry.id, owner)
    forged = _flip(vault.export(entry.id), _blob_regions(entry.size)[region], bit=5)
    moved = vault.import_blob(forged)
    assert moved.id != entry.id
    with pytest.raises(ProtocolViolation, match=AUTH_FAILED):
        vault.get_with_key(moved.id, key)
    with pytest.raises(ProtocolViolation):
        decrypt_blob(forged, key)


def test_reordered_truncated_or_extended_chunks_fail(vault: Vault, owner: X25519PrivateKey) -> None:
    entry = vault.put(os.urandom(3 * SMALL_CHUNK + 10), chunk_size=SMALL_CHUNK)
    key = vault.data_key(entry.id, owner)
    blob = vault.export(entry.id)
    seg = SMALL_CHUNK + TAG_SIZE
    header, body = blob[: HEADER.size], blob[HEADER.size :]
    chunks = [body[i : i + seg] for i in range(0, len(body), seg)]
    assert len(chunks) == 4
    forgeries = {
        "swapped": header + chunks[1] + chunks[0] + chunks[2] + chunks[3],
        "truncated at a chunk boundary": header + b"".join(chunks[:3]),
        "extended": header + b"".join(chunks[:3]) + chunks[2] + chunks[3],
    }
    for forged in forgeries.values():
        with pytest.raises(ProtocolViolation, match=AUTH_FAILED):
            vault.get_with_key(vault.import_blob(forged).id, key)


def test_tampered_wrapped_key_in_metadata_is_a_protocol_violation(vault: Vault, owner: X25519PrivateKey) -> None:
    entry = vault.put(b"weights")
    meta_path = vault.root / "meta" / f"{entry.id}.json"
    meta = json.loads(meta_path.read_text())
    recipient = "0x" + _pub(owner).hex()
    meta["recipients"][recipient] = "0x" + _flip(bytes.fromhex(meta["recipients"][recipient][2:]), 50).hex()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ProtocolViolation, match=f"vault entry {entry.id} {AUTH_FAILED}"):
        vault.get(entry.id, owner)


def test_a_wrap_for_another_key_swapped_into_metadata_is_caught_by_the_commitment(
    vault: Vault, owner: X25519PrivateKey
) -> None:
    entry = vault.put(b"weights")
    meta_path = vault.root / "meta" / f"{entry.id}.json"
    meta = json.loads(meta_path.read_text())
    meta["recipients"]["0x" + _pub(owner).hex()] = "0x" + wrap_key(os.urandom(32), owner.public_key()).hex()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ProtocolViolation, match=AUTH_FAILED):
        vault.data_key(entry.id, owner)  # refused before any decryption is attempted
    with pytest.raises(ProtocolViolation, match=AUTH_FAILED):
        vault.get(entry.id, owner)


@pytest.mark.parametrize("index", [1, 20, 33, 60, WRAP_SIZE - 1])  # ephemeral key, ciphertext, tag
def test_unwrap_rejects_every_modified_byte_region(index: int) -> None:
    recipient = X25519PrivateKey.generate()
    wrapped = wrap_key(b"k" * 32, recipient.public_key())
    assert unwrap_key(wrapped, recipient) == b"k" * 32
    with pytest.raises(ProtocolViolation, match="failed authentication"):
        unwrap_key(_flip(wrapped, index), recipient)


def test_unwrap_rejects_wrong_key_and_malformed_wraps() -> None:
    recipient = X25519PrivateKey.generate()
    wrapped = wrap_key(b"k" * 32, recipient.public_key())
    with pytest.raises(ProtocolViolation, match="not wrapped for this key"):
        unwrap_key(wrapped, X25519PrivateKey.generate())
    for bad in (b"", wrapped[:-1], wrapped + b"\0", _flip(wrapped, 0, bit=1)):
        with pytest.raises(ProtocolViolation, match="malformed wrapped key"):
            unwrap_key(bad, recipient)


def test_wraps_are_fresh_and_bound_to_the_recipient() -> None:
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    key = os.urandom(32)
    first, second = wrap_key(key, a.public_key()), wrap_key(key, a.public_key())
    assert first != second and first[0] == 1 and len(first) == WRAP_SIZE
    assert unwrap_key(first, a) == unwrap_key(second, a) == key
    with pytest.raises(ProtocolViolation):
        unwrap_key(first, b)


# --------------------------------------------------------------------- key commitment


def test_key_commitment_is_keccak_of_the_raw_32_bytes() -> None:
    key = bytes(range(32))
    assert key_commitment(key) == keccak(key) == Web3.solidity_keccak(["bytes32"], [key])
    with pytest.raises(BadInput):
        key_commitment(b"\x01" * 31)
    check_key_commitment(key, keccak(key))
    with pytest.raises(ProtocolViolation, match="does not match the key commitment"):
        check_key_commitment(key, keccak(b"\x00" * 32))


HARNESS = """
// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice Test-only: the AssetRegistry's key commitment, computed as Solidity does.
contract KeyCommitmentHarness {
    /// @notice keccak256(abi.encodePacked(vaultKey)).
    function commit(bytes32 vaultKey) external pure returns (bytes32) {
        return keccak256(abi.encodePacked(vaultKey));
    }
}
"""


def test_key_commitment_matches_solidity_on_a_real_chain(tmp_path: Path, w3: Web3, deployer: LocalAccount) -> None:
    from chain.client import ContractClient, deploy_contract
    from chain.compiler import compile_contracts

    sources = tmp_path / "contracts"
    sources.mkdir()
    (sources / "KeyCommitmentHarness.sol").write_text(HARNESS)
    artifact = compile_contracts(source_root=sources, build_dir=tmp_path / "build")["KeyCommitmentHarness"]
    address, _ = deploy_contract(w3, deployer, artifact)
    harness = ContractClient(w3, address, artifact.abi, deployer, name="KeyCommitmentHarness")
    for key in (bytes(32), b"\xff" * 32, os.urandom(32)):
        assert bytes(harness._call("commit", key)) == key_commitment(key)


def test_delivered_key_is_checked_against_the_commitment(vault: Vault, owner: X25519PrivateKey) -> None:
    entry = vault.put(b"full access model")
    licensee = X25519PrivateKey.generate()
    delivery = vault.add_recipient(entry.id, owner, licensee.public_key())
    assert entry.key_commitment is not None
    key = unwrap_delivered_key(delivery, licensee, entry.key_commitment)
    assert decrypt_blob(vault.export(entry.id), key) == b"full access model"
    # A cheating owner wraps some other key: the licensee's check fails (grounds for a dispute).
    cheat = wrap_key(os.urandom(32), licensee.public_key())
    with pytest.raises(ProtocolViolation, match="key commitment"):
        unwrap_delivered_key(cheat, licensee, entry.key_commitment)


# --------------------------------------------------------------------- content addressing


def test_import_of_an_exported_blob_is_idempotent_and_keeps_the_id(
    vault: Vault, owner: X25519PrivateKey, tmp_path: Path
) -> None:
    entry = vault.put(os.urandom(500), chunk_size=SMALL_CHUNK)
    blob = vault.export(entry.id)
    assert vault.import_blob(blob).id == entry.id
    again = vault.entry(entry.id)
    assert again.key_commitment == entry.key_commitment and set(again.recipients) == set(entry.recipients)
    assert len(vault.list()) == 1

    licensee = X25519PrivateKey.generate()
    wrap = vault.add_recipient(entry.id, owner, _pub(licensee))
    other = Vault(tmp_path / "licensee")
    (tmp_path / "blob").write_bytes(blob)
    imported = other.import_blob(tmp_path / "blob", expected_id=entry.uri, wrapped_keys={_pub(licensee): wrap})
    assert imported.id == entry.id and imported.plaintext_size == entry.plaintext_size
    assert imported.key_commitment is None  # unknown without the key
    assert other.get(entry.id, licensee) == vault.get(entry.id, owner)


def test_import_with_the_wrong_expected_id_stores_nothing(vault: Vault, tmp_path: Path) -> None:
    entry = vault.put(b"model")
    other = Vault(tmp_path / "other")
    with pytest.raises(ProtocolViolation, match="not the expected"):
        other.import_blob(vault.export(entry.id), expected_id="0x" + "00" * 32)
    assert other.list() == [] and list((other.root / "blobs").iterdir()) == []
    assert [p.name for p in (other.root / "tmp").iterdir()] == [".lock"]


def test_import_of_garbage_is_bad_input(vault: Vault) -> None:
    for junk in (b"", b"CVLT", b"not a vault blob at all" * 3):
        with pytest.raises(BadInput, match="cannot import"):
            vault.import_blob(junk)
    assert vault.list() == []


def test_import_with_a_malformed_wrap_stores_nothing(vault: Vault, tmp_path: Path) -> None:
    blob = vault.export(vault.put(b"model").id)
    other = Vault(tmp_path / "other")
    with pytest.raises(BadInput, match="wrapped key for 0x.* is malformed"):
        other.import_blob(blob, wrapped_keys={os.urandom(32): b"\x01" * 10})
    assert other.list() == [] and list((other.root / "blobs").iterdir()) == []


def test_same_plaintext_twice_gives_two_independent_entries(vault: Vault, owner: X25519PrivateKey) -> None:
    # Fresh key and nonce per put: the id never reveals that two files are equal.
    first, second = vault.put(b"same"), vault.put(b"same")
    assert first.id != second.id and first.key_commitment != second.key_commitment
    assert first.plaintext_sha256 == second.plaintext_sha256
    assert vault.get(first.id, owner) == vault.get(second.id, owner) == b"same"


def test_a_corrupted_blob_is_never_overwritten(vault: Vault) -> None:
    entry = vault.put(b"model")
    blob = vault.export(entry.id)
    path = vault.root / "blobs" / entry.id
    path.write_bytes(b"corrupted")
    with pytest.raises(BadInput, match=f"{path}.*refusing to overwrite"):
        vault.import_blob(blob)
    assert path.read_bytes() == b"corrupted"


def test_ids_and_lookups(vault: Vault) -> None:
    entry = vault.put(b"x")
    assert parse_id("0x" + entry.id.upper()) == entry.id
    assert vault.exists(entry.uri) and not vault.exists("ab" * 32)
    with pytest.raises(NotFound, match="no vault entry"):
        vault.get_with_key("ab" * 32, os.urandom(32))
    with pytest.raises(BadInput, match="invalid vault id"):
        vault.entry("../../etc/passwd")
    assert [e.id for e in vault.list()] == [entry.id]
    assert vault.entry(entry.id).to_json()["content_hash"] == "0x" + entry.id


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: "{not json",
        lambda m: json.dumps({**m, "version": 99}),
        lambda m: json.dumps({k: v for k, v in m.items() if k != "recipients"}),
        lambda m: json.dumps({**m, "recipients": {"0x00": "0x00"}}),
        lambda m: json.dumps({**m, "size": -1}),
    ],
)
def test_malformed_metadata_is_bad_input_naming_the_file(
    vault: Vault, owner: X25519PrivateKey, edit: Callable[[dict[str, object]], str]
) -> None:
    entry = vault.put(b"x")
    path = vault.root / "meta" / f"{entry.id}.json"
    path.write_text(edit(json.loads(path.read_text())))
    with pytest.raises(BadInput, match=f"malformed vault metadata {path}"):
        vault.get(entry.id, owner)
    with pytest.raises(BadInput):
        vault.list()



def test_storage_failures_are_bad_input_and_leave_no_temp_file(vault: Vault, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot read"):
        vault.put(tmp_path)  # a directory
    (vault.root / "blobs").rmdir()
    (vault.root / "blobs").write_text("not a directory")
    with pytest.raises(BadInput, match=f"vault {vault.root}: Not a directory"):
        vault.put(b"model")
    assert [p.name for p in (vault.root / "tmp").iterdir()] == [".lock"] and vault.list() == []

# --------------------------------------------------------------------- concurrency


def test_concurrent_puts_of_the_same_content(vault: Vault, owner: X25519PrivateKey) -> None:
    data = os.urandom(3000)
    with ThreadPoolExecutor(8) as pool:
        entries = list(pool.map(lambda _: vault.put(data, chunk_size=SMALL_CHUNK), range(8)))
    assert len({e.id for e in entries}) == 8
    assert all(vault.get(e.id, owner) == data for e in entries)
    assert len(vault.list()) == 8


def test_concurrent_imports_of_one_blob_merge_into_one_entry(vault: Vault, owner: X25519PrivateKey, tmp_path: Path) -> None:
    entry = vault.put(os.urandom(3000), chunk_size=SMALL_CHUNK)
    blob, key = vault.export(entry.id), vault.data_key(entry.id, owner)
    readers = [X25519PrivateKey.generate() for _ in range(8)]
    other = Vault(tmp_path / "other")
    barrier = threading.Barrier(len(readers))

    def import_for(reader: X25519PrivateKey) -> str:
        barrier.wait()
        return other.import_blob(blob, wrapped_keys={_pub(reader): wrap_key(key, reader.public_key())}).id

    with ThreadPoolExecutor(len(readers)) as pool:
        assert set(pool.map(import_for, readers)) == {entry.id}
    assert len(other.entry(entry.id).recipients) == len(readers)  # no wrap lost to a race
    assert all(other.get(entry.id, r) == vault.get(entry.id, owner) for r in readers)


def test_concurrent_add_recipient_from_several_processes(vault: Vault, owner: X25519PrivateKey) -> None:
    entry = vault.put(b"model")
    readers = [X25519PrivateKey.generate() for _ in range(3)]
    code = textwrap.dedent(
        """
        import sys
        from collab.vault import Vault
        root, owner, reader = sys.argv[1], bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
        vault = Vault(root)
        for _ in range(5):
            vault.add_recipient(sys.argv[4], owner, reader)
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(vault.root), owner.private_bytes_raw().hex(), _pub(r).hex(), entry.id],
            cwd=REPO,
        )
        for r in readers
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    assert set(vault.entry(entry.id).recipients) == {_pub(owner), *(_pub(r) for r in readers)}
    assert all(vault.get(entry.id, r) == b"model" for r in readers)


# --------------------------------------------------------------------- crash safety


def _start_killable_put(root: Path, owner: X25519PrivateKey, fifo: Path) -> subprocess.Popen[bytes]:
    """A writer that streams a FIFO into the vault, so it can be killed mid-write."""
    code = "import sys; from pathlib import Path; from collab.vault import Vault; " \
        "Vault(sys.argv[1], owner=bytes.fromhex(sys.argv[2])).put(Path(sys.argv[3]), chunk_size=1024)"
    return subprocess.Popen([sys.executable, "-c", code, str(root), _pub(owner).hex(), str(fifo)], cwd=REPO)


def _open_fifo_for_writing(fifo: Path, reader: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """Open the FIFO once the reader has (never blocking forever if the reader died first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            assert reader.poll() is None and time.monotonic() < deadline, "the writer never opened the FIFO"
            time.sleep(0.02)
            continue
        os.set_blocking(fd, True)
        return fd


def _wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_killed_writer_leaves_the_old_state_and_its_temp_file_is_cleaned(
    vault: Vault, owner: X25519PrivateKey, tmp_path: Path
) -> None:
    before = vault.put(b"already stored")
    fifo = tmp_path / "stream"
    os.mkfifo(fifo)
    writer = _start_killable_put(vault.root, owner, fifo)
    temps = lambda: [p for p in (vault.root / "tmp").glob("*.tmp") if p.stat().st_size > 0]  # noqa: E731
    try:
        feed = _open_fifo_for_writing(fifo, writer)
        with os.fdopen(feed, "wb") as stream:
            stream.write(os.urandom(64 * 1024))
            stream.flush()
            _wait_for(lambda: bool(temps()))
            # A vault opened while the writer lives must not touch its temp file.
            assert Vault(vault.root).list() == [vault.entry(before.id)]
            assert temps()
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    assert temps(), "the killed writer left its partial temp file behind"
    reopened = Vault(vault.root, owner=_pub(owner))
    assert [e.id for e in reopened.list()] == [before.id]
    assert not temps() and list((vault.root / "blobs").iterdir()) == [vault.root / "blobs" / before.id]
    assert reopened.get(before.id, owner) == b"already stored"
    assert reopened.get(reopened.put(b"next").id, owner) == b"next"


def test_stale_partial_files_are_ignored_and_cleaned(vault: Vault, owner: X25519PrivateKey) -> None:
    entry = vault.put(b"kept")
    (vault.root / "tmp" / "m-stale.tmp").write_text('{"version": 1, "id": "trunc')
    (vault.root / "tmp" / "w-stale.tmp").write_bytes(b"CVLT\x01partial")
    # A blob linked just before a crash, without its metadata (the commit point), is not an entry.
    orphan = Vault(vault.root.parent / "elsewhere", owner=_pub(owner)).put(b"orphan")
    orphan_blob = (vault.root.parent / "elsewhere" / "blobs" / orphan.id).read_bytes()
    (vault.root / "blobs" / orphan.id).write_bytes(orphan_blob)
    assert [e.id for e in vault.list()] == [entry.id] and not vault.exists(orphan.id)
    reopened = Vault(vault.root)
    assert [p.name for p in (vault.root / "tmp").iterdir()] == [".lock"]
    assert reopened.import_blob(orphan_blob).id == orphan.id  # the orphan is completed, not clobbered
    assert reopened.get(entry.id, owner) == b"kept"


# --------------------------------------------------------------------- the Full-access flow on the real contracts


def test_full_access_delivery_through_the_deployed_contracts(
    tmp_path: Path, w3: Web3, deployment: Deployment, chain_snapshot: str
) -> None:
    """Owner registers a vault entry as an asset, the licensee buys, the owner posts the wrap for the
    licensee's registered X25519 key, and the licensee decrypts the blob it fetched by contentHash."""
    from chain.clients.asset_registry import AssetInput, AssetKind, AssetRegistryClient
    from chain.clients.identity_registry import IdentityRegistryClient, Keys, Role
    from chain.clients.licensing import LicenseKind, LicensingClient, Terms

    people = {}
    for name in ("vault-owner", "vault-licensee"):
        ident = Identity.create(tmp_path / name, "pw", scrypt_n=2**4)
        w3.provider.make_request("anvil_setBalance", [ident.address, hex(10**22)])  # type: ignore[arg-type]
        registry = IdentityRegistryClient.from_deployment(deployment, w3, ident.account)
        registry.register(name, Role.HUMAN, Keys(*ident.registry_keys(int(w3.eth.chain_id), registry.address)))
        people[name] = ident
    alice, bob = people["vault-owner"], people["vault-licensee"]

    model = os.urandom(4096)
    owner_vault = Vault(tmp_path / "vault-owner" / "vault", owner=alice.x25519_public)
    entry = owner_vault.put(model, chunk_size=1024)
    assert entry.key_commitment is not None
    asset_id = AssetRegistryClient.from_deployment(deployment, w3, alice.account).register(
        AssetInput(AssetKind.MODEL, entry.content_hash, key_commitment=entry.key_commitment, vault_uri=entry.uri)
    ).asset_id

    price = 10**16
    seller, buyer = (LicensingClient.from_deployment(deployment, w3, p.account) for p in (alice, bob))
    offer_id = seller.offer(asset_id, LicenseKind.FULL_ACCESS, Terms(price=price)).offer_id
    license_id = buyer.buy(offer_id, price).license_id
    recipient = seller.license(license_id).recipient_key
    assert recipient == bob.x25519_public  # the key registered for the licensee's Sahara ID
    seller.deliver_key(license_id, owner_vault.add_recipient(entry.id, alice.x25519_private_key, recipient))

    # The licensee's side: only chain data and the blob server's bytes.
    asset = AssetRegistryClient.from_deployment(deployment, w3, bob.account).asset(asset_id)
    data_key = unwrap_delivered_key(buyer.wrapped_key(license_id), bob.x25519_private_key, asset.key_commitment)
    licensee_vault = Vault(tmp_path / "vault-licensee" / "vault", owner=bob.x25519_public)
    fetched = licensee_vault.import_blob(owner_vault.export(parse_id(asset.vault_uri)), expected_id=asset.content_hash.hex())
    assert licensee_vault.get_with_key(fetched.id, data_key) == model
    # A blob server that serves other bytes is caught against the on-chain contentHash.
    with pytest.raises(ProtocolViolation, match="not the expected"):
        licensee_vault.import_blob(owner_vault.export(owner_vault.put(model).id), expected_id=asset.content_hash.hex())

