// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IDataAvailability
/// @notice Scoped data-availability challenges (docs/protocol.md §7, anchor:
/// Optimism's DataAvailabilityChallenge). An audience member who cannot fetch a
/// chunk of a tensor the claim commits to bonds `DA_BOND` (through
/// `ClaimManager.challengeData`); the claimer must post the chunk in calldata
/// with its proof before the deadline, or anyone may `expire` the challenge,
/// which rejects the claim.
interface IDataAvailability {
    /// @notice How the claim commits to the challenged tensor.
    enum CommitmentKind {
        InputBundle,
        InputEntry,
        TraceLeaf
    }

    /// @notice Where a data challenge stands.
    enum Status {
        None,
        Open,
        Answered,
        Expired
    }

    /// @notice Proof that a claim commits to a tensor root.
    /// @param kind InputBundle: the tensor is the input bundle itself. InputEntry: entry
    /// `index` of the input bundle. TraceLeaf: the output of step `index`.
    /// @param index Entry or step index.
    /// @param nameHash InputEntry: the entry's name hash.
    /// @param bundleChunkRoot InputEntry: the input bundle's entry root.
    /// @param bundleHeader InputEntry: the input bundle's header.
    /// @param proof InputEntry / TraceLeaf: single-leaf proof.
    struct TensorCommitment {
        CommitmentKind kind;
        uint256 index;
        bytes32 nameHash;
        bytes32 bundleChunkRoot;
        bytes32 bundleHeader;
        bytes32[] proof;
    }

    /// @notice What the manager tells about the claim when opening a challenge (roots checked there).
    /// @param inputRoot The claim's input bundle root.
    /// @param traceRoot The claim's trace root.
    /// @param stepCount The claim's program length.
    struct ClaimData {
        bytes32 inputRoot;
        bytes32 traceRoot;
        uint64 stepCount;
    }

    /// @notice A data challenge.
    /// @param claimId The claim.
    /// @param tensorRoot The tensor.
    /// @param chunkIndex The chunk (entry for a bundle).
    /// @param deadline Last second to answer.
    /// @param status Where it stands.
    struct DataChallenge {
        bytes32 claimId;
        bytes32 tensorRoot;
        uint64 chunkIndex;
        uint40 deadline;
        Status status;
    }

    /// @notice A data challenge was opened.
    /// @param challengeId Its id (the challenge id in `ClaimManager`).
    /// @param claimId The claim.
    /// @param tensorRoot The tensor.
    /// @param chunkIndex The chunk.
    /// @param deadline Last second to answer.
    event DataChallenged(
        uint256 indexed challengeId, bytes32 indexed claimId, bytes32 indexed tensorRoot, uint64 chunkIndex, uint40 deadline
    );

    /// @notice The chunk was posted: it is now public to the audience through the chain.
    /// @param challengeId The challenge.
    /// @param claimId The claim.
    /// @param tensorRoot The tensor.
    /// @param chunkIndex The chunk.
    /// @param header The tensor's header.
    /// @param data The chunk's bytes (a 64-byte entry for a bundle).
    event DataPosted(
        uint256 indexed challengeId, bytes32 indexed claimId, bytes32 indexed tensorRoot, uint64 chunkIndex, bytes32 header, bytes data
    );

    /// @notice The deadline passed without the chunk.
    /// @param challengeId The challenge.
    /// @param claimId The claim.
    event DataChallengeExpired(uint256 indexed challengeId, bytes32 indexed claimId);

    /// @notice A blob-server URL was published: claims whose `daPointer` is `pointer` are served there.
    /// @param pointer `keccak256(bytes(url))`, the value a claim puts in `daPointer`.
    /// @param publisher Who published it first (anyone may: the pointer binds the exact URL).
    /// @param url The URL.
    event SourcePublished(bytes32 indexed pointer, address indexed publisher, string url);

