"""How many evaluation games go into one Ray task, and whether that task asks for a GPU.

The TournamentActor hands batches out round-robin over the alive nodes; for each it asks here,
given the batch's agents and the target node's GPUs (as Ray's node resources declare them):

- agents that include a network (`model:<id>+<search>`) on a node with GPUs: the task asks for a
  share of one GPU (`GPU_SHARE_PER_BATCH`, so several batches use one device at once) and plays
  `GPU_BATCH_GAMES` games of one pairing, whose leaves go through the network together
  (`play_games` batches across the games of a task): one forward pass serves many games;
- anything else (no network, or a CPU-only node): CPU only, `CPU_BATCH_GAMES` games a task.

A GPU is never asked for by a batch without a network: rollouts, heuristics and OpenSpiel's bots
cannot use one, and would keep a network's batch from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from orchestrator.play.agents import parse_agent

CPU_BATCH_GAMES = 4  # two colour-swapped pairs: small enough to cancel and redo cheaply
GPU_BATCH_GAMES = 16  # eight pairs: sixteen games' leaves per forward pass, still cheap to redo
GPU_SHARE_PER_BATCH = 0.25  # of one GPU: four network batches share a device at once


@dataclass(frozen=True)
class BatchPlan:
    games: int  # at most this many games (of one pairing) in the task
    num_gpus: float  # what the task asks Ray for, besides its one CPU


def uses_network(agents: Iterable[str]) -> bool:
    """Whether any agent (a valid name) is driven by a registered network."""
    return any(parse_agent(name).model_id is not None for name in agents)


def batch_plan(agents: Iterable[str], node_gpus: float) -> BatchPlan:
    if node_gpus > 0 and uses_network(agents):
        return BatchPlan(GPU_BATCH_GAMES, min(GPU_SHARE_PER_BATCH, node_gpus))  # a node may declare under one
    return BatchPlan(CPU_BATCH_GAMES, 0.0)
