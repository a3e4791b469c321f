"""``collab bench merge``: merge quality on BBC News, time vs ``mergekit-yaml``, claimed-path cost, memory.

Setup (small, fast config, **clearly marked in the JSON** as ``config``):
participants start from the same base, a ``BertForSequenceClassification``
over the bundled all-MiniLM-L6-v2 encoder, and fine-tune only the pooler and
the classifier (the encoder stays frozen) on their shard of the BBC News
training split (Dirichlet α = 0.5 over the 5 classes; full mode also runs the
class-disjoint stretch case). Because the encoder is frozen and identical in
every model, its [CLS] states are computed once and every model (individual,
merged) is evaluated on them; each merged model's encoder is checked to equal
the base's (the largest difference is reported).

Reported:

* accuracy on the held-out union task of the base, each participant, the
  output ensemble (mean of the participants' class probabilities) and every
  merge method (mergekit's linear, task arithmetic, TIES, DARE-TIES,
  DARE-linear run through ``collab.merge``; RegMean and Fisher from
  participant statistics); target: the best merge recovers ≥ 90% of the
  ensemble's gain over the base;
* wall time of ``collab merge run`` vs ``mergekit-yaml`` on the same config
  (both as fresh processes, median of repeats; target overhead ≤ 10%), and
  the in-process times;
* the claimed path (VM program + commitments, ``collab.merge.programs``) vs
  the unclaimed merge of the same config (target ≤ 3x);
* peak tensor memory of a merge above the post-import baseline (a fresh
  process; peak RSS reset after imports) vs one model's size (target ≤ 1.5x).

``COLLAB_BENCH_QUICK=1`` (CI) shrinks everything: fewer articles, shorter
sequences, one timing repeat, the claimed path on a tiny BERT classifier.
"""

from __future__ import annotations

import json
import os
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.console import Group, RenderableType
from torch import nn

from benchmarks import report

SUITE = "merge"
Log = Callable[[str], None]
MERGEKIT_METHODS = ("linear", "task_arithmetic", "ties", "dare_ties", "dare_linear")
CLAIMED_METHODS = ("linear", "ties")
TARGETS = {"recovery": 0.90, "cli_overhead": 0.10, "claimed_ratio": 3.0, "memory_ratio": 1.5}


@dataclass(frozen=True)
class Sizes:
    """The marked small config of a run."""

    participants: int
    train: int | None  # articles in the training split used (None: all)
    test: int | None
    max_len: int
    epochs: int
    repeats: int
    claimed_on_minilm: bool
    disjoint: bool


# 3 timing repeats: with 2 the median is a mean, and repeated runs of one CLI on one config varied by ±10%.
FULL = Sizes(participants=4, train=None, test=None, max_len=64, epochs=40, repeats=3, claimed_on_minilm=True, disjoint=True)
QUICK = Sizes(participants=3, train=150, test=90, max_len=24, epochs=25, repeats=1, claimed_on_minilm=False, disjoint=False)
# COLLAB_BENCH_MEDIUM=1: quick-sized quality and timing, but both splits and the claimed path on real MiniLM
MEDIUM = Sizes(participants=3, train=300, test=120, max_len=32, epochs=25, repeats=1, claimed_on_minilm=True, disjoint=True)
QUICK_TIMED = ("linear",)  # CI: one method through both CLIs


class Head(nn.Module):
    """BERT's pooler + classifier over a [CLS] state, named as in ``BertForSequenceClassification``."""

    def __init__(self, hidden: int, labels: int) -> None:
        super().__init__()
        self.bert = nn.Module()
        self.bert.pooler = nn.Module()
        self.bert.pooler.dense = nn.Linear(hidden, hidden)
        self.classifier = nn.Linear(hidden, labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.tanh(self.bert.pooler.dense(features)))


HEAD_KEYS = ("bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias")


