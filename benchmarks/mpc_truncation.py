"""Where a 2PC encoder can lose a truncation: expected and counted failures per encoder call site.

CrypTen truncates a two-party product locally (each party divides its own
share by 2^16). That is exact unless the two 64-bit shares wrap around the
ring when added, which for a uniformly random share happens with probability
|v| / 2^64, v being the encoded value before truncation (for a product of two
16-bit fixed-point numbers: |real value| * 2^32). A wrap makes the result off
by 2^64 / 2^16 = 2^48, i.e. 2^32 in real units: the "~2^32 error" event.

This harness runs the real two-party encoder (CrypTen dealer path, 2 real
processes) with a debug hook on CrypTen's 2-party truncation that gathers
both shares, so for every truncation it can sum the exact failure
probability |v| / 2^64 (the expected number of failures, without needing
millions of runs) and count the wraps that actually happened, keyed by the
encoder line that asked for the product. Measurement only: the hook opens
every truncated value, so it is never part of a real job.

    .venv/bin/python -m benchmarks.mpc_truncation [--seq 128] [--preset cheap]
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

import collab.mpc.compat  # noqa: F401  (must precede crypten)

RESULTS = Path(__file__).parent / "results"


def texts(count: int) -> list[str]:
    """BBC News articles (first ~128 tokens each): the realistic seq-128 input."""
    from collab.fl.data import load_bbc_news

    data = load_bbc_news()
    return [data.texts[i * 97 % len(data.texts)] for i in range(count)]


def _site() -> str:
    """The innermost collab/mpc line that asked for this truncation."""
    for frame in inspect.stack()[2:]:
        if "/collab/mpc/" in frame.filename and frame.function not in ("div_", "_hook"):
            return f"{Path(frame.filename).stem}.{frame.function}:{frame.lineno}"
    return "other"


def _install_hook(stats: dict[str, list[float]]) -> Any:
    """Wrap ArithmeticSharedTensor.div_ so each 2-party truncation records its odds and real wraps."""
    import crypten.communicator as comm
    from crypten.mpc.primitives import arithmetic

    original = arithmetic.ArithmeticSharedTensor.div_

    def div_(self: Any, y: Any) -> Any:
        if isinstance(y, int) and y > 1 and comm.get().get_world_size() == 2:
            shares = comm.get().all_gather(self.share)
            s0, s1 = shares[0].long(), shares[1].long()
            v = s0 + s1  # wraps mod 2^64 like the ring
            wrapped = ((s0 < 0) & (s1 < 0) & (v >= 0)) | ((s0 >= 0) & (s1 >= 0) & (v < 0))
            odds = (v.double().abs() / 2.0**64).sum().item()
            row = stats[_site()]
            row[0] += v.numel()
            row[1] += odds
            row[2] += int(wrapped.sum())
            row[3] = max(row[3], v.abs().max().item() / 2.0**32)
        return original(self, y)

    arithmetic.ArithmeticSharedTensor.div_ = div_
    return original


def measure(sentences: list[str], seq_len: int, approx_kw: dict[str, Any], layers: int) -> dict[str, Any]:
    """Run the encoder on two real CrypTen processes; per site: elements, expected failures, wraps, max |v|."""
    from crypten.mpc import run_multiprocess

    @run_multiprocess(world_size=2)
    def body() -> Any:
        import crypten.communicator as comm

        from collab.mpc import encoder as enc
        from collab.mpc.model import load_spec, load_weights, tokenize
        from collab.mpc.parties import _share

        rank = comm.get().get_rank()
        spec = load_spec()
        approx = enc.Approximations(**approx_kw)
        own_w = enc.prepare_weights(load_weights(), spec, seq_len) if rank == 0 else None
        own_in = enc.prepare_inputs(tokenize(sentences, seq_len), spec, approx) if rank == 1 else None
        w = enc.assemble_weights(_share(own_w, enc.weight_shapes(spec, seq_len), 0), spec)
        w.layers = w.layers[:layers]
        inputs = enc.SharedInputs(**_share(own_in, enc.input_shapes(len(sentences), seq_len, spec), 1))
        stats: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0, 0.0])
        _install_hook(stats)
        enc.encode(inputs, w, spec, approx).get_plain_text()
        if rank == 0:
            torch.save(dict(stats), "/tmp/collab-trunc-sites.pt")
        return None

    body()
    stats = torch.load("/tmp/collab-trunc-sites.pt")
    n = len(sentences)
    sites = {k: {"elements": int(v[0]), "expected_failures_per_sentence": v[1] / n, "wraps": int(v[2]),
                 "max_abs_value": v[3]} for k, v in stats.items()}
    return dict(sorted(sites.items(), key=lambda kv: -kv[1]["expected_failures_per_sentence"]))


def main(argv: list[str] | None = None) -> int:
    from collab.mpc.encoder import preset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--sentences", type=int, default=2)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--preset", default="cheap")
    p.add_argument("--out", default=str(RESULTS / "mpc_truncation.json"))
    a = p.parse_args(argv)
    sites = measure(texts(a.sentences), a.seq, preset(a.preset), a.layers)
    total = sum(s["expected_failures_per_sentence"] for s in sites.values())
    for k, s in list(sites.items())[:15]:
        print(f"{k:45s} {s['expected_failures_per_sentence']:.2e}/sentence  elems {s['elements']:>10d}  "
              f"wraps {s['wraps']}  max|v| {s['max_abs_value']:.1f}")
    print(f"total expected failures per sentence: {total:.3e}")
    Path(a.out).write_text(json.dumps({"seq_len": a.seq, "preset": a.preset, "sentences": a.sentences,
                                       "expected_failures_per_sentence": total, "sites": sites}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
