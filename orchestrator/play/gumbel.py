"""Gumbel AlphaZero search (`gumbel_<sims>`), after Danihelka et al. 2022, "Policy improvement by planning with Gumbel".

At the root: sample Gumbel noise g(a), consider the m actions with the largest g(a) + logits(a)
(Gumbel-top-k, i.e. sampling without replacement from the prior), and split the simulation budget
among them by sequential halving, keeping after each phase the half with the largest
g + logits + sigma(q_hat). The move played is the argmax of that score among the most-visited
actions. Below the root the choice is deterministic: argmax of pi'(a) - N(a) / (1 + sum N), where
pi' = softmax(logits + sigma(completed Q)) is the improved policy, which is also the policy target
this agent reports.

Completed Q: visited actions keep their mean value; unvisited ones get the mixed value
approximation (Appendix D). Completed Q is min-max rescaled to [0, 1] per node, then
sigma(q) = (c_visit + max_b N(b)) * c_scale * q. Defaults follow DeepMind's mctx (c_visit = 50,
c_scale = 0.1). Sequential halving is driven by a precomputed schedule of "considered visit
counts", as in mctx: at simulation i the root may only pick an action whose visit count equals
schedule[i], which realises the halving phases without explicit bookkeeping and keeps working
when several leaves per game are in flight.

Without a model the logits are uniform (zeros) and leaf values come from random rollouts.

With tree reuse the root may carry visits from the previous search. Its Gumbel noise is drawn
afresh, the considered set is the top m of the new g + logits, and sequential halving runs over
this search's visits only (the schedule is computed for the remaining budget and compared with
the visits added since the search began), while the carried visits sharpen completed Q.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from orchestrator.play.agents import AgentContext, AgentSpec
from orchestrator.play.evaluators import LeafEvaluator, make_evaluator
from orchestrator.play.mcts import BatchedSearch, Node

_TINY = np.finfo(np.float64).tiny


@functools.lru_cache(maxsize=256)
def halving_schedule(considered: int, simulations: int) -> tuple[int, ...]:
    """The visit count an action must have to be picked at each root simulation.

    Each phase gives every remaining action max(1, floor(n / (ceil(log2 m) * remaining))) more
    visits, then halves the remaining actions (never below two), until the budget n is used.
    """
    if considered <= 1:
        return tuple(range(simulations))
    phases = math.ceil(math.log2(considered))
    sequence: list[int] = []
    visits = [0] * considered
    remaining = considered
    while len(sequence) < simulations:
        extra = max(1, simulations // (phases * remaining))
        for _ in range(extra):
            sequence.extend(visits[:remaining])
            for i in range(remaining):
                visits[i] += 1
        remaining = max(2, remaining // 2)
    return tuple(sequence[:simulations])


def completed_q(
    N: np.ndarray, W: np.ndarray, priors: np.ndarray, raw_value: float, c_visit: float, c_scale: float
) -> np.ndarray:
    """sigma(completed Q) for a node's children, from the point of view of the player to move there."""
    visited = N > 0
    q = W / np.maximum(N, 1.0)
    total = N.sum()
    if total > 0:
        weights = np.maximum(priors[visited], _TINY)
        mixed = (raw_value + total * float(weights @ q[visited]) / weights.sum()) / (total + 1.0)
    else:
        mixed = raw_value
    completed = np.where(visited, q, mixed)
    low = completed.min()
    completed = (completed - low) / max(completed.max() - low, 1e-8)
    return (c_visit + N.max()) * c_scale * completed


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


@dataclass(frozen=True)
class GumbelConfig:
    simulations: int
    max_considered: int = 16  # m: actions sampled at the root by Gumbel-top-k
    c_visit: float = 50.0
    c_scale: float = 0.1
    gumbel_scale: float = 1.0  # 0 makes the root choice deterministic (evaluation without sampling)
    leaves_per_game: int = 1
    max_batch: int | None = None
    virtual_loss: float = 1.0
    rollouts: int = 1
    tree_reuse: bool = False  # keep the subtree under the move played; its visits count toward `simulations`


@dataclass(frozen=True)
class _Root:
    gumbel: np.ndarray  # -inf outside the considered actions
    logits: np.ndarray
    schedule: tuple[int, ...]
    carried: np.ndarray  # root visits per action when the search began (non-zero for a reused root)


class GumbelAgent(BatchedSearch):
    """Gumbel root search over the shared lock-step loop; reports the improved policy pi' as its policy."""

    def __init__(self, name: str, evaluator: LeafEvaluator, config: GumbelConfig, seed: int = 0) -> None:
        super().__init__(
            name, evaluator, config.simulations, leaves_per_game=config.leaves_per_game,
            max_batch=config.max_batch, virtual_loss=config.virtual_loss, tree_reuse=config.tree_reuse, seed=seed,
        )
        self.config = config

    def _sigma(self, node: Node) -> np.ndarray:
        return completed_q(node.N, node.W, node.priors, float(node.value[node.player]), self.config.c_visit, self.config.c_scale)

    def init_root(self, root: Node, simulations: int) -> _Root:
        logits = np.log(np.maximum(root.priors, _TINY))
        gumbel = self.config.gumbel_scale * self.rng.gumbel(size=len(root.actions))
        considered = min(self.config.max_considered, len(root.actions))
        # Gumbel-top-k, made explicit: on a fresh root the first phase's argmax picks these same
        # actions, but on a reused root the carried Q values would otherwise bias the choice.
        top = np.argsort(-(gumbel + logits), kind="stable")[:considered]
        masked = np.full_like(gumbel, -np.inf)
        masked[top] = gumbel[top]
        return _Root(masked, logits - logits.max(), halving_schedule(considered, simulations), root.N.copy())

    def _root_scores(self, root: Node, data: _Root, considered_visit: float) -> np.ndarray:
        score = data.gumbel + data.logits + self._sigma(root)
        return np.where(root.N - data.carried == considered_visit, score, -np.inf)

    def choose_root(self, root: Node, data: _Root) -> int:
        # The simulation index is the number of this search's visits so far, pending (virtual) ones included.
        return int(self._root_scores(root, data, data.schedule[int((root.N - data.carried).sum())]).argmax())

    def choose(self, node: Node) -> int:
        N = node.N
        improved = _softmax(np.log(np.maximum(node.priors, _TINY)) + self._sigma(node))
        return int((improved - N / (1.0 + N.sum())).argmax())

    def decide(self, root: Node, data: _Root) -> tuple[int, dict[int, float]]:
        best = int(self._root_scores(root, data, (root.N - data.carried).max()).argmax())
        improved = _softmax(data.logits + self._sigma(root))
        return root.actions[best], {a: float(p) for a, p in zip(root.actions, improved)}


def build_gumbel(spec: AgentSpec, ctx: AgentContext, **options: Any) -> GumbelAgent:
    """`gumbel_<sims>` (uniform logits, rollout values) or `model:<id>+gumbel_<sims>`; `options` override `GumbelConfig`."""
    config = replace(GumbelConfig(simulations=spec.budget), **options)
    evaluator = make_evaluator(spec.model_id, ctx, rollouts=config.rollouts, seed=ctx.seed)
    return GumbelAgent(spec.name, evaluator, config, seed=ctx.seed)
