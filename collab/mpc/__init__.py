"""Secure inference with CrypTen: 2 real parties computing a MiniLM sentence embedding.

Public API (the CLI and the orchestrator use only these):

* :class:`Approximations` - the accuracy/cost knobs of the secure encoder;
* :func:`secure_embeddings` - run the owner and client parties as real
  processes over gloo/TCP and return the client's embeddings and measurements;
* :class:`PartyGroup` - lower-level launcher/supervisor of the party processes;
* :func:`reference_embeddings`, :func:`tokenize` - the plaintext ground truth.

Importing this package does not import crypten; :mod:`collab.mpc.compat`
is imported first wherever crypten is.
"""

from collab.mpc.encoder import Approximations
from collab.mpc.model import EncoderSpec, Tokens, load_spec, reference_embeddings, tokenize
from collab.mpc.parties import PartyGroup, PartyStats, SecureResult, secure_embeddings

__all__ = [
    "Approximations",
    "EncoderSpec",
    "PartyGroup",
    "PartyStats",
    "SecureResult",
    "Tokens",
    "load_spec",
    "reference_embeddings",
    "secure_embeddings",
    "tokenize",
]
