"""Update receipts in the live Flower flow: the aggregator signs, the participant checks and keeps.

For a ``RoundRegistry`` round the ServerApp signs, for every update it
accepts into a round's aggregate, the EIP-712 ``UpdateReceipt`` the contract
checks in an exclusion dispute (``chain.clients.round_registry``): registry
round id, participant, Flower round, the participant's own signed update
commitment and the cumulative ε it signed with it. The receipt travels to
that participant in its next message (the next round's ``train``, or a final
``query.receipt`` after the last round). The ClientApp keeps it only if the
aggregator named in the run config signed it and it acknowledges the
commitment and ε this node itself sent for that round;
``collab round dispute ROUND`` re-checks the signer against the round's
aggregator on-chain before using it, so a run config cannot lend a receipt
authority it does not have.

Receipts live in the participant's home under ``rounds/receipts/``, one JSON
file per (registry round, Flower round), in the format ``collab round dispute
--receipt`` reads.

A receipt reaches its participant only after the update was aggregated, so
an aggregator could withhold the last one and leave that participant out.
What binds it then is SecAgg's survivor list: every survivor signs U3 (the
participants whose masked inputs the server holds; their inputs are all in
the sum, since a survivor's pairwise masks are never revealed), and the
ClientApp keeps the addresses it signed under ``rounds/survivors/``, with
the aggregator's EIP-712 endorsement of the list (sent with the consistency
check; kept only when the round's aggregator signed it). A node consents
only to a record that includes every address of the last survivor list it
signed (``orchestrator.round_chain.node_consent``), and any node holding the
endorsed list of the final round disputes a record that omits one of them
(``RoundRegistry.disputeOmission``), so one honest survivor is enough.

The node also keeps, under ``flower/commitments/``, the opening of every
update commitment it sent (salt, commitment, ε, registry round). A node
consents only to a record whose commitment for it chains its own updates
of every Flower round of the registry round (:func:`own_update_chains`), so
a job stopped before its last round gets no honest consent.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collab.config import ENV_PASSPHRASE
from collab.errors import NotFound, ProtocolViolation, Unauthorized

RECEIPTS_DIR = ("rounds", "receipts")
SURVIVORS_DIR = ("rounds", "survivors")
OPENINGS_DIR = ("flower", "commitments")


@dataclass(frozen=True)
class ReceiptContext:
    """Where a receipt is valid: the chain, the RoundRegistry, its round, and the aggregator expected to sign."""

    chain_id: int
    registry: str
    round_id: int
    aggregator: str

    @classmethod
    def from_run_config(cls, rc: dict[str, Any]) -> ReceiptContext | None:
        """None for a round outside the RoundRegistry (``registry-round`` = 0): nothing to dispute there."""
        if int(rc.get("registry-round", 0) or 0) <= 0:
            return None
        return cls(int(rc["chain-id"]), str(rc["registry-address"]), int(rc["registry-round"]), str(rc["aggregator"]))


class ReceiptSigner:
    """The aggregator's side: its identity (unlocked in the ServerApp's process) and the round it signs for."""

    def __init__(self, where: ReceiptContext, account: Any) -> None:
        if str(account.address).lower() != where.aggregator.lower():
            raise Unauthorized(f"the identity in the aggregator home is {account.address}, not the round's "
                               f"aggregator {where.aggregator}")
        self.where, self.account = where, account

    @classmethod
    def load(cls, where: ReceiptContext, home: str) -> ReceiptSigner:
        """Unlock ``home``'s identity with ``COLLAB_PASSPHRASE`` (inherited from the orchestrator via the SuperLink)."""
        from collab.identity import Identity

        passphrase = os.environ.get(ENV_PASSPHRASE, "")
        if not home or not passphrase:
            raise Unauthorized(f"the aggregator cannot sign update receipts: no identity home or no {ENV_PASSPHRASE} "
                               "in the SuperLink's environment")
        return cls(where, Identity.load(home, passphrase).account)

    def sign(self, participant: str, fl_round: int, commitment: bytes, epsilon: int) -> bytes:
        """The 65-byte receipt for one accepted update and the ε (millionths) its participant signed with it."""
        from chain.clients.round_registry import sign_update_receipt

        w = self.where
        return sign_update_receipt(self.account, w.chain_id, w.registry, w.round_id, participant, fl_round, commitment,
                                   epsilon)

    def sign_survivors(self, fl_round: int, survivors: list[str]) -> bytes:
        """The endorsement of a SecAgg survivor list (what ``RoundRegistry.disputeOmission`` checks)."""
        from chain.clients.round_registry import sign_survivors

        w = self.where
        return sign_survivors(self.account, w.chain_id, w.registry, w.round_id, fl_round, survivors)


