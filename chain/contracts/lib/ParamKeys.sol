// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ParamKeys
/// @notice The bytes32 keys of collab's governed parameters in `ProtocolParams`.
/// @dev Each key is `keccak256(<NAME>)`, so off-chain code derives the same key
/// from the name alone (`chain.deploy.param_key`) and no registry of numbers
/// has to be kept in sync between Solidity and Python.
library ParamKeys {
    /// @notice Wei staked to register a Sahara ID.
    bytes32 internal constant ADMISSION_STAKE = keccak256("ADMISSION_STAKE");
    /// @notice Reputation of a newly registered identity.
    bytes32 internal constant GENESIS_REPUTATION = keccak256("GENESIS_REPUTATION");
    /// @notice Seconds for reputation to halve (0 disables decay).
    bytes32 internal constant REPUTATION_HALF_LIFE = keccak256("REPUTATION_HALF_LIFE");
    /// @notice Minimum decayed reputation to act as aggregator.
    bytes32 internal constant MIN_REPUTATION_AGGREGATOR = keccak256("MIN_REPUTATION_AGGREGATOR");
    /// @notice Minimum decayed reputation to post claims.
    bytes32 internal constant MIN_REPUTATION_CLAIMER = keccak256("MIN_REPUTATION_CLAIMER");
    /// @notice Part of each API fee (bps) paid to the compute parties.
    bytes32 internal constant COMPUTE_FEE_BPS = keccak256("COMPUTE_FEE_BPS");
    /// @notice Seconds the owner has to post a Full-access key.
    bytes32 internal constant KEY_DELIVERY_TIMEOUT = keccak256("KEY_DELIVERY_TIMEOUT");
    /// @notice Seconds the licensee has to contest a delivered key.
    bytes32 internal constant KEY_DISPUTE_WINDOW = keccak256("KEY_DISPUTE_WINDOW");
    /// @notice Seconds a posted claim can be challenged.
    bytes32 internal constant CHALLENGE_WINDOW = keccak256("CHALLENGE_WINDOW");
    /// @notice Seconds on each side's chess clock in a game.
    bytes32 internal constant CLOCK_DURATION = keccak256("CLOCK_DURATION");
    /// @notice Seconds added to a side's clock after each of its moves.
    bytes32 internal constant CLOCK_EXTENSION = keccak256("CLOCK_EXTENSION");
    /// @notice Wei bonded by a claimer.
    bytes32 internal constant CLAIMER_BOND = keccak256("CLAIMER_BOND");
    /// @notice Wei bonded by a challenger.
    bytes32 internal constant CHALLENGER_BOND = keccak256("CHALLENGER_BOND");
    /// @notice Part (bps) of a loser's bond that is burnt instead of paid to the winner.
    bytes32 internal constant BURN_BPS = keccak256("BURN_BPS");
    /// @notice Wei bonded to open a data-availability challenge.
    bytes32 internal constant DA_BOND = keccak256("DA_BOND");
    /// @notice Seconds the claimer has to answer a data-availability challenge.
    bytes32 internal constant DA_RESPONSE_WINDOW = keccak256("DA_RESPONSE_WINDOW");
}
