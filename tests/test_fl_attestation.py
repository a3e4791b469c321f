"""The ServerApp's checks of a train reply, on real flwr Message objects (no processes needed).

A reply whose model receipt is not over the weights the server sent, whose
update commitment is signed by someone else or for another weight or ε, or which
names another participant, is refused (and its sender dropped).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from eth_account import Account
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from chain.clients.round_registry import epsilon_units
from collab.errors import BadInput, ProtocolViolation
from collab.fl import attestation as att
from collab.fl.app.server_app import Peer, _check_reply

JOB, RND = "job-x", 3
ME, OTHER = Account.create(), Account.create()
PEER = Peer(node=7, name="p0", address=ME.address, weight=40, member=1)
SENT = att.model_hash({"w": np.ones(3, dtype=np.float32)})


@pytest.fixture(autouse=True)
def in_a_run() -> object:
    """flwr 1.42 builds Messages inside a run's process; give this one the identity a ServerApp process has."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def reply(*, signer=ME, weight=40, receipt_hash=SENT, name="p0", signed_weight=40,  # type: ignore[no-untyped-def]
          epsilon=1.0, signed_epsilon=1.0) -> Message:
    rid = att.job_round_id(JOB, RND)
    commitment = att.update_commitment(rid, os.urandom(32), np.arange(5, dtype=np.int64))
    info = {
        "participant": name,
        "model-receipt": att.sign(signer, att.model_receipt_digest(JOB, RND, receipt_hash)),
        "update-commitment": commitment,
        "update-signature": att.sign(signer, att.update_digest(rid, PEER.member, signed_weight,
                                                                epsilon_units(signed_epsilon), commitment)),
    }
    content = RecordDict({"info": ConfigRecord(info),
                          "metrics": MetricRecord({"num-examples": weight, "epsilon": epsilon})})
    return Message(content, dst_node_id=PEER.node, message_type=MessageType.TRAIN)  # only .content is read


def test_an_honest_reply_is_attested() -> None:
    item = _check_reply(reply(epsilon=2.75, signed_epsilon=2.75), PEER, JOB, RND, SENT)
    assert item["participant"] == "p0" and item["weight"] == 40 and item["update_commitment"].startswith("0x")
    assert item["epsilon"] == 2.75


@pytest.mark.parametrize(
    "kw",
    [
        {"signer": OTHER},  # someone else's key
        {"receipt_hash": att.model_hash({"w": np.zeros(3, dtype=np.float32)})},  # trained from another model
        {"signed_weight": 400},  # re-weighted commitment
        {"weight": 41},  # a weight other than the declared one
        {"name": "p1"},  # speaking for another participant
        {"epsilon": 0.5},  # reports another ε than the one it signed
    ],
)
def test_a_forged_or_inconsistent_reply_is_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ProtocolViolation):
        _check_reply(reply(**kw), PEER, JOB, RND, SENT)  # type: ignore[arg-type]


def test_a_reply_with_an_impossible_epsilon_is_refused() -> None:
    with pytest.raises(BadInput, match="ε must be > 0"):
        _check_reply(reply(epsilon=-1.0), PEER, JOB, RND, SENT)
