"""The served MPC job: cheap approximations, fixed weight masks (also on the 3-party TTP path), and the
owner's persistent party per loaded model (owner-held weights, a fresh session per query).

Real party processes on the tests' tiny BERT (1 layer, 16 wide), so each job
stays seconds long; the multi-process tests are marked slow.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_infer import TEXT, make_tiny_bert

from collab.errors import BadInput, UsageError
from collab.mpc.encoder import Approximations, preset
from collab.mpc.model import reference_embeddings, tokenize
from collab.mpc.service import CLIENT, HELPER, OWNER, InferRequest, launch_parties


def test_cheap_is_the_default_and_presets_are_checked() -> None:
    assert InferRequest(1, (TEXT,)).approx == "cheap"
    cheap = Approximations(**preset("cheap"))
    assert cheap.softmax == "shifted" and cheap.gelu == "poly" and cheap.packed_compare
    assert Approximations(**preset("exact")) == Approximations()
    with pytest.raises(UsageError, match="--approx is cheap or exact"):
        InferRequest(1, (TEXT,), approx="fast")  # type: ignore[arg-type]
    with pytest.raises(BadInput, match="unknown approximation preset"):
        preset("fast")


def _ttp_job(model: Path, fixed_masks: bool) -> dict[int, Any]:
    common = {"seq_len": 8, "batch": 1, "out_dim": 16, "provider": "TTP", "model_dir": str(model), "dp": False,
              "head_classes": 0, "approx": preset("cheap"), "fixed_masks": fixed_masks}
    return launch_parties({OWNER: dict(common), CLIENT: dict(common, texts=[TEXT]), HELPER: {"provider": "TTP"}},
                          timeout=300)


@pytest.mark.slow
def test_ttp_fixed_masks_match_per_query_triples_and_send_fewer_bytes(tmp_path: Path) -> None:
    model = make_tiny_bert(tmp_path / "tiny-bert")
    per_query, fixed = _ttp_job(model, False), _ttp_job(model, True)
    out_q, out_f = np.asarray(per_query[CLIENT]["output"]), np.asarray(fixed[CLIENT]["output"])
    np.testing.assert_allclose(out_f, out_q, atol=2e-3)
    clean = reference_embeddings(tokenize([TEXT], 8, model), model).double().numpy()
    assert float((out_f @ clean.T).item() / np.linalg.norm(out_f)) > 0.999
    # Online, the weights are no longer opened per query: only x - A of each matmul crosses the wire.
    assert fixed[CLIENT]["stats"]["comm_bytes"] < per_query[CLIENT]["stats"]["comm_bytes"]


# --------------------------------------------------------------------------- the persistent owner party


def _held_jobs(model: Path, text: str = TEXT) -> dict[int, dict[str, Any]]:
    common = {"seq_len": 8, "batch": 1, "out_dim": 16, "provider": "TFP", "model_dir": str(model), "dp": False,
              "head_classes": 0, "approx": preset("cheap"), "fixed_masks": False, "owner_held": True}
    return {OWNER: dict(common), CLIENT: dict(common, texts=[text])}


def _cosine(out: Any, model: Path, text: str = TEXT) -> float:
    clean = reference_embeddings(tokenize([text], 8, model), model).double().numpy()
    out = np.asarray(out)
    return float((out @ clean.T).item() / np.linalg.norm(out))


@pytest.mark.slow
def test_one_owner_party_serves_consecutive_queries_with_owner_held_weights(tmp_path: Path) -> None:
    from collab.mpc.persistent import OwnerParties

    model = make_tiny_bert(tmp_path / "tiny-bert")
    pool = OwnerParties(idle_timeout=600)
    try:
        first = pool.serve(model, *_held_jobs(model).values(), timeout=300)
        second = pool.serve(model, *_held_jobs(model, "hello world").values(), timeout=300)
        assert first[OWNER]["party"]["pid"] == second[OWNER]["party"]["pid"]  # the same process, model loaded once
        assert [first[OWNER]["party"]["query"], second[OWNER]["party"]["query"]] == [1, 2]
        assert _cosine(first[CLIENT]["output"], model) > 0.999
        assert _cosine(second[CLIENT]["output"], model, "hello world") > 0.999
        # Nothing about the weights is opened: the same query costs the client fewer bytes than with W - B per call.
        per_call = launch_parties({r: dict(j, fixed_masks=True, owner_held=False) for r, j in _held_jobs(model).items()},
                                  timeout=300)
        np.testing.assert_allclose(first[CLIENT]["output"], per_call[CLIENT]["output"], atol=2e-3)
        party = pool.party(model)
        assert party is not None and party.pid == first[OWNER]["party"]["pid"]
    finally:
        pool.close()
    assert pool.pids() == {} and party.proc.poll() is not None  # closed with its node


@pytest.mark.slow
def test_a_spare_client_party_serves_the_next_query_and_a_dead_one_is_replaced(tmp_path: Path) -> None:
    import os
    import signal

    from collab.mpc.persistent import OwnerParties
    from collab.mpc.spare import SpareParties

    model = make_tiny_bert(tmp_path / "tiny-bert")
    pool, spares = OwnerParties(idle_timeout=600), SpareParties(idle_timeout=600)
    try:
        first = pool.serve(model, *_held_jobs(model).values(), timeout=300, spares=spares)  # no spare yet: fresh
        spare = spares.spare_pid  # started once the first call ended
        assert spare is not None and spare != first[CLIENT]["pid"]
        assert spares.wait_ready(180)
        second = pool.serve(model, *_held_jobs(model, "hello world").values(), timeout=300, spares=spares)
        assert second[CLIENT]["pid"] == spare  # the spare ran this query, one process per query still
        assert _cosine(second[CLIENT]["output"], model, "hello world") > 0.999
        dead = spares.spare_pid
        assert dead is not None and dead != spare
        os.kill(dead, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while spares.spare_pid is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        third = pool.serve(model, *_held_jobs(model).values(), timeout=300, spares=spares)  # a fresh one instead
        assert third[CLIENT]["pid"] not in (spare, dead) and _cosine(third[CLIENT]["output"], model) > 0.999
        waiting = spares.spare_pid
    finally:
        spares.close()
        pool.close()
    assert spares.spare_pid is None and waiting is not None
    with pytest.raises(ProcessLookupError):  # closed with its node
        os.kill(waiting, 0)


@pytest.mark.slow
def test_owner_party_ends_with_its_node_and_after_its_idle_time(tmp_path: Path) -> None:
    from collab.mpc.persistent import OwnerParties, OwnerParty

    model = make_tiny_bert(tmp_path / "tiny-bert")
    party = OwnerParty(model)
    assert party.proc.stdin is not None
    party.proc.stdin.close()  # what a dying node leaves behind: the child reads EOF and exits by itself
    assert party.proc.wait(timeout=60) == 0
    party.close()
    pool = OwnerParties(idle_timeout=0.5)
    try:
        with pool.acquire(model) as p1:
            pid1 = p1.pid
        time.sleep(1.0)  # idle past the node's limit: the next call gets a fresh process, the old one is ended
        with pool.acquire(model) as p2:
            assert p2.pid != pid1 and p1.proc.poll() is not None
    finally:
        pool.close()


def test_only_the_matmul_weights_are_owner_held() -> None:
    from collab.mpc.fixed import held_names

    names = held_names({"word.0": (8, 4), "pos_type": (8, 4), "layer.0.q_w": (4, 4), "layer.0.q_b": (4,),
                        "layer.0.ff2_w": (8, 4), "layer.0.ln1_w": (4,), "head.w": (4, 3)})
    assert names == ["word.0", "layer.0.q_w", "layer.0.ff2_w"]  # matmuls only; the head stays shared
