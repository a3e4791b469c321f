"""Shamir t-of-n secret sharing of 32-byte secrets (SecAgg's dropout recovery).

Secrets are the self-mask seed ``b_u`` and the X25519 mask secret key
``s_u^SK``, both 32 bytes, so the field is GF(p) with ``p = 2^256 + 297``, the
smallest prime above 2^256: every 32-byte string is a field element and a
share is 33 bytes. Evaluation points are the participants' ids (1..2^32-1).

Reconstruction uses every share it is given and checks that they all lie on
one polynomial of degree ``t - 1``: a holder that reveals a wrong share is
caught instead of silently corrupting the secret (the seed commitments and
the advertised public keys catch the rest).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

from collab.errors import BadInput, ProtocolViolation

PRIME = (1 << 256) + 297
SECRET_LEN = 32
SHARE_LEN = 33
MAX_ID = (1 << 32) - 1


def split(secret: bytes, threshold: int, holders: Sequence[int]) -> dict[int, bytes]:
    """Share ``secret`` among ``holders`` (ids) so that any ``threshold`` of them recover it.

    Parameters
    ----------
    secret : bytes
        The 32-byte secret.
    threshold : int
        Shares needed to reconstruct (the polynomial has degree ``threshold - 1``).
    holders : Sequence[int]
        Distinct evaluation points in ``[1, 2^32)``.

    Returns
    -------
    dict[int, bytes]
        Holder id to its 33-byte share.
    """
    if len(secret) != SECRET_LEN:
        raise BadInput(f"a shared secret must be {SECRET_LEN} bytes, got {len(secret)}")
    _check_points(holders)
    if not 1 <= threshold <= len(holders):
        raise BadInput(f"threshold {threshold} must be between 1 and the {len(holders)} holders")
    coeffs = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return {x: _evaluate(coeffs, x).to_bytes(SHARE_LEN, "big") for x in holders}


def combine(shares: Mapping[int, bytes], threshold: int) -> bytes:
    """Recover the secret from at least ``threshold`` shares, checking that all are consistent.

    Raises
    ------
    ProtocolViolation
        Fewer than ``threshold`` shares, a malformed share, or shares that do
        not lie on one polynomial of degree ``threshold - 1`` (someone lied).
    """
    if len(shares) < threshold:
        raise ProtocolViolation(f"{len(shares)} shares cannot recover a {threshold}-of-n secret")
    points: list[tuple[int, int]] = []
    for x, raw in sorted(shares.items()):
        if len(raw) != SHARE_LEN or not 1 <= x <= MAX_ID:
            raise ProtocolViolation(f"malformed share from holder {x}")
        y = int.from_bytes(raw, "big")
        if y >= PRIME:
            raise ProtocolViolation(f"share from holder {x} is not a field element")
        points.append((x, y))
    base = points[:threshold]
    for x, y in points[threshold:]:
        if _interpolate(base, x) != y:
            raise ProtocolViolation(
                f"inconsistent shares: holder {x}'s share is not on the polynomial of holders {[p[0] for p in base]}"
            )
    secret = _interpolate(base, 0)
    if secret >= 1 << (8 * SECRET_LEN):
        raise ProtocolViolation("the shares reconstruct a value that is not a 32-byte secret")
    return secret.to_bytes(SECRET_LEN, "big")


def _check_points(holders: Sequence[int]) -> None:
    if len(set(holders)) != len(holders):
        raise BadInput("share holders must be distinct")
    for x in holders:
        if not isinstance(x, int) or not 1 <= x <= MAX_ID:
            raise BadInput(f"share holder ids must be integers in [1, {MAX_ID}], got {x!r}")


def _evaluate(coeffs: Sequence[int], x: int) -> int:
    """Horner's rule mod p."""
    acc = 0
    for c in reversed(coeffs):
        acc = (acc * x + c) % PRIME
    return acc


def _interpolate(points: Sequence[tuple[int, int]], at: int) -> int:
    """Lagrange interpolation of the polynomial through ``points``, evaluated at ``at``."""
    total = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * (at - xj) % PRIME
                den = den * (xi - xj) % PRIME
        total = (total + yi * num * pow(den, -1, PRIME)) % PRIME
    return total
