"""RegMean statistics summed over TCP: participants as separate `collab merge stats-join` processes.

The merger's SecAgg server (`StatsServer`, or `collab merge stats-collect`)
learns only the total, which equals the plain ring sum bit for bit and merges
to the same model as the participants' files would; a participant that
leaves after the key exchange is dropped and the survivors' sum is recovered.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from collab.errors import BadInput
from collab.identity import Identity
from collab.merge import Contribution, PlainSum, RingSum, merge_contributions, regmean_contribution
from collab.merge.netstats import StatsRound, StatsServer, flatten, participate, plan_round

COLLAB = Path(sys.executable).parent / "collab"


def _stats(seed: int) -> Contribution:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    return regmean_contribution(model, [{"input": torch.randn(12, 5, dtype=torch.float64)}], alpha=0.9, weight=1.0 + seed)


@pytest.fixture
def party(tmp_path: Path) -> tuple[list[Path], list[Identity], list[Contribution], list[Path]]:
    homes, ids, stats, files = [], [], [], []
    for i in range(3):
        home = tmp_path / f"p{i}"
        ids.append(Identity.create(home, "pw", scrypt_n=2**12))
        homes.append(home)
        stats.append(_stats(i))
        files.append(stats[-1].save(tmp_path / f"p{i}.safetensors"))
    return homes, ids, stats, files


def _join(home: Path, round_file: Path, stats: Path, port: int) -> subprocess.Popen[str]:
    command = [str(COLLAB)] if COLLAB.exists() else [sys.executable, "-m", "collab"]
    env = {**os.environ, "COLLAB_PASSPHRASE": "pw"}
    return subprocess.Popen([*command, "--home", str(home), "merge", "stats-join", str(round_file), str(stats),
                             "--connect", f"127.0.0.1:{port}", "--timeout", "60"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_networked_sum_equals_the_ring_sum_and_merges_like_the_files(party: tuple, tmp_path: Path) -> None:
    homes, ids, stats, files = party
    rnd = plan_round(stats[0], [i.address for i in ids])
    round_file = rnd.save(tmp_path / "round.json")
    assert StatsRound.load(round_file).to_json() == rnd.to_json()
    with StatsServer(StatsRound.load(round_file), timeout=60) as server:
        procs = [_join(h, round_file, f, server.address[1]) for h, f in zip(homes, files)]
        try:
            result = server.run()
        finally:
            outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-500:] for o in outs]
        total = server.total()
    ring = RingSum(rnd.config.frac_bits)
    expected = np.zeros(rnd.config.length, dtype=np.int64)
    for c in stats:
        expected = (expected.astype(np.uint64) + flatten(c, rnd).astype(np.uint64)).astype(np.int64)
    assert np.array_equal(np.asarray(result.words, dtype=np.int64), expected)  # exactly the ring sum
    assert list(result.survivors) == [1, 2, 3]
    template = {k: v for k, v in nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double().state_dict().items()}
    from_sum = merge_contributions([total], template)
    from_files = merge_contributions(stats, template, ring)
    for k in template:
        torch.testing.assert_close(from_sum[k], from_files[k], rtol=0, atol=1e-9)
    plain = merge_contributions(stats, template, PlainSum())
    for k in template:
        torch.testing.assert_close(from_sum[k], plain[k], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_a_participant_leaving_after_the_key_exchange_is_dropped_and_the_rest_recovered(party: tuple, tmp_path: Path) -> None:
    homes, ids, stats, files = party
    rnd = plan_round(stats[0], [i.address for i in ids], threshold=2)
    round_file = rnd.save(tmp_path / "round.json")
    with StatsServer(rnd, timeout=30) as server:
        procs = [_join(h, round_file, f, server.address[1]) for h, f in zip(homes[:2], files[:2])]
        leaver = threading.Thread(target=participate, args=(rnd, ids[2].account, stats[2], server.address),
                                  kwargs={"stop_before": "masked"})
        leaver.start()
        try:
            result = server.run()
        finally:
            leaver.join(60)
            outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [o[1][-500:] for o in outs]
    assert list(result.survivors) == [1, 2] and 3 in server.dropped
    survivors = merge_contributions([server.total()], {k: v for k, v in nn.Sequential(
        nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double().state_dict().items()})
    parts = merge_contributions(stats[:2], {k: v for k, v in survivors.items()}, RingSum(rnd.config.frac_bits))
    for k in survivors:
        torch.testing.assert_close(survivors[k], parts[k], rtol=0, atol=1e-9)


def test_round_and_layout_errors_are_bad_input(party: tuple, tmp_path: Path) -> None:
    _, ids, stats, _ = party
    with pytest.raises(BadInput, match="at least two"):
        plan_round(stats[0], [ids[0].address])
    rnd = plan_round(stats[0], [i.address for i in ids])
    other = Contribution(stats[0].method, {k: v for k, v in list(stats[0].tensors.items())[1:]}, stats[0].meta)
    with pytest.raises(BadInput, match="other tensors"):
        flatten(other, rnd)
    with pytest.raises(BadInput, match="alpha"):
        flatten(Contribution(stats[0].method, stats[0].tensors, stats[0].meta | {"alpha": 0.5}), rnd)
    stranger = Identity.create(tmp_path / "stranger", "pw", scrypt_n=2**12)
    with pytest.raises(BadInput, match="not a member"):
        participate(rnd, stranger.account, stats[0], ("127.0.0.1", 9))
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    from collab.errors import Unavailable

    with pytest.raises(Unavailable):
        participate(rnd, ids[0].account, stats[0], ("127.0.0.1", port), timeout=2)
