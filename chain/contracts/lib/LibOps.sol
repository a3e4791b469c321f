// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {LibFixedPoint as FP} from "./LibFixedPoint.sol";

/// @title LibOps
/// @notice Element semantics of the tensor VM's ops (docs/protocol.md §3.3): given
/// the input words one output element reads, its correct word. Bit for bit equal
/// to `collab/fraudproof/vm.py` (`element_value`). Callers handle headers, shapes,
/// proofs and padding; these functions only do the arithmetic.
/// @dev Inputs are int64 words widened to int256; every intermediate stays below
/// 2^250 under the op bounds of §3.4.
library LibOps {
    /// @notice Op ids (§3.3).
    uint16 internal constant ADD = 1;
    uint16 internal constant SUB = 2;
    uint16 internal constant BIAS_ADD = 3;
    uint16 internal constant MUL = 4;
    uint16 internal constant SCALE = 5;
    uint16 internal constant MATMUL = 6;
    uint16 internal constant RESHAPE = 7;
    uint16 internal constant PERMUTE = 8;
    uint16 internal constant GATHER = 9;
    uint16 internal constant MEAN = 10;
    uint16 internal constant SUM = 11;
    uint16 internal constant WEIGHTED_SUM = 12;
    uint16 internal constant RING_ADD = 13;
    uint16 internal constant PRG_MASK = 14;
    uint16 internal constant RING_TO_FIXED = 15;
    uint16 internal constant FIXED_TO_RING = 16;
    uint16 internal constant CLIP = 17;
    uint16 internal constant RELU = 18;
    uint16 internal constant GELU = 19;
    uint16 internal constant EXP = 20;
    uint16 internal constant RECIPROCAL = 21;
    uint16 internal constant INV_SQRT = 22;
    uint16 internal constant SOFTMAX = 23;
    uint16 internal constant LAYERNORM = 24;
    uint16 internal constant WITNESS = 25;
    uint16 internal constant COUNT_ABS = 26;
    uint16 internal constant ASSERT_KTH = 27;
    uint16 internal constant TIES_TRIM = 28;
    uint16 internal constant TIES_SIGN = 29;
    uint16 internal constant TIES_MEAN = 30;
    uint16 internal constant BUNDLE = 31;
    uint16 internal constant BUNDLE_GET = 32;

    /// @notice ADD / SUB / BIAS_ADD: both operands aligned to max(fa, fb), one final rescale.
    function addSub(int256 a, int256 b, uint256 fa, uint256 fb, uint256 fo, bool subtract)
        internal
        pure
        returns (int256)
    {
        uint256 big = fa > fb ? fa : fb;
        int256 x = a * int256(uint256(1) << (big - fa));
        int256 y = b * int256(uint256(1) << (big - fb));
        return FP.rescale(subtract ? x - y : x + y, big, fo);
    }

    /// @notice MUL / SCALE: rescale(a · b, fab, fo).
    function mul(int256 a, int256 b, uint256 fab, uint256 fo) internal pure returns (int256) {
        return FP.rescale(a * b, fab, fo);
    }

    /// @notice CLIP: rescale(min(max(a, lo), hi), fa, fo) (hi wins when lo > hi).
    function clip(int256 a, int256 lo, int256 hi, uint256 fa, uint256 fo) internal pure returns (int256) {
        int256 v = a < lo ? lo : a;
        return FP.rescale(v > hi ? hi : v, fa, fo);
    }

    /// @notice RELU: rescale(max(a, 0), fa, fo).
    function relu(int256 a, uint256 fa, uint256 fo) internal pure returns (int256) {
        return FP.rescale(a > 0 ? a : int256(0), fa, fo);
    }

    /// @notice Unary approximations by op id (GELU, EXP, RECIPROCAL, INV_SQRT).
    function unary(uint16 op, int256 a, uint256 fa, uint256 fo) internal pure returns (int256) {
        if (op == GELU) return FP.gelu(a, fa, fo);
        if (op == EXP) return FP.exp(a, fa, fo);
        if (op == RECIPROCAL) return FP.reciprocal(a, fa, fo);
        return FP.invSqrt(a, fa, fo);
    }

    /// @notice |v| (exact in int256, so |INT64_MIN| = 2^63).
    function abs(int256 v) internal pure returns (int256) {
        return v < 0 ? -v : v;
    }

    /// @notice sign(v) in {-1, 0, 1}.
    function sign(int256 v) internal pure returns (int256) {
        return v > 0 ? int256(1) : v < 0 ? int256(-1) : int256(0);
    }

    /// @notice TIES_TRIM: keep `a` iff |a| >= tau, then rescale.
    function tiesTrim(int256 a, int256 tau, uint256 fa, uint256 fo) internal pure returns (int256) {
        return FP.rescale(abs(a) >= tau ? a : int256(0), fa, fo);
    }

    /// @notice Whether a TIES_MEAN task value is in the elected set: non-zero with sign `s`.
    function elected(int256 t, int256 s) internal pure returns (bool) {
        return t != 0 && sign(t) == s;
    }

    /// @notice TIES_MEAN from the elected sum and count (0 for an empty set).
    function tiesMean(int256 total, uint256 count, uint256 ft, uint256 fo) internal pure returns (int256) {
        if (count == 0) return 0;
        return FP.scaledDiv(total, int256(count), ft, fo);
    }

    /// @notice ASSERT_KTH(k) over totals (above, atOrAbove): tau is the k-th largest magnitude.
    function kthHolds(int256 above, int256 atOrAbove, uint256 k) internal pure returns (bool) {
        return above < int256(k) && int256(k) <= atOrAbove;
    }

    /// @notice PRG_MASK element `e`, negated in the ring if asked.
    function prgMask(bytes32 seed, bool negate, uint256 e) internal pure returns (int256) {
        int256 v = FP.prgElement(seed, e);
        return negate ? FP.ringNeg(v) : v;
    }
}
