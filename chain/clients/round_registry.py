"""Typed client of ``RoundRegistry``: training rounds, consent records, exclusion disputes.

Besides the calls, this module holds the off-chain signatures the round
protocol needs, computed exactly as the contract checks them:

* consent: every included participant BLS-signs :meth:`AttributionRecord.root`
  (``collab.bls.sign`` over the 32-byte root); the aggregator sums them;
* when a participant withholds that consent, the aggregator proposes the
  record on chain (:meth:`RoundRegistryClient.propose_record`); each
  participant's signature over the proposal's root is then posted with
  :meth:`RoundRegistryClient.consent` before the deadline;
* update receipts: the aggregator signs an EIP-712 ``UpdateReceipt`` per
  update it receives (:func:`sign_update_receipt`), which the participant keeps
  to win an exclusion dispute if the record leaves it out;
* survivor lists: the aggregator signs each SecAgg round's survivor list
  (:func:`sign_survivors`), so any participant can dispute a record that omits
  a survivor of the last round, whose masked input is in the sum.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from chain.client import ContractClient, TxResult
from chain.clients.claim_manager import ClaimRoots
from collab.errors import BadInput, InternalError

CONSENT_TAG = keccak(text="collab-round-consent-v1")
EPSILON_SCALE = 10**6  # ε on-chain in millionths
DELTA_SCALE = 10**18  # δ on-chain in 1e-18 units
UNBOUNDED_EPSILON = 2**64 - 1  # "ε = ∞": a round without a DP budget
RECEIPT_DOMAIN = ("collab-round", "1")


class RoundStatus(enum.IntEnum):
    """``IRoundRegistry.RoundStatus``."""

    NONE = 0
    OPEN = 1
    FIXED = 2
    RECORDED = 3
    SETTLED = 4

    @property
    def label(self) -> str:
        """Lower-case name for the CLI."""
        return self.name.lower()


def epsilon_units(epsilon: float) -> int:
    """ε as the contract stores it (millionths); ``inf`` is the unbounded budget."""
    if math.isinf(epsilon) and epsilon > 0:
        return UNBOUNDED_EPSILON
    if not math.isfinite(epsilon) or epsilon <= 0:
        raise BadInput(f"ε must be > 0 (or inf), got {epsilon}")
    units = round(epsilon * EPSILON_SCALE)
    if not 0 < units < UNBOUNDED_EPSILON:
        raise BadInput(f"ε out of range: {epsilon}")
    return units


def epsilon_value(units: int) -> float:
    """Inverse of :func:`epsilon_units`."""
    return math.inf if units == UNBOUNDED_EPSILON else units / EPSILON_SCALE


def delta_units(delta: float) -> int:
    """δ in 1e-18 units; must lie in [0, 1)."""
    if not 0 <= delta < 1:
        raise BadInput(f"δ must be in [0, 1), got {delta}")
    return round(delta * DELTA_SCALE)


@dataclass(frozen=True)
class RoundConfig:
    """``IRoundRegistry.RoundConfig`` (ε and δ already in contract units)."""

    base_asset_id: int
    rounds: int
    participant_ids: Sequence[int]
    min_participants: int
    epsilon_budget: int
    delta: int
    deadline: int
    creator_share_bps: int
    config_hash: bytes
    aggregator: str

    def as_tuple(self) -> tuple[Any, ...]:
        """ABI argument form."""
        if len(self.config_hash) != 32:
            raise BadInput(f"the config hash is 32 bytes, got {len(self.config_hash)}")
        return (
            int(self.base_asset_id), int(self.rounds), [int(i) for i in self.participant_ids],
            int(self.min_participants), int(self.epsilon_budget), int(self.delta), int(self.deadline),
            int(self.creator_share_bps), bytes(self.config_hash), to_checksum_address(self.aggregator),
        )


@dataclass(frozen=True)
class Round:
    """``IRoundRegistry.Round`` plus its id."""

    id: int
    creator: str
    aggregator: str
    base_asset_id: int
    rounds: int
    min_participants: int
    invited: int
    accepted: int
    epsilon_budget: int
    delta: int
    deadline: int
    creator_share_bps: int
    status: RoundStatus
    total_weight: int
    config_hash: bytes
    job_id: bytes
    claim_id: bytes
    record_root: bytes

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (hex bytes, ε as a number)."""
        return {
            "id": self.id, "creator": self.creator, "aggregator": self.aggregator,
            "base_asset_id": self.base_asset_id, "rounds": self.rounds,
            "min_participants": self.min_participants, "invited": self.invited, "accepted": self.accepted,
            "epsilon_budget": _eps_json(self.epsilon_budget), "delta": self.delta / DELTA_SCALE,
            "deadline": self.deadline, "creator_share_bps": self.creator_share_bps, "status": self.status.label,
            "total_weight": self.total_weight, "config_hash": "0x" + self.config_hash.hex(),
            "job_id": "0x" + self.job_id.hex(), "claim_id": "0x" + self.claim_id.hex(),
            "record_root": "0x" + self.record_root.hex(),
        }


