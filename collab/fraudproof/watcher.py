"""``collab watch``: re-execute every claim this home may see, challenge mismatches, play games to the end.

One :meth:`Watcher.poll` does a bounded amount of work and returns: read new
``ClaimPosted`` events, fetch each new claim's manifest, program, inputs and
witnesses from the claimer's blob server (checking every object against its
root and the claim's programRoot/inputRoot), re-run it, challenge when the
trace or output root differs, then make at most one move in every open game
(as challenger with the honest reference, or as claimer defending this home's
own claims from its store). Progress is in SQLite next to the store, and the
game state itself is on chain, so a restarted watcher resumes where it was.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain.clients.bisection_game import BisectionGameClient, Phase
from chain.clients.claim_manager import ChallengeStatus, ClaimManagerClient, ClaimStatus
from chain.clients.data_availability import DataAvailabilityClient
from chain.deployment import Deployment

from collab.errors import BadInput, CollabError, NotFound, ProtocolViolation
from collab.fixedpoint import Domain
from collab.fraudproof.agents import ChallengerAgent, ClaimerAgent
from collab.fraudproof.blobserver import fetch
from collab.fraudproof.commitments import TensorHeader
from collab.fraudproof.program import Program
from collab.fraudproof.store import Manifest, Store, tensor_from_bytes
from collab.fraudproof.trace import Trace, build_trace, input_bundle
from collab.fraudproof.vm import NoValidOutput, Value, execute_step

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS cursor (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS claims (claim_id TEXT PRIMARY KEY, verdict TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS games (game_id INTEGER PRIMARY KEY, claim_id TEXT NOT NULL, role TEXT NOT NULL,
    status TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');
"""


@dataclass(frozen=True)
class GameRecord:
    """A game this watcher plays (persisted)."""

    game_id: int
    claim_id: bytes
    role: str  # "challenger" | "claimer"
    status: str  # "open" | "won" | "lost" | "refunded" (another game decided the claim)
    detail: str


