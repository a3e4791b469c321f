"""RoundRegistry on a real anvil: opening, accepting and fixing; BLS consent; exclusion disputes;
settlement through a real ClaimManager claim (asset, Receipts, Shares by weight only after finalization).

The claim is a real fraud-proof claim (the ADD-chain program of test_claim_manager with its VM
trace) posted under the round's job id with the registry as settlement hook and participants source.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from py_ecc.optimized_bls12_381 import add, neg
from web3 import Web3

from chain.clients.asset_registry import AssetInput, AssetKind, AssetRegistryClient
from chain.clients.bisection_game import BisectionGameClient
from chain.clients.claim_manager import Audience, ClaimManagerClient, ClaimStatus
from chain.clients.data_availability import DataAvailabilityClient
from chain.clients.identity_registry import IdentityRegistryClient, Keys
from chain.clients.receipts import ContributionKind, ReceiptsClient
from chain.clients.round_registry import (
    AttributionRecord,
    RoundConfig,
    RoundRegistryClient,
    RoundStatus,
    aggregate_consent,
    epsilon_units,
    record_from_attribution,
    sign_consent,
    sign_survivors,
    sign_update_receipt,
    prior_chains,
    update_chain,
)
from chain.clients.shares import SharesClient
from chain.deployment import Deployment
from chain.errors import revert_class
from collab import bls
from collab.errors import BadInput, Unauthorized
from collab.fraudproof.blobserver import BlobServer, fetch
from collab.fraudproof.store import Store
from collab.fraudproof.vm import Value
from collab.fraudproof.agents import ClaimerAgent
from collab.fraudproof.trace import Trace, build_trace
from tests.test_claim_manager import add_chain_program

BASE_ROYALTY_BPS = 500
CREATOR_BPS = 2_000
SAMPLES = (120, 300, 181)  # weights of participants 0..2
GAS: dict[str, int] = {}
N_EXTRA = 5  # with the 3 participants: 8 contributors, more than the hook's 1.5M gas can settle


@dataclass
class Member:
    """A funded account with a Sahara ID and its BLS secret."""

    account: LocalAccount
    id: int
    bls_secret: int
    dataset: int = 0

    @property
    def address(self) -> str:
        return str(self.account.address)


@dataclass
class RoundEnv:
    w3: Web3
    deployment: Deployment
    creator: Member
    aggregator: Member
    participants: list[Member]
    outsider: Member
    extra: list[Member]
    base_asset: int
    trace: Trace
    inputs: dict[str, Value]

    def registry(self, who: Member | None = None) -> RoundRegistryClient:
        return RoundRegistryClient.from_deployment(self.deployment, self.w3, (who or self.creator).account)

    def manager(self, who: Member | None = None) -> ClaimManagerClient:
        return ClaimManagerClient.from_deployment(self.deployment, self.w3, (who or self.aggregator).account)

    def client(self, cls: Any, who: Member | None = None) -> Any:
        return cls.from_deployment(self.deployment, self.w3, (who or self.creator).account)

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def config(self, **changes: Any) -> RoundConfig:
        base = RoundConfig(
            base_asset_id=self.base_asset, rounds=2, participant_ids=[p.id for p in self.participants],
            min_participants=2, epsilon_budget=epsilon_units(8.0), delta=10**13, deadline=self.now() + 3_600,
            creator_share_bps=CREATOR_BPS, config_hash=Web3.keccak(text="lora r=4 q,v; bbc-news"),
            aggregator=self.aggregator.address,
        )
        return dataclasses.replace(base, **changes)

    def open_fixed(self, members: list[Member] | None = None, **changes: Any) -> int:
        """A round where ``members`` (default: all participants) accepted, fixed by the creator."""
        round_id = self.registry().create_round(self.config(**changes)).round_id
        for i, m in enumerate(members if members is not None else self.participants):
            self.registry(m).accept(round_id, SAMPLES[self.participants.index(m)], m.dataset)
        self.registry().fix(round_id)
        return round_id

    def record(self, round_id: int, members: list[Member], **changes: Any) -> AttributionRecord:
        t = self.trace
        rec = AttributionRecord(
            round_id=round_id, program_root=t.program.root, input_root=t.input_root, output_root=t.output_root,
            content_hash=Web3.keccak(text=f"adapter of round {round_id}"), vault_uri=f"vault://round-{round_id}",
            participants=[m.address for m in members], weights=[SAMPLES[self.participants.index(m)] for m in members],
            update_commitments=[update_chain([prior_update(m), last_update(m)]) for m in members],
            epsilons=[SPENT] * len(members),
        ).sorted()
        return dataclasses.replace(rec, **changes)

    def consent(self, record: AttributionRecord, signers: list[Member]) -> bytes:
        root = self.registry().local_root(record)
        return aggregate_consent([sign_consent(m.bls_secret, root) for m in signers])

    def post(self, round_id: int) -> bytes:
        registry = self.registry()
        acct = self.aggregator.account
        agent = ClaimerAgent(
            self.manager(), self.client(BisectionGameClient, self.aggregator),
            self.client(DataAvailabilityClient, self.aggregator), self.trace, job_id=registry.job_id_of(round_id),
        )
        claim = dataclasses.replace(
            agent.claim_input(audience=Audience.PARTICIPANTS, settlement_hook=registry.address),
            participant_registry=registry.address,
        )
        return ClaimManagerClient.from_deployment(self.deployment, self.w3, acct).post_claim(claim).claim_id


SPENT = epsilon_units(7.5)  # every participant's ε in the test records (what its receipts state)


def prior_update(m: Member) -> bytes:
    return Web3.keccak(text=f"round-1 update {m.address}")


def last_update(m: Member) -> bytes:
    """The commitment of ``m``'s last-round update (what the aggregator's receipt names)."""
    return Web3.keccak(text=f"round-2 update {m.address}")


def priors(env: RoundEnv, record: AttributionRecord) -> list[bytes]:
    by_address = {m.address: m for m in env.participants}
    return [update_chain([prior_update(by_address[a])]) for a in record.participants]


def _member(w3: Web3, deployment: Deployment, label: str, role: str = "human") -> Member:
    acct: LocalAccount = Account.from_key(Web3.keccak(text=f"collab round tests: {label}"))
    w3.provider.make_request("anvil_setBalance", [acct.address, hex(10**22)])  # type: ignore[arg-type]
    secret = bls.keygen(f"round-{label}".encode())
    identity = IdentityRegistryClient.from_deployment(deployment, w3, acct)
    ident = identity.id_of(acct.address) or identity.register(
        label, role, identity.keys_for(secret, b"\x0c" * 32, b"\x0d" * 32)).id
    return Member(acct, ident, secret)


@pytest.fixture(scope="module")
def round_env(w3: Web3, deployment: Deployment, deployer: LocalAccount) -> RoundEnv:
    if "RoundRegistry" not in deployment.contracts:
        pytest.skip("RoundRegistry is not deployed")
    creator = _member(w3, deployment, "creator")
    aggregator = _member(w3, deployment, "aggregator", "node")
    IdentityRegistryClient.from_deployment(deployment, w3, deployer).grant_aggregator(aggregator.id)
    participants = [_member(w3, deployment, f"participant-{i}") for i in range(3)]
    outsider = _member(w3, deployment, "outsider")
    extra = [_member(w3, deployment, f"extra-{i}") for i in range(N_EXTRA)]
    assets = AssetRegistryClient.from_deployment(deployment, w3, creator.account)
    base = assets.register(AssetInput(AssetKind.MODEL, Web3.keccak(text="minilm"), derivative_royalty_bps=BASE_ROYALTY_BPS))
    for p in [*participants, outsider, *extra]:
        p.dataset = AssetRegistryClient.from_deployment(deployment, w3, p.account).register(
            AssetInput(AssetKind.DATASET, Web3.keccak(text=f"data of {p.address}"))).asset_id
    program, inputs = add_chain_program()
    return RoundEnv(w3, deployment, creator, aggregator, participants, outsider, extra, base.asset_id,
                    build_trace(program, inputs), inputs)


@pytest.fixture
def env(round_env: RoundEnv, chain_snapshot: str) -> RoundEnv:
    return round_env


# --------------------------------------------------------------------------- opening, accepting, fixing


def test_round_opens_participants_accept_and_weights_are_fixed_before_training(env: RoundEnv) -> None:
    registry = env.registry()
    created = registry.create_round(env.config())
    rid = created.round_id
    assert created.job_id == registry.job_id_of(rid) and registry.get_round(rid).status == RoundStatus.OPEN
    for m, n in zip(env.participants, SAMPLES, strict=True):
        env.registry(m).accept(rid, n, m.dataset)
    with pytest.raises(revert_class("AlreadyAccepted")):
        env.registry(env.participants[0]).accept(rid, 5, env.participants[0].dataset)
    with pytest.raises(revert_class("NotRoundCreator")):
        env.registry(env.participants[0]).fix(rid)
    registry.fix(rid)
    r = registry.get_round(rid)
    assert (r.status, r.accepted, r.total_weight) == (RoundStatus.FIXED, 3, sum(SAMPLES))
    parts = registry.participants_of(rid)
    assert [p.samples for p in parts] == list(SAMPLES) and all(p.accepted and not p.included for p in parts)
    assert parts[0].bls_key_hash == Web3.keccak(bls.sk_to_pk(env.participants[0].bls_secret))
    assert registry.consent_keys(rid, [env.participants[1].address]) == [bls.sk_to_pk(env.participants[1].bls_secret)]
    # INVARIANT: the set and weights cannot move once fixed.
    with pytest.raises(revert_class("WrongRoundStatus")):
        env.registry(env.participants[0]).accept(rid, 10_000, env.participants[0].dataset)
    assert registry.is_participant(r.job_id, env.participants[1].address)
    assert not registry.is_participant(r.job_id, env.outsider.address)


def test_bad_round_input_gets_named_errors(env: RoundEnv, time_travel: Callable[[int], int]) -> None:
    registry = env.registry()
    with pytest.raises(revert_class("UnknownRound")):
        registry.get_round(999)
    with pytest.raises(revert_class("UnknownRound")):
        env.registry(env.participants[0]).accept(999, 1, env.participants[0].dataset)
    with pytest.raises(revert_class("NotBaseAssetOwner")):
        env.registry(env.outsider).create_round(env.config())
    with pytest.raises(revert_class("NotAggregator")):
        registry.create_round(env.config(aggregator=env.outsider.address))
    with pytest.raises(revert_class("InvalidRoundConfig")):
        registry.create_round(env.config(min_participants=4))
    with pytest.raises(revert_class("InvalidRoundConfig")):
        registry.create_round(env.config(deadline=env.now() - 1))
    with pytest.raises(revert_class("InvalidParticipant")):
        registry.create_round(env.config(participant_ids=[env.participants[0].id, env.participants[0].id]))
    rid = registry.create_round(env.config()).round_id
    with pytest.raises(revert_class("NotInvited")):
        env.registry(env.outsider).accept(rid, 10, env.outsider.dataset)
    p0, p1 = env.participants[0], env.participants[1]
    with pytest.raises(revert_class("InvalidDataset")):
        env.registry(p0).accept(rid, 10, p1.dataset)  # someone else's data
    with pytest.raises(revert_class("InvalidDataset")):
        env.registry(p0).accept(rid, 10, env.base_asset)  # not a dataset
    with pytest.raises(revert_class("ZeroSamples")):
        env.registry(p0).accept(rid, 0, p0.dataset)
    env.registry(p0).accept(rid, 10, p0.dataset)
    with pytest.raises(revert_class("TooFewParticipants")):
        registry.fix(rid)
    time_travel(3_601)
    with pytest.raises(revert_class("DeadlinePassed")):
        env.registry(p1).accept(rid, 10, p1.dataset)
    with pytest.raises(revert_class("TooFewParticipants")):
        env.registry(env.outsider).fix(rid)  # anyone may fix after the deadline, but N=2 never accepted


# --------------------------------------------------------------------------- consent and settlement


def test_consent_of_every_participant_settles_receipts_and_shares_only_after_finalization(
    env: RoundEnv, time_travel: Callable[[int], int]
) -> None:
    registry = env.registry(env.aggregator)
    rid = env.open_fixed()
    record = env.record(rid, env.participants)
    assert registry.record_root(record) == registry.local_root(record)
    signature = env.consent(record, env.participants)
    GAS["bls consent check (3 signers)"] = registry.consent_gas(record, signature)
    submitted = registry.submit_record(record, signature)
    GAS["submitRecord (3 included)"] = submitted.tx.gas_used if submitted.tx else 0
    claim_id = env.post(rid)
    assert claim_id == submitted.claim_id and registry.round_of_claim(claim_id) == rid
    with pytest.raises(revert_class("WrongRoundStatus")):
        registry.submit_record(record, signature)  # one record per round

    receipts = env.client(ReceiptsClient)
    assets = env.client(AssetRegistryClient)
    before_receipts, before_assets = receipts.receipt_count(), assets.asset_count()
    with pytest.raises(revert_class("ClaimNotFinalized")):
        registry.settle(claim_id, env.manager().roots_of(claim_id))
    assert (receipts.receipt_count(), assets.asset_count()) == (before_receipts, before_assets)  # nothing before finalization

    time_travel(env.manager().params_of(claim_id).challenge_window + 1)
    tx = env.manager(env.outsider).finalize(claim_id)
    GAS["finalize with settlement hook (3 contributors)"] = tx.gas_used
    assert not tx.events_named("SettlementHookFailed")
    asset_id = registry.settled_asset(claim_id)
    assert asset_id == before_assets + 1 and registry.get_round(rid).status == RoundStatus.SETTLED
    asset = assets.asset(asset_id)
    assert asset.owner == env.creator.address and asset.kind == AssetKind.ADAPTER
    assert asset.commitment_root == env.trace.output_root and asset.content_hash == record.content_hash
    assert assets.parents_of(asset_id) == [(env.base_asset, BASE_ROYALTY_BPS)]

    shares = env.client(SharesClient)
    supply = shares.total_supply(asset_id)
    creator_amount, amounts = registry.share_split(supply, CREATOR_BPS, record.weights)
    rest = supply - supply * CREATOR_BPS // 10_000
    assert amounts == [rest * w // sum(record.weights) for w in record.weights]
    assert creator_amount + sum(amounts) == supply == 1_000_000
    assert shares.balance_of(env.creator.address, asset_id) == creator_amount
    for addr, weight, amount in zip(record.participants, record.weights, amounts, strict=True):
        assert shares.balance_of(addr, asset_id) == amount
        [token] = receipts.receipts_of(addr)
        r = receipts.receipt(token)
        assert (r.asset_id, r.claim_id, r.weight, r.kind) == (asset_id, claim_id, weight, ContributionKind.TRAINING_UPDATE)
    with pytest.raises(revert_class("AlreadySettled")):
        registry.settle(claim_id, env.manager().roots_of(claim_id))


def test_consent_missing_a_participant_or_with_a_changed_weight_is_rejected(env: RoundEnv) -> None:
    registry = env.registry(env.aggregator)
    rid = env.open_fixed()
    record = env.record(rid, env.participants)
    with pytest.raises(revert_class("InvalidConsentSignature")):
        registry.submit_record(record, env.consent(record, env.participants[:2]))  # one signature missing
    heavier = dataclasses.replace(record, weights=[record.weights[0] * 10, *record.weights[1:]])
    with pytest.raises(revert_class("WeightMismatch")):
        registry.submit_record(heavier, env.consent(heavier, env.participants))  # even if everyone signed it
    with pytest.raises(revert_class("InvalidConsentSignature")):
        other = dataclasses.replace(record, output_root=Web3.keccak(text="another output"))
        registry.submit_record(other, env.consent(record, env.participants))  # consent to a different record
    with pytest.raises(revert_class("NotIncludable")):
        outsider = dataclasses.replace(record, participants=[*record.participants[:2], env.outsider.address])
        keys = [*registry.consent_keys(rid, record.participants[:2]), bls.sk_to_pk(env.outsider.bls_secret)]
        registry.submit_record(outsider, env.consent(record, env.participants), keys)
    with pytest.raises(revert_class("EpsilonOverBudget")):
        spent = dataclasses.replace(record, epsilons=[epsilon_units(9.0)] * 3)
        registry.submit_record(spent, env.consent(spent, env.participants))
    with pytest.raises(revert_class("WrongConsentKey")):  # a key other than the one accepted with
        keys = registry.consent_keys(rid, record.participants)
        registry.submit_record(record, env.consent(record, env.participants),
                               [bls.sk_to_pk(bls.keygen(b"someone else")), *keys[1:]])
    with pytest.raises(revert_class("NotRoundAggregator")):
        env.registry(env.participants[0]).submit_record(record, env.consent(record, env.participants))
    assert registry.get_round(rid).status == RoundStatus.FIXED
    env.post(rid)  # INVARIANT: the record must precede its claim
    with pytest.raises(revert_class("ClaimAlreadyPosted")):
        registry.submit_record(record, env.consent(record, env.participants))
    assert registry.get_round(rid).status == RoundStatus.FIXED


def test_rogue_key_needs_a_proof_of_possession_it_cannot_make(env: RoundEnv, w3: Web3) -> None:
    # The attacker picks pk_rogue = pk_att − pk_victim: alone it could then sign for "both" (same message).
    victim = env.participants[0]
    att_secret = bls.keygen(b"rogue attacker")
    rogue_point = add(bls.decode_g1(bls.sk_to_pk(att_secret)),
                      neg(bls.decode_g1(bls.sk_to_pk(victim.bls_secret))))
    rogue_pk = bls.encode_g1(rogue_point)
    message = b"\x11" * 32
    forged = bls.sign(att_secret, message)
    assert bls.verify_aggregate([bls.sk_to_pk(victim.bls_secret), rogue_pk], message, forged)  # why PoP matters
    attacker: LocalAccount = Account.from_key(Web3.keccak(text="collab round tests: rogue"))
    w3.provider.make_request("anvil_setBalance", [attacker.address, hex(10**21)])  # type: ignore[arg-type]
    identity = IdentityRegistryClient.from_deployment(env.deployment, w3, attacker)
    pop = bls.prove_possession(att_secret, int(w3.eth.chain_id), identity.address, attacker.address)  # its own key's
    with pytest.raises(revert_class("InvalidProofOfPossession")):
        identity.register("rogue", "human", Keys(b"\x0c" * 32, b"\x0d" * 32, rogue_pk, pop))


# --------------------------------------------------------------------------- exclusion


def test_participant_left_out_despite_its_receipt_wins_the_exclusion_dispute(
    env: RoundEnv, time_travel: Callable[[int], int]
) -> None:
    registry = env.registry(env.aggregator)
    rid = env.open_fixed()
    kept, dropped = env.participants[:2], env.participants[2]
    record = env.record(rid, kept)  # N = 2: a valid record that silently drops participant 2
    registry.submit_record(record, env.consent(record, kept))
    claim_id = env.post(rid)
    chain_id = int(env.w3.eth.chain_id)
    commitment = Web3.keccak(text="dropped update")
    aggregator = env.aggregator.account
    receipt = sign_update_receipt(aggregator, chain_id, registry.address, rid, dropped.address, 2, commitment, SPENT)
    assert registry.receipt_digest(rid, dropped.address, 2, commitment, SPENT)  # the contract's digest exists

    mine = env.registry(dropped)
    forged = sign_update_receipt(dropped.account, chain_id, registry.address, rid, dropped.address, 2, commitment, SPENT)
    with pytest.raises(revert_class("BadReceiptSignature")):
        mine.dispute_exclusion(rid, 2, commitment, SPENT, forged)
    early = sign_update_receipt(aggregator, chain_id, registry.address, rid, dropped.address, 1, commitment, SPENT)
    with pytest.raises(revert_class("ReceiptNotFinalRound")):
        mine.dispute_exclusion(rid, 1, commitment, SPENT, early)
    with pytest.raises(revert_class("NotExcluded")):
        env.registry(kept[0]).dispute_exclusion(
            rid, 2, commitment, SPENT,
            sign_update_receipt(aggregator, chain_id, registry.address, rid, kept[0].address, 2, commitment, SPENT))
    with pytest.raises(revert_class("NotParticipant")):
        env.registry(env.outsider).dispute_exclusion(rid, 2, commitment, SPENT, receipt)

    manager = env.manager()
    params = manager.params_of(claim_id)
    tx = mine.dispute_exclusion(rid, 2, commitment, SPENT, receipt)
    GAS["disputeExclusion"] = tx.gas_used
    assert tx.events_named("ClaimRejectedByRegistry") and tx.events_named("ExclusionDisputeWon")
    assert manager.claim_status(claim_id) == ClaimStatus.REJECTED
    assert manager.credit_of(dropped.address) == params.claimer_bond * (10_000 - params.burn_bps) // 10_000
    assert manager.credit_of(env.aggregator.address) == 0  # no bond back to the cheater
    time_travel(params.challenge_window + 1)
    with pytest.raises(revert_class("ClaimNotPending")):
        manager.finalize(claim_id)
    with pytest.raises(revert_class("ClaimNotFinalized")):
        registry.settle(claim_id, manager.roots_of(claim_id))
    assert env.client(ReceiptsClient).receipts_of(kept[0].address) == []  # a rejected claim mints nothing


def test_exclusion_dispute_after_the_window_is_refused(env: RoundEnv, time_travel: Callable[[int], int]) -> None:
    registry = env.registry(env.aggregator)
    rid = env.open_fixed()
    kept, dropped = env.participants[:2], env.participants[2]
    record = env.record(rid, kept)
    registry.submit_record(record, env.consent(record, kept))
    claim_id = env.post(rid)
    commitment = Web3.keccak(text="late")
    receipt = sign_update_receipt(env.aggregator.account, int(env.w3.eth.chain_id), registry.address, rid,
                                  dropped.address, 2, commitment, SPENT)
    time_travel(env.manager().params_of(claim_id).challenge_window + 1)
    with pytest.raises(revert_class("ChallengeWindowClosed")):
        env.registry(dropped).dispute_exclusion(rid, 2, commitment, SPENT, receipt)


# --------------------------------------------------------------------------- consent veto: on-chain proposals


def _receipt(env: RoundEnv, member: Member, rid: int, commitment: bytes, epsilon: int = SPENT) -> bytes:
    registry = env.registry()
    return sign_update_receipt(env.aggregator.account, int(env.w3.eth.chain_id), registry.address, rid,
                               member.address, 2, commitment, epsilon)


def test_withheld_consent_leaves_the_refuser_out_without_a_dispute(
    env: RoundEnv, time_travel: Callable[[int], int]
) -> None:
    """The veto: a participant whose update is in the sum refuses to consent. Proposed on chain, the
    record settles with those who consented in time, and the refuser's receipt wins it nothing."""
    registry = env.registry(env.aggregator)
    rid = env.open_fixed()
    record = env.record(rid, env.participants)  # every update is in the aggregate
    refuser = next(m for m in env.participants if m.address == record.participants[2])
    agreeing = [m for m in env.participants if m is not refuser]
    with pytest.raises(revert_class("NotRoundAggregator")):
        env.registry(agreeing[0]).propose_record(record)
    with pytest.raises(revert_class("NotProposed")):
        registry.consent(rid, agreeing[0].address, sign_consent(agreeing[0].bls_secret, b"\x01" * 32))
    proposal = registry.propose_record(record)
    GAS["proposeRecord (3 proposed)"] = proposal.tx.gas_used if proposal.tx else 0
    assert proposal.root == registry.local_root(record) == registry.proposal_of(rid).root
    assert proposal.deadline == env.now() + registry.contract.functions.CONSENT_PERIOD().call()

    mine = env.registry(agreeing[0])
    with pytest.raises(revert_class("InvalidConsentSignature")):  # a signature over another root
        mine.consent(rid, agreeing[0].address, sign_consent(agreeing[0].bls_secret, b"\x02" * 32))
    with pytest.raises(revert_class("InvalidConsentSignature")):  # someone else's signature
        mine.consent(rid, agreeing[0].address, sign_consent(agreeing[1].bls_secret, proposal.root))
    with pytest.raises(revert_class("WrongConsentKey")):
        mine.consent(rid, agreeing[0].address, sign_consent(agreeing[0].bls_secret, proposal.root),
                     pubkey=registry.consent_keys(rid, [agreeing[1].address])[0])
    with pytest.raises(revert_class("NotProposed")):
        mine.consent(rid, env.outsider.address, sign_consent(env.outsider.bls_secret, proposal.root),
                     pubkey=registry.consent_keys(rid, [agreeing[0].address])[0])
    tx = mine.consent(rid, agreeing[0].address, sign_consent(agreeing[0].bls_secret, proposal.root))
    GAS["consent (one participant, verified)"] = tx.gas_used
    # The aggregator relays the other's off-chain signature: the signature, not the sender, is the consent.
    registry.consent(rid, agreeing[1].address, sign_consent(agreeing[1].bls_secret, proposal.root))
    assert registry.consent_of(rid, agreeing[1].address) == proposal.root
    assert registry.consent_of(rid, refuser.address) == bytes(32)
    assert set(registry.posted_consents(rid, proposal.root)) == {m.address for m in agreeing}

    with pytest.raises(revert_class("ConsentStillOpen")):  # the refuser still has time
        registry.submit_proposed(record, priors(env, record))
    time_travel(proposal.deadline - env.now())
    with pytest.raises(revert_class("ConsentClosed")):
        env.registry(refuser).consent(rid, refuser.address, sign_consent(refuser.bls_secret, proposal.root))
    with pytest.raises(revert_class("NotTheProposal")):
        registry.submit_proposed(dataclasses.replace(record, vault_uri="vault://elsewhere"), priors(env, record))
    submitted = registry.submit_proposed(record, priors(env, record))
    GAS["submitProposed (2 of 3 consented)"] = submitted.tx.gas_used if submitted.tx else 0
    assert submitted.included == 2 and submitted.record_root == proposal.root
    assert set(registry.included_of(rid)) == {m.address for m in agreeing}

    claim_id = env.post(rid)
    assert claim_id == submitted.claim_id
    own = last_update(refuser)  # the proposal's chain for it ends with this update
    with pytest.raises(revert_class("ConsentWithheld")):
        env.registry(refuser).dispute_exclusion(rid, 2, own, SPENT, _receipt(env, refuser, rid, own))
    time_travel(env.manager().params_of(claim_id).challenge_window + 1)
    env.manager(env.outsider).finalize(claim_id)
    receipts = env.client(ReceiptsClient)
    assert receipts.receipts_of(refuser.address) == []
    assert all(len(receipts.receipts_of(m.address)) == 1 for m in agreeing)


