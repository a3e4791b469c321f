"""Licensing on a real anvil with every contract deployed: the four kinds end to end, money
into the RevenueDistributor, and every revert path of issue 3 (unknown asset, expired license,
exhausted credits, replayed or non-increasing call receipts, insufficient payment, wrong partner,
key delivery after the timeout, refund, dispute and its resolution by governance).

Actors are fresh keys funded with ``anvil_setBalance`` and registered inside a module-wide
snapshot that is reverted at the end, so no other test module sees them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain.client import ContractClient, default_artifacts
from chain.clients.governor import GovernorClient, Proposal, ProposalState, VoteSupport
from chain.clients.licensing import EscrowState, LicenseKind, LicensingClient, Terms
from chain.clients.revenue_distributor import RevenueDistributorClient
from chain.deploy import DEFAULT_PARAMS, Governance
from chain.deployment import Deployment
from chain.errors import revert_class
from collab import bls
from collab.errors import EXIT_NOT_FOUND, EXIT_OK, EXIT_UNAUTHORIZED, ProtocolViolation, Unauthorized
from collab.metering import CallReceipt, MeteringDomain, sign_call_receipt

GWEI = 10**9
FEE = 10**6 * GWEI
PRICE = 5 * 10**16
DAY = 86_400
BPS = 10_000
COMPUTE_FEE_BPS = DEFAULT_PARAMS["COMPUTE_FEE_BPS"]
TIMEOUT = DEFAULT_PARAMS["KEY_DELIVERY_TIMEOUT"]
WINDOW = DEFAULT_PARAMS["KEY_DISPUTE_WINDOW"]
GOV = Governance()


def _actor(w3: Web3, label: str) -> LocalAccount:
    account: LocalAccount = Account.from_key(Web3.keccak(text=f"collab licensing tests: {label}"))
    w3.provider.make_request("anvil_setBalance", [account.address, hex(10**22)])  # type: ignore[arg-type]
    return account


def _contract(w3: Web3, deployment: Deployment, name: str, account: LocalAccount) -> ContractClient:
    artifact = default_artifacts()[deployment.artifact_name(name)]
    return ContractClient(w3, deployment.address(name), artifact.abi, account, name=name)


def register_identity(w3: Web3, deployment: Deployment, account: LocalAccount, name: str, x25519: bytes) -> int:
    """Register a Sahara ID for ``account`` with a real BLS proof of possession."""
    identity = _contract(w3, deployment, "IdentityRegistry", account)
    params = _contract(w3, deployment, "ProtocolParams", account)
    stake = int(params._call("get", Web3.keccak(text="ADMISSION_STAKE")))
    sk = bls.keygen(name.encode())
    pop = bls.prove_possession(sk, int(w3.eth.chain_id), identity.address, account.address)
    keys = (Web3.keccak(text=f"curve {name}"), x25519, bls.sk_to_pk(sk), pop)
    identity._transact("register", name, 0, keys, value=stake)
    return int(identity._call("idOf", account.address))


def register_asset(w3: Web3, deployment: Deployment, owner: LocalAccount, tag: str) -> int:
    assets = _contract(w3, deployment, "AssetRegistry", owner)
    digest = Web3.keccak(text=tag)
    result = assets._transact("register", (0, digest, digest, Web3.keccak(text=f"key {tag}"), f"vault://{tag}", [], 0))
    return int(result.events_named("AssetRegistered")[0].args["assetId"])


@dataclass
class Env:
    """The deployed contracts and the parties of every scenario."""

    w3: Web3
    deployment: Deployment
    owner: LocalAccount  # owns ``asset``
    buyer: LocalAccount  # Sahara ID with an X25519 key
    partner: LocalAccount  # Sahara ID, named in partnership offers
    stranger: LocalAccount  # no Sahara ID
    node: LocalAccount  # the owner's node key (operator), no Sahara ID
    compute: tuple[LocalAccount, LocalAccount]
    asset: int

    def lic(self, account: LocalAccount) -> LicensingClient:
        return LicensingClient.from_deployment(self.deployment, self.w3, account)

    @property
    def distributor(self) -> RevenueDistributorClient:
        return RevenueDistributorClient.from_deployment(self.deployment, self.w3, self.owner)

    def paid_to_asset(self) -> int:
        return self.distributor.total_paid(self.asset)

    def balance(self, who: str) -> int:
        return int(self.w3.eth.get_balance(who))  # type: ignore[arg-type]

    def last_gas_cost(self) -> int:
        """Wei the latest block's (only) transaction paid for gas."""
        tx_hash = self.w3.eth.get_block("latest")["transactions"][-1]
        receipt = self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])

    def offer(self, kind: LicenseKind, **terms: object) -> int:
        return self.lic(self.owner).offer(self.asset, kind, Terms(**terms)).offer_id  # type: ignore[arg-type]

    def receipt(self, license_id: int, total: int, signer: LocalAccount | None = None) -> tuple[CallReceipt, bytes]:
        receipt = CallReceipt(license_id, total, Web3.keccak(text=f"request {total}"))
        client = self.lic(self.owner)
        return receipt, sign_call_receipt(signer or self.buyer, client.domain(), receipt)


