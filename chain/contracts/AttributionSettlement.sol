// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAssetRegistry} from "./interfaces/IAssetRegistry.sol";
import {IClaimManager, ISettlementHook} from "./interfaces/IClaimManager.sol";
import {IReceipts} from "./interfaces/IReceipts.sol";

/// @title AttributionSettlement
/// @notice The effects of a finalized job claim (ARCHITECTURE.md §Fraud proofs 6):
/// register the new asset with its parents, mint a soulbound Receipt to every
/// contributor and the asset's fixed Share supply split by weight.
/// @dev Reused by every job registry (training rounds, merges). The derived
/// contract says *what* to attribute (`_attributionOf`, from its own verified
/// record); this base decides *when* (only for a claim `ClaimManager` reports as
/// finalized, once) and *how* the Shares are split (`shareSplit`, pure, exact).
/// `ClaimManager` runs `onClaimFinalized` with a fixed gas budget and ignores a
/// failure; `settle` lets anyone retry the same effects for a finalized claim,
/// so a large contributor set can never lose its attribution to a gas limit.
/// This contract needs SETTLEMENT_ROLE on AssetRegistry, Receipts and Shares.
abstract contract AttributionSettlement is ISettlementHook {
    /// @notice Denominator of the creator's Share fraction (100%).
    uint256 public constant SHARE_BPS = 10_000;

    /// @notice The claim manager whose finalizations trigger settlement.
    IClaimManager public immutable CLAIMS;
    /// @notice Where the new asset is registered (it mints the Shares).
    IAssetRegistry public immutable ASSETS;
    /// @notice Where contributors' soulbound receipts are minted.
    IReceipts public immutable RECEIPTS;

    /// @notice What one finalized claim attributes.
    /// @param owner Owner (and Share-keeping creator) of the new asset; needs an active Sahara ID.
    /// @param asset The asset to register (kind, hashes, vault URI, parents, its own derivative royalty).
    /// @param creatorShareBps Fraction of the Share supply the owner keeps, in bps.
    /// @param contributors Contributors, each receiving one Receipt and Shares by weight.
    /// @param weights Their weights (sum > 0).
    /// @param kind What they contributed (recorded in each Receipt).
    struct Attribution {
        address owner;
        IAssetRegistry.AssetInput asset;
        uint16 creatorShareBps;
        address[] contributors;
        uint256[] weights;
        IReceipts.ContributionKind kind;
    }

    /// @dev claimId => the asset registered at its settlement (0: not settled).
    mapping(bytes32 claimId => uint256) private _settledAsset;
    /// @dev claimId => settlement started (set before any external call, so a receiver cannot re-enter it).
    mapping(bytes32 claimId => bool) private _settled;

    /// @notice A finalized claim's attribution was minted.
    /// @param claimId The claim.
    /// @param assetId The asset registered.
    /// @param owner Its owner.
    /// @param contributors Number of Receipts minted.
    event AttributionSettled(bytes32 indexed claimId, uint256 indexed assetId, address indexed owner, uint256 contributors);

    /// @notice Only the claim manager reports finalizations.
    /// @param caller The caller.
    error NotClaimManager(address caller);
    /// @notice The claim's attribution was minted already.
    /// @param claimId The claim.
    /// @param assetId The asset it registered.
    error AlreadySettled(bytes32 claimId, uint256 assetId);
    /// @notice The claim is not finalized (pending or rejected claims mint nothing).
    /// @param claimId The claim.
    /// @param status Its status.
    error ClaimNotFinalized(bytes32 claimId, IClaimManager.ClaimStatus status);
    /// @notice The contributor and weight lists are empty, differ in length, or weigh nothing.
    /// @param contributors Contributors given.
    /// @param weights Weights given.
    error InvalidWeights(uint256 contributors, uint256 weights);
    /// @notice The creator's fraction exceeds 100%.
    /// @param bps Given.
    error InvalidCreatorShare(uint256 bps);
    /// @notice A zero address was given where a contract is needed.
    error SettlementZeroAddress();

    /// @param claims ClaimManager.
    /// @param assets AssetRegistry.
    /// @param receipts Receipts.
    constructor(address claims, address assets, address receipts) {
        if (claims == address(0) || assets == address(0) || receipts == address(0)) revert SettlementZeroAddress();
        CLAIMS = IClaimManager(claims);
        ASSETS = IAssetRegistry(assets);
        RECEIPTS = IReceipts(receipts);
    }

    /// @inheritdoc ISettlementHook
    function onClaimFinalized(bytes32 claimId, address, bytes32 outputRoot) external {
        // INVARIANT: only the claim manager says a claim finalized.
        if (msg.sender != address(CLAIMS)) revert NotClaimManager(msg.sender);
        _settle(claimId, outputRoot);
    }

    /// @notice Mints the attribution of a finalized claim whose hook failed (e.g. out of its gas budget).
    /// @param claimId The claim.
    /// @param roots The claim's roots (from `ClaimPosted`), checked by the claim manager.
    /// @return assetId The asset registered.
    function settle(bytes32 claimId, IClaimManager.ClaimRoots calldata roots) external returns (uint256 assetId) {
        CLAIMS.checkRoots(claimId, roots);
        IClaimManager.ClaimStatus status = CLAIMS.claimStatus(claimId);
        // INVARIANT: nothing is minted before finalization; a rejected claim mints nothing.
        if (status != IClaimManager.ClaimStatus.Finalized) revert ClaimNotFinalized(claimId, status);
        return _settle(claimId, roots.outputRoot);
    }

    /// @notice The asset registered when `claimId` settled (0 before).
    /// @param claimId The claim.
    /// @return The asset id.
    function settledAsset(bytes32 claimId) public view returns (uint256) {
        return _settledAsset[claimId];
    }

    /// @notice The exact Share split: the creator keeps `floor(supply · creatorBps / 10000)`,
    /// contributor i gets `floor(rest · w_i / Σw)`, and the rounding remainder goes to the creator.
    /// @param supply The asset's fixed Share supply.
    /// @param creatorBps The creator's fraction in bps (≤ 10000).
    /// @param weights Contributors' weights (Σw > 0).
    /// @return creatorAmount Shares the creator receives.
    /// @return amounts Shares per contributor, aligned with `weights`.
    function shareSplit(uint256 supply, uint256 creatorBps, uint256[] memory weights)
        public
        pure
        returns (uint256 creatorAmount, uint256[] memory amounts)
    {
        if (creatorBps > SHARE_BPS) revert InvalidCreatorShare(creatorBps);
        uint256 total;
        for (uint256 i; i < weights.length; ++i) {
            total += weights[i];
        }
        if (total == 0) revert InvalidWeights(weights.length, weights.length);
        creatorAmount = supply * creatorBps / SHARE_BPS;
        uint256 rest = supply - creatorAmount;
        amounts = new uint256[](weights.length);
        uint256 given;
        for (uint256 i; i < weights.length; ++i) {
            amounts[i] = rest * weights[i] / total;
            given += amounts[i];
        }
        // INVARIANT: the supply is fixed: the rounding dust goes to the creator, never lost or minted twice.
        creatorAmount += rest - given;
    }

    /// @notice What `claimId` attributes; reverts when the derived contract holds no verified record for it.
    /// @dev Implementations check `outputRoot` against their record, so only the consented output settles.
    /// @param claimId The finalized claim.
    /// @param outputRoot Its output root.
    /// @return The attribution.
    function _attributionOf(bytes32 claimId, bytes32 outputRoot) internal view virtual returns (Attribution memory);

    /// @dev Called after minting, for the derived contract's own bookkeeping (e.g. its job's status).
    function _afterSettled(bytes32 claimId, uint256 assetId) internal virtual {}

    function _settle(bytes32 claimId, bytes32 outputRoot) private returns (uint256 assetId) {
        // INVARIANT: a claim settles once (marked before any external call).
        if (_settled[claimId]) revert AlreadySettled(claimId, _settledAsset[claimId]);
        _settled[claimId] = true;
        Attribution memory a = _attributionOf(claimId, outputRoot);
        uint256 n = a.contributors.length;
        if (n == 0 || n != a.weights.length) revert InvalidWeights(n, a.weights.length);
        (uint256 creatorAmount, uint256[] memory amounts) = shareSplit(ASSETS.SHARE_SUPPLY(), a.creatorShareBps, a.weights);

        address[] memory holders = new address[](n + 1);
        uint256[] memory values = new uint256[](n + 1);
        holders[0] = a.owner;
        values[0] = creatorAmount;
        for (uint256 i; i < n; ++i) {
            holders[i + 1] = a.contributors[i];
            values[i + 1] = amounts[i];
        }
        assetId = ASSETS.registerBySettlement(a.asset, a.owner, holders, values);
        _settledAsset[claimId] = assetId;
        for (uint256 i; i < n; ++i) {
            RECEIPTS.mint(a.contributors[i], IReceipts.Receipt(assetId, claimId, a.weights[i], a.kind));
        }
        emit AttributionSettled(claimId, assetId, a.owner, n);
        _afterSettled(claimId, assetId);
    }
}
