"""DataAvailability on a real anvil: withheld data loses the claim, posted data defends it (protocol §7)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chain.clients.claim_manager import BURN_ADDRESS, Audience, ChallengeStatus, ClaimStatus
from chain.clients.data_availability import CommitmentKind, DataStatus, TensorCommitment
from chain.errors import revert_class
from collab.fraudproof.commitments import element_of_chunk
from test_claim_manager import GAS, GameEnv, env, game_env  # noqa: F401 - fixtures


def test_withheld_data_loses_the_claim_through_a_data_challenge(env: GameEnv, time_travel: Callable[[int], int]) -> None:
    claimer = env.claimer_agent(withhold=True)
    claim_id = claimer.post()
    challenger = env.challenger_agent()
    da_id = challenger.challenge_input(claim_id, tensor_id=1, chunk_index=3)
    data = env.data(env.challengers[1])
    d = data.get_data_challenge(da_id)
    assert d.status == DataStatus.OPEN and d.tensor_root == env.honest.inputs[1].root
    assert claimer.answer_data(claim_id) == []
    p = env.manager().params_of(claim_id)
    with pytest.raises(revert_class("ResponseWindowOpen")):
        data.expire(da_id)
    time_travel(p.da_response_window + 1)
    with pytest.raises(revert_class("ResponseWindowClosed")):
        claimer.data.respond(da_id, b"\x00" * 32, b"\x00" * 32, b"", [])
    GAS.add("da_expire", data.expire(da_id))
    assert env.manager().claim_status(claim_id) == ClaimStatus.REJECTED
    share = p.claimer_bond * (10_000 - p.burn_bps) // 10_000
    assert env.manager().credit_of(env.challengers[0].address) == p.da_bond + share
    assert env.manager().credit_of(BURN_ADDRESS) == p.claimer_bond - share
    with pytest.raises(revert_class("DataChallengeNotOpen")):
        data.expire(da_id)


def test_posted_data_answers_the_challenge_and_the_claim_finalizes(env: GameEnv, time_travel: Callable[[int], int]) -> None:
    claimer = env.claimer_agent()
    claim_id = claimer.post()
    challenger = env.challenger_agent()
    da_id = challenger.challenge_input(claim_id, tensor_id=0, chunk_index=2)
    assert claimer.answer_data(claim_id) == [da_id]
    data = env.data()
    posted = data.posted_data(da_id)
    expected = env.honest.inputs[0].leaf_bytes(2)
    assert posted == expected
    assert element_of_chunk(posted, 0) == int(env.honest.inputs[0].value.flat()[64])
    assert data.get_data_challenge(da_id).status == DataStatus.ANSWERED
    assert env.manager().get_challenge(da_id).status == ChallengeStatus.CLAIMER_WON
    p = env.manager().params_of(claim_id)
    assert env.manager().credit_of(env.claimer.address) == p.da_bond
    with pytest.raises(revert_class("DataChallengeNotOpen")):
        claimer.data.respond(da_id, b"\x00" * 32, b"\x00" * 32, b"", [])
    time_travel(p.challenge_window)
    env.manager().finalize(claim_id)
    assert env.manager().credit_of(env.claimer.address) == p.da_bond + p.claimer_bond


def test_data_challenges_prove_the_claim_commits_to_the_tensor(env: GameEnv, time_travel: Callable[[int], int]) -> None:
    claimer = env.claimer_agent()
    claim_id = claimer.post(audience=Audience.PARTICIPANTS, participants=[env.challengers[0].address])
    manager = env.manager(env.challengers[0])
    bogus = TensorCommitment(CommitmentKind.TRACE_LEAF, 0, proof=env.honest.tree.proof(1))
    with pytest.raises(revert_class("InvalidCommitmentProof")):
        manager.challenge_data(claim_id, env.honest.outputs[0].root, 0, bogus.encode())
    with pytest.raises(revert_class("NotAudience")):
        env.manager(env.challengers[1]).challenge_data(claim_id, env.honest.input_root, 0, TensorCommitment(CommitmentKind.INPUT_BUNDLE).encode())
    with pytest.raises(revert_class("WrongBond")):
        manager.challenge_data(claim_id, env.honest.input_root, 0, TensorCommitment(CommitmentKind.INPUT_BUNDLE).encode(), bond=1)
    # A trace leaf (step 2's output) and the bundle itself are challengeable; an index past the tree is answered by the header.
    leaf = TensorCommitment(CommitmentKind.TRACE_LEAF, 2, proof=env.honest.tree.proof(2))
    step_da, _ = manager.challenge_data(claim_id, env.honest.outputs[2].root, 4, leaf.encode())
    far_da, _ = manager.challenge_data(claim_id, env.honest.outputs[2].root, 1 << 20, leaf.encode())
    bundle_da, _ = manager.challenge_data(claim_id, env.honest.input_root, 1, TensorCommitment(CommitmentKind.INPUT_BUNDLE).encode())
    data = env.data(env.claimer)
    out = env.honest.outputs[2]
    with pytest.raises(revert_class("InvalidChunkProof")):
        data.respond(step_da, out.chunk_root, out.header.encode(), out.leaf_bytes(3), out.tree.proof(4))
    with pytest.raises(revert_class("TensorRootMismatch")):
        data.respond(step_da, out.chunk_root, env.honest.inputs[0].header.encode()[:2] + b"\x03" + out.header.encode()[3:], out.leaf_bytes(4), out.tree.proof(4))
    assert sorted(claimer.answer_data(claim_id)) == sorted([step_da, far_da, bundle_da])
    assert data.posted_data(bundle_da) == env.honest.bundle.leaf_bytes(1)
    time_travel(env.manager().params_of(claim_id).challenge_window)
    env.manager().finalize(claim_id)
    with pytest.raises(revert_class("DataChallengeNotOpen")):
        data.expire(step_da)
