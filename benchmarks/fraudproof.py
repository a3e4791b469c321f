"""``collab bench fraudproof``: what verifying a computation on-chain costs, on a real chain.

Every gas figure is the ``gasUsed`` of a mined receipt on a fresh anvil with
the contracts of ``chain.deploy.deploy_all``; every game is played move by
move by the agents ``collab watch`` uses (``collab.fraudproof.agents``), an
honest claimer against a challenger whose reference is wrong at one element
(the same descent and proof as a cheating claimer's), so the one-step figures are
real ``proveStep`` transactions, not estimates. Measured:

- gas of posting, each move kind, each one-step proof (MATMUL with K = 384
  and 1536, SOFTMAX row of 128, LAYERNORM row of 384), a data-availability
  response and finalization, against the issue's targets;
- rounds and transactions of a dispute vs trace length for k = 2, 4, 16:
  the protocol's formula for 10^2..10^6 steps, and played games for the
  lengths that fit in time, each checked against the bound;
- the wall time of a full dispute over a 6-layer MiniLM-size encoder
  (``collab.fraudproof.builders.encoder_forward`` when present, else a
  single-head encoder built here; the results name which);
- off-chain cost of execute+commit vs plain fixed-point execution and vs
  numpy float, and the fixed-point error vs float per job kind;
- gas of a BLS consent-signature check (3-signer G2Basic aggregate through
  Solady's BLS.sol in a small harness), apart from posting.

``COLLAB_BENCH_QUICK=1`` (or ``run(..., quick=True)``) shrinks the sizes so
the test suite can run it; the figures keep the same structure.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount
from rich.console import Group, RenderableType
from web3 import Web3

from benchmarks import report
from chain.anvil import AnvilProcess, dev_account
from chain.client import ContractClient, connect, deploy_contract
from chain.clients.bisection_game import BisectionGameClient, Phase
from chain.clients.claim_manager import ClaimManagerClient, ClaimStatus
from chain.clients.data_availability import DataAvailabilityClient
from chain.clients.identity_registry import IdentityRegistryClient
from chain.compiler import compile_contracts
from chain.deploy import deploy_all
from chain.deployment import Deployment
from collab import bls
from collab.errors import InternalError
from collab.fixedpoint import Domain
from collab.fraudproof import native
from collab.fraudproof.agents import ChallengerAgent, ClaimerAgent, GasLog, play, wrong_element_trace
from collab.fraudproof.commitments import CHUNK_ELEMS, TensorHeader, name_hash
from collab.fraudproof.program import Op, Program, ProgramBuilder, Ref
from collab.fraudproof.trace import Trace, build_trace, commit_value
from collab.fraudproof.vm import Value, run as vm_run, tensor

SUITE = "fraudproof"
HARNESS_SOURCES: Path = Path(__file__).resolve().parent / "fraudproof_contracts"
TARGETS = {"post": 150_000, "move": 100_000, "one_step": 3_000_000}
KS: tuple[int, ...] = (2, 4, 16)
FORMULA_STEPS: tuple[int, ...] = (10**2, 10**3, 10**4, 10**5, 10**6)
FRAC = 16
CHAIN_SHAPE = (2, 64)  # 128 elements = 4 chunks: the played games descend a chunk tree too
BLS_SIGNERS = 3
REPEATS = 5
MOVE_KINDS = ("reveal", "pick", "reveal_header", "reveal_chunk", "pick_element")
CLAIMER_MOVES = ("reveal", "reveal_header", "reveal_chunk")

Log = Callable[[str], None]


@dataclass(frozen=True)
class Sizes:
    """What one run measures (full or quick)."""

    played_steps: tuple[int, ...]
    encoder: dict[str, int]
    offchain_elems: int


FULL = Sizes((10**2, 10**3, 10**4, 10**5), {"layers": 6, "seq": 128, "dim": 384, "ff": 1536, "heads": 12}, 1 << 16)
QUICK = Sizes((10**2,), {"layers": 1, "seq": 8, "dim": 32, "ff": 64, "heads": 2}, 1 << 10)


def run(results_dir: Path | str | None = None, log: Log | None = None, *, quick: bool | None = None) -> dict[str, Any]:
    """Run the suite on a fresh anvil; write ``fraudproof.json`` and ``fraudproof.png``; return the results."""
    say = log or (lambda _message: None)
    quick = os.environ.get("COLLAB_BENCH_QUICK", "") not in ("", "0") if quick is None else quick
    sizes = QUICK if quick else FULL
    out_dir = report.results_dir(results_dir)
    started = time.monotonic()
    harness = compile_contracts(source_root=HARNESS_SOURCES)["BlsConsentHarness"]
    node = AnvilProcess()
    say(f"starting anvil on 127.0.0.1:{node.port}")
    with node:
        w3 = connect(node.rpc_url)
        say("deploying collab's contracts")
        deployment = deploy_all(w3, dev_account(0), rpc_url=node.rpc_url)
        if "ClaimManager" not in deployment.contracts:
            raise InternalError("the fraud-proof contracts were not deployed (OneStepVerifier missing)")
        bench = _Bench(w3, deployment, say)
        one_step = bench.measure_one_steps()
        bench.measure_da_and_finalize()
        played = bench.measure_move_counts(sizes.played_steps)
        dispute = bench.measure_encoder_dispute(sizes.encoder)
        consent = bench.measure_bls_consent(harness)
    gas = _gas_summary(bench.gas, one_step)
    results: dict[str, Any] = {
        "suite": SUITE,
        "quick": quick,
        "created_at": report.utc_now(),
        "machine": report.machine_facts(),
        "versions": report.package_versions(["web3", "eth-account", "py-ecc", "numpy"]),
        "method": (
            "gasUsed of mined receipts on a fresh anvil (automine), contracts from chain.deploy.deploy_all; "
            "games played move by move by collab.fraudproof.agents (honest claimer vs a challenger wrong at one element; the claimer's proveStep ends each game)"
        ),
        "gas": gas,
        "targets": _targets(gas),
        "moves": {"formula": _formula_table(), "played": played},
        "encoder_dispute": dispute,
        "offchain": _offchain(sizes, say),
        "bls_consent": consent,
    }
    results["seconds"] = round(time.monotonic() - started, 2)
    return report.publish(out_dir, SUITE, results, lambda png: plot(results, png), say)


# --------------------------------------------------------------------- the protocol's bound


def ceil_log(n: int, k: int) -> int:
    """⌈log_k n⌉ in exact integers (0 for n ≤ 1)."""
    depth, reach = 0, 1
    while reach < n:
        reach *= k
        depth += 1
    return depth


def round_bound(steps: int, chunks: int, k: int) -> int:
    """docs/protocol.md §5.2: at most ⌈log_k steps⌉ + ⌈log_k chunks⌉ + 1 reveal/pick rounds."""
    return ceil_log(steps, k) + ceil_log(chunks, k) + 1


def tx_bound(steps: int, chunks: int, k: int) -> int:
    """Transactions of a dispute: open, a reveal and a pick per round, one proveStep."""
    return 1 + 2 * round_bound(steps, chunks, k) + 1


def _formula_table() -> list[dict[str, int]]:
    chunks = {"chain_tensor": -(-CHAIN_SHAPE[0] * CHAIN_SHAPE[1] // CHUNK_ELEMS), "minilm_ffn_128x1536": 128 * 1536 // CHUNK_ELEMS}
    rows = []
    for steps in FORMULA_STEPS:
        for k in KS:
            row = {"steps": steps, "k": k}
            for label, c in chunks.items():
                row[f"rounds_{label}"] = round_bound(steps, c, k)
                row[f"transactions_{label}"] = tx_bound(steps, c, k)
            rows.append(row)
    return rows


# --------------------------------------------------------------------- programs


def _fixed(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0) -> tuple[Value, np.ndarray]:
    """A FIXED tensor at FRAC bits and the float values it encodes exactly."""
    words = np.round(rng.uniform(-scale, scale, size=shape) * (1 << FRAC)).astype(np.int64)
    return tensor(words, Domain.FIXED, FRAC), words.astype(np.float64) / (1 << FRAC)


def _header(shape: tuple[int, ...]) -> TensorHeader:
    return TensorHeader(Domain.FIXED, FRAC, shape)


def one_step_program(kind: str, n: int) -> tuple[Program, dict[str, Value]]:
    """A one-step program whose single element of work is the one-step proof being measured."""
    rng = np.random.default_rng(n)
    if kind == "matmul":
        b = ProgramBuilder({"a": _header((1, n)), "w": _header((1, n))})
        b.matmul(b["a"], b["w"])
        return b.build(), {"a": _fixed(rng, (1, n))[0], "w": _fixed(rng, (1, n), 0.1)[0]}
    b = ProgramBuilder({"a": _header((1, n))})
    if kind == "softmax":
        b.softmax(b["a"])
    else:
        b.layernorm(b["a"], 1 << (FRAC - 10))
    return b.build(), {"a": _fixed(rng, (1, n), 4.0)[0]}


def add_chain(steps: int) -> tuple[Program, dict[str, Value]]:
    """``steps`` ADD steps over two inputs: the cheapest program of a given trace length."""
    b = ProgramBuilder({"x": _header(CHAIN_SHAPE), "y": _header(CHAIN_SHAPE)})
    r = b.add(b["x"], b["y"])
    for i in range(steps - 1):
        r = b.add(r, b["x"] if i % 2 else b["y"])
    rng = np.random.default_rng(steps)
    words = {n: tensor(rng.integers(-(1 << 20), 1 << 20, size=CHAIN_SHAPE, dtype=np.int64), Domain.FIXED, FRAC) for n in "xy"}
    return b.build(), words


@dataclass
class Encoder:
    """An encoder program, its fixed-point inputs and the float forward pass it approximates."""

    program: Program
    inputs: dict[str, Value]
    float_out: np.ndarray
    float_seconds: float


def encoder_program(layers: int, seq: int, dim: int, ff: int, seed: int = 5) -> Encoder:
    """Post-LN BERT-style layers (single-head attention, GELU FFN) over ProgramBuilder ops, and numpy float."""
    rng = np.random.default_rng(seed)
    headers: dict[str, TensorHeader] = {"x": _header((seq, dim))}
    shapes = {"wq": (dim, dim), "wk": (dim, dim), "wv": (dim, dim), "wo": (dim, dim), "w1": (ff, dim), "w2": (dim, ff)}
    for i in range(layers):
        for name, shape in shapes.items():
            headers[f"l{i}.{name}"] = _header(shape)
    inputs: dict[str, Value] = {}
    floats: dict[str, np.ndarray] = {}
    for name, h in headers.items():
        scale = 1.0 if name == "x" else 1.0 / math.sqrt(h.shape[1])
        inputs[name], floats[name] = _fixed(rng, h.shape, scale)
    scale_words = round((1 / math.sqrt(dim)) * (1 << FRAC))
    eps = 1 << (FRAC - 12)
    b = ProgramBuilder(headers)
    x: Ref = b["x"]
    for i in range(layers):
        w = {n: b[f"l{i}.{n}"] for n in shapes}
        q, k, v = b.matmul(x, w["wq"]), b.matmul(x, w["wk"]), b.matmul(x, w["wv"])
        p = b.softmax(b.scale(b.matmul(q, k), scale_words, FRAC))
        ctx = b.matmul(p, b.permute(v, [1, 0]))
        x = b.layernorm(b.add(x, b.matmul(ctx, w["wo"])), eps)
        x = b.layernorm(b.add(x, b.matmul(b.gelu(b.matmul(x, w["w1"])), w["w2"])), eps)
    started = time.perf_counter()
    out = _encoder_float(floats, layers, dim, eps / (1 << FRAC))
    return Encoder(b.build(), inputs, out, time.perf_counter() - started)


def encoder_for_dispute(layers: int, seq: int, dim: int, ff: int, heads: int) -> tuple[Program, dict[str, Value], str]:
    """The encoder program a dispute is played over, and where it came from.

    ``collab.fraudproof.builders.encoder_forward`` (a BERT/MiniLM encoder with
    real multi-head attention, biases and LayerNorm affines) when that module
    is present, over a random state dict of the given shape; this suite's
    single-head :func:`encoder_program` otherwise.
    """
    try:
        from collab.fraudproof.builders import EncoderShape, encoder_forward
    except ImportError:
        enc = encoder_program(layers, seq, dim, ff)
        return enc.program, enc.inputs, "benchmarks.fraudproof.encoder_program (single-head; builders.py absent)"
    job = encoder_forward(_bert_state(layers, dim, ff), list(range(1, seq + 1)), EncoderShape(dim, heads, layers), f=FRAC)
    return job.program, job.inputs, f"collab.fraudproof.builders.encoder_forward ({heads} heads, random BERT weights)"


def _bert_state(layers: int, dim: int, ff: int, vocab: int = 1000, positions: int = 512) -> dict[str, Any]:
    """A random state dict with transformers' BertModel keys (the weights do not change the cost)."""
    import torch

    gen = torch.Generator().manual_seed(3)

    def rand(*shape: int, scale: float | None = None) -> Any:
        return torch.randn(*shape, generator=gen) * (scale if scale is not None else 1 / math.sqrt(shape[-1]))

    state: dict[str, Any] = {
        "embeddings.word_embeddings.weight": rand(vocab, dim, scale=0.05),
        "embeddings.position_embeddings.weight": rand(positions, dim, scale=0.05),
        "embeddings.token_type_embeddings.weight": rand(2, dim, scale=0.05),
        "embeddings.LayerNorm.weight": torch.ones(dim), "embeddings.LayerNorm.bias": torch.zeros(dim),
    }
    dense = {"attention.self.query": (dim, dim), "attention.self.key": (dim, dim), "attention.self.value": (dim, dim),
             "attention.output.dense": (dim, dim), "intermediate.dense": (ff, dim), "output.dense": (dim, ff)}
    for i in range(layers):
        for part, shape in dense.items():
            state[f"encoder.layer.{i}.{part}.weight"] = rand(*shape)
            state[f"encoder.layer.{i}.{part}.bias"] = rand(shape[0], scale=0.02)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            state[f"encoder.layer.{i}.{norm}.weight"] = torch.ones(dim)
            state[f"encoder.layer.{i}.{norm}.bias"] = torch.zeros(dim)
    return state