def run(results_dir: Path | str | None = None, log: Log | None = None, *, quick: bool | None = None) -> dict[str, Any]:
    """Run the suite; write ``merge.json`` and ``merge.png``; return the results."""
    say = log or (lambda _m: None)
    quick = os.environ.get("COLLAB_BENCH_QUICK", "") not in ("", "0") if quick is None else quick
    medium = not quick and os.environ.get("COLLAB_BENCH_MEDIUM", "") not in ("", "0")
    sizes = QUICK if quick else MEDIUM if medium else FULL
    out_dir = report.results_dir(results_dir)
    started = time.monotonic()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="collab-bench-merge-") as tmp:
        work = Path(tmp)
        bench = _Bench(work, sizes, say)
        quality = {"dirichlet_0.5": bench.quality("dirichlet")}
        if sizes.disjoint:
            quality["class_disjoint"] = bench.quality("disjoint")
        timing = bench.timing()
        claimed = bench.claimed()
        memory = bench.memory()
    results: dict[str, Any] = {
        "suite": SUITE,
        "quick": quick,
        "mode": "quick" if quick else "medium" if medium else "full",
        "created_at": report.utc_now(),
        "machine": report.machine_facts(),
        "versions": report.package_versions(["torch", "transformers", "mergekit", "numpy"]),
        "config": {**asdict(sizes), "model": "all-MiniLM-L6-v2 + BertForSequenceClassification head",
                   "trained": "pooler + classifier only (encoder frozen; small/fast config)",
                   "alpha": 0.5, "optimizer": "Adam lr 2e-3, batch 32"},
        "quality": quality,
        "timing": timing,
        "claimed": claimed,
        "memory": memory,
    }
    results["targets"] = _targets(results)
    results["seconds"] = round(time.monotonic() - started, 2)
    json_path, png_path = out_dir / f"{SUITE}.json", out_dir / f"{SUITE}.png"
    results["files"] = {"json": str(json_path), "png": str(png_path)}
    plot(results, png_path)
    report.write_json(json_path, results)
    say(f"wrote {json_path} and {png_path}")
    return results


