"""BLS12-381 signatures as collab uses them: py-ecc ``G2Basic`` in EIP-2537 encoding.

Consent signatures are checked on-chain with Solady's ``BLS.sol`` over the
EIP-2537 precompiles, so every key and signature here travels in the
precompiles' uncompressed encoding: a G1 point (public key) is 128 bytes,
``x`` then ``y``, each a 64-byte big-endian word (16 zero bytes + the 48-byte
field element); a G2 point (signature) is 256 bytes, ``x.c0, x.c1, y.c0, y.c1``.
Signing and verifying are py-ecc's ``G2Basic`` (hash-to-curve DST
``BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_NUL_``, the one ``BLS.hashToG2`` uses).

The basic scheme needs a proof of possession per key, or same-message
aggregates are open to rogue-key attacks: :func:`prove_possession` signs
``abi.encodePacked("collab-bls-pop", chainid, registry, account, pubkey)``,
which ``IdentityRegistry`` checks at registration.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import Any

from eth_utils import is_address, to_canonical_address
from py_ecc.bls import G2Basic
from py_ecc.bls.g2_primitives import G1_to_pubkey, G2_to_signature, pubkey_to_G1, signature_to_G2
from py_ecc.fields import optimized_bls12_381_FQ as FQ
from py_ecc.fields import optimized_bls12_381_FQ2 as FQ2
from py_ecc.optimized_bls12_381 import Z1, Z2, add, b, b2, curve_order, field_modulus, is_inf, is_on_curve, multiply, normalize

from collab.errors import BadInput

PUBKEY_LEN = 128
SIGNATURE_LEN = 256
SECRET_KEY_LEN = 32
POP_DOMAIN = b"collab-bls-pop"
DST = G2Basic.DST

_WORD = 64
_PAD = bytes(16)

G1Point = tuple[Any, Any, Any]
G2Point = tuple[Any, Any, Any]


# --------------------------------------------------------------------- keys


def keygen(seed: bytes | None = None) -> int:
    """A secret key: from 32 random bytes, or deterministically from ``seed``.

    A seed shorter than the 32 bytes KeyGen needs is stretched with sha256;
    such keys are only as strong as the seed (tests, reproducible demos).
    """
    if seed is None:
        ikm = secrets.token_bytes(32)
    else:
        ikm = seed if len(seed) >= 32 else hashlib.sha256(b"collab-bls-seed" + seed).digest()
    return int(G2Basic.KeyGen(ikm))


def secret_to_bytes(sk: int) -> bytes:
    """32-byte big-endian form of a secret key (what keystores hold)."""
    _check_secret(sk)
    return sk.to_bytes(SECRET_KEY_LEN, "big")


def secret_from_bytes(data: bytes) -> int:
    """Inverse of :func:`secret_to_bytes`; BadInput for an out-of-range scalar."""
    if len(data) != SECRET_KEY_LEN:
        raise BadInput(f"a BLS secret key is {SECRET_KEY_LEN} bytes, got {len(data)}")
    sk = int.from_bytes(data, "big")
    _check_secret(sk)
    return sk


def sk_to_pk(sk: int) -> bytes:
    """The public key of ``sk`` (G1, EIP-2537, 128 bytes)."""
    _check_secret(sk)
    return encode_g1(pubkey_to_G1(G2Basic.SkToPk(sk)))


# --------------------------------------------------------------------- signatures


def sign(sk: int, message: bytes) -> bytes:
    """``G2Basic.Sign`` over ``message``, as a 256-byte EIP-2537 G2 point."""
    _check_secret(sk)
    return encode_g2(signature_to_G2(G2Basic.Sign(sk, message)))


def verify(pubkey: bytes, message: bytes, signature: bytes) -> bool:
    """``G2Basic.Verify``; False for a wrong signature and for malformed inputs alike.

    A malformed key or signature is as untrustworthy as a wrong one, so
    callers that only need a yes/no never have to catch anything.
    """
    try:
        # G2Basic.Verify runs the subgroup checks itself; doing them here too would double the cost.
        pk = G1_to_pubkey(decode_g1(pubkey, subgroup_check=False))
        sig = G2_to_signature(decode_g2(signature, subgroup_check=False))
    except BadInput:
        return False
    return bool(G2Basic.Verify(pk, message, sig))


def aggregate_signatures(signatures: Sequence[bytes]) -> bytes:
    """Sum of G2 signatures (for many signers over one message)."""
    if not signatures:
        raise BadInput("cannot aggregate zero signatures")
    total: G2Point = Z2
    for sig in signatures:
        total = add(total, decode_g2(sig))
    return encode_g2(total)


def aggregate_pubkeys(pubkeys: Sequence[bytes]) -> bytes:
    """Sum of G1 public keys; sound only for keys whose possession was proven."""
    if not pubkeys:
        raise BadInput("cannot aggregate zero public keys")
    total: G1Point = Z1
    for pk in pubkeys:
        total = add(total, decode_g1(pk))
    if is_inf(total):
        raise BadInput("the aggregate public key is the point at infinity")
    return encode_g1(total)


def verify_aggregate(pubkeys: Sequence[bytes], message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` aggregates every key's signature over the same ``message``."""
    try:
        aggregate = aggregate_pubkeys(pubkeys)
    except BadInput:
        return False
    return verify(aggregate, message, signature)


