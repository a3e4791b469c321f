"""Two-party Beaver triples in Z_2^64 from BFV, with no dealer (semi-honest, Gilboa-style).

Each party P samples its own shares a_P, b_P. For c = a*b (or a@b),

    c = a_0 b_0 + a_1 b_1 + a_0 b_1 + a_1 b_0,

the first two terms are local and each cross term a_P b_Q is computed by the
HE cross-term protocol below, run in both directions at once:

1. *offer*: P encrypts a_P under its own key (residues mod each CRT prime) and
   sends the ciphertexts;
2. *answer*: Q multiplies them by its plaintext b_Q, adds a mask r uniform in
   [0, 2^mask_bits), re-randomises with a fresh encryption of zero under P's
   public key, floods the noise, mod-switches down and returns the result;
   Q's share of the cross term is -r mod 2^64;
3. *finish*: P decrypts (checking the noise budget), CRT-combines the residues
   into the exact integer a_P b_Q + r (it never wraps: the CRT range exceeds
   it), and keeps it mod 2^64.

What each party sees: its own shares, ciphertexts under the peer's key
(semantically secure), and decryptions of values masked by r, which are within
2^-40 of uniform (the product is below 2^(128+log2 k), the mask 2^mask_bits).
Matmul cross terms use coefficient encoding (one polynomial product computes a
whole block of inner products, Cheetah-style) and split long inner dimensions
into groups so that at least ``stat_bits`` of masking remain.

The parties only ever exchange ``bytes`` through a :class:`Channel`; the same
code runs over a thread queue (tests) and over torch.distributed (CrypTen).
"""

from __future__ import annotations

import functools
import math
import queue
from collections import deque
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import tenseal.sealapi as seal

from collab.errors import BadInput, InternalError, ProtocolViolation, Unavailable
from collab.he.bfv import (
    U64,
    BfvParams,
    BfvSuite,
    Rng,
    check_budget,
    coefficients,
    crt_mod_2_64,
    limbs_mod,
    uint64_to_residues,
)
from collab.he.helper import AnswerHelper, helper_for
from collab.he.helper import wanted as helper_wanted

if TYPE_CHECKING:
    from collab.he.lookup import EncryptedTable
    from collab.he.table_cache import TableCache

MASK = (1 << 64) - 1
#: The AND-bit protocol's suite: a bit product needs no CRT and no 180-bit range, only a batching prime
#: (114,689 ≡ 1 mod 2N), so N = 8192 with three 54-bit data moduli (216 bits ≤ SEAL's 218 for 128-bit
#: security) holds the same 40-bit flooding (31+ bits of room) at about a third of the work per ciphertext
#: and half the slots; replies drop to one modulus.
BIT_PARAMS = BfvParams(poly_degree=8192, coeff_bits=(54, 54, 54, 54), plain_primes=1, plain_bits=17, reply_moduli=1)


# ---------------------------------------------------------------------- transport


class Channel(Protocol):
    """A bidirectional byte pipe to the peer: send ours and receive theirs, simultaneously."""

    def exchange(self, payload: bytes) -> bytes: ...


class QueueChannel:
    """In-process channel between two threads (tests); counts bytes like a socket would."""

    def __init__(self, inbox: queue.Queue[bytes], outbox: queue.Queue[bytes], timeout: float = 600.0) -> None:
        self.inbox, self.outbox, self.timeout = inbox, outbox, timeout

    @staticmethod
    def pair(timeout: float = 600.0) -> tuple[QueueChannel, QueueChannel]:
        a: queue.Queue[bytes] = queue.Queue()
        b: queue.Queue[bytes] = queue.Queue()
        return QueueChannel(a, b, timeout), QueueChannel(b, a, timeout)

    def exchange(self, payload: bytes) -> bytes:
        if not isinstance(payload, bytes):
            raise InternalError("channels carry bytes only")
        self.outbox.put(payload)
        try:
            return self.inbox.get(timeout=self.timeout)
        except queue.Empty:
            raise Unavailable(f"HE peer sent nothing for {self.timeout:.0f} s") from None


def pack(blobs: list[bytes]) -> bytes:
    """Length-prefixed concatenation (one join: messages reach a GB, so no blob is copied twice)."""
    parts = [struct.pack("<I", len(blobs))]
    for b in blobs:
        parts += (struct.pack("<Q", len(b)), b)
    return b"".join(parts)


def unpack(data: bytes) -> list[bytes]:
    try:
        (count,) = struct.unpack_from("<I", data, 0)
        pos, out = 4, []
        for _ in range(count):
            (size,) = struct.unpack_from("<Q", data, pos)
            pos += 8
            if pos + size > len(data):
                raise struct.error("truncated")
            out.append(data[pos : pos + size])
            pos += size
    except struct.error as exc:
        raise ProtocolViolation(f"malformed HE message: {exc}") from exc
    if pos != len(data):
        raise ProtocolViolation("trailing bytes in HE message")
    return out


# ---------------------------------------------------------------------- matmul blocking


