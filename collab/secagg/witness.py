"""What makes a secure aggregate verifiable: the revealed seeds, checked against signed commitments.

The aggregate of a round is the masked-sum program (docs/protocol.md ops
``RING_ADD``, ``PRG_MASK``, ``RING_TO_FIXED``) over exactly what the server
received::

    sum = RING_ADD(y_u for u in survivors,  PRG_MASK(seed_i, negate_i) for every term i)
    out = RING_TO_FIXED(sum)

The terms are the self-mask seeds b_u of survivors (negated) and, for every
dropped participant d and surviving neighbour v, the pairwise seed s_dv with
the sign that cancels the mask v added (v added +PRG(s_dv) if v < d, so the
term is negated exactly when v < d). :class:`AggregationWitness` carries the
signed masked inputs, these terms and the participants' signed seed
commitments; :func:`verify_seed_commitments` checks that every revealed seed is
the one its owner (and, for a pair, both owners) committed to before anyone
dropped, that the set of terms is complete, and that the masked inputs are
signed by their senders. A claim over a program built from a witness that
passes is a claim about the participants' real inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from collab.errors import BadInput, ProtocolViolation
from collab.secagg import crypto, masking
from collab.secagg.config import RoundConfig
from collab.secagg.messages import MaskedInput, SeedCommitment
from collab.secagg.wire import Reader, Writer

_TAG_WITNESS = 30


@dataclass(frozen=True)
class MaskTerm:
    """One ``PRG_MASK(seed, negate)`` input of the masked-sum program.

    ``owner`` is whose secret the seed came from; ``peer`` is None for a
    self-mask seed b_owner, else the survivor the pairwise seed s_(owner, peer)
    is shared with (owner dropped).
    """

    owner: int
    peer: int | None
    seed: bytes
    negate: bool

    @property
    def kind(self) -> str:
        """ "self" or "pair"."""
        return "self" if self.peer is None else "pair"


@dataclass(frozen=True, eq=False)
class AggregationWitness:
    """Everything a verifier (or the program builder) needs to recompute the aggregate."""

    config: RoundConfig
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    masked_inputs: tuple[MaskedInput, ...]
    masks: tuple[MaskTerm, ...]
    commitments: tuple[SeedCommitment, ...]

    def replay(self) -> np.ndarray:
        """The masked-sum program's ring result: Σ y_u + Σ ±PRG(seed), int64 words."""
        acc = masking.ring_sum((m.words for m in self.masked_inputs), self.config.length)
        for term in self.masks:
            masking.add_mask(acc, term.seed, term.negate)
        return acc

    def values(self) -> np.ndarray:
        """``RING_TO_FIXED`` of :meth:`replay`, as floats."""
        return masking.decode(self.replay(), self.config.frac_bits)

    def to_bytes(self) -> bytes:
        """Canonical encoding, so the orchestrator can store a round's witness and claim it later."""
        w = Writer(_TAG_WITNESS).var(self.config.to_bytes())
        for ids in (self.survivors, self.dropped):
            w.u32(len(ids))
            for u in ids:
                w.u32(u)
        w.u32(len(self.masked_inputs))
        for m in self.masked_inputs:
            w.var(m.to_bytes())
        w.u32(len(self.masks))
        for t in self.masks:
            w.u32(t.owner).u32(0 if t.peer is None else t.peer).fixed(t.seed, 32).u8(int(t.negate))
        w.u32(len(self.commitments))
        for c in self.commitments:
            w.var(c.to_bytes())
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> AggregationWitness:
        """Inverse of :meth:`to_bytes` (BadInput when malformed; run :func:`verify_seed_commitments` to trust it)."""
        r = Reader(data, _TAG_WITNESS, "aggregation witness")
        config = RoundConfig.from_bytes(r.var())
        survivors = tuple(r.u32() for _ in range(r.count()))
        dropped = tuple(r.u32() for _ in range(r.count()))
        masked = tuple(MaskedInput.from_bytes(r.var()) for _ in range(r.count()))
        masks = []
        for _ in range(r.count()):
            owner, peer, seed, negate = r.u32(), r.u32(), r.fixed(32), r.u8()
            if negate > 1:
                raise BadInput("malformed mask term in an aggregation witness")
            masks.append(MaskTerm(owner, peer or None, seed, bool(negate)))
        commitments = tuple(SeedCommitment.from_bytes(r.var()) for _ in range(r.count()))
        r.done()
        return cls(config, survivors, dropped, masked, tuple(masks), commitments)


