// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title LibMerkle
/// @notice Commitments of the fraud-proof protocol (docs/protocol.md §2-§4), byte
/// for byte equal to `collab/fraudproof/commitments.py`: one-byte prefixes for
/// every leaf kind and for internal nodes, binary trees padded to a power of two,
/// single-leaf and contiguous-range proofs, tensor headers and roots.
library LibMerkle {
    /// @notice Elements per chunk.
    uint256 internal constant CHUNK_ELEMS = 32;
    /// @notice Bytes per chunk (32 big-endian int64 words).
    uint256 internal constant CHUNK_BYTES = 256;
    /// @notice Highest tensor rank a header can hold.
    uint256 internal constant MAX_RANK = 6;
    /// @notice Largest element count of a valid tensor.
    uint256 internal constant MAX_NUMEL = 2 ** 40;
    /// @notice Largest fractional-bit count of a valid header.
    uint256 internal constant MAX_FRAC_BITS = 62;
    /// @notice Header domain byte of a bundle.
    uint8 internal constant DOMAIN_BUNDLE = 2;
    /// @notice Padding leaf of chunk trees: keccak(0x00 ‖ 256 zero bytes).
    bytes32 internal constant PAD_CHUNK_LEAF = 0x7a9efb4f2d5fc995fb0c798bd5426724a58aa7b05b62f646b6baed96f5dbfc87;
    /// @notice Padding leaf of bundle entry trees: keccak(0x05 ‖ 64 zero bytes).
    bytes32 internal constant PAD_ENTRY_LEAF = 0x81c2fe922d1af05aef4ee34fbf8ff1a7bddd6e755456a7dc31fea3cbc3e81bc1;

    /// @notice A proof does not match the range or depth it claims to prove.
    /// @param used Proof items consumed.
    /// @param supplied Proof items supplied.
    error ProofShapeMismatch(uint256 used, uint256 supplied);
    /// @notice Revealed children are not a non-empty power of two.
    /// @param count Number of children supplied.
    error ChildrenNotPowerOfTwo(uint256 count);
    /// @notice A chunk is not exactly 256 bytes.
    /// @param length Length supplied.
    error BadChunkLength(uint256 length);
    /// @notice A tree needs at least one leaf.
    error EmptyTree();

    // ------------------------------------------------------------------ hashing

    /// @notice Internal node: keccak(0x01 ‖ left ‖ right).
    function nodeHash(bytes32 left, bytes32 right) internal pure returns (bytes32 h) {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore8(ptr, 0x01)
            mstore(add(ptr, 1), left)
            mstore(add(ptr, 33), right)
            h := keccak256(ptr, 65)
        }
    }

    /// @notice Chunk leaf: keccak(0x00 ‖ chunk).
    function chunkLeaf(bytes memory chunk) internal pure returns (bytes32) {
        // INVARIANT: a chunk is exactly 32 int64 words.
        if (chunk.length != CHUNK_BYTES) revert BadChunkLength(chunk.length);
        return keccak256(abi.encodePacked(bytes1(0x00), chunk));
    }

    /// @notice Trace leaf: keccak(0x02 ‖ uint256(step) ‖ outputRoot).
    function traceLeaf(uint256 step, bytes32 root) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(bytes1(0x02), step, root));
    }

    /// @notice Tensor root: keccak(0x03 ‖ chunkRoot ‖ header).
    function tensorRoot(bytes32 chunkRoot, bytes32 header) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(bytes1(0x03), chunkRoot, header));
    }

    /// @notice Program leaf: keccak(0x04 ‖ uint256(step) ‖ keccak(descriptor)).
    function stepLeaf(uint256 step, bytes memory descriptor) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(bytes1(0x04), step, keccak256(descriptor)));
    }

    /// @notice Bundle entry leaf: keccak(0x05 ‖ nameHash ‖ tensorRoot).
    function entryLeaf(bytes32 nameHash, bytes32 root) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(bytes1(0x05), nameHash, root));
    }

    /// @notice Program root: keccak(0x06 ‖ uint256(stepCount) ‖ stepTreeRoot).
    function programRoot(uint256 stepCount, bytes32 stepTreeRoot) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(bytes1(0x06), stepCount, stepTreeRoot));
    }

    /// @notice Root of an all-padding subtree of height `level` over `padLeaf`.
    function zeroHash(bytes32 padLeaf, uint256 level) internal pure returns (bytes32 h) {
        h = padLeaf;
        for (uint256 i; i < level; ++i) {
            h = nodeHash(h, h);
        }
    }

    // ------------------------------------------------------------------ trees

    /// @notice D(n): 0 for one leaf, else ceil(log2 n).
    function treeDepth(uint256 n) internal pure returns (uint256 d) {
        if (n == 0) revert EmptyTree();
        n -= 1;
        while (n > 0) {
            n >>= 1;
            ++d;
        }
    }

    /// @notice Root implied by a single-leaf proof (siblings bottom-up).
    function rootFromProof(bytes32 leaf, uint256 index, bytes32[] memory proof) internal pure returns (bytes32 h) {
        h = leaf;
        for (uint256 i; i < proof.length; ++i) {
            h = (index & 1 == 0) ? nodeHash(h, proof[i]) : nodeHash(proof[i], h);
            index >>= 1;
        }
        // INVARIANT: the index fits the tree the proof describes.
        if (index != 0) revert ProofShapeMismatch(proof.length, proof.length);
    }

    /// @notice Root implied by the contiguous leaves [start, start + leaves.length) and their range proof.
    /// @dev Per level: a left neighbour if the range starts odd, then a right neighbour if it ends even.
    function rootFromRange(bytes32[] memory leaves, uint256 start, uint256 depth, bytes32[] memory proof)
        internal
        pure
        returns (bytes32)
    {
        uint256 len = leaves.length;
        if (len == 0) revert EmptyTree();
        bytes32[] memory buf = new bytes32[](len + 2);
        for (uint256 i; i < len; ++i) {
            buf[i] = leaves[i];
        }
        uint256 used;
        uint256 lo = start;
        for (uint256 level; level < depth; ++level) {
            if (lo & 1 == 1) {
                if (used >= proof.length) revert ProofShapeMismatch(used + 1, proof.length);
                for (uint256 i = len; i > 0; --i) {
                    buf[i] = buf[i - 1];
                }
                buf[0] = proof[used++];
                ++len;
                --lo;
            }
            if ((lo + len - 1) & 1 == 0) {
                if (used >= proof.length) revert ProofShapeMismatch(used + 1, proof.length);
                buf[len++] = proof[used++];
            }
            for (uint256 i; i < len / 2; ++i) {
                buf[i] = nodeHash(buf[2 * i], buf[2 * i + 1]);
            }
            len /= 2;
            lo >>= 1;
        }
        // INVARIANT: the proof is consumed exactly and folds to a single node.
        if (len != 1 || used != proof.length || lo != 0) revert ProofShapeMismatch(used, proof.length);
        return buf[0];
    }

    /// @notice Fold 2^m revealed descendants back into their ancestor.
    function foldChildren(bytes32[] memory children) internal pure returns (bytes32) {
        uint256 len = children.length;
        // INVARIANT: a reveal shows a full level of a binary subtree.
        if (len == 0 || len & (len - 1) != 0) revert ChildrenNotPowerOfTwo(len);
        bytes32[] memory buf = new bytes32[](len);
        for (uint256 i; i < len; ++i) {
            buf[i] = children[i];
        }
        while (len > 1) {
            for (uint256 i; i < len / 2; ++i) {
                buf[i] = nodeHash(buf[2 * i], buf[2 * i + 1]);
            }
            len /= 2;
        }
        return buf[0];
    }

    /// @notice Element `u` (0..31) of a revealed chunk, as a signed int64.
    function elementAt(bytes memory chunk, uint256 u) internal pure returns (int256 v) {
        if (chunk.length != CHUNK_BYTES) revert BadChunkLength(chunk.length);
        uint256 word;
        assembly ("memory-safe") {
            word := mload(add(add(chunk, 32), mul(u, 8)))
        }
        v = int256(int64(uint64(word >> 192)));
    }

    // ------------------------------------------------------------------ headers

    /// @notice Domain byte of a header.
    function domainOf(bytes32 header) internal pure returns (uint8) {
        return uint8(header[0]);
    }

    /// @notice Fractional bits of a header.
    function fracBitsOf(bytes32 header) internal pure returns (uint8) {
        return uint8(header[1]);
    }

    /// @notice Rank of a header.
    function rankOf(bytes32 header) internal pure returns (uint8) {
        return uint8(header[2]);
    }

    /// @notice Dimension `i` of a header (0 beyond the rank).
    function dimOf(bytes32 header, uint256 i) internal pure returns (uint256) {
        return (uint256(header) >> (200 - 32 * i)) & 0xffffffff;
    }

    /// @notice Element count (1 for a scalar); only meaningful for a valid header.
    function numelOf(bytes32 header) internal pure returns (uint256 n) {
        n = 1;
        uint256 rank = rankOf(header);
        if (rank > MAX_RANK) rank = MAX_RANK;
        for (uint256 i; i < rank; ++i) {
            n *= dimOf(header, i);
        }
    }

    /// @notice Leaves of the data tree: chunks, or entries for a bundle.
    function numLeavesOf(bytes32 header) internal pure returns (uint256) {
        uint256 n = numelOf(header);
        return domainOf(header) == DOMAIN_BUNDLE ? n : (n + CHUNK_ELEMS - 1) / CHUNK_ELEMS;
    }

    /// @notice Whether a header is canonical and within the protocol's bounds (§2.1).
    function isValidHeader(bytes32 header) internal pure returns (bool) {
        uint256 domain = domainOf(header);
        uint256 frac = fracBitsOf(header);
        uint256 rank = rankOf(header);
        if (domain > DOMAIN_BUNDLE || frac > MAX_FRAC_BITS || rank > MAX_RANK) return false;
        if (domain == DOMAIN_BUNDLE && (frac != 0 || rank != 1)) return false;
        // Bytes 27..31 are zero.
        if (uint256(header) & 0xffffffffff != 0) return false;
        uint256 n = 1;
        for (uint256 i; i < MAX_RANK; ++i) {
            uint256 d = dimOf(header, i);
            if (i < rank) {
                if (d == 0) return false;
                n *= d;
                if (n > MAX_NUMEL) return false;
            } else if (d != 0) {
                return false;
            }
        }
        return true;
    }
}