@dataclass(frozen=True)
class Participant:
    """``IRoundRegistry.Participant``."""

    id: int
    account: str
    accepted: bool
    included: bool
    samples: int
    epsilon: int
    dataset_asset_id: int
    update_commitment: bytes
    bls_key_hash: bytes

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (without the key)."""
        return {
            "id": self.id, "account": self.account, "accepted": self.accepted, "included": self.included,
            "weight": self.samples, "epsilon": _eps_json(self.epsilon) if self.included else None,
            "dataset_asset_id": self.dataset_asset_id, "update_commitment": "0x" + self.update_commitment.hex(),
        }


@dataclass(frozen=True)
class AttributionRecord:
    """``IRoundRegistry.AttributionRecord``: what every included participant consents to.

    ``participants`` must be strictly increasing (:meth:`sorted` orders a record).
    """

    round_id: int
    program_root: bytes
    input_root: bytes
    output_root: bytes
    content_hash: bytes
    vault_uri: str
    participants: Sequence[str]
    weights: Sequence[int]
    update_commitments: Sequence[bytes]
    epsilons: Sequence[int]

    def sorted(self) -> AttributionRecord:
        """The same record with its rows ordered by participant address (the contract's order)."""
        rows = sorted(
            zip(self.participants, self.weights, self.update_commitments, self.epsilons, strict=True),
            key=lambda r: int(to_checksum_address(r[0]), 16),
        )
        return AttributionRecord(
            self.round_id, self.program_root, self.input_root, self.output_root, self.content_hash, self.vault_uri,
            tuple(to_checksum_address(r[0]) for r in rows), tuple(int(r[1]) for r in rows),
            tuple(bytes(r[2]) for r in rows), tuple(int(r[3]) for r in rows),
        )

    def as_tuple(self) -> tuple[Any, ...]:
        """ABI argument form."""
        for label, value in (("program root", self.program_root), ("input root", self.input_root),
                             ("output root", self.output_root), ("content hash", self.content_hash)):
            if len(value) != 32:
                raise BadInput(f"the {label} is 32 bytes, got {len(value)}")
        return (
            int(self.round_id), bytes(self.program_root), bytes(self.input_root), bytes(self.output_root),
            bytes(self.content_hash), str(self.vault_uri), [to_checksum_address(a) for a in self.participants],
            [int(w) for w in self.weights], [bytes(c) for c in self.update_commitments], [int(e) for e in self.epsilons],
        )

    def root(self, chain_id: int, claim_manager: str, registry: str) -> bytes:
        """``RoundRegistry.recordRoot``: the 32 bytes every included participant BLS-signs."""
        t = self.as_tuple()
        body = keccak(encode(["address[]", "uint256[]", "bytes32[]", "uint64[]"], list(t[6:10])))
        return keccak(encode(
            ["bytes32", "uint256", "address", "address", "uint256", "bytes32", "bytes32", "bytes32", "bytes32",
             "bytes32", "bytes32"],
            [CONSENT_TAG, int(chain_id), to_checksum_address(claim_manager), to_checksum_address(registry), t[0],
             t[1], t[2], t[3], t[4], keccak(text=self.vault_uri), body],
        ))


def record_from_attribution(
    attribution: dict[str, Any], round_id: int, *, program_root: bytes, input_root: bytes, output_root: bytes,
    content_hash: bytes, vault_uri: str,
) -> AttributionRecord:
    """The on-chain record of a Flower job's ``attribution.json`` (written by ``collab.fl.app.server_app``).

    Included = the participants aggregated in the **last** round (a dropped one
    gets nothing); weight = its attested example count; update commitment =
    :func:`update_chain` of its per-round commitments in round order; ε = its
    final (cumulative) ε from the record, in millionths.
    """
    rounds = attribution.get("rounds") or []
    if not rounds:
        raise BadInput("the attribution record has no completed round")
    last = {str(item["address"]).lower() for item in rounds[-1].get("included", [])}
    if not last:
        raise BadInput("the last round of the attribution record includes nobody")
    commitments = _commitments_by_address(attribution)
    facts = {str(item["address"]).lower(): (int(item["weight"]), float(item["epsilon"]))
             for entry in rounds for item in entry.get("included", [])}
    rows = sorted(last)
    return AttributionRecord(
        int(round_id), bytes(program_root), bytes(input_root), bytes(output_root), bytes(content_hash), vault_uri,
        tuple(to_checksum_address(a) for a in rows), tuple(facts[a][0] for a in rows),
        tuple(update_chain(commitments[a]) for a in rows), tuple(epsilon_units(facts[a][1]) for a in rows),
    ).sorted()


def update_chain(commitments: Sequence[bytes]) -> bytes:
    """A participant's record commitment: h_0 = 0, h_r = keccak(h_{r-1} ‖ c_r) over its per-round commitments.

    Iterated (not one hash over all) so that ``h_{R-1}`` shows a dispute's
    last-round receipt ends the chain (``RoundRegistry.submitProposed``'s
    ``priorChains``) without revealing earlier commitments.
    """
    chain = bytes(32)
    for c in commitments:
        chain = keccak(chain + bytes(c))
    return chain


def prior_chains(attribution: dict[str, Any], record: AttributionRecord) -> list[bytes]:
    """Per record row, :func:`update_chain` of all but its last commitment (``submitProposed``'s argument)."""
    commitments = _commitments_by_address(attribution)
    return [update_chain(commitments.get(str(a).lower(), [])[:-1]) for a in record.participants]


def _commitments_by_address(attribution: dict[str, Any]) -> dict[str, list[bytes]]:
    """Lower-case address -> its update commitments, in round order, from ``attribution.json``."""
    commitments: dict[str, list[bytes]] = {}
    for entry in attribution.get("rounds") or []:
        for item in entry.get("included", []):
            commitments.setdefault(str(item["address"]).lower(), []).append(_bytes(item["update_commitment"]))
    return commitments


def sign_consent(bls_secret: int, root: bytes) -> bytes:
    """A participant's consent: ``G2Basic.Sign`` over the 32-byte record root."""
    from collab import bls

    return bls.sign(bls_secret, bytes(root))


def aggregate_consent(signatures: Sequence[bytes]) -> bytes:
    """The aggregate signature the aggregator submits."""
    from collab import bls

    return bls.aggregate_signatures(signatures)


def _typed(chain_id: int, registry: str, primary: str, fields: list[tuple[str, str]],
           message: dict[str, Any]) -> dict[str, Any]:
    """EIP-712 typed data of one of the aggregator's statements, in the registry's domain."""
    return {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                             {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
            primary: [{"name": n, "type": t} for n, t in fields],
        },
        "primaryType": primary,
        "domain": {"name": RECEIPT_DOMAIN[0], "version": RECEIPT_DOMAIN[1], "chainId": int(chain_id),
                   "verifyingContract": to_checksum_address(registry)},
        "message": message,
    }


def update_receipt_data(chain_id: int, registry: str, round_id: int, participant: str, fl_round: int,
                        update_commitment: bytes, epsilon: int) -> dict[str, Any]:
    """EIP-712 typed data of an ``UpdateReceipt`` (``epsilon``: the cumulative ε reported with the update, in
    :func:`epsilon_units`, so a proposal that misstates it cannot trap a participant that refused it)."""
    return _typed(chain_id, registry, "UpdateReceipt",
                  [("roundId", "uint256"), ("participant", "address"), ("flRound", "uint32"),
                   ("updateCommitment", "bytes32"), ("epsilon", "uint64")],
                  {"roundId": int(round_id), "participant": to_checksum_address(participant),
                   "flRound": int(fl_round), "updateCommitment": bytes(update_commitment), "epsilon": int(epsilon)})


def survivors_data(chain_id: int, registry: str, round_id: int, fl_round: int, survivors: Sequence[str]) -> dict[str, Any]:
    """EIP-712 typed data of a ``SurvivorList`` (the aggregator's endorsement of a SecAgg survivor list)."""
    return _typed(chain_id, registry, "SurvivorList",
                  [("roundId", "uint256"), ("flRound", "uint32"), ("survivors", "address[]")],
                  {"roundId": int(round_id), "flRound": int(fl_round),
                   "survivors": [to_checksum_address(a) for a in survivors]})


def sign_survivors(aggregator: LocalAccount, chain_id: int, registry: str, round_id: int, fl_round: int,
                   survivors: Sequence[str]) -> bytes:
    """The aggregator's endorsement of the survivor list it sends for SecAgg's consistency check."""
    data = survivors_data(chain_id, registry, round_id, fl_round, survivors)
    return bytes(aggregator.sign_message(encode_typed_data(full_message=data)).signature)


def recover_survivors(signature: bytes, chain_id: int, registry: str, round_id: int, fl_round: int,
                      survivors: Sequence[str]) -> str:
    """Who endorsed a survivor list (the ClientApp checks it is the round's aggregator before keeping it)."""
    data = survivors_data(chain_id, registry, round_id, fl_round, survivors)
    return to_checksum_address(Account.recover_message(encode_typed_data(full_message=data), signature=signature))


def sign_update_receipt(aggregator: LocalAccount, chain_id: int, registry: str, round_id: int, participant: str,
                        fl_round: int, update_commitment: bytes, epsilon: int) -> bytes:
    """The aggregator's receipt for one update (65-byte secp256k1 signature)."""
    data = update_receipt_data(chain_id, registry, round_id, participant, fl_round, update_commitment, epsilon)
    return bytes(aggregator.sign_message(encode_typed_data(full_message=data)).signature)


def recover_update_receipt(signature: bytes, chain_id: int, registry: str, round_id: int, participant: str,
                           fl_round: int, update_commitment: bytes, epsilon: int) -> str:
    """Who signed a receipt (a participant checks it before relying on it)."""
    data = update_receipt_data(chain_id, registry, round_id, participant, fl_round, update_commitment, epsilon)
    return to_checksum_address(Account.recover_message(encode_typed_data(full_message=data), signature=signature))


@dataclass(frozen=True)
class RoundCreated:
    """``RoundCreated``."""

    round_id: int
    creator: str
    base_asset_id: int
    job_id: bytes
    aggregator: str
    tx: TxResult | None = field(default=None, compare=False)


@dataclass(frozen=True)
class RecordSubmitted:
    """``RecordSubmitted``."""

    round_id: int
    claim_id: bytes
    record_root: bytes
    included: int
    tx: TxResult | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Proposal:
    """A round's on-chain record proposal (``proposalOf``); ``root`` is zero when there is none."""

    root: bytes
    deadline: int
    tx: TxResult | None = field(default=None, compare=False)

    @property
    def exists(self) -> bool:
        """Whether the aggregator has proposed a record."""
        return self.root != bytes(32)


class RoundRegistryClient(ContractClient):
    """Calls on the deployed ``RoundRegistry``."""

    CONTRACT = "RoundRegistry"

    # ------------------------------------------------------------------ views

    def get_round(self, round_id: int) -> Round:
        """The round; reverts ``UnknownRound``."""
        r = self._call("getRound", int(round_id))
        return Round(
            int(round_id), to_checksum_address(r[0]), to_checksum_address(r[1]), int(r[2]), int(r[3]), int(r[4]),
            int(r[5]), int(r[6]), int(r[7]), int(r[8]), int(r[9]), int(r[10]), RoundStatus(int(r[11])), int(r[12]),
            bytes(r[13]), bytes(r[14]), bytes(r[15]), bytes(r[16]),
        )

    def participants_of(self, round_id: int) -> list[Participant]:
        """Invited participants in invitation order."""
        return [
            Participant(int(p[0]), to_checksum_address(p[1]), bool(p[2]), bool(p[3]), int(p[4]), int(p[5]), int(p[6]),
                        bytes(p[7]), bytes(p[8]))
            for p in self._call("participantsOf", int(round_id))
        ]

    def included_of(self, round_id: int) -> list[str]:
        """Accounts the record includes."""
        return [to_checksum_address(a) for a in self._call("includedOf", int(round_id))]

    def round_of_claim(self, claim_id: bytes) -> int:
        """The round a claim belongs to (0: none)."""
        return int(self._call("roundOfClaim", bytes(claim_id)))

    def job_id_of(self, round_id: int) -> bytes:
        """The job id the round's claim uses."""
        return bytes(self._call("jobIdOf", int(round_id)))

    def round_count(self) -> int:
        """Rounds opened so far."""
        return int(self._call("roundCount"))

    def is_participant(self, job_id: bytes, account: str) -> bool:
        """``IJobParticipants.isParticipant``."""
        return bool(self._call("isParticipant", bytes(job_id), to_checksum_address(account)))

    def claim_manager(self) -> str:
        """The ClaimManager this registry settles through."""
        return to_checksum_address(self._call("CLAIMS"))

    def consent_keys(self, round_id: int, accounts: Sequence[str] | None = None) -> list[bytes]:
        """Consent keys snapshotted at acceptance (from ``ParticipantAccepted``), for ``accounts`` in order (default: all)."""
        topic = "0x" + int(round_id).to_bytes(32, "big").hex()
        keys = {to_checksum_address(e.args["account"]): _bytes(e.args["blsPubkey"])
                for e in self._events("ParticipantAccepted", topics=[topic])}
        if accounts is None:
            return list(keys.values())
        missing = [a for a in accounts if to_checksum_address(a) not in keys]
        if missing:
            raise BadInput(f"{', '.join(missing)} did not accept round {round_id}")
        return [keys[to_checksum_address(a)] for a in accounts]

    def _keys(self, record: AttributionRecord, pubkeys: Sequence[bytes] | None) -> list[bytes]:
        if pubkeys is not None:
            return [bytes(k) for k in pubkeys]
        return self.consent_keys(record.round_id, record.participants)

    def record_root(self, record: AttributionRecord) -> bytes:
        """The contract's root of ``record`` (equals :meth:`AttributionRecord.root`)."""
        return bytes(self._call("recordRoot", record.as_tuple()))

    def local_root(self, record: AttributionRecord) -> bytes:
        """:meth:`AttributionRecord.root` bound to this deployment (no call)."""
        return record.root(int(self.w3.eth.chain_id), self.claim_manager(), self.address)

    def verify_consent(self, record: AttributionRecord, signature: bytes, pubkeys: Sequence[bytes] | None = None) -> bytes:
        """Reverts (e.g. ``InvalidConsentSignature``, ``WeightMismatch``) unless the consent holds; returns the root.

        ``pubkeys`` default to the keys the participants accepted with.
        """
        return bytes(self._call("verifyConsent", record.as_tuple(), self._keys(record, pubkeys), bytes(signature)))

    def consent_gas(self, record: AttributionRecord, signature: bytes, pubkeys: Sequence[bytes] | None = None) -> int:
        """Gas of the consent check alone (record and key checks, key aggregation, hash-to-curve, pairing)."""
        fn = self.contract.functions.verifyConsent(record.as_tuple(), self._keys(record, pubkeys), bytes(signature))
        return int(fn.estimate_gas({"from": self._me()})) - 21_000

    def proposal_of(self, round_id: int) -> Proposal:
        """The round's current on-chain proposal."""
        root, deadline = self._call("proposalOf", int(round_id))
        return Proposal(bytes(root), int(deadline))

    def consent_of(self, round_id: int, account: str) -> bytes:
        """The proposal root ``account`` consented to on chain (zero bytes: none)."""
        return bytes(self._call("consentOf", int(round_id), to_checksum_address(account)))

    def posted_consents(self, round_id: int, root: bytes) -> dict[str, bytes]:
        """Consents posted to the proposal ``root``: account -> BLS signature (from ``ConsentPosted``)."""
        topic = "0x" + int(round_id).to_bytes(32, "big").hex()
        return {to_checksum_address(e.args["account"]): _bytes(e.args["signature"])
                for e in self._events("ConsentPosted", topics=[topic]) if _bytes(e.args["recordRoot"]) == bytes(root)}

    def receipt_digest(self, round_id: int, participant: str, fl_round: int, update_commitment: bytes,
                       epsilon: int) -> bytes:
        """The EIP-712 digest of an update receipt."""
        return bytes(self._call("receiptDigest", int(round_id), to_checksum_address(participant), int(fl_round),
                                bytes(update_commitment), int(epsilon)))

    def survivors_digest(self, round_id: int, fl_round: int, survivors: Sequence[str]) -> bytes:
        """The EIP-712 digest of a survivor-list endorsement."""
        return bytes(self._call("survivorsDigest", int(round_id), int(fl_round),
                                [to_checksum_address(a) for a in survivors]))

    def omitted_survivor(self, round_id: int, survivors: Sequence[str]) -> str | None:
        """The first survivor the round's record omits (not by its own refusal), or None."""
        found = to_checksum_address(self._call("omittedSurvivor", int(round_id), [to_checksum_address(a) for a in survivors]))
        return None if int(found, 16) == 0 else found

    def settled_asset(self, claim_id: bytes) -> int:
        """The asset registered at the claim's settlement (0 before)."""
        return int(self._call("settledAsset", bytes(claim_id)))

    def share_split(self, supply: int, creator_bps: int, weights: Sequence[int]) -> tuple[int, list[int]]:
        """The contract's exact Share split (creator amount, per-contributor amounts)."""
        creator, amounts = self._call("shareSplit", int(supply), int(creator_bps), [int(w) for w in weights])
        return int(creator), [int(a) for a in amounts]

    # ------------------------------------------------------------------ transactions

    def create_round(self, config: RoundConfig) -> RoundCreated:
        """Open a round over a base asset the signer owns."""
        tx = self._transact("createRound", config.as_tuple())
        e = _one(tx, "RoundCreated").args
        return RoundCreated(int(e["roundId"]), to_checksum_address(e["creator"]), int(e["baseAssetId"]),
                            _bytes(e["jobId"]), to_checksum_address(e["aggregator"]), tx)

    def accept(self, round_id: int, samples: int, dataset_asset_id: int) -> TxResult:
        """Accept an invitation with a sample count and a dataset asset."""
        return self._transact("accept", int(round_id), int(samples), int(dataset_asset_id))

    def fix(self, round_id: int) -> TxResult:
        """Fix the participant set and weights."""
        return self._transact("fix", int(round_id))

    def submit_record(
        self, record: AttributionRecord, signature: bytes, pubkeys: Sequence[bytes] | None = None
    ) -> RecordSubmitted:
        """Submit the consented record (aggregator only) before posting the claim; keys default to the accepted ones."""
        tx = self._transact("submitRecord", record.as_tuple(), self._keys(record, pubkeys), bytes(signature))
        e = _one(tx, "RecordSubmitted").args
        return RecordSubmitted(int(e["roundId"]), _bytes(e["claimId"]), _bytes(e["recordRoot"]), int(e["included"]), tx)

    def propose_record(self, record: AttributionRecord) -> Proposal:
        """Propose ``record`` on chain (aggregator only) when some participant withheld its off-chain consent."""
        tx = self._transact("proposeRecord", record.as_tuple())
        e = _one(tx, "RecordProposed").args
        return Proposal(_bytes(e["recordRoot"]), int(e["deadline"]), tx)

    def consent(self, round_id: int, account: str, signature: bytes, pubkey: bytes | None = None) -> TxResult:
        """Post ``account``'s BLS consent to the current proposal (any signer may relay it)."""
        key = pubkey if pubkey is not None else self.consent_keys(round_id, [account])[0]
        return self._transact("consent", int(round_id), to_checksum_address(account), bytes(key), bytes(signature))

    def submit_proposed(self, proposal: AttributionRecord, priors: Sequence[bytes]) -> RecordSubmitted:
        """Record the proposal with the participants who consented (all have, or the deadline passed).

        ``priors``: per row, the update chain before its last commitment (:func:`prior_chains`).
        """
        tx = self._transact("submitProposed", proposal.as_tuple(), [bytes(c) for c in priors])
        e = _one(tx, "RecordSubmitted").args
        return RecordSubmitted(int(e["roundId"]), _bytes(e["claimId"]), _bytes(e["recordRoot"]), int(e["included"]), tx)

    def dispute_exclusion(self, round_id: int, fl_round: int, update_commitment: bytes, epsilon: int,
                          signature: bytes) -> TxResult:
        """Reject the round's pending claim with the aggregator's receipt for an update the record left out
        (``epsilon``: the receipt's, in :func:`epsilon_units`)."""
        return self._transact("disputeExclusion", int(round_id), int(fl_round), bytes(update_commitment), int(epsilon),
                              bytes(signature))

    def dispute_omission(self, round_id: int, fl_round: int, survivors: Sequence[str], signature: bytes) -> TxResult:
        """Reject the round's pending claim with the aggregator's last-round survivor list naming an omitted survivor."""
        return self._transact("disputeOmission", int(round_id), int(fl_round),
                              [to_checksum_address(a) for a in survivors], bytes(signature))

    def settle(self, claim_id: bytes, roots: ClaimRoots) -> TxResult:
        """Retry the settlement of a finalized claim whose hook failed."""
        return self._transact("settle", bytes(claim_id), roots.as_tuple())

    def _me(self) -> str:
        if self.account is None:
            raise InternalError("this call needs an account")
        return str(self.account.address)


def _one(tx: TxResult, name: str) -> Any:
    events = tx.events_named(name)
    if not events:
        raise InternalError(f"RoundRegistry transaction {tx.tx_hash} emitted no {name}")
    return events[0]


def _bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    text = str(value)
    return bytes.fromhex(text[2:] if text.startswith("0x") else text)


def _eps_json(units: int) -> float | str:
    value = epsilon_value(units)
    return "inf" if math.isinf(value) else value
