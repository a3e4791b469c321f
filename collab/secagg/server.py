"""The server (aggregator) side of SecAgg / SecAgg+: collect, forward, unmask, sum.

The server learns only the sum: it sees each input only masked, recovers the
self-mask seed of every survivor and the mask key of every participant that
dropped after sharing its keys, and checks every recovered secret against
what its owner committed to (the seed commitment, the advertised public key)
before using it. Rounds close when the caller asks for the next round's
output (the transport owns the timeouts): whoever has not answered by then
has dropped. Sets follow the paper: U1 advertised keys, U2 shared keys, U3
sent a masked input, U4 signed the survivor list, U5 answered the unmasking.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from collab.errors import ProtocolViolation
from collab.secagg import crypto, masking, shamir
from collab.secagg.config import RoundConfig
from collab.secagg.errors import TooFewSurvivors
from collab.secagg.messages import (
    ConsistencyBroadcast,
    ConsistencySignature,
    ForwardedShares,
    KeyAdvertisement,
    KeyBroadcast,
    MaskedInput,
    ShareKeys,
    SurvivorList,
    UnmaskResponse,
)
from collab.secagg.witness import AggregationWitness, MaskTerm


@dataclass(frozen=True, eq=False)
class AggregateResult:
    """The unmasked sum: ring words, decoded floats, who was in, and the verification witness."""

    words: np.ndarray
    values: np.ndarray
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    witness: AggregationWitness


class SecAggServer:
    """Collects one round's messages; every ``receive_*`` raises on a message that breaks the protocol.

    A rejected message is simply not recorded (its sender then counts as
    dropped); the round itself aborts only when fewer than t remain.
    """

    def __init__(self, config: RoundConfig) -> None:
        self.config = config
        self._ads: dict[int, KeyAdvertisement] = {}
        self._shares: dict[int, ShareKeys] = {}
        self._masked: dict[int, MaskedInput] = {}
        self._consistency: dict[int, ConsistencySignature] = {}
        self._unmask: dict[int, UnmaskResponse] = {}
        self._closed: set[str] = set()
        self._survivors: tuple[int, ...] = ()

    # ------------------------------------------------------------------ helpers

    def _open(self, stage: str, round_id: bytes, sender: int, before: str | None, store: Mapping[int, object]) -> None:
        if round_id != self.config.round_id:
            raise ProtocolViolation(f"message from participant {sender} is for another round")
        if before is not None and before not in self._closed:
            raise ProtocolViolation(f"{stage} arrived before the previous round closed")
        if stage in self._closed:
            raise ProtocolViolation(f"{stage} from participant {sender} arrived after the round closed")
        if sender in store:
            raise ProtocolViolation(f"second {stage} from participant {sender}")

    def _close(self, stage: str, count: int, what: str) -> None:
        if stage not in self._closed and count < self.config.threshold:
            raise TooFewSurvivors(f"only {count} participants {what}; threshold is {self.config.threshold}")
        self._closed.add(stage)

    # ------------------------------------------------------------------ round 0

    def receive_advertisement(self, ad: KeyAdvertisement) -> None:
        """Accept a participant's signed keys (U1)."""
        self._open("keys", ad.round_id, ad.sender, None, self._ads)
        member = self.config.member(ad.sender)
        crypto.check_signature(
            ad.signed_digest(self.config), ad.signature, member.address, f"keys of participant {ad.sender}"
        )
        self._ads[ad.sender] = ad

    def key_broadcast(self, recipient: int | None = None) -> KeyBroadcast:
        """Close round 0; the advertisements a participant needs (its holders' under SecAgg+, or all)."""
        self._close("keys", len(self._ads), "advertised keys")
        wanted = set(self.config.holders_of(recipient)) if recipient is not None else set(self._ads)
        return KeyBroadcast(self.config.round_id, tuple(self._ads[u] for u in sorted(self._ads) if u in wanted))

    # ------------------------------------------------------------------ round 1

    def receive_shares(self, msg: ShareKeys) -> None:
        """Accept sealed shares (one for every advertised holder) and the signed seed commitments (U2)."""
        cfg, u = self.config, msg.sender
        self._open("shares", msg.round_id, u, "keys", self._shares)
        if u not in self._ads:
            raise ProtocolViolation(f"participant {u} shared keys without advertising any")
        c = msg.commitment
        if c.sender != u or c.round_id != cfg.round_id:
            raise ProtocolViolation(f"participant {u}'s seed commitment is not its own or not for this round")
        crypto.check_signature(
            c.signed_digest(cfg), c.signature, cfg.member(u).address, f"participant {u}'s seed commitment"
        )
        expected = {v for v in cfg.neighbours_of(u) if v in self._ads}
        recipients = [s.recipient for s in msg.shares]
        if (
            any(s.sender != u for s in msg.shares)
            or len(set(recipients)) != len(recipients)
            or set(recipients) != expected
        ):
            raise ProtocolViolation(
                f"participant {u} must send exactly one share to each advertised neighbour {sorted(expected)}"
            )
        if {v for v, _ in c.pairs} != expected:
            raise ProtocolViolation(f"participant {u} must commit to a pairwise seed with each advertised neighbour")
        self._shares[u] = msg

    def forwarded_shares(self, recipient: int) -> ForwardedShares:
        """Close round 1; the sealed shares addressed to ``recipient`` from every participant in U2."""
        self._close("shares", len(self._shares), "shared their keys")
        if recipient not in self._shares:
            raise ProtocolViolation(f"participant {recipient} did not share its keys and is out of the round")
        out = tuple(s for u in sorted(self._shares) for s in self._shares[u].shares if s.recipient == recipient)
        return ForwardedShares(self.config.round_id, recipient, out)

    # ------------------------------------------------------------------ round 2

    def receive_masked_input(self, msg: MaskedInput) -> None:
        """Accept a signed masked input (U3)."""
        cfg, u = self.config, msg.sender
        self._open("masked", msg.round_id, u, "shares", self._masked)
        if u not in self._shares:
            raise ProtocolViolation(f"participant {u} sent a masked input without sharing its keys")
        if msg.words.dtype != np.int64 or msg.words.shape != (cfg.length,):
            raise ProtocolViolation(f"participant {u}'s masked input is not {cfg.length} int64 words")
        crypto.check_signature(
            msg.signed_digest(cfg), msg.signature, cfg.member(u).address, f"participant {u}'s masked input"
        )
        self._masked[u] = msg

    # ------------------------------------------------------------------ round 3

    def survivor_list(self) -> SurvivorList:
        """Close round 2: U3, the participants whose masked inputs arrived."""
        self._close("masked", len(self._masked), "sent masked inputs")
        self._survivors = tuple(sorted(self._masked))
        return SurvivorList(self.config.round_id, self._survivors)

    def receive_consistency_signature(self, sig: ConsistencySignature) -> None:
        """Accept a survivor's signature over U3 (U4)."""
        cfg, u = self.config, sig.sender
        self._open("consistency", sig.round_id, u, "masked", self._consistency)
        if u not in self._survivors:
            raise ProtocolViolation(f"participant {u} is not a survivor")
        digest = ConsistencySignature.digest_for(cfg, u, self._survivors)
        crypto.check_signature(digest, sig.signature, cfg.member(u).address, f"participant {u}'s survivor list")
        self._consistency[u] = sig

    def consistency_broadcast(self) -> ConsistencyBroadcast:
        """Close round 3: U3 with every signature collected."""
        self._close("consistency", len(self._consistency), "signed the survivor list")
        sigs = tuple(self._consistency[u] for u in sorted(self._consistency))
        return ConsistencyBroadcast(self.config.round_id, self._survivors, sigs)

    # ------------------------------------------------------------------ round 4

    def receive_unmask(self, resp: UnmaskResponse) -> None:
        """Accept a survivor's shares: b shares of survivors, s^SK shares of dropped participants (U5)."""
        cfg, u = self.config, resp.sender
        self._open("unmask", resp.round_id, u, "consistency", self._unmask)
        if u not in self._consistency:
            raise ProtocolViolation(f"participant {u} unmasks without having signed the survivor list")
        alive = set(self._survivors)
        owners = [o for o, _ in resp.seed_shares] + [o for o, _ in resp.key_shares]
        if len(set(owners)) != len(owners):
            raise ProtocolViolation(f"participant {u} revealed two shares of one participant")
        for owner, _ in resp.seed_shares:
            if owner not in alive or u not in cfg.holders_of(owner):
                raise ProtocolViolation(
                    f"participant {u} revealed a seed share of {owner}, which it cannot hold or must not reveal"
                )
        for owner, _ in resp.key_shares:
            if owner in alive or owner not in self._shares or u not in cfg.holders_of(owner):
                raise ProtocolViolation(
                    f"participant {u} revealed a key share of {owner}, which it cannot hold or must not reveal"
                )
        self._unmask[u] = resp

    def aggregate(self) -> AggregateResult:
        """Close round 4: reconstruct, check and remove the masks; the exact ring sum and its decoding."""
        witness = aggregation_witness(self)
        words = witness.replay()
        return AggregateResult(
            words, masking.decode(words, self.config.frac_bits), witness.survivors, witness.dropped, witness
        )

    # ------------------------------------------------------------------ state for the witness

    @property
    def survivors(self) -> tuple[int, ...]:
        """U3 once closed."""
        return self._survivors

    @property
    def dropped(self) -> tuple[int, ...]:
        """U2 \\ U3: shared keys but sent no masked input."""
        return tuple(sorted(set(self._shares) - set(self._survivors)))


