// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IClaimManager} from "./IClaimManager.sol";
import {IOneStepVerifier} from "./IOneStepVerifier.sol";

/// @title IBisectionGame
/// @notice Claimer-reveals dissection (docs/protocol.md §5): phase T descends the
/// trace tree to the disputed step, phase C its output tensor's chunk tree to one
/// chunk, the element round to one element, and `proveStep` recomputes that
/// element through `IOneStepVerifier`. One transaction per move, chess clocks
/// with an extension, and the outcome reported to `ClaimManager` (which pays).
interface IBisectionGame {
    /// @notice Where a game is.
    /// @dev Trace/Chunk: the claimer reveals children, then the challenger picks one.
    /// Header: the claimer reveals the disputed step's output header (+ first chunk-tree reveal).
    /// Element: the claimer reveals the chunk, then the challenger picks an element.
    /// Step: anyone may `proveStep` (the challenger's clock runs).
    enum Phase {
        None,
        Trace,
        Header,
        Chunk,
        Element,
        Step,
        Resolved
    }

    /// @notice The two sides.
    enum Side {
        Claimer,
        Challenger
    }

    /// @notice Why a game ended.
    enum Reason {
        Proof,
        Timeout,
        InvalidHeader,
        PaddingLeaf,
        HeaderMismatch,
        IllFormedInput
    }

    /// @notice A game.
    /// @param claimId The claim disputed.
    /// @param claimer The claimer.
    /// @param lastMoveAt When the side to move started thinking.
    /// @param log2K Dissection branching exponent.
    /// @param phase Where the game is.
    /// @param turn The side whose clock runs.
    /// @param revealed Trace/Chunk/Element: the claimer has revealed and the challenger must pick.
    /// @param claimerWon Outcome (valid once `phase == Resolved`).
    /// @param challenger The challenger.
    /// @param claimerLeft Seconds left on the claimer's clock at `lastMoveAt`.
    /// @param challengerLeft Seconds left on the challenger's clock at `lastMoveAt`.
    /// @param clockExtension Minimum seconds the side to move has after any move.
    /// @param stepCount Program length.
    /// @param step Disputed step (valid from phase Header).
    /// @param index Index of the current node at `depth` in the current tree; the chunk in phase Element.
    /// @param depth Depth of the current node.
    /// @param treeDepth Depth of the current tree.
    /// @param element Disputed element within the chunk (valid in phase Step).
    /// @param node Value of the current node (the chunk/entry leaf once a leaf is reached).
    /// @param pending While descending: `keccak(children)` of the last reveal, awaiting the pick
    /// (`PENDING_UNSET` before the first reveal, prepaid by the challenge like `header`). From the
    /// Step phase on: the claimer's disputed element (sign-extended int64, or entry leaf), the
    /// "claimed word"; reusing the slot (already non-zero) saves a fresh 20k-gas store per game.
    /// @param header The disputed step's output header as revealed by the claimer; until then
    /// `HEADER_UNSET`, which `open` writes so that the header reveal updates a slot instead of
    /// filling a fresh one (the challenge prepays that slot, ~20k gas).
    struct Game {
        bytes32 claimId;
        address claimer;
        uint40 lastMoveAt;
        uint8 log2K;
        Phase phase;
        Side turn;
        bool revealed;
        bool claimerWon;
        address challenger;
        uint40 claimerLeft;
        uint40 challengerLeft;
        uint64 stepCount;
        uint64 step;
        uint64 index;
        uint8 depth;
        uint8 treeDepth;
        uint8 element;
        uint40 clockExtension;
        bytes32 node;
        bytes32 pending;
        bytes32 header;
    }

    /// @notice Proof that tensor id `t` of the step has the root implied by its `InputTensor`.
    /// @param nameHash For an input-bundle entry: the entry's name hash (unused for a trace leaf).
    /// @param proof Single-leaf proof in the input bundle (entry `t`) or the trace (leaf `t - N_in`).
    struct RootProof {
        bytes32 nameHash;
        bytes32[] proof;
    }

    /// @notice Everything `proveStep` needs.
    /// @param claimRoots The claim's roots (checked against the manager's hash).
    /// @param descriptor The disputed step's descriptor `abi.encode(uint16, uint32[], bytes32, bytes)`.
    /// @param stepProof Its single-leaf proof against the claim's step tree root.
    /// @param bundleChunkRoot Chunk (entry) root of the claim's input bundle.
    /// @param bundleHeader Header of the input bundle (gives `N_in`).
    /// @param roots Per descriptor input, the proof of its tensor root.
    /// @param inputs Per descriptor input (+1 for BUNDLE_GET), its header, chunk root and element range.
    struct StepProof {
        IClaimManager.ClaimRoots claimRoots;
        bytes descriptor;
        bytes32[] stepProof;
        bytes32 bundleChunkRoot;
        bytes32 bundleHeader;
        RootProof[] roots;
        IOneStepVerifier.InputTensor[] inputs;
    }

