// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {BLS} from "solady/utils/ext/ithaca/BLS.sol";
import {AttributionSettlement} from "./AttributionSettlement.sol";
import {IAssetRegistry} from "./interfaces/IAssetRegistry.sol";
import {IClaimManager, IJobParticipants} from "./interfaces/IClaimManager.sol";
import {IIdentityRegistry} from "./interfaces/IIdentityRegistry.sol";
import {IReceipts} from "./interfaces/IReceipts.sol";
import {IRoundRegistry} from "./interfaces/IRoundRegistry.sol";

/// @title RoundRegistry
/// @notice Training rounds: participants and weights fixed before training, BLS
/// consent to the attribution record before the claim, exclusion disputes during
/// the window, and attribution (asset, Receipts, Shares) at finalization
/// (ARCHITECTURE.md §Fraud proofs 6-7, docs/contracts.md §RoundRegistry).
/// @dev Consent is verified here, *before* the claim is posted (`submitRecord`
/// reverts `ClaimAlreadyPosted` otherwise): a claim that settles through this
/// registry therefore always has a verified record for its whole challenge window,
/// and ClaimManager's posting path stays untouched (docs/design.md §Round consent).
contract RoundRegistry is IRoundRegistry, IJobParticipants, AttributionSettlement, EIP712 {
    /// @notice Domain tag of the attribution-record root.
    bytes32 public constant CONSENT_TAG = keccak256("collab-round-consent-v1");
    /// @notice EIP-712 type of the aggregator's update receipt.
    bytes32 public constant RECEIPT_TYPEHASH =
        keccak256(
            "UpdateReceipt(uint256 roundId,address participant,uint32 flRound,bytes32 updateCommitment,uint64 epsilon)"
        );
    /// @notice EIP-712 type of the aggregator's endorsement of a SecAgg survivor list (whose masked inputs it sums).
    bytes32 public constant SURVIVORS_TYPEHASH =
        keccak256("SurvivorList(uint256 roundId,uint32 flRound,address[] survivors)");
    /// @dev EIP-2537 encoding of -G1, for e(aggPk, H(m)) · e(-G1, sig) == 1.
    bytes private constant _NEG_G1 =
        hex"0000000000000000000000000000000017f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb00000000000000000000000000000000114d1d6855d545a8aa7d76c8cf2e21f267816aef1db507c96655b9d5caac42364e6f38ba0ecb751bad54dcd6b939c2ca";
    uint256 private constant _G2_LENGTH = 256;
    /// @notice How long the participants of an on-chain proposal have to post their consents.
    uint64 public constant CONSENT_PERIOD = 1 hours;

    /// @notice Sahara IDs: participants, their BLS keys (with proof of possession) and the aggregator gate.
    IIdentityRegistry public immutable IDENTITY;

    /// @dev Number of rounds; ids are 1..count.
    uint256 private _count;
    /// @dev roundId => round.
    mapping(uint256 roundId => Round) private _rounds;
    /// @dev roundId => invited participants, in invitation order.
    mapping(uint256 roundId => Participant[]) private _participants;
    /// @dev roundId => Sahara ID => index + 1 in `_participants`.
    mapping(uint256 roundId => mapping(uint256 id => uint256)) private _slotOfId;
    /// @dev roundId => account => index + 1 (set at acceptance).
    mapping(uint256 roundId => mapping(address account => uint256)) private _slotOf;
    /// @dev roundId => the record's settlement data.
    mapping(uint256 roundId => bytes32) private _outputRoot;
    mapping(uint256 roundId => bytes32) private _contentHash;
    mapping(uint256 roundId => string) private _vaultUri;
    /// @dev jobId => roundId; claimId => roundId.
    mapping(bytes32 jobId => uint256) private _roundOfJob;
    mapping(bytes32 claimId => uint256) private _roundOfClaim;
    /// @dev roundId => the current on-chain proposal's root and consent deadline.
    mapping(uint256 roundId => bytes32) private _proposalRoot;
    mapping(uint256 roundId => uint64) private _proposalDeadline;
    /// @dev roundId => account => the proposal root that includes it / that it consented to.
    mapping(uint256 roundId => mapping(address account => bytes32)) private _proposedIn;
    mapping(uint256 roundId => mapping(address account => bytes32)) private _consentedTo;
    /// @dev roundId => account => keccak(its proposed update chain, its proposed ε) and that chain before its last
    /// update, set when it was left out for not consenting.
    mapping(uint256 roundId => mapping(address account => bytes32)) private _withheld;
    mapping(uint256 roundId => mapping(address account => bytes32)) private _withheldPrior;

    /// @param identity IdentityRegistry.
    /// @param claims ClaimManager (must allow this hook and grant REGISTRY_ROLE).
    /// @param assets AssetRegistry (SETTLEMENT_ROLE needed).
    /// @param receipts Receipts (SETTLEMENT_ROLE needed).
    constructor(address identity, address claims, address assets, address receipts)
        AttributionSettlement(claims, assets, receipts)
        EIP712("collab-round", "1")
    {
        if (identity == address(0)) revert SettlementZeroAddress();
        IDENTITY = IIdentityRegistry(identity);
    }

    // ------------------------------------------------------------------ opening

    /// @inheritdoc IRoundRegistry
    function createRound(RoundConfig calldata config) external returns (uint256 roundId) {
        // INVARIANT: only the base model's owner derives a round from it.
        if (ASSETS.ownerOf(config.baseAssetId) != msg.sender) revert NotBaseAssetOwner(config.baseAssetId, msg.sender);
        _activeId(msg.sender);
        _checkConfig(config);
        roundId = ++_count;
        bytes32 jobId = keccak256(abi.encode(block.chainid, address(this), roundId));
        Round storage r = _rounds[roundId];
        r.creator = msg.sender;
        r.aggregator = config.aggregator;
        r.baseAssetId = config.baseAssetId;
        r.rounds = config.rounds;
        r.minParticipants = config.minParticipants;
        r.invited = uint32(config.participantIds.length);
        r.epsilonBudget = config.epsilonBudget;
        r.delta = config.delta;
        r.deadline = config.deadline;
        r.creatorShareBps = config.creatorShareBps;
        r.status = RoundStatus.Open;
        r.configHash = config.configHash;
        r.jobId = jobId;
        _roundOfJob[jobId] = roundId;
        for (uint256 i; i < config.participantIds.length; ++i) {
            uint256 id = config.participantIds[i];
            // INVARIANT: every invited id is a distinct live identity.
            if (_slotOfId[roundId][id] != 0 || id == 0 || !IDENTITY.isActive(id)) revert InvalidParticipant(id);
            _participants[roundId].push();
            _participants[roundId][i].id = id;
            _slotOfId[roundId][id] = i + 1;
        }
        emit RoundCreated(roundId, msg.sender, config.baseAssetId, jobId, config.aggregator);
    }

    function _checkConfig(RoundConfig calldata c) private view {
        uint256 n = c.participantIds.length;
        if (n == 0) revert InvalidRoundConfig("participants");
        if (c.minParticipants == 0 || c.minParticipants > n) revert InvalidRoundConfig("minParticipants");
        if (c.rounds == 0) revert InvalidRoundConfig("rounds");
        if (c.epsilonBudget == 0) revert InvalidRoundConfig("epsilon");
        if (c.deadline <= block.timestamp) revert InvalidRoundConfig("deadline");
        if (c.creatorShareBps > SHARE_BPS) revert InvalidRoundConfig("creatorShareBps");
        // INVARIANT: only a granted, reputable aggregator claims a round.
        if (!IDENTITY.canAggregate(c.aggregator)) revert NotAggregator(c.aggregator);
    }

    /// @inheritdoc IRoundRegistry
    function accept(uint256 roundId, uint64 samples, uint256 datasetAssetId) external {
        Round storage r = _withStatus(roundId, RoundStatus.Open);
        // INVARIANT: the set is decided before the deadline.
        if (block.timestamp >= r.deadline) revert DeadlinePassed(roundId, r.deadline);
        uint256 id = _activeId(msg.sender);
        uint256 slot = _slotOfId[roundId][id];
        if (slot == 0) revert NotInvited(roundId, msg.sender);
        Participant storage p = _participants[roundId][slot - 1];
        if (p.accepted) revert AlreadyAccepted(roundId, msg.sender);
        if (samples == 0) revert ZeroSamples();
        // INVARIANT: a weight is bound to a dataset asset the participant registered (commitment of its data).
        if (
            !ASSETS.exists(datasetAssetId) || ASSETS.ownerOf(datasetAssetId) != msg.sender
                || ASSETS.asset(datasetAssetId).kind != IAssetRegistry.AssetKind.Dataset
        ) revert InvalidDataset(datasetAssetId, msg.sender);
        p.account = msg.sender;
        p.accepted = true;
        p.samples = samples;
        p.datasetAssetId = datasetAssetId;
        // Consent key snapshotted now (its hash; the key is logged): a later rotation cannot change who must sign.
        bytes memory pubkey = IDENTITY.identity(id).keys.blsPubkey;
        p.blsKeyHash = keccak256(pubkey);
        _slotOf[roundId][msg.sender] = slot;
        r.accepted += 1;
        emit ParticipantAccepted(roundId, id, msg.sender, samples, datasetAssetId, pubkey);
    }

    /// @inheritdoc IRoundRegistry
    function fix(uint256 roundId) external {
        Round storage r = _withStatus(roundId, RoundStatus.Open);
        // INVARIANT: the creator may start early; after the deadline anyone may, so a round cannot be held hostage.
        if (block.timestamp < r.deadline && msg.sender != r.creator) revert NotRoundCreator(roundId, msg.sender);
        if (r.accepted < r.minParticipants) revert TooFewParticipants(r.accepted, r.minParticipants);
        uint256 total;
        Participant[] storage ps = _participants[roundId];
        for (uint256 i; i < ps.length; ++i) {
            if (ps[i].accepted) total += ps[i].samples;
        }
        r.totalWeight = total;
        r.status = RoundStatus.Fixed;
        emit RoundFixed(roundId, r.accepted, total);
    }

    // ------------------------------------------------------------------ record and consent

    /// @inheritdoc IRoundRegistry
    function submitRecord(AttributionRecord calldata record, bytes[] calldata pubkeys, bytes calldata signature)
        external
        returns (bytes32 claimId)
    {
        Round storage r = _aggregatorRound(record.roundId);
        bytes32 root = verifyConsent(record, pubkeys, signature);
        bool[] memory included = new bool[](record.participants.length);
        for (uint256 i; i < included.length; ++i) {
            included[i] = true;
        }
        claimId = _record(r, record, root, included);
    }

    /// @inheritdoc IRoundRegistry
    function proposeRecord(AttributionRecord calldata record) external returns (bytes32 root) {
        uint256 roundId = record.roundId;
        _aggregatorRound(roundId);
        _checkRows(record);
        root = recordRoot(record);
        uint64 deadline = uint64(block.timestamp) + CONSENT_PERIOD;
        _proposalRoot[roundId] = root;
        _proposalDeadline[roundId] = deadline;
        for (uint256 i; i < record.participants.length; ++i) {
            _proposedIn[roundId][record.participants[i]] = root;
        }
        emit RecordProposed(roundId, root, deadline, record.participants.length);
    }

    /// @inheritdoc IRoundRegistry
    function consent(uint256 roundId, address account, bytes calldata pubkey, bytes calldata signature) external {
        _withStatus(roundId, RoundStatus.Fixed);
        bytes32 root = _proposalRoot[roundId];
        if (root == bytes32(0) || _proposedIn[roundId][account] != root) revert NotProposed(roundId, account);
        uint64 deadline = _proposalDeadline[roundId];
        if (block.timestamp >= deadline) revert ConsentClosed(roundId, deadline);
        if (keccak256(pubkey) != _participants[roundId][_slotOf[roundId][account] - 1].blsKeyHash) {
            revert WrongConsentKey(account);
        }
        // The signature authenticates the participant, so a relay (the aggregator, a watcher) may post it.
        _checkSignature(roundId, root, abi.decode(pubkey, (BLS.G1Point)), signature);
        _consentedTo[roundId][account] = root;
        emit ConsentPosted(roundId, account, root, signature);
    }

    /// @inheritdoc IRoundRegistry
    function submitProposed(AttributionRecord calldata proposal, bytes32[] calldata priorChains)
        external
        returns (bytes32 claimId)
    {
        uint256 roundId = proposal.roundId;
        Round storage r = _aggregatorRound(roundId);
        bytes32 root = recordRoot(proposal);
        if (root != _proposalRoot[roundId]) revert NotTheProposal(roundId, root);
        if (priorChains.length != proposal.participants.length) revert MalformedRecord(roundId);
        bool[] memory consented = new bool[](proposal.participants.length);
        uint256 count;
        for (uint256 i; i < consented.length; ++i) {
            address account = proposal.participants[i];
            if (_consentedTo[roundId][account] == root) {
                consented[i] = true;
                ++count;
            } else {
                _withheld[roundId][account] = _proposedRow(proposal.updateCommitments[i], proposal.epsilons[i]);
                _withheldPrior[roundId][account] = priorChains[i];
            }
        }
        uint64 deadline = _proposalDeadline[roundId];
        // INVARIANT: nobody proposed loses its chance to consent: before the deadline only a unanimous proposal records.
        if (count < consented.length && block.timestamp < deadline) revert ConsentStillOpen(roundId, deadline);
        if (count < r.minParticipants) revert TooFewParticipants(count, r.minParticipants);
        claimId = _record(r, proposal, root, consented);
    }

    /// @dev Writes a checked record with its `included` rows and binds it to its (not yet posted) claim.
    function _record(Round storage r, AttributionRecord calldata record, bytes32 root, bool[] memory included)
        private
        returns (bytes32 claimId)
    {
        uint256 roundId = record.roundId;
        claimId = CLAIMS.claimIdOf(r.jobId, record.programRoot, record.inputRoot);
        // INVARIANT: the record precedes its claim, so it is public for the claim's whole window.
        if (CLAIMS.claimStatus(claimId) != IClaimManager.ClaimStatus.None) revert ClaimAlreadyPosted(claimId);
        uint256 n;
        for (uint256 i; i < included.length; ++i) {
            if (!included[i]) continue;
            Participant storage p = _participants[roundId][_slotOf[roundId][record.participants[i]] - 1];
            p.included = true;
            p.epsilon = record.epsilons[i];
            p.updateCommitment = record.updateCommitments[i];
            ++n;
        }
        _outputRoot[roundId] = record.outputRoot;
        _contentHash[roundId] = record.contentHash;
        _vaultUri[roundId] = record.vaultUri;
        _roundOfClaim[claimId] = roundId;
        r.claimId = claimId;
        r.recordRoot = root;
        r.status = RoundStatus.Recorded;
        emit RecordSubmitted(roundId, claimId, root, n);
    }

    /// @inheritdoc IRoundRegistry
    function verifyConsent(AttributionRecord calldata record, bytes[] calldata pubkeys, bytes calldata signature)
        public
        view
        returns (bytes32 root)
    {
        uint256[] memory slots = _checkRows(record);
        if (pubkeys.length != slots.length) revert MalformedRecord(record.roundId);
        BLS.G1Point memory aggregate;
        for (uint256 i; i < slots.length; ++i) {
            // INVARIANT: each key is the one snapshotted at acceptance (registered with a proof of possession).
            if (keccak256(pubkeys[i]) != _participants[record.roundId][slots[i]].blsKeyHash) {
                revert WrongConsentKey(record.participants[i]);
            }
            BLS.G1Point memory pk = abi.decode(pubkeys[i], (BLS.G1Point));
            aggregate = i == 0 ? pk : BLS.add(aggregate, pk);
        }
        root = recordRoot(record);
        // INVARIANT: e(Σ pk_i, H(root)) · e(-G1, sig) == 1: every included participant (and only they) signed
        // this root; sound against rogue keys because each pk_i was registered with a proof of possession.
        _checkSignature(record.roundId, root, aggregate, signature);
    }

    /// @dev Reverts `InvalidConsentSignature` unless `signature` is `pk`'s BLS signature over `root`.
    function _checkSignature(uint256 roundId, bytes32 root, BLS.G1Point memory pk, bytes calldata signature)
        private
        view
    {
        if (signature.length != _G2_LENGTH) revert InvalidConsentSignature(roundId, root);
        BLS.G2Point memory hashed = BLS.hashToG2(abi.encodePacked(root));
        bytes memory input = abi.encodePacked(abi.encode(pk), abi.encode(hashed), _NEG_G1, signature);
        // Called directly (not BLS.pairing) so a malformed signature is reported as InvalidConsentSignature.
        (bool ok, bytes memory out) = BLS.BLS12_PAIRING_CHECK.staticcall(input);
        if (!ok || out.length != 32 || abi.decode(out, (uint256)) != 1) revert InvalidConsentSignature(roundId, root);
    }

    /// @dev Checks the record's rows against the fixed round; returns each row's index in `_participants`.
    function _checkRows(AttributionRecord calldata record) private view returns (uint256[] memory slots) {
        uint256 roundId = record.roundId;
        Round storage r = _existing(roundId);
        uint256 n = record.participants.length;
        if (record.weights.length != n || record.updateCommitments.length != n || record.epsilons.length != n) {
            revert MalformedRecord(roundId);
        }
        // INVARIANT: at least N participants' updates were aggregated.
        if (n < r.minParticipants) revert TooFewParticipants(n, r.minParticipants);
        slots = new uint256[](n);
        address previous;
        for (uint256 i; i < n; ++i) {
            address account = record.participants[i];
            uint256 slot = _slotOf[roundId][account];
            // INVARIANT: only accepted participants, each once (strictly increasing order).
            if (slot == 0 || account <= previous) revert NotIncludable(roundId, account);
            previous = account;
            Participant storage p = _participants[roundId][slot - 1];
            // INVARIANT: no aggregator re-weights a contributor: weights are the counts fixed on-chain.
            if (record.weights[i] != p.samples) revert WeightMismatch(account, record.weights[i], p.samples);
            if (record.epsilons[i] > r.epsilonBudget) revert EpsilonOverBudget(account, record.epsilons[i], r.epsilonBudget);
            slots[i] = slot - 1;
        }
    }

    /// @inheritdoc IRoundRegistry
    function recordRoot(AttributionRecord calldata record) public view returns (bytes32) {
        bytes32 body = keccak256(
            abi.encode(record.participants, record.weights, record.updateCommitments, record.epsilons)
        );
        return keccak256(
            abi.encode(
                CONSENT_TAG,
                block.chainid,
                address(CLAIMS),
                address(this),
                record.roundId,
                record.programRoot,
                record.inputRoot,
                record.outputRoot,
                record.contentHash,
                keccak256(bytes(record.vaultUri)),
                body
            )
        );
    }

    // ------------------------------------------------------------------ exclusion

    /// @inheritdoc IRoundRegistry
    function disputeExclusion(
        uint256 roundId,
        uint32 flRound,
        bytes32 updateCommitment,
        uint64 epsilon,
        bytes calldata receiptSignature
    ) external {
        Round storage r = _withStatus(roundId, RoundStatus.Recorded);
        uint256 slot = _slotOf[roundId][msg.sender];
        if (slot == 0) revert NotParticipant(roundId, msg.sender);
        if (_participants[roundId][slot - 1].included) revert NotExcluded(roundId, msg.sender);
        // INVARIANT: one proposed with the row its receipt names (its chain ends with that update, and that ε) that
        // did not consent in time cannot profit from its refusal; one proposed with another update or another ε was
        // misrepresented, so its refusal was justified and it may dispute.
        bytes32 withheld = _withheld[roundId][msg.sender];
        bytes32 chain = keccak256(abi.encode(_withheldPrior[roundId][msg.sender], updateCommitment));
        if (withheld != bytes32(0) && _proposedRow(chain, epsilon) == withheld) {
            revert ConsentWithheld(roundId, msg.sender);
        }
        // INVARIANT: the last round's receipt proves the update (and the ε reported with it) entered the final
        // aggregate.
        if (flRound != r.rounds) revert ReceiptNotFinalRound(flRound, r.rounds);
        address signer =
            ECDSA.recover(receiptDigest(roundId, msg.sender, flRound, updateCommitment, epsilon), receiptSignature);
        if (signer != r.aggregator) revert BadReceiptSignature(signer);
        // ClaimManager checks the claim is pending, names this registry, and the window is open.
        CLAIMS.rejectByRegistry(r.claimId, msg.sender);
        emit ExclusionDisputeWon(roundId, msg.sender, r.claimId);
    }

    /// @inheritdoc IRoundRegistry
    function disputeOmission(uint256 roundId, uint32 flRound, address[] calldata survivors, bytes calldata signature)
        external
    {
        Round storage r = _withStatus(roundId, RoundStatus.Recorded);
        if (_slotOf[roundId][msg.sender] == 0) revert NotParticipant(roundId, msg.sender);
        // INVARIANT: the last round's survivors are exactly whose masked inputs are in the claimed sum.
        if (flRound != r.rounds) revert ReceiptNotFinalRound(flRound, r.rounds);
        address signer = ECDSA.recover(survivorsDigest(roundId, flRound, survivors), signature);
        if (signer != r.aggregator) revert BadReceiptSignature(signer);
        address omitted = omittedSurvivor(roundId, survivors);
        if (omitted == address(0)) revert NothingOmitted(roundId);
        CLAIMS.rejectByRegistry(r.claimId, msg.sender);
        emit OmissionDisputeWon(roundId, msg.sender, omitted, r.claimId);
    }

    /// @inheritdoc IRoundRegistry
    function omittedSurvivor(uint256 roundId, address[] calldata survivors) public view returns (address) {
        for (uint256 i; i < survivors.length; ++i) {
            uint256 slot = _slotOf[roundId][survivors[i]];
            // Left out for withholding its consent to a proposal is its own choice, not an omission.
            if (slot != 0 && !_participants[roundId][slot - 1].included && _withheld[roundId][survivors[i]] == 0) {
                return survivors[i];
            }
        }
        return address(0);
    }

    /// @inheritdoc IRoundRegistry
    function survivorsDigest(uint256 roundId, uint32 flRound, address[] calldata survivors)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(
            keccak256(abi.encode(SURVIVORS_TYPEHASH, roundId, flRound, keccak256(abi.encodePacked(survivors))))
        );
    }

    /// @inheritdoc IRoundRegistry
    function receiptDigest(uint256 roundId, address participant, uint32 flRound, bytes32 updateCommitment, uint64 epsilon)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(
            keccak256(abi.encode(RECEIPT_TYPEHASH, roundId, participant, flRound, updateCommitment, epsilon))
        );
    }

    /// @dev What a proposal said about a participant it could not record: its update chain and its ε, in one word.
    function _proposedRow(bytes32 chain, uint64 epsilon) private pure returns (bytes32) {
        return keccak256(abi.encode(chain, epsilon));
    }

    // ------------------------------------------------------------------ settlement

    /// @dev The consented record of `claimId` as an attribution: the adapter, child of the base model.
    function _attributionOf(bytes32 claimId, bytes32 outputRoot) internal view override returns (Attribution memory a) {
        uint256 roundId = _roundOfClaim[claimId];
        if (roundId == 0) revert NoRecord(claimId);
        // INVARIANT: only the output the participants consented to settles.
        if (outputRoot != _outputRoot[roundId]) revert OutputMismatch(claimId, _outputRoot[roundId], outputRoot);
        Round storage r = _rounds[roundId];
        (address[] memory included, uint256[] memory weights) = _includedWithWeights(roundId);
        uint256[] memory parents = new uint256[](1);
        parents[0] = r.baseAssetId;
        a.owner = r.creator;
        a.asset = IAssetRegistry.AssetInput({
            kind: IAssetRegistry.AssetKind.Adapter,
            contentHash: _contentHash[roundId],
            commitmentRoot: outputRoot,
            keyCommitment: bytes32(0),
            vaultUri: _vaultUri[roundId],
            parents: parents,
            derivativeRoyaltyBps: 0
        });
        a.creatorShareBps = r.creatorShareBps;
        a.contributors = included;
        a.weights = weights;
        a.kind = IReceipts.ContributionKind.TrainingUpdate;
    }

    function _afterSettled(bytes32 claimId, uint256) internal override {
        _rounds[_roundOfClaim[claimId]].status = RoundStatus.Settled;
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IJobParticipants
    function isParticipant(bytes32 jobId, address account) external view returns (bool) {
        uint256 roundId = _roundOfJob[jobId];
        return roundId != 0 && _slotOf[roundId][account] != 0;
    }

    /// @inheritdoc IRoundRegistry
    function getRound(uint256 roundId) external view returns (Round memory) {
        return _existing(roundId);
    }

    /// @inheritdoc IRoundRegistry
    function participantsOf(uint256 roundId) external view returns (Participant[] memory) {
        _existing(roundId);
        return _participants[roundId];
    }

    /// @inheritdoc IRoundRegistry
    function includedOf(uint256 roundId) external view returns (address[] memory included) {
        _existing(roundId);
        (included,) = _includedWithWeights(roundId);
    }

    /// @dev Included participants (invitation order) and their fixed weights, from the per-participant flags.
    function _includedWithWeights(uint256 roundId)
        private
        view
        returns (address[] memory accounts, uint256[] memory weights)
    {
        Participant[] storage ps = _participants[roundId];
        uint256 n;
        for (uint256 i; i < ps.length; ++i) {
            if (ps[i].included) ++n;
        }
        accounts = new address[](n);
        weights = new uint256[](n);
        uint256 k;
        for (uint256 i; i < ps.length; ++i) {
            if (!ps[i].included) continue;
            accounts[k] = ps[i].account;
            weights[k++] = ps[i].samples;
        }
    }

    /// @inheritdoc IRoundRegistry
    function proposalOf(uint256 roundId) external view returns (bytes32 recordRoot, uint64 deadline) {
        return (_proposalRoot[roundId], _proposalDeadline[roundId]);
    }

    /// @inheritdoc IRoundRegistry
    function consentOf(uint256 roundId, address account) external view returns (bytes32) {
        return _consentedTo[roundId][account];
    }

    /// @dev The round, if it is fixed and the caller is its aggregator.
    function _aggregatorRound(uint256 roundId) private view returns (Round storage r) {
        r = _withStatus(roundId, RoundStatus.Fixed);
        if (msg.sender != r.aggregator) revert NotRoundAggregator(roundId, msg.sender);
    }

    /// @inheritdoc IRoundRegistry
    function roundOfClaim(bytes32 claimId) external view returns (uint256) {
        return _roundOfClaim[claimId];
    }

    /// @inheritdoc IRoundRegistry
    function jobIdOf(uint256 roundId) external view returns (bytes32) {
        return _existing(roundId).jobId;
    }

    /// @inheritdoc IRoundRegistry
    function roundCount() external view returns (uint256) {
        return _count;
    }

    function _existing(uint256 roundId) private view returns (Round storage r) {
        r = _rounds[roundId];
        if (r.status == RoundStatus.None) revert UnknownRound(roundId);
    }

    function _withStatus(uint256 roundId, RoundStatus status) private view returns (Round storage r) {
        r = _existing(roundId);
        if (r.status != status) revert WrongRoundStatus(roundId, r.status);
    }

    function _activeId(address account) private view returns (uint256 id) {
        id = IDENTITY.idOf(account);
        if (id == 0 || !IDENTITY.isActive(id)) revert NoActiveIdentity(account);
    }
}
