// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IRoundRegistry
/// @notice Training rounds on-chain (docs/contracts.md §RoundRegistry): an asset owner
/// opens a round over its base model; invited participants accept, declaring their
/// sample count (their weight) and the dataset asset committing to their data; the
/// set and weights are fixed before training; the aggregator submits the attribution
/// record with every included participant's BLS consent before posting the claim; a
/// participant left out despite the aggregator's receipt wins an exclusion dispute.
/// When a participant withholds its consent, the aggregator proposes the record on
/// chain instead: participants post their consents before a deadline, the record
/// settles with those who did, and one that did not cannot dispute its exclusion
/// (docs/design.md §Consent veto).
interface IRoundRegistry {
    /// @notice Where a round stands (its claim's state lives in ClaimManager).
    enum RoundStatus {
        None,
        Open,
        Fixed,
        Recorded,
        Settled
    }

    /// @notice What a creator opens.
    /// @param baseAssetId The base model (owned by the creator), the new adapter's parent.
    /// @param rounds Flower rounds R.
    /// @param participantIds Invited Sahara IDs (distinct, active).
    /// @param minParticipants N: accepted participants needed to fix, included ones needed to record.
    /// @param epsilonBudget ε budget per participant, in millionths (ε · 1e6).
    /// @param delta δ per participant, in 1e-18 units.
    /// @param deadline Last second (exclusive) to accept.
    /// @param creatorShareBps Fraction of the new asset's Shares the creator keeps.
    /// @param configHash Hash of the LoRA / task configuration.
    /// @param aggregator The orchestrator that aggregates and claims (aggregator role).
    struct RoundConfig {
        uint256 baseAssetId;
        uint32 rounds;
        uint256[] participantIds;
        uint32 minParticipants;
        uint64 epsilonBudget;
        uint64 delta;
        uint64 deadline;
        uint16 creatorShareBps;
        bytes32 configHash;
        address aggregator;
    }

    /// @notice A round.
    /// @param creator Who opened it (owner of the new asset).
    /// @param aggregator Who aggregates, signs update receipts and claims.
    /// @param baseAssetId The base model.
    /// @param rounds Flower rounds R.
    /// @param minParticipants N.
    /// @param invited Number of invited participants.
    /// @param accepted Number who accepted.
    /// @param epsilonBudget ε budget per participant (millionths).
    /// @param delta δ (1e-18 units).
    /// @param deadline Accept deadline.
    /// @param creatorShareBps Creator's Share fraction.
    /// @param status Where it stands.
    /// @param totalWeight Sum of accepted participants' sample counts (set when fixed).
    /// @param configHash LoRA / task configuration hash.
    /// @param jobId The job id its claim uses (`keccak(chainid, registry, roundId)`).
    /// @param claimId The claim its record binds (0 before the record).
    /// @param recordRoot The consented attribution record's root (0 before; for a proposal recorded with fewer
    /// consents, the proposal's root: the included rows are those flagged `included`).
    struct Round {
        address creator;
        address aggregator;
        uint256 baseAssetId;
        uint32 rounds;
        uint32 minParticipants;
        uint32 invited;
        uint32 accepted;
        uint64 epsilonBudget;
        uint64 delta;
        uint64 deadline;
        uint16 creatorShareBps;
        RoundStatus status;
        uint256 totalWeight;
        bytes32 configHash;
        bytes32 jobId;
        bytes32 claimId;
        bytes32 recordRoot;
    }

    /// @notice One invited participant of a round.
    /// @param id Sahara ID.
    /// @param account Its address (set at acceptance).
    /// @param accepted Whether it accepted.
    /// @param included Whether the attribution record includes it.
    /// @param samples Declared sample count = its weight.
    /// @param epsilon ε spent, from the record (millionths).
    /// @param datasetAssetId The dataset asset committing to its data.
    /// @param updateCommitment Its update commitment, from the record.
    /// @param blsKeyHash keccak of its BLS key, snapshotted from IdentityRegistry at acceptance (proof of
    /// possession checked there); the key itself is in `ParticipantAccepted` and passed back to `submitRecord`.
    struct Participant {
        uint256 id;
        address account;
        bool accepted;
        bool included;
        uint64 samples;
        uint64 epsilon;
        uint256 datasetAssetId;
        bytes32 updateCommitment;
        bytes32 blsKeyHash;
    }

