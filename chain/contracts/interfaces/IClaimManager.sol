// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ISettlementHook
/// @notice Effects of a finalized claim (mint receipts and shares, register the
/// asset) plugged in by later protocols. `ClaimManager` calls it once, only when
/// the claim finalizes, with a fixed gas budget; a reverting hook never undoes
/// the finalization (the failure is recorded in `SettlementHookFailed`).
interface ISettlementHook {
    /// @notice The claim `claimId` finalized with output `outputRoot`.
    /// @param claimId The finalized claim.
    /// @param claimer Who posted it.
    /// @param outputRoot The tensor root of its output.
    function onClaimFinalized(bytes32 claimId, address claimer, bytes32 outputRoot) external;
}

/// @title IJobParticipants
/// @notice A job registry that can say who participates in a job (the data
/// audience of a `Participants` claim whose list was not given at posting).
interface IJobParticipants {
    /// @notice Whether `account` participates in job `jobId`.
    /// @param jobId The job.
    /// @param account The account asking to verify.
    /// @return True for a participant.
    function isParticipant(bytes32 jobId, address account) external view returns (bool);
}

/// @title IClaimManager
/// @notice Optimistic claims over committed computations (docs/protocol.md §4-§7):
/// posting with its consistency checks, the challenge window, bonds, the
/// outcome of games and data-availability challenges, finalization with
/// settlement hooks, and pull-based credits. Games are played in
/// `BisectionGame`, data challenges answered in `DataAvailability`; both
/// report back here, and this contract alone holds the ether.
interface IClaimManager {
    /// @notice Who may fetch a claim's data and challenge it.
    enum Audience {
        Public,
        Participants,
        LicensedVerifiers
    }

    /// @notice Where a claim stands.
    enum ClaimStatus {
        None,
        Pending,
        Finalized,
        Rejected
    }

    /// @notice The two kinds of challenge against a claim.
    enum ChallengeKind {
        Game,
        Data
    }

    /// @notice Where a challenge stands.
    enum ChallengeStatus {
        None,
        Open,
        ClaimerWon,
        ChallengerWon,
        Refunded
    }

    /// @notice What a claimer posts.
    /// @param jobId The job the claim settles (part of the deterministic claim id).
    /// @param programRoot The program commitment.
    /// @param stepTreeRoot Root of the program's step tree (`programRoot` preimage).
    /// @param stepCount The program length `n`.
    /// @param inputRoot Root of the input bundle.
    /// @param outputRoot Tensor root of the last step's output.
    /// @param traceRoot Merkle root over the trace leaves.
    /// @param lastLeafProof Single-leaf proof of trace leaf `n - 1` against `traceRoot`.
    /// @param log2K Branching of the dissection, `k = 2^log2K`, 1..4.
    /// @param audience Who may fetch the data and challenge.
    /// @param participants `Participants` audience: the list (empty: ask `participantRegistry`).
    /// @param participantRegistry `Participants` audience without a list: an `IJobParticipants`.
    /// @param assetId `LicensedVerifiers` audience: the asset whose licensees verify.
    /// @param daPointer Pointer to the claimer's blob server record (URL hash).
    /// @param settlementHook Allowed `ISettlementHook` run at finalization (0: none).
    struct ClaimInput {
        bytes32 jobId;
        bytes32 programRoot;
        bytes32 stepTreeRoot;
        uint64 stepCount;
        bytes32 inputRoot;
        bytes32 outputRoot;
        bytes32 traceRoot;
        bytes32[] lastLeafProof;
        uint8 log2K;
        Audience audience;
        address[] participants;
        address participantRegistry;
        uint256 assetId;
        bytes32 daPointer;
        address settlementHook;
    }

    /// @notice The roots a claim binds. Stored as one hash (`rootsHash`); callers that need
    /// them pass them back (from `ClaimPosted`), which keeps posting cheap.
    /// @param stepTreeRoot Root of the program's step tree.
    /// @param inputRoot Root of the input bundle.
    /// @param outputRoot Tensor root of the output.
    /// @param traceRoot Root of the trace.
    /// @param daPointer Blob server record pointer.
    struct ClaimRoots {
        bytes32 stepTreeRoot;
        bytes32 inputRoot;
        bytes32 outputRoot;
        bytes32 traceRoot;
        bytes32 daPointer;
    }

