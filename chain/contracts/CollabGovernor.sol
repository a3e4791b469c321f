// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IGovernor, Governor} from "@openzeppelin/contracts/governance/Governor.sol";
import {GovernorCountingSimple} from "@openzeppelin/contracts/governance/extensions/GovernorCountingSimple.sol";
import {GovernorSettings} from "@openzeppelin/contracts/governance/extensions/GovernorSettings.sol";
import {GovernorTimelockControl} from "@openzeppelin/contracts/governance/extensions/GovernorTimelockControl.sol";
import {GovernorVotes} from "@openzeppelin/contracts/governance/extensions/GovernorVotes.sol";
import {GovernorVotesQuorumFraction} from "@openzeppelin/contracts/governance/extensions/GovernorVotesQuorumFraction.sol";
// Imported so that solc emits the TimelockController artifact the deploy script uses as is.
import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";
import {IVotes} from "@openzeppelin/contracts/governance/utils/IVotes.sol";
import {IERC6372} from "@openzeppelin/contracts/interfaces/IERC6372.sol";
import {ICollabGovernor} from "./interfaces/ICollabGovernor.sol";

/// @title CollabGovernor
/// @notice Token-weighted governance of collab's protocol parameters and disputes. Proposals pass with a
/// simple majority (for > against) once the quorum fraction of the supply has voted for or abstained,
/// then wait in the TimelockController, which executes them.
/// @dev Plain OpenZeppelin 5.x composition; only the constructor is collab's. Delay and period are in
/// seconds because the token's clock is a timestamp.
contract CollabGovernor is
    ICollabGovernor,
    Governor,
    GovernorSettings,
    GovernorCountingSimple,
    GovernorVotes,
    GovernorVotesQuorumFraction,
    GovernorTimelockControl
{
    /// @param token_ The ERC-5805 voting token (CollabToken, timestamp clock).
    /// @param timelock_ The TimelockController that executes passed proposals; it must make this
    /// governor its only proposer and canceller.
    /// @param votingDelay_ Seconds between proposing and the vote snapshot.
    /// @param votingPeriod_ Seconds the vote stays open.
    /// @param proposalThreshold_ Votes needed to propose.
    /// @param quorumPercent Percentage of the supply (at the snapshot) that must vote for or abstain.
    constructor(
        IVotes token_,
        TimelockController timelock_,
        uint48 votingDelay_,
        uint32 votingPeriod_,
        uint256 proposalThreshold_,
        uint256 quorumPercent
    )
        Governor("CollabGovernor")
        GovernorSettings(votingDelay_, votingPeriod_, proposalThreshold_)
        GovernorVotes(token_)
        GovernorVotesQuorumFraction(quorumPercent)
        GovernorTimelockControl(timelock_)
    {
        // INVARIANT: durations are seconds, so the token must count time in seconds too.
        if (keccak256(bytes(IERC6372(address(token_)).CLOCK_MODE())) != keccak256("mode=timestamp")) {
            revert NotTimestampClock(address(token_));
        }
        // INVARIANT: passed proposals can only run through a timelock.
        if (address(timelock_) == address(0)) revert InvalidTimelock(address(timelock_));
    }

    /// @inheritdoc Governor
    function state(uint256 proposalId)
        public
        view
        override(Governor, GovernorTimelockControl)
        returns (ProposalState)
    {
        return super.state(proposalId);
    }

    /// @inheritdoc Governor
    function proposalNeedsQueuing(uint256 proposalId)
        public
        view
        override(Governor, GovernorTimelockControl)
        returns (bool)
    {
        return super.proposalNeedsQueuing(proposalId);
    }

    /// @inheritdoc Governor
    function proposalThreshold() public view override(Governor, GovernorSettings) returns (uint256) {
        return super.proposalThreshold();
    }

    /// @dev Queues the proposal's operations in the timelock.
    function _queueOperations(
        uint256 proposalId,
        address[] memory targets,
        uint256[] memory values,
        bytes[] memory calldatas,
        bytes32 descriptionHash
    ) internal override(Governor, GovernorTimelockControl) returns (uint48) {
        return super._queueOperations(proposalId, targets, values, calldatas, descriptionHash);
    }

    /// @dev Executes through the timelock.
    function _executeOperations(
        uint256 proposalId,
        address[] memory targets,
        uint256[] memory values,
        bytes[] memory calldatas,
        bytes32 descriptionHash
    ) internal override(Governor, GovernorTimelockControl) {
        super._executeOperations(proposalId, targets, values, calldatas, descriptionHash);
    }

    /// @dev Cancels in the timelock too when the proposal was queued.
    function _cancel(
        address[] memory targets,
        uint256[] memory values,
        bytes[] memory calldatas,
        bytes32 descriptionHash
    ) internal override(Governor, GovernorTimelockControl) returns (uint256) {
        return super._cancel(targets, values, calldatas, descriptionHash);
    }

    /// @dev The timelock, not the governor, is the executor `onlyGovernance` functions accept.
    function _executor() internal view override(Governor, GovernorTimelockControl) returns (address) {
        return super._executor();
    }
}
