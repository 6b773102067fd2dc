"""The client side of served inference: a leaf evaluator whose network runs elsewhere.

`ServedEvaluator` is a `NetworkEvaluator` without a network: it builds the leaves' observation
tensors here (OpenSpiel writes them straight into a numpy array), hands the float32 batch to
`forward` (in production a call to the node's inference server, see actors/inference.py) and
turns the raw logits and values into priors and per-seat values exactly as the in-process
evaluator does, with the same code. Given the same batch, a float32 server returns the same
numbers as the in-process network, so the search makes the same moves.

Also here, as pure decisions that the Ray side (actors/selfplay_workers.py) applies: whether a job
is served (`choose_served`) and how many search workers it runs and what each reserves
(`plan_workers`).
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pyspiel
import torch
from open_spiel.python.observation import make_observation

from orchestrator.play.evaluators import NetworkEvaluator

RemoteForward = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
SERVED_MODES = ("auto", "on", "off")  # the node setting `selfplay_served`


def choose_served(job_served: bool | None, node_mode: str, node_has_gpu: bool) -> bool:
    """The job's own `served` wins; left null, the node's setting decides (auto: where the node has a GPU)."""
    if node_mode not in SERVED_MODES:
        raise ValueError(f"selfplay_served must be one of {SERVED_MODES}, not {node_mode!r}")
    if job_served is not None:
        return job_served
    return node_has_gpu if node_mode == "auto" else node_mode == "on"


def plan_workers(requested: int | None, node_cpus: float, free_cpus: float) -> tuple[int, float]:
    """(search workers, CPUs each reserves) for a served job whose coordinator already holds its own CPU.

    Wanted: `requested`, or the node's CPUs minus one (the coordinator's). Each worker reserves a
    whole CPU, so jobs side by side never promise Ray more CPUs than the node has; the count is
    bounded by the CPUs free now, because a worker Ray cannot place would hold its games hostage
    until some other job ends. With no CPU free at all, one worker runs on the coordinator's
    reservation (the coordinator only waits on its workers), so the job still starts.
    """
    wanted = requested if requested is not None else max(1, int(node_cpus) - 1)
    free = int(free_cpus)
    if free < 1:
        return 1, 0.0
    return max(1, min(wanted, free)), 1.0


class ServedEvaluator(NetworkEvaluator):
    """Observations and the post-processing here, the forward pass through `forward`."""

    def __init__(self, forward: RemoteForward, game: pyspiel.Game) -> None:
        # NetworkEvaluator.__init__ is skipped on purpose: it moves and folds a model, and there is
        # none here. These are the attributes its observations() and evaluate() read.
        self.device = torch.device("cpu")
        self.model = None
        self.observation_shape = tuple(game.observation_tensor_shape())
        self.num_players = game.num_players()
        self.num_actions = game.num_distinct_actions()
        self._observation = make_observation(game)
        self._remote_forward = forward
        self.calls = 0
        self.leaves = 0
        self.seconds = 0.0
        self.network_seconds = 0.0  # here: time waiting for the server, transfer and batching included

    def forward(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        started = time.perf_counter()
        logits, values = self._remote_forward(np.ascontiguousarray(observations, dtype=np.float32))
        self.network_seconds += time.perf_counter() - started
        # The in-process evaluator widens its float32 outputs to float64 the same way.
        return np.asarray(logits, dtype=np.float64), np.asarray(values, dtype=np.float64)