    /// @notice The governed numbers a claim snapshots at posting (§4); a game never reads them again.
    /// @param challengeWindow Seconds the claim can be challenged.
    /// @param clockDuration Seconds on each side's chess clock.
    /// @param clockExtension Minimum seconds the side to move has after any move.
    /// @param daResponseWindow Seconds the claimer has to answer a data challenge.
    /// @param claimerBond Wei bonded by the claimer.
    /// @param challengerBond Wei bonded by each challenger.
    /// @param daBond Wei bonded by a data challenger.
    /// @param burnBps Part of a loser's bond that is burnt.
    struct Params {
        uint64 challengeWindow;
        uint64 clockDuration;
        uint64 clockExtension;
        uint64 daResponseWindow;
        uint128 claimerBond;
        uint128 challengerBond;
        uint128 daBond;
        uint16 burnBps;
    }

    /// @notice A posted claim.
    /// @param claimer Who posted (and bonded) it.
    /// @param postedAt Block timestamp of posting.
    /// @param status Where it stands.
    /// @param audience Its data audience.
    /// @param log2K Dissection branching exponent.
    /// @param openChallenges Games and data challenges still open.
    /// @param stepCount Program length.
    /// @param paramsVersion Index of its parameter snapshot.
    /// @param settlementHook Hook run at finalization (0: none).
    /// @param rootsHash `keccak256(abi.encode(ClaimRoots))` of the claim's roots.
    struct Claim {
        address claimer;
        uint40 postedAt;
        ClaimStatus status;
        Audience audience;
        uint8 log2K;
        uint16 openChallenges;
        uint64 stepCount;
        uint32 paramsVersion;
        address settlementHook;
        bytes32 rootsHash;
    }

    /// @notice One challenge (a game or a data challenge) against a claim.
    /// @param claimId The claim challenged.
    /// @param challenger Who bonded it.
    /// @param kind Game or data challenge.
    /// @param status Where it stands.
    /// @param bond Wei bonded.
    struct Challenge {
        bytes32 claimId;
        address challenger;
        ChallengeKind kind;
        ChallengeStatus status;
        uint128 bond;
    }

    /// @notice A claim was posted.
    /// @param claimId Its deterministic id `keccak(jobId ‖ programRoot ‖ inputRoot)`.
    /// @param claimer Who posted it.
    /// @param jobId The job.
    /// @param programRoot The program commitment.
    /// @param roots The roots the claim binds (what later calls pass back).
    /// @param stepCount Program length.
    /// @param log2K Dissection branching exponent.
    /// @param audience Data audience.
    event ClaimPosted(
        bytes32 indexed claimId,
        address indexed claimer,
        bytes32 indexed jobId,
        bytes32 programRoot,
        ClaimRoots roots,
        uint64 stepCount,
        uint8 log2K,
        Audience audience
    );

    /// @notice A challenge (game or data) was opened against a claim.
    /// @param challengeId Its id (also the game's / data challenge's id).
    /// @param claimId The claim.
    /// @param challenger Who bonded it.
    /// @param kind Game or data challenge.
    event ChallengeOpened(uint256 indexed challengeId, bytes32 indexed claimId, address indexed challenger, ChallengeKind kind);

    /// @notice A challenge ended.
    /// @param challengeId The challenge.
    /// @param claimId The claim.
    /// @param status Its final status.
    event ChallengeClosed(uint256 indexed challengeId, bytes32 indexed claimId, ChallengeStatus status);

    /// @notice A claim lost a challenge and is rejected; no settlement effect runs.
    /// @param claimId The claim.
    /// @param challengeId The challenge that won.
    /// @param challenger Its challenger.
    event ClaimRejected(bytes32 indexed claimId, uint256 indexed challengeId, address indexed challenger);

