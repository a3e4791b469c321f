// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC1155} from "@openzeppelin/contracts/token/ERC1155/ERC1155.sol";
import {ERC1155Supply} from "@openzeppelin/contracts/token/ERC1155/extensions/ERC1155Supply.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC165} from "@openzeppelin/contracts/utils/introspection/IERC165.sol";
import {IShares} from "./interfaces/IShares.sol";
import {IRevenueDistributor} from "./interfaces/IRevenueDistributor.sol";

/// @title Shares
/// @notice Transferable revenue rights of collab assets (ERC-1155, token id = asset id).
/// @dev The only override point is `_update`: it reports every balance change
/// to the RevenueDistributor before balances move (Story's IpRoyaltyVault
/// pattern), so a transfer or mint never moves revenue that was already paid.
contract Shares is ERC1155Supply, AccessControl, IShares {
    /// @inheritdoc IShares
    bytes32 public constant MINTER_ROLE = keccak256("MINTER_ROLE");
    /// @inheritdoc IShares
    bytes32 public constant SETTLEMENT_ROLE = keccak256("SETTLEMENT_ROLE");

    /// @inheritdoc IShares
    address public distributor;

    /// @param admin Holder of DEFAULT_ADMIN_ROLE (grants the minter and settlement roles).
    constructor(address admin) ERC1155("collab://shares/{id}") {
        // INVARIANT: an admin exists, or the roles could never be granted.
        if (admin == address(0)) revert SharesZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @inheritdoc IShares
    function initialize(address distributor_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        // INVARIANT: the distributor is set once; changing it would orphan every recorded debt.
        if (distributor != address(0)) revert DistributorAlreadySet(distributor);
        if (distributor_ == address(0)) revert SharesZeroAddress();
        distributor = distributor_;
        emit DistributorSet(distributor_);
    }

    /// @inheritdoc IShares
    function mint(address to, uint256 id, uint256 amount) external {
        // INVARIANT: only the registry (minter) and settlement create Shares.
        if (!hasRole(MINTER_ROLE, msg.sender) && !hasRole(SETTLEMENT_ROLE, msg.sender)) {
            revert AccessControlUnauthorizedAccount(msg.sender, MINTER_ROLE);
        }
        _mint(to, id, amount, "");
    }

    /// @inheritdoc IShares
    function totalSupply(uint256 id) public view override(ERC1155Supply, IShares) returns (uint256) {
        return super.totalSupply(id);
    }

    /// @inheritdoc ERC1155
    function supportsInterface(bytes4 interfaceId) public view override(ERC1155, AccessControl, IERC165) returns (bool) {
        return interfaceId == type(IShares).interfaceId || super.supportsInterface(interfaceId);
    }

    /// @dev Settles revenue debts on pre-update balances, then moves the balances.
    function _update(address from, address to, uint256[] memory ids, uint256[] memory values)
        internal
        override(ERC1155Supply)
    {
        address distributor_ = distributor;
        // INVARIANT: no balance changes unless the distributor can account for it.
        if (distributor_ == address(0)) revert DistributorNotSet();
        IRevenueDistributor(distributor_).beforeSharesUpdate(from, to, ids, values);
        super._update(from, to, ids, values);
    }
}
