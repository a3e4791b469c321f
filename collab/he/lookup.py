"""Oblivious row lookup: shares of ``table[ids]`` for the owner's table and the client's ids, over BFV.

Why not the one-hot matmul: the embedding as ``one_hot(ids) @ table`` needs a
Beaver triple ``A @ W`` with ``A`` of ``(n, V)``, i.e. n·V·d products (V =
30,522 rows, d = 384): 152 of the encoder's 462 s of HE preprocessing at seq
32, growing with n. A lookup needs no product at all when the *owner*
encrypts its table and the *client*, who knows its ids in the clear, picks
rows out of the ciphertexts:

1. *table*: the owner coefficient-encodes ``rows_per_ct = N // d`` rows per
   plaintext (row o at coefficients ``[o·d, (o+1)·d)``), encrypts every one
   under its own key, per CRT prime, and sends them all with its public
   keys (the client must receive every ciphertext, or the owner would see
   which it wanted), unless the client kept them from an earlier query of
   the same model load (the owner names the table by digest first:
   :mod:`collab.he.table_cache`);
2. *select*: for each id the client takes its row's ciphertext, multiplies it
   by the monomial ``-T^(N - o·d)`` (a negacyclic shift, which SEAL does
   without an NTT: row o lands on coefficients ``[0, d)`` and the noise keeps
   its size), adds a mask s uniform in ``[0, 2^(64+stat_bits))`` on those d
   coefficients and uniform residues on every other one, re-randomises with
   the owner's public key, floods the noise, mod-switches down and returns
   it; its share is ``-s mod 2^64``;
3. *open*: the owner decrypts (checking the noise budget), CRT-combines the
   d coefficients into ``table[id] + s`` (never wrapping: the two primes'
   range exceeds 2^(65+stat_bits)) and keeps it mod 2^64.

What each party sees: the client, ciphertexts under the owner's key; the
owner, values masked within 2^-stat_bits of uniform, in flooded ciphertexts
whose noise does not depend on which row or ciphertext was used. Neither
learns the other's input. The work is the owner's encryption of the table
(input-independent, ~7 ms per ciphertext: 1,454 for MiniLM's table), done
once per model load under a key kept for that load (:class:`EncryptedTable`),
and per query the transfer plus, per id, one shift and one reply per prime,
whatever the sequence length. The ids are needed, so this runs once the
client has its input: the caller reports it as its own phase, next to the
input-independent tuples.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import tenseal.sealapi as seal

from collab.errors import BadInput, InternalError, ProtocolViolation
from collab.he.bfv import U64, BfvParams, BfvSuite, coefficients, crt_mod_2_64, limbs_mod, uint64_to_residues
from collab.he.table_cache import blob_hash, table_digest

if TYPE_CHECKING:
    from collab.he.triples import HeParty

#: Two plaintext primes suffice: a row word (< 2^64) plus its 104-bit mask stays below p0·p1 (~2^120).
PRIMES = 2
#: Table ciphertexts per message: ~64 MB, so neither party ever holds the whole table's bytes twice.
CHUNK = 64


def rows_per_ciphertext(n: int, width: int) -> int:
    """Rows of ``width`` words one plaintext of N coefficients holds."""
    if not 0 < width <= n:
        raise BadInput(f"a row of {width} words does not fit a ciphertext of {n} coefficients")
    return n // width


def table_ciphertexts(rows: int, width: int, n: int) -> int:
    """Ciphertexts per prime that carry a (rows, width) table."""
    return math.ceil(rows / rows_per_ciphertext(n, width))


def _primes(suite: BfvSuite) -> list[int]:
    primes = suite.primes[:PRIMES]
    # INVARIANT: the CRT range holds a 64-bit word plus a (64 + stat_bits)-bit mask without wrapping.
    if len(primes) < PRIMES or math.prod(primes).bit_length() <= 64 + suite.params.stat_bits + 1:
        raise InternalError("the lookup needs two plaintext primes wider than the mask")
    return primes


class EncryptedTable:
    """The owner's step 1, done once per model load: its table encrypted under a key kept for that load.

    The keys are the load's own (an :class:`~collab.he.triples.HeParty` of
    the session suite's parameters, of which the first two primes are used),
    not a session's: every client of the load receives the same
    ciphertexts, which IND-CPA allows for any number of them, and the owner
    decrypts only masked, flooded replies. ``messages`` are the packed wire
    messages (prime-major, then ciphertext index, at most :data:`CHUNK` per
    message); ``hello`` the public keys the client re-randomises its replies
    with; ``digest`` names the table, so a client that kept it
    (:class:`collab.he.table_cache.TableCache`) is not sent it again.
    """

    def __init__(self, table: np.ndarray, params: BfvParams | None = None) -> None:
        from collab.he.triples import HeParty, pack

        table = np.ascontiguousarray(table, dtype=U64)
        if table.ndim != 2:
            raise InternalError("the lookup table is 2-D")
        self.shape: tuple[int, int] = (int(table.shape[0]), int(table.shape[1]))
        self.party = HeParty(BfvSuite(params))  # the load's own key pair: encrypts the table, opens the replies
        self.suite = suite = self.party.suite
        rows, width = self.shape
        per = rows_per_ciphertext(suite.n, width)
        self.messages: list[bytes] = []
        self.ciphertexts, chunk = 0, []
        hashes: list[bytes] = []
        for k, p in enumerate(_primes(suite)):
            res = uint64_to_residues(table, p)
            for c in range(table_ciphertexts(rows, width, suite.n)):
                chunk.append(self.party.encrypt(k, suite.coeff_plaintext(res[c * per : (c + 1) * per].ravel(), k)))
                hashes.append(blob_hash(chunk[-1]))
                self.ciphertexts += 1
                if len(chunk) == CHUNK:  # packed as it fills: the table's bytes are held once
                    self.messages.append(pack(chunk))
                    chunk = []
        if chunk:
            self.messages.append(pack(chunk))
        self.hello = self.party.hello()
        self.digest = table_digest(self.hello, b"".join(hashes))  # what a client's copy is kept under (collab.he.table_cache)

    def open(self, replies: list[bytes], count: int) -> np.ndarray:
        """The owner's step 3: its share ``table[ids] + s mod 2^64`` from the client's replies."""
        width, primes = self.shape[1], _primes(self.suite)
        if len(replies) != count * len(primes):
            raise ProtocolViolation(f"lookup reply has {len(replies)} ciphertexts, expected {count * len(primes)}")
        positions = np.arange(width)
        residues = [np.array([coefficients(self.party.open_reply(k, replies[k * count + i]), positions)
                              for i in range(count)], dtype=U64).ravel() for k in range(len(primes))]
        return crt_mod_2_64(residues, primes).reshape(count, width)


def wanted(ids: np.ndarray, rows: int, width: int, n: int) -> set[int]:
    """Wire positions of the table ciphertexts the client's ``ids`` need (all primes)."""
    per, count = rows_per_ciphertext(n, width), table_ciphertexts(rows, width, n)
    return {k * count + int(i) // per for k in range(PRIMES) for i in np.unique(ids)}


def check_ids(ids: np.ndarray, rows: int) -> np.ndarray:
    ids = np.asarray(ids).ravel()
    if ids.size and (not np.issubdtype(ids.dtype, np.integer) or int(ids.min()) < 0 or int(ids.max()) >= rows):
        raise BadInput(f"lookup ids must be integers in [0, {rows})")
    return ids.astype(np.int64)


def select_rows(party: HeParty, owner_hello: bytes, blobs: dict[int, bytes], ids: np.ndarray, rows: int,
                width: int) -> tuple[list[bytes], np.ndarray]:
    """The client's step 2: one sealed reply per (prime, id), prime-major; its share ``-s`` of table[ids]."""
    from collab.he.triples import peer_encryptors, seal_reply, unpack

    suite = party.suite
    n, stat = suite.n, suite.params.stat_bits
    per, count = rows_per_ciphertext(n, width), table_ciphertexts(rows, width, n)
    primes = _primes(suite)
    keys = unpack(owner_hello)
    if len(keys) != len(suite.contexts):
        raise ProtocolViolation("the owner's lookup keys do not match the suite")
    peer = peer_encryptors(suite, keys)
    limbs = party.rng.limbs(ids.size * width, 64 + stat)
    replies: list[bytes] = []
    for k, p in enumerate(primes):
        ev = suite.evaluators[k]
        s_k = limbs_mod(limbs, p).reshape(ids.size, width)
        for i, row in enumerate(ids):
            c, o = divmod(int(row), per)
            ct = suite.load_offer(k, blobs[k * count + c])
            if o:
                shift = np.zeros(n, dtype=U64)
                shift[n - o * width] = p - 1  # -T^(N - o·d) = T^(-o·d): row o to coefficients [0, d)
                moved = seal.Ciphertext()
                ev.multiply_plain(ct, suite.coeff_plaintext(shift, k), moved)
                ct = moved
            mask = party.rng.residues_below(n, p)
            mask[:width] = s_k[i]
            ev.add_plain_inplace(ct, suite.coeff_plaintext(mask, k))
            replies.append(seal_reply(suite, peer[k], party.rng, k, ct, 1))
    with np.errstate(over="ignore"):
        share = (U64(0) - limbs[0]).astype(U64).reshape(ids.size, width)
    return replies, share