def delivery(where: ReceiptContext, job: str, fl_round: int, commitment: bytes, epsilon: int,
             signature: bytes) -> dict[str, Any]:
    """The receipt as the config entries of a Flower message."""
    return {"receipt-round": int(fl_round), "receipt-commitment": bytes(commitment), "receipt-epsilon": int(epsilon),
            "receipt": bytes(signature), "receipt-registry-round": where.round_id, "receipt-job": job}


def opening_path(home: str | Path, job: str, fl_round: int) -> Path:
    """Where a node keeps the opening of its update commitment for one Flower round of one job."""
    return Path(home).joinpath(*OPENINGS_DIR) / f"{hashlib.sha256(job.encode()).hexdigest()[:16]}-r{int(fl_round)}.json"


def save_opening(home: str | Path, job: str, fl_round: int, where: ReceiptContext | None, salt: bytes,
                 commitment: bytes, epsilon: int) -> None:
    """Keep the salt that opens this node's update commitment (only this node can open it), the ε it reported
    with it (what the aggregator's receipt must state) and the registry round it trained for (None: none)."""
    path = opening_path(home, job, fl_round)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(json.dumps({"job": job, "round": int(fl_round), "registry": _registry_key(where),
                                "salt": salt.hex(), "commitment": commitment.hex(), "epsilon": int(epsilon)}) + "\n")
    path.chmod(0o600)


def _registry_key(where: ReceiptContext | None) -> str:
    """Chain, registry and round an opening belongs to ("" outside the RoundRegistry): a round id alone repeats
    across deployments, and an old round's updates must not vouch for a new round's record."""
    return f"{where.chain_id}:{where.registry.lower()}:{where.round_id}" if where else ""


def read_opening(home: str | Path, job: str, fl_round: int) -> dict[str, Any] | None:
    """A kept opening, None when there is none (or it is unreadable)."""
    try:
        saved = json.loads(opening_path(home, job, fl_round).read_text())
        return saved if isinstance(saved, dict) else None
    except (OSError, ValueError):
        return None