    /// @notice A game was opened.
    /// @param gameId The game (= the challenge id in `ClaimManager`).
    /// @param claimId The claim.
    /// @param claimer The claimer.
    /// @param challenger The challenger.
    event GameOpened(uint256 indexed gameId, bytes32 indexed claimId, address indexed challenger, address claimer);

    /// @notice The claimer revealed the descendants of the current node.
    /// @param gameId The game.
    /// @param phase Trace or Chunk (Header for the reveal merged with the header).
    /// @param depth Depth of the node revealed under.
    /// @param index Index of that node.
    /// @param children The descendants, left to right.
    event ChildrenRevealed(uint256 indexed gameId, Phase phase, uint8 depth, uint64 index, bytes32[] children);

    /// @notice The challenger picked a child.
    /// @param gameId The game.
    /// @param phase Trace or Chunk.
    /// @param choice The child picked.
    /// @param depth Depth of the new current node.
    /// @param index Index of the new current node.
    /// @param node Its value.
    event ChildPicked(uint256 indexed gameId, Phase phase, uint256 choice, uint8 depth, uint64 index, bytes32 node);

    /// @notice The claimer revealed the disputed step's output header.
    /// @param gameId The game.
    /// @param step The disputed step.
    /// @param chunkRoot The output's chunk root.
    /// @param header The output's header.
    event HeaderRevealed(uint256 indexed gameId, uint64 step, bytes32 chunkRoot, bytes32 header);

    /// @notice The claimer revealed the disputed chunk.
    /// @param gameId The game.
    /// @param chunkIndex The chunk.
    /// @param chunk Its 256 bytes.
    event ChunkRevealed(uint256 indexed gameId, uint64 chunkIndex, bytes chunk);

    /// @notice The challenger picked the disputed element.
    /// @param gameId The game.
    /// @param element Index within the chunk.
    /// @param claimedWord The claimer's value, sign-extended.
    event ElementPicked(uint256 indexed gameId, uint8 element, bytes32 claimedWord);

    /// @notice The one-step proof was evaluated.
    /// @param gameId The game.
    /// @param verdict The verifier's verdict.
    /// @param expected The correct word (for `Value`).
    /// @param claimedWord The claimer's word.
    event StepProven(uint256 indexed gameId, IOneStepVerifier.Verdict verdict, bytes32 expected, bytes32 claimedWord);

    /// @notice A game ended.
    /// @param gameId The game.
    /// @param claimId The claim.
    /// @param claimerWon Whether the claimer won.
    /// @param reason Why.
    event GameResolved(uint256 indexed gameId, bytes32 indexed claimId, bool claimerWon, Reason reason);

    /// @notice A zero address was given where a contract is needed.
    error BisectionGameZeroAddress();
    /// @notice Only `ClaimManager` opens games.
    /// @param caller The caller.
    error NotManager(address caller);
    /// @notice No such game.
    /// @param gameId The id.
    error UnknownGame(uint256 gameId);
    /// @notice The game id is taken.
    /// @param gameId The id.
    error GameExists(uint256 gameId);
    /// @notice The move does not fit the game's phase.
    /// @param gameId The game.
    /// @param phase Its phase.
    error WrongPhase(uint256 gameId, Phase phase);
    /// @notice It is the other side's move (or the claimer must reveal before a pick).
    /// @param gameId The game.
    /// @param turn The side to move.
    /// @param revealed Whether a reveal awaits its pick.
    error OutOfTurn(uint256 gameId, Side turn, bool revealed);
    /// @notice The caller is not the game's claimer.
    /// @param gameId The game.
    /// @param caller The caller.
    error NotClaimer(uint256 gameId, address caller);
    /// @notice The caller is not the game's challenger.
    /// @param gameId The game.
    /// @param caller The caller.
    error NotChallenger(uint256 gameId, address caller);
    /// @notice The mover's clock ran out: the move is late (see `resolveTimeout`).
    /// @param gameId The game.
    /// @param deadline When the mover's clock ran out.
    error ClockExpired(uint256 gameId, uint256 deadline);
    /// @notice The side to move still has time.
    /// @param gameId The game.
    /// @param deadline When its clock runs out.
    error ClockNotExpired(uint256 gameId, uint256 deadline);
    /// @notice A reveal has the wrong number of children.
    /// @param supplied Children supplied.
    /// @param expected Children expected.
    error WrongChildCount(uint256 supplied, uint256 expected);
    /// @notice Revealed children do not fold to the current node.
    /// @param node The current node.
    /// @param folded What the children fold to.
    error ChildrenMismatch(bytes32 node, bytes32 folded);
    /// @notice The children re-supplied with a pick are not the revealed ones.
    /// @param pending Hash stored at the reveal.
    /// @param supplied Hash of the supplied children.
    error PickedChildrenMismatch(bytes32 pending, bytes32 supplied);
    /// @notice The picked child does not exist.
    /// @param choice The pick.
    /// @param count Children revealed.
    error InvalidPick(uint256 choice, uint256 count);
    /// @notice The revealed header and chunk root do not hash to the disputed trace leaf.
    /// @param leaf The trace leaf.
    /// @param computed What the reveal hashes to.
    error HeaderMismatch(bytes32 leaf, bytes32 computed);
    /// @notice The revealed chunk does not hash to the current leaf.
    /// @param leaf The chunk leaf.
    /// @param computed What the chunk hashes to.
    error ChunkMismatch(bytes32 leaf, bytes32 computed);
    /// @notice The step descriptor is not leaf `step` of the claim's program.
    /// @param step The disputed step.
    error InvalidStepProof(uint256 step);
    /// @notice The input bundle header and chunk root do not hash to the claim's input root.
    error InvalidInputBundleProof();
    /// @notice Input `input`'s tensor root is not the one the claim commits to for its id.
    /// @param input Position of the input.
    /// @param tensorId Its tensor id.
    error InvalidInputRootProof(uint256 input, uint256 tensorId);
    /// @notice Wrong number of root proofs or input tensors.
    /// @param supplied Supplied.
    /// @param expected Expected.
    error InputCountMismatch(uint256 supplied, uint256 expected);
    /// @notice The claim of this game is no longer pending (another challenge decided it).
    /// @param gameId The game.
    error GameClosed(uint256 gameId);

