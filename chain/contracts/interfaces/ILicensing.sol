// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ILicensing
/// @notice Offers and licenses for collab assets: Partnership (co-signed terms, installments), Api
/// (prepaid credits released per batch of licensee-signed call receipts), FullAccess (escrowed price
/// released once the wrapped vault key survives a dispute window) and LongTerm (paid once, valid
/// until an ERC-4907-style expiry).
/// @dev Money is native ETH and moves by pull: refunds and compute fees are credited and withdrawn
/// with `withdraw()`; asset revenue goes to `RevenueDistributor.pay`.
interface ILicensing {
    /// @notice The four license kinds; each uses its own fields of `Terms`.
    enum LicenseKind {
        Partnership,
        Api,
        FullAccess,
        LongTerm
    }

    /// @notice Where a Full-access escrow stands.
    enum EscrowState {
        None,
        AwaitingKey,
        KeyDelivered,
        Disputed,
        Released,
        Refunded
    }

    /// @notice What an owner offers. Api: `feePerCall`; FullAccess and LongTerm: `price`; LongTerm:
    /// `duration`; Partnership: `partner`, `termsHash`, `revenueSplitBps`, `price` per installment,
    /// `installmentCount` and `installmentInterval`. A non-zero `duration` bounds any kind.
    struct Terms {
        uint256 price;
        uint256 feePerCall;
        uint64 duration;
        bytes32 termsHash;
        uint16 revenueSplitBps;
        uint64 installmentInterval;
        uint32 installmentCount;
        address partner;
    }

    /// @notice A published offer. `publisher` is the asset owner at publication; the offer lapses
    /// when the asset changes hands.
    struct Offer {
        uint256 assetId;
        LicenseKind kind;
        Terms terms;
        address publisher;
        bool active;
    }

    /// @notice A license taken from an offer, with the offer's terms frozen at purchase.
    /// @dev `escrow` holds the Api credits or the Full-access price; `expires` is 0 for no expiry;
    /// `recipientKey` is the licensee's registered X25519 key a Full-access vault key is wrapped for.
    struct License {
        uint256 offerId;
        uint256 assetId;
        LicenseKind kind;
        address licensee;
        uint64 startedAt;
        uint64 expires;
        Terms terms;
        uint256 escrow;
        uint256 callsPaid;
        bytes32 lastRequestHash;
        EscrowState escrowState;
        uint64 deliveredAt;
        uint32 installmentsPaid;
        bytes32 recipientKey;
    }

    /// @notice A licensee's cumulative, counter-bound statement of the calls it made (EIP-712).
    struct CallReceipt {
        uint256 licenseId;
        uint256 totalCalls;
        bytes32 lastRequestHash;
    }

    /// @notice An owner published an offer.
    /// @param offerId The new offer.
    /// @param assetId The licensed asset.
    /// @param kind The license kind.
    /// @param publisher The asset owner who published it.
    event OfferPublished(uint256 indexed offerId, uint256 indexed assetId, LicenseKind kind, address indexed publisher);

    /// @notice An offer was withdrawn (or, for a partnership, taken) and no longer sells.
    /// @param offerId The offer.
    event OfferWithdrawn(uint256 indexed offerId);

    /// @notice Someone took an offer.
    /// @param licenseId The new license.
    /// @param offerId The offer it came from.
    /// @param assetId The licensed asset.
    /// @param licensee The buyer.
    /// @param kind The license kind.
    /// @param paid Wei sent with the purchase.
    /// @param expires Expiry timestamp, 0 for none.
    event LicenseBought(
        uint256 indexed licenseId,
        uint256 indexed offerId,
        uint256 indexed assetId,
        address licensee,
        LicenseKind kind,
        uint256 paid,
        uint64 expires
    );

    /// @notice An asset owner approved or revoked an operator that may post call receipts for it.
    /// @param assetId The asset.
    /// @param owner The asset owner.
    /// @param operator The operator (e.g. the owner's node key).
    /// @param approved Whether it may act.
    event OperatorSet(uint256 indexed assetId, address indexed owner, address indexed operator, bool approved);

    /// @notice Api credits were added.
    /// @param licenseId The license.
    /// @param amount Wei added.
    /// @param escrow Credits now held.
    event CreditsToppedUp(uint256 indexed licenseId, uint256 amount, uint256 escrow);