class _Bench:
    """Base model, cached [CLS] features, participants and merges, in one working directory."""

    def __init__(self, work: Path, sizes: Sizes, say: Log) -> None:
        from transformers import AutoTokenizer, BertForSequenceClassification

        from collab.fl.data import load_bbc_news, take, train_test_split
        from collab.hflog import quiet_transformers
        from collab.mpc.model import model_dir

        self.work, self.sizes, self.say = work, sizes, say
        data = load_bbc_news()
        train, test = train_test_split(data, 0.2, seed=0)
        self.train = take(train, sizes.train, seed=1) if sizes.train else train
        self.test = take(test, sizes.test, seed=2) if sizes.test else test
        self.classes = data.classes
        say(f"base: MiniLM + {len(self.classes)}-class head; {len(self.train)} train / {len(self.test)} test articles")
        torch.manual_seed(0)
        with quiet_transformers():  # the new head's "MISSING" load report and shard progress bars are expected
            model = BertForSequenceClassification.from_pretrained(model_dir(), num_labels=len(self.classes))
            model.eval()
            self.base_dir = work / "base"
            model.save_pretrained(self.base_dir)
        self.base_head = _head_state(model.state_dict())
        tok = AutoTokenizer.from_pretrained(model_dir())
        t0 = time.perf_counter()
        self.train_x = _cls_features(model, tok, self.train.texts, sizes.max_len)
        self.test_x = _cls_features(model, tok, self.test.texts, sizes.max_len)
        say(f"encoded {len(self.train) + len(self.test)} articles in {time.perf_counter() - t0:.1f}s")
        self.train_y = torch.tensor(self.train.labels)
        self.test_y = torch.tensor(self.test.labels)
        self.model_bytes = (self.base_dir / "model.safetensors").stat().st_size
        self.dirs: list[Path] = []
        self.shares: list[int] = []

    # ----------------------------------------------------------------- quality

    def quality(self, split: str) -> dict[str, Any]:
        from collab.fl.data import dirichlet_split

        n = self.sizes.participants
        if split == "dirichlet":
            shards = dirichlet_split(self.train, n, 0.5, seed=3)
            index = [self._indices(s.texts) for s in shards]
        else:  # class-disjoint: classes dealt round-robin
            index = [[i for i, y in enumerate(self.train.labels) if y % n == k] for k in range(n)]
        heads, dirs = [], []
        for k, idx in enumerate(index):
            head = self._train_head(idx, seed=k)
            heads.append(head)
            dirs.append(self._write_participant(f"{split}-p{k}", head))
        sizes = [len(i) for i in index]
        self.say(f"{split}: participants with {sizes} articles trained")
        base_acc = self._accuracy(self.base_head)
        individual = [self._accuracy(h) for h in heads]
        ensemble = self._ensemble_accuracy(heads)
        merges: dict[str, Any] = {}
        for method in MERGEKIT_METHODS:
            cfg = _config(method, dirs, self.base_dir, [s / sum(sizes) for s in sizes])
            out = self.work / f"{split}-{method}"
            merged, seconds = self._merge(cfg, out)
            merges[method] = {"accuracy": self._accuracy(_head_state(merged)), "seconds": round(seconds, 3),
                              "encoder_max_abs_diff": _encoder_diff(merged, self.base_dir)}
        for method in ("regmean", "fisher"):
            t0 = time.perf_counter()
            head = self._data_merge(method, heads, index)
            merges[method] = {"accuracy": self._accuracy(head), "seconds": round(time.perf_counter() - t0, 3),
                              "encoder_max_abs_diff": 0.0}
        if split == "dirichlet":
            self.dirs, self.shares = dirs, sizes
        best = max(merges, key=lambda m: merges[m]["accuracy"])
        gain = ensemble - base_acc
        recovery = (merges[best]["accuracy"] - base_acc) / gain if gain > 0 else None
        self.say(f"{split}: base {base_acc:.3f}, ensemble {ensemble:.3f}, best merge {best} {merges[best]['accuracy']:.3f}")
        return {"participant_examples": sizes,
                "participant_classes": [sorted({self.classes[int(self.train_y[i])] for i in idx}) for idx in index],
                "base": base_acc, "individual": individual, "ensemble": ensemble, "merges": merges,
                "best_merge": best, "recovery_of_ensemble_gain": None if recovery is None else round(recovery, 4)}

    def _indices(self, texts: Sequence[str]) -> list[int]:
        where: dict[str, list[int]] = {}
        for i, t in enumerate(self.train.texts):
            where.setdefault(t, []).append(i)
        return [where[t].pop(0) for t in texts]

    def _train_head(self, idx: list[int], seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(100 + seed)
        head = Head(self.train_x.shape[1], len(self.classes))
        head.load_state_dict(self.base_head)
        opt = torch.optim.Adam(head.parameters(), lr=2e-3)
        x, y = self.train_x[idx], self.train_y[idx]
        for _ in range(self.sizes.epochs):
            order = torch.randperm(len(idx))
            for start in range(0, len(idx), 32):
                b = order[start:start + 32]
                opt.zero_grad()
                nn.functional.cross_entropy(head(x[b]), y[b]).backward()
                opt.step()
        return {k: v.detach().clone() for k, v in head.state_dict().items()}

    def _write_participant(self, name: str, head: dict[str, torch.Tensor]) -> Path:
        from safetensors.torch import load_file, save_file

        state = load_file(str(self.base_dir / "model.safetensors"))
        state.update({k: v.contiguous() for k, v in head.items()})
        out = self.work / name
        out.mkdir()
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        (out / "config.json").write_text((self.base_dir / "config.json").read_text())
        return out

    def _logits(self, head: dict[str, torch.Tensor]) -> torch.Tensor:
        module = Head(self.test_x.shape[1], len(self.classes))
        module.load_state_dict({k: v.float() for k, v in head.items()})
        with torch.no_grad():
            return module(self.test_x)

    def _accuracy(self, head: dict[str, torch.Tensor]) -> float:
        return round(float((self._logits(head).argmax(1) == self.test_y).float().mean()), 4)

    def _ensemble_accuracy(self, heads: list[dict[str, torch.Tensor]]) -> float:
        probs = torch.stack([self._logits(h).softmax(1) for h in heads]).mean(0)
        return round(float((probs.argmax(1) == self.test_y).float().mean()), 4)

    def _merge(self, cfg: dict[str, Any], out: Path) -> tuple[dict[str, torch.Tensor], float]:
        from safetensors.torch import load_file

        from collab.merge import merge, parse_config

        t0 = time.perf_counter()
        merge(parse_config(cfg), out)
        return load_file(str(out / "model.safetensors")), time.perf_counter() - t0

    def _data_merge(self, method: str, heads: list[dict[str, torch.Tensor]], index: list[list[int]]) -> dict[str, torch.Tensor]:
        from collab.merge import PlainSum, fisher_contribution, merge_contributions, regmean_contribution

        contributions = []
        for head_state, idx in zip(heads, index):
            module = Head(self.train_x.shape[1], len(self.classes))
            module.load_state_dict(head_state)
            batches = [{"features": self.train_x[idx[s:s + 64]], "labels": self.train_y[idx[s:s + 64]]}
                       for s in range(0, len(idx), 64)]
            weight = len(idx) / len(self.train_y)
            if method == "regmean":
                contributions.append(regmean_contribution(module, [{"features": b["features"]} for b in batches],
                                                          alpha=0.9, weight=weight))
            else:
                contributions.append(fisher_contribution(
                    module, batches, lambda m, b: nn.functional.cross_entropy(m(b["features"]), b["labels"], reduction="none"),
                    weight=weight))
        merged = merge_contributions(contributions, self.base_head, PlainSum())
        return {k: merged[k] for k in HEAD_KEYS}

    # ----------------------------------------------------------------- time

    def timing(self) -> dict[str, Any]:
        """``collab merge run`` vs ``mergekit-yaml`` as fresh processes on the same config."""
        rows: dict[str, Any] = {}
        weights = [s / sum(self.shares) for s in self.shares]
        for method in (MERGEKIT_METHODS if self.sizes.repeats > 1 else QUICK_TIMED):
            cfg_path = self.work / f"time-{method}.yml"
            cfg_path.write_text(yaml.safe_dump(_config(method, self.dirs, self.base_dir, weights)))
            ours, theirs = [], []
            for r in range(self.sizes.repeats):  # interleaved, so load changes hit both alike; who goes first alternates
                mergekit_cmd = [_script("mergekit-yaml"), str(cfg_path), str(self.work / f"mk-{method}-{r}"),
                                "--no-copy-tokenizer", "--no-write-model-card", "--quiet", "--random-seed", "0"]
                collab_cmd = [_script("collab"), "merge", "run", str(cfg_path), "--out", str(self.work / f"co-{method}-{r}")]
                for runs, cmd in ((theirs, mergekit_cmd), (ours, collab_cmd))[:: 1 if r % 2 == 0 else -1]:
                    runs.append(_wall(cmd))
            med_ours, med_theirs = statistics.median(ours), statistics.median(theirs)
            rows[method] = {"collab_cli_s": round(med_ours, 3), "mergekit_cli_s": round(med_theirs, 3),
                            "overhead": round(med_ours / med_theirs - 1, 4), "runs": self.sizes.repeats}
            self.say(f"time {method}: collab {med_ours:.2f}s vs mergekit-yaml {med_theirs:.2f}s")
        return {"method": "wall time of fresh processes (imports included), median of repeats", "methods": rows,
                "max_overhead": max(r["overhead"] for r in rows.values())}

    # ----------------------------------------------------------------- claimed path

    def claimed(self) -> dict[str, Any]:
        """Claimed (VM program, every step committed) vs unclaimed (mergekit) on the same config."""
        from collab.fraudproof.known_roots import KnownRoots
        from collab.merge import merge, parse_config
        from collab.merge.claimed import execute, verify_artifact
        from collab.merge.programs import build_plan

        if self.sizes.claimed_on_minilm:
            dirs, base, label = self.dirs[:3], self.base_dir, "MiniLM classifier (22.7 M parameters)"
        else:
            dirs, base, label = _tiny_models(self.work / "tiny"), self.work / "tiny" / "base", "tiny BERT classifier"
        rows: dict[str, Any] = {}
        roots = KnownRoots(self.work / "claimer-home")
        for method in CLAIMED_METHODS:
            cfg = _config(method, dirs, base, [1.0] * len(dirs))
            plains, vms, hashed, traces = [], [], [], []
            # Run 0 is the claimed path's cold run (its imports, the first touch of ~1.5 GB of words, the
            # inputs hashed and their roots kept): the quality phase already warmed mergekit's, so it is
            # reported (cold_s) but not in the median. Later runs are a claimer merging models it has
            # claimed over before (their roots known: collab.fraudproof.known_roots), and, for comparison,
            # one that hashes every input again. Each run's trace is dropped before the next: a CLI merge
            # holds one at a time. Twice the CLI's repeats, the two claimed runs in alternating order: a
            # run's time swings by ~0.3 s with the kernel's handling of ~1 GB of fresh pages (its first
            # touch, transparent huge pages), more than the unclaimed linear merge takes.
            plan: Any = None
            out: Any = None
            inputs_known = 0
            for r in range(2 * self.sizes.repeats + 1):  # interleaved; medians
                del plan, out
                t0 = time.perf_counter()
                merge(parse_config(cfg), self.work / f"unclaimed-{method}-{r}")
                plains.append(time.perf_counter() - t0)
                pair = [(roots, vms), (None, hashed)]
                for known, times in (pair if r % 2 == 0 else pair[::-1]):
                    plan = out = None
                    t0 = time.perf_counter()
                    plan = build_plan(parse_config(cfg).resolve_assets(None))
                    out = execute(plan, self.work / f"claimed-{method}-{r}-{'known' if known else 'hashed'}", base, known)
                    times.append(time.perf_counter() - t0)
                    if known is not None:
                        traces.append(out.seconds["trace"])
                        inputs_known = out.seconds["inputs_known"]
            cold, plains, vms, hashed, traces = vms[0], plains[1:], vms[1:], hashed[1:], traces[1:]
            plain, vm, vm_hashed = statistics.median(plains), statistics.median(vms), statistics.median(hashed)
            # Seconds to 0.1 ms: a quick run's merges take ~40 ms, where 1 ms of rounding moves the ratio 2%.
            rows[method] = {"unclaimed_s": round(plain, 4), "claimed_s": round(vm, 4), "ratio": round(vm / plain, 2),
                            "claimed_hashed_s": round(vm_hashed, 4), "ratio_hashed": round(vm_hashed / plain, 2),
                            "runs": len(vms), "claimed_runs_s": [round(v, 3) for v in vms],
                            "claimed_hashed_runs_s": [round(v, 3) for v in hashed], "cold_s": round(cold, 3),
                            "inputs_known": inputs_known, "inputs": len(plan.job.inputs),
                            "steps": len(plan.job.program.steps), "trace_s": round(statistics.median(traces), 3),
                            "artifact_recommits": verify_artifact(out.out_dir, out.trace)}
            self.say(f"claimed {method}: {vm:.1f}s (every input hashed: {vm_hashed:.1f}s) vs unclaimed {plain:.1f}s")
            del plan, out
        return {"model": label, "methods": rows, "max_ratio": max(r["ratio"] for r in rows.values())}

    # ----------------------------------------------------------------- memory

    def memory(self) -> dict[str, Any]:
        """Peak anonymous memory of merges in a fresh process above its post-import level, vs one model.

        Sampled from ``RssAnon`` (heap: tensors; file pages that safetensors
        maps are not tensor memory) every 2 ms; the same measurement of
        mergekit's bare ``run_merge`` on the same config is the reference
        (collab merges its largest tensors in row blocks through mergekit's
        own method: collab/merge/blocked.py). TIES is the headline ratio; the
        quick mode (tiny models, nothing large enough to block) measures TIES only.
        """
        methods = ("ties",) if self.sizes is QUICK else ("ties", "task_arithmetic", "linear")
        for d in [self.base_dir, *self.dirs]:  # warm the page cache: the first probe would pay the disk reads alone
            for file in d.glob("*.safetensors"):
                with file.open("rb") as fh:
                    while fh.read(1 << 24):
                        pass
        per_method: dict[str, dict[str, Any]] = {}
        for method in methods:
            cfg_path = self.work / f"mem-{method}.yml"
            weights = [1.0] * len(self.dirs)
            cfg_path.write_text(yaml.safe_dump(_config(method, self.dirs, self.base_dir, weights)))
            rows = {}
            for engine in ("collab", "mergekit"):
                out = self.work / f"mem-{method}-{engine}"
                proc = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, engine, str(cfg_path), str(out)],
                                      capture_output=True, text=True, timeout=1800, check=False)
                if proc.returncode != 0:
                    raise RuntimeError(f"memory probe failed: {proc.stderr.strip()[-400:]}")
                m = json.loads(proc.stdout.strip().splitlines()[-1])
                rows[engine] = {"above_baseline_mib": round(m["above"] / 2**20, 1),
                                "ratio": round(m["above"] / self.model_bytes, 3),
                                "peak_rss_above_mib": round(m["rss_above"] / 2**20, 1), "seconds": m["seconds"]}
                shutil.rmtree(out, ignore_errors=True)
            per_method[method] = rows
            self.say(f"memory {method}: collab {rows['collab']['ratio']}x, mergekit {rows['mergekit']['ratio']}x one model")
        ties = per_method["ties"]
        return {"method": "peak RssAnon (sampled every 2 ms) minus its post-import value; headline: TIES",
                "inputs": len(self.dirs) + 1, "model_mib": round(self.model_bytes / 2**20, 1),
                "ratio": ties["collab"]["ratio"], "above_baseline_mib": ties["collab"]["above_baseline_mib"],
                "engines": ties, "methods": per_method}