@pytest.fixture(scope="module")
def env(w3: Web3, deployment: Deployment) -> Iterator[Env]:
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    owner, buyer, partner = _actor(w3, "owner"), _actor(w3, "buyer"), _actor(w3, "partner")
    for account, name in ((owner, "lic-owner"), (buyer, "lic-buyer"), (partner, "lic-partner")):
        register_identity(w3, deployment, account, name, Web3.keccak(text=f"x25519 {name}"))
    asset = register_asset(w3, deployment, owner, "licensing-test-model")
    yield Env(
        w3, deployment, owner, buyer, partner, _actor(w3, "stranger"), _actor(w3, "node"),
        (_actor(w3, "compute-1"), _actor(w3, "compute-2")), asset,
    )
    w3.provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]


# --------------------------------------------------------------------- offers


def test_offer_for_an_unknown_asset_reverts(env: Env, chain_snapshot: str) -> None:
    with pytest.raises(revert_class("UnknownAsset")) as err:
        env.lic(env.owner).offer(999_999, LicenseKind.API, Terms(fee_per_call=FEE))
    assert err.value.error_args == {"assetId": 999_999}
    with pytest.raises(revert_class("UnknownAsset")):
        env.lic(env.owner).is_licensed(999_999, env.buyer.address, LicenseKind.API)


def test_only_the_asset_owner_can_offer(env: Env, chain_snapshot: str) -> None:
    with pytest.raises(revert_class("NotAssetOwner")) as err:
        env.lic(env.buyer).offer(env.asset, LicenseKind.API, Terms(fee_per_call=FEE))
    assert isinstance(err.value, Unauthorized)


@pytest.mark.parametrize(
    ("kind", "terms", "field"),
    [
        (LicenseKind.API, Terms(), "feePerCall"),
        (LicenseKind.LONG_TERM, Terms(price=PRICE), "duration"),
        (LicenseKind.PARTNERSHIP, Terms(price=PRICE, installment_count=1), "partner"),
        (LicenseKind.FULL_ACCESS, Terms(price=PRICE, revenue_split_bps=BPS + 1), "revenueSplitBps"),
    ],
)
def test_offer_terms_must_fit_the_kind(env: Env, chain_snapshot: str, kind: LicenseKind, terms: Terms, field: str) -> None:
    with pytest.raises(revert_class("InvalidTerms")) as err:
        env.lic(env.owner).offer(env.asset, kind, terms)
    assert err.value.error_args["field"] == field


def test_offer_views_and_withdrawal(env: Env, chain_snapshot: str) -> None:
    lic = env.lic(env.owner)
    offer_id = env.offer(LicenseKind.LONG_TERM, price=PRICE, duration=DAY)
    info = lic.offer_info(offer_id)
    assert (info.asset_id, info.kind, info.terms.price, info.publisher, info.active) == (
        env.asset, LicenseKind.LONG_TERM, PRICE, env.owner.address, True)
    with pytest.raises(revert_class("NotAssetOwner")):
        env.lic(env.buyer).withdraw_offer(offer_id)
    lic.withdraw_offer(offer_id)
    assert not lic.offer_info(offer_id).active
    with pytest.raises(revert_class("OfferNotActive")):
        env.lic(env.buyer).buy(offer_id, PRICE)
    with pytest.raises(revert_class("UnknownOffer")):
        lic.offer_info(offer_id + 100)


def test_buying_needs_a_sahara_id(env: Env, chain_snapshot: str) -> None:
    offer_id = env.offer(LicenseKind.API, fee_per_call=FEE)
    with pytest.raises(revert_class("NoIdentity")) as err:
        env.lic(env.stranger).buy(offer_id, FEE)
    assert err.value.error_args == {"account": env.stranger.address}


def test_the_owner_is_always_licensed(env: Env, chain_snapshot: str) -> None:
    lic = env.lic(env.owner)
    for kind in LicenseKind:
        assert lic.is_licensed(env.asset, env.owner.address, kind)
        assert not lic.is_licensed(env.asset, env.buyer.address, kind)


# --------------------------------------------------------------------- api metering


