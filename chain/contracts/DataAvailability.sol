// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IClaimManager} from "./interfaces/IClaimManager.sol";
import {IDataAvailability} from "./interfaces/IDataAvailability.sol";
import {LibMerkle} from "./lib/LibMerkle.sol";

/// @title DataAvailability
/// @notice Bonded data-availability challenges for one chunk of a tensor a claim
/// commits to (docs/protocol.md §7; anchor: Optimism's DataAvailabilityChallenge).
/// @dev `ClaimManager` holds the bond and opens challenges here after checking
/// the audience and the window; the answer is the chunk in calldata (and in the
/// `DataPosted` event), so what the claimer's blob server withheld becomes
/// available to the audience through the chain, or the claim is rejected.
contract DataAvailability is IDataAvailability {
    /// @inheritdoc IDataAvailability
    address public immutable MANAGER;

    /// @notice Longest blob-server URL accepted by `publishSource`.
    uint256 public constant MAX_SOURCE_BYTES = 256;

    /// @dev challengeId => data challenge.
    mapping(uint256 challengeId => DataChallenge) private _challenges;
    /// @dev daPointer => blob-server URL (pointer = keccak256 of the URL's bytes).
    mapping(bytes32 pointer => string) private _sources;

    /// @param manager ClaimManager.
    constructor(address manager) {
        if (manager == address(0)) revert DataAvailabilityZeroAddress();
        MANAGER = manager;
    }

    /// @inheritdoc IDataAvailability
    function open(
        uint256 challengeId,
        bytes32 claimId,
        ClaimData calldata claim,
        bytes32 tensorRoot,
        uint256 chunkIndex,
        bytes calldata commitment,
        uint64 responseWindow
    ) external {
        // INVARIANT: data challenges exist only for bonds the manager holds.
        if (msg.sender != MANAGER) revert NotManager(msg.sender);
        if (_challenges[challengeId].status != Status.None) revert DataChallengeExists(challengeId);
        TensorCommitment memory c = abi.decode(commitment, (TensorCommitment));
        // INVARIANT: only tensors the claim commits to can be challenged.
        if (!_commits(claim, tensorRoot, c)) revert InvalidCommitmentProof(tensorRoot);
        uint40 deadline = uint40(block.timestamp + responseWindow);
        _challenges[challengeId] = DataChallenge({
            claimId: claimId,
            tensorRoot: tensorRoot,
            chunkIndex: uint64(chunkIndex),
            deadline: deadline,
            status: Status.Open
        });
        emit DataChallenged(challengeId, claimId, tensorRoot, uint64(chunkIndex), deadline);
    }

    /// @inheritdoc IDataAvailability
    function respond(uint256 challengeId, bytes32 chunkRoot, bytes32 header, bytes calldata data, bytes32[] calldata proof)
        external
    {
        DataChallenge storage d = _open(challengeId);
        // INVARIANT: an answer counts only before the deadline.
        if (block.timestamp > d.deadline) revert ResponseWindowClosed(challengeId, d.deadline);
        // INVARIANT: the chunk belongs to the challenged tensor, at the challenged index.
        if (LibMerkle.tensorRoot(chunkRoot, header) != d.tensorRoot) revert TensorRootMismatch(d.tensorRoot);
        uint256 depth = LibMerkle.treeDepth(LibMerkle.numLeavesOf(header));
        if (d.chunkIndex >= (uint256(1) << depth)) {
            // SAFETY: the header shows the index lies outside the tensor: a bogus challenge is answered by it.
            if (data.length != 0 || proof.length != 0) revert ChunkOutOfRange(d.chunkIndex, uint256(1) << depth);
        } else {
            _checkChunk(d.chunkIndex, chunkRoot, header, data, proof, depth);
        }
        d.status = Status.Answered;
        emit DataPosted(challengeId, d.claimId, d.tensorRoot, d.chunkIndex, header, data);
        IClaimManager(MANAGER).onDataResolved(challengeId, true);
    }

    /// @dev The posted chunk (or bundle entry) is leaf `chunkIndex` of `chunkRoot`.
    function _checkChunk(
        uint256 chunkIndex,
        bytes32 chunkRoot,
        bytes32 header,
        bytes calldata data,
        bytes32[] calldata proof,
        uint256 depth
    ) private pure {
        bytes32 leaf;
        if (LibMerkle.domainOf(header) == LibMerkle.DOMAIN_BUNDLE) {
            if (data.length != 64) revert InvalidChunkProof(chunkRoot);
            leaf = LibMerkle.entryLeaf(bytes32(data[0:32]), bytes32(data[32:64]));
        } else {
            leaf = LibMerkle.chunkLeaf(data);
        }
        // INVARIANT: the chunk is the challenged leaf of the tensor's data tree.
        if (proof.length != depth || LibMerkle.rootFromProof(leaf, chunkIndex, proof) != chunkRoot) {
            revert InvalidChunkProof(chunkRoot);
        }
    }

    /// @inheritdoc IDataAvailability
    function expire(uint256 challengeId) external {
        DataChallenge storage d = _open(challengeId);
        // INVARIANT: the claimer had the whole response window.
        if (block.timestamp <= d.deadline) revert ResponseWindowOpen(challengeId, d.deadline);
        d.status = Status.Expired;
        emit DataChallengeExpired(challengeId, d.claimId);
        IClaimManager(MANAGER).onDataResolved(challengeId, false);
    }

    /// @inheritdoc IDataAvailability
    function getDataChallenge(uint256 challengeId) external view returns (DataChallenge memory) {
        DataChallenge storage d = _challenges[challengeId];
        if (d.status == Status.None) revert UnknownDataChallenge(challengeId);
        return d;
    }

    /// @inheritdoc IDataAvailability
    function publishSource(string calldata url) external returns (bytes32 pointer) {
        bytes calldata raw = bytes(url);
        // INVARIANT: only bounded http(s) URLs, so a watcher never follows another scheme.
        if (raw.length == 0 || raw.length > MAX_SOURCE_BYTES || !_isHttp(raw)) revert InvalidSource(raw.length);
        pointer = keccak256(raw);
        if (bytes(_sources[pointer]).length != 0) return pointer;
        _sources[pointer] = url;
        emit SourcePublished(pointer, msg.sender, url);
    }

    /// @inheritdoc IDataAvailability
    function sourceOf(bytes32 pointer) external view returns (string memory url) {
        url = _sources[pointer];
        if (bytes(url).length == 0) revert UnknownSource(pointer);
    }

    function _isHttp(bytes calldata raw) private pure returns (bool) {
        if (raw.length > 7 && bytes7(raw[0:7]) == "http://") return true;
        return raw.length > 8 && bytes8(raw[0:8]) == "https://";
    }

    function _open(uint256 challengeId) private view returns (DataChallenge storage d) {
        d = _challenges[challengeId];
        if (d.status == Status.None) revert UnknownDataChallenge(challengeId);
        if (d.status != Status.Open) revert DataChallengeNotOpen(challengeId, d.status);
    }

    /// @dev Whether the claim commits to `tensorRoot`: its input bundle, an entry of it, or a trace leaf.
    function _commits(ClaimData calldata claim, bytes32 tensorRoot, TensorCommitment memory c)
        private
        pure
        returns (bool)
    {
        if (c.kind == CommitmentKind.InputBundle) return tensorRoot == claim.inputRoot;
        if (c.kind == CommitmentKind.InputEntry) {
            if (LibMerkle.tensorRoot(c.bundleChunkRoot, c.bundleHeader) != claim.inputRoot) return false;
            uint256 n = LibMerkle.numelOf(c.bundleHeader);
            if (c.index >= n || c.proof.length != LibMerkle.treeDepth(n)) return false;
            return LibMerkle.rootFromProof(LibMerkle.entryLeaf(c.nameHash, tensorRoot), c.index, c.proof)
                == c.bundleChunkRoot;
        }
        if (c.index >= claim.stepCount || c.proof.length != LibMerkle.treeDepth(claim.stepCount)) return false;
        return LibMerkle.rootFromProof(LibMerkle.traceLeaf(c.index, tensorRoot), c.index, c.proof) == claim.traceRoot;
    }
}