    /// @notice The attribution record every included participant BLS-signs (its root, `recordRoot`).
    /// @param roundId The round.
    /// @param programRoot The claimed program.
    /// @param inputRoot The claim's input bundle root (with programRoot, fixes the claim id).
    /// @param outputRoot The aggregate's tensor root (the new adapter's commitment root).
    /// @param contentHash sha256 of the stored adapter file.
    /// @param vaultUri Where the adapter's encrypted blob lives.
    /// @param participants Included participants' accounts, strictly increasing.
    /// @param weights Their weights (must equal the fixed sample counts).
    /// @param updateCommitments Their update chains: h_0 = 0, h_r = keccak256(abi.encode(h_{r-1}, c_r)) over the
    /// commitments c_r of the Flower rounds each was aggregated in (the last one is what its receipt names).
    /// @param epsilons ε each spent (millionths, ≤ the budget).
    struct AttributionRecord {
        uint256 roundId;
        bytes32 programRoot;
        bytes32 inputRoot;
        bytes32 outputRoot;
        bytes32 contentHash;
        string vaultUri;
        address[] participants;
        uint256[] weights;
        bytes32[] updateCommitments;
        uint64[] epsilons;
    }

    /// @notice A round was opened.
    /// @param roundId Its id.
    /// @param creator Its creator.
    /// @param baseAssetId The base model.
    /// @param jobId The job id its claim uses.
    /// @param aggregator Its aggregator.
    event RoundCreated(uint256 indexed roundId, address indexed creator, uint256 indexed baseAssetId, bytes32 jobId, address aggregator);

    /// @notice A participant accepted.
    /// @param roundId The round.
    /// @param participantId Its Sahara ID.
    /// @param account Its address.
    /// @param samples Its declared sample count (weight).
    /// @param datasetAssetId Its dataset asset.
    /// @param blsPubkey Its consent key for this round (EIP-2537 G1, 128 bytes).
    event ParticipantAccepted(
        uint256 indexed roundId,
        uint256 indexed participantId,
        address indexed account,
        uint64 samples,
        uint256 datasetAssetId,
        bytes blsPubkey
    );

    /// @notice The participant set and weights were fixed; training may start.
    /// @param roundId The round.
    /// @param participants Accepted participants.
    /// @param totalWeight Their summed weight.
    event RoundFixed(uint256 indexed roundId, uint256 participants, uint256 totalWeight);

    /// @notice The aggregator submitted a consented attribution record.
    /// @param roundId The round.
    /// @param claimId The claim it binds (posted next).
    /// @param recordRoot The signed root.
    /// @param included Participants included.
    event RecordSubmitted(uint256 indexed roundId, bytes32 indexed claimId, bytes32 recordRoot, uint256 included);

    /// @notice The aggregator proposed a record on chain; included participants consent until `deadline`.
    /// @param roundId The round.
    /// @param recordRoot The proposed record's root (what each participant BLS-signs).
    /// @param deadline First second at which consents are refused.
    /// @param proposed Participants the proposal includes.
    event RecordProposed(uint256 indexed roundId, bytes32 recordRoot, uint64 deadline, uint256 proposed);

    /// @notice A participant's consent to the proposal, verified (anyone may relay it).
    /// @param roundId The round.
    /// @param account The consenting participant.
    /// @param recordRoot The proposal it signed.
    /// @param signature Its BLS signature over the root (EIP-2537 G2), for the aggregate.
    event ConsentPosted(uint256 indexed roundId, address indexed account, bytes32 recordRoot, bytes signature);

    /// @notice A participant showed the aggregator's survivor list of the last round naming someone the record
    /// omits; the claim is rejected.
    /// @param roundId The round.
    /// @param disputer The participant credited the aggregator's bond minus the burn.
    /// @param omitted The survivor the record left out.
    /// @param claimId The rejected claim.
    event OmissionDisputeWon(uint256 indexed roundId, address indexed disputer, address omitted, bytes32 indexed claimId);

    /// @notice A participant left out despite a receipt won its exclusion dispute; the claim is rejected.
    /// @param roundId The round.
    /// @param account The excluded participant (credited the aggregator's bond minus the burn).
    /// @param claimId The rejected claim.
    event ExclusionDisputeWon(uint256 indexed roundId, address indexed account, bytes32 indexed claimId);

