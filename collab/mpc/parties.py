"""Run the 2 parties of a secure embedding as real processes over gloo/TCP.

Each party is its own OS process, started as::

    python -m collab.mpc.parties --rank R --world 2 --master ADDR:PORT \
        --job JOB.json --out RESULT.json [--timeout SECONDS]

so the same command runs on two hosts (the owner's node and the client's node)
as well as on one. Rank :data:`OWNER` secret-shares the weights; rank
:data:`CLIENT` secret-shares its token ids and is the only one that opens the
output. The job file of each party holds only what that party may know: the
owner's has no texts, the client's never points at the weights.

Failure handling, so that nothing hangs: every gloo operation carries a
timeout (:func:`collab.mpc.compat.set_collective_timeout`), and the parent
(:class:`PartyGroup`) watches its children: when one exits abnormally the
others are killed at once and :class:`collab.errors.Unavailable` is raised
naming the party that died.

Preprocessing is CrypTen's dealer path (``TFP``): rank 0 generates the Beaver
triples. That is *not* secure against rank 0 and is why HE preprocessing
(``collab/he``) exists; see docs/secure_inference.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch

import collab.mpc.compat as compat
from collab.errors import BadInput, CollabError, InternalError, Unavailable

OWNER = 0
CLIENT = 1
WORLD = 2
ROLES = {OWNER: "owner", CLIENT: "client"}
DEFAULT_TIMEOUT = 300.0
PROGRESS = "collab-mpc-progress:"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host`` (for the rendezvous store)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class PartyStats:
    """What one party measured about its own run."""

    rank: int
    role: str
    wall_s: float
    share_s: float
    online_s: float
    max_rss_mb: float
    comm_rounds: int
    comm_bytes: int


@dataclass
class SecureResult:
    """The client's output and both parties' measurements."""

    embeddings: torch.Tensor  # (batch, hidden), L2-normalised
    parties: list[PartyStats]
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- party side


def _progress(rank: int, stage: str) -> None:
    print(f"{PROGRESS} rank {rank} {stage}", file=sys.stderr, flush=True)


def _share(tensors: dict[str, torch.Tensor] | None, shapes: dict[str, tuple[int, ...]], src: int) -> dict[str, Any]:
    """Secret-share named tensors from ``src``; the other parties pass only shapes."""
    import crypten

    out = {}
    for name, shape in shapes.items():
        value = tensors[name] if tensors is not None else torch.zeros(shape)
        if tuple(value.shape) != tuple(shape):
            raise InternalError(f"{name}: shape {tuple(value.shape)} != agreed {shape}")
        out[name] = crypten.cryptensor(value, src=src)
    return out


def run_party(rank: int, world: int, master: str, job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Body of one party process; returns what it writes to its result file.

    One process serves a *session*: the weights are shared (and, with
    ``fixed_masks``, their Beaver masks fixed and ``W - B`` opened) once, then
    every batch of ``batches`` (sizes; the client's job also holds the texts,
    in order) runs online with its own measurements. ``profile`` adds per
    (layer, op kind) costs; ``probe`` (benchmarks only) also opens every
    layer's hidden states to the client, outside the measured figures, and
    writes them to ``<out>.probes.pt``.
    """
    from collab.mpc import encoder as enc
    from collab.mpc.model import load_spec, load_weights, model_dir, tokenize

    if world != WORLD or rank not in ROLES:
        raise BadInput(f"this slice runs exactly {WORLD} parties (ranks 0 and 1)")
    t0 = time.perf_counter()
    compat.set_collective_timeout(timeout)
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), RENDEZVOUS=f"tcp://{master}", DISTRIBUTED_BACKEND="gloo"
    )
    import crypten
    import crypten.communicator as comm
    from crypten.config import cfg

    from collab.mpc.compat import init_crypten
    from collab.mpc.profile import OpProfile, profiling

    path = Path(job["model_dir"]) if job.get("model_dir") else model_dir()
    spec = load_spec(path)
    approx = enc.Approximations(**job.get("approx", {}))
    seq_len = int(job["seq_len"])
    sizes = [int(b) for b in job.get("batches", [job.get("batch", 0)])]
    n_layers = int(job.get("layers", spec.layers))
    if not sizes or min(sizes) < 1 or not 1 <= n_layers <= spec.layers:
        raise BadInput("need at least one batch of at least one text, and 1..layers layers")

    # Local, private preparation happens before the rendezvous.
    own_weights = enc.prepare_weights(load_weights(path), spec, seq_len) if rank == OWNER else None
    own_inputs: list[dict[str, torch.Tensor]] = []
    if rank == CLIENT:
        texts = list(job["texts"])
        offset = 0
        for size in sizes:  # the texts' own faults (empty, ...) are reported first
            own_inputs.append(enc.prepare_inputs(tokenize(texts[offset : offset + size], seq_len, path), spec, approx))
            offset += size
        if len(texts) != sum(sizes) or any(len(i["pool"]) != n for i, n in zip(own_inputs, sizes)):
            raise BadInput("batch sizes do not add up to the number of texts")

    cfg.mpc.provider = str(job.get("provider", "TFP"))
    init_crypten()
    _progress(rank, "connected")
    batches: list[dict[str, Any]] = []
    probes: list[list[torch.Tensor]] = []
    plain_out: list[torch.Tensor] = []
    try:
        comm.get().reset_communication_stats()
        t_share = time.perf_counter()
        flat_w = _share(own_weights, enc.weight_shapes(spec, seq_len), src=OWNER)
        weights = enc.assemble_weights(flat_w, spec)
        weights.layers = weights.layers[:n_layers]
        if job.get("fixed_masks"):
            weights = enc.mask_weights(weights)
        setup = comm.get().get_communication_stats()
        share_s = time.perf_counter() - t_share
        _progress(rank, "shared")

        for b, size in enumerate(sizes):
            ins = own_inputs[b] if rank == CLIENT else None
            inputs = enc.SharedInputs(**_share(ins, enc.input_shapes(size, seq_len, spec), src=CLIENT))
            profile = OpProfile()
            layer_probes: list[torch.Tensor] = []
            probe_s, probe_stats = 0.0, [0, 0]
            comm.get().reset_communication_stats()
            t_online = time.perf_counter()

            def probe(x: Any) -> None:
                nonlocal probe_s
                if not job.get("probe"):
                    return
                r0, b0 = comm.get().comm_rounds, comm.get().comm_bytes
                tp = time.perf_counter()
                opened = x.get_plain_text(dst=CLIENT)
                if rank == CLIENT:
                    layer_probes.append(opened.clone())
                probe_s += time.perf_counter() - tp
                probe_stats[0] += comm.get().comm_rounds - r0
                probe_stats[1] += comm.get().comm_bytes - b0

            with profiling(profile):
                x = enc.embed(inputs, weights, spec, approx)
                probe(x)
                _progress(rank, "embedded")
                for i, lw in enumerate(weights.layers):
                    x = enc.layer(x, inputs.attn_bias, lw, spec, approx, i)
                    probe(x)
                    _progress(rank, f"layer {i}")
            pooled = (x * inputs.pool).sum(1)
            plain = pooled.get_plain_text(dst=CLIENT)
            online_s = time.perf_counter() - t_online - probe_s
            stats = comm.get().get_communication_stats()
            batches.append({
                "size": size, "online_s": online_s,
                "rounds": int(stats["rounds"]) - probe_stats[0], "bytes": int(stats["bytes"]) - probe_stats[1],
                "ops": profile.to_json(),
            })  # fmt: skip
            if rank == CLIENT:
                plain_out.append(plain)
                probes.append(layer_probes)
    finally:
        crypten.uninit()

    result: dict[str, Any] = {
        "stats": asdict(
            PartyStats(
                rank=rank,
                role=ROLES[rank],
                wall_s=time.perf_counter() - t0,
                share_s=share_s,
                online_s=sum(b["online_s"] for b in batches),
                max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                comm_rounds=sum(b["rounds"] for b in batches),
                comm_bytes=sum(b["bytes"] for b in batches),
            )
        ),
        "setup": {"seconds": share_s, "rounds": int(setup["rounds"]), "bytes": int(setup["bytes"])},
        "batches": batches,
    }
    if rank == CLIENT:
        result["embeddings"] = torch.nn.functional.normalize(torch.cat(plain_out), dim=-1).tolist()
        if job.get("probe"):
            torch.save(probes, str(job["probe_path"]))
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point of one party process; exit code = the CollabError's, 10 on a bug."""
    ap = argparse.ArgumentParser(prog="python -m collab.mpc.parties")
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--world", type=int, default=WORLD)
    ap.add_argument("--master", required=True, help="ADDR:PORT of rank 0's rendezvous store")
    ap.add_argument("--job", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    args = ap.parse_args(argv)
    return run_party_process(
        args.rank, args.out, lambda: run_party(args.rank, args.world, args.master, json.loads(args.job.read_text()), args.timeout)
    )


def run_party_process(rank: int, out: Path, body: Callable[[], dict[str, Any]]) -> int:
    """Run a party process's body, write its result atomically to ``out`` and return the exit code.

    The parent reads only complete result files, and a party's failure becomes
    one stderr line plus the error's exit code, which the parent's watchdog
    reports (a peer vanishing surfaces here as a gloo RuntimeError).
    """
    try:
        result = body()
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        tmp.replace(out)
        return 0
    except CollabError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except Exception as exc:
        print(f"error: party {rank} failed: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 10


# --------------------------------------------------------------------------- parent side


class PartyGroup:
    """Launch and supervise the party processes of one job on this host."""

    def __init__(self, jobs: dict[int, dict[str, Any]], *, timeout: float = DEFAULT_TIMEOUT, host: str = "127.0.0.1"):
        self.jobs = jobs
        self.timeout = timeout
        self.host = host
        self.workdir = Path(tempfile.mkdtemp(prefix="collab-mpc-"))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._started = 0.0

    def log(self, rank: int) -> str:
        """Everything party ``rank`` wrote to stderr so far."""
        path = self.workdir / f"party{rank}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        master = f"{self.host}:{free_port(self.host)}"
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
        for rank, job in self.jobs.items():
            (self.workdir / f"job{rank}.json").write_text(json.dumps(job))
            cmd = [
                sys.executable, "-m", "collab.mpc.parties", "--rank", str(rank), "--world", str(len(self.jobs)),
                "--master", master, "--job", str(self.workdir / f"job{rank}.json"),
                "--out", str(self.workdir / f"out{rank}.json"), "--timeout", str(self.timeout),
            ]  # fmt: skip
            log = open(self.workdir / f"party{rank}.log", "wb")  # noqa: SIM115 (owned by the child)
            self.procs[rank] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            log.close()
        self._started = time.monotonic()

    def kill(self) -> None:
        """Stop every party still running (terminate, then kill)."""
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 5
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def wait(self) -> dict[int, dict[str, Any]]:
        """Wait for every party; on the first failure or the timeout, kill the rest and raise.

        The work directory (job files, which hold the client's texts, logs and
        results) is removed afterwards either way.
        """
        try:
            while True:
                codes = {r: p.poll() for r, p in self.procs.items()}
                failed = [r for r, c in codes.items() if c not in (None, 0)]
                if failed:
                    r = failed[0]
                    raise Unavailable(
                        f"MPC party {r} ({ROLES.get(r, 'party')}) exited with code {codes[r]}: {self._last_error(r)}",
                        rank=r, exit_code=codes[r],
                    )  # fmt: skip
                if all(c == 0 for c in codes.values()):
                    break
                if time.monotonic() - self._started > self.timeout:
                    raise Unavailable(f"MPC job timed out after {self.timeout:.0f} s", timeout=self.timeout)
                time.sleep(0.1)
            return {r: json.loads((self.workdir / f"out{r}.json").read_text()) for r in self.procs}
        finally:
            self.kill()
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _last_error(self, rank: int) -> str:
        lines = [ln for ln in self.log(rank).splitlines() if ln.strip() and not ln.startswith(PROGRESS)]
        errors = [ln for ln in lines if ln.startswith("error:")]
        if errors:
            return errors[-1].removeprefix("error: ")
        return lines[-1] if lines else "killed or crashed without output"


def party_jobs(texts: list[str], seq_len: int, approx: dict[str, Any] | None = None, *,
               batches: list[int] | None = None, **options: Any) -> dict[int, dict[str, Any]]:
    """Per-party job descriptions: only the client's carries the texts.

    ``batches`` splits ``texts`` into consecutive batches served by one
    session (default: one batch); ``options`` (``fixed_masks``, ``layers``,
    ``provider``, ``probe``, ``probe_path``) go to both parties.
    """
    sizes = list(batches) if batches else [len(texts)]
    common = {"seq_len": seq_len, "batches": sizes, "approx": approx or {}, **options}
    return {OWNER: dict(common), CLIENT: dict(common, texts=list(texts))}


@dataclass
class SessionResult:
    """A multi-batch session: the client's outputs, per-party setup and per-batch figures."""

    embeddings: torch.Tensor  # (texts, hidden), L2-normalised, in input order
    parties: list[PartyStats]
    setup: list[dict[str, Any]]  # per party: model-load seconds, rounds, bytes
    batches: list[list[dict[str, Any]]]  # per party, per batch: size, online_s, rounds, bytes, ops
    probes: list[list[torch.Tensor]] | None  # per batch, per layer (embeddings first): hidden states
    wall_s: float


def secure_session(
    batches: list[list[str]], seq_len: int, approx: dict[str, Any] | None = None, *, fixed_masks: bool = False,
    layers: int | None = None, probe: bool = False, timeout: float = DEFAULT_TIMEOUT,
) -> SessionResult:
    """Serve several batches in one 2-party session: the weights are shared (and masked) once."""
    texts = [t for batch in batches for t in batch]
    if not texts or any(not batch for batch in batches):
        raise BadInput("need at least one text in every batch")
    t0 = time.perf_counter()
    options: dict[str, Any] = {"fixed_masks": fixed_masks}
    if layers is not None:
        options["layers"] = layers
    with tempfile.TemporaryDirectory(prefix="collab-mpc-probe-") as tmp:
        if probe:
            options.update(probe=True, probe_path=str(Path(tmp) / "probes.pt"))
        group = PartyGroup(party_jobs(texts, seq_len, approx, batches=[len(b) for b in batches], **options),
                           timeout=timeout)
        group.start()
        results = group.wait()
        probes = torch.load(options["probe_path"]) if probe else None
    ranks = sorted(results)
    return SessionResult(
        embeddings=torch.tensor(results[CLIENT]["embeddings"]),
        parties=[PartyStats(**results[r]["stats"]) for r in ranks],
        setup=[results[r]["setup"] for r in ranks],
        batches=[results[r]["batches"] for r in ranks],
        probes=probes,
        wall_s=time.perf_counter() - t0,
    )


def secure_embeddings(
    texts: list[str], seq_len: int, approx: dict[str, Any] | None = None, *, fixed_masks: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> SecureResult:
    """Sentence embeddings of ``texts`` computed by 2 real parties; returned to the client."""
    if not texts:
        raise BadInput("need at least one text")
    t0 = time.perf_counter()
    group = PartyGroup(party_jobs(texts, seq_len, approx, fixed_masks=fixed_masks), timeout=timeout)
    group.start()
    results = group.wait()
    return SecureResult(
        embeddings=torch.tensor(results[CLIENT]["embeddings"]),
        parties=[PartyStats(**results[r]["stats"]) for r in sorted(results)],
        wall_s=time.perf_counter() - t0,
    )


if __name__ == "__main__":
    sys.exit(main())