def test_api_license_end_to_end_pays_compute_parties_and_the_distributor(env: Env, chain_snapshot: str) -> None:
    owner, buyer = env.lic(env.owner), env.lic(env.buyer)
    offer_id = env.offer(LicenseKind.API, fee_per_call=FEE)
    bought = buyer.buy(offer_id, 10 * FEE)
    lid = bought.license_id
    assert bought.kind is LicenseKind.API and bought.paid == 10 * FEE
    assert buyer.is_licensed(env.asset, env.buyer.address, LicenseKind.API)
    assert buyer.license_of(env.asset, env.buyer.address, "api") == lid

    paid_before = env.paid_to_asset()
    receipt, signature = env.receipt(lid, 3)
    parties = [c.address for c in env.compute]
    posted = owner.post_call_receipt(receipt, signature, parties)
    amount = 3 * FEE
    per_party = amount * COMPUTE_FEE_BPS // BPS // 2
    assert (posted.calls, posted.total_calls, posted.amount, posted.compute_fee_per_party) == (3, 3, amount, per_party)
    assert env.paid_to_asset() - paid_before == amount - 2 * per_party
    record = owner.license(lid)
    assert (record.calls_paid, record.escrow, record.last_request_hash) == (3, 7 * FEE, receipt.last_request_hash)
    assert owner.credited(env.compute[0].address) == per_party

    # The owner's node key posts the next batch once approved; only new calls are paid.
    with pytest.raises(revert_class("NotOperatorOrOwner")):
        env.lic(env.node).post_call_receipt(*env.receipt(lid, 5))
    owner.set_operator(env.asset, env.node.address, True)
    assert owner.is_operator(env.asset, env.node.address)
    second = env.lic(env.node).post_call_receipt(*env.receipt(lid, 7), parties)
    assert (second.calls, second.amount) == (4, 4 * FEE)
    assert owner.license(lid).escrow == 3 * FEE

    # Compute parties pull their fees.
    compute = env.lic(env.compute[0])
    before = env.balance(env.compute[0].address)
    owed = compute.credited(env.compute[0].address)
    withdrawn = compute.withdraw()
    assert withdrawn == owed == per_party + 4 * FEE * COMPUTE_FEE_BPS // BPS // 2
    assert env.balance(env.compute[0].address) == before + withdrawn - env.last_gas_cost()
    with pytest.raises(revert_class("NothingToWithdraw")):
        compute.withdraw()


def test_call_receipt_without_compute_parties_pays_everything_to_the_distributor(env: Env, chain_snapshot: str) -> None:
    lid = env.lic(env.buyer).buy(env.offer(LicenseKind.API, fee_per_call=FEE), 2 * FEE).license_id
    before = env.paid_to_asset()
    env.lic(env.owner).post_call_receipt(*env.receipt(lid, 2))
    assert env.paid_to_asset() - before == 2 * FEE


def test_replayed_equal_or_lower_call_receipts_revert(env: Env, chain_snapshot: str) -> None:
    owner = env.lic(env.owner)
    lid = env.lic(env.buyer).buy(env.offer(LicenseKind.API, fee_per_call=FEE), 10 * FEE).license_id
    receipt5, sig5 = env.receipt(lid, 5)
    owner.post_call_receipt(receipt5, sig5)
    with pytest.raises(revert_class("StaleCallReceipt")) as replay:
        owner.post_call_receipt(receipt5, sig5)
    assert replay.value.error_args == {"total": 5, "paid": 5}
    assert isinstance(replay.value, ProtocolViolation)
    with pytest.raises(revert_class("StaleCallReceipt")):
        owner.post_call_receipt(*env.receipt(lid, 4))
    assert owner.license(lid).calls_paid == 5


def test_receipt_signed_by_someone_else_reverts(env: Env, chain_snapshot: str) -> None:
    owner = env.lic(env.owner)
    lid = env.lic(env.buyer).buy(env.offer(LicenseKind.API, fee_per_call=FEE), 10 * FEE).license_id
    receipt, forged = env.receipt(lid, 9, signer=env.owner)  # the owner inventing calls
    with pytest.raises(revert_class("InvalidReceiptSignature")) as err:
        owner.post_call_receipt(receipt, forged)
    assert err.value.error_args == {"signer": env.owner.address, "licensee": env.buyer.address}
    with pytest.raises(revert_class("InvalidReceiptSignature")):
        owner.post_call_receipt(receipt, b"\x01" * 65)
    # A receipt of another license cannot be moved onto this one.
    other = env.lic(env.buyer).buy(env.offer(LicenseKind.API, fee_per_call=FEE), FEE).license_id
    receipt_other, sig_other = env.receipt(other, 1)
    with pytest.raises(revert_class("ReceiptLicenseMismatch")):
        owner.post_call_receipt(receipt_other, sig_other, license_id=lid)
    # Signed for another contract (domain) -> recovers a different signer.
    foreign = sign_call_receipt(env.buyer, MeteringDomain(owner.domain().chain_id, env.node.address), receipt)
    with pytest.raises(revert_class("InvalidReceiptSignature")):
        owner.post_call_receipt(receipt, foreign)


