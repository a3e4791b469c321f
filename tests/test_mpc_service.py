"""The served MPC job's defaults: cheap approximations, fixed weight masks, also on the 3-party (TTP) path.

Real party processes on the tests' tiny BERT (1 layer, 16 wide), so each job
stays seconds long; the multi-process test is marked slow.
"""

from __future__ import annotations

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
    assert cheap.softmax == "shifted" and cheap.gelu == "exppoly" and cheap.packed_compare
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
