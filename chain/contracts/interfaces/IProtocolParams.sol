// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IProtocolParams
/// @notice Governed protocol numbers (windows, bonds, fees, stakes) under bytes32 keys.
/// @dev Contracts read a value at the moment they use it, so a governance
/// change applies from the next use on; keys are `keccak256(<NAME>)` (see `ParamKeys`).
interface IProtocolParams {
    /// @notice A parameter was set (first time: `oldValue` is 0).
    /// @param key The parameter key.
    /// @param oldValue The previous value (0 if it was never set).
    /// @param newValue The value now in force.
    event ParamSet(bytes32 indexed key, uint256 oldValue, uint256 newValue);

    /// @notice `key` was read but has never been set, so no contract may act on a silent 0.
    /// @param key The unknown key.
    error UnknownParam(bytes32 key);

    /// @notice The current value of `key`; reverts `UnknownParam` if it was never set.
    /// @param key The parameter key.
    /// @return The value.
    function get(bytes32 key) external view returns (uint256);

    /// @notice The current values of `keys`, in order, in one call (a reader that needs
    /// several values pays one call instead of one per key); reverts `UnknownParam` on any unset key.
    /// @param keys The parameter keys.
    /// @return values The values, `values[i]` for `keys[i]`.
    function getMany(bytes32[] calldata keys) external view returns (uint256[] memory values);

    /// @notice A counter that moves on every `set`: a reader may cache values it read under one
    /// epoch and reuse them while the epoch is unchanged (`ClaimManager`'s parameter snapshot does).
    /// @return The number of `set` calls so far.
    function epoch() external view returns (uint256);

    /// @notice Sets `key` to `value`; owner (the timelock) only.
    /// @param key The parameter key.
    /// @param value The new value.
    function set(bytes32 key, uint256 value) external;

    /// @notice Whether `key` has ever been set.
    /// @param key The parameter key.
    /// @return True once `set` was called for `key`.
    function isSet(bytes32 key) external view returns (bool);
}
