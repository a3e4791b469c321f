"""The ``round_join`` operation (node.sock and in-process ``collab join``) refuses bad requests before any chain call.

Fast: the actor's chain session fails the test if it is ever asked for, so
every refusal below provably happens before anything is sent. The accepted
path runs on anvil in ``tests/test_round_cli.py`` (no node) and through a real
node in ``tests/test_node_round.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collab.errors import BadInput, NotFound
from orchestrator import local_ops


def _actor(home: Path) -> local_ops.Actor:
    def no_chain(need_account: bool = True) -> Any:
        raise AssertionError("the chain was contacted for a request that should have been refused")

    return local_ops.Actor(home=home, vault_dir=home / "vault", session=no_chain, identity=no_chain, log=lambda _: None)


def test_malformed_requests_and_data_are_refused_before_the_chain(tmp_path: Path) -> None:
    actor, good = _actor(tmp_path), tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"text": f"t{i}", "label": "ab"[i % 2]}) + "\n" for i in range(4)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "a"}\n{"text": 3\n')
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"round_id": "1", "data": str(good)}, BadInput, "round_id must be a positive integer"),
        ({"round_id": True, "data": str(good)}, BadInput, "round_id"),
        ({"round_id": 0, "data": str(good)}, BadInput, "round_id"),
        ({"round_id": 1, "data": str(good), "dataset_asset": -3}, BadInput, "dataset_asset"),
        ({"round_id": 1, "data": "good.jsonl"}, BadInput, "must be absolute"),
        ({"round_id": 1, "data": str(bad)}, BadInput, "bad.jsonl"),
        ({"round_id": 1, "data": str(tmp_path / "missing.csv")}, NotFound, "missing.csv"),
        ({"round_id": 1, "data": str(good), "sudo": True}, BadInput, "unexpected keyword"),
        ({"data": str(good)}, BadInput, "round_join"),
    ]
    for fields, error, text in cases:
        with pytest.raises(error, match=text):
            local_ops.run("round_join", actor, fields)
    assert not (tmp_path / "rounds").exists()  # nothing kept for a refused join
    assert local_ops.joined_data(tmp_path, 1) is None