_MEMORY_PROBE = """
import json, sys, threading, time
engine, cfg, out = sys.argv[1:4]
from collab.merge import load_config, merge
from collab.merge.mergekit_merge import _mergekit_config, _install_optional_alias_fix
from mergekit.merge import run_merge
from mergekit.options import MergeOptions
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0
spec = load_config(cfg)
_install_optional_alias_fix()
base_anon, base_rss = status('RssAnon:'), status('VmRSS:')
peak = [base_anon, base_rss]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], status('RssAnon:'))
        peak[1] = max(peak[1], status('VmRSS:'))
        time.sleep(0.002)
t = threading.Thread(target=sample, daemon=True)
t.start()
t0 = time.perf_counter()
if engine == 'collab':
    merge(spec, out)
else:
    run_merge(_mergekit_config(spec), out, MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True))
seconds = round(time.perf_counter() - t0, 2)
done.set()
t.join()
print(json.dumps({'above': peak[0] - base_anon, 'rss_above': peak[1] - base_rss, 'seconds': seconds}))
"""


# --------------------------------------------------------------------- helpers


def _head_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: state[k].detach().clone().float() for k in HEAD_KEYS}


def _cls_features(model: Any, tok: Any, texts: Sequence[str], max_len: int) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), 32):
            enc = tok(list(texts[start:start + 32]), truncation=True, max_length=max_len, padding=True, return_tensors="pt")
            out.append(model.bert(**enc).last_hidden_state[:, 0])
    return torch.cat(out)