def test_exhausted_credits_revert_and_unlicense_until_top_up(env: Env, chain_snapshot: str) -> None:
    owner, buyer = env.lic(env.owner), env.lic(env.buyer)
    lid = buyer.buy(env.offer(LicenseKind.API, fee_per_call=FEE), 2 * FEE).license_id
    with pytest.raises(revert_class("InsufficientCredits")) as err:
        owner.post_call_receipt(*env.receipt(lid, 3))
    assert err.value.error_args == {"needed": 3 * FEE, "available": 2 * FEE}
    owner.post_call_receipt(*env.receipt(lid, 2))
    assert not buyer.is_licensed(env.asset, env.buyer.address, LicenseKind.API)
    assert buyer.user_of(lid) == "0x" + "00" * 20
    buyer.top_up(lid, FEE)
    assert buyer.is_licensed(env.asset, env.buyer.address, LicenseKind.API)
    owner.post_call_receipt(*env.receipt(lid, 3))
    assert owner.license(lid).escrow == 0


def test_unused_credits_are_refunded_to_the_licensee_only(env: Env, chain_snapshot: str) -> None:
    buyer = env.lic(env.buyer)
    lid = buyer.buy(env.offer(LicenseKind.API, fee_per_call=FEE), 4 * FEE).license_id
    env.lic(env.owner).post_call_receipt(*env.receipt(lid, 1))
    with pytest.raises(revert_class("NotLicensee")):
        env.lic(env.owner).refund_credits(lid)
    buyer.refund_credits(lid)
    assert buyer.credited(env.buyer.address) == 3 * FEE
    assert not buyer.is_licensed(env.asset, env.buyer.address, LicenseKind.API)
    assert buyer.withdraw() == 3 * FEE
    with pytest.raises(revert_class("InsufficientCredits")):
        env.lic(env.owner).post_call_receipt(*env.receipt(lid, 2))


def test_api_purchase_below_one_call_is_insufficient(env: Env, chain_snapshot: str) -> None:
    offer_id = env.offer(LicenseKind.API, fee_per_call=FEE)
    with pytest.raises(revert_class("InsufficientPayment")) as err:
        env.lic(env.buyer).buy(offer_id, FEE - 1)
    assert err.value.error_args == {"sent": FEE - 1, "required": FEE}


def test_receipts_are_tied_to_the_api_kind(env: Env, chain_snapshot: str) -> None:
    lid = env.lic(env.buyer).buy(env.offer(LicenseKind.LONG_TERM, price=PRICE, duration=DAY), PRICE).license_id
    with pytest.raises(revert_class("WrongLicenseKind")):
        env.lic(env.owner).post_call_receipt(*env.receipt(lid, 1))


# --------------------------------------------------------------------- long-term


def test_long_term_license_pays_at_once_and_expires(
    env: Env, chain_snapshot: str, time_travel: Callable[[int], int]
) -> None:
    buyer = env.lic(env.buyer)
    offer_id = env.offer(LicenseKind.LONG_TERM, price=PRICE, duration=DAY)
    with pytest.raises(revert_class("WrongPayment")) as err:
        buyer.buy(offer_id, PRICE - 1)
    assert err.value.error_args == {"sent": PRICE - 1, "required": PRICE}
    before = env.paid_to_asset()
    bought = buyer.buy(offer_id, PRICE)
    assert env.paid_to_asset() - before == PRICE
    lid = bought.license_id
    start = buyer.license(lid).started_at
    assert bought.expires == start + DAY == buyer.user_expires(lid)
    assert buyer.user_of(lid) == env.buyer.address
    assert buyer.is_licensed(env.asset, env.buyer.address, "long-term")
    # The owner can claim what the license paid (it holds every Share).
    assert env.distributor.claimable(env.asset, env.owner.address) >= PRICE - 1

    time_travel(DAY)
    assert not buyer.is_licensed(env.asset, env.buyer.address, LicenseKind.LONG_TERM)
    assert buyer.user_of(lid) == "0x" + "00" * 20
    assert buyer.license_of(env.asset, env.buyer.address, LicenseKind.LONG_TERM) == lid