    /// @notice The round has no proposal, or the account is not in it.
    /// @param roundId The round.
    /// @param account The account.
    error NotProposed(uint256 roundId, address account);
    /// @notice The proposal's consent deadline has passed.
    /// @param roundId The round.
    /// @param deadline The deadline.
    error ConsentClosed(uint256 roundId, uint64 deadline);
    /// @notice Some proposed participant has not consented and its deadline has not passed yet.
    /// @param roundId The round.
    /// @param deadline The deadline.
    error ConsentStillOpen(uint256 roundId, uint64 deadline);
    /// @notice The record is not the current proposal.
    /// @param roundId The round.
    /// @param recordRoot The given record's root.
    error NotTheProposal(uint256 roundId, bytes32 recordRoot);
    /// @notice The participant was proposed with this update and this ε and did not consent in time: its exclusion
    /// stands.
    /// @param roundId The round.
    /// @param account The participant.
    error ConsentWithheld(uint256 roundId, address account);
    /// @notice Every address on the survivor list is included (or left itself out by withholding consent).
    /// @param roundId The round.
    error NothingOmitted(uint256 roundId);
    /// @notice No round with this id.
    /// @param roundId The id.
    error UnknownRound(uint256 roundId);
    /// @notice The round is not in the status the call needs.
    /// @param roundId The round.
    /// @param status Its status.
    error WrongRoundStatus(uint256 roundId, RoundStatus status);
    /// @notice Only the base asset's owner opens a round over it.
    /// @param assetId The base asset.
    /// @param account The caller.
    error NotBaseAssetOwner(uint256 assetId, address account);
    /// @notice The account has no active Sahara ID.
    /// @param account The account.
    error NoActiveIdentity(address account);
    /// @notice The configuration is invalid (what is named).
    /// @param field The offending field.
    error InvalidRoundConfig(string field);
    /// @notice An invited id is listed twice or is not an active identity.
    /// @param participantId The id.
    error InvalidParticipant(uint256 participantId);
    /// @notice The named aggregator may not aggregate (no aggregator role or too little reputation).
    /// @param account The aggregator.
    error NotAggregator(address account);
    /// @notice The accept deadline has passed.
    /// @param roundId The round.
    /// @param deadline The deadline.
    error DeadlinePassed(uint256 roundId, uint64 deadline);
    /// @notice The caller is not invited to the round.
    /// @param roundId The round.
    /// @param account The caller.
    error NotInvited(uint256 roundId, address account);
    /// @notice The participant accepted already.
    /// @param roundId The round.
    /// @param account The caller.
    error AlreadyAccepted(uint256 roundId, address account);
    /// @notice A participant declared zero samples.
    error ZeroSamples();
    /// @notice The dataset asset does not exist, is not a dataset, or is not the participant's.
    /// @param assetId The asset.
    /// @param account The participant.
    error InvalidDataset(uint256 assetId, address account);
    /// @notice Only the creator fixes a round before its deadline.
    /// @param roundId The round.
    /// @param account The caller.
    error NotRoundCreator(uint256 roundId, address account);
    /// @notice Too few participants.
    /// @param have How many.
    /// @param need N.
    error TooFewParticipants(uint256 have, uint256 need);
    /// @notice Only the round's aggregator submits its record.
    /// @param roundId The round.
    /// @param account The caller.
    error NotRoundAggregator(uint256 roundId, address account);
    /// @notice A consent key passed back is not the one snapshotted at acceptance.
    /// @param account The participant.
    error WrongConsentKey(address account);
    /// @notice The record's arrays differ in length, or it names another round.
    /// @param roundId The round.
    error MalformedRecord(uint256 roundId);
    /// @notice An included account is not an accepted participant, or the list is not strictly increasing.
    /// @param roundId The round.
    /// @param account The account.
    error NotIncludable(uint256 roundId, address account);
    /// @notice A weight differs from the participant's fixed sample count.
    /// @param account The participant.
    /// @param given The record's weight.
    /// @param fixedWeight The weight fixed on-chain.
    error WeightMismatch(address account, uint256 given, uint256 fixedWeight);
    /// @notice A participant's ε exceeds the round's budget.
    /// @param account The participant.
    /// @param spent The record's ε.
    /// @param budget The budget.
    error EpsilonOverBudget(address account, uint64 spent, uint64 budget);
    /// @notice The aggregate BLS signature does not verify against every included participant's key.
    /// @param roundId The round.
    /// @param recordRoot The root that should have been signed.
    error InvalidConsentSignature(uint256 roundId, bytes32 recordRoot);
    /// @notice The claim exists already: the record must precede it (participants check it for the whole window).
    /// @param claimId The claim.
    error ClaimAlreadyPosted(bytes32 claimId);
    /// @notice No consented record binds this claim.
    /// @param claimId The claim.
    error NoRecord(bytes32 claimId);
    /// @notice The finalized output is not the consented one.
    /// @param claimId The claim.
    /// @param expected The record's output root.
    /// @param given The claim's.
    error OutputMismatch(bytes32 claimId, bytes32 expected, bytes32 given);
    /// @notice The caller is not an accepted participant of the round.
    /// @param roundId The round.
    /// @param account The caller.
    error NotParticipant(uint256 roundId, address account);
    /// @notice The participant is included in the record: there is nothing to dispute.
    /// @param roundId The round.
    /// @param account The caller.
    error NotExcluded(uint256 roundId, address account);
    /// @notice Exclusion disputes use the receipt of the last Flower round.
    /// @param flRound The receipt's round.
    /// @param rounds The round count R.
    error ReceiptNotFinalRound(uint32 flRound, uint32 rounds);
    /// @notice The receipt is not signed by the round's aggregator.
    /// @param signer The recovered signer.
    error BadReceiptSignature(address signer);