def _encoder_diff(merged: dict[str, torch.Tensor], base_dir: Path) -> float:
    from safetensors.torch import load_file

    base = load_file(str(base_dir / "model.safetensors"))
    return float(max((merged[k].double() - v.double()).abs().max() for k, v in base.items() if k not in HEAD_KEYS))


def _config(method: str, dirs: Sequence[Path], base: Path, weights: Sequence[float]) -> dict[str, Any]:
    models = []
    for d, w in zip(dirs, weights):
        params: dict[str, Any] = {"weight": 1.0 if method in ("ties", "dare_ties") else float(w)}
        if method in ("ties", "dare_ties", "dare_linear"):
            params["density"] = 0.5
        models.append({"model": str(d), "parameters": params})
    cfg: dict[str, Any] = {"merge_method": method, "models": models, "dtype": "float32"}
    if method != "linear":
        cfg["base_model"] = str(base)
    return cfg


def _tiny_models(root: Path) -> list[Path]:
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=200,
                     max_position_embeddings=64, num_labels=5)
    torch.manual_seed(0)
    base = BertForSequenceClassification(cfg)
    base.save_pretrained(root / "base")
    dirs = []
    for i in range(3):
        model = BertForSequenceClassification(cfg)
        model.load_state_dict(base.state_dict())
        gen = torch.Generator().manual_seed(i + 1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=gen))
        model.save_pretrained(root / f"p{i}")
        dirs.append(root / f"p{i}")
    return dirs


