"""``--mode he``: a private head evaluated by the owner on the client's CKKS-encrypted features.

The lightweight two-party job needs no MPC: the client embeds its text with a
*public* encoder, encrypts the embedding with TenSEAL CKKS under its own key
and sends the ciphertext with a public context (Galois and relinearisation
keys, no secret key). The owner evaluates its private head homomorphically:
one ct-pt dot product per output for the linear map ``W x + b``, optionally followed by a small polynomial applied
element-wise, adds its DP noise (encoded as a plaintext) and returns one
ciphertext per output; only the client can decrypt them.

Privacy: the owner sees only ciphertexts (IND-CPA under RLWE). The client sees
the head's output; CKKS ciphertexts are not circuit-private, so the returned
ciphertext's noise could in principle carry a little information about W
beyond the output. Noise flooding (as in collab/he's BFV replies) is not done
for CKKS here: treat the head's exact weights as protected by the DP noise
and the output clipping, not by circuit privacy.

The head file is JSON: ``{"weight": [[...]] (classes x dim), "bias": [...],
"labels": [...], "poly": [c0, c1, ...] (optional)}``.

``python -m collab.he.ckks_head --head HEAD.json --request IN --reply OUT
[--noise NOISE.json]`` is the owner's side as a separate process.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from collab.errors import BadInput, CollabError, NotFound

POLY_MODULUS = 8192
COEFF_BITS = (45, 35, 35, 35, 60)  # 210 of N=8192's 218 bits: levels for a dot product and a degree-2 polynomial; 60-bit special prime for key switching
SCALE_BITS = 35
MAX_POLY_DEGREE = 2


@dataclass(frozen=True)
class LinearHead:
    """The owner's private head: ``poly(W x + b)``, with class labels."""

    weight: np.ndarray  # (classes, dim)
    bias: np.ndarray  # (classes,)
    labels: tuple[str, ...]
    poly: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.weight.ndim != 2 or self.bias.shape != (self.weight.shape[0],):
            raise BadInput("head weight must be (classes, dim) and bias (classes,)")
        if self.labels and len(self.labels) != self.weight.shape[0]:
            raise BadInput("one label per head output needed")
        if len(self.poly) > MAX_POLY_DEGREE + 1:
            raise BadInput(f"polynomial heads are limited to degree {MAX_POLY_DEGREE} (multiplicative depth)")

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    @property
    def classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def lipschitz(self) -> float:
        """``||W||_2``: how far the linear output moves per unit of input (DP sensitivity)."""
        return float(np.linalg.norm(self.weight, ord=2))

    def plain(self, x: np.ndarray) -> np.ndarray:
        """The head in plaintext (ground truth for the HE path)."""
        z = x @ self.weight.T + self.bias
        return np.polynomial.polynomial.polyval(z, self.poly) if self.poly else z

    def label_of(self, scores: np.ndarray) -> str:
        idx = int(np.argmax(scores))
        return self.labels[idx] if self.labels else str(idx)