def test_expired_license_takes_no_more_credit(env: Env, chain_snapshot: str, time_travel: Callable[[int], int]) -> None:
    buyer = env.lic(env.buyer)
    lid = buyer.buy(env.offer(LicenseKind.API, fee_per_call=FEE, duration=3_600), 5 * FEE).license_id
    assert buyer.is_licensed(env.asset, env.buyer.address, LicenseKind.API)
    time_travel(3_600)
    assert not buyer.is_licensed(env.asset, env.buyer.address, LicenseKind.API)
    with pytest.raises(revert_class("LicenseExpired")) as err:
        buyer.top_up(lid, FEE)
    assert err.value.error_args["licenseId"] == lid
    # Calls made before expiry are still paid from the credits.
    env.lic(env.owner).post_call_receipt(*env.receipt(lid, 2))


# --------------------------------------------------------------------- partnership


def test_partnership_is_co_signed_by_the_named_partner_and_paid_in_installments(
    env: Env, chain_snapshot: str, time_travel: Callable[[int], int]
) -> None:
    terms_hash = Web3.keccak(text="joint venture terms v1")
    offer_id = env.offer(
        LicenseKind.PARTNERSHIP, price=PRICE, partner=env.partner.address, terms_hash=terms_hash,
        revenue_split_bps=2_500, installment_count=3, installment_interval=7 * DAY,
    )
    with pytest.raises(revert_class("NotPartner")) as err:
        env.lic(env.buyer).buy(offer_id, PRICE)
    assert err.value.error_args == {"account": env.buyer.address, "partner": env.partner.address}
    assert isinstance(err.value, Unauthorized)

    partner = env.lic(env.partner)
    with pytest.raises(revert_class("WrongPayment")):
        partner.buy(offer_id, PRICE // 2)
    before = env.paid_to_asset()
    bought = partner.buy(offer_id, PRICE)
    lid = bought.license_id
    assert env.paid_to_asset() - before == PRICE
    assert bought.tx is not None and bought.tx.events_named("InstallmentPaid")[0].args["index"] == 1
    record = partner.license(lid)
    assert (record.terms.terms_hash, record.terms.revenue_split_bps, record.installments_paid) == (terms_hash, 2_500, 1)
    assert partner.is_licensed(env.asset, env.partner.address, LicenseKind.PARTNERSHIP)
    # The co-signed offer is taken: nobody can accept it again.
    assert not partner.offer_info(offer_id).active
    with pytest.raises(revert_class("OfferNotActive")):
        partner.buy(offer_id, PRICE)

    time_travel(7 * DAY + 1)  # second installment overdue
    assert not partner.is_licensed(env.asset, env.partner.address, LicenseKind.PARTNERSHIP)
    paid = partner.pay_installment(lid, PRICE)
    assert (paid.index, paid.amount) == (2, PRICE)
    assert partner.is_licensed(env.asset, env.partner.address, LicenseKind.PARTNERSHIP)
    partner.pay_installment(lid, PRICE)
    with pytest.raises(revert_class("NoInstallmentDue")):
        partner.pay_installment(lid, PRICE)
    assert env.paid_to_asset() - before == 3 * PRICE
    time_travel(365 * DAY)  # fully paid, no duration: the partnership stays current
    assert partner.is_licensed(env.asset, env.partner.address, LicenseKind.PARTNERSHIP)


# --------------------------------------------------------------------- full access


def _full_access(env: Env) -> tuple[LicensingClient, LicensingClient, int]:
    owner, buyer = env.lic(env.owner), env.lic(env.buyer)
    offer_id = env.offer(LicenseKind.FULL_ACCESS, price=PRICE)
    with pytest.raises(revert_class("WrongPayment")):
        buyer.buy(offer_id, PRICE + 1)
    return owner, buyer, buyer.buy(offer_id, PRICE).license_id


def test_full_access_escrow_is_released_after_a_quiet_dispute_window(
    env: Env, chain_snapshot: str, time_travel: Callable[[int], int]
) -> None:
    licensing_balance = env.balance(env.deployment.address("Licensing"))
    owner, buyer, lid = _full_access(env)
    record = buyer.license(lid)
    assert (record.escrow, record.escrow_state) == (PRICE, EscrowState.AWAITING_KEY)
    assert record.recipient_key == Web3.keccak(text="x25519 lic-buyer")
    assert env.balance(env.deployment.address("Licensing")) - licensing_balance == PRICE
    assert not buyer.is_licensed(env.asset, env.buyer.address, LicenseKind.FULL_ACCESS)

    with pytest.raises(revert_class("NotOperatorOrOwner")):
        buyer.deliver_key(lid, b"wrapped")
    with pytest.raises(revert_class("EmptyWrappedKey")):
        owner.deliver_key(lid, b"")
    wrapped = os.urandom(92)
    delivered = owner.deliver_key(lid, wrapped)
    assert (delivered.wrapped_key, delivered.recipient_key) == (wrapped, record.recipient_key)
    assert buyer.wrapped_key(lid) == wrapped
    with pytest.raises(revert_class("WrongEscrowState")):
        owner.deliver_key(lid, wrapped)
    with pytest.raises(revert_class("DisputeWindowOpen")):
        owner.release(lid)

    time_travel(WINDOW + 1)
    with pytest.raises(revert_class("DisputeWindowClosed")):
        buyer.dispute_key(lid)
    before = env.paid_to_asset()
    settled = env.lic(env.stranger).release(lid)  # anyone may release
    assert (settled.amount, settled.refunded) == (PRICE, False)
    assert env.paid_to_asset() - before == PRICE
    assert buyer.license(lid).escrow_state is EscrowState.RELEASED
    assert buyer.is_licensed(env.asset, env.buyer.address, LicenseKind.FULL_ACCESS)
    assert env.balance(env.deployment.address("Licensing")) == licensing_balance


def test_key_delivery_after_the_timeout_reverts_and_the_licensee_is_refunded(
    env: Env, chain_snapshot: str, time_travel: Callable[[int], int]
) -> None:
    owner, buyer, lid = _full_access(env)
    with pytest.raises(revert_class("KeyDeliveryPending")):
        buyer.refund(lid)
    time_travel(TIMEOUT + 1)
    with pytest.raises(revert_class("KeyDeliveryTimedOut")) as err:
        owner.deliver_key(lid, b"too late")
    assert err.value.error_args["licenseId"] == lid
    settled = buyer.refund(lid)
    assert (settled.amount, settled.refunded) == (PRICE, True)
    assert buyer.credited(env.buyer.address) == PRICE
    before = env.balance(env.buyer.address)
    assert buyer.withdraw() == PRICE
    assert env.balance(env.buyer.address) == before + PRICE - env.last_gas_cost()
    with pytest.raises(revert_class("WrongEscrowState")):
        buyer.refund(lid)
    assert not buyer.is_licensed(env.asset, env.buyer.address, LicenseKind.FULL_ACCESS)


def test_full_access_needs_a_registered_x25519_key(env: Env, chain_snapshot: str) -> None:
    offer_id = env.offer(LicenseKind.FULL_ACCESS, price=PRICE)
    with pytest.raises(revert_class("NoIdentity")):
        env.lic(env.stranger).buy(offer_id, PRICE)


def _governance_resolves(env: Env, lid: int, refund_licensee: bool, travel: Callable[[int], int]) -> None:
    """Vote ``resolveKeyDispute(lid, refund_licensee)`` through Governor and timelock."""
    from chain.clients.collab_token import CollabTokenClient

    deployer = _deployer(env)
    token = CollabTokenClient.from_deployment(env.deployment, env.w3, deployer)
    token.delegate()
    governor = GovernorClient.from_deployment(env.deployment, env.w3, deployer)
    lic = env.lic(deployer)
    calldata = bytes.fromhex(lic.contract.encode_abi("resolveKeyDispute", args=[lid, refund_licensee])[2:])
    proposal = Proposal((lic.address,), (0,), (calldata,), f"Resolve key dispute of license {lid}")
    travel(1)  # votes are counted from the block after delegation
    governor.propose(proposal)
    travel(GOV.voting_delay + 1)
    governor.cast_vote(proposal.proposal_id, VoteSupport.FOR)
    travel(GOV.voting_period + 1)
    assert governor.advance(proposal.proposal_id).state is ProposalState.QUEUED
    travel(GOV.timelock_delay + 1)
    assert governor.advance(proposal.proposal_id).action == "executed"


def _deployer(env: Env) -> LocalAccount:
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic("test test test test test test test test test test test junk")


def test_key_dispute_freezes_escrow_until_governance_refunds(
    env: Env, chain_snapshot: str, time_travel: Callable[[int], int]
) -> None:
    owner, buyer, lid = _full_access(env)
    owner.deliver_key(lid, b"a key that does not decrypt")
    with pytest.raises(revert_class("NotLicensee")):
        env.lic(env.stranger).dispute_key(lid)
    buyer.dispute_key(lid)
    assert buyer.license(lid).escrow_state is EscrowState.DISPUTED
    time_travel(WINDOW + 1)
    with pytest.raises(revert_class("WrongEscrowState")):
        owner.release(lid)
    # Only the admin role (the timelock) decides; not the owner, not the licensee.
    timelock = env.deployment.address("TimelockController")
    assert owner._call("hasRole", owner._call("DEFAULT_ADMIN_ROLE"), timelock)
    with pytest.raises(revert_class("AccessControlUnauthorizedAccount")):
        buyer.resolve_key_dispute(lid, True)
    with pytest.raises(revert_class("AccessControlUnauthorizedAccount")):
        owner.resolve_key_dispute(lid, False)

    _governance_resolves(env, lid, True, time_travel)
    record = buyer.license(lid)
    assert (record.escrow_state, record.escrow) == (EscrowState.REFUNDED, 0)
    assert buyer.credited(env.buyer.address) == PRICE
    assert not buyer.is_licensed(env.asset, env.buyer.address, LicenseKind.FULL_ACCESS)


def test_key_dispute_rejected_by_governance_pays_the_owner(
    env: Env, chain_snapshot: str, time_travel: Callable[[int], int]
) -> None:
    owner, buyer, lid = _full_access(env)
    owner.deliver_key(lid, b"a fine key")
    buyer.dispute_key(lid)
    before = env.paid_to_asset()
    _governance_resolves(env, lid, False, time_travel)
    assert env.paid_to_asset() - before == PRICE
    assert buyer.is_licensed(env.asset, env.buyer.address, LicenseKind.FULL_ACCESS)


def test_ownership_transfer_lapses_old_offers(env: Env, chain_snapshot: str) -> None:
    offer_id = env.offer(LicenseKind.LONG_TERM, price=PRICE, duration=DAY)
    assets = _contract(env.w3, env.deployment, "AssetRegistry", env.owner)
    assets._transact("transferAssetOwnership", env.asset, env.partner.address)
    with pytest.raises(revert_class("OfferNotActive")):
        env.lic(env.buyer).buy(offer_id, PRICE)
    assert env.lic(env.buyer).is_licensed(env.asset, env.partner.address, LicenseKind.API)


# --------------------------------------------------------------------- CLI


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli_run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``collab --json …`` in-process (the real click tree and error mapping) for a home."""
    from collab.cli import run

    def invoke(home: Path, deployment_path: Path, *args: str, json_output: bool = True) -> CliResult:
        monkeypatch.setenv("COLLAB_HOME", str(home))
        monkeypatch.setenv("COLLAB_DEPLOYMENT", str(deployment_path))
        monkeypatch.setenv("COLLAB_PASSPHRASE", "pw")
        capsys.readouterr()
        code = run(["--json", *args] if json_output else list(args))
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return invoke


def test_cli_offer_buy_show_check(env: Env, chain_snapshot: str, tmp_path: Path, cli_run: Callable[..., CliResult]) -> None:
    from collab.identity import Identity

    deployment_path = tmp_path / "deployment.json"
    env.deployment.save(deployment_path)
    # The owner and the buyer each get a home with a real keystore and a Sahara ID.
    homes = {}
    for role in ("owner", "buyer"):
        home = tmp_path / role
        ident = Identity.create(home, "pw", scrypt_n=2)
        env.w3.provider.make_request("anvil_setBalance", [ident.address, hex(10**21)])  # type: ignore[arg-type]
        register_identity(env.w3, env.deployment, ident.account, f"cli-{role}", ident.x25519_public)
        homes[role] = (home, ident)
    owner_home, owner_id = homes["owner"]
    buyer_home, buyer_id = homes["buyer"]
    asset = register_asset(env.w3, env.deployment, owner_id.account, "cli-model")

    terms = tmp_path / "terms.txt"
    terms.write_text("use it well")
    out = cli_run(owner_home, deployment_path, "license", "offer", str(asset), "--kind", "long-term",
               "--price", str(PRICE), "--duration", str(DAY), "--terms-file", str(terms))
    assert out.returncode == EXIT_OK, out.stderr
    offered = json.loads(out.stdout)
    assert offered["kind"] == "long-term" and offered["terms"]["terms_hash"] == "0x" + Web3.keccak(text="use it well").hex().removeprefix("0x")

    check = cli_run(buyer_home, deployment_path, "license", "check", str(asset), "--kind", "long-term")
    assert check.returncode == EXIT_UNAUTHORIZED
    assert json.loads(check.stdout)["details"]["user"] == buyer_id.address

    bought = cli_run(buyer_home, deployment_path, "license", "buy", str(offered["offer_id"]))
    assert bought.returncode == EXIT_OK, bought.stderr
    license_id = json.loads(bought.stdout)["license_id"]

    check = cli_run(buyer_home, deployment_path, "license", "check", str(asset), "--kind", "long-term")
    assert check.returncode == EXIT_OK, check.stderr
    assert json.loads(check.stdout) == {"asset_id": asset, "user": buyer_id.address, "kind": "long-term",
                                        "licensed": True, "license_id": license_id}
    human = cli_run(buyer_home, deployment_path, "license", "check", str(asset), "--kind", "long-term", json_output=False)
    assert human.returncode == EXIT_OK and "is licensed for asset" in human.stdout
    # --user checks anyone, without unlocking keys.
    other = cli_run(tmp_path / "nobody", deployment_path, "license", "check", str(asset), "--kind", "api",
                 "--user", env.stranger.address)
    assert other.returncode == EXIT_UNAUTHORIZED

    shown = cli_run(tmp_path / "nobody", deployment_path, "license", "show", str(license_id))
    assert shown.returncode == EXIT_OK, shown.stderr
    record = json.loads(shown.stdout)
    assert (record["licensee"], record["kind"], record["current"], record["terms"]["price"]) == (
        buyer_id.address, "long-term", True, PRICE)

    denied = cli_run(tmp_path / "nobody", deployment_path, "license", "check", str(asset), "--kind", "api",
                     "--user", env.stranger.address, json_output=False)
    assert denied.returncode == EXIT_UNAUTHORIZED and denied.stderr.startswith("error: ") and denied.stdout == ""
    # API credit: buy one call, top up, get refunded through the licensing contract, withdraw.
    api = json.loads(cli_run(owner_home, deployment_path, "license", "offer", str(asset), "--kind", "api",
                             "--fee-per-call", str(FEE)).stdout)
    api_license = json.loads(cli_run(buyer_home, deployment_path, "license", "buy", str(api["offer_id"])).stdout)
    assert api_license["paid"] == FEE
    topped = cli_run(buyer_home, deployment_path, "license", "top-up", str(api_license["license_id"]), "--value", str(FEE))
    assert topped.returncode == EXIT_OK and json.loads(topped.stdout)["escrow"] == 2 * FEE
    assert json.loads(cli_run(buyer_home, deployment_path, "license", "withdraw").stdout) == {"withdrawn": 0}
    LicensingClient.from_deployment(env.deployment, env.w3, buyer_id.account).refund_credits(api_license["license_id"])
    assert json.loads(cli_run(buyer_home, deployment_path, "license", "withdraw").stdout) == {"withdrawn": 2 * FEE}

    missing = cli_run(tmp_path / "nobody", deployment_path, "license", "show", "9999")
    assert missing.returncode == EXIT_NOT_FOUND
    bad = cli_run(owner_home, deployment_path, "license", "offer", str(asset), "--kind", "api")
    assert bad.returncode == 2 and "fee-per-call" in json.loads(bad.stdout)["message"]
    unknown = cli_run(owner_home, deployment_path, "license", "offer", "424242", "--kind", "api", "--fee-per-call", "1")
    assert unknown.returncode == EXIT_NOT_FOUND and "UnknownAsset" in unknown.stdout


# --------------------------------------------------------------------- money conservation (property)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fee=st.integers(min_value=1, max_value=10**15),
    credit_calls=st.integers(min_value=1, max_value=50),
    totals=st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=6),
    n_parties=st.integers(min_value=0, max_value=2),
)
def test_metering_conserves_money(env: Env, fee: int, credit_calls: int, totals: list[int], n_parties: int) -> None:
    """Whatever receipts arrive, credit = escrow left + distributor revenue + compute fees, to the wei."""
    snapshot = env.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        owner, buyer = env.lic(env.owner), env.lic(env.buyer)
        credit = fee * credit_calls
        lid = buyer.buy(env.offer(LicenseKind.API, fee_per_call=fee), credit).license_id
        parties = [c.address for c in env.compute[:n_parties]]
        revenue_before = env.paid_to_asset()
        paid_calls = 0
        for total in totals:
            if total == 0:
                continue
            receipt, signature = env.receipt(lid, total)
            new_calls = total - paid_calls
            if new_calls <= 0:
                with pytest.raises(revert_class("StaleCallReceipt")):
                    owner.post_call_receipt(receipt, signature, parties)
            elif new_calls * fee > credit - paid_calls * fee:
                with pytest.raises(revert_class("InsufficientCredits")):
                    owner.post_call_receipt(receipt, signature, parties)
            else:
                owner.post_call_receipt(receipt, signature, parties)
                paid_calls = total
        record = owner.license(lid)
        compute = sum(owner.credited(p) for p in parties)
        revenue = env.paid_to_asset() - revenue_before
        assert record.calls_paid == paid_calls
        assert record.escrow == credit - paid_calls * fee
        assert record.escrow + revenue + compute == credit
        assert compute <= paid_calls * fee * COMPUTE_FEE_BPS // BPS
        assert buyer.is_licensed(env.asset, env.buyer.address, LicenseKind.API) == (record.escrow >= fee)
    finally:
        env.w3.provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]
