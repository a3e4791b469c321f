"""Game agents: honest and configurably dishonest claimers and challengers (docs/protocol.md §5-§7).

An agent holds a committed :class:`~collab.fraudproof.trace.Trace` and plays
one move at a time through the contract clients (``act``), so tests,
``collab watch`` and benchmarks drive games the same way and decide when
chain time moves. Dishonesty is configured, not coded per scenario:

* a claimer's trace built with ``overrides`` (wrong element or op at any
  step) is a cheating claimer; ``post(output_root=...)`` posts a wrong output
  root; ``lazy`` never moves; ``withhold`` never answers data challenges;
* a challenger whose reference trace is wrong is a dishonest challenger (it
  picks by its wrong reference); ``lazy`` never moves after challenging;
* ``last_second=s`` (either side) holds every move until its clock has at
  most ``s`` seconds left, the behaviour the clock extension defends against.

An honest challenger picks the first child that differs from its reference
(§5.1), and builds the one-step proof against the *claimer's* trace tree: the
siblings right of the disputed path are the children the claimer revealed,
read back from ``ChildrenRevealed`` (§5.3, "who can build the proof").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from chain.client import TxResult
from chain.clients.bisection_game import BisectionGameClient, Game, Phase, RootProof, Side, StepProof
from chain.clients.claim_manager import ZERO_ADDRESS, Audience, ClaimInput, ClaimManagerClient, ClaimRoots
from chain.clients.data_availability import CommitmentKind, DataAvailabilityClient, TensorCommitment
from collab.errors import BadInput
from collab.fixedpoint import Domain
from collab.fraudproof.commitments import CHUNK_BYTES, MerkleTree, node_hash
from collab.fraudproof.program import Op, Step
from collab.fraudproof.trace import Committed, Trace, build_trace
from collab.fraudproof.vm import Value, execute_step

log = logging.getLogger(__name__)

ZERO32 = b"\x00" * 32


@dataclass
class GasLog:
    """Gas of every transaction an agent sent, by move kind (for reports and benchmarks)."""

    entries: list[tuple[str, int]] = field(default_factory=list)

    def add(self, kind: str, tx: TxResult) -> TxResult:
        """Record ``tx`` under ``kind`` and return it."""
        self.entries.append((kind, tx.gas_used))
        return tx

    def by_kind(self) -> dict[str, list[int]]:
        """Gas figures grouped by move kind."""
        out: dict[str, list[int]] = {}
        for kind, gas in self.entries:
            out.setdefault(kind, []).append(gas)
        return out


def _holding(game: BisectionGameClient, game_id: int, last_second: int) -> bool:
    """A last-second agent holds its move while more than ``last_second`` seconds are left."""
    if last_second <= 0:
        return False
    now = int(game.w3.eth.get_block("latest")["timestamp"])
    return game.deadline_of(game_id) - now > last_second


def _committed_by_root(trace: Trace, root: bytes) -> Committed | None:
    for c in [trace.bundle, *trace.inputs, *trace.outputs]:
        if c.root == root:
            return c
    return None


def build_step_proof(
    trace: Trace, step: int, element: int, trace_proof: Callable[[int], list[bytes]], claim_roots: ClaimRoots
) -> StepProof:
    """The ``proveStep`` argument for element ``element`` of ``step``, from ``trace``'s data.

    ``trace_proof(j)`` gives the single-leaf proof of trace leaf ``j`` against
    the claimer's trace root (the claimer's own tree, or the challenger's view of
    it); ``claim_roots`` are the roots the claim was posted with.
    """
    program = trace.program
    s = program.steps[step]
    n_in = program.n_inputs
    roots: list[RootProof] = []
    for t in s.inputs:
        if t < n_in:
            roots.append(RootProof(trace.bundle.data[64 * t : 64 * t + 32], trace.bundle.tree.proof(t)))
        elif t - n_in < step:
            roots.append(RootProof(ZERO32, trace_proof(t - n_in)))
        else:
            roots.append(RootProof(ZERO32, []))
    inputs = [i.as_tuple() for i in trace.one_step_inputs(step, element)]
    if s.op == Op.BUNDLE_GET and len(inputs) == len(s.inputs):
        # The selected entry does not exist: the step is ill formed, but the game still takes
        # exactly one extra input; an empty one lets the verifier rule NoValidValue.
        inputs.append((ZERO32, ZERO32, 0, b"", []))
    return StepProof(
        claim_roots.as_tuple(),
        s.descriptor, program.step_proof(step), trace.bundle.chunk_root, trace.bundle.header.encode(), roots, inputs
    )


class ClaimerAgent:
    """Posts a claim over ``trace`` and defends it (honestly, as far as its trace goes)."""

    def __init__(
        self,
        manager: ClaimManagerClient,
        game: BisectionGameClient,
        data: DataAvailabilityClient,
        trace: Trace,
        *,
        job_id: bytes,
        log2k: int = 1,
        lazy: bool = False,
        withhold: bool = False,
        last_second: int = 0,
        gas: GasLog | None = None,
    ) -> None:
        self.manager, self.game, self.data, self.trace = manager, game, data, trace
        self.job_id = job_id
        self.log2k = log2k
        self.lazy = lazy
        self.last_second = last_second
        self.withhold = withhold
        self.gas = gas if gas is not None else GasLog()
        self.claim_id: bytes | None = None

    def claim_input(
        self,
        *,
        output_root: bytes | None = None,
        audience: Audience = Audience.PUBLIC,
        participants: Sequence[str] = (),
        asset_id: int = 0,
        da_pointer: bytes = ZERO32,
        settlement_hook: str = ZERO_ADDRESS,
    ) -> ClaimInput:
        """The claim over this trace (``output_root`` overrides the honest one)."""
        t = self.trace
        n = len(t.program.steps)
        return ClaimInput(
            job_id=self.job_id,
            program_root=t.program.root,
            step_tree_root=t.program.step_tree.root,
            step_count=n,
            input_root=t.input_root,
            output_root=t.output_root if output_root is None else output_root,
            trace_root=t.root,
            last_leaf_proof=t.tree.proof(n - 1),
            log2k=self.log2k,
            audience=audience,
            participants=participants,
            asset_id=asset_id,
            da_pointer=da_pointer,
            settlement_hook=settlement_hook,
        )

    def post(self, **kwargs: object) -> bytes:
        """Post the claim (see :meth:`claim_input` for options); returns its id."""
        posted = self.manager.post_claim(self.claim_input(**kwargs))  # type: ignore[arg-type]
        if posted.tx is not None:
            self.gas.add("post", posted.tx)
        self.claim_id = posted.claim_id
        return posted.claim_id

    def act(self, game_id: int) -> str | None:
        """Make the claimer's move in ``game_id`` if it is its turn; returns the move kind."""
        g = self.game.get_game(game_id)
        if self.lazy or g.phase in (Phase.NONE, Phase.RESOLVED):
            return None
        if g.phase == Phase.STEP:
            return self._prove(game_id, g)
        if g.turn != Side.CLAIMER or _holding(self.game, game_id, self.last_second):
            return None
        if g.phase == Phase.TRACE:
            self.gas.add("reveal", self.game.reveal(game_id, self.trace.tree.children(g.depth, g.index, self.log2k)))
            return "reveal"
        out = self.trace.outputs[g.step]
        if g.phase == Phase.HEADER:
            children: list[bytes] = []
            chunk = b""
            if out.tree.depth > 0:
                children = out.tree.children(0, 0, self.log2k)
            elif out.header.domain != Domain.BUNDLE:
                chunk = out.leaf_bytes(0)
            self.gas.add("reveal_header", self.game.reveal_header(game_id, out.chunk_root, out.header.encode(), children, chunk))
            return "reveal_header"
        if g.phase == Phase.CHUNK:
            self.gas.add("reveal", self.game.reveal(game_id, out.tree.children(g.depth, g.index, self.log2k)))
            return "reveal"
        if g.phase == Phase.ELEMENT and not g.revealed:
            self.gas.add("reveal_chunk", self.game.reveal_chunk(game_id, out.leaf_bytes(g.index)))
            return "reveal_chunk"
        return None

    def _prove(self, game_id: int, g: Game) -> str | None:
        """In the step phase an honest claimer proves its own element right (anyone may prove)."""
        e = g.element_index
        verdict, expected = self.trace.expected(g.step, e)
        if verdict == 2 or (verdict == 0 and expected != g.claimed_word):
            return None  # its own data says the element is wrong: nothing to gain by proving
        proof = build_step_proof(self.trace, g.step, e, self.trace.tree.proof, self.manager.roots_of(g.claim_id))
        self.gas.add("prove_step", self.game.prove_step(game_id, proof))
        return "prove_step"

    def answer_data(self, claim_id: bytes) -> list[int]:
        """Answer every open data challenge of the claim (unless withholding); returns the ids answered."""
        if self.withhold:
            return []
        answered = []
        for cid in self.data.open_challenges(claim_id):
            d = self.data.get_data_challenge(cid)
            c = _committed_by_root(self.trace, d.tensor_root)
            if c is None:
                log.warning("data challenge %d names a tensor this claimer does not hold", cid)
                continue
            if d.chunk_index >= (1 << c.tree.depth):
                data, proof = b"", []
            else:
                data, proof = c.leaf_bytes(d.chunk_index), c.tree.proof(d.chunk_index)
            self.gas.add("da_respond", self.data.respond(cid, c.chunk_root, c.header.encode(), data, proof))
            answered.append(cid)
        return answered