def _recorded_without(env: RoundEnv, time_travel: Callable[[int], int], row: int) -> tuple[int, Member]:
    """A fixed round whose record (everyone) was proposed, consented by all but the participant of ``row``,
    and recorded after the deadline; (round id, the refuser)."""
    registry = env.registry(env.aggregator)
    rid = env.open_fixed()
    record = env.record(rid, env.participants)
    refuser = next(m for m in env.participants if m.address == record.participants[row])
    proposal = registry.propose_record(record)
    for m in env.participants:
        if m is not refuser:
            registry.consent(rid, m.address, sign_consent(m.bls_secret, proposal.root))
    time_travel(proposal.deadline - env.now())
    registry.submit_proposed(record, priors(env, record))
    return rid, refuser


def test_a_participant_proposed_with_the_wrong_update_may_refuse_and_still_dispute(env: RoundEnv,
                                                                                  time_travel: Callable[[int], int]) -> None:
    """A proposal that misrepresents a participant's row is no trap: its refusal is justified, and the
    aggregator's receipt for the real update (not the proposed one) still wins the dispute."""
    rid, victim = _recorded_without(env, time_travel, 0)
    claim_id = env.post(rid)
    real = Web3.keccak(text="the victim's real update")  # not what its proposed chain ends with
    tx = env.registry(victim).dispute_exclusion(rid, 2, real, SPENT, _receipt(env, victim, rid, real))
    assert tx.events_named("ExclusionDisputeWon")
    assert env.manager().claim_status(claim_id) == ClaimStatus.REJECTED


