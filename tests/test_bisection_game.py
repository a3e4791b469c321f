"""BisectionGame on a real anvil: cheaters lose, honest sides win, clocks, several challengers, guards.

Traces come from the real VM (``collab.fraudproof.trace.build_trace``); a
cheating claimer's trace has one element changed at one step (and every later
step computed from it), a dishonest challenger's reference likewise. Games are
played move by move through the agents, so each scenario is what ``collab
watch`` would do, with the test moving chain time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from chain.clients.bisection_game import Phase, Reason, Side
from chain.clients.claim_manager import BURN_ADDRESS, ChallengeStatus, ClaimStatus
from chain.errors import revert_class
from collab.fraudproof.agents import play, wrong_op_trace
from test_claim_manager import GAS, N_STEPS, SHAPE, GameEnv, env, game_env, needs_verifier  # noqa: F401 - fixtures

NUMEL = SHAPE[0] * SHAPE[1]


@pytest.mark.parametrize(
    ("step", "element", "log2k"),
    [(0, 0, 1), (N_STEPS // 2, NUMEL // 2, 1), (N_STEPS - 1, NUMEL - 1, 1), (N_STEPS // 2, 77, 2), (1, 33, 4)],
    ids=["first-step-k2", "middle-step-k2", "last-step-k2", "middle-step-k4", "k16"],
)
def test_cheating_claimer_loses_to_an_honest_challenger_and_is_slashed_exactly(
    env: GameEnv, step: int, element: int, log2k: int
) -> None:
    needs_verifier(env)
    claimer = env.claimer_agent(env.cheat(step, element), log2k=log2k)
    claim_id = claimer.post()
    challenger = env.challenger_agent()
    assert challenger.disagrees(claim_id)
    game_id = challenger.challenge(claim_id)
    moves: list[str] = []
    game = play(claimer, challenger, game_id, on_move=moves.append)
    assert game.phase == Phase.RESOLVED and not game.claimer_won
    assert game.step == step and game.element_index == element
    assert env.game().resolution(game_id) == (False, Reason.PROOF)
    p = env.manager().params_of(claim_id)
    share = p.claimer_bond * (10_000 - p.burn_bps) // 10_000
    assert env.manager().credit_of(env.challengers[0].address) == p.challenger_bond + share
    assert env.manager().credit_of(BURN_ADDRESS) == p.claimer_bond - share
    assert env.manager().credit_of(env.claimer.address) == 0
    assert env.manager().get_claim(claim_id).status == ClaimStatus.REJECTED
    assert env.manager().get_challenge(game_id).status == ChallengeStatus.CHALLENGER_WON
    assert moves[-1] == "prove_step"
    with pytest.raises(revert_class("ClaimNotPending")):
        env.manager().finalize(claim_id)


def test_a_claimer_running_the_wrong_op_loses(env: GameEnv) -> None:
    needs_verifier(env)
    from collab.fraudproof.program import Op

    claimer = env.claimer_agent(wrong_op_trace(env.honest, env.inputs, 1, Op.SUB))
    claim_id = claimer.post()
    challenger = env.challenger_agent()
    game_id = challenger.challenge(claim_id)
    game = play(claimer, challenger, game_id)
    assert not game.claimer_won and game.step == 1
    assert env.game().resolution(game_id) == (False, Reason.PROOF)


def test_dishonest_challenger_loses_against_an_honest_claimer(env: GameEnv, time_travel: Callable[[int], int]) -> None:
    needs_verifier(env)
    claimer = env.claimer_agent()
    claim_id = claimer.post()
    liar = env.challenger_agent(env.cheat(2, 5))  # its reference is wrong from step 2 on
    game_id = liar.challenge(claim_id)
    game = play(claimer, liar, game_id)
    assert game.claimer_won and game.step == 2
    p = env.manager().params_of(claim_id)
    share = p.challenger_bond * (10_000 - p.burn_bps) // 10_000
    assert env.manager().credit_of(env.claimer.address) == share
    assert env.manager().credit_of(BURN_ADDRESS) == p.challenger_bond - share
    assert env.manager().credit_of(liar.manager.account.address) == 0  # type: ignore[union-attr]
    time_travel(p.challenge_window)
    env.manager().finalize(claim_id)
    assert env.manager().credit_of(env.claimer.address) == share + p.claimer_bond


def test_lazy_claimer_loses_on_time(env: GameEnv, time_travel: Callable[[int], int]) -> None:
    claimer = env.claimer_agent(env.cheat(1, 1))
    claim_id = claimer.post()
    game_id = env.challenger_agent().challenge(claim_id)
    game = env.game(env.challengers[1])
    deadline = game.deadline_of(game_id)
    time_travel(deadline - env.w3.eth.get_block("latest")["timestamp"] - 30)
    with pytest.raises(revert_class("ClockNotExpired")):
        game.resolve_timeout(game_id)
    time_travel(35)
    with pytest.raises(revert_class("ClockExpired")):
        claimer.act(game_id)  # a late move is refused
    tx = game.resolve_timeout(game_id)
    GAS.add("resolve_timeout", tx)
    assert game.resolution(game_id) == (False, Reason.TIMEOUT)
    assert env.manager().claim_status(claim_id) == ClaimStatus.REJECTED


def test_lazy_challenger_loses_on_time(env: GameEnv, time_travel: Callable[[int], int]) -> None:
    claimer = env.claimer_agent()
    claim_id = claimer.post()
    challenger = env.challenger_agent(env.cheat(0, 0), lazy=True)
    game_id = challenger.challenge(claim_id)
    assert claimer.act(game_id) == "reveal"
    assert claimer.act(game_id) is None  # now the challenger's clock runs
    time_travel(env.manager().params_of(claim_id).clock_duration + 1)
    env.game(env.claimer).resolve_timeout(game_id)
    assert env.game().resolution(game_id) == (True, Reason.TIMEOUT)
    assert env.manager().get_challenge(game_id).status == ChallengeStatus.CLAIMER_WON


def test_a_last_second_move_leaves_the_opponent_the_clock_extension(env: GameEnv, time_travel: Callable[[int], int]) -> None:
    # Both sides hold every move until their clock has at most 20 s left.
    claimer = env.claimer_agent(env.cheat(3, 9), last_second=20)
    claim_id = claimer.post()
    challenger = env.challenger_agent(last_second=20)
    game_id = challenger.challenge(claim_id)
    p = env.manager().params_of(claim_id)
    game = env.game()

    def now() -> int:
        return int(env.w3.eth.get_block("latest")["timestamp"])

    def wait_and_move(agent: Any) -> str:
        assert agent.act(game_id) is None  # too early: it holds its move
        time_travel(game.deadline_of(game_id) - now() - 15)
        moved = agent.act(game_id)
        assert moved is not None
        return str(moved)

    assert wait_and_move(claimer) == "reveal"
    g = game.get_game(game_id)
    assert g.turn == Side.CHALLENGER and 0 < g.claimer_left <= 21
    assert wait_and_move(challenger) == "pick"
    g = game.get_game(game_id)
    # The claimer, almost out of time, is topped up to the extension after the challenger's last-second pick.
    assert g.turn == Side.CLAIMER and g.claimer_left == p.clock_extension
    assert game.deadline_of(game_id) == g.last_move_at + p.clock_extension
    with pytest.raises(revert_class("ClockNotExpired")):
        game.resolve_timeout(game_id)
    assert wait_and_move(claimer) == "reveal"
    g = game.get_game(game_id)
    assert g.turn == Side.CHALLENGER and g.challenger_left == p.clock_extension
    # Without moving, a side loses once even the extension has run out.
    time_travel(p.clock_extension)
    game.resolve_timeout(game_id)
    assert game.resolution(game_id) == (True, Reason.TIMEOUT)

def test_two_challengers_first_win_rejects_the_claim_and_refunds_the_other(
    env: GameEnv, time_travel: Callable[[int], int]
) -> None:
    needs_verifier(env)
    claimer = env.claimer_agent(env.cheat(4, 100))
    claim_id = claimer.post()
    first, second = env.challenger_agent(index=0), env.challenger_agent(index=1)
    g1, g2 = first.challenge(claim_id), second.challenge(claim_id)
    claimer.act(g2)  # the second game has started too
    assert not play(claimer, first, g1).claimer_won
    assert env.manager().claim_status(claim_id) == ClaimStatus.REJECTED
    with pytest.raises(revert_class("GameClosed")):
        second.act(g2)
    env.manager(env.challengers[2]).refund_challenge(g2)
    p = env.manager().params_of(claim_id)
    assert env.manager().credit_of(env.challengers[1].address) == p.challenger_bond
    assert env.manager().get_challenge(g2).status == ChallengeStatus.REFUNDED
    with pytest.raises(revert_class("ChallengeNotOpen")):
        env.manager().refund_challenge(g2)


def test_two_dishonest_challengers_both_lose_and_the_claim_finalizes(
    env: GameEnv, time_travel: Callable[[int], int]
) -> None:
    needs_verifier(env)
    env.set_param("CHALLENGE_WINDOW", 600)  # shorter than a clock, so a game outlives the window
    claimer = env.claimer_agent()
    claim_id = claimer.post()
    liars = [env.challenger_agent(env.cheat(0, 3), index=0), env.challenger_agent(env.cheat(N_STEPS - 1, 150), index=1)]
    games = [liar.challenge(claim_id) for liar in liars]
    assert play(claimer, liars[0], games[0]).claimer_won
    time_travel(env.manager().params_of(claim_id).challenge_window)
    with pytest.raises(revert_class("ChallengesOpen")):
        env.manager().finalize(claim_id)
    assert play(claimer, liars[1], games[1]).claimer_won
    env.manager().finalize(claim_id)
    p = env.manager().params_of(claim_id)
    share = p.challenger_bond * (10_000 - p.burn_bps) // 10_000
    assert env.manager().credit_of(env.claimer.address) == 2 * share + p.claimer_bond


def test_malformed_out_of_turn_and_foreign_moves_revert_with_named_errors(env: GameEnv) -> None:
    claimer = env.claimer_agent(env.cheat(2, 2))
    claim_id = claimer.post()
    challenger = env.challenger_agent()
    game_id = challenger.challenge(claim_id)
    as_claimer, as_challenger, as_stranger = env.game(env.claimer), env.game(env.challengers[0]), env.game(env.challengers[3])
    g = as_claimer.get_game(game_id)
    unset = (1).to_bytes(32, "big")  # HEADER_UNSET / PENDING_UNSET: prepaid slots, never a real header or hash
    assert g.header == unset and g.pending == unset
    good = claimer.trace.tree.children(0, 0, 1)
    with pytest.raises(revert_class("OutOfTurn")):
        as_challenger.pick(game_id, good, 0)
    with pytest.raises(revert_class("NotClaimer")):
        as_stranger.reveal(game_id, good)
    with pytest.raises(revert_class("WrongChildCount")):
        as_claimer.reveal(game_id, good + good)
    with pytest.raises(revert_class("ChildrenMismatch")):
        as_claimer.reveal(game_id, [good[1], good[0]])
    with pytest.raises(revert_class("WrongPhase")):
        as_claimer.reveal_chunk(game_id, b"\x00" * 256)
    as_claimer.reveal(game_id, good)
    with pytest.raises(revert_class("OutOfTurn")):
        as_claimer.reveal(game_id, good)
    with pytest.raises(revert_class("NotChallenger")):
        as_stranger.pick(game_id, good, 0)
    with pytest.raises(revert_class("PickedChildrenMismatch")):
        as_challenger.pick(game_id, [good[1], good[0]], 0)
    with pytest.raises(revert_class("InvalidPick")):
        as_challenger.pick(game_id, good, 2)
    with pytest.raises(revert_class("UnknownGame")):
        as_claimer.get_game(10**6)
    with pytest.raises(revert_class("NotManager")):
        as_stranger._transact("open", 999, claim_id, env.claimer.address, env.claimer.address, g.node, 1, 1, 10, 1)
    # Descend to the disputed step, then refuse a header that is not the leaf's preimage.
    while as_claimer.get_game(game_id).phase == Phase.TRACE:
        assert claimer.act(game_id) or challenger.act(game_id)
    g = as_claimer.get_game(game_id)
    assert g.phase == Phase.HEADER and g.step == 2
    out = claimer.trace.outputs[2]
    with pytest.raises(revert_class("HeaderMismatch")):
        as_claimer.reveal_header(game_id, out.chunk_root, env.honest.outputs[1].header.encode()[:-1] + b"\x01")
    with pytest.raises(revert_class("ChildrenMismatch")):
        as_claimer.reveal_header(game_id, out.chunk_root, out.header.encode(), list(reversed(out.tree.children(0, 0, 1))))
    claimer.act(game_id)
    while as_claimer.get_game(game_id).phase == Phase.CHUNK:
        assert claimer.act(game_id) or challenger.act(game_id)
    g = as_claimer.get_game(game_id)
    assert g.phase == Phase.ELEMENT and g.index == 0
    with pytest.raises(revert_class("ChunkMismatch")):
        as_claimer.reveal_chunk(game_id, out.leaf_bytes(1))
    claimer.act(game_id)
    chunk = out.leaf_bytes(0)
    with pytest.raises(revert_class("InvalidPick")):
        as_challenger.pick_element(game_id, chunk, 32)
    with pytest.raises(revert_class("ChunkMismatch")):
        as_challenger.pick_element(game_id, out.leaf_bytes(1), 2)
    assert challenger.act(game_id) == "pick_element"
    g = as_claimer.get_game(game_id)
    assert g.phase == Phase.STEP and g.element_index == 2
    assert int.from_bytes(g.claimed_word, "big", signed=True) == int(out.value.flat()[2])
    assert g.claimed_word == g.pending  # the pick's slot carries the claimed word from here on


def test_challenges_close_with_the_window_and_need_the_exact_bond(env: GameEnv, time_travel: Callable[[int], int]) -> None:
    claim_id = env.claimer_agent().post()
    manager = env.manager(env.challengers[0])
    p = manager.params_of(claim_id)
    with pytest.raises(revert_class("WrongBond")):
        manager.challenge(claim_id, bond=p.challenger_bond + 1)
    time_travel(p.challenge_window)
    with pytest.raises(revert_class("ChallengeWindowClosed")):
        manager.challenge(claim_id)


def test_an_output_of_the_wrong_shape_loses_on_the_declared_header(env: GameEnv) -> None:
    needs_verifier(env)
    from collab.fixedpoint import Domain
    from collab.fraudproof.commitments import TensorHeader
    from collab.fraudproof.trace import build_trace
    from collab.fraudproof.vm import Value

    last = N_STEPS - 1
    honest = env.honest.outputs[last].value
    reshaped = Value(TensorHeader(Domain.FIXED, honest.header.frac_bits, (8, 20)), honest.flat().reshape(8, 20))
    cheat = build_trace(env.program, env.inputs, overrides={last: reshaped})
    claimer = env.claimer_agent(cheat)
    claim_id = claimer.post()
    challenger = env.challenger_agent()
    game_id = challenger.challenge(claim_id)
    game = play(claimer, challenger, game_id)
    assert not game.claimer_won and game.step == last and game.index == 0 and game.element == 0
    assert env.game().resolution(game_id) == (False, Reason.HEADER_MISMATCH)
    assert challenger.reasons and "header" in challenger.reasons[0]


def test_a_challenger_that_picks_a_padding_leaf_loses_at_once(env: GameEnv) -> None:
    claimer = env.claimer_agent()
    claim_id = claimer.post()
    game_id = env.challenger_agent().challenge(claim_id)
    as_challenger = env.game(env.challengers[0])
    # Always pick the rightmost child: leaf 7 of a 5-step trace is padding (0x00…00).
    while as_challenger.get_game(game_id).phase == Phase.TRACE:
        claimer.act(game_id)
        as_challenger.pick(game_id, as_challenger.last_reveal(game_id), 1)
    g = as_challenger.get_game(game_id)
    assert g.phase == Phase.RESOLVED and g.claimer_won and g.step == 7
    assert as_challenger.resolution(game_id) == (True, Reason.PADDING_LEAF)
    assert env.manager().get_challenge(game_id).status == ChallengeStatus.CLAIMER_WON


def test_post_gas_without_a_new_parameter_snapshot(env: GameEnv) -> None:
    first = env.claimer_agent()
    first.post()
    second = env.claimer_agent()
    second.post()
    (_, gas_first), (_, gas_second) = first.gas.entries[-2], second.gas.entries[-1]
    assert gas_second < gas_first  # the snapshot is stored once per governance change
    print(f"gas post (new snapshot) {gas_first:,d}; post (snapshot reused) {gas_second:,d}")


def test_a_wrong_entry_of_a_bundle_output_loses_on_the_entry_leaf(env: GameEnv) -> None:
    """The last step commits a state dict (BUNDLE): the game descends its entry tree, no element round."""
    needs_verifier(env)
    from collab.fraudproof.agents import wrong_element_trace
    from collab.fraudproof.program import ProgramBuilder
    from collab.fraudproof.trace import build_trace

    b = ProgramBuilder({n: env.inputs[n].header for n in "xy"})
    s0 = b.add(b["x"], b["y"])
    s1 = b.add(s0, b["x"])
    s2 = b.add(s1, b["y"])
    b.bundle({"layer.weight": s1, "layer.bias": s2, "head.weight": s0})
    program = b.build()
    honest = build_trace(program, env.inputs)
    # Step 2 stays honest, but the bundle commits a corrupted copy of it.
    cheat = wrong_element_trace(honest, env.inputs, 2, 17)
    bundle_step = len(program.steps) - 1
    forged = build_trace(program, env.inputs, overrides={2: honest.outputs[2].value, bundle_step: cheat.outputs[bundle_step].value})
    assert forged.outputs[bundle_step].root != honest.outputs[bundle_step].root
    claimer = env.claimer_agent(forged, log2k=1)
    claim_id = claimer.post()
    challenger = env.challenger_agent(honest)
    game_id = challenger.challenge(claim_id)
    moves: list[str] = []
    game = play(claimer, challenger, game_id, on_move=moves.append)
    assert not game.claimer_won and game.step == bundle_step
    assert "reveal_chunk" not in moves and "pick_element" not in moves
    assert env.game().resolution(game_id) == (False, Reason.PROOF)


def test_a_one_step_program_with_a_one_chunk_output_goes_straight_to_the_element_round(env: GameEnv) -> None:
    """Trace depth 0 (the game opens at the header) and chunk depth 0 (the header reveal carries the chunk)."""
    needs_verifier(env)
    import numpy as np

    from collab.fixedpoint import Domain
    from collab.fraudproof.agents import wrong_element_trace
    from collab.fraudproof.commitments import TensorHeader
    from collab.fraudproof.program import ProgramBuilder
    from collab.fraudproof.trace import build_trace
    from collab.fraudproof.vm import tensor

    header = TensorHeader(Domain.FIXED, 4, (2, 8))
    b = ProgramBuilder({"a": header, "b": header})
    b.add(b["a"], b["b"])
    rng = np.random.default_rng(3)
    inputs = {n: tensor(rng.integers(-1000, 1000, size=(2, 8), dtype=np.int64), Domain.FIXED, 4) for n in "ab"}
    honest = build_trace(b.build(), inputs)
    claimer = env.claimer_agent(wrong_element_trace(honest, inputs, 0, 11))
    claim_id = claimer.post()
    challenger = env.challenger_agent(honest)
    game_id = challenger.challenge(claim_id)
    assert env.game().get_game(game_id).phase == Phase.HEADER
    moves: list[str] = []
    game = play(claimer, challenger, game_id, on_move=moves.append)
    assert moves == ["reveal_header", "pick_element", "prove_step"]
    assert not game.claimer_won and game.element_index == 11

def test_gas_report(game_env: GameEnv) -> None:
    """Prints the gas of every move kind the game tests made (run with -s); the post stays bounded."""
    by_kind = GAS.by_kind()
    for kind, figures in sorted(by_kind.items()):
        print(f"gas {kind:16s} n={len(figures):3d} min={min(figures):9,d} max={max(figures):9,d}")
    if "post" in by_kind:
        assert max(by_kind["post"]) < 400_000
    if "reveal" in by_kind:
        assert max(by_kind["reveal"]) < 150_000
