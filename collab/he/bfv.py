"""BFV over several plaintext primes (CRT), with re-randomisation and noise flooding.

Why this shape: CrypTen shares live in Z_2^64, but a BFV plaintext modulus is
at most 60 bits and must be prime for batching. A product of two 64-bit shares
plus a statistical mask needs ~180 bits, so every value is processed modulo
three 60-bit batching primes and the residues are CRT-combined afterwards.

Everything runs on SEAL through ``tenseal.sealapi`` (TenSEAL's binding of SEAL
itself), because the protocol needs what TenSEAL's high-level vectors hide:
coefficient encoding (for matmuls), the invariant noise budget, encryption of
zero under the *peer's* public key, and adding a flooding polynomial to ``c0``.

Noise flooding (why, and the bound): a returned ciphertext ``Enc(x)*y + r`` has
``c1 = c1_x * y``, which reveals ``y`` outright, and noise ``e*y``, which leaks
it statistically. The evaluator therefore adds a fresh public-key encryption of
zero (re-randomises ``c1``) and a polynomial ``(e', 0)`` whose coefficients are
uniform in ``[-2^f, 2^f)``. With ``|e*y|_inf <= bound`` coefficient-wise, the
statistical distance between the flooded noise and ``e'`` alone is at most
``N * bound / 2^(f+1)``; ``f`` is chosen so that this is ``<= 2^-stat_bits``,
and the suite refuses parameters where the flooded noise could break
decryption. A flooded reply is then mod-switched down (public post-processing,
so the hiding is kept) to shrink it.
"""

from __future__ import annotations

import atexit
import math
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import tenseal.sealapi as seal

from collab.errors import BadInput, InternalError, ProtocolViolation

U64 = np.uint64
#: SEAL samples fresh errors from a normal of sd 3.2 clipped at 6 sd.
_ERR_MAX = 20
_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compression, reserved, total size
_MAGIC = 0xA15E


@dataclass(frozen=True)
class BfvParams:
    """Parameters of the CRT-BFV suite (defaults: 128-bit security, N=16384)."""

    poly_degree: int = 16384
    coeff_bits: tuple[int, ...] = (60, 60, 60, 60, 60)  # the last is SEAL's special prime
    plain_primes: int = 3
    plain_bits: int = 60
    stat_bits: int = 40
    reply_moduli: int = 2  # data moduli kept in a flooded reply


_SCRATCH: dict[int, Path] = {}


def _scratch_dir() -> Path:
    """A RAM-backed directory for SEAL's file-only (de)serialisation, under one per-process root removed at exit."""
    pid = os.getpid()
    if pid not in _SCRATCH:
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        path = Path(tempfile.mkdtemp(prefix="collab-he-", dir=base))
        _SCRATCH[pid] = path
        atexit.register(shutil.rmtree, path, True)
    # One subdirectory per suite: two suites of one process (tests' run_pair) never share file names.
    return Path(tempfile.mkdtemp(dir=_SCRATCH[pid]))