def test_a_participant_proposed_with_a_wrong_epsilon_may_refuse_and_still_dispute(
    env: RoundEnv, time_travel: Callable[[int], int]
) -> None:
    """Its real update but another ε than the one it reported (and the receipt binds): the refusal was
    justified. The proposal's ε cannot be passed off with the receipt either: the signature names the real one."""
    rid, victim = _recorded_without(env, time_travel, 1)
    claim_id = env.post(rid)
    own, reported = last_update(victim), epsilon_units(6.25)  # the proposal stated SPENT for it
    mine = env.registry(victim)
    with pytest.raises(revert_class("ConsentWithheld")):  # the proposal's own row: exactly what it refused
        mine.dispute_exclusion(rid, 2, own, SPENT, _receipt(env, victim, rid, own, reported))
    with pytest.raises(revert_class("BadReceiptSignature")):  # the receipt does not say ε = 6.0
        mine.dispute_exclusion(rid, 2, own, epsilon_units(6.0), _receipt(env, victim, rid, own, reported))
    tx = mine.dispute_exclusion(rid, 2, own, reported, _receipt(env, victim, rid, own, reported))
    assert tx.events_named("ExclusionDisputeWon")
    assert env.manager().claim_status(claim_id) == ClaimStatus.REJECTED


def test_a_unanimous_proposal_records_at_once_and_a_new_one_needs_new_consents(env: RoundEnv) -> None:
    registry = env.registry(env.aggregator)
    rid = env.open_fixed()
    first = env.record(rid, env.participants)
    old = registry.propose_record(first)
    signer = env.participants[0]
    registry.consent(rid, signer.address, sign_consent(signer.bls_secret, old.root))
    # A corrected proposal replaces the first: consents to the old root no longer count.
    record = env.record(rid, env.participants, vault_uri=f"vault://round-{rid}-fixed")
    proposal = registry.propose_record(record)
    assert proposal.root != old.root and registry.consent_of(rid, signer.address) == old.root
    with pytest.raises(revert_class("NotTheProposal")):
        registry.submit_proposed(first, priors(env, first))
    for m in env.participants:
        registry.consent(rid, m.address, sign_consent(m.bls_secret, proposal.root))
    submitted = registry.submit_proposed(record, priors(env, record))  # everyone consented: no need to wait for the deadline
    assert submitted.included == 3 and registry.get_round(rid).status == RoundStatus.RECORDED
    with pytest.raises(revert_class("WrongRoundStatus")):
        registry.consent(rid, signer.address, sign_consent(signer.bls_secret, proposal.root))


