"""Batched PUCT Monte Carlo tree search (`mcts_<sims>`), and the lock-step search loop it shares with Gumbel.

`select_many(states)` grows one tree per given state and runs their simulations in lock-step:
each round descends every tree to a leaf (or `leaves_per_game` leaves, spread apart by virtual
loss), then evaluates all new leaves of all games in one evaluator call, so a network sees batches
of about `len(states) * leaves_per_game` positions. `max_batch=1` evaluates one leaf per call,
which is the unbatched baseline the benchmark compares against. With an asynchronous evaluator
(a served network) the games split into two groups whose rounds alternate, so the search and the
server work at the same time (see `_rounds`).

Per node the statistics of the children are kept per child (visits N, value sums W from the
point of view of the player to move there, and Q and N + 1 kept beside them for PUCT's selection):
numpy arrays for Gumbel, whose selection is whole-array arithmetic, and Python lists for PUCT
(`PUCTNode`), whose selection and backups touch a few elements each, where numpy's per-call cost
is most of the work. A node copies its parent's state once, when it is created (`State.child`),
and asks for its legal actions once, when it is expanded. Values are backed up as per-player vectors and each node
credits the component of its own player, so two-player and n-player zero-sum games need no sign
flipping.

Tree reuse (`tree_reuse=True`): the searched trees of the last `select_many` are kept, keyed by the
action history of their position. A later state whose history extends one of those histories
starts from the subtree reached by following the extra actions (the move played, and any moves
made since), so the visits already spent below that move are not spent again: the budget counts
the root's visits, carried ones included, and only the difference is simulated. Each kept tree
serves at most one later state, so two games never share nodes.
"""
from __future__ import annotations

import abc
import math
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np
import pyspiel

from orchestrator.play.agents import AgentContext, AgentSpec, Decision
from orchestrator.play.evaluators import LeafEvaluator, make_evaluator


class Node:
    """A search-tree node; its children's statistics are arrays indexed like `actions`.

    Besides visits N and value sums W, a node keeps Q = W / max(N, 1) and N + 1 per child, updated
    in place by the backups, so PUCT's selection, the hottest line of the search, costs four array
    operations instead of seven (the values are the same floats those seven would give).
    """

    __slots__ = (
        "state", "player", "terminal", "returns", "actions", "priors", "value", "N", "W", "Q", "N1", "children", "visits",
    )

    def __init__(self, state: pyspiel.State) -> None:
        self.state = state
        self.terminal = state.is_terminal()
        self.player = state.current_player()
        self.returns: list[float] | None = state.returns() if self.terminal else None
        self.actions: list[int] | None = None  # None until the evaluator has seen this node
        self.priors: np.ndarray | None = None
        # The evaluator's per-player value of this node, as Python floats: the backups do scalar
        # arithmetic with it, where numpy scalars are several times slower.
        self.value: list[float] | None = None
        self.N: np.ndarray | None = None
        self.W: np.ndarray | None = None
        self.Q: np.ndarray | None = None
        self.N1: np.ndarray | None = None
        self.children: list[Node | None] | None = None
        self.visits = 0

    def expand(self, actions: list[int], priors: np.ndarray, value: list[float]) -> None:
        count = len(actions)
        self.actions = actions
        self.priors = priors
        self.value = value
        self.N = np.zeros(count)
        self.W = np.zeros(count)
        self.Q = np.zeros(count)
        self.N1 = self.N + 1.0
        self.children = [None] * count

    def update(self, index: int, visits: float, value: float) -> None:
        """Add `visits` (1, or 0 when a virtual loss already counted it) and `value` to child `index`."""
        n = self.N.item(index) + visits
        w = self.W.item(index) + value
        self.N[index] = n
        self.W[index] = w
        self.Q[index] = w / max(n, 1.0)
        self.N1[index] = n + 1.0


