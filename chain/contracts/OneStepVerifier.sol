// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IOneStepVerifier} from "./interfaces/IOneStepVerifier.sol";
import {LibFixedPoint as FP} from "./lib/LibFixedPoint.sol";
import {LibMerkle as M} from "./lib/LibMerkle.sol";
import {LibOps as O} from "./lib/LibOps.sol";

/// @title OneStepVerifier
/// @notice Recomputes one output element of one VM step (docs/protocol.md §3.3,
/// §5.3, §6) from input chunks proven against their chunk roots. Stateless and
/// view-only: the bisection game authenticates the step and the input roots and
/// asks this contract what the disputed element must be.
/// @dev Mirrors `collab/fraudproof/program.py` (`expected_out`, the shape rule)
/// and `collab/fraudproof/vm.py` (`input_ranges`, `element_value`) line by line.
contract OneStepVerifier is IOneStepVerifier {
    /// @dev Header bits below the domain and fractional-bits bytes: rank, dims, zero tail.
    uint256 private constant SHAPE_MASK = type(uint240).max;
    /// @dev Header domain bytes (§2.1).
    uint8 private constant FIXED = 0;
    /// @dev Z_2^64 domain.
    uint8 private constant RING = 1;
    /// @dev Named-tensor list domain.
    uint8 private constant BUNDLE = 2;
    /// @dev Most inputs of a multi-input op (weighted sum, ring add, TIES, bundle).
    uint256 private constant MAX_INPUTS = 64;
    /// @dev Per-element bounds of §3.4: MATMUL contraction length.
    uint256 private constant MAX_K = 4096;
    /// @dev MEAN / SUM row and COUNT_ABS block length.
    uint256 private constant MAX_REDUCE = 4096;
    /// @dev SOFTMAX row length.
    uint256 private constant MAX_SOFTMAX = 512;
    /// @dev LAYERNORM row length.
    uint256 private constant MAX_LAYERNORM = 2048;

    // ------------------------------------------------------------------ external

    /// @inheritdoc IOneStepVerifier
    function evaluate(
        uint16 op,
        bytes calldata params,
        bytes32 outHeader,
        InputTensor[] calldata inputs,
        uint256 elementIndex
    ) external pure returns (Verdict, bytes32) {
        bytes32[] memory hs = new bytes32[](inputs.length);
        for (uint256 i; i < inputs.length; ++i) {
            hs[i] = inputs[i].header;
        }
        // INVARIANT: an ill-formed step has no valid output, whatever the claimer revealed.
        if (!_wellFormed(op, params, outHeader, _descriptorHeaders(op, hs))) return (Verdict.NoValidValue, 0);
        (bool decided, Verdict verdict, bytes32 expected) = _decideEarly(op, params, outHeader, inputs, elementIndex);
        if (decided) return (verdict, expected);
        _authenticateAll(op, params, outHeader, inputs, hs, elementIndex);
        return (Verdict.Value, bytes32(uint256(_compute(op, params, outHeader, inputs, elementIndex))));
    }

    /// @inheritdoc IOneStepVerifier
    function checkStepWellFormed(uint16 op, bytes calldata params, bytes32 outHeader, bytes32[] calldata inputHeaders)
        external
        pure
        returns (bool)
    {
        return _wellFormed(op, params, outHeader, inputHeaders);
    }

    /// @inheritdoc IOneStepVerifier
    function inputRange(
        uint16 op,
        bytes calldata params,
        bytes32 outHeader,
        bytes32[] calldata inputHeaders,
        uint256 elementIndex,
        uint256 input,
        int256 idValue
    ) external pure returns (uint256 start, uint256 end) {
        return _range(op, params, outHeader, inputHeaders, elementIndex, input, idValue);
    }

    // ------------------------------------------------------------------ input authentication

    /// @dev The descriptor's input headers: all inputs, minus BUNDLE_GET's appended entry tensor.
    function _descriptorHeaders(uint16 op, bytes32[] memory hs) private pure returns (bytes32[] memory desc) {
        if (op != O.BUNDLE_GET) return hs;
        // INVARIANT: BUNDLE_GET carries the selected entry's tensor after its descriptor inputs.
        if (hs.length == 0) revert InputCountMismatch(0, 2);
        desc = new bytes32[](hs.length - 1);
        for (uint256 i; i < desc.length; ++i) {
            desc[i] = hs[i];
        }
    }

    /// @dev Verdicts that need no element arithmetic: failed assertions, entry mismatches, padding,
    /// witnesses and bundle entries.
    function _decideEarly(uint16 op, bytes calldata params, bytes32 outHeader, InputTensor[] calldata inputs, uint256 e)
        private
        pure
        returns (bool, Verdict, bytes32)
    {
        if (op == O.ASSERT_KTH) {
            _authenticate(inputs[0], 0, 0, 2);
            if (!O.kthHolds(_el(inputs[0], 0), _el(inputs[0], 1), _w(params, 0))) {
                return (true, Verdict.NoValidValue, 0);
            }
        }
        if (op == O.BUNDLE_GET && !_entryMatches(params, outHeader, inputs)) return (true, Verdict.NoValidValue, 0);
        if (e >= M.numelOf(outHeader)) {
            // INVARIANT: padding positions are provably zero (§6).
            return (true, Verdict.Value, op == O.BUNDLE ? M.PAD_ENTRY_LEAF : bytes32(0));
        }
        if (op == O.WITNESS) return (true, Verdict.AnyValue, 0);
        if (op == O.BUNDLE) {
            InputTensor calldata t = inputs[e];
            bytes32 leaf = M.entryLeaf(bytes32(_w(params, 2 + e)), M.tensorRoot(t.chunkRoot, t.header));
            return (true, Verdict.Value, leaf);
        }
        return (false, Verdict.Value, 0);
    }

    /// @dev Authenticates, input by input, exactly the range element `e` reads.
    function _authenticateAll(
        uint16 op,
        bytes calldata params,
        bytes32 outHeader,
        InputTensor[] calldata inputs,
        bytes32[] memory hs,
        uint256 e
    ) private pure {
        for (uint256 i; i < inputs.length; ++i) {
            int256 idValue;
            // GATHER's table row depends on the id, read from the input authenticated just before.
            if (op == O.GATHER && i == 1) idValue = _el(inputs[0], e / M.dimOf(hs[1], 1));
            (uint256 s, uint256 t) = _range(op, params, outHeader, hs, e, i, idValue);
            _authenticate(inputs[i], i, s, t);
        }
    }

    /// @dev Checks that `t` supplies exactly the leaves holding elements [s, e) and that they fold to its root.
    function _authenticate(InputTensor calldata t, uint256 index, uint256 s, uint256 e) private pure {
        if (s >= e) {
            // INVARIANT: an input the element does not read carries no chunks.
            if (t.chunks.length != 0 || t.proof.length != 0) revert InputRangeMismatch(index, 0, 0);
            return;
        }
        bool isBundle = M.domainOf(t.header) == BUNDLE;
        uint256 per = isBundle ? 1 : M.CHUNK_ELEMS;
        uint256 first = s / per;
        uint256 count = (e - 1) / per - first + 1;
        // INVARIANT: the supplied range is exactly the leaves the element reads.
        if (t.firstChunk != first || t.chunks.length != count * (isBundle ? 64 : M.CHUNK_BYTES)) {
            revert InputRangeMismatch(index, first, count);
        }
        bytes32 root = M.rootFromRange(_leaves(t.chunks, count, isBundle), first, M.treeDepth(M.numLeavesOf(t.header)), t.proof);
        if (root != t.chunkRoot) revert InputProofMismatch(index);
    }

    /// @dev Leaf hashes of `count` consecutive chunks (or bundle entries).
    function _leaves(bytes calldata data, uint256 count, bool isBundle) private pure returns (bytes32[] memory leaves) {
        uint256 size = isBundle ? 64 : M.CHUNK_BYTES;
        leaves = new bytes32[](count);
        for (uint256 c; c < count; ++c) {
            leaves[c] = _leafHash(data[c * size:(c + 1) * size], isBundle);
        }
    }

    /// @dev Chunk leaf keccak(0x00 ‖ chunk) or entry leaf keccak(0x05 ‖ entry) of a calldata slice.
    function _leafHash(bytes calldata leaf, bool isBundle) private pure returns (bytes32 h) {
        bytes1 prefix = isBundle ? bytes1(0x05) : bytes1(0x00);
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore8(ptr, shr(248, prefix))
            calldatacopy(add(ptr, 1), leaf.offset, leaf.length)
            h := keccak256(ptr, add(leaf.length, 1))
        }
    }

    /// @dev Word `idx` of an authenticated numeric input (sign-extended int64).
    function _el(InputTensor calldata t, uint256 idx) private pure returns (int256 v) {
        uint256 off = (idx - t.firstChunk * M.CHUNK_ELEMS) * 8;
        bytes calldata data = t.chunks;
        assembly ("memory-safe") {
            v := signextend(7, shr(192, calldataload(add(data.offset, off))))
        }
    }

    /// @dev BUNDLE_GET: the entry's tensor is the appended input; its name and header are the declared ones.
    function _entryMatches(bytes calldata p, bytes32 out, InputTensor[] calldata inputs) private pure returns (bool) {
        if (inputs.length != 2) revert InputCountMismatch(inputs.length, 2);
        uint256 index = _w(p, 0);
        _authenticate(inputs[0], 0, index, index + 1);
        bytes calldata entry = inputs[0].chunks;
        bytes32 nameHash = bytes32(entry[0:32]);
        bytes32 root = bytes32(entry[32:64]);
        InputTensor calldata t = inputs[1];
        if (M.tensorRoot(t.chunkRoot, t.header) != root) revert EntryTensorMismatch();
        return nameHash == bytes32(_w(p, 1)) && t.header == out;
    }

    // ------------------------------------------------------------------ element computation

    /// @dev The correct word of element `e` (a well-formed step, authenticated inputs, e < numel).
    function _compute(uint16 op, bytes calldata p, bytes32 out, InputTensor[] calldata ins, uint256 e)
        private
        pure
        returns (int256)
    {
        uint256 fo = M.fracBitsOf(out);
        if (op <= O.MUL || op == O.SCALE) return _binary(op, p, ins, e, fo);
        if (op == O.MATMUL) return _matmul(ins, e, fo);
        if (op == O.RESHAPE || op == O.FIXED_TO_RING) return _el(ins[0], e);
        if (op == O.BUNDLE_GET) return _el(ins[1], e); // the entry tensor's own element
        if (op == O.PERMUTE) return _el(ins[0], _permuteSource(p, ins[0].header, out, e));
        if (op == O.GATHER) {
            uint256 dim = M.dimOf(ins[1].header, 1);
            int256 id = _el(ins[0], e / dim);
            if (id < 0 || uint256(id) >= M.dimOf(ins[1].header, 0)) return 0;
            return _el(ins[1], uint256(id) * dim + (e % dim));
        }
        if (op == O.MEAN || op == O.SUM || op == O.SOFTMAX || op == O.LAYERNORM) return _row(op, p, ins[0], e, fo);
        if (op == O.WEIGHTED_SUM || op == O.RING_ADD || op == O.TIES_SIGN || op == O.TIES_MEAN) {
            return _multi(op, p, ins, e, fo);
        }
        if (op == O.PRG_MASK) return O.prgMask(bytes32(_w(p, 0)), _w(p, 1) == 1, e);
        // These two read blocks or totals, not element e of their input.
        if (op == O.COUNT_ABS) return _countAbs(p, ins, out, e);
        if (op == O.ASSERT_KTH) return 1;
        uint256 fa = M.fracBitsOf(ins[0].header);
        int256 a = _el(ins[0], e);
        if (op == O.RING_TO_FIXED) return FP.rescale(a, fa, fo);
        if (op == O.CLIP) return O.clip(a, int256(_w(p, 0)), int256(_w(p, 1)), fa, fo);
        if (op == O.RELU) return O.relu(a, fa, fo);
        if (op >= O.GELU && op <= O.INV_SQRT) return O.unary(op, a, fa, fo);
        // TIES_TRIM (the last op left).
        return O.tiesTrim(a, _el(ins[1], 0), fa, fo);
    }

    /// @dev ADD, SUB, BIAS_ADD, MUL (second operand broadcast by flat index modulo its size) and SCALE.
    function _binary(uint16 op, bytes calldata p, InputTensor[] calldata ins, uint256 e, uint256 fo)
        private
        pure
        returns (int256)
    {
        InputTensor calldata x = ins[0];
        if (op == O.SCALE) return O.mul(_el(x, e), int256(_w(p, 0)), M.fracBitsOf(x.header) + _w(p, 1), fo);
        return _pair(op, x, ins[1], e, fo);
    }

    /// @dev Two-operand element arithmetic after the operands are read.
    function _pair(uint16 op, InputTensor calldata x, InputTensor calldata y, uint256 e, uint256 fo)
        private
        pure
        returns (int256)
    {
        int256 a = _el(x, e);
        int256 b = _el(y, e % M.numelOf(y.header));
        if (op == O.MUL) return O.mul(a, b, M.fracBitsOf(x.header) + M.fracBitsOf(y.header), fo);
        return O.addSub(a, b, M.fracBitsOf(x.header), M.fracBitsOf(y.header), fo, op == O.SUB);
    }

    /// @dev MATMUL: dot product of row e / N of `a` and row e % N of `w` (torch Linear layout).
    function _matmul(InputTensor[] calldata ins, uint256 e, uint256 fo) private pure returns (int256) {
        bytes32 ha = ins[0].header;
        uint256 k = M.dimOf(ha, M.rankOf(ha) - 1);
        uint256 n = M.dimOf(ins[1].header, 0);
        uint256 aOff = _offset(ins[0], (e / n) * k);
        uint256 wOff = _offset(ins[1], (e % n) * k);
        int256 acc;
        // K <= 4096 products of two int64 words: |acc| < 2^138, so unchecked arithmetic is exact.
        assembly ("memory-safe") {
            for { let i := 0 } lt(i, k) { i := add(i, 1) } {
                let x := signextend(7, shr(192, calldataload(add(aOff, mul(i, 8)))))
                let y := signextend(7, shr(192, calldataload(add(wOff, mul(i, 8)))))
                acc := add(acc, mul(x, y))
            }
        }
        return FP.rescale(acc, M.fracBitsOf(ha) + M.fracBitsOf(ins[1].header), fo);
    }

    /// @dev Calldata offset of word `idx` of an authenticated input.
    function _offset(InputTensor calldata t, uint256 idx) private pure returns (uint256 off) {
        off = (idx - t.firstChunk * M.CHUNK_ELEMS) * 8;
        bytes calldata data = t.chunks;
        assembly ("memory-safe") {
            off := add(data.offset, off)
        }
    }

    /// @dev Word `i` after a calldata offset from `_offset` (sign-extended int64).
    function _at(uint256 off, uint256 i) private pure returns (int256 v) {
        assembly ("memory-safe") {
            v := signextend(7, shr(192, calldataload(add(off, mul(i, 8)))))
        }
    }

    /// @dev Row ops: MEAN / SUM of row e, SOFTMAX / LAYERNORM element e % width of row e / width.
    function _row(uint16 op, bytes calldata p, InputTensor calldata a, uint256 e, uint256 fo)
        private
        pure
        returns (int256)
    {
        uint256 width = M.dimOf(a.header, M.rankOf(a.header) - 1);
        uint256 fa = M.fracBitsOf(a.header);
        uint256 off = _offset(a, (op == O.MEAN || op == O.SUM) ? e * width : (e / width) * width);
        if (op == O.MEAN || op == O.SUM) {
            int256 total;
            for (uint256 i; i < width; ++i) {
                total += _at(off, i);
            }
            return op == O.SUM ? FP.rescale(total, fa, fo) : FP.scaledDiv(total, int256(width), fa, fo);
        }
        int256[] memory row = new int256[](width);
        for (uint256 i; i < width; ++i) {
            row[i] = _at(off, i);
        }
        if (op == O.SOFTMAX) return FP.softmaxAt(row, e % width, fa, fo);
        return FP.layernormAt(row, e % width, int256(_w(p, 0)), fa, fo);
    }

    /// @dev One element per input: WEIGHTED_SUM, RING_ADD, TIES_SIGN, TIES_MEAN.
    function _multi(uint16 op, bytes calldata p, InputTensor[] calldata ins, uint256 e, uint256 fo)
        private
        pure
        returns (int256 total)
    {
        if (op == O.WEIGHTED_SUM) {
            for (uint256 i; i < ins.length; ++i) {
                total += int256(_w(p, 3 + i)) * _el(ins[i], e);
            }
            return FP.rescale(total, M.fracBitsOf(ins[0].header) + _w(p, 1), fo);
        }
        if (op == O.RING_ADD || op == O.TIES_SIGN) {
            for (uint256 i; i < ins.length; ++i) {
                total += _el(ins[i], e);
            }
            return op == O.RING_ADD ? FP.wrap(total) : O.sign(total);
        }
        int256 s = _el(ins[0], e);
        uint256 count;
        for (uint256 i = 1; i < ins.length; ++i) {
            int256 t = _el(ins[i], e);
            if (O.elected(t, s)) {
                total += t;
                ++count;
            }
        }
        return O.tiesMean(total, count, M.fracBitsOf(ins[1].header), fo);
    }

    /// @dev COUNT_ABS: output row 0 counts |a| > tau, row 1 counts |a| >= tau, over block e % R.
    function _countAbs(bytes calldata p, InputTensor[] calldata ins, bytes32 out, uint256 e)
        private
        pure
        returns (int256 count)
    {
        uint256 block_ = _w(p, 0);
        uint256 r = M.dimOf(out, 1);
        bool strict = e / r == 0;
        uint256 start = (e % r) * block_;
        uint256 end = start + block_;
        uint256 numel = M.numelOf(ins[0].header);
        if (end > numel) end = numel;
        int256 tau = _el(ins[1], 0);
        uint256 off = _offset(ins[0], start);
        for (uint256 i; i < end - start; ++i) {
            int256 m = O.abs(_at(off, i));
            if (strict ? m > tau : m >= tau) ++count;
        }
    }

    /// @dev Flat input index read by output element `e` of PERMUTE (output axis q is input axis perm[q]).
    function _permuteSource(bytes calldata p, bytes32 inHeader, bytes32 out, uint256 e)
        private
        pure
        returns (uint256 j)
    {
        uint256 rank = M.rankOf(inHeader);
        uint256[6] memory idx;
        uint256 rest = e;
        for (uint256 q = rank; q > 0; --q) {
            uint256 d = M.dimOf(out, q - 1);
            idx[_w(p, 2 + q - 1)] = rest % d;
            rest /= d;
        }
        for (uint256 axis; axis < rank; ++axis) {
            j = j * M.dimOf(inHeader, axis) + idx[axis];
        }
    }

    // ------------------------------------------------------------------ ranges

    /// @dev Elements [start, end) of input `i` that output element `e` reads (see IOneStepVerifier.inputRange).
    function _range(
        uint16 op,
        bytes calldata p,
        bytes32 out,
        bytes32[] memory hs,
        uint256 e,
        uint256 i,
        int256 idValue
    ) private pure returns (uint256, uint256) {
        if (op == O.ASSERT_KTH) return (0, 2);
        uint256 numel = M.numelOf(out);
        if (op == O.BUNDLE_GET) {
            if (i == 0) return (_w(p, 0), _w(p, 0) + 1);
            return e < numel ? (e, e + 1) : (0, 0);
        }
        if (e >= numel || op == O.PRG_MASK || op == O.WITNESS || op == O.BUNDLE) return (0, 0);
        if (op == O.MATMUL) {
            uint256 k = M.dimOf(hs[0], M.rankOf(hs[0]) - 1);
            uint256 base = i == 0 ? (e / M.dimOf(hs[1], 0)) * k : (e % M.dimOf(hs[1], 0)) * k;
            return (base, base + k);
        }
        if (op == O.MEAN || op == O.SUM || op == O.SOFTMAX || op == O.LAYERNORM) {
            uint256 width = M.dimOf(hs[0], M.rankOf(hs[0]) - 1);
            uint256 row = (op == O.MEAN || op == O.SUM) ? e : e / width;
            return (row * width, row * width + width);
        }
        if (i == 1 && (op == O.BIAS_ADD || (op == O.MUL && _shape(hs[1]) != _shape(hs[0])))) {
            uint256 j = e % M.numelOf(hs[1]);
            return (j, j + 1);
        }
        if (op == O.PERMUTE) {
            uint256 src = _permuteSource(p, hs[0], out, e);
            return (src, src + 1);
        }
        if (op == O.GATHER) {
            uint256 dim = M.dimOf(hs[1], 1);
            if (i == 0) return (e / dim, e / dim + 1);
            if (idValue < 0 || uint256(idValue) >= M.dimOf(hs[1], 0)) return (0, 0);
            uint256 t = uint256(idValue) * dim + (e % dim);
            return (t, t + 1);
        }
        if (op == O.COUNT_ABS) {
            if (i == 1) return (0, 1);
            uint256 block_ = _w(p, 0);
            uint256 s = (e % M.dimOf(out, 1)) * block_;
            uint256 end = s + block_;
            uint256 n = M.numelOf(hs[0]);
            return (s, end > n ? n : end);
        }
        if (op == O.TIES_TRIM && i == 1) return (0, 1);
        return (e, e + 1);
    }

    // ------------------------------------------------------------------ well-formedness (§3.2, §3.4)

    /// @dev Mirror of `program.expected_out`: true iff the step is well formed.
    function _wellFormed(uint16 op, bytes calldata p, bytes32 out, bytes32[] memory hs) private pure returns (bool) {
        if (!M.isValidHeader(out) || op == 0 || op > O.BUNDLE_GET || !_paramsOk(op, p)) return false;
        for (uint256 i; i < hs.length; ++i) {
            if (!M.isValidHeader(hs[i])) return false;
        }
        uint256 n = hs.length;
        if (op <= O.MUL) return n == 2 && _binaryOk(op, hs[0], hs[1], out);
        if (op == O.SCALE || (op >= O.RING_TO_FIXED && op <= O.LAYERNORM && op != O.FIXED_TO_RING)) {
            return n == 1 && _unaryOk(op, p, hs[0], out);
        }
        if (op == O.FIXED_TO_RING) {
            return n == 1 && M.domainOf(hs[0]) == FIXED && out == _retag(hs[0], RING, M.fracBitsOf(hs[0]));
        }
        if (op == O.MATMUL) return n == 2 && _matmulOk(hs[0], hs[1], out);
        if (op == O.RESHAPE || op == O.PERMUTE || op == O.GATHER) return _layoutOk(op, p, hs, out);
        if (op == O.MEAN || op == O.SUM) {
            if (n != 1 || M.domainOf(hs[0]) != FIXED || M.rankOf(hs[0]) == 0) return false;
            if (_last(hs[0]) > MAX_REDUCE) return false;
            return M.domainOf(out) == FIXED && _shape(out) == _shape(_dropLast(hs[0]));
        }
        if (op == O.WEIGHTED_SUM || op == O.TIES_SIGN) {
            if (n == 0 || n > MAX_INPUTS || !_sameFixed(hs, 0)) return false;
            if (op == O.WEIGHTED_SUM && _w(p, 2) != n) return false;
            if (op == O.TIES_SIGN && M.fracBitsOf(out) != 0) return false;
            return M.domainOf(out) == FIXED && _shape(out) == _shape(hs[0]);
        }
        if (op == O.RING_ADD) {
            if (n == 0 || n > MAX_INPUTS || M.domainOf(hs[0]) != RING) return false;
            for (uint256 i = 1; i < n; ++i) {
                if (hs[i] != hs[0]) return false;
            }
            return out == hs[0];
        }
        if (op == O.PRG_MASK) return n == 0 && M.domainOf(out) == RING;
        if (op == O.WITNESS) return n == 0 && M.domainOf(out) != BUNDLE;
        return _ties(op, p, hs, out);
    }

    /// @dev Shape rule of ADD, SUB, BIAS_ADD, MUL.
    function _binaryOk(uint16 op, bytes32 a, bytes32 b, bytes32 out) private pure returns (bool) {
        if (M.domainOf(a) != FIXED || M.domainOf(b) != FIXED) return false;
        bool sameShape = _shape(a) == _shape(b);
        bool rowVec = M.rankOf(a) >= 1 && _shape(b) == _shape(_vec(_last(a)));
        if (op <= O.SUB && !sameShape) return false;
        if (op == O.BIAS_ADD && !(M.rankOf(a) >= 1 && rowVec)) return false;
        if (op == O.MUL && !(sameShape || rowVec)) return false;
        return M.domainOf(out) == FIXED && _shape(out) == _shape(a);
    }

    /// @dev Shape rule of the one-input FIXED-output ops (SCALE, RING_TO_FIXED, CLIP, ... LAYERNORM).
    function _unaryOk(uint16 op, bytes calldata p, bytes32 a, bytes32 out) private pure returns (bool) {
        if (op == O.SCALE && _w(p, 1) > M.MAX_FRAC_BITS) return false;
        if (M.domainOf(a) != (op == O.RING_TO_FIXED ? RING : FIXED)) return false;
        if (op == O.SOFTMAX || op == O.LAYERNORM) {
            if (M.rankOf(a) == 0 || _last(a) > (op == O.SOFTMAX ? MAX_SOFTMAX : MAX_LAYERNORM)) return false;
        }
        return M.domainOf(out) == FIXED && _shape(out) == _shape(a);
    }

    /// @dev Shape rule of MATMUL: a [..., M, K] by w [N, K] gives [..., M, N], K <= 4096.
    function _matmulOk(bytes32 a, bytes32 w, bytes32 out) private pure returns (bool) {
        if (M.domainOf(a) != FIXED || M.domainOf(w) != FIXED || M.rankOf(a) < 2 || M.rankOf(w) != 2) return false;
        uint256 k = _last(a);
        if (M.dimOf(w, 1) != k || k > MAX_K) return false;
        return M.domainOf(out) == FIXED && _shape(out) == _shape(_setLast(a, M.dimOf(w, 0)));
    }

    /// @dev Shape rules of RESHAPE, PERMUTE and GATHER (domain and f carried over).
    function _layoutOk(uint16 op, bytes calldata p, bytes32[] memory hs, bytes32 out) private pure returns (bool) {
        if (op == O.GATHER) {
            if (hs.length != 2) return false;
            (bytes32 ids, bytes32 table) = (hs[0], hs[1]);
            if (M.domainOf(ids) != FIXED || M.fracBitsOf(ids) != 0 || M.rankOf(ids) > 5) return false;
            if (M.domainOf(table) == BUNDLE || M.rankOf(table) != 2) return false;
            return out == _retag(_append(ids, M.dimOf(table, 1)), M.domainOf(table), M.fracBitsOf(table));
        }
        if (hs.length != 1) return false;
        bytes32 a = hs[0];
        if (M.domainOf(a) == BUNDLE) return false;
        if (op == O.RESHAPE) {
            return M.domainOf(out) == M.domainOf(a) && M.fracBitsOf(out) == M.fracBitsOf(a)
                && M.numelOf(out) == M.numelOf(a);
        }
        uint256 rank = M.rankOf(a);
        if (_w(p, 1) != rank) return false;
        uint256 seen;
        uint256 shape;
        for (uint256 q; q < rank; ++q) {
            uint256 axis = _w(p, 2 + q);
            if (axis >= rank || seen & (1 << axis) != 0) return false;
            seen |= 1 << axis;
            shape |= M.dimOf(a, axis) << (200 - 32 * q);
        }
        shape |= rank << 232;
        return out == _retag(bytes32(shape), M.domainOf(a), M.fracBitsOf(a));
    }

    /// @dev Shape rules of COUNT_ABS, ASSERT_KTH, TIES_TRIM, TIES_MEAN, BUNDLE, BUNDLE_GET.
    function _ties(uint16 op, bytes calldata p, bytes32[] memory hs, bytes32 out) private pure returns (bool) {
        uint256 n = hs.length;
        if (op == O.COUNT_ABS || op == O.TIES_TRIM) {
            if (n != 2) return false;
            (bytes32 a, bytes32 tau) = (hs[0], hs[1]);
            if (M.domainOf(a) != FIXED || M.domainOf(tau) != FIXED || M.rankOf(tau) != 0) return false;
            if (M.fracBitsOf(tau) != M.fracBitsOf(a)) return false;
            if (op == O.TIES_TRIM) return M.domainOf(out) == FIXED && _shape(out) == _shape(a);
            uint256 block_ = _w(p, 0);
            if (block_ == 0 || block_ > MAX_REDUCE) return false;
            uint256 r = (M.numelOf(a) + block_ - 1) / block_;
            if (r >= 2 ** 32) return false;
            return out == bytes32((uint256(2) << 232) | (uint256(2) << 200) | (r << 168));
        }
        if (op == O.ASSERT_KTH) {
            return n == 1 && hs[0] == _retag(_vec(2), FIXED, 0) && out == bytes32(0);
        }
        if (op == O.TIES_MEAN) {
            if (n < 2 || n > MAX_INPUTS + 1 || !_sameFixed(hs, 1)) return false;
            bytes32 s = hs[0];
            if (M.domainOf(s) != FIXED || M.fracBitsOf(s) != 0 || _shape(s) != _shape(hs[1])) return false;
            return M.domainOf(out) == FIXED && _shape(out) == _shape(s);
        }
        if (op == O.BUNDLE) {
            if (n == 0 || n > MAX_INPUTS || _w(p, 1) != n) return false;
            for (uint256 i = 1; i < n; ++i) {
                if (_w(p, 1 + i) >= _w(p, 2 + i)) return false;
            }
            return out == _retag(_vec(n), BUNDLE, 0);
        }
        // BUNDLE_GET
        return n == 1 && M.domainOf(hs[0]) == BUNDLE && _w(p, 0) < M.numelOf(hs[0]) && M.domainOf(out) != BUNDLE;
    }

    /// @dev Whether hs[from..] are one FIXED header.
    function _sameFixed(bytes32[] memory hs, uint256 from) private pure returns (bool) {
        if (M.domainOf(hs[from]) != FIXED) return false;
        for (uint256 i = from + 1; i < hs.length; ++i) {
            if (hs[i] != hs[from]) return false;
        }
        return true;
    }

    // ------------------------------------------------------------------ params (canonical abi encodings)

    /// @dev Whether `p` is exactly `abi.encode` of the op's parameter tuple (never reverts).
    function _paramsOk(uint16 op, bytes calldata p) private pure returns (bool) {
        uint256 len = p.length;
        if (op == O.SCALE) return len == 64 && _isI64(_w(p, 0)) && _w(p, 1) < 256;
        if (op == O.PERMUTE) return _arrayOk(p, 32, 1, 256);
        if (op == O.WEIGHTED_SUM) {
            if (len < 96 || _w(p, 0) != 64 || _w(p, 1) > M.MAX_FRAC_BITS) return false;
            uint256 n = _w(p, 2);
            if (n > len / 32 || len != 96 + 32 * n) return false;
            for (uint256 i; i < n; ++i) {
                if (!_isI64(_w(p, 3 + i))) return false;
            }
            return true;
        }
        if (op == O.PRG_MASK) return len == 64 && _w(p, 1) < 2;
        if (op == O.CLIP) return len == 64 && _isI64(_w(p, 0)) && _isI64(_w(p, 1));
        if (op == O.LAYERNORM) return len == 32 && _isI64(_w(p, 0));
        if (op == O.COUNT_ABS) return len == 32 && _w(p, 0) < 2 ** 32;
        if (op == O.ASSERT_KTH) return len == 32 && _w(p, 0) < 2 ** 64;
        if (op == O.BUNDLE) return _arrayOk(p, 32, 1, 0);
        if (op == O.BUNDLE_GET) return len == 64 && _w(p, 0) < 2 ** 32;
        return len == 0;
    }

    /// @dev A single dynamic array: offset word, length word, items below `bound` (0 = any bytes32).
    function _arrayOk(bytes calldata p, uint256 offset, uint256 headWords, uint256 bound) private pure returns (bool) {
        uint256 len = p.length;
        if (len < 32 * (headWords + 1) || _w(p, 0) != offset) return false;
        uint256 n = _w(p, headWords);
        if (n > len / 32 || len != 32 * (headWords + 1 + n)) return false;
        if (bound == 0) return true;
        for (uint256 i; i < n; ++i) {
            if (_w(p, headWords + 1 + i) >= bound) return false;
        }
        return true;
    }

    /// @dev Whether an abi word is a canonical (sign-extended) int64.
    function _isI64(uint256 w) private pure returns (bool) {
        int256 v = int256(w);
        return v >= FP.INT64_MIN && v <= FP.INT64_MAX;
    }

    /// @dev Word `i` of `p` (callers check the length first).
    function _w(bytes calldata p, uint256 i) private pure returns (uint256 v) {
        assembly ("memory-safe") {
            v := calldataload(add(p.offset, mul(i, 32)))
        }
    }

    // ------------------------------------------------------------------ header helpers

    /// @dev Rank and dims bits of a header (domain and f masked out).
    function _shape(bytes32 h) private pure returns (uint256) {
        return uint256(h) & SHAPE_MASK;
    }

    /// @dev The header with `h`'s shape and the given domain and f.
    function _retag(bytes32 h, uint8 domain, uint256 f) private pure returns (bytes32) {
        return bytes32(_shape(h) | (uint256(domain) << 248) | (f << 240));
    }

    /// @dev Last dimension (rank >= 1).
    function _last(bytes32 h) private pure returns (uint256) {
        return M.dimOf(h, M.rankOf(h) - 1);
    }

    /// @dev Header of a rank-1 FIXED f=0 tensor [n].
    function _vec(uint256 n) private pure returns (bytes32) {
        return bytes32((uint256(1) << 232) | (n << 200));
    }

    /// @dev Shape without its last axis (rank >= 1).
    function _dropLast(bytes32 h) private pure returns (bytes32) {
        uint256 r = M.rankOf(h);
        uint256 v = uint256(h) & ~(uint256(0xffffffff) << (200 - 32 * (r - 1)));
        v = (v & ~(uint256(0xff) << 232)) | ((r - 1) << 232);
        return bytes32(v);
    }

    /// @dev Shape with its last dimension replaced by `d`.
    function _setLast(bytes32 h, uint256 d) private pure returns (bytes32) {
        uint256 s = 200 - 32 * (M.rankOf(h) - 1);
        return bytes32((uint256(h) & ~(uint256(0xffffffff) << s)) | (d << s));
    }

    /// @dev Shape with one more trailing axis of length `d` (rank <= 5).
    function _append(bytes32 h, uint256 d) private pure returns (bytes32) {
        uint256 r = M.rankOf(h);
        uint256 v = (uint256(h) & ~(uint256(0xff) << 232)) | ((r + 1) << 232);
        return bytes32(v | (d << (200 - 32 * r)));
    }
}