    /// @notice A zero address was given where a contract is needed.
    error DataAvailabilityZeroAddress();
    /// @notice A URL that is empty, longer than `MAX_SOURCE_BYTES`, or not http(s).
    /// @param length Its length in bytes.
    error InvalidSource(uint256 length);
    /// @notice No URL was published under this pointer.
    /// @param pointer The pointer.
    error UnknownSource(bytes32 pointer);
    /// @notice Only `ClaimManager` opens data challenges.
    /// @param caller The caller.
    error NotManager(address caller);
    /// @notice No such data challenge.
    /// @param challengeId The id.
    error UnknownDataChallenge(uint256 challengeId);
    /// @notice The id is taken.
    /// @param challengeId The id.
    error DataChallengeExists(uint256 challengeId);
    /// @notice The challenge is not open.
    /// @param challengeId The challenge.
    /// @param status Its status.
    error DataChallengeNotOpen(uint256 challengeId, Status status);
    /// @notice The claim does not commit to the tensor as stated.
    /// @param tensorRoot The tensor.
    error InvalidCommitmentProof(bytes32 tensorRoot);
    /// @notice The chunk index is outside the tensor's data tree.
    /// @param chunkIndex Supplied.
    /// @param leaves Leaf positions of the tree.
    error ChunkOutOfRange(uint256 chunkIndex, uint256 leaves);
    /// @notice The posted chunk root and header do not hash to the tensor root.
    /// @param tensorRoot The tensor.
    error TensorRootMismatch(bytes32 tensorRoot);
    /// @notice The posted chunk and proof do not fold to the chunk root.
    /// @param chunkRoot The chunk root.
    error InvalidChunkProof(bytes32 chunkRoot);
    /// @notice The response comes after the deadline.
    /// @param challengeId The challenge.
    /// @param deadline The deadline.
    error ResponseWindowClosed(uint256 challengeId, uint256 deadline);
    /// @notice The deadline has not passed.
    /// @param challengeId The challenge.
    /// @param deadline The deadline.
    error ResponseWindowOpen(uint256 challengeId, uint256 deadline);

    /// @notice Opens data challenge `challengeId`; `ClaimManager` only (it holds the bond).
    /// @param challengeId The id.
    /// @param claimId The claim.
    /// @param claim The claim's roots and length.
    /// @param tensorRoot The tensor.
    /// @param chunkIndex The chunk.
    /// @param commitment ABI-encoded `TensorCommitment`.
    /// @param responseWindow Seconds the claimer has.
    function open(
        uint256 challengeId,
        bytes32 claimId,
        ClaimData calldata claim,
        bytes32 tensorRoot,
        uint256 chunkIndex,
        bytes calldata commitment,
        uint64 responseWindow
    ) external;

    /// @notice Posts the challenged chunk in calldata with its proof (anyone; the bond goes to the claimer).
    /// @param challengeId The challenge.
    /// @param chunkRoot The tensor's chunk root.
    /// @param header The tensor's header.
    /// @param data The chunk's 256 bytes (a 64-byte `nameHash ‖ tensorRoot` entry for a bundle).
    /// @param proof Single-leaf proof of the chunk against `chunkRoot`.
    function respond(uint256 challengeId, bytes32 chunkRoot, bytes32 header, bytes calldata data, bytes32[] calldata proof)
        external;

    /// @notice After the deadline without an answer: the claim is rejected (anyone may call).
    /// @param challengeId The challenge.
    function expire(uint256 challengeId) external;

    /// @notice The data challenge `challengeId` (reverts `UnknownDataChallenge`).
    /// @param challengeId The challenge.
    /// @return The challenge.
    function getDataChallenge(uint256 challengeId) external view returns (DataChallenge memory);

    /// @notice Publishes a blob-server URL so that `daPointer = keccak256(bytes(url))` resolves to it
    /// (docs/protocol.md §7.1); idempotent, and the pointer binds the URL, so no one can redirect it.
    /// @param url An `http://` or `https://` URL of at most `MAX_SOURCE_BYTES` bytes.
    /// @return pointer `keccak256(bytes(url))`.
    function publishSource(string calldata url) external returns (bytes32 pointer);

    /// @notice The URL published under `pointer` (reverts `UnknownSource`).
    /// @param pointer A claim's `daPointer`.
    /// @return The blob-server URL.
    function sourceOf(bytes32 pointer) external view returns (string memory);

    /// @notice The claim manager.
    /// @return Its address.
    function MANAGER() external view returns (address);
}