# --------------------------------------------------------------------- proof of possession


def pop_message(chain_id: int, registry: str | bytes, account: str | bytes, pubkey: bytes) -> bytes:
    """``abi.encodePacked("collab-bls-pop", uint256 chainid, address registry, address account, bytes pubkey)``."""
    if len(pubkey) != PUBKEY_LEN:
        raise BadInput(f"a BLS public key is {PUBKEY_LEN} bytes (EIP-2537 G1), got {len(pubkey)}")
    if not 0 <= chain_id < 2**256:
        raise BadInput(f"chain id out of range: {chain_id}")
    return POP_DOMAIN + chain_id.to_bytes(32, "big") + _address(registry) + _address(account) + bytes(pubkey)


def prove_possession(sk: int, chain_id: int, registry: str | bytes, account: str | bytes) -> bytes:
    """The proof of possession ``IdentityRegistry`` checks for ``account``'s key on that chain and registry."""
    return sign(sk, pop_message(chain_id, registry, account, sk_to_pk(sk)))


def verify_possession(pubkey: bytes, pop: bytes, chain_id: int, registry: str | bytes, account: str | bytes) -> bool:
    """Python twin of the registry's on-chain proof-of-possession check."""
    try:
        message = pop_message(chain_id, registry, account, pubkey)
    except BadInput:
        return False
    return verify(pubkey, message, pop)


# --------------------------------------------------------------------- EIP-2537 encodings


def encode_g1(point: G1Point) -> bytes:
    """A G1 point as 128 bytes (infinity is all zeros, as in EIP-2537)."""
    if is_inf(point):
        return bytes(PUBKEY_LEN)
    x, y = normalize(point)
    return _fp(int(x)) + _fp(int(y))


def decode_g1(data: bytes, *, subgroup_check: bool = True) -> G1Point:
    """128 bytes -> a G1 point in the prime-order subgroup; BadInput otherwise."""
    if len(data) != PUBKEY_LEN:
        raise BadInput(f"a G1 point is {PUBKEY_LEN} bytes, got {len(data)}")
    if data == bytes(PUBKEY_LEN):
        return Z1
    point = (FQ(_unfp(data[0:64])), FQ(_unfp(data[64:128])), FQ.one())
    if not is_on_curve(point, b):
        raise BadInput("G1 point is not on the curve")
    if subgroup_check and not is_inf(multiply(point, curve_order)):
        raise BadInput("G1 point is not in the prime-order subgroup")
    return point


def encode_g2(point: G2Point) -> bytes:
    """A G2 point as 256 bytes: x.c0, x.c1, y.c0, y.c1 (infinity is all zeros)."""
    if is_inf(point):
        return bytes(SIGNATURE_LEN)
    x, y = normalize(point)
    return b"".join(_fp(int(c)) for c in (*x.coeffs, *y.coeffs))


def decode_g2(data: bytes, *, subgroup_check: bool = True) -> G2Point:
    """256 bytes -> a G2 point in the prime-order subgroup; BadInput otherwise."""
    if len(data) != SIGNATURE_LEN:
        raise BadInput(f"a G2 point is {SIGNATURE_LEN} bytes, got {len(data)}")
    if data == bytes(SIGNATURE_LEN):
        return Z2
    c = [_unfp(data[i : i + _WORD]) for i in range(0, SIGNATURE_LEN, _WORD)]
    point = (FQ2([c[0], c[1]]), FQ2([c[2], c[3]]), FQ2.one())
    if not is_on_curve(point, b2):
        raise BadInput("G2 point is not on the curve")
    if subgroup_check and not is_inf(multiply(point, curve_order)):
        raise BadInput("G2 point is not in the prime-order subgroup")
    return point


def _fp(value: int) -> bytes:
    return _PAD + value.to_bytes(48, "big")


def _unfp(word: bytes) -> int:
    if word[:16] != _PAD:
        raise BadInput("EIP-2537 field element: the top 16 bytes must be zero")
    value = int.from_bytes(word[16:], "big")
    if value >= field_modulus:
        raise BadInput("EIP-2537 field element is not below the field modulus")
    return value


def _check_secret(sk: int) -> None:
    if not isinstance(sk, int) or not 0 < sk < curve_order:
        raise BadInput("a BLS secret key is an integer in [1, r)")


def _address(value: str | bytes) -> bytes:
    if isinstance(value, bytes) and len(value) == 20:
        return value
    if isinstance(value, str) and is_address(value):
        return to_canonical_address(value)
    raise BadInput(f"not an address: {value!r}")
