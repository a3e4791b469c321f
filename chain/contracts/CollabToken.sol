// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {ERC20Votes} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Votes.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";
import {ICollabToken} from "./interfaces/ICollabToken.sol";

/// @title CollabToken
/// @notice COLLAB: the voting token of collab's governance. Holders delegate (to themselves or to
/// someone else) to turn balances into votes.
/// @dev The clock is `block.timestamp` rather than block numbers, so governance periods are written in
/// seconds and keep their meaning on chains (and test chains) whose block times differ.
contract CollabToken is ICollabToken, ERC20, ERC20Permit, ERC20Votes {
    /// @param initialHolder Receives the whole, fixed supply.
    /// @param initialSupply Number of token units (18 decimals) minted once.
    constructor(address initialHolder, uint256 initialSupply) ERC20("Collab", "COLLAB") ERC20Permit("Collab") {
        // INVARIANT: governance needs votes, and no supply can ever be minted later.
        if (initialSupply == 0) revert InvalidInitialSupply();
        _mint(initialHolder, initialSupply);
    }

    /// @notice The current timepoint of the votes clock: the block timestamp.
    /// @return The block timestamp as a uint48.
    function clock() public view override returns (uint48) {
        return uint48(block.timestamp);
    }

    /// @notice Describes the clock (ERC-6372): a timestamp clock.
    /// @return The machine-readable clock mode "mode=timestamp".
    // solhint-disable-next-line func-name-mixedcase
    function CLOCK_MODE() public pure override returns (string memory) {
        return "mode=timestamp";
    }

    /// @inheritdoc ERC20Permit
    function nonces(address owner) public view override(ERC20Permit, Nonces) returns (uint256) {
        return super.nonces(owner);
    }

    /// @dev Single transfer hook: balances and vote checkpoints move together.
    function _update(address from, address to, uint256 value) internal override(ERC20, ERC20Votes) {
        super._update(from, to, value);
    }
}
