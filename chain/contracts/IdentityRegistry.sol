// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {BLS} from "solady/utils/ext/ithaca/BLS.sol";
import {IIdentityRegistry} from "./interfaces/IIdentityRegistry.sol";
import {IProtocolParams} from "./interfaces/IProtocolParams.sol";
import {ParamKeys} from "./lib/ParamKeys.sol";

/// @title IdentityRegistry (Sahara ID)
/// @notice One staked identity per address: public keys (CurveZMQ, X25519,
/// BLS with proof of possession), a role, and a decaying reputation that only
/// settlement contracts move and that gates the aggregator and claimer roles.
/// @dev Reputation is stored as (value, timestamp) and decayed lazily on read,
/// so no keeper has to touch every identity as time passes.
contract IdentityRegistry is IIdentityRegistry, AccessControl, ReentrancyGuardTransient {
    /// @inheritdoc IIdentityRegistry
    bytes32 public constant SETTLEMENT_ROLE = keccak256("SETTLEMENT_ROLE");
    /// @inheritdoc IIdentityRegistry
    uint256 public constant MAX_NAME_LENGTH = 64;
    /// @notice Domain tag of the BLS proof-of-possession message.
    bytes public constant POP_DOMAIN = "collab-bls-pop";

    /// @dev EIP-2537 encoding of -G1 (the negated generator), for e(pk, H(m)) · e(-G1, pop) == 1.
    bytes private constant _NEG_G1 =
        hex"0000000000000000000000000000000017f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb00000000000000000000000000000000114d1d6855d545a8aa7d76c8cf2e21f267816aef1db507c96655b9d5caac42364e6f38ba0ecb751bad54dcd6b939c2ca";
    uint256 private constant _G1_LENGTH = 128;
    uint256 private constant _G2_LENGTH = 256;

    /// @notice Where the admission stake, genesis reputation, half-life and gates are read.
    IProtocolParams public immutable PARAMS;

    /// @dev A stored reputation and the time it was last written (decay runs from there).
    struct Reputation {
        uint256 value;
        uint64 updatedAt;
    }

    /// @dev Number of identities ever registered; ids are 1..count.
    uint256 private _count;
    /// @dev id => identity record.
    mapping(uint256 id => Identity) private _identities;
    /// @dev account => id (0 = none); kept after exit so an id is never reused.
    mapping(address account => uint256) private _idOf;
    /// @dev id => reputation.
    mapping(uint256 id => Reputation) private _reputation;
    /// @dev id => stake locked at registration (returned by `exit`).
    mapping(uint256 id => uint256) private _stake;

    /// @param params The ProtocolParams contract.
    /// @param admin Holder of DEFAULT_ADMIN_ROLE (grants the aggregator and settlement roles).
    constructor(address params, address admin) {
        if (params == address(0) || admin == address(0)) revert IdentityZeroAddress();
        PARAMS = IProtocolParams(params);
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    // ------------------------------------------------------------------ mutations

    /// @inheritdoc IIdentityRegistry
    function register(string calldata name, Role role, Keys calldata keys) external payable returns (uint256 id) {
        uint256 existing = _idOf[msg.sender];
        // INVARIANT: one identity per address, forever (ids are never reused).
        if (existing != 0) revert AlreadyRegistered(msg.sender, existing);
        // INVARIANT: the aggregator role is granted by the admin, never self-assigned.
        if (role == Role.Aggregator) revert RoleNotGranted(role);
        uint256 nameLength = bytes(name).length;
        if (nameLength == 0 || nameLength > MAX_NAME_LENGTH) revert InvalidName(nameLength, MAX_NAME_LENGTH);
        uint256 required = PARAMS.get(ParamKeys.ADMISSION_STAKE);
        // INVARIANT: every identity locks exactly the governed admission stake.
        if (msg.value != required) revert WrongStake(msg.value, required);
        _checkKeys(keys);

        id = ++_count;
        Identity storage record = _identities[id];
        record.account = msg.sender;
        record.name = name;
        record.role = role;
        record.keys = keys;
        record.active = true;
        record.registeredAt = uint64(block.timestamp);
        _idOf[msg.sender] = id;
        _stake[id] = msg.value;
        _reputation[id] = Reputation(PARAMS.get(ParamKeys.GENESIS_REPUTATION), uint64(block.timestamp));
        emit IdentityRegistered(id, msg.sender, role, name);
    }

    /// @inheritdoc IIdentityRegistry
    function updateKeys(Keys calldata keys) external {
        uint256 id = _activeIdOf(msg.sender);
        _checkKeys(keys);
        _identities[id].keys = keys;
        emit KeysUpdated(id);
    }

    /// @inheritdoc IIdentityRegistry
    function exit() external nonReentrant {
        uint256 id = _activeIdOf(msg.sender);
        uint256 stake = _stake[id];
        _identities[id].active = false;
        _stake[id] = 0;
        emit IdentityExited(id);
        Address.sendValue(payable(msg.sender), stake);
    }

    /// @inheritdoc IIdentityRegistry
    function grantAggregator(uint256 id) external onlyRole(DEFAULT_ADMIN_ROLE) {
        Identity storage record = _existing(id);
        // INVARIANT: only a live identity can be given a role.
        if (!record.active) revert IdentityInactive(id);
        if (record.role == Role.Aggregator) revert AlreadyAggregator(id);
        record.role = Role.Aggregator;
        emit AggregatorGranted(id);
    }

    /// @inheritdoc IIdentityRegistry
    function adjustReputation(uint256 id, int256 delta) external onlyRole(SETTLEMENT_ROLE) {
        _existing(id);
        uint256 oldValue = _decayed(id);
        uint256 newValue;
        if (delta >= 0) {
            newValue = oldValue + uint256(delta);
        } else {
            // -(delta + 1) + 1 avoids negating type(int256).min.
            uint256 decrease = uint256(-(delta + 1)) + 1;
            newValue = decrease >= oldValue ? 0 : oldValue - decrease;
        }
        _reputation[id] = Reputation(newValue, uint64(block.timestamp));
        emit ReputationChanged(id, oldValue, newValue);
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IIdentityRegistry
    function idOf(address account) external view returns (uint256) {
        return _idOf[account];
    }

    /// @inheritdoc IIdentityRegistry
    function identity(uint256 id) external view returns (Identity memory) {
        return _existing(id);
    }

    /// @inheritdoc IIdentityRegistry
    function isActive(uint256 id) public view returns (bool) {
        return _identities[id].active;
    }

    /// @inheritdoc IIdentityRegistry
    function reputationOf(uint256 id) external view returns (uint256) {
        _existing(id);
        return _decayed(id);
    }

    /// @inheritdoc IIdentityRegistry
    function stakeOf(uint256 id) external view returns (uint256) {
        return _stake[id];
    }

    /// @inheritdoc IIdentityRegistry
    function identityCount() external view returns (uint256) {
        return _count;
    }

    /// @inheritdoc IIdentityRegistry
    function canClaim(address account) external view returns (bool) {
        uint256 id = _idOf[account];
        if (id == 0 || !_identities[id].active) return false;
        return _decayed(id) >= PARAMS.get(ParamKeys.MIN_REPUTATION_CLAIMER);
    }

    /// @inheritdoc IIdentityRegistry
    function canAggregate(address account) external view returns (bool) {
        uint256 id = _idOf[account];
        if (id == 0) return false;
        Identity storage record = _identities[id];
        if (!record.active || record.role != Role.Aggregator) return false;
        return _decayed(id) >= PARAMS.get(ParamKeys.MIN_REPUTATION_AGGREGATOR);
    }

    // ------------------------------------------------------------------ internals

    /// @dev The record of `id`, or `UnknownIdentity`.
    function _existing(uint256 id) private view returns (Identity storage record) {
        // INVARIANT: ids are 1..count.
        if (id == 0 || id > _count) revert UnknownIdentity(id);
        return _identities[id];
    }

    /// @dev The active identity id of `account`, or `NoIdentity`.
    function _activeIdOf(address account) private view returns (uint256 id) {
        id = _idOf[account];
        // INVARIANT: only a live identity acts.
        if (id == 0 || !_identities[id].active) revert NoIdentity(account);
    }

    /// @dev Reputation of `id` now: halved once per whole half-life elapsed,
    /// then linearly from v to v/2 inside the running period. A half-life of 0 disables decay.
    function _decayed(uint256 id) private view returns (uint256) {
        Reputation storage rep = _reputation[id];
        uint256 value = rep.value;
        uint256 halfLife = PARAMS.get(ParamKeys.REPUTATION_HALF_LIFE);
        if (value == 0 || halfLife == 0) return value;
        uint256 elapsed = block.timestamp - rep.updatedAt;
        uint256 periods = elapsed / halfLife;
        if (periods >= 256) return 0;
        value >>= periods;
        return value - Math.mulDiv(value, elapsed % halfLife, 2 * halfLife);
    }

    /// @dev Keys must be nonzero and carry a BLS proof of possession bound to
    /// this chain, this registry and the caller (so a proof cannot be replayed
    /// for another account or another deployment).
    function _checkKeys(Keys calldata keys) private view {
        if (keys.curveKey == bytes32(0) || keys.x25519Key == bytes32(0)) revert ZeroPublicKey();
        // INVARIANT: EIP-2537 lengths: G1 = 128 bytes, G2 = 256 bytes.
        if (keys.blsPubkey.length != _G1_LENGTH) revert InvalidBlsKeyLength(keys.blsPubkey.length);
        if (keys.blsPop.length != _G2_LENGTH) revert InvalidBlsPopLength(keys.blsPop.length);
        _checkBlsKey(keys.blsPubkey);
        bytes memory message =
            abi.encodePacked(POP_DOMAIN, block.chainid, address(this), msg.sender, keys.blsPubkey);
        BLS.G2Point memory hashed = BLS.hashToG2(message);
        bytes memory input = abi.encodePacked(keys.blsPubkey, abi.encode(hashed), _NEG_G1, keys.blsPop);
        // The precompile is called directly (not via BLS.pairing) so that a
        // malformed pop is reported as InvalidProofOfPossession, not PairingFailed.
        (bool ok, bytes memory out) = BLS.BLS12_PAIRING_CHECK.staticcall(input);
        // INVARIANT: e(pk, H(m)) · e(-G1, pop) == 1, i.e. the key's owner signed m.
        if (!ok || out.length != 32 || abi.decode(out, (uint256)) != 1) revert InvalidProofOfPossession();
    }

    /// @dev The key must be a valid G1 subgroup point other than infinity
    /// (the identity key would make any all-zero signature verify). G1MSM with
    /// scalar 1 runs the precompile's encoding, curve and subgroup checks.
    function _checkBlsKey(bytes calldata pubkey) private view {
        bool infinity = true;
        for (uint256 i = 0; i < _G1_LENGTH; i += 32) {
            if (bytes32(pubkey[i:i + 32]) != bytes32(0)) {
                infinity = false;
                break;
            }
        }
        if (infinity) revert InvalidBlsKey();
        (bool ok, bytes memory out) = BLS.BLS12_G1MSM.staticcall(abi.encodePacked(pubkey, uint256(1)));
        if (!ok || out.length != _G1_LENGTH) revert InvalidBlsKey();
    }
}