@dataclass(frozen=True)
class MatmulPlan:
    """How an (n,k)@(k,m) cross term is cut into coefficient-encoded blocks.

    A block (nw,kw,mw) fits one polynomial product when nw*mw*kw + kw - 1 <= N
    (no negacyclic wrap); inner blocks are summed homomorphically in groups of
    ``group`` so that |Σ| < group*2^128 stays ``stat_bits`` below the mask.
    """

    n: int
    k: int
    m: int
    nw: int
    kw: int
    mw: int
    group: int  # inner blocks summed per reply ciphertext

    @property
    def blocks(self) -> tuple[int, int, int]:
        return math.ceil(self.n / self.nw), math.ceil(self.k / self.kw), math.ceil(self.m / self.mw)

    @property
    def groups(self) -> int:
        return math.ceil(self.blocks[1] / self.group)

    def reply_index(self, bi: int, bj: int, g: int) -> int:
        """Wire position of the reply for row block ``bi``, column block ``bj`` and inner group ``g``."""
        return (bi * self.blocks[2] + bj) * self.groups + g

    def add_blocks(self, per_reply: np.ndarray) -> np.ndarray:
        """Σ mod 2^64 of per-reply (nw, mw) output blocks, in wire order, into the (n, m) result.

        Groups of one output block add up; blocks past the matrix edge are cut off.
        """
        nb, _, mb = self.blocks
        blocks = np.asarray(per_reply, dtype=U64).reshape(nb, mb, self.groups, self.nw, self.mw)
        summed = blocks.sum(axis=2, dtype=U64)  # wraps mod 2^64, as the shares do
        return np.ascontiguousarray(summed.transpose(0, 2, 1, 3).reshape(nb * self.nw, mb * self.mw)[: self.n, : self.m])


#: Costs of a block plan's steps in units of one NTT-domain product (multiply_plain + add, ~0.8 ms at
#: N = 16384 on this machine), measured per prime with ``HeParty``: encoding and transforming one block
#: of the answerer's matrix (3.4), one offered ciphertext (encrypt, serialise, load, transform: 19, plus
#: 10 for its 1 MB at 1 Gb/s) and one reply (re-randomise, flood, mod-switch, serialise, decrypt: 40,
#: plus 5 for 0.5 MB). Bytes are priced at a LAN's rate, not loopback's, so the plans do not trade
#: traffic for CPU only because the benchmark runs on one host. A product is cheap next to the
#: transform of its plaintext block, so plans that reuse each block over several row blocks win.
BLOCK_COST, OFFER_COST, REPLY_COST = 3.4, 29.0, 45.0


