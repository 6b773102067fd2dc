"""The CMA-ES tunables catalogue: for each agent kind, the parameters CMA-ES may tune, their
ranges and defaults, and how to build that agent with chosen values.

Wired here, beside the other catalogues, so that `orchestrator.learn.cmaes` names no agent module:
it takes this mapping as an argument. A search's defaults are read from its own config dataclass,
so a run starts from what the agent does today.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Callable, Mapping

from orchestrator.learn.cmaes import Tunable
from orchestrator.play.gumbel import GumbelConfig, build_gumbel
from orchestrator.play.heuristic import HEURISTIC_PARAMS, make_heuristic_agent
from orchestrator.play.mcts import MCTSConfig, build_mcts


def _search(config_type: type, ranges: Mapping[str, tuple[float, float]], builder: Callable[..., Any]) -> Tunable:
    defaults = {f.name: f.default for f in fields(config_type)}
    return Tunable(params={name: (low, high, float(defaults[name])) for name, (low, high) in ranges.items()},
                   build=lambda spec, ctx, values: builder(spec, ctx, **values))


CMAES_TUNABLES: Mapping[str, Tunable] = {
    "heuristic": Tunable(params=dict(HEURISTIC_PARAMS),
                         build=lambda spec, ctx, values: make_heuristic_agent(values, ctx.seed)),
    "mcts": _search(MCTSConfig, {"c_puct": (0.1, 8.0)}, build_mcts),
    "gumbel": _search(GumbelConfig, {"c_visit": (1.0, 200.0), "c_scale": (0.01, 1.0)}, build_gumbel),
}
