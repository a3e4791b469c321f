// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {IAssetRegistry} from "./interfaces/IAssetRegistry.sol";
import {IBisectionGame} from "./interfaces/IBisectionGame.sol";
import {IClaimManager, IJobParticipants, ISettlementHook} from "./interfaces/IClaimManager.sol";
import {IDataAvailability} from "./interfaces/IDataAvailability.sol";
import {IIdentityRegistry} from "./interfaces/IIdentityRegistry.sol";
import {ILicensing} from "./interfaces/ILicensing.sol";
import {IProtocolParams} from "./interfaces/IProtocolParams.sol";
import {LibMerkle} from "./lib/LibMerkle.sol";
import {ParamKeys} from "./lib/ParamKeys.sol";

/// @title ClaimManager
/// @notice Optimistic claims, their bonds and their settlement (docs/protocol.md §4, §5.5-§5.6, §7).
/// @dev The bank and registry of the fraud-proof game: games (`BisectionGame`) and
/// data challenges (`DataAvailability`) only report outcomes here, so every wei
/// is accounted for in one place and paid out through pull credits.
/// Settlement hooks run once, at finalization, with a fixed gas budget through a
/// call that ignores return data; a hook that reverts or runs out of gas emits
/// `SettlementHookFailed` and the claim stays finalized: an effect can be retried
/// by its own contract, whereas a bricked finalization would lock the claimer's bond.
contract ClaimManager is IClaimManager, AccessControl, ReentrancyGuard {
    /// @notice Where burnt wei is credited (it never claims).
    address public constant BURN_ADDRESS = 0x000000000000000000000000000000000000dEaD;
    /// @notice Gas given to a settlement hook.
    uint256 public constant HOOK_GAS = 1_500_000;
    /// @notice Reputation a claimer or challenger loses with a lost challenge.
    int256 public constant REPUTATION_PENALTY = 20;
    /// @notice Reputation a claimer gains at finalization, or a challenger with a won challenge.
    int256 public constant REPUTATION_REWARD = 5;
    /// @notice Role of job registries (e.g. RoundRegistry) that may reject a pending claim naming them as its hook.
    bytes32 public constant REGISTRY_ROLE = keccak256("REGISTRY_ROLE");

    /// @notice Governed parameters.
    IProtocolParams public immutable PARAMS;
    /// @notice Sahara IDs: who may claim, whose reputation moves.
    IIdentityRegistry public immutable IDENTITY;
    /// @notice Assets: owners grant verifiers.
    IAssetRegistry public immutable ASSETS;
    /// @notice Licensing: Full-access licensees verify `LicensedVerifiers` claims.
    ILicensing public immutable LICENSING;

    /// @notice The game contract (set once by `initialize`).
    IBisectionGame public game;
    /// @notice The data-availability contract (set once by `initialize`).
    IDataAvailability public dataAvailability;

    /// @dev claimId => claim.
    mapping(bytes32 claimId => Claim) private _claims;
    /// @dev Parameter snapshots, by version (1-based).
    mapping(uint32 version => Params) private _params;
    /// @dev Latest snapshot version and the hash of its values.
    uint32 private _paramsVersion;
    /// @dev `ProtocolParams.epoch()` when the latest snapshot was taken (packed with the version).
    uint64 private _paramsEpoch;
    bytes32 private _paramsHash;
    /// @dev challengeId => challenge; ids start at 1.
    mapping(uint256 challengeId => Challenge) private _challenges;
    uint256 private _challengeCount;
    /// @dev Participants given at posting.
    mapping(bytes32 claimId => mapping(address account => bool)) private _participants;
    /// @dev Job registry (and job id) asked for a `Participants` claim without a list.
    mapping(bytes32 claimId => address) private _participantRegistry;
    mapping(bytes32 claimId => bytes32) private _jobOf;
    /// @dev `LicensedVerifiers` claims: the asset.
    mapping(bytes32 claimId => uint256) private _assetOf;
    /// @dev assetId => account => verifier role granted by the asset owner.
    mapping(uint256 assetId => mapping(address account => bool)) private _verifiers;
    /// @dev Settlement hooks allowed by the admin.
    mapping(address hook => bool) private _hookAllowed;
    /// @dev Pull-payment balances.
    mapping(address account => uint256) private _credit;

    /// @param params ProtocolParams.
    /// @param identity IdentityRegistry.
    /// @param assets AssetRegistry.
    /// @param licensing Licensing.
    /// @param admin Holder of DEFAULT_ADMIN_ROLE (initializes, allows hooks).
    constructor(address params, address identity, address assets, address licensing, address admin) {
        if (
            params == address(0) || identity == address(0) || assets == address(0) || licensing == address(0)
                || admin == address(0)
        ) revert ClaimManagerZeroAddress();
        PARAMS = IProtocolParams(params);
        IDENTITY = IIdentityRegistry(identity);
        ASSETS = IAssetRegistry(assets);
        LICENSING = ILicensing(licensing);
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Wires the game and data-availability contracts (once; they are deployed with this address).
    /// @param gameContract BisectionGame.
    /// @param daContract DataAvailability.
    function initialize(address gameContract, address daContract) external onlyRole(DEFAULT_ADMIN_ROLE) {
        // INVARIANT: the courts are fixed once; a claim is judged by the contracts it was posted under.
        if (address(game) != address(0)) revert AlreadyInitialized();
        if (gameContract == address(0) || daContract == address(0)) revert ClaimManagerZeroAddress();
        game = IBisectionGame(gameContract);
        dataAvailability = IDataAvailability(daContract);
    }

    // ------------------------------------------------------------------ posting

    /// @inheritdoc IClaimManager
    function postClaim(ClaimInput calldata input) external payable returns (bytes32 claimId) {
        // INVARIANT: claims are judged by wired courts.
        if (address(game) == address(0)) revert NotInitialized();
        bytes32 programRoot = LibMerkle.programRoot(input.stepCount, input.stepTreeRoot);
        claimId = claimIdOf(input.jobId, input.programRoot, input.inputRoot);
        // INVARIANT: a claim id is posted once (restarts never double-post).
        if (_claims[claimId].status != ClaimStatus.None) revert DuplicateClaim(claimId);
        // INVARIANT: only identities with enough reputation claim.
        if (!IDENTITY.canClaim(msg.sender)) revert NotAllowedClaimer(msg.sender);
        // INVARIANT: stepCount is the program's length (bound by the program root).
        if (input.stepCount == 0) revert EmptyProgram();
        if (programRoot != input.programRoot) revert ProgramRootMismatch(input.programRoot, programRoot);
        // INVARIANT: k is a power of two in {2, 4, 8, 16}.
        if (input.log2K == 0 || input.log2K > 4) revert InvalidBranching(input.log2K);
        _checkLastLeaf(input);
        _checkAudience(input);
        // INVARIANT: only admin-allowed hooks run with this contract as caller.
        if (input.settlementHook != address(0) && !_hookAllowed[input.settlementHook]) {
            revert HookNotAllowed(input.settlementHook);
        }
        uint32 version = _snapshotParams();
        uint256 bond = _params[version].claimerBond;
        // INVARIANT: the bond is exactly the snapshotted CLAIMER_BOND.
        if (msg.value != bond) revert WrongBond(msg.value, bond);

        Claim storage c = _claims[claimId];
        c.claimer = msg.sender;
        c.postedAt = uint40(block.timestamp);
        c.status = ClaimStatus.Pending;
        c.audience = input.audience;
        c.log2K = input.log2K;
        c.stepCount = input.stepCount;
        c.paramsVersion = version;
        c.settlementHook = input.settlementHook;
        ClaimRoots memory roots = ClaimRoots({
            stepTreeRoot: input.stepTreeRoot,
            inputRoot: input.inputRoot,
            outputRoot: input.outputRoot,
            traceRoot: input.traceRoot,
            daPointer: input.daPointer
        });
        c.rootsHash = keccak256(abi.encode(roots));
        _storeAudience(claimId, input);
        emit ClaimPosted(claimId, msg.sender, input.jobId, programRoot, roots, input.stepCount, input.log2K, input.audience);
    }

    /// @dev The output root must be the trace's last leaf (§4).
    function _checkLastLeaf(ClaimInput calldata input) private pure {
        uint256 depth = LibMerkle.treeDepth(input.stepCount);
        // INVARIANT: the proof is a full path for leaf stepCount - 1.
        if (input.lastLeafProof.length != depth) revert InvalidLastLeafProof(input.lastLeafProof.length, depth);
        bytes32 leaf = LibMerkle.traceLeaf(input.stepCount - 1, input.outputRoot);
        bytes32 root = LibMerkle.rootFromProof(leaf, input.stepCount - 1, input.lastLeafProof);
        // INVARIANT: a wrong output root with an honest trace is refused at posting.
        if (root != input.traceRoot) revert OutputNotLastLeaf(input.traceRoot, root);
    }

    /// @dev Each audience needs its data: participants (or a registry), or an existing asset.
    function _checkAudience(ClaimInput calldata input) private view {
        if (input.audience == Audience.Participants) {
            // INVARIANT: a participants claim names who may verify.
            if (input.participants.length == 0 && input.participantRegistry == address(0)) {
                revert InvalidAudience(input.audience);
            }
        } else if (input.audience == Audience.LicensedVerifiers) {
            // INVARIANT: licensed verifiers are licensees of an existing asset.
            if (input.assetId == 0 || !ASSETS.exists(input.assetId)) revert InvalidAudience(input.audience);
        }
    }

    function _storeAudience(bytes32 claimId, ClaimInput calldata input) private {
        if (input.audience == Audience.Participants) {
            if (input.participants.length == 0) {
                _participantRegistry[claimId] = input.participantRegistry;
                _jobOf[claimId] = input.jobId;
            }
            for (uint256 i; i < input.participants.length; ++i) {
                _participants[claimId][input.participants[i]] = true;
            }
        } else if (input.audience == Audience.LicensedVerifiers) {
            _assetOf[claimId] = input.assetId;
        }
    }

    /// @dev The snapshot in force: reused while `ProtocolParams.epoch()` is unchanged (one call and
    /// two reads instead of eight gets); after any change the values are read in one batched call and
    /// a new version is stored only when they differ from the last snapshot.
    function _snapshotParams() private returns (uint32 version) {
        uint256 epoch = PARAMS.epoch();
        version = _paramsVersion;
        if (version != 0 && epoch == _paramsEpoch) return version;
        bytes32[] memory keys = new bytes32[](8);
        keys[0] = ParamKeys.CHALLENGE_WINDOW;
        keys[1] = ParamKeys.CLOCK_DURATION;
        keys[2] = ParamKeys.CLOCK_EXTENSION;
        keys[3] = ParamKeys.DA_RESPONSE_WINDOW;
        keys[4] = ParamKeys.CLAIMER_BOND;
        keys[5] = ParamKeys.CHALLENGER_BOND;
        keys[6] = ParamKeys.DA_BOND;
        keys[7] = ParamKeys.BURN_BPS;
        uint256[] memory v = PARAMS.getMany(keys);
        Params memory p = Params({
            challengeWindow: uint64(v[0]),
            clockDuration: uint64(v[1]),
            clockExtension: uint64(v[2]),
            daResponseWindow: uint64(v[3]),
            claimerBond: uint128(v[4]),
            challengerBond: uint128(v[5]),
            daBond: uint128(v[6]),
            burnBps: uint16(v[7])
        });
        _paramsEpoch = uint64(epoch);
        bytes32 h = keccak256(abi.encode(p));
        if (h == _paramsHash) return version;
        version = ++_paramsVersion;
        _params[version] = p;
        _paramsHash = h;
        emit ParamsSnapshotted(version);
    }

    // ------------------------------------------------------------------ challenges

    /// @inheritdoc IClaimManager
    function challenge(bytes32 claimId, ClaimRoots calldata roots) external payable returns (uint256 challengeId) {
        Claim storage c = _openForChallenge(claimId);
        _checkRoots(claimId, c, roots);
        Params storage p = _params[c.paramsVersion];
        // INVARIANT: a game is bonded with exactly the snapshotted CHALLENGER_BOND.
        if (msg.value != p.challengerBond) revert WrongBond(msg.value, p.challengerBond);
        challengeId = _newChallenge(claimId, c, ChallengeKind.Game);
        game.open(
            challengeId,
            claimId,
            c.claimer,
            msg.sender,
            roots.traceRoot,
            c.stepCount,
            c.log2K,
            p.clockDuration,
            p.clockExtension
        );
    }

    /// @inheritdoc IClaimManager
    function challengeData(
        bytes32 claimId,
        ClaimRoots calldata roots,
        bytes32 tensorRoot,
        uint256 chunkIndex,
        bytes calldata commitment
    ) external payable returns (uint256 challengeId) {
        Claim storage c = _openForChallenge(claimId);
        _checkRoots(claimId, c, roots);
        Params storage p = _params[c.paramsVersion];
        // INVARIANT: a data challenge is bonded with exactly the snapshotted DA_BOND.
        if (msg.value != p.daBond) revert WrongBond(msg.value, p.daBond);
        challengeId = _newChallenge(claimId, c, ChallengeKind.Data);
        dataAvailability.open(
            challengeId,
            claimId,
            IDataAvailability.ClaimData(roots.inputRoot, roots.traceRoot, c.stepCount),
            tensorRoot,
            chunkIndex,
            commitment,
            p.daResponseWindow
        );
    }

    function _openForChallenge(bytes32 claimId) private view returns (Claim storage c) {
        c = _pending(claimId);
        uint256 deadline = uint256(c.postedAt) + _params[c.paramsVersion].challengeWindow;
        // INVARIANT: challenges are opened inside the window only.
        if (block.timestamp >= deadline) revert ChallengeWindowClosed(claimId, deadline);
        // INVARIANT: only the claim's audience may challenge.
        if (!isAudience(claimId, msg.sender)) revert NotAudience(claimId, msg.sender);
    }

    function _newChallenge(bytes32 claimId, Claim storage c, ChallengeKind kind) private returns (uint256 id) {
        id = ++_challengeCount;
        _challenges[id] = Challenge({
            claimId: claimId,
            challenger: msg.sender,
            kind: kind,
            status: ChallengeStatus.Open,
            bond: uint128(msg.value)
        });
        c.openChallenges += 1;
        emit ChallengeOpened(id, claimId, msg.sender, kind);
    }

    // ------------------------------------------------------------------ outcomes

    /// @inheritdoc IClaimManager
    function onGameResolved(uint256 challengeId, bool claimerWon) external {
        // INVARIANT: only the game contract reports game outcomes.
        if (msg.sender != address(game)) revert NotCourt(msg.sender);
        _resolve(challengeId, ChallengeKind.Game, claimerWon);
    }

    /// @inheritdoc IClaimManager
    function onDataResolved(uint256 challengeId, bool answered) external {
        // INVARIANT: only the data-availability contract reports data outcomes.
        if (msg.sender != address(dataAvailability)) revert NotCourt(msg.sender);
        _resolve(challengeId, ChallengeKind.Data, answered);
    }

    /// @dev §5.5: the loser's bond goes to the winner minus the burn; a claimer loss rejects the claim.
    function _resolve(uint256 challengeId, ChallengeKind kind, bool claimerWon) private {
        Challenge storage ch = _challenges[challengeId];
        // INVARIANT: a challenge is resolved once, by its own court.
        if (ch.status != ChallengeStatus.Open || ch.kind != kind) revert ChallengeNotOpen(challengeId, ch.status);
        Claim storage c = _claims[ch.claimId];
        Params storage p = _params[c.paramsVersion];
        if (c.status != ClaimStatus.Pending) {
            // SAFETY: another challenge already rejected the claim: this one only gets its bond back.
            ch.status = ChallengeStatus.Refunded;
            _addCredit(ch.challenger, ch.bond);
            emit ChallengeClosed(challengeId, ch.claimId, ChallengeStatus.Refunded);
            return;
        }
        c.openChallenges -= 1;
        if (claimerWon) {
            ch.status = ChallengeStatus.ClaimerWon;
            if (kind == ChallengeKind.Data) {
                // The claimer paid for the calldata: the whole DA bond is its.
                _addCredit(c.claimer, ch.bond);
            } else {
                _split(c.claimer, ch.bond, p.burnBps);
                _reputation(ch.challenger, -REPUTATION_PENALTY);
            }
            emit ChallengeClosed(challengeId, ch.claimId, ChallengeStatus.ClaimerWon);
        } else {
            ch.status = ChallengeStatus.ChallengerWon;
            c.status = ClaimStatus.Rejected;
            _addCredit(ch.challenger, ch.bond);
            _split(ch.challenger, p.claimerBond, p.burnBps);
            _reputation(c.claimer, -REPUTATION_PENALTY);
            _reputation(ch.challenger, REPUTATION_REWARD);
            emit ChallengeClosed(challengeId, ch.claimId, ChallengeStatus.ChallengerWon);
            emit ClaimRejected(ch.claimId, challengeId, ch.challenger);
        }
    }

    /// @inheritdoc IClaimManager
    function refundChallenge(uint256 challengeId) external {
        Challenge storage ch = _challenges[challengeId];
        if (ch.status == ChallengeStatus.None) revert UnknownChallenge(challengeId);
        // INVARIANT: only challenges still open when their claim was rejected are refunded.
        if (ch.status != ChallengeStatus.Open) revert ChallengeNotOpen(challengeId, ch.status);
        ClaimStatus status = _claims[ch.claimId].status;
        if (status != ClaimStatus.Rejected) revert ClaimNotPending(ch.claimId, status);
        ch.status = ChallengeStatus.Refunded;
        _addCredit(ch.challenger, ch.bond);
        emit ChallengeClosed(challengeId, ch.claimId, ChallengeStatus.Refunded);
    }

    /// @inheritdoc IClaimManager
    function rejectByRegistry(bytes32 claimId, address beneficiary) external onlyRole(REGISTRY_ROLE) {
        Claim storage c = _pending(claimId);
        // INVARIANT: a registry judges only the claims that chose it as their settlement hook.
        if (c.settlementHook != msg.sender) revert NotClaimRegistry(claimId, msg.sender);
        if (beneficiary == address(0) || beneficiary == c.claimer) revert InvalidBeneficiary(claimId, beneficiary);
        Params storage p = _params[c.paramsVersion];
        uint256 deadline = uint256(c.postedAt) + p.challengeWindow;
        // INVARIANT: a registry's dispute, like a challenge, is decided inside the window only.
        if (block.timestamp >= deadline) revert ChallengeWindowClosed(claimId, deadline);
        c.status = ClaimStatus.Rejected;
        // SAFETY: open challenges are refunded through `refundChallenge` / their court's report (§5.5).
        _split(beneficiary, p.claimerBond, p.burnBps);
        _reputation(c.claimer, -REPUTATION_PENALTY);
        emit ClaimRejectedByRegistry(claimId, msg.sender, beneficiary);
    }

    // ------------------------------------------------------------------ finalization

    /// @inheritdoc IClaimManager
    function finalize(bytes32 claimId, ClaimRoots calldata roots) external nonReentrant {
        Claim storage c = _pending(claimId);
        _checkRoots(claimId, c, roots);
        uint256 endsAt = uint256(c.postedAt) + _params[c.paramsVersion].challengeWindow;
        // INVARIANT: never before the window has passed.
        if (block.timestamp < endsAt) revert ChallengeWindowOpen(claimId, endsAt);
        // INVARIANT: every game and data challenge has ended in the claimer's favour.
        if (c.openChallenges != 0) revert ChallengesOpen(claimId, c.openChallenges);
        c.status = ClaimStatus.Finalized;
        _addCredit(c.claimer, _params[c.paramsVersion].claimerBond);
        emit ClaimFinalized(claimId, roots.outputRoot);
        _reputation(c.claimer, REPUTATION_REWARD);
        address hook = c.settlementHook;
        if (hook != address(0)) _runHook(claimId, hook, c.claimer, roots.outputRoot);
    }

    /// @dev Calls the hook with exactly HOOK_GAS and ignores its return data (no return bomb).
    function _runHook(bytes32 claimId, address hook, address claimer, bytes32 outputRoot) private {
        // INVARIANT: a finalizer cannot starve the hook to make it fail (EIP-150 keeps 1/64 back).
        uint256 required = HOOK_GAS + HOOK_GAS / 63 + 10_000;
        if (gasleft() < required) revert InsufficientGasForHook(gasleft(), required);
        bytes memory data = abi.encodeCall(ISettlementHook.onClaimFinalized, (claimId, claimer, outputRoot));
        bool ok;
        uint256 gasBudget = HOOK_GAS;
        assembly ("memory-safe") {
            ok := call(gasBudget, hook, 0, add(data, 32), mload(data), 0, 0)
        }
        if (!ok) emit SettlementHookFailed(claimId, hook);
    }

    // ------------------------------------------------------------------ credits

    /// @inheritdoc IClaimManager
    function claimCredit() external nonReentrant returns (uint256 amount) {
        amount = _credit[msg.sender];
        // INVARIANT: nothing to send is an error, not a silent no-op.
        if (amount == 0) revert NothingToClaim(msg.sender);
        _credit[msg.sender] = 0;
        emit CreditClaimed(msg.sender, amount);
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert CreditTransferFailed(msg.sender);
    }

    function _addCredit(address account, uint256 amount) private {
        if (amount == 0) return;
        _credit[account] += amount;
        emit Credited(account, amount);
    }

    /// @dev Credits `amount · (10000 − burnBps) / 10000` to `winner` and burns the rest.
    function _split(address winner, uint256 amount, uint16 burnBps) private {
        uint256 paid = amount * (10_000 - burnBps) / 10_000;
        _addCredit(winner, paid);
        _addCredit(BURN_ADDRESS, amount - paid);
    }

    /// @dev Moves reputation when `account` has an identity; a registry that refuses does not block a game.
    function _reputation(address account, int256 delta) private {
        uint256 id = IDENTITY.idOf(account);
        if (id == 0) return;
        try IDENTITY.adjustReputation(id, delta) {} catch {}
    }

    // ------------------------------------------------------------------ audience

    /// @inheritdoc IClaimManager
    function setVerifier(uint256 assetId, address account, bool allowed) external {
        // INVARIANT: only the asset's owner decides who verifies its claims.
        if (ASSETS.ownerOf(assetId) != msg.sender) revert NotAssetOwner(assetId, msg.sender);
        _verifiers[assetId][account] = allowed;
        emit VerifierSet(assetId, account, allowed);
    }

    /// @inheritdoc IClaimManager
    function setSettlementHook(address hook, bool allowed) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (hook == address(0)) revert ClaimManagerZeroAddress();
        _hookAllowed[hook] = allowed;
        emit SettlementHookSet(hook, allowed);
    }

    /// @inheritdoc IClaimManager
    function isAudience(bytes32 claimId, address account) public view returns (bool) {
        Claim storage c = _claims[claimId];
        if (c.status == ClaimStatus.None) revert UnknownClaim(claimId);
        if (c.audience == Audience.Public) return true;
        if (c.audience == Audience.Participants) {
            address registry = _participantRegistry[claimId];
            if (registry == address(0)) return _participants[claimId][account];
            return IJobParticipants(registry).isParticipant(_jobOf[claimId], account);
        }
        uint256 assetId = _assetOf[claimId];
        return _verifiers[assetId][account] || LICENSING.isLicensed(assetId, account, ILicensing.LicenseKind.FullAccess);
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IClaimManager
    function getClaim(bytes32 claimId) external view returns (Claim memory) {
        Claim storage c = _claims[claimId];
        if (c.status == ClaimStatus.None) revert UnknownClaim(claimId);
        return c;
    }

    /// @inheritdoc IClaimManager
    function claimStatus(bytes32 claimId) external view returns (ClaimStatus) {
        return _claims[claimId].status;
    }

    /// @inheritdoc IClaimManager
    function paramsOf(bytes32 claimId) external view returns (Params memory) {
        Claim storage c = _claims[claimId];
        if (c.status == ClaimStatus.None) revert UnknownClaim(claimId);
        return _params[c.paramsVersion];
    }

    /// @inheritdoc IClaimManager
    function checkRoots(bytes32 claimId, ClaimRoots calldata roots) external view returns (uint64 stepCount) {
        Claim storage c = _claims[claimId];
        if (c.status == ClaimStatus.None) revert UnknownClaim(claimId);
        _checkRoots(claimId, c, roots);
        return c.stepCount;
    }

    /// @inheritdoc IClaimManager
    function hashRoots(ClaimRoots calldata roots) external pure returns (bytes32) {
        return keccak256(abi.encode(roots));
    }

    function _checkRoots(bytes32 claimId, Claim storage c, ClaimRoots calldata roots) private view {
        // INVARIANT: roots passed back are exactly the ones posted.
        if (keccak256(abi.encode(roots)) != c.rootsHash) revert RootsMismatch(claimId);
    }

    /// @inheritdoc IClaimManager
    function getChallenge(uint256 challengeId) external view returns (Challenge memory) {
        Challenge storage ch = _challenges[challengeId];
        if (ch.status == ChallengeStatus.None) revert UnknownChallenge(challengeId);
        return ch;
    }

    /// @inheritdoc IClaimManager
    function creditOf(address account) external view returns (uint256) {
        return _credit[account];
    }

    /// @notice Whether `hook` may be named by claims.
    /// @param hook The hook.
    /// @return True when allowed.
    function isHookAllowed(address hook) external view returns (bool) {
        return _hookAllowed[hook];
    }

    /// @notice Whether `account` holds the verifier role of `assetId`.
    /// @param assetId The asset.
    /// @param account The account.
    /// @return True when granted.
    function isVerifier(uint256 assetId, address account) external view returns (bool) {
        return _verifiers[assetId][account];
    }

    /// @inheritdoc IClaimManager
    function claimIdOf(bytes32 jobId, bytes32 programRoot, bytes32 inputRoot) public pure returns (bytes32) {
        return keccak256(abi.encodePacked(jobId, programRoot, inputRoot));
    }

    function _pending(bytes32 claimId) private view returns (Claim storage c) {
        c = _claims[claimId];
        if (c.status == ClaimStatus.None) revert UnknownClaim(claimId);
        // INVARIANT: only a pending claim can be challenged or finalized.
        if (c.status != ClaimStatus.Pending) revert ClaimNotPending(claimId, c.status);
    }
}
