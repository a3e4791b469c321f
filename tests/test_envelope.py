"""EIP-712 request envelopes: round trip, and every way a request can be wrong."""

from __future__ import annotations

import copy

import pytest
from eth_account import Account

from collab.errors import BadInput, Unauthorized
from orchestrator.envelope import Envelope, sign_request, verify_request

ORCH = "0x" + "11" * 20
CHAIN = 31337
ALICE = Account.from_key(b"\x01" * 32)
MALLORY = Account.from_key(b"\x02" * 32)


def _req(**kw: object) -> dict:
    return sign_request(ALICE, {"op": "ping", "n": [1, 2]}, chain_id=CHAIN, verifying_contract=ORCH, nonce=7, **kw)  # type: ignore[arg-type]


def test_round_trip_authenticates_the_sender() -> None:
    env = verify_request(_req(), chain_id=CHAIN, verifying_contract=ORCH)
    assert env.sender == ALICE.address and env.nonce == 7
    assert Envelope.from_json(env.to_json()) == env


def test_payload_key_order_does_not_matter() -> None:
    req = _req()
    req["payload"] = {"n": [1, 2], "op": "ping"}
    verify_request(req, chain_id=CHAIN, verifying_contract=ORCH)


@pytest.mark.parametrize("chain_id, contract", [(1, ORCH), (CHAIN, "0x" + "22" * 20)])
def test_signature_is_bound_to_chain_and_orchestrator(chain_id: int, contract: str) -> None:
    with pytest.raises(Unauthorized):
        verify_request(_req(), chain_id=chain_id, verifying_contract=contract)


def test_tampered_payload_and_forged_sender_are_refused() -> None:
    req = _req()
    req["payload"]["op"] = "cancel"
    with pytest.raises(Unauthorized, match="payload hash"):
        verify_request(req, chain_id=CHAIN, verifying_contract=ORCH)
    forged = _req()
    forged["envelope"]["sender"] = MALLORY.address
    with pytest.raises(Unauthorized, match="not the envelope's sender"):
        verify_request(forged, chain_id=CHAIN, verifying_contract=ORCH)


def test_expired_unsigned_and_malformed() -> None:
    with pytest.raises(Unauthorized, match="expired"):
        verify_request(_req(ttl=-1), chain_id=CHAIN, verifying_contract=ORCH)
    unsigned = _req()
    unsigned["signature"] = ""
    with pytest.raises(Unauthorized, match="not signed"):
        verify_request(unsigned, chain_id=CHAIN, verifying_contract=ORCH)
    junk = _req()
    junk["signature"] = "0x1234"
    with pytest.raises(Unauthorized, match="bad signature"):
        verify_request(junk, chain_id=CHAIN, verifying_contract=ORCH)
    for breaker in ({"nonce": "x"}, {"payloadHash": "0xzz"}, {"sender": "nope"}, {"expiry": -1}):
        bad = copy.deepcopy(_req())
        bad["envelope"].update(breaker)
        with pytest.raises(BadInput):
            verify_request(bad, chain_id=CHAIN, verifying_contract=ORCH)
    for junk_req in (None, [], {"envelope": {}}, {"signature": "0x"}):
        with pytest.raises((BadInput, Unauthorized)):
            verify_request(junk_req, chain_id=CHAIN, verifying_contract=ORCH)