class PUCTNode(Node):
    """A node whose per-child statistics and priors are lists of Python floats (the same values)."""

    __slots__ = ()

    def expand(self, actions: list[int], priors: np.ndarray, value: list[float]) -> None:
        count = len(actions)
        self.actions = actions
        self.priors = priors.tolist()
        self.value = value
        self.N = [0.0] * count
        self.W = [0.0] * count
        self.Q = [0.0] * count
        self.N1 = [1.0] * count
        self.children = [None] * count

    def update(self, index: int, visits: float, value: float) -> None:
        n = self.N[index] + visits
        w = self.W[index] + value
        self.N[index] = n
        self.W[index] = w
        self.Q[index] = w / max(n, 1.0)
        self.N1[index] = n + 1.0


# Leaves whose evaluation was asked for: the nodes, their legal actions, and the call that gives the answer.
_Request = tuple[list[Node], list[list[int]], Callable[[], tuple[Sequence[np.ndarray], np.ndarray]]]


class BatchedSearch(abc.ABC):
    """Lock-step simulations over many trees; subclasses pick children and the final move."""

    node_type: type[Node] = Node

    def __init__(
        self,
        name: str,
        evaluator: LeafEvaluator,
        simulations: int,
        *,
        leaves_per_game: int = 1,
        max_batch: int | None = None,
        virtual_loss: float = 1.0,
        tree_reuse: bool = False,
        seed: int = 0,
    ) -> None:
        if simulations < 1 or leaves_per_game < 1 or (max_batch is not None and max_batch < 1):
            raise ValueError("simulations, leaves_per_game and max_batch must be >= 1")
        self.name = name
        self.evaluator = evaluator
        self.simulations = simulations
        self.leaves_per_game = leaves_per_game
        self.max_batch = max_batch
        self.virtual_loss = virtual_loss
        self.tree_reuse = tree_reuse
        self.rng = np.random.default_rng(seed)
        # The expanded roots of the last select_many by the history of their position (reuse only).
        self._trees: dict[tuple[int, ...], list[Node]] = {}

    # -- hooks -------------------------------------------------------------------------------
    def init_root(self, root: Node, simulations: int) -> Any:
        """Per-search root data (noise, schedules) handed back to `choose_root` and `decide`.

        `simulations` is this search's budget: less than the agent's when the root carries visits."""
        return None

    def choose_root(self, root: Node, data: Any) -> int:
        return self.choose(root)

    @abc.abstractmethod
    def choose(self, node: Node) -> int:
        """The action to descend through at a non-root node."""

    @abc.abstractmethod
    def decide(self, root: Node, data: Any) -> tuple[int, dict[int, float]]:
        """The move played and the policy recorded, once the simulations are done."""

    # -- the loop ----------------------------------------------------------------------------
    def select_many(self, states: Sequence[pyspiel.State]) -> list[Decision]:
        started = time.perf_counter()
        calls_before, leaves_before = self.evaluator.calls, self.evaluator.leaves
        histories = [tuple(state.history()) for state in states] if self.tree_reuse else []
        roots = self._roots(states, histories)
        decisions: list[Decision | None] = [None] * len(roots)
        searched, slots = [], []
        for i, root in enumerate(roots):
            if root.terminal:
                raise ValueError(f"{self.name}: cannot choose a move in a terminal state")
            actions = root.state.legal_actions()
            if len(actions) == 1:  # a forced move needs no search
                decisions[i] = Decision(actions[0], {actions[0]: 1.0}, {"simulations": 0.0})
            else:
                searched.append(root)
                slots.append(i)
        self._evaluate([root for root in searched if root.actions is None])  # a reused root is expanded
        # A reused root lies below a root searched with this budget, so it carries fewer visits than the budget.
        carried = [root.visits for root in searched]
        budgets = [self.simulations - visits for visits in carried]
        data = [self.init_root(root, budget) for root, budget in zip(searched, budgets)]
        depth = [0] * len(searched)
        left = list(budgets)  # simulations not yet started, per game
        if len(searched) == 1 and self.leaves_per_game == 1:
            depth[0] = self._search_one(searched[0], data[0], budgets[0])
        elif searched:
            self._rounds(searched, data, left, depth)
        if self.tree_reuse:
            for history, root in zip(histories, roots):
                if root.actions is not None:  # a fresh root of a forced move was never expanded: nothing to keep
                    self._trees.setdefault(history, []).append(root)
        calls = self.evaluator.calls - calls_before
        leaves = self.evaluator.leaves - leaves_before
        common = {
            "network_calls": float(calls),
            "leaves_per_call": leaves / calls if calls else 0.0,
            "search_s": time.perf_counter() - started,
        }
        for g, root in enumerate(searched):
            action, policy = self.decide(root, data[g])
            stats = {
                "simulations": float(budgets[g]), "carried_simulations": float(carried[g]),
                "mean_depth": depth[g] / budgets[g], **common,
            }
            decisions[slots[g]] = Decision(action, policy, stats)
        return decisions  # type: ignore[return-value]

    def _roots(self, states: Sequence[pyspiel.State], histories: list[tuple[int, ...]]) -> list[Node]:
        """A root per state: a kept subtree of the same position where there is one, else a fresh node."""
        if not self.tree_reuse:
            return [self.node_type(state) for state in states]  # never mutated: children are copies
        trees, self._trees = self._trees, {}  # unclaimed trees are dropped before this search grows new ones
        lengths = sorted({len(history) for history in trees}, reverse=True)  # the closest ancestor first
        roots = []
        for state, history in zip(states, histories):
            root = None
            for length in lengths:
                candidates = trees.get(history[:length]) if length < len(history) else None
                if candidates and (root := _subtree(candidates[-1], history[length:])) is not None:
                    candidates.pop()
                    break
            # A fresh root copies the state, which the caller is about to play on, so the tree can be kept.
            roots.append(self.node_type(state.clone()) if root is None else root)
        return roots

    def _rounds(self, searched: list[Node], data: list[Any], left: list[int], depth: list[int]) -> None:
        """Rounds of simulations until every game has spent its budget (`left`, per game). A round of a
        group of games descends each of them to `leaves_per_game` leaves, has the new leaves evaluated
        together, then backs up. Games never share nodes, so a game's rounds depend on its own
        answers only: with an evaluator that answers asynchronously (a served network), the games
        split into two groups whose rounds alternate, and one group's leaves are evaluated while
        the other group descends and backs up; each game's search is the one lock-step gives."""
        everyone = list(range(len(searched)))
        if getattr(self.evaluator, "asynchronous", False) and len(everyone) > 1:
            groups = [everyone[0::2], everyone[1::2]]
        else:
            groups = [everyone]
        flights = deque(self._launch(group, searched, data, left, depth) for group in groups)
        while flights:
            group, pending, requests = flights.popleft()
            self._expand_answered(requests)
            for path, leaf, virtual in pending:
                (self._backup_over_virtual_loss if virtual else self._backup)(path, leaf.value)
            group = [g for g in group if left[g]]
            if group:
                flights.append(self._launch(group, searched, data, left, depth))

    def _launch(self, group: list[int], searched: list[Node], data: list[Any], left: list[int], depth: list[int]
                ) -> tuple[list[int], list[tuple[list[tuple[Node, int]], Node, bool]], list[_Request]]:
        """One round's descents for the games of `group`, and the evaluation of their new leaves asked for."""
        descend, backup = self._descend, self._backup
        pending: list[tuple[list[tuple[Node, int]], Node, bool]] = []
        for g in group:
            root, root_data = searched[g], data[g]
            per_game = min(self.leaves_per_game, left[g])
            left[g] -= per_game
            virtual = per_game > 1
            for _ in range(per_game):
                path, leaf = descend(root, root_data)
                depth[g] += len(path)
                if leaf.terminal:
                    backup(path, leaf.returns)
                else:
                    if virtual:
                        self._add_virtual_loss(path)
                    pending.append((path, leaf, virtual))
        leaves = [leaf for _, leaf, _ in pending]
        # A leaf reached twice in one round (possible with virtual loss only) is evaluated once.
        nodes = list({id(leaf): leaf for leaf in leaves}.values()) if self.leaves_per_game > 1 else leaves
        return group, pending, self._request(nodes)

    def _descend(self, root: Node, data: Any) -> tuple[list[tuple[Node, int]], Node]:
        choose, make = self.choose, self.node_type
        node = root
        index = self.choose_root(root, data)
        path = [(node, index)]
        while True:
            child = node.children[index]
            if child is None:
                child = node.children[index] = make(node.state.child(node.actions[index]))
                return path, child
            if child.terminal or child.actions is None:  # a terminal, or a leaf already awaiting evaluation
                return path, child
            node = child
            index = choose(node)
            path.append((node, index))

    def _search_one(self, root: Node, data: Any, simulations: int) -> int:
        """The loop above for one game and one leaf per round, without its per-round lists: the same
        descents, evaluations and backups in the same order. Returns the summed depth of the descents."""
        descend, backup = self._descend, self._backup
        depth = 0
        for _ in range(simulations):
            path, leaf = descend(root, data)
            depth += len(path)
            if not leaf.terminal:
                self._evaluate([leaf])
            backup(path, leaf.returns if leaf.terminal else leaf.value)
        return depth

    def _evaluate(self, nodes: list[Node]) -> None:
        self._expand_answered(self._request(nodes))

    def _request(self, nodes: list[Node]) -> list[_Request]:
        """The evaluation of `nodes` asked for, in chunks of at most `max_batch`: answered already by
        a synchronous evaluator, on its way from an asynchronous one."""
        requests = []
        size = self.max_batch or len(nodes) or 1
        asynchronous = getattr(self.evaluator, "asynchronous", False)
        for start in range(0, len(nodes), size):
            chunk = nodes[start:start + size]
            legal = [node.state.legal_actions() for node in chunk]
            states = [node.state for node in chunk]
            if asynchronous:
                answer = self.evaluator.evaluate_async(states, legal)
            else:
                result = self.evaluator.evaluate(states, legal)
                answer = lambda result=result: result  # noqa: E731 (answered already)
            requests.append((chunk, legal, answer))
        return requests

    @staticmethod
    def _expand_answered(requests: list[_Request]) -> None:
        for chunk, legal, answer in requests:
            priors, values = answer()
            for node, actions, prior, value in zip(chunk, legal, priors, values.tolist()):
                node.expand(actions, prior, value)

    @staticmethod
    def _backup(path: list[tuple[Node, int]], values: Sequence[float]) -> None:
        for node, index in path:  # Node.update, inlined: this runs for every node of every simulation
            n = node.N.item(index) + 1.0
            w = node.W.item(index) + values[node.player]
            node.N[index] = n
            node.W[index] = w
            node.Q[index] = w / n
            node.N1[index] = n + 1.0
            node.visits += 1

    def _add_virtual_loss(self, path: list[tuple[Node, int]]) -> None:
        # Count the pending visit as a loss for the mover so sibling descents in this round look elsewhere.
        loss = self.virtual_loss
        for node, index in path:
            node.update(index, 1.0, -loss)
            node.visits += 1

    def _backup_over_virtual_loss(self, path: list[tuple[Node, int]], values: Sequence[float]) -> None:
        # The visit was already counted by the virtual loss; swap the loss for the real value.
        loss = self.virtual_loss
        for node, index in path:
            node.update(index, 0.0, loss + values[node.player])