    /// @notice A job registry rejected a pending claim (e.g. a won exclusion dispute); no settlement effect runs.
    /// @param claimId The claim.
    /// @param registry The registry (the claim's settlement hook).
    /// @param beneficiary Who is credited the claimer's bond (minus the burn).
    event ClaimRejectedByRegistry(bytes32 indexed claimId, address indexed registry, address indexed beneficiary);

    /// @notice A claim finalized.
    /// @param claimId The claim.
    /// @param outputRoot Its output.
    event ClaimFinalized(bytes32 indexed claimId, bytes32 outputRoot);

    /// @notice A claim's settlement hook reverted or ran out of its gas budget; the claim stays final.
    /// @param claimId The claim.
    /// @param hook The hook.
    event SettlementHookFailed(bytes32 indexed claimId, address indexed hook);

    /// @notice A parameter snapshot was recorded.
    /// @param version Its index.
    event ParamsSnapshotted(uint32 indexed version);

    /// @notice Wei was credited to `account` (burns are credited to the burn address).
    /// @param account Who may claim it.
    /// @param amount Wei.
    event Credited(address indexed account, uint256 amount);

    /// @notice Credits were withdrawn.
    /// @param account Who withdrew.
    /// @param amount Wei sent.
    event CreditClaimed(address indexed account, uint256 amount);

    /// @notice An asset owner granted or revoked a verifier.
    /// @param assetId The asset.
    /// @param account The verifier.
    /// @param allowed Granted (true) or revoked.
    event VerifierSet(uint256 indexed assetId, address indexed account, bool allowed);

    /// @notice The admin allowed or disallowed a settlement hook.
    /// @param hook The hook contract.
    /// @param allowed Allowed (true) or not.
    event SettlementHookSet(address indexed hook, bool allowed);

    /// @notice A zero address was given where a contract is needed.
    error ClaimManagerZeroAddress();
    /// @notice The roots passed back are not the ones the claim was posted with.
    /// @param claimId The claim.
    error RootsMismatch(bytes32 claimId);
    /// @notice The game and data-availability contracts are already set.
    error AlreadyInitialized();
    /// @notice The game and data-availability contracts are not set yet.
    error NotInitialized();
    /// @notice A claim with this id already exists.
    /// @param claimId The id.
    error DuplicateClaim(bytes32 claimId);
    /// @notice No claim with this id.
    /// @param claimId The id.
    error UnknownClaim(bytes32 claimId);
    /// @notice No challenge with this id.
    /// @param challengeId The id.
    error UnknownChallenge(uint256 challengeId);
    /// @notice The poster may not claim (no active identity or too little reputation).
    /// @param account The poster.
    error NotAllowedClaimer(address account);
    /// @notice `programRoot` is not `keccak(0x06 ‖ stepCount ‖ stepTreeRoot)`.
    /// @param programRoot Supplied.
    /// @param computed Implied by `stepCount` and `stepTreeRoot`.
    error ProgramRootMismatch(bytes32 programRoot, bytes32 computed);
    /// @notice The output root is not the trace's last leaf.
    /// @param traceRoot The claimed trace root.
    /// @param computed The root the last-leaf proof implies.
    error OutputNotLastLeaf(bytes32 traceRoot, bytes32 computed);
    /// @notice The last-leaf proof has the wrong length for the step count.
    /// @param length Supplied.
    /// @param expected D(stepCount).
    error InvalidLastLeafProof(uint256 length, uint256 expected);
    /// @notice A program needs at least one step.
    error EmptyProgram();
    /// @notice `log2K` is outside 1..4 (k in {2, 4, 8, 16}).
    /// @param log2K Supplied.
    error InvalidBranching(uint8 log2K);
    /// @notice The audience's data is inconsistent (no participants, no asset).
    /// @param audience The audience.
    error InvalidAudience(Audience audience);
    /// @notice The named settlement hook is not allowed by the admin.
    /// @param hook The hook.
    error HookNotAllowed(address hook);
    /// @notice The wrong bond was sent.
    /// @param sent Wei sent.
    /// @param required Wei required.
    error WrongBond(uint256 sent, uint256 required);
    /// @notice The claim is not pending.
    /// @param claimId The claim.
    /// @param status Its status.
    error ClaimNotPending(bytes32 claimId, ClaimStatus status);
    /// @notice The challenge window has closed.
    /// @param claimId The claim.
    /// @param deadline Last second a challenge was possible.
    error ChallengeWindowClosed(bytes32 claimId, uint256 deadline);
    /// @notice The challenge window is still open.
    /// @param claimId The claim.
    /// @param endsAt When it closes.
    error ChallengeWindowOpen(bytes32 claimId, uint256 endsAt);
    /// @notice Games or data challenges are still open.
    /// @param claimId The claim.
    /// @param open How many.
    error ChallengesOpen(bytes32 claimId, uint256 open);
    /// @notice The account is not in the claim's audience.
    /// @param claimId The claim.
    /// @param account The account.
    error NotAudience(bytes32 claimId, address account);
    /// @notice Only the game or data-availability contract may report outcomes.
    /// @param caller The caller.
    error NotCourt(address caller);
    /// @notice The challenge is not open.
    /// @param challengeId The challenge.
    /// @param status Its status.
    error ChallengeNotOpen(uint256 challengeId, ChallengeStatus status);
    /// @notice The caller does not own the asset.
    /// @param assetId The asset.
    /// @param account The caller.
    error NotAssetOwner(uint256 assetId, address account);
    /// @notice Nothing to withdraw.
    /// @param account The caller.
    error NothingToClaim(address account);
    /// @notice Sending the credit failed.
    /// @param account The recipient.
    error CreditTransferFailed(address account);
    /// @notice The transaction carries too little gas to run the settlement hook with its full budget.
    /// @param available Gas left.
    /// @param required Gas required.
    error InsufficientGasForHook(uint256 available, uint256 required);

