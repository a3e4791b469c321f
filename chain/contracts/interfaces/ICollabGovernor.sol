// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ICollabGovernor
/// @notice The governor of collab: token-weighted votes on proposals that a TimelockController executes
/// after its delay. The timelock, not the governor, owns `ProtocolParams` and the admin roles governance
/// decides on.
interface ICollabGovernor {
    /// @notice The voting token's clock is not a timestamp clock (`CLOCK_MODE()` must be "mode=timestamp").
    /// @param token The token whose clock was rejected.
    error NotTimestampClock(address token);

    /// @notice The constructor was given the zero address as timelock.
    error InvalidTimelock(address timelock);
}