def expected_pairs(config: RoundConfig, survivors: tuple[int, ...], dropped: tuple[int, ...]) -> set[tuple[int, int]]:
    """(dropped d, surviving neighbour v): every pairwise mask left uncancelled in the sum."""
    alive = set(survivors)
    return {(d, v) for d in dropped for v in config.neighbours_of(d) if v in alive}


def verify_seed_commitments(config: RoundConfig, witness: AggregationWitness) -> None:
    """Check a witness against the participants' signed commitments; ProtocolViolation if anything is off.

    Checks: the witness is for ``config``; commitments and masked inputs are
    signed by the participants named in ``config``; survivors and dropped
    participants are disjoint and all committed; every survivor has exactly
    one self term, ``negate`` set and ``keccak(seed)`` equal to its
    commitment; every (dropped, surviving neighbour) pair has exactly one pair
    term with the cancelling sign and a seed both of them committed to; no
    other terms.
    """
    if witness.config.digest != config.digest:
        raise ProtocolViolation("the witness is for another round configuration")
    survivors, dropped = set(witness.survivors), set(witness.dropped)
    if survivors & dropped or not all(config.is_member(u) for u in survivors | dropped):
        raise ProtocolViolation("survivors and dropped participants must be disjoint members of the round")

    commitments: dict[int, SeedCommitment] = {}
    for c in witness.commitments:
        if c.sender in commitments or c.round_id != config.round_id:
            raise ProtocolViolation(f"duplicate or foreign seed commitment from participant {c.sender}")
        crypto.check_signature(
            c.signed_digest(config),
            c.signature,
            config.member(c.sender).address,
            f"participant {c.sender}'s seed commitment",
        )
        commitments[c.sender] = c
    missing = sorted((survivors | dropped) - set(commitments))
    if missing:
        raise ProtocolViolation(f"no signed seed commitment from participants {missing}")

    senders = [m.sender for m in witness.masked_inputs]
    if sorted(senders) != sorted(survivors) or len(set(senders)) != len(senders):
        raise ProtocolViolation("the masked inputs must be exactly one per survivor")
    for m in witness.masked_inputs:
        if m.round_id != config.round_id or len(m.words) != config.length:
            raise ProtocolViolation(f"participant {m.sender}'s masked input is for another round or length")
        crypto.check_signature(
            m.signed_digest(config),
            m.signature,
            config.member(m.sender).address,
            f"participant {m.sender}'s masked input",
        )

    self_terms: set[int] = set()
    pair_terms: set[tuple[int, int]] = set()
    for t in witness.masks:
        if t.peer is None:
            if t.owner not in survivors or t.owner in self_terms or not t.negate:
                raise ProtocolViolation(f"unexpected self-mask term for participant {t.owner}")
            if crypto.commit(t.seed) != commitments[t.owner].self_commitment:
                raise ProtocolViolation(
                    f"revealed self-mask seed of participant {t.owner} does not match its commitment"
                )
            self_terms.add(t.owner)
            continue
        pair = (t.owner, t.peer)
        if (
            t.owner not in dropped
            or t.peer not in survivors
            or t.peer not in config.neighbours_of(t.owner)
            or pair in pair_terms
        ):
            raise ProtocolViolation(f"unexpected pairwise term {pair}")
        if t.negate != (t.peer < t.owner):
            raise ProtocolViolation(f"pairwise term {pair} has the wrong sign: it would not cancel the survivor's mask")
        digest = crypto.commit(t.seed)
        for committer, other in ((t.owner, t.peer), (t.peer, t.owner)):
            if commitments[committer].pair_commitment(other) != digest:
                raise ProtocolViolation(
                    f"revealed pairwise seed {pair} does not match participant {committer}'s commitment"
                )
        pair_terms.add(pair)
    if self_terms != survivors:
        raise ProtocolViolation(f"self-mask terms missing for survivors {sorted(survivors - self_terms)}")
    missing_pairs = expected_pairs(config, witness.survivors, witness.dropped) - pair_terms
    if missing_pairs:
        raise ProtocolViolation(f"pairwise terms missing for {sorted(missing_pairs)}")
