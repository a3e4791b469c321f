"""Program builders for real jobs vs independent float references (no chain needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eth_account import Account
from eth_hash.auto import keccak

from collab.errors import BadInput
from collab.fraudproof.builders import (
    EncoderShape,
    encoder_forward,
    fedavg,
    kth_largest_abs,
    linear_merge,
    masked_sum_from_witness,
    output_tensor,
    task_arithmetic,
    ties_merge,
    ties_reference,
)
from collab.fraudproof.convert import from_vm, state_dict_bundle, state_dict_to_vm
from collab.fraudproof.program import Op, Program
from collab.fraudproof.trace import commit_value
from collab.fraudproof.vm import NoValidOutput
from collab.secagg import Member, RoundConfig, encode, run_local_round

F = 24
ULP = 2.0**-F


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "enc.weight": torch.randn(6, 5, generator=g),
        "enc.bias": torch.randn(6, generator=g),
        "head.weight": torch.randn(3, 6, generator=g) * 0.1,
        "steps": torch.tensor([11]),  # integer buffer: passed through from the first model
    }


def test_fedavg_matches_torch_weighted_mean_and_commits_the_asset_root() -> None:
    states = [_state(i) for i in range(3)]
    counts = [10, 30, 60]
    job = fedavg(states, counts, f=F)
    out = job.state_dict()
    for k in ("enc.weight", "enc.bias", "head.weight"):
        ref = sum(s[k].double() * n for s, n in zip(states, counts)) / sum(counts)
        assert torch.allclose(out[k].double(), ref, atol=8 * ULP, rtol=0), k
        assert out[k].dtype == torch.float32 and out[k].shape == states[0][k].shape
    assert torch.equal(out["steps"], states[0]["steps"])
    # The trace's output root is the commitmentRoot of the result registered as an asset.
    trace = job.trace()
    float64_result = {k: from_vm(v) for k, v in job.outputs().items()}  # what the asset's blob stores
    asset_root = commit_value(state_dict_bundle(state_dict_to_vm(float64_result, F)[0])).root
    assert trace.output_root == asset_root
    assert job.program.steps[-1].op == Op.BUNDLE
    assert Program.from_bytes(job.program.to_bytes()).root == job.program.root


def test_linear_and_task_arithmetic_match_float() -> None:
    base, a, b = _state(0), _state(1), _state(2)
    lin = linear_merge([a, b], [1.0, 3.0], f=F).state_dict()
    ta = task_arithmetic(base, [a, b], 0.7, f=F).state_dict()
    for k in ("enc.weight", "head.weight"):
        assert torch.allclose(lin[k].double(), 0.25 * a[k].double() + 0.75 * b[k].double(), atol=8 * ULP, rtol=0)
        ref = base[k].double() + 0.7 * (a[k].double() - base[k].double() + b[k].double() - base[k].double())
        assert torch.allclose(ta[k].double(), ref, atol=16 * ULP, rtol=0)


@pytest.mark.parametrize("density", [0.2, 0.5, 1.0])
def test_ties_matches_numpy_reference(density: float) -> None:
    base, models = _state(0), [_state(i) for i in (1, 2, 3)]
    job = ties_merge(base, models, density, 0.8, f=F)
    out = job.state_dict()
    ref = ties_reference(base, models, density, 0.8)
    for k in ("enc.weight", "enc.bias", "head.weight"):
        assert np.abs(out[k].double().numpy() - ref[k]).max() < 16 * ULP, k
    ops = {Op(s.op) for s in job.program.steps}
    assert {Op.WITNESS, Op.COUNT_ABS, Op.SUM, Op.ASSERT_KTH, Op.TIES_TRIM, Op.TIES_SIGN, Op.TIES_MEAN} <= ops


def test_ties_with_a_wrong_threshold_witness_has_no_valid_output() -> None:
    base, models = _state(0), [_state(1), _state(2)]
    job = ties_merge(base, models, 0.5, f=F)
    first = min(job.witnesses)
    job.witnesses[first] = job.witnesses[first] + 1  # not the k-th largest magnitude any more
    with pytest.raises(NoValidOutput, match="ASSERT_KTH"):
        job.run()


def test_kth_largest_abs() -> None:
    assert kth_largest_abs(np.array([3, -7, 5, 0]), 1) == 7
    assert kth_largest_abs(np.array([3, -7, 5, 0]), 3) == 3


def test_masked_sum_of_a_secagg_round_equals_the_plain_sum_exactly() -> None:
    accounts = {i: Account.from_key(keccak(b"builders-%d" % i)) for i in range(1, 5)}
    members = tuple(Member(i, accounts[i].address) for i in accounts)
    config = RoundConfig(keccak(b"builders-round"), members, 3, 40, 16, None, b"\x05" * 32)
    rng = np.random.default_rng(1)
    floats = {u: rng.normal(size=40) for u in accounts}
    result = run_local_round(config, accounts, {u: encode(x, 16) for u, x in floats.items()}, drop_before={4: "masked"})
    job = masked_sum_from_witness(result.witness)
    out = job.outputs()["sum"]
    plain = sum(encode(floats[u], 16).astype(object) for u in (1, 2, 3))
    assert [int(v) for v in out.data] == [int(v) for v in plain]  # exact, masks cancel
    ops = [Op(s.op) for s in job.program.steps]
    assert Op.PRG_MASK in ops and Op.RING_ADD in ops and Op.RING_TO_FIXED in ops


def test_encoder_layer_matches_torch_bert() -> None:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=12
    )
    model = BertModel(cfg, add_pooling_layer=False).eval()
    ids = [2, 9, 31, 4, 7]
    job = encoder_forward(model.state_dict(), ids, EncoderShape(16, 2, 1), f=16)
    got = output_tensor(job, "pooled")
    with torch.no_grad():
        ref = model(torch.tensor([ids])).last_hidden_state[0].mean(0).double()
    assert (got - ref).abs().max() < 5e-3
    ops = {Op(s.op) for s in job.program.steps}
    assert {Op.GATHER, Op.LAYERNORM, Op.RESHAPE, Op.PERMUTE, Op.MATMUL, Op.SOFTMAX, Op.GELU, Op.MEAN} <= ops
    hidden = encoder_forward(model.state_dict(), ids, EncoderShape(16, 2, 1), f=16, pooled=False)
    with torch.no_grad():
        full = model(torch.tensor([ids])).last_hidden_state[0].double()
    assert (output_tensor(hidden, "hidden") - full).abs().max() < 5e-3


def test_builders_refuse_bad_jobs() -> None:
    a, b = _state(0), _state(1)
    b["enc.weight"] = torch.zeros(2, 2)
    with pytest.raises(BadInput):
        fedavg([a, b], [1, 1])
    with pytest.raises(BadInput):
        fedavg([a], [0])
    with pytest.raises(BadInput):
        ties_merge(a, [_state(2)], 0.0)
    with pytest.raises(BadInput):
        encoder_forward({}, [1], EncoderShape(16, 2, 1))