def test_a_proposal_with_too_few_consents_cannot_be_recorded(env: RoundEnv, time_travel: Callable[[int], int]) -> None:
    registry = env.registry(env.aggregator)
    rid = env.open_fixed()
    record = env.record(rid, env.participants)
    proposal = registry.propose_record(record)
    only = env.participants[1]
    registry.consent(rid, only.address, sign_consent(only.bls_secret, proposal.root))
    time_travel(proposal.deadline - env.now())
    with pytest.raises(revert_class("TooFewParticipants")):  # N = 2
        registry.submit_proposed(record, priors(env, record))


def _survivors(env: RoundEnv, rid: int, fl_round: int, members: list[Member]) -> tuple[list[str], bytes]:
    addresses = [m.address for m in members]
    registry = env.registry()
    return addresses, sign_survivors(env.aggregator.account, int(env.w3.eth.chain_id), registry.address, rid, fl_round,
                                     addresses)


def test_a_record_omitting_a_survivor_of_the_last_round_loses_to_any_participant(env: RoundEnv) -> None:
    """The aggregator drops a survivor and withholds its receipt; the other survivors consent anyway (or
    collude). Any participant holding the aggregator's endorsed survivor list rejects the claim."""
    registry = env.registry(env.aggregator)
    rid = env.open_fixed()
    kept, omitted = env.participants[:2], env.participants[2]
    record = env.record(rid, kept)
    registry.submit_record(record, env.consent(record, kept))
    claim_id = env.post(rid)
    survivors, signature = _survivors(env, rid, 2, env.participants)
    assert registry.survivors_digest(rid, 2, survivors)  # the contract's digest of what the aggregator signed
    assert registry.omitted_survivor(rid, survivors) == omitted.address
    assert registry.omitted_survivor(rid, [m.address for m in kept]) is None

    mine = env.registry(kept[0])  # an included participant: the omission is not about itself
    with pytest.raises(revert_class("ReceiptNotFinalRound")):
        mine.dispute_omission(rid, 1, *_survivors(env, rid, 1, env.participants))
    forged = sign_survivors(kept[0].account, int(env.w3.eth.chain_id), registry.address, rid, 2, survivors)
    with pytest.raises(revert_class("BadReceiptSignature")):
        mine.dispute_omission(rid, 2, survivors, forged)
    with pytest.raises(revert_class("BadReceiptSignature")):  # the list is bound by the signature
        mine.dispute_omission(rid, 2, [env.outsider.address, *survivors], signature)
    with pytest.raises(revert_class("NothingOmitted")):
        mine.dispute_omission(rid, 2, *_survivors(env, rid, 2, kept))
    with pytest.raises(revert_class("NotParticipant")):
        env.registry(env.outsider).dispute_omission(rid, 2, survivors, signature)
    tx = mine.dispute_omission(rid, 2, survivors, signature)
    GAS["disputeOmission (3 survivors)"] = tx.gas_used
    [won] = tx.events_named("OmissionDisputeWon")
    assert won.args["omitted"] == omitted.address and won.args["disputer"] == kept[0].address
    manager = env.manager()
    assert manager.claim_status(claim_id) == ClaimStatus.REJECTED
    assert manager.credit_of(kept[0].address) > 0


