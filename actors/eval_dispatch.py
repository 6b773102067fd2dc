"""The evaluation games in flight as Ray tasks: the TournamentActor's one seam to Ray's scheduler.

`GameTasks` launches `play_batch` tasks round-robin over the alive Ray nodes with CPUs (pinned
hard for a tournament spread over every node, soft otherwise), remembers which run and games each
task carries, and keeps per-run progress (games dispatched and done per node, games per second).
Nothing here survives a restart, and nothing needs to: the stored game records say what is done,
and a game whose task was lost is simply handed out again. Not thread-safe on its own; the actor
calls it under its lock.
"""
from __future__ import annotations

import time
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.eval_tasks import play_batch
from orchestrator.play.eval_placement import BatchPlan, batch_plan, uses_network
from orchestrator.play.evaluation import EvalGame
from orchestrator.play.evaluation_runs import derived_seed
from orchestrator.play.games import GameCatalog

Target = tuple[str, float, float]  # (Ray node id, CPUs, GPUs)


def alive_nodes() -> list[Target]:
    """The alive Ray nodes that can play, sorted so the round-robin is stable."""
    return sorted((n["NodeID"], n["Resources"]["CPU"], n["Resources"].get("GPU", 0.0)) for n in ray.nodes()
                  if n["Alive"] and n["Resources"].get("CPU", 0) >= 1)


class GameTasks:
    def __init__(self, catalog: GameCatalog) -> None:
        self.catalog = catalog
        self.in_flight: dict[Any, tuple[str, list[str], str]] = {}  # ref -> (run id, game ids, node)
        self.flying: set[str] = set()
        self.progress: dict[str, dict[str, dict[str, int]]] = {}  # run id -> node -> dispatched/done
        self.clock: dict[str, tuple[float, int]] = {}  # run id -> (first dispatch, games done since)
        self._turn = 0

    def __len__(self) -> int:
        return len(self.in_flight)

    def refs(self) -> list[Any]:
        return list(self.in_flight)

    def games_of(self, run_id: str) -> int:
        return sum(len(ids) for run, ids, _ in self.in_flight.values() if run == run_id)

    def next_node(self, nodes: list[Target]) -> Target | None:
        self._turn += 1
        return nodes[self._turn % len(nodes)] if nodes else None

    def launch(self, run_id: str, board_type: str, batch: list[EvalGame], target: Target | None, plan: BatchPlan,
               hard: bool) -> None:
        strategy: Any = "SPREAD"
        node = "any"
        if target is not None:
            node = target[0]
            strategy = NodeAffinitySchedulingStrategy(node, soft=not hard)
        ids = [g.game_id for g in batch]
        ref = play_batch.options(name=f"eval:{ids[0]}", scheduling_strategy=strategy, num_gpus=plan.num_gpus) \
            .remote(board_type, self.catalog, [g.__dict__ for g in batch], derived_seed(*ids))
        self.in_flight[ref] = (run_id, ids, node)
        self.flying.update(ids)
        self.clock.setdefault(run_id, (time.time(), 0))
        row = self._row(run_id, node)
        row["dispatched"] += len(ids)
        row["batches"] += 1

    def play_now(self, board_type: str, game: EvalGame) -> Any:
        """One game outside any run (`/tournament/play_elo_match`): where a network plays and a node has
        GPUs, on the node with the most of them, holding a GPU share, as a tournament's network batch would."""
        gpu_nodes = [n for n in alive_nodes() if n[2] > 0]
        target = max(gpu_nodes, key=lambda n: n[2]) if gpu_nodes and uses_network((game.first, game.second)) else None
        plan = batch_plan((game.first, game.second), target[2] if target else 0.0)
        strategy: Any = NodeAffinitySchedulingStrategy(target[0], soft=True) if target else "DEFAULT"
        return play_batch.options(name=f"eval:{game.game_id}", scheduling_strategy=strategy, num_gpus=plan.num_gpus) \
            .remote(board_type, self.catalog, [game.__dict__], game.seed)

    def take(self, ref: Any) -> tuple[str, list[str], str]:
        """Forget a finished task; its (run id, game ids, node)."""
        run_id, ids, node = self.in_flight.pop(ref)
        self.flying.difference_update(ids)
        return run_id, ids, node

    def played(self, run_id: str, node: str, games: int, on_gpu: bool) -> None:
        started, done = self.clock.get(run_id, (time.time(), 0))
        self.clock[run_id] = (started, done + games)
        row = self._row(run_id, node)
        row["done"] += games
        row["gpu_games"] += games if on_gpu else 0

    def stop(self, run_id: str) -> None:
        for ref, (run, _, _) in list(self.in_flight.items()):
            if run == run_id:
                ray.cancel(ref, force=True)

    def rate(self, run_id: str) -> float | None:
        started, done = self.clock.get(run_id, (0.0, 0))
        return round(done / (time.time() - started), 4) if done and time.time() > started else None

    def per_node(self, run_id: str) -> list[dict[str, Any]]:
        return [{"node": n, **c} for n, c in sorted(self.progress.get(run_id, {}).items())]

    def _row(self, run_id: str, node: str) -> dict[str, int]:  # gpu_games: by tasks with a GPU share
        return self.progress.setdefault(run_id, {}).setdefault(node, {"dispatched": 0, "done": 0, "batches": 0,
                                                                       "gpu_games": 0})
