"""The on-chain side of a ``round`` job: RoundRegistry acceptance, fixing, consent, record and claim.

A round job whose payload names ``round_id`` (opened on-chain by the base
model's owner, naming the orchestrator as aggregator) is driven through
``RoundRegistry`` in the order of docs/contracts.md:

* participants' nodes ``accept`` with the sample count of their data and a
  dataset asset committing to it (:func:`node_accept`, the same commitment
  ``collab join`` uses); the creator's node ``fix``es once every invited
  participant has accepted (:func:`creator_fix`: only the creator may fix
  before the deadline);
* a participant's node left out of a submitted record while it holds the
  aggregator's final-round update receipt disputes the claim in its window
  (:func:`node_dispute`); any participant's node holding the aggregator's
  endorsed survivor list of the last round disputes a record that omits a
  survivor on it (:func:`node_dispute_omission`);
* after Flower, the orchestrator turns ``attribution.json`` into the on-chain
  record (:func:`round_claim`); every included participant's node checks its
  own row and BLS-signs the record root with its home's key
  (:func:`node_consent`); the orchestrator aggregates and submits the record,
  then posts the claim naming the registry as settlement hook and participant
  source (audience: participants), whose finalization mints Receipts and Shares;
* when an included participant refuses or stays silent, the orchestrator
  proposes the record on chain instead and relays the consents it holds
  (:func:`record_by_proposal`); every included node posts its own consent there
  too (:func:`node_post_consent`), so no aggregator can drop it by withholding
  its signature; after the deadline the record settles with those who
  consented, and a refuser cannot dispute its exclusion (docs/design.md).

Every step reads the chain first, so a repeated step (after a crash) is a no-op.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from chain.clients.claim_manager import Audience, ClaimInput
from chain.clients.round_registry import (
    AttributionRecord,
    RoundRegistryClient,
    RoundStatus,
    aggregate_consent,
    record_from_attribution,
)
from chain.errors import ContractRevert, revert_class
from collab.errors import BadInput, ProtocolViolation, Unauthorized


def record_to_json(record: AttributionRecord) -> dict[str, Any]:
    """JSON form of a record for a job's data (what the nodes check and sign)."""
    return {"round_id": record.round_id, "program_root": "0x" + record.program_root.hex(),
            "input_root": "0x" + record.input_root.hex(), "output_root": "0x" + record.output_root.hex(),
            "content_hash": "0x" + record.content_hash.hex(), "vault_uri": record.vault_uri,
            "participants": list(record.participants), "weights": [int(w) for w in record.weights],
            "update_commitments": ["0x" + bytes(c).hex() for c in record.update_commitments],
            "epsilons": [int(e) for e in record.epsilons]}