    /// @notice A call receipt released fees for the calls not yet paid.
    /// @param licenseId The license.
    /// @param totalCalls The cumulative count signed by the licensee.
    /// @param calls Calls paid by this receipt.
    /// @param amount Wei released (compute fee included).
    event CallReceiptPosted(uint256 indexed licenseId, uint256 totalCalls, uint256 calls, uint256 amount);

    /// @notice Compute parties were credited their part of an API fee.
    /// @param licenseId The license.
    /// @param perParty Wei credited to each party.
    /// @param parties The compute parties.
    event ComputeFeesCredited(uint256 indexed licenseId, uint256 perParty, address[] parties);

    /// @notice The licensee took its unused Api credits back; the license is spent.
    /// @param licenseId The license.
    /// @param amount Wei credited to the licensee.
    event CreditsRefunded(uint256 indexed licenseId, uint256 amount);

    /// @notice The owner posted the licensee-wrapped vault key of a Full-access license.
    /// @param licenseId The license.
    /// @param recipientKey The X25519 key it is wrapped for.
    /// @param wrappedKey The wrap (X25519 + AES-GCM).
    event KeyDelivered(uint256 indexed licenseId, bytes32 recipientKey, bytes wrappedKey);

    /// @notice The licensee contested a delivered key; the escrow is frozen until governance decides.
    /// @param licenseId The license.
    event KeyDisputed(uint256 indexed licenseId);

    /// @notice Governance decided a key dispute.
    /// @param licenseId The license.
    /// @param refundLicensee True when the licensee gets the escrow back.
    event KeyDisputeResolved(uint256 indexed licenseId, bool refundLicensee);

    /// @notice A Full-access escrow went to the asset's revenue distributor.
    /// @param licenseId The license.
    /// @param amount Wei paid.
    event EscrowReleased(uint256 indexed licenseId, uint256 amount);

    /// @notice A Full-access escrow was credited back to the licensee.
    /// @param licenseId The license.
    /// @param amount Wei credited.
    event EscrowRefunded(uint256 indexed licenseId, uint256 amount);

    /// @notice A partnership installment was paid to the asset's revenue distributor.
    /// @param licenseId The license.
    /// @param index How many installments are now paid.
    /// @param amount Wei paid.
    event InstallmentPaid(uint256 indexed licenseId, uint32 index, uint256 amount);

    /// @notice A credited balance was withdrawn.
    /// @param account The payee.
    /// @param amount Wei sent.
    event Withdrawn(address indexed account, uint256 amount);

