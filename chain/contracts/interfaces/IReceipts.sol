// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IERC5192
/// @notice Minimal soulbound NFTs (ERC-5192); interface id 0xb45a3c0e.
interface IERC5192 {
    /// @notice The token became non-transferable.
    /// @param tokenId The token.
    event Locked(uint256 tokenId);

    /// @notice The token became transferable (never emitted by collab's Receipts).
    /// @param tokenId The token.
    event Unlocked(uint256 tokenId);

    /// @notice Whether `tokenId` is bound to its owner.
    /// @param tokenId The token.
    function locked(uint256 tokenId) external view returns (bool);
}

/// @title IReceipts
/// @notice Soulbound attribution: one ERC-721 + ERC-5192 token per recorded
/// contribution to an asset, minted only when a settled claim says so.
/// @dev Receipts are the proof of who contributed what; since they carry
/// reputation and attribution and no money, they must never change hands.
interface IReceipts is IERC5192 {
    /// @notice What kind of contribution a receipt records.
    enum ContributionKind {
        TrainingUpdate,
        MergeInput,
        Compute,
        Data
    }

    /// @notice One contribution.
    /// @param assetId The asset the contribution went into.
    /// @param claimId The settled claim that attests it.
    /// @param weight The contribution's weight in the attribution record.
    /// @param kind What was contributed.
    struct Receipt {
        uint256 assetId;
        bytes32 claimId;
        uint256 weight;
        ContributionKind kind;
    }

    /// @notice A receipt was minted.
    /// @param tokenId The new token id.
    /// @param to Its (permanent) holder.
    /// @param assetId The asset contributed to.
    /// @param claimId The settled claim.
    /// @param weight The contribution's weight.
    /// @param kind What was contributed.
    event ReceiptMinted(
        uint256 indexed tokenId,
        address indexed to,
        uint256 indexed assetId,
        bytes32 claimId,
        uint256 weight,
        ContributionKind kind
    );

    /// @notice A transfer or approval was attempted; receipts are bound to their holder.
    /// @param tokenId The token (0 for `setApprovalForAll`, which names no token).
    error Soulbound(uint256 tokenId);

    /// @notice A zero admin was given to the constructor.
    error ReceiptsZeroAddress();

    /// @notice No receipt has this id.
    /// @param tokenId The id.
    error UnknownReceipt(uint256 tokenId);

    /// @notice Role allowed to mint (settlement contracts).
    function SETTLEMENT_ROLE() external view returns (bytes32);

    /// @notice Mints a locked receipt to `to`; settlement role only.
    /// @param to The contributor.
    /// @param r The contribution.
    /// @return tokenId The new token id (ids start at 1).
    function mint(address to, Receipt calldata r) external returns (uint256 tokenId);

    /// @notice The contribution recorded by `tokenId`; reverts `UnknownReceipt` if none.
    /// @param tokenId The token.
    function receipt(uint256 tokenId) external view returns (Receipt memory);

    /// @notice Every receipt id held by `owner`, in mint order.
    /// @param owner The holder.
    function receiptsOf(address owner) external view returns (uint256[] memory);

    /// @notice Number of receipts minted (the highest id).
    function receiptCount() external view returns (uint256);
}
