// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IBisectionGame} from "./interfaces/IBisectionGame.sol";
import {IClaimManager} from "./interfaces/IClaimManager.sol";
import {IOneStepVerifier} from "./interfaces/IOneStepVerifier.sol";
import {LibMerkle} from "./lib/LibMerkle.sol";

/// @title BisectionGame
/// @notice Claimer-reveals dissection games over a claim's trace, then over the
/// disputed step's output tensor, ending in a one-step proof (docs/protocol.md §5).
/// @dev Each reveal stores only `keccak(children)`; the pick re-supplies the
/// children in calldata. Money and claim status live in `ClaimManager`; this
/// contract reports each outcome there exactly once. Chess clocks: time runs on
/// the side to move; after every move the side now to move has at least
/// `clockExtension` seconds (a last-second move cannot steal the game).
contract BisectionGame is IBisectionGame {
    /// @notice Op id of BUNDLE_GET (its entry tensor is passed as an extra input).
    uint16 internal constant OP_BUNDLE_GET = 32;
    /// @notice `Game.header` before the header reveal: not a valid header (bytes 27..31 are not zero),
    /// so it never equals a revealed one; non-zero, so the reveal updates the slot instead of creating it.
    bytes32 public constant HEADER_UNSET = bytes32(uint256(1));
    /// @notice `Game.pending` before the first reveal: no `keccak(children)` (a preimage of 1 is unknown);
    /// non-zero, so the claimer's first reveal (the largest move at k = 16) updates the slot instead of creating it.
    bytes32 public constant PENDING_UNSET = bytes32(uint256(1));

    /// @inheritdoc IBisectionGame
    address public immutable MANAGER;
    /// @inheritdoc IBisectionGame
    address public immutable VERIFIER;

    /// @dev gameId (= ClaimManager challenge id) => game.
    mapping(uint256 gameId => Game) private _games;

    /// @param manager ClaimManager.
    /// @param verifier OneStepVerifier.
    constructor(address manager, address verifier) {
        if (manager == address(0) || verifier == address(0)) revert BisectionGameZeroAddress();
        MANAGER = manager;
        VERIFIER = verifier;
    }

    /// @inheritdoc IBisectionGame
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
    ) external {
        // INVARIANT: games exist only for bonded challenges.
        if (msg.sender != MANAGER) revert NotManager(msg.sender);
        Game storage g = _games[gameId];
        if (g.phase != Phase.None) revert GameExists(gameId);
        g.claimId = claimId;
        g.claimer = claimer;
        g.challenger = challenger;
        g.log2K = log2K;
        g.stepCount = stepCount;
        g.claimerLeft = uint40(clockDuration);
        g.challengerLeft = uint40(clockDuration);
        g.clockExtension = uint40(clockExtension);
        g.lastMoveAt = uint40(block.timestamp);
        g.node = traceRoot;
        // SAFETY: the challenge pays for the header slot now; the claimer's header reveal only updates it.
        g.header = HEADER_UNSET;
        g.pending = PENDING_UNSET; // likewise for the first reveal's children hash
        uint8 depth = uint8(LibMerkle.treeDepth(stepCount));
        g.treeDepth = depth;
        // A one-step program starts at its only leaf: the claimer reveals the header.
        g.phase = depth == 0 ? Phase.Header : Phase.Trace;
        g.turn = Side.Claimer;
        emit GameOpened(gameId, claimId, challenger, claimer);
    }

    // ------------------------------------------------------------------ moves

    /// @inheritdoc IBisectionGame
    function reveal(uint256 gameId, bytes32[] calldata children) external {
        Game storage g = _live(gameId);
        // INVARIANT: reveals happen while descending a tree, before the pick.
        if (g.phase != Phase.Trace && g.phase != Phase.Chunk) revert WrongPhase(gameId, g.phase);
        if (g.revealed) revert OutOfTurn(gameId, g.turn, g.revealed);
        _startMove(g, gameId, Side.Claimer);
        _revealChildren(g, gameId, children);
        _handOver(g, Side.Challenger);
    }

    /// @inheritdoc IBisectionGame
    function pick(uint256 gameId, bytes32[] calldata children, uint256 choice) external {
        Game storage g = _live(gameId);
        Phase phase = g.phase;
        if (phase != Phase.Trace && phase != Phase.Chunk) revert WrongPhase(gameId, phase);
        // INVARIANT: a pick answers a reveal.
        if (!g.revealed) revert OutOfTurn(gameId, g.turn, g.revealed);
        _startMove(g, gameId, Side.Challenger);
        bytes32 supplied = keccak256(abi.encodePacked(children));
        // INVARIANT: the challenger picks among exactly the children the claimer revealed.
        if (supplied != g.pending) revert PickedChildrenMismatch(g.pending, supplied);
        if (choice >= children.length) revert InvalidPick(choice, children.length);
        uint256 m = _revealWidth(g);
        g.node = children[choice];
        g.depth += uint8(m);
        g.index = uint64((uint256(g.index) << m) | choice);
        g.revealed = false;
        emit ChildPicked(gameId, phase, choice, g.depth, g.index, g.node);
        if (g.depth < g.treeDepth) {
            _handOver(g, Side.Claimer);
        } else if (phase == Phase.Trace) {
            g.step = g.index;
            if (g.index >= g.stepCount) {
                // §6: a padding trace leaf is 0x00…00; nothing else may sit there.
                _resolve(g, gameId, g.node == bytes32(0), Reason.PaddingLeaf);
                return;
            }
            g.phase = Phase.Header;
            _handOver(g, Side.Claimer);
        } else {
            _enterLeaf(g);
        }
    }

    /// @inheritdoc IBisectionGame
    function revealHeader(
        uint256 gameId,
        bytes32 chunkRoot,
        bytes32 header,
        bytes32[] calldata children,
        bytes calldata chunk
    ) external {
        Game storage g = _live(gameId);
        if (g.phase != Phase.Header) revert WrongPhase(gameId, g.phase);
        _startMove(g, gameId, Side.Claimer);
        bytes32 computed = LibMerkle.traceLeaf(g.step, LibMerkle.tensorRoot(chunkRoot, header));
        // INVARIANT: the header and chunk root are the preimage of the disputed trace leaf.
        if (computed != g.node) revert HeaderMismatch(g.node, computed);
        emit HeaderRevealed(gameId, g.step, chunkRoot, header);
        // INVARIANT: an invalid header has no correct value; the claimer loses at once.
        if (!LibMerkle.isValidHeader(header)) {
            _resolve(g, gameId, false, Reason.InvalidHeader);
            return;
        }
        g.header = header;
        g.node = chunkRoot;
        g.depth = 0;
        g.index = 0;
        g.treeDepth = uint8(LibMerkle.treeDepth(LibMerkle.numLeavesOf(header)));
        g.phase = Phase.Chunk;
        if (g.treeDepth > 0) {
            _revealChildren(g, gameId, children);
            _handOver(g, Side.Challenger);
            return;
        }
        if (children.length != 0) revert WrongChildCount(children.length, 0);
        if (LibMerkle.domainOf(header) == LibMerkle.DOMAIN_BUNDLE) {
            _enterLeaf(g);
            return;
        }
        _acceptChunk(g, gameId, chunk);
    }

    /// @inheritdoc IBisectionGame
    function revealChunk(uint256 gameId, bytes calldata chunk) external {
        Game storage g = _live(gameId);
        if (g.phase != Phase.Element) revert WrongPhase(gameId, g.phase);
        if (g.revealed) revert OutOfTurn(gameId, g.turn, g.revealed);
        _startMove(g, gameId, Side.Claimer);
        _acceptChunk(g, gameId, chunk);
    }

    /// @inheritdoc IBisectionGame
    function pickElement(uint256 gameId, bytes calldata chunk, uint8 element) external {
        Game storage g = _live(gameId);
        if (g.phase != Phase.Element) revert WrongPhase(gameId, g.phase);
        if (!g.revealed) revert OutOfTurn(gameId, g.turn, g.revealed);
        _startMove(g, gameId, Side.Challenger);
        bytes32 leaf = LibMerkle.chunkLeaf(chunk);
        // INVARIANT: the element is read from the revealed chunk.
        if (leaf != g.node) revert ChunkMismatch(g.node, leaf);
        if (element >= LibMerkle.CHUNK_ELEMS) revert InvalidPick(element, LibMerkle.CHUNK_ELEMS);
        g.element = element;
        bytes32 claimed = bytes32(uint256(LibMerkle.elementAt(chunk, element)));
        // The pick of the chunk is over: `pending` holds the claimed word from here on (see `Game`).
        g.pending = claimed;
        g.phase = Phase.Step;
        emit ElementPicked(gameId, element, claimed);
        _handOver(g, Side.Challenger);
    }

    /// @inheritdoc IBisectionGame
    function proveStep(uint256 gameId, StepProof calldata proof) external {
        Game storage g = _live(gameId);
        if (g.phase != Phase.Step) revert WrongPhase(gameId, g.phase);
        _checkClock(g, gameId);
        // INVARIANT: the proof is judged against the roots the claim was posted with.
        IClaimManager(MANAGER).checkRoots(g.claimId, proof.claimRoots);
        (uint16 op, uint32[] memory ids, bytes32 outHeader, bytes memory params) = _checkedStep(g, proof);
        // INVARIANT: the revealed output header must be the one the step declares.
        if (g.header != outHeader) {
            _resolve(g, gameId, false, Reason.HeaderMismatch);
            return;
        }
        if (!_checkInputs(g, proof, ids)) {
            // The step reads a tensor that does not exist before it: ill formed.
            _resolve(g, gameId, false, Reason.IllFormedInput);
            return;
        }
        uint256 element = LibMerkle.domainOf(g.header) == LibMerkle.DOMAIN_BUNDLE
            ? g.index
            : uint256(g.index) * LibMerkle.CHUNK_ELEMS + g.element;
        (IOneStepVerifier.Verdict verdict, bytes32 expected) =
            IOneStepVerifier(VERIFIER).evaluate(op, params, outHeader, proof.inputs, element);
        bool claimerWon = verdict == IOneStepVerifier.Verdict.AnyValue
            || (verdict == IOneStepVerifier.Verdict.Value && expected == g.pending);
        emit StepProven(gameId, verdict, expected, g.pending);
        _resolve(g, gameId, claimerWon, Reason.Proof);
    }

    /// @inheritdoc IBisectionGame
    function resolveTimeout(uint256 gameId) external {
        Game storage g = _existing(gameId);
        if (g.phase == Phase.Resolved) revert WrongPhase(gameId, g.phase);
        uint256 deadline = _deadline(g);
        // INVARIANT: only a side whose clock has run out loses on time.
        if (block.timestamp < deadline) revert ClockNotExpired(gameId, deadline);
        _resolve(g, gameId, g.turn == Side.Challenger, Reason.Timeout);
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IBisectionGame
    function getGame(uint256 gameId) external view returns (Game memory) {
        return _existing(gameId);
    }

    /// @inheritdoc IBisectionGame
    function deadlineOf(uint256 gameId) external view returns (uint256) {
        return _deadline(_existing(gameId));
    }

    // ------------------------------------------------------------------ internals

    function _existing(uint256 gameId) private view returns (Game storage g) {
        g = _games[gameId];
        if (g.phase == Phase.None) revert UnknownGame(gameId);
    }

    /// @dev A game whose claim another challenge already decided takes no more moves.
    function _live(uint256 gameId) private view returns (Game storage g) {
        g = _existing(gameId);
        if (g.phase == Phase.Resolved) revert WrongPhase(gameId, g.phase);
        // INVARIANT: moves only count while the claim is undecided.
        if (IClaimManager(MANAGER).claimStatus(g.claimId) != IClaimManager.ClaimStatus.Pending) revert GameClosed(gameId);
    }

    /// @dev Checks the mover, its turn and its clock, and charges it the time it took.
    function _startMove(Game storage g, uint256 gameId, Side mover) private {
        // INVARIANT: only the side whose clock runs may move.
        if (g.turn != mover) revert OutOfTurn(gameId, g.turn, g.revealed);
        if (mover == Side.Claimer) {
            if (msg.sender != g.claimer) revert NotClaimer(gameId, msg.sender);
        } else if (msg.sender != g.challenger) {
            revert NotChallenger(gameId, msg.sender);
        }
        uint256 elapsed = _checkClock(g, gameId);
        if (mover == Side.Claimer) g.claimerLeft -= uint40(elapsed);
        else g.challengerLeft -= uint40(elapsed);
    }

    /// @dev Seconds the side to move has used; reverts if its clock has run out.
    function _checkClock(Game storage g, uint256 gameId) private view returns (uint256 elapsed) {
        elapsed = block.timestamp - g.lastMoveAt;
        uint256 left = g.turn == Side.Claimer ? g.claimerLeft : g.challengerLeft;
        // INVARIANT: a move after the mover's clock ran out is late.
        if (elapsed >= left) revert ClockExpired(gameId, uint256(g.lastMoveAt) + left);
    }

    /// @dev Gives the move to `next` and tops its clock up to the extension.
    function _handOver(Game storage g, Side next) private {
        g.turn = next;
        uint40 ext = g.clockExtension;
        if (next == Side.Claimer) {
            if (g.claimerLeft < ext) g.claimerLeft = ext;
        } else if (g.challengerLeft < ext) {
            g.challengerLeft = ext;
        }
        g.lastMoveAt = uint40(block.timestamp);
    }

    function _deadline(Game storage g) private view returns (uint256) {
        return uint256(g.lastMoveAt) + (g.turn == Side.Claimer ? g.claimerLeft : g.challengerLeft);
    }

    /// @dev Children per reveal: 2^min(log2K, levels left).
    function _revealWidth(Game storage g) private view returns (uint256 m) {
        m = g.treeDepth - g.depth;
        if (m > g.log2K) m = g.log2K;
    }

    function _revealChildren(Game storage g, uint256 gameId, bytes32[] calldata children) private {
        uint256 count = 1 << _revealWidth(g);
        // INVARIANT: a reveal shows one full level of the subtree, 2^m' children.
        if (children.length != count) revert WrongChildCount(children.length, count);
        bytes32 folded = LibMerkle.foldChildren(children);
        // INVARIANT: the children fold to the node they are revealed under.
        if (folded != g.node) revert ChildrenMismatch(g.node, folded);
        g.pending = keccak256(abi.encodePacked(children));
        g.revealed = true;
        emit ChildrenRevealed(gameId, g.phase, g.depth, g.index, children);
    }

    /// @dev A chunk-tree leaf was reached: a bundle entry is the disputed element, a chunk needs its bytes.
    function _enterLeaf(Game storage g) private {
        if (LibMerkle.domainOf(g.header) == LibMerkle.DOMAIN_BUNDLE) {
            g.pending = g.node; // the claimed word (see `Game.pending`)
            g.phase = Phase.Step;
            _handOver(g, Side.Challenger);
        } else {
            g.phase = Phase.Element;
            _handOver(g, Side.Claimer);
        }
    }

    function _acceptChunk(Game storage g, uint256 gameId, bytes calldata chunk) private {
        bytes32 leaf = LibMerkle.chunkLeaf(chunk);
        // INVARIANT: the revealed chunk is the disputed leaf's preimage.
        if (leaf != g.node) revert ChunkMismatch(g.node, leaf);
        g.phase = Phase.Element;
        g.revealed = true;
        emit ChunkRevealed(gameId, g.index, chunk);
        _handOver(g, Side.Challenger);
    }

    /// @dev The descriptor is leaf `step` of the claim's program; returns its decoded fields.
    function _checkedStep(Game storage g, StepProof calldata proof)
        private
        view
        returns (uint16 op, uint32[] memory ids, bytes32 outHeader, bytes memory params)
    {
        uint256 step = g.step;
        bytes32 leaf = LibMerkle.stepLeaf(step, proof.descriptor);
        // INVARIANT: the op comes from the claim's programRoot.
        if (
            proof.stepProof.length != LibMerkle.treeDepth(g.stepCount)
                || LibMerkle.rootFromProof(leaf, step, proof.stepProof) != proof.claimRoots.stepTreeRoot
        ) revert InvalidStepProof(step);
        (op, ids, outHeader, params) = abi.decode(proof.descriptor, (uint16, uint32[], bytes32, bytes));
    }

    /// @dev Every input tensor root is the claim's input-bundle entry or an earlier trace leaf.
    /// Returns false when an input id names a tensor that does not exist before the step.
    function _checkInputs(Game storage g, StepProof calldata proof, uint32[] memory ids)
        private
        view
        returns (bool)
    {
        uint256 expected = ids.length + (_opOf(proof.descriptor) == OP_BUNDLE_GET ? 1 : 0);
        if (proof.roots.length != ids.length) revert InputCountMismatch(proof.roots.length, ids.length);
        if (proof.inputs.length != expected) revert InputCountMismatch(proof.inputs.length, expected);
        // INVARIANT: the input bundle is the one the claim names.
        if (LibMerkle.tensorRoot(proof.bundleChunkRoot, proof.bundleHeader) != proof.claimRoots.inputRoot) {
            revert InvalidInputBundleProof();
        }
        uint256 nIn = LibMerkle.numelOf(proof.bundleHeader);
        for (uint256 j; j < ids.length; ++j) {
            uint256 t = ids[j];
            if (t >= nIn && t - nIn >= g.step) return false;
            bytes32 root = LibMerkle.tensorRoot(proof.inputs[j].chunkRoot, proof.inputs[j].header);
            bytes32[] calldata path = proof.roots[j].proof;
            bool ok;
            if (t < nIn) {
                bytes32 leaf = LibMerkle.entryLeaf(proof.roots[j].nameHash, root);
                ok = path.length == LibMerkle.treeDepth(nIn) && LibMerkle.rootFromProof(leaf, t, path) == proof.bundleChunkRoot;
            } else {
                bytes32 leaf = LibMerkle.traceLeaf(t - nIn, root);
                ok = path.length == LibMerkle.treeDepth(g.stepCount)
                    && LibMerkle.rootFromProof(leaf, t - nIn, path) == proof.claimRoots.traceRoot;
            }
            // INVARIANT: each input root is the one the claimer committed to for that id.
            if (!ok) revert InvalidInputRootProof(j, t);
        }
        return true;
    }

    function _opOf(bytes calldata descriptor) private pure returns (uint16) {
        return uint16(uint256(bytes32(descriptor[0:32])));
    }

    /// @dev Ends the game once and reports the outcome to the manager (which pays).
    function _resolve(Game storage g, uint256 gameId, bool claimerWon, Reason reason) private {
        g.phase = Phase.Resolved;
        g.claimerWon = claimerWon;
        emit GameResolved(gameId, g.claimId, claimerWon, reason);
        IClaimManager(MANAGER).onGameResolved(gameId, claimerWon);
    }
}