def aggregation_witness(server: SecAggServer) -> AggregationWitness:
    """Reconstruct the revealed seeds from the unmask responses and return the program's witness.

    Every survivor's b_u is checked against its seed commitment and every
    dropped participant's s^SK against its advertised public key, so a lying
    share holder is caught here, before any seed is used.
    """
    cfg = server.config
    server._close("unmask", len(server._unmask), "answered the unmasking")
    survivors, dropped = server.survivors, server.dropped
    terms: list[MaskTerm] = []
    for owner in survivors:
        shares = {r.sender: s for r in server._unmask.values() for o, s in r.seed_shares if o == owner}
        if len(shares) < cfg.threshold:
            raise TooFewSurvivors(
                f"only {len(shares)} shares of participant {owner}'s self-mask seed; threshold is {cfg.threshold}"
            )
        seed = shamir.combine(shares, cfg.threshold)
        if crypto.commit(seed) != server._shares[owner].commitment.self_commitment:
            raise ProtocolViolation(f"the shares of participant {owner}'s self-mask seed do not open its commitment")
        terms.append(MaskTerm(owner, None, seed, True))
    alive = set(survivors)
    for owner in dropped:
        shares = {r.sender: s for r in server._unmask.values() for o, s in r.key_shares if o == owner}
        if len(shares) < cfg.threshold:
            raise TooFewSurvivors(
                f"only {len(shares)} shares of dropped participant {owner}'s mask key; threshold is {cfg.threshold}"
            )
        secret = shamir.combine(shares, cfg.threshold)
        if crypto.public_key(secret) != server._ads[owner].mask_public:
            raise ProtocolViolation(f"the shares of participant {owner}'s mask key do not match its advertised key")
        for peer in sorted(v for v in cfg.neighbours_of(owner) if v in alive):
            seed = crypto.mask_seed(secret, server._ads[peer].mask_public, cfg.round_id, owner, peer)
            terms.append(MaskTerm(owner, peer, seed, peer < owner))
    return AggregationWitness(
        config=cfg,
        survivors=survivors,
        dropped=dropped,
        masked_inputs=tuple(server._masked[u] for u in survivors),
        masks=tuple(terms),
        commitments=tuple(server._shares[u].commitment for u in sorted(server._shares)),
    )