def plan_matmul(n: int, k: int, m: int, suite: BfvSuite) -> MatmulPlan:
    """The block shape of least estimated work: products, answerer blocks, offers and replies."""
    N = suite.n
    max_inner = 1 << (mask_bits(suite) - 128 - suite.params.stat_bits)
    cands = lambda d: sorted({min(d, 1 << e) for e in range(16)} | {d})  # noqa: E731
    noise_groups = max(1, suite.max_terms() // N)
    best: tuple[float, MatmulPlan] | None = None
    for kw in cands(k):
        if kw > N or kw > max_inner:
            continue
        for nw in cands(n):
            mw = min(m, (N + 1 - kw) // (nw * kw)) if nw * kw <= N else 0
            if mw < 1:
                continue
            nb, kb, mb = math.ceil(n / nw), math.ceil(k / kw), math.ceil(m / mw)
            group = max(1, min(kb, max_inner // kw, noise_groups))
            plan = MatmulPlan(n, k, m, nw, kw, mw, group)
            cost = plan_cost(plan)
            if best is None or cost < best[0]:
                best = (cost, plan)
    if best is None:
        raise BadInput(f"cannot block a ({n},{k})@({k},{m}) matmul for N={N}")
    return best[1]


def plan_cost(plan: MatmulPlan, nonzero_blocks: int | None = None) -> float:
    """The cost model's estimate for ``plan``; ``nonzero_blocks`` of the answerer's matrix (default: all)."""
    nb, kb, mb = plan.blocks
    blocks = kb * mb if nonzero_blocks is None else nonzero_blocks
    return nb * blocks + BLOCK_COST * blocks + OFFER_COST * nb * kb + REPLY_COST * nb * mb * plan.groups


def block_diagonal_pays(heads: int, n: int, k: int, m: int, suite: BfvSuite) -> bool:
    """Whether ``heads`` (n,k)@(k,m) matmuls cost less as one (n, heads·k)@(heads·k, heads·m) block-diagonal
    matmul, whose all-zero blocks of the answerer's matrix are skipped, than one by one."""
    one = plan_cost(plan_matmul(n, k, m, suite))
    wide = plan_matmul(n, heads * k, heads * m, suite)
    _, kb, mb = wide.blocks
    def heads_of(start: int, width: int, size: int) -> set[int]:  # the heads a block's rows (or columns) cover
        return set(range(start // size, (min(heads * size, start + width) - 1) // size + 1))

    nonzero = sum(1 for bl in range(kb) for bj in range(mb)
                  if heads_of(bl * wide.kw, wide.kw, k) & heads_of(bj * wide.mw, wide.mw, m))
    return plan_cost(wide, nonzero) < heads * one


def mask_bits(suite: BfvSuite) -> int:
    """Masks are uniform in [0, 2^mask_bits); value + mask stays below the CRT modulus."""
    return suite.modulus.bit_length() - 1


# ---------------------------------------------------------------------- one party


@dataclass
class Traffic:
    """What one party sent/received and how long its HE work took (the offline phase).

    ``kinds`` breaks the same figures down per tuple kind (and matmul shape),
    so one run tells where the offline time goes.
    """

    bytes_sent: int = 0
    bytes_received: int = 0
    messages: int = 0
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, dict[str, float]] = field(default_factory=dict)
    current: str | None = None

    def kind(self, name: str) -> dict[str, float]:
        return self.kinds.setdefault(name, {"calls": 0, "seconds": 0.0, "bytes_sent": 0, "round_trips": 0})


def peer_encryptors(suite: BfvSuite, key_blobs: list[bytes]) -> list[seal.Encryptor]:
    """Encryptors under the peer's public keys (one per prime): what re-randomises replies to the peer."""
    keys = [suite.load_public_key(i, b) for i, b in enumerate(key_blobs)]
    return [seal.Encryptor(c, pk) for c, pk in zip(suite.contexts, keys)]


def seal_reply(suite: BfvSuite, peer: seal.Encryptor, rng: Rng, k: int, ct: seal.Ciphertext, terms: int) -> bytes:
    """Re-randomise, flood and shrink a reply (prime ``k``) before it leaves this party."""
    ev = suite.evaluators[k]
    zero = seal.Ciphertext()
    peer.encrypt_zero(ct.parms_id(), zero)
    ev.add_inplace(ct, zero)
    ev.add_inplace(ct, suite.flood_ciphertext(k, ct.parms_id(), suite.flood_bits(terms), rng))
    for _ in range(len(suite.params.coeff_bits) - 1 - suite.reply_level(terms)):
        ev.mod_switch_to_next_inplace(ct)
    return suite.dumps(ct)


def reply_indices(plan: MatmulPlan, columns: list[int]) -> list[int]:
    """Wire positions of the replies of column blocks ``columns``: reply r = (row block, column block, group)."""
    return [plan.reply_index(bi, bj, g) for bi in range(plan.blocks[0]) for bj in columns for g in range(plan.groups)]


def answer_columns(suite: BfvSuite, peer: list[seal.Encryptor], rng: Rng, blobs: list[bytes], y: np.ndarray,
                   plan: MatmulPlan, masks: dict[int, np.ndarray], columns: list[int]) -> dict[tuple[int, int], bytes]:
    """Sealed replies, (prime, wire position) -> bytes, of the column blocks ``columns`` of a matmul answer.

    Products run in the NTT domain: each offered block is transformed once,
    and each block of ``y`` is encoded and transformed once, right before the
    products that use it (one per row block), into one reused buffer, so
    memory stays at a few ciphertexts whatever the matrix size. ``masks[r]``
    holds reply r's mask residues, one row per prime.
    """
    nb, kb, _ = plan.blocks
    terms = plan.group * plan.kw * plan.mw
    out: dict[tuple[int, int], bytes] = {}
    if not columns:
        return out
    for k, p in enumerate(suite.primes):
        ev = suite.evaluators[k]
        res = uint64_to_residues(y, p)
        cts = [suite.load_offer(k, blobs[k * nb * kb + i]) for i in range(nb * kb)]
        for ct in cts:
            ev.transform_to_ntt_inplace(ct)
        parms, y_ntt, prod = cts[0].parms_id(), seal.Plaintext(), seal.Ciphertext()
        for bj in columns:
            for g in range(plan.groups):
                accs: list[seal.Ciphertext | None] = [None] * nb
                for bl in range(g * plan.group, min(kb, (g + 1) * plan.group)):
                    pt = _weight_block(suite, res, plan, bl, bj, k)
                    if pt is None:
                        continue  # SEAL refuses ct * 0; the term is simply absent
                    ev.transform_to_ntt(pt, parms, y_ntt)
                    for bi in range(nb):
                        acc = accs[bi]
                        if acc is None:
                            accs[bi] = acc = seal.Ciphertext()
                            ev.multiply_plain(cts[bi * kb + bl], y_ntt, acc)
                        else:
                            ev.multiply_plain(cts[bi * kb + bl], y_ntt, prod)
                            ev.add_inplace(acc, prod)
                for bi, acc in enumerate(accs):
                    r = plan.reply_index(bi, bj, g)
                    if acc is None:
                        acc = seal.Ciphertext()
                        peer[k].encrypt_zero(parms, acc)
                    else:
                        ev.transform_from_ntt_inplace(acc)
                    ev.add_plain_inplace(acc, suite.coeff_plaintext(masks[r][k], k))
                    out[k, r] = seal_reply(suite, peer[k], rng, k, acc, terms)
    return out


def _weight_block(suite: BfvSuite, res: np.ndarray, plan: MatmulPlan, bl: int, bj: int, k: int) -> seal.Plaintext | None:
    """Block (bl, bj) of the answerer's matrix (residues mod prime ``k``) as Σ y[l,j] T^(j*kw + l); None if zero."""
    blk = res[bl * plan.kw : (bl + 1) * plan.kw, bj * plan.mw : (bj + 1) * plan.mw]
    if not blk.any():
        return None
    coeffs = np.zeros(suite.n, dtype=U64)
    coeffs[_weight_positions(blk.shape[0], blk.shape[1], plan.kw)] = blk
    return suite.coeff_plaintext(coeffs, k)


@functools.lru_cache(maxsize=64)
def _weight_positions(h: int, w: int, kw: int) -> np.ndarray:
    """Coefficient index of y[l, j] in an (h, w) block: j*kw + l (computed once per block shape, not per block)."""
    ll, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return jj * kw + ll


class HeParty:
    """One party of the cross-term protocol: its own BFV keys plus the peer's public keys."""

    def __init__(self, suite: BfvSuite | None = None, *, params: BfvParams | None = None) -> None:
        self.suite = suite or BfvSuite(params)
        self.rng = Rng()
        self._secret: list[seal.SecretKey] = []
        own_pk: list[seal.PublicKey] = []
        for ctx in self.suite.contexts:
            kg = seal.KeyGenerator(ctx)
            pk = seal.PublicKey()
            kg.create_public_key(pk)
            self._secret.append(kg.secret_key())
            own_pk.append(pk)
        self._own_pk = own_pk
        self._enc = [seal.Encryptor(c, s) for c, s in zip(self.suite.contexts, self._secret)]
        self._dec = [seal.Decryptor(c, s) for c, s in zip(self.suite.contexts, self._secret)]
        self._peer_enc: list[seal.Encryptor] | None = None
        self.peer_hello = b""  # what a helper process needs to re-randomise replies to the peer
        self.last_budgets: deque[int] = deque(maxlen=4096)  # noise budgets of recent replies (bits)

    # ---------------------------------------------------------------- setup

    def hello(self) -> bytes:
        """The public keys the peer needs to re-randomise replies to us."""
        return pack([self.suite.dumps(pk) for pk in self._own_pk])

    def meet(self, peer_hello: bytes) -> None:
        blobs = unpack(peer_hello)
        if len(blobs) != len(self.suite.contexts):
            raise ProtocolViolation("peer public keys do not match the BFV suite")
        self._peer_enc = peer_encryptors(self.suite, blobs)
        self.peer_hello = peer_hello

    def _peer(self) -> list[seal.Encryptor]:
        if self._peer_enc is None:
            raise InternalError("meet() the peer before answering its offers")
        return self._peer_enc

    # ---------------------------------------------------------------- shared steps

    def encrypt(self, k: int, pt: seal.Plaintext) -> bytes:
        """Enc(pt) under this party's own key (prime ``k``), serialised: what offers are made of.

        Seeded: a secret-key ciphertext (c0, c1) has c1 uniform, so SEAL saves
        the seed it drew c1 from instead of c1 (its ``Serializable`` form),
        and the receiver's load expands it. Half the bytes of every offer and
        of the lookup table; c1 is public either way.
        """
        return self.suite.dumps(self._enc[k].encrypt_symmetric(pt))

    def _seal_reply(self, k: int, ct: seal.Ciphertext, terms: int) -> bytes:
        return seal_reply(self.suite, self._peer()[k], self.rng, k, ct, terms)

    def _times(self, k: int, ct: seal.Ciphertext, pt: seal.Plaintext) -> seal.Ciphertext:
        """ct * pt; a zero plaintext gives a fresh encryption of zero (SEAL refuses transparent results)."""
        out = seal.Ciphertext()
        if pt.is_zero():
            self._peer()[k].encrypt_zero(ct.parms_id(), out)
        else:
            self.suite.evaluators[k].multiply_plain(ct, pt, out)
        return out

    def open_reply(self, k: int, data: bytes) -> seal.Plaintext:
        """Decrypt one reply ciphertext under prime ``k`` after checking its noise budget."""
        ct = self.suite.load_ciphertext(k, data)
        budget = self._dec[k].invariant_noise_budget(ct)
        check_budget(budget, f"reply under prime {k}")
        self.last_budgets.append(budget)
        pt = seal.Plaintext()
        self._dec[k].decrypt(ct, pt)
        return pt

    def _masks(self, count: int) -> tuple[list[np.ndarray], np.ndarray]:
        """r uniform in [0, 2^mask_bits): its residues per prime and r mod 2^64."""
        limbs = self.rng.limbs(count, mask_bits(self.suite))
        return [limbs_mod(limbs, p) for p in self.suite.primes], limbs[0].copy()

    # ---------------------------------------------------------------- element-wise (slots)

    def _chunks(self, count: int) -> list[slice]:
        return [slice(i, min(i + self.suite.n, count)) for i in range(0, count, self.suite.n)]

    def offer_slots(self, x: np.ndarray) -> bytes:
        """Enc(x mod p) per prime and per N-slot chunk, x a flat uint64 vector."""
        x = np.ascontiguousarray(x, dtype=U64).ravel()
        blobs = []
        for k, p in enumerate(self.suite.primes):
            res = uint64_to_residues(x, p)
            for sl in self._chunks(x.size):
                pt = seal.Plaintext()
                self.suite.encoders[k].encode(res[sl].tolist(), pt)
                blobs.append(self.encrypt(k, pt))
        return pack(blobs)

    def answer_slots(self, offer: bytes, y: np.ndarray) -> tuple[bytes, np.ndarray]:
        """Reply Enc(x*y + r) and return our share -r mod 2^64 of x*y."""
        y = np.ascontiguousarray(y, dtype=U64).ravel()
        chunks = self._chunks(y.size)
        blobs = unpack(offer)
        if len(blobs) != len(chunks) * len(self.suite.primes):
            raise ProtocolViolation("offer has the wrong number of ciphertexts")
        masks, low = self._masks(y.size)
        out = []
        for k, p in enumerate(self.suite.primes):
            ev, enc = self.suite.evaluators[k], self.suite.encoders[k]
            yres = uint64_to_residues(y, p)
            for c, sl in enumerate(chunks):
                ct = self.suite.load_offer(k, blobs[k * len(chunks) + c])
                py, pr = seal.Plaintext(), seal.Plaintext()
                enc.encode(yres[sl].tolist(), py)
                enc.encode(masks[k][sl].tolist(), pr)
                ct = self._times(k, ct, py)
                ev.add_plain_inplace(ct, pr)
                out.append(self._seal_reply(k, ct, self.suite.n))
        with np.errstate(over="ignore"):
            share = (U64(0) - low).astype(U64)
        return pack(out), share

    def finish_slots(self, reply: bytes, count: int) -> np.ndarray:
        """Our share x*y + r mod 2^64 of the cross term we offered."""
        chunks = self._chunks(count)
        blobs = unpack(reply)
        if len(blobs) != len(chunks) * len(self.suite.primes):
            raise ProtocolViolation("reply has the wrong number of ciphertexts")
        residues = []
        for k in range(len(self.suite.primes)):
            res = np.empty(count, dtype=U64)
            for c, sl in enumerate(chunks):
                vals = self.suite.encoders[k].decode_uint64(self.open_reply(k, blobs[k * len(chunks) + c]))
                res[sl] = np.asarray(vals[: sl.stop - sl.start], dtype=U64)
            residues.append(res)
        return crt_mod_2_64(residues, self.suite.primes)

    # ---------------------------------------------------------------- matmul (coefficients)

    def offer_matmul(self, x: np.ndarray, plan: MatmulPlan) -> bytes:
        """Enc of every (nw,kw) block of x, coefficient-encoded as Σ x[i,l] T^(i*mw*kw + kw-1-l)."""
        x = np.asarray(x, dtype=U64)
        if x.shape != (plan.n, plan.k):
            raise InternalError("offer does not match the plan")
        nb, kb, _ = plan.blocks
        blobs = []
        for k, p in enumerate(self.suite.primes):
            res = uint64_to_residues(x, p)
            for bi in range(nb):
                for bl in range(kb):
                    blk = res[bi * plan.nw : (bi + 1) * plan.nw, bl * plan.kw : (bl + 1) * plan.kw]
                    coeffs = np.zeros(self.suite.n, dtype=U64)
                    ii, ll = np.meshgrid(np.arange(blk.shape[0]), np.arange(blk.shape[1]), indexing="ij")
                    coeffs[ii * plan.mw * plan.kw + plan.kw - 1 - ll] = blk
                    blobs.append(self.encrypt(k, self.suite.coeff_plaintext(coeffs, k)))
        return pack(blobs)

    def _positions(self, plan: MatmulPlan) -> np.ndarray:
        """Coefficient index of output (i, j) inside a block product."""
        ii, jj = np.meshgrid(np.arange(plan.nw), np.arange(plan.mw), indexing="ij")
        return (ii * plan.mw + jj) * plan.kw + plan.kw - 1

    def answer_matmul(self, offer: bytes, y: np.ndarray, plan: MatmulPlan,
                      helper: AnswerHelper | None = None) -> tuple[bytes, np.ndarray]:
        """Reply Enc(Σ_group x_blk @ y_blk + r) per output block and group; return our share.

        With ``helper`` (a second process of this party, :mod:`collab.he.helper`)
        the column blocks are split between it and this process; a helper that
        fails only costs the time: its columns are answered here.
        """
        y = np.asarray(y, dtype=U64)
        if y.shape != (plan.k, plan.m):
            raise InternalError("answer does not match the plan")
        nb, kb, mb = plan.blocks
        blobs = unpack(offer)
        if len(blobs) != nb * kb * len(self.suite.primes):
            raise ProtocolViolation("matmul offer has the wrong number of ciphertexts")
        n_replies = nb * mb * plan.groups
        masks, low = self._reply_masks(n_replies, self._positions(plan))
        rows_of = lambda cols: {r: masks[:, r] for r in reply_indices(plan, cols)}  # noqa: E731
        theirs = list(range(mb // 2, mb)) if helper is not None and mb > 1 else []
        mine = [bj for bj in range(mb) if bj not in theirs]
        if theirs:
            try:
                helper.submit(self.peer_hello, offer, y, plan, rows_of(theirs), theirs)  # type: ignore[union-attr]
            except Unavailable:  # logged by the helper module; answered here instead
                mine, theirs = list(range(mb)), []
        started = time.monotonic()
        replies = answer_columns(self.suite, self._peer(), self.rng, blobs, y, plan, rows_of(mine), mine)
        if theirs:
            try:
                replies.update(helper.collect(timeout=120.0 + 4 * (time.monotonic() - started)))  # type: ignore[union-attr]
            except Unavailable:  # logged by the helper module; answered here instead
                replies.update(answer_columns(self.suite, self._peer(), self.rng, blobs, y, plan, rows_of(theirs), theirs))
        with np.errstate(over="ignore"):
            share = np.uint64(0) - plan.add_blocks(low)  # our share of the cross term: -Σ r
        out = [replies[k, r] for k in range(len(self.suite.primes)) for r in range(n_replies)]
        return pack(out), share

    def _reply_masks(self, n_replies: int, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masks of every coefficient of ``n_replies`` matmul replies: residues (prime, reply, coefficient), and
        r mod 2^64 at the outputs.

        Output coefficients (``pos``) get r uniform in [0, 2^mask_bits), which
        keeps them exact after CRT; every other coefficient (a partial inner
        product nobody uses) only needs hiding, so it gets an independent
        uniform residue per prime, i.e. a mask uniform over Z_M by CRT, which
        hides it perfectly and costs a fraction of a 179-bit mask.
        """
        flat = pos.ravel()
        out, low = self._masks(n_replies * flat.size)
        masks = np.empty((len(self.suite.primes), n_replies, self.suite.n), dtype=U64)
        for k, p in enumerate(self.suite.primes):
            masks[k] = self.rng.residues_below(n_replies * self.suite.n, p).reshape(n_replies, self.suite.n)
            masks[k][:, flat] = out[k].reshape(n_replies, flat.size)
        return masks, low.reshape(n_replies, *pos.shape)

    def finish_matmul(self, reply: bytes, plan: MatmulPlan) -> np.ndarray:
        nb, _, mb = plan.blocks
        n_replies = nb * mb * plan.groups
        blobs = unpack(reply)
        if len(blobs) != n_replies * len(self.suite.primes):
            raise ProtocolViolation("matmul reply has the wrong number of ciphertexts")
        pos = self._positions(plan).ravel()
        residues = []
        for k in range(len(self.suite.primes)):
            vals = np.empty((n_replies, pos.size), dtype=U64)
            for r in range(n_replies):
                vals[r] = coefficients(self.open_reply(k, blobs[k * n_replies + r]), pos)
            residues.append(vals.ravel())
        return plan.add_blocks(crt_mod_2_64(residues, self.suite.primes).reshape(n_replies, plan.nw, plan.mw))

    # ---------------------------------------------------------------- AND of bits (XOR shares)

    def offer_bits(self, x: np.ndarray) -> bytes:
        """Enc(x) for bits x, under the first prime only."""
        x = np.ascontiguousarray(x, dtype=U64).ravel()
        blobs = []
        for sl in self._chunks(x.size):
            pt = seal.Plaintext()
            self.suite.encoders[0].encode(x[sl].tolist(), pt)
            blobs.append(self.encrypt(0, pt))
        return pack(blobs)

    def answer_bits(self, offer: bytes, y: np.ndarray) -> tuple[bytes, np.ndarray]:
        """Reply Enc((x AND y) XOR s) = Enc(x*y*(1-2s) + s); our XOR share is s."""
        y = np.ascontiguousarray(y, dtype=U64).ravel()
        chunks = self._chunks(y.size)
        blobs = unpack(offer)
        if len(blobs) != len(chunks):
            raise ProtocolViolation("bit offer has the wrong number of ciphertexts")
        p = self.suite.primes[0]
        s = self.rng.bits(y.size)
        coef = np.where(s == 1, (U64(p) - y) % U64(p), y).astype(U64)
        ev, enc = self.suite.evaluators[0], self.suite.encoders[0]
        out = []
        for c, sl in enumerate(chunks):
            ct = self.suite.load_offer(0, blobs[c])
            pc, ps = seal.Plaintext(), seal.Plaintext()
            enc.encode(coef[sl].tolist(), pc)
            enc.encode(s[sl].tolist(), ps)
            ct = self._times(0, ct, pc)
            if not ps.is_zero():
                ev.add_plain_inplace(ct, ps)
            out.append(self._seal_reply(0, ct, self.suite.n))
        return pack(out), s

    def finish_bits(self, reply: bytes, count: int) -> np.ndarray:
        chunks = self._chunks(count)
        blobs = unpack(reply)
        if len(blobs) != len(chunks):
            raise ProtocolViolation("bit reply has the wrong number of ciphertexts")
        out = np.empty(count, dtype=U64)
        for c, sl in enumerate(chunks):
            vals = np.asarray(self.suite.encoders[0].decode_uint64(self.open_reply(0, blobs[c])), dtype=U64)
            out[sl] = vals[: sl.stop - sl.start]
        # INVARIANT: an honest reply decrypts to bits.
        if np.any(out > 1):
            raise ProtocolViolation("bit reply decrypted to a non-bit")
        return out


# ---------------------------------------------------------------------- triples (both directions)


def _bits_of(words: np.ndarray) -> np.ndarray:
    return ((words.reshape(-1, 1) >> np.arange(64, dtype=U64)) & U64(1)).ravel()


def _words_of(bits: np.ndarray) -> np.ndarray:
    return (bits.reshape(-1, 64) << np.arange(64, dtype=U64)).sum(axis=1, dtype=U64)


class TripleGenerator:
    """Produces this party's shares of triples by running the protocol over a channel.

    Both parties call the same methods with the same arguments in the same
    order. Shares are uint64 numpy arrays (CrypTen reads them as int64).
    """

    def __init__(self, party: HeParty, channel: Channel) -> None:
        self.party, self.channel = party, channel
        self.traffic = Traffic()
        self._met = False
        self.bit_party = HeParty(BfvSuite(BIT_PARAMS))  # AND bits run on their own small suite

    def _bits(self) -> HeParty:
        self.setup()
        return self.bit_party

    def _swap(self, payload: bytes) -> bytes:
        got = self.channel.exchange(payload)
        t = self.traffic
        t.bytes_sent += len(payload)
        t.bytes_received += len(got)
        t.messages += 1
        if t.current is not None:
            entry = t.kind(t.current)
            entry["bytes_sent"] += len(payload)
            entry["round_trips"] += 1
        return got

    def _timed(self, kind: str, detail: str | None = None, count: bool = True) -> _Timer:
        """Time one tuple request; ``detail`` (e.g. a matmul shape) splits the per-kind profile.

        ``counts`` counts requests; a batch (``count`` False) counts its requests itself.
        """
        if count:
            self.traffic.counts[kind] = self.traffic.counts.get(kind, 0) + 1
        return _Timer(self.traffic, f"{kind} {detail}" if detail else kind)

    def setup(self) -> None:
        """Exchange public keys once (the one-time key transfer)."""
        if not self._met:
            with self._timed("setup"):
                theirs = unpack(self._swap(pack([self.party.hello(), self.bit_party.hello()])))
                if len(theirs) != 2:
                    raise ProtocolViolation("peer key exchange must carry the main and the bit suite's keys")
                self.party.meet(theirs[0])
                self.bit_party.meet(theirs[1])
            self._met = True

    def cross_slots(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Our share of x_self*y_peer + x_peer*y_self (element-wise, same shapes)."""
        self.setup()
        count = x.size
        theirs = self._swap(self.party.offer_slots(x))
        reply, share_answer = self.party.answer_slots(theirs, y)
        share_offer = self.party.finish_slots(self._swap(reply), count)
        with np.errstate(over="ignore"):
            return (share_offer + share_answer).reshape(x.shape)

    def mul(self, size0: tuple[int, ...], size1: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shares of (a, b, a*b) with a of ``size0``, b of ``size1`` (broadcasting as torch.mul)."""
        return self._one("mul", tuple(size0), tuple(size1))  # type: ignore[return-value]

    def square(self, size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Shares of (r, r^2): r^2 = r_0^2 + r_1^2 + 2 r_0 r_1."""
        return self._one("square", tuple(size))  # type: ignore[return-value]

    def matmul(self, size0: tuple[int, ...], size1: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shares of (a, b, a@b) with torch.matmul's shape rules (batch dims broadcast)."""
        with self._timed("matmul", f"{_shape(size0)}@{_shape(size1)}"):
            a, b = self.party.rng.uint64(tuple(size0)), self.party.rng.uint64(tuple(size1))
            a2 = a.reshape(1, -1) if a.ndim == 1 else a
            b2 = b.reshape(-1, 1) if b.ndim == 1 else b
            if a2.shape[-1] != b2.shape[-2]:
                raise BadInput(f"matmul shapes {tuple(size0)} and {tuple(size1)} do not match")
            if b2.ndim == 2:  # weight-like right operand: fold a's batch dims into its rows
                c2 = self._matmul2d(a2.reshape(-1, a2.shape[-1]), b2).reshape(*a2.shape[:-1], b2.shape[-1])
            else:
                batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
                ab = np.broadcast_to(a2, batch + a2.shape[-2:]).reshape(-1, *a2.shape[-2:])
                bb = np.broadcast_to(b2, batch + b2.shape[-2:]).reshape(-1, *b2.shape[-2:])
                c2 = self._batched2d(ab, bb).reshape(*batch, a2.shape[-2], b2.shape[-1])
            if a.ndim == 1:
                c2 = c2.squeeze(-2)
            if b.ndim == 1:
                c2 = c2.squeeze(-1)
            return a, b, c2

    def matmul_fixed(self, size0: tuple[int, ...], b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shares of a fresh ``a`` of ``size0`` and ``c = a @ B`` for a mask ``B`` fixed per model load.

        ``b`` is this party's own share of B (2-D, drawn locally once); B is
        jointly random and never opened, so the weight's ``W - B`` can be
        opened once and reused, and each query only needs this (a, c).
        """
        with self._timed("matmul_fixed", f"{_shape(size0)}@{_shape(b.shape)}"):
            if b.ndim != 2 or size0[-1] != b.shape[0]:
                raise BadInput(f"fixed-mask matmul shapes {tuple(size0)} and {b.shape} do not match")
            a = self.party.rng.uint64(tuple(size0))
            b = np.ascontiguousarray(b, dtype=U64)
            # An owner-held weight (collab.mpc.fixed.OwnerHeldWeight) is the whole mask on one side and
            # zeros on the other, which is public; a cross term with a zero operand is zero, so only
            # the direction "other party offers, holder answers" runs. A random share is never all zero.
            self.setup()
            mine_zero = not b.any()
            peer_zero = self._swap(b"\x01" if mine_zero else b"\x00") == b"\x01"
            c = self._matmul2d(a.reshape(-1, b.shape[0]), b, offer=not peer_zero, answer=not mine_zero)
            return a, c.reshape(*size0[:-1], b.shape[1])

    def _batched2d(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Our share of a[h] @ b[h] for every h of a (B, n, k) @ (B, k, m) batch (attention's heads).

        Where the cost model says so, the batch runs as one matmul
        ``[a_1 … a_B] @ blockdiag(b_1 … b_B)``, whose output is
        ``[a_1 b_1 … a_B b_B]``: its zero blocks cost no product, and the
        heads share offers and replies instead of paying whole ciphertexts
        each (12 heads of (32×32)(32×32): 13 replies per prime and direction
        instead of 24). Both parties decide alike: the shapes are public.
        """
        heads, n, k = a.shape
        m = b.shape[2]
        if heads == 1 or not block_diagonal_pays(heads, n, k, m, self.party.suite):
            return np.stack([self._matmul2d(x, y) for x, y in zip(a, b)])
        wide = np.ascontiguousarray(a.transpose(1, 0, 2).reshape(n, heads * k))
        diagonal = np.zeros((heads * k, heads * m), dtype=U64)
        for h in range(heads):
            diagonal[h * k : (h + 1) * k, h * m : (h + 1) * m] = b[h]
        out = self._matmul2d(wide, diagonal)  # (n, heads·m): head h in columns [h·m, (h+1)·m)
        return np.ascontiguousarray(out.reshape(n, heads, m).transpose(1, 0, 2))

    def _matmul2d(self, a: np.ndarray, b: np.ndarray, *, offer: bool = True, answer: bool = True) -> np.ndarray:
        """Our share of a_0 b_0 + a_1 b_1 + both cross terms; ``offer``/``answer`` False skip a zero term.

        Both parties must agree on the directions: our ``offer`` is the peer's
        ``answer``. A skipped direction sends empty messages in its place.
        """
        self.setup()
        n, k = a.shape
        m = b.shape[1]
        plan = plan_matmul(n, k, m, self.party.suite)
        with np.errstate(over="ignore"):
            out = _matmul_u64(a, b)
            theirs = self._swap(self.party.offer_matmul(np.ascontiguousarray(a), plan) if offer else b"")
            reply = b""
            if answer:
                # Answering alone (an owner-held weight): the peer waits, so a second process takes half the columns.
                nb, kb, mb = plan.blocks
                helper = helper_for(self.party.suite.params) if not offer and helper_wanted(nb * kb * mb) else None
                reply, share_answer = self.party.answer_matmul(theirs, np.ascontiguousarray(b), plan, helper)
                out = out + share_answer
            elif theirs:
                raise ProtocolViolation("peer offered a matmul cross term it should have skipped")
            back = self._swap(reply)
            if offer:
                out = out + self.party.finish_matmul(back, plan)
            elif back:
                raise ProtocolViolation("peer answered a matmul cross term nobody offered")
            return out

    def lookup_rows(self, table: EncryptedTable | None, ids: np.ndarray | None, count: int,
                    shape: tuple[int, int], cache: TableCache | None = None) -> np.ndarray:
        """This party's share of ``table[ids]``, (count, width): the owner passes its encrypted ``table``
        (:class:`collab.he.lookup.EncryptedTable`, made once per model load), the client its ``ids`` and,
        optionally, its ``cache`` of tables (:mod:`collab.he.table_cache`).

        See :mod:`collab.he.lookup` for the protocol. The owner first names
        its table by digest; a client holding an intact copy says so and the
        table is not sent.
        """
        from collab.he import lookup

        rows, width = shape
        if table is not None and (table.shape != (rows, width) or ids is not None):
            raise InternalError("the owner passes its table, of the agreed shape, and no ids")
        if table is None:  # the client: its ids are checked before anything is sent
            if ids is None:
                raise InternalError("the client passes its ids")
            ids = lookup.check_ids(ids, rows)
            if ids.size != count:
                raise InternalError(f"{ids.size} ids, {count} agreed")
        with self._timed("lookup", f"{_shape(shape)}[{count}]"):
            self.setup()
            if table is not None:
                if self._swap(table.digest):
                    raise ProtocolViolation("the client sent data before the table's digest")
                if self._swap(b"") != b"\x01":  # the client keeps no intact copy: send it the table
                    for message in [table.hello, *table.messages]:
                        if self._swap(message):
                            raise ProtocolViolation("the client sent data while receiving the table")
                return table.open(unpack(self._swap(b"")), count)
            n = self.party.suite.n
            digest = self._swap(b"")
            need, expected = lookup.wanted(ids, rows, width, n), lookup.PRIMES * lookup.table_ciphertexts(rows, width, n)
            kept = cache.rows(digest, need, expected) if cache is not None and len(digest) == 32 else None
            self._swap(b"\x01" if kept else b"")
            owner_hello, blobs = kept if kept else self._receive_table(digest, need, expected, cache)
            replies, share = lookup.select_rows(self.party, owner_hello, blobs, ids, rows, width)
            if self._swap(pack(replies)):
                raise ProtocolViolation("the owner sent data while receiving the lookup replies")
            return share

    def _receive_table(self, digest: bytes, need: set[int], expected: int,
                       cache: TableCache | None) -> tuple[bytes, dict[int, bytes]]:
        """The client receives the whole table, keeps the ciphertexts it ``need``s (and a copy in ``cache``)."""
        owner_hello, blobs, pos = self._swap(b""), {}, 0
        writer = cache.writer(digest) if cache is not None else None
        try:
            while pos < expected:
                chunk = unpack(self._swap(b""))
                if not chunk or pos + len(chunk) > expected:
                    raise ProtocolViolation("the owner's table has the wrong number of ciphertexts")
                for i, blob in enumerate(chunk):
                    if writer is not None:
                        writer.add(blob)
                    if pos + i in need:
                        blobs[pos + i] = blob
                pos += len(chunk)
            if writer is not None and not writer.commit(owner_hello):
                raise ProtocolViolation("the owner's table does not match the digest it announced")
        finally:
            if writer is not None:
                writer.abandon()  # a no-op after a commit
        return owner_hello, blobs

    def binary(self, size0: tuple[int, ...], size1: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """XOR shares of (a, b, a AND b) on 64-bit words (broadcasting)."""
        return self._one("binary", tuple(size0), tuple(size1))  # type: ignore[return-value]

    def cross_bits(self, xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
        """Our XOR share, packed into 64-bit words, of x_self AND y_peer XOR x_peer AND y_self (bit vectors)."""
        bits = self._bits()
        theirs = self._swap(bits.offer_bits(xa))
        reply, s = bits.answer_bits(theirs, xb)
        mine = bits.finish_bits(self._swap(reply), xa.size)
        return _words_of(s) ^ _words_of(mine)

    def batched(self, requests: list[object]) -> list[tuple[np.ndarray, ...]]:
        """Many small requests (:class:`collab.he.batch.Request`) sharing ciphertexts; see :mod:`collab.he.batch`."""
        from collab.he.batch import run_batched

        return run_batched(self, requests)  # type: ignore[arg-type]

    def b2a_bits(self, size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """A random bit r as (arithmetic share, XOR share): r = r0 + r1 - 2 r0 r1."""
        return self._one("b2a", tuple(size))  # type: ignore[return-value]

    def _one(self, kind: str, *sizes: tuple[int, ...]) -> tuple[np.ndarray, ...]:
        """One request on its own ciphertexts (the batch machinery with a batch of one), timed as ``kind``."""
        from collab.he.batch import Request, run_batched

        return run_batched(self, [Request(kind, sizes)], label=kind)[0]


def _shape(size: tuple[int, ...]) -> str:
    return "(" + "x".join(str(int(d)) for d in size) + ")"


def _matmul_u64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b in Z_2^64 exactly (numpy integer matmul wraps, no BLAS, no float)."""
    with np.errstate(over="ignore"):
        return np.matmul(a.astype(U64), b.astype(U64))


class _Timer:
    """Adds a request's wall time to the totals and to its kind; nested requests count once (outermost)."""

    def __init__(self, traffic: Traffic, kind: str) -> None:
        self.traffic, self.name = traffic, kind

    def __enter__(self) -> None:
        self.outer = self.traffic.current is None
        if self.outer:
            self.traffic.current = self.name
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        if not self.outer:
            return
        dt = time.perf_counter() - self.t0
        self.traffic.seconds += dt
        entry = self.traffic.kind(self.name)
        entry["calls"] += 1
        entry["seconds"] += dt
        self.traffic.current = None


def run_pair(fn_name: str, *args: object, params: BfvParams | None = None) -> tuple[object, object]:
    """Run one generator method in two in-process parties (threads) joined by a QueueChannel.

    For tests and benchmarks: the two parties share nothing but the bytes on the channel.
    """
    # A short peer timeout: if one party fails, the other gives up within two
    # minutes instead of waiting out the network default.
    ch0, ch1 = QueueChannel.pair(timeout=120.0)
    suites = (BfvSuite(params), BfvSuite(params))
    gens = [TripleGenerator(HeParty(suites[i]), ch) for i, ch in enumerate((ch0, ch1))]
    results: list[object] = [None, None]
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            results[i] = getattr(gens[i], fn_name)(*args)
        except BaseException as exc:  # surfaced in the caller
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results[0], results[1]
