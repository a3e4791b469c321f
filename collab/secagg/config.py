"""The public parameters of one secure-aggregation round, and its neighbour graph.

Every participant and the server hold the same :class:`RoundConfig`; its
digest is bound into every signature, so a message from one round (or one
participant set, threshold or vector length) cannot be replayed in another.

Neighbours: SecAgg (Bonawitz et al. 2017) masks every pair of participants
(the complete graph). SecAgg+ (Bell et al. 2020) masks and shares only along
a sparse k-regular graph, so each participant's work grows with k, not n. The
graph here is the Harary graph H(k, n) (each node joined to the k/2 nearest
on either side of a ring) over a permutation of the members drawn from the
public ``graph_seed`` with the keccak PRG, so anyone recomputes it and nobody
(the server included) chooses who neighbours whom, provided the seed is fixed
after the participant set (e.g. a block hash or the round's on-chain id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from eth_hash.auto import keccak
from eth_utils.address import is_address, to_checksum_address

from collab import fixedpoint as fx
from collab.errors import BadInput
from collab.secagg import shamir
from collab.secagg.wire import Reader, Writer

ROUND_ID_LEN = 32
_TAG_CONFIG = 1


@dataclass(frozen=True)
class Member:
    """One participant: its Shamir evaluation point (``id`` >= 1) and identity address."""

    id: int
    address: str

    def __post_init__(self) -> None:
        if not isinstance(self.id, int) or not 1 <= self.id <= shamir.MAX_ID:
            raise BadInput(f"participant ids must be integers in [1, {shamir.MAX_ID}], got {self.id!r}")
        if not is_address(self.address):
            raise BadInput(f"participant {self.id} has an invalid address {self.address!r}")
        object.__setattr__(self, "address", to_checksum_address(self.address))


@dataclass(frozen=True)
class RoundConfig:
    """Public parameters of a round.

    Parameters
    ----------
    round_id : bytes
        32 bytes naming the round (e.g. keccak of the job id and Flower round).
    members : tuple[Member, ...]
        The participant set, at least two, distinct ids and addresses.
    threshold : int
        t: shares needed to recover a seed; also the minimum number of
        survivors. Must be a strict majority of every participant's share
        holders, so no two disjoint groups can both reconstruct.
    length : int
        Number of ring elements in every input vector.
    frac_bits : int
        Fixed-point fractional bits f of the inputs (and of the decoded sum).
    neighbours : int | None
        None for SecAgg's complete graph; an even k >= 2 for SecAgg+.
    graph_seed : bytes
        Public 32-byte seed of the SecAgg+ graph.
    """

    round_id: bytes
    members: tuple[Member, ...]
    threshold: int
    length: int
    frac_bits: int
    neighbours: int | None = None
    graph_seed: bytes = field(default=bytes(32))

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(sorted(self.members, key=lambda m: m.id)))
        if len(self.round_id) != ROUND_ID_LEN or len(self.graph_seed) != 32:
            raise BadInput("round id and graph seed must be 32 bytes")
        if len(self.members) < 2:
            raise BadInput("secure aggregation needs at least two participants")
        if len({m.id for m in self.members}) != len(self.members):
            raise BadInput("participant ids must be distinct")
        if len({m.address for m in self.members}) != len(self.members):
            raise BadInput("participant addresses must be distinct")
        if not 1 <= self.length <= 1 << 32:
            raise BadInput(f"vector length must be in [1, 2^32], got {self.length}")
        fx.check_frac_bits(self.frac_bits)
        if self.neighbours is not None and (self.neighbours < 2 or self.neighbours % 2):
            raise BadInput(f"SecAgg+ needs an even neighbour count k >= 2, got {self.neighbours}")
        for m in self.members:
            holders = len(self.holders_of(m.id))
            # INVARIANT: t is a strict majority of the holders and at most all of them.
            if not holders < 2 * self.threshold <= 2 * holders:
                raise BadInput(
                    f"threshold {self.threshold} must be a strict majority of participant {m.id}'s "
                    f"{holders} share holders (between {holders // 2 + 1} and {holders})"
                )

    # ------------------------------------------------------------------ lookups

    @cached_property
    def _by_id(self) -> dict[int, Member]:
        return {m.id: m for m in self.members}

    @property
    def ids(self) -> tuple[int, ...]:
        """Participant ids, ascending."""
        return tuple(m.id for m in self.members)

    def member(self, member_id: int) -> Member:
        """The member with this id (BadInput when unknown)."""
        try:
            return self._by_id[member_id]
        except KeyError:
            raise BadInput(f"participant {member_id} is not in round 0x{self.round_id.hex()}") from None

    def is_member(self, member_id: int) -> bool:
        """Whether ``member_id`` takes part in this round."""
        return member_id in self._by_id

    @property
    def complete(self) -> bool:
        """True for SecAgg's complete graph (also when k >= n - 1)."""
        return self.neighbours is None or self.neighbours >= len(self.members) - 1

    @cached_property
    def _graph(self) -> dict[int, frozenset[int]]:
        ids = self.ids
        if self.complete:
            return {u: frozenset(v for v in ids if v != u) for u in ids}
        assert self.neighbours is not None
        order = _permutation(list(ids), self.graph_seed)
        n, half = len(order), self.neighbours // 2
        graph: dict[int, frozenset[int]] = {}
        for pos, u in enumerate(order):
            graph[u] = frozenset(order[(pos + j) % n] for j in range(-half, half + 1) if j)
        return graph

    def neighbours_of(self, member_id: int) -> frozenset[int]:
        """N(u): the participants u masks with and shares its secrets to (u excluded)."""
        self.member(member_id)
        return self._graph[member_id]

    def holders_of(self, member_id: int) -> tuple[int, ...]:
        """N(u) ∪ {u}: who holds shares of u's secrets, ascending."""
        return tuple(sorted(self.neighbours_of(member_id) | {member_id}))

    # ------------------------------------------------------------------ encoding

    def to_bytes(self) -> bytes:
        """Canonical encoding (what :meth:`digest` hashes)."""
        w = Writer(_TAG_CONFIG).fixed(self.round_id, ROUND_ID_LEN).u32(len(self.members))
        for m in self.members:
            w.u32(m.id).fixed(bytes.fromhex(m.address[2:]), 20)
        w.u32(self.threshold).u64(self.length).u8(self.frac_bits)
        w.u32(self.neighbours or 0).fixed(self.graph_seed, 32)
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> RoundConfig:
        """Inverse of :meth:`to_bytes`."""
        r = Reader(data, _TAG_CONFIG, "round config")
        round_id = r.fixed(ROUND_ID_LEN)
        members = tuple(Member(r.u32(), "0x" + r.fixed(20).hex()) for _ in range(r.count()))
        threshold, length, frac_bits = r.u32(), r.u64(), r.u8()
        k, seed = r.u32(), r.fixed(32)
        r.done()
        return cls(round_id, members, threshold, length, frac_bits, k or None, seed)

    @cached_property
    def digest(self) -> bytes:
        """keccak of the canonical encoding; bound into every signature of the round."""
        return keccak(self.to_bytes())


def _permutation(items: list[int], seed: bytes) -> list[int]:
    """Fisher-Yates shuffle driven by the keccak PRG, with rejection sampling (no modulo bias)."""
    out = list(items)
    counter = 0
    for i in range(len(out) - 1, 0, -1):
        bound = i + 1
        limit = (1 << 64) - (1 << 64) % bound
        while True:
            r = fx.prg_element(seed, counter) & ((1 << 64) - 1)
            counter += 1
            if r < limit:
                break
        j = r % bound
        out[i], out[j] = out[j], out[i]
    return out
