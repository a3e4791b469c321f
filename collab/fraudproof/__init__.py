"""Fraud proofs: commitments to tensors, traces and programs (docs/protocol.md).

The public surface other layers use; the machinery lives in the submodules.
"""

from collab.fraudproof.commitments import (
    CHUNK_BYTES,
    CHUNK_ELEMS,
    CommittedBundle,
    CommittedTensor,
    MerkleTree,
    TensorHeader,
    commit_bundle,
    commit_tensor,
    encode_descriptor,
    fold_children,
    program_root,
    root_from_proof,
    root_from_range,
    step_leaf,
    tensor_root,
    trace_leaf,
)

__all__ = [
    "CHUNK_BYTES",
    "CHUNK_ELEMS",
    "CommittedBundle",
    "CommittedTensor",
    "MerkleTree",
    "TensorHeader",
    "commit_bundle",
    "commit_tensor",
    "encode_descriptor",
    "fold_children",
    "program_root",
    "root_from_proof",
    "root_from_range",
    "step_leaf",
    "tensor_root",
    "trace_leaf",
]