    /// @notice Opens a round over a base asset the caller owns.
    /// @param config The round.
    /// @return roundId Its id (from 1).
    function createRound(RoundConfig calldata config) external returns (uint256 roundId);

    /// @notice Accepts an invitation, declaring the sample count (weight) and the dataset asset; before the deadline.
    /// @param roundId The round.
    /// @param samples Sample count (> 0).
    /// @param datasetAssetId A dataset asset the caller owns.
    function accept(uint256 roundId, uint64 samples, uint256 datasetAssetId) external;

    /// @notice Fixes the participant set and weights (≥ N accepted): the creator any time, anyone after the deadline.
    /// @param roundId The round.
    function fix(uint256 roundId) external;

    /// @notice The aggregator submits the attribution record and the aggregate BLS consent of every
    /// included participant over its root; the claim (jobId, programRoot, inputRoot) is posted after.
    /// @param record The record.
    /// @param pubkeys The included participants' consent keys (from `ParticipantAccepted`), aligned with `record.participants`.
    /// @param signature Aggregate G2Basic signature over `recordRoot(record)` (EIP-2537, 256 bytes).
    /// @return claimId The claim the record binds.
    function submitRecord(AttributionRecord calldata record, bytes[] calldata pubkeys, bytes calldata signature)
        external
        returns (bytes32 claimId);

    /// @notice Any participant holding the aggregator's EIP-712 `SurvivorList` of the last Flower round (the
    /// SecAgg survivors whose masked inputs the claimed sum holds) that names an address the record leaves out
    /// rejects the pending claim; the aggregator's bond is credited to the caller as in an exclusion dispute. A
    /// survivor left out of a proposal it did not consent to is not omitted.
    /// @param roundId The round.
    /// @param flRound The Flower round of the list (must be R).
    /// @param survivors The list, in the order the aggregator signed it.
    /// @param signature The aggregator's signature.
    function disputeOmission(uint256 roundId, uint32 flRound, address[] calldata survivors, bytes calldata signature)
        external;

    /// @notice The first address of `survivors` that is an accepted participant the record leaves out without
    /// its own refusal (zero if none).
    /// @param roundId The round.
    /// @param survivors The list.
    /// @return The omitted survivor.
    function omittedSurvivor(uint256 roundId, address[] calldata survivors) external view returns (address);

    /// @notice The EIP-712 digest of the aggregator's survivor-list endorsement.
    /// @param roundId The round.
    /// @param flRound The Flower round.
    /// @param survivors The list.
    /// @return The digest the aggregator signs.
    function survivorsDigest(uint256 roundId, uint32 flRound, address[] calldata survivors)
        external
        view
        returns (bytes32);

    /// @notice The aggregator proposes `record` on chain (a participant withheld its off-chain consent); included
    /// participants have `CONSENT_PERIOD` to `consent`. A new proposal replaces the previous one.
    /// @param record The proposed record (checked as `submitRecord` checks it).
    /// @return recordRoot Its root.
    function proposeRecord(AttributionRecord calldata record) external returns (bytes32 recordRoot);

