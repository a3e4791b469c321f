// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IIdentityRegistry
/// @notice Sahara IDs: one staked identity per address with its public keys,
/// a role and a reputation that only settlement contracts move.
/// @dev The BLS key (consent signatures) is registered with a proof of
/// possession, so aggregated public keys cannot be forged by rogue-key attacks.
interface IIdentityRegistry {
    /// @notice What an identity acts as; `Aggregator` is granted, never self-registered.
    enum Role {
        Human,
        Agent,
        Node,
        Aggregator
    }

    /// @notice Public keys of an identity.
    /// @param curveKey CurveZMQ (Curve25519) transport public key.
    /// @param x25519Key X25519 public key that vault keys are wrapped for.
    /// @param blsPubkey BLS12-381 G1 public key, EIP-2537 encoding (128 bytes).
    /// @param blsPop Proof of possession: a G2Basic signature, EIP-2537 encoding (256 bytes),
    /// over `abi.encodePacked("collab-bls-pop", chainid, registry, account, blsPubkey)`.
    struct Keys {
        bytes32 curveKey;
        bytes32 x25519Key;
        bytes blsPubkey;
        bytes blsPop;
    }

    /// @notice A registered identity.
    /// @param account The address that owns the identity.
    /// @param name Display name chosen at registration.
    /// @param role Current role.
    /// @param keys Current public keys.
    /// @param active False after `exit` (the record stays for history).
    /// @param registeredAt Block timestamp of registration.
    struct Identity {
        address account;
        string name;
        Role role;
        Keys keys;
        bool active;
        uint64 registeredAt;
    }

    /// @notice An identity was registered and its stake locked.
    /// @param id The new identity id.
    /// @param account Its address.
    /// @param role Its role.
    /// @param name Its display name.
    event IdentityRegistered(uint256 indexed id, address indexed account, Role role, string name);

    /// @notice An identity replaced its public keys.
    /// @param id The identity id.
    event KeysUpdated(uint256 indexed id);

    /// @notice The admin granted the aggregator role.
    /// @param id The identity id.
    event AggregatorGranted(uint256 indexed id);

    /// @notice Settlement moved an identity's reputation.
    /// @param id The identity id.
    /// @param oldValue Reputation before the change (after decay).
    /// @param newValue Reputation after the change.
    event ReputationChanged(uint256 indexed id, uint256 oldValue, uint256 newValue);

    /// @notice An identity exited and its stake was returned.
    /// @param id The identity id.
    event IdentityExited(uint256 indexed id);

    /// @notice `msg.value` differs from the admission stake.
    /// @param sent Wei sent.
    /// @param required Wei required (`ADMISSION_STAKE`).
    error WrongStake(uint256 sent, uint256 required);

    /// @notice The address already holds an identity (active or exited).
    /// @param account The address.
    /// @param id Its existing identity id.
    error AlreadyRegistered(address account, uint256 id);

    /// @notice The role cannot be taken by registration (it is granted).
    /// @param role The refused role.
    error RoleNotGranted(Role role);

    /// @notice The display name is empty or longer than allowed.
    /// @param length Its length in bytes.
    /// @param maxLength The allowed maximum.
    error InvalidName(uint256 length, uint256 maxLength);

    /// @notice A Curve or X25519 public key is zero.
    error ZeroPublicKey();

    /// @notice The BLS public key is not 128 bytes.
    /// @param length The given length.
    error InvalidBlsKeyLength(uint256 length);

    /// @notice The proof of possession is not 256 bytes.
    /// @param length The given length.
    error InvalidBlsPopLength(uint256 length);

    /// @notice The BLS public key is malformed (a field element too large, or the point at infinity).
    error InvalidBlsKey();

    /// @notice The proof of possession does not verify for this key, chain, registry and sender.
    error InvalidProofOfPossession();

    /// @notice No identity has this id.
    /// @param id The id.
    error UnknownIdentity(uint256 id);

    /// @notice The caller (or named account) has no active identity.
    /// @param account The address.
    error NoIdentity(address account);

    /// @notice The identity has exited.
    /// @param id The identity id.
    error IdentityInactive(uint256 id);

    /// @notice A zero address was given for the params contract or the admin.
    error IdentityZeroAddress();

    /// @notice The identity already has the aggregator role.
    /// @param id The identity id.
    error AlreadyAggregator(uint256 id);

    /// @notice Role allowed to move reputation (settlement contracts).
    function SETTLEMENT_ROLE() external view returns (bytes32);

    /// @notice Maximum display-name length in bytes.
    function MAX_NAME_LENGTH() external view returns (uint256);

    /// @notice Registers the caller; `msg.value` must equal `ADMISSION_STAKE`.
    /// @param name Display name (1..MAX_NAME_LENGTH bytes).
    /// @param role Human, Agent or Node (Aggregator is granted by the admin).
    /// @param keys Public keys with a valid BLS proof of possession.
    /// @return id The new identity id (ids start at 1).
    function register(string calldata name, Role role, Keys calldata keys) external payable returns (uint256 id);

    /// @notice Replaces the caller's public keys (the proof of possession is checked again).
    /// @param keys The new keys.
    function updateKeys(Keys calldata keys) external;

    /// @notice Deactivates the caller's identity and returns its stake.
    function exit() external;

    /// @notice Grants the aggregator role to an active identity; admin only.
    /// @param id The identity id.
    function grantAggregator(uint256 id) external;

    /// @notice Moves reputation by `delta` after applying decay, flooring at 0; settlement role only.
    /// @param id The identity id.
    /// @param delta Signed change.
    function adjustReputation(uint256 id, int256 delta) external;

    /// @notice The identity id of `account`, 0 if none.
    /// @param account The address.
    function idOf(address account) external view returns (uint256);

    /// @notice The full record of identity `id`; reverts `UnknownIdentity` if none.
    /// @param id The identity id.
    function identity(uint256 id) external view returns (Identity memory);

    /// @notice Whether identity `id` exists and has not exited.
    /// @param id The identity id.
    function isActive(uint256 id) external view returns (bool);

    /// @notice Decayed reputation of identity `id`; reverts `UnknownIdentity` if none.
    /// @param id The identity id.
    function reputationOf(uint256 id) external view returns (uint256);

    /// @notice Stake locked by identity `id` (0 after exit).
    /// @param id The identity id.
    function stakeOf(uint256 id) external view returns (uint256);

    /// @notice Number of identities ever registered (the highest id).
    function identityCount() external view returns (uint256);

    /// @notice Whether `account` may post claims now (active, reputation ≥ `MIN_REPUTATION_CLAIMER`).
    /// @param account The address.
    function canClaim(address account) external view returns (bool);

    /// @notice Whether `account` may aggregate now (active aggregator, reputation ≥ `MIN_REPUTATION_AGGREGATOR`).
    /// @param account The address.
    function canAggregate(address account) external view returns (bool);
}