class Watcher:
    """Follows claims on one deployment as one account."""

    def __init__(
        self, w3: Web3, deployment: Deployment, account: LocalAccount, home: Path, sources: Sequence[str] = (), *, log2k: int = 1
    ) -> None:
        self.w3, self.account, self.sources, self.log2k = w3, account, list(sources), log2k
        self.manager = ClaimManagerClient.from_deployment(deployment, w3, account)
        self.game = BisectionGameClient.from_deployment(deployment, w3, account)
        self.data = DataAvailabilityClient.from_deployment(deployment, w3, account)
        self.store = Store(home)
        self.chain_id = int(w3.eth.chain_id)
        self.deploy_block = int(deployment.deploy_block)
        self.db = sqlite3.connect(str(self.store.root / "watch.sqlite"))
        self.db.executescript(SCHEMA)
        self._traces: dict[bytes, Trace] = {}
        self._claim_sources: dict[bytes, str | None] = {}
        self.reasons: list[str] = []

    # ------------------------------------------------------------------ persistence

    def _cursor(self) -> int:
        row = self.db.execute("SELECT v FROM cursor WHERE k = 'block'").fetchone()
        return int(row[0]) if row else self.deploy_block

    def _set_cursor(self, block: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO cursor VALUES ('block', ?)", (block,))
        self.db.commit()

    def _record_claim(self, claim_id: bytes, verdict: str, detail: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", (claim_id.hex(), verdict, detail))
        self.db.commit()

    def _record_game(self, game_id: int, claim_id: bytes, role: str, status: str, detail: str = "") -> None:
        self.db.execute("INSERT OR REPLACE INTO games VALUES (?, ?, ?, ?, ?)", (game_id, claim_id.hex(), role, status, detail))
        self.db.commit()

    def games(self, status: str | None = None) -> list[GameRecord]:
        """Persisted games (all, or those with ``status``)."""
        rows = self.db.execute("SELECT game_id, claim_id, role, status, detail FROM games ORDER BY game_id").fetchall()
        out = [GameRecord(int(g), bytes.fromhex(c), r, s, d) for g, c, r, s, d in rows]
        return [g for g in out if status is None or g.status == status]

    def verdicts(self) -> dict[bytes, tuple[str, str]]:
        """claim id → (verdict, detail) for every claim seen."""
        rows = self.db.execute("SELECT claim_id, verdict, detail FROM claims").fetchall()
        return {bytes.fromhex(c): (v, d) for c, v, d in rows}

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ fetching and re-execution

    def sources_for(self, claim_id: bytes) -> list[str]:
        """Where to fetch a claim's data: the ``--source`` URLs first, then the claim's own blob server
        (its ``daPointer`` resolved through ``DataAvailability.sourceOf``, protocol §7.1)."""
        urls = list(self.sources)
        if claim_id not in self._claim_sources:
            pointer = self.manager.roots_of(claim_id).da_pointer
            self._claim_sources[claim_id] = self.data.source_of(pointer)
        published = self._claim_sources[claim_id]
        if published is not None and published not in urls:
            urls.append(published)
        return urls

    def _get(self, claim_id: bytes, obj: str) -> bytes:
        errors = []
        urls = self.sources_for(claim_id)
        for url in urls:
            try:
                return fetch(url, self.account, self.chain_id, claim_id, obj)
            except CollabError as exc:
                errors.append(f"{url}: {exc}")
        reason = "; ".join(errors) or "its daPointer names no published blob server and no --source was given"
        raise NotFound(f"no source served {obj} of claim 0x{claim_id.hex()}: {reason}")

    def _fetch_claim(self, claim_id: bytes) -> Manifest:
        """Fetch and verify a claim's objects into the local store (once)."""
        try:
            return self.store.manifest(claim_id)
        except NotFound:
            pass
        manifest = Manifest.from_json(json.loads(self._get(claim_id, "manifest")))
        manifest.overrides = {}  # never take a claimer's "overrides": the reference is recomputed
        program = Program.from_bytes(self._get(claim_id, "0x" + manifest.program_root.hex()))
        if program.root != manifest.program_root:
            raise ProtocolViolation("served program does not open its root")
        self.store.put_program(program)
        for root in [*manifest.inputs.values(), *manifest.witnesses.values()]:
            if not self.store.has(root):
                self.store.put_tensor(tensor_from_bytes(self._get(claim_id, "0x" + root.hex()), root))
        self.store.put_manifest(claim_id, manifest)
        return manifest

    def reference(self, claim_id: bytes) -> Trace:
        """The honest trace of a claim (cached; rebuilt from the store after a restart)."""
        if claim_id not in self._traces:
            manifest = self._fetch_claim(claim_id)
            self._traces[claim_id] = reference_trace(self.store.get_program(manifest.program_root), manifest, self.store)
        return self._traces[claim_id]

    # ------------------------------------------------------------------ one pass

    def poll(self) -> list[str]:
        """Handle new claims and make one move in each open game; returns what happened."""
        events: list[str] = []
        head = int(self.w3.eth.block_number)
        start = self._cursor()
        if head >= start:
            for posted in self.manager.posted(from_block=start):
                events += self._new_claim(posted.claim_id, posted.claimer)
            self._set_cursor(head + 1)
        events += self._defend_own_claims()
        for rec in self.games("open"):
            events += self._play(rec)
        return events

    def run(self, interval: float = 2.0, once: bool = False) -> None:
        """Poll until interrupted (or once)."""
        while True:
            for e in self.poll():
                log.info("%s", e)
            if once:
                return
            time.sleep(interval)

    def challenge_one(self, claim_id: bytes, claimer: str) -> list[str]:
        """Re-execute one claim now (even if seen before without a game) and challenge it on a mismatch."""
        if self.verdicts().get(claim_id, ("", ""))[0] != "disagree":
            self.db.execute("DELETE FROM claims WHERE claim_id = ?", (claim_id.hex(),))
            self.db.commit()
        return self._new_claim(claim_id, claimer)

    def _new_claim(self, claim_id: bytes, claimer: str) -> list[str]:
        if claim_id in self.verdicts():
            return []
        tag = f"claim 0x{claim_id.hex()[:12]}"
        if claimer.lower() == self.account.address.lower():
            self._record_claim(claim_id, "own", "")
            return []
        if not self.manager.is_audience(claim_id, self.account.address):
            self._record_claim(claim_id, "not-audience", "")
            return [f"{tag}: not in its audience, skipped"]
        if self.manager.claim_status(claim_id) != ClaimStatus.PENDING:
            self._record_claim(claim_id, "closed", "")
            return []
        try:
            ref = self.reference(claim_id)
        except CollabError as exc:
            self._record_claim(claim_id, "unverified", str(exc))
            return [f"{tag}: cannot re-execute ({exc})"]
        claim = self.manager.get_claim(claim_id)
        ok_inputs = ref.input_root == claim.input_root and ref.program.step_tree.root == claim.step_tree_root
        if not ok_inputs:
            self._record_claim(claim_id, "unverified", "served program/inputs do not match the claim's roots")
            return [f"{tag}: served data does not match the claim's roots; not challenged"]
        if claim.trace_root == ref.root and claim.output_root == ref.output_root:
            self._record_claim(claim_id, "agree", "")
            return [f"{tag}: re-executed, agrees"]
        detail = (
            f"trace root differs (claimed 0x{claim.trace_root.hex()[:12]}, expected 0x{ref.root.hex()[:12]}); "
            f"output root {'differs' if claim.output_root != ref.output_root else 'agrees'}"
        )
        agent = ChallengerAgent(self.manager, self.game, ref)
        game_id = agent.challenge(claim_id)
        self._record_claim(claim_id, "disagree", detail)
        self._record_game(game_id, claim_id, "challenger", "open", detail)
        log.warning("%s: disagree: %s; challenged in game %d", tag, detail, game_id)
        return [f"{tag}: disagree ({detail}); challenged, game {game_id}"]

    def _defend_own_claims(self) -> list[str]:
        known = {g.game_id for g in self.games()}
        out = []
        for claim_id in self.store.claim_ids():
            try:
                claim = self.manager.get_claim(claim_id)
            except CollabError:
                continue
            if claim.claimer.lower() != self.account.address.lower():
                continue
            if self.data.open_challenges(claim_id):
                trace = self._own_trace(claim_id)
                agent = ClaimerAgent(self.manager, self.game, self.data, trace, job_id=b"\x00" * 32)
                for cid in agent.answer_data(claim_id):
                    out.append(f"claim 0x{claim_id.hex()[:12]}: answered data challenge {cid}")
            topic = "0x" + claim_id.hex()
            for e in self.manager._events("ChallengeOpened", from_block=self.deploy_block, topics=[None, topic]):
                gid = int(e.args["challengeId"])
                if gid not in known and int(e.args.get("kind", 0)) == 0:
                    self._record_game(gid, claim_id, "claimer", "open")
                    out.append(f"claim 0x{claim_id.hex()[:12]}: challenged in game {gid}; defending")
        return out

    def _own_trace(self, claim_id: bytes) -> Trace:
        """The trace this home posted for its claim (exactly as committed, from the store)."""
        if claim_id not in self._traces:
            self._traces[claim_id] = self.store.trace(claim_id)
        return self._traces[claim_id]

    def _play(self, rec: GameRecord) -> list[str]:
        g = self.game.get_game(rec.game_id)
        tag = f"game {rec.game_id}"
        if g.phase == Phase.RESOLVED:
            return [self._finish(rec, g)]
        if self.manager.claim_status(rec.claim_id) != ClaimStatus.PENDING:
            return [self._closed(rec)]
        try:
            if rec.role == "challenger":
                moved = ChallengerAgent(self.manager, self.game, self.reference(rec.claim_id)).act(rec.game_id)
            else:
                trace = self._own_trace(rec.claim_id)
                moved = ClaimerAgent(self.manager, self.game, self.data, trace, job_id=b"\x00" * 32, log2k=self.log2k).act(rec.game_id)
        except CollabError as exc:
            return [f"{tag}: move failed: {exc}"]
        g = self.game.get_game(rec.game_id)
        out = [f"{tag}: {moved}"] if moved else []
        if g.phase == Phase.RESOLVED:
            out.append(self._finish(rec, g))
        return out

    def _closed(self, rec: GameRecord) -> str:
        """The claim was decided by another challenge: this game takes no more moves (``GameClosed``).

        A challenger's bond comes back through ``refundChallenge`` (anyone may
        call it once the claim is rejected); the watcher calls it if nobody has
        yet, withdraws its credit and records the game as finished, so later
        passes neither move nor log it again.
        """
        status = self.manager.claim_status(rec.claim_id)
        detail = f"claim {status.name.lower()} by another challenge; game closed"
        if rec.role == "claimer":
            detail = f"defended claim {status.name.lower()} in another game; game closed"
        if rec.role == "challenger":
            if self.manager.get_challenge(rec.game_id).status == ChallengeStatus.OPEN and status == ClaimStatus.REJECTED:
                try:
                    self.manager.refund_challenge(rec.game_id)
                except CollabError as exc:  # a concurrent refund is fine; anything else is logged, not retried
                    detail += f" (refund: {exc})"
            refunded = self.manager.get_challenge(rec.game_id).status == ChallengeStatus.REFUNDED
            detail += f"; bond {'refunded' if refunded else 'not refunded'}{self._withdraw()}"
        self._record_game(rec.game_id, rec.claim_id, rec.role, "refunded" if rec.role == "challenger" else "lost", detail)
        msg = f"game {rec.game_id}: {detail}"
        log.warning("%s", msg)
        return msg

    def _withdraw(self) -> str:
        """Pull this account's ClaimManager credit (bond refunds, winnings), if any."""
        if self.manager.credit_of(self.account.address) == 0:
            return ""
        try:
            return f"; withdrew {self.manager.claim_credit()} wei"
        except CollabError as exc:
            return f"; credit not withdrawn ({exc})"

    def _finish(self, rec: GameRecord, g: Any) -> str:
        won = (not g.claimer_won) if rec.role == "challenger" else g.claimer_won
        detail = rec.detail
        if rec.role == "challenger":
            try:
                ref = self.reference(rec.claim_id)
                _, expected = ref.expected(g.step, g.element_index)
                detail = (
                    f"step {g.step} ({_op_name(ref, g.step)}), element {g.element_index}: "
                    f"expected 0x{expected.hex()}, claimed 0x{g.claimed_word.hex()}"
                )
            except Exception as exc:  # the explanation must not stop the bookkeeping
                detail = f"step {g.step}, element {g.element_index} ({exc})"
        self._record_game(rec.game_id, rec.claim_id, rec.role, "won" if won else "lost", detail)
        msg = f"game {rec.game_id} resolved: {rec.role} {'won' if won else 'lost'}; {detail}"
        log.warning("%s", msg)
        return msg


def _op_name(trace: Trace, step: int) -> str:
    from collab.fraudproof.program import Op

    op = trace.program.steps[step].op
    return Op(op).name if op in Op._value2member_map_ else str(op)


def reference_trace(program: Program, manifest: Manifest, store: Store) -> Trace:
    """The honest trace of a manifest's job, with the claimer's witnesses (protocol §3.5).

    A step with no valid output (an ``ASSERT_KTH`` over a wrong witness, an
    ill-formed step) gets a zero tensor of its declared header in the
    reference: whatever the claimer committed there is wrong, so the
    challenger's descent stops at that step and its one-step proof wins.
    """
    inputs = {n: store.get_tensor(r) for n, r in manifest.inputs.items()}
    witnesses = {i: store.get_tensor(r).data for i, r in manifest.witnesses.items()}
    ordered = [v for _, v in input_bundle(inputs)]
    values: list[Value] = list(ordered)
    overrides: dict[int, Value] = {}
    for i, step in enumerate(program.steps):
        try:
            if any(t >= len(values) for t in step.inputs):
                raise NoValidOutput(f"step {i} reads a later tensor")
            v = execute_step(step, [values[t] for t in step.inputs], witnesses.get(i))  # type: ignore[arg-type]
        except (NoValidOutput, BadInput) as exc:
            log.warning("step %d has no valid output (%s): the reference commits zeros there", i, exc)
            header = _header_or_zero(step.out_header)
            v = Value(header, np.zeros(header.shape, dtype=np.int64)) if header.domain != Domain.BUNDLE else _empty_bundle(header)
            overrides[i] = v
        values.append(v)
    return build_trace(program, inputs, witnesses, overrides)  # type: ignore[arg-type]


def _header_or_zero(word: bytes) -> TensorHeader:
    try:
        return TensorHeader.decode(word)
    except BadInput:
        return TensorHeader(Domain.FIXED, 0, ())


def _empty_bundle(header: TensorHeader) -> Value:
    zero = Value(TensorHeader(Domain.FIXED, 0, ()), np.zeros((), dtype=np.int64))
    return Value(header, None, tuple((i.to_bytes(32, "big"), zero) for i in range(header.numel)))


__all__ = ["GameRecord", "Watcher", "reference_trace"]
