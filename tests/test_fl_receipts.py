"""What a participant's node accepts as the aggregator's update receipt, and where it keeps it (no chain, no Flower).

A receipt is kept only when the run's aggregator signed it over this node's
own commitment and ε for that round and registry round; anything else is a
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
MINE, EPS = b"\x11" * 32, 1_250_000  # this node's commitment and the ε (millionths) it reported with it
OWN = (MINE, EPS)


def _delivered(signer: object = AGG, commitment: bytes = MINE, fl_round: int = 2, where: ReceiptContext = WHERE,
               epsilon: int = EPS) -> dict:
    sig = sign_update_receipt(signer, where.chain_id, where.registry, where.round_id, ME.address, fl_round, commitment,
                              epsilon)
    return delivery(where, "job-x", fl_round, commitment, epsilon, sig)


def test_a_valid_receipt_is_kept_and_found_for_the_dispute(tmp_path: Path) -> None:
    assert ReceiptContext.from_run_config({"registry-round": 0}) is None
    assert ReceiptContext.from_run_config({"registry-round": 7, "chain-id": 31337, "registry-address": WHERE.registry,
                                           "aggregator": AGG.address}) == WHERE
    with pytest.raises(NotFound, match="no update receipt for round 7"):
        latest(tmp_path, 7)
    signer = ReceiptSigner(WHERE, AGG)
    for fl_round in (1, 2):
        sig = signer.sign(ME.address, fl_round, MINE, EPS)
        keep(tmp_path, WHERE, ME.address, delivery(WHERE, "job-x", fl_round, MINE, EPS, sig), OWN)
    assert latest(tmp_path, 7) == receipt_path(tmp_path, 7, 2)
    kept = json.loads(latest(tmp_path, 7).read_text())
    assert kept == {**kept, "round_id": 7, "participant": ME.address, "fl_round": 2, "update_commitment": "0x" + MINE.hex(),
                    "epsilon": EPS, "aggregator": AGG.address}


def test_forged_misdirected_or_foreign_receipts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ProtocolViolation, match="not by the aggregator"):
        keep(tmp_path, WHERE, ME.address, _delivered(signer=OTHER), OWN)
    with pytest.raises(ProtocolViolation, match="did not make"):
        keep(tmp_path, WHERE, ME.address, _delivered(commitment=b"\x22" * 32), OWN)
    with pytest.raises(ProtocolViolation, match="states ε = 2.5; this node reported 1.25"):
        keep(tmp_path, WHERE, ME.address, _delivered(epsilon=2_500_000), OWN)  # acknowledges another ε
    with pytest.raises(ProtocolViolation, match="did not make"):
        keep(tmp_path, WHERE, ME.address, _delivered(), None)  # this node kept no commitment for that round
    other_round = ReceiptContext(WHERE.chain_id, WHERE.registry, 8, AGG.address)
    with pytest.raises(ProtocolViolation, match="registry round 8"):
        keep(tmp_path, WHERE, ME.address, _delivered(where=other_round), OWN)
    for tampered in ({**_delivered(), "receipt-round": 1},  # signed for round 2, presented as round 1
                     {**_delivered(epsilon=2_500_000), "receipt-epsilon": EPS}):  # signed for another ε
        with pytest.raises(ProtocolViolation, match="not by the aggregator"):
            keep(tmp_path, WHERE, ME.address, tampered, OWN)
    assert not (tmp_path / "rounds").exists()  # nothing was kept
    with pytest.raises(Unauthorized, match="not the round's aggregator"):
        ReceiptSigner(WHERE, OTHER)
