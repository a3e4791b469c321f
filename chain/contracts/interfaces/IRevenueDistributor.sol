// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IRevenueDistributor
/// @notice Splits ETH paid to an asset among its Share holders, pro rata to the
/// Shares they held when each payment arrived, after the asset's direct parents
/// took their royalty. Holders pull what they are owed.
/// @dev Per asset a magnified accumulator (scale 2^128) with the division
/// remainder carried into the next payment; per holder a signed debt, adjusted
/// by Shares before every balance change. Conservation, per asset and exactly:
/// `totalPaid == totalClaimed + sum(claimable) + (dust + sum(holder fractions)) / 2^128`.
interface IRevenueDistributor {
    /// @notice ETH was paid to `assetId`.
    /// @param assetId Asset paid.
    /// @param payer Sender of the ETH.
    /// @param amount Wei received.
    /// @param distributed Wei credited to the asset's own holders (amount minus parent royalties).
    event RevenuePaid(uint256 indexed assetId, address indexed payer, uint256 amount, uint256 distributed);

    /// @notice Part of a payment to `childId` was credited to the holders of its direct parent `parentId`.
    /// @param childId Asset that was paid.
    /// @param parentId Direct parent credited.
    /// @param amount Wei credited to the parent's holders.
    event RoyaltyPaid(uint256 indexed childId, uint256 indexed parentId, uint256 amount);

    /// @notice `holder` withdrew its revenue of `assetId`.
    /// @param assetId Asset whose revenue was claimed.
    /// @param holder Share holder paid.
    /// @param amount Wei sent.
    event RevenueClaimed(uint256 indexed assetId, address indexed holder, uint256 amount);

    /// @notice The asset id is not registered.
    /// @param assetId The unknown id.
    error UnknownAsset(uint256 assetId);

    /// @notice The asset has no Shares in circulation, so nobody could receive the payment.
    /// @param assetId The asset paid.
    error NoShareholders(uint256 assetId);

    /// @notice `pay` was called without ETH.
    /// @param assetId The asset paid.
    error ZeroPayment(uint256 assetId);

    /// @notice `beforeSharesUpdate` was called by someone other than the Shares contract.
    /// @param caller The caller.
    error OnlyShares(address caller);

    /// @notice Sending ETH to a claiming holder failed.
    /// @param holder The receiver.
    /// @param amount Wei that could not be sent.
    error ClaimTransferFailed(address holder, uint256 amount);

    /// @notice A zero address was given to the constructor.
    error DistributorZeroAddress();

    /// @notice Pays `msg.value` to the holders of `assetId`; each direct parent
    /// first receives `msg.value * bps / 10000` for its own holders.
    /// @param assetId Registered asset with Shares in circulation.
    function pay(uint256 assetId) external payable;

    /// @notice Wei `holder` can claim from `assetId` now.
    /// @dev Floors the holder's magnified share, so it can trail the exact pro-rata
    /// amount by less than 1 wei; that fraction stays with the holder (or in the
    /// carry) and is paid out once later payments make it whole.
    /// @param assetId Asset id.
    /// @param holder Share holder (current or former).
    function claimable(uint256 assetId, address holder) external view returns (uint256);

    /// @notice Sends the caller its claimable revenue of `assetId` (0 is a no-op).
    /// @param assetId Asset id.
    /// @return amount Wei sent.
    function claim(uint256 assetId) external returns (uint256 amount);

    /// @notice Claims several assets in one transaction and sends the sum once.
    /// @param assetIds Asset ids (duplicates are harmless).
    /// @return amount Total wei sent.
    function claimMany(uint256[] calldata assetIds) external returns (uint256 amount);

    /// @notice Settles debts before Shares balances change; Shares only.
    /// @param from Sender (zero on mint).
    /// @param to Receiver (zero on burn).
    /// @param ids Asset ids moved.
    /// @param values Amounts moved, per id.
    function beforeSharesUpdate(address from, address to, uint256[] calldata ids, uint256[] calldata values) external;

    /// @notice Wei credited to the holders of `assetId` so far (own payments net of
    /// parent royalties, plus royalties received from children).
    /// @param assetId Asset id.
    function totalPaid(uint256 assetId) external view returns (uint256);

    /// @notice Wei claimed by the holders of `assetId` so far.
    /// @param assetId Asset id.
    function totalClaimed(uint256 assetId) external view returns (uint256);

    /// @notice Carry of `assetId`: the magnified remainder (units of 2^-128 wei)
    /// of the last division, added to the next payment.
    /// @param assetId Asset id.
    function dust(uint256 assetId) external view returns (uint256);

    /// @notice Magnified (2^128) revenue per Share of `assetId` accumulated so far.
    /// @param assetId Asset id.
    function accPerShare(uint256 assetId) external view returns (uint256);

    /// @notice Signed magnified debt of `holder` on `assetId`; claimable is
    /// `(accPerShare * balance - debt) / 2^128`.
    /// @param assetId Asset id.
    /// @param holder Share holder.
    function debtOf(uint256 assetId, address holder) external view returns (int256);
}
