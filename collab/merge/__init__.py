"""Model merging: mergekit's weight-space merges in-process, and RegMean/Fisher from summed statistics.

Merger side: :func:`load_config` reads a mergekit-style YAML into a
:class:`MergeSpec`, :func:`merge` runs it (mergekit for linear, task
arithmetic, TIES, DARE, SLERP and ``base+lora`` inputs; collab's own code for
RegMean and Fisher) and returns a :class:`MergeResult`. Participant side:
:func:`regmean_contribution` / :func:`fisher_contribution` turn a model and
private examples into a :class:`Contribution` whose sum over participants is
all the merger needs; a :class:`SumCollector` forms that sum.
"""

from __future__ import annotations

from pathlib import Path

from collab.merge.config import (
    DATA_METHODS,
    MERGEKIT_METHODS,
    METHODS,
    AssetResolver,
    MergeSpec,
    ModelInput,
    ModelRef,
    load_config,
    parse_config,
)
from collab.merge.datamerge import (
    PlainSum,
    RingSum,
    SecAggSum,
    SumCollector,
    data_methods,
    fisher_merge,
    merge_contributions,
    regmean_merge,
    run_data_merge,
)
from collab.merge.mergekit_merge import MergeResult, MethodInfo, ParamInfo, mergekit_methods, run_mergekit
from collab.merge.stats import Contribution, DPNoise, classification_nll, fisher_contribution, regmean_contribution

__all__ = [
    "DATA_METHODS",
    "MERGEKIT_METHODS",
    "METHODS",
    "AssetResolver",
    "Contribution",
    "DPNoise",
    "MergeResult",
    "MergeSpec",
    "MethodInfo",
    "ModelInput",
    "ModelRef",
    "ParamInfo",
    "PlainSum",
    "RingSum",
    "SecAggSum",
    "SumCollector",
    "all_methods",
    "classification_nll",
    "fisher_contribution",
    "fisher_merge",
    "load_config",
    "merge",
    "merge_contributions",
    "parse_config",
    "regmean_contribution",
    "regmean_merge",
    "run_data_merge",
    "run_mergekit",
]


def all_methods() -> list[MethodInfo]:
    """Every supported method with its parameters (what ``collab merge methods`` prints)."""
    return mergekit_methods() + data_methods()


def merge(
    spec: MergeSpec,
    out_dir: Path | str,
    *,
    resolver: AssetResolver | None = None,
    collector: SumCollector | None = None,
    seed: int = 0,
) -> MergeResult:
    """Run ``spec`` into ``out_dir``: asset ids resolved first, then mergekit or the data-aware merge."""
    spec = spec.resolve_assets(resolver)
    if spec.is_data_aware:
        return run_data_merge(spec, out_dir, collector=collector)
    return run_mergekit(spec, out_dir, seed=seed)
