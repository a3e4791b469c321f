"""What participants sign in a training round, and the digests both sides recompute (no torch needed).

Two signatures per participant and Flower round, with its identity
(secp256k1, ``collab.identity``) key, never the vault key:

* the **model receipt**: the hash of the global model the participant
  received, so the record proves which model every update started from;
* the **update commitment**: a salted keccak commitment to the exact ring
  words it fed into secure aggregation, with its declared weight. The salt
  stays in the participant's home, so it alone can open the commitment later
  (an exclusion dispute, an audit) while the aggregator learns nothing.

Every digest is domain-separated and bound to the job and the round, so a
signature cannot be replayed into another job, round or role.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import numpy as np
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak

from collab.secagg import crypto

DOMAIN = b"collab-fl/v1/"


def job_round_id(job: str, rnd: int) -> bytes:
    """The 32-byte SecAgg round id of Flower round ``rnd`` of ``job`` (stable across restarts)."""
    return keccak(DOMAIN + b"round" + job.encode() + struct.pack(">Q", rnd))


def model_hash(arrays: Mapping[str, np.ndarray]) -> bytes:
    """keccak of the travelling weights: per tensor (sorted by name) its name, shape and float32 LE bytes."""
    parts = [DOMAIN + b"model"]
    for name in sorted(arrays):
        arr = np.ascontiguousarray(np.asarray(arrays[name], dtype="<f4"))
        raw_name = name.encode()
        parts.append(struct.pack(">I", len(raw_name)) + raw_name + struct.pack(">I", arr.ndim))
        parts.append(b"".join(struct.pack(">Q", d) for d in arr.shape) + arr.tobytes())
    return keccak(b"".join(parts))


def model_receipt_digest(job: str, rnd: int, digest: bytes) -> bytes:
    """What a participant signs for the global model of round ``rnd``."""
    return keccak(DOMAIN + b"model-receipt" + job_round_id(job, rnd) + digest)


def update_commitment(round_id: bytes, salt: bytes, words: np.ndarray) -> bytes:
    """keccak(salt ‖ round id ‖ the int64 LE words): hiding (32-byte salt) and binding."""
    return keccak(DOMAIN + b"update" + salt + round_id + np.ascontiguousarray(words, dtype="<i8").tobytes())


def update_digest(round_id: bytes, member: int, weight: int, epsilon: int, commitment: bytes) -> bytes:
    """What a participant signs: its commitment, the weight it claims and the cumulative ε it reports
    (``chain.clients.round_registry.epsilon_units``: millionths, the record's unit), in this round, as this member."""
    return keccak(DOMAIN + b"update-commitment" + round_id + struct.pack(">IQQ", member, weight, epsilon) + commitment)


def sign(account: LocalAccount, digest: bytes) -> bytes:
    """65-byte signature over a digest (the same scheme as the SecAgg messages)."""
    return crypto.sign(account, digest)


def check(digest: bytes, signature: bytes, address: str, what: str) -> None:
    """ProtocolViolation unless ``address`` signed ``digest``."""
    crypto.check_signature(digest, signature, address, what)
