// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IAssetRegistry} from "./interfaces/IAssetRegistry.sol";
import {IIdentityRegistry} from "./interfaces/IIdentityRegistry.sol";
import {IShares} from "./interfaces/IShares.sol";

/// @title AssetRegistry
/// @notice Registers AI assets with their provenance (parents and the royalty
/// each takes, copied at registration) and mints each asset's fixed Share supply.
/// @dev Parent rates are frozen per child at registration, so an owner raising
/// its derivative royalty later never changes what existing children pay.
contract AssetRegistry is IAssetRegistry, AccessControl, ReentrancyGuardTransient {
    /// @inheritdoc IAssetRegistry
    bytes32 public constant SETTLEMENT_ROLE = keccak256("SETTLEMENT_ROLE");
    /// @inheritdoc IAssetRegistry
    uint256 public constant SHARE_SUPPLY = 1_000_000;
    /// @inheritdoc IAssetRegistry
    uint256 public constant MAX_PARENTS = 16;
    /// @notice Denominator of royalty rates (100%).
    uint256 public constant BPS_DENOMINATOR = 10_000;

    /// @notice Sahara IDs: registrants and settlement owners must hold an active one.
    IIdentityRegistry public immutable IDENTITY;
    /// @notice The Shares contract that mints each asset's revenue rights.
    IShares public immutable SHARES;

    /// @dev Number of registered assets; ids are 1..count.
    uint256 private _count;
    /// @dev assetId => record.
    mapping(uint256 assetId => Asset) private _assets;
    /// @dev assetId => direct parent ids.
    mapping(uint256 assetId => uint256[]) private _parents;
    /// @dev assetId => royalty per parent, aligned with `_parents`.
    mapping(uint256 assetId => uint16[]) private _parentBps;

    /// @param identity The IdentityRegistry.
    /// @param shares The Shares contract (this registry needs its MINTER_ROLE).
    /// @param admin Holder of DEFAULT_ADMIN_ROLE (grants the settlement role).
    constructor(address identity, address shares, address admin) {
        if (identity == address(0) || shares == address(0) || admin == address(0)) revert AssetZeroAddress();
        IDENTITY = IIdentityRegistry(identity);
        SHARES = IShares(shares);
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    // ------------------------------------------------------------------ mutations

    /// @inheritdoc IAssetRegistry
    function register(AssetInput calldata input) external nonReentrant returns (uint256 assetId) {
        uint256 creatorId = _activeIdOf(msg.sender);
        assetId = _store(input, msg.sender, creatorId);
        SHARES.mint(msg.sender, assetId, SHARE_SUPPLY);
    }

    /// @inheritdoc IAssetRegistry
    function registerBySettlement(
        AssetInput calldata input,
        address owner,
        address[] calldata holders,
        uint256[] calldata amounts
    ) external onlyRole(SETTLEMENT_ROLE) nonReentrant returns (uint256 assetId) {
        if (owner == address(0)) revert AssetZeroAddress();
        uint256 creatorId = _activeIdOf(owner);
        if (holders.length == 0 || holders.length != amounts.length) {
            revert HoldersLengthMismatch(holders.length, amounts.length);
        }
        uint256 total;
        for (uint256 i = 0; i < holders.length; ++i) {
            if (holders[i] == address(0)) revert AssetZeroAddress();
            total += amounts[i];
        }
        // INVARIANT: every asset has exactly SHARE_SUPPLY Shares.
        if (total != SHARE_SUPPLY) revert WrongShareTotal(total, SHARE_SUPPLY);
        assetId = _store(input, owner, creatorId);
        for (uint256 i = 0; i < holders.length; ++i) {
            if (amounts[i] > 0) SHARES.mint(holders[i], assetId, amounts[i]);
        }
    }

    /// @inheritdoc IAssetRegistry
    function transferAssetOwnership(uint256 assetId, address newOwner) external {
        Asset storage record = _ownedBy(assetId, msg.sender);
        if (newOwner == address(0)) revert AssetZeroAddress();
        record.owner = newOwner;
        emit AssetOwnershipTransferred(assetId, msg.sender, newOwner);
    }

    /// @inheritdoc IAssetRegistry
    function setDerivativeRoyalty(uint256 assetId, uint16 bps) external {
        Asset storage record = _ownedBy(assetId, msg.sender);
        // INVARIANT: a rate is at most 100%.
        if (bps > BPS_DENOMINATOR) revert InvalidRoyaltyBps(bps);
        record.derivativeRoyaltyBps = bps;
        emit DerivativeRoyaltySet(assetId, bps);
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IAssetRegistry
    function exists(uint256 assetId) public view returns (bool) {
        return assetId != 0 && assetId <= _count;
    }

    /// @inheritdoc IAssetRegistry
    function ownerOf(uint256 assetId) external view returns (address) {
        return _existing(assetId).owner;
    }

    /// @inheritdoc IAssetRegistry
    function asset(uint256 assetId) external view returns (Asset memory) {
        return _existing(assetId);
    }

    /// @inheritdoc IAssetRegistry
    function parentsOf(uint256 assetId) external view returns (uint256[] memory ids, uint16[] memory bps) {
        _existing(assetId);
        return (_parents[assetId], _parentBps[assetId]);
    }

    /// @inheritdoc IAssetRegistry
    function assetCount() external view returns (uint256) {
        return _count;
    }

    // ------------------------------------------------------------------ internals

    /// @dev Validates `input` and writes the record and its parent links; Shares are minted by the caller after.
    function _store(AssetInput calldata input, address owner, uint256 creatorId) private returns (uint256 assetId) {
        if (input.contentHash == bytes32(0)) revert EmptyContentHash();
        // INVARIANT: a rate is at most 100%.
        if (input.derivativeRoyaltyBps > BPS_DENOMINATOR) revert InvalidRoyaltyBps(input.derivativeRoyaltyBps);
        uint256 n = input.parents.length;
        // INVARIANT: direct parents only, at most MAX_PARENTS (bounds the gas of every payment).
        if (n > MAX_PARENTS) revert TooManyParents(n, MAX_PARENTS);

        assetId = ++_count;
        uint256 totalBps;
        for (uint256 i = 0; i < n; ++i) {
            uint256 parentId = input.parents[i];
            // INVARIANT: parents exist before their children (so the graph is acyclic).
            if (parentId == 0 || parentId >= assetId) revert UnknownParent(parentId);
            for (uint256 j = 0; j < i; ++j) {
                // INVARIANT: a parent is paid once per payment.
                if (input.parents[j] == parentId) revert DuplicateParent(parentId);
            }
            uint16 bps = _assets[parentId].derivativeRoyaltyBps;
            totalBps += bps;
            _parents[assetId].push(parentId);
            _parentBps[assetId].push(bps);
        }
        // INVARIANT: parents together never take more than the whole payment.
        if (totalBps > BPS_DENOMINATOR) revert RoyaltyTooHigh(totalBps, BPS_DENOMINATOR);

        _assets[assetId] = Asset({
            kind: input.kind,
            owner: owner,
            creatorId: creatorId,
            contentHash: input.contentHash,
            commitmentRoot: input.commitmentRoot,
            keyCommitment: input.keyCommitment,
            vaultUri: input.vaultUri,
            derivativeRoyaltyBps: input.derivativeRoyaltyBps,
            registeredAt: uint64(block.timestamp)
        });
        emit AssetRegistered(assetId, creatorId, owner, input.kind, input.contentHash, input.commitmentRoot);
    }

    /// @dev The record of `assetId`, or `UnknownAsset`.
    function _existing(uint256 assetId) private view returns (Asset storage) {
        if (!exists(assetId)) revert UnknownAsset(assetId);
        return _assets[assetId];
    }

    /// @dev The record of `assetId` if `account` owns it.
    function _ownedBy(uint256 assetId, address account) private view returns (Asset storage record) {
        record = _existing(assetId);
        // INVARIANT: only the owner manages an asset.
        if (record.owner != account) revert NotAssetOwner(assetId, account);
    }

    /// @dev The active Sahara ID of `account`, or `NoIdentity`.
    function _activeIdOf(address account) private view returns (uint256 id) {
        id = IDENTITY.idOf(account);
        // INVARIANT: only live identities create or own new assets.
        if (id == 0 || !IDENTITY.isActive(id)) revert NoIdentity(account);
    }
}