def load_head(path: Path | str) -> LinearHead:
    """Read a head file (JSON, see the module docstring)."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise NotFound(f"no head file at {path}") from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot read head file {path}: {exc}") from None
    try:
        return LinearHead(np.asarray(raw["weight"], dtype=np.float64), np.asarray(raw["bias"], dtype=np.float64),
                          tuple(str(s) for s in raw.get("labels", [])), tuple(float(c) for c in raw.get("poly", [])))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"malformed head file {path}: {exc}") from None


def save_head(head: LinearHead, path: Path | str) -> None:
    Path(path).write_text(json.dumps({"weight": head.weight.tolist(), "bias": head.bias.tolist(),
                                      "labels": list(head.labels), "poly": list(head.poly)}))


def _pack(*blobs: bytes) -> bytes:
    return b"".join(struct.pack(">Q", len(b)) + b for b in blobs)


def _unpack(data: bytes, count: int) -> list[bytes]:
    out, pos = [], 0
    for _ in range(count):
        if pos + 8 > len(data):
            raise BadInput("truncated HE message")
        (n,) = struct.unpack(">Q", data[pos : pos + 8])
        out.append(data[pos + 8 : pos + 8 + n])
        pos += 8 + n
    if pos != len(data) or any(not b for b in out):
        raise BadInput("malformed HE message")
    return out


class CkksClient:
    """The client's side: key owner, encrypts its features, decrypts the head's output."""

    def __init__(self) -> None:
        import tenseal as ts

        self._ts = ts
        self.context = ts.context(ts.SCHEME_TYPE.CKKS, POLY_MODULUS, coeff_mod_bit_sizes=list(COEFF_BITS))
        self.context.global_scale = 2**SCALE_BITS
        self.context.generate_galois_keys()
        self.context.generate_relin_keys()

    def request(self, features: np.ndarray) -> bytes:
        """Public context + Enc(features): everything the owner receives (no secret key)."""
        x = np.asarray(features, dtype=np.float64).reshape(-1)
        ct = self._ts.ckks_vector(self.context, x.tolist())
        return _pack(self.context.serialize(save_secret_key=False), ct.serialize())

    def decrypt(self, reply: bytes, outputs: int) -> np.ndarray:
        """The head's (noised) outputs; ``outputs`` is the public number of classes."""
        blobs = _unpack(reply, outputs)
        try:
            return np.asarray([self._ts.ckks_vector_from(self.context, b).decrypt()[0] for b in blobs])
        except Exception as exc:  # tenseal raises ValueError/RuntimeError on foreign bytes
            raise BadInput(f"the owner's reply does not decrypt: {exc}") from None


def evaluate(request: bytes, head: LinearHead, noise: np.ndarray | None = None) -> bytes:
    """The owner's side: ``poly(W x + b) + noise`` on the encrypted features, one ciphertext back."""
    import tenseal as ts

    ctx_blob, ct_blob = _unpack(request, 2)
    try:
        ctx = ts.context_from(ctx_blob)
        ct = ts.ckks_vector_from(ctx, ct_blob)
    except Exception as exc:
        raise BadInput(f"malformed HE request: {exc}") from None
    if ctx.has_secret_key():
        raise BadInput("the HE request carries a secret key; refusing (the owner must not hold it)")
    if ct.size() != head.dim:
        raise BadInput(f"encrypted features have {ct.size()} values, the head expects {head.dim}")
    # One ct-pt dot product per output (rotations summing into one slot): far cheaper than a
    # vector-matrix product when the head has few outputs.
    noise_v = None if noise is None else np.asarray(noise, dtype=np.float64).reshape(-1)
    if noise_v is not None and noise_v.shape != (head.classes,):
        raise BadInput(f"noise has {noise_v.shape} values, the head has {head.classes} outputs")
    outs = []
    for i in range(head.classes):
        z = ct.dot(head.weight[i].tolist()) + float(head.bias[i])
        if head.poly:
            z = z.polyval(list(head.poly))
        if noise_v is not None:
            z = z + float(noise_v[i])
        outs.append(z.serialize())
    return _pack(*outs)


def main(argv: list[str] | None = None) -> int:
    """Owner process: read the request, evaluate, write the reply (exit code = the error's)."""
    ap = argparse.ArgumentParser(prog="python -m collab.he.ckks_head")
    ap.add_argument("--head", type=Path, required=True)
    ap.add_argument("--request", type=Path, required=True)
    ap.add_argument("--reply", type=Path, required=True)
    ap.add_argument("--noise", type=Path, default=None, help="JSON list added to the output (owner's DP noise)")
    args = ap.parse_args(argv)
    try:
        noise = np.asarray(json.loads(args.noise.read_text())) if args.noise else None
        reply = evaluate(args.request.read_bytes(), load_head(args.head), noise)
        tmp = args.reply.with_suffix(".tmp")
        tmp.write_bytes(reply)
        tmp.replace(args.reply)
        return 0
    except CollabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
