"""The messages of one SecAgg round, as dataclasses with canonical byte encodings.

The library moves no bytes itself: the orchestrator or the Flower app carries
``msg.to_bytes()`` and the receiver calls ``Type.from_bytes(data)``. Signed
messages expose ``signed_digest(config)``, the keccak digest their sender signs
(domain label ‖ config digest ‖ round id ‖ sender ‖ content), so a signature
is bound to the round, the participant set and the participant.

Round 0  :class:`KeyAdvertisement` (participant → server), :class:`KeyBroadcast` (server → participants)
Round 1  :class:`ShareKeys` with :class:`EncryptedShare` and :class:`SeedCommitment` (→ server),
         :class:`ForwardedShares` (server → each participant)
Round 2  :class:`MaskedInput` (→ server)
Round 3  :class:`SurvivorList` (server →), :class:`ConsistencySignature` (→ server),
         :class:`ConsistencyBroadcast` (server →)
Round 4  :class:`UnmaskResponse` (→ server)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from eth_hash.auto import keccak

from collab.errors import BadInput
from collab.secagg.config import ROUND_ID_LEN, RoundConfig
from collab.secagg.crypto import KEY_LEN, SIGNATURE_LEN
from collab.secagg.shamir import SHARE_LEN
from collab.secagg.wire import Reader, Writer

_TAG_ADVERTISEMENT = 10
_TAG_BROADCAST = 11
_TAG_SHARE_KEYS = 12
_TAG_FORWARDED = 13
_TAG_MASKED = 14
_TAG_SURVIVORS = 15
_TAG_CONSISTENCY = 16
_TAG_CONSISTENCY_BROADCAST = 17
_TAG_UNMASK = 18
_TAG_COMMITMENT = 19


def _u32(v: int) -> bytes:
    return v.to_bytes(4, "big")


def _digest(label: bytes, config: RoundConfig, sender: int, body: bytes) -> bytes:
    return keccak(b"collab-secagg/v1/" + label + config.digest + config.round_id + _u32(sender) + body)


def ids_bytes(ids: tuple[int, ...]) -> bytes:
    """Canonical encoding of an id list (count ‖ ids), as signed in survivor lists."""
    return _u32(len(ids)) + b"".join(_u32(i) for i in ids)


# ---------------------------------------------------------------------- round 0


@dataclass(frozen=True)
class KeyAdvertisement:
    """A participant's two per-round X25519 public keys, signed by its identity account."""

    round_id: bytes
    sender: int
    channel_public: bytes
    mask_public: bytes
    signature: bytes

    def signed_digest(self, config: RoundConfig) -> bytes:
        """What the sender signs: both keys, bound to the round and the sender."""
        return _digest(b"keys", config, self.sender, self.channel_public + self.mask_public)

    def _write(self, w: Writer) -> Writer:
        w.fixed(self.round_id, ROUND_ID_LEN).u32(self.sender)
        return (
            w.fixed(self.channel_public, KEY_LEN).fixed(self.mask_public, KEY_LEN).fixed(self.signature, SIGNATURE_LEN)
        )

    @classmethod
    def _read(cls, r: Reader) -> KeyAdvertisement:
        return cls(r.fixed(ROUND_ID_LEN), r.u32(), r.fixed(KEY_LEN), r.fixed(KEY_LEN), r.fixed(SIGNATURE_LEN))

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        return self._write(Writer(_TAG_ADVERTISEMENT)).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyAdvertisement:
        """Decode (BadInput when malformed)."""
        r = Reader(data, _TAG_ADVERTISEMENT, "key advertisement")
        out = cls._read(r)
        r.done()
        return out


@dataclass(frozen=True)
class KeyBroadcast:
    """The server's forward of the signed advertisements it received (U1)."""

    round_id: bytes
    advertisements: tuple[KeyAdvertisement, ...]

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        w = Writer(_TAG_BROADCAST).fixed(self.round_id, ROUND_ID_LEN).u32(len(self.advertisements))
        for ad in self.advertisements:
            ad._write(w)
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyBroadcast:
        """Decode (BadInput when malformed)."""
        r = Reader(data, _TAG_BROADCAST, "key broadcast")
        round_id = r.fixed(ROUND_ID_LEN)
        ads = tuple(KeyAdvertisement._read(r) for _ in range(r.count()))
        r.done()
        return cls(round_id, ads)


# ---------------------------------------------------------------------- round 1


@dataclass(frozen=True)
class EncryptedShare:
    """Shares of the sender's b_u and s_u^SK for one recipient, sealed with their channel key."""

    sender: int
    recipient: int
    ciphertext: bytes

    def _write(self, w: Writer) -> Writer:
        return w.u32(self.sender).u32(self.recipient).var(self.ciphertext)

    @classmethod
    def _read(cls, r: Reader) -> EncryptedShare:
        return cls(r.u32(), r.u32(), r.var())