class ChallengerAgent:
    """Disputes claims that disagree with its reference trace, by the pick rule of §5.1."""

    def __init__(
        self,
        manager: ClaimManagerClient,
        game: BisectionGameClient,
        reference: Trace,
        *,
        lazy: bool = False,
        last_second: int = 0,
        gas: GasLog | None = None,
    ) -> None:
        self.manager, self.game, self.reference = manager, game, reference
        self.lazy = lazy
        self.last_second = last_second
        self.gas = gas if gas is not None else GasLog()
        self.reasons: list[str] = []

    def disagrees(self, claim_id: bytes) -> bool:
        """Whether the posted claim differs from the reference (trace root or output)."""
        c = self.manager.get_claim(claim_id)
        return c.trace_root != self.reference.root or c.output_root != self.reference.output_root

    def challenge(self, claim_id: bytes) -> int:
        """Open a game against the claim; returns the game id."""
        game_id, tx = self.manager.challenge(claim_id)
        self.gas.add("challenge", tx)
        return game_id

    def challenge_input(self, claim_id: bytes, tensor_id: int, chunk_index: int = 0) -> int:
        """Open a data challenge for chunk ``chunk_index`` of claim input ``tensor_id``."""
        ref = self.reference
        if not 0 <= tensor_id < ref.program.n_inputs:
            raise BadInput(f"tensor {tensor_id} is not a claim input")
        commitment = TensorCommitment(
            CommitmentKind.INPUT_ENTRY,
            tensor_id,
            ref.bundle.data[64 * tensor_id : 64 * tensor_id + 32],
            ref.bundle.chunk_root,
            ref.bundle.header.encode(),
            ref.bundle.tree.proof(tensor_id),
        )
        cid, tx = self.manager.challenge_data(claim_id, ref.inputs[tensor_id].root, chunk_index, commitment.encode())
        self.gas.add("da_challenge", tx)
        return cid

    def act(self, game_id: int) -> str | None:
        """Make the challenger's move in ``game_id`` if it is its turn; returns the move kind."""
        g = self.game.get_game(game_id)
        if self.lazy or g.phase in (Phase.NONE, Phase.RESOLVED) or g.turn != Side.CHALLENGER:
            return None
        if _holding(self.game, game_id, self.last_second):
            return None
        if g.phase in (Phase.TRACE, Phase.CHUNK) and g.revealed:
            children = self.game.last_reveal(game_id)
            choice = self._first_difference(g, children)
            self.gas.add("pick", self.game.pick(game_id, children, choice))
            return "pick"
        if g.phase == Phase.ELEMENT and g.revealed:
            chunk = self.game.revealed_chunk(game_id)
            mine = self.reference.outputs[g.step].leaf_bytes(g.index) if self._same_header(g) else b""
            u = next((j for j in range(CHUNK_BYTES // 8) if chunk[8 * j : 8 * j + 8] != mine[8 * j : 8 * j + 8]), 0)
            self.gas.add("pick_element", self.game.pick_element(game_id, chunk, u))
            return "pick_element"
        if g.phase == Phase.STEP:
            proof = build_step_proof(
                self.reference, g.step, g.element_index, self._claimer_view(game_id, g), self.manager.roots_of(g.claim_id)
            )
            self.gas.add("prove_step", self.game.prove_step(game_id, proof))
            return "prove_step"
        return None

    def _same_header(self, g: Game) -> bool:
        return g.step < len(self.reference.outputs) and self.reference.outputs[g.step].header.encode() == g.header

    def _first_difference(self, g: Game, children: list[bytes]) -> int:
        """§5.1: the first child that differs from the reference; child 0 under a wrong header."""
        m = (len(children) - 1).bit_length()
        if g.phase == Phase.TRACE:
            tree: MerkleTree = self.reference.tree
        elif self._same_header(g):
            tree = self.reference.outputs[g.step].tree
        else:
            self.reasons.append(f"step {g.step}: the revealed output header differs from the reference")
            return 0
        mine = tree.children(g.depth, g.index, m)
        for j, (a, b) in enumerate(zip(children, mine)):
            if a != b:
                return j
        log.info("no revealed child differs from the reference at depth %d index %d; picking 0", g.depth, g.index)
        return 0

    def _claimer_view(self, game_id: int, g: Game) -> Callable[[int], list[bytes]]:
        """Single-leaf proofs against the claimer's trace tree: revealed nodes where known, the reference elsewhere."""
        known: dict[tuple[int, int], bytes] = {}
        for r in self.game.reveals(game_id):
            if int(r["phase"]) != Phase.TRACE:
                continue
            children = r["children"]
            m = (len(children) - 1).bit_length()
            d, i = int(r["depth"]), int(r["index"])
            for j, c in enumerate(children):
                known[(d + m, (i << m) + j)] = c
        tree = self.reference.tree
        depth = tree.depth
        budget = g.log2k

        def node(d: int, i: int, left: int) -> bytes | None:
            if (d, i) in known:
                return known[(d, i)]
            if left == 0 or d >= depth:
                return None
            a, b = node(d + 1, 2 * i, left - 1), node(d + 1, 2 * i + 1, left - 1)
            return node_hash(a, b) if a is not None and b is not None else None

        def proof(leaf: int) -> list[bytes]:
            out, idx = [], leaf
            for level in range(depth):
                d = depth - level
                sib = idx ^ 1
                out.append(node(d, sib, budget) or tree.node(d, sib))
                idx >>= 1
            return out

        return proof


# --------------------------------------------------------------------------- dishonest traces


def wrong_element_trace(trace: Trace, inputs: Mapping[str, Value], step: int, element: int, delta: int = 1) -> Trace:
    """The trace of a claimer that changes one element of ``step``'s output (later steps follow from it)."""
    v = trace.outputs[step].value
    flat = v.flat().copy()
    if not 0 <= element < flat.size:
        raise BadInput(f"step {step} has {flat.size} elements, not {element + 1}")
    changed = int(flat[element]) + delta
    if not -(1 << 63) <= changed < (1 << 63):
        changed = int(flat[element]) - delta
    flat[element] = np.int64(changed)
    return build_trace(trace.program, inputs, overrides={step: Value(v.header, flat.reshape(v.header.shape))})


def wrong_op_trace(trace: Trace, inputs: Mapping[str, Value], step: int, op: int) -> Trace:
    """The trace of a claimer that runs ``op`` instead of the program's op at ``step`` (same inputs and header)."""
    s = trace.program.steps[step]
    wrong = Step(int(op), s.inputs, s.out_header, s.params)
    values = [trace.tensor(t).value for t in s.inputs]
    return build_trace(trace.program, inputs, overrides={step: execute_step(wrong, values)})


def play(
    claimer: ClaimerAgent, challenger: ChallengerAgent, game_id: int, *, max_moves: int = 500, on_move: Callable[[str], None] | None = None
) -> Game:
    """Alternate the two agents until the game resolves or neither moves; returns the final game."""
    for _ in range(max_moves):
        moved = claimer.act(game_id) or challenger.act(game_id)
        if on_move is not None and moved:
            on_move(moved)
        g = claimer.game.get_game(game_id)
        if g.phase == Phase.RESOLVED or not moved:
            return g
    return claimer.game.get_game(game_id)


__all__ = [
    "ChallengerAgent",
    "ClaimerAgent",
    "GasLog",
    "build_step_proof",
    "play",
    "wrong_element_trace",
    "wrong_op_trace",
]