    /// @notice Opens game `gameId`; `ClaimManager` only.
    /// @param gameId The game (= challenge id).
    /// @param claimId The claim.
    /// @param claimer The claimer.
    /// @param challenger The challenger.
    /// @param traceRoot The claim's trace root.
    /// @param stepCount The program length.
    /// @param log2K Dissection branching exponent.
    /// @param clockDuration Seconds per side.
    /// @param clockExtension Minimum seconds after a move.
    function open(
        uint256 gameId,
        bytes32 claimId,
        address claimer,
        address challenger,
        bytes32 traceRoot,
        uint64 stepCount,
        uint8 log2K,
        uint64 clockDuration,
        uint64 clockExtension
    ) external;

    /// @notice Claimer: reveals the `2^min(log2K, treeDepth - depth)` descendants of the current node (phase Trace or Chunk).
    /// @param gameId The game.
    /// @param children The descendants, left to right.
    function reveal(uint256 gameId, bytes32[] calldata children) external;

    /// @notice Challenger: picks child `choice` of the last reveal (the first one that differs from its trace).
    /// @param gameId The game.
    /// @param children The revealed children, re-supplied.
    /// @param choice The child.
    function pick(uint256 gameId, bytes32[] calldata children, uint256 choice) external;

    /// @notice Claimer: reveals the disputed step's output (chunk root, header) with the first chunk-tree reveal.
    /// @dev With a one-leaf data tree, `children` is empty and `chunk` is the only chunk (ignored for a bundle).
    /// @param gameId The game.
    /// @param chunkRoot The output's chunk root.
    /// @param header The output's header.
    /// @param children The first reveal under `chunkRoot` (empty for a one-leaf tree).
    /// @param chunk The single chunk of a one-leaf numeric tensor (empty otherwise).
    function revealHeader(
        uint256 gameId,
        bytes32 chunkRoot,
        bytes32 header,
        bytes32[] calldata children,
        bytes calldata chunk
    ) external;

    /// @notice Claimer: reveals the 256 bytes of the disputed chunk (phase Element).
    /// @param gameId The game.
    /// @param chunk The chunk.
    function revealChunk(uint256 gameId, bytes calldata chunk) external;

    /// @notice Challenger: picks the first element of the chunk that differs (phase Element).
    /// @param gameId The game.
    /// @param chunk The revealed chunk, re-supplied.
    /// @param element Index 0..31.
    function pickElement(uint256 gameId, bytes calldata chunk, uint8 element) external;

    /// @notice Anyone: the one-step proof of the disputed element (phase Step); decides the game.
    /// @param gameId The game.
    /// @param proof See `StepProof`.
    function proveStep(uint256 gameId, StepProof calldata proof) external;

    /// @notice Anyone: the side to move lost on time.
    /// @param gameId The game.
    function resolveTimeout(uint256 gameId) external;

    /// @notice The game `gameId` (reverts `UnknownGame`).
    /// @param gameId The game.
    /// @return The game.
    function getGame(uint256 gameId) external view returns (Game memory);

    /// @notice When the side to move runs out of time.
    /// @param gameId The game.
    /// @return The deadline (block timestamp).
    function deadlineOf(uint256 gameId) external view returns (uint256);

    /// @notice The claim manager.
    /// @return Its address.
    function MANAGER() external view returns (address);

    /// @notice The one-step verifier.
    /// @return Its address.
    function VERIFIER() external view returns (address);
}