def _subtree(node: Node, actions: tuple[int, ...]) -> Node | None:
    """The expanded node reached from `node` by playing `actions`, or None where the search never went."""
    for action in actions:
        if node.actions is None:
            return None
        child = node.children[node.actions.index(action)]
        if child is None:
            return None
        node = child
    return node if node.actions is not None else None


@dataclass(frozen=True)
class MCTSConfig:
    simulations: int
    c_puct: float = 1.5
    dirichlet_alpha: float = 0.3
    dirichlet_epsilon: float = 0.0  # > 0 mixes Dirichlet noise into the root priors (self-play)
    leaves_per_game: int = 1
    max_batch: int | None = None  # 1 = one leaf per evaluator call
    virtual_loss: float = 1.0
    rollouts: int = 1  # random playouts per leaf when there is no network
    tree_reuse: bool = False  # keep the subtree under the move played; its visits count toward `simulations`


class MCTSAgent(BatchedSearch):
    """PUCT: argmax Q + c_puct * P * sqrt(N_parent + 1) / (1 + N); unvisited children have Q = 0."""

    node_type = PUCTNode

    def __init__(self, name: str, evaluator: LeafEvaluator, config: MCTSConfig, seed: int = 0) -> None:
        super().__init__(
            name, evaluator, config.simulations, leaves_per_game=config.leaves_per_game,
            max_batch=config.max_batch, virtual_loss=config.virtual_loss, tree_reuse=config.tree_reuse, seed=seed,
        )
        self.config = config
        self.c_puct = config.c_puct

    def init_root(self, root: Node, simulations: int) -> None:
        epsilon = self.config.dirichlet_epsilon
        if epsilon > 0:
            noise = self.rng.dirichlet([self.config.dirichlet_alpha] * len(root.actions))
            root.priors = ((1 - epsilon) * np.asarray(root.priors) + epsilon * noise).tolist()

    def choose(self, node: Node) -> int:
        # The hottest line of the search: Q and N + 1 are kept by the backups. The same floats as
        # W / max(N, 1) + c * sqrt(n + 1) * P / (N + 1), and the first of equal scores, as argmax.
        scale = self.c_puct * math.sqrt(node.visits + 1)
        scores = [q + scale * p / n1 for q, p, n1 in zip(node.Q, node.priors, node.N1)]
        return scores.index(max(scores))

    @staticmethod
    def _backup(path: list[tuple[Node, int]], values: Sequence[float]) -> None:
        for node, index in path:  # PUCTNode.update, inlined: this runs for every node of every simulation
            N = node.N
            n = N[index] + 1.0
            w = node.W[index] + values[node.player]
            N[index] = n
            node.W[index] = w
            node.Q[index] = w / n
            node.N1[index] = n + 1.0
            node.visits += 1

    def _search_one(self, root: Node, data: Any, simulations: int) -> int:
        """With random rollouts, a leaf becomes a node only when a search reaches it a second time,
        as in OpenSpiel's MCTSBot: a first visit plays out from a fresh copy of the position and
        keeps nothing, which saves the node, its legal actions and a copy for its playout on every
        leaf that is never reached again (most of them). The statistics are those of the loop above:
        an expansion gives the uniform priors a rollout evaluator gives, a node's own value is never
        read by PUCT, and the playouts draw from the same generators in the same order."""
        playout = getattr(self.evaluator, "playout", None)
        if playout is None:
            return super()._search_one(root, data, simulations)
        uniform, choose, backup, make = self.evaluator.uniform, self.choose, self._backup, self.node_type
        depth = 0
        for _ in range(simulations):
            node, index = root, self.choose_root(root, data)
            path = [(node, index)]
            while True:
                child = node.children[index]
                if child is None:
                    if not node.N[index]:
                        position = node.state.child(node.actions[index])
                        value = position.returns() if position.is_terminal() else playout(position)
                        break
                    child = node.children[index] = make(node.state.child(node.actions[index]))
                    if not child.terminal:
                        actions = child.state.legal_actions()
                        child.expand(actions, uniform(len(actions)), None)
                if child.terminal:
                    value = child.returns
                    break
                node = child
                index = choose(node)
                path.append((node, index))
            depth += len(path)
            backup(path, value)
        return depth

    def decide(self, root: Node, data: None) -> tuple[int, dict[int, float]]:
        N = np.array(root.N)
        q = np.array(root.W) / np.maximum(N, 1.0)
        # Most visits wins; |q| <= 1 so the small q term only breaks ties between equal counts.
        best = int(np.argmax(N + 1e-3 * q))
        total = N.sum()
        policy = {root.actions[i]: float(N[i] / total) for i in np.flatnonzero(N)}
        return root.actions[best], policy


def build_mcts(spec: AgentSpec, ctx: AgentContext, **options: Any) -> MCTSAgent:
    """`mcts_<sims>` (random rollouts) or `model:<id>+mcts_<sims>`; `options` override `MCTSConfig` fields."""
    config = replace(MCTSConfig(simulations=spec.budget), **options)
    evaluator = make_evaluator(spec.model_id, ctx, rollouts=config.rollouts, seed=ctx.seed)
    return MCTSAgent(spec.name, evaluator, config, seed=ctx.seed)
