"""The Ray tasks that play evaluation games: one batch of games between the same agents per task.

A batch shares its agents, so a network agent's leaves from every game in the batch go through one
forward pass (see orchestrator.play.evaluation). A task returns what it played and where; it stores
nothing itself: the TournamentActor stores each game once.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

import ray

from actors.tasks import load_model_here
from orchestrator.play.agents import AgentContext, make_agent
from orchestrator.play.evaluation import EvalGame, play_games
from orchestrator.play.games import GameCatalog


def task_device() -> str:
    """'cuda' only in a task Ray gave a GPU share, on a machine where torch can use CUDA: a node may
    declare GPUs (a logical resource) that torch cannot reach, and then its games run on the CPU."""
    if not (ray.is_initialized() and ray.get_gpu_ids()):
        return "cpu"
    import torch  # here, not at the top: tasks without a GPU share (most) never pay for it

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_agents(names: set[str], board_type: str, games: GameCatalog, seed: int) -> dict[str, Any]:
    device = task_device()
    # Evaluations run on any node: a model file this node lacks is fetched first (verified), then loaded.
    return {name: make_agent(name, AgentContext(board_type=board_type, seed=seed, games=games, device=device,
                                                load_model=lambda model_id: load_model_here(model_id, device)))
            for name in sorted(names)}


@ray.remote(num_cpus=1, max_retries=0)
def play_batch(board_type: str, games: GameCatalog, batch: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Play `batch` (EvalGame fields) together; returns the node it ran on, the GPU ids Ray gave it
    (asked for per task in `.options(num_gpus=...)`), and the games played."""
    evals = [EvalGame(**g) for g in batch]
    agents = build_agents({g.first for g in evals} | {g.second for g in evals}, board_type, games, seed)
    played = play_games(games.load(board_type), agents, evals)
    return {"node": ray.get_runtime_context().get_node_id(), "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
            "played": [asdict(p) for p in played]}