def test_a_survivor_that_withheld_its_consent_is_not_omitted(env: RoundEnv, time_travel: Callable[[int], int]) -> None:
    registry = env.registry(env.aggregator)
    rid, refuser = _recorded_without(env, time_travel, 2)
    env.post(rid)
    survivors, signature = _survivors(env, rid, 2, env.participants)
    assert registry.omitted_survivor(rid, survivors) is None
    with pytest.raises(revert_class("NothingOmitted")):
        env.registry(refuser).dispute_omission(rid, 2, survivors, signature)


def test_registry_rejection_is_limited_to_claims_that_named_the_registry(env: RoundEnv, deployer: LocalAccount) -> None:
    registry = env.registry(env.aggregator)
    rid = env.open_fixed()
    record = env.record(rid, env.participants)
    registry.submit_record(record, env.consent(record, env.participants))
    claim_id = env.post(rid)
    # A participant (no REGISTRY_ROLE) cannot reject directly.
    with pytest.raises(revert_class("AccessControlUnauthorizedAccount")):
        env.manager(env.participants[0])._transact("rejectByRegistry", claim_id, env.participants[0].address)
    # Even a registry-role holder may reject only the claims whose settlement hook it is.
    admin = ClaimManagerClient.from_deployment(env.deployment, env.w3, deployer)
    admin._transact("grantRole", admin._call("REGISTRY_ROLE"), env.outsider.address)
    with pytest.raises(revert_class("NotClaimRegistry")):
        env.manager(env.outsider)._transact("rejectByRegistry", claim_id, env.outsider.address)
    assert env.manager().claim_status(claim_id) == ClaimStatus.PENDING