@dataclass(frozen=True)
class SeedCommitment:
    """keccak commitments to a participant's self-mask seed and pairwise seeds, signed.

    ``pairs`` holds (peer id, keccak(s_uv)) for every advertised neighbour,
    ascending by peer. A verifier checks revealed seeds against these, so the
    claimed masked-sum program cannot use seeds the participants did not use.
    """

    round_id: bytes
    sender: int
    self_commitment: bytes
    pairs: tuple[tuple[int, bytes], ...]
    signature: bytes

    def content(self) -> bytes:
        """The committed data, in signing order."""
        return self.self_commitment + _u32(len(self.pairs)) + b"".join(_u32(v) + c for v, c in self.pairs)

    def signed_digest(self, config: RoundConfig) -> bytes:
        """What the sender signs."""
        return _digest(b"commit", config, self.sender, self.content())

    def pair_commitment(self, peer: int) -> bytes | None:
        """The commitment to s_(sender, peer), if the sender made one."""
        return dict(self.pairs).get(peer)

    def _write(self, w: Writer) -> Writer:
        w.fixed(self.round_id, ROUND_ID_LEN).u32(self.sender).fixed(self.self_commitment, 32).u32(len(self.pairs))
        for v, c in self.pairs:
            w.u32(v).fixed(c, 32)
        return w.fixed(self.signature, SIGNATURE_LEN)

    @classmethod
    def _read(cls, r: Reader) -> SeedCommitment:
        round_id, sender, own = r.fixed(ROUND_ID_LEN), r.u32(), r.fixed(32)
        pairs = tuple((r.u32(), r.fixed(32)) for _ in range(r.count()))
        return cls(round_id, sender, own, pairs, r.fixed(SIGNATURE_LEN))

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        return self._write(Writer(_TAG_COMMITMENT)).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> SeedCommitment:
        """Decode (BadInput when malformed)."""
        r = Reader(data, _TAG_COMMITMENT, "seed commitment")
        out = cls._read(r)
        r.done()
        return out


@dataclass(frozen=True)
class ShareKeys:
    """Round 1 upload: one sealed share per neighbour, and the signed seed commitments."""

    round_id: bytes
    sender: int
    shares: tuple[EncryptedShare, ...]
    commitment: SeedCommitment

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        w = Writer(_TAG_SHARE_KEYS).fixed(self.round_id, ROUND_ID_LEN).u32(self.sender).u32(len(self.shares))
        for s in self.shares:
            s._write(w)
        return self.commitment._write(w).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> ShareKeys:
        """Decode (BadInput when malformed)."""
        r = Reader(data, _TAG_SHARE_KEYS, "share keys")
        round_id, sender = r.fixed(ROUND_ID_LEN), r.u32()
        shares = tuple(EncryptedShare._read(r) for _ in range(r.count()))
        commitment = SeedCommitment._read(r)
        r.done()
        return cls(round_id, sender, shares, commitment)


@dataclass(frozen=True)
class ForwardedShares:
    """The sealed shares addressed to one participant (their senders form its view of U2)."""

    round_id: bytes
    recipient: int
    shares: tuple[EncryptedShare, ...]

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        w = Writer(_TAG_FORWARDED).fixed(self.round_id, ROUND_ID_LEN).u32(self.recipient).u32(len(self.shares))
        for s in self.shares:
            s._write(w)
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> ForwardedShares:
        """Decode (BadInput when malformed)."""
        r = Reader(data, _TAG_FORWARDED, "forwarded shares")
        round_id, recipient = r.fixed(ROUND_ID_LEN), r.u32()
        shares = tuple(EncryptedShare._read(r) for _ in range(r.count()))
        r.done()
        return cls(round_id, recipient, shares)


# ---------------------------------------------------------------------- round 2


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """y_u = x_u + PRG(b_u) + Σ ±PRG(s_uv) in Z_2^64 (int64 words), signed by the sender.

    The signature covers keccak of the words' little-endian bytes, so the
    claimed masked-sum program's inputs are provably what participants sent.
    """

    round_id: bytes
    sender: int
    words: np.ndarray
    signature: bytes

    def words_hash(self) -> bytes:
        """keccak of the little-endian int64 encoding of the words."""
        return keccak(np.ascontiguousarray(self.words, dtype="<i8").tobytes())

    def signed_digest(self, config: RoundConfig) -> bytes:
        """What the sender signs: the vector length and the words' hash."""
        return _digest(b"masked", config, self.sender, len(self.words).to_bytes(8, "big") + self.words_hash())

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        w = Writer(_TAG_MASKED).fixed(self.round_id, ROUND_ID_LEN).u32(self.sender)
        w.var(np.ascontiguousarray(self.words, dtype="<i8").tobytes())
        return w.fixed(self.signature, SIGNATURE_LEN).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> MaskedInput:
        """Decode (BadInput when malformed)."""
        r = Reader(data, _TAG_MASKED, "masked input")
        round_id, sender, raw = r.fixed(ROUND_ID_LEN), r.u32(), r.var()
        sig = r.fixed(SIGNATURE_LEN)
        r.done()
        if len(raw) % 8:
            raise BadInput("masked input is not a whole number of 64-bit words")
        return cls(round_id, sender, np.frombuffer(raw, dtype="<i8").astype(np.int64), sig)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MaskedInput):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    __hash__ = None  # type: ignore[assignment]