def _encoder_float(f: dict[str, np.ndarray], layers: int, dim: int, eps: float) -> np.ndarray:
    def layernorm(a: np.ndarray) -> np.ndarray:
        d = a - a.mean(-1, keepdims=True)
        return d / np.sqrt((d * d).mean(-1, keepdims=True) + eps)

    def gelu(a: np.ndarray) -> np.ndarray:
        return 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3)))

    x = f["x"]
    for i in range(layers):
        w = {n: f[f"l{i}.{n}"] for n in ("wq", "wk", "wv", "wo", "w1", "w2")}
        q, k, v = x @ w["wq"].T, x @ w["wk"].T, x @ w["wv"].T
        s = (q @ k.T) / math.sqrt(dim)
        e = np.exp(s - s.max(-1, keepdims=True))
        p = e / e.sum(-1, keepdims=True)
        x = layernorm(x + (p @ v) @ w["wo"].T)
        x = layernorm(x + gelu(x @ w["w1"].T) @ w["w2"].T)
    return x


# --------------------------------------------------------------------- on-chain measurements


class _Bench:
    """The accounts, the clients and the gas log of one run."""

    def __init__(self, w3: Web3, deployment: Deployment, log: Log) -> None:
        self.w3, self.deployment, self.log = w3, deployment, log
        self.gas = GasLog()
        self.claimer = dev_account(1)
        self.challenger = dev_account(2)
        self.jobs = 0
        registry = IdentityRegistryClient.from_deployment(deployment, w3, self.claimer)
        keys = registry.keys_for(bls.keygen(b"collab bench fraudproof claimer"), b"\x0c" * 32, b"\x0d" * 32)
        registry.register("bench fraud-proof claimer", "human", keys)

    def _clients(self, account: LocalAccount) -> tuple[ClaimManagerClient, BisectionGameClient, DataAvailabilityClient]:
        d, w3 = self.deployment, self.w3
        return (ClaimManagerClient.from_deployment(d, w3, account), BisectionGameClient.from_deployment(d, w3, account),
                DataAvailabilityClient.from_deployment(d, w3, account))

    def claimer_agent(self, trace: Trace, log2k: int = 1, gas: GasLog | None = None) -> ClaimerAgent:
        self.jobs += 1
        manager, game, data = self._clients(self.claimer)
        return ClaimerAgent(manager, game, data, trace, job_id=Web3.keccak(text=f"bench fraudproof job {self.jobs}"),
                            log2k=log2k, gas=gas if gas is not None else self.gas)

    def challenger_agent(self, trace: Trace, gas: GasLog | None = None) -> ChallengerAgent:
        manager, game, _ = self._clients(self.challenger)
        return ChallengerAgent(manager, game, trace, gas=gas if gas is not None else self.gas)

    def dispute(self, honest: Trace, wrong: Trace, log2k: int, gas: GasLog | None = None) -> tuple[Any, list[str]]:
        """Post ``honest``, challenge it by the ``wrong`` reference, play to the end; returns the game and the moves.

        The claimer is the honest side: a claimer that loses games loses
        reputation and is soon refused (``NotAllowedClaimer``), and the
        descent, the moves and the one-step proof (the claimer proves its
        element right) are the same work as against a cheating claimer.
        """
        claimer = self.claimer_agent(honest, log2k, gas)
        challenger = self.challenger_agent(wrong, gas)
        claim_id = claimer.post()
        moves = ["challenge"]
        game_id = challenger.challenge(claim_id)
        game = play(claimer, challenger, game_id, on_move=moves.append)
        if game.phase != Phase.RESOLVED or not game.claimer_won or moves[-1] != "prove_step":
            raise InternalError(f"a dispute did not end with the honest claimer's one-step proof (moves: {moves})")
        return game, moves

    def time_travel(self, seconds: int) -> None:
        self.w3.provider.make_request("evm_increaseTime", [int(seconds)])  # type: ignore[arg-type]
        self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    def measure_one_steps(self) -> dict[str, dict[str, Any]]:
        """One game per one-step kind; the challenger's proveStep receipt is the figure."""
        out: dict[str, dict[str, Any]] = {}
        for key, kind, n in (("matmul_k384", "matmul", 384), ("matmul_k1536", "matmul", 1536),
                             ("softmax_row128", "softmax", 128), ("layernorm_row384", "layernorm", 384)):
            self.log(f"one-step proof: {key}")
            program, inputs = one_step_program(kind, n)
            honest = build_trace(program, inputs)
            element = TensorHeader.decode(program.steps[0].out_header).numel - 1
            local = GasLog()
            self.dispute(honest, wrong_element_trace(honest, inputs, 0, element), 1, local)
            self.gas.entries.extend(e for e in local.entries if e[0] != "prove_step")
            proves = local.by_kind()["prove_step"]
            out[key] = {"label": f"one-step {kind} ({'K' if kind == 'matmul' else 'row'} = {n})", "gas": proves[-1]}
        return out

    def measure_da_and_finalize(self) -> None:
        """A data challenge answered by the claimer, then an unchallenged claim finalized after its window."""
        self.log("data-availability response and finalize")
        program, inputs = add_chain(3)
        trace = build_trace(program, inputs)
        claimer = self.claimer_agent(trace)
        claim_id = claimer.post()
        self.challenger_agent(trace).challenge_input(claim_id, 0, 1)
        if not claimer.answer_data(claim_id):
            raise InternalError("the claimer answered no data challenge")
        manager = claimer.manager
        self.time_travel(manager.params_of(claim_id).challenge_window + 1)
        self.gas.add("finalize", manager.finalize(claim_id))
        if manager.claim_status(claim_id) != ClaimStatus.FINALIZED:
            raise InternalError("the claim did not finalize")

    def measure_move_counts(self, lengths: tuple[int, ...]) -> list[dict[str, Any]]:
        """Play a dispute per (length, k) with the wrong element deep in the trace and the last chunk."""
        rows: list[dict[str, Any]] = []
        chunks = -(-CHAIN_SHAPE[0] * CHAIN_SHAPE[1] // CHUNK_ELEMS)
        for steps in lengths:
            started = time.perf_counter()
            program, inputs = add_chain(steps)
            honest = build_trace(program, inputs)
            wrong = wrong_element_trace(honest, inputs, steps - 2, CHAIN_SHAPE[0] * CHAIN_SHAPE[1] - 1)
            build_s = time.perf_counter() - started
            for k in KS:
                self.log(f"dispute over {steps} steps, k = {k}")
                t0 = time.perf_counter()
                game, moves = self.dispute(honest, wrong, k.bit_length() - 1)
                rounds = sum(m in CLAIMER_MOVES for m in moves)
                bound = round_bound(steps, chunks, k)
                rows.append({
                    "steps": steps, "k": k, "chunks": chunks, "rounds": rounds, "transactions": len(moves),
                    "round_bound": bound, "transaction_bound": tx_bound(steps, chunks, k), "within_bound": rounds <= bound,
                    "disputed_step": game.step, "seconds": round(time.perf_counter() - t0, 2),
                    "trace_build_seconds": round(build_s, 2),
                })
        return rows

    def measure_encoder_dispute(self, size: dict[str, int]) -> dict[str, Any]:
        """Wall time of a whole dispute over an encoder inference: each side's trace, every move, the proof.

        The claimer and the challenger build their traces on their own
        machines at the same time, so the dispute's wall time is one trace
        plus the game; the second trace (here the challenger's wrong
        reference) is reported apart.
        """
        self.log(f"encoder dispute: {size}")
        program, inputs, source = encoder_for_dispute(**size)
        started = time.perf_counter()
        honest = build_trace(program, inputs)
        claimer_s = time.perf_counter() - started
        t0 = time.perf_counter()
        wrong = wrong_element_trace(honest, inputs, (len(program.steps) - 1) // 2, 0)
        challenger_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        game, moves = self.dispute(honest, wrong, 4, GasLog())
        game_s = time.perf_counter() - t0
        return {
            "program": source, **size, "steps": len(program.steps), "k": 16, "transactions": len(moves),
            "disputed_step": game.step, "disputed_op": Op(program.steps[game.step].op).name,
            "claimer_trace_seconds": round(claimer_s, 2), "challenger_trace_seconds": round(challenger_s, 2),
            "game_seconds": round(game_s, 2), "total_seconds": round(claimer_s + game_s, 2),
        }

    def measure_bls_consent(self, artifact: Any) -> dict[str, Any]:
        """A 3-signer aggregate G2Basic signature verified on-chain by Solady's BLS.sol."""
        self.log("BLS consent signature check")
        address, _ = deploy_contract(self.w3, self.claimer, artifact)
        harness = ContractClient(self.w3, address, artifact.abi, self.claimer, name="BlsConsentHarness")
        message = Web3.keccak(text="collab training round 1 consent") + bytes(12) + bytes.fromhex(address[2:])
        keys = [bls.keygen(f"bench consent signer {i}".encode()) for i in range(BLS_SIGNERS)]
        pubkeys = [bls.sk_to_pk(sk) for sk in keys]
        signature = bls.aggregate_signatures([bls.sign(sk, message) for sk in keys])
        if not bls.verify_aggregate(pubkeys, message, signature):
            raise InternalError("py-ecc rejects its own aggregate signature")
        g1 = [_words(pk) for pk in pubkeys]  # Solady's G1Point/G2Point: the EIP-2537 encoding as 32-byte words
        g2 = _words(signature)
        tx = harness._transact("verifyConsent", g1, message, g2)
        return {"signers": BLS_SIGNERS, "gas": tx.gas_used, "tx_hash": tx.tx_hash,
                "note": "whole transaction (21k base + calldata + G1 adds + hash-to-G2 + 2-pair pairing), not part of posting"}


def _words(encoded: bytes) -> tuple[bytes, ...]:
    return tuple(encoded[i : i + 32] for i in range(0, len(encoded), 32))


def _gas_summary(log: GasLog, one_step: dict[str, dict[str, Any]]) -> dict[str, Any]:
    kinds = log.by_kind()
    ops = {kind: {"max": max(v), "median": int(np.median(v)), "min": min(v), "count": len(v)} for kind, v in sorted(kinds.items())}
    return {"operations": ops, "one_step": one_step}


def _targets(gas: dict[str, Any]) -> dict[str, dict[str, Any]]:
    ops = gas["operations"]
    move = max(ops[k]["max"] for k in MOVE_KINDS if k in ops)
    largest = max(v["gas"] for v in gas["one_step"].values())
    # Posting is judged on the median post: a claimer's first post also pays one-off storage writes (max reported too).
    measured = {"post": ops["post"]["median"], "move": move, "one_step": largest}
    return {k: {"target": TARGETS[k], "measured": measured[k], "pass": measured[k] <= TARGETS[k]} for k in TARGETS}


# --------------------------------------------------------------------- off-chain cost and fixed-point error


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Result and CPU seconds of this process (all its threads): on a shared machine wall time
    measures the neighbours as much as the code, and the ratios compare work done."""
    t0 = time.process_time()
    out = fn()
    return out, time.process_time() - t0


def _err(fixed: Value, reference: np.ndarray) -> dict[str, float]:
    got = np.asarray(fixed.data, dtype=np.float64) / (1 << fixed.header.frac_bits)
    diff = np.abs(got - reference)
    return {"max_abs": float(diff.max()), "rms": float(np.sqrt((diff**2).mean())), "ref_max_abs": float(np.abs(reference).max())}


def _offchain(sizes: Sizes, log: Log) -> dict[str, Any]:
    log("off-chain cost and fixed-point error")
    n = sizes.offchain_elems
    rng = np.random.default_rng(11)
    jobs: dict[str, dict[str, Any]] = {}
    # FedAvg: weighted mean of 4 updates.
    updates = {f"u{i}": _fixed(rng, (n,), 0.05) for i in range(4)}
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    b = ProgramBuilder({k: v[0].header for k, v in updates.items()})
    w_words = [round(w * (1 << FRAC)) for w in weights]
    b.weighted_sum([b[f"u{i}"] for i in range(4)], w_words, FRAC)
    jobs["fedavg"] = _job(b.build(), {k: v[0] for k, v in updates.items()},
                          lambda: sum(w * updates[f"u{i}"][1] for i, w in enumerate(weights)))
    # Masked sum (secure aggregation): pairwise masks cancel in the ring.
    parts = {f"p{i}": _fixed(rng, (n,), 0.05) for i in range(3)}
    b = ProgramBuilder({k: v[0].header for k, v in parts.items()})
    seeds = [Web3.keccak(text=f"bench mask {i}") for i in range(3)]
    masked = []
    for i in range(3):
        ring = b.fixed_to_ring(b[f"p{i}"])
        plus = b.prg_mask(seeds[i], (n,), FRAC)
        minus = b.prg_mask(seeds[(i - 1) % 3], (n,), FRAC, negate=True)
        masked.append(b.ring_add([ring, plus, minus]))
    b.ring_to_fixed(b.ring_add(masked))
    jobs["masked_sum"] = _job(b.build(), {k: v[0] for k, v in parts.items()}, lambda: sum(v[1] for v in parts.values()))
    jobs["ties"] = _ties_job(rng, n)
    shape = {k: v for k, v in sizes.encoder.items() if k != "heads"}
    enc = encoder_program(**shape)
    jobs["encoder"] = _job(enc.program, enc.inputs, lambda: enc.float_out, extra={**shape, "heads": 1},
                           float_seconds=enc.float_seconds)
    ratios = [j["commit_vs_execute"] for j in jobs.values()]
    outputs_only = [j["commit_outputs_vs_execute"] for j in jobs.values()]
    return {"jobs": jobs, "max_commit_vs_execute": max(ratios), "max_commit_outputs_vs_execute": max(outputs_only),
            "target_commit_vs_execute": 3.0, "pass": max(ratios) <= 3.0,
            "pass_inputs_precommitted": max(outputs_only) <= 3.0, "frac_bits": FRAC,
            "note": ("commit = execute + hash every input and output (build_trace); commit_outputs = inputs passed "
                     "already committed; float = the same computation in numpy float64 (TIES' threshold sort is in "
                     "the float reference but precomputed as the VM's witness); each time is the best of "
                     f"{REPEATS} runs in CPU seconds of the process"),
            "inputs_precommitted_reasoning": (
                "the ratio with inputs precommitted is the aggregation-time cost when every input's VM root was "
                "computed when the input arrived (an asset's tensors at registration, a participant's update on "
                "upload, while the aggregator still waits for the others): the hashing is moved off the critical "
                "path, not removed (commit_inputs_at_receipt_s per job is that work; outputs + receipt ~ commit). "
                "It is not free in collab today: a participant's signed update commitment is keccak(salt, round, "
                "words) (collab/fl/attestation.py), not the VM tensor root, so the aggregator itself must hash each "
                "update into its root (Store.put_tensor) before build_trace can reuse it; an unverified root "
                "supplied by a participant would let a wrong input cost the honest aggregator its claim"),
            "keccak": f"native batch, {native.simd_width()} states per vector" if native.lib() else "Python (no C compiler)"}


def _job(program: Program, inputs: dict[str, Value], float_fn: Callable[[], np.ndarray], *,
         witnesses: dict[int, np.ndarray] | None = None, extra: dict[str, Any] | None = None,
         float_seconds: float | None = None) -> dict[str, Any]:
    """Time execute+commit, execute alone and the float reference; error of the last output vs float."""
    ordered = [inputs[n] for n in sorted(inputs, key=name_hash)]
    # Inputs that are assets or submitted updates arrive already committed (hashed once, at registration or
    # upload); build_trace then hashes only the step outputs. Both figures are reported.
    committed, receipt_s = _timed(lambda: {n: commit_value(v) for n, v in inputs.items()})
    outs, exec_s = _timed(lambda: vm_run(program, ordered, witnesses))  # warm caches first
    trace, commit_s = _timed(lambda: build_trace(program, inputs, witnesses))
    _, outputs_s = _timed(lambda: build_trace(program, committed, witnesses))
    for _ in range(REPEATS - 1):  # best of REPEATS: the machine is shared, the minimum is the least noisy
        exec_s = min(exec_s, _timed(lambda: vm_run(program, ordered, witnesses))[1])
        commit_s = min(commit_s, _timed(lambda: build_trace(program, inputs, witnesses))[1])
        outputs_s = min(outputs_s, _timed(lambda: build_trace(program, committed, witnesses))[1])
        receipt_s = min(receipt_s, _timed(lambda: {n: commit_value(v) for n, v in inputs.items()})[1])
    reference, float_s = _timed(float_fn)
    float_s = float_s if float_seconds is None else float_seconds
    return {
        **(extra or {}), "steps": len(program.steps), "execute_commit_s": round(commit_s, 4), "execute_s": round(exec_s, 4),
        "execute_commit_outputs_s": round(outputs_s, 4), "commit_inputs_at_receipt_s": round(receipt_s, 4),
        "float_s": round(float_s, 6),
        "commit_vs_execute": round(commit_s / exec_s, 3), "commit_outputs_vs_execute": round(outputs_s / exec_s, 3),
        "execute_vs_float": round(exec_s / max(float_s, 1e-9), 1), "error": _err(outs[-1], np.asarray(reference)),
        "output_root": "0x" + trace.output_root.hex(),
    }


def _ties_job(rng: np.random.Generator, n: int) -> dict[str, Any]:
    """TIES over 3 task vectors: witnessed threshold (top 20%), counted and asserted, trim, elect, disjoint mean."""
    tasks = {f"t{i}": _fixed(rng, (n,), 0.05) for i in range(3)}
    keep = n // 5
    block = min(n, 4096)
    b = ProgramBuilder({k: v[0].header for k, v in tasks.items()})
    trimmed = []
    witnesses: dict[int, np.ndarray] = {}
    for i in range(3):
        t = b[f"t{i}"]
        witnesses[len(b.steps)] = np.array(np.sort(np.abs(tasks[f"t{i}"][0].data))[::-1][keep - 1], dtype=np.int64)
        tau = b.witness(_header(()))
        counts = b.sum(b.count_abs(t, tau, block))
        b.assert_kth(counts, keep)
        trimmed.append(b.ties_trim(t, tau))
    b.ties_mean(b.ties_sign(trimmed), trimmed)

    def float_ties() -> np.ndarray:
        ts = []
        for i in range(3):
            a = tasks[f"t{i}"][1]
            tau = np.sort(np.abs(a))[::-1][keep - 1]
            ts.append(np.where(np.abs(a) >= tau, a, 0.0))
        stack = np.stack(ts)
        sign = np.sign(stack.sum(0))
        agree = (stack != 0) & (np.sign(stack) == sign)
        cnt = agree.sum(0)
        return np.where(cnt > 0, (stack * agree).sum(0) / np.maximum(cnt, 1), 0.0)

    return _job(b.build(), {k: v[0] for k, v in tasks.items()}, float_ties, witnesses=witnesses)


# --------------------------------------------------------------------- output


def plot(results: dict[str, Any], path: Path) -> Path:
    """Gas per operation (targets dashed), and dispute rounds vs trace length per k."""
    plt = report.pyplot()
    fig, (bars, lines) = plt.subplots(1, 2, figsize=(14, 6))
    ops = results["gas"]["operations"]
    labels = [k for k in ops] + [v["label"] for v in results["gas"]["one_step"].values()] + ["BLS consent (3 signers)"]
    values = [v["max"] for v in ops.values()] + [v["gas"] for v in results["gas"]["one_step"].values()]
    values.append(results["bls_consent"]["gas"])
    bars.barh(range(len(values)), values, color="#4c72b0")
    bars.set_yticks(range(len(values)), labels, fontsize=8)
    bars.set_xscale("log")
    for name, value in TARGETS.items():
        bars.axvline(value, linestyle="--", color="#c44e52", linewidth=0.8)
        bars.text(value, len(values) - 0.5, f"{name} target", fontsize=7, rotation=90, va="top")
    bars.set_xlabel("gas (log scale)")
    bars.set_title("Fraud-proof gas per transaction")
    for k in KS:
        rows = [r for r in results["moves"]["formula"] if r["k"] == k]
        lines.plot([r["steps"] for r in rows], [r["rounds_chain_tensor"] for r in rows], marker="o", label=f"bound, k = {k}")
        played = [r for r in results["moves"]["played"] if r["k"] == k]
        lines.scatter([r["steps"] for r in played], [r["rounds"] for r in played], marker="x", s=60, label=f"played, k = {k}")
    lines.set_xscale("log")
    lines.set_xlabel("trace length (steps)")
    lines.set_ylabel("reveal/pick rounds")
    lines.set_title("Rounds to resolve a dispute (4-chunk tensor)")
    lines.legend(fontsize=7)
    return report.save_figure(fig, path)


def render(results: dict[str, Any]) -> RenderableType:
    """The tables ``collab bench fraudproof`` prints."""
    ops = results["gas"]["operations"]
    gas_rows = [(k, v["median"], v["max"]) for k, v in ops.items()] + [(v["label"], v["gas"], v["gas"]) for v in results["gas"]["one_step"].values()]
    gas_rows.append(("BLS consent check (3 signers, separate)", results["bls_consent"]["gas"], results["bls_consent"]["gas"]))
    targets = [(k, v["target"], v["measured"], v["pass"]) for k, v in results["targets"].items()]
    played = [(r["steps"], r["k"], r["rounds"], r["round_bound"], r["transactions"], r["within_bound"]) for r in results["moves"]["played"]]
    off = [(k, j["commit_vs_execute"], j["commit_outputs_vs_execute"], j["execute_vs_float"], f"{j['error']['max_abs']:.2e}")
           for k, j in results["offchain"]["jobs"].items()]
    d = results["encoder_dispute"]
    return Group(
        report.table("Fraud-proof gas per transaction", ["operation", "median", "max"], gas_rows),
        report.table("Targets", ["target", "limit", "measured", "pass"], targets),
        report.table("Played disputes", ["steps", "k", "rounds", "bound", "txs", "within"], played),
        report.table("Off-chain cost and error", ["job", "commit/exec", "commit outputs/exec", "exec/float", "max |err|"], off),
        f"encoder dispute ({d['layers']} layers, seq {d['seq']}, dim {d['dim']}, {d['heads']} heads, {d['steps']} steps; "
        f"{d['program']}): {d['total_seconds']} s (claimer trace {d['claimer_trace_seconds']} s, "
        f"{d['transactions']} transactions in {d['game_seconds']} s)",
    )