class BfvSuite:
    """One SEAL context per plaintext prime, all sharing N and the coefficient modulus.

    Both parties build the suite from the same :class:`BfvParams`; nothing in
    it is secret.
    """

    def __init__(self, params: BfvParams | None = None) -> None:
        self.params = p = params or BfvParams()
        n_q = len(p.coeff_bits)
        moduli = seal.CoeffModulus.Create(p.poly_degree, list(p.coeff_bits) + [p.plain_bits] * p.plain_primes)
        self._coeff_modulus = moduli[:n_q]
        self.primes: list[int] = [m.value() for m in moduli[n_q:]]
        if any(q % (2 * p.poly_degree) != 1 for q in self.primes):
            raise InternalError("plaintext primes must be batching primes")
        self.contexts: list[seal.SEALContext] = []
        for prime in moduli[n_q:]:
            parms = seal.EncryptionParameters(seal.SCHEME_TYPE.BFV)
            parms.set_poly_modulus_degree(p.poly_degree)
            parms.set_coeff_modulus(self._coeff_modulus)
            parms.set_plain_modulus(prime)
            ctx = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
            if not ctx.parameters_set():
                raise InternalError(f"BFV parameters rejected by SEAL: {ctx.parameters_error_message()}")
            self.contexts.append(ctx)
        self.encoders = [seal.BatchEncoder(c) for c in self.contexts]
        self.evaluators = [seal.Evaluator(c) for c in self.contexts]
        self.scratch = _scratch_dir()
        self._check_noise_room()

    # ------------------------------------------------------------------ sizes and bounds

    @property
    def n(self) -> int:
        """Slots (and coefficients) per ciphertext."""
        return self.params.poly_degree

    @cached_property
    def modulus(self) -> int:
        """M = product of the plaintext primes: the CRT range."""
        return math.prod(self.primes)

    @cached_property
    def data_q_bits(self) -> float:
        """log2 of the ciphertext modulus at the top data level."""
        return sum(math.log2(m.value()) for m in self._coeff_modulus[:-1])

    def product_noise_bits(self, terms: int) -> float:
        """log2 of a worst-case bound on |noise| of Σ Enc(x_b)*y_b with ``terms`` plaintext coefficients in all.

        Fresh public-key noise is e*u + e1 + e2*s with ternary u, s and |e| <= 20:
        at most (2N+1)*20. Each nonzero plaintext coefficient (< t, not assumed
        centred, since NTT-form plaintexts may not be) adds at most fresh*t to
        a coefficient of the product, and the BFV scaling rounding at most t/2.
        """
        t = max(self.primes)
        fresh = (2 * self.n + 1) * _ERR_MAX
        return math.log2(terms * fresh * t + terms * t / 2)

    def flood_bits(self, terms: int) -> int:
        """f such that flooding uniform in [-2^f, 2^f) hides that noise within 2^-stat_bits."""
        return math.ceil(self.params.stat_bits + math.log2(self.n) + self.product_noise_bits(terms) - 1)

    def noise_room_bits(self, terms: int) -> float:
        """Bits of noise budget left after flooding a reply of ``terms`` coefficient products (> 1 required)."""
        total = math.log2(2 ** self.flood_bits(terms) + 2 ** self.product_noise_bits(terms) + (2 * self.n + 1) * _ERR_MAX)
        return self.data_q_bits - 1 - math.log2(max(self.primes)) - total

    def max_terms(self) -> int:
        """The most plaintext coefficient products one flooded reply may accumulate."""
        terms = self.n
        while self.noise_room_bits(terms * 2) > 2:
            terms *= 2
        return terms

    def reply_level(self, terms: int) -> int:
        """How many data moduli a flooded reply keeps after mod-switching (fewer = smaller reply)."""
        qs = [math.log2(m.value()) for m in self._coeff_modulus[:-1]]
        f = self.flood_bits(terms) + 1
        t_bits = math.log2(max(self.primes))
        for keep in range(max(1, self.params.reply_moduli), len(qs) + 1):
            dropped = sum(qs[keep:])
            scaled = max(f - dropped, 0) + 1
            rounding = math.log2(self.n) + 1
            if max(scaled, rounding) + 3 < sum(qs[:keep]) - 1 - t_bits:
                return keep
        return len(qs)

    def _check_noise_room(self) -> None:
        # INVARIANT: a slot-wise reply (N products) can be flooded and still decrypt.
        room = self.noise_room_bits(self.n)
        if room <= 2:
            raise InternalError(f"BFV parameters leave no room for noise flooding ({room:.1f} bits)")
        self.flood_margin_bits = room

    # ------------------------------------------------------------------ serialisation

    def _roundtrip_path(self, name: str) -> str:
        return str(self.scratch / name)

    def dumps(self, obj: Any) -> bytes:
        """SEAL's own serialisation of a ciphertext, public key or seeded ciphertext, as bytes."""
        path = self._roundtrip_path(f"out-{os.getpid()}")
        obj.save(path)
        data = Path(path).read_bytes()
        os.unlink(path)
        return data

    def _load(self, obj: seal.Ciphertext | seal.PublicKey, k: int, data: bytes) -> None:
        path = self._roundtrip_path(f"in-{os.getpid()}")
        Path(path).write_bytes(data)
        try:
            obj.load(self.contexts[k], path)
        except (ValueError, RuntimeError) as exc:
            raise ProtocolViolation(f"peer sent an invalid SEAL object: {exc}") from exc
        finally:
            os.unlink(path)

    def load_ciphertext(self, k: int, data: bytes) -> seal.Ciphertext:
        """Parse (and validate against prime ``k``'s context) a ciphertext from the peer."""
        ct = seal.Ciphertext(self.contexts[k])
        self._load(ct, k, data)
        if ct.size() != 2 or ct.is_transparent():
            raise ProtocolViolation("peer ciphertext must be a fresh 2-component ciphertext")
        return ct

    def load_offer(self, k: int, data: bytes) -> seal.Ciphertext:
        """A peer's offered ciphertext: also at the top level, where the flooding room was computed."""
        ct = self.load_ciphertext(k, data)
        # INVARIANT: offers are fresh top-level ciphertexts, so the noise analysis applies.
        if ct.parms_id() != self.contexts[k].first_parms_id():
            raise ProtocolViolation("peer offer is not a top-level ciphertext")
        return ct

    def load_public_key(self, k: int, data: bytes) -> seal.PublicKey:
        pk = seal.PublicKey()
        self._load(pk, k, data)
        return pk

    @cached_property
    def _version(self) -> tuple[int, int]:
        """SEAL's serialisation version, read from an object it saved."""
        probe = seal.Plaintext("1")
        path = self._roundtrip_path("probe")
        probe.save(path)
        head = Path(path).read_bytes()[:_HEADER.size]
        os.unlink(path)
        return head[3], head[4]

    def _raw(self, body: bytes) -> bytes:
        major, minor = self._version
        return _HEADER.pack(_MAGIC, _HEADER.size, major, minor, 0, 0, _HEADER.size + len(body)) + body

    def _raw_array(self, arr: np.ndarray) -> bytes:
        flat = np.ascontiguousarray(arr, dtype=U64)
        return self._raw(struct.pack("<Q", flat.size) + flat.tobytes())

    def coeff_plaintext(self, coeffs: np.ndarray, k: int = 0) -> seal.Plaintext:
        """A plaintext with the given coefficients (< t), i.e. coefficient encoding.

        The SEAL binding has no coefficient setter, so the plaintext is written
        in SEAL's uncompressed format and loaded, which checks every
        coefficient against prime ``k``.
        """
        coeffs = np.asarray(coeffs, dtype=U64)
        if coeffs.ndim != 1 or coeffs.size > self.n:
            raise InternalError("coefficient vector longer than the ring degree")
        body = struct.pack("<4QQd", 0, 0, 0, 0, coeffs.size, 1.0) + self._raw_array(coeffs)
        path = self._roundtrip_path(f"pt-{os.getpid()}")
        Path(path).write_bytes(self._raw(body))
        pt = seal.Plaintext()
        try:
            pt.load(self.contexts[k], path)
        finally:
            os.unlink(path)
        return pt

    def flood_ciphertext(self, k: int, parms_id: list[int], f: int, rng: Rng) -> seal.Ciphertext:
        """The transparent ciphertext (e', 0) with e' uniform in [-2^f, 2^f) coefficient-wise."""
        ctx = self.contexts[k]
        qs = [m.value() for m in ctx.get_context_data(parms_id).parms().coeff_modulus()]
        polys = np.zeros((2, len(qs), self.n), dtype=U64)
        limbs = rng.limbs(self.n, f + 1)
        for i, q in enumerate(qs):
            # e' = u - 2^f with u uniform in [0, 2^(f+1)): exactly uniform in [-2^f, 2^f).
            polys[0, i] = submod(limbs_mod(limbs, q), np.full(self.n, pow(2, f, q), dtype=U64), q)
        body = struct.pack("<4Q", *parms_id) + bytes([0])
        body += struct.pack("<QQQdQ", 2, self.n, len(qs), 1.0, 1) + self._raw_array(polys)
        path = self._roundtrip_path(f"fl-{os.getpid()}")
        Path(path).write_bytes(self._raw(body))
        ct = seal.Ciphertext(ctx)
        try:
            ct.load(ctx, path)
        finally:
            os.unlink(path)
        return ct