def own_update_chains(home: str | Path, where: ReceiptContext, rounds: int) -> dict[str, bytes]:
    """Per Flower job this node trained for ``where``'s round in every one of its ``rounds`` Flower rounds: the
    record commitment its updates make (:func:`chain.clients.round_registry.update_chain`, rounds in order).

    Why: a node consents only to a record whose commitment for it is one of these, so a job the aggregator
    stopped before the round's last Flower round (or one that misstates any of this node's updates) never
    gets its consent.
    """
    from chain.clients.round_registry import update_chain

    by_job: dict[str, dict[int, bytes]] = {}
    key, folder = _registry_key(where), Path(home).joinpath(*OPENINGS_DIR)
    for path in sorted(folder.glob("*-r*.json")) if folder.is_dir() else []:
        try:
            saved = json.loads(path.read_text())
            if saved.get("registry") == key:
                by_job.setdefault(str(saved["job"]), {})[int(saved["round"])] = bytes.fromhex(saved["commitment"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not an opening this node can rely on
    return {job: update_chain([done[r] for r in range(1, rounds + 1)])
            for job, done in by_job.items() if all(r in done for r in range(1, rounds + 1))}


def receipts_dir(home: str | Path) -> Path:
    return Path(home).joinpath(*RECEIPTS_DIR)


def receipt_path(home: str | Path, round_id: int, fl_round: int) -> Path:
    return receipts_dir(home) / f"{int(round_id)}-r{int(fl_round)}.json"


def keep(home: str | Path, where: ReceiptContext, participant: str, config: Any,
         own: tuple[bytes, int] | None) -> Path:
    """Check a delivered receipt and store it in ``home``; ProtocolViolation when it is not one to rely on.

    ``own`` is the commitment this node signed for that Flower round and the
    ε (millionths) it signed with it (None: it kept none, so the receipt
    acknowledges nothing of its own).
    """
    from chain.clients.round_registry import epsilon_value, recover_update_receipt

    fl_round, commitment, signature = int(config["receipt-round"]), bytes(config["receipt-commitment"]), bytes(config["receipt"])
    epsilon = int(config["receipt-epsilon"])
    if int(config["receipt-registry-round"]) != where.round_id:
        raise ProtocolViolation(f"a receipt for registry round {config['receipt-registry-round']} in round {where.round_id}")
    if own is None or commitment != own[0]:
        raise ProtocolViolation(f"the aggregator's receipt for Flower round {fl_round} acknowledges a commitment "
                                "this node did not make")
    if epsilon != own[1]:
        raise ProtocolViolation(f"the aggregator's receipt for Flower round {fl_round} states ε = "
                                f"{epsilon_value(epsilon):g}; this node reported {epsilon_value(own[1]):g}")
    signer = recover_update_receipt(signature, where.chain_id, where.registry, where.round_id, participant, fl_round,
                                    commitment, epsilon)
    if signer.lower() != where.aggregator.lower():
        raise ProtocolViolation(f"the receipt for Flower round {fl_round} is signed by {signer}, "
                                f"not by the aggregator {where.aggregator}")
    path = receipt_path(home, where.round_id, fl_round)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(json.dumps({
        "round_id": where.round_id, "participant": participant, "fl_round": fl_round,
        "update_commitment": "0x" + commitment.hex(), "epsilon": epsilon, "signature": "0x" + signature.hex(),
        "aggregator": where.aggregator, "registry": where.registry, "chain_id": where.chain_id}, indent=2) + "\n")
    return path


def latest(home: str | Path, round_id: int) -> Path:
    """The stored receipt of ``round_id`` with the highest Flower round; NotFound when the home holds none."""
    found = _by_flower_round(receipts_dir(home), round_id)
    if not found:
        raise NotFound(f"this home holds no update receipt for round {round_id}",
                       hint="pass --receipt FILE, or dispute from the participant's own home")
    return found[-1]


def _by_flower_round(folder: Path, round_id: int) -> list[Path]:
    """``<round>-r<fl round>.json`` files of ``round_id``, lowest Flower round first."""
    def fl_round(p: Path) -> int:
        tail = p.stem.rsplit("-r", 1)[1]
        return int(tail) if tail.isdigit() else -1

    return sorted(folder.glob(f"{int(round_id)}-r*.json"), key=fl_round)


def survivors_path(home: str | Path, round_id: int, fl_round: int) -> Path:
    return Path(home).joinpath(*SURVIVORS_DIR) / f"{int(round_id)}-r{int(fl_round)}.json"


def keep_survivors(home: str | Path, where: ReceiptContext, fl_round: int, addresses: list[str],
                   endorsement: bytes | None) -> bool:
    """Record the survivor list (participant addresses) this node signed in ``fl_round`` of registry round
    ``where.round_id``, with the aggregator's endorsement when it is the round's aggregator's signature (the
    evidence of an omission dispute; True then); without one the list still guards this node's consent."""
    from chain.clients.round_registry import recover_survivors

    endorsed = None
    if endorsement:
        try:
            signer = recover_survivors(endorsement, where.chain_id, where.registry, where.round_id, fl_round, addresses)
        except Exception:  # noqa: BLE001 - any malformed signature (eth_keys, eth_utils, short bytes) is no endorsement
            signer = ""
        if signer.lower() == where.aggregator.lower():
            endorsed = "0x" + bytes(endorsement).hex()
    path = survivors_path(home, where.round_id, fl_round)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"round_id": int(where.round_id), "fl_round": int(fl_round), "survivors": addresses,
                               "aggregator_signature": endorsed}) + "\n")
    tmp.replace(path)
    return endorsed is not None


def endorsed_survivors(home: str | Path, round_id: int, fl_round: int) -> tuple[list[str], bytes] | None:
    """The survivor list of ``fl_round`` with the aggregator's endorsement, if this node holds one."""
    path = survivors_path(home, round_id, fl_round)
    try:
        body = json.loads(path.read_text())
        signature = body.get("aggregator_signature")
        return ([str(a) for a in body["survivors"]], bytes.fromhex(signature[2:])) if signature else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProtocolViolation(f"the survivor list this node kept ({path}) is unreadable: {exc}") from exc


def last_signed_survivors(home: str | Path, round_id: int) -> tuple[int, list[str]] | None:
    """(Flower round, addresses) of the last survivor list this node signed in ``round_id``; None if it signed none.

    ProtocolViolation when the stored file is unreadable: a node must not
    consent blind because its own record of what it signed is damaged.
    """
    found = _by_flower_round(Path(home).joinpath(*SURVIVORS_DIR), round_id)
    if not found:
        return None
    try:
        body = json.loads(found[-1].read_text())
        return int(body["fl_round"]), [str(a) for a in body["survivors"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProtocolViolation(f"the survivor list this node signed ({found[-1]}) is unreadable: {exc}") from exc
