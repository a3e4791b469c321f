"""OneStepVerifier vs the Python VM on a real anvil: every op, edges, padding, ill-formed steps, bad proofs.

Each case is a one-step program built by ``test_vm.make_case``, committed by
``collab.fraudproof.trace``; the verifier gets exactly the inputs the trace
says the element reads (range proofs against the chunk roots) and must return
the verdict and word Python computes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_vm import make_case
from web3 import Web3

from chain.client import AbiRegistry, ContractClient, deploy_contract
from chain.compiler import compile_contracts
from chain.errors import revert_class
from collab.fixedpoint import Domain
from collab.fraudproof import commitments as cm
from collab.fraudproof.program import Op, Program, ProgramBuilder, Step, encode_params, expected_out
from collab.fraudproof.trace import OneStepInput, Trace, Verdict, build_trace
from collab.fraudproof.vm import NoValidOutput, Value, execute_step, tensor

FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Verifier(ContractClient):
    """Typed view of OneStepVerifier."""

    CONTRACT = "OneStepVerifier"

    def evaluate(self, step: Step, inputs: list[OneStepInput], e: int) -> tuple[int, bytes]:
        verdict, expected = self._call(
            "evaluate", step.op, step.params, step.out_header, [i.as_tuple() for i in inputs], e
        )
        return int(verdict), bytes(expected)

    def gas(self, step: Step, inputs: list[OneStepInput], e: int) -> int:
        fn = self.contract.functions.evaluate(step.op, step.params, step.out_header, [i.as_tuple() for i in inputs], e)
        return int(fn.estimate_gas())

    def well_formed(self, op: int, params: bytes, out: bytes, headers: list[bytes]) -> bool:
        return bool(self._call("checkStepWellFormed", op, params, out, headers))

    def call(self, fn: str, *args: Any) -> Any:
        return self._call(fn, *args)


@pytest.fixture(scope="module")
def verifier(w3: Web3, deployer: LocalAccount) -> Verifier:
    artifacts = compile_contracts()
    artifact = artifacts["OneStepVerifier"]
    registry = AbiRegistry.from_artifacts(artifacts.values())
    address, _ = deploy_contract(w3, deployer, artifact, registry=registry)
    return Verifier(w3, address, artifact.abi, deployer, registry=registry)


def one_step_trace(step: Step, ins: list[Value]) -> Trace:
    """A one-step program over ``ins`` as claim inputs (names chosen so bundle order = input order)."""
    if not ins:  # a claim has at least one input; PRG_MASK and WITNESS read none
        ins = [tensor(np.zeros(1, np.int64), Domain.FIXED, 0)]
    names = sorted((f"in{i}" for i in range(len(ins))), key=cm.name_hash)
    program = Program(len(ins), [step])
    witnesses: dict[int, np.ndarray] = {}
    overrides: dict[int, Value] = {}
    header = cm.TensorHeader.decode(step.out_header)
    try:
        if step.op == Op.WITNESS:
            witnesses[0] = np.arange(header.numel, dtype=np.int64) - 3
        else:
            execute_step(step, [ins[t] for t in step.inputs])
    except NoValidOutput:
        overrides[0] = tensor(np.zeros(header.shape, np.int64), header.domain, header.frac_bits)
    return build_trace(program, dict(zip(names, ins)), witnesses, overrides)


def elements_to_check(trace: Trace, rng: np.random.Generator) -> list[int]:
    out = trace.outputs[0].header
    n = out.numel
    picks = {0, n - 1, n, int(rng.integers(0, n)), n + 37}
    return sorted(picks)


def check(verifier: Verifier, trace: Trace, e: int) -> None:
    step = trace.program.steps[0]
    verdict, expected = trace.expected(0, e)
    got = verifier.evaluate(step, trace.one_step_inputs(0, e), e)
    assert got == (int(verdict), expected), (Op(step.op).name, e, got, (verdict, expected.hex()))
    if verdict == Verdict.VALUE:
        # the honest trace reveals exactly the expected word, so an honest claimer wins
        assert trace.claimed_element(0, e) == expected


ALL_OPS = list(Op)


@pytest.mark.parametrize("op", ALL_OPS, ids=[o.name for o in ALL_OPS])
def test_every_op_agrees_with_python(verifier: Verifier, op: Op) -> None:
    for seed in range(3):
        step, ins = make_case(op, 7000 + seed * 31 + int(op))
        trace = one_step_trace(step, ins)
        rng = np.random.default_rng(seed)
        for e in elements_to_check(trace, rng):
            check(verifier, trace, e)


@FEW
@given(st.sampled_from(ALL_OPS), st.integers(0, 2**32))
def test_random_cases_agree(verifier: Verifier, op: Op, seed: int) -> None:
    step, ins = make_case(op, seed)
    trace = one_step_trace(step, ins)
    n = trace.outputs[0].header.numel
    check(verifier, trace, seed % (n + 4))


def _mutate_header(word: bytes, how: int) -> bytes:
    b = bytearray(word)
    if how == 0:
        b[0] ^= 1  # domain
    elif how == 1:
        b[1] = (b[1] + 1) % 70  # fractional bits (may go out of range)
    elif how == 2:
        b[2] = (b[2] + 1) % 8  # rank
    elif how == 3:
        b[6] ^= 1  # last byte of dims[0]
    else:
        b[30] = 1  # non-zero tail
    return bytes(b)


@FEW
@given(st.sampled_from(ALL_OPS), st.integers(0, 2**32), st.integers(0, 4), st.integers(0, 3))
def test_well_formedness_agrees(verifier: Verifier, op: Op, seed: int, how: int, target: int) -> None:
    step, ins = make_case(op, seed)
    headers = [v.header.encode() for v in ins]
    out, params = step.out_header, step.params
    if target == 0:
        out = _mutate_header(out, how)
    elif target == 1 and headers:
        headers[seed % len(headers)] = _mutate_header(headers[seed % len(headers)], how)
    elif target == 2:
        params = params[: len(params) - 1 - how] if params else b"\x00" * 32
    descriptor_headers = headers[:1] if op == Op.BUNDLE_GET else headers
    want = expected_out(op, params, descriptor_headers, out) is None
    assert verifier.well_formed(op, params, out, descriptor_headers) == want
    if not want:  # the claimer cannot be right, whatever the inputs
        inputs = [OneStepInput(h, b"\x00" * 32, 0, b"", []) for h in headers]
        if op == Op.BUNDLE_GET:
            inputs.append(OneStepInput(b"\x00" * 32, b"\x00" * 32, 0, b"", []))
        assert verifier.evaluate(Step(int(op), step.inputs, out, params), inputs, 0)[0] == Verdict.NO_VALID_VALUE


def test_ill_formed_examples(verifier: Verifier) -> None:
    fx8 = cm.TensorHeader(Domain.FIXED, 8, (2, 3)).encode()
    cases = [
        (Op.ADD, b"", cm.TensorHeader(Domain.FIXED, 8, (3, 2)).encode(), [fx8, fx8]),  # wrong out shape
        (Op.ADD, b"", cm.TensorHeader(Domain.RING, 8, (2, 3)).encode(), [fx8, fx8]),  # wrong out domain
        (Op.SOFTMAX, b"", cm.TensorHeader(Domain.FIXED, 8, (1, 513)).encode(), [cm.TensorHeader(Domain.FIXED, 8, (1, 513)).encode()]),
        (Op.MATMUL, b"", cm.TensorHeader(Domain.FIXED, 8, (1, 1)).encode(), [cm.TensorHeader(Domain.FIXED, 8, (1, 4097)).encode(), cm.TensorHeader(Domain.FIXED, 8, (1, 4097)).encode()]),
        (Op.RING_ADD, b"", fx8, [fx8, fx8]),  # ring add of FIXED tensors
        (Op.SCALE, encode_params(Op.SCALE, 1, 63), fx8, [fx8]),  # fs > 62
        (99, b"", fx8, [fx8]),  # unknown op
    ]
    for op, params, out, hs in cases:
        assert expected_out(op, params, hs, out) is not None
        assert verifier.well_formed(op, params, out, hs) is False
    # and the bounds themselves are allowed
    ok = cm.TensorHeader(Domain.FIXED, 8, (1, 512)).encode()
    assert verifier.well_formed(Op.SOFTMAX, b"", ok, [ok]) is True


def test_failed_assertion_has_no_valid_value(verifier: Verifier) -> None:
    counts = tensor(np.array([5, 5], dtype=np.int64), Domain.FIXED, 0)  # nothing is exactly the 6th largest
    step = Step(int(Op.ASSERT_KTH), (0,), cm.TensorHeader(Domain.FIXED, 0, ()).encode(), encode_params(Op.ASSERT_KTH, 6))
    trace = one_step_trace(step, [counts])
    for e in (0, 5):  # the real element and a padding element
        assert trace.expected(0, e)[0] == Verdict.NO_VALID_VALUE
        check(verifier, trace, e)


def test_bad_proofs_revert(verifier: Verifier) -> None:
    step, ins = make_case(Op.MATMUL, 5)
    trace = one_step_trace(step, ins)
    good = trace.one_step_inputs(0, 0)
    # a chunk tampered with no longer folds to the chunk root
    bad = [OneStepInput(good[0].header, good[0].chunk_root, good[0].first_chunk, b"\x01" + good[0].chunks[1:], good[0].proof), good[1]]
    with pytest.raises(revert_class("InputProofMismatch")):
        verifier.evaluate(step, bad, 0)
    # a range that is not exactly the row the element reads
    shifted = [OneStepInput(good[0].header, good[0].chunk_root, good[0].first_chunk + 1, good[0].chunks, good[0].proof), good[1]]
    with pytest.raises(revert_class("InputRangeMismatch")):
        verifier.evaluate(step, shifted, 0)
    # a root the chunks do not belong to
    wrong_root = [OneStepInput(good[0].header, b"\x11" * 32, good[0].first_chunk, good[0].chunks, good[0].proof), good[1]]
    with pytest.raises(revert_class("InputProofMismatch")):
        verifier.evaluate(step, wrong_root, 0)


def test_bundle_get_entry_tensor_must_match(verifier: Verifier) -> None:
    step, ins = make_case(Op.BUNDLE_GET, 3)
    trace = one_step_trace(step, ins)
    good = trace.one_step_inputs(0, 0)
    other = cm.commit_tensor(np.zeros(4, np.int64), cm.TensorHeader(Domain.FIXED, 0, (4,)))
    swapped = [good[0], OneStepInput(other.header.encode(), other.chunk_root, 0, other.chunk(0), other.tree.proof(0))]
    with pytest.raises(revert_class("EntryTensorMismatch")):
        verifier.evaluate(step, swapped, 0)
    # Without the appended entry tensor the verifier sees a BUNDLE_GET of arity 0: ill formed.
    # (This is why the game must pass exactly the descriptor's inputs + 1; see IOneStepVerifier.)
    assert verifier.evaluate(step, good[:1], 0)[0] == Verdict.NO_VALID_VALUE
    with pytest.raises(revert_class("InputCountMismatch")):
        verifier.evaluate(step, [], 0)


def test_wrong_claimed_value_loses(verifier: Verifier) -> None:
    """A trace with one flipped element differs from the verifier's expected word exactly there."""
    step, ins = make_case(Op.GELU, 9)
    honest = one_step_trace(step, ins)
    flipped = honest.outputs[0].value.data.copy()
    flipped.reshape(-1)[0] += 1
    names = sorted((f"in{i}" for i in range(len(ins))), key=cm.name_hash)
    liar = build_trace(honest.program, dict(zip(names, ins)), overrides={0: Value(honest.outputs[0].header, flipped)})
    _, expected = verifier.evaluate(step, liar.one_step_inputs(0, 0), 0)
    assert liar.claimed_element(0, 0) != expected
    assert honest.claimed_element(0, 0) == expected


