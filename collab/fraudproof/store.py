"""A home's content-addressed store of programs, tensors and claim manifests.

A claimer must serve every tensor of its claims and answer games long after it
posted, possibly from a restarted process; a watcher keeps what it fetched so
a resumed game needs no second download. Objects are files named by their
root under ``<home>/fraudproof/``:

* ``tensors/<root>``: the 32-byte header word then the int64 words (little
  endian) of a numeric tensor; the root is recomputed on every read;
* ``programs/<programRoot>``: ``Program.to_bytes()``;
* ``claims/<claimId>.json``: the manifest (program root, input name → root,
  witness step → root, and, for test cheaters only, step overrides).

The on-disk job formats of the CLI live here too: a program file is
``Program.to_bytes()``; an inputs directory holds ``*.safetensors`` files of
int64 words whose metadata maps each tensor name to ``"<DOMAIN>:<f>"``;
``witnesses.safetensors`` in it (tensor ``step<i>``) holds WITNESS values.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from collab.errors import BadInput, NotFound, ProtocolViolation
from collab.fixedpoint import Domain
from collab.fraudproof.commitments import TensorHeader
from collab.fraudproof.program import Program
from collab.fraudproof.trace import Committed, Trace, build_trace, commit_value
from collab.fraudproof.vm import Value, tensor

WITNESS_FILE = "witnesses.safetensors"


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def parse_bytes32(s: str, what: str = "") -> bytes:
    """A 0x-prefixed or bare 32-byte hex value (roots, claim ids); ``what`` names it in the error."""
    label = f"{what} {s!r}" if what else repr(s)
    try:
        raw = bytes.fromhex(s.removeprefix("0x"))
    except ValueError:
        raise BadInput(f"{label} is not hex") from None
    if len(raw) != 32:
        raise BadInput(f"{label} is not 32 bytes")
    return raw


def tensor_bytes(value: Value) -> bytes:
    """Wire/disk encoding of a numeric tensor: header word ‖ int64 LE words."""
    if value.data is None:
        raise BadInput("a bundle is stored as its entries")
    return value.header.encode() + np.ascontiguousarray(value.data, dtype="<i8").tobytes()


def tensor_from_bytes(raw: bytes, root: bytes | None = None) -> Value:
    """Inverse of :func:`tensor_bytes`; with ``root``, ProtocolViolation unless it commits to it."""
    if len(raw) < 32 or (len(raw) - 32) % 8:
        raise BadInput("not an encoded tensor")
    header = TensorHeader.decode(raw[:32])
    if header.domain == Domain.BUNDLE or header.numel * 8 != len(raw) - 32:
        raise BadInput("tensor data does not match its header")
    data = np.frombuffer(raw[32:], dtype="<i8").astype(np.int64).reshape(header.shape)
    value = Value(header, data)
    if root is not None and commit_value(value).root != root:
        raise ProtocolViolation(f"tensor data does not open root {_hex(root)}")
    return value


@dataclass
class Manifest:
    """What a claim's trace is built from."""

    program_root: bytes
    inputs: dict[str, bytes]
    witnesses: dict[int, bytes] = field(default_factory=dict)
    overrides: dict[int, bytes] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "program_root": _hex(self.program_root),
            "inputs": {n: _hex(r) for n, r in self.inputs.items()},
            "witnesses": {str(i): _hex(r) for i, r in self.witnesses.items()},
            "overrides": {str(i): _hex(r) for i, r in self.overrides.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Manifest:
        try:
            return cls(
                parse_bytes32(str(data["program_root"])),
                {str(n): parse_bytes32(str(r)) for n, r in dict(data["inputs"]).items()},  # type: ignore[call-overload]
                {int(i): parse_bytes32(str(r)) for i, r in dict(data.get("witnesses", {})).items()},  # type: ignore[call-overload]
                {int(i): parse_bytes32(str(r)) for i, r in dict(data.get("overrides", {})).items()},  # type: ignore[call-overload]
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadInput(f"malformed claim manifest: {exc}") from None


class Store:
    """Content-addressed objects under ``<home>/fraudproof``."""

    def __init__(self, home: Path) -> None:
        self.root = Path(home) / "fraudproof"
        for sub in ("tensors", "programs", "claims"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def _write(self, path: Path, raw: bytes) -> None:
        if path.exists():
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(raw)
        os.replace(tmp, path)

    def put_tensor(self, value: Value, known: Committed | None = None) -> bytes:
        """Store a numeric tensor under its root (``known``: its commitment, so it is not rehashed)."""
        root = (known if known is not None and known.value is value else commit_value(value)).root
        self._write(self.root / "tensors" / root.hex(), tensor_bytes(value))
        return root

    def tensor_raw(self, root: bytes) -> bytes:
        path = self.root / "tensors" / root.hex()
        if not path.is_file():
            raise NotFound(f"no tensor {_hex(root)} in {self.root}")
        return path.read_bytes()

    def get_tensor(self, root: bytes) -> Value:
        return tensor_from_bytes(self.tensor_raw(root), root)

    def has(self, root: bytes) -> bool:
        return (self.root / "tensors" / root.hex()).is_file() or (self.root / "programs" / root.hex()).is_file()

    def put_program(self, program: Program) -> bytes:
        root = program.root
        self._write(self.root / "programs" / root.hex(), program.to_bytes())
        return root

    def program_raw(self, root: bytes) -> bytes:
        path = self.root / "programs" / root.hex()
        if not path.is_file():
            raise NotFound(f"no program {_hex(root)} in {self.root}")
        return path.read_bytes()

    def get_program(self, root: bytes) -> Program:
        program = Program.from_bytes(self.program_raw(root))
        if program.root != root:
            raise ProtocolViolation(f"stored program does not open {_hex(root)}")
        return program

    def save_job(
        self,
        claim_id: bytes,
        program: Program,
        inputs: Mapping[str, Value],
        witnesses: Mapping[int, np.ndarray] | None = None,
        overrides: Mapping[int, Value] | None = None,
        trace: Trace | None = None,
    ) -> Manifest:
        """Store everything a claim's trace is built from, under its claim id (``trace``: the
        claim's own, whose input commitments are reused rather than rehashed)."""
        wit = {}
        for i, w in (witnesses or {}).items():
            h = TensorHeader.decode(program.steps[i].out_header)
            wit[int(i)] = self.put_tensor(tensor(np.asarray(w, dtype=np.int64).reshape(h.shape), h.domain, h.frac_bits))
        manifest = Manifest(
            self.put_program(program),
            {n: self.put_tensor(v, trace.committed(v) if trace is not None else None) for n, v in inputs.items()},
            wit,
            {int(i): self.put_tensor(v) for i, v in (overrides or {}).items()},
        )
        self.put_manifest(claim_id, manifest)
        return manifest

    def put_manifest(self, claim_id: bytes, manifest: Manifest) -> None:
        path = self.root / "claims" / f"{claim_id.hex()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest.to_json(), indent=1))
        os.replace(tmp, path)

    def manifest(self, claim_id: bytes) -> Manifest:
        path = self.root / "claims" / f"{claim_id.hex()}.json"
        if not path.is_file():
            raise NotFound(f"claim {_hex(claim_id)} is not in {self.root}")
        return Manifest.from_json(json.loads(path.read_text()))

    def claim_ids(self) -> list[bytes]:
        return [bytes.fromhex(p.stem) for p in sorted((self.root / "claims").glob("*.json"))]

    def roots_of(self, claim_id: bytes) -> set[bytes]:
        """Every object a claim's audience may fetch: program, inputs, witnesses and (built) step outputs."""
        m = self.manifest(claim_id)
        trace = self.trace(claim_id)
        roots = {m.program_root, *m.inputs.values(), *m.witnesses.values()}
        roots |= {c.root for c in trace.outputs if c.header.domain != Domain.BUNDLE}
        return roots

    def trace(self, claim_id: bytes, *, honest: bool = False) -> Trace:
        """Rebuild the claim's trace from stored objects (``honest`` ignores test overrides)."""
        m = self.manifest(claim_id)
        program = self.get_program(m.program_root)
        inputs = {n: self.get_tensor(r) for n, r in m.inputs.items()}
        witnesses = {i: self.get_tensor(r).data for i, r in m.witnesses.items()}
        overrides = None if honest else {i: self.get_tensor(r) for i, r in m.overrides.items()}
        for root in [*m.overrides.values()]:  # so the claimer can serve its own (wrong) step outputs
            self.get_tensor(root)
        return build_trace(program, inputs, witnesses, overrides)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- CLI job files


def read_program_file(path: Path) -> Program:
    """A program file (``Program.to_bytes()``); BadInput if it is not one."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise NotFound(f"cannot read program file {path}: {exc.strerror or exc}") from None
    return Program.from_bytes(raw)


def write_inputs_dir(path: Path, inputs: Mapping[str, Value], witnesses: Mapping[int, np.ndarray] | None = None) -> None:
    """Write a job's inputs (and witnesses) in the CLI's inputs-directory format."""
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {n: torch.from_numpy(np.ascontiguousarray(v.data, dtype=np.int64)) for n, v in inputs.items()}
    meta = {n: f"{v.header.domain.name}:{v.header.frac_bits}" for n, v in inputs.items()}
    save_file(tensors, str(path / "inputs.safetensors"), metadata=meta)
    if witnesses:
        wt = {f"step{i}": torch.from_numpy(np.asarray(w, dtype=np.int64).reshape(-1)) for i, w in witnesses.items()}
        save_file(wt, str(path / WITNESS_FILE))


def read_inputs_dir(path: Path) -> tuple[dict[str, Value], dict[int, np.ndarray]]:
    """Read an inputs directory: tensors by name (domain/f from metadata) and witnesses by step."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_dir():
        raise NotFound(f"inputs directory {path} does not exist")
    inputs: dict[str, Value] = {}
    witnesses: dict[int, np.ndarray] = {}
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise BadInput(f"{path} holds no .safetensors files")
    for file in files:
        try:
            with safe_open(str(file), framework="np") as fh:
                meta = fh.metadata() or {}
                for name in fh.keys():
                    arr = fh.get_tensor(name)
                    if arr.dtype != np.int64:
                        raise BadInput(f"{file.name}:{name} must hold int64 fixed-point words, not {arr.dtype}")
                    if file.name == WITNESS_FILE:
                        if not name.startswith("step") or not name[4:].isdigit():
                            raise BadInput(f"witness tensor {name!r} must be named step<i>")
                        witnesses[int(name[4:])] = arr
                        continue
                    domain_f = meta.get(name, "FIXED:0")
                    dom, _, f = domain_f.partition(":")
                    if dom not in ("FIXED", "RING") or not f.isdigit():
                        raise BadInput(f"{file.name}:{name} metadata {domain_f!r} is not '<FIXED|RING>:<f>'")
                    if name in inputs:
                        raise BadInput(f"input {name!r} appears twice")
                    inputs[name] = tensor(arr, Domain[dom], int(f))
        except BadInput:
            raise
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise BadInput(f"{file} is not a readable safetensors file: {exc}") from None
    return inputs, witnesses


__all__ = [
    "Manifest",
    "Store",
    "WITNESS_FILE",
    "read_inputs_dir",
    "read_program_file",
    "tensor_bytes",
    "tensor_from_bytes",
    "write_inputs_dir",
]
