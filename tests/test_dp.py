"""DP-SGD on the LoRA model and the per-participant privacy ledger."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from collab.dp.dpsgd import DPConfig, TrainingStalled, train_dp
from collab.dp.ledger import PrivacyBudgetExceeded, PrivacyLedger, calibrate_sigma, epsilon_of
from collab.errors import BadInput
from collab.fl.data import Dataset, load_bbc_news, take
from collab.fl.task import TaskConfig, build_model, load_trainable, trainable_state


@pytest.fixture(scope="module")
def shard() -> Dataset:
    """40 BBC News articles (small on purpose: the tiny model only checks the DP plumbing)."""
    return take(load_bbc_news(), 40, seed=5)


def tiny() -> torch.nn.Module:
    return build_model(TaskConfig(num_labels=5, kind="tiny", max_len=32, seed=1))


def test_only_lora_query_value_and_head_are_trainable_and_travel() -> None:
    model = tiny()
    names = set(trainable_state(model))
    assert names and all("lora_" in n or n.startswith("classifier.") for n in names)
    assert any(".query.lora_A" in n for n in names) and any(".value.lora_B" in n for n in names)
    assert not any(".key." in n or "dense" in n for n in names)
    other = tiny()
    with pytest.raises(BadInput, match="do not match"):
        load_trainable(other, {k: v for k, v in trainable_state(model).items() if "classifier" not in k})


def test_the_real_encoder_loads_without_transformers_noise(capfd: pytest.CaptureFixture[str]) -> None:
    """The pooler is dropped on purpose: no load report or progress bar in a node's log, verbosity restored."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    model = build_model(TaskConfig(num_labels=5, seed=1))
    err = capfd.readouterr().err
    assert "LOAD REPORT" not in err and "Loading weights" not in err, err
    assert hf_logging.get_verbosity() == before and hf_logging.is_progress_bar_enabled()
    assert sum(p.numel() for p in model.parameters()) > 20_000_000  # the real MiniLM, not the tiny one


def test_adapters_can_be_limited_to_the_top_encoder_layers() -> None:
    import re

    def layers(model: torch.nn.Module) -> set[int]:
        return {int(m.group(1)) for n in trainable_state(model) if (m := re.search(r"layer\.(\d+)\.", n))}

    assert layers(build_model(TaskConfig(num_labels=5, seed=1))) == set(range(6))
    top = build_model(TaskConfig(num_labels=5, seed=1, lora_top_layers=3))
    assert layers(top) == {3, 4, 5}
    assert layers(build_model(TaskConfig(num_labels=5, kind="tiny", max_len=32, lora_top_layers=3))) == {0}  # all it has
    with pytest.raises(BadInput):
        TaskConfig(num_labels=5, lora_top_layers=-1)


def test_ffa_lora_trains_only_b_over_the_same_seeded_a_everywhere(shard: Dataset) -> None:
    """FFA-LoRA: A stays as built from the seed (so every node holds the same one) and does not travel;
    B learns under DP-SGD; and because A is shared, FedAvg of the Bs is FedAvg of the products B·A."""
    from collab.fl.app.server_app import aggregate

    task = TaskConfig(num_labels=5, kind="tiny", max_len=32, seed=1, lora_freeze_a=True)
    nodes = [build_model(task) for _ in range(2)]
    names = set(trainable_state(nodes[0]))
    assert names and not any("lora_A" in n for n in names) and any("lora_B" in n for n in names)
    assert len(names) < len(trainable_state(tiny()))  # less travels than with A trained

    def a_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n}

    a_before = a_of(nodes[0])
    assert a_before and all(torch.equal(a_before[n], a_of(nodes[1])[n]) for n in a_before)
    states = []
    for k, model in enumerate(nodes):
        report = train_dp(model, shard, DPConfig(noise_multiplier=0.8, batch_size=8, epochs=2, lr=1e-2), 32, seed=k)
        assert report.loss_after < report.loss_before
        assert all(torch.equal(a_before[n], p) for n, p in a_of(model).items())  # A untouched by training
        states.append(trainable_state(model))
    mean = aggregate([(states[0], 10), (states[1], 30)])
    name = next(n for n in names if "value.lora_B" in n)
    a = a_before[name.replace("lora_B", "lora_A")].double()
    products = sum(w * (s[name].double() @ a) for s, w in zip(states, (0.25, 0.75), strict=True))
    assert torch.allclose(mean[name].double() @ a, products, atol=1e-6)


def test_dp_sgd_moves_every_adapter_and_lowers_the_loss(shard: Dataset) -> None:
    model = tiny()
    before = trainable_state(model)
    report = train_dp(model, shard, DPConfig(noise_multiplier=0.8, batch_size=8, epochs=2, lr=1e-2), 32, seed=0)
    after = trainable_state(model)
    assert report.loss_after < report.loss_before
    assert report.steps == 2 * 5 and report.sample_rate == pytest.approx(0.2)
    assert all(not torch.equal(before[n], after[n]) for n in before)
    assert not any(type(m).__name__.startswith("GradSample") for m in model.modules())