def _gas_case(build: Any, inputs: dict[str, np.ndarray], headers: dict[str, cm.TensorHeader]) -> tuple[Step, Trace]:
    b = ProgramBuilder(headers)
    build(b)
    program = b.build()
    values = {k: tensor(v, Domain.FIXED, headers[k].frac_bits) for k, v in inputs.items()}
    trace = build_trace(program, values)
    return program.steps[-1], trace


def test_gas_of_heavy_elements(verifier: Verifier) -> None:
    rng = np.random.default_rng(1)
    report: dict[str, int] = {}
    for k in (384, 1536, 4096):
        hx, hw = cm.TensorHeader(Domain.FIXED, 16, (1, k)), cm.TensorHeader(Domain.FIXED, 16, (2, k))
        xs = {"x": rng.integers(-(1 << 16), 1 << 16, (1, k)), "w": rng.integers(-(1 << 16), 1 << 16, (2, k))}
        step, trace = _gas_case(lambda b: b.matmul(b["x"], b["w"]), xs, {"x": hx, "w": hw})
        report[f"matmul K={k}"] = verifier.gas(step, trace.one_step_inputs(0, 1), 1)
        assert verifier.evaluate(step, trace.one_step_inputs(0, 1), 1)[1] == trace.expected(0, 1)[1]
    for op, n in ((Op.SOFTMAX, 128), (Op.SOFTMAX, 512), (Op.LAYERNORM, 384), (Op.LAYERNORM, 2048)):
        h = cm.TensorHeader(Domain.FIXED, 16, (1, n))
        xs = {"x": rng.integers(-(1 << 17), 1 << 17, (1, n))}
        fn = (lambda b: b.softmax(b["x"])) if op == Op.SOFTMAX else (lambda b: b.layernorm(b["x"], 1 << 4))
        step, trace = _gas_case(fn, xs, {"x": h})
        report[f"{op.name.lower()} n={n}"] = verifier.gas(step, trace.one_step_inputs(0, 5), 5)
        assert verifier.evaluate(step, trace.one_step_inputs(0, 5), 5)[1] == trace.expected(0, 5)[1]
    print("one-step gas:", report)
    assert max(report.values()) < 3_000_000


