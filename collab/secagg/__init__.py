"""Secure aggregation (SecAgg, Bonawitz et al. 2017; SecAgg+, Bell et al. 2020) in the ring Z_2^64.

The aggregator learns only Σ x_u of fixed-point vectors; dropouts after the
key exchange are recovered from Shamir shares; the aggregate is verifiable
because every seed the server unmasks with is checked against commitments
the participants signed (see docs/secagg.md).

Public API (transport-agnostic; every message has ``to_bytes``/``from_bytes``):

* :class:`RoundConfig`, :class:`Member` - the public parameters of a round;
* :class:`SecAggParticipant` - one participant's rounds 0-4;
* :class:`SecAggServer`, :class:`AggregateResult` - the aggregator;
* :func:`aggregation_witness`, :class:`AggregationWitness`, :class:`MaskTerm`,
  :func:`verify_seed_commitments` - the data of the claimed masked-sum program;
* :func:`encode` / :func:`decode` - floats to ring words and back;
  :class:`TensorLayout` - named tensors (LoRA updates, Gram matrices) to one vector and back;
* :func:`run_local_round` - the whole round in one process;
* :class:`TooFewSurvivors` - the round aborted below the threshold.
"""

from collab.secagg.config import Member, RoundConfig
from collab.secagg.errors import TooFewSurvivors
from collab.secagg.local import ROUNDS, run_local_round
from collab.secagg.masking import decode, encode
from collab.secagg.messages import (
    ConsistencyBroadcast,
    ConsistencySignature,
    EncryptedShare,
    ForwardedShares,
    KeyAdvertisement,
    KeyBroadcast,
    MaskedInput,
    SeedCommitment,
    ShareKeys,
    SurvivorList,
    UnmaskResponse,
)
from collab.secagg.participant import SecAggParticipant, Stage
from collab.secagg.server import AggregateResult, SecAggServer, aggregation_witness
from collab.secagg.vectors import TensorLayout
from collab.secagg.witness import AggregationWitness, MaskTerm, verify_seed_commitments

__all__ = [
    "ROUNDS",
    "AggregateResult",
    "AggregationWitness",
    "ConsistencyBroadcast",
    "ConsistencySignature",
    "EncryptedShare",
    "ForwardedShares",
    "KeyAdvertisement",
    "KeyBroadcast",
    "MaskTerm",
    "MaskedInput",
    "Member",
    "RoundConfig",
    "SecAggParticipant",
    "SecAggServer",
    "SeedCommitment",
    "ShareKeys",
    "Stage",
    "SurvivorList",
    "TensorLayout",
    "TooFewSurvivors",
    "UnmaskResponse",
    "aggregation_witness",
    "decode",
    "encode",
    "run_local_round",
    "verify_seed_commitments",
]
