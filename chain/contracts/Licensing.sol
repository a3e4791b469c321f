// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {ILicensing} from "./interfaces/ILicensing.sol";
import {IProtocolParams} from "./interfaces/IProtocolParams.sol";
import {IIdentityRegistry} from "./interfaces/IIdentityRegistry.sol";
import {IAssetRegistry} from "./interfaces/IAssetRegistry.sol";
import {IRevenueDistributor} from "./interfaces/IRevenueDistributor.sol";

/// @title Licensing
/// @notice Asset owners publish offers of four kinds; buyers with a Sahara ID take them as licenses.
/// Revenue goes to the asset's `RevenueDistributor`; compute fees and refunds are credited and pulled.
/// @dev Api metering trusts nothing but the licensee's signature: receipts are cumulative, so the
/// contract pays only `totalCalls - callsPaid` and an old receipt can never be replayed. Governed
/// numbers (`COMPUTE_FEE_BPS`, `KEY_DELIVERY_TIMEOUT`, `KEY_DISPUTE_WINDOW`) are read when used.
contract Licensing is ILicensing, AccessControl, ReentrancyGuard, EIP712 {
    /// @notice EIP-712 type hash of `CallReceipt`.
    bytes32 public constant CALL_RECEIPT_TYPEHASH =
        keccak256("CallReceipt(uint256 licenseId,uint256 totalCalls,bytes32 lastRequestHash)");
    /// @notice ProtocolParams key: basis points of each API fee paid to the compute parties.
    bytes32 public constant PARAM_COMPUTE_FEE_BPS = keccak256("COMPUTE_FEE_BPS");
    /// @notice ProtocolParams key: seconds the owner has to deliver a Full-access key.
    bytes32 public constant PARAM_KEY_DELIVERY_TIMEOUT = keccak256("KEY_DELIVERY_TIMEOUT");
    /// @notice ProtocolParams key: seconds the licensee has to contest a delivered key.
    bytes32 public constant PARAM_KEY_DISPUTE_WINDOW = keccak256("KEY_DISPUTE_WINDOW");
    uint256 private constant _BPS = 10_000;

    /// @notice Governed parameters.
    IProtocolParams public immutable PARAMS;
    /// @notice Sahara IDs (buyers need one; Full-access keys are wrapped for its X25519 key).
    IIdentityRegistry public immutable IDENTITY;
    /// @notice The asset registry (existence and ownership).
    IAssetRegistry public immutable ASSETS;
    /// @notice Where license revenue is paid, per asset.
    IRevenueDistributor public immutable DISTRIBUTOR;

    /// @inheritdoc ILicensing
    uint256 public offerCount;
    /// @inheritdoc ILicensing
    uint256 public licenseCount;
    /// @inheritdoc ILicensing
    mapping(address account => uint256 amount) public credited;

    mapping(uint256 offerId => Offer) private _offers;
    mapping(uint256 licenseId => License) private _licenses;
    mapping(uint256 licenseId => bytes) private _wrappedKeys;
    mapping(uint256 assetId => mapping(address user => mapping(LicenseKind => uint256 licenseId))) private _latest;
    mapping(uint256 assetId => mapping(address owner => mapping(address operator => bool))) private _operators;

    /// @param params ProtocolParams.
    /// @param identity IdentityRegistry.
    /// @param assets AssetRegistry.
    /// @param distributor RevenueDistributor.
    /// @param admin Holder of the admin role (decides key disputes; the timelock in deployment).
    constructor(address params, address identity, address assets, address distributor, address admin)
        EIP712("collab-licensing", "1")
    {
        // INVARIANT: every dependency and the admin exist.
        if (
            params == address(0) || identity == address(0) || assets == address(0) || distributor == address(0)
                || admin == address(0)
        ) revert ZeroAddress();
        PARAMS = IProtocolParams(params);
        IDENTITY = IIdentityRegistry(identity);
        ASSETS = IAssetRegistry(assets);
        DISTRIBUTOR = IRevenueDistributor(distributor);
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    // ------------------------------------------------------------------ offers

    /// @inheritdoc ILicensing
    function offer(uint256 assetId, LicenseKind kind, Terms calldata t) external returns (uint256 offerId) {
        address owner = _ownerOf(assetId);
        // INVARIANT: only the asset owner licenses the asset.
        if (msg.sender != owner) revert NotAssetOwner(assetId, msg.sender);
        _checkTerms(kind, t);
        offerId = ++offerCount;
        Offer storage o = _offers[offerId];
        o.assetId = assetId;
        o.kind = kind;
        o.terms = t;
        o.publisher = owner;
        o.active = true;
        emit OfferPublished(offerId, assetId, kind, owner);
    }

    /// @inheritdoc ILicensing
    function withdrawOffer(uint256 offerId) external {
        Offer storage o = _offer(offerId);
        // INVARIANT: only the publisher (or whoever owns the asset now) withdraws an offer.
        if (msg.sender != o.publisher && msg.sender != _ownerOf(o.assetId)) revert NotAssetOwner(o.assetId, msg.sender);
        // INVARIANT: an offer is withdrawn once.
        if (!o.active) revert OfferNotActive(offerId);
        o.active = false;
        emit OfferWithdrawn(offerId);
    }

    /// @inheritdoc ILicensing
    function buy(uint256 offerId) external payable nonReentrant returns (uint256 licenseId) {
        Offer storage o = _offer(offerId);
        // INVARIANT: an offer sells only while active and while its publisher still owns the asset.
        if (!o.active || ASSETS.ownerOf(o.assetId) != o.publisher) revert OfferNotActive(offerId);
        // INVARIANT: a partnership is co-signed by the partner it names, and by no one else.
        if (o.kind == LicenseKind.Partnership && msg.sender != o.terms.partner) {
            revert NotPartner(msg.sender, o.terms.partner);
        }
        bytes32 x25519Key = _buyerKey(msg.sender);

        licenseId = ++licenseCount;
        License storage l = _licenses[licenseId];
        l.offerId = offerId;
        l.assetId = o.assetId;
        l.kind = o.kind;
        l.licensee = msg.sender;
        l.startedAt = uint64(block.timestamp);
        l.terms = o.terms;
        if (o.terms.duration > 0) l.expires = uint64(block.timestamp) + o.terms.duration;
        _latest[o.assetId][msg.sender][o.kind] = licenseId;
        uint256 revenue = _open(l, x25519Key);
        if (o.kind == LicenseKind.Partnership) {
            o.active = false;
            emit OfferWithdrawn(offerId);
        }
        emit LicenseBought(licenseId, offerId, l.assetId, msg.sender, l.kind, msg.value, l.expires);
        if (l.kind == LicenseKind.Partnership && l.installmentsPaid > 0) {
            emit InstallmentPaid(licenseId, 1, msg.value);
        }
        _payDistributor(l.assetId, revenue);
    }

    // ------------------------------------------------------------------ api metering

    /// @inheritdoc ILicensing
    function setOperator(uint256 assetId, address operator, bool approved) external {
        address owner = _ownerOf(assetId);
        // INVARIANT: only the owner names who acts for it.
        if (msg.sender != owner) revert NotAssetOwner(assetId, msg.sender);
        _operators[assetId][owner][operator] = approved;
        emit OperatorSet(assetId, owner, operator, approved);
    }

    /// @inheritdoc ILicensing
    function postCallReceipt(
        uint256 licenseId,
        CallReceipt calldata r,
        bytes calldata signature,
        address[] calldata computeParties
    ) external nonReentrant {
        License storage l = _licenseOfKind(licenseId, LicenseKind.Api);
        _checkOperator(l.assetId);
        // INVARIANT: the receipt is about this license (the id is inside the signed struct).
        if (r.licenseId != licenseId) revert ReceiptLicenseMismatch(licenseId, r.licenseId);
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(callReceiptDigest(r), signature);
        // INVARIANT: only the licensee vouches for its own calls.
        if (err != ECDSA.RecoverError.NoError || signer != l.licensee) revert InvalidReceiptSignature(signer, l.licensee);
        // INVARIANT: receipts are cumulative; only calls beyond those already paid are paid.
        if (r.totalCalls <= l.callsPaid) revert StaleCallReceipt(r.totalCalls, l.callsPaid);
        uint256 calls = r.totalCalls - l.callsPaid;
        (bool fits, uint256 amount) = Math.tryMul(calls, l.terms.feePerCall);
        // INVARIANT: fees come only from the licensee's prepaid credits.
        if (!fits || amount > l.escrow) revert InsufficientCredits(fits ? amount : type(uint256).max, l.escrow);

        l.callsPaid = r.totalCalls;
        l.lastRequestHash = r.lastRequestHash;
        l.escrow -= amount;
        uint256 revenue = amount - _creditComputeParties(licenseId, amount, computeParties);
        emit CallReceiptPosted(licenseId, r.totalCalls, calls, amount);
        _payDistributor(l.assetId, revenue);
    }

    /// @inheritdoc ILicensing
    function topUp(uint256 licenseId) external payable {
        License storage l = _licenseOfKind(licenseId, LicenseKind.Api);
        // INVARIANT: no credit is sold for a license that can no longer be used.
        if (_expired(l)) revert LicenseExpired(licenseId, l.expires);
        // INVARIANT: a top-up adds something.
        if (msg.value == 0) revert InsufficientPayment(0, 1);
        l.escrow += msg.value;
        emit CreditsToppedUp(licenseId, msg.value, l.escrow);
    }

    /// @inheritdoc ILicensing
    function refundCredits(uint256 licenseId) external {
        License storage l = _licenseOfKind(licenseId, LicenseKind.Api);
        // INVARIANT: credits go back to the licensee only.
        if (msg.sender != l.licensee) revert NotLicensee(licenseId, msg.sender);
        uint256 amount = l.escrow;
        // INVARIANT: there is something to refund.
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        l.escrow = 0;
        credited[l.licensee] += amount;
        emit CreditsRefunded(licenseId, amount);
    }

    // ------------------------------------------------------------------ full access

    /// @inheritdoc ILicensing
    function deliverKey(uint256 licenseId, bytes calldata key) external {
        License storage l = _licenseOfKind(licenseId, LicenseKind.FullAccess);
        _checkOperator(l.assetId);
        _requireEscrowState(licenseId, l, EscrowState.AwaitingKey);
        uint256 deadline = l.startedAt + PARAMS.get(PARAM_KEY_DELIVERY_TIMEOUT);
        // INVARIANT: a key arrives before the timeout or not at all (the licensee may then refund).
        if (block.timestamp > deadline) revert KeyDeliveryTimedOut(licenseId, deadline);
        // INVARIANT: an empty wrap delivers nothing.
        if (key.length == 0) revert EmptyWrappedKey();
        _wrappedKeys[licenseId] = key;
        l.escrowState = EscrowState.KeyDelivered;
        l.deliveredAt = uint64(block.timestamp);
        emit KeyDelivered(licenseId, l.recipientKey, key);
    }

    /// @inheritdoc ILicensing
    function disputeKey(uint256 licenseId) external {
        License storage l = _licenseOfKind(licenseId, LicenseKind.FullAccess);
        // INVARIANT: only the licensee can say the key does not decrypt.
        if (msg.sender != l.licensee) revert NotLicensee(licenseId, msg.sender);
        _requireEscrowState(licenseId, l, EscrowState.KeyDelivered);
        uint256 deadline = l.deliveredAt + PARAMS.get(PARAM_KEY_DISPUTE_WINDOW);
        // INVARIANT: disputes are raised inside the window only.
        if (block.timestamp > deadline) revert DisputeWindowClosed(licenseId, deadline);
        l.escrowState = EscrowState.Disputed;
        emit KeyDisputed(licenseId);
    }

    /// @inheritdoc ILicensing
    function release(uint256 licenseId) external nonReentrant {
        License storage l = _licenseOfKind(licenseId, LicenseKind.FullAccess);
        _requireEscrowState(licenseId, l, EscrowState.KeyDelivered);
        uint256 deadline = l.deliveredAt + PARAMS.get(PARAM_KEY_DISPUTE_WINDOW);
        // INVARIANT: the owner is paid only after the licensee had the whole window to object.
        if (block.timestamp <= deadline) revert DisputeWindowOpen(licenseId, deadline);
        _releaseEscrow(licenseId, l);
    }

    /// @inheritdoc ILicensing
    function refund(uint256 licenseId) external {
        License storage l = _licenseOfKind(licenseId, LicenseKind.FullAccess);
        _requireEscrowState(licenseId, l, EscrowState.AwaitingKey);
        uint256 deadline = l.startedAt + PARAMS.get(PARAM_KEY_DELIVERY_TIMEOUT);
        // INVARIANT: a refund only follows a missed delivery.
        if (block.timestamp <= deadline) revert KeyDeliveryPending(licenseId, deadline);
        _refundEscrow(licenseId, l);
    }

    /// @inheritdoc ILicensing
    function resolveKeyDispute(uint256 licenseId, bool refundLicensee)
        external
        nonReentrant
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        License storage l = _licenseOfKind(licenseId, LicenseKind.FullAccess);
        _requireEscrowState(licenseId, l, EscrowState.Disputed);
        emit KeyDisputeResolved(licenseId, refundLicensee);
        if (refundLicensee) {
            _refundEscrow(licenseId, l);
        } else {
            _releaseEscrow(licenseId, l);
        }
    }

    // ------------------------------------------------------------------ partnership

    /// @inheritdoc ILicensing
    function payInstallment(uint256 licenseId) external payable nonReentrant {
        License storage l = _licenseOfKind(licenseId, LicenseKind.Partnership);
        // INVARIANT: the schedule is finite.
        if (l.installmentsPaid >= l.terms.installmentCount) revert NoInstallmentDue(licenseId);
        // INVARIANT: an expired partnership takes no more money.
        if (_expired(l)) revert LicenseExpired(licenseId, l.expires);
        // INVARIANT: each installment is exactly the agreed amount.
        if (msg.value != l.terms.price) revert WrongPayment(msg.value, l.terms.price);
        l.installmentsPaid += 1;
        emit InstallmentPaid(licenseId, l.installmentsPaid, msg.value);
        _payDistributor(l.assetId, msg.value);
    }

    // ------------------------------------------------------------------ pull payments

    /// @inheritdoc ILicensing
    function withdraw() external nonReentrant {
        uint256 amount = credited[msg.sender];
        // INVARIANT: nothing is sent that was not credited.
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        credited[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        (bool ok,) = payable(msg.sender).call{value: amount}("");
        if (!ok) revert TransferFailed(msg.sender, amount);
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc ILicensing
    function isLicensed(uint256 assetId, address user, LicenseKind kind) external view returns (bool) {
        if (user == _ownerOf(assetId)) return true;
        uint256 id = _latest[assetId][user][kind];
        return id != 0 && _isCurrent(_licenses[id]);
    }

    /// @inheritdoc ILicensing
    function licenseOf(uint256 assetId, address user, LicenseKind kind) external view returns (uint256) {
        return _latest[assetId][user][kind];
    }

    /// @inheritdoc ILicensing
    function license(uint256 licenseId) external view returns (License memory) {
        return _license(licenseId);
    }

    /// @inheritdoc ILicensing
    function offer(uint256 offerId) external view returns (Offer memory) {
        return _offer(offerId);
    }

    /// @inheritdoc ILicensing
    function wrappedKey(uint256 licenseId) external view returns (bytes memory) {
        _license(licenseId);
        return _wrappedKeys[licenseId];
    }

    /// @inheritdoc ILicensing
    function userOf(uint256 licenseId) external view returns (address) {
        License storage l = _license(licenseId);
        return _isCurrent(l) ? l.licensee : address(0);
    }

    /// @inheritdoc ILicensing
    function userExpires(uint256 licenseId) external view returns (uint256) {
        return _license(licenseId).expires;
    }

    /// @inheritdoc ILicensing
    function isOperator(uint256 assetId, address operator) external view returns (bool) {
        return _operators[assetId][_ownerOf(assetId)][operator];
    }

    /// @inheritdoc ILicensing
    function callReceiptDigest(CallReceipt calldata r) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(CALL_RECEIPT_TYPEHASH, r.licenseId, r.totalCalls, r.lastRequestHash)));
    }

    // ------------------------------------------------------------------ internals

    /// @dev Per-kind purchase rules; returns the wei to pay the distributor now.
    function _open(License storage l, bytes32 x25519Key) private returns (uint256 revenue) {
        Terms storage t = l.terms;
        if (l.kind == LicenseKind.Api) {
            // INVARIANT: prepaid credit covers at least one call.
            if (msg.value < t.feePerCall) revert InsufficientPayment(msg.value, t.feePerCall);
            l.escrow = msg.value;
            return 0;
        }
        // INVARIANT: the other kinds cost exactly their price (a partnership: its first installment).
        if (msg.value != t.price) revert WrongPayment(msg.value, t.price);
        if (l.kind == LicenseKind.FullAccess) {
            // INVARIANT: the vault key can only be delivered to a registered X25519 key.
            if (x25519Key == bytes32(0)) revert MissingEncryptionKey(msg.sender);
            l.escrow = msg.value;
            l.escrowState = EscrowState.AwaitingKey;
            l.recipientKey = x25519Key;
            return 0;
        }
        if (l.kind == LicenseKind.Partnership && t.installmentCount > 0) l.installmentsPaid = 1;
        return msg.value;
    }

    /// @dev Terms each kind needs to be meaningful.
    function _checkTerms(LicenseKind kind, Terms calldata t) private pure {
        // INVARIANT: a revenue split is a fraction.
        if (t.revenueSplitBps > _BPS) revert InvalidTerms(kind, "revenueSplitBps");
        if (kind == LicenseKind.Api) {
            // INVARIANT: metered calls cost something, or credits could never run out.
            if (t.feePerCall == 0) revert InvalidTerms(kind, "feePerCall");
        } else if (kind == LicenseKind.LongTerm) {
            // INVARIANT: a long-term license expires.
            if (t.duration == 0) revert InvalidTerms(kind, "duration");
        } else if (kind == LicenseKind.Partnership) {
            // INVARIANT: a partnership names the partner who co-signs it.
            if (t.partner == address(0)) revert InvalidTerms(kind, "partner");
            // INVARIANT: a paid partnership has a schedule; several installments need an interval.
            if (t.price > 0 && t.installmentCount == 0) revert InvalidTerms(kind, "installmentCount");
            if (t.installmentCount > 1 && t.installmentInterval == 0) revert InvalidTerms(kind, "installmentInterval");
        }
    }

    /// @dev Credits `COMPUTE_FEE_BPS` of `amount` equally to the parties; returns what was credited.
    function _creditComputeParties(uint256 licenseId, uint256 amount, address[] calldata parties)
        private
        returns (uint256 total)
    {
        uint256 n = parties.length;
        if (n == 0) return 0;
        uint256 bps = Math.min(PARAMS.get(PARAM_COMPUTE_FEE_BPS), _BPS);
        uint256 perParty = amount * bps / _BPS / n;
        for (uint256 i = 0; i < n; ++i) {
            // INVARIANT: no fee is credited to an address nobody controls.
            if (parties[i] == address(0)) revert ZeroAddress();
            credited[parties[i]] += perParty;
        }
        emit ComputeFeesCredited(licenseId, perParty, parties);
        return perParty * n;
    }

    function _releaseEscrow(uint256 licenseId, License storage l) private {
        uint256 amount = l.escrow;
        l.escrow = 0;
        l.escrowState = EscrowState.Released;
        emit EscrowReleased(licenseId, amount);
        _payDistributor(l.assetId, amount);
    }

    function _refundEscrow(uint256 licenseId, License storage l) private {
        uint256 amount = l.escrow;
        l.escrow = 0;
        l.escrowState = EscrowState.Refunded;
        credited[l.licensee] += amount;
        emit EscrowRefunded(licenseId, amount);
    }

    function _payDistributor(uint256 assetId, uint256 amount) private {
        if (amount > 0) DISTRIBUTOR.pay{value: amount}(assetId);
    }

    /// @dev The buyer's active Sahara ID is required; returns its registered X25519 key.
    function _buyerKey(address buyer) private view returns (bytes32) {
        uint256 id = IDENTITY.idOf(buyer);
        // INVARIANT: licenses are sold to identified parties only.
        if (id == 0) revert NoIdentity(buyer);
        IIdentityRegistry.Identity memory who = IDENTITY.identity(id);
        if (!who.active) revert NoIdentity(buyer);
        return who.keys.x25519Key;
    }

    function _isCurrent(License storage l) private view returns (bool) {
        if (_expired(l)) return false;
        if (l.kind == LicenseKind.Api) return l.escrow >= l.terms.feePerCall;
        if (l.kind == LicenseKind.FullAccess) return l.escrowState == EscrowState.Released;
        if (l.kind == LicenseKind.Partnership) {
            // Current while every installment due so far is paid: the next one falls due
            // `installmentInterval` after the previous due date.
            return l.installmentsPaid >= l.terms.installmentCount
                || block.timestamp <= uint256(l.startedAt) + uint256(l.terms.installmentInterval) * l.installmentsPaid;
        }
        return true;
    }

    function _expired(License storage l) private view returns (bool) {
        return l.expires != 0 && block.timestamp >= l.expires;
    }

    function _checkOperator(uint256 assetId) private view {
        address owner = _ownerOf(assetId);
        // INVARIANT: only the owner, or an operator it approved, acts for the asset.
        if (msg.sender != owner && !_operators[assetId][owner][msg.sender]) revert NotOperatorOrOwner(assetId, msg.sender);
    }

    function _requireEscrowState(uint256 licenseId, License storage l, EscrowState expected) private view {
        // INVARIANT: the escrow moves along AwaitingKey -> KeyDelivered -> (Disputed) -> Released | Refunded.
        if (l.escrowState != expected) revert WrongEscrowState(licenseId, l.escrowState);
    }

    function _ownerOf(uint256 assetId) private view returns (address) {
        // INVARIANT: only registered assets are licensed.
        if (!ASSETS.exists(assetId)) revert UnknownAsset(assetId);
        return ASSETS.ownerOf(assetId);
    }

    function _offer(uint256 offerId) private view returns (Offer storage o) {
        if (offerId == 0 || offerId > offerCount) revert UnknownOffer(offerId);
        return _offers[offerId];
    }

    function _license(uint256 licenseId) private view returns (License storage l) {
        if (licenseId == 0 || licenseId > licenseCount) revert UnknownLicense(licenseId);
        return _licenses[licenseId];
    }

    function _licenseOfKind(uint256 licenseId, LicenseKind kind) private view returns (License storage l) {
        l = _license(licenseId);
        // INVARIANT: each operation applies to one kind.
        if (l.kind != kind) revert WrongLicenseKind(licenseId, l.kind);
    }
}
