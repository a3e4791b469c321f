// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC1155} from "@openzeppelin/contracts/token/ERC1155/IERC1155.sol";

/// @title IShares
/// @notice Revenue rights of collab assets: one ERC-1155 token id per asset id.
/// @dev Every balance change (mint, transfer, burn) is reported to the
/// RevenueDistributor *before* balances move, so revenue already paid stays
/// with the holders that held the Shares when it was paid.
interface IShares is IERC1155 {
    /// @notice The distributor was wired in; it is set once and never changes.
    /// @param distributor The RevenueDistributor notified of every balance change.
    event DistributorSet(address indexed distributor);

    /// @notice `initialize` was called a second time.
    /// @param distributor The distributor already set.
    error DistributorAlreadySet(address distributor);

    /// @notice A balance change was attempted before `initialize`, so the
    /// distributor could not account for it.
    error DistributorNotSet();

    /// @notice A zero address was given where a contract or account is required.
    error SharesZeroAddress();

    /// @notice Role that may mint Shares (granted to the AssetRegistry).
    function MINTER_ROLE() external view returns (bytes32);

    /// @notice Role that may mint Shares for settled jobs.
    function SETTLEMENT_ROLE() external view returns (bytes32);

    /// @notice Wires the RevenueDistributor; admin only, once.
    /// @param distributor The RevenueDistributor address.
    function initialize(address distributor) external;

    /// @notice Mints `amount` Shares of asset `id` to `to`; MINTER_ROLE or SETTLEMENT_ROLE.
    /// @param to Receiver of the Shares.
    /// @param id Asset id (= token id).
    /// @param amount Number of Shares.
    function mint(address to, uint256 id, uint256 amount) external;

    /// @notice Total Shares in circulation for asset `id`.
    /// @param id Asset id.
    function totalSupply(uint256 id) external view returns (uint256);

    /// @notice The RevenueDistributor notified of balance changes (zero before `initialize`).
    function distributor() external view returns (address);
}
