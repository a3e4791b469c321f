// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ICollabToken
/// @notice The governance token of collab: ERC-20 with EIP-2612 permits and ERC-5805 votes on a
/// timestamp clock, so every governed duration (voting delay and period, timelock delay) is in seconds.
/// @dev The whole supply is minted once at deployment; there is no mint function, so a zero supply
/// would leave governance without voters forever.
interface ICollabToken {
    /// @notice The constructor was given a zero initial supply.
    error InvalidInitialSupply();
}
