"""Key agreement, key derivation, share encryption, signatures and seed commitments.

* X25519 for both per-round key pairs: ``c`` (the channel that encrypts
  shares) and ``s`` (the pairwise mask agreement), as in Bonawitz et al.
* HKDF-SHA256 turns an X25519 secret into a 32-byte key, salted with the
  round id and labelled with the purpose and the (ordered) pair of ids, so the
  mask seed and the channel key of a pair are independent and never reused
  across rounds.
* ChaCha20-Poly1305 seals each share; the associated data binds the config
  digest, sender and recipient, so a server re-routing or replaying a share
  fails authentication.
* Signatures are EIP-191 personal signatures over a 32-byte keccak digest
  with the participant's identity account (secp256k1): checkable by
  ``ecrecover`` on chain, and never made with the vault (X25519) key.
* Seed commitments are plain ``keccak(seed)``: one keccak on chain.
"""

from __future__ import annotations

import os
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak

from collab.errors import ProtocolViolation

KEY_LEN = 32
SIGNATURE_LEN = 65
NONCE_LEN = 12
_MASK_LABEL = b"collab-secagg/v1/mask"
_CHANNEL_LABEL = b"collab-secagg/v1/channel"


def keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair (secret, public), raw 32-byte encodings."""
    sk = X25519PrivateKey.generate()
    return sk.private_bytes_raw(), sk.public_key().public_bytes_raw()


def public_key(secret: bytes) -> bytes:
    """The X25519 public key of a raw secret (to check a reconstructed mask key)."""
    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()


def _agree(secret: bytes, peer_public: bytes) -> bytes:
    try:
        return X25519PrivateKey.from_private_bytes(secret).exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # all-zero output: a low-order public key
        raise ProtocolViolation(f"unusable X25519 public key 0x{peer_public.hex()}: {exc}") from None


def _derive(shared: bytes, round_id: bytes, label: bytes, u: int, v: int) -> bytes:
    lo, hi = min(u, v), max(u, v)
    info = label + lo.to_bytes(4, "big") + hi.to_bytes(4, "big")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=round_id, info=info).derive(shared)


def mask_seed(secret: bytes, peer_public: bytes, round_id: bytes, u: int, v: int) -> bytes:
    """s_uv = KDF(X25519(s_u^SK, s_v^PK)): the pairwise mask seed, the same from both ends."""
    return _derive(_agree(secret, peer_public), round_id, _MASK_LABEL, u, v)


def channel_key(secret: bytes, peer_public: bytes, round_id: bytes, u: int, v: int) -> bytes:
    """The AEAD key of the pair (u, v), from their channel key pairs."""
    return _derive(_agree(secret, peer_public), round_id, _CHANNEL_LABEL, u, v)


def seal(key: bytes, aad: bytes, plaintext: bytes) -> bytes:
    """nonce ‖ ChaCha20-Poly1305(key, nonce, plaintext, aad) with a random nonce."""
    nonce = os.urandom(NONCE_LEN)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, aad: bytes, blob: bytes, what: str) -> bytes:
    """Inverse of :func:`seal`; ProtocolViolation when authentication fails."""
    if len(blob) < NONCE_LEN + 16:
        raise ProtocolViolation(f"{what} is too short to be a sealed share")
    try:
        return ChaCha20Poly1305(key).decrypt(blob[:NONCE_LEN], blob[NONCE_LEN:], aad)
    except InvalidTag:
        raise ProtocolViolation(f"{what} failed authentication (tampered, re-routed or from another round)") from None


def commit(seed: bytes) -> bytes:
    """The seed commitment: keccak(seed)."""
    return keccak(seed)


def sign(account: LocalAccount, digest: bytes) -> bytes:
    """EIP-191 signature of a 32-byte digest by the identity account (65 bytes r ‖ s ‖ v)."""
    return bytes(account.sign_message(encode_defunct(primitive=digest)).signature)


@lru_cache(maxsize=8192)
def _recover(digest: bytes, signature: bytes) -> str | None:
    """Signer of a digest, or None when the signature is malformed (pure, hence cached)."""
    try:
        return str(Account.recover_message(encode_defunct(primitive=digest), signature=signature))
    except Exception:  # eth-keys raises several types for malformed signatures
        return None


def check_signature(digest: bytes, signature: bytes, address: str, what: str) -> None:
    """Raise ProtocolViolation unless ``signature`` over ``digest`` is by ``address``."""
    if len(signature) != SIGNATURE_LEN or _recover(digest, bytes(signature)) != address:
        raise ProtocolViolation(f"bad signature on {what}: not signed by {address}")