def _small_programs(seed: int) -> list[tuple[Program, dict[str, Value], dict[int, np.ndarray]]]:
    """An encoder block, a masked sum and a TIES merge, small, with random weights."""
    rng = np.random.default_rng(seed)
    f = 12
    out = []
    heads = {"x": (3, 8), "wq": (8, 8), "w1": (16, 8), "b1": (16,), "w2": (8, 16), "g": (8,)}
    b = ProgramBuilder({k: cm.TensorHeader(Domain.FIXED, f, v) for k, v in heads.items()})
    q = b.matmul(b["x"], b["wq"])
    att = b.softmax(b.scale(b.matmul(q, q), 1 << 10, 12))
    ctx = b.matmul(att, b.permute(b["x"], [1, 0]))
    h = b.gelu(b.bias_add(b.matmul(ctx, b["w1"]), b["b1"]))
    y = b.layernorm(b.add(b.matmul(h, b["w2"]), b["x"]), 1 << 4)
    b.mean(b.permute(b.mul(y, b["g"]), [1, 0]))
    vals = {k: tensor(rng.integers(-(1 << 12), 1 << 12, v), Domain.FIXED, f) for k, v in heads.items()}
    out.append((b.build(), vals, {}))
    hs = {f"c{i}": cm.TensorHeader(Domain.FIXED, f, (40,)) for i in range(3)}
    b = ProgramBuilder(hs)
    masked = [b.ring_add([b.fixed_to_ring(b[f"c{i}"]), b.prg_mask(bytes([i + 1]) * 32, (40,), f)]) for i in range(3)]
    unmask = [b.prg_mask(bytes([i + 1]) * 32, (40,), f, negate=True) for i in range(3)]
    total = b.ring_to_fixed(b.ring_add(masked + unmask))
    b.weighted_sum([total, b["c0"]], [1 << 8, -(1 << 7)], 8)
    vals = {k: tensor(rng.integers(-(1 << 20), 1 << 20, (40,)), Domain.FIXED, f) for k in hs}
    out.append((b.build(), vals, {}))
    hs = {f"t{i}": cm.TensorHeader(Domain.FIXED, f, (5, 13)) for i in range(2)}
    b = ProgramBuilder(hs)
    vals = {k: tensor(rng.integers(-500, 500, (5, 13)), Domain.FIXED, f) for k in hs}
    witnesses: dict[int, np.ndarray] = {}
    trimmed = []
    for name in sorted(hs):
        k = 20
        witnesses[len(b.steps)] = np.array(int(np.sort(np.abs(vals[name].flat()))[::-1][k - 1]))
        tau = b.witness(cm.TensorHeader(Domain.FIXED, f, ()))
        b.assert_kth(b.sum(b.count_abs(b[name], tau, 16), 0), k)
        trimmed.append(b.ties_trim(b[name], tau))
    merged = b.ties_mean(b.ties_sign(trimmed), trimmed)
    b.bundle({"merged": merged, "sign": trimmed[0]})
    out.append((b.build(), vals, witnesses))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_multi_step_programs_agree(verifier: Verifier, seed: int) -> None:
    """Every step of real-job-shaped programs, inputs coming from earlier trace outputs."""
    rng = np.random.default_rng(seed)
    for program, vals, witnesses in _small_programs(seed):
        trace = build_trace(program, vals, witnesses)
        for i, step in enumerate(program.steps):
            n = trace.outputs[i].header.numel
            for e in {0, int(rng.integers(0, n)), n - 1}:
                verdict, expected = trace.expected(i, e)
                assert verdict in (Verdict.VALUE, Verdict.ANY_VALUE)
                assert verifier.evaluate(step, trace.one_step_inputs(i, e), e) == (int(verdict), expected)
                if verdict == Verdict.VALUE:
                    assert trace.claimed_element(i, e) == expected