def test_every_optimizer_step_is_reported_to_the_caller(shard: Dataset) -> None:
    """The bench times steps through ``on_step``: one call per optimizer step with its batch size."""
    calls: list[int] = []
    config = DPConfig(noise_multiplier=0.0, batch_size=8, epochs=2, lr=1e-2)
    report = train_dp(tiny(), shard, config, 32, seed=0, on_step=calls.append)
    assert len(calls) == report.steps == 2 * 5
    assert sum(calls) == 2 * len(shard)


def test_stalled_adapter_fails_loudly_instead_of_sending_a_broken_update(shard: Dataset) -> None:
    """The opacus#820 failure mode: loss moves, one LoRA tensor silently gets no update."""
    model = tiny()
    frozen = next(p for n, p in model.named_parameters() if n.endswith("value.lora_B.default.weight"))
    frozen.register_hook(lambda grad: torch.zeros_like(grad))
    with pytest.raises(TrainingStalled, match="no gradient reached 2 adapter tensor"):
        train_dp(model, shard, DPConfig(noise_multiplier=0.0, batch_size=8, epochs=1, lr=1e-2), 32, seed=0)


def test_adapter_moved_only_by_noise_fails_loudly(shard: Dataset) -> None:
    """Under DP the noise moves a tensor that learns nothing; the guard looks at the signal, not the move.

    One LoRA module disconnected from the loss (scaling 0): its A and B get no per-sample gradient.
    """
    model = tiny()
    lora = next(m for n, m in model.named_modules() if n.endswith("layer.0.attention.self.value"))
    lora.scaling["default"] = 0.0
    with pytest.raises(TrainingStalled, match="no gradient reached 2 adapter tensor"):
        train_dp(model, shard, DPConfig(noise_multiplier=0.8, batch_size=8, epochs=1, lr=1e-2), 32, seed=0)


def test_training_that_does_not_lower_the_loss_fails_loudly(shard: Dataset) -> None:
    model = tiny()  # huge noise and step size: adapters move but the loss does not fall
    with pytest.raises(TrainingStalled, match="loss did not fall"):
        train_dp(model, shard, DPConfig(noise_multiplier=50.0, max_grad_norm=1.0, batch_size=8, lr=5.0), 32, seed=0)


def test_ledger_composes_epsilon_over_rounds_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    ledger = PrivacyLedger(path)
    account = ledger.open("alice", 8.0, 1e-5)
    assert account.spent == 0.0
    first = ledger.record("alice", 1.0, 0.2, 10)
    second = ledger.record("alice", 1.0, 0.2, 10)
    assert 0 < first < second
    assert second == pytest.approx(epsilon_of([(1.0, 0.2, 20)], 1e-5))
    reloaded = PrivacyLedger(path)
    assert reloaded.accounts["alice"].rounds == 2
    assert reloaded.accounts["alice"].spent == pytest.approx(second)
    assert epsilon_of([(0.0, 0.2, 1)], 1e-5) == math.inf


