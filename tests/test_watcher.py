"""Real jobs end to end on anvil: a claimer serves a cheating trace, `collab watch` catches it and wins.

The claimer side is a second watcher on the claimer's home (it defends the
claim from its store) plus a blob server; the challenger watcher fetches the
claim's data over HTTP, re-executes, challenges and plays the game.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from chain.clients.bisection_game import Phase
from chain.clients.claim_manager import Audience, ChallengeStatus, ClaimStatus
from collab.errors import BadInput, Unauthorized
from collab.fraudproof import builders
from collab.fraudproof.agents import ClaimerAgent
from collab.fraudproof.blobserver import MAX_REQUEST, BlobServer, fetch
from collab.fraudproof.builders import Job
from collab.fraudproof.program import Op
from collab.fraudproof.store import Store
from collab.fraudproof.vm import Value
from collab.fraudproof.watcher import Watcher
from test_claim_manager import GameEnv, env, game_env, needs_verifier  # noqa: F401 - fixtures


def _states(n: int) -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(n):
        g = torch.Generator().manual_seed(100 + i)
        out.append({"w": torch.randn(4, 6, generator=g), "b": torch.randn(4, generator=g)})
    return out


def _flip(job: Job, op: Op, element: int) -> tuple[int, dict[int, Value]]:
    """Override one element of the first ``op`` step (later steps follow from it)."""
    step = next(i for i, s in enumerate(job.program.steps) if s.op == op)
    value = job.trace().outputs[step].value
    flat = value.flat().copy()
    flat[element] = np.int64(int(flat[element]) + 1)
    return step, {step: Value(value.header, flat.reshape(value.header.shape))}


class Dispute:
    """A posted cheating claim, its blob server and both watchers."""

    def __init__(self, env: GameEnv, tmp: Path, job: Job, overrides: dict[int, Value], audience: Audience = Audience.PUBLIC) -> None:
        self.env = env
        self.claimer_home, self.watcher_home = tmp / "claimer", tmp / "watcher"
        cheat = job.trace(overrides)
        agent = ClaimerAgent(env.manager(env.claimer), env.game(env.claimer), env.data(env.claimer), cheat, job_id=env.new_job())
        participants = [env.claimer.address] if audience == Audience.PARTICIPANTS else []
        claim = agent.claim_input(audience=audience, participants=participants)
        self.store = Store(self.claimer_home)
        self.store.save_job(claim.claim_id, job.program, job.inputs, job.witnesses, overrides)
        self.server = BlobServer(self.store, int(env.w3.eth.chain_id), env.manager().is_audience).start()
        self.claim_id = agent.post(audience=audience, participants=participants)
        self.claimer_watcher = Watcher(env.w3, env.deployment, env.claimer, self.claimer_home)
        self.watcher = self.new_watcher()

    def new_watcher(self) -> Watcher:
        return Watcher(self.env.w3, self.env.deployment, self.env.challengers[0], self.watcher_home, [self.server.url])

    def play(self, max_rounds: int = 400) -> list[str]:
        log: list[str] = []
        for _ in range(max_rounds):
            log += self.watcher.poll()
            log += self.claimer_watcher.poll()
            if self.watcher.games() and not self.watcher.games("open"):
                return log
        raise AssertionError(f"game did not finish: {log[-5:]}")

    def close(self) -> None:
        self.server.stop()
        self.watcher.close()
        self.claimer_watcher.close()


@pytest.fixture
def dispute_for(env: GameEnv, tmp_path: Path) -> Callable[..., Dispute]:
    made: list[Dispute] = []

    def make(job: Job, overrides: dict[int, Value], **kw: Audience) -> Dispute:
        d = Dispute(env, tmp_path / str(len(made)), job, overrides, **kw)
        made.append(d)
        return d

    yield make  # type: ignore[misc]
    for d in made:
        d.close()


def _masked_sum_job() -> Job:
    from eth_account import Account
    from eth_hash.auto import keccak

    from collab.secagg import Member, RoundConfig, encode, run_local_round

    accounts = {i: Account.from_key(keccak(b"watcher-%d" % i)) for i in range(1, 4)}
    config = RoundConfig(keccak(b"watcher-round"), tuple(Member(i, accounts[i].address) for i in accounts), 2, 24, 16, None, b"\x03" * 32)
    rng = np.random.default_rng(5)
    result = run_local_round(config, accounts, {u: encode(rng.normal(size=24), 16) for u in accounts})
    return builders.masked_sum_from_witness(result.witness)


def _encoder_job() -> Job:
    from transformers import BertConfig, BertModel

    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, max_position_embeddings=8)
    return builders.encoder_forward(BertModel(cfg, add_pooling_layer=False).state_dict(), [1, 5, 2, 9], builders.EncoderShape(8, 2, 1))


JOBS: dict[str, tuple[Callable[[], Job], Op, int]] = {
    "fedavg": (lambda: builders.fedavg(_states(3), [5, 3, 2]), Op.WEIGHTED_SUM, 7),
    "masked-sum": (_masked_sum_job, Op.RING_ADD, 11),
    "ties": (lambda: builders.ties_merge(_states(1)[0], _states(3)[1:], 0.5), Op.TIES_MEAN, 5),
    "encoder": (_encoder_job, Op.SOFTMAX, 6),
}


@pytest.mark.parametrize("name", list(JOBS))
def test_real_job_cheater_is_caught_by_the_watcher_and_loses(env: GameEnv, dispute_for: Callable[..., Dispute], name: str) -> None:
    needs_verifier(env)
    make_job, op, element = JOBS[name]
    job = make_job()
    step, overrides = _flip(job, op, element)
    d = dispute_for(job, overrides)
    log = d.play()
    (game,) = d.watcher.games()
    assert game.role == "challenger" and game.status == "won", log
    assert f"step {step} ({op.name}), element {element}" in game.detail  # why it disagreed
    assert "expected 0x" in game.detail and "claimed 0x" in game.detail
    assert env.manager().claim_status(d.claim_id) == ClaimStatus.REJECTED
    (defended,) = d.claimer_watcher.games()
    assert defended.role == "claimer" and defended.status == "lost"
    assert d.watcher.verdicts()[d.claim_id][0] == "disagree"


def test_a_wrong_ties_threshold_witness_loses_at_the_assertion(env: GameEnv, dispute_for: Callable[..., Dispute]) -> None:
    needs_verifier(env)
    job = builders.ties_merge(_states(1)[0], _states(3)[1:], 0.5)
    first = min(job.witnesses)
    job.witnesses[first] = job.witnesses[first] + 1  # not the k-th largest magnitude: ASSERT_KTH has no valid output
    assert_step = next(i for i, s in enumerate(job.program.steps) if s.op == Op.ASSERT_KTH)
    from collab.fixedpoint import Domain
    from collab.fraudproof.commitments import TensorHeader

    d = dispute_for(job, {assert_step: Value(TensorHeader(Domain.FIXED, 0, ()), np.array(1, dtype=np.int64))})
    d.play()
    (game,) = d.watcher.games()
    assert game.status == "won" and f"step {assert_step} (ASSERT_KTH)" in game.detail
    assert env.manager().claim_status(d.claim_id) == ClaimStatus.REJECTED


def test_the_claimer_watcher_answers_data_challenges_from_its_store(env: GameEnv, dispute_for: Callable[..., Dispute]) -> None:
    from collab.fraudproof.agents import ChallengerAgent

    job = builders.fedavg(_states(2), [1, 1])
    d = dispute_for(job, {})
    asker = ChallengerAgent(env.manager(env.challengers[2]), env.game(env.challengers[2]), job.trace())
    cid = asker.challenge_input(d.claim_id, 1)
    assert env.data().open_challenges(d.claim_id) == [cid]
    events = d.claimer_watcher.poll()
    assert f"answered data challenge {cid}" in " ".join(events)
    assert env.data().open_challenges(d.claim_id) == []


def test_honest_claim_is_not_challenged(env: GameEnv, dispute_for: Callable[..., Dispute]) -> None:
    d = dispute_for(builders.fedavg(_states(2), [1, 1]), {})
    events = d.watcher.poll()
    assert any("agrees" in e for e in events) and not d.watcher.games()


def test_watcher_resumes_an_open_game_after_a_restart(env: GameEnv, dispute_for: Callable[..., Dispute]) -> None:
    needs_verifier(env)
    job = builders.fedavg(_states(3), [1, 2, 3])
    _, overrides = _flip(job, Op.WEIGHTED_SUM, 3)
    d = dispute_for(job, overrides)
    for _ in range(3):
        d.watcher.poll()
        d.claimer_watcher.poll()
    (game,) = d.watcher.games("open")
    assert env.game().get_game(game.game_id).phase != Phase.RESOLVED
    d.watcher.close()
    d.server.stop()  # the restarted watcher needs nothing from the claimer: its store has the data
    d.server = BlobServer(d.store, int(env.w3.eth.chain_id), env.manager().is_audience).start()
    d.watcher = Watcher(env.w3, env.deployment, env.challengers[0], d.watcher_home, ["http://127.0.0.1:9"])
    assert [g.game_id for g in d.watcher.games("open")] == [game.game_id]
    d.play()
    assert d.watcher.games()[0].status == "won"
    assert env.manager().claim_status(d.claim_id) == ClaimStatus.REJECTED


def test_blob_server_refuses_non_audience_and_malformed_requests(env: GameEnv, dispute_for: Callable[..., Dispute]) -> None:
    d = dispute_for(builders.fedavg(_states(2), [1, 1]), {}, audience=Audience.PARTICIPANTS)
    chain_id = int(env.w3.eth.chain_id)
    manifest = json.loads(fetch(d.server.url, env.claimer, chain_id, d.claim_id))  # a participant may read
    with pytest.raises(Unauthorized, match="not in the audience"):
        fetch(d.server.url, env.challengers[1], chain_id, d.claim_id)
    with pytest.raises(Unauthorized):
        fetch(d.server.url, env.challengers[1], chain_id, d.claim_id, manifest["program_root"])

    def raw(body: bytes, path: str = "/object") -> tuple[int, str]:
        req = urllib.request.Request(d.server.url + path, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    assert raw(b"not json")[0] == 400
    assert raw(b'{"claim_id": "0x12"}')[0] == 400
    assert raw(b"x" * (MAX_REQUEST + 1))[0] == 400
    assert raw(b"{}", "/nope")[0] == 404
    with pytest.raises(BadInput):  # an unknown root is refused before a byte is read
        fetch(d.server.url, env.claimer, chain_id, d.claim_id, "0xzz")
    # still serving after all of that
    assert fetch(d.server.url, env.claimer, chain_id, d.claim_id, manifest["program_root"])
    # a challenger outside the audience never challenges: it cannot even read
    assert any("not in its audience" in e for e in Watcher(env.w3, env.deployment, env.challengers[1], d.watcher_home.parent / "other", [d.server.url]).poll())


def test_second_challenger_stops_cleanly_and_gets_its_bond_back(env: GameEnv, dispute_for: Callable[..., Dispute]) -> None:
    """Two watchers challenge one wrong claim; once one wins, the other's game is closed, refunded and left alone."""
    needs_verifier(env)
    job = builders.fedavg(_states(3), [1, 2, 3])
    _, overrides = _flip(job, Op.WEIGHTED_SUM, 2)
    d = dispute_for(job, overrides)
    second = Watcher(env.w3, env.deployment, env.challengers[1], d.watcher_home.parent / "second", [d.server.url])
    try:
        log: list[str] = []
        second_log: list[str] = []
        for _ in range(400):
            log += d.watcher.poll()
            second_log += second.poll()
            log += d.claimer_watcher.poll()
            if d.watcher.games() and second.games() and not d.watcher.games("open") and not second.games("open"):
                break
        else:
            raise AssertionError(f"games did not finish: {log[-6:]}")
        assert env.manager().claim_status(d.claim_id) == ClaimStatus.REJECTED
        (won,) = d.watcher.games()
        (closed,) = second.games()
        assert won.status == "won", log + second_log
        assert closed.status == "refunded" and "game closed" in closed.detail, log
        challenge = env.manager().get_challenge(closed.game_id)
        assert challenge.status == ChallengeStatus.REFUNDED
        assert f"withdrew {challenge.bond} wei" in closed.detail  # the bond came back and was pulled
        assert env.manager().credit_of(env.challengers[1].address) == 0
        mentions = [e for e in second_log if e.startswith(f"game {closed.game_id}:") and "closed" in e]
        assert len(mentions) == 1, second_log  # logged once
        (defended, _) = d.claimer_watcher.games()
        assert {g.status for g in d.claimer_watcher.games()} == {"lost"} and defended.game_id == won.game_id
        later = second.poll() + second.poll()  # no more moves, no GameClosed retries
        assert not [e for e in later if f"game {closed.game_id}" in e]
    finally:
        second.close()
