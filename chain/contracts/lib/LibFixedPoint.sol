// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

/// @title LibFixedPoint
/// @notice The number domains of the fraud-proof protocol (docs/protocol.md §1),
/// bit for bit equal to `collab/fixedpoint.py`: FIXED (int64 words at a per-tensor
/// number of fractional bits, one round-half-to-even rounding per op, saturation)
/// and RING (Z_2^64, wraparound), the counter-mode keccak PRG and the integer
/// exp / GELU / reciprocal / inverse-sqrt definitions the one-step proof recomputes.
/// @dev Intermediates are int256; every op bounds its inputs so they stay far
/// below 2^255 (a K = 4096 dot product of int64 words is < 2^138).
library LibFixedPoint {
    /// @notice Smallest int64 word.
    int256 internal constant INT64_MIN = -(2 ** 63);
    /// @notice Largest int64 word.
    int256 internal constant INT64_MAX = 2 ** 63 - 1;
    /// @notice 1.0 in the internal Q32 format of the approximations.
    int256 internal constant ONE = 2 ** 32;
    /// @notice round-half-even(log2(e) * 2^62).
    int256 internal constant LOG2E_Q62 = 6653256548922161246;
    /// @notice round-half-even(0.044715 * 2^32) (GELU cubic coefficient).
    int256 internal constant GELU_A = 192049463;
    /// @notice round-half-even(sqrt(2/pi) * 2^32).
    int256 internal constant GELU_B = 3426888095;

    /// @notice A shift amount the protocol never produces (would leave int256).
    /// @param shift The requested shift.
    error ShiftOutOfRange(uint256 shift);
    /// @notice rdiv was asked to divide by zero.
    error DivisionByZero();

    // ------------------------------------------------------------------ primitives

    /// @notice Clamp to int64 (FIXED saturates, never wraps).
    function sat(int256 v) internal pure returns (int256) {
        if (v > INT64_MAX) return INT64_MAX;
        if (v < INT64_MIN) return INT64_MIN;
        return v;
    }

    /// @notice Reduce into Z_2^64, represented as a signed int64.
    function wrap(int256 v) internal pure returns (int256) {
        return int256(int64(v));
    }

    /// @notice Integer nearest to n/d, ties to even.
    function rdiv(int256 n, int256 d) internal pure returns (int256 q) {
        // INVARIANT: the protocol never divides by zero (callers special-case 0).
        if (d == 0) revert DivisionByZero();
        if (d < 0) {
            n = -n;
            d = -d;
        }
        q = n / d;
        int256 r = n % d;
        if (r < 0) {
            q -= 1;
            r += d;
        }
        int256 rest = d - r;
        if (r > rest || (r == rest && q % 2 != 0)) q += 1;
    }

    /// @notice v / 2^s rounded half to even.
    function rshift(int256 v, uint256 s) internal pure returns (int256 q) {
        if (s == 0) return v;
        // INVARIANT: shifts stay inside int256 (ops bound them far below 254).
        if (s > 254) revert ShiftOutOfRange(s);
        q = v >> s;
        int256 r = v & int256((uint256(1) << s) - 1);
        int256 half = int256(uint256(1) << (s - 1));
        if (r > half || (r == half && (q & 1) != 0)) q += 1;
    }

    /// @notice Re-express the exact integer v at scale 2^-fa at scale 2^-fb; round once, saturate.
    function rescale(int256 v, uint256 fa, uint256 fb) internal pure returns (int256) {
        if (fb >= fa) {
            uint256 s = fb - fa;
            if (v == 0) return 0;
            if (s >= 64) return v > 0 ? INT64_MAX : INT64_MIN;
            if (v > (INT64_MAX >> s)) return INT64_MAX;
            if (v < (INT64_MIN >> s)) return INT64_MIN;
            return v << s;
        }
        return sat(rshift(v, fa - fb));
    }

    /// @notice (n / d) at scale fa re-expressed at scale fb with one rounding (d > 0).
    function scaledDiv(int256 n, int256 d, uint256 fa, uint256 fb) internal pure returns (int256) {
        uint256 up = fb > fa ? fb - fa : 0;
        uint256 down = fa > fb ? fa - fb : 0;
        return sat(rdiv(n * int256(uint256(1) << up), d * int256(uint256(1) << down)));
    }

    /// @notice Addition in Z_2^64.
    function ringAdd(int256 a, int256 b) internal pure returns (int256) {
        return wrap(a + b);
    }

    /// @notice Subtraction in Z_2^64.
    function ringSub(int256 a, int256 b) internal pure returns (int256) {
        return wrap(a - b);
    }

    /// @notice Additive inverse in Z_2^64.
    function ringNeg(int256 a) internal pure returns (int256) {
        return wrap(-a);
    }

    /// @notice Multiplication in Z_2^64.
    function ringMul(int256 a, int256 b) internal pure returns (int256) {
        return wrap(a * b);
    }

    // ------------------------------------------------------------------ PRG

    /// @notice keccak(seed ‖ uint256(counter)): one block of the mask stream.
    function prgBlock(bytes32 seed, uint256 counter) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(seed, counter));
    }

    /// @notice Element `index` of the stream: word `index % 4` of block `index / 4`, signed.
    function prgElement(bytes32 seed, uint256 index) internal pure returns (int256) {
        uint256 word = uint256(prgBlock(seed, index / 4)) >> (192 - 64 * (index % 4));
        return int256(int64(uint64(word)));
    }

    // ------------------------------------------------------------------ approximations

    /// @notice e^x in fixed point (base-2 range reduction, degree-8 Taylor in Q32).
    function exp(int256 x, uint256 fi, uint256 fo) internal pure returns (int256) {
        int256 bx = rescale(x, fi, 32);
        if (bx >= 64 * ONE) return INT64_MAX;
        if (bx <= -64 * ONE) return 0;
        int256 t = rshift(bx * LOG2E_Q62, 62);
        int256 n = t >> 32;
        int256 r = t - (n << 32);
        int256 p = 5676;
        p = _horner(p, r, 65510);
        p = _horner(p, r, 661577);
        p = _horner(p, r, 5726720);
        p = _horner(p, r, 41309550);
        p = _horner(p, r, 238388332);
        p = _horner(p, r, 1031764991);
        p = _horner(p, r, 2977044472);
        p = _horner(p, r, 4294967296);
        int256 s = n + int256(fo) - 32;
        if (s >= 0) return rescale(p, 0, uint256(s));
        return rshift(p, uint256(-s));
    }

    /// @dev rshift(p * r, 32) + c for 0 <= p < 2^35 and 0 <= r < 2^32 (one Horner step of `exp`);
    /// the bounds make the unchecked arithmetic exact.
    function _horner(int256 p, int256 r, int256 c) private pure returns (int256 q) {
        unchecked {
            int256 v = p * r;
            q = v >> 32;
            int256 rem = v & 0xffffffff;
            if (rem > 0x80000000 || (rem == 0x80000000 && (q & 1) != 0)) q += 1;
            q += c;
        }
    }

    /// @notice GELU (tanh form) with tanh from `exp` and one exact division.
    function gelu(int256 x, uint256 fi, uint256 fo) internal pure returns (int256) {
        int256 bx = rescale(x, fi, 32);
        if (bx >= 8 * ONE) return rescale(x, fi, fo);
        if (bx <= -8 * ONE) return 0;
        int256 x3 = rshift(rshift(bx * bx, 32) * bx, 32);
        int256 y = rshift((bx + rshift(GELU_A * x3, 32)) * GELU_B, 32);
        int256 e = exp(2 * y, 32, 32);
        int256 th = ONE - rdiv(int256(2 ** 65), ONE + e);
        int256 g = rshift(bx * (ONE + th), 33);
        return rescale(g, 32, fo);
    }

    /// @notice 1/x with one rounding; 1/0 saturates high.
    function reciprocal(int256 x, uint256 fi, uint256 fo) internal pure returns (int256) {
        if (x == 0) return INT64_MAX;
        return sat(rdiv(int256(uint256(1) << (fi + fo)), x));
    }

    /// @notice 1/sqrt(x), nearest integer (ties up); x <= 0 saturates high.
    function invSqrt(int256 x, uint256 fi, uint256 fo) internal pure returns (int256) {
        if (x <= 0) return INT64_MAX;
        uint256 root = Math.sqrt((uint256(1) << (2 * fo + fi + 2)) / uint256(x));
        return sat(int256((root + 1) >> 1));
    }

    // ------------------------------------------------------------------ row ops

    /// @notice Element `j` of the row softmax of `row` (fractional bits fi -> fo).
    function softmaxAt(int256[] memory row, uint256 j, uint256 fi, uint256 fo) internal pure returns (int256) {
        int256 m = row[0];
        for (uint256 i = 1; i < row.length; ++i) {
            if (row[i] > m) m = row[i];
        }
        int256 total;
        int256 mine;
        for (uint256 i; i < row.length; ++i) {
            int256 e = exp(row[i] - m, fi, 32);
            total += e;
            if (i == j) mine = e;
        }
        return sat(rdiv(mine * int256(uint256(1) << fo), total));
    }

    /// @notice Element `j` of the row layer normalisation of `row` (no affine part).
    function layernormAt(int256[] memory row, uint256 j, int256 eps, uint256 fi, uint256 fo)
        internal
        pure
        returns (int256)
    {
        int256 n = int256(row.length);
        int256 total;
        for (uint256 i; i < row.length; ++i) {
            total += row[i];
        }
        int256 mu = rdiv(total, n);
        int256 sq;
        for (uint256 i; i < row.length; ++i) {
            int256 d = row[i] - mu;
            sq += d * d;
        }
        int256 variance = rdiv(sq, n * int256(uint256(1) << fi));
        int256 r = invSqrt(variance + eps, fi, 32);
        return rescale((row[j] - mu) * r, fi + 32, fo);
    }
}
