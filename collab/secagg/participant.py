"""The participant side of SecAgg / SecAgg+: a state machine, one method per round.

Each method checks everything it receives before using it and aborts the
round (every later call refuses) on the first violation: a bad signature, a
share that fails authentication, too few peers, a second survivor list. The
two refusals that keep a participant's input private against a malicious
server are here:

* it signs at most one survivor list per round and unmasks only against that
  list, with at least t valid signatures on it from its share holders;
* for every peer it reveals either the self-mask seed share (peer survived)
  or the mask-key share (peer dropped), never both.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import pickle
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount

from collab.errors import CollabError, ProtocolViolation, Unauthorized
from collab.secagg import crypto, masking, shamir
from collab.secagg.config import RoundConfig
from collab.secagg.errors import TooFewSurvivors
from collab.secagg.messages import (
    ConsistencyBroadcast,
    ConsistencySignature,
    EncryptedShare,
    ForwardedShares,
    KeyAdvertisement,
    KeyBroadcast,
    MaskedInput,
    SeedCommitment,
    ShareKeys,
    SurvivorList,
    UnmaskResponse,
)

SHARE_PLAINTEXT_LEN = 8 + 2 * shamir.SHARE_LEN


class Stage(enum.Enum):
    """Where a participant is in the round."""

    NEW = "new"
    ADVERTISED = "advertised"
    SHARED = "shared"
    MASKED = "masked"
    SIGNED = "signed"
    UNMASKED = "unmasked"
    ABORTED = "aborted"


def share_aad(config: RoundConfig, sender: int, recipient: int) -> bytes:
    """Associated data of a sealed share: config digest ‖ sender ‖ recipient."""
    return config.digest + sender.to_bytes(4, "big") + recipient.to_bytes(4, "big")


class SecAggParticipant:
    """One participant's side of a round.

    Parameters
    ----------
    config : RoundConfig
        The round's public parameters (identical at every party).
    member_id : int
        This participant's id in ``config``.
    account : LocalAccount
        The identity's secp256k1 account (``Identity.account``); it signs the
        keys, commitments, masked input and survivor list. The vault key is
        never used.
    """

    def __init__(self, config: RoundConfig, member_id: int, account: LocalAccount) -> None:
        member = config.member(member_id)
        if account.address != member.address:
            raise Unauthorized(f"participant {member_id} is {member.address}, not {account.address}")
        self.config = config
        self.id = member_id
        self._account = account
        self.stage = Stage.NEW
        self._abort_reason = ""
        self._channel_sk, self._channel_pk = crypto.keypair()
        self._mask_sk, self._mask_pk = crypto.keypair()
        self._self_seed = b""
        self._peers: dict[int, KeyAdvertisement] = {}  # advertised holders (incl. self): U1 ∩ holders
        self._pair_seeds: dict[int, bytes] = {}
        self._held: dict[int, tuple[bytes, bytes]] = {}  # owner -> (b share, s^SK share); U2 view
        self._signed: tuple[int, ...] | None = None
        self._signature: ConsistencySignature | None = None
        self._revealed: dict[int, str] = {}  # owner -> "seed" | "key"

    # ------------------------------------------------------------------ persistence

    def export_state(self) -> bytes:
        """This participant's secrets and progress, without the identity account.

        Why: a Flower ClientApp is a fresh process per message, so the state
        between rounds 0-4 lives in the node's own memory (``Context.state``,
        never sent to the SuperLink). Only :meth:`restore` on the same node
        reads it back; it is never accepted from the network.
        """
        state = {k: v for k, v in self.__dict__.items() if k not in ("_account", "config")}
        return pickle.dumps((self.config.to_bytes(), state), protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def restore(cls, blob: bytes, account: LocalAccount) -> SecAggParticipant:
        """The participant saved by :meth:`export_state`, re-bound to its identity account."""
        config_bytes, state = pickle.loads(blob)  # noqa: S301 - node-local state this node wrote itself
        config = RoundConfig.from_bytes(config_bytes)
        participant = cls.__new__(cls)
        participant.__dict__.update(state)
        participant.config = config
        if account.address != config.member(participant.id).address:
            raise Unauthorized(f"saved secure-aggregation state belongs to {config.member(participant.id).address}")
        participant._account = account
        return participant

    # ------------------------------------------------------------------ helpers

    def _guard(self, expected: Stage, round_id: bytes) -> None:
        if self.stage is Stage.ABORTED:
            raise ProtocolViolation(f"participant {self.id} aborted this round: {self._abort_reason}")
        if self.stage is not expected:
            raise ProtocolViolation(f"participant {self.id} is at stage {self.stage.value}, not {expected.value}")
        if round_id != self.config.round_id:
            self._abort(ProtocolViolation(f"message for round 0x{round_id.hex()}, not this round"))

    def _abort(self, error: CollabError) -> None:
        self.stage = Stage.ABORTED
        self._abort_reason = str(error)
        raise error

    def _run(self, expected: Stage, round_id: bytes, step: Any, *args: Any) -> Any:
        self._guard(expected, round_id)
        try:
            return step(*args)
        except CollabError as exc:
            self.stage = Stage.ABORTED
            self._abort_reason = str(exc)
            raise

    @property
    def pair_seeds(self) -> dict[int, bytes]:
        """s_uv per advertised neighbour (exposed for tests and audits of this participant)."""
        return dict(self._pair_seeds)

    # ------------------------------------------------------------------ round 0

    def advertise_keys(self) -> KeyAdvertisement:
        """Round 0: fresh channel and mask public keys, signed and bound to (round, id)."""
        self._guard(Stage.NEW, self.config.round_id)
        unsigned = KeyAdvertisement(self.config.round_id, self.id, self._channel_pk, self._mask_pk, b"")
        ad = dataclasses.replace(unsigned, signature=crypto.sign(self._account, unsigned.signed_digest(self.config)))
        self.stage = Stage.ADVERTISED
        return ad

    # ------------------------------------------------------------------ round 1

    def share_keys(self, broadcast: KeyBroadcast) -> ShareKeys:
        """Round 1: check the advertised keys, Shamir-share b_u and s_u^SK to the holders, commit to seeds."""
        result: ShareKeys = self._run(Stage.ADVERTISED, broadcast.round_id, self._share_keys, broadcast)
        self.stage = Stage.SHARED
        return result

    def _share_keys(self, broadcast: KeyBroadcast) -> ShareKeys:
        cfg, holders = self.config, set(self.config.holders_of(self.id))
        peers: dict[int, KeyAdvertisement] = {}
        for ad in broadcast.advertisements:
            if ad.sender not in holders:
                continue  # SecAgg+: not our neighbour, nothing to check or use
            if ad.sender in peers:
                raise ProtocolViolation(f"two key advertisements for participant {ad.sender}")
            if ad.round_id != cfg.round_id:
                raise ProtocolViolation(f"key advertisement of participant {ad.sender} is for another round")
            crypto.check_signature(
                ad.signed_digest(cfg), ad.signature, cfg.member(ad.sender).address, f"keys of participant {ad.sender}"
            )
            peers[ad.sender] = ad
        own = peers.get(self.id)
        if own is None or (own.channel_public, own.mask_public) != (self._channel_pk, self._mask_pk):
            raise ProtocolViolation(f"the server did not relay participant {self.id}'s own keys faithfully")
        keys = [k for ad in peers.values() for k in (ad.channel_public, ad.mask_public)]
        if len(set(keys)) != len(keys):
            raise ProtocolViolation("advertised public keys repeat across participants or key kinds")
        if len(peers) < cfg.threshold:
            raise TooFewSurvivors(
                f"only {len(peers)} of participant {self.id}'s share holders advertised keys; "
                f"threshold is {cfg.threshold}"
            )
        self._peers = peers
        self._self_seed = os.urandom(32)
        ids = sorted(peers)
        seed_shares = shamir.split(self._self_seed, cfg.threshold, ids)
        key_shares = shamir.split(self._mask_sk, cfg.threshold, ids)
        sealed: list[EncryptedShare] = []
        for v in ids:
            if v == self.id:
                continue
            key = crypto.channel_key(self._channel_sk, peers[v].channel_public, cfg.round_id, self.id, v)
            plaintext = self.id.to_bytes(4, "big") + v.to_bytes(4, "big") + seed_shares[v] + key_shares[v]
            sealed.append(EncryptedShare(self.id, v, crypto.seal(key, share_aad(cfg, self.id, v), plaintext)))
            self._pair_seeds[v] = crypto.mask_seed(self._mask_sk, peers[v].mask_public, cfg.round_id, self.id, v)
        self._held[self.id] = (seed_shares[self.id], key_shares[self.id])
        pairs = tuple((v, crypto.commit(s)) for v, s in sorted(self._pair_seeds.items()))
        unsigned = SeedCommitment(cfg.round_id, self.id, crypto.commit(self._self_seed), pairs, b"")
        commitment = dataclasses.replace(unsigned, signature=crypto.sign(self._account, unsigned.signed_digest(cfg)))
        return ShareKeys(cfg.round_id, self.id, tuple(sealed), commitment)

    # ------------------------------------------------------------------ round 2

    def mask_input(self, forwarded: ForwardedShares, words: Any) -> MaskedInput:
        """Round 2: open the forwarded shares and send y_u = x_u + PRG(b_u) + Σ ±PRG(s_uv).

        ``words`` is the input as int64 fixed-point words at ``config.frac_bits``
        (see :func:`collab.secagg.encode`).
        """
        x = masking.check_words(words, self.config.length)
        result: MaskedInput = self._run(Stage.SHARED, forwarded.round_id, self._mask_input, forwarded, x)
        self.stage = Stage.MASKED
        return result

    def _mask_input(self, forwarded: ForwardedShares, x: np.ndarray) -> MaskedInput:
        cfg = self.config
        if forwarded.recipient != self.id:
            raise ProtocolViolation(f"shares for participant {forwarded.recipient} were sent to {self.id}")
        for share in forwarded.shares:
            v = share.sender
            if share.recipient != self.id:
                raise ProtocolViolation(f"a share for participant {share.recipient} was forwarded to {self.id}")
            if v not in self._peers or v == self.id:
                raise ProtocolViolation(f"a share from participant {v}, who is not an advertised neighbour")
            if v in self._held:
                raise ProtocolViolation(f"two shares from participant {v}")
            key = crypto.channel_key(self._channel_sk, self._peers[v].channel_public, cfg.round_id, self.id, v)
            plain = crypto.open_sealed(
                key, share_aad(cfg, v, self.id), share.ciphertext, f"the share from participant {v}"
            )
            if len(plain) != SHARE_PLAINTEXT_LEN or plain[:8] != v.to_bytes(4, "big") + self.id.to_bytes(4, "big"):
                raise ProtocolViolation(f"the share from participant {v} names the wrong sender or recipient")
            self._held[v] = (plain[8 : 8 + shamir.SHARE_LEN], plain[8 + shamir.SHARE_LEN :])
        if len(self._held) < cfg.threshold:
            raise TooFewSurvivors(
                f"participant {self.id} holds shares of only {len(self._held)} participants; "
                f"threshold is {cfg.threshold}"
            )
        # Mask only with the neighbours whose shares arrived (U2): those are the pairs the server can unmask.
        acc = x.copy()
        pair_seeds = {v: self._pair_seeds[v] for v in self._held if v != self.id}
        for seed, negate in masking.mask_terms(self.id, self._self_seed, pair_seeds):
            masking.add_mask(acc, seed, negate)
        unsigned = MaskedInput(cfg.round_id, self.id, acc, b"")
        return dataclasses.replace(unsigned, signature=crypto.sign(self._account, unsigned.signed_digest(cfg)))

    # ------------------------------------------------------------------ round 3

    def sign_survivors(self, survivors: SurvivorList) -> ConsistencySignature:
        """Round 3: sign U3, once. A second, different list is refused (it could unmask someone)."""
        if self.stage is Stage.SIGNED and self._signature is not None and survivors.survivors == self._signed:
            return self._signature
        if self.stage is Stage.SIGNED:
            self._abort(ProtocolViolation(f"participant {self.id} already signed a different survivor list"))
        result: ConsistencySignature = self._run(Stage.MASKED, survivors.round_id, self._sign_survivors, survivors)
        self.stage = Stage.SIGNED
        return result

    def _sign_survivors(self, survivors: SurvivorList) -> ConsistencySignature:
        cfg, ids = self.config, survivors.survivors
        if list(ids) != sorted(set(ids)) or not all(cfg.is_member(u) for u in ids):
            raise ProtocolViolation("the survivor list is not an ascending list of distinct participants")
        if self.id not in ids:
            raise ProtocolViolation(
                f"participant {self.id} sent its masked input but is missing from the survivor list"
            )
        unknown = [v for v in ids if v in cfg.neighbours_of(self.id) and v not in self._held]
        if unknown:
            raise ProtocolViolation(
                f"survivors {unknown} never sent this participant their shares, so they cannot have masked with it"
            )
        alive = [v for v in ids if v in self._held]
        if len(alive) < cfg.threshold:
            raise TooFewSurvivors(
                f"only {len(alive)} of participant {self.id}'s share holders survived; threshold is {cfg.threshold}"
            )
        self._signed = ids
        self._signature = ConsistencySignature(
            cfg.round_id, self.id, crypto.sign(self._account, ConsistencySignature.digest_for(cfg, self.id, ids))
        )
        return self._signature

    # ------------------------------------------------------------------ round 4

    def unmask(self, broadcast: ConsistencyBroadcast) -> UnmaskResponse:
        """Round 4: check the consistency signatures, then reveal one share per peer."""
        result: UnmaskResponse = self._run(Stage.SIGNED, broadcast.round_id, self._unmask, broadcast)
        self.stage = Stage.UNMASKED
        return result

    def _unmask(self, broadcast: ConsistencyBroadcast) -> UnmaskResponse:
        cfg = self.config
        assert self._signed is not None
        if broadcast.survivors != self._signed:
            raise ProtocolViolation(f"participant {self.id} signed a different survivor list than the one to unmask")
        holders, valid = set(cfg.holders_of(self.id)), set()
        for sig in broadcast.signatures:
            if sig.sender not in holders:
                continue  # SecAgg+: only our share holders' agreement protects our secrets
            if sig.sender not in self._signed or sig.round_id != cfg.round_id:
                raise ProtocolViolation(
                    f"participant {sig.sender} signed a survivor list it is not on, or another round's"
                )
            digest = ConsistencySignature.digest_for(cfg, sig.sender, self._signed)
            crypto.check_signature(
                digest,
                sig.signature,
                cfg.member(sig.sender).address,
                f"participant {sig.sender}'s survivor list (inconsistent lists)",
            )
            valid.add(sig.sender)
        if len(valid) < cfg.threshold:
            raise TooFewSurvivors(
                f"only {len(valid)} share holders signed the survivor list; threshold is {cfg.threshold}"
            )
        seeds: list[tuple[int, bytes]] = []
        keys: list[tuple[int, bytes]] = []
        for owner, (seed_share, key_share) in sorted(self._held.items()):
            kind = "seed" if owner in self._signed else "key"
            # INVARIANT: never both shares of one participant (that would unmask its input).
            if self._revealed.setdefault(owner, kind) != kind:
                raise ProtocolViolation(f"refusing to reveal both shares of participant {owner}")
            (seeds if kind == "seed" else keys).append((owner, seed_share if kind == "seed" else key_share))
        return UnmaskResponse(cfg.round_id, self.id, tuple(seeds), tuple(keys))
