"""What a participant's node accepts as the aggregator's update receipt, and where it keeps it (no chain, no Flower).

A receipt is kept only when the run's aggregator signed it over this node's
own commitment for that round and registry round; anything else is a
ProtocolViolation (the ClientApp refuses the message). ``latest`` is what
``collab round dispute`` uses by default; the aggregator side refuses an
identity other than the round's aggregator.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account

from chain.clients.round_registry import sign_update_receipt
from collab.errors import NotFound, ProtocolViolation, Unauthorized
from collab.fl.receipts import ReceiptContext, ReceiptSigner, delivery, keep, latest, receipt_path

AGG, ME, OTHER = Account.create(), Account.create(), Account.create()
WHERE = ReceiptContext(31337, "0x" + "ab" * 20, 7, AGG.address)
MINE = b"\x11" * 32


def _delivered(signer: object = AGG, commitment: bytes = MINE, fl_round: int = 2, where: ReceiptContext = WHERE) -> dict:
    sig = sign_update_receipt(signer, where.chain_id, where.registry, where.round_id, ME.address, fl_round, commitment)
    return delivery(where, "job-x", fl_round, commitment, sig)


def test_a_valid_receipt_is_kept_and_found_for_the_dispute(tmp_path: Path) -> None:
    assert ReceiptContext.from_run_config({"registry-round": 0}) is None
    assert ReceiptContext.from_run_config({"registry-round": 7, "chain-id": 31337, "registry-address": WHERE.registry,
                                           "aggregator": AGG.address}) == WHERE
    with pytest.raises(NotFound, match="no update receipt for round 7"):
        latest(tmp_path, 7)
    signer = ReceiptSigner(WHERE, AGG)
    for fl_round in (1, 2):
        sig = signer.sign(ME.address, fl_round, MINE)
        keep(tmp_path, WHERE, ME.address, delivery(WHERE, "job-x", fl_round, MINE, sig), MINE)
    assert latest(tmp_path, 7) == receipt_path(tmp_path, 7, 2)
    kept = json.loads(latest(tmp_path, 7).read_text())
    assert kept == {**kept, "round_id": 7, "participant": ME.address, "fl_round": 2, "update_commitment": "0x" + MINE.hex(),
                    "aggregator": AGG.address}


def test_forged_misdirected_or_foreign_receipts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ProtocolViolation, match="not by the aggregator"):
        keep(tmp_path, WHERE, ME.address, _delivered(signer=OTHER), MINE)
    with pytest.raises(ProtocolViolation, match="did not make"):
        keep(tmp_path, WHERE, ME.address, _delivered(commitment=b"\x22" * 32), MINE)
    with pytest.raises(ProtocolViolation, match="did not make"):
        keep(tmp_path, WHERE, ME.address, _delivered(), None)  # this node kept no commitment for that round
    other_round = ReceiptContext(WHERE.chain_id, WHERE.registry, 8, AGG.address)
    with pytest.raises(ProtocolViolation, match="registry round 8"):
        keep(tmp_path, WHERE, ME.address, _delivered(where=other_round), MINE)
    tampered = {**_delivered(), "receipt-round": 1}  # signed for round 2, presented as round 1
    with pytest.raises(ProtocolViolation):
        keep(tmp_path, WHERE, ME.address, tampered, MINE)
    assert not (tmp_path / "rounds").exists()  # nothing was kept
    with pytest.raises(Unauthorized, match="not the round's aggregator"):
        ReceiptSigner(WHERE, OTHER)
