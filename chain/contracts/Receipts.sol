// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {IERC5192, IReceipts} from "./interfaces/IReceipts.sol";

/// @title Receipts
/// @notice Soulbound (ERC-5192) ERC-721 attribution receipts, minted by settlement.
/// @dev Minting uses `_mint`, not `_safeMint`: a receiver contract must not be
/// able to block a settlement by rejecting its receipt.
contract Receipts is IReceipts, ERC721, AccessControl {
    /// @inheritdoc IReceipts
    bytes32 public constant SETTLEMENT_ROLE = keccak256("SETTLEMENT_ROLE");

    /// @dev Number of receipts minted; ids are 1..count.
    uint256 private _count;
    /// @dev tokenId => contribution.
    mapping(uint256 tokenId => Receipt) private _receipts;
    /// @dev holder => token ids (append-only: receipts never move).
    mapping(address owner => uint256[]) private _held;

    /// @param admin Holder of DEFAULT_ADMIN_ROLE (grants the settlement role).
    constructor(address admin) ERC721("collab Receipt", "CRCPT") {
        if (admin == address(0)) revert ReceiptsZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @inheritdoc IReceipts
    function mint(address to, Receipt calldata r) external onlyRole(SETTLEMENT_ROLE) returns (uint256 tokenId) {
        tokenId = ++_count;
        _receipts[tokenId] = r;
        _held[to].push(tokenId);
        _mint(to, tokenId);
        emit ReceiptMinted(tokenId, to, r.assetId, r.claimId, r.weight, r.kind);
        emit Locked(tokenId);
    }

    /// @inheritdoc IReceipts
    function receipt(uint256 tokenId) external view returns (Receipt memory) {
        if (_ownerOf(tokenId) == address(0)) revert UnknownReceipt(tokenId);
        return _receipts[tokenId];
    }

    /// @inheritdoc IReceipts
    function receiptsOf(address owner) external view returns (uint256[] memory) {
        return _held[owner];
    }

    /// @inheritdoc IReceipts
    function receiptCount() external view returns (uint256) {
        return _count;
    }

    /// @inheritdoc IERC5192
    function locked(uint256 tokenId) external view returns (bool) {
        _requireOwned(tokenId);
        return true;
    }

    /// @notice Always reverts `Soulbound(tokenId)`: receipts cannot be approved.
    /// @param tokenId The token.
    function approve(address, uint256 tokenId) public pure override {
        revert Soulbound(tokenId);
    }

    /// @notice Always reverts `Soulbound(0)`: receipts cannot be approved.
    function setApprovalForAll(address, bool) public pure override {
        revert Soulbound(0);
    }

    /// @notice ERC-165: ERC-721, ERC-5192 (0xb45a3c0e) and AccessControl.
    /// @param interfaceId The interface id.
    function supportsInterface(bytes4 interfaceId) public view override(ERC721, AccessControl) returns (bool) {
        return interfaceId == type(IERC5192).interfaceId || super.supportsInterface(interfaceId);
    }

    /// @dev The one transfer hook: only mints (from the zero address) pass.
    function _update(address to, uint256 tokenId, address auth) internal override returns (address) {
        // INVARIANT: a receipt never leaves its first holder (ERC-5192: locked tokens MUST NOT transfer).
        if (_ownerOf(tokenId) != address(0)) revert Soulbound(tokenId);
        return super._update(to, tokenId, auth);
    }
}
