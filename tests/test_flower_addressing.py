"""Multi-host Flower configuration of the orchestrator's rounds, and a run config free of orchestrator paths.

Fast (no processes): the SuperLink address comes from the orchestrator's
configuration, is named in the certificate's SANs and travels in the job's
data; a wildcard ``--bind`` needs an explicit ``--superlink-host``; the run
config that every participant receives holds no orchestrator-local path (the
ServerApp gets them from a server-only file its SuperLink points it to). The
real processes on 127.0.0.2 are in ``tests/test_round_tls.py`` and
``tests/test_node_round.py``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from collab.cli import run as collab
from collab.errors import EXIT_USAGE, InternalError
from collab.fl.app import APP_DIR
from collab.fl.deployment import ENV_SERVER_RUNS, FlowerDeployment, host_port, server_only
from collab.fl.tls import server_sans
from orchestrator.jobs import JobState, JobStore, step
from orchestrator.rounds import RoundJob

A, B = "0x" + "a1" * 20, "0x" + "b2" * 20


@pytest.mark.parametrize("host", ["127.0.0.2", "collab-orchestrator.internal"])
def test_the_superlink_address_is_configuration_in_the_job_and_the_certificate(tmp_path: Path, host: str) -> None:
    store, handler = JobStore(tmp_path / "jobs.db"), RoundJob(tmp_path / "orch", superlink_host=host)
    try:
        job, _ = store.create("round", {"participants": [A, B], "needs": [A, B], "submitter": A, "config": {}})
        assert step(store, {"round": handler}, store.get(job.id)).state == JobState.COLLECTING  # type: ignore[arg-type]
        data = store.get(job.id).data
        assert data["superlink_address"] == host and data["superlink_port"] > 0
        sans = server_sans(handler._dir(store.get(job.id)) / "flower" / "tls" / "superlink.pem")
        assert sans[0] == host and "127.0.0.1" in sans
        dep = handler._deployment(store.get(job.id))  # what the orchestrator's SuperLink (and its CLI) use
        assert dep.host == host and dep.port == data["superlink_port"]
    finally:
        store.close()


def test_addresses_as_flower_takes_them() -> None:
    assert host_port("127.0.0.2", 9092) == "127.0.0.2:9092" and host_port("::1", 9092) == "[::1]:9092"
    assert host_port("orchestrator.example", 1) == "orchestrator.example:1"


def test_a_wildcard_bind_needs_an_explicit_superlink_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = collab(["--home", str(tmp_path / "h"), "orchestrator", "start", "--bind", "tcp://*:0"])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "--superlink-host" in err and "Traceback" not in err


def test_the_run_config_holds_no_orchestrator_local_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    orch = tmp_path / "orchestrator-home"
    dep = FlowerDeployment(orch / "rounds" / "j1", port=1)
    result = orch / "rounds" / "j1" / "result.json"
    config: dict[str, Any] = {"num-rounds": 2, "registry-round": 7, "aggregator": A, "aggregator-home": str(orch)}
    sent = tomllib.loads(dep.write_run_config(config, result).read_text())
    defaults = tomllib.loads((APP_DIR / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    for values in (sent, defaults):  # what `flwr run` sends, fused with the app's defaults: all participants see it
        assert not {"result-path", "aggregator-home"} & set(values)
        assert not [v for v in values.values() if isinstance(v, str) and ("/" in v or str(tmp_path) in v)], values
    assert sent["num-rounds"] == 2 and sent["aggregator"] == A and sent["server-run"] and "server-run" in defaults

    # The ServerApp (its SuperLink's environment names the folder) gets both values back.
    monkeypatch.setenv(ENV_SERVER_RUNS, str(orch / "rounds" / "j1" / "flower" / "server-runs"))
    seen = server_only(sent)
    assert seen["result-path"] == str(result.resolve()) and seen["aggregator-home"] == str(orch)
    assert seen["num-rounds"] == 2
    with pytest.raises(InternalError, match="unreadable"):
        server_only({**sent, "server-run": "0" * 16})
    monkeypatch.delenv(ENV_SERVER_RUNS)
    assert server_only(sent) == sent  # a ServerApp outside a collab SuperLink: the run config alone