# --------------------------------------------------------------------------- audience


def test_participants_audience_comes_from_the_registry(env: RoundEnv, tmp_path: Path) -> None:
    registry = env.registry(env.aggregator)
    rid = env.open_fixed(env.participants[:2])  # participant 2 never accepted
    record = env.record(rid, env.participants[:2])
    registry.submit_record(record, env.consent(record, env.participants[:2]))
    claim_id = env.post(rid)
    manager = env.manager()
    assert manager.is_audience(claim_id, env.participants[0].address)
    assert not manager.is_audience(claim_id, env.outsider.address)
    assert not manager.is_audience(claim_id, env.participants[2].address)  # invited but never accepted
    with pytest.raises(revert_class("NotAudience")):
        env.manager(env.outsider).challenge(claim_id)
    # The aggregator's blob server serves the claim's data to participants only (it asks isAudience).
    store = Store(tmp_path / "aggregator")
    store.save_job(claim_id, env.trace.program, env.inputs)
    chain_id = int(env.w3.eth.chain_id)
    server = BlobServer(store, chain_id, manager.is_audience).start()
    try:
        manifest = json.loads(fetch(server.url, env.participants[0].account, chain_id, claim_id))
        assert manifest and fetch(server.url, env.participants[0].account, chain_id, claim_id, "0x" + env.trace.program.root.hex())
        with pytest.raises(Unauthorized):
            fetch(server.url, env.outsider.account, chain_id, claim_id)
    finally:
        server.stop()
    game_id, _ = env.manager(env.participants[1]).challenge(claim_id)
    assert game_id > 0


