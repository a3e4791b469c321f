"""``collab bench rounds`` on its own anvil (a reduced participant series): figures on disk and their properties."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collab.commands.bench import benchmarks_package


@pytest.mark.slow
def test_rounds_suite_writes_figures_with_a_small_marginal_consent_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = benchmarks_package().load_suite("rounds")
    monkeypatch.setattr(suite, "COUNTS", (1, 8))
    results = suite.run(tmp_path)
    assert json.loads((tmp_path / "rounds.json").read_text())["series"] == results["series"]
    assert (tmp_path / "rounds.png").stat().st_size > 0
    one, eight = results["series"]
    # Same-message aggregation: one pairing whatever the count; each extra signer adds a G1 addition and reads.
    assert 0 < results["baseline"]["marginal_gas_per_signer"] < one["consent_check"] / 4
    assert one["settled_by"] == "hook" and eight["settled_by"] == "settle" and eight["settle"] > 0
    assert results["dispute_exclusion"]["gas"] > 0 and results["dispute_exclusion"]["omission_gas"] > 0
    veto = results["consent_veto"]
    assert veto["consented"] == 2 and min(veto["propose_record"], veto["consent_mean"], veto["submit_proposed"]) > 0
    assert suite.render(results) is not None