class Rng:
    """Uniform randomness from the OS CSPRNG (masks, shares and flooding must be unpredictable)."""

    def uint64(self, shape: tuple[int, ...] | int) -> np.ndarray:
        count = int(np.prod(shape)) if isinstance(shape, tuple) else int(shape)
        return np.frombuffer(os.urandom(8 * count), dtype=U64).reshape(shape).copy()

    def bits(self, count: int) -> np.ndarray:
        return (np.frombuffer(os.urandom(count), dtype=np.uint8) & 1).astype(U64)

    def residues_below(self, count: int, bound: int) -> np.ndarray:
        """Exactly uniform integers in [0, bound) for bound < 2^63, by rejection."""
        bits = max(1, (bound - 1).bit_length())
        out = np.empty(count, dtype=U64)
        filled = 0
        while filled < count:
            cand = self.uint64(count - filled) >> U64(64 - bits)
            ok = cand[cand < U64(bound)]
            out[filled : filled + ok.size] = ok
            filled += ok.size
        return out

    def limbs(self, count: int, bits: int) -> np.ndarray:
        """(ceil(bits/64), count) little-endian 64-bit limbs of uniform ``bits``-bit integers."""
        rows = max(1, math.ceil(bits / 64))
        out = self.uint64((rows, count))
        top = bits - 64 * (rows - 1)
        if top < 64:
            out[-1] &= U64((1 << top) - 1)
        return out