def test_settlement_too_big_for_the_hook_is_completed_by_anyone_with_settle(
    env: RoundEnv, time_travel: Callable[[int], int]
) -> None:
    members = [*env.participants, *env.extra]
    registry = env.registry()
    rid = registry.create_round(env.config(participant_ids=[m.id for m in members], min_participants=len(members))).round_id
    for i, m in enumerate(members):
        env.registry(m).accept(rid, 10 + i, m.dataset)
    registry.fix(rid)
    t = env.trace
    record = AttributionRecord(
        rid, t.program.root, t.input_root, t.output_root, Web3.keccak(text="big round"), "vault://big",
        [m.address for m in members], [10 + i for i in range(len(members))], [bytes(32)] * len(members),
        [epsilon_units(1.0)] * len(members),
    ).sorted()
    GAS[f"bls consent check ({len(members)} signers)"] = env.registry(env.aggregator).consent_gas(
        record, env.consent(record, members))
    env.registry(env.aggregator).submit_record(record, env.consent(record, members))
    claim_id = env.post(rid)
    time_travel(env.manager().params_of(claim_id).challenge_window + 1)
    tx = env.manager(env.outsider).finalize(claim_id)
    assert tx.events_named("SettlementHookFailed")  # the claim is final; its effects are not lost:
    assert env.manager().claim_status(claim_id) == ClaimStatus.FINALIZED and registry.settled_asset(claim_id) == 0
    settled = env.registry(env.outsider).settle(claim_id, env.manager().roots_of(claim_id))
    GAS[f"settle ({len(members)} contributors)"] = settled.gas_used
    asset_id = registry.settled_asset(claim_id)
    shares = env.client(SharesClient)
    assert sum(shares.balance_of(a, asset_id) for a in [env.creator.address, *record.participants]) == 1_000_000
    assert all(len(env.client(ReceiptsClient).receipts_of(m.address)) == 1 for m in members)


