"""The tensor VM: vectorised execution equals the scalar one-element definitions, for every op.

``make_case`` draws a random well-formed step of a given op over small tensors
whose values mix ordinary numbers with the edges (int64 bounds, rounding ties,
zero); ``test_one_step_verifier`` reuses it to hold the Solidity verifier to
the same values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from collab import fixedpoint as fx
from collab.errors import BadInput
from collab.fixedpoint import INT64_MAX, INT64_MIN, Domain
from collab.fraudproof import commitments as cm
from collab.fraudproof.convert import from_vm, state_dict_bundle, state_dict_from_vm, state_dict_to_vm, to_vm
from collab.fraudproof.program import Op, Program, ProgramBuilder, Step, encode_params, expected_out
from collab.fraudproof.trace import Verdict, build_trace, commit_value, input_bundle
from collab.fraudproof.vm import NoValidOutput, Value, bundle, element_value, execute_step, run, tensor

EDGES = [INT64_MIN, INT64_MIN + 1, -(1 << 40), -1, 0, 1, 1 << 31, INT64_MAX - 1, INT64_MAX]


def words(rng: np.random.Generator, shape: tuple[int, ...], scale: int = 1 << 20, edges: bool = True) -> np.ndarray:
    """Random int64 words of magnitude ~scale, some replaced by edge values."""
    arr = rng.integers(-scale, scale + 1, size=shape, dtype=np.int64)
    if edges and arr.size:
        mask = rng.random(arr.shape) < 0.15
        arr = np.where(mask, rng.choice(np.array(EDGES, dtype=np.int64), size=arr.shape), arr)
    return arr


def fixed(a: np.ndarray, f: int) -> Value:
    return tensor(np.asarray(a, dtype=np.int64), Domain.FIXED, f)


def hdr(shape: tuple[int, ...], f: int, domain: Domain = Domain.FIXED) -> bytes:
    return cm.TensorHeader(domain, f, shape).encode()


def make_case(op: Op, seed: int) -> tuple[Step, list[Value]]:
    """A random well-formed step of ``op`` with its input values."""
    rng = np.random.default_rng(seed)
    f = int(rng.integers(0, 24))
    fo = int(rng.integers(0, 24))
    shape = tuple(int(d) for d in rng.integers(1, 5, size=int(rng.integers(1, 4))))
    a = fixed(words(rng, shape), f)
    ins: list[Value]
    params = b""
    if op in (Op.ADD, Op.SUB):
        ins = [a, fixed(words(rng, shape), int(rng.integers(0, 30)))]
        out = hdr(shape, fo)
    elif op == Op.BIAS_ADD:
        ins = [a, fixed(words(rng, shape[-1:]), int(rng.integers(0, 30)))]
        out = hdr(shape, fo)
    elif op == Op.MUL:
        bshape = shape if rng.random() < 0.5 else shape[-1:]
        ins = [a, fixed(words(rng, bshape), int(rng.integers(0, 30)))]
        out = hdr(shape, fo)
    elif op == Op.SCALE:
        ins = [a]
        params = encode_params(op, int(rng.choice([3, -7, 1 << 20, INT64_MIN, INT64_MAX])), int(rng.integers(0, 40)))
        out = hdr(shape, fo)
    elif op == Op.MATMUL:
        k = int(rng.integers(1, 40))
        m, n = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        lead = (int(rng.integers(1, 3)),) if rng.random() < 0.5 else ()
        scale = 1 << 20 if rng.random() < 0.7 else 1 << 62
        ins = [fixed(words(rng, lead + (m, k), scale), f), fixed(words(rng, (n, k), scale), int(rng.integers(0, 20)))]
        out = hdr(lead + (m, n), fo)
    elif op == Op.RESHAPE:
        dom = Domain.RING if rng.random() < 0.3 else Domain.FIXED
        ins = [tensor(words(rng, shape), dom, f)]
        out = hdr((int(np.prod(shape)),), f, dom)
    elif op == Op.PERMUTE:
        shape = tuple(int(d) for d in rng.integers(1, 5, size=int(rng.integers(1, 5))))
        perm = [int(x) for x in rng.permutation(len(shape))]
        ins = [fixed(words(rng, shape), f)]
        params = encode_params(op, perm)
        out = hdr(tuple(shape[q] for q in perm), f)
    elif op == Op.GATHER:
        vocab, dim = int(rng.integers(1, 6)), int(rng.integers(1, 40))
        ids = rng.integers(-2, vocab + 2, size=shape).astype(np.int64)
        ins = [fixed(ids, 0), fixed(words(rng, (vocab, dim)), f)]
        out = hdr(shape + (dim,), f)
    elif op in (Op.MEAN, Op.SUM):
        shape = shape[:-1] + (int(rng.integers(1, 70)),)
        ins = [fixed(words(rng, shape), f)]
        out = hdr(shape[:-1], fo)
    elif op == Op.WEIGHTED_SUM:
        n = int(rng.integers(1, 5))
        ins = [fixed(words(rng, shape), f) for _ in range(n)]
        ws = [int(w) for w in rng.integers(-(1 << 20), 1 << 20, size=n)]
        if rng.random() < 0.3:
            ws[0] = INT64_MAX
        params = encode_params(op, ws, int(rng.integers(0, 40)))
        out = hdr(shape, fo)
    elif op == Op.RING_ADD:
        n = int(rng.integers(1, 5))
        ins = [tensor(words(rng, shape, 1 << 62), Domain.RING, f) for _ in range(n)]
        out = hdr(shape, f, Domain.RING)
    elif op == Op.PRG_MASK:
        ins = []
        params = encode_params(op, rng.bytes(32), bool(rng.random() < 0.5))
        out = hdr(shape, f, Domain.RING)
    elif op == Op.RING_TO_FIXED:
        ins = [tensor(words(rng, shape, 1 << 62), Domain.RING, f)]
        out = hdr(shape, fo)
    elif op == Op.FIXED_TO_RING:
        ins = [a]
        out = hdr(shape, f, Domain.RING)
    elif op == Op.CLIP:
        lo, hi = sorted(int(x) for x in rng.integers(-(1 << 20), 1 << 20, size=2))
        if rng.random() < 0.2:
            lo, hi = hi, lo
        ins = [a]
        params = encode_params(op, lo, hi)
        out = hdr(shape, fo)
    elif op in (Op.RELU, Op.GELU, Op.EXP, Op.RECIPROCAL, Op.INV_SQRT):
        f = int(rng.integers(8, 24))
        ins = [fixed(words(rng, shape, 8 << f), f)]
        out = hdr(shape, fo)
    elif op in (Op.SOFTMAX, Op.LAYERNORM):
        f = int(rng.integers(8, 24))
        shape = shape[:-1] + (int(rng.integers(1, 40)),)
        ins = [fixed(words(rng, shape, 8 << f, edges=op == Op.LAYERNORM), f)]
        if op == Op.LAYERNORM:
            params = encode_params(op, int(rng.integers(0, 1 << 8)))
        out = hdr(shape, fo)
    elif op == Op.WITNESS:
        ins = []
        out = hdr(shape, f)
    elif op in (Op.COUNT_ABS, Op.TIES_TRIM):
        tau = int(rng.choice([0, 5, 1 << 10, -3, INT64_MAX, INT64_MIN]))
        shape = (int(rng.integers(1, 5)), int(rng.integers(1, 50)))  # several chunks, blocks past chunk 0
        ins = [fixed(words(rng, shape, 1 << 12), f), fixed(np.array(tau, dtype=np.int64), f)]
        if op == Op.COUNT_ABS:
            block = int(rng.integers(1, 70))
            params = encode_params(op, block)
            out = hdr((2, -(-int(np.prod(shape)) // block)), 0)
        else:
            out = hdr(shape, fo)
    elif op == Op.ASSERT_KTH:
        c = sorted(int(x) for x in rng.integers(0, 20, size=2))
        ins = [fixed(np.array(c, dtype=np.int64), 0)]
        params = encode_params(op, int(rng.integers(0, 22)))
        out = hdr((), 0)
    elif op == Op.TIES_SIGN:
        ins = [fixed(words(rng, shape), f) for _ in range(int(rng.integers(1, 5)))]
        out = hdr(shape, 0)
    elif op == Op.TIES_MEAN:
        ts = [fixed(rng.integers(-3, 4, size=shape) * (1 << 20), f) for _ in range(int(rng.integers(1, 5)))]
        ins = [fixed(rng.integers(-1, 2, size=shape), 0), *ts]
        out = hdr(shape, fo)
    elif op == Op.BUNDLE:
        n = int(rng.integers(1, 4))
        ins = [fixed(words(rng, shape), f) for _ in range(n)]
        params = encode_params(op, sorted(rng.bytes(32) for _ in range(n)))
        out = hdr((n,), 0, Domain.BUNDLE)
    elif op == Op.BUNDLE_GET:
        entries = sorted((rng.bytes(32), fixed(words(rng, shape), f)) for _ in range(int(rng.integers(1, 4))))
        index = int(rng.integers(0, len(entries)))
        ins = [bundle(entries)]
        params = encode_params(op, index, entries[index][0])
        out = entries[index][1].header.encode()
    else:  # pragma: no cover
        raise AssertionError(op)
    return Step(int(op), tuple(range(len(ins))), out, params), ins


ALL_OPS = list(Op)


@pytest.mark.parametrize("op", ALL_OPS, ids=[o.name for o in ALL_OPS])
def test_vectorised_equals_scalar_elements(op: Op) -> None:
    for seed in range(12):
        step, ins = make_case(op, seed * 101 + int(op))
        try:
            wit = words(np.random.default_rng(seed), step.header.shape) if op == Op.WITNESS else None
            out = execute_step(step, ins, wit)
        except NoValidOutput:
            assert op == Op.ASSERT_KTH
            with pytest.raises(NoValidOutput):
                element_value(step, ins, 0)
            continue
        if op == Op.BUNDLE:
            assert out.entries is not None and [v for _, v in out.entries] == ins
            continue
        flat = out.flat()
        assert out.header == step.header
        for e in range(flat.size + 3):  # + padding elements
            want = element_value(step, ins, e)
            if op == Op.WITNESS:
                assert want is None or e >= flat.size
                continue
            got = int(flat[e]) if e < flat.size else 0
            assert got == want, (op.name, seed, e)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(0, 2**32), st.integers(0, 126), st.booleans(), st.booleans())
def test_fused_weighted_sum_equals_the_definition_and_the_numpy_path(
        k: int, seed: int, shift: int, widest: bool, small: bool) -> None:
    """native.weighted_sum vs fixedpoint's scalar sat(rshift(Σ w·x)): 2,500 elements span three of its
    1,024-element blocks; small words with a few edges mix int64 blocks with 128-bit ones."""
    from collab.fraudproof import native

    if native.lib() is None:
        pytest.skip("no C compiler: the VM keeps its numpy path")
    rng = np.random.default_rng(seed)
    n = 2500
    arrays = [words(rng, (n,), 1 << 20, edges=False) if small else words(rng, (n,), 1 << 62) for _ in range(k)]
    if small:
        arrays[0][int(rng.integers(0, n))] = EDGES[int(rng.integers(0, len(EDGES)))]  # one block goes wide
    limit = ((1 << 63) - 1) // k  # the kernel's exact range: k · max|w| < 2^63
    ws = [int(w) for w in rng.integers(-limit, limit + 1, size=k)] if widest else \
        [int(w) for w in rng.integers(-(1 << 31), 1 << 31, size=k)]
    if widest:
        ws[0] = limit if seed % 2 else -limit
    got = native.weighted_sum(arrays, ws, shift)
    assert got is not None
    want = [fx.rescale(sum(w * int(a[j]) for w, a in zip(ws, arrays)), shift, 0) for j in range(n)]
    assert got.tolist() == want
    assert native.weighted_sum(arrays[:1] * 2, [1 << 62, 1 << 62], shift) is None  # past the range: numpy's path


def test_weighted_sum_steps_agree_with_and_without_the_native_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    from collab.fraudproof import native

    if native.lib() is None:
        pytest.skip("no C compiler: the VM keeps its numpy path")
    cases = [make_case(Op.WEIGHTED_SUM, seed) for seed in range(40)]
    fused = [execute_step(step, ins).flat().tolist() for step, ins in cases]
    monkeypatch.setattr(native, "lib", lambda: None)
    assert [execute_step(step, ins).flat().tolist() for step, ins in cases] == fused


def test_known_values() -> None:
    # 1.5 + 2.25 at f=2/f=3 -> f=1: 3.75 rounds half to even -> 4.0 (8 at f=1)
    step = Step(int(Op.ADD), (0, 1), hdr((1,), 1))
    assert execute_step(step, [fixed(np.array([6]), 2), fixed(np.array([18]), 3)]).flat().tolist() == [8]
    # saturation, never wraparound, in FIXED; wraparound in RING
    step = Step(int(Op.ADD), (0, 1), hdr((1,), 0))
    big = fixed(np.array([INT64_MAX]), 0)
    assert execute_step(step, [big, big]).flat().tolist() == [INT64_MAX]
    ring = tensor(np.array([INT64_MAX]), Domain.RING, 0)
    assert execute_step(Step(int(Op.RING_ADD), (0, 1), hdr((1,), 0, Domain.RING)), [ring, ring]).flat().tolist() == [-2]
    # matmul in torch Linear layout, exact beyond float64
    a = np.array([[1 << 40, 3]], dtype=np.int64)
    w = np.array([[1 << 40, 5], [7, 1]], dtype=np.int64)
    out = execute_step(Step(int(Op.MATMUL), (0, 1), hdr((1, 2), 40)), [fixed(a, 20), fixed(w, 20)])
    assert out.flat().tolist() == [fx.rescale((1 << 80) + 15, 40, 40), fx.rescale((7 << 40) + 3, 40, 40)]


def test_ill_formed_steps_have_no_valid_output() -> None:
    a = fixed(np.zeros((2, 3), np.int64), 4)
    bad = [
        Step(int(Op.ADD), (0, 1), hdr((3, 2), 4)),  # wrong output shape
        Step(int(Op.ADD), (0, 1), hdr((2, 3), 4, Domain.RING)),  # wrong output domain
        Step(int(Op.ADD), (0, 1), b"\x07" + b"\x00" * 31),  # invalid header
        Step(int(Op.SCALE), (0, 1), hdr((2, 3), 4), b"\x01"),  # params do not decode
        Step(99, (0, 1), hdr((2, 3), 4)),  # unknown op
    ]
    for step in bad:
        with pytest.raises(NoValidOutput):
            execute_step(step, [a, a])
        with pytest.raises(NoValidOutput):
            element_value(step, [a, a], 0)
    # bounds of §3.4
    wide = cm.TensorHeader(Domain.FIXED, 4, (1, 513)).encode()
    assert expected_out(Op.SOFTMAX, b"", [wide], wide) is not None
    assert expected_out(Op.SOFTMAX, b"", [hdr((1, 512), 4)], hdr((1, 512), 4)) is None
    k_big = [hdr((1, 4097), 0), hdr((2, 4097), 0)]
    assert expected_out(Op.MATMUL, b"", k_big, hdr((1, 2), 0)) is not None
    # non-canonical params (a dirty bool) are refused
    params = bytearray(encode_params(Op.PRG_MASK, b"\x01" * 32, True))
    params[-1] = 2
    assert expected_out(Op.PRG_MASK, bytes(params), [], hdr((4,), 0, Domain.RING)) is not None


def test_assert_kth_and_ties_pipeline() -> None:
    rng = np.random.default_rng(7)
    vals = rng.integers(-1000, 1000, size=(8, 16)).astype(np.int64)
    k = 20
    mags = np.sort(np.abs(vals).ravel())[::-1]
    tau = int(mags[k - 1])
    b = ProgramBuilder({"t": cm.TensorHeader(Domain.FIXED, 8, (8, 16))})
    t = b["t"]
    w = b.witness(cm.TensorHeader(Domain.FIXED, 8, ()))
    counts = b.count_abs(t, w, 50)
    totals = b.sum(counts, 0)
    b.assert_kth(totals, k)
    trimmed = b.ties_trim(t, w)
    program = b.build()
    outs = run(program, [fixed(vals, 8)], {0: np.array(tau)})
    kept = outs[-1].flat()
    assert np.count_nonzero(kept) >= k
    assert np.all(np.abs(kept[kept != 0]) >= tau)
    assert trimmed.id == program.n_inputs + 4
    with pytest.raises(NoValidOutput):
        run(program, [fixed(vals, 8)], {0: np.array(tau + 1)})


def test_builder_refuses_ill_formed() -> None:
    b = ProgramBuilder({"x": cm.TensorHeader(Domain.FIXED, 8, (2, 3)), "w": cm.TensorHeader(Domain.FIXED, 8, (4, 5))})
    with pytest.raises(BadInput):
        b.matmul(b["x"], b["w"])
    with pytest.raises(BadInput):
        b.ring_add([b["x"]])


def test_program_root_and_step_proofs() -> None:
    b = ProgramBuilder({"x": cm.TensorHeader(Domain.FIXED, 8, (2, 3))})
    y = b.relu(b["x"])
    z = b.add(y, b["x"])
    b.gelu(z)
    program = b.build()
    tree = program.step_tree
    assert program.root == cm.program_root(3, tree.root)
    for i, step in enumerate(program.steps):
        leaf = cm.step_leaf(i, step.descriptor)
        assert cm.root_from_proof(leaf, i, program.step_proof(i)) == tree.root
    # programs travel as bytes and come back identical
    again = Program.from_bytes(program.to_bytes())
    assert again.root == program.root and again.n_inputs == 1
    with pytest.raises(BadInput):
        Program.from_bytes(program.to_bytes()[:-5])
    # the root binds every descriptor
    other = ProgramBuilder({"x": cm.TensorHeader(Domain.FIXED, 8, (2, 3))})
    other.relu(other["x"], fo=9)
    assert other.build().root != program.root


def test_trace_commitments_and_one_step_inputs() -> None:
    rng = np.random.default_rng(3)
    hx = cm.TensorHeader(Domain.FIXED, 12, (3, 40))
    hw = cm.TensorHeader(Domain.FIXED, 12, (5, 40))
    b = ProgramBuilder({"x": hx, "w": hw})
    y = b.matmul(b["x"], b["w"])
    s = b.softmax(y)
    b.bundle({"y": y, "s": s})
    program = b.build()
    inputs = {"x": fixed(words(rng, (3, 40), 1 << 14, False), 12), "w": fixed(words(rng, (5, 40), 1 << 14, False), 12)}
    tr = build_trace(program, inputs)
    assert tr.root == cm.MerkleTree([cm.trace_leaf(i, c.root) for i, c in enumerate(tr.outputs)], cm.ZERO32).root
    assert tr.output_root == tr.outputs[-1].root
    # independent commitment path agrees
    mm = tr.outputs[0]
    assert mm.root == cm.commit_tensor(mm.value.data, mm.header).root
    for i in range(len(program.steps)):
        n_el = tr.outputs[i].header.num_leaves * (1 if i == 2 else 32)
        for e in range(0, n_el, 7):
            verdict, want = tr.expected(i, e)
            assert verdict == Verdict.VALUE
            assert tr.claimed_element(i, e) == want
            for t, inp in zip(program.steps[i].inputs, tr.one_step_inputs(i, e)):
                c = tr.tensor(t)
                assert inp.header == c.header.encode()
                if inp.chunks:
                    size = c.leaf_size
                    leaves = [
                        cm.chunk_leaf(inp.chunks[j : j + size]) if size == 256 else cm.keccak(b"\x05" + inp.chunks[j : j + size])
                        for j in range(0, len(inp.chunks), size)
                    ]
                    assert cm.root_from_range(leaves, inp.first_chunk, inp.proof, c.tree.depth) == c.chunk_root


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_parallel_commits_equal_sequential_ones(workers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """However many threads commit, every root is the one committing each value alone gives
    (bundles of bundles, an entry taken out again, a value that is also an input)."""
    import collab.fraudproof.trace as trace_mod

    monkeypatch.setattr(trace_mod, "COMMIT_WORKERS", workers)
    rng = np.random.default_rng(7)
    hx, hw = cm.TensorHeader(Domain.FIXED, 12, (30, 64)), cm.TensorHeader(Domain.FIXED, 12, (50, 64))
    b = ProgramBuilder({"x": hx, "w": hw})
    y = b.matmul(b["x"], b["w"])
    inner = b.bundle({"y": y, "x": b["x"]})
    outer = b.bundle({"inner": inner, "s": b.softmax(y), "w": b["w"]})
    b.add(b.bundle_get(inner, 0 if cm.name_hash("y") < cm.name_hash("x") else 1, cm.name_hash("y"), y.header), y)
    b.bundle({"outer": outer, "again": b.bundle({"y": y})})
    program = b.build()
    inputs = {"x": fixed(words(rng, (30, 64), 1 << 14, False), 12), "w": fixed(words(rng, (50, 64), 1 << 14, False), 12)}
    seen: list[Value] = []
    tr = build_trace(program, inputs, executed=seen.append)
    values = run(program, [v for _, v in input_bundle(inputs)])
    assert [c.root for c in tr.outputs] == [commit_value(v).root for v in values]
    assert tr.input_root == commit_value(bundle(input_bundle(inputs))).root
    assert len(seen) == 1 and seen[0] is tr.outputs[-1].value  # the output, handed over once, before the wait


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=40), st.integers(0, 40))
def test_convert_round_trip(xs: list[float], f: int) -> None:
    t = torch.tensor(xs, dtype=torch.float64)
    v, err = to_vm(t, f)
    back = from_vm(v)
    assert float((back.double() - t).abs().max()) == pytest.approx(err.max_abs, abs=0, rel=1e-12) or err.saturated
    assert err.max_abs <= 2.0 ** (-f - 1) or err.saturated


def test_state_dict_conversion() -> None:
    sd = {"lin.weight": torch.randn(4, 3), "lin.bias": torch.randn(4), "steps": torch.tensor(3)}
    values, errors = state_dict_to_vm(sd, 16)
    assert set(values) == set(sd) and errors["lin.weight"].max_abs <= 2.0**-17
    back = state_dict_from_vm(values, like=sd)
    assert back["lin.weight"].dtype == torch.float32 and back["lin.weight"].shape == (4, 3)
    assert torch.allclose(back["lin.bias"], sd["lin.bias"], atol=2.0**-16)
    with pytest.raises(BadInput):
        to_vm(torch.tensor([float("nan")]), 8)
    # the state dict's bundle root is the commitmentRoot commit_bundle gives for the same tensors
    root = commit_value(state_dict_bundle(values)).root
    tensors = {n: cm.commit_tensor(v.data, v.header).root for n, v in values.items()}
    assert root == cm.commit_bundle(tensors).root


def test_step_proofs_fold_to_the_claim() -> None:
    rng = np.random.default_rng(5)
    hx = cm.TensorHeader(Domain.FIXED, 10, (2, 8))
    b = ProgramBuilder({"x": hx, "y": hx})
    s = b.add(b["x"], b["y"])
    b.mul(s, b["x"])
    program = b.build()
    tr = build_trace(program, {"x": fixed(words(rng, (2, 8), 1 << 12, False), 10), "y": fixed(words(rng, (2, 8), 1 << 12, False), 10)})
    sp = tr.step_proof(1, 3)
    assert cm.root_from_proof(cm.step_leaf(1, sp.descriptor), 1, sp.step_proof) == program.step_tree.root
    assert [o.kind for o in sp.origins] == ["trace", "input"]
    trace_origin, input_origin = sp.origins
    assert cm.root_from_proof(cm.trace_leaf(trace_origin.index, trace_origin.root), trace_origin.index, trace_origin.proof) == tr.root
    leaf = cm.entry_leaf(input_origin.name_hash, input_origin.root)
    assert cm.root_from_proof(leaf, input_origin.index, input_origin.proof) == tr.bundle.chunk_root
    assert cm.tensor_root(tr.bundle.chunk_root, tr.bundle.header.encode()) == tr.input_root
    for origin, inp in zip(sp.origins, sp.inputs):
        assert cm.tensor_root(inp.chunk_root, inp.header) == origin.root
    assert sp.verdict == Verdict.VALUE and tr.claimed_element(1, 3) == sp.expected