# ---------------------------------------------------------------------- modular arithmetic on uint64 arrays


def submod(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """(a - b) mod p for a, b in [0, p), p < 2^63."""
    P = U64(p)
    return np.where(a >= b, a - b, a + (P - b))


def mulmod(a: np.ndarray, b: np.ndarray | int, p: int) -> np.ndarray:
    """a * b mod p for a, b in [0, p), p < 2^62, without 128-bit integers.

    The quotient is estimated in x87 extended precision (64-bit mantissa), off
    by at most one, and the remainder is computed exactly with wrapping uint64
    arithmetic, then corrected (the classic NTL/Shoup trick).
    """
    a = np.asarray(a, dtype=U64)
    bb = np.asarray(b, dtype=U64)
    ld = np.longdouble
    ratio = bb.astype(ld) / ld(p)  # one division for a scalar b
    qhat = (a.astype(ld) * ratio).astype(U64)
    with np.errstate(over="ignore"):
        r = (a * bb - qhat * U64(p)).view(np.int64)
    r = np.where(r < 0, r + np.int64(p), r)
    r = np.where(r >= np.int64(p), r - np.int64(p), r)
    return r.astype(U64)


def limbs_mod(limbs: np.ndarray, p: int) -> np.ndarray:
    """Σ limbs[j] 2^(64 j) mod p, for little-endian 64-bit limb rows."""
    r = np.zeros(limbs.shape[1], dtype=U64)
    for j, row in enumerate(limbs):
        term = row % U64(p) if j == 0 else mulmod(row % U64(p), pow(2, 64 * j, p), p)
        r = addmod(r, term, p)
    return r


def addmod(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """(a + b) mod p for a, b in [0, p), p < 2^63."""
    s = a + b
    return np.where(s >= U64(p), s - U64(p), s)


def uint64_to_residues(x: np.ndarray, p: int) -> np.ndarray:
    """x mod p for x in Z_2^64 read as a non-negative integer."""
    return np.asarray(x, dtype=U64) % U64(p)


def crt_mod_2_64(residues: list[np.ndarray], primes: list[int]) -> np.ndarray:
    """The integer v in [0, Π primes) with v ≡ residues[i] mod primes[i], reduced mod 2^64 (Garner)."""
    if len(residues) != len(primes):
        raise InternalError("one residue vector per prime")
    coeffs: list[np.ndarray] = []  # mixed-radix digits
    for i, (res, p) in enumerate(zip(residues, primes)):
        v = res.astype(U64) % U64(p)
        # v_i = (res - (d0 + d1 p0 + ... )) / (p0 ... p_{i-1}) mod p_i
        acc = np.zeros_like(v)
        radix = 1
        for j, d in enumerate(coeffs):
            acc = addmod(acc, mulmod(d % U64(p), radix % p, p), p)
            radix *= primes[j]
        inv = pow(radix % p, -1, p) if i else 1
        coeffs.append(mulmod(submod(v, acc, p), inv, p))
    out = np.zeros_like(coeffs[0])
    radix = 1
    with np.errstate(over="ignore"):
        for j, d in enumerate(coeffs):
            out = out + d * U64(radix % (1 << 64))
            radix *= primes[j]
    return out


def coefficients(pt: seal.Plaintext, positions: np.ndarray) -> list[int]:
    """A decrypted plaintext's coefficients at ``positions`` (those past its stored length are zero)."""
    count = pt.coeff_count()
    return [pt[int(i)] if i < count else 0 for i in positions]


def check_budget(budget_bits: int, what: str) -> None:
    """A decryptor's invariant-noise-budget check: 0 bits left means decryption is not trustworthy."""
    # INVARIANT: a reply is only used when SEAL reports a positive noise budget.
    if budget_bits <= 0:
        raise ProtocolViolation(f"{what}: ciphertext noise budget exhausted; the result would be wrong")


def require(cond: bool, message: str) -> None:
    """Raise BadInput when a caller-supplied value is out of range."""
    if not cond:
        raise BadInput(message)