def test_record_from_a_flower_attribution_includes_only_the_last_rounds_participants() -> None:
    a, b, c = (f"0x{i:040x}" for i in (0xA1, 0xB2, 0xC3))
    item = lambda addr, w, eps, tag: {"address": addr, "weight": w, "epsilon": eps,  # noqa: E731
                                      "update_commitment": "0x" + Web3.keccak(text=tag).hex().removeprefix("0x")}
    attribution = {"rounds": [
        {"round": 1, "included": [item(a, 10, 1.5, "a1"), item(b, 20, 1.5, "b1"), item(c, 30, 1.5, "c1")]},
        {"round": 2, "included": [item(b, 20, 3.0, "b2"), item(a, 10, 3.0, "a2")]},  # c dropped in round 2
    ]}
    z = bytes(32)
    rec = record_from_attribution(attribution, 7, program_root=z, input_root=z, output_root=z, content_hash=z,
                                  vault_uri="vault://x")
    assert [p.lower() for p in rec.participants] == [a, b] and rec.weights == (10, 20)
    assert rec.epsilons == (epsilon_units(3.0),) * 2
    first = Web3.keccak(bytes(32) + Web3.keccak(text="a1"))
    assert rec.update_commitments[0] == Web3.keccak(first + Web3.keccak(text="a2")) == update_chain(
        [Web3.keccak(text="a1"), Web3.keccak(text="a2")])
    assert prior_chains(attribution, rec) == [first, Web3.keccak(bytes(32) + Web3.keccak(text="b1"))]
    with pytest.raises(BadInput):
        record_from_attribution({"rounds": []}, 7, program_root=z, input_root=z, output_root=z, content_hash=z,
                                vault_uri="")


def test_gas_report(capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        for name, gas in GAS.items():
            print(f"\nRoundRegistry gas: {name}: {gas:,}")
