/* Batch keccak-256 for the fraud-proof commitments (docs/protocol.md §2.3-§2.4).
 *
 * Built on first use by collab/fraudproof/native.py (cc -O3 -shared) and
 * loaded with ctypes. Python pays ~2 µs of call overhead per hash, more than
 * the hash itself, so everything that hashes many equal-sized preimages
 * (chunk leaves, whole Merkle levels) runs here in one call. On x86-64 with
 * AVX2 / AVX-512 several independent preimages are hashed at once, one per
 * vector lane (4 or 8 states side by side; chosen at run time). Keccak-256 is
 * Ethereum's (pad 0x01 ... 0x80, rate 136), not SHA3-256.
 *
 * The three permutations are one template (theta, rho+pi, chi, iota over the
 * 25 lanes held in locals, rotation offsets from the specification) written
 * out for uint64_t, 4 x uint64 and 8 x uint64; tests hold every path equal to
 * eth_hash on every length class.
 *
 * The file also holds the two arithmetic kernels of a claimed merge's hot path,
 * each one pass: the VM's WEIGHTED_SUM (a claimed linear merge's whole program)
 * and float32 -> int64 quantisation.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "keccak_native.c assumes little-endian lanes"
#endif

#define RATE 136
#define LANES (RATE / 8)
#define ROTL(x, s) (((x) << (s)) | ((x) >> (64 - (s))))

typedef uint64_t v4 __attribute__((vector_size(32)));
typedef uint64_t v8 __attribute__((vector_size(64)));

static const uint64_t RC[24] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808aULL, 0x8000000080008000ULL,
    0x000000000000808bULL, 0x0000000080000001ULL, 0x8000000080008081ULL, 0x8000000000008009ULL,
    0x000000000000008aULL, 0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000aULL,
    0x000000008000808bULL, 0x800000000000008bULL, 0x8000000000008089ULL, 0x8000000000008003ULL,
    0x8000000000008002ULL, 0x8000000000000080ULL, 0x000000000000800aULL, 0x800000008000000aULL,
    0x8000000080008081ULL, 0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL};

/* ---- generated from the permutation template (two rounds per iteration, A -> E -> A): do not edit by hand ---- */
static void keccakf(uint64_t st[25]) {
    uint64_t a00 = st[0], a10 = st[1], a20 = st[2], a30 = st[3], a40 = st[4], a01 = st[5], a11 = st[6], a21 = st[7], a31 = st[8], a41 = st[9], a02 = st[10], a12 = st[11], a22 = st[12], a32 = st[13], a42 = st[14], a03 = st[15], a13 = st[16], a23 = st[17], a33 = st[18], a43 = st[19], a04 = st[20], a14 = st[21], a24 = st[22], a34 = st[23], a44 = st[24];
    uint64_t e00, e10, e20, e30, e40, e01, e11, e21, e31, e41, e02, e12, e22, e32, e42, e03, e13, e23, e33, e43, e04, e14, e24, e34, e44;
    uint64_t c0, c1, c2, c3, c4, d0, d1, d2, d3, d4, b0, b1, b2, b3, b4;
    for (int round = 0; round < 24; round += 2) {
        c0 = a00 ^ a01 ^ a02 ^ a03 ^ a04;
        c1 = a10 ^ a11 ^ a12 ^ a13 ^ a14;
        c2 = a20 ^ a21 ^ a22 ^ a23 ^ a24;
        c3 = a30 ^ a31 ^ a32 ^ a33 ^ a34;
        c4 = a40 ^ a41 ^ a42 ^ a43 ^ a44;
        d0 = c4 ^ ROTL(c1, 1);
        d1 = c0 ^ ROTL(c2, 1);
        d2 = c1 ^ ROTL(c3, 1);
        d3 = c2 ^ ROTL(c4, 1);
        d4 = c3 ^ ROTL(c0, 1);
        b0 = (a00 ^ d0);
        b1 = ROTL(a11 ^ d1, 44);
        b2 = ROTL(a22 ^ d2, 43);
        b3 = ROTL(a33 ^ d3, 21);
        b4 = ROTL(a44 ^ d4, 14);
        e00 = b0 ^ (~b1 & b2);
        e10 = b1 ^ (~b2 & b3);
        e20 = b2 ^ (~b3 & b4);
        e30 = b3 ^ (~b4 & b0);
        e40 = b4 ^ (~b0 & b1);
        b0 = ROTL(a30 ^ d3, 28);
        b1 = ROTL(a41 ^ d4, 20);
        b2 = ROTL(a02 ^ d0, 3);
        b3 = ROTL(a13 ^ d1, 45);
        b4 = ROTL(a24 ^ d2, 61);
        e01 = b0 ^ (~b1 & b2);
        e11 = b1 ^ (~b2 & b3);
        e21 = b2 ^ (~b3 & b4);
        e31 = b3 ^ (~b4 & b0);
        e41 = b4 ^ (~b0 & b1);
        b0 = ROTL(a10 ^ d1, 1);
        b1 = ROTL(a21 ^ d2, 6);
        b2 = ROTL(a32 ^ d3, 25);
        b3 = ROTL(a43 ^ d4, 8);
        b4 = ROTL(a04 ^ d0, 18);
        e02 = b0 ^ (~b1 & b2);
        e12 = b1 ^ (~b2 & b3);
        e22 = b2 ^ (~b3 & b4);
        e32 = b3 ^ (~b4 & b0);
        e42 = b4 ^ (~b0 & b1);
        b0 = ROTL(a40 ^ d4, 27);
        b1 = ROTL(a01 ^ d0, 36);
        b2 = ROTL(a12 ^ d1, 10);
        b3 = ROTL(a23 ^ d2, 15);
        b4 = ROTL(a34 ^ d3, 56);
        e03 = b0 ^ (~b1 & b2);
        e13 = b1 ^ (~b2 & b3);
        e23 = b2 ^ (~b3 & b4);
        e33 = b3 ^ (~b4 & b0);
        e43 = b4 ^ (~b0 & b1);
        b0 = ROTL(a20 ^ d2, 62);
        b1 = ROTL(a31 ^ d3, 55);
        b2 = ROTL(a42 ^ d4, 39);
        b3 = ROTL(a03 ^ d0, 41);
        b4 = ROTL(a14 ^ d1, 2);
        e04 = b0 ^ (~b1 & b2);
        e14 = b1 ^ (~b2 & b3);
        e24 = b2 ^ (~b3 & b4);
        e34 = b3 ^ (~b4 & b0);
        e44 = b4 ^ (~b0 & b1);
        e00 ^= RC[round];
        c0 = e00 ^ e01 ^ e02 ^ e03 ^ e04;
        c1 = e10 ^ e11 ^ e12 ^ e13 ^ e14;
        c2 = e20 ^ e21 ^ e22 ^ e23 ^ e24;
        c3 = e30 ^ e31 ^ e32 ^ e33 ^ e34;
        c4 = e40 ^ e41 ^ e42 ^ e43 ^ e44;
        d0 = c4 ^ ROTL(c1, 1);
        d1 = c0 ^ ROTL(c2, 1);
        d2 = c1 ^ ROTL(c3, 1);
        d3 = c2 ^ ROTL(c4, 1);
        d4 = c3 ^ ROTL(c0, 1);
        b0 = (e00 ^ d0);
        b1 = ROTL(e11 ^ d1, 44);
        b2 = ROTL(e22 ^ d2, 43);
        b3 = ROTL(e33 ^ d3, 21);
        b4 = ROTL(e44 ^ d4, 14);
        a00 = b0 ^ (~b1 & b2);
        a10 = b1 ^ (~b2 & b3);
        a20 = b2 ^ (~b3 & b4);
        a30 = b3 ^ (~b4 & b0);
        a40 = b4 ^ (~b0 & b1);
        b0 = ROTL(e30 ^ d3, 28);
        b1 = ROTL(e41 ^ d4, 20);
        b2 = ROTL(e02 ^ d0, 3);
        b3 = ROTL(e13 ^ d1, 45);
        b4 = ROTL(e24 ^ d2, 61);
        a01 = b0 ^ (~b1 & b2);
        a11 = b1 ^ (~b2 & b3);
        a21 = b2 ^ (~b3 & b4);
        a31 = b3 ^ (~b4 & b0);
        a41 = b4 ^ (~b0 & b1);
        b0 = ROTL(e10 ^ d1, 1);
        b1 = ROTL(e21 ^ d2, 6);
        b2 = ROTL(e32 ^ d3, 25);
        b3 = ROTL(e43 ^ d4, 8);
        b4 = ROTL(e04 ^ d0, 18);
        a02 = b0 ^ (~b1 & b2);
        a12 = b1 ^ (~b2 & b3);
        a22 = b2 ^ (~b3 & b4);
        a32 = b3 ^ (~b4 & b0);
        a42 = b4 ^ (~b0 & b1);
        b0 = ROTL(e40 ^ d4, 27);
        b1 = ROTL(e01 ^ d0, 36);
        b2 = ROTL(e12 ^ d1, 10);
        b3 = ROTL(e23 ^ d2, 15);
        b4 = ROTL(e34 ^ d3, 56);
        a03 = b0 ^ (~b1 & b2);
        a13 = b1 ^ (~b2 & b3);
        a23 = b2 ^ (~b3 & b4);
        a33 = b3 ^ (~b4 & b0);
        a43 = b4 ^ (~b0 & b1);
        b0 = ROTL(e20 ^ d2, 62);
        b1 = ROTL(e31 ^ d3, 55);
        b2 = ROTL(e42 ^ d4, 39);
        b3 = ROTL(e03 ^ d0, 41);
        b4 = ROTL(e14 ^ d1, 2);
        a04 = b0 ^ (~b1 & b2);
        a14 = b1 ^ (~b2 & b3);
        a24 = b2 ^ (~b3 & b4);
        a34 = b3 ^ (~b4 & b0);
        a44 = b4 ^ (~b0 & b1);
        a00 ^= RC[round + 1];
    }
    st[0] = a00; st[1] = a10; st[2] = a20; st[3] = a30; st[4] = a40;
    st[5] = a01; st[6] = a11; st[7] = a21; st[8] = a31; st[9] = a41;
    st[10] = a02; st[11] = a12; st[12] = a22; st[13] = a32; st[14] = a42;
    st[15] = a03; st[16] = a13; st[17] = a23; st[18] = a33; st[19] = a43;
    st[20] = a04; st[21] = a14; st[22] = a24; st[23] = a34; st[24] = a44;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(COLLAB_NO_SIMD)
__attribute__((target("avx2"))) static void keccakf_x4(v4 st[25]) {
    v4 a00 = st[0], a10 = st[1], a20 = st[2], a30 = st[3], a40 = st[4], a01 = st[5], a11 = st[6], a21 = st[7], a31 = st[8], a41 = st[9], a02 = st[10], a12 = st[11], a22 = st[12], a32 = st[13], a42 = st[14], a03 = st[15], a13 = st[16], a23 = st[17], a33 = st[18], a43 = st[19], a04 = st[20], a14 = st[21], a24 = st[22], a34 = st[23], a44 = st[24];
    v4 e00, e10, e20, e30, e40, e01, e11, e21, e31, e41, e02, e12, e22, e32, e42, e03, e13, e23, e33, e43, e04, e14, e24, e34, e44;
    v4 c0, c1, c2, c3, c4, d0, d1, d2, d3, d4, b0, b1, b2, b3, b4;
    for (int round = 0; round < 24; round += 2) {
        c0 = a00 ^ a01 ^ a02 ^ a03 ^ a04;
        c1 = a10 ^ a11 ^ a12 ^ a13 ^ a14;
        c2 = a20 ^ a21 ^ a22 ^ a23 ^ a24;
        c3 = a30 ^ a31 ^ a32 ^ a33 ^ a34;
        c4 = a40 ^ a41 ^ a42 ^ a43 ^ a44;
        d0 = c4 ^ ROTL(c1, 1);
        d1 = c0 ^ ROTL(c2, 1);
        d2 = c1 ^ ROTL(c3, 1);
        d3 = c2 ^ ROTL(c4, 1);
        d4 = c3 ^ ROTL(c0, 1);
        b0 = (a00 ^ d0);
        b1 = ROTL(a11 ^ d1, 44);
        b2 = ROTL(a22 ^ d2, 43);
        b3 = ROTL(a33 ^ d3, 21);
        b4 = ROTL(a44 ^ d4, 14);
        e00 = b0 ^ (~b1 & b2);
        e10 = b1 ^ (~b2 & b3);
        e20 = b2 ^ (~b3 & b4);
        e30 = b3 ^ (~b4 & b0);
        e40 = b4 ^ (~b0 & b1);
        b0 = ROTL(a30 ^ d3, 28);
        b1 = ROTL(a41 ^ d4, 20);
        b2 = ROTL(a02 ^ d0, 3);
        b3 = ROTL(a13 ^ d1, 45);
        b4 = ROTL(a24 ^ d2, 61);
        e01 = b0 ^ (~b1 & b2);
        e11 = b1 ^ (~b2 & b3);
        e21 = b2 ^ (~b3 & b4);
        e31 = b3 ^ (~b4 & b0);
        e41 = b4 ^ (~b0 & b1);
        b0 = ROTL(a10 ^ d1, 1);
        b1 = ROTL(a21 ^ d2, 6);
        b2 = ROTL(a32 ^ d3, 25);
        b3 = ROTL(a43 ^ d4, 8);
        b4 = ROTL(a04 ^ d0, 18);
        e02 = b0 ^ (~b1 & b2);
        e12 = b1 ^ (~b2 & b3);
        e22 = b2 ^ (~b3 & b4);
        e32 = b3 ^ (~b4 & b0);
        e42 = b4 ^ (~b0 & b1);
        b0 = ROTL(a40 ^ d4, 27);
        b1 = ROTL(a01 ^ d0, 36);
        b2 = ROTL(a12 ^ d1, 10);
        b3 = ROTL(a23 ^ d2, 15);
        b4 = ROTL(a34 ^ d3, 56);
        e03 = b0 ^ (~b1 & b2);
        e13 = b1 ^ (~b2 & b3);
        e23 = b2 ^ (~b3 & b4);
        e33 = b3 ^ (~b4 & b0);
        e43 = b4 ^ (~b0 & b1);
        b0 = ROTL(a20 ^ d2, 62);
        b1 = ROTL(a31 ^ d3, 55);
        b2 = ROTL(a42 ^ d4, 39);
        b3 = ROTL(a03 ^ d0, 41);
        b4 = ROTL(a14 ^ d1, 2);
        e04 = b0 ^ (~b1 & b2);
        e14 = b1 ^ (~b2 & b3);
        e24 = b2 ^ (~b3 & b4);
        e34 = b3 ^ (~b4 & b0);
        e44 = b4 ^ (~b0 & b1);
        e00 ^= RC[round];
        c0 = e00 ^ e01 ^ e02 ^ e03 ^ e04;
        c1 = e10 ^ e11 ^ e12 ^ e13 ^ e14;
        c2 = e20 ^ e21 ^ e22 ^ e23 ^ e24;
        c3 = e30 ^ e31 ^ e32 ^ e33 ^ e34;
        c4 = e40 ^ e41 ^ e42 ^ e43 ^ e44;
        d0 = c4 ^ ROTL(c1, 1);
        d1 = c0 ^ ROTL(c2, 1);
        d2 = c1 ^ ROTL(c3, 1);
        d3 = c2 ^ ROTL(c4, 1);
        d4 = c3 ^ ROTL(c0, 1);
        b0 = (e00 ^ d0);
        b1 = ROTL(e11 ^ d1, 44);
        b2 = ROTL(e22 ^ d2, 43);
        b3 = ROTL(e33 ^ d3, 21);
        b4 = ROTL(e44 ^ d4, 14);
        a00 = b0 ^ (~b1 & b2);
        a10 = b1 ^ (~b2 & b3);
        a20 = b2 ^ (~b3 & b4);
        a30 = b3 ^ (~b4 & b0);
        a40 = b4 ^ (~b0 & b1);
        b0 = ROTL(e30 ^ d3, 28);
        b1 = ROTL(e41 ^ d4, 20);
        b2 = ROTL(e02 ^ d0, 3);
        b3 = ROTL(e13 ^ d1, 45);
        b4 = ROTL(e24 ^ d2, 61);
        a01 = b0 ^ (~b1 & b2);
        a11 = b1 ^ (~b2 & b3);
        a21 = b2 ^ (~b3 & b4);
        a31 = b3 ^ (~b4 & b0);
        a41 = b4 ^ (~b0 & b1);
        b0 = ROTL(e10 ^ d1, 1);
        b1 = ROTL(e21 ^ d2, 6);
        b2 = ROTL(e32 ^ d3, 25);
        b3 = ROTL(e43 ^ d4, 8);
        b4 = ROTL(e04 ^ d0, 18);
        a02 = b0 ^ (~b1 & b2);
        a12 = b1 ^ (~b2 & b3);
        a22 = b2 ^ (~b3 & b4);
        a32 = b3 ^ (~b4 & b0);
        a42 = b4 ^ (~b0 & b1);
        b0 = ROTL(e40 ^ d4, 27);
        b1 = ROTL(e01 ^ d0, 36);
        b2 = ROTL(e12 ^ d1, 10);
        b3 = ROTL(e23 ^ d2, 15);
        b4 = ROTL(e34 ^ d3, 56);
        a03 = b0 ^ (~b1 & b2);
        a13 = b1 ^ (~b2 & b3);
        a23 = b2 ^ (~b3 & b4);
        a33 = b3 ^ (~b4 & b0);
        a43 = b4 ^ (~b0 & b1);
        b0 = ROTL(e20 ^ d2, 62);
        b1 = ROTL(e31 ^ d3, 55);
        b2 = ROTL(e42 ^ d4, 39);
        b3 = ROTL(e03 ^ d0, 41);
        b4 = ROTL(e14 ^ d1, 2);
        a04 = b0 ^ (~b1 & b2);
        a14 = b1 ^ (~b2 & b3);
        a24 = b2 ^ (~b3 & b4);
        a34 = b3 ^ (~b4 & b0);
        a44 = b4 ^ (~b0 & b1);
        a00 ^= RC[round + 1];
    }
    st[0] = a00; st[1] = a10; st[2] = a20; st[3] = a30; st[4] = a40;
    st[5] = a01; st[6] = a11; st[7] = a21; st[8] = a31; st[9] = a41;
    st[10] = a02; st[11] = a12; st[12] = a22; st[13] = a32; st[14] = a42;
    st[15] = a03; st[16] = a13; st[17] = a23; st[18] = a33; st[19] = a43;
    st[20] = a04; st[21] = a14; st[22] = a24; st[23] = a34; st[24] = a44;
}

__attribute__((target("avx512f"))) static void keccakf_x8(v8 st[25]) {
    v8 a00 = st[0], a10 = st[1], a20 = st[2], a30 = st[3], a40 = st[4], a01 = st[5], a11 = st[6], a21 = st[7], a31 = st[8], a41 = st[9], a02 = st[10], a12 = st[11], a22 = st[12], a32 = st[13], a42 = st[14], a03 = st[15], a13 = st[16], a23 = st[17], a33 = st[18], a43 = st[19], a04 = st[20], a14 = st[21], a24 = st[22], a34 = st[23], a44 = st[24];
    v8 e00, e10, e20, e30, e40, e01, e11, e21, e31, e41, e02, e12, e22, e32, e42, e03, e13, e23, e33, e43, e04, e14, e24, e34, e44;
    v8 c0, c1, c2, c3, c4, d0, d1, d2, d3, d4, b0, b1, b2, b3, b4;
    for (int round = 0; round < 24; round += 2) {
        c0 = a00 ^ a01 ^ a02 ^ a03 ^ a04;
        c1 = a10 ^ a11 ^ a12 ^ a13 ^ a14;
        c2 = a20 ^ a21 ^ a22 ^ a23 ^ a24;
        c3 = a30 ^ a31 ^ a32 ^ a33 ^ a34;
        c4 = a40 ^ a41 ^ a42 ^ a43 ^ a44;
        d0 = c4 ^ ROTL(c1, 1);
        d1 = c0 ^ ROTL(c2, 1);
        d2 = c1 ^ ROTL(c3, 1);
        d3 = c2 ^ ROTL(c4, 1);
        d4 = c3 ^ ROTL(c0, 1);
        b0 = (a00 ^ d0);
        b1 = ROTL(a11 ^ d1, 44);
        b2 = ROTL(a22 ^ d2, 43);
        b3 = ROTL(a33 ^ d3, 21);
        b4 = ROTL(a44 ^ d4, 14);
        e00 = b0 ^ (~b1 & b2);
        e10 = b1 ^ (~b2 & b3);
        e20 = b2 ^ (~b3 & b4);
        e30 = b3 ^ (~b4 & b0);
        e40 = b4 ^ (~b0 & b1);
        b0 = ROTL(a30 ^ d3, 28);
        b1 = ROTL(a41 ^ d4, 20);
        b2 = ROTL(a02 ^ d0, 3);
        b3 = ROTL(a13 ^ d1, 45);
        b4 = ROTL(a24 ^ d2, 61);
        e01 = b0 ^ (~b1 & b2);
        e11 = b1 ^ (~b2 & b3);
        e21 = b2 ^ (~b3 & b4);
        e31 = b3 ^ (~b4 & b0);
        e41 = b4 ^ (~b0 & b1);
        b0 = ROTL(a10 ^ d1, 1);
        b1 = ROTL(a21 ^ d2, 6);
        b2 = ROTL(a32 ^ d3, 25);
        b3 = ROTL(a43 ^ d4, 8);
        b4 = ROTL(a04 ^ d0, 18);
        e02 = b0 ^ (~b1 & b2);
        e12 = b1 ^ (~b2 & b3);
        e22 = b2 ^ (~b3 & b4);
        e32 = b3 ^ (~b4 & b0);
        e42 = b4 ^ (~b0 & b1);
        b0 = ROTL(a40 ^ d4, 27);
        b1 = ROTL(a01 ^ d0, 36);
        b2 = ROTL(a12 ^ d1, 10);
        b3 = ROTL(a23 ^ d2, 15);
        b4 = ROTL(a34 ^ d3, 56);
        e03 = b0 ^ (~b1 & b2);
        e13 = b1 ^ (~b2 & b3);
        e23 = b2 ^ (~b3 & b4);
        e33 = b3 ^ (~b4 & b0);
        e43 = b4 ^ (~b0 & b1);
        b0 = ROTL(a20 ^ d2, 62);
        b1 = ROTL(a31 ^ d3, 55);
        b2 = ROTL(a42 ^ d4, 39);
        b3 = ROTL(a03 ^ d0, 41);
        b4 = ROTL(a14 ^ d1, 2);
        e04 = b0 ^ (~b1 & b2);
        e14 = b1 ^ (~b2 & b3);
        e24 = b2 ^ (~b3 & b4);
        e34 = b3 ^ (~b4 & b0);
        e44 = b4 ^ (~b0 & b1);
        e00 ^= RC[round];
        c0 = e00 ^ e01 ^ e02 ^ e03 ^ e04;
        c1 = e10 ^ e11 ^ e12 ^ e13 ^ e14;
        c2 = e20 ^ e21 ^ e22 ^ e23 ^ e24;
        c3 = e30 ^ e31 ^ e32 ^ e33 ^ e34;
        c4 = e40 ^ e41 ^ e42 ^ e43 ^ e44;
        d0 = c4 ^ ROTL(c1, 1);
        d1 = c0 ^ ROTL(c2, 1);
        d2 = c1 ^ ROTL(c3, 1);
        d3 = c2 ^ ROTL(c4, 1);
        d4 = c3 ^ ROTL(c0, 1);
        b0 = (e00 ^ d0);
        b1 = ROTL(e11 ^ d1, 44);
        b2 = ROTL(e22 ^ d2, 43);
        b3 = ROTL(e33 ^ d3, 21);
        b4 = ROTL(e44 ^ d4, 14);
        a00 = b0 ^ (~b1 & b2);
        a10 = b1 ^ (~b2 & b3);
        a20 = b2 ^ (~b3 & b4);
        a30 = b3 ^ (~b4 & b0);
        a40 = b4 ^ (~b0 & b1);
        b0 = ROTL(e30 ^ d3, 28);
        b1 = ROTL(e41 ^ d4, 20);
        b2 = ROTL(e02 ^ d0, 3);
        b3 = ROTL(e13 ^ d1, 45);
        b4 = ROTL(e24 ^ d2, 61);
        a01 = b0 ^ (~b1 & b2);
        a11 = b1 ^ (~b2 & b3);
        a21 = b2 ^ (~b3 & b4);
        a31 = b3 ^ (~b4 & b0);
        a41 = b4 ^ (~b0 & b1);
        b0 = ROTL(e10 ^ d1, 1);
        b1 = ROTL(e21 ^ d2, 6);
        b2 = ROTL(e32 ^ d3, 25);
        b3 = ROTL(e43 ^ d4, 8);
        b4 = ROTL(e04 ^ d0, 18);
        a02 = b0 ^ (~b1 & b2);
        a12 = b1 ^ (~b2 & b3);
        a22 = b2 ^ (~b3 & b4);
        a32 = b3 ^ (~b4 & b0);
        a42 = b4 ^ (~b0 & b1);
        b0 = ROTL(e40 ^ d4, 27);
        b1 = ROTL(e01 ^ d0, 36);
        b2 = ROTL(e12 ^ d1, 10);
        b3 = ROTL(e23 ^ d2, 15);
        b4 = ROTL(e34 ^ d3, 56);
        a03 = b0 ^ (~b1 & b2);
        a13 = b1 ^ (~b2 & b3);
        a23 = b2 ^ (~b3 & b4);
        a33 = b3 ^ (~b4 & b0);
        a43 = b4 ^ (~b0 & b1);
        b0 = ROTL(e20 ^ d2, 62);
        b1 = ROTL(e31 ^ d3, 55);
        b2 = ROTL(e42 ^ d4, 39);
        b3 = ROTL(e03 ^ d0, 41);
        b4 = ROTL(e14 ^ d1, 2);
        a04 = b0 ^ (~b1 & b2);
        a14 = b1 ^ (~b2 & b3);
        a24 = b2 ^ (~b3 & b4);
        a34 = b3 ^ (~b4 & b0);
        a44 = b4 ^ (~b0 & b1);
        a00 ^= RC[round + 1];
    }
    st[0] = a00; st[1] = a10; st[2] = a20; st[3] = a30; st[4] = a40;
    st[5] = a01; st[6] = a11; st[7] = a21; st[8] = a31; st[9] = a41;
    st[10] = a02; st[11] = a12; st[12] = a22; st[13] = a32; st[14] = a42;
    st[15] = a03; st[16] = a13; st[17] = a23; st[18] = a33; st[19] = a43;
    st[20] = a04; st[21] = a14; st[22] = a24; st[23] = a34; st[24] = a44;
}
#endif


/* The padded message of one preimage (prefix ‖ msg ‖ 0x01 … 0x80) as whole blocks, in `blocks`
 * (room for nblocks(len) * RATE bytes); returns the block count. */
static size_t pad_message(uint8_t prefix, size_t plen, const uint8_t *msg, size_t len, uint8_t *blocks) {
    size_t total = plen + len;
    size_t nb = total / RATE + 1;
    memset(blocks, 0, nb * RATE);
    if (plen) blocks[0] = prefix;
    memcpy(blocks + plen, msg, len);
    blocks[total] ^= 0x01;
    blocks[nb * RATE - 1] ^= 0x80;
    return nb;
}

static uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* keccak-256 of (prefix? ‖ msg). */
static void keccak256(uint8_t prefix, size_t plen, const uint8_t *msg, size_t len, uint8_t *out, uint8_t *scratch) {
    uint64_t st[25] = {0};
    size_t nb = pad_message(prefix, plen, msg, len, scratch);
    for (size_t b = 0; b < nb; b++) {
        for (int i = 0; i < LANES; i++) st[i] ^= load64(scratch + b * RATE + 8 * i);
        keccakf(st);
    }
    memcpy(out, st, 32);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(COLLAB_NO_SIMD)
/* W preimages of `size` bytes at data + size * j, hashed side by side (lane j of every vector). */
#include <immintrin.h>

/* Lane i of W messages `stride` bytes apart, one vector (a hardware gather). */
__attribute__((target("avx2"))) static inline v4 gather4(const uint8_t *p, size_t stride) {
    __m256i idx = _mm256_set_epi64x(3 * (long long)stride, 2 * (long long)stride, (long long)stride, 0);
    return (v4)_mm256_i64gather_epi64((const long long *)p, idx, 1);
}
__attribute__((target("avx512f"))) static inline v8 gather8(const uint8_t *p, size_t stride) {
    long long s = (long long)stride;
    __m512i idx = _mm512_set_epi64(7 * s, 6 * s, 5 * s, 4 * s, 3 * s, 2 * s, s, 0);
    return (v8)_mm512_i64gather_epi64(idx, (const void *)p, 1);
}

#define BATCH(NAME, V, W, PERM, TARGET, GATHER)                                                             \
    __attribute__((target(TARGET))) static void NAME(uint8_t prefix, size_t plen, const uint8_t *data, \
                                                     size_t size, uint8_t *out, uint8_t *scratch) {    \
        V st[25];                                                                                    \
        memset(st, 0, sizeof st);                                                                    \
        size_t stride = ((plen + size) / RATE + 1) * RATE;                                           \
        size_t nb = 0;                                                                               \
        for (int j = 0; j < W; j++) nb = pad_message(prefix, plen, data + size * j, size, scratch + stride * j); \
        for (size_t b = 0; b < nb; b++) {                                                            \
            for (int i = 0; i < LANES; i++) st[i] ^= GATHER(scratch + b * RATE + 8 * i, stride);    \
            PERM(st);                                                                                \
        }                                                                                            \
        for (int j = 0; j < W; j++)                                                                  \
            for (int i = 0; i < 4; i++) {                                                            \
                uint64_t lane = st[i][j];                                                            \
                memcpy(out + 32 * j + 8 * i, &lane, 8);                                              \
            }                                                                                        \
    }
BATCH(keccak256_x4, v4, 4, keccakf_x4, "avx2", gather4)
BATCH(keccak256_x8, v8, 8, keccakf_x8, "avx512f", gather8)

static int simd_width(void) {
    static int width = -1;
    if (width < 0) {
        __builtin_cpu_init();
        width = __builtin_cpu_supports("avx512f") ? 8 : __builtin_cpu_supports("avx2") ? 4 : 1;
    }
    return width;
}
#else
static int simd_width(void) { return 1; }
#endif

/* Width used by collab_keccak_many (1, 4 or 8); `limit` caps it (tests compare every path). */
static int width_cap = 8;

int collab_keccak_width(int limit) {
    if (limit > 0) width_cap = limit;
    int w = simd_width();
    return w < width_cap ? w : width_cap;
}

/* out[32 i ..] = keccak(prefix? ‖ data[size i .. size (i+1))) for i < n; prefix < 0 means none.
 * Returns 0, or -1 when one preimage is too long for the scratch buffer (> 4096 bytes). */
int collab_keccak_many(const uint8_t *data, size_t size, size_t n, int prefix, uint8_t *out) {
    uint8_t scratch[8 * (4096 / RATE + 2) * RATE];
    uint8_t p = (uint8_t)prefix;
    size_t plen = prefix < 0 ? 0 : 1;
    if (plen + size > 4096) return -1;
    size_t i = 0;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(COLLAB_NO_SIMD)
    int w = collab_keccak_width(0);
    if (w == 8)
        for (; i + 8 <= n; i += 8) keccak256_x8(p, plen, data + size * i, size, out + 32 * i, scratch);
    if (w >= 4)
        for (; i + 4 <= n; i += 4) keccak256_x4(p, plen, data + size * i, size, out + 32 * i, scratch);
#endif
    for (; i < n; i++) keccak256(p, plen, data + size * i, size, out + 32 * i, scratch);
    return 0;
}

/* Every level of a padded binary Merkle tree over n >= 1 leaves, in one buffer.
 *
 * buf holds the n leaves (32 bytes each) and room for every level above them;
 * level l has ceil(len(l-1) / 2) nodes keccak(0x01 ‖ left ‖ right), the odd
 * last node paired with zeros[l] (the all-padding subtree root of that level).
 * Stops after depth levels. Returns the nodes written, leaves included.
 */
size_t collab_merkle_levels(uint8_t *buf, size_t n, const uint8_t *zeros, size_t depth) {
    uint8_t pair[64];
    size_t start = 0, len = n, total = n;
    for (size_t level = 0; level < depth; level++) {
        size_t up = (len + 1) / 2;
        uint8_t *src = buf + 32 * start;
        uint8_t *dst = buf + 32 * (start + len);
        collab_keccak_many(src, 64, len / 2, 0x01, dst);
        if (len % 2) {
            memcpy(pair, src + 64 * (len / 2), 32);
            memcpy(pair + 32, zeros + 32 * level, 32);
            collab_keccak_many(pair, 64, 1, 0x01, dst + 32 * (len / 2));
        }
        start += len;
        len = up;
        total += up;
    }
    return total;
}

/* Chunk leaves keccak(0x00 ‖ chunk) of a tensor given as native int64 words: each chunk is 32
 * words written big-endian, the last one zero-padded (§2.2), converted here in groups of 8 chunks
 * so the caller needs no big-endian copy of the whole tensor. out gets 32 bytes per chunk. */
void collab_chunk_leaves_i64(const uint64_t *words, size_t n_words, uint8_t *out) {
    uint8_t buf[8 * 256];
    size_t n_chunks = (n_words + 31) / 32;
    for (size_t c = 0; c < n_chunks; c += 8) {
        size_t group = n_chunks - c < 8 ? n_chunks - c : 8;
        for (size_t k = 0; k < 32 * group; k++) {
            size_t w = 32 * c + k;
            uint64_t v = w < n_words ? __builtin_bswap64(words[w]) : 0;
            memcpy(buf + 8 * k, &v, 8);
        }
        collab_keccak_many(buf, 256, group, 0x00, out + 32 * c);
    }
}

/* The arithmetic kernels below are written once as always-inline bodies and compiled twice: for the
 * baseline ISA and, where the CPU has it, for AVX-512 (64-bit multiplies, compares and float -> int64
 * conversions in vector registers); the body inlines into either wrapper. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(COLLAB_NO_SIMD)
#define ARITH_SIMD 1
#define ARITH_TARGET "avx512f,avx512dq,avx512vl"
static int arith_avx512(void) {
    static int has = -1;
    if (has < 0) {
        __builtin_cpu_init();
        has = __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    }
    return has;
}
#endif
#define INLINE static inline __attribute__((always_inline))

/* sat(rshift(sum_i weights[i] * inputs[i][j], shift)) of one element with a 128-bit accumulator. */
static int64_t weighted_sum_wide(const int64_t *const *inputs, const int64_t *weights, size_t k, size_t j,
                                 int shift) {
    const __int128 one = 1;
    __int128 acc = 0;
    for (size_t i = 0; i < k; i++) acc += (__int128)inputs[i][j] * weights[i];
    if (shift) {
        __int128 q = acc >> shift; /* arithmetic shift: floor(acc / 2^shift) */
        __int128 r = acc & ((one << shift) - 1);
        __int128 half = one << (shift - 1);
        acc = q + (r > half || (r == half && (q & 1)));
    }
    return acc > INT64_MAX ? INT64_MAX : acc < INT64_MIN ? INT64_MIN : (int64_t)acc;
}

/* out[j] = sat(rshift(sum_i weights[i] * inputs[i][j], shift)) for j < n: the VM's WEIGHTED_SUM in one
 * pass, rshift rounding half to even (fixedpoint.rshift), sat clamping to int64. Blocks of 1024 elements
 * whose bound (sum_i max|x_i| * |w_i|) proves every product and partial sum fits in int64 run as plain
 * loops the compiler vectorises; other blocks take the 128-bit path per element. The caller guarantees
 * k * max|w| < 2^63 (so every sum fits in 127 bits and the bound in 128) and 0 <= shift <= 126. */
#define WSUM_BLOCK 1024
INLINE void weighted_sum_body(const int64_t *const *inputs, const int64_t *weights, size_t k, size_t n, int shift,
                              int64_t *out) {
    for (size_t j0 = 0; j0 < n; j0 += WSUM_BLOCK) {
        size_t m = n - j0 < WSUM_BLOCK ? n - j0 : WSUM_BLOCK;
        unsigned __int128 bound = 0;
        for (size_t i = 0; i < k; i++) {
            const int64_t *x = inputs[i] + j0;
            uint64_t mx = 0;
            for (size_t j = 0; j < m; j++) {
                uint64_t a = x[j] < 0 ? -(uint64_t)x[j] : (uint64_t)x[j];
                mx = a > mx ? a : mx;
            }
            uint64_t w = weights[i] < 0 ? -(uint64_t)weights[i] : (uint64_t)weights[i];
            bound += (unsigned __int128)mx * w;
        }
        int64_t *o = out + j0;
        if (bound >> 63 || shift > 62) {
            for (size_t j = 0; j < m; j++) o[j] = weighted_sum_wide(inputs, weights, k, j0 + j, shift);
            continue;
        }
        const int64_t *x0 = inputs[0] + j0, w0 = weights[0];
        for (size_t j = 0; j < m; j++) o[j] = x0[j] * w0;
        for (size_t i = 1; i < k; i++) {
            const int64_t *x = inputs[i] + j0, w = weights[i];
            for (size_t j = 0; j < m; j++) o[j] += x[j] * w;
        }
        if (shift) {
            const int64_t half = (int64_t)1 << (shift - 1), mask = ((int64_t)1 << shift) - 1;
            for (size_t j = 0; j < m; j++) {
                int64_t q = o[j] >> shift, r = o[j] & mask; /* floor and remainder in [0, 2^shift) */
                o[j] = q + ((r > half) | ((r == half) & (q & 1)));
            }
        }
    }
}

static void weighted_sum_base(const int64_t *const *inputs, const int64_t *weights, size_t k, size_t n, int shift,
                              int64_t *out) {
    weighted_sum_body(inputs, weights, k, n, shift, out);
}

#ifdef ARITH_SIMD
__attribute__((target(ARITH_TARGET))) static void weighted_sum_simd(const int64_t *const *inputs,
                                                                     const int64_t *weights, size_t k, size_t n,
                                                                     int shift, int64_t *out) {
    weighted_sum_body(inputs, weights, k, n, shift, out);
}
#endif

void collab_weighted_sum_i64(const int64_t *const *inputs, const int64_t *weights, size_t k, size_t n, int shift,
                             int64_t *out) {
#ifdef ARITH_SIMD
    if (arith_avx512()) {
        weighted_sum_simd(inputs, weights, k, n, shift, out);
        return;
    }
#endif
    weighted_sum_base(inputs, weights, k, n, shift, out);
}

/* out[j] = rint(x[j] * 2^f) as int64 for float32 x (0 <= f <= 62): a power-of-two scaling is exact in
 * float32, rint rounds half to even (numpy's np.rint), so the words equal numpy's float32 path.
 * Returns 0, or 1 when a value is not finite or |x * 2^f| >= 2^62 (the caller's generic path
 * saturates or refuses those); out is then incomplete. */
INLINE int quantise_body(const float *x, size_t n, int f, int64_t *out) {
    const float scale = (float)((uint64_t)1 << f), limit = 4611686018427387904.0f; /* 2^62 */
    int bad = 0;
    for (size_t j = 0; j < n; j++) {
        float v = __builtin_rintf(x[j] * scale);
        int ok = v < limit && v > -limit; /* false for NaN too */
        bad |= !ok;
        out[j] = (int64_t)(ok ? v : 0.0f);
    }
    return bad;
}

static int quantise_base(const float *x, size_t n, int f, int64_t *out) { return quantise_body(x, n, f, out); }

#ifdef ARITH_SIMD
__attribute__((target(ARITH_TARGET))) static int quantise_simd(const float *x, size_t n, int f, int64_t *out) {
    return quantise_body(x, n, f, out);
}
#endif

int collab_quantise_f32(const float *x, size_t n, int f, int64_t *out) {
#ifdef ARITH_SIMD
    if (arith_avx512()) return quantise_simd(x, n, f, out);
#endif
    return quantise_base(x, n, f, out);
}
