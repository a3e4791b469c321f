// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IProtocolParams} from "./interfaces/IProtocolParams.sol";

/// @title ProtocolParams
/// @notice The one store of governed numbers; owned by the TimelockController
/// after deployment, so every change goes through a governance vote.
contract ProtocolParams is IProtocolParams, Ownable {
    /// @dev key => value.
    mapping(bytes32 key => uint256) private _values;
    /// @dev key => whether it was ever set (a set 0 differs from "never set").
    mapping(bytes32 key => bool) private _set;
    /// @inheritdoc IProtocolParams
    uint256 public epoch;

    /// @param initialOwner The account that sets the initial values (the deployer),
    /// which then hands ownership to the timelock.
    constructor(address initialOwner) Ownable(initialOwner) {}

    /// @inheritdoc IProtocolParams
    function get(bytes32 key) external view returns (uint256) {
        return _get(key);
    }

    /// @inheritdoc IProtocolParams
    function getMany(bytes32[] calldata keys) external view returns (uint256[] memory values) {
        values = new uint256[](keys.length);
        for (uint256 i; i < keys.length; ++i) {
            values[i] = _get(keys[i]);
        }
    }

    /// @inheritdoc IProtocolParams
    function set(bytes32 key, uint256 value) external onlyOwner {
        uint256 oldValue = _values[key];
        _values[key] = value;
        _set[key] = true;
        // INVARIANT: every change moves the epoch, so a cache keyed by it is never stale.
        ++epoch;
        emit ParamSet(key, oldValue, value);
    }

    /// @inheritdoc IProtocolParams
    function isSet(bytes32 key) external view returns (bool) {
        return _set[key];
    }

    function _get(bytes32 key) private view returns (uint256) {
        // INVARIANT: a parameter nobody set is an error, never a silent 0.
        if (!_set[key]) revert UnknownParam(key);
        return _values[key];
    }
}