    /// @notice The caller is not the registry the claim named as its settlement hook.
    /// @param claimId The claim.
    /// @param caller The caller.
    error NotClaimRegistry(bytes32 claimId, address caller);
    /// @notice The beneficiary of a registry rejection is zero or the claimer itself.
    /// @param claimId The claim.
    /// @param beneficiary The beneficiary given.
    error InvalidBeneficiary(bytes32 claimId, address beneficiary);

    /// @notice Posts a claim with `CLAIMER_BOND` as `msg.value`.
    /// @param input The claim (see `ClaimInput`).
    /// @return claimId The deterministic claim id.
    function postClaim(ClaimInput calldata input) external payable returns (bytes32 claimId);

    /// @notice Opens a bisection game against a claim with `CHALLENGER_BOND`; audience only, inside the window.
    /// @param claimId The claim.
    /// @param roots The claim's roots (from `ClaimPosted`).
    /// @return challengeId The game's id.
    function challenge(bytes32 claimId, ClaimRoots calldata roots) external payable returns (uint256 challengeId);

    /// @notice Opens a data-availability challenge with `DA_BOND` for one chunk of a tensor the claim commits to.
    /// @param claimId The claim.
    /// @param roots The claim's roots (from `ClaimPosted`).
    /// @param tensorRoot The tensor.
    /// @param chunkIndex The chunk (entry, for a bundle).
    /// @param commitment ABI-encoded `IDataAvailability.TensorCommitment` proving the claim commits to `tensorRoot`.
    /// @return challengeId The data challenge's id.
    function challengeData(
        bytes32 claimId,
        ClaimRoots calldata roots,
        bytes32 tensorRoot,
        uint256 chunkIndex,
        bytes calldata commitment
    )
        external
        payable
        returns (uint256 challengeId);

    /// @notice Finalizes an unchallenged (or successfully defended) claim after its window; runs its hook.
    /// @param claimId The claim.
    /// @param roots The claim's roots (from `ClaimPosted`; the hook receives the output root).
    function finalize(bytes32 claimId, ClaimRoots calldata roots) external;

