"""collab.metering: EIP-712 call receipts signed off-chain must be exactly what Licensing checks.

Pure-Python properties (round trip, tampering, domain binding, validation) plus a cross-check
of the digest and type hash against the deployed contract on a real anvil.
"""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st
from web3 import Web3

from chain.clients.licensing import LicensingClient
from chain.deployment import Deployment
from collab.errors import BadInput, ProtocolViolation
from collab.metering import (
    CALL_RECEIPT_TYPE,
    DOMAIN_NAME,
    DOMAIN_VERSION,
    CallReceipt,
    MeteringDomain,
    check_progress,
    first_receipt,
    receipt_digest,
    recover_signer,
    request_hash,
    sign_call_receipt,
    verify_call_receipt,
)

LICENSEE: LocalAccount = Account.from_key(keccak(text="metering licensee"))
OTHER: LocalAccount = Account.from_key(keccak(text="metering someone else"))
DOMAIN = MeteringDomain(chain_id=31337, verifying_contract="0x" + "ab" * 20)


def test_signature_round_trip_recovers_the_licensee() -> None:
    receipt = first_receipt(7, b'{"prompt": "hi"}')
    signature = sign_call_receipt(LICENSEE, DOMAIN, receipt)
    assert len(signature) == 65
    assert recover_signer(DOMAIN, receipt, signature) == LICENSEE.address
    verify_call_receipt(DOMAIN, receipt, signature, LICENSEE.address)


def test_receipt_signed_by_someone_else_is_a_protocol_violation() -> None:
    receipt = CallReceipt(7, 3, request_hash(b"x"))
    signature = sign_call_receipt(OTHER, DOMAIN, receipt)
    with pytest.raises(ProtocolViolation, match="not by the licensee"):
        verify_call_receipt(DOMAIN, receipt, signature, LICENSEE.address)


@pytest.mark.parametrize(
    "tampered",
    [CallReceipt(8, 3, request_hash(b"x")), CallReceipt(7, 4, request_hash(b"x")), CallReceipt(7, 3, request_hash(b"y"))],
)
def test_changing_any_field_breaks_the_signature(tampered: CallReceipt) -> None:
    signature = sign_call_receipt(LICENSEE, DOMAIN, CallReceipt(7, 3, request_hash(b"x")))
    assert recover_signer(DOMAIN, tampered, signature) != LICENSEE.address


@pytest.mark.parametrize(
    "other_domain",
    [
        MeteringDomain(1, DOMAIN.verifying_contract),
        MeteringDomain(DOMAIN.chain_id, "0x" + "cd" * 20),
        MeteringDomain(DOMAIN.chain_id, DOMAIN.verifying_contract, name="collab"),
        MeteringDomain(DOMAIN.chain_id, DOMAIN.verifying_contract, version="2"),
    ],
)
def test_receipts_are_bound_to_their_domain(other_domain: MeteringDomain) -> None:
    receipt = CallReceipt(1, 1)
    signature = sign_call_receipt(LICENSEE, DOMAIN, receipt)
    assert receipt_digest(other_domain, receipt) != receipt_digest(DOMAIN, receipt)
    assert recover_signer(other_domain, receipt, signature) != LICENSEE.address


def test_malformed_signature_is_a_protocol_violation() -> None:
    with pytest.raises(ProtocolViolation, match="malformed"):
        recover_signer(DOMAIN, CallReceipt(1, 1), b"\x00" * 10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"license_id": 0, "total_calls": 1}, "license id"),
        ({"license_id": 1, "total_calls": 0}, "total_calls"),
        ({"license_id": 1, "total_calls": 2**256}, "total_calls"),
        ({"license_id": 1, "total_calls": 1, "last_request_hash": b"short"}, "32 bytes"),
    ],
)
def test_malformed_receipts_are_bad_input(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(BadInput, match=message):
        CallReceipt(**kwargs)  # type: ignore[arg-type]


def test_receipts_only_move_forward() -> None:
    first = first_receipt(5, b"a")
    second = first.next(b"b")
    assert (second.license_id, second.total_calls, second.last_request_hash) == (5, 2, keccak(b"b"))
    check_progress(None, first)
    check_progress(first, second)
    with pytest.raises(ProtocolViolation, match="stale"):
        check_progress(second, first)
    with pytest.raises(ProtocolViolation, match="stale"):
        check_progress(second, second)
    with pytest.raises(ProtocolViolation, match="license"):
        check_progress(first, CallReceipt(6, 9))
    assert second.to_json() == {"license_id": 5, "total_calls": 2, "last_request_hash": "0x" + keccak(b"b").hex()}


# --------------------------------------------------------------------- against the contract


@pytest.fixture(scope="module")
def licensing(w3: Web3, deployment: Deployment) -> LicensingClient:
    return LicensingClient.from_deployment(deployment, w3)


def test_type_hash_and_domain_match_the_contract(licensing: LicensingClient) -> None:
    assert bytes(licensing._call("CALL_RECEIPT_TYPEHASH")) == keccak(text=CALL_RECEIPT_TYPE)
    fields, name, version, chain_id, contract, _salt, _ext = licensing._call("eip712Domain")
    assert (name, version, chain_id, contract) == (DOMAIN_NAME, DOMAIN_VERSION, licensing.domain().chain_id, licensing.address)
    assert fields == b"\x0f"  # name, version, chainId, verifyingContract


@settings(max_examples=20, deadline=None)
@given(
    license_id=st.integers(min_value=1, max_value=2**256 - 1),
    total=st.integers(min_value=1, max_value=2**256 - 1),
    last=st.binary(min_size=32, max_size=32),
)
def test_digest_matches_the_contract(licensing: LicensingClient, license_id: int, total: int, last: bytes) -> None:
    receipt = CallReceipt(license_id, total, last)
    assert receipt_digest(licensing.domain(), receipt) == licensing.call_receipt_digest(receipt)
