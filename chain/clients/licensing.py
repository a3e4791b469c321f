"""Typed client of ``Licensing``: offers, purchases, call receipts, Full-access escrow.

Amounts are wei (int). Every transaction returns a dataclass decoded from the
events it emitted, so callers (CLI, node, tests) never parse logs themselves.
Call receipts are built and signed with :mod:`collab.metering`; the client's
:meth:`LicensingClient.domain` gives the EIP-712 domain they must be signed for.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_utils import to_checksum_address

from chain.client import ContractClient, Event, TxResult
from collab.errors import BadInput, InternalError, Unauthorized
from collab.metering import CallReceipt, MeteringDomain

ZERO_ADDRESS = "0x" + "00" * 20
ZERO_BYTES32 = b"\x00" * 32


class LicenseKind(enum.IntEnum):
    """``ILicensing.LicenseKind`` (same order as the Solidity enum)."""

    PARTNERSHIP = 0
    API = 1
    FULL_ACCESS = 2
    LONG_TERM = 3

    @property
    def label(self) -> str:
        """CLI spelling: ``api``, ``full-access``, ``long-term``, ``partnership``."""
        return self.name.lower().replace("_", "-")

    @classmethod
    def parse(cls, text: str | int | LicenseKind) -> LicenseKind:
        """From a CLI label, an enum name or the integer value; BadInput otherwise."""
        if isinstance(text, int):
            try:
                return cls(text)
            except ValueError:
                raise BadInput(f"unknown license kind {text}") from None
        key = str(text).strip().upper().replace("-", "_")
        if key in cls.__members__:
            return cls[key]
        raise BadInput(f"unknown license kind {text!r} (known: {', '.join(k.label for k in cls)})")


class EscrowState(enum.IntEnum):
    """``ILicensing.EscrowState``: where a Full-access escrow stands."""

    NONE = 0
    AWAITING_KEY = 1
    KEY_DELIVERED = 2
    DISPUTED = 3
    RELEASED = 4
    REFUNDED = 5


@dataclass(frozen=True)
class Terms:
    """``ILicensing.Terms``; each kind uses its own fields (see docs/contracts.md)."""

    price: int = 0
    fee_per_call: int = 0
    duration: int = 0
    terms_hash: bytes = ZERO_BYTES32
    revenue_split_bps: int = 0
    installment_interval: int = 0
    installment_count: int = 0
    partner: str = ZERO_ADDRESS

    def as_tuple(self) -> tuple[Any, ...]:
        """The Solidity struct tuple."""
        if len(self.terms_hash) != 32:
            raise BadInput(f"terms hash must be 32 bytes, got {len(self.terms_hash)}")
        return (
            int(self.price), int(self.fee_per_call), int(self.duration), bytes(self.terms_hash),
            int(self.revenue_split_bps), int(self.installment_interval), int(self.installment_count),
            to_checksum_address(self.partner),
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Terms:
        """From the plain dict ``chain.client.plain`` makes of the struct."""
        return cls(
            price=int(d["price"]), fee_per_call=int(d["feePerCall"]), duration=int(d["duration"]),
            terms_hash=_b32(d["termsHash"]), revenue_split_bps=int(d["revenueSplitBps"]),
            installment_interval=int(d["installmentInterval"]), installment_count=int(d["installmentCount"]),
            partner=to_checksum_address(d["partner"]),
        )


@dataclass(frozen=True)
class Offer:
    """``ILicensing.Offer`` plus its id."""

    offer_id: int
    asset_id: int
    kind: LicenseKind
    terms: Terms
    publisher: str
    active: bool


@dataclass(frozen=True)
class License:
    """``ILicensing.License`` plus its id."""

    license_id: int
    offer_id: int
    asset_id: int
    kind: LicenseKind
    licensee: str
    started_at: int
    expires: int
    terms: Terms
    escrow: int
    calls_paid: int
    last_request_hash: bytes
    escrow_state: EscrowState
    delivered_at: int
    installments_paid: int
    recipient_key: bytes

    def to_json(self) -> dict[str, Any]:
        """JSON-able view with enum labels."""
        return {
            "license_id": self.license_id, "offer_id": self.offer_id, "asset_id": self.asset_id,
            "kind": self.kind.label, "licensee": self.licensee, "started_at": self.started_at,
            "expires": self.expires, "terms": _terms_json(self.terms), "escrow": self.escrow,
            "calls_paid": self.calls_paid, "last_request_hash": "0x" + self.last_request_hash.hex(),
            "escrow_state": self.escrow_state.name.lower(), "delivered_at": self.delivered_at,
            "installments_paid": self.installments_paid, "recipient_key": "0x" + self.recipient_key.hex(),
        }


def _terms_json(t: Terms) -> dict[str, Any]:
    return {
        "price": t.price, "fee_per_call": t.fee_per_call, "duration": t.duration,
        "terms_hash": "0x" + t.terms_hash.hex(), "revenue_split_bps": t.revenue_split_bps,
        "installment_interval": t.installment_interval, "installment_count": t.installment_count,
        "partner": t.partner,
    }


def offer_json(o: Offer) -> dict[str, Any]:
    """JSON-able view of an offer."""
    return {
        "offer_id": o.offer_id, "asset_id": o.asset_id, "kind": o.kind.label, "terms": _terms_json(o.terms),
        "publisher": o.publisher, "active": o.active,
    }


# --------------------------------------------------------------------- events


@dataclass(frozen=True)
class OfferPublished:
    """``OfferPublished``."""

    offer_id: int
    asset_id: int
    kind: LicenseKind
    publisher: str
    tx: TxResult | None = field(default=None, compare=False)


@dataclass(frozen=True)
class LicenseBought:
    """``LicenseBought``."""

    license_id: int
    offer_id: int
    asset_id: int
    licensee: str
    kind: LicenseKind
    paid: int
    expires: int
    tx: TxResult | None = field(default=None, compare=False)


@dataclass(frozen=True)
class CallReceiptPosted:
    """``CallReceiptPosted`` (+ the compute parties' credit, when any)."""

    license_id: int
    total_calls: int
    calls: int
    amount: int
    compute_fee_per_party: int = 0
    tx: TxResult | None = field(default=None, compare=False)


@dataclass(frozen=True)
class KeyDelivered:
    """``KeyDelivered``: the wrap and the X25519 key it is for."""

    license_id: int
    recipient_key: bytes
    wrapped_key: bytes
    tx: TxResult | None = field(default=None, compare=False)


@dataclass(frozen=True)
class EscrowSettled:
    """``EscrowReleased`` or ``EscrowRefunded`` (``refunded`` tells which)."""

    license_id: int
    amount: int
    refunded: bool
    tx: TxResult | None = field(default=None, compare=False)


@dataclass(frozen=True)
class InstallmentPaid:
    """``InstallmentPaid``."""

    license_id: int
    index: int
    amount: int
    tx: TxResult | None = field(default=None, compare=False)


def _one(tx: TxResult, name: str) -> Event:
    found = tx.events_named(name)
    if not found:
        raise InternalError(f"Licensing transaction {tx.tx_hash} emitted no {name}")
    return found[0]


def _b32(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    text = str(value)
    return bytes.fromhex(text[2:] if text.startswith("0x") else text)


def _bytes(value: Any) -> bytes:
    return _b32(value) if value else b""


# --------------------------------------------------------------------- client


class LicensingClient(ContractClient):
    """Calls on the deployed ``Licensing``."""

    CONTRACT = "Licensing"

    # ------------------------------------------------------------------ views

    def domain(self) -> MeteringDomain:
        """The EIP-712 domain call receipts for this contract are signed in."""
        return MeteringDomain(chain_id=int(self.w3.eth.chain_id), verifying_contract=self.address)

    def is_licensed(self, asset_id: int, user: str, kind: LicenseKind | str) -> bool:
        """Whether ``user`` may use ``asset_id`` under ``kind`` now (owners always may)."""
        return bool(self._call("isLicensed", int(asset_id), to_checksum_address(user), int(LicenseKind.parse(kind))))

    def license_of(self, asset_id: int, user: str, kind: LicenseKind | str) -> int:
        """Latest license id of ``user`` for the asset and kind (0 for none)."""
        return int(self._call("licenseOf", int(asset_id), to_checksum_address(user), int(LicenseKind.parse(kind))))

    def license(self, license_id: int) -> License:
        """The license record (UnknownLicense if none)."""
        raw = self._call("license", int(license_id))
        return self._license_from(int(license_id), raw)

    def offer_info(self, offer_id: int) -> Offer:
        """The offer record (UnknownOffer if none)."""
        raw = self._call("offer", int(offer_id))
        asset_id, kind, terms, publisher, active = raw
        return Offer(int(offer_id), int(asset_id), LicenseKind(int(kind)), self._terms(terms),
                     to_checksum_address(publisher), bool(active))

    def wrapped_key(self, license_id: int) -> bytes:
        """The wrapped vault key delivered for a Full-access license (b"" before delivery)."""
        return bytes(self._call("wrappedKey", int(license_id)))

    def user_of(self, license_id: int) -> str:
        """ERC-4907-style user: the licensee while current, else the zero address."""
        return to_checksum_address(self._call("userOf", int(license_id)))

    def user_expires(self, license_id: int) -> int:
        """ERC-4907-style expiry timestamp (0 for none)."""
        return int(self._call("userExpires", int(license_id)))

    def is_operator(self, asset_id: int, operator: str) -> bool:
        """Whether ``operator`` may post receipts and keys for the asset's current owner."""
        return bool(self._call("isOperator", int(asset_id), to_checksum_address(operator)))

    def credited(self, account: str) -> int:
        """Wei withdrawable by ``account`` (compute fees, refunds)."""
        return int(self._call("credited", to_checksum_address(account)))

    def call_receipt_digest(self, receipt: CallReceipt) -> bytes:
        """The EIP-712 digest the contract checks (for cross-checking :mod:`collab.metering`)."""
        return bytes(self._call("callReceiptDigest", receipt.as_tuple()))

    def offer_count(self) -> int:
        """Offers published so far."""
        return int(self._call("offerCount"))

    def license_count(self) -> int:
        """Licenses sold so far."""
        return int(self._call("licenseCount"))

    # ------------------------------------------------------------------ offers and purchases

    def offer(self, asset_id: int, kind: LicenseKind | str, terms: Terms) -> OfferPublished:
        """Publish an offer for an asset the account owns."""
        tx = self._transact("offer", int(asset_id), int(LicenseKind.parse(kind)), terms.as_tuple())
        a = _one(tx, "OfferPublished").args
        return OfferPublished(int(a["offerId"]), int(a["assetId"]), LicenseKind(int(a["kind"])),
                              to_checksum_address(a["publisher"]), tx)

    def withdraw_offer(self, offer_id: int) -> TxResult:
        """Stop selling an offer."""
        return self._transact("withdrawOffer", int(offer_id))

    def buy(self, offer_id: int, value: int = 0) -> LicenseBought:
        """Take an offer, sending ``value`` wei (credit, price or first installment)."""
        tx = self._transact("buy", int(offer_id), value=int(value))
        a = _one(tx, "LicenseBought").args
        return LicenseBought(int(a["licenseId"]), int(a["offerId"]), int(a["assetId"]),
                             to_checksum_address(a["licensee"]), LicenseKind(int(a["kind"])),
                             int(a["paid"]), int(a["expires"]), tx)

    # ------------------------------------------------------------------ api metering

    def set_operator(self, asset_id: int, operator: str, approved: bool = True) -> TxResult:
        """Let ``operator`` (e.g. the owner's node key) post receipts and keys for the asset."""
        return self._transact("setOperator", int(asset_id), to_checksum_address(operator), bool(approved))

    def post_call_receipt(
        self, receipt: CallReceipt, signature: bytes, compute_parties: Sequence[str] = (), license_id: int | None = None
    ) -> CallReceiptPosted:
        """Post the licensee-signed receipt; fees for the calls not yet paid are released."""
        lid = receipt.license_id if license_id is None else int(license_id)
        parties = [to_checksum_address(p) for p in compute_parties]
        tx = self._transact("postCallReceipt", lid, receipt.as_tuple(), bytes(signature), parties)
        a = _one(tx, "CallReceiptPosted").args
        fees = tx.events_named("ComputeFeesCredited")
        per_party = int(fees[0].args["perParty"]) if fees else 0
        return CallReceiptPosted(int(a["licenseId"]), int(a["totalCalls"]), int(a["calls"]), int(a["amount"]), per_party, tx)

    def top_up(self, license_id: int, value: int) -> TxResult:
        """Add API credits."""
        return self._transact("topUp", int(license_id), value=int(value))

    def refund_credits(self, license_id: int) -> TxResult:
        """Credit the unused API credits back to the licensee (then ``withdraw``)."""
        return self._transact("refundCredits", int(license_id))

    # ------------------------------------------------------------------ full access

    def deliver_key(self, license_id: int, wrapped_key: bytes) -> KeyDelivered:
        """Post the vault key wrapped for the licensee's X25519 key."""
        tx = self._transact("deliverKey", int(license_id), bytes(wrapped_key))
        a = _one(tx, "KeyDelivered").args
        return KeyDelivered(int(a["licenseId"]), _b32(a["recipientKey"]), _bytes(a["wrappedKey"]), tx)

    def dispute_key(self, license_id: int) -> TxResult:
        """Contest a delivered key (licensee, inside the dispute window)."""
        return self._transact("disputeKey", int(license_id))

    def release(self, license_id: int) -> EscrowSettled:
        """Pay the escrow to the distributor after a quiet dispute window."""
        return self._settled(self._transact("release", int(license_id)))

    def refund(self, license_id: int) -> EscrowSettled:
        """Credit the escrow back after a missed key delivery."""
        return self._settled(self._transact("refund", int(license_id)))

    def resolve_key_dispute(self, license_id: int, refund_licensee: bool) -> EscrowSettled:
        """Decide a key dispute (admin role: the timelock in deployment)."""
        return self._settled(self._transact("resolveKeyDispute", int(license_id), bool(refund_licensee)))

    # ------------------------------------------------------------------ partnership and payouts

    def pay_installment(self, license_id: int, value: int) -> InstallmentPaid:
        """Pay the next partnership installment."""
        tx = self._transact("payInstallment", int(license_id), value=int(value))
        a = _one(tx, "InstallmentPaid").args
        return InstallmentPaid(int(a["licenseId"]), int(a["index"]), int(a["amount"]), tx)

    def withdraw(self) -> int:
        """Withdraw everything credited to the account; returns wei sent."""
        tx = self._transact("withdraw")
        return int(_one(tx, "Withdrawn").args["amount"])

    # ------------------------------------------------------------------ helpers

    def require_account(self) -> str:
        """The acting address, or Unauthorized."""
        if self.account is None:
            raise Unauthorized("no account unlocked", hint="unlock an identity (COLLAB_PASSPHRASE)")
        return to_checksum_address(self.account.address)

    @staticmethod
    def _settled(tx: TxResult) -> EscrowSettled:
        released = tx.events_named("EscrowReleased")
        if released:
            return EscrowSettled(int(released[0].args["licenseId"]), int(released[0].args["amount"]), False, tx)
        a = _one(tx, "EscrowRefunded").args
        return EscrowSettled(int(a["licenseId"]), int(a["amount"]), True, tx)

    @staticmethod
    def _terms(raw: Sequence[Any]) -> Terms:
        price, fee, duration, terms_hash, split, interval, count, partner = raw
        return Terms(int(price), int(fee), int(duration), bytes(terms_hash), int(split), int(interval), int(count),
                     to_checksum_address(partner))

    def _license_from(self, license_id: int, raw: Sequence[Any]) -> License:
        (offer_id, asset_id, kind, licensee, started_at, expires, terms, escrow, calls_paid, last_hash,
         escrow_state, delivered_at, installments_paid, recipient_key) = raw
        return License(
            license_id=license_id, offer_id=int(offer_id), asset_id=int(asset_id), kind=LicenseKind(int(kind)),
            licensee=to_checksum_address(licensee), started_at=int(started_at), expires=int(expires),
            terms=self._terms(terms), escrow=int(escrow), calls_paid=int(calls_paid),
            last_request_hash=bytes(last_hash), escrow_state=EscrowState(int(escrow_state)),
            delivered_at=int(delivered_at), installments_paid=int(installments_paid),
            recipient_key=bytes(recipient_key),
        )