    /// @notice Posts `account`'s BLS consent to the current proposal before its deadline (anyone may relay it).
    /// @param roundId The round.
    /// @param account A participant the proposal includes.
    /// @param pubkey Its consent key (the one snapshotted at acceptance).
    /// @param signature Its BLS signature over the proposal's root.
    function consent(uint256 roundId, address account, bytes calldata pubkey, bytes calldata signature) external;

    /// @notice Records the proposal with the participants who consented to it (aggregator only), once all have
    /// or its deadline has passed; those who did not are left out and cannot dispute their exclusion with the
    /// update the proposal named for them.
    /// @param proposal The proposed record (its root must be the current proposal's).
    /// @param priorChains Per row, the update chain before the last round's update (`updateCommitments[i] ==
    /// keccak256(abi.encode(priorChains[i], last))`); read only for rows left out, to check a dispute's receipt.
    /// @return claimId The claim it binds (posted next).
    function submitProposed(AttributionRecord calldata proposal, bytes32[] calldata priorChains)
        external
        returns (bytes32 claimId);

    /// @notice The current proposal of a round (zero root if none).
    /// @param roundId The round.
    /// @return recordRoot Its root.
    /// @return deadline Its consent deadline.
    function proposalOf(uint256 roundId) external view returns (bytes32 recordRoot, uint64 deadline);

    /// @notice The proposal root `account` consented to (zero if none).
    /// @param roundId The round.
    /// @param account The participant.
    /// @return The root.
    function consentOf(uint256 roundId, address account) external view returns (bytes32);

    /// @notice An accepted participant left out of the record proves the aggregator's receipt for its
    /// last-round update; the pending claim is rejected and the aggregator's bond credited to the caller.
    /// Reverts `ConsentWithheld` when the caller was left out for not consenting to a proposal that named
    /// exactly this update and this ε.
    /// @param roundId The round.
    /// @param flRound The Flower round of the receipt (must be R).
    /// @param updateCommitment The update the aggregator acknowledged.
    /// @param epsilon The cumulative ε the participant reported with it (millionths), as the receipt states.
    /// @param receiptSignature The aggregator's EIP-712 `UpdateReceipt` signature.
    function disputeExclusion(
        uint256 roundId,
        uint32 flRound,
        bytes32 updateCommitment,
        uint64 epsilon,
        bytes calldata receiptSignature
    ) external;

    /// @notice Reverts unless `signature` is every included participant's consent to `record`; returns its root.
    /// @param record The record.
    /// @param pubkeys The included participants' consent keys, aligned with `record.participants`.
    /// @param signature The aggregate signature.
    /// @return The record root.
    function verifyConsent(AttributionRecord calldata record, bytes[] calldata pubkeys, bytes calldata signature)
        external
        view
        returns (bytes32);

    /// @notice The root participants sign: bound to chain id, ClaimManager, this registry and every field.
    /// @param record The record.
    /// @return The root.
    function recordRoot(AttributionRecord calldata record) external view returns (bytes32);

    /// @notice The EIP-712 digest of an aggregator's update receipt.
    /// @param roundId The round.
    /// @param participant The participant.
    /// @param flRound The Flower round.
    /// @param updateCommitment The update's commitment.
    /// @param epsilon The cumulative ε reported with it (millionths).
    /// @return The digest the aggregator signs.
    function receiptDigest(uint256 roundId, address participant, uint32 flRound, bytes32 updateCommitment, uint64 epsilon)
        external
        view
        returns (bytes32);

    /// @notice The round (reverts `UnknownRound`).
    /// @param roundId The round.
    /// @return The round.
    function getRound(uint256 roundId) external view returns (Round memory);

    /// @notice Every invited participant of the round, in invitation order.
    /// @param roundId The round.
    /// @return The participants.
    function participantsOf(uint256 roundId) external view returns (Participant[] memory);

    /// @notice Included participants' accounts in invitation order (empty before the record).
    /// @param roundId The round.
    /// @return included The accounts.
    function includedOf(uint256 roundId) external view returns (address[] memory included);

    /// @notice The round whose claim `claimId` is (0: none).
    /// @param claimId The claim.
    /// @return The round id.
    function roundOfClaim(bytes32 claimId) external view returns (uint256);

    /// @notice The job id a round's claim uses.
    /// @param roundId The round.
    /// @return The job id.
    function jobIdOf(uint256 roundId) external view returns (bytes32);

    /// @notice Number of rounds opened.
    /// @return The count (ids are 1..count).
    function roundCount() external view returns (uint256);
}