def _script(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def _wall(cmd: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLLAB_HOME": os.environ.get("COLLAB_HOME", tempfile.gettempdir())}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    return seconds


def _targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    recovery = results["quality"]["dirichlet_0.5"]["recovery_of_ensemble_gain"]
    rows = {
        "best merge recovers ≥ 90% of the ensemble's gain (Dirichlet 0.5)": (TARGETS["recovery"], recovery,
                                                                            recovery is not None and recovery >= TARGETS["recovery"]),
        "unclaimed CLI overhead vs mergekit-yaml ≤ 10%": (TARGETS["cli_overhead"], results["timing"]["max_overhead"],
                                                         results["timing"]["max_overhead"] <= TARGETS["cli_overhead"]),
        "claimed path ≤ 3x the unclaimed merge": (TARGETS["claimed_ratio"], results["claimed"]["max_ratio"],
                                                 results["claimed"]["max_ratio"] <= TARGETS["claimed_ratio"]),
        "tensor memory above baseline ≤ 1.5x one model": (TARGETS["memory_ratio"], results["memory"]["ratio"],
                                                         results["memory"]["ratio"] <= TARGETS["memory_ratio"]),
    }
    return {k: {"target": t, "measured": m, "pass": bool(p)} for k, (t, m, p) in rows.items()}


# --------------------------------------------------------------------- output


def plot(results: dict[str, Any], path: Path) -> Path:
    """Accuracy per model/method, CLI time per method, and the claimed/memory ratios against their targets."""
    plt = report.pyplot()
    fig, (acc, times, ratios) = plt.subplots(1, 3, figsize=(17, 5.5))
    q = results["quality"]["dirichlet_0.5"]
    labels = ["base", *(f"p{i}" for i in range(len(q["individual"]))), "ensemble", *q["merges"]]
    values = [q["base"], *q["individual"], q["ensemble"], *(m["accuracy"] for m in q["merges"].values())]
    colors = ["#999999"] + ["#8da0cb"] * len(q["individual"]) + ["#e78ac3"] + ["#66c2a5"] * len(q["merges"])
    acc.bar(range(len(values)), values, color=colors)
    acc.set_xticks(range(len(values)), labels, rotation=60, fontsize=8)
    target = q["base"] + TARGETS["recovery"] * (q["ensemble"] - q["base"])
    acc.axhline(target, linestyle="--", color="#c44e52", linewidth=0.8, label="90% of the ensemble's gain")
    acc.set_ylabel("test accuracy (BBC News, 5 classes)")
    acc.set_title("Dirichlet α = 0.5 participants and merges")
    acc.legend(fontsize=7)
    t = results["timing"]["methods"]
    x = np.arange(len(t))
    times.bar(x - 0.2, [r["mergekit_cli_s"] for r in t.values()], 0.4, label="mergekit-yaml")
    times.bar(x + 0.2, [r["collab_cli_s"] for r in t.values()], 0.4, label="collab merge run")
    times.set_xticks(x, list(t), rotation=30, fontsize=8)
    times.set_ylabel("wall seconds (fresh process)")
    times.set_title("Merge time vs mergekit's CLI")
    times.legend(fontsize=7)
    claimed = results["claimed"]["methods"]
    names = [f"claimed {m}" for m in claimed] + [f"{m}, inputs hashed" for m in claimed] + ["memory / model"]
    vals = [r["ratio"] for r in claimed.values()] + [r["ratio_hashed"] for r in claimed.values()] + [results["memory"]["ratio"]]
    ratios.bar(range(len(vals)), vals, color=["#fc8d62"] * len(claimed) + ["#e5c494"] * len(claimed) + ["#a6d854"])
    ratios.axhline(TARGETS["claimed_ratio"], linestyle="--", color="#c44e52", linewidth=0.8, label="claimed target 3x")
    ratios.axhline(TARGETS["memory_ratio"], linestyle=":", color="#377eb8", linewidth=0.8, label="memory target 1.5x")
    ratios.set_xticks(range(len(vals)), names, rotation=30, fontsize=8)
    ratios.set_yscale("log")
    ratios.set_title(f"Claimed path ({results['claimed']['model']}) and memory")
    ratios.legend(fontsize=7)
    return report.save_figure(fig, path)


def render(results: dict[str, Any]) -> RenderableType:
    """The tables ``collab bench merge`` prints."""
    parts = []
    for split, q in results["quality"].items():
        rows = [("base", q["base"]), *((f"participant {i}", a) for i, a in enumerate(q["individual"])),
                ("ensemble", q["ensemble"]), *((m, r["accuracy"]) for m, r in q["merges"].items())]
        parts.append(report.table(f"Accuracy ({split}; best {q['best_merge']}, recovery {q['recovery_of_ensemble_gain']})",
                                  ["model", "accuracy"], rows))
    t = results["timing"]["methods"]
    parts.append(report.table("Time: collab merge run vs mergekit-yaml (fresh processes)",
                              ["method", "collab s", "mergekit s", "overhead"],
                              [(m, r["collab_cli_s"], r["mergekit_cli_s"], r["overhead"]) for m, r in t.items()]))
    c = results["claimed"]["methods"]
    parts.append(report.table(f"Claimed path ({results['claimed']['model']}; inputs' roots known from an earlier claim)",
                              ["method", "claimed s", "unclaimed s", "ratio", "every input hashed s", "ratio", "steps"],
                              [(m, r["claimed_s"], r["unclaimed_s"], r["ratio"], r["claimed_hashed_s"], r["ratio_hashed"],
                                r["steps"]) for m, r in c.items()]))
    parts.append(report.table("Targets", ["target", "limit", "measured", "pass"],
                              [(k, v["target"], v["measured"], v["pass"]) for k, v in results["targets"].items()]))
    m = results["memory"]
    parts.append(report.table(f"Memory above the post-import baseline / one model ({m['model_mib']} MiB, {m['inputs']} inputs)",
                              ["method", "collab", "mergekit run_merge", "collab s", "mergekit s"],
                              [(k, r["collab"]["ratio"], r["mergekit"]["ratio"], r["collab"].get("seconds"),
                                r["mergekit"].get("seconds")) for k, r in m.get("methods", {"ties": m["engines"]}).items()]))
    return Group(*parts)