def test_budget_stop_refuses_the_round_that_would_exceed_it(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.json")
    per_round = epsilon_of([(1.0, 0.2, 10)], 1e-5)
    two_rounds = epsilon_of([(1.0, 0.2, 20)], 1e-5)
    ledger.open("bob", (per_round + two_rounds) / 2, 1e-5)
    ledger.check("bob", 1.0, 0.2, 10)
    ledger.record("bob", 1.0, 0.2, 10)
    with pytest.raises(PrivacyBudgetExceeded, match=r"privacy budget exhausted for bob: 1 round\(s\) spent"):
        ledger.check("bob", 1.0, 0.2, 10)
    assert PrivacyLedger(tmp_path / "ledger.json").accounts["bob"].rounds == 1  # a refused round spends nothing
    with pytest.raises(PrivacyBudgetExceeded):  # non-private training never fits a finite budget
        ledger.check("bob", 0.0, 0.2, 1)


def test_ledger_rejects_budget_changes_and_corrupt_files(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.json")
    ledger.open("carol", 4.0, 1e-5)
    with pytest.raises(BadInput, match="cannot change"):
        ledger.open("carol", 40.0, 1e-5)
    with pytest.raises(BadInput):
        ledger.open("dave", -1.0, 1e-5)
    (tmp_path / "bad.json").write_text('{"accounts": {"x": {"delta": 1}}}')
    with pytest.raises(BadInput, match="corrupt"):
        PrivacyLedger(tmp_path / "bad.json")


def test_calibrated_noise_spends_the_whole_budget_over_the_remaining_rounds(tmp_path: Path) -> None:
    """``noise-multiplier = "auto"``: σ is the smallest that fits every planned round, so the last one lands on ε."""
    ledger = PrivacyLedger(tmp_path / "ledger.json")
    ledger.open("erin", 8.0, 1e-5)
    sigma = ledger.calibrate("erin", 0.2, 10, rounds=2)
    assert epsilon_of([(sigma, 0.2, 20)], 1e-5) <= 8.0 < epsilon_of([(sigma * 0.99, 0.2, 20)], 1e-5)
    ledger.record("erin", sigma, 0.2, 10)
    again = ledger.calibrate("erin", 0.2, 10, rounds=1)  # re-planned over the one round left: the same σ
    assert again == pytest.approx(sigma, rel=2e-3)
    ledger.check("erin", again, 0.2, 10)
    ledger.record("erin", again, 0.2, 10)
    assert 7.95 < ledger.accounts["erin"].spent <= 8.0
    assert ledger.calibrate("erin", 0.2, 10, rounds=1) > 5 * sigma  # what is left buys only heavy noise
    ledger.open("frank", 0.01, 1e-5)  # below what even σ = 64 spends on one round (0.03)
    with pytest.raises(PrivacyBudgetExceeded, match="frank: privacy budget exhausted"):
        ledger.calibrate("frank", 0.2, 10, rounds=1)


def test_a_larger_shard_needs_less_noise_for_the_same_budget() -> None:
    """Why each participant calibrates its own σ: one σ for all overspends the smallest shard or over-noises
    the rest."""
    from benchmarks.fl import participant_sigmas

    def shard(n: int) -> Dataset:
        return Dataset(("x",) * n, (0,) * n, ("a",))

    small, large = participant_sigmas(8.0, [shard(200), shard(800)], 64, rounds=2, epochs=2)
    assert small > large > 0
    assert participant_sigmas(math.inf, [shard(200)], 64, 2, 2) == [0.0]  # no budget, no noise
    assert calibrate_sigma(math.inf, 1e-5, [], 0.2, 10) == 0.0
    with pytest.raises(BadInput):
        calibrate_sigma(8.0, 1e-5, [], 0.0, 10)


def test_a_local_round_calibrates_its_noise_and_reports_nothing_outside_dp(tmp_path: Path, shard: Dataset) -> None:
    """The ClientApp's local round (in process, tiny model): with ``noise-multiplier = "auto"`` it trains at the
    σ that spreads its budget over the job's rounds, and its reply's metrics are the sample count, ε and steps
    only (its local losses, exact statistics of the private data, stay in its log). With ``lora-freeze-a`` its
    update carries B and the head only."""
    import json

    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict

    from collab.fl.app import client_app
    from collab.fl.runconfig import task_config

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": shard.classes[y]}) + "\n"
                            for t, y in zip(shard.texts, shard.labels, strict=True)))
    run_config: dict[str, Any] = {
        "model": "tiny", "max-len": 32, "lora-r": 8, "seed": 1, "classes": ",".join(shard.classes),
        "num-rounds": 3, "epochs": 1, "batch-size": 8, "lr": 0.01, "max-grad-norm": 1.0,
        "noise-multiplier": "auto", "epsilon": 8.0, "delta": 1e-5, "lora-freeze-a": True}
    node_config: dict[str, Any] = {"participant-id": "p0", "ledger-path": str(tmp_path / "ledger.json"),
                                   "data-path": str(data)}
    context = Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config=run_config)
    start = trainable_state(build_model(task_config(run_config)))
    arrived = Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=1, reply_to_message_id="", group_id="1",
                       created_at=0.0, ttl=600.0, message_type="train")  # as the SuperNode delivers it
    msg = Message(RecordDict({"config": ConfigRecord({"server-round": 1}), "arrays": ArrayRecord(start)}),
                  metadata=arrived)
    state, metrics = client_app._local_round(msg, context)
    assert set(metrics) == {"num-examples", "epsilon", "steps"} and metrics["num-examples"] == len(shard)
    assert set(state) == set(start) and not any("lora_A" in n for n in state)  # FFA-LoRA from the run config
    with pytest.raises(BadInput, match="lora-freeze-a must be true or false"):
        task_config({**run_config, "lora-freeze-a": "false"})
    ((sigma, rate, steps),) = PrivacyLedger(tmp_path / "ledger.json").accounts["p0"].history
    assert (rate, steps) == (1 / 5, 5) and sigma == pytest.approx(calibrate_sigma(8.0, 1e-5, [], rate, 3 * steps))
    assert metrics["epsilon"] == pytest.approx(epsilon_of([(sigma, rate, steps)], 1e-5))
    assert metrics["epsilon"] < 8.0  # a third of the job's rounds
    for bad in ("atuo", -1.0, "nan"):  # a typo in the run config: a clear refusal, not a traceback
        typo = Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(),
                       run_config={**run_config, "noise-multiplier": bad})
        with pytest.raises(BadInput, match="noise-multiplier must be"):
            client_app._local_round(msg, typo)
