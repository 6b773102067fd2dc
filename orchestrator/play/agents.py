"""Agent names, the agent protocol, and construction of an agent from its name.

Names are `<kind>[_<budget>]` as the seed's examples use them, plus model and parameter forms:

    random                  uniform over legal moves
    heuristic               linear evaluation over observation features (+ shallow search)
    heuristic@<model_id>    the same with weights from a registered `agent_params` model
    mcts_<sims>             PUCT with random rollouts (network priors/values when a model is given)
    gumbel_<sims>           Gumbel AlphaZero root search (Gumbel-top-k, sequential halving)
    descent[_<iters>]       Cohen-Solal's Descent (unbounded best-first minimax with completion)
    minimax_<depth>         alpha-beta over the heuristic
    openspiel_mcts_<sims>   OpenSpiel's own C++ MCTSBot with random rollouts (a reference agent)
    model:<id>[+<search>]   a registered network driving a search, e.g. model:abc+gumbel_64;
                            an `nnue` model drives minimax, e.g. model:abc+minimax_3
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import pyspiel

from orchestrator.play.games import BUILTIN, GameCatalog

DEFAULT_MODEL_SEARCH = "gumbel_64"
MAX_BUDGET = 1_000_000

# kind -> (builder "module:function", whether the budget is required)
_BUILDERS: dict[str, tuple[str, bool]] = {
    "random": ("orchestrator.play.basic:build_random", False),
    "heuristic": ("orchestrator.play.heuristic:build_heuristic", False),
    "minimax": ("orchestrator.play.minimax:build_minimax", True),
    "descent": ("orchestrator.play.descent:build_descent", False),
    "mcts": ("orchestrator.play.mcts:build_mcts", True),
    "gumbel": ("orchestrator.play.gumbel:build_gumbel", True),
    "openspiel_mcts": ("orchestrator.play.openspiel_bots:build_openspiel_mcts", True),
}
_BUDGETLESS = {"random", "heuristic"}
_SEARCH_RE = re.compile(r"^(?P<kind>[a-z]+(?:_[a-z]+)*)(?:_(?P<budget>\d+))?(?:@(?P<params>[A-Za-z0-9._-]+))?$")
_MODEL_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

VALID_FORMS = (
    "random, heuristic, heuristic@<params_id>, mcts_<sims>, gumbel_<sims>, descent[_<iters>], "
    "minimax_<depth>, openspiel_mcts_<sims>, model:<id>[+<search>] (for example model:abc123+gumbel_64)"
)


class InvalidAgent(ValueError):
    """An agent name that does not parse; the message lists the valid forms."""


@dataclass(frozen=True)
class AgentSpec:
    kind: str
    budget: int | None = None
    model_id: str | None = None
    params_id: str | None = None

    @property
    def name(self) -> str:
        search = self.kind if self.budget is None else f"{self.kind}_{self.budget}"
        if self.params_id:
            search = f"{search}@{self.params_id}"
        return f"model:{self.model_id}+{search}" if self.model_id else search


@dataclass(frozen=True)
class Decision:
    """One move chosen by an agent, with the search's distribution over actions (sparse, sums to 1)."""

    action: int
    policy: dict[int, float]
    stats: dict[str, float] = field(default_factory=dict)


class Agent(Protocol):
    name: str

    def select_many(self, states: Sequence[pyspiel.State]) -> list[Decision]:
        """Choose a move in each state; batched agents evaluate the leaves of all states together."""


@dataclass(frozen=True)
class AgentContext:
    """What a builder may use: the game, a seed, a loader for registered models, the device, and the
    precision networks run in there (see orchestrator.nn.serving.serving_dtype)."""

    board_type: str
    seed: int = 0
    load_model: Callable[[str], Any] | None = None
    device: str = "cpu"
    games: GameCatalog = BUILTIN
    precision: str = "auto"


def _invalid(name: str, why: str) -> InvalidAgent:
    return InvalidAgent(f"invalid agent {name!r}: {why}; valid forms: {VALID_FORMS}")


def parse_agent(name: str) -> AgentSpec:
    if not isinstance(name, str) or not name.strip():
        raise _invalid(str(name), "empty name")
    text = name.strip()
    model_id = None
    if text.startswith("model:"):
        model_part, _, search = text[len("model:"):].partition("+")
        if not _MODEL_ID_RE.match(model_part):
            raise _invalid(name, "model id must be 1-128 of [A-Za-z0-9._-]")
        model_id, text = model_part, search or DEFAULT_MODEL_SEARCH
    match = _SEARCH_RE.match(text)
    if not match or match["kind"] not in _BUILDERS:
        raise _invalid(name, f"unknown search {text!r}")
    kind, budget, params_id = match["kind"], match["budget"], match["params"]
    if budget is not None and kind in _BUDGETLESS:
        raise _invalid(name, f"{kind} takes no budget")
    if budget is None and _BUILDERS[kind][1]:
        raise _invalid(name, f"{kind} needs a budget, as in {kind}_64")
    value = int(budget) if budget is not None else None
    if value is not None and not 1 <= value <= MAX_BUDGET:
        raise _invalid(name, f"budget must be between 1 and {MAX_BUDGET}")
    if params_id and kind != "heuristic":
        raise _invalid(name, "only heuristic takes @<params_id>")
    if model_id and kind in ("random", "heuristic", "openspiel_mcts"):
        raise _invalid(name, f"a model cannot drive {kind}")
    return AgentSpec(kind=kind, budget=value, model_id=model_id, params_id=params_id)


def make_agent(name: str | AgentSpec, ctx: AgentContext) -> Agent:
    spec = name if isinstance(name, AgentSpec) else parse_agent(name)
    module_name, function_name = _BUILDERS[spec.kind][0].split(":")
    builder = getattr(importlib.import_module(module_name), function_name)
    return builder(spec, ctx)