    /// @notice A constructor address was zero.
    error ZeroAddress();
    /// @notice No asset has this id.
    /// @param assetId The id asked for.
    error UnknownAsset(uint256 assetId);
    /// @notice No offer has this id.
    /// @param offerId The id asked for.
    error UnknownOffer(uint256 offerId);
    /// @notice No license has this id.
    /// @param licenseId The id asked for.
    error UnknownLicense(uint256 licenseId);
    /// @notice The caller does not own the asset.
    /// @param assetId The asset.
    /// @param account The caller.
    error NotAssetOwner(uint256 assetId, address account);
    /// @notice The caller is neither the asset owner nor an operator it approved.
    /// @param assetId The asset.
    /// @param account The caller.
    error NotOperatorOrOwner(uint256 assetId, address account);
    /// @notice The caller has no Sahara ID (or it is inactive).
    /// @param account The caller.
    error NoIdentity(address account);
    /// @notice A Full-access buyer has no registered X25519 key to wrap the vault key for.
    /// @param account The buyer.
    error MissingEncryptionKey(address account);
    /// @notice The terms do not fit the kind.
    /// @param kind The kind offered.
    /// @param field The offending field.
    error InvalidTerms(LicenseKind kind, string field);
    /// @notice The offer was withdrawn, taken, or the asset changed hands.
    /// @param offerId The offer.
    error OfferNotActive(uint256 offerId);
    /// @notice Only the partner named in a partnership offer can accept (co-sign) it.
    /// @param account The caller.
    /// @param partner The named partner.
    error NotPartner(address account, address partner);
    /// @notice The caller is not the licensee.
    /// @param licenseId The license.
    /// @param account The caller.
    error NotLicensee(uint256 licenseId, address account);
    /// @notice The payment must equal the price.
    /// @param sent Wei sent.
    /// @param required Wei required.
    error WrongPayment(uint256 sent, uint256 required);
    /// @notice The payment is below the minimum (one call of credit).
    /// @param sent Wei sent.
    /// @param required Minimum wei.
    error InsufficientPayment(uint256 sent, uint256 required);
    /// @notice The license is of another kind than the operation needs.
    /// @param licenseId The license.
    /// @param kind Its kind.
    error WrongLicenseKind(uint256 licenseId, LicenseKind kind);
    /// @notice The license has expired.
    /// @param licenseId The license.
    /// @param expiredAt Its expiry timestamp.
    error LicenseExpired(uint256 licenseId, uint64 expiredAt);
    /// @notice The receipt names another license than the one posted for.
    /// @param licenseId The license posted for.
    /// @param receiptLicenseId The license in the receipt.
    error ReceiptLicenseMismatch(uint256 licenseId, uint256 receiptLicenseId);
    /// @notice The receipt is not signed by the licensee.
    /// @param signer The recovered signer (zero if unrecoverable).
    /// @param licensee The licensee.
    error InvalidReceiptSignature(address signer, address licensee);
    /// @notice The receipt does not count more calls than already paid (replay or rollback).
    /// @param total The receipt's cumulative count.
    /// @param paid Calls already paid.
    error StaleCallReceipt(uint256 total, uint256 paid);
    /// @notice The prepaid credits do not cover the new calls.
    /// @param needed Wei the new calls cost.
    /// @param available Wei in escrow.
    error InsufficientCredits(uint256 needed, uint256 available);
    /// @notice The Full-access escrow is not in the state the operation needs.
    /// @param licenseId The license.
    /// @param state Its current state.
    error WrongEscrowState(uint256 licenseId, EscrowState state);
    /// @notice The key delivery deadline has passed.
    /// @param licenseId The license.
    /// @param deadline The last second a key could be delivered.
    error KeyDeliveryTimedOut(uint256 licenseId, uint256 deadline);
    /// @notice The owner may still deliver the key; no refund yet.
    /// @param licenseId The license.
    /// @param deadline The last second a key can be delivered.
    error KeyDeliveryPending(uint256 licenseId, uint256 deadline);
    /// @notice The dispute window has closed.
    /// @param licenseId The license.
    /// @param deadline The last second a dispute could be raised.
    error DisputeWindowClosed(uint256 licenseId, uint256 deadline);
    /// @notice The dispute window is still open; the escrow cannot be released yet.
    /// @param licenseId The license.
    /// @param deadline The last second of the window.
    error DisputeWindowOpen(uint256 licenseId, uint256 deadline);
    /// @notice The wrapped key is empty.
    error EmptyWrappedKey();
    /// @notice Every installment is already paid.
    /// @param licenseId The license.
    error NoInstallmentDue(uint256 licenseId);
    /// @notice Nothing is credited to the caller.
    /// @param account The caller.
    error NothingToWithdraw(address account);
    /// @notice Sending ether to the payee failed.
    /// @param account The payee.
    /// @param amount Wei.
    error TransferFailed(address account, uint256 amount);

    /// @notice Publish an offer for an asset the caller owns.
    /// @param assetId The asset.
    /// @param kind The license kind.
    /// @param t The terms (see `Terms`).
    /// @return offerId The new offer id (from 1).
    function offer(uint256 assetId, LicenseKind kind, Terms calldata t) external returns (uint256 offerId);

    /// @notice Stop selling an offer; existing licenses are unaffected.
    /// @param offerId The offer.
    function withdrawOffer(uint256 offerId) external;

    /// @notice Take an offer (needs a Sahara ID). Api: `msg.value` is prepaid credit (at least one call);
    /// FullAccess: exactly `price`, escrowed; LongTerm: exactly `price`, paid at once; Partnership: only
    /// the named partner, paying the first installment (`price`).
    /// @param offerId The offer.
    /// @return licenseId The new license id (from 1).
    function buy(uint256 offerId) external payable returns (uint256 licenseId);

    /// @notice Approve or revoke an operator that may post call receipts and deliver keys for an asset.
    /// @param assetId The asset (caller must own it).
    /// @param operator The operator.
    /// @param approved Whether it may act.
    function setOperator(uint256 assetId, address operator, bool approved) external;

    /// @notice Post the latest licensee-signed call receipt; releases fees for the calls not yet paid.
    /// @param licenseId The Api license.
    /// @param r The receipt.
    /// @param signature The licensee's EIP-712 signature of `r`.
    /// @param computeParties Parties credited `COMPUTE_FEE_BPS` of the fees, equally (the poster names
    /// them; none means the whole fee goes to the distributor; rounding dust goes to the distributor).
    function postCallReceipt(uint256 licenseId, CallReceipt calldata r, bytes calldata signature, address[] calldata computeParties)
        external;

