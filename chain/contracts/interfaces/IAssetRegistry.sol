// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IAssetRegistry
/// @notice The global registry of AI assets (models, datasets, adapters,
/// agents): what was stored (content hash, VM tensor root, vault URI), who
/// created and owns it, and which parents it derives from at what royalty.
/// @dev Registration mints the asset's whole Share supply at once, so
/// revenue can never be paid to an asset with zero supply.
interface IAssetRegistry {
    /// @notice What an asset is.
    enum AssetKind {
        Model,
        Dataset,
        Adapter,
        Agent
    }

    /// @notice What a registrant provides.
    /// @param kind Asset kind.
    /// @param contentHash sha256 of the stored file (nonzero).
    /// @param commitmentRoot Fraud-proof VM tensor root of the weights (0 if none).
    /// @param keyCommitment `keccak256(abi.encodePacked(vaultKey))` of the 32-byte AES key (0 if none).
    /// @param vaultUri Where the encrypted blob lives.
    /// @param parents Direct parents (≤ 16, distinct, registered).
    /// @param derivativeRoyaltyBps Rate this asset takes from future children's revenue.
    struct AssetInput {
        AssetKind kind;
        bytes32 contentHash;
        bytes32 commitmentRoot;
        bytes32 keyCommitment;
        string vaultUri;
        uint256[] parents;
        uint16 derivativeRoyaltyBps;
    }

    /// @notice A registered asset.
    /// @param kind Asset kind.
    /// @param owner Current owner (manages licensing and royalty terms).
    /// @param creatorId Sahara ID of the creator.
    /// @param contentHash sha256 of the stored file.
    /// @param commitmentRoot VM tensor root (0 if none).
    /// @param keyCommitment Commitment to the vault key (0 if none).
    /// @param vaultUri Where the encrypted blob lives.
    /// @param derivativeRoyaltyBps Rate taken from children registered from now on.
    /// @param registeredAt Block timestamp of registration.
    struct Asset {
        AssetKind kind;
        address owner;
        uint256 creatorId;
        bytes32 contentHash;
        bytes32 commitmentRoot;
        bytes32 keyCommitment;
        string vaultUri;
        uint16 derivativeRoyaltyBps;
        uint64 registeredAt;
    }

    /// @notice An asset was registered and its Shares minted.
    /// @param assetId The new asset id.
    /// @param creatorId Sahara ID of the creator.
    /// @param owner Its owner.
    /// @param kind Its kind.
    /// @param contentHash sha256 of the stored file.
    /// @param commitmentRoot VM tensor root.
    event AssetRegistered(
        uint256 indexed assetId,
        uint256 indexed creatorId,
        address indexed owner,
        AssetKind kind,
        bytes32 contentHash,
        bytes32 commitmentRoot
    );

    /// @notice Ownership of an asset moved.
    /// @param assetId The asset id.
    /// @param previousOwner The former owner.
    /// @param newOwner The new owner.
    event AssetOwnershipTransferred(uint256 indexed assetId, address indexed previousOwner, address indexed newOwner);

    /// @notice The rate an asset takes from its future children changed.
    /// @param assetId The asset id.
    /// @param bps The new rate in basis points.
    event DerivativeRoyaltySet(uint256 indexed assetId, uint16 bps);

    /// @notice No asset has this id.
    /// @param assetId The id.
    error UnknownAsset(uint256 assetId);

    /// @notice A listed parent is not registered.
    /// @param parentId The parent id.
    error UnknownParent(uint256 parentId);

    /// @notice More parents than allowed.
    /// @param count Parents given.
    /// @param maxParents The maximum.
    error TooManyParents(uint256 count, uint256 maxParents);

    /// @notice A parent is listed twice.
    /// @param parentId The repeated id.
    error DuplicateParent(uint256 parentId);

    /// @notice The parents' royalty rates sum to more than 100%.
    /// @param totalBps The sum.
    /// @param maxBps 10000.
    error RoyaltyTooHigh(uint256 totalBps, uint256 maxBps);

    /// @notice A royalty rate above 100%.
    /// @param bps The rate.
    error InvalidRoyaltyBps(uint256 bps);

    /// @notice The content hash is zero.
    error EmptyContentHash();

    /// @notice The account has no active Sahara ID.
    /// @param account The address.
    error NoIdentity(address account);

    /// @notice The caller does not own the asset.
    /// @param assetId The asset id.
    /// @param caller The caller.
    error NotAssetOwner(uint256 assetId, address caller);

    /// @notice A zero address where an account or contract is required.
    error AssetZeroAddress();

    /// @notice Holders and amounts differ in length (or are empty).
    /// @param holders Number of holders.
    /// @param amounts Number of amounts.
    error HoldersLengthMismatch(uint256 holders, uint256 amounts);

    /// @notice Settlement Shares do not add up to the fixed supply.
    /// @param total Their sum.
    /// @param required `SHARE_SUPPLY`.
    error WrongShareTotal(uint256 total, uint256 required);

    /// @notice Role that registers assets produced by settled jobs.
    function SETTLEMENT_ROLE() external view returns (bytes32);

    /// @notice Shares minted per asset.
    function SHARE_SUPPLY() external view returns (uint256);

    /// @notice Maximum number of direct parents.
    function MAX_PARENTS() external view returns (uint256);

    /// @notice Registers an asset created by the caller, who receives all its Shares.
    /// @param input The asset description.
    /// @return assetId The new asset id (ids start at 1).
    function register(AssetInput calldata input) external returns (uint256 assetId);

    /// @notice Registers an asset produced by a settled job; settlement role only.
    /// @param input The asset description.
    /// @param owner Owner of the new asset (needs an active Sahara ID).
    /// @param holders Receivers of the Shares.
    /// @param amounts Shares per receiver, summing to `SHARE_SUPPLY`.
    /// @return assetId The new asset id.
    function registerBySettlement(
        AssetInput calldata input,
        address owner,
        address[] calldata holders,
        uint256[] calldata amounts
    ) external returns (uint256 assetId);

    /// @notice Hands ownership of an asset to `newOwner`; owner only. Shares do not move.
    /// @param assetId The asset id.
    /// @param newOwner The new owner.
    function transferAssetOwnership(uint256 assetId, address newOwner) external;

    /// @notice Sets the rate the asset takes from children registered from now on; owner only.
    /// @param assetId The asset id.
    /// @param bps Rate in basis points (≤ 10000).
    function setDerivativeRoyalty(uint256 assetId, uint16 bps) external;

    /// @notice Whether `assetId` is registered.
    /// @param assetId The asset id.
    function exists(uint256 assetId) external view returns (bool);

    /// @notice Owner of `assetId`; reverts `UnknownAsset` if none.
    /// @param assetId The asset id.
    function ownerOf(uint256 assetId) external view returns (address);

    /// @notice Record of `assetId`; reverts `UnknownAsset` if none.
    /// @param assetId The asset id.
    function asset(uint256 assetId) external view returns (Asset memory);

    /// @notice Direct parents of `assetId` and the royalty each receives (copied at registration).
    /// @param assetId The asset id.
    /// @return ids Parent asset ids.
    /// @return bps Royalty per parent in basis points.
    function parentsOf(uint256 assetId) external view returns (uint256[] memory ids, uint16[] memory bps);

    /// @notice Number of registered assets (the highest id).
    function assetCount() external view returns (uint256);
}