# ---------------------------------------------------------------------- round 3


@dataclass(frozen=True)
class SurvivorList:
    """U3: the participants whose masked inputs the server received."""

    round_id: bytes
    survivors: tuple[int, ...]

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        w = Writer(_TAG_SURVIVORS).fixed(self.round_id, ROUND_ID_LEN).u32(len(self.survivors))
        for u in self.survivors:
            w.u32(u)
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> SurvivorList:
        """Decode (BadInput when malformed)."""
        r = Reader(data, _TAG_SURVIVORS, "survivor list")
        round_id = r.fixed(ROUND_ID_LEN)
        ids = tuple(r.u32() for _ in range(r.count()))
        r.done()
        return cls(round_id, ids)


@dataclass(frozen=True)
class ConsistencySignature:
    """A survivor's signature over the survivor list it was shown."""

    round_id: bytes
    sender: int
    signature: bytes

    @staticmethod
    def digest_for(config: RoundConfig, sender: int, survivors: tuple[int, ...]) -> bytes:
        """What ``sender`` signs for ``survivors``."""
        return _digest(b"survivors", config, sender, ids_bytes(survivors))

    def _write(self, w: Writer) -> Writer:
        return w.fixed(self.round_id, ROUND_ID_LEN).u32(self.sender).fixed(self.signature, SIGNATURE_LEN)

    @classmethod
    def _read(cls, r: Reader) -> ConsistencySignature:
        return cls(r.fixed(ROUND_ID_LEN), r.u32(), r.fixed(SIGNATURE_LEN))

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        return self._write(Writer(_TAG_CONSISTENCY)).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> ConsistencySignature:
        """Decode (BadInput when malformed)."""
        r = Reader(data, _TAG_CONSISTENCY, "consistency signature")
        out = cls._read(r)
        r.done()
        return out


@dataclass(frozen=True)
class ConsistencyBroadcast:
    """The survivor list with every survivor signature the server collected."""

    round_id: bytes
    survivors: tuple[int, ...]
    signatures: tuple[ConsistencySignature, ...]

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        w = Writer(_TAG_CONSISTENCY_BROADCAST).fixed(self.round_id, ROUND_ID_LEN).u32(len(self.survivors))
        for u in self.survivors:
            w.u32(u)
        w.u32(len(self.signatures))
        for s in self.signatures:
            s._write(w)
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> ConsistencyBroadcast:
        """Decode (BadInput when malformed)."""
        r = Reader(data, _TAG_CONSISTENCY_BROADCAST, "consistency broadcast")
        round_id = r.fixed(ROUND_ID_LEN)
        ids = tuple(r.u32() for _ in range(r.count()))
        sigs = tuple(ConsistencySignature._read(r) for _ in range(r.count()))
        r.done()
        return cls(round_id, ids, sigs)


# ---------------------------------------------------------------------- round 4


@dataclass(frozen=True)
class UnmaskResponse:
    """Per owner, either its b share (owner survived) or its s^SK share (owner dropped), never both."""

    round_id: bytes
    sender: int
    seed_shares: tuple[tuple[int, bytes], ...]
    key_shares: tuple[tuple[int, bytes], ...]

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        w = Writer(_TAG_UNMASK).fixed(self.round_id, ROUND_ID_LEN).u32(self.sender)
        for group in (self.seed_shares, self.key_shares):
            w.u32(len(group))
            for owner, share in group:
                w.u32(owner).fixed(share, SHARE_LEN)
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> UnmaskResponse:
        """Decode (BadInput when malformed)."""
        r = Reader(data, _TAG_UNMASK, "unmask response")
        round_id, sender = r.fixed(ROUND_ID_LEN), r.u32()
        seeds = tuple((r.u32(), r.fixed(SHARE_LEN)) for _ in range(r.count()))
        keys = tuple((r.u32(), r.fixed(SHARE_LEN)) for _ in range(r.count()))
        r.done()
        return cls(round_id, sender, seeds, keys)
