// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IRevenueDistributor} from "./interfaces/IRevenueDistributor.sol";
import {IShares} from "./interfaces/IShares.sol";
import {IAssetRegistry} from "./interfaces/IAssetRegistry.sol";

/// @title RevenueDistributor
/// @notice Pays each asset's revenue to its Share holders pro rata, after its
/// direct parents took their royalty; holders pull their ETH.
/// @dev Magnified-dividend accounting (ERC-1726 draft, scale 2^128): a payment
/// raises `accPerShare` by `(amount * 2^128 + carry) / supply` and keeps the
/// remainder as the next carry, so not a single wei is lost. A holder's
/// claimable is `(accPerShare * balance - debt) / 2^128`; Shares adjusts debts
/// before every balance change, so the amount is O(1) to compute and moving
/// Shares never moves revenue paid before the move.
contract RevenueDistributor is IRevenueDistributor, ReentrancyGuardTransient {
    /// @notice Fixed-point scale of `accPerShare`.
    uint256 public constant MAGNITUDE = 2 ** 128;
    /// @notice Denominator of royalty rates.
    uint256 public constant BPS_DENOMINATOR = 10_000;

    /// @notice The Shares contract, the only caller of `beforeSharesUpdate`.
    IShares public immutable SHARES;
    /// @notice The AssetRegistry that knows which assets exist and their parents.
    IAssetRegistry public immutable ASSETS;

    /// @dev Accounting of one asset.
    struct Pool {
        uint256 accPerShare;
        uint256 carry;
        uint256 totalPaid;
        uint256 totalClaimed;
    }

    /// @dev assetId => pool.
    mapping(uint256 assetId => Pool) private _pools;
    /// @dev assetId => holder => signed magnified debt.
    mapping(uint256 assetId => mapping(address holder => int256)) private _debts;

    /// @param shares The Shares contract.
    /// @param assets The AssetRegistry.
    constructor(address shares, address assets) {
        // INVARIANT: both collaborators exist; they are immutable, so a zero one would brick the contract.
        if (shares == address(0) || assets == address(0)) revert DistributorZeroAddress();
        SHARES = IShares(shares);
        ASSETS = IAssetRegistry(assets);
    }

    /// @inheritdoc IRevenueDistributor
    function pay(uint256 assetId) external payable {
        uint256 amount = msg.value;
        // INVARIANT: only real, purpose-tagged deposits are accounted.
        if (amount == 0) revert ZeroPayment(assetId);
        // INVARIANT: revenue goes to registered assets only.
        if (!ASSETS.exists(assetId)) revert UnknownAsset(assetId);
        uint256 supply = SHARES.totalSupply(assetId);
        // INVARIANT: someone must be able to claim what is paid.
        if (supply == 0) revert NoShareholders(assetId);

        uint256 rest = amount;
        (uint256[] memory parents, uint16[] memory bps) = ASSETS.parentsOf(assetId);
        for (uint256 i = 0; i < parents.length; ++i) {
            uint256 royalty = amount * bps[i] / BPS_DENOMINATOR;
            uint256 parentSupply = SHARES.totalSupply(parents[i]);
            // A parent without holders cannot receive; its part stays with the child.
            if (royalty == 0 || parentSupply == 0) continue;
            rest -= royalty;
            _credit(parents[i], royalty, parentSupply);
            emit RoyaltyPaid(assetId, parents[i], royalty);
        }
        if (rest > 0) _credit(assetId, rest, supply);
        emit RevenuePaid(assetId, msg.sender, amount, rest);
    }

    /// @inheritdoc IRevenueDistributor
    function claim(uint256 assetId) external nonReentrant returns (uint256 amount) {
        amount = _settle(assetId, msg.sender);
        _send(msg.sender, amount);
    }

    /// @inheritdoc IRevenueDistributor
    function claimMany(uint256[] calldata assetIds) external nonReentrant returns (uint256 amount) {
        for (uint256 i = 0; i < assetIds.length; ++i) {
            amount += _settle(assetIds[i], msg.sender);
        }
        _send(msg.sender, amount);
    }

    /// @inheritdoc IRevenueDistributor
    function beforeSharesUpdate(address from, address to, uint256[] calldata ids, uint256[] calldata values) external {
        // INVARIANT: debts move only with real balance changes.
        if (msg.sender != address(SHARES)) revert OnlyShares(msg.sender);
        for (uint256 i = 0; i < ids.length; ++i) {
            uint256 acc = _pools[ids[i]].accPerShare;
            if (acc == 0) continue;
            int256 delta = int256(acc * values[i]);
            // The sender keeps what its Shares earned so far, the receiver starts from now.
            if (from != address(0)) _debts[ids[i]][from] -= delta;
            if (to != address(0)) _debts[ids[i]][to] += delta;
        }
    }

    /// @inheritdoc IRevenueDistributor
    function claimable(uint256 assetId, address holder) public view returns (uint256) {
        return _magnifiedOwed(assetId, holder) / MAGNITUDE;
    }

    /// @inheritdoc IRevenueDistributor
    function totalPaid(uint256 assetId) external view returns (uint256) {
        return _pools[assetId].totalPaid;
    }

    /// @inheritdoc IRevenueDistributor
    function totalClaimed(uint256 assetId) external view returns (uint256) {
        return _pools[assetId].totalClaimed;
    }

    /// @inheritdoc IRevenueDistributor
    function dust(uint256 assetId) external view returns (uint256) {
        return _pools[assetId].carry;
    }

    /// @inheritdoc IRevenueDistributor
    function accPerShare(uint256 assetId) external view returns (uint256) {
        return _pools[assetId].accPerShare;
    }

    /// @inheritdoc IRevenueDistributor
    function debtOf(uint256 assetId, address holder) external view returns (int256) {
        return _debts[assetId][holder];
    }

    /// @dev Adds `amount` wei to the holders of `assetId` (supply > 0), carrying the remainder.
    function _credit(uint256 assetId, uint256 amount, uint256 supply) private {
        Pool storage pool = _pools[assetId];
        uint256 magnified = amount * MAGNITUDE + pool.carry;
        pool.accPerShare += magnified / supply;
        pool.carry = magnified % supply;
        pool.totalPaid += amount;
    }

    /// @dev Books the whole-wei part of what `holder` is owed on `assetId` as claimed;
    /// the fractional part stays in the debt for later.
    function _settle(uint256 assetId, address holder) private returns (uint256 amount) {
        amount = claimable(assetId, holder);
        if (amount == 0) return 0;
        _debts[assetId][holder] += int256(amount * MAGNITUDE);
        _pools[assetId].totalClaimed += amount;
        emit RevenueClaimed(assetId, holder, amount);
    }

    /// @dev Magnified amount owed: `accPerShare * balance - debt` (never negative by construction).
    function _magnifiedOwed(uint256 assetId, address holder) private view returns (uint256) {
        int256 owed = int256(_pools[assetId].accPerShare * SHARES.balanceOf(holder, assetId)) - _debts[assetId][holder];
        return owed > 0 ? uint256(owed) : 0;
    }

    /// @dev Interaction last: every state change of the claim is already written.
    function _send(address holder, uint256 amount) private {
        if (amount == 0) return;
        (bool ok,) = holder.call{value: amount}("");
        if (!ok) revert ClaimTransferFailed(holder, amount);
    }
}
