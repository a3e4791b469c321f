// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC1155} from "@openzeppelin/contracts/token/ERC1155/ERC1155.sol";
import {ERC1155Supply} from "@openzeppelin/contracts/token/ERC1155/extensions/ERC1155Supply.sol";

/// @title PlainERC1155
/// @notice Benchmark baseline: OpenZeppelin's ERC-1155 with nothing added but an open mint.
/// @dev Measured in the same run as collab's `Shares` so that the table shows what a
/// stock ERC-1155 `safeTransferFrom` costs on the same chain, compiler and settings.
/// Not part of collab's protocol: anyone may mint, which is what a benchmark needs.
contract PlainERC1155 is ERC1155 {
    constructor() ERC1155("bench://plain/{id}") {}

    /// @notice Mint `amount` of token `id` to `to` (open: benchmark setup only).
    /// @param to Receiver of the tokens.
    /// @param id Token id.
    /// @param amount Number of tokens.
    function mint(address to, uint256 id, uint256 amount) external {
        _mint(to, id, amount, "");
    }
}

/// @title PlainERC1155Supply
/// @notice Benchmark baseline with OpenZeppelin's `ERC1155Supply`, the base collab's `Shares`
/// extends; the gap between the two baselines is the supply bookkeeping, the gap between
/// this one and `Shares` is collab's revenue-debt hook.
contract PlainERC1155Supply is ERC1155Supply {
    constructor() ERC1155("bench://plain-supply/{id}") {}

    /// @notice Mint `amount` of token `id` to `to` (open: benchmark setup only).
    /// @param to Receiver of the tokens.
    /// @param id Token id.
    /// @param amount Number of tokens.
    function mint(address to, uint256 id, uint256 amount) external {
        _mint(to, id, amount, "");
    }
}