    /// @notice Add Api credits to an unexpired license.
    /// @param licenseId The Api license.
    function topUp(uint256 licenseId) external payable;

    /// @notice Take the unused Api credits back (credited for `withdraw`); the license stops being
    /// current until topped up again.
    /// @dev Receipts not yet posted when the refund lands go unpaid: the serving node bounds that
    /// exposure by its batch size (and stops serving as soon as `isLicensed` turns false).
    /// @param licenseId The Api license (caller must be its licensee).
    function refundCredits(uint256 licenseId) external;

    /// @notice Post the vault key wrapped for the licensee, before `KEY_DELIVERY_TIMEOUT`.
    /// @param licenseId The Full-access license.
    /// @param wrappedKey The wrap for the license's `recipientKey`.
    function deliverKey(uint256 licenseId, bytes calldata wrappedKey) external;

    /// @notice Contest a delivered key inside `KEY_DISPUTE_WINDOW`; freezes the escrow.
    /// @param licenseId The Full-access license (caller must be its licensee).
    function disputeKey(uint256 licenseId) external;

    /// @notice Pay the escrow to the asset's distributor once the dispute window passed quietly.
    /// @param licenseId The Full-access license.
    function release(uint256 licenseId) external;

    /// @notice Credit the escrow back to the licensee after a missed key delivery.
    /// @param licenseId The Full-access license.
    function refund(uint256 licenseId) external;

    /// @notice Decide a key dispute (governance: the admin role, the timelock in deployment).
    /// @param licenseId The disputed license.
    /// @param refundLicensee True to refund the licensee, false to release to the owner's distributor.
    function resolveKeyDispute(uint256 licenseId, bool refundLicensee) external;

    /// @notice Pay the next partnership installment (`price`) to the asset's distributor.
    /// @param licenseId The Partnership license.
    function payInstallment(uint256 licenseId) external payable;

    /// @notice Withdraw what is credited to the caller (compute fees, refunds).
    function withdraw() external;

    /// @notice Whether `user` may use the asset under `kind` now. Owners always may.
    /// @param assetId The asset.
    /// @param user The account asking.
    /// @param kind The license kind.
    /// @return True when the asset owner, or when the latest such license is current.
    function isLicensed(uint256 assetId, address user, LicenseKind kind) external view returns (bool);

    /// @notice The latest license of `user` for `assetId` of this kind (0 for none).
    /// @param assetId The asset.
    /// @param user The licensee.
    /// @param kind The license kind.
    /// @return licenseId The license id.
    function licenseOf(uint256 assetId, address user, LicenseKind kind) external view returns (uint256 licenseId);

    /// @notice A license by id.
    /// @param licenseId The license.
    /// @return The license record.
    function license(uint256 licenseId) external view returns (License memory);

    /// @notice An offer by id.
    /// @param offerId The offer.
    /// @return The offer record.
    function offer(uint256 offerId) external view returns (Offer memory);

    /// @notice The wrapped vault key delivered for a Full-access license (empty before delivery).
    /// @param licenseId The license.
    /// @return The wrap.
    function wrappedKey(uint256 licenseId) external view returns (bytes memory);

    /// @notice ERC-4907-style user of a license: the licensee while the license is current, else zero.
    /// @param licenseId The license.
    /// @return The current user.
    function userOf(uint256 licenseId) external view returns (address);

    /// @notice ERC-4907-style expiry of a license (0 for none).
    /// @param licenseId The license.
    /// @return The expiry timestamp.
    function userExpires(uint256 licenseId) external view returns (uint256);

    /// @notice Whether `operator` may act for the current owner of `assetId`.
    /// @param assetId The asset.
    /// @param operator The operator.
    /// @return True when approved by the current owner.
    function isOperator(uint256 assetId, address operator) external view returns (bool);

    /// @notice Wei credited to an account, withdrawable with `withdraw`.
    /// @param account The account.
    /// @return The balance.
    function credited(address account) external view returns (uint256);

    /// @notice The EIP-712 digest the licensee signs for a receipt.
    /// @param r The receipt.
    /// @return The typed-data digest.
    function callReceiptDigest(CallReceipt calldata r) external view returns (bytes32);

    /// @notice Number of offers published so far (ids are 1..offerCount).
    /// @return The count.
    function offerCount() external view returns (uint256);

    /// @notice Number of licenses sold so far (ids are 1..licenseCount).
    /// @return The count.
    function licenseCount() external view returns (uint256);
}
