"""Homomorphic encryption for collab: dealer-free Beaver triples for CrypTen (TenSEAL/SEAL BFV).

Public API:

* :class:`BfvParams`, :class:`BfvSuite` - CRT-BFV parameters and contexts
  (N=16384, three 60-bit batching primes, noise flooding to 2^-40);
* :class:`HeParty`, :class:`TripleGenerator` - one party of the two-party
  offline protocol producing Z_2^64 element-wise, square, matmul, binary (AND)
  and B2A-bit tuples; :class:`Channel`/:class:`QueueChannel` carry its bytes;
* :func:`install_provider` (in :mod:`collab.he.provider`, imported lazily since
  it needs crypten) - registers the CrypTen tuple provider ``"HE"``.

See docs/he_preprocessing.md for the protocol, the security argument and the
measured throughput.
"""

from collab.he.bfv import BfvParams, BfvSuite
from collab.he.triples import Channel, HeParty, MatmulPlan, QueueChannel, TripleGenerator, Traffic, run_pair

__all__ = [
    "BfvParams",
    "BfvSuite",
    "Channel",
    "HeParty",
    "MatmulPlan",
    "QueueChannel",
    "Traffic",
    "TripleGenerator",
    "run_pair",
]
