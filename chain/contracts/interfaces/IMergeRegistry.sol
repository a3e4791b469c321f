// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAssetRegistry} from "./IAssetRegistry.sol";

/// @title IMergeRegistry
/// @notice Claimed model merges (docs/merging.md): the merger records the job
/// (input assets, merge weights, its own Share fraction, the asset to register)
/// before posting the claim; the registry checks on-chain that every input
/// asset is owned by or Full-access/Partnership-licensed to the merger, serves
/// as the claim's participant registry (input owners and the merger may verify)
/// and, as its settlement hook, registers the merged asset with its inputs as
/// parents and mints its Shares by merge weight once the claim finalizes.
interface IMergeRegistry {
    /// @notice One merge input.
    /// @param assetId The input asset (0: a model of the merger's own, not registered).
    /// @param weight Its merge weight (scaled integer; the Share split uses the ratios).
    struct MergeInput {
        uint256 assetId;
        uint256 weight;
    }

    /// @notice The merged asset's registration data, fixed before posting.
    /// @param kind Asset kind (model or adapter).
    /// @param contentHash sha256 of the stored blob (the dequantised VM output).
    /// @param keyCommitment Commitment to the blob's vault key.
    /// @param vaultUri Where the blob lives.
    /// @param derivativeRoyaltyBps What the merged asset takes from its own future children.
    struct MergedAsset {
        IAssetRegistry.AssetKind kind;
        bytes32 contentHash;
        bytes32 keyCommitment;
        string vaultUri;
        uint16 derivativeRoyaltyBps;
    }

    /// @notice A recorded merge job.
    /// @param merger Who records, claims and owns the result.
    /// @param claimId The only claim that settles this job: keccak(jobId ‖ programRoot ‖ inputRoot).
    /// @param outputRoot The output root that claim must finalize with (the asset's commitmentRoot).
    /// @param mergerShareBps Share fraction the merger keeps.
    /// @param baseAssetId Base model asset (a parent with no merge weight; 0: none or local).
    struct MergeJob {
        address merger;
        bytes32 claimId;
        bytes32 outputRoot;
        uint16 mergerShareBps;
        uint256 baseAssetId;
    }

    /// @notice A merge job was recorded.
    /// @param jobId The job.
    /// @param merger The merger.
    /// @param claimId The claim that will settle it.
    /// @param parents Input assets (the merged asset's parents).
    /// @param contributors Share receivers besides the merger's fraction.
    /// @param weights Their aggregated weights.
    event MergeRecorded(
        bytes32 indexed jobId,
        address indexed merger,
        bytes32 indexed claimId,
        uint256[] parents,
        address[] contributors,
        uint256[] weights
    );

    /// @notice The job id is taken.
    /// @param jobId The job.
    error MergeJobExists(bytes32 jobId);
    /// @notice No job settles this claim.
    /// @param claimId The claim.
    error UnknownMergeClaim(bytes32 claimId);
    /// @notice The finalized output is not the recorded one.
    /// @param expected Recorded output root.
    /// @param actual Finalized output root.
    error MergeOutputMismatch(bytes32 expected, bytes32 actual);
    /// @notice The merger may not merge this asset (neither owner nor Full-access/Partnership licensee).
    /// @param assetId The asset.
    /// @param merger The merger.
    error InputNotLicensed(uint256 assetId, address merger);
    /// @notice An input asset is listed twice, or there are no inputs, or a weight is zero.
    /// @param assetId The offending asset (0 for a structural error).
    error InvalidMergeInputs(uint256 assetId);
    /// @notice The merger's fraction exceeds 100%.
    /// @param bps Given.
    error InvalidMergerShare(uint256 bps);

    /// @notice Records a merge before its claim is posted; checks every input on-chain.
    /// @param jobId Fresh job id (part of the claim id).
    /// @param programRoot The merge program's root.
    /// @param inputRoot The claim's input bundle root.
    /// @param outputRoot The claimed output root (becomes the asset's commitmentRoot).
    /// @param inputs Merged inputs with their weights (≤ 16 registered ones, distinct).
    /// @param baseAssetId Base model asset (0: none or a local base).
    /// @param mergerShareBps Share fraction the merger keeps.
    /// @param asset What to register at settlement.
    /// @return claimId The claim id the merger must post.
    function record(
        bytes32 jobId,
        bytes32 programRoot,
        bytes32 inputRoot,
        bytes32 outputRoot,
        MergeInput[] calldata inputs,
        uint256 baseAssetId,
        uint16 mergerShareBps,
        MergedAsset calldata asset
    ) external returns (bytes32 claimId);

    /// @notice Whether `merger` may merge `assetId` now (owner, Full-access or Partnership licensee).
    /// @param assetId The asset.
    /// @param merger The account.
    function mayMerge(uint256 assetId, address merger) external view returns (bool);

    /// @notice A recorded job.
    /// @param jobId The job.
    function job(bytes32 jobId) external view returns (MergeJob memory);

    /// @notice The job a claim settles (0 if none).
    /// @param claimId The claim.
    function jobOfClaim(bytes32 claimId) external view returns (bytes32);

    /// @notice The Share receivers and weights recorded for a job (merger's fraction aside).
    /// @param jobId The job.
    function contributorsOf(bytes32 jobId) external view returns (address[] memory contributors, uint256[] memory weights);

    /// @notice The merged asset's parents (input assets, base included).
    /// @param jobId The job.
    function parentsOf(bytes32 jobId) external view returns (uint256[] memory);
}
