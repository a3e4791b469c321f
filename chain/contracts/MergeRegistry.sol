// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AttributionSettlement} from "./AttributionSettlement.sol";
import {IAssetRegistry} from "./interfaces/IAssetRegistry.sol";
import {IJobParticipants} from "./interfaces/IClaimManager.sol";
import {ILicensing} from "./interfaces/ILicensing.sol";
import {IMergeRegistry} from "./interfaces/IMergeRegistry.sol";
import {IReceipts} from "./interfaces/IReceipts.sol";

/// @title MergeRegistry
/// @notice Claimed model merges: recorded before posting, settled at finalization (docs/merging.md).
/// @dev The record fixes everything the settlement mints, so finalization alone decides
/// *whether* it happens: the merged asset (owner: the merger) is registered with the
/// input assets as parents, so AssetRegistry copies each parent's own derivative royalty
/// (royalties only as the parents' terms set), and the fixed Share supply is split
/// between the merger (its recorded fraction) and the input assets' owners by merge
/// weight. A local input of the merger's own (asset id 0) weighs for the merger.
/// Owners are read when the job is recorded: the Shares go to whoever owned each input
/// when the merger was licensed to use it.
contract MergeRegistry is AttributionSettlement, IMergeRegistry, IJobParticipants {
    /// @notice Licensing, asked whether the merger may use each input.
    ILicensing public immutable LICENSING;

    mapping(bytes32 jobId => MergeJob) private _jobs;
    mapping(bytes32 jobId => MergedAsset) private _assets;
    mapping(bytes32 jobId => uint256[]) private _parents;
    mapping(bytes32 jobId => address[]) private _contributors;
    mapping(bytes32 jobId => uint256[]) private _weights;
    mapping(bytes32 claimId => bytes32) private _jobOfClaim;

    /// @param claims ClaimManager.
    /// @param assets AssetRegistry.
    /// @param receipts Receipts.
    /// @param licensing Licensing.
    constructor(address claims, address assets, address receipts, address licensing)
        AttributionSettlement(claims, assets, receipts)
    {
        if (licensing == address(0)) revert SettlementZeroAddress();
        LICENSING = ILicensing(licensing);
    }

    /// @inheritdoc IMergeRegistry
    function record(
        bytes32 jobId,
        bytes32 programRoot,
        bytes32 inputRoot,
        bytes32 outputRoot,
        MergeInput[] calldata inputs,
        uint256 baseAssetId,
        uint16 mergerShareBps,
        MergedAsset calldata asset
    ) external returns (bytes32 claimId) {
        if (_jobs[jobId].merger != address(0)) revert MergeJobExists(jobId);
        if (mergerShareBps > SHARE_BPS) revert InvalidMergerShare(mergerShareBps);
        uint256 n = inputs.length;
        if (n == 0) revert InvalidMergeInputs(0);
        uint256[] storage parents = _parents[jobId];
        if (baseAssetId != 0) _addParent(parents, baseAssetId);
        for (uint256 i; i < n; ++i) {
            MergeInput calldata input = inputs[i];
            if (input.weight == 0) revert InvalidMergeInputs(input.assetId);
            address owner = msg.sender;
            if (input.assetId != 0) {
                if (input.assetId != baseAssetId) _addParent(parents, input.assetId);
                owner = ASSETS.ownerOf(input.assetId);
            }
            _addWeight(jobId, owner, input.weight);
        }
        if (parents.length > ASSETS.MAX_PARENTS()) revert InvalidMergeInputs(0);

        claimId = keccak256(abi.encodePacked(jobId, programRoot, inputRoot));
        _jobs[jobId] = MergeJob(msg.sender, claimId, outputRoot, mergerShareBps, baseAssetId);
        _assets[jobId] = asset;
        _jobOfClaim[claimId] = jobId;
        _emitRecorded(jobId, claimId);
    }

    /// @dev Emits `MergeRecorded` from storage in its own frame, so `record` stays within the
    /// legacy pipeline's stack (a stack-too-deep there would push every contract onto viaIR).
    function _emitRecorded(bytes32 jobId, bytes32 claimId) private {
        emit MergeRecorded(jobId, msg.sender, claimId, _parents[jobId], _contributors[jobId], _weights[jobId]);
    }

    /// @inheritdoc IMergeRegistry
    function mayMerge(uint256 assetId, address merger) public view returns (bool) {
        return ASSETS.ownerOf(assetId) == merger
            || LICENSING.isLicensed(assetId, merger, ILicensing.LicenseKind.FullAccess)
            || LICENSING.isLicensed(assetId, merger, ILicensing.LicenseKind.Partnership);
    }

    /// @notice Merge jobs' participants: the merger and the owners of the inputs (they verify the claim).
    /// @param jobId The job.
    /// @param account The account asking.
    /// @return Whether it participates.
    function isParticipant(bytes32 jobId, address account) external view returns (bool) {
        if (_jobs[jobId].merger == address(0)) return false;
        if (account == _jobs[jobId].merger) return true;
        uint256 base = _jobs[jobId].baseAssetId;
        if (base != 0 && ASSETS.ownerOf(base) == account) return true;
        address[] storage contributors = _contributors[jobId];
        for (uint256 i; i < contributors.length; ++i) {
            if (contributors[i] == account) return true;
        }
        return false;
    }

    /// @inheritdoc IMergeRegistry
    function job(bytes32 jobId) external view returns (MergeJob memory) {
        return _jobs[jobId];
    }

    /// @inheritdoc IMergeRegistry
    function jobOfClaim(bytes32 claimId) external view returns (bytes32) {
        return _jobOfClaim[claimId];
    }

    /// @inheritdoc IMergeRegistry
    function contributorsOf(bytes32 jobId) external view returns (address[] memory, uint256[] memory) {
        return (_contributors[jobId], _weights[jobId]);
    }

    /// @inheritdoc IMergeRegistry
    function parentsOf(bytes32 jobId) external view returns (uint256[] memory) {
        return _parents[jobId];
    }

    function _addParent(uint256[] storage parents, uint256 assetId) private {
        // INVARIANT: every parent was usable by the merger when the job was recorded.
        if (!mayMerge(assetId, msg.sender)) revert InputNotLicensed(assetId, msg.sender);
        for (uint256 i; i < parents.length; ++i) {
            if (parents[i] == assetId) revert InvalidMergeInputs(assetId);
        }
        parents.push(assetId);
    }

    function _addWeight(bytes32 jobId, address owner, uint256 weight) private {
        address[] storage contributors = _contributors[jobId];
        for (uint256 i; i < contributors.length; ++i) {
            if (contributors[i] == owner) {
                _weights[jobId][i] += weight;
                return;
            }
        }
        contributors.push(owner);
        _weights[jobId].push(weight);
    }

    function _attributionOf(bytes32 claimId, bytes32 outputRoot) internal view override returns (Attribution memory a) {
        bytes32 jobId = _jobOfClaim[claimId];
        MergeJob storage j = _jobs[jobId];
        if (j.merger == address(0)) revert UnknownMergeClaim(claimId);
        // INVARIANT: only the recorded output is registered; its VM root is the asset's commitmentRoot.
        if (outputRoot != j.outputRoot) revert MergeOutputMismatch(j.outputRoot, outputRoot);
        MergedAsset storage m = _assets[jobId];
        a.owner = j.merger;
        a.asset = IAssetRegistry.AssetInput(
            m.kind, m.contentHash, outputRoot, m.keyCommitment, m.vaultUri, _parents[jobId], m.derivativeRoyaltyBps
        );
        a.creatorShareBps = j.mergerShareBps;
        a.contributors = _contributors[jobId];
        a.weights = _weights[jobId];
        a.kind = IReceipts.ContributionKind.MergeInput;
    }
}