    /// @notice Refunds the bond of a challenge left open when its claim was rejected by another one.
    /// @param challengeId The challenge.
    function refundChallenge(uint256 challengeId) external;

    /// @notice Rejects a pending claim inside its window on behalf of the job registry it named as its
    /// settlement hook (`REGISTRY_ROLE`): e.g. RoundRegistry after a won exclusion dispute. The claimer's
    /// bond is split like a lost game: `(10000 − burnBps)/10000` to `beneficiary`, the rest burnt; the
    /// claimer loses `REPUTATION_PENALTY`; challenges still open are refunded (`refundChallenge`).
    /// @param claimId The claim.
    /// @param beneficiary Who wronged by the claim is credited the bond (not the claimer).
    function rejectByRegistry(bytes32 claimId, address beneficiary) external;

    /// @notice Sends the caller all its credit.
    /// @return amount Wei sent.
    function claimCredit() external returns (uint256 amount);

    /// @notice Reports a game's outcome; `BisectionGame` only.
    /// @param challengeId The game.
    /// @param claimerWon Whether the claimer won.
    function onGameResolved(uint256 challengeId, bool claimerWon) external;

    /// @notice Reports a data challenge's outcome; `DataAvailability` only.
    /// @param challengeId The data challenge.
    /// @param answered Whether the data was posted in time.
    function onDataResolved(uint256 challengeId, bool answered) external;

    /// @notice Grants or revokes the verifier role of `account` for `assetId`'s claims; asset owner only.
    /// @param assetId The asset.
    /// @param account The verifier.
    /// @param allowed Grant (true) or revoke.
    function setVerifier(uint256 assetId, address account, bool allowed) external;

    /// @notice Allows or disallows a settlement hook; admin only.
    /// @param hook The hook.
    /// @param allowed Allow (true) or not.
    function setSettlementHook(address hook, bool allowed) external;

    /// @notice The claim `claimId` (reverts `UnknownClaim`).
    /// @param claimId The claim.
    /// @return The claim.
    function getClaim(bytes32 claimId) external view returns (Claim memory);

    /// @notice The status of claim `claimId` (`None` for an unknown id).
    /// @param claimId The claim.
    /// @return The status.
    function claimStatus(bytes32 claimId) external view returns (ClaimStatus);

    /// @notice The claim's parameter snapshot.
    /// @param claimId The claim.
    /// @return The parameters.
    function paramsOf(bytes32 claimId) external view returns (Params memory);

    /// @notice Reverts `RootsMismatch` unless `roots` are the claim's; returns its step count.
    /// @param claimId The claim.
    /// @param roots The roots to check.
    /// @return stepCount The claim's program length.
    function checkRoots(bytes32 claimId, ClaimRoots calldata roots) external view returns (uint64 stepCount);

    /// @notice The hash a claim stores for its roots.
    /// @param roots The roots.
    /// @return `keccak256(abi.encode(roots))`.
    function hashRoots(ClaimRoots calldata roots) external pure returns (bytes32);

    /// @notice The challenge `challengeId` (reverts `UnknownChallenge`).
    /// @param challengeId The challenge.
    /// @return The challenge.
    function getChallenge(uint256 challengeId) external view returns (Challenge memory);

    /// @notice Whether `account` may fetch the claim's data and challenge it.
    /// @param claimId The claim.
    /// @param account The account.
    /// @return True for an audience member.
    function isAudience(bytes32 claimId, address account) external view returns (bool);

    /// @notice Wei `account` can withdraw.
    /// @param account The account.
    /// @return Wei.
    function creditOf(address account) external view returns (uint256);

    /// @notice The claim id of `(jobId, programRoot, inputRoot)`.
    /// @param jobId The job.
    /// @param programRoot The program commitment.
    /// @param inputRoot The input bundle root.
    /// @return The claim id.
    function claimIdOf(bytes32 jobId, bytes32 programRoot, bytes32 inputRoot) external pure returns (bytes32);
}