def record_from_json(raw: dict[str, Any]) -> AttributionRecord:
    """Inverse of :func:`record_to_json`; BadInput when malformed."""
    try:
        def b(v: Any) -> bytes:
            return bytes.fromhex(str(v).removeprefix("0x"))

        return AttributionRecord(int(raw["round_id"]), b(raw["program_root"]), b(raw["input_root"]),
                                 b(raw["output_root"]), b(raw["content_hash"]), str(raw["vault_uri"]),
                                 tuple(raw["participants"]), tuple(int(w) for w in raw["weights"]),
                                 tuple(b(c) for c in raw["update_commitments"]), tuple(int(e) for e in raw["epsilons"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise BadInput(f"malformed attribution record: {exc}") from exc


# ----------------------------------------------------------------------------- participant's node


def node_accept(chain: Any, round_id: int, data_path: Path) -> dict[str, Any]:
    """Accept ``round_id`` with this node's data (sample count + dataset asset); a no-op if already accepted."""
    from chain.clients.asset_registry import AssetInput, AssetKind, AssetRegistryClient
    from chain.clients.identity_registry import IdentityRegistryClient
    from collab.commands.round import data_commitment
    from collab.fl.data import load_user_data

    me = chain.account.address
    registry = RoundRegistryClient.from_deployment(chain.deployment, chain.w3, chain.account)
    my_id = IdentityRegistryClient.from_deployment(chain.deployment, chain.w3).id_of(me)
    mine = next((p for p in registry.participants_of(round_id) if p.id == my_id), None)
    if mine is None:
        raise Unauthorized(f"identity {my_id} is not invited to round {round_id}")
    if mine.accepted:
        return {"samples": mine.samples, "dataset_asset": mine.dataset_asset_id, "tx": None}
    if registry.get_round(round_id).status != RoundStatus.OPEN:
        raise BadInput(f"round {round_id} no longer accepts participants")
    data = load_user_data(data_path)
    commitment = data_commitment(data)
    assets = AssetRegistryClient.from_deployment(chain.deployment, chain.w3, chain.account)
    found = next((a for a in assets.assets(owner=me) if a.kind == AssetKind.DATASET and a.content_hash == commitment), None)
    dataset = found.id if found else assets.register(AssetInput(AssetKind.DATASET, commitment)).asset_id
    tx = registry.accept(round_id, len(data), dataset)
    return {"samples": len(data), "dataset_asset": dataset, "tx": tx.tx_hash}


def round_task_hash(chain: Any, round_id: int) -> bytes:
    """The task ``round_id`` was opened with (its ``configHash``), which this node's ClientApps hold the run config to."""
    return RoundRegistryClient.from_deployment(chain.deployment, chain.w3).get_round(round_id).config_hash


def creator_fix(chain: Any, round_id: int) -> str | None:
    """Fix the round once every invited participant accepted (creator only); its tx hash, None if not yet."""
    registry = RoundRegistryClient.from_deployment(chain.deployment, chain.w3, chain.account)
    r = registry.get_round(round_id)
    if r.status != RoundStatus.OPEN or r.accepted < r.invited or r.creator.lower() != chain.account.address.lower():
        return None
    return registry.fix(round_id).tx_hash


def node_consent(chain: Any, bls_sign: Any, raw: dict[str, Any], home: Path | None = None) -> str:
    """Check this node's row of the record against the chain, then BLS-sign the record root (hex signature).

    A participant consents only to a record that carries its on-chain weight
    and, with ``home``, includes everyone on the last SecAgg survivor list
    this node signed (their masked inputs are in the sum; one left out is an
    aggregator withholding a receipt: :mod:`collab.fl.receipts`) and states
    the ε of this node's final-round receipt, when it holds one (that receipt
    then wins the dispute a refusal leads to; without it a refusal over ε
    could not be shown justified, so the node does not refuse), and names
    as its update commitment the chain of this node's own updates over every
    Flower round of the round (:func:`_check_own_updates`). The root binds
    chain id, ClaimManager and registry, recomputed here.
    """
    from collab.fl.receipts import ReceiptContext, last_signed_survivors, own_update_chains, receipt_path

    record = record_from_json(raw)
    me = chain.account.address.lower()
    rows = [a.lower() for a in record.participants]
    if me not in rows:
        raise ProtocolViolation(f"the record of round {record.round_id} does not include {me}")
    signed = last_signed_survivors(home, record.round_id) if home is not None else None
    if signed is not None:
        fl_round, survivors = signed
        left_out = [a for a in survivors if a.lower() not in rows]
        if left_out:
            raise ProtocolViolation(f"the record of round {record.round_id} leaves out {', '.join(left_out)}, on the "
                                    f"survivor list this node signed in Flower round {fl_round} (their updates are "
                                    "in the aggregate)")
    registry = RoundRegistryClient.from_deployment(chain.deployment, chain.w3)
    mine = next(p for p in registry.participants_of(record.round_id) if p.account.lower() == me)
    weight = record.weights[rows.index(me)]
    if weight != mine.samples:
        raise ProtocolViolation(f"the record gives {me} weight {weight}, not the {mine.samples} fixed on-chain")
    if home is not None:
        rounds = registry.get_round(record.round_id).rounds
        _check_own_epsilon(record.round_id, record.epsilons[rows.index(me)], receipt_path(home, record.round_id, rounds))
        where = ReceiptContext(int(chain.w3.eth.chain_id), registry.address, record.round_id, "")
        _check_own_updates(record.round_id, bytes(record.update_commitments[rows.index(me)]),
                           own_update_chains(home, where, rounds), rounds)
    root = registry.local_root(record)
    return "0x" + bytes(bls_sign(root)).hex()


def _check_own_epsilon(round_id: int, stated: int, final_receipt: Path) -> None:
    """ProtocolViolation when the record states another ε for this node than its final-round receipt does."""
    from chain.clients.round_registry import epsilon_value
    from collab.commands.round import read_receipt

    if not final_receipt.is_file():
        return
    held = read_receipt(final_receipt)["epsilon"]
    if stated != held:
        raise ProtocolViolation(f"the record of round {round_id} states ε = {epsilon_value(stated):g} for this node; "
                                f"it reported {epsilon_value(held):g} with its last update (the aggregator's receipt "
                                "says so)")


def _check_own_updates(round_id: int, stated: bytes, own: dict[str, bytes], rounds: int) -> None:
    """ProtocolViolation unless the record's commitment for this node chains its own updates of all ``rounds``.

    This binds the round count into each consent: a job its aggregator stopped
    before the last Flower round has no participant that trained that round,
    so no honest node consents to its record (and a dropped node's missing
    dispute no longer matters), nor to one that swaps any of its updates.
    """
    if stated not in own.values():
        raise ProtocolViolation(
            f"the record of round {round_id} names update chain 0x{stated.hex()} for this node, which is not the "
            f"chain of its own updates over the round's {rounds} Flower round(s)"
            + ("" if own else " (this node kept no update for every one of them)"))


def node_dispute(chain: Any, home: Path, round_id: int) -> str | None:
    """Dispute the round's pending claim if its record leaves this node out while the node holds the
    aggregator's receipt for its final-round update (kept by its ClientApp); the tx hash, else None.
    ProtocolViolation when the node withheld its consent to a proposal that named that very update.

    An honest record includes everyone whose update entered the final
    aggregate, and only they hold a final-round receipt, so this never fires
    on an honest round. A receipt not signed by the round's aggregator is ignored.
    """
    from chain.clients.claim_manager import ClaimManagerClient, ClaimStatus
    from chain.clients.round_registry import recover_update_receipt
    from collab.commands.round import read_receipt
    from collab.errors import NotFound
    from collab.fl.receipts import latest, receipt_path

    try:
        latest(home, round_id)  # no receipt of this round at all: nothing to read on-chain either
    except NotFound:
        return None
    registry = RoundRegistryClient.from_deployment(chain.deployment, chain.w3, chain.account)
    r = registry.get_round(round_id)
    me = str(chain.account.address)
    path = receipt_path(home, round_id, r.rounds)
    if r.status != RoundStatus.RECORDED or not path.is_file() or me in registry.included_of(round_id):
        return None
    receipt = read_receipt(path)
    signer = recover_update_receipt(receipt["signature"], int(chain.w3.eth.chain_id), registry.address, round_id, me,
                                    r.rounds, receipt["update_commitment"], receipt["epsilon"])
    manager = ClaimManagerClient.from_deployment(chain.deployment, chain.w3)
    if signer != r.aggregator or manager.claim_status(r.claim_id) != ClaimStatus.PENDING:
        return None  # not a receipt to rely on, or the claim is not posted yet / already decided
    try:
        return registry.dispute_exclusion(round_id, r.rounds, receipt["update_commitment"], receipt["epsilon"],
                                          receipt["signature"]).tx_hash
    except revert_class("ConsentWithheld") as exc:
        raise ProtocolViolation(f"proposed with its own update, {me} did not consent in time: its exclusion from "
                                f"round {round_id} stands") from exc


def node_dispute_omission(chain: Any, home: Path, round_id: int) -> tuple[bool, str | None]:
    """Dispute the round's pending claim if its record omits a survivor of the last Flower round's SecAgg,
    shown by the survivor list the aggregator endorsed to this node: (decided, tx hash or None).

    Undecided (False) until the record and its claim are on chain; decided once checked, since a recorded
    round's inclusion never changes. Any participant may hold the evidence, included or not.
    """
    from chain.clients.claim_manager import ClaimManagerClient, ClaimStatus
    from collab.fl.receipts import endorsed_survivors

    registry = RoundRegistryClient.from_deployment(chain.deployment, chain.w3, chain.account)
    r = registry.get_round(round_id)
    if r.status != RoundStatus.RECORDED:
        return r.status == RoundStatus.SETTLED, None
    if ClaimManagerClient.from_deployment(chain.deployment, chain.w3).claim_status(r.claim_id) != ClaimStatus.PENDING:
        return False, None  # not posted yet (or already decided: then the round moves on and so do we)
    held = endorsed_survivors(home, round_id, r.rounds)
    if held is None or registry.omitted_survivor(round_id, held[0]) is None:
        return True, None
    return True, registry.dispute_omission(round_id, r.rounds, held[0], held[1]).tx_hash


def node_post_consent(chain: Any, bls_sign: Any, raw: dict[str, Any], home: Path | None = None) -> str | None:
    """Post this node's consent to the round's on-chain proposal ``raw`` itself (tx hash), after the checks of
    :func:`node_consent`; None when it is already posted or the proposal on chain is another record.

    The orchestrator relays the signatures it holds, but an aggregator that
    withheld one would leave the node out without a dispute; posting it here
    closes that.
    """
    record = record_from_json(raw)
    registry = RoundRegistryClient.from_deployment(chain.deployment, chain.w3, chain.account)
    root, me = registry.local_root(record), str(chain.account.address)
    if registry.proposal_of(record.round_id).root != root or registry.consent_of(record.round_id, me) == root:
        return None
    signature = node_consent(chain, bls_sign, raw, home)
    return registry.consent(record.round_id, me, bytes.fromhex(signature[2:])).tx_hash


# ----------------------------------------------------------------------------- orchestrator


def round_claim(registry: RoundRegistryClient, round_id: int, attribution: dict[str, Any], built: Any,
                home: Path) -> tuple[ClaimInput, AttributionRecord]:
    """The claim (job id from the registry, hook = registry, audience = participants) and its record."""
    from collab.fraudproof.agents import ClaimerAgent
    from collab.fraudproof.store import Store

    trace = built.trace()
    output = next(iter(built.outputs().values()))
    record = record_from_attribution(
        attribution, round_id, program_root=built.program.root, input_root=trace.input_root,
        output_root=trace.output_root, content_hash=hashlib.sha256(np.asarray(output.data).tobytes()).digest(),
        vault_uri=f"vault://round-{round_id}")
    agent = ClaimerAgent(None, None, None, trace, job_id=registry.job_id_of(round_id))  # type: ignore[arg-type]
    claim = dataclasses.replace(agent.claim_input(audience=Audience.PARTICIPANTS, settlement_hook=registry.address),
                                participant_registry=registry.address)
    Store(home).save_job(claim.claim_id, built.program, built.inputs, built.witnesses)
    return claim, record


def submit_record(registry: RoundRegistryClient, record: AttributionRecord, signatures: list[bytes]) -> str | None:
    """Aggregate the consents and submit the record; None if the round already holds it (a re-run)."""
    if registry.get_round(record.round_id).status != RoundStatus.FIXED:
        return None
    return registry.submit_record(record, aggregate_consent(signatures)).tx.tx_hash  # type: ignore[union-attr]


@dataclasses.dataclass(frozen=True)
class ProposalProgress:
    """Where an on-chain proposal stands: ``submitted`` once the record is on chain (``record_tx`` None on a re-run)."""

    root: bytes
    deadline: int
    proposal_tx: str | None
    consented: tuple[str, ...]
    submitted: bool = False
    record_tx: str | None = None

    def left_out(self, record: AttributionRecord) -> list[str]:
        """Proposed participants that have not consented."""
        return [a for a in record.participants if a not in self.consented]


def record_by_proposal(registry: RoundRegistryClient, record: AttributionRecord, signatures: dict[str, bytes],
                       priors: list[bytes]) -> ProposalProgress:
    """One step of the consent-veto path: propose ``record`` on chain (once), relay the consents the
    orchestrator holds (``signatures``: account -> BLS signature), and submit it with the participants who
    consented once all have or the deadline has passed (``priors``: ``prior_chains`` of the record's rows).
    Every step reads the chain first."""
    rid = record.round_id
    if registry.get_round(rid).status != RoundStatus.FIXED:  # a re-run: already recorded
        return ProposalProgress(b"", 0, None, tuple(registry.included_of(rid)), submitted=True)
    root = registry.local_root(record)
    proposal, proposal_tx = registry.proposal_of(rid), None
    if proposal.root != root:
        proposal = registry.propose_record(record)
        proposal_tx = proposal.tx.tx_hash if proposal.tx else None
    relay = {a: s for a, s in signatures.items() if registry.consent_of(rid, a) != root}
    keys = dict(zip(relay, registry.consent_keys(rid, list(relay)))) if relay else {}  # one event scan for all
    for account, signature in relay.items():
        try:
            registry.consent(rid, account, signature, pubkey=keys[account])
        except ContractRevert:
            pass  # a node reported a signature that does not verify: it stays out unless it posts a valid one
    consented = tuple(a for a in record.participants if registry.consent_of(rid, a) == root)
    progress = ProposalProgress(root, proposal.deadline, proposal_tx, consented)
    now = int(registry.w3.eth.get_block("latest")["timestamp"])
    if len(consented) < len(record.participants) and now < proposal.deadline:
        return progress
    minimum = registry.get_round(rid).min_participants
    if len(consented) < minimum:
        raise ProtocolViolation(f"only {len(consented)} of round {rid}'s {len(record.participants)} included "
                                f"participants consented to the proposed record by its deadline; it needs {minimum}")
    tx = registry.submit_proposed(record, priors).tx
    return dataclasses.replace(progress, submitted=True, record_tx=tx.tx_hash if tx else None)
